//! The single-process broker: sequence numbers and history in memory, delivery
//! straight into this node's hub.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;

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

#[derive(Debug)]
struct Log {
    history: History,
    touched: Instant,
}

impl Local {
    /// A broker over `hub` for the namespaces of `config`.
    pub fn new(hub: Arc<Hub>, config: &Config) -> Self {
        let spaces = &config.namespaces;
        Local {
            hub,
            history_sizes: spaces.iter().map(|(p, ns)| (p.clone(), ns.history)).collect(),
            inbox_namespaces: spaces
                .iter()
                .filter(|(_, ns)| ns.inbox)
                .map(|(p, _)| p.clone())
                .collect(),
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
