//! Hostile clients are limited or closed; a well-behaved client next to them loses
//! nothing and keeps a bounded latency.

use std::sync::Arc;
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

/// A bare QUIC connection (ALPN `h3`) to the server, before any HTTP/3: what a
/// client that is not a WebTransport client can do.
async fn bare_quic(server: &TestServer) -> wtransport::quinn::Connection {
    use tokio_rustls::rustls;
    #[derive(Debug)]
    struct AnyCert(Arc<rustls::crypto::CryptoProvider>);
    impl rustls::client::danger::ServerCertVerifier for AnyCert {
        fn verify_server_cert(
            &self,
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &[rustls::pki_types::CertificateDer<'_>],
            _: &rustls::pki_types::ServerName<'_>,
            _: &[u8],
            _: rustls::pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &rustls::pki_types::CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            self.verify_tls12_signature(message, cert, dss)
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
        .with_no_client_auth();
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

#[tokio::test]
async fn garbage_instead_of_an_http3_request_closes_that_connection_only() {
    let server = TestServer::start().await;
    let mut listen = listener(&server).await;
    let conn = bare_quic(&server).await;
    let (mut send, _recv) = conn.open_bi().await.unwrap();
    // Not an HTTP/3 frame: a DATA frame type with a length past the end, then noise.
    send.write_all(&[0x00, 0x3f, 0xff, 0xff, 0xff, 0x01, 0x02])
        .await
        .unwrap();
    send.write_all(&[0xab; 9000]).await.unwrap();
    let closed = within("the server closes it", conn.closed()).await;
    // An HTTP/3 error code (RFC 9114 §8.1: 0x100–0x110): the loop says
    // H3_GENERAL_PROTOCOL_ERROR, wtransport's server H3_FRAME_ERROR.
    assert!(
        matches!(closed, wtransport::quinn::ConnectionError::ApplicationClosed(ref c)
            if (0x100..=0x110).contains(&c.error_code.into_inner())),
        "closed with an HTTP/3 error: {closed:?}"
    );
    polite_traffic_is_unharmed(&server, &mut listen, 5, Duration::from_secs(2)).await;
    server.stop().await;
}

#[tokio::test]
async fn a_quic_connection_that_never_asks_for_a_session_is_closed() {
    let mut config = Config::default();
    config.limits.hello_timeout = Duration::from_millis(500);
    let server = TestServer::start_with(config).await;
    let started = Instant::now();
    let conn = bare_quic(&server).await;
    let closed = within("the server closes it", conn.closed()).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "closed after {:?}: {closed:?}",
        started.elapsed()
    );
    server.stop().await;
}
