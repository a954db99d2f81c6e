//! What the publish hook costs: the publish → `Ack` round trip at 1,000 publishes
//! per second over loopback, in a namespace without hooks and in one whose publish
//! hook calls an HTTP backend (an axum server answering `{}` over kept-alive
//! connections), and the difference of their medians.
//!
//! ```sh
//! cargo run --release --example hooks_bench -- --rate 1000 --seconds 10
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::post;
use axum::{Json, Router};
use bytes::Bytes;
use clap::Parser;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use wtgate::auth::{mint, Claims};
use wtgate::client::{Client, Trust};
use wtgate::config::{Config, NamespaceConfig, Settings, TlsSource};
use wtgate::server::Server;

const SECRET: &str = "hooks-bench-secret-0123456789abcdef-0123";

#[derive(Parser, Debug)]
struct Args {
    /// Publishes per second, over all publishers.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Seconds measured per namespace (after a one-second warm-up).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Publishing sessions (the rate is split between them).
    #[arg(long, default_value_t = 10)]
    publishers: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let backend = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let backend_url = format!("http://{}/hooks", backend.local_addr()?);
    let app = Router::new().route(
        "/hooks/publish",
        post(|_: Json<Value>| async { Json(json!({})) }),
    );
    tokio::spawn(async move { axum::serve(backend, app).await });

    let mut config = Config::default();
    config.limits.publish_rate = 1e6;
    config.limits.publish_burst = 1_000_000;
    config.namespaces.clear();
    config
        .namespaces
        .insert("/plain".into(), NamespaceConfig::default());
    let mut hooked = NamespaceConfig::default();
    hooked.hooks.url = backend_url;
    hooked.hooks.publish = true;
    config.namespaces.insert("/hooked".into(), hooked);

    let dir = tempfile::tempdir()?;
    let settings = Settings {
        listen: "127.0.0.1:0".parse()?,
        tls: TlsSource::SelfSigned {
            dir: dir.path().to_owned(),
        },
        secret: SECRET.into(),
        dev: false,
        allowed_origins: vec![],
        config,
        data_dir: dir.path().join("data"),
        api_key: None,
        redis: None,
        node_id: None,
        hook_secret: None,
        engine: Default::default(),
    };
    let server = Server::bind(settings).await?;
    let port = server.local_addr().port();
    let trust = Trust::Hash(server.cert_hash().to_owned());
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(server.run(shutdown.clone()));

    println!(
        "publish → Ack round trip, {} publishes/s from {} sessions, {} s per namespace",
        args.rate, args.publishers, args.seconds
    );
    let mut medians = Vec::new();
    for ns in ["plain", "hooked"] {
        let url = format!("https://127.0.0.1:{port}/{ns}");
        let mut times = run(&url, &trust, &args).await?;
        times.sort();
        let at = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
        println!(
            "{ns:>7}: n={} p50={:?} p90={:?} p99={:?}",
            times.len(),
            at(0.5),
            at(0.9),
            at(0.99)
        );
        medians.push(at(0.5));
    }
    let overhead = medians[1].as_secs_f64() - medians[0].as_secs_f64();
    println!(
        "publish hook overhead at p50: {:.3} ms (target ≤ 1 ms)",
        overhead * 1000.0
    );
    shutdown.cancel();
    let _ = running.await;
    Ok(())
}

/// Round-trip times of the publishes after the warm-up.
async fn run(url: &str, trust: &Trust, args: &Args) -> anyhow::Result<Vec<Duration>> {
    let mut tasks = Vec::new();
    let interval = Duration::from_secs_f64(args.publishers as f64 / args.rate);
    let warm_up = Duration::from_secs(1);
    let total = warm_up + Duration::from_secs(args.seconds);
    for i in 0..args.publishers {
        let token = mint(
            SECRET.as_bytes(),
            &Claims::new(&format!("bench{i}"), unix_now(), 3600),
        )?;
        let client = Arc::new(Client::connect(url, &token, trust).await?);
        client.join("bench", None).await?;
        tasks.push(tokio::spawn(async move {
            let body = Bytes::from_static(br#"{"text":"a message of a typical size for a chat"}"#);
            let started = Instant::now();
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut times = Vec::new();
            while started.elapsed() < total {
                ticks.tick().await;
                let sent = Instant::now();
                client.publish("bench", body.clone()).await?;
                if started.elapsed() > warm_up {
                    times.push(sent.elapsed());
                }
            }
            anyhow::Ok(times)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    Ok(all)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
