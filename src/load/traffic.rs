//! Phase 2 of a run: senders publishing on schedule, and receivers checking
//! every message — one task per room stream, one per control stream (replies,
//! namespace presence, datagrams).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use wtransport::{Connection, RecvStream, SendStream, VarInt};

use super::connect::{Dialer, Joined};
use super::plan::{Pacer, Plan, Stamp};
use super::session::{self, RoomReadError, RoomReader};
use super::tally::{Counts, RoomTally, Verdict};
use super::{websocket, wire, Ctx, Mode, CATCH_UP};
use crate::client::tail_probe;
use crate::protocol::{ErrorCode, ServerFrame};
use crate::transport::FrameReader;

/// The send and receive tasks of a run.
pub(super) struct Tasks {
    senders: Vec<JoinHandle<()>>,
    receivers: Vec<JoinHandle<Counts>>,
    conns: Vec<Connection>,
}

impl Tasks {
    /// Receivers for every connected client, and a sender per publishing one
    /// (over a WebSocket: one task per session does both).
    pub(super) fn spawn(
        ctx: &Arc<Ctx>,
        clients: Vec<Option<Joined>>,
        stop: &CancellationToken,
    ) -> Tasks {
        let mut t = Tasks {
            senders: Vec::new(),
            receivers: Vec::new(),
            conns: Vec::new(),
        };
        for (i, c) in clients.into_iter().enumerate() {
            match c {
                Some(Joined::WebTransport(j)) => t.spawn_webtransport(ctx, i as u32, j, stop),
                Some(Joined::WebSocket(j)) => {
                    ctx.online_frames
                        .fetch_add(j.online_frames, Ordering::Relaxed);
                    ctx.presence_frames
                        .fetch_add(j.presence_frames, Ordering::Relaxed);
                    let task = websocket::run(ctx.clone(), i as u32, *j, stop.clone());
                    t.receivers.push(tokio::spawn(task));
                }
                None => {}
            }
        }
        t
    }

    /// A reader per room stream, one for the control stream, and a sender.
    fn spawn_webtransport(
        &mut self,
        ctx: &Arc<Ctx>,
        i: u32,
        j: session::Joined,
        stop: &CancellationToken,
    ) {
        self.conns.push(j.conn.clone());
        ctx.online_frames
            .fetch_add(j.online_frames, Ordering::Relaxed);
        let handles: Vec<u32> = j.rooms.iter().map(|r| r.handle).collect();
        // A sender writes on the control stream; a receiver keeps it open (a
        // finished control stream ends the session).
        let keep = if ctx.plan.is_sender(i) {
            let sender = send(ctx.clone(), i, j.control, j.conn.clone(), handles.clone());
            self.senders.push(tokio::spawn(until(sender, stop.clone())));
            None
        } else {
            Some(j.control)
        };
        for (k, room) in j.rooms.into_iter().enumerate() {
            let r = ctx.plan.room_of(i, k as u32);
            let task = receive_room(ctx.clone(), r, room.reader, j.conn.clone(), stop.clone());
            self.receivers.push(tokio::spawn(task));
        }
        let rooms = handles
            .into_iter()
            .zip(ctx.plan.rooms_of(i))
            .collect::<Vec<_>>();
        let control = Control {
            conn: j.conn,
            replies: j.replies,
            rooms,
            _control: keep,
        };
        self.receivers.push(tokio::spawn(receive_control(
            ctx.clone(),
            control,
            stop.clone(),
        )));
    }

    /// Waits for every task (after the stop), adds up the receivers' counts
    /// and closes the sessions (WebSocket sessions closed themselves).
    pub(super) async fn finish(self, dialer: &Dialer) -> Counts {
        for s in self.senders {
            let _ = s.await;
        }
        let mut counts = Counts::default();
        for r in self.receivers {
            if let Ok(c) = r.await {
                counts.add(&c);
            }
        }
        for conn in &self.conns {
            conn.close(VarInt::from_u32(0), b"load done");
        }
        dialer.wait_idle().await;
        counts
    }
}

/// Runs `f` until it ends or `stop` fires.
async fn until(f: impl std::future::Future<Output = ()>, stop: CancellationToken) {
    tokio::select! {
        _ = f => {}
        _ = stop.cancelled() => {}
    }
}

/// Publishes on schedule until the end of the run ([`Publisher`]). Holds the
/// control stream open afterwards: finishing it would end the session.
async fn send(
    ctx: Arc<Ctx>,
    client: u32,
    mut control: SendStream,
    conn: Connection,
    handles: Vec<u32>,
) {
    let mut publisher = Publisher::new(&ctx, client);
    // What a wtgate client does after its writes (PROTOCOL.md §10.1).
    let (wrote, prober) = tail_probe::spawn(conn.clone());
    let _prober = tokio_util::task::AbortOnDropHandle::new(prober);
    let mut out = Vec::with_capacity(4096);
    while let Some(due) = publisher.next_due() {
        tokio::time::sleep_until((ctx.epoch + Duration::from_nanos(due)).into()).await;
        out.clear();
        let mut outlet = StreamOutlet {
            out: &mut out,
            conn: &conn,
        };
        publisher.publish_due(&ctx, &handles, &mut outlet);
        if !out.is_empty() {
            if let Err(e) = control.write_all(&out).await {
                ctx.error(format!("publish: {e}"), 1);
                return;
            }
            wrote.notify_one();
        }
    }
    // Hold `control` until the run stops (`until` drops this future then).
    std::future::pending::<()>().await
}

/// Where a [`Publisher`] puts its messages: a transport's write path.
pub(super) trait Outlet {
    /// Queues `Publish { req, room, body }`.
    fn publish(&mut self, req: u32, room: &str, body: &[u8]);
    /// Sends (or queues) `Datagram::Send { handle, body }`.
    fn datagram(&mut self, handle: u32, body: &[u8]) -> Result<(), String>;
}

/// WebTransport: publishes into one buffer for the control stream, datagrams
/// straight to the connection.
struct StreamOutlet<'a> {
    out: &'a mut Vec<u8>,
    conn: &'a Connection,
}

impl Outlet for StreamOutlet<'_> {
    fn publish(&mut self, req: u32, room: &str, body: &[u8]) {
        wire::encode_publish(self.out, req, room, body);
    }

    fn datagram(&mut self, handle: u32, body: &[u8]) -> Result<(), String> {
        let mut payload = Vec::with_capacity(body.len() + 8);
        wire::encode_datagram_send(&mut payload, handle, body);
        self.conn
            .send_datagram(payload)
            .map_err(|e| format!("datagram send: {e}"))
    }
}

/// One sender's schedule and stamps, whatever carries its messages: message
/// `n` goes to the plan's publish room for `n`.
pub(super) struct Publisher {
    client: u32,
    pacer: Pacer,
    body: Vec<u8>,
    counter: u64,
    req: u32,
}

impl Publisher {
    /// Client `client`'s schedule (it must be a sender).
    pub(super) fn new(ctx: &Ctx, client: u32) -> Publisher {
        let plan = ctx.plan;
        Publisher {
            client,
            pacer: Pacer::new(
                client,
                plan.senders,
                ctx.rate,
                ctx.window.end_ns,
                CATCH_UP.as_nanos() as u64,
            ),
            body: vec![0u8; ctx.body],
            counter: 0,
            req: plan.rooms_per_client() + 1, // the joins used 1..=rooms
        }
    }

    /// When the next message is due (ns since the run's epoch); `None` once the
    /// schedule is over.
    pub(super) fn next_due(&self) -> Option<u64> {
        self.pacer.next_due()
    }

    /// Hands what is due now to `out` (`handles`: the client's rooms', for
    /// datagrams) and counts the measured sends; skipped sends are errors.
    pub(super) fn publish_due(&mut self, ctx: &Ctx, handles: &[u32], out: &mut impl Outlet) {
        let plan = ctx.plan;
        let now_ns = ctx.now_ns();
        let d = self.pacer.due(now_ns);
        if d.skipped > 0 {
            ctx.error("send skipped: sender behind", d.skipped);
        }
        for _ in 0..d.send {
            let j = plan.publish_slot(self.client, self.counter);
            let room = plan.room_of(self.client, j);
            Stamp {
                room,
                sender: self.client,
                counter: self.counter,
                sent_ns: now_ns,
            }
            .write(&mut self.body);
            self.counter += 1;
            let sent = match ctx.mode {
                Mode::Stream => {
                    out.publish(self.req, &ctx.rooms[room as usize], &self.body);
                    self.req = self.req.checked_add(1).unwrap_or(1);
                    true
                }
                Mode::Datagram => out
                    .datagram(handles[j as usize], &self.body)
                    .map_err(|e| ctx.error(e, 1))
                    .is_ok(),
            };
            if sent && ctx.window.measures(now_ns) {
                ctx.sent[room as usize].fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Reads one room stream until the run stops.
async fn receive_room(
    ctx: Arc<Ctx>,
    room: u32,
    mut reader: RoomReader,
    conn: Connection,
    stop: CancellationToken,
) -> Counts {
    let mut recv = RoomRecv::new(&ctx.plan, room);
    let ended = loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => break None,
            filled = reader.fill() => {
                if let Err(e) = filled {
                    break Some(room_error(&e));
                }
                let now_ns = ctx.now_ns();
                let failed = loop {
                    match reader.next_frame() {
                        Ok(Some(frame)) => {
                            if let Err(kind) = recv.on_frame(&ctx, frame, now_ns) {
                                break Some(kind);
                            }
                        }
                        Ok(None) => break None,
                        Err(e) => break Some(room_error(&e)),
                    }
                };
                recv.flush(&ctx);
                if let Some(kind) = failed {
                    break Some(kind);
                }
            }
        }
    };
    // A closed session is reported once, by its control task.
    if let Some(kind) = ended {
        if !stop.is_cancelled() && conn.quic_connection().close_reason().is_none() {
            ctx.error(kind, 1);
        }
    }
    recv.finish(&ctx)
}

/// A receiver in one room, whatever carries its frames: checks each message
/// ([`RoomTally`]) and adds them to the shared figures a batch at a time.
pub(super) struct RoomRecv {
    room: u32,
    tally: RoomTally,
    /// Messages since the last [`flush`](Self::flush), and the latencies (µs)
    /// of the measured ones.
    arrived: u64,
    latencies: Vec<u64>,
    /// `PresenceJoin`/`PresenceLeave` frames.
    presence: u64,
}

impl RoomRecv {
    /// A receiver in `room`.
    pub(super) fn new(plan: &Plan, room: u32) -> RoomRecv {
        RoomRecv {
            room,
            tally: RoomTally::new(plan, room),
            arrived: 0,
            latencies: Vec::with_capacity(256),
            presence: 0,
        }
    }

    /// Takes one `ServerFrame` body of the room's stream, received at `now_ns`;
    /// the error names what is wrong with it.
    pub(super) fn on_frame(&mut self, ctx: &Ctx, frame: &[u8], now_ns: u64) -> Result<(), String> {
        match wire::parse_message(frame) {
            Ok(Some(m)) => {
                self.on_body(ctx, Some(m.seq), m.body, now_ns);
                Ok(())
            }
            Ok(None) => {
                self.presence += u64::from(wire::is_presence(frame));
                Ok(())
            }
            Err(e) => Err(format!("room stream: {e}")),
        }
    }

    /// Takes the body of a datagram of the room, received at `now_ns`.
    pub(super) fn on_datagram(&mut self, ctx: &Ctx, body: &[u8], now_ns: u64) {
        self.on_body(ctx, None, body, now_ns);
    }

    fn on_body(&mut self, ctx: &Ctx, seq: Option<u64>, body: &[u8], now_ns: u64) {
        self.arrived += 1;
        if let Verdict::Measured { latency_ns } =
            self.tally
                .on_message(&ctx.plan, &ctx.window, seq, body, now_ns)
        {
            self.latencies.push(latency_ns / 1_000);
        }
    }

    /// Adds what arrived since the last flush to the run's figures.
    pub(super) fn flush(&mut self, ctx: &Ctx) {
        ctx.record(self.room, self.arrived, &mut self.latencies);
        self.arrived = 0;
    }

    /// Flushes, adds the presence frames to the run's, and returns the counts.
    pub(super) fn finish(mut self, ctx: &Ctx) -> Counts {
        self.flush(ctx);
        ctx.presence_frames
            .fetch_add(self.presence, Ordering::Relaxed);
        *self.tally.counts()
    }
}

/// What a control task owns.
struct Control {
    conn: Connection,
    replies: FrameReader<RecvStream>,
    /// The client's rooms: (handle, room).
    rooms: Vec<(u32, u32)>,
    /// A receiver's control stream, held open until the end.
    _control: Option<SendStream>,
}

/// Reads replies, namespace presence and (in datagram mode) datagrams until
/// the run stops; names the close code when the server ends the session.
async fn receive_control(ctx: Arc<Ctx>, mut c: Control, stop: CancellationToken) -> Counts {
    let plan = ctx.plan;
    let mut rooms: Vec<RoomRecv> = c
        .rooms
        .iter()
        .map(|&(_, room)| RoomRecv::new(&plan, room))
        .collect();
    let datagrams = ctx.mode == Mode::Datagram;
    let mut online = 0u64;
    let ended = loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => break None,
            d = c.conn.receive_datagram(), if datagrams => {
                let Ok(d) = d else {
                    break Some("datagram: connection lost".to_owned());
                };
                let handles = c.rooms.iter().map(|&(h, _)| h);
                on_datagram(&ctx, &d.payload(), handles, &mut rooms, ctx.now_ns());
                rooms.iter_mut().for_each(|r| r.flush(&ctx));
            }
            reply = c.replies.next::<ServerFrame>() => match reply {
                Ok(Some(frame)) => on_reply(&ctx, &frame, &mut online),
                Ok(None) | Err(_) => break Some("control stream closed".to_owned()),
            },
        }
    };
    ctx.online_frames.fetch_add(online, Ordering::Relaxed);
    if let Some(kind) = ended {
        // Name the close code when the server closed the session.
        let closed = tokio::time::timeout(Duration::from_millis(200), c.conn.closed()).await;
        let kind = match closed {
            Ok(wtransport::error::ConnectionError::ApplicationClosed(close)) => {
                let code = ErrorCode::from(close.code().into_inner() as u32);
                format!("closed by server: {code:?}")
            }
            _ => kind,
        };
        if !stop.is_cancelled() {
            ctx.error(kind, 1);
        }
    }
    let mut counts = Counts::default();
    for r in rooms {
        counts.add(&r.finish(&ctx));
    }
    counts
}

/// Takes a control frame that is not a reply the client waits for: errors,
/// `GoAway` and namespace presence (`online`) are counted, acks ignored.
pub(super) fn on_reply(ctx: &Ctx, frame: &ServerFrame, online: &mut u64) {
    match frame {
        ServerFrame::Error { code, .. } => ctx.error(format!("server: {code:?}"), 1),
        ServerFrame::GoAway { .. } => ctx.error("server: GoAway", 1),
        ServerFrame::OnlineJoin { .. } | ServerFrame::OnlineLeave { .. } => *online += 1,
        _ => {} // acks
    }
}

/// Takes a datagram payload received at `now_ns` for the rooms with `handles`
/// (in the order of `rooms`); one of another handle or type is an error.
pub(super) fn on_datagram(
    ctx: &Ctx,
    payload: &[u8],
    handles: impl IntoIterator<Item = u32>,
    rooms: &mut [RoomRecv],
    now_ns: u64,
) {
    match wire::parse_datagram_recv(payload) {
        Ok(Some((handle, body))) => match handles.into_iter().position(|h| h == handle) {
            Some(k) => rooms[k].on_datagram(ctx, body, now_ns),
            None => ctx.error("datagram for another handle", 1),
        },
        Ok(None) => {}
        Err(e) => ctx.error(format!("datagram: {e}"), 1),
    }
}

fn room_error(e: &RoomReadError) -> String {
    match e {
        RoomReadError::Stream(_) => "room stream: connection lost".to_owned(),
        other => other.to_string(),
    }
}
