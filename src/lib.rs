//! # wtgate
//!
//! A realtime gateway over WebTransport: namespaces, rooms, presence, history.
//!
//! # Layout
//! - [`protocol`]: frames and the codec (sans-IO).
//! - [`auth`]: HS256 tokens and their claims.
//! - [`certs`]: self-signed development certificates.
//! - [`config`]: namespaces, limits and server settings.
//! - [`demo`]: the `--dev` demo page and browser library over loopback HTTP.
#![warn(missing_docs, unreachable_pub)]

pub mod auth;
pub mod broker;
pub mod certs;
pub mod client;
pub mod config;
pub mod demo;
pub mod hub;
pub mod metrics;
pub mod notify;
pub mod protocol;
pub mod server;
pub mod transport;
