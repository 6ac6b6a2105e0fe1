use std::collections::HashMap;

use glimpse_common::clock::{format_day, utc_day, MILLIS_PER_DAY};
use glimpse_common::identity::OrgId;
use glimpse_common::record::{DataKind, RecordBody};

use super::*;
use crate::store::testutil::{hostnames, identity, segments, Fixture, T0};

const DAY: i64 = MILLIS_PER_DAY;

/// These tests move the clock by weeks at a time: the sweep is told to
/// trust it (the clock checks have their own tests).
fn sweep(store: &Store) -> Result<SweepReport, RetentionError> {
    sweep_checked(store, ClockCheck::Accept)
}

fn org(name: &str) -> OrgId {
    OrgId::new(name).unwrap()
}

/// Milliseconds from `T0` to the end of T0's day plus `days` days: the first
/// moment a sweep may delete T0's day under a `days`-day window.
fn day_gone_after(days: i64) -> i64 {
    (utc_day(T0) + 1) * DAY + days * DAY - T0
}

#[test]
fn capture_expires_after_seven_days_read_first_then_sweep() {
    let f = Fixture::new();
    let ap = identity("acme", "ap-1");
    f.append_as(&ap, DataKind::Capture, &["old-capture"]);
    f.append(&ap, 1, &["old-metadata"]);

    // Exactly 7 days old is the window's first moment: still kept.
    f.clock.advance(7 * DAY);
    assert_eq!(hostnames(&f.read("acme", DataKind::Capture)), ["old-capture"]);

    // Older: invisible at once, though its day is not over and not swept.
    f.clock.advance(1);
    f.append_as(&ap, DataKind::Capture, &["new-capture"]);
    assert_eq!(hostnames(&f.read("acme", DataKind::Capture)), ["new-capture"]);
    assert_eq!(hostnames(&f.read("acme", DataKind::Metadata)), ["old-metadata"]);
    let report = sweep(&f.store).unwrap();
    assert!(report.deleted.is_empty(), "{report:?}");

    f.clock.set(T0 + day_gone_after(7));
    let report = sweep(&f.store).unwrap();
    assert_eq!(report.deleted.len(), 1, "{report:?}");
    let gone = &report.deleted[0];
    assert_eq!(
        (gone.org.as_str(), gone.kind, gone.day.as_str()),
        ("acme", DataKind::Capture, format_day(utc_day(T0)).as_str())
    );
    assert_eq!(gone.segments, 1);
    assert!(gone.bytes > 0);
    assert_eq!(report.segments_deleted, 1);
    assert!(!f.dir.path().join("orgs/acme/capture").join(format_day(utc_day(T0))).exists());
    // Inside the window: survives.
    assert_eq!(hostnames(&f.read("acme", DataKind::Capture)), ["new-capture"]);
    assert_eq!(hostnames(&f.read("acme", DataKind::Metadata)), ["old-metadata"]);
    assert!(f.read("acme", DataKind::Capture).problems.is_empty());
}

#[test]
fn metadata_expires_after_sixty_days_and_empty_dirs_go() {
    let f = Fixture::new();
    let ap = identity("acme", "ap-1");
    f.append(&ap, 1, &["old"]);
    f.clock.advance(60 * DAY);
    assert_eq!(hostnames(&f.read("acme", DataKind::Metadata)), ["old"]);
    f.clock.advance(1);
    assert!(f.read("acme", DataKind::Metadata).records.is_empty());
    assert_eq!(segments(f.dir.path()).len(), 1);

    f.clock.set(T0 + day_gone_after(60));
    let report = sweep(&f.store).unwrap();
    assert_eq!(report.deleted.len(), 1);
    assert!(report.failures.is_empty());
    assert!(segments(f.dir.path()).is_empty());
    // Kind and organisation directories left empty are removed.
    assert!(!f.dir.path().join("orgs/acme").exists());
    assert_eq!(report.dirs_removed, 2);
    assert!(f.store.orgs().is_empty());

    // Writing again after the sweep recreates what it needs.
    f.append(&ap, 2, &["new"]);
    assert_eq!(hostnames(&f.read("acme", DataKind::Metadata)), ["new"]);
}

#[test]
fn sweep_drops_an_active_segment_of_a_deleted_day() {
    let f = Fixture::new();
    let ap = identity("acme", "ap-1");
    f.append(&ap, 1, &["old"]);
    f.clock.set(T0 + day_gone_after(60));
    sweep(&f.store).unwrap();
    // The clock steps back to the deleted day (NTP correction): the writer
    // must start a fresh segment, not append to the deleted file.
    f.clock.set(T0 + 1);
    f.append(&ap, 2, &["again"]);
    assert_eq!(segments(f.dir.path()).len(), 1);
}

#[test]
fn per_org_override_is_respected() {
    let policy = RetentionPolicy::new(
        HashMap::new(),
        HashMap::from([
            (org("acme"), HashMap::from([(DataKind::Metadata, 90)])),
            (org("globex"), HashMap::from([(DataKind::Capture, 2)])),
        ]),
    )
    .unwrap();
    let f = Fixture::with_policy(policy);
    f.append(&identity("acme", "ap-1"), 1, &["acme-old"]);
    f.append(&identity("globex", "ap-1"), 1, &["globex-old"]);
    f.append_as(&identity("globex", "ap-1"), DataKind::Capture, &["globex-cap"]);
    f.append_as(&identity("acme", "ap-1"), DataKind::Capture, &["acme-cap"]);

    f.clock.set(T0 + day_gone_after(2));
    let report = sweep(&f.store).unwrap();
    assert_eq!(report.deleted.len(), 1);
    assert_eq!(report.deleted[0].org, org("globex"));
    assert!(f.read("globex", DataKind::Capture).records.is_empty());
    assert_eq!(hostnames(&f.read("acme", DataKind::Capture)), ["acme-cap"]);

    f.clock.set(T0 + day_gone_after(61));
    sweep(&f.store).unwrap();
    assert!(f.read("globex", DataKind::Metadata).records.is_empty());
    assert!(!f.dir.path().join("orgs/globex").exists());
    assert_eq!(hostnames(&f.read("acme", DataKind::Metadata)), ["acme-old"]);

    f.clock.set(T0 + 90 * DAY + 1);
    assert!(f.read("acme", DataKind::Metadata).records.is_empty());
    f.clock.set(T0 + day_gone_after(90));
    sweep(&f.store).unwrap();
    assert!(segments(f.dir.path()).is_empty());
}

#[test]
fn sweep_leaves_foreign_entries_alone() {
    let f = Fixture::new();
    f.append(&identity("acme", "ap-1"), 1, &["x"]);
    let kind_dir = f.dir.path().join("orgs/acme/metadata");
    std::fs::create_dir_all(kind_dir.join("lost+found")).unwrap();
    f.clock.set(T0 + day_gone_after(60));
    let report = sweep(&f.store).unwrap();
    assert_eq!(report.deleted.len(), 1);
    assert!(kind_dir.join("lost+found").exists());
}

#[test]
fn a_clock_that_jumps_or_runs_behind_is_refused_until_confirmed() {
    let f = Fixture::new();
    let ap = identity("acme", "ap-1");
    f.append_as(&ap, DataKind::Capture, &["today"]);
    super::sweep(&f.store).unwrap();

    // Thirty days ahead: today's captures would all look expired.
    f.clock.advance(30 * DAY);
    let err = super::sweep(&f.store).unwrap_err();
    assert!(matches!(err, RetentionError::ClockJump { .. }), "{err}");
    assert!(err.to_string().contains("--accept-clock"), "{err}");
    assert_eq!(hostnames(&f.read("acme", DataKind::Capture)), Vec::<String>::new(), "never served, though kept");
    assert_eq!(segments(f.dir.path()).len(), 1, "nothing deleted");

    // Back to the right time: the sweep goes on, and the data is served.
    f.clock.set(T0 + DAY);
    super::sweep(&f.store).unwrap();
    assert_eq!(hostnames(&f.read("acme", DataKind::Capture)), ["today"]);

    // Behind the last sweep by more than the tolerance.
    f.clock.set(T0 - DAY);
    assert!(matches!(super::sweep(&f.store), Err(RetentionError::ClockBehind { .. })));

    // A jump the operator confirms is accepted and remembered.
    f.clock.set(T0 + 30 * DAY);
    sweep_checked(&f.store, ClockCheck::Accept).unwrap();
    assert!(segments(f.dir.path()).is_empty());
    f.clock.advance(DAY);
    super::sweep(&f.store).unwrap();
}

#[test]
fn a_renamed_day_folder_is_swept_by_its_header() {
    let f = Fixture::new();
    let ap = identity("acme", "ap-1");
    f.append(&ap, 1, &["today"]);
    let seg = segments(f.dir.path())[0].clone();
    let day_dir = seg.parent().unwrap().to_path_buf();
    let old = day_dir.with_file_name("2020-01-01");
    std::fs::rename(&day_dir, &old).unwrap();
    let report = super::sweep(&f.store).unwrap();
    assert!(report.deleted.is_empty(), "{report:?}");
    assert_eq!(report.mismatched.len(), 1);
    assert_eq!(report.mismatched[0].folder_day, "2020-01-01");
    assert_eq!(report.mismatched[0].header_day, format_day(utc_day(T0)));
    assert!(old.exists());
}

#[test]
fn erased_records_and_swept_days_are_no_loss() {
    let f = Fixture::new();
    let ap = identity("acme", "ap-1");
    f.append(&ap, 1, &["keep", "erase-me"]);
    f.store
        .erase_where(
            &org("acme"),
            DataKind::Metadata,
            &|r| matches!(&r.record.body, RecordBody::Metadata(m) if m.hostname.as_str() == "erase-me"),
        )
        .unwrap();
    let out = f.read("acme", DataKind::Metadata);
    assert_eq!(hostnames(&out), ["keep"]);
    assert!(out.problems.is_empty(), "{:?}", out.problems);
    f.clock.advance(90 * MILLIS_PER_DAY);
    sweep(&f.store).unwrap();
    assert!(f.store.verify(None).unwrap().iter().all(|(_, _, r)| r.problems.is_empty()));
    assert!(f.store.control().segment_rows("acme", "metadata").unwrap().is_empty());
}
