//! Admission control before a QUIC handshake: a per-address connection rate limit,
//! so one address cannot flood the server with handshakes, and address validation
//! (a QUIC Retry) once new connections come faster than a server-wide rate, so that
//! under load a spoofed source address cannot spend another client's budget.
//! Clock passed in.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::TokenBucket;

/// Addresses tracked at most; beyond it idle entries are swept first, then the
/// whole table is reset (a spoofing flood must not grow memory).
const MAX_TRACKED: usize = 65_536;
/// An address idle this long has a full bucket again, so its entry can go.
const IDLE: Duration = Duration::from_secs(60);

/// What to do with a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Start the handshake.
    Accept,
    /// Ask the client to prove its address first (a QUIC Retry: one round trip).
    Retry,
    /// Refuse: its address is over its rate.
    Refuse,
}

/// Per-address token buckets for new connections, and the server-wide budget of
/// connections accepted without address validation.
#[derive(Debug)]
pub struct ConnectLimiter {
    rate: f64,
    burst: u32,
    buckets: HashMap<IpAddr, (TokenBucket, Instant)>,
    /// `None`: every unvalidated connection gets a Retry.
    unvalidated: Option<TokenBucket>,
}

impl ConnectLimiter {
    /// Allows `rate` new connections per second per address, bursts of `burst`, and
    /// `unvalidated_rate` per second server-wide (the same as a burst) before
    /// connections must validate their address; 0 validates every one.
    pub fn new(rate: f64, burst: u32, unvalidated_rate: f64, now: Instant) -> Self {
        let unvalidated = (unvalidated_rate > 0.0)
            .then(|| TokenBucket::new(unvalidated_rate, unvalidated_rate as u32, now));
        ConnectLimiter {
            rate,
            burst,
            buckets: HashMap::new(),
            unvalidated,
        }
    }

    /// What to do with a connection from `ip` whose address is (or is not yet)
    /// `validated` by a Retry: an unvalidated one spends no address's budget, since
    /// its source address may be forged.
    pub fn admit(&mut self, ip: IpAddr, validated: bool, now: Instant) -> Admission {
        if !validated {
            let free = self.unvalidated.as_mut().is_some_and(|b| b.try_take(now));
            if !free {
                return Admission::Retry;
            }
        }
        if self.admit_address(ip, now) {
            Admission::Accept
        } else {
            Admission::Refuse
        }
    }

    /// Whether the address of `ip` is within its rate.
    fn admit_address(&mut self, ip: IpAddr, now: Instant) -> bool {
        let ip = canonical(ip);
        if self.buckets.len() >= MAX_TRACKED && !self.buckets.contains_key(&ip) {
            self.buckets
                .retain(|_, (_, seen)| now.saturating_duration_since(*seen) < IDLE);
            if self.buckets.len() >= MAX_TRACKED {
                self.buckets.clear();
            }
        }
        let (bucket, seen) = self
            .buckets
            .entry(ip)
            .or_insert_with(|| (TokenBucket::new(self.rate, self.burst, now), now));
        *seen = now;
        bucket.try_take(now)
    }

    /// Addresses currently tracked.
    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }
}

/// The client a per-address limit counts: IPv4 peers of a dual-stack socket appear
/// as `::ffff:a.b.c.d` and count as IPv4; an IPv6 address counts by its /64, the
/// prefix one host (or one customer line) is handed.
pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut octets = v6.octets();
                octets[8..].fill(0);
                IpAddr::V6(octets.into())
            }
        },
        v4 => v4,
    }
}

/// Connections accepted but not welcomed yet, against a cap: a client that
/// connects and never says `Hello` holds a place until `hello_timeout`, so without
/// a cap a flood of them would hold memory and tasks for that long.
#[derive(Debug)]
pub(crate) struct AwaitingHello {
    count: AtomicUsize,
    limit: usize,
}

/// One connection's place among those awaiting `Welcome`; freed when dropped.
#[derive(Debug)]
pub(crate) struct AwaitingGuard(Arc<AwaitingHello>);

impl AwaitingHello {
    pub(crate) fn new(limit: usize) -> Arc<Self> {
        Arc::new(AwaitingHello {
            count: AtomicUsize::new(0),
            limit,
        })
    }

    /// A place, unless `limit` connections already await `Welcome`.
    pub(crate) fn enter(self: &Arc<Self>) -> Option<AwaitingGuard> {
        self.count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.limit).then_some(n + 1)
            })
            .ok()
            .map(|_| AwaitingGuard(self.clone()))
    }

    /// Connections awaiting `Welcome` now.
    pub(crate) fn get(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }
}

impl Drop for AwaitingGuard {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_each_address_separately() {
        let t0 = Instant::now();
        let mut l = ConnectLimiter::new(1.0, 2, 1000.0, t0);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(l.admit_address(a, t0) && l.admit_address(a, t0));
        assert!(!l.admit_address(a, t0));
        assert!(l.admit_address(b, t0), "another address has its own budget");
        assert!(
            l.admit_address(a, t0 + Duration::from_millis(1100)),
            "refilled"
        );
    }

    #[test]
    fn mapped_ipv4_counts_as_ipv4() {
        let t0 = Instant::now();
        let mut l = ConnectLimiter::new(1.0, 1, 1000.0, t0);
        assert!(l.admit_address("127.0.0.1".parse().unwrap(), t0));
        assert!(!l.admit_address("::ffff:127.0.0.1".parse().unwrap(), t0));
    }

    #[test]
    fn ipv6_counts_by_its_64_prefix() {
        let t0 = Instant::now();
        let mut l = ConnectLimiter::new(1.0, 1, 1000.0, t0);
        assert!(l.admit_address("2001:db8::1".parse().unwrap(), t0));
        assert!(
            !l.admit_address("2001:db8::9:8:7:6".parse().unwrap(), t0),
            "same /64"
        );
        assert!(
            l.admit_address("2001:db8:0:1::1".parse().unwrap(), t0),
            "another /64"
        );
    }

    #[test]
    fn past_the_unvalidated_rate_addresses_must_be_proven() {
        let t0 = Instant::now();
        let mut l = ConnectLimiter::new(100.0, 100, 2.0, t0);
        let victim: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(l.admit(victim, false, t0), Admission::Accept);
        assert_eq!(l.admit(victim, false, t0), Admission::Accept);
        // Under load: a forged source gets a Retry, which spends nothing of the
        // victim's budget.
        for _ in 0..1000 {
            assert_eq!(l.admit(victim, false, t0), Admission::Retry);
        }
        assert_eq!(l.admit(victim, true, t0), Admission::Accept);
        assert_eq!(
            l.admit(victim, false, t0 + Duration::from_millis(500)),
            Admission::Accept,
            "the server-wide budget refills"
        );

        let mut always = ConnectLimiter::new(1.0, 1, 0.0, t0);
        assert_eq!(always.admit(victim, false, t0), Admission::Retry);
        assert_eq!(always.admit(victim, true, t0), Admission::Accept);
        assert_eq!(always.admit(victim, true, t0), Admission::Refuse);
    }

    #[test]
    fn places_awaiting_hello_are_capped_and_freed() {
        let awaiting = AwaitingHello::new(2);
        let a = awaiting.enter().unwrap();
        let _b = awaiting.enter().unwrap();
        assert!(awaiting.enter().is_none());
        assert_eq!(awaiting.get(), 2);
        drop(a);
        assert!(awaiting.enter().is_some());
    }

    #[test]
    fn memory_stays_bounded() {
        let t0 = Instant::now();
        let mut l = ConnectLimiter::new(1.0, 1, 1000.0, t0);
        for i in 0..(MAX_TRACKED as u32 + 10) {
            l.admit_address(IpAddr::V4(i.into()), t0);
        }
        assert!(l.tracked() <= MAX_TRACKED);
    }
}
