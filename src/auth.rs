//! HS256 JSON Web Tokens: minting, verification and the claims they carry.
//!
//! Everything here is pure: no clock is read, the caller passes `now` as unix
//! seconds. A token's `sub` is the user id; optional `ns` and `rooms` claims
//! restrict which namespaces and rooms it may open.
//!
//! ```
//! use wtgate::auth::{mint, Claims, TokenVerifier};
//!
//! let claims = Claims::new("alice", 1_000, 3_600);
//! let token = mint(b"secret", &claims).unwrap();
//! let verifier = TokenVerifier::new(b"secret");
//! assert_eq!(verifier.verify(&token, 1_001).unwrap(), claims);
//! ```

use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};

/// The reserved user id that marks messages published by the server itself
/// (the `from` of server-side publishes); no token may claim it.
pub const SERVER_USER: &str = "server";

/// The longest accepted user id, in bytes.
pub const MAX_SUBJECT_LEN: usize = 64;

/// Why a token was refused or could not be made.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No token was given (empty string).
    #[error("missing token")]
    Missing,
    /// The token is not a well-formed JWT with the expected claims.
    #[error("malformed token")]
    Malformed,
    /// The token is signed with an algorithm other than HS256.
    #[error("unsupported token algorithm (only HS256 is accepted)")]
    UnsupportedAlgorithm,
    /// The signature does not match the payload under our secret.
    #[error("bad token signature")]
    BadSignature,
    /// The token's `exp` is at or before `now`.
    #[error("token expired")]
    Expired,
    /// The `sub` claim is empty, too long, has whitespace or control characters, or is reserved.
    #[error("invalid token subject")]
    InvalidSubject,
    /// Signing the token failed.
    #[error("could not sign token: {0}")]
    Mint(#[source] jsonwebtoken::errors::Error),
}

/// The claims of a wtgate token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// Expiry, unix seconds; the token is refused when `exp <= now`.
    pub exp: u64,
    /// Issue time, unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Namespaces the token may open, e.g. `["/chat"]` (the leading `/` is
    /// optional, `*` is a wildcard); `None` = all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ns: Option<Vec<String>>,
    /// Room name patterns with `*` wildcards (`*` = any run of characters),
    /// e.g. `["team-*", "lobby"]`; `None` = all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rooms: Option<Vec<String>>,
}

impl Claims {
    /// Claims for `user`, issued at `now`, expiring `ttl_secs` later, unrestricted.
    pub fn new(user: &str, now: u64, ttl_secs: u64) -> Claims {
        Claims {
            sub: user.to_owned(),
            exp: now.saturating_add(ttl_secs),
            iat: Some(now),
            ns: None,
            rooms: None,
        }
    }

    /// Whether the token may open the namespace at URL `path` (e.g. `/chat`).
    /// A claim entry may be written `chat` or `/chat`.
    pub fn allows_namespace(&self, path: &str) -> bool {
        let Some(allowed) = &self.ns else {
            return true;
        };
        let path = path.strip_prefix('/').unwrap_or(path);
        allowed
            .iter()
            .any(|p| glob_match(p.strip_prefix('/').unwrap_or(p), path))
    }

    /// Whether the token may join `room`.
    pub fn allows_room(&self, room: &str) -> bool {
        match &self.rooms {
            None => true,
            Some(patterns) => patterns.iter().any(|p| glob_match(p, room)),
        }
    }
}

/// Whether `text` matches `pattern`, where `*` matches any run of bytes
/// (including none) and every other byte matches itself.
fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    // Position of the last `*` seen and the text position it resumes from.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            // Let the last `*` swallow one more byte and retry.
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&b| b == b'*')
}

/// Whether `sub` is acceptable as a user id.
/// Checks a user id: 1..=64 bytes, no whitespace or control characters, not the
/// reserved [`SERVER_USER`].
pub fn validate_subject(sub: &str) -> Result<(), AuthError> {
    if valid_subject(sub) {
        Ok(())
    } else {
        Err(AuthError::InvalidSubject)
    }
}

fn valid_subject(sub: &str) -> bool {
    !sub.is_empty()
        && sub.len() <= MAX_SUBJECT_LEN
        && !sub
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || is_invisible(c))
        && !looks_like_server(sub)
}

/// Whether `sub` would read as the reserved [`SERVER_USER`] in a chat: any case,
/// fullwidth forms, or Cyrillic and Greek letters drawn like its Latin ones.
fn looks_like_server(sub: &str) -> bool {
    let skeleton: String = sub
        .chars()
        .map(|c| match c {
            // Fullwidth ASCII (U+FF01..U+FF5E) to ASCII.
            '\u{ff01}'..='\u{ff5e}' => char::from_u32(c as u32 - 0xfee0).unwrap_or(c),
            'ѕ' | 'Ѕ' => 's',
            'е' | 'Е' | 'ε' | 'Ε' => 'e',
            'г' | 'ʀ' => 'r',
            'ѵ' | 'Ѵ' | 'ν' => 'v',
            _ => c,
        })
        .flat_map(char::to_lowercase)
        .collect();
    skeleton == SERVER_USER
}

/// Characters that draw nothing (zero-width, joiners, bidi controls, soft hyphen):
/// in a user id they only serve to fake another.
fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00ad}' | '\u{034f}' | '\u{061c}' | '\u{115f}' | '\u{1160}' | '\u{17b4}' | '\u{17b5}'
        | '\u{180e}' | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}'
        | '\u{2060}'..='\u{206f}' | '\u{3164}' | '\u{fe00}'..='\u{fe0f}' | '\u{feff}'
        | '\u{ffa0}')
}

/// Verifies tokens against one HS256 secret.
pub struct TokenVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier").finish_non_exhaustive()
    }
}

impl TokenVerifier {
    /// A verifier for tokens signed with `secret`.
    pub fn new(secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        // We check `exp` ourselves against the caller's `now`; the claim types
        // are enforced by deserializing into `Claims`.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.leeway = 0;
        validation.required_spec_claims.clear();
        TokenVerifier {
            key: DecodingKey::from_secret(secret),
            validation,
        }
    }

    /// Checks `token`'s algorithm, signature, expiry (against `now`, unix
    /// seconds) and subject, and returns its claims.
    pub fn verify(&self, token: &str, now: u64) -> Result<Claims, AuthError> {
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(
            |e| match e.kind() {
                ErrorKind::InvalidSignature => AuthError::BadSignature,
                ErrorKind::InvalidAlgorithm
                | ErrorKind::InvalidAlgorithmName
                | ErrorKind::MissingAlgorithm => AuthError::UnsupportedAlgorithm,
                _ => AuthError::Malformed,
            },
        )?;
        // `decode` already refuses other algorithms; this guards against a
        // future change of its defaults.
        if data.header.alg != Algorithm::HS256 {
            return Err(AuthError::UnsupportedAlgorithm);
        }
        let claims = data.claims;
        if claims.exp <= now {
            return Err(AuthError::Expired);
        }
        if !valid_subject(&claims.sub) {
            return Err(AuthError::InvalidSubject);
        }
        Ok(claims)
    }
}

/// Signs `claims` as an HS256 token with `secret`.
pub fn mint(secret: &[u8], claims: &Claims) -> Result<String, AuthError> {
    if !valid_subject(&claims.sub) {
        return Err(AuthError::InvalidSubject);
    }
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .map_err(AuthError::Mint)
}

/// A duration string that [`parse_duration`] could not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {0:?}: expected a whole number with an optional unit ms, s, m, h or d (e.g. 90s, 15m, 1h, 7d)")]
pub struct DurationError(pub String);

/// Parses `"500ms"`, `"90s"`, `"15m"`, `"1h"`, `"7d"`; a plain number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    let err = || DurationError(s.to_owned());
    let trimmed = s.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (digits, unit) = trimmed.split_at(split);
    if digits.is_empty() {
        return Err(err());
    }
    let n: u64 = digits.parse().map_err(|_| err())?;
    let secs_per_unit = match unit.trim() {
        "ms" => return Ok(Duration::from_millis(n)),
        "" | "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => return Err(err()),
    };
    n.checked_mul(secs_per_unit)
        .map(Duration::from_secs)
        .ok_or_else(err)
}

/// A fresh random secret: 32 random bytes, hex encoded.
pub fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// File, in the certificate directory, that keeps the token secret of `serve --dev`
/// next to the development key, so that `wtgate token` and `wtgate load` run from the
/// same directory sign tokens the dev server accepts, as `notify` pins its certificate.
pub const DEV_SECRET_FILE: &str = "dev-secret";

/// The development secret kept in `dir`, made (readable by its owner only) when
/// missing. Returns it and whether it was made now.
pub fn dev_secret(dir: &std::path::Path) -> std::io::Result<(String, bool)> {
    if let Some(secret) = read_dev_secret(dir)? {
        return Ok((secret, false));
    }
    std::fs::create_dir_all(dir)?;
    let secret = random_secret();
    let path = dir.join(DEV_SECRET_FILE);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(&path) {
        Ok(mut file) => {
            std::io::Write::write_all(&mut file, format!("{secret}\n").as_bytes())?;
            Ok((secret, true))
        }
        // Another process made it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let secret = read_dev_secret(dir)?.ok_or(e)?;
            Ok((secret, false))
        }
        Err(e) => Err(e),
    }
}

/// The development secret kept in `dir`, if there is a non-empty one.
pub fn read_dev_secret(dir: &std::path::Path) -> std::io::Result<Option<String>> {
    match std::fs::read_to_string(dir.join(DEV_SECRET_FILE)) {
        Ok(s) if !s.trim().is_empty() => Ok(Some(s.trim().to_owned())),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"test-secret";
    const NOW: u64 = 1_700_000_000;

    #[test]
    fn dev_secret_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let certs = dir.path().join("certs");
        assert_eq!(read_dev_secret(&certs).unwrap(), None);
        let (first, made) = dev_secret(&certs).unwrap();
        assert!(made);
        assert_eq!(first.len(), 64);
        let (again, made) = dev_secret(&certs).unwrap();
        assert!(!made);
        assert_eq!(again, first);
        assert_eq!(read_dev_secret(&certs).unwrap(), Some(first));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(certs.join(DEV_SECRET_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "readable by others: {mode:o}");
        }
    }

    fn verifier() -> TokenVerifier {
        TokenVerifier::new(SECRET)
    }

    fn token_for(claims: &Claims) -> String {
        mint(SECRET, claims).unwrap()
    }

    fn parts(token: &str) -> Vec<&str> {
        token.split('.').collect()
    }

    #[test]
    fn round_trip() {
        let mut claims = Claims::new("alice", NOW, 3600);
        claims.ns = Some(vec!["/chat".into()]);
        claims.rooms = Some(vec!["team-*".into()]);
        let token = token_for(&claims);
        let got = verifier().verify(&token, NOW + 10).unwrap();
        assert_eq!(got, claims);
        assert_eq!(got.exp, NOW + 3600);
        assert_eq!(got.iat, Some(NOW));
    }

    #[test]
    fn optional_claims_are_omitted() {
        let token = token_for(&Claims::new("bob", NOW, 60));
        let payload = parts(&token)[1].to_owned();
        // A token without `ns`/`rooms` stays short and decodes to `None`.
        assert!(!payload.is_empty());
        let got = verifier().verify(&token, NOW).unwrap();
        assert_eq!(got.ns, None);
        assert_eq!(got.rooms, None);
    }

    #[test]
    fn expired() {
        let token = token_for(&Claims::new("alice", NOW, 60));
        assert!(verifier().verify(&token, NOW + 59).is_ok());
        assert!(matches!(
            verifier().verify(&token, NOW + 60),
            Err(AuthError::Expired)
        ));
        assert!(matches!(
            verifier().verify(&token, NOW + 1_000),
            Err(AuthError::Expired)
        ));
    }

    #[test]
    fn forged_signature() {
        let token = mint(b"other-secret", &Claims::new("alice", NOW, 60)).unwrap();
        assert!(matches!(
            verifier().verify(&token, NOW),
            Err(AuthError::BadSignature)
        ));
    }

    #[test]
    fn tampered_payload() {
        let alice = token_for(&Claims::new("alice", NOW, 60));
        let mallory = token_for(&Claims::new("mallory", NOW, 60_000));
        let (a, m) = (parts(&alice), parts(&mallory));
        let spliced = format!("{}.{}.{}", a[0], m[1], a[2]);
        assert!(matches!(
            verifier().verify(&spliced, NOW),
            Err(AuthError::BadSignature)
        ));
    }

    #[test]
    fn alg_none_refused() {
        let token = token_for(&Claims::new("alice", NOW, 60));
        // {"alg":"none","typ":"JWT"}
        let none_header = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0";
        for forged in [
            format!("{}.{}.", none_header, parts(&token)[1]),
            format!("{}.{}", none_header, parts(&token)[1]),
            format!("{}.{}.{}", none_header, parts(&token)[1], parts(&token)[2]),
        ] {
            let err = verifier().verify(&forged, NOW).unwrap_err();
            assert!(
                matches!(err, AuthError::Malformed | AuthError::UnsupportedAlgorithm),
                "{forged}: {err:?}"
            );
        }
    }

    #[test]
    fn other_hmac_alg_refused() {
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &Claims::new("alice", NOW, 60),
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        assert!(matches!(
            verifier().verify(&token, NOW),
            Err(AuthError::UnsupportedAlgorithm)
        ));
    }

    #[test]
    fn garbage_and_empty() {
        let v = verifier();
        assert!(matches!(v.verify("", NOW), Err(AuthError::Missing)));
        for junk in ["x", "a.b.c", "....", "not a token", "eyJ.eyJ.eyJ", "\u{0}"] {
            assert!(
                matches!(v.verify(junk, NOW), Err(AuthError::Malformed)),
                "{junk:?}"
            );
        }
    }

    #[test]
    fn missing_claims_are_malformed() {
        #[derive(Serialize)]
        struct NoExp {
            sub: String,
        }
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &NoExp {
                sub: "alice".into(),
            },
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        assert!(matches!(
            verifier().verify(&token, NOW),
            Err(AuthError::Malformed)
        ));
    }

    #[test]
    fn names_near_server_stay_valid() {
        for sub in [
            "servers",
            "observer",
            "server-bot",
            "zoë",
            "Сергей",
            "ann.b_c-d",
        ] {
            validate_subject(sub).unwrap_or_else(|e| panic!("{sub}: {e}"));
        }
    }

    #[test]
    fn invalid_subjects() {
        let long = "x".repeat(MAX_SUBJECT_LEN + 1);
        for sub in [
            "",
            SERVER_USER,
            "Server",
            "SERVER",
            "ｓｅｒｖｅｒ",
            "ѕеrvеr",
            "ser\u{200b}ver",
            "server\u{feff}",
            "\u{202e}revres",
            "a b",
            "tab\there",
            "nl\n",
            "\u{7}",
            &long,
        ] {
            let claims = Claims::new(sub, NOW, 60);
            assert!(
                matches!(mint(SECRET, &claims), Err(AuthError::InvalidSubject)),
                "mint {sub:?}"
            );
            // A token minted elsewhere with such a subject is refused too.
            let token = jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                &claims,
                &EncodingKey::from_secret(SECRET),
            )
            .unwrap();
            assert!(
                matches!(
                    verifier().verify(&token, NOW),
                    Err(AuthError::InvalidSubject)
                ),
                "verify {sub:?}"
            );
        }
        let ok = "x".repeat(MAX_SUBJECT_LEN);
        assert!(mint(SECRET, &Claims::new(&ok, NOW, 60)).is_ok());
        assert!(mint(SECRET, &Claims::new("user@example.com", NOW, 60)).is_ok());
    }

    fn with_rooms(patterns: &[&str]) -> Claims {
        let mut c = Claims::new("alice", NOW, 60);
        c.rooms = Some(patterns.iter().map(|s| s.to_string()).collect());
        c
    }

    #[test]
    fn room_patterns() {
        let c = with_rooms(&["lobby", "team-*", "*-public", "a*z", "*"]);
        assert!(c.allows_room("anything"));

        let exact = with_rooms(&["lobby"]);
        assert!(exact.allows_room("lobby"));
        assert!(!exact.allows_room("lobby2"));
        assert!(!exact.allows_room("xlobby"));
        assert!(!exact.allows_room(""));

        let prefix = with_rooms(&["team-*"]);
        assert!(prefix.allows_room("team-"));
        assert!(prefix.allows_room("team-red"));
        assert!(!prefix.allows_room("team"));
        assert!(!prefix.allows_room("my-team-red"));

        let suffix = with_rooms(&["*-public"]);
        assert!(suffix.allows_room("x-public"));
        assert!(suffix.allows_room("-public"));
        assert!(!suffix.allows_room("x-public-not"));

        let middle = with_rooms(&["a*z"]);
        assert!(middle.allows_room("az"));
        assert!(middle.allows_room("abcz"));
        assert!(middle.allows_room("azzz"));
        assert!(!middle.allows_room("aza"));
        assert!(!middle.allows_room("ba"));

        let multi = with_rooms(&["*a*b*"]);
        assert!(multi.allows_room("xaybz"));
        assert!(multi.allows_room("ab"));
        assert!(!multi.allows_room("ba"));

        let none = with_rooms(&[]);
        assert!(!none.allows_room("lobby"));

        let unrestricted = Claims::new("alice", NOW, 60);
        assert!(unrestricted.allows_room("anything"));
    }

    #[test]
    fn namespace_claims() {
        let unrestricted = Claims::new("alice", NOW, 60);
        assert!(unrestricted.allows_namespace("/chat"));

        let mut c = Claims::new("alice", NOW, 60);
        c.ns = Some(vec!["chat".into(), "/notifications".into()]);
        assert!(c.allows_namespace("/chat"));
        assert!(c.allows_namespace("/notifications"));
        assert!(!c.allows_namespace("/admin"));
        assert!(!c.allows_namespace("/chatty"));

        c.ns = Some(vec![]);
        assert!(!c.allows_namespace("/chat"));
    }

    #[test]
    fn durations() {
        let ok = [
            ("90s", 90),
            ("15m", 900),
            ("1h", 3600),
            ("7d", 604_800),
            ("42", 42),
            (" 5 s ", 5),
            ("0", 0),
        ];
        for (s, secs) in ok {
            assert_eq!(parse_duration(s).unwrap(), Duration::from_secs(secs), "{s}");
        }
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        for bad in [
            "",
            "h",
            "1w",
            "-1s",
            "1.5h",
            "1h30m",
            "99999999999999999999d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn random_secrets_differ() {
        let (a, b) = (random_secret(), random_secret());
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
