//! What both floors share (`floor_server.rs` on wtransport, `loop_floor.rs` on
//! the event loop): the room registry and the frames they answer with, so the
//! two differ only in the transport they measure.

use std::collections::HashMap;

use bytes::Bytes;
use wtgate::protocol::{encode_datagram, frame_bytes, Datagram, ServerFrame, DEFAULT_MAX_FRAME};

/// A room: its handle (its index among rooms), last seq and members.
pub struct Room<M> {
    pub handle: u32,
    pub seq: u64,
    pub members: Vec<M>,
}

/// Rooms by name, with handles in the order they were made.
pub struct Rooms<M> {
    by_name: HashMap<String, Room<M>>,
    names: Vec<String>,
}

impl<M> Default for Rooms<M> {
    fn default() -> Self {
        Rooms {
            by_name: HashMap::new(),
            names: Vec::new(),
        }
    }
}

impl<M> Rooms<M> {
    /// Adds `member` to `room` (made on first join); its handle and last seq.
    pub fn join(&mut self, room: &str, member: M) -> (u32, u64) {
        let next = self.names.len() as u32;
        let r = self.by_name.entry(room.to_owned()).or_insert_with(|| Room {
            handle: next,
            seq: 0,
            members: Vec::new(),
        });
        if r.handle == next {
            self.names.push(room.to_owned());
        }
        r.members.push(member);
        (r.handle, r.seq)
    }

    /// Removes the members `is_gone` picks from `room`.
    pub fn leave(&mut self, room: &str, is_gone: impl Fn(&M) -> bool) {
        if let Some(r) = self.by_name.get_mut(room) {
            r.members.retain(|m| !is_gone(m));
        }
    }

    /// The next message of `room`: the room's handle, the message's seq, its
    /// frame (encoded once) and the members to queue it for.
    pub fn publish(
        &mut self,
        room: &str,
        from: &str,
        body: Bytes,
    ) -> Option<(u32, u64, Bytes, &[M])> {
        let r = self.by_name.get_mut(room)?;
        r.seq += 1;
        let frame = frame_bytes(&ServerFrame::Message {
            seq: r.seq,
            from: from.to_owned(),
            body,
            ts: unix_ms(),
        });
        Some((r.handle, r.seq, frame, &r.members))
    }

    /// A volatile event for the room of `handle`: the encoded datagram and the
    /// members to send it to.
    pub fn volatile(&self, handle: u32, from: &str, body: Bytes) -> Option<(Bytes, &[M])> {
        let r = self.by_name.get(self.names.get(handle as usize)?)?;
        let payload = encode_datagram(&Datagram::Recv {
            handle,
            from: from.to_owned(),
            body,
        });
        Some((payload, &r.members))
    }
}

/// `Welcome` for session `id`, whose user is `user` (no token check).
pub fn welcome(id: u64, user: &str) -> Bytes {
    frame_bytes(&ServerFrame::Welcome {
        session: id,
        user: user.to_owned(),
        max_frame: DEFAULT_MAX_FRAME as u32,
        online: None,
    })
}

/// `Joined` for a join of `room`, which has `handle` and last `seq`.
pub fn joined(req: u32, room: String, handle: u32, seq: u64) -> ServerFrame {
    ServerFrame::Joined {
        req,
        room,
        handle,
        epoch: 1,
        seq,
        recovered: false,
        members: vec![],
    }
}

/// The first frame of a room stream.
pub fn room_stream(room: &str, handle: u32) -> Bytes {
    frame_bytes(&ServerFrame::RoomStream {
        room: room.to_owned(),
        handle,
    })
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
