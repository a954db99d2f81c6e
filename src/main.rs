//! The `wtgate` command: see [`cli`].

mod cli;

use anyhow::Context;
use clap::Parser;
use tracing_subscriber::EnvFilter;

use cli::{Cli, Command, SecretSource, ServeArgs};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use wtgate::demo::{self, DemoState};
use wtgate::server::Server;

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        // `{:#}` prints the cause chain on one line, without a backtrace.
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

#[tokio::main]
async fn run(cli: Cli) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(&cli.log).with_context(|| format!("--log {:?}", cli.log))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();

    match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Certs(args) => cli::run_certs(args),
        Command::Token(args) => cli::run_token(args),
        Command::Load(args) => load(args).await,
        Command::Notify(args) => cli::run_notify(args).await,
        Command::Publish(args) => cli::run_publish(args).await,
        Command::Broadcast(args) => cli::run_broadcast(args).await,
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let demo_addr = args.demo_addr()?;
    let (settings, secret_source) = args.into_settings()?;
    let secret = settings.secret.clone();
    let api_access = match (&settings.api_key, settings.dev) {
        (Some(_), _) => "bearer key required",
        (None, true) => "open: dev mode without WTGATE_API_KEY",
        (None, false) => "disabled without WTGATE_API_KEY; /healthz and /metrics only",
    };
    let server = Server::bind(settings).await?;
    let addr = server.local_addr();
    println!("wtgate listening on https://{addr} (UDP, WebTransport)");
    println!(
        "server API on https://{}/api/ (TCP; {api_access})",
        server.api_addr()
    );
    println!("certificate sha-256: {}", server.cert_hash());
    if let SecretSource::DevFile { path, made } = &secret_source {
        let kept = if *made {
            "made now"
        } else {
            "kept from an earlier run"
        };
        println!("dev token secret: {secret} ({}, {kept})", path.display());
        println!("from this directory, `wtgate token` and `wtgate load` use it:");
        println!("  wtgate token --user alice");
        println!(
            "  wtgate load --url https://{}/chat --clients 20 --duration 10s",
            dev_authority(addr)
        );
    }
    let shutdown = CancellationToken::new();
    let demo = match demo_addr {
        Some(demo_at) => {
            let listener = TcpListener::bind(demo_at).await.with_context(|| {
                format!(
                    "demo page: cannot listen on {demo_at} (TCP): pass --demo-listen with another \
                     loopback port (127.0.0.1:0 picks a free one)"
                )
            })?;
            println!("demo page: http://{}/", listener.local_addr()?);
            let state = DemoState::new(server.cert_hash(), addr, secret);
            let sessions = wtgate::server::websocket_router(server.gateway());
            Some(tokio::spawn(demo::serve(
                listener,
                state,
                sessions,
                shutdown.clone(),
            )))
        }
        None => None,
    };
    tokio::spawn(stop_on_signal(shutdown.clone()));
    server.run(shutdown).await;
    if let Some(task) = demo {
        task.await.context("demo page task")?.context("demo page")?;
    }
    Ok(())
}

/// `localhost:PORT` for the default dev address (what a browser and the CLI reach
/// as `localhost`), else the address itself.
fn dev_authority(addr: std::net::SocketAddr) -> String {
    if addr.ip() == std::net::Ipv6Addr::LOCALHOST {
        format!("localhost:{}", addr.port())
    } else {
        addr.to_string()
    }
}

/// Runs `wtgate load`; exits with status 1 when the run failed its checks.
async fn load(args: cli::LoadArgs) -> anyhow::Result<()> {
    // A current-thread runtime on a thread of its own: the load tester's tasks
    // never hop threads, which is what costs least when it is pinned to one core.
    let json = args.json;
    let report = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| Ok(rt.block_on(wtgate::load::run(&args))?))
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the load test panicked"))??;
    if json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_text());
    }
    if !report.passed {
        std::process::exit(1);
    }
    Ok(())
}

/// Cancels `shutdown` on SIGINT or SIGTERM.
async fn stop_on_signal(shutdown: CancellationToken) {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("signal received, shutting down");
    shutdown.cancel();
}
