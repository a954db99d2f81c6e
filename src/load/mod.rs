//! `wtgate load`: opens many sessions, has some of them publish at a paced total
//! rate, and reports what the receivers got — deliveries/s, one-way latency,
//! loss, duplicates, misrouting, connect time — so it measures speed and checks
//! correctness at once.
//!
//! # How a run goes
//! 1. Connect: client `i` (user `load-i`, a token minted here) opens a session on
//!    `--url` number `i % urls` and joins room `i % rooms`; `--connect-rate`
//!    paces the connects, at most [`CONNECT_CONCURRENCY`] are in flight.
//! 2. Send: clients `0..senders` publish; message `n` of sender `k` is due at
//!    `(k + n·senders) / rate` s, so the total is even, not bursty
//!    ([`plan::Pacer`]). Each body starts with a [`plan::Stamp`]: room, sender,
//!    counter and send time.
//! 3. Receive: every client checks each message ([`tally::RoomTally`]): its room,
//!    whether it was seen before, the room's `seq` order, and records one-way
//!    latency (sender and receiver share this process's clock).
//! 4. Messages sent during `--warmup` are left out of every figure. After the last
//!    send the run waits (at most [`DRAIN`]) for what is still on its way, then
//!    counts: expected = measured sent × receivers in the room (streams: every
//!    member, the sender included, since the server echoes; datagrams: the others).
//!
//! The pure parts ([`plan`], [`tally`], [`report`], [`wire`], [`procfs`]) have no
//! I/O; this module is the async shell around them.

mod connect;
pub mod plan;
pub mod procfs;
pub mod report;
mod session;
pub mod tally;
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
use wtransport::endpoint::endpoint_side;
use wtransport::{Connection, Endpoint, SendStream, VarInt};

use crate::auth;
use crate::client::Trust;
use crate::protocol::ServerFrame;
use crate::transport::FrameReader;
use plan::{Pacer, Plan, Stamp, Window, STAMP_LEN};
use procfs::ProcSample;
use report::{count_error, micros_histogram, PresenceFrames, RunFacts, ServerUsage};
use session::{Joined, RoomReadError};
use tally::{Counts, RoomTally, Verdict};

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
/// Largest datagram body (the server's default `max_datagram_body`).
const MAX_DATAGRAM_BODY: usize = 1024;

/// `wtgate load`.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// Server URL with the namespace, e.g. https://127.0.0.1:4433/chat
    /// (repeatable: client i uses URL i % urls, so the servers must form one
    /// cluster unless every room's members land on one server).
    #[arg(long = "url", value_name = "URL", required = true)]
    pub urls: Vec<String>,
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
    /// HS256 secret of the server: the load tester mints its clients' tokens.
    #[arg(long, env = "WTGATE_SECRET", hide_env_values = true)]
    pub token_secret: Option<String>,
    /// Sessions to open.
    #[arg(long, default_value_t = 100)]
    pub clients: u32,
    /// Rooms the clients spread over (client i joins room i % rooms).
    #[arg(long, default_value_t = 1)]
    pub rooms: u32,
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
    trust: Trust,
    secret: String,
}

impl Setup {
    fn check(args: &LoadArgs) -> Result<Setup, LoadError> {
        let senders = args
            .senders
            .unwrap_or_else(|| args.clients.min(DEFAULT_SENDERS));
        let plan = Plan::new(args.clients, args.rooms, senders).map_err(LoadError::Args)?;
        if args.urls.is_empty() {
            return args_error("give at least one --url");
        }
        if plan.senders > 0 && !(args.rate.is_finite() && args.rate > 0.0) {
            return args_error("--rate must be a positive number of messages per second");
        }
        if !(args.connect_rate.is_finite() && args.connect_rate >= 0.0) {
            return args_error("--connect-rate must be 0 (unpaced) or positive");
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
            _ => return args_error("no token secret: set --token-secret or WTGATE_SECRET"),
        };
        let trust = Trust::for_server(
            &args.urls[0],
            args.cert_hash.as_deref(),
            args.ca.as_deref(),
            &args.certs_dir,
        )?;
        Ok(Setup {
            plan,
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
    let endpoints = connect::endpoints(&setup.trust, plan.clients)?;
    let urls = connect::reach(&endpoints[0], &args.urls).await;
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
    let connected = connect::connect_all(
        args,
        &setup,
        &endpoints,
        &urls,
        &rooms,
        &mut errors,
        progress_target(args.json),
    )
    .await?;
    let connected_sample = sampler.sample(&mut errors);
    let mut members = vec![0u64; plan.rooms as usize];
    for (i, c) in connected.clients.iter().enumerate() {
        if c.is_some() {
            members[plan.room_of(i as u32) as usize] += 1;
        }
    }

    // 2. Send and receive, sampling the server at both ends of the window.
    let ctx = Arc::new(Ctx::new(args, plan, rooms, errors));
    let stop = CancellationToken::new();
    let tasks = Tasks::spawn(&ctx, connected.clients, &stop);
    let bar = ProgressBar::with_draw_target(
        Some(((args.warmup + args.duration).as_secs_f64() * 10.0).ceil() as u64),
        progress_target(args.json),
    );
    let ticker = tokio::spawn(tick(ctx.clone(), bar.clone(), stop.clone()));
    tokio::time::sleep_until((ctx.epoch + args.warmup).into()).await;
    let window_start = (
        sampler.sample_ctx(&ctx),
        ctx.arrived.load(Ordering::Relaxed),
    );
    tokio::time::sleep_until((ctx.epoch + args.warmup + args.duration).into()).await;
    let window_end = (
        sampler.sample_ctx(&ctx),
        ctx.arrived.load(Ordering::Relaxed),
    );

    // 3. Drain what is in flight, then stop.
    drain(&ctx, &members).await;
    stop.cancel();
    let _ = ticker.await;
    bar.finish_and_clear();
    let counts = tasks.finish(&endpoints).await;

    let server = match (before, connected_sample, window_start.0, window_end.0) {
        (Some(b), Some(c), Some(w0), Some(w1)) => Some(ServerUsage::from_samples(
            b,
            c,
            (w0, w1),
            window_end.1 - window_start.1,
            members.iter().sum(),
        )),
        _ => None,
    };
    let ctx = Arc::try_unwrap(ctx).unwrap_or_else(|_| unreachable!("every task has ended"));
    Ok(Report::build(RunFacts {
        plan,
        rate: args.rate,
        duration: args.duration,
        warmup: args.warmup,
        body_bytes: args.body,
        mode: args.mode,
        sent_per_room: ctx.sent.iter().map(|s| s.load(Ordering::Relaxed)).collect(),
        members_per_room: members,
        counts,
        latency_us: ctx
            .latency_us
            .into_inner()
            .unwrap_or_else(|p| p.into_inner()),
        connect_us: connected.connect_us,
        connect_elapsed: connected.elapsed,
        errors: ctx.errors.into_inner().unwrap_or_else(|p| p.into_inner()),
        presence: PresenceFrames {
            namespace: ctx.online_frames.load(Ordering::Relaxed),
            room: ctx.presence_frames.load(Ordering::Relaxed),
        },
        server,
    }))
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

/// The send and receive tasks of a run.
struct Tasks {
    senders: Vec<tokio::task::JoinHandle<()>>,
    receivers: Vec<tokio::task::JoinHandle<Counts>>,
    conns: Vec<Connection>,
}

impl Tasks {
    /// A receiver per connected client, and a sender per publishing one.
    fn spawn(ctx: &Arc<Ctx>, clients: Vec<Option<Joined>>, stop: &CancellationToken) -> Tasks {
        let mut t = Tasks {
            senders: Vec::new(),
            receivers: Vec::new(),
            conns: Vec::new(),
        };
        for (i, c) in clients.into_iter().enumerate() {
            let Some(j) = c else { continue };
            let i = i as u32;
            t.conns.push(j.conn.clone());
            ctx.online_frames
                .fetch_add(j.online_frames, Ordering::Relaxed);
            // A sender writes on the control stream; a receiver keeps it open (a
            // finished control stream ends the session).
            let keep = if ctx.plan.is_sender(i) {
                t.senders.push(tokio::spawn(send(
                    ctx.clone(),
                    i,
                    j.control,
                    j.conn.clone(),
                    j.handle,
                    stop.clone(),
                )));
                None
            } else {
                Some(j.control)
            };
            let receiver = Receiver {
                conn: j.conn,
                replies: j.replies,
                room: j.room,
                handle: j.handle,
                _control: keep,
            };
            t.receivers.push(tokio::spawn(receive(
                ctx.clone(),
                i,
                receiver,
                stop.clone(),
            )));
        }
        t
    }

    /// Waits for every task (after the stop), adds up the receivers' counts
    /// and closes the sessions.
    async fn finish(self, endpoints: &[Arc<Endpoint<endpoint_side::Client>>]) -> Counts {
        for s in self.senders {
            let _ = s.await;
        }
        let mut counts = Counts::default();
        for r in self.receivers {
            if let Ok(c) = r.await {
                counts.add(&c);
            }
        }
        for conn in &self.conns {
            conn.close(VarInt::from_u32(0), b"load done");
        }
        for e in endpoints {
            let _ = tokio::time::timeout(Duration::from_secs(1), e.wait_idle()).await;
        }
        counts
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

/// What a receiving task owns.
struct Receiver {
    conn: Connection,
    replies: FrameReader<wtransport::RecvStream>,
    room: session::RoomReader,
    handle: u32,
    /// A receiver's control stream, held open until the end.
    _control: Option<SendStream>,
}

/// Publishes on schedule until the end of the run.
async fn send(
    ctx: Arc<Ctx>,
    client: u32,
    mut control: SendStream,
    conn: Connection,
    handle: u32,
    stop: CancellationToken,
) {
    let plan = ctx.plan;
    let room = plan.room_of(client);
    let room_name = ctx.rooms[room as usize].clone();
    let mut pacer = Pacer::new(
        client,
        plan.senders,
        ctx.rate,
        ctx.window.end_ns,
        CATCH_UP.as_nanos() as u64,
    );
    let mut body = vec![0u8; ctx.body];
    let mut out = Vec::with_capacity(4096);
    let mut counter = 0u64;
    let mut req = 2u32; // 1 was the join
    while let Some(due) = pacer.next_due() {
        let at = ctx.epoch + Duration::from_nanos(due);
        tokio::select! {
            _ = tokio::time::sleep_until(at.into()) => {}
            _ = stop.cancelled() => return,
        }
        let now_ns = ctx.now_ns();
        let d = pacer.due(now_ns);
        if d.skipped > 0 {
            ctx.error("send skipped: sender behind", d.skipped);
        }
        let mut sent = 0;
        out.clear();
        for _ in 0..d.send {
            Stamp {
                room,
                sender: client,
                counter,
                sent_ns: now_ns,
            }
            .write(&mut body);
            counter += 1;
            match ctx.mode {
                Mode::Stream => {
                    wire::encode_publish(&mut out, req, &room_name, &body);
                    req = req.checked_add(1).unwrap_or(2);
                    sent += 1;
                }
                Mode::Datagram => {
                    let mut payload = Vec::with_capacity(body.len() + 8);
                    wire::encode_datagram_send(&mut payload, handle, &body);
                    match conn.send_datagram(payload) {
                        Ok(()) => sent += 1,
                        Err(e) => ctx.error(format!("datagram send: {e}"), 1),
                    }
                }
            }
        }
        if !out.is_empty() {
            tokio::select! {
                r = control.write_all(&out) => if let Err(e) = r {
                    ctx.error(format!("publish: {e}"), 1);
                    return;
                },
                _ = stop.cancelled() => return,
            }
        }
        if ctx.window.measures(now_ns) {
            ctx.sent[room as usize].fetch_add(sent, Ordering::Relaxed);
        }
    }
    // Finishing the control stream would end the session: hold it until the end.
    stop.cancelled().await;
    drop(control);
}

/// Reads the room stream (and datagrams, and replies) until the run stops.
async fn receive(ctx: Arc<Ctx>, client: u32, mut r: Receiver, stop: CancellationToken) -> Counts {
    let plan = ctx.plan;
    let mut tally = RoomTally::new(&plan, plan.room_of(client));
    let mut latencies: Vec<u64> = Vec::with_capacity(256);
    let datagrams = ctx.mode == Mode::Datagram;
    // Presence frames, added to the run's counts once at the end.
    let (mut presence, mut online) = (0u64, 0u64);
    let ended = loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => break None,
            filled = r.room.fill() => {
                if let Err(e) = filled {
                    break Some(room_error(&e));
                }
                let now_ns = ctx.now_ns();
                let mut arrived = 0;
                let failed = loop {
                    let frame = match r.room.next_frame() {
                        Ok(Some(frame)) => frame,
                        Ok(None) => break None,
                        Err(e) => break Some(room_error(&e)),
                    };
                    let m = match wire::parse_message(frame) {
                        Ok(Some(m)) => m,
                        Ok(None) => {
                            if wire::is_presence(frame) {
                                presence += 1;
                            }
                            continue;
                        }
                        Err(e) => break Some(format!("room stream: {e}")),
                    };
                    arrived += 1;
                    let v = tally.on_message(&plan, &ctx.window, Some(m.seq), m.body, now_ns);
                    if let Verdict::Measured { latency_ns } = v {
                        latencies.push(latency_ns / 1_000);
                    }
                };
                record(&ctx, arrived, &mut latencies);
                if let Some(kind) = failed {
                    break Some(kind);
                }
            }
            d = r.conn.receive_datagram(), if datagrams => {
                let d = match d {
                    Ok(d) => d,
                    Err(_) => break Some("datagram: connection lost".to_owned()),
                };
                let payload = d.payload();
                match wire::parse_datagram_recv(&payload) {
                    Ok(Some((handle, body))) => {
                        if handle != r.handle {
                            ctx.error("datagram for another handle", 1);
                        }
                        let now_ns = ctx.now_ns();
                        if let Verdict::Measured { latency_ns } =
                            tally.on_message(&plan, &ctx.window, None, body, now_ns)
                        {
                            latencies.push(latency_ns / 1_000);
                        }
                        record(&ctx, 1, &mut latencies);
                    }
                    Ok(None) => {}
                    Err(e) => ctx.error(format!("datagram: {e}"), 1),
                }
            }
            reply = r.replies.next::<ServerFrame>() => match reply {
                Ok(Some(ServerFrame::Error { code, .. })) => ctx.error(format!("server: {code:?}"), 1),
                Ok(Some(ServerFrame::GoAway { .. })) => ctx.error("server: GoAway", 1),
                Ok(Some(ServerFrame::OnlineJoin { .. } | ServerFrame::OnlineLeave { .. })) => online += 1,
                Ok(Some(_)) => {} // acks
                Ok(None) | Err(_) => break Some("control stream closed".to_owned()),
            },
        }
    };
    ctx.presence_frames.fetch_add(presence, Ordering::Relaxed);
    ctx.online_frames.fetch_add(online, Ordering::Relaxed);
    if let Some(kind) = ended {
        // Name the close code when the server closed the session.
        let closed = tokio::time::timeout(Duration::from_millis(200), r.conn.closed()).await;
        let kind = match closed {
            Ok(wtransport::error::ConnectionError::ApplicationClosed(c)) => {
                let code = crate::protocol::ErrorCode::from(c.code().into_inner() as u32);
                format!("closed by server: {code:?}")
            }
            _ => kind,
        };
        if !stop.is_cancelled() {
            ctx.error(kind, 1);
        }
    }
    *tally.counts()
}

fn room_error(e: &RoomReadError) -> String {
    match e {
        RoomReadError::Stream(_) => "room stream: connection lost".to_owned(),
        other => other.to_string(),
    }
}

/// Adds a received batch to the shared figures: one lock per batch.
fn record(ctx: &Ctx, arrived: u64, latencies: &mut Vec<u64>) {
    if arrived > 0 {
        ctx.arrived.fetch_add(arrived, Ordering::Relaxed);
    }
    if latencies.is_empty() {
        return;
    }
    ctx.measured
        .fetch_add(latencies.len() as u64, Ordering::Relaxed);
    let mut h = ctx.latency_us.lock().unwrap_or_else(|p| p.into_inner());
    for v in latencies.drain(..) {
        h.saturating_record(v.max(1));
    }
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
        let no_secret = LoadArgs {
            token_secret: None,
            ..parse(&["--url", "u"]).unwrap()
        };
        let err = Setup::check(&no_secret).err().unwrap().to_string();
        assert!(err.contains("token secret"), "{err}");
    }
}
