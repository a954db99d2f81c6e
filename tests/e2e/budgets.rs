//! Memory budgets under abuse by signed-in clients: members that stop reading while
//! others publish large messages are closed, the server's queued bytes stay within
//! their budget, and a member of another room keeps getting its messages.

use std::time::{Duration, Instant};

use bytes::Bytes;
use wtgate::client::Event;
use wtgate::config::Config;
use wtgate::protocol::{ClientFrame, ErrorCode};

use crate::common::*;

const ROOMS: usize = 4;
const BODY: usize = 60 * 1024;
/// Per room: ~9 MB, over twice a silent member's 4 MiB budget.
const MESSAGES: usize = 150;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_members_with_large_messages_are_bounded_in_bytes() {
    let mut config = Config::default();
    config.limits.publish_rate = 1_000.0;
    config.limits.publish_burst = 1_000;
    // Only the byte budget may close them within the test's waits.
    config.limits.stall_timeout = Duration::from_secs(60);
    let budget = 4 * 1024 * 1024;
    assert_eq!(
        config.limits.outbound_bytes, budget,
        "the documented default"
    );
    let server = TestServer::start_with(config).await;

    // In each room a member that joins and then never reads its room stream.
    let mut silent = Vec::new();
    for i in 0..ROOMS {
        let join = ClientFrame::Join {
            req: 1,
            room: format!("big-{i}"),
            since: None,
        };
        let (ep, conn, send, mut recv) = raw_session(
            &server,
            "/chat",
            &[hello(&server, &format!("quiet{i}")), join],
        )
        .await;
        let mut sink = vec![0u8; 4096];
        let drain =
            tokio::spawn(async move { while let Ok(Some(_)) = recv.read(&mut sink).await {} });
        silent.push((ep, conn, send, drain));
    }
    // A calm room next to them.
    let mut calm = server.client("/chat", "calm").await;
    calm.join("calm", None).await.unwrap();
    let calm_sender = server.client("/chat", "calm-sender").await;
    calm_sender.join("calm", None).await.unwrap();

    let api = server.api_client(None);
    let sampler = tokio::spawn(async move {
        let mut peak = 0.0f64;
        for _ in 0..200 {
            let m = api.metrics().await.unwrap();
            peak = peak.max(sample(&m, "wtgate_queued_bytes"));
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        peak
    });

    let body = Bytes::from(vec![b'x'; BODY]);
    let mut publishers = Vec::new();
    for i in 0..ROOMS {
        let publisher = server.client("/chat", &format!("loud{i}")).await;
        publisher.join(&format!("big-{i}"), None).await.unwrap();
        let body = body.clone();
        publishers.push(tokio::spawn(async move {
            let mut publisher = publisher;
            for _ in 0..MESSAGES {
                publisher
                    .publish(&format!("big-{i}"), body.clone())
                    .await
                    .unwrap();
                // The publisher reads its own copies: it is not the slow one.
                while let Ok(Some(_)) =
                    tokio::time::timeout(Duration::ZERO, publisher.next_event()).await
                {
                }
            }
            publisher
        }));
    }

    // The calm room meanwhile: every message arrives, each within a bound.
    let mut worst = Duration::ZERO;
    for n in 0..40u64 {
        let sent = Instant::now();
        let seq = calm_sender
            .publish("calm", Bytes::from(format!("hi {n}")))
            .await
            .unwrap();
        let got = expect_event(&mut calm, "a calm message", |e| match e {
            Event::Message { seq, .. } => Some(*seq),
            _ => None,
        })
        .await;
        assert_eq!(got, seq);
        worst = worst.max(sent.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        worst < Duration::from_secs(2),
        "calm room's worst latency {worst:?}"
    );

    // Every silent member is closed as a slow consumer.
    for (i, (_ep, conn, _send, drain)) in silent.into_iter().enumerate() {
        let code = close_code(within("the silent member's close", conn.closed()).await);
        assert_eq!(code, ErrorCode::SlowConsumer, "quiet{i}");
        drain.abort();
    }
    for p in publishers {
        within("a publisher", p).await.unwrap();
    }
    let peak = within("the sampler", sampler).await.unwrap();
    let bound = (ROOMS * (budget + BODY)) as f64;
    assert!(peak > 0.0, "the queued bytes were sampled");
    assert!(peak <= bound, "queued bytes peaked at {peak}, over {bound}");
    let m = server.api_client(None).metrics().await.unwrap();
    assert!(sample(&m, "wtgate_errors_total{code=\"SlowConsumer\"}") >= ROOMS as f64);
    server.stop().await;
}

/// A member whose stream gets no credit: the join's replay (a room stream's first
/// write) and later writes give up after `stall_timeout`, the session is closed as a
/// slow consumer, and its presence join is withdrawn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_to_a_client_that_grants_no_credit_is_closed_at_the_stall_timeout() {
    replay_without_credit_is_closed(TestServer::start_with).await;
}

/// The test above on a server that `start` makes from its config (on either engine).
pub async fn replay_without_credit_is_closed<F: std::future::Future<Output = TestServer>>(
    start: impl FnOnce(Config) -> F,
) {
    let mut config = Config::default();
    config.limits.publish_rate = 1_000.0;
    config.limits.publish_burst = 1_000;
    config.limits.stall_timeout = Duration::from_secs(1);
    // Room for the whole 6 MB replay, more than the client's receive windows.
    config.limits.history_bytes = 16 * 1024 * 1024;
    let server = start(config).await;
    let ann = server.client("/chat", "ann").await;
    let epoch = ann.join("archive", None).await.unwrap().epoch;
    let body = Bytes::from(vec![b'h'; BODY]);
    for _ in 0..100 {
        ann.publish("archive", body.clone()).await.unwrap();
    }
    // ~6 MB of history, replayed from seq 0 to a client that never reads it.
    let join = ClientFrame::Join {
        req: 1,
        room: "archive".into(),
        since: Some(wtgate::protocol::Since { epoch, seq: 0 }),
    };
    let started = Instant::now();
    let (_ep, conn, _send, mut recv) =
        raw_session(&server, "/chat", &[hello(&server, "stuck"), join]).await;
    let mut sink = vec![0u8; 4096];
    let drain = tokio::spawn(async move { while let Ok(Some(_)) = recv.read(&mut sink).await {} });
    let code = close_code(within("the stuck member's close", conn.closed()).await);
    assert_eq!(code, ErrorCode::SlowConsumer);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(6), "closed after {took:?}");
    drain.abort();
    // Whatever presence it announced is withdrawn: ann is alone again.
    let deadline = Instant::now() + WAIT;
    loop {
        let users = server
            .api_client(Some(API_KEY))
            .presence("/chat", Some("archive"))
            .await
            .unwrap();
        if users == ["ann"] {
            break;
        }
        assert!(Instant::now() < deadline, "presence still {users:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.stop().await;
}

/// Sessions looping join a new room → publish a large message → leave: the rooms
/// and the history they leave behind stay within their budgets, and a room that
/// lost its history answers `recovered: false`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_creating_loop_is_bounded_in_rooms_and_history_bytes() {
    let mut config = Config::default();
    config.limits.publish_rate = 1_000.0;
    config.limits.publish_burst = 1_000;
    config.limits.command_rate = 1_000.0;
    config.limits.command_burst = 1_000;
    config.limits.max_rooms_per_namespace = 64;
    config.limits.history_bytes_total = 2 * 1024 * 1024;
    let server = TestServer::start_with(config).await;
    // A member of a room from before the loop, to check recovery afterwards.
    let keeper = server.client("/chat", "keeper").await;
    let epoch = keeper.join("first", None).await.unwrap().epoch;
    keeper
        .publish("first", Bytes::from(vec![b'k'; BODY]))
        .await
        .unwrap();
    keeper.leave("first").await.unwrap();

    let body = Bytes::from(vec![b'x'; BODY]);
    let mut loops = Vec::new();
    for s in 0..8 {
        let c = server.client("/chat", &format!("maker{s}")).await;
        let body = body.clone();
        loops.push(tokio::spawn(async move {
            for i in 0..40 {
                let room = format!("tmp-{s}-{i}");
                c.join(&room, None).await.unwrap();
                c.publish(&room, body.clone()).await.unwrap();
                c.leave(&room).await.unwrap();
            }
        }));
    }
    for l in loops {
        within("a room-creating loop", l).await.unwrap();
    }
    let m = server.api_client(None).metrics().await.unwrap();
    let history = sample(&m, "wtgate_history_bytes");
    assert!(
        history > 0.0 && history <= 2.0 * 1024.0 * 1024.0,
        "{history}"
    );
    // 320 rooms were made, 64 kept: the first room gave way long ago, and a
    // rejoin is told nothing was kept.
    let back = keeper
        .join("first", Some(wtgate::protocol::Since { epoch, seq: 0 }))
        .await
        .unwrap();
    assert!(!back.recovered);
    server.stop().await;
}
