//! The session core: one session's protocol rules, without I/O and without a clock.
//!
//! A driver ([`crate::server`] for WebTransport) owns the connection and its
//! streams. It feeds this core what arrives — the client's frames and datagrams,
//! the hub's queued frames, timeouts, close requests — with the current time, and
//! performs what [`Session::poll_action`] returns: write on the control stream,
//! open or finish a room stream, run an [`Effect`] against the hub, broker or inbox
//! and report its [`Outcome`], close. Nothing here names a transport, so another
//! driver (the WebSocket fallback) plugs into the same core, and the rules are
//! tested without sockets and without sleeping.
//!
//! The delivery path stays a function call: [`Session::deliver`] takes a frame off
//! the hub's queue and says where it goes, or that it is a duplicate.

mod datagram;
mod effect;
mod hello;
mod hooks;
mod join;
mod leave;
mod notifications;
mod publish;
mod rate;
#[cfg(test)]
mod tests;
mod token;

pub(crate) use effect::{Backends, Effect, Outcome, RoomJoin};
pub use rate::TokenBucket;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tracing::{debug, warn};

use crate::auth::{Claims, TokenVerifier};
use crate::config::{Limits, NamespaceConfig};
use crate::hub::{Outbound, SessionId};
use crate::metrics::Metrics;
use crate::protocol::{frame_bytes, ClientFrame, CodecError, ErrorCode, ServerFrame, ONLINE_PAGE};
use crate::transport::ReadError;

/// Longest close reason sent to the client, in bytes (PROTOCOL.md §5.4).
const MAX_CLOSE_REASON: usize = 256;

/// What every session of a server obeys: the limits and the token check.
#[derive(Debug)]
pub(crate) struct Rules {
    /// Server-wide limits.
    pub(crate) limits: Limits,
    /// Checks `Hello` tokens.
    pub(crate) verifier: TokenVerifier,
}

/// Something the driver must do, in the order the core returns them.
#[derive(Debug)]
pub(crate) enum Action {
    /// Write this encoded frame on the control stream.
    Control(Bytes),
    /// Open the room's stream and write `head` (its `RoomStream` frame and the
    /// replayed messages) on it; report with [`Session::room_opened`].
    OpenRoom {
        /// The room's handle.
        handle: u32,
        /// Encoded frames that start the stream.
        head: Bytes,
    },
    /// Finish (FIN) the room's stream: the client left the room.
    FinishRoom {
        /// The room's handle.
        handle: u32,
    },
    /// Add the session to the hub (the driver owns the queues the hub fills);
    /// report with [`Session::registered`].
    Register,
    /// Run this against the hub, broker or inbox; report with [`Session::complete`].
    Perform(Effect),
    /// End the session with an error. Nothing follows.
    Close(Close),
    /// End the session normally (close code 0): the client finished its control
    /// stream. Nothing follows.
    End,
}

/// How a session ends with an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Close {
    /// The error code, also the close code.
    pub(crate) code: ErrorCode,
    /// Why, for the client and the logs.
    pub(crate) message: String,
    /// Written on the control stream (then finished) before the close: the
    /// `Error` or `GoAway` that explains it.
    pub(crate) frame: Option<Bytes>,
}

impl Close {
    /// The close reason: the message cut to 256 bytes on a character boundary.
    pub(crate) fn reason(&self) -> &[u8] {
        self.reason_within(MAX_CLOSE_REASON).as_bytes()
    }

    /// The message cut to `max` bytes on a character boundary (a WebSocket close
    /// reason takes 123).
    pub(crate) fn reason_within(&self, max: usize) -> &str {
        let mut end = self.message.len().min(max);
        while !self.message.is_char_boundary(end) {
            end -= 1;
        }
        &self.message[..end]
    }
}

/// Where a frame from the hub's queue goes.
#[derive(Debug)]
pub(crate) enum Write {
    /// On the control stream.
    Control(Bytes),
    /// On the stream of room `handle`.
    Room {
        /// The room's handle.
        handle: u32,
        /// The encoded frame.
        frame: Bytes,
        /// For a message: when it was published (delivery metrics).
        published: Option<Instant>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the client to open its control stream.
    Accepted,
    /// The control stream is open; waiting for `Hello`.
    AwaitingHello,
    /// `Hello` accepted; the hub is registering the session.
    Registering,
    /// Registered: commands are served.
    Live,
    /// A close was decided; everything else is ignored.
    Closed,
}

/// A joined room.
#[derive(Debug)]
struct Room {
    name: String,
    /// Highest message seq handed out, to drop live copies of replayed messages.
    last_seq: u64,
    /// The session gets the room's presence events (the join hook may say no).
    presence: bool,
}

/// A request that failed without ending the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    code: ErrorCode,
    message: String,
}

impl Refusal {
    /// A refusal with this code and message.
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Refusal {
            code,
            message: message.into(),
        }
    }
}

/// The state of one session.
#[derive(Debug)]
pub(crate) struct Session {
    id: SessionId,
    ns: String,
    ns_config: NamespaceConfig,
    rules: Arc<Rules>,
    metrics: Arc<Metrics>,
    phase: Phase,
    hello_deadline: Instant,
    claims: Option<Claims>,
    /// When the token expires (from `Hello` on).
    token: Option<token::TokenClock>,
    /// Tokens of this user issued at or before this (unix seconds) are revoked.
    revoked_until: Option<u64>,
    /// The hub holds the session: it must leave it when it ends.
    registered: bool,
    /// Joined rooms by name → handle.
    rooms: HashMap<String, u32>,
    /// Joined rooms by handle.
    handles: HashMap<u32, Room>,
    /// A join waiting for its room stream to open; boxed so idle sessions stay small.
    opening: Option<Box<join::Opening>>,
    publish_bucket: TokenBucket,
    datagram_bucket: TokenBucket,
    /// Join, Leave, Online, AckNotification, Refresh and Rpc: each costs the server
    /// a hub, broker or backend round (and a join may create a room), so they share
    /// a rate.
    command_bucket: TokenBucket,
    /// Highest notification id written, to skip live copies of inbox ones.
    last_notification: u64,
    /// What the connect hook attached, sent as `ConnectInfo` before `Welcome`.
    connect_data: Option<Bytes>,
    /// RPCs started and not answered yet.
    rpcs_in_flight: usize,
    /// The room being joined without presence, as the join hook said.
    join_without_presence: Option<String>,
    actions: VecDeque<Action>,
}

impl Session {
    /// A session accepted on namespace `ns` at `now`.
    pub(crate) fn new(
        id: SessionId,
        ns: String,
        ns_config: NamespaceConfig,
        rules: Arc<Rules>,
        metrics: Arc<Metrics>,
        now: Instant,
    ) -> Self {
        let limits = &rules.limits;
        Session {
            id,
            ns,
            ns_config,
            phase: Phase::Accepted,
            hello_deadline: now + limits.hello_timeout,
            claims: None,
            token: None,
            revoked_until: None,
            registered: false,
            rooms: HashMap::new(),
            handles: HashMap::new(),
            opening: None,
            publish_bucket: TokenBucket::new(limits.publish_rate, limits.publish_burst, now),
            datagram_bucket: TokenBucket::new(limits.datagram_rate, limits.datagram_burst, now),
            command_bucket: TokenBucket::new(limits.command_rate, limits.command_burst, now),
            last_notification: 0,
            connect_data: None,
            rpcs_in_flight: 0,
            join_without_presence: None,
            actions: VecDeque::new(),
            rules,
            metrics,
        }
    }

    /// The session id.
    pub(crate) fn id(&self) -> SessionId {
        self.id
    }

    /// The namespace path.
    pub(crate) fn ns(&self) -> &str {
        &self.ns
    }

    /// The user, once `Hello` was accepted; empty before.
    pub(crate) fn user(&self) -> &str {
        self.claims.as_ref().map_or("", |c| c.sub.as_str())
    }

    /// Whether the namespace takes datagrams from clients at all.
    pub(crate) fn accepts_datagrams(&self) -> bool {
        self.ns_config.datagrams
    }

    /// The next thing to do, if any.
    pub(crate) fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) is due: the hello deadline
    /// until the session is registered, then the token's expiry.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Accepted | Phase::AwaitingHello => Some(self.hello_deadline),
            Phase::Registering | Phase::Live => self.token.map(|t| t.expires),
            Phase::Closed => None,
        }
    }

    /// Closes with `HelloTimeout` when `Hello` has not arrived by the deadline, and
    /// with `TokenExpired` when a live session's token has expired.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        self.check_expiry(now);
        if now < self.hello_deadline {
            return;
        }
        match self.phase {
            Phase::Accepted => self.fatal(ErrorCode::HelloTimeout, "no control stream"),
            Phase::AwaitingHello => {
                let timeout = self.rules.limits.hello_timeout;
                self.fatal(
                    ErrorCode::HelloTimeout,
                    format!("no Hello within {timeout:?}"),
                )
            }
            _ => {}
        }
    }

    /// The client opened its control stream.
    pub(crate) fn control_opened(&mut self) {
        if self.phase == Phase::Accepted {
            self.phase = Phase::AwaitingHello;
        }
    }

    /// A frame from the control stream of a registered session.
    pub(crate) fn handle_frame(&mut self, now: Instant, frame: ClientFrame) {
        self.check_expiry(now);
        if self.phase != Phase::Live {
            return;
        }
        if let ClientFrame::Join { req, .. }
        | ClientFrame::Leave { req, .. }
        | ClientFrame::Online { req }
        | ClientFrame::OnlinePage { req, .. }
        | ClientFrame::MembersPage { req, .. }
        | ClientFrame::AckNotification { req, .. }
        | ClientFrame::Refresh { req, .. }
        | ClientFrame::Rpc { req, .. } = &frame
        {
            if !self.command_bucket.try_take(now) {
                let limits = &self.rules.limits;
                let message = format!(
                    "more than {} joins, leaves, online lists, acks, refreshes and RPCs per second (burst {})",
                    limits.command_rate, limits.command_burst
                );
                return self.refuse(*req, Refusal::new(ErrorCode::RateLimited, message));
            }
        }
        match frame {
            ClientFrame::Hello { .. } => {
                self.fatal(ErrorCode::Protocol, "Hello was already received")
            }
            ClientFrame::Join { req, room, since } => self.join(req, room, since),
            ClientFrame::Leave { req, room } => self.leave(req, room),
            ClientFrame::Publish { req, room, body } => self.publish(now, req, room, body),
            ClientFrame::Online { req } => self.online(req, None, ONLINE_PAGE as u32),
            ClientFrame::OnlinePage { req, after, limit } => self.online(req, Some(after), limit),
            ClientFrame::MembersPage {
                req,
                room,
                after,
                limit,
            } => self.members(req, room, after, limit),
            ClientFrame::AckNotification { req, id } => self.ack_notification(req, id),
            ClientFrame::Refresh { req, token } => self.refresh(now, req, &token),
            ClientFrame::Rpc { req, method, body } => self.rpc(req, method, body),
        }
    }

    /// The control stream did not yield a frame. Unknown commands are skipped
    /// once the session is live; everything else is fatal.
    pub(crate) fn handle_read_error(&mut self, e: &ReadError) {
        let code = match e {
            ReadError::Codec(CodecError::UnknownVariant(tag)) if self.phase == Phase::Live => {
                let message = format!("unknown command type {tag}");
                return self.refuse(0, Refusal::new(ErrorCode::UnknownCommand, message));
            }
            ReadError::Codec(CodecError::UnknownVariant(_)) => ErrorCode::UnknownCommand,
            ReadError::Codec(CodecError::TooLarge { .. }) => ErrorCode::FrameTooLarge,
            ReadError::Io(_) if self.phase == Phase::Live => {
                // The client reset its control stream but kept the connection:
                // without a control stream the session is over.
                debug!("control stream failed: {e}");
                return self.abort(ErrorCode::Protocol, "the control stream was reset");
            }
            _ => ErrorCode::Protocol,
        };
        self.fatal(code, e.to_string());
    }

    /// The client finished its control stream: a normal closure.
    pub(crate) fn control_finished(&mut self) {
        if self.phase == Phase::Closed {
            return;
        }
        self.phase = Phase::Closed;
        self.actions.clear();
        self.actions.push_back(Action::End);
    }

    /// The client stopped reading the control stream (a write failed).
    pub(crate) fn control_stopped(&mut self) {
        self.abort(ErrorCode::Protocol, "the control stream was stopped");
    }

    /// Something outside asked the session to close: the hub (`SlowConsumer`, a
    /// backend's disconnect) or the server's shutdown (`GoingAway`).
    pub(crate) fn close_requested(&mut self, code: ErrorCode) {
        let message = match code {
            ErrorCode::SlowConsumer => "outbound queue full: the client does not read fast enough",
            ErrorCode::GoingAway => "server shutting down",
            _ => "closed by the server",
        };
        self.fatal(code, message);
    }

    /// Takes a frame off the hub's queue: where to write it, or `None` for a
    /// duplicate (a message already replayed, a notification already sent from
    /// the inbox) or a room no longer joined.
    pub(crate) fn deliver(&mut self, item: Outbound) -> Option<Write> {
        match item {
            Outbound::Control(frame) => Some(Write::Control(frame)),
            Outbound::RpcReply(frame) => {
                self.rpc_answered();
                Some(Write::Control(frame))
            }
            Outbound::Notification { id, frame } => {
                let new = self.take_notification(id);
                if new {
                    self.actions
                        .push_back(Action::Perform(Effect::Delivered { id }));
                }
                new.then_some(Write::Control(frame))
            }
            Outbound::Room {
                handle,
                seq,
                frame,
                published,
            } => {
                let room = self.handles.get_mut(&handle)?;
                if seq == 0 {
                    // Presence events, unless the join hook said no.
                    if !room.presence {
                        return None;
                    }
                    return Some(Write::Room {
                        handle,
                        frame,
                        published: None,
                    });
                }
                if seq <= room.last_seq {
                    return None;
                }
                room.last_seq = seq;
                Some(Write::Room {
                    handle,
                    frame,
                    published: Some(published),
                })
            }
        }
    }

    /// Reports what an [`Effect`] produced.
    pub(crate) fn complete(&mut self, outcome: Outcome) {
        if self.phase == Phase::Closed {
            return;
        }
        match outcome {
            Outcome::Revocation(result) => self.revocation_read(result),
            Outcome::Connected(result) => self.connected(result),
            Outcome::JoinChecked {
                req,
                room,
                since,
                result,
            } => self.join_hooked(req, room, since, result),
            Outcome::PublishChecked {
                req,
                room,
                body,
                result,
            } => self.publish_hooked(req, room, body, result),
            Outcome::RpcFailed { req, error } => self.rpc_failed(req, error),
            Outcome::Welcome { online, pending } => self.welcomed(online, pending),
            Outcome::Joined {
                req,
                room,
                since,
                result,
            } => self.joined(req, room, since, result),
            Outcome::Published { req, result } => self.published(req, result),
            Outcome::Online { req, result } => self.online_done(req, result),
            Outcome::Acked { req, result } => self.acked(req, result),
            Outcome::Done => {}
        }
    }

    /// The effect that leaves every room and the namespace, once the session has
    /// ended; `None` when it never was registered.
    pub(crate) fn departure(&self) -> Option<Effect> {
        self.registered.then_some(Effect::Depart {
            presence: self.ns_config.presence,
            online: self.ns_config.online,
        })
    }

    fn queue_frame(&mut self, frame: &ServerFrame) {
        self.actions.push_back(Action::Control(frame_bytes(frame)));
    }

    /// Answers request `req` (0: none) with an `Error`; the session goes on.
    fn refuse(&mut self, req: u32, refusal: Refusal) {
        let Refusal { code, message } = refusal;
        debug!(req, %code, message, "request refused");
        self.metrics.error(code);
        self.queue_frame(&ServerFrame::Error { req, code, message });
    }

    /// Ends the session with `code`, explaining it on the control stream when
    /// there is one (`GoAway` for a shutdown, `Error` otherwise).
    fn fatal(&mut self, code: ErrorCode, message: impl Into<String>) {
        let message = message.into();
        let frame = match (self.phase, code) {
            (Phase::Accepted, _) => None,
            (_, ErrorCode::GoingAway) => Some(frame_bytes(&ServerFrame::GoAway {
                message: message.clone(),
            })),
            _ => Some(frame_bytes(&ServerFrame::Error {
                req: 0,
                code,
                message: message.clone(),
            })),
        };
        self.end(code, message, frame);
    }

    /// Ends the session with `code` without a frame: the control stream is gone.
    fn abort(&mut self, code: ErrorCode, message: &str) {
        self.end(code, message.to_owned(), None);
    }

    fn end(&mut self, code: ErrorCode, message: String, frame: Option<Bytes>) {
        if self.phase == Phase::Closed {
            return;
        }
        if code == ErrorCode::SlowConsumer || code == ErrorCode::Protocol {
            warn!(%code, message, "closing session");
        } else {
            debug!(%code, message, "closing session");
        }
        self.metrics.error(code);
        self.phase = Phase::Closed;
        // What was still queued is moot once the session closes.
        self.actions.clear();
        self.actions.push_back(Action::Close(Close {
            code,
            message,
            frame,
        }));
    }
}
