//! The QUIC and WebTransport engine: one event loop that owns a UDP socket and
//! every connection on it (quinn-proto, sans-IO QUIC) and drives each session in
//! the same pass that reads its packets, instead of quinn's task per connection
//! and wtransport's driver per session (bench/RESULTS.md: their wake-ups were the
//! cost of a delivery).
//!
//! - `event_loop.rs`: the loop, the [`App`] it drives and the [`Io`] it lends.
//! - `webtransport.rs`: HTTP/3 SETTINGS, the CONNECT request and the session's
//!   stream and datagram headers over one connection (`wtransport-proto`).
//! - `config.rs`: the QUIC settings every wtgate endpoint uses.
//! - `socket.rs`: batched UDP I/O (`quinn-udp`: `recvmmsg`, GRO, GSO).
//! - `tail_probe.rs`: a PING after the last data on lossy paths, so a lost last
//!   packet is found in a millisecond, not a probe timeout.

mod config;
mod event_loop;
mod socket;
mod tail_probe;
mod webtransport;

pub use config::{quic_transport, server_config, IDLE_TIMEOUT, KEEP_ALIVE};
pub use event_loop::{Admit, App, EventLoop, Io};
pub use webtransport::{Ready, Request, StreamGone};
