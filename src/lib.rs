//! # wtgate
//!
//! A realtime gateway over WebTransport: namespaces, rooms, presence, history.
//!
//! # Layout
//! - [`protocol`]: frames and the codec (sans-IO).
pub mod protocol;
