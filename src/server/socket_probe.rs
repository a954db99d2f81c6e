//! How many bytes a TCP connection's kernel send buffer holds that were not sent
//! yet, so the WebSocket driver can tell a backed-up client and drop volatile
//! frames for it instead of queueing them (PROTOCOL.md §16.3). Linux's
//! `SIOCOUTQNSD`: bytes in flight on a long, healthy path do not count, only those
//! the peer's window or the congestion window holds back. Elsewhere the probe
//! knows nothing and volatile frames are always written.

#[cfg(unix)]
use std::os::fd::{AsRawFd, RawFd};

/// Reads the unsent bytes of one accepted TCP connection.
///
/// It holds the descriptor's number, not the socket: it is only asked while the
/// connection it came from is open (the WebSocket owns that connection).
#[derive(Debug, Clone, Copy)]
pub(crate) struct SocketProbe {
    #[cfg(unix)]
    fd: RawFd,
}

impl SocketProbe {
    /// The probe of `tcp`.
    pub(crate) fn of(tcp: &tokio::net::TcpStream) -> Self {
        #[cfg(not(unix))]
        let _ = tcp;
        SocketProbe {
            #[cfg(unix)]
            fd: tcp.as_raw_fd(),
        }
    }

    /// Bytes written to the socket and not sent yet; `None` where the platform
    /// cannot tell.
    pub(crate) fn unsent(&self) -> Option<usize> {
        #[cfg(target_os = "linux")]
        {
            let mut unsent: libc::c_int = 0;
            // SAFETY: SIOCOUTQNSD writes one int through the pointer, which points
            // at a live c_int; the descriptor is the open connection's (see the
            // type's doc), and a stale one only fails.
            let r = unsafe { libc::ioctl(self.fd, libc::SIOCOUTQNSD, &mut unsent) };
            (r == 0).then_some(unsent.max(0) as usize)
        }
        #[cfg(not(target_os = "linux"))]
        None
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn counts_what_the_peer_did_not_read() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        let probe = SocketProbe::of(&server);
        assert_eq!(probe.unsent(), Some(0));
        // The client reads nothing: once its receive window is full, the rest stays
        // in the server's send buffer.
        let chunk = vec![0u8; 64 * 1024];
        let mut written = 0;
        while written < 64 * 1024 * 1024 {
            match tokio::time::timeout(std::time::Duration::from_millis(200), server.write(&chunk))
                .await
            {
                Ok(Ok(n)) => written += n,
                _ => break,
            }
        }
        let unsent = probe.unsent().unwrap();
        assert!(
            unsent > 64 * 1024,
            "{unsent} bytes unsent after {written} written"
        );
        drop(client);
    }
}
