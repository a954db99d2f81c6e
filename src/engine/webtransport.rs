//! HTTP/3 and WebTransport over one `quinn_proto::Connection`, sans-IO: the
//! server's SETTINGS, the client's CONNECT request and its answer, the stream
//! and datagram headers of the session (draft-ietf-webtrans-http3), with
//! `wtransport-proto` for the framing. The event loop feeds it the connection's
//! stream events; the application reads and writes through [`Streams`].

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
/// The largest CONNECT request accepted: headers are a few hundred bytes.
const MAX_REQUEST: usize = 8 * 1024;
/// Bytes read per stream per pass.
const READ_CHUNK: usize = 64 * 1024;
/// H3_GENERAL_PROTOCOL_ERROR: how a connection that breaks HTTP/3 is closed.
const H3_PROTOCOL_ERROR: u32 = 0x101;
/// H3_REQUEST_REJECTED: a stream the server does not take.
const H3_REQUEST_REJECTED: u32 = 0x10b;

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
    /// A unidirectional stream before its type.
    Uni(BytesMut),
    /// A bidirectional stream before its WEBTRANSPORT_STREAM signal.
    Bi(BytesMut),
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

/// The HTTP/3 and WebTransport state of one connection.
#[derive(Debug)]
pub(super) struct WebTransport {
    phase: Phase,
    /// The CONNECT stream and what was read of it.
    connect: Option<(StreamId, BytesMut)>,
    incoming: HashMap<StreamId, Incoming>,
    /// Session bidirectional streams not yet taken by the application, with the
    /// bytes read past their header.
    accepted: VecDeque<StreamId>,
    /// Bytes read past a header, returned first by [`Streams::read`].
    leftover: HashMap<StreamId, BytesMut>,
    /// Writes waiting for stream or connection credit, by stream.
    queued: HashMap<StreamId, VecDeque<Bytes>>,
    /// Streams to finish once their queue is written.
    finishing: Vec<StreamId>,
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
            queued: HashMap::new(),
            finishing: Vec::new(),
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

    /// Answers the request: 200 opens the session; anything else refuses it and
    /// finishes the stream (the client then closes).
    pub(super) fn answer(&mut self, conn: &mut Connection, status: u16) {
        let Some((id, _)) = &self.connect else { return };
        let id = *id;
        let code = StatusCode::try_from(status).unwrap_or(StatusCode::OK);
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
                self.queued.remove(&id);
                ready.writable = true;
            }
            StreamEvent::Available { .. } => ready.writable = true,
        }
        ready
    }

    fn accept(&mut self, conn: &mut Connection, id: StreamId, ready: &mut Ready) {
        if id.dir() == Dir::Uni {
            self.incoming.insert(id, Incoming::Uni(BytesMut::new()));
        } else if self.connect.is_none() && self.phase == Phase::AwaitingRequest {
            self.connect = Some((id, BytesMut::new()));
        } else {
            self.incoming.insert(id, Incoming::Bi(BytesMut::new()));
        }
        self.readable(conn, id, ready);
    }

    /// Reads what a stream has: the request, a header, or data the session reads.
    fn readable(&mut self, conn: &mut Connection, id: StreamId, ready: &mut Ready) {
        if self.connect.as_ref().is_some_and(|(c, _)| *c == id) {
            return self.read_request(conn, id);
        }
        match self.incoming.get(&id) {
            None => {
                // A session stream: the application reads it.
                ready.readable = true;
            }
            Some(Incoming::Discard) => {
                drain(conn, id);
            }
            Some(_) => self.read_header(conn, id, ready),
        }
    }

    fn read_request(&mut self, conn: &mut Connection, id: StreamId) {
        if self.phase != Phase::AwaitingRequest {
            // After the request: a client may finish the CONNECT stream to end the session.
            let (_, fin) = read_into(conn, id, &mut BytesMut::new(), 0);
            if fin && self.phase == Phase::Open {
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
        let (_, fin) = read_into(conn, id, buf, MAX_REQUEST + 1);
        let mut reader = BufferReader::new(buf);
        let frame = match Frame::read_from_buffer(&mut reader) {
            Ok(Some(frame)) => frame,
            Ok(None) if buf.len() > MAX_REQUEST || fin => {
                return self.fail(conn, "request too large or truncated")
            }
            Ok(None) => return,
            Err(_) => return self.fail(conn, "malformed frame on the request stream"),
        };
        if !matches!(frame.kind(), FrameKind::Headers) {
            return self.fail(conn, "the request stream did not start with HEADERS");
        }
        let request = Headers::with_frame(&frame)
            .ok()
            .and_then(|h| SessionRequest::try_from(h).ok());
        match request {
            Some(request) => {
                self.request = Some(Request {
                    path: request.path().to_owned(),
                    origin: request.origin().map(str::to_owned),
                });
                self.phase = Phase::Requested;
            }
            None => {
                self.phase = Phase::Requested;
                self.answer(conn, 400);
            }
        }
    }

    /// Reads a client stream's header: the HTTP/3 type of a unidirectional one,
    /// the WEBTRANSPORT_STREAM signal of a bidirectional one.
    fn read_header(&mut self, conn: &mut Connection, id: StreamId, ready: &mut Ready) {
        let Some(entry) = self.incoming.get_mut(&id) else {
            return;
        };
        let (Incoming::Uni(buf) | Incoming::Bi(buf)) = entry else {
            return;
        };
        let (_, fin) = read_into(conn, id, buf, 64);
        let uni = matches!(entry, Incoming::Uni(_));
        let (Incoming::Uni(buf) | Incoming::Bi(buf)) = entry else {
            return;
        };
        let mut slice: &[u8] = buf;
        let kind = slice.get_varint();
        let session = slice.get_varint();
        match (uni, kind, session) {
            // Only session streams carry a session id; the rest is HTTP/3's own.
            (true, Some(kind), _) if kind.into_inner() != STREAM_WEBTRANSPORT => {
                self.incoming.insert(id, Incoming::Discard);
                drain(conn, id);
            }
            (false, Some(kind), Some(session)) if kind.into_inner() == SIGNAL_WEBTRANSPORT => {
                let ours = self.session.map(|s| s.into_u64());
                if ours != Some(session.into_inner()) {
                    self.incoming.remove(&id);
                    let _ = conn
                        .recv_stream(id)
                        .stop(VarInt::from_u32(H3_REQUEST_REJECTED));
                    let _ = conn
                        .send_stream(id)
                        .reset(VarInt::from_u32(H3_REQUEST_REJECTED));
                    return;
                }
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
            (true, Some(_), Some(_)) => {
                // A client's unidirectional session stream: wtgate reads none.
                self.incoming.remove(&id);
                let _ = conn
                    .recv_stream(id)
                    .stop(VarInt::from_u32(H3_REQUEST_REJECTED));
            }
            (false, Some(_), Some(_)) => {
                self.incoming.remove(&id);
                let _ = conn
                    .recv_stream(id)
                    .stop(VarInt::from_u32(H3_REQUEST_REJECTED));
                let _ = conn
                    .send_stream(id)
                    .reset(VarInt::from_u32(H3_REQUEST_REJECTED));
            }
            _ if fin || buf.len() >= 16 => {
                self.incoming.remove(&id);
            }
            _ => {}
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
        let mut stream = conn.recv_stream(id);
        let Ok(mut chunks) = stream.read(true) else {
            return Err(StreamGone);
        };
        let mut left = max;
        let mut fin = false;
        while left > 0 {
            match chunks.next(left.min(READ_CHUNK)) {
                Ok(Some(chunk)) => {
                    left -= chunk.bytes.len();
                    buf.extend_from_slice(&chunk.bytes);
                }
                Ok(None) => {
                    fin = true;
                    break;
                }
                Err(quinn_proto::ReadError::Blocked) => break,
                Err(quinn_proto::ReadError::Reset(_)) => {
                    let _ = chunks.finalize();
                    return Err(StreamGone);
                }
            }
        }
        let _ = chunks.finalize();
        Ok(fin)
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
        if let Some(queue) = self.queued.get_mut(&id) {
            queue.push_back(data);
            return true;
        }
        let mut chunks = [data];
        match conn.send_stream(id).write_chunks(&mut chunks) {
            Ok(_) => {
                let [rest] = chunks;
                if !rest.is_empty() {
                    self.queued.entry(id).or_default().push_back(rest);
                }
                true
            }
            Err(quinn_proto::WriteError::Blocked) => {
                let [rest] = chunks;
                self.queued.entry(id).or_default().push_back(rest);
                true
            }
            Err(_) => false,
        }
    }

    /// Bytes queued on `id` that QUIC has not taken yet.
    pub(super) fn queued(&self, id: StreamId) -> usize {
        self.queued
            .get(&id)
            .map_or(0, |q| q.iter().map(Bytes::len).sum())
    }

    /// Finishes `id` once what is queued on it is written.
    pub(super) fn finish(&mut self, conn: &mut Connection, id: StreamId) {
        if self.queued.contains_key(&id) {
            self.finishing.push(id);
        } else {
            let _ = conn.send_stream(id).finish();
        }
    }

    /// Writes what was queued on `id` as far as credit allows.
    fn flush(&mut self, conn: &mut Connection, id: StreamId) {
        let Some(queue) = self.queued.get_mut(&id) else {
            return;
        };
        let chunks = queue.make_contiguous();
        match conn.send_stream(id).write_chunks(chunks) {
            Ok(written) => {
                queue.drain(..written.chunks);
                if queue.is_empty() {
                    self.queued.remove(&id);
                    if let Some(at) = self.finishing.iter().position(|f| *f == id) {
                        self.finishing.swap_remove(at);
                        let _ = conn.send_stream(id).finish();
                    }
                }
            }
            Err(quinn_proto::WriteError::Blocked) => {}
            Err(_) => {
                self.queued.remove(&id);
            }
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

/// Reads at most `max` bytes of `id` into `buf` (0: read and drop everything);
/// (bytes read, finished).
fn read_into(conn: &mut Connection, id: StreamId, buf: &mut BytesMut, max: usize) -> (usize, bool) {
    let mut stream = conn.recv_stream(id);
    let Ok(mut chunks) = stream.read(true) else {
        return (0, true);
    };
    let mut read = 0;
    let mut fin = false;
    loop {
        let want = if max == 0 {
            READ_CHUNK
        } else {
            max.saturating_sub(buf.len())
        };
        if want == 0 {
            break;
        }
        match chunks.next(want) {
            Ok(Some(chunk)) => {
                read += chunk.bytes.len();
                if max != 0 {
                    buf.extend_from_slice(&chunk.bytes);
                }
            }
            Ok(None) => {
                fin = true;
                break;
            }
            Err(quinn_proto::ReadError::Blocked) => break,
            Err(quinn_proto::ReadError::Reset(_)) => {
                fin = true;
                break;
            }
        }
    }
    let _ = chunks.finalize();
    (read, fin)
}

/// Reads and drops what a stream has (HTTP/3 control and QPACK streams: with
/// QPACK's dynamic table off there is nothing to act on).
fn drain(conn: &mut Connection, id: StreamId) {
    read_into(conn, id, &mut BytesMut::new(), 0);
}
