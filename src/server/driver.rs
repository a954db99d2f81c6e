//! What every transport driver of the session core shares: the clock it feeds the
//! core, how a welcomed session is registered in the hub, the backends an
//! [`Effect`](crate::session::Effect) runs against, and the timings of a close.

use std::time::Duration;

use super::Gateway;
use crate::hub::{bounded_queues, Closer, QueueLimits, SessionRx};
use crate::session::{Backends, Session as Core};

/// Frames written in one go before the loop looks at its other inputs again.
pub(super) const WRITE_BATCH: usize = 64;
/// How long a fatal error frame may take to reach the client before the close.
pub(super) const CLOSE_LINGER: Duration = Duration::from_millis(500);
/// After a fatal error frame was written, how long the client has to read it and
/// close the session itself (within [`CLOSE_LINGER`]).
pub(super) const CLOSE_READ_GRACE: Duration = Duration::from_millis(200);
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

/// The hub, broker and inbox, as the session's effects see them.
pub(super) fn backends<'a>(gateway: &'a Gateway, core: &'a Core) -> Backends<'a> {
    Backends {
        hub: &gateway.hub,
        broker: gateway.broker.as_ref(),
        inbox: gateway.inbox.as_ref(),
        ns: core.ns(),
        id: core.id(),
        user: core.user(),
    }
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
