//! The tail probe of PROTOCOL.md §10.1: a one-byte datagram [`PROBE_AFTER`]
//! after the last write on the control stream. A request is usually the last
//! thing a client sends for a while; if its packet is lost, the probe's packet
//! reveals the gap and QUIC re-sends it at once instead of after its probe
//! timeout.

use std::sync::Arc;

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use wtransport::Connection;

use crate::protocol::{PROBE_AFTER, PROBE_DATAGRAM};

/// Starts the prober of `conn`; notify the returned [`Notify`] after each write.
pub(crate) fn spawn(conn: Connection) -> (Arc<Notify>, JoinHandle<()>) {
    let wrote = Arc::new(Notify::new());
    let task = tokio::spawn(probe(conn, wrote.clone()));
    (wrote, task)
}

/// Probes after each write. One probe leaves the loss of the probe itself, or of
/// the ACK it draws, to the probe timeout; a request fans out to a whole room,
/// so a second one is worth its few bytes.
const PROBES: usize = 2;

async fn probe(conn: Connection, wrote: Arc<Notify>) {
    loop {
        tokio::select! {
            _ = wrote.notified() => {}
            _ = conn.closed() => return,
        }
        let mut sent = 0;
        while sent < PROBES {
            // A later write starts over: its own packet reveals a loss.
            if tokio::time::timeout(PROBE_AFTER, wrote.notified())
                .await
                .is_ok()
            {
                sent = 0;
                continue;
            }
            // Without datagrams (or once closed) there is no probe to send.
            let _ = conn.send_datagram(PROBE_DATAGRAM);
            sent += 1;
        }
    }
}
