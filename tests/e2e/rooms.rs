//! Join, publish, ack ordering and fan-out.

use bytes::Bytes;
use wtgate::client::Event;

use crate::common::*;

#[tokio::test]
async fn publish_is_acked_and_reaches_every_member_in_order() {
    let server = TestServer::start().await;
    let mut ann = server.client("/chat", "ann").await;
    let mut bob = server.client("/chat", "bob").await;
    ann.join("lobby", None).await.unwrap();
    let joined = bob.join("lobby", None).await.unwrap();
    assert_eq!(joined.members, ["ann", "bob"]);
    for i in 1..=20u64 {
        let seq = ann.publish("lobby", Bytes::from(format!("m{i}"))).await.unwrap();
        assert_eq!(seq, i);
    }
    for client in [&mut ann, &mut bob] {
        for i in 1..=20u64 {
            let (seq, from, body) = expect_event(client, "message", |e| match e {
                Event::Message { seq, from, body, .. } => Some((*seq, from.clone(), body.clone())),
                _ => None,
            })
            .await;
            assert_eq!((seq, from.as_str(), &body[..]), (i, "ann", format!("m{i}").as_bytes()));
        }
    }
    server.stop().await;
}
