//! Compaction against object_store's in-memory backend, with a real
//! `Store` (its catalog in the embedded control store): merging, the
//! reads and resume marks across it, and a crash at every step.

use std::ops::ControlFlow;

use glimpse_common::clock::Clock;
use glimpse_common::record::{DataKind, RecordBody};
use glimpse_store::store::seam::{Compacted, SegmentStore};
use glimpse_store::store::{ReadMark, Store};

use crate::compact::CRASH_AT;
use crate::tests::{org, Fixture};

const AFTER_MS: i64 = 60_000;
const TARGET: u64 = 1 << 20;

/// Every record's hostname in read order; no problem may be reported.
fn served(store: &Store) -> Vec<String> {
    served_after(store, None).into_iter().map(|(_, name)| name).collect()
}

fn served_after(store: &Store, after: Option<&ReadMark>) -> Vec<(ReadMark, String)> {
    let mut out = Vec::new();
    let problems = store
        .read_after(&org(), DataKind::Metadata, (None, None), after, &mut |mark, record| {
            if let RecordBody::Metadata(m) = &record.record.body {
                out.push((mark, m.hostname.as_str().to_owned()));
            }
            ControlFlow::Continue(())
        })
        .unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    out
}

fn verify_clean(store: &Store) {
    let report = store.verify(Some(&org())).unwrap();
    assert!(report.iter().all(|(_, _, r)| r.problems.is_empty()), "{report:?}");
}

/// One object per batch (each append waits for its upload).
fn fill(fx: &Fixture, batches: u64) -> Vec<String> {
    for seq in 1..=batches {
        let device = format!("ap-{}", seq % 3);
        fx.append(&device, seq, &[&format!("h{seq:03}a"), &format!("h{seq:03}b")]).unwrap();
    }
    served(&fx.store)
}

fn run(fx: &Fixture) -> Compacted {
    let (done, failures) = fx.store.compact(TARGET, AFTER_MS, 100).unwrap();
    let _ = failures;
    done
}

fn grace(fx: &Fixture) -> i64 {
    fx.segments.listing_limit().as_millis() as i64 + 1
}

fn staged_objects(fx: &Fixture) -> Vec<String> {
    fx.objects().into_iter().filter(|p| p.ends_with(".compact") && p.contains("/orgs/")).collect()
}

#[test]
fn small_objects_merge_into_one_serving_the_same_records_in_the_same_order() {
    let fx = Fixture::new();
    let before = fill(&fx, 30);
    assert_eq!(fx.segment_objects().len(), 30);
    // Too young: nothing is touched.
    assert_eq!(run(&fx), Compacted::default());
    fx.clock.advance(AFTER_MS);
    let first = run(&fx);
    assert_eq!((first.merges, first.merged), (1, 30), "{first:?}");
    // Committed: the first source is gone, the rest wait for the grace, and
    // every record is served once, in the same order, the catalog agreeing.
    assert_eq!(fx.segment_objects().len(), 29);
    assert_eq!(served(&fx.store), before);
    verify_clean(&fx.store);
    // Before the grace a run leaves them; after it, it completes.
    assert_eq!(run(&fx).settled, 0);
    fx.clock.advance(grace(&fx));
    assert_eq!(run(&fx).settled, 1);
    assert_eq!(fx.segment_objects().len(), 1);
    assert!(staged_objects(&fx).is_empty(), "{:?}", fx.objects());
    assert!(!fx.objects().iter().any(|p| p.contains("/rewrites/")), "{:?}", fx.objects());
    assert_eq!(served(&fx.store), before);
    verify_clean(&fx.store);
    // Appends go on into new objects after it, and are read after it.
    fx.append("ap-9", 1, &["late"]).unwrap();
    let mut more = before.clone();
    more.push("late".into());
    assert_eq!(served(&fx.store), more);
    // A merged object is not merged again with nothing new beside it.
    fx.clock.advance(AFTER_MS);
    let again = run(&fx);
    assert_eq!(again.merges, 1, "the big one and the late one are merged: {again:?}");
    fx.clock.advance(grace(&fx));
    run(&fx);
    assert_eq!(fx.segment_objects().len(), 1);
    assert_eq!(served(&fx.store), more);
}

#[test]
fn a_target_cuts_runs_and_young_objects_are_left() {
    let fx = Fixture::new();
    fill(&fx, 10);
    fx.clock.advance(AFTER_MS);
    fx.append("ap-7", 1, &["young"]).unwrap();
    // A target of about four objects' bytes.
    let size = fx.store.stats().unwrap().bytes / 11;
    let (done, _) = fx.store.compact(size * 4, AFTER_MS, 100).unwrap();
    assert!(done.merges >= 2, "{done:?}");
    fx.clock.advance(grace(&fx));
    fx.store.compact(size * 4, AFTER_MS, 100).unwrap();
    let objects = fx.segment_objects();
    assert!(objects.len() >= 3 && objects.len() < 11, "{objects:?}");
    assert_eq!(served(&fx.store).len(), 21);
}

#[test]
fn a_resume_mark_inside_a_merged_object_resumes_exactly_after_it() {
    let fx = Fixture::new();
    fill(&fx, 12);
    let all = served_after(&fx.store, None);
    assert_eq!(all.len(), 24);
    fx.clock.advance(AFTER_MS);
    // Marks taken before the compaction, in every source, resume right
    // after their record: during the grace and after the completion.
    let check = |stage: &str| {
        for at in [0usize, 1, 2, 7, 12, 13, 22, 23] {
            let rest: Vec<String> = served_after(&fx.store, Some(&all[at].0)).into_iter().map(|(_, n)| n).collect();
            let expected: Vec<String> = all[at + 1..].iter().map(|(_, n)| n.clone()).collect();
            assert_eq!(rest, expected, "{stage}: after record {at}");
        }
    };
    assert_eq!(run(&fx).merges, 1);
    check("committed");
    fx.clock.advance(grace(&fx));
    run(&fx);
    assert_eq!(fx.segment_objects().len(), 1);
    check("completed");
}

#[test]
fn a_crash_at_any_step_serves_each_record_once_and_the_next_runs_settle_it() {
    for step in ["after the put", "after the switch", "after the deletes"] {
        let fx = Fixture::new();
        let before = fill(&fx, 8);
        fx.clock.advance(AFTER_MS);
        CRASH_AT.with(|c| c.set(Some(step)));
        let (done, failures) = fx.store.compact(TARGET, AFTER_MS, 100).unwrap();
        if step == "after the deletes" {
            // The merge itself committed; the completion is what stops.
            assert_eq!((done.merges, failures), (1, 0), "{step}");
            fx.clock.advance(grace(&fx));
            let (_, failures) = fx.store.compact(TARGET, AFTER_MS, 100).unwrap();
            assert_eq!(failures, 1, "{step}");
        } else {
            assert_eq!((done.merges, failures), (0, 1), "{step}");
        }
        CRASH_AT.with(|c| c.set(None));
        // Left as the crash left it: every record once, the catalog agreeing.
        assert_eq!(served(&fx.store), before, "{step}");
        verify_clean(&fx.store);
        assert_eq!(staged_objects(&fx).len(), 1, "{step}: {:?}", fx.objects());

        // Another collector (or this one restarted) settles it: at once
        // when committed, once the intent is stale when it never was.
        let other = fx.another();
        other.recover(&|_| None).unwrap();
        let settle = |now: i64| Compacted {
            settled: crate::compact::settle(&other, &org(), DataKind::Metadata, &*fx.store.control(), now, false)
                .unwrap(),
            ..Compacted::default()
        };
        let now = fx.clock.now_millis();
        let stale = now + crate::rewrite::STALE_REWRITE_MS + grace(&fx);
        let first = settle(now);
        match step {
            "after the put" => assert_eq!(first.settled, 0, "young and uncommitted: left"),
            "after the switch" => assert_eq!(first.settled, 1, "switched: committed now"),
            _ => assert_eq!(first.settled, 0, "committed elsewhere: left until stale"),
        }
        assert_eq!(served(&fx.store), before, "{step}");
        verify_clean(&fx.store);
        assert!(settle(stale).settled >= 1, "{step}");
        assert!(staged_objects(&fx).is_empty(), "{step}: {:?}", fx.objects());
        assert!(!fx.objects().iter().any(|p| p.contains("/rewrites/")), "{step}: {:?}", fx.objects());
        let expected_objects = if step == "after the put" { 8 } else { 1 };
        assert_eq!(fx.segment_objects().len(), expected_objects, "{step}");
        assert_eq!(served(&fx.store), before, "{step}");
        verify_clean(&fx.store);
    }
}

#[test]
fn an_erase_settles_a_crashed_compaction_first() {
    let fx = Fixture::new();
    let before = fill(&fx, 6);
    fx.clock.advance(AFTER_MS);
    CRASH_AT.with(|c| c.set(Some("after the switch")));
    fx.store.compact(TARGET, AFTER_MS, 100).unwrap();
    CRASH_AT.with(|c| c.set(None));
    let report = fx.store.erase_where(&org(), DataKind::Metadata, &|r| match &r.record.body {
        RecordBody::Metadata(m) => m.hostname.as_str() == "h003a",
        #[allow(unreachable_patterns)]
        _ => false,
    });
    assert_eq!(report.unwrap().records, 1);
    let expected: Vec<String> = before.into_iter().filter(|n| n != "h003a").collect();
    assert_eq!(served(&fx.store), expected);
    assert!(staged_objects(&fx).is_empty(), "{:?}", fx.objects());
    assert_eq!(fx.segment_objects().len(), 1);
    verify_clean(&fx.store);
}
