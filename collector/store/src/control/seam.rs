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
//!   ([`ControlStore::put_devices`], [`ControlStore::set_ssh_keys`],
//!   [`ControlStore::raise_stored_seqs`], [`ControlStore::append_audit_lines`])
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
//! of `glimpse.redb`); the PostgreSQL one (crate `glimpse-postgres`)
//! implements the same trait. Both seal the values of their configuration
//! rows ([`ControlStore::seal_values`], see [`super::sealed`]) and rewrite
//! rows in one transaction for a master key rotation
//! ([`ControlStore::rewrite_rows`]); a shared store also refuses, after a
//! rotation another collector made, the writes of key material wrapped
//! under the old master key ([`ControlStore::settled_under`]).
//! What is deliberately not here: any key material in the clear, any
//! policy logic, and segment data.

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

/// One device's SSH public key line as [`ControlStore::set_ssh_keys`]
/// writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshKeyRow {
    /// The organisation.
    pub org: String,
    /// The device.
    pub device: String,
    /// The OpenSSH public key line; `None` removes the device's key.
    pub line: Option<String>,
}

/// One stream's stored sequence: (organisation, device, stream id) and
/// the highest sequence durably stored.
pub type StreamSeq = ((String, String, u64), u64);

/// Which segment a catalog row describes: (organisation, kind, UTC day
/// number, segment name).
pub type SegmentRowKey = (String, String, i64, String);

/// One stream's batches in a segment, as catalogued.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StreamRange {
    /// The sending device.
    pub device: String,
    /// Its stream id.
    pub stream: u64,
    /// The lowest batch sequence stored in the segment.
    pub first: u64,
    /// The highest batch sequence stored in the segment.
    pub last: u64,
    /// Records of this stream in the segment.
    pub records: u64,
}

/// Most streams a segment's catalog row names; a busier segment keeps its
/// counts but stops naming streams (`more_streams`), so a row stays small.
pub const MAX_STREAMS_PER_ROW: usize = 256;

/// The catalog's knowledge of one segment: what acknowledged batches put
/// in it. A reader that finds less than this has lost data.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SegmentRow {
    /// Records stored.
    pub records: u64,
    /// Blocks stored.
    pub blocks: u64,
    /// Where the last catalogued block ends (bytes from the file's start).
    pub bytes: u64,
    /// Batch sequence ranges per stream, at most [`MAX_STREAMS_PER_ROW`].
    pub streams: Vec<StreamRange>,
    /// Streams beyond [`MAX_STREAMS_PER_ROW`] stored here but not named.
    pub more_streams: bool,
}

impl SegmentRow {
    /// Adds what a later append put in the same segment.
    pub fn merge(&mut self, more: &SegmentRow) {
        self.records = self.records.saturating_add(more.records);
        self.blocks = self.blocks.saturating_add(more.blocks);
        self.bytes = self.bytes.max(more.bytes);
        self.more_streams |= more.more_streams;
        for range in &more.streams {
            let full = self.streams.len() >= MAX_STREAMS_PER_ROW;
            match self.streams.iter_mut().find(|r| r.device == range.device && r.stream == range.stream) {
                Some(r) => {
                    r.first = r.first.min(range.first);
                    r.last = r.last.max(range.last);
                    r.records = r.records.saturating_add(range.records);
                }
                None if !full => self.streams.push(range.clone()),
                None => self.more_streams = true,
            }
        }
    }
}

/// What another collector sharing the control plane changed, as its
/// backend reports it, so that caches and connected devices follow
/// ([`ControlStore::watch`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Change {
    /// An organisation's decisions (consent, grants, data policy).
    Policy(String),
    /// A device's registry row (a registration, a revocation) or SSH key.
    Device {
        /// The organisation.
        org: String,
        /// The device.
        device: String,
    },
    /// An organisation's data key was created or destroyed.
    OrgKey(String),
    /// A collector-wide state entry (API tokens, console accounts, admin
    /// certificates), by name.
    State(String),
    /// Changes may have been missed (the backend's notification channel was
    /// re-established): everything cached must be read again.
    Everything,
}

/// Receives [`Change`]s, on a thread of the backend's: it must not block
/// for long (hand slow work to another thread).
pub type ChangeSink = std::sync::Arc<dyn Fn(&Change) + Send + Sync>;

/// What [`ControlStore::update_policy`] does to a row: given the row as
/// stored (`None`: none yet), the row to write, or `None` to leave it.
pub type PolicyEdit<'a> = dyn FnMut(Option<&[u8]>) -> Option<Vec<u8>> + 'a;

/// Whether an audit line was appended ([`ControlStore::append_audit_line`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditAppend {
    /// Appended, with the head, in one transaction.
    Appended,
    /// Another writer appended that sequence number first: read the tail
    /// again, sign afresh and retry.
    Taken,
}

/// The metadata row holding the master key check value (32 zero bytes
/// wrapped under the master key): which master key the store is under.
pub const MASTER_CHECK_ROW: &str = "master-check";

/// Which table a row offered by [`ControlStore::rewrite_rows`] lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RowTable {
    /// Collector-wide metadata (the master key check, the wrapped audit
    /// key); key: the row's name.
    Meta,
    /// Wrapped organisation data keys; key: the organisation.
    OrgKey,
    /// Registry rows; key: the organisation and the device.
    Device,
    /// Collector-wide state entries (UTF-8); key: the entry's name.
    State,
}

/// What [`ControlStore::rewrite_rows`] does to a row: given its table, key
/// parts and value, the value to write instead (`Ok(None)`: leave it), or
/// an error that abandons the whole rewrite.
pub type RowRewrite<'a> = dyn FnMut(RowTable, &[&str], &[u8]) -> Result<Option<Vec<u8>>, String> + 'a;

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
    /// leave it), atomically: in one transaction, or by compare and swap
    /// that offers the row again if another collector changed it meanwhile
    /// (so `edit` may run more than once and must be pure). Returns whether
    /// it was rewritten; a missing device is never offered.
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
    /// Sets or removes several devices' SSH public key lines, all in one
    /// transaction (a registration import: one commit, not one per
    /// device); the last of duplicate devices wins, as in a loop of
    /// [`set_ssh_key`](Self::set_ssh_key).
    fn set_ssh_keys(&self, rows: &[SshKeyRow]) -> Result<(), ControlError>;

    /// The highest stored sequence of a stream; 0 if none.
    fn stored_seq(&self, org: &str, device: &str, stream: u64) -> Result<u64, ControlError>;
    /// Raises stored sequences (never lowers one) and adds to the segment
    /// catalog what the same batches stored ([`SegmentRow::merge`]), all
    /// in one transaction, so an acknowledged batch's segment is always
    /// catalogued.
    fn raise_stored_seqs(
        &self,
        updates: &[StreamSeq],
        segments: &[(SegmentRowKey, SegmentRow)],
    ) -> Result<(), ControlError>;

    /// The catalog rows of one organisation's kind, in key order.
    fn segment_rows(&self, org: &str, kind: &str) -> Result<Vec<(SegmentRowKey, SegmentRow)>, ControlError>;
    /// Removes catalog rows and puts others in their place, in one
    /// transaction (an erase replaced segments, retention deleted days).
    fn replace_segment_rows(
        &self,
        remove: &[SegmentRowKey],
        put: &[(SegmentRowKey, SegmentRow)],
    ) -> Result<(), ControlError>;

    /// An organisation's wrapped data key.
    fn org_key(&self, org: &str) -> Result<Option<Vec<u8>>, ControlError>;
    /// Stores `wrapped` as the organisation's key unless it has one.
    /// Returns the key as stored and whether it was this one.
    fn insert_org_key_if_absent(&self, org: &str, wrapped: &[u8]) -> Result<(Vec<u8>, bool), ControlError>;
    /// Replaces the organisation's key row with `new` if it still is
    /// `expected` (compare-and-set, one transaction: a data key rotation or
    /// retirement). Returns whether it was replaced.
    fn replace_org_key(&self, org: &str, expected: &[u8], new: &[u8]) -> Result<bool, ControlError>;
    /// Removes the organisation's key; returns whether it had one.
    fn remove_org_key(&self, org: &str) -> Result<bool, ControlError>;
    /// Organisations with a key, sorted.
    fn org_key_names(&self) -> Result<Vec<String>, ControlError>;

    /// Every organisation's encoded decisions.
    fn policies(&self) -> Result<Vec<(String, Vec<u8>)>, ControlError>;
    /// One organisation's encoded decisions.
    fn policy(&self, org: &str) -> Result<Option<Vec<u8>>, ControlError>;
    /// Stores an organisation's encoded decisions.
    fn put_policy(&self, org: &str, row: &[u8]) -> Result<(), ControlError>;
    /// Rewrites an organisation's decisions with what `edit` returns for
    /// the row as stored (`None`: none yet), in one transaction, so that
    /// two collectors changing different decisions of one organisation at
    /// once both keep theirs. `edit` returning `None` leaves the row. Returns
    /// the row as stored afterwards. `edit` may be called more than once (a
    /// backend retrying after a conflicting change) and must be pure.
    fn update_policy(&self, org: &str, edit: &mut PolicyEdit<'_>) -> Result<Option<Vec<u8>>, ControlError>;
    /// Sets a collector-wide fact (the retention policy audited) and
    /// returns the value it had.
    fn replace_state(&self, name: &str, value: &str) -> Result<Option<String>, ControlError>;
    /// A collector-wide fact.
    fn state(&self, name: &str) -> Result<Option<String>, ControlError>;
    /// Every state entry whose name starts with `prefix`, in name order
    /// (the API tokens keep one entry each, named `api-token:<id>`).
    fn states_with_prefix(&self, prefix: &str) -> Result<Vec<(String, String)>, ControlError>;
    /// Writes a copy of the rows somewhere safe now, if the implementation
    /// keeps one and anything changed (the embedded store's verified copy).
    fn flush(&self) {}

    /// Whether [`ControlStore::rewrite_rows`] works here.
    fn rewrites_rows(&self) -> bool {
        false
    }

    /// Tells the store which master key check value (the row
    /// [`MASTER_CHECK_ROW`]) the key this process holds opens, once the
    /// store is settled. A store shared by several collectors then refuses
    /// writes of rows holding key material wrapped under the master key
    /// (organisation keys, registry rows, state entries, metadata) once
    /// another collector has rotated the master key, instead of storing
    /// keys the new master key cannot open. The embedded store is locked
    /// to one process and ignores it.
    fn settled_under(&self, check: &[u8]) {
        let _ = check;
    }

    /// Offers every row of the [`RowTable`]s to `edit` and writes what it
    /// returns, all in one transaction: every rewritten row or, if `edit`
    /// or the backend fails, none (a master key rotation rewraps every key
    /// this way). Returns the rows rewritten. `edit` may be called more
    /// than once per row (a backend retrying) and must be pure. A store
    /// that cannot do this refuses with a permanent error.
    fn rewrite_rows(&self, edit: &mut RowRewrite<'_>) -> Result<u64, ControlError> {
        let _ = edit;
        Err(ControlError::Permanent(format!("{} cannot rewrite its rows in one transaction", self.describe())))
    }

    /// From now on, stores the values of configuration rows (registry
    /// rows, SSH keys, decisions, state entries) sealed under `key` (see
    /// [`super::sealed`]), sealing any stored plain first, in one
    /// transaction. Returns whether it sealed a plain store. A store that
    /// does not seal its values returns `Ok(false)` and keeps them as
    /// they are.
    fn seal_values(&self, key: glimpse_common::secret::SecretKey) -> Result<bool, ControlError> {
        let _ = key;
        Ok(false)
    }

    /// The audit chain head (sequence and MAC, encoded by the audit log).
    fn audit_head(&self) -> Result<Option<Vec<u8>>, ControlError>;
    /// Records the audit chain head.
    fn set_audit_head(&self, head: &[u8]) -> Result<(), ControlError>;

    /// Whether the audit log's lines live here rather than in the data
    /// directory's `audit.log`: a control plane shared by several
    /// collectors keeps one chain for all of them. The embedded store does
    /// not.
    fn keeps_audit_lines(&self) -> bool {
        false
    }
    /// Appends the audit line numbered `seq` and records `head` with it,
    /// in one transaction, unless a line `seq` exists already
    /// ([`AuditAppend::Taken`]). Appends are thereby serialised across every
    /// collector: the chain stays linear. Only for stores that
    /// [`keep_audit_lines`](Self::keeps_audit_lines).
    fn append_audit_line(&self, seq: u64, line: &[u8], head: &[u8]) -> Result<AuditAppend, ControlError> {
        let _ = (seq, line, head);
        Err(ControlError::Permanent("this control store keeps no audit lines".into()))
    }
    /// Appends consecutive audit lines, numbered from `first_seq`, and
    /// records `head` (the last one's) with them, in one transaction: all
    /// of them, or none if a line `first_seq` exists already
    /// ([`AuditAppend::Taken`]) or anything fails. One commit for a batch
    /// of entries (a registration import) instead of one each. Only for
    /// stores that [`keep_audit_lines`](Self::keeps_audit_lines); the
    /// default appends a single line with
    /// [`append_audit_line`](Self::append_audit_line) and refuses more.
    fn append_audit_lines(&self, first_seq: u64, lines: &[Vec<u8>], head: &[u8]) -> Result<AuditAppend, ControlError> {
        match lines {
            [line] => self.append_audit_line(first_seq, line, head),
            _ => Err(ControlError::Permanent(format!(
                "{} cannot append audit lines in one transaction",
                self.describe()
            ))),
        }
    }
    /// Audit lines with a sequence above `after_seq`, in order, at most
    /// `limit` of them (bounded by the caller).
    fn audit_lines(&self, after_seq: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, ControlError> {
        let _ = (after_seq, limit);
        Ok(Vec::new())
    }
    /// The last audit line, if any.
    fn last_audit_line(&self) -> Result<Option<(u64, Vec<u8>)>, ControlError> {
        Ok(None)
    }

    /// Takes the service-wide lock `name` (an erase of one organisation's
    /// kind, say), waiting for another collector holding it; released
    /// when the returned guard drops. The embedded store is locked to one
    /// process, whose own callers serialise themselves, so it returns no
    /// guard.
    fn exclusive(&self, name: &str) -> Result<Option<Box<dyn std::any::Any + Send>>, ControlError> {
        let _ = name;
        Ok(None)
    }

    /// Registers `sink` to hear of changes other processes make to these
    /// rows (see [`Change`]). The embedded store is locked to one process,
    /// so there are none and it keeps no sinks.
    fn watch(&self, sink: ChangeSink) {
        let _ = sink;
    }
    /// A cheap round trip to the backend, for readiness: `Ok` if it
    /// answers now.
    fn ping(&self) -> Result<(), ControlError> {
        Ok(())
    }
    /// Where the rows live, for messages (a file, or a database without
    /// its password).
    fn describe(&self) -> String {
        "the control database".into()
    }
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
