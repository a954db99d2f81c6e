//! `wtgate notify | publish | broadcast`: the real binary against an in-process
//! server.

use std::process::Output;

use bytes::Bytes;
use wtgate::client::Event;
use wtgate::config::{Config, TlsSource};

use crate::common::*;

/// Runs `wtgate ARGS` from the crate's directory.
async fn wtgate(args: &[&str], env: &[(&str, &str)]) -> Output {
    run_wtgate(None, args, env).await
}

#[tokio::test]
async fn notify_prints_the_id_and_the_user_gets_it() {
    let server = TestServer::start().await;
    let mut inbox = server.client("/notifications", "ann").await;
    let url = server.api_url();
    let out = wtgate(
        &[
            "notify",
            "--server",
            &url,
            "--cert-hash",
            &server.hash,
            "--user",
            "ann",
            "--kind",
            "greeting",
            "hello from the CLI",
        ],
        &[("WTGATE_API_KEY", API_KEY)],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let id: u64 = stdout(&out).parse().expect("the id alone on stdout");
    let got = expect_event(&mut inbox, "notification", notification).await;
    assert_eq!(
        got,
        (
            id,
            "greeting".into(),
            Bytes::from_static(b"hello from the CLI")
        )
    );
    server.stop().await;
}

#[tokio::test]
async fn publish_and_broadcast_trust_the_dev_certificate_by_default() {
    let certs = tempfile::tempdir().unwrap();
    let certs_dir = certs.path().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = TestServer::start_adjusted(dir, data, Config::default(), |s| {
        s.tls = TlsSource::SelfSigned {
            dir: certs_dir.clone(),
        }
    })
    .await;
    let mut member = server.client("/chat", "bob").await;
    member.join("news", None).await.unwrap();
    let url = server.api_url();
    let certs_arg = certs_dir.to_str().unwrap();

    let out = wtgate(
        &[
            "publish",
            "--server",
            &url,
            "--certs-dir",
            certs_arg,
            "--api-key",
            API_KEY,
            "--namespace",
            "chat",
            "--room",
            "news",
            "{\"headline\":\"hi\"}",
        ],
        &[],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "1");
    let got = expect_event(&mut member, "message", |e| match e {
        Event::Message { from, body, .. } => Some((from.clone(), body.clone())),
        _ => None,
    })
    .await;
    assert_eq!(
        got,
        (
            "server".into(),
            Bytes::from_static(b"{\"headline\":\"hi\"}")
        )
    );

    let out = wtgate(
        &["broadcast", "--namespace", "/chat", "all hands"],
        &[
            ("WTGATE_SERVER", &url),
            ("WTGATE_API_KEY", API_KEY),
            ("WTGATE_CERTS_DIR", certs_arg),
        ],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let got = expect_event(&mut member, "broadcast", |e| match e {
        Event::Broadcast { body, .. } => Some(body.clone()),
        _ => None,
    })
    .await;
    assert_eq!(got, Bytes::from_static(b"all hands"));
    server.stop().await;
}

#[tokio::test]
async fn a_server_that_is_down_is_a_clear_error() {
    // A port that was just free: nothing listens there.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("https://127.0.0.1:{port}");
    let out = wtgate(
        &[
            "notify",
            "--server",
            &url,
            "--cert-hash",
            &"ab".repeat(32),
            "--api-key",
            "k",
            "--user",
            "u",
            "--kind",
            "k",
            "x",
        ],
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        format!("error: cannot reach {url}: connection refused")
    );
    assert_eq!(stdout(&out), "");
}

#[tokio::test]
async fn refusals_print_the_servers_message() {
    let server = TestServer::start().await;
    let url = server.api_url();
    let base = [
        "--server",
        url.as_str(),
        "--cert-hash",
        server.hash.as_str(),
    ];

    let mut args = vec!["publish"];
    args.extend(base);
    args.extend([
        "--api-key",
        "wrong",
        "--namespace",
        "chat",
        "--room",
        "r",
        "x",
    ]);
    let out = wtgate(&args, &[]).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "error: server refused (401 Unauthorized): wrong API key"
    );

    let mut args = vec!["publish"];
    args.extend(base);
    args.extend(["--namespace", "nope", "--room", "r", "x"]);
    let out = wtgate(&args, &[("WTGATE_API_KEY", API_KEY)]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("404 Not Found") && err.contains("/nope"),
        "{err}"
    );

    let mut args = vec!["notify"];
    args.extend(base);
    args.extend(["--user", "a b", "--kind", "k", "x"]);
    let out = wtgate(&args, &[("WTGATE_API_KEY", API_KEY)]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("422"), "{}", stderr(&out));

    // A certificate other than the pinned one.
    let mut args = vec!["notify", "--server", url.as_str(), "--cert-hash"];
    let other = "cd".repeat(32);
    args.push(&other);
    args.extend(["--user", "u", "--kind", "k", "x"]);
    let out = wtgate(&args, &[("WTGATE_API_KEY", API_KEY)]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("cannot reach {url}")) && err.contains("not the pinned"),
        "{err}"
    );
    server.stop().await;
}

#[tokio::test]
async fn bad_flags_are_refused() {
    // Missing --kind: clap's usage error.
    let out = wtgate(&["notify", "--user", "u", "body"], &[]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--kind"), "{}", stderr(&out));

    let out = wtgate(
        &[
            "publish",
            "--server",
            "http://127.0.0.1:1",
            "--namespace",
            "chat",
            "--room",
            "r",
            "x",
        ],
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("HTTPS only"), "{}", stderr(&out));

    let out = wtgate(
        &[
            "notify",
            "--server",
            "https://127.0.0.1:1",
            "--cert-hash",
            "xyz",
            "--user",
            "u",
            "--kind",
            "k",
            "x",
        ],
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("invalid certificate hash"),
        "{}",
        stderr(&out)
    );
}
