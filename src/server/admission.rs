//! Admission control before a QUIC handshake: a per-IP connection rate limit, so
//! one address cannot flood the server with handshakes. Clock passed in.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::TokenBucket;

/// Addresses tracked at most; beyond it idle entries are swept first, then the
/// whole table is reset (a spoofing flood must not grow memory).
const MAX_TRACKED: usize = 65_536;
/// An address idle this long has a full bucket again, so its entry can go.
const IDLE: Duration = Duration::from_secs(60);

/// Per-address token buckets for new connections.
#[derive(Debug)]
pub struct ConnectLimiter {
    rate: f64,
    burst: u32,
    buckets: HashMap<IpAddr, (TokenBucket, Instant)>,
}

impl ConnectLimiter {
    /// Allows `rate` new connections per second per address, bursts of `burst`.
    pub fn new(rate: f64, burst: u32) -> Self {
        ConnectLimiter {
            rate,
            burst,
            buckets: HashMap::new(),
        }
    }

    /// Whether a connection from `ip` may start now.
    pub fn admit(&mut self, ip: IpAddr, now: Instant) -> bool {
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

/// IPv4 peers of a dual-stack socket appear as `::ffff:a.b.c.d`; count them as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_each_address_separately() {
        let t0 = Instant::now();
        let mut l = ConnectLimiter::new(1.0, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(l.admit(a, t0) && l.admit(a, t0));
        assert!(!l.admit(a, t0));
        assert!(l.admit(b, t0), "another address has its own budget");
        assert!(l.admit(a, t0 + Duration::from_millis(1100)), "refilled");
    }

    #[test]
    fn mapped_ipv4_counts_as_ipv4() {
        let t0 = Instant::now();
        let mut l = ConnectLimiter::new(1.0, 1);
        assert!(l.admit("127.0.0.1".parse().unwrap(), t0));
        assert!(!l.admit("::ffff:127.0.0.1".parse().unwrap(), t0));
    }

    #[test]
    fn memory_stays_bounded() {
        let t0 = Instant::now();
        let mut l = ConnectLimiter::new(1.0, 1);
        for i in 0..(MAX_TRACKED as u32 + 10) {
            l.admit(IpAddr::V4(i.into()), t0);
        }
        assert!(l.tracked() <= MAX_TRACKED);
    }
}
