//! Fan-out between nodes, sequence numbers, history and presence.
//!
//! Sessions talk to the [`Broker`] trait only; the hub stays local. [`Local`] serves a
//! single process; a Redis broker implements the same trait for clusters, calling the
//! hub's `deliver_*` methods on each node when a message arrives.

mod local;
mod redis;

pub use self::redis::{valid_node_id, Redis};
pub use local::Local;

use std::path::PathBuf;

use async_trait::async_trait;
use bytes::Bytes;
use thiserror::Error;

use crate::hub::{Recovery, SessionId};
use crate::protocol::{ErrorCode, Since};

/// Why the broker could not do what was asked.
///
/// The variants an operator acts on differently are kept apart: Redis being
/// down passes by itself, a damaged snapshot or malformed data in Redis does not.
/// To a client every one but [`BrokerError::TooManyRooms`] is the same
/// `Internal` error ([`BrokerError::code`]).
#[derive(Debug, Error)]
pub enum BrokerError {
    /// The shared backend cannot be reached (or is not serving yet).
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    /// The room history snapshot file could not be written or read (disk,
    /// permissions, or not a file the snapshot store can open).
    #[error("room history snapshot {}: {source}", path.display())]
    Snapshot {
        /// The snapshot file.
        path: PathBuf,
        /// What the file system or the snapshot store said.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The room history snapshot opened, but a room in it does not decode: the
    /// file is damaged or was written by an incompatible build. It is left in
    /// place for the operator to inspect or delete.
    #[error("room history snapshot {} is corrupt: room {room:?} of {ns}: {source}", path.display())]
    CorruptSnapshot {
        /// The snapshot file.
        path: PathBuf,
        /// Namespace of the room that does not decode.
        ns: String,
        /// The room that does not decode.
        room: String,
        /// Why it does not decode.
        source: postcard::Error,
    },
    /// Redis answered with a value this build cannot read (a room's epoch that is
    /// not a number): its data was damaged or written by something else, and
    /// retrying will not help.
    #[error("redis holds a malformed {what} {value:?}")]
    MalformedData {
        /// Which value.
        what: &'static str,
        /// The value as Redis holds it.
        value: String,
    },
    /// The namespace holds as many rooms as the server allows, none of them empty.
    #[error("{0}")]
    TooManyRooms(String),
    /// A setting the broker cannot work with (a bad Redis URL or node id).
    #[error("{0}")]
    Config(String),
    /// Another running node uses this node id: two nodes with one id would erase
    /// each other's presence.
    #[error(
        "node id {0:?} is in use: a running node heartbeats with it in this Redis; \
         give this node another --node-id (or stop that node)"
    )]
    NodeIdInUse(String),
}

impl BrokerError {
    /// The wire error code for a request that failed with this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            BrokerError::TooManyRooms(_) => ErrorCode::TooManyRooms,
            _ => ErrorCode::Internal,
        }
    }
}

/// What a room presence change did cluster-wide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PresenceChange {
    /// The user entered the room on its first node, or left it on its last.
    pub user: bool,
    /// The room got its first user, or lost its last one.
    pub room: bool,
}

/// Whether a broker can serve, for `/healthz`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokerHealth {
    /// Serving.
    Ok,
    /// The shared backend cannot be reached: publishes, joins and presence fail with
    /// [`BrokerError::Unavailable`] until it returns (the broker reconnects by itself).
    Unavailable(String),
}

impl BrokerHealth {
    /// True when serving.
    pub fn is_ok(&self) -> bool {
        matches!(self, BrokerHealth::Ok)
    }
}

/// What every node needs from the others.
#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// Assigns the room's next seq, stores the message in history and delivers it to
    /// every member on every node, in seq order. Returns the seq.
    async fn publish(
        &self,
        ns: &str,
        room: &str,
        from: &str,
        body: Bytes,
    ) -> Result<u64, BrokerError>;

    /// The room's epoch and last seq, and the messages after `since` when history
    /// still has them.
    async fn recover(
        &self,
        ns: &str,
        room: &str,
        since: Option<Since>,
    ) -> Result<Recovery, BrokerError>;

    /// Delivers a volatile event to the room's members except session `except`.
    /// Best effort: never waits, never fails loudly.
    fn volatile(&self, ns: &str, room: &str, except: SessionId, from: &str, body: Bytes);

    /// Sends a namespace-wide broadcast to every session of the namespace.
    async fn broadcast(&self, ns: &str, from: &str, body: Bytes) -> Result<(), BrokerError>;

    /// A user's first session entered (`joined`) or last session left a room on this
    /// node; the broker tells the room's other users when that changes cluster presence.
    /// Says what changed cluster-wide, or `None` when this node is the cluster
    /// (its own view is the answer).
    async fn room_presence(
        &self,
        ns: &str,
        room: &str,
        user: &str,
        joined: bool,
    ) -> Result<Option<PresenceChange>, BrokerError>;

    /// Users in a room, cluster-wide.
    async fn room_members(&self, ns: &str, room: &str) -> Result<Vec<String>, BrokerError>;

    /// A user's first session opened (`joined`) or last session closed in a namespace
    /// on this node.
    async fn online_presence(&self, ns: &str, user: &str, joined: bool) -> Result<(), BrokerError>;

    /// Users online in a namespace, cluster-wide.
    async fn online_users(&self, ns: &str) -> Result<Vec<String>, BrokerError>;

    /// A page of the users online in a namespace, or of a room's members with
    /// `room`, cluster-wide: those after `after` in byte order, at most `limit`,
    /// without reading the rest.
    async fn user_page(
        &self,
        ns: &str,
        room: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, BrokerError>;

    /// Pushes an encoded, already stored notification to every session of `user`
    /// in notification namespaces, on every node.
    async fn notify_user(&self, user: &str, id: u64, frame: Bytes) -> Result<(), BrokerError>;

    /// Closes every session of `user` on every node with `code`; returns how many
    /// sessions this node closed.
    async fn disconnect_user(&self, user: &str, code: ErrorCode) -> Result<usize, BrokerError>;

    /// Whether the broker can serve right now; a single process always can.
    fn health(&self) -> BrokerHealth {
        BrokerHealth::Ok
    }

    /// Bytes of room history this node holds in memory (none in cluster mode,
    /// where Redis holds it).
    fn history_bytes(&self) -> Option<usize> {
        None
    }
}

/// Milliseconds since the Unix epoch, the `ts` of messages.
pub fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
