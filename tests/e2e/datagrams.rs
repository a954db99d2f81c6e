//! Volatile events over datagrams.

use bytes::Bytes;
use std::time::Duration;
use wtgate::client::Event;

use crate::common::*;

fn volatile(e: &Event) -> Option<(String, String, Bytes)> {
    match e {
        Event::Volatile { room, from, body } => Some((room.clone(), from.clone(), body.clone())),
        _ => None,
    }
}

#[tokio::test]
async fn volatile_events_reach_other_members_only() {
    let server = TestServer::start().await;
    let mut ann = server.client("/chat", "ann").await;
    let mut bob = server.client("/chat", "bob").await;
    let mut eve = server.client("/chat", "eve").await;
    ann.join("r", None).await.unwrap();
    bob.join("r", None).await.unwrap();
    eve.join("elsewhere", None).await.unwrap();
    // Datagrams may be lost even on loopback: send until one arrives, bounded.
    let got = within("a volatile event", async {
        loop {
            ann.send_volatile("r", Bytes::from_static(b"typing"))
                .unwrap();
            if let Ok(Some(e)) =
                tokio::time::timeout(Duration::from_millis(100), bob.next_event()).await
            {
                if let Some(v) = volatile(&e) {
                    return v;
                }
            }
        }
    })
    .await;
    assert_eq!(
        got,
        ("r".into(), "ann".into(), Bytes::from_static(b"typing"))
    );
    expect_no_event(
        &mut ann,
        "own datagram echoed",
        Duration::from_millis(300),
        |e| volatile(e).is_some(),
    )
    .await;
    expect_no_event(
        &mut eve,
        "datagram of a room not joined",
        Duration::from_millis(100),
        |e| volatile(e).is_some(),
    )
    .await;
    server.stop().await;
}

#[tokio::test]
async fn datagrams_for_rooms_not_joined_are_dropped() {
    let server = TestServer::start().await;
    let ann = server.client("/chat", "ann").await;
    let mut bob = server.client("/chat", "bob").await;
    let h = bob.join("secret", None).await.unwrap().handle;
    ann.join("public", None).await.unwrap();
    // ann forges a datagram for bob's room handle.
    let forged = wtgate::protocol::encode_datagram(&wtgate::protocol::Datagram::Send {
        handle: h,
        body: Bytes::from_static(b"sneaky"),
    });
    for _ in 0..20 {
        ann.send_raw_datagram(forged.clone()).unwrap();
    }
    expect_no_event(
        &mut bob,
        "forged datagram",
        Duration::from_millis(400),
        |e| volatile(e).is_some(),
    )
    .await;
    // ann's session is fine.
    ann.publish("public", Bytes::from_static(b"still here"))
        .await
        .unwrap();
    server.stop().await;
}

#[tokio::test]
async fn the_client_probes_the_tail_of_its_writes_and_probes_go_nowhere() {
    let server = TestServer::start().await;
    let ann = server.client("/chat", "ann").await;
    let mut bob = server.client("/chat", "bob").await;
    ann.join("r", None).await.unwrap();
    bob.join("r", None).await.unwrap();
    // ann's join and three publishes, bob's join.
    let writes = 5.0;
    for i in 0..3 {
        ann.publish("r", Bytes::from(format!("m{i}")))
            .await
            .unwrap();
    }
    // Two probes follow the last write 1 and 2 ms later (PROTOCOL.md §10.1);
    // earlier ones may have been cut short by the next write.
    let counted = within("the probes of the last write", async {
        loop {
            let metrics = server.gateway.metrics_text().await;
            let n = sample(&metrics, "wtgate_datagrams_in_total");
            if n >= 3.0 {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let metrics = server.gateway.metrics_text().await;
    let n = sample(&metrics, "wtgate_datagrams_in_total");
    assert!(
        n <= 2.0 * writes,
        "at most two probes per write of either client: {n} (first {counted})"
    );
    assert_eq!(sample(&metrics, "wtgate_datagrams_dropped_total"), 0.0);
    expect_no_event(
        &mut bob,
        "a probe forwarded",
        Duration::from_millis(100),
        |e| volatile(e).is_some(),
    )
    .await;
    // The session is unharmed.
    ann.publish("r", Bytes::from_static(b"after"))
        .await
        .unwrap();
    server.stop().await;
}
