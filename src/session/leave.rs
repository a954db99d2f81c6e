//! `Leave`, and a room stream the client stopped (PROTOCOL.md §1.3, §7.5).

use tracing::debug;

use super::{Action, Effect, Refusal, Session};
use crate::protocol::{ErrorCode, ServerFrame};

impl Session {
    /// Finishes the room's stream (what was written still arrives), leaves the
    /// room, then answers `Left`.
    pub(super) fn leave(&mut self, req: u32, room: String) {
        let Some(handle) = self.rooms.remove(&room) else {
            let message = format!("not in room {room}");
            return self.refuse(req, Refusal::new(ErrorCode::NotJoined, message));
        };
        self.handles.remove(&handle);
        self.actions.push_back(Action::FinishRoom { handle });
        self.actions.push_back(Action::Perform(Effect::LeaveRoom {
            room: room.clone(),
            presence: self.ns_config.presence,
        }));
        self.queue_frame(&ServerFrame::Left { req, room });
    }

    /// A write to the room's stream failed because the client stopped it: that
    /// is leaving the room, without a `Left`.
    pub(crate) fn room_stopped(&mut self, handle: u32) {
        let Some(room) = self.handles.remove(&handle) else {
            return;
        };
        debug!(room = room.name, "client stopped the room stream");
        self.rooms.remove(&room.name);
        self.actions.push_back(Action::Perform(Effect::LeaveRoom {
            room: room.name,
            presence: self.ns_config.presence,
        }));
    }
}
