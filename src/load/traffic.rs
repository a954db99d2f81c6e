//! Phase 2 of a run: senders publishing on schedule, and receivers checking
//! every message — one task per room stream, one per control stream (replies,
//! namespace presence, datagrams).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use wtransport::endpoint::endpoint_side;
use wtransport::{Connection, Endpoint, RecvStream, SendStream, VarInt};

use super::plan::{Pacer, Stamp};
use super::session::{Joined, RoomReadError, RoomReader};
use super::tally::{Counts, RoomTally, Verdict};
use super::{wire, Ctx, Mode, CATCH_UP};
use crate::protocol::{ErrorCode, ServerFrame};
use crate::transport::FrameReader;

/// The send and receive tasks of a run.
pub(super) struct Tasks {
    senders: Vec<JoinHandle<()>>,
    receivers: Vec<JoinHandle<Counts>>,
    conns: Vec<Connection>,
}

impl Tasks {
    /// Receivers for every connected client, and a sender per publishing one.
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
            let Some(j) = c else { continue };
            let i = i as u32;
            t.conns.push(j.conn.clone());
            ctx.online_frames
                .fetch_add(j.online_frames, Ordering::Relaxed);
            let handles: Vec<u32> = j.rooms.iter().map(|r| r.handle).collect();
            // A sender writes on the control stream; a receiver keeps it open (a
            // finished control stream ends the session).
            let keep = if ctx.plan.is_sender(i) {
                let sender = send(ctx.clone(), i, j.control, j.conn.clone(), handles.clone());
                t.senders.push(tokio::spawn(until(sender, stop.clone())));
                None
            } else {
                Some(j.control)
            };
            for (k, room) in j.rooms.into_iter().enumerate() {
                let r = ctx.plan.room_of(i, k as u32);
                let task = receive_room(ctx.clone(), r, room.reader, j.conn.clone(), stop.clone());
                t.receivers.push(tokio::spawn(task));
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
            t.receivers.push(tokio::spawn(receive_control(
                ctx.clone(),
                control,
                stop.clone(),
            )));
        }
        t
    }

    /// Waits for every task (after the stop), adds up the receivers' counts
    /// and closes the sessions.
    pub(super) async fn finish(self, endpoints: &[Arc<Endpoint<endpoint_side::Client>>]) -> Counts {
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
        for e in endpoints {
            let _ = tokio::time::timeout(Duration::from_secs(1), e.wait_idle()).await;
        }
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

/// Publishes on schedule until the end of the run; message `n` goes to the
/// plan's publish room for `n` (`handles` are the client's rooms', for
/// datagrams). Holds the control stream open afterwards: finishing it would end
/// the session.
async fn send(
    ctx: Arc<Ctx>,
    client: u32,
    mut control: SendStream,
    conn: Connection,
    handles: Vec<u32>,
) {
    let plan = ctx.plan;
    let mut pacer = Pacer::new(
        client,
        plan.senders,
        ctx.rate,
        ctx.window.end_ns,
        CATCH_UP.as_nanos() as u64,
    );
    let mut body = vec![0u8; ctx.body];
    let mut out = Vec::with_capacity(4096);
    let mut counter = 0u64;
    let mut req = plan.rooms_per_client() + 1; // the joins used 1..=rooms
    while let Some(due) = pacer.next_due() {
        tokio::time::sleep_until((ctx.epoch + Duration::from_nanos(due)).into()).await;
        let now_ns = ctx.now_ns();
        let d = pacer.due(now_ns);
        if d.skipped > 0 {
            ctx.error("send skipped: sender behind", d.skipped);
        }
        out.clear();
        for _ in 0..d.send {
            let j = plan.publish_slot(client, counter);
            let room = plan.room_of(client, j);
            Stamp {
                room,
                sender: client,
                counter,
                sent_ns: now_ns,
            }
            .write(&mut body);
            counter += 1;
            let sent = match ctx.mode {
                Mode::Stream => {
                    wire::encode_publish(&mut out, req, &ctx.rooms[room as usize], &body);
                    req = req.checked_add(1).unwrap_or(1);
                    true
                }
                Mode::Datagram => {
                    let mut payload = Vec::with_capacity(body.len() + 8);
                    wire::encode_datagram_send(&mut payload, handles[j as usize], &body);
                    conn.send_datagram(payload)
                        .map_err(|e| ctx.error(format!("datagram send: {e}"), 1))
                        .is_ok()
                }
            };
            if sent && ctx.window.measures(now_ns) {
                ctx.sent[room as usize].fetch_add(1, Ordering::Relaxed);
            }
        }
        if !out.is_empty() {
            if let Err(e) = control.write_all(&out).await {
                ctx.error(format!("publish: {e}"), 1);
                return;
            }
        }
    }
    // Hold `control` until the run stops (`until` drops this future then).
    std::future::pending::<()>().await
}

/// Reads one room stream until the run stops.
async fn receive_room(
    ctx: Arc<Ctx>,
    room: u32,
    mut reader: RoomReader,
    conn: Connection,
    stop: CancellationToken,
) -> Counts {
    let plan = ctx.plan;
    let mut tally = RoomTally::new(&plan, room);
    let mut latencies: Vec<u64> = Vec::with_capacity(256);
    let mut presence = 0u64;
    let ended = loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => break None,
            filled = reader.fill() => {
                if let Err(e) = filled {
                    break Some(room_error(&e));
                }
                let now_ns = ctx.now_ns();
                let mut arrived = 0;
                let failed = loop {
                    let frame = match reader.next_frame() {
                        Ok(Some(frame)) => frame,
                        Ok(None) => break None,
                        Err(e) => break Some(room_error(&e)),
                    };
                    let m = match wire::parse_message(frame) {
                        Ok(Some(m)) => m,
                        Ok(None) => {
                            presence += u64::from(wire::is_presence(frame));
                            continue;
                        }
                        Err(e) => break Some(format!("room stream: {e}")),
                    };
                    arrived += 1;
                    let v = tally.on_message(&plan, &ctx.window, Some(m.seq), m.body, now_ns);
                    if let Verdict::Measured { latency_ns } = v {
                        latencies.push(latency_ns / 1_000);
                    }
                };
                ctx.record(room, arrived, &mut latencies);
                if let Some(kind) = failed {
                    break Some(kind);
                }
            }
        }
    };
    ctx.presence_frames.fetch_add(presence, Ordering::Relaxed);
    // A closed session is reported once, by its control task.
    if let Some(kind) = ended {
        if !stop.is_cancelled() && conn.quic_connection().close_reason().is_none() {
            ctx.error(kind, 1);
        }
    }
    *tally.counts()
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
    let mut tallies: Vec<RoomTally> = c
        .rooms
        .iter()
        .map(|&(_, room)| RoomTally::new(&plan, room))
        .collect();
    let mut latencies: Vec<u64> = Vec::with_capacity(16);
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
                match wire::parse_datagram_recv(&d.payload()) {
                    Ok(Some((handle, body))) => {
                        let Some(k) = c.rooms.iter().position(|&(h, _)| h == handle) else {
                            ctx.error("datagram for another handle", 1);
                            continue;
                        };
                        let now_ns = ctx.now_ns();
                        if let Verdict::Measured { latency_ns } =
                            tallies[k].on_message(&plan, &ctx.window, None, body, now_ns)
                        {
                            latencies.push(latency_ns / 1_000);
                        }
                        ctx.record(c.rooms[k].1, 1, &mut latencies);
                    }
                    Ok(None) => {}
                    Err(e) => ctx.error(format!("datagram: {e}"), 1),
                }
            }
            reply = c.replies.next::<ServerFrame>() => match reply {
                Ok(Some(ServerFrame::Error { code, .. })) => ctx.error(format!("server: {code:?}"), 1),
                Ok(Some(ServerFrame::GoAway { .. })) => ctx.error("server: GoAway", 1),
                Ok(Some(ServerFrame::OnlineJoin { .. } | ServerFrame::OnlineLeave { .. })) => online += 1,
                Ok(Some(_)) => {} // acks
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
    for t in &tallies {
        counts.add(t.counts());
    }
    counts
}

fn room_error(e: &RoomReadError) -> String {
    match e {
        RoomReadError::Stream(_) => "room stream: connection lost".to_owned(),
        other => other.to_string(),
    }
}
