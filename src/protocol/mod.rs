//! The wire protocol: frames exchanged on streams and datagrams.
//!
//! Frames are serde enums encoded with postcard. **Variant order is wire format**:
//! new variants are only ever appended, and `Hello.version` guards any other change.
//! `docs/PROTOCOL.md` is the normative description; `tests/vectors/` pins the bytes.

mod codec;
mod error;
pub mod lane;

pub use codec::{
    decode_datagram, decode_frame, encode_datagram, encode_frame, frame_bytes, CodecError, Frame,
};
pub(crate) use codec::{put_varint, read_varint_u64, varint_len};
pub use error::ErrorCode;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Protocol version a client announces in [`ClientFrame::Hello`].
pub const PROTOCOL_VERSION: u16 = 1;

/// Default upper bound on one encoded frame body (the length prefix excluded).
pub const DEFAULT_MAX_FRAME: usize = 64 * 1024;

/// Default largest body of a volatile event (`Datagram::Send`, lane 3 over a
/// WebSocket), the server's `limits.max_datagram_body`. It keeps a whole `Recv`
/// within one QUIC datagram: Chrome drops datagrams over 1211 bytes, and a
/// `Recv` of this body with a 64-byte user id is at most 1097 (PROTOCOL.md §10).
/// The JS client mirrors it as `MAX_VOLATILE_BODY`.
pub const MAX_DATAGRAM_BODY: usize = 1024;

/// The most users one list of users holds (`Welcome.online`, `Joined.members`,
/// `Online`): the first ones in byte order; a list this long may go on, read with
/// [`ClientFrame::OnlinePage`] or [`ClientFrame::MembersPage`]. Bounds what a
/// session's arrival costs in a namespace or room of many users.
pub const ONLINE_PAGE: usize = 1000;

/// A position in a room's message sequence: the last message a client saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Since {
    /// `Joined.epoch` of the room when the client saw the message.
    pub epoch: u64,
    /// The message's `seq`.
    pub seq: u64,
}

/// Frames a client sends on its control stream (the first bidirectional stream).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientFrame {
    /// First frame of every session: protocol version and auth token.
    Hello {
        /// Must equal [`PROTOCOL_VERSION`].
        version: u16,
        /// HS256 JWT.
        token: String,
    },
    /// Join a room; `since` asks for the messages after that `seq` to be replayed.
    Join {
        /// Request id echoed in the reply.
        req: u32,
        /// Room name.
        room: String,
        /// Where the client left off, when it is rejoining.
        since: Option<Since>,
    },
    /// Leave a room.
    Leave {
        /// Request id echoed in the reply.
        req: u32,
        /// Room name.
        room: String,
    },
    /// Publish a message to a joined room; answered with [`ServerFrame::Ack`].
    Publish {
        /// Request id echoed in the reply.
        req: u32,
        /// Room name.
        room: String,
        /// Opaque application payload.
        body: Bytes,
    },
    /// Ask who is online in the namespace; answered with [`ServerFrame::Online`].
    Online {
        /// Request id echoed in the reply.
        req: u32,
    },
    /// The client has handled a notification: remove it from the user's inbox.
    /// Answered with `Ack { seq: 0 }`.
    AckNotification {
        /// Request id echoed in the reply.
        req: u32,
        /// The notification's id.
        id: u64,
    },
    /// Replaces the session's token before it expires (same user); answered with
    /// `Ack { seq: 0 }`. Without it the session closes with `TokenExpired` at `exp`.
    Refresh {
        /// Request id echoed in the reply.
        req: u32,
        /// The new token.
        token: String,
    },
    /// Calls `method` on the application's backend (the namespace's RPC hook);
    /// answered with [`ServerFrame::RpcReply`], or an `Error` with the same `req`.
    Rpc {
        /// Request id echoed in the reply.
        req: u32,
        /// The backend's method name, e.g. `history.search`.
        method: String,
        /// Opaque argument, passed to the backend as is.
        body: Bytes,
    },
    /// Reads who is online in the namespace page by page: the users after `after`
    /// in byte order, at most `limit` (and at most [`ONLINE_PAGE`]); answered with
    /// [`ServerFrame::Online`]. A page shorter than asked is the last.
    OnlinePage {
        /// Request id echoed in the reply.
        req: u32,
        /// The last user of the previous page; empty for the first page.
        after: String,
        /// Users wanted.
        limit: u32,
    },
    /// Reads the members of a joined room page by page, as [`ClientFrame::OnlinePage`]
    /// reads the namespace: the users after `after`, at most `limit` (and at most
    /// [`ONLINE_PAGE`]); answered with [`ServerFrame::Online`].
    MembersPage {
        /// Request id echoed in the reply.
        req: u32,
        /// A room the session is in, with presence.
        room: String,
        /// The last user of the previous page; empty for the first page.
        after: String,
        /// Users wanted.
        limit: u32,
    },
}

/// Frames the server sends: replies and namespace events on the control stream,
/// room traffic on each room's unidirectional stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServerFrame {
    /// Accepts a `Hello`.
    Welcome {
        /// Server-assigned session id (unique per server process).
        session: u64,
        /// The user id taken from the token's `sub`.
        user: String,
        /// Largest frame body the server accepts.
        max_frame: u32,
        /// Users online in the namespace, when namespace presence is enabled.
        online: Option<Vec<String>>,
    },
    /// A request succeeded; for `Publish`, `seq` is the message's sequence number.
    Ack {
        /// Request id.
        req: u32,
        /// Assigned sequence number (0 where none applies).
        seq: u64,
    },
    /// Reply to `Join`.
    Joined {
        /// Request id.
        req: u32,
        /// Room name.
        room: String,
        /// Room handle used by datagrams and the room stream header.
        handle: u32,
        /// Identifies this life of the room's sequence; a room whose history was
        /// dropped (idle expiry, restart) starts a new epoch and counts from 1 again.
        epoch: u64,
        /// Last sequence number of the room when joined.
        seq: u64,
        /// With `since`: whether every missed message is replayed on the room stream.
        recovered: bool,
        /// Users currently in the room (the joiner included): the first
        /// [`ONLINE_PAGE`] in byte order; a full page goes on with
        /// [`ClientFrame::MembersPage`].
        members: Vec<String>,
    },
    /// Reply to `Leave`.
    Left {
        /// Request id.
        req: u32,
        /// Room name.
        room: String,
    },
    /// A request failed (`req` ≠ 0), or something not tied to a request went wrong
    /// (`req` 0); whether the session is then closed follows from the code
    /// ([`ErrorCode::is_fatal`]).
    Error {
        /// Request id, or 0 when not tied to a request.
        req: u32,
        /// Machine-readable reason; also used as the session close code.
        code: ErrorCode,
        /// Human-readable detail.
        message: String,
    },
    /// First frame on a room stream: which room the stream carries.
    RoomStream {
        /// Room name.
        room: String,
        /// Room handle, as in `Joined`.
        handle: u32,
    },
    /// A room message (on the room stream).
    Message {
        /// Per-room sequence number, strictly increasing.
        seq: u64,
        /// Publisher's user id (`"server"` for server-side publishes).
        from: String,
        /// Opaque payload.
        body: Bytes,
        /// Server time at publish, milliseconds since the Unix epoch.
        ts: u64,
    },
    /// A user entered the room (their first session in it).
    PresenceJoin {
        /// User id.
        user: String,
    },
    /// A user left the room (their last session in it).
    PresenceLeave {
        /// User id.
        user: String,
    },
    /// Reply to `Online`, `OnlinePage` and `MembersPage`: a page of users.
    Online {
        /// Request id.
        req: u32,
        /// Users online in the namespace, or in the room for `MembersPage`.
        users: Vec<String>,
    },
    /// A user came online in the namespace (namespace presence).
    OnlineJoin {
        /// User id.
        user: String,
    },
    /// A user went offline in the namespace (namespace presence).
    OnlineLeave {
        /// User id.
        user: String,
    },
    /// A namespace-wide broadcast (server push, e.g. announcements).
    Broadcast {
        /// Sender (`"server"` for pushes through the server).
        from: String,
        /// Opaque payload.
        body: Bytes,
        /// Server time, milliseconds since the Unix epoch.
        ts: u64,
    },
    /// The server is shutting down or moving the client away; reconnect later.
    GoAway {
        /// Human-readable reason.
        message: String,
    },
    /// A notification from the user's inbox (on the control stream of a
    /// notifications namespace); it is redelivered until acknowledged.
    Notification {
        /// Inbox id, increasing per user; clients drop duplicates by id.
        id: u64,
        /// Application-defined kind (e.g. `"mention"`).
        kind: String,
        /// Opaque payload.
        body: Bytes,
        /// Server time when it was stored, milliseconds since the Unix epoch.
        ts: u64,
    },
    /// The backend's answer to an `Rpc`.
    RpcReply {
        /// Request id.
        req: u32,
        /// Opaque result, as the backend returned it.
        body: Bytes,
    },
    /// What the application's connect hook attached to the session; sent right
    /// before `Welcome` when the hook returned data.
    ConnectInfo {
        /// Opaque data, as the backend returned it.
        data: Bytes,
    },
    /// Several users entered or left the room (on the room stream): what changed
    /// while the room churned, sent at once instead of a frame per user.
    PresenceBatch {
        /// Users who entered (their first session in the room).
        joins: Vec<String>,
        /// Users who left (their last session in the room).
        leaves: Vec<String>,
    },
}

/// A tail-loss probe (PROTOCOL.md §10.1): the one-byte datagram of the reserved
/// `Datagram` variant index 2, which a server drops. The packet that carries it
/// is what counts: it reveals a lost packet before it at once, where a lost last
/// packet would wait for QUIC's probe timeout.
pub const PROBE_DATAGRAM: [u8; 1] = [2];

/// How long after its last stream data a sender probes (PROTOCOL.md §10.1): long
/// enough to let more data reveal a loss itself, short beside a probe timeout.
pub const PROBE_AFTER: std::time::Duration = std::time::Duration::from_millis(1);

/// Volatile frames, one per QUIC datagram; never retransmitted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Datagram {
    /// Client → server: deliver `body` to the other members of the room.
    Send {
        /// Room handle from `Joined`.
        handle: u32,
        /// Opaque payload.
        body: Bytes,
    },
    /// Server → client: a volatile event from another member of the room.
    Recv {
        /// Room handle from `Joined`.
        handle: u32,
        /// Sender's user id.
        from: String,
        /// Opaque payload.
        body: Bytes,
    },
}

#[cfg(test)]
mod tests {
    use super::MAX_DATAGRAM_BODY;

    /// The JS client cannot import the constant, so its copy is checked here.
    #[test]
    fn the_js_client_has_the_same_volatile_limit() {
        let session_js = include_str!("../../web-client/session.js");
        let line = format!("export const MAX_VOLATILE_BODY = {MAX_DATAGRAM_BODY};");
        assert!(
            session_js.contains(&line),
            "web-client/session.js lacks {line:?}"
        );
    }
}
