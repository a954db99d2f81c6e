//! Room presence and namespace presence, with users holding several sessions.

use crate::common::*;
use wtgate::client::{ClientError, Event};
use wtgate::protocol::ErrorCode;

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

/// A join/leave storm in a room of 500: each member gets one batch per presence
/// window instead of a frame per change, and everyone's view of the room ends
/// right (a leave and a return within the window are no change at all).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_in_a_room_of_500_costs_batches_not_a_frame_per_change() {
    const MEMBERS: usize = 500;
    const CHURNING: usize = 100;
    let mut config = wtgate::config::Config::default();
    config.limits.connect_rate_per_ip = 100_000.0;
    config.limits.connect_burst_per_ip = 100_000;
    let window = config.limits.presence_window;
    let server = TestServer::start_with(config).await;

    // The watcher, over WebTransport, keeps its view of the room from the events.
    let mut watcher = server.client("/chat", "watcher").await;
    let mut view: std::collections::BTreeSet<String> = watcher
        .join("big", None)
        .await
        .unwrap()
        .members
        .into_iter()
        .collect();
    // 500 members over WebSockets (the hub's presence is the same for both).
    let mut members = Vec::new();
    for chunk in (0..MEMBERS).collect::<Vec<_>>().chunks(32) {
        let joined = futures::future::join_all(chunk.iter().map(|i| {
            let server = &server;
            async move {
                let c = server.ws_client("/chat", &format!("m{i:03}")).await;
                c.join("big", None).await.unwrap();
                c
            }
        }))
        .await;
        members.extend(joined);
    }
    let api = server.api_client(None);
    tokio::time::sleep(window * 3).await;
    let before = sample(
        &api.metrics().await.unwrap(),
        "wtgate_presence_frames_total",
    );

    // The storm: 100 members leave the room and come back, all at once.
    let started = std::time::Instant::now();
    futures::future::join_all(members[..CHURNING].iter().map(|c| async move {
        c.leave("big").await.unwrap();
        c.join("big", None).await.unwrap();
    }))
    .await;
    let storm = started.elapsed();
    tokio::time::sleep(window * 3).await;
    let frames = sample(
        &api.metrics().await.unwrap(),
        "wtgate_presence_frames_total",
    ) - before;
    let changes = 2 * CHURNING;
    let one_each = (changes * MEMBERS) as f64;
    let windows = (storm.as_millis() / window.as_millis() + 2) as f64;
    eprintln!(
        "storm of {changes} changes in {storm:?} in a room of {MEMBERS}: {frames} presence frames \
         ({one_each} with one frame per change and member; bound {})",
        windows * (MEMBERS + 1) as f64
    );
    assert!(
        frames <= windows * (MEMBERS + 1) as f64,
        "{frames} presence frames for {changes} changes over {storm:?}"
    );
    assert!(
        frames < one_each / 4.0,
        "{frames} frames, {one_each} unbatched"
    );

    // The watcher's view is the room's: every member is in it.
    let expected: std::collections::BTreeSet<String> = (0..MEMBERS)
        .map(|i| format!("m{i:03}"))
        .chain(["watcher".to_owned()])
        .collect();
    within("the watcher's view of the room", async {
        while view != expected {
            match tokio::time::timeout(window * 5, watcher.next_event()).await {
                Ok(Some(e)) => match presence(&e) {
                    Some((true, user)) => {
                        view.insert(user);
                    }
                    Some((false, user)) => {
                        view.remove(&user);
                    }
                    None => {}
                },
                Ok(None) => panic!("the watcher's session ended"),
                Err(_) => panic!(
                    "the view stopped changing: {} members, missing {:?}, extra {:?}",
                    view.len(),
                    expected.difference(&view).take(5).collect::<Vec<_>>(),
                    view.difference(&expected).take(5).collect::<Vec<_>>()
                ),
            }
        }
    })
    .await;
    server.stop().await;
}

/// Who is online, and who is in a room, is read a page at a time: `Welcome.online`,
/// `Joined.members` and `Online` hold at most `ONLINE_PAGE` users, and the clients
/// read on with `OnlinePage` and `MembersPage`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn who_is_online_and_in_a_room_comes_in_pages() {
    use wtgate::protocol::ONLINE_PAGE;
    let users = ONLINE_PAGE + 10;
    let mut config = wtgate::config::Config::default();
    config.limits.connect_rate_per_ip = 100_000.0;
    config.limits.connect_burst_per_ip = 100_000;
    let server = TestServer::start_with(config).await;
    let mut sessions = Vec::new();
    for chunk in (0..users).collect::<Vec<_>>().chunks(32) {
        let opened = futures::future::join_all(chunk.iter().map(|i| {
            let server = &server;
            async move {
                let client = server.ws_client("/chat", &format!("u{i:04}")).await;
                client.join("big", None).await.unwrap();
                client
            }
        }))
        .await;
        sessions.extend(opened);
    }
    let last = server.client("/chat", "zed").await;
    let welcome = last.welcome().online.clone().unwrap();
    assert_eq!(welcome.len(), ONLINE_PAGE, "Welcome holds the first page");
    assert_eq!(welcome[0], "u0000");
    let all = last.online().await.unwrap();
    assert_eq!(all.len(), users + 1, "every page");
    assert!(all.windows(2).all(|w| w[0] < w[1]), "sorted, no repeats");
    assert_eq!(
        last.online_page("u0005", 3).await.unwrap(),
        ["u0006", "u0007", "u0008"]
    );
    let capped = last.online_page("", 5_000).await.unwrap();
    assert_eq!(
        capped.len(),
        ONLINE_PAGE,
        "a page never exceeds ONLINE_PAGE"
    );

    // The room: Joined holds the first page, the client reads the rest.
    let joined = last.join("big", None).await.unwrap();
    assert_eq!(joined.members, all, "the join reads every page of members");
    assert_eq!(
        last.members_page("big", "u0005", 3).await.unwrap(),
        ["u0006", "u0007", "u0008"]
    );
    assert_eq!(
        last.members_page("big", "", 5_000).await.unwrap().len(),
        ONLINE_PAGE
    );
    let outside = last.members_page("elsewhere", "", 10).await;
    assert!(
        matches!(
            outside,
            Err(ClientError::Server {
                code: ErrorCode::NotJoined,
                ..
            })
        ),
        "{outside:?}"
    );
    drop(sessions);
    server.stop().await;
}
