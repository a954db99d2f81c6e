//! Join, publish, ack ordering and fan-out.

use bytes::Bytes;
use wtgate::client::Event;
use wtgate::protocol::{ErrorCode, Since};

use crate::common::*;

#[tokio::test]
async fn publish_is_acked_and_reaches_every_member_in_order() {
    let server = TestServer::start().await;
    let mut ann = server.client("/chat", "ann").await;
    let mut bob = server.client("/chat", "bob").await;
    ann.join("lobby", None).await.unwrap();
    let joined = bob.join("lobby", None).await.unwrap();
    assert_eq!(joined.members, ["ann", "bob"]);
    for i in 1..=20u64 {
        let seq = ann
            .publish("lobby", Bytes::from(format!("m{i}")))
            .await
            .unwrap();
        assert_eq!(seq, i);
    }
    for client in [&mut ann, &mut bob] {
        for i in 1..=20u64 {
            let (seq, from, body) = expect_event(client, "message", |e| match e {
                Event::Message {
                    seq, from, body, ..
                } => Some((*seq, from.clone(), body.clone())),
                _ => None,
            })
            .await;
            assert_eq!(
                (seq, from.as_str(), &body[..]),
                (i, "ann", format!("m{i}").as_bytes())
            );
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn fan_out_to_sixty_clients_in_three_rooms_loses_nothing_and_leaks_nothing() {
    let server = TestServer::start().await;
    let rooms = ["red", "green", "blue"];
    let mut clients = Vec::new();
    for i in 0..60 {
        let room = rooms[i % 3];
        let c = server.client("/chat", &format!("u{i}")).await;
        c.join(room, None).await.unwrap();
        clients.push((room, c));
    }
    // One publisher per room, 30 messages each, interleaved.
    let per_room = 30u64;
    for n in 0..per_room {
        for (r, room) in rooms.iter().enumerate() {
            let body = Bytes::from(format!("{room}:{n}"));
            let seq = clients[r].1.publish(room, body).await.unwrap();
            assert_eq!(seq, n + 1);
        }
    }
    for (room, client) in clients.iter_mut() {
        for n in 0..per_room {
            let (got_room, seq, body) = expect_event(client, "fan-out message", |e| match e {
                Event::Message {
                    room, seq, body, ..
                } => Some((room.clone(), *seq, body.clone())),
                _ => None,
            })
            .await;
            assert_eq!(got_room, *room, "a message from another room leaked");
            assert_eq!(seq, n + 1, "gap or reorder in {room}");
            assert_eq!(&body[..], format!("{room}:{n}").as_bytes());
        }
    }
    for (_, client) in clients.iter_mut() {
        expect_no_event(
            client,
            "extra message",
            std::time::Duration::from_millis(200),
            |e| matches!(e, Event::Message { .. }),
        )
        .await;
    }
    server.stop().await;
}

#[tokio::test]
async fn leaving_stops_delivery_and_publish_needs_membership() {
    let server = TestServer::start().await;
    let mut ann = server.client("/chat", "ann").await;
    let bob = server.client("/chat", "bob").await;
    ann.join("r", None).await.unwrap();
    bob.join("r", None).await.unwrap();
    ann.leave("r").await.unwrap();
    expect_event(&mut ann, "room stream end", |e| {
        matches!(e, Event::RoomClosed { .. }).then_some(())
    })
    .await;
    bob.publish("r", Bytes::from_static(b"after"))
        .await
        .unwrap();
    expect_no_event(
        &mut ann,
        "message after leave",
        std::time::Duration::from_millis(300),
        |e| matches!(e, Event::Message { .. }),
    )
    .await;
    let publish = ann.publish("r", Bytes::from_static(b"x")).await;
    assert_eq!(refused(publish), ErrorCode::NotJoined);
    assert_eq!(refused(ann.leave("r").await), ErrorCode::NotJoined);
    // Rejoining works and the room's seq carries on.
    let again = ann.join("r", None).await.unwrap();
    assert_eq!(again.seq, 1);
    assert_eq!(
        ann.publish("r", Bytes::from_static(b"back")).await.unwrap(),
        2
    );
    server.stop().await;
}

#[tokio::test]
async fn reconnecting_with_since_replays_what_was_missed() {
    let server = TestServer::start().await;
    let bob = server.client("/chat", "bob").await;
    bob.join("r", None).await.unwrap();
    let mut ann = server.client("/chat", "ann").await;
    let epoch = ann.join("r", None).await.unwrap().epoch;
    for i in 1..=3 {
        bob.publish("r", Bytes::from(format!("m{i}")))
            .await
            .unwrap();
    }
    for _ in 0..3 {
        expect_event(&mut ann, "message", |e| {
            matches!(e, Event::Message { .. }).then_some(())
        })
        .await;
    }
    // ann drops off; bob keeps talking.
    ann.close().await;
    drop(ann);
    for i in 4..=7 {
        bob.publish("r", Bytes::from(format!("m{i}")))
            .await
            .unwrap();
    }
    let mut ann = server.client("/chat", "ann").await;
    let joined = ann.join("r", Some(Since { epoch, seq: 3 })).await.unwrap();
    assert!(joined.recovered);
    assert_eq!(joined.seq, 7);
    assert_eq!(joined.epoch, epoch);
    for i in 4..=7u64 {
        let (seq, body) = expect_event(&mut ann, "replayed message", |e| match e {
            Event::Message { seq, body, .. } => Some((*seq, body.clone())),
            _ => None,
        })
        .await;
        assert_eq!((seq, &body[..]), (i, format!("m{i}").as_bytes()));
    }
    // Live messages follow the replay without gap or duplicate.
    bob.publish("r", Bytes::from_static(b"m8")).await.unwrap();
    let seq = expect_event(&mut ann, "live message", |e| match e {
        Event::Message { seq, .. } => Some(*seq),
        _ => None,
    })
    .await;
    assert_eq!(seq, 8);
    server.stop().await;
}

#[tokio::test]
async fn since_beyond_history_says_not_recovered() {
    let mut config = wtgate::config::Config::default();
    config.namespaces.get_mut("/chat").unwrap().history = 5;
    let server = TestServer::start_with(config).await;
    let bob = server.client("/chat", "bob").await;
    let epoch = bob.join("r", None).await.unwrap().epoch;
    for i in 1..=12 {
        bob.publish("r", Bytes::from(format!("m{i}")))
            .await
            .unwrap();
    }
    let mut ann = server.client("/chat", "ann").await;
    let joined = ann.join("r", Some(Since { epoch, seq: 2 })).await.unwrap();
    assert!(!joined.recovered);
    assert_eq!(joined.seq, 12);
    expect_no_event(
        &mut ann,
        "replay",
        std::time::Duration::from_millis(300),
        |e| matches!(e, Event::Message { .. }),
    )
    .await;
    // Within history it still recovers.
    let carl = server.client("/chat", "carl").await;
    assert!(
        carl.join("r", Some(Since { epoch, seq: 7 }))
            .await
            .unwrap()
            .recovered
    );
    // A position from another life of the room is not recovered.
    let dan = server.client("/chat", "dan").await;
    let other_life = Since {
        epoch: epoch - 1,
        seq: 11,
    };
    assert!(!dan.join("r", Some(other_life)).await.unwrap().recovered);
    server.stop().await;
}

#[tokio::test]
async fn server_broadcast_reaches_the_whole_namespace_only() {
    let server = TestServer::start().await;
    let mut ann = server.client("/chat", "ann").await;
    let mut bob = server.client("/chat", "bob").await;
    let mut other = server.client("/notifications", "carl").await;
    server
        .gateway
        .broker
        .broadcast(
            "/chat",
            wtgate::auth::SERVER_USER,
            Bytes::from_static(b"maintenance at 5"),
        )
        .await
        .unwrap();
    for c in [&mut ann, &mut bob] {
        let (from, body) = expect_event(c, "broadcast", |e| match e {
            Event::Broadcast { from, body, .. } => Some((from.clone(), body.clone())),
            _ => None,
        })
        .await;
        assert_eq!(
            (from.as_str(), &body[..]),
            ("server", &b"maintenance at 5"[..])
        );
    }
    expect_no_event(
        &mut other,
        "broadcast in another namespace",
        std::time::Duration::from_millis(200),
        |e| matches!(e, Event::Broadcast { .. }),
    )
    .await;
    server.stop().await;
}
