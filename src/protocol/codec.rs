//! Frame codec: LEB128 `u32` length prefix + postcard body, without I/O.
//!
//! Decoding is two-step (is a whole frame buffered? then parse) so a reader can
//! feed it arbitrary chunks; the length is checked against the limit before any
//! body byte is awaited or allocated.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::{de::DeserializeOwned, Serialize};
use thiserror::Error;

use super::{ClientFrame, Datagram, ServerFrame};

/// Why bytes could not be turned into a frame.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum CodecError {
    /// The length prefix announces more than the allowed frame size.
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Announced length.
        len: u64,
        /// Configured limit.
        max: usize,
    },
    /// The length prefix is not a valid LEB128 `u32`.
    #[error("invalid length prefix")]
    BadLength,
    /// The frame's enum tag is beyond the variants this build knows; the frame was skipped.
    #[error("unknown frame type {0}")]
    UnknownVariant(u32),
    /// The body is not a valid postcard encoding of the frame type.
    #[error("malformed frame: {0}")]
    Malformed(String),
}

/// A frame type with a known number of variants, so unknown tags can be told apart
/// from garbage (a newer peer may send a command this build does not know).
pub trait Frame: Serialize + DeserializeOwned {
    /// Number of variants; tags `0..VARIANTS` are known.
    const VARIANTS: u32;
}

impl Frame for ClientFrame {
    const VARIANTS: u32 = 10;
}
impl Frame for ServerFrame {
    const VARIANTS: u32 = 18;
}
impl Frame for Datagram {
    const VARIANTS: u32 = 2;
}

/// Appends `frame` to `dst` as length prefix + postcard body.
pub fn encode_frame<T: Serialize>(frame: &T, dst: &mut BytesMut) {
    let body = postcard::to_stdvec(frame).expect("frames always serialize");
    put_varint(dst, body.len() as u32);
    dst.put_slice(&body);
}

/// Encodes one length-prefixed frame into its own buffer, ready to share between
/// many writers (encode once, clone the `Bytes` per recipient).
pub fn frame_bytes<T: Serialize>(frame: &T) -> Bytes {
    let mut buf = BytesMut::new();
    encode_frame(frame, &mut buf);
    buf.freeze()
}

/// Takes one frame off the front of `buf`.
///
/// Returns `Ok(None)` when more bytes are needed (nothing is consumed then).
/// A complete frame is consumed even when it fails to decode, so the caller may
/// carry on after [`CodecError::UnknownVariant`].
pub fn decode_frame<T: Frame>(buf: &mut BytesMut, max: usize) -> Result<Option<T>, CodecError> {
    let Some((len, prefix)) = read_varint(buf)? else {
        return Ok(None);
    };
    if len as usize > max {
        return Err(CodecError::TooLarge {
            len: len as u64,
            max,
        });
    }
    let total = prefix + len as usize;
    if buf.len() < total {
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    buf.advance(prefix);
    let body = buf.split_to(len as usize);
    decode_body(&body).map(Some)
}

/// Encodes a datagram payload (no length prefix: a datagram is one frame).
pub fn encode_datagram(d: &Datagram) -> Bytes {
    Bytes::from(postcard::to_stdvec(d).expect("datagrams always serialize"))
}

/// Decodes a datagram payload.
pub fn decode_datagram(bytes: &[u8]) -> Result<Datagram, CodecError> {
    decode_body(bytes)
}

/// Decodes one frame body without its length prefix: exactly one frame, nothing
/// left over.
pub(crate) fn decode_body<T: Frame>(body: &[u8]) -> Result<T, CodecError> {
    match postcard::take_from_bytes::<T>(body) {
        Ok((frame, [])) => Ok(frame),
        Ok((_, rest)) => Err(CodecError::Malformed(format!(
            "{} trailing bytes after the frame",
            rest.len()
        ))),
        Err(e) => match leading_tag(body) {
            Some(tag) if tag >= T::VARIANTS => Err(CodecError::UnknownVariant(tag)),
            _ => Err(CodecError::Malformed(e.to_string())),
        },
    }
}

/// The enum tag that starts a postcard body, if it is a valid varint.
fn leading_tag(body: &[u8]) -> Option<u32> {
    read_varint(body).ok().flatten().map(|(v, _)| v)
}

/// LEB128 `u32` at the front of `buf`: `(value, bytes used)`, not consumed.
pub(crate) fn read_varint(buf: &[u8]) -> Result<Option<(u32, usize)>, CodecError> {
    let mut value: u64 = 0;
    for (i, byte) in buf.iter().take(5).enumerate() {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            if value > u64::from(u32::MAX) {
                return Err(CodecError::BadLength);
            }
            return Ok(Some((value as u32, i + 1)));
        }
    }
    if buf.len() >= 5 {
        Err(CodecError::BadLength)
    } else {
        Ok(None)
    }
}

pub(crate) fn put_varint(dst: &mut BytesMut, mut v: u32) {
    while v >= 0x80 {
        dst.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    dst.put_u8(v as u8);
}
