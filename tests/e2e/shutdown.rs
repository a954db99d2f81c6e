//! Graceful shutdown: clients are told to go away and the server stops in time.

use std::time::{Duration, Instant};
use wtgate::client::Event;
use wtgate::protocol::ErrorCode;

use crate::common::*;

#[tokio::test]
async fn shutdown_sends_go_away_and_closes_every_session() {
    go_away_then_close(TestServer::start().await).await;
}

/// The test above on `server` (either engine).
pub async fn go_away_then_close(server: TestServer) {
    let mut clients = Vec::new();
    for i in 0..5 {
        let c = server.client("/chat", &format!("u{i}")).await;
        c.join("r", None).await.unwrap();
        clients.push(c);
    }
    let started = Instant::now();
    server.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "took {:?}",
        started.elapsed()
    );
    for c in clients.iter_mut() {
        expect_event(c, "GoAway", |e| {
            matches!(e, Event::GoAway { .. }).then_some(())
        })
        .await;
        assert_eq!(expect_closed(c).await, Some(ErrorCode::GoingAway));
    }
}

#[tokio::test]
async fn a_stopped_server_accepts_no_new_sessions() {
    let server = TestServer::start().await;
    let url = server.url("/chat");
    let token = server.token("ann");
    let trust = server.trust();
    server.stop().await;
    let attempt = tokio::time::timeout(
        Duration::from_secs(15),
        wtgate::client::Client::connect(&url, &token, &trust),
    )
    .await
    .expect("connect gives up in time");
    let err = attempt.unwrap_err();
    assert!(
        matches!(err, wtgate::client::ClientError::Connect { .. }),
        "{err}"
    );
}
