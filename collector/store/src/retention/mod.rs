//! Retention: how long data is kept ([`RetentionPolicy`]) and the sweep that
//! deletes what has expired ([`sweep`]).
//!
//! Expiry is enforced twice. [`crate::store::Store::read`] never returns a
//! record received before the window start, so nothing expired is served
//! even if the sweeper is late; [`sweep`] frees the disk by deleting whole
//! day directories once every moment of the day is before the window.
//! Time comes from the store's injected clock, so tests move it by hand.
//!
//! What is deliberately not here: the timer that calls [`sweep`]
//! periodically (the collector's main loop owns it) and deletion on
//! request (crypto-shredding, see [`crate::keys::OrgKeys::destroy_org_key`]).

mod policy;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use glimpse_common::clock::{format_day, parse_day, MILLIS_PER_DAY};
use glimpse_common::identity::OrgId;
use glimpse_common::record::DataKind;
use serde::Serialize;

use crate::store::{lock_slot, Store};

pub use policy::{
    bounds, OrgRetentionConfig, OutOfBounds, RetentionConfig, RetentionPolicy, MAX_CAPTURE_DAYS,
    MAX_DEFAULT_METADATA_DAYS, MAX_ORG_METADATA_DAYS, MIN_RETENTION_DAYS,
};

/// A retention policy is invalid or a sweep could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RetentionError {
    /// One or more retention settings are outside their bounds.
    #[error("invalid retention settings: {}", join(.0))]
    OutOfBounds(Vec<OutOfBounds>),
    /// The store's organisation directory could not be listed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// To which path.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
}

fn join(problems: &[OutOfBounds]) -> String {
    problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

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
/// window, then removes kind and organisation directories left empty.
///
/// Failures on individual paths are logged, reported and retried next time;
/// only an unreadable store root fails the sweep.
pub fn sweep(store: &Store) -> Result<SweepReport, RetentionError> {
    let now = store.clock().now_millis();
    let mut report = SweepReport::default();
    let orgs_dir = store.orgs_dir();
    // Listing first catches an unreadable root as an error, not an empty store.
    fs::read_dir(orgs_dir).map_err(|source| RetentionError::Io {
        action: "list",
        path: orgs_dir.to_path_buf(),
        source,
    })?;
    for org in store.orgs() {
        for kind in DataKind::ALL {
            let window = store.retention().window_start(&org, kind, now);
            // Holding the slot keeps the writer from creating a day
            // directory in a kind directory being removed, and lets us drop
            // an active segment whose day is being deleted.
            let slot = store.slot(&org, kind);
            let mut active = lock_slot(&slot);
            let kind_dir = store.kind_dir(&org, kind);
            for (day, dir) in expired_days(&kind_dir, window, &mut report) {
                if active.as_ref().is_some_and(|seg| seg.place.day == day) {
                    *active = None;
                }
                delete_day(&org, kind, day, &dir, &mut report);
            }
            remove_if_empty(&kind_dir, &mut report);
        }
        // Every kind's slot, in a fixed order, so no writer is creating a
        // directory inside the organisation while we remove it.
        let slots: Vec<_> = DataKind::ALL.iter().map(|k| store.slot(&org, *k)).collect();
        let _guards: Vec<_> = slots.iter().map(lock_slot).collect();
        remove_if_empty(&orgs_dir.join(org.as_str()), &mut report);
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

/// Day directories under `kind_dir` that ended at or before `window`.
fn expired_days(kind_dir: &Path, window: i64, report: &mut SweepReport) -> Vec<(i64, PathBuf)> {
    let entries = match fs::read_dir(kind_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            failure(report, kind_dir, &e);
            return Vec::new();
        }
    };
    let mut days = Vec::new();
    for entry in entries.flatten() {
        let Some(day) = entry.file_name().to_str().and_then(parse_day) else {
            // Not ours to delete; the reader reports it.
            continue;
        };
        let day_end = day.saturating_add(1).saturating_mul(MILLIS_PER_DAY);
        if day_end <= window {
            days.push((day, entry.path()));
        }
    }
    days.sort();
    days
}

fn delete_day(org: &OrgId, kind: DataKind, day: i64, dir: &Path, report: &mut SweepReport) {
    let (segments, bytes) = dir_usage(dir);
    match fs::remove_dir_all(dir) {
        Ok(()) => {
            let day = format_day(day);
            tracing::info!(%org, %kind, %day, segments, bytes, "deleted expired data");
            report.segments_deleted += segments;
            report.bytes_freed += bytes;
            report.deleted.push(DeletedDay { org: org.clone(), kind, day, segments, bytes });
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => failure(report, dir, &e),
    }
}

/// Files and bytes directly in `dir`.
fn dir_usage(dir: &Path) -> (u64, u64) {
    let Ok(entries) = fs::read_dir(dir) else {
        return (0, 0);
    };
    entries
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .fold((0, 0), |(n, bytes), m| (n + 1, bytes + m.len()))
}

fn remove_if_empty(dir: &Path, report: &mut SweepReport) {
    let empty = fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_none());
    if !empty {
        return;
    }
    match fs::remove_dir(dir) {
        Ok(()) => {
            tracing::debug!(path = %dir.display(), "removed empty directory");
            report.dirs_removed += 1;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => failure(report, dir, &e),
    }
}

fn failure(report: &mut SweepReport, path: &Path, error: &io::Error) {
    tracing::warn!(path = %path.display(), %error, "retention sweep could not delete");
    report.failures.push(SweepFailure { path: path.to_path_buf(), error: error.to_string() });
}

#[cfg(test)]
mod tests;
