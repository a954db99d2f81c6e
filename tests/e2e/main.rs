//! End-to-end tests over real QUIC on loopback: an in-process server per test,
//! Rust clients pinning its certificate hash.

mod common;

mod auth;
mod datagrams;
mod limits;
mod notifications;
mod presence;
mod rooms;
mod shutdown;
