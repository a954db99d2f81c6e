//! The transport floor: the same fan-out as wtgate with bare wtransport and no
//! wtgate logic, so a benchmark shows what wtgate itself adds.
//!
//! It speaks just enough of the wtgate protocol (same frames, same codec) for
//! `wtgate load` to drive it unchanged: `Hello` → `Welcome` (no token check),
//! `Join` → a unidirectional room stream + `Joined`, `Publish` → `Ack` and the
//! message to every member (the sender included), `Datagram::Send` → `Recv` to
//! the others. Nothing else: no auth, limits, history, presence, metrics, hub
//! or broker. One uni stream per session, a bounded channel (4,096 frames) per
//! session writer that writes each frame at once, and the publisher encodes a
//! message once and hands every member a `Bytes` clone under one std mutex.
//! Transport settings are wtransport's defaults (plus the keep-alive and idle
//! timeout wtgate uses).
//!
//! ```sh
//! cargo run --release --example floor_server -- --listen 127.0.0.1:4434 --certs-dir /tmp/floor-certs
//! ```
//! It prints `floor listening on https://ADDR` and `certificate sha-256: HEX`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use tokio::sync::mpsc;
use wtransport::endpoint::IncomingSession;
use wtransport::{Connection, Endpoint, Identity, ServerConfig};

use wtgate::protocol::{
    decode_datagram, frame_bytes, ClientFrame, Datagram, ServerFrame, DEFAULT_MAX_FRAME,
};
use wtgate::transport::FrameReader;

#[path = "floor/rooms.rs"]
mod rooms;
use rooms::{joined, room_stream, welcome, Rooms};

/// Frames queued per session writer; a full queue drops the frame (the load
/// tester then reports it lost).
const QUEUE: usize = 4096;

#[derive(Debug, Parser)]
struct Args {
    /// UDP address to listen on.
    #[arg(long, default_value = "127.0.0.1:4434")]
    listen: SocketAddr,
    /// Where the self-signed certificate is kept (made when missing).
    #[arg(long, default_value = "certs")]
    certs_dir: PathBuf,
    /// SO_RCVBUF/SO_SNDBUF of the UDP socket in bytes (0: the OS default, ~208 KiB;
    /// the kernel caps it at net.core.rmem_max/wmem_max).
    #[arg(long, default_value_t = 0)]
    socket_buffer: usize,
}

/// The server's UDP socket, with the requested buffer sizes.
fn bind(addr: SocketAddr, buffer: usize) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if buffer > 0 {
        socket.set_recv_buffer_size(buffer)?;
        socket.set_send_buffer_size(buffer)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

struct Member {
    session: u64,
    frames: mpsc::Sender<Bytes>,
    conn: Connection,
}

/// Every room, behind one std mutex (never held across an `.await`).
#[derive(Default)]
struct State {
    rooms: Mutex<Rooms<Member>>,
    next_session: AtomicU64,
    dropped: AtomicU64,
}

impl State {
    fn rooms(&self) -> std::sync::MutexGuard<'_, Rooms<Member>> {
        self.rooms.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn leave(&self, room: &str, session: u64) {
        self.rooms().leave(room, |m| m.session == session);
    }

    /// Encodes once, queues a clone for every member; returns the seq.
    fn publish(&self, room: &str, from: &str, body: Bytes) -> Option<u64> {
        let mut rooms = self.rooms();
        let (_, seq, frame, members) = rooms.publish(room, from, body)?;
        for m in members {
            if m.frames.try_send(frame.clone()).is_err() {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        Some(seq)
    }

    fn volatile(&self, handle: u32, sender: u64, from: &str, body: Bytes) {
        let rooms = self.rooms();
        let Some((payload, members)) = rooms.volatile(handle, from, body) else {
            return;
        };
        for m in members.iter().filter(|m| m.session != sender) {
            let _ = m.conn.send_datagram(payload.clone());
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let files = wtgate::certs::ensure(&args.certs_dir)?.files;
    let identity = Identity::load_pemfiles(&files.cert, &files.key).await?;
    let hash = wtgate::certs::hash_der(identity.certificate_chain().as_slice()[0].der());
    let config = ServerConfig::builder()
        .with_bind_socket(bind(args.listen, args.socket_buffer)?)
        .with_identity(identity)
        .keep_alive_interval(Some(Duration::from_secs(10)))
        .max_idle_timeout(Some(Duration::from_secs(30)))?
        .build();
    let endpoint = Endpoint::server(config)?;
    println!("floor listening on https://{}", endpoint.local_addr()?);
    println!("certificate sha-256: {hash}");
    let state = Arc::new(State::default());
    loop {
        tokio::select! {
            incoming = endpoint.accept() => {
                tokio::spawn(session(incoming, state.clone()));
            }
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    eprintln!(
        "floor: {} frames dropped on full queues",
        state.dropped.load(Ordering::Relaxed)
    );
    Ok(())
}

async fn session(incoming: IncomingSession, state: Arc<State>) {
    let Ok(request) = incoming.await else { return };
    let Ok(conn) = request.accept().await else {
        return;
    };
    let id = state.next_session.fetch_add(1, Ordering::Relaxed) + 1;
    let user = format!("s{id}");
    let Ok((mut control, recv)) = conn.accept_bi().await else {
        return;
    };
    let mut reader = FrameReader::new(recv, DEFAULT_MAX_FRAME);
    match reader.next::<ClientFrame>().await {
        Ok(Some(ClientFrame::Hello { .. })) => {}
        _ => return,
    }
    if control.write_all(&welcome(id, &user)).await.is_err() {
        return;
    }
    let mut rooms_in: Vec<String> = Vec::new();
    loop {
        tokio::select! {
            frame = reader.next::<ClientFrame>() => {
                let reply = match frame {
                    Ok(Some(ClientFrame::Join { req, room, .. })) => {
                        let opened = match conn.open_uni().await {
                            Ok(opening) => opening.await.ok(),
                            Err(_) => None,
                        };
                        let Some(mut stream) = opened else { break };
                        let (tx, mut rx) = mpsc::channel::<Bytes>(QUEUE);
                        let member = Member { session: id, frames: tx, conn: conn.clone() };
                        let (handle, seq) = state.rooms().join(&room, member);
                        let head = room_stream(&room, handle);
                        tokio::spawn(async move {
                            if stream.write_all(&head).await.is_err() {
                                return;
                            }
                            while let Some(frame) = rx.recv().await {
                                if stream.write_all(&frame).await.is_err() {
                                    return;
                                }
                            }
                        });
                        rooms_in.push(room.clone());
                        joined(req, room, handle, seq)
                    }
                    Ok(Some(ClientFrame::Publish { req, room, body })) => {
                        let seq = state.publish(&room, &user, body).unwrap_or(0);
                        ServerFrame::Ack { req, seq }
                    }
                    Ok(Some(ClientFrame::Leave { req, room })) => {
                        state.leave(&room, id);
                        rooms_in.retain(|r| *r != room);
                        ServerFrame::Left { req, room }
                    }
                    Ok(Some(_)) => continue,
                    Ok(None) | Err(_) => break,
                };
                if control.write_all(&frame_bytes(&reply)).await.is_err() {
                    break;
                }
            }
            datagram = conn.receive_datagram() => {
                let Ok(datagram) = datagram else { break };
                if let Ok(Datagram::Send { handle, body }) = decode_datagram(&datagram.payload()) {
                    state.volatile(handle, id, &user, body);
                }
            }
        }
    }
    for room in rooms_in {
        state.leave(&room, id);
    }
}
