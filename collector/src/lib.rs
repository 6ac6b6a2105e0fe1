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

// WIP pub mod config;
// WIP pub mod demo;
// WIP pub mod export;
// WIP pub mod ingest;
pub mod keys;
pub mod retention;
// WIP pub mod service;
pub mod store;

