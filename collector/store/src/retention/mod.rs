//! Retention: how long data is kept ([`RetentionPolicy`]) and the sweep that
//! deletes what has expired ([`sweep`]).
//!
//! Expiry is enforced twice. [`crate::store::Store::read`] never returns a
//! record received before the window start, so nothing expired is served
//! even if the sweeper is late; [`sweep`] frees the disk by deleting whole
//! day directories once every moment of the day is before the window.
//! Time comes from the store's injected clock, so tests move it by hand.
//! The sweep works on the [`SegmentStore`] seam (list and delete by day),
//! not on any store internals; the store itself calls nothing here.
//!
//! What is deliberately not here: the timer that calls [`sweep`]
//! periodically (the collector's main loop owns it) and deletion on
//! request (crypto-shredding, see [`crate::keys::OrgKeys::destroy_org_key`]).

use std::path::PathBuf;

use glimpse_common::clock::{format_day, UnixMillis, MILLIS_PER_DAY};
use glimpse_common::identity::OrgId;
use glimpse_common::record::DataKind;
use serde::Serialize;

use crate::store::seam::SegmentError;
use crate::store::{SegmentStore, Store};

pub use crate::retention_policy::{
    bounds, OrgRetentionConfig, OutOfBounds, RetentionConfig, RetentionError, RetentionPolicy, MAX_CAPTURE_DAYS,
    MAX_DEFAULT_METADATA_DAYS, MAX_ORG_METADATA_DAYS, MIN_RETENTION_DAYS,
};

/// One day directory a sweep deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeletedDay {
    /// The organisation.
    pub org: OrgId,
    /// The data kind.
    pub kind: DataKind,
    /// The day, `YYYY-MM-DD`.
    pub day: String,
    /// Segment files deleted.
    pub segments: u64,
    /// Bytes freed.
    pub bytes: u64,
}

/// A path the sweep could not delete; it is retried on the next sweep.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SweepFailure {
    /// The path.
    pub path: PathBuf,
    /// What went wrong.
    pub error: String,
}

/// What a sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SweepReport {
    /// Day directories deleted.
    pub deleted: Vec<DeletedDay>,
    /// Segment files deleted in total.
    pub segments_deleted: u64,
    /// Bytes freed in total.
    pub bytes_freed: u64,
    /// Empty organisation and kind directories removed.
    pub dirs_removed: u64,
    /// Paths that could not be deleted.
    pub failures: Vec<SweepFailure>,
}

/// Deletes every day directory whose whole day lies before its retention
/// window, then removes kind and organisation directories left empty, using
/// the store's segments, policy and clock.
///
/// Failures on individual paths are logged, reported and retried next time;
/// only an unreadable store root fails the sweep.
pub fn sweep(store: &Store) -> Result<SweepReport, RetentionError> {
    sweep_segments(store.segments(), store.retention(), store.clock().now_millis())
}

/// [`sweep`] over any [`SegmentStore`]: deletes, by day, what `policy` says
/// has expired at `now`.
pub fn sweep_segments(
    segments: &dyn SegmentStore,
    policy: &RetentionPolicy,
    now: UnixMillis,
) -> Result<SweepReport, RetentionError> {
    let mut report = SweepReport::default();
    // Listing first catches an unreadable root as an error, not an empty store.
    let orgs = segments.orgs().map_err(|e| match e {
        SegmentError::Io { action, location, source } => RetentionError::Io { action, path: location, source },
        other => RetentionError::Io { action: "list", path: PathBuf::new(), source: std::io::Error::other(other) },
    })?;
    for org in orgs {
        for kind in DataKind::ALL {
            let window = policy.window_start(&org, kind, now);
            let mut ignored = Vec::new();
            let days = match segments.days(&org, kind, &mut ignored) {
                Ok(days) => days,
                Err(e) => {
                    failure(&mut report, &e);
                    continue;
                }
            };
            // Not-day entries are not ours to delete; the reader reports them.
            for day in days.into_iter().filter(|day| day.saturating_add(1).saturating_mul(MILLIS_PER_DAY) <= window) {
                match segments.delete_day(&org, kind, day) {
                    Ok(freed) => {
                        let day = format_day(day);
                        let (segments, bytes) = (freed.segments, freed.bytes);
                        tracing::info!(%org, %kind, %day, segments, bytes, "deleted expired data");
                        report.segments_deleted += segments;
                        report.bytes_freed += bytes;
                        report.deleted.push(DeletedDay { org: org.clone(), kind, day, segments, bytes });
                    }
                    Err(e) => failure(&mut report, &e),
                }
            }
        }
        let (removed, failures) = segments.tidy(&org);
        report.dirs_removed += removed;
        for e in &failures {
            failure(&mut report, e);
        }
    }
    if !report.deleted.is_empty() || !report.failures.is_empty() {
        tracing::info!(
            days = report.deleted.len(),
            segments = report.segments_deleted,
            bytes = report.bytes_freed,
            failures = report.failures.len(),
            "retention sweep finished"
        );
    }
    Ok(report)
}

fn failure(report: &mut SweepReport, error: &SegmentError) {
    let path = match error {
        SegmentError::Io { location, .. } => location.clone(),
        _ => PathBuf::new(),
    };
    let error = match error {
        SegmentError::Io { source, .. } => source.to_string(),
        other => other.to_string(),
    };
    tracing::warn!(path = %path.display(), %error, "retention sweep could not delete");
    report.failures.push(SweepFailure { path, error });
}

#[cfg(test)]
mod tests;
