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
//! - [`engine`]: the event loop that owns the UDP socket and every QUIC
//!   connection (quinn-proto), with HTTP/3 and WebTransport framing; it drives
//!   each session in the pass that read its packets, no task per connection.
//! - [`server`]: admission, routing by path and the WebTransport driver of each
//!   session on the loop (`server/loop_session.rs`, the default engine: feeds the
//!   core, performs its actions, writes the hub's queued frames; `server/session.rs`,
//!   `--engine wtransport`, is the same over wtransport's server); the WebSocket fallback, a second driver of the same
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
//! # Life of a `Publish` (on the event loop, the default engine)
//! 1. `engine/event_loop.rs` :: `EventLoop::run` reads the packet off the UDP
//!    socket, hands it to its quinn-proto connection and, in the same pass,
//!    `server/loop_session.rs` :: `LoopSession::read_command` decodes it off the
//!    control stream and hands it to the core: `session/mod.rs` ::
//!    `Session::handle_frame` → `session/publish.rs` :: `Session::publish` (joined?
//!    allowed? within the rate?), which asks for an `Effect::Publish` — or first,
//!    when the namespace has a publish hook, an `Effect::PublishCheck`
//!    (`session/hooks.rs`), whose answer from the application's backend
//!    ([`hooks::Hooks`]) refuses it or replaces its body.
//! 2. `LoopSession::start` runs it (`session/effect.rs` :: `Effect::perform`, to
//!    its end at once with the local broker, else polled when it wakes the
//!    connection): [`broker::Broker::publish`] assigns the seq, keeps the encoded
//!    `Message` in history and hands it to [`hub::Hub::deliver_message`] on every
//!    node (`broker/local.rs`, or Redis's script then
//!    `broker/redis/subscriber.rs`), which clones the `Bytes` into each member's
//!    bounded queue (`hub/outbox.rs` :: `SessionTx::send`), whose waker marks the
//!    member's connection in the loop's wake list.
//! 3. The outcome comes back to the core, which answers `Ack { seq }`
//!    (`session/publish.rs` :: `Session::published`).
//! 4. In the same pass the loop drives every woken member:
//!    `LoopSession::write_queued` takes the frame off its queue, asks its core
//!    where it goes (`session/mod.rs` :: `Session::deliver`, which drops replayed
//!    duplicates) and writes it on the room's stream (`engine/webtransport.rs` ::
//!    `WebTransport::write`); then the loop sends each connection's packets
//!    (`EventLoop::transmit`). A WebSocket member gets it as a lane-1 message
//!    (`server/websocket.rs` :: `WsSession::flush_held`).
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
