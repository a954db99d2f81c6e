//! Webhooks: what happened, told to the application's backend asynchronously and
//! at least once (the Pusher/Soketi model), from a bounded durable queue.
//!
//! Sessions [`emit`](Webhooks::emit) events without waiting: a bounded channel
//! takes them to a writer task that appends them to the [`Queue`] — a redb table
//! in the data directory ([`EmbeddedQueue`]), or in cluster mode a Redis list
//! shared by the nodes ([`RedisQueue`], each event sent by one node), so neither a
//! backend that is down nor a wtgate restart loses them. A sender task POSTs the oldest event to
//! `[webhooks] url`, signed like hook calls (`X-Wtgate-Signature: t=…,v1=…`), and
//! removes it once the backend answered 2xx; a failure is retried with exponential
//! backoff (100 ms doubling up to `max_backoff`), in order. Past `queue` waiting
//! events, new ones are dropped, counted (`wtgate_webhooks_dropped_total`) and
//! logged.
//!
//! An event is a JSON object: `id` (unique, for the receiver's deduplication),
//! `type`, `ts` (ms since the Unix epoch), `namespace`, `user`, `session`, and
//! `room` (room events) or `notification` (its id).

mod embedded;
mod redis;

pub use self::redis::RedisQueue;
pub use embedded::EmbeddedQueue;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use thiserror::Error;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::config::WebhooksConfig;
use crate::hub::SessionId;
use crate::metrics::Metrics;

/// Events buffered between the sessions and the writer task.
const CHANNEL: usize = 4096;
/// Events the writer appends in one transaction at most.
const BATCH: usize = 256;
/// The first retry's wait.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum EventKind {
    /// A session was welcomed.
    #[serde(rename = "session.opened")]
    SessionOpened,
    /// A welcomed session ended.
    #[serde(rename = "session.closed")]
    SessionClosed,
    /// A user entered a room (their first session in it).
    #[serde(rename = "room.joined")]
    RoomJoined,
    /// A user left a room (their last session in it).
    #[serde(rename = "room.left")]
    RoomLeft,
    /// A room got its first member.
    #[serde(rename = "room.created")]
    RoomCreated,
    /// A room lost its last member.
    #[serde(rename = "room.vacated")]
    RoomVacated,
    /// A notification was handed to a session.
    #[serde(rename = "notification.delivered")]
    NotificationDelivered,
    /// A client acknowledged a notification (it left the inbox).
    #[serde(rename = "notification.acked")]
    NotificationAcked,
}

/// One event, as the backend receives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    /// Unique id, for the receiver to drop a redelivery.
    pub id: String,
    /// What happened.
    #[serde(rename = "type")]
    pub kind: EventKind,
    /// When, ms since the Unix epoch.
    pub ts: u64,
    /// Namespace path.
    pub namespace: String,
    /// The user.
    pub user: String,
    /// The session.
    pub session: SessionId,
    /// The room, for room events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    /// The notification id, for notification events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notification: Option<u64>,
}

impl Event {
    /// An event of `kind` about session `session` of `user` in `ns`, now.
    pub fn new(kind: EventKind, ns: &str, user: &str, session: SessionId) -> Self {
        Event {
            id: format!("{:032x}", rand::random::<u128>()),
            kind,
            ts: crate::broker::now_millis(),
            namespace: ns.to_owned(),
            user: user.to_owned(),
            session,
            room: None,
            notification: None,
        }
    }

    /// With the room it is about.
    pub fn room(mut self, room: &str) -> Self {
        self.room = Some(room.to_owned());
        self
    }

    /// With the notification it is about.
    pub fn notification(mut self, id: u64) -> Self {
        self.notification = Some(id);
        self
    }
}

/// Why the queue failed.
#[derive(Debug, Error)]
pub enum QueueError {
    /// The store could not be opened, read or written.
    #[error("webhook queue: {0}")]
    Store(String),
}

/// Where events wait until the backend took them.
#[async_trait]
pub trait Queue: Send + Sync + 'static {
    /// Appends `events` (encoded), oldest first, keeping at most `bound` waiting;
    /// returns how many were dropped at the bound.
    async fn push(&self, events: Vec<Vec<u8>>, bound: usize) -> Result<usize, QueueError>;

    /// The oldest waiting event and its key; the same one until it is removed.
    async fn peek(&self) -> Result<Option<(u64, Vec<u8>)>, QueueError>;

    /// Removes a sent event.
    async fn remove(&self, key: u64) -> Result<(), QueueError>;

    /// Events waiting.
    async fn waiting(&self) -> Result<u64, QueueError>;
}

/// The sessions' side: emits events without waiting. Off without a `[webhooks] url`.
#[derive(Debug, Clone, Default)]
pub struct Webhooks {
    tx: Option<mpsc::Sender<Event>>,
    metrics: Option<Arc<Metrics>>,
}

impl Webhooks {
    /// Webhooks that go nowhere.
    pub fn off() -> Self {
        Webhooks::default()
    }

    /// Whether events are sent anywhere.
    pub fn is_on(&self) -> bool {
        self.tx.is_some()
    }

    /// Queues an event; a full channel (the writer is far behind) drops it,
    /// counted and logged like a full queue.
    pub fn emit(&self, event: Event) {
        let Some(tx) = &self.tx else { return };
        if let Err(e) = tx.try_send(event) {
            let event = match e {
                mpsc::error::TrySendError::Full(event)
                | mpsc::error::TrySendError::Closed(event) => event,
            };
            dropped(self.metrics.as_deref(), 1, &event);
        }
    }
}

fn dropped(metrics: Option<&Metrics>, n: usize, event: &Event) {
    if let Some(m) = metrics {
        m.webhooks_dropped.inc_by(n as u64);
    }
    warn!(
        dropped = n,
        kind = ?event.kind,
        "webhook queue full: events dropped (raise [webhooks] queue, or bring the backend back)"
    );
}

/// The running webhook machinery: the handle sessions emit to, and the tasks to run.
pub struct Started {
    /// What sessions emit to.
    pub webhooks: Webhooks,
    /// Appends emitted events to the queue.
    pub writer: futures::future::BoxFuture<'static, ()>,
    /// Sends queued events to the backend.
    pub sender: futures::future::BoxFuture<'static, ()>,
}

/// Starts webhooks to `config.url` through `queue`, signed with `secret`; the
/// tasks end on `shutdown` (the writer after writing what is buffered).
pub fn start(
    config: &WebhooksConfig,
    queue: Arc<dyn Queue>,
    secret: &[u8],
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> Result<Started, QueueError> {
    let (tx, rx) = mpsc::channel(CHANNEL);
    let wake = Arc::new(Notify::new());
    let tls = crate::api_client::tls_config(&crate::client::Trust::System)
        .map_err(|e| QueueError::Store(e.to_string()))?;
    let http = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(config.timeout)
        .tcp_nodelay(true)
        .user_agent(concat!("wtgate/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| QueueError::Store(e.to_string()))?;
    let writer = write(
        rx,
        queue.clone(),
        config.queue,
        wake.clone(),
        metrics.clone(),
        shutdown.clone(),
    );
    let sender = Sender {
        http,
        url: config.url.clone(),
        secret: secret.to_vec(),
        max_backoff: config.max_backoff,
        queue,
        wake,
        metrics: metrics.clone(),
    };
    Ok(Started {
        webhooks: Webhooks {
            tx: Some(tx),
            metrics: Some(metrics),
        },
        writer: Box::pin(writer),
        sender: Box::pin(sender.run(shutdown)),
    })
}

/// Appends what sessions emit, in batches.
async fn write(
    mut rx: mpsc::Receiver<Event>,
    queue: Arc<dyn Queue>,
    bound: usize,
    wake: Arc<Notify>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let first = tokio::select! {
            first = rx.recv() => first,
            // Sessions closing at shutdown still emit: take those too, until quiet.
            _ = shutdown.cancelled() => {
                tokio::time::timeout(Duration::from_millis(300), rx.recv())
                    .await
                    .ok()
                    .flatten()
            }
        };
        let Some(first) = first else { return };
        batch.push(first);
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(event) => batch.push(event),
                Err(_) => break,
            }
        }
        let encoded = batch
            .iter()
            .map(|e| serde_json::to_vec(e).expect("events always serialize"))
            .collect();
        match queue.push(encoded, bound).await {
            Ok(0) => {}
            Ok(n) => dropped(Some(&metrics), n, &batch[batch.len() - 1]),
            Err(e) => {
                warn!("webhook events lost: {e}");
                metrics.webhooks_dropped.inc_by(batch.len() as u64);
            }
        }
        batch.clear();
        wake.notify_one();
    }
}

struct Sender {
    http: reqwest::Client,
    url: String,
    secret: Vec<u8>,
    max_backoff: Duration,
    queue: Arc<dyn Queue>,
    wake: Arc<Notify>,
    metrics: Arc<Metrics>,
}

impl Sender {
    /// Sends the oldest event until none is left, then waits for more.
    async fn run(self, shutdown: CancellationToken) {
        let mut backoff = FIRST_BACKOFF;
        loop {
            let next = match self.queue.peek().await {
                Ok(next) => next,
                Err(e) => {
                    warn!("webhook queue unreadable: {e}");
                    None
                }
            };
            let Some((key, body)) = next else {
                tokio::select! {
                    _ = self.wake.notified() => continue,
                    // Also look again now and then: another node may have queued.
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    _ = shutdown.cancelled() => return,
                }
            };
            match self.send(&body).await {
                Ok(()) => {
                    backoff = FIRST_BACKOFF;
                    self.metrics.webhooks_sent.inc();
                    if let Err(e) = self.queue.remove(key).await {
                        warn!("a sent webhook stays queued (it will be sent again): {e}");
                    }
                }
                Err(why) => {
                    self.metrics.webhooks_failed.inc();
                    debug!("webhook not delivered, retrying in {backoff:?}: {why}");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.cancelled() => return,
                    }
                    backoff = (backoff * 2).min(self.max_backoff);
                }
            }
        }
    }

    async fn send(&self, body: &[u8]) -> Result<(), String> {
        let t = crate::hooks::sign::unix_now();
        let kind = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v["type"].as_str().map(str::to_owned))
            .unwrap_or_default();
        let resp = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .header(
                crate::hooks::SIGNATURE_HEADER,
                crate::hooks::signature_header(&self.secret, t, body),
            )
            .header("x-wtgate-event", kind)
            .body(body.to_vec())
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(format!("the backend answered {}", resp.status()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_serialize_as_documented() {
        let mut e = Event::new(EventKind::RoomJoined, "/chat", "alice", 7).room("lobby");
        e.id = "x".into();
        e.ts = 1;
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            serde_json::json!({
                "id": "x", "type": "room.joined", "ts": 1, "namespace": "/chat",
                "user": "alice", "session": 7, "room": "lobby"
            })
        );
        let n = Event::new(EventKind::NotificationAcked, "/n", "bob", 1).notification(4);
        let v = serde_json::to_value(&n).unwrap();
        assert_eq!(v["type"], "notification.acked");
        assert_eq!(v["notification"], 4);
        assert!(v.get("room").is_none());
        assert_eq!(n.id.len(), 32);
    }

    #[test]
    fn off_webhooks_swallow_events() {
        let w = Webhooks::off();
        assert!(!w.is_on());
        w.emit(Event::new(EventKind::SessionOpened, "/chat", "a", 1));
    }
}
