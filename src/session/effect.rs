//! The work the core hands out to the hub, broker and inbox, and what comes back.
//!
//! The core decides; [`Effect::perform`] does the (async, transport-neutral) work
//! and returns an [`Outcome`] the driver feeds back with `Session::complete`. Every
//! driver shares this code; only sockets differ between them.

use std::sync::Arc;

use bytes::Bytes;

use super::Refusal;
use crate::broker::{Broker, BrokerError, PresenceChange};
use crate::hooks::{Caller, ConnectReply, HookError, HookRunner, JoinReply, PublishReply};
use crate::hub::{Hub, Outbound, Recovery, SessionId};
use crate::notify::{Inbox, InboxError, Notification};
use crate::protocol::{frame_bytes, ServerFrame, Since, ONLINE_PAGE};
use crate::webhooks::{Event, EventKind, Webhooks};

/// Backend work the core asked for.
#[derive(Debug)]
pub(crate) enum Effect {
    /// Read the user's token revocation mark (before registration).
    Revocation,
    /// Ask the connect hook (before registration).
    Connect,
    /// Ask the join hook whether the session may join.
    JoinCheck {
        /// The request.
        req: u32,
        /// Room name.
        room: String,
        /// Where the client left off.
        since: Option<Since>,
    },
    /// Ask the publish hook about a message.
    PublishCheck {
        /// The request.
        req: u32,
        /// Room name.
        room: String,
        /// Payload.
        body: Bytes,
    },
    /// Call the RPC hook beside the session's commands; the answer comes back on the
    /// session's queue ([`Outbound::RpcReply`]).
    Rpc {
        /// The request.
        req: u32,
        /// The backend method.
        method: String,
        /// Its argument.
        body: Bytes,
    },
    /// Announce the user online (when `announce`), read who is online (when
    /// `online`) and the pending notifications (when `inbox`).
    Welcome {
        /// The user's first session in the namespace, with namespace presence on.
        announce: bool,
        /// Namespace presence is on.
        online: bool,
        /// The namespace has notification inboxes.
        inbox: bool,
    },
    /// Join the room in the hub, read its recovery, announce the user in it and
    /// read its members (both when `presence`).
    Join {
        /// The request.
        req: u32,
        /// Room name.
        room: String,
        /// Where the client left off.
        since: Option<Since>,
        /// Room presence is on.
        presence: bool,
    },
    /// Publish through the broker.
    Publish {
        /// The request.
        req: u32,
        /// Room name.
        room: String,
        /// Payload.
        body: Bytes,
    },
    /// Read a page of who is online in the namespace, or of a room's members.
    Online {
        /// The request.
        req: u32,
        /// A room's members (`None`: the namespace's users).
        room: Option<String>,
        /// The page starts after this user (`None`: the first page).
        after: Option<String>,
        /// Users at most.
        limit: usize,
    },
    /// Remove a notification from the user's inbox.
    AckNotification {
        /// The request.
        req: u32,
        /// Notification id.
        id: u64,
    },
    /// Leave the room in the hub, announcing it when it was the user's last
    /// session there and `presence` is on.
    LeaveRoom {
        /// Room name.
        room: String,
        /// Room presence is on.
        presence: bool,
    },
    /// A notification was handed to the session (a webhook event).
    Delivered {
        /// Notification id.
        id: u64,
    },
    /// Leave every room and the namespace, announcing what changed.
    Depart {
        /// Room presence is on.
        presence: bool,
        /// Namespace presence is on.
        online: bool,
    },
}

/// What a joined room brought back.
#[derive(Debug)]
pub(crate) struct RoomJoin {
    /// The room's handle on this node.
    pub(crate) handle: u32,
    /// Epoch, last seq and the messages to replay.
    pub(crate) recovery: Recovery,
    /// Users in the room (empty without presence).
    pub(crate) members: Vec<String>,
}

/// The result of an [`Effect`].
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Of [`Effect::Welcome`].
    Welcome {
        /// Users online, when namespace presence is on.
        online: Option<Vec<String>>,
        /// Pending notifications, when the namespace has inboxes.
        pending: Option<Result<Vec<Notification>, InboxError>>,
    },
    /// Of [`Effect::Join`].
    Joined {
        /// The request.
        req: u32,
        /// Room name.
        room: String,
        /// As asked.
        since: Option<Since>,
        /// The room, or why not.
        result: Result<RoomJoin, Refusal>,
    },
    /// Of [`Effect::Publish`]: the seq.
    Published {
        /// The request.
        req: u32,
        /// The message's seq.
        result: Result<u64, BrokerError>,
    },
    /// Of [`Effect::Online`].
    Online {
        /// The request.
        req: u32,
        /// Users online.
        result: Result<Vec<String>, BrokerError>,
    },
    /// Of [`Effect::AckNotification`]: whether it was still there.
    Acked {
        /// The request.
        req: u32,
        /// Whether the notification was removed.
        result: Result<bool, InboxError>,
    },
    /// Of [`Effect::Revocation`]: tokens issued at or before this are revoked.
    Revocation(Result<Option<u64>, InboxError>),
    /// Of [`Effect::Connect`].
    Connected(Result<ConnectReply, HookError>),
    /// Of [`Effect::JoinCheck`].
    JoinChecked {
        /// The request.
        req: u32,
        /// Room name.
        room: String,
        /// As asked.
        since: Option<Since>,
        /// The hook's answer.
        result: Result<JoinReply, HookError>,
    },
    /// Of [`Effect::PublishCheck`].
    PublishChecked {
        /// The request.
        req: u32,
        /// Room name.
        room: String,
        /// The client's payload.
        body: Bytes,
        /// The hook's answer.
        result: Result<PublishReply, HookError>,
    },
    /// Of [`Effect::Rpc`] when it could not start (the session is gone from the hub).
    RpcFailed {
        /// The request.
        req: u32,
        /// Why.
        error: HookError,
    },
    /// Of effects that report nothing.
    Done,
}

/// Who performs effects, and for which session.
#[derive(Clone, Copy)]
pub(crate) struct Backends<'a> {
    /// Local rooms and sessions.
    pub(crate) hub: &'a Hub,
    /// Cross-node fan-out, history and presence.
    pub(crate) broker: &'a dyn Broker,
    /// Notification inboxes.
    pub(crate) inbox: &'a dyn Inbox,
    /// Namespace path.
    pub(crate) ns: &'a str,
    /// The session.
    pub(crate) id: SessionId,
    /// Its user.
    pub(crate) user: &'a str,
    /// The application backend's hooks.
    pub(crate) hooks: &'a Arc<HookRunner>,
    /// Events for the application backend.
    pub(crate) webhooks: &'a Webhooks,
}

impl Backends<'_> {
    fn event(&self, kind: EventKind) -> Event {
        Event::new(kind, self.ns, self.user, self.id)
    }

    fn emit(&self, kind: EventKind) {
        if self.webhooks.is_on() {
            self.webhooks.emit(self.event(kind));
        }
    }

    fn emit_room(&self, kind: EventKind, room: &str) {
        if self.webhooks.is_on() {
            self.webhooks.emit(self.event(kind).room(room));
        }
    }

    fn emit_notification(&self, kind: EventKind, id: u64) {
        if self.webhooks.is_on() {
            self.webhooks.emit(self.event(kind).notification(id));
        }
    }

    fn caller(&self) -> Caller<'_> {
        Caller {
            ns: self.ns,
            user: self.user,
            session: self.id,
        }
    }
}

impl Effect {
    /// Does the work. Presence announcements are best effort: a failed one never
    /// fails the command that caused it.
    pub(crate) async fn perform(self, b: Backends<'_>) -> Outcome {
        match self {
            Effect::Revocation => Outcome::Revocation(b.inbox.revoked_until(b.user).await),
            Effect::Connect => Outcome::Connected(b.hooks.connect(b.caller()).await),
            Effect::JoinCheck { req, room, since } => Outcome::JoinChecked {
                result: b.hooks.join(b.caller(), &room).await,
                req,
                room,
                since,
            },
            Effect::PublishCheck { req, room, body } => Outcome::PublishChecked {
                result: b.hooks.publish(b.caller(), &room, &body).await,
                req,
                room,
                body,
            },
            Effect::Rpc { req, method, body } => rpc(b, req, method, body),
            Effect::Welcome {
                announce,
                online,
                inbox,
            } => welcome(b, announce, online, inbox).await,
            Effect::Join {
                req,
                room,
                since,
                presence,
            } => {
                let result = join(b, &room, since, presence).await;
                Outcome::Joined {
                    req,
                    room,
                    since,
                    result,
                }
            }
            Effect::Publish { req, room, body } => Outcome::Published {
                req,
                result: b.broker.publish(b.ns, &room, b.user, body).await,
            },
            Effect::Online {
                req,
                room,
                after,
                limit,
            } => Outcome::Online {
                req,
                result: (b.broker)
                    .user_page(b.ns, room.as_deref(), after.as_deref(), limit)
                    .await,
            },
            Effect::AckNotification { req, id } => {
                let result = b.inbox.ack(b.user, id).await;
                if let Ok(true) = result {
                    b.emit_notification(EventKind::NotificationAcked, id);
                }
                Outcome::Acked { req, result }
            }
            Effect::Delivered { id } => {
                b.emit_notification(EventKind::NotificationDelivered, id);
                Outcome::Done
            }
            Effect::LeaveRoom { room, presence } => {
                if let Ok(left) = b.hub.leave_room(b.ns, &room, b.id) {
                    if left.last_for_user {
                        room_changed(b, &room, false, left.vacated, presence).await;
                    }
                }
                Outcome::Done
            }
            Effect::Depart { presence, online } => {
                depart(b, presence, online).await;
                Outcome::Done
            }
        }
    }
}

/// Starts the RPC on its own task, so the session goes on serving; its answer is
/// queued for the session like any other frame.
fn rpc(b: Backends<'_>, req: u32, method: String, body: Bytes) -> Outcome {
    let Some(tx) = b.hub.session_tx(b.ns, b.id) else {
        let error = HookError::Unavailable("the session is closing".into());
        return Outcome::RpcFailed { req, error };
    };
    let hooks = b.hooks.clone();
    let (ns, user, session) = (b.ns.to_owned(), b.user.to_owned(), b.id);
    tokio::spawn(async move {
        let caller = Caller {
            ns: &ns,
            user: &user,
            session,
        };
        let frame = match hooks.rpc(caller, &method, body).await {
            Ok(body) => ServerFrame::RpcReply { req, body },
            Err(e) => {
                let (code, message) = e.to_client();
                ServerFrame::Error { req, code, message }
            }
        };
        tx.send(Outbound::RpcReply(frame_bytes(&frame)));
    });
    Outcome::Done
}

async fn welcome(b: Backends<'_>, announce: bool, online: bool, inbox: bool) -> Outcome {
    b.emit(EventKind::SessionOpened);
    if announce {
        let _ = b.broker.online_presence(b.ns, b.user, true).await;
    }
    let online = if online {
        let first = b.broker.user_page(b.ns, None, None, ONLINE_PAGE).await;
        Some(first.unwrap_or_default())
    } else {
        None
    };
    // The session is registered before this read, so anything pushed meanwhile
    // is queued too; the core drops the overlap by id.
    let pending = if inbox {
        Some(b.inbox.pending(b.user).await)
    } else {
        None
    };
    Outcome::Welcome { online, pending }
}

async fn join(
    b: Backends<'_>,
    room: &str,
    since: Option<Since>,
    presence: bool,
) -> Result<RoomJoin, Refusal> {
    let joined = b
        .hub
        .join(b.ns, room, b.id)
        .map_err(|e| Refusal::new(e.code(), e.to_string()))?;
    // From here the hub queues the room's live frames for the session; history
    // fills in what came before, and seq numbers drop the overlap.
    let recovery = match b.broker.recover(b.ns, room, since).await {
        Ok(recovery) => recovery,
        Err(e) => {
            let _ = b.hub.leave(b.ns, room, b.id);
            // TooManyRooms for a full namespace, Internal for a broker failure.
            return Err(Refusal::new(e.code(), e.to_string()));
        }
    };
    if joined.first_for_user {
        room_changed(b, room, true, joined.created, presence).await;
    }
    let members = if presence {
        b.broker
            .user_page(b.ns, Some(room), None, ONLINE_PAGE)
            .await
            .unwrap_or_else(|_| b.hub.user_page(b.ns, Some(room), None, ONLINE_PAGE))
    } else {
        Vec::new()
    };
    Ok(RoomJoin {
        handle: joined.handle,
        recovery,
        members,
    })
}

/// The user's first session entered (`joined`) or last one left `room` on this
/// node, `here` saying whether the room got its first or lost its last member on
/// this node: tells the broker (with room presence on) and emits the webhooks of
/// what changed — cluster-wide as the broker answers in a cluster, else (a single
/// node, presence off, or the broker failed) as this node sees it.
async fn room_changed(b: Backends<'_>, room: &str, joined: bool, here: bool, presence: bool) {
    let change = if presence {
        b.broker
            .room_presence(b.ns, room, b.user, joined)
            .await
            .ok()
            .flatten()
    } else {
        None
    };
    let change = change.unwrap_or(PresenceChange {
        user: true,
        room: here,
    });
    if joined {
        if change.room {
            b.emit_room(EventKind::RoomCreated, room);
        }
        if change.user {
            b.emit_room(EventKind::RoomJoined, room);
        }
    } else {
        if change.user {
            b.emit_room(EventKind::RoomLeft, room);
        }
        if change.room {
            b.emit_room(EventKind::RoomVacated, room);
        }
    }
}

async fn depart(b: Backends<'_>, presence: bool, online: bool) {
    let gone = b.hub.unregister(b.ns, b.id);
    for (room, last) in &gone.rooms {
        if *last {
            let vacated = gone.vacated.contains(room);
            room_changed(b, room, false, vacated, presence).await;
        }
    }
    b.emit(EventKind::SessionClosed);
    if online && gone.last_for_user {
        let _ = b.broker.online_presence(b.ns, b.user, false).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::BytesMut;

    use super::*;
    use crate::broker::Local;
    use crate::config::Config;
    use crate::hub::{session_queues, Outbound, SessionLimits, SessionRx};
    use crate::notify::Embedded;
    use crate::protocol::{decode_frame, ServerFrame, DEFAULT_MAX_FRAME};

    struct World {
        hub: Arc<Hub>,
        broker: Local,
        inbox: Embedded,
        hooks: Arc<HookRunner>,
        webhooks: Webhooks,
        _dir: tempfile::TempDir,
    }

    fn world() -> World {
        let config = Config::default();
        let limits = SessionLimits {
            max_sessions: 10,
            max_sessions_per_user: 10,
        };
        let hub = Arc::new(Hub::new(
            config.namespaces.keys().map(String::as_str),
            limits,
        ));
        let dir = tempfile::tempdir().unwrap();
        World {
            broker: Local::new(hub.clone(), &config),
            inbox: Embedded::open(dir.path(), 10).unwrap(),
            hooks: Arc::new(HookRunner::new(
                Arc::new(crate::hooks::NoHooks),
                &config,
                Arc::new(crate::metrics::Metrics::default()),
            )),
            webhooks: Webhooks::off(),
            hub,
            _dir: dir,
        }
    }

    impl World {
        fn session(&self, id: SessionId, user: &str) -> SessionRx {
            let (tx, rx) = session_queues(id, user, 16, 4);
            self.hub.register("/chat", tx).unwrap();
            rx
        }

        fn backends<'a>(&'a self, id: SessionId, user: &'a str) -> Backends<'a> {
            Backends {
                hub: &self.hub,
                broker: &self.broker,
                inbox: &self.inbox,
                ns: "/chat",
                id,
                user,
                hooks: &self.hooks,
                webhooks: &self.webhooks,
            }
        }
    }

    /// The presence frames queued for a session.
    fn presence(rx: &mut SessionRx) -> Vec<ServerFrame> {
        std::iter::from_fn(|| rx.frames.try_recv().ok())
            .filter_map(|item| match item {
                Outbound::Room { frame, .. } | Outbound::Control(frame) => {
                    let mut buf = BytesMut::from(&frame[..]);
                    decode_frame(&mut buf, DEFAULT_MAX_FRAME).unwrap()
                }
                Outbound::Notification { .. } | Outbound::RpcReply(_) => None,
            })
            .collect()
    }

    fn join(room: &str) -> Effect {
        Effect::Join {
            req: 1,
            room: room.into(),
            since: None,
            presence: true,
        }
    }

    #[tokio::test]
    async fn a_join_announces_the_user_and_leaving_withdraws_it() {
        let w = world();
        let mut bob = w.session(1, "bob");
        let _alice = w.session(2, "alice");
        let _ = join("lobby").perform(w.backends(1, "bob")).await;
        let Outcome::Joined { result, .. } = join("lobby").perform(w.backends(2, "alice")).await
        else {
            panic!("a join answers Joined");
        };
        let mut members = result.unwrap().members;
        members.sort();
        assert_eq!(members, ["alice", "bob"]);
        let leave = Effect::LeaveRoom {
            room: "lobby".into(),
            presence: true,
        };
        leave.perform(w.backends(2, "alice")).await;
        assert_eq!(
            presence(&mut bob),
            [
                ServerFrame::PresenceJoin {
                    user: "alice".into()
                },
                ServerFrame::PresenceLeave {
                    user: "alice".into()
                }
            ]
        );
        assert_eq!(w.hub.room_users("/chat", "lobby"), ["bob"]);
    }

    #[tokio::test]
    async fn departing_leaves_every_room_and_the_namespace() {
        let w = world();
        let mut bob = w.session(1, "bob");
        let _alice = w.session(2, "alice");
        let _ = join("lobby").perform(w.backends(1, "bob")).await;
        let _ = join("lobby").perform(w.backends(2, "alice")).await;
        let _ = presence(&mut bob);
        let depart = Effect::Depart {
            presence: true,
            online: true,
        };
        depart.perform(w.backends(2, "alice")).await;
        assert_eq!(
            presence(&mut bob),
            [
                ServerFrame::PresenceLeave {
                    user: "alice".into()
                },
                ServerFrame::OnlineLeave {
                    user: "alice".into()
                }
            ]
        );
        assert_eq!(w.hub.online_users("/chat"), ["bob"]);
        assert_eq!(w.hub.session_count(), 1);
    }
}
