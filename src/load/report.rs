//! The result of a load run: built from what the run counted, printed as text or
//! as one JSON object, and judged (anything reliable lost, duplicated or
//! misrouted fails the run).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::plan::Plan;
use super::procfs::ProcSample;
use super::tally::Counts;
use crate::client::Transport;

/// How messages travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Reliable: `Publish` on the control stream, delivered on room streams (the
    /// sender gets its own message too).
    Stream,
    /// Volatile: datagrams to the other members, never retransmitted.
    Datagram,
}

impl Mode {
    /// Receivers of one message in a room of `members` sessions.
    pub fn receivers(self, members: u64) -> u64 {
        match self {
            Mode::Stream => members,
            Mode::Datagram => members.saturating_sub(1),
        }
    }

    /// Whether loss fails the run.
    pub fn reliable(self) -> bool {
        self == Mode::Stream
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LatencyMs {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
}

/// Connect-time percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct ConnectMs {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

impl ConnectMs {
    /// From a histogram of microseconds.
    pub fn of(h: &Histogram<u64>) -> ConnectMs {
        ConnectMs {
            p50: ms(h, 0.5),
            p99: ms(h, 0.99),
            max: ms(h, 1.0),
        }
    }
}

/// The server's CPU and memory, with `--server-pid` (summed over the pids).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct ServerUsage {
    /// Server CPU over the measured window (after the warmup until the last send).
    pub cpu_ms: f64,
    /// Deliveries that arrived in the same window (measured or not).
    pub window_deliveries: u64,
    /// `cpu_ms` per delivery, in microseconds.
    pub cpu_us_per_delivery: f64,
    /// Server CPU per session while connecting, in microseconds.
    pub connect_cpu_us_per_session: f64,
    /// RSS before the first connect, KiB.
    pub rss_kb_before: u64,
    /// RSS once every client had connected and joined and the warmup passed, KiB.
    pub rss_kb_connected: u64,
    /// RSS at the end of sending, KiB.
    pub rss_kb_end: u64,
    /// Peak RSS of the process so far (`VmHWM`), KiB.
    pub rss_kb_peak: u64,
    /// (connected − before) / sessions, KiB.
    pub rss_kb_per_session: f64,
}

impl ServerUsage {
    /// From samples before connecting, once connected, and at the start and end
    /// of the measured window (the start, after the warmup, gives the settled
    /// RSS of the sessions).
    pub fn from_samples(
        before: ProcSample,
        connected: ProcSample,
        window: (ProcSample, ProcSample),
        window_deliveries: u64,
        sessions: u64,
    ) -> ServerUsage {
        let cpu = window.1.cpu.saturating_sub(window.0.cpu);
        let connect_cpu = connected.cpu.saturating_sub(before.cpu);
        let per = |x: f64, n: u64| if n == 0 { 0.0 } else { x / n as f64 };
        ServerUsage {
            cpu_ms: round3(cpu.as_secs_f64() * 1e3),
            window_deliveries,
            cpu_us_per_delivery: round3(per(cpu.as_secs_f64() * 1e6, window_deliveries)),
            connect_cpu_us_per_session: round3(per(connect_cpu.as_secs_f64() * 1e6, sessions)),
            rss_kb_before: before.rss_kb,
            rss_kb_connected: window.0.rss_kb,
            rss_kb_end: window.1.rss_kb,
            rss_kb_peak: window.1.peak_kb.max(connected.peak_kb),
            rss_kb_per_session: round3(per(
                window.0.rss_kb.saturating_sub(before.rss_kb) as f64,
                sessions,
            )),
        }
    }
}

/// Presence frames the clients received: what the server's presence settings
/// cost the run. Counted, never errors.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PresenceFrames {
    /// `OnlineJoin`/`OnlineLeave` on the control streams (namespace `online`).
    pub namespace: u64,
    /// `PresenceJoin`/`PresenceLeave` on the room streams (namespace `presence`).
    pub room: u64,
}

/// Latency spread over rooms: each room's p99, then the lowest, the median and
/// the highest of those (rooms with measured deliveries).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct RoomSpread {
    /// Rooms with measured deliveries.
    pub rooms: u32,
    /// Lowest per-room p99, ms.
    pub min: f64,
    /// Median per-room p99, ms.
    pub median: f64,
    /// Highest per-room p99, ms.
    pub max: f64,
}

impl RoomSpread {
    /// From per-room histograms (microseconds).
    pub fn of(rooms: &[Histogram<u64>]) -> RoomSpread {
        let mut p99: Vec<f64> = rooms
            .iter()
            .filter(|h| !h.is_empty())
            .map(|h| ms(h, 0.99))
            .collect();
        if p99.is_empty() {
            return RoomSpread::default();
        }
        p99.sort_by(f64::total_cmp);
        RoomSpread {
            rooms: p99.len() as u32,
            min: p99[0],
            median: p99[p99.len() / 2],
            max: p99[p99.len() - 1],
        }
    }
}

/// Churn sessions (`--churn-rate`): how many came and went, and how long they
/// took to connect while the others chatted.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ChurnReport {
    /// New sessions per second asked for.
    pub rate: f64,
    /// How long each stayed, seconds.
    pub life_s: f64,
    /// Churn sessions that connected, started in the measured window.
    pub sessions: u64,
    /// Churn sessions that failed in the window.
    pub failed: u64,
    /// Their connect times.
    pub connect_ms: ConnectMs,
}

impl ChurnReport {
    /// From what the churn sessions counted (`connect_us` in microseconds).
    pub fn new(
        args: &super::LoadArgs,
        sessions: u64,
        failed: u64,
        connect_us: &Histogram<u64>,
    ) -> ChurnReport {
        ChurnReport {
            rate: args.churn_rate,
            life_s: args.churn_life.as_secs_f64(),
            sessions,
            failed,
            connect_ms: ConnectMs::of(connect_us),
        }
    }
}

/// Longest error kind kept; longer ones are cut (on a char boundary).
const MAX_ERROR_KIND: usize = 80;

/// The kind of an error message, for counting: per-client details (quoted
/// strings such as user and room names, numbers such as client indexes) are
/// blanked out, so a hundred clients failing alike make one entry.
pub fn error_kind(message: &str) -> String {
    let mut kind = String::with_capacity(message.len().min(MAX_ERROR_KIND + 4));
    let mut chars = message.chars().peekable();
    let mut prev: Option<char> = None;
    while let Some(c) = chars.next() {
        if c == '"' {
            kind.push_str("\"…\"");
            for q in chars.by_ref() {
                if q == '"' {
                    break;
                }
            }
            prev = Some('"');
            continue;
        }
        // A number, unless it is part of a word ("h3", "HTTP/3").
        if c.is_ascii_digit() && !prev.is_some_and(|p| p.is_alphanumeric() || p == '/') {
            // The rest of it too: "0x10c", "250ms".
            while chars.peek().is_some_and(|d| d.is_ascii_alphanumeric()) {
                chars.next();
            }
            kind.push('N');
            prev = Some('0');
            continue;
        }
        kind.push(c);
        prev = Some(c);
    }
    if kind.len() > MAX_ERROR_KIND {
        let mut end = MAX_ERROR_KIND;
        while !kind.is_char_boundary(end) {
            end -= 1;
        }
        kind.truncate(end);
        kind.push('…');
    }
    kind
}

/// Counts `n` errors of `message`'s [`error_kind`] in `errors`.
pub fn count_error(errors: &mut BTreeMap<String, u64>, message: &str, n: u64) {
    *errors.entry(error_kind(message)).or_default() += n;
}

/// Everything a run measured, before it is summarised.
#[derive(Debug)]
pub struct RunFacts {
    /// Who did what.
    pub plan: Plan,
    /// Target messages per second, in total.
    pub rate: f64,
    /// Measured sending time.
    pub duration: Duration,
    /// Warmup before it.
    pub warmup: Duration,
    /// Body size.
    pub body_bytes: usize,
    /// Streams or datagrams.
    pub mode: Mode,
    /// What carried the sessions.
    pub transport: Transport,
    /// Measured messages sent, per room.
    pub sent_per_room: Vec<u64>,
    /// Sessions that joined, per room.
    pub members_per_room: Vec<u64>,
    /// Sessions that connected and joined all their rooms.
    pub connected: u64,
    /// What the receivers counted, added up.
    pub counts: Counts,
    /// One-way latency of measured deliveries, in microseconds.
    pub latency_us: Histogram<u64>,
    /// The same per room.
    pub room_latency_us: Vec<Histogram<u64>>,
    /// Churn sessions, with `--churn-rate`.
    pub churn: Option<ChurnReport>,
    /// Connect times (session + Hello/Welcome), in microseconds.
    pub connect_us: Histogram<u64>,
    /// Time from the first connect until every client had joined.
    pub connect_elapsed: Duration,
    /// Errors by kind.
    pub errors: BTreeMap<String, u64>,
    /// Presence frames received.
    pub presence: PresenceFrames,
    /// Server CPU and memory, with `--server-pid`.
    pub server: Option<ServerUsage>,
    /// The generator's own CPU over the measured window, % of one core.
    pub generator_cpu_percent: Option<f64>,
}

/// A load run's report; its JSON form is the object `wtgate load --json` prints.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Sessions asked for.
    pub clients: u32,
    /// Rooms.
    pub rooms: u32,
    /// Publishing sessions.
    pub senders: u32,
    /// Target messages per second, in total.
    pub rate: f64,
    /// Measured sending time, seconds.
    pub duration_s: f64,
    /// Warmup before it (excluded from every figure), seconds.
    pub warmup_s: f64,
    /// Message body size.
    pub body_bytes: usize,
    /// `stream` or `datagram`.
    pub mode: Mode,
    /// `webtransport` or `websocket`.
    #[serde(serialize_with = "as_text")]
    pub transport: Transport,
    /// Sessions that connected and joined.
    pub connected: u64,
    /// Sessions connected per second during the connect phase.
    pub connects_per_sec: f64,
    /// Measured messages sent.
    pub sent: u64,
    /// Deliveries expected: each message × the receivers in its room.
    pub expected: u64,
    /// Measured messages delivered (each once).
    pub delivered: u64,
    /// `expected − delivered`.
    pub lost: u64,
    /// Messages delivered more than once.
    pub duplicates: u64,
    /// Messages delivered to a room other than the one their body names.
    pub misrouted: u64,
    /// Measured deliveries per second of measured time.
    pub deliveries_per_sec: f64,
    /// One-way latency of measured deliveries.
    pub latency_ms: LatencyMs,
    /// Rooms each client joined.
    pub rooms_per_client: u32,
    /// The spread of per-room p99 latency.
    pub room_p99_ms: RoomSpread,
    /// Churn sessions, with `--churn-rate`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub churn: Option<ChurnReport>,
    /// Time to open a session (QUIC + WebTransport, or TCP + TLS + the WebSocket
    /// upgrade; then Hello/Welcome).
    pub connect_ms: ConnectMs,
    /// Errors by kind (server error codes, connection failures, skipped sends…).
    pub errors: BTreeMap<String, u64>,
    /// Presence frames received: the cost of the server's presence settings.
    pub presence_frames: PresenceFrames,
    /// Whether the run passed (see [`Report::failures`]).
    pub passed: bool,
    /// The server's CPU and memory, with `--server-pid`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<ServerUsage>,
    /// This generator's CPU over the measured window, in % of one core: near
    /// 100 % the generator, not the server, may be what limits the figures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generator_cpu_percent: Option<f64>,
}

/// Generator CPU (% of one core) from which its figures may show the generator's
/// limit rather than the server's (issue 15's rule for Socket.IO's generators).
pub const GENERATOR_BUSY_PERCENT: f64 = 80.0;

fn as_text<S: serde::Serializer>(t: &Transport, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(t)
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() {
        return 0.0;
    }
    round3(h.value_at_quantile(q) as f64 / 1000.0)
}

impl Report {
    /// Summarises a run.
    pub fn build(f: RunFacts) -> Report {
        let sent: u64 = f.sent_per_room.iter().sum();
        let expected: u64 = f
            .sent_per_room
            .iter()
            .zip(&f.members_per_room)
            .map(|(&s, &m)| s * f.mode.receivers(m))
            .sum();
        let c = f.counts;
        let mut errors = f.errors;
        for (kind, n) in [
            ("out_of_order", c.out_of_order),
            ("malformed_body", c.malformed),
        ] {
            if n > 0 {
                *errors.entry(kind.to_owned()).or_default() += n;
            }
        }
        let secs = f.duration.as_secs_f64();
        let connected = f.connected;
        let elapsed = f.connect_elapsed.as_secs_f64();
        let mut report = Report {
            clients: f.plan.clients,
            rooms: f.plan.rooms,
            senders: f.plan.senders,
            rate: f.rate,
            duration_s: secs,
            warmup_s: f.warmup.as_secs_f64(),
            body_bytes: f.body_bytes,
            mode: f.mode,
            transport: f.transport,
            connected,
            connects_per_sec: if elapsed > 0.0 {
                round3(connected as f64 / elapsed)
            } else {
                0.0
            },
            sent,
            expected,
            delivered: c.delivered,
            lost: expected.saturating_sub(c.delivered),
            duplicates: c.duplicates,
            misrouted: c.misrouted,
            deliveries_per_sec: if secs > 0.0 {
                round3(c.delivered as f64 / secs)
            } else {
                0.0
            },
            latency_ms: LatencyMs {
                p50: ms(&f.latency_us, 0.5),
                p90: ms(&f.latency_us, 0.9),
                p99: ms(&f.latency_us, 0.99),
                p999: ms(&f.latency_us, 0.999),
                max: ms(&f.latency_us, 1.0),
            },
            rooms_per_client: f.plan.rooms_per_client(),
            room_p99_ms: RoomSpread::of(&f.room_latency_us),
            churn: f.churn,
            connect_ms: ConnectMs::of(&f.connect_us),
            errors,
            presence_frames: f.presence,
            passed: false,
            server: f.server,
            generator_cpu_percent: f.generator_cpu_percent,
        };
        report.passed = report.failures().is_empty();
        report
    }

    /// Why the run failed; empty when it passed. Reliable loss, any duplicate or
    /// misrouted message, a broken `seq` order, a foreign body and a client that
    /// could not connect all fail it; datagram loss does not.
    pub fn failures(&self) -> Vec<String> {
        let mut why = Vec::new();
        if self.mode.reliable() && self.lost > 0 {
            why.push(format!("{} deliveries lost", self.lost));
        }
        if self.duplicates > 0 {
            why.push(format!("{} duplicates", self.duplicates));
        }
        if self.misrouted > 0 {
            why.push(format!("{} misrouted", self.misrouted));
        }
        for kind in ["out_of_order", "malformed_body"] {
            if let Some(n) = self.errors.get(kind) {
                why.push(format!("{n} {kind}"));
            }
        }
        if self.connected < u64::from(self.clients) {
            why.push(format!(
                "{} of {} clients did not connect",
                u64::from(self.clients) - self.connected,
                self.clients
            ));
        }
        why
    }

    /// The report as one line of JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a report always serializes")
    }

    /// The report for people.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let mode = match self.mode {
            Mode::Stream => "stream",
            Mode::Datagram => "datagram",
        };
        let transport = match self.transport {
            Transport::WebTransport => "WebTransport",
            Transport::WebSocket => "WebSocket",
        };
        let _ = writeln!(
            s,
            "clients {} ({} connected) · rooms {} · senders {} · {} msg/s · {}-byte bodies · {mode} over {transport} · {}s (+{}s warmup)",
            self.clients,
            self.connected,
            self.rooms,
            self.senders,
            self.rate,
            self.body_bytes,
            self.duration_s,
            self.warmup_s
        );
        let _ = writeln!(
            s,
            "sent {} · expected {} · delivered {} · lost {} · duplicated {} · misrouted {}",
            self.sent, self.expected, self.delivered, self.lost, self.duplicates, self.misrouted
        );
        let _ = writeln!(s, "deliveries/s {:.0}", self.deliveries_per_sec);
        let l = &self.latency_ms;
        let _ = writeln!(
            s,
            "latency ms   p50 {:.3} · p90 {:.3} · p99 {:.3} · p99.9 {:.3} · max {:.3}",
            l.p50, l.p90, l.p99, l.p999, l.max
        );
        let r = &self.room_p99_ms;
        if self.rooms > 1 {
            let _ = writeln!(
                s,
                "per room     p99 ms min {:.3} · median {:.3} · max {:.3} over {} rooms ({} per client)",
                r.min, r.median, r.max, r.rooms, self.rooms_per_client
            );
        }
        let c = &self.connect_ms;
        let _ = writeln!(
            s,
            "connect ms   p50 {:.3} · p99 {:.3} · max {:.3} · {:.0} sessions/s",
            c.p50, c.p99, c.max, self.connects_per_sec
        );
        if let Some(ch) = &self.churn {
            let _ = writeln!(
                s,
                "churn        {} sessions ({}/s, {}s each), {} failed · connect ms p50 {:.3} · p99 {:.3} · max {:.3}",
                ch.sessions, ch.rate, ch.life_s, ch.failed, ch.connect_ms.p50, ch.connect_ms.p99, ch.connect_ms.max
            );
        }
        if let Some(u) = &self.server {
            let _ = writeln!(
                s,
                "server       {:.3} µs CPU/delivery ({:.0} ms over {} deliveries) · {:.0} µs CPU/connect",
                u.cpu_us_per_delivery, u.cpu_ms, u.window_deliveries, u.connect_cpu_us_per_session
            );
            let _ = writeln!(
                s,
                "server RSS   {} → {} KiB connected ({:.1} KiB/session) · {} KiB at end · peak {} KiB",
                u.rss_kb_before, u.rss_kb_connected, u.rss_kb_per_session, u.rss_kb_end, u.rss_kb_peak
            );
        }
        if let Some(g) = self.generator_cpu_percent {
            let _ = writeln!(
                s,
                "generator    {g:.1} % of a core over the measured window{}",
                if g >= GENERATOR_BUSY_PERCENT {
                    " — busy: the generator may be the limit"
                } else {
                    ""
                }
            );
        }
        let p = &self.presence_frames;
        let _ = writeln!(
            s,
            "presence     {} namespace (online) · {} room frames received — the server config's cost, not errors",
            p.namespace, p.room
        );
        if self.errors.is_empty() {
            let _ = writeln!(s, "errors       none");
        } else {
            let list: Vec<String> = self
                .errors
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect();
            let _ = writeln!(s, "errors       {}", list.join(" · "));
        }
        let failures = self.failures();
        if failures.is_empty() {
            let _ = writeln!(s, "result       PASS");
        } else {
            let _ = writeln!(s, "result       FAIL: {}", failures.join(", "));
        }
        s
    }
}

/// Top-level keys of the `--json` object (the contract); `latency_ms` has
/// [`LATENCY_KEYS`] and `connect_ms` [`CONNECT_KEYS`].
pub const JSON_KEYS: [&str; 18] = [
    "clients",
    "rooms",
    "senders",
    "rate",
    "duration_s",
    "body_bytes",
    "mode",
    "sent",
    "expected",
    "delivered",
    "lost",
    "duplicates",
    "misrouted",
    "deliveries_per_sec",
    "latency_ms",
    "connect_ms",
    "errors",
    "presence_frames",
];
/// Keys of `latency_ms` in the `--json` object.
pub const LATENCY_KEYS: [&str; 5] = ["p50", "p90", "p99", "p999", "max"];
/// Keys of `connect_ms` in the `--json` object.
pub const CONNECT_KEYS: [&str; 3] = ["p50", "p99", "max"];

/// Checks that `v` has every documented key of the `--json` object.
pub fn check_json_shape(v: &serde_json::Value) -> Result<(), String> {
    for key in JSON_KEYS {
        if v.get(key).is_none() {
            return Err(format!("{key} missing"));
        }
    }
    for key in LATENCY_KEYS {
        if !v["latency_ms"][key].is_number() {
            return Err(format!("latency_ms.{key} is not a number"));
        }
    }
    for key in CONNECT_KEYS {
        if !v["connect_ms"][key].is_number() {
            return Err(format!("connect_ms.{key} is not a number"));
        }
    }
    Ok(())
}

/// A histogram of microseconds from 1 µs to 10 minutes, 3 significant digits.
pub fn micros_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

/// A per-room histogram: 2 significant digits keep thousands of rooms small.
pub fn room_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 2).expect("valid histogram bounds")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(mode: Mode) -> RunFacts {
        let plan = Plan::new(10, 2, 2).unwrap();
        let mut latency_us = micros_histogram();
        for v in 1..=1000u64 {
            latency_us.record(v * 100).unwrap(); // 0.1 ms .. 100 ms
        }
        let mut connect_us = micros_histogram();
        connect_us.record(2_000).unwrap();
        RunFacts {
            plan,
            rate: 100.0,
            duration: Duration::from_secs(2),
            warmup: Duration::from_secs(1),
            body_bytes: 64,
            mode,
            transport: Transport::WebTransport,
            sent_per_room: vec![100, 100],
            members_per_room: vec![5, 5],
            connected: 10,
            counts: Counts {
                delivered: 1000,
                ..Counts::default()
            },
            room_latency_us: vec![latency_us.clone(), {
                let mut h = room_histogram();
                h.record(3_000).unwrap();
                h
            }],
            latency_us,
            churn: None,
            connect_us,
            connect_elapsed: Duration::from_millis(500),
            errors: BTreeMap::new(),
            presence: PresenceFrames {
                namespace: 45,
                room: 90,
            },
            server: None,
            generator_cpu_percent: None,
        }
    }

    #[test]
    fn a_clean_stream_run_passes() {
        let r = Report::build(facts(Mode::Stream));
        assert_eq!(
            (r.sent, r.expected, r.delivered, r.lost),
            (200, 1000, 1000, 0)
        );
        assert_eq!(r.deliveries_per_sec, 500.0);
        assert_eq!(r.connected, 10);
        assert_eq!(r.connects_per_sec, 20.0);
        assert!((r.latency_ms.p50 - 50.0).abs() < 0.1, "{:?}", r.latency_ms);
        assert!((r.latency_ms.p99 - 99.0).abs() < 0.1);
        assert!((r.latency_ms.max - 100.0).abs() < 0.1);
        assert_eq!(r.connect_ms.p50, 2.0);
        assert!(r.passed, "{:?}", r.failures());
        assert!(r.to_text().contains("PASS"));
    }

    #[test]
    fn datagrams_expect_no_echo_and_tolerate_loss() {
        let r = Report::build(facts(Mode::Datagram));
        assert_eq!(r.expected, 800);
        assert_eq!(r.lost, 0, "delivered 1000 > 800 saturates");
        let mut f = facts(Mode::Datagram);
        f.counts.delivered = 700;
        let r = Report::build(f);
        assert_eq!(r.lost, 100);
        assert!(r.passed);
    }

    #[test]
    fn loss_duplicates_misrouting_and_missing_clients_fail() {
        let mut f = facts(Mode::Stream);
        f.counts.delivered = 990;
        f.counts.duplicates = 1;
        f.counts.misrouted = 2;
        f.counts.out_of_order = 3;
        f.members_per_room = vec![5, 4];
        f.connected = 9;
        let r = Report::build(f);
        assert_eq!(r.expected, 900);
        assert!(!r.passed);
        let why = r.failures().join("; ");
        assert!(why.contains("1 duplicates"), "{why}");
        assert!(why.contains("2 misrouted"), "{why}");
        assert!(why.contains("3 out_of_order"), "{why}");
        assert!(why.contains("1 of 10 clients"), "{why}");
        let mut f = facts(Mode::Stream);
        f.counts.delivered = 999;
        let r = Report::build(f);
        assert_eq!(r.failures(), ["1 deliveries lost"]);
        assert!(r.to_text().contains("FAIL"));
    }

    #[test]
    fn json_has_the_documented_keys() {
        let v: serde_json::Value =
            serde_json::from_str(&Report::build(facts(Mode::Stream)).to_json()).unwrap();
        check_json_shape(&v).unwrap_or_else(|e| panic!("{e} in {v}"));
        assert_eq!(v["mode"], "stream");
        assert_eq!(v["transport"], "webtransport");
        assert!(v.get("server").is_none());
    }

    #[test]
    fn presence_is_reported_and_never_fails_a_run() {
        let r = Report::build(facts(Mode::Stream));
        assert!(r.passed);
        let text = r.to_text();
        assert!(
            text.contains("45 namespace (online) · 90 room frames"),
            "{text}"
        );
        assert!(text.contains("errors       none"), "{text}");
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(v["presence_frames"]["namespace"], 45);
        assert_eq!(v["presence_frames"]["room"], 90);
    }

    #[test]
    fn errors_group_by_kind_without_per_client_detail() {
        let mut errors = BTreeMap::new();
        for i in 0..100 {
            let user = format!("load-{i}");
            count_error(
                &mut errors,
                &format!("join: expected Joined, got Some(OnlineJoin {{ user: {user:?} }})"),
                1,
            );
            count_error(
                &mut errors,
                &format!("server pid {} unreadable", 1000 + i),
                1,
            );
        }
        count_error(&mut errors, "connect: HTTP/3 h3 error 0x10c", 2);
        assert_eq!(
            errors.into_iter().collect::<Vec<_>>(),
            [
                ("connect: HTTP/3 h3 error N".to_owned(), 2),
                (
                    "join: expected Joined, got Some(OnlineJoin { user: \"…\" })".to_owned(),
                    100
                ),
                ("server pid N unreadable".to_owned(), 100),
            ]
        );
        let long = error_kind(&"é".repeat(100));
        assert!(
            long.ends_with('…') && long.len() <= MAX_ERROR_KIND + 3,
            "{long}"
        );
    }

    #[test]
    fn the_text_report_lists_each_kind_once_with_its_count() {
        let mut f = facts(Mode::Stream);
        for i in 0..10 {
            count_error(&mut f.errors, &format!("closed by \"load-{i}\""), 1);
        }
        let text = Report::build(f).to_text();
        let line = text.lines().find(|l| l.starts_with("errors")).unwrap();
        assert_eq!(line, "errors       closed by \"…\" 10");
    }

    #[test]
    fn server_usage_divides_by_the_window() {
        let s = |cpu_ms: u64, rss_kb: u64| ProcSample {
            cpu: Duration::from_millis(cpu_ms),
            rss_kb,
            peak_kb: rss_kb,
        };
        let u = ServerUsage::from_samples(
            s(100, 10_000),
            s(600, 110_000),
            (s(1_000, 120_000), s(3_000, 130_000)),
            1_000_000,
            1_000,
        );
        assert_eq!(u.cpu_ms, 2000.0);
        assert_eq!(u.cpu_us_per_delivery, 2.0);
        assert_eq!(u.connect_cpu_us_per_session, 500.0);
        assert_eq!(u.rss_kb_per_session, 110.0);
        assert_eq!(u.rss_kb_peak, 130_000);
    }
}
