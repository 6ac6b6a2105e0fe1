//! Unit tests of the logic against object_store's in-memory backend
//! (behind `faulty.rs` where a test needs failures): a real
//! `glimpse_store::store::Store` composed with [`ObjectSegments`]. The same
//! behaviour against a real S3 store (Garage) is in
//! `tests/tests/objects.rs`.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_util::TryStreamExt;
use glimpse_common::bounded::BoundedString;
use glimpse_common::clock::{Clock, ManualClock, MILLIS_PER_DAY};
use glimpse_common::identity::{DeviceId, DeviceIdentity, DeviceKind, OrgId};
use glimpse_common::record::{DataKind, DeviceMetadata, Record, RecordBody};
use glimpse_store::keys::MasterKey;
use glimpse_store::retention::RetentionPolicy;
use glimpse_store::store::seam::SegmentStore;
use glimpse_store::store::{parse_segment_name, Store, StoreError};
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use tempfile::TempDir;

use crate::faulty::{Faults, Faulty};
use crate::{ObjectSegments, ObjectStoreConfig};

/// Noon UTC on 2025-11-23.
pub(crate) const T0: i64 = 20_415 * MILLIS_PER_DAY + 12 * 3_600_000;

pub(crate) struct Fixture {
    _dir: TempDir,
    pub(crate) clock: ManualClock,
    pub(crate) memory: Arc<dyn ObjectStore>,
    pub(crate) faults: Arc<Faults>,
    pub(crate) segments: Arc<ObjectSegments>,
    pub(crate) store: Store,
}

pub(crate) fn config() -> ObjectStoreConfig {
    let mut config = ObjectStoreConfig::new("http://127.0.0.1:1", "garage", "glimpse");
    config.prefix = Some("test".into());
    config.flush_interval_ms = 5;
    config.request_timeout_ms = 500;
    config
}

impl Fixture {
    pub(crate) fn new() -> Fixture {
        Fixture::with(config())
    }

    fn with(config: ObjectStoreConfig) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(T0);
        let memory: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let faulty = Faulty::new(Arc::clone(&memory));
        let faults = Arc::clone(&faulty.faults);
        let segments =
            Arc::new(ObjectSegments::with_store(Arc::new(faulty), &config, Arc::new(clock.clone())).unwrap());
        segments.recover(&|_| None).unwrap();
        let store = compose(dir.path(), &clock, Arc::clone(&segments) as Arc<dyn SegmentStore>);
        Fixture { _dir: dir, clock, memory, faults, segments, store }
    }

    /// The same bucket seen by a new store (another collector, or this one
    /// after a restart), without faults.
    pub(crate) fn another(&self) -> ObjectSegments {
        ObjectSegments::with_store(Arc::clone(&self.memory), &config(), Arc::new(self.clock.clone())).unwrap()
    }

    /// Every object's path, sorted.
    pub(crate) fn objects(&self) -> Vec<String> {
        let memory = Arc::clone(&self.memory);
        let listed: Vec<_> = self
            .segments
            .bridge
            .run(Duration::from_secs(5), async move { memory.list(None).try_collect::<Vec<_>>().await.unwrap() })
            .unwrap();
        let mut paths: Vec<String> = listed.into_iter().map(|m| m.location.to_string()).collect();
        paths.sort();
        paths
    }

    pub(crate) fn segment_objects(&self) -> Vec<String> {
        self.objects().into_iter().filter(|p| p.ends_with(".seg")).collect()
    }

    fn delete_object(&self, path: &str) {
        let (memory, path) = (Arc::clone(&self.memory), Path::from(path));
        self.segments.bridge.run(Duration::from_secs(5), async move { memory.delete(&path).await.unwrap() }).unwrap();
    }

    fn put_object(&self, path: &str, bytes: Vec<u8>) {
        let (memory, path) = (Arc::clone(&self.memory), Path::from(path));
        self.segments
            .bridge
            .run(Duration::from_secs(5), async move { memory.put(&path, bytes.into()).await.unwrap() })
            .unwrap();
    }

    pub(crate) fn append(&self, device: &str, seq: u64, hostnames: &[&str]) -> Result<(), StoreError> {
        let records: Vec<Record> = hostnames.iter().map(|h| record(h)).collect();
        self.store.append(&identity(device), 1, seq, &records).map(|_| ())
    }

    pub(crate) fn hostnames(&self) -> Vec<String> {
        hostnames(&self.store)
    }
}

/// A Store whose segments are `segments`; keys and control plane local.
pub(crate) fn compose(dir: &std::path::Path, clock: &ManualClock, segments: Arc<dyn SegmentStore>) -> Store {
    let master = MasterKey::generate_file(&dir.join("master.key")).unwrap();
    let local = Store::open(&dir.join("data"), master, Arc::new(clock.clone()), RetentionPolicy::default()).unwrap();
    let mut parts = local.into_parts();
    parts.segments = segments;
    Store::from_parts(parts)
}

pub(crate) fn org() -> OrgId {
    OrgId::new("acme").unwrap()
}

pub(crate) fn identity(device: &str) -> DeviceIdentity {
    DeviceIdentity { org: org(), device: DeviceId::new(device).unwrap(), kind: DeviceKind::Ap }
}

pub(crate) fn record(hostname: &str) -> Record {
    Record {
        observed_at_ms: 1_700_000_000_000,
        body: RecordBody::Metadata(DeviceMetadata {
            hostname: BoundedString::truncating(hostname),
            ..Default::default()
        }),
    }
}

pub(crate) fn hostnames(store: &Store) -> Vec<String> {
    let outcome = store.read(&org(), DataKind::Metadata, None, None).unwrap();
    assert!(outcome.problems.is_empty(), "{:?}", outcome.problems);
    let mut names: Vec<String> = outcome
        .records
        .iter()
        .map(|r| match &r.record.body {
            RecordBody::Metadata(m) => m.hostname.as_str().to_owned(),
            #[allow(unreachable_patterns)]
            _ => String::new(),
        })
        .collect();
    names.sort();
    names
}

#[test]
fn concurrent_appends_share_objects_and_read_back_in_the_local_format() {
    let fx = Fixture::new();
    std::thread::scope(|scope| {
        for thread in 0..8 {
            let fx = &fx;
            scope.spawn(move || {
                for seq in 1..=10u64 {
                    let name = format!("h-{thread}-{seq}");
                    fx.append(&format!("ap-{thread}"), seq, &[&name]).unwrap();
                }
            });
        }
    });
    // Acknowledged means uploaded: nothing is left in memory.
    assert_eq!(fx.segments.pending_bytes(), 0);
    let names = fx.hostnames();
    assert_eq!(names.len(), 80);
    let objects = fx.segment_objects();
    assert!(!objects.is_empty() && objects.len() <= 80, "{objects:?}");
    for object in &objects {
        assert!(object.starts_with("test/orgs/acme/metadata/2025-11-23/"), "{object}");
        let name = object.rsplit('/').next().unwrap();
        let (seq, _) = parse_segment_name(name).unwrap();
        assert_eq!(seq / crate::layout::SEQ_SPREAD, T0 as u64, "{name}");
    }
    // Another collector (or a restart) reads the same records.
    let other_dir = tempfile::tempdir().unwrap();
    let other = compose(other_dir.path(), &fx.clock, Arc::new(fx.another()));
    // It has no key: the key store is per test here, so only the listing is compared.
    assert_eq!(other.segments().orgs().unwrap(), vec![org()]);
    // The verify of this store, with its catalog, finds nothing amiss.
    let report = fx.store.verify(Some(&org())).unwrap();
    assert!(report.iter().all(|(_, _, r)| r.problems.is_empty()), "{report:?}");
    assert_eq!(report.iter().map(|(_, _, r)| r.records).sum::<u64>(), 80);
}

#[test]
fn names_keep_creation_order_when_the_clock_steps_back() {
    let fx = Fixture::new();
    fx.append("ap-1", 1, &["a"]).unwrap();
    fx.clock.advance(-60_000);
    fx.append("ap-1", 2, &["b"]).unwrap();
    fx.clock.advance(120_000);
    fx.append("ap-1", 3, &["c"]).unwrap();
    let names: Vec<String> =
        fx.segment_objects().into_iter().map(|p| p.rsplit('/').next().unwrap().to_owned()).collect();
    assert_eq!(names.len(), 3);
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
    // Read order is creation order.
    let outcome = fx.store.read(&org(), DataKind::Metadata, None, None).unwrap();
    let order: Vec<_> = outcome
        .records
        .iter()
        .map(|r| match &r.record.body {
            RecordBody::Metadata(m) => m.hostname.as_str().to_owned(),
            #[allow(unreachable_patterns)]
            _ => String::new(),
        })
        .collect();
    assert_eq!(order, ["a", "b", "c"]);
}

#[test]
fn a_failed_upload_fails_its_batches_transiently_and_nothing_of_them_is_served() {
    let fx = Fixture::new();
    fx.append("ap-1", 1, &["kept"]).unwrap();
    fx.faults.refuse_puts.store(true, Ordering::SeqCst);
    let errors: Vec<StoreError> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let fx = &fx;
                scope.spawn(move || fx.append(&format!("ap-{i}"), 2, &["refused"]).unwrap_err())
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for e in &errors {
        assert!(e.is_transient(), "{e}");
        assert!(e.to_string().contains("s3://glimpse/test/orgs/acme/metadata/2025-11-23/"), "{e}");
    }
    assert_eq!(fx.segments.pending_bytes(), 0, "failed uploads free their memory");
    assert_eq!(fx.hostnames(), ["kept"]);
    // Once the store is back, the resent batches are stored.
    fx.faults.refuse_puts.store(false, Ordering::SeqCst);
    fx.append("ap-1", 2, &["resent"]).unwrap();
    assert_eq!(fx.hostnames(), ["kept", "resent"]);
}

#[test]
fn an_upload_refused_for_good_is_a_permanent_error() {
    let fx = Fixture::new();
    fx.faults.deny_puts.store(true, Ordering::SeqCst);
    let err = fx.append("ap-1", 1, &["x"]).unwrap_err();
    assert!(!err.is_transient(), "{err}");
    assert!(err.to_string().contains("AccessDenied"), "{err}");
}

#[test]
fn a_hanging_store_times_out_and_backed_up_uploads_refuse_appends_at_once() {
    let mut config = config();
    // One small batch fills it (a batch larger than the bound still goes
    // alone, so the first is let through).
    config.max_in_flight_bytes = 256;
    config.request_timeout_ms = 300;
    let fx = Fixture::with(config);
    fx.faults.hang_puts.store(true, Ordering::SeqCst);
    let big = "x".repeat(64);
    // The first batch waits for its upload, which never answers: refused
    // after the request timeout.
    let started = std::time::Instant::now();
    let err = std::thread::scope(|scope| {
        let first = scope.spawn(|| fx.append("ap-1", 1, &[&big]).unwrap_err());
        // Meanwhile the memory bound is reached: the next is refused at once.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while fx.segments.pending_bytes() == 0 {
            assert!(std::time::Instant::now() < deadline, "the first append never counted its bytes");
            std::thread::yield_now();
        }
        let refused = fx.append("ap-2", 1, &[&big]).unwrap_err();
        assert!(refused.is_transient() && refused.to_string().contains("backed up"), "{refused}");
        assert!(fx.segments.check().is_err(), "not ready while backed up");
        first.join().unwrap()
    });
    assert!(err.is_transient(), "{err}");
    assert!(err.to_string().contains("request timeout"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5), "bounded by the timeout: {:?}", started.elapsed());
    fx.faults.hang_puts.store(false, Ordering::SeqCst);
    assert_eq!(fx.segments.pending_bytes(), 0);
    fx.append("ap-1", 1, &["after"]).unwrap();
    assert_eq!(fx.hostnames(), ["after"]);
    fx.segments.check().unwrap();
}

#[test]
fn check_fails_transiently_when_the_store_cannot_be_listed() {
    let fx = Fixture::new();
    fx.segments.check().unwrap();
    fx.faults.refuse_lists.store(true, Ordering::SeqCst);
    let err = fx.segments.check().unwrap_err();
    assert!(err.is_transient(), "{err}");
}

#[test]
fn foreign_missing_and_oversized_objects_are_reported() {
    let fx = Fixture::new();
    fx.append("ap-1", 1, &["a"]).unwrap();
    fx.put_object("test/orgs/acme/metadata/2025-11-23/notes.txt", b"hello".to_vec());
    fx.put_object("test/orgs/acme/metadata/not-a-day/x.seg", b"x".to_vec());
    let outcome = fx.store.read(&org(), DataKind::Metadata, None, None).unwrap();
    assert_eq!(outcome.records.len(), 1);
    let problems: Vec<String> = outcome.problems.iter().map(|p| p.to_string()).collect();
    assert!(problems.iter().any(|p| p.contains("notes.txt") && p.contains("not a segment")), "{problems:?}");
    assert!(problems.iter().any(|p| p.contains("not-a-day") && p.contains("not a day")), "{problems:?}");

    // A catalogued object deleted behind the store's back: named by URL.
    let object = fx.segment_objects().remove(0);
    fx.delete_object(&object);
    let report = fx.store.verify(Some(&org())).unwrap();
    let problems: Vec<String> = report.iter().flat_map(|(_, _, r)| r.problems.iter().map(|p| p.to_string())).collect();
    let url = format!("s3://glimpse/{object}");
    assert!(
        problems.iter().any(|p| p.contains(&url) && p.contains("missing segment") && p.contains("1 acknowledged")),
        "{problems:?}"
    );

    // A listed object deleted before it is read is simply gone.
    let mut ignored = Vec::new();
    fx.append("ap-1", 2, &["b"]).unwrap();
    let listed =
        fx.segments.segments(&org(), DataKind::Metadata, glimpse_common::clock::utc_day(T0), &mut ignored).unwrap();
    fx.delete_object(&fx.segment_objects()[0]);
    assert!(fx.segments.open(&listed[0]).unwrap().is_none());

    // One too large to be a segment is refused, not read.
    let huge = "test/orgs/acme/metadata/2025-11-23/00000000000000000001-0000000000000001.seg";
    fx.put_object(huge, vec![0; (crate::MAX_OBJECT_BYTES + 1) as usize]);
    let listed =
        fx.segments.segments(&org(), DataKind::Metadata, glimpse_common::clock::utc_day(T0), &mut ignored).unwrap();
    let err = fx.segments.open(&listed[0]).unwrap_err();
    assert!(!err.is_transient() && err.to_string().contains("more than"), "{err}");
}

#[test]
fn deleting_a_day_or_an_organisation_removes_every_object_under_it() {
    let fx = Fixture::new();
    fx.append("ap-1", 1, &["day-1"]).unwrap();
    fx.clock.advance(MILLIS_PER_DAY);
    fx.append("ap-1", 2, &["day-2"]).unwrap();
    let day1 = glimpse_common::clock::utc_day(T0);
    assert_eq!(fx.segments.days(&org(), DataKind::Metadata, &mut Vec::new()).unwrap(), [day1, day1 + 1]);
    let before = fx.objects().len();
    let freed = fx.segments.delete_day(&org(), DataKind::Metadata, day1).unwrap();
    fx.store.forget_segments(&org(), Some((DataKind::Metadata, day1)));
    assert_eq!(freed.segments, 1);
    assert!(freed.bytes > 0);
    assert_eq!(fx.objects().len(), before - 1);
    assert_eq!(fx.hostnames(), ["day-2"]);
    assert_eq!(fx.segments.delete_day(&org(), DataKind::Metadata, day1).unwrap().segments, 0);
    let (removed, failures) = fx.segments.tidy(&org());
    assert!(removed == 0 && failures.is_empty());

    let freed = fx.segments.delete_org(&org()).unwrap();
    assert_eq!(freed.segments, 1);
    assert!(fx.objects().is_empty(), "{:?}", fx.objects());
    assert!(fx.segments.orgs().unwrap().is_empty());
}

/// The erase used by the rewrite tests: removes the records named `drop-*`.
fn erase(store: &Store) -> Result<glimpse_store::store::EraseReport, StoreError> {
    store.erase_where(&org(), DataKind::Metadata, &|r| match &r.record.body {
        RecordBody::Metadata(m) => m.hostname.as_str().starts_with("drop"),
        #[allow(unreachable_patterns)]
        _ => false,
    })
}

#[test]
fn an_erase_replaces_objects_keeping_their_sequence() {
    let fx = Fixture::new();
    fx.append("ap-1", 1, &["keep-1", "drop-1"]).unwrap();
    fx.append("ap-1", 2, &["drop-2"]).unwrap();
    let before = fx.segment_objects();
    assert_eq!(before.len(), 2);
    let report = erase(&fx.store).unwrap();
    assert_eq!((report.records, report.segments_rewritten), (2, 2));
    let after = fx.segment_objects();
    assert_eq!(after.len(), 1, "the object left with nothing is deleted: {after:?}");
    let seq = |p: &str| parse_segment_name(p.rsplit('/').next().unwrap()).unwrap();
    assert_eq!(seq(&after[0]).0, seq(&before[0]).0);
    assert_ne!(seq(&after[0]).1, seq(&before[0]).1, "a fresh segment id");
    assert_eq!(fx.hostnames(), ["keep-1"]);
    assert!(fx.objects().iter().all(|p| !p.contains("rewrites/") && !p.ends_with(".staged")), "{:?}", fx.objects());
    let report = fx.store.verify(Some(&org())).unwrap();
    assert!(report.iter().all(|(_, _, r)| r.problems.is_empty()), "{report:?}");
}

#[test]
fn an_erase_cut_short_at_any_step_serves_each_record_once_and_recover_settles_it() {
    // The replacement takes five changes (intent, staged, delete old, copy,
    // delete staged) and a sixth (delete intent); a crash after each.
    for crash_after in 0..=6 {
        let fx = Fixture::new();
        fx.append("ap-1", 1, &["keep", "drop"]).unwrap();
        fx.faults.changes_left.store(crash_after, Ordering::SeqCst);
        let erased = erase(&fx.store);
        assert_eq!(erased.is_ok(), crash_after >= 6, "crash after {crash_after}: {erased:?}");

        // Any collector reading now serves the segment exactly once: the
        // old version before the old object went, the new one after.
        let reader_dir = tempfile::tempdir().unwrap();
        let reader = compose(reader_dir.path(), &fx.clock, Arc::new(fx.another()));
        let mut problems = Vec::new();
        let day = glimpse_common::clock::utc_day(T0);
        let served = reader.segments().segments(&org(), DataKind::Metadata, day, &mut problems).unwrap();
        assert_eq!(served.len(), 1, "crash after {crash_after}: {served:?} {:?}", fx.objects());
        assert!(problems.is_empty(), "{problems:?}");
        let names = fx.hostnames();
        let old = crash_after < 3;
        assert_eq!(names, if old { vec!["drop", "keep"] } else { vec!["keep"] }, "crash after {crash_after}");

        // Recover (after a restart) finishes a rewrite past its deletion at
        // once, and rolls back an older one only once it is stale.
        fx.faults.changes_left.store(usize::MAX, Ordering::SeqCst);
        let restarted = fx.another();
        restarted.recover(&|_| None).unwrap();
        let leftovers = |fx: &Fixture| {
            fx.objects().into_iter().filter(|p| p.contains("/rewrites/") || p.ends_with(".staged")).count()
        };
        if !old || crash_after == 0 {
            assert_eq!(leftovers(&fx), 0, "crash after {crash_after}: {:?}", fx.objects());
        } else {
            assert!(leftovers(&fx) > 0, "a young rewrite is left alone");
            fx.clock.advance(crate::rewrite::STALE_REWRITE_MS);
            restarted.recover(&|_| None).unwrap();
            assert_eq!(leftovers(&fx), 0, "crash after {crash_after}: {:?}", fx.objects());
        }
        assert_eq!(fx.hostnames(), if old { vec!["drop", "keep"] } else { vec!["keep"] });
        assert_eq!(fx.segment_objects().len(), 1, "{:?}", fx.objects());

        // Running the erase again ends where an uninterrupted one does.
        erase(&fx.store).unwrap();
        assert_eq!(fx.hostnames(), ["keep"]);
        assert_eq!(fx.segment_objects().len(), 1);
        assert_eq!(leftovers(&fx), 0);
    }
}

#[test]
fn an_erase_settles_what_an_earlier_one_left_without_recover() {
    // Crashed after the staged upload, never recovered: the next erase
    // rolls it back before its own rewrite, and nothing is served twice.
    let fx = Fixture::new();
    fx.append("ap-1", 1, &["keep", "drop"]).unwrap();
    fx.faults.changes_left.store(2, Ordering::SeqCst);
    erase(&fx.store).unwrap_err();
    fx.faults.changes_left.store(usize::MAX, Ordering::SeqCst);
    erase(&fx.store).unwrap();
    assert_eq!(fx.hostnames(), ["keep"]);
    let objects: BTreeMap<bool, usize> = fx.objects().iter().fold(BTreeMap::new(), |mut m, p| {
        *m.entry(p.ends_with(".seg")).or_default() += 1;
        m
    });
    assert_eq!(objects.get(&false), None, "{:?}", fx.objects());
    assert_eq!(objects.get(&true), Some(&1));
}

#[test]
fn appends_after_a_day_deletion_start_a_new_object() {
    let fx = Fixture::new();
    fx.append("ap-1", 1, &["a"]).unwrap();
    let day = glimpse_common::clock::utc_day(fx.clock.now_millis());
    fx.segments.delete_day(&org(), DataKind::Metadata, day).unwrap();
    fx.append("ap-1", 2, &["b"]).unwrap();
    assert_eq!(fx.segment_objects().len(), 1);
}

#[test]
fn a_data_key_rotation_starts_a_new_object_and_reencryption_moves_the_old_ones() {
    use glimpse_store::keys::KeyState;
    let f = Fixture::new();
    f.append("ap-1", 1, &["before"]).unwrap();
    f.store.rotate_data_key(&org()).unwrap();
    // Within the same upload window: the new version still gets its own object.
    f.append("ap-1", 2, &["after"]).unwrap();
    assert_eq!(f.hostnames(), ["after", "before"]);
    let by = |f: &Fixture| -> Vec<(u32, KeyState, u64)> {
        f.store.data_key_status(&org()).unwrap().iter().map(|s| (s.version, s.state, s.segments)).collect()
    };
    assert_eq!(by(&f), [(1, KeyState::Retiring, 1), (2, KeyState::Current, 1)]);
    let run = f.store.reencrypt(10).unwrap();
    assert_eq!((run.segments, run.remaining), (1, 0));
    assert_eq!(f.hostnames(), ["after", "before"]);
    assert_eq!(f.segment_objects().len(), 2, "the old object replaced, not kept beside");
    assert_eq!(f.store.reencrypt(10).unwrap().retired, [(org(), 1)]);
    assert_eq!(by(&f), [(1, KeyState::Retired, 0), (2, KeyState::Current, 2)]);
    assert_eq!(f.hostnames(), ["after", "before"]);
}
