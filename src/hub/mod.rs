//! The in-process core: namespaces, rooms, membership and presence of the sessions on
//! this node, and fan-out of encoded frames to their queues.
//!
//! No I/O and no clock: the hub only moves `Bytes` into bounded queues. What crosses
//! nodes (sequence numbers, history, cluster presence) belongs to the broker, which
//! calls the `deliver_*` methods here.

mod history;
mod names;
mod outbox;
mod presence;

pub use history::{History, Recovery};
pub use names::{validate_room_name, RoomNameError};
pub use outbox::{
    bounded_queues, session_queues, Closer, FrameQueue, Outbound, QueueLimits, QueuedBytes, Sent,
    SessionId, SessionRx, SessionTx,
};
pub use presence::{Change, Churn, UserCounts};

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use thiserror::Error;

use crate::protocol::{encode_datagram, frame_bytes, Datagram, ErrorCode, ServerFrame};

/// Why the hub refused a session or a join.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum HubError {
    /// The namespace is not configured.
    #[error("unknown namespace {0}")]
    UnknownNamespace(String),
    /// The server holds as many sessions as allowed.
    #[error("the server is full ({0} sessions)")]
    ServerFull(usize),
    /// The user holds as many sessions as allowed.
    #[error("user has {0} sessions already")]
    TooManyUserSessions(usize),
    /// The session is already in the room.
    #[error("already joined")]
    AlreadyJoined,
    /// The session is not in the room.
    #[error("not joined")]
    NotJoined,
}

impl HubError {
    /// The wire error code for this refusal.
    pub fn code(&self) -> ErrorCode {
        match self {
            HubError::UnknownNamespace(_) => ErrorCode::Forbidden,
            HubError::ServerFull(_) | HubError::TooManyUserSessions(_) => {
                ErrorCode::TooManySessions
            }
            HubError::AlreadyJoined => ErrorCode::AlreadyJoined,
            HubError::NotJoined => ErrorCode::NotJoined,
        }
    }
}

/// Session limits the hub enforces at registration.
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    /// Sessions on this node.
    pub max_sessions: usize,
    /// Sessions of one user on this node.
    pub max_sessions_per_user: usize,
}

/// Result of registering a session in its namespace.
#[derive(Debug, PartialEq, Eq)]
pub struct Registered {
    /// The user had no other session in the namespace on this node.
    pub first_for_user: bool,
}

/// Result of a join.
#[derive(Debug, PartialEq, Eq)]
pub struct JoinedRoom {
    /// The room's handle on this node.
    pub handle: u32,
    /// The user had no other session in the room on this node.
    pub first_for_user: bool,
    /// The room had no member on this node before.
    pub created: bool,
}

/// Result of leaving a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Left {
    /// It was the user's last session in the room on this node.
    pub last_for_user: bool,
    /// The room has no member left on this node.
    pub vacated: bool,
}

/// What a session leaving its namespace left behind.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Unregistered {
    /// Rooms the session was in, with whether it was its user's last session there.
    pub rooms: Vec<(String, bool)>,
    /// Rooms it left without a member on this node.
    pub vacated: Vec<String>,
    /// It was the user's last session in the namespace on this node.
    pub last_for_user: bool,
}

/// Counters of what the hub had to drop.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HubStats {
    /// Reliable frames dropped because a session's queue was full (it is closed).
    pub frames_dropped: u64,
    /// Datagrams dropped because a session's datagram queue was full.
    pub datagrams_dropped: u64,
    /// Room presence frames queued (single changes and batches).
    pub presence_frames: u64,
}

/// Rooms and sessions of every namespace on this node.
#[derive(Debug)]
pub struct Hub {
    limits: SessionLimits,
    /// How long a churning room's presence changes are held to go out together;
    /// zero sends each at once.
    presence_window: Duration,
    frames_dropped: AtomicU64,
    datagrams_dropped: AtomicU64,
    presence_frames: AtomicU64,
    // A std mutex: every critical section is short and synchronous (try_send into
    // bounded queues), and it is never held across an `.await`.
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    namespaces: HashMap<String, Namespace>,
    sessions: usize,
    user_sessions: HashMap<Arc<str>, usize>,
    next_handle: u32,
    /// Rooms holding presence changes, as (namespace, room).
    churning: HashSet<(String, String)>,
}

#[derive(Debug, Default)]
struct Namespace {
    sessions: HashMap<SessionId, SessionTx>,
    online: UserCounts,
    rooms: HashMap<String, Room>,
    /// Rooms each session is in.
    joined: HashMap<SessionId, Vec<String>>,
}

#[derive(Debug)]
struct Room {
    handle: u32,
    members: HashMap<SessionId, SessionTx>,
    users: UserCounts,
    churn: Churn,
}

impl Hub {
    /// A hub serving the given namespace paths.
    pub fn new<'a>(namespaces: impl IntoIterator<Item = &'a str>, limits: SessionLimits) -> Self {
        let namespaces = namespaces
            .into_iter()
            .map(|ns| (ns.to_owned(), Namespace::default()))
            .collect();
        Hub {
            limits,
            presence_window: Duration::ZERO,
            frames_dropped: AtomicU64::new(0),
            datagrams_dropped: AtomicU64::new(0),
            presence_frames: AtomicU64::new(0),
            state: Mutex::new(State {
                namespaces,
                next_handle: 1,
                ..State::default()
            }),
        }
    }

    /// Holds a churning room's presence changes for `window` so its members get
    /// them in one `PresenceBatch` ([`Churn`]); zero (the default) sends each at once.
    pub fn with_presence_window(mut self, window: Duration) -> Self {
        self.presence_window = window;
        self
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps half-updated in a way
        // that matters more than losing every session, so keep serving.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a session to its namespace, enforcing the session limits.
    pub fn register(&self, ns: &str, tx: SessionTx) -> Result<Registered, HubError> {
        let mut st = self.lock();
        if st.sessions >= self.limits.max_sessions {
            return Err(HubError::ServerFull(st.sessions));
        }
        let per_user = st.user_sessions.get(&tx.user).copied().unwrap_or(0);
        if per_user >= self.limits.max_sessions_per_user {
            return Err(HubError::TooManyUserSessions(per_user));
        }
        let space = st
            .namespaces
            .get_mut(ns)
            .ok_or_else(|| HubError::UnknownNamespace(ns.to_owned()))?;
        let first_for_user = space.online.add(&tx.user);
        let user = tx.user.clone();
        space.sessions.insert(tx.id, tx);
        st.sessions += 1;
        *st.user_sessions.entry(user).or_insert(0) += 1;
        Ok(Registered { first_for_user })
    }

    /// Removes a session from its namespace and every room it was in.
    pub fn unregister(&self, ns: &str, id: SessionId) -> Unregistered {
        let mut st = self.lock();
        let Some(space) = st.namespaces.get_mut(ns) else {
            return Unregistered::default();
        };
        let Some(tx) = space.sessions.remove(&id) else {
            return Unregistered::default();
        };
        let mut out = Unregistered::default();
        for room in space.joined.remove(&id).unwrap_or_default() {
            if let Some(left) = remove_member(&mut space.rooms, &room, &tx) {
                if left.vacated {
                    out.vacated.push(room.clone());
                }
                out.rooms.push((room, left.last_for_user));
            }
        }
        out.last_for_user = space.online.remove(&tx.user);
        st.sessions -= 1;
        if let Some(n) = st.user_sessions.get_mut(&tx.user) {
            *n -= 1;
            if *n == 0 {
                st.user_sessions.remove(&tx.user);
            }
        }
        out
    }

    /// The queue of session `id` in namespace `ns`, while it is registered.
    pub fn session_tx(&self, ns: &str, id: SessionId) -> Option<SessionTx> {
        let st = self.lock();
        st.namespaces.get(ns)?.sessions.get(&id).cloned()
    }

    /// Adds a registered session to a room; from now on it receives the room's frames.
    pub fn join(&self, ns: &str, room: &str, id: SessionId) -> Result<JoinedRoom, HubError> {
        let mut st = self.lock();
        let st = &mut *st;
        let space = st
            .namespaces
            .get_mut(ns)
            .ok_or_else(|| HubError::UnknownNamespace(ns.to_owned()))?;
        let tx = space.sessions.get(&id).ok_or(HubError::NotJoined)?.clone();
        let joined = space.joined.entry(id).or_default();
        if joined.iter().any(|r| r == room) {
            return Err(HubError::AlreadyJoined);
        }
        joined.push(room.to_owned());
        let next_handle = &mut st.next_handle;
        let created = !space.rooms.contains_key(room);
        let entry = space.rooms.entry(room.to_owned()).or_insert_with(|| {
            let handle = *next_handle;
            *next_handle = next_handle.wrapping_add(1).max(1);
            Room {
                handle,
                members: HashMap::new(),
                users: UserCounts::default(),
                churn: Churn::default(),
            }
        });
        let first_for_user = entry.users.add(&tx.user);
        entry.members.insert(id, tx);
        Ok(JoinedRoom {
            handle: entry.handle,
            first_for_user,
            created,
        })
    }

    /// Removes a session from a room; `Ok(true)` when it was its user's last session there.
    pub fn leave(&self, ns: &str, room: &str, id: SessionId) -> Result<bool, HubError> {
        self.leave_room(ns, room, id).map(|l| l.last_for_user)
    }

    /// Removes a session from a room, saying what changed.
    pub fn leave_room(&self, ns: &str, room: &str, id: SessionId) -> Result<Left, HubError> {
        let mut st = self.lock();
        let space = st.namespaces.get_mut(ns).ok_or(HubError::NotJoined)?;
        let tx = space.sessions.get(&id).ok_or(HubError::NotJoined)?.clone();
        let joined = space.joined.get_mut(&id).ok_or(HubError::NotJoined)?;
        let at = joined
            .iter()
            .position(|r| r == room)
            .ok_or(HubError::NotJoined)?;
        joined.swap_remove(at);
        remove_member(&mut space.rooms, room, &tx).ok_or(HubError::NotJoined)
    }

    /// Users in a room on this node.
    pub fn room_users(&self, ns: &str, room: &str) -> Vec<String> {
        let st = self.lock();
        st.namespaces
            .get(ns)
            .and_then(|s| s.rooms.get(room))
            .map(|r| r.users.users())
            .unwrap_or_default()
    }

    /// Users online in a namespace on this node.
    pub fn online_users(&self, ns: &str) -> Vec<String> {
        let st = self.lock();
        st.namespaces
            .get(ns)
            .map(|s| s.online.users())
            .unwrap_or_default()
    }

    /// A page of the users online in a namespace on this node, or of a room's
    /// members with `room`: after `after`, at most `limit`; the lock is held for
    /// the page only, not for every user.
    pub fn user_page(
        &self,
        ns: &str,
        room: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Vec<String> {
        let st = self.lock();
        let Some(space) = st.namespaces.get(ns) else {
            return Vec::new();
        };
        match room {
            None => space.online.page(after, limit),
            Some(room) => space
                .rooms
                .get(room)
                .map(|r| r.users.page(after, limit))
                .unwrap_or_default(),
        }
    }

    /// The room's handle on this node, if anyone here is in it.
    pub fn room_handle(&self, ns: &str, room: &str) -> Option<u32> {
        let st = self.lock();
        st.namespaces.get(ns)?.rooms.get(room).map(|r| r.handle)
    }

    /// Sessions on this node.
    pub fn session_count(&self) -> usize {
        self.lock().sessions
    }

    /// Rooms with members on this node.
    pub fn room_count(&self) -> usize {
        self.lock().namespaces.values().map(|s| s.rooms.len()).sum()
    }

    /// What was dropped so far.
    pub fn stats(&self) -> HubStats {
        HubStats {
            frames_dropped: self.frames_dropped.load(Ordering::Relaxed),
            datagrams_dropped: self.datagrams_dropped.load(Ordering::Relaxed),
            presence_frames: self.presence_frames.load(Ordering::Relaxed),
        }
    }

    /// Fans an encoded `Message` frame out to the room's members; `published` is
    /// when the message was accepted.
    pub fn deliver_message(
        &self,
        ns: &str,
        room: &str,
        seq: u64,
        frame: &Bytes,
        published: Instant,
    ) -> usize {
        self.with_room(ns, room, |r| {
            let item = Outbound::Room {
                handle: r.handle,
                seq,
                frame: frame.clone(),
                published,
            };
            self.fan_out(r.members.values(), |_| true, &item)
        })
    }

    /// Tells the room's members of other users that `user` entered or left it at
    /// `now`: at once in a calm room, else in the room's next batch
    /// ([`flush_presence`](Self::flush_presence)). Returns the frames queued.
    pub fn deliver_presence(
        &self,
        ns: &str,
        room: &str,
        user: &str,
        joined: bool,
        now: Instant,
    ) -> usize {
        let mut st = self.lock();
        let Some(r) = st
            .namespaces
            .get_mut(ns)
            .and_then(|s| s.rooms.get_mut(room))
        else {
            return 0;
        };
        if r.churn.change(user, joined, now, self.presence_window) == Change::Held {
            st.churning.insert((ns.to_owned(), room.to_owned()));
            return 0;
        }
        let frame = frame_bytes(&if joined {
            ServerFrame::PresenceJoin { user: user.into() }
        } else {
            ServerFrame::PresenceLeave { user: user.into() }
        });
        let item = Outbound::Room {
            handle: r.handle,
            seq: 0,
            frame,
            published: now,
        };
        let sent = self.fan_out(r.members.values(), |tx| &*tx.user != user, &item);
        self.presence_frames
            .fetch_add(sent as u64, Ordering::Relaxed);
        sent
    }

    /// Sends the presence batches that are due at `now`: one `PresenceBatch` per
    /// member of each churning room (without the member's own changes). Returns
    /// the frames queued.
    pub fn flush_presence(&self, now: Instant) -> usize {
        let mut st = self.lock();
        if st.churning.is_empty() {
            return 0;
        }
        let State {
            namespaces,
            churning,
            ..
        } = &mut *st;
        let mut sent = 0;
        churning.retain(|(ns, room)| {
            let Some(r) = namespaces.get_mut(ns).and_then(|s| s.rooms.get_mut(room)) else {
                return false; // the room emptied meanwhile
            };
            let Some((joins, leaves)) = r.churn.due(now) else {
                return r.churn.deadline().is_some();
            };
            sent += self.send_batch(r, &joins, &leaves, now);
            false
        });
        self.presence_frames
            .fetch_add(sent as u64, Ordering::Relaxed);
        sent
    }

    /// One batch to every member; a member whose own user is in it gets it
    /// without that user (nobody is told of themselves).
    fn send_batch(&self, r: &Room, joins: &[String], leaves: &[String], now: Instant) -> usize {
        if joins.is_empty() && leaves.is_empty() {
            return 0;
        }
        let batch = |skip: Option<&str>| {
            let keep = |users: &[String]| -> Vec<String> {
                users
                    .iter()
                    .filter(|u| Some(u.as_str()) != skip)
                    .cloned()
                    .collect()
            };
            let (joins, leaves) = (keep(joins), keep(leaves));
            (!joins.is_empty() || !leaves.is_empty()).then(|| Outbound::Room {
                handle: r.handle,
                seq: 0,
                frame: frame_bytes(&ServerFrame::PresenceBatch { joins, leaves }),
                published: now,
            })
        };
        let involved = |user: &str| {
            joins.binary_search_by(|u| u.as_str().cmp(user)).is_ok()
                || leaves.binary_search_by(|u| u.as_str().cmp(user)).is_ok()
        };
        let Some(shared) = batch(None) else { return 0 };
        let mut sent = self.fan_out(r.members.values(), |tx| !involved(&tx.user), &shared);
        // The few members whose own user changed: a batch of their own, once per user.
        let mut own: HashMap<&str, Option<Outbound>> = HashMap::new();
        for tx in r.members.values().filter(|tx| involved(&tx.user)) {
            let item = own.entry(&tx.user).or_insert_with(|| batch(Some(&tx.user)));
            if let Some(item) = item {
                sent += self.fan_out(std::iter::once(tx), |_| true, item);
            }
        }
        sent
    }

    /// Sends a volatile event to the room's members except the sending session.
    pub fn deliver_volatile(
        &self,
        ns: &str,
        room: &str,
        except: Option<SessionId>,
        from: &str,
        body: &Bytes,
    ) -> usize {
        self.with_room(ns, room, |r| {
            let datagram = encode_datagram(&Datagram::Recv {
                handle: r.handle,
                from: from.into(),
                body: body.clone(),
            });
            let mut sent = 0;
            for tx in r.members.values().filter(|tx| Some(tx.id) != except) {
                match tx.send_datagram(datagram.clone()) {
                    Sent::Queued => sent += 1,
                    _ => {
                        self.datagrams_dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            sent
        })
    }

    /// Tells the namespace's sessions of other users that `user` came online or left.
    pub fn deliver_online(&self, ns: &str, user: &str, joined: bool) -> usize {
        let frame = frame_bytes(&if joined {
            ServerFrame::OnlineJoin { user: user.into() }
        } else {
            ServerFrame::OnlineLeave { user: user.into() }
        });
        let item = Outbound::Control(frame);
        let st = self.lock();
        st.namespaces.get(ns).map_or(0, |s| {
            self.fan_out(s.sessions.values(), |tx| &*tx.user != user, &item)
        })
    }

    /// Sends an encoded control frame to every session of a namespace.
    pub fn deliver_broadcast(&self, ns: &str, frame: &Bytes) -> usize {
        let item = Outbound::Control(frame.clone());
        let st = self.lock();
        st.namespaces
            .get(ns)
            .map_or(0, |s| self.fan_out(s.sessions.values(), |_| true, &item))
    }

    /// Queues a notification for every session of `user` in the given namespaces.
    pub fn deliver_notification<'a>(
        &self,
        namespaces: impl IntoIterator<Item = &'a str>,
        user: &str,
        id: u64,
        frame: &Bytes,
    ) -> usize {
        let item = Outbound::Notification {
            id,
            frame: frame.clone(),
        };
        let st = self.lock();
        namespaces
            .into_iter()
            .filter_map(|ns| st.namespaces.get(ns))
            .map(|s| self.fan_out(s.sessions.values(), |tx| &*tx.user == user, &item))
            .sum()
    }

    /// Asks every session of `user` (every namespace) to close with `code`.
    pub fn close_user(&self, user: &str, code: ErrorCode) -> usize {
        self.close_where(|tx| &*tx.user == user, code)
    }

    /// Asks every session to close with `code` (shutdown).
    pub fn close_all(&self, code: ErrorCode) -> usize {
        self.close_where(|_| true, code)
    }

    fn close_where(&self, pick: impl Fn(&SessionTx) -> bool, code: ErrorCode) -> usize {
        let st = self.lock();
        let mut n = 0;
        for tx in st.namespaces.values().flat_map(|s| s.sessions.values()) {
            if pick(tx) {
                tx.closer().close(code);
                n += 1;
            }
        }
        n
    }

    /// Queues `item` for each picked session; returns how many got it.
    fn fan_out<'a>(
        &self,
        to: impl Iterator<Item = &'a SessionTx>,
        pick: impl Fn(&SessionTx) -> bool,
        item: &Outbound,
    ) -> usize {
        let mut sent = 0;
        for tx in to.filter(|tx| pick(tx)) {
            match tx.send(item.clone()) {
                Sent::Queued => sent += 1,
                Sent::Overflow => {
                    self.frames_dropped.fetch_add(1, Ordering::Relaxed);
                }
                Sent::Dropped => {}
            }
        }
        sent
    }

    fn with_room(&self, ns: &str, room: &str, f: impl FnOnce(&Room) -> usize) -> usize {
        let st = self.lock();
        st.namespaces
            .get(ns)
            .and_then(|s| s.rooms.get(room))
            .map_or(0, f)
    }
}

/// Drops `tx` from `room`, deleting the room when it empties.
/// `Some(true)` when it was the user's last session in the room.
fn remove_member(rooms: &mut HashMap<String, Room>, room: &str, tx: &SessionTx) -> Option<Left> {
    let r = rooms.get_mut(room)?;
    r.members.remove(&tx.id)?;
    let last_for_user = r.users.remove(&tx.user);
    let vacated = r.members.is_empty();
    if vacated {
        rooms.remove(room);
    }
    Some(Left {
        last_for_user,
        vacated,
    })
}

#[cfg(test)]
mod tests;
