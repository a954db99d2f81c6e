//! The hub's side of a session: bounded queues the session's writer drains, and a
//! close signal the hub can raise when the session cannot keep up.
//!
//! The reliable queue is bounded in frames and in bytes: a member that stops
//! reading while others publish large messages is closed with `SlowConsumer` once
//! its backlog passes its byte budget, and a server-wide count of queued bytes
//! closes the sessions holding big backlogs first when all of them together pass
//! the server's budget — whatever the frame sizes, memory stays bounded.

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
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
    /// The answer to an RPC that ran beside the session's commands (`RpcReply` or
    /// `Error`), for the control stream; the session counts it off its RPCs in flight.
    RpcReply(Bytes),
}

impl Outbound {
    /// The frame's size, what it costs the queue's byte budget.
    pub fn len(&self) -> usize {
        match self {
            Outbound::Room { frame, .. }
            | Outbound::Control(frame)
            | Outbound::RpcReply(frame)
            | Outbound::Notification { frame, .. } => frame.len(),
        }
    }

    /// Whether the frame is empty (never, for an encoded frame).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Bytes queued for every session of the server, against a server-wide budget.
#[derive(Debug)]
pub struct QueuedBytes {
    bytes: AtomicUsize,
    limit: usize,
}

impl QueuedBytes {
    /// A counter with a server-wide `limit`.
    pub fn new(limit: usize) -> Arc<QueuedBytes> {
        Arc::new(QueuedBytes {
            bytes: AtomicUsize::new(0),
            limit,
        })
    }

    /// Bytes queued now, over all sessions.
    pub fn get(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }
}

/// What one session's reliable queue may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    /// Frames.
    pub frames: usize,
    /// Bytes.
    pub bytes: usize,
    /// Datagrams (dropped, never closing, when full).
    pub datagrams: usize,
}

/// The byte counts one queued frame is in: its session's and the server's.
#[derive(Debug)]
struct ByteCount {
    session: AtomicUsize,
    limit: usize,
    server: Arc<QueuedBytes>,
}

impl ByteCount {
    /// Counts `n` more bytes if both budgets allow them. Past the server's budget
    /// only sessions holding more than a small share are refused, so that the
    /// sessions that keep up still get their frames.
    fn take(&self, n: usize) -> bool {
        let mine = self.session.fetch_add(n, Ordering::AcqRel) + n;
        let all = self.server.bytes.fetch_add(n, Ordering::AcqRel) + n;
        let fair_share = (self.limit / 16).max(64 * 1024);
        if mine > self.limit || (all > self.server.limit && mine > fair_share) {
            self.give(n);
            return false;
        }
        true
    }

    fn give(&self, n: usize) {
        self.session.fetch_sub(n, Ordering::AcqRel);
        self.server.bytes.fetch_sub(n, Ordering::AcqRel);
    }
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

    /// [`requested`](Self::requested) as an owned future, for a driver that
    /// keeps it across polls.
    pub fn requested_owned(&self) -> tokio_util::sync::WaitForCancellationFutureOwned {
        self.inner.token.clone().cancelled_owned()
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
    bytes: Arc<ByteCount>,
    closer: Closer,
}

/// Receiving half of a session's queues, drained by its writer.
#[derive(Debug)]
pub struct SessionRx {
    /// Reliable frames, in order.
    pub frames: FrameQueue,
    /// Encoded datagrams.
    pub datagrams: mpsc::Receiver<Bytes>,
}

/// The reliable queue's receiving end: gives back each frame's bytes as it is
/// taken, and all of them when dropped with frames still queued.
#[derive(Debug)]
pub struct FrameQueue {
    rx: mpsc::Receiver<Outbound>,
    bytes: Arc<ByteCount>,
}

impl FrameQueue {
    /// The next frame; `None` once every sender is gone.
    pub async fn recv(&mut self) -> Option<Outbound> {
        let item = self.rx.recv().await?;
        self.bytes.give(item.len());
        Some(item)
    }

    /// The next frame, or `Pending` with `cx`'s waker registered (a driver that
    /// polls many sessions in one task).
    pub fn poll_recv(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Outbound>> {
        self.rx.poll_recv(cx).map(|item| {
            let item = item?;
            self.bytes.give(item.len());
            Some(item)
        })
    }

    /// The next frame if one is queued.
    pub fn try_recv(&mut self) -> Result<Outbound, mpsc::error::TryRecvError> {
        let item = self.rx.try_recv()?;
        self.bytes.give(item.len());
        Ok(item)
    }

    /// Bytes queued now.
    pub fn queued_bytes(&self) -> usize {
        self.bytes.session.load(Ordering::Acquire)
    }
}

impl Drop for FrameQueue {
    fn drop(&mut self) {
        self.rx.close();
        while let Ok(item) = self.rx.try_recv() {
            self.bytes.give(item.len());
        }
    }
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
        let n = item.len();
        if !self.bytes.take(n) {
            self.closer.close(ErrorCode::SlowConsumer);
            return Sent::Overflow;
        }
        match self.frames.try_send(item) {
            Ok(()) => Sent::Queued,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.bytes.give(n);
                self.closer.close(ErrorCode::SlowConsumer);
                Sent::Overflow
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.bytes.give(n);
                Sent::Dropped
            }
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

/// Makes the queues of a new session, bounded in frames only (tests).
pub fn session_queues(
    id: SessionId,
    user: &str,
    frame_capacity: usize,
    datagram_capacity: usize,
) -> (SessionTx, SessionRx) {
    let limits = QueueLimits {
        frames: frame_capacity,
        bytes: usize::MAX / 4,
        datagrams: datagram_capacity,
    };
    bounded_queues(id, user, limits, &QueuedBytes::new(usize::MAX / 4))
}

/// Makes the queues of a new session, counting its bytes into `server`'s.
pub fn bounded_queues(
    id: SessionId,
    user: &str,
    limits: QueueLimits,
    server: &Arc<QueuedBytes>,
) -> (SessionTx, SessionRx) {
    let (ftx, frx) = mpsc::channel(limits.frames.max(1));
    let (dtx, drx) = mpsc::channel(limits.datagrams.max(1));
    let bytes = Arc::new(ByteCount {
        session: AtomicUsize::new(0),
        limit: limits.bytes,
        server: server.clone(),
    });
    let tx = SessionTx {
        id,
        user: user.into(),
        frames: ftx,
        datagrams: dtx,
        bytes: bytes.clone(),
        closer: Closer::default(),
    };
    let rx = SessionRx {
        frames: FrameQueue { rx: frx, bytes },
        datagrams: drx,
    };
    (tx, rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: usize) -> Outbound {
        Outbound::Control(Bytes::from(vec![0u8; n]))
    }

    #[tokio::test]
    async fn a_backlog_past_its_bytes_closes_the_session() {
        let server = QueuedBytes::new(1 << 30);
        let limits = QueueLimits {
            frames: 1000,
            bytes: 100_000,
            datagrams: 4,
        };
        let (tx, mut rx) = bounded_queues(1, "ann", limits, &server);
        for _ in 0..10 {
            assert_eq!(tx.send(frame(10_000)), Sent::Queued);
        }
        assert_eq!(rx.frames.queued_bytes(), 100_000);
        assert_eq!(tx.send(frame(1)), Sent::Overflow, "one byte over");
        assert_eq!(tx.closer().code(), Some(ErrorCode::SlowConsumer));
        assert_eq!(server.get(), 100_000, "the refused frame is not counted");
        rx.frames.recv().await.unwrap();
        rx.frames.try_recv().unwrap();
        assert_eq!((rx.frames.queued_bytes(), server.get()), (80_000, 80_000));
        drop(rx);
        assert_eq!(server.get(), 0, "a dropped queue gives everything back");
        assert_eq!(tx.send(frame(5)), Sent::Dropped);
        assert_eq!(server.get(), 0);
    }

    #[test]
    fn past_the_server_budget_big_backlogs_go_first() {
        let server = QueuedBytes::new(1_000_000);
        let limits = QueueLimits {
            frames: 10_000,
            bytes: 4_000_000,
            datagrams: 4,
        };
        let (hog, _hog_rx) = bounded_queues(1, "hog", limits, &server);
        let (polite, _polite_rx) = bounded_queues(2, "ann", limits, &server);
        while hog.send(frame(50_000)) == Sent::Queued {}
        assert_eq!(hog.closer().code(), Some(ErrorCode::SlowConsumer));
        assert!(server.get() <= 1_000_000 + 50_000, "{}", server.get());
        // A session with a small queue still gets its frames.
        for _ in 0..10 {
            assert_eq!(polite.send(frame(1_000)), Sent::Queued);
        }
        assert_eq!(polite.closer().code(), None);
    }
}
