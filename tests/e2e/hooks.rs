//! Backend hooks end to end: clients over QUIC, the server's real HTTP client,
//! and a real HTTP backend (an axum server on 127.0.0.1:0 in the test process)
//! that checks every request's signature and headers.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use bytes::Bytes;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use wtgate::client::{Client, ClientError, Event};
use wtgate::config::{Config, OnUnavailable};
use wtgate::hooks;
use wtgate::protocol::ErrorCode;

use crate::common::*;

/// What the backend saw.
#[derive(Default)]
struct Seen {
    /// Calls by hook.
    calls: Mutex<Vec<(String, Value)>>,
    /// Requests whose signature or headers did not check out.
    bad: AtomicUsize,
    /// TCP connections accepted.
    connections: AtomicUsize,
    /// RPCs being served right now, and the most at once.
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

/// A backend on 127.0.0.1:0, stopped on drop.
struct Backend {
    url: String,
    seen: Arc<Seen>,
    stop: CancellationToken,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Backend {
    async fn start() -> Backend {
        let seen = Arc::new(Seen::default());
        let app = Router::new()
            .route("/hooks/{hook}", post(hook))
            .with_state(seen.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hooks", listener.local_addr().unwrap());
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let counted = seen.clone();
        let listener = axum::serve::ListenerExt::tap_io(listener, move |_| {
            counted.connections.fetch_add(1, Ordering::Relaxed);
        });
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(stopped.cancelled_owned())
                .await
                .unwrap();
        });
        Backend { url, seen, stop }
    }

    fn calls(&self, hook: &str) -> Vec<Value> {
        let calls = self.seen.calls.lock().unwrap();
        calls
            .iter()
            .filter(|(h, _)| h == hook)
            .map(|(_, v)| v.clone())
            .collect()
    }
}

/// The application: refuses, rewrites and answers by a few fixed rules.
async fn hook(
    State(seen): State<Arc<Seen>>,
    Path(hook): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, Json<Value>) {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    let signed = hooks::verify(
        SECRET.as_bytes(),
        header(hooks::SIGNATURE_HEADER),
        &body,
        now(),
        300,
    );
    let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let headers_match = req["user"] == header("x-wtgate-user")
        && req["namespace"] == header("x-wtgate-namespace")
        && req["session"].as_u64().map(|s| s.to_string()).as_deref()
            == Some(header("x-wtgate-session"));
    if signed.is_err() || !headers_match {
        seen.bad.fetch_add(1, Ordering::Relaxed);
        return (StatusCode::UNAUTHORIZED, Json(json!({})));
    }
    seen.calls.lock().unwrap().push((hook.clone(), req.clone()));
    let refuse = |code: Option<u32>, message: &str| {
        (
            StatusCode::OK,
            Json(json!({"error": {"code": code, "message": message}})),
        )
    };
    let ok = |v: Value| (StatusCode::OK, Json(v));
    match hook.as_str() {
        "connect" if req["user"] == "mallory" => refuse(Some(4003), "mallory is banned"),
        "connect" => {
            ok(json!({"data": {"name": format!("User {}", req["user"].as_str().unwrap())}}))
        }
        "join" if req["room"] == "vip" => refuse(None, "members only"),
        "join" if req["room"] == "fresh" => ok(json!({"history": false})),
        "join" if req["room"] == "quiet" => ok(json!({"presence": false})),
        "join" => ok(json!({})),
        "publish" => {
            let text = req["data"]["text"].as_str().unwrap_or("");
            if text.contains("darn") {
                refuse(Some(1001), "no bad words")
            } else if text == "shout" {
                ok(json!({"data": {"text": "SHOUT", "by": req["user"]}}))
            } else {
                ok(json!({}))
            }
        }
        "rpc" => match req["method"].as_str().unwrap_or("") {
            "echo" => ok(json!({"data": req["data"]})),
            "sleep" => {
                let n = seen.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                seen.max_in_flight.fetch_max(n, Ordering::SeqCst);
                let ms = req["data"]["ms"].as_u64().unwrap_or(0);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                seen.in_flight.fetch_sub(1, Ordering::SeqCst);
                ok(json!({"data": "slept"}))
            }
            "binary" => ok(json!({"body_base64": "/wA="})),
            "huge" => ok(json!({"data": "x".repeat(100_000)})),
            "not-json" => (StatusCode::OK, Json(json!("a string, not an object"))),
            "broken" => (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({}))),
            other => refuse(None, &format!("no method {other}")),
        },
        _ => (StatusCode::NOT_FOUND, Json(json!({}))),
    }
}

/// A config whose `/chat` has every hook on, pointing at `url`.
fn hooked(url: &str, adjust: impl FnOnce(&mut Config)) -> Config {
    let mut config = Config::default();
    let h = &mut config.namespaces.get_mut("/chat").unwrap().hooks;
    h.url = url.to_owned();
    h.connect = true;
    h.join = true;
    h.publish = true;
    h.rpc = true;
    h.timeout = Duration::from_millis(500);
    adjust(&mut config);
    config
}

/// A URL nothing listens on.
fn dead_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}/hooks", l.local_addr().unwrap())
}

fn json_body(v: Value) -> Bytes {
    Bytes::from(serde_json::to_vec(&v).unwrap())
}

async fn connect(server: &TestServer, user: &str) -> Result<Client, ClientError> {
    Client::connect(&server.url("/chat"), &server.token(user), &server.trust()).await
}

#[tokio::test]
async fn connect_hook_attaches_data_or_refuses_with_the_backends_code() {
    let backend = Backend::start().await;
    let server = TestServer::start_with(hooked(&backend.url, |_| {})).await;
    let alice = server.client("/chat", "alice").await;
    let data: Value = serde_json::from_slice(alice.welcome().data.as_ref().unwrap()).unwrap();
    assert_eq!(data, json!({"name": "User alice"}));
    let call = &backend.calls("connect")[0];
    assert_eq!(call["user"], "alice");
    assert_eq!(call["namespace"], "/chat");
    assert_eq!(call["session"], alice.welcome().session);

    match connect(&server, "mallory").await {
        Err(ClientError::Server { code, message }) => {
            assert_eq!(code, ErrorCode::Other(4003));
            assert_eq!(message, "mallory is banned");
        }
        other => panic!("mallory is refused: {other:?}"),
    }
    // Namespaces without hooks never call the backend.
    let _n = server.client("/notifications", "alice").await;
    assert_eq!(backend.calls("connect").len(), 2);
    assert_eq!(backend.seen.bad.load(Ordering::Relaxed), 0);
    server.stop().await;
}

#[tokio::test]
async fn join_hook_allows_refuses_and_drops_history() {
    let backend = Backend::start().await;
    let server = TestServer::start_with(hooked(&backend.url, |_| {})).await;
    let alice = server.client("/chat", "alice").await;
    alice.join("lobby", None).await.unwrap();
    assert_eq!(refused(alice.join("vip", None).await), ErrorCode::Rejected);
    let first = alice.join("fresh", None).await.unwrap();
    alice
        .publish("fresh", json_body(json!({"text": "one"})))
        .await
        .unwrap();
    let bob = server.client("/chat", "bob").await;
    let since = wtgate::protocol::Since {
        epoch: first.epoch,
        seq: 0,
    };
    let rejoin = bob.join("fresh", Some(since)).await.unwrap();
    assert!(
        !rejoin.recovered,
        "the hook turned history off for this join"
    );
    let rooms: Vec<Value> = backend
        .calls("join")
        .iter()
        .map(|c| c["room"].clone())
        .collect();
    assert_eq!(rooms, ["lobby", "vip", "fresh", "fresh"]);

    // Without presence: no member list, no presence events, messages as usual.
    let mut carol = server.client("/chat", "carol").await;
    let quiet = carol.join("quiet", None).await.unwrap();
    assert!(quiet.members.is_empty());
    let dave = server.client("/chat", "dave").await;
    assert!(dave.join("quiet", None).await.unwrap().members.is_empty());
    dave.publish("quiet", json_body(json!({"text": "psst"})))
        .await
        .unwrap();
    let first = expect_event(&mut carol, "the message", |e| match e {
        Event::PresenceJoin { .. } | Event::Message { .. } => Some(e.clone()),
        _ => None,
    })
    .await;
    assert!(matches!(first, Event::Message { .. }), "{first:?}");
    server.stop().await;
}

#[tokio::test]
async fn publish_hook_accepts_rejects_and_rewrites() {
    let backend = Backend::start().await;
    let server = TestServer::start_with(hooked(&backend.url, |_| {})).await;
    let alice = server.client("/chat", "alice").await;
    let mut bob = server.client("/chat", "bob").await;
    alice.join("lobby", None).await.unwrap();
    bob.join("lobby", None).await.unwrap();

    let hello = json_body(json!({"text": "hello"}));
    alice.publish("lobby", hello.clone()).await.unwrap();
    let got = expect_event(&mut bob, "the accepted message", |e| match e {
        Event::Message { body, .. } => Some(body.clone()),
        _ => None,
    })
    .await;
    assert_eq!(got, hello);

    match alice
        .publish("lobby", json_body(json!({"text": "darn it"})))
        .await
    {
        Err(ClientError::Server { code, message }) => {
            assert_eq!(code, ErrorCode::Other(1001));
            assert_eq!(message, "no bad words");
        }
        other => panic!("refused: {other:?}"),
    }
    alice
        .publish("lobby", json_body(json!({"text": "shout"})))
        .await
        .unwrap();
    let got = expect_event(&mut bob, "the rewritten message", |e| match e {
        Event::Message { body, .. } => Some(body.clone()),
        _ => None,
    })
    .await;
    let got: Value = serde_json::from_slice(&got).unwrap();
    assert_eq!(got, json!({"text": "SHOUT", "by": "alice"}));
    // The refused one was never sequenced: bob saw two messages, seqs 1 and 2.
    let last = alice
        .publish("lobby", json_body(json!({"text": "bye"})))
        .await
        .unwrap();
    assert_eq!(last, 3);
    let publishes = backend.calls("publish");
    assert_eq!(publishes.len(), 4);
    // 2 connects, 2 joins, 4 publishes, one after the other: one kept-alive
    // connection carried them.
    assert_eq!(backend.seen.connections.load(Ordering::Relaxed), 1);
    let metrics = server.gateway.metrics_text().await;
    for (series, n) in [
        ("publish\",result=\"ok", 3.0),
        ("publish\",result=\"refused", 1.0),
        ("connect\",result=\"ok", 2.0),
        ("rpc\",result=\"ok", 0.0),
    ] {
        let series = format!("wtgate_hook_calls_total{{hook=\"{series}\"}}");
        assert_eq!(sample(&metrics, &series), n, "{series}");
    }
    assert!(sample(&metrics, "wtgate_hook_latency_seconds_count") >= 8.0);
    assert_eq!(publishes[0]["room"], "lobby");
    assert_eq!(publishes[0]["data"], json!({"text": "hello"}));
    server.stop().await;
}

#[tokio::test]
async fn rpc_answers_refuses_and_times_out_without_harming_the_session() {
    let backend = Backend::start().await;
    let server = TestServer::start_with(hooked(&backend.url, |_| {})).await;
    let alice = server.client("/chat", "alice").await;
    alice.join("lobby", None).await.unwrap();
    let arg = json_body(json!({"q": "hi", "n": [1, 2]}));
    assert_eq!(alice.rpc("echo", arg.clone()).await.unwrap(), arg);
    assert_eq!(
        alice.rpc("binary", Bytes::new()).await.unwrap(),
        Bytes::from_static(&[0xff, 0x00])
    );
    assert_eq!(
        refused(alice.rpc("nope", Bytes::new()).await),
        ErrorCode::Rejected
    );
    // A backend that answers badly is unavailable, with a reason; bounded replies.
    for method in ["broken", "huge", "not-json"] {
        match alice.rpc(method, Bytes::new()).await {
            Err(ClientError::Server { code, message }) => {
                assert_eq!(code, ErrorCode::BackendUnavailable, "{method}");
                let why = ["answered 500", "exceeds 65536 bytes", "not a JSON object"];
                assert!(
                    why.iter().any(|w| message.contains(w)),
                    "{method}: {message}"
                );
            }
            other => panic!("{method}: {other:?}"),
        }
    }
    // A slow RPC times out (500 ms); meanwhile the session serves other commands.
    let slow = alice.rpc("sleep", json_body(json!({"ms": 3000})));
    let other = async {
        let started = std::time::Instant::now();
        alice
            .publish("lobby", json_body(json!({"text": "meanwhile"})))
            .await
            .unwrap();
        started.elapsed()
    };
    let (slow, publish_took) = tokio::join!(slow, other);
    match slow {
        Err(ClientError::Server { code, message }) => {
            assert_eq!(code, ErrorCode::BackendUnavailable);
            assert!(message.contains("no answer within 500ms"), "{message}");
        }
        other => panic!("times out: {other:?}"),
    }
    assert!(
        publish_took < Duration::from_millis(400),
        "{publish_took:?}"
    );
    assert_eq!(alice.rpc("echo", arg.clone()).await.unwrap(), arg);

    // Without an RPC hook in the namespace: Forbidden.
    let n = server.client("/notifications", "alice").await;
    assert_eq!(
        refused(n.rpc("echo", Bytes::new()).await),
        ErrorCode::Forbidden
    );
    server.stop().await;
}

#[tokio::test]
async fn many_slow_rpcs_are_bounded_per_session_and_server_wide() {
    let backend = Backend::start().await;
    let config = hooked(&backend.url, |c| {
        c.limits.max_hook_calls = 5;
        let h = &mut c.namespaces.get_mut("/chat").unwrap().hooks;
        h.max_rpcs_per_session = 3;
        h.timeout = Duration::from_secs(5);
    });
    let server = TestServer::start_with(config).await;
    let alice = Arc::new(server.client("/chat", "alice").await);
    let bob = Arc::new(server.client("/chat", "bob").await);
    let sleep = || json_body(json!({"ms": 2000}));
    let mut calls = Vec::new();
    for client in [&alice, &bob] {
        for _ in 0..4 {
            let client = client.clone();
            let body = sleep();
            calls.push(tokio::spawn(async move { client.rpc("sleep", body).await }));
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    }
    let mut answered = 0;
    let mut unavailable = Vec::new();
    for call in calls {
        match call.await.unwrap() {
            Ok(_) => answered += 1,
            Err(ClientError::Server {
                code: ErrorCode::BackendUnavailable,
                message,
            }) => unavailable.push(message),
            Err(e) => panic!("{e}"),
        }
    }
    // Alice: 3 in flight, her 4th refused by the session bound; bob: 2 more reach
    // the server-wide bound of 5, his 3rd and 4th are refused.
    assert_eq!(answered, 5, "{unavailable:?}");
    assert_eq!(unavailable.len(), 3);
    assert!(unavailable
        .iter()
        .any(|m| m.contains("3 RPCs of this session")));
    assert!(unavailable
        .iter()
        .any(|m| m.contains("5 hook calls in flight")));
    assert_eq!(backend.seen.max_in_flight.load(Ordering::SeqCst), 5);
    server.stop().await;
}

#[tokio::test]
async fn a_backend_that_is_down_refuses_clearly_or_is_skipped() {
    let config = hooked(&dead_url(), |c| {
        c.namespaces.get_mut("/chat").unwrap().hooks.connect = false;
    });
    let server = TestServer::start_with(config).await;
    let alice = server.client("/chat", "alice").await;
    match alice.join("lobby", None).await {
        Err(ClientError::Server { code, message }) => {
            assert_eq!(code, ErrorCode::BackendUnavailable);
            assert!(message.contains("unavailable"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        refused(alice.rpc("echo", Bytes::new()).await),
        ErrorCode::BackendUnavailable
    );
    // The session is unharmed: a namespace-level command still works.
    alice.online().await.unwrap();

    // The connect hook of a down backend refuses the session clearly...
    let config = hooked(&dead_url(), |_| {});
    let refusing = TestServer::start_with(config).await;
    match connect(&refusing, "alice").await {
        Err(ClientError::Server { code, .. }) => assert_eq!(code, ErrorCode::BackendUnavailable),
        other => panic!("{other:?}"),
    }
    // ...unless the namespace goes ahead without it.
    let config = hooked(&dead_url(), |c| {
        c.namespaces.get_mut("/chat").unwrap().hooks.on_unavailable = OnUnavailable::Allow;
    });
    let allowing = TestServer::start_with(config).await;
    let alice = allowing.client("/chat", "alice").await;
    assert_eq!(alice.welcome().data, None);
    alice.join("lobby", None).await.unwrap();
    alice
        .publish("lobby", json_body(json!({"text": "hi"})))
        .await
        .unwrap();
    assert_eq!(
        refused(alice.rpc("echo", Bytes::new()).await),
        ErrorCode::BackendUnavailable,
        "an RPC has nothing to go ahead with"
    );
    for s in [server, refusing, allowing] {
        s.stop().await;
    }
}

#[tokio::test]
async fn a_wrong_hook_secret_is_caught_by_the_backend() {
    let backend = Backend::start().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = TestServer::start_adjusted(dir, data, hooked(&backend.url, |_| {}), |s| {
        s.hook_secret = Some("not the secret the backend knows".into());
    })
    .await;
    assert_eq!(
        refused(connect(&server, "alice").await),
        ErrorCode::BackendUnavailable
    );
    assert_eq!(backend.seen.bad.load(Ordering::Relaxed), 1);
    server.stop().await;
}

/// `node examples/backend/server.js` on a free port, killed on drop.
pub struct ExampleBackend {
    pub port: u16,
    _child: tokio::process::Child,
    pub dir: tempfile::TempDir,
}

impl ExampleBackend {
    pub async fn start() -> ExampleBackend {
        use tokio::io::AsyncBufReadExt;
        let dir = tempfile::tempdir().unwrap();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/backend/server.js");
        let mut child = tokio::process::Command::new("node")
            .arg(script)
            .env("PORT", "0")
            .env("WTGATE_HOOK_SECRET", SECRET)
            .env("DATA_FILE", dir.path().join("messages.json"))
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("node runs the example backend");
        let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let first = within("the example backend to listen", lines.next_line())
            .await
            .unwrap()
            .expect("the backend prints its address");
        let port = first.rsplit(':').next().unwrap().parse().unwrap();
        // Keep draining its log so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        ExampleBackend {
            port,
            _child: child,
            dir,
        }
    }

    pub fn config(&self) -> Config {
        let mut config = hooked(&format!("http://127.0.0.1:{}/wtgate", self.port), |_| {});
        config.webhooks.url = format!("http://127.0.0.1:{}/webhooks", self.port);
        config
    }

    /// The webhook events it received and verified.
    pub async fn events(&self) -> Vec<Value> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .unwrap();
        tcp.write_all(b"GET /events HTTP/1.1\r\nhost: backend\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut response = String::new();
        tcp.read_to_string(&mut response).await.unwrap();
        let (_, body) = response.split_once("\r\n\r\n").unwrap();
        serde_json::from_str(body).unwrap()
    }
}

#[tokio::test]
async fn the_example_backend_validates_stores_answers_and_receives_webhooks() {
    let backend = ExampleBackend::start().await;
    let server = TestServer::start_with(backend.config()).await;
    let alice = server.client("/chat", "alice").await;
    let data: Value = serde_json::from_slice(alice.welcome().data.as_ref().unwrap()).unwrap();
    assert_eq!(data["name"], "Alice Liddell");
    assert_eq!(
        refused(connect(&server, "mallory").await),
        ErrorCode::Other(4003)
    );
    let mut bob = server.client("/chat", "bob").await;
    alice.join("lobby", None).await.unwrap();
    bob.join("lobby", None).await.unwrap();
    assert_eq!(
        refused(alice.join("admin-room", None).await),
        ErrorCode::Rejected
    );

    alice
        .publish("lobby", json_body(json!({"text": "hello there"})))
        .await
        .unwrap();
    let got = expect_event(&mut bob, "the enriched message", |e| match e {
        Event::Message { body, .. } => Some(body.clone()),
        _ => None,
    })
    .await;
    let got: Value = serde_json::from_slice(&got).unwrap();
    assert_eq!(got["text"], "hello there");
    assert_eq!(got["name"], "Alice Liddell");
    assert_eq!(
        refused(
            alice
                .publish("lobby", json_body(json!({"text": "oh darn"})))
                .await
        ),
        ErrorCode::Other(4001)
    );
    // Stored by the application, and searchable through an RPC.
    let stored = std::fs::read_to_string(backend.dir.path().join("messages.json")).unwrap();
    assert!(
        stored.contains("hello there") && !stored.contains("darn"),
        "{stored}"
    );
    let reply = bob
        .rpc(
            "history.search",
            json_body(json!({"room": "lobby", "q": "HELLO"})),
        )
        .await
        .unwrap();
    let reply: Value = serde_json::from_slice(&reply).unwrap();
    assert_eq!(reply["hits"][0]["text"], "hello there");
    assert_eq!(reply["hits"][0]["user"], "alice");
    assert_eq!(
        refused(bob.rpc("nope", Bytes::new()).await),
        ErrorCode::Other(4004)
    );

    // Its webhook receiver checked the signatures of what it kept.
    within("the webhooks", async {
        loop {
            let kinds: Vec<Value> = backend
                .events()
                .await
                .iter()
                .map(|e| e["type"].clone())
                .collect();
            if kinds.contains(&json!("room.joined")) && kinds.contains(&json!("room.created")) {
                assert!(kinds.contains(&json!("session.opened")));
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    server.stop().await;
}

/// In-process hooks, as a Rust program embedding wtgate writes them.
struct InProcess;

#[async_trait::async_trait]
impl hooks::Hooks for InProcess {
    async fn publish(
        &self,
        caller: hooks::Caller<'_>,
        _room: &str,
        body: &Bytes,
    ) -> Result<hooks::PublishReply, hooks::HookError> {
        if body.starts_with(b"spam") {
            return Err(hooks::HookError::refused_with(Some(2000), "no spam"));
        }
        let signed = format!("{}: {}", caller.user, String::from_utf8_lossy(body));
        Ok(hooks::PublishReply {
            body: Some(Bytes::from(signed)),
        })
    }

    async fn rpc(
        &self,
        caller: hooks::Caller<'_>,
        method: &str,
        body: Bytes,
    ) -> Result<Bytes, hooks::HookError> {
        match method {
            "len" => Ok(Bytes::from(format!(
                "{} sent {} bytes",
                caller.user,
                body.len()
            ))),
            other => Err(hooks::HookError::refused(format!("no {other}"))),
        }
    }
}

#[tokio::test]
async fn rust_programs_plug_in_their_own_hooks() {
    let mut config = Config::default();
    let h = &mut config.namespaces.get_mut("/chat").unwrap().hooks;
    h.publish = true;
    h.rpc = true;
    // Without its own hooks, a hook that is on needs a URL.
    let dir = tempfile::tempdir().unwrap();
    let settings = wtgate::config::Settings {
        listen: "127.0.0.1:0".parse().unwrap(),
        tls: wtgate::config::TlsSource::SelfSigned {
            dir: dir.path().to_owned(),
        },
        secret: SECRET.into(),
        dev: false,
        allowed_origins: vec![],
        config: config.clone(),
        data_dir: dir.path().join("data"),
        api_key: None,
        redis: None,
        node_id: None,
        hook_secret: None,
        engine: Default::default(),
    };
    match wtgate::server::Server::bind(settings.clone()).await {
        Err(e) => assert!(e.to_string().contains("url is empty"), "{e}"),
        Ok(_) => panic!("a hook without url or hooks is refused"),
    }

    let server = wtgate::server::Server::bind_with_hooks(settings, Arc::new(InProcess))
        .await
        .unwrap();
    let url = format!("https://127.0.0.1:{}/chat", server.local_addr().port());
    let trust = wtgate::client::Trust::Hash(server.cert_hash().to_owned());
    let stop = CancellationToken::new();
    let running = tokio::spawn(server.run(stop.clone()));
    let token = token_for(&wtgate::auth::Claims::new("alice", now(), 3600));
    let mut alice = Client::connect(&url, &token, &trust).await.unwrap();
    alice.join("lobby", None).await.unwrap();
    alice
        .publish("lobby", Bytes::from_static(b"hi"))
        .await
        .unwrap();
    let got = expect_event(&mut alice, "the rewritten message", |e| match e {
        Event::Message { body, .. } => Some(body.clone()),
        _ => None,
    })
    .await;
    assert_eq!(&got[..], b"alice: hi");
    assert_eq!(
        refused(alice.publish("lobby", Bytes::from_static(b"spam!")).await),
        ErrorCode::Other(2000)
    );
    assert_eq!(
        alice.rpc("len", Bytes::from_static(b"abc")).await.unwrap(),
        Bytes::from_static(b"alice sent 3 bytes")
    );
    assert_eq!(
        refused(alice.rpc("other", Bytes::new()).await),
        ErrorCode::Rejected
    );
    stop.cancel();
    running.await.unwrap();
}

/// The hooks are the session core's, so a WebSocket session gets them as a
/// WebTransport one does: connect data, the backend's own refusal code (in the
/// `Error` frame; the close code is 4999), publish rewrites and RPCs.
#[tokio::test]
async fn websocket_sessions_go_through_the_same_hooks() {
    let backend = Backend::start().await;
    let server = TestServer::start_with(hooked(&backend.url, |_| {})).await;
    let alice = server.ws_client("/chat", "alice").await;
    let data: Value = serde_json::from_slice(alice.welcome().data.as_ref().unwrap()).unwrap();
    assert_eq!(data, json!({"name": "User alice"}));
    let refused_ws = Client::connect_websocket(
        &server.ws_url("/chat"),
        &server.token("mallory"),
        &server.trust(),
    )
    .await;
    match refused_ws {
        Err(ClientError::Server { code, message }) => {
            assert_eq!(
                (code, message.as_str()),
                (ErrorCode::Other(4003), "mallory is banned")
            );
        }
        other => panic!("mallory is refused: {other:?}"),
    }

    let mut bob = server.client("/chat", "bob").await;
    alice.join("lobby", None).await.unwrap();
    bob.join("lobby", None).await.unwrap();
    alice
        .publish("lobby", json_body(json!({"text": "shout"})))
        .await
        .unwrap();
    let got = expect_event(&mut bob, "the rewritten message", |e| match e {
        Event::Message { body, .. } => Some(body.clone()),
        _ => None,
    })
    .await;
    let got: Value = serde_json::from_slice(&got).unwrap();
    assert_eq!(got, json!({"text": "SHOUT", "by": "alice"}));
    let arg = json_body(json!({"q": "over a websocket"}));
    assert_eq!(alice.rpc("echo", arg.clone()).await.unwrap(), arg);
    assert_eq!(
        refused(alice.rpc("nope", Bytes::new()).await),
        ErrorCode::Rejected
    );
    server.stop().await;
}
