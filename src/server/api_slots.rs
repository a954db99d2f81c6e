//! The server API's connection slots: a fixed number in all, a cap per client
//! address (IPv6 counted by /64, where one host gets a whole prefix), an idle
//! timeout, and — when every slot is taken — room made by closing the connection
//! that has been idle longest. So clients that connect and then say nothing, or
//! trickle, cannot lock backends and health checks out of `/api/*` and `/healthz`.
//!
//! Sans-IO: every method takes `now`; the accept loop and each connection's task
//! act on what it decides (close this one, refuse that one).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// Why a new connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refused {
    /// This address holds as many connections as one address may.
    #[error("too many connections from this address")]
    PerAddress,
    /// Every slot is taken and every connection has a request in flight.
    #[error("every connection slot is busy")]
    Full,
}

/// The slots of one listener.
#[derive(Debug)]
pub(crate) struct Slots {
    max: usize,
    per_address: usize,
    idle_timeout: Duration,
    /// A std mutex: held for map updates only, never across an await.
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    conns: HashMap<u64, Entry>,
    per_address: HashMap<IpAddr, usize>,
    next: u64,
}

#[derive(Debug)]
struct Entry {
    address: IpAddr,
    in_flight: usize,
    /// When its last request ended (or it was accepted).
    idle_since: Instant,
    close: CancellationToken,
}

/// One admitted connection; frees its slot when dropped.
#[derive(Debug)]
pub(crate) struct Slot {
    slots: Arc<Slots>,
    id: u64,
    /// Cancelled when the connection must close: evicted or idle too long.
    pub(crate) close: CancellationToken,
}

impl Slots {
    /// `max` connections in all, `per_address` from one address, closing those
    /// idle (no request in flight) for `idle_timeout`.
    pub(crate) fn new(max: usize, per_address: usize, idle_timeout: Duration) -> Arc<Slots> {
        Arc::new(Slots {
            max,
            per_address,
            idle_timeout,
            state: Mutex::new(State::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A slot for a connection from `ip`, closing the longest-idle connection when
    /// all are taken.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr, now: Instant) -> Result<Slot, Refused> {
        let address = super::admission::canonical(ip);
        let mut state = self.lock();
        if state.per_address.get(&address).copied().unwrap_or(0) >= self.per_address {
            return Err(Refused::PerAddress);
        }
        if state.conns.len() >= self.max {
            let idlest = state
                .conns
                .iter()
                .filter(|(_, e)| e.in_flight == 0)
                .min_by_key(|(_, e)| e.idle_since)
                .map(|(&id, _)| id)
                .ok_or(Refused::Full)?;
            state.remove(idlest);
        }
        state.next += 1;
        let id = state.next;
        let close = CancellationToken::new();
        *state.per_address.entry(address).or_default() += 1;
        state.conns.insert(
            id,
            Entry {
                address,
                in_flight: 0,
                idle_since: now,
                close: close.clone(),
            },
        );
        Ok(Slot {
            slots: self.clone(),
            id,
            close,
        })
    }

    /// Closes the connections idle for the idle timeout; returns how many.
    pub(crate) fn close_idle(&self, now: Instant) -> usize {
        let mut state = self.lock();
        let idle: Vec<u64> = state
            .conns
            .iter()
            .filter(|(_, e)| {
                e.in_flight == 0 && now.duration_since(e.idle_since) >= self.idle_timeout
            })
            .map(|(&id, _)| id)
            .collect();
        for &id in &idle {
            state.remove(id);
        }
        idle.len()
    }

    /// Connections holding a slot.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().conns.len()
    }
}

impl State {
    /// Frees a connection's slot and tells it to close (once: a later call or its
    /// `Slot`'s drop finds nothing).
    fn remove(&mut self, id: u64) {
        if let Some(entry) = self.conns.remove(&id) {
            entry.close.cancel();
            if let Some(n) = self.per_address.get_mut(&entry.address) {
                *n -= 1;
                if *n == 0 {
                    self.per_address.remove(&entry.address);
                }
            }
        }
    }
}

impl Slot {
    /// A request started on this connection: it is not idle until it ends.
    pub(crate) fn request_started(&self) {
        if let Some(e) = self.slots.lock().conns.get_mut(&self.id) {
            e.in_flight += 1;
        }
    }

    /// A request ended at `now`.
    pub(crate) fn request_ended(&self, now: Instant) {
        if let Some(e) = self.slots.lock().conns.get_mut(&self.id) {
            e.in_flight = e.in_flight.saturating_sub(1);
            e.idle_since = now;
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.lock().remove(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDLE: Duration = Duration::from_secs(30);

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn one_address_gets_its_share_and_ipv6_counts_by_prefix() {
        let slots = Slots::new(100, 2, IDLE);
        let now = Instant::now();
        let _a = slots.admit(ip("192.0.2.1"), now).unwrap();
        let b = slots.admit(ip("192.0.2.1"), now).unwrap();
        assert_eq!(
            slots.admit(ip("192.0.2.1"), now).unwrap_err(),
            Refused::PerAddress
        );
        assert!(slots.admit(ip("192.0.2.2"), now).is_ok());
        drop(b);
        let _b = slots.admit(ip("192.0.2.1"), now).unwrap();

        let _c = slots.admit(ip("2001:db8::1"), now).unwrap();
        let _d = slots.admit(ip("2001:db8::ffff:2"), now).unwrap();
        assert_eq!(
            slots.admit(ip("2001:db8::3"), now).unwrap_err(),
            Refused::PerAddress,
            "one /64"
        );
        assert!(slots.admit(ip("2001:db8:0:1::1"), now).is_ok());
        // A v4-mapped address counts as its IPv4 address.
        assert_eq!(
            slots.admit(ip("::ffff:192.0.2.1"), now).unwrap_err(),
            Refused::PerAddress
        );
    }

    #[test]
    fn a_full_listener_closes_the_longest_idle_connection() {
        let slots = Slots::new(3, 10, IDLE);
        let t0 = Instant::now();
        let old = slots.admit(ip("192.0.2.1"), t0).unwrap();
        let busy = slots.admit(ip("192.0.2.1"), t0).unwrap();
        busy.request_started();
        let newer = slots
            .admit(ip("192.0.2.1"), t0 + Duration::from_secs(1))
            .unwrap();
        let health = slots
            .admit(ip("192.0.2.9"), t0 + Duration::from_secs(2))
            .unwrap();
        assert!(old.close.is_cancelled(), "the idlest made room");
        assert!(!busy.close.is_cancelled() && !newer.close.is_cancelled());
        assert_eq!(slots.len(), 3);
        drop(old); // its task ends later: nothing is freed twice
        assert_eq!(slots.len(), 3);

        // Every connection busy: refused.
        newer.request_started();
        health.request_started();
        assert_eq!(slots.admit(ip("192.0.2.5"), t0).unwrap_err(), Refused::Full);
        health.request_ended(t0 + Duration::from_secs(3));
        assert!(slots.admit(ip("192.0.2.5"), t0).is_ok());
        assert!(health.close.is_cancelled());
    }

    #[test]
    fn idle_connections_close_after_the_timeout() {
        let slots = Slots::new(10, 10, IDLE);
        let t0 = Instant::now();
        let idle = slots.admit(ip("192.0.2.1"), t0).unwrap();
        let working = slots.admit(ip("192.0.2.1"), t0).unwrap();
        working.request_started();
        let recent = slots.admit(ip("192.0.2.1"), t0).unwrap();
        recent.request_started();
        recent.request_ended(t0 + Duration::from_secs(20));
        assert_eq!(slots.close_idle(t0 + IDLE - Duration::from_millis(1)), 0);
        assert_eq!(slots.close_idle(t0 + IDLE), 1);
        assert!(idle.close.is_cancelled());
        assert!(!working.close.is_cancelled() && !recent.close.is_cancelled());
        assert_eq!(slots.close_idle(t0 + Duration::from_secs(50)), 1);
        assert!(recent.close.is_cancelled());
        assert_eq!(slots.len(), 1);
    }
}
