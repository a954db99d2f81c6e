//! Per-user durable notification inboxes, and the per-user token revocation marks
//! kept in the same store.
//!
//! A notification is stored before the push is acknowledged to the sender, delivered
//! to every session of the user in a notifications namespace, and kept until a
//! client acknowledges it; users who were offline get everything pending on connect.
//! [`Embedded`] keeps inboxes in a local redb file; a Redis inbox serves clusters.

mod embedded;
mod redis;

pub use self::redis::RedisInbox;
pub use embedded::Embedded;

use async_trait::async_trait;
use bytes::Bytes;
use thiserror::Error;

/// One stored notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// Increasing per user; clients drop duplicates by id.
    pub id: u64,
    /// Application-defined kind.
    pub kind: String,
    /// Opaque payload.
    pub body: Bytes,
    /// When it was stored, milliseconds since the Unix epoch.
    pub ts: u64,
}

/// Result of storing a notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pushed {
    /// The stored notification.
    pub notification: Notification,
    /// Older notifications dropped to keep the inbox within its bound.
    pub evicted: u64,
}

/// Why the inbox store failed.
#[derive(Debug, Error)]
pub enum InboxError {
    /// The store could not be opened or written.
    #[error("inbox store: {0}")]
    Store(String),
}

/// Durable per-user inboxes.
#[async_trait]
pub trait Inbox: Send + Sync + 'static {
    /// Stores a notification for `user` durably, dropping the oldest ones beyond the
    /// bound.
    async fn push(&self, user: &str, kind: &str, body: Bytes) -> Result<Pushed, InboxError>;

    /// Everything pending for `user`, oldest first.
    async fn pending(&self, user: &str) -> Result<Vec<Notification>, InboxError>;

    /// Removes notification `id` of `user`; false when it was not there (already
    /// acknowledged or evicted), which is not an error.
    async fn ack(&self, user: &str, id: u64) -> Result<bool, InboxError>;

    /// Notifications pending across all users.
    async fn total_pending(&self) -> Result<u64, InboxError>;

    /// Revokes `user`'s tokens issued at or before `unix_secs` (durably: a restart
    /// keeps refusing them). A later revocation moves the mark forward, never back.
    async fn revoke(&self, user: &str, unix_secs: u64) -> Result<(), InboxError>;

    /// The mark of [`Inbox::revoke`] for `user`, if any.
    async fn revoked_until(&self, user: &str) -> Result<Option<u64>, InboxError>;

    /// Why the store cannot take writes right now (its last write failed), for
    /// `/healthz`; `Ok` when it can, as far as it knows.
    fn health(&self) -> Result<(), String> {
        Ok(())
    }
}
