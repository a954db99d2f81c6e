//! HTTP/3 and WebTransport over one `quinn_proto::Connection`, sans-IO: the
//! server's SETTINGS, the client's CONNECT request and its answer, the stream
//! and datagram headers of the session (draft-ietf-webtrans-http3), with
//! `wtransport-proto` for the framing. The event loop feeds it the connection's
//! stream events; the application reads and writes through the loop's `Io`.

use std::collections::{HashMap, VecDeque};

use bytes::{Buf, Bytes, BytesMut};
use quinn_proto::{Connection, Dir, StreamEvent, StreamId, VarInt};
use wtransport_proto::bytes::{BufferReader, BytesReader, BytesWriter};
use wtransport_proto::frame::{Frame, FrameKind};
use wtransport_proto::headers::Headers;
use wtransport_proto::ids::{SessionId, StatusCode};
use wtransport_proto::session::{SessionRequest, SessionResponse};
use wtransport_proto::settings::Settings;
use wtransport_proto::stream_header::StreamHeader;
use wtransport_proto::varint::VarInt as H3VarInt;

/// The unidirectional stream type of a WebTransport stream (draft-ietf-webtrans-http3 §4.1).
const STREAM_WEBTRANSPORT: u64 = 0x54;
/// The signal that opens a bidirectional WebTransport stream (§4.2).
const SIGNAL_WEBTRANSPORT: u64 = 0x41;
/// What is read of the CONNECT stream before its HEADERS frame must be whole:
/// `wtransport-proto` refuses a frame whose payload is over 4 KiB (a request's
/// headers are a few hundred bytes), plus the frame's type and length.
const MAX_REQUEST: usize = 4096 + 16;
/// Bytes read per stream per pass.
const READ_CHUNK: usize = 64 * 1024;
/// The longest stream header read before a stream is refused (two varints).
const MAX_HEADER: usize = 16;
/// H3_GENERAL_PROTOCOL_ERROR: how a connection that breaks HTTP/3 is closed.
const H3_PROTOCOL_ERROR: u32 = 0x101;
/// H3_REQUEST_REJECTED: a stream the server does not take.
const H3_REQUEST_REJECTED: u32 = 0x10b;
/// H3_INTERNAL_ERROR's status: what an answer outside 100–599 becomes.
const STATUS_INTERNAL: u16 = 500;

/// Where the connection is in HTTP/3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The QUIC handshake is not done.
    Handshaking,
    /// Waiting for the CONNECT request.
    AwaitingRequest,
    /// The request was read and handed to the application.
    Requested,
    /// The session is open.
    Open,
    /// Refused, closed or broken: nothing more is read.
    Done,
}

/// A WebTransport request, for the application to accept or refuse.
#[derive(Debug)]
pub struct Request {
    /// `:path`, with the query.
    pub path: String,
    /// `origin`, when the client sent one (browsers do).
    pub origin: Option<String>,
}

/// A client stream still being identified, with what was read of it.
#[derive(Debug)]
enum Incoming {
    /// Before its header: the HTTP/3 type of a unidirectional stream, the
    /// WEBTRANSPORT_STREAM signal of a bidirectional one.
    Header { uni: bool, buf: BytesMut },
    /// HTTP/3 control, QPACK or unknown: read and dropped.
    Discard,
}

/// What happened that the application should look at.
#[derive(Debug, Default, Clone, Copy)]
pub struct Ready {
    /// A session stream has data, finished, or a new one was accepted.
    pub readable: bool,
    /// A stream with queued writes got credit.
    pub writable: bool,
    /// Datagrams arrived.
    pub datagrams: bool,
}

impl Ready {
    /// Whether anything happened at all.
    pub fn any(&self) -> bool {
        self.readable || self.writable || self.datagrams
    }
}

/// Writes a stream could not take yet, and whether to finish it after them.
#[derive(Debug, Default)]
struct Pending {
    chunks: VecDeque<Bytes>,
    finish: bool,
}

/// The HTTP/3 and WebTransport state of one connection.
#[derive(Debug)]
pub(super) struct WebTransport {
    phase: Phase,
    /// The CONNECT stream and what was read of it.
    connect: Option<(StreamId, BytesMut)>,
    incoming: HashMap<StreamId, Incoming>,
    /// Session bidirectional streams not yet taken by the application.
    accepted: VecDeque<StreamId>,
    /// Bytes read past a header, returned first by [`WebTransport::read`].
    leftover: HashMap<StreamId, BytesMut>,
    /// Writes waiting for stream or connection credit, by stream.
    pending: HashMap<StreamId, Pending>,
    /// Their bytes, all streams together.
    pending_bytes: usize,
    request: Option<Request>,
    session: Option<SessionId>,
}

impl Default for WebTransport {
    fn default() -> Self {
        WebTransport {
            phase: Phase::Handshaking,
            connect: None,
            incoming: HashMap::new(),
            accepted: VecDeque::new(),
            leftover: HashMap::new(),
            pending: HashMap::new(),
            pending_bytes: 0,
            request: None,
            session: None,
        }
    }
}

fn h3_session(id: StreamId) -> SessionId {
    let varint =
        H3VarInt::try_from_u64(u64::from(VarInt::from(id))).expect("a stream id is a varint");
    SessionId::try_from_session_stream(wtransport_proto::ids::StreamId::new(varint))
        .expect("checked: a client-initiated bidirectional stream")
}

impl WebTransport {
    /// The QUIC handshake is done: opens the HTTP/3 control stream with our SETTINGS.
    pub(super) fn connected(&mut self, conn: &mut Connection) {
        if self.phase != Phase::Handshaking {
            return;
        }
        self.phase = Phase::AwaitingRequest;
        let Some(id) = conn.streams().open(Dir::Uni) else {
            return self.fail(conn, "no stream credit for the HTTP/3 control stream");
        };
        let settings = Settings::builder()
            .qpack_max_table_capacity(H3VarInt::from_u32(0))
            .qpack_blocked_streams(H3VarInt::from_u32(0))
            .enable_connect_protocol()
            .enable_webtransport()
            .enable_h3_datagrams()
            .webtransport_max_sessions(H3VarInt::from_u32(1))
            .build();
        let mut head = Vec::with_capacity(64);
        let _ = StreamHeader::new_control().write(&mut head);
        let _ = settings.generate_frame().write(&mut head);
        self.write(conn, id, Bytes::from(head));
    }

    /// The request read off the CONNECT stream, once, for the application to answer.
    pub(super) fn take_request(&mut self) -> Option<Request> {
        self.request.take()
    }

    /// Answers the request: 2xx opens the session; anything else refuses it and
    /// finishes the stream (the client then closes). A status outside 100–599
    /// is answered as 500.
    pub(super) fn answer(&mut self, conn: &mut Connection, status: u16) {
        let Some((id, _)) = &self.connect else { return };
        let id = *id;
        let code = StatusCode::try_from(status)
            .or_else(|_| StatusCode::try_from(STATUS_INTERNAL))
            .expect("500 is a status");
        let response = SessionResponse::with_status_code(code);
        let mut out = Vec::with_capacity(64);
        let _ = response.headers().generate_frame().write(&mut out);
        self.write(conn, id, Bytes::from(out));
        if code.is_successful() {
            self.phase = Phase::Open;
            self.session = Some(h3_session(id));
        } else {
            self.phase = Phase::Done;
            self.finish(conn, id);
        }
    }

    /// Takes a stream event of the connection; what the application should look at.
    pub(super) fn on_stream(&mut self, conn: &mut Connection, event: StreamEvent) -> Ready {
        let mut ready = Ready::default();
        match event {
            StreamEvent::Opened { dir } => {
                while let Some(id) = conn.streams().accept(dir) {
                    self.accept(conn, id, &mut ready);
                }
            }
            StreamEvent::Readable { id } => self.readable(conn, id, &mut ready),
            StreamEvent::Writable { id } => {
                self.flush(conn, id);
                ready.writable = true;
            }
            StreamEvent::Finished { id } | StreamEvent::Stopped { id, .. } => {
                self.forget_pending(id);
                ready.writable = true;
            }
            StreamEvent::Available { .. } => ready.writable = true,
        }
        ready
    }

    fn accept(&mut self, conn: &mut Connection, id: StreamId, ready: &mut Ready) {
        let uni = id.dir() == Dir::Uni;
        if !uni && self.connect.is_none() && self.phase == Phase::AwaitingRequest {
            self.connect = Some((id, BytesMut::new()));
        } else {
            let buf = BytesMut::new();
            self.incoming.insert(id, Incoming::Header { uni, buf });
        }
        self.readable(conn, id, ready);
    }

    /// Reads what a stream has: the request, a header, or data the session reads.
    fn readable(&mut self, conn: &mut Connection, id: StreamId, ready: &mut Ready) {
        if self.connect.as_ref().is_some_and(|(c, _)| *c == id) {
            return self.read_request(conn, id);
        }
        match self.incoming.get(&id) {
            // A session stream: the application reads it.
            None => ready.readable = true,
            Some(Incoming::Discard) => {
                let _ = read_stream(conn, id, None, usize::MAX);
            }
            Some(Incoming::Header { .. }) => self.read_header(conn, id, ready),
        }
    }

    fn read_request(&mut self, conn: &mut Connection, id: StreamId) {
        if self.phase != Phase::AwaitingRequest {
            // After the request: a client ends the session by finishing (or
            // resetting) the CONNECT stream.
            let ended = read_stream(conn, id, None, usize::MAX).unwrap_or(true);
            if ended && self.phase == Phase::Open {
                conn.close(
                    std::time::Instant::now(),
                    VarInt::from_u32(0),
                    Bytes::from_static(b"session ended"),
                );
                self.phase = Phase::Done;
            }
            return;
        }
        let Some((_, buf)) = &mut self.connect else {
            return;
        };
        let room = MAX_REQUEST.saturating_sub(buf.len());
        let fin = read_stream(conn, id, Some(buf), room).unwrap_or(true);
        let mut reader = BufferReader::new(buf);
        let frame = match Frame::read_from_buffer(&mut reader) {
            Ok(Some(frame)) => frame,
            Ok(None) if fin => return self.fail(conn, "the request stream ended inside a frame"),
            Ok(None) => return,
            // Malformed, or a payload over the parser's bound.
            Err(_) => return self.fail(conn, "malformed frame on the request stream"),
        };
        if !matches!(frame.kind(), FrameKind::Headers) {
            return self.fail(conn, "the request stream did not start with HEADERS");
        }
        let request = Headers::with_frame(&frame)
            .ok()
            .and_then(|h| SessionRequest::try_from(h).ok());
        self.phase = Phase::Requested;
        match request {
            Some(request) => {
                self.request = Some(Request {
                    path: request.path().to_owned(),
                    origin: request.origin().map(str::to_owned),
                })
            }
            None => self.answer(conn, 400),
        }
    }

    /// Reads a client stream's header. HTTP/3's own unidirectional streams are
    /// read and dropped; a bidirectional stream that signals this session is
    /// handed to the application; any other is refused.
    fn read_header(&mut self, conn: &mut Connection, id: StreamId, ready: &mut Ready) {
        let Some(Incoming::Header { uni, buf }) = self.incoming.get_mut(&id) else {
            return;
        };
        let uni = *uni;
        let room = MAX_HEADER.saturating_sub(buf.len());
        let ended = read_stream(conn, id, Some(buf), room).unwrap_or(true);
        let mut slice: &[u8] = buf;
        let kind = slice.get_varint().map(H3VarInt::into_inner);
        let session = slice.get_varint().map(H3VarInt::into_inner);
        let ours = self.session.map(SessionId::into_u64);
        match (kind, session) {
            (Some(kind), _) if uni && kind != STREAM_WEBTRANSPORT => {
                self.incoming.insert(id, Incoming::Discard);
                let _ = read_stream(conn, id, None, usize::MAX);
            }
            (Some(SIGNAL_WEBTRANSPORT), Some(session)) if !uni && Some(session) == ours => {
                let used = buf.len() - slice.len();
                let mut rest = std::mem::take(buf);
                rest.advance(used);
                self.incoming.remove(&id);
                if !rest.is_empty() {
                    self.leftover.insert(id, rest);
                }
                self.accepted.push_back(id);
                ready.readable = true;
            }
            // A client's unidirectional session stream (wtgate reads none), another
            // session's or another kind of bidirectional stream, or a header that
            // never completes.
            (Some(_), Some(_)) => self.refuse(conn, id),
            _ if ended || buf.len() >= MAX_HEADER => self.refuse(conn, id),
            _ => {}
        }
    }

    /// Refuses a client stream: stops reading it, and resets our half of a
    /// bidirectional one.
    fn refuse(&mut self, conn: &mut Connection, id: StreamId) {
        self.incoming.remove(&id);
        let code = VarInt::from_u32(H3_REQUEST_REJECTED);
        let _ = conn.recv_stream(id).stop(code);
        if id.dir() == Dir::Bi {
            let _ = conn.send_stream(id).reset(code);
        }
    }

    fn fail(&mut self, conn: &mut Connection, why: &'static str) {
        self.phase = Phase::Done;
        conn.close(
            std::time::Instant::now(),
            VarInt::from_u32(H3_PROTOCOL_ERROR),
            Bytes::from_static(why.as_bytes()),
        );
    }

    /// A session bidirectional stream the client opened, for the application.
    pub(super) fn accept_bi(&mut self) -> Option<StreamId> {
        self.accepted.pop_front()
    }

    /// Reads what `id` has into `buf` (at most `max` more bytes); whether the
    /// stream finished. Bytes read past its header come first.
    pub(super) fn read(
        &mut self,
        conn: &mut Connection,
        id: StreamId,
        buf: &mut BytesMut,
        max: usize,
    ) -> Result<bool, StreamGone> {
        if let Some(rest) = self.leftover.remove(&id) {
            buf.extend_from_slice(&rest);
        }
        read_stream(conn, id, Some(buf), max)
    }

    /// Opens a unidirectional session stream (its header written first); `None`
    /// without the client's stream credit.
    pub(super) fn open_uni(&mut self, conn: &mut Connection) -> Option<StreamId> {
        let session = self.session?;
        let id = conn.streams().open(Dir::Uni)?;
        let mut head = Vec::with_capacity(16);
        let _ = StreamHeader::new_webtransport(session).write(&mut head);
        self.write(conn, id, Bytes::from(head));
        Some(id)
    }

    /// Writes `data` on `id`, now as far as credit allows, the rest queued for
    /// when the stream becomes writable. False when the stream is gone.
    pub(super) fn write(&mut self, conn: &mut Connection, id: StreamId, data: Bytes) -> bool {
        if let Some(pending) = self.pending.get_mut(&id) {
            self.pending_bytes += data.len();
            pending.chunks.push_back(data);
            return true;
        }
        let mut chunks = [data];
        match conn.send_stream(id).write_chunks(&mut chunks) {
            Ok(_) | Err(quinn_proto::WriteError::Blocked) => {
                let [rest] = chunks;
                if !rest.is_empty() {
                    self.pending_bytes += rest.len();
                    self.pending.entry(id).or_default().chunks.push_back(rest);
                }
                true
            }
            Err(_) => false,
        }
    }

    /// Bytes written on `id` that QUIC has not taken yet.
    pub(super) fn queued(&self, id: StreamId) -> usize {
        self.pending
            .get(&id)
            .map_or(0, |p| p.chunks.iter().map(Bytes::len).sum())
    }

    /// Bytes written on every stream that QUIC has not taken yet.
    pub(super) fn backlog(&self) -> usize {
        self.pending_bytes
    }

    /// Finishes `id` once what is queued on it is written.
    pub(super) fn finish(&mut self, conn: &mut Connection, id: StreamId) {
        match self.pending.get_mut(&id) {
            Some(pending) => pending.finish = true,
            None => {
                let _ = conn.send_stream(id).finish();
            }
        }
    }

    /// Writes what was queued on `id` as far as credit allows.
    fn flush(&mut self, conn: &mut Connection, id: StreamId) {
        let Some(pending) = self.pending.get_mut(&id) else {
            return;
        };
        match conn
            .send_stream(id)
            .write_chunks(pending.chunks.make_contiguous())
        {
            Ok(written) => {
                self.pending_bytes -= written.bytes;
                pending.chunks.drain(..written.chunks);
                if pending.chunks.is_empty() {
                    if pending.finish {
                        let _ = conn.send_stream(id).finish();
                    }
                    self.pending.remove(&id);
                }
            }
            Err(quinn_proto::WriteError::Blocked) => {}
            Err(_) => self.forget_pending(id),
        }
    }

    /// Drops what was queued on a stream that is gone.
    fn forget_pending(&mut self, id: StreamId) {
        if let Some(pending) = self.pending.remove(&id) {
            self.pending_bytes -= pending.chunks.iter().map(Bytes::len).sum::<usize>();
        }
    }

    /// Sends `payload` as a session datagram; false when it does not fit (dropped).
    pub(super) fn send_datagram(&mut self, conn: &mut Connection, payload: &[u8]) -> bool {
        let Some(session) = self.session else {
            return false;
        };
        let mut out = Vec::with_capacity(payload.len() + 8);
        let quarter = H3VarInt::try_from_u64(session.into_u64() >> 2).expect("a stream id fits");
        let _ = out.put_varint(quarter);
        out.extend_from_slice(payload);
        conn.datagrams().send(Bytes::from(out), true).is_ok()
    }

    /// The next datagram of the session (others are dropped).
    pub(super) fn recv_datagram(&mut self, conn: &mut Connection) -> Option<Bytes> {
        let expected = self.session?.into_u64() >> 2;
        while let Some(mut datagram) = conn.datagrams().recv() {
            let mut slice: &[u8] = &datagram;
            let Some(quarter) = slice.get_varint() else {
                continue;
            };
            if quarter.into_inner() == expected {
                let used = datagram.len() - slice.len();
                datagram.advance(used);
                return Some(datagram);
            }
        }
        None
    }
}

/// The stream was reset or is gone.
#[derive(Debug, Clone, Copy)]
pub struct StreamGone;

/// Reads at most `max` bytes of `id` into `buf`, or reads and drops them with
/// `None` (HTTP/3 control and QPACK streams: with QPACK's dynamic table off
/// there is nothing on them to act on); whether the stream finished.
fn read_stream(
    conn: &mut Connection,
    id: StreamId,
    mut buf: Option<&mut BytesMut>,
    max: usize,
) -> Result<bool, StreamGone> {
    let mut stream = conn.recv_stream(id);
    let mut chunks = stream.read(true).map_err(|_| StreamGone)?;
    let mut left = max;
    let result = loop {
        if left == 0 {
            break Ok(false);
        }
        match chunks.next(left.min(READ_CHUNK)) {
            Ok(Some(chunk)) => {
                left -= chunk.bytes.len();
                if let Some(buf) = buf.as_deref_mut() {
                    buf.extend_from_slice(&chunk.bytes);
                }
            }
            Ok(None) => break Ok(true),
            Err(quinn_proto::ReadError::Blocked) => break Ok(false),
            Err(quinn_proto::ReadError::Reset(_)) => break Err(StreamGone),
        }
    };
    // Gives the client its credit back for what was read.
    let _ = chunks.finalize();
    result
}
