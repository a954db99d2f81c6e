//! Who does what in a load run, what a message body carries, and when each
//! sender sends: pure functions of the arguments and a clock passed in.

/// Bytes of the stamp at the front of every message body.
pub const STAMP_LEN: usize = 24;

/// How clients spread over rooms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Client `i` joins rooms `(i + j) % rooms` for `j < per_client`; a sender
    /// publishes to its rooms in turn.
    Spread {
        /// Rooms each client joins.
        per_client: u32,
    },
    /// Centrifugo's 2020 benchmark: client `i` joins its personal room `i` and
    /// the group room `clients + i / group` (groups of `group` clients); senders
    /// publish to their group room.
    Groups {
        /// Clients per group room.
        group: u32,
    },
}

/// The shape of a run: who joins which rooms ([`Layout`]); clients
/// `0..senders` publish (so senders spread over the rooms like everyone else).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Sessions opened.
    pub clients: u32,
    /// Rooms in all.
    pub rooms: u32,
    /// Clients that publish.
    pub senders: u32,
    /// Who joins which rooms.
    pub layout: Layout,
}

impl Plan {
    /// Checks the shape: at least one client and room, no more rooms or
    /// senders than clients; each client in one room.
    pub fn new(clients: u32, rooms: u32, senders: u32) -> Result<Plan, String> {
        Plan::spread(clients, rooms, senders, 1)
    }

    /// Each client in `per_client` of the `rooms` (1 to `rooms`).
    pub fn spread(clients: u32, rooms: u32, senders: u32, per_client: u32) -> Result<Plan, String> {
        Self::check(clients, senders)?;
        if rooms == 0 || rooms > clients {
            return Err(format!("--rooms must be 1 to --clients ({clients})"));
        }
        if per_client == 0 || per_client > rooms {
            return Err(format!("--rooms-per-client must be 1 to --rooms ({rooms})"));
        }
        Ok(Plan {
            clients,
            rooms,
            senders,
            layout: Layout::Spread { per_client },
        })
    }

    /// Centrifugo's shape: a personal room per client plus group rooms of `group`.
    pub fn groups(clients: u32, senders: u32, group: u32) -> Result<Plan, String> {
        Self::check(clients, senders)?;
        if group == 0 {
            return Err("--group-size must be at least 1".into());
        }
        Ok(Plan {
            clients,
            rooms: clients + clients.div_ceil(group),
            senders,
            layout: Layout::Groups { group },
        })
    }

    fn check(clients: u32, senders: u32) -> Result<(), String> {
        if clients == 0 {
            return Err("--clients must be at least 1".into());
        }
        if senders > clients {
            return Err(format!("--senders must be at most --clients ({clients})"));
        }
        Ok(())
    }

    /// Rooms each client joins.
    pub fn rooms_per_client(&self) -> u32 {
        match self.layout {
            Layout::Spread { per_client } => per_client,
            Layout::Groups { .. } => 2,
        }
    }

    /// Room `j` (of [`Self::rooms_per_client`]) that client `i` joins.
    pub fn room_of(&self, client: u32, j: u32) -> u32 {
        match self.layout {
            Layout::Spread { .. } => (client + j) % self.rooms,
            Layout::Groups { .. } if j == 0 => client,
            Layout::Groups { group } => self.clients + client / group,
        }
    }

    /// The rooms client `i` joins.
    pub fn rooms_of(&self, client: u32) -> impl Iterator<Item = u32> + '_ {
        (0..self.rooms_per_client()).map(move |j| self.room_of(client, j))
    }

    /// Which of its rooms (`j` of [`Self::room_of`]) message `n` of `sender`
    /// goes to.
    pub fn publish_slot(&self, _sender: u32, n: u64) -> u32 {
        match self.layout {
            Layout::Spread { per_client } => (n % u64::from(per_client)) as u32,
            Layout::Groups { .. } => 1,
        }
    }

    /// The room message `n` of `sender` goes to.
    pub fn publish_room(&self, sender: u32, n: u64) -> u32 {
        self.room_of(sender, self.publish_slot(sender, n))
    }

    /// Whether client `i` publishes.
    pub fn is_sender(&self, client: u32) -> bool {
        client < self.senders
    }

    /// Clients in `room`.
    pub fn members(&self, room: u32) -> u32 {
        if room >= self.rooms {
            return 0;
        }
        match self.layout {
            Layout::Spread { per_client } => (0..per_client)
                .map(|j| {
                    count_below(
                        self.clients,
                        self.rooms,
                        (room + self.rooms - j) % self.rooms,
                    )
                })
                .sum(),
            Layout::Groups { .. } if room < self.clients => 1,
            Layout::Groups { group } => {
                let first = (room - self.clients) * group;
                self.clients.saturating_sub(first).min(group)
            }
        }
    }

    /// Whether `sender` publishes to `room`.
    pub fn sends_to(&self, sender: u32, room: u32) -> bool {
        if sender >= self.senders || room >= self.rooms {
            return false;
        }
        match self.layout {
            Layout::Spread { per_client } => {
                (room + self.rooms - sender % self.rooms) % self.rooms < per_client
            }
            Layout::Groups { .. } => room == self.room_of(sender, 1),
        }
    }

    /// Slots a receiver in `room` keeps per sender ([`Self::sender_slot`] is below).
    pub fn sender_slots(&self, _room: u32) -> u32 {
        match self.layout {
            Layout::Spread { per_client } => per_client * self.senders.div_ceil(self.rooms),
            Layout::Groups { group } => group,
        }
    }

    /// Index of `sender` among `room`'s senders (`sends_to(sender, room)`):
    /// distinct for distinct senders of one room.
    pub fn sender_slot(&self, sender: u32, room: u32) -> u32 {
        match self.layout {
            Layout::Spread { per_client } => {
                let j = (room + self.rooms - sender % self.rooms) % self.rooms;
                (sender / self.rooms) * per_client + j
            }
            Layout::Groups { group } => sender % group,
        }
    }

    /// Whether `stamp` names a sender of this plan publishing to a room it may.
    pub fn is_valid(&self, stamp: &Stamp) -> bool {
        self.sends_to(stamp.sender, stamp.room)
    }
}

/// How many `i < n` have `i % m == r`.
fn count_below(n: u32, m: u32, r: u32) -> u32 {
    if r >= m {
        return 0;
    }
    n / m + u32::from(r < n % m)
}

/// What every message body starts with (little-endian; the rest is padding).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// The room the sender published to.
    pub room: u32,
    /// The sender's client index.
    pub sender: u32,
    /// The sender's message counter, from 0.
    pub counter: u64,
    /// Send time: nanoseconds since the run's epoch (one host, one clock).
    pub sent_ns: u64,
}

impl Stamp {
    /// Writes the stamp at the front of `body` (at least [`STAMP_LEN`] bytes).
    pub fn write(&self, body: &mut [u8]) {
        body[0..4].copy_from_slice(&self.room.to_le_bytes());
        body[4..8].copy_from_slice(&self.sender.to_le_bytes());
        body[8..16].copy_from_slice(&self.counter.to_le_bytes());
        body[16..24].copy_from_slice(&self.sent_ns.to_le_bytes());
    }

    /// Reads a stamp; `None` when `body` is too short to hold one.
    pub fn read(body: &[u8]) -> Option<Stamp> {
        let b = body.get(..STAMP_LEN)?;
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        Some(Stamp {
            room: u32_at(0),
            sender: u32_at(4),
            counter: u64_at(8),
            sent_ns: u64_at(16),
        })
    }
}

/// When a run's messages count: sent in `[warmup, end)` (nanoseconds since the
/// epoch). Earlier ones warm up the path and are left out of every statistic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// End of the warmup.
    pub warmup_ns: u64,
    /// End of sending.
    pub end_ns: u64,
}

impl Window {
    /// Whether a message sent at `sent_ns` is measured.
    pub fn measures(&self, sent_ns: u64) -> bool {
        sent_ns >= self.warmup_ns && sent_ns < self.end_ns
    }
}

/// What a [`Pacer`] says to do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Due {
    /// Messages to send now.
    pub send: u64,
    /// Messages whose time passed too long ago: skipped, not sent late.
    pub skipped: u64,
}

/// One sender's schedule when `senders` share a total `rate` evenly: message `n`
/// of sender `k` is due at `(k + n·senders) / rate` seconds, so the run as a
/// whole sends one message every `1/rate` s, never in bursts. A sender that
/// falls behind catches up at most `catch_up_ns` worth of messages; older ones
/// are skipped (and counted) so a stall never turns into a burst.
#[derive(Debug, Clone)]
pub struct Pacer {
    phase_ns: f64,
    period_ns: f64,
    end_ns: u64,
    next: u64,
    max_burst: u64,
}

impl Pacer {
    /// Sender `k` of `senders`, sending from time 0 until `end_ns`.
    pub fn new(k: u32, senders: u32, rate: f64, end_ns: u64, catch_up_ns: u64) -> Pacer {
        assert!(
            rate > 0.0 && senders > 0,
            "a positive rate and some senders"
        );
        let period_ns = f64::from(senders) * 1e9 / rate;
        let phase_ns = f64::from(k) * 1e9 / rate;
        Pacer {
            phase_ns,
            period_ns,
            end_ns,
            next: 0,
            max_burst: ((catch_up_ns as f64 / period_ns) as u64).max(1),
        }
    }

    fn at(&self, n: u64) -> u64 {
        (self.phase_ns + n as f64 * self.period_ns) as u64
    }

    /// When the next message is due; `None` once the schedule is over.
    pub fn next_due(&self) -> Option<u64> {
        let t = self.at(self.next);
        (t < self.end_ns).then_some(t)
    }

    /// Index of the next message.
    pub fn sent(&self) -> u64 {
        self.next
    }

    /// Takes what is due at `now_ns`.
    pub fn due(&mut self, now_ns: u64) -> Due {
        let horizon = now_ns.min(self.end_ns.saturating_sub(1));
        if self.at(self.next) > horizon || self.at(self.next) >= self.end_ns {
            return Due::default();
        }
        // Count the due messages: the last n with at(n) <= horizon.
        let mut last = ((horizon as f64 - self.phase_ns) / self.period_ns).floor() as u64;
        while last > self.next && self.at(last) > horizon {
            last -= 1;
        }
        while self.at(last + 1) <= horizon {
            last += 1;
        }
        let due = last + 1 - self.next;
        self.next = last + 1;
        let send = due.min(self.max_burst);
        Due {
            send,
            skipped: due - send,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_spreads_clients_and_senders() {
        let p = Plan::new(10, 3, 4).unwrap();
        assert_eq!((0..3).map(|r| p.members(r)).collect::<Vec<_>>(), [4, 3, 3]);
        assert_eq!(p.room_of(7, 0), 1);
        assert_eq!(p.rooms_of(7).collect::<Vec<_>>(), [1]);
        assert!(p.is_sender(3) && !p.is_sender(4));
        assert_eq!(p.sender_slot(3, 0), 1);
        assert_eq!(p.members(3), 0);
        let total: u32 = (0..3).map(|r| p.members(r)).sum();
        assert_eq!(total, 10);
        let stamp = |room, sender| Stamp {
            room,
            sender,
            counter: 0,
            sent_ns: 0,
        };
        assert!(p.is_valid(&stamp(0, 3)));
        assert!(!p.is_valid(&stamp(1, 3)), "sender 3 is in room 0");
        assert!(!p.is_valid(&stamp(1, 4)), "client 4 does not send");
        assert!(Plan::new(0, 1, 0).is_err());
        assert!(Plan::new(5, 6, 0).is_err());
        assert!(Plan::new(5, 0, 0).is_err());
        assert!(Plan::new(5, 1, 6).is_err());
    }

    /// Checks a plan's functions against each other by brute force.
    fn consistent(p: &Plan) {
        let mut members = vec![0u32; p.rooms as usize];
        for i in 0..p.clients {
            let rooms: Vec<u32> = p.rooms_of(i).collect();
            let mut distinct = rooms.clone();
            distinct.sort_unstable();
            distinct.dedup();
            assert_eq!(distinct.len(), rooms.len(), "client {i} joins {rooms:?}");
            for r in rooms {
                members[r as usize] += 1;
            }
        }
        for r in 0..p.rooms {
            assert_eq!(p.members(r), members[r as usize], "members of {r}");
            let mut slots = std::collections::HashSet::new();
            for s in (0..p.senders).filter(|&s| p.sends_to(s, r)) {
                let slot = p.sender_slot(s, r);
                assert!(slot < p.sender_slots(r), "slot {slot} of {s} in {r}");
                assert!(slots.insert(slot), "slot {slot} twice in {r}");
                assert!(
                    p.rooms_of(s).any(|x| x == r),
                    "{s} sends to {r} without joining"
                );
            }
        }
        for s in 0..p.senders {
            for n in 0..10 {
                assert!(p.sends_to(s, p.publish_room(s, n)));
            }
        }
    }

    #[test]
    fn clients_in_many_rooms() {
        let p = Plan::spread(10, 4, 6, 3).unwrap();
        assert_eq!(p.rooms_of(3).collect::<Vec<_>>(), [3, 0, 1]);
        assert_eq!(
            (0..3).map(|n| p.publish_room(3, n)).collect::<Vec<_>>(),
            [3, 0, 1]
        );
        assert!(p.sends_to(3, 1) && !p.sends_to(3, 2));
        consistent(&p);
        for (c, r, s, k) in [
            (50, 5, 5, 1),
            (50, 5, 12, 5),
            (7, 7, 7, 2),
            (100, 10, 20, 4),
        ] {
            consistent(&Plan::spread(c, r, s, k).unwrap());
        }
        assert!(Plan::spread(10, 4, 1, 5).is_err());
        assert!(Plan::spread(10, 4, 1, 0).is_err());
    }

    #[test]
    fn centrifugo_groups() {
        let p = Plan::groups(25, 25, 10).unwrap();
        assert_eq!(p.rooms, 25 + 3);
        assert_eq!(p.rooms_of(13).collect::<Vec<_>>(), [13, 26]);
        assert_eq!((p.members(0), p.members(25), p.members(27)), (1, 10, 5));
        assert_eq!(p.publish_room(13, 7), 26);
        assert!(!p.sends_to(13, 13), "personal rooms get no publishes");
        consistent(&p);
        consistent(&Plan::groups(100, 30, 10).unwrap());
        assert!(Plan::groups(10, 1, 0).is_err());
    }

    #[test]
    fn stamp_round_trips() {
        let s = Stamp {
            room: 7,
            sender: 123_456,
            counter: u64::MAX - 1,
            sent_ns: 42,
        };
        let mut body = [0xaau8; 64];
        s.write(&mut body);
        assert_eq!(Stamp::read(&body), Some(s));
        assert_eq!(Stamp::read(&body[..STAMP_LEN - 1]), None);
        assert!(body[STAMP_LEN..].iter().all(|&b| b == 0xaa));
    }

    #[test]
    fn window_measures_half_open() {
        let w = Window {
            warmup_ns: 10,
            end_ns: 20,
        };
        assert!(!w.measures(9));
        assert!(w.measures(10));
        assert!(w.measures(19));
        assert!(!w.measures(20));
    }

    /// Drives pacers with a coarse clock, as a timer wheel would.
    fn run(pacers: &mut [Pacer], step_ns: u64, until_ns: u64) -> (Vec<u64>, u64) {
        let mut sent = vec![0; pacers.len()];
        let mut skipped = 0;
        let mut now = 0;
        while now <= until_ns {
            for (p, s) in pacers.iter_mut().zip(&mut sent) {
                let d = p.due(now);
                *s += d.send;
                skipped += d.skipped;
            }
            now += step_ns;
        }
        (sent, skipped)
    }

    #[test]
    fn senders_share_the_rate_evenly() {
        // 10 senders, 1000 msg/s in total, for 1 s, polled every 1 ms.
        let mut pacers: Vec<_> = (0..10)
            .map(|k| Pacer::new(k, 10, 1000.0, 1_000_000_000, 50_000_000))
            .collect();
        let (sent, skipped) = run(&mut pacers, 1_000_000, 2_000_000_000);
        assert_eq!(sent, vec![100; 10]);
        assert_eq!(skipped, 0);
        // Sender k's first message is due at k ms: the total is spread out.
        let p = Pacer::new(3, 10, 1000.0, 1_000_000_000, 0);
        assert_eq!(p.next_due(), Some(3_000_000));
    }

    #[test]
    fn pacer_sends_what_is_due_and_then_stops() {
        let mut p = Pacer::new(0, 1, 100.0, 1_000_000_000, 1_000_000_000);
        assert_eq!(p.due(0).send, 1, "the first message is due at once");
        assert_eq!(p.due(5_000_000).send, 0);
        assert_eq!(p.next_due(), Some(10_000_000));
        assert_eq!(p.due(10_000_000).send, 1);
        assert_eq!(p.due(35_000_000).send, 2, "20 and 30 ms");
        assert_eq!(p.due(5_000_000_000).send, 96, "the rest, not past the end");
        assert_eq!(p.sent(), 100);
        assert_eq!(p.next_due(), None);
        assert_eq!(p.due(6_000_000_000), Due::default());
    }

    #[test]
    fn catch_up_is_bounded() {
        // 1000 msg/s; a 50 ms catch-up allows 50 at once; a 200 ms stall skips 150.
        let mut p = Pacer::new(0, 1, 1000.0, 10_000_000_000, 50_000_000);
        assert_eq!(p.due(0).send, 1);
        let d = p.due(200_000_000);
        assert_eq!(
            d,
            Due {
                send: 50,
                skipped: 150
            }
        );
        assert_eq!(p.next_due(), Some(201_000_000));
    }

    #[test]
    fn fractional_periods_do_not_drift() {
        // 3 msg/s per sender: periods of 333.33 ms; after 10 s exactly 30.
        let mut pacers = vec![Pacer::new(0, 1, 3.0, 10_000_000_000, 1_000_000_000)];
        let (sent, _) = run(&mut pacers, 7_000_000, 20_000_000_000);
        assert_eq!(sent, vec![30]);
    }
}
