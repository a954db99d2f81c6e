//! What the cluster keeps in Redis and sends over its pub/sub: key and channel names,
//! presence tuples, and the payloads. Pure functions, so they are tested without Redis.
//!
//! Namespaces are `/[A-Za-z0-9_-]+` (no `:` and no space) and room names and user ids
//! have no whitespace, which keeps every name below unambiguous.
//!
//! | key | type | holds |
//! |---|---|---|
//! | `wtgate:room:{ns}:{room}` | hash | `epoch` (ms, Redis clock), `seq` (last assigned) |
//! | `wtgate:hist:{ns}:{room}` | list | the last `history` messages, `"{seq}:{record}"` |
//! | `wtgate:members:{ns}:{room}` | hash | user → number of nodes where the user is in the room |
//! | `wtgate:online:{ns}` | hash | user → number of nodes where the user is online |
//! | `wtgate:node:{node}` | set | the presence tuples the node contributed |
//! | `wtgate:nodes` | sorted set | node → heartbeat deadline (ms, Redis clock) |
//!
//! Channels: `wtgate:ch:room:{ns}:{room}` (messages, presence, volatile events of one
//! room; a node subscribes while it has members there) and `wtgate:ch:all` (online
//! presence, broadcasts, notifications, disconnects; every node subscribes).

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::protocol::{frame_bytes, ServerFrame};

/// Prefix of every key and channel; Lua scripts get it as `ARGV[1]`.
pub(super) const PREFIX: &str = "wtgate:";

/// A room's epoch and seq counter.
pub(super) fn room_key(ns: &str, room: &str) -> String {
    format!("{PREFIX}room:{ns}:{room}")
}

/// A room's history list.
pub(super) fn hist_key(ns: &str, room: &str) -> String {
    format!("{PREFIX}hist:{ns}:{room}")
}

/// A room's cluster-wide members.
pub(super) fn members_key(ns: &str, room: &str) -> String {
    format!("{PREFIX}members:{ns}:{room}")
}

/// A namespace's cluster-wide online users.
pub(super) fn online_key(ns: &str) -> String {
    format!("{PREFIX}online:{ns}")
}

/// The sorted set beside a presence count hash (`members:…`, `online:…`), for
/// reading its users a page at a time (kept by the presence scripts).
pub(super) fn index_key(hash_key: &str) -> String {
    let name = hash_key.strip_prefix(PREFIX).unwrap_or(hash_key);
    format!("{PREFIX}index:{name}")
}

const ROOM_CHANNEL: &str = "wtgate:ch:room:";

/// The pub/sub channel of one room.
pub(super) fn room_channel(ns: &str, room: &str) -> String {
    format!("{ROOM_CHANNEL}{ns}:{room}")
}

/// The pub/sub channel every node listens to.
pub(super) const ALL_CHANNEL: &str = "wtgate:ch:all";

/// `(ns, room)` of a room channel.
pub(super) fn parse_room_channel(channel: &str) -> Option<(&str, &str)> {
    channel.strip_prefix(ROOM_CHANNEL)?.split_once(':')
}

/// A node's presence in a room, as stored in its `node:` set (parsed by Lua).
pub(super) fn room_tuple(ns: &str, room: &str, user: &str) -> String {
    format!("r{ns} {room} {user}")
}

/// A node's presence in a namespace, as stored in its `node:` set (parsed by Lua).
pub(super) fn online_tuple(ns: &str, user: &str) -> String {
    format!("o{ns} {user}")
}

/// A stored room message without its seq, which Redis assigns:
/// history holds `"{seq}:{record}"`, the room channel `"M{epoch}:{seq}:{record}"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Record {
    /// Publisher.
    pub(super) from: String,
    /// Payload.
    pub(super) body: Bytes,
    /// Publish time, ms since the Unix epoch.
    pub(super) ts: u64,
}

impl Record {
    pub(super) fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("a record always encodes")
    }

    /// The `Message` frame carrying this record as `seq`.
    pub(super) fn frame(self, seq: u64) -> Bytes {
        frame_bytes(&ServerFrame::Message {
            seq,
            from: self.from,
            body: self.body,
            ts: self.ts,
        })
    }
}

/// Splits `"{seq}:{rest}"`.
fn split_seq(entry: &[u8]) -> Option<(u64, &[u8])> {
    let colon = entry.iter().position(|&b| b == b':')?;
    let seq = std::str::from_utf8(&entry[..colon]).ok()?.parse().ok()?;
    Some((seq, &entry[colon + 1..]))
}

/// A history entry `"{seq}:{record}"` as its seq and `Message` frame.
pub(super) fn history_frame(entry: &[u8]) -> Option<(u64, Bytes)> {
    let (seq, record) = split_seq(entry)?;
    let record: Record = postcard::from_bytes(record).ok()?;
    Some((seq, record.frame(seq)))
}

/// A volatile event on a room channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Volatile {
    /// The sending node, which delivered to its own sessions already.
    pub(super) node: String,
    /// Sender's user id.
    pub(super) from: String,
    /// Payload.
    pub(super) body: Bytes,
}

/// What arrives on a room channel.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum RoomEvent {
    /// `M{epoch}:{seq}:{record}`, published by the publish script.
    Message {
        /// The room life the seq belongs to.
        epoch: u64,
        /// Its seq.
        seq: u64,
        /// The `Message` frame, encoded here once for every local member.
        frame: Bytes,
    },
    /// `P1{user}` / `P0{user}`, published by the presence scripts.
    Presence {
        /// Who.
        user: String,
        /// Entered (true) or left the room cluster-wide.
        joined: bool,
    },
    /// `V` + postcard, from a node's volatile publisher.
    Volatile(Volatile),
}

/// Encodes a volatile event for a room channel.
pub(super) fn volatile_payload(v: &Volatile) -> Vec<u8> {
    tagged(b'V', v)
}

/// Parses a room channel payload.
pub(super) fn decode_room(payload: &[u8]) -> Option<RoomEvent> {
    let (&tag, rest) = payload.split_first()?;
    match tag {
        b'M' => {
            let colon = rest.iter().position(|&b| b == b':')?;
            let epoch = std::str::from_utf8(&rest[..colon]).ok()?.parse().ok()?;
            let (seq, record) = split_seq(&rest[colon + 1..])?;
            let record: Record = postcard::from_bytes(record).ok()?;
            Some(RoomEvent::Message {
                epoch,
                seq,
                frame: record.frame(seq),
            })
        }
        b'P' => {
            let (joined, user) = flag_and_rest(rest)?;
            Some(RoomEvent::Presence {
                user: user.to_owned(),
                joined,
            })
        }
        b'V' => postcard::from_bytes(rest).ok().map(RoomEvent::Volatile),
        _ => None,
    }
}

/// What arrives on the channel of all nodes.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum NodeEvent {
    /// `O1{ns} {user}` / `O0{ns} {user}`, published by the presence scripts.
    Online {
        /// Namespace.
        ns: String,
        /// Who.
        user: String,
        /// Came online (true) or went offline cluster-wide.
        joined: bool,
    },
    /// `B` + postcard.
    Broadcast(Broadcast),
    /// `N` + postcard.
    Notify(Notify),
    /// `D` + postcard.
    Disconnect(Disconnect),
    /// `C` + postcard: a node's answer to a [`Disconnect`].
    Disconnected(Disconnected),
}

/// A broadcast frame for every session of a namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Broadcast {
    /// Namespace.
    pub(super) ns: String,
    /// The encoded `Broadcast` frame.
    pub(super) frame: Bytes,
}

/// A stored notification for every session of a user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Notify {
    /// Recipient.
    pub(super) user: String,
    /// Inbox id.
    pub(super) id: u64,
    /// The encoded `Notification` frame.
    pub(super) frame: Bytes,
}

/// Close every session of a user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Disconnect {
    /// The node that asked (it closed its own sessions already).
    pub(super) node: String,
    /// Whose sessions.
    pub(super) user: String,
    /// Close code (`ErrorCode::to_code`).
    pub(super) code: u32,
    /// Names the request in the [`Disconnected`] answers.
    pub(super) request: u64,
}

/// How many sessions a node closed for a [`Disconnect`], for the asking node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Disconnected {
    /// The node that asked.
    pub(super) to: String,
    /// [`Disconnect::request`].
    pub(super) request: u64,
    /// Sessions closed on the answering node.
    pub(super) closed: u64,
}

/// Encodes an event for the channel of all nodes (not `Online`, which Lua sends).
pub(super) fn node_payload(event: &NodeEvent) -> Vec<u8> {
    match event {
        NodeEvent::Online { ns, user, joined } => {
            format!("O{}{ns} {user}", u8::from(*joined)).into_bytes()
        }
        NodeEvent::Broadcast(b) => tagged(b'B', b),
        NodeEvent::Notify(n) => tagged(b'N', n),
        NodeEvent::Disconnect(d) => tagged(b'D', d),
        NodeEvent::Disconnected(d) => tagged(b'C', d),
    }
}

/// Parses a payload of the channel of all nodes.
pub(super) fn decode_node(payload: &[u8]) -> Option<NodeEvent> {
    let (&tag, rest) = payload.split_first()?;
    match tag {
        b'O' => {
            let (joined, rest) = flag_and_rest(rest)?;
            let (ns, user) = rest.split_once(' ')?;
            Some(NodeEvent::Online {
                ns: ns.to_owned(),
                user: user.to_owned(),
                joined,
            })
        }
        b'B' => postcard::from_bytes(rest).ok().map(NodeEvent::Broadcast),
        b'N' => postcard::from_bytes(rest).ok().map(NodeEvent::Notify),
        b'D' => postcard::from_bytes(rest).ok().map(NodeEvent::Disconnect),
        b'C' => postcard::from_bytes(rest).ok().map(NodeEvent::Disconnected),
        _ => None,
    }
}

fn tagged(tag: u8, value: &impl Serialize) -> Vec<u8> {
    let mut out = vec![tag];
    postcard::to_io(value, &mut out).expect("writing to a Vec cannot fail");
    out
}

fn flag_and_rest(rest: &[u8]) -> Option<(bool, &str)> {
    let (&flag, rest) = rest.split_first()?;
    let joined = match flag {
        b'1' => true,
        b'0' => false,
        _ => return None,
    };
    Some((joined, std::str::from_utf8(rest).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unambiguous() {
        assert_eq!(room_key("/chat", "a:b"), "wtgate:room:/chat:a:b");
        assert_eq!(hist_key("/chat", "r"), "wtgate:hist:/chat:r");
        let ch = room_channel("/chat", "a:b");
        assert_eq!(parse_room_channel(&ch), Some(("/chat", "a:b")));
        assert_eq!(parse_room_channel(ALL_CHANNEL), None);
        assert_eq!(room_tuple("/chat", "lobby", "ann"), "r/chat lobby ann");
        assert_eq!(online_tuple("/chat", "ann"), "o/chat ann");
    }

    #[test]
    fn messages_as_lua_writes_them() {
        let record = Record {
            from: "ann".into(),
            body: Bytes::from_static(b"hi:there"),
            ts: 7,
        };
        let mut entry = b"42:".to_vec();
        entry.extend(record.encode());
        let expected = record.clone().frame(42);
        assert_eq!(history_frame(&entry), Some((42, expected.clone())));

        let mut published = b"M1700000000000:".to_vec();
        published.extend(&entry);
        assert_eq!(
            decode_room(&published),
            Some(RoomEvent::Message {
                epoch: 1_700_000_000_000,
                seq: 42,
                frame: expected,
            })
        );
        assert_eq!(history_frame(b"x:1"), None);
        assert_eq!(decode_room(b"M12:"), None);
    }

    #[test]
    fn presence_as_lua_writes_it() {
        assert_eq!(
            decode_room(b"P1ann"),
            Some(RoomEvent::Presence {
                user: "ann".into(),
                joined: true
            })
        );
        let online = NodeEvent::Online {
            ns: "/chat".into(),
            user: "bob".into(),
            joined: false,
        };
        assert_eq!(node_payload(&online), b"O0/chat bob");
        assert_eq!(decode_node(b"O0/chat bob"), Some(online));
        assert_eq!(decode_room(b"P2ann"), None);
    }

    #[test]
    fn rust_events_round_trip() {
        let v = Volatile {
            node: "n1".into(),
            from: "ann".into(),
            body: Bytes::from_static(b"\x00\x01"),
        };
        assert_eq!(
            decode_room(&volatile_payload(&v)),
            Some(RoomEvent::Volatile(v))
        );
        for event in [
            NodeEvent::Broadcast(Broadcast {
                ns: "/chat".into(),
                frame: Bytes::from_static(b"f"),
            }),
            NodeEvent::Notify(Notify {
                user: "ann".into(),
                id: 3,
                frame: Bytes::from_static(b"n"),
            }),
            NodeEvent::Disconnect(Disconnect {
                node: "n2".into(),
                user: "bob".into(),
                code: 4,
                request: 7,
            }),
            NodeEvent::Disconnected(Disconnected {
                to: "n1".into(),
                request: 7,
                closed: 2,
            }),
        ] {
            assert_eq!(decode_node(&node_payload(&event)).as_ref(), Some(&event));
        }
        assert_eq!(decode_node(b""), None);
        assert_eq!(decode_node(b"Zjunk"), None);
    }
}
