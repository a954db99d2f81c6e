//! One load client's session, lean: it speaks the protocol directly over a shared
//! client endpoint instead of going through [`crate::client::Client`], so a
//! delivery costs no task hop, no channel and no allocation — the load tester
//! shares the machine with the server it measures.
//!
//! What `Hello` and the joins expect back ([`welcome`], over the client's
//! [`Handshake`], and [`Joins`]) has no I/O: the WebSocket session (`websocket.rs`) feeds it the
//! same frames from its lanes.

use std::time::{Duration, Instant};

use bytes::BytesMut;
use wtransport::endpoint::endpoint_side;
use wtransport::{Connection, Endpoint, RecvStream, SendStream};

use super::wire::{split_frame, WireError};
use crate::client::{hello as hello_frame, ClientError, Handshake};
use crate::protocol::{decode_frame, frame_bytes, ClientFrame, ErrorCode, ServerFrame};
use crate::transport::FrameReader;

/// How long opening a session, `Hello` and the join may take each.
pub(super) const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest frame accepted from the server.
pub(crate) const MAX_FRAME: usize = crate::config::MAX_FRAME_LIMIT;

/// Why a client could not get going; `kind` is what the report counts.
#[derive(Debug)]
pub(crate) struct SetupError {
    pub(crate) kind: String,
    pub(crate) detail: String,
}

pub(super) fn fail(kind: &str, detail: impl ToString) -> SetupError {
    SetupError {
        kind: kind.to_owned(),
        detail: detail.to_string(),
    }
}

/// A connection's end with the server's close code named: the report folds
/// numbers into `N`, so "closed by peer: 12" alone would not say which.
pub(super) fn describe_connection_error(e: &wtransport::error::ConnectionError) -> String {
    match e {
        wtransport::error::ConnectionError::ApplicationClosed(close) => {
            let reason = String::from_utf8_lossy(close.reason());
            format!(
                "closed by the server: {} {reason}",
                close_code_name(close.code().into_inner())
            )
            .trim_end()
            .to_owned()
        }
        e => e.to_string(),
    }
}

/// wtgate's close codes (PROTOCOL.md) and HTTP/3's (RFC 9114 §8.1) by name.
fn close_code_name(code: u64) -> String {
    const H3: [&str; 17] = [
        "H3_NO_ERROR",
        "H3_GENERAL_PROTOCOL_ERROR",
        "H3_INTERNAL_ERROR",
        "H3_STREAM_CREATION_ERROR",
        "H3_CLOSED_CRITICAL_STREAM",
        "H3_FRAME_UNEXPECTED",
        "H3_FRAME_ERROR",
        "H3_EXCESSIVE_LOAD",
        "H3_ID_ERROR",
        "H3_SETTINGS_ERROR",
        "H3_MISSING_SETTINGS",
        "H3_REQUEST_REJECTED",
        "H3_REQUEST_CANCELLED",
        "H3_REQUEST_INCOMPLETE",
        "H3_MESSAGE_ERROR",
        "H3_CONNECT_ERROR",
        "H3_VERSION_FALLBACK",
    ];
    match code {
        0 => "no error".to_owned(),
        0x100..=0x110 => H3[(code - 0x100) as usize].to_owned(),
        code => match u32::try_from(code).map(ErrorCode::from) {
            Ok(ErrorCode::Other(_)) | Err(_) => format!("code {code:#x}"),
            Ok(known) => format!("{known:?}"),
        },
    }
}

/// A room a session joined.
pub(crate) struct JoinedRoom {
    /// Its stream.
    pub(crate) reader: RoomReader,
    /// Its handle (datagrams).
    pub(crate) handle: u32,
}

/// A session that said `Hello` and joined its rooms.
pub(crate) struct Joined {
    pub(crate) conn: Connection,
    pub(crate) control: SendStream,
    pub(crate) replies: FrameReader<RecvStream>,
    /// In the order of the names given to [`open`].
    pub(crate) rooms: Vec<JoinedRoom>,
    /// Time from the first packet until `Welcome`.
    pub(crate) connect_time: Duration,
    /// `OnlineJoin`/`OnlineLeave` frames that came before the last `Joined`.
    pub(crate) online_frames: u64,
}

/// Opens a session on `url`, says `Hello` with `token` and joins `rooms`
/// (request ids 1, 2, …).
pub(crate) async fn open(
    endpoint: &Endpoint<endpoint_side::Client>,
    url: &str,
    token: &str,
    rooms: &[String],
) -> Result<Joined, SetupError> {
    let started = Instant::now();
    let conn = match tokio::time::timeout(STEP_TIMEOUT, endpoint.connect(url)).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => return Err(fail("connect", e)),
        Err(_) => return Err(fail("connect", "timed out")),
    };
    let (mut control, mut replies) = within(hello(&conn, token)).await?;
    let connect_time = started.elapsed();
    let (rooms, online_frames) = within(join(&conn, &mut control, &mut replies, rooms)).await?;
    Ok(Joined {
        conn,
        control,
        replies,
        rooms,
        connect_time,
        online_frames,
    })
}

/// Opens the control stream and says `Hello`; returns it once `Welcome` came.
async fn hello(
    conn: &Connection,
    token: &str,
) -> Result<(SendStream, FrameReader<RecvStream>), SetupError> {
    let (mut control, recv) = conn
        .open_bi()
        .await
        .map_err(|e| fail("connect", describe_connection_error(&e)))?
        .await
        .map_err(|e| fail("connect", e))?;
    control
        .write_all(&frame_bytes(&hello_frame(token)))
        .await
        .map_err(|e| fail("hello", e))?;
    let mut replies = FrameReader::new(recv, MAX_FRAME);
    let mut handshake = Handshake::default();
    loop {
        match replies.next::<ServerFrame>().await {
            Ok(reply) => {
                if welcome(&mut handshake, reply)? {
                    return Ok((control, replies));
                }
            }
            Err(e) => return Err(fail("hello", e)),
        }
    }
}

/// What a frame that answers `Hello` (`None`: the stream ended) says: `true`
/// once welcomed, `false` to read on, or why the session was refused, as the
/// report counts it (`hello: <code>` for a refusal).
pub(super) fn welcome(
    handshake: &mut Handshake,
    reply: Option<ServerFrame>,
) -> Result<bool, SetupError> {
    let Some(frame) = reply else {
        return Err(fail("hello", "expected Welcome, the stream ended"));
    };
    match handshake.on_frame(frame) {
        Ok(welcomed) => Ok(welcomed.is_some()),
        Err(ClientError::Server { code, message }) => {
            Err(fail(&format!("hello: {code:?}"), message))
        }
        Err(e) => Err(fail("hello", e)),
    }
}

/// Joins `rooms` and accepts their streams; returns them in order, with the
/// namespace presence frames that came in between.
async fn join(
    conn: &Connection,
    control: &mut SendStream,
    replies: &mut FrameReader<RecvStream>,
    rooms: &[String],
) -> Result<(Vec<JoinedRoom>, u64), SetupError> {
    let mut frames = Vec::new();
    for frame in Joins::frames(rooms) {
        frames.extend_from_slice(&frame_bytes(&frame));
    }
    control
        .write_all(&frames)
        .await
        .map_err(|e| fail("join", e))?;
    let mut joins = Joins::new(rooms.len());
    while !joins.replied() {
        match replies.next::<ServerFrame>().await {
            Ok(Some(frame)) => joins.on_reply(frame)?,
            Ok(None) => return Err(fail("join", "expected Joined, got None")),
            Err(e) => return Err(fail("join", e)),
        }
    }
    let handles = joins.handles();
    // Room streams may arrive in any order: match them by handle.
    let mut streams: Vec<Option<RoomReader>> = (0..rooms.len()).map(|_| None).collect();
    for _ in 0..rooms.len() {
        let stream = conn.accept_uni().await.map_err(|e| fail("join", e))?;
        let mut reader = RoomReader::new(stream);
        let h = reader.header().await.map_err(|e| fail("join", e))?;
        let at = h.and_then(|h| joins.position(h));
        match at.and_then(|i| streams.get_mut(i)) {
            Some(slot @ None) => *slot = Some(reader),
            _ => return Err(fail("join", format!("room stream header {h:?}"))),
        }
    }
    Ok((
        streams
            .into_iter()
            .zip(handles)
            .map(|(reader, handle)| JoinedRoom {
                reader: reader.expect("every stream matched"),
                handle,
            })
            .collect(),
        joins.online_frames,
    ))
}

/// The replies to a session's joins, matched as they come (no I/O: both
/// transports feed it the control frames they read).
#[derive(Debug)]
pub(super) struct Joins {
    /// The handle of join `i` (request `i + 1`), once it was answered.
    handles: Vec<Option<u32>>,
    /// `OnlineJoin`/`OnlineLeave` frames that came in between.
    pub(super) online_frames: u64,
}

impl Joins {
    /// The `Join` of each room, with request ids 1, 2, …
    pub(super) fn frames(rooms: &[String]) -> impl Iterator<Item = ClientFrame> + '_ {
        rooms.iter().enumerate().map(|(i, room)| ClientFrame::Join {
            req: i as u32 + 1,
            room: room.clone(),
            since: None,
        })
    }

    /// Waiting for the replies to `rooms` joins.
    pub(super) fn new(rooms: usize) -> Joins {
        Joins {
            handles: vec![None; rooms],
            online_frames: 0,
        }
    }

    /// Takes one control frame.
    pub(super) fn on_reply(&mut self, frame: ServerFrame) -> Result<(), SetupError> {
        match frame {
            ServerFrame::Joined { req, handle, .. } => {
                match self.handles.get_mut((req as usize).wrapping_sub(1)) {
                    Some(slot @ None) => *slot = Some(handle),
                    _ => return Err(fail("join", format!("unexpected Joined for request {req}"))),
                }
            }
            // The namespace's pushes may come before the replies: other
            // sessions coming online (namespace presence), broadcasts.
            ServerFrame::OnlineJoin { .. } | ServerFrame::OnlineLeave { .. } => {
                self.online_frames += 1
            }
            ServerFrame::Broadcast { .. }
            | ServerFrame::Notification { .. }
            | ServerFrame::RpcReply { .. } => {}
            ServerFrame::Error { code, message, .. } => {
                return Err(fail(&format!("join: {code:?}"), message))
            }
            other => return Err(fail("join", format!("expected Joined, got {other:?}"))),
        }
        Ok(())
    }

    /// Whether every join was answered.
    pub(super) fn replied(&self) -> bool {
        self.handles.iter().all(Option::is_some)
    }

    /// The handle of each join, in order (once [`replied`](Self::replied)).
    pub(super) fn handles(&self) -> Vec<u32> {
        self.handles.iter().map(|h| h.unwrap_or(u32::MAX)).collect()
    }

    /// The join whose handle is `handle`.
    pub(super) fn position(&self, handle: u32) -> Option<usize> {
        self.handles.iter().position(|&h| h == Some(handle))
    }
}

pub(super) async fn within<T>(
    f: impl std::future::Future<Output = Result<T, SetupError>>,
) -> Result<T, SetupError> {
    tokio::time::timeout(STEP_TIMEOUT, f)
        .await
        .unwrap_or_else(|_| Err(fail("timeout", "no answer in time")))
}

/// Why reading a room stream stopped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RoomReadError {
    /// The stream failed or the connection closed.
    #[error("room stream: {0}")]
    Stream(#[from] wtransport::error::StreamReadError),
    /// The server finished the stream.
    #[error("room stream finished")]
    Finished,
    /// The bytes are not frames.
    #[error("room stream: {0}")]
    Wire(#[from] WireError),
    /// The header is not a `RoomStream` frame.
    #[error("room stream header: {0}")]
    Header(String),
}

/// Reads a room stream into one reused buffer and hands out whole frames in
/// place.
pub(crate) struct RoomReader {
    stream: RecvStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl RoomReader {
    fn new(stream: RecvStream) -> Self {
        RoomReader {
            stream,
            buf: vec![0; 16 * 1024],
            start: 0,
            end: 0,
        }
    }

    /// Reads the `RoomStream` header: its handle.
    async fn header(&mut self) -> Result<Option<u32>, RoomReadError> {
        loop {
            if let Some((_, used)) = split_frame(&self.buf[self.start..self.end], MAX_FRAME)? {
                let mut frame = BytesMut::from(&self.buf[self.start..self.start + used]);
                self.start += used;
                return match decode_frame::<ServerFrame>(&mut frame, MAX_FRAME) {
                    Ok(Some(ServerFrame::RoomStream { handle, .. })) => Ok(Some(handle)),
                    Ok(other) => Err(RoomReadError::Header(format!("{other:?}"))),
                    Err(e) => Err(RoomReadError::Header(e.to_string())),
                };
            }
            self.fill().await?;
        }
    }

    /// Waits for more bytes. Cancel-safe: nothing is lost if the future is dropped.
    pub(crate) async fn fill(&mut self) -> Result<(), RoomReadError> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.start > 0 && (self.end == self.buf.len() || self.start >= self.buf.len() / 2)
        {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            // One frame larger than the buffer (split_frame caps it at MAX_FRAME).
            let len = self.buf.len() * 2;
            self.buf.resize(len, 0);
        }
        match self.stream.read(&mut self.buf[self.end..]).await? {
            Some(n) => {
                self.end += n;
                Ok(())
            }
            None => Err(RoomReadError::Finished),
        }
    }

    /// The next whole frame body already buffered.
    pub(crate) fn next_frame(&mut self) -> Result<Option<&[u8]>, RoomReadError> {
        let (len, used) = match split_frame(&self.buf[self.start..self.end], MAX_FRAME)? {
            Some((body, used)) => (body.len(), used),
            None => return Ok(None),
        };
        let at = self.start + (used - len);
        self.start += used;
        Ok(Some(&self.buf[at..at + len]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ErrorCode;

    fn joined(req: u32, handle: u32) -> ServerFrame {
        ServerFrame::Joined {
            req,
            room: "r".into(),
            handle,
            epoch: 1,
            seq: 0,
            recovered: false,
            members: vec![],
        }
    }

    #[test]
    fn joins_are_matched_by_request_in_any_order() {
        let rooms = ["a".to_owned(), "b".to_owned()];
        let reqs: Vec<u32> = Joins::frames(&rooms)
            .map(|f| match f {
                ClientFrame::Join { req, .. } => req,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(reqs, [1, 2]);
        let mut joins = Joins::new(2);
        joins.on_reply(joined(2, 7)).unwrap();
        assert!(!joins.replied());
        joins
            .on_reply(ServerFrame::OnlineJoin { user: "x".into() })
            .unwrap();
        joins.on_reply(joined(1, 3)).unwrap();
        assert!(joins.replied());
        assert_eq!(joins.handles(), [3, 7]);
        assert_eq!((joins.position(7), joins.position(9)), (Some(1), None));
        assert_eq!(joins.online_frames, 1);
    }

    #[test]
    fn a_bad_reply_fails_the_join_by_kind() {
        let mut joins = Joins::new(1);
        assert_eq!(joins.on_reply(joined(2, 1)).unwrap_err().kind, "join");
        joins.on_reply(joined(1, 1)).unwrap();
        assert!(joins.on_reply(joined(1, 1)).is_err(), "answered twice");
        let err = Joins::new(1)
            .on_reply(ServerFrame::Error {
                req: 1,
                code: ErrorCode::TooManyRooms,
                message: "full".into(),
            })
            .unwrap_err();
        assert_eq!(
            (err.kind.as_str(), err.detail.as_str()),
            ("join: TooManyRooms", "full")
        );
    }

    #[test]
    fn close_codes_are_named_so_the_report_keeps_them() {
        use crate::load::report::error_kind;
        assert_eq!(close_code_name(12), "SlowConsumer");
        assert_eq!(close_code_name(0x10c), "H3_REQUEST_CANCELLED");
        assert_eq!(close_code_name(0), "no error");
        assert_eq!(close_code_name(1000), "code 0x3e8");
        assert_eq!(
            error_kind(&format!("closed by the server: {}", close_code_name(13))),
            "closed by the server: GoingAway"
        );
    }

    #[test]
    fn only_welcome_welcomes() {
        let mut handshake = Handshake::default();
        let info = ServerFrame::ConnectInfo {
            data: bytes::Bytes::from_static(b"{}"),
        };
        assert!(
            !welcome(&mut handshake, Some(info)).unwrap(),
            "a connect hook's data: read on"
        );
        let welcome_frame = ServerFrame::Welcome {
            session: 1,
            user: "u".into(),
            max_frame: 65_536,
            online: None,
        };
        assert!(welcome(&mut handshake, Some(welcome_frame)).unwrap());
        let refusal = ServerFrame::Error {
            req: 0,
            code: ErrorCode::Unauthorized,
            message: "bad token".into(),
        };
        let err = welcome(&mut Handshake::default(), Some(refusal)).unwrap_err();
        assert_eq!(
            (err.kind.as_str(), err.detail.as_str()),
            ("hello: Unauthorized", "bad token")
        );
        let ack = ServerFrame::Ack { req: 1, seq: 1 };
        let err = welcome(&mut Handshake::default(), Some(ack)).unwrap_err();
        assert_eq!(err.kind, "hello");
        assert_eq!(
            welcome(&mut Handshake::default(), None).unwrap_err().kind,
            "hello"
        );
    }
}
