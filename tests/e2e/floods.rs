//! Hostile clients are limited or closed; a well-behaved client next to them loses
//! nothing and keeps a bounded latency.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use wtgate::client::{open_session, Client, ClientError, Event};
use wtgate::config::Config;
use wtgate::protocol::{encode_datagram, encode_frame, ClientFrame, Datagram, ErrorCode, Since};

use crate::common::*;

/// A listener and a polite publisher in room "r": the publisher sends `n` messages
/// one by one; every one must reach the listener in order, each within `bound`.
async fn polite_traffic_is_unharmed(
    server: &TestServer,
    listener: &mut Client,
    n: u64,
    bound: Duration,
) {
    let polite = server.client("/chat", "polite").await;
    polite.join("r", None).await.unwrap();
    let mut worst = Duration::ZERO;
    let mut last_seq = 0;
    for i in 0..n {
        let sent = Instant::now();
        let body = Bytes::from(format!("polite {i}"));
        polite.publish("r", body.clone()).await.unwrap();
        let seq = expect_event(listener, "polite message", |e| match e {
            Event::Message {
                seq, from, body: b, ..
            } if from == "polite" && *b == body => Some(*seq),
            _ => None,
        })
        .await;
        assert!(seq > last_seq, "order kept");
        last_seq = seq;
        worst = worst.max(sent.elapsed());
    }
    assert!(
        worst < bound,
        "worst polite latency {worst:?} exceeds {bound:?}"
    );
}

async fn listener(server: &TestServer) -> Client {
    let c = server.client("/chat", "listener").await;
    c.join("r", None).await.unwrap();
    c
}

#[tokio::test]
async fn a_publish_storm_is_rate_limited() {
    let server = TestServer::start().await;
    let mut listen = listener(&server).await;
    let mut attacker = server.client("/chat", "attacker").await;
    attacker.join("r", None).await.unwrap();
    // 2,000 publishes pipelined without waiting for replies.
    let mut storm = BytesMut::new();
    for req in 1..=2000 {
        encode_frame(
            &ClientFrame::Publish {
                req,
                room: "r".into(),
                body: Bytes::from_static(b"spam"),
            },
            &mut storm,
        );
    }
    attacker.send_raw(&storm).await.unwrap();
    polite_traffic_is_unharmed(&server, &mut listen, 20, Duration::from_secs(2)).await;
    // Only about the burst (100) got through; the rest was refused.
    let mut spam = 0;
    while let Some(e) = listen.try_event() {
        if matches!(&e, Event::Message { from, .. } if from == "attacker") {
            spam += 1;
        }
    }
    assert!(spam <= 150, "{spam} spam messages delivered");
    let metrics = server.gateway.metrics_text().await;
    assert!(
        sample(&metrics, "wtgate_errors_total{code=\"RateLimited\"}") >= 1800.0,
        "the refused publishes are counted: {metrics}"
    );
    let _ = attacker.try_event();
    server.stop().await;
}

#[tokio::test]
async fn a_join_storm_is_capped() {
    let mut config = Config::default();
    config.limits.max_rooms_per_session = 20;
    let server = TestServer::start_with(config).await;
    let mut listen = listener(&server).await;
    let attacker = server.client("/chat", "attacker").await;
    let mut refused = 0;
    for i in 0..200 {
        match attacker.join(&format!("room{i}"), None).await {
            Ok(_) => {}
            Err(ClientError::Server {
                code: ErrorCode::TooManyRooms,
                ..
            }) => refused += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(refused, 180);
    assert_eq!(server.gateway.hub.room_count(), 21, "20 rooms + r");
    polite_traffic_is_unharmed(&server, &mut listen, 10, Duration::from_secs(2)).await;
    server.stop().await;
}

#[tokio::test]
async fn online_spam_is_rate_limited() {
    let server = TestServer::start().await;
    let mut listen = listener(&server).await;
    let spammer = server.client("/chat", "spammer").await;
    let (mut answered, mut limited) = (0, 0);
    for _ in 0..400 {
        match spammer.online().await {
            Ok(_) => answered += 1,
            Err(ClientError::Server {
                code: ErrorCode::RateLimited,
                ..
            }) => limited += 1,
            Err(e) => panic!("{e}"),
        }
    }
    // The burst of 200, plus what 50/s refills while the loop runs.
    assert!((200..300).contains(&answered), "{answered} answered");
    assert_eq!(answered + limited, 400);
    polite_traffic_is_unharmed(&server, &mut listen, 10, Duration::from_secs(2)).await;
    server.stop().await;
}

#[tokio::test]
async fn a_datagram_flood_is_dropped_beyond_the_rate() {
    let mut config = Config::default();
    config.limits.datagram_rate = 50.0;
    config.limits.datagram_burst = 50;
    let server = TestServer::start_with(config).await;
    let mut listen = listener(&server).await;
    let attacker = server.client("/chat", "attacker").await;
    let handle = attacker.join("r", None).await.unwrap().handle;
    let d = encode_datagram(&Datagram::Send {
        handle,
        body: Bytes::from_static(b"flood"),
    });
    let started = Instant::now();
    for _ in 0..3000 {
        let _ = attacker.send_raw_datagram(d.clone());
        tokio::task::yield_now().await;
    }
    let elapsed = started.elapsed();
    polite_traffic_is_unharmed(&server, &mut listen, 10, Duration::from_secs(2)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut got = 0;
    while let Some(e) = listen.try_event() {
        if matches!(e, Event::Volatile { .. }) {
            got += 1;
        }
    }
    let allowed = 50.0 + 50.0 * (elapsed.as_secs_f64() + 0.5);
    assert!(
        f64::from(got) <= allowed,
        "{got} datagrams passed, at most {allowed} allowed"
    );
    let metrics = server.gateway.metrics_text().await;
    assert!(
        sample(&metrics, "wtgate_datagrams_dropped_total") > 0.0,
        "drops are counted: {metrics}"
    );
    server.stop().await;
}

#[tokio::test]
async fn opening_streams_endlessly_is_capped_by_flow_control() {
    let server = TestServer::start().await;
    let mut listen = listener(&server).await;
    let (_ep, conn) = open_session(&server.url("/chat"), &server.trust())
        .await
        .unwrap();
    let mut opened = 0;
    let attempt = tokio::time::timeout(Duration::from_millis(800), async {
        for _ in 0..1000 {
            let stream = conn.open_bi().await.unwrap().await.unwrap();
            std::mem::forget(stream);
            opened += 1;
        }
    })
    .await;
    assert!(
        attempt.is_err(),
        "the server let the client open 1,000 streams"
    );
    assert!(opened <= 4, "{opened} streams opened");
    polite_traffic_is_unharmed(&server, &mut listen, 5, Duration::from_secs(2)).await;
    server.stop().await;
}

#[tokio::test]
async fn connections_per_ip_are_rate_limited() {
    let mut config = Config::default();
    config.limits.connect_rate_per_ip = 2.0;
    config.limits.connect_burst_per_ip = 3;
    let server = TestServer::start_with(config).await;
    let url = server.url("/chat");
    let mut refused = 0;
    for i in 0..8 {
        match Client::connect(&url, &server.token(&format!("u{i}")), &server.trust()).await {
            Ok(c) => drop(c),
            Err(ClientError::Connect { .. }) => refused += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(refused >= 4, "only {refused} of 8 refused");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    Client::connect(&url, &server.token("later"), &server.trust())
        .await
        .expect("the budget refills");
    server.stop().await;
}

#[tokio::test]
async fn past_the_unvalidated_rate_clients_pass_a_retry_and_carry_on() {
    let mut config = Config::default();
    config.limits.unvalidated_connect_rate = 0.0; // validate every address
    let server = TestServer::start_with(config).await;
    let mut ann = server.client("/chat", "ann").await;
    ann.join("r", None).await.unwrap();
    let bob = server.client("/chat", "bob").await;
    bob.join("r", None).await.unwrap();
    let seq = bob
        .publish("r", Bytes::from_static(b"after a retry"))
        .await
        .unwrap();
    let got = expect_event(&mut ann, "the message", |e| match e {
        Event::Message { seq, body, .. } => Some((*seq, body.clone())),
        _ => None,
    })
    .await;
    assert_eq!(got, (seq, Bytes::from_static(b"after a retry")));
    let metrics = server.api_client(None).metrics().await.unwrap();
    assert_eq!(
        sample(&metrics, "wtgate_connect_retries_total"),
        2.0,
        "{metrics}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_graceful_restart_keeps_recovery_working() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = TestServer::start_with_data(&data).await;
    let mut ann = server.client("/chat", "ann").await;
    let epoch = ann.join("r", None).await.unwrap().epoch;
    let bob = server.client("/chat", "bob").await;
    bob.join("r", None).await.unwrap();
    bob.publish("r", Bytes::from_static(b"one")).await.unwrap();
    expect_event(&mut ann, "one", |e| {
        matches!(e, Event::Message { .. }).then_some(())
    })
    .await;
    // Acknowledged while ann is still connected, then the server restarts.
    bob.publish("r", Bytes::from_static(b"two")).await.unwrap();
    bob.publish("r", Bytes::from_static(b"three"))
        .await
        .unwrap();
    drop((ann, bob));
    server.stop().await;

    let server = TestServer::start_with_data(&data).await;
    let mut ann = server.client("/chat", "ann").await;
    let joined = ann.join("r", Some(Since { epoch, seq: 1 })).await.unwrap();
    assert!(joined.recovered, "history survived the graceful restart");
    assert_eq!((joined.epoch, joined.seq), (epoch, 3));
    for want in [&b"two"[..], b"three"] {
        let body = expect_event(&mut ann, "replay", |e| match e {
            Event::Message { body, .. } => Some(body.clone()),
            _ => None,
        })
        .await;
        assert_eq!(&body[..], want);
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_junk_udp_does_not_starve_sessions() {
    let server = TestServer::start().await;
    let mut listen = listener(&server).await;
    let target = std::net::SocketAddr::from(([127, 0, 0, 1], server.addr.port()));
    let stop = tokio_util::sync::CancellationToken::new();
    // Bounded in count and time: datagrams no connection owns (short headers with
    // unknown ids, and long headers that are not a valid Initial), as fast as the
    // socket takes them.
    let flood = tokio::spawn({
        let stop = stop.clone();
        async move {
            let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let started = Instant::now();
            let mut sent = 0u64;
            let mut junk = [0u8; 1200];
            while sent < 300_000
                && started.elapsed() < Duration::from_secs(5)
                && !stop.is_cancelled()
            {
                junk[0] = if sent.is_multiple_of(2) { 0x40 } else { 0xc0 };
                junk[1..9].copy_from_slice(&sent.to_le_bytes());
                if socket.send_to(&junk, target).await.is_ok() {
                    sent += 1;
                }
                if sent.is_multiple_of(64) {
                    tokio::task::yield_now().await;
                }
            }
            sent
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    polite_traffic_is_unharmed(&server, &mut listen, 10, Duration::from_secs(1)).await;
    stop.cancel();
    let sent = flood.await.unwrap();
    assert!(sent > 1_000, "the flood ran: {sent} datagrams");
    eprintln!("junk datagrams sent during the polite traffic: {sent}");
    // New sessions still open.
    let late = server.client("/chat", "late").await;
    late.join("r", None).await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn a_flood_of_probe_datagrams_costs_others_nothing() {
    let server = TestServer::start().await;
    let mut listen = listener(&server).await;
    let prober = server.client("/chat", "prober").await;
    prober.join("r", None).await.unwrap();
    // Probes spend no datagram credit (PROTOCOL.md §10.1): nothing limits them
    // but QUIC's datagram buffer, and each costs the server one decode.
    let started = Instant::now();
    let mut sent = 0u32;
    while sent < 20_000 && started.elapsed() < Duration::from_secs(3) {
        if prober
            .send_raw_datagram(Bytes::from_static(&wtgate::protocol::PROBE_DATAGRAM))
            .is_ok()
        {
            sent += 1;
        }
        if sent.is_multiple_of(64) {
            tokio::task::yield_now().await;
        }
    }
    polite_traffic_is_unharmed(&server, &mut listen, 10, Duration::from_secs(1)).await;
    expect_no_event(
        &mut listen,
        "a probe forwarded",
        Duration::from_millis(200),
        |e| matches!(e, Event::Volatile { .. }),
    )
    .await;
    // Nothing to close the prober for: it is still served.
    prober
        .publish("r", Bytes::from_static(b"still here"))
        .await
        .unwrap();
    assert!(sent >= 1_000, "the flood ran: {sent} probes");
    server.stop().await;
}
