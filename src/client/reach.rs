//! How a client reaches a server: which addresses to try for a URL, and which
//! certificate to trust. Shared by [`super::Client`], the load tester and the
//! server-API CLI so that `https://localhost:…` and the development certificate
//! behave the same everywhere.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use reqwest::Url;
use wtransport::endpoint::endpoint_side;
use wtransport::{Connection, Endpoint};

use super::{ClientError, Trust};
use crate::certs;

/// How long the `[::1]` attempt runs alone before `127.0.0.1` is tried as well
/// (the "connection attempt delay" of Happy Eyeballs, RFC 8305): a loopback
/// handshake takes a few ms, so a dual-stack server is never asked twice.
pub const LOOPBACK_HEAD_START: Duration = Duration::from_millis(200);

/// The addresses of `localhost:port`, `[::1]` first: a `--dev` server binds
/// `[::1]` only (browsers resolve `localhost` there), while the system resolver
/// may answer 127.0.0.1 alone.
pub fn localhost_addrs(port: u16) -> [SocketAddr; 2] {
    [
        SocketAddr::from((Ipv6Addr::LOCALHOST, port)),
        SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
    ]
}

/// The URLs to try for `url`, in order: for host `localhost`, the same URL on
/// each of [`localhost_addrs`]; otherwise `url` itself.
///
/// Naming the address in the URL changes the TLS server name to the IP, which
/// pinned hashes ignore and development certificates carry (`::1`, `127.0.0.1`).
pub fn candidate_urls(url: &str) -> Vec<String> {
    let Ok(parsed) = Url::parse(url) else {
        return vec![url.to_owned()];
    };
    if !parsed
        .host_str()
        .is_some_and(|h| h.eq_ignore_ascii_case("localhost"))
    {
        return vec![url.to_owned()];
    }
    let port = parsed.port_or_known_default().unwrap_or(443);
    localhost_addrs(port)
        .iter()
        .map(|addr| {
            let mut u = parsed.clone();
            // Setting an IP host on an https URL cannot fail.
            let _ = u.set_ip_host(addr.ip());
            u.to_string()
        })
        .collect()
}

/// Opens a WebTransport session to `url` on `endpoint`, within `timeout`; for
/// `localhost`, tries `[::1]` and then (after [`LOOPBACK_HEAD_START`]) also
/// `127.0.0.1`, and keeps the first that answers. Returns the session and the
/// URL that reached it, so callers opening many sessions can skip the race.
pub async fn connect_first(
    endpoint: &Endpoint<endpoint_side::Client>,
    url: &str,
    timeout: Duration,
) -> Result<(Connection, String), ClientError> {
    let attempt = |u: String, delay: Duration| async move {
        tokio::time::sleep(delay).await;
        let r = endpoint.connect(u.as_str()).await;
        (r, u)
    };
    let mut attempts: futures::stream::FuturesUnordered<_> = candidate_urls(url)
        .into_iter()
        .enumerate()
        .map(|(i, u)| attempt(u, LOOPBACK_HEAD_START * i as u32))
        .collect();
    let race = async {
        let mut last = String::new();
        while let Some((r, u)) = futures::StreamExt::next(&mut attempts).await {
            match r {
                Ok(conn) => return Ok((conn, u)),
                Err(e) => last = e.to_string(),
            }
        }
        Err(last)
    };
    match tokio::time::timeout(timeout, race).await {
        Ok(Ok(found)) => Ok(found),
        Ok(Err(reason)) => Err(ClientError::Connect {
            url: url.to_owned(),
            reason,
        }),
        Err(_) => Err(ClientError::Connect {
            url: url.to_owned(),
            reason: format!("no answer within {timeout:?}"),
        }),
    }
}

/// Whether `url`'s host is `localhost` or a loopback address.
pub fn is_loopback_url(url: &str) -> bool {
    let Ok(url) = Url::parse(url) else {
        return false;
    };
    let host = url.host_str().unwrap_or_default();
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl Trust {
    /// The trust for `server` from command-line choices: the pinned `cert_hash`,
    /// the `ca` file, else — for a loopback server — the development certificate
    /// in `certs_dir` if there is one (what `wtgate serve --dev` made there),
    /// else the system roots.
    pub fn for_server(
        server: &str,
        cert_hash: Option<&str>,
        ca: Option<&Path>,
        certs_dir: &Path,
    ) -> Result<Trust, ClientError> {
        if let Some(hash) = cert_hash {
            return Ok(Trust::Hash(hash.to_owned()));
        }
        if let Some(ca) = ca {
            return Ok(Trust::Ca(ca.to_owned()));
        }
        let dev_cert = certs_dir.join(certs::CERT_FILE);
        if is_loopback_url(server) && dev_cert.exists() {
            let info = certs::inspect(&dev_cert).map_err(|e| ClientError::Trust(e.to_string()))?;
            return Ok(Trust::Hash(info.hash));
        }
        Ok(Trust::System)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn localhost_means_both_loopbacks_v6_first() {
        assert_eq!(
            candidate_urls("https://localhost:4433/chat"),
            ["https://[::1]:4433/chat", "https://127.0.0.1:4433/chat"]
        );
        assert_eq!(
            candidate_urls("https://LOCALHOST/chat?x=1"),
            ["https://[::1]/chat?x=1", "https://127.0.0.1/chat?x=1"]
        );
        for other in [
            "https://127.0.0.1:4433/chat",
            "https://[::1]:4433/chat",
            "https://example.com/chat",
            "not a url",
        ] {
            assert_eq!(candidate_urls(other), [other]);
        }
        assert_eq!(localhost_addrs(1)[0], "[::1]:1".parse().unwrap());
    }

    #[test]
    fn loopback_urls_are_recognised() {
        for local in [
            "https://localhost:4433",
            "https://127.0.0.1:1",
            "https://127.8.0.1/chat",
            "https://[::1]:4433",
        ] {
            assert!(is_loopback_url(local), "{local}");
        }
        for remote in ["https://example.com", "https://10.0.0.1:4433", "nonsense"] {
            assert!(!is_loopback_url(remote), "{remote}");
        }
    }

    #[test]
    fn trust_prefers_flags_then_the_dev_certificate_on_loopback() {
        let dir = tempfile::tempdir().unwrap();
        let files = certs::generate(dir.path(), 1).unwrap();
        let trust = |server: &str, dir: &Path| Trust::for_server(server, None, None, dir).unwrap();
        for local in ["https://localhost:4433", "https://[::1]:4433/chat"] {
            assert!(
                matches!(trust(local, dir.path()), Trust::Hash(ref h) if *h == files.hash),
                "{local}"
            );
        }
        assert!(matches!(
            trust("https://example.com", dir.path()),
            Trust::System
        ));
        assert!(matches!(
            trust("https://localhost", &dir.path().join("missing")),
            Trust::System
        ));
        let pinned = Trust::for_server("https://localhost", Some("ab"), None, dir.path()).unwrap();
        assert!(matches!(pinned, Trust::Hash(ref h) if h == "ab"));
        let ca = Trust::for_server("https://localhost", None, Some(Path::new("c")), dir.path());
        assert!(matches!(ca.unwrap(), Trust::Ca(_)));
        std::fs::write(dir.path().join(certs::CERT_FILE), "garbage").unwrap();
        let err = Trust::for_server("https://localhost", None, None, dir.path()).unwrap_err();
        assert!(matches!(err, ClientError::Trust(_)), "{err}");
    }
}
