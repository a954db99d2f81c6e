//! Adaptive flushing: a session that is idle writes at once; one that keeps
//! receiving frames writes at most once per window, so frames share packets.
//!
//! On these machines the cost of a delivery is mostly UDP packets (PERF.md:
//! ≈ 3.3 µs per packet), and quinn only coalesces what was written before it sends.
//! A window must hold at least two frames of one session to save anything, and
//! under a fan-out each session's own rate is modest (200 clients sharing 200k
//! deliveries/s get one frame per ms each), so the window follows the load of the
//! whole server: 1 ms when quiet, growing with the delivery rate up to 5 ms.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// The coalescing window, shared by every session and set from the server's load.
#[derive(Debug)]
pub struct FlushWindow {
    base: Duration,
    micros: AtomicU64,
}

/// Deliveries per second at which the window doubles from its base.
const RATE_PER_BASE: f64 = 100_000.0;
/// The longest window: latency added to a busy session stays within it.
const MAX_WINDOW: Duration = Duration::from_millis(5);

impl FlushWindow {
    /// A window of `base` (zero disables coalescing) until load says otherwise.
    pub fn new(base: Duration) -> Self {
        FlushWindow {
            base,
            micros: AtomicU64::new(base.as_micros() as u64),
        }
    }

    /// The current window.
    pub fn get(&self) -> Duration {
        Duration::from_micros(self.micros.load(Ordering::Relaxed))
    }

    /// Adapts the window to the server's delivery rate.
    pub fn set_load(&self, deliveries_per_sec: f64) {
        let window = if self.base.is_zero() {
            Duration::ZERO
        } else {
            let scale = (deliveries_per_sec / RATE_PER_BASE).max(1.0);
            self.base.mul_f64(scale).min(MAX_WINDOW.max(self.base))
        };
        self.micros
            .store(window.as_micros() as u64, Ordering::Relaxed);
    }
}

/// When a session's held frames must be written. Clock passed in.
#[derive(Debug, Clone, Default)]
pub struct FlushPolicy {
    last: Option<Instant>,
}

impl FlushPolicy {
    /// Whether frames arriving at `now` go out at once: the session has been
    /// quiet for a whole `window` (or coalescing is off).
    pub fn due(&self, now: Instant, window: Duration) -> bool {
        match self.last {
            Some(last) => now >= last + window,
            None => true,
        }
    }

    /// When held frames must be written at the latest.
    pub fn deadline(&self, window: Duration) -> Option<Instant> {
        self.last.map(|last| last + window)
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
    fn idle_sessions_write_at_once_busy_ones_once_per_window() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut f = FlushPolicy::default();
        assert!(f.due(t0, ms(1)), "the first frame goes out at once");
        f.flushed(t0);
        assert!(!f.due(t0 + Duration::from_micros(300), ms(1)), "busy: held");
        assert_eq!(f.deadline(ms(1)), Some(t0 + ms(1)));
        assert!(f.due(t0 + ms(1), ms(1)));
        f.flushed(t0 + ms(1));
        assert!(f.due(t0 + ms(50), ms(1)), "quiet again: at once");
        assert!(f.due(t0 + ms(1), Duration::ZERO), "no window, no hold");
    }

    #[test]
    fn the_window_follows_the_load_within_bounds() {
        let w = FlushWindow::new(Duration::from_millis(1));
        assert_eq!(w.get(), Duration::from_millis(1));
        w.set_load(50_000.0);
        assert_eq!(w.get(), Duration::from_millis(1));
        w.set_load(300_000.0);
        assert_eq!(w.get(), Duration::from_millis(3));
        w.set_load(5_000_000.0);
        assert_eq!(w.get(), MAX_WINDOW);
        w.set_load(0.0);
        assert_eq!(w.get(), Duration::from_millis(1));
        let off = FlushWindow::new(Duration::ZERO);
        off.set_load(1e9);
        assert_eq!(off.get(), Duration::ZERO);
    }
}
