//! The server API under clients that connect and say nothing, trickle, or hold
//! many connections: backends and health checks keep getting answers.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::rustls::pki_types;
use wtgate::api_client::{ApiClient, ApiClientError};
use wtgate::config::Config;

use crate::common::*;

const IDLE: Duration = Duration::from_secs(2);

async fn server() -> TestServer {
    let mut config = Config::default();
    config.limits.api_idle_timeout = IDLE;
    config.limits.api_request_timeout = IDLE;
    config.limits.api_connections_per_ip = 64;
    TestServer::start_with(config).await
}

/// A TCP connection to `to` from the loopback address 127.0.0.`host`.
async fn connect_from(host: u8, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(127, 0, 0, host)),
            0,
        ))
        .unwrap();
    socket.connect(to).await.unwrap()
}

/// Whether the server closed `stream` within `wait` (EOF or reset, no bytes).
async fn closed_within(stream: &mut TcpStream, wait: Duration) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        tokio::time::timeout(wait, stream.read(&mut byte)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

/// A TLS client that accepts any certificate: these tests are about slots, not trust.
fn tls_connector() -> tokio_rustls::TlsConnector {
    tokio_rustls::TlsConnector::from(Arc::new(any_cert_tls()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_cannot_lock_out_backends_and_health_checks() {
    let server = server().await;
    // 1,100 connections that never say a word, from 22 addresses (under the
    // per-address cap): more than the 1,024 slots.
    let mut idle = Vec::new();
    for i in 0..1100 {
        idle.push(connect_from(2 + (i / 50) as u8, server.api).await);
    }
    // A dozen more that finish TLS and then say nothing.
    let connector = tls_connector();
    let name = pki_types::ServerName::try_from("localhost").unwrap();
    let mut idle_tls = Vec::new();
    for _ in 0..12 {
        let tcp = connect_from(40, server.api).await;
        idle_tls.push(connector.connect(name.clone(), tcp).await.unwrap());
    }

    let api = server.api_client(Some(API_KEY));
    for round in 0..5 {
        // A new client each round: a new connection, which must find a slot.
        let fresh = ApiClient::new(&server.api_url(), Some(API_KEY), &server.trust()).unwrap();
        let started = Instant::now();
        let health = within("/healthz", fresh.health()).await.unwrap();
        assert_eq!(health.status, "ok");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "round {round}: {:?}",
            started.elapsed()
        );
        api.notify("ann", "k", b"still served").await.unwrap();
    }

    // Idle connections are closed by the idle timeout (and the oldest ones made
    // room already): none is left hanging.
    let deadline = Duration::from_secs(8);
    let started = Instant::now();
    let mut open = 0;
    for stream in &mut idle {
        if !closed_within(stream, deadline.saturating_sub(started.elapsed())).await {
            open += 1;
        }
    }
    assert_eq!(
        open, 0,
        "idle TCP connections still open after {deadline:?}"
    );
    for tls in &mut idle_tls {
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(5), tls.read(&mut byte)).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "idle TLS connection: {read:?}"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn one_address_cannot_take_every_slot() {
    let server = server().await;
    let mut held = Vec::new();
    for _ in 0..70 {
        held.push(connect_from(77, server.api).await);
    }
    // All at once: the idle timeout (2 s) must not be what closes them.
    let closed = futures::future::join_all(
        held.iter_mut()
            .map(|s| closed_within(s, Duration::from_millis(500))),
    )
    .await;
    assert_eq!(closed.iter().filter(|c| **c).count(), 6, "64 per address");
    // Another address is served meanwhile.
    let health = server.api_client(None).health().await.unwrap();
    assert_eq!(health.status, "ok");
    server.stop().await;
}

#[tokio::test]
async fn a_trickled_body_is_answered_408() {
    let server = server().await;
    let tcp = connect_from(1, server.api).await;
    let name = pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = tls_connector().connect(name, tcp).await.unwrap();
    let head = format!(
        "POST /api/notify HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {API_KEY}\r\n\
         content-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"user\""
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut reply)).await;
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(reply.contains("\"code\":\"timeout\""), "{reply}");
    let took = started.elapsed();
    assert!(
        took >= IDLE - Duration::from_millis(100) && took < IDLE * 3,
        "{took:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_wrong_key_with_a_large_body_is_a_clean_401() {
    let server = server().await;
    // reqwest negotiates HTTP/2 here; the body is far larger than one flow-control
    // window's first frames, so it is unread when the key is checked.
    let api = server.api_client(Some("wrong key"));
    let body = vec![b'x'; 40_000];
    for _ in 0..5 {
        match api.notify("ann", "k", &body).await {
            Err(ApiClientError::Refused { status: 401, .. }) => {}
            other => panic!("expected a 401, got {other:?}"),
        }
    }
    server.stop().await;
}
