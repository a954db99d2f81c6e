//! Hello, tokens and namespace routing.

use std::time::Duration;

use crate::common::*;
use wtgate::auth::Claims;
use wtgate::client::{Client, ClientError};
use wtgate::protocol::ErrorCode;

#[tokio::test]
async fn a_valid_token_is_welcomed() {
    let server = TestServer::start().await;
    let client = server.client("/chat", "ann").await;
    let w = client.welcome();
    assert_eq!(w.user, "ann");
    assert_eq!(w.online.as_deref(), Some(&["ann".to_owned()][..]));
    assert_eq!(w.max_frame, 65536);
    server.stop().await;
}

#[tokio::test]
async fn bad_tokens_are_refused_with_unauthorized() {
    let server = TestServer::start().await;
    let url = server.url("/chat");
    let forged = wtgate::auth::mint(
        b"another-secret-entirely",
        &wtgate::auth::Claims::new("ann", now(), 60),
    )
    .unwrap();
    let expired = token_for(&wtgate::auth::Claims {
        exp: now() - 10,
        ..wtgate::auth::Claims::new("ann", now() - 100, 60)
    });
    for (what, token) in [
        ("empty", String::new()),
        ("garbage", "not.a.jwt".into()),
        ("forged", forged),
        ("expired", expired),
    ] {
        match Client::connect(&url, &token, &server.trust()).await {
            Err(ClientError::Server { code, message }) => {
                assert_eq!(code, ErrorCode::Unauthorized, "{what}: {message}")
            }
            other => panic!("{what} token: expected Unauthorized, got {other:?}"),
        }
    }
    // The server carries on.
    server.client("/chat", "ann").await;
    server.stop().await;
}

#[tokio::test]
async fn unknown_namespaces_are_rejected_before_any_stream() {
    unknown_namespace_is_rejected(TestServer::start().await).await;
}

/// The test above on `server` (either engine).
pub async fn unknown_namespace_is_rejected(server: TestServer) {
    let err = Client::connect(&server.url("/nope"), &server.token("ann"), &server.trust())
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Connect { .. }), "{err:?}");
    assert!(err.to_string().contains("rejected"), "{err}");
    server.stop().await;
}

#[tokio::test]
async fn an_expired_token_closes_the_session_unless_refreshed() {
    let server = TestServer::start().await;
    let url = server.url("/chat");
    let short = |user: &str| token_for(&Claims::new(user, now(), 2));
    let mut lapsing = Client::connect(&url, &short("ann"), &server.trust())
        .await
        .unwrap();
    let refreshed = Client::connect(&url, &short("bob"), &server.trust())
        .await
        .unwrap();
    refreshed.join("r", None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    refreshed
        .refresh(&token_for(&Claims::new("bob", now(), 60)))
        .await
        .unwrap();
    // Another user's token is refused, and changes nothing.
    let refused = refreshed.refresh(&server.token("carl")).await.unwrap_err();
    assert!(
        matches!(
            refused,
            ClientError::Server {
                code: ErrorCode::Forbidden,
                ..
            }
        ),
        "{refused}"
    );
    let started = std::time::Instant::now();
    assert_eq!(
        expect_closed(&mut lapsing).await,
        Some(ErrorCode::TokenExpired)
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Past the first token's exp, the refreshed session still works.
    refreshed
        .publish("r", bytes::Bytes::from_static(b"still here"))
        .await
        .unwrap();
    server.stop().await;
}

#[tokio::test]
async fn revoked_tokens_stay_refused_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = TestServer::start_with_data(&data).await;
    let old = token_for(&Claims::new("ann", now(), 3600));
    let mut ann = Client::connect(&server.url("/chat"), &old, &server.trust())
        .await
        .unwrap();
    let api = server.api_client(Some(API_KEY));
    assert_eq!(api.revoke("ann").await.unwrap(), 1);
    assert_eq!(expect_closed(&mut ann).await, Some(ErrorCode::Forbidden));
    let again = Client::connect(&server.url("/chat"), &old, &server.trust()).await;
    assert_eq!(refused(again), ErrorCode::Unauthorized);
    // A token issued after the revocation second is welcome; others are untouched.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let new = token_for(&Claims::new("ann", now(), 3600));
    Client::connect(&server.url("/chat"), &new, &server.trust())
        .await
        .unwrap();
    server.client("/chat", "bob").await;
    server.stop().await;

    let server = TestServer::start_with_data(&data).await;
    let after_restart = Client::connect(&server.url("/chat"), &old, &server.trust()).await;
    assert_eq!(refused(after_restart), ErrorCode::Unauthorized);
    Client::connect(&server.url("/chat"), &new, &server.trust())
        .await
        .unwrap();
    server.stop().await;
}
