//! The segment catalog: what acknowledged batches put in each segment
//! (records, blocks, where the last block ends, batch sequence ranges per
//! stream), kept in the control store in the same commit as the streams'
//! stored sequences, so every acknowledged record's segment is catalogued.
//!
//! Reads compare what they find with it: a catalogued segment that is
//! gone, or one that ends before its catalogued blocks (a tail cut at a
//! block boundary looks like a shorter, valid segment), is reported as a
//! [`SegmentProblem`] saying what is missing. Finding *more* than the
//! catalog says is normal (a batch whose sequence commit failed, stored
//! again by the retry; a copy of the catalog that lags) and is not
//! reported. A torn tail after every catalogued block holds nothing that
//! was acknowledged, so a read-only reader, which cannot cut it, does not
//! count it as damage.
//!
//! What is deliberately not here: per-block rows (a segment row is rewritten
//! on each commit; naming at most [`MAX_STREAMS_PER_ROW`] streams keeps it
//! small).

use std::collections::HashMap;
use std::path::PathBuf;

use glimpse_common::identity::{DeviceIdentity, OrgId};
use glimpse_common::record::DataKind;
use serde::Serialize;

use crate::control::seam::{SegmentRow, SegmentRowKey, StreamRange, MAX_STREAMS_PER_ROW};

use super::block::{block_record_count, RecordOrigin};
use super::seam::{SegmentKey, SyncTicket};
use super::{problem, SegmentProblem, Store, StoreError, StoredRecord};

/// The catalog key of a segment.
pub(crate) fn row_key(key: &SegmentKey) -> SegmentRowKey {
    (key.org.as_str().to_owned(), key.kind.as_str().to_owned(), key.day, key.name.clone())
}

/// What one append adds to the catalog: a row per segment it wrote to.
pub(crate) fn notes(
    ticket: &SyncTicket,
    kinds_and_blocks: &[(DataKind, Vec<Vec<u8>>)],
    identity: &DeviceIdentity,
    (stream, seq): (u64, u64),
) -> Vec<(SegmentRowKey, SegmentRow)> {
    ticket
        .placed
        .iter()
        .filter_map(|placed| {
            let (_, blocks) = kinds_and_blocks.get(placed.run)?;
            let blocks = blocks.get(placed.blocks.clone())?;
            let records: u64 = blocks.iter().map(|b| block_record_count(b)).sum();
            let row = SegmentRow {
                records,
                blocks: blocks.len() as u64,
                bytes: placed.end,
                streams: vec![StreamRange {
                    device: identity.device.as_str().to_owned(),
                    stream,
                    first: seq,
                    last: seq,
                    records,
                }],
                more_streams: false,
            };
            Some((row_key(&placed.segment), row))
        })
        .collect()
}

/// What a read found in one segment, whatever the time range asked.
#[derive(Debug, Default, Clone)]
pub(crate) struct Tally {
    pub(crate) blocks: u64,
    pub(crate) records: u64,
    /// (device, stream) → the highest batch sequence found.
    pub(crate) last_seq: HashMap<(String, u64), u64>,
    /// The segment was found (listed) at all.
    pub(crate) listed: bool,
}

impl Tally {
    pub(crate) fn count(&mut self, record: &StoredRecord, origin: Option<RecordOrigin>) {
        self.records += 1;
        if let Some(origin) = origin {
            let seq = self.last_seq.entry((record.device.as_str().to_owned(), origin.stream_id)).or_default();
            *seq = (*seq).max(origin.stream_seq);
        }
    }

    /// A row for a segment rewritten with these records.
    pub(crate) fn row_of<'a>(
        records: impl IntoIterator<Item = (&'a StoredRecord, Option<RecordOrigin>)>,
        blocks: usize,
    ) -> SegmentRow {
        let mut row = SegmentRow { blocks: blocks as u64, ..SegmentRow::default() };
        for (record, origin) in records {
            let mut one = SegmentRow { records: 1, ..SegmentRow::default() };
            if let Some(origin) = origin {
                one.streams.push(StreamRange {
                    device: record.device.as_str().to_owned(),
                    stream: origin.stream_id,
                    first: origin.stream_seq,
                    last: origin.stream_seq,
                    records: 1,
                });
            }
            row.merge(&one);
        }
        row
    }
}

/// What `verify` found for one organisation and kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Segments checked.
    pub segments: u64,
    /// Records read.
    pub records: u64,
    /// Catalogued segments that are gone or end early, and damaged regions.
    pub problems: Vec<SegmentProblem>,
}

impl Store {
    /// Where a catalogued segment should be (for messages), as the segment
    /// store names it, so that it matches the problems its reads report.
    fn catalog_path(&self, org: &OrgId, kind: DataKind, day: i64, name: &str) -> PathBuf {
        self.segments.location(&SegmentKey { org: org.clone(), kind, day, name: name.to_owned() })
    }

    /// Compares what a read found (`tallies`, by (day, name)) with the
    /// catalog for the days it read, adding a problem for every loss, and
    /// drops from `problems` the torn tails that lie after every
    /// catalogued block.
    ///
    /// `rows` must be read before the segments are: every block a row
    /// counts was durable before the row was committed, so a read that
    /// starts later finds it, and appends meanwhile only add.
    pub(crate) fn check_catalog(
        &self,
        org: &OrgId,
        kind: DataKind,
        rows: Vec<(SegmentRowKey, SegmentRow)>,
        read_segment: &dyn Fn(i64, &str) -> bool,
        tallies: &HashMap<(i64, String), Tally>,
        problems: &mut Vec<SegmentProblem>,
    ) {
        let mut catalogued = HashMap::new();
        for ((_, _, day, name), row) in rows {
            if !read_segment(day, &name) {
                continue;
            }
            let path = self.catalog_path(org, kind, day, &name);
            let tally = tallies.get(&(day, name.clone()));
            let staged = || {
                let key = SegmentKey { org: org.clone(), kind, day, name: name.clone() };
                let staged = self.segments.staged_merge(&key);
                if staged {
                    tracing::info!(path = %path.display(), "catalogued merged segment not yet committed; its sources were read");
                }
                staged
            };
            match tally {
                None | Some(Tally { listed: false, .. }) if staged() => {}
                None | Some(Tally { listed: false, .. }) => problem(
                    problems,
                    path.clone(),
                    0,
                    format!(
                        "missing segment: the catalog holds {} acknowledged records here{}",
                        row.records,
                        ranges(&row, None)
                    ),
                ),
                // Damage already reported for this file accounts for it.
                Some(found) if found.blocks < row.blocks && !problems.iter().any(|p| p.path == path) => problem(
                    problems,
                    path.clone(),
                    row.bytes,
                    format!(
                        "missing tail: the catalog holds {} blocks ({} records) ending at byte {}, the file has {} \
                         blocks ({} records): {} acknowledged records are gone{}",
                        row.blocks,
                        row.records,
                        row.bytes,
                        found.blocks,
                        found.records,
                        row.records.saturating_sub(found.records),
                        ranges(&row, Some(found))
                    ),
                ),
                Some(_) => {}
            }
            catalogued.insert(path, row.blocks);
        }
        // A torn tail after what the catalog holds was never acknowledged.
        problems.retain(|p| {
            let ignorable = p.what.starts_with("torn tail")
                && catalogued.contains_key(&p.path)
                && tallies.iter().any(|((day, name), t)| {
                    self.catalog_path(org, kind, *day, name) == p.path && Some(&t.blocks) >= catalogued.get(&p.path)
                });
            if ignorable {
                tracing::info!(path = %p.path.display(), "unacknowledged torn tail after the catalogued blocks ignored");
            }
            !ignorable
        });
    }

    /// The catalog rows of an organisation's kind.
    pub(crate) fn catalog_rows(
        &self,
        org: &OrgId,
        kind: DataKind,
    ) -> Result<Vec<(SegmentRowKey, SegmentRow)>, StoreError> {
        self.control()
            .segment_rows(org.as_str(), kind.as_str())
            .map_err(|e| StoreError::Key(crate::keys::KeyError::Control(e)))
    }

    /// Reads every segment of every organisation (or of `only`) and kind
    /// and reports damage and losses against the catalog, without changing
    /// anything.
    pub fn verify(&self, only: Option<&OrgId>) -> Result<Vec<(OrgId, DataKind, VerifyReport)>, StoreError> {
        let mut orgs = self.orgs();
        // Organisations whose every segment is gone have only catalog rows.
        for name in self.control().org_key_names().map_err(|e| StoreError::Key(e.into()))? {
            if let Ok(org) = OrgId::new(name) {
                if !orgs.contains(&org) {
                    orgs.push(org);
                }
            }
        }
        orgs.sort();
        let mut out = Vec::new();
        for org in orgs.into_iter().filter(|o| only.is_none_or(|only| only == o)) {
            for kind in DataKind::ALL {
                let mut report = VerifyReport::default();
                let mut records = 0;
                let (problems, segments) = self.read_all(&org, kind, &mut |_| records += 1)?;
                report.records = records;
                report.segments = segments;
                report.problems = problems;
                if report.segments > 0 || !report.problems.is_empty() {
                    out.push((org.clone(), kind, report));
                }
            }
        }
        Ok(out)
    }
}

fn ranges(row: &SegmentRow, found: Option<&Tally>) -> String {
    let mut parts = Vec::new();
    for r in &row.streams {
        let found_last = found.and_then(|t| t.last_seq.get(&(r.device.clone(), r.stream))).copied();
        match found_last {
            Some(last) if last >= r.last => {}
            Some(last) => parts.push(format!("{} stream {:x} batches {}..={}", r.device, r.stream, last + 1, r.last)),
            None => parts.push(format!("{} stream {:x} batches {}..={}", r.device, r.stream, r.first, r.last)),
        }
    }
    if parts.is_empty() && !row.more_streams {
        return String::new();
    }
    let more = if row.more_streams || row.streams.len() >= MAX_STREAMS_PER_ROW { " and other streams" } else { "" };
    format!(" (missing: {}{more})", parts.join(", "))
}
