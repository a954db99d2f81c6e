//! Room presence and namespace presence, with users holding several sessions.

use crate::common::*;
use wtgate::client::Event;

fn presence(e: &Event) -> Option<(bool, String)> {
    match e {
        Event::PresenceJoin { user, .. } => Some((true, user.clone())),
        Event::PresenceLeave { user, .. } => Some((false, user.clone())),
        _ => None,
    }
}

#[tokio::test]
async fn a_user_with_two_sessions_joins_once_and_leaves_with_the_last() {
    let server = TestServer::start().await;
    let mut bob = server.client("/chat", "bob").await;
    bob.join("r", None).await.unwrap();
    let ann1 = server.client("/chat", "ann").await;
    let ann2 = server.client("/chat", "ann").await;
    let j1 = ann1.join("r", None).await.unwrap();
    assert_eq!(j1.members, ["ann", "bob"]);
    assert_eq!(
        expect_event(&mut bob, "ann joins", presence).await,
        (true, "ann".into())
    );
    let j2 = ann2.join("r", None).await.unwrap();
    assert_eq!(j2.members, ["ann", "bob"]);
    ann1.leave("r").await.unwrap();
    expect_no_event(
        &mut bob,
        "presence while ann still has a session",
        std::time::Duration::from_millis(300),
        |e| presence(e).is_some(),
    )
    .await;
    // The last session disconnecting (not leaving) counts as leaving.
    ann2.close().await;
    drop(ann2);
    assert_eq!(
        expect_event(&mut bob, "ann leaves", presence).await,
        (false, "ann".into())
    );
    server.stop().await;
}

#[tokio::test]
async fn namespace_presence_lists_who_is_online() {
    let server = TestServer::start().await;
    let mut ann = server.client("/chat", "ann").await;
    assert_eq!(
        ann.welcome().online.as_deref(),
        Some(&["ann".to_owned()][..])
    );
    let bob = server.client("/chat", "bob").await;
    assert_eq!(
        bob.welcome().online.as_deref(),
        Some(&["ann".to_owned(), "bob".to_owned()][..])
    );
    let got = expect_event(&mut ann, "bob online", |e| match e {
        Event::OnlineJoin { user } => Some(user.clone()),
        _ => None,
    })
    .await;
    assert_eq!(got, "bob");
    assert_eq!(ann.online().await.unwrap(), ["ann", "bob"]);
    bob.close().await;
    drop(bob);
    let got = expect_event(&mut ann, "bob offline", |e| match e {
        Event::OnlineLeave { user } => Some(user.clone()),
        _ => None,
    })
    .await;
    assert_eq!(got, "bob");
    // /notifications has namespace presence off.
    let n = server.client("/notifications", "ann").await;
    assert_eq!(n.welcome().online, None);
    assert_eq!(
        refused(n.online().await),
        wtgate::protocol::ErrorCode::Forbidden
    );
    server.stop().await;
}
