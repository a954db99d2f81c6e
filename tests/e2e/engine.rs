//! Both engines (`serve --engine loop|wtransport`): what the engine owns — QUIC
//! connections, HTTP/3 and the WebTransport request, session streams and
//! datagrams, slow consumers, shutdown, HTTP/3 abuse — on each, whatever
//! `WTGATE_ENGINE` says, so the suite's default run (on the loop) covers
//! wtransport's server too.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use wtgate::client::Event;
use wtgate::config::{Config, Engine};

use crate::common::*;

const ENGINES: [Engine; 2] = [Engine::Loop, Engine::Wtransport];

#[tokio::test]
async fn members_get_every_message_in_order_and_volatile_events() {
    for engine in ENGINES {
        members_get_every_message_in_order_and_volatile_events_on(engine).await;
    }
}

async fn members_get_every_message_in_order_and_volatile_events_on(engine: Engine) {
    let server = TestServer::start_on(engine, Config::default()).await;
    let mut clients = Vec::new();
    for user in ["ann", "bob", "cy"] {
        let c = server.client("/chat", user).await;
        c.join("lobby", None).await.unwrap();
        clients.push(c);
    }
    for i in 1..=10u64 {
        let seq = clients[0]
            .publish("lobby", Bytes::from(format!("m{i}")))
            .await
            .unwrap();
        assert_eq!(seq, i);
    }
    for c in clients.iter_mut() {
        for i in 1..=10u64 {
            let got = expect_event(c, "message", |e| match e {
                Event::Message { seq, body, .. } => Some((*seq, body.clone())),
                _ => None,
            })
            .await;
            assert_eq!(got, (i, Bytes::from(format!("m{i}"))));
        }
    }
    // Datagrams may be lost even on loopback: send until one arrives, bounded.
    let (ann, rest) = clients.split_first_mut().unwrap();
    let bob = &mut rest[0];
    let body = within("a volatile event", async {
        loop {
            ann.send_volatile("lobby", Bytes::from_static(b"typing"))
                .unwrap();
            if let Ok(Some(Event::Volatile { body, .. })) =
                tokio::time::timeout(Duration::from_millis(100), bob.next_event()).await
            {
                return body;
            }
        }
    })
    .await;
    assert_eq!(&body[..], b"typing");
    server.stop().await;
}

#[tokio::test]
async fn an_unknown_namespace_is_refused_before_any_stream() {
    for engine in ENGINES {
        crate::auth::unknown_namespace_is_rejected(
            TestServer::start_on(engine, Config::default()).await,
        )
        .await;
    }
}

#[tokio::test]
async fn a_query_string_does_not_change_the_namespace() {
    for engine in ENGINES {
        let server = TestServer::start_on(engine, Config::default()).await;
        let token = server.token("ann");
        let chat = wtgate::client::Client::connect(
            &server.url("/chat?room=lobby&v=1"),
            &token,
            &server.trust(),
        )
        .await
        .unwrap_or_else(|e| panic!("{engine:?}: /chat with a query: {e}"));
        // The same namespace as /chat: a member there gets what this one publishes.
        let mut bob = server.client("/chat", "bob").await;
        bob.join("lobby", None).await.unwrap();
        chat.join("lobby", None).await.unwrap();
        chat.publish("lobby", Bytes::from_static(b"hi"))
            .await
            .unwrap();
        let body = expect_event(&mut bob, "ann's message", |e| match e {
            Event::Message { body, .. } => Some(body.clone()),
            _ => None,
        })
        .await;
        assert_eq!(&body[..], b"hi", "{engine:?}");
        let err =
            wtgate::client::Client::connect(&server.url("/nope?ns=/chat"), &token, &server.trust())
                .await
                .unwrap_err();
        assert!(err.to_string().contains("rejected"), "{engine:?}: {err}");
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_grants_no_credit_is_closed_as_a_slow_consumer() {
    for engine in ENGINES {
        crate::budgets::replay_without_credit_is_closed(|config| {
            TestServer::start_on(engine, config)
        })
        .await;
    }
}

#[tokio::test]
async fn shutdown_says_go_away_before_it_closes() {
    for engine in ENGINES {
        crate::shutdown::go_away_then_close(TestServer::start_on(engine, Config::default()).await)
            .await;
    }
}

/// A bare QUIC connection (ALPN `h3`) to the server, before any HTTP/3: what a
/// client that is not a WebTransport client can do.
async fn bare_quic(server: &TestServer) -> wtransport::quinn::Connection {
    let mut tls = any_cert_tls();
    tls.alpn_protocols = vec![b"h3".to_vec()];
    let crypto = wtransport::quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut endpoint = wtransport::quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(wtransport::quinn::ClientConfig::new(Arc::new(crypto)));
    within(
        "QUIC handshake",
        endpoint.connect(server.addr, "localhost").unwrap(),
    )
    .await
    .unwrap()
}

/// Sends `request` on a bare connection's first bidirectional stream: the
/// connection is closed with an HTTP/3 error code (RFC 9114 §8.1: 0x100–0x110;
/// the loop says H3_GENERAL_PROTOCOL_ERROR, wtransport's server H3_FRAME_ERROR),
/// and a member of the namespace is unharmed.
async fn bad_request_closes_that_connection_only(engine: Engine, request: &[u8]) {
    let server = TestServer::start_on(engine, Config::default()).await;
    let ann = server.client("/chat", "ann").await;
    ann.join("r", None).await.unwrap();
    let conn = bare_quic(&server).await;
    let (mut send, _recv) = conn.open_bi().await.unwrap();
    // The server may close before all of it is written.
    let _ = send.write_all(request).await;
    let closed = within("the server closes it", conn.closed()).await;
    assert!(
        matches!(closed, wtransport::quinn::ConnectionError::ApplicationClosed(ref c)
            if (0x100..=0x110).contains(&c.error_code.into_inner())),
        "{engine:?}: closed with an HTTP/3 error: {closed:?}"
    );
    let seq = ann
        .publish("r", Bytes::from_static(b"still here"))
        .await
        .unwrap();
    assert_eq!(seq, 1);
    server.stop().await;
}

/// Not an HTTP/3 request: a DATA frame of 63 bytes where HEADERS must come.
fn data_frame() -> Vec<u8> {
    let mut b = vec![0x00, 0x3f];
    b.extend_from_slice(&[0xab; 63]);
    b
}

/// A HEADERS frame of 8 KiB, past the 4 KiB a request's frame may take.
fn oversized_headers() -> Vec<u8> {
    let mut b = vec![0x01, 0x60, 0x00];
    b.extend_from_slice(&[0xab; 8 * 1024]);
    b
}

#[tokio::test]
async fn garbage_instead_of_a_request_closes_that_connection_only() {
    for engine in ENGINES {
        bad_request_closes_that_connection_only(engine, &data_frame()).await;
    }
}

#[tokio::test]
async fn an_oversized_request_is_refused_at_its_bound() {
    bad_request_closes_that_connection_only(Engine::Loop, &oversized_headers()).await;
}

#[tokio::test]
async fn a_quic_connection_that_never_asks_for_a_session_is_closed() {
    for engine in ENGINES {
        let mut config = Config::default();
        config.limits.hello_timeout = Duration::from_millis(500);
        let server = TestServer::start_on(engine, config).await;
        let started = Instant::now();
        let conn = bare_quic(&server).await;
        let closed = within("the server closes it", conn.closed()).await;
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{engine:?}: closed after {:?}: {closed:?}",
            started.elapsed()
        );
        server.stop().await;
    }
}
