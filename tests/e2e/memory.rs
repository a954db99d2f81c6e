//! Server memory under abuse, read from `/proc/PID/status` of a real `wtgate serve`
//! process: members that stop reading while others publish large messages pin at
//! most their byte budgets, and after the burst the memory goes back.
//!
//! Measured here (8 rooms × 150 × 60 KiB, no history): glibc's malloc 29.7 → 59.1 →
//! 35.8 MiB; mimalloc 37.7 → 76.2 → 61.0 MiB, so the binary keeps glibc's. With
//! history on, what stays after the burst is the rooms' history (100 × 60 KiB per
//! room here), kept by design until `room_ttl`.

use std::time::{Duration, Instant};

use bytes::Bytes;
use wtgate::client::{Client, Trust};
use wtgate::protocol::ClientFrame;

use crate::common::*;

const ROOMS: usize = 8;
const BODY: usize = 60 * 1024;
const MESSAGES: usize = 150;
const MIB: f64 = 1024.0 * 1024.0;

/// Resident memory of `pid`, in MiB.
fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib / 1024.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_members_pin_their_budgets_and_memory_goes_back_after_the_burst() {
    let dir = tempfile::tempdir().unwrap();
    let (certs, data) = (dir.path().join("certs"), dir.path().join("data"));
    let (mut child, banner) = spawn_serve(
        dir.path(),
        &[
            "--listen",
            "127.0.0.1:0",
            "--secret",
            SECRET,
            "--publish-rate",
            "1000",
            // No history: what a room keeps is its own budget; this is about what passes.
            "--history",
            "0",
            "--log",
            "warn",
            "--certs-dir",
            certs.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
        ],
        "certificate sha-256:",
    )
    .await;
    let pid = child.id().unwrap();
    let addr = banner_line(&banner, "wtgate listening on https://");
    let addr = addr.split_whitespace().next().unwrap();
    let url = format!("https://{addr}/chat");
    let trust = Trust::Hash(banner_line(&banner, "certificate sha-256:").to_owned());
    let token = |user: &str| token_for(&wtgate::auth::Claims::new(user, now(), 3600));

    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss_mib(pid);

    // In each room a member that never reads, and a publisher of large messages.
    let mut silent = Vec::new();
    let mut publishers = Vec::new();
    let body = Bytes::from(vec![b'x'; BODY]);
    for i in 0..ROOMS {
        let room = format!("big-{i}");
        let (ep, conn) = wtgate::client::open_session(&url, &trust).await.unwrap();
        let (mut send, mut recv) = conn.open_bi().await.unwrap().await.unwrap();
        let mut hello = bytes::BytesMut::new();
        for frame in [
            ClientFrame::Hello {
                version: wtgate::protocol::PROTOCOL_VERSION,
                token: token(&format!("quiet{i}")),
            },
            ClientFrame::Join {
                req: 1,
                room: room.clone(),
                since: None,
            },
        ] {
            wtgate::protocol::encode_frame(&frame, &mut hello);
        }
        send.write_all(&hello).await.unwrap();
        let drain = tokio::spawn(async move {
            let mut sink = vec![0u8; 4096];
            while let Ok(Some(_)) = recv.read(&mut sink).await {}
        });
        silent.push((ep, conn, send, drain));
        let publisher = Client::connect(&url, &token(&format!("loud{i}")), &trust)
            .await
            .unwrap();
        publisher.join(&room, None).await.unwrap();
        let body = body.clone();
        publishers.push(tokio::spawn(async move {
            let mut publisher = publisher;
            for _ in 0..MESSAGES {
                publisher.publish(&room, body.clone()).await.unwrap();
                while let Ok(Some(_)) =
                    tokio::time::timeout(Duration::ZERO, publisher.next_event()).await
                {
                }
            }
            publisher.close().await;
        }));
    }
    let mut peak = before;
    let burst = async {
        for p in publishers {
            p.await.unwrap();
        }
    };
    tokio::pin!(burst);
    loop {
        tokio::select! {
            _ = &mut burst => break,
            _ = tokio::time::sleep(Duration::from_millis(50)) => peak = peak.max(rss_mib(pid)),
        }
    }
    peak = peak.max(rss_mib(pid));
    for (_ep, conn, _send, drain) in silent {
        conn.close(0u32.into(), b"");
        drain.abort();
    }

    // After the burst: memory returns near where it started.
    let settle = Instant::now();
    let mut after = rss_mib(pid);
    while after > before + 32.0 && settle.elapsed() < Duration::from_secs(15) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        after = rss_mib(pid);
    }
    println!(
        "server RSS: {before:.1} MiB before, {peak:.1} at peak, {after:.1} after ({:.1} s later); \
         {ROOMS} rooms x {MESSAGES} x {} KiB",
        settle.elapsed().as_secs_f64(),
        BODY / 1024
    );
    // Silent members pin at most their 4 MiB budgets (plus QUIC's send windows).
    let pinned = ROOMS as f64 * (4.0 * MIB + 2.0 * MIB) / MIB;
    assert!(
        peak - before < pinned + 96.0,
        "peak {peak:.1} MiB from {before:.1}: over {pinned:.0} MiB of budgets + 96"
    );
    assert!(
        after <= before + 32.0,
        "RSS stayed at {after:.1} MiB (from {before:.1}, peak {peak:.1})"
    );
    child.kill().await.unwrap();
}

/// A session that creates rooms (join a new room, publish one 60 KiB message,
/// leave, again): rooms and history stay within their budgets, so the server's
/// memory levels off instead of growing for `room_ttl`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_creating_loop_levels_off_at_the_history_budget() {
    const SESSIONS: usize = 8;
    const LOOP: Duration = Duration::from_secs(8);
    const BUDGET_MIB: f64 = 24.0;
    let dir = tempfile::tempdir().unwrap();
    let (certs, data) = (dir.path().join("certs"), dir.path().join("data"));
    let config = dir.path().join("wtgate.toml");
    std::fs::write(
        &config,
        format!(
            "[limits]\nhistory_bytes_total = {}\ncommand_rate = 1000.0\ncommand_burst = 1000\n",
            (BUDGET_MIB * MIB) as usize
        ),
    )
    .unwrap();
    let (mut child, banner) = spawn_serve(
        dir.path(),
        &[
            "--listen",
            "127.0.0.1:0",
            "--secret",
            SECRET,
            "--publish-rate",
            "1000",
            "--log",
            "warn",
            "--config",
            config.to_str().unwrap(),
            "--certs-dir",
            certs.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
        ],
        "certificate sha-256:",
    )
    .await;
    let pid = child.id().unwrap();
    let addr = banner_line(&banner, "wtgate listening on https://");
    let addr = addr.split_whitespace().next().unwrap().to_owned();
    let trust = Trust::Hash(banner_line(&banner, "certificate sha-256:").to_owned());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss_mib(pid);

    let body = Bytes::from(vec![b'r'; BODY]);
    let mut loops = Vec::new();
    for i in 0..SESSIONS {
        let (url, trust, body) = (format!("https://{addr}/chat"), trust.clone(), body.clone());
        let token = token_for(&wtgate::auth::Claims::new(
            &format!("maker{i}"),
            now(),
            3600,
        ));
        loops.push(tokio::spawn(async move {
            let client = Client::connect(&url, &token, &trust).await.unwrap();
            let started = Instant::now();
            let mut rooms = 0;
            while started.elapsed() < LOOP {
                let room = format!("r{i}-{rooms}");
                client.join(&room, None).await.unwrap();
                client.publish(&room, body.clone()).await.unwrap();
                client.leave(&room).await.unwrap();
                rooms += 1;
            }
            rooms
        }));
    }
    let mut peak = before;
    let all = futures::future::join_all(loops);
    tokio::pin!(all);
    let made: usize = loop {
        tokio::select! {
            done = &mut all => break done.into_iter().map(|r| r.unwrap()).sum(),
            _ = tokio::time::sleep(Duration::from_millis(100)) => peak = peak.max(rss_mib(pid)),
        }
    };
    peak = peak.max(rss_mib(pid));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = rss_mib(pid);
    let made_mib = made as f64 * BODY as f64 / MIB;
    println!(
        "server RSS: {before:.1} MiB before, {peak:.1} at peak, {after:.1} after; {made} rooms \
         made with {made_mib:.0} MiB of messages, history budget {BUDGET_MIB} MiB"
    );
    assert!(
        made_mib > 2.0 * BUDGET_MIB,
        "the loop outgrew the budget ({made_mib:.0} MiB)"
    );
    assert!(
        peak - before < BUDGET_MIB + 64.0,
        "peak {peak:.1} MiB from {before:.1}: over the {BUDGET_MIB} MiB history budget + 64"
    );
    child.kill().await.unwrap();
}
