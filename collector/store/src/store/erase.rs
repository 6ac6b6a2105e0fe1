//! Removing stored records before their retention ends: a data subject's
//! records (rewriting the segments that hold them), or a whole organisation
//! (deleting its data and destroying its key).
//!
//! How a segment is replaced, atomically and durably, is the segment
//! store's business ([`super::SegmentStore::rewrite`]; for local files see
//! `local.rs`). While an erase rewrites an organisation's kind, appends of
//! that kind wait and then go to a fresh segment.

use glimpse_common::identity::OrgId;
use glimpse_common::record::DataKind;

use super::block::{encode_blocks, RecordOrigin};
use super::seam::Rewrite;
use super::segment::SegmentPlace;
use super::{read_source, Sink, Store, StoreError, StoredRecord};

/// What an erase does with one stored record (the same decision as
/// subject rules make about a record).
pub use glimpse_common::record::subject::Redaction;

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

impl Store {
    /// Drops the catalog rows of deleted data: an organisation's, or one
    /// of its kinds' days.
    pub fn forget_segments(&self, org: &OrgId, only: Option<(DataKind, i64)>) {
        let control = self.control();
        let mut remove = Vec::new();
        for kind in DataKind::ALL {
            if only.is_some_and(|(k, _)| k != kind) {
                continue;
            }
            match control.segment_rows(org.as_str(), kind.as_str()) {
                Ok(rows) => remove.extend(
                    rows.into_iter().map(|(key, _)| key).filter(|key| only.is_none_or(|(_, day)| key.2 == day)),
                ),
                Err(e) => tracing::error!(%org, %kind, "cannot read the segment catalog: {e}"),
            }
        }
        if let Err(e) = control.replace_segment_rows(&remove, &[]) {
            tracing::error!(%org, "cannot drop deleted segments from the catalog: {e}");
        }
    }

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
        let mut failed = None;
        let mut rows = std::collections::HashMap::new();
        let mut edit = |segment: &super::SegmentInfo, bytes: &dyn super::SegmentBytes| {
            let place = SegmentPlace { org: org.clone(), kind, day: segment.key.day };
            let mut records = Vec::new();
            let mut each = |record: StoredRecord, origin: Option<RecordOrigin>, _: super::ReadMark, _: bool| {
                records.push((record, origin));
                std::ops::ControlFlow::Continue(())
            };
            let mut sink = Sink {
                each: &mut each,
                problems: Vec::new(),
                range: (i64::MIN, i64::MAX),
                tally: None,
                future: (0, 0),
                at: (segment.key.day, 0),
                gate: super::Gate::Open,
                stopped: false,
            };
            read_source(bytes, segment, &place, &key, &mut std::collections::HashSet::new(), &mut sink);
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
                return Rewrite::Keep;
            }
            // Origins go along, so a record's other copy, if any, still
            // reads as a repeat.
            let refs: Vec<_> = records.iter().map(|(record, origin)| (record.borrowed(), *origin)).collect();
            match encode_blocks(&refs) {
                Ok(blocks) => {
                    // Out of the catalog before it changes: an erase cut short
                    // must not leave a row for a segment that is gone.
                    if let Err(e) = self.control().replace_segment_rows(&[super::catalog::row_key(&segment.key)], &[]) {
                        tracing::error!(path = %segment.location.display(), "cannot update the segment catalog: {e}");
                        failed = Some(StoreError::Key(crate::keys::KeyError::Control(e)));
                        return Rewrite::Stop;
                    }
                    let row = super::catalog::Tally::row_of(records.iter().map(|(r, o)| (r, *o)), blocks.len());
                    rows.insert(segment.key.clone(), row);
                    report.records += removed;
                    report.redacted += changed;
                    report.segments_rewritten += 1;
                    report.damaged_segments += u64::from(damaged);
                    Rewrite::Replace(blocks)
                }
                Err(e) => {
                    failed = Some(e);
                    Rewrite::Stop
                }
            }
        };
        // One erase of an organisation's kind at a time across every
        // collector: two would each replace the segments the other replaces.
        let _exclusive = self
            .control()
            .exclusive(&format!("erase:{org}:{}", kind.as_str()))
            .map_err(|e| StoreError::Key(crate::keys::KeyError::Control(e)))?;
        // What an interrupted compaction left is settled first, so the
        // erase rewrites one consistent set of segments.
        self.segments.settle_compactions(org, kind, &*self.control())?;
        let replaced = self.segments.rewrite(org, kind, &key, &mut edit)?;
        // The replacements join the catalog (their old rows went before).
        let put: Vec<_> = replaced
            .iter()
            .filter_map(|(old, new)| Some((super::catalog::row_key(new.as_ref()?), rows.get(old)?.clone())))
            .collect();
        if let Err(e) = self.control().replace_segment_rows(&[], &put) {
            tracing::error!(%org, %kind, "cannot update the segment catalog after an erase: {e}");
        }
        if let Some(e) = failed {
            return Err(e);
        }
        Ok(report)
    }

    /// Deletes all of `org`'s stored data and destroys its key
    /// (crypto-shredding: anything that survives on disk, in backups or in
    /// free filesystem blocks stays unreadable). Returns whether it had a
    /// key and how many segment files were deleted.
    pub fn delete_org(&self, org: &OrgId) -> Result<(bool, u64), StoreError> {
        // The key first: from here on nothing of the organisation's can be
        // read, even if deleting files fails halfway.
        let key_destroyed = self.org_keys().destroy_org_key(org)?;
        let freed = self.segments.delete_org(org)?;
        self.forget_segments(org, None);
        Ok((key_destroyed, freed.segments))
    }
}
