//! Inboxes in an embedded redb database: durable across restarts, nothing to install.
//!
//! A write that fails (a full disk, an I/O error: redb then refuses every later
//! transaction) marks the store as failing, which `/healthz` reports, and closes
//! the database; the next call opens it again (redb repairs what the failure left),
//! so the inbox recovers without a restart once the disk does.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use async_trait::async_trait;
use bytes::Bytes;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use super::{Inbox, InboxError, Notification, Pushed};
use crate::broker::now_millis;

/// (user, id) → postcard-encoded [`Stored`].
const INBOX: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("inbox");
/// user → (last id given, pending count).
const USERS: TableDefinition<&str, (u64, u64)> = TableDefinition::new("users");
/// user → tokens issued at or before these unix seconds are revoked.
const REVOKED: TableDefinition<&str, u64> = TableDefinition::new("revoked");

#[derive(serde::Serialize, serde::Deserialize)]
struct Stored {
    kind: String,
    body: Vec<u8>,
    ts: u64,
}

/// redb-backed inboxes under a data directory.
#[derive(Debug, Clone)]
pub struct Embedded {
    store: Arc<Store>,
    max_per_user: u64,
}

#[derive(Debug)]
struct Store {
    path: PathBuf,
    /// `None` after a failed write: the next call reopens it. Std locks, held
    /// only to clone or swap the handle, never across an await.
    db: RwLock<Option<Arc<Database>>>,
    /// Why the last write failed, until one succeeds.
    failing: Mutex<Option<String>>,
}

fn store_err(e: impl std::fmt::Display) -> InboxError {
    InboxError::Store(e.to_string())
}

impl Embedded {
    /// Opens (or creates) `dir/inbox.redb`, keeping at most `max_per_user`
    /// notifications per user.
    pub fn open(dir: &Path, max_per_user: usize) -> Result<Self, InboxError> {
        std::fs::create_dir_all(dir).map_err(|e| store_err(format!("{}: {e}", dir.display())))?;
        let path = dir.join("inbox.redb");
        let db = open_db(&path)?;
        Ok(Embedded {
            store: Arc::new(Store {
                path,
                db: RwLock::new(Some(Arc::new(db))),
                failing: Mutex::new(None),
            }),
            max_per_user: max_per_user.max(1) as u64,
        })
    }

    /// The open database, opening it again after a failure.
    fn db(&self) -> Result<Arc<Database>, InboxError> {
        let store = &self.store;
        if let Some(db) = &*store.db.read().unwrap_or_else(|p| p.into_inner()) {
            return Ok(db.clone());
        }
        let mut slot = store.db.write().unwrap_or_else(|p| p.into_inner());
        if let Some(db) = &*slot {
            return Ok(db.clone());
        }
        // Fails while a call still holds the old handle: the next call tries again.
        let db = Arc::new(open_db(&store.path)?);
        tracing::info!(path = %store.path.display(), "inbox store reopened");
        *slot = Some(db.clone());
        Ok(db)
    }

    /// Records how a write went: a failure closes the database, to be reopened.
    fn wrote<T>(&self, result: Result<T, InboxError>) -> Result<T, InboxError> {
        let store = &self.store;
        let mut failing = store.failing.lock().unwrap_or_else(|p| p.into_inner());
        match &result {
            Ok(_) => *failing = None,
            Err(InboxError::Store(why)) => {
                if failing.is_none() {
                    tracing::warn!(path = %store.path.display(), "inbox store failed: {why}");
                }
                *failing = Some(why.clone());
                *store.db.write().unwrap_or_else(|p| p.into_inner()) = None;
            }
        }
        result
    }

    fn push_sync(
        &self,
        db: &Database,
        user: &str,
        kind: &str,
        body: Bytes,
    ) -> Result<Pushed, InboxError> {
        let ts = now_millis();
        let stored = Stored {
            kind: kind.to_owned(),
            body: body.to_vec(),
            ts,
        };
        let bytes = postcard::to_stdvec(&stored).map_err(store_err)?;
        let tx = db.begin_write().map_err(store_err)?;
        let (id, evicted) = {
            let mut users = tx.open_table(USERS).map_err(store_err)?;
            let mut inbox = tx.open_table(INBOX).map_err(store_err)?;
            let (last, count) = users
                .get(user)
                .map_err(store_err)?
                .map(|v| v.value())
                .unwrap_or((0, 0));
            let id = last + 1;
            inbox
                .insert((user, id), bytes.as_slice())
                .map_err(store_err)?;
            let mut count = count + 1;
            let mut evicted = 0;
            while count > self.max_per_user {
                let oldest = inbox
                    .range((user, 0)..=(user, u64::MAX))
                    .map_err(store_err)?
                    .next()
                    .transpose()
                    .map_err(store_err)?
                    .map(|(k, _)| k.value().1);
                let Some(oldest) = oldest else { break };
                inbox.remove((user, oldest)).map_err(store_err)?;
                count -= 1;
                evicted += 1;
            }
            users.insert(user, (id, count)).map_err(store_err)?;
            (id, evicted)
        };
        tx.commit().map_err(store_err)?;
        Ok(Pushed {
            notification: Notification {
                id,
                kind: stored.kind,
                body,
                ts,
            },
            evicted,
        })
    }

    fn pending_sync(db: &Database, user: &str) -> Result<Vec<Notification>, InboxError> {
        let tx = db.begin_read().map_err(store_err)?;
        let inbox = tx.open_table(INBOX).map_err(store_err)?;
        let mut out = Vec::new();
        for entry in inbox
            .range((user, 0)..=(user, u64::MAX))
            .map_err(store_err)?
        {
            let (key, value) = entry.map_err(store_err)?;
            let stored: Stored = postcard::from_bytes(value.value()).map_err(store_err)?;
            out.push(Notification {
                id: key.value().1,
                kind: stored.kind,
                body: Bytes::from(stored.body),
                ts: stored.ts,
            });
        }
        Ok(out)
    }

    fn ack_sync(db: &Database, user: &str, id: u64) -> Result<bool, InboxError> {
        let tx = db.begin_write().map_err(store_err)?;
        let removed = {
            let mut inbox = tx.open_table(INBOX).map_err(store_err)?;
            let removed = inbox.remove((user, id)).map_err(store_err)?.is_some();
            if removed {
                let mut users = tx.open_table(USERS).map_err(store_err)?;
                let (last, count) = users
                    .get(user)
                    .map_err(store_err)?
                    .map(|v| v.value())
                    .unwrap_or((id, 1));
                users
                    .insert(user, (last, count.saturating_sub(1)))
                    .map_err(store_err)?;
            }
            removed
        };
        tx.commit().map_err(store_err)?;
        Ok(removed)
    }

    fn total_sync(db: &Database) -> Result<u64, InboxError> {
        let tx = db.begin_read().map_err(store_err)?;
        let inbox = tx.open_table(INBOX).map_err(store_err)?;
        inbox.len().map_err(store_err)
    }

    /// Runs a blocking store call off the async workers (redb fsyncs on commit); a
    /// `write` reports its outcome to the failure tracking.
    async fn blocking<T: Send + 'static>(
        &self,
        write: bool,
        f: impl FnOnce(&Embedded, &Database) -> Result<T, InboxError> + Send + 'static,
    ) -> Result<T, InboxError> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            let result = me.db().and_then(|db| f(&me, &db));
            if write {
                me.wrote(result)
            } else {
                result
            }
        })
        .await
        .map_err(store_err)?
    }
}

/// Opens (or creates, or repairs) the database and its tables.
fn open_db(path: &Path) -> Result<Database, InboxError> {
    let db = Database::create(path).map_err(|e| store_err(format!("{}: {e}", path.display())))?;
    let tx = db.begin_write().map_err(store_err)?;
    tx.open_table(INBOX).map_err(store_err)?;
    tx.open_table(USERS).map_err(store_err)?;
    tx.commit().map_err(store_err)?;
    Ok(db)
}

#[async_trait]
impl Inbox for Embedded {
    async fn push(&self, user: &str, kind: &str, body: Bytes) -> Result<Pushed, InboxError> {
        let (user, kind) = (user.to_owned(), kind.to_owned());
        self.blocking(true, move |me, db| me.push_sync(db, &user, &kind, body))
            .await
    }

    async fn pending(&self, user: &str) -> Result<Vec<Notification>, InboxError> {
        let user = user.to_owned();
        self.blocking(false, move |_, db| Embedded::pending_sync(db, &user))
            .await
    }

    async fn ack(&self, user: &str, id: u64) -> Result<bool, InboxError> {
        let user = user.to_owned();
        self.blocking(true, move |_, db| Embedded::ack_sync(db, &user, id))
            .await
    }

    async fn total_pending(&self) -> Result<u64, InboxError> {
        self.blocking(false, |_, db| Embedded::total_sync(db)).await
    }

    async fn revoke(&self, user: &str, unix_secs: u64) -> Result<(), InboxError> {
        let user = user.to_owned();
        self.blocking(true, move |_, db| {
            let tx = db.begin_write().map_err(store_err)?;
            {
                let mut table = tx.open_table(REVOKED).map_err(store_err)?;
                let old = table
                    .get(user.as_str())
                    .map_err(store_err)?
                    .map(|v| v.value());
                let mark = old.unwrap_or(0).max(unix_secs);
                table.insert(user.as_str(), mark).map_err(store_err)?;
            }
            tx.commit().map_err(store_err)
        })
        .await
    }

    async fn revoked_until(&self, user: &str) -> Result<Option<u64>, InboxError> {
        let user = user.to_owned();
        self.blocking(false, move |_, db| {
            let tx = db.begin_read().map_err(store_err)?;
            let table = match tx.open_table(REVOKED) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
                Err(e) => return Err(store_err(e)),
            };
            Ok(table
                .get(user.as_str())
                .map_err(store_err)?
                .map(|v| v.value()))
        })
        .await
    }

    fn health(&self) -> Result<(), String> {
        let failing = self.store.failing.lock().unwrap_or_else(|p| p.into_inner());
        match &*failing {
            Some(why) => Err(format!("the inbox store cannot write: {why}")),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(s: &str) -> Bytes {
        Bytes::from(s.to_owned())
    }

    async fn pending_ids(inbox: &Embedded, user: &str) -> Vec<u64> {
        let pending = inbox.pending(user).await.unwrap();
        pending.iter().map(|n| n.id).collect()
    }

    #[tokio::test]
    async fn revocation_marks_only_move_forward_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let inbox = Embedded::open(dir.path(), 3).unwrap();
        assert_eq!(inbox.revoked_until("ann").await.unwrap(), None);
        inbox.revoke("ann", 100).await.unwrap();
        inbox.revoke("ann", 50).await.unwrap();
        assert_eq!(inbox.revoked_until("ann").await.unwrap(), Some(100));
        assert_eq!(inbox.revoked_until("bob").await.unwrap(), None);
        drop(inbox);
        let again = Embedded::open(dir.path(), 3).unwrap();
        assert_eq!(again.revoked_until("ann").await.unwrap(), Some(100));
    }

    #[tokio::test]
    async fn push_pending_ack_and_bound() {
        let dir = tempfile::tempdir().unwrap();
        let inbox = Embedded::open(dir.path(), 3).unwrap();
        for i in 1..=4 {
            let p = inbox
                .push("ann", "k", body(&format!("n{i}")))
                .await
                .unwrap();
            assert_eq!(p.notification.id, i);
            assert_eq!(p.evicted, u64::from(i == 4));
        }
        inbox.push("bob", "k", body("b1")).await.unwrap();
        let ids = pending_ids(&inbox, "ann").await;
        assert_eq!(ids, [2, 3, 4], "the oldest was dropped");
        assert!(inbox.ack("ann", 3).await.unwrap());
        assert!(
            !inbox.ack("ann", 3).await.unwrap(),
            "acking twice is harmless"
        );
        assert!(!inbox.ack("ann", 1).await.unwrap());
        let ids = pending_ids(&inbox, "ann").await;
        assert_eq!(ids, [2, 4]);
        assert_eq!(inbox.total_pending().await.unwrap(), 3);
        // "an" is a prefix of "ann": keys of other users never mix.
        assert!(inbox.pending("an").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn survives_reopening_and_keeps_counting() {
        let dir = tempfile::tempdir().unwrap();
        {
            let inbox = Embedded::open(dir.path(), 10).unwrap();
            inbox.push("ann", "mention", body("hello")).await.unwrap();
            inbox.push("ann", "mention", body("again")).await.unwrap();
            inbox.ack("ann", 2).await.unwrap();
        }
        let inbox = Embedded::open(dir.path(), 10).unwrap();
        let pending = inbox.pending("ann").await.unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(
            (
                pending[0].id,
                pending[0].kind.as_str(),
                &pending[0].body[..]
            ),
            (1, "mention", &b"hello"[..])
        );
        assert_eq!(
            inbox
                .push("ann", "k", body("x"))
                .await
                .unwrap()
                .notification
                .id,
            3,
            "ids never repeat"
        );
    }
}
