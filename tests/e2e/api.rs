//! The HTTPS server API: every endpoint over real TLS on loopback with effects seen
//! by real clients, and every error case (through the router without a socket,
//! and the important ones over the wire).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use bytes::Bytes;
use serde_json::{json, Value};
use tokio_rustls::rustls;
use tower::ServiceExt;
use wtgate::api_client::{ApiClientError, PinnedCert};
use wtgate::client::{Client, Event};
use wtgate::config::Config;
use wtgate::protocol::ErrorCode;
use wtgate::server::{app, API_DISABLED};

use crate::common::*;

/// A server whose settings are adjusted, e.g. without an API key.
async fn server_with(
    config: Config,
    adjust: impl FnOnce(&mut wtgate::config::Settings),
) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    TestServer::start_adjusted(dir, data, config, adjust).await
}

async fn joined(server: &TestServer, user: &str, room: &str) -> Client {
    let c = server.client("/chat", user).await;
    c.join(room, None).await.unwrap();
    c
}

// ---- success cases, over HTTPS ----

#[tokio::test]
async fn publish_reaches_room_members_as_the_server() {
    let server = TestServer::start().await;
    let mut alice = joined(&server, "alice", "lobby").await;
    let mut bob = joined(&server, "bob", "lobby").await;
    let api = server.api_client(Some(API_KEY));

    let seq = api
        .publish("chat", "lobby", b"from the backend")
        .await
        .unwrap();
    let binary = [0u8, 0xff, 0x80];
    let seq2 = api.publish("/chat", "lobby", &binary).await.unwrap();
    assert_eq!(seq2, seq + 1);
    for c in [&mut alice, &mut bob] {
        let got = expect_event(c, "api publish", message).await;
        assert_eq!(
            got,
            (
                "lobby".into(),
                seq,
                "server".into(),
                Bytes::from_static(b"from the backend")
            )
        );
        let got = expect_event(c, "binary api publish", message).await;
        assert_eq!(
            got,
            (
                "lobby".into(),
                seq2,
                "server".into(),
                Bytes::from(binary.to_vec())
            )
        );
    }
    // Seqs are shared with client publishes.
    assert_eq!(alice.publish("lobby", "hi".into()).await.unwrap(), seq2 + 1);
    server.stop().await;
}

#[tokio::test]
async fn notify_reaches_every_session_of_the_user() {
    let server = TestServer::start().await;
    let mut tab1 = server.client("/notifications", "ann").await;
    let mut tab2 = server.client("/notifications", "ann").await;
    let api = server.api_client(Some(API_KEY));
    let id = api
        .notify("ann", "invoice.paid", b"{\"total\":12}")
        .await
        .unwrap();
    for tab in [&mut tab1, &mut tab2] {
        let got = expect_event(tab, "notification", notification).await;
        assert_eq!(
            got,
            (
                id,
                "invoice.paid".into(),
                Bytes::from_static(b"{\"total\":12}")
            )
        );
    }
    let next = api.notify("ann", "k", &[0xff]).await.unwrap();
    assert!(next > id);
    server.stop().await;
}

#[tokio::test]
async fn presence_lists_room_members_and_online_users() {
    let server = TestServer::start().await;
    let _alice = joined(&server, "alice", "team").await;
    let _bob = joined(&server, "bob", "team").await;
    let _carol = joined(&server, "carol", "elsewhere").await;
    let api = server.api_client(Some(API_KEY));

    let mut members = api.presence("/chat", Some("team")).await.unwrap();
    members.sort();
    assert_eq!(members, ["alice", "bob"]);
    assert!(api
        .presence("chat", Some("empty"))
        .await
        .unwrap()
        .is_empty());
    let mut online = api.presence("chat", None).await.unwrap();
    online.sort();
    assert_eq!(online, ["alice", "bob", "carol"]);
    server.stop().await;
}

#[tokio::test]
async fn disconnect_closes_the_users_sessions() {
    let server = TestServer::start().await;
    let mut chat = server.client("/chat", "mallory").await;
    let mut inbox = server.client("/notifications", "mallory").await;
    let mut bob = server.client("/chat", "bob").await;
    let api = server.api_client(Some(API_KEY));

    assert_eq!(api.disconnect("mallory").await.unwrap(), 2);
    assert_eq!(expect_closed(&mut chat).await, Some(ErrorCode::Forbidden));
    assert_eq!(expect_closed(&mut inbox).await, Some(ErrorCode::Forbidden));
    expect_no_event(&mut bob, "close", Duration::from_millis(300), |e| {
        matches!(e, Event::Closed { .. })
    })
    .await;
    assert_eq!(api.disconnect("nobody").await.unwrap(), 0);
    server.stop().await;
}

#[tokio::test]
async fn broadcast_reaches_the_namespace() {
    let server = TestServer::start().await;
    let mut a = server.client("/chat", "a").await;
    let mut b = joined(&server, "b", "some-room").await;
    let mut other = server.client("/notifications", "a").await;
    let api = server.api_client(Some(API_KEY));
    api.broadcast("chat", b"maintenance at 5").await.unwrap();
    for c in [&mut a, &mut b] {
        let got = expect_event(c, "broadcast", |e| match e {
            Event::Broadcast { from, body, .. } => Some((from.clone(), body.clone())),
            _ => None,
        })
        .await;
        assert_eq!(
            got,
            ("server".into(), Bytes::from_static(b"maintenance at 5"))
        );
    }
    expect_no_event(&mut other, "broadcast", Duration::from_millis(300), |e| {
        matches!(e, Event::Broadcast { .. })
    })
    .await;
    server.stop().await;
}

#[tokio::test]
async fn health_and_metrics_move_with_traffic() {
    let server = TestServer::start().await;
    // No key needed for these two.
    let open = server.api_client(None);
    assert_eq!(open.health().await.unwrap().sessions, 0);
    let before = open.metrics().await.unwrap();
    assert_eq!(sample(&before, "wtgate_notifications_pushed_total"), 0.0);
    // Every series is there from the start, at zero.
    for series in [
        "wtgate_sessions{namespace=\"/chat\"}",
        "wtgate_sessions{namespace=\"/notifications\"}",
        "wtgate_messages_in_total{namespace=\"/chat\"}",
        "wtgate_errors_total{code=\"SlowConsumer\"}",
    ] {
        assert!(
            before.contains(&format!("{series} 0\n")),
            "{series}: {before}"
        );
    }

    let mut alice = joined(&server, "alice", "lobby").await;
    let mut bob = joined(&server, "bob", "lobby").await;
    let _inbox = server.client("/notifications", "ann").await;
    let api = server.api_client(Some(API_KEY));
    api.publish("chat", "lobby", b"one").await.unwrap();
    alice.publish("lobby", "two".into()).await.unwrap();
    for c in [&mut alice, &mut bob] {
        expect_event(c, "one", message).await;
        expect_event(c, "two", message).await;
    }
    api.notify("ann", "k", b"x").await.unwrap();

    let health = open.health().await.unwrap();
    assert_eq!((health.status.as_str(), health.sessions), ("ok", 3));
    let m = open.metrics().await.unwrap();
    assert_eq!(
        sample(&m, "wtgate_messages_in_total{namespace=\"/chat\"}"),
        2.0,
        "{m}"
    );
    assert!(sample(&m, "wtgate_deliveries_total") >= 4.0, "{m}");
    assert_eq!(sample(&m, "wtgate_notifications_pushed_total"), 1.0, "{m}");
    assert_eq!(
        sample(&m, "wtgate_sessions{namespace=\"/chat\"}"),
        2.0,
        "{m}"
    );
    assert_eq!(
        sample(&m, "wtgate_sessions{namespace=\"/notifications\"}"),
        1.0,
        "{m}"
    );
    assert!(
        sample(&m, "wtgate_publish_latency_seconds_count") >= 1.0,
        "{m}"
    );

    // After shutdown the API is gone too.
    server.stop().await;
    let err = open.health().await.unwrap_err();
    assert!(matches!(err, ApiClientError::Unreachable { .. }), "{err}");
}

#[tokio::test]
async fn tls_offers_h2_and_http1_over_tls13_and_tls12() {
    let server = TestServer::start().await;
    let hash = wtgate::certs::parse_hash(&server.hash).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    for (version, alpn) in [
        (&rustls::version::TLS13, &b"h2"[..]),
        (&rustls::version::TLS12, &b"http/1.1"[..]),
    ] {
        let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[version])
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedCert::new(hash, &provider)))
            .with_no_client_auth();
        config.alpn_protocols = vec![alpn.to_vec()];
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(server.api).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let tls = within("TLS handshake", connector.connect(name, tcp))
            .await
            .unwrap();
        let (_, conn) = tls.get_ref();
        assert_eq!(conn.protocol_version(), Some(version.version));
        assert_eq!(conn.alpn_protocol(), Some(alpn));
    }
    // A different pinned hash is refused by the client.
    let other = wtgate::api_client::ApiClient::new(
        &server.api_url(),
        Some(API_KEY),
        &wtgate::client::Trust::Hash("00".repeat(32)),
    )
    .unwrap();
    let err = other.health().await.unwrap_err().to_string();
    assert!(err.contains("not the pinned"), "{err}");
    server.stop().await;
}

// ---- error cases, over HTTPS ----

#[tokio::test]
async fn wrong_or_missing_key_is_refused_over_the_wire() {
    let server = TestServer::start().await;
    for key in [Some("not-the-key"), None] {
        let err = server
            .api_client(key)
            .notify("ann", "k", b"x")
            .await
            .unwrap_err();
        match err {
            ApiClientError::Refused { status, code, .. } => {
                assert_eq!((status, code.as_str()), (401, "unauthorized"), "{key:?}")
            }
            other => panic!("{key:?}: {other}"),
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn the_api_is_disabled_without_a_key() {
    let server = server_with(Config::default(), |s| s.api_key = None).await;
    for key in [Some(API_KEY), None] {
        match server.api_client(key).publish("chat", "r", b"x").await {
            Err(ApiClientError::Refused {
                status,
                code,
                message,
            }) => {
                assert_eq!((status, code.as_str()), (403, "api_disabled"));
                assert_eq!(message, API_DISABLED);
            }
            other => panic!("{other:?}"),
        }
    }
    let open = server.api_client(None);
    assert_eq!(open.health().await.unwrap().status, "ok");
    assert!(open.metrics().await.unwrap().contains("wtgate_rooms 0"));
    server.stop().await;
}

#[tokio::test]
async fn dev_mode_without_a_key_is_open() {
    let server = server_with(Config::default(), |s| {
        s.api_key = None;
        s.dev = true;
    })
    .await;
    let seq = server
        .api_client(None)
        .publish("chat", "r", b"x")
        .await
        .unwrap();
    assert_eq!(seq, 1);
    server.stop().await;
}

// ---- error cases, through the router ----

struct Reply {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    json: Value,
}

impl Reply {
    fn code(&self) -> &str {
        self.json["code"].as_str().unwrap_or_default()
    }

    fn error(&self) -> &str {
        self.json["error"].as_str().unwrap_or_default()
    }

    #[track_caller]
    fn expect(&self, status: u16, code: &str) {
        assert_eq!(
            (self.status.as_u16(), self.code()),
            (status, code),
            "{}",
            self.json
        );
        assert!(!self.error().is_empty(), "{}", self.json);
    }
}

async fn call(
    app: &Router,
    method: &str,
    uri: &str,
    key: Option<&str>,
    body: impl Into<Body>,
) -> Reply {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(key) = key {
        request = request.header(header::AUTHORIZATION, format!("Bearer {key}"));
    }
    let response = app
        .clone()
        .oneshot(request.body(body.into()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Reply {
        status,
        headers,
        json,
    }
}

async fn post(app: &Router, uri: &str, body: Value) -> Reply {
    call(app, "POST", uri, Some(API_KEY), body.to_string()).await
}

#[tokio::test]
async fn malformed_requests_are_400() {
    let server = TestServer::start().await;
    let app = app(server.gateway.clone());
    let key = Some(API_KEY);

    let r = call(&app, "POST", "/api/notify", key, "{\"user\": ").await;
    r.expect(400, "bad_request");
    assert!(r.error().contains("invalid JSON"), "{}", r.error());
    call(&app, "POST", "/api/notify", key, "")
        .await
        .expect(400, "bad_request");
    call(&app, "POST", "/api/publish", key, "[1, 2]")
        .await
        .expect(400, "bad_request");

    let r = post(&app, "/api/notify", json!({"kind": "k", "body": "b"})).await;
    r.expect(400, "bad_request");
    assert!(r.error().contains("user"), "{}", r.error());
    post(
        &app,
        "/api/publish",
        json!({"namespace": "chat", "body": "b"}),
    )
    .await
    .expect(400, "bad_request");
    post(&app, "/api/disconnect", json!({}))
        .await
        .expect(400, "bad_request");
    post(
        &app,
        "/api/notify",
        json!({"user": "u", "kind": "k", "body": 5}),
    )
    .await
    .expect(400, "bad_request");

    // Exactly one of body and body_base64.
    let r = post(&app, "/api/notify", json!({"user": "u", "kind": "k"})).await;
    r.expect(400, "bad_request");
    assert!(r.error().contains("exactly one"), "{}", r.error());
    post(
        &app,
        "/api/publish",
        json!({"namespace": "chat", "room": "r", "body": "a", "body_base64": "YQ=="}),
    )
    .await
    .expect(400, "bad_request");
    post(
        &app,
        "/api/broadcast",
        json!({"namespace": "chat", "body_base64": "not base64!"}),
    )
    .await
    .expect(400, "bad_request");
    // Typos are caught, not ignored.
    let r = post(
        &app,
        "/api/publish",
        json!({"namespace": "chat", "room": "r", "bdy": "x"}),
    )
    .await;
    r.expect(400, "bad_request");
    assert!(r.error().contains("bdy"), "{}", r.error());

    call(&app, "GET", "/api/presence", key, Body::empty())
        .await
        .expect(400, "bad_request");
    call(&app, "GET", "/api/presence?room=r", key, Body::empty())
        .await
        .expect(400, "bad_request");
    server.stop().await;
}

#[tokio::test]
async fn auth_errors_are_401_with_a_bearer_challenge() {
    let server = TestServer::start().await;
    let app = app(server.gateway.clone());
    let body = json!({"user": "u", "kind": "k", "body": "b"}).to_string();
    for key in [
        None,
        Some("wrong"),
        Some(""),
        Some(&API_KEY[..API_KEY.len() - 1]),
    ] {
        let r = call(&app, "POST", "/api/notify", key, body.clone()).await;
        r.expect(401, "unauthorized");
        assert_eq!(r.headers[header::WWW_AUTHENTICATE], "Bearer");
    }
    // Auth comes before parsing: no hint about the body without the key.
    call(&app, "POST", "/api/notify", Some("wrong"), "{")
        .await
        .expect(401, "unauthorized");
    call(
        &app,
        "GET",
        "/api/presence?namespace=chat",
        None,
        Body::empty(),
    )
    .await
    .expect(401, "unauthorized");
    // Health and metrics need no key.
    assert_eq!(
        call(&app, "GET", "/healthz", None, Body::empty())
            .await
            .status,
        200
    );
    server.stop().await;
}

#[tokio::test]
async fn gateway_refusals_map_to_statuses() {
    let server = TestServer::start().await;
    let app = app(server.gateway.clone());
    let key = Some(API_KEY);

    post(
        &app,
        "/api/publish",
        json!({"namespace": "nope", "room": "r", "body": "x"}),
    )
    .await
    .expect(404, "unknown_namespace");
    post(
        &app,
        "/api/broadcast",
        json!({"namespace": "/nope", "body": "x"}),
    )
    .await
    .expect(404, "unknown_namespace");
    call(
        &app,
        "GET",
        "/api/presence?namespace=nope",
        key,
        Body::empty(),
    )
    .await
    .expect(404, "unknown_namespace");

    for room in ["", "two words", "tab\there", &"r".repeat(129)] {
        post(
            &app,
            "/api/publish",
            json!({"namespace": "chat", "room": room, "body": "x"}),
        )
        .await
        .expect(422, "invalid_room");
    }
    call(
        &app,
        "GET",
        "/api/presence?namespace=chat&room=a%20b",
        key,
        Body::empty(),
    )
    .await
    .expect(422, "invalid_room");

    for user in ["", "a b", "server", &"u".repeat(65)] {
        post(
            &app,
            "/api/notify",
            json!({"user": user, "kind": "k", "body": "x"}),
        )
        .await
        .expect(422, "invalid_user");
        post(&app, "/api/disconnect", json!({"user": user}))
            .await
            .expect(422, "invalid_user");
    }
    for kind in ["", "line\nbreak", &"k".repeat(65)] {
        post(
            &app,
            "/api/notify",
            json!({"user": "u", "kind": kind, "body": "x"}),
        )
        .await
        .expect(422, "invalid_kind");
    }

    call(&app, "GET", "/api/nothing", key, Body::empty())
        .await
        .expect(404, "not_found");
    call(&app, "GET", "/api/notify", key, Body::empty())
        .await
        .expect(405, "method_not_allowed");
    server.stop().await;
}

#[tokio::test]
async fn oversized_bodies_are_413() {
    let mut config = Config::default();
    config.limits.max_frame = 4096;
    let server = server_with(config, |_| {}).await;
    let app = app(server.gateway.clone());

    // Over the frame limit, within the HTTP limit: refused by the gateway.
    let big = "x".repeat(4096);
    for (uri, req) in [
        (
            "/api/publish",
            json!({"namespace": "chat", "room": "r", "body": big}),
        ),
        (
            "/api/notify",
            json!({"user": "u", "kind": "k", "body": big}),
        ),
        ("/api/broadcast", json!({"namespace": "chat", "body": big})),
    ] {
        post(&app, uri, req).await.expect(413, "too_large");
    }
    // Far over: refused while reading the body.
    let huge = "x".repeat(64 * 1024);
    let r = post(
        &app,
        "/api/publish",
        json!({"namespace": "chat", "room": "r", "body": huge}),
    )
    .await;
    r.expect(413, "too_large");
    // Just under the limit as base64 still fits.
    let fits = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, vec![7u8; 3000]);
    let r = post(
        &app,
        "/api/publish",
        json!({"namespace": "chat", "room": "r", "body_base64": fits}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.json);

    // The same over the wire.
    let err = server
        .api_client(Some(API_KEY))
        .publish("chat", "r", huge.as_bytes())
        .await
        .unwrap_err();
    assert!(
        matches!(err, ApiClientError::Refused { status: 413, ref code, .. } if code == "too_large"),
        "{err}"
    );
    server.stop().await;
}

#[tokio::test]
async fn notify_without_an_inbox_namespace_is_404() {
    let mut config = Config::default();
    config.namespaces.remove("/notifications");
    let server = server_with(config, |_| {}).await;
    let app = app(server.gateway.clone());
    post(
        &app,
        "/api/notify",
        json!({"user": "u", "kind": "k", "body": "x"}),
    )
    .await
    .expect(404, "no_inbox");
    server.stop().await;
}

#[tokio::test]
async fn metrics_content_type_follows_accept() {
    let server = TestServer::start().await;
    let app = app(server.gateway.clone());
    let r = call(&app, "GET", "/metrics", None, Body::empty()).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.headers[header::CONTENT_TYPE],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let request = Request::get("/metrics")
        .header(
            header::ACCEPT,
            "application/openmetrics-text;version=1.0.0,text/plain;q=0.5",
        )
        .body(Body::empty())
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    assert!(response.headers()[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text"));
    server.stop().await;
}
