//! The WebSocket mapping's byte-exact vectors (PROTOCOL.md §16.5), shared with the
//! JavaScript client: each lane message encodes to exactly its `hex` and parses back.
//!
//! Regenerating (only to add vectors; existing ones never change):
//! `WTGATE_VECTORS_OUT=tests/vectors cargo test --test lanes -- --ignored generate`

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use wtgate::protocol::lane::{self, Lane};
use wtgate::protocol::{encode_datagram, frame_bytes, ClientFrame, Datagram, ServerFrame};

const FILE: &str = "websocket.json";

/// One vector: the whole WebSocket message payload for a frame on a lane.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct Vector {
    name: String,
    /// `control`, `room`, `room_end` or `volatile`.
    lane: String,
    /// `ClientFrame`, `ServerFrame`, `Datagram`, or null for `room_end`.
    r#type: Option<String>,
    handle: Option<u32>,
    frame: Value,
    hex: String,
}

enum Case {
    Client(ClientFrame),
    Server(ServerFrame),
    Room(u32, ServerFrame),
    RoomEnd(u32),
    Volatile(Datagram),
}

fn b(bytes: &[u8]) -> Bytes {
    Bytes::copy_from_slice(bytes)
}

#[rustfmt::skip]
fn cases() -> Vec<(&'static str, Case)> {
    use Case::*;
    vec![
        ("control_hello", Client(ClientFrame::Hello { version: 1, token: "abc".into() })),
        ("control_publish", Client(ClientFrame::Publish { req: 2, room: "lobby".into(), body: b(b"hi") })),
        ("control_publish_body_200", Client(ClientFrame::Publish { req: 300, room: "lobby".into(), body: (0..200u16).map(|i| i as u8).collect() })),
        ("control_welcome", Server(ServerFrame::Welcome { session: 1, user: "alice".into(), max_frame: 65_536, online: None })),
        ("control_ack", Server(ServerFrame::Ack { req: 2, seq: 42 })),
        ("control_error", Server(ServerFrame::Error { req: 0, code: wtgate::protocol::ErrorCode::Protocol, message: "bad".into() })),
        ("room_stream", Room(0, ServerFrame::RoomStream { room: "lobby".into(), handle: 0 })),
        ("room_message", Room(0, ServerFrame::Message { seq: 1, from: "alice".into(), body: b(b"hello"), ts: 1_700_000_000_000 })),
        ("room_message_handle_300", Room(300, ServerFrame::Message { seq: 7, from: "bob".into(), body: Bytes::new(), ts: 0 })),
        ("room_presence_join", Room(1, ServerFrame::PresenceJoin { user: "bob".into() })),
        ("room_presence_leave", Room(1, ServerFrame::PresenceLeave { user: "bob".into() })),
        ("room_end", RoomEnd(0)),
        ("room_end_handle_300", RoomEnd(300)),
        ("volatile_send", Volatile(Datagram::Send { handle: 0, body: b(&[1, 2, 3]) })),
        ("volatile_recv", Volatile(Datagram::Recv { handle: 128, from: "alice".into(), body: b(b"typing") })),
    ]
}

fn vector(name: &str, case: &Case) -> Vector {
    let (lane, r#type, handle, frame, message) = match case {
        Case::Client(f) => (
            "control",
            Some("ClientFrame"),
            None,
            to_json(f),
            lane::control_message(f),
        ),
        Case::Server(f) => (
            "control",
            Some("ServerFrame"),
            None,
            to_json(f),
            lane::control(&frame_bytes(f)),
        ),
        Case::Room(h, f) => (
            "room",
            Some("ServerFrame"),
            Some(*h),
            to_json(f),
            lane::room(*h, &frame_bytes(f)),
        ),
        Case::RoomEnd(h) => ("room_end", None, Some(*h), Value::Null, lane::room_end(*h)),
        Case::Volatile(d) => (
            "volatile",
            Some("Datagram"),
            None,
            to_json(d),
            lane::volatile(&encode_datagram(d)),
        ),
    };
    Vector {
        name: name.into(),
        lane: lane.into(),
        r#type: r#type.map(Into::into),
        handle,
        frame,
        hex: hex::encode(message),
    }
}

fn to_json<T: Serialize>(frame: &T) -> Value {
    serde_json::to_value(frame).unwrap()
}

/// Parses a vector's message back into the frame it names.
fn parse_back(v: &Vector) -> Value {
    let bytes = hex::decode(&v.hex).unwrap();
    match (lane::parse(&bytes).unwrap(), v.r#type.as_deref()) {
        (Lane::Control(body), Some("ClientFrame")) => {
            to_json(&lane::decode_control::<ClientFrame>(body).unwrap())
        }
        (Lane::Control(body), Some("ServerFrame")) => {
            to_json(&lane::decode_control::<ServerFrame>(body).unwrap())
        }
        (Lane::Room { handle, body }, Some("ServerFrame")) => {
            assert_eq!(Some(handle), v.handle, "{}: handle", v.name);
            to_json(&lane::decode_control::<ServerFrame>(body).unwrap())
        }
        (Lane::RoomEnd { handle }, None) => {
            assert_eq!(Some(handle), v.handle, "{}: handle", v.name);
            Value::Null
        }
        (Lane::Volatile(body), Some("Datagram")) => {
            to_json(&wtgate::protocol::decode_datagram(body).unwrap())
        }
        (lane, ty) => panic!("{}: lane {lane:?} does not carry {ty:?}", v.name),
    }
}

fn path() -> String {
    format!("{}/tests/vectors/{FILE}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn websocket_vectors_encode_and_parse_exactly() {
    let text = std::fs::read_to_string(path()).unwrap();
    let stored: Vec<Vector> = serde_json::from_str(&text).unwrap();
    let expected: Vec<Vector> = cases().iter().map(|(n, c)| vector(n, c)).collect();
    for v in &stored {
        let ours = expected.iter().find(|e| e.name == v.name);
        assert_eq!(
            ours,
            Some(v),
            "{}: stored vector differs from the encoder",
            v.name
        );
        assert_eq!(parse_back(v), v.frame, "{}: parsing differs", v.name);
    }
    assert_eq!(
        stored.len(),
        expected.len(),
        "every case has a stored vector"
    );
    for lane in ["control", "room", "room_end", "volatile"] {
        assert!(
            stored.iter().any(|v| v.lane == lane),
            "no vector for lane {lane}"
        );
    }
}

#[test]
#[ignore = "writes tests/vectors/websocket.json; run by hand"]
fn generate() {
    let lines: Vec<String> = cases()
        .iter()
        .map(|(n, c)| format!("  {}", serde_json::to_string(&vector(n, c)).unwrap()))
        .collect();
    let text = format!("[\n{}\n]\n", lines.join(",\n"));
    match std::env::var("WTGATE_VECTORS_OUT") {
        Ok(dir) => std::fs::write(format!("{dir}/{FILE}"), text).unwrap(),
        Err(_) => println!("{text}"),
    }
}
