//! Glimpse's control plane in PostgreSQL, for several collectors that
//! serve as one: [`PgControl`] implements glimpse-store's
//! [`ControlStore`](glimpse_store::control::seam::ControlStore) over a
//! shared database, so that any collector can serve any device and any
//! admin request.
//!
//! It keeps the same rows, as the same (sealed) values, as the embedded redb store
//! (the registry, wrapped organisation keys, decisions, per-device stream
//! sequence numbers, collector-wide state, the segment catalog), and in
//! addition the audit chain's lines, so that every collector appends to
//! one linear chain ([`ControlStore::append_audit_line`]
//! (glimpse_store::control::seam::ControlStore::append_audit_line)).
//!
//! # Why these choices
//!
//! - **Synchronous methods over a private runtime.** glimpse-store is
//!   synchronous and tokio-free; its callers run it on blocking threads.
//!   `PgControl` owns a small tokio runtime, hands each operation to it and
//!   waits on a channel with a deadline ([`PostgresConfig::timeout_ms`]),
//!   so it is safe to call from any thread, async or not, and a slow
//!   database becomes a transient error rather than a stuck thread.
//! - **Row locks, not serialisable transactions.** Every
//!   read-modify-write (`update_device`, `update_policy`, the catalog
//!   merge) reads its row `FOR UPDATE` in one transaction, so two
//!   collectors cannot both win; inserts race through `ON CONFLICT`.
//!   Multi-row writes take their locks in key order, so collectors cannot
//!   deadlock each other.
//! - **Triggers for notifications.** Every change to a row other
//!   collectors cache (decisions, devices, keys, state) notifies channel
//!   `glimpse_changes` from a trigger, delivered at commit, whoever made
//!   the change. [`PgControl`] listens on a connection of its own and
//!   reports [`Change`]s to the sinks given to `watch`; after the listening
//!   connection is re-established it reports [`Change::Everything`].
//! - **Durability** is PostgreSQL's commit (keep `synchronous_commit` on,
//!   and with replicas, `synchronous_standby_names`, or an acknowledged
//!   record can be lost with the primary).
//!
//! - **Sealed values.** The configuration values (registry rows, SSH
//!   keys, decisions, state entries) are sealed with glimpse-store's
//!   `control::sealed`, as in the embedded store; row keys stay plain for
//!   lookups and triggers. See `seal.rs` for what is sealed and why the
//!   rest is not, the migration of a plain database, and the master key
//!   rotation's one transaction.
//!
//! What is deliberately not here: segment data (an object store), any
//! key material in the clear (rows hold only wrapped keys), and policy.

mod config;
mod control;
mod listen;
mod migrate;
mod runtime;
mod seal;

pub use config::{PgTls, PostgresConfig};
pub use control::PgControl;
pub use migrate::{MigrationReport, LATEST_VERSION, MIGRATIONS};

pub use glimpse_store::control::seam::Change;

/// Setting up the PostgreSQL control plane failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PgError {
    /// The `[control.postgres]` settings are unusable.
    #[error("PostgreSQL settings: {0}")]
    Config(String),
    /// The password file could not be read.
    #[error(transparent)]
    Password(#[from] glimpse_files::SecretFileError),
    /// The CA certificates for TLS to the database could not be read.
    #[error(transparent)]
    Tls(#[from] glimpse_files::TlsConfigError),
    /// The database could not be reached or refused us.
    #[error("cannot connect to PostgreSQL at {at}: {message}")]
    Connect {
        /// Host, port and database, without the password.
        at: String,
        /// Why.
        message: String,
    },
    /// The database's schema is not the one this collector uses.
    #[error("the PostgreSQL schema at {at} {problem}")]
    Schema {
        /// Host, port and database.
        at: String,
        /// What is wrong and what to do.
        problem: String,
    },
    /// A migration failed; nothing of it was applied.
    #[error("migration {version} ({name}) failed at {at}: {message}; nothing of it was applied")]
    Migration {
        /// Its version.
        version: u32,
        /// Its file name.
        name: &'static str,
        /// Host, port and database.
        at: String,
        /// The database's error.
        message: String,
    },
    /// A query failed.
    #[error(transparent)]
    Control(#[from] glimpse_store::control::ControlError),
}
