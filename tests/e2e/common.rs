//! A server per test on 127.0.0.1:0 with a fresh self-signed certificate.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use wtgate::auth::{mint, Claims};
use wtgate::client::{Client, Event, Trust};
use wtgate::config::{Config, Settings, TlsSource};
use wtgate::server::{Gateway, Server};

pub const SECRET: &str = "e2e-test-secret-0123456789abcdef-0123";
pub const API_KEY: &str = "e2e-api-key";
pub const WAIT: Duration = Duration::from_secs(10);

pub struct TestServer {
    pub addr: SocketAddr,
    /// The server API's TCP address (HTTPS).
    pub api: SocketAddr,
    pub hash: String,
    pub gateway: Arc<Gateway>,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(Config::default()).await
    }

    pub async fn start_with(config: Config) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        Self::start_in(dir, data, config).await
    }

    /// A server on `engine`, whatever `WTGATE_ENGINE` says.
    pub async fn start_on(engine: wtgate::config::Engine, config: Config) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        Self::start_adjusted(dir, data, config, |s| s.engine = engine).await
    }

    /// A default server keeping its durable state in `data`: start another on the
    /// same `data` to test a restart.
    pub async fn start_with_data(data: &std::path::Path) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, data.to_owned(), Config::default()).await
    }

    /// A server keeping its inboxes in `data` (reuse it to test restarts).
    pub async fn start_in(
        dir: tempfile::TempDir,
        data: std::path::PathBuf,
        config: Config,
    ) -> TestServer {
        Self::start_adjusted(dir, data, config, |_| {}).await
    }

    /// Like [`start_in`](Self::start_in), with `adjust` applied to the settings
    /// (e.g. `api_key = None`).
    pub async fn start_adjusted(
        dir: tempfile::TempDir,
        data: std::path::PathBuf,
        config: Config,
        adjust: impl FnOnce(&mut Settings),
    ) -> TestServer {
        let mut settings = Settings {
            listen: "127.0.0.1:0".parse().unwrap(),
            tls: TlsSource::SelfSigned {
                dir: dir.path().to_owned(),
            },
            secret: SECRET.into(),
            dev: false,
            allowed_origins: vec![],
            config,
            data_dir: data,
            api_key: Some(API_KEY.into()),
            redis: None,
            node_id: None,
            hook_secret: None,
            // `WTGATE_ENGINE=wtransport cargo test` runs the suite on wtransport's
            // server instead of the event loop.
            engine: match std::env::var("WTGATE_ENGINE").as_deref() {
                Ok("wtransport") => wtgate::config::Engine::Wtransport,
                _ => wtgate::config::Engine::Loop,
            },
        };
        adjust(&mut settings);
        let server = Server::bind(settings).await.expect("server binds");
        let shutdown = CancellationToken::new();
        let addr = server.local_addr();
        let api = server.api_addr();
        let hash = server.cert_hash().to_owned();
        let gateway = server.gateway();
        let task = tokio::spawn(server.run(shutdown.clone()));
        TestServer {
            addr,
            api,
            hash,
            gateway,
            shutdown,
            task: Some(task),
            _dir: dir,
        }
    }

    pub fn url(&self, ns: &str) -> String {
        format!(
            "https://127.0.0.1:{}/{}",
            self.addr.port(),
            ns.trim_start_matches('/')
        )
    }

    /// The server API's base URL.
    pub fn api_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.api.port())
    }

    /// A client of the server API sending `key`, pinning the certificate.
    pub fn api_client(&self, key: Option<&str>) -> wtgate::api_client::ApiClient {
        wtgate::api_client::ApiClient::new(&self.api_url(), key, &self.trust()).unwrap()
    }

    pub fn trust(&self) -> Trust {
        Trust::Hash(self.hash.clone())
    }

    pub fn token(&self, user: &str) -> String {
        token_for(&Claims::new(user, now(), 3600))
    }

    pub async fn client(&self, ns: &str, user: &str) -> Client {
        Client::connect(&self.url(ns), &self.token(user), &self.trust())
            .await
            .unwrap_or_else(|e| panic!("{user} connects to {ns}: {e}"))
    }

    /// A client of `ns` over a WebSocket (`wss://` on the server API's port).
    pub async fn ws_client(&self, ns: &str, user: &str) -> Client {
        Client::connect_websocket(&self.ws_url(ns), &self.token(user), &self.trust())
            .await
            .unwrap_or_else(|e| panic!("{user} connects to {ns} over a WebSocket: {e}"))
    }

    /// The WebSocket URL of `ns`.
    pub fn ws_url(&self, ns: &str) -> String {
        format!(
            "wss://127.0.0.1:{}/{}",
            self.api.port(),
            ns.trim_start_matches('/')
        )
    }

    /// Stops the server and waits for it to finish, failing if it hangs.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        let task = self.task.take().unwrap();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("server stops in time")
            .unwrap();
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub fn token_for(claims: &Claims) -> String {
    mint(SECRET.as_bytes(), claims).unwrap()
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A session on `ns` driven by hand: the control stream is open and `frames`
/// (usually a `Hello` and more) are written on it; nothing is read.
pub async fn raw_session(
    server: &TestServer,
    ns: &str,
    frames: &[wtgate::protocol::ClientFrame],
) -> (
    wtransport::Endpoint<wtransport::endpoint::endpoint_side::Client>,
    wtransport::Connection,
    wtransport::SendStream,
    wtransport::RecvStream,
) {
    let (endpoint, conn) = wtgate::client::open_session(&server.url(ns), &server.trust())
        .await
        .unwrap();
    let (mut send, recv) = conn.open_bi().await.unwrap().await.unwrap();
    let mut bytes = bytes::BytesMut::new();
    for frame in frames {
        wtgate::protocol::encode_frame(frame, &mut bytes);
    }
    send.write_all(&bytes).await.unwrap();
    (endpoint, conn, send, recv)
}

/// A `Hello` with a valid token for `user`.
pub fn hello(server: &TestServer, user: &str) -> wtgate::protocol::ClientFrame {
    wtgate::protocol::ClientFrame::Hello {
        version: wtgate::protocol::PROTOCOL_VERSION,
        token: server.token(user),
    }
}

/// A room message event as (room, seq, from, body).
pub fn message(e: &Event) -> Option<(String, u64, String, bytes::Bytes)> {
    match e {
        Event::Message {
            room,
            seq,
            from,
            body,
            ..
        } => Some((room.clone(), *seq, from.clone(), body.clone())),
        _ => None,
    }
}

/// A notification event as (id, kind, body).
pub fn notification(e: &Event) -> Option<(u64, String, bytes::Bytes)> {
    match e {
        Event::Notification { id, kind, body, .. } => Some((*id, kind.clone(), body.clone())),
        _ => None,
    }
}

/// The value of the first sample of `series` (`name` or `name{labels}`) in
/// Prometheus text, 0 when absent.
pub fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// The error code of a request the server refused; fails on anything else.
pub fn refused<T: std::fmt::Debug>(
    r: Result<T, wtgate::client::ClientError>,
) -> wtgate::protocol::ErrorCode {
    match r {
        Err(wtgate::client::ClientError::Server { code, .. }) => code,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// Awaits `f`, failing the test after [`WAIT`].
pub async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, f)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// The next event matching `pick`, skipping others; fails after [`WAIT`].
pub async fn expect_event<T>(
    client: &mut Client,
    what: &str,
    mut pick: impl FnMut(&Event) -> Option<T>,
) -> T {
    within(what, async {
        loop {
            match client.next_event().await {
                Some(e) => {
                    if let Some(t) = pick(&e) {
                        return t;
                    }
                }
                None => panic!("session ended while waiting for {what}"),
            }
        }
    })
    .await
}

/// Asserts no event matching `pick` arrives within `wait`.
pub async fn expect_no_event(
    client: &mut Client,
    what: &str,
    wait: Duration,
    mut pick: impl FnMut(&Event) -> bool,
) {
    let deadline = tokio::time::Instant::now() + wait;
    while let Ok(Some(e)) = tokio::time::timeout_at(deadline, client.next_event()).await {
        assert!(!pick(&e), "unexpected {what}: {e:?}");
    }
}

/// The close code the session ends with.
pub async fn expect_closed(client: &mut Client) -> Option<wtgate::protocol::ErrorCode> {
    expect_event(client, "session close", |e| match e {
        Event::Closed { code, .. } => Some(*code),
        _ => None,
    })
    .await
}

/// Runs `wtgate ARGS` in `cwd` (default: the crate's directory) without any WTGATE_*
/// settings from the environment, plus `env`; fails the test if it does not exit.
pub async fn run_wtgate(
    cwd: Option<&std::path::Path>,
    args: &[&str],
    env: &[(&str, &str)],
) -> std::process::Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_wtgate"));
    for (var, _) in std::env::vars().filter(|(k, _)| k.starts_with("WTGATE_")) {
        cmd.env_remove(var);
    }
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    cmd.args(args).envs(env.iter().copied()).kill_on_drop(true);
    within("wtgate to exit", cmd.output()).await.unwrap()
}

/// A process's standard output, trimmed.
pub fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

/// A process's standard error, trimmed.
pub fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).trim().to_owned()
}

/// The code a raw session's connection was closed with by the server; fails the
/// test on any other end.
pub fn close_code(e: wtransport::error::ConnectionError) -> wtgate::protocol::ErrorCode {
    match e {
        wtransport::error::ConnectionError::ApplicationClosed(c) => {
            wtgate::protocol::ErrorCode::from(c.code().into_inner() as u32)
        }
        other => panic!("expected an application close, got {other}"),
    }
}

/// Starts `wtgate serve ARGS` (the real binary) in `cwd` without WTGATE_* settings;
/// returns the process (killed when dropped) and its standard output up to the line
/// starting with `ready`. Its output keeps being drained so it never blocks.
pub async fn spawn_serve(
    cwd: &std::path::Path,
    args: &[&str],
    ready: &str,
) -> (tokio::process::Child, String) {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_wtgate"));
    for (var, _) in std::env::vars().filter(|(k, _)| k.starts_with("WTGATE_")) {
        cmd.env_remove(var);
    }
    let mut child = cmd
        .arg("serve")
        .args(args)
        .current_dir(cwd)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut banner = String::new();
    within("the server's banner", async {
        while let Some(line) = lines.next_line().await.unwrap() {
            banner.push_str(&line);
            banner.push('\n');
            if line.starts_with(ready) {
                return;
            }
        }
        panic!("the server exited:\n{banner}");
    })
    .await;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, banner)
}

/// The rest of the banner line that starts with `prefix`, trimmed.
pub fn banner_line<'a>(banner: &'a str, prefix: &str) -> &'a str {
    banner
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} in:\n{banner}"))
        .trim()
}

/// A TLS 1.3 client configuration that accepts any certificate (signatures still
/// checked): for tests about what a server does with a connection, not trust.
pub fn any_cert_tls() -> tokio_rustls::rustls::ClientConfig {
    use tokio_rustls::rustls::{self, pki_types};
    #[derive(Debug)]
    struct AnyCert(Arc<rustls::crypto::CryptoProvider>);
    impl rustls::client::danger::ServerCertVerifier for AnyCert {
        fn verify_server_cert(
            &self,
            _: &pki_types::CertificateDer<'_>,
            _: &[pki_types::CertificateDer<'_>],
            _: &pki_types::ServerName<'_>,
            _: &[u8],
            _: pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &pki_types::CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            let algorithms = &self.0.signature_verification_algorithms;
            rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms)
        }
        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &pki_types::CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            let algorithms = &self.0.signature_verification_algorithms;
            rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3 is supported")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
        .with_no_client_auth()
}
