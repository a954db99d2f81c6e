//! The development demo (`wtgate serve --dev`): the browser client library and a
//! chat page served over plain HTTP on loopback, with the certificate hash and
//! development tokens, so a person can try wtgate in a browser at once.
//!
//! Pages served from `http://127.0.0.1` or `http://localhost` are secure contexts,
//! so they may open WebTransport sessions. The files are embedded in the binary,
//! which therefore works from any directory.
//!
//! | Route | Answer |
//! |---|---|
//! | `GET /` | the demo page (`web-client/index.html`) |
//! | `GET /wtgate.js`, `/session.js`, `/websocket.js`, `/protocol.js`, `/demo.js`, `/demo.css` | the library and the page's script and style |
//! | `GET /cert-hash` | `{"hash", "url", "port"}`: the certificate's SHA-256 and the WebTransport base URL |
//! | `GET /dev-token?user=NAME` | `{"token", "user", "expires"}`: a one-hour token signed with the server's secret |
//!
//! Only loopback host names are answered (a guard against DNS rebinding, since
//! `/dev-token` hands out tokens to whoever asks).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, MethodRouter};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::auth::{mint, Claims};

/// Lifetime of a development token, seconds.
pub const DEV_TOKEN_TTL: u64 = 3600;

/// Longest user name `/dev-token` accepts, in characters.
pub const MAX_DEV_USER: usize = 32;

/// What the demo server needs to know about the WebTransport server.
#[derive(Clone)]
pub struct DemoState {
    inner: Arc<Inner>,
}

struct Inner {
    cert_hash: String,
    webtransport: SocketAddr,
    secret: String,
}

impl DemoState {
    /// `cert_hash`: SHA-256 of the certificate (hex); `webtransport`: the bound UDP
    /// address of the WebTransport server; `secret`: the token secret.
    pub fn new(
        cert_hash: impl Into<String>,
        webtransport: SocketAddr,
        secret: impl Into<String>,
    ) -> Self {
        DemoState {
            inner: Arc::new(Inner {
                cert_hash: cert_hash.into(),
                webtransport,
                secret: secret.into(),
            }),
        }
    }

    /// The base URL a browser on this machine uses for WebTransport sessions.
    ///
    /// A loopback listener is named by its address, which every browser reaches;
    /// a dual-stack `[::]` one by `localhost`.
    pub fn webtransport_base(&self) -> String {
        let addr = self.inner.webtransport;
        let host = match addr {
            // An IPv6-only loopback listener (`--dev`) gets its literal address:
            // `localhost` is not the same address in every browser (Chromium goes
            // to `::1`; Firefox uses the system resolver, and where `/etc/hosts`
            // maps `localhost` to 127.0.0.1 only, it tries that and finds nothing).
            SocketAddr::V6(v6) if v6.ip().is_loopback() => "[::1]".to_owned(),
            // Dual-stack `[::]` answers on both loopbacks, whatever `localhost` is.
            SocketAddr::V6(v6) if v6.ip().is_unspecified() => "localhost".to_owned(),
            SocketAddr::V6(v6) => format!("[{}]", v6.ip()),
            SocketAddr::V4(v4) if v4.ip().is_unspecified() => "127.0.0.1".to_owned(),
            SocketAddr::V4(v4) => v4.ip().to_string(),
        };
        format!("https://{host}:{}", addr.port())
    }
}

impl std::fmt::Debug for DemoState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DemoState")
            .field("cert_hash", &self.inner.cert_hash)
            .field("webtransport", &self.inner.webtransport)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Serves the demo on `listener` until `shutdown` is cancelled; requests no demo
/// route takes go to `sessions` (the server's WebSocket upgrades: browsers do not
/// take a certificate hash for a WebSocket, so in development the page reaches
/// the server this way, over loopback HTTP).
pub async fn serve(
    listener: TcpListener,
    state: DemoState,
    sessions: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = app(state).fallback_service(sessions);
    use axum::serve::ListenerExt;
    // WebSocket frames go out at once (no Nagle wait for a delayed ACK).
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown.cancelled_owned())
    .await
}

/// The embedded files: path, content type, contents.
const ASSETS: &[(&str, &str, &str)] = &[
    ("/", HTML, include_str!("../web-client/index.html")),
    (
        "/index.html",
        HTML,
        include_str!("../web-client/index.html"),
    ),
    ("/demo.css", CSS, include_str!("../web-client/demo.css")),
    ("/demo.js", JS, include_str!("../web-client/demo.js")),
    ("/wtgate.js", JS, include_str!("../web-client/wtgate.js")),
    ("/session.js", JS, include_str!("../web-client/session.js")),
    (
        "/websocket.js",
        JS,
        include_str!("../web-client/websocket.js"),
    ),
    (
        "/protocol.js",
        JS,
        include_str!("../web-client/protocol.js"),
    ),
];

const HTML: &str = "text/html; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";

/// The demo's routes.
pub fn app(state: DemoState) -> Router {
    let files = ASSETS
        .iter()
        .fold(Router::new(), |router, &(path, content_type, body)| {
            router.route(path, asset(content_type, body))
        });
    files
        .route("/cert-hash", get(cert_hash))
        .route("/dev-token", get(dev_token))
        // Browsers ask for it; no icon, and no 404 in the console either.
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .layer(middleware::from_fn(loopback_hosts_only))
        .with_state(state)
}

/// A route answering GET with a static file.
fn asset(content_type: &'static str, body: &'static str) -> MethodRouter<DemoState> {
    get(move || async move {
        (
            [
                (header::CONTENT_TYPE, content_type),
                // The files change with the binary; never let a browser keep an old one.
                (header::CACHE_CONTROL, "no-cache"),
            ],
            body,
        )
    })
}

/// The body of `GET /cert-hash`.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct CertHash {
    /// SHA-256 of the DER certificate, 64 hex digits.
    pub hash: String,
    /// WebTransport base URL, e.g. `https://localhost:4433`; append `/chat`.
    pub url: String,
    /// The WebTransport (UDP) port.
    pub port: u16,
}

async fn cert_hash(State(state): State<DemoState>) -> Response {
    let body = CertHash {
        hash: state.inner.cert_hash.clone(),
        url: state.webtransport_base(),
        port: state.inner.webtransport.port(),
    };
    no_store(Json(body).into_response())
}

#[derive(Debug, Deserialize)]
struct TokenQuery {
    user: Option<String>,
}

/// The body of `GET /dev-token`.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DevToken {
    /// The token, for `Hello`.
    pub token: String,
    /// The user id it carries.
    pub user: String,
    /// Expiry, unix seconds.
    pub expires: u64,
}

async fn dev_token(State(state): State<DemoState>, Query(query): Query<TokenQuery>) -> Response {
    let user = query.user.unwrap_or_default();
    if let Err(why) = check_user_name(&user) {
        return error(StatusCode::BAD_REQUEST, why);
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let claims = Claims::new(&user, now, DEV_TOKEN_TTL);
    match mint(state.inner.secret.as_bytes(), &claims) {
        Ok(token) => no_store(
            Json(DevToken {
                token,
                user,
                expires: claims.exp,
            })
            .into_response(),
        ),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// A demo user name: 1 to [`MAX_DEV_USER`] letters, digits, `-`, `_` or `.`,
/// and not the reserved `server`.
pub fn check_user_name(user: &str) -> Result<(), String> {
    if user.is_empty() {
        return Err("give a user name: /dev-token?user=NAME".into());
    }
    if user.chars().count() > MAX_DEV_USER {
        return Err(format!("a user name is at most {MAX_DEV_USER} characters"));
    }
    if !user
        .chars()
        .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err("a user name has only letters, digits, '-', '_' and '.'".into());
    }
    if user == crate::auth::SERVER_USER {
        return Err(format!("{:?} is reserved", crate::auth::SERVER_USER));
    }
    Ok(())
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let body = serde_json::json!({ "error": message.into() });
    no_store((status, Json(body)).into_response())
}

fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Answers only requests addressed to a loopback name, so a web page elsewhere
/// cannot reach `/dev-token` through DNS rebinding.
async fn loopback_hosts_only(request: Request, next: Next) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    if is_loopback_host(host) {
        next.run(request).await
    } else {
        error(
            StatusCode::FORBIDDEN,
            "the demo answers only http://127.0.0.1, http://localhost and http://[::1]",
        )
    }
}

/// Whether a `Host` header (with or without a port) names this machine.
fn is_loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else {
        host.split(':').next().unwrap_or_default()
    };
    name.eq_ignore_ascii_case("localhost") || name == "127.0.0.1" || name == "::1"
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::{to_bytes, Body};
    use axum::http::Request;
    use tower::ServiceExt;

    use crate::auth::TokenVerifier;

    const SECRET: &str = "demo-test-secret-0123456789";

    fn state(addr: &str) -> DemoState {
        DemoState::new("ab".repeat(32), addr.parse().unwrap(), SECRET)
    }

    async fn get(app: Router, uri: &str, host: &str) -> (StatusCode, String, String) {
        let request = Request::get(uri)
            .header(header::HOST, host)
            .body(Body::empty())
            .unwrap();
        let response = app.oneshot(request).await.unwrap();
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body = to_bytes(response.into_body(), 1 << 20).await.unwrap();
        (
            status,
            content_type,
            String::from_utf8(body.to_vec()).unwrap(),
        )
    }

    #[tokio::test]
    async fn serves_the_page_and_the_library() {
        let app = app(state("[::1]:4433"));
        let (status, ct, body) = get(app.clone(), "/", "127.0.0.1:8080").await;
        assert_eq!(status, StatusCode::OK);
        assert!(ct.starts_with("text/html"), "{ct}");
        assert!(
            body.contains("<script type=\"module\" src=\"demo.js\">"),
            "{body}"
        );
        for (path, needle) in [
            ("/wtgate.js", "export async function connect"),
            ("/session.js", "export async function openSession"),
            (
                "/websocket.js",
                "export async function openWebSocketSession",
            ),
            ("/protocol.js", "export function encodeClientFrame"),
            ("/demo.js", "from './wtgate.js'"),
        ] {
            let (status, ct, body) = get(app.clone(), path, "localhost:8080").await;
            assert_eq!(status, StatusCode::OK, "{path}");
            assert_eq!(ct, JS, "{path}");
            assert!(body.contains(needle), "{path} lacks {needle:?}");
        }
        let (status, ct, _) = get(app.clone(), "/demo.css", "[::1]:8080").await;
        assert_eq!((status, ct.as_str()), (StatusCode::OK, CSS));
        let (status, _, _) = get(app, "/nope", "localhost").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn cert_hash_names_the_webtransport_server() {
        let (status, _, body) = get(app(state("[::1]:4433")), "/cert-hash", "localhost").await;
        assert_eq!(status, StatusCode::OK);
        let got: CertHash = serde_json::from_str(&body).unwrap();
        assert_eq!(
            got,
            CertHash {
                hash: "ab".repeat(32),
                url: "https://[::1]:4433".into(),
                port: 4433
            }
        );
        let (_, _, body) = get(app(state("[::]:4433")), "/cert-hash", "localhost").await;
        let got: CertHash = serde_json::from_str(&body).unwrap();
        assert_eq!(got.url, "https://localhost:4433");
        let (_, _, body) = get(app(state("127.0.0.1:5000")), "/cert-hash", "localhost").await;
        let got: CertHash = serde_json::from_str(&body).unwrap();
        assert_eq!(got.url, "https://127.0.0.1:5000");
    }

    #[tokio::test]
    async fn dev_token_mints_a_valid_token() {
        let (status, _, body) = get(
            app(state("[::1]:4433")),
            "/dev-token?user=zo%C3%AB",
            "127.0.0.1",
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let got: DevToken = serde_json::from_str(&body).unwrap();
        assert_eq!(got.user, "zoë");
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let claims = TokenVerifier::new(SECRET.as_bytes())
            .verify(&got.token, now)
            .unwrap();
        assert_eq!(claims.sub, "zoë");
        assert_eq!(claims.exp, got.expires);
        assert!(got.expires > now + DEV_TOKEN_TTL - 60 && got.expires <= now + DEV_TOKEN_TTL);
        assert!(TokenVerifier::new(b"another secret")
            .verify(&got.token, now)
            .is_err());
    }

    #[tokio::test]
    async fn dev_token_refuses_bad_names() {
        let long = format!("/dev-token?user={}", "a".repeat(MAX_DEV_USER + 1));
        for uri in [
            "/dev-token",
            "/dev-token?user=",
            "/dev-token?user=a%20b",
            "/dev-token?user=%3Cscript%3E",
            "/dev-token?user=server",
            long.as_str(),
        ] {
            let (status, ct, body) = get(app(state("[::1]:4433")), uri, "localhost").await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
            assert_eq!(ct, "application/json", "{uri}");
            assert!(body.contains("\"error\""), "{uri}: {body}");
        }
        let ok = format!("/dev-token?user={}", "a".repeat(MAX_DEV_USER));
        let (status, _, _) = get(app(state("[::1]:4433")), &ok, "localhost").await;
        assert_eq!(status, StatusCode::OK);
    }

    #[tokio::test]
    async fn answers_loopback_host_names_only() {
        for host in [
            "evil.example",
            "evil.example:8080",
            "127.0.0.2",
            "localhost.evil.example",
            "",
        ] {
            let (status, _, _) = get(app(state("[::1]:4433")), "/dev-token?user=alice", host).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{host:?}");
        }
        for host in [
            "localhost",
            "LOCALHOST:8080",
            "127.0.0.1:1",
            "[::1]:8080",
            "[::1]",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
    }

    #[test]
    fn user_names() {
        for ok in ["alice", "Bob_2", "zoë", "a.b-c"] {
            assert!(check_user_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a b", "a\nb", "server", "<b>", "a/b"] {
            assert!(check_user_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn debug_redacts_the_secret() {
        let shown = format!("{:?}", state("[::1]:4433"));
        assert!(!shown.contains(SECRET), "{shown}");
    }
}
