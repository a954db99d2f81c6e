//! Every limit answers with a clear error; bad bytes close only the offending session.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use wtgate::client::{open_session, Client, ClientError, Event};
use wtgate::config::Config;
use wtgate::protocol::{encode_frame, ClientFrame, ErrorCode};

use crate::common::*;

fn small_limits() -> Config {
    let mut c = Config::default();
    c.limits.max_frame = 1024;
    c.limits.max_rooms_per_session = 3;
    c.limits.publish_rate = 2.0;
    c.limits.publish_burst = 5;
    c.limits.max_room_name = 16;
    c.limits.hello_timeout = Duration::from_millis(500);
    c
}

/// A bystander in room "r" who must see the session next door fail without harm.
async fn bystander(server: &TestServer) -> Client {
    let c = server.client("/chat", "bystander").await;
    c.join("r", None).await.unwrap();
    c
}

async fn bystander_still_served(server: &TestServer, mut c: Client) {
    let other = server.client("/chat", "other").await;
    other.join("r", None).await.unwrap();
    let seq = other.publish("r", Bytes::from_static(b"ok")).await.unwrap();
    let got = expect_event(&mut c, "message after the neighbour failed", |e| match e {
        Event::Message { seq, .. } => Some(*seq),
        _ => None,
    })
    .await;
    assert_eq!(got, seq);
}

#[tokio::test]
async fn too_many_rooms() {
    let server = TestServer::start_with(small_limits()).await;
    let c = server.client("/chat", "ann").await;
    for r in ["a", "b", "c"] {
        c.join(r, None).await.unwrap();
    }
    assert_eq!(refused(c.join("d", None).await), ErrorCode::TooManyRooms);
    c.leave("a").await.unwrap();
    c.join("d", None).await.unwrap();
    assert_eq!(refused(c.join("d", None).await), ErrorCode::AlreadyJoined);
    server.stop().await;
}

#[tokio::test]
async fn invalid_room_names() {
    let server = TestServer::start_with(small_limits()).await;
    let c = server.client("/chat", "ann").await;
    for bad in ["", "seventeen-bytes!!", "two words", "tab\there"] {
        assert_eq!(
            refused(c.join(bad, None).await),
            ErrorCode::InvalidRoom,
            "{bad:?}"
        );
    }
    c.join("sixteen-bytes-ok", None).await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn publish_rate_limit() {
    let server = TestServer::start_with(small_limits()).await;
    let c = server.client("/chat", "ann").await;
    c.join("r", None).await.unwrap();
    let mut ok = 0;
    let mut limited = 0;
    for _ in 0..12 {
        match c.publish("r", Bytes::from_static(b"x")).await {
            Ok(_) => ok += 1,
            Err(ClientError::Server {
                code: ErrorCode::RateLimited,
                ..
            }) => limited += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(
        (5..=6).contains(&ok),
        "burst of 5 (plus refill) allowed, got {ok}"
    );
    assert_eq!(ok + limited, 12);
    // The session survives and the bucket refills.
    tokio::time::sleep(Duration::from_millis(600)).await;
    c.publish("r", Bytes::from_static(b"later")).await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn unknown_command_is_answered_and_the_session_goes_on() {
    let server = TestServer::start().await;
    let mut c = server.client("/chat", "ann").await;
    // Length 2, tag 99 (a command from the future), one byte of payload.
    c.send_raw(&[0x02, 0x63, 0x00]).await.unwrap();
    let code = expect_event(&mut c, "UnknownCommand error", |e| match e {
        Event::Error { code, .. } => Some(*code),
        _ => None,
    })
    .await;
    assert_eq!(code, ErrorCode::UnknownCommand);
    c.join("r", None).await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn oversized_frame_closes_only_that_session() {
    let server = TestServer::start_with(small_limits()).await;
    let by = bystander(&server).await;
    let mut c = server.client("/chat", "ann").await;
    c.join("r", None).await.unwrap();
    let mut buf = BytesMut::new();
    encode_frame(
        &ClientFrame::Publish {
            req: 7,
            room: "r".into(),
            body: Bytes::from(vec![0u8; 2000]),
        },
        &mut buf,
    );
    c.send_raw(&buf).await.unwrap();
    let err = expect_event(&mut c, "FrameTooLarge", |e| match e {
        Event::Error { code, .. } => Some(*code),
        _ => None,
    })
    .await;
    assert_eq!(err, ErrorCode::FrameTooLarge);
    assert_eq!(expect_closed(&mut c).await, Some(ErrorCode::FrameTooLarge));
    bystander_still_served(&server, by).await;
    server.stop().await;
}

#[tokio::test]
async fn malformed_bytes_close_only_that_session() {
    let server = TestServer::start().await;
    let by = bystander(&server).await;
    let cases: [(&str, &[u8]); 3] = [
        (
            "bad utf-8 room name",
            &[0x06, 0x01, 0x01, 0x03, 0xff, 0xfe, 0x00],
        ),
        ("truncated Join", &[0x02, 0x01, 0x01]),
        (
            "overlong length varint",
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
        ),
    ];
    for (what, bytes) in cases {
        let mut c = server.client("/chat", "mallory").await;
        c.send_raw(bytes).await.unwrap();
        assert_eq!(
            expect_closed(&mut c).await,
            Some(ErrorCode::Protocol),
            "{what}"
        );
    }
    // A malformed datagram too: a Send whose body length is missing.
    let mut c = server.client("/chat", "mallory").await;
    c.send_raw_datagram(Bytes::from_static(&[0x00, 0x01]))
        .unwrap();
    assert_eq!(
        expect_closed(&mut c).await,
        Some(ErrorCode::Protocol),
        "bad datagram"
    );
    bystander_still_served(&server, by).await;
    server.stop().await;
}

#[tokio::test]
async fn hello_rules() {
    let server = TestServer::start_with(small_limits()).await;
    let url = server.url("/chat");
    let raw = |bytes: Vec<u8>| {
        let url = url.clone();
        let trust = server.trust();
        async move {
            let (_ep, conn) = open_session(&url, &trust).await.unwrap();
            let (mut send, mut recv) = conn.open_bi().await.unwrap().await.unwrap();
            if !bytes.is_empty() {
                send.write_all(&bytes).await.unwrap();
            }
            // Whatever the server says, it closes the session with a code.
            let mut sink = vec![0u8; 4096];
            while let Ok(Some(_)) = recv.read(&mut sink).await {}
            close_code(within("close", conn.closed()).await)
        }
    };
    let frame = |f: ClientFrame| {
        let mut b = BytesMut::new();
        encode_frame(&f, &mut b);
        b.to_vec()
    };
    // Silence: closed after hello_timeout.
    assert_eq!(raw(vec![]).await, ErrorCode::HelloTimeout);
    // Anything but Hello first.
    assert_eq!(
        raw(frame(ClientFrame::Online { req: 1 })).await,
        ErrorCode::Protocol
    );
    // Wrong version.
    let token = server.token("ann");
    assert_eq!(
        raw(frame(ClientFrame::Hello {
            version: 99,
            token: token.clone()
        }))
        .await,
        ErrorCode::UnsupportedVersion
    );
    // Hello twice.
    let mut twice = frame(ClientFrame::Hello {
        version: 1,
        token: token.clone(),
    });
    twice.extend(frame(ClientFrame::Hello { version: 1, token }));
    assert_eq!(raw(twice).await, ErrorCode::Protocol);
    // A Hello over max_hello (8 KiB), though under max_frame: no token is that big.
    let mut big = Config::default();
    big.limits.hello_timeout = Duration::from_millis(500);
    let big_server = TestServer::start_with(big).await;
    let (_ep, conn) = open_session(&big_server.url("/chat"), &big_server.trust())
        .await
        .unwrap();
    let (mut send, _recv) = conn.open_bi().await.unwrap().await.unwrap();
    send.write_all(&frame(ClientFrame::Hello {
        version: 1,
        token: "x".repeat(9000),
    }))
    .await
    .unwrap();
    let code = close_code(within("close", conn.closed()).await);
    assert_eq!(code, ErrorCode::FrameTooLarge);
    big_server.stop().await;
    server.stop().await;
}

#[tokio::test]
async fn connections_awaiting_hello_are_capped() {
    let mut config = small_limits();
    config.limits.max_awaiting_hello = 3;
    config.limits.hello_timeout = Duration::from_secs(2);
    let server = TestServer::start_with(config).await;
    let url = server.url("/chat");
    // Three connections that never say Hello (nor open a stream).
    let mut silent = Vec::new();
    for _ in 0..3 {
        silent.push(open_session(&url, &server.trust()).await.unwrap());
    }
    let metrics = server.api_client(None).metrics().await.unwrap();
    assert_eq!(sample(&metrics, "wtgate_sessions_awaiting_hello"), 3.0);
    let refused = Client::connect(&url, &server.token("ann"), &server.trust()).await;
    assert!(
        matches!(refused, Err(ClientError::Connect { .. })),
        "{refused:?}"
    );
    // They are closed at the hello deadline, counted from their first packet;
    // then there is room again.
    let started = Instant::now();
    for (_ep, conn) in &silent {
        within("the silent connection's close", conn.closed()).await;
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let c = server.client("/chat", "ann").await;
    c.join("r", None).await.unwrap();
    let metrics = server.api_client(None).metrics().await.unwrap();
    assert_eq!(sample(&metrics, "wtgate_sessions_awaiting_hello"), 0.0);
    server.stop().await;
}

#[tokio::test]
async fn token_claims_restrict_namespaces_and_rooms() {
    let server = TestServer::start().await;
    let claims = wtgate::auth::Claims {
        ns: Some(vec!["/chat".into()]),
        rooms: Some(vec!["team-*".into()]),
        ..wtgate::auth::Claims::new("ann", now(), 600)
    };
    let token = token_for(&claims);
    let err = Client::connect(&server.url("/notifications"), &token, &server.trust()).await;
    assert_eq!(refused(err), ErrorCode::Forbidden);
    let c = Client::connect(&server.url("/chat"), &token, &server.trust())
        .await
        .unwrap();
    c.join("team-blue", None).await.unwrap();
    assert_eq!(refused(c.join("admins", None).await), ErrorCode::Forbidden);
    server.stop().await;
}

#[tokio::test]
async fn server_only_namespaces_refuse_client_publishes() {
    let server = TestServer::start().await;
    let c = server.client("/notifications", "ann").await;
    c.join("news", None).await.unwrap();
    assert_eq!(
        refused(c.publish("news", Bytes::from_static(b"x")).await),
        ErrorCode::Forbidden
    );
    server.stop().await;
}

#[tokio::test]
async fn sessions_per_user_are_limited() {
    let mut config = Config::default();
    config.limits.max_sessions_per_user = 2;
    let server = TestServer::start_with(config).await;
    let _a = server.client("/chat", "ann").await;
    let _b = server.client("/chat", "ann").await;
    let third = Client::connect(&server.url("/chat"), &server.token("ann"), &server.trust()).await;
    assert_eq!(refused(third), ErrorCode::TooManySessions);
    server.client("/chat", "bob").await;
    server.stop().await;
}

#[tokio::test]
async fn a_client_that_never_reads_is_closed_as_slow_consumer() {
    let mut config = Config::default();
    config.limits.outbound_queue = 64;
    config.limits.publish_rate = 100_000.0;
    config.limits.publish_burst = 100_000;
    let server = TestServer::start_with(config).await;
    // The slow client joins but never reads its room stream.
    let join = ClientFrame::Join {
        req: 1,
        room: "r".into(),
        since: None,
    };
    let (_ep, conn, _send, mut recv) =
        raw_session(&server, "/chat", &[hello(&server, "slow"), join]).await;
    // Read the control replies (Welcome, Joined) but never accept the room stream.
    let mut sink = vec![0u8; 4096];
    let drain = tokio::spawn(async move { while let Ok(Some(_)) = recv.read(&mut sink).await {} });
    let mut fast = server.client("/chat", "fast").await;
    fast.join("r", None).await.unwrap();
    let body = Bytes::from(vec![b'x'; 8000]);
    let mut published = 0u64;
    let closed = conn.closed();
    tokio::pin!(closed);
    let code = within("slow consumer close", async {
        loop {
            tokio::select! {
                e = &mut closed => break close_code(e),
                r = fast.publish("r", body.clone()) => {
                    r.unwrap();
                    published += 1;
                }
            }
        }
    })
    .await;
    assert_eq!(code, ErrorCode::SlowConsumer, "after {published} messages");
    drain.abort();
    // The well-behaved client got every message, in order, meanwhile.
    for seq in 1..=published {
        let got = expect_event(&mut fast, "own message", |e| match e {
            Event::Message { seq, .. } => Some(*seq),
            _ => None,
        })
        .await;
        assert_eq!(got, seq);
    }
    server.stop().await;
}

#[tokio::test]
async fn datagrams_of_unknown_types_are_dropped_not_fatal() {
    let server = TestServer::start().await;
    let c = server.client("/chat", "ann").await;
    c.join("r", None).await.unwrap();
    c.send_raw_datagram(Bytes::from_static(&[0x07, 0x01, 0x02]))
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    c.publish("r", Bytes::from_static(b"still open"))
        .await
        .unwrap();
    server.stop().await;
}

#[tokio::test]
async fn resetting_the_control_stream_ends_the_session() {
    let server = TestServer::start().await;
    let (_ep, conn, mut send, mut recv) =
        raw_session(&server, "/chat", &[hello(&server, "ann")]).await;
    let mut welcome = [0u8; 64];
    let _ = recv.read(&mut welcome).await.unwrap();
    send.reset(7u32.into()).unwrap();
    let closed = within("close after the reset", conn.closed()).await;
    match closed {
        wtransport::error::ConnectionError::ApplicationClosed(c) => {
            assert_eq!(
                ErrorCode::from(c.code().into_inner() as u32),
                ErrorCode::Protocol
            )
        }
        other => panic!("expected an application close, got {other}"),
    }
    // No session is left behind.
    within("the session to go", async {
        while server.gateway.hub.session_count() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    server.stop().await;
}
