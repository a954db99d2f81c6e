//! `Join`: the refusals, then the hub and broker ([`Effect::Join`]), then the room
//! stream, then `Joined` (PROTOCOL.md §7.2, §7.3).

use bytes::BytesMut;
use tracing::debug;

use super::{Action, Effect, Refusal, Room, RoomJoin, Session};
use crate::hub::validate_room_name;
use crate::protocol::{encode_frame, frame_bytes, ErrorCode, ServerFrame, Since};

/// A join whose room stream the driver is opening.
#[derive(Debug)]
pub(super) struct Opening {
    req: u32,
    handle: u32,
    room: String,
    last_seq: u64,
    /// Sent once the stream is open.
    reply: ServerFrame,
}

impl Session {
    pub(super) fn join(&mut self, req: u32, room: String, since: Option<Since>) {
        match self.check_join(&room) {
            Ok(()) => self.join_checked_locally(req, room, since),
            Err(refusal) => self.refuse(req, refusal),
        }
    }

    fn check_join(&self, room: &str) -> Result<(), Refusal> {
        let limits = &self.rules.limits;
        validate_room_name(room, limits.max_room_name)
            .map_err(|e| Refusal::new(ErrorCode::InvalidRoom, e.to_string()))?;
        let claims = self.claims.as_ref();
        if !claims.is_some_and(|c| c.allows_room(room)) {
            return Err(Refusal::new(
                ErrorCode::Forbidden,
                format!("the token does not allow room {room}"),
            ));
        }
        if self.rooms.contains_key(room) {
            return Err(Refusal::new(
                ErrorCode::AlreadyJoined,
                format!("already in room {room}"),
            ));
        }
        if self.rooms.len() >= limits.max_rooms_per_session {
            return Err(Refusal::new(
                ErrorCode::TooManyRooms,
                format!(
                    "a session may join at most {} rooms",
                    limits.max_rooms_per_session
                ),
            ));
        }
        Ok(())
    }

    /// The hub and broker joined: the stream starts with `RoomStream` and the
    /// replayed messages, whose seqs then drop their live copies.
    pub(super) fn joined(
        &mut self,
        req: u32,
        room: String,
        since: Option<Since>,
        result: Result<RoomJoin, Refusal>,
    ) {
        let join = match result {
            Ok(join) => join,
            Err(refusal) => return self.refuse(req, refusal),
        };
        let handle = join.handle;
        let mut head = BytesMut::new();
        let start = ServerFrame::RoomStream {
            room: room.clone(),
            handle,
        };
        encode_frame(&start, &mut head);
        let recovered = since.is_some() && join.recovery.replay.is_some();
        let mut last_seq = 0;
        for (seq, frame) in join.recovery.replay.into_iter().flatten() {
            head.extend_from_slice(&frame);
            last_seq = seq;
        }
        debug!(room, handle, recovered, "joining");
        let reply = ServerFrame::Joined {
            req,
            room: room.clone(),
            handle,
            epoch: join.recovery.epoch,
            seq: join.recovery.last_seq,
            recovered,
            members: join.members,
        };
        self.opening = Some(Box::new(Opening {
            req,
            handle,
            room,
            last_seq,
            reply,
        }));
        self.actions.push_back(Action::OpenRoom {
            handle,
            head: head.freeze(),
        });
    }

    /// The driver opened the room's stream and wrote its head (`Ok`), or could
    /// not (`Err`, why): the join is answered, or undone and refused.
    pub(crate) fn room_opened(&mut self, handle: u32, result: Result<(), String>) {
        let Some(opening) = self.opening.take_if(|o| o.handle == handle) else {
            return;
        };
        match result {
            Ok(()) => {
                self.rooms.insert(opening.room.clone(), handle);
                self.handles.insert(
                    handle,
                    Room {
                        name: opening.room,
                        last_seq: opening.last_seq,
                    },
                );
                self.actions
                    .push_back(Action::Control(frame_bytes(&opening.reply)));
            }
            Err(message) => {
                self.actions.push_back(Action::Perform(Effect::LeaveRoom {
                    room: opening.room,
                    presence: self.ns_config.presence,
                }));
                self.refuse(opening.req, Refusal::new(ErrorCode::Internal, message));
            }
        }
    }
}
