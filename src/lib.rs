//! # wtgate
//!
//! A realtime gateway over WebTransport: namespaces, rooms, presence, history.
//!
//! # Layout
//! - [`protocol`]: frames and the codec (sans-IO).
//! - [`transport`]: reads length-prefixed frames from any byte stream.
//! - `session`: the session core (sans-IO, no transport types): `Hello`, joins,
//!   publishes, leaves, notifications, datagrams, limits and dedupe; frames and
//!   `now` in, actions and effects out. One file per command.
//! - [`server`]: the WebTransport endpoint and the driver of each session
//!   (`server/session.rs`: owns the connection and streams, feeds the core, writes
//!   the hub's queued frames), plus the HTTPS server API.
//! - [`hub`]: rooms, membership and per-session queues of this node (sans-IO).
//! - [`broker`]: seq numbers, history and fan-out between nodes (local or Redis).
//! - [`notify`]: durable per-user notification inboxes.
//! - [`auth`]: HS256 tokens and their claims.
//! - [`certs`]: self-signed development certificates.
//! - [`config`]: namespaces, limits and server settings.
//! - [`api_client`]: a client of the HTTPS server API (the CLI's `notify`, `publish`).
//! - [`demo`]: the `--dev` demo page and browser library over loopback HTTP.
//! - [`load`]: `wtgate load`, the load tester (paced publishers, loss and latency checks).
#![warn(missing_docs, unreachable_pub)]

pub mod api_client;
pub mod auth;
pub mod broker;
pub mod certs;
pub mod client;
pub mod config;
pub mod demo;
pub mod hub;
pub mod load;
pub mod metrics;
pub mod notify;
pub mod protocol;
pub mod server;
mod session;
pub mod transport;
