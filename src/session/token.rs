//! The token's life: the session closes with `TokenExpired` when its token's `exp`
//! passes, unless `Refresh` replaced it with a later one for the same user
//! (PROTOCOL.md §13).

use std::time::{Duration, Instant};

use super::{Phase, Refusal, Session};
use crate::auth::Claims;
use crate::protocol::{ErrorCode, ServerFrame};

/// The session's token clock: when the token expires, on the session's clock.
#[derive(Debug, Clone, Copy)]
pub(super) struct TokenClock {
    /// `now` and the unix time when `Hello` was accepted, to read unix time later
    /// from `now` alone.
    at: Instant,
    unix_at: u64,
    /// When the current token expires.
    pub(super) expires: Instant,
}

impl TokenClock {
    pub(super) fn new(now: Instant, unix_secs: u64, claims: &Claims) -> Self {
        TokenClock {
            at: now,
            unix_at: unix_secs,
            expires: now + Duration::from_secs(claims.exp.saturating_sub(unix_secs)),
        }
    }

    /// Unix seconds at `now`.
    fn unix(&self, now: Instant) -> u64 {
        self.unix_at + now.saturating_duration_since(self.at).as_secs()
    }
}

/// Refuses a token issued at or before the user's revocation mark (a token
/// without `iat` counts as issued at 0).
pub(super) fn revoked(claims: &Claims, mark: Option<u64>) -> Result<(), Refusal> {
    match mark {
        Some(mark) if claims.iat.unwrap_or(0) <= mark => Err(Refusal::new(
            ErrorCode::Unauthorized,
            format!("the token was revoked: issued at or before {mark} (unix seconds)"),
        )),
        _ => Ok(()),
    }
}

impl Session {
    /// Closes with `TokenExpired` once the token's `exp` has passed.
    pub(super) fn check_expiry(&mut self, now: Instant) {
        if self.phase == Phase::Live && self.token.is_some_and(|t| now >= t.expires) {
            self.fatal(
                ErrorCode::TokenExpired,
                "the token expired: send Refresh with a new one before exp, or reconnect",
            );
        }
    }

    /// `Refresh { token }`: a valid token for the same user and namespace replaces
    /// the current one (its claims apply to later commands).
    pub(super) fn refresh(&mut self, now: Instant, req: u32, token: &str) {
        match self.check_refresh(now, token) {
            Ok(claims) => {
                if let Some(clock) = self.token.as_mut() {
                    let unix = clock.unix(now);
                    *clock = TokenClock::new(now, unix, &claims);
                }
                self.claims = Some(claims);
                self.queue_frame(&ServerFrame::Ack { req, seq: 0 });
            }
            Err(refusal) => self.refuse(req, refusal),
        }
    }

    fn check_refresh(&self, now: Instant, token: &str) -> Result<Claims, Refusal> {
        let unix = self.token.map_or(0, |t| t.unix(now));
        let claims = self
            .rules
            .verifier
            .verify(token, unix)
            .map_err(|e| Refusal::new(ErrorCode::Unauthorized, e.to_string()))?;
        if claims.sub != self.user() {
            return Err(Refusal::new(
                ErrorCode::Forbidden,
                format!(
                    "a refreshed token must be for the same user ({}), not {}",
                    self.user(),
                    claims.sub
                ),
            ));
        }
        if !claims.allows_namespace(&self.ns) {
            return Err(Refusal::new(
                ErrorCode::Forbidden,
                format!("the new token does not allow namespace {}", self.ns),
            ));
        }
        revoked(&claims, self.revoked_until)?;
        Ok(claims)
    }
}
