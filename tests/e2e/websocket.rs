//! The WebSocket fallback (PROTOCOL.md §16) over a real WebSocket on loopback: the
//! same sessions, rooms, presence, notifications and limits as over WebTransport,
//! members of both transports in one room, and bad input closed with the
//! documented codes while other sessions carry on.

use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use wtgate::client::{open_websocket, websocket_close_code, Client, Event, WsStream};
use wtgate::config::Config;
use wtgate::protocol::lane::{self, Lane};
use wtgate::protocol::{ClientFrame, ErrorCode, ServerFrame, Since};

use crate::common::*;

#[tokio::test]
async fn websocket_and_webtransport_members_share_a_room() {
    let server = TestServer::start().await;
    let mut ws = server.ws_client("/chat", "wanda").await;
    assert_eq!(ws.transport(), wtgate::client::Transport::WebSocket);
    assert_eq!(ws.welcome().user, "wanda");
    let mut wt = server.client("/chat", "theo").await;
    ws.join("mixed", None).await.unwrap();
    let joined = wt.join("mixed", None).await.unwrap();
    assert_eq!(joined.members.len(), 2, "{:?}", joined.members);
    expect_event(&mut ws, "theo's presence", |e| match e {
        Event::PresenceJoin { room, user } if room == "mixed" => Some(user.clone()),
        _ => None,
    })
    .await;

    let seq = ws
        .publish("mixed", Bytes::from_static(b"from ws"))
        .await
        .unwrap();
    let got = expect_event(&mut wt, "the WebSocket member's message", message).await;
    assert_eq!(
        got,
        (
            "mixed".into(),
            seq,
            "wanda".into(),
            Bytes::from_static(b"from ws")
        )
    );
    let got = expect_event(&mut ws, "its own message", message).await;
    assert_eq!(got.1, seq);

    let seq = wt
        .publish("mixed", Bytes::from_static(b"from wt"))
        .await
        .unwrap();
    let got = expect_event(&mut ws, "the WebTransport member's message", message).await;
    assert_eq!(
        got,
        (
            "mixed".into(),
            seq,
            "theo".into(),
            Bytes::from_static(b"from wt")
        )
    );

    // Requests and their refusals behave as over WebTransport.
    assert_eq!(
        refused(ws.join("mixed", None).await),
        ErrorCode::AlreadyJoined
    );
    assert_eq!(
        refused(ws.publish("nowhere", Bytes::new()).await),
        ErrorCode::NotJoined
    );
    let online = ws.online().await.unwrap();
    assert!(online.contains(&"theo".to_owned()) && online.contains(&"wanda".to_owned()));

    // Leaving ends the room's lane (the room end) and tells the other member.
    ws.leave("mixed").await.unwrap();
    expect_event(&mut ws, "the room's end", |e| match e {
        Event::RoomClosed { room } => Some(room.clone()),
        _ => None,
    })
    .await;
    expect_event(&mut wt, "wanda's leave", |e| match e {
        Event::PresenceLeave { user, .. } if user == "wanda" => Some(()),
        _ => None,
    })
    .await;
    ws.close().await;
    expect_event(&mut wt, "wanda going offline", |e| match e {
        Event::OnlineLeave { user } if user == "wanda" => Some(()),
        _ => None,
    })
    .await;
    server.stop().await;
}

#[tokio::test]
async fn volatile_frames_cross_between_transports() {
    let server = TestServer::start().await;
    let mut ws = server.ws_client("/chat", "wanda").await;
    let mut wt = server.client("/chat", "theo").await;
    ws.join("v", None).await.unwrap();
    wt.join("v", None).await.unwrap();
    // Datagrams may be lost on the WebTransport side: send until one arrives.
    let volatile = |e: &Event| match e {
        Event::Volatile { room, from, body } => Some((room.clone(), from.clone(), body.clone())),
        _ => None,
    };
    let from_ws = within("a volatile from the WebSocket", async {
        loop {
            ws.send_volatile("v", Bytes::from_static(b"typing"))
                .unwrap();
            if let Ok(Some(e)) =
                tokio::time::timeout(Duration::from_millis(100), wt.next_event()).await
            {
                if let Some(v) = volatile(&e) {
                    return v;
                }
            }
        }
    })
    .await;
    assert_eq!(
        from_ws,
        ("v".into(), "wanda".into(), Bytes::from_static(b"typing"))
    );
    let from_wt = within("a volatile to the WebSocket", async {
        loop {
            wt.send_volatile("v", Bytes::from_static(b"cursor"))
                .unwrap();
            if let Ok(Some(e)) =
                tokio::time::timeout(Duration::from_millis(100), ws.next_event()).await
            {
                if let Some(v) = volatile(&e) {
                    return v;
                }
            }
        }
    })
    .await;
    assert_eq!(
        from_wt,
        ("v".into(), "theo".into(), Bytes::from_static(b"cursor"))
    );
    server.stop().await;
}

#[tokio::test]
async fn recovery_and_notifications_over_a_websocket() {
    let server = TestServer::start().await;
    let writer = server.client("/chat", "theo").await;
    writer.join("log", None).await.unwrap();
    let ws = server.ws_client("/chat", "wanda").await;
    let first = ws.join("log", None).await.unwrap();
    ws.close().await;
    let mut seqs = Vec::new();
    for n in 0..3 {
        seqs.push(
            writer
                .publish("log", Bytes::from(format!("missed {n}")))
                .await
                .unwrap(),
        );
    }
    let mut ws = server.ws_client("/chat", "wanda").await;
    let since = Since {
        epoch: first.epoch,
        seq: first.seq,
    };
    let again = ws.join("log", Some(since)).await.unwrap();
    assert!(again.recovered);
    for seq in seqs {
        let got = expect_event(&mut ws, "a replayed message", message).await;
        assert_eq!(got.1, seq);
    }

    let mut inbox = server.ws_client("/notifications", "wanda").await;
    let api = server.api_client(Some(API_KEY));
    let id = api
        .notify("wanda", "mention", b"{\"room\":\"log\"}")
        .await
        .unwrap();
    let (got, kind, _) = expect_event(&mut inbox, "the notification", notification).await;
    assert_eq!((got, kind.as_str()), (id, "mention"));
    inbox.ack_notification(id).await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn a_bad_token_is_refused_with_its_code() {
    let server = TestServer::start().await;
    let e = Client::connect_websocket(&server.ws_url("/chat"), "not-a-token", &server.trust())
        .await
        .unwrap_err();
    assert_eq!(refused::<()>(Err(e)), ErrorCode::Unauthorized);
    // The raw view: the Error frame on lane 0, then close 4002.
    let mut raw = raw_ws(&server, "/chat").await;
    send(
        &mut raw,
        lane::control_message(&ClientFrame::Hello {
            version: 1,
            token: "x".into(),
        }),
    )
    .await;
    let (errors, close) = read_to_close(&mut raw).await;
    assert_eq!(errors, vec![ErrorCode::Unauthorized]);
    assert_eq!(close, Some(4002));
    assert_eq!(websocket_close_code(4002), Some(ErrorCode::Unauthorized));
    server.stop().await;
}

#[tokio::test]
async fn malformed_messages_close_only_their_session() {
    let server = TestServer::start().await;
    let mut bystander = server.ws_client("/chat", "bea").await;
    bystander.join("calm", None).await.unwrap();

    let cases: Vec<(&str, Message, u16)> = vec![
        (
            "garbage on the control lane",
            Message::Binary(Bytes::from_static(&[0, 0xff, 0xff, 0xff])),
            4001,
        ),
        (
            "a room lane from the client",
            Message::Binary(lane::room(0, &[1, 0])),
            4001,
        ),
        ("an empty message", Message::Binary(Bytes::new()), 4001),
        ("a text message", Message::Text("hello".into()), 4001),
        (
            "trailing bytes after a frame",
            Message::Binary(Bytes::from(
                [
                    &lane::control_message(&ClientFrame::Online { req: 1 })[..],
                    &[0],
                ]
                .concat(),
            )),
            4001,
        ),
    ];
    for (what, bad, code) in cases {
        let mut raw = raw_ws(&server, "/chat").await;
        send(&mut raw, lane::control_message(&hello(&server, "mallory"))).await;
        expect_welcome(&mut raw).await;
        raw.send(bad).await.unwrap();
        let (errors, close) = read_to_close(&mut raw).await;
        assert_eq!(close, Some(code), "{what}");
        assert_eq!(
            errors,
            vec![ErrorCode::from(u32::from(code - 4000))],
            "{what}"
        );
    }

    // Unknown lanes and unknown commands are skipped; the session goes on.
    let mut raw = raw_ws(&server, "/chat").await;
    send(&mut raw, lane::control_message(&hello(&server, "nova"))).await;
    expect_welcome(&mut raw).await;
    send(&mut raw, Bytes::from_static(&[9, 1, 2, 3])).await;
    send(&mut raw, Bytes::from_static(&[0, 100])).await;
    send(
        &mut raw,
        lane::control_message(&ClientFrame::Online { req: 7 }),
    )
    .await;
    let mut saw_unknown = false;
    loop {
        match next_control(&mut raw).await {
            ServerFrame::Error { code, .. } => {
                assert_eq!(code, ErrorCode::UnknownCommand);
                saw_unknown = true;
            }
            ServerFrame::Online { req: 7, .. } => break,
            _ => {}
        }
    }
    assert!(saw_unknown);

    let seq = bystander
        .publish("calm", Bytes::from_static(b"still here"))
        .await
        .unwrap();
    assert_eq!(
        expect_event(&mut bystander, "its message", message).await.1,
        seq
    );
    server.stop().await;
}

#[tokio::test]
async fn oversized_messages_are_refused_before_they_are_read() {
    let mut config = Config::default();
    config.limits.max_frame = 4096;
    let server = TestServer::start_with(config).await;
    // A Hello over max_hello (8 KiB by default, but never over max_frame).
    let mut raw = raw_ws(&server, "/chat").await;
    let huge = ClientFrame::Hello {
        version: 1,
        token: "t".repeat(6000),
    };
    send(&mut raw, lane::control_message(&huge)).await;
    let (_, close) = read_to_close(&mut raw).await;
    assert_eq!(close, Some(4005));

    // After Welcome: a 1 MiB message, refused from its header.
    let mut raw = raw_ws(&server, "/chat").await;
    send(&mut raw, lane::control_message(&hello(&server, "mallory"))).await;
    expect_welcome(&mut raw).await;
    let publish = ClientFrame::Publish {
        req: 1,
        room: "r".into(),
        body: vec![0u8; 1 << 20].into(),
    };
    // The server may close before the whole message is written.
    let _ = raw
        .send(Message::Binary(lane::control_message(&publish)))
        .await;
    let (errors, close) = read_to_close(&mut raw).await;
    assert_eq!(close, Some(4005));
    assert_eq!(errors, vec![ErrorCode::FrameTooLarge]);
    // One byte over max_frame: refused as over WebTransport.
    let mut raw = raw_ws(&server, "/chat").await;
    send(&mut raw, lane::control_message(&hello(&server, "mallory"))).await;
    expect_welcome(&mut raw).await;
    let mut over = lane::control_message(&ClientFrame::Online { req: 1 }).to_vec();
    over.resize(1 + 4096 + 1, 0);
    send(&mut raw, over.into()).await;
    let (errors, close) = read_to_close(&mut raw).await;
    assert_eq!(
        (errors, close),
        (vec![ErrorCode::FrameTooLarge], Some(4005))
    );
    // Just under the limit is fine.
    let fine = server.ws_client("/chat", "fine").await;
    fine.join("r", None).await.unwrap();
    fine.publish("r", vec![1u8; 3000].into()).await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn hello_must_come_in_time_and_first() {
    let mut config = Config::default();
    config.limits.hello_timeout = Duration::from_millis(300);
    let server = TestServer::start_with(config).await;
    let mut raw = raw_ws(&server, "/chat").await;
    let (errors, close) = read_to_close(&mut raw).await;
    assert_eq!((errors, close), (vec![ErrorCode::HelloTimeout], Some(4014)));

    let mut raw = raw_ws(&server, "/chat").await;
    send(
        &mut raw,
        lane::control_message(&ClientFrame::Online { req: 1 }),
    )
    .await;
    let (errors, close) = read_to_close(&mut raw).await;
    assert_eq!((errors, close), (vec![ErrorCode::Protocol], Some(4001)));
    server.stop().await;
}

/// A member that stops reading its WebSocket while others publish large messages is
/// closed as a slow consumer; the server's queued bytes stay within the budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_that_stops_reading_is_closed_within_its_budget() {
    let mut config = Config::default();
    config.limits.publish_rate = 1_000.0;
    config.limits.publish_burst = 1_000;
    config.limits.outbound_bytes = 512 * 1024;
    config.limits.stall_timeout = Duration::from_secs(60);
    let server = TestServer::start_with(config).await;
    let mut silent = raw_ws(&server, "/chat").await;
    send(&mut silent, lane::control_message(&hello(&server, "quiet"))).await;
    expect_welcome(&mut silent).await;
    send(
        &mut silent,
        lane::control_message(&ClientFrame::Join {
            req: 1,
            room: "big".into(),
            since: None,
        }),
    )
    .await;
    let mut publisher = server.ws_client("/chat", "loud").await;
    publisher.join("big", None).await.unwrap();
    let api = server.api_client(None);
    let body = Bytes::from(vec![b'x'; 60 * 1024]);
    let mut peak = 0.0f64;
    for n in 0..300 {
        if server.gateway.hub.session_count() == 1 {
            break;
        }
        publisher.publish("big", body.clone()).await.unwrap();
        while let Ok(Some(_)) = tokio::time::timeout(Duration::ZERO, publisher.next_event()).await {
        }
        if n % 10 == 0 {
            peak = peak.max(sample(&api.metrics().await.unwrap(), "wtgate_queued_bytes"));
        }
    }
    within("the silent member's close", async {
        while server.gateway.hub.session_count() > 1 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let m = api.metrics().await.unwrap();
    assert!(sample(&m, "wtgate_errors_total{code=\"SlowConsumer\"}") >= 1.0);
    let bound = (512 * 1024 + 2 * body.len()) as f64;
    assert!(peak <= bound, "queued bytes peaked at {peak}, over {bound}");
    // The publisher carries on.
    publisher
        .publish("big", Bytes::from_static(b"after"))
        .await
        .unwrap();
    drop(silent);
    server.stop().await;
}

#[tokio::test]
async fn shutdown_says_go_away_then_closes_with_4013() {
    let server = TestServer::start().await;
    let mut ws = server.ws_client("/chat", "wanda").await;
    let stopping = tokio::spawn(server.stop());
    expect_event(&mut ws, "GoAway", |e| {
        matches!(e, Event::GoAway { .. }).then_some(())
    })
    .await;
    assert_eq!(expect_closed(&mut ws).await, Some(ErrorCode::GoingAway));
    within("the server's stop", stopping).await.unwrap();
}

/// The upgrade is refused before any session exists: an unknown path, another
/// origin, no `wtgate.v1`; a plain GET on a namespace says what to do.
#[tokio::test]
async fn upgrades_are_checked_before_the_session() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = TestServer::start_adjusted(dir, data, Config::default(), |s| {
        s.allowed_origins = vec!["https://app.example".into()];
    })
    .await;
    // The dev demo listener's way in: the router over plain TCP on loopback.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = wtgate::server::websocket_router(server.gateway.clone());
    let serving = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await
    });
    let status = |r: Result<_, tokio_tungstenite::tungstenite::Error>| match r {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Ok(_) => 101,
        Err(e) => panic!("{e}"),
    };
    let request = |path: &str, protocol: Option<&str>, origin: Option<&str>| {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut r = format!("ws://{addr}{path}").into_client_request().unwrap();
        if let Some(p) = protocol {
            r.headers_mut()
                .insert("Sec-WebSocket-Protocol", p.parse().unwrap());
        }
        if let Some(o) = origin {
            r.headers_mut().insert("Origin", o.parse().unwrap());
        }
        r
    };
    let connect = |r| tokio_tungstenite::connect_async(r);
    assert_eq!(
        status(
            connect(request("/nope", Some("wtgate.v1"), None))
                .await
                .map(|_| ())
        ),
        404
    );
    assert_eq!(
        status(connect(request("/chat", None, None)).await.map(|_| ())),
        400
    );
    assert_eq!(
        status(
            connect(request(
                "/chat",
                Some("wtgate.v1"),
                Some("https://evil.example")
            ))
            .await
            .map(|_| ())
        ),
        403
    );
    assert_eq!(
        status(
            connect(request(
                "/chat",
                Some("wtgate.v1"),
                Some("https://app.example")
            ))
            .await
            .map(|_| ())
        ),
        101
    );
    assert_eq!(
        status(
            connect(request("/chat", Some("other, wtgate.v1"), None))
                .await
                .map(|_| ())
        ),
        101
    );
    let plain = plain_get(addr, "/chat").await;
    assert!(
        plain.starts_with("HTTP/1.1 4") && plain.contains("wtgate.v1"),
        "{plain}"
    );

    // A whole session over plain ws:// (what the demo page uses in --dev).
    let mut ws = Client::connect_websocket(
        &format!("ws://{addr}/chat"),
        &server.token("dev"),
        &server.trust(),
    )
    .await
    .unwrap();
    ws.join("r", None).await.unwrap();
    let seq = ws.publish("r", Bytes::from_static(b"plain")).await.unwrap();
    assert_eq!(expect_event(&mut ws, "its message", message).await.1, seq);
    serving.abort();
    server.stop().await;
}

/// The whole answer to a plain HTTP/1.1 GET.
async fn plain_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    within("the answer", tcp.read_to_string(&mut answer))
        .await
        .unwrap();
    answer
}

async fn raw_ws(server: &TestServer, ns: &str) -> WsStream {
    open_websocket(&server.ws_url(ns), &server.trust())
        .await
        .unwrap()
}

async fn send(ws: &mut WsStream, bytes: Bytes) {
    ws.send(Message::Binary(bytes)).await.unwrap();
}

/// The next control-lane frame.
async fn next_control(ws: &mut WsStream) -> ServerFrame {
    within("a control frame", async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Binary(data))) => {
                    if let Ok(Lane::Control(body)) = lane::parse(&data) {
                        return lane::decode_control(body).unwrap();
                    }
                }
                Some(Ok(_)) => {}
                other => panic!("the WebSocket ended: {other:?}"),
            }
        }
    })
    .await
}

async fn expect_welcome(ws: &mut WsStream) {
    match next_control(ws).await {
        ServerFrame::Welcome { .. } => {}
        other => panic!("expected Welcome, got {other:?}"),
    }
}

/// The `Error` codes on the control lane until the close, and the close code.
async fn read_to_close(ws: &mut WsStream) -> (Vec<ErrorCode>, Option<u16>) {
    within("the close", async {
        let mut errors = Vec::new();
        loop {
            match ws.next().await {
                Some(Ok(Message::Binary(data))) => {
                    if let Ok(Lane::Control(body)) = lane::parse(&data) {
                        if let Ok(ServerFrame::Error { code, .. }) = lane::decode_control(body) {
                            errors.push(code);
                        }
                    }
                }
                Some(Ok(Message::Close(frame))) => return (errors, frame.map(|f| f.code.into())),
                Some(Ok(_)) => {}
                None | Some(Err(_)) => return (errors, None),
            }
        }
    })
    .await
}

/// Volatile frames for a member that stops reading are dropped once its socket is
/// backed up, never queued: the member stays, and its reliable frames still come.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volatile_frames_for_a_backed_up_socket_are_dropped() {
    let mut config = Config::default();
    config.limits.datagram_rate = 100_000.0;
    config.limits.datagram_burst = 100_000;
    let server = TestServer::start_with(config).await;
    let mut silent = raw_ws(&server, "/chat").await;
    send(&mut silent, lane::control_message(&hello(&server, "quiet"))).await;
    expect_welcome(&mut silent).await;
    let join = ClientFrame::Join {
        req: 1,
        room: "v".into(),
        since: None,
    };
    send(&mut silent, lane::control_message(&join)).await;
    let sender = server.ws_client("/chat", "loud").await;
    sender.join("v", None).await.unwrap();
    // Let the silent member's join settle before it stops reading.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let api = server.api_client(None);
    let body = Bytes::from(vec![b'v'; 1000]);
    let mut dropped = 0.0;
    for _ in 0..200 {
        for _ in 0..100 {
            let _ = sender.send_volatile("v", body.clone());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        dropped = sample(
            &api.metrics().await.unwrap(),
            "wtgate_datagrams_dropped_total",
        );
        if dropped > 100.0 {
            break;
        }
    }
    assert!(dropped > 100.0, "only {dropped} volatile frames dropped");
    assert_eq!(
        server.gateway.hub.session_count(),
        2,
        "the silent member stays"
    );
    let sent = sample(&api.metrics().await.unwrap(), "wtgate_datagrams_out_total");
    // Bounded by the socket: the kernel's buffers plus 64 KiB, far below what was sent.
    assert!(sent > 0.0, "none written before the socket backed up");
    assert!(
        sent * 1000.0 < 16.0 * 1024.0 * 1024.0,
        "{sent} volatile frames written"
    );
    eprintln!("volatile frames: {sent} written, {dropped} dropped");

    // Reading again, the member gets what comes next reliably.
    let seq = sender
        .publish("v", Bytes::from_static(b"after"))
        .await
        .unwrap();
    within("the reliable message", async {
        loop {
            if let Some(Ok(Message::Binary(data))) = silent.next().await {
                if let Ok(Lane::Room { body, .. }) = lane::parse(&data) {
                    if let Ok(ServerFrame::Message { seq: got, .. }) = lane::decode_control(body) {
                        if got == seq {
                            return;
                        }
                    }
                }
            }
        }
    })
    .await;
    server.stop().await;
}
