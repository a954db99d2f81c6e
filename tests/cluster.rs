//! Cluster mode end to end: a real `redis-server` on a free loopback port and 2–3
//! real `wtgate serve --redis` processes, driven by the Rust client and the server
//! API client. Every process is killed when its guard drops, also on failure (and
//! then the tail of each node's log is printed).
//!
//! Needs `redis-server` on the PATH (Debian: `apt-get install redis-server`).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use bytes::Bytes;
use std::io::{Read, Write};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use wtgate::api_client::ApiClient;
use wtgate::auth::{mint, Claims};
use wtgate::client::{Client, ClientError, Event, Trust};
use wtgate::protocol::{ErrorCode, Since};

const SECRET: &str = "cluster-test-secret-0123456789abcdef";
const API_KEY: &str = "cluster-api-key";
/// How long any single expected event may take.
const WAIT: Duration = Duration::from_secs(10);
/// A killed node's users must leave everyone's presence within this (the design
/// bound is about 5 s: a 4 s heartbeat deadline plus one heartbeat).
const DEAD_NODE_BOUND: Duration = Duration::from_secs(8);

/// A `redis-server` without persistence, in a temp dir.
struct RedisServer {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl RedisServer {
    async fn start() -> RedisServer {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut redis = RedisServer {
            port,
            dir,
            child: None,
        };
        redis.spawn().await;
        redis
    }

    async fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server runs (Debian: apt-get install redis-server)");
        self.child = Some(child);
        let started = Instant::now();
        while !redis_ping(self.port) {
            assert!(started.elapsed() < WAIT, "redis-server did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGKILL: the data is gone (no persistence).
    async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.unwrap();
        }
    }
}

/// `PING` over a raw socket.
fn redis_ping(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let mut buf = [0u8; 7];
    s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One `wtgate serve --redis` process.
struct Node {
    id: String,
    addr: SocketAddr,
    hash: String,
    dir: PathBuf,
    child: Option<Child>,
}

/// `wtgate serve` as node `id` of `redis`, keeping its files in `dir`.
fn serve_command(id: &str, redis: &RedisServer, dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wtgate"));
    cmd.arg("serve")
        .args(["--listen", "127.0.0.1:0"])
        .arg("--certs-dir")
        .arg(dir.join("certs"))
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(["--secret", SECRET, "--api-key", API_KEY])
        .args(["--redis", &redis.url(), "--node-id", id])
        .args(["--publish-rate", "1000"])
        .args(["--log", "info,wtgate=debug"])
        .env_remove("WTGATE_SECRET")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

impl Node {
    async fn start(id: &str, redis: &RedisServer, base: &Path) -> Node {
        Self::start_with(id, redis, base, &[]).await
    }

    /// A node with more `serve` arguments (e.g. `--config FILE`).
    async fn start_with(id: &str, redis: &RedisServer, base: &Path, extra: &[&str]) -> Node {
        let dir = base.join(id);
        std::fs::create_dir_all(&dir).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("wtgate.log"))
            .unwrap();
        let mut child = serve_command(id, redis, &dir)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let (mut addr, mut hash) = (None, None);
        let read = async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(rest) = line.strip_prefix("wtgate listening on https://") {
                    addr = rest.split_whitespace().next().map(|a| a.parse().unwrap());
                }
                if let Some(rest) = line.strip_prefix("certificate sha-256: ") {
                    hash = Some(rest.trim().to_owned());
                }
                if addr.is_some() && hash.is_some() {
                    return;
                }
            }
        };
        if tokio::time::timeout(Duration::from_secs(30), read)
            .await
            .is_err()
            || addr.is_none()
        {
            let log = std::fs::read_to_string(dir.join("wtgate.log")).unwrap_or_default();
            panic!("node {id} did not start:\n{log}");
        }
        // Keep draining stdout so the process never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Node {
            id: id.to_owned(),
            addr: addr.unwrap(),
            hash: hash.unwrap(),
            dir,
            child: Some(child),
        }
    }

    fn trust(&self) -> Trust {
        Trust::Hash(self.hash.clone())
    }

    fn url(&self, ns: &str) -> String {
        format!("https://127.0.0.1:{}{ns}", self.addr.port())
    }

    fn api(&self) -> ApiClient {
        let base = format!("https://127.0.0.1:{}", self.addr.port());
        ApiClient::new(&base, Some(API_KEY), &self.trust()).unwrap()
    }

    async fn client(&self, ns: &str, user: &str) -> Client {
        Client::connect(&self.url(ns), &token(user), &self.trust())
            .await
            .unwrap_or_else(|e| panic!("{user} connects to {} {ns}: {e}", self.id))
    }

    /// A client over a WebSocket to this node (`wss://` on the same port).
    async fn ws_client(&self, ns: &str, user: &str) -> Client {
        Client::connect_websocket(&self.url(ns), &token(user), &self.trust())
            .await
            .unwrap_or_else(|e| panic!("{user} connects to {} {ns} over a WebSocket: {e}", self.id))
    }

    /// SIGKILL, no goodbye.
    async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.unwrap();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.dir.join("wtgate.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- last lines of node {} ---", self.id);
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

/// A Redis and `n` nodes `n1`, `n2`, … in one temp dir.
struct Cluster {
    nodes: Vec<Node>,
    redis: RedisServer,
    dir: tempfile::TempDir,
}

impl Cluster {
    async fn start(n: usize) -> Cluster {
        let redis = RedisServer::start().await;
        let dir = tempfile::tempdir().unwrap();
        let mut nodes = Vec::new();
        for i in 1..=n {
            nodes.push(Node::start(&format!("n{i}"), &redis, dir.path()).await);
        }
        Cluster { nodes, redis, dir }
    }
}

fn token(user: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    mint(SECRET.as_bytes(), &Claims::new(user, now, 3600)).unwrap()
}

/// The next event `pick` accepts, skipping others; panics after [`WAIT`].
async fn expect<T>(client: &mut Client, what: &str, mut pick: impl FnMut(Event) -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, client.next_event()).await {
            Ok(Some(event)) => {
                if let Some(t) = pick(event) {
                    return t;
                }
            }
            Ok(None) => panic!("session ended while waiting for {what}"),
            Err(_) => panic!("no {what} within {WAIT:?}"),
        }
    }
}

/// The next room message as (room, seq, body).
async fn message(client: &mut Client) -> (String, u64, Bytes) {
    expect(client, "a message", |e| match e {
        Event::Message {
            room, seq, body, ..
        } => Some((room, seq, body)),
        _ => None,
    })
    .await
}

fn is_internal(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Server {
            code: ErrorCode::Internal,
            ..
        }
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_reaches_every_node_complete_and_in_order() {
    let cluster = Cluster::start(3).await;
    const CLIENTS: usize = 120;
    const PER_PUBLISHER: usize = 40;
    let nodes = &cluster.nodes;

    let mut clients = Vec::new();
    for chunk in (0..CLIENTS).collect::<Vec<_>>().chunks(20) {
        let joined = chunk.iter().map(|&i| async move {
            let node = &nodes[i % nodes.len()];
            let c = node.client("/chat", &format!("u{i}")).await;
            let reply = c.join("fan", None).await.unwrap();
            assert_eq!(reply.seq, 0, "a fresh room");
            c
        });
        clients.extend(futures::future::join_all(joined).await);
    }

    // One publisher per node, concurrently, each waiting for its acks.
    let mut publishers = Vec::new();
    for p in 0..nodes.len() {
        let client = clients.remove(0); // u0, u1, u2 sit on n1, n2, n3
        publishers.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for k in 0..PER_PUBLISHER {
                let body = Bytes::from(format!("p{p}-{k:03}"));
                seqs.push(client.publish("fan", body).await.unwrap());
            }
            (client, seqs)
        }));
    }
    let mut acked = Vec::new();
    for p in publishers {
        let (client, seqs) = p.await.unwrap();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "acks increase");
        acked.extend(seqs);
        clients.push(client);
    }
    let total = nodes.len() * PER_PUBLISHER;
    acked.sort_unstable();
    assert_eq!(
        acked,
        (1..=total as u64).collect::<Vec<_>>(),
        "gap-free seqs"
    );

    let receivers = clients.into_iter().map(|mut c| async move {
        let mut got = Vec::with_capacity(total);
        while got.len() < total {
            got.push(message(&mut c).await);
        }
        // Nothing more (no duplicates) shortly after.
        let extra = tokio::time::timeout(Duration::from_millis(300), async {
            loop {
                if let Some(Event::Message { seq, .. }) = c.next_event().await {
                    return seq;
                }
            }
        })
        .await;
        assert!(extra.is_err(), "a duplicate or extra message: {extra:?}");
        got
    });
    for got in futures::future::join_all(receivers).await {
        let seqs: Vec<u64> = got.iter().map(|(_, s, _)| *s).collect();
        assert_eq!(
            seqs,
            (1..=total as u64).collect::<Vec<_>>(),
            "every seq once, in order"
        );
        for p in 0..nodes.len() {
            let prefix = format!("p{p}-");
            let bodies: Vec<&Bytes> = got
                .iter()
                .map(|(_, _, b)| b)
                .filter(|b| b.starts_with(prefix.as_bytes()))
                .collect();
            assert_eq!(bodies.len(), PER_PUBLISHER);
            assert!(
                bodies.windows(2).all(|w| w[0] < w[1]),
                "publisher order kept"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_and_volatile_span_nodes() {
    let cluster = Cluster::start(2).await;
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);

    let mut ann = a.client("/chat", "ann").await;
    ann.join("lobby", None).await.unwrap();
    let mut bob = b.client("/chat", "bob").await;
    assert_eq!(
        bob.welcome().online.as_deref(),
        Some(&["ann".to_owned(), "bob".to_owned()][..])
    );
    expect(&mut ann, "OnlineJoin bob", |e| {
        (e == Event::OnlineJoin { user: "bob".into() }).then_some(())
    })
    .await;
    let joined = bob.join("lobby", None).await.unwrap();
    assert_eq!(joined.members, ["ann", "bob"]);
    expect(&mut ann, "PresenceJoin bob", |e| match e {
        Event::PresenceJoin { room, user } if room == "lobby" && user == "bob" => Some(()),
        _ => None,
    })
    .await;
    for node in [a, b] {
        let users = node.api().presence("/chat", Some("lobby")).await.unwrap();
        assert_eq!(users, ["ann", "bob"], "room presence on {}", node.id);
        let online = node.api().presence("/chat", None).await.unwrap();
        assert_eq!(online, ["ann", "bob"], "online on {}", node.id);
    }

    // A user on both nodes counts once, and leaves when their last session does.
    let carl_a = a.client("/chat", "carl").await;
    carl_a.join("lobby", None).await.unwrap();
    // Both must see carl arrive before he goes: a join and a leave within one
    // presence window cancel out (PROTOCOL.md §8.1).
    for member in [&mut bob, &mut ann] {
        expect(member, "PresenceJoin carl", |e| match e {
            Event::PresenceJoin { user, .. } if user == "carl" => Some(()),
            _ => None,
        })
        .await;
    }
    let carl_b = b.client("/chat", "carl").await;
    carl_b.join("lobby", None).await.unwrap();
    carl_a.leave("lobby").await.unwrap();
    carl_a.close().await;
    let users = b.api().presence("/chat", Some("lobby")).await.unwrap();
    assert_eq!(users, ["ann", "bob", "carl"], "carl is still on n2");
    carl_b.close().await;
    expect(&mut ann, "PresenceLeave carl", |e| match e {
        Event::PresenceLeave { user, .. } if user == "carl" => Some(()),
        Event::PresenceJoin { user, .. } if user == "carl" => None,
        Event::OnlineLeave { user } if user == "carl" => None,
        _ => None,
    })
    .await;

    // Volatile events cross nodes; the sender does not get its own back.
    bob.send_volatile("lobby", Bytes::from_static(b"typing"))
        .unwrap();
    let (from, body) = expect(&mut ann, "a volatile event", |e| match e {
        Event::Volatile { from, body, .. } => Some((from, body)),
        _ => None,
    })
    .await;
    assert_eq!((from.as_str(), &body[..]), ("bob", &b"typing"[..]));

    bob.leave("lobby").await.unwrap();
    expect(&mut ann, "PresenceLeave bob", |e| match e {
        Event::PresenceLeave { user, .. } if user == "bob" => Some(()),
        _ => None,
    })
    .await;
    bob.close().await;
    expect(&mut ann, "OnlineLeave bob", |e| {
        (e == Event::OnlineLeave { user: "bob".into() }).then_some(())
    })
    .await;
    assert!(
        !std::iter::from_fn(|| bob.try_event()).any(|e| matches!(e, Event::Volatile { .. })),
        "bob got his own volatile event"
    );
    assert_eq!(
        a.api().presence("/chat", Some("lobby")).await.unwrap(),
        ["ann"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_leaves_presence_within_the_bound() {
    let mut cluster = Cluster::start(3).await;
    let mut ann = cluster.nodes[0].client("/chat", "ann").await;
    ann.join("r", None).await.unwrap();
    let bob = cluster.nodes[1].client("/chat", "bob").await;
    bob.join("r", None).await.unwrap();
    let mut carl = cluster.nodes[2].client("/chat", "carl").await;
    carl.join("r", None).await.unwrap();
    let online = cluster.nodes[0]
        .api()
        .presence("/chat", None)
        .await
        .unwrap();
    assert_eq!(online, ["ann", "bob", "carl"]);

    let killed = Instant::now();
    cluster.nodes[1].kill().await;
    let (mut left_room, mut left_online) = (false, false);
    while !(left_room && left_online) {
        match expect(&mut ann, "bob's leave events", |e| match e {
            Event::PresenceLeave { user, .. } if user == "bob" => Some(true),
            Event::OnlineLeave { user } if user == "bob" => Some(false),
            _ => None,
        })
        .await
        {
            true => left_room = true,
            false => left_online = true,
        }
    }
    let took = killed.elapsed();
    assert!(took <= DEAD_NODE_BOUND, "bob left after {took:?}");
    for node in [&cluster.nodes[0], &cluster.nodes[2]] {
        assert_eq!(
            node.api().presence("/chat", Some("r")).await.unwrap(),
            ["ann", "carl"]
        );
        assert_eq!(
            node.api().presence("/chat", None).await.unwrap(),
            ["ann", "carl"]
        );
    }

    // The survivors carry on.
    let seq = ann
        .publish("r", Bytes::from_static(b"still here"))
        .await
        .unwrap();
    let (_, got, body) = message(&mut carl).await;
    assert_eq!((got, &body[..]), (seq, &b"still here"[..]));
    let dave = cluster.nodes[2].client("/chat", "dave").await;
    assert_eq!(
        dave.join("r", None).await.unwrap().members,
        ["ann", "carl", "dave"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_node_with_a_running_nodes_id_is_refused() {
    let cluster = Cluster::start(2).await;
    let mut users = Vec::new();
    for i in 0..5 {
        let user = cluster.nodes[0].client("/chat", &format!("u{i}")).await;
        user.join("r", None).await.unwrap();
        users.push(user);
    }
    let dir = cluster.dir.path().join("impostor");
    let started = Instant::now();
    let out = tokio::time::timeout(
        Duration::from_secs(20),
        serve_command("n1", &cluster.redis, &dir).output(),
    )
    .await
    .expect("the second n1 exits by itself")
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("node id \"n1\" is in use") && err.contains("--node-id"),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    // The running n1's users are still present everywhere.
    let everyone: Vec<String> = (0..5).map(|i| format!("u{i}")).collect();
    for node in &cluster.nodes {
        assert_eq!(
            node.api().presence("/chat", Some("r")).await.unwrap(),
            everyone
        );
        assert_eq!(node.api().presence("/chat", None).await.unwrap(), everyone);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_fails_clearly_then_recovers() {
    let mut cluster = Cluster::start(2).await;
    let ann = cluster.nodes[0].client("/chat", "ann").await;
    let joined = ann.join("r", None).await.unwrap();
    let mut bob = cluster.nodes[1].client("/chat", "bob").await;
    bob.join("r", None).await.unwrap();
    for i in 1..=3u64 {
        assert_eq!(
            ann.publish("r", Bytes::from(vec![i as u8])).await.unwrap(),
            i
        );
        assert_eq!(message(&mut bob).await.1, i);
    }

    cluster.redis.kill().await;
    let err = ann
        .publish("r", Bytes::from_static(b"lost?"))
        .await
        .expect_err("publishing without redis fails");
    assert!(is_internal(&err), "{err}");
    assert!(err.to_string().contains("redis"), "a clear message: {err}");
    let err = bob
        .join("r2", None)
        .await
        .expect_err("joining without redis fails");
    assert!(is_internal(&err), "{err}");
    // New sessions are refused clearly, and /healthz says why, until Redis is back.
    let node = &cluster.nodes[1];
    let started = Instant::now();
    loop {
        match Client::connect(&node.url("/chat"), &token("carl"), &node.trust()).await {
            Err(e) if is_internal(&e) => {
                assert!(e.to_string().contains("unavailable"), "{e}");
                break;
            }
            Ok(_) if started.elapsed() < WAIT => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            other => panic!("a new session while redis is down: {other:?}"),
        }
    }
    assert!(
        node.api().health().await.is_err(),
        "/healthz reports the outage"
    );

    cluster.redis.spawn().await;
    let started = Instant::now();
    let seq = loop {
        match ann.publish("r", Bytes::from_static(b"back")).await {
            Ok(seq) => break seq,
            Err(e) if is_internal(&e) && started.elapsed() < WAIT => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("publish did not recover: {e}"),
        }
    };
    assert_eq!(seq, 4, "the room kept its epoch and seq");
    let (_, got, body) = message(&mut bob).await;
    assert_eq!((got, &body[..]), (4, &b"back"[..]));

    // Presence is written back; joins work again, in the same epoch.
    let api = cluster.nodes[1].api();
    let started = Instant::now();
    while api.presence("/chat", Some("r")).await.ok().as_deref()
        != Some(&["ann".to_owned(), "bob".to_owned()][..])
    {
        assert!(started.elapsed() < WAIT, "presence was not restored");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(cluster.nodes[1].api().health().await.unwrap().status, "ok");
    let carl = cluster.nodes[1].client("/chat", "carl").await;
    let again = carl.join("r", None).await.unwrap();
    assert_eq!((again.epoch, again.seq), (joined.epoch, 4));
    assert_eq!(again.members, ["ann", "bob", "carl"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_with_since_across_nodes() {
    let cluster = Cluster::start(2).await;
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let ann = a.client("/chat", "ann").await;
    ann.join("log", None).await.unwrap();

    let mut bob = a.client("/chat", "bob").await;
    let joined = bob.join("log", None).await.unwrap();
    for i in 1..=3u8 {
        ann.publish("log", Bytes::from(vec![i])).await.unwrap();
    }
    let mut last = 0;
    while last < 3 {
        last = message(&mut bob).await.1;
    }
    bob.close().await;
    drop(bob);
    for i in 4..=8u8 {
        ann.publish("log", Bytes::from(vec![i])).await.unwrap();
    }

    // Bob comes back through the other node.
    let mut bob = b.client("/chat", "bob").await;
    let since = Since {
        epoch: joined.epoch,
        seq: last,
    };
    let rejoined = bob.join("log", Some(since)).await.unwrap();
    assert!(rejoined.recovered);
    assert_eq!((rejoined.epoch, rejoined.seq), (joined.epoch, 8));
    ann.publish("log", Bytes::from(vec![9])).await.unwrap();
    for expected in 4..=9u64 {
        let (_, seq, body) = message(&mut bob).await;
        assert_eq!((seq, &body[..]), (expected, &[expected as u8][..]));
    }

    // Too far back (another epoch) is not recovered.
    let carl = b.client("/chat", "carl").await;
    let stale = Since {
        epoch: joined.epoch - 1,
        seq: 2,
    };
    assert!(!carl.join("log", Some(stale)).await.unwrap().recovered);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_api_and_notifications_span_nodes() {
    let mut cluster = Cluster::start(2).await;
    let api_a = cluster.nodes[0].api();

    // Online user on n2, notified through n1's API.
    let mut dave = cluster.nodes[1].client("/notifications", "dave").await;
    let id = api_a.notify("dave", "ping", b"hello").await.unwrap();
    let (got, body) = expect(&mut dave, "a notification", |e| match e {
        Event::Notification { id, body, .. } => Some((id, body)),
        _ => None,
    })
    .await;
    assert_eq!((got, &body[..]), (id, &b"hello"[..]));
    dave.ack_notification(id).await.unwrap();

    // Offline user: stored in Redis, delivered on connect to the other node, kept
    // across a restart of that node until acknowledged.
    let id = api_a.notify("erin", "invoice", b"paid").await.unwrap();
    let mut erin = cluster.nodes[1].client("/notifications", "erin").await;
    let first = expect(&mut erin, "the pending notification", |e| match e {
        Event::Notification { id, .. } => Some(id),
        _ => None,
    })
    .await;
    assert_eq!(first, id);
    erin.close().await;
    drop(erin);
    cluster.nodes[1].kill().await;
    let restarted = Node::start("n2", &cluster.redis, cluster.dir.path()).await;
    cluster.nodes[1] = restarted;
    let mut erin = cluster.nodes[1].client("/notifications", "erin").await;
    let again = expect(&mut erin, "the notification after a restart", |e| match e {
        Event::Notification { id, .. } => Some(id),
        _ => None,
    })
    .await;
    assert_eq!(
        again, id,
        "unacknowledged notifications survive node restarts"
    );
    erin.ack_notification(id).await.unwrap();

    // Publish, broadcast and disconnect through n1 act on n2's sessions.
    let mut fred = cluster.nodes[1].client("/chat", "fred").await;
    fred.join("news", None).await.unwrap();
    let seq = api_a.publish("/chat", "news", b"extra").await.unwrap();
    let (_, got, body) = message(&mut fred).await;
    assert_eq!((got, &body[..]), (seq, &b"extra"[..]));
    api_a.broadcast("/chat", b"all hands").await.unwrap();
    expect(&mut fred, "the broadcast", |e| match e {
        Event::Broadcast { from, body, .. } if from == "server" && &body[..] == b"all hands" => {
            Some(())
        }
        _ => None,
    })
    .await;
    assert_eq!(
        api_a.presence("/chat", Some("news")).await.unwrap(),
        ["fred"]
    );
    assert_eq!(
        api_a.disconnect("fred").await.unwrap(),
        1,
        "fred's session on n2 counts, though n1 has none"
    );
    assert_eq!(api_a.disconnect("nobody").await.unwrap(), 0);

    // A revocation through n1 is kept in Redis: n2 refuses the old tokens too.
    let old = token("gil");
    let gil = cluster.nodes[1].client("/chat", "gil").await;
    assert_eq!(api_a.revoke("gil").await.unwrap(), 1);
    drop(gil);
    let again = Client::connect(
        &cluster.nodes[1].url("/chat"),
        &old,
        &cluster.nodes[1].trust(),
    )
    .await;
    assert!(
        matches!(
            again,
            Err(ClientError::Server {
                code: ErrorCode::Unauthorized,
                ..
            })
        ),
        "{again:?}"
    );
    expect(&mut fred, "the close", |e| match e {
        Event::Closed { .. } => Some(()),
        _ => None,
    })
    .await;
}

/// A WebSocket user on one node and a WebTransport user on the other are ordinary
/// members of one room: messages, presence, volatile events and notifications
/// cross both the nodes and the transports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_and_webtransport_users_meet_across_nodes() {
    let cluster = Cluster::start(2).await;
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let mut wanda = a.ws_client("/chat", "wanda").await;
    wanda.join("mixed", None).await.unwrap();
    let mut theo = b.client("/chat", "theo").await;
    let joined = theo.join("mixed", None).await.unwrap();
    assert_eq!(joined.members, ["theo", "wanda"]);
    expect(&mut wanda, "PresenceJoin theo", |e| match e {
        Event::PresenceJoin { user, .. } if user == "theo" => Some(()),
        _ => None,
    })
    .await;

    // Who is online, a page at a time, from Redis' sorted index.
    assert_eq!(theo.online_page("", 1).await.unwrap(), ["theo"]);
    assert_eq!(wanda.online_page("theo", 5).await.unwrap(), ["wanda"]);
    assert!(theo.online_page("wanda", 5).await.unwrap().is_empty());
    assert_eq!(wanda.online().await.unwrap(), ["theo", "wanda"]);
    // And a room's members.
    assert_eq!(theo.members_page("mixed", "", 1).await.unwrap(), ["theo"]);
    assert_eq!(
        wanda.members_page("mixed", "theo", 5).await.unwrap(),
        ["wanda"]
    );
    assert_eq!(wanda.members("mixed").await.unwrap(), ["theo", "wanda"]);

    let seq = wanda
        .publish("mixed", Bytes::from_static(b"hi from ws"))
        .await
        .unwrap();
    assert_eq!(
        message(&mut theo).await,
        ("mixed".into(), seq, Bytes::from_static(b"hi from ws"))
    );
    let seq = theo
        .publish("mixed", Bytes::from_static(b"hi from wt"))
        .await
        .unwrap();
    let got = loop {
        let got = message(&mut wanda).await;
        if got.1 == seq {
            break got;
        }
    };
    assert_eq!(
        got,
        ("mixed".into(), seq, Bytes::from_static(b"hi from wt"))
    );

    // Volatile: the WebSocket side sends on its lane, the other node delivers a datagram.
    let from = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            wanda
                .send_volatile("mixed", Bytes::from_static(b"typing"))
                .unwrap();
            if let Ok(Some(Event::Volatile { from, .. })) =
                tokio::time::timeout(Duration::from_millis(100), theo.next_event()).await
            {
                return from;
            }
        }
    })
    .await
    .expect("a volatile event across nodes");
    assert_eq!(from, "wanda");

    // A notification sent through node b reaches the WebSocket session on node a.
    let mut inbox = a.ws_client("/notifications", "wanda").await;
    let id = b.api().notify("wanda", "mention", b"{}").await.unwrap();
    let got = expect(&mut inbox, "the notification", |e| match e {
        Event::Notification { id, .. } => Some(id),
        _ => None,
    })
    .await;
    assert_eq!(got, id);

    wanda.close().await;
    expect(&mut theo, "PresenceLeave wanda", |e| match e {
        Event::PresenceLeave { user, .. } if user == "wanda" => Some(()),
        _ => None,
    })
    .await;
}

/// Redis loses a user's inbox and id counter (no persistence, a failover to an
/// empty replica): the next notification still gets a higher id, so a session that
/// saw the earlier ones does not skip it as already delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notification_ids_keep_increasing_when_redis_loses_them() {
    let cluster = Cluster::start(1).await;
    let node = &cluster.nodes[0];
    let mut hal = node.client("/notifications", "hal").await;
    let api = node.api();
    let first = api.notify("hal", "ping", b"one").await.unwrap();
    let got = expect(&mut hal, "the first notification", |e| match e {
        Event::Notification { id, .. } => Some(id),
        _ => None,
    })
    .await;
    assert_eq!(got, first);
    hal.ack_notification(first).await.unwrap();

    let port = cluster.redis.port;
    let lost = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let del = "*3\r\n$3\r\nDEL\r\n$19\r\nwtgate:inbox-id:hal\r\n$16\r\nwtgate:inbox:hal\r\n";
        s.write_all(del.as_bytes()).unwrap();
        let mut reply = [0u8; 4];
        s.read_exact(&mut reply).unwrap();
        reply
    })
    .await
    .unwrap();
    assert_eq!(&lost, b":1\r\n", "the id counter was there to lose");

    let second = api.notify("hal", "ping", b"two").await.unwrap();
    assert!(second > first, "id {second} after {first}");
    let (got, body) = expect(&mut hal, "the notification after the loss", |e| match e {
        Event::Notification { id, body, .. } => Some((id, body)),
        _ => None,
    })
    .await;
    assert_eq!((got, &body[..]), (second, &b"two"[..]));
    assert!(second < 1 << 53, "ids stay exact in JavaScript");
}

/// In cluster mode too, a namespace holds a bounded number of rooms (empty ones
/// give way, and with every room occupied a new one is refused with TooManyRooms),
/// and the history of all rooms a bounded number of bytes (the least recently
/// published rooms lose theirs first: their members are told `recovered: false`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_and_history_bytes_are_bounded_in_redis() {
    let redis = RedisServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("wtgate.toml");
    std::fs::write(
        &config,
        "[limits]\nmax_rooms_per_namespace = 3\nhistory_bytes_total = 40000\n",
    )
    .unwrap();
    let args = ["--config", config.to_str().unwrap()];
    let a = Node::start_with("n1", &redis, dir.path(), &args).await;
    let b = Node::start_with("n2", &redis, dir.path(), &args).await;

    // Three rooms with members, on two nodes: a fourth is refused cluster-wide.
    let ann = a.client("/chat", "ann").await;
    let bob = b.client("/chat", "bob").await;
    ann.join("r1", None).await.unwrap();
    ann.join("r2", None).await.unwrap();
    bob.join("r3", None).await.unwrap();
    let err = bob.join("r4", None).await.unwrap_err();
    assert!(
        matches!(
            &err,
            ClientError::Server {
                code: ErrorCode::TooManyRooms,
                ..
            }
        ),
        "{err}"
    );
    let err = a.api().publish("/chat", "r5", b"x").await.unwrap_err();
    assert!(err.to_string().contains("rooms"), "{err}");
    // Once a room is empty, it gives way.
    ann.leave("r2").await.unwrap();
    bob.join("r4", None).await.unwrap();

    // History of all rooms: 40 kB. r1 is published to first and least since.
    let body = Bytes::from(vec![b'h'; 8_000]);
    let r1 = ann.join("r1", None).await;
    assert!(r1.is_err(), "already joined");
    let first = ann.publish("r1", body.clone()).await.unwrap();
    for _ in 0..6 {
        bob.publish("r3", body.clone()).await.unwrap();
        bob.publish("r4", body.clone()).await.unwrap();
    }
    let total = redis_get(redis.port, "wtgate:hist-total");
    assert!(total <= 40_000, "history bytes in Redis: {total}");
    assert!(total > 0, "history is counted");
    // r1's history went first: a rejoin from before its message is not recovered.
    let carl = b.client("/chat", "carl").await;
    let since = Since {
        epoch: carl.join("r1", None).await.unwrap().epoch,
        seq: first - 1,
    };
    carl.leave("r1").await.unwrap();
    let again = carl.join("r1", Some(since)).await.unwrap();
    assert!(!again.recovered, "r1's history was shed");
}

/// An integer value of a Redis string key (0 when missing).
fn redis_get(port: u16, key: &str) -> i64 {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let cmd = format!("*2\r\n$3\r\nGET\r\n${}\r\n{key}\r\n", key.len());
    s.write_all(cmd.as_bytes()).unwrap();
    let mut reply = Vec::new();
    let mut byte = [0u8; 1];
    // `$-1\r\n` or `$N\r\nDIGITS\r\n`.
    let mut lines = 0;
    while lines < 2 {
        s.read_exact(&mut byte).unwrap();
        reply.push(byte[0]);
        if byte[0] == b'\n' {
            lines += 1;
            if reply.starts_with(b"$-1") {
                return 0;
            }
        }
    }
    let text = String::from_utf8(reply).unwrap();
    text.lines().nth(1).unwrap().trim().parse().unwrap()
}

/// Webhook events a receiver in the test process got, signatures checked.
#[derive(Default)]
struct Webhooks {
    events: std::sync::Mutex<Vec<serde_json::Value>>,
    bad: std::sync::atomic::AtomicUsize,
}

async fn receive_webhook(
    axum::extract::State(got): axum::extract::State<std::sync::Arc<Webhooks>>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> axum::http::StatusCode {
    let signature = headers
        .get(wtgate::hooks::SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    if wtgate::hooks::verify(SECRET.as_bytes(), signature, &body, now, 300).is_err() {
        got.bad.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return axum::http::StatusCode::UNAUTHORIZED;
    }
    got.events
        .lock()
        .unwrap()
        .push(serde_json::from_slice(&body).unwrap());
    axum::http::StatusCode::OK
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_webhook_per_event_across_two_nodes() {
    let got = std::sync::Arc::new(Webhooks::default());
    let app = axum::Router::new()
        .route("/webhooks", axum::routing::post(receive_webhook))
        .with_state(got.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/webhooks", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let redis = RedisServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("wtgate.toml");
    std::fs::write(
        &config,
        format!("[webhooks]\nurl = \"{url}\"\nmax_backoff = \"200ms\"\n"),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let n1 = Node::start_with("n1", &redis, dir.path(), &["--config", config]).await;
    let n2 = Node::start_with("n2", &redis, dir.path(), &["--config", config]).await;

    // alice on both nodes, bob on n2, all in one room.
    let alice1 = n1.client("/chat", "alice").await;
    alice1.join("lobby", None).await.unwrap();
    let alice2 = n2.client("/chat", "alice").await;
    alice2.join("lobby", None).await.unwrap();
    let bob = n2.client("/chat", "bob").await;
    bob.join("lobby", None).await.unwrap();
    alice1.leave("lobby").await.unwrap();
    alice1.close().await;
    alice2.close().await;

    let summary = |got: &Webhooks| {
        let mut s: Vec<String> = got
            .events
            .lock()
            .unwrap()
            .iter()
            .map(|e| {
                format!(
                    "{} {} {}",
                    e["type"].as_str().unwrap(),
                    e["user"].as_str().unwrap(),
                    e["room"].as_str().unwrap_or("")
                )
            })
            .collect();
        s.sort();
        s
    };
    let expected = [
        "room.created alice lobby",
        "room.joined alice lobby",
        "room.joined bob lobby",
        "room.left alice lobby",
        "room.left bob lobby",
        "room.vacated bob lobby",
        "session.closed alice ",
        "session.closed alice ",
        "session.closed bob ",
        "session.opened alice ",
        "session.opened alice ",
        "session.opened bob ",
    ];
    // bob leaves last, so the room is vacated by him: wait until n2 has seen
    // alice's session end (two closes on one node race otherwise).
    let deadline = Instant::now() + WAIT;
    while summary(&got)
        .iter()
        .filter(|e| *e == "session.closed alice ")
        .count()
        < 2
    {
        assert!(Instant::now() < deadline, "only {:?}", summary(&got));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bob.close().await;
    while got.events.lock().unwrap().len() < expected.len() {
        assert!(Instant::now() < deadline, "only {:?}", summary(&got));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Both nodes keep sending for a while: nothing more may come.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(summary(&got), expected);
    let ids: std::collections::HashSet<String> = got
        .events
        .lock()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), expected.len(), "each event once");
    assert_eq!(got.bad.load(std::sync::atomic::Ordering::Relaxed), 0);
    drop((n1, n2));
}
