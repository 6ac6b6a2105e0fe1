//! The control-plane storage seam: the small, transactional facts the
//! collector keeps besides segments, behind the [`ControlStore`] trait.
//!
//! It holds rows, not decisions: the device registry (rows encoded and
//! their shared keys wrapped by [`crate::keys::Registry`]) and devices' SSH
//! keys, wrapped organisation data keys ([`crate::keys::OrgKeys`]), the
//! master key check, the organisations' decisions (consent, support
//! grants, minimisation; [`super::Policies`]), the retention policy last
//! audited, the highest stored sequence per device stream, and the audit
//! chain head ([`crate::audit::AuditLog`]). Wrapping, caching, group
//! commit and validation stay in those types, so every implementation
//! stores the same bytes.
//!
//! # The contract every implementation keeps
//!
//! - **Every write is durable when it returns `Ok`**, and atomic: a batch
//!   ([`ControlStore::put_devices`], [`ControlStore::raise_stored_seqs`])
//!   is one transaction, all of it or none of it.
//! - **Stream sequences never go backwards**: `raise_stored_seqs` keeps the
//!   higher of the stored and the given value. The segment store's
//!   acknowledgement rule (blocks durable before the sequence) relies on it.
//! - **Read-modify-write is atomic**: [`ControlStore::update_device`],
//!   [`ControlStore::insert_org_key_if_absent`] and
//!   [`ControlStore::replace_state`] decide and write in one transaction,
//!   so two collectors (a later PostgreSQL implementation may be shared)
//!   cannot both win.
//! - **Errors say whether to retry**: [`ControlError::is_transient`].
//!
//! The embedded implementation is [`super::redb_store::RedbControl`] (the tables
//! of `glimpse.redb`); a PostgreSQL one (a later issue) implements the same
//! trait. What is deliberately not here: any key material in the clear,
//! any policy logic, and segment data.

use std::fmt;

/// One registry row as stored: the organisation, the device, and the row
/// bytes the registry encodes (kind, wrapped shared key, serial, revoked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRow {
    /// The organisation.
    pub org: String,
    /// The device.
    pub device: String,
    /// The encoded row.
    pub row: Vec<u8>,
}

/// One stream's stored sequence: (organisation, device, stream id) and
/// the highest sequence durably stored.
pub type StreamSeq = ((String, String, u64), u64);

/// Where the control plane's rows live. See the module header for the
/// contract.
pub trait ControlStore: Send + Sync + fmt::Debug {
    /// A collector-wide metadata row (the master key check), inserting
    /// `value` first if there is none. Returns the row as stored.
    fn meta_or_insert(&self, name: &str, value: &[u8]) -> Result<Vec<u8>, ControlError>;

    /// One device's registry row.
    fn device(&self, org: &str, device: &str) -> Result<Option<Vec<u8>>, ControlError>;
    /// Every registry row, ordered by organisation and device.
    fn devices(&self) -> Result<Vec<DeviceRow>, ControlError>;
    /// Adds or replaces registry rows, all in one transaction.
    fn put_devices(&self, rows: &[DeviceRow]) -> Result<(), ControlError>;
    /// Rewrites one device's row with what `edit` returns for it (`None`:
    /// leave it), in one transaction. Returns whether it was rewritten; a
    /// missing device is never offered.
    fn update_device(
        &self,
        org: &str,
        device: &str,
        edit: &mut dyn FnMut(&[u8]) -> Option<Vec<u8>>,
    ) -> Result<bool, ControlError>;
    /// A device's SSH public key line.
    fn ssh_key(&self, org: &str, device: &str) -> Result<Option<String>, ControlError>;
    /// Sets (or with `None` removes) a device's SSH public key line.
    fn set_ssh_key(&self, org: &str, device: &str, line: Option<&str>) -> Result<(), ControlError>;

    /// The highest stored sequence of a stream; 0 if none.
    fn stored_seq(&self, org: &str, device: &str, stream: u64) -> Result<u64, ControlError>;
    /// Raises stored sequences (never lowers one), all in one transaction.
    fn raise_stored_seqs(&self, updates: &[StreamSeq]) -> Result<(), ControlError>;

    /// An organisation's wrapped data key.
    fn org_key(&self, org: &str) -> Result<Option<Vec<u8>>, ControlError>;
    /// Stores `wrapped` as the organisation's key unless it has one.
    /// Returns the key as stored and whether it was this one.
    fn insert_org_key_if_absent(&self, org: &str, wrapped: &[u8]) -> Result<(Vec<u8>, bool), ControlError>;
    /// Removes the organisation's key; returns whether it had one.
    fn remove_org_key(&self, org: &str) -> Result<bool, ControlError>;
    /// Organisations with a key, sorted.
    fn org_key_names(&self) -> Result<Vec<String>, ControlError>;

    /// Every organisation's encoded decisions.
    fn policies(&self) -> Result<Vec<(String, Vec<u8>)>, ControlError>;
    /// Stores an organisation's encoded decisions.
    fn put_policy(&self, org: &str, row: &[u8]) -> Result<(), ControlError>;
    /// Sets a collector-wide fact (the retention policy audited) and
    /// returns the value it had.
    fn replace_state(&self, name: &str, value: &str) -> Result<Option<String>, ControlError>;

    /// The audit chain head (sequence and MAC, encoded by the audit log).
    fn audit_head(&self) -> Result<Option<Vec<u8>>, ControlError>;
    /// Records the audit chain head.
    fn set_audit_head(&self, head: &[u8]) -> Result<(), ControlError>;
}

/// A control store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// The backend failed in a way that may pass (I/O interrupted, disk
    /// full, connection lost, lock timeout).
    #[error("control database (transient): {0}")]
    Transient(String),
    /// The backend failed in a way retrying will not fix (corruption,
    /// schema mismatch, a bug).
    #[error("control database: {0}")]
    Permanent(String),
}

impl ControlError {
    /// Whether the same operation may succeed if retried later.
    pub fn is_transient(&self) -> bool {
        matches!(self, ControlError::Transient(_))
    }
}
