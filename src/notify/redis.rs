//! Inboxes in Redis, shared by every node of a cluster; as durable as the Redis
//! (its AOF/RDB settings).
//!
//! | key | type | holds |
//! |---|---|---|
//! | `wtgate:inbox:{user}` | sorted set | score = id, member = `"{id}:{postcard(kind, body, ts)}"` |
//! | `wtgate:inbox-id:{user}` | string | the last id given (ids never repeat) |
//!
//! Ids never go below the push's time in milliseconds × [`IDS_PER_MS`]: should
//! Redis lose its data (no persistence, a failover to an empty replica), the
//! counter starts again from the clock, not from 1, so ids stay increasing per
//! user and clients do not skip new notifications as already seen.
//! | `wtgate:inbox-total` | string | notifications pending across all users |
//!
//! Push and ack are Lua scripts, so the bound, the counters and the set change
//! together.

use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisResult, Script};

use super::{Inbox, InboxError, Notification, Pushed};
use crate::broker::now_millis;

/// How long one Redis call may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// Ids a user can be given per millisecond before they run ahead of the clock
/// (they stay unique and increasing then too): ids stay below 2^53, exact in
/// JavaScript, until the year 2255.
const IDS_PER_MS: u64 = 1000;

/// KEYS: set, id counter, total. ARGV: stored, max per user, the id floor.
/// Returns `{id, evicted}`.
const PUSH: &str = r#"
local id = redis.call('INCR', KEYS[2])
local floor = tonumber(ARGV[3])
if id < floor then
  id = floor
  redis.call('SET', KEYS[2], ARGV[3])
end
redis.call('ZADD', KEYS[1], id, string.format('%d', id) .. ':' .. ARGV[1])
local n = redis.call('ZCARD', KEYS[1])
local max = tonumber(ARGV[2])
local evicted = 0
if n > max then
  evicted = n - max
  redis.call('ZPOPMIN', KEYS[1], evicted)
end
redis.call('INCRBY', KEYS[3], 1 - evicted)
return {id, evicted}
"#;

/// KEYS: set, total. ARGV: id. Returns how many were removed (0 or 1).
const ACK: &str = r#"
local n = redis.call('ZREMRANGEBYSCORE', KEYS[1], ARGV[1], ARGV[1])
if n > 0 then redis.call('DECRBY', KEYS[2], n) end
return n
"#;

const TOTAL: &str = "wtgate:inbox-total";

#[derive(serde::Serialize, serde::Deserialize)]
struct Stored {
    kind: String,
    body: Bytes,
    ts: u64,
}

/// Redis-backed inboxes for cluster mode.
#[derive(Clone)]
pub struct RedisInbox {
    conn: ConnectionManager,
    push: Script,
    ack: Script,
    max_per_user: u64,
}

impl std::fmt::Debug for RedisInbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisInbox")
            .field("max_per_user", &self.max_per_user)
            .finish_non_exhaustive()
    }
}

fn store_err(e: impl std::fmt::Display) -> InboxError {
    InboxError::Store(format!("redis: {e}"))
}

fn set_key(user: &str) -> String {
    format!("wtgate:inbox:{user}")
}

impl RedisInbox {
    /// Connects to Redis at `url`, keeping at most `max_per_user` notifications per
    /// user. Reconnects by itself after Redis comes back.
    pub async fn connect(url: &str, max_per_user: usize) -> Result<Self, InboxError> {
        let client = redis::Client::open(url).map_err(store_err)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(COMMAND_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn = tokio::time::timeout(
            Duration::from_secs(5),
            ConnectionManager::new_with_config(client, config),
        )
        .await
        .map_err(|_| store_err("no answer within 5s"))?
        .map_err(store_err)?;
        Ok(RedisInbox {
            conn,
            push: Script::new(PUSH),
            ack: Script::new(ACK),
            max_per_user: max_per_user.max(1) as u64,
        })
    }

    /// Runs a read-only command, once more when it fails: right after Redis came
    /// back, the connection may still hold the broken socket, and the manager
    /// reconnects on the next command. (Writes are not repeated: not idempotent.)
    async fn read<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, InboxError> {
        let mut conn = self.conn.clone();
        match self.call(cmd.query_async(&mut conn)).await {
            Ok(v) => Ok(v),
            Err(_) => self.call(cmd.query_async(&mut conn)).await,
        }
    }

    async fn call<T>(&self, fut: impl Future<Output = RedisResult<T>>) -> Result<T, InboxError> {
        match tokio::time::timeout(COMMAND_TIMEOUT, fut).await {
            Ok(result) => result.map_err(store_err),
            Err(_) => Err(store_err(format!("no answer within {COMMAND_TIMEOUT:?}"))),
        }
    }
}

/// Splits `"{id}:{stored}"`.
fn parse_entry(entry: &[u8]) -> Option<Notification> {
    let colon = entry.iter().position(|&b| b == b':')?;
    let id = std::str::from_utf8(&entry[..colon]).ok()?.parse().ok()?;
    let stored: Stored = postcard::from_bytes(&entry[colon + 1..]).ok()?;
    Some(Notification {
        id,
        kind: stored.kind,
        body: stored.body,
        ts: stored.ts,
    })
}

#[async_trait]
impl Inbox for RedisInbox {
    async fn push(&self, user: &str, kind: &str, body: Bytes) -> Result<Pushed, InboxError> {
        let ts = now_millis();
        let stored = Stored {
            kind: kind.to_owned(),
            body,
            ts,
        };
        let bytes = postcard::to_stdvec(&stored).map_err(store_err)?;
        let mut invocation = self.push.prepare_invoke();
        invocation
            .key(set_key(user))
            .key(format!("wtgate:inbox-id:{user}"))
            .key(TOTAL)
            .arg(bytes)
            .arg(self.max_per_user)
            .arg(ts * IDS_PER_MS);
        let mut conn = self.conn.clone();
        let (id, evicted): (u64, u64) = self.call(invocation.invoke_async(&mut conn)).await?;
        Ok(Pushed {
            notification: Notification {
                id,
                kind: stored.kind,
                body: stored.body,
                ts,
            },
            evicted,
        })
    }

    async fn pending(&self, user: &str) -> Result<Vec<Notification>, InboxError> {
        let mut cmd = redis::cmd("ZRANGE");
        cmd.arg(set_key(user)).arg(0).arg(-1);
        let entries: Vec<Vec<u8>> = self.read(&cmd).await?;
        entries
            .iter()
            .map(|e| parse_entry(e).ok_or_else(|| store_err("a malformed inbox entry")))
            .collect()
    }

    async fn ack(&self, user: &str, id: u64) -> Result<bool, InboxError> {
        let mut invocation = self.ack.prepare_invoke();
        invocation.key(set_key(user)).key(TOTAL).arg(id);
        let mut conn = self.conn.clone();
        let removed: u64 = self.call(invocation.invoke_async(&mut conn)).await?;
        Ok(removed > 0)
    }

    async fn total_pending(&self) -> Result<u64, InboxError> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(TOTAL);
        let total: Option<i64> = self.read(&cmd).await?;
        Ok(total.unwrap_or(0).max(0) as u64)
    }

    async fn revoke(&self, user: &str, unix_secs: u64) -> Result<(), InboxError> {
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("EVAL");
        // The mark only moves forward, also when two nodes revoke at once.
        cmd.arg("local old = tonumber(redis.call('GET', KEYS[1]) or '0') if tonumber(ARGV[1]) > old then redis.call('SET', KEYS[1], ARGV[1]) end return 0")
            .arg(1)
            .arg(revoked_key(user))
            .arg(unix_secs);
        self.call(cmd.query_async::<()>(&mut conn)).await
    }

    async fn revoked_until(&self, user: &str) -> Result<Option<u64>, InboxError> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(revoked_key(user));
        self.read(&cmd).await
    }
}

/// The revocation mark of `user`: tokens issued at or before it are refused.
fn revoked_key(user: &str) -> String {
    format!("wtgate:revoked:{user}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_parse() {
        let stored = Stored {
            kind: "k".into(),
            body: Bytes::from_static(b"a:b"),
            ts: 5,
        };
        let mut entry = b"12:".to_vec();
        entry.extend(postcard::to_stdvec(&stored).unwrap());
        let n = parse_entry(&entry).unwrap();
        assert_eq!(
            (n.id, n.kind.as_str(), &n.body[..], n.ts),
            (12, "k", &b"a:b"[..], 5)
        );
        assert!(parse_entry(b"x:").is_none());
    }
}
