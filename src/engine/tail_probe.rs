//! Tail-loss probes. A session that receives a message every few tens of
//! milliseconds sends one packet per message: when that packet is lost, no later
//! packet reveals it, and QUIC waits for its probe timeout (srtt + 4·rttvar + the
//! client's ACK delay, 15–20 ms on a 0.1 ms link with scheduling jitter) before
//! re-sending it. A PING shortly after the last stream data reveals the loss
//! instead: the client acknowledges a gap at once (ACK frequency's reordering
//! threshold 1, and any RFC 9000 peer), and the server's time threshold declares
//! the packet lost about [`PROBE_AFTER`] after it left. The price is one small
//! packet per burst, so it is paid only where it pays: on connections that lost a
//! packet lately, or when the endpoint as a whole is losing packets (a new
//! connection has no history of its own).

use std::time::{Duration, Instant};

use quinn_proto::ConnectionStats;

// How long after its last stream data a connection sends its probe (more data
// within it postpones the probe): the same delay as a client's probe.
use crate::protocol::PROBE_AFTER;
/// How long a connection that lost a packet keeps probing.
pub(crate) const LOSSY_SPAN: Duration = Duration::from_secs(30);
/// The span over which the endpoint's loss rate is taken.
pub(crate) const RATE_WINDOW: Duration = Duration::from_secs(1);
/// The endpoint counts as lossy when it lost at least 1 in this many of the
/// packets it sent over the last window (0.5 %)…
pub(crate) const LOSSY_ONE_IN: u64 = 200;
/// …out of at least this many (a handful of packets says nothing).
pub(crate) const MIN_SAMPLE: u64 = 200;

/// What QUIC counted for one connection (quinn-proto's `ConnectionStats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    /// Packets declared lost.
    pub(crate) lost: u64,
    /// Packets sent.
    pub(crate) sent: u64,
    /// STREAM frames sent (new data and retransmissions).
    pub(crate) stream_frames: u64,
}

impl Counts {
    /// The counts a probe needs from quinn-proto's statistics.
    pub(crate) fn of(stats: &ConnectionStats) -> Counts {
        Counts {
            lost: stats.path.lost_packets,
            sent: stats.path.sent_packets,
            stream_frames: stats.frame_tx.stream,
        }
    }
}

/// The endpoint's loss rate over the last full [`RATE_WINDOW`].
#[derive(Debug)]
pub(crate) struct LossRate {
    window_start: Instant,
    lost: u64,
    sent: u64,
    lossy: bool,
}

impl LossRate {
    /// No losses yet; the first window starts at `now`.
    pub(crate) fn new(now: Instant) -> Self {
        LossRate {
            window_start: now,
            lost: 0,
            sent: 0,
            lossy: false,
        }
    }

    /// Adds what one connection sent and lost since it was last counted.
    pub(crate) fn record(&mut self, now: Instant, lost: u64, sent: u64) {
        let elapsed = now.saturating_duration_since(self.window_start);
        if elapsed >= RATE_WINDOW {
            // A window that ended more than a window ago is not the last full
            // one: the span since held nothing, and says the endpoint is clean.
            self.lossy = elapsed < 2 * RATE_WINDOW
                && self.sent >= MIN_SAMPLE
                && self.lost * LOSSY_ONE_IN >= self.sent;
            self.window_start = now;
            self.lost = 0;
            self.sent = 0;
        }
        self.lost += lost;
        self.sent += sent;
    }

    /// Whether the last full window lost at least 1 in [`LOSSY_ONE_IN`].
    pub(crate) fn lossy(&self) -> bool {
        self.lossy
    }
}

/// One connection's probe: what it counted last, whether it is lossy, and when
/// its probe is due.
#[derive(Debug, Default)]
pub(crate) struct TailProbe {
    seen: Counts,
    lossy_until: Option<Instant>,
    due: Option<Instant>,
}

impl TailProbe {
    /// After the connection sent packets: `counts` as QUIC has them now. Feeds
    /// the endpoint's rate, and arms the probe if stream data left on a lossy path.
    pub(crate) fn sent(&mut self, now: Instant, counts: Counts, endpoint: &mut LossRate) {
        let lost = counts.lost.saturating_sub(self.seen.lost);
        endpoint.record(now, lost, counts.sent.saturating_sub(self.seen.sent));
        if lost > 0 {
            self.lossy_until = Some(now + LOSSY_SPAN);
        }
        let lossy = self.lossy_until.is_some_and(|until| now < until) || endpoint.lossy();
        if counts.stream_frames > self.seen.stream_frames && lossy {
            self.due = Some(now + PROBE_AFTER);
        }
        self.seen = counts;
    }

    /// When the probe is due, if armed.
    pub(crate) fn due(&self) -> Option<Instant> {
        self.due
    }

    /// Whether the probe is due at `now`; disarms it if so.
    pub(crate) fn take_due(&mut self, now: Instant) -> bool {
        if self.due.is_some_and(|at| at <= now) {
            self.due = None;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(lost: u64, sent: u64, stream_frames: u64) -> Counts {
        Counts {
            lost,
            sent,
            stream_frames,
        }
    }

    /// A clock, the endpoint's rate from it, and one connection's probe.
    fn start() -> (Instant, LossRate, TailProbe) {
        let t0 = Instant::now();
        (t0, LossRate::new(t0), TailProbe::default())
    }

    #[test]
    fn a_clean_path_never_probes() {
        let (t0, mut rate, mut probe) = start();
        for i in 1..1_000u64 {
            let now = t0 + Duration::from_millis(i * 20);
            probe.sent(now, counts(0, i, i), &mut rate);
            assert_eq!(probe.due(), None);
        }
        assert!(!rate.lossy());
    }

    #[test]
    fn a_loss_arms_a_probe_after_each_later_send_of_stream_data() {
        let (t0, mut rate, mut probe) = start();
        probe.sent(t0, counts(0, 10, 10), &mut rate);
        assert_eq!(probe.due(), None);
        // A retransmission after a loss: probed.
        let t1 = t0 + Duration::from_millis(20);
        probe.sent(t1, counts(1, 11, 11), &mut rate);
        assert_eq!(probe.due(), Some(t1 + PROBE_AFTER));
        assert!(!probe.take_due(t1));
        assert!(probe.take_due(t1 + PROBE_AFTER));
        assert_eq!(probe.due(), None);
        // The probe's own PING carries no stream data: no probe of the probe.
        probe.sent(t1 + PROBE_AFTER, counts(1, 12, 11), &mut rate);
        assert_eq!(probe.due(), None);
        // Later data within the span is probed; after it, not.
        let t2 = t1 + LOSSY_SPAN - Duration::from_millis(1);
        probe.sent(t2, counts(1, 13, 12), &mut rate);
        assert_eq!(probe.due(), Some(t2 + PROBE_AFTER));
        assert!(probe.take_due(t2 + PROBE_AFTER));
        probe.sent(t1 + LOSSY_SPAN, counts(1, 14, 13), &mut rate);
        assert_eq!(probe.due(), None);
    }

    #[test]
    fn more_data_postpones_the_probe() {
        let (t0, mut rate, mut probe) = start();
        probe.sent(t0, counts(1, 5, 5), &mut rate);
        let t1 = t0 + PROBE_AFTER / 2;
        probe.sent(t1, counts(1, 6, 6), &mut rate);
        assert!(!probe.take_due(t0 + PROBE_AFTER));
        assert!(probe.take_due(t1 + PROBE_AFTER));
    }

    #[test]
    fn a_lossy_endpoint_probes_connections_without_losses_of_their_own() {
        let (t0, mut rate, mut lossy) = start();
        // One connection loses 1 % over the first window.
        lossy.sent(t0, counts(10, 1_000, 1_000), &mut rate);
        let mut clean = TailProbe::default();
        clean.sent(t0, counts(0, 1, 1), &mut rate);
        assert_eq!(clean.due(), None, "the window is not over");
        let t1 = t0 + RATE_WINDOW;
        clean.sent(t1, counts(0, 2, 2), &mut rate);
        assert!(rate.lossy());
        assert_eq!(clean.due(), Some(t1 + PROBE_AFTER));
        // A clean window ends it.
        clean.sent(t1, counts(0, 1_002, 1_002), &mut rate);
        clean.sent(t1 + RATE_WINDOW, counts(0, 1_003, 1_003), &mut rate);
        assert!(!rate.lossy());
    }

    #[test]
    fn losses_followed_by_silence_do_not_make_the_endpoint_lossy_later() {
        let (t0, mut rate, _) = start();
        rate.record(t0, 10, 1_000);
        // The next packet leaves long after that window: it was not the last one.
        rate.record(t0 + 3 * RATE_WINDOW, 0, 1);
        assert!(!rate.lossy());
        // Right after its end, it was.
        let (t0, mut rate, _) = start();
        rate.record(t0, 10, 1_000);
        rate.record(t0 + RATE_WINDOW, 0, 1);
        assert!(rate.lossy());
    }

    #[test]
    fn a_few_losses_among_few_packets_do_not_make_the_endpoint_lossy() {
        let (t0, mut rate, _) = start();
        rate.record(t0, 5, MIN_SAMPLE - 1);
        rate.record(t0 + RATE_WINDOW, 0, 0);
        assert!(!rate.lossy());
    }

    #[test]
    fn counts_come_from_quinn_statistics() {
        let mut stats = ConnectionStats::default();
        stats.path.lost_packets = 3;
        stats.path.sent_packets = 40;
        stats.frame_tx.stream = 25;
        assert_eq!(Counts::of(&stats), counts(3, 40, 25));
    }
}
