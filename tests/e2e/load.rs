//! `wtgate load` against an in-process server: the real load path, in-process and
//! through the binary.

use std::time::Duration;

use wtgate::client::Transport;
use wtgate::config::Config;
use wtgate::load::{self, LoadArgs, Mode};

use crate::common::*;

/// A server fit for load: publish limits raised, and no namespace-level online
/// events (every session would otherwise tell every other one it came online).
async fn load_server() -> TestServer {
    let mut config = Config::default();
    config.limits.publish_rate = 10_000.0;
    config.limits.publish_burst = 10_000;
    config.limits.max_sessions_per_user = 10_000;
    config.namespaces.get_mut("/chat").unwrap().online = false;
    TestServer::start_with(config).await
}

fn args(server: &TestServer) -> LoadArgs {
    LoadArgs {
        urls: vec![server.url("/chat")],
        transport: Transport::WebTransport,
        cert_hash: Some(server.hash.clone()),
        ca: None,
        certs_dir: "certs".into(),
        token_secret: Some(SECRET.into()),
        clients: 50,
        rooms: 5,
        rooms_per_client: 1,
        group_size: None,
        senders: Some(5),
        rate: 100.0,
        duration: Duration::from_secs(2),
        warmup: Duration::from_millis(500),
        body: 64,
        mode: Mode::Stream,
        connect_rate: 0.0,
        churn_rate: 0.0,
        churn_life: Duration::from_secs(1),
        json: true,
        server_pids: vec![],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_clients_lose_nothing() {
    let server = load_server().await;
    let a = args(&server);
    let report = run_in_time(&a).await;
    assert_eq!(report.connected, 50, "{}", report.to_text());
    // 100 msg/s for 2 s, give or take the edges of the window (and sends a busy
    // debug build skipped rather than burst).
    assert!(
        (100..=205).contains(&report.sent),
        "sent {}\n{}",
        report.sent,
        report.to_text()
    );
    // 10 members per room, the sender included (the server echoes).
    assert_eq!(report.expected, report.sent * 10);
    assert_eq!(report.delivered, report.expected, "{}", report.to_text());
    assert_eq!(
        (report.lost, report.duplicates, report.misrouted),
        (0, 0, 0)
    );
    let unexpected: Vec<_> = report
        .errors
        .keys()
        .filter(|k| !k.starts_with("send skipped"))
        .collect();
    assert!(unexpected.is_empty(), "{:?}", report.errors);
    assert!(report.passed);
    assert!(report.latency_ms.p50 > 0.0 && report.latency_ms.max >= report.latency_ms.p99);
    assert!(report.connect_ms.p50 > 0.0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datagrams_reach_the_others_and_loss_does_not_fail() {
    let mut config = Config::default();
    config.namespaces.get_mut("/chat").unwrap().online = false;
    let server = TestServer::start_with(config).await;
    let a = LoadArgs {
        clients: 10,
        rooms: 1,
        senders: Some(2),
        rate: 100.0,
        duration: Duration::from_secs(1),
        warmup: Duration::from_millis(200),
        mode: Mode::Datagram,
        ..args(&server)
    };
    let report = load::run(&a).await.unwrap();
    // Datagrams are not echoed: 9 receivers each.
    assert_eq!(report.expected, report.sent * 9);
    assert!(report.delivered > 0, "{}", report.to_text());
    assert_eq!((report.duplicates, report.misrouted), (0, 0));
    assert!(report.passed, "{}", report.to_text());
    server.stop().await;
}

/// Runs `wtgate load --json ARGS` (short: 1 s after a 200 ms warmup, the defaults
/// otherwise untouched) in `cwd` without WTGATE_* settings but `env`; asserts it
/// passed and returns its stdout.
async fn run_load(cwd: Option<&std::path::Path>, args: &[&str], env: &[(&str, &str)]) -> String {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_wtgate"));
    for (var, _) in std::env::vars().filter(|(k, _)| k.starts_with("WTGATE_")) {
        cmd.env_remove(var);
    }
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    cmd.args(["load", "--json", "--duration", "1s", "--warmup", "200ms"])
        .args(args)
        .envs(env.iter().copied())
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .expect("wtgate load ends in time")
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[tokio::test]
async fn the_cli_prints_one_json_object() {
    let server = load_server().await;
    let url = server.url("/chat");
    let stdout = run_load(
        None,
        &[
            "--url",
            &url,
            "--cert-hash",
            &server.hash,
            "--token-secret",
            SECRET,
            "--clients",
            "10",
            "--rooms",
            "2",
            "--senders",
            "2",
            "--rate",
            "40",
        ],
        &[],
    )
    .await;
    assert_eq!(stdout.trim().lines().count(), 1, "one line: {stdout}");
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    wtgate::load::report::check_json_shape(&v).unwrap_or_else(|e| panic!("{e}: {v}"));
    assert_eq!(v["clients"], 10);
    assert_eq!(v["mode"], "stream");
    assert_eq!(v["lost"], 0);
    assert!(v["delivered"].as_u64().unwrap() > 0);
    assert_eq!(v["delivered"], v["expected"]);
    server.stop().await;
}

/// Every delivery of a run, checked: nothing lost, duplicated or misrouted and
/// no error but skipped sends.
fn assert_clean(report: &wtgate::load::Report) {
    let text = report.to_text();
    assert!(report.sent > 0, "{text}");
    assert_eq!(report.delivered, report.expected, "{text}");
    assert_eq!((report.duplicates, report.misrouted), (0, 0), "{text}");
    let unexpected: Vec<_> = report
        .errors
        .keys()
        .filter(|k| !k.starts_with("send skipped"))
        .collect();
    assert!(unexpected.is_empty(), "{text}");
    assert!(report.passed, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_in_several_rooms_get_every_room_and_per_room_latency() {
    let server = load_server().await;
    let a = LoadArgs {
        clients: 30,
        rooms: 6,
        rooms_per_client: 3,
        senders: Some(6),
        ..args(&server)
    };
    let report = load::run(&a).await.unwrap();
    assert_clean(&report);
    // 6 rooms × 15 members (30 clients in 3 rooms each), the senders included.
    assert_eq!(report.expected, report.sent * 15, "{}", report.to_text());
    assert_eq!(report.rooms_per_client, 3);
    assert_eq!(report.connected, 30, "sessions, not memberships");
    assert_eq!(report.room_p99_ms.rooms, 6, "{}", report.to_text());
    assert!(report.room_p99_ms.min > 0.0 && report.room_p99_ms.max >= report.room_p99_ms.median);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn centrifugo_shape_personal_and_group_rooms() {
    let server = load_server().await;
    let a = LoadArgs {
        clients: 30,
        group_size: Some(10),
        senders: Some(10),
        body: 100,
        ..args(&server)
    };
    let report = load::run(&a).await.unwrap();
    assert_clean(&report);
    assert_eq!(report.rooms, 30 + 3, "personal rooms and 3 groups");
    assert_eq!(report.connected, 30);
    // Senders 0..10 all publish into group 0 (its 10 members).
    assert_eq!(report.expected, report.sent * 10, "{}", report.to_text());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_sessions_come_and_go_while_the_others_chat() {
    let server = load_server().await;
    let a = LoadArgs {
        clients: 20,
        rooms: 2,
        senders: Some(2),
        churn_rate: 20.0,
        churn_life: Duration::from_millis(300),
        ..args(&server)
    };
    let report = load::run(&a).await.unwrap();
    assert_clean(&report);
    let churn = report.churn.expect("a churn report");
    // 20/s over the 2 s window, give or take its edges on a busy machine.
    assert!((20..=45).contains(&churn.sessions), "{}", report.to_text());
    assert_eq!(churn.failed, 0, "{}", report.to_text());
    assert!(churn.connect_ms.p50 > 0.0);
    assert!(report.to_text().contains("churn"));
    server.stop().await;
}

/// A server with the default configuration (namespace `online` and room
/// `presence` on, default limits), on `listen`, with its certificate in
/// `dir/certs` as `serve --dev` makes it in the working directory.
async fn default_server_on(listen: &str, dir: tempfile::TempDir) -> TestServer {
    let certs = dir.path().join("certs");
    let data = dir.path().join("data");
    TestServer::start_adjusted(dir, data, Config::default(), |s| {
        s.listen = listen.parse().unwrap();
        s.tls = wtgate::config::TlsSource::SelfSigned { dir: certs };
    })
    .await
}

/// `load::run`, which must end within 30 s.
async fn run_in_time(a: &LoadArgs) -> wtgate::load::Report {
    tokio::time::timeout(Duration::from_secs(30), load::run(a))
        .await
        .expect("the run ends in time")
        .expect("the run starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_default_config_server_passes_and_presence_is_counted_not_an_error() {
    let server = TestServer::start().await;
    let a = LoadArgs {
        senders: None,
        ..args(&server)
    };
    let report = run_in_time(&a).await;
    let text = report.to_text();
    assert_eq!(report.connected, 50, "{text}");
    assert_eq!(report.senders, 10, "the default");
    assert!(report.sent > 0, "{text}");
    assert_eq!(report.delivered, report.expected, "{text}");
    // Each session hears the ones that came online after it, and each room
    // member the ones that joined after it.
    assert!(report.presence_frames.namespace > 0, "{text}");
    assert!(report.presence_frames.room > 0, "{text}");
    let unexpected: Vec<_> = report
        .errors
        .keys()
        .filter(|k| !k.starts_with("send skipped"))
        .collect();
    assert!(unexpected.is_empty(), "{text}");
    assert!(report.passed, "{text}");
    assert!(text.contains("presence"), "{text}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_client_reaches_localhost_on_ipv6_loopback() {
    let server = default_server_on("[::1]:0", tempfile::tempdir().unwrap()).await;
    let url = format!("https://localhost:{}/chat", server.addr.port());
    let mut alice = wtgate::client::Client::connect(&url, &server.token("alice"), &server.trust())
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    assert_eq!(alice.welcome().user, "alice");
    alice.join("lobby", None).await.unwrap();
    alice.publish("lobby", "hi".into()).await.unwrap();
    let body = expect_event(&mut alice, "own message", |e| match e {
        wtgate::client::Event::Message { body, .. } => Some(body.clone()),
        _ => None,
    })
    .await;
    assert_eq!(&body[..], b"hi");
    server.stop().await;
}

/// The dev path: `serve --dev` in a directory, then `wtgate load --url
/// https://localhost:PORT/chat` from the same directory with the secret in
/// `WTGATE_SECRET` and no other connection flag: localhost on `[::1]`, the
/// development certificate from `./certs`, default senders for few clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_runs_against_a_dev_style_server_with_no_other_flag() {
    let v = cli_against_a_dev_style_server(&["--clients", "5"], &[]).await;
    assert_eq!(
        (v["clients"].as_u64(), v["senders"].as_u64()),
        (Some(5), Some(5))
    );
    assert_eq!(v["connected"], 5, "{v}");
    assert!(
        v["presence_frames"]["namespace"].as_u64().unwrap() > 0,
        "{v}"
    );
}

/// Runs `wtgate load --url https://localhost:PORT/chat ARGS` from the directory
/// of a default-config server on `[::1]` (its development certificate in
/// `./certs`), with `WTGATE_SECRET` and `env`; its JSON report, which delivered
/// every message it expected. The process is killed if the test fails.
async fn cli_against_a_dev_style_server(args: &[&str], env: &[(&str, &str)]) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path().to_owned();
    let server = default_server_on("[::1]:0", dir).await;
    // WebTransport and WebSockets share the port number (UDP and TCP).
    let url = format!("https://localhost:{}/chat", server.addr.port());
    let mut argv = vec!["--url", url.as_str()];
    argv.extend_from_slice(args);
    let mut vars = vec![("WTGATE_SECRET", SECRET)];
    vars.extend_from_slice(env);
    let stdout = run_load(Some(&cwd), &argv, &vars).await;
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert!(v["delivered"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(v["delivered"], v["expected"], "{v}");
    server.stop().await;
    v
}

/// The same run over WebSockets (`--transport websocket`): `https://` on the
/// server API's port becomes `wss://`; a default-config server, so room presence
/// and namespace presence frames come on lanes 1 and 0 between the messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_clients_lose_nothing_on_a_default_server() {
    let server = TestServer::start().await;
    let a = LoadArgs {
        urls: vec![format!("https://127.0.0.1:{}/chat", server.api.port())],
        transport: Transport::WebSocket,
        ..args(&server)
    };
    let report = run_in_time(&a).await;
    let text = report.to_text();
    assert_eq!(report.connected, 50, "{text}");
    assert_eq!(report.transport, Transport::WebSocket);
    assert!(text.contains("over WebSocket"), "{text}");
    // 10 members per room, the sender included (the server echoes).
    assert_eq!(report.expected, report.sent * 10, "{text}");
    assert_clean(&report);
    assert!(report.presence_frames.namespace > 0, "{text}");
    assert!(report.presence_frames.room > 0, "{text}");
    assert!(report.connect_ms.p50 > 0.0, "{text}");
    server.stop().await;
}

/// Volatile frames on lane 3 (the server's datagrams over a WebSocket), clients
/// in several rooms, and churn sessions that come and go over WebSockets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_datagrams_several_rooms_and_churn() {
    let server = load_server().await;
    let ws = |a: LoadArgs| LoadArgs {
        urls: vec![server.ws_url("/chat")],
        transport: Transport::WebSocket,
        ..a
    };
    let datagrams = ws(LoadArgs {
        clients: 10,
        rooms: 1,
        senders: Some(2),
        duration: Duration::from_secs(1),
        warmup: Duration::from_millis(200),
        mode: Mode::Datagram,
        ..args(&server)
    });
    let report = load::run(&datagrams).await.unwrap();
    // Not echoed: 9 receivers each; the server drops volatile frames only for a
    // backed-up socket, which this light run never has.
    assert_eq!(report.expected, report.sent * 9, "{}", report.to_text());
    assert_clean(&report);

    let rooms_and_churn = ws(LoadArgs {
        clients: 30,
        rooms: 6,
        rooms_per_client: 3,
        senders: Some(6),
        churn_rate: 20.0,
        churn_life: Duration::from_millis(300),
        ..args(&server)
    });
    let report = load::run(&rooms_and_churn).await.unwrap();
    assert_clean(&report);
    assert_eq!(report.expected, report.sent * 15, "{}", report.to_text());
    assert_eq!(report.room_p99_ms.rooms, 6, "{}", report.to_text());
    let churn = report.churn.expect("a churn report");
    assert!((20..=45).contains(&churn.sessions), "{}", report.to_text());
    assert_eq!(churn.failed, 0, "{}", report.to_text());
    server.stop().await;
}

/// `wtgate load` with `WTGATE_TRANSPORT=websocket` and no other connection
/// flag against a default-config `serve --dev`-style server on `[::1]`:
/// `https://localhost:PORT` is probed to `wss://[::1]:PORT`, the development
/// certificate in `./certs` is pinned. The process is killed if the test fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_runs_over_websockets_against_a_default_server() {
    let v = cli_against_a_dev_style_server(
        &["--clients", "10", "--rooms", "2"],
        &[("WTGATE_TRANSPORT", "websocket")],
    )
    .await;
    wtgate::load::report::check_json_shape(&v).unwrap_or_else(|e| panic!("{e}: {v}"));
    assert_eq!(v["transport"], "websocket", "{v}");
    assert_eq!(v["connected"], 10, "{v}");
    assert_eq!(v["errors"], serde_json::json!({}), "{v}");
    assert_eq!(v["passed"], true, "{v}");
}
