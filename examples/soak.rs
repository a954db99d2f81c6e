//! Soak test: many clients churning (connect, listen, drop, reconnect with `since`)
//! against a real `wtgate serve` for a bounded time, while stable publishers keep
//! every room busy. Reports the server's RSS over time, acknowledged messages a
//! client never got, and sessions left behind. Loopback only.
//!
//! ```sh
//! cargo build --release && cargo run --release --example soak -- --clients 2000 --minutes 10
//! ```

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::Parser;
use rand::Rng;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use wtgate::api_client::ApiClient;
use wtgate::auth::{mint, Claims};
use wtgate::client::{Client, Event, Trust};
use wtgate::protocol::Since;

const SECRET: &str = "soak-secret-0123456789abcdef-0123456789";
const API_KEY: &str = "soak-api-key";

#[derive(Parser, Debug)]
struct Args {
    /// Churning clients.
    #[arg(long, default_value_t = 2000)]
    clients: usize,
    /// Rooms (one stable publisher each).
    #[arg(long, default_value_t = 20)]
    rooms: usize,
    /// Total publishes per second over all rooms.
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
    /// How long to run.
    #[arg(long, default_value_t = 10.0)]
    minutes: f64,
    /// Longest time a client stays connected before it drops (seconds).
    #[arg(long, default_value_t = 30.0)]
    max_life: f64,
    /// New connections per second while the clients first connect.
    #[arg(long, default_value_t = 500.0)]
    connect_rate: f64,
    /// The wtgate binary (default: next to this example's build directory).
    #[arg(long)]
    wtgate: Option<PathBuf>,
}

/// Per room: every seq a publisher got acknowledged.
type Acked = Arc<Vec<Mutex<BTreeSet<u64>>>>;

/// What one churning client saw.
#[derive(Default)]
struct Seen {
    room: usize,
    /// Seq of the room when the client first joined: it owes everything after.
    from: u64,
    got: BTreeSet<u64>,
    unrecovered: u64,
}

#[derive(Default)]
struct Counters {
    reconnects: AtomicU64,
    errors: AtomicU64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let binary = match &args.wtgate {
        Some(p) => p.clone(),
        None => std::env::current_exe()?
            .parent()
            .and_then(|p| p.parent())
            .context("no build directory")?
            .join("wtgate"),
    };
    let config = dir.path().join("soak.toml");
    std::fs::write(
        &config,
        "[limits]\npublish_rate = 100000\npublish_burst = 100000\nmax_sessions_per_user = 100000\n\
         connect_rate_per_ip = 100000\nconnect_burst_per_ip = 100000\n\
         [namespaces.chat]\nonline = false\n[namespaces.notifications]\ninbox = true\npresence = false\n\
         online = false\nclient_publish = false\ndatagrams = false\n",
    )?;
    let mut server = Command::new(&binary)
        .args(["serve", "--listen", "127.0.0.1:0", "--secret", SECRET])
        .args(["--api-key", API_KEY, "--log", "warn"])
        .arg("--config")
        .arg(&config)
        .arg("--certs-dir")
        .arg(dir.path().join("certs"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let pid = server.id().context("server pid")?;
    let mut lines = BufReader::new(server.stdout.take().unwrap()).lines();
    let (mut addr, mut hash) = (None, None);
    while addr.is_none() || hash.is_none() {
        let Some(line) = lines.next_line().await? else {
            bail!("the server exited")
        };
        if let Some(rest) = line.strip_prefix("wtgate listening on https://") {
            addr = rest.split_whitespace().next().map(str::to_owned);
        }
        if let Some(rest) = line.strip_prefix("certificate sha-256: ") {
            hash = Some(rest.trim().to_owned());
        }
    }
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let (addr, hash) = (addr.unwrap(), hash.unwrap());
    let url = format!("https://{addr}/chat");
    let trust = Trust::Hash(hash);
    let api = ApiClient::new(&format!("https://{addr}"), Some(API_KEY), &trust)?;
    println!(
        "server pid {pid} on {addr}; {} clients, {} rooms, {} msg/s, {} min",
        args.clients, args.rooms, args.rate, args.minutes
    );

    let deadline = Instant::now() + Duration::from_secs_f64(args.minutes * 60.0);
    let acked: Acked = Arc::new((0..args.rooms).map(|_| Mutex::default()).collect());
    let counters = Arc::new(Counters::default());

    // Stable publishers, one per room, paced.
    let mut publishers = Vec::new();
    for r in 0..args.rooms {
        let client = Client::connect(&url, &token(&format!("pub{r}")), &trust).await?;
        client.join(&room(r), None).await?;
        let acked = acked.clone();
        let period = Duration::from_secs_f64(args.rooms as f64 / args.rate);
        let counters = counters.clone();
        publishers.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            while Instant::now() < deadline {
                tick.tick().await;
                match client.publish(&room(r), Bytes::from_static(b"soak")).await {
                    Ok(seq) => {
                        acked[r].lock().unwrap().insert(seq);
                    }
                    Err(_) => {
                        counters.errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            client.close().await;
        }));
    }

    // Churning clients.
    let mut tasks = Vec::new();
    let gap = Duration::from_secs_f64(1.0 / args.connect_rate);
    for i in 0..args.clients {
        let (url, trust, counters) = (url.clone(), trust.clone(), counters.clone());
        let max_life = args.max_life;
        let r = i % args.rooms;
        tasks.push(tokio::spawn(churn(
            url, trust, r, deadline, max_life, counters,
        )));
        tokio::time::sleep(gap).await;
    }

    // RSS over time.
    let sampler = tokio::spawn(async move {
        let started = Instant::now();
        let mut samples = Vec::new();
        while Instant::now() < deadline {
            let rss = rss_kib(pid);
            let sessions = api.health().await.map(|h| h.sessions).unwrap_or(0);
            println!(
                "t={:>5.0}s  sessions={sessions:>6}  server RSS={:>8.1} MiB",
                started.elapsed().as_secs_f64(),
                rss as f64 / 1024.0
            );
            samples.push(rss);
            tokio::time::sleep(Duration::from_secs(10)).await;
        }
        (samples, api)
    });

    let mut seen = Vec::new();
    for t in tasks {
        seen.push(t.await?);
    }
    for p in publishers {
        p.await?;
    }
    let (samples, api) = sampler.await?;

    // Every acknowledged message after a client's first join must have reached it.
    let mut lost = 0u64;
    let mut unrecovered = 0u64;
    for s in &seen {
        let acked = acked[s.room].lock().unwrap();
        let last = s.got.iter().next_back().copied().unwrap_or(s.from);
        lost += acked
            .range(s.from + 1..=last)
            .filter(|seq| !s.got.contains(seq))
            .count() as u64;
        unrecovered += s.unrecovered;
    }
    // Clients that vanished without a close are only noticed by the server's idle
    // timeout (30 s); a session still open after that is stuck.
    let waited = Instant::now();
    let mut left = u64::MAX;
    while waited.elapsed() < Duration::from_secs(40) {
        left = api.health().await.map(|h| h.sessions).unwrap_or(u64::MAX);
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    println!(
        "sessions gone {:.0} s after the last client",
        waited.elapsed().as_secs_f64()
    );
    let first = samples
        .get(samples.len().min(3).saturating_sub(1))
        .copied()
        .unwrap_or(0);
    let peak = samples.iter().copied().max().unwrap_or(0);
    let end = samples.last().copied().unwrap_or(0);
    println!(
        "\nreconnects: {}",
        counters.reconnects.load(Ordering::Relaxed)
    );
    println!(
        "acknowledged messages: {}",
        acked.iter().map(|a| a.lock().unwrap().len()).sum::<usize>()
    );
    println!("lost acknowledged messages: {lost}");
    println!("rejoins not recovered (history too short): {unrecovered}");
    println!("errors: {}", counters.errors.load(Ordering::Relaxed));
    println!("sessions left 40 s after everyone closed or vanished: {left}");
    println!(
        "server RSS: after warm-up {:.1} MiB, peak {:.1} MiB, end {:.1} MiB",
        first as f64 / 1024.0,
        peak as f64 / 1024.0,
        end as f64 / 1024.0
    );
    server.kill().await.ok();
    if lost > 0 || left > 0 {
        bail!("soak failed: {lost} lost, {left} sessions left");
    }
    Ok(())
}

fn room(r: usize) -> String {
    format!("soak-{r}")
}

fn token(user: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    mint(SECRET.as_bytes(), &Claims::new(user, now, 24 * 3600)).unwrap()
}

/// One client: connect, listen for a random while, drop, reconnect with `since`.
async fn churn(
    url: String,
    trust: Trust,
    r: usize,
    deadline: Instant,
    max_life: f64,
    counters: Arc<Counters>,
) -> Seen {
    let mut seen = Seen {
        room: r,
        ..Seen::default()
    };
    let mut position: Option<Since> = None;
    let user = format!("u{}", rand::thread_rng().gen::<u32>());
    while Instant::now() < deadline {
        let client = match Client::connect(&url, &token(&user), &trust).await {
            Ok(c) => c,
            Err(_) => {
                counters.errors.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let mut client = client;
        let joined = match client.join(&room(r), position).await {
            Ok(j) => j,
            Err(_) => {
                counters.errors.fetch_add(1, Ordering::Relaxed);
                continue;
            }
        };
        match position {
            None => seen.from = joined.seq,
            Some(_) if !joined.recovered => seen.unrecovered += 1,
            Some(_) => {}
        }
        let life = Duration::from_secs_f64(rand::thread_rng().gen_range(1.0..max_life.max(1.1)));
        let until = (Instant::now() + life).min(deadline);
        let mut last = position.map(|p| p.seq).unwrap_or(joined.seq);
        while let Ok(Some(event)) = tokio::time::timeout_at(until.into(), client.next_event()).await
        {
            if let Event::Message { seq, .. } = event {
                seen.got.insert(seq);
                last = last.max(seq);
            }
        }
        position = Some(Since {
            epoch: joined.epoch,
            seq: last,
        });
        // Half leave politely, half just vanish.
        let polite = rand::thread_rng().gen_bool(0.5);
        if polite {
            client.close().await;
        }
        drop(client);
        counters.reconnects.fetch_add(1, Ordering::Relaxed);
        let pause = rand::thread_rng().gen_range(0..2000);
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
    seen
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}
