//! Datagrams from the client: volatile, so anything not allowed is dropped
//! silently; only a malformed one ends the session (PROTOCOL.md §10).

use std::time::Instant;

use bytes::Bytes;
use tracing::debug;

use super::{Phase, Session};
use crate::protocol::{decode_datagram, CodecError, Datagram, ErrorCode, PROBE_DATAGRAM};

/// A volatile event to hand to the broker.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Volatile<'a> {
    /// The room it is for.
    pub(crate) room: &'a str,
    /// The sending user.
    pub(crate) from: &'a str,
    /// Its payload.
    pub(crate) body: Bytes,
}

impl Session {
    /// A datagram received at `now`: the event to forward to the room's other
    /// members, or `None` (dropped, or fatal: then a close is queued).
    pub(crate) fn handle_datagram(&mut self, now: Instant, payload: &[u8]) -> Option<Volatile<'_>> {
        self.metrics.datagrams_in.inc();
        if self.phase != Phase::Live {
            return None;
        }
        let (handle, body) = match decode_datagram(payload) {
            Ok(Datagram::Send { handle, body }) => (handle, body),
            Ok(Datagram::Recv { .. }) => {
                self.fatal(ErrorCode::Protocol, "clients send Datagram::Send only");
                return None;
            }
            // Its packet did its work on arrival.
            Err(CodecError::UnknownVariant(_)) if payload == PROBE_DATAGRAM => return None,
            // A newer client's volatile event type: dropping it is what volatile means.
            Err(CodecError::UnknownVariant(tag)) => {
                debug!(tag, "datagram of an unknown type; dropped");
                return None;
            }
            Err(e) => {
                self.fatal(ErrorCode::Protocol, format!("malformed datagram: {e}"));
                return None;
            }
        };
        let Some(room) = self.handles.get(&handle) else {
            debug!(handle, "datagram for a room not joined; dropped");
            self.metrics.datagrams_dropped.inc();
            return None;
        };
        if !self.ns_config.datagrams
            || body.len() > self.rules.limits.max_datagram_body
            || !self.datagram_bucket.try_take(now)
        {
            debug!(
                handle,
                len = body.len(),
                "datagram not allowed here; dropped"
            );
            self.metrics.datagrams_dropped.inc();
            return None;
        }
        Some(Volatile {
            room: &room.name,
            from: self.user(),
            body,
        })
    }
}
