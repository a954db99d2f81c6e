//! What one receiving client saw: per-sender windows that tell new messages from
//! duplicates, the room's `seq` order, and the counts a report adds up.

use super::plan::{Plan, Stamp, Window};

/// Counts of one receiver, or of a whole run once added up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Measured messages delivered (each once).
    pub delivered: u64,
    /// Messages delivered more than once (any time in the run).
    pub duplicates: u64,
    /// Messages whose body names another room than the one they arrived in.
    pub misrouted: u64,
    /// Messages whose `seq` did not increase on the room stream.
    pub out_of_order: u64,
    /// Bodies that are no stamp of this run.
    pub malformed: u64,
    /// Warmup (or post-run) messages, not measured.
    pub unmeasured: u64,
}

impl Counts {
    /// Adds `other` into `self`.
    pub fn add(&mut self, other: &Counts) {
        self.delivered += other.delivered;
        self.duplicates += other.duplicates;
        self.misrouted += other.misrouted;
        self.out_of_order += other.out_of_order;
        self.malformed += other.malformed;
        self.unmeasured += other.unmeasured;
    }
}

/// Which counters of one sender a receiver has seen: the highest one plus a
/// 64-message bitmap below it (like an anti-replay window), so datagrams that
/// arrive out of order are not mistaken for duplicates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SeenWindow {
    /// One past the highest counter seen (0: none yet).
    next: u64,
    /// Bit `i` set: counter `next - 1 - i` was seen.
    mask: u64,
}

impl SeenWindow {
    /// Records `counter`; `false` when it was seen before (or is too old to tell,
    /// which on an ordered stream is a duplicate too).
    pub fn insert(&mut self, counter: u64) -> bool {
        if counter >= self.next {
            let shift = counter + 1 - self.next;
            self.mask = if shift >= 64 { 0 } else { self.mask << shift };
            self.mask |= 1;
            self.next = counter + 1;
            return true;
        }
        let back = self.next - 1 - counter;
        if back >= 64 {
            return false;
        }
        let bit = 1u64 << back;
        let new = self.mask & bit == 0;
        self.mask |= bit;
        new
    }
}

/// What became of one received message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A measured delivery: record its latency.
    Measured {
        /// One-way latency in nanoseconds.
        latency_ns: u64,
    },
    /// Delivered, but sent outside the measured window.
    Unmeasured,
    /// Seen before.
    Duplicate,
    /// Meant for another room.
    Misrouted,
    /// Not a stamp of this run.
    Malformed,
}

/// One receiver in one room.
#[derive(Debug, Clone)]
pub struct RoomTally {
    room: u32,
    /// Highest `seq` seen on the room stream (0: none yet).
    last_seq: u64,
    /// Per sender of the room, by [`Plan::sender_slot`].
    seen: Vec<SeenWindow>,
    counts: Counts,
}

impl RoomTally {
    /// A receiver in `room` of `plan`.
    pub fn new(plan: &Plan, room: u32) -> RoomTally {
        RoomTally {
            room,
            last_seq: 0,
            seen: vec![SeenWindow::default(); plan.sender_slots(room) as usize],
            counts: Counts::default(),
        }
    }

    /// What the receiver counted so far.
    pub fn counts(&self) -> &Counts {
        &self.counts
    }

    /// Accounts for one message. `seq` is the room's sequence number (streams;
    /// `None` for datagrams), `body` the payload, `now_ns` the arrival time since
    /// the run's epoch.
    pub fn on_message(
        &mut self,
        plan: &Plan,
        window: &Window,
        seq: Option<u64>,
        body: &[u8],
        now_ns: u64,
    ) -> Verdict {
        if let Some(seq) = seq {
            if seq <= self.last_seq {
                self.counts.out_of_order += 1;
            } else {
                self.last_seq = seq;
            }
        }
        let Some(stamp) = Stamp::read(body).filter(|s| plan.is_valid(s)) else {
            self.counts.malformed += 1;
            return Verdict::Malformed;
        };
        if stamp.room != self.room {
            self.counts.misrouted += 1;
            return Verdict::Misrouted;
        }
        let slot = plan.sender_slot(stamp.sender, self.room) as usize;
        if !self.seen[slot].insert(stamp.counter) {
            self.counts.duplicates += 1;
            return Verdict::Duplicate;
        }
        if !window.measures(stamp.sent_ns) {
            self.counts.unmeasured += 1;
            return Verdict::Unmeasured;
        }
        self.counts.delivered += 1;
        Verdict::Measured {
            latency_ns: now_ns.saturating_sub(stamp.sent_ns),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(room: u32, sender: u32, counter: u64, sent_ns: u64) -> Vec<u8> {
        let mut b = vec![0u8; 64];
        Stamp {
            room,
            sender,
            counter,
            sent_ns,
        }
        .write(&mut b);
        b
    }

    const W: Window = Window {
        warmup_ns: 100,
        end_ns: 1_000,
    };

    #[test]
    fn seen_window_tells_new_from_seen() {
        let mut w = SeenWindow::default();
        assert!(w.insert(0));
        assert!(!w.insert(0));
        assert!(w.insert(5));
        assert!(w.insert(3), "late but new");
        assert!(!w.insert(3));
        assert!(w.insert(100));
        assert!(w.insert(40), "63 back: still in the window");
        assert!(!w.insert(36), "64 back: too old to tell");
        assert!(w.insert(1000));
        assert!(!w.insert(100));
    }

    #[test]
    fn measured_messages_count_once_with_latency() {
        let plan = Plan::new(10, 2, 4).unwrap(); // senders 0, 2 in room 0; 1, 3 in room 1
        let mut t = RoomTally::new(&plan, 0);
        assert_eq!(
            t.on_message(&plan, &W, Some(1), &body(0, 0, 0, 50), 60),
            Verdict::Unmeasured
        );
        assert_eq!(
            t.on_message(&plan, &W, Some(2), &body(0, 2, 0, 200), 260),
            Verdict::Measured { latency_ns: 60 }
        );
        assert_eq!(
            t.on_message(&plan, &W, Some(3), &body(0, 0, 1, 300), 301),
            Verdict::Measured { latency_ns: 1 }
        );
        assert_eq!(
            t.on_message(&plan, &W, Some(4), &body(0, 0, 1, 300), 400),
            Verdict::Duplicate
        );
        assert_eq!(
            t.on_message(&plan, &W, Some(5), &body(1, 1, 0, 300), 400),
            Verdict::Misrouted
        );
        assert_eq!(
            t.on_message(&plan, &W, Some(6), &body(0, 1, 0, 300), 400),
            Verdict::Malformed,
            "sender 1 publishes in room 1"
        );
        assert_eq!(
            t.on_message(&plan, &W, Some(7), b"short", 400),
            Verdict::Malformed
        );
        assert_eq!(
            t.on_message(&plan, &W, Some(8), &body(0, 0, 2, 1_000), 1_001),
            Verdict::Unmeasured,
            "sent after the end"
        );
        assert_eq!(
            *t.counts(),
            Counts {
                delivered: 2,
                duplicates: 1,
                misrouted: 1,
                out_of_order: 0,
                malformed: 2,
                unmeasured: 2,
            }
        );
    }

    #[test]
    fn seq_must_increase_on_a_stream() {
        let plan = Plan::new(2, 1, 1).unwrap();
        let mut t = RoomTally::new(&plan, 0);
        t.on_message(&plan, &W, Some(10), &body(0, 0, 0, 200), 300);
        t.on_message(&plan, &W, Some(10), &body(0, 0, 1, 200), 300);
        t.on_message(&plan, &W, Some(9), &body(0, 0, 2, 200), 300);
        t.on_message(&plan, &W, None, &body(0, 0, 3, 200), 300);
        assert_eq!(t.counts().out_of_order, 2);
        assert_eq!(t.counts().delivered, 4);
    }

    #[test]
    fn counts_add_up() {
        let mut a = Counts {
            delivered: 1,
            duplicates: 2,
            misrouted: 3,
            out_of_order: 4,
            malformed: 5,
            unmeasured: 6,
        };
        let b = a;
        a.add(&b);
        assert_eq!(a.delivered, 2);
        assert_eq!(a.unmeasured, 12);
    }
}
