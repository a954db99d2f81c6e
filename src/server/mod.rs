//! The WebTransport server: accepts sessions, routes them by path to a namespace,
//! and runs one [`session`] task each until shutdown.

mod gateway;
mod rate;
mod session;

pub use gateway::{Gateway, GatewayError, MAX_KIND_LEN};
pub use rate::TokenBucket;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use thiserror::Error;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, info_span, warn, Instrument};
use wtransport::config::Ipv6DualStackConfig;
use wtransport::endpoint::{endpoint_side, IncomingSession};
use wtransport::{Endpoint, Identity, ServerConfig, VarInt};

use crate::broker::Local;
use crate::certs;
use crate::config::{Settings, TlsSource};
use crate::hub::{Hub, SessionLimits};
use crate::notify::Embedded;
use crate::protocol::ErrorCode;

/// Why the server could not start.
#[derive(Debug, Error)]
pub enum ServerError {
    /// The certificate or key could not be made or loaded.
    #[error("certificate: {0}")]
    Certificate(String),
    /// The data directory (notification inboxes) is unusable.
    #[error("data directory: {0}")]
    DataDir(String),
    /// The UDP socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
}

/// A bound server, ready to [`run`](Server::run).
pub struct Server {
    endpoint: Endpoint<endpoint_side::Server>,
    gateway: Arc<Gateway>,
    local: Arc<Local>,
    cert_hash: String,
}

impl Server {
    /// Loads (or makes) the certificate and binds the UDP socket.
    pub async fn bind(settings: Settings) -> Result<Server, ServerError> {
        let identity = load_identity(&settings.tls).await?;
        let cert_hash = certs::hash_der(identity.certificate_chain().as_slice()[0].der());
        let endpoint = Endpoint::server(server_config(&settings, identity)).map_err(|source| {
            ServerError::Bind {
                addr: settings.listen,
                source,
            }
        })?;
        let config = &settings.config;
        let limits = &config.limits;
        let hub = Arc::new(Hub::new(
            config.namespaces.keys().map(String::as_str),
            SessionLimits {
                max_sessions: limits.max_sessions,
                max_sessions_per_user: limits.max_sessions_per_user,
            },
        ));
        let local = Arc::new(Local::new(hub.clone(), config));
        let inbox = Embedded::open(&settings.data_dir, limits.max_inbox)
            .map_err(|e| ServerError::DataDir(e.to_string()))?;
        let gateway = Arc::new(Gateway::new(settings, hub, local.clone(), Arc::new(inbox)));
        Ok(Server {
            endpoint,
            gateway,
            local,
            cert_hash,
        })
    }

    /// The bound UDP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.endpoint
            .local_addr()
            .expect("a bound endpoint has an address")
    }

    /// SHA-256 of the certificate (hex), for `serverCertificateHashes`.
    pub fn cert_hash(&self) -> &str {
        &self.cert_hash
    }

    /// The shared state, for server-side pushes.
    pub fn gateway(&self) -> Arc<Gateway> {
        self.gateway.clone()
    }

    /// Accepts sessions until `shutdown` is cancelled, then closes every session with
    /// `GoingAway` and waits for them, at most `shutdown_grace`.
    pub async fn run(self, shutdown: CancellationToken) {
        let tasks = TaskTracker::new();
        let sweeper = tasks.spawn(sweep_rooms(
            self.local.clone(),
            self.gateway.config.limits.room_ttl,
            shutdown.clone(),
        ));
        info!(addr = %self.local_addr(), "accepting WebTransport sessions");
        loop {
            tokio::select! {
                incoming = self.endpoint.accept() => {
                    let gateway = self.gateway.clone();
                    tasks.spawn(handle_incoming(gateway, incoming));
                }
                _ = shutdown.cancelled() => break,
            }
        }
        let grace = self.gateway.config.limits.shutdown_grace;
        let open = self.gateway.hub.close_all(ErrorCode::GoingAway);
        self.gateway.shutdown.cancel();
        info!(sessions = open, "shutting down");
        sweeper.abort();
        tasks.close();
        if tokio::time::timeout(grace, tasks.wait()).await.is_err() {
            warn!("sessions still open after {grace:?}; closing the endpoint");
        }
        self.endpoint.close(
            VarInt::from_u32(ErrorCode::GoingAway.to_code()),
            b"shutdown",
        );
        let _ = tokio::time::timeout(Duration::from_secs(1), self.endpoint.wait_idle()).await;
    }
}

async fn load_identity(tls: &TlsSource) -> Result<Identity, ServerError> {
    let (cert, key) = match tls {
        TlsSource::Files { cert, key } => (cert.clone(), key.clone()),
        TlsSource::SelfSigned { dir } => {
            let (files, made) =
                certs::ensure(dir).map_err(|e| ServerError::Certificate(e.to_string()))?;
            if made {
                info!(cert = %files.cert.display(), "generated a self-signed certificate");
            }
            (files.cert, files.key)
        }
    };
    Identity::load_pemfiles(&cert, &key)
        .await
        .map_err(|e| ServerError::Certificate(format!("{}: {e}", cert.display())))
}

fn server_config(settings: &Settings, identity: Identity) -> ServerConfig {
    let builder = ServerConfig::builder();
    let builder = match settings.listen {
        // Dual-stack: Chromium resolves `localhost` to ::1 and IPv4 clients still work.
        SocketAddr::V6(v6) if v6.ip().is_unspecified() => {
            builder.with_bind_address_v6(v6, Ipv6DualStackConfig::Allow)
        }
        addr => builder.with_bind_address(addr),
    };
    builder
        .with_identity(identity)
        .keep_alive_interval(Some(Duration::from_secs(10)))
        .max_idle_timeout(Some(Duration::from_secs(30)))
        .expect("a valid idle timeout")
        .build()
}

/// Drops the history of rooms that emptied more than `ttl` ago.
async fn sweep_rooms(local: Arc<Local>, ttl: Duration, shutdown: CancellationToken) {
    let period = (ttl / 4).clamp(Duration::from_millis(100), Duration::from_secs(30));
    let mut tick = tokio::time::interval(period);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let dropped = local.sweep(Instant::now(), ttl);
                if dropped > 0 {
                    debug!(dropped, rooms = local.room_count(), "swept idle rooms");
                }
            }
            _ = shutdown.cancelled() => return,
        }
    }
}

/// Checks the path and origin before accepting, then runs the session.
async fn handle_incoming(gateway: Arc<Gateway>, incoming: IncomingSession) {
    let limits = &gateway.config.limits;
    let request = match tokio::time::timeout(limits.hello_timeout, incoming).await {
        Ok(Ok(request)) => request,
        Ok(Err(e)) => {
            debug!("session handshake failed: {e}");
            return;
        }
        Err(_) => {
            debug!("session handshake timed out");
            return;
        }
    };
    let path = request
        .path()
        .split('?')
        .next()
        .unwrap_or_default()
        .to_owned();
    let peer = request.remote_address();
    let Some(ns_config) = gateway.config.namespace(&path).cloned() else {
        debug!(%peer, path, "unknown namespace");
        request.not_found().await;
        return;
    };
    if !gateway.settings.origin_allowed(request.origin()) {
        warn!(%peer, origin = ?request.origin(), "origin not allowed");
        request.forbidden().await;
        return;
    }
    let id = gateway.new_session_id();
    let span = info_span!("session", id, ns = %path, %peer);
    async move {
        let conn = match request.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                debug!("accept failed: {e}");
                return;
            }
        };
        let session = session::Session::new(id, path, ns_config, conn, gateway);
        if let Err(e) = session.run().await {
            debug!("session ended: {e}");
        }
    }
    .instrument(span)
    .await
}
