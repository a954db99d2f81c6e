//! The WebTransport driver of one session: owns the connection and its streams,
//! feeds the [session core](crate::session) what arrives, performs what it
//! decides, and writes the hub's queued frames, coalescing them when busy
//! ([`FlushPolicy`]). The protocol rules live in the core; this file knows
//! streams, timeouts and wtransport's errors.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use thiserror::Error;
use tokio::time::timeout_at;
use tracing::{debug, info};
use wtransport::error::ConnectionError;
use wtransport::{Connection, RecvStream, SendStream, VarInt};

use super::driver::{
    backends, far_or, gather, hello_deadline, now, register, sleep_until_flush, unix_now,
    CLOSE_LINGER, CLOSE_READ_GRACE, OPEN_STREAM_TIMEOUT,
};
use super::{FlushPolicy, Gateway};
use crate::config::NamespaceConfig;
use crate::hub::{Closer, Outbound, SessionId, SessionRx};
use crate::protocol::{ClientFrame, ErrorCode};
use crate::session::{Action, Backends, Close, Session as Core, Write};
use crate::transport::{FrameReader, ReadError};

/// How a session ended.
#[derive(Debug, Error)]
pub(super) enum SessionError {
    /// The server closed it with this code.
    #[error("closed by the server: {0}")]
    Closed(ErrorCode),
    /// The connection failed or the client closed it.
    #[error("connection: {0}")]
    Connection(#[from] ConnectionError),
}

/// A session accepted on a namespace, before `Hello`.
pub(super) struct Session {
    id: SessionId,
    ns: String,
    ns_config: NamespaceConfig,
    conn: Connection,
    gateway: Arc<Gateway>,
}

/// A registered session: its core, its streams and the hub's queues.
struct Live {
    core: Core,
    control: SendStream,
    reader: FrameReader<RecvStream>,
    /// Room streams by handle.
    rooms: HashMap<u32, SendStream>,
    rx: SessionRx,
    closer: Closer,
    /// Queued frames held back briefly so that several share a packet.
    held: Vec<Outbound>,
    flush: FlushPolicy,
}

/// Whether the session goes on after the core's actions were performed.
enum Flow {
    Continue,
    /// The session closed normally (the client finished its control stream).
    Ended,
}

impl Session {
    pub(super) fn new(
        id: SessionId,
        ns: String,
        ns_config: NamespaceConfig,
        conn: Connection,
        gateway: Arc<Gateway>,
    ) -> Self {
        Session {
            id,
            ns,
            ns_config,
            conn,
            gateway,
        }
    }

    /// Runs the session to its end; `started` is the connection's first packet,
    /// which the hello deadline counts from, and `place` its place among the
    /// connections awaiting `Welcome`, given up once it is welcomed (or gone).
    pub(super) async fn run(
        self,
        started: std::time::Instant,
        place: super::admission::AwaitingGuard,
    ) -> Result<(), SessionError> {
        let gw = &self.gateway;
        let core = Core::new(
            self.id,
            self.ns.clone(),
            self.ns_config.clone(),
            gw.rules.clone(),
            gw.metrics.clone(),
            started,
        );
        let handshake = self.handshake(core).await;
        drop(place);
        let Some(mut live) = handshake? else {
            return Ok(());
        };
        info!(user = live.core.user(), "session open");
        let sessions = gw.metrics.sessions_in(&self.ns);
        sessions.inc();
        let result = match self.perform(&mut live).await {
            Ok(Flow::Continue) => self.serve(&mut live).await,
            Ok(Flow::Ended) => Ok(()),
            Err(e) => Err(e),
        };
        if let Some(departure) = live.core.departure() {
            departure.perform(self.backends(&live.core)).await;
        }
        sessions.dec();
        info!(user = live.core.user(), "session closed");
        result
    }

    /// Waits for the control stream and `Hello` (within the core's deadline) and
    /// registers the session; `None` when the client finished the control stream
    /// before sending anything.
    async fn handshake(&self, mut core: Core) -> Result<Option<Live>, SessionError> {
        let deadline = hello_deadline(&core);
        let shutdown = &self.gateway.shutdown;
        let opened = tokio::select! {
            r = timeout_at(deadline, self.conn.accept_bi()) => r,
            _ = shutdown.cancelled() => {
                core.close_requested(ErrorCode::GoingAway);
                return Err(self.close_decided(&mut core, None).await);
            }
        };
        let (mut control, recv) = match opened {
            Ok(streams) => streams?,
            Err(_) => {
                core.handle_timeout(now());
                return Err(self.close_decided(&mut core, None).await);
            }
        };
        core.control_opened();
        let limits = &self.gateway.config.limits;
        // A token needs a few hundred bytes: `Hello` gets a small cap of its own.
        let mut reader = FrameReader::new(recv, limits.max_hello.min(limits.max_frame));
        let hello = tokio::select! {
            r = timeout_at(deadline, reader.next::<ClientFrame>()) => r,
            _ = shutdown.cancelled() => {
                core.close_requested(ErrorCode::GoingAway);
                return Err(self.close_decided(&mut core, Some(&mut control)).await);
            }
        };
        match hello {
            Err(_) => core.handle_timeout(now()),
            Ok(Ok(Some(frame))) => {
                let health = self.gateway.broker.health();
                core.handle_hello(now(), unix_now(), frame, health);
            }
            Ok(Ok(None)) => return Ok(None),
            Ok(Err(e)) => core.handle_read_error(&e),
        }
        let (rx, closer) = self.settle(&mut core, &mut control).await?;
        reader.set_max_frame(limits.max_frame);
        Ok(Some(Live {
            core,
            control,
            reader,
            rooms: HashMap::new(),
            rx,
            closer,
            held: Vec::new(),
            flush: FlushPolicy::default(),
        }))
    }

    /// Performs the core's answer to `Hello`: registration in the hub (whose
    /// queues the driver keeps), or the close.
    async fn settle(
        &self,
        core: &mut Core,
        control: &mut SendStream,
    ) -> Result<(SessionRx, Closer), SessionError> {
        while let Some(action) = core.poll_action() {
            match action {
                Action::Register => {
                    // Refused: the core queues the close.
                    if let Some(queues) = register(&self.gateway, core) {
                        return Ok(queues);
                    }
                }
                // The revocation check, between the token and the registration.
                Action::Perform(effect) => {
                    let outcome = effect.perform(self.backends(core)).await;
                    core.complete(outcome);
                }
                Action::Close(close) => return Err(self.close(close, Some(control)).await),
                // Nothing else comes before the session is registered.
                _ => {}
            }
        }
        Err(self.close_decided(core, Some(control)).await)
    }

    /// Performs the close the core decided: before the session went live, or once
    /// its control stream is gone.
    async fn close_decided(
        &self,
        core: &mut Core,
        control: Option<&mut SendStream>,
    ) -> SessionError {
        while let Some(action) = core.poll_action() {
            if let Action::Close(close) = action {
                return self.close(close, control).await;
            }
        }
        // The core closes every session it does not register; this is a guard.
        let code = ErrorCode::Internal;
        self.conn.close(VarInt::from_u32(code.to_code()), b"");
        SessionError::Closed(code)
    }
}

impl Session {
    /// Serves a registered session until it ends.
    async fn serve(&self, live: &mut Live) -> Result<(), SessionError> {
        // Futures that wait across iterations are created once: re-creating them on
        // every wake-up (one per delivered batch) showed up in profiles.
        let closer = live.closer.clone();
        let close_requested = closer.requested();
        tokio::pin!(close_requested);
        let shutdown = self.gateway.shutdown.clone();
        let stopping = shutdown.cancelled();
        tokio::pin!(stopping);
        let datagrams_in = live.core.accepts_datagrams();
        let incoming = self.conn.receive_datagram();
        tokio::pin!(incoming);
        // The core's deadline (the token's expiry): one timer, moved when a
        // `Refresh` moves the deadline.
        let mut deadline = live.core.poll_timeout();
        let expiry = tokio::time::sleep_until(far_or(deadline));
        tokio::pin!(expiry);
        loop {
            tokio::select! {
                biased;
                _ = &mut close_requested => {
                    let code = closer.code().unwrap_or(ErrorCode::GoingAway);
                    live.core.close_requested(code);
                }
                _ = &mut stopping => live.core.close_requested(ErrorCode::GoingAway),
                _ = &mut expiry, if deadline.is_some() => {
                    live.core.handle_timeout(now());
                    deadline = None;
                }
                _ = sleep_until_flush(live.flush.deadline(self.gateway.flush_window.get())),
                    if !live.held.is_empty() =>
                {
                    self.flush_held(live).await?;
                }
                item = live.rx.frames.recv() => {
                    let Some(item) = item else { return Ok(()) };
                    let window = self.gateway.flush_window.get();
                    if gather(item, &mut live.rx, &mut live.held, &live.flush, window) {
                        self.flush_held(live).await?;
                    }
                }
                Some(datagram) = live.rx.datagrams.recv() => {
                    // Volatile: a datagram that does not fit is dropped.
                    match self.conn.send_datagram(datagram) {
                        Ok(()) => self.gateway.metrics.datagrams_out.inc(),
                        Err(_) => self.gateway.metrics.datagrams_dropped.inc(),
                    };
                }
                frame = live.reader.next::<ClientFrame>() => match frame {
                    Ok(Some(frame)) => live.core.handle_frame(now(), frame),
                    Ok(None) => live.core.control_finished(),
                    Err(ReadError::Io(_)) if self.conn.quic_connection().close_reason().is_some() => {
                        return Err(self.conn.closed().await.into());
                    }
                    Err(e) => live.core.handle_read_error(&e),
                },
                datagram = &mut incoming, if datagrams_in => {
                    incoming.set(self.conn.receive_datagram());
                    let datagram = datagram?;
                    if let Some(v) = live.core.handle_datagram(now(), &datagram.payload()) {
                        self.gateway.broker.volatile(&self.ns, v.room, self.id, v.from, v.body);
                    }
                }
            }
            if let Flow::Ended = self.perform(live).await? {
                return Ok(());
            }
            let next = live.core.poll_timeout();
            if next != deadline {
                deadline = next;
                expiry.as_mut().reset(far_or(deadline));
            }
        }
    }

    /// Performs the core's actions in order, so the reply to a command is written
    /// before the next command is read.
    async fn perform(&self, live: &mut Live) -> Result<Flow, SessionError> {
        while let Some(action) = live.core.poll_action() {
            match action {
                Action::Control(frame) => self.write_control(live, frame).await?,
                Action::OpenRoom { handle, head } => {
                    let opened = self.open_room(head, &live.closer).await.map(|stream| {
                        live.rooms.insert(handle, stream);
                    });
                    live.core.room_opened(handle, opened);
                }
                Action::FinishRoom { handle } => {
                    if let Some(mut stream) = live.rooms.remove(&handle) {
                        // quinn's synchronous finish: the remaining data is still delivered.
                        let _ = stream.quic_stream_mut().finish();
                    }
                }
                Action::Perform(effect) => {
                    let outcome = effect.perform(self.backends(&live.core)).await;
                    live.core.complete(outcome);
                }
                // Only before the session is registered (`settle`).
                Action::Register => {}
                Action::Close(close) => {
                    return Err(self.close(close, Some(&mut live.control)).await)
                }
                Action::End => {
                    self.conn.close(VarInt::from_u32(0), b"bye");
                    return Ok(Flow::Ended);
                }
            }
        }
        Ok(Flow::Continue)
    }

    fn backends<'a>(&'a self, core: &'a Core) -> Backends<'a> {
        backends(&self.gateway, core)
    }

    /// Opens a room stream and writes its head, waiting at most
    /// [`OPEN_STREAM_TIMEOUT`] for the client's stream credit.
    /// How long a write may make no progress.
    fn stall(&self) -> Duration {
        self.gateway.config.limits.stall_timeout
    }

    /// Opens a room's stream and writes its first frames (the `since` replay may be
    /// the whole history) through the same guard as every other write.
    async fn open_room(&self, head: Bytes, closer: &Closer) -> Result<SendStream, String> {
        let opening = async {
            let opened = self.conn.open_uni().await.map_err(|e| e.to_string())?;
            opened.await.map_err(|e| e.to_string())
        };
        let mut stream = tokio::time::timeout(OPEN_STREAM_TIMEOUT, opening)
            .await
            .map_err(|_| "timed out opening the room stream".to_owned())??;
        match guarded_write(&mut stream, head, closer, self.stall()).await {
            Ok(()) => Ok(stream),
            Err(WriteStop::Closed) => Err("the session is closing".to_owned()),
            Err(WriteStop::ConnectionLost) => Err("the connection is lost".to_owned()),
            Err(WriteStop::StreamFailed(e)) => Err(format!("room stream: {e}")),
        }
    }

    /// Writes the frames held back for coalescing.
    async fn flush_held(&self, live: &mut Live) -> Result<(), SessionError> {
        let mut held = std::mem::take(&mut live.held);
        for item in held.drain(..) {
            self.write_out(live, item).await?;
        }
        // Keep the allocation for the next batch.
        live.held = held;
        live.flush.flushed(tokio::time::Instant::now());
        Ok(())
    }

    /// Writes one queued frame where the core says it goes.
    async fn write_out(&self, live: &mut Live, item: Outbound) -> Result<(), SessionError> {
        let (handle, frame, published) = match live.core.deliver(item) {
            None => return Ok(()),
            Some(Write::Control(frame)) => return self.write_control(live, frame).await,
            Some(Write::Room {
                handle,
                frame,
                published,
            }) => (handle, frame, published),
        };
        let Some(stream) = live.rooms.get_mut(&handle) else {
            return Ok(());
        };
        match guarded_write(stream, frame, &live.closer, self.stall()).await {
            Ok(()) => {
                if let Some(published) = published {
                    self.gateway.metrics.delivered(published);
                }
                Ok(())
            }
            Err(WriteStop::Closed) => Ok(()), // the loop sees the close request
            Err(WriteStop::ConnectionLost) => Err(self.conn.closed().await.into()),
            Err(WriteStop::StreamFailed(e)) => {
                debug!(handle, "room stream failed: {e}");
                live.rooms.remove(&handle);
                live.core.room_stopped(handle);
                Ok(())
            }
        }
    }

    async fn write_control(&self, live: &mut Live, frame: Bytes) -> Result<(), SessionError> {
        match guarded_write(&mut live.control, frame, &live.closer, self.stall()).await {
            Ok(()) | Err(WriteStop::Closed) => Ok(()),
            Err(WriteStop::ConnectionLost) => Err(self.conn.closed().await.into()),
            Err(WriteStop::StreamFailed(_)) => {
                live.core.control_stopped();
                Err(self.close_decided(&mut live.core, None).await)
            }
        }
    }

    /// Writes the frame that explains the close (if any, for at most
    /// [`CLOSE_LINGER`]), then closes the session with the code.
    async fn close(&self, close: Close, control: Option<&mut SendStream>) -> SessionError {
        if let (Some(frame), Some(control)) = (&close.frame, control) {
            let _ = tokio::time::timeout(CLOSE_LINGER, async {
                control.write_all(frame).await?;
                // Returns once the client's QUIC stack acknowledged the frame; a
                // browser may still drop it if the connection closes before its page
                // read it (Chromium then reports neither the frame nor the code), so
                // give the client the chance to read it and close first.
                control.finish().await?;
                tokio::select! {
                    _ = self.conn.closed() => {}
                    _ = tokio::time::sleep(CLOSE_READ_GRACE) => {}
                }
                Ok::<(), wtransport::error::StreamWriteError>(())
            })
            .await;
        }
        self.conn
            .close(VarInt::from_u32(close.code.to_code()), close.reason());
        SessionError::Closed(close.code)
    }
}

enum WriteStop {
    /// The session was asked to close while the write waited.
    Closed,
    /// The whole connection is gone.
    ConnectionLost,
    /// This stream failed (the client stopped it).
    StreamFailed(String),
}

/// Hands a shared frame to the stream without copying it, giving up when the
/// session is asked to close, so a client that stopped reading cannot pin the task;
/// a write that makes no progress for `stall` asks for that close itself
/// (`SlowConsumer`). The stall timer starts only once the write has to wait, so a
/// write that goes through at once costs no timer.
async fn guarded_write(
    stream: &mut SendStream,
    frame: Bytes,
    closer: &Closer,
    stall: Duration,
) -> Result<(), WriteStop> {
    let map = |r: Result<(), wtransport::quinn::WriteError>| {
        r.map_err(|e| match e {
            wtransport::quinn::WriteError::ConnectionLost(_) => WriteStop::ConnectionLost,
            e => WriteStop::StreamFailed(e.to_string()),
        })
    };
    let mut write = std::pin::pin!(stream.quic_stream_mut().write_chunk(frame));
    if let Some(r) = futures::FutureExt::now_or_never(&mut write) {
        return map(r);
    }
    tokio::select! {
        r = &mut write => map(r),
        _ = closer.requested() => Err(WriteStop::Closed),
        _ = tokio::time::sleep(stall) => {
            debug!("no write progress for {stall:?}: closing as a slow consumer");
            closer.close(ErrorCode::SlowConsumer);
            Err(WriteStop::Closed)
        }
    }
}
