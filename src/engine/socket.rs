//! The loop's UDP socket: batched receives (`recvmmsg`, GRO) and segmented sends
//! (GSO) through `quinn-udp`, as quinn itself does.

use std::io::IoSliceMut;
use std::net::SocketAddr;

use bytes::BytesMut;
use quinn_udp::{RecvMeta, Transmit, UdpSocketState, BATCH_SIZE};
use tokio::io::Interest;
use tracing::debug;

/// Bytes of one receive slot: a GRO batch of full-size datagrams.
const SLOT: usize = 64 * 1024;

/// A non-blocking UDP socket registered with tokio.
pub(super) struct Socket {
    io: tokio::net::UdpSocket,
    state: UdpSocketState,
}

/// Receive buffers reused across calls.
pub(super) struct RecvBuffers {
    slots: Vec<u8>,
    metas: [RecvMeta; BATCH_SIZE],
}

impl RecvBuffers {
    pub(super) fn new() -> Self {
        RecvBuffers {
            slots: vec![0; SLOT * BATCH_SIZE],
            metas: [RecvMeta::default(); BATCH_SIZE],
        }
    }
}

impl Socket {
    pub(super) fn new(socket: std::net::UdpSocket) -> std::io::Result<Self> {
        let state = UdpSocketState::new((&socket).into())?;
        let io = tokio::net::UdpSocket::from_std(socket)?;
        Ok(Socket { io, state })
    }

    pub(super) fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.io.local_addr()
    }

    pub(super) fn may_fragment(&self) -> bool {
        self.state.may_fragment()
    }

    pub(super) fn max_segments(&self) -> usize {
        self.state.max_gso_segments().max(1)
    }

    /// Waits until the socket may have datagrams.
    pub(super) async fn readable(&self) {
        let _ = self.io.readable().await;
    }

    /// Hands one batch of datagrams to `each` (GRO batches split into single
    /// datagrams); `WouldBlock` when there is none.
    pub(super) fn try_recv(
        &self,
        bufs: &mut RecvBuffers,
        mut each: impl FnMut(SocketAddr, BytesMut),
    ) -> std::io::Result<()> {
        let RecvBuffers { slots, metas } = bufs;
        let mut iovs: [IoSliceMut<'_>; BATCH_SIZE] = {
            let mut slots = slots.chunks_mut(SLOT).map(IoSliceMut::new);
            std::array::from_fn(|_| slots.next().expect("BATCH_SIZE slots"))
        };
        let count = self.io.try_io(Interest::READABLE, || {
            self.state.recv((&self.io).into(), &mut iovs, metas)
        })?;
        for (meta, iov) in metas.iter().zip(iovs.iter()).take(count) {
            let mut data = BytesMut::from(&iov[..meta.len]);
            while !data.is_empty() {
                let one = data.split_to(meta.stride.min(data.len()));
                each(meta.addr, one);
            }
        }
        Ok(())
    }

    /// Sends at once or not at all (a stateless answer: a lost one is re-asked).
    pub(super) fn send(&self, transmit: &quinn_proto::Transmit, buf: &[u8]) {
        let t = udp_transmit(transmit, buf);
        let _ = self.io.try_io(Interest::WRITABLE, || {
            self.state.send((&self.io).into(), &t)
        });
    }

    /// Sends, waiting while the socket's send buffer is full.
    pub(super) async fn send_waiting(&self, transmit: &quinn_proto::Transmit, buf: &[u8]) {
        let t = udp_transmit(transmit, buf);
        loop {
            match self.io.try_io(Interest::WRITABLE, || {
                self.state.send((&self.io).into(), &t)
            }) {
                Ok(()) => return,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if self.io.writable().await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    debug!("UDP send: {e}");
                    return;
                }
            }
        }
    }
}

fn udp_transmit<'a>(transmit: &quinn_proto::Transmit, buf: &'a [u8]) -> Transmit<'a> {
    Transmit {
        destination: transmit.destination,
        ecn: transmit.ecn.map(|ecn| {
            quinn_udp::EcnCodepoint::from_bits(ecn as u8).expect("a valid ECN codepoint")
        }),
        contents: &buf[..transmit.size],
        segment_size: transmit.segment_size,
        src_ip: transmit.src_ip,
    }
}
