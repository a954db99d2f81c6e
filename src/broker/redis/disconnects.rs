//! Cross-node disconnects that count: the asking node publishes a `Disconnect` with a
//! request id, every other node closes its sessions of the user and answers how many
//! on the same channel, and the asker adds the answers up — so `/api/disconnect`
//! reports the sessions closed anywhere in the cluster, not only its own.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use redis::aio::ConnectionManager;
use tokio::sync::mpsc;
use tracing::debug;

use super::wire::{self, NodeEvent};

/// How long the asking node waits for the other nodes' answers; a node that does not
/// answer in time (dying, or cut off from Redis) is left out of the count.
pub(super) const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

/// Requests of this node waiting for answers, by request id.
#[derive(Default)]
pub(super) struct Pending {
    /// A std mutex: held only to insert, remove or look up, never across an await.
    waiting: Mutex<HashMap<u64, mpsc::UnboundedSender<u64>>>,
}

/// One request's answers; forgets the request when dropped.
pub(super) struct Answers<'a> {
    pending: &'a Pending,
    request: u64,
    rx: mpsc::UnboundedReceiver<u64>,
}

impl Pending {
    /// A new request id and the receiver of its answers.
    pub(super) fn register(&self) -> Answers<'_> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut waiting = self.waiting.lock().expect("pending disconnects");
        let request = loop {
            let id = rand::random::<u64>();
            if !waiting.contains_key(&id) {
                break id;
            }
        };
        waiting.insert(request, tx);
        Answers {
            pending: self,
            request,
            rx,
        }
    }

    /// Hands a node's answer to the waiting request (late answers are dropped).
    pub(super) fn answer(&self, request: u64, closed: u64) {
        let waiting = self.waiting.lock().expect("pending disconnects");
        if let Some(tx) = waiting.get(&request) {
            let _ = tx.send(closed);
        }
    }
}

impl Answers<'_> {
    /// The request id to publish.
    pub(super) fn request(&self) -> u64 {
        self.request
    }

    /// The sum of up to `nodes` answers, waiting at most `timeout` in all.
    pub(super) async fn sum(mut self, nodes: usize, timeout: Duration) -> u64 {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut closed = 0;
        for answered in 0..nodes {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(n)) => closed += n,
                _ => {
                    debug!(answered, nodes, "not every node answered the disconnect");
                    break;
                }
            }
        }
        closed
    }
}

impl Drop for Answers<'_> {
    fn drop(&mut self) {
        if let Ok(mut waiting) = self.pending.waiting.lock() {
            waiting.remove(&self.request);
        }
    }
}

/// Publishes a node's answer (from the subscriber, which cannot wait for Redis).
pub(super) async fn send_answer(mut conn: ConnectionManager, answer: wire::Disconnected) {
    let payload = wire::node_payload(&NodeEvent::Disconnected(answer));
    let mut cmd = redis::cmd("PUBLISH");
    cmd.arg(wire::ALL_CHANNEL).arg(payload);
    match tokio::time::timeout(ANSWER_TIMEOUT, cmd.query_async::<()>(&mut conn)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => debug!("disconnect answer not sent: {e}"),
        Err(_) => debug!("disconnect answer not sent within {ANSWER_TIMEOUT:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn answers_add_up_and_late_ones_are_dropped() {
        let pending = Pending::default();
        let answers = pending.register();
        let request = answers.request();
        pending.answer(request, 2);
        pending.answer(request ^ 1, 5); // another request's
        pending.answer(request, 1);
        assert_eq!(answers.sum(2, Duration::from_secs(1)).await, 3);
        assert!(pending.waiting.lock().unwrap().is_empty());
        pending.answer(request, 9); // after the request ended: ignored

        let answers = pending.register();
        pending.answer(answers.request(), 4);
        // Three nodes expected, one answers: the count so far, after the timeout.
        assert_eq!(answers.sum(3, Duration::from_millis(50)).await, 4);
    }
}
