//! Phase 1 of a run: client sockets, the server's address, and every session
//! connected and joined (paced by `--connect-rate`, [`CONNECT_CONCURRENCY`] in
//! flight at most), over the transport of `--transport` ([`Dialer`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use wtransport::endpoint::endpoint_side;
use wtransport::{Endpoint, VarInt};

use super::report::{count_error, micros_histogram};
use super::session::{self, SetupError};
use super::websocket;
use super::{client_socket, LoadArgs, LoadError, Setup, Transport, CLIENTS_PER_ENDPOINT};
use crate::auth::{self, Claims};
use crate::client::{candidate_urls, client_endpoint_on, connect_first, Trust, WsConnector};

/// Sessions opened at once at most while connecting.
pub const CONNECT_CONCURRENCY: usize = 256;

/// How long finding the address of a `localhost` URL may take.
const REACH_TIMEOUT: Duration = Duration::from_secs(10);

/// How clients reach the server: the client side of one transport.
pub(super) enum Dialer {
    /// QUIC endpoints: one UDP socket per [`CLIENTS_PER_ENDPOINT`] sessions.
    WebTransport(Vec<Arc<Endpoint<endpoint_side::Client>>>),
    /// TLS and WebSocket settings; a TCP connection per session.
    WebSocket(Arc<WsConnector>),
}

/// What one client dials with (moved into its task).
#[derive(Clone)]
pub(super) enum Dial {
    WebTransport(Arc<Endpoint<endpoint_side::Client>>),
    WebSocket(Arc<WsConnector>),
}

/// A session that said `Hello` and joined its rooms, over either transport.
pub(super) enum Joined {
    WebTransport(session::Joined),
    /// Boxed: a TLS connection's state is large.
    WebSocket(Box<websocket::Joined>),
}

impl Dialer {
    /// For `clients` sessions over `transport`, trusting the server as `trust` says.
    pub(super) fn new(
        transport: Transport,
        trust: &Trust,
        clients: u32,
    ) -> Result<Dialer, LoadError> {
        Ok(match transport {
            Transport::WebTransport => Dialer::WebTransport(endpoints(trust, clients)?),
            Transport::WebSocket => Dialer::WebSocket(Arc::new(websocket::connector(trust))),
        })
    }

    /// What client `i` dials with.
    pub(super) fn dial(&self, i: u32) -> Dial {
        match self {
            Dialer::WebTransport(endpoints) => {
                let at = (i / CLIENTS_PER_ENDPOINT) as usize % endpoints.len();
                Dial::WebTransport(endpoints[at].clone())
            }
            Dialer::WebSocket(connector) => Dial::WebSocket(connector.clone()),
        }
    }

    /// The URLs the clients use: see [`reach`] and [`websocket::reach`].
    pub(super) async fn reach(&self, urls: &[String]) -> Vec<String> {
        match self {
            Dialer::WebTransport(endpoints) => reach(&endpoints[0], urls).await,
            Dialer::WebSocket(connector) => websocket::reach(connector, urls).await,
        }
    }

    /// Waits (1 s at most) until the closed sessions' last packets left.
    pub(super) async fn wait_idle(&self) {
        if let Dialer::WebTransport(endpoints) = self {
            for e in endpoints {
                let _ = tokio::time::timeout(Duration::from_secs(1), e.wait_idle()).await;
            }
        }
    }
}

impl Dial {
    /// Opens a session on `url`, says `Hello` with `token` and joins `rooms`.
    pub(super) async fn open(
        &self,
        url: &str,
        token: &str,
        rooms: &[String],
    ) -> Result<Joined, SetupError> {
        match self {
            Dial::WebTransport(endpoint) => session::open(endpoint, url, token, rooms)
                .await
                .map(Joined::WebTransport),
            Dial::WebSocket(connector) => websocket::open(connector, url, token, rooms)
                .await
                .map(|j| Joined::WebSocket(Box::new(j))),
        }
    }
}

impl Joined {
    /// From the first packet until `Welcome`.
    pub(super) fn connect_time(&self) -> Duration {
        match self {
            Joined::WebTransport(j) => j.connect_time,
            Joined::WebSocket(j) => j.connect_time,
        }
    }

    /// A churn session's stay: `life`, or until `stop`; then it closes.
    pub(super) async fn linger(self, life: Duration, stop: &CancellationToken) {
        match self {
            Joined::WebTransport(j) => {
                tokio::select! {
                    _ = tokio::time::sleep(life) => {}
                    _ = stop.cancelled() => {}
                }
                j.conn.close(VarInt::from_u32(0), b"churn");
            }
            Joined::WebSocket(j) => j.linger(life, stop).await,
        }
    }
}

/// The client endpoints: one UDP socket per [`CLIENTS_PER_ENDPOINT`] sessions.
fn endpoints(
    trust: &Trust,
    clients: u32,
) -> Result<Vec<Arc<Endpoint<endpoint_side::Client>>>, LoadError> {
    (0..clients.div_ceil(CLIENTS_PER_ENDPOINT))
        .map(|_| {
            let socket = client_socket()
                .map_err(|e| LoadError::Args(format!("cannot bind a client UDP socket: {e}")))?;
            Ok(Arc::new(client_endpoint_on(trust, socket)?))
        })
        .collect()
}

/// The URLs the clients use: a `localhost` URL is replaced by the loopback
/// address that answers, found once with one probe session, so that no client
/// races two handshakes and connect times measure the server, not the race.
/// A URL that cannot be reached is kept as given: its clients report why.
async fn reach(endpoint: &Endpoint<endpoint_side::Client>, urls: &[String]) -> Vec<String> {
    let mut reached = Vec::with_capacity(urls.len());
    for url in urls {
        if candidate_urls(url).len() < 2 {
            reached.push(url.clone());
            continue;
        }
        match connect_first(endpoint, url, REACH_TIMEOUT).await {
            Ok((probe, found)) => {
                probe.close(VarInt::from_u32(0), b"probe");
                reached.push(found);
            }
            Err(e) => {
                tracing::warn!("{e}");
                reached.push(url.clone());
            }
        }
    }
    reached
}

/// What the connect phase produced.
pub(super) struct Connected {
    /// Client `i`'s session, when it connected and joined.
    pub(super) clients: Vec<Option<Joined>>,
    /// Connect times, microseconds.
    pub(super) connect_us: Histogram<u64>,
    /// From the first connect until the last one ended.
    pub(super) elapsed: Duration,
}

/// The progress bar of the connect phase.
fn connect_bar(clients: u32, target: ProgressDrawTarget) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(u64::from(clients)), target);
    bar.set_style(
        ProgressStyle::with_template(
            "connecting [{bar:40}] {pos}/{len} sessions ({per_sec}) {msg}",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    bar
}

/// Connects every client and joins its room; failures are counted in `errors`
/// by kind.
pub(super) async fn connect_all(
    args: &LoadArgs,
    setup: &Setup,
    dialer: &Dialer,
    urls: &[String],
    rooms: &[String],
    errors: &mut BTreeMap<String, u64>,
    target: ProgressDrawTarget,
) -> Result<Connected, LoadError> {
    let plan = setup.plan;
    let bar = connect_bar(plan.clients, target);
    let unix_now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let ttl = 3_600 + args.warmup.as_secs() + args.duration.as_secs();
    let concurrency = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
    let start = Instant::now();
    let mut connecting = JoinSet::new();
    for i in 0..plan.clients {
        if args.connect_rate > 0.0 {
            let at = start + Duration::from_secs_f64(f64::from(i) / args.connect_rate);
            tokio::time::sleep_until(at.into()).await;
        }
        let permit = concurrency
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let user = format!("load-{i}");
        let token = auth::mint(setup.secret.as_bytes(), &Claims::new(&user, unix_now, ttl))
            .map_err(|e| LoadError::Args(format!("cannot mint a token: {e}")))?;
        let dial = dialer.dial(i);
        let url = urls[i as usize % urls.len()].clone();
        let names: Vec<String> = plan
            .rooms_of(i)
            .map(|r| rooms[r as usize].clone())
            .collect();
        connecting.spawn(async move {
            let joined = dial.open(&url, &token, &names).await;
            drop(permit);
            (i, joined)
        });
    }
    let mut clients: Vec<Option<Joined>> = (0..plan.clients).map(|_| None).collect();
    let mut connect_us = micros_histogram();
    let mut first_error: Option<String> = None;
    while let Some(done) = connecting.join_next().await {
        let Ok((i, joined)) = done else { continue };
        bar.inc(1);
        match joined {
            Ok(j) => {
                connect_us.saturating_record(j.connect_time().as_micros().max(1) as u64);
                clients[i as usize] = Some(j);
            }
            Err(e) => {
                let full = format!("{}: {}", e.kind, e.detail);
                count_error(errors, &full, 1);
                if first_error.is_none() {
                    bar.set_message(format!("first error: {full}"));
                    first_error = Some(full);
                }
            }
        }
    }
    bar.finish();
    if let Some(e) = &first_error {
        tracing::warn!("some clients could not connect; the first: {e}");
    }
    Ok(Connected {
        clients,
        connect_us,
        elapsed: start.elapsed(),
    })
}
