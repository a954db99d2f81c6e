//! The QUIC settings of every wtgate endpoint (wtransport's and the loop's), and
//! the loop's server configuration from the server's identity.

use std::sync::Arc;
use std::time::Duration;

use quinn_proto::crypto::rustls::QuicServerConfig;
use quinn_proto::{AckFrequencyConfig, ServerConfig, TransportConfig};
use tokio_rustls::rustls;

/// How often an idle session is pinged, so NATs keep its mapping.
pub const KEEP_ALIVE: Duration = Duration::from_secs(10);
/// How long a silent connection lives.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest a client may hold an ACK (asked through ACK frequency). It is
/// also what the server's probe timeout waits beyond the RTT before it re-sends a
/// lost last packet (~12 ms on a 0.1 ms link at 10 ms). 2 ms cut that to ~3 ms
/// under loss, but in a busy room (200 clients, 50k deliveries/s) the ACKs it
/// brings overflowed the server's receive buffer: p50/p99 54/170 ms with 9,260 UDP
/// drops, against 2.7/25 ms and none at 10 ms (5 ms: 3.7/49 ms); bench/RESULTS.md.
/// Faster loss recovery comes from a cheaper signal than more ACKs: the loop's
/// tail probe (`tail_probe.rs`).
const CLIENT_MAX_ACK_DELAY: Duration = Duration::from_millis(10);

/// QUIC settings that bound what one client can make the server hold.
pub fn quic_transport() -> TransportConfig {
    let mut t = TransportConfig::default();
    // A client needs 2 bidirectional streams (the WebTransport CONNECT request and
    // the control stream) and 3 unidirectional ones (HTTP/3 control and QPACK);
    // everything else it might open is refused by flow control, not buffered.
    t.max_concurrent_bidi_streams(4u32.into());
    t.max_concurrent_uni_streams(4u32.into());
    // Client → server traffic is small control frames: small receive windows (a
    // frame larger than the window still arrives, in steps).
    t.stream_receive_window((128u32 * 1024).into());
    t.receive_window((256u32 * 1024).into());
    // Unacknowledged data held for one slow client stays bounded.
    t.send_window(2 * 1024 * 1024);
    t.datagram_receive_buffer_size(Some(64 * 1024));
    t.datagram_send_buffer_size(64 * 1024);
    // Ask peers that support it (quinn does; Chrome already thins its ACKs) to
    // acknowledge every 16 packets or CLIENT_MAX_ACK_DELAY: on loopback ACKs were
    // half the packets of a fan-out, and packets are what a delivery costs
    // (PERF.md).
    // A gap is acknowledged at once (reordering threshold 1, RFC 9000's own
    // rule): the loop's tail probe relies on it to reveal a lost last packet.
    let mut ack = AckFrequencyConfig::default();
    ack.ack_eliciting_threshold(16u32.into())
        .max_ack_delay(Some(CLIENT_MAX_ACK_DELAY))
        .reordering_threshold(1u32.into());
    t.ack_frequency_config(Some(ack));
    t.keep_alive_interval(Some(KEEP_ALIVE));
    t.max_idle_timeout(Some(IDLE_TIMEOUT.try_into().expect("a valid idle timeout")));
    t
}

/// The loop's server configuration: TLS 1.3 with ALPN `h3` on `identity`, and
/// [`quic_transport`].
pub fn server_config(identity: &wtransport::Identity) -> Result<Arc<ServerConfig>, String> {
    let mut tls = crate::certs::tls_server_config(identity, &[&rustls::version::TLS13])?;
    tls.alpn_protocols = vec![b"h3".to_vec()];
    tls.max_early_data_size = 0;
    let crypto = QuicServerConfig::try_from(tls).map_err(|e| e.to_string())?;
    let mut config = ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(Arc::new(quic_transport()));
    Ok(Arc::new(config))
}
