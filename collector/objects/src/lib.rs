//! Glimpse's segments in an S3-compatible object store, so that several
//! stateless collectors can serve as one: [`ObjectSegments`] implements
//! glimpse-store's [`SegmentStore`](glimpse_store::store::SegmentStore)
//! over the `object_store` crate's S3 client.
//!
//! Objects hold exactly the bytes of local segment files (a header, then
//! blocks sealed with the organisation's AES-256-GCM key, built with
//! [`glimpse_store::store::SegmentBuilder`]), so readers, the segment
//! catalog's checks, erasure and export work on them unchanged; `layout.rs`
//! says where they sit and how they are named.
//!
//! - **Acknowledgement.** `append` seals blocks into the open in-memory
//!   object of their organisation and kind; the object is uploaded after a
//!   short interval or once it is large (`commit.rs`, group commit across
//!   connections). `sync` returns `Ok` only once every object holding the
//!   ticket's blocks was PUT successfully, so acknowledged data is durable
//!   in the object store; a failed PUT fails every ticket in it, as a
//!   transient error.
//! - **Reads** GET whole objects, at most [`MAX_OBJECT_BYTES`]; listings
//!   use delimiters, like directories.
//! - **Erasure** replaces objects atomically across crashes
//!   (`rewrite.rs`); **retention** deletes by prefix.
//! - **Compaction** merges a day's small objects into larger ones, with
//!   the same staged mechanism and the catalog switched in one
//!   transaction (`compact.rs`).
//! - **Synchronous.** glimpse-store has no tokio; this crate keeps its
//!   own small runtime (`bridge.rs`) and waits on it with deadlines, from
//!   any thread.
//!
//! What is deliberately not here: the segment catalog and stream sequences
//! (the control plane's) and any cache.

mod bridge;
mod commit;
pub mod compact;
pub mod config;
mod connector;
mod error;
mod layout;
pub mod rewrite;
mod segments;
mod store;

use std::time::Duration;

pub use config::ObjectStoreConfig;
/// The object_store crate this one is built on, so that a user of
/// [`connect`] or [`ObjectSegments::with_store`] names the same version.
pub use object_store;
pub use segments::ObjectSegments;

/// The default group commit window (see docs/SCALING.md for the measured
/// trade-off between acknowledgement latency and objects per day).
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_millis(25);

/// An object is uploaded once it holds this many bytes, whatever the
/// interval: uploads stay one request each, and reads stay small.
pub const FLUSH_BYTES: u64 = 8 * 1024 * 1024;

/// The largest object read: a local segment file (at most
/// [`SEGMENT_ROLL_BYTES`](glimpse_store::store::SEGMENT_ROLL_BYTES) plus a
/// block) copied into the bucket still reads; anything larger is reported
/// rather than held in memory.
pub const MAX_OBJECT_BYTES: u64 =
    glimpse_store::store::SEGMENT_ROLL_BYTES + 2 * glimpse_store::store::MAX_BLOCK_LEN as u64;

/// The S3 client [`ObjectSegments::open`] uses, for tools and tests that
/// need the bucket itself (a test that wraps it to inject faults): checks
/// `config` and reads its credentials (the secret key file or the
/// environment) now.
pub fn connect(config: &ObjectStoreConfig) -> Result<std::sync::Arc<dyn object_store::ObjectStore>, ObjectsError> {
    let problems = config.problems();
    if !problems.is_empty() {
        return Err(ObjectsError::Config(problems));
    }
    let credentials = config.credentials(&|name| std::env::var(name).ok())?;
    connector::s3(config, credentials)
}

/// [`ObjectSegments::open`] or [`connect`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ObjectsError {
    /// The configuration's values are wrong (every problem, one per entry).
    #[error("invalid object store configuration: {}", .0.join("; "))]
    Config(Vec<String>),
    /// The secret key file could not be read.
    #[error("cannot read the S3 secret key file {}: {source}", path.display())]
    Secret {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The secret key file is open to group or others.
    #[error(transparent)]
    Permissions(#[from] glimpse_files::PermissionError),
    /// The CA file could not be read.
    #[error(transparent)]
    Tls(#[from] glimpse_files::TlsConfigError),
    /// The S3 client could not be built.
    #[error("cannot set up the S3 client: {0}")]
    Client(String),
    /// The client's runtime could not be started.
    #[error("cannot start the object store client's runtime: {0}")]
    Runtime(std::io::Error),
}

#[cfg(test)]
mod compact_tests;
#[cfg(test)]
mod faulty;
#[cfg(test)]
mod tests;
