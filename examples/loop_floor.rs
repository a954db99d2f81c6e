//! The engine's floor: the same fan-out as `floor_server.rs`, on wtgate's event
//! loop (`wtgate::engine`, quinn-proto without a task per connection) instead of
//! wtransport's server, so a benchmark shows what the loop costs per delivery
//! before any wtgate logic.
//!
//! Same subset of the protocol (`Hello` → `Welcome`, `Join` → room stream +
//! `Joined`, `Publish` → `Ack` and the message to every member, volatile
//! datagrams), so `wtgate load` drives it unchanged. A publish queues the
//! encoded frame for each member and wakes its connection; the loop writes every
//! woken member in the same pass and sends what each connection has.
//!
//! ```sh
//! cargo run --release --example loop_floor -- --listen 127.0.0.1:4435 --certs-dir /tmp/floor-certs
//! ```

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::task::Waker;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use clap::Parser;
use quinn_proto::{ConnectionError, StreamId};
use tokio_util::sync::CancellationToken;

use wtgate::engine::{Admit, App, EventLoop, Io, Request};
use wtgate::protocol::{
    decode_datagram, decode_frame, frame_bytes, ClientFrame, Datagram, ServerFrame,
    DEFAULT_MAX_FRAME,
};

#[path = "floor/rooms.rs"]
mod rooms;
use rooms::{joined, room_stream, welcome, Rooms};

#[derive(Debug, Parser)]
struct Args {
    /// UDP address to listen on.
    #[arg(long, default_value = "127.0.0.1:4435")]
    listen: SocketAddr,
    /// Where the self-signed certificate is kept (made when missing).
    #[arg(long, default_value = "certs")]
    certs_dir: PathBuf,
}

/// Frames queued per member; beyond it a frame is dropped (reported lost).
const QUEUE: usize = 4096;

struct Member {
    /// Room frames by room handle, in order.
    queue: VecDeque<(u32, Bytes)>,
    waker: Waker,
    datagrams: VecDeque<Bytes>,
}

/// A session: its control stream and room streams.
struct Session {
    id: u64,
    user: String,
    control: Option<StreamId>,
    buf: BytesMut,
    welcomed: bool,
    /// Room streams by handle, opened on join.
    streams: HashMap<u32, StreamId>,
    joined: Vec<String>,
}

#[derive(Default)]
struct Floor {
    /// Members by session id.
    rooms: Rooms<u64>,
    members: HashMap<u64, Member>,
    next: u64,
    dropped: u64,
}

impl Floor {
    /// Queues the message for every member and wakes their connections.
    fn publish(&mut self, room: &str, from: &str, body: Bytes) -> u64 {
        let Some((handle, seq, frame, ids)) = self.rooms.publish(room, from, body) else {
            return 0;
        };
        for id in ids {
            if let Some(m) = self.members.get_mut(id) {
                if m.queue.len() >= QUEUE {
                    self.dropped += 1;
                    continue;
                }
                if m.queue.is_empty() {
                    m.waker.wake_by_ref();
                }
                m.queue.push_back((handle, frame.clone()));
            }
        }
        seq
    }

    fn volatile(&mut self, handle: u32, sender: u64, from: &str, body: Bytes) {
        let Some((payload, ids)) = self.rooms.volatile(handle, from, body) else {
            return;
        };
        for id in ids.iter().filter(|id| **id != sender) {
            if let Some(m) = self.members.get_mut(id) {
                if m.datagrams.len() < 256 {
                    m.datagrams.push_back(payload.clone());
                    m.waker.wake_by_ref();
                }
            }
        }
    }

    fn command(
        &mut self,
        s: &mut Session,
        io: &mut Io<'_>,
        frame: ClientFrame,
    ) -> Option<ServerFrame> {
        Some(match frame {
            ClientFrame::Hello { .. } if !s.welcomed => {
                s.welcomed = true;
                io.write(s.control?, welcome(s.id, &s.user));
                return None;
            }
            ClientFrame::Join { req, room, .. } => {
                let stream = io.open_uni()?;
                let (handle, seq) = self.rooms.join(&room, s.id);
                io.write(stream, room_stream(&room, handle));
                s.streams.insert(handle, stream);
                s.joined.push(room.clone());
                joined(req, room, handle, seq)
            }
            ClientFrame::Publish { req, room, body } => {
                let seq = self.publish(&room, &s.user, body);
                ServerFrame::Ack { req, seq }
            }
            ClientFrame::Leave { req, room } => {
                self.rooms.leave(&room, |id| *id == s.id);
                s.joined.retain(|r| *r != room);
                ServerFrame::Left { req, room }
            }
            _ => return None,
        })
    }
}

impl App for Floor {
    type Session = Session;
    type Ticket = ();

    fn admit(&mut self, _remote: SocketAddr, _validated: bool) -> Admit<()> {
        Admit::Accept(())
    }

    fn drained(&self) -> bool {
        self.members.is_empty()
    }

    fn request(
        &mut self,
        _request: Request,
        _ticket: (),
        _remote: SocketAddr,
        _started: Instant,
        io: &mut Io<'_>,
    ) -> Result<Session, u16> {
        self.next += 1;
        let id = self.next;
        self.members.insert(
            id,
            Member {
                queue: VecDeque::new(),
                waker: io.waker().clone(),
                datagrams: VecDeque::new(),
            },
        );
        io.set_timer(None);
        Ok(Session {
            id,
            user: format!("s{id}"),
            control: None,
            buf: BytesMut::new(),
            welcomed: false,
            streams: HashMap::new(),
            joined: Vec::new(),
        })
    }

    fn drive(&mut self, s: &mut Session, io: &mut Io<'_>) {
        if s.control.is_none() {
            s.control = io.accept_bi();
        }
        let ready = io.ready();
        if let (Some(control), true) = (s.control, ready.readable) {
            match io.read(control, &mut s.buf, 64 * 1024) {
                Ok(false) => {}
                Ok(true) | Err(_) => {
                    io.close(0, b"bye");
                    return;
                }
            }
            loop {
                match decode_frame::<ClientFrame>(&mut s.buf, DEFAULT_MAX_FRAME) {
                    Ok(Some(frame)) => {
                        if let Some(reply) = self.command(s, io, frame) {
                            io.write(control, frame_bytes(&reply));
                        }
                    }
                    Ok(None) => break,
                    Err(_) => {
                        io.close(1, b"bad frame");
                        return;
                    }
                }
            }
        }
        while let Some(datagram) = ready.datagrams.then(|| io.recv_datagram()).flatten() {
            if let Ok(Datagram::Send { handle, body }) = decode_datagram(&datagram) {
                let user = s.user.clone();
                self.volatile(handle, s.id, &user, body);
            }
        }
        let Some(member) = self.members.get_mut(&s.id) else {
            return;
        };
        for (handle, frame) in member.queue.drain(..) {
            if let Some(&stream) = s.streams.get(&handle) {
                io.write(stream, frame);
            }
        }
        for datagram in member.datagrams.drain(..) {
            io.send_datagram(&datagram);
        }
    }

    fn closed(&mut self, s: Session, _reason: &ConnectionError) {
        for room in &s.joined {
            self.rooms.leave(room, |id| *id == s.id);
        }
        self.members.remove(&s.id);
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let files = wtgate::certs::ensure(&args.certs_dir)?.files;
    let identity = wtransport::Identity::load_pemfiles(&files.cert, &files.key).await?;
    let hash = wtgate::certs::hash_der(identity.certificate_chain().as_slice()[0].der());
    let server = wtgate::engine::server_config(&identity).map_err(anyhow::Error::msg)?;
    let socket = std::net::UdpSocket::bind(args.listen)?;
    let event_loop = EventLoop::new(Floor::default(), socket, server, Duration::from_secs(10))?;
    println!("floor listening on https://{}", event_loop.local_addr()?);
    println!("certificate sha-256: {hash}");
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        stop.cancel();
    });
    event_loop
        .run(shutdown, 0, Duration::from_millis(500))
        .await;
    Ok(())
}
