//! End-to-end tests over real QUIC on loopback: an in-process server per test,
//! Rust clients pinning its certificate hash.

mod common;

mod api;
mod api_abuse;
mod auth;
mod budgets;
mod cli;
mod datagrams;
mod engine;
mod floods;
mod hooks;
mod limits;
mod load;
mod memory;
mod notifications;
mod presence;
mod readme;
mod rooms;
mod shutdown;
mod startup;
mod storage;
mod webhooks;
mod websocket;
