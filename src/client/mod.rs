//! A Rust client for wtgate: used by the tests and the load tester, and usable by
//! backends that want to join rooms themselves.
//!
//! ```no_run
//! # async fn demo(token: &str, hash: &str) -> Result<(), wtgate::client::ClientError> {
//! use wtgate::client::{Client, Event, Trust};
//! let mut chat = Client::connect("https://localhost:4433/chat", token, &Trust::Hash(hash.into())).await?;
//! chat.join("lobby", None).await?;
//! chat.publish("lobby", "hello".into()).await?;
//! while let Some(event) = chat.next_event().await {
//!     if let Event::Message { from, body, .. } = event { println!("{from}: {body:?}") }
//! }
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use wtransport::endpoint::endpoint_side;
use wtransport::tls::Sha256Digest;
use wtransport::{ClientConfig, Connection, Endpoint, RecvStream, SendStream};

use crate::protocol::lane;
use crate::protocol::{
    decode_datagram, encode_datagram, frame_bytes, ClientFrame, Datagram, ErrorCode, ServerFrame,
    Since, DEFAULT_MAX_FRAME, ONLINE_PAGE,
};
use crate::transport::FrameReader;

mod hello;
mod reach;
pub(crate) mod tail_probe;
mod websocket;
pub(crate) use hello::{hello, Handshake};
pub use reach::{
    candidate_urls, connect_first, is_loopback_url, localhost_addrs, LOOPBACK_HEAD_START,
};
pub use websocket::{
    close_code as websocket_close_code, open_websocket, websocket_url, WsConnector, WsStream,
};

/// How long establishing a session may take (QUIC ignores ICMP unreachable, so an
/// absent server is only noticed by waiting).
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Events buffered per client before its readers wait for the application.
const EVENT_BUFFER: usize = 65_536;

/// How the client trusts the server's certificate.
#[derive(Debug, Clone)]
pub enum Trust {
    /// Pin the certificate's SHA-256 hash (hex), as browsers do with
    /// `serverCertificateHashes`; for self-signed development certificates.
    Hash(String),
    /// Trust certificates issued by this CA (PEM file).
    Ca(PathBuf),
    /// The system's root certificates.
    System,
}

/// Why a client call failed.
#[derive(Debug, Error)]
pub enum ClientError {
    /// The session could not be established (unreachable, TLS, 404 namespace…).
    #[error("cannot connect to {url}: {reason}")]
    Connect {
        /// The URL tried.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The server answered a request (or `Hello`) with an error.
    #[error("server refused: {code}: {message}")]
    Server {
        /// Error code.
        code: ErrorCode,
        /// Server's explanation.
        message: String,
    },
    /// The session is closed.
    #[error("session closed{}", .0.as_ref().map(|c| format!(" with {c}")).unwrap_or_default())]
    Closed(Option<ErrorCode>),
    /// The server sent something unexpected.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// A datagram could not be sent.
    #[error("datagram not sent: {0}")]
    Datagram(String),
    /// The trust setting is unusable.
    #[error("bad trust setting: {0}")]
    Trust(String),
}

/// Something the server pushed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A room message.
    Message {
        /// Room name.
        room: String,
        /// Per-room sequence number.
        seq: u64,
        /// Publisher.
        from: String,
        /// Payload.
        body: Bytes,
        /// Server time at publish (ms since the epoch).
        ts: u64,
    },
    /// A user entered a room.
    PresenceJoin {
        /// Room name.
        room: String,
        /// User id.
        user: String,
    },
    /// A user left a room.
    PresenceLeave {
        /// Room name.
        room: String,
        /// User id.
        user: String,
    },
    /// The server finished a room's stream (after `leave`).
    RoomClosed {
        /// Room name.
        room: String,
    },
    /// A volatile event from another member (datagram).
    Volatile {
        /// Room name.
        room: String,
        /// Sender.
        from: String,
        /// Payload.
        body: Bytes,
    },
    /// A user came online in the namespace.
    OnlineJoin {
        /// User id.
        user: String,
    },
    /// A user went offline in the namespace.
    OnlineLeave {
        /// User id.
        user: String,
    },
    /// A namespace-wide broadcast.
    Broadcast {
        /// Sender.
        from: String,
        /// Payload.
        body: Bytes,
        /// Server time (ms since the epoch).
        ts: u64,
    },
    /// A notification from the user's inbox; acknowledge it with
    /// [`Client::ack_notification`] or it is delivered again on the next connect.
    Notification {
        /// Inbox id (increasing per user).
        id: u64,
        /// Application-defined kind.
        kind: String,
        /// Payload.
        body: Bytes,
        /// When it was stored (ms since the epoch).
        ts: u64,
    },
    /// The server is going away; reconnect later.
    GoAway {
        /// Reason.
        message: String,
    },
    /// An error not tied to a request (usually followed by the close).
    Error {
        /// Error code.
        code: ErrorCode,
        /// Explanation.
        message: String,
    },
    /// The session ended.
    Closed {
        /// The close code, when the server gave one.
        code: Option<ErrorCode>,
        /// Close reason text.
        reason: String,
    },
}

/// The server's `Welcome`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcome {
    /// Session id.
    pub session: u64,
    /// User id from the token.
    pub user: String,
    /// Largest frame body the server accepts.
    pub max_frame: u32,
    /// Users online in the namespace, where enabled.
    pub online: Option<Vec<String>>,
    /// What the namespace's connect hook attached (`ConnectInfo`), if anything.
    pub data: Option<Bytes>,
}

/// The server's `Joined`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinReply {
    /// Room handle (for datagrams).
    pub handle: u32,
    /// The room's sequence epoch (pass it back in [`Since`] when rejoining).
    pub epoch: u64,
    /// The room's last seq at join time.
    pub seq: u64,
    /// Whether everything after `since` is replayed.
    pub recovered: bool,
    /// Users in the room (every page of them).
    pub members: Vec<String>,
}

type Pending = Arc<Mutex<HashMap<u32, oneshot::Sender<ServerFrame>>>>;
type Handles = Arc<Mutex<HashMap<u32, String>>>;

/// Which transport a [`Client`] uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transport {
    /// A WebTransport session (HTTP/3 over QUIC).
    #[default]
    WebTransport,
    /// A WebSocket over TLS (or plain TCP on the `--dev` demo listener): the
    /// fallback where UDP or WebTransport is unavailable.
    WebSocket,
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Transport::WebTransport => "webtransport",
            Transport::WebSocket => "websocket",
        })
    }
}

impl std::str::FromStr for Transport {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "webtransport" => Ok(Transport::WebTransport),
            "websocket" => Ok(Transport::WebSocket),
            _ => Err(format!("{s:?}: expected webtransport or websocket")),
        }
    }
}

/// What carries a client's frames.
enum Link {
    WebTransport {
        _endpoint: Endpoint<endpoint_side::Client>,
        conn: Connection,
        control: tokio::sync::Mutex<SendStream>,
        /// Told after each control write ([`tail_probe`]).
        wrote: Arc<tokio::sync::Notify>,
    },
    WebSocket {
        sink: tokio::sync::Mutex<websocket::WsSink>,
        ended: tokio::sync::watch::Receiver<websocket::Ended>,
    },
}

/// A session on one namespace.
pub struct Client {
    link: Link,
    pending: Pending,
    next_req: AtomicU32,
    rooms: Mutex<HashMap<String, u32>>,
    /// Handle → room, shared with the datagram reader.
    handles: Handles,
    events: mpsc::Receiver<Event>,
    welcome: Welcome,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("welcome", &self.welcome)
            .finish_non_exhaustive()
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Opens a bare WebTransport session to `url` (no `Hello`): the building block of
/// [`Client::connect`], and what tests use to speak raw bytes. `localhost` means
/// `[::1]` or `127.0.0.1`, whichever answers ([`connect_first`]).
pub async fn open_session(
    url: &str,
    trust: &Trust,
) -> Result<(Endpoint<endpoint_side::Client>, Connection), ClientError> {
    let config = client_config(trust)?;
    let endpoint = Endpoint::client(config).map_err(|e| ClientError::Connect {
        url: url.to_owned(),
        reason: e.to_string(),
    })?;
    let (conn, _) = connect_first(&endpoint, url, CONNECT_TIMEOUT).await?;
    Ok((endpoint, conn))
}

/// A client endpoint on `socket` (bound, e.g. with larger buffers) trusting the
/// server as `trust` says; one endpoint can open many sessions, which is how the
/// load tester stays cheap.
pub fn client_endpoint_on(
    trust: &Trust,
    socket: std::net::UdpSocket,
) -> Result<Endpoint<endpoint_side::Client>, ClientError> {
    Endpoint::client(client_config_on(trust, Some(socket))?).map_err(|e| ClientError::Connect {
        url: String::new(),
        reason: format!("cannot use the client socket: {e}"),
    })
}

fn client_config(trust: &Trust) -> Result<ClientConfig, ClientError> {
    client_config_on(trust, None)
}

fn client_config_on(
    trust: &Trust,
    socket: Option<std::net::UdpSocket>,
) -> Result<ClientConfig, ClientError> {
    let builder = match socket {
        Some(socket) => ClientConfig::builder().with_bind_socket(socket),
        None => ClientConfig::builder().with_bind_default(),
    };
    let builder = match trust {
        Trust::Hash(hex) => {
            let digest =
                crate::certs::parse_hash(hex).map_err(|e| ClientError::Trust(e.to_string()))?;
            builder.with_server_certificate_hashes([Sha256Digest::new(digest)])
        }
        Trust::Ca(path) => {
            let pem = std::fs::read(path)
                .map_err(|e| ClientError::Trust(format!("{}: {e}", path.display())))?;
            let mut roots = wtransport::tls::rustls::RootCertStore::empty();
            for cert in rustls_pemfile_certs(&pem)? {
                roots
                    .add(cert)
                    .map_err(|e| ClientError::Trust(e.to_string()))?;
            }
            let tls = wtransport::tls::client::build_default_tls_config(Arc::new(roots), None);
            builder.with_custom_tls(tls)
        }
        Trust::System => builder.with_native_certs(),
    };
    let mut config = builder.build();
    config
        .quic_config_mut()
        .transport_config(Arc::new(client_transport()));
    Ok(config)
}

/// The longest the server may hold an ACK of this client's packets (asked
/// through ACK frequency; wtgate and any quinn peer honour it). Without it the
/// client's probe timeout includes the server's advertised 25 ms, so a lost
/// `Publish` — usually the client's last packet, revealed by no later one —
/// waited ~26 ms to be re-sent; with it, ~3 ms.
const SERVER_MAX_ACK_DELAY: std::time::Duration = std::time::Duration::from_millis(2);

/// Keep-alive and idle timeout as the server's, and [`SERVER_MAX_ACK_DELAY`].
fn client_transport() -> wtransport::config::QuicTransportConfig {
    let mut t = wtransport::config::QuicTransportConfig::default();
    t.keep_alive_interval(Some(std::time::Duration::from_secs(10)));
    t.max_idle_timeout(Some(
        std::time::Duration::from_secs(30)
            .try_into()
            .expect("a valid idle timeout"),
    ));
    // A gap is acknowledged at once (RFC 9000's rule), so a tail probe
    // (PROTOCOL.md §10.1) reveals a lost publish in about a millisecond.
    let mut ack = wtransport::quinn::AckFrequencyConfig::default();
    ack.max_ack_delay(Some(SERVER_MAX_ACK_DELAY))
        .reordering_threshold(1u32.into());
    t.ack_frequency_config(Some(ack));
    t
}

fn rustls_pemfile_certs(
    pem: &[u8],
) -> Result<Vec<wtransport::tls::rustls::pki_types::CertificateDer<'static>>, ClientError> {
    use wtransport::tls::rustls::pki_types::pem::PemObject;
    wtransport::tls::rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ClientError::Trust(format!("CA file: {e}")))
}

impl Client {
    /// Connects to `url` (`https://host:port/namespace`), sends `Hello` with `token`
    /// and waits for `Welcome`.
    pub async fn connect(url: &str, token: &str, trust: &Trust) -> Result<Client, ClientError> {
        let (endpoint, conn) = open_session(url, trust).await?;
        let (mut send, recv) = async {
            let opening = conn.open_bi().await.map_err(|e| e.to_string())?;
            opening.await.map_err(|e| e.to_string())
        }
        .await
        .map_err(|reason| ClientError::Connect {
            url: url.to_owned(),
            reason,
        })?;
        if send.write_all(&frame_bytes(&hello(token))).await.is_err() {
            return Err(closed_error(&conn).await);
        }
        let mut reader = FrameReader::new(recv, DEFAULT_MAX_FRAME.max(16 << 20));
        let mut handshake = Handshake::default();
        let welcome = loop {
            match reader.next::<ServerFrame>().await {
                Ok(Some(frame)) => {
                    if let Some(welcome) = handshake.on_frame(frame)? {
                        break welcome;
                    }
                }
                Ok(None) | Err(_) => return Err(closed_error(&conn).await),
            }
        };
        let (events_tx, events) = mpsc::channel(EVENT_BUFFER);
        let pending: Pending = Arc::default();
        let handles: Handles = Arc::default();
        let mut tasks = vec![
            tokio::spawn(read_control(
                reader,
                pending.clone(),
                events_tx.clone(),
                conn.clone(),
            )),
            tokio::spawn(accept_room_streams(conn.clone(), events_tx.clone())),
            tokio::spawn(read_datagrams(conn.clone(), handles.clone(), events_tx)),
        ];
        let (wrote, prober) = tail_probe::spawn(conn.clone());
        tasks.push(prober);
        let link = Link::WebTransport {
            _endpoint: endpoint,
            conn,
            control: tokio::sync::Mutex::new(send),
            wrote,
        };
        Ok(Client::new(link, pending, handles, events, welcome, tasks))
    }

    /// Connects over a WebSocket (PROTOCOL.md §16) to `url` (`https://` is taken as
    /// `wss://`; `ws://` for the `--dev` demo listener), sends `Hello` with `token`
    /// and waits for `Welcome`.
    pub async fn connect_websocket(
        url: &str,
        token: &str,
        trust: &Trust,
    ) -> Result<Client, ClientError> {
        let socket = websocket::open_websocket(url, trust).await?;
        let (mut sink, mut reader) = futures::StreamExt::split(socket);
        if websocket::send(&mut sink, lane::control_message(&hello(token)))
            .await
            .is_err()
        {
            return Err(ClientError::Closed(None));
        }
        let mut handshake = Handshake::default();
        let welcome = loop {
            let frame = websocket::control_frame(&mut reader).await?;
            if let Some(welcome) = handshake.on_frame(frame)? {
                break welcome;
            }
        };
        let (events_tx, events) = mpsc::channel(EVENT_BUFFER);
        let pending: Pending = Arc::default();
        let handles: Handles = Arc::default();
        let (ended_tx, ended) = tokio::sync::watch::channel(None);
        let tasks = vec![tokio::spawn(websocket::read_lanes(
            reader,
            pending.clone(),
            handles.clone(),
            events_tx,
            ended_tx,
        ))];
        let link = Link::WebSocket {
            sink: tokio::sync::Mutex::new(sink),
            ended,
        };
        Ok(Client::new(link, pending, handles, events, welcome, tasks))
    }

    /// Connects over `transport`: [`connect`](Self::connect) or
    /// [`connect_websocket`](Self::connect_websocket).
    pub async fn connect_with(
        transport: Transport,
        url: &str,
        token: &str,
        trust: &Trust,
    ) -> Result<Client, ClientError> {
        match transport {
            Transport::WebTransport => Client::connect(url, token, trust).await,
            Transport::WebSocket => Client::connect_websocket(url, token, trust).await,
        }
    }

    fn new(
        link: Link,
        pending: Pending,
        handles: Handles,
        events: mpsc::Receiver<Event>,
        welcome: Welcome,
        tasks: Vec<JoinHandle<()>>,
    ) -> Client {
        Client {
            link,
            pending,
            next_req: AtomicU32::new(1),
            rooms: Mutex::new(HashMap::new()),
            events,
            welcome,
            handles,
            tasks,
        }
    }

    /// The transport in use.
    pub fn transport(&self) -> Transport {
        match self.link {
            Link::WebTransport { .. } => Transport::WebTransport,
            Link::WebSocket { .. } => Transport::WebSocket,
        }
    }

    /// The server's `Welcome`.
    pub fn welcome(&self) -> &Welcome {
        &self.welcome
    }

    /// The next pushed event; `None` once the session is closed and drained.
    pub async fn next_event(&mut self) -> Option<Event> {
        self.events.recv().await
    }

    /// An event if one is already buffered.
    pub fn try_event(&mut self) -> Option<Event> {
        self.events.try_recv().ok()
    }

    /// Joins `room`; with `since`, missed messages are replayed as events.
    pub async fn join(&self, room: &str, since: Option<Since>) -> Result<JoinReply, ClientError> {
        let reply = self
            .request(|req| ClientFrame::Join {
                req,
                room: room.to_owned(),
                since,
            })
            .await?;
        match reply {
            ServerFrame::Joined {
                handle,
                epoch,
                seq,
                recovered,
                members,
                ..
            } => {
                self.rooms
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(room.to_owned(), handle);
                self.handles
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(handle, room.to_owned());
                // A room of more than a page: the rest, so `members` is everyone.
                let members = read_on(members, |last| async move {
                    self.members_page(room, &last, ONLINE_PAGE as u32).await
                })
                .await?;
                Ok(JoinReply {
                    handle,
                    epoch,
                    seq,
                    recovered,
                    members,
                })
            }
            other => Err(unexpected(other)),
        }
    }

    /// Leaves `room`.
    pub async fn leave(&self, room: &str) -> Result<(), ClientError> {
        let reply = self
            .request(|req| ClientFrame::Leave {
                req,
                room: room.to_owned(),
            })
            .await?;
        let handle = self
            .rooms
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(room);
        if let Some(handle) = handle {
            self.handles
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&handle);
        }
        match reply {
            ServerFrame::Left { .. } => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Publishes to a joined room; returns the message's seq once acknowledged.
    pub async fn publish(&self, room: &str, body: Bytes) -> Result<u64, ClientError> {
        let reply = self
            .request(|req| ClientFrame::Publish {
                req,
                room: room.to_owned(),
                body,
            })
            .await?;
        match reply {
            ServerFrame::Ack { seq, .. } => Ok(seq),
            other => Err(unexpected(other)),
        }
    }

    /// Users online in the namespace: every page of them
    /// ([`online_page`](Self::online_page)).
    pub async fn online(&self) -> Result<Vec<String>, ClientError> {
        let first = self.online_page("", ONLINE_PAGE as u32).await?;
        read_on(first, |last| async move {
            self.online_page(&last, ONLINE_PAGE as u32).await
        })
        .await
    }

    /// One page of the users online in the namespace: those after `after` (empty:
    /// from the first), at most `limit` (the server gives at most [`ONLINE_PAGE`]).
    pub async fn online_page(&self, after: &str, limit: u32) -> Result<Vec<String>, ClientError> {
        let after = after.to_owned();
        match self
            .request(|req| ClientFrame::OnlinePage { req, after, limit })
            .await?
        {
            ServerFrame::Online { users, .. } => Ok(users),
            other => Err(unexpected(other)),
        }
    }

    /// Everyone in a joined room (with presence), read a page at a time
    /// ([`members_page`](Self::members_page)).
    pub async fn members(&self, room: &str) -> Result<Vec<String>, ClientError> {
        let first = self.members_page(room, "", ONLINE_PAGE as u32).await?;
        read_on(first, |last| async move {
            self.members_page(room, &last, ONLINE_PAGE as u32).await
        })
        .await
    }

    /// One page of a joined room's members: those after `after` (empty: from the
    /// first), at most `limit` (the server gives at most [`ONLINE_PAGE`]).
    pub async fn members_page(
        &self,
        room: &str,
        after: &str,
        limit: u32,
    ) -> Result<Vec<String>, ClientError> {
        let (room, after) = (room.to_owned(), after.to_owned());
        match self
            .request(|req| ClientFrame::MembersPage {
                req,
                room,
                after,
                limit,
            })
            .await?
        {
            ServerFrame::Online { users, .. } => Ok(users),
            other => Err(unexpected(other)),
        }
    }

    /// Removes a notification from the user's inbox.
    pub async fn ack_notification(&self, id: u64) -> Result<(), ClientError> {
        match self
            .request(|req| ClientFrame::AckNotification { req, id })
            .await?
        {
            ServerFrame::Ack { .. } => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Replaces the session's token with `token` (same user) before the current one
    /// expires; without it the server closes the session with `TokenExpired`.
    pub async fn refresh(&self, token: &str) -> Result<(), ClientError> {
        let token = token.to_owned();
        match self
            .request(|req| ClientFrame::Refresh { req, token })
            .await?
        {
            ServerFrame::Ack { .. } => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Calls `method` on the namespace's backend (its RPC hook) with `body`;
    /// returns the backend's reply.
    pub async fn rpc(&self, method: &str, body: Bytes) -> Result<Bytes, ClientError> {
        let method = method.to_owned();
        match self
            .request(|req| ClientFrame::Rpc { req, method, body })
            .await?
        {
            ServerFrame::RpcReply { body, .. } => Ok(body),
            other => Err(unexpected(other)),
        }
    }

    /// Sends a volatile event to the other members of a joined room (a datagram).
    pub fn send_volatile(&self, room: &str, body: Bytes) -> Result<(), ClientError> {
        let handle = self
            .rooms
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(room)
            .copied()
            .ok_or_else(|| ClientError::Datagram(format!("room {room} is not joined")))?;
        self.send_raw_datagram(encode_datagram(&Datagram::Send { handle, body }))
    }

    /// Sends raw bytes: on the control stream, or as one WebSocket message (tests
    /// of malformed input).
    pub async fn send_raw(&self, bytes: &[u8]) -> Result<(), ClientError> {
        let sent = match &self.link {
            Link::WebTransport { control, wrote, .. } => {
                let sent = control.lock().await.write_all(bytes).await.is_ok();
                wrote.notify_one();
                sent
            }
            Link::WebSocket { sink, .. } => {
                let bytes = Bytes::copy_from_slice(bytes);
                websocket::send(&mut *sink.lock().await, bytes)
                    .await
                    .is_ok()
            }
        };
        if !sent {
            return Err(self.closed_error().await);
        }
        Ok(())
    }

    /// Sends a raw datagram payload (on lane 3 over a WebSocket).
    pub fn send_raw_datagram(&self, payload: Bytes) -> Result<(), ClientError> {
        match &self.link {
            Link::WebTransport { conn, .. } => conn
                .send_datagram(payload)
                .map_err(|e| ClientError::Datagram(e.to_string())),
            Link::WebSocket { sink, .. } => {
                // Volatile: sent when the socket is free right now, else dropped.
                let mut sink = sink
                    .try_lock()
                    .map_err(|_| ClientError::Datagram("the socket is busy".into()))?;
                let message = lane::volatile(&payload);
                futures::FutureExt::now_or_never(websocket::send(&mut sink, message))
                    .ok_or_else(|| ClientError::Datagram("the socket is backed up".into()))?
                    .map_err(|()| ClientError::Datagram("the connection is closed".into()))
            }
        }
    }

    /// The underlying WebTransport connection; `None` over a WebSocket.
    pub fn connection(&self) -> Option<&Connection> {
        match &self.link {
            Link::WebTransport { conn, .. } => Some(conn),
            Link::WebSocket { .. } => None,
        }
    }

    /// Closes the session politely (the server sees the control stream finish, or
    /// the WebSocket close).
    pub async fn close(&self) {
        let within = std::time::Duration::from_secs(1);
        match &self.link {
            Link::WebTransport { conn, control, .. } => {
                let mut control = control.lock().await;
                let _ = tokio::time::timeout(within, control.finish()).await;
                conn.close(wtransport::VarInt::from_u32(0), b"bye");
            }
            Link::WebSocket { sink, .. } => {
                let _ = tokio::time::timeout(within, async {
                    websocket::close(&mut *sink.lock().await).await
                })
                .await;
            }
        }
    }

    /// Why the session is closed: its close code, waited for up to 2 s.
    async fn closed_error(&self) -> ClientError {
        match &self.link {
            Link::WebTransport { conn, .. } => closed_error(conn).await,
            Link::WebSocket { ended, .. } => {
                let mut ended = ended.clone();
                let wait = ended.wait_for(Option::is_some);
                let code = tokio::time::timeout(std::time::Duration::from_secs(2), wait)
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .and_then(|end| end.as_ref().and_then(|(code, _)| *code));
                ClientError::Closed(code)
            }
        }
    }

    async fn request(
        &self,
        make: impl FnOnce(u32) -> ClientFrame,
    ) -> Result<ServerFrame, ClientError> {
        let req = self.next_req.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(req, tx);
        let frame = make(req);
        let bytes = match self.link {
            Link::WebTransport { .. } => frame_bytes(&frame),
            Link::WebSocket { .. } => lane::control_message(&frame),
        };
        self.send_raw(&bytes).await?;
        match rx.await {
            Ok(ServerFrame::Error { code, message, .. }) => {
                Err(ClientError::Server { code, message })
            }
            Ok(frame) => Ok(frame),
            Err(_) => Err(self.closed_error().await),
        }
    }
}

/// A list of users whose pages are read on while they come full: `first`, then
/// `next(last user)` until a page is shorter than [`ONLINE_PAGE`].
async fn read_on<F, Fut>(first: Vec<String>, next: F) -> Result<Vec<String>, ClientError>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<String>, ClientError>>,
{
    let mut users = first;
    let mut page = users.len();
    while page == ONLINE_PAGE {
        let last = users.last().cloned().unwrap_or_default();
        let more = next(last).await?;
        page = more.len();
        users.extend(more);
    }
    Ok(users)
}

fn unexpected(frame: ServerFrame) -> ClientError {
    ClientError::Protocol(format!("unexpected reply {frame:?}"))
}

async fn closed_error(conn: &Connection) -> ClientError {
    let e = tokio::time::timeout(std::time::Duration::from_secs(2), conn.closed()).await;
    ClientError::Closed(e.ok().and_then(|e| close_code(&e)))
}

fn close_code(e: &wtransport::error::ConnectionError) -> Option<ErrorCode> {
    match e {
        wtransport::error::ConnectionError::ApplicationClosed(close) => {
            Some(ErrorCode::from(close.code().into_inner() as u32))
        }
        _ => None,
    }
}

async fn read_control(
    mut reader: FrameReader<RecvStream>,
    pending: Pending,
    events: mpsc::Sender<Event>,
    conn: Connection,
) {
    loop {
        let frame = match reader.next::<ServerFrame>().await {
            Ok(Some(frame)) => frame,
            Ok(None) | Err(_) => break,
        };
        let Some(event) = dispatch_control(frame, &pending) else {
            continue;
        };
        if events.send(event).await.is_err() {
            return;
        }
    }
    pending.lock().unwrap_or_else(|p| p.into_inner()).clear();
    let e = conn.closed().await;
    let _ = events
        .send(Event::Closed {
            code: close_code(&e),
            reason: e.to_string(),
        })
        .await;
}

/// Hands a reply to the request waiting for it; a pushed frame becomes an event.
fn dispatch_control(frame: ServerFrame, pending: &Pending) -> Option<Event> {
    let req = match &frame {
        ServerFrame::Ack { req, .. }
        | ServerFrame::Joined { req, .. }
        | ServerFrame::Left { req, .. }
        | ServerFrame::Online { req, .. }
        | ServerFrame::RpcReply { req, .. } => Some(*req),
        ServerFrame::Error { req, .. } if *req != 0 => Some(*req),
        _ => None,
    };
    if let Some(req) = req {
        let waiter = pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&req);
        if let Some(waiter) = waiter {
            let _ = waiter.send(frame);
        }
        return None;
    }
    Some(match frame {
        ServerFrame::Error { code, message, .. } => Event::Error { code, message },
        ServerFrame::OnlineJoin { user } => Event::OnlineJoin { user },
        ServerFrame::OnlineLeave { user } => Event::OnlineLeave { user },
        ServerFrame::Broadcast { from, body, ts } => Event::Broadcast { from, body, ts },
        ServerFrame::GoAway { message } => Event::GoAway { message },
        ServerFrame::Notification { id, kind, body, ts } => {
            Event::Notification { id, kind, body, ts }
        }
        _ => return None,
    })
}

/// A frame of `room`'s stream as events: one, or one per user of a batch.
fn room_events(room: &str, frame: ServerFrame) -> Vec<Event> {
    let room = room.to_owned();
    vec![match frame {
        ServerFrame::Message {
            seq,
            from,
            body,
            ts,
        } => Event::Message {
            room,
            seq,
            from,
            body,
            ts,
        },
        ServerFrame::PresenceJoin { user } => Event::PresenceJoin { room, user },
        ServerFrame::PresenceLeave { user } => Event::PresenceLeave { room, user },
        ServerFrame::PresenceBatch { joins, leaves } => {
            let leaves = leaves.into_iter().map(|user| Event::PresenceLeave {
                room: room.clone(),
                user,
            });
            let joins = joins.into_iter().map(|user| Event::PresenceJoin {
                room: room.clone(),
                user,
            });
            return leaves.chain(joins).collect();
        }
        _ => return Vec::new(),
    }]
}

async fn accept_room_streams(conn: Connection, events: mpsc::Sender<Event>) {
    while let Ok(stream) = conn.accept_uni().await {
        tokio::spawn(read_room(stream, events.clone()));
    }
}

async fn read_room(stream: RecvStream, events: mpsc::Sender<Event>) {
    let mut reader = FrameReader::new(stream, DEFAULT_MAX_FRAME.max(16 << 20));
    let room = match reader.next::<ServerFrame>().await {
        Ok(Some(ServerFrame::RoomStream { room, .. })) => room,
        _ => return,
    };
    while let Ok(Some(frame)) = reader.next::<ServerFrame>().await {
        for event in room_events(&room, frame) {
            if events.send(event).await.is_err() {
                return;
            }
        }
    }
    let _ = events.send(Event::RoomClosed { room }).await;
}

async fn read_datagrams(conn: Connection, handles: Handles, events: mpsc::Sender<Event>) {
    while let Ok(datagram) = conn.receive_datagram().await {
        if let Some(event) = volatile_event(&datagram.payload(), &handles) {
            // Volatile: never wait for a slow application.
            let _ = events.try_send(event);
        }
    }
}

/// A datagram's payload as an event of the joined room its handle names.
fn volatile_event(payload: &[u8], handles: &Handles) -> Option<Event> {
    let Ok(Datagram::Recv { handle, from, body }) = decode_datagram(payload) else {
        return None;
    };
    let room = handles
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&handle)
        .cloned()?;
    Some(Event::Volatile { room, from, body })
}
