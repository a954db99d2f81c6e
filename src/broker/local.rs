//! The single-process broker: sequence numbers and history in memory, delivery
//! straight into this node's hub.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::{now_millis, Broker, BrokerError, PresenceChange};
use crate::config::Config;
use crate::hub::{History, Hub, Recovery, SessionId};
use crate::protocol::{frame_bytes, ErrorCode, ServerFrame, Since};

/// In-process broker for one node.
#[derive(Debug)]
pub struct Local {
    hub: Arc<Hub>,
    history_sizes: HashMap<String, usize>,
    inbox_namespaces: Vec<String>,
    /// Rooms one namespace may hold (with or without history).
    max_rooms: usize,
    /// History bytes one room may hold.
    history_bytes: usize,
    /// History bytes all rooms together may hold; past it the least recently
    /// published rooms lose their history first.
    history_bytes_total: usize,
    // std mutex: publish holds it while queueing into the hub (synchronous), which
    // is what keeps delivery order equal to seq order.
    logs: Mutex<Logs>,
}

/// Every room's log, with the counts the limits need.
#[derive(Debug, Default)]
struct Logs {
    rooms: HashMap<(String, String), Log>,
    per_ns: HashMap<String, usize>,
    bytes: usize,
}

impl Logs {
    fn insert(&mut self, ns: String, room: String, log: Log) {
        self.bytes += log.history.bytes();
        *self.per_ns.entry(ns.clone()).or_default() += 1;
        if let Some(old) = self.rooms.insert((ns, room), log) {
            self.bytes -= old.history.bytes();
        }
    }

    fn remove(&mut self, key: &(String, String)) {
        if let Some(log) = self.rooms.remove(key) {
            self.bytes -= log.history.bytes();
            if let Some(n) = self.per_ns.get_mut(&key.0) {
                *n -= 1;
            }
        }
    }
}

/// (namespace, room) → postcard-encoded [`SavedRoom`].
const ROOMS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("rooms");

#[derive(serde::Serialize, serde::Deserialize)]
struct SavedRoom {
    epoch: u64,
    last_seq: u64,
    frames: Vec<(u64, Vec<u8>)>,
}

/// Turns a failure to write or read the snapshot at `path` into its error.
fn snapshot_err<E>(path: &Path) -> impl FnOnce(E) -> BrokerError + '_
where
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    move |e| BrokerError::Snapshot {
        path: path.to_owned(),
        source: e.into(),
    }
}

#[derive(Debug)]
struct Log {
    history: History,
    touched: Instant,
}

impl Local {
    /// A broker over `hub` for the namespaces of `config`.
    pub fn new(hub: Arc<Hub>, config: &Config) -> Self {
        let limits = &config.limits;
        Local {
            hub,
            history_sizes: config.history_sizes(),
            inbox_namespaces: config.inbox_namespaces(),
            max_rooms: limits.max_rooms_per_namespace,
            history_bytes: limits.history_bytes,
            history_bytes_total: limits.history_bytes_total,
            logs: Mutex::new(Logs::default()),
        }
    }

    /// Forgets rooms nobody on this node is in and nobody published to for `ttl`, so
    /// memory follows the live rooms. Returns how many were dropped.
    pub fn sweep(&self, now: Instant, ttl: Duration) -> usize {
        let mut logs = self.logs.lock().unwrap_or_else(|p| p.into_inner());
        let stale: Vec<(String, String)> = logs
            .rooms
            .iter()
            .filter(|((ns, room), log)| {
                now.saturating_duration_since(log.touched) >= ttl
                    && self.hub.room_handle(ns, room).is_none()
            })
            .map(|(key, _)| key.clone())
            .collect();
        for key in &stale {
            logs.remove(key);
        }
        stale.len()
    }

    /// The room's log, made when missing — unless the namespace is full and none of
    /// its rooms is empty enough to give way.
    fn log<'a>(
        &self,
        logs: &'a mut Logs,
        ns: &str,
        room: &str,
    ) -> Result<&'a mut Log, BrokerError> {
        let key = (ns.to_owned(), room.to_owned());
        if !logs.rooms.contains_key(&key) {
            let held = logs.per_ns.get(ns).copied().unwrap_or(0);
            if held >= self.max_rooms && !self.evict_an_empty_room(logs, ns) {
                return Err(BrokerError::TooManyRooms(format!(
                    "{ns} holds the {} rooms the server allows, all with members",
                    self.max_rooms
                )));
            }
            let cap = self.history_sizes.get(ns).copied().unwrap_or(0);
            let log = Log {
                // Milliseconds tell a room's lives apart, also across restarts.
                history: History::new(now_millis(), cap).with_max_bytes(self.history_bytes),
                touched: Instant::now(),
            };
            logs.insert(key.0.clone(), key.1.clone(), log);
        }
        Ok(logs.rooms.get_mut(&key).expect("just made"))
    }

    /// Forgets the longest-untouched room of `ns` that has no members here, to make
    /// room for a new one (its history is what `room_ttl` would drop later anyway).
    fn evict_an_empty_room(&self, logs: &mut Logs, ns: &str) -> bool {
        let oldest = logs
            .rooms
            .iter()
            .filter(|((n, room), _)| n == ns && self.hub.room_handle(n, room).is_none())
            .min_by_key(|(_, log)| log.touched)
            .map(|(key, _)| key.clone());
        match oldest {
            Some(key) => {
                logs.remove(&key);
                true
            }
            None => false,
        }
    }

    /// Past the server's history budget, drops the history of the least recently
    /// published rooms until a tenth of the budget is free again (rejoining members
    /// are told `recovered: false`).
    fn shed_history(&self, logs: &mut Logs) {
        let target = self.history_bytes_total / 10 * 9;
        let mut by_age: Vec<(Instant, (String, String))> = logs
            .rooms
            .iter()
            .filter(|(_, log)| log.history.bytes() > 0)
            .map(|(key, log)| (log.touched, key.clone()))
            .collect();
        by_age.sort_unstable_by_key(|(touched, _)| *touched);
        let mut shed = 0;
        for (_, key) in by_age {
            if logs.bytes <= target {
                break;
            }
            if let Some(log) = logs.rooms.get_mut(&key) {
                let freed = log.history.bytes();
                log.history.clear();
                logs.bytes -= freed;
                shed += 1;
            }
        }
        tracing::debug!(
            rooms = shed,
            bytes = logs.bytes,
            "history over its budget: dropped the oldest rooms' history"
        );
    }

    /// Bytes of history held, all rooms together.
    pub fn history_bytes(&self) -> usize {
        self.logs.lock().map(|l| l.bytes).unwrap_or(0)
    }

    /// Writes every room's history to `path` (a redb file), so a graceful restart
    /// keeps recovery working: clients rejoining with `since` get what they missed.
    pub fn save(&self, path: &Path) -> Result<usize, BrokerError> {
        let logs = self.logs.lock().unwrap_or_else(|p| p.into_inner());
        let db = Database::create(path).map_err(snapshot_err(path))?;
        let tx = db.begin_write().map_err(snapshot_err(path))?;
        {
            let mut table = tx.open_table(ROOMS).map_err(snapshot_err(path))?;
            for ((ns, room), log) in logs.rooms.iter() {
                let saved = SavedRoom {
                    epoch: log.history.epoch(),
                    last_seq: log.history.last_seq(),
                    frames: log
                        .history
                        .frames()
                        .map(|(seq, f)| (*seq, f.to_vec()))
                        .collect(),
                };
                let bytes = postcard::to_stdvec(&saved).map_err(snapshot_err(path))?;
                table
                    .insert((ns.as_str(), room.as_str()), bytes.as_slice())
                    .map_err(snapshot_err(path))?;
            }
        }
        tx.commit().map_err(snapshot_err(path))?;
        Ok(logs.rooms.len())
    }

    /// Loads histories saved by [`Local::save`] and deletes the snapshot, so that
    /// after a later crash no stale history (and no reused seq) comes back.
    pub fn restore(&self, path: &Path) -> Result<usize, BrokerError> {
        if !path.exists() {
            return Ok(0);
        }
        let db = Database::create(path).map_err(snapshot_err(path))?;
        let mut loaded = Vec::new();
        {
            let tx = db.begin_read().map_err(snapshot_err(path))?;
            let table = match tx.open_table(ROOMS) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
                Err(e) => return Err(snapshot_err(path)(e)),
            };
            for entry in table.iter().map_err(snapshot_err(path))? {
                let (key, value) = entry.map_err(snapshot_err(path))?;
                let (ns, room) = key.value();
                let saved: SavedRoom = postcard::from_bytes(value.value()).map_err(|source| {
                    BrokerError::CorruptSnapshot {
                        path: path.to_owned(),
                        ns: ns.to_owned(),
                        room: room.to_owned(),
                        source,
                    }
                })?;
                loaded.push((ns.to_owned(), room.to_owned(), saved));
            }
        }
        drop(db);
        std::fs::remove_file(path).map_err(snapshot_err(path))?;
        let mut logs = self.logs.lock().unwrap_or_else(|p| p.into_inner());
        let n = loaded.len();
        for (ns, room, saved) in loaded {
            let cap = self.history_sizes.get(&ns).copied().unwrap_or(0);
            let frames = saved
                .frames
                .into_iter()
                .map(|(seq, f)| (seq, Bytes::from(f)))
                .collect();
            let history = History::restore(saved.epoch, cap, saved.last_seq, frames)
                .with_max_bytes(self.history_bytes);
            logs.insert(
                ns,
                room,
                Log {
                    history,
                    touched: Instant::now(),
                },
            );
        }
        Ok(n)
    }

    /// Rooms with a history in memory.
    pub fn room_count(&self) -> usize {
        self.logs.lock().map(|l| l.rooms.len()).unwrap_or(0)
    }
}

#[async_trait]
impl Broker for Local {
    async fn publish(
        &self,
        ns: &str,
        room: &str,
        from: &str,
        body: Bytes,
    ) -> Result<u64, BrokerError> {
        let mut logs = self.logs.lock().unwrap_or_else(|p| p.into_inner());
        let log = self.log(&mut logs, ns, room)?;
        let seq = log.history.next_seq();
        let frame = frame_bytes(&ServerFrame::Message {
            seq,
            from: from.to_owned(),
            body,
            ts: now_millis(),
        });
        let before = log.history.bytes();
        log.history.push(frame.clone());
        let after = log.history.bytes();
        log.touched = Instant::now();
        self.hub
            .deliver_message(ns, room, seq, &frame, Instant::now());
        logs.bytes = logs.bytes + after - before;
        if logs.bytes > self.history_bytes_total {
            self.shed_history(&mut logs);
        }
        Ok(seq)
    }

    async fn recover(
        &self,
        ns: &str,
        room: &str,
        since: Option<Since>,
    ) -> Result<Recovery, BrokerError> {
        let mut logs = self.logs.lock().unwrap_or_else(|p| p.into_inner());
        // Joining creates the log, so the epoch a member sees stays valid while
        // anyone is in the room.
        Ok(self.log(&mut logs, ns, room)?.history.recover(since))
    }

    fn volatile(&self, ns: &str, room: &str, except: SessionId, from: &str, body: Bytes) {
        self.hub
            .deliver_volatile(ns, room, Some(except), from, &body);
    }

    async fn broadcast(&self, ns: &str, from: &str, body: Bytes) -> Result<(), BrokerError> {
        let frame = frame_bytes(&ServerFrame::Broadcast {
            from: from.to_owned(),
            body,
            ts: now_millis(),
        });
        self.hub.deliver_broadcast(ns, &frame);
        Ok(())
    }

    async fn room_presence(
        &self,
        ns: &str,
        room: &str,
        user: &str,
        joined: bool,
    ) -> Result<Option<PresenceChange>, BrokerError> {
        self.hub
            .deliver_presence(ns, room, user, joined, std::time::Instant::now());
        Ok(None)
    }

    async fn room_members(&self, ns: &str, room: &str) -> Result<Vec<String>, BrokerError> {
        Ok(self.hub.room_users(ns, room))
    }

    async fn online_presence(&self, ns: &str, user: &str, joined: bool) -> Result<(), BrokerError> {
        self.hub.deliver_online(ns, user, joined);
        Ok(())
    }

    async fn online_users(&self, ns: &str) -> Result<Vec<String>, BrokerError> {
        Ok(self.hub.online_users(ns))
    }

    async fn user_page(
        &self,
        ns: &str,
        room: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, BrokerError> {
        Ok(self.hub.user_page(ns, room, after, limit))
    }

    async fn notify_user(&self, user: &str, id: u64, frame: Bytes) -> Result<(), BrokerError> {
        let namespaces = self.inbox_namespaces.iter().map(String::as_str);
        self.hub.deliver_notification(namespaces, user, id, &frame);
        Ok(())
    }

    async fn disconnect_user(&self, user: &str, code: ErrorCode) -> Result<usize, BrokerError> {
        Ok(self.hub.close_user(user, code))
    }

    fn history_bytes(&self) -> Option<usize> {
        Some(Local::history_bytes(self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::SessionLimits;

    fn broker() -> Local {
        broker_with(Config::default())
    }

    fn broker_with(config: Config) -> Local {
        let hub = Arc::new(Hub::new(
            config.namespaces.keys().map(String::as_str),
            SessionLimits {
                max_sessions: 10,
                max_sessions_per_user: 10,
            },
        ));
        Local::new(hub, &config)
    }

    #[tokio::test]
    async fn a_full_namespace_forgets_an_empty_room_or_refuses() {
        let mut config = Config::default();
        config.limits.max_rooms_per_namespace = 2;
        let b = broker_with(config);
        b.publish("/chat", "a", "ann", Bytes::new()).await.unwrap();
        b.publish("/chat", "b", "ann", Bytes::new()).await.unwrap();
        // Neither has members: the longest-idle one (a) gives way.
        b.publish("/chat", "c", "ann", Bytes::new()).await.unwrap();
        assert_eq!(b.room_count(), 2);
        let a = b.recover("/chat", "a", None).await.unwrap();
        assert_eq!(a.last_seq, 0, "a is a new life");
        // Another namespace counts on its own.
        b.publish("/notifications", "x", "server", Bytes::new())
            .await
            .unwrap();

        // Rooms with members never give way.
        let (tx, _rx) = crate::hub::session_queues(1, "ann", 8, 8);
        b.hub.register("/chat", tx).unwrap();
        for room in ["a", "c"] {
            b.hub.join("/chat", room, 1).unwrap();
        }
        let err = b
            .publish("/chat", "d", "ann", Bytes::new())
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::TooManyRooms, "{err}");
        let err = b.recover("/chat", "d", None).await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::TooManyRooms);
        // Existing rooms carry on.
        assert_eq!(
            b.publish("/chat", "a", "ann", Bytes::new()).await.unwrap(),
            1
        );
    }

    #[tokio::test]
    async fn history_bytes_are_capped_per_room_and_in_total() {
        let mut config = Config::default();
        config.limits.history_bytes = 10_000;
        config.limits.history_bytes_total = 25_000;
        let b = broker_with(config);
        let body = || Bytes::from(vec![0u8; 3_000]);
        for _ in 0..10 {
            b.publish("/chat", "old", "ann", body()).await.unwrap();
        }
        let per_room = b.history_bytes();
        assert!(per_room <= 10_000 && per_room > 6_000, "{per_room}");
        let old_epoch = b.recover("/chat", "old", None).await.unwrap().epoch;
        for room in ["mid", "new"] {
            for _ in 0..10 {
                b.publish("/chat", room, "ann", body()).await.unwrap();
            }
        }
        let total = b.history_bytes();
        assert!(total <= 25_000, "{total}");
        // The least recently published room lost its history: no partial replay.
        let since = Some(Since {
            epoch: old_epoch,
            seq: 8,
        });
        let old = b.recover("/chat", "old", since).await.unwrap();
        assert_eq!((old.last_seq, old.replay), (10, None));
        let new = b.recover("/chat", "new", None).await.unwrap();
        let since = Some(Since {
            epoch: new.epoch,
            seq: 8,
        });
        let replay = b.recover("/chat", "new", since).await.unwrap().replay;
        assert_eq!(replay.map(|r| r.len()), Some(2));
    }

    #[tokio::test]
    async fn history_survives_save_and_restore_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rooms.redb");
        let a = broker();
        for i in 0..3 {
            a.publish("/chat", "r", "ann", Bytes::from(vec![i]))
                .await
                .unwrap();
        }
        let epoch = a.recover("/chat", "r", None).await.unwrap().epoch;
        assert_eq!(a.save(&path).unwrap(), 1);

        let b = broker();
        assert_eq!(b.restore(&path).unwrap(), 1);
        let since = Some(Since { epoch, seq: 1 });
        let r = b.recover("/chat", "r", since).await.unwrap();
        assert_eq!((r.epoch, r.last_seq), (epoch, 3));
        assert_eq!(r.replay.unwrap().len(), 2);
        assert_eq!(
            b.publish("/chat", "r", "ann", Bytes::new()).await.unwrap(),
            4
        );

        // The snapshot is consumed: a crash later cannot bring back stale history.
        assert!(!path.exists());
        assert_eq!(broker().restore(&path).unwrap(), 0);
    }

    #[test]
    fn a_damaged_snapshot_is_told_from_an_unreadable_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rooms.redb");
        {
            let db = Database::create(&path).unwrap();
            let tx = db.begin_write().unwrap();
            tx.open_table(ROOMS)
                .unwrap()
                .insert(("/chat", "r"), &[0xff_u8, 0xff, 0xff][..])
                .unwrap();
            tx.commit().unwrap();
        }
        let err = broker().restore(&path).unwrap_err();
        assert!(
            matches!(&err, BrokerError::CorruptSnapshot { ns, room, .. } if ns == "/chat" && room == "r"),
            "{err:?}"
        );
        assert_eq!(err.code(), ErrorCode::Internal);
        assert!(path.exists(), "kept for the operator");

        let not_redb = dir.path().join("not.redb");
        std::fs::write(&not_redb, b"not a database").unwrap();
        let err = broker().restore(&not_redb).unwrap_err();
        assert!(
            matches!(&err, BrokerError::Snapshot { path, .. } if path == &not_redb),
            "{err:?}"
        );
        assert!(
            err.to_string().starts_with("room history snapshot "),
            "{err}"
        );
        assert_eq!(err.code(), ErrorCode::Internal);
    }
}
