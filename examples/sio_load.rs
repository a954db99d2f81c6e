//! The Socket.IO load generator of bench/ in Rust: `bench/socketio/load.js`'s workload,
//! flags and `--json` report, speaking Engine.IO v4 / Socket.IO v5 frames over a
//! WebSocket (tokio-tungstenite + rustls) instead of going through socket.io-client.
//!
//! Why: load.js is one Node process and saturates its core near 100–300k deliveries/s,
//! so above that it measures itself, not the server. This one runs every session on
//! one current-thread runtime (bench/run.sh pins it to cpu1) at about 1–2 µs of CPU per
//! delivery, most of it the kernel's socket reads: it holds 800k deliveries/s, past
//! the point where server.js fills its core.
//!
//!   cargo build --release --example sio_load
//!   target/release/examples/sio_load --url https://127.0.0.1:4435/chat --ca cert.pem \
//!     --tls-name localhost --clients 200 --rooms 1 --senders 10 --rate 500 \
//!     --duration 10s --warmup 2s --json [--server-pid PID]
//!
//! Wire: `wss://HOST:PORT/socket.io/?EIO=4&transport=websocket`; the server opens with
//! `0{...}`, the client connects the URL's path as namespace (`40/chat,` →
//! `40/chat,{"sid":...}`), emits `42/chat,ID["join",ROOM]` / `["publish",ROOM,BODY]`
//! (acked `43/chat,ID[...]`) or `42/chat,["volatile",ROOM,BODY]`, receives
//! `42/chat,["msg",BODY]` and answers the server's ping `2` with `3`.
//! Every measured figure is computed as load.js computes it (see the comments there).

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use clap::Parser;
use futures::{FutureExt, SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::{Serialize, Serializer};
use tokio::net::TcpStream;
use tokio::sync::{watch, Semaphore};
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::{self, pki_types};
use tokio_tungstenite::tungstenite::http::Uri;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tokio_util::either::Either;
use wtgate::load::procfs::{cpu_percent, ProcSample};

#[derive(Parser, Debug)]
#[command(about = "Socket.IO load generator (the flags of bench/socketio/load.js)")]
struct Args {
    #[arg(long)]
    url: Vec<String>,
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Check the certificate against this name instead of the URL's host.
    #[arg(long)]
    tls_name: Option<String>,
    #[arg(long, default_value_t = 100)]
    clients: usize,
    #[arg(long, default_value_t = 1)]
    rooms: usize,
    #[arg(long, default_value_t = 1)]
    rooms_per_client: usize,
    #[arg(long)]
    group_size: Option<usize>,
    #[arg(long, default_value_t = 0.0)]
    churn_rate: f64,
    #[arg(long, default_value = "1s")]
    churn_life: String,
    #[arg(long)]
    senders: Option<usize>,
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    #[arg(long, default_value = "10s")]
    duration: String,
    #[arg(long, default_value = "2s")]
    warmup: String,
    #[arg(long, default_value_t = 64)]
    body: usize,
    #[arg(long, default_value = "stream")]
    mode: String,
    #[arg(long, default_value_t = 0.0)]
    connect_rate: f64,
    #[arg(long)]
    server_pid: Vec<u32>,
    #[arg(long)]
    json: bool,
}

/// `10s`, `500ms`, `2m` or plain seconds, as load.js's `seconds`.
fn seconds(s: &str) -> Option<f64> {
    let s = s.trim();
    let (num, mult) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else {
        (s, 1.0)
    };
    if num.is_empty() || !num.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return None;
    }
    num.parse::<f64>().ok().map(|n| n * mult)
}

// --- the plan (as load.js / src/load/plan.rs) ---

struct Plan {
    clients: usize,
    rooms: usize,
    per_client: usize,
    /// 0: no groups.
    group: usize,
    senders: usize,
    names: Vec<String>,
}

impl Plan {
    fn room_of(&self, i: usize, j: usize) -> usize {
        match (j, i.checked_div(self.group)) {
            (_, None) => (i + j) % self.rooms,
            (0, Some(_)) => i,
            (_, Some(group)) => self.clients + group,
        }
    }
    fn rooms_of(&self, i: usize) -> Vec<usize> {
        (0..self.per_client).map(|j| self.room_of(i, j)).collect()
    }
    fn publish_slot(&self, n: u64) -> usize {
        if self.group > 0 {
            1
        } else {
            (n % self.per_client as u64) as usize
        }
    }
    fn sends_to(&self, s: usize, r: usize) -> bool {
        s < self.senders
            && r < self.rooms
            && if self.group > 0 {
                r == self.room_of(s, 1)
            } else {
                (r + self.rooms - s % self.rooms) % self.rooms < self.per_client
            }
    }
    fn slots_in(&self) -> usize {
        if self.group > 0 {
            self.group
        } else {
            self.per_client * self.senders.div_ceil(self.rooms)
        }
    }
    fn slot_of(&self, s: usize, r: usize) -> usize {
        if self.group > 0 {
            s % self.group
        } else {
            (s / self.rooms) * self.per_client + (r + self.rooms - s % self.rooms) % self.rooms
        }
    }
}

/// A receiver's per-sender windows in one room: highest counter + a 32-message
/// bitmap, so reordering within 32 is not taken for a duplicate (as tally.rs).
struct Tally {
    room: usize,
    next: Vec<u64>,
    mask: Vec<u32>,
}

impl Tally {
    fn new(room: usize, slots: usize) -> Tally {
        Tally {
            room,
            next: vec![0; slots],
            mask: vec![0; slots],
        }
    }
    /// Whether counter `c` of `slot` was seen before (and marks it seen).
    fn seen(&mut self, slot: usize, c: u64) -> bool {
        let next = self.next[slot];
        if c >= next {
            let shift = c + 1 - next;
            self.mask[slot] = if shift >= 32 {
                1
            } else {
                (self.mask[slot] << shift) | 1
            };
            self.next[slot] = c + 1;
            return false;
        }
        let back = next - 1 - c;
        if back >= 32 {
            return true;
        }
        let bit = 1u32 << back;
        let was = self.mask[slot] & bit != 0;
        self.mask[slot] |= bit;
        was
    }
}

// --- frames ---

/// One incoming Engine.IO/Socket.IO packet, as far as the generator cares.
#[derive(Debug, PartialEq)]
enum Packet<'a> {
    /// Engine.IO open (`0{...}`).
    Open,
    /// Engine.IO ping: answered with `3`.
    Ping,
    /// Engine.IO close.
    Close,
    /// Socket.IO connect to our namespace (`40/chat,{"sid":...}`).
    Connect,
    /// Socket.IO connect_error (`44/chat,{"message":...}`).
    ConnectError(String),
    /// Socket.IO disconnect from the server (`41/chat,`).
    Disconnect,
    /// An event: its name and its first argument (`None` when not a string).
    Event(Cow<'a, str>, Option<Cow<'a, str>>),
    /// An ack: its id and the `error` of an `{error}` reply.
    Ack(u64, Option<String>),
    Other,
}

/// `/chat,` for namespace `/chat`; nothing for the main namespace.
fn nsp_prefix(path: &str) -> String {
    match path.trim_end_matches('/') {
        "" => String::new(),
        p => format!("{p},"),
    }
}

/// Leading decimal digits as a number, and the rest.
fn digits(s: &str) -> (Option<u64>, &str) {
    let end = s
        .bytes()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(s.len());
    (s[..end].parse().ok(), &s[end..])
}

fn parse_packet<'a>(text: &'a str, prefix: &str) -> Packet<'a> {
    let Some(&kind) = text.as_bytes().first() else {
        return Packet::Other;
    };
    match kind {
        b'0' => return Packet::Open,
        b'1' => return Packet::Close,
        b'2' if text.len() == 1 => return Packet::Ping,
        b'4' => {}
        _ => return Packet::Other,
    }
    let Some(sio) = text.as_bytes().get(1).copied() else {
        return Packet::Other;
    };
    let Some(rest) = text.get(2..).and_then(|t| t.strip_prefix(prefix)) else {
        return Packet::Other;
    };
    // The main namespace's packets may still name it ("/,"): anything else with
    // a leading '/' is another namespace.
    if prefix.is_empty() && rest.starts_with('/') {
        return Packet::Other;
    }
    match sio {
        b'0' => Packet::Connect,
        b'1' => Packet::Disconnect,
        b'4' => Packet::ConnectError(
            serde_json::from_str::<serde_json::Value>(rest)
                .ok()
                .and_then(|v| v.get("message")?.as_str().map(str::to_owned))
                .unwrap_or_else(|| rest.to_owned()),
        ),
        b'2' => {
            let (_, args) = digits(rest);
            parse_event(args)
        }
        b'3' => {
            let (Some(id), args) = digits(rest) else {
                return Packet::Other;
            };
            // Only an `{error}` reply matters; most acks are `[{"seq":N}]`.
            let error = if args.contains("\"error\"") {
                serde_json::from_str::<serde_json::Value>(args)
                    .ok()
                    .and_then(|v| Some(v.get(0)?.get("error")?.to_string()))
                    .map(|e| e.trim_matches('"').to_owned())
            } else {
                None
            };
            Packet::Ack(id, error)
        }
        _ => Packet::Other,
    }
}

/// `["name","arg",...]`: without escapes (the bench's bodies have none) the strings
/// are borrowed from the frame; anything else goes through serde_json.
fn parse_event(args: &str) -> Packet<'_> {
    let fast = (|| {
        let rest = args.strip_prefix("[\"")?;
        let q = rest.find('"')?;
        let (name, rest) = (&rest[..q], &rest[q + 1..]);
        let rest = rest.strip_prefix(",\"")?;
        let q = rest.find('"')?;
        let (arg, rest) = (&rest[..q], &rest[q + 1..]);
        if name.contains('\\') || arg.contains('\\') || rest != "]" {
            return None;
        }
        Some(Packet::Event(Cow::Borrowed(name), Some(Cow::Borrowed(arg))))
    })();
    if let Some(p) = fast {
        return p;
    }
    let Ok(serde_json::Value::Array(v)) = serde_json::from_str::<serde_json::Value>(args) else {
        return Packet::Other;
    };
    let Some(name) = v.first().and_then(|n| n.as_str()) else {
        return Packet::Other;
    };
    let arg = v
        .get(1)
        .and_then(|a| a.as_str())
        .map(|a| Cow::Owned(a.to_owned()));
    Packet::Event(Cow::Owned(name.to_owned()), arg)
}

/// A JSON string literal (the fast path for strings that need no escape).
fn push_json_str(out: &mut String, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        out.push_str(&serde_json::to_string(s).expect("a string serializes"));
    }
}

/// `42{prefix}{ack}["a","b",...]`: an event with string arguments.
fn encode_event(out: &mut String, prefix: &str, ack: Option<u64>, args: &[&str]) {
    out.clear();
    out.push_str("42");
    out.push_str(prefix);
    if let Some(id) = ack {
        let _ = write!(out, "{id}");
    }
    out.push('[');
    for (i, a) in args.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_json_str(out, a);
    }
    out.push(']');
}

/// `room|sender|counter|sent_us|xxx…` padded to `len` (never cut).
fn encode_body(out: &mut String, room: usize, sender: usize, counter: u64, sent: u64, len: usize) {
    out.clear();
    let _ = write!(out, "{room}|{sender}|{counter}|{sent}|");
    while out.len() < len {
        out.push('x');
    }
}

/// (room, sender, counter, sent_us) of a body; `None` for a malformed one.
fn decode_body(body: &str) -> Option<(usize, usize, u64, u64)> {
    let mut f = body.splitn(5, '|');
    let room = f.next()?.parse().ok()?;
    let sender = f.next()?.parse().ok()?;
    let counter = f.next()?.parse().ok()?;
    let sent = f.next()?.parse().ok()?;
    f.next()?;
    Some((room, sender, counter, sent))
}

// --- shared figures ---

/// µs since the process started, monotonic: the bodies' send times and every
/// instant of the run are on this one clock.
fn now_us() -> f64 {
    base().elapsed().as_secs_f64() * 1e6
}
fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}
fn instant_at(us: f64) -> tokio::time::Instant {
    tokio::time::Instant::from_std(base() + Duration::from_secs_f64(us.max(0.0) / 1e6))
}

fn histo(digits: u8) -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, digits).expect("valid bounds")
}

#[derive(Default)]
struct Counts {
    arrived: u64,
    measured: u64,
    delivered: u64,
    duplicates: u64,
    misrouted: u64,
    malformed: u64,
    unmeasured: u64,
}

const CONNECTING: u8 = 0;
const SENDING: u8 = 1;
const STOPPING: u8 = 2;

struct Shared {
    plan: Plan,
    datagram: bool,
    body_len: usize,
    rate: f64,
    warmup_us: f64,
    end_us: f64,
    epoch_us: Cell<f64>,
    phase: watch::Sender<u8>,
    tls: Option<tokio_rustls::TlsConnector>,
    tls_name: Option<String>,
    ws_config: WebSocketConfig,
    /// In first-seen order, as a JS object's keys.
    errors: RefCell<Vec<(String, u64)>>,
    counts: RefCell<Counts>,
    latency: RefCell<Histogram<u64>>,
    connect_h: RefCell<Histogram<u64>>,
    room_latency: RefCell<Vec<Option<Histogram<u64>>>>,
    churn_h: RefCell<Histogram<u64>>,
    churn_sessions: Cell<u64>,
    churn_failed: Cell<u64>,
    sent_per_room: RefCell<Vec<u64>>,
    members: RefCell<Vec<u64>>,
    connected: Cell<usize>,
}

impl Shared {
    fn err(&self, kind: &str, n: u64) {
        let mut errors = self.errors.borrow_mut();
        match errors.iter_mut().find(|(k, _)| k == kind) {
            Some((_, count)) => *count += n,
            None => errors.push((kind.to_owned(), n)),
        }
    }
    fn stopping(&self) -> bool {
        *self.phase.borrow() == STOPPING
    }
    fn in_window(&self, rel: f64) -> bool {
        rel >= self.warmup_us && rel < self.end_us
    }

    fn on_message(&self, tallies: &mut [Tally], body: Option<&str>) {
        let mut c = self.counts.borrow_mut();
        c.arrived += 1;
        let now = now_us();
        let Some((room, sender, counter, sent)) = body.and_then(decode_body) else {
            c.malformed += 1;
            return;
        };
        if !self.plan.sends_to(sender, room) {
            c.malformed += 1;
            return;
        }
        let Some(t) = tallies.iter_mut().find(|t| t.room == room) else {
            c.misrouted += 1;
            return;
        };
        let slot = self.plan.slot_of(sender, room);
        if slot >= t.next.len() {
            c.malformed += 1;
            return;
        }
        if t.seen(slot, counter) {
            c.duplicates += 1;
            return;
        }
        if !self.in_window(sent as f64 - self.epoch_us.get()) {
            c.unmeasured += 1;
            return;
        }
        c.delivered += 1;
        c.measured += 1;
        let us = ((now - sent as f64).round() as u64).max(1);
        self.latency.borrow_mut().saturating_record(us);
        let mut rooms = self.room_latency.borrow_mut();
        rooms[room]
            .get_or_insert_with(|| histo(2))
            .saturating_record(us);
    }

    fn expected(&self) -> u64 {
        let members = self.members.borrow();
        self.sent_per_room
            .borrow()
            .iter()
            .zip(members.iter())
            .map(|(&s, &m)| {
                s * if self.datagram {
                    m.saturating_sub(1)
                } else {
                    m
                }
            })
            .sum()
    }
}

// --- connections ---

type Ws = WebSocketStream<Either<TcpStream, TlsStream<TcpStream>>>;

/// Where a `--url` points: its host and port, the Engine.IO WebSocket URL and the
/// namespace (the URL's path), as socket.io-client reads it.
#[derive(Clone)]
struct Target {
    host: String,
    port: u16,
    tls: bool,
    ws_url: String,
    prefix: String,
}

impl Target {
    fn parse(url: &str) -> Result<Target, String> {
        let uri: Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
        let tls = match uri.scheme_str() {
            Some("https" | "wss") => true,
            Some("http" | "ws") => false,
            _ => return Err(format!("{url}: not an http(s):// or ws(s):// URL")),
        };
        let authority = uri.authority().ok_or(format!("{url}: no host"))?;
        let host = authority.host().trim_matches(['[', ']']).to_owned();
        let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
        Ok(Target {
            ws_url: format!(
                "{}://{authority}/socket.io/?EIO=4&transport=websocket",
                if tls { "wss" } else { "ws" }
            ),
            host,
            port,
            tls,
            prefix: nsp_prefix(uri.path()),
        })
    }
}

/// Without `--ca`, load.js does not check the certificate (rejectUnauthorized false).
#[derive(Debug)]
struct AnyCert(rustls::crypto::WebPkiSupportedAlgorithms);

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &pki_types::CertificateDer<'_>,
        _: &[pki_types::CertificateDer<'_>],
        _: &pki_types::ServerName<'_>,
        _: &[u8],
        _: pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// TLS as load.js: the `--ca` file's certificates as the only roots, or no check.
fn tls_connector(ca: Option<&PathBuf>) -> Result<tokio_rustls::TlsConnector, String> {
    use pki_types::pem::PemObject;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?;
    let mut config = match ca {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
            let mut roots = rustls::RootCertStore::empty();
            for cert in pki_types::CertificateDer::pem_slice_iter(&pem) {
                roots
                    .add(cert.map_err(|e| e.to_string())?)
                    .map_err(|e| e.to_string())?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCert(
                provider.signature_verification_algorithms,
            )))
            .with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// The next text message, answering pings on the way; `Err` once the socket ends.
async fn next_text(ws: &mut Ws) -> Result<tokio_tungstenite::tungstenite::Utf8Bytes, String> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return Ok(t),
            Some(Ok(Message::Close(_))) | None => return Err("transport close".into()),
            Some(Err(e)) => return Err(e.to_string()),
            Some(Ok(_)) => {}
        }
    }
}

async fn send_text(ws: &mut Ws, text: String) -> Result<(), String> {
    ws.send(Message::text(text))
        .await
        .map_err(|e| e.to_string())
}

/// TCP, TLS, the WebSocket upgrade, Engine.IO open and the namespace connect.
async fn open(shared: &Shared, target: &Target) -> Result<Ws, String> {
    let tcp = TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(|e| e.to_string())?;
    // socket.io (ws) sets TCP_NODELAY too.
    let _ = tcp.set_nodelay(true);
    let stream = match (&shared.tls, target.tls) {
        (Some(tls), true) => {
            let name = shared.tls_name.as_deref().unwrap_or(&target.host);
            let name =
                pki_types::ServerName::try_from(name.to_owned()).map_err(|e| e.to_string())?;
            Either::Right(tls.connect(name, tcp).await.map_err(|e| e.to_string())?)
        }
        (None, true) => return Err("no TLS settings".into()),
        (_, false) => Either::Left(tcp),
    };
    let (mut ws, _) =
        tokio_tungstenite::client_async_with_config(&target.ws_url, stream, Some(shared.ws_config))
            .await
            .map_err(|e| e.to_string())?;
    loop {
        let t = next_text(&mut ws).await?;
        if parse_packet(&t, &target.prefix) == Packet::Open {
            break;
        }
    }
    send_text(&mut ws, format!("40{}", target.prefix)).await?;
    loop {
        let t = next_text(&mut ws).await?;
        match parse_packet(&t, &target.prefix) {
            Packet::Connect => return Ok(ws),
            Packet::ConnectError(m) => return Err(m),
            Packet::Ping => send_text(&mut ws, "3".into()).await?,
            Packet::Close => return Err("transport close".into()),
            _ => {}
        }
    }
}

/// Emits `join` for each room (ack ids from `*ack`) and waits for every ack.
async fn join(ws: &mut Ws, prefix: &str, names: &[&str], ack: &mut u64) -> Result<(), String> {
    let first = *ack;
    let mut out = String::new();
    for name in names {
        encode_event(&mut out, prefix, Some(*ack), &["join", name]);
        *ack += 1;
        ws.feed(Message::text(out.clone()))
            .await
            .map_err(|e| e.to_string())?;
    }
    ws.flush().await.map_err(|e| e.to_string())?;
    let mut pending = names.len();
    while pending > 0 {
        let t = next_text(ws).await?;
        match parse_packet(&t, prefix) {
            Packet::Ack(id, _) if (first..*ack).contains(&id) => pending -= 1,
            Packet::Ping => send_text(ws, "3".into()).await?,
            Packet::Close | Packet::Disconnect => return Err("transport close".into()),
            _ => {}
        }
    }
    Ok(())
}

/// Sender k's schedule: message n due at (k + n·senders)/rate s, catch-up bounded
/// to 50 ms of messages (the rest skipped and counted), as load.js's `startSender`.
struct Pacer {
    k: usize,
    period_us: f64,
    phase_us: f64,
    max_burst: u64,
    n: u64,
    counter: u64,
}

impl Pacer {
    const CATCH_UP_US: f64 = 50_000.0;

    fn new(k: usize, senders: usize, rate: f64) -> Pacer {
        let period_us = senders as f64 * 1e6 / rate;
        Pacer {
            k,
            period_us,
            phase_us: k as f64 * 1e6 / rate,
            max_burst: ((Self::CATCH_UP_US / period_us).floor() as u64).max(1),
            n: 0,
            counter: 0,
        }
    }
    fn at(&self, m: u64) -> f64 {
        self.phase_us + m as f64 * self.period_us
    }
    /// When the next tick is due (relative µs), if any is left.
    fn next_due(&self, end_us: f64) -> Option<f64> {
        let at = self.at(self.n);
        (at < end_us).then_some(at)
    }
}

/// One tick of a sender: feeds the due publishes (flushed by the caller).
async fn tick(
    shared: &Shared,
    ws: &mut Ws,
    p: &mut Pacer,
    prefix: &str,
    ack: &mut u64,
) -> Result<(), String> {
    let epoch = shared.epoch_us.get();
    let horizon = (now_us() - epoch).min(shared.end_us - 1.0);
    let mut due = 0;
    while p.at(p.n) <= horizon && p.at(p.n) < shared.end_us {
        p.n += 1;
        due += 1;
    }
    let send = due.min(p.max_burst);
    if due > send {
        shared.err("send skipped: sender behind", due - send);
    }
    let now_rel = now_us() - epoch;
    let sent_abs = (epoch + now_rel).round() as u64;
    let measured = shared.in_window(now_rel);
    let (mut body, mut out) = (String::new(), String::new());
    for _ in 0..send {
        let room = shared
            .plan
            .room_of(p.k, shared.plan.publish_slot(p.counter));
        let name = shared.plan.names[room].as_str();
        encode_body(&mut body, room, p.k, p.counter, sent_abs, shared.body_len);
        p.counter += 1;
        if shared.datagram {
            encode_event(&mut out, prefix, None, &["volatile", name, &body]);
        } else {
            encode_event(&mut out, prefix, Some(*ack), &["publish", name, &body]);
            *ack += 1;
        }
        ws.feed(Message::text(out.clone()))
            .await
            .map_err(|e| e.to_string())?;
        if measured {
            shared.sent_per_room.borrow_mut()[room] += 1;
        }
    }
    Ok(())
}

/// What a session does with incoming events once joined.
enum Role {
    /// A measured client: its tallies; `Some(k)` when it is sender k.
    Client(Vec<Tally>, Option<usize>),
    /// A churn session: reads (and pongs) until `until`, ignoring events.
    Churn(tokio::time::Instant),
}

/// Messages handled per wake-up before the loop looks at its timers again.
const BATCH: usize = 64;

/// A joined session until the run stops (or a churn session's life ends).
async fn session(shared: Rc<Shared>, mut ws: Ws, prefix: String, mut ack: u64, mut role: Role) {
    let mut phase = shared.phase.subscribe();
    let event = if shared.datagram { "vmsg" } else { "msg" };
    let mut pacer: Option<Pacer> = None;
    let ended = loop {
        let now_phase = *phase.borrow_and_update();
        if now_phase == STOPPING {
            break None;
        }
        if let Role::Client(_, Some(k)) = role {
            if now_phase == SENDING && pacer.is_none() && shared.rate > 0.0 {
                pacer = Some(Pacer::new(k, shared.plan.senders, shared.rate));
            }
        }
        let due = match (&role, &pacer) {
            (Role::Churn(until), _) => Some(*until),
            (_, Some(p)) => p
                .next_due(shared.end_us)
                .map(|at| instant_at(shared.epoch_us.get() + at)),
            _ => None,
        };
        tokio::select! {
            biased;
            r = phase.changed() => if r.is_err() { break None; },
            _ = tokio::time::sleep_until(due.unwrap_or_else(tokio::time::Instant::now)), if due.is_some() => {
                match (&role, pacer.as_mut()) {
                    (Role::Churn(_), _) => break None,
                    (_, Some(p)) => {
                        let sent = tick(&shared, &mut ws, p, &prefix, &mut ack).await;
                        if let Err(e) = sent.and(ws.flush().await.map_err(|e| e.to_string())) {
                            break Some(e);
                        }
                    }
                    _ => {}
                }
            }
            m = ws.next() => {
                let mut m = Some(m);
                let mut pong = false;
                let mut gone = None;
                // Take what is already buffered before polling the timers again.
                for _ in 0..BATCH {
                    let Some(next) = m.take().or_else(|| ws.next().now_or_never()) else {
                        break;
                    };
                    match next {
                        Some(Ok(Message::Text(t))) => match parse_packet(&t, &prefix) {
                            Packet::Event(name, body) => {
                                if let Role::Client(tallies, _) = &mut role {
                                    if name == event {
                                        shared.on_message(tallies, body.as_deref());
                                    }
                                }
                            }
                            Packet::Ping => pong = true,
                            Packet::Ack(_, Some(e)) => shared.err(&format!("server: {e}"), 1),
                            Packet::Disconnect => { gone = Some("io server disconnect".to_owned()); break; }
                            Packet::Close => { gone = Some("transport close".to_owned()); break; }
                            _ => {}
                        },
                        Some(Ok(Message::Close(_))) | None => { gone = Some("transport close".to_owned()); break; }
                        Some(Err(e)) => { gone = Some(format!("transport error: {e}")); break; }
                        Some(Ok(_)) => {}
                    }
                }
                if pong {
                    if let Err(e) = ws.send(Message::text("3")).await {
                        gone.get_or_insert(format!("transport error: {e}"));
                    }
                }
                if gone.is_some() {
                    break gone;
                }
            }
        }
    };
    match ended {
        Some(reason) => {
            if matches!(role, Role::Client(..)) && !shared.stopping() {
                shared.err(&format!("disconnected: {reason}"), 1);
            }
        }
        None => {
            // As socket.io-client's close(): leave the namespace, close the socket.
            let _ = tokio::time::timeout(Duration::from_millis(200), async {
                let _ = ws.feed(Message::text(format!("41{prefix}"))).await;
                let _ = ws.close(None).await;
            })
            .await;
        }
    }
}

/// Client i: connects (10 s, as socket.io-client's `timeout`), joins its rooms, then
/// lives in [`session`]. The permit bounds connects in flight (load.js: 256).
async fn client(
    shared: Rc<Shared>,
    target: Target,
    i: usize,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let started = now_us();
    let mine = shared.plan.rooms_of(i);
    let names: Vec<&str> = mine
        .iter()
        .map(|&r| shared.plan.names[r].as_str())
        .collect();
    let mut ack = 0;
    let opened = tokio::time::timeout(Duration::from_secs(10), open(&shared, &target)).await;
    let mut ws = match opened {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => return shared.err(&format!("connect: {e}"), 1),
        Err(_) => return shared.err("connect: timeout", 1),
    };
    let us = ((now_us() - started).round() as u64).max(1);
    shared.connect_h.borrow_mut().saturating_record(us);
    if let Err(e) = join(&mut ws, &target.prefix, &names, &mut ack).await {
        return shared.err(&format!("connect: {e}"), 1);
    }
    shared.connected.set(shared.connected.get() + 1);
    for &m in &mine {
        shared.members.borrow_mut()[m] += 1;
    }
    drop(permit);
    let slots = shared.plan.slots_in();
    let tallies = mine.iter().map(|&r| Tally::new(r, slots)).collect();
    let sender = (i < shared.plan.senders).then_some(i);
    session(
        shared.clone(),
        ws,
        target.prefix,
        ack,
        Role::Client(tallies, sender),
    )
    .await;
}

/// Churn session k: connect, join room k % rooms, stay `life`, leave.
async fn churn_one(shared: Rc<Shared>, target: Target, k: usize, life: Duration) {
    let measured = shared.in_window(now_us() - shared.epoch_us.get());
    let started = now_us();
    let opened = tokio::time::timeout(Duration::from_secs(10), open(&shared, &target)).await;
    let mut ws = match opened {
        Ok(Ok(ws)) => ws,
        failed => {
            if measured {
                shared.churn_failed.set(shared.churn_failed.get() + 1);
            }
            let e = match failed {
                Ok(Err(e)) => e,
                _ => "timeout".into(),
            };
            return shared.err(&format!("churn connect: {e}"), 1);
        }
    };
    let us = ((now_us() - started).round() as u64).max(1);
    let name = shared.plan.names[k % shared.plan.rooms].as_str();
    let mut ack = 0;
    if join(&mut ws, &target.prefix, &[name], &mut ack)
        .await
        .is_err()
    {
        return;
    }
    if measured {
        shared.churn_sessions.set(shared.churn_sessions.get() + 1);
        shared.churn_h.borrow_mut().saturating_record(us);
    }
    let until = tokio::time::Instant::now() + life;
    session(shared.clone(), ws, target.prefix, ack, Role::Churn(until)).await;
}

// --- /proc (as load.js's procSample) ---

#[derive(Default, Clone, Copy)]
struct Sample {
    cpu_ms: u64,
    rss_kb: u64,
    peak_kb: u64,
}

fn proc_sample(shared: &Shared, pids: &[u32]) -> Sample {
    let mut s = Sample::default();
    for &pid in pids {
        match ProcSample::read(pid) {
            Ok(p) => {
                s.cpu_ms += p.cpu.as_millis() as u64;
                s.rss_kb += p.rss_kb;
                s.peak_kb += p.peak_kb;
            }
            Err(_) => shared.err(&format!("server pid {pid} unreadable"), 1),
        }
    }
    s
}

// --- report (the keys of load.js's, in its order) ---

/// A JS number: integral values print without a fraction, as JSON.stringify does.
#[derive(Clone, Copy, Debug)]
struct Num(f64);

impl Serialize for Num {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0.fract() == 0.0 && self.0.abs() < 9e15 {
            s.serialize_i64(self.0 as i64)
        } else {
            s.serialize_f64(self.0)
        }
    }
}

fn r3(x: f64) -> Num {
    Num((x * 1000.0).round() / 1000.0)
}
fn ms(h: &Histogram<u64>, q: f64) -> Num {
    if h.is_empty() {
        Num(0.0)
    } else {
        r3(h.value_at_percentile(q) as f64 / 1000.0)
    }
}

#[derive(Serialize)]
struct Latency {
    p50: Num,
    p90: Num,
    p99: Num,
    p999: Num,
    max: Num,
}
#[derive(Serialize)]
struct Connect {
    p50: Num,
    p99: Num,
    max: Num,
}
#[derive(Serialize)]
struct RoomP99 {
    rooms: usize,
    min: Num,
    median: Num,
    max: Num,
}
#[derive(Serialize)]
struct Presence {
    namespace: u64,
    room: u64,
}
#[derive(Serialize)]
struct Churn {
    rate: Num,
    life_s: Num,
    sessions: u64,
    failed: u64,
    connect_ms: Connect,
}
#[derive(Serialize)]
struct Server {
    cpu_ms: u64,
    window_deliveries: u64,
    cpu_us_per_delivery: Num,
    connect_cpu_us_per_session: Num,
    rss_kb_before: u64,
    rss_kb_connected: u64,
    rss_kb_end: u64,
    rss_kb_peak: u64,
    rss_kb_per_session: Num,
}
struct Errors(Vec<(String, u64)>);
impl Serialize for Errors {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}
#[derive(Serialize)]
struct Report {
    clients: usize,
    rooms: usize,
    senders: usize,
    rate: Num,
    duration_s: Num,
    warmup_s: Num,
    body_bytes: usize,
    mode: &'static str,
    connected: usize,
    connects_per_sec: Num,
    sent: u64,
    expected: u64,
    delivered: u64,
    lost: u64,
    duplicates: u64,
    misrouted: u64,
    deliveries_per_sec: Num,
    latency_ms: Latency,
    connect_ms: Connect,
    rooms_per_client: usize,
    room_p99_ms: RoomP99,
    errors: Errors,
    presence_frames: Presence,
    #[serde(skip_serializing_if = "Option::is_none")]
    churn: Option<Churn>,
    passed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    server: Option<Server>,
    /// This generator's CPU over the measured window, % of one core.
    #[serde(skip_serializing_if = "Option::is_none")]
    generator_cpu_percent: Option<f64>,
}

fn connect_figures(h: &Histogram<u64>) -> Connect {
    Connect {
        p50: ms(h, 50.0),
        p99: ms(h, 99.0),
        max: ms(h, 100.0),
    }
}

fn usage() -> ! {
    eprintln!(
        "usage: sio_load --url URL [--ca FILE] --clients N --rooms R --senders S --rate MSGS ..."
    );
    std::process::exit(2);
}

fn main() {
    let a = Args::parse();
    base();
    let group = a.group_size.unwrap_or(0);
    let clients = a.clients;
    let per_client = if group > 0 { 2 } else { a.rooms_per_client };
    let rooms = if group > 0 {
        clients + clients.div_ceil(group)
    } else {
        a.rooms
    };
    let senders = a.senders.unwrap_or(clients.min(10));
    let (Some(duration), Some(warmup), Some(churn_life)) = (
        seconds(&a.duration),
        seconds(&a.warmup),
        seconds(&a.churn_life),
    ) else {
        usage()
    };
    if a.url.is_empty()
        || clients == 0
        || rooms == 0
        || (group == 0 && rooms > clients)
        || senders > clients
        || !(per_client >= 1 && per_client <= rooms)
        || a.churn_rate.is_nan()
        || a.churn_rate < 0.0
    {
        usage();
    }
    let targets: Vec<Target> = match a.url.iter().map(|u| Target::parse(u)).collect() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{e}");
            usage();
        }
    };
    let tls = match tls_connector(a.ca.as_ref()) {
        Ok(t) => Some(t),
        Err(e) => {
            eprintln!("TLS: {e}");
            std::process::exit(2);
        }
    };
    let run_id = format!("{:04x}", rand::random::<u16>());
    let plan = Plan {
        clients,
        rooms,
        per_client,
        group,
        senders,
        names: (0..rooms).map(|r| format!("load-{run_id}-{r}")).collect(),
    };
    let shared = Rc::new(Shared {
        plan,
        datagram: a.mode == "datagram",
        body_len: a.body,
        rate: a.rate,
        warmup_us: warmup * 1e6,
        end_us: (warmup + duration) * 1e6,
        epoch_us: Cell::new(0.0),
        phase: watch::channel(CONNECTING).0,
        tls,
        tls_name: a.tls_name.clone(),
        // 16 KiB read buffers (tungstenite's default is 128 KiB): thousands of idle
        // sessions in scenario (c).
        ws_config: WebSocketConfig::default().read_buffer_size(16 * 1024),
        errors: RefCell::new(Vec::new()),
        counts: RefCell::new(Counts::default()),
        latency: RefCell::new(histo(3)),
        connect_h: RefCell::new(histo(3)),
        room_latency: RefCell::new((0..rooms).map(|_| None).collect()),
        churn_h: RefCell::new(histo(3)),
        churn_sessions: Cell::new(0),
        churn_failed: Cell::new(0),
        sent_per_room: RefCell::new(vec![0; rooms]),
        members: RefCell::new(vec![0; rooms]),
        connected: Cell::new(0),
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let local = tokio::task::LocalSet::new();
    let code = local.block_on(
        &runtime,
        run(&a, shared, targets, duration, warmup, churn_life),
    );
    // Sessions still closing are not waited for (load.js: process.exit).
    std::process::exit(code);
}

async fn run(
    a: &Args,
    shared: Rc<Shared>,
    targets: Vec<Target>,
    duration: f64,
    warmup: f64,
    churn_life: f64,
) -> i32 {
    let log = |s: String| {
        if !a.json {
            eprintln!("{s}");
        }
    };
    let pids = &a.server_pid;
    let clients = shared.plan.clients;

    // --- connect ---
    const IN_FLIGHT: u32 = 256;
    let connect_start = now_us();
    let before = proc_sample(&shared, pids);
    let slots = Arc::new(Semaphore::new(IN_FLIGHT as usize));
    for i in 0..clients {
        if a.connect_rate > 0.0 {
            tokio::time::sleep_until(instant_at(connect_start + i as f64 / a.connect_rate * 1e6))
                .await;
        }
        let permit = slots.clone().acquire_owned().await.expect("never closed");
        let target = targets[i % targets.len()].clone();
        tokio::task::spawn_local(client(shared.clone(), target, i, permit));
        if i % 500 == 499 {
            log(format!("connecting {}/{clients}", i + 1));
        }
    }
    let _all = slots.acquire_many(IN_FLIGHT).await.expect("never closed");
    let connect_elapsed = (now_us() - connect_start) / 1e6;
    let connected = shared.connected.get();
    let after_connect = proc_sample(&shared, pids);
    log(format!(
        "connected {connected}/{clients} in {connect_elapsed:.2} s"
    ));

    // --- send ---
    let epoch = now_us();
    shared.epoch_us.set(epoch);
    shared.phase.send_replace(SENDING);
    if a.churn_rate > 0.0 {
        let (shared, target) = (shared.clone(), targets[0].clone());
        let (rate, life) = (a.churn_rate, Duration::from_secs_f64(churn_life));
        tokio::task::spawn_local(async move {
            let mut k = 0usize;
            loop {
                let at = k as f64 / rate * 1e6;
                if shared.stopping() || at >= shared.end_us {
                    break;
                }
                tokio::time::sleep_until(instant_at(epoch + at)).await;
                if shared.stopping() {
                    break;
                }
                tokio::task::spawn_local(churn_one(shared.clone(), target.clone(), k, life));
                k += 1;
            }
        });
    }
    tokio::time::sleep_until(instant_at(epoch + shared.warmup_us)).await;
    let w0 = proc_sample(&shared, pids);
    let own0 = (ProcSample::own_cpu(), std::time::Instant::now());
    let a0 = shared.counts.borrow().arrived;
    tokio::time::sleep_until(instant_at(epoch + shared.end_us)).await;
    let w1 = proc_sample(&shared, pids);
    let generator_cpu_percent = match (own0, ProcSample::own_cpu()) {
        ((Some(c0), at), Some(c1)) => Some(cpu_percent(c1.saturating_sub(c0), at.elapsed())),
        _ => None,
    };
    let a1 = shared.counts.borrow().arrived;
    let drain_until = now_us() + if shared.datagram { 1e6 } else { 5e6 };
    while now_us() < drain_until && shared.counts.borrow().measured < shared.expected() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    shared.phase.send_replace(STOPPING);
    // Let the sessions send their goodbyes.
    tokio::time::sleep(Duration::from_millis(50)).await;

    // --- report ---
    let c = shared.counts.borrow();
    let sent: u64 = shared.sent_per_room.borrow().iter().sum();
    let expected = shared.expected();
    if c.malformed > 0 {
        shared.err("malformed_body", c.malformed);
    }
    let latency = shared.latency.borrow();
    let room_p99 = {
        let mut p: Vec<f64> = shared
            .room_latency
            .borrow()
            .iter()
            .flatten()
            .map(|h| ms(h, 99.0).0)
            .collect();
        p.sort_by(f64::total_cmp);
        match p.len() {
            0 => RoomP99 {
                rooms: 0,
                min: Num(0.0),
                median: Num(0.0),
                max: Num(0.0),
            },
            n => RoomP99 {
                rooms: n,
                min: Num(p[0]),
                median: Num(p[n / 2]),
                max: Num(p[n - 1]),
            },
        }
    };
    let lost = expected.saturating_sub(c.delivered);
    let mut failures = Vec::new();
    if !shared.datagram && lost > 0 {
        failures.push(format!("{lost} deliveries lost"));
    }
    if c.duplicates > 0 {
        failures.push(format!("{} duplicates", c.duplicates));
    }
    if c.misrouted > 0 {
        failures.push(format!("{} misrouted", c.misrouted));
    }
    if c.malformed > 0 {
        failures.push(format!("{} malformed_body", c.malformed));
    }
    if connected < clients {
        failures.push(format!(
            "{} of {clients} clients did not connect",
            clients - connected
        ));
    }
    let server = (!pids.is_empty()).then(|| {
        let cpu = w1.cpu_ms - w0.cpu_ms;
        let win = a1 - a0;
        let per = |x: f64| {
            if connected > 0 {
                r3(x / connected as f64)
            } else {
                Num(0.0)
            }
        };
        Server {
            cpu_ms: cpu,
            window_deliveries: win,
            cpu_us_per_delivery: if win > 0 {
                r3(cpu as f64 * 1000.0 / win as f64)
            } else {
                Num(0.0)
            },
            connect_cpu_us_per_session: per(
                (after_connect.cpu_ms as f64 - before.cpu_ms as f64) * 1000.0
            ),
            rss_kb_before: before.rss_kb,
            rss_kb_connected: w0.rss_kb,
            rss_kb_end: w1.rss_kb,
            rss_kb_peak: w1.peak_kb.max(after_connect.peak_kb),
            rss_kb_per_session: per(w0.rss_kb as f64 - before.rss_kb as f64),
        }
    });
    let report = Report {
        clients,
        rooms: shared.plan.rooms,
        senders: shared.plan.senders,
        rate: Num(a.rate),
        duration_s: Num(duration),
        warmup_s: Num(warmup),
        body_bytes: shared.body_len,
        mode: if shared.datagram {
            "datagram"
        } else {
            "stream"
        },
        connected,
        connects_per_sec: if connect_elapsed > 0.0 {
            r3(connected as f64 / connect_elapsed)
        } else {
            Num(0.0)
        },
        sent,
        expected,
        delivered: c.delivered,
        lost,
        duplicates: c.duplicates,
        misrouted: c.misrouted,
        deliveries_per_sec: r3(c.delivered as f64 / duration),
        latency_ms: Latency {
            p50: ms(&latency, 50.0),
            p90: ms(&latency, 90.0),
            p99: ms(&latency, 99.0),
            p999: ms(&latency, 99.9),
            max: ms(&latency, 100.0),
        },
        connect_ms: connect_figures(&shared.connect_h.borrow()),
        rooms_per_client: shared.plan.per_client,
        room_p99_ms: room_p99,
        errors: Errors(shared.errors.borrow().clone()),
        presence_frames: Presence {
            namespace: 0,
            room: 0,
        },
        churn: (a.churn_rate > 0.0).then(|| Churn {
            rate: Num(a.churn_rate),
            life_s: Num(churn_life),
            sessions: shared.churn_sessions.get(),
            failed: shared.churn_failed.get(),
            connect_ms: connect_figures(&shared.churn_h.borrow()),
        }),
        passed: failures.is_empty(),
        server,
        generator_cpu_percent,
    };
    if a.json {
        println!(
            "{}",
            serde_json::to_string(&report).expect("the report serializes")
        );
    } else {
        print_human(&report, &failures);
    }
    if report.passed {
        0
    } else {
        1
    }
}

fn print_human(r: &Report, failures: &[String]) {
    let (l, c) = (&r.latency_ms, &r.connect_ms);
    println!(
        "clients {} ({} connected) · rooms {} · senders {} · {} msg/s · {}-byte bodies · {} · {}s (+{}s warmup)",
        r.clients, r.connected, r.rooms, r.senders, r.rate.0, r.body_bytes, r.mode, r.duration_s.0, r.warmup_s.0
    );
    println!(
        "sent {} · expected {} · delivered {} · lost {} · duplicated {} · misrouted {}",
        r.sent, r.expected, r.delivered, r.lost, r.duplicates, r.misrouted
    );
    println!("deliveries/s {:.0}", r.deliveries_per_sec.0);
    println!(
        "latency ms   p50 {} · p90 {} · p99 {} · p99.9 {} · max {}",
        l.p50.0, l.p90.0, l.p99.0, l.p999.0, l.max.0
    );
    if r.rooms > 1 {
        let p = &r.room_p99_ms;
        println!(
            "per room     p99 ms min {} · median {} · max {} over {} rooms ({} per client)",
            p.min.0, p.median.0, p.max.0, p.rooms, r.rooms_per_client
        );
    }
    println!(
        "connect ms   p50 {} · p99 {} · max {} · {:.0} sessions/s",
        c.p50.0, c.p99.0, c.max.0, r.connects_per_sec.0
    );
    if let Some(ch) = &r.churn {
        println!(
            "churn        {} sessions ({}/s, {}s each), {} failed · connect ms p50 {} · p99 {} · max {}",
            ch.sessions, ch.rate.0, ch.life_s.0, ch.failed, ch.connect_ms.p50.0, ch.connect_ms.p99.0, ch.connect_ms.max.0
        );
    }
    if let Some(s) = &r.server {
        println!(
            "server       {}",
            serde_json::to_string(s).expect("serializes")
        );
    }
    if let Some(g) = r.generator_cpu_percent {
        println!("generator    {g:.1} % of a core over the measured window");
    }
    let errors = if r.errors.0.is_empty() {
        "none".to_owned()
    } else {
        serde_json::to_string(&r.errors).expect("serializes")
    };
    println!("errors       {errors}");
    if failures.is_empty() {
        println!("result       PASS");
    } else {
        println!("result       FAIL: {}", failures.join(", "));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_events_with_and_without_acks() {
        let mut out = String::new();
        encode_event(&mut out, "/chat,", Some(0), &["join", "load-ab12-0"]);
        assert_eq!(out, r#"42/chat,0["join","load-ab12-0"]"#);
        encode_event(
            &mut out,
            "/chat,",
            Some(17),
            &["publish", "r", "0|3|9|12|xx"],
        );
        assert_eq!(out, r#"42/chat,17["publish","r","0|3|9|12|xx"]"#);
        encode_event(&mut out, "/chat,", None, &["volatile", "r", "b"]);
        assert_eq!(out, r#"42/chat,["volatile","r","b"]"#);
        encode_event(&mut out, "", None, &["x", "a\"b\\c\n"]);
        assert_eq!(out, r#"42["x","a\"b\\c\n"]"#);
    }

    #[test]
    fn parses_engine_and_socket_packets() {
        let p = "/chat,";
        assert_eq!(
            parse_packet(r#"0{"sid":"x","pingInterval":25000}"#, p),
            Packet::Open
        );
        assert_eq!(parse_packet("2", p), Packet::Ping);
        assert_eq!(parse_packet("1", p), Packet::Close);
        assert_eq!(parse_packet(r#"40/chat,{"sid":"abc"}"#, p), Packet::Connect);
        assert_eq!(parse_packet("41/chat,", p), Packet::Disconnect);
        assert_eq!(
            parse_packet(r#"44/chat,{"message":"Invalid namespace"}"#, p),
            Packet::ConnectError("Invalid namespace".into())
        );
        assert_eq!(
            parse_packet(r#"43/chat,5[{"seq":12}]"#, p),
            Packet::Ack(5, None)
        );
        assert_eq!(
            parse_packet(r#"43/chat,6[{"error":"not joined"}]"#, p),
            Packet::Ack(6, Some("not joined".into()))
        );
        // Another namespace's packets are not ours.
        assert_eq!(parse_packet(r#"40/other,{"sid":"abc"}"#, p), Packet::Other);
        assert_eq!(parse_packet(r#"40{"sid":"abc"}"#, ""), Packet::Connect);
        assert_eq!(parse_packet(r#"40/chat,{"sid":"abc"}"#, ""), Packet::Other);
    }

    #[test]
    fn parses_events_fast_and_slow() {
        let p = "/chat,";
        let fast = parse_packet(r#"42/chat,["msg","0|1|2|3|xxxx"]"#, p);
        match &fast {
            Packet::Event(Cow::Borrowed("msg"), Some(Cow::Borrowed("0|1|2|3|xxxx"))) => {}
            other => panic!("{other:?}"),
        }
        assert_eq!(
            parse_packet(r#"42/chat,["msg","a\"b"]"#, p),
            Packet::Event("msg".into(), Some("a\"b".into()))
        );
        assert_eq!(
            parse_packet(r#"42/chat,["msg",{"x":1}]"#, p),
            Packet::Event("msg".into(), None)
        );
        assert_eq!(
            parse_packet(r#"42/chat,["msg"]"#, p),
            Packet::Event("msg".into(), None)
        );
        assert_eq!(
            parse_packet(r#"42/chat,["msg","a","b"]"#, p),
            Packet::Event("msg".into(), Some("a".into()))
        );
        assert_eq!(parse_packet(r#"42/chat,["msg",oops"#, p), Packet::Other);
    }

    #[test]
    fn bodies_round_trip_at_their_length() {
        let mut b = String::new();
        encode_body(&mut b, 3, 7, 123456, 98765432, 64);
        assert_eq!(b.len(), 64);
        assert!(b.starts_with("3|7|123456|98765432|xxx"));
        assert_eq!(decode_body(&b), Some((3, 7, 123456, 98765432)));
        encode_body(&mut b, 1, 2, 3, 4, 4);
        assert_eq!(b, "1|2|3|4|");
        assert_eq!(decode_body(&b), Some((1, 2, 3, 4)));
        assert_eq!(decode_body("1|2|3"), None);
        assert_eq!(decode_body("a|2|3|4|"), None);
    }

    #[test]
    fn tally_drops_duplicates_within_the_window() {
        let mut t = Tally::new(0, 1);
        assert!(!t.seen(0, 0));
        assert!(!t.seen(0, 2));
        assert!(!t.seen(0, 1));
        assert!(t.seen(0, 1));
        assert!(t.seen(0, 2));
        assert!(!t.seen(0, 40));
        assert!(t.seen(0, 3)); // beyond the 32-message window: taken as seen
    }

    #[test]
    fn plan_matches_load_js() {
        let plan = |clients, rooms, per_client, group, senders| Plan {
            clients,
            rooms,
            per_client,
            group,
            senders,
            names: Vec::new(),
        };
        let p = plan(200, 20, 4, 0, 20);
        assert_eq!(p.rooms_of(19), vec![19, 0, 1, 2]);
        assert!(p.sends_to(19, 2) && !p.sends_to(19, 3));
        assert_eq!(p.slots_in(), 4);
        assert_eq!(p.slot_of(19, 1), 2);
        // Groups of 10: a personal room, then the group's room after the personal ones.
        let g = plan(1000, 1100, 2, 10, 100);
        assert_eq!(g.rooms_of(25), vec![25, 1002]);
        assert_eq!(g.publish_slot(7), 1);
        assert!(g.sends_to(25, 1002) && !g.sends_to(25, 25));
        assert_eq!(g.slot_of(25, 1002), 5);
    }

    #[test]
    fn targets_and_durations() {
        let t = Target::parse("https://127.0.0.1:4435/chat").unwrap();
        assert_eq!(
            t.ws_url,
            "wss://127.0.0.1:4435/socket.io/?EIO=4&transport=websocket"
        );
        assert_eq!(
            (t.host.as_str(), t.port, t.tls, t.prefix.as_str()),
            ("127.0.0.1", 4435, true, "/chat,")
        );
        assert_eq!(Target::parse("http://localhost:3000/").unwrap().prefix, "");
        assert_eq!(seconds("5s"), Some(5.0));
        assert_eq!(seconds("500ms"), Some(0.5));
        assert_eq!(seconds("2m"), Some(120.0));
        assert_eq!(seconds("1.5"), Some(1.5));
        assert_eq!(seconds("x"), None);
    }

    #[test]
    fn numbers_print_as_json_stringify() {
        assert_eq!(serde_json::to_string(&Num(5.0)).unwrap(), "5");
        assert_eq!(serde_json::to_string(&Num(0.25)).unwrap(), "0.25");
        assert_eq!(serde_json::to_string(&r3(1.23456)).unwrap(), "1.235");
    }
}
