//! The WebSocket mapping (PROTOCOL.md §16): one WebSocket message per frame, behind
//! a lane byte that says which WebTransport channel it stands for. Sans-IO: bytes
//! in, bytes out.
//!
//! The hub queues frames length-prefixed, as WebTransport streams carry them; the
//! encoders here take such a frame and drop the prefix, since a WebSocket message
//! has a length of its own.

use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;

use super::codec::{decode_body, put_varint, read_varint};
use super::{CodecError, Frame};

/// The control stream: one `ClientFrame` or `ServerFrame` body.
pub const CONTROL: u8 = 0;
/// A room stream: a handle, then one `ServerFrame` body.
pub const ROOM: u8 = 1;
/// The end (FIN) of a room stream: a handle.
pub const ROOM_END: u8 = 2;
/// Datagrams: one `Datagram` body.
pub const VOLATILE: u8 = 3;

/// Room for the lane byte and a handle on top of `max_frame`: the largest client
/// message the server reads is `max_frame + LANE_OVERHEAD` bytes.
pub const LANE_OVERHEAD: usize = 16;

/// A WebSocket message, split into its lane and what follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane<'a> {
    /// A frame body of the control stream.
    Control(&'a [u8]),
    /// A frame body of room `handle`'s stream.
    Room {
        /// The room's handle.
        handle: u32,
        /// The `ServerFrame` body.
        body: &'a [u8],
    },
    /// Room `handle`'s stream ended.
    RoomEnd {
        /// The room's handle.
        handle: u32,
    },
    /// A datagram body.
    Volatile(&'a [u8]),
    /// A lane this build does not know: ignored (a newer peer's).
    Unknown(u8),
}

/// Splits a message into its lane. Only the lane byte and the handle are checked;
/// the frame itself is decoded by the caller ([`decode_body`] for control frames).
pub fn parse(message: &[u8]) -> Result<Lane<'_>, CodecError> {
    let (&lane, rest) = message
        .split_first()
        .ok_or_else(|| CodecError::Malformed("empty WebSocket message".into()))?;
    Ok(match lane {
        CONTROL => Lane::Control(rest),
        ROOM => {
            let (handle, used) = handle(rest)?;
            Lane::Room {
                handle,
                body: &rest[used..],
            }
        }
        ROOM_END => match handle(rest)? {
            (handle, used) if used == rest.len() => Lane::RoomEnd { handle },
            _ => return Err(CodecError::Malformed("bytes after a room end".into())),
        },
        VOLATILE => Lane::Volatile(rest),
        other => Lane::Unknown(other),
    })
}

fn handle(rest: &[u8]) -> Result<(u32, usize), CodecError> {
    read_varint(rest)?.ok_or_else(|| CodecError::Malformed("truncated room handle".into()))
}

/// Decodes a control frame body (lane 0): exactly one frame, nothing left over.
pub fn decode_control<T: Frame>(body: &[u8]) -> Result<T, CodecError> {
    decode_body(body)
}

/// A lane-0 message from a frame value (clients).
pub fn control_message<T: Serialize>(frame: &T) -> Bytes {
    let mut out = vec![CONTROL];
    postcard::to_io(frame, &mut out).expect("frames always serialize");
    Bytes::from(out)
}

/// A lane-0 message from a length-prefixed frame.
pub fn control(prefixed: &[u8]) -> Bytes {
    with_header(&[CONTROL], None, unprefixed(prefixed))
}

/// A lane-1 message of room `handle` from a length-prefixed frame.
pub fn room(handle: u32, prefixed: &[u8]) -> Bytes {
    with_header(&[ROOM], Some(handle), unprefixed(prefixed))
}

/// A lane-2 message: room `handle`'s stream ended.
pub fn room_end(handle: u32) -> Bytes {
    with_header(&[ROOM_END], Some(handle), &[])
}

/// A lane-3 message from a datagram body.
pub fn volatile(datagram: &[u8]) -> Bytes {
    with_header(&[VOLATILE], None, datagram)
}

/// The frames of a buffer of length-prefixed frames that this process encoded (a
/// room stream's head: its `RoomStream` and the replayed messages), each still
/// prefixed.
pub fn prefixed_frames(mut buf: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        let (len, used) = read_varint(buf).ok().flatten()?;
        let end = (used + len as usize).min(buf.len());
        let (frame, rest) = buf.split_at(end);
        buf = rest;
        Some(frame)
    })
}

/// The body of a length-prefixed frame this process encoded.
fn unprefixed(prefixed: &[u8]) -> &[u8] {
    match read_varint(prefixed) {
        Ok(Some((_, used))) => &prefixed[used..],
        _ => prefixed,
    }
}

fn with_header(lane: &[u8], handle: Option<u32>, body: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(1 + 5 + body.len());
    out.put_slice(lane);
    if let Some(handle) = handle {
        put_varint(&mut out, u64::from(handle));
    }
    out.put_slice(body);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{frame_bytes, ClientFrame, ServerFrame};

    #[test]
    fn control_frames_lose_their_prefix_and_gain_a_lane() {
        let frame = ServerFrame::Ack { req: 7, seq: 300 };
        let message = control(&frame_bytes(&frame));
        assert_eq!(message[0], CONTROL);
        let Lane::Control(body) = parse(&message).unwrap() else {
            panic!("not a control message");
        };
        assert_eq!(decode_control::<ServerFrame>(body).unwrap(), frame);
        assert_eq!(control_message(&frame), message);
    }

    #[test]
    fn room_messages_carry_the_handle() {
        let frame = ServerFrame::PresenceJoin { user: "ana".into() };
        let message = room(300, &frame_bytes(&frame));
        let Lane::Room { handle, body } = parse(&message).unwrap() else {
            panic!("not a room message");
        };
        assert_eq!(handle, 300);
        assert_eq!(decode_control::<ServerFrame>(body).unwrap(), frame);
        assert_eq!(
            parse(&room_end(300)).unwrap(),
            Lane::RoomEnd { handle: 300 }
        );
    }

    #[test]
    fn a_head_splits_into_its_frames() {
        let a = frame_bytes(&ServerFrame::PresenceJoin { user: "a".into() });
        let b = frame_bytes(&ServerFrame::PresenceLeave {
            user: "b".repeat(200),
        });
        let head = [a.as_ref(), b.as_ref()].concat();
        let frames: Vec<&[u8]> = prefixed_frames(&head).collect();
        assert_eq!(frames, vec![a.as_ref(), b.as_ref()]);
    }

    #[test]
    fn bad_messages_are_errors_and_unknown_lanes_are_not() {
        assert!(parse(&[]).is_err());
        assert!(parse(&[ROOM]).is_err());
        assert!(parse(&[ROOM, 0x80]).is_err());
        assert!(parse(&[ROOM_END, 1, 0]).is_err());
        assert_eq!(parse(&[9, 1, 2]).unwrap(), Lane::Unknown(9));
        let Lane::Control(body) = parse(&[CONTROL, 0x01, 0x00]).unwrap() else {
            panic!("not a control message");
        };
        // `Join` whose fields are missing.
        assert!(decode_control::<ClientFrame>(body).is_err());
    }
}
