//! One load client's session, lean: it speaks the protocol directly over a shared
//! client endpoint instead of going through [`crate::client::Client`], so a
//! delivery costs no task hop, no channel and no allocation — the load tester
//! shares the machine with the server it measures.

use std::time::{Duration, Instant};

use bytes::BytesMut;
use wtransport::endpoint::endpoint_side;
use wtransport::{Connection, Endpoint, RecvStream, SendStream};

use super::wire::{split_frame, WireError};
use crate::protocol::{decode_frame, frame_bytes, ClientFrame, ServerFrame, PROTOCOL_VERSION};
use crate::transport::FrameReader;

/// How long opening a session, `Hello` and the join may take each.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest frame accepted from the server.
pub(crate) const MAX_FRAME: usize = crate::config::MAX_FRAME_LIMIT;

/// Why a client could not get going; `kind` is what the report counts.
#[derive(Debug)]
pub(crate) struct SetupError {
    pub(crate) kind: String,
    pub(crate) detail: String,
}

fn fail(kind: &str, detail: impl ToString) -> SetupError {
    SetupError {
        kind: kind.to_owned(),
        detail: detail.to_string(),
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
        .map_err(|e| fail("connect", e))?
        .await
        .map_err(|e| fail("connect", e))?;
    let hello = frame_bytes(&ClientFrame::Hello {
        version: PROTOCOL_VERSION,
        token: token.to_owned(),
    });
    control
        .write_all(&hello)
        .await
        .map_err(|e| fail("hello", e))?;
    let mut replies = FrameReader::new(recv, MAX_FRAME);
    let mut first = replies.next::<ServerFrame>().await;
    // A namespace with a connect hook may send what it attached first.
    if let Ok(Some(ServerFrame::ConnectInfo { .. })) = first {
        first = replies.next::<ServerFrame>().await;
    }
    match first {
        Ok(Some(ServerFrame::Welcome { .. })) => Ok((control, replies)),
        Ok(Some(ServerFrame::Error { code, message, .. })) => {
            Err(fail(&format!("hello: {code:?}"), message))
        }
        Ok(other) => Err(fail("hello", format!("expected Welcome, got {other:?}"))),
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
    for (i, room) in rooms.iter().enumerate() {
        frames.extend_from_slice(&frame_bytes(&ClientFrame::Join {
            req: i as u32 + 1,
            room: room.clone(),
            since: None,
        }));
    }
    control
        .write_all(&frames)
        .await
        .map_err(|e| fail("join", e))?;
    let mut online_frames = 0;
    let mut handles: Vec<Option<u32>> = vec![None; rooms.len()];
    while handles.iter().any(Option::is_none) {
        match replies.next::<ServerFrame>().await {
            Ok(Some(ServerFrame::Joined { req, handle, .. })) => {
                match handles.get_mut((req as usize).wrapping_sub(1)) {
                    Some(slot @ None) => *slot = Some(handle),
                    _ => return Err(fail("join", format!("unexpected Joined for request {req}"))),
                }
            }
            // The namespace's pushes may come before the replies: other
            // sessions coming online (namespace presence), broadcasts.
            Ok(Some(ServerFrame::OnlineJoin { .. } | ServerFrame::OnlineLeave { .. })) => {
                online_frames += 1
            }
            Ok(Some(
                ServerFrame::Broadcast { .. }
                | ServerFrame::Notification { .. }
                | ServerFrame::RpcReply { .. },
            )) => {}
            Ok(Some(ServerFrame::Error { code, message, .. })) => {
                return Err(fail(&format!("join: {code:?}"), message))
            }
            Ok(other) => return Err(fail("join", format!("expected Joined, got {other:?}"))),
            Err(e) => return Err(fail("join", e)),
        }
    }
    // Room streams may arrive in any order: match them by handle.
    let mut streams: Vec<Option<RoomReader>> = (0..rooms.len()).map(|_| None).collect();
    for _ in 0..rooms.len() {
        let stream = conn.accept_uni().await.map_err(|e| fail("join", e))?;
        let mut reader = RoomReader::new(stream);
        let h = reader.header().await.map_err(|e| fail("join", e))?;
        let at = handles.iter().position(|&x| x.is_some() && x == h);
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
                handle: handle.expect("every room joined"),
            })
            .collect(),
        online_frames,
    ))
}

async fn within<T>(
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
