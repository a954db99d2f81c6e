//! # wtgate
//!
//! A realtime gateway over WebTransport: namespaces, rooms, presence, history.
//!
//! # Layout
//! - [`protocol`]: frames and the codec (sans-IO).
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
