//! Server settings: namespaces and limits from an optional TOML file, then
//! the process-level [`Settings`] (listen address, TLS, secret, origins).
//!
//! # The configuration file
//!
//! Every key is optional; omitted keys take the defaults shown. Unknown keys
//! are errors. Durations are strings such as `"500ms"`, `"10s"`, `"5m"`,
//! `"1h"`, `"7d"` (or a plain number of seconds).
//!
//! ```toml
//! [limits]
//! max_frame = 65536              # bytes per frame, 1 byte to 16 MiB
//! max_rooms_per_session = 100
//! publish_rate = 50.0            # publishes per second per session (token bucket)
//! publish_burst = 100
//! command_rate = 50.0            # joins, leaves, online lists, acks per second per session
//! command_burst = 200
//! max_room_name = 128            # bytes
//! hello_timeout = "10s"          # from a connection's first packet to Welcome
//! max_hello = 8192               # bytes of the Hello frame
//! max_awaiting_hello = 1024      # connections not yet welcomed; more are refused
//! outbound_queue = 4096          # frames queued per session before SlowConsumer
//! outbound_bytes = 4194304       # bytes queued per session before SlowConsumer
//! outbound_bytes_total = 268435456 # bytes queued for all sessions; big backlogs closed first
//! stall_timeout = "10s"          # a write without progress this long: SlowConsumer
//! room_ttl = "300s"              # empty rooms and their history are kept this long
//! max_rooms_per_namespace = 100000 # rooms per namespace; empty ones give way first
//! history_bytes = 1048576        # history bytes per room
//! history_bytes_total = 268435456 # history bytes of all rooms; oldest rooms' go first
//! max_sessions = 100000
//! max_sessions_per_user = 64
//! shutdown_grace = "5s"
//! max_datagram_body = 1024       # bytes
//! max_inbox = 1000               # notifications kept per user (oldest dropped)
//! datagram_rate = 100            # datagrams per second per session (excess dropped)
//! datagram_burst = 200
//! connect_rate_per_ip = 100      # new connections per second per IP (excess refused)
//! connect_burst_per_ip = 200
//! unvalidated_connect_rate = 500 # new connections per second before QUIC Retry; 0 = always
//! flush_interval = "1ms"         # busy sessions hold frames this long (x load, ≤ 5ms); 0 = off
//! presence_window = "100ms"     # a churning room's presence changes go out in one batch per window
//! api_connections_per_ip = 64    # server API connections one IP (an IPv6 /64) may hold
//! api_idle_timeout = "30s"       # server API connections without a request are closed after
//! api_request_timeout = "30s"    # a server API request, body included, gets a 408 after
//! max_hook_calls = 1024          # backend hook calls in flight server-wide
//!
//! # Each [namespaces.NAME] declares the namespace at URL path /NAME
//! # (NAME is [A-Za-z0-9_-]+). A [namespaces] table replaces the default set
//! # (/chat and /notifications); without one the defaults stay.
//! [namespaces.chat]
//! history = 100                  # messages kept per room, 0 = none
//! presence = true                # room member lists and join/leave events
//! online = true                  # namespace-level who-is-online
//! client_publish = true          # false: only the server API publishes
//! datagrams = true               # volatile datagrams allowed
//! inbox = false                  # sessions receive their user's notifications
//!
//! [namespaces.chat.hooks]        # the application backend's hooks (PROTOCOL.md §17)
//! url = ""                       # base URL; hook H is a JSON POST to url + "/H"
//! connect = false
//! join = false
//! publish = false
//! rpc = false
//! timeout = "2s"
//! on_unavailable = "refuse"      # or "allow" (connect, join, publish)
//! max_rpcs_per_session = 8
//!
//! [namespaces.notifications]
//! inbox = true
//! presence = false
//! online = false
//! client_publish = false
//! datagrams = false
//!
//! [webhooks]
//! url = ""                       # empty: off
//! queue = 100000                 # events kept waiting; newer ones dropped beyond it
//! timeout = "5s"
//! max_backoff = "30s"
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::auth::parse_duration;

/// Paths the HTTPS listener (and the `--dev` demo listener) route themselves, so
/// no namespace may take them: WebSocket sessions are upgraded on namespace paths.
const RESERVED_PATHS: &[&str] = &["/healthz", "/metrics", "/api", "/cert-hash", "/dev-token"];

/// The largest allowed `max_frame`: 16 MiB.
pub const MAX_FRAME_LIMIT: usize = 16 << 20;

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The configuration file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is not valid TOML, has an unknown key or a value of the wrong type.
    #[error("{origin}: {message}")]
    Parse {
        /// Where the text came from (a file path).
        origin: String,
        /// The parser's message, naming the line and key.
        message: String,
    },
    /// A value is out of range.
    #[error("{origin}: {key}: {reason}")]
    Invalid {
        /// Where the value came from (a file path, or `settings`).
        origin: String,
        /// The offending key, e.g. `limits.max_frame`.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Options of one namespace.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct NamespaceConfig {
    /// Messages kept per room for `since` recovery; 0 keeps none.
    pub history: usize,
    /// Room presence: member lists on join and join/leave events.
    pub presence: bool,
    /// Namespace-level presence: who is online in the namespace.
    pub online: bool,
    /// Whether clients may publish; `false` means only the server API publishes.
    pub client_publish: bool,
    /// Whether volatile datagrams are allowed.
    pub datagrams: bool,
    /// Whether sessions receive their user's notification inbox.
    pub inbox: bool,
    /// The application backend's hooks: connect, join, publish, RPC.
    pub hooks: HooksConfig,
}

/// What a hook does when the backend is down, too slow or too busy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnUnavailable {
    /// Refuse the connect, join or publish with `BackendUnavailable`.
    #[default]
    Refuse,
    /// Let it go ahead as if there were no hook (an RPC still fails).
    Allow,
}

/// A namespace's backend hooks (`[namespaces.NAME.hooks]`): each one asks the
/// application's backend before the server goes on (PROTOCOL.md §17). Over HTTP,
/// hook `H` is a JSON `POST` to `url` + `/` + `H`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HooksConfig {
    /// The backend's base URL (`http://127.0.0.1:3000/wtgate`); empty: no HTTP
    /// backend (a Rust embedder's own hooks may still be on).
    pub url: String,
    /// Ask before `Welcome`: refuse, or attach data.
    pub connect: bool,
    /// Ask before a join is granted.
    pub join: bool,
    /// Ask before a client's message is sequenced: refuse or replace the body.
    pub publish: bool,
    /// Serve `Rpc` commands.
    pub rpc: bool,
    /// How long a hook call may take before it counts as unavailable.
    #[serde(deserialize_with = "de_duration", serialize_with = "ser_duration")]
    pub timeout: Duration,
    /// What connect, join and publish do when the backend is unavailable.
    pub on_unavailable: OnUnavailable,
    /// RPCs one session may have in flight; more are refused (`BackendUnavailable`).
    pub max_rpcs_per_session: usize,
}

impl Default for HooksConfig {
    fn default() -> Self {
        HooksConfig {
            url: String::new(),
            connect: false,
            join: false,
            publish: false,
            rpc: false,
            timeout: Duration::from_secs(2),
            on_unavailable: OnUnavailable::Refuse,
            max_rpcs_per_session: 8,
        }
    }
}

impl HooksConfig {
    /// Whether any hook is on.
    pub fn any(&self) -> bool {
        self.connect || self.join || self.publish || self.rpc
    }
}

/// Webhooks (`[webhooks]`): events sent to the backend asynchronously, at least
/// once, from a durable bounded queue.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhooksConfig {
    /// Where events are `POST`ed; empty: no webhooks.
    pub url: String,
    /// Events kept waiting at most; newer ones are dropped (counted and logged).
    pub queue: usize,
    /// How long one delivery may take.
    #[serde(deserialize_with = "de_duration", serialize_with = "ser_duration")]
    pub timeout: Duration,
    /// The longest wait between retries (the backoff doubles from 100 ms up to it).
    #[serde(deserialize_with = "de_duration", serialize_with = "ser_duration")]
    pub max_backoff: Duration,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        WebhooksConfig {
            url: String::new(),
            queue: 100_000,
            timeout: Duration::from_secs(5),
            max_backoff: Duration::from_secs(30),
        }
    }
}

impl Default for NamespaceConfig {
    fn default() -> Self {
        NamespaceConfig {
            history: 100,
            presence: true,
            online: true,
            client_publish: true,
            datagrams: true,
            inbox: false,
            hooks: HooksConfig::default(),
        }
    }
}

impl NamespaceConfig {
    /// The defaults of `/notifications`: history, but no presence, no client
    /// publishes and no datagrams.
    pub fn notifications() -> Self {
        NamespaceConfig {
            history: 100,
            presence: false,
            online: false,
            client_publish: false,
            datagrams: false,
            inbox: true,
            hooks: HooksConfig::default(),
        }
    }
}

/// Server-wide limits.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest frame accepted or sent, in bytes.
    pub max_frame: usize,
    /// Rooms one session may have joined at once.
    pub max_rooms_per_session: usize,
    /// Joins, leaves, online lists and notification acks per second per session.
    pub command_rate: f64,
    /// Of those, how many a session may send in a burst (a client rejoining all its
    /// rooms after a reconnect sends one per room).
    pub command_burst: u32,
    /// Sustained publishes per second per session.
    pub publish_rate: f64,
    /// Publishes a session may send in a burst above the rate.
    pub publish_burst: u32,
    /// Longest room name, in bytes.
    pub max_room_name: usize,
    /// Largest `Hello` frame, in bytes: a token needs a few hundred.
    pub max_hello: usize,
    /// Connections at once that have not been welcomed yet (no valid `Hello`);
    /// more are refused before the handshake.
    pub max_awaiting_hello: usize,
    /// Time a new connection has, from its first packet, to be welcomed: the
    /// WebTransport request, the control stream and a valid `Hello`.
    #[serde(deserialize_with = "de_duration", serialize_with = "ser_duration")]
    pub hello_timeout: Duration,
    /// Frames queued per session before it is closed as a slow consumer.
    pub outbound_queue: usize,
    /// Bytes queued per session before it is closed as a slow consumer.
    pub outbound_bytes: usize,
    /// Bytes queued for all sessions together; past it, sessions with large
    /// backlogs are closed as slow consumers first.
    pub outbound_bytes_total: usize,
    /// A write to a session (a room stream's first frames included) that makes no
    /// progress for this long closes it as a slow consumer: its client grants no
    /// flow-control credit.
    #[serde(deserialize_with = "de_duration", serialize_with = "ser_duration")]
    pub stall_timeout: Duration,
    /// Rooms one namespace may hold on a node; past it the longest-idle empty room
    /// gives way, and with none empty a new room is refused (`TooManyRooms`).
    pub max_rooms_per_namespace: usize,
    /// History bytes one room keeps (besides its namespace's message count).
    pub history_bytes: usize,
    /// History bytes all rooms keep together; past it the least recently published
    /// rooms lose their history first (rejoining members get `recovered: false`).
    pub history_bytes_total: usize,
    /// How long empty rooms and their history are kept.
    #[serde(deserialize_with = "de_duration", serialize_with = "ser_duration")]
    pub room_ttl: Duration,
    /// Sessions the server holds at once.
    pub max_sessions: usize,
    /// Sessions one user may hold at once.
    pub max_sessions_per_user: usize,
    /// Time sessions get to drain on shutdown.
    #[serde(deserialize_with = "de_duration", serialize_with = "ser_duration")]
    pub shutdown_grace: Duration,
    /// Largest datagram body, in bytes ([`crate::protocol::MAX_DATAGRAM_BODY`] by
    /// default).
    pub max_datagram_body: usize,
    /// Notifications kept per user; the oldest are dropped beyond it.
    pub max_inbox: usize,
    /// Volatile datagrams a session may send per second; the excess is dropped.
    pub datagram_rate: f64,
    /// Datagrams a session may send in a burst above the rate.
    pub datagram_burst: u32,
    /// New connections per second from one IP address; the excess is refused
    /// before the handshake.
    pub connect_rate_per_ip: f64,
    /// New connections one IP address may open in a burst above the rate.
    pub connect_burst_per_ip: u32,
    /// New connections per second, server-wide, accepted before their address is
    /// validated; past it, clients first get a QUIC Retry (one more round trip), so
    /// forged source addresses cannot spend real clients' per-IP budgets. 0: always.
    pub unvalidated_connect_rate: f64,
    /// How long a busy session holds its frames so several share a packet; an idle
    /// session writes at once. Zero disables coalescing.
    #[serde(deserialize_with = "de_duration", serialize_with = "ser_duration")]
    pub flush_interval: Duration,
    /// How long a churning room's presence changes are held so each member gets
    /// one `PresenceBatch` for them; a calm room's go out at once. Zero: never held.
    #[serde(deserialize_with = "de_duration", serialize_with = "ser_duration")]
    pub presence_window: Duration,
    /// Server API connections one client address (an IPv6 /64) may hold.
    pub api_connections_per_ip: usize,
    /// A server API connection without a request in flight is closed after this.
    #[serde(deserialize_with = "de_duration", serialize_with = "ser_duration")]
    pub api_idle_timeout: Duration,
    /// Time a server API request has, body included, before it is answered 408.
    #[serde(deserialize_with = "de_duration", serialize_with = "ser_duration")]
    pub api_request_timeout: Duration,
    /// Backend hook calls (connect, join, publish, RPC) in flight server-wide; more
    /// are refused with `BackendUnavailable` (or allowed, per `on_unavailable`).
    pub max_hook_calls: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame: 65_536,
            max_rooms_per_session: 100,
            publish_rate: 50.0,
            publish_burst: 100,
            command_rate: 50.0,
            command_burst: 200,
            max_room_name: 128,
            hello_timeout: Duration::from_secs(10),
            max_hello: 8 * 1024,
            max_awaiting_hello: 1024,
            outbound_queue: 4096,
            outbound_bytes: 4 * 1024 * 1024,
            outbound_bytes_total: 256 * 1024 * 1024,
            stall_timeout: Duration::from_secs(10),
            room_ttl: Duration::from_secs(300),
            max_rooms_per_namespace: 100_000,
            history_bytes: 1024 * 1024,
            history_bytes_total: 256 * 1024 * 1024,
            max_sessions: 100_000,
            max_sessions_per_user: 64,
            shutdown_grace: Duration::from_secs(5),
            max_datagram_body: crate::protocol::MAX_DATAGRAM_BODY,
            max_inbox: 1000,
            datagram_rate: 100.0,
            datagram_burst: 200,
            connect_rate_per_ip: 100.0,
            connect_burst_per_ip: 200,
            unvalidated_connect_rate: 500.0,
            flush_interval: Duration::from_millis(1),
            presence_window: Duration::from_millis(100),
            api_connections_per_ip: 64,
            api_idle_timeout: Duration::from_secs(30),
            api_request_timeout: Duration::from_secs(30),
            max_hook_calls: 1024,
        }
    }
}

/// Writes a duration the way the file reads it: `"10s"`, `"1ms"`.
fn ser_duration<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    if d.subsec_nanos() == 0 {
        s.serialize_str(&format!("{}s", d.as_secs()))
    } else {
        s.serialize_str(&format!("{}ms", d.as_millis()))
    }
}

/// Reads a duration written as a string (`"10s"`) or a number of seconds.
fn de_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Secs(u64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Secs(s) => Ok(Duration::from_secs(s)),
        Raw::Text(t) => parse_duration(&t).map_err(serde::de::Error::custom),
    }
}

/// Namespaces and limits.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Namespaces by URL path (`/chat`).
    pub namespaces: BTreeMap<String, NamespaceConfig>,
    /// Server-wide limits.
    pub limits: Limits,
    /// Webhooks to the application's backend.
    pub webhooks: WebhooksConfig,
}

impl Default for Config {
    /// `/chat` with the namespace defaults, `/notifications` with
    /// [`NamespaceConfig::notifications`], default limits.
    fn default() -> Self {
        let namespaces = BTreeMap::from([
            ("/chat".to_owned(), NamespaceConfig::default()),
            (
                "/notifications".to_owned(),
                NamespaceConfig::notifications(),
            ),
        ]);
        Config {
            namespaces,
            limits: Limits::default(),
            webhooks: WebhooksConfig::default(),
        }
    }
}

/// The file as written: namespace keys without the leading `/`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    limits: Limits,
    namespaces: Option<BTreeMap<String, NamespaceConfig>>,
    #[serde(default)]
    webhooks: WebhooksConfig,
}

impl Config {
    /// Messages of history kept per room, by namespace path.
    pub fn history_sizes(&self) -> std::collections::HashMap<String, usize> {
        self.namespaces
            .iter()
            .map(|(path, ns)| (path.clone(), ns.history))
            .collect()
    }

    /// Paths of the namespaces whose sessions receive notification inboxes.
    pub fn inbox_namespaces(&self) -> Vec<String> {
        self.namespaces
            .iter()
            .filter(|(_, ns)| ns.inbox)
            .map(|(path, _)| path.clone())
            .collect()
    }

    /// Parses and validates configuration text (see the [module docs](self)).
    pub fn from_toml_str(s: &str) -> Result<Config, ConfigError> {
        Self::parse(s, "config")
    }

    /// Reads, parses and validates a configuration file; errors name the file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    fn parse(s: &str, origin: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(s).map_err(|e| ConfigError::Parse {
            origin: origin.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        let mut config = Config {
            limits: raw.limits,
            webhooks: raw.webhooks,
            ..Config::default()
        };
        if let Some(namespaces) = raw.namespaces {
            config.namespaces = BTreeMap::new();
            for (name, ns) in namespaces {
                if !valid_namespace_name(&name) {
                    return Err(ConfigError::Invalid {
                        origin: origin.to_owned(),
                        key: format!("namespaces.{name}"),
                        reason: "a namespace name is letters, digits, '_' and '-' (the URL path is /NAME)".into(),
                    });
                }
                config.namespaces.insert(format!("/{name}"), ns);
            }
        }
        config.validate_in(origin)?;
        Ok(config)
    }

    /// Checks every value is in range (after command-line overrides, say).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_in("settings")
    }

    fn validate_in(&self, origin: &str) -> Result<(), ConfigError> {
        let invalid = |key: &str, reason: &str| ConfigError::Invalid {
            origin: origin.to_owned(),
            key: key.to_owned(),
            reason: reason.to_owned(),
        };
        if self.namespaces.is_empty() {
            return Err(invalid("namespaces", "at least one namespace is needed"));
        }
        for path in self.namespaces.keys() {
            let ok = path.strip_prefix('/').is_some_and(valid_namespace_name);
            if !ok {
                return Err(invalid(
                    &format!("namespaces.{path}"),
                    "a namespace path is '/' then letters, digits, '_' and '-'",
                ));
            }
            if RESERVED_PATHS.contains(&path.as_str()) {
                return Err(invalid(
                    &format!("namespaces.{path}"),
                    &format!(
                        "{path} is a route of the server's HTTPS side, where WebSocket sessions \
                         share the namespace paths: choose another name"
                    ),
                ));
            }
        }
        let l = &self.limits;
        if l.max_frame == 0 || l.max_frame > MAX_FRAME_LIMIT {
            return Err(invalid(
                "limits.max_frame",
                &format!("must be 1 to {MAX_FRAME_LIMIT} bytes"),
            ));
        }
        for (key, rate) in [
            ("limits.publish_rate", l.publish_rate),
            ("limits.command_rate", l.command_rate),
            ("limits.datagram_rate", l.datagram_rate),
            ("limits.connect_rate_per_ip", l.connect_rate_per_ip),
        ] {
            if !(rate.is_finite() && rate > 0.0) {
                return Err(invalid(key, "must be a positive number"));
            }
        }
        if !(l.unvalidated_connect_rate.is_finite() && l.unvalidated_connect_rate >= 0.0) {
            return Err(invalid(
                "limits.unvalidated_connect_rate",
                "must be 0 (always validate) or a positive number",
            ));
        }
        let positive = [
            ("limits.max_rooms_per_session", l.max_rooms_per_session),
            ("limits.publish_burst", l.publish_burst as usize),
            ("limits.max_room_name", l.max_room_name),
            ("limits.outbound_queue", l.outbound_queue),
            ("limits.max_rooms_per_namespace", l.max_rooms_per_namespace),
            ("limits.max_hello", l.max_hello),
            ("limits.max_awaiting_hello", l.max_awaiting_hello),
            ("limits.outbound_bytes", l.outbound_bytes),
            ("limits.outbound_bytes_total", l.outbound_bytes_total),
            ("limits.max_sessions", l.max_sessions),
            ("limits.max_sessions_per_user", l.max_sessions_per_user),
            ("limits.api_connections_per_ip", l.api_connections_per_ip),
            ("limits.max_datagram_body", l.max_datagram_body),
            ("limits.max_inbox", l.max_inbox),
            ("limits.datagram_burst", l.datagram_burst as usize),
            (
                "limits.connect_burst_per_ip",
                l.connect_burst_per_ip as usize,
            ),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(invalid(key, "must be greater than 0"));
            }
        }
        if l.hello_timeout.is_zero() {
            return Err(invalid("limits.hello_timeout", "must be greater than 0"));
        }
        if l.max_hook_calls == 0 {
            return Err(invalid("limits.max_hook_calls", "must be greater than 0"));
        }
        for (path, ns) in &self.namespaces {
            let key = |k: &str| format!("namespaces.{}.hooks.{k}", path.trim_start_matches('/'));
            let h = &ns.hooks;
            if !h.url.is_empty() && !valid_http_url(&h.url) {
                return Err(invalid(&key("url"), "must be an http:// or https:// URL"));
            }
            if h.timeout.is_zero() {
                return Err(invalid(&key("timeout"), "must be greater than 0"));
            }
            if h.max_rpcs_per_session == 0 {
                return Err(invalid(
                    &key("max_rpcs_per_session"),
                    "must be greater than 0",
                ));
            }
        }
        let w = &self.webhooks;
        if !w.url.is_empty() && !valid_http_url(&w.url) {
            return Err(invalid(
                "webhooks.url",
                "must be an http:// or https:// URL",
            ));
        }
        if w.queue == 0 {
            return Err(invalid("webhooks.queue", "must be greater than 0"));
        }
        if w.timeout.is_zero() {
            return Err(invalid("webhooks.timeout", "must be greater than 0"));
        }
        if w.max_backoff < Duration::from_millis(100) {
            return Err(invalid("webhooks.max_backoff", "must be at least 100ms"));
        }
        Ok(())
    }

    /// The namespace at URL `path` (e.g. `/chat`), if declared.
    pub fn namespace(&self, path: &str) -> Option<&NamespaceConfig> {
        self.namespaces.get(path)
    }
}

/// Whether `url` looks like an `http://` or `https://` URL with a host.
fn valid_http_url(url: &str) -> bool {
    url.strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .is_some_and(|rest| {
            !rest.is_empty() && !rest.starts_with('/') && !url.contains(char::is_whitespace)
        })
}

/// Whether `name` is a valid namespace name: `[A-Za-z0-9_-]+`.
fn valid_namespace_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Where the server's TLS certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsSource {
    /// A real certificate chain and its private key, PEM.
    Files {
        /// The certificate chain.
        cert: PathBuf,
        /// The private key.
        key: PathBuf,
    },
    /// A self-signed development certificate kept in `dir`
    /// (see [`crate::certs::ensure`]).
    SelfSigned {
        /// The certificate directory.
        dir: PathBuf,
    },
}

impl std::fmt::Display for TlsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TlsSource::Files { cert, key } => {
                write!(f, "--cert {} with --key {}", cert.display(), key.display())
            }
            TlsSource::SelfSigned { dir } => write!(f, "the certificate in {}", dir.display()),
        }
    }
}

/// What drives WebTransport sessions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Engine {
    /// wtransport's server: a task per connection and per session.
    Wtransport,
    /// wtgate's event loop (`crate::engine`): one task for every connection.
    #[default]
    Loop,
}

/// Everything `serve` needs.
#[derive(Clone)]
pub struct Settings {
    /// UDP address for WebTransport.
    pub listen: SocketAddr,
    /// The TLS certificate.
    pub tls: TlsSource,
    /// The HS256 token secret.
    pub secret: String,
    /// Development mode: loopback only, loopback origins allowed.
    pub dev: bool,
    /// Browser origins allowed to connect (`https://app.example.com`).
    pub allowed_origins: Vec<String>,
    /// Namespaces and limits.
    pub config: Config,
    /// Where durable state (notification inboxes) lives.
    pub data_dir: PathBuf,
    /// Bearer key of the server API; `None` disables the API outside dev mode.
    pub api_key: Option<String>,
    /// Cluster mode: the Redis URL (`redis://host:6379`) that nodes share rooms,
    /// presence, history and inboxes through; `None` runs a single process.
    pub redis: Option<String>,
    /// This node's id in the cluster (random when `None`).
    pub node_id: Option<String>,
    /// The key hook calls and webhooks are signed with (HMAC-SHA256); `None`: the
    /// token secret.
    pub hook_secret: Option<String>,
    /// What drives WebTransport sessions.
    pub engine: Engine,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("listen", &self.listen)
            .field("tls", &self.tls)
            .field("secret", &"<redacted>")
            .field("dev", &self.dev)
            .field("allowed_origins", &self.allowed_origins)
            .field("config", &self.config)
            .field("data_dir", &self.data_dir)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("redis", &self.redis.as_ref().map(|_| "<set>"))
            .field("node_id", &self.node_id)
            .field(
                "hook_secret",
                &self.hook_secret.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl Settings {
    /// Whether a session whose request carried `origin` may connect.
    ///
    /// - No `Origin` header (a non-browser client): allowed.
    /// - In dev mode, loopback origins (`http(s)://localhost`, `127.0.0.1`,
    ///   `[::1]`, any port) are allowed.
    /// - With a non-empty allow list: only origins on it (scheme and host
    ///   compared case-insensitively, default ports ignored).
    /// - With an empty list: anything outside dev mode, only loopback in dev mode.
    pub fn origin_allowed(&self, origin: Option<&str>) -> bool {
        let Some(origin) = origin else {
            return true;
        };
        if self.dev && is_loopback_origin(origin) {
            return true;
        }
        if self.allowed_origins.is_empty() {
            return !self.dev;
        }
        let origin = normalize_origin(origin);
        self.allowed_origins
            .iter()
            .any(|allowed| normalize_origin(allowed) == origin)
    }
}

/// Checks that an allowed origin can ever match a browser's `Origin` header:
/// `http(s)://host[:port]`, nothing after the host and port.
pub fn check_origin(origin: &str) -> Result<(), String> {
    if origin.trim() == "*" {
        return Err(
            "`*` is not an origin: without any allowed origin every origin may \
             connect (outside --dev); list exact origins such as https://app.example.com \
             to restrict"
                .into(),
        );
    }
    let expected = "expected scheme://host[:port], e.g. https://app.example.com";
    let o = origin.trim().trim_end_matches('/');
    let Some(rest) = o
        .strip_prefix("https://")
        .or_else(|| o.strip_prefix("http://"))
    else {
        return Err(format!(
            "{origin:?} has no http:// or https:// scheme, so no browser Origin can match it; {expected}"
        ));
    };
    let host = rest.rsplit_once(':').map_or(rest, |(host, port)| {
        if port.parse::<u16>().is_ok() && !host.is_empty() {
            host
        } else {
            rest
        }
    });
    let valid_host = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'[' | b']' | b':'));
    if !valid_host {
        return Err(format!(
            "{origin:?} is not an origin (a browser sends only scheme, host and port); {expected}"
        ));
    }
    Ok(())
}

/// Lowercases an origin, drops a trailing `/` and the scheme's default port.
fn normalize_origin(origin: &str) -> String {
    let mut o = origin.trim().trim_end_matches('/').to_ascii_lowercase();
    for (scheme, port) in [("https://", ":443"), ("http://", ":80")] {
        if o.starts_with(scheme) && o.ends_with(port) {
            o.truncate(o.len() - port.len());
        }
    }
    o
}

/// Whether `origin` is `http(s)://` + `localhost`, `127.0.0.1` or `[::1]`,
/// with an optional port.
fn is_loopback_origin(origin: &str) -> bool {
    let o = origin.trim().to_ascii_lowercase();
    let Some(rest) = o
        .strip_prefix("https://")
        .or_else(|| o.strip_prefix("http://"))
    else {
        return false;
    };
    ["localhost", "127.0.0.1", "[::1]"].iter().any(|host| {
        rest.strip_prefix(host).is_some_and(|tail| {
            tail.is_empty()
                || tail.strip_prefix(':').is_some_and(|port| {
                    (1..=5).contains(&port.len()) && port.bytes().all(|b| b.is_ascii_digit())
                })
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let c = Config::default();
        assert_eq!(
            c.namespaces.keys().collect::<Vec<_>>(),
            ["/chat", "/notifications"]
        );
        let chat = c.namespace("/chat").unwrap();
        assert_eq!(chat, &NamespaceConfig::default());
        assert_eq!(chat.history, 100);
        assert!(chat.presence && chat.online && chat.client_publish && chat.datagrams);
        let n = c.namespace("/notifications").unwrap();
        assert_eq!(n.history, 100);
        assert!(!n.presence && !n.online && !n.client_publish && !n.datagrams);
        assert!(c.namespace("/admin").is_none());
        assert!(c.namespace("chat").is_none());
        assert_eq!(c.limits.max_frame, 65_536);
        assert_eq!(c.limits.hello_timeout, Duration::from_secs(10));
        c.validate().unwrap();
        assert_eq!(Config::from_toml_str("").unwrap(), c);
    }

    #[test]
    fn limits_override_only_given_keys() {
        let c = Config::from_toml_str(
            r#"
            [limits]
            max_frame = 1024
            hello_timeout = "2s"
            room_ttl = 60
            shutdown_grace = "250ms"
            publish_rate = 5.5
            "#,
        )
        .unwrap();
        assert_eq!(c.limits.max_frame, 1024);
        assert_eq!(c.limits.hello_timeout, Duration::from_secs(2));
        assert_eq!(c.limits.room_ttl, Duration::from_secs(60));
        assert_eq!(c.limits.shutdown_grace, Duration::from_millis(250));
        assert_eq!(c.limits.publish_rate, 5.5);
        assert_eq!(c.limits.max_rooms_per_session, 100);
        // No [namespaces] table: the defaults stay.
        assert_eq!(c.namespaces, Config::default().namespaces);
    }

    #[test]
    fn namespaces_table_replaces_defaults() {
        let c = Config::from_toml_str(
            r#"
            [namespaces.game]
            history = 0
            datagrams = true
            [namespaces.news-feed_2]
            client_publish = false
            "#,
        )
        .unwrap();
        assert_eq!(
            c.namespaces.keys().collect::<Vec<_>>(),
            ["/game", "/news-feed_2"]
        );
        let game = c.namespace("/game").unwrap();
        assert_eq!(game.history, 0);
        assert!(game.presence);
        let news = c.namespace("/news-feed_2").unwrap();
        assert!(!news.client_publish);
        assert_eq!(news.history, 100);
        assert!(c.namespace("/chat").is_none());
    }

    #[test]
    fn namespaces_cannot_take_the_https_routes() {
        for name in ["healthz", "metrics", "api", "cert-hash", "dev-token"] {
            let text = format!("[namespaces.{name}]\n");
            let msg = Config::from_toml_str(&text).unwrap_err().to_string();
            assert!(msg.contains("choose another name"), "{name}: {msg}");
        }
        assert!(Config::from_toml_str("[namespaces.apis]\n").is_ok());
    }

    #[test]
    fn unknown_keys_are_named() {
        for (text, key) in [
            ("[limits]\nmax_frames = 1\n", "max_frames"),
            ("[namespaces.chat]\nhistroy = 5\n", "histroy"),
            ("listen = \"[::1]:4433\"\n", "listen"),
        ] {
            let err = Config::from_toml_str(text).unwrap_err();
            let msg = err.to_string();
            assert!(matches!(err, ConfigError::Parse { .. }), "{msg}");
            assert!(msg.contains(key), "{msg}");
        }
    }

    #[test]
    fn hooks_and_webhooks() {
        let c = Config::from_toml_str(
            r#"
            [namespaces.chat.hooks]
            url = "http://127.0.0.1:3000/wtgate"
            publish = true
            rpc = true
            timeout = "250ms"
            on_unavailable = "allow"
            [webhooks]
            url = "https://backend.example/hooks"
            queue = 10
            "#,
        )
        .unwrap();
        let h = &c.namespace("/chat").unwrap().hooks;
        assert!(h.publish && h.rpc && !h.connect && !h.join && h.any());
        assert_eq!(h.timeout, Duration::from_millis(250));
        assert_eq!(h.on_unavailable, OnUnavailable::Allow);
        assert_eq!(h.max_rpcs_per_session, 8);
        assert_eq!(c.webhooks.queue, 10);
        assert_eq!(c.webhooks.timeout, Duration::from_secs(5));
        let err = Config::from_toml_str("[namespaces.chat.hooks]\non_unavailable = \"maybe\"\n");
        assert!(matches!(err, Err(ConfigError::Parse { .. })), "{err:?}");
        assert!(!Config::default().namespace("/chat").unwrap().hooks.any());
    }

    #[test]
    fn load_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wtgate.toml");
        std::fs::write(&path, "[limits]\nbogus = true\n").unwrap();
        let msg = Config::load(&path).unwrap_err().to_string();
        assert!(msg.contains("wtgate.toml"), "{msg}");
        assert!(msg.contains("bogus"), "{msg}");

        std::fs::write(&path, "[namespaces.chat]\nhistory = 7\n").unwrap();
        let c = Config::load(&path).unwrap();
        assert_eq!(c.namespace("/chat").unwrap().history, 7);

        let missing = dir.path().join("missing.toml");
        let err = Config::load(&missing).unwrap_err();
        assert!(matches!(err, ConfigError::Io { .. }));
        assert!(err.to_string().contains("missing.toml"));
    }

    #[test]
    fn invalid_values() {
        for (text, key) in [
            ("[namespaces.\"bad name\"]\n", "namespaces.bad name"),
            ("[namespaces.\"/chat\"]\n", "namespaces./chat"),
            ("[namespaces]\n", "namespaces"),
            ("[limits]\nmax_frame = 0\n", "limits.max_frame"),
            ("[limits]\nmax_frame = 999999999\n", "limits.max_frame"),
            ("[limits]\npublish_rate = 0.0\n", "limits.publish_rate"),
            ("[limits]\npublish_rate = nan\n", "limits.publish_rate"),
            ("[limits]\npublish_burst = 0\n", "limits.publish_burst"),
            (
                "[limits]\nmax_rooms_per_session = 0\n",
                "limits.max_rooms_per_session",
            ),
            ("[limits]\nhello_timeout = \"0s\"\n", "limits.hello_timeout"),
            ("[limits]\noutbound_queue = 0\n", "limits.outbound_queue"),
            ("[limits]\nmax_hook_calls = 0\n", "limits.max_hook_calls"),
            (
                "[namespaces.chat.hooks]\nurl = \"ftp://x\"\n",
                "namespaces.chat.hooks.url",
            ),
            (
                "[namespaces.chat.hooks]\ntimeout = 0\n",
                "namespaces.chat.hooks.timeout",
            ),
            (
                "[namespaces.chat.hooks]\nmax_rpcs_per_session = 0\n",
                "namespaces.chat.hooks.max_rpcs_per_session",
            ),
            ("[webhooks]\nurl = \"localhost\"\n", "webhooks.url"),
            ("[webhooks]\nqueue = 0\n", "webhooks.queue"),
            (
                "[webhooks]\nmax_backoff = \"10ms\"\n",
                "webhooks.max_backoff",
            ),
        ] {
            match Config::from_toml_str(text) {
                Err(ConfigError::Invalid { key: k, .. }) => assert_eq!(k, key, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
        for text in [
            "[limits]\nhello_timeout = \"soon\"\n",
            "[limits]\nmax_frame = -1\n",
            "[limits]\nmax_frame = \"big\"\n",
            "[namespaces.chat]\npresence = \"yes\"\n",
            "not toml at all",
        ] {
            assert!(
                matches!(Config::from_toml_str(text), Err(ConfigError::Parse { .. })),
                "{text}"
            );
        }
        // Zero is meaningful for these.
        Config::from_toml_str("[limits]\nroom_ttl = \"0s\"\nshutdown_grace = 0\n").unwrap();
    }

    fn settings(dev: bool, allowed: &[&str]) -> Settings {
        Settings {
            listen: "[::1]:4433".parse().unwrap(),
            tls: TlsSource::SelfSigned {
                dir: PathBuf::from("certs"),
            },
            secret: "s3cret".into(),
            dev,
            allowed_origins: allowed.iter().map(|s| s.to_string()).collect(),
            config: Config::default(),
            data_dir: PathBuf::from("data"),
            api_key: None,
            redis: None,
            node_id: None,
            hook_secret: None,
            engine: Engine::default(),
        }
    }

    #[test]
    fn origins_without_list() {
        let open = settings(false, &[]);
        assert!(open.origin_allowed(None));
        assert!(open.origin_allowed(Some("https://anything.example")));

        let dev = settings(true, &[]);
        assert!(dev.origin_allowed(None));
        for ok in [
            "http://localhost",
            "https://localhost:8080",
            "http://127.0.0.1:4433",
            "https://[::1]:443",
            "HTTP://LocalHost:3000",
        ] {
            assert!(dev.origin_allowed(Some(ok)), "{ok}");
        }
        for bad in [
            "https://example.com",
            "http://localhost.evil.com",
            "http://localhost:80x",
            "http://localhost:123456",
            "ftp://localhost",
            "null",
            "http://127.0.0.2",
        ] {
            assert!(!dev.origin_allowed(Some(bad)), "{bad}");
        }
    }

    #[test]
    fn origins_with_list() {
        let s = settings(
            false,
            &["https://app.example.com", "http://Other.Example:8080/"],
        );
        assert!(s.origin_allowed(None));
        assert!(s.origin_allowed(Some("https://app.example.com")));
        assert!(s.origin_allowed(Some("HTTPS://APP.example.com")));
        assert!(s.origin_allowed(Some("https://app.example.com:443")));
        assert!(s.origin_allowed(Some("http://other.example:8080")));
        assert!(!s.origin_allowed(Some("http://app.example.com")));
        assert!(!s.origin_allowed(Some("https://app.example.com.evil")));
        assert!(!s.origin_allowed(Some("http://other.example")));
        assert!(!s.origin_allowed(Some("http://localhost:3000")));

        let dev = settings(true, &["https://app.example.com"]);
        assert!(dev.origin_allowed(Some("https://app.example.com")));
        assert!(dev.origin_allowed(Some("http://localhost:3000")));
        assert!(!dev.origin_allowed(Some("https://evil.example")));
    }

    #[test]
    fn debug_hides_secret() {
        let s = settings(false, &[]);
        let dbg = format!("{s:?}");
        assert!(!dbg.contains("s3cret"), "{dbg}");
    }
}
