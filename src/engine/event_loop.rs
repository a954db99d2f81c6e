//! One task that owns a UDP socket and every QUIC connection on it (quinn-proto,
//! sans-IO): it reads a batch of datagrams, runs each connection that has
//! something to do — packets in, a timer due, or a wake-up from outside (the hub
//! queued frames for its session) — hands its session to the [`App`], and sends
//! what the connection has to send. One wake-up serves every ready connection:
//! there is no task, channel or waker per connection on the delivery path.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::task::{Wake, Waker};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use quinn_proto::{
    Connection, ConnectionError, ConnectionHandle, DatagramEvent, Endpoint, EndpointConfig, Event,
    ServerConfig, StreamId, VarInt,
};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::socket::{RecvBuffers, Socket};
use super::tail_probe::{Counts, LossRate, TailProbe};
use super::webtransport::{Ready, Request, StreamGone, WebTransport};

/// What to do with a connection attempt, decided before any handshake work.
#[derive(Debug)]
pub enum Admit<T> {
    /// Start the handshake; the ticket goes with the connection until its
    /// request ([`App::request`]), or is dropped with it.
    Accept(T),
    /// Ask the client to prove its address first (a QUIC Retry).
    Retry,
    /// Refuse it (CONNECTION_REFUSED).
    Refuse,
}

/// The application on top of the loop: admits connections, answers WebTransport
/// requests, and drives each open session when something happened to it.
pub trait App {
    /// The application's state of one session.
    type Session;
    /// What an admitted connection holds until its request (a place in a count
    /// of connections in their handshake, say).
    type Ticket;

    /// A new connection from `remote` (`validated`: it answered a Retry).
    fn admit(&mut self, remote: SocketAddr, validated: bool) -> Admit<Self::Ticket>;

    /// A WebTransport request: `Ok` opens the session (200), `Err(status)`
    /// refuses it. `started` is the connection's first packet.
    fn request(
        &mut self,
        request: Request,
        ticket: Self::Ticket,
        remote: SocketAddr,
        started: Instant,
        io: &mut Io<'_>,
    ) -> Result<Self::Session, u16>;

    /// Something happened to the session (data, credit, datagrams, its timer, or
    /// its [`Io::waker`] was woken): read, write, and set the next timer.
    fn drive(&mut self, session: &mut Self::Session, io: &mut Io<'_>);

    /// The connection is gone (`reason` as QUIC tells it).
    fn closed(&mut self, session: Self::Session, reason: &ConnectionError);

    /// Whether every session is gone, so a loop asked to stop can stop now.
    fn drained(&self) -> bool;
}

/// One connection's I/O, as the application sees it during a call.
pub struct Io<'a> {
    conn: &'a mut Connection,
    wt: &'a mut WebTransport,
    now: Instant,
    timer: &'a mut Option<Instant>,
    waker: &'a Waker,
    ready: Ready,
}

impl<'a> Io<'a> {
    /// The loop's clock for this connection's turn.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Wakes this session's [`App::drive`] from anywhere (another thread, the hub).
    /// Borrowed from the loop, not from `self`, so a `Context` made of it can be
    /// used while the session writes.
    pub fn waker(&self) -> &'a Waker {
        self.waker
    }

    /// What happened since the last call.
    pub fn ready(&self) -> Ready {
        self.ready
    }

    /// Asks for a [`App::drive`] at `at` (replaces the previous timer).
    pub fn set_timer(&mut self, at: Option<Instant>) {
        *self.timer = at;
    }

    /// A session bidirectional stream the client opened.
    pub fn accept_bi(&mut self) -> Option<StreamId> {
        self.wt.accept_bi()
    }

    /// Reads at most `max` bytes of `id` into `buf`; whether it finished.
    pub fn read(
        &mut self,
        id: StreamId,
        buf: &mut BytesMut,
        max: usize,
    ) -> Result<bool, StreamGone> {
        self.wt.read(self.conn, id, buf, max)
    }

    /// Opens a unidirectional session stream; `None` without stream credit.
    pub fn open_uni(&mut self) -> Option<StreamId> {
        self.wt.open_uni(self.conn)
    }

    /// Writes on `id` (queued beyond the credit); false when the stream is gone.
    pub fn write(&mut self, id: StreamId, data: Bytes) -> bool {
        self.wt.write(self.conn, id, data)
    }

    /// Bytes written on `id` that wait for credit.
    pub fn queued(&self, id: StreamId) -> usize {
        self.wt.queued(id)
    }

    /// Bytes written on any stream of the session that wait for credit.
    pub fn backlog(&self) -> usize {
        self.wt.backlog()
    }

    /// Finishes `id` after what is queued on it.
    pub fn finish(&mut self, id: StreamId) {
        self.wt.finish(self.conn, id)
    }

    /// Sends a datagram; false when it was dropped.
    pub fn send_datagram(&mut self, payload: &[u8]) -> bool {
        self.wt.send_datagram(self.conn, payload)
    }

    /// The next datagram from the client.
    pub fn recv_datagram(&mut self) -> Option<Bytes> {
        self.wt.recv_datagram(self.conn)
    }

    /// Closes the connection with an application error code.
    pub fn close(&mut self, code: u32, reason: &[u8]) {
        self.conn.close(
            self.now,
            VarInt::from_u32(code),
            Bytes::copy_from_slice(reason),
        );
    }

    /// Whether the connection is closing or closed.
    pub fn is_closed(&self) -> bool {
        self.conn.is_closed()
    }
}

/// Connections woken from outside the loop, and the loop's own wake-up.
#[derive(Default)]
struct Woken {
    ids: Mutex<Vec<usize>>,
    notify: Notify,
}

/// The waker of one connection: records it and wakes the loop once per batch.
struct ConnWaker {
    index: usize,
    woken: Arc<Woken>,
}

impl Wake for ConnWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref()
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let mut ids = self.woken.ids.lock().expect("woken list");
        let first = ids.is_empty();
        ids.push(self.index);
        drop(ids);
        if first {
            self.woken.notify.notify_one();
        }
    }
}

/// What an [`Io`] lends: the connection, its WebTransport state, the
/// application's timer and the connection's waker.
struct Link {
    conn: Connection,
    wt: WebTransport,
    /// The application's timer.
    timer: Option<Instant>,
    waker: Waker,
}

impl Link {
    fn io(&mut self, now: Instant, ready: Ready) -> Io<'_> {
        Io {
            conn: &mut self.conn,
            wt: &mut self.wt,
            now,
            timer: &mut self.timer,
            waker: &self.waker,
            ready,
        }
    }

    /// Hands the connection's events for the endpoint (new and retired
    /// connection ids, drained) to it, and its answers back.
    fn pump(&mut self, endpoint: &mut Endpoint, ch: ConnectionHandle) {
        while let Some(event) = self.conn.poll_endpoint_events() {
            if let Some(event) = endpoint.handle_event(ch, event) {
                self.conn.handle_event(event);
            }
        }
    }
}

/// One connection in the loop.
struct Entry<S, T> {
    link: Link,
    ticket: Option<T>,
    session: Option<S>,
    remote: SocketAddr,
    started: Instant,
    /// The key under which it sits in the timer set.
    wakes_at: Option<Instant>,
    ready: Ready,
    /// The application has something to do in the next pass: its waker fired,
    /// its timer is due, or its session just began. A connection woken only by
    /// QUIC (an ACK, most often) is not driven unless its streams say so.
    app_due: bool,
    /// Queued for a pass (in `dirty`).
    dirty: bool,
    /// The session ended (reported to the application); kept until drained.
    ended: bool,
    /// A PING after the last stream data, on lossy paths.
    probe: TailProbe,
}

/// A wait for work shorter than this means the loop is busy (it had work
/// before it asked).
const BUSY: Duration = Duration::from_micros(20);
/// Datagrams per GSO send.
const MAX_SEGMENTS: usize = 10;
/// Receive batches (`recvmmsg`, 32 datagrams each) per loop iteration before the
/// other work gets its turn. A pass over many connections takes milliseconds
/// when the loop is saturated, and what arrives meanwhile must fit the socket's
/// buffer: with 8 batches, 1,000 clients at 200k deliveries/s overflowed it
/// (34–59k datagrams dropped in 6 s, p99 131–195 ms); with 64, none (p99
/// 15–53 ms), the same CPU per delivery.
const RECV_PASSES: usize = 64;
/// H3_REQUEST_CANCELLED: a connection that never asked for a session.
const H3_REQUEST_CANCELLED: u32 = 0x10c;
/// How long a peer whose connection drained gets no stateless answer (RFC 9000
/// §10.3 makes a stateless reset optional). A slow client may still send a
/// packet that crossed our CONNECTION_CLOSE after the 3 PTOs of draining (tens
/// of milliseconds on loopback); a reset in reply would replace the close code
/// it already holds (quinn reports the last error).
const QUIET_AFTER_CLOSE: Duration = Duration::from_secs(2);

/// The event loop: an endpoint, its socket and its connections.
pub struct EventLoop<A: App> {
    app: A,
    endpoint: Endpoint,
    server: Arc<ServerConfig>,
    socket: Socket,
    entries: Vec<Option<Entry<A::Session, A::Ticket>>>,
    timers: BTreeSet<(Instant, usize)>,
    dirty: Vec<usize>,
    woken: Arc<Woken>,
    /// How long a connection may take to send its WebTransport request.
    request_timeout: Duration,
    send_buf: Vec<u8>,
    /// Datagrams of the batch being read.
    received: Vec<(SocketAddr, BytesMut)>,
    /// Peers of drained connections, until when they get no stateless answer,
    /// and the same in the order they expire (so forgetting them is cheap).
    just_closed: HashMap<SocketAddr, Instant>,
    closed_order: VecDeque<(Instant, SocketAddr)>,
    /// What share of its packets the endpoint lost lately (for [`TailProbe`]).
    loss: LossRate,
}

impl<A: App> EventLoop<A> {
    /// A loop on `socket` serving with `server` (rustls, transport settings).
    pub fn new(
        app: A,
        socket: std::net::UdpSocket,
        server: Arc<ServerConfig>,
        request_timeout: Duration,
    ) -> std::io::Result<Self> {
        let socket = Socket::new(socket)?;
        let endpoint = Endpoint::new(
            Arc::new(EndpointConfig::default()),
            Some(server.clone()),
            !socket.may_fragment(),
            None,
        );
        Ok(EventLoop {
            app,
            endpoint,
            server,
            socket,
            entries: Vec::new(),
            timers: BTreeSet::new(),
            dirty: Vec::new(),
            woken: Arc::default(),
            request_timeout,
            send_buf: Vec::with_capacity(64 * 1024),
            received: Vec::new(),
            just_closed: HashMap::new(),
            closed_order: VecDeque::new(),
            loss: LossRate::new(Instant::now()),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// The application.
    pub fn app(&mut self) -> &mut A {
        &mut self.app
    }

    /// Runs until `shutdown`, then until the application's sessions are gone (it
    /// sees the same token and closes them its way) for at most `linger`; then
    /// closes what is left with `code` and waits for it to drain.
    pub async fn run(self, shutdown: CancellationToken, code: u32, linger: Duration) {
        // One task serves every connection: tokio's per-task budget would make
        // its queues look empty after a hundred-odd receives in a pass.
        tokio::task::unconstrained(self.run_loop(shutdown, code, linger)).await
    }

    async fn run_loop(mut self, shutdown: CancellationToken, code: u32, linger: Duration) {
        let mut recv = RecvBuffers::new();
        let mut stop_at: Option<Instant> = None;
        let mut closed_all = false;
        loop {
            self.receive(&mut recv);
            self.take_woken();
            self.expire(Instant::now());
            self.pass().await;
            let now = Instant::now();
            if shutdown.is_cancelled() {
                let at = *stop_at.get_or_insert(now + linger);
                if !closed_all && (self.app.drained() || now >= at) {
                    // What the application did not close itself is closed here,
                    // then given a second to drain.
                    self.close_all(now, code);
                    closed_all = true;
                    stop_at = Some(now + Duration::from_secs(1));
                }
                if closed_all && (self.entries.iter().all(Option::is_none) || now >= at) {
                    return;
                }
            }
            let next = self.timers.first().map(|(at, _)| *at);
            let sleep = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            let stopping = async {
                match stop_at {
                    Some(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                    None => shutdown.cancelled().await,
                }
            };
            let waiting = Instant::now();
            tokio::select! {
                biased;
                _ = stopping => {}
                _ = self.woken.notify.notified() => {}
                _ = self.socket.readable() => {}
                _ = sleep => {}
            }
            if waiting.elapsed() < BUSY {
                // Work was waiting already: the loop would never give up its
                // thread, and a task it woke (the Redis connection an effect
                // wrote to, a hook's HTTP call) sits in this worker's LIFO
                // slot, which no other worker steals, until it does.
                tokio::task::yield_now().await;
            }
        }
    }

    /// Reads what the socket has, a few batches at most, into the connections.
    fn receive(&mut self, recv: &mut RecvBuffers) {
        // Reused across batches: the socket is borrowed while it fills it.
        let mut datagrams = std::mem::take(&mut self.received);
        for _ in 0..RECV_PASSES {
            let now = Instant::now();
            match self
                .socket
                .try_recv(recv, |remote, data| datagrams.push((remote, data)))
            {
                Ok(()) => {}
                Err(e) => {
                    if e.kind() != std::io::ErrorKind::WouldBlock {
                        debug!("UDP receive: {e}");
                    }
                    break;
                }
            }
            for (remote, data) in datagrams.drain(..) {
                self.on_datagram(now, remote, data);
            }
        }
        self.received = datagrams;
    }

    fn close_all(&mut self, now: Instant, code: u32) {
        for index in 0..self.entries.len() {
            if let Some(entry) = &mut self.entries[index] {
                entry
                    .link
                    .conn
                    .close(now, VarInt::from_u32(code), Bytes::from_static(b"shutdown"));
                self.mark(index);
            }
        }
    }

    fn on_datagram(&mut self, now: Instant, remote: SocketAddr, data: BytesMut) {
        let mut response = Vec::new();
        match self
            .endpoint
            .handle(now, remote, None, None, data, &mut response)
        {
            Some(DatagramEvent::ConnectionEvent(ch, event)) => {
                if let Some(entry) = self.entries.get_mut(ch.0).and_then(Option::as_mut) {
                    entry.link.conn.handle_event(event);
                    self.mark(ch.0);
                }
            }
            Some(DatagramEvent::NewConnection(incoming)) => {
                let remote = incoming.remote_address();
                match self.app.admit(remote, incoming.remote_address_validated()) {
                    Admit::Accept(ticket) => {
                        match self.endpoint.accept(
                            incoming,
                            now,
                            &mut response,
                            Some(self.server.clone()),
                        ) {
                            Ok((ch, conn)) => self.insert(ch, conn, ticket, remote, now),
                            Err(e) => {
                                if let Some(transmit) = e.response {
                                    self.socket.send(&transmit, &response);
                                }
                            }
                        }
                    }
                    Admit::Retry if incoming.may_retry() => {
                        if let Ok(transmit) = self.endpoint.retry(incoming, &mut response) {
                            self.socket.send(&transmit, &response);
                        }
                    }
                    Admit::Retry | Admit::Refuse => {
                        let transmit = self.endpoint.refuse(incoming, &mut response);
                        self.socket.send(&transmit, &response);
                    }
                }
            }
            Some(DatagramEvent::Response(transmit)) => {
                let quiet = self
                    .just_closed
                    .get(&remote)
                    .is_some_and(|until| now < *until);
                if !quiet {
                    self.socket.send(&transmit, &response);
                }
            }
            None => {}
        }
    }

    fn insert(
        &mut self,
        ch: ConnectionHandle,
        conn: Connection,
        ticket: A::Ticket,
        remote: SocketAddr,
        now: Instant,
    ) {
        let index = ch.0;
        if self.entries.len() <= index {
            self.entries.resize_with(index + 1, || None);
        }
        let waker = Waker::from(Arc::new(ConnWaker {
            index,
            woken: self.woken.clone(),
        }));
        self.entries[index] = Some(Entry {
            link: Link {
                conn,
                wt: WebTransport::default(),
                timer: Some(now + self.request_timeout),
                waker,
            },
            ticket: Some(ticket),
            session: None,
            remote,
            started: now,
            wakes_at: None,
            ready: Ready::default(),
            app_due: true,
            dirty: false,
            ended: false,
            probe: TailProbe::default(),
        });
        self.mark(index);
    }

    fn mark(&mut self, index: usize) {
        if let Some(entry) = self.entries.get_mut(index).and_then(Option::as_mut) {
            if !entry.dirty {
                entry.dirty = true;
                self.dirty.push(index);
            }
        }
    }

    /// Marks the connections whose application wakers fired.
    fn take_woken(&mut self) {
        let woken = std::mem::take(&mut *self.woken.ids.lock().expect("woken list"));
        for index in woken {
            if let Some(entry) = self.entries.get_mut(index).and_then(Option::as_mut) {
                entry.app_due = true;
            }
            self.mark(index);
        }
    }

    /// Runs the timers that are due.
    fn expire(&mut self, now: Instant) {
        while let Some(&(at, index)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            if let Some(entry) = self.entries.get_mut(index).and_then(Option::as_mut) {
                entry.wakes_at = None;
                if entry.link.conn.poll_timeout().is_some_and(|t| t <= now) {
                    entry.link.conn.handle_timeout(now);
                }
                if entry.link.timer.is_some_and(|t| t <= now) {
                    entry.app_due = true;
                }
                if entry.probe.take_due(now) {
                    entry.link.conn.ping();
                }
                self.mark(index);
            }
        }
    }

    /// Runs every marked connection once, then sends what they have. Each
    /// connection reads the clock for its own turn: a pass over many connections
    /// takes long enough on a loaded machine that one clock would make QUIC's
    /// timers (a close's draining period among them) start in the past.
    async fn pass(&mut self) {
        // Running one may mark others (a publish wakes every member): keep going
        // until nothing is marked, within a bound so the socket gets its turn.
        let mut rounds = 0;
        while !self.dirty.is_empty() && rounds < 4 {
            rounds += 1;
            let dirty = std::mem::take(&mut self.dirty);
            for &index in &dirty {
                self.run_one(index, Instant::now());
            }
            for index in dirty {
                self.transmit(index, Instant::now()).await;
                self.settle(index);
            }
            self.take_woken();
        }
    }

    /// Feeds a connection its events and lets the application drive its session.
    fn run_one(&mut self, index: usize, now: Instant) {
        let Some(entry) = self.entries.get_mut(index).and_then(Option::as_mut) else {
            return;
        };
        entry.dirty = false;
        let ch = ConnectionHandle(index);
        let link = &mut entry.link;
        loop {
            link.pump(&mut self.endpoint, ch);
            let Some(event) = link.conn.poll() else {
                break;
            };
            match event {
                Event::Connected => link.wt.connected(&mut link.conn),
                Event::Stream(event) => {
                    let ready = link.wt.on_stream(&mut link.conn, event);
                    entry.ready.readable |= ready.readable;
                    entry.ready.writable |= ready.writable;
                }
                Event::DatagramReceived => entry.ready.datagrams = true,
                Event::ConnectionLost { reason } => {
                    if !entry.ended {
                        entry.ended = true;
                        entry.ticket = None;
                        if let Some(session) = entry.session.take() {
                            self.app.closed(session, &reason);
                        }
                    }
                }
                Event::HandshakeDataReady | Event::DatagramsUnblocked => {}
            }
        }
        if entry.ended {
            return;
        }
        let request = link.wt.take_request();
        let ticket = request.as_ref().and_then(|_| entry.ticket.take());
        if let (Some(request), Some(ticket)) = (request, ticket) {
            let mut io = link.io(now, Ready::default());
            match self
                .app
                .request(request, ticket, entry.remote, entry.started, &mut io)
            {
                Ok(session) => {
                    link.wt.answer(&mut link.conn, 200);
                    entry.session = Some(session);
                    entry.app_due = true;
                }
                Err(status) => {
                    link.wt.answer(&mut link.conn, status);
                    link.timer = Some(now + Duration::from_secs(1));
                }
            }
        }
        match &mut entry.session {
            Some(session) if entry.app_due || entry.ready.any() => {
                entry.app_due = false;
                let ready = std::mem::take(&mut entry.ready);
                self.app.drive(session, &mut link.io(now, ready));
            }
            Some(_) => {}
            None => {
                // No session yet: the only timer is the request deadline (or the
                // linger after a refusal).
                if link.timer.is_some_and(|at| at <= now) && !link.conn.is_closed() {
                    link.timer = None;
                    // Its place among the connections awaiting a session is free
                    // now, not once the close has drained (3 PTOs later).
                    entry.ticket = None;
                    link.conn.close(
                        now,
                        VarInt::from_u32(H3_REQUEST_CANCELLED),
                        Bytes::from_static(b"no WebTransport request in time"),
                    );
                }
            }
        }
        link.pump(&mut self.endpoint, ch);
    }

    /// Sends every packet the connection has.
    async fn transmit(&mut self, index: usize, now: Instant) {
        let Some(entry) = self.entries.get_mut(index).and_then(Option::as_mut) else {
            return;
        };
        let segments = self.socket.max_segments().min(MAX_SEGMENTS);
        let mut sent = false;
        loop {
            self.send_buf.clear();
            let Some(transmit) = entry
                .link
                .conn
                .poll_transmit(now, segments, &mut self.send_buf)
            else {
                break;
            };
            self.socket.send_waiting(&transmit, &self.send_buf).await;
            sent = true;
        }
        if sent {
            let counts = Counts::of(&entry.link.conn.stats());
            entry.probe.sent(now, counts, &mut self.loss);
        }
    }

    /// Keeps `remote` from stateless answers for [`QUIET_AFTER_CLOSE`]; forgets
    /// the peers whose time is up, so it holds at most the closes of that span.
    fn remember_closed(&mut self, remote: SocketAddr) {
        let now = Instant::now();
        while let Some(&(until, peer)) = self.closed_order.front() {
            if until > now {
                break;
            }
            self.closed_order.pop_front();
            if self.just_closed.get(&peer) == Some(&until) {
                self.just_closed.remove(&peer);
            }
        }
        let until = now + QUIET_AFTER_CLOSE;
        self.just_closed.insert(remote, until);
        self.closed_order.push_back((until, remote));
    }

    /// Drops a drained connection, or files its next wake-up.
    fn settle(&mut self, index: usize) {
        let Some(entry) = self.entries.get_mut(index).and_then(Option::as_mut) else {
            return;
        };
        if entry.link.conn.is_drained() {
            if let Some(at) = entry.wakes_at.take() {
                self.timers.remove(&(at, index));
            }
            let entry = self.entries[index].take().expect("checked");
            self.remember_closed(entry.remote);
            if let (false, Some(session)) = (entry.ended, entry.session) {
                self.app.closed(session, &ConnectionError::LocallyClosed);
            }
            return;
        }
        let next = [
            entry.link.conn.poll_timeout(),
            entry.link.timer,
            entry.probe.due(),
        ]
        .into_iter()
        .flatten()
        .min();
        if next != entry.wakes_at {
            if let Some(at) = entry.wakes_at.take() {
                self.timers.remove(&(at, index));
            }
            if let Some(at) = next {
                self.timers.insert((at, index));
                entry.wakes_at = Some(at);
            }
        }
    }
}
