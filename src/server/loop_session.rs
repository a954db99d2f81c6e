//! The WebTransport driver on the engine's event loop ([`crate::engine`]): the
//! same session core as `session.rs`, driven from the loop's pass instead of a
//! task per session. A session is a state machine the loop calls when its
//! connection had packets, its timer fired, or its waker was woken (the hub
//! queued frames, an effect finished, a close was requested). Effects that
//! cannot finish at once (Redis, hooks) are kept and polled with that waker;
//! while one runs, the session reads no further command, so replies keep their
//! order.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
use quinn_proto::{ConnectionError, StreamId};
use tokio_util::sync::WaitForCancellationFutureOwned;
use tracing::{debug, info};

use super::admission::AwaitingGuard;
use super::driver::{register, unix_now, CLOSE_LINGER, CLOSE_READ_GRACE, OPEN_STREAM_TIMEOUT};
use super::{FlushPolicy, Gateway};
use crate::engine::{Admit, App, Io, Request};
use crate::hub::{Closer, Outbound, SessionRx};
use crate::protocol::{decode_frame, ClientFrame, ErrorCode};
use crate::session::{Action, Close, Effect, Outcome, Session as Core, Write};
use crate::transport::ReadError;
use prometheus_client::metrics::gauge::Gauge;

/// Bytes read off the control stream per pass: a flood waits in QUIC's window.
const READ_PER_PASS: usize = 64 * 1024;
/// Commands handled per pass before the other sessions get a turn.
const STEPS_PER_PASS: usize = 64;
/// Frames taken off the hub's queue per pass before the others get a turn.
const WRITE_BATCH: usize = 256;
/// Bytes queued in a connection beyond which the hub's queue is left alone,
/// so a slow client's backlog stays in the bounded hub queue.
const BACKLOG: usize = 256 * 1024;

/// The gateway as the event loop's application.
pub(super) struct LoopGateway {
    gateway: Arc<Gateway>,
    live: usize,
}

impl LoopGateway {
    pub(super) fn new(gateway: Arc<Gateway>) -> Self {
        LoopGateway { gateway, live: 0 }
    }
}

/// What an effect runs, owned so it can outlive the pass that started it.
type Running = BoxFuture<'static, Outcome>;

/// The waker of a session's close signals (the server's shutdown, the hub's
/// close request): notes that one fired, then wakes the connection. A pass then
/// polls those futures only when one fired, not on every delivery (each poll
/// takes their locks).
struct SignalWaker {
    fired: AtomicBool,
    conn: Waker,
}

impl Wake for SignalWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref()
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.fired.store(true, Ordering::Release);
        self.conn.wake_by_ref();
    }
}

/// Where a session is.
enum Stage {
    /// Performing the core's actions and serving.
    Serving,
    /// The frame explaining the close is written; the connection closes at the
    /// deadline (or when the client closes first).
    Closing {
        at: Instant,
        code: ErrorCode,
        reason: Vec<u8>,
    },
    /// Closed by us; waiting for the connection to drain.
    Closed,
}

/// One session on the loop.
pub(super) struct LoopSession {
    // The core's id, namespace and user, owned apart from it: what a datagram or
    // an effect carries while the core is borrowed or gone.
    id: u64,
    ns: Arc<str>,
    user: Arc<str>,
    core: Core,
    stage: Stage,
    control: Option<StreamId>,
    read: BytesMut,
    max_frame: usize,
    queues: Option<(SessionRx, Closer)>,
    closing: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
    /// The server's shutdown, until it fired.
    shutdown: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
    /// Whether `closing` or `shutdown` may be ready (polled with it).
    signal: Arc<SignalWaker>,
    /// Whether the control stream may have bytes: QUIC said so, and the last
    /// read did not come back empty.
    control_readable: bool,
    hello_seen: bool,
    rooms: HashMap<u32, StreamId>,
    /// An effect in flight.
    running: Option<Running>,
    /// A room stream waiting for credit: (handle, head, since).
    opening: Option<(u32, Bytes, Instant)>,
    /// When this busy session last wrote, and when what the hub queued since
    /// goes out.
    flush: FlushPolicy,
    flush_at: Option<Instant>,
    /// Since when writes have been waiting for credit (the slow-consumer clock).
    stalled_since: Option<Instant>,
    /// How long writes may wait for credit before the session is a slow consumer.
    stall_timeout: Duration,
    place: Option<AwaitingGuard>,
    sessions: Option<Gauge>,
}

impl App for LoopGateway {
    type Session = LoopSession;
    type Ticket = AwaitingGuard;

    fn admit(&mut self, remote: SocketAddr, validated: bool) -> Admit<AwaitingGuard> {
        if self.gateway.shutdown.is_cancelled() {
            return Admit::Refuse;
        }
        self.gateway.admit_quic(remote, validated)
    }

    fn request(
        &mut self,
        request: Request,
        place: AwaitingGuard,
        remote: SocketAddr,
        started: Instant,
        io: &mut Io<'_>,
    ) -> Result<LoopSession, u16> {
        let gw = &self.gateway;
        let (path, ns_config) = gw.route(&request.path, request.origin.as_deref(), remote)?;
        let id = gw.new_session_id();
        let core = Core::new(
            id,
            path.clone(),
            ns_config,
            gw.rules.clone(),
            gw.metrics.clone(),
            started,
        );
        let limits = &gw.config.limits;
        let mut session = LoopSession {
            id,
            ns: path.into(),
            user: "".into(),
            core,
            stage: Stage::Serving,
            control: None,
            read: BytesMut::new(),
            // A token needs a few hundred bytes: `Hello` gets a small cap of its own.
            max_frame: limits.max_hello.min(limits.max_frame),
            queues: None,
            closing: None,
            shutdown: Some(Box::pin(gw.shutdown.clone().cancelled_owned())),
            signal: Arc::new(SignalWaker {
                fired: AtomicBool::new(true),
                conn: io.waker().clone(),
            }),
            control_readable: true,
            hello_seen: false,
            rooms: HashMap::new(),
            running: None,
            opening: None,
            flush: FlushPolicy::default(),
            flush_at: None,
            stalled_since: None,
            stall_timeout: limits.stall_timeout,
            place: Some(place),
            sessions: None,
        };
        session.set_timer(io);
        self.live += 1;
        Ok(session)
    }

    fn drive(&mut self, s: &mut LoopSession, io: &mut Io<'_>) {
        s.drive(&self.gateway, io);
    }

    fn closed(&mut self, s: LoopSession, reason: &ConnectionError) {
        debug!(id = s.core.id(), "session ended: {reason}");
        self.live -= 1;
        s.end(&self.gateway);
    }

    fn drained(&self) -> bool {
        self.live == 0
    }
}

impl LoopSession {
    /// One pass: signals, the effect in flight, actions, commands, queued frames.
    fn drive(&mut self, gw: &Arc<Gateway>, io: &mut Io<'_>) {
        let now = io.now();
        if let Stage::Closing { at, code, reason } = &self.stage {
            if now < *at {
                return io.set_timer(Some(*at));
            }
            io.close(code.to_code(), reason);
            self.stage = Stage::Closed;
            return;
        }
        if matches!(self.stage, Stage::Closed) {
            return;
        }
        self.control_readable |= io.ready().readable;
        self.signals();
        let mut more = true;
        for _ in 0..STEPS_PER_PASS {
            more = self.step(gw, io);
            if !more {
                break;
            }
        }
        if more {
            // Commands are still buffered: the next pass goes on, after the others.
            io.waker().wake_by_ref();
        }
        if matches!(self.stage, Stage::Serving) {
            self.write_queued(gw, io);
            self.datagrams(gw, io);
            self.watch_stall(io);
            // What those asked of the core (the close for a malformed datagram)
            // is done in this pass: a pass comes only when something wakes it.
            self.perform(gw, io);
        }
        if matches!(self.stage, Stage::Serving) {
            self.set_timer(io);
        }
    }

    /// A close asked by the hub (slow consumer, kick) or by the server's shutdown.
    fn signals(&mut self) {
        if self.signal.fired.swap(false, Ordering::AcqRel) {
            self.poll_signals();
        }
    }

    /// Polls the close signals with their waker (which registers it).
    fn poll_signals(&mut self) {
        let waker = Waker::from(self.signal.clone());
        let mut cx = Context::from_waker(&waker);
        if let Some(shutdown) = &mut self.shutdown {
            if shutdown.as_mut().poll(&mut cx).is_ready() {
                self.shutdown = None;
                self.core.close_requested(ErrorCode::GoingAway);
            }
        }
        if let (Some(closing), Some((_, closer))) = (&mut self.closing, &self.queues) {
            if closing.as_mut().poll(&mut cx).is_ready() {
                let code = closer.code().unwrap_or(ErrorCode::GoingAway);
                self.closing = None;
                self.core.close_requested(code);
            }
        }
    }

    /// Moves the session one step; whether there may be more to do now.
    fn step(&mut self, gw: &Arc<Gateway>, io: &mut Io<'_>) -> bool {
        if !matches!(self.stage, Stage::Serving) {
            return false;
        }
        if let Some(running) = &mut self.running {
            let mut cx = Context::from_waker(io.waker());
            match running.as_mut().poll(&mut cx) {
                Poll::Ready(outcome) => {
                    self.running = None;
                    self.core.complete(outcome);
                }
                Poll::Pending => return false,
            }
        }
        if let Some((handle, _, since)) = &self.opening {
            let (handle, since) = (*handle, *since);
            match io.open_uni() {
                Some(stream) => {
                    let (_, head, _) = self.opening.take().expect("checked");
                    io.write(stream, head);
                    self.rooms.insert(handle, stream);
                    self.core.room_opened(handle, Ok(()));
                }
                None if io.now() >= since + OPEN_STREAM_TIMEOUT => {
                    self.opening = None;
                    self.core
                        .room_opened(handle, Err("timed out opening the room stream".into()));
                }
                None => return false,
            }
        }
        self.perform(gw, io);
        if self.waits() {
            // The next step polls what it waits for, or sees the session closing.
            return true;
        }
        if let Some(at) = self.core.poll_timeout() {
            if io.now() >= at {
                self.core.handle_timeout(io.now());
                return true;
            }
        }
        self.read_command(gw, io)
    }

    /// Whether the core's next action or command must wait: an effect or a room
    /// stream in flight, or the session no longer serving.
    fn waits(&self) -> bool {
        self.running.is_some() || self.opening.is_some() || !matches!(self.stage, Stage::Serving)
    }

    /// Performs the core's actions until one must wait.
    fn perform(&mut self, gw: &Arc<Gateway>, io: &mut Io<'_>) {
        while !self.waits() {
            let Some(action) = self.core.poll_action() else {
                break;
            };
            match action {
                Action::Control(frame) => {
                    if let Some(control) = self.control {
                        io.write(control, frame);
                    }
                }
                Action::OpenRoom { handle, head } => {
                    self.opening = Some((handle, head, io.now()));
                }
                Action::FinishRoom { handle } => {
                    if let Some(stream) = self.rooms.remove(&handle) {
                        io.finish(stream);
                    }
                }
                Action::Perform(effect) => self.start(gw, effect, io),
                Action::Register => self.register(gw),
                Action::Close(close) => self.close(close, io),
                Action::End => {
                    io.close(0, b"bye");
                    self.stage = Stage::Closed;
                }
            }
        }
    }

    /// Runs an effect: to its end at once when it can (the local broker), else
    /// kept and polled when its waker fires.
    fn start(&mut self, gw: &Arc<Gateway>, effect: Effect, io: &mut Io<'_>) {
        let mut running = self.owned(gw, effect);
        let mut cx = Context::from_waker(io.waker());
        match running.as_mut().poll(&mut cx) {
            Poll::Ready(outcome) => self.core.complete(outcome),
            Poll::Pending => self.running = Some(running),
        }
    }

    /// `effect` as a future that owns what it runs against, so it can outlive
    /// this pass (and the session, for its departure).
    fn owned(&mut self, gw: &Arc<Gateway>, effect: Effect) -> Running {
        if *self.user != *self.core.user() {
            // Set by Hello; the effects before it run for no user.
            self.user = self.core.user().into();
        }
        let (gateway, ns, id, user) = (gw.clone(), self.ns.clone(), self.id, self.user.clone());
        Box::pin(async move { effect.perform(gateway.backends(&ns, id, &user)).await })
    }

    fn register(&mut self, gw: &Arc<Gateway>) {
        // Refused: the core queues the close.
        if let Some((rx, closer)) = register(gw, &mut self.core) {
            self.closing = Some(Box::pin(closer.requested_owned()));
            self.queues = Some((rx, closer));
            // Its waker in place now; a close already asked is queued at once.
            self.poll_signals();
            self.place = None;
            self.max_frame = gw.config.limits.max_frame;
            let sessions = gw.metrics.sessions_in(self.core.ns());
            sessions.inc();
            self.sessions = Some(sessions);
            info!(user = self.core.user(), "session open");
        }
    }

    /// Reads and hands the core the next command; whether one was handled.
    fn read_command(&mut self, gw: &Arc<Gateway>, io: &mut Io<'_>) -> bool {
        if self.control.is_none() {
            let Some(control) = io.accept_bi() else {
                return false;
            };
            self.control = Some(control);
            self.core.control_opened();
        }
        let control = self.control.expect("set above");
        match decode_frame::<ClientFrame>(&mut self.read, self.max_frame) {
            Ok(Some(frame)) => {
                self.command(gw, io, frame);
                return true;
            }
            Ok(None) => {}
            Err(e) => {
                self.core.handle_read_error(&ReadError::Codec(e));
                return true;
            }
        }
        if !self.control_readable {
            return false;
        }
        let before = self.read.len();
        match io.read(control, &mut self.read, READ_PER_PASS) {
            Ok(true) if self.read.is_empty() => {
                if self.queues.is_some() {
                    self.core.control_finished();
                } else {
                    // Finished before `Hello`: nothing to explain.
                    io.close(0, b"");
                    self.place = None;
                    self.stage = Stage::Closed;
                }
                true
            }
            Ok(true) => {
                self.core.handle_read_error(&ReadError::Truncated);
                true
            }
            Ok(false) => {
                // Nothing new: QUIC's next Readable event says when there is.
                self.control_readable = self.read.len() > before;
                self.control_readable
            }
            Err(_) => {
                let e = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "stream reset");
                self.core.handle_read_error(&ReadError::Io(e));
                true
            }
        }
    }

    fn command(&mut self, gw: &Arc<Gateway>, io: &mut Io<'_>, frame: ClientFrame) {
        if !self.hello_seen {
            self.hello_seen = true;
            let health = gw.broker.health();
            self.core.handle_hello(io.now(), unix_now(), frame, health);
        } else {
            self.core.handle_frame(io.now(), frame);
        }
    }

    /// Writes what the hub queued, unless the connection is already backlogged.
    /// A busy session writes once per flush window so its frames share packets
    /// ([`FlushPolicy`]), as over wtransport and WebSocket.
    fn write_queued(&mut self, gw: &Arc<Gateway>, io: &mut Io<'_>) {
        // A stale deadline would be a timer in the past: the loop would spin.
        self.flush_at = None;
        if self.waits() {
            // The order of replies and room frames is the core's: wait (what
            // it waits for wakes the connection).
            return;
        }
        let Some((rx, _)) = &mut self.queues else {
            return;
        };
        let window = gw.flush_window.get();
        let now = tokio::time::Instant::from_std(io.now());
        if !self.flush.due(now, window) {
            // Held until the window ends (a timer); the hub's next frames find
            // the queue's waker still registered by the last empty poll.
            if rx.frames.queued_bytes() > 0 {
                self.flush_at = self.flush.deadline(window).map(|at| at.into_std());
            }
            return;
        }
        let mut cx = Context::from_waker(io.waker());
        let mut wrote = 0;
        let batch_full = loop {
            if wrote == WRITE_BATCH {
                break true;
            }
            // Backlogged: the stream's credit wakes the connection again.
            if io.backlog() > BACKLOG {
                break false;
            }
            let Some((rx, _)) = &mut self.queues else {
                break false;
            };
            match rx.frames.poll_recv(&mut cx) {
                Poll::Ready(Some(item)) => {
                    wrote += 1;
                    self.write_out(gw, io, item);
                }
                _ => break false,
            }
        };
        if batch_full {
            // The rest in the next pass, at once: frames enough to fill packets.
            io.waker().wake_by_ref();
        } else if wrote > 0 {
            self.flush.flushed(now);
        }
    }

    fn write_out(&mut self, gw: &Arc<Gateway>, io: &mut Io<'_>, item: Outbound) {
        match self.core.deliver(item) {
            None => {}
            Some(Write::Control(frame)) => {
                if let Some(control) = self.control {
                    io.write(control, frame);
                }
            }
            Some(Write::Room {
                handle,
                frame,
                published,
            }) => {
                let Some(&stream) = self.rooms.get(&handle) else {
                    return;
                };
                if io.write(stream, frame) {
                    if let Some(published) = published {
                        gw.metrics.delivered(published);
                    }
                } else {
                    debug!(handle, "room stream stopped by the client");
                    self.rooms.remove(&handle);
                    self.core.room_stopped(handle);
                }
            }
        }
    }

    /// Datagrams both ways.
    fn datagrams(&mut self, gw: &Arc<Gateway>, io: &mut Io<'_>) {
        if let Some((rx, _)) = &mut self.queues {
            let mut cx = Context::from_waker(io.waker());
            while let Poll::Ready(Some(datagram)) = rx.datagrams.poll_recv(&mut cx) {
                if io.send_datagram(&datagram) {
                    gw.metrics.datagrams_out.inc();
                } else {
                    gw.metrics.datagrams_dropped.inc();
                }
            }
        }
        if io.ready().datagrams && self.core.accepts_datagrams() {
            while let Some(datagram) = io.recv_datagram() {
                if let Some(v) = self.core.handle_datagram(io.now(), &datagram) {
                    gw.broker
                        .volatile(&self.ns, v.room, self.id, v.from, v.body);
                }
            }
        } else if io.ready().datagrams {
            while io.recv_datagram().is_some() {}
        }
    }

    /// A session whose writes make no progress for `stall_timeout` is closed as a
    /// slow consumer.
    fn watch_stall(&mut self, io: &mut Io<'_>) {
        let waiting = io.backlog() > 0;
        match (waiting, self.stalled_since) {
            (false, _) => self.stalled_since = None,
            (true, None) => self.stalled_since = Some(io.now()),
            (true, Some(since)) => {
                if io.now() >= since + self.stall_timeout {
                    debug!("no write progress: closing as a slow consumer");
                    if let Some((_, closer)) = &self.queues {
                        closer.close(ErrorCode::SlowConsumer);
                    } else {
                        self.core.close_requested(ErrorCode::SlowConsumer);
                    }
                }
            }
        }
    }

    fn set_timer(&mut self, io: &mut Io<'_>) {
        let stall = self.stalled_since.map(|since| since + self.stall_timeout);
        let opening = self
            .opening
            .as_ref()
            .map(|(_, _, since)| *since + OPEN_STREAM_TIMEOUT);
        let next = [self.core.poll_timeout(), stall, opening, self.flush_at]
            .into_iter()
            .flatten()
            .min();
        io.set_timer(next);
    }

    /// Writes the frame that explains the close (then finishes the control
    /// stream) and closes once the client had the time to read it.
    fn close(&mut self, close: Close, io: &mut Io<'_>) {
        // A session closed before its Hello gives its place among those
        // awaiting one back now: the client sees the close at once, the
        // connection drains for a while longer.
        self.place = None;
        let now = io.now();
        let at = match (&close.frame, self.control) {
            (Some(frame), Some(control)) => {
                io.write(control, frame.clone());
                io.finish(control);
                if io.queued(control) > 0 {
                    now + CLOSE_LINGER
                } else {
                    now + CLOSE_READ_GRACE
                }
            }
            _ => now,
        };
        let reason = close.reason().to_vec();
        if at <= now {
            io.close(close.code.to_code(), &reason);
            self.stage = Stage::Closed;
        } else {
            self.stage = Stage::Closing {
                at,
                code: close.code,
                reason,
            };
            io.set_timer(Some(at));
        }
    }

    /// The connection is gone: the departure (rooms, presence, webhooks) runs as
    /// a task of its own.
    fn end(mut self, gw: &Arc<Gateway>) {
        if let Some(sessions) = &self.sessions {
            sessions.dec();
            info!(user = self.core.user(), "session closed");
        }
        if let Some(departure) = self.core.departure() {
            let departing = self.owned(gw, departure);
            gw.tasks.spawn(async move {
                departing.await;
            });
        }
    }
}
