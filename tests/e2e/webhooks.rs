//! Webhooks end to end: a real receiver (an axum server in the test process) that
//! checks every signature, stopped and restarted on the same port while events
//! keep coming.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use wtgate::config::Config;
use wtgate::hooks;

use crate::common::*;

#[derive(Default)]
struct Received {
    events: Mutex<Vec<Value>>,
    bad_signatures: AtomicUsize,
}

/// A webhook receiver on `port` (0: any), stopped on drop.
struct Receiver {
    port: u16,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start(port: u16, got: Arc<Received>) -> Receiver {
        let app = Router::new()
            .route("/webhooks", post(receive))
            .with_state(got);
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(stopped.cancelled_owned())
                .await
                .unwrap();
        });
        Receiver { port, stop, task }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/webhooks", self.port)
    }

    async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap();
    }
}

async fn receive(State(got): State<Arc<Received>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let signature = headers
        .get(hooks::SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if hooks::verify(SECRET.as_bytes(), signature, &body, now(), 300).is_err() {
        got.bad_signatures.fetch_add(1, Ordering::Relaxed);
        return StatusCode::UNAUTHORIZED;
    }
    let event: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        headers.get("x-wtgate-event").unwrap(),
        event["type"].as_str().unwrap()
    );
    got.events.lock().unwrap().push(event);
    StatusCode::NO_CONTENT
}

fn with_webhooks(url: &str) -> Config {
    let mut config = Config::default();
    config.webhooks.url = url.to_owned();
    config.webhooks.max_backoff = Duration::from_millis(200);
    config
}

/// `(type, user, room or notification)` of every event received, in order, once
/// each (a redelivery has the same id).
fn summary(got: &Received) -> Vec<(String, String, String)> {
    let events = got.events.lock().unwrap();
    let mut seen = std::collections::HashSet::new();
    events
        .iter()
        .filter(|e| seen.insert(e["id"].as_str().unwrap().to_owned()))
        .map(|e| {
            let about = match (&e["room"], &e["notification"]) {
                (Value::String(room), _) => room.clone(),
                (_, Value::Number(n)) => n.to_string(),
                _ => String::new(),
            };
            (
                e["type"].as_str().unwrap().to_owned(),
                e["user"].as_str().unwrap().to_owned(),
                about,
            )
        })
        .collect()
}

fn ev(kind: &str, user: &str, about: &str) -> (String, String, String) {
    (kind.into(), user.into(), about.into())
}

/// Waits until `n` distinct events arrived.
async fn until(got: &Received, n: usize) {
    within(&format!("{n} webhook events"), async {
        while summary(got).len() < n {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn events_are_signed_and_say_what_happened() {
    let got = Arc::new(Received::default());
    let receiver = Receiver::start(0, got.clone()).await;
    let server = TestServer::start_with(with_webhooks(&receiver.url())).await;

    let alice = server.client("/chat", "alice").await;
    alice.join("lobby", None).await.unwrap();
    until(&got, 3).await;
    let bob = server.client("/chat", "bob").await;
    bob.join("lobby", None).await.unwrap();
    until(&got, 5).await;
    alice.leave("lobby").await.unwrap();
    until(&got, 6).await;
    bob.close().await;
    until(&got, 9).await;

    let mut inbox = server.client("/notifications", "carol").await;
    until(&got, 10).await;
    let n = server
        .gateway
        .notify("carol", "mention", Bytes::from_static(b"hi"))
        .await
        .unwrap();
    expect_event(&mut inbox, "the notification", notification).await;
    inbox.ack_notification(n.id).await.unwrap();
    until(&got, 12).await;

    let id = n.id.to_string();
    assert_eq!(
        summary(&got),
        [
            ev("session.opened", "alice", ""),
            ev("room.created", "alice", "lobby"),
            ev("room.joined", "alice", "lobby"),
            ev("session.opened", "bob", ""),
            ev("room.joined", "bob", "lobby"),
            ev("room.left", "alice", "lobby"),
            ev("room.left", "bob", "lobby"),
            ev("room.vacated", "bob", "lobby"),
            ev("session.closed", "bob", ""),
            ev("session.opened", "carol", ""),
            ev("notification.delivered", "carol", &id),
            ev("notification.acked", "carol", &id),
        ]
    );
    let events = got.events.lock().unwrap().clone();
    assert_eq!(events[0]["namespace"], "/chat");
    assert_eq!(events[0]["session"], alice.welcome().session);
    assert!(events[0]["ts"].as_u64().unwrap() > 1_700_000_000_000);
    assert_eq!(got.bad_signatures.load(Ordering::Relaxed), 0);
    let metrics = server.gateway.metrics_text().await;
    assert_eq!(sample(&metrics, "wtgate_webhooks_sent_total"), 12.0);
    assert_eq!(sample(&metrics, "wtgate_webhooks_dropped_total"), 0.0);
    server.stop().await;
    receiver.stop().await;
}

#[tokio::test]
async fn nothing_is_lost_while_the_receiver_restarts() {
    let got = Arc::new(Received::default());
    let receiver = Receiver::start(0, got.clone()).await;
    let port = receiver.port;
    let server = TestServer::start_with(with_webhooks(&receiver.url())).await;
    let alice = server.client("/chat", "alice").await;
    until(&got, 1).await;

    // The receiver goes down; events keep coming and wait in the queue.
    receiver.stop().await;
    let mut clients = Vec::new();
    for i in 0..10 {
        let c = server.client("/chat", &format!("user{i}")).await;
        c.join("lobby", None).await.unwrap();
        clients.push(c);
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    let metrics = server.gateway.metrics_text().await;
    assert!(
        sample(&metrics, "wtgate_webhooks_failed_total") >= 2.0,
        "retried while down"
    );
    assert_eq!(summary(&got).len(), 1);

    // Back on the same port: everything arrives, in order.
    let receiver = Receiver::start(port, got.clone()).await;
    until(&got, 1 + 10 * 2 + 1).await;
    let summary = summary(&got);
    assert_eq!(summary[0], ev("session.opened", "alice", ""));
    for i in 0..10 {
        let user = format!("user{i}");
        let opened = summary
            .iter()
            .position(|e| *e == ev("session.opened", &user, ""));
        let joined = summary
            .iter()
            .position(|e| *e == ev("room.joined", &user, "lobby"));
        assert!(opened.unwrap() < joined.unwrap(), "{user}: {summary:?}");
    }
    assert!(summary.contains(&ev("room.created", "user0", "lobby")));
    assert_eq!(got.bad_signatures.load(Ordering::Relaxed), 0);
    drop(alice);
    server.stop().await;
    receiver.stop().await;
}

#[tokio::test]
async fn events_wait_in_the_queue_across_a_server_restart() {
    // No receiver yet: nothing listens on the webhook URL.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = dead.local_addr().unwrap().port();
    drop(dead);
    let url = format!("http://127.0.0.1:{port}/webhooks");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let first = TestServer::start_in(
        tempfile::tempdir().unwrap(),
        data.clone(),
        with_webhooks(&url),
    )
    .await;
    let alice = first.client("/chat", "alice").await;
    alice.join("lobby", None).await.unwrap();
    drop(alice);
    first.stop().await;

    // The next start on the same data directory sends them.
    let got = Arc::new(Received::default());
    let receiver = Receiver::start(port, got.clone()).await;
    let second =
        TestServer::start_in(tempfile::tempdir().unwrap(), data, with_webhooks(&url)).await;
    until(&got, 6).await;
    let kinds: Vec<String> = summary(&got).into_iter().map(|e| e.0).collect();
    assert_eq!(
        kinds,
        [
            "session.opened",
            "room.created",
            "room.joined",
            "room.left",
            "room.vacated",
            "session.closed"
        ]
    );
    second.stop().await;
    receiver.stop().await;
}

#[tokio::test]
async fn a_full_queue_drops_new_events_and_counts_them() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/webhooks", dead.local_addr().unwrap());
    drop(dead);
    let mut config = with_webhooks(&url);
    config.webhooks.queue = 3;
    let server = TestServer::start_with(config).await;
    let alice = server.client("/chat", "alice").await;
    for room in ["a", "b", "c"] {
        alice.join(room, None).await.unwrap();
    }
    within("the drops to be counted", async {
        loop {
            let metrics = server.gateway.metrics_text().await;
            if sample(&metrics, "wtgate_webhooks_dropped_total") >= 4.0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    server.stop().await;
}
