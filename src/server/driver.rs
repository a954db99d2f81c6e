//! What every transport driver of the session core shares: the clock it feeds the
//! core, how a welcomed session is registered in the hub, the backends an
//! [`Effect`](crate::session::Effect) runs against, and the timings of a close.

use std::time::Duration;

use super::{FlushPolicy, Gateway};
use crate::hub::{bounded_queues, Closer, Outbound, QueueLimits, SessionRx};
use crate::session::{Backends, Session as Core};

/// Frames written in one go before the loop looks at its other inputs again.
const WRITE_BATCH: usize = 64;
/// How long a fatal error frame may take to reach the client before the close.
pub(super) const CLOSE_LINGER: Duration = Duration::from_millis(500);
/// After a fatal error frame was written, how long the client has to read it and
/// close the session itself (within [`CLOSE_LINGER`]).
pub(super) const CLOSE_READ_GRACE: Duration = Duration::from_millis(200);
/// How long opening a room stream may wait for the client's stream credit.
pub(super) const OPEN_STREAM_TIMEOUT: Duration = Duration::from_secs(5);
/// Datagrams queued for a session; newer ones are dropped beyond it.
const DATAGRAM_QUEUE: usize = 256;

/// Adds the session to the hub with its bounded queues, and tells the core how it
/// went; the queues' receiving ends when it was registered (on refusal the core
/// queues the close).
pub(super) fn register(gateway: &Gateway, core: &mut Core) -> Option<(SessionRx, Closer)> {
    let limits = &gateway.config.limits;
    let queues = QueueLimits {
        frames: limits.outbound_queue,
        bytes: limits.outbound_bytes,
        datagrams: DATAGRAM_QUEUE,
    };
    let (tx, rx) = bounded_queues(core.id(), core.user(), queues, &gateway.queued_bytes);
    let closer = tx.closer().clone();
    let result = gateway.hub.register(core.ns(), tx);
    let registered = result.is_ok();
    core.registered(result);
    registered.then_some((rx, closer))
}

/// Holds `first` and whatever else the hub queued (up to [`WRITE_BATCH`]); whether
/// they are due now: the session was quiet for a whole flush window, or the batch
/// is full. Otherwise they wait for the window's end, to share a write.
pub(super) fn gather(
    first: Outbound,
    rx: &mut SessionRx,
    held: &mut Vec<Outbound>,
    flush: &FlushPolicy,
    window: Duration,
) -> bool {
    held.push(first);
    while held.len() < WRITE_BATCH {
        match rx.frames.try_recv() {
            Ok(item) => held.push(item),
            Err(_) => break,
        }
    }
    flush.due(tokio::time::Instant::now(), window) || held.len() >= WRITE_BATCH
}

/// The hub, broker, inbox and hooks, as the session's effects see them.
pub(super) fn backends<'a>(gateway: &'a Gateway, core: &'a Core) -> Backends<'a> {
    gateway.backends(core.ns(), core.id(), core.user())
}

/// `deadline` on tokio's clock, or a day from now for none (the arm is disabled).
pub(super) fn far_or(deadline: Option<std::time::Instant>) -> tokio::time::Instant {
    deadline.map_or_else(
        || tokio::time::Instant::now() + Duration::from_secs(86_400),
        tokio::time::Instant::from_std,
    )
}

/// Sleeps until `deadline`, or forever for none.
pub(super) async fn sleep_until_flush(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The core's clock: tokio's, so tests with paused time stay consistent.
pub(super) fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

/// Until registration the core has the hello deadline; `Hello` must come by then.
pub(super) fn hello_deadline(core: &Core) -> tokio::time::Instant {
    match core.poll_timeout() {
        Some(at) => tokio::time::Instant::from_std(at),
        None => tokio::time::Instant::now(),
    }
}

/// Seconds since the Unix epoch, for token expiry.
pub(super) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
