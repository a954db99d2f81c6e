//! One load client's session over a WebSocket (PROTOCOL.md §16), for
//! `--transport websocket`: TCP, TLS and the HTTP/1.1 upgrade offering
//! `wtgate.v1`, then the same protocol as over WebTransport with every frame in
//! one binary message behind a lane byte ([`crate::protocol::lane`]).
//!
//! One task per session reads every lane — replies and presence (0), room
//! messages (1), datagrams (3) — and, for a sender, publishes on schedule in
//! between; the per-message work is the WebTransport readers' ([`RoomRecv`],
//! [`on_reply`], [`on_datagram`], [`Publisher`]). Reads are taken in batches:
//! after a wakeup, every message already buffered is handled before the
//! figures are updated once.
//!
//! Connections are [`crate::client`]'s ([`WsConnector`]: its trust — the pinned
//! hash of a development certificate, a CA file or the system roots — and the
//! subprotocol), made with a small read buffer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{FutureExt, SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_util::sync::CancellationToken;

use super::session::{fail, welcome, within, Joins, SetupError};
use super::tally::Counts;
use super::traffic::{on_datagram, on_reply, Outlet, Publisher, RoomRecv};
use super::{wire, Ctx};
use crate::client::{
    candidate_urls, hello as hello_frame, websocket_close_code, websocket_url, Handshake, Trust,
    WsConnector, WsStream,
};
use crate::protocol::lane::{self, Lane};
use crate::protocol::{CodecError, ServerFrame};

/// Each session's read buffer: a busy room's burst fits, and 5,000 idle
/// sessions do not hold tungstenite's default 128 KiB each.
const READ_BUFFER: usize = 16 * 1024;

/// Messages handled per wakeup at most, so that one busy session cannot hold
/// the thread.
const READ_BATCH: usize = 256;

/// How long a probe of one loopback address of a `localhost` URL may take.
const REACH_TIMEOUT: Duration = Duration::from_secs(2);

/// How long closing a session may take at the end of a run.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// The WebSocket URL of a `--url` ([`websocket_url`]: `https://` becomes
/// `wss://`, PROTOCOL.md §16.1), or why it cannot be one.
pub(super) fn ws_url(url: &str) -> Result<String, String> {
    let ws = websocket_url(url);
    if ws.starts_with("wss://") || ws.starts_with("ws://") {
        Ok(ws)
    } else {
        Err(format!(
            "--url {url:?}: a WebSocket URL is https://, wss:// or ws://"
        ))
    }
}

/// The sessions' connector: [`WsConnector`] with a [`READ_BUFFER`].
pub(super) fn connector(trust: &Trust) -> WsConnector {
    WsConnector::new(trust).read_buffer(READ_BUFFER)
}

/// The URLs the clients use: a `localhost` URL is replaced by the loopback
/// address that answers a probe WebSocket (`[::1]` first, as for WebTransport),
/// so that no client tries both. A URL that cannot be reached is kept as given.
pub(super) async fn reach(connector: &WsConnector, urls: &[String]) -> Vec<String> {
    let mut reached = Vec::with_capacity(urls.len());
    for url in urls {
        let candidates = candidate_urls(url);
        let mut found = None;
        if candidates.len() > 1 {
            for candidate in candidates {
                let probe = tokio::time::timeout(REACH_TIMEOUT, connector.open(&candidate)).await;
                if let Ok(Ok(mut socket)) = probe {
                    close(&mut socket, "probe").await;
                    found = Some(candidate);
                    break;
                }
            }
        }
        reached.push(found.unwrap_or_else(|| url.clone()));
    }
    reached
}

/// A session that said `Hello` and joined its rooms.
pub(super) struct Joined {
    pub(super) socket: WsStream,
    /// The rooms' handles, in the order of the names given to [`open`].
    pub(super) handles: Vec<u32>,
    /// From the TCP connect until `Welcome`.
    pub(super) connect_time: Duration,
    /// `OnlineJoin`/`OnlineLeave` frames that came while joining.
    pub(super) online_frames: u64,
    /// `PresenceJoin`/`PresenceLeave` frames that came while joining.
    pub(super) presence_frames: u64,
}

/// Connects to `url`, says `Hello` with `token` and joins `rooms` (request ids
/// 1, 2, …), each step within [`session::STEP_TIMEOUT`](super::session::STEP_TIMEOUT).
pub(super) async fn open(
    connector: &WsConnector,
    url: &str,
    token: &str,
    rooms: &[String],
) -> Result<Joined, SetupError> {
    let started = Instant::now();
    let dial = async { connector.open(url).await.map_err(|e| fail("connect", e)) };
    let mut socket = within(dial).await?;
    within(hello(&mut socket, token)).await?;
    let connect_time = started.elapsed();
    let joining = within(join(&mut socket, rooms)).await?;
    Ok(Joined {
        socket,
        handles: joining.joins.handles(),
        connect_time,
        online_frames: joining.joins.online_frames,
        presence_frames: joining.presence,
    })
}

async fn hello(socket: &mut WsStream, token: &str) -> Result<(), SetupError> {
    let hello = lane::control_message(&hello_frame(token));
    socket
        .send(Message::Binary(hello))
        .await
        .map_err(|e| fail("hello", e))?;
    let mut handshake = Handshake::default();
    loop {
        let message = next_binary(socket, "hello").await?;
        let frame = match lane::parse(&message) {
            Ok(Lane::Control(body)) => lane::decode_control::<ServerFrame>(body),
            other => return Err(fail("hello", format!("expected Welcome, got {other:?}"))),
        };
        if welcome(&mut handshake, Some(frame.map_err(|e| fail("hello", e))?))? {
            return Ok(());
        }
    }
}

async fn join(socket: &mut WsStream, rooms: &[String]) -> Result<Joining, SetupError> {
    for frame in Joins::frames(rooms) {
        socket
            .feed(Message::Binary(lane::control_message(&frame)))
            .await
            .map_err(|e| fail("join", e))?;
    }
    socket.flush().await.map_err(|e| fail("join", e))?;
    let mut joining = Joining::new(rooms.len());
    while !joining.done() {
        let message = next_binary(socket, "join").await?;
        joining.on_message(&message)?;
    }
    Ok(joining)
}

/// The next binary message while setting up; a close names its code.
async fn next_binary(socket: &mut WsStream, step: &str) -> Result<Bytes, SetupError> {
    loop {
        match socket.next().await {
            Some(Ok(Message::Binary(message))) => return Ok(message),
            Some(Ok(Message::Close(frame))) => return Err(fail(step, closed_kind(frame.as_ref()))),
            Some(Ok(Message::Text(_))) => return Err(fail(step, "a text message")),
            Some(Ok(_)) => {} // ping, pong
            Some(Err(e)) => return Err(fail(step, e)),
            None => return Err(fail(step, "connection closed")),
        }
    }
}

/// Where a session's joins stand: the replies on lane 0 ([`Joins`]) and the
/// `RoomStream` frame that opens each room's lane 1 (PROTOCOL.md §16.2), in
/// whichever order they come. No I/O.
#[derive(Debug)]
struct Joining {
    joins: Joins,
    /// Handles whose `RoomStream` came.
    opened: Vec<u32>,
    /// Room presence frames that came after a `RoomStream`.
    presence: u64,
}

impl Joining {
    fn new(rooms: usize) -> Joining {
        Joining {
            joins: Joins::new(rooms),
            opened: Vec::with_capacity(rooms),
            presence: 0,
        }
    }

    /// Takes one message.
    fn on_message(&mut self, message: &[u8]) -> Result<(), SetupError> {
        match lane::parse(message).map_err(|e| fail("join", e))? {
            Lane::Control(body) => match lane::decode_control::<ServerFrame>(body) {
                Ok(frame) => self.joins.on_reply(frame),
                // A newer server's push: skipped, as over WebTransport.
                Err(CodecError::UnknownVariant(_)) => Ok(()),
                Err(e) => Err(fail("join", e)),
            },
            Lane::Room { handle, body } if self.opened.contains(&handle) => {
                self.presence += u64::from(wire::is_presence(body));
                Ok(())
            }
            Lane::Room { handle, body } => match lane::decode_control::<ServerFrame>(body) {
                Ok(ServerFrame::RoomStream { handle: h, .. }) if h == handle => {
                    self.opened.push(handle);
                    Ok(())
                }
                other => Err(fail(
                    "join",
                    format!("room {handle} does not start with RoomStream: {other:?}"),
                )),
            },
            Lane::RoomEnd { handle } => Err(fail("join", format!("room {handle} ended"))),
            Lane::Volatile(_) | Lane::Unknown(_) => Ok(()),
        }
    }

    /// Whether every join was answered and every joined room's lane opened.
    fn done(&self) -> bool {
        self.joins.replied() && self.joins.handles().iter().all(|h| self.opened.contains(h))
    }
}

/// What a close frame from the server says, for the report: `4000 + n` is
/// error code `n` (§16.4).
fn closed_kind(frame: Option<&CloseFrame>) -> String {
    let Some(code) = frame.map(|f| u16::from(f.code)) else {
        return "closed by server".to_owned();
    };
    match websocket_close_code(code) {
        Some(code) => format!("closed by server: {code:?}"),
        None => format!("closed by server: WebSocket code {code}"),
    }
}

/// A sender's messages of one wakeup, written with one flush.
#[derive(Default)]
struct Messages(Vec<Bytes>);

impl Outlet for Messages {
    fn publish(&mut self, req: u32, room: &str, body: &[u8]) {
        let mut m = Vec::with_capacity(16 + room.len() + body.len());
        m.push(lane::CONTROL);
        wire::encode_publish_body(&mut m, req, room, body);
        self.0.push(m.into());
    }

    fn datagram(&mut self, handle: u32, body: &[u8]) -> Result<(), String> {
        let mut m = Vec::with_capacity(16 + body.len());
        m.push(lane::VOLATILE);
        wire::encode_datagram_send(&mut m, handle, body);
        self.0.push(m.into());
        Ok(())
    }
}

impl Messages {
    async fn send(&mut self, socket: &mut WsStream) -> Result<(), WsError> {
        for m in self.0.drain(..) {
            socket.feed(Message::Binary(m)).await?;
        }
        socket.flush().await
    }
}

/// Client `client`'s session until the run stops: receives every lane and, for
/// a sender, publishes on schedule; closes with 1000 at the end.
pub(super) async fn run(ctx: Arc<Ctx>, client: u32, j: Joined, stop: CancellationToken) -> Counts {
    let Joined {
        mut socket,
        handles,
        ..
    } = j;
    let plan = ctx.plan;
    let mut rooms: Vec<RoomRecv> = plan
        .rooms_of(client)
        .map(|r| RoomRecv::new(&plan, r))
        .collect();
    let mut publisher = plan.is_sender(client).then(|| Publisher::new(&ctx, client));
    let mut due = publisher.as_ref().and_then(Publisher::next_due);
    let at = |due: Option<u64>| (ctx.epoch + Duration::from_nanos(due.unwrap_or(0))).into();
    let sleep = tokio::time::sleep_until(at(due));
    tokio::pin!(sleep);
    let mut out = Messages::default();
    let mut online = 0u64;
    let ended = loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => break None,
            // Sends first: a busy socket must not delay the schedule.
            () = &mut sleep, if due.is_some() => {
                let Some(p) = publisher.as_mut() else { break None };
                p.publish_due(&ctx, &handles, &mut out);
                if let Err(e) = out.send(&mut socket).await {
                    break Some(format!("publish: {e}"));
                }
                due = p.next_due();
                sleep.as_mut().reset(at(due));
            }
            read = socket.next() => {
                let now_ns = ctx.now_ns();
                let mut read = read;
                // What is already buffered (a batch at most), then the figures once.
                let mut batch = 1;
                let failed = loop {
                    if let Err(kind) = receive(&ctx, read, &handles, &mut rooms, &mut online, now_ns) {
                        break Some(kind);
                    }
                    if batch == READ_BATCH {
                        break None;
                    }
                    batch += 1;
                    match socket.next().now_or_never() {
                        Some(next) => read = next,
                        None => break None,
                    }
                };
                rooms.iter_mut().for_each(|r| r.flush(&ctx));
                if failed.is_some() {
                    break failed;
                }
            }
        }
    };
    ctx.online_frames
        .fetch_add(online, std::sync::atomic::Ordering::Relaxed);
    match ended {
        Some(kind) if !stop.is_cancelled() => ctx.error(kind, 1),
        Some(_) => {}
        None => close(&mut socket, "load done").await,
    }
    let mut counts = Counts::default();
    for r in rooms {
        counts.add(&r.finish(&ctx));
    }
    counts
}

/// Takes one read off the socket, received at `now_ns`; the error is why the
/// session ended.
fn receive(
    ctx: &Ctx,
    read: Option<Result<Message, WsError>>,
    handles: &[u32],
    rooms: &mut [RoomRecv],
    online: &mut u64,
    now_ns: u64,
) -> Result<(), String> {
    let message = match read {
        Some(Ok(Message::Binary(message))) => message,
        Some(Ok(Message::Close(frame))) => return Err(closed_kind(frame.as_ref())),
        Some(Ok(Message::Text(_))) => {
            ctx.error("websocket: text message", 1);
            return Ok(());
        }
        Some(Ok(_)) => return Ok(()), // ping, pong
        Some(Err(e)) => return Err(format!("websocket: {e}")),
        None => return Err("websocket: connection lost".to_owned()),
    };
    match lane::parse(&message) {
        Ok(Lane::Room { handle, body }) => match handles.iter().position(|&h| h == handle) {
            Some(k) => rooms[k].on_frame(ctx, body, now_ns)?,
            None => ctx.error("room message for another handle", 1),
        },
        Ok(Lane::Control(body)) => match lane::decode_control::<ServerFrame>(body) {
            Ok(frame) => on_reply(ctx, &frame, online),
            Err(CodecError::UnknownVariant(_)) => {}
            Err(e) => ctx.error(format!("control: {e}"), 1),
        },
        Ok(Lane::Volatile(payload)) => {
            on_datagram(ctx, payload, handles.iter().copied(), rooms, now_ns)
        }
        Ok(Lane::RoomEnd { .. }) => return Err("room stream finished".to_owned()),
        Ok(Lane::Unknown(_)) => {}
        Err(e) => ctx.error(format!("websocket: {e}"), 1),
    }
    Ok(())
}

/// Closes with 1000 (a normal end, §16.4), within [`CLOSE_TIMEOUT`].
async fn close(socket: &mut WsStream, reason: &'static str) {
    let frame = CloseFrame {
        code: CloseCode::Normal,
        reason: reason.into(),
    };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, socket.close(Some(frame))).await;
}

impl Joined {
    /// A churn session's stay: reads (and drops) what comes for `life` or until
    /// `stop`, then closes.
    pub(super) async fn linger(mut self, life: Duration, stop: &CancellationToken) {
        let until = tokio::time::sleep(life);
        tokio::pin!(until);
        loop {
            tokio::select! {
                _ = &mut until => break,
                _ = stop.cancelled() => break,
                read = self.socket.next() => {
                    if !matches!(read, Some(Ok(_))) {
                        return;
                    }
                }
            }
        }
        close(&mut self.socket, "churn").await;
    }
}

#[cfg(test)]
// The fake server's upgrade callbacks have tungstenite's `Callback` signature.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use crate::protocol::{frame_bytes, ClientFrame};
    use crate::server::SUBPROTOCOL;
    use tokio::net::TcpListener;
    use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
    use tokio_tungstenite::tungstenite::http::header::SEC_WEBSOCKET_PROTOCOL;

    fn connector() -> WsConnector {
        super::connector(&Trust::Hash("ab".repeat(32)))
    }

    #[test]
    fn server_urls_become_websocket_urls() {
        for (given, ws) in [
            ("https://127.0.0.1:4433/chat", "wss://127.0.0.1:4433/chat"),
            ("wss://[::1]:4433/chat", "wss://[::1]:4433/chat"),
            ("ws://localhost:8080/a/b", "ws://localhost:8080/a/b"),
        ] {
            assert_eq!(ws_url(given).unwrap(), ws, "{given}");
        }
        assert!(ws_url("ftp://h/chat").is_err());
        assert!(ws_url("no url").is_err());
    }

    #[test]
    fn close_codes_name_the_error() {
        let frame = |code: u16| CloseFrame {
            code: CloseCode::from(code),
            reason: "".into(),
        };
        assert_eq!(
            closed_kind(Some(&frame(4012))),
            "closed by server: SlowConsumer"
        );
        assert_eq!(
            closed_kind(Some(&frame(4001))),
            "closed by server: Protocol"
        );
        assert_eq!(
            closed_kind(Some(&frame(1001))),
            "closed by server: WebSocket code 1001"
        );
        assert_eq!(closed_kind(None), "closed by server");
    }

    /// The byte-exact messages of tests/vectors/websocket.json.
    fn vector(name: &str) -> Vec<u8> {
        let all: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/vectors/websocket.json")).unwrap();
        let v = all
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no vector {name}"));
        hex::decode(v["hex"].as_str().unwrap()).unwrap()
    }

    #[test]
    fn what_a_sender_writes_matches_the_vectors() {
        let mut out = Messages::default();
        out.publish(2, "lobby", b"hi");
        out.datagram(0, &[1, 2, 3]).unwrap();
        assert_eq!(out.0[0].as_ref(), vector("control_publish"));
        assert_eq!(out.0[1].as_ref(), vector("volatile_send"));
    }

    #[test]
    fn what_a_receiver_reads_matches_the_vectors() {
        let message = vector("room_message");
        let Ok(Lane::Room { handle: 0, body }) = lane::parse(&message) else {
            panic!("not a room message");
        };
        let m = wire::parse_message(body).unwrap().unwrap();
        assert_eq!((m.seq, m.from, m.body), (1, &b"alice"[..], &b"hello"[..]));
        let message = vector("volatile_recv");
        let Ok(Lane::Volatile(payload)) = lane::parse(&message) else {
            panic!("not a datagram");
        };
        assert_eq!(
            wire::parse_datagram_recv(payload).unwrap(),
            Some((128, &b"typing"[..]))
        );
        let presence = vector("room_presence_join");
        let Ok(Lane::Room { body, .. }) = lane::parse(&presence) else {
            panic!("not a room message");
        };
        assert!(wire::is_presence(body));
    }

    fn joined(req: u32, handle: u32) -> Vec<u8> {
        lane::control(&frame_bytes(&ServerFrame::Joined {
            req,
            room: format!("r{req}"),
            handle,
            epoch: 1,
            seq: 0,
            recovered: false,
            members: vec![],
        }))
        .to_vec()
    }

    fn room_stream(handle: u32) -> Vec<u8> {
        let frame = ServerFrame::RoomStream {
            room: format!("h{handle}"),
            handle,
        };
        lane::room(handle, &frame_bytes(&frame)).to_vec()
    }

    #[test]
    fn joining_takes_replies_and_room_starts_in_any_order() {
        let mut j = Joining::new(2);
        j.on_message(&room_stream(5)).unwrap();
        j.on_message(&joined(1, 5)).unwrap();
        assert!(!j.done());
        j.on_message(&vector("room_presence_join")[..1]) // lane 1 without a handle
            .unwrap_err();
        let presence = ServerFrame::PresenceJoin { user: "u".into() };
        j.on_message(&lane::room(5, &frame_bytes(&presence)))
            .unwrap();
        j.on_message(&joined(2, 9)).unwrap();
        assert!(!j.done(), "room 9 has not started");
        j.on_message(&lane::control(&frame_bytes(&ServerFrame::OnlineJoin {
            user: "x".into(),
        })))
        .unwrap();
        j.on_message(&[7, 1, 2]).unwrap(); // a lane this build does not know
        j.on_message(&room_stream(9)).unwrap();
        assert!(j.done());
        assert_eq!(j.joins.handles(), [5, 9]);
        assert_eq!((j.presence, j.joins.online_frames), (1, 1));
    }

    #[test]
    fn joining_fails_on_what_cannot_start_a_room() {
        let message = ServerFrame::Message {
            seq: 1,
            from: "a".into(),
            body: Bytes::new(),
            ts: 0,
        };
        let mut j = Joining::new(1);
        let err = j
            .on_message(&lane::room(3, &frame_bytes(&message)))
            .unwrap_err();
        assert_eq!(err.kind, "join");
        assert!(Joining::new(1).on_message(&lane::room_end(3)).is_err());
        assert!(Joining::new(1).on_message(&[]).is_err());
        assert!(Joining::new(1).on_message(&room_stream(3)[..3]).is_err());
    }

    /// A fake server on 127.0.0.1 (`ws://`): upgrades with `accept` deciding,
    /// then welcomes, sends `RoomStream` before `Joined` for each join, and
    /// holds the connection until the client goes.
    async fn fake_server(
        accept: fn(&Request, Response) -> Result<Response, ErrorResponse>,
    ) -> (String, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/chat", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tcp, accept).await else {
                return;
            };
            let mut handle = 40;
            while let Some(Ok(m)) = ws.next().await {
                let Message::Binary(m) = m else { continue };
                let Ok(Lane::Control(body)) = lane::parse(&m) else {
                    panic!("client lane {}", m[0]);
                };
                let reply: Vec<Vec<u8>> = match lane::decode_control::<ClientFrame>(body).unwrap() {
                    ClientFrame::Hello { token, .. } => {
                        assert_eq!(token, "t");
                        vec![lane::control(&frame_bytes(&ServerFrame::Welcome {
                            session: 1,
                            user: "u".into(),
                            max_frame: 65_536,
                            online: None,
                        }))
                        .to_vec()]
                    }
                    ClientFrame::Join { req, .. } => {
                        handle += 1;
                        vec![room_stream(handle), joined(req, handle)]
                    }
                    other => panic!("{other:?}"),
                };
                for r in reply {
                    ws.send(Message::Binary(r.into())).await.unwrap();
                }
            }
        });
        (url, task)
    }

    fn selects_wtgate(
        request: &Request,
        mut response: Response,
    ) -> Result<Response, ErrorResponse> {
        let offered = request.headers().get(SEC_WEBSOCKET_PROTOCOL).unwrap();
        assert_eq!(offered, SUBPROTOCOL);
        response
            .headers_mut()
            .insert(SEC_WEBSOCKET_PROTOCOL, offered.clone());
        Ok(response)
    }

    #[tokio::test]
    async fn a_session_connects_says_hello_and_joins() {
        let (url, server) = fake_server(selects_wtgate).await;
        let rooms = ["a".to_owned(), "b".to_owned()];
        let j = open(&connector(), &url, "t", &rooms).await.unwrap();
        assert_eq!(j.handles, [41, 42]);
        assert!(j.connect_time > Duration::ZERO);
        let mut socket = j.socket;
        close(&mut socket, "test").await;
        drop(socket);
        server.await.unwrap();
    }

    #[tokio::test]
    async fn a_refused_upgrade_names_the_status() {
        let (url, _server) = fake_server(|_, _| {
            let mut refusal = ErrorResponse::new(Some(r#"{"error":"unknown namespace"}"#.into()));
            *refusal.status_mut() = tokio_tungstenite::tungstenite::http::StatusCode::NOT_FOUND;
            Err(refusal)
        })
        .await;
        let err = open(&connector(), &url, "t", &[]).await.err().unwrap();
        assert_eq!(err.kind, "connect");
        assert!(err.detail.contains("404"), "{}", err.detail);
    }

    #[tokio::test]
    async fn a_server_must_select_the_subprotocol() {
        let (url, _server) = fake_server(|_, response| Ok(response)).await;
        let err = open(&connector(), &url, "t", &[]).await.err().unwrap();
        assert_eq!(err.kind, "connect");
        assert!(
            err.detail.to_lowercase().contains("subprotocol"),
            "{}",
            err.detail
        );
    }
}
