//! Adaptive flushing: a session that is idle writes at once; one that keeps
//! receiving frames writes at most once per interval, so frames share packets.
//!
//! On these machines the cost of a delivery is mostly UDP packets (PERF.md:
//! ≈ 3.3 µs per packet), and quinn only coalesces what was written before it sends;
//! holding a busy session's frames ~1 ms cut the cost per delivery several times,
//! while an idle session never waits.

use std::time::Duration;

use tokio::time::Instant;

/// When a session's held frames must be written. Clock passed in.
#[derive(Debug, Clone)]
pub struct FlushPolicy {
    interval: Duration,
    last: Option<Instant>,
}

impl FlushPolicy {
    /// Writes at most once per `interval`; zero writes everything at once.
    pub fn new(interval: Duration) -> Self {
        FlushPolicy {
            interval,
            last: None,
        }
    }

    /// Whether frames arriving at `now` go out at once: the session has been
    /// quiet for a whole interval (or coalescing is off).
    pub fn due(&self, now: Instant) -> bool {
        match self.last {
            Some(last) => now >= last + self.interval,
            None => true,
        }
    }

    /// When held frames must be written at the latest.
    pub fn deadline(&self) -> Option<Instant> {
        self.last.map(|last| last + self.interval)
    }

    /// Records a write at `now`.
    pub fn flushed(&mut self, now: Instant) {
        self.last = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_sessions_write_at_once_busy_ones_once_per_interval() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut f = FlushPolicy::new(ms(1));
        assert!(f.due(t0), "the first frame goes out at once");
        f.flushed(t0);
        assert!(!f.due(t0 + Duration::from_micros(300)), "busy: held");
        assert_eq!(f.deadline(), Some(t0 + ms(1)));
        assert!(f.due(t0 + ms(1)));
        f.flushed(t0 + ms(1));
        assert!(f.due(t0 + ms(50)), "quiet again: at once");
    }

    #[test]
    fn zero_interval_never_holds() {
        let t0 = Instant::now();
        let mut f = FlushPolicy::new(Duration::ZERO);
        f.flushed(t0);
        assert!(f.due(t0));
    }
}
