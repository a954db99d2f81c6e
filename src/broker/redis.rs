//! The cluster broker: several wtgate nodes share rooms, history, presence and
//! fan-out through one Redis (`wtgate serve --redis redis://HOST:6379`).
//!
//! # How it works
//! - **Publish**: one Lua script assigns the room's next seq (`HINCRBY`), appends the
//!   message to the room's capped history list and `PUBLISH`es it on the room's
//!   channel: one Redis message per publish, whatever the member count. Scripts run
//!   atomically, so seq is gap-free cluster-wide and channel order is seq order.
//! - **Delivery**: every node subscribes to the channels of the rooms it has
//!   members in ([`subscriber`]); its single reader task encodes each message once
//!   and hands it to the hub for the local members. The publishing node gets its own
//!   message back the same way.
//! - **Epochs**: a room's epoch (ms, Redis clock) is created with its seq counter.
//!   Both expire `room_ttl` (at least 5 s) after the last publish or join; nodes with
//!   members keep refreshing them, so a room lives while anyone is in it and a
//!   returning room starts a new epoch, as with the single-process broker.
//! - **Presence**: each node records what it contributes (user in room, user online)
//!   in its own set and counts nodes per user in per-room and per-namespace hashes;
//!   the first node to add a user and the last to remove one publish the join and
//!   leave events. Nodes heartbeat every second with a deadline 4 s ahead; every
//!   node's heartbeat script also reaps nodes past their deadline, atomically, so a
//!   node killed with SIGKILL has its users leave within about 5 s (deadline plus
//!   one heartbeat), each leave event sent once.
//! - **Volatile** events go to local members at once and to other nodes through a
//!   bounded queue and a publisher task; when the queue is full they are dropped.
//! - **Broadcasts, notifications, disconnects** travel on a channel every node
//!   subscribes to.
//!
//! # When Redis is unreachable
//! Publishes, joins and presence queries fail with [`BrokerError::Unavailable`]
//! (sessions answer `Error(Internal)`), the first failure is logged as a warning,
//! [`Broker::health`] says why, and both connections keep reconnecting. Once back, the
//! node resubscribes, delivers what its members missed from history, rewrites its
//! presence if Redis lost it, and restores rooms whose keys Redis lost (restarted
//! without persistence) with the epoch and seq their members know.

mod disconnects;
mod scripts;
mod subscriber;
mod wire;

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::RedisResult;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use self::scripts::Scripts;
use self::subscriber::Subscriptions;
use self::wire::{Record, PREFIX};
use super::{now_millis, Broker, BrokerError, BrokerHealth, PresenceChange};
use crate::config::Config;
use crate::hub::{Hub, Recovery, SessionId};
use crate::protocol::{frame_bytes, ErrorCode, ServerFrame, Since};

/// How often a node renews its heartbeat and reaps dead nodes.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// How long after its last heartbeat a node counts as dead.
const NODE_TTL: Duration = Duration::from_secs(4);
/// Shortest life of a room's seq and history in Redis after its last publish.
const MIN_ROOM_TTL: Duration = Duration::from_secs(5);
/// How long one Redis command may take before it counts as a failure.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// How long `connect` waits for Redis at startup.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(5);
/// Volatile events waiting for the publisher; more are dropped.
const VOLATILE_QUEUE: usize = 4096;
/// Volatile events sent in one pipeline.
const VOLATILE_BATCH: usize = 64;

/// Broker over Redis for a cluster of nodes.
pub struct Redis {
    inner: Arc<Inner>,
    volatile: mpsc::Sender<(String, Vec<u8>)>,
    cancel: CancellationToken,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field("node", &self.inner.node)
            .field("redis", &self.inner.health.url)
            .finish_non_exhaustive()
    }
}

/// State shared with the background tasks.
struct Inner {
    node: String,
    hub: Arc<Hub>,
    conn: ConnectionManager,
    scripts: Scripts,
    history_sizes: HashMap<String, usize>,
    /// History bytes one room keeps.
    history_bytes: usize,
    /// History bytes all rooms keep together.
    history_bytes_total: usize,
    /// Rooms one namespace holds.
    max_rooms: usize,
    /// Namespaces with room presence (where Redis knows whether a room is empty).
    room_presence: std::collections::HashSet<String>,
    inbox_namespaces: Vec<String>,
    room_ttl: Duration,
    subs: Subscriptions,
    presence: Presence,
    health: Health,
    disconnects: disconnects::Pending,
}

/// This node's presence tuples: what Redis must hold for it.
#[derive(Default)]
struct Presence {
    /// Serialises presence writes with resyncs, so a resync never writes back a
    /// presence removed meanwhile (a tokio mutex: held across the Redis call).
    tuples: tokio::sync::Mutex<BTreeSet<String>>,
    /// A write failed: Redis may disagree with `tuples` until the next resync.
    dirty: AtomicBool,
}

/// Whether the two connections work, for `health()` and for logging transitions once.
struct Health {
    url: String,
    commands: AtomicBool,
    subscriber: AtomicBool,
    reason: Mutex<String>,
}

impl Health {
    fn set_reason(&self, why: &str) {
        *self.reason.lock().unwrap_or_else(|p| p.into_inner()) = why.to_owned();
    }

    fn commands_failed(&self, why: &str) {
        self.set_reason(why);
        if self.commands.swap(false, Ordering::AcqRel) {
            warn!(
                redis = self.url,
                "redis unavailable: {why}; publishes, joins and presence fail until it returns"
            );
        }
    }

    fn commands_ok(&self) {
        if !self.commands.swap(true, Ordering::AcqRel) {
            info!(redis = self.url, "redis reachable again");
        }
    }

    fn subscriber_down(&self, why: &str) {
        self.set_reason(why);
        if self.subscriber.swap(false, Ordering::AcqRel) {
            warn!(
                redis = self.url,
                "redis pub/sub connection lost: {why}; reconnecting"
            );
        } else {
            debug!(redis = self.url, "redis pub/sub still down: {why}");
        }
    }

    fn subscriber_up(&self, rooms: usize) {
        if !self.subscriber.swap(true, Ordering::AcqRel) {
            info!(redis = self.url, rooms, "redis pub/sub connected");
        }
    }

    fn state(&self) -> BrokerHealth {
        let commands = self.commands.load(Ordering::Acquire);
        let subscriber = self.subscriber.load(Ordering::Acquire);
        if commands && subscriber {
            return BrokerHealth::Ok;
        }
        let reason = self
            .reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let part = if commands {
            "pub/sub connection"
        } else {
            "connection"
        };
        BrokerHealth::Unavailable(format!("redis {} {part} down: {reason}", self.url))
    }
}

/// `redis://user:secret@host` → `redis://***@host`, for logs.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// Checks a node id: 1 to 64 of `[A-Za-z0-9._-]`.
pub fn valid_node_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl Redis {
    /// Connects to Redis at `url` as node `node` (random when `None`), subscribes, and
    /// starts the heartbeat. Fails when Redis cannot be reached within a few seconds.
    pub async fn connect(
        url: &str,
        node: Option<String>,
        hub: Arc<Hub>,
        config: &Config,
    ) -> Result<Redis, BrokerError> {
        let node = node.unwrap_or_else(|| format!("{:016x}", rand::random::<u64>()));
        if !valid_node_id(&node) {
            return Err(BrokerError::Config(format!(
                "invalid node id {node:?}: use 1 to 64 of A-Z a-z 0-9 . _ -"
            )));
        }
        let shown = redact(url);
        let client = redis::Client::open(url)
            .map_err(|e| BrokerError::Config(format!("invalid redis url {shown}: {e}")))?;
        let conn = connection_manager(client.clone(), &shown).await?;
        let inner = Arc::new(Inner {
            node,
            hub,
            conn,
            scripts: Scripts::new(),
            history_sizes: config.history_sizes(),
            history_bytes: config.limits.history_bytes,
            history_bytes_total: config.limits.history_bytes_total,
            max_rooms: config.limits.max_rooms_per_namespace,
            room_presence: config
                .namespaces
                .iter()
                .filter(|(_, ns)| ns.presence)
                .map(|(path, _)| path.clone())
                .collect(),
            inbox_namespaces: config.inbox_namespaces(),
            room_ttl: config.limits.room_ttl.max(MIN_ROOM_TTL),
            subs: Subscriptions::default(),
            presence: Presence::default(),
            health: Health {
                url: shown.clone(),
                commands: AtomicBool::new(true),
                subscriber: AtomicBool::new(false),
                reason: Mutex::new(String::new()),
            },
            disconnects: disconnects::Pending::default(),
        });
        let cancel = CancellationToken::new();
        tokio::spawn(subscriber::run(inner.clone(), client, cancel.clone()));
        let started = Instant::now();
        while !inner.subs.is_live() {
            if started.elapsed() > STARTUP_TIMEOUT {
                cancel.cancel();
                return Err(BrokerError::Unavailable(format!(
                    "redis {shown}: could not subscribe within {STARTUP_TIMEOUT:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if let Err(e) = inner.claim_node_id().await {
            cancel.cancel();
            return Err(e);
        }
        // A previous process with this node id may have left presence behind.
        if let Err(e) = inner.resync().await {
            cancel.cancel();
            return Err(e);
        }
        inner.heartbeat().await.inspect_err(|_| cancel.cancel())?;
        let (volatile, rx) = mpsc::channel(VOLATILE_QUEUE);
        tokio::spawn(maintain(inner.clone(), cancel.clone()));
        tokio::spawn(publish_volatile(inner.clone(), rx, cancel.clone()));
        info!(
            node = inner.node,
            redis = shown,
            "cluster mode: connected to redis"
        );
        Ok(Redis {
            inner,
            volatile,
            cancel,
        })
    }

    /// This node's id in the cluster.
    pub fn node_id(&self) -> &str {
        &self.inner.node
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

async fn connection_manager(
    client: redis::Client,
    shown: &str,
) -> Result<ConnectionManager, BrokerError> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(Some(COMMAND_TIMEOUT))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(500));
    match tokio::time::timeout(
        STARTUP_TIMEOUT,
        ConnectionManager::new_with_config(client, config),
    )
    .await
    {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(BrokerError::Unavailable(format!(
            "cannot reach redis at {shown}: {e}"
        ))),
        Err(_) => Err(BrokerError::Unavailable(format!(
            "cannot reach redis at {shown}: no answer within {STARTUP_TIMEOUT:?}"
        ))),
    }
}

impl Inner {
    fn ttl_ms(&self) -> u64 {
        self.room_ttl.as_millis() as u64
    }

    /// `1` when Redis knows the members of `ns`'s rooms (so an empty one can give
    /// way to a new one), else `0`.
    fn presence_flag(&self, ns: &str) -> &'static str {
        if self.room_presence.contains(ns) {
            "1"
        } else {
            "0"
        }
    }

    /// Runs one Redis call with a deadline, turning failures into `Unavailable`
    /// and keeping the health state.
    async fn call<T>(
        &self,
        what: &str,
        fut: impl Future<Output = RedisResult<T>>,
    ) -> Result<T, BrokerError> {
        match tokio::time::timeout(COMMAND_TIMEOUT, fut).await {
            Ok(Ok(v)) => {
                self.health.commands_ok();
                Ok(v)
            }
            Ok(Err(e)) if e.code() == Some("TOOMANYROOMS") => {
                // The namespace is full: an answer, not a failure of Redis.
                self.health.commands_ok();
                Err(BrokerError::TooManyRooms(
                    e.detail().unwrap_or("too many rooms").to_owned(),
                ))
            }
            Ok(Err(e)) => {
                if e.is_io_error()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                    || e.is_timeout()
                    || e.is_unrecoverable_error()
                {
                    self.health.commands_failed(&e.to_string());
                } else {
                    warn!("redis {what} failed: {e}");
                }
                Err(BrokerError::Unavailable(format!("redis {what}: {e}")))
            }
            Err(_) => {
                let why = format!("no answer within {COMMAND_TIMEOUT:?}");
                self.health.commands_failed(&why);
                Err(BrokerError::Unavailable(format!("redis {what}: {why}")))
            }
        }
    }

    /// Publishes to every node; returns how many subscribers (nodes, this one
    /// included) received it.
    async fn publish_node_event(
        &self,
        what: &str,
        event: &wire::NodeEvent,
    ) -> Result<usize, BrokerError> {
        let payload = wire::node_payload(event);
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(wire::ALL_CHANNEL).arg(payload);
        self.call(what, cmd.query_async(&mut conn)).await
    }

    /// Refuses this node's id while another live process heartbeats with it. A
    /// deadline still ahead may be a process that just died (a restart after
    /// `kill -9`): wait it out, and call the id taken only if it moves meanwhile.
    async fn claim_node_id(&self) -> Result<(), BrokerError> {
        let mut first: Option<u64> = None;
        loop {
            let mut conn = self.conn.clone();
            let mut pipe = redis::pipe();
            pipe.cmd("ZSCORE")
                .arg(format!("{PREFIX}nodes"))
                .arg(&self.node)
                .cmd("TIME");
            let (deadline, (secs, micros)): (Option<f64>, (u64, u64)) = self
                .call("node id check", pipe.query_async(&mut conn))
                .await?;
            let now = secs * 1000 + micros / 1000;
            let Some(deadline) = deadline.map(|d| d as u64).filter(|&d| d > now) else {
                return Ok(());
            };
            match first {
                None => {
                    info!(
                        node = self.node,
                        "a node with this id heartbeated {} ms ago; waiting to see whether it is still running",
                        (NODE_TTL.as_millis() as u64).saturating_sub(deadline - now)
                    );
                    first = Some(deadline);
                }
                Some(seen) if seen != deadline => {
                    return Err(BrokerError::NodeIdInUse(self.node.clone()));
                }
                Some(_) => {}
            }
            tokio::time::sleep(Duration::from_millis((deadline - now).clamp(1, 250))).await;
        }
    }

    async fn user_list(&self, what: &str, key: String) -> Result<Vec<String>, BrokerError> {
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("HKEYS");
        cmd.arg(key);
        let mut users: Vec<String> = self.call(what, cmd.query_async(&mut conn)).await?;
        users.sort_unstable();
        Ok(users)
    }

    /// A page of the users of a presence hash, from its sorted index: those after
    /// `after`, at most `limit`, without reading the rest.
    async fn user_page(
        &self,
        what: &str,
        hash_key: String,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, BrokerError> {
        let mut cmd = redis::cmd("ZRANGEBYLEX");
        cmd.arg(wire::index_key(&hash_key))
            .arg(after.map_or_else(|| "-".to_owned(), |a| format!("({a}")))
            .arg("+")
            .arg("LIMIT")
            .arg(0)
            .arg(limit);
        let mut conn = self.conn.clone();
        self.call(what, cmd.query_async(&mut conn)).await
    }

    /// Records (or removes) one presence tuple of this node in Redis; returns the
    /// script's transition code (0 none, 1 the user's, 3 the user's and the place's).
    async fn set_presence(&self, tuple: String, joined: bool) -> Result<u8, BrokerError> {
        let mut tuples = self.presence.tuples.lock().await;
        if joined {
            tuples.insert(tuple.clone());
        } else {
            tuples.remove(&tuple);
        }
        if !self.health.commands.load(Ordering::Acquire) {
            // Known down: don't wait for a timeout; the resync writes it later.
            self.presence.dirty.store(true, Ordering::Release);
            return Err(BrokerError::Unavailable(
                "redis unavailable; presence is written when it returns".into(),
            ));
        }
        let mut invocation = self.scripts.presence.prepare_invoke();
        invocation
            .arg(PREFIX)
            .arg(&self.node)
            .arg(if joined { "1" } else { "0" })
            .arg(tuple);
        let mut conn = self.conn.clone();
        let result = self
            .call("presence", invocation.invoke_async::<u8>(&mut conn))
            .await;
        if result.is_err() {
            self.presence.dirty.store(true, Ordering::Release);
        }
        result
    }

    /// Makes Redis hold exactly this node's presence tuples.
    async fn resync(&self) -> Result<(), BrokerError> {
        let tuples = self.presence.tuples.lock().await;
        self.presence.dirty.store(false, Ordering::Release);
        let mut invocation = self.scripts.resync.prepare_invoke();
        invocation.arg(PREFIX).arg(&self.node);
        for t in tuples.iter() {
            invocation.arg(t);
        }
        let mut conn = self.conn.clone();
        let result = self
            .call("presence resync", invocation.invoke_async::<()>(&mut conn))
            .await;
        match &result {
            Ok(()) => debug!(tuples = tuples.len(), "presence written to redis"),
            Err(_) => self.presence.dirty.store(true, Ordering::Release),
        }
        result
    }

    /// Renews this node's deadline and reaps dead nodes; resyncs presence when this
    /// node had been dropped (declared dead, or Redis lost its data).
    async fn heartbeat(&self) -> Result<(), BrokerError> {
        let mut invocation = self.scripts.heartbeat.prepare_invoke();
        invocation
            .arg(PREFIX)
            .arg(&self.node)
            .arg(NODE_TTL.as_millis() as u64);
        let mut conn = self.conn.clone();
        let (added, reaped): (u8, Vec<String>) = self
            .call("heartbeat", invocation.invoke_async(&mut conn))
            .await?;
        for node in reaped {
            warn!(node, "node stopped heartbeating; removed its presence");
        }
        if added == 1 || self.presence.dirty.load(Ordering::Acquire) {
            if added == 1 {
                debug!("node was not registered in redis; writing presence");
            }
            self.resync().await?;
        }
        Ok(())
    }

    /// Keeps the seq and history of rooms with local members from expiring.
    async fn refresh_rooms(&self) -> Result<(), BrokerError> {
        let rooms = self.subs.room_list();
        if rooms.is_empty() {
            return Ok(());
        }
        let ttl = self.ttl_ms();
        let mut pipe = redis::pipe();
        for (ns, room) in &rooms {
            pipe.cmd("PEXPIRE")
                .arg(wire::room_key(ns, room))
                .arg(ttl)
                .ignore();
            pipe.cmd("PEXPIRE")
                .arg(wire::hist_key(ns, room))
                .arg(ttl)
                .ignore();
        }
        let mut conn = self.conn.clone();
        self.call("refresh", pipe.query_async::<()>(&mut conn))
            .await
    }

    /// See the `RESUME` script.
    async fn resume(
        &self,
        ns: &str,
        room: &str,
        epoch: u64,
        seq: u64,
    ) -> Result<(u8, Vec<Vec<u8>>), BrokerError> {
        let mut invocation = self.scripts.resume.prepare_invoke();
        invocation
            .key(wire::room_key(ns, room))
            .key(wire::hist_key(ns, room))
            .arg(PREFIX)
            .arg(self.ttl_ms())
            .arg(epoch)
            .arg(seq);
        let mut conn = self.conn.clone();
        self.call("resume", invocation.invoke_async(&mut conn))
            .await
    }
}

/// The heartbeat loop: heartbeat + reaping, unsubscribing empty rooms, refreshing
/// the expiry of rooms with members.
async fn maintain(inner: Arc<Inner>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(HEARTBEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let refresh_every = (inner.room_ttl / 3).clamp(HEARTBEAT, Duration::from_secs(60));
    let mut refreshed = Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = cancel.cancelled() => return,
        }
        if let Err(e) = inner.heartbeat().await {
            debug!("heartbeat failed: {e}");
        }
        let dropped = inner.subs.sweep(&inner.hub).await;
        if dropped > 0 {
            debug!(dropped, "unsubscribed rooms without local members");
        }
        if refreshed.elapsed() >= refresh_every && inner.refresh_rooms().await.is_ok() {
            refreshed = Instant::now();
        }
    }
}

/// Publishes queued volatile events in small pipelines; drops them while Redis is down.
async fn publish_volatile(
    inner: Arc<Inner>,
    mut rx: mpsc::Receiver<(String, Vec<u8>)>,
    cancel: CancellationToken,
) {
    let mut batch = Vec::with_capacity(VOLATILE_BATCH);
    loop {
        tokio::select! {
            n = rx.recv_many(&mut batch, VOLATILE_BATCH) => if n == 0 { return },
            _ = cancel.cancelled() => return,
        }
        if !inner.health.commands.load(Ordering::Acquire) {
            batch.clear();
            continue;
        }
        let mut pipe = redis::pipe();
        for (channel, payload) in batch.drain(..) {
            pipe.cmd("PUBLISH").arg(channel).arg(payload).ignore();
        }
        let mut conn = inner.conn.clone();
        if let Err(e) = inner
            .call("volatile publish", pipe.query_async::<()>(&mut conn))
            .await
        {
            debug!("volatile events dropped: {e}");
        }
    }
}

#[async_trait]
impl Broker for Redis {
    async fn publish(
        &self,
        ns: &str,
        room: &str,
        from: &str,
        body: Bytes,
    ) -> Result<u64, BrokerError> {
        let inner = &self.inner;
        if !inner.subs.is_live() {
            // This node's members would miss it live, and a room Redis lost may not
            // be restored yet: refuse rather than start a new epoch.
            return Err(BrokerError::Unavailable(
                "redis pub/sub connection is down; retry when it is back".into(),
            ));
        }
        let record = Record {
            from: from.to_owned(),
            body,
            ts: now_millis(),
        };
        let cap = inner.history_sizes.get(ns).copied().unwrap_or(0);
        let mut invocation = inner.scripts.publish.prepare_invoke();
        invocation
            .key(wire::room_key(ns, room))
            .key(wire::hist_key(ns, room))
            .key(wire::room_channel(ns, room))
            .arg(PREFIX)
            .arg(record.encode())
            .arg(cap)
            .arg(inner.ttl_ms())
            .arg(inner.history_bytes)
            .arg(ns)
            .arg(room)
            .arg(inner.max_rooms)
            .arg(inner.presence_flag(ns))
            .arg(inner.history_bytes_total);
        let mut conn = inner.conn.clone();
        inner
            .call("publish", invocation.invoke_async(&mut conn))
            .await
    }

    async fn recover(
        &self,
        ns: &str,
        room: &str,
        since: Option<Since>,
    ) -> Result<Recovery, BrokerError> {
        let inner = &self.inner;
        // Subscribed before reading: every later publish reaches this node.
        inner.subs.ensure(ns, room).await?;
        let mut invocation = inner.scripts.recover.prepare_invoke();
        invocation
            .key(wire::room_key(ns, room))
            .key(wire::hist_key(ns, room))
            .arg(PREFIX)
            .arg(inner.ttl_ms())
            .arg(since.map(|s| s.epoch.to_string()).unwrap_or_default())
            .arg(since.map_or(0, |s| s.seq))
            .arg(ns)
            .arg(room)
            .arg(inner.max_rooms)
            .arg(inner.presence_flag(ns));
        let mut conn = inner.conn.clone();
        let (epoch, last_seq, recovered, entries): (String, u64, u8, Vec<Vec<u8>>) = inner
            .call("recover", invocation.invoke_async(&mut conn))
            .await?;
        let epoch: u64 = epoch.parse().map_err(|_| BrokerError::MalformedData {
            what: "epoch",
            value: epoch.clone(),
        })?;
        inner.subs.observe(ns, room, epoch, last_seq);
        let replay = match since {
            Some(since) if recovered == 1 => replay(since.seq, last_seq, &entries),
            _ => None,
        };
        Ok(Recovery {
            epoch,
            last_seq,
            replay,
        })
    }

    fn volatile(&self, ns: &str, room: &str, except: SessionId, from: &str, body: Bytes) {
        let inner = &self.inner;
        inner
            .hub
            .deliver_volatile(ns, room, Some(except), from, &body);
        let payload = wire::volatile_payload(&wire::Volatile {
            node: inner.node.clone(),
            from: from.to_owned(),
            body,
        });
        if self
            .volatile
            .try_send((wire::room_channel(ns, room), payload))
            .is_err()
        {
            debug!(
                ns,
                room, "volatile queue full; event not sent to other nodes"
            );
        }
    }

    async fn broadcast(&self, ns: &str, from: &str, body: Bytes) -> Result<(), BrokerError> {
        let frame = frame_bytes(&ServerFrame::Broadcast {
            from: from.to_owned(),
            body,
            ts: now_millis(),
        });
        let event = wire::NodeEvent::Broadcast(wire::Broadcast {
            ns: ns.to_owned(),
            frame,
        });
        self.inner
            .publish_node_event("broadcast", &event)
            .await
            .map(drop)
    }

    async fn room_presence(
        &self,
        ns: &str,
        room: &str,
        user: &str,
        joined: bool,
    ) -> Result<Option<PresenceChange>, BrokerError> {
        let change = self
            .inner
            .set_presence(wire::room_tuple(ns, room, user), joined)
            .await?;
        Ok(Some(PresenceChange {
            user: change & 1 != 0,
            room: change & 2 != 0,
        }))
    }

    async fn room_members(&self, ns: &str, room: &str) -> Result<Vec<String>, BrokerError> {
        self.inner
            .user_list("room members", wire::members_key(ns, room))
            .await
    }

    async fn online_presence(&self, ns: &str, user: &str, joined: bool) -> Result<(), BrokerError> {
        self.inner
            .set_presence(wire::online_tuple(ns, user), joined)
            .await
            .map(drop)
    }

    async fn online_users(&self, ns: &str) -> Result<Vec<String>, BrokerError> {
        self.inner
            .user_list("online users", wire::online_key(ns))
            .await
    }

    async fn user_page(
        &self,
        ns: &str,
        room: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, BrokerError> {
        let (what, key) = match room {
            None => ("online users", wire::online_key(ns)),
            Some(room) => ("room members", wire::members_key(ns, room)),
        };
        self.inner.user_page(what, key, after, limit).await
    }

    async fn notify_user(&self, user: &str, id: u64, frame: Bytes) -> Result<(), BrokerError> {
        let event = wire::NodeEvent::Notify(wire::Notify {
            user: user.to_owned(),
            id,
            frame,
        });
        self.inner
            .publish_node_event("notify", &event)
            .await
            .map(drop)
    }

    async fn disconnect_user(&self, user: &str, code: ErrorCode) -> Result<usize, BrokerError> {
        let closed = self.inner.hub.close_user(user, code);
        let answers = self.inner.disconnects.register();
        let event = wire::NodeEvent::Disconnect(wire::Disconnect {
            node: self.inner.node.clone(),
            user: user.to_owned(),
            code: code.to_code(),
            request: answers.request(),
        });
        let receivers = self.inner.publish_node_event("disconnect", &event).await?;
        // Every node's subscriber got it, this node's included.
        let elsewhere = answers
            .sum(receivers.saturating_sub(1), disconnects::ANSWER_TIMEOUT)
            .await;
        Ok(closed + elsewhere as usize)
    }

    fn health(&self) -> BrokerHealth {
        self.inner.health.state()
    }
}

/// The frames after `since` from history entries, if they are exactly
/// `since + 1 ..= last`.
fn replay(since: u64, last: u64, entries: &[Vec<u8>]) -> Option<Vec<(u64, Bytes)>> {
    let frames: Vec<(u64, Bytes)> = entries
        .iter()
        .map(|e| wire::history_frame(e))
        .collect::<Option<_>>()?;
    let expected = since + 1..=last;
    let exact = frames.len() as u64 == last.saturating_sub(since)
        && frames.iter().map(|(s, _)| *s).eq(expected);
    exact.then_some(frames)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_redacted() {
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert_eq!(
            redact("redis://user:pw@host:6379/0"),
            "redis://***@host:6379/0"
        );
    }

    #[test]
    fn node_ids() {
        assert!(valid_node_id("node-1.a_b"));
        assert!(!valid_node_id(""));
        assert!(!valid_node_id("a b"));
        assert!(!valid_node_id("a:b"));
        assert!(!valid_node_id(&"x".repeat(65)));
    }

    #[test]
    fn replay_needs_every_message() {
        let entry = |seq: u64| {
            let mut e = format!("{seq}:").into_bytes();
            e.extend(
                Record {
                    from: "a".into(),
                    body: Bytes::new(),
                    ts: 0,
                }
                .encode(),
            );
            e
        };
        let seqs = |r: Option<Vec<(u64, Bytes)>>| {
            r.map(|v| v.into_iter().map(|(s, _)| s).collect::<Vec<_>>())
        };
        assert_eq!(seqs(replay(2, 4, &[entry(3), entry(4)])), Some(vec![3, 4]));
        assert_eq!(seqs(replay(4, 4, &[])), Some(vec![]));
        assert_eq!(seqs(replay(1, 4, &[entry(3), entry(4)])), None);
        assert_eq!(seqs(replay(2, 4, &[entry(4), entry(3)])), None);
    }
}
