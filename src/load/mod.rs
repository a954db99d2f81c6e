//! `wtgate load`: opens many sessions, has some of them publish at a paced total
//! rate, and reports what the receivers got — deliveries/s, one-way latency,
//! loss, duplicates, misrouting, connect time — so it measures speed and checks
//! correctness at once.
//!
//! # How a run goes
//! 1. Connect: client `i` (user `load-i`, a token minted here) opens a session on
//!    `--url` number `i % urls` and joins room `i % rooms` (or the rooms of
//!    `--rooms-per-client`, `--group-size`: [`plan::Layout`]); `--connect-rate`
//!    paces the connects, at most [`CONNECT_CONCURRENCY`] are in flight
//!    (`connect.rs`).
//! 2. Send: clients `0..senders` publish; message `n` of sender `k` is due at
//!    `(k + n·senders) / rate` s, so the total is even, not bursty
//!    ([`plan::Pacer`]). Each body starts with a [`plan::Stamp`]: room, sender,
//!    counter and send time.
//!    With `--churn-rate`, extra sessions come and go meanwhile (`churn.rs`).
//! 3. Receive: every client checks each message ([`tally::RoomTally`]): its room,
//!    whether it was seen before, the room's `seq` order, and records one-way
//!    latency (sender and receiver share this process's clock).
//! 4. Messages sent during `--warmup` are left out of every figure. After the last
//!    send the run waits (at most [`DRAIN`]) for what is still on its way, then
//!    counts: expected = measured sent × receivers in the room (streams: every
//!    member, the sender included, since the server echoes; datagrams: the others).
//!
//! `--transport` says what carries the sessions: WebTransport (`session.rs`:
//! a control stream, a stream per room, datagrams) or a WebSocket
//! (`websocket.rs`, PROTOCOL.md §16: one connection, frames behind lane bytes);
//! the per-message work in `traffic.rs` is the same for both.
//!
//! The pure parts ([`plan`], [`tally`], [`report`], [`wire`], [`procfs`]) have no
//! I/O; this module is the async shell around them.

mod churn;
mod connect;
pub mod plan;
pub mod procfs;
pub mod report;
mod session;
pub mod tally;
mod traffic;
mod websocket;
pub mod wire;

pub use connect::CONNECT_CONCURRENCY;
pub use report::{Mode, Report};

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use thiserror::Error;
use tokio_util::sync::CancellationToken;

use crate::auth;
use crate::client::{Transport, Trust};
use crate::protocol::MAX_DATAGRAM_BODY;
use connect::Dialer;
use plan::{Plan, Window, STAMP_LEN};
use procfs::ProcSample;
use report::{
    count_error, micros_histogram, room_histogram, ChurnReport, PresenceFrames, RunFacts,
    ServerUsage,
};
use tally::Counts;

/// Publishing clients when `--senders` is not given (fewer with fewer clients).
pub const DEFAULT_SENDERS: u32 = 10;
/// Sessions sharing one client UDP socket (a quinn endpoint): fewer sockets and
/// batched receives keep the load tester cheap.
pub const CLIENTS_PER_ENDPOINT: u32 = 64;
/// How long a run waits after its last send for reliable messages in flight.
pub const DRAIN: Duration = Duration::from_secs(5);
/// The same for datagrams (which are never retransmitted).
pub const DATAGRAM_DRAIN: Duration = Duration::from_secs(1);
/// Requested receive and send buffer of each client socket.
const SOCKET_BUFFER: usize = 4 << 20;
/// How far a sender that fell behind catches up; older sends are skipped.
const CATCH_UP: Duration = Duration::from_millis(50);
/// Largest body: the protocol's default frame limit leaves room for the header.
const MAX_BODY: usize = 60 * 1024;

/// `wtgate load`.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// Server URL with the namespace, e.g. https://127.0.0.1:4433/chat
    /// (repeatable: client i uses URL i % urls, so the servers must form one
    /// cluster unless every room's members land on one server).
    #[arg(long = "url", value_name = "URL", required = true)]
    pub urls: Vec<String>,
    /// What carries the sessions: WebTransport, or a WebSocket on the same
    /// port's TCP side (https:// URLs become wss://; ws:// for a `--dev`
    /// server's loopback HTTP listener).
    #[arg(
        long,
        env = "WTGATE_TRANSPORT",
        default_value = "webtransport",
        value_name = "webtransport|websocket"
    )]
    pub transport: Transport,
    /// Pin the server certificate's SHA-256 hash (hex), as printed by
    /// `wtgate serve` and `wtgate certs`.
    #[arg(long, value_name = "HEX", conflicts_with = "ca")]
    pub cert_hash: Option<String>,
    /// Trust certificates issued by this CA (PEM).
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Without --cert-hash or --ca, for a loopback server (the first --url): pin
    /// the development certificate in this directory if there is one (else: the
    /// system roots).
    #[arg(long, env = "WTGATE_CERTS_DIR", default_value = "certs")]
    pub certs_dir: PathBuf,
    /// HS256 secret of the server: the load tester mints its clients' tokens
    /// [default: the `serve --dev` secret in --certs-dir, if any].
    #[arg(long, env = "WTGATE_SECRET", hide_env_values = true)]
    pub token_secret: Option<String>,
    /// Sessions to open.
    #[arg(long, default_value_t = 100)]
    pub clients: u32,
    /// Rooms the clients spread over (client i joins room i % rooms).
    #[arg(long, default_value_t = 1)]
    pub rooms: u32,
    /// Rooms each client joins: client i joins rooms (i + j) % rooms for j < K,
    /// and a sender publishes to its rooms in turn; per-room latency is reported
    /// (with per-room streams, a loss in one room must not delay the others).
    #[arg(long, default_value_t = 1, value_name = "K")]
    pub rooms_per_client: u32,
    /// Centrifugo's benchmark shape instead of --rooms: every client joins a
    /// personal room and a group room of this many clients; senders publish to
    /// their group room (their 2020 run: groups of 10, 100-byte bodies).
    #[arg(long, value_name = "N", conflicts_with_all = ["rooms", "rooms_per_client"])]
    pub group_size: Option<u32>,
    /// Clients that publish (clients 0..senders, so spread over the rooms)
    /// [default: 10, or --clients when fewer].
    #[arg(long)]
    pub senders: Option<u32>,
    /// Messages per second in total, paced evenly over the senders.
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Measured sending time, e.g. 10s, 1m.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Sending before the measurement starts (left out of every figure).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Message body size in bytes (at least 24: the stamp).
    #[arg(long, default_value_t = 64)]
    pub body: usize,
    /// Reliable room streams, or volatile datagrams.
    #[arg(long, value_enum, default_value = "stream")]
    pub mode: Mode,
    /// New sessions per second while connecting (0: as fast as they complete,
    /// 256 at a time).
    #[arg(long, default_value_t = 0.0)]
    pub connect_rate: f64,
    /// Churn: extra sessions opened per second while the others chat (each joins
    /// a room, stays --churn-life, leaves); 0: none.
    #[arg(long, default_value_t = 0.0, value_name = "PER_SEC")]
    pub churn_rate: f64,
    /// How long a churn session stays.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub churn_life: Duration,
    /// Print exactly one JSON object on stdout (no progress bars).
    #[arg(long)]
    pub json: bool,
    /// Also report this server process's CPU per delivery and RSS from /proc
    /// (repeatable, one per server; summed). Same host only.
    #[arg(long = "server-pid", value_name = "PID")]
    pub server_pids: Vec<u32>,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    auth::parse_duration(s).map_err(|e| e.to_string())
}

/// Why a run could not start.
#[derive(Debug, Error)]
pub enum LoadError {
    /// The arguments do not make a run.
    #[error("{0}")]
    Args(String),
    /// A client socket could not be made.
    #[error(transparent)]
    Client(#[from] crate::client::ClientError),
}

fn args_error<T>(msg: impl Into<String>) -> Result<T, LoadError> {
    Err(LoadError::Args(msg.into()))
}

/// The arguments, checked.
struct Setup {
    plan: Plan,
    /// `--url`s as the transport dials them.
    urls: Vec<String>,
    trust: Trust,
    secret: String,
}

impl Setup {
    fn check(args: &LoadArgs) -> Result<Setup, LoadError> {
        let senders = args
            .senders
            .unwrap_or_else(|| args.clients.min(DEFAULT_SENDERS));
        let plan = match args.group_size {
            Some(group) => Plan::groups(args.clients, senders, group),
            None => Plan::spread(args.clients, args.rooms, senders, args.rooms_per_client),
        }
        .map_err(LoadError::Args)?;
        if args.urls.is_empty() {
            return args_error("give at least one --url");
        }
        let urls = match args.transport {
            Transport::WebTransport => args.urls.clone(),
            Transport::WebSocket => args
                .urls
                .iter()
                .map(|u| websocket::ws_url(u))
                .collect::<Result<_, _>>()
                .map_err(LoadError::Args)?,
        };
        if plan.senders > 0 && !(args.rate.is_finite() && args.rate > 0.0) {
            return args_error("--rate must be a positive number of messages per second");
        }
        if !(args.connect_rate.is_finite() && args.connect_rate >= 0.0) {
            return args_error("--connect-rate must be 0 (unpaced) or positive");
        }
        if !(args.churn_rate.is_finite() && args.churn_rate >= 0.0) {
            return args_error("--churn-rate must be 0 (none) or positive");
        }
        let max_body = match args.mode {
            Mode::Stream => MAX_BODY,
            Mode::Datagram => MAX_DATAGRAM_BODY,
        };
        if !(STAMP_LEN..=max_body).contains(&args.body) {
            return args_error(format!("--body must be {STAMP_LEN} to {max_body} bytes"));
        }
        if args.duration.is_zero() {
            return args_error("--duration must be positive");
        }
        let secret = match args.token_secret.as_deref() {
            Some(s) if !s.is_empty() => s.to_owned(),
            // Run from the directory of a `serve --dev`: its secret, as `wtgate token`.
            _ => match crate::auth::read_dev_secret(&args.certs_dir).ok().flatten() {
                Some(dev) => dev,
                None => {
                    return args_error(format!(
                        "no token secret: set --token-secret or WTGATE_SECRET (or run this \
                         from the directory of a `serve --dev`, which keeps its secret in \
                         {})",
                        args.certs_dir.join(crate::auth::DEV_SECRET_FILE).display()
                    ))
                }
            },
        };
        let trust = Trust::for_server(
            &args.urls[0],
            args.cert_hash.as_deref(),
            args.ca.as_deref(),
            &args.certs_dir,
        )?;
        Ok(Setup {
            plan,
            urls,
            trust,
            secret,
        })
    }
}

/// State the run's tasks share. Counters are atomics; the histogram and the
/// error map sit behind std mutexes taken once per received batch (or per rare
/// error), never across an `.await`.
struct Ctx {
    plan: Plan,
    window: Window,
    mode: Mode,
    rate: f64,
    body: usize,
    epoch: Instant,
    rooms: Vec<String>,
    /// Measured messages sent, per room.
    sent: Vec<AtomicU64>,
    /// Messages received (measured or not): the denominator of server CPU.
    arrived: AtomicU64,
    /// Measured deliveries.
    measured: AtomicU64,
    latency_us: Mutex<Histogram<u64>>,
    /// The same per room, made at a room's first delivery (fewer significant
    /// digits, and none for rooms nobody publishes to: there may be thousands).
    room_latency_us: Vec<Mutex<Option<Histogram<u64>>>>,
    errors: Mutex<BTreeMap<String, u64>>,
    /// `OnlineJoin`/`OnlineLeave` frames received on control streams.
    online_frames: AtomicU64,
    /// `PresenceJoin`/`PresenceLeave` frames received on room streams.
    presence_frames: AtomicU64,
}

impl Ctx {
    fn new(args: &LoadArgs, plan: Plan, rooms: Vec<String>, errors: BTreeMap<String, u64>) -> Ctx {
        let warmup_ns = args.warmup.as_nanos() as u64;
        Ctx {
            plan,
            window: Window {
                warmup_ns,
                end_ns: warmup_ns + args.duration.as_nanos() as u64,
            },
            mode: args.mode,
            rate: args.rate,
            body: args.body,
            epoch: Instant::now(),
            rooms,
            sent: (0..plan.rooms).map(|_| AtomicU64::new(0)).collect(),
            arrived: AtomicU64::new(0),
            measured: AtomicU64::new(0),
            latency_us: Mutex::new(micros_histogram()),
            room_latency_us: (0..plan.rooms).map(|_| Mutex::new(None)).collect(),
            errors: Mutex::new(errors),
            online_frames: AtomicU64::new(0),
            presence_frames: AtomicU64::new(0),
        }
    }

    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    fn error(&self, message: impl AsRef<str>, n: u64) {
        let mut errors = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        count_error(&mut errors, message.as_ref(), n);
    }

    /// Adds a received batch of `room` to the shared figures: one lock per batch.
    fn record(&self, room: u32, arrived: u64, latencies: &mut Vec<u64>) {
        if arrived > 0 {
            self.arrived.fetch_add(arrived, Ordering::Relaxed);
        }
        if latencies.is_empty() {
            return;
        }
        self.measured
            .fetch_add(latencies.len() as u64, Ordering::Relaxed);
        let mut per_room = self.room_latency_us[room as usize]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let per_room = per_room.get_or_insert_with(room_histogram);
        for &v in latencies.iter() {
            per_room.saturating_record(v.max(1));
        }
        let mut h = self.latency_us.lock().unwrap_or_else(|p| p.into_inner());
        for v in latencies.drain(..) {
            h.saturating_record(v.max(1));
        }
    }

    fn sent_total(&self) -> u64 {
        self.sent.iter().map(|s| s.load(Ordering::Relaxed)).sum()
    }

    /// Deliveries expected for what was sent so far.
    fn expected(&self, members: &[u64]) -> u64 {
        self.sent
            .iter()
            .zip(members)
            .map(|(s, &m)| s.load(Ordering::Relaxed) * self.mode.receivers(m))
            .sum()
    }
}

/// Samples the `--server-pid` processes (none: no samples); a process that
/// vanished reads as zero and is reported as an error.
struct Sampler {
    pids: Vec<u32>,
}

impl Sampler {
    fn sample(&self, errors: &mut BTreeMap<String, u64>) -> Option<ProcSample> {
        if self.pids.is_empty() {
            return None;
        }
        let samples: Vec<ProcSample> = self
            .pids
            .iter()
            .map(|&pid| {
                ProcSample::read(pid).unwrap_or_else(|_| {
                    count_error(errors, &format!("server pid {pid} unreadable"), 1);
                    ProcSample::default()
                })
            })
            .collect();
        Some(ProcSample::sum(&samples))
    }

    fn sample_ctx(&self, ctx: &Ctx) -> Option<ProcSample> {
        self.sample(&mut ctx.errors.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// Where progress bars go: nowhere with `--json`.
fn progress_target(json: bool) -> ProgressDrawTarget {
    if json {
        ProgressDrawTarget::hidden()
    } else {
        ProgressDrawTarget::stderr()
    }
}

/// Runs a load test as `args` says, drawing progress bars on stderr unless
/// `args.json`.
pub async fn run(args: &LoadArgs) -> Result<Report, LoadError> {
    let setup = Setup::check(args)?;
    let plan = setup.plan;
    let dialer = Dialer::new(args.transport, &setup.trust, plan.clients)?;
    let urls = dialer.reach(&setup.urls).await;
    let run_id: u16 = rand::random();
    let rooms: Vec<String> = (0..plan.rooms)
        .map(|r| format!("load-{run_id:04x}-{r}"))
        .collect();
    let sampler = Sampler {
        pids: args.server_pids.clone(),
    };
    let mut errors = BTreeMap::new();
    let before = sampler.sample(&mut errors);

    // 1. Connect and join.
    let target = progress_target(args.json);
    let connected =
        connect::connect_all(args, &setup, &dialer, &urls, &rooms, &mut errors, target).await?;
    let connected_sample = sampler.sample(&mut errors);
    let sessions = connected.clients.iter().flatten().count() as u64;
    let mut members = vec![0u64; plan.rooms as usize];
    for (i, _) in connected
        .clients
        .iter()
        .enumerate()
        .filter(|(_, c)| c.is_some())
    {
        for r in plan.rooms_of(i as u32) {
            members[r as usize] += 1;
        }
    }

    // 2. and 3. Send, receive (and churn), drain.
    let churn = churn_setup(args, &setup, &urls)?;
    let ctx = Arc::new(Ctx::new(args, plan, rooms, errors));
    let traffic = Traffic {
        ctx: &ctx,
        sampler: &sampler,
        dialer: &dialer,
        members: &members,
    };
    let mut measured = traffic.run(args, connected.clients, churn).await;

    let (w0, w1) = measured.window;
    measured.server = match (before, connected_sample, w0.0, w1.0) {
        (Some(b), Some(c), Some(s0), Some(s1)) => Some(ServerUsage::from_samples(
            b,
            c,
            (s0, s1),
            w1.1 - w0.1,
            sessions,
        )),
        _ => None,
    };
    let ctx = Arc::try_unwrap(ctx).unwrap_or_else(|_| unreachable!("every task has ended"));
    Ok(Report::build(ctx.into_facts(
        args,
        members,
        sessions,
        measured,
        connected.connect_us,
        connected.elapsed,
    )))
}

/// The churn of `--churn-rate`, with its own sockets, on the first URL.
fn churn_setup(
    args: &LoadArgs,
    setup: &Setup,
    urls: &[String],
) -> Result<Option<churn::Churn>, LoadError> {
    if args.churn_rate <= 0.0 {
        return Ok(None);
    }
    let concurrent = churn::Churn::concurrent(args.churn_rate, args.churn_life);
    Ok(Some(churn::Churn {
        rate: args.churn_rate,
        life: args.churn_life,
        url: urls[0].clone(),
        secret: setup.secret.clone(),
        dialer: Dialer::new(args.transport, &setup.trust, concurrent)?,
    }))
}

/// A server sample and the deliveries that had arrived then.
type Mark = (Option<ProcSample>, u64);

/// What phases 2 and 3 measured besides the shared [`Ctx`].
struct Measured {
    counts: Counts,
    /// At the end of the warmup and at the last send.
    window: (Mark, Mark),
    churn: Option<ChurnReport>,
    /// Filled in from the window and the samples around the connect phase.
    server: Option<ServerUsage>,
    /// The generator's own CPU over the window, as a share of one core.
    generator_cpu_percent: Option<f64>,
}

/// Phases 2 and 3 of a run: what they need besides the connected clients.
struct Traffic<'a> {
    ctx: &'a Arc<Ctx>,
    sampler: &'a Sampler,
    dialer: &'a Dialer,
    members: &'a [u64],
}

impl Traffic<'_> {
    /// Sends and receives until the last send, sampling the server at both ends
    /// of the measured window; drains, stops every task and closes the sessions.
    async fn run(
        &self,
        args: &LoadArgs,
        clients: Vec<Option<connect::Joined>>,
        churn: Option<churn::Churn>,
    ) -> Measured {
        let ctx = self.ctx;
        let stop = CancellationToken::new();
        let tasks = traffic::Tasks::spawn(ctx, clients, &stop);
        let churning = churn.map(|c| tokio::spawn(c.run(ctx.clone(), stop.clone())));
        let bar = ProgressBar::with_draw_target(
            Some(((args.warmup + args.duration).as_secs_f64() * 10.0).ceil() as u64),
            progress_target(args.json),
        );
        let ticker = tokio::spawn(tick(ctx.clone(), bar.clone(), stop.clone()));
        let mark = || {
            (
                self.sampler.sample_ctx(ctx),
                ctx.arrived.load(Ordering::Relaxed),
            )
        };
        tokio::time::sleep_until((ctx.epoch + args.warmup).into()).await;
        let start = mark();
        let own_start = (ProcSample::own_cpu(), Instant::now());
        tokio::time::sleep_until((ctx.epoch + args.warmup + args.duration).into()).await;
        let end = mark();
        let generator_cpu_percent = match (own_start, ProcSample::own_cpu()) {
            ((Some(cpu0), at), Some(cpu1)) => {
                Some(procfs::cpu_percent(cpu1.saturating_sub(cpu0), at.elapsed()))
            }
            _ => None,
        };

        drain(ctx, self.members).await;
        stop.cancel();
        let _ = ticker.await;
        bar.finish_and_clear();
        let counts = tasks.finish(self.dialer).await;
        let churn = match churning {
            Some(task) => task
                .await
                .ok()
                .map(|f| ChurnReport::new(args, f.sessions, f.failed, &f.connect_us)),
            None => None,
        };
        Measured {
            counts,
            window: (start, end),
            churn,
            server: None,
            generator_cpu_percent,
        }
    }
}

impl Ctx {
    /// Everything the run counted, for the report.
    fn into_facts(
        self,
        args: &LoadArgs,
        members_per_room: Vec<u64>,
        connected: u64,
        measured: Measured,
        connect_us: Histogram<u64>,
        connect_elapsed: Duration,
    ) -> RunFacts {
        let inner = |h: Mutex<Histogram<u64>>| h.into_inner().unwrap_or_else(|p| p.into_inner());
        RunFacts {
            plan: self.plan,
            rate: args.rate,
            duration: args.duration,
            warmup: args.warmup,
            body_bytes: args.body,
            mode: args.mode,
            transport: args.transport,
            sent_per_room: self
                .sent
                .iter()
                .map(|s| s.load(Ordering::Relaxed))
                .collect(),
            members_per_room,
            connected,
            counts: measured.counts,
            latency_us: inner(self.latency_us),
            room_latency_us: self
                .room_latency_us
                .into_iter()
                .filter_map(|h| h.into_inner().unwrap_or_else(|p| p.into_inner()))
                .collect(),
            churn: measured.churn,
            connect_us,
            connect_elapsed,
            errors: self.errors.into_inner().unwrap_or_else(|p| p.into_inner()),
            presence: PresenceFrames {
                namespace: self.online_frames.load(Ordering::Relaxed),
                room: self.presence_frames.load(Ordering::Relaxed),
            },
            server: measured.server,
            generator_cpu_percent: measured.generator_cpu_percent,
        }
    }
}

/// Waits (at most [`DRAIN`], [`DATAGRAM_DRAIN`] for datagrams) until every
/// expected delivery arrived.
async fn drain(ctx: &Ctx, members: &[u64]) {
    let drain = match ctx.mode {
        Mode::Stream => DRAIN,
        Mode::Datagram => DATAGRAM_DRAIN,
    };
    let until = Instant::now() + drain;
    while Instant::now() < until && ctx.measured.load(Ordering::Relaxed) < ctx.expected(members) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Draws the send phase's progress until `stop`.
async fn tick(ctx: Arc<Ctx>, bar: ProgressBar, stop: CancellationToken) {
    bar.set_style(
        ProgressStyle::with_template("{prefix:9} [{bar:40}] {msg}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        let t = ctx.epoch.elapsed().as_secs_f64();
        bar.set_position((t * 10.0) as u64);
        bar.set_prefix(if t < ctx.window.warmup_ns as f64 / 1e9 {
            "warming"
        } else if t < ctx.window.end_ns as f64 / 1e9 {
            "measuring"
        } else {
            "draining"
        });
        bar.set_message(format!(
            "{:.1}s · sent {} · delivered {}",
            t,
            ctx.sent_total(),
            ctx.measured.load(Ordering::Relaxed)
        ));
    }
}

/// A dual-stack client UDP socket with [`SOCKET_BUFFER`]-sized buffers: a burst
/// of one packet per member must not overflow the default ~208 KiB (the kernel
/// caps the size at `net.core.rmem_max`/`wmem_max`).
fn client_socket() -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_only_v6(false)?;
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    socket.set_nonblocking(true)?;
    let any = std::net::SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0));
    socket.bind(&any.into())?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cmd {
        #[command(flatten)]
        load: LoadArgs,
    }

    fn parse(args: &[&str]) -> Result<LoadArgs, clap::Error> {
        Cmd::try_parse_from(std::iter::once("load").chain(args.iter().copied())).map(|c| c.load)
    }

    #[test]
    fn flags_parse_with_defaults() {
        let a = parse(&[
            "--url",
            "https://a/chat",
            "--url",
            "https://b/chat",
            "--cert-hash",
            "ab",
        ])
        .unwrap();
        assert_eq!(a.urls.len(), 2);
        assert_eq!((a.clients, a.rooms, a.senders), (100, 1, None));
        assert_eq!(a.certs_dir, PathBuf::from("certs"));
        assert_eq!(a.duration, Duration::from_secs(10));
        assert_eq!(a.warmup, Duration::from_secs(2));
        assert_eq!((a.body, a.mode, a.json), (64, Mode::Stream, false));
        assert_eq!(a.transport, Transport::WebTransport);
        let a = parse(&["--url", "u", "--transport", "websocket"]).unwrap();
        assert_eq!(a.transport, Transport::WebSocket);
        assert!(parse(&["--url", "u", "--transport", "tcp"]).is_err());
        let a = parse(&[
            "--url",
            "https://a/chat",
            "--clients",
            "5",
            "--rooms",
            "2",
            "--senders",
            "1",
            "--rate",
            "2.5",
            "--duration",
            "1500ms",
            "--warmup",
            "0s",
            "--body",
            "100",
            "--mode",
            "datagram",
            "--connect-rate",
            "50",
            "--json",
            "--token-secret",
            "s",
            "--server-pid",
            "1",
            "--server-pid",
            "2",
        ])
        .unwrap();
        assert_eq!(a.duration, Duration::from_millis(1500));
        assert_eq!(a.mode, Mode::Datagram);
        assert_eq!(a.server_pids, [1, 2]);
        assert!(parse(&["--clients", "5"]).is_err(), "--url is required");
        assert!(parse(&["--url", "u", "--cert-hash", "x", "--ca", "f"]).is_err());
        assert!(parse(&["--url", "u", "--duration", "soon"]).is_err());
        assert!(
            parse(&["--url", "u", "--group-size", "10", "--rooms", "2"]).is_err(),
            "a group layout has no --rooms"
        );
        let a = parse(&["--url", "u", "--churn-rate", "5", "--churn-life", "2s"]).unwrap();
        assert_eq!((a.churn_rate, a.churn_life), (5.0, Duration::from_secs(2)));
    }

    #[test]
    fn setup_checks_the_arguments() {
        let ok = |extra: &[&str]| {
            let mut v = vec!["--url", "https://a/chat", "--token-secret", "s"];
            v.extend_from_slice(extra);
            Setup::check(&parse(&v).unwrap()).map(|_| ())
        };
        assert!(ok(&[]).is_ok());
        for bad in [
            &["--clients", "0"][..],
            &["--senders", "101"],
            &["--rate", "0"],
            &["--body", "23"],
            &["--mode", "datagram", "--body", "2000"],
            &["--duration", "0s"],
            &["--connect-rate=-1"],
            &["--rooms-per-client", "2"],
            &["--rooms", "2", "--rooms-per-client", "0"],
            &["--group-size", "0"],
            &["--churn-rate=-1"],
        ] {
            assert!(ok(bad).is_err(), "{bad:?} accepted");
        }
        assert!(
            ok(&["--senders", "0", "--rate", "0"]).is_ok(),
            "idle sessions need no rate"
        );
        let senders = |extra: &[&str]| {
            let mut v = vec!["--url", "https://a/chat", "--token-secret", "s"];
            v.extend_from_slice(extra);
            Setup::check(&parse(&v).unwrap()).map(|s| s.plan.senders)
        };
        assert_eq!(senders(&[]).unwrap(), 10);
        assert_eq!(senders(&["--clients", "5"]).unwrap(), 5, "defaults fit");
        assert_eq!(senders(&["--clients", "5", "--senders", "2"]).unwrap(), 2);
        let err = senders(&["--clients", "5", "--senders", "6"]).unwrap_err();
        assert!(err.to_string().contains("--senders"), "{err}");
        let urls = |extra: &[&str]| {
            let mut v = vec!["--token-secret", "s"];
            v.extend_from_slice(extra);
            Setup::check(&parse(&v).unwrap()).map(|s| s.urls)
        };
        assert_eq!(
            urls(&["--url", "https://a:1/chat", "--transport", "websocket"]).unwrap(),
            ["wss://a:1/chat"]
        );
        assert_eq!(
            urls(&["--url", "https://a:1/chat"]).unwrap(),
            ["https://a:1/chat"]
        );
        let err = urls(&["--url", "ftp://a/chat", "--transport", "websocket"]).unwrap_err();
        assert!(err.to_string().contains("ftp"), "{err}");
        let no_secret = LoadArgs {
            token_secret: None,
            ..parse(&["--url", "u"]).unwrap()
        };
        let err = Setup::check(&no_secret).err().unwrap().to_string();
        assert!(err.contains("token secret"), "{err}");
    }
}
