//! The application backend's say (PROTOCOL.md §17): the connect hook between the
//! token checks and registration, the join and publish hooks before the hub and
//! broker, and `Rpc`, which runs beside the session's other commands.

use bytes::Bytes;

use super::{Action, Effect, Phase, Refusal, Session};
use crate::config::OnUnavailable;
use crate::hooks::{ConnectReply, HookError, JoinReply, PublishReply};
use crate::protocol::{ErrorCode, Since};

/// Longest RPC method name, in bytes.
pub(super) const MAX_METHOD: usize = 128;

/// What to do after a hook call.
enum Verdict<T> {
    /// The backend said yes.
    Yes(T),
    /// The backend is unavailable and the namespace goes ahead without it.
    Anyway,
    /// Refused, or unavailable and the namespace refuses then.
    No(Refusal),
}

impl Session {
    fn verdict<T>(&self, result: Result<T, HookError>) -> Verdict<T> {
        match result {
            Ok(yes) => Verdict::Yes(yes),
            Err(HookError::Unavailable(why))
                if self.ns_config.hooks.on_unavailable == OnUnavailable::Allow =>
            {
                tracing::warn!(ns = self.ns, "backend hook unavailable, going ahead: {why}");
                Verdict::Anyway
            }
            Err(e) => {
                if let HookError::Unavailable(why) = &e {
                    tracing::warn!(ns = self.ns, "backend hook unavailable: {why}");
                }
                let (code, message) = e.to_client();
                Verdict::No(Refusal::new(code, message))
            }
        }
    }

    /// The token checked out and is not revoked: ask the connect hook, or register.
    pub(super) fn connect_or_register(&mut self) {
        if self.ns_config.hooks.connect {
            self.actions.push_back(Action::Perform(Effect::Connect));
        } else {
            self.actions.push_back(Action::Register);
        }
    }

    pub(super) fn connected(&mut self, result: Result<ConnectReply, HookError>) {
        if self.phase != Phase::Registering {
            return;
        }
        match self.verdict(result) {
            Verdict::Yes(reply) => {
                self.connect_data = reply.data;
                self.actions.push_back(Action::Register);
            }
            Verdict::Anyway => self.actions.push_back(Action::Register),
            Verdict::No(Refusal { code, message }) => self.fatal(code, message),
        }
    }

    /// A join passed the session's own checks: ask the join hook, or join.
    pub(super) fn join_checked_locally(&mut self, req: u32, room: String, since: Option<Since>) {
        let effect = if self.ns_config.hooks.join {
            Effect::JoinCheck { req, room, since }
        } else {
            self.join_effect(req, room, since)
        };
        self.actions.push_back(Action::Perform(effect));
    }

    fn join_effect(&self, req: u32, room: String, since: Option<Since>) -> Effect {
        Effect::Join {
            req,
            room,
            since,
            presence: self.ns_config.presence,
        }
    }

    pub(super) fn join_hooked(
        &mut self,
        req: u32,
        room: String,
        since: Option<Since>,
        result: Result<JoinReply, HookError>,
    ) {
        let since = match self.verdict(result) {
            Verdict::Yes(JoinReply { history: false }) => None,
            Verdict::Yes(_) | Verdict::Anyway => since,
            Verdict::No(refusal) => return self.refuse(req, refusal),
        };
        let effect = self.join_effect(req, room, since);
        self.actions.push_back(Action::Perform(effect));
    }

    /// A publish passed the session's own checks: ask the publish hook, or publish.
    pub(super) fn publish_checked_locally(&mut self, req: u32, room: String, body: Bytes) {
        let effect = if self.ns_config.hooks.publish {
            Effect::PublishCheck { req, room, body }
        } else {
            Effect::Publish { req, room, body }
        };
        self.actions.push_back(Action::Perform(effect));
    }

    pub(super) fn publish_hooked(
        &mut self,
        req: u32,
        room: String,
        body: Bytes,
        result: Result<PublishReply, HookError>,
    ) {
        let body = match self.verdict(result) {
            Verdict::Yes(PublishReply { body: Some(new) }) => new,
            Verdict::Yes(_) | Verdict::Anyway => body,
            Verdict::No(refusal) => return self.refuse(req, refusal),
        };
        // The replacement must fit a frame like any message (its other fields
        // take the rest).
        let max = self.rules.limits.max_frame.saturating_sub(512);
        if body.len() > max {
            let message = format!(
                "the publish hook's body of {} bytes exceeds the limit of {max}",
                body.len()
            );
            return self.refuse(req, Refusal::new(ErrorCode::BackendUnavailable, message));
        }
        self.actions
            .push_back(Action::Perform(Effect::Publish { req, room, body }));
    }

    /// `Rpc`: the namespace serves RPCs, the method name is sane and the session
    /// is within its RPCs in flight.
    pub(super) fn rpc(&mut self, req: u32, method: String, body: Bytes) {
        let hooks = &self.ns_config.hooks;
        if !hooks.rpc {
            let message = format!("{} has no RPC hook", self.ns);
            return self.refuse(req, Refusal::new(ErrorCode::Forbidden, message));
        }
        if method.is_empty() || method.len() > MAX_METHOD || method.chars().any(char::is_control) {
            let message =
                format!("an RPC method name is 1 to {MAX_METHOD} bytes without control characters");
            return self.refuse(req, Refusal::new(ErrorCode::Rejected, message));
        }
        if self.rpcs_in_flight >= hooks.max_rpcs_per_session {
            let message = format!(
                "{} RPCs of this session are in flight already",
                hooks.max_rpcs_per_session
            );
            return self.refuse(req, Refusal::new(ErrorCode::BackendUnavailable, message));
        }
        self.rpcs_in_flight += 1;
        self.actions
            .push_back(Action::Perform(Effect::Rpc { req, method, body }));
    }

    /// An RPC answered (its frame is on its way to the client).
    pub(super) fn rpc_answered(&mut self) {
        self.rpcs_in_flight = self.rpcs_in_flight.saturating_sub(1);
    }

    pub(super) fn rpc_failed(&mut self, req: u32, error: HookError) {
        self.rpc_answered();
        let (code, message) = error.to_client();
        self.refuse(req, Refusal::new(code, message));
    }
}
