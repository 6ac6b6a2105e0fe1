//! The segment storage seam: where sealed blocks go, partitioned by
//! (organisation, data kind, UTC day), behind the [`SegmentStore`] trait.
//!
//! [`super::Store`] decides *what* is stored (stamping, grouping, block
//! plaintexts, which keys, retention windows, repeats); a `SegmentStore`
//! decides *where*: which segment a block lands in, at which index, and
//! how it is made durable. The block's nonce and associated data bind that
//! segment id and index, so the segment store seals each block as it
//! places it, with the key and plaintext the caller hands in (see
//! `segment.rs` for the format).
//!
//! # The contract every implementation keeps
//!
//! - **Durability and acknowledgement.** [`SegmentStore::append`] writes
//!   (possibly many runs of blocks at once) and returns a [`SyncTicket`];
//!   nothing it wrote is durable yet. Only when [`SegmentStore::sync`] of
//!   that ticket returns `Ok` are *all* its blocks durable: they survive a
//!   crash and every later read serves them. The caller acknowledges
//!   (records the stream sequence, answers the agent) only after that.
//!   Concurrent appenders may share one sync (group commit).
//! - **After a failed append or sync** nothing of that ticket counts as
//!   stored: the implementation cuts or abandons what it wrote, and a read
//!   may serve such blocks at most once (a crash can leave them behind
//!   whole; a torn one is never served). The caller's retry may then store
//!   the batch twice, which readers drop by origin.
//! - **Reads serve only durable bytes**: [`SegmentStore::open`] bounds a
//!   segment that is still being written to what has been synced.
//! - **Deletion is by day**: [`SegmentStore::delete_day`] removes a whole
//!   (organisation, kind, day) and never rewrites a segment; only
//!   [`SegmentStore::rewrite`] (erasure) replaces segments, each replacement
//!   atomic (the old segment or the new one, never neither, never both
//!   after [`SegmentStore::recover`]).
//! - **Errors say whether to retry**: [`SegmentError::is_transient`] is
//!   true for failures that may pass (a full disk, a timeout, a backend
//!   that is briefly unavailable), false for those that will not.
//!
//! Nothing in this trait names a local path: segments are named by
//! [`SegmentKey`], and [`SegmentInfo::location`] is only for messages. The
//! local-files implementation is [`super::local::LocalSegments`]; an
//! implementation outside this crate (the object store of
//! `glimpse-objects`, which syncs by uploading) builds segments with
//! [`super::SegmentBuilder`] and hangs its waits on the ticket through
//! [`RemoteWait`].
//!
//! What is deliberately not here: keys, records, retention windows and
//! stream sequence numbers (all the caller's). Compaction
//! ([`SegmentStore::compact`]) is the implementation's own: local files
//! need none, an object store merges its small objects.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::keys::OrgKey;
use glimpse_common::identity::OrgId;
use glimpse_common::record::DataKind;

use super::segment::ReadAt;
use super::writer::SyncPoint;
use super::SegmentProblem;

/// Where a segment belongs and its name within its day, which orders it
/// among the day's segments.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SegmentKey {
    /// The organisation.
    pub org: OrgId,
    /// The data kind.
    pub kind: DataKind,
    /// The UTC day number the records were received on.
    pub day: i64,
    /// The segment's name within its day; names sort in creation order.
    pub name: String,
}

/// One stored segment, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    /// What it is.
    pub key: SegmentKey,
    /// Where it is, for messages and problem reports only.
    pub location: PathBuf,
    /// Its size in bytes when listed.
    pub bytes: u64,
}

/// A run of block plaintexts of one (organisation, kind, day), to be sealed
/// and appended in order.
#[derive(Debug, Clone, Copy)]
pub struct BlockRun<'a> {
    /// The organisation whose key seals them.
    pub org: &'a OrgId,
    /// Their data kind.
    pub kind: DataKind,
    /// The UTC day they were received on.
    pub day: i64,
    /// The organisation's data keys: blocks are sealed under the current
    /// version (a segment under another is closed and a new one started).
    pub key: &'a OrgKey,
    /// The block plaintexts (see `block.rs`).
    pub plaintexts: &'a [Vec<u8>],
}

/// What [`SegmentStore::append`] wrote, to be made durable by
/// [`SegmentStore::sync`]. Opaque: each implementation keeps what it needs
/// to wait for its own writes (the local files in this crate, others
/// through [`SyncTicket::attach`]).
#[derive(Debug, Default)]
pub struct SyncTicket {
    /// Blocks written.
    pub blocks: usize,
    /// Bytes written, framing included.
    pub bytes: u64,
    /// Where each run's blocks went, for the segment catalog.
    pub placed: Vec<Placed>,
    pub(crate) pending: Vec<PendingSync>,
    remote: Vec<Arc<dyn RemoteWait>>,
}

impl SyncTicket {
    /// Hangs one of an outside implementation's waits on the ticket: what
    /// its [`SegmentStore::sync`] must see done before it returns `Ok`.
    pub fn attach(&mut self, wait: Arc<dyn RemoteWait>) {
        self.remote.push(wait);
    }

    /// The waits [`SyncTicket::attach`] hung on the ticket, in order.
    pub fn attached(&self) -> &[Arc<dyn RemoteWait>] {
        &self.remote
    }
}

/// Something a [`SegmentStore`] outside this crate waits on before a
/// ticket is durable (an upload, say). `PendingSync` is this crate's own
/// and stays private; an outside store attaches its waits with
/// [`SyncTicket::attach`] and finds its own type again in `sync` with
/// [`RemoteWait::as_any`].
pub trait RemoteWait: fmt::Debug + Send + Sync + 'static {
    /// The wait as [`std::any::Any`], to downcast to the implementation's type.
    fn as_any(&self) -> &dyn std::any::Any;

    /// The tickets that become durable together with this wait (one
    /// uploaded object's): an id for them and how many they are. The store
    /// then commits their sequences in one transaction rather than in
    /// whichever groups their wake-ups fall into. `None`: no such cohort.
    fn cohort(&self) -> Option<Cohort> {
        None
    }
}

pub use crate::cohort::Cohort;

impl SyncTicket {
    /// The cohort of the wait this ticket's durability was decided by (the
    /// last attached: the one that ended last), if any.
    pub fn cohort(&self) -> Option<Cohort> {
        self.remote.last().and_then(|w| w.cohort())
    }
}

/// Some of a run's blocks, placed in one segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    /// Which run of the `append` call (its index in `runs`).
    pub run: usize,
    /// Which of the run's plaintexts.
    pub blocks: std::ops::Range<usize>,
    /// The segment they went to.
    pub segment: SegmentKey,
    /// Where the last of them ends in it.
    pub end: u64,
}

/// One segment's part of a ticket: durable once `point` has synced `end`.
#[derive(Debug)]
pub(crate) struct PendingSync {
    pub(crate) org: OrgId,
    pub(crate) kind: DataKind,
    pub(crate) point: Arc<SyncPoint>,
    pub(crate) end: u64,
}

/// How much a deletion freed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Freed {
    /// Segments deleted.
    pub segments: u64,
    /// Bytes freed.
    pub bytes: u64,
}

/// What [`SegmentStore::rewrite`]'s callback decides for one segment.
#[derive(Debug)]
pub enum Rewrite {
    /// Leave it as it is.
    Keep,
    /// Replace it with these block plaintexts, sealed afresh; none deletes it.
    Replace(Vec<Vec<u8>>),
    /// Stop: leave this and every later segment as they are.
    Stop,
}

/// Positional reads of one segment's durable bytes.
pub trait SegmentBytes: Send + fmt::Debug {
    /// Bytes available.
    fn size(&self) -> u64;
    /// Fills `buf` from `pos`; fails if that runs past [`SegmentBytes::size`].
    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()>;
}

/// A segment held in memory.
impl SegmentBytes for Vec<u8> {
    fn size(&self) -> u64 {
        self.len() as u64
    }

    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        ReadAt::read_exact_at(self.as_slice(), buf, pos)
    }
}

impl ReadAt for dyn SegmentBytes + '_ {
    fn size(&self) -> u64 {
        SegmentBytes::size(self)
    }

    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        SegmentBytes::read_exact_at(self, buf, pos)
    }
}

/// Where sealed blocks are kept. See the module header for the contract.
pub trait SegmentStore: Send + Sync + fmt::Debug {
    /// Seals and writes `runs` (each into the segment its organisation,
    /// kind and day is appending to), not yet durably. On error nothing of
    /// this call counts as stored.
    fn append(&self, runs: &[BlockRun<'_>]) -> Result<SyncTicket, SegmentError>;

    /// Makes everything `ticket` wrote durable. Only after `Ok` may the
    /// caller acknowledge it.
    fn sync(&self, ticket: &SyncTicket) -> Result<(), SegmentError>;

    /// Where a segment is or would be, for messages and problem reports
    /// only (the segment catalog names a missing segment with it).
    fn location(&self, key: &SegmentKey) -> PathBuf;

    /// A cheap probe of the backend, for readiness: `Ok` if appends can
    /// be expected to succeed now. Local files have their free-space check
    /// elsewhere, so the default says nothing.
    fn check(&self) -> Result<(), SegmentError> {
        Ok(())
    }

    /// Where segments are, for messages (a directory, or a bucket's URL).
    fn describe(&self) -> String {
        "the segment store".into()
    }

    /// Organisations with stored segments (or containers left from them),
    /// sorted.
    fn orgs(&self) -> Result<Vec<OrgId>, SegmentError>;

    /// Days with segments of `org`'s `kind`, oldest first. Entries that are
    /// not days are reported in `problems` and skipped.
    fn days(&self, org: &OrgId, kind: DataKind, problems: &mut Vec<SegmentProblem>) -> Result<Vec<i64>, SegmentError>;

    /// The segments of one day in creation order. Entries that are not
    /// segments are reported in `problems` and skipped.
    fn segments(
        &self,
        org: &OrgId,
        kind: DataKind,
        day: i64,
        problems: &mut Vec<SegmentProblem>,
    ) -> Result<Vec<SegmentInfo>, SegmentError>;

    /// The durable bytes of a segment; `None` if it no longer exists
    /// (deleted since it was listed).
    fn open(&self, segment: &SegmentInfo) -> Result<Option<Box<dyn SegmentBytes>>, SegmentError>;

    /// Offers every segment of `org`'s `kind` to `edit`, oldest first, and
    /// applies its decisions, each replacement atomic and durable before
    /// the next segment is offered. Appends of that kind wait meanwhile and
    /// then go to a fresh segment. `key` seals replacements (under its
    /// current version). Returns each
    /// replaced segment with its replacement (`None`: deleted).
    fn rewrite(
        &self,
        org: &OrgId,
        kind: DataKind,
        key: &OrgKey,
        edit: &mut dyn FnMut(&SegmentInfo, &dyn SegmentBytes) -> Rewrite,
    ) -> Result<Vec<(SegmentKey, Option<SegmentKey>)>, SegmentError>;

    /// Deletes every segment of one day, durably.
    fn delete_day(&self, org: &OrgId, kind: DataKind, day: i64) -> Result<Freed, SegmentError>;

    /// Deletes every segment of an organisation, durably.
    fn delete_org(&self, org: &OrgId) -> Result<Freed, SegmentError>;

    /// Removes containers deletions left empty for `org` (directories, for
    /// local files). Returns how many went and what could not be removed.
    fn tidy(&self, org: &OrgId) -> (u64, Vec<SegmentError>);

    /// Merges small segments of `org`'s `kind` into larger ones (see
    /// [`CompactPolicy`]), switching the segment catalog in `catalog` from
    /// the old segments' rows to the new one's in one transaction, so that
    /// reads keep serving every record exactly once. Also settles what an
    /// interrupted compaction of this kind left. The caller holds the
    /// service-wide lock of the kind (the one erasure takes). Local
    /// segments roll at [`super::SEGMENT_ROLL_BYTES`] and need none: the
    /// default does nothing.
    fn compact(
        &self,
        org: &OrgId,
        kind: DataKind,
        key: &OrgKey,
        catalog: &dyn crate::control::ControlStore,
        policy: &CompactPolicy,
    ) -> Result<Compacted, SegmentError> {
        let _ = (org, kind, key, catalog, policy);
        Ok(Compacted::default())
    }

    /// Whether a segment the catalog names but the listing lacks is a
    /// merged segment staged and not yet served (a compaction switched the
    /// catalog to it and stopped before its commit point): its sources are
    /// still served, so it is no loss. The default knows of none.
    fn staged_merge(&self, key: &SegmentKey) -> bool {
        let _ = key;
        false
    }

    /// Finishes or rolls back, with the catalog in hand, what interrupted
    /// compactions of `org`'s `kind` left, before an erase rewrites it
    /// (the caller holds the kind's lock). The default has none.
    fn settle_compactions(
        &self,
        org: &OrgId,
        kind: DataKind,
        catalog: &dyn crate::control::ControlStore,
    ) -> Result<(), SegmentError> {
        let _ = (org, kind, catalog);
        Ok(())
    }

    /// Finishes what a crash interrupted: rewrites half done, and torn
    /// tails on the segments that were being appended to (`key_of` gives an
    /// organisation's data key, to tell a torn tail from damage). Run once,
    /// before the first append.
    fn recover(&self, key_of: &dyn Fn(&OrgId) -> Option<Arc<crate::keys::OrgKey>>) -> Result<(), SegmentError>;
}

/// What [`SegmentStore::compact`] merges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompactPolicy {
    /// A merged segment grows to about this many bytes.
    pub target_bytes: u64,
    /// Only segments whose names say they were started at least this long
    /// before `now` are merged, so nothing still being uploaded or
    /// committed is touched.
    pub after_ms: i64,
    /// The clock's time now (Unix milliseconds).
    pub now_ms: i64,
    /// Days ending before this (Unix milliseconds) are left alone:
    /// retention is about to delete them.
    pub keep_from_ms: i64,
    /// At most this many merged segments are written in one call, so one
    /// run stays bounded and the kind's lock is not held for long.
    pub max_merges: usize,
}

/// What [`SegmentStore::compact`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Compacted {
    /// Merged segments written (each replacing two or more).
    pub merges: u64,
    /// Segments they replaced.
    pub merged: u64,
    /// Bytes in the merged segments.
    pub bytes: u64,
    /// Interrupted or deferred compactions finished or rolled back.
    pub settled: u64,
}

/// A segment store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SegmentError {
    /// An I/O operation failed.
    #[error("cannot {action} {}: {source}", location.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// To which segment, day or directory.
        location: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// A block's plaintext exceeded the limit (a bug in block splitting).
    #[error("a block of {len} bytes exceeds the block size limit")]
    BlockTooLarge {
        /// The plaintext size.
        len: usize,
    },
    /// A segment is under a data key version the caller's keys lack (a
    /// rotation by another collector not yet seen, or a retired version).
    #[error("no data key version {version} of organisation {org}")]
    KeyVersion {
        /// The organisation.
        org: OrgId,
        /// The version.
        version: u32,
    },
    /// The system random number generator failed (segment ids).
    #[error("the system random number generator failed")]
    Random,
    /// A remote segment store (an object store) failed or refused.
    #[error("cannot {action} {location}: {message}")]
    Remote {
        /// What was being done.
        action: &'static str,
        /// To which segment, day or prefix (never with credentials).
        location: String,
        /// Whether retrying later may succeed (a timeout, a refused or reset
        /// connection, a 5xx or throttling answer, uploads backed up), as
        /// opposed to a refusal that will stay (credentials, a missing bucket).
        transient: bool,
        /// What went wrong.
        message: String,
    },
}

impl SegmentError {
    pub(crate) fn io(action: &'static str, location: &Path, source: io::Error) -> SegmentError {
        SegmentError::Io { action, location: location.to_path_buf(), source }
    }

    /// Whether the same operation may succeed if retried later: a full
    /// disk (retention or an operator frees space), an interrupted or timed
    /// out call, a backend that is briefly unavailable. Permanent failures
    /// (permissions, corruption, bugs) are not.
    pub fn is_transient(&self) -> bool {
        match self {
            SegmentError::Io { source, .. } => is_transient_io(source),
            SegmentError::BlockTooLarge { .. } => false,
            SegmentError::Random => true,
            SegmentError::KeyVersion { .. } => true,
            SegmentError::Remote { transient, .. } => *transient,
        }
    }
}

/// ENOSPC and EDQUOT on Linux and the BSDs.
const ENOSPC: i32 = 28;
const EDQUOT_LINUX: i32 = 122;

fn is_transient_io(e: &io::Error) -> bool {
    use io::ErrorKind as K;
    matches!(
        e.kind(),
        K::Interrupted | K::WouldBlock | K::TimedOut | K::StorageFull | K::QuotaExceeded | K::ConnectionReset
    ) || matches!(e.raw_os_error(), Some(ENOSPC | EDQUOT_LINUX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_is_transient_a_refusal_is_not() {
        let at = Path::new("/data/orgs/acme");
        assert!(SegmentError::io("append to", at, io::Error::from_raw_os_error(ENOSPC)).is_transient());
        assert!(SegmentError::io("append to", at, io::ErrorKind::StorageFull.into()).is_transient());
        assert!(SegmentError::io("sync", at, io::ErrorKind::TimedOut.into()).is_transient());
        assert!(!SegmentError::io("create", at, io::ErrorKind::PermissionDenied.into()).is_transient());
        assert!(!SegmentError::BlockTooLarge { len: 1 << 24 }.is_transient());
        let remote = |transient| SegmentError::Remote {
            action: "upload",
            location: "s3://b/orgs/acme".into(),
            transient,
            message: "503".into(),
        };
        assert!(remote(true).is_transient());
        assert!(!remote(false).is_transient());
        assert_eq!(remote(true).to_string(), "cannot upload s3://b/orgs/acme: 503");
    }

    #[test]
    fn outside_waits_ride_on_the_ticket() {
        #[derive(Debug)]
        struct Upload(u32);
        impl RemoteWait for Upload {
            fn as_any(&self) -> &dyn std::any::Any {
                self
            }
        }
        let mut ticket = SyncTicket::default();
        ticket.attach(Arc::new(Upload(7)));
        let found: Vec<u32> =
            ticket.attached().iter().filter_map(|w| w.as_any().downcast_ref::<Upload>()).map(|u| u.0).collect();
        assert_eq!(found, [7]);
    }
}
