//! The local-files [`SegmentStore`]: segments as files under
//! `<orgs_dir>/<org>/<kind>/<YYYY-MM-DD>/`, every write and read through
//! the [`FileSystem`] seam (see the layout and invariants in the module
//! header of [`crate::store`]).
//!
//! Each (organisation, kind) has one active segment, behind a slot lock.
//! Appenders write under the lock and wait for durability outside it, so
//! those arriving meanwhile share the next fsync (group commit, see
//! `writer.rs`). Retention, erasure and deletion hold the same lock while
//! they remove or replace that kind's files, so no append recreates a
//! directory being removed or writes into a segment being rewritten.
//!
//! # Rewriting a segment (erasure)
//!
//! Segments are append-only, so erasing records means writing a new segment
//! with the records that stay and removing the old one. The new segment gets
//! a fresh random id, so its blocks are sealed under nonces never used
//! before (reusing the old id with different plaintext would break
//! AES-GCM). Steps, each made durable before the next:
//!
//! 1. write `<old name>.<new id>.new` (a name readers skip) and fsync it;
//! 2. unlink the old segment and fsync the directory;
//! 3. rename the staged file to `<old sequence>-<new id>.seg`.
//!
//! A crash before step 2 leaves the old segment and a staged file: the
//! staged file is deleted by [`SegmentStore::recover`], and the erase can be
//! run again. A crash between steps 2 and 3 leaves only the staged file: it
//! is renamed into place by `recover`. Either way no record is lost twice
//! or kept twice.
//!
//! What is deliberately not here: keys, records and retention windows
//! (the caller's), and any path outside `orgs_dir`.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::keys::OrgKey;
use glimpse_common::clock::{format_day, parse_day};
use glimpse_common::identity::OrgId;
use glimpse_common::record::DataKind;

use super::fs::{FileSystem, FsFile};
use super::seam::{
    BlockRun, Freed, PendingSync, Rewrite, SegmentBytes, SegmentError, SegmentInfo, SegmentKey, SegmentStore,
    SyncTicket,
};
use super::segment::{ReadAt, SegmentPlace, SegmentReader};
use super::writer::{create_dir_durable, random_segment_id, segment_file_name, ActiveSegment, SEGMENT_SUFFIX};
use super::{problem, SegmentProblem};

/// Suffix of a segment being rewritten (see the module header).
pub(crate) const STAGED_SUFFIX: &str = ".new";

/// The active segment of one (organisation, kind), if any.
type Slot = Arc<Mutex<Option<ActiveSegment>>>;

/// Locks a slot. A panic while holding it leaves at worst a segment with a
/// torn tail, which readers handle, so poisoning is not fatal.
fn lock_slot(slot: &Slot) -> MutexGuard<'_, Option<ActiveSegment>> {
    slot.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Segments as files in a directory tree. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct LocalSegments {
    fs: Arc<dyn FileSystem>,
    orgs_dir: PathBuf,
    writers: Mutex<HashMap<(OrgId, DataKind), Slot>>,
}

impl LocalSegments {
    /// Segments under `orgs_dir` (created, durably, if missing), read and
    /// written through `fs`.
    pub fn open(fs: Arc<dyn FileSystem>, orgs_dir: &Path) -> Result<LocalSegments, SegmentError> {
        create_dir_durable(&*fs, orgs_dir)?;
        Ok(LocalSegments { fs, orgs_dir: orgs_dir.to_path_buf(), writers: Mutex::new(HashMap::new()) })
    }

    /// Segments under `orgs_dir` for reading only (the offline tools):
    /// nothing is created, and [`SegmentStore::recover`] must not be run.
    pub fn open_read_only(fs: Arc<dyn FileSystem>, orgs_dir: &Path) -> LocalSegments {
        LocalSegments { fs, orgs_dir: orgs_dir.to_path_buf(), writers: Mutex::new(HashMap::new()) }
    }

    /// The directory segments live under.
    pub fn orgs_dir(&self) -> &Path {
        &self.orgs_dir
    }

    pub(crate) fn kind_dir(&self, org: &OrgId, kind: DataKind) -> PathBuf {
        self.orgs_dir.join(org.as_str()).join(kind.as_str())
    }

    fn day_dir(&self, org: &OrgId, kind: DataKind, day: i64) -> PathBuf {
        self.kind_dir(org, kind).join(format_day(day))
    }

    /// The active-segment slot of (org, kind).
    fn slot(&self, org: &OrgId, kind: DataKind) -> Slot {
        // Only ever gains entries, so a poisoned map is still consistent.
        let mut writers = self.writers.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(writers.entry((org.clone(), kind)).or_default())
    }

    /// Writes one run under its slot lock; returns what to wait for.
    fn write_run(&self, index: usize, run: &BlockRun<'_>, ticket: &mut SyncTicket) -> Result<(), SegmentError> {
        let slot = self.slot(run.org, run.kind);
        let mut active = lock_slot(&slot);
        let result = self.write_blocks(&mut active, index, run, &mut ticket.placed);
        match result {
            Ok((bytes, point, end)) => {
                ticket.blocks += run.plaintexts.len();
                ticket.bytes += bytes;
                ticket.pending.push(PendingSync { org: run.org.clone(), kind: run.kind, point, end });
                Ok(())
            }
            Err(e) => {
                abandon(&mut active);
                Err(e)
            }
        }
    }

    fn write_blocks(
        &self,
        active: &mut Option<ActiveSegment>,
        index: usize,
        run: &BlockRun<'_>,
        placed: &mut Vec<super::seam::Placed>,
    ) -> Result<(u64, Arc<super::writer::SyncPoint>, u64), SegmentError> {
        let mut bytes = 0;
        for (i, plaintext) in run.plaintexts.iter().enumerate() {
            if !active.as_ref().is_some_and(|seg| seg.accepts(run.day, run.key.version())) {
                if let Some(mut full) = active.take() {
                    // Earlier blocks of this batch may sit in it unsynced.
                    full.sync()?;
                }
                let place = SegmentPlace { org: run.org.clone(), kind: run.kind, day: run.day };
                let dir = self.day_dir(run.org, run.kind, run.day);
                *active = Some(ActiveSegment::create(&*self.fs, &dir, place, run.key.version())?);
            }
            if let Some(seg) = active.as_mut() {
                bytes += seg.append_block(run.key, plaintext)?;
                let name = seg.path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
                match placed.last_mut() {
                    Some(last) if last.run == index && last.segment.name == name => {
                        last.blocks.end = i + 1;
                        last.end = seg.len();
                    }
                    _ => placed.push(super::seam::Placed {
                        run: index,
                        blocks: i..i + 1,
                        segment: SegmentKey {
                            org: run.org.clone(),
                            kind: run.kind,
                            day: run.day,
                            name: name.to_owned(),
                        },
                        end: seg.len(),
                    }),
                }
            }
        }
        let Some(seg) = active.as_ref() else {
            // Only reachable with no blocks, which callers never pass.
            return Err(SegmentError::io(
                "append to",
                &self.day_dir(run.org, run.kind, run.day),
                io::Error::other("no segment was opened"),
            ));
        };
        Ok((bytes, seg.sync_point(), seg.len()))
    }

    /// For the segment being written, how much of it is synced; readers
    /// must not mistake an in-progress block for a torn tail.
    fn committed_len(&self, org: &OrgId, kind: DataKind, path: &Path) -> Option<u64> {
        let slot = self.slot(org, kind);
        let active = lock_slot(&slot);
        active.as_ref().filter(|seg| seg.path == path).map(ActiveSegment::committed_len)
    }

    /// Day directories under `kind_dir`, oldest first; anything else is
    /// reported and ignored. A missing directory means no data.
    fn list_days(&self, kind_dir: &Path, problems: &mut Vec<SegmentProblem>) -> Result<Vec<i64>, SegmentError> {
        let entries = match self.fs.list(kind_dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(SegmentError::io("list", kind_dir, source)),
        };
        let mut days = Vec::new();
        for entry in entries {
            match parse_day(&entry.name) {
                Some(day) if entry.is_dir => days.push(day),
                _ => problem(problems, kind_dir.join(&entry.name), 0, "not a day directory; ignored".into()),
            }
        }
        days.sort();
        Ok(days)
    }

    /// Segment files in a day directory, in creation order.
    fn list_segments(
        &self,
        org: &OrgId,
        kind: DataKind,
        day: i64,
        problems: &mut Vec<SegmentProblem>,
    ) -> Result<Vec<SegmentInfo>, SegmentError> {
        let day_dir = self.day_dir(org, kind, day);
        let entries = match self.fs.list(&day_dir) {
            Ok(entries) => entries,
            // Swept between listing the days and now.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(SegmentError::io("list", &day_dir, source)),
        };
        let mut segments = Vec::new();
        for entry in entries {
            let location = day_dir.join(&entry.name);
            if entry.name.ends_with(SEGMENT_SUFFIX) && entry.is_file {
                let key = SegmentKey { org: org.clone(), kind, day, name: entry.name };
                segments.push(SegmentInfo { key, location, bytes: entry.len });
            } else if entry.name.ends_with(STAGED_SUFFIX) {
                // A segment being rewritten by an erase: not served until done.
            } else {
                problem(problems, location, 0, "not a segment file; ignored".into());
            }
        }
        segments.sort_by(|a, b| a.key.name.cmp(&b.key.name));
        Ok(segments)
    }

    /// Directories directly under `dir`; none if it is missing.
    fn subdirs(&self, dir: &Path) -> Result<Vec<PathBuf>, SegmentError> {
        match self.fs.list(dir) {
            Ok(entries) => Ok(entries.into_iter().filter(|e| e.is_dir).map(|e| dir.join(e.name)).collect()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(SegmentError::io("list", dir, e)),
        }
    }

    /// Finishes or rolls back rewrites a crash interrupted (see the module
    /// header). Returns how many staged files were found.
    fn recover_staged(&self) -> Result<usize, SegmentError> {
        let fs = &*self.fs;
        let mut found = 0;
        for org in self.subdirs(&self.orgs_dir)? {
            for kind in self.subdirs(&org)? {
                for day in self.subdirs(&kind)? {
                    let entries = fs.list(&day).map_err(|e| SegmentError::io("list", &day, e))?;
                    for entry in entries {
                        let Some(stem) = entry.name.strip_suffix(STAGED_SUFFIX) else { continue };
                        found += 1;
                        let staged = day.join(&entry.name);
                        let parsed = stem
                            .rsplit_once('.')
                            .and_then(|(old, id)| Some((old, u64::from_str_radix(id, 16).ok()?, sequence_of(old)?)));
                        let Some((old_name, id, seq)) = parsed else {
                            tracing::warn!(path = %staged.display(), "unrecognised staged segment left alone");
                            continue;
                        };
                        if fs.exists(&day.join(old_name)) {
                            tracing::warn!(path = %staged.display(), "interrupted erase rolled back; run it again");
                            fs.remove_file(&staged)
                                .map_err(|e| SegmentError::io("delete staged segment", &staged, e))?;
                        } else {
                            let final_path = day.join(segment_file_name(seq, id));
                            tracing::warn!(path = %final_path.display(), "interrupted erase completed");
                            fs.rename(&staged, &final_path)
                                .map_err(|e| SegmentError::io("rename staged segment", &staged, e))?;
                        }
                        fs.sync_dir(&day).map_err(|e| SegmentError::io("sync directory of", &day, e))?;
                    }
                }
            }
        }
        Ok(found)
    }

    /// Truncates the torn tail a crash can leave on the segment each
    /// (organisation, kind) was appending to: the newest segment of its
    /// newest day with one. Older segments were synced before the next was
    /// started, and a failed append syncs or cuts what it wrote.
    /// Only a tail that is less than a whole frame after blocks that all
    /// authenticate is cut; other damage is left for readers to report.
    fn recover_torn_tails(&self, key_of: &dyn Fn(&OrgId) -> Option<Arc<crate::keys::OrgKey>>) {
        let Ok(orgs) = self.orgs() else { return };
        for org in orgs {
            let Some(key) = key_of(&org) else { continue };
            for kind in DataKind::ALL {
                let mut ignored = Vec::new();
                let Ok(days) = self.list_days(&self.kind_dir(&org, kind), &mut ignored) else { continue };
                // The newest day that has a segment: a day directory can be
                // left empty by a segment whose creation failed (a full disk).
                let newest = days.iter().rev().find_map(|day| {
                    let segments = self.list_segments(&org, kind, *day, &mut ignored).ok()?;
                    Some((*day, segments.last()?.clone()))
                });
                let Some((day, segment)) = newest else { continue };
                let place = SegmentPlace { org: org.clone(), kind, day };
                if let Err(e) = self.truncate_torn_tail(&segment.location, &place, &key) {
                    tracing::warn!(path = %segment.location.display(), "cannot check the segment for a torn tail: {e}");
                }
            }
        }
    }

    fn truncate_torn_tail(&self, path: &Path, place: &SegmentPlace, key: &OrgKey) -> io::Result<()> {
        let file = self.fs.open(path, true)?;
        let len = file.size()?;
        let source = FileBytes { file, len };
        let torn = match SegmentReader::open(&source, place, key) {
            Ok(mut reader) => reader.torn_tail(),
            Err(_) => None,
        };
        if let Some(offset) = torn {
            source.file.truncate(offset)?;
            source.file.sync()?;
            tracing::warn!(path = %path.display(), offset, bytes = len - offset, "torn segment tail from an interrupted write truncated");
        }
        Ok(())
    }

    /// Replaces the segment at `old` with one holding `blocks` (see the
    /// module header for the steps), or just deletes it when there are none.
    fn replace_segment(
        &self,
        old: &Path,
        place: &SegmentPlace,
        key: &OrgKey,
        blocks: &[Vec<u8>],
    ) -> Result<Option<String>, SegmentError> {
        let fs = &*self.fs;
        let io = |action: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |e| SegmentError::io(action, &path, e)
        };
        let dir = old.parent().unwrap_or(Path::new("."));
        if blocks.is_empty() {
            fs.remove_file(old).map_err(io("delete segment", old))?;
            fs.sync_dir(dir).map_err(io("sync directory of", old))?;
            return Ok(None);
        }
        let segment_id = random_segment_id()?;
        let old_name = old.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
        let staged = dir.join(format!("{old_name}.{segment_id:016x}{STAGED_SUFFIX}"));
        let mut segment = ActiveSegment::create_at(fs, staged.clone(), place.clone(), segment_id, key.version())?;
        for block in blocks {
            segment.append_block(key, block)?;
        }
        segment.sync()?;
        drop(segment);
        fs.remove_file(old).map_err(io("delete segment", old))?;
        fs.sync_dir(dir).map_err(io("sync directory of", old))?;
        let seq = sequence_of(&old_name).unwrap_or(0);
        let final_name = segment_file_name(seq, segment_id);
        let final_path = dir.join(&final_name);
        fs.rename(&staged, &final_path).map_err(io("rename staged segment", &staged))?;
        fs.sync_dir(dir).map_err(io("sync directory of", &final_path))?;
        Ok(Some(final_name))
    }

    /// All of a segment's bytes (no append is running: the caller holds the
    /// slot). `None` if it cannot be opened: it is then left as it is.
    fn open_whole(&self, path: &Path) -> Option<Box<dyn SegmentBytes>> {
        let opened = self.fs.open(path, false).and_then(|file| Ok((file.size()?, file)));
        match opened {
            Ok((len, file)) => Some(Box::new(FileBytes { file, len })),
            Err(e) => {
                if e.kind() != io::ErrorKind::NotFound {
                    tracing::warn!(path = %path.display(), error = %e, "cannot open segment; left as it is");
                }
                None
            }
        }
    }

    /// Files and bytes directly in `dir`.
    fn dir_usage(&self, dir: &Path) -> Freed {
        let Ok(entries) = self.fs.list(dir) else {
            return Freed::default();
        };
        entries
            .iter()
            .filter(|e| e.is_file)
            .fold(Freed::default(), |f, e| Freed { segments: f.segments + 1, bytes: f.bytes + e.len })
    }

    fn remove_if_empty(&self, dir: &Path) -> Result<bool, SegmentError> {
        let empty = self.fs.list(dir).is_ok_and(|entries| entries.is_empty());
        if !empty {
            return Ok(false);
        }
        match self.fs.remove_dir(dir) {
            Ok(()) => {
                tracing::debug!(path = %dir.display(), "removed empty directory");
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(SegmentError::io("delete", dir, e)),
        }
    }
}

/// After a failed write or fsync: cuts the segment back to what was
/// synced and abandons it, so later batches start a clean segment.
fn abandon(active: &mut Option<ActiveSegment>) {
    if let Some(segment) = active.as_mut() {
        if let Err(e) = segment.roll_back() {
            tracing::error!("{e}; readers will report the partial block it ends with");
        }
    }
    *active = None;
}

/// The sequence number of a segment file name.
fn sequence_of(name: &str) -> Option<u64> {
    name.strip_suffix(SEGMENT_SUFFIX)?.split_once('-')?.0.parse().ok()
}

/// A file read up to a fixed length (the committed length of a segment
/// that is still being written, or the length when it was opened).
#[derive(Debug)]
struct FileBytes {
    file: Arc<dyn FsFile>,
    len: u64,
}

impl ReadAt for FileBytes {
    fn size(&self) -> u64 {
        self.len
    }

    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        if pos.saturating_add(buf.len() as u64) > self.len {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.file.read_exact_at(buf, pos)
    }
}

impl SegmentBytes for FileBytes {
    fn size(&self) -> u64 {
        self.len
    }

    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        ReadAt::read_exact_at(self, buf, pos)
    }
}

impl SegmentStore for LocalSegments {
    fn describe(&self) -> String {
        self.orgs_dir.display().to_string()
    }

    fn append(&self, runs: &[BlockRun<'_>]) -> Result<SyncTicket, SegmentError> {
        let mut ticket = SyncTicket::default();
        for (index, run) in runs.iter().enumerate().filter(|(_, run)| !run.plaintexts.is_empty()) {
            if let Err(e) = self.write_run(index, run, &mut ticket) {
                // The runs written before this one must not stay unsynced in
                // their segments: a clean restart would leave them there,
                // unsynced and no longer the newest segment, for a later
                // crash to tear where recovery does not look. Syncing them
                // (or, failing that, cutting them off) keeps every torn tail
                // at the end of the newest segment.
                let _ = self.sync(&ticket);
                return Err(e);
            }
        }
        Ok(ticket)
    }

    fn sync(&self, ticket: &SyncTicket) -> Result<(), SegmentError> {
        for pending in &ticket.pending {
            if let Err(e) = pending.point.sync_through(pending.end) {
                let slot = self.slot(&pending.org, pending.kind);
                let mut active = lock_slot(&slot);
                if active.as_ref().is_some_and(|seg| Arc::ptr_eq(&seg.sync_point(), &pending.point)) {
                    abandon(&mut active);
                }
                return Err(e);
            }
        }
        Ok(())
    }

    fn location(&self, key: &SegmentKey) -> PathBuf {
        self.day_dir(&key.org, key.kind, key.day).join(&key.name)
    }

    fn orgs(&self) -> Result<Vec<OrgId>, SegmentError> {
        let entries = self.fs.list(&self.orgs_dir).map_err(|e| SegmentError::io("list", &self.orgs_dir, e))?;
        let mut orgs: Vec<OrgId> =
            entries.into_iter().filter(|e| e.is_dir).filter_map(|e| OrgId::new(&e.name).ok()).collect();
        orgs.sort();
        Ok(orgs)
    }

    fn days(&self, org: &OrgId, kind: DataKind, problems: &mut Vec<SegmentProblem>) -> Result<Vec<i64>, SegmentError> {
        self.list_days(&self.kind_dir(org, kind), problems)
    }

    fn segments(
        &self,
        org: &OrgId,
        kind: DataKind,
        day: i64,
        problems: &mut Vec<SegmentProblem>,
    ) -> Result<Vec<SegmentInfo>, SegmentError> {
        self.list_segments(org, kind, day, problems)
    }

    fn open(&self, segment: &SegmentInfo) -> Result<Option<Box<dyn SegmentBytes>>, SegmentError> {
        let path = &segment.location;
        let limit = self.committed_len(&segment.key.org, segment.key.kind, path);
        let file = match self.fs.open(path, false) {
            Ok(file) => file,
            // Deleted by the sweeper since it was listed: expired anyway.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(SegmentError::io("open", path, e)),
        };
        let len = file.size().map_err(|e| SegmentError::io("stat", path, e))?;
        Ok(Some(Box::new(FileBytes { len: limit.map_or(len, |limit| limit.min(len)), file })))
    }

    fn rewrite(
        &self,
        org: &OrgId,
        kind: DataKind,
        key: &OrgKey,
        edit: &mut dyn FnMut(&SegmentInfo, &dyn SegmentBytes) -> Rewrite,
    ) -> Result<Vec<(SegmentKey, Option<SegmentKey>)>, SegmentError> {
        let slot = self.slot(org, kind);
        let mut active = lock_slot(&slot);
        if let Some(mut open) = active.take() {
            // Closed for good: appends resume in a fresh segment, and this
            // one can be rewritten like any other.
            open.sync()?;
        }
        let mut rewritten = Vec::new();
        let mut ignored = Vec::new();
        for day in self.list_days(&self.kind_dir(org, kind), &mut ignored)? {
            let place = SegmentPlace { org: org.clone(), kind, day };
            for segment in self.list_segments(org, kind, day, &mut ignored)? {
                let Some(bytes) = self.open_whole(&segment.location) else { continue };
                match edit(&segment, &*bytes) {
                    Rewrite::Keep => {}
                    Rewrite::Stop => return Ok(rewritten),
                    Rewrite::Replace(blocks) => {
                        drop(bytes);
                        let new = self.replace_segment(&segment.location, &place, key, &blocks)?;
                        let new = new.map(|name| SegmentKey { name, ..segment.key.clone() });
                        rewritten.push((segment.key.clone(), new));
                    }
                }
            }
        }
        Ok(rewritten)
    }

    fn delete_day(&self, org: &OrgId, kind: DataKind, day: i64) -> Result<Freed, SegmentError> {
        // Holding the slot keeps the writer from creating a day directory
        // being removed, and lets us drop an active segment of that day.
        let slot = self.slot(org, kind);
        let mut active = lock_slot(&slot);
        if active.as_ref().is_some_and(|seg| seg.place.day == day) {
            *active = None;
        }
        let dir = self.day_dir(org, kind, day);
        let freed = self.dir_usage(&dir);
        match self.fs.remove_dir_all(&dir) {
            // Synced, so a crash cannot bring the day back.
            Ok(()) => {
                let kind_dir = self.kind_dir(org, kind);
                self.fs.sync_dir(&kind_dir).map_err(|e| SegmentError::io("sync directory of", &dir, e))?;
                Ok(freed)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Freed::default()),
            Err(e) => Err(SegmentError::io("delete", &dir, e)),
        }
    }

    fn delete_org(&self, org: &OrgId) -> Result<Freed, SegmentError> {
        // Hold every writer slot so no append recreates directories midway.
        let slots: Vec<_> = DataKind::ALL.into_iter().map(|kind| self.slot(org, kind)).collect();
        let mut guards: Vec<_> = slots.iter().map(|slot| lock_slot(slot)).collect();
        for guard in &mut guards {
            guard.take();
        }
        let mut freed = Freed::default();
        let mut ignored = Vec::new();
        for kind in DataKind::ALL {
            for day in self.list_days(&self.kind_dir(org, kind), &mut ignored)? {
                let segments = self.list_segments(org, kind, day, &mut ignored)?;
                freed.segments += segments.len() as u64;
                freed.bytes += segments.iter().map(|s| s.bytes).sum::<u64>();
            }
        }
        let org_dir = self.orgs_dir.join(org.as_str());
        match self.fs.remove_dir_all(&org_dir) {
            Ok(()) => {
                self.fs.sync_dir(&self.orgs_dir).map_err(|e| SegmentError::io("sync directory of", &org_dir, e))?
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(SegmentError::io("delete", &org_dir, e)),
        }
        Ok(freed)
    }

    fn tidy(&self, org: &OrgId) -> (u64, Vec<SegmentError>) {
        let mut removed = 0;
        let mut failures = Vec::new();
        let mut note = |result: Result<bool, SegmentError>| match result {
            Ok(gone) => removed += u64::from(gone),
            Err(e) => failures.push(e),
        };
        for kind in DataKind::ALL {
            let slot = self.slot(org, kind);
            let _active = lock_slot(&slot);
            note(self.remove_if_empty(&self.kind_dir(org, kind)));
        }
        // Every kind's slot, in a fixed order, so no writer is creating a
        // directory inside the organisation while we remove it.
        let slots: Vec<_> = DataKind::ALL.iter().map(|k| self.slot(org, *k)).collect();
        let _guards: Vec<_> = slots.iter().map(lock_slot).collect();
        note(self.remove_if_empty(&self.orgs_dir.join(org.as_str())));
        (removed, failures)
    }

    fn recover(&self, key_of: &dyn Fn(&OrgId) -> Option<Arc<crate::keys::OrgKey>>) -> Result<(), SegmentError> {
        self.recover_staged()?;
        self.recover_torn_tails(key_of);
        Ok(())
    }
}
