//! Self-signed development certificates.
//!
//! Browsers accept a self-signed certificate for WebTransport when the page
//! pins its SHA-256 hash (`serverCertificateHashes`), and only if the
//! certificate is ECDSA, currently valid, and valid for at most 14 days in
//! total. [`generate`] makes exactly such a certificate (P-256, SANs
//! `localhost`, `127.0.0.1`, `::1`) and [`ensure`] reuses one until it is
//! within a day of expiry.
//!
//! Hashes are written as 64 lowercase hex digits without separators.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PublicKeyData};
use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime};
use tokio_rustls::rustls;

/// The longest validity browsers accept for a hash-pinned certificate.
pub const MAX_DAYS: u32 = 14;

/// File name of the certificate inside a certificate directory.
pub const CERT_FILE: &str = "cert.pem";

/// File name of the private key inside a certificate directory.
pub const KEY_FILE: &str = "key.pem";

/// Subject alternative names of development certificates.
const SANS: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// How far `not_before` is set in the past, to absorb small clock differences.
const BACKDATE: Duration = Duration::minutes(1);

/// [`ensure`] replaces a certificate that expires sooner than this.
const RENEW_BEFORE: Duration = Duration::days(1);

/// Why a certificate could not be made, read or checked.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// The requested validity is 0 days or more than [`MAX_DAYS`].
    #[error("certificate validity must be 1 to {MAX_DAYS} days, got {0}")]
    InvalidDays(u32),
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// rcgen could not generate the key or the certificate.
    #[error("could not generate certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// The file holds no parseable X.509 certificate.
    #[error("{}: not a PEM X.509 certificate: {reason}", path.display())]
    Parse {
        /// The certificate file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A certificate hash is not 64 hex digits (optionally `:`-separated pairs).
    #[error("invalid certificate hash {0:?}: expected 64 hex digits")]
    InvalidHash(String),
}

/// A certificate and key on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    /// The PEM certificate.
    pub cert: PathBuf,
    /// The PEM PKCS#8 private key.
    pub key: PathBuf,
    /// SHA-256 of the DER certificate: 64 lowercase hex digits.
    pub hash: String,
    /// End of validity.
    pub not_after: OffsetDateTime,
}

/// What [`inspect`] reads from a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// SHA-256 of the DER certificate: 64 lowercase hex digits.
    pub hash: String,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
}

/// Generates a self-signed ECDSA P-256 certificate valid for `days` (1 to
/// [`MAX_DAYS`]) into `dir` (created if needed) as `cert.pem` and `key.pem`
/// (mode 0600 on Unix), replacing any there.
pub fn generate(dir: &Path, days: u32) -> Result<CertFiles, CertError> {
    if days == 0 || days > MAX_DAYS {
        return Err(CertError::InvalidDays(days));
    }
    fs::create_dir_all(dir).map_err(|source| CertError::Io {
        path: dir.to_owned(),
        source,
    })?;

    let key_pair = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::new(SANS.map(String::from).to_vec())?;
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, "wtgate development certificate");
    params.distinguished_name = name;
    // X.509 stores whole seconds; truncate so the files say what we return.
    let now = OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .expect("0 is a valid nanosecond");
    // Total validity (not_after - not_before) stays within `days`.
    params.not_before = now - BACKDATE;
    params.not_after = params.not_before + Duration::days(days.into());
    let cert = params.self_signed(&key_pair)?;

    let files = CertFiles {
        cert: dir.join(CERT_FILE),
        key: dir.join(KEY_FILE),
        hash: hash_der(cert.der()),
        not_after: params.not_after,
    };
    write_atomically(&files.key, key_pair.serialize_pem().as_bytes(), 0o600)?;
    write_atomically(&files.cert, cert.pem().as_bytes(), 0o644)?;
    Ok(files)
}

/// What [`ensure`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ensured {
    /// The certificate and key in use.
    pub files: CertFiles,
    /// Whether a new certificate was made.
    pub generated: bool,
    /// Why an existing certificate file was replaced (its hash changed).
    pub replaced: Option<String>,
}

/// Reuses `dir/cert.pem` and `dir/key.pem` when they parse, belong together,
/// are browser-acceptable and stay valid for more than one more day;
/// otherwise generates a new [`MAX_DAYS`] certificate.
pub fn ensure(dir: &Path) -> Result<Ensured, CertError> {
    match reusable(dir, OffsetDateTime::now_utc()) {
        Ok(files) => Ok(Ensured {
            files,
            generated: false,
            replaced: None,
        }),
        Err(reason) => {
            let existed = dir.join(CERT_FILE).exists();
            Ok(Ensured {
                files: generate(dir, MAX_DAYS)?,
                generated: true,
                replaced: existed.then_some(reason),
            })
        }
    }
}

/// The certificate a renewal check at start (see [`ensure`]) would still keep
/// for a server started now: false for one that expires within a day.
pub fn outlives_renewal(files: &CertFiles) -> bool {
    files.not_after - OffsetDateTime::now_utc() > RENEW_BEFORE
}

/// The existing files in `dir` if they can be used at `now`, or why not.
fn reusable(dir: &Path, now: OffsetDateTime) -> Result<CertFiles, String> {
    let cert_path = dir.join(CERT_FILE);
    let key_path = dir.join(KEY_FILE);
    let (info, der) = read_cert(&cert_path).map_err(|e| e.to_string())?;
    let key_pem =
        fs::read_to_string(&key_path).map_err(|e| format!("{}: {e}", key_path.display()))?;
    let key = KeyPair::from_pem(&key_pem).map_err(|e| format!("{}: {e}", key_path.display()))?;

    let (_, cert) = x509_parser::parse_x509_certificate(&der).map_err(|e| e.to_string())?;
    if cert.public_key().subject_public_key.data.as_ref() != key.der_bytes() {
        return Err("the key does not match the certificate".into());
    }
    if info.not_after - info.not_before > Duration::days(MAX_DAYS.into()) {
        return Err(format!("valid for more than {MAX_DAYS} days"));
    }
    if info.not_before > now {
        return Err("not valid yet".into());
    }
    if info.not_after - now <= RENEW_BEFORE {
        return Err("expired or expiring within a day".into());
    }
    Ok(CertFiles {
        cert: cert_path,
        key: key_path,
        hash: info.hash,
        not_after: info.not_after,
    })
}

/// Reads the first certificate of a PEM file: its hash and validity.
pub fn inspect(cert_pem_path: &Path) -> Result<CertInfo, CertError> {
    read_cert(cert_pem_path).map(|(info, _)| info)
}

/// Reads the first certificate of a PEM file; returns its info and DER.
fn read_cert(path: &Path) -> Result<(CertInfo, Vec<u8>), CertError> {
    let parse_err = |reason: String| CertError::Parse {
        path: path.to_owned(),
        reason,
    };
    let pem = fs::read(path).map_err(|source| CertError::Io {
        path: path.to_owned(),
        source,
    })?;
    let block = x509_parser::pem::Pem::iter_from_buffer(&pem)
        .filter_map(Result::ok)
        .find(|p| p.label == "CERTIFICATE")
        .ok_or_else(|| parse_err("no CERTIFICATE block".into()))?;
    let cert = block.parse_x509().map_err(|e| parse_err(e.to_string()))?;
    let validity = cert.validity();
    let info = CertInfo {
        hash: hash_der(&block.contents),
        not_before: validity.not_before.to_datetime(),
        not_after: validity.not_after.to_datetime(),
    };
    Ok((info, block.contents))
}

/// SHA-256 of a DER certificate as 64 lowercase hex digits.
pub fn hash_der(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// Parses a certificate hash: 64 hex digits, either plain or as 32
/// `:`-separated pairs (`AB:CD:…`); case-insensitive, surrounding spaces ignored.
pub fn parse_hash(hex: &str) -> Result<[u8; 32], CertError> {
    let err = || CertError::InvalidHash(hex.to_owned());
    let trimmed = hex.trim();
    let digits: String = if trimmed.contains(':') {
        let pairs: Vec<&str> = trimmed.split(':').collect();
        if pairs.len() != 32 || pairs.iter().any(|p| p.len() != 2) {
            return Err(err());
        }
        pairs.concat()
    } else {
        trimmed.to_owned()
    };
    let mut out = [0u8; 32];
    ::hex::decode_to_slice(&digits, &mut out).map_err(|_| err())?;
    Ok(out)
}

/// Writes `contents` to a temporary file next to `path` with `mode` (Unix),
/// then renames it over `path`.
fn write_atomically(path: &Path, contents: &[u8], mode: u32) -> Result<(), CertError> {
    let io_err = |source| CertError::Io {
        path: path.to_owned(),
        source,
    };
    let mut tmp_name = path.file_name().unwrap_or_default().to_owned();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let _ = fs::remove_file(&tmp);
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(&tmp).map_err(io_err)?;
    file.write_all(contents).map_err(io_err)?;
    file.sync_all().map_err(io_err)?;
    drop(file);
    fs::rename(&tmp, path).map_err(io_err)
}

/// A rustls server configuration on `identity` (ring, no client certificates)
/// for `versions`; the caller sets its ALPN. The server API and the QUIC
/// engine both serve the one certificate through it.
pub(crate) fn tls_server_config(
    identity: &wtransport::Identity,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Result<rustls::ServerConfig, String> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = identity
        .certificate_chain()
        .as_slice()
        .iter()
        .map(|cert| CertificateDer::from(cert.der().to_vec()))
        .collect();
    let key = PrivateKeyDer::try_from(identity.private_key().secret_der().to_vec())
        .map_err(|e| format!("private key: {e}"))?;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_then_inspect() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("nested/certs");
        let files = generate(&out, MAX_DAYS).unwrap();
        assert_eq!(files.cert, out.join("cert.pem"));
        assert_eq!(files.key, out.join("key.pem"));
        assert_eq!(files.hash.len(), 64);
        assert!(files
            .hash
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));

        let info = inspect(&files.cert).unwrap();
        assert_eq!(info.hash, files.hash);
        assert_eq!(info.not_after, files.not_after);
        assert!(info.not_after - info.not_before <= Duration::days(14));
        let now = OffsetDateTime::now_utc();
        assert!(info.not_before <= now);
        assert!(info.not_after > now + Duration::days(13));

        let key = fs::read_to_string(&files.key).unwrap();
        assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&files.key).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn certificate_is_ecdsa_p256_with_sans() {
        let dir = tempfile::tempdir().unwrap();
        let files = generate(dir.path(), 3).unwrap();
        let (_, der) = read_cert(&files.cert).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert_eq!(
            cert.public_key().algorithm.algorithm,
            x509_parser::oid_registry::OID_KEY_TYPE_EC_PUBLIC_KEY
        );
        let san = cert.subject_alternative_name().unwrap().unwrap();
        let names: Vec<String> = san
            .value
            .general_names
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(names.len(), 3, "{names:?}");
        assert!(names.iter().any(|n| n.contains("localhost")), "{names:?}");
        let v = cert.validity();
        assert_eq!(
            v.not_after.to_datetime() - v.not_before.to_datetime(),
            Duration::days(3)
        );
    }

    #[test]
    fn days_out_of_range_refused() {
        let dir = tempfile::tempdir().unwrap();
        for days in [0, 15, 365] {
            assert!(matches!(
                generate(dir.path(), days),
                Err(CertError::InvalidDays(d)) if d == days
            ));
        }
        assert!(!dir.path().join(CERT_FILE).exists());
    }

    #[test]
    fn ensure_reuses_then_regenerates() {
        let dir = tempfile::tempdir().unwrap();
        let first = ensure(dir.path()).unwrap();
        assert!(first.generated && first.replaced.is_none());
        let again = ensure(dir.path()).unwrap();
        assert!(!again.generated && again.replaced.is_none());
        assert_eq!(again.files, first.files);
        let first = first.files;
        assert!(outlives_renewal(&first));

        // A certificate expiring within a day is replaced, and that is said.
        let short = generate(dir.path(), 1).unwrap();
        assert!(!outlives_renewal(&short));
        assert_ne!(short.hash, first.hash);
        let renewed = ensure(dir.path()).unwrap();
        assert!(renewed.generated);
        assert_eq!(
            renewed.replaced.as_deref(),
            Some("expired or expiring within a day")
        );
        let renewed = renewed.files;
        assert_ne!(renewed.hash, short.hash);
        assert_eq!(inspect(&renewed.cert).unwrap().hash, renewed.hash);
    }

    #[test]
    fn ensure_replaces_broken_or_mismatched_files() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(CERT_FILE), "garbage").unwrap();
        fs::write(dir.path().join(KEY_FILE), "garbage").unwrap();
        let made = ensure(dir.path()).unwrap();
        assert!(made.generated && made.replaced.is_some());
        let files = made.files;

        // Key from another certificate.
        let other = tempfile::tempdir().unwrap();
        let other_files = generate(other.path(), 5).unwrap();
        fs::copy(&other_files.key, &files.key).unwrap();
        let made = ensure(dir.path()).unwrap();
        assert_eq!(
            made.replaced.as_deref(),
            Some("the key does not match the certificate")
        );
    }

    #[test]
    fn inspect_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.pem");
        assert!(matches!(inspect(&missing), Err(CertError::Io { .. })));
        let bad = dir.path().join("bad.pem");
        fs::write(
            &bad,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        assert!(matches!(inspect(&bad), Err(CertError::Parse { .. })));
    }

    #[test]
    fn hashes() {
        assert_eq!(
            hash_der(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let plain = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let bytes = parse_hash(plain).unwrap();
        assert_eq!(hex::encode(bytes), plain);
        let upper = plain.to_uppercase();
        assert_eq!(parse_hash(&upper).unwrap(), bytes);
        let colons = bytes
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":");
        assert_eq!(parse_hash(&colons).unwrap(), bytes);
        assert_eq!(parse_hash(&format!(" {plain}\n")).unwrap(), bytes);
        for bad in [
            "",
            "abc",
            &plain[..62],
            &format!("{plain}00"),
            "zz",
            "e3b:0c",
        ] {
            assert!(
                matches!(parse_hash(bad), Err(CertError::InvalidHash(_))),
                "{bad}"
            );
        }
        let bad_pairs = colons.replacen(':', "", 1);
        assert!(parse_hash(&bad_pairs).is_err());
    }

    #[tokio::test]
    async fn wtransport_accepts_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let files = generate(dir.path(), MAX_DAYS).unwrap();
        let identity = wtransport::Identity::load_pemfiles(&files.cert, &files.key)
            .await
            .unwrap();
        let chain = identity.certificate_chain().as_slice();
        assert_eq!(chain.len(), 1);
        let digest = chain[0].hash();
        assert_eq!(hex::encode(digest.as_ref()), files.hash);
        assert_eq!(parse_hash(&files.hash).unwrap(), *digest.as_ref());
        // wtransport's Display is colon-separated hex; ours parses it back.
        assert_eq!(parse_hash(&digest.to_string()).unwrap(), *digest.as_ref());
    }
}
