//! One task per session: reads the client's frames, writes the hub's, owns its state.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use thiserror::Error;
use tokio::time::timeout_at;
use tracing::{debug, info, warn};
use wtransport::error::ConnectionError;
use wtransport::{Connection, RecvStream, SendStream, VarInt};

use super::{FlushPolicy, Gateway, TokenBucket};
use crate::auth::Claims;
use crate::broker::BrokerHealth;
use crate::config::NamespaceConfig;
use crate::hub::{session_queues, validate_room_name, Closer, Outbound, SessionId, SessionRx};
use crate::protocol::{
    decode_datagram, frame_bytes, ClientFrame, CodecError, Datagram, ErrorCode, ServerFrame, Since,
    PROTOCOL_VERSION,
};
use crate::transport::{FrameReader, ReadError};

/// Frames written in one go before the loop looks at its other inputs again.
const WRITE_BATCH: usize = 64;
/// How long a fatal error frame may take to reach the client before the close.
const CLOSE_LINGER: Duration = Duration::from_millis(500);
/// How long opening a room stream may wait for the client's stream credit.
const OPEN_STREAM_TIMEOUT: Duration = Duration::from_secs(5);

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

/// The state of a session after `Welcome`.
struct Live {
    user: String,
    claims: Claims,
    control: SendStream,
    reader: FrameReader<RecvStream>,
    rx: SessionRx,
    closer: Closer,
    /// Joined rooms by name → handle.
    rooms: HashMap<String, u32>,
    /// Room streams by handle.
    streams: HashMap<u32, RoomOut>,
    publish_bucket: TokenBucket,
    datagram_bucket: TokenBucket,
    /// Highest notification id written, to skip live copies of inbox ones.
    last_notification: u64,
    /// Queued frames held back briefly so that several share a packet.
    held: Vec<Outbound>,
    flush: FlushPolicy,
}

struct RoomOut {
    room: String,
    stream: SendStream,
    /// Highest message seq written, to drop live copies of replayed messages.
    last_seq: u64,
}

/// A request that failed without ending the session.
struct Refusal(ErrorCode, String);

fn refuse<T>(code: ErrorCode, message: impl Into<String>) -> Result<T, Refusal> {
    Err(Refusal(code, message.into()))
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

    /// Runs the session to its end.
    pub(super) async fn run(self) -> Result<(), SessionError> {
        let limits = &self.gateway.config.limits;
        let deadline = tokio::time::Instant::now() + limits.hello_timeout;
        let opened = tokio::select! {
            r = timeout_at(deadline, self.conn.accept_bi()) => r,
            _ = self.gateway.shutdown.cancelled() => {
                return Err(self.close(ErrorCode::GoingAway, "server shutting down"));
            }
        };
        let (mut control, recv) = match opened {
            Ok(streams) => streams?,
            Err(_) => return Err(self.close(ErrorCode::HelloTimeout, "no control stream")),
        };
        let mut reader = FrameReader::new(recv, limits.max_frame);
        let hello = tokio::select! {
            r = timeout_at(deadline, reader.next::<ClientFrame>()) => r,
            _ = self.gateway.shutdown.cancelled() => {
                let code = ErrorCode::GoingAway;
                return Err(self.fatal(&mut control, code, close_message(code)).await);
            }
        };
        let claims = match hello {
            Err(_) => {
                let msg = format!("no Hello within {:?}", limits.hello_timeout);
                return Err(self
                    .fatal(&mut control, ErrorCode::HelloTimeout, &msg)
                    .await);
            }
            Ok(Ok(Some(ClientFrame::Hello { version, token }))) => {
                match self.check_hello(version, &token) {
                    Ok(claims) => claims,
                    Err(Refusal(code, msg)) => {
                        return Err(self.fatal(&mut control, code, &msg).await)
                    }
                }
            }
            Ok(Ok(Some(_))) => {
                let msg = "the first frame must be Hello";
                return Err(self.fatal(&mut control, ErrorCode::Protocol, msg).await);
            }
            Ok(Ok(None)) => return Ok(()),
            Ok(Err(e)) => {
                let (code, msg) = read_error_code(&e);
                return Err(self.fatal(&mut control, code, &msg).await);
            }
        };
        let user = claims.sub.clone();
        let (tx, rx) = session_queues(self.id, &user, limits.outbound_queue, 256);
        let closer = tx.closer().clone();
        let registered = match self.gateway.hub.register(&self.ns, tx) {
            Ok(r) => r,
            Err(e) => return Err(self.fatal(&mut control, e.code(), &e.to_string()).await),
        };
        info!(user, "session open");
        let mut live = Live {
            user,
            claims,
            control,
            reader,
            rx,
            closer,
            rooms: HashMap::new(),
            streams: HashMap::new(),
            publish_bucket: TokenBucket::new(
                limits.publish_rate,
                limits.publish_burst,
                Instant::now(),
            ),
            datagram_bucket: TokenBucket::new(
                limits.datagram_rate,
                limits.datagram_burst,
                Instant::now(),
            ),
            last_notification: 0,
            // Grown on the first burst: idle sessions (most of them) stay small.
            held: Vec::new(),
            flush: FlushPolicy::default(),
        };
        let sessions = self.gateway.metrics.sessions_in(&self.ns);
        sessions.inc();
        let result = match self.welcome(&mut live, registered.first_for_user).await {
            Ok(()) => self.serve(&mut live).await,
            Err(e) => Err(e),
        };
        self.leave_everything(&live.user).await;
        sessions.dec();
        info!(user = live.user, "session closed");
        result
    }

    fn check_hello(&self, version: u16, token: &str) -> Result<Claims, Refusal> {
        if version != PROTOCOL_VERSION {
            return refuse(
                ErrorCode::UnsupportedVersion,
                format!("protocol version {version} is not supported; this server speaks {PROTOCOL_VERSION}"),
            );
        }
        let claims = match self.gateway.verifier.verify(token, unix_now()) {
            Ok(claims) => claims,
            Err(e) => return refuse(ErrorCode::Unauthorized, e.to_string()),
        };
        if !claims.allows_namespace(&self.ns) {
            return refuse(
                ErrorCode::Forbidden,
                format!("the token does not allow namespace {}", self.ns),
            );
        }
        // Better refused now, clearly, than accepted and then failing every command.
        if let BrokerHealth::Unavailable(why) = self.gateway.broker.health() {
            return refuse(
                ErrorCode::Internal,
                format!("cluster backend unavailable: {why}"),
            );
        }
        Ok(claims)
    }

    async fn welcome(&self, live: &mut Live, first_for_user: bool) -> Result<(), SessionError> {
        let broker = &self.gateway.broker;
        let online = if self.ns_config.online {
            if first_for_user {
                let _ = broker.online_presence(&self.ns, &live.user, true).await;
            }
            Some(broker.online_users(&self.ns).await.unwrap_or_default())
        } else {
            None
        };
        let welcome = ServerFrame::Welcome {
            session: self.id,
            user: live.user.clone(),
            max_frame: self.gateway.config.limits.max_frame as u32,
            online,
        };
        self.write_control(live, &welcome).await?;
        if self.ns_config.inbox {
            // Registered before this read, so anything pushed meanwhile is queued too;
            // ids drop the overlap.
            match self.gateway.inbox.pending(&live.user).await {
                Ok(pending) => {
                    for n in pending {
                        live.last_notification = n.id;
                        let frame = ServerFrame::Notification {
                            id: n.id,
                            kind: n.kind,
                            body: n.body,
                            ts: n.ts,
                        };
                        self.write_control(live, &frame).await?;
                    }
                }
                Err(e) => {
                    warn!("inbox unavailable: {e}");
                    let msg = format!("notification inbox unavailable: {e}");
                    self.reply_error(live, 0, ErrorCode::Internal, msg).await?;
                }
            }
        }
        Ok(())
    }

    async fn serve(&self, live: &mut Live) -> Result<(), SessionError> {
        // Futures that wait across iterations are created once: re-creating them on
        // every wake-up (one per delivered batch) showed up in profiles.
        let closer = live.closer.clone();
        let close_requested = closer.requested();
        tokio::pin!(close_requested);
        let shutdown = self.gateway.shutdown.clone();
        let stopping = shutdown.cancelled();
        tokio::pin!(stopping);
        let datagrams_in = self.ns_config.datagrams;
        let incoming = self.conn.receive_datagram();
        tokio::pin!(incoming);
        loop {
            tokio::select! {
                biased;
                _ = &mut close_requested => {
                    let code = closer.code().unwrap_or(ErrorCode::GoingAway);
                    return Err(self.fatal(&mut live.control, code, close_message(code)).await);
                }
                _ = &mut stopping => {
                    let code = ErrorCode::GoingAway;
                    return Err(self.fatal(&mut live.control, code, close_message(code)).await);
                }
                _ = sleep_until_flush(live.flush.deadline(self.gateway.flush_window.get())),
                    if !live.held.is_empty() =>
                {
                    self.flush_held(live).await?;
                }
                item = live.rx.frames.recv() => {
                    let Some(item) = item else { return Ok(()) };
                    live.held.push(item);
                    while live.held.len() < WRITE_BATCH {
                        match live.rx.frames.try_recv() {
                            Ok(item) => live.held.push(item),
                            Err(_) => break,
                        }
                    }
                    let window = self.gateway.flush_window.get();
                    if live.flush.due(tokio::time::Instant::now(), window)
                        || live.held.len() >= WRITE_BATCH
                    {
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
                    Ok(Some(frame)) => self.handle(live, frame).await?,
                    Ok(None) => {
                        self.conn.close(VarInt::from_u32(0), b"bye");
                        return Ok(());
                    }
                    Err(ReadError::Codec(CodecError::UnknownVariant(tag))) => {
                        let msg = format!("unknown command type {tag}");
                        self.reply_error(live, 0, ErrorCode::UnknownCommand, msg).await?;
                    }
                    Err(ReadError::Io(e)) => {
                        if self.conn.quic_connection().close_reason().is_some() {
                            return Err(self.conn.closed().await.into());
                        }
                        // The client reset its control stream but kept the connection:
                        // without a control stream the session is over.
                        debug!("control stream failed: {e}");
                        return Err(self.close(ErrorCode::Protocol, "the control stream was reset"));
                    }
                    Err(e) => {
                        let (code, msg) = read_error_code(&e);
                        return Err(self.fatal(&mut live.control, code, &msg).await);
                    }
                },
                datagram = &mut incoming, if datagrams_in => {
                    incoming.set(self.conn.receive_datagram());
                    let datagram = datagram?;
                    self.gateway.metrics.datagrams_in.inc();
                    if let Err(Refusal(code, msg)) = self.on_datagram(live, &datagram.payload()) {
                        return Err(self.fatal(&mut live.control, code, &msg).await);
                    }
                }
            }
        }
    }

    async fn handle(&self, live: &mut Live, frame: ClientFrame) -> Result<(), SessionError> {
        let (req, outcome) = match frame {
            ClientFrame::Hello { .. } => {
                let msg = "Hello was already received";
                return Err(self
                    .fatal(&mut live.control, ErrorCode::Protocol, msg)
                    .await);
            }
            ClientFrame::Join { req, room, since } => {
                (req, self.join(live, req, room, since).await)
            }
            ClientFrame::Leave { req, room } => (req, self.leave(live, req, room).await),
            ClientFrame::Publish { req, room, body } => {
                (req, self.publish(live, req, &room, body).await)
            }
            ClientFrame::Online { req } => (req, self.online(req).await),
            ClientFrame::AckNotification { req, id } => {
                (req, self.ack_notification(live, req, id).await)
            }
        };
        match outcome {
            Ok(reply) => self.write_control(live, &reply).await,
            Err(Refusal(code, msg)) => self.reply_error(live, req, code, msg).await,
        }
    }

    async fn join(
        &self,
        live: &mut Live,
        req: u32,
        room: String,
        since: Option<Since>,
    ) -> Result<ServerFrame, Refusal> {
        let limits = &self.gateway.config.limits;
        if let Err(e) = validate_room_name(&room, limits.max_room_name) {
            return refuse(ErrorCode::InvalidRoom, e.to_string());
        }
        if !live.claims.allows_room(&room) {
            return refuse(
                ErrorCode::Forbidden,
                format!("the token does not allow room {room}"),
            );
        }
        if live.rooms.contains_key(&room) {
            return refuse(ErrorCode::AlreadyJoined, format!("already in room {room}"));
        }
        if live.rooms.len() >= limits.max_rooms_per_session {
            return refuse(
                ErrorCode::TooManyRooms,
                format!(
                    "a session may join at most {} rooms",
                    limits.max_rooms_per_session
                ),
            );
        }
        let hub = &self.gateway.hub;
        let broker = &self.gateway.broker;
        let joined = hub
            .join(&self.ns, &room, self.id)
            .map_err(|e| Refusal(e.code(), e.to_string()))?;
        // From here the hub queues the room's live frames for us; history fills in
        // what came before, and seq numbers drop the overlap.
        let opened = async {
            let stream = tokio::time::timeout(OPEN_STREAM_TIMEOUT, async {
                self.conn
                    .open_uni()
                    .await
                    .map_err(|e| e.to_string())?
                    .await
                    .map_err(|e| e.to_string())
            })
            .await
            .map_err(|_| "timed out opening the room stream".to_owned())??;
            let recovery = broker
                .recover(&self.ns, &room, since)
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>((stream, recovery))
        }
        .await;
        let (mut stream, recovery) = match opened {
            Ok(ok) => ok,
            Err(msg) => {
                let _ = hub.leave(&self.ns, &room, self.id);
                return refuse(ErrorCode::Internal, msg);
            }
        };
        if joined.first_for_user && self.ns_config.presence {
            let _ = broker
                .room_presence(&self.ns, &room, &live.user, true)
                .await;
        }
        let members = if self.ns_config.presence {
            broker
                .room_members(&self.ns, &room)
                .await
                .unwrap_or_else(|_| hub.room_users(&self.ns, &room))
        } else {
            Vec::new()
        };
        let mut head = bytes::BytesMut::new();
        crate::protocol::encode_frame(
            &ServerFrame::RoomStream {
                room: room.clone(),
                handle: joined.handle,
            },
            &mut head,
        );
        let mut last_seq = 0;
        let recovered = since.is_some() && recovery.replay.is_some();
        for (seq, frame) in recovery.replay.into_iter().flatten() {
            head.extend_from_slice(&frame);
            last_seq = seq;
        }
        if let Err(e) = stream.write_all(&head).await {
            let _ = hub.leave(&self.ns, &room, self.id);
            return refuse(ErrorCode::Internal, format!("room stream: {e}"));
        }
        live.rooms.insert(room.clone(), joined.handle);
        live.streams.insert(
            joined.handle,
            RoomOut {
                room: room.clone(),
                stream,
                last_seq,
            },
        );
        debug!(room, handle = joined.handle, recovered, "joined");
        Ok(ServerFrame::Joined {
            req,
            room,
            handle: joined.handle,
            epoch: recovery.epoch,
            seq: recovery.last_seq,
            recovered,
            members,
        })
    }

    async fn leave(&self, live: &mut Live, req: u32, room: String) -> Result<ServerFrame, Refusal> {
        let Some(handle) = live.rooms.remove(&room) else {
            return refuse(ErrorCode::NotJoined, format!("not in room {room}"));
        };
        if let Some(mut out) = live.streams.remove(&handle) {
            // quinn's synchronous finish: the remaining data is still delivered.
            let _ = out.stream.quic_stream_mut().finish();
        }
        self.leave_room(&live.user, &room).await;
        Ok(ServerFrame::Left { req, room })
    }

    async fn leave_room(&self, user: &str, room: &str) {
        if let Ok(true) = self.gateway.hub.leave(&self.ns, room, self.id) {
            if self.ns_config.presence {
                let _ = self
                    .gateway
                    .broker
                    .room_presence(&self.ns, room, user, false)
                    .await;
            }
        }
    }

    async fn publish(
        &self,
        live: &mut Live,
        req: u32,
        room: &str,
        body: Bytes,
    ) -> Result<ServerFrame, Refusal> {
        if !live.rooms.contains_key(room) {
            return refuse(
                ErrorCode::NotJoined,
                format!("join room {room} before publishing"),
            );
        }
        if !self.ns_config.client_publish {
            return refuse(
                ErrorCode::Forbidden,
                format!("clients may not publish in {}", self.ns),
            );
        }
        if !live.publish_bucket.try_take(Instant::now()) {
            let limits = &self.gateway.config.limits;
            return refuse(
                ErrorCode::RateLimited,
                format!(
                    "more than {} publishes per second (burst {})",
                    limits.publish_rate, limits.publish_burst
                ),
            );
        }
        match self
            .gateway
            .broker
            .publish(&self.ns, room, &live.user, body)
            .await
        {
            Ok(seq) => {
                self.gateway.metrics.message_in(&self.ns);
                Ok(ServerFrame::Ack { req, seq })
            }
            Err(e) => refuse(e.code(), e.to_string()),
        }
    }

    async fn online(&self, req: u32) -> Result<ServerFrame, Refusal> {
        if !self.ns_config.online {
            return refuse(
                ErrorCode::Forbidden,
                format!("namespace presence is disabled in {}", self.ns),
            );
        }
        match self.gateway.broker.online_users(&self.ns).await {
            Ok(users) => Ok(ServerFrame::Online { req, users }),
            Err(e) => refuse(e.code(), e.to_string()),
        }
    }

    async fn ack_notification(
        &self,
        live: &Live,
        req: u32,
        id: u64,
    ) -> Result<ServerFrame, Refusal> {
        if !self.ns_config.inbox {
            return refuse(
                ErrorCode::Forbidden,
                format!("{} has no notification inbox", self.ns),
            );
        }
        match self.gateway.inbox.ack(&live.user, id).await {
            Ok(removed) => {
                if removed {
                    self.gateway.metrics.notifications_acked.inc();
                }
                Ok(ServerFrame::Ack { req, seq: 0 })
            }
            Err(e) => refuse(ErrorCode::Internal, e.to_string()),
        }
    }

    fn on_datagram(&self, live: &mut Live, payload: &[u8]) -> Result<(), Refusal> {
        let (handle, body) = match decode_datagram(payload) {
            Ok(Datagram::Send { handle, body }) => (handle, body),
            Ok(Datagram::Recv { .. }) => {
                return refuse(ErrorCode::Protocol, "clients send Datagram::Send only")
            }
            // A newer client's volatile event type: dropping it is what volatile means.
            Err(CodecError::UnknownVariant(tag)) => {
                debug!(tag, "datagram of an unknown type; dropped");
                return Ok(());
            }
            Err(e) => return refuse(ErrorCode::Protocol, format!("malformed datagram: {e}")),
        };
        let limits = &self.gateway.config.limits;
        let Some(out) = live.streams.get(&handle) else {
            debug!(handle, "datagram for a room not joined; dropped");
            self.gateway.metrics.datagrams_dropped.inc();
            return Ok(());
        };
        if !self.ns_config.datagrams
            || body.len() > limits.max_datagram_body
            || !live.datagram_bucket.try_take(Instant::now())
        {
            debug!(
                handle,
                len = body.len(),
                "datagram not allowed here; dropped"
            );
            self.gateway.metrics.datagrams_dropped.inc();
            return Ok(());
        }
        self.gateway
            .broker
            .volatile(&self.ns, &out.room, self.id, &live.user, body);
        Ok(())
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

    /// Writes one queued frame; a room stream the client stopped means it left the room.
    async fn write_out(&self, live: &mut Live, item: Outbound) -> Result<(), SessionError> {
        match item {
            Outbound::Control(frame) => self.write_control_bytes(live, frame).await,
            Outbound::Notification { id, frame } => {
                if id <= live.last_notification {
                    return Ok(());
                }
                live.last_notification = id;
                self.write_control_bytes(live, frame).await
            }
            Outbound::Room {
                handle,
                seq,
                frame,
                published,
            } => {
                let Some(out) = live.streams.get_mut(&handle) else {
                    return Ok(());
                };
                if seq != 0 && seq <= out.last_seq {
                    return Ok(());
                }
                match guarded_write(&mut out.stream, frame, &live.closer).await {
                    Ok(()) => {
                        if seq != 0 {
                            out.last_seq = seq;
                            let metrics = &self.gateway.metrics;
                            metrics.deliveries.inc();
                            metrics
                                .publish_latency
                                .observe(published.elapsed().as_secs_f64());
                        }
                        Ok(())
                    }
                    Err(WriteStop::Closed) => Ok(()), // the loop sees the close request
                    Err(WriteStop::ConnectionLost) => Err(self.conn.closed().await.into()),
                    Err(WriteStop::StreamFailed(e)) => {
                        debug!(room = out.room, "client stopped the room stream: {e}");
                        let room = out.room.clone();
                        live.streams.remove(&handle);
                        live.rooms.remove(&room);
                        self.leave_room(&live.user, &room).await;
                        Ok(())
                    }
                }
            }
        }
    }

    async fn reply_error(
        &self,
        live: &mut Live,
        req: u32,
        code: ErrorCode,
        message: String,
    ) -> Result<(), SessionError> {
        debug!(req, %code, message, "request refused");
        self.gateway.metrics.error(code);
        self.write_control(live, &ServerFrame::Error { req, code, message })
            .await
    }

    async fn write_control(
        &self,
        live: &mut Live,
        frame: &ServerFrame,
    ) -> Result<(), SessionError> {
        self.write_control_bytes(live, frame_bytes(frame)).await
    }

    async fn write_control_bytes(&self, live: &mut Live, bytes: Bytes) -> Result<(), SessionError> {
        match guarded_write(&mut live.control, bytes, &live.closer).await {
            Ok(()) | Err(WriteStop::Closed) => Ok(()),
            Err(WriteStop::ConnectionLost) => Err(self.conn.closed().await.into()),
            Err(WriteStop::StreamFailed(_)) => {
                let code = ErrorCode::Protocol;
                Err(self.close(code, "the control stream was stopped"))
            }
        }
    }

    /// Leaves every room and the namespace, telling the others.
    async fn leave_everything(&self, user: &str) {
        let gone = self.gateway.hub.unregister(&self.ns, self.id);
        let broker = &self.gateway.broker;
        if self.ns_config.presence {
            for (room, last) in gone.rooms {
                if last {
                    let _ = broker.room_presence(&self.ns, &room, user, false).await;
                }
            }
        }
        if self.ns_config.online && gone.last_for_user {
            let _ = broker.online_presence(&self.ns, user, false).await;
        }
    }

    /// Sends the reason (an `Error`, or `GoAway` on shutdown), lets it reach the client
    /// briefly, then closes the session with the code.
    async fn fatal(
        &self,
        control: &mut SendStream,
        code: ErrorCode,
        message: &str,
    ) -> SessionError {
        if code == ErrorCode::SlowConsumer || code == ErrorCode::Protocol {
            warn!(%code, message, "closing session");
        } else {
            debug!(%code, message, "closing session");
        }
        let frame = if code == ErrorCode::GoingAway {
            ServerFrame::GoAway {
                message: message.to_owned(),
            }
        } else {
            ServerFrame::Error {
                req: 0,
                code,
                message: message.to_owned(),
            }
        };
        let bytes = frame_bytes(&frame);
        let _ = tokio::time::timeout(CLOSE_LINGER, async {
            control.write_all(&bytes).await?;
            control.finish().await
        })
        .await;
        self.close(code, message)
    }

    fn close(&self, code: ErrorCode, message: &str) -> SessionError {
        self.gateway.metrics.error(code);
        let mut end = message.len().min(256);
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        let reason = message.as_bytes().get(..end).unwrap_or_default();
        self.conn.close(VarInt::from_u32(code.to_code()), reason);
        SessionError::Closed(code)
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
/// session is asked to close, so a client that stopped reading cannot pin the task.
async fn guarded_write(
    stream: &mut SendStream,
    frame: Bytes,
    closer: &Closer,
) -> Result<(), WriteStop> {
    tokio::select! {
        r = stream.quic_stream_mut().write_chunk(frame) => r.map_err(|e| match e {
            wtransport::quinn::WriteError::ConnectionLost(_) => WriteStop::ConnectionLost,
            e => WriteStop::StreamFailed(e.to_string()),
        }),
        _ = closer.requested() => Err(WriteStop::Closed),
    }
}

async fn sleep_until_flush(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn read_error_code(e: &ReadError) -> (ErrorCode, String) {
    match e {
        ReadError::Codec(CodecError::TooLarge { .. }) => (ErrorCode::FrameTooLarge, e.to_string()),
        ReadError::Codec(CodecError::UnknownVariant(_)) => {
            (ErrorCode::UnknownCommand, e.to_string())
        }
        _ => (ErrorCode::Protocol, e.to_string()),
    }
}

fn close_message(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::SlowConsumer => "outbound queue full: the client does not read fast enough",
        ErrorCode::GoingAway => "server shutting down",
        _ => "closed by the server",
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
