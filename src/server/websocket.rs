//! The WebSocket driver of one session (PROTOCOL.md §16): the second driver of the
//! [session core](crate::session), for clients without UDP or without WebTransport.
//! One WebSocket carries every channel of a WebTransport session as lanes
//! ([`lane`]); the rules, the hub's bounded queues, the effects and the close codes
//! are the same, so this file only knows messages, the socket and its timeouts.
//!
//! Upgrades are answered on the server API's listener (and, with `--dev`, on the
//! demo page's), on any namespace path: [`upgrade`] is that router's fallback.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use futures::{FutureExt, SinkExt, StreamExt};
use serde_json::json;
use tokio::time::{timeout, timeout_at, Instant};
use tokio_tungstenite::tungstenite;
use tracing::{debug, info, info_span, Instrument};

use super::admission::{Admission, AwaitingGuard};
use super::driver::{
    backends, far_or, gather, hello_deadline, now, register, sleep_until_flush, unix_now,
    CLOSE_LINGER, CLOSE_READ_GRACE,
};
use super::socket_probe::SocketProbe;
use super::{FlushPolicy, Gateway};
use crate::config::NamespaceConfig;
use crate::hub::{Closer, Outbound, SessionRx};
use crate::protocol::lane::{self, Lane};
use crate::protocol::{ClientFrame, CodecError, ErrorCode};
use crate::session::{Action, Close, Session as Core, Write};
use crate::transport::ReadError;

/// The subprotocol a client must offer.
pub const SUBPROTOCOL: &str = "wtgate.v1";
/// A session that sent nothing for this long is pinged; for twice as long, dropped
/// (a client whose network vanished never closes its TCP connection).
const PING_AFTER: Duration = Duration::from_secs(20);
/// Bytes the socket may hold unsent before volatile frames are dropped (§16.3).
const VOLATILE_BACKLOG: usize = 64 * 1024;
/// Bytes of messages gathered before the WebSocket writes them to the socket; the
/// batch's flush writes the rest, so a batch is one write in the common case.
const WRITE_BUFFER: usize = 64 * 1024;
/// Each session's read buffer. Small on purpose: tungstenite zeroes up to this much
/// before every read (also one that finds nothing), and keeps it per session; at
/// its default 128 KiB that memset was a fifth of the server's CPU in bench (a).
const READ_BUFFER: usize = 4 * 1024;
/// The longest WebSocket close reason: a close frame's payload is at most 125 bytes.
const MAX_CLOSE_REASON: usize = 123;

/// A router that answers WebSocket upgrades on namespace paths (and 404 to the
/// rest): the demo page's listener serves it as its fallback in `--dev`.
pub fn router(gateway: Arc<Gateway>) -> axum::Router {
    axum::Router::new().fallback(upgrade).with_state(gateway)
}

/// Answers a WebSocket upgrade on a namespace path; any other request that no
/// route took is a 404. The checks are WebTransport's, in its order: the path,
/// the origin, the address's connection rate and the room among the connections
/// awaiting `Hello`; the deadline for `Hello` starts now.
pub(super) async fn upgrade(State(gateway): State<Arc<Gateway>>, request: Request) -> Response {
    let started = Instant::now();
    let (mut parts, _body) = request.into_parts();
    let path = parts.uri.path().to_owned();
    let Some(ns_config) = gateway.config.namespace(&path).cloned() else {
        return refusal(StatusCode::NOT_FOUND, "not_found", "no such route");
    };
    let ws = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(ws) => ws,
        Err(rejection) => {
            let message = format!(
                "{path} is a namespace: open a WebTransport session or a WebSocket \
                 (subprotocol {SUBPROTOCOL}) on it ({})",
                rejection.body_text()
            );
            return refusal(rejection.status(), "websocket_expected", message);
        }
    };
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0);
    let origin = parts
        .headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok());
    if !gateway.settings.origin_allowed(origin) {
        debug!(?peer, origin, "WebSocket: origin not allowed");
        return refusal(StatusCode::FORBIDDEN, "forbidden", "origin not allowed");
    }
    if !offers_subprotocol(&parts.headers) {
        let message = format!("offer the WebSocket subprotocol {SUBPROTOCOL}");
        return refusal(StatusCode::BAD_REQUEST, "subprotocol", message);
    }
    if let Some(peer) = peer {
        // TCP's handshake proved the address: the per-address rate applies as is.
        if gateway.admit(peer, true) != Admission::Accept {
            debug!(%peer, "WebSocket: connection rate limit: refused");
            gateway.metrics.error(ErrorCode::TooManySessions);
            return refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "too many connections",
            );
        }
    }
    let Some(place) = gateway.awaiting_hello.enter() else {
        debug!(
            ?peer,
            "WebSocket: too many connections awaiting Hello: refused"
        );
        gateway.metrics.error(ErrorCode::TooManySessions);
        return refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "too many connections",
        );
    };
    let probe = parts.extensions.get::<SocketProbe>().cloned();
    let max = gateway.config.limits.max_frame + lane::LANE_OVERHEAD;
    ws.protocols([SUBPROTOCOL])
        .max_message_size(max)
        .max_frame_size(max)
        .write_buffer_size(WRITE_BUFFER)
        .read_buffer_size(READ_BUFFER)
        .on_upgrade(move |socket| {
            let id = gateway.new_session_id();
            let span = info_span!("session", id, ns = %path, peer = ?peer, transport = "websocket");
            let tasks = gateway.tasks.clone();
            let session = WsSession {
                ns: path,
                ns_config,
                gateway,
                probe,
            };
            tasks.track_future(session.run(id, socket, started, place).instrument(span))
        })
}

fn offers_subprotocol(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == SUBPROTOCOL)
}

/// The server API's error shape: `{"error", "code"}`.
fn refusal(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let body = json!({ "error": message.into(), "code": code });
    (status, Json(body)).into_response()
}

/// A WebSocket accepted on a namespace.
struct WsSession {
    ns: String,
    ns_config: NamespaceConfig,
    gateway: Arc<Gateway>,
    /// Reads the unsent bytes of the TCP socket, where the listener can tell.
    probe: Option<SocketProbe>,
}

/// A registered session: its core, the socket and the hub's queues.
struct Live {
    core: Core,
    socket: WebSocket,
    rx: SessionRx,
    closer: Closer,
    /// Handles of the rooms whose `RoomStream` went out (and no room end yet).
    rooms: HashSet<u32>,
    /// Queued frames held back briefly so that several share a write.
    held: Vec<Outbound>,
    flush: FlushPolicy,
    /// Messages of the batch being written.
    out: Vec<Bytes>,
    /// When the last message of any kind arrived.
    heard: Instant,
}

/// Why a session is over.
#[derive(Debug, thiserror::Error)]
enum Stop {
    /// The server closed it with this code.
    #[error("closed by the server: {0}")]
    Closed(ErrorCode),
    /// The client closed it, or the connection is gone.
    #[error("connection: {0}")]
    Gone(String),
}

/// What a read brought.
enum Incoming {
    /// A lane-0 frame body.
    Control(Bytes),
    /// A lane-3 datagram body.
    Volatile(Bytes),
    /// A message that breaks the mapping, or one over the size limit.
    Bad(ReadError),
    /// The client sent its close, or the connection ended.
    Closed,
    /// The connection failed.
    Lost(String),
}

/// Why a batch of messages was not written.
enum WriteStop {
    /// The session was asked to close while the write waited.
    Closed,
    /// The connection failed.
    Lost(String),
}

impl WsSession {
    async fn run(self, id: u64, socket: WebSocket, started: Instant, place: AwaitingGuard) {
        let gw = &self.gateway;
        let core = Core::new(
            id,
            self.ns.clone(),
            self.ns_config.clone(),
            gw.rules.clone(),
            gw.metrics.clone(),
            started.into_std(),
        );
        let handshake = self.handshake(core, socket).await;
        drop(place);
        let mut live = match handshake {
            Ok(live) => live,
            Err(stop) => return debug!("session ended before Welcome: {stop}"),
        };
        info!(user = live.core.user(), "session open (WebSocket)");
        let sessions = gw.metrics.sessions_in(&self.ns);
        sessions.inc();
        let end = match self.perform(&mut live).await {
            Ok(true) => self.serve(&mut live).await,
            Ok(false) => Ok(()),
            Err(stop) => Err(stop),
        };
        if let Some(departure) = live.core.departure() {
            departure.perform(backends(&self.gateway, &live.core)).await;
        }
        sessions.dec();
        info!(user = live.core.user(), "session closed");
        if let Err(stop) = end {
            debug!("session ended: {stop}");
        }
    }

    /// Waits for `Hello` (lane 0, first) within the core's deadline and registers
    /// the session.
    async fn handshake(&self, mut core: Core, mut socket: WebSocket) -> Result<Live, Stop> {
        core.control_opened();
        let deadline = hello_deadline(&core);
        let limits = &self.gateway.config.limits;
        // A token needs a few hundred bytes: `Hello` gets a small cap of its own.
        let max_hello = limits.max_hello.min(limits.max_frame);
        let mut heard = Instant::now();
        let first = tokio::select! {
            r = timeout_at(deadline, next_message(&mut socket, &mut heard, max_hello)) => r,
            _ = self.gateway.shutdown.cancelled() => {
                core.close_requested(ErrorCode::GoingAway);
                return Err(self.close_decided(&mut core, &mut socket).await);
            }
        };
        match first {
            Err(_) => core.handle_timeout(now()),
            Ok(Incoming::Control(body)) => match lane::decode_control::<ClientFrame>(&body) {
                Ok(frame) => {
                    let health = self.gateway.broker.health();
                    core.handle_hello(now(), unix_now(), frame, health);
                }
                Err(e) => core.handle_read_error(&e.into()),
            },
            Ok(Incoming::Volatile(_)) => core.handle_read_error(&malformed(
                "the first message must be Hello on the control lane",
            )),
            Ok(Incoming::Bad(e)) => core.handle_read_error(&e),
            Ok(Incoming::Closed) => return Err(Stop::Gone("closed before Hello".into())),
            Ok(Incoming::Lost(e)) => return Err(Stop::Gone(e)),
        }
        while let Some(action) = core.poll_action() {
            match action {
                Action::Register => {
                    if let Some((rx, closer)) = register(&self.gateway, &mut core) {
                        return Ok(Live {
                            core,
                            socket,
                            rx,
                            closer,
                            rooms: HashSet::new(),
                            held: Vec::new(),
                            flush: FlushPolicy::default(),
                            out: Vec::new(),
                            heard,
                        });
                    }
                }
                // The revocation check, between the token and the registration.
                Action::Perform(effect) => {
                    let outcome = effect.perform(backends(&self.gateway, &core)).await;
                    core.complete(outcome);
                }
                Action::Close(close) => return Err(close_with(&mut socket, close).await),
                // Nothing else comes before the session is registered.
                _ => {}
            }
        }
        Err(self.close_decided(&mut core, &mut socket).await)
    }

    /// Performs the close the core decided.
    async fn close_decided(&self, core: &mut Core, socket: &mut WebSocket) -> Stop {
        while let Some(action) = core.poll_action() {
            if let Action::Close(close) = action {
                return close_with(socket, close).await;
            }
        }
        // The core closes every session it does not register; this is a guard.
        let close = Close {
            code: ErrorCode::Internal,
            message: String::new(),
            frame: None,
        };
        close_with(socket, close).await
    }

    /// Serves a registered session until it ends.
    async fn serve(&self, live: &mut Live) -> Result<(), Stop> {
        let closer = live.closer.clone();
        let close_requested = closer.requested();
        tokio::pin!(close_requested);
        let stopping = self.gateway.shutdown.cancelled();
        tokio::pin!(stopping);
        let mut deadline = live.core.poll_timeout();
        let expiry = tokio::time::sleep_until(far_or(deadline));
        tokio::pin!(expiry);
        let mut keepalive = tokio::time::interval(PING_AFTER);
        keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let datagrams_in = live.core.accepts_datagrams();
        let max_frame = self.gateway.config.limits.max_frame;
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
                Some(datagram) = live.rx.datagrams.recv() => self.write_volatile(live, datagram).await?,
                incoming = next_message(&mut live.socket, &mut live.heard, max_frame) => match incoming {
                    Incoming::Control(body) => match lane::decode_control::<ClientFrame>(&body) {
                        Ok(frame) => live.core.handle_frame(now(), frame),
                        Err(e) => live.core.handle_read_error(&e.into()),
                    },
                    Incoming::Volatile(body) => {
                        // A namespace without datagrams ignores them, as WebTransport does.
                        if datagrams_in {
                            let id = live.core.id();
                            if let Some(v) = live.core.handle_datagram(now(), &body) {
                                self.gateway.broker.volatile(&self.ns, v.room, id, v.from, v.body);
                            }
                        }
                    }
                    Incoming::Bad(e) => live.core.handle_read_error(&e),
                    Incoming::Closed => live.core.control_finished(),
                    Incoming::Lost(e) => return Err(Stop::Gone(e)),
                },
                _ = keepalive.tick() => {
                    let quiet = live.heard.elapsed();
                    if quiet >= 2 * PING_AFTER {
                        return Err(Stop::Gone(format!("nothing heard for {quiet:?}")));
                    }
                    if quiet >= PING_AFTER {
                        live.out.push(Bytes::new());
                        self.write_out(live, Message::Ping).await?;
                    }
                }
            }
            if !self.perform(live).await? {
                return Ok(());
            }
            let next = live.core.poll_timeout();
            if next != deadline {
                deadline = next;
                expiry.as_mut().reset(far_or(deadline));
            }
        }
    }

    /// Performs the core's actions in order; `false` once the session ended
    /// normally.
    async fn perform(&self, live: &mut Live) -> Result<bool, Stop> {
        while let Some(action) = live.core.poll_action() {
            match action {
                Action::Control(frame) => {
                    live.out.push(lane::control(&frame));
                    self.write_out(live, Message::Binary).await?;
                }
                Action::OpenRoom { handle, head } => {
                    live.out
                        .extend(lane::prefixed_frames(&head).map(|f| lane::room(handle, f)));
                    let opened = match self.write(live).await {
                        Ok(()) => {
                            live.rooms.insert(handle);
                            Ok(())
                        }
                        Err(WriteStop::Closed) => Err("the session is closing".to_owned()),
                        Err(WriteStop::Lost(e)) => return Err(Stop::Gone(e)),
                    };
                    live.core.room_opened(handle, opened);
                }
                Action::FinishRoom { handle } => {
                    if live.rooms.remove(&handle) {
                        live.out.push(lane::room_end(handle));
                        self.write_out(live, Message::Binary).await?;
                    }
                }
                Action::Perform(effect) => {
                    let outcome = effect.perform(backends(&self.gateway, &live.core)).await;
                    live.core.complete(outcome);
                }
                // Only before the session is registered (`handshake`).
                Action::Register => {}
                Action::Close(close) => return Err(close_with(&mut live.socket, close).await),
                Action::End => {
                    // The client's close was answered by the WebSocket; send it.
                    let _ = timeout(CLOSE_LINGER, live.socket.flush()).await;
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    /// Writes the frames held back for coalescing, in one batch.
    async fn flush_held(&self, live: &mut Live) -> Result<(), Stop> {
        let mut held = std::mem::take(&mut live.held);
        let mut published = Vec::new();
        for item in held.drain(..) {
            match live.core.deliver(item) {
                Some(Write::Control(frame)) => live.out.push(lane::control(&frame)),
                Some(Write::Room {
                    handle,
                    frame,
                    published: at,
                }) if live.rooms.contains(&handle) => {
                    live.out.push(lane::room(handle, &frame));
                    published.extend(at);
                }
                // A duplicate, or a room whose stream is gone.
                _ => {}
            }
        }
        live.held = held;
        let written = self.write(live).await;
        live.flush.flushed(Instant::now());
        match written {
            Ok(()) => {
                for at in published {
                    self.gateway.metrics.delivered(at);
                }
                Ok(())
            }
            // The loop sees the close request.
            Err(WriteStop::Closed) => Ok(()),
            Err(WriteStop::Lost(e)) => Err(Stop::Gone(e)),
        }
    }

    /// Sends a datagram's body on lane 3, unless the socket is backed up: volatile
    /// frames are dropped rather than queued behind reliable ones.
    async fn write_volatile(&self, live: &mut Live, datagram: Bytes) -> Result<(), Stop> {
        let metrics = &self.gateway.metrics;
        let backlog = self.probe.as_ref().and_then(SocketProbe::unsent);
        if backlog.is_some_and(|unsent| unsent > VOLATILE_BACKLOG) {
            metrics.datagrams_dropped.inc();
            return Ok(());
        }
        live.out.push(lane::volatile(&datagram));
        self.write_out(live, Message::Binary).await?;
        metrics.datagrams_out.inc();
        Ok(())
    }

    /// Writes `live.out` as messages of kind `kind`, where a failure to write ends
    /// the session only when the connection is lost (a close request is seen by
    /// the loop).
    async fn write_out(&self, live: &mut Live, kind: fn(Bytes) -> Message) -> Result<(), Stop> {
        let stall = self.gateway.config.limits.stall_timeout;
        let (socket, out, closer) = (&mut live.socket, &mut live.out, &live.closer);
        match guarded_write(socket, out.drain(..).map(kind), closer, stall).await {
            Ok(()) | Err(WriteStop::Closed) => Ok(()),
            Err(WriteStop::Lost(e)) => Err(Stop::Gone(e)),
        }
    }

    /// Writes `live.out` as binary messages.
    async fn write(&self, live: &mut Live) -> Result<(), WriteStop> {
        let stall = self.gateway.config.limits.stall_timeout;
        let (socket, out, closer) = (&mut live.socket, &mut live.out, &live.closer);
        guarded_write(socket, out.drain(..).map(Message::Binary), closer, stall).await
    }
}

/// Reads until a message that matters: pings, pongs and unknown lanes are taken
/// care of (by the WebSocket, or skipped) on the way. Cancel-safe: a message is
/// either returned or still in the socket.
///
/// A control frame body over `max_frame` is refused here, exactly as WebTransport
/// refuses it; the WebSocket's own limit (a little higher, for the lane header)
/// already kept anything much larger from being read.
async fn next_message(socket: &mut WebSocket, heard: &mut Instant, max_frame: usize) -> Incoming {
    loop {
        let message = match socket.next().await {
            None => return Incoming::Closed,
            Some(Ok(message)) => message,
            Some(Err(e)) => return read_failure(e),
        };
        *heard = Instant::now();
        let data = match message {
            Message::Binary(data) => data,
            Message::Text(_) => return Incoming::Bad(malformed("a text message")),
            Message::Close(_) => return Incoming::Closed,
            Message::Ping(_) | Message::Pong(_) => continue,
        };
        let rest = |body: &[u8]| data.slice_ref(body);
        return match lane::parse(&data) {
            Ok(Lane::Control(body)) if body.len() > max_frame => {
                Incoming::Bad(too_large(body.len(), max_frame))
            }
            Ok(Lane::Control(body)) => Incoming::Control(rest(body)),
            Ok(Lane::Volatile(body)) => Incoming::Volatile(rest(body)),
            Ok(Lane::Room { .. } | Lane::RoomEnd { .. }) => Incoming::Bad(malformed(
                "room lanes go from the server to the client only",
            )),
            Ok(Lane::Unknown(_)) => continue,
            Err(e) => Incoming::Bad(e.into()),
        };
    }
}

/// Tells a message over the size limit and a broken one from a lost connection.
fn read_failure(e: axum::Error) -> Incoming {
    let inner = e.into_inner();
    let Some(e) = inner.downcast_ref::<tungstenite::Error>() else {
        return Incoming::Lost(inner.to_string());
    };
    match e {
        tungstenite::Error::Capacity(tungstenite::error::CapacityError::MessageTooLong {
            size,
            max_size,
        }) => Incoming::Bad(too_large(
            *size,
            max_size.saturating_sub(lane::LANE_OVERHEAD),
        )),
        tungstenite::Error::Capacity(e) => Incoming::Bad(malformed(&e.to_string())),
        tungstenite::Error::Protocol(e) => Incoming::Bad(malformed(&e.to_string())),
        tungstenite::Error::Utf8(e) => Incoming::Bad(malformed(e)),
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => {
            Incoming::Closed
        }
        e => Incoming::Lost(e.to_string()),
    }
}

fn malformed(message: &str) -> ReadError {
    ReadError::Codec(CodecError::Malformed(message.to_owned()))
}

fn too_large(len: usize, max: usize) -> ReadError {
    ReadError::Codec(CodecError::TooLarge {
        len: len as u64,
        max,
    })
}

/// Feeds the messages to the WebSocket and flushes them, giving up when the
/// session is asked to close, so a client that stopped reading cannot pin the
/// task; a write that makes no progress for `stall` asks for that close itself
/// (`SlowConsumer`). The timer starts only once the write has to wait.
async fn guarded_write(
    socket: &mut WebSocket,
    messages: impl Iterator<Item = Message>,
    closer: &Closer,
    stall: Duration,
) -> Result<(), WriteStop> {
    let mut write = std::pin::pin!(async move {
        for message in messages {
            socket.feed(message).await?;
        }
        socket.flush().await
    });
    let lost = |e: axum::Error| WriteStop::Lost(e.to_string());
    if let Some(r) = write.as_mut().now_or_never() {
        return r.map_err(lost);
    }
    tokio::select! {
        r = &mut write => r.map_err(lost),
        _ = closer.requested() => Err(WriteStop::Closed),
        _ = tokio::time::sleep(stall) => {
            debug!("no write progress for {stall:?}: closing as a slow consumer");
            closer.close(ErrorCode::SlowConsumer);
            Err(WriteStop::Closed)
        }
    }
}

/// Writes the frame that explains the close (if any) and the WebSocket close with
/// code 4000 + the error code, for at most [`CLOSE_LINGER`], giving the client
/// [`CLOSE_READ_GRACE`] to answer the close before the connection is dropped.
async fn close_with(socket: &mut WebSocket, close: Close) -> Stop {
    // A hook's own codes (1000 and above) do not fit: 4999, and the frame has it.
    let code = 4000 + close.code.to_code().min(999) as u16;
    let reason = close.reason_within(MAX_CLOSE_REASON).to_owned();
    let _ = timeout(CLOSE_LINGER, async {
        if let Some(frame) = &close.frame {
            socket.feed(Message::Binary(lane::control(frame))).await?;
        }
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        socket.send(Message::Close(Some(frame))).await?;
        let _ = timeout(CLOSE_READ_GRACE, async {
            while let Some(Ok(_)) = socket.next().await {}
        })
        .await;
        Ok::<(), axum::Error>(())
    })
    .await;
    Stop::Closed(close.code)
}
