//! The command line: `wtgate serve | certs | token | notify | publish | broadcast`.

use std::net::{Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use wtgate::api_client::ApiClient;
use wtgate::auth::{self, Claims};
use wtgate::broker;
use wtgate::certs;
use wtgate::client::Trust;
use wtgate::config::{self, Config, Engine, Settings, TlsSource};
pub use wtgate::load::LoadArgs;

/// Default WebTransport port.
const DEFAULT_PORT: u16 = 4433;

/// Shortest token secret `serve` accepts outside `--dev`: HS256 wants a key as long
/// as its hash (32 bytes), or tokens can be brute-forced offline.
const MIN_SECRET_LEN: usize = 32;

/// wtgate: a realtime gateway over WebTransport.
#[derive(Debug, Parser)]
#[command(name = "wtgate", version, about, propagate_version = true)]
pub struct Cli {
    /// Log filter, e.g. `info`, `debug`, `wtgate=trace,info`.
    #[arg(long, global = true, default_value = "info", env = "WTGATE_LOG")]
    pub log: String,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Generate a self-signed development certificate and print its hash.
    Certs(CertsArgs),
    /// Mint an access token.
    Token(TokenArgs),
    /// Load-test servers: paced publishers, latency, loss, duplicates, misrouting.
    Load(LoadArgs),
    /// Push a notification to a user through the server API; prints its id.
    Notify(NotifyArgs),
    /// Publish to a room as the server through the server API; prints its seq.
    Publish(PublishArgs),
    /// Send a broadcast to every session of a namespace through the server API.
    Broadcast(BroadcastArgs),
}

/// Where `serve` got its token secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// `--secret` or `WTGATE_SECRET`.
    Given,
    /// `--dev` without one: the development secret file, made now or kept from an
    /// earlier run.
    DevFile {
        /// The file.
        path: PathBuf,
        /// Whether it was made by this run.
        made: bool,
    },
}

/// `wtgate serve`: one group of flags per subsystem, flattened.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Development mode: loopback only, loopback browser origins allowed, the demo
    /// page, and (unless a secret is given) a random token secret kept in
    /// `--certs-dir`/dev-secret for `wtgate token` and `wtgate load`.
    #[arg(long, env = "WTGATE_DEV")]
    pub dev: bool,
    /// Where it listens and with which certificate.
    #[command(flatten)]
    pub net: NetArgs,
    /// Who may connect and call.
    #[command(flatten)]
    pub auth: AuthArgs,
    /// The config file and the limits overridden on the command line.
    #[command(flatten)]
    pub limits: LimitArgs,
    /// Where state lives: this node's directory, or a cluster's Redis.
    #[command(flatten)]
    pub state: StateArgs,
}

/// `wtgate serve`: listening and TLS.
#[derive(Debug, Args)]
#[command(next_help_heading = "Listening")]
pub struct NetArgs {
    /// UDP address for WebTransport [default: [::]:4433, with --dev [::1]:4433].
    #[arg(long, env = "WTGATE_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// PEM certificate chain of a real certificate (with --key).
    #[arg(long, env = "WTGATE_CERT", requires = "key")]
    pub cert: Option<PathBuf>,
    /// PEM private key of --cert.
    #[arg(long, env = "WTGATE_KEY", requires = "cert")]
    pub key: Option<PathBuf>,
    /// Where the self-signed development certificate is kept (without --cert).
    #[arg(long, env = "WTGATE_CERTS_DIR", default_value = "certs")]
    pub certs_dir: PathBuf,
    /// With --dev: loopback TCP address of the demo page (plain HTTP; port 0 picks one).
    #[arg(long, env = "WTGATE_DEMO_LISTEN", default_value = "127.0.0.1:8080")]
    pub demo_listen: SocketAddr,
    /// What drives WebTransport sessions: wtgate's event loop (leaner per session
    /// and per delivery; bench/RESULTS.md), or wtransport's server.
    #[arg(long, env = "WTGATE_ENGINE", value_enum, default_value = "loop")]
    pub engine: Engine,
}

/// `wtgate serve`: tokens, origins and keys.
#[derive(Debug, Args)]
#[command(next_help_heading = "Authentication")]
pub struct AuthArgs {
    /// HS256 token secret.
    #[arg(long, env = "WTGATE_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// A browser origin allowed to connect (repeatable), e.g. https://app.example.com.
    #[arg(
        long = "allowed-origin",
        value_name = "ORIGIN",
        env = "WTGATE_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    pub allowed_origins: Vec<String>,
    /// Bearer key of the server API (HTTPS on the same port, TCP); without one the
    /// API is off, except in --dev where it is open on loopback.
    #[arg(long, env = "WTGATE_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Key that backend hook calls and webhooks are signed with (HMAC-SHA256)
    /// [default: the token secret].
    #[arg(long, env = "WTGATE_HOOK_SECRET", hide_env_values = true)]
    pub hook_secret: Option<String>,
}

/// `wtgate serve`: the config file and its overrides.
#[derive(Debug, Args)]
#[command(next_help_heading = "Configuration and limits")]
pub struct LimitArgs {
    /// TOML file with namespaces and limits.
    #[arg(long, env = "WTGATE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Override limits.max_frame (bytes).
    #[arg(long, env = "WTGATE_MAX_FRAME")]
    pub max_frame: Option<usize>,
    /// Override limits.max_rooms_per_session.
    #[arg(long, env = "WTGATE_MAX_ROOMS")]
    pub max_rooms: Option<usize>,
    /// Override limits.publish_rate (publishes per second per session).
    #[arg(long, env = "WTGATE_PUBLISH_RATE")]
    pub publish_rate: Option<f64>,
    /// Override the history size of every namespace (messages per room).
    #[arg(long, env = "WTGATE_HISTORY")]
    pub history: Option<usize>,
}

/// `wtgate serve`: durable state and clustering.
#[derive(Debug, Args)]
#[command(next_help_heading = "State and cluster")]
pub struct StateArgs {
    /// Directory for durable state (notification inboxes).
    #[arg(long, env = "WTGATE_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// Cluster mode: share rooms, presence, history and inboxes with the other nodes
    /// through this Redis, e.g. redis://10.0.0.5:6379 (without it: a single process).
    #[arg(long, env = "WTGATE_REDIS", value_name = "URL", hide_env_values = true)]
    pub redis: Option<String>,
    /// This node's id in the cluster, 1 to 64 of A-Z a-z 0-9 . _ - [default: random].
    #[arg(long, env = "WTGATE_NODE_ID", value_name = "ID")]
    pub node_id: Option<String>,
}

impl LimitArgs {
    /// The config file (or the defaults) with the command line's overrides, checked.
    fn load(&self) -> anyhow::Result<Config> {
        let mut config = match &self.config {
            Some(path) => Config::load(path)?,
            None => Config::default(),
        };
        if let Some(v) = self.max_frame {
            config.limits.max_frame = v;
        }
        if let Some(v) = self.max_rooms {
            config.limits.max_rooms_per_session = v;
        }
        if let Some(v) = self.publish_rate {
            config.limits.publish_rate = v;
        }
        if let Some(v) = self.history {
            for ns in config.namespaces.values_mut() {
                ns.history = v;
            }
        }
        config.validate()?;
        Ok(config)
    }
}

impl ServeArgs {
    /// Where the demo page is served: only with --dev, and only on loopback
    /// (it hands out tokens to whoever asks).
    pub fn demo_addr(&self) -> anyhow::Result<Option<SocketAddr>> {
        if !self.dev {
            return Ok(None);
        }
        if !self.net.demo_listen.ip().is_loopback() {
            bail!(
                "--demo-listen must be a loopback address (got {}): the demo mints tokens for anyone who asks",
                self.net.demo_listen
            );
        }
        Ok(Some(self.net.demo_listen))
    }

    /// Loads the config file, applies the overrides and checks the result.
    /// Returns the settings and where the token secret came from.
    pub fn into_settings(self) -> anyhow::Result<(Settings, SecretSource)> {
        let config = self.limits.load()?;

        let listen = match self.net.listen {
            Some(addr) => addr,
            None if self.dev => SocketAddr::new(Ipv6Addr::LOCALHOST.into(), DEFAULT_PORT),
            None => SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), DEFAULT_PORT),
        };
        if self.dev && !listen.ip().is_loopback() {
            bail!("--dev listens on loopback only (got --listen {listen}); drop --dev to serve other hosts");
        }

        for origin in &self.auth.allowed_origins {
            config::check_origin(origin).map_err(|e| anyhow::anyhow!("--allowed-origin: {e}"))?;
        }
        let node_id = self.state.node_id.filter(|n| !n.is_empty());
        if let Some(id) = &node_id {
            if !broker::valid_node_id(id) {
                bail!("--node-id {id:?}: use 1 to 64 of A-Z a-z 0-9 . _ -");
            }
            if self.state.redis.is_none() {
                bail!("--node-id names a node of a cluster: it needs --redis URL");
            }
        }
        let (secret, source) = match self.auth.secret {
            Some(s) if s.is_empty() => bail!("the token secret is empty"),
            Some(s) => (s, SecretSource::Given),
            None if self.dev => {
                let path = self.net.certs_dir.join(auth::DEV_SECRET_FILE);
                let (s, made) = auth::dev_secret(&self.net.certs_dir)
                    .with_context(|| format!("development secret {}", path.display()))?;
                (s, SecretSource::DevFile { path, made })
            }
            None => bail!("no token secret: set WTGATE_SECRET or --secret, or use --dev"),
        };
        if secret.len() < MIN_SECRET_LEN {
            if !self.dev {
                bail!(
                    "the token secret is {} bytes; it must be at least {MIN_SECRET_LEN} outside \
                     --dev (a short secret can be guessed offline from any token): use e.g. \
                     `openssl rand -hex 32`",
                    secret.len()
                );
            }
            tracing::warn!(
                "the token secret is shorter than {MIN_SECRET_LEN} bytes; use a long random one"
            );
        }

        let tls = match (self.net.cert, self.net.key) {
            (Some(cert), Some(key)) => TlsSource::Files { cert, key },
            (None, None) => TlsSource::SelfSigned {
                dir: self.net.certs_dir,
            },
            // clap's `requires` makes this unreachable; keep a clear message anyway.
            _ => bail!("--cert and --key go together"),
        };

        let settings = Settings {
            listen,
            tls,
            secret,
            dev: self.dev,
            allowed_origins: self.auth.allowed_origins,
            config,
            data_dir: self.state.data_dir,
            api_key: self.auth.api_key.filter(|k| !k.is_empty()),
            redis: self.state.redis.filter(|u| !u.is_empty()),
            node_id,
            hook_secret: self.auth.hook_secret.filter(|k| !k.is_empty()),
            engine: self.net.engine,
        };
        Ok((settings, source))
    }
}

/// `wtgate certs`.
#[derive(Debug, Clone, Args)]
pub struct CertsArgs {
    /// Output directory for cert.pem and key.pem.
    #[arg(long, env = "WTGATE_CERTS_DIR", default_value = "certs")]
    pub out: PathBuf,
    /// Validity in days (1 to 14; browsers accept at most 14 for hash pinning).
    #[arg(long, env = "WTGATE_CERT_DAYS", default_value_t = certs::MAX_DAYS)]
    pub days: u32,
    /// Replace an existing certificate (servers using it must restart, and clients
    /// pinning its hash must take the new one).
    #[arg(long)]
    pub force: bool,
}

/// Generates a certificate; prints its files, expiry, and the hash alone on
/// the last line. Refuses to replace one without `--force`.
pub fn run_certs(args: CertsArgs) -> anyhow::Result<()> {
    let existing = args.out.join(certs::CERT_FILE);
    if existing.exists() && !args.force {
        let what = match certs::inspect(&existing) {
            Ok(info) => format!(
                "sha-256 {}, valid until {}",
                info.hash,
                info.not_after.date()
            ),
            Err(e) => format!("unreadable: {e}"),
        };
        bail!(
            "{} already exists ({what}); a server using it and clients pinning its hash \
             would stop matching: pass --force to replace it (then restart the server), \
             or --out DIR for another directory",
            existing.display()
        );
    }
    let files = certs::generate(&args.out, args.days)?;
    if !certs::outlives_renewal(&files) {
        eprintln!(
            "note: this certificate expires within a day, and `wtgate serve` renews such a \
             certificate when it starts: the next serve using {} will replace it (use --days 2 \
             or more to keep it)",
            args.out.display()
        );
    }
    let t = files.not_after;
    println!("certificate: {}", files.cert.display());
    println!("private key: {}", files.key.display());
    println!(
        "valid until: {} {:02}:{:02}:{:02} UTC",
        t.date(),
        t.hour(),
        t.minute(),
        t.second()
    );
    println!("SHA-256 hash (serverCertificateHashes, --cert-hash):");
    println!("{}", files.hash);
    Ok(())
}

/// `wtgate token`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// User id (the token's `sub`).
    #[arg(long)]
    pub user: String,
    /// Lifetime, e.g. 90s, 15m, 1h, 7d.
    #[arg(long, env = "WTGATE_TOKEN_TTL", default_value = "1h")]
    pub ttl: String,
    /// Room name pattern the token may join, `*` = any run of characters
    /// (repeatable; default: all rooms).
    #[arg(long = "rooms", value_name = "PATTERN")]
    pub rooms: Vec<String>,
    /// Namespace the token may open, e.g. /chat (repeatable; default: all).
    #[arg(long = "ns", value_name = "NAMESPACE")]
    pub ns: Vec<String>,
    /// HS256 token secret [default: the `serve --dev` secret in --certs-dir, if any].
    #[arg(long, env = "WTGATE_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// Without a secret: use the development secret `serve --dev` keeps here.
    #[arg(long, env = "WTGATE_CERTS_DIR", default_value = "certs")]
    pub certs_dir: PathBuf,
}

impl TokenArgs {
    /// Mints the token as of `now` (unix seconds).
    pub fn mint(&self, now: u64) -> anyhow::Result<String> {
        let secret = match self.secret.as_deref() {
            Some(s) if !s.is_empty() => s.to_owned(),
            _ => match auth::read_dev_secret(&self.certs_dir)? {
                Some(dev) => {
                    eprintln!(
                        "no WTGATE_SECRET: signed with the development secret of `serve --dev` in {}",
                        self.certs_dir.join(auth::DEV_SECRET_FILE).display()
                    );
                    dev
                }
                None => bail!(
                    "no token secret: set WTGATE_SECRET or --secret (or run this from the \
                     directory of a `serve --dev`, which keeps its secret in certs/{})",
                    auth::DEV_SECRET_FILE
                ),
            },
        };
        let ttl = auth::parse_duration(&self.ttl)?;
        if ttl.as_secs() == 0 {
            bail!("--ttl must be at least one second");
        }
        let mut claims = Claims::new(&self.user, now, ttl.as_secs());
        if !self.rooms.is_empty() {
            claims.rooms = Some(self.rooms.clone());
        }
        if !self.ns.is_empty() {
            let paths = self
                .ns
                .iter()
                .map(|n| format!("/{}", n.trim_start_matches('/')))
                .collect();
            claims.ns = Some(paths);
        }
        auth::mint(secret.as_bytes(), &claims).with_context(|| format!("user {:?}", self.user))
    }
}

/// Mints a token and prints only the token.
pub fn run_token(args: TokenArgs) -> anyhow::Result<()> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("system clock before 1970")?
        .as_secs();
    println!("{}", args.mint(now)?);
    Ok(())
}

/// How `notify`, `publish` and `broadcast` reach the server API.
#[derive(Debug, Args)]
pub struct ApiArgs {
    /// Server URL; the API is HTTPS on the WebTransport port number.
    #[arg(long, env = "WTGATE_SERVER", default_value = "https://localhost:4433")]
    pub server: String,
    /// Bearer key of the server API.
    #[arg(long, env = "WTGATE_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Trust the server's certificate with this SHA-256 hash (64 hex digits).
    #[arg(long, value_name = "HEX", conflicts_with = "ca")]
    pub cert_hash: Option<String>,
    /// Trust certificates issued by this CA (PEM file).
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Without --cert-hash or --ca, for a loopback server: pin the development
    /// certificate in this directory if there is one (else: the system roots).
    #[arg(long, env = "WTGATE_CERTS_DIR", default_value = "certs")]
    pub certs_dir: PathBuf,
}

impl ApiArgs {
    /// The trust setting: --cert-hash, --ca, the development certificate of a
    /// loopback server, or the system roots.
    pub fn trust(&self) -> anyhow::Result<Trust> {
        Ok(Trust::for_server(
            &self.server,
            self.cert_hash.as_deref(),
            self.ca.as_deref(),
            &self.certs_dir,
        )?)
    }

    /// A client of the server API.
    pub fn client(&self) -> anyhow::Result<ApiClient> {
        Ok(ApiClient::new(
            &self.server,
            self.api_key.as_deref(),
            &self.trust()?,
        )?)
    }
}

/// `wtgate notify`.
#[derive(Debug, Args)]
pub struct NotifyArgs {
    /// Where the server API is.
    #[command(flatten)]
    pub api: ApiArgs,
    /// The recipient's user id.
    #[arg(long)]
    pub user: String,
    /// Notification kind, e.g. `invoice.paid`.
    #[arg(long)]
    pub kind: String,
    /// The body (UTF-8 text, e.g. JSON).
    pub body: String,
}

/// Stores and pushes a notification; prints its id.
pub async fn run_notify(args: NotifyArgs) -> anyhow::Result<()> {
    let api = args.api.client()?;
    let id = api
        .notify(&args.user, &args.kind, args.body.as_bytes())
        .await?;
    println!("{id}");
    Ok(())
}

/// `wtgate publish`.
#[derive(Debug, Args)]
pub struct PublishArgs {
    /// Where the server API is.
    #[command(flatten)]
    pub api: ApiArgs,
    /// Namespace, e.g. `chat` or `/chat`.
    #[arg(long)]
    pub namespace: String,
    /// Room name.
    #[arg(long)]
    pub room: String,
    /// The body (UTF-8 text, e.g. JSON).
    pub body: String,
}

/// Publishes to a room as the server; prints the message's seq.
pub async fn run_publish(args: PublishArgs) -> anyhow::Result<()> {
    let api = args.api.client()?;
    let seq = api
        .publish(&args.namespace, &args.room, args.body.as_bytes())
        .await?;
    println!("{seq}");
    Ok(())
}

/// `wtgate broadcast`.
#[derive(Debug, Args)]
pub struct BroadcastArgs {
    /// Where the server API is.
    #[command(flatten)]
    pub api: ApiArgs,
    /// Namespace, e.g. `chat` or `/chat`.
    #[arg(long)]
    pub namespace: String,
    /// The body (UTF-8 text, e.g. JSON).
    pub body: String,
}

/// Sends a broadcast to a namespace.
pub async fn run_broadcast(args: BroadcastArgs) -> anyhow::Result<()> {
    let api = args.api.client()?;
    api.broadcast(&args.namespace, args.body.as_bytes()).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// A secret long enough for `serve` outside `--dev`.
    const S: &str = "test-secret-0123456789abcdef-0123456789";

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("wtgate").chain(args.iter().copied()))
    }

    /// Parses `serve ARGS`, ignoring any WTGATE_SECRET in the environment
    /// unless `--secret` is among ARGS.
    fn serve(args: &[&str]) -> ServeArgs {
        let mut full = vec!["serve"];
        full.extend_from_slice(args);
        match parse(&full).unwrap().command {
            Command::Serve(mut s) => {
                if !args.contains(&"--secret") {
                    s.auth.secret = None;
                }
                s
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn serve_requires_a_secret_outside_dev() {
        let err = serve(&[]).into_settings().unwrap_err().to_string();
        assert!(err.contains("no token secret"), "{err}");
        let err = serve(&["--secret", &"k".repeat(31)])
            .into_settings()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("31 bytes") && err.contains("at least 32"),
            "{err}"
        );
        serve(&["--secret", &"k".repeat(32)])
            .into_settings()
            .unwrap();
        // A dev server may use a short one (a warning).
        serve(&["--dev", "--secret", "k"]).into_settings().unwrap();
    }

    #[test]
    fn serve_defaults() {
        let (s, source) = serve(&["--secret", "0123456789abcdef0123456789abcdef"])
            .into_settings()
            .unwrap();
        assert_eq!(source, SecretSource::Given);
        assert_eq!(s.listen, "[::]:4433".parse().unwrap());
        assert_eq!(
            s.tls,
            TlsSource::SelfSigned {
                dir: PathBuf::from("certs")
            }
        );
        assert_eq!(s.secret, "0123456789abcdef0123456789abcdef");
        assert!(!s.dev);
        assert_eq!(s.config, Config::default());
    }

    #[test]
    fn serve_dev() {
        let dir = tempfile::tempdir().unwrap();
        let certs = dir.path().to_str().unwrap();
        let (s, source) = serve(&["--dev", "--certs-dir", certs])
            .into_settings()
            .unwrap();
        assert!(s.dev);
        assert_eq!(s.listen, "[::1]:4433".parse().unwrap());
        let path = dir.path().join(auth::DEV_SECRET_FILE);
        assert_eq!(
            source,
            SecretSource::DevFile {
                path: path.clone(),
                made: true
            }
        );
        assert_eq!(s.secret.len(), 64);
        // The next dev run keeps the secret, so tokens minted from the file work.
        let (again, source) = serve(&["--dev", "--certs-dir", certs])
            .into_settings()
            .unwrap();
        assert_eq!(again.secret, s.secret);
        assert_eq!(source, SecretSource::DevFile { path, made: false });
        let mut token = TokenArgs {
            user: "alice".into(),
            ttl: "1h".into(),
            rooms: vec![],
            ns: vec![],
            secret: None,
            certs_dir: dir.path().into(),
        };
        let claims = auth::TokenVerifier::new(s.secret.as_bytes())
            .verify(&token.mint(0).unwrap(), 1)
            .unwrap();
        assert_eq!(claims.sub, "alice");
        token.certs_dir = dir.path().join("elsewhere");
        let err = token.mint(0).unwrap_err().to_string();
        assert!(
            err.contains("no token secret") && err.contains("serve --dev"),
            "{err}"
        );

        let (s, source) = serve(&["--dev", "--listen", "127.0.0.1:5000", "--secret", "x"])
            .into_settings()
            .unwrap();
        assert_eq!(s.listen, "127.0.0.1:5000".parse().unwrap());
        assert_eq!(s.secret, "x");
        assert_eq!(source, SecretSource::Given);

        for addr in ["[::]:4433", "0.0.0.0:4433", "192.0.2.1:4433"] {
            let err = serve(&["--dev", "--listen", addr])
                .into_settings()
                .unwrap_err()
                .to_string();
            assert!(err.contains("loopback"), "{addr}: {err}");
        }
    }

    #[test]
    fn demo_listens_on_loopback_with_dev_only() {
        assert_eq!(serve(&[]).demo_addr().unwrap(), None);
        assert_eq!(
            serve(&["--demo-listen", "127.0.0.1:9"])
                .demo_addr()
                .unwrap(),
            None
        );
        assert_eq!(
            serve(&["--dev"]).demo_addr().unwrap(),
            Some("127.0.0.1:8080".parse().unwrap())
        );
        assert_eq!(
            serve(&["--dev", "--demo-listen", "[::1]:0"])
                .demo_addr()
                .unwrap(),
            Some("[::1]:0".parse().unwrap())
        );
        let err = serve(&["--dev", "--demo-listen", "0.0.0.0:8080"])
            .demo_addr()
            .unwrap_err()
            .to_string();
        assert!(err.contains("loopback"), "{err}");
    }

    #[test]
    fn cert_and_key_go_together() {
        assert!(parse(&["serve", "--cert", "c.pem"]).is_err());
        assert!(parse(&["serve", "--key", "k.pem"]).is_err());
        let (s, _) = serve(&["--cert", "c.pem", "--key", "k.pem", "--secret", S])
            .into_settings()
            .unwrap();
        assert_eq!(
            s.tls,
            TlsSource::Files {
                cert: "c.pem".into(),
                key: "k.pem".into()
            }
        );
    }

    #[test]
    fn overrides_apply_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wtgate.toml");
        std::fs::write(
            &path,
            "[limits]\nmax_frame = 2048\nmax_rooms_per_session = 7\n[namespaces.game]\nhistory = 3\n[namespaces.chat]\n",
        )
        .unwrap();
        let path_str = path.to_str().unwrap();
        let (s, _) = serve(&[
            "--secret",
            S,
            "--config",
            path_str,
            "--max-frame",
            "4096",
            "--history",
            "9",
            "--publish-rate",
            "2.5",
            "--allowed-origin",
            "https://a.example",
            "--allowed-origin",
            "https://b.example",
        ])
        .into_settings()
        .unwrap();
        assert_eq!(s.config.limits.max_frame, 4096);
        assert_eq!(s.config.limits.max_rooms_per_session, 7);
        assert_eq!(s.config.limits.publish_rate, 2.5);
        assert_eq!(
            s.config.namespaces.keys().collect::<Vec<_>>(),
            ["/chat", "/game"]
        );
        assert!(s.config.namespaces.values().all(|n| n.history == 9));
        assert_eq!(
            s.allowed_origins,
            ["https://a.example", "https://b.example"]
        );

        let err = serve(&["--secret", S, "--max-frame", "0"])
            .into_settings()
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_frame"), "{err}");

        let err = serve(&["--secret", S, "--config", "/nonexistent/wtgate.toml"])
            .into_settings()
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/wtgate.toml"), "{err}");
    }

    #[test]
    fn certs_args() {
        match parse(&["certs"]).unwrap().command {
            Command::Certs(a) => {
                assert_eq!(a.out, PathBuf::from("certs"));
                assert_eq!(a.days, 14);
            }
            other => panic!("{other:?}"),
        }
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().to_str().unwrap();
        match parse(&["certs", "--out", out, "--days", "3", "--log", "debug"]).unwrap() {
            Cli {
                log,
                command: Command::Certs(a),
            } => {
                assert_eq!(log, "debug");
                run_certs(a).unwrap();
            }
            other => panic!("{other:?}"),
        }
        assert!(dir.path().join("cert.pem").exists());
        let first = certs::inspect(&dir.path().join("cert.pem")).unwrap();
        let mut again = CertsArgs {
            out: dir.path().into(),
            days: 3,
            force: false,
        };
        let err = run_certs(again.clone()).unwrap_err().to_string();
        assert!(
            err.contains("already exists") && err.contains("--force"),
            "{err}"
        );
        assert!(err.contains(&first.hash), "{err}");
        assert_eq!(certs::inspect(&dir.path().join("cert.pem")).unwrap(), first);
        again.force = true;
        again.days = 15;
        assert!(run_certs(again.clone()).is_err());
        again.days = 2;
        run_certs(again).unwrap();
        assert_ne!(
            certs::inspect(&dir.path().join("cert.pem")).unwrap().hash,
            first.hash
        );
    }

    #[test]
    fn allowed_origins_must_be_origins() {
        for bad in [
            "*",
            "app.example.com",
            "https://app.example.com/chat",
            "https://",
        ] {
            let err = serve(&["--secret", S, "--allowed-origin", bad])
                .into_settings()
                .unwrap_err()
                .to_string();
            assert!(err.contains("--allowed-origin"), "{bad}: {err}");
        }
        for good in [
            "https://app.example.com",
            "http://localhost:3000",
            "https://[::1]:8443/",
        ] {
            serve(&["--secret", S, "--allowed-origin", good])
                .into_settings()
                .unwrap();
        }
    }

    #[test]
    fn node_ids_are_checked_before_connecting() {
        let err = serve(&[
            "--secret",
            S,
            "--redis",
            "redis://127.0.0.1:1",
            "--node-id",
            "a b",
        ])
        .into_settings()
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("--node-id \"a b\""), "{err}");
        assert!(!err.contains("broker"), "{err}");
        let err = serve(&["--secret", S, "--node-id", "a"])
            .into_settings()
            .unwrap_err()
            .to_string();
        assert!(err.contains("--redis"), "{err}");
    }

    #[test]
    fn every_serve_flag_reads_an_environment_variable() {
        let cli = Cli::command();
        let serve = cli.find_subcommand("serve").unwrap();
        for arg in serve.get_arguments() {
            let id = arg.get_id().as_str();
            if ["help", "version", "log"].contains(&id) {
                continue;
            }
            assert!(
                arg.get_env().is_some(),
                "serve --{id} has no environment variable"
            );
        }
    }

    #[test]
    fn token_mints_a_verifiable_token() {
        let cli = parse(&[
            "token", "--user", "alice", "--ttl", "15m", "--rooms", "team-*", "--rooms", "lobby",
            "--ns", "chat", "--secret", "k",
        ])
        .unwrap();
        let Command::Token(args) = cli.command else {
            panic!("not token");
        };
        let token = args.mint(1_000).unwrap();
        let claims = auth::TokenVerifier::new(b"k")
            .verify(&token, 1_001)
            .unwrap();
        assert_eq!(claims.sub, "alice");
        assert_eq!(claims.exp, 1_000 + 900);
        assert_eq!(claims.rooms.unwrap(), ["team-*", "lobby"]);
        assert_eq!(claims.ns.unwrap(), ["/chat"]);

        let mut bare = TokenArgs {
            user: "bob".into(),
            ttl: "1h".into(),
            rooms: vec![],
            ns: vec![],
            secret: Some("k".into()),
            certs_dir: "/nonexistent".into(),
        };
        let claims = auth::TokenVerifier::new(b"k")
            .verify(&bare.mint(0).unwrap(), 1)
            .unwrap();
        assert_eq!((claims.exp, claims.rooms, claims.ns), (3600, None, None));

        bare.ttl = "soon".into();
        assert!(bare.mint(0).is_err());
        bare.ttl = "0s".into();
        assert!(bare.mint(0).is_err());
        bare.ttl = "1h".into();
        bare.user = auth::SERVER_USER.into();
        assert!(bare.mint(0).is_err());
        bare.user = "bob".into();
        bare.secret = None;
        let err = bare.mint(0).unwrap_err().to_string();
        assert!(err.contains("no token secret"), "{err}");
    }

    #[test]
    fn api_commands_parse() {
        let cli = parse(&[
            "notify",
            "--user",
            "alice",
            "--kind",
            "k",
            "hello",
            "--server",
            "https://127.0.0.1:9",
            "--api-key",
            "key",
            "--cert-hash",
            &"ab".repeat(32),
        ])
        .unwrap();
        let Command::Notify(args) = cli.command else {
            panic!("not notify");
        };
        assert_eq!((args.user.as_str(), args.kind.as_str()), ("alice", "k"));
        assert_eq!(args.body, "hello");
        assert_eq!(args.api.api_key.as_deref(), Some("key"));
        assert!(matches!(args.api.trust().unwrap(), Trust::Hash(h) if h == "ab".repeat(32)));

        let cli = parse(&["publish", "--namespace", "chat", "--room", "r", "hi"]).unwrap();
        let Command::Publish(args) = cli.command else {
            panic!("not publish");
        };
        assert_eq!((args.namespace.as_str(), args.room.as_str()), ("chat", "r"));
        assert_eq!(args.api.certs_dir, PathBuf::from("certs"));

        assert!(parse(&["notify", "--user", "alice", "hello"]).is_err());
        assert!(parse(&["publish", "--room", "r", "hi"]).is_err());
        assert!(parse(&["broadcast", "--namespace", "chat"]).is_err());
        assert!(parse(&[
            "notify",
            "--user",
            "u",
            "--kind",
            "k",
            "b",
            "--ca",
            "c.pem",
            "--cert-hash",
            "ab"
        ])
        .is_err());
    }

    #[test]
    fn api_trust_defaults_to_the_dev_certificate_on_loopback() {
        let dir = tempfile::tempdir().unwrap();
        let files = certs::generate(dir.path(), 1).unwrap();
        let args = |server: &str| ApiArgs {
            server: server.into(),
            api_key: None,
            cert_hash: None,
            ca: None,
            certs_dir: dir.path().into(),
        };
        for local in [
            "https://localhost:4433",
            "https://127.0.0.1:1",
            "https://[::1]:4433",
        ] {
            assert!(
                matches!(args(local).trust().unwrap(), Trust::Hash(ref h) if *h == files.hash),
                "{local}"
            );
        }
        assert!(matches!(
            args("https://example.com").trust().unwrap(),
            Trust::System
        ));
        let mut none = args("https://localhost:4433");
        none.certs_dir = dir.path().join("missing");
        assert!(matches!(none.trust().unwrap(), Trust::System));
    }

    #[test]
    fn token_requires_user() {
        assert!(parse(&["token", "--secret", "k"]).is_err());
    }
}
