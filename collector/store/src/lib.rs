//! Glimpse's storage library: what the collector keeps, and how.
//!
//! Records arrive here already authenticated and decoded; this crate seals
//! them with the organisation's own AES-256-GCM key ([`keys`]) into
//! append-only segments partitioned by organisation, kind and day
//! ([`store`]), records every control decision (consent, support grants,
//! minimisation, retention) and admin action in a hash-chained audit log
//! ([`audit`], [`control`]), deletes data when its retention window ends
//! ([`retention`]), answers data-subject requests ([`subject`]) and decrypts
//! for the organisation ([`export`]).
//!
//! # What it deliberately does not do
//!
//! It is synchronous and does no network I/O: no tokio, no sockets, no TLS.
//! The service (`glimpse-collector`) calls it from blocking tasks. It never
//! stores packet payloads and never logs keys or record contents.

pub mod audit;
pub mod cohort;
pub mod control;
pub mod export;
pub mod import;
pub mod keys;
pub mod retention;
mod retention_policy;
pub mod store;
pub mod subject;

pub use store::Store;

/// The model test of the store with retention and erasure (a module of
/// its own because it drives both).
#[cfg(test)]
mod model_tests;
