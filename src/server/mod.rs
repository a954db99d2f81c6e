//! The WebTransport server: accepts sessions, routes them by path to a namespace,
//! and runs one task each until shutdown — the WebTransport driver of the
//! transport-neutral session core (`session.rs`); next to it, on TCP with the same
//! port number, the HTTPS server API ([`app`]).

mod admission;
mod api_slots;
mod driver;
mod flush;
mod gateway;
mod http;
mod identity;
mod loop_session;
mod memory_release;
mod session;
mod socket_probe;
mod websocket;

pub use crate::session::TokenBucket;
pub use admission::{Admission, ConnectLimiter};
pub use flush::{FlushPolicy, FlushWindow};
pub use gateway::{Gateway, GatewayError, MAX_KIND_LEN};
pub use http::{app, API_DISABLED};
use memory_release::MemoryRelease;
pub use websocket::{router as websocket_router, SUBPROTOCOL};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use thiserror::Error;
use tokio::net::TcpListener;
use tokio_rustls::rustls;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, info_span, warn, Instrument};
use wtransport::endpoint::{endpoint_side, IncomingSession};
use wtransport::{Endpoint, Identity, ServerConfig, VarInt};

use crate::broker::{Broker, Local, Redis};
use crate::certs;
use crate::config::{Engine, Settings};
use crate::engine::Admit;
use crate::hooks::{Hooks, HttpHooks, NoHooks};
use crate::hub::{Hub, SessionLimits};
use crate::metrics::Metrics;
use crate::notify::{Embedded, Inbox, RedisInbox};
use crate::protocol::ErrorCode;
use crate::webhooks::{self, EmbeddedQueue, RedisQueue, Webhooks};
use futures::future::BoxFuture;

/// Why the server could not start.
#[derive(Debug, Error)]
pub enum ServerError {
    /// The certificate or key could not be made or loaded.
    #[error("certificate: {0}")]
    Certificate(String),
    /// The data directory (notification inboxes) is unusable.
    #[error("data directory: {0}")]
    DataDir(String),
    /// The backend hooks cannot be set up.
    #[error("hooks: {0}")]
    Hooks(String),
    /// Cluster mode (`--redis`) could not start: Redis unreachable or a bad setting.
    #[error("cluster mode: {0}")]
    Cluster(String),
    /// The UDP socket (WebTransport) or the TCP socket (server API) could not be bound.
    #[error("cannot listen on {addr} ({protocol}): {error}{}", bind_hint(error))]
    Bind {
        /// `UDP, WebTransport` or `TCP, server API`.
        protocol: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The cause (in the message, not a `source`: it would be printed twice).
        error: std::io::Error,
    },
}

/// What to do about a bind error an operator can fix with a flag.
fn bind_hint(error: &std::io::Error) -> &'static str {
    match error.kind() {
        std::io::ErrorKind::AddrInUse => {
            "; another process (another wtgate?) holds that port: stop it, or pass --listen with another port"
        }
        std::io::ErrorKind::AddrNotAvailable => {
            "; no interface of this machine has that address: pass --listen with one of its addresses"
        }
        _ => "",
    }
}

/// The UDP side, as [`Settings::engine`] says: wtransport's endpoint with a task
/// per connection and per session, or the engine's event loop (one task for
/// every connection; see [`crate::engine`]).
enum Udp {
    Wtransport(Endpoint<endpoint_side::Server>),
    Loop {
        socket: std::net::UdpSocket,
        config: Arc<quinn_proto::ServerConfig>,
    },
}

/// A bound server, ready to [`run`](Server::run).
pub struct Server {
    endpoint: Udp,
    api: TcpListener,
    api_tls: Arc<rustls::ServerConfig>,
    gateway: Arc<Gateway>,
    /// The single-process broker; `None` in cluster mode (Redis).
    local: Option<Arc<Local>>,
    /// The webhook writer and sender, when webhooks are on.
    webhook_tasks: Option<(BoxFuture<'static, ()>, BoxFuture<'static, ()>)>,
    /// Stops them, once the sessions are gone.
    webhook_stop: CancellationToken,
    cert_hash: String,
}

impl Server {
    /// Loads (or makes) the certificate, binds the UDP socket and the TCP socket of
    /// the server API on the same port number.
    pub async fn bind(settings: Settings) -> Result<Server, ServerError> {
        let hooks: Arc<dyn Hooks> = if settings
            .config
            .namespaces
            .values()
            .any(|ns| !ns.hooks.url.is_empty())
        {
            let secret = settings.hook_secret.as_ref().unwrap_or(&settings.secret);
            Arc::new(
                HttpHooks::new(&settings.config, secret.as_bytes())
                    .map_err(|e| ServerError::Hooks(e.to_string()))?,
            )
        } else {
            Arc::new(NoHooks)
        };
        for (path, ns) in &settings.config.namespaces {
            if ns.hooks.any() && ns.hooks.url.is_empty() {
                return Err(ServerError::Hooks(format!(
                    "namespaces.{}.hooks: a hook is on but url is empty (a Rust program \
                     passes its own hooks to Server::bind_with_hooks)",
                    path.trim_start_matches('/')
                )));
            }
        }
        Self::bind_with_hooks(settings, hooks).await
    }

    /// [`bind`](Self::bind) with the application's own [`Hooks`], run in-process
    /// (for Rust programs that embed wtgate) instead of the HTTP hooks; the
    /// configuration still says which hooks each namespace calls.
    pub async fn bind_with_hooks(
        settings: Settings,
        hooks: Arc<dyn Hooks>,
    ) -> Result<Server, ServerError> {
        let identity = identity::load(&settings.tls).await?;
        let cert_hash = certs::hash_der(identity.certificate_chain().as_slice()[0].der());
        let api_tls = http::tls_config(&identity)
            .map_err(|e| ServerError::Certificate(format!("{}: {e}", settings.tls)))?;
        let (endpoint, api) = bind_sockets(&settings, identity).await?;
        let config = &settings.config;
        let limits = &config.limits;
        let hub = Arc::new(
            Hub::new(
                config.namespaces.keys().map(String::as_str),
                SessionLimits {
                    max_sessions: limits.max_sessions,
                    max_sessions_per_user: limits.max_sessions_per_user,
                },
            )
            .with_presence_window(limits.presence_window),
        );
        let mut node = None;
        let (broker, inbox, local): (Arc<dyn Broker>, Arc<dyn Inbox>, _) = match &settings.redis {
            Some(url) => {
                let (broker, inbox, id) = cluster_backends(&settings, url, hub.clone()).await?;
                node = Some(id);
                (broker, inbox, None)
            }
            None => {
                let local = Arc::new(Local::new(hub.clone(), config));
                match local.restore(&snapshot_path(&settings)) {
                    Ok(0) => {}
                    Ok(rooms) => info!(rooms, "restored room history saved at the last shutdown"),
                    Err(e) => warn!("room history not restored: {e}"),
                }
                let inbox = Embedded::open(&settings.data_dir, limits.max_inbox)
                    .map_err(|e| data_dir_error(&settings.data_dir, e))?;
                (local.clone(), Arc::new(inbox), Some(local))
            }
        };
        let metrics = Arc::new(Metrics::new(config.namespaces.keys().map(String::as_str)));
        let webhook_stop = CancellationToken::new();
        let (webhooks, webhook_tasks) = if config.webhooks.url.is_empty() {
            (Webhooks::off(), None)
        } else {
            let queue: Arc<dyn webhooks::Queue> = match (&settings.redis, &node) {
                (Some(url), Some(node)) => Arc::new(
                    RedisQueue::connect(url, node)
                        .await
                        .map_err(|e| ServerError::Cluster(e.to_string()))?,
                ),
                _ => Arc::new(
                    EmbeddedQueue::open(&settings.data_dir)
                        .map_err(|e| data_dir_error(&settings.data_dir, e))?,
                ),
            };
            let secret = settings.hook_secret.as_ref().unwrap_or(&settings.secret);
            let started = webhooks::start(
                &config.webhooks,
                queue,
                secret.as_bytes(),
                metrics.clone(),
                webhook_stop.clone(),
            )
            .map_err(|e| ServerError::Hooks(e.to_string()))?;
            (started.webhooks, Some((started.writer, started.sender)))
        };
        let gateway = Arc::new(Gateway::new(
            settings, hub, broker, inbox, hooks, webhooks, metrics,
        ));
        Ok(Server {
            webhook_tasks,
            webhook_stop,
            endpoint,
            api,
            api_tls,
            gateway,
            local,
            cert_hash,
        })
    }

    /// The bound UDP address.
    pub fn local_addr(&self) -> SocketAddr {
        match &self.endpoint {
            Udp::Wtransport(endpoint) => endpoint.local_addr(),
            Udp::Loop { socket, .. } => socket.local_addr(),
        }
        .expect("a bound endpoint has an address")
    }

    /// The bound TCP address of the server API (HTTPS).
    pub fn api_addr(&self) -> SocketAddr {
        self.api
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// SHA-256 of the certificate (hex), for `serverCertificateHashes`.
    pub fn cert_hash(&self) -> &str {
        &self.cert_hash
    }

    /// The shared state, for server-side pushes.
    pub fn gateway(&self) -> Arc<Gateway> {
        self.gateway.clone()
    }

    /// Accepts sessions and serves the API until `shutdown` is cancelled, then closes
    /// every session with `GoingAway` and waits for them and for API requests in
    /// flight, at most `shutdown_grace`.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let tasks = self.gateway.tasks.clone();
        let webhook_tasks = self
            .webhook_tasks
            .take()
            .map(|(writer, sender)| (tokio::spawn(writer), tokio::spawn(sender)));
        // Only the single-process broker keeps rooms in memory; Redis expires them.
        let sweeper = self.local.clone().map(|local| {
            tasks.spawn(sweep_rooms(
                local,
                self.gateway.config.limits.room_ttl,
                shutdown.clone(),
            ))
        });
        tasks.spawn(follow_load(self.gateway.clone(), shutdown.clone()));
        let window = self.gateway.config.limits.presence_window;
        if !window.is_zero() {
            tasks.spawn(flush_presence(
                self.gateway.hub.clone(),
                window,
                shutdown.clone(),
            ));
        }
        let (udp_addr, api_addr) = (self.local_addr(), self.api_addr());
        tasks.spawn(http::serve(
            self.api,
            self.api_tls,
            http::app(self.gateway.clone()),
            shutdown.clone(),
            self.gateway.config.limits.clone(),
        ));
        info!(addr = %api_addr, "serving the server API (HTTPS)");
        info!(addr = %udp_addr, "accepting WebTransport sessions");
        let endpoint = match self.endpoint {
            Udp::Wtransport(endpoint) => Some(endpoint),
            Udp::Loop { socket, config } => {
                let limits = &self.gateway.config.limits;
                let event_loop = crate::engine::EventLoop::new(
                    loop_session::LoopGateway::new(self.gateway.clone()),
                    socket,
                    config,
                    limits.hello_timeout,
                );
                match event_loop {
                    Ok(event_loop) => {
                        tasks.spawn(event_loop.run(
                            self.gateway.shutdown.clone(),
                            ErrorCode::GoingAway.to_code(),
                            limits.shutdown_grace,
                        ));
                    }
                    Err(e) => warn!("the event loop could not start: {e}"),
                }
                None
            }
        };
        match &endpoint {
            Some(endpoint) => Self::accept(&self.gateway, endpoint, &shutdown).await,
            None => shutdown.cancelled().await,
        }
        let grace = self.gateway.config.limits.shutdown_grace;
        let open = self.gateway.hub.close_all(ErrorCode::GoingAway);
        self.gateway.shutdown.cancel();
        info!(sessions = open, "shutting down");
        if let Some(sweeper) = sweeper {
            sweeper.abort();
        }
        tasks.close();
        if tokio::time::timeout(grace, tasks.wait()).await.is_err() {
            warn!("sessions still open after {grace:?}; closing the endpoint");
        }
        // The sessions' last events (session.closed) are queued; what is not sent
        // yet waits in the queue for the next start.
        self.webhook_stop.cancel();
        if let Some((writer, sender)) = webhook_tasks {
            let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
            sender.abort();
            let _ = sender.await;
        }
        if let Some(local) = &self.local {
            match local.save(&snapshot_path(self.gateway.settings())) {
                Ok(rooms) => debug!(rooms, "saved room history for the next start"),
                Err(e) => warn!("room history not saved: {e}"),
            }
        }
        if let Some(endpoint) = endpoint {
            endpoint.close(
                VarInt::from_u32(ErrorCode::GoingAway.to_code()),
                b"shutdown",
            );
            let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
        }
    }

    /// wtransport's accept loop, until `shutdown`: admission, then a task per
    /// session.
    async fn accept(
        gateway: &Arc<Gateway>,
        endpoint: &Endpoint<endpoint_side::Server>,
        shutdown: &CancellationToken,
    ) {
        let tasks = &gateway.tasks;
        loop {
            tokio::select! {
                incoming = endpoint.accept() => {
                    // Decided before the handshake: a flood costs one packet each.
                    let peer = incoming.remote_address();
                    let validated = incoming.remote_address_validated();
                    match gateway.admit_quic(peer, validated) {
                        Admit::Accept(place) => {
                            let gateway = gateway.clone();
                            tasks.spawn(handle_incoming(gateway, incoming, place));
                        }
                        Admit::Retry => incoming.retry(),
                        Admit::Refuse => incoming.refuse(),
                    }
                }
                _ = shutdown.cancelled() => break,
            }
        }
    }
}

/// A data directory error, with the fix when another process holds it.
fn data_dir_error(dir: &std::path::Path, e: impl std::fmt::Display) -> ServerError {
    let message = e.to_string();
    let hint = if message.contains("already open") || message.contains("lock") {
        format!(
            "; another wtgate probably uses {} already: stop it, or give this one its own --data-dir",
            dir.display()
        )
    } else {
        String::new()
    };
    ServerError::DataDir(format!("{message}{hint}"))
}

/// Times [`bind_sockets`] tries fresh port pairs when the port is 0.
const BIND_ATTEMPTS: usize = 8;

/// Binds the UDP endpoint, then TCP on the port UDP got. With port 0 another
/// process may hold that TCP port: then both are bound again on a new port.
async fn bind_sockets(
    settings: &Settings,
    identity: Identity,
) -> Result<(Udp, TcpListener), ServerError> {
    let attempts = if settings.listen.port() == 0 {
        BIND_ATTEMPTS
    } else {
        1
    };
    let mut attempt = 0;
    loop {
        attempt += 1;
        let bind_err = |error| ServerError::Bind {
            protocol: "UDP, WebTransport",
            addr: settings.listen,
            error,
        };
        let socket = bind_udp(settings.listen).map_err(bind_err)?;
        let port = socket.local_addr().map_err(bind_err)?.port();
        let endpoint = if settings.engine == Engine::Loop {
            let config =
                crate::engine::server_config(&identity).map_err(ServerError::Certificate)?;
            Udp::Loop { socket, config }
        } else {
            Udp::Wtransport(
                Endpoint::server(server_config(socket, identity.clone_identity()))
                    .map_err(bind_err)?,
            )
        };
        // On Linux a TCP socket on `[::]` is dual-stack, like the UDP endpoint.
        let tcp_addr = SocketAddr::new(settings.listen.ip(), port);
        match TcpListener::bind(tcp_addr).await {
            Ok(listener) => return Ok((endpoint, listener)),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && attempt < attempts => {
                debug!(%tcp_addr, "TCP port taken; binding a new pair");
            }
            Err(error) => {
                return Err(ServerError::Bind {
                    protocol: "TCP, server API",
                    addr: tcp_addr,
                    error,
                })
            }
        }
    }
}

/// Receive buffer asked for (the kernel caps it at `net.core.rmem_max`): with
/// Linux's ~208 KiB default, bursts of handshakes overflowed it and every dropped
/// handshake packet cost its client a 1 s retransmission. 4 MiB made connect storms
/// clean but let a saturated fan-out queue seconds of ACKs (bench/RESULTS.md), so a
/// middle size.
const UDP_RECV_BUFFER: usize = 1024 * 1024;

/// The UDP socket: dual-stack on `[::]` (Chromium resolves `localhost` to ::1 and
/// IPv4 clients still work), with large buffers.
fn bind_udp(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if let SocketAddr::V6(v6) = addr {
        socket.set_only_v6(!v6.ip().is_unspecified())?;
    }
    // Best effort: a smaller buffer still works.
    let _ = socket.set_recv_buffer_size(UDP_RECV_BUFFER);
    socket.bind(&addr.into())?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

fn server_config(socket: std::net::UdpSocket, identity: Identity) -> ServerConfig {
    ServerConfig::builder()
        .with_bind_socket(socket)
        .with_custom_transport(identity, crate::engine::quic_transport())
        .keep_alive_interval(Some(crate::engine::KEEP_ALIVE))
        .max_idle_timeout(Some(crate::engine::IDLE_TIMEOUT))
        .expect("a valid idle timeout")
        .build()
}

/// Where a graceful shutdown leaves the rooms' history for the next start.
fn snapshot_path(settings: &Settings) -> std::path::PathBuf {
    settings.data_dir.join("rooms.redb")
}

/// Cluster mode: the Redis broker and inbox, shared with the other nodes.
async fn cluster_backends(
    settings: &Settings,
    url: &str,
    hub: Arc<Hub>,
) -> Result<(Arc<dyn Broker>, Arc<dyn Inbox>, String), ServerError> {
    let config = &settings.config;
    let broker = Redis::connect(url, settings.node_id.clone(), hub, config)
        .await
        .map_err(|e| ServerError::Cluster(e.to_string()))?;
    let inbox = RedisInbox::connect(url, config.limits.max_inbox)
        .await
        .map_err(|e| ServerError::Cluster(e.to_string()))?;
    let node = broker.node_id().to_owned();
    Ok((Arc::new(broker), Arc::new(inbox), node))
}

/// Sets the coalescing window from the delivery rate, measured every 100 ms, and
/// hands freed memory back when that rate says the server is calm.
async fn follow_load(gateway: Arc<Gateway>, shutdown: CancellationToken) {
    let period = Duration::from_millis(100);
    let mut tick = tokio::time::interval(period);
    let mut last = gateway.metrics.deliveries.get();
    let mut memory = MemoryRelease::new(Instant::now());
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let now = gateway.metrics.deliveries.get();
                let rate = now.saturating_sub(last) as f64 / period.as_secs_f64();
                gateway.flush_window.set_load(rate);
                last = now;
                if memory.due(Instant::now(), rate) {
                    // Off the runtime's threads: the trim takes milliseconds.
                    tokio::task::spawn_blocking(memory_release::release);
                }
            }
            _ = shutdown.cancelled() => return,
        }
    }
}

/// Sends churning rooms' presence batches as their windows end.
async fn flush_presence(hub: Arc<Hub>, window: Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(window / 4);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                hub.flush_presence(tokio::time::Instant::now().into_std());
            }
            _ = shutdown.cancelled() => return,
        }
    }
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

/// Checks the path and origin before accepting, then runs the session. One
/// deadline, `hello_timeout` from the connection's first packet, covers the
/// WebTransport request, the answer to it and the session's `Hello`.
async fn handle_incoming(
    gateway: Arc<Gateway>,
    incoming: IncomingSession,
    place: admission::AwaitingGuard,
) {
    let started = tokio::time::Instant::now();
    let deadline = started + gateway.config.limits.hello_timeout;
    let request = match tokio::time::timeout_at(deadline, incoming).await {
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
    let peer = request.remote_address();
    let (path, ns_config) = match gateway.route(request.path(), request.origin(), peer) {
        Ok(route) => route,
        Err(status) => {
            let refused = async {
                match status {
                    404 => request.not_found().await,
                    _ => request.forbidden().await,
                }
            };
            let _ = tokio::time::timeout_at(deadline, refused).await;
            return;
        }
    };
    let id = gateway.new_session_id();
    let span = info_span!("session", id, ns = %path, %peer);
    async move {
        let conn = match tokio::time::timeout_at(deadline, request.accept()).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => {
                debug!("accept failed: {e}");
                return;
            }
            Err(_) => {
                debug!("accept timed out");
                return;
            }
        };
        let session = session::Session::new(id, path, ns_config, conn, gateway);
        if let Err(e) = session.run(started.into_std(), place).await {
            debug!("session ended: {e}");
        }
    }
    .instrument(span)
    .await
}
