//! The hub's side of a session: bounded queues the session's writer drains, and a
//! close signal the hub can raise when the session cannot keep up.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::protocol::ErrorCode;

/// Server-wide session id.
pub type SessionId = u64;

/// A frame queued for a session's writer.
#[derive(Debug, Clone)]
pub enum Outbound {
    /// For the stream of the room with this handle.
    Room {
        /// Room handle.
        handle: u32,
        /// The message's seq, so replayed and live copies can be told apart; 0 when
        /// the frame is not a message.
        seq: u64,
        /// The encoded, length-prefixed frame (shared between recipients).
        frame: Bytes,
        /// When the message was accepted, for the publish-to-delivery latency.
        published: Instant,
    },
    /// For the control stream.
    Control(Bytes),
    /// A notification for the control stream; the id lets the session skip one it
    /// already sent from the inbox.
    Notification {
        /// Notification id.
        id: u64,
        /// The encoded frame.
        frame: Bytes,
    },
}

/// Asks a session to close with a code, from anywhere; the first code wins.
#[derive(Debug, Clone, Default)]
pub struct Closer {
    inner: Arc<CloserInner>,
}

#[derive(Debug, Default)]
struct CloserInner {
    token: CancellationToken,
    code: AtomicU32,
}

impl Closer {
    /// Requests the close; later requests keep the first code.
    pub fn close(&self, code: ErrorCode) {
        let _ = self.inner.code.compare_exchange(
            0,
            code.to_code(),
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        self.inner.token.cancel();
    }

    /// Resolves once a close was requested.
    pub async fn requested(&self) {
        self.inner.token.cancelled().await
    }

    /// The requested code, if any.
    pub fn code(&self) -> Option<ErrorCode> {
        match self.inner.code.load(Ordering::Acquire) {
            0 => None,
            n => Some(ErrorCode::from(n)),
        }
    }
}

/// Sending half of a session's queues, held by the hub for every room it joined.
#[derive(Debug, Clone)]
pub struct SessionTx {
    /// Session id.
    pub id: SessionId,
    /// The session's user.
    pub user: Arc<str>,
    frames: mpsc::Sender<Outbound>,
    datagrams: mpsc::Sender<Bytes>,
    closer: Closer,
}

/// Receiving half of a session's queues, drained by its writer.
#[derive(Debug)]
pub struct SessionRx {
    /// Reliable frames, in order.
    pub frames: mpsc::Receiver<Outbound>,
    /// Encoded datagrams.
    pub datagrams: mpsc::Receiver<Bytes>,
}

/// Whether a queued item went out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// Queued.
    Queued,
    /// Dropped: a full datagram queue or a session already gone.
    Dropped,
    /// The reliable queue was full; the session is being closed as a slow consumer.
    Overflow,
}

impl SessionTx {
    /// Queues a reliable frame; a full queue closes the session with `SlowConsumer`
    /// (it reconnects and recovers with `since`) instead of blocking the publisher.
    pub fn send(&self, item: Outbound) -> Sent {
        match self.frames.try_send(item) {
            Ok(()) => Sent::Queued,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.closer.close(ErrorCode::SlowConsumer);
                Sent::Overflow
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Sent::Dropped,
        }
    }

    /// Queues a datagram; volatile data is dropped first when the session is behind.
    pub fn send_datagram(&self, datagram: Bytes) -> Sent {
        match self.datagrams.try_send(datagram) {
            Ok(()) => Sent::Queued,
            Err(_) => Sent::Dropped,
        }
    }

    /// The session's close signal.
    pub fn closer(&self) -> &Closer {
        &self.closer
    }
}

/// Makes the queues of a new session.
pub fn session_queues(
    id: SessionId,
    user: &str,
    frame_capacity: usize,
    datagram_capacity: usize,
) -> (SessionTx, SessionRx) {
    let (ftx, frx) = mpsc::channel(frame_capacity.max(1));
    let (dtx, drx) = mpsc::channel(datagram_capacity.max(1));
    let tx = SessionTx {
        id,
        user: user.into(),
        frames: ftx,
        datagrams: dtx,
        closer: Closer::default(),
    };
    let rx = SessionRx {
        frames: frx,
        datagrams: drx,
    };
    (tx, rx)
}
