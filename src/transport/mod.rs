//! Frame I/O over any byte stream: the thin async shell around the codec.
//!
//! Generic over `AsyncRead`, so a WebSocket fallback can reuse it unchanged.

use bytes::BytesMut;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::protocol::{decode_frame, CodecError, Frame};

/// Why no frame could be read.
#[derive(Debug, Error)]
pub enum ReadError {
    /// The bytes are not a valid frame.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The stream ended in the middle of a frame.
    #[error("stream ended inside a frame")]
    Truncated,
    /// The stream failed.
    #[error("stream error: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads length-prefixed frames from a stream, buffering partial ones.
#[derive(Debug)]
pub struct FrameReader<R> {
    stream: R,
    buf: BytesMut,
    max_frame: usize,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// Wraps `stream`, refusing frames whose body exceeds `max_frame` bytes.
    pub fn new(stream: R, max_frame: usize) -> Self {
        FrameReader {
            stream,
            // Control traffic is small frames; the buffer grows for large ones.
            buf: BytesMut::with_capacity(512),
            max_frame,
        }
    }

    /// The next frame, or `None` when the stream finished cleanly between frames.
    ///
    /// Cancel-safe: bytes already read stay buffered for the next call.
    pub async fn next<T: Frame>(&mut self) -> Result<Option<T>, ReadError> {
        loop {
            if let Some(frame) = decode_frame(&mut self.buf, self.max_frame)? {
                return Ok(Some(frame));
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(ReadError::Truncated)
                };
            }
        }
    }

    /// Changes the largest frame accepted from now on (a session's `Hello` gets a
    /// smaller cap than the frames after it).
    pub fn set_max_frame(&mut self, max_frame: usize) {
        self.max_frame = max_frame;
    }

    /// The underlying stream.
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.stream
    }
}
