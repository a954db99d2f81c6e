//! The node's pub/sub side: one dedicated Redis connection, subscribed to the channel
//! of all nodes and to the channel of every room that has members on this node.
//!
//! Per-room channels rather than one pattern per namespace: a node receives only the
//! traffic of rooms it has members in, so adding nodes adds capacity instead of
//! multiplying every message by the node count. The cost is one `SUBSCRIBE` when a
//! room gets its first local member (awaited before `recover` reads the room, so a
//! join never misses a message) and an `UNSUBSCRIBE` once it has none (the periodic
//! [`Subscriptions::sweep`]).
//!
//! One task reads the connection and delivers everything into the hub, so each room's
//! messages reach local sessions in the order Redis published them, which is seq
//! order. When the connection drops, the task reconnects with backoff, subscribes
//! every room again, and fetches from history what this node missed meanwhile.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::StreamExt;
use redis::aio::PubSubSink;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::disconnects;
use super::wire::{self, NodeEvent, RoomEvent};
use super::Inner;
use crate::broker::BrokerError;
use crate::hub::Hub;
use crate::protocol::ErrorCode;

/// How long a `SUBSCRIBE` may take before the join fails.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long connecting the pub/sub connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the pub/sub connection is pinged (a dead peer is noticed within this
/// plus [`SUBSCRIBE_TIMEOUT`]).
const PING_EVERY: Duration = Duration::from_secs(1);
/// Reconnect backoff bounds.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// Catch-up attempts after a reconnect before the connection is dropped and retried.
const CATCH_UP_RETRIES: u32 = 5;

/// A room's delivery state on this node.
#[derive(Debug, Default)]
struct RoomState {
    /// `SUBSCRIBE` confirmed on the current connection.
    confirmed: bool,
    /// (epoch, seq) of the last message delivered here.
    delivered: Option<(u64, u64)>,
    /// The lowest (epoch, seq) a local join saw before anything was delivered: what
    /// local members hold at least, the starting point of a catch-up.
    observed: Option<(u64, u64)>,
}

/// Rooms this node is subscribed to, and the subscribing half of the connection.
#[derive(Debug, Default)]
pub(super) struct Subscriptions {
    /// Held across `SUBSCRIBE`/`UNSUBSCRIBE` so Redis sees them in the order the
    /// registry changed (a tokio mutex: held across the await on purpose).
    sink: tokio::sync::Mutex<Option<PubSubSink>>,
    live: AtomicBool,
    // std mutex: short critical sections, never held across an await. Lock order:
    // this one, then the hub's.
    rooms: Mutex<HashMap<String, HashMap<String, RoomState>>>,
}

fn down(what: &str) -> BrokerError {
    BrokerError::Unavailable(format!(
        "redis pub/sub connection is down ({what}); retry when it is back"
    ))
}

impl Subscriptions {
    fn rooms(&self) -> MutexGuard<'_, HashMap<String, HashMap<String, RoomState>>> {
        self.rooms.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the pub/sub connection is up, subscribed and caught up.
    pub(super) fn is_live(&self) -> bool {
        self.live.load(Ordering::Acquire)
    }

    /// Rooms subscribed (or to subscribe on the next connection).
    pub(super) fn room_list(&self) -> Vec<(String, String)> {
        self.rooms()
            .iter()
            .flat_map(|(ns, rooms)| rooms.keys().map(move |r| (ns.clone(), r.clone())))
            .collect()
    }

    /// Makes sure the room's channel is subscribed on the current connection. The
    /// caller has already put its session in the hub, so the sweep keeps the room.
    pub(super) async fn ensure(&self, ns: &str, room: &str) -> Result<(), BrokerError> {
        let confirmed = |rooms: &HashMap<String, HashMap<String, RoomState>>| {
            rooms
                .get(ns)
                .and_then(|r| r.get(room))
                .is_some_and(|s| s.confirmed)
        };
        if self.is_live() && confirmed(&self.rooms()) {
            return Ok(());
        }
        let sink = self.sink.lock().await;
        let Some(sink) = sink.as_ref() else {
            return Err(down("reconnecting"));
        };
        {
            let mut rooms = self.rooms();
            if confirmed(&rooms) {
                return Ok(());
            }
            // Registered before subscribing: a reconnect meanwhile subscribes it too.
            rooms
                .entry(ns.to_owned())
                .or_default()
                .entry(room.to_owned())
                .or_default();
        }
        let channel = wire::room_channel(ns, room);
        match tokio::time::timeout(SUBSCRIBE_TIMEOUT, sink.clone().subscribe(channel)).await {
            Ok(Ok(())) => {
                if let Some(s) = self.rooms().get_mut(ns).and_then(|r| r.get_mut(room)) {
                    s.confirmed = true;
                }
                Ok(())
            }
            Ok(Err(e)) => Err(down(&e.to_string())),
            Err(_) => Err(down("SUBSCRIBE timed out")),
        }
    }

    /// Notes the room's (epoch, seq) as a join read it.
    pub(super) fn observe(&self, ns: &str, room: &str, epoch: u64, seq: u64) {
        let mut rooms = self.rooms();
        let Some(s) = rooms.get_mut(ns).and_then(|r| r.get_mut(room)) else {
            return;
        };
        s.observed = match s.observed {
            Some((e, old)) if e == epoch => Some((e, old.min(seq))),
            Some((e, old)) if e > epoch => Some((e, old)),
            _ => Some((epoch, seq)),
        };
    }

    /// Whether a message should be delivered (not a copy of one delivered already);
    /// records it as delivered.
    fn advance(&self, ns: &str, room: &str, epoch: u64, seq: u64) -> bool {
        let mut rooms = self.rooms();
        let Some(s) = rooms.get_mut(ns).and_then(|r| r.get_mut(room)) else {
            return true; // unsubscribed meanwhile: nobody here to deliver to anyway
        };
        match s.delivered {
            Some((e, last)) if e == epoch && seq <= last => return false,
            Some((e, _)) if e > epoch => return true, // an older life: leave the state
            Some((e, last)) if e == epoch && seq > last + 1 => {
                debug!(ns, room, last, seq, "seq gap on the room channel");
            }
            Some((e, _)) if e != epoch => {
                warn!(
                    ns,
                    room,
                    old = e,
                    new = epoch,
                    "room started a new epoch while it had members here; they rejoin to resync"
                );
            }
            _ => {}
        }
        s.delivered = Some((epoch, seq));
        true
    }

    /// Where a catch-up after a reconnect starts: (epoch, seq) every local member has.
    fn resume_point(&self, ns: &str, room: &str) -> Option<(u64, u64)> {
        let rooms = self.rooms();
        let s = rooms.get(ns)?.get(room)?;
        s.delivered.or(s.observed)
    }

    /// Forgets a room's delivery state (it started a new epoch).
    fn reset(&self, ns: &str, room: &str) {
        if let Some(s) = self.rooms().get_mut(ns).and_then(|r| r.get_mut(room)) {
            s.delivered = None;
            s.observed = None;
        }
    }

    /// Unsubscribes rooms that have no member on this node any more. Returns how many.
    pub(super) async fn sweep(&self, hub: &Hub) -> usize {
        let sink = self.sink.lock().await;
        let mut gone = Vec::new();
        {
            let mut rooms = self.rooms();
            for (ns, list) in rooms.iter_mut() {
                list.retain(|room, _| {
                    let keep = hub.room_handle(ns, room).is_some();
                    if !keep {
                        gone.push(wire::room_channel(ns, room));
                    }
                    keep
                });
            }
            rooms.retain(|_, list| !list.is_empty());
        }
        if let (Some(sink), false) = (sink.as_ref(), gone.is_empty()) {
            // On failure the connection is being lost; the reconnect won't add them.
            let mut sink = sink.clone();
            let unsubscribe = sink.unsubscribe(gone.clone());
            if let Ok(Err(e)) = tokio::time::timeout(SUBSCRIBE_TIMEOUT, unsubscribe).await {
                debug!("UNSUBSCRIBE failed: {e}");
            }
        }
        gone.len()
    }

    /// Takes a fresh connection into use: subscribes the channel of all nodes and
    /// every registered room. Returns how many rooms.
    async fn attach(&self, sink: PubSubSink) -> Result<usize, String> {
        let mut slot = self.sink.lock().await;
        let rooms = self.room_list();
        let channels: Vec<String> = std::iter::once(wire::ALL_CHANNEL.to_owned())
            .chain(rooms.iter().map(|(ns, room)| wire::room_channel(ns, room)))
            .collect();
        for chunk in channels.chunks(512) {
            match tokio::time::timeout(SUBSCRIBE_TIMEOUT, sink.clone().subscribe(chunk)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e.to_string()),
                Err(_) => return Err("SUBSCRIBE timed out".into()),
            }
        }
        // Nothing registered meanwhile: `ensure` needs the slot we hold.
        for list in self.rooms().values_mut() {
            for s in list.values_mut() {
                s.confirmed = true;
            }
        }
        *slot = Some(sink);
        Ok(rooms.len())
    }

    /// Caught up after attaching: publishes may go ahead.
    fn go_live(&self) {
        self.live.store(true, Ordering::Release);
    }

    /// The connection is gone: joins fail until the next one is attached.
    async fn detach(&self) {
        self.live.store(false, Ordering::Release);
        let mut slot = self.sink.lock().await;
        *slot = None;
        for list in self.rooms().values_mut() {
            for s in list.values_mut() {
                s.confirmed = false;
            }
        }
    }
}

/// Runs the pub/sub connection until `cancel`: connect, subscribe, catch up, deliver;
/// on loss, reconnect with backoff.
pub(super) async fn run(inner: Arc<Inner>, client: redis::Client, cancel: CancellationToken) {
    let mut backoff = MIN_BACKOFF;
    loop {
        let connected = tokio::select! {
            r = tokio::time::timeout(CONNECT_TIMEOUT, client.get_async_pubsub()) => r,
            _ = cancel.cancelled() => return,
        };
        let failure = match connected {
            Ok(Ok(pubsub)) => {
                let (sink, mut stream) = pubsub.split();
                match inner.subs.attach(sink.clone()).await {
                    Ok(rooms) => 'attached: {
                        // Before anything is published through this node again, so
                        // rooms Redis lost continue their epoch rather than start anew.
                        if let Err(e) = inner.catch_up_with_retries().await {
                            inner.subs.detach().await;
                            break 'attached format!("catching up failed: {e}");
                        }
                        backoff = MIN_BACKOFF;
                        inner.subs.go_live();
                        inner.health.subscriber_up(rooms);
                        let mut ping = tokio::time::interval(PING_EVERY);
                        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                        ping.tick().await;
                        let why = loop {
                            tokio::select! {
                                msg = stream.next() => match msg {
                                    Some(msg) => inner.on_message(&msg),
                                    None => break "connection closed".to_owned(),
                                },
                                _ = ping.tick() => {
                                    let pinged = tokio::time::timeout(
                                        SUBSCRIBE_TIMEOUT,
                                        sink.clone().ping::<redis::Value>(),
                                    ).await;
                                    match pinged {
                                        Ok(Ok(_)) => {}
                                        Ok(Err(e)) => break e.to_string(),
                                        Err(_) => break "PING timed out".to_owned(),
                                    }
                                }
                                _ = cancel.cancelled() => return,
                            }
                        };
                        inner.subs.detach().await;
                        why
                    }
                    Err(e) => {
                        inner.subs.detach().await;
                        e
                    }
                }
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => "connect timed out".to_owned(),
        };
        inner.health.subscriber_down(&failure);
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = cancel.cancelled() => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

impl Inner {
    /// Delivers one pub/sub message to this node's sessions.
    fn on_message(&self, msg: &redis::Msg) {
        let channel = msg.get_channel_name();
        let payload = msg.get_payload_bytes();
        if channel == wire::ALL_CHANNEL {
            match wire::decode_node(payload) {
                Some(event) => self.on_node_event(event),
                None => warn!(channel, "undecodable message on the redis channel; dropped"),
            }
            return;
        }
        let Some((ns, room)) = wire::parse_room_channel(channel) else {
            debug!(channel, "message on an unknown channel");
            return;
        };
        match wire::decode_room(payload) {
            Some(RoomEvent::Message { epoch, seq, frame }) => {
                if self.subs.advance(ns, room, epoch, seq) {
                    self.hub
                        .deliver_message(ns, room, seq, &frame, Instant::now());
                }
            }
            Some(RoomEvent::Presence { user, joined }) => {
                self.hub
                    .deliver_presence(ns, room, &user, joined, std::time::Instant::now());
            }
            Some(RoomEvent::Volatile(v)) => {
                // The sending node delivered to its own sessions already.
                if v.node != self.node {
                    self.hub.deliver_volatile(ns, room, None, &v.from, &v.body);
                }
            }
            None => warn!(channel, "undecodable message on the redis channel; dropped"),
        }
    }

    fn on_node_event(&self, event: NodeEvent) {
        match event {
            NodeEvent::Online { ns, user, joined } => {
                self.hub.deliver_online(&ns, &user, joined);
            }
            NodeEvent::Broadcast(b) => {
                self.hub.deliver_broadcast(&b.ns, &b.frame);
            }
            NodeEvent::Notify(n) => {
                let namespaces = self.inbox_namespaces.iter().map(String::as_str);
                self.hub
                    .deliver_notification(namespaces, &n.user, n.id, &n.frame);
            }
            NodeEvent::Disconnect(d) => {
                if d.node != self.node {
                    let closed = self.hub.close_user(&d.user, ErrorCode::from(d.code));
                    debug!(user = d.user, closed, "disconnect from node {}", d.node);
                    let answer = wire::Disconnected {
                        to: d.node,
                        request: d.request,
                        closed: closed as u64,
                    };
                    tokio::spawn(disconnects::send_answer(self.conn.clone(), answer));
                }
            }
            NodeEvent::Disconnected(d) => {
                if d.to == self.node {
                    self.disconnects.answer(d.request, d.closed);
                }
            }
        }
    }

    /// [`Inner::catch_up`], retried briefly: right after Redis returns, the command
    /// connection may still hold the broken socket.
    async fn catch_up_with_retries(&self) -> Result<(), BrokerError> {
        let mut attempt = 0;
        loop {
            match self.catch_up().await {
                Ok(()) => return Ok(()),
                Err(e) if attempt < CATCH_UP_RETRIES => {
                    debug!("catching up after reconnect: {e}; retrying");
                    attempt += 1;
                    tokio::time::sleep(MIN_BACKOFF * 2).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// After a (re)connect: delivers what local members missed while the connection
    /// was down, and restores rooms whose keys Redis lost (restarted without its data)
    /// with the epoch and seq members here know, so their seq keeps counting.
    async fn catch_up(&self) -> Result<(), BrokerError> {
        for (ns, room) in self.subs.room_list() {
            let Some((epoch, seq)) = self.subs.resume_point(&ns, &room) else {
                continue;
            };
            let (status, entries) = self.resume(&ns, &room, epoch, seq).await?;
            match status {
                1 => info!(
                    ns,
                    room, epoch, seq, "room was missing in redis; restored its epoch and seq"
                ),
                2 => {
                    warn!(ns, room, "room is in another epoch after the reconnect; members here rejoin to resync");
                    self.subs.reset(&ns, &room);
                    continue;
                }
                3 => warn!(
                    ns,
                    room, "history no longer holds everything missed during the reconnect"
                ),
                _ => {}
            }
            let mut delivered = 0;
            for entry in entries {
                let Some((seq, frame)) = wire::history_frame(&entry) else {
                    continue;
                };
                if self.subs.advance(&ns, &room, epoch, seq) {
                    self.hub
                        .deliver_message(&ns, &room, seq, &frame, Instant::now());
                    delivered += 1;
                }
            }
            if delivered > 0 {
                info!(
                    ns,
                    room, delivered, "delivered messages missed during the reconnect"
                );
            }
        }
        Ok(())
    }
}
