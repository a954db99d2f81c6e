use super::*;
use crate::protocol::{decode_datagram, decode_frame, ServerFrame, DEFAULT_MAX_FRAME};
use bytes::BytesMut;
use std::time::Instant;

const LIMITS: SessionLimits = SessionLimits {
    max_sessions: 10,
    max_sessions_per_user: 3,
};

fn hub() -> Hub {
    Hub::new(["/chat", "/other"], LIMITS)
}

fn session(hub: &Hub, ns: &str, id: SessionId, user: &str) -> SessionRx {
    session_cap(hub, ns, id, user, 64)
}

fn session_cap(hub: &Hub, ns: &str, id: SessionId, user: &str, cap: usize) -> SessionRx {
    let (tx, rx) = session_queues(id, user, cap, 4);
    hub.register(ns, tx).unwrap();
    rx
}

fn decode(frame: &Bytes) -> ServerFrame {
    let mut b = BytesMut::from(&frame[..]);
    decode_frame(&mut b, DEFAULT_MAX_FRAME).unwrap().unwrap()
}

/// Everything queued for a session, as (handle or 0 for control, frame).
fn drain(rx: &mut SessionRx) -> Vec<(u32, ServerFrame)> {
    let mut out = Vec::new();
    while let Ok(item) = rx.frames.try_recv() {
        out.push(match item {
            Outbound::Room { handle, frame, .. } => (handle, decode(&frame)),
            Outbound::Control(frame)
            | Outbound::RpcReply(frame)
            | Outbound::Notification { frame, .. } => (0, decode(&frame)),
        });
    }
    out
}

fn message(seq: u64) -> Bytes {
    frame_bytes(&ServerFrame::Message {
        seq,
        from: "ann".into(),
        body: Bytes::from_static(b"hi"),
        ts: 1,
    })
}

#[test]
fn messages_reach_members_of_that_room_only() {
    let hub = hub();
    let mut a = session(&hub, "/chat", 1, "ann");
    let mut b = session(&hub, "/chat", 2, "bob");
    let mut c = session(&hub, "/chat", 3, "cat");
    let mut d = session(&hub, "/other", 4, "dan");
    let ha = hub.join("/chat", "lobby", 1).unwrap().handle;
    assert_eq!(hub.join("/chat", "lobby", 2).unwrap().handle, ha);
    let hc = hub.join("/chat", "side", 3).unwrap().handle;
    assert_ne!(ha, hc);
    hub.join("/other", "lobby", 4).unwrap();

    assert_eq!(
        hub.deliver_message("/chat", "lobby", 1, &message(1), Instant::now()),
        2
    );
    for rx in [&mut a, &mut b] {
        let got = drain(rx);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, ha);
        assert!(matches!(got[0].1, ServerFrame::Message { seq: 1, .. }));
    }
    assert!(drain(&mut c).is_empty(), "other room");
    assert!(drain(&mut d).is_empty(), "same room name, other namespace");
    assert_eq!(
        hub.deliver_message("/chat", "nobody-here", 1, &message(1), Instant::now()),
        0
    );
}

#[test]
fn presence_counts_users_not_sessions() {
    let hub = hub();
    let mut a1 = session(&hub, "/chat", 1, "ann");
    let _a2 = session(&hub, "/chat", 2, "ann");
    let mut b = session(&hub, "/chat", 3, "bob");
    let first = hub.join("/chat", "r", 3).unwrap();
    assert!(first.first_for_user && first.created);
    let second = hub.join("/chat", "r", 1).unwrap();
    assert!(second.first_for_user && !second.created);
    assert!(!hub.join("/chat", "r", 2).unwrap().first_for_user);
    assert_eq!(hub.room_users("/chat", "r"), ["ann", "bob"]);

    // The broker tells others; ann's own sessions are not told about ann.
    assert_eq!(
        hub.deliver_presence("/chat", "r", "ann", true, Instant::now()),
        1
    );
    assert!(drain(&mut a1).is_empty());
    assert_eq!(
        drain(&mut b)[0].1,
        ServerFrame::PresenceJoin { user: "ann".into() }
    );

    assert_eq!(
        hub.leave("/chat", "r", 1),
        Ok(false),
        "ann still has session 2"
    );
    assert_eq!(hub.leave("/chat", "r", 2), Ok(true));
    assert_eq!(hub.leave("/chat", "r", 2), Err(HubError::NotJoined));
    assert_eq!(hub.room_users("/chat", "r"), ["bob"]);
    assert_eq!(
        hub.leave_room("/chat", "r", 3),
        Ok(Left {
            last_for_user: true,
            vacated: true
        })
    );
}

#[test]
fn unregister_leaves_every_room_and_goes_offline() {
    let hub = hub();
    let _a = session(&hub, "/chat", 1, "ann");
    let _b = session(&hub, "/chat", 2, "bob");
    hub.join("/chat", "x", 1).unwrap();
    hub.join("/chat", "y", 1).unwrap();
    hub.join("/chat", "y", 2).unwrap();
    assert_eq!(hub.online_users("/chat"), ["ann", "bob"]);
    let mut gone = hub.unregister("/chat", 1);
    gone.rooms.sort();
    assert_eq!(
        gone,
        Unregistered {
            rooms: vec![("x".into(), true), ("y".into(), true)],
            vacated: vec!["x".into()],
            last_for_user: true
        }
    );
    assert_eq!(
        hub.room_handle("/chat", "x"),
        None,
        "empty rooms are dropped"
    );
    assert!(hub.room_handle("/chat", "y").is_some());
    assert_eq!(hub.online_users("/chat"), ["bob"]);
    assert_eq!(hub.session_count(), 1);
    assert_eq!(hub.unregister("/chat", 1), Unregistered::default());
}

#[test]
fn joins_are_checked() {
    let hub = hub();
    let _a = session(&hub, "/chat", 1, "ann");
    hub.join("/chat", "r", 1).unwrap();
    assert_eq!(hub.join("/chat", "r", 1), Err(HubError::AlreadyJoined));
    assert_eq!(hub.join("/chat", "r", 99), Err(HubError::NotJoined));
    assert!(matches!(
        hub.join("/nope", "r", 1),
        Err(HubError::UnknownNamespace(_))
    ));
    assert_eq!(hub.leave("/chat", "other", 1), Err(HubError::NotJoined));
}

#[test]
fn session_limits() {
    let hub = hub();
    let mut keep = Vec::new();
    for id in 0..3 {
        keep.push(session(&hub, "/chat", id, "ann"));
    }
    let (tx, _rx) = session_queues(3, "ann", 4, 4);
    assert_eq!(
        hub.register("/chat", tx),
        Err(HubError::TooManyUserSessions(3))
    );
    for id in 3..10 {
        keep.push(session(&hub, "/chat", id, &format!("u{id}")));
    }
    let (tx, _rx) = session_queues(10, "zed", 4, 4);
    assert_eq!(hub.register("/chat", tx), Err(HubError::ServerFull(10)));
    let (tx, _rx) = session_queues(11, "zed", 4, 4);
    hub.unregister("/chat", 0);
    assert!(hub.register("/nope", tx.clone()).is_err());
    assert!(hub.register("/chat", tx).is_ok());
}

#[test]
fn a_full_queue_closes_the_slow_session_only() {
    let hub = hub();
    let (slow_tx, _slow_rx) = session_queues(1, "slow", 2, 1);
    let closer = slow_tx.closer().clone();
    hub.register("/chat", slow_tx).unwrap();
    let mut fast = session(&hub, "/chat", 2, "fast");
    hub.join("/chat", "r", 1).unwrap();
    hub.join("/chat", "r", 2).unwrap();
    for seq in 1..=3 {
        hub.deliver_message("/chat", "r", seq, &message(seq), Instant::now());
    }
    assert_eq!(closer.code(), Some(ErrorCode::SlowConsumer));
    assert_eq!(drain(&mut fast).len(), 3);
}

#[test]
fn volatile_skips_the_sender_and_non_members() {
    let hub = hub();
    let mut a = session(&hub, "/chat", 1, "ann");
    let mut b = session(&hub, "/chat", 2, "bob");
    let mut c = session(&hub, "/chat", 3, "cat");
    let h = hub.join("/chat", "r", 1).unwrap().handle;
    hub.join("/chat", "r", 2).unwrap();
    let body = Bytes::from_static(b"typing");
    assert_eq!(hub.deliver_volatile("/chat", "r", Some(1), "ann", &body), 1);
    assert!(a.datagrams.try_recv().is_err());
    assert!(c.datagrams.try_recv().is_err());
    let got = decode_datagram(&b.datagrams.try_recv().unwrap()).unwrap();
    assert_eq!(
        got,
        Datagram::Recv {
            handle: h,
            from: "ann".into(),
            body
        }
    );
}

#[test]
fn online_and_broadcast_reach_the_namespace() {
    let hub = hub();
    let mut a = session(&hub, "/chat", 1, "ann");
    let mut b = session(&hub, "/chat", 2, "bob");
    let mut d = session(&hub, "/other", 3, "dan");
    assert_eq!(hub.deliver_online("/chat", "ann", true), 1);
    assert_eq!(
        drain(&mut b),
        [(0, ServerFrame::OnlineJoin { user: "ann".into() })]
    );
    assert!(drain(&mut a).is_empty());
    let frame = frame_bytes(&ServerFrame::GoAway {
        message: "x".into(),
    });
    assert_eq!(hub.deliver_broadcast("/chat", &frame), 2);
    assert_eq!(drain(&mut a).len(), 1);
    assert!(drain(&mut d).is_empty());
}

#[test]
fn close_user_reaches_all_their_sessions() {
    let hub = hub();
    let (t1, _r1) = session_queues(1, "ann", 4, 4);
    let (t2, _r2) = session_queues(2, "ann", 4, 4);
    let (t3, _r3) = session_queues(3, "bob", 4, 4);
    let closers = [
        t1.closer().clone(),
        t2.closer().clone(),
        t3.closer().clone(),
    ];
    hub.register("/chat", t1).unwrap();
    hub.register("/other", t2).unwrap();
    hub.register("/chat", t3).unwrap();
    assert_eq!(hub.close_user("ann", ErrorCode::Forbidden), 2);
    assert_eq!(closers[0].code(), Some(ErrorCode::Forbidden));
    assert_eq!(closers[1].code(), Some(ErrorCode::Forbidden));
    assert_eq!(closers[2].code(), None);
}

#[test]
fn notifications_reach_every_session_of_the_user_in_inbox_namespaces() {
    let hub = hub();
    let mut a1 = session(&hub, "/chat", 1, "ann");
    let mut a2 = session(&hub, "/other", 2, "ann");
    let mut b = session(&hub, "/other", 3, "bob");
    let frame = frame_bytes(&ServerFrame::Notification {
        id: 4,
        kind: "k".into(),
        body: Bytes::from_static(b"n"),
        ts: 1,
    });
    assert_eq!(hub.deliver_notification(["/other"], "ann", 4, &frame), 1);
    assert!(drain(&mut a1).is_empty(), "not an inbox namespace");
    assert!(matches!(
        drain(&mut a2)[..],
        [(0, ServerFrame::Notification { id: 4, .. })]
    ));
    assert!(drain(&mut b).is_empty(), "another user");
}

#[test]
fn overflow_is_counted() {
    let hub = hub();
    let (tx, _rx) = session_queues(1, "slow", 1, 1);
    hub.register("/chat", tx).unwrap();
    hub.join("/chat", "r", 1).unwrap();
    for seq in 1..=3 {
        hub.deliver_message("/chat", "r", seq, &message(seq), Instant::now());
    }
    assert_eq!(hub.stats().frames_dropped, 2);
    for _ in 0..3 {
        hub.deliver_volatile("/chat", "r", None, "x", &Bytes::from_static(b"v"));
    }
    assert_eq!(hub.stats().datagrams_dropped, 2);
    assert_eq!(hub.room_count(), 1);
}

#[test]
fn a_churning_room_gets_one_batch_per_member_per_window() {
    let window = std::time::Duration::from_millis(100);
    let hub = Hub::new(["/chat"], LIMITS).with_presence_window(window);
    let mut ann = session(&hub, "/chat", 1, "ann");
    let mut bob = session(&hub, "/chat", 2, "bob");
    hub.join("/chat", "r", 1).unwrap();
    hub.join("/chat", "r", 2).unwrap();
    let t0 = Instant::now();
    // Calm: the first change goes out at once.
    assert_eq!(hub.deliver_presence("/chat", "r", "cy", true, t0), 2);
    assert_eq!(drain(&mut ann).len(), 1);
    drain(&mut bob);
    // A storm within the window: nothing yet, then one batch each.
    for user in ["dee", "eve", "fay"] {
        assert_eq!(hub.deliver_presence("/chat", "r", user, true, t0), 0);
    }
    hub.deliver_presence("/chat", "r", "cy", false, t0);
    hub.deliver_presence("/chat", "r", "bob", false, t0);
    hub.deliver_presence("/chat", "r", "bob", true, t0);
    hub.deliver_presence("/chat", "r", "ann", false, t0);
    assert_eq!(hub.flush_presence(t0), 0, "not due yet");
    assert_eq!(hub.flush_presence(t0 + window), 2);
    let joins = vec!["dee".to_owned(), "eve".into(), "fay".into()];
    assert_eq!(
        drain(&mut bob),
        [(
            1,
            ServerFrame::PresenceBatch {
                joins: joins.clone(),
                leaves: vec!["ann".into(), "cy".into()]
            }
        )],
        "bob's leave and return cancel out"
    );
    assert_eq!(
        drain(&mut ann),
        [(
            1,
            ServerFrame::PresenceBatch {
                joins,
                leaves: vec!["cy".into()]
            }
        )],
        "nobody is told of themselves"
    );
    assert_eq!(hub.flush_presence(t0 + window * 2), 0, "sent once");
}
