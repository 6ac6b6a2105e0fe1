//! Removing stored records before their retention ends: a data subject's
//! records (rewriting the segments that hold them), or a whole organisation
//! (deleting its data and destroying its key).
//!
//! # Rewriting a segment
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
//! staged file is deleted when the store next opens, and the erase can be
//! run again. A crash between steps 2 and 3 leaves only the staged file: it
//! is renamed into place when the store next opens. Either way no record is
//! lost twice or kept twice. While an erase rewrites an organisation's kind,
//! it holds that kind's writer slot, so appends wait and the segment being
//! appended to is closed first (new records go to a fresh segment).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use glimpse_common::identity::OrgId;
use glimpse_common::record::DataKind;

use super::block::{encode_blocks, RecordOrigin};
use super::segment::SegmentPlace;
use super::writer::{random_segment_id, segment_file_name, sync_dir, ActiveSegment, SEGMENT_SUFFIX};
use super::{list_days, list_segments, lock_slot, read_segment, Sink, Store, StoreError, StoredRecord};

/// Suffix of a segment being rewritten (see the module header).
pub(crate) const STAGED_SUFFIX: &str = ".new";

/// What an erase does with one stored record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redaction {
    /// Nothing in it is to go: it stays as it was.
    Keep,
    /// Part of it was removed in place; the rest stays.
    Changed,
    /// All of it goes.
    Remove,
}

/// What an erase did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EraseReport {
    /// Records removed.
    pub records: u64,
    /// Records kept with part of them removed (a report about many clients
    /// that lost one of them).
    pub redacted: u64,
    /// Segment files rewritten or, when nothing stayed, deleted.
    pub segments_rewritten: u64,
    /// Segments that could not be read completely (damaged blocks): their
    /// readable records were kept or erased like any other, their damaged
    /// blocks are gone with the old file.
    pub damaged_segments: u64,
}

fn io_error<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io { action, path: path.to_path_buf(), source }
}

impl Store {
    /// Removes every record of `org`'s `kind` that `erase` selects,
    /// whatever its age, rewriting the segments that held any.
    pub fn erase_where(
        &self,
        org: &OrgId,
        kind: DataKind,
        erase: &dyn Fn(&StoredRecord) -> bool,
    ) -> Result<EraseReport, StoreError> {
        self.redact_where(org, kind, &|record| if erase(record) { Redaction::Remove } else { Redaction::Keep })
    }

    /// Removes every record of `org`'s `kind` that `redact` says goes, and
    /// keeps the rest as `redact` left them, whatever their age, rewriting
    /// the segments that held any removed or changed record.
    pub fn redact_where(
        &self,
        org: &OrgId,
        kind: DataKind,
        redact: &dyn Fn(&mut StoredRecord) -> Redaction,
    ) -> Result<EraseReport, StoreError> {
        let mut report = EraseReport::default();
        let Some(key) = self.org_keys().get(org)? else {
            return Ok(report);
        };
        let slot = self.slot(org, kind);
        let mut active = lock_slot(&slot);
        if let Some(mut open) = active.take() {
            // Closed for good: appends resume in a fresh segment, and this
            // one can be rewritten like any other.
            open.sync()?;
        }
        let mut ignored = Vec::new();
        for (day, dir) in list_days(&self.kind_dir(org, kind), &mut ignored)? {
            let place = SegmentPlace { org: org.clone(), kind, day };
            for path in list_segments(&dir, &mut ignored)? {
                let mut records = Vec::new();
                let mut each = |record: StoredRecord, origin: Option<RecordOrigin>| records.push((record, origin));
                let mut sink = Sink { each: &mut each, problems: Vec::new(), range: (i64::MIN, i64::MAX) };
                read_segment(&path, None, &place, key.secret(), &mut std::collections::HashSet::new(), &mut sink);
                let damaged = !sink.problems.is_empty();
                let (mut removed, mut changed) = (0u64, 0u64);
                records.retain_mut(|(record, _)| match redact(record) {
                    Redaction::Keep => true,
                    Redaction::Changed => {
                        changed += 1;
                        true
                    }
                    Redaction::Remove => {
                        removed += 1;
                        false
                    }
                });
                if removed == 0 && changed == 0 {
                    continue;
                }
                rewrite_segment(&path, &place, key.secret(), &records)?;
                report.records += removed;
                report.redacted += changed;
                report.segments_rewritten += 1;
                report.damaged_segments += u64::from(damaged);
            }
        }
        Ok(report)
    }

    /// Deletes all of `org`'s stored data and destroys its key
    /// (crypto-shredding: anything that survives on disk, in backups or in
    /// free filesystem blocks stays unreadable). Returns whether it had a
    /// key and how many segment files were deleted.
    pub fn delete_org(&self, org: &OrgId) -> Result<(bool, u64), StoreError> {
        // Hold every writer slot so no append recreates directories midway.
        let slots: Vec<_> = DataKind::ALL.into_iter().map(|kind| self.slot(org, kind)).collect();
        let mut guards: Vec<_> = slots.iter().map(|slot| lock_slot(slot)).collect();
        for guard in &mut guards {
            guard.take();
        }
        // The key first: from here on nothing of the organisation's can be
        // read, even if deleting files fails halfway.
        let key_destroyed = self.org_keys().destroy_org_key(org)?;
        let mut deleted = 0u64;
        let mut ignored = Vec::new();
        for kind in DataKind::ALL {
            for (_, dir) in list_days(&self.kind_dir(org, kind), &mut ignored)? {
                deleted += list_segments(&dir, &mut ignored)?.len() as u64;
            }
        }
        let org_dir = self.orgs_dir().join(org.as_str());
        match fs::remove_dir_all(&org_dir) {
            Ok(()) => sync_dir(self.orgs_dir()).map_err(io_error("sync directory of", &org_dir))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error("delete", &org_dir)(e)),
        }
        Ok((key_destroyed, deleted))
    }
}

/// Replaces the segment at `old` with one holding `keep` (see the module
/// header for the steps), or just deletes it when `keep` is empty.
fn rewrite_segment(
    old: &Path,
    place: &SegmentPlace,
    key: &glimpse_common::secret::SecretKey,
    keep: &[(StoredRecord, Option<RecordOrigin>)],
) -> Result<(), StoreError> {
    let dir = old.parent().unwrap_or(Path::new("."));
    if keep.is_empty() {
        fs::remove_file(old).map_err(io_error("delete segment", old))?;
        return sync_dir(dir).map_err(io_error("sync directory of", old));
    }
    let segment_id = random_segment_id()?;
    let old_name = old.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
    let staged = dir.join(format!("{old_name}.{segment_id:016x}{STAGED_SUFFIX}"));
    let mut segment = ActiveSegment::create_at(staged.clone(), place.clone(), segment_id)?;
    // Origins go along, so a record's other copy, if any, still reads as a
    // repeat.
    let refs: Vec<_> = keep.iter().map(|(record, origin)| (record.borrowed(), *origin)).collect();
    for block in encode_blocks(&refs)? {
        segment.append_block(key, &block)?;
    }
    segment.sync()?;
    drop(segment);
    fs::remove_file(old).map_err(io_error("delete segment", old))?;
    sync_dir(dir).map_err(io_error("sync directory of", old))?;
    let seq = sequence_of(&old_name).unwrap_or(0);
    let final_path = dir.join(segment_file_name(seq, segment_id));
    fs::rename(&staged, &final_path).map_err(io_error("rename staged segment", &staged))?;
    sync_dir(dir).map_err(io_error("sync directory of", &final_path))
}

/// The sequence number of a segment file name.
fn sequence_of(name: &str) -> Option<u64> {
    name.strip_suffix(SEGMENT_SUFFIX)?.split_once('-')?.0.parse().ok()
}

/// Finishes or rolls back rewrites a crash interrupted, anywhere under
/// `orgs_dir` (see the module header). Returns how many staged files were
/// found.
pub(crate) fn recover_staged(orgs_dir: &Path) -> Result<usize, StoreError> {
    let mut found = 0;
    for org in read_dirs(orgs_dir)? {
        for kind in read_dirs(&org)? {
            for day in read_dirs(&kind)? {
                let entries = fs::read_dir(&day).map_err(io_error("list", &day))?;
                for entry in entries.flatten() {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    let Some(stem) = name.strip_suffix(STAGED_SUFFIX) else { continue };
                    found += 1;
                    let staged = entry.path();
                    let parsed = stem
                        .rsplit_once('.')
                        .and_then(|(old, id)| Some((old, u64::from_str_radix(id, 16).ok()?, sequence_of(old)?)));
                    let Some((old_name, id, seq)) = parsed else {
                        tracing::warn!(path = %staged.display(), "unrecognised staged segment left alone");
                        continue;
                    };
                    if day.join(old_name).exists() {
                        tracing::warn!(path = %staged.display(), "interrupted erase rolled back; run it again");
                        fs::remove_file(&staged).map_err(io_error("delete staged segment", &staged))?;
                    } else {
                        let final_path = day.join(segment_file_name(seq, id));
                        tracing::warn!(path = %final_path.display(), "interrupted erase completed");
                        fs::rename(&staged, &final_path).map_err(io_error("rename staged segment", &staged))?;
                    }
                    sync_dir(&day).map_err(io_error("sync directory of", &day))?;
                }
            }
        }
    }
    Ok(found)
}

fn read_dirs(dir: &Path) -> Result<Vec<PathBuf>, StoreError> {
    match fs::read_dir(dir) {
        Ok(entries) => {
            Ok(entries.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())).map(|e| e.path()).collect())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(io_error("list", dir)(e)),
    }
}
