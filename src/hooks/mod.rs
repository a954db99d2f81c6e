//! Backend hooks: the application's say in what clients do (PROTOCOL.md §17).
//!
//! A namespace may ask the application before a session is welcomed (`connect`),
//! a join is granted (`join`), a client's message is sequenced (`publish`), and
//! it may answer clients' requests (`rpc`). [`Hooks`] is that contract: Rust
//! programs that run wtgate as a library implement it in-process (the counterpart
//! of NestJS's `handleConnection` and `@SubscribeMessage` handlers), and
//! [`HttpHooks`] implements it by POSTing JSON to the backend (as Centrifugo's
//! proxies do). Which hooks are on is the namespace's configuration
//! ([`HooksConfig`]); the server wraps the implementation in a [`HookRunner`],
//! which bounds the calls in flight and their time, so a slow or absent backend
//! costs a clear `BackendUnavailable`, never a stuck server.

mod http;
pub(crate) mod sign;

pub use http::HttpHooks;
pub use sign::{sign, signature_header, verify, SignatureError, HEADER as SIGNATURE_HEADER};

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use thiserror::Error;
use tokio::sync::Semaphore;

use crate::config::{Config, HooksConfig};
use crate::hub::SessionId;
use crate::protocol::ErrorCode;

/// Codes a backend may give a refusal instead of `Rejected`: clients receive them
/// as they are.
pub const APP_CODES: std::ops::RangeInclusive<u32> = 1000..=4999;

/// Who a hook call is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller<'a> {
    /// Namespace path, e.g. `/chat`.
    pub ns: &'a str,
    /// The user (the token's `sub`).
    pub user: &'a str,
    /// The session, unique within the server process.
    pub session: SessionId,
}

/// Why a hook did not say yes.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HookError {
    /// The backend refused: the client gets `code` and `message`.
    #[error("refused: {message}")]
    Refused {
        /// `Rejected`, or the backend's own code in [`APP_CODES`].
        code: ErrorCode,
        /// The backend's explanation, for the client.
        message: String,
    },
    /// The backend could not answer: down, too slow, too busy, or it answered
    /// something that is not a hook reply.
    #[error("backend unavailable: {0}")]
    Unavailable(String),
}

impl HookError {
    /// A refusal with `Rejected`.
    pub fn refused(message: impl Into<String>) -> Self {
        HookError::Refused {
            code: ErrorCode::Rejected,
            message: message.into(),
        }
    }

    /// A refusal with the backend's code: kept when in [`APP_CODES`], else `Rejected`.
    pub fn refused_with(code: Option<u32>, message: impl Into<String>) -> Self {
        let code = match code {
            Some(n) if APP_CODES.contains(&n) => ErrorCode::Other(n),
            _ => ErrorCode::Rejected,
        };
        HookError::Refused {
            code,
            message: message.into(),
        }
    }

    /// The code and message the client receives.
    pub fn to_client(&self) -> (ErrorCode, String) {
        match self {
            HookError::Refused { code, message } => (*code, message.clone()),
            HookError::Unavailable(why) => (
                ErrorCode::BackendUnavailable,
                format!("the application backend is unavailable: {why}"),
            ),
        }
    }
}

/// The connect hook's yes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectReply {
    /// Sent to the client in `ConnectInfo`, before `Welcome` (e.g. a display name).
    pub data: Option<Bytes>,
}

/// The join hook's yes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinReply {
    /// Whether the join may replay history (`since`); `false`: nothing replayed,
    /// `recovered: false`.
    pub history: bool,
}

impl Default for JoinReply {
    fn default() -> Self {
        JoinReply { history: true }
    }
}

/// The publish hook's yes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishReply {
    /// The body members receive instead of the client's (validation, moderation,
    /// enrichment); `None` keeps it.
    pub body: Option<Bytes>,
}

/// The application's hooks. Every method has a default that allows, so an
/// implementation writes only the ones its namespaces turn on. Calls of one
/// session's connect, join and publish come one at a time, in order.
#[async_trait]
pub trait Hooks: Send + Sync + 'static {
    /// A session passed the token checks; before `Welcome`.
    async fn connect(&self, caller: Caller<'_>) -> Result<ConnectReply, HookError> {
        let _ = caller;
        Ok(ConnectReply::default())
    }

    /// The session asks to join `room`.
    async fn join(&self, caller: Caller<'_>, room: &str) -> Result<JoinReply, HookError> {
        let _ = (caller, room);
        Ok(JoinReply::default())
    }

    /// The session publishes `body` to `room`; the application may store it here.
    async fn publish(
        &self,
        caller: Caller<'_>,
        room: &str,
        body: &Bytes,
    ) -> Result<PublishReply, HookError> {
        let _ = (caller, room, body);
        Ok(PublishReply::default())
    }

    /// The session calls `method` with `body`; the reply goes back as is.
    async fn rpc(&self, caller: Caller<'_>, method: &str, body: Bytes) -> Result<Bytes, HookError> {
        let _ = (caller, body);
        Err(HookError::refused(format!("no method {method:?}")))
    }
}

/// Hooks that allow everything (and know no RPC method).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoHooks;

#[async_trait]
impl Hooks for NoHooks {}

/// Runs a [`Hooks`] implementation within the namespace's timeout and the
/// server-wide bound on calls in flight (`limits.max_hook_calls`).
pub(crate) struct HookRunner {
    hooks: Arc<dyn Hooks>,
    permits: Arc<Semaphore>,
    max: usize,
    timeouts: HashMap<String, Duration>,
    /// Largest RPC reply sent to a client (the frame limit, less the frame's other
    /// fields).
    max_reply: usize,
}

impl std::fmt::Debug for HookRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HookRunner")
            .field("in_flight", &(self.max - self.permits.available_permits()))
            .finish_non_exhaustive()
    }
}

impl HookRunner {
    /// Runs `hooks` for the namespaces of `config`.
    pub(crate) fn new(hooks: Arc<dyn Hooks>, config: &Config) -> Self {
        let max = config.limits.max_hook_calls;
        HookRunner {
            hooks,
            permits: Arc::new(Semaphore::new(max)),
            max,
            max_reply: config.limits.max_frame.saturating_sub(64),
            timeouts: config
                .namespaces
                .iter()
                .map(|(path, ns)| (path.clone(), ns.hooks.timeout))
                .collect(),
        }
    }

    /// Calls `call` unless `max_hook_calls` are in flight, within the namespace's
    /// timeout.
    async fn run<T>(
        &self,
        ns: &str,
        call: impl std::future::Future<Output = Result<T, HookError>>,
    ) -> Result<T, HookError> {
        let Ok(_permit) = self.permits.try_acquire() else {
            return Err(HookError::Unavailable(format!(
                "{} hook calls in flight on this server",
                self.max
            )));
        };
        let timeout = self
            .timeouts
            .get(ns)
            .copied()
            .unwrap_or(HooksConfig::default().timeout);
        match tokio::time::timeout(timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(HookError::Unavailable(format!(
                "no answer within {timeout:?}"
            ))),
        }
    }

    pub(crate) async fn connect(&self, caller: Caller<'_>) -> Result<ConnectReply, HookError> {
        self.run(caller.ns, self.hooks.connect(caller)).await
    }

    pub(crate) async fn join(
        &self,
        caller: Caller<'_>,
        room: &str,
    ) -> Result<JoinReply, HookError> {
        self.run(caller.ns, self.hooks.join(caller, room)).await
    }

    pub(crate) async fn publish(
        &self,
        caller: Caller<'_>,
        room: &str,
        body: &Bytes,
    ) -> Result<PublishReply, HookError> {
        self.run(caller.ns, self.hooks.publish(caller, room, body))
            .await
    }

    pub(crate) async fn rpc(
        &self,
        caller: Caller<'_>,
        method: &str,
        body: Bytes,
    ) -> Result<Bytes, HookError> {
        let reply = self
            .run(caller.ns, self.hooks.rpc(caller, method, body))
            .await?;
        if reply.len() > self.max_reply {
            return Err(HookError::Unavailable(format!(
                "the reply of {} bytes exceeds the limit of {}",
                reply.len(),
                self.max_reply
            )));
        }
        Ok(reply)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Slow;

    #[async_trait]
    impl Hooks for Slow {
        async fn rpc(&self, _: Caller<'_>, _: &str, body: Bytes) -> Result<Bytes, HookError> {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok(body)
        }
    }

    fn caller() -> Caller<'static> {
        Caller {
            ns: "/chat",
            user: "alice",
            session: 1,
        }
    }

    #[tokio::test]
    async fn a_slow_hook_times_out_and_the_bound_holds() {
        let mut config = Config::default();
        config.limits.max_hook_calls = 2;
        config.namespaces.get_mut("/chat").unwrap().hooks.timeout = Duration::from_millis(100);
        let runner = Arc::new(HookRunner::new(Arc::new(Slow), &config));
        let calls: Vec<_> = (0..2)
            .map(|_| {
                let runner = runner.clone();
                tokio::spawn(async move { runner.rpc(caller(), "m", Bytes::new()).await })
            })
            .collect();
        tokio::task::yield_now().await;
        // The third call finds both permits taken.
        let third = runner.rpc(caller(), "m", Bytes::new()).await;
        assert!(
            matches!(&third, Err(HookError::Unavailable(m)) if m.contains("2 hook calls")),
            "{third:?}"
        );
        for call in calls {
            let result = call.await.unwrap();
            assert!(
                matches!(&result, Err(HookError::Unavailable(m)) if m.contains("no answer within 100ms")),
                "{result:?}"
            );
        }
        // Permits are back.
        assert_eq!(runner.permits.available_permits(), 2);
    }

    #[tokio::test]
    async fn defaults_allow_and_know_no_method() {
        let h = NoHooks;
        assert_eq!(h.connect(caller()).await, Ok(ConnectReply::default()));
        assert!(h.join(caller(), "lobby").await.unwrap().history);
        assert_eq!(
            h.publish(caller(), "lobby", &Bytes::new()).await,
            Ok(PublishReply::default())
        );
        let err = h.rpc(caller(), "x", Bytes::new()).await.unwrap_err();
        assert_eq!(err.to_client().0, ErrorCode::Rejected);
    }

    #[test]
    fn backend_codes_pass_only_in_the_app_range() {
        for (given, code) in [
            (None, ErrorCode::Rejected),
            (Some(3), ErrorCode::Rejected),
            (Some(999), ErrorCode::Rejected),
            (Some(1000), ErrorCode::Other(1000)),
            (Some(4999), ErrorCode::Other(4999)),
            (Some(5000), ErrorCode::Rejected),
        ] {
            assert_eq!(HookError::refused_with(given, "no").to_client().0, code);
        }
        let (code, message) = HookError::Unavailable("down".into()).to_client();
        assert_eq!(code, ErrorCode::BackendUnavailable);
        assert!(message.contains("down"), "{message}");
    }
}
