//! The segment store: append-only, encrypted, partitioned by organisation,
//! data kind and UTC day.
//!
//! # Parts
//!
//! [`Store`] decides what is stored and served: it stamps and groups
//! records, encodes block plaintexts, picks the organisation's key, clips
//! reads to the retention window and drops repeated batches. It is
//! composed of parts handed in ([`StoreParts`]) and owns none of their
//! storage:
//!
//! - a [`SegmentStore`] ([`seam`]): where sealed blocks go, with the
//!   durability contract an acknowledgement relies on. [`LocalSegments`]
//!   (`local.rs`) keeps them as files through the [`fs::FileSystem`] write
//!   seam;
//! - the key catalog and its [`crate::control::ControlStore`]: registry,
//!   wrapped keys, decisions, stream sequences, the audit head;
//! - the audit log, the clock and the retention policy.
//!
//! Retention's sweep ([`crate::retention`]) works on the `SegmentStore`
//! alone; nothing here calls into it.
//!
//! # Layout
//!
//! ```text
//! <data_dir>/glimpse.redb                                 keys and registry (see crate::keys)
//! <data_dir>/orgs/<org>/<kind>/<YYYY-MM-DD>/<seq>-<id>.seg
//! ```
//!
//! `<org>` is an [`OrgId`] (validated `[a-z0-9._-]`, so path-safe), `<kind>`
//! is [`DataKind::as_str`], the day is the UTC day the collector *received*
//! the records, `<seq>` is an 8-digit sequence that orders segments within a
//! day and `<id>` the segment id in 16 hex digits. Directories are 0700 and
//! files 0600. Retention deletes whole day directories, so deletion never
//! rewrites a segment.
//!
//! # Segment format (all integers big-endian)
//!
//! ```text
//! header:
//!   magic       8 bytes   "GLSEG\0\0\x01"
//!   version     u16       3 (2 and 1 are still read)
//!   segment id  u64       random per segment file
//!   day         i64       UTC day number (days since 1970-01-01)
//!   org         u8 length + bytes
//!   kind        u8 length + bytes
//!   key version u32       the data key version the blocks are sealed under
//!                         (version 3 on; a version 1 or 2 segment is under
//!                         data key version 1)
//! blocks, repeated:
//!   length      u32       ciphertext length including the 16-byte tag, 17..=8 MiB
//!   index       u64       0, 1, 2, ... within the segment, always < 2^32
//!   ciphertext  AES-256-GCM(org key of that version, plaintext) || tag
//! plaintext (see block.rs):
//!   version 2, 3 postcard(Option<(stream id, sequence, first position)>) || postcard(Vec<StoredRecord>)
//!   version 1   postcard(Vec<StoredRecord>)
//! ```
//!
//! Every block is sealed with the organisation's own data key, in the
//! version the header names (see `keys::versions`; a writer starts a new
//! segment when the current version changes, and `rekey.rs` re-encrypts
//! segments of older versions). A wrong key version in a header makes every
//! block fail authentication, like any other damage. The 96-bit
//! nonce is `segment id (8 bytes) || index as u32 (4 bytes)`: the segment id
//! is random per file and a writer starts a new segment long before the
//! index could wrap (at [`SEGMENT_ROLL_BYTES`] or a new day), so nonces do not
//! repeat under one key (a collision needs two of an organisation's
//! segments to draw the same 64-bit id: about n²/2^65 for n segments).
//!
//! The associated data is `"glimpse-segment-block-v1" || version || org ||
//! kind || day || segment id || index` where org, kind and day are taken
//! from the *directory the file is found in*, not from its header. So a
//! block or a whole segment copied to another organisation, kind or day
//! fails authentication, a block moved within or between segments fails
//! or is refused as out of order, and a segment copied within its own day
//! is refused as a repeated segment id.
//!
//! # Invariants
//!
//! - Append-only: a segment is written by one process (the redb lock on
//!   `glimpse.redb` keeps a second collector out), one block per data kind
//!   per batch, and the segment store's sync runs before `append` returns.
//!   A segment left by a crash is never appended to again; its torn tail is
//!   cut when the store opens, or reported.
//! - The stream's stored sequence is recorded only after the blocks are
//!   durable, so a batch whose acknowledgement was lost (a failed sequence
//!   commit, a crash between the two) is at worst stored twice, never lost.
//!   Both copies carry the batch's origin, and reads serve it once (see
//!   `repeats.rs`).
//! - Reading never trusts a length beyond the bytes present or beyond
//!   [`MAX_BLOCK_LEN`], never serves a block that does not authenticate, and
//!   reports every anomaly as a [`SegmentProblem`] instead of failing. Only
//!   key problems (wrong master key, destroyed organisation key) fail a read.
//! - Reads never return records older than the retention window, whether
//!   or not the sweeper has deleted them yet.
//!
//! - Every acknowledged batch's segment is in the segment catalog
//!   (`catalog.rs`), so a read reports a catalogued segment that is gone or
//!   cut short, even exactly between blocks.
//!
//! What is deliberately not here: compaction, indexes (reads scan a day's
//! segments), and record counts in [`Store::stats`] (counting needs
//! decryption).

mod block;
pub mod catalog;
mod erase;
pub mod fs;
pub mod local;
mod rekey;
mod repeats;
pub mod seam;
mod segment;
mod subjects;
mod writer;

pub use catalog::VerifyReport;
pub use erase::{EraseReport, Redaction};
pub use local::LocalSegments;
pub use rekey::{DataKeyVersionStatus, Reencrypted};
pub use seam::{SegmentError, SegmentStore};

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use glimpse_common::clock::{format_day, utc_day, Clock, MILLIS_PER_DAY};
use glimpse_common::identity::{DeviceId, DeviceIdentity, DeviceKind, OrgId};
use glimpse_common::record::{DataKind, Record};
use glimpse_common::secret::SecretKey;
use serde::{Deserialize, Serialize};

use crate::keys::{Catalog, KeyError, MasterKey, OrgKey, OrgKeys, Registry};
use crate::retention_policy::RetentionPolicy;

use block::{decode_block, encode_blocks, RecordOrigin, Stamped};
use repeats::RepeatFilter;
use seam::{BlockRun, SegmentBytes, SegmentInfo, SyncTicket};
pub use segment::{SegmentBuilder, MAX_BLOCK_LEN, SEGMENT_ROLL_BYTES};
use segment::{SegmentPlace, SegmentReader};
pub use writer::SEGMENT_SUFFIX;

/// Name of the directory under the data directory that holds segments.
pub const ORGS_DIR: &str = "orgs";

/// How far after the store's clock a record's receive time may lie and
/// still be served: beyond it the clock was ahead when it was stored (or
/// is behind now), and the read reports it instead.
pub const FUTURE_SKEW_MS: i64 = 10 * 60 * 1000;

/// One stored record: what the device sent plus who sent it and when it
/// arrived. This is also what `export` prints as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredRecord {
    /// The sending device.
    pub device: DeviceId,
    /// The sending device's kind.
    pub device_kind: DeviceKind,
    /// When the collector received it (collector clock, Unix milliseconds);
    /// retention counts from here.
    pub received_at_ms: i64,
    /// The record itself.
    pub record: Record,
}

impl StoredRecord {
    /// The same record, borrowed for encoding.
    fn borrowed(&self) -> StoredRecordRef<'_> {
        StoredRecordRef {
            device: &self.device,
            device_kind: self.device_kind,
            received_at_ms: self.received_at_ms,
            record: &self.record,
        }
    }
}

/// Serialises exactly like [`StoredRecord`] without cloning the record.
#[derive(Serialize)]
struct StoredRecordRef<'a> {
    device: &'a DeviceId,
    device_kind: DeviceKind,
    received_at_ms: i64,
    record: &'a Record,
}

/// A batch [`Store::write_blocks`] wrote: make it durable with
/// [`Store::sync_written`], then commit it with [`Store::commit_sequences`].
#[derive(Debug)]
#[must_use = "the batch counts as stored only once its sequence is committed"]
pub struct WrittenBatch {
    identity: DeviceIdentity,
    stream: (u64, u64),
    /// The batch's ticket, its segments for the catalog, and the cohort
    /// its sync was decided by; `None` for an empty batch.
    written: Option<(SyncTicket, Vec<CatalogNote>, Option<crate::cohort::Cohort>)>,
    receipt: AppendReceipt,
}

impl WrittenBatch {
    /// What the batch stored, once committed (with the time its sync took).
    pub fn receipt(&self) -> AppendReceipt {
        self.receipt
    }

    /// The sending device.
    pub fn identity(&self) -> &DeviceIdentity {
        &self.identity
    }
}

/// One segment's entry for the catalog, committed with the sequence.
type CatalogNote = (crate::control::seam::SegmentRowKey, crate::control::seam::SegmentRow);

/// What an append stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AppendReceipt {
    /// Records stored.
    pub records: usize,
    /// Blocks written (one per data kind in the batch, more for huge batches).
    pub blocks: usize,
    /// Bytes appended to segment files, framing included.
    pub bytes: u64,
    /// Time spent making the batch durable (fsync of its segments), for
    /// the service's latency metric; this crate measures, it exports nothing.
    pub sync_time: std::time::Duration,
}

/// Something in a segment that could not be served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SegmentProblem {
    /// The segment file (or directory entry).
    pub path: PathBuf,
    /// Byte offset of the problem within the file.
    pub offset: u64,
    /// What is wrong.
    pub what: String,
}

impl std::fmt::Display for SegmentProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at offset {}: {}", self.path.display(), self.offset, self.what)
    }
}

/// The result of a read: the records, in storage order, and anything that
/// was skipped.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReadOutcome {
    /// Records inside the requested range and the retention window.
    pub records: Vec<StoredRecord>,
    /// Corrupted, torn or misplaced data that was skipped.
    pub problems: Vec<SegmentProblem>,
}

/// Where a served record sits in the order reads serve records (days, then
/// segments in creation order, then blocks, then records), so that a later
/// read can resume right after it (see [`Store::read_after`]).
///
/// New records are only ever appended after every existing position (the
/// newest segment of the newest day), so resuming after a mark neither
/// repeats nor loses a record that arrived in between. An erasure rewrites
/// a segment under the same sequence and a new id; the mark then finds its
/// place by its batch (`batch`, `index`) instead of by `ordinal`. A
/// compaction (an object store's) merges a run of segments into one with
/// the first one's sequence: a mark whose segment is no longer listed
/// finds its record in the segment listed before its position, read once
/// to find it, and resumes right after it there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReadMark {
    /// The UTC day of the record's segment.
    pub day: i64,
    /// The segment's sequence within its day.
    pub segment_seq: u64,
    /// The segment's id (a rewrite by an erasure changes it).
    pub segment_id: u64,
    /// The record's position among all the segment's records.
    pub ordinal: u32,
    /// When the record was received.
    pub received_at_ms: i64,
    /// A digest of the record's batch: its device, stream and sequence.
    pub batch: u64,
    /// The record's position in its batch.
    pub index: u32,
}

impl ReadMark {
    fn segment(&self) -> (i64, u64) {
        (self.day, self.segment_seq)
    }
}

/// The digest in [`ReadMark::batch`]: of the device and the batch's stream
/// and sequence, which with the position name one record. Records without
/// an origin (version 1 blocks) are named by device and time.
fn batch_tag(device: &DeviceId, origin: Option<RecordOrigin>, received_at_ms: i64) -> u64 {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(b"glimpse-read-mark-v1");
    ctx.update(&[device.as_str().len() as u8]);
    ctx.update(device.as_str().as_bytes());
    match origin {
        Some(o) => {
            ctx.update(&[1]);
            ctx.update(&o.stream_id.to_be_bytes());
            ctx.update(&o.stream_seq.to_be_bytes());
        }
        None => {
            ctx.update(&[0]);
            ctx.update(&received_at_ms.to_be_bytes());
        }
    }
    let digest = ctx.finish();
    let mut tag = [0u8; 8];
    tag.copy_from_slice(&digest.as_ref()[..8]);
    u64::from_be_bytes(tag)
}

/// Which records of the segment being read are past the resume mark.
#[derive(Debug, Clone, Copy)]
enum Gate {
    /// All of them.
    Open,
    /// Those after this ordinal (the mark's segment, unchanged).
    After(u32),
    /// The mark's segment, rewritten by an erasure since: ordinals moved,
    /// but a batch's records are contiguous and keep their positions.
    Rewritten { batch: u64, index: u32, received_at_ms: i64, state: Passing },
    /// A segment that holds the mark's record though it does not bear the
    /// mark's name: the mark's segment was merged into it by a compaction
    /// (checked by reading it first). Everything up to and including the
    /// mark's record was served before.
    Through { batch: u64, index: u32, state: Passing },
}

/// How far a rewritten segment's read is relative to the mark's batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Passing {
    /// The mark's batch has not been met yet.
    Before,
    /// Inside the mark's batch.
    Within,
    /// Past the mark's batch.
    After,
}

impl Passing {
    /// Moves past the gate's batch `(batch, index)` as `mark` is read:
    /// whether `mark` passes, or `None` while the gate's batch has not been
    /// reached (the caller decides those records).
    fn pass(&mut self, batch: u64, index: u32, mark: &ReadMark) -> Option<bool> {
        if *self == Passing::After {
            return Some(true);
        }
        if mark.batch == batch {
            *self = Passing::Within;
            return Some(mark.index > index);
        }
        if *self == Passing::Within {
            *self = Passing::After;
            return Some(true);
        }
        None
    }
}

impl Gate {
    fn passes(&mut self, ordinal: u32, mark: &ReadMark) -> bool {
        match self {
            Gate::Open => true,
            Gate::After(last) => ordinal > *last,
            Gate::Rewritten { batch, index, received_at_ms, state } => {
                // The mark's whole batch may have been erased: then only the
                // time tells (records of one millisecond are ambiguous).
                state.pass(*batch, *index, mark).unwrap_or(mark.received_at_ms > *received_at_ms)
            }
            Gate::Through { batch, index, state } => state.pass(*batch, *index, mark).unwrap_or(false),
        }
    }
}

/// The sequence and segment id in a segment name `<seq>-<id>.seg` (the
/// sequence in decimal digits, the id in hex): reads order a day's segments
/// by name and resume marks ([`ReadMark`]) name a segment by both, so every
/// [`SegmentStore`] names its segments this way, with sequences of one width
/// within a day so that names sort as their sequences do.
pub fn parse_segment_name(name: &str) -> Option<(u64, u64)> {
    let (seq, id) = name.strip_suffix(writer::SEGMENT_SUFFIX)?.split_once('-')?;
    if seq.is_empty() || !seq.bytes().all(|b| b.is_ascii_digit()) || id.is_empty() {
        return None;
    }
    Some((seq.parse().ok()?, u64::from_str_radix(id, 16).ok()?))
}

/// Disk use of one organisation's data of one kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KindStats {
    /// The organisation.
    pub org: OrgId,
    /// The data kind.
    pub kind: DataKind,
    /// Day directories.
    pub days: u64,
    /// Segment files.
    pub segments: u64,
    /// Bytes in segment files.
    pub bytes: u64,
    /// The oldest day stored, `YYYY-MM-DD`.
    pub oldest_day: Option<String>,
    /// The newest day stored, `YYYY-MM-DD`.
    pub newest_day: Option<String>,
}

/// Disk use of the whole store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StoreStats {
    /// Per organisation and kind, sorted.
    pub kinds: Vec<KindStats>,
    /// Segment files in total.
    pub segments: u64,
    /// Bytes in segment files in total.
    pub bytes: u64,
}

/// A store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A key could not be loaded, created or unwrapped.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The organisations' decisions could not be read or written.
    #[error(transparent)]
    Policy(#[from] crate::control::PolicyError),
    /// The admin certificates could not be read.
    #[error(transparent)]
    Admins(#[from] crate::control::AdminError),
    /// The audit log could not be opened.
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    /// The segment store failed (see [`SegmentError::is_transient`]).
    #[error(transparent)]
    Segment(#[from] SegmentError),
    /// Records could not be encoded.
    #[error("cannot encode records: {0}")]
    Encode(#[from] postcard::Error),
    /// A batch has more records than positions in a batch can number.
    #[error("a batch of {records} records is too large to store")]
    BatchTooLarge {
        /// Its record count.
        records: usize,
    },
    /// One record alone encodes to more than a block may hold.
    #[error("a record encodes to {len} bytes, more than a block holds")]
    RecordTooLarge {
        /// Its encoded size.
        len: usize,
    },
    /// A block's plaintext exceeded the limit (a bug in block splitting).
    #[error("a block of {len} bytes exceeds the block size limit")]
    BlockTooLarge {
        /// The plaintext size.
        len: usize,
    },
    /// An organisation has segments but no data key.
    #[error(
        "organisation {org} has stored data but no data key: it was destroyed, or the key store \
         does not belong to this data directory"
    )]
    NoOrgKey {
        /// The organisation.
        org: OrgId,
    },
}

impl StoreError {
    /// Whether the same operation may succeed if retried later (a full
    /// disk, a backend briefly unavailable), so a caller can tell an agent
    /// to come back rather than give up on the batch.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Segment(e) => e.is_transient(),
            StoreError::Key(KeyError::Control(e)) => e.is_transient(),
            _ => false,
        }
    }
}

/// The encrypted, per-organisation record store. Cheap to share: wrap it in
/// an `Arc`; every method takes `&self` and does blocking I/O (call it from
/// `spawn_blocking`).
///
/// It is composed of parts handed in (see [`StoreParts`]): where segments
/// go, the keys and registry, the organisations' decisions, the audit log,
/// the clock and the retention policy. It owns none of their storage.
#[derive(Debug)]
pub struct Store {
    data_dir: PathBuf,
    segments: Arc<dyn SegmentStore>,
    catalog: Catalog,
    policies: crate::control::Policies,
    admins: crate::control::Admins,
    audit: crate::audit::AuditLog,
    clock: Arc<dyn Clock>,
    retention: RetentionPolicy,
}

/// The parts a [`Store`] is composed of.
#[derive(Debug)]
pub struct StoreParts {
    /// The data directory (for messages and the offline tools).
    pub data_dir: PathBuf,
    /// Where sealed blocks go; [`SegmentStore::recover`] must have run.
    pub segments: Arc<dyn SegmentStore>,
    /// Keys and registry.
    pub catalog: Catalog,
    /// The organisations' decisions.
    pub policies: crate::control::Policies,
    /// The admin certificates.
    pub admins: crate::control::Admins,
    /// The audit log.
    pub audit: crate::audit::AuditLog,
    /// Stamps `received_at` and decides expiry.
    pub clock: Arc<dyn Clock>,
    /// What reads clip to.
    pub retention: RetentionPolicy,
}

impl Store {
    /// Opens (creating if needed) the store in `data_dir`. Fails if the master
    /// key does not match the one the key store was created with, or if
    /// another process has the store open.
    pub fn open(
        data_dir: &Path,
        master_key: MasterKey,
        clock: Arc<dyn Clock>,
        retention: RetentionPolicy,
    ) -> Result<Store, StoreError> {
        Store::open_on(Arc::new(fs::StdFs), data_dir, master_key, clock, retention)
    }

    /// Like [`Store::open`], with segments read and written through `fs`
    /// (keys, registry and audit log stay on the real file system).
    pub fn open_on(
        segment_fs: Arc<dyn fs::FileSystem>,
        data_dir: &Path,
        master_key: MasterKey,
        clock: Arc<dyn Clock>,
        retention: RetentionPolicy,
    ) -> Result<Store, StoreError> {
        writer::create_dir_durable(&fs::StdFs, data_dir)?;
        let catalog = Catalog::open(data_dir, master_key)?;
        let segments = open_local_segments(segment_fs, data_dir, catalog.org_keys())?;
        Store::compose(data_dir, catalog, Arc::new(segments), false, clock, retention)
    }

    /// The store of `catalog` and `segments`, with the decisions, admin
    /// certificates and audit log read from the catalog's control store
    /// (the audit log not appended to when `read_only`).
    fn compose(
        data_dir: &Path,
        catalog: Catalog,
        segments: Arc<dyn SegmentStore>,
        read_only: bool,
        clock: Arc<dyn Clock>,
        retention: RetentionPolicy,
    ) -> Result<Store, StoreError> {
        let policies = crate::control::Policies::open(catalog.control())?;
        let admins = crate::control::Admins::open(catalog.control())?;
        let audit_key = catalog.audit_key()?;
        let audit = if read_only {
            crate::audit::AuditLog::open_read_only(data_dir, audit_key, catalog.control())
        } else {
            crate::audit::AuditLog::open(data_dir, audit_key, catalog.control())?
        };
        Ok(Store::from_parts(StoreParts {
            data_dir: data_dir.to_path_buf(),
            segments,
            catalog,
            policies,
            admins,
            audit,
            clock,
            retention,
        }))
    }

    /// Opens the store with its control plane in `control` (a database
    /// several collectors share, say), named `location` in messages, and
    /// its segments in `segments`, or as local files under `data_dir` when
    /// `None`. The audit log keeps its lines in `control` if it
    /// [keeps them](crate::control::ControlStore::keeps_audit_lines).
    /// Fails if the master key does not match the control plane's.
    ///
    /// With `read_only` (the offline tools' export and verify), nothing is
    /// created, recovered or appended (as [`Store::open_read_only`]).
    #[allow(clippy::too_many_arguments)] // Each is a part the caller chose.
    pub fn open_with_control(
        data_dir: &Path,
        control: Arc<dyn crate::control::ControlStore>,
        location: PathBuf,
        segments: Option<Arc<dyn SegmentStore>>,
        read_only: bool,
        master_key: MasterKey,
        clock: Arc<dyn Clock>,
        retention: RetentionPolicy,
    ) -> Result<Store, StoreError> {
        if !read_only {
            writer::create_dir_durable(&fs::StdFs, data_dir)?;
        }
        let catalog = Catalog::with_control(location, control, master_key)?;
        let segments: Arc<dyn SegmentStore> = match segments {
            Some(segments) if read_only => segments,
            Some(segments) => {
                let keys = catalog.org_keys();
                segments.recover(&|org| keys.get(org).ok().flatten())?;
                segments
            }
            None if read_only => Arc::new(LocalSegments::open_read_only(Arc::new(fs::StdFs), &data_dir.join(ORGS_DIR))),
            None => Arc::new(open_local_segments(Arc::new(fs::StdFs), data_dir, catalog.org_keys())?),
        };
        Store::compose(data_dir, catalog, segments, read_only, clock, retention)
    }

    /// Keeps what this store caches (decisions, organisation keys, admin
    /// certificates) in step with changes other collectors sharing its
    /// control plane make, as the control store reports them (see
    /// [`crate::control::seam::Change`]). Register before anything else
    /// watches, so that later sinks see the fresh values.
    pub fn follow_changes(store: &Arc<Store>) {
        use crate::control::seam::Change;
        let weak = Arc::downgrade(store);
        store.control().watch(Arc::new(move |change: &Change| {
            let Some(store) = weak.upgrade() else { return };
            let result = match change {
                Change::Policy(org) => match OrgId::new(org.clone()) {
                    Ok(org) => store.policies.reload(&org).map(|_| ()).map_err(|e| e.to_string()),
                    Err(_) => Ok(()),
                },
                Change::OrgKey(org) => {
                    if let Ok(org) = OrgId::new(org.clone()) {
                        store.catalog.org_keys().forget(Some(&org));
                    }
                    Ok(())
                }
                Change::State(name) if name.starts_with(crate::control::admins::ROW_PREFIX) => {
                    store.admins.reload().map_err(|e| e.to_string())
                }
                Change::State(_) | Change::Device { .. } => Ok(()),
                Change::Everything => {
                    store.catalog.org_keys().forget(None);
                    store
                        .policies
                        .reload_all()
                        .map_err(|e| e.to_string())
                        .and_then(|()| store.admins.reload().map_err(|e| e.to_string()))
                }
            };
            if let Err(e) = result {
                // The next change or the periodic refresh tries again.
                tracing::warn!("cannot follow a change another collector made: {e}");
            }
        }));
    }

    /// Opens the store in `data_dir` for reading only (export, verify):
    /// the key store is read from a checked copy in memory (see
    /// [`Catalog::open_read_only`]), segments are read as they are (no
    /// torn tail is cut, no interrupted erase finished), the audit log is
    /// not appended to, and nothing is created. Works on a read-only copy
    /// and while a collector runs.
    pub fn open_read_only(
        data_dir: &Path,
        master_key: MasterKey,
        clock: Arc<dyn Clock>,
        retention: RetentionPolicy,
    ) -> Result<Store, StoreError> {
        let catalog = Catalog::open_read_only(data_dir, master_key)?;
        let segments = LocalSegments::open_read_only(Arc::new(fs::StdFs), &data_dir.join(ORGS_DIR));
        Store::compose(data_dir, catalog, Arc::new(segments), true, clock, retention)
    }

    /// Where the key store's rows came from (see [`crate::keys::CatalogSource`]).
    pub fn catalog_source(&self) -> &crate::keys::CatalogSource {
        self.catalog.source()
    }

    /// A store composed of `parts`.
    pub fn from_parts(parts: StoreParts) -> Store {
        let StoreParts { data_dir, segments, catalog, policies, admins, audit, clock, retention } = parts;
        Store { data_dir, segments, catalog, policies, admins, audit, clock, retention }
    }

    /// The parts the store is composed of, to recompose it (with another
    /// segment store, say).
    pub fn into_parts(self) -> StoreParts {
        let Store { data_dir, segments, catalog, policies, admins, audit, clock, retention } = self;
        StoreParts { data_dir, segments, catalog, policies, admins, audit, clock, retention }
    }

    /// Where sealed blocks go.
    pub fn segments(&self) -> &dyn SegmentStore {
        &*self.segments
    }

    /// The device registry.
    pub fn registry(&self) -> &Registry {
        self.catalog.registry()
    }

    /// The organisation data keys.
    pub fn org_keys(&self) -> &OrgKeys {
        self.catalog.org_keys()
    }

    /// The organisation's key for pseudonymising identifiers (see
    /// [`glimpse_common::minimise`]): derived from its data key, so it is
    /// destroyed with it.
    pub fn pseudonym_key(&self, org: &OrgId) -> Result<ring::hmac::Key, StoreError> {
        Ok(self.org_keys().pseudonym_key(org)?)
    }

    /// Seals a 256-bit secret under the master key for `purpose` (see
    /// [`crate::keys::Catalog::seal_secret`]).
    pub fn seal_secret(
        &self,
        purpose: &str,
        secret: &glimpse_common::secret::SecretKey,
    ) -> Result<Vec<u8>, StoreError> {
        Ok(self.catalog.seal_secret(purpose, secret)?)
    }

    /// Opens a secret [`Store::seal_secret`] sealed for `purpose`.
    pub fn open_secret(&self, purpose: &str, sealed: &[u8]) -> Option<glimpse_common::secret::SecretKey> {
        self.catalog.open_secret(purpose, sealed)
    }

    /// SIGHUP after another collector sharing the control plane rotated
    /// the master key: if the key in use no longer opens the store, loads
    /// `key_file` (where the operator installed the new key) and uses it
    /// (see [`crate::keys::Catalog::adopt_master`]). Returns whether it
    /// changed the key; the key file is not read while the key in use
    /// opens the store.
    pub fn adopt_master_key_file(&self, key_file: &Path) -> Result<bool, StoreError> {
        if self.catalog.master_is_current()? {
            return Ok(false);
        }
        Ok(self.catalog.adopt_master(crate::keys::MasterKey::load(key_file)?)?)
    }

    /// Rotates the master key online (see [`crate::keys::rotation`]):
    /// every organisation key, device key, the audit key and the secrets
    /// `reseal` finds in state rows are rewrapped under a new key in one
    /// transaction; no segment is rewritten.
    pub fn rotate_master_key(
        &self,
        reseal: &crate::keys::StateResealer<'_>,
    ) -> Result<crate::keys::MasterRotation, StoreError> {
        Ok(self.catalog.rotate_master(reseal)?)
    }

    /// Where the control plane's rows live (registry, keys, decisions,
    /// stream sequences, the audit head).
    pub fn control(&self) -> Arc<dyn crate::control::ControlStore> {
        self.catalog.control()
    }

    /// Appends an audit entry stamped with the store's clock. A failure is
    /// logged loudly rather than returned: the event it records has already
    /// happened.
    pub fn audit_event(
        &self,
        actor: &str,
        action: &str,
        org: Option<&OrgId>,
        outcome: crate::audit::AuditOutcome,
        detail: &str,
    ) {
        let now = self.clock.now_millis();
        match self.audit.append(now, actor, action, org.map(OrgId::as_str), outcome, detail) {
            Ok(_) => {}
            // An offline tool on a store opened read-only: nothing may change.
            Err(crate::audit::AuditError::ReadOnly { .. }) => {
                tracing::info!(actor, action, detail, "not in the audit log: the store is open read-only")
            }
            Err(e) => tracing::error!(actor, action, "audit log append failed: {e}"),
        }
    }

    /// The tamper-evident log of admin actions and refusals.
    pub fn audit(&self) -> &crate::audit::AuditLog {
        &self.audit
    }

    /// The organisations' decisions: capture consent, support grants.
    pub fn policies(&self) -> &crate::control::Policies {
        &self.policies
    }

    /// The admin and support certificates: listed, revoked, last used.
    pub fn admins(&self) -> &crate::control::Admins {
        &self.admins
    }

    /// The retention policy as configured by the operator (without the
    /// organisations' own choices: see [`Store::retention_in_force`]).
    pub fn retention(&self) -> &RetentionPolicy {
        &self.retention
    }

    /// How many days `org`'s data of `kind` is kept now: its own choice
    /// within what the operator offers, or what the operator configured.
    pub fn retention_days(&self, org: &OrgId, kind: DataKind) -> u32 {
        let choice = self.policies.get(org).retention_days.get(&kind).copied();
        self.retention.effective_days(org, kind, choice)
    }

    /// The retention policy reads and sweeps apply: the configured one with
    /// every organisation's own choice in force.
    pub fn retention_in_force(&self) -> RetentionPolicy {
        let choices = self.policies.all().into_iter().flat_map(|(org, policy)| {
            policy.retention_days.into_iter().map(move |(kind, days)| (org.clone(), kind, days))
        });
        self.retention.with_choices(choices.collect::<Vec<_>>())
    }

    /// The start of `org`'s retention window for `kind` at `now`.
    fn window_start(&self, org: &OrgId, kind: DataKind, now: i64) -> i64 {
        now.saturating_sub(i64::from(self.retention_days(org, kind)) * glimpse_common::clock::MILLIS_PER_DAY)
    }

    /// The clock that stamps `received_at` and decides expiry.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    #[cfg(test)]
    pub(crate) fn orgs_dir(&self) -> PathBuf {
        self.data_dir.join(ORGS_DIR)
    }

    #[cfg(test)]
    pub(crate) fn kind_dir(&self, org: &OrgId, kind: DataKind) -> PathBuf {
        self.orgs_dir().join(org.as_str()).join(kind.as_str())
    }

    /// Stores a batch from `identity`, durably, then records `stream_seq` as
    /// the stream's stored sequence. Records are stamped with the current
    /// time and grouped by data kind; an empty batch only records the
    /// sequence. The three stages [`Self::write_blocks`], [`Self::sync_written`] and [`Self::commit_sequences`] in one call.
    pub fn append(
        &self,
        identity: &DeviceIdentity,
        stream_id: u64,
        stream_seq: u64,
        records: &[Record],
    ) -> Result<AppendReceipt, StoreError> {
        let mut written = self.write_blocks(identity, stream_id, stream_seq, records)?;
        self.sync_written(&mut written)?;
        let WrittenBatch { identity, stream, written, receipt } = written;
        match written {
            Some((_, notes, cohort)) => self.registry().set_stored_seq_in(&identity, stream, notes, cohort)?,
            None => self.registry().set_stored_seq(&identity, stream.0, stream.1)?,
        }
        Ok(receipt)
    }

    /// The first stage of [`Self::append`], for an edge that stores many
    /// batches at once: seals the batch's records into segments and writes
    /// them, but neither makes them durable ([`Self::sync_written`]) nor
    /// records the stream's sequence ([`Self::commit_sequences`]), so the
    /// batch does not count as stored. A batch whose sequence is never
    /// committed is sent again by its agent, and readers serve its records
    /// once (see `block`).
    pub fn write_blocks(
        &self,
        identity: &DeviceIdentity,
        stream_id: u64,
        stream_seq: u64,
        records: &[Record],
    ) -> Result<WrittenBatch, StoreError> {
        let mut receipt = AppendReceipt::default();
        let stream = (stream_id, stream_seq);
        if records.is_empty() {
            return Ok(WrittenBatch { identity: identity.clone(), stream, written: None, receipt });
        }
        let received_at_ms = self.clock.now_millis();
        let day = utc_day(received_at_ms);
        let key = self.org_keys().get_or_create(&identity.org)?;
        let mut by_kind: BTreeMap<DataKind, Vec<&Record>> = BTreeMap::new();
        for record in records {
            by_kind.entry(record.kind()).or_default().push(record);
        }
        let mut groups = Vec::with_capacity(by_kind.len());
        for (kind, group) in by_kind {
            let stamped = stamp(identity, received_at_ms, stream, group, records.len())?;
            receipt.records += stamped.len();
            groups.push((kind, encode_blocks(&stamped)?));
        }
        let runs: Vec<BlockRun<'_>> = groups
            .iter()
            .map(|(kind, plaintexts)| BlockRun { org: &identity.org, kind: *kind, day, key: &key, plaintexts })
            .collect();
        let ticket = self.segments.append(&runs)?;
        receipt.blocks = ticket.blocks;
        receipt.bytes = ticket.bytes;
        let notes = catalog::notes(&ticket, &groups, identity, stream);
        Ok(WrittenBatch { identity: identity.clone(), stream, written: Some((ticket, notes, None)), receipt })
    }

    /// The second stage: makes what [`Self::write_blocks`] wrote durable
    /// (one fsync covers every batch written to a segment before it).
    pub fn sync_written(&self, batch: &mut WrittenBatch) -> Result<(), StoreError> {
        if let Some((ticket, _, cohort)) = &mut batch.written {
            let started = std::time::Instant::now();
            self.segments.sync(ticket)?;
            batch.receipt.sync_time = started.elapsed();
            *cohort = ticket.cohort();
        }
        Ok(())
    }

    /// The last stage: records every batch's sequence (and its segments in
    /// the catalog) in one transaction, after which they are stored and may
    /// be acknowledged. Each must have been made durable by
    /// [`Self::sync_written`]. All or none are committed.
    pub fn commit_sequences(&self, batches: &[&WrittenBatch]) -> Result<(), StoreError> {
        let streams = batches.iter().map(|b| (&b.identity, b.stream)).collect();
        let notes =
            batches.iter().flat_map(|b| b.written.iter().flat_map(|(_, notes, _)| notes.iter().cloned())).collect();
        self.registry().set_stored_seqs_in(streams, notes, None)?;
        Ok(())
    }

    /// Appends records of one kind for one day and syncs them.
    #[cfg(test)]
    fn append_group(
        &self,
        org: &OrgId,
        kind: DataKind,
        day: i64,
        key: &OrgKey,
        group: &[Stamped<'_>],
    ) -> Result<(usize, u64), StoreError> {
        let plaintexts = encode_blocks(group)?;
        let ticket = self.segments.append(&[BlockRun { org, kind, day, key, plaintexts: &plaintexts }])?;
        self.segments.sync(&ticket)?;
        Ok((ticket.blocks, ticket.bytes))
    }

    /// Reads an organisation's records of one kind received in
    /// `since..until` (Unix milliseconds, inclusive start, exclusive end;
    /// `None` for unbounded), clipped to the retention window.
    pub fn read(
        &self,
        org: &OrgId,
        kind: DataKind,
        since: Option<i64>,
        until: Option<i64>,
    ) -> Result<ReadOutcome, StoreError> {
        let mut records = Vec::new();
        let problems = self.read_with(org, kind, since, until, |record| records.push(record))?;
        Ok(ReadOutcome { records, problems })
    }

    /// Like [`Store::read`], but hands each record to `each` as its block is
    /// decrypted, so exporting a long range holds one block in memory rather
    /// than the whole range. Returns the problems met.
    pub fn read_with(
        &self,
        org: &OrgId,
        kind: DataKind,
        since: Option<i64>,
        until: Option<i64>,
        mut each: impl FnMut(StoredRecord),
    ) -> Result<Vec<SegmentProblem>, StoreError> {
        let now = self.clock.now_millis();
        let from = self.window_start(org, kind, now).max(since.unwrap_or(i64::MIN));
        let until = until.unwrap_or(i64::MAX);
        let latest = now.saturating_add(FUTURE_SKEW_MS);
        let mut each = |_: ReadMark, record: StoredRecord| {
            each(record);
            ControlFlow::Continue(())
        };
        Ok(self.read_range(org, kind, (from, until), Some(latest), None, &mut each)?.0)
    }

    /// Like [`Store::read_with`], in the same order, but starting right
    /// after `after` (a mark an earlier read handed out) and handing each
    /// record's own mark along, so that a consumer can stop (`Break`) and
    /// resume later with no record repeated or lost. Returns the problems
    /// met; when the consumer stopped early, the segments left unread are
    /// not checked against the catalog.
    pub fn read_after(
        &self,
        org: &OrgId,
        kind: DataKind,
        (since, until): (Option<i64>, Option<i64>),
        after: Option<&ReadMark>,
        each: &mut dyn FnMut(ReadMark, StoredRecord) -> ControlFlow<()>,
    ) -> Result<Vec<SegmentProblem>, StoreError> {
        let now = self.clock.now_millis();
        let from = self.window_start(org, kind, now).max(since.unwrap_or(i64::MIN));
        let until = until.unwrap_or(i64::MAX);
        let latest = now.saturating_add(FUTURE_SKEW_MS);
        Ok(self.read_range(org, kind, (from, until), Some(latest), after, each)?.0)
    }

    /// Every record of an organisation's kind, whatever its age, and the
    /// problems met (for `verify`). Returns the problems and the number of
    /// segments read.
    pub(crate) fn read_all(
        &self,
        org: &OrgId,
        kind: DataKind,
        each: &mut dyn FnMut(StoredRecord),
    ) -> Result<(Vec<SegmentProblem>, u64), StoreError> {
        let mut each = |_: ReadMark, record: StoredRecord| {
            each(record);
            ControlFlow::Continue(())
        };
        self.read_range(org, kind, (i64::MIN, i64::MAX), None, None, &mut each)
    }

    /// Reads records received in `from..until`, not later than `latest`
    /// (those are reported), checked against the segment catalog.
    fn read_range(
        &self,
        org: &OrgId,
        kind: DataKind,
        (from, until): (i64, i64),
        latest: Option<i64>,
        after: Option<&ReadMark>,
        each: &mut dyn FnMut(ReadMark, StoredRecord) -> ControlFlow<()>,
    ) -> Result<(Vec<SegmentProblem>, u64), StoreError> {
        let until_served = latest.map_or(until, |latest| until.min(latest.saturating_add(1)));
        let mut repeats = RepeatFilter::default();
        // Records before the mark still pass the repeat filter, so that a
        // repeat of a batch served before the mark is dropped after it.
        let mut deliver = |record: StoredRecord, origin: Option<RecordOrigin>, mark: ReadMark, past: bool| {
            if repeats.admit(&record.device, origin) && past {
                each(mark, record)
            } else {
                ControlFlow::Continue(())
            }
        };
        let mut sink = Sink {
            each: &mut deliver,
            problems: Vec::new(),
            range: (from, until_served),
            tally: None,
            future: (until, 0),
            at: (0, 0),
            gate: Gate::Open,
            stopped: false,
        };
        if from >= until {
            return Ok((sink.problems, 0));
        }
        let rows = self.catalog_rows(org, kind)?;
        let read_day = |day: i64| {
            let day_start = day.saturating_mul(MILLIS_PER_DAY);
            !(day_start.saturating_add(MILLIS_PER_DAY) <= from || day_start >= until)
        };
        let mut key: Option<Arc<OrgKey>> = None;
        // Whether the keys were loaded again for a segment under a version
        // they lacked (once per read).
        let mut reloaded = false;
        let mut seen_ids = HashSet::new();
        let mut tallies: HashMap<(i64, String), catalog::Tally> = HashMap::new();
        let mut segments_read = 0;
        // Segments wholly before the mark are neither read nor checked.
        let mut passed: HashSet<(i64, String)> = HashSet::new();
        'days: for day in self.segments.days(org, kind, &mut sink.problems)? {
            if !read_day(day) || after.is_some_and(|mark| day < mark.day) {
                continue;
            }
            let place = SegmentPlace { org: org.clone(), kind, day };
            let listed = self.segments.segments(org, kind, day, &mut sink.problems)?;
            // The mark's segment gone, the one before it may be where a
            // compaction merged it (it takes the first merged segment's
            // sequence): if it holds the mark's record, the read resumes
            // inside it.
            let merged_into = match after {
                Some(mark) if day == mark.day => self.merged_into(&listed, &place, mark)?,
                _ => None,
            };
            for segment in listed {
                if sink.stopped {
                    break 'days;
                }
                let (seq, id) = parse_segment_name(&segment.key.name).unwrap_or((0, 0));
                sink.at = (day, seq);
                sink.gate = match after {
                    Some(mark) if merged_into.as_deref() == Some(segment.key.name.as_str()) => {
                        Gate::Through { batch: mark.batch, index: mark.index, state: Passing::Before }
                    }
                    Some(mark) if (day, seq) < mark.segment() => {
                        passed.insert((day, segment.key.name.clone()));
                        continue;
                    }
                    Some(mark) if (day, seq) == mark.segment() && id == mark.segment_id => Gate::After(mark.ordinal),
                    Some(mark) if (day, seq) == mark.segment() => Gate::Rewritten {
                        batch: mark.batch,
                        index: mark.index,
                        received_at_ms: mark.received_at_ms,
                        state: Passing::Before,
                    },
                    _ => Gate::Open,
                };
                segments_read += 1;
                let mut ring = match &key {
                    Some(key) => Arc::clone(key),
                    None => {
                        let found =
                            self.org_keys().get(org)?.ok_or_else(|| StoreError::NoOrgKey { org: org.clone() })?;
                        key = Some(Arc::clone(&found));
                        found
                    }
                };
                let mut tally = catalog::Tally { listed: true, ..catalog::Tally::default() };
                match self.segments.open(&segment) {
                    Ok(Some(bytes)) => {
                        // Under a version these keys lack: another collector
                        // sharing the control plane rotated the key and this
                        // one has not heard yet. Load them again, once.
                        let lacking = segment::header_key_version(&*bytes).is_some_and(|v| ring.secret_of(v).is_none());
                        if lacking && !reloaded {
                            reloaded = true;
                            self.org_keys().forget(Some(org));
                            if let Some(fresh) = self.org_keys().get(org)? {
                                key = Some(Arc::clone(&fresh));
                                ring = fresh;
                            }
                        }
                        sink.tally = Some(tally);
                        read_source(&*bytes, &segment, &place, &ring, &mut seen_ids, &mut sink);
                        tally = sink.tally.take().unwrap_or_default();
                    }
                    // Deleted by the sweeper since it was listed: expired anyway.
                    Ok(None) => tally.listed = false,
                    Err(e) => problem(&mut sink.problems, segment.location.clone(), 0, e.to_string()),
                }
                tallies.insert((day, segment.key.name.clone()), tally);
            }
        }
        let (_, future) = sink.future;
        let mut problems = sink.problems;
        if future > 0 {
            problem(
                &mut problems,
                self.data_dir.join(ORGS_DIR).join(org.as_str()).join(kind.as_str()),
                0,
                format!(
                    "{future} records are dated after the collector's clock (it was ahead when they were stored, \
                     or is behind now); not served"
                ),
            );
        }
        if !sink.stopped {
            let read_segment = |day: i64, name: &str| {
                read_day(day) && after.is_none_or(|mark| day >= mark.day) && !passed.contains(&(day, name.to_owned()))
            };
            self.check_catalog(org, kind, rows, &read_segment, &tallies, &mut problems);
        }
        if repeats.repeats > 0 {
            tracing::debug!(%org, %kind, repeats = repeats.repeats, "records stored twice served once");
        }
        Ok((problems, segments_read))
    }

    /// The segment of `listed` (one day's) that a compaction merged the
    /// mark's segment into: when no listed segment has the mark's
    /// sequence, the last one before it, if it holds the mark's record.
    fn merged_into(
        &self,
        listed: &[SegmentInfo],
        place: &SegmentPlace,
        mark: &ReadMark,
    ) -> Result<Option<String>, StoreError> {
        let seq_of = |s: &SegmentInfo| parse_segment_name(&s.key.name).map_or(0, |(seq, _)| seq);
        if listed.iter().any(|s| seq_of(s) == mark.segment_seq) {
            return Ok(None);
        }
        let Some(before) = listed.iter().rev().find(|s| seq_of(s) < mark.segment_seq) else { return Ok(None) };
        let Some(key) = self.org_keys().get(&place.org)? else { return Ok(None) };
        let Ok(Some(bytes)) = self.segments.open(before) else { return Ok(None) };
        let mut found = false;
        let mut each = |_: StoredRecord, _: Option<RecordOrigin>, m: ReadMark, _: bool| {
            if m.batch == mark.batch && m.index == mark.index {
                found = true;
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        };
        let mut sink = Sink {
            each: &mut each,
            problems: Vec::new(),
            range: (i64::MIN, i64::MAX),
            tally: None,
            future: (i64::MAX, 0),
            at: (place.day, seq_of(before)),
            gate: Gate::Open,
            stopped: false,
        };
        read_source(&*bytes, before, place, &key, &mut HashSet::new(), &mut sink);
        Ok(found.then(|| before.key.name.clone()))
    }

    /// Merges small segments of every organisation's kinds (see
    /// [`SegmentStore::compact`]; a store of local files has none to
    /// merge), one kind at a time under the lock erasure takes, skipping
    /// days retention is about to delete. `target_bytes`, `after_ms` and
    /// `max_merges` are the [`seam::CompactPolicy`]'s. Failures of one
    /// kind are logged and counted; the rest go on.
    pub fn compact(
        &self,
        target_bytes: u64,
        after_ms: i64,
        max_merges: usize,
    ) -> Result<(seam::Compacted, u64), StoreError> {
        let now = self.clock.now_millis();
        let control = self.control();
        let mut total = seam::Compacted::default();
        let mut failures = 0;
        for org in self.segments.orgs()? {
            let Some(key) = self.org_keys().get(&org)? else { continue };
            for kind in DataKind::ALL {
                if total.merges as usize >= max_merges {
                    return Ok((total, failures));
                }
                // Retention deletes whole days once they leave the window;
                // a day within a day of it is left alone, so a deletion never
                // meets a merge under way.
                let keep_from = self.retention.window_start(&org, kind, now).saturating_add(MILLIS_PER_DAY);
                let policy = seam::CompactPolicy {
                    target_bytes,
                    after_ms,
                    now_ms: now,
                    keep_from_ms: keep_from,
                    max_merges: max_merges - total.merges as usize,
                };
                let guard = control
                    .exclusive(&format!("erase:{org}:{}", kind.as_str()))
                    .map_err(|e| StoreError::Key(KeyError::Control(e)));
                let done = guard.and_then(|_guard| {
                    self.segments.compact(&org, kind, &key, &*control, &policy).map_err(StoreError::from)
                });
                match done {
                    Ok(done) => {
                        total.merges += done.merges;
                        total.merged += done.merged;
                        total.bytes += done.bytes;
                        total.settled += done.settled;
                    }
                    Err(e) => {
                        failures += 1;
                        tracing::warn!(%org, %kind, error = %e, "compaction failed; tried again next run");
                    }
                }
            }
        }
        Ok((total, failures))
    }

    /// Disk use per organisation and kind.
    pub fn stats(&self) -> Result<StoreStats, StoreError> {
        let mut stats = StoreStats::default();
        let mut ignored = Vec::new();
        for org in self.orgs() {
            for kind in DataKind::ALL {
                let mut entry = KindStats {
                    org: org.clone(),
                    kind,
                    days: 0,
                    segments: 0,
                    bytes: 0,
                    oldest_day: None,
                    newest_day: None,
                };
                for day in self.segments.days(&org, kind, &mut ignored)? {
                    entry.days += 1;
                    entry.oldest_day.get_or_insert_with(|| format_day(day));
                    entry.newest_day = Some(format_day(day));
                    // A segment swept meanwhile simply no longer counts.
                    for segment in self.segments.segments(&org, kind, day, &mut ignored)? {
                        entry.segments += 1;
                        entry.bytes += segment.bytes;
                    }
                }
                if entry.days > 0 {
                    stats.segments += entry.segments;
                    stats.bytes += entry.bytes;
                    stats.kinds.push(entry);
                }
            }
        }
        Ok(stats)
    }

    /// Organisations with a directory in the store, sorted. Unreadable
    /// directories are logged and skipped.
    pub fn orgs(&self) -> Vec<OrgId> {
        self.segments.orgs().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot list organisations");
            Vec::new()
        })
    }
}

/// The local segments of `data_dir`, over `fs`, recovered from whatever a
/// crash left.
pub(crate) fn open_local_segments(
    fs: Arc<dyn fs::FileSystem>,
    data_dir: &Path,
    keys: &OrgKeys,
) -> Result<LocalSegments, StoreError> {
    let segments = LocalSegments::open(fs, &data_dir.join(ORGS_DIR))?;
    segments.recover(&|org| keys.get(org).ok().flatten())?;
    Ok(segments)
}

/// Stamps one kind's records of a batch for storage: who sent them, when
/// they arrived, and their origin (stream, sequence, position among the
/// batch's records of that kind). The one place records are stamped, for
/// [`Store::append`] and [`seal_batch_in_memory`] alike. `batch_len` only
/// names the batch in the error.
fn stamp<'a>(
    identity: &'a DeviceIdentity,
    received_at_ms: i64,
    (stream_id, stream_seq): (u64, u64),
    records: impl IntoIterator<Item = &'a Record>,
    batch_len: usize,
) -> Result<Vec<Stamped<'a>>, StoreError> {
    records
        .into_iter()
        .enumerate()
        .map(|(index, record)| {
            let index = u32::try_from(index).map_err(|_| StoreError::BatchTooLarge { records: batch_len })?;
            Ok((
                StoredRecordRef { device: &identity.device, device_kind: identity.kind, received_at_ms, record },
                Some(RecordOrigin { stream_id, stream_seq, index }),
            ))
        })
        .collect()
}

/// The block plaintexts of a whole segment, in order, for a segment store
/// that merges segments ([`SegmentStore::compact`]): `Ok` only if the
/// header names `key`'s organisation, kind and day and the segment id in
/// its name, and every block authenticates, with nothing after the last.
/// Anything else is described in the error (such a segment is left as it
/// is, for readers to report).
pub fn segment_plaintexts(
    src: &dyn SegmentBytes,
    key: &seam::SegmentKey,
    secret: &OrgKey,
) -> Result<Vec<Vec<u8>>, String> {
    let place = SegmentPlace { org: key.org.clone(), kind: key.kind, day: key.day };
    let mut reader = SegmentReader::open(src, &place, secret).map_err(|d| d.what)?;
    if parse_segment_name(&key.name).is_some_and(|(_, id)| id != reader.segment_id()) {
        return Err("the segment id in its header differs from its name's".into());
    }
    let mut blocks = Vec::new();
    let mut defect = None;
    reader.read_blocks(|item| match item {
        Ok((_, plaintext)) => blocks.push(plaintext),
        Err(d) => {
            defect.get_or_insert(format!("at offset {}: {}", d.offset, d.what));
        }
    });
    match defect {
        Some(what) => Err(what),
        None => Ok(blocks),
    }
}

/// The day a segment's header names (see [`retention`](crate::retention)).
pub(crate) fn segment_header_day(bytes: &dyn SegmentBytes) -> Option<i64> {
    segment::header_day(bytes)
}

pub(crate) fn problem(problems: &mut Vec<SegmentProblem>, path: PathBuf, offset: u64, what: String) {
    tracing::warn!(path = %path.display(), offset, problem = %what, "segment store problem");
    problems.push(SegmentProblem { path, offset, what });
}

/// Where a read delivers what it finds.
struct Sink<'a> {
    /// Takes a record in range, its origin, its mark and whether it is past
    /// the resume mark.
    each: &'a mut dyn FnMut(StoredRecord, Option<RecordOrigin>, ReadMark, bool) -> ControlFlow<()>,
    problems: Vec<SegmentProblem>,
    /// Records received in `range.0..range.1` are delivered.
    range: (i64, i64),
    /// Counts what the current segment holds, for the catalog check.
    tally: Option<catalog::Tally>,
    /// Records asked for (before `future.0`) but dated after the clock's
    /// limit, so not delivered: counted in `future.1`.
    future: (i64, u64),
    /// The segment being read: its day and sequence.
    at: (i64, u64),
    /// Which of its records are past the resume mark.
    gate: Gate,
    /// The consumer asked to stop.
    stopped: bool,
}

/// Reads one segment into `sink`. Every failure becomes a problem; none
/// is fatal.
fn read_source(
    src: &dyn SegmentBytes,
    segment: &SegmentInfo,
    place: &SegmentPlace,
    key: &OrgKey,
    seen_ids: &mut HashSet<u64>,
    sink: &mut Sink<'_>,
) {
    let (from, until) = sink.range;
    let path = &segment.location;
    let mut reader = match SegmentReader::open(src, place, key) {
        Ok(reader) => reader,
        Err(defect) => {
            problem(&mut sink.problems, path.to_path_buf(), defect.offset, defect.what);
            return;
        }
    };
    let version = reader.version();
    if !seen_ids.insert(reader.segment_id()) {
        problem(
            &mut sink.problems,
            path.to_path_buf(),
            0,
            "segment id repeats another segment of this day (a copied segment); not served".into(),
        );
        return;
    }
    let segment_id = reader.segment_id();
    let mut ordinal: u32 = 0;
    reader.read_blocks(|item| match item {
        Ok((offset, plaintext)) => match decode_block(version, &plaintext) {
            Some(records) => {
                if let Some(tally) = sink.tally.as_mut() {
                    tally.blocks += 1;
                }
                for (record, origin) in records {
                    if let Some(tally) = sink.tally.as_mut() {
                        tally.count(&record, origin);
                    }
                    let this = ordinal;
                    ordinal = ordinal.saturating_add(1);
                    if sink.stopped {
                        continue;
                    }
                    if record.received_at_ms >= from && record.received_at_ms < until {
                        let (day, segment_seq) = sink.at;
                        let mark = ReadMark {
                            day,
                            segment_seq,
                            segment_id,
                            ordinal: this,
                            received_at_ms: record.received_at_ms,
                            batch: batch_tag(&record.device, origin, record.received_at_ms),
                            index: origin.map_or(this, |o| o.index),
                        };
                        let past = sink.gate.passes(this, &mark);
                        if (sink.each)(record, origin, mark, past).is_break() {
                            sink.stopped = true;
                        }
                    } else if record.received_at_ms >= until && record.received_at_ms < sink.future.0 {
                        sink.future.1 += 1;
                    }
                }
            }
            None => problem(
                &mut sink.problems,
                path.to_path_buf(),
                offset,
                "block authenticated but its records do not decode (written by a newer \
                 version?); not served"
                    .into(),
            ),
        },
        Err(defect) => problem(&mut sink.problems, path.to_path_buf(), defect.offset, defect.what),
    });
}

#[cfg(test)]
pub(crate) mod faulty_fs;
#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) mod testutil;

/// Encodes and seals one batch exactly as [`Store::append`] does (postcard
/// blocks of at most [`MAX_BLOCK_LEN`], AES-256-GCM with the segment nonce
/// and associated data), but in memory: for benchmarks and capacity
/// planning. `stream` is the batch's (stream id, sequence number), which
/// the blocks carry as their origin. Returns the block frames as they would
/// be appended.
pub fn seal_batch_in_memory(
    key: &SecretKey,
    identity: &DeviceIdentity,
    kind: DataKind,
    received_at_ms: i64,
    segment_id: u64,
    stream: (u64, u64),
    records: &[Record],
) -> Result<Vec<Vec<u8>>, StoreError> {
    let refs = stamp(identity, received_at_ms, stream, records, records.len())?;
    let place = SegmentPlace { org: identity.org.clone(), kind, day: utc_day(received_at_ms) };
    encode_blocks(&refs)?
        .iter()
        .enumerate()
        .map(|(index, plain)| {
            segment::seal_block(key, &place, segment_id, index as u64, plain)
                .ok_or(StoreError::BlockTooLarge { len: plain.len() })
        })
        .collect()
}
