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
    decode_datagram, decode_frame, encode_datagram, frame_bytes, ClientFrame, Datagram,
    ServerFrame, DEFAULT_MAX_FRAME,
};

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
    queue: VecDeque<Bytes>,
    waker: Waker,
    datagrams: VecDeque<Bytes>,
}

struct Room {
    handle: u32,
    seq: u64,
    members: Vec<u64>,
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
    rooms: HashMap<String, Room>,
    names: Vec<String>,
    members: HashMap<u64, Member>,
    next: u64,
    dropped: u64,
}

impl Floor {
    fn publish(&mut self, room: &str, from: &str, body: Bytes) -> u64 {
        let Some(r) = self.rooms.get_mut(room) else {
            return 0;
        };
        r.seq += 1;
        let frame = frame_bytes(&ServerFrame::Message {
            seq: r.seq,
            from: from.to_owned(),
            body,
            ts: unix_ms(),
        });
        for id in &r.members {
            if let Some(m) = self.members.get_mut(id) {
                if m.queue.len() >= QUEUE {
                    self.dropped += 1;
                    continue;
                }
                if m.queue.is_empty() {
                    m.waker.wake_by_ref();
                }
                m.queue.push_back(frame.clone());
            }
        }
        r.seq
    }

    fn volatile(&mut self, handle: u32, sender: u64, from: &str, body: Bytes) {
        let Some(r) = self
            .names
            .get(handle as usize)
            .and_then(|n| self.rooms.get(n))
        else {
            return;
        };
        let payload = encode_datagram(&Datagram::Recv {
            handle,
            from: from.to_owned(),
            body,
        });
        for id in r.members.iter().filter(|id| **id != sender) {
            if let Some(m) = self.members.get_mut(id) {
                if m.datagrams.len() < 256 {
                    m.datagrams.push_back(payload.clone());
                    m.waker.wake_by_ref();
                }
            }
        }
    }

    fn leave(&mut self, room: &str, session: u64) {
        if let Some(r) = self.rooms.get_mut(room) {
            r.members.retain(|m| *m != session);
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
                ServerFrame::Welcome {
                    session: s.id,
                    user: s.user.clone(),
                    max_frame: DEFAULT_MAX_FRAME as u32,
                    online: None,
                }
            }
            ClientFrame::Join { req, room, .. } => {
                let next = self.names.len() as u32;
                let r = self.rooms.entry(room.clone()).or_insert_with(|| Room {
                    handle: next,
                    seq: 0,
                    members: Vec::new(),
                });
                if r.handle == next {
                    self.names.push(room.clone());
                }
                let stream = io.open_uni()?;
                let head = frame_bytes(&ServerFrame::RoomStream {
                    room: room.clone(),
                    handle: r.handle,
                });
                io.write(stream, head);
                r.members.push(s.id);
                s.streams.insert(r.handle, stream);
                s.joined.push(room.clone());
                ServerFrame::Joined {
                    req,
                    room,
                    handle: r.handle,
                    epoch: 1,
                    seq: r.seq,
                    recovered: false,
                    members: vec![],
                }
            }
            ClientFrame::Publish { req, room, body } => {
                let seq = self.publish(&room, &s.user, body);
                ServerFrame::Ack { req, seq }
            }
            ClientFrame::Leave { req, room } => {
                self.leave(&room, s.id);
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
        // One room stream in this benchmark; frames go on the stream of the
        // room they came from in wtgate proper.
        if let Some(&stream) = s.streams.values().next() {
            for frame in member.queue.drain(..) {
                io.write(stream, frame);
            }
        } else {
            member.queue.clear();
        }
        for datagram in member.datagrams.drain(..) {
            io.send_datagram(&datagram);
        }
    }

    fn closed(&mut self, s: Session, _reason: &ConnectionError) {
        for room in &s.joined {
            self.leave(room, s.id);
        }
        self.members.remove(&s.id);
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
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
