//! State shared by every session of a server, and the operations the server API
//! offers backends: publish, broadcast, notify, presence, disconnect.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use thiserror::Error;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use super::admission::{Admission, AwaitingGuard, ConnectLimiter};

use crate::auth::{TokenVerifier, SERVER_USER};
use crate::broker::{Broker, BrokerError};
use crate::config::{Config, NamespaceConfig, Settings};
use crate::engine::Admit;
use crate::hooks::{HookRunner, Hooks};
use crate::hub::{validate_room_name, Hub, QueuedBytes};
use crate::metrics::Metrics;
use crate::notify::{Inbox, InboxError, Notification};
use crate::protocol::{frame_bytes, ErrorCode, ServerFrame};
use crate::session::{Backends, Rules};
use crate::webhooks::Webhooks;

/// Longest notification kind, in bytes.
pub const MAX_KIND_LEN: usize = 64;

/// Why a server-side operation was refused.
#[derive(Debug, Error)]
pub enum GatewayError {
    /// No such namespace.
    #[error("unknown namespace {0}")]
    UnknownNamespace(String),
    /// The room name breaks the naming rules.
    #[error("invalid room name: {0}")]
    InvalidRoom(String),
    /// The user id breaks the naming rules.
    #[error("invalid user id: {0}")]
    InvalidUser(String),
    /// The notification kind is empty, too long or has control characters.
    #[error("invalid notification kind: 1 to {MAX_KIND_LEN} bytes without control characters")]
    InvalidKind,
    /// The body exceeds the frame limit.
    #[error("body of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Body length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The namespace has no notification inbox.
    #[error("no namespace has notification inboxes enabled")]
    NoInbox,
    /// The broker failed.
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// The inbox store failed.
    #[error(transparent)]
    Inbox(#[from] InboxError),
}

/// Shared state of one server.
pub struct Gateway {
    /// Namespaces and limits.
    pub config: Config,
    /// Local rooms and sessions.
    pub hub: Arc<Hub>,
    /// Cross-node fan-out, history and presence.
    pub broker: Arc<dyn Broker>,
    /// Durable notification inboxes.
    pub inbox: Arc<dyn Inbox>,
    /// Prometheus series.
    pub metrics: Arc<Metrics>,
    /// How long busy sessions hold frames, following the server's load.
    pub flush_window: super::FlushWindow,
    /// Limits and the token check every session obeys.
    pub(crate) rules: Arc<Rules>,
    /// The application backend's hooks, bounded in time and calls in flight.
    pub(crate) hooks: Arc<HookRunner>,
    /// Events for the application backend.
    pub(crate) webhooks: Webhooks,
    /// Bytes queued for every session, against `outbound_bytes_total`.
    pub(crate) queued_bytes: Arc<QueuedBytes>,
    /// Connections not welcomed yet, against `max_awaiting_hello`.
    pub(crate) awaiting_hello: Arc<super::admission::AwaitingHello>,
    pub(super) settings: Settings,
    next_session: AtomicU64,
    pub(super) shutdown: CancellationToken,
    /// Every session's task, whichever listener accepted it: shutdown waits for them.
    pub(super) tasks: TaskTracker,
    /// New connections per address, for WebTransport and WebSocket alike. A std
    /// mutex: one map update per connection, never held across an await.
    connects: Mutex<ConnectLimiter>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("sessions", &self.hub.session_count())
            .finish_non_exhaustive()
    }
}

impl Gateway {
    pub(super) fn new(
        settings: Settings,
        hub: Arc<Hub>,
        broker: Arc<dyn Broker>,
        inbox: Arc<dyn Inbox>,
        hooks: Arc<dyn Hooks>,
        webhooks: Webhooks,
        metrics: Arc<Metrics>,
    ) -> Self {
        let settings_limits = settings.config.limits.clone();
        Gateway {
            webhooks,
            hooks: Arc::new(HookRunner::new(hooks, &settings.config, metrics.clone())),
            config: settings.config.clone(),
            rules: Arc::new(Rules {
                limits: settings.config.limits.clone(),
                verifier: TokenVerifier::new(settings.secret.as_bytes()),
            }),
            hub,
            broker,
            inbox,
            metrics,
            flush_window: super::FlushWindow::new(settings.config.limits.flush_interval),
            queued_bytes: QueuedBytes::new(settings.config.limits.outbound_bytes_total),
            awaiting_hello: super::admission::AwaitingHello::new(
                settings.config.limits.max_awaiting_hello,
            ),
            settings,
            next_session: AtomicU64::new(1),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            connects: Mutex::new(ConnectLimiter::new(
                settings_limits.connect_rate_per_ip,
                settings_limits.connect_burst_per_ip,
                settings_limits.unvalidated_connect_rate,
                Instant::now(),
            )),
        }
    }

    /// Whether a new connection from `peer` may start its handshake; `validated`:
    /// its address is proven (by TCP, or by a QUIC Retry).
    pub(super) fn admit(&self, peer: SocketAddr, validated: bool) -> Admission {
        let mut connects = self.connects.lock().unwrap_or_else(|e| e.into_inner());
        connects.admit(peer.ip(), validated, Instant::now())
    }

    /// What the effects of session `id` (of `user`, in `ns`) run against; every
    /// driver performs them through this.
    pub(crate) fn backends<'a>(&'a self, ns: &'a str, id: u64, user: &'a str) -> Backends<'a> {
        Backends {
            hub: &self.hub,
            broker: self.broker.as_ref(),
            inbox: self.inbox.as_ref(),
            ns,
            id,
            user,
            hooks: &self.hooks,
            webhooks: &self.webhooks,
        }
    }

    /// Whether a new QUIC connection from `peer` may start its handshake
    /// (`validated`: it answered a Retry): with its place among the connections
    /// awaiting `Hello`, after a Retry, or not at all (counted). Both
    /// WebTransport engines decide through this.
    pub(super) fn admit_quic(&self, peer: SocketAddr, validated: bool) -> Admit<AwaitingGuard> {
        match self.admit(peer, validated) {
            Admission::Accept => match self.awaiting_hello.enter() {
                Some(place) => Admit::Accept(place),
                None => {
                    debug!(%peer, "too many connections awaiting Hello: refused");
                    self.metrics.error(ErrorCode::TooManySessions);
                    Admit::Refuse
                }
            },
            Admission::Retry => {
                self.metrics.connect_retries.inc();
                Admit::Retry
            }
            Admission::Refuse => {
                debug!(%peer, "connection rate limit: refused");
                self.metrics.error(ErrorCode::TooManySessions);
                Admit::Refuse
            }
        }
    }

    /// The namespace a WebTransport request for `path` (its query dropped) from
    /// `origin` opens, or the HTTP status that refuses it (404, 403).
    pub(super) fn route(
        &self,
        path: &str,
        origin: Option<&str>,
        peer: SocketAddr,
    ) -> Result<(String, NamespaceConfig), u16> {
        let path = path.split('?').next().unwrap_or_default();
        let Some(ns_config) = self.config.namespace(path).cloned() else {
            debug!(%peer, path, "unknown namespace");
            return Err(404);
        };
        if !self.settings.origin_allowed(origin) {
            warn!(%peer, ?origin, "origin not allowed");
            return Err(403);
        }
        Ok((path.to_owned(), ns_config))
    }

    pub(super) fn new_session_id(&self) -> u64 {
        self.next_session.fetch_add(1, Ordering::Relaxed)
    }

    /// The settings the server runs with.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    fn check_namespace(&self, ns: &str) -> Result<(), GatewayError> {
        match self.config.namespace(ns) {
            Some(_) => Ok(()),
            None => Err(GatewayError::UnknownNamespace(ns.to_owned())),
        }
    }

    fn check_body(&self, body: &Bytes) -> Result<(), GatewayError> {
        // Leave room for the frame's other fields within the frame limit.
        let max = self.config.limits.max_frame.saturating_sub(512);
        if body.len() > max {
            return Err(GatewayError::TooLarge {
                len: body.len(),
                max,
            });
        }
        Ok(())
    }

    /// Publishes to a room as the server (`from` = `"server"`); members receive it
    /// like a client publish. Returns the message's seq.
    pub async fn publish(&self, ns: &str, room: &str, body: Bytes) -> Result<u64, GatewayError> {
        self.check_namespace(ns)?;
        validate_room_name(room, self.config.limits.max_room_name)
            .map_err(|e| GatewayError::InvalidRoom(e.to_string()))?;
        self.check_body(&body)?;
        let seq = self.broker.publish(ns, room, SERVER_USER, body).await?;
        self.metrics.message_in(ns);
        Ok(seq)
    }

    /// Sends a broadcast to every session of a namespace.
    pub async fn broadcast(&self, ns: &str, body: Bytes) -> Result<(), GatewayError> {
        self.check_namespace(ns)?;
        self.check_body(&body)?;
        self.broker.broadcast(ns, SERVER_USER, body).await?;
        Ok(())
    }

    /// Stores a notification in `user`'s inbox, then pushes it to the user's
    /// sessions in notification namespaces. Stored before this returns.
    pub async fn notify(
        &self,
        user: &str,
        kind: &str,
        body: Bytes,
    ) -> Result<Notification, GatewayError> {
        crate::auth::validate_subject(user)
            .map_err(|e| GatewayError::InvalidUser(e.to_string()))?;
        if kind.is_empty() || kind.len() > MAX_KIND_LEN || kind.chars().any(char::is_control) {
            return Err(GatewayError::InvalidKind);
        }
        self.check_body(&body)?;
        if !self.config.namespaces.values().any(|ns| ns.inbox) {
            return Err(GatewayError::NoInbox);
        }
        let pushed = self.inbox.push(user, kind, body).await?;
        self.metrics.notifications_pushed.inc();
        self.metrics.notifications_evicted.inc_by(pushed.evicted);
        let n = pushed.notification;
        let frame = frame_bytes(&ServerFrame::Notification {
            id: n.id,
            kind: n.kind.clone(),
            body: n.body.clone(),
            ts: n.ts,
        });
        self.broker.notify_user(user, n.id, frame).await?;
        Ok(n)
    }

    /// Users in a room, or online in the namespace when `room` is `None`.
    pub async fn presence(
        &self,
        ns: &str,
        room: Option<&str>,
    ) -> Result<Vec<String>, GatewayError> {
        self.check_namespace(ns)?;
        Ok(match room {
            Some(room) => {
                validate_room_name(room, self.config.limits.max_room_name)
                    .map_err(|e| GatewayError::InvalidRoom(e.to_string()))?;
                self.broker.room_members(ns, room).await?
            }
            None => self.broker.online_users(ns).await?,
        })
    }

    /// Closes every session of `user`, on every node; returns how many. With
    /// `revoke`, first refuses (durably) the user's tokens issued until now, so the
    /// closed sessions cannot come back with them.
    pub async fn disconnect(&self, user: &str, revoke: bool) -> Result<usize, GatewayError> {
        crate::auth::validate_subject(user)
            .map_err(|e| GatewayError::InvalidUser(e.to_string()))?;
        if revoke {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            self.inbox.revoke(user, now).await?;
        }
        Ok(self
            .broker
            .disconnect_user(user, ErrorCode::Forbidden)
            .await?)
    }

    /// The metrics in Prometheus text format, with scrape-time gauges refreshed.
    pub async fn metrics_text(&self) -> String {
        self.metrics.rooms.set(self.hub.room_count() as i64);
        self.metrics
            .queued_bytes
            .set(self.queued_bytes.get().try_into().unwrap_or(i64::MAX));
        if let Some(bytes) = self.broker.history_bytes() {
            self.metrics
                .history_bytes
                .set(bytes.try_into().unwrap_or(i64::MAX));
        }
        self.metrics
            .awaiting_hello
            .set(self.awaiting_hello.get().try_into().unwrap_or(i64::MAX));
        if let Ok(n) = self.inbox.total_pending().await {
            self.metrics.notifications_pending.set(n as i64);
        }
        let stats = self.hub.stats();
        // The hub counts what it drops itself (it has no metrics); mirror it here.
        let m = &self.metrics;
        m.frames_dropped
            .inner()
            .store(stats.frames_dropped, Ordering::Relaxed);
        m.presence_frames
            .inner()
            .store(stats.presence_frames, Ordering::Relaxed);
        m.datagrams_overflow
            .inner()
            .store(stats.datagrams_dropped, Ordering::Relaxed);
        self.metrics.render()
    }
}
