//! The core's rules, without sockets and without sleeping: time is an argument.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::*;
use crate::auth::{mint, Claims, TokenVerifier};
use crate::broker::{BrokerError, BrokerHealth};
use crate::hub::{HubError, Recovery, Registered};
use crate::notify::Notification;
use crate::protocol::{
    decode_frame, encode_datagram, encode_frame, Datagram, Since, DEFAULT_MAX_FRAME, PROBE_DATAGRAM,
};

const SECRET: &[u8] = b"unit test secret";
/// The wall clock of these tests, unix seconds.
const UNIX: u64 = 1_700_000_000;
const MS: Duration = Duration::from_millis(1);

fn limits() -> Limits {
    Limits {
        publish_rate: 1.0,
        publish_burst: 2,
        datagram_rate: 1.0,
        datagram_burst: 2,
        command_rate: 2.0,
        command_burst: 20,
        max_rooms_per_session: 2,
        max_room_name: 8,
        ..Limits::default()
    }
}

fn new_session(ns_config: NamespaceConfig, t0: Instant) -> Session {
    let rules = Arc::new(Rules {
        limits: limits(),
        verifier: TokenVerifier::new(SECRET),
    });
    Session::new(
        7,
        "/chat".into(),
        ns_config,
        rules,
        Arc::new(Metrics::new([])),
        t0,
    )
}

fn token(claims: &Claims) -> String {
    mint(SECRET, claims).unwrap()
}

fn hello(token: String) -> ClientFrame {
    ClientFrame::Hello { version: 1, token }
}

/// Everything the core asks for, in order.
fn drain(s: &mut Session) -> Vec<Action> {
    std::iter::from_fn(|| s.poll_action()).collect()
}

fn decode(frame: &[u8]) -> ServerFrame {
    let mut buf = BytesMut::from(frame);
    decode_frame(&mut buf, DEFAULT_MAX_FRAME).unwrap().unwrap()
}

/// The control frames among `actions`, decoded.
fn control(actions: &[Action]) -> Vec<ServerFrame> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Control(frame) => Some(decode(frame)),
            _ => None,
        })
        .collect()
}

/// The only action, a close: its code and its frame, decoded.
fn closed(s: &mut Session) -> (ErrorCode, Option<ServerFrame>) {
    match drain(s).as_slice() {
        [Action::Close(close)] => (close.code, close.frame.as_deref().map(decode)),
        other => panic!("expected a close, got {other:?}"),
    }
}

/// The only action, an `Error` reply: its request and code.
fn refused(s: &mut Session) -> (u32, ErrorCode) {
    match control(&drain(s)).as_slice() {
        [ServerFrame::Error { req, code, .. }] => (*req, *code),
        other => panic!("expected an error, got {other:?}"),
    }
}

/// The only action, an effect.
fn effect(s: &mut Session) -> Effect {
    match drain(s).pop() {
        Some(Action::Perform(effect)) if s.poll_action().is_none() => effect,
        other => panic!("expected an effect, got {other:?}"),
    }
}

/// The token checked out: the core reads the revocation mark (here `mark`), then
/// asks to register.
fn revocation_checked(s: &mut Session, mark: Option<u64>) {
    assert!(matches!(effect(s), Effect::Revocation));
    s.complete(Outcome::Revocation(Ok(mark)));
    assert!(matches!(drain(s).as_slice(), [Action::Register]));
}

/// A session of `alice` past `Welcome`, at `t0`.
fn live_with(ns_config: NamespaceConfig, claims: Claims, t0: Instant) -> Session {
    let mut s = new_session(ns_config, t0);
    s.control_opened();
    s.handle_hello(t0, UNIX, hello(token(&claims)), BrokerHealth::Ok);
    revocation_checked(&mut s, None);
    s.registered(Ok(Registered {
        first_for_user: true,
    }));
    assert!(matches!(effect(&mut s), Effect::Welcome { .. }));
    assert!(s.departure().is_some());
    s.complete(Outcome::Welcome {
        online: None,
        pending: None,
    });
    assert!(matches!(
        control(&drain(&mut s)).as_slice(),
        [ServerFrame::Welcome { .. }]
    ));
    s
}

fn alice() -> Claims {
    Claims::new("alice", UNIX, 3600)
}

fn live(t0: Instant) -> Session {
    live_with(NamespaceConfig::default(), alice(), t0)
}

/// Joins `room` as handle `handle`, the broker replaying `replay`.
fn join_room(s: &mut Session, room: &str, handle: u32, replay: Option<Vec<(u64, Bytes)>>) {
    let since = replay.as_ref().map(|_| Since { epoch: 1, seq: 4 });
    s.handle_frame(
        Instant::now(),
        ClientFrame::Join {
            req: 1,
            room: room.into(),
            since,
        },
    );
    assert!(matches!(effect(s), Effect::Join { .. }));
    let last_seq = replay.as_ref().map_or(0, |r| r.last().map_or(4, |m| m.0));
    let recovery = Recovery {
        epoch: 1,
        last_seq,
        replay,
    };
    s.complete(Outcome::Joined {
        req: 1,
        room: room.into(),
        since,
        result: Ok(RoomJoin {
            handle,
            recovery,
            members: vec!["alice".into()],
        }),
    });
    assert!(matches!(drain(s).as_slice(), [Action::OpenRoom { handle: h, .. }] if *h == handle));
    s.room_opened(handle, Ok(()));
    assert!(matches!(
        control(&drain(s)).as_slice(),
        [ServerFrame::Joined { handle: h, .. }] if *h == handle
    ));
}

fn publish(s: &mut Session, now: Instant, req: u32, room: &str) {
    let body = Bytes::from_static(b"hi");
    let room = room.into();
    s.handle_frame(now, ClientFrame::Publish { req, room, body });
}

fn message(handle: u32, seq: u64) -> Outbound {
    Outbound::Room {
        handle,
        seq,
        frame: Bytes::from(format!("message {seq}")),
        published: Instant::now(),
    }
}

fn send(handle: u32, body: &'static [u8]) -> Bytes {
    encode_datagram(&Datagram::Send {
        handle,
        body: Bytes::from_static(body),
    })
}

#[test]
fn hello_timeout_without_control_stream_closes_without_a_frame() {
    let t0 = Instant::now();
    let mut s = new_session(NamespaceConfig::default(), t0);
    let deadline = t0 + Duration::from_secs(10);
    assert_eq!(s.poll_timeout(), Some(deadline));
    s.handle_timeout(deadline - MS);
    assert!(s.poll_action().is_none(), "not due yet");
    s.handle_timeout(deadline);
    assert_eq!(closed(&mut s), (ErrorCode::HelloTimeout, None));
}

#[test]
fn hello_timeout_on_an_open_control_stream_is_explained() {
    let t0 = Instant::now();
    let mut s = new_session(NamespaceConfig::default(), t0);
    s.control_opened();
    s.handle_timeout(t0 + Duration::from_secs(10));
    let (code, frame) = closed(&mut s);
    assert_eq!(code, ErrorCode::HelloTimeout);
    assert!(matches!(
        frame,
        Some(ServerFrame::Error {
            req: 0,
            code: ErrorCode::HelloTimeout,
            ..
        })
    ));
}

#[test]
fn a_hello_after_the_deadline_is_a_timeout() {
    let t0 = Instant::now();
    let mut s = new_session(NamespaceConfig::default(), t0);
    s.control_opened();
    let late = t0 + Duration::from_secs(10);
    s.handle_hello(late, UNIX, hello(token(&alice())), BrokerHealth::Ok);
    assert_eq!(closed(&mut s).0, ErrorCode::HelloTimeout);
}

#[test]
fn registration_ends_the_hello_deadline() {
    let t0 = Instant::now();
    let mut s = live(t0);
    // What is left is the token's expiry, an hour away.
    assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(3600)));
    s.handle_timeout(t0 + Duration::from_secs(60));
    assert!(s.poll_action().is_none());
}

/// Sends `frame` as the first frame and returns the close code.
fn hello_refusal(frame: ClientFrame, health: BrokerHealth) -> ErrorCode {
    let t0 = Instant::now();
    let mut s = new_session(NamespaceConfig::default(), t0);
    s.control_opened();
    s.handle_hello(t0, UNIX, frame, health);
    let (code, frame) = closed(&mut s);
    match frame {
        Some(ServerFrame::Error {
            req: 0, code: c, ..
        }) => assert_eq!(c, code),
        other => panic!("expected an Error frame, got {other:?}"),
    }
    code
}

#[test]
fn hello_refusals_close_with_their_code() {
    let ok = BrokerHealth::Ok;
    let version_2 = ClientFrame::Hello {
        version: 2,
        token: token(&alice()),
    };
    assert_eq!(
        hello_refusal(version_2, ok.clone()),
        ErrorCode::UnsupportedVersion
    );
    let forged = mint(b"another secret", &alice()).unwrap();
    assert_eq!(
        hello_refusal(hello(forged), ok.clone()),
        ErrorCode::Unauthorized
    );
    let expired = Claims::new("alice", UNIX - 7200, 3600);
    assert_eq!(
        hello_refusal(hello(token(&expired)), ok.clone()),
        ErrorCode::Unauthorized
    );
    let other_ns = Claims {
        ns: Some(vec!["games".into()]),
        ..alice()
    };
    assert_eq!(
        hello_refusal(hello(token(&other_ns)), ok.clone()),
        ErrorCode::Forbidden
    );
    let down = BrokerHealth::Unavailable("redis down".into());
    assert_eq!(
        hello_refusal(hello(token(&alice())), down),
        ErrorCode::Internal
    );
    let not_hello = ClientFrame::Online { req: 1 };
    assert_eq!(hello_refusal(not_hello, ok), ErrorCode::Protocol);
}

#[test]
fn registration_refused_by_the_hub_closes() {
    let t0 = Instant::now();
    let mut s = new_session(NamespaceConfig::default(), t0);
    s.control_opened();
    s.handle_hello(t0, UNIX, hello(token(&alice())), BrokerHealth::Ok);
    revocation_checked(&mut s, None);
    s.registered(Err(HubError::TooManyUserSessions(64)));
    assert_eq!(closed(&mut s).0, ErrorCode::TooManySessions);
    assert!(s.departure().is_none(), "the hub does not hold it");
}

#[test]
fn unknown_commands_are_fatal_before_welcome_and_skipped_after() {
    let unknown = ReadError::Codec(CodecError::UnknownVariant(9));
    let t0 = Instant::now();
    let mut s = new_session(NamespaceConfig::default(), t0);
    s.control_opened();
    s.handle_read_error(&unknown);
    assert_eq!(closed(&mut s).0, ErrorCode::UnknownCommand);

    let mut s = live(t0);
    s.handle_read_error(&unknown);
    assert_eq!(refused(&mut s), (0, ErrorCode::UnknownCommand));
    let too_large = ReadError::Codec(CodecError::TooLarge {
        len: 1 << 20,
        max: 1 << 16,
    });
    s.handle_read_error(&too_large);
    assert_eq!(closed(&mut s).0, ErrorCode::FrameTooLarge);

    let mut s = live(t0);
    s.handle_read_error(&ReadError::Truncated);
    let (code, frame) = closed(&mut s);
    assert_eq!(code, ErrorCode::Protocol);
    assert!(matches!(
        frame,
        Some(ServerFrame::Error {
            req: 0,
            code: ErrorCode::Protocol,
            ..
        })
    ));
}

#[test]
fn a_second_hello_is_a_protocol_error() {
    let t0 = Instant::now();
    let mut s = live(t0);
    s.handle_frame(t0, hello(token(&alice())));
    assert_eq!(closed(&mut s).0, ErrorCode::Protocol);
    // Closed: nothing more happens.
    publish(&mut s, t0, 2, "lobby");
    assert!(s.poll_action().is_none());
}

#[test]
fn a_reset_control_stream_closes_without_a_frame() {
    let mut s = live(Instant::now());
    let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
    s.handle_read_error(&ReadError::Io(reset));
    assert_eq!(closed(&mut s), (ErrorCode::Protocol, None));
}

#[test]
fn a_finished_control_stream_ends_the_session_normally() {
    let mut s = live(Instant::now());
    s.handle_frame(Instant::now(), ClientFrame::Online { req: 1 });
    s.control_finished();
    assert!(
        matches!(drain(&mut s).as_slice(), [Action::End]),
        "what was queued is dropped"
    );
}

#[test]
fn close_requests_explain_themselves() {
    let mut s = live(Instant::now());
    s.close_requested(ErrorCode::GoingAway);
    let (code, frame) = closed(&mut s);
    assert_eq!(code, ErrorCode::GoingAway);
    assert!(matches!(frame, Some(ServerFrame::GoAway { .. })));

    let mut s = live(Instant::now());
    s.close_requested(ErrorCode::SlowConsumer);
    let (code, frame) = closed(&mut s);
    assert_eq!(code, ErrorCode::SlowConsumer);
    assert!(matches!(
        frame,
        Some(ServerFrame::Error {
            code: ErrorCode::SlowConsumer,
            ..
        })
    ));
}

#[test]
fn close_reasons_are_cut_on_a_character_boundary() {
    let close = Close {
        code: ErrorCode::Protocol,
        message: "é".repeat(200),
        frame: None,
    };
    assert_eq!(close.reason().len(), 256);
    let close = Close {
        message: format!("a{}", "é".repeat(200)),
        ..close
    };
    assert_eq!(close.reason().len(), 255);
    assert!(std::str::from_utf8(close.reason()).is_ok());
}

#[test]
fn join_refusals() {
    let t0 = Instant::now();
    let claims = Claims {
        rooms: Some(vec!["team-*".into()]),
        ..alice()
    };
    let mut s = live_with(NamespaceConfig::default(), claims, t0);
    let join = |s: &mut Session, req, room: &str| {
        let room = room.into();
        s.handle_frame(
            t0,
            ClientFrame::Join {
                req,
                room,
                since: None,
            },
        );
        refused(s)
    };
    assert_eq!(join(&mut s, 1, ""), (1, ErrorCode::InvalidRoom));
    assert_eq!(join(&mut s, 2, "team a"), (2, ErrorCode::InvalidRoom));
    assert_eq!(join(&mut s, 3, "team-toolong"), (3, ErrorCode::InvalidRoom));
    assert_eq!(join(&mut s, 4, "lobby"), (4, ErrorCode::Forbidden));
    join_room(&mut s, "team-a", 10, None);
    assert_eq!(join(&mut s, 5, "team-a"), (5, ErrorCode::AlreadyJoined));
    join_room(&mut s, "team-b", 11, None);
    assert_eq!(join(&mut s, 6, "team-c"), (6, ErrorCode::TooManyRooms));
}

#[test]
fn a_join_the_broker_refuses_is_answered_with_its_error() {
    let t0 = Instant::now();
    let mut s = live(t0);
    let room = "lobby".to_owned();
    s.handle_frame(
        t0,
        ClientFrame::Join {
            req: 3,
            room: room.clone(),
            since: None,
        },
    );
    assert!(matches!(
        effect(&mut s),
        Effect::Join {
            req: 3,
            presence: true,
            ..
        }
    ));
    let result = Err(Refusal::new(ErrorCode::Internal, "redis down"));
    s.complete(Outcome::Joined {
        req: 3,
        room,
        since: None,
        result,
    });
    assert_eq!(refused(&mut s), (3, ErrorCode::Internal));
    publish(&mut s, t0, 4, "lobby");
    assert_eq!(refused(&mut s), (4, ErrorCode::NotJoined));
}

#[test]
fn a_room_stream_that_cannot_open_undoes_the_join() {
    let t0 = Instant::now();
    let mut s = live(t0);
    s.handle_frame(
        t0,
        ClientFrame::Join {
            req: 1,
            room: "lobby".into(),
            since: None,
        },
    );
    let _ = effect(&mut s);
    let recovery = Recovery {
        epoch: 1,
        last_seq: 0,
        replay: None,
    };
    let result = Ok(RoomJoin {
        handle: 5,
        recovery,
        members: vec![],
    });
    s.complete(Outcome::Joined {
        req: 1,
        room: "lobby".into(),
        since: None,
        result,
    });
    assert!(matches!(
        drain(&mut s).as_slice(),
        [Action::OpenRoom { handle: 5, .. }]
    ));
    s.room_opened(5, Err("no stream credit".into()));
    let actions = drain(&mut s);
    assert!(
        matches!(&actions[0], Action::Perform(Effect::LeaveRoom { room, .. }) if room == "lobby")
    );
    assert!(matches!(
        control(&actions).as_slice(),
        [ServerFrame::Error {
            req: 1,
            code: ErrorCode::Internal,
            ..
        }]
    ));
    assert!(
        s.deliver(message(5, 1)).is_none(),
        "no stream, nothing to write"
    );
}

#[test]
fn replayed_messages_are_not_delivered_again_live() {
    let t0 = Instant::now();
    let mut s = live(t0);
    let replay = vec![
        (5, Bytes::from_static(b"five")),
        (6, Bytes::from_static(b"six")),
    ];
    s.handle_frame(
        t0,
        ClientFrame::Join {
            req: 1,
            room: "lobby".into(),
            since: Some(Since { epoch: 1, seq: 4 }),
        },
    );
    let _ = effect(&mut s);
    let recovery = Recovery {
        epoch: 1,
        last_seq: 6,
        replay: Some(replay),
    };
    let result = Ok(RoomJoin {
        handle: 3,
        recovery,
        members: vec![],
    });
    let since = Some(Since { epoch: 1, seq: 4 });
    s.complete(Outcome::Joined {
        req: 1,
        room: "lobby".into(),
        since,
        result,
    });
    let head = match drain(&mut s).as_slice() {
        [Action::OpenRoom { handle: 3, head }] => head.clone(),
        other => panic!("expected the room stream, got {other:?}"),
    };
    let mut start = BytesMut::new();
    encode_frame(
        &ServerFrame::RoomStream {
            room: "lobby".into(),
            handle: 3,
        },
        &mut start,
    );
    assert_eq!(&head[..start.len()], &start[..]);
    assert_eq!(&head[start.len()..], b"fivesix");
    s.room_opened(3, Ok(()));
    assert!(matches!(
        control(&drain(&mut s)).as_slice(),
        [ServerFrame::Joined {
            seq: 6,
            recovered: true,
            ..
        }]
    ));
    assert!(s.deliver(message(3, 5)).is_none(), "replayed");
    assert!(s.deliver(message(3, 6)).is_none(), "replayed");
    assert!(matches!(
        s.deliver(message(3, 7)),
        Some(Write::Room {
            handle: 3,
            published: Some(_),
            ..
        })
    ));
    assert!(s.deliver(message(3, 7)).is_none(), "at most once");
    let presence = Outbound::Room {
        handle: 3,
        seq: 0,
        frame: Bytes::from_static(b"presence"),
        published: t0,
    };
    assert!(matches!(
        s.deliver(presence),
        Some(Write::Room {
            published: None,
            ..
        })
    ));
}

#[test]
fn without_replay_live_messages_of_the_join_are_kept() {
    let t0 = Instant::now();
    let mut s = live(t0);
    join_room(&mut s, "lobby", 3, None);
    // Published while the join was in progress: seq <= Joined.seq, still delivered once.
    assert!(s.deliver(message(3, 2)).is_some());
    assert!(s.deliver(message(3, 1)).is_none());
    assert!(s.deliver(message(4, 1)).is_none(), "not a joined room");
}

#[test]
fn leaving_finishes_the_stream_then_answers() {
    let t0 = Instant::now();
    let mut s = live(t0);
    s.handle_frame(
        t0,
        ClientFrame::Leave {
            req: 1,
            room: "lobby".into(),
        },
    );
    assert_eq!(refused(&mut s), (1, ErrorCode::NotJoined));
    join_room(&mut s, "lobby", 3, None);
    s.handle_frame(
        t0,
        ClientFrame::Leave {
            req: 2,
            room: "lobby".into(),
        },
    );
    let actions = drain(&mut s);
    assert!(matches!(
        actions.as_slice(),
        [
            Action::FinishRoom { handle: 3 },
            Action::Perform(Effect::LeaveRoom { .. }),
            Action::Control(_)
        ]
    ));
    assert!(matches!(
        control(&actions).as_slice(),
        [ServerFrame::Left { req: 2, .. }]
    ));
    assert!(s.deliver(message(3, 1)).is_none());
    assert!(s.handle_datagram(t0, &send(3, b"x")).is_none());
}

#[test]
fn a_stopped_room_stream_leaves_without_a_reply() {
    let t0 = Instant::now();
    let mut s = live(t0);
    join_room(&mut s, "lobby", 3, None);
    s.room_stopped(3);
    assert!(matches!(
        drain(&mut s).as_slice(),
        [Action::Perform(Effect::LeaveRoom { room, .. })] if room == "lobby"
    ));
    publish(&mut s, t0, 2, "lobby");
    assert_eq!(refused(&mut s), (2, ErrorCode::NotJoined));
}

#[test]
fn publish_refusals_in_the_documented_order() {
    let t0 = Instant::now();
    let read_only = NamespaceConfig {
        client_publish: false,
        ..NamespaceConfig::default()
    };
    let mut s = live_with(read_only, alice(), t0);
    publish(&mut s, t0, 1, "lobby");
    assert_eq!(refused(&mut s), (1, ErrorCode::NotJoined));
    join_room(&mut s, "lobby", 3, None);
    publish(&mut s, t0, 2, "lobby");
    assert_eq!(refused(&mut s), (2, ErrorCode::Forbidden));
}

#[test]
fn a_publish_refused_for_another_reason_takes_no_token() {
    let t0 = Instant::now();
    let mut s = live(t0);
    for req in 1..=5 {
        publish(&mut s, t0, req, "lobby");
        assert_eq!(refused(&mut s), (req, ErrorCode::NotJoined));
    }
    join_room(&mut s, "lobby", 3, None);
    for req in 6..=7 {
        publish(&mut s, t0, req, "lobby");
        assert!(
            matches!(effect(&mut s), Effect::Publish { .. }),
            "the burst is whole"
        );
    }
}

#[test]
fn publishes_beyond_the_rate_are_refused_until_tokens_return() {
    let t0 = Instant::now();
    let mut s = live(t0);
    join_room(&mut s, "lobby", 3, None);
    for req in 1..=2 {
        publish(&mut s, t0, req, "lobby");
        assert!(matches!(effect(&mut s), Effect::Publish { req: r, .. } if r == req));
    }
    publish(&mut s, t0, 3, "lobby");
    assert_eq!(refused(&mut s), (3, ErrorCode::RateLimited));
    publish(&mut s, t0 + Duration::from_millis(999), 4, "lobby");
    assert_eq!(refused(&mut s), (4, ErrorCode::RateLimited));
    publish(&mut s, t0 + Duration::from_secs(1), 5, "lobby");
    assert!(matches!(effect(&mut s), Effect::Publish { req: 5, .. }));
}

#[test]
fn joins_leaves_online_and_acks_share_a_rate() {
    let t0 = Instant::now();
    let mut s = live(t0);
    join_room(&mut s, "lobby", 3, None); // one command
    s.handle_frame(t0, ClientFrame::AckNotification { req: 1, id: 1 });
    drain(&mut s);
    // The rest of the burst of 20.
    for req in 2..=19 {
        s.handle_frame(t0, ClientFrame::Online { req });
        assert!(matches!(effect(&mut s), Effect::Online { .. }));
    }
    let over = [
        ClientFrame::Join {
            req: 30,
            room: "b".into(),
            since: None,
        },
        ClientFrame::Leave {
            req: 31,
            room: "lobby".into(),
        },
        ClientFrame::Online { req: 32 },
        ClientFrame::AckNotification { req: 33, id: 1 },
    ];
    for (req, frame) in (30..).zip(over) {
        s.handle_frame(t0, frame);
        assert_eq!(refused(&mut s), (req, ErrorCode::RateLimited));
    }
    // Publishes have their own bucket.
    publish(&mut s, t0, 40, "lobby");
    assert!(matches!(effect(&mut s), Effect::Publish { req: 40, .. }));
    // Half a second later the bucket holds one more command, and only one.
    s.handle_frame(t0 + 500 * MS, ClientFrame::Online { req: 41 });
    assert!(matches!(effect(&mut s), Effect::Online { req: 41, .. }));
    s.handle_frame(t0 + 500 * MS, ClientFrame::Online { req: 42 });
    assert_eq!(refused(&mut s), (42, ErrorCode::RateLimited));
}

#[test]
fn a_publish_is_acked_with_its_seq_or_refused_with_the_brokers_error() {
    let t0 = Instant::now();
    let mut s = live(t0);
    s.complete(Outcome::Published {
        req: 1,
        result: Ok(42),
    });
    assert!(matches!(
        control(&drain(&mut s)).as_slice(),
        [ServerFrame::Ack { req: 1, seq: 42 }]
    ));
    let down = Err(BrokerError::Unavailable("redis down".into()));
    s.complete(Outcome::Published {
        req: 2,
        result: down,
    });
    assert_eq!(refused(&mut s), (2, ErrorCode::Internal));
}

#[test]
fn datagrams_beyond_the_rate_are_dropped() {
    let t0 = Instant::now();
    let mut s = live(t0);
    join_room(&mut s, "lobby", 3, None);
    for _ in 0..2 {
        let v = s.handle_datagram(t0, &send(3, b"typing")).unwrap();
        assert_eq!(
            (v.room, v.from, &v.body[..]),
            ("lobby", "alice", &b"typing"[..])
        );
    }
    assert!(s.handle_datagram(t0, &send(3, b"typing")).is_none());
    assert!(s
        .handle_datagram(t0 + Duration::from_secs(1), &send(3, b"typing"))
        .is_some());
    assert!(s.poll_action().is_none(), "dropping is silent");
}

#[test]
fn tail_probes_are_dropped_silently_and_spend_no_datagram_credit() {
    let t0 = Instant::now();
    let mut s = live(t0);
    join_room(&mut s, "lobby", 3, None);
    for _ in 0..100 {
        assert!(s.handle_datagram(t0, &PROBE_DATAGRAM).is_none());
    }
    assert!(s.poll_action().is_none(), "no error, no close");
    // The bucket still holds its burst of two.
    assert!(s.handle_datagram(t0, &send(3, b"a")).is_some());
    assert!(s.handle_datagram(t0, &send(3, b"b")).is_some());
}

#[test]
fn datagrams_not_allowed_are_dropped_silently_and_malformed_ones_close() {
    let t0 = Instant::now();
    let mut s = live(t0);
    join_room(&mut s, "lobby", 3, None);
    let big = vec![0u8; 1025];
    let too_big = encode_datagram(&Datagram::Send {
        handle: 3,
        body: big.into(),
    });
    assert!(s.handle_datagram(t0, &too_big).is_none());
    assert!(
        s.handle_datagram(t0, &send(9, b"x")).is_none(),
        "room not joined"
    );
    assert!(
        s.handle_datagram(t0, &[7, 0]).is_none(),
        "a newer client's type"
    );
    assert!(s.poll_action().is_none());
    let recv = encode_datagram(&Datagram::Recv {
        handle: 3,
        from: "bob".into(),
        body: Bytes::new(),
    });
    assert!(s.handle_datagram(t0, &recv).is_none());
    assert_eq!(closed(&mut s).0, ErrorCode::Protocol);

    let mut s = live(t0);
    assert!(s.handle_datagram(t0, &[0, 3]).is_none(), "truncated Send");
    assert_eq!(closed(&mut s).0, ErrorCode::Protocol);

    let quiet = NamespaceConfig {
        datagrams: false,
        ..NamespaceConfig::default()
    };
    let mut s = live_with(quiet, alice(), t0);
    assert!(!s.accepts_datagrams());
    join_room(&mut s, "lobby", 3, None);
    assert!(s.handle_datagram(t0, &send(3, b"x")).is_none());
}

#[test]
fn inbox_notifications_follow_welcome_and_live_copies_are_dropped() {
    let t0 = Instant::now();
    let mut s = new_session(NamespaceConfig::notifications(), t0);
    s.control_opened();
    s.handle_hello(t0, UNIX, hello(token(&alice())), BrokerHealth::Ok);
    let _ = drain(&mut s);
    s.registered(Ok(Registered {
        first_for_user: true,
    }));
    assert!(matches!(
        effect(&mut s),
        Effect::Welcome {
            announce: false,
            online: false,
            inbox: true
        }
    ));
    let note = |id| Notification {
        id,
        kind: "mention".into(),
        body: Bytes::new(),
        ts: 0,
    };
    s.complete(Outcome::Welcome {
        online: None,
        pending: Some(Ok(vec![note(1), note(2)])),
    });
    let ids: Vec<_> = control(&drain(&mut s))
        .into_iter()
        .map(|f| match f {
            ServerFrame::Welcome { online: None, .. } => 0,
            ServerFrame::Notification { id, .. } => id,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(ids, [0, 1, 2]);
    let live_copy = |id| Outbound::Notification {
        id,
        frame: Bytes::new(),
    };
    assert!(
        s.deliver(live_copy(2)).is_none(),
        "already sent from the inbox"
    );
    assert!(matches!(s.deliver(live_copy(3)), Some(Write::Control(_))));
    assert!(
        s.deliver(live_copy(3)).is_none(),
        "another session's push of the same id"
    );
    // Each notification handed out once is a `notification.delivered` webhook.
    let delivered: Vec<u64> = drain(&mut s)
        .into_iter()
        .filter_map(|a| match a {
            Action::Perform(Effect::Delivered { id }) => Some(id),
            _ => None,
        })
        .collect();
    assert_eq!(delivered, [3]);
}

#[test]
fn acknowledging_a_notification_needs_an_inbox() {
    let t0 = Instant::now();
    let mut s = live(t0);
    s.handle_frame(t0, ClientFrame::AckNotification { req: 1, id: 4 });
    assert_eq!(refused(&mut s), (1, ErrorCode::Forbidden));

    let mut s = live_with(NamespaceConfig::notifications(), alice(), t0);
    s.handle_frame(t0, ClientFrame::AckNotification { req: 2, id: 4 });
    assert!(matches!(
        effect(&mut s),
        Effect::AckNotification { req: 2, id: 4 }
    ));
    s.complete(Outcome::Acked {
        req: 2,
        result: Ok(false),
    });
    assert!(matches!(
        control(&drain(&mut s)).as_slice(),
        [ServerFrame::Ack { req: 2, seq: 0 }]
    ));
}

#[test]
fn online_needs_namespace_presence() {
    let t0 = Instant::now();
    let mut s = live_with(NamespaceConfig::notifications(), alice(), t0);
    s.handle_frame(t0, ClientFrame::Online { req: 1 });
    assert_eq!(refused(&mut s), (1, ErrorCode::Forbidden));
    let mut s = live(t0);
    s.handle_frame(t0, ClientFrame::Online { req: 2 });
    assert!(matches!(effect(&mut s), Effect::Online { req: 2, .. }));
    s.complete(Outcome::Online {
        req: 2,
        result: Ok(vec!["alice".into()]),
    });
    assert!(matches!(
        control(&drain(&mut s)).as_slice(),
        [ServerFrame::Online { req: 2, .. }]
    ));
}

#[test]
fn a_session_closes_when_its_token_expires() {
    let t0 = Instant::now();
    let mut s = live(t0); // alice's token lasts an hour
    assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(3600)));
    s.handle_timeout(t0 + Duration::from_secs(3599));
    assert!(drain(&mut s).is_empty());
    s.handle_timeout(t0 + Duration::from_secs(3600));
    let (code, frame) = closed(&mut s);
    assert_eq!(code, ErrorCode::TokenExpired);
    assert!(matches!(
        frame,
        Some(ServerFrame::Error {
            code: ErrorCode::TokenExpired,
            ..
        })
    ));
    assert_eq!(s.poll_timeout(), None);
}

#[test]
fn a_command_after_expiry_is_not_served() {
    let t0 = Instant::now();
    let mut s = live(t0);
    s.handle_frame(
        t0 + Duration::from_secs(4000),
        ClientFrame::Online { req: 1 },
    );
    assert_eq!(closed(&mut s).0, ErrorCode::TokenExpired);
}

#[test]
fn a_refresh_moves_the_expiry_and_its_claims_apply() {
    let t0 = Instant::now();
    let mut s = live(t0);
    let later = t0 + Duration::from_secs(3000);
    // Issued 3000 s after Hello, for two more hours, only rooms team-*.
    let claims = Claims {
        rooms: Some(vec!["team-*".into()]),
        ..Claims::new("alice", UNIX + 3000, 7200)
    };
    s.handle_frame(
        later,
        ClientFrame::Refresh {
            req: 1,
            token: token(&claims),
        },
    );
    assert!(matches!(
        control(&drain(&mut s)).as_slice(),
        [ServerFrame::Ack { req: 1, seq: 0 }]
    ));
    assert_eq!(s.poll_timeout(), Some(later + Duration::from_secs(7200)));
    s.handle_timeout(t0 + Duration::from_secs(3600));
    assert!(drain(&mut s).is_empty(), "the old expiry no longer counts");
    s.handle_frame(
        later,
        ClientFrame::Join {
            req: 2,
            room: "lobby".into(),
            since: None,
        },
    );
    assert_eq!(refused(&mut s), (2, ErrorCode::Forbidden));
}

#[test]
fn refreshes_for_another_user_or_forged_are_refused_and_change_nothing() {
    let t0 = Instant::now();
    let mut s = live(t0);
    let bob = token(&Claims::new("bob", UNIX, 7200));
    s.handle_frame(t0, ClientFrame::Refresh { req: 1, token: bob });
    assert_eq!(refused(&mut s), (1, ErrorCode::Forbidden));
    let forged = mint(b"another secret", &Claims::new("alice", UNIX, 7200)).unwrap();
    s.handle_frame(
        t0,
        ClientFrame::Refresh {
            req: 2,
            token: forged,
        },
    );
    assert_eq!(refused(&mut s), (2, ErrorCode::Unauthorized));
    let expired = token(&Claims::new("alice", UNIX - 7200, 60));
    s.handle_frame(
        t0,
        ClientFrame::Refresh {
            req: 3,
            token: expired,
        },
    );
    assert_eq!(refused(&mut s), (3, ErrorCode::Unauthorized));
    assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(3600)));
}

#[test]
fn a_revoked_token_is_refused_at_hello_and_at_refresh() {
    let t0 = Instant::now();
    // Issued at UNIX; the user's tokens up to UNIX were revoked.
    let mut s = new_session(NamespaceConfig::default(), t0);
    s.control_opened();
    s.handle_hello(t0, UNIX, hello(token(&alice())), BrokerHealth::Ok);
    assert!(matches!(effect(&mut s), Effect::Revocation));
    s.complete(Outcome::Revocation(Ok(Some(UNIX))));
    let (code, frame) = closed(&mut s);
    assert_eq!(code, ErrorCode::Unauthorized);
    assert!(
        matches!(frame, Some(ServerFrame::Error { message, .. }) if message.contains("revoked"))
    );
    assert!(s.departure().is_none());

    // The store cannot say: refused, never let through.
    let mut s = new_session(NamespaceConfig::default(), t0);
    s.control_opened();
    s.handle_hello(t0, UNIX, hello(token(&alice())), BrokerHealth::Ok);
    assert!(matches!(effect(&mut s), Effect::Revocation));
    let down = Err(crate::notify::InboxError::Store("disk gone".into()));
    s.complete(Outcome::Revocation(down));
    assert_eq!(closed(&mut s).0, ErrorCode::Internal);

    // Issued after the mark: welcome; a refresh with an older token is refused.
    let mut s = new_session(NamespaceConfig::default(), t0);
    s.control_opened();
    let fresh = Claims::new("alice", UNIX + 10, 3600);
    s.handle_hello(t0, UNIX + 10, hello(token(&fresh)), BrokerHealth::Ok);
    revocation_checked(&mut s, Some(UNIX));
    s.registered(Ok(Registered {
        first_for_user: true,
    }));
    assert!(matches!(effect(&mut s), Effect::Welcome { .. }));
    s.complete(Outcome::Welcome {
        online: None,
        pending: None,
    });
    drain(&mut s);
    let old = token(&Claims::new("alice", UNIX, 7200));
    s.handle_frame(t0, ClientFrame::Refresh { req: 1, token: old });
    assert_eq!(refused(&mut s), (1, ErrorCode::Unauthorized));
}

// ---------------------------------------------------------------------------------
// Backend hooks
// ---------------------------------------------------------------------------------

fn hooked(f: impl FnOnce(&mut crate::config::HooksConfig)) -> NamespaceConfig {
    let mut ns = NamespaceConfig::default();
    ns.hooks.url = "http://127.0.0.1:1/".into();
    f(&mut ns.hooks);
    ns
}

/// `Hello` with a valid token, past the revocation check: the connect hook is asked.
fn at_connect_hook(ns: NamespaceConfig, t0: Instant) -> Session {
    let mut s = new_session(ns, t0);
    s.control_opened();
    s.handle_hello(t0, UNIX, hello(token(&alice())), BrokerHealth::Ok);
    assert!(matches!(effect(&mut s), Effect::Revocation));
    s.complete(Outcome::Revocation(Ok(None)));
    assert!(matches!(effect(&mut s), Effect::Connect));
    s
}

fn unavailable<T>() -> Result<T, HookError> {
    Err(HookError::Unavailable("connection refused".into()))
}

use crate::hooks::{ConnectReply, HookError, JoinReply, PublishReply};

#[test]
fn the_connect_hook_attaches_data_sent_before_welcome() {
    let t0 = Instant::now();
    let mut s = at_connect_hook(hooked(|h| h.connect = true), t0);
    s.complete(Outcome::Connected(Ok(ConnectReply {
        data: Some(Bytes::from_static(b"{\"name\":\"Alice\"}")),
    })));
    assert!(matches!(drain(&mut s).as_slice(), [Action::Register]));
    s.registered(Ok(Registered {
        first_for_user: true,
    }));
    assert!(matches!(effect(&mut s), Effect::Welcome { .. }));
    s.complete(Outcome::Welcome {
        online: None,
        pending: None,
    });
    match control(&drain(&mut s)).as_slice() {
        [ServerFrame::ConnectInfo { data }, ServerFrame::Welcome { .. }] => {
            assert_eq!(&data[..], b"{\"name\":\"Alice\"}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_connect_hook_refuses_with_the_backends_code_and_closes() {
    let t0 = Instant::now();
    let mut s = at_connect_hook(hooked(|h| h.connect = true), t0);
    s.complete(Outcome::Connected(Err(HookError::refused_with(
        Some(4003),
        "banned",
    ))));
    let (code, frame) = closed(&mut s);
    assert_eq!(code, ErrorCode::Other(4003));
    assert!(matches!(frame, Some(ServerFrame::Error { message, .. }) if message == "banned"));
}

#[test]
fn an_unavailable_connect_hook_refuses_or_allows_per_the_namespace() {
    let t0 = Instant::now();
    let mut s = at_connect_hook(hooked(|h| h.connect = true), t0);
    s.complete(Outcome::Connected(unavailable()));
    let (code, frame) = closed(&mut s);
    assert_eq!(code, ErrorCode::BackendUnavailable);
    assert!(
        matches!(frame, Some(ServerFrame::Error { message, .. }) if message.contains("connection refused"))
    );

    let allow = hooked(|h| {
        h.connect = true;
        h.on_unavailable = crate::config::OnUnavailable::Allow;
    });
    let mut s = at_connect_hook(allow, t0);
    s.complete(Outcome::Connected(unavailable()));
    assert!(matches!(drain(&mut s).as_slice(), [Action::Register]));

    // Data larger than a frame counts as an unavailable backend.
    let mut s = at_connect_hook(hooked(|h| h.connect = true), t0);
    s.complete(Outcome::Connected(Ok(ConnectReply {
        data: Some(Bytes::from(vec![0; DEFAULT_MAX_FRAME])),
    })));
    assert_eq!(closed(&mut s).0, ErrorCode::BackendUnavailable);
}

fn join_frame(room: &str, since: Option<Since>) -> ClientFrame {
    ClientFrame::Join {
        req: 3,
        room: room.into(),
        since,
    }
}

#[test]
fn the_join_hook_allows_refuses_or_drops_history() {
    let t0 = Instant::now();
    let ns = hooked(|h| h.join = true);
    let mut s = live_with(ns.clone(), alice(), t0);
    let since = Some(Since { epoch: 1, seq: 4 });
    s.handle_frame(t0, join_frame("lobby", since));
    let Effect::JoinCheck { req, room, since } = effect(&mut s) else {
        panic!("the join hook is asked first");
    };
    s.complete(Outcome::JoinChecked {
        req,
        room: room.clone(),
        since,
        result: Ok(JoinReply {
            history: false,
            presence: false,
        }),
    });
    assert!(matches!(
        effect(&mut s),
        Effect::Join { since: None, ref room, .. } if room == "lobby"
    ));
    // Without presence: no member list, no presence events; messages still come.
    s.complete(Outcome::Joined {
        req: 3,
        room: "lobby".into(),
        since: None,
        result: Ok(RoomJoin {
            handle: 9,
            recovery: Recovery {
                epoch: 1,
                last_seq: 0,
                replay: None,
            },
            members: vec!["alice".into(), "bob".into()],
        }),
    });
    assert!(matches!(
        drain(&mut s).as_slice(),
        [Action::OpenRoom { handle: 9, .. }]
    ));
    s.room_opened(9, Ok(()));
    assert!(matches!(
        control(&drain(&mut s)).as_slice(),
        [ServerFrame::Joined { members, .. }] if members.is_empty()
    ));
    let presence = Outbound::Room {
        handle: 9,
        seq: 0,
        frame: Bytes::from_static(b"presence"),
        published: Instant::now(),
    };
    assert!(s.deliver(presence).is_none());
    assert!(matches!(s.deliver(message(9, 1)), Some(Write::Room { .. })));

    let mut s = live_with(ns.clone(), alice(), t0);
    s.handle_frame(t0, join_frame("lobby", since));
    let _ = effect(&mut s);
    s.complete(Outcome::JoinChecked {
        req: 3,
        room: "lobby".into(),
        since,
        result: Ok(JoinReply::default()),
    });
    assert!(matches!(
        effect(&mut s),
        Effect::Join { since: Some(_), .. }
    ));

    let mut s = live_with(ns, alice(), t0);
    s.handle_frame(t0, join_frame("lobby", None));
    let _ = effect(&mut s);
    s.complete(Outcome::JoinChecked {
        req: 3,
        room: "lobby".into(),
        since: None,
        result: Err(HookError::refused("members only")),
    });
    assert_eq!(refused(&mut s), (3, ErrorCode::Rejected));
    // The session's own checks come first: no hook call for a bad room name.
    s.handle_frame(t0, join_frame("", None));
    assert_eq!(refused(&mut s), (3, ErrorCode::InvalidRoom));
}

#[test]
fn the_publish_hook_replaces_refuses_or_is_unavailable() {
    let t0 = Instant::now();
    let ns = hooked(|h| h.publish = true);
    let mut s = live_with(ns.clone(), alice(), t0);
    join_room(&mut s, "lobby", 1, None);
    publish(&mut s, t0, 5, "lobby");
    let Effect::PublishCheck { req, room, body } = effect(&mut s) else {
        panic!("the publish hook is asked first");
    };
    assert_eq!(&body[..], b"hi");
    s.complete(Outcome::PublishChecked {
        req,
        room,
        body,
        result: Ok(PublishReply {
            body: Some(Bytes::from_static(b"hi (edited)")),
        }),
    });
    assert!(matches!(
        effect(&mut s),
        Effect::Publish { req: 5, ref body, .. } if &body[..] == b"hi (edited)"
    ));

    let outcome = |result| Outcome::PublishChecked {
        req: 6,
        room: "lobby".into(),
        body: Bytes::from_static(b"hi"),
        result,
    };
    s.complete(outcome(Err(HookError::refused_with(Some(1001), "no"))));
    assert_eq!(refused(&mut s), (6, ErrorCode::Other(1001)));
    s.complete(outcome(unavailable()));
    assert_eq!(refused(&mut s), (6, ErrorCode::BackendUnavailable));
    let huge = Bytes::from(vec![b'x'; DEFAULT_MAX_FRAME]);
    s.complete(outcome(Ok(PublishReply { body: Some(huge) })));
    assert_eq!(refused(&mut s), (6, ErrorCode::BackendUnavailable));
    // Still live.
    publish(&mut s, t0, 7, "lobby");
    assert!(matches!(
        effect(&mut s),
        Effect::PublishCheck { req: 7, .. }
    ));

    let allow = hooked(|h| {
        h.publish = true;
        h.on_unavailable = crate::config::OnUnavailable::Allow;
    });
    let mut s = live_with(allow, alice(), t0);
    s.complete(outcome(unavailable()));
    assert!(matches!(
        effect(&mut s),
        Effect::Publish { req: 6, ref body, .. } if &body[..] == b"hi"
    ));
}

fn rpc_frame(req: u32, method: &str) -> ClientFrame {
    ClientFrame::Rpc {
        req,
        method: method.into(),
        body: Bytes::from_static(b"{}"),
    }
}

#[test]
fn rpcs_are_bounded_per_session_and_counted_off_by_their_replies() {
    let t0 = Instant::now();
    let mut s = live(t0);
    s.handle_frame(t0, rpc_frame(1, "history.search"));
    assert_eq!(refused(&mut s), (1, ErrorCode::Forbidden));

    let ns = hooked(|h| {
        h.rpc = true;
        h.max_rpcs_per_session = 2;
    });
    let mut s = live_with(ns, alice(), t0);
    for (req, method) in [(1, ""), (2, "bad\nname")] {
        s.handle_frame(t0, rpc_frame(req, method));
        assert_eq!(refused(&mut s), (req, ErrorCode::Rejected));
    }
    s.handle_frame(t0, rpc_frame(3, &"m".repeat(129)));
    assert_eq!(refused(&mut s), (3, ErrorCode::Rejected));
    for req in [4, 5] {
        s.handle_frame(t0, rpc_frame(req, "history.search"));
        assert!(matches!(effect(&mut s), Effect::Rpc { req: r, .. } if r == req));
    }
    s.handle_frame(t0, rpc_frame(6, "history.search"));
    assert_eq!(refused(&mut s), (6, ErrorCode::BackendUnavailable));
    // A reply frees a place.
    let reply = frame_bytes(&ServerFrame::RpcReply {
        req: 4,
        body: Bytes::new(),
    });
    assert!(matches!(
        s.deliver(Outbound::RpcReply(reply)),
        Some(Write::Control(_))
    ));
    s.handle_frame(t0, rpc_frame(7, "history.search"));
    assert!(matches!(effect(&mut s), Effect::Rpc { req: 7, .. }));
    // One that could not start answers at once, and frees its place too.
    s.complete(Outcome::RpcFailed {
        req: 7,
        error: HookError::Unavailable("closing".into()),
    });
    assert_eq!(refused(&mut s), (7, ErrorCode::BackendUnavailable));
    s.handle_frame(t0, rpc_frame(8, "history.search"));
    assert!(matches!(effect(&mut s), Effect::Rpc { req: 8, .. }));
}

#[test]
fn online_lists_come_a_page_at_a_time() {
    use crate::protocol::ONLINE_PAGE;
    let t0 = Instant::now();
    let mut s = live(t0);
    s.handle_frame(t0, ClientFrame::Online { req: 1 });
    match effect(&mut s) {
        Effect::Online {
            req: 1,
            room: None,
            after: None,
            limit,
        } => assert_eq!(limit, ONLINE_PAGE),
        other => panic!("{other:?}"),
    }
    let after = "zoë".to_owned();
    s.handle_frame(
        t0,
        ClientFrame::OnlinePage {
            req: 2,
            after: after.clone(),
            limit: 10,
        },
    );
    match effect(&mut s) {
        Effect::Online {
            req: 2,
            room: None,
            after: Some(a),
            limit: 10,
        } => assert_eq!(a, after),
        other => panic!("{other:?}"),
    }
    s.handle_frame(
        t0,
        ClientFrame::OnlinePage {
            req: 3,
            after,
            limit: u32::MAX,
        },
    );
    match effect(&mut s) {
        Effect::Online { req: 3, limit, .. } => assert_eq!(limit, ONLINE_PAGE, "capped"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn members_pages_are_read_only_in_a_joined_room_with_presence() {
    use crate::protocol::ONLINE_PAGE;
    let t0 = Instant::now();
    let page = |room: &str, req| ClientFrame::MembersPage {
        req,
        room: room.into(),
        after: "bob".into(),
        limit: u32::MAX,
    };
    let mut s = live(t0);
    s.handle_frame(t0, page("lobby", 1));
    assert_eq!(refused(&mut s), (1, ErrorCode::NotJoined));
    join_room(&mut s, "lobby", 1, None);
    s.handle_frame(t0, page("lobby", 2));
    match effect(&mut s) {
        Effect::Online {
            req: 2,
            room: Some(room),
            after: Some(after),
            limit,
        } => {
            assert_eq!((room.as_str(), after.as_str()), ("lobby", "bob"));
            assert_eq!(limit, ONLINE_PAGE, "capped");
        }
        other => panic!("{other:?}"),
    }

    let quiet = NamespaceConfig {
        presence: false,
        ..NamespaceConfig::default()
    };
    let mut s = live_with(quiet, alice(), t0);
    join_room(&mut s, "lobby", 1, None);
    s.handle_frame(t0, page("lobby", 3));
    assert_eq!(refused(&mut s), (3, ErrorCode::Forbidden));
}
