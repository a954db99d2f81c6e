//! Signatures of hook calls and webhooks: `X-Wtgate-Signature: t=<unix secs>,v1=<hex>`
//! where `<hex>` is HMAC-SHA256 over `"<t>.<body>"` with the hook secret (the
//! Stripe scheme: the timestamp is signed too, so a receiver can refuse replays).

use hmac::{Hmac, Mac};
use sha2::Sha256;
use thiserror::Error;

/// The header name.
pub const HEADER: &str = "x-wtgate-signature";

/// Why a signature does not check out.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SignatureError {
    /// Not `t=<digits>,v1=<64 hex digits>`.
    #[error("malformed signature header")]
    Malformed,
    /// The timestamp is further from now than allowed.
    #[error("signature timestamp {0} is too old or in the future")]
    Stale(u64),
    /// The HMAC differs: another key or another body.
    #[error("signature mismatch")]
    Mismatch,
}

/// Seconds since the Unix epoch, the `t` of a signature.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn mac(secret: &[u8], t: u64, body: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The hex HMAC-SHA256 of `"<t>.<body>"`.
pub fn sign(secret: &[u8], t: u64, body: &[u8]) -> String {
    hex::encode(mac(secret, t, body).finalize().into_bytes())
}

/// The header value for `body` signed at unix time `t`.
pub fn signature_header(secret: &[u8], t: u64, body: &[u8]) -> String {
    format!("t={t},v1={}", sign(secret, t, body))
}

/// Checks a header value against `body`, accepting timestamps within `tolerance`
/// seconds of `now` (what a receiver does; the tests use it).
pub fn verify(
    secret: &[u8],
    header: &str,
    body: &[u8],
    now: u64,
    tolerance: u64,
) -> Result<(), SignatureError> {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = v.parse::<u64>().ok(),
            Some(("v1", v)) => v1 = hex::decode(v).ok(),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return Err(SignatureError::Malformed);
    };
    if t.abs_diff(now) > tolerance {
        return Err(SignatureError::Stale(t));
    }
    mac(secret, t, body)
        .verify_slice(&v1)
        .map_err(|_| SignatureError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_and_verifies() {
        let header = signature_header(b"k", 1_700_000_000, b"{}");
        // Pinned against Python's hmac (and so Node's crypto.createHmac).
        assert_eq!(
            header,
            "t=1700000000,v1=c6ef4734033cee2367414a0939385eca0397754aa7a59716da7463a9298b5146"
        );
        assert_eq!(verify(b"k", &header, b"{}", 1_700_000_010, 300), Ok(()));
        assert_eq!(
            verify(b"k", &header, b"{ }", 1_700_000_010, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"other", &header, b"{}", 1_700_000_010, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"k", &header, b"{}", 1_700_001_000, 300),
            Err(SignatureError::Stale(1_700_000_000))
        );
        for bad in ["", "t=1", "v1=00", "t=x,v1=00", "t=1,v1=zz"] {
            assert_eq!(
                verify(b"k", bad, b"{}", 1, 300),
                Err(SignatureError::Malformed),
                "{bad}"
            );
        }
    }
}
