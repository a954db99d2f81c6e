//! `Hello`: version, token, namespace claim and backend health, then registration
//! and `Welcome` (PROTOCOL.md §5.1).

use std::time::Instant;

use super::{Action, Effect, Phase, Refusal, Session};
use crate::auth::Claims;
use crate::broker::BrokerHealth;
use crate::hub::{HubError, Registered};
use crate::notify::{InboxError, Notification};
use crate::protocol::{ClientFrame, ErrorCode, ServerFrame, PROTOCOL_VERSION};

impl Session {
    /// The first frame of the control stream, at `now` (`unix_secs` for the
    /// token's expiry), with the cluster backend's `health`. Accepted: the next
    /// action is [`Action::Register`]; refused: a close.
    pub(crate) fn handle_hello(
        &mut self,
        now: Instant,
        unix_secs: u64,
        frame: ClientFrame,
        health: BrokerHealth,
    ) {
        if self.phase != Phase::AwaitingHello {
            return;
        }
        if now >= self.hello_deadline {
            return self.handle_timeout(now);
        }
        let ClientFrame::Hello { version, token } = frame else {
            return self.fatal(ErrorCode::Protocol, "the first frame must be Hello");
        };
        match self.check_hello(version, &token, unix_secs, health) {
            Ok(claims) => {
                self.token = Some(super::token::TokenClock::new(now, unix_secs, &claims));
                self.claims = Some(claims);
                self.phase = Phase::Registering;
                self.actions.push_back(Action::Perform(Effect::Revocation));
            }
            Err(Refusal { code, message }) => self.fatal(code, message),
        }
    }

    fn check_hello(
        &self,
        version: u16,
        token: &str,
        unix_secs: u64,
        health: BrokerHealth,
    ) -> Result<Claims, Refusal> {
        if version != PROTOCOL_VERSION {
            return Err(Refusal::new(
                ErrorCode::UnsupportedVersion,
                format!("protocol version {version} is not supported; this server speaks {PROTOCOL_VERSION}"),
            ));
        }
        let claims = self
            .rules
            .verifier
            .verify(token, unix_secs)
            .map_err(|e| Refusal::new(ErrorCode::Unauthorized, e.to_string()))?;
        if !claims.allows_namespace(&self.ns) {
            return Err(Refusal::new(
                ErrorCode::Forbidden,
                format!("the token does not allow namespace {}", self.ns),
            ));
        }
        // Better refused now, clearly, than accepted and then failing every command.
        if let BrokerHealth::Unavailable(why) = health {
            return Err(Refusal::new(
                ErrorCode::Internal,
                format!("cluster backend unavailable: {why}"),
            ));
        }
        Ok(claims)
    }

    /// The user's revocation mark, read after the token checked out: a token
    /// issued at or before it is refused; else the session registers. Without the
    /// mark (the store failed) the session is refused: revocation must not fail open.
    pub(super) fn revocation_read(&mut self, result: Result<Option<u64>, InboxError>) {
        if self.phase != Phase::Registering {
            return;
        }
        match result {
            Ok(mark) => {
                self.revoked_until = mark;
                match self.claims.as_ref().map(|c| super::token::revoked(c, mark)) {
                    Some(Err(refusal)) => self.fatal(refusal.code, refusal.message),
                    _ => self.connect_or_register(),
                }
            }
            Err(e) => self.fatal(
                ErrorCode::Internal,
                format!("cannot check token revocation: {e}"),
            ),
        }
    }

    /// What the hub said to [`Action::Register`]: the session limits are checked
    /// there.
    pub(crate) fn registered(&mut self, result: Result<Registered, HubError>) {
        if self.phase != Phase::Registering {
            return;
        }
        match result {
            Ok(registered) => {
                self.phase = Phase::Live;
                self.registered = true;
                let ns = &self.ns_config;
                self.actions.push_back(Action::Perform(Effect::Welcome {
                    announce: registered.first_for_user && ns.online,
                    online: ns.online,
                    inbox: ns.inbox,
                }));
            }
            Err(e) => self.fatal(e.code(), e.to_string()),
        }
    }

    /// `Welcome`, then every pending notification in id order.
    pub(super) fn welcomed(
        &mut self,
        online: Option<Vec<String>>,
        pending: Option<Result<Vec<Notification>, InboxError>>,
    ) {
        if let Some(data) = self.connect_data.take() {
            self.queue_frame(&ServerFrame::ConnectInfo { data });
        }
        self.queue_frame(&ServerFrame::Welcome {
            session: self.id,
            user: self.user().to_owned(),
            max_frame: self.rules.limits.max_frame as u32,
            online,
        });
        match pending {
            None => {}
            Some(Ok(pending)) => {
                for n in pending {
                    self.last_notification = n.id;
                    self.queue_frame(&ServerFrame::Notification {
                        id: n.id,
                        kind: n.kind,
                        body: n.body,
                        ts: n.ts,
                    });
                    self.actions
                        .push_back(Action::Perform(Effect::Delivered { id: n.id }));
                }
            }
            Some(Err(e)) => {
                tracing::warn!("inbox unavailable: {e}");
                let message = format!("notification inbox unavailable: {e}");
                self.refuse(0, Refusal::new(ErrorCode::Internal, message));
            }
        }
    }
}
