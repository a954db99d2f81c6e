//! What a new user meets when `wtgate serve` or the CLI cannot do what was asked:
//! the real binary exits non-zero with one message that names the file, address
//! or flag involved and says what to do — never a panic.

use std::path::Path;
use std::process::Output;

use crate::common::*;

/// Runs `wtgate serve ARGS --secret S` in `dir`; the caller expects it to fail at
/// start, so it must exit by itself.
async fn serve_fails(dir: &Path, args: &[&str]) -> String {
    let mut full = vec!["serve", "--secret", SECRET];
    full.extend_from_slice(args);
    let out = run_wtgate(Some(dir), &full, &[]).await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let err = stderr(&out);
    assert!(!err.contains("panicked"), "{err}");
    err
}

fn describe(o: &Output) -> String {
    format!("stdout: {}\nstderr: {}", stdout(o), stderr(o))
}

#[tokio::test]
async fn bad_certificate_and_key_files_are_named_with_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let good = wtgate::certs::generate(&dir.path().join("good"), 3).unwrap();
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a pem file\n").unwrap();
    let other = wtgate::certs::generate(&dir.path().join("other"), 3).unwrap();

    let path = |p: &Path| p.to_str().unwrap().to_owned();
    let run = |cert: String, key: String| {
        let dir = dir.path().to_owned();
        async move {
            serve_fails(
                &dir,
                &["--listen", "127.0.0.1:0", "--cert", &cert, "--key", &key],
            )
            .await
        }
    };

    let err = run(path(&empty), path(&good.key)).await;
    assert!(err.contains("--cert") && err.contains("empty.pem"), "{err}");
    assert!(err.contains("BEGIN CERTIFICATE"), "{err}");

    // The key given as --cert (and the certificate as --key).
    let err = run(path(&good.key), path(&good.cert)).await;
    assert!(err.contains("--cert") && err.contains("key.pem"), "{err}");
    assert!(err.contains("only `PRIVATE KEY`"), "{err}");

    // A garbage key is reported against the key's path, not the certificate's.
    let err = run(path(&good.cert), path(&garbage)).await;
    assert!(
        err.contains("--key") && err.contains("garbage.pem"),
        "{err}"
    );
    assert!(!err.contains("cert.pem"), "{err}");

    // A key of another certificate.
    let err = run(path(&good.cert), path(&other.key)).await;
    assert!(
        err.contains(&path(&good.cert)) && err.contains(&path(&other.key)),
        "{err}"
    );
}

#[tokio::test]
async fn busy_ports_name_the_protocol_and_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start().await;
    let listen = format!("127.0.0.1:{}", server.addr.port());
    let err = serve_fails(dir.path(), &["--listen", &listen, "--data-dir", "d1"]).await;
    assert!(err.contains("(UDP, WebTransport)"), "{err}");
    assert!(err.contains("--listen"), "{err}");
    assert_eq!(err.matches("in use").count(), 1, "said once: {err}");
    server.stop().await;

    // UDP free, TCP taken: the server API's port.
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = tcp.local_addr().unwrap().to_string();
    let err = serve_fails(dir.path(), &["--listen", &listen, "--data-dir", "d2"]).await;
    assert!(err.contains("(TCP, server API)"), "{err}");
    assert!(err.contains("--listen"), "{err}");

    // The demo page's port.
    let demo = tcp.local_addr().unwrap().to_string();
    let err = serve_fails(
        dir.path(),
        &["--dev", "--listen", "[::1]:0", "--demo-listen", &demo],
    )
    .await;
    assert!(
        err.contains("demo page") && err.contains("--demo-listen"),
        "{err}"
    );
}

#[tokio::test]
async fn a_data_directory_in_use_names_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = TestServer::start_with_data(&data).await;
    let err = serve_fails(
        dir.path(),
        &[
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data.to_str().unwrap(),
        ],
    )
    .await;
    assert!(err.contains("--data-dir"), "{err}");
    server.stop().await;
}

#[tokio::test]
async fn an_untrusted_certificate_says_how_to_trust_it() {
    let server = TestServer::start().await;
    // No certs/ in this directory, and no --cert-hash: the system roots do not
    // know a self-signed certificate.
    let dir = tempfile::tempdir().unwrap();
    let url = server.api_url();
    let out = run_wtgate(
        Some(dir.path()),
        &["broadcast", "--server", &url, "--namespace", "chat", "hi"],
        &[("WTGATE_API_KEY", API_KEY)],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let err = stderr(&out);
    assert!(
        err.contains("not trusted") && err.contains("--cert-hash"),
        "{err}"
    );
    server.stop().await;
}
