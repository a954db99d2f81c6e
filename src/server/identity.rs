//! The server's TLS identity: a certificate chain and its key from PEM files (or the
//! self-signed development pair), checked up front so that a wrong file is reported
//! against its own path, with what it holds instead, before any socket is bound.

use std::path::Path;

use tracing::info;
use wtransport::tls::error::PemLoadError;
use wtransport::tls::{CertificateChain, PrivateKey};
use wtransport::Identity;

use super::ServerError;
use crate::certs;
use crate::config::TlsSource;

/// Loads the identity `tls` names; makes the development certificate when needed
/// and says so when it replaced one (its hash changed: pinned clients must update).
pub(super) async fn load(tls: &TlsSource) -> Result<Identity, ServerError> {
    match tls {
        TlsSource::Files { cert, key } => load_files(cert, key).await,
        TlsSource::SelfSigned { dir } => {
            let made = certs::ensure(dir).map_err(|e| ServerError::Certificate(e.to_string()))?;
            if let Some(reason) = &made.replaced {
                info!(
                    cert = %made.files.cert.display(),
                    hash = made.files.hash,
                    "replaced the development certificate ({reason}); clients pinning the old hash must use the new one"
                );
            } else if made.generated {
                info!(cert = %made.files.cert.display(), "generated a self-signed certificate");
            }
            load_files(&made.files.cert, &made.files.key).await
        }
    }
}

async fn load_files(cert: &Path, key: &Path) -> Result<Identity, ServerError> {
    let chain = CertificateChain::load_pemfile(cert)
        .await
        .map_err(|e| pem_error(cert, "--cert", "CERTIFICATE", e))?;
    if chain.as_slice().is_empty() {
        return Err(pem_error(
            cert,
            "--cert",
            "CERTIFICATE",
            PemLoadError::NoCertificateSection,
        ));
    }
    let private_key = PrivateKey::load_pemfile(key)
        .await
        .map_err(|e| pem_error(key, "--key", "PRIVATE KEY", e))?;
    Ok(Identity::new(chain, private_key))
}

/// An error that names the file, the flag it came from and what was expected.
fn pem_error(path: &Path, flag: &str, label: &str, e: PemLoadError) -> ServerError {
    let what = match e {
        PemLoadError::NoCertificateSection | PemLoadError::NoPrivateKeySection => {
            let holds = pem_labels(path);
            let found = if holds.is_empty() {
                "no PEM section at all".to_owned()
            } else {
                format!("only {}", holds.join(", "))
            };
            format!("expected a PEM `-----BEGIN {label}-----` section, found {found}")
        }
        PemLoadError::FileError { error, .. } => error.to_string(),
        other => other.to_string(),
    };
    ServerError::Certificate(format!("{flag} {}: {what}", path.display()))
}

/// The labels of the PEM sections in a file, e.g. `["PRIVATE KEY"]`, to say what a
/// file given as the wrong flag holds.
fn pem_labels(path: &Path) -> Vec<String> {
    let Ok(bytes) = std::fs::read(path) else {
        return Vec::new();
    };
    String::from_utf8_lossy(&bytes)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("-----BEGIN "))
        .filter_map(|l| l.strip_suffix("-----"))
        .map(|l| format!("`{l}`"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(cert: &[u8], key: &[u8]) -> (tempfile::TempDir, TlsSource) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("c.pem"), cert).unwrap();
        std::fs::write(dir.path().join("k.pem"), key).unwrap();
        let tls = TlsSource::Files {
            cert: dir.path().join("c.pem"),
            key: dir.path().join("k.pem"),
        };
        (dir, tls)
    }

    async fn error(tls: &TlsSource) -> String {
        match load(tls).await {
            Ok(_) => panic!("{tls} was accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[tokio::test]
    async fn wrong_files_name_the_file_and_what_it_holds() {
        let dev = tempfile::tempdir().unwrap();
        let good = certs::generate(dev.path(), 1).unwrap();
        let cert_pem = std::fs::read(&good.cert).unwrap();
        let key_pem = std::fs::read(&good.key).unwrap();

        let (_d, ok) = files(&cert_pem, &key_pem);
        assert!(load(&ok).await.is_ok());

        let (_d, empty) = files(b"", &key_pem);
        let e = error(&empty).await;
        assert!(e.contains("--cert") && e.contains("c.pem"), "{e}");
        assert!(e.contains("no PEM section at all"), "{e}");

        let (_d, swapped) = files(&key_pem, &cert_pem);
        let e = error(&swapped).await;
        assert!(e.contains("--cert") && e.contains("c.pem"), "{e}");
        assert!(e.contains("only `PRIVATE KEY`"), "{e}");

        let (_d, bad_key) = files(&cert_pem, b"garbage");
        let e = error(&bad_key).await;
        assert!(e.contains("--key") && e.contains("k.pem"), "{e}");
        assert!(!e.contains("c.pem"), "{e}");

        let missing = TlsSource::Files {
            cert: dev.path().join("nope.pem"),
            key: good.key.clone(),
        };
        let e = error(&missing).await;
        assert!(e.contains("nope.pem") && e.contains("No such file"), "{e}");
    }
}
