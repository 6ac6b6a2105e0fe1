//! The Glimpse collector.
//!
//! Agents connect over mutually-authenticated TLS and prove their
//! per-device shared key ([`ingest`]); their records are sealed with the
//! organisation's own AES-256-GCM key ([`keys`]) into append-only segments
//! partitioned by organisation, kind and day ([`store`]), and deleted when
//! their retention window ends ([`retention`]). [`export`] decrypts for the
//! organisation; [`demo`] runs the whole system on one machine.
//!
//! The collector needs no external service: the registry and wrapped keys
//! live in an embedded database in the data directory. It never stores
//! packet payloads and never logs keys or record contents.

pub mod admin;
pub mod audit;
pub mod cli;
pub mod config;
pub mod control;
pub mod demo;
pub mod export;
pub mod ingest;
pub mod keys;
pub mod retention;
pub mod service;
pub mod store;
pub mod subject;

pub use config::CollectorConfig;
pub use service::Collector;
