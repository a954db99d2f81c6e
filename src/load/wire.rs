//! The load tester's hot-path codec: the few frames it sends and receives per
//! message, encoded and parsed in place without allocating.
//!
//! The bytes are exactly the postcard encoding of [`crate::protocol`] (the tests
//! below check both directions against the real codec); everything else (Hello,
//! Join, replies) goes through the ordinary codec.

use thiserror::Error;

use crate::protocol::{put_varint, read_varint_u64, varint_len};

/// postcard tag of `ClientFrame::Publish`.
const TAG_PUBLISH: u64 = 3;
/// postcard tag of `ServerFrame::Message`.
pub(crate) const TAG_MESSAGE: u64 = 6;
/// postcard tags of `ServerFrame::PresenceJoin`, `PresenceLeave` and `PresenceBatch`.
const TAGS_PRESENCE: [u64; 3] = [7, 8, 17];
/// postcard tag of `Datagram::Send`.
const TAG_DATAGRAM_SEND: u64 = 0;
/// postcard tag of `Datagram::Recv`.
const TAG_DATAGRAM_RECV: u64 = 1;

/// Bytes that are not what the protocol allows.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WireError {
    /// A varint is longer than its type allows.
    #[error("invalid varint")]
    BadVarint,
    /// A frame announces more than the allowed size.
    #[error("frame of {0} bytes exceeds the limit")]
    TooLarge(u64),
    /// A frame body ends inside a field.
    #[error("frame body truncated")]
    Truncated,
}

/// A LEB128 varint at the front of `buf` ([`crate::protocol`]'s reader, with
/// this module's error): `Ok(None)` when more bytes are needed.
fn get_varint(buf: &[u8]) -> Result<Option<(u64, usize)>, WireError> {
    read_varint_u64(buf).map_err(|_| WireError::BadVarint)
}

/// A cursor over one frame body.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn varint(&mut self) -> Result<u64, WireError> {
        let (v, n) = get_varint(self.0)?.ok_or(WireError::Truncated)?;
        self.0 = &self.0[n..];
        Ok(v)
    }

    fn bytes(&mut self) -> Result<&'a [u8], WireError> {
        let len = self.varint()? as usize;
        if self.0.len() < len {
            return Err(WireError::Truncated);
        }
        let (head, rest) = self.0.split_at(len);
        self.0 = rest;
        Ok(head)
    }
}

/// Appends `ClientFrame::Publish { req, room, body }` as a length-prefixed frame.
pub fn encode_publish(out: &mut Vec<u8>, req: u32, room: &str, body: &[u8]) {
    let len = varint_len(TAG_PUBLISH)
        + varint_len(u64::from(req))
        + varint_len(room.len() as u64)
        + room.len()
        + varint_len(body.len() as u64)
        + body.len();
    put_varint(out, len as u64);
    encode_publish_body(out, req, room, body);
}

/// Appends the body of `ClientFrame::Publish { req, room, body }` without its
/// length prefix (a WebSocket message has a length of its own).
pub fn encode_publish_body(out: &mut Vec<u8>, req: u32, room: &str, body: &[u8]) {
    put_varint(out, TAG_PUBLISH);
    put_varint(out, u64::from(req));
    put_varint(out, room.len() as u64);
    out.extend_from_slice(room.as_bytes());
    put_varint(out, body.len() as u64);
    out.extend_from_slice(body);
}

/// Appends the payload of `Datagram::Send { handle, body }` (a datagram has no
/// length prefix).
pub fn encode_datagram_send(out: &mut Vec<u8>, handle: u32, body: &[u8]) {
    put_varint(out, TAG_DATAGRAM_SEND);
    put_varint(out, u64::from(handle));
    put_varint(out, body.len() as u64);
    out.extend_from_slice(body);
}

/// The first whole length-prefixed frame in `buf`: `(body, bytes consumed)`, or
/// `Ok(None)` when more bytes are needed.
pub fn split_frame(buf: &[u8], max: usize) -> Result<Option<(&[u8], usize)>, WireError> {
    let Some((len, prefix)) = get_varint(buf)? else {
        return Ok(None);
    };
    if len > max as u64 {
        return Err(WireError::TooLarge(len));
    }
    let total = prefix + len as usize;
    if buf.len() < total {
        return Ok(None);
    }
    Ok(Some((&buf[prefix..total], total)))
}

/// A room message, borrowed from the receive buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageRef<'a> {
    /// Per-room sequence number.
    pub seq: u64,
    /// Publisher's user id.
    pub from: &'a [u8],
    /// Payload.
    pub body: &'a [u8],
    /// Server time at publish (ms since the epoch).
    pub ts: u64,
}

/// Parses a `ServerFrame` body; `Ok(None)` when it is another frame type
/// (presence events share the room stream).
pub fn parse_message(frame: &[u8]) -> Result<Option<MessageRef<'_>>, WireError> {
    let mut f = Fields(frame);
    if f.varint()? != TAG_MESSAGE {
        return Ok(None);
    }
    let seq = f.varint()?;
    let from = f.bytes()?;
    let body = f.bytes()?;
    let ts = f.varint()?;
    Ok(Some(MessageRef {
        seq,
        from,
        body,
        ts,
    }))
}

/// Whether a `ServerFrame` body is a room presence event (`PresenceJoin`,
/// `PresenceLeave` or `PresenceBatch`).
pub fn is_presence(frame: &[u8]) -> bool {
    matches!(get_varint(frame), Ok(Some((tag, _))) if TAGS_PRESENCE.contains(&tag))
}

/// Parses a `Datagram::Recv` payload: `(handle, body)`; `Ok(None)` for other types.
pub fn parse_datagram_recv(payload: &[u8]) -> Result<Option<(u32, &[u8])>, WireError> {
    let mut f = Fields(payload);
    if f.varint()? != TAG_DATAGRAM_RECV {
        return Ok(None);
    }
    let handle = u32::try_from(f.varint()?).map_err(|_| WireError::BadVarint)?;
    let _from = f.bytes()?;
    let body = f.bytes()?;
    Ok(Some((handle, body)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{
        decode_datagram, decode_frame, encode_datagram, frame_bytes, ClientFrame, Datagram,
        ServerFrame,
    };
    use bytes::{Bytes, BytesMut};

    #[test]
    fn publish_matches_the_codec() {
        for (req, room, body) in [
            (1u32, "r", vec![0u8; 64]),
            (300, "load-ab12-7", vec![7u8; 200]),
            (u32::MAX, "", vec![]),
        ] {
            let mut ours = Vec::new();
            encode_publish(&mut ours, req, room, &body);
            let theirs = frame_bytes(&ClientFrame::Publish {
                req,
                room: room.into(),
                body: Bytes::from(body.clone()),
            });
            assert_eq!(ours, theirs.as_ref());
            let mut buf = BytesMut::from(&ours[..]);
            let back: ClientFrame = decode_frame(&mut buf, 1 << 20).unwrap().unwrap();
            assert!(matches!(back, ClientFrame::Publish { req: r, .. } if r == req));
        }
    }

    #[test]
    fn a_publish_message_matches_the_lane_codec() {
        let frame = ClientFrame::Publish {
            req: 300,
            room: "lobby".into(),
            body: Bytes::from_static(b"hi"),
        };
        let mut ours = vec![crate::protocol::lane::CONTROL];
        encode_publish_body(&mut ours, 300, "lobby", b"hi");
        assert_eq!(
            ours,
            crate::protocol::lane::control_message(&frame).as_ref()
        );
    }

    #[test]
    fn datagram_send_matches_the_codec() {
        let mut ours = Vec::new();
        encode_datagram_send(&mut ours, 129, &[1, 2, 3]);
        let theirs = encode_datagram(&Datagram::Send {
            handle: 129,
            body: Bytes::from_static(&[1, 2, 3]),
        });
        assert_eq!(ours, theirs.as_ref());
        assert_eq!(
            decode_datagram(&ours).unwrap(),
            Datagram::Send {
                handle: 129,
                body: Bytes::from_static(&[1, 2, 3]),
            }
        );
    }

    #[test]
    fn messages_parse_in_place() {
        let frame = ServerFrame::Message {
            seq: 1 << 40,
            from: "load-17".into(),
            body: Bytes::from(vec![9u8; 64]),
            ts: 1_700_000_000_000,
        };
        let mut stream = frame_bytes(&frame).to_vec();
        stream.extend_from_slice(&frame_bytes(&ServerFrame::PresenceJoin {
            user: "x".into(),
        }));
        let (body, used) = split_frame(&stream, 1 << 16).unwrap().unwrap();
        let m = parse_message(body).unwrap().unwrap();
        assert_eq!(m.seq, 1 << 40);
        assert_eq!(m.from, b"load-17");
        assert_eq!(m.body, &[9u8; 64][..]);
        assert_eq!(m.ts, 1_700_000_000_000);
        let (body, rest) = split_frame(&stream[used..], 1 << 16).unwrap().unwrap();
        assert_eq!(used + rest, stream.len());
        assert_eq!(parse_message(body).unwrap(), None);
        assert!(is_presence(body));
    }

    #[test]
    fn presence_frames_are_told_from_the_rest() {
        let body = |f: &ServerFrame| {
            let bytes = frame_bytes(f);
            let (body, _) = split_frame(&bytes, 1 << 16).unwrap().unwrap();
            body.to_vec()
        };
        let user = || "u".to_owned();
        assert!(is_presence(&body(&ServerFrame::PresenceJoin {
            user: user()
        })));
        assert!(is_presence(&body(&ServerFrame::PresenceBatch {
            joins: vec!["a".into()],
            leaves: vec![],
        })));
        assert!(is_presence(&body(&ServerFrame::PresenceLeave {
            user: user()
        })));
        assert!(!is_presence(&body(&ServerFrame::OnlineJoin {
            user: user()
        })));
        assert!(!is_presence(&body(&ServerFrame::Message {
            seq: 1,
            from: user(),
            body: Bytes::new(),
            ts: 0,
        })));
        assert!(!is_presence(&[]));
    }

    #[test]
    fn short_input_waits_and_bad_input_fails() {
        let whole = frame_bytes(&ServerFrame::Ack { req: 5, seq: 9 });
        for cut in 0..whole.len() {
            assert_eq!(split_frame(&whole[..cut], 1024).unwrap(), None, "cut {cut}");
        }
        assert_eq!(
            split_frame(&[0xff, 0xff, 0x03], 1024),
            Err(WireError::TooLarge(0xffff))
        );
        assert_eq!(split_frame(&[0x80; 10], 1024), Err(WireError::BadVarint));
        // A Message body cut inside a field.
        assert_eq!(parse_message(&[6, 1, 5, b'a']), Err(WireError::Truncated));
    }

    #[test]
    fn datagram_recv_parses_in_place() {
        let payload = encode_datagram(&Datagram::Recv {
            handle: 3,
            from: "load-0".into(),
            body: Bytes::from_static(b"hello"),
        });
        assert_eq!(
            parse_datagram_recv(&payload).unwrap(),
            Some((3, &b"hello"[..]))
        );
        let send = encode_datagram(&Datagram::Send {
            handle: 3,
            body: Bytes::new(),
        });
        assert_eq!(parse_datagram_recv(&send).unwrap(), None);
    }
}
