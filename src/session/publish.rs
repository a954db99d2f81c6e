//! `Publish`: joined, allowed, within the rate; then the broker assigns the seq
//! (PROTOCOL.md §6, §12).

use std::time::Instant;

use bytes::Bytes;

use super::{Action, Effect, Refusal, Session};
use crate::broker::BrokerError;
use crate::protocol::{ErrorCode, ServerFrame, ONLINE_PAGE};

impl Session {
    /// Checks in the documented order: `NotJoined`, `Forbidden`, `RateLimited`;
    /// a publish refused for another reason takes no token.
    pub(super) fn publish(&mut self, now: Instant, req: u32, room: String, body: Bytes) {
        match self.check_publish(now, &room) {
            Ok(()) => self.publish_checked_locally(req, room, body),
            Err(refusal) => self.refuse(req, refusal),
        }
    }

    fn check_publish(&mut self, now: Instant, room: &str) -> Result<(), Refusal> {
        if !self.rooms.contains_key(room) {
            return Err(Refusal::new(
                ErrorCode::NotJoined,
                format!("join room {room} before publishing"),
            ));
        }
        if !self.ns_config.client_publish {
            return Err(Refusal::new(
                ErrorCode::Forbidden,
                format!("clients may not publish in {}", self.ns),
            ));
        }
        if !self.publish_bucket.try_take(now) {
            let limits = &self.rules.limits;
            return Err(Refusal::new(
                ErrorCode::RateLimited,
                format!(
                    "more than {} publishes per second (burst {})",
                    limits.publish_rate, limits.publish_burst
                ),
            ));
        }
        Ok(())
    }

    pub(super) fn published(&mut self, req: u32, result: Result<u64, BrokerError>) {
        match result {
            Ok(seq) => {
                self.metrics.message_in(&self.ns);
                self.queue_frame(&ServerFrame::Ack { req, seq });
            }
            Err(e) => self.refuse(req, Refusal::new(e.code(), e.to_string())),
        }
    }

    /// `Online`: who is online in the namespace, when namespace presence is on.
    /// `Online` (the first page) or `OnlinePage` (the users after `after`): at most
    /// [`ONLINE_PAGE`] users, whatever `limit` asks.
    pub(super) fn online(&mut self, req: u32, after: Option<String>, limit: u32) {
        if !self.ns_config.online {
            let message = format!("namespace presence is disabled in {}", self.ns);
            return self.refuse(req, Refusal::new(ErrorCode::Forbidden, message));
        }
        let limit = (limit as usize).min(ONLINE_PAGE);
        self.actions.push_back(Action::Perform(Effect::Online {
            req,
            room: None,
            after,
            limit,
        }));
    }

    /// `MembersPage`: the members of a room this session is in with presence, after
    /// `after`, at most [`ONLINE_PAGE`]; answered like `OnlinePage`.
    pub(super) fn members(&mut self, req: u32, room: String, after: String, limit: u32) {
        let Some(joined) = self.rooms.get(&room).and_then(|h| self.handles.get(h)) else {
            let message = format!("not in room {room}");
            return self.refuse(req, Refusal::new(ErrorCode::NotJoined, message));
        };
        if !(self.ns_config.presence && joined.presence) {
            let message = format!("room presence is off for this session in {room}");
            return self.refuse(req, Refusal::new(ErrorCode::Forbidden, message));
        }
        let limit = (limit as usize).min(ONLINE_PAGE);
        self.actions.push_back(Action::Perform(Effect::Online {
            req,
            room: Some(room),
            after: Some(after),
            limit,
        }));
    }

    pub(super) fn online_done(&mut self, req: u32, result: Result<Vec<String>, BrokerError>) {
        match result {
            Ok(users) => self.queue_frame(&ServerFrame::Online { req, users }),
            Err(e) => self.refuse(req, Refusal::new(e.code(), e.to_string())),
        }
    }
}
