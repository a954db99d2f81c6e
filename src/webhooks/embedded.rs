//! The single-process webhook queue: a redb table in the data directory, so events
//! survive a backend that is down and a wtgate restart.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use super::{Queue, QueueError};

/// Increasing key → the encoded event.
const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("webhooks");

fn store_err(e: impl std::fmt::Display) -> QueueError {
    QueueError::Store(e.to_string())
}

/// Webhook events waiting in `dir/webhooks.redb`.
#[derive(Debug, Clone)]
pub struct EmbeddedQueue {
    db: Arc<Database>,
}

impl EmbeddedQueue {
    /// Opens (or creates) `dir/webhooks.redb`.
    pub fn open(dir: &Path) -> Result<Self, QueueError> {
        std::fs::create_dir_all(dir).map_err(|e| store_err(format!("{}: {e}", dir.display())))?;
        let path = dir.join("webhooks.redb");
        let db =
            Database::create(&path).map_err(|e| store_err(format!("{}: {e}", path.display())))?;
        let tx = db.begin_write().map_err(store_err)?;
        tx.open_table(EVENTS).map_err(store_err)?;
        tx.commit().map_err(store_err)?;
        Ok(EmbeddedQueue { db: Arc::new(db) })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, QueueError> + Send + 'static,
    ) -> Result<T, QueueError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(store_err)?
    }
}

#[async_trait]
impl Queue for EmbeddedQueue {
    async fn push(&self, events: Vec<Vec<u8>>, bound: usize) -> Result<usize, QueueError> {
        self.blocking(move |db| {
            let tx = db.begin_write().map_err(store_err)?;
            let dropped = {
                let mut table = tx.open_table(EVENTS).map_err(store_err)?;
                let mut len = table.len().map_err(store_err)? as usize;
                let mut next = table
                    .last()
                    .map_err(store_err)?
                    .map_or(1, |(k, _)| k.value() + 1);
                let mut dropped = 0;
                for event in &events {
                    if len >= bound {
                        dropped += 1;
                        continue;
                    }
                    table.insert(next, event.as_slice()).map_err(store_err)?;
                    next += 1;
                    len += 1;
                }
                dropped
            };
            tx.commit().map_err(store_err)?;
            Ok(dropped)
        })
        .await
    }

    async fn peek(&self) -> Result<Option<(u64, Vec<u8>)>, QueueError> {
        self.blocking(|db| {
            let tx = db.begin_read().map_err(store_err)?;
            let table = tx.open_table(EVENTS).map_err(store_err)?;
            let first = table.first().map_err(store_err)?;
            Ok(first.map(|(k, v)| (k.value(), v.value().to_vec())))
        })
        .await
    }

    async fn remove(&self, key: u64) -> Result<(), QueueError> {
        self.blocking(move |db| {
            let tx = db.begin_write().map_err(store_err)?;
            tx.open_table(EVENTS)
                .map_err(store_err)?
                .remove(key)
                .map_err(store_err)?;
            tx.commit().map_err(store_err)
        })
        .await
    }

    async fn waiting(&self) -> Result<u64, QueueError> {
        self.blocking(|db| {
            let tx = db.begin_read().map_err(store_err)?;
            let table = tx.open_table(EVENTS).map_err(store_err)?;
            table.len().map_err(store_err)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fifo_bounded_and_durable() {
        let dir = tempfile::tempdir().unwrap();
        let q = EmbeddedQueue::open(dir.path()).unwrap();
        assert_eq!(q.peek().await.unwrap(), None);
        let events = (1..=4).map(|i| vec![i]).collect();
        assert_eq!(q.push(events, 3).await.unwrap(), 1, "the 4th is dropped");
        assert_eq!(q.waiting().await.unwrap(), 3);
        let (key, first) = q.peek().await.unwrap().unwrap();
        assert_eq!(first, [1]);
        assert_eq!(q.peek().await.unwrap().unwrap().0, key, "until removed");
        q.remove(key).await.unwrap();
        drop(q);
        let q = EmbeddedQueue::open(dir.path()).unwrap();
        assert_eq!(q.peek().await.unwrap().unwrap().1, [2]);
        assert_eq!(q.push(vec![vec![5]], 3).await.unwrap(), 0);
        let mut order = Vec::new();
        while let Some((key, e)) = q.peek().await.unwrap() {
            order.push(e[0]);
            q.remove(key).await.unwrap();
        }
        assert_eq!(order, [2, 3, 5]);
    }
}
