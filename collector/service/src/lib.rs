//! The Glimpse collector service.
//!
//! Access points connect over mutually-authenticated TLS and prove their
//! per-device shared key, switches and gateways over SSH with their
//! registered public key ([`ingest`]); each batch is handed to the
//! synchronous store library (`glimpse-store`), which seals it with the
//! organisation's own key, and acknowledged once it is durable. Admins act
//! on the running service through the HTTPS admin API ([`api`], acting through [`admin`]). [`cli`] is
//! the `glimpse-collector` command: the daemon, the offline tools and the
//! admin client.
//!
//! # What it deliberately does not do
//!
//! It links no agent code and no libpcap, and issues no certificates (that
//! is `glimpse-certs`, on the PKI host). It needs no external service: the
//! registry and wrapped keys live in an embedded database in the data
//! directory. It never stores packet payloads and never logs keys or record
//! contents.

pub mod admin;
pub mod alerts;
pub mod api;
pub mod cli;
pub mod config;
pub mod ingest;
pub mod limits;
mod listener;
mod repeats;
pub mod service;
pub mod telemetry;

pub use config::CollectorConfig;
pub use service::Collector;
