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
//!   the hub's queued frames); the WebSocket fallback, a second driver of the same
//!   core on the HTTPS port (`server/websocket.rs`, lanes of PROTOCOL.md §16); the
//!   steps both drivers share (`server/driver.rs`); the HTTPS server API
//!   (`server/http.rs`) and admission before a handshake (`server/admission.rs`).
//! - [`hub`]: rooms, membership and per-session queues of this node (sans-IO).
//! - [`broker`]: seq numbers, history and fan-out between nodes (local or Redis).
//! - [`notify`]: durable per-user notification inboxes.
//! - [`auth`]: HS256 tokens and their claims; [`certs`]: self-signed development
//!   certificates; [`config`]: namespaces, limits and server settings;
//!   [`metrics`]: the Prometheus series.
//! - [`client`]: the Rust client (tests, load tester); [`api_client`]: a client of
//!   the HTTPS server API (the CLI's `notify`, `publish`, `broadcast`).
//! - [`hooks`]: the application backend's hooks (connect, join, publish, RPC) as a
//!   trait, with the HTTP proxies as one implementation.
//! - [`webhooks`]: events (sessions, rooms, notifications) sent to the backend at
//!   least once from a bounded durable queue.
//! - [`demo`]: the `--dev` demo page and browser library over loopback HTTP.
//! - [`load`]: `wtgate load`, the load tester (paced publishers, loss and latency checks).
//!
//! # Life of a `Publish`
//! 1. `server/session.rs` :: `Session::serve` reads it off the control stream
//!    ([`transport::FrameReader::next`]) and hands it to the core:
//!    `session/mod.rs` :: `Session::handle_frame` → `session/publish.rs` ::
//!    `Session::publish` (joined? allowed? within the rate?), which asks for an
//!    `Effect::Publish` — or first, when the namespace has a publish hook, an
//!    `Effect::PublishCheck` (`session/hooks.rs`), whose answer from the
//!    application's backend ([`hooks::Hooks`]) refuses it or replaces its body.
//! 2. The driver's `Session::perform` runs it (`session/effect.rs` ::
//!    `Effect::perform`): [`broker::Broker::publish`] assigns the seq, keeps the
//!    encoded `Message` in history and hands it to [`hub::Hub::deliver_message`]
//!    on every node (`broker/local.rs`, or Redis's script then
//!    `broker/redis/subscriber.rs`), which clones the `Bytes` into each member's
//!    bounded queue (`hub/outbox.rs` :: `SessionTx::send`).
//! 3. The outcome comes back to the core, which answers `Ack { seq }`
//!    (`session/publish.rs` :: `Session::published`).
//! 4. Each member's driver takes the frame off its queue (`Session::serve`,
//!    coalescing per `server/flush.rs`), asks its core where it goes
//!    (`session/mod.rs` :: `Session::deliver`, which drops replayed duplicates)
//!    and writes it on the room's stream (`server/session.rs` :: `write_out`) —
//!    or, for a WebSocket member, as a lane-1 message (`server/websocket.rs` ::
//!    `WsSession::flush_held`).
#![warn(missing_docs, unreachable_pub)]

pub mod api_client;
pub mod auth;
pub mod broker;
pub mod certs;
pub mod client;
pub mod config;
pub mod demo;
pub mod engine;
pub mod hooks;
pub mod hub;
pub mod load;
pub mod metrics;
pub mod notify;
pub mod protocol;
pub mod server;
mod session;
pub mod transport;
pub mod webhooks;
