//! The single-process broker: sequence numbers and history in memory, delivery
//! straight into this node's hub.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::{now_millis, Broker, BrokerError};
use crate::config::Config;
use crate::hub::{History, Hub, Recovery, SessionId};
use crate::protocol::{frame_bytes, ErrorCode, ServerFrame, Since};

/// In-process broker for one node.
#[derive(Debug)]
pub struct Local {
    hub: Arc<Hub>,
    history_sizes: HashMap<String, usize>,
    inbox_namespaces: Vec<String>,
    // std mutex: publish holds it while queueing into the hub (synchronous), which
    // is what keeps delivery order equal to seq order.
    logs: Mutex<Logs>,
}

type Logs = HashMap<(String, String), Log>;

/// (namespace, room) → postcard-encoded [`SavedRoom`].
const ROOMS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("rooms");

#[derive(serde::Serialize, serde::Deserialize)]
struct SavedRoom {
    epoch: u64,
    last_seq: u64,
    frames: Vec<(u64, Vec<u8>)>,
}

fn snapshot_err(e: impl std::fmt::Display) -> BrokerError {
    BrokerError::Unavailable(format!("room history snapshot: {e}"))
}

#[derive(Debug)]
struct Log {
    history: History,
    touched: Instant,
}

impl Local {
    /// A broker over `hub` for the namespaces of `config`.
    pub fn new(hub: Arc<Hub>, config: &Config) -> Self {
        Local {
            hub,
            history_sizes: config.history_sizes(),
            inbox_namespaces: config.inbox_namespaces(),
            logs: Mutex::new(HashMap::new()),
        }
    }

    /// Forgets rooms nobody on this node is in and nobody published to for `ttl`, so
    /// memory follows the live rooms. Returns how many were dropped.
    pub fn sweep(&self, now: Instant, ttl: Duration) -> usize {
        let mut logs = self.logs.lock().unwrap_or_else(|p| p.into_inner());
        let before = logs.len();
        logs.retain(|(ns, room), log| {
            now.saturating_duration_since(log.touched) < ttl
                || self.hub.room_handle(ns, room).is_some()
        });
        before - logs.len()
    }

    fn log<'a>(&self, logs: &'a mut Logs, ns: &str, room: &str) -> &'a mut Log {
        let cap = self.history_sizes.get(ns).copied().unwrap_or(0);
        logs.entry((ns.to_owned(), room.to_owned()))
            .or_insert_with(|| Log {
                // Milliseconds tell a room's lives apart, also across restarts.
                history: History::new(now_millis(), cap),
                touched: Instant::now(),
            })
    }

    /// Writes every room's history to `path` (a redb file), so a graceful restart
    /// keeps recovery working: clients rejoining with `since` get what they missed.
    pub fn save(&self, path: &Path) -> Result<usize, BrokerError> {
        let logs = self.logs.lock().unwrap_or_else(|p| p.into_inner());
        let db = Database::create(path).map_err(snapshot_err)?;
        let tx = db.begin_write().map_err(snapshot_err)?;
        {
            let mut table = tx.open_table(ROOMS).map_err(snapshot_err)?;
            for ((ns, room), log) in logs.iter() {
                let saved = SavedRoom {
                    epoch: log.history.epoch(),
                    last_seq: log.history.last_seq(),
                    frames: log
                        .history
                        .frames()
                        .map(|(seq, f)| (*seq, f.to_vec()))
                        .collect(),
                };
                let bytes = postcard::to_stdvec(&saved).map_err(snapshot_err)?;
                table
                    .insert((ns.as_str(), room.as_str()), bytes.as_slice())
                    .map_err(snapshot_err)?;
            }
        }
        tx.commit().map_err(snapshot_err)?;
        Ok(logs.len())
    }

    /// Loads histories saved by [`Local::save`] and deletes the snapshot, so that
    /// after a later crash no stale history (and no reused seq) comes back.
    pub fn restore(&self, path: &Path) -> Result<usize, BrokerError> {
        if !path.exists() {
            return Ok(0);
        }
        let db = Database::create(path).map_err(snapshot_err)?;
        let mut loaded = Vec::new();
        {
            let tx = db.begin_read().map_err(snapshot_err)?;
            let table = match tx.open_table(ROOMS) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
                Err(e) => return Err(snapshot_err(e)),
            };
            for entry in table.iter().map_err(snapshot_err)? {
                let (key, value) = entry.map_err(snapshot_err)?;
                let (ns, room) = key.value();
                let saved: SavedRoom = postcard::from_bytes(value.value()).map_err(snapshot_err)?;
                loaded.push((ns.to_owned(), room.to_owned(), saved));
            }
        }
        drop(db);
        std::fs::remove_file(path).map_err(snapshot_err)?;
        let mut logs = self.logs.lock().unwrap_or_else(|p| p.into_inner());
        let n = loaded.len();
        for (ns, room, saved) in loaded {
            let cap = self.history_sizes.get(&ns).copied().unwrap_or(0);
            let frames = saved
                .frames
                .into_iter()
                .map(|(seq, f)| (seq, Bytes::from(f)))
                .collect();
            let history = History::restore(saved.epoch, cap, saved.last_seq, frames);
            logs.insert(
                (ns, room),
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
        self.logs.lock().map(|l| l.len()).unwrap_or(0)
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
        let log = self.log(&mut logs, ns, room);
        let seq = log.history.next_seq();
        let frame = frame_bytes(&ServerFrame::Message {
            seq,
            from: from.to_owned(),
            body,
            ts: now_millis(),
        });
        log.history.push(frame.clone());
        log.touched = Instant::now();
        self.hub
            .deliver_message(ns, room, seq, &frame, Instant::now());
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
        Ok(self.log(&mut logs, ns, room).history.recover(since))
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
    ) -> Result<(), BrokerError> {
        self.hub.deliver_presence(ns, room, user, joined);
        Ok(())
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

    async fn notify_user(&self, user: &str, id: u64, frame: Bytes) -> Result<(), BrokerError> {
        let namespaces = self.inbox_namespaces.iter().map(String::as_str);
        self.hub.deliver_notification(namespaces, user, id, &frame);
        Ok(())
    }

    async fn disconnect_user(&self, user: &str, code: ErrorCode) -> Result<usize, BrokerError> {
        Ok(self.hub.close_user(user, code))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::SessionLimits;

    fn broker() -> Local {
        let config = Config::default();
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
}
