//! When to hand freed memory back to the system. glibc's malloc keeps what a burst
//! freed in its arenas (a storm of 500 sessions left 17 MiB of the 80 it took);
//! `malloc_trim` returns it, but holds the arenas' locks for milliseconds, and on
//! a saturated server that stall overflowed the UDP receive buffer (200k
//! deliveries/s: p99 over 80 ms in 6 of 9 runs with a trim every 5 s, in 2 of 9
//! without). So: only once the server has been calm for a moment, and not often.
//! Clock passed in.

use std::time::{Duration, Instant};

/// The least time between two releases.
const EVERY: Duration = Duration::from_secs(5);
/// Deliveries per second above which the server counts as busy.
const BUSY_RATE: f64 = 20_000.0;
/// How long the rate must stay below [`BUSY_RATE`] before a release.
const CALM_FOR: Duration = Duration::from_secs(1);

/// Decides, from the delivery rate sampled over time, when to release memory.
#[derive(Debug)]
pub(super) struct MemoryRelease {
    last: Instant,
    calm_since: Option<Instant>,
}

impl MemoryRelease {
    /// Nothing released yet; the first release comes [`EVERY`] after `now` at the soonest.
    pub(super) fn new(now: Instant) -> Self {
        MemoryRelease {
            last: now,
            calm_since: None,
        }
    }

    /// The server delivered `rate` per second just before `now`: true when memory
    /// should be released now (the caller then does it).
    pub(super) fn due(&mut self, now: Instant, rate: f64) -> bool {
        if rate > BUSY_RATE {
            self.calm_since = None;
            return false;
        }
        let calm_since = *self.calm_since.get_or_insert(now);
        if now < calm_since + CALM_FOR || now < self.last + EVERY {
            return false;
        }
        self.last = now;
        true
    }
}

/// Returns freed pages to the kernel (glibc; elsewhere nothing to do).
pub(super) fn release() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages to the kernel; it is thread-safe
    // and takes no pointers.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICK: Duration = Duration::from_millis(100);

    /// Feeds `rate` every tick from `*now` for `span`; how many releases were due.
    fn run(m: &mut MemoryRelease, now: &mut Instant, span: Duration, rate: f64) -> usize {
        let end = *now + span;
        let mut released = 0;
        while *now < end {
            *now += TICK;
            released += usize::from(m.due(*now, rate));
        }
        released
    }

    #[test]
    fn a_calm_server_releases_every_few_seconds() {
        let mut now = Instant::now();
        let mut m = MemoryRelease::new(now);
        assert_eq!(
            run(&mut m, &mut now, EVERY - TICK, 0.0),
            0,
            "not before EVERY"
        );
        assert_eq!(run(&mut m, &mut now, EVERY * 3, 100.0), 3);
    }

    #[test]
    fn a_busy_server_keeps_its_memory_until_it_has_been_calm_a_moment() {
        let mut now = Instant::now();
        let mut m = MemoryRelease::new(now);
        assert_eq!(run(&mut m, &mut now, EVERY * 4, 200_000.0), 0);
        // A lull shorter than CALM_FOR inside the burst does not count.
        assert_eq!(run(&mut m, &mut now, CALM_FOR / 2, 0.0), 0);
        assert_eq!(run(&mut m, &mut now, TICK, 200_000.0), 0);
        // After the burst: once, as soon as it has been calm for CALM_FOR.
        let first_calm = now + TICK;
        loop {
            now += TICK;
            if m.due(now, 0.0) {
                break;
            }
        }
        assert_eq!(now - first_calm, CALM_FOR);
        assert_eq!(
            run(&mut m, &mut now, EVERY - TICK, 0.0),
            0,
            "then not for EVERY"
        );
    }
}
