//! A client of the HTTPS server API (see `server::app`): what `wtgate notify`,
//! `publish` and `broadcast` use, and the tests.
//!
//! Trust works like the WebTransport client's ([`Trust`]): the pinned SHA-256 hash
//! of the server's certificate ([`PinnedCert`], for self-signed development
//! certificates), a CA file, or the system roots.
//!
//! ```no_run
//! # async fn demo(hash: &str) -> Result<(), wtgate::api_client::ApiClientError> {
//! use wtgate::api_client::ApiClient;
//! use wtgate::client::Trust;
//! let api = ApiClient::new("https://127.0.0.1:4433", Some("key"), &Trust::Hash(hash.into()))?;
//! let id = api.notify("alice", "invoice.paid", b"{\"total\": 12}").await?;
//! # Ok(()) }
//! ```

use std::error::Error as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use sha2::Digest;
use thiserror::Error;
use wtransport::tls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use wtransport::tls::rustls::crypto::{self, CryptoProvider, WebPkiSupportedAlgorithms};
use wtransport::tls::rustls::pki_types::pem::PemObject;
use wtransport::tls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use wtransport::tls::rustls::{self, DigitallySignedStruct, SignatureScheme};
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::time::ASN1Time;

use crate::client::{localhost_addrs, Trust};

/// How long connecting (TCP and TLS) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a whole request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Why an API call failed.
#[derive(Debug, Error)]
pub enum ApiClientError {
    /// The server URL is unusable.
    #[error("invalid server URL {url:?}: {reason}")]
    Url {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The trust setting is unusable.
    #[error("bad trust setting: {0}")]
    Trust(String),
    /// The server could not be reached: down, refused, TLS failed, timed out.
    #[error("cannot reach {url}: {reason}")]
    Unreachable {
        /// The server URL.
        url: String,
        /// What went wrong, e.g. `connection refused`.
        reason: String,
    },
    /// The server answered with an error.
    #[error("server refused ({}): {message}", status_line(*.status))]
    Refused {
        /// HTTP status.
        status: u16,
        /// The API's error code, e.g. `unauthorized`.
        code: String,
        /// The server's explanation.
        message: String,
    },
    /// The reply is not what the API sends.
    #[error("unexpected reply from {url}: {reason}")]
    Protocol {
        /// The URL called.
        url: String,
        /// What was wrong.
        reason: String,
    },
}

/// `401 Unauthorized`.
fn status_line(status: u16) -> String {
    match StatusCode::from_u16(status) {
        Ok(s) => s.to_string(),
        Err(_) => status.to_string(),
    }
}

/// What `GET /healthz` answers.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Health {
    /// `ok`.
    pub status: String,
    /// Open sessions on the node.
    pub sessions: u64,
}

/// A client of one server's API.
#[derive(Debug, Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    base: Url,
    /// The server URL as given, without a trailing `/`, for messages.
    shown: String,
    key: Option<String>,
}

impl ApiClient {
    /// A client of the server at `server` (`https://host:port`; a path is ignored),
    /// sending `api_key` as a bearer token when given.
    pub fn new(
        server: &str,
        api_key: Option<&str>,
        trust: &Trust,
    ) -> Result<ApiClient, ApiClientError> {
        let url_err = |reason: &str| ApiClientError::Url {
            url: server.to_owned(),
            reason: reason.to_owned(),
        };
        let base = Url::parse(server).map_err(|e| url_err(&e.to_string()))?;
        if base.scheme() != "https" {
            return Err(url_err("the server API is HTTPS only: use https://"));
        }
        if base.host().is_none() {
            return Err(url_err("no host"));
        }
        let mut builder = reqwest::Client::builder();
        if base.host_str() == Some("localhost") {
            // A dev server listens on [::1] (browsers resolve localhost there), while
            // the system resolver may give only 127.0.0.1: try both loopbacks.
            let port = base.port_or_known_default().unwrap_or(443);
            builder = builder.resolve_to_addrs("localhost", &localhost_addrs(port));
        }
        let http = builder
            .tls_backend_preconfigured(tls_config(trust)?)
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("wtgate/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ApiClientError::Trust(describe(&e)))?;
        Ok(ApiClient {
            http,
            shown: server.trim_end_matches('/').to_owned(),
            base,
            key: api_key.filter(|k| !k.is_empty()).map(str::to_owned),
        })
    }

    /// Stores a notification for `user` and pushes it to the user's sessions;
    /// returns its id. A body that is not UTF-8 travels as base64.
    pub async fn notify(&self, user: &str, kind: &str, body: &[u8]) -> Result<u64, ApiClientError> {
        let mut req = with_body(body);
        req.insert("user".into(), user.into());
        req.insert("kind".into(), kind.into());
        let reply: Value = self
            .call(Method::POST, "/api/notify", &[], Some(req))
            .await?;
        self.field_u64(&reply, "id", "/api/notify")
    }

    /// Publishes to a room as the server; returns the message's seq.
    pub async fn publish(
        &self,
        namespace: &str,
        room: &str,
        body: &[u8],
    ) -> Result<u64, ApiClientError> {
        let mut req = with_body(body);
        req.insert("namespace".into(), namespace.into());
        req.insert("room".into(), room.into());
        let reply: Value = self
            .call(Method::POST, "/api/publish", &[], Some(req))
            .await?;
        self.field_u64(&reply, "seq", "/api/publish")
    }

    /// Sends a broadcast to every session of a namespace.
    pub async fn broadcast(&self, namespace: &str, body: &[u8]) -> Result<(), ApiClientError> {
        let mut req = with_body(body);
        req.insert("namespace".into(), namespace.into());
        let _: Value = self
            .call(Method::POST, "/api/broadcast", &[], Some(req))
            .await?;
        Ok(())
    }

    /// Users in `room`, or online in the namespace without one.
    pub async fn presence(
        &self,
        namespace: &str,
        room: Option<&str>,
    ) -> Result<Vec<String>, ApiClientError> {
        #[derive(Deserialize)]
        struct Reply {
            users: Vec<String>,
        }
        let mut query = vec![("namespace", namespace)];
        if let Some(room) = room {
            query.push(("room", room));
        }
        let reply: Reply = self
            .call(Method::GET, "/api/presence", &query, None)
            .await?;
        Ok(reply.users)
    }

    /// Closes every session of `user`; returns how many the node closed.
    pub async fn disconnect(&self, user: &str) -> Result<u64, ApiClientError> {
        self.disconnect_with(user, false).await
    }

    /// `POST /api/disconnect` with `revoke`: also refuses, durably, every token of
    /// `user` issued until now; returns how many sessions were closed.
    pub async fn revoke(&self, user: &str) -> Result<u64, ApiClientError> {
        self.disconnect_with(user, true).await
    }

    async fn disconnect_with(&self, user: &str, revoke: bool) -> Result<u64, ApiClientError> {
        let mut req = Map::new();
        req.insert("user".into(), user.into());
        if revoke {
            req.insert("revoke".into(), true.into());
        }
        let reply: Value = self
            .call(Method::POST, "/api/disconnect", &[], Some(req))
            .await?;
        self.field_u64(&reply, "closed", "/api/disconnect")
    }

    /// `GET /healthz`.
    pub async fn health(&self) -> Result<Health, ApiClientError> {
        self.call(Method::GET, "/healthz", &[], None).await
    }

    /// `GET /metrics`: Prometheus text.
    pub async fn metrics(&self) -> Result<String, ApiClientError> {
        let response = self.send(Method::GET, "/metrics", &[], None).await?;
        response.text().await.map_err(|e| self.unreachable(&e))
    }

    /// Sends a request and decodes a successful JSON reply.
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<Map<String, Value>>,
    ) -> Result<T, ApiClientError> {
        let response = self.send(method, path, query, body).await?;
        let url = response.url().to_string();
        let bytes = response.bytes().await.map_err(|e| self.unreachable(&e))?;
        serde_json::from_slice(&bytes).map_err(|e| ApiClientError::Protocol {
            url,
            reason: e.to_string(),
        })
    }

    /// Sends a request; a non-success status becomes [`ApiClientError::Refused`].
    async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<Map<String, Value>>,
    ) -> Result<reqwest::Response, ApiClientError> {
        let mut url = self.base.join(path).map_err(|e| ApiClientError::Url {
            url: self.shown.clone(),
            reason: e.to_string(),
        })?;
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        let mut request = self.http.request(method, url);
        if let Some(key) = &self.key {
            request = request.bearer_auth(key);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|e| self.unreachable(&e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let text = response.text().await.unwrap_or_default();
        #[derive(Deserialize)]
        struct ErrorReply {
            error: String,
            #[serde(default)]
            code: String,
        }
        let (code, message) = match serde_json::from_str::<ErrorReply>(&text) {
            Ok(e) => (e.code, e.error),
            Err(_) => (String::new(), text.chars().take(200).collect()),
        };
        Err(ApiClientError::Refused {
            status: status.as_u16(),
            code,
            message,
        })
    }

    fn unreachable(&self, e: &reqwest::Error) -> ApiClientError {
        ApiClientError::Unreachable {
            url: self.shown.clone(),
            reason: describe(e),
        }
    }

    fn field_u64(&self, reply: &Value, field: &str, path: &str) -> Result<u64, ApiClientError> {
        reply
            .get(field)
            .and_then(Value::as_u64)
            .ok_or_else(|| ApiClientError::Protocol {
                url: format!("{}{path}", self.shown),
                reason: format!("no {field:?} number in {reply}"),
            })
    }
}

/// A request object holding `body` as text, or as `body_base64` when not UTF-8.
fn with_body(body: &[u8]) -> Map<String, Value> {
    let mut req = Map::new();
    match std::str::from_utf8(body) {
        Ok(text) => req.insert("body".into(), json!(text)),
        Err(_) => req.insert(
            "body_base64".into(),
            json!(base64::engine::general_purpose::STANDARD.encode(body)),
        ),
    };
    req
}

/// The useful part of a transport error: `connection refused`, `timed out`, or the
/// innermost cause (e.g. the TLS alert).
fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "timed out".into();
    }
    let mut innermost = e.to_string();
    let mut source: Option<&(dyn std::error::Error + 'static)> = e.source();
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            match io.kind() {
                std::io::ErrorKind::ConnectionRefused => return "connection refused".into(),
                std::io::ErrorKind::TimedOut => return "timed out".into(),
                _ => {}
            }
        }
        innermost = s.to_string();
        source = s.source();
    }
    if innermost.contains("invalid peer certificate") {
        innermost.push_str(UNTRUSTED_HINT);
    } else if innermost.contains("is not the pinned") {
        innermost.push_str(CHANGED_HINT);
    }
    innermost
}

/// What to do when the server's certificate is not trusted.
const UNTRUSTED_HINT: &str = " (the server's certificate is not trusted: pass --cert-hash HEX \
     with the sha-256 `wtgate serve` prints, --ca FILE for a private CA, or run this from the \
     directory whose certs/ holds the development certificate of a loopback server)";

/// What to do when a pinned certificate no longer matches.
const CHANGED_HINT: &str = " (the server now has another certificate — renewed at start, \
     or replaced by `wtgate certs --force`: pin the sha-256 it printed last)";

/// The TLS configuration for `trust`: ring, TLS 1.3 and 1.2, ALPN h2 and http/1.1.
pub(crate) fn tls_config(trust: &Trust) -> Result<rustls::ClientConfig, ApiClientError> {
    let provider = Arc::new(crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| ApiClientError::Trust(e.to_string()))?;
    let mut config = match trust {
        Trust::Hash(hex) => {
            let hash =
                crate::certs::parse_hash(hex).map_err(|e| ApiClientError::Trust(e.to_string()))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(PinnedCert::new(hash, &provider)))
                .with_no_client_auth()
        }
        Trust::Ca(path) => builder
            .with_root_certificates(ca_roots(path)?)
            .with_no_client_auth(),
        Trust::System => builder
            .with_root_certificates(wtransport::tls::build_native_cert_store())
            .with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

fn ca_roots(path: &Path) -> Result<rustls::RootCertStore, ApiClientError> {
    let err = |reason: String| ApiClientError::Trust(format!("{}: {reason}", path.display()));
    let pem = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        roots
            .add(cert.map_err(|e| err(e.to_string()))?)
            .map_err(|e| err(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(err("no certificate in the file".into()));
    }
    Ok(roots)
}

/// Accepts exactly the server certificate with the pinned SHA-256 hash while it is
/// valid. The name is not checked: the pin says which certificate, as with the
/// browsers' `serverCertificateHashes`. Handshake signatures are verified as usual.
#[derive(Debug)]
pub struct PinnedCert {
    hash: [u8; 32],
    algorithms: WebPkiSupportedAlgorithms,
}

impl PinnedCert {
    /// Pins `hash` (see [`crate::certs::parse_hash`]); signatures are checked with
    /// `provider`'s algorithms.
    pub fn new(hash: [u8; 32], provider: &CryptoProvider) -> Self {
        PinnedCert {
            hash,
            algorithms: provider.signature_verification_algorithms,
        }
    }
}

impl ServerCertVerifier for PinnedCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let hash: [u8; 32] = sha2::Sha256::digest(end_entity.as_ref()).into();
        if hash != self.hash {
            return Err(rustls::Error::General(format!(
                "certificate sha-256 {} is not the pinned {}",
                hex::encode(hash),
                hex::encode(self.hash)
            )));
        }
        let (_, cert) = X509Certificate::from_der(end_entity.as_ref())
            .map_err(|_| rustls::CertificateError::BadEncoding)?;
        let now = i64::try_from(now.as_secs())
            .ok()
            .and_then(|secs| ASN1Time::from_timestamp(secs).ok())
            .ok_or(rustls::CertificateError::BadEncoding)?;
        if now < cert.validity().not_before {
            return Err(rustls::CertificateError::NotValidYet.into());
        }
        if now > cert.validity().not_after {
            return Err(rustls::CertificateError::Expired.into());
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_travel_as_text_or_base64() {
        assert_eq!(with_body(b"hi")["body"], "hi");
        assert!(!with_body(b"hi").contains_key("body_base64"));
        assert_eq!(with_body(&[0xff, 0])["body_base64"], "/wA=");
    }

    #[test]
    fn urls_must_be_https() {
        let trust = Trust::System;
        for bad in ["http://localhost:4433", "localhost:4433", "not a url"] {
            let err = ApiClient::new(bad, None, &trust).unwrap_err();
            assert!(matches!(err, ApiClientError::Url { .. }), "{bad}: {err}");
        }
        assert!(ApiClient::new("https://localhost:4433/", None, &trust).is_ok());
    }

    #[test]
    fn bad_trust_is_reported() {
        let err = ApiClient::new("https://localhost", None, &Trust::Hash("zz".into())).unwrap_err();
        assert!(matches!(err, ApiClientError::Trust(_)), "{err}");
        let err = ApiClient::new(
            "https://localhost",
            None,
            &Trust::Ca("/nonexistent/ca.pem".into()),
        )
        .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    }

    #[test]
    fn refusals_read_well() {
        let e = ApiClientError::Refused {
            status: 401,
            code: "unauthorized".into(),
            message: "wrong API key".into(),
        };
        assert_eq!(
            e.to_string(),
            "server refused (401 Unauthorized): wrong API key"
        );
    }
}
