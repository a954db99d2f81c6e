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
    put_varint(dst, body.len() as u64);
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

/// A LEB128 varint longer than its type allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Overlong;

/// The LEB128 varint of at most `max_len` bytes at the front of `buf`: `(value,
/// bytes used)`, not consumed; `Ok(None)` when `buf` ends inside it.
///
/// The one varint reader: frame length prefixes and lane handles read a `u32`
/// ([`read_varint`]), the load tester reads postcard's `u64` fields in place
/// ([`read_varint_u64`]).
#[inline]
fn read_leb128(buf: &[u8], max_len: usize) -> Result<Option<(u64, usize)>, Overlong> {
    let mut value: u64 = 0;
    for (i, byte) in buf.iter().take(max_len).enumerate() {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(Some((value, i + 1)));
        }
    }
    if buf.len() >= max_len {
        Err(Overlong)
    } else {
        Ok(None)
    }
}

/// LEB128 `u32` at the front of `buf`: `(value, bytes used)`, not consumed.
pub(crate) fn read_varint(buf: &[u8]) -> Result<Option<(u32, usize)>, CodecError> {
    match read_leb128(buf, 5) {
        Ok(Some((value, used))) => u32::try_from(value)
            .map(|v| Some((v, used)))
            .map_err(|_| CodecError::BadLength),
        Ok(None) => Ok(None),
        Err(Overlong) => Err(CodecError::BadLength),
    }
}

/// LEB128 `u64` (postcard's integers) at the front of `buf`: `(value, bytes
/// used)`, not consumed.
#[inline]
pub(crate) fn read_varint_u64(buf: &[u8]) -> Result<Option<(u64, usize)>, Overlong> {
    read_leb128(buf, 10)
}

/// Appends `v` as a LEB128 varint, to a `BytesMut` or a `Vec<u8>` alike.
#[inline]
pub(crate) fn put_varint(dst: &mut impl BufMut, mut v: u64) {
    while v >= 0x80 {
        dst.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    dst.put_u8(v as u8);
}

/// How many bytes [`put_varint`] writes for `v`.
#[inline]
pub(crate) fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_and_know_their_length() {
        for v in [
            0,
            1,
            127,
            128,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out.len(), varint_len(v), "{v}");
            assert_eq!(read_varint_u64(&out), Ok(Some((v, out.len()))), "{v}");
            for cut in 0..out.len() {
                assert_eq!(read_varint_u64(&out[..cut]), Ok(None), "{v} cut {cut}");
            }
            let as_u32 = read_varint(&out);
            match u32::try_from(v) {
                Ok(small) => assert_eq!(as_u32, Ok(Some((small, out.len())))),
                Err(_) => assert_eq!(as_u32, Err(CodecError::BadLength)),
            }
        }
        assert_eq!(read_varint(&[0x80; 5]), Err(CodecError::BadLength));
        assert_eq!(read_varint_u64(&[0x80; 10]), Err(Overlong));
    }
}
