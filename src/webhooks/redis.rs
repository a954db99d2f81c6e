//! The cluster's webhook queue: one Redis list every node appends to, and a
//! per-node "sending" list an event is moved to (atomically, `LMOVE`) before that
//! node sends it — so each event is sent by exactly one node, and one a node was
//! sending when it died is sent again when it comes back with its id.
//!
//! | key | type | holds |
//! |---|---|---|
//! | `wtgate:webhooks` | list | events waiting, oldest first |
//! | `wtgate:webhooks:sending:{node}` | list | the event that node is sending (0 or 1) |

use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Script;

use super::{Queue, QueueError};

const WAITING: &str = "wtgate:webhooks";
/// How long one Redis call may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// KEYS: waiting. ARGV: bound, event... Appends while under the bound; returns how
/// many were dropped.
const PUSH: &str = r#"
local bound = tonumber(ARGV[1])
local n = redis.call('LLEN', KEYS[1])
local dropped = 0
for i = 2, #ARGV do
  if n < bound then
    redis.call('RPUSH', KEYS[1], ARGV[i])
    n = n + 1
  else
    dropped = dropped + 1
  end
end
return dropped
"#;

/// KEYS: waiting, sending. The event this node is sending, else the oldest waiting
/// one, moved to the node's sending list.
const CLAIM: &str = r#"
local mine = redis.call('LINDEX', KEYS[2], 0)
if mine then return mine end
return redis.call('LMOVE', KEYS[1], KEYS[2], 'LEFT', 'RIGHT')
"#;

fn store_err(e: impl std::fmt::Display) -> QueueError {
    QueueError::Store(format!("redis: {e}"))
}

/// Webhook events waiting in Redis, shared by the nodes of a cluster.
#[derive(Clone)]
pub struct RedisQueue {
    conn: ConnectionManager,
    sending: String,
    push: Script,
    claim: Script,
}

impl std::fmt::Debug for RedisQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisQueue")
            .field("sending", &self.sending)
            .finish_non_exhaustive()
    }
}

impl RedisQueue {
    /// Connects to Redis at `url` as node `node`.
    pub async fn connect(url: &str, node: &str) -> Result<Self, QueueError> {
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
        Ok(RedisQueue {
            conn,
            sending: format!("{WAITING}:sending:{node}"),
            push: Script::new(PUSH),
            claim: Script::new(CLAIM),
        })
    }

    async fn call<T>(
        &self,
        fut: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, QueueError> {
        match tokio::time::timeout(COMMAND_TIMEOUT, fut).await {
            Ok(result) => result.map_err(store_err),
            Err(_) => Err(store_err(format!("no answer within {COMMAND_TIMEOUT:?}"))),
        }
    }
}

#[async_trait]
impl Queue for RedisQueue {
    async fn push(&self, events: Vec<Vec<u8>>, bound: usize) -> Result<usize, QueueError> {
        let mut invocation = self.push.key(WAITING);
        invocation.arg(bound);
        for event in &events {
            invocation.arg(event.as_slice());
        }
        let mut conn = self.conn.clone();
        self.call(invocation.invoke_async::<usize>(&mut conn)).await
    }

    async fn peek(&self) -> Result<Option<(u64, Vec<u8>)>, QueueError> {
        let mut invocation = self.claim.key(WAITING);
        invocation.key(&self.sending);
        let mut conn = self.conn.clone();
        let event: Option<Vec<u8>> = self.call(invocation.invoke_async(&mut conn)).await?;
        // One event at most is being sent by a node: key 0 names it.
        Ok(event.map(|e| (0, e)))
    }

    async fn remove(&self, _key: u64) -> Result<(), QueueError> {
        let mut conn = self.conn.clone();
        let cmd = redis::cmd("LPOP").arg(&self.sending).clone();
        self.call(cmd.query_async::<Option<Vec<u8>>>(&mut conn))
            .await
            .map(drop)
    }

    async fn waiting(&self) -> Result<u64, QueueError> {
        let mut conn = self.conn.clone();
        let cmd = redis::cmd("LLEN").arg(WAITING).clone();
        self.call(cmd.query_async(&mut conn)).await
    }
}
