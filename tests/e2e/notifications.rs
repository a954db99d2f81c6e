//! Durable per-user inboxes on /notifications: at-least-once, acked away, kept
//! across restarts, bounded.

use bytes::Bytes;
use std::time::Duration;
use wtgate::client::Client;
use wtgate::config::Config;

use crate::common::*;

async fn next_notification(c: &mut Client) -> (u64, String, Bytes) {
    expect_event(c, "notification", notification).await
}

async fn expect_no_notification(c: &mut Client) {
    expect_no_event(c, "notification", Duration::from_millis(300), |e| {
        notification(e).is_some()
    })
    .await;
}

async fn notify(server: &TestServer, user: &str, body: &str) -> u64 {
    server
        .gateway
        .notify(user, "mention", Bytes::from(body.to_owned()))
        .await
        .unwrap()
        .id
}

#[tokio::test]
async fn an_online_user_gets_it_on_every_session() {
    let server = TestServer::start().await;
    let mut tab1 = server.client("/notifications", "ann").await;
    let mut tab2 = server.client("/notifications", "ann").await;
    let mut bob = server.client("/notifications", "bob").await;
    let mut chat = server.client("/chat", "ann").await;
    let id = notify(&server, "ann", "hello ann").await;
    for tab in [&mut tab1, &mut tab2] {
        let got = next_notification(tab).await;
        assert_eq!(
            got,
            (id, "mention".into(), Bytes::from_static(b"hello ann"))
        );
    }
    expect_no_notification(&mut bob).await;
    expect_no_notification(&mut chat).await;
    server.stop().await;
}

#[tokio::test]
async fn an_offline_user_gets_everything_pending_in_order_on_connect() {
    let server = TestServer::start().await;
    let ids = [
        notify(&server, "ann", "one").await,
        notify(&server, "ann", "two").await,
        notify(&server, "ann", "three").await,
    ];
    let mut ann = server.client("/notifications", "ann").await;
    for (id, body) in ids.iter().zip(["one", "two", "three"]) {
        let got = next_notification(&mut ann).await;
        assert_eq!((got.0, &got.2[..]), (*id, body.as_bytes()));
    }
    // Live ones follow without duplicates.
    let four = notify(&server, "ann", "four").await;
    assert_eq!(next_notification(&mut ann).await.0, four);
    expect_no_notification(&mut ann).await;
    server.stop().await;
}

#[tokio::test]
async fn ack_removes_and_unacked_ones_come_back() {
    let server = TestServer::start().await;
    let a = notify(&server, "ann", "a").await;
    let b = notify(&server, "ann", "b").await;
    let mut ann = server.client("/notifications", "ann").await;
    assert_eq!(next_notification(&mut ann).await.0, a);
    assert_eq!(next_notification(&mut ann).await.0, b);
    ann.ack_notification(a).await.unwrap();
    // Acking twice, or an id that never existed, is harmless.
    ann.ack_notification(a).await.unwrap();
    ann.ack_notification(999).await.unwrap();
    ann.close().await;
    let mut ann = server.client("/notifications", "ann").await;
    assert_eq!(
        next_notification(&mut ann).await.0,
        b,
        "unacked b is redelivered"
    );
    expect_no_notification(&mut ann).await;
    server.stop().await;
}

#[tokio::test]
async fn inboxes_survive_a_restart_without_loss_or_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = TestServer::start_with_data(&data).await;
    let first = notify(&server, "ann", "before restart 1").await;
    let second = notify(&server, "ann", "before restart 2").await;
    let mut ann = server.client("/notifications", "ann").await;
    assert_eq!(next_notification(&mut ann).await.0, first);
    assert_eq!(next_notification(&mut ann).await.0, second);
    ann.ack_notification(first).await.unwrap();
    drop(ann);
    server.stop().await;

    let server = TestServer::start_with_data(&data).await;
    let mut ann = server.client("/notifications", "ann").await;
    let got = next_notification(&mut ann).await;
    assert_eq!((got.0, &got.2[..]), (second, &b"before restart 2"[..]));
    expect_no_notification(&mut ann).await;
    let third = notify(&server, "ann", "after restart").await;
    assert!(third > second, "ids keep increasing across restarts");
    assert_eq!(next_notification(&mut ann).await.0, third);
    server.stop().await;
}

#[tokio::test]
async fn the_inbox_is_bounded_oldest_first() {
    let mut config = Config::default();
    config.limits.max_inbox = 3;
    let server = TestServer::start_with(config).await;
    for i in 1..=5 {
        notify(&server, "ann", &format!("n{i}")).await;
    }
    let mut ann = server.client("/notifications", "ann").await;
    for id in 3..=5 {
        assert_eq!(next_notification(&mut ann).await.0, id);
    }
    expect_no_notification(&mut ann).await;
    let metrics = server.gateway.metrics_text().await;
    assert_eq!(
        sample(&metrics, "wtgate_notifications_evicted_total"),
        2.0,
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "wtgate_notifications_pending"),
        3.0,
        "{metrics}"
    );
    server.stop().await;
}

#[tokio::test]
async fn acks_outside_inbox_namespaces_are_refused() {
    let server = TestServer::start().await;
    let chat = server.client("/chat", "ann").await;
    let ack = chat.ack_notification(1).await;
    assert_eq!(refused(ack), wtgate::protocol::ErrorCode::Forbidden);
    server.stop().await;
}

#[tokio::test]
async fn notify_validates_its_input() {
    let server = TestServer::start().await;
    let g = &server.gateway;
    let body = Bytes::from_static(b"x");
    assert!(g.notify("", "k", body.clone()).await.is_err());
    assert!(
        g.notify("server", "k", body.clone()).await.is_err(),
        "reserved user"
    );
    assert!(g.notify("two words", "k", body.clone()).await.is_err());
    assert!(g.notify("ann", "", body.clone()).await.is_err());
    assert!(g
        .notify("ann", &"k".repeat(65), body.clone())
        .await
        .is_err());
    let huge = Bytes::from(vec![0u8; 70_000]);
    assert!(g.notify("ann", "k", huge).await.is_err());
    server.stop().await;
}
