//! The Glimpse agent: a small daemon for access points, switches and
//! gateways.
//!
//! It reads the device's own metadata from `/proc` and `/sys` ([`probe`]),
//! queues records, and streams them to the collector over mutually
//! authenticated TLS with a per-device shared-key proof ([`transport`]),
//! reconnecting with jittered backoff ([`runtime`]).
//!
//! It deliberately does not forward user traffic, capture payloads, open
//! listening sockets, or need anything but its config, certificate, key and
//! shared key.

pub mod capture;
pub mod cli;
pub mod config;
pub mod diag;
pub mod probe;
mod queue;
pub mod replay;
pub mod reports;
pub mod runtime;
pub mod spool;
pub mod transport;
pub mod uci;

pub use config::AgentConfig;
pub use runtime::{AgentHandle, AgentStatus};
