//! Notifications: live copies of what the inbox replayed are dropped by id, and
//! `AckNotification` removes one from the user's inbox (PROTOCOL.md §9.2).

use super::{Action, Effect, Refusal, Session};
use crate::notify::InboxError;
use crate::protocol::{ErrorCode, ServerFrame};

impl Session {
    /// Whether notification `id` is new to this session (ids increase per user);
    /// records it.
    pub(super) fn take_notification(&mut self, id: u64) -> bool {
        if id <= self.last_notification {
            return false;
        }
        self.last_notification = id;
        true
    }

    pub(super) fn ack_notification(&mut self, req: u32, id: u64) {
        if !self.ns_config.inbox {
            let message = format!("{} has no notification inbox", self.ns);
            return self.refuse(req, Refusal::new(ErrorCode::Forbidden, message));
        }
        self.actions
            .push_back(Action::Perform(Effect::AckNotification { req, id }));
    }

    pub(super) fn acked(&mut self, req: u32, result: Result<bool, InboxError>) {
        match result {
            Ok(removed) => {
                if removed {
                    self.metrics.notifications_acked.inc();
                }
                self.queue_frame(&ServerFrame::Ack { req, seq: 0 });
            }
            Err(e) => self.refuse(req, Refusal::new(ErrorCode::Internal, e.to_string())),
        }
    }
}
