//! The HTTPS side of the server, over TCP on the WebTransport port number and with
//! the same certificate: the server API for backends, `/healthz` and `/metrics`.
//!
//! | route | body or query | reply |
//! |---|---|---|
//! | `POST /api/notify` | `{user, kind, body \| body_base64}` | `{id}` |
//! | `POST /api/publish` | `{namespace, room, body \| body_base64}` | `{seq}` |
//! | `POST /api/broadcast` | `{namespace, body \| body_base64}` | `{}` |
//! | `GET /api/presence` | `?namespace=/chat&room=R` (room optional) | `{users}` |
//! | `POST /api/disconnect` | `{user, revoke?}` | `{closed}` |
//! | `GET /healthz` | | `{status, sessions}`; 503 with `broker` or `inbox` saying what fails |
//! | `GET /metrics` | | Prometheus text |
//!
//! `/api/*` needs `Authorization: Bearer <key>`. Without a configured key the API
//! answers 403, except in dev mode, where it is open (dev binds loopback only).
//! Errors are always `{"error": "<message>", "code": "<snake_case>"}`; the
//! statuses are chosen in one place, [`ApiError`]'s `From<GatewayError>`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequest, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;

use crate::broker::BrokerHealth;
use bytes::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use tracing::{debug, warn};
use wtransport::Identity;

use super::api_slots::{Slot, Slots};
use super::socket_probe::SocketProbe;
use super::{Gateway, GatewayError};
use crate::config::{Limits, Settings};

/// Connections served at once; past it, the longest-idle one is closed to make room.
const MAX_CONNECTIONS: usize = 1024;

/// How long a refused request's body is read, so that HTTP/2 clients get the 401
/// rather than a stream reset.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// Time a client has to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Time an HTTP/1 client has to send a request's headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Content type of the Prometheus text format.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Content type of OpenMetrics, which the exporter writes; sent to scrapers that
/// ask for it (Prometheus does).
const OPENMETRICS_TEXT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The message of the 403 every API route answers without a configured key.
pub const API_DISABLED: &str = "the server API is disabled: set WTGATE_API_KEY";

/// The router: `/api/*`, `/healthz`, `/metrics`. Tests call it without a socket.
pub fn app(gateway: Arc<Gateway>) -> Router {
    let access = Arc::new(Access::from_settings(gateway.settings()));
    let limit = body_limit(gateway.config.limits.max_frame);
    let api = Router::new()
        .route("/api/notify", post(notify))
        .route("/api/publish", post(publish))
        .route("/api/broadcast", post(broadcast))
        .route("/api/presence", get(presence))
        .route("/api/disconnect", post(disconnect))
        .route_layer(middleware::from_fn_with_state((access, limit), authorize));
    Router::new()
        .merge(api)
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        // Namespace paths answer WebSocket upgrades (the fallback transport); any
        // other path is a 404.
        .fallback(super::websocket::upgrade)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .with_state(gateway)
}

/// Largest request body: a frame's worth of payload as base64 (4/3 larger) plus the
/// other fields.
fn body_limit(max_frame: usize) -> usize {
    max_frame + max_frame / 2 + 4096
}

/// The TLS configuration of the API: the WebTransport identity, TLS 1.3 and 1.2,
/// ALPN h2 and http/1.1, the ring provider.
pub(super) fn tls_config(identity: &Identity) -> Result<Arc<rustls::ServerConfig>, String> {
    let mut config = crate::certs::tls_server_config(
        identity,
        &[&rustls::version::TLS13, &rustls::version::TLS12],
    )?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves `app` over TLS on `listener` until `shutdown` is cancelled, then lets
/// requests in flight finish, for at most `grace`.
pub(super) async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: Router,
    shutdown: CancellationToken,
    limits: Limits,
) {
    let grace = limits.shutdown_grace;
    let request_timeout = limits.api_request_timeout;
    let acceptor = TlsAcceptor::from(tls);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let graceful = GracefulShutdown::new();
    let slots = Slots::new(
        MAX_CONNECTIONS,
        limits.api_connections_per_ip,
        limits.api_idle_timeout,
    );
    let mut sweep = tokio::time::interval(Duration::from_secs(1));
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off, don't spin.
                    warn!("server API: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = sweep.tick() => {
                let closed = slots.close_idle(Instant::now());
                if closed > 0 {
                    debug!(closed, "server API: closed idle connections");
                }
                continue;
            }
            _ = shutdown.cancelled() => break,
        };
        let slot = match slots.admit(peer.ip(), Instant::now()) {
            Ok(slot) => Arc::new(slot),
            Err(e) => {
                debug!(%peer, "server API: connection refused: {e}");
                continue;
            }
        };
        // Small replies and WebSocket frames go out at once: with Nagle, a frame
        // written while the previous one is unacknowledged waited for the peer's
        // delayed ACK (p99 35 ms at 50k deliveries/s over WebSockets).
        let _ = tcp.set_nodelay(true);
        let probe = SocketProbe::of(&tcp);
        let service = connection_service(app.clone(), slot.clone(), request_timeout, peer, probe);
        let conn = serve_connection(
            tcp,
            peer,
            acceptor.clone(),
            builder.clone(),
            service,
            graceful.watcher(),
        );
        tokio::spawn(async move {
            tokio::select! {
                _ = conn => {}
                _ = slot.close.cancelled() => debug!(%peer, "server API: closed an idle connection"),
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        warn!("server API connections still open after {grace:?}");
    }
}

/// The router as one connection's service: each request has `timeout` in all (a
/// client that trickles its body is answered 408), keeps the connection's slot
/// busy while it runs, and carries the peer's address and the socket's probe (for
/// a WebSocket upgrade).
fn connection_service(
    app: Router,
    slot: Arc<Slot>,
    timeout: Duration,
    peer: SocketAddr,
    probe: SocketProbe,
) -> TowerToHyperService<
    impl tower::Service<
            Request<hyper::body::Incoming>,
            Response = Response,
            Error = std::convert::Infallible,
            Future = impl Send,
        > + Clone,
> {
    TowerToHyperService::new(tower::service_fn(
        move |mut request: Request<hyper::body::Incoming>| {
            let (app, slot) = (app.clone(), slot.clone());
            request.extensions_mut().insert(ConnectInfo(peer));
            request.extensions_mut().insert(probe);
            async move {
                slot.request_started();
                let response = match tokio::time::timeout(
                    timeout,
                    app.oneshot(request.map(Body::new)),
                )
                .await
                {
                    Ok(Ok(response)) => response,
                    Ok(Err(never)) => match never {},
                    Err(_) => ApiError::new(
                        StatusCode::REQUEST_TIMEOUT,
                        "timeout",
                        format!("the request was not complete within {timeout:?}"),
                    )
                    .into_response(),
                };
                slot.request_ended(Instant::now());
                Ok(response)
            }
        },
    ))
}

/// One connection: the TLS handshake, then HTTP/1.1 or HTTP/2 until it ends or the
/// server shuts down.
async fn serve_connection<S>(
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    builder: auto::Builder<TokioExecutor>,
    service: S,
    watcher: hyper_util::server::graceful::Watcher,
) where
    S: hyper::service::Service<Request<hyper::body::Incoming>, Response = Response>
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            debug!(%peer, "server API: TLS handshake failed: {e}");
            return;
        }
        Err(_) => {
            debug!(%peer, "server API: TLS handshake timed out");
            return;
        }
    };
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
    if let Err(e) = watcher.watch(conn.into_owned()).await {
        debug!(%peer, "server API connection ended: {e}");
    }
}

/// An API failure: HTTP status, a stable snake_case code, a human message.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message)
    }
}

impl From<GatewayError> for ApiError {
    fn from(e: GatewayError) -> Self {
        let (status, code) = match &e {
            GatewayError::UnknownNamespace(_) => (StatusCode::NOT_FOUND, "unknown_namespace"),
            GatewayError::NoInbox => (StatusCode::NOT_FOUND, "no_inbox"),
            GatewayError::InvalidRoom(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_room"),
            GatewayError::InvalidUser(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_user"),
            GatewayError::InvalidKind => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_kind"),
            GatewayError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            GatewayError::Broker(_) | GatewayError::Inbox(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
            }
        };
        ApiError::new(status, code, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            warn!(code = self.code, "server API: {}", self.message);
        }
        let body = Json(json!({ "error": self.message, "code": self.code }));
        let mut response = (self.status, body).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// A JSON request body, read whatever its content type (`curl -d` says
/// form-urlencoded), with rejections as [`ApiError`]s.
struct ApiJson<T>(T);

impl<T: DeserializeOwned> FromRequest<Arc<Gateway>> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &Arc<Gateway>) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                let limit = body_limit(state.config.limits.max_frame);
                ApiError::too_large(format!("request body over the limit of {limit} bytes"))
            } else {
                ApiError::bad_request(e.body_text())
            }
        })?;
        serde_json::from_slice(&bytes)
            .map(ApiJson)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
    }
}

/// Who may call `/api/*`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Access {
    /// Callers present this key; kept as its SHA-256 so comparing takes the same
    /// time whatever the presented key's length.
    Key([u8; 32]),
    /// Dev mode without a key: open (dev binds loopback only).
    Open,
    /// No key outside dev mode.
    Disabled,
}

impl Access {
    fn from_settings(settings: &Settings) -> Access {
        match (&settings.api_key, settings.dev) {
            (Some(key), _) => Access::Key(Sha256::digest(key.as_bytes()).into()),
            (None, true) => Access::Open,
            (None, false) => Access::Disabled,
        }
    }

    fn check(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let expected = match self {
            Access::Key(digest) => digest,
            Access::Open => return Ok(()),
            Access::Disabled => {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "api_disabled",
                    API_DISABLED,
                ))
            }
        };
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, key)| key.trim())
            .ok_or_else(|| {
                ApiError::unauthorized("missing API key: send Authorization: Bearer <key>")
            })?;
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        if bool::from(digest.ct_eq(expected)) {
            Ok(())
        } else {
            Err(ApiError::unauthorized("wrong API key"))
        }
    }
}

async fn authorize(
    State((access, body_limit)): State<(Arc<Access>, usize)>,
    request: Request,
    next: Next,
) -> Response {
    match access.check(request.headers()) {
        Ok(()) => next.run(request).await,
        Err(e) => {
            // Read the body first (bounded): an HTTP/2 client whose body is still
            // unread when the answer comes may see a stream reset instead of it.
            let _ = tokio::time::timeout(
                DRAIN_TIMEOUT,
                axum::body::to_bytes(request.into_body(), body_limit),
            )
            .await;
            e.into_response()
        }
    }
}

/// `/chat` for `chat` or `/chat`.
fn namespace_path(ns: &str) -> String {
    format!("/{}", ns.trim_start_matches('/'))
}

/// The payload of a request: `body` as UTF-8 or `body_base64` decoded; exactly one.
fn payload(body: Option<String>, body_base64: Option<String>) -> Result<Bytes, ApiError> {
    match (body, body_base64) {
        (Some(text), None) => Ok(Bytes::from(text)),
        (None, Some(b64)) => base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map(Bytes::from)
            .map_err(|e| ApiError::bad_request(format!("body_base64 is not valid base64: {e}"))),
        _ => Err(ApiError::bad_request(
            "give exactly one of body (a string) and body_base64",
        )),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NotifyRequest {
    user: String,
    kind: String,
    body: Option<String>,
    body_base64: Option<String>,
}

async fn notify(
    State(gateway): State<Arc<Gateway>>,
    ApiJson(req): ApiJson<NotifyRequest>,
) -> Result<Json<Value>, ApiError> {
    let body = payload(req.body, req.body_base64)?;
    let n = gateway.notify(&req.user, &req.kind, body).await?;
    Ok(Json(json!({ "id": n.id })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishRequest {
    namespace: String,
    room: String,
    body: Option<String>,
    body_base64: Option<String>,
}

async fn publish(
    State(gateway): State<Arc<Gateway>>,
    ApiJson(req): ApiJson<PublishRequest>,
) -> Result<Json<Value>, ApiError> {
    let body = payload(req.body, req.body_base64)?;
    let seq = gateway
        .publish(&namespace_path(&req.namespace), &req.room, body)
        .await?;
    Ok(Json(json!({ "seq": seq })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BroadcastRequest {
    namespace: String,
    body: Option<String>,
    body_base64: Option<String>,
}

async fn broadcast(
    State(gateway): State<Arc<Gateway>>,
    ApiJson(req): ApiJson<BroadcastRequest>,
) -> Result<Json<Value>, ApiError> {
    let body = payload(req.body, req.body_base64)?;
    gateway
        .broadcast(&namespace_path(&req.namespace), body)
        .await?;
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PresenceQuery {
    namespace: String,
    room: Option<String>,
}

async fn presence(
    State(gateway): State<Arc<Gateway>>,
    query: Result<Query<PresenceQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let users = gateway
        .presence(&namespace_path(&q.namespace), q.room.as_deref())
        .await?;
    Ok(Json(json!({ "users": users })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DisconnectRequest {
    user: String,
    /// Also refuse the user's tokens issued until now.
    #[serde(default)]
    revoke: bool,
}

async fn disconnect(
    State(gateway): State<Arc<Gateway>>,
    ApiJson(req): ApiJson<DisconnectRequest>,
) -> Result<Json<Value>, ApiError> {
    let closed = gateway.disconnect(&req.user, req.revoke).await?;
    Ok(Json(json!({ "closed": closed })))
}

/// 200 `{"status": "ok"}` while serving; 503 `{"status": "degraded", "broker": why}`
/// while the cluster backend is unreachable (new sessions are refused meanwhile).
async fn healthz(State(gateway): State<Arc<Gateway>>) -> Response {
    let sessions = gateway.hub.session_count();
    let mut body = json!({ "status": "ok", "sessions": sessions });
    if let BrokerHealth::Unavailable(why) = gateway.broker.health() {
        body["broker"] = json!(why);
    }
    if let Err(why) = gateway.inbox.health() {
        body["inbox"] = json!(why);
    }
    if body.get("broker").is_none() && body.get("inbox").is_none() {
        return Json(body).into_response();
    }
    body["status"] = json!("degraded");
    (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
}

async fn metrics(State(gateway): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    let text = gateway.metrics_text().await;
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("application/openmetrics-text"));
    let content_type = if openmetrics {
        OPENMETRICS_TEXT
    } else {
        PROMETHEUS_TEXT
    };
    ([(header::CONTENT_TYPE, content_type)], text).into_response()
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this route",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(authorization: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(v) = authorization {
            h.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn code(r: Result<(), ApiError>) -> Option<(u16, &'static str)> {
        r.err().map(|e| (e.status.as_u16(), e.code))
    }

    #[test]
    fn bearer_key_is_checked() {
        let access = Access::Key(Sha256::digest(b"k3y").into());
        assert_eq!(code(access.check(&headers(Some("Bearer k3y")))), None);
        assert_eq!(code(access.check(&headers(Some("bearer  k3y ")))), None);
        for wrong in [
            None,
            Some("Bearer k3"),
            Some("Bearer k3yy"),
            Some("Basic k3y"),
            Some("k3y"),
        ] {
            assert_eq!(
                code(access.check(&headers(wrong))),
                Some((401, "unauthorized")),
                "{wrong:?}"
            );
        }
    }

    #[test]
    fn access_follows_the_settings() {
        assert_eq!(code(Access::Open.check(&headers(None))), None);
        assert_eq!(
            code(Access::Disabled.check(&headers(Some("Bearer x")))),
            Some((403, "api_disabled"))
        );
    }

    #[test]
    fn exactly_one_body_field() {
        assert_eq!(payload(Some("hé".into()), None).unwrap(), "hé".as_bytes());
        assert_eq!(
            payload(None, Some("AAH/".into())).unwrap(),
            &[0, 1, 255][..]
        );
        assert_eq!(payload(None, None).unwrap_err().code, "bad_request");
        assert_eq!(
            payload(Some("a".into()), Some("YQ==".into()))
                .unwrap_err()
                .code,
            "bad_request"
        );
        assert_eq!(
            payload(None, Some("*".into())).unwrap_err().code,
            "bad_request"
        );
    }

    #[test]
    fn namespaces_take_an_optional_slash() {
        assert_eq!(namespace_path("chat"), "/chat");
        assert_eq!(namespace_path("/chat"), "/chat");
        assert_eq!(namespace_path(""), "/");
    }

    #[test]
    fn gateway_errors_map_to_statuses() {
        let cases = [
            (
                GatewayError::UnknownNamespace("/x".into()),
                404,
                "unknown_namespace",
            ),
            (
                GatewayError::InvalidRoom("empty".into()),
                422,
                "invalid_room",
            ),
            (GatewayError::InvalidUser("x".into()), 422, "invalid_user"),
            (GatewayError::InvalidKind, 422, "invalid_kind"),
            (GatewayError::TooLarge { len: 2, max: 1 }, 413, "too_large"),
            (GatewayError::NoInbox, 404, "no_inbox"),
            (
                GatewayError::Broker(crate::broker::BrokerError::Unavailable("down".into())),
                503,
                "unavailable",
            ),
        ];
        for (e, status, code) in cases {
            let api = ApiError::from(e);
            assert_eq!((api.status.as_u16(), api.code), (status, code));
        }
    }
}
