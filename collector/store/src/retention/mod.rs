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

use glimpse_common::clock::{format_day, utc_day, UnixMillis, MILLIS_PER_DAY};
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
    /// Segments whose header names another day than their folder: they
    /// are kept until both days have expired.
    pub mismatched: Vec<DayMismatch>,
}

/// A segment in a folder of another day than its header's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DayMismatch {
    /// The segment file.
    pub path: PathBuf,
    /// The folder's day, `YYYY-MM-DD`.
    pub folder_day: String,
    /// The header's day, `YYYY-MM-DD`.
    pub header_day: String,
}

/// The largest forward step of the clock a sweep accepts without
/// confirmation, since the last sweep: beyond it the clock is more likely
/// wrong than the collector stopped that long.
pub const MAX_CLOCK_JUMP_DAYS: i64 = 3;
/// How far behind the newest stored record or the last sweep the clock may
/// be (small corrections, NTP steps).
pub const CLOCK_BEHIND_TOLERANCE_MS: i64 = 60 * 60 * 1000;
/// The collector-wide fact holding the latest time a sweep accepted.
const CLOCK_SEEN: &str = "retention-clock-seen";

/// Whether a sweep trusts the clock without checking it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockCheck {
    /// Refuse when the clock is behind stored data or jumped forward.
    Enforce,
    /// The operator confirmed the clock (`--accept-clock`).
    Accept,
}

/// Deletes every day directory whose whole day lies before its retention
/// window, then removes kind and organisation directories left empty, using
/// the store's segments, policy and clock.
///
/// Failures on individual paths are logged, reported and retried next time;
/// only an unreadable store root fails the sweep.
pub fn sweep(store: &Store) -> Result<SweepReport, RetentionError> {
    sweep_checked(store, ClockCheck::Enforce)
}

/// [`sweep`], checking the clock first unless told to trust it: refuses
/// ([`RetentionError::ClockBehind`], [`RetentionError::ClockJump`]) when
/// the clock is before the newest stored record's day or the last sweep,
/// or more than [`MAX_CLOCK_JUMP_DAYS`] after the last sweep. Records the
/// clock for the next check, and drops deleted days from the catalog.
pub fn sweep_checked(store: &Store, check: ClockCheck) -> Result<SweepReport, RetentionError> {
    let now = store.clock().now_millis();
    let control = store.control();
    let state = |e: crate::control::ControlError| RetentionError::State(e.to_string());
    let seen: Option<i64> = control.state(CLOCK_SEEN).map_err(state)?.and_then(|v| v.parse().ok());
    if check == ClockCheck::Enforce {
        if let Some(seen) = seen {
            if now < seen - CLOCK_BEHIND_TOLERANCE_MS {
                return Err(RetentionError::ClockBehind {
                    now: format_time(now),
                    what: "the last sweep",
                    seen: format_time(seen),
                });
            }
            if now > seen.saturating_add(MAX_CLOCK_JUMP_DAYS * MILLIS_PER_DAY) {
                return Err(RetentionError::ClockJump {
                    now: format_time(now),
                    last: format_time(seen),
                    max_days: MAX_CLOCK_JUMP_DAYS,
                });
            }
        }
        if let Some(newest) = newest_day(store.segments()) {
            if newest > utc_day(now + CLOCK_BEHIND_TOLERANCE_MS) {
                return Err(RetentionError::ClockBehind {
                    now: format_time(now),
                    what: "the newest stored data's day",
                    seen: format_day(newest),
                });
            }
        }
    }
    if seen.is_none_or(|seen| now > seen) || check == ClockCheck::Accept {
        control.replace_state(CLOCK_SEEN, &now.to_string()).map_err(state)?;
    }
    let report = sweep_segments(store.segments(), &store.retention_in_force(), now)?;
    for deleted in &report.deleted {
        if let Some(day) = glimpse_common::clock::parse_day(&deleted.day) {
            store.forget_segments(&deleted.org, Some((deleted.kind, day)));
        }
    }
    Ok(report)
}

/// RFC 3339 UTC, for the clock messages.
fn format_time(at: UnixMillis) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(at) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| format!("@{at}ms"))
}

/// The newest day any segment holds, by folder or header.
fn newest_day(segments: &dyn SegmentStore) -> Option<i64> {
    let mut newest = None;
    for org in segments.orgs().ok()? {
        for kind in DataKind::ALL {
            let mut ignored = Vec::new();
            let Some(&day) = segments.days(&org, kind, &mut ignored).ok()?.last() else { continue };
            let header = header_days(segments, &org, kind, day).into_iter().map(|(_, d)| d).max();
            let day = header.map_or(day, |h| h.max(day));
            newest = newest.max(Some(day));
        }
    }
    newest
}

/// The header day of each segment of a folder (segments whose header
/// cannot be read are left out: they are the reader's to report).
fn header_days(segments: &dyn SegmentStore, org: &OrgId, kind: DataKind, day: i64) -> Vec<(PathBuf, i64)> {
    let mut ignored = Vec::new();
    let Ok(list) = segments.segments(org, kind, day, &mut ignored) else { return Vec::new() };
    list.iter()
        .filter_map(|segment| {
            let bytes = segments.open(segment).ok()??;
            Some((segment.location.clone(), crate::store::segment_header_day(&*bytes)?))
        })
        .collect()
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
            let expired = |day: i64| day.saturating_add(1).saturating_mul(MILLIS_PER_DAY) <= window;
            // Not-day entries are not ours to delete; the reader reports them.
            for day in days.into_iter().filter(|day| expired(*day)) {
                // The header's day counts as much as the folder's: a renamed
                // folder must not make today's data look old.
                let headers = header_days(segments, &org, kind, day);
                let mut keep = false;
                for (path, header_day) in headers {
                    if header_day != day {
                        let (folder_day, header_day_text) = (format_day(day), format_day(header_day));
                        tracing::warn!(path = %path.display(), %folder_day, header_day = %header_day_text,
                            "segment header and folder name different days; kept until both have expired");
                        report.mismatched.push(DayMismatch { path, folder_day, header_day: header_day_text });
                    }
                    keep |= !expired(header_day);
                }
                if keep {
                    continue;
                }
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
        SegmentError::Remote { location, .. } => PathBuf::from(location),
        _ => PathBuf::new(),
    };
    let error = match error {
        SegmentError::Io { source, .. } => source.to_string(),
        SegmentError::Remote { message, .. } => message.clone(),
        other => other.to_string(),
    };
    tracing::warn!(path = %path.display(), %error, "retention sweep could not delete");
    report.failures.push(SweepFailure { path, error });
}

#[cfg(test)]
mod tests;
