//! Segments in a real S3-compatible object store (Garage, see
//! `glimpse_tests::garage`), through a real `glimpse_store::store::Store`
//! composed with `glimpse_objects::ObjectSegments` (the control plane stays
//! the local redb one): acknowledgement only after upload, reads, the
//! catalog check, retention, erasure and a crash in the middle of it, and a
//! three-node cluster losing one node, then all of them.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use glimpse_common::bounded::BoundedString;
use glimpse_common::clock::{utc_day, Clock, ManualClock, SystemClock, MILLIS_PER_DAY};
use glimpse_common::identity::{DeviceId, DeviceIdentity, DeviceKind, OrgId};
use glimpse_common::record::{DataKind, DeviceMetadata, Record, RecordBody};
use glimpse_objects::object_store::path::Path;
use glimpse_objects::object_store::{
    self, CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use glimpse_objects::{ObjectSegments, ObjectStoreConfig};
use glimpse_store::keys::MasterKey;
use glimpse_store::retention::RetentionPolicy;
use glimpse_store::store::seam::SegmentStore;
use glimpse_store::store::{Store, StoreError};
use glimpse_tests::garage::Garage;
use glimpse_tests::DEADLINE;
use tempfile::TempDir;

/// A store whose segments are in the bucket; keys and catalog local.
struct Harness {
    _dir: TempDir,
    clock: ManualClock,
    segments: Arc<ObjectSegments>,
    store: Store,
}

impl Harness {
    fn new(config: &ObjectStoreConfig) -> Harness {
        let clock = ManualClock::new(SystemClock.now_millis());
        let segments = Arc::new(ObjectSegments::open(config, Arc::new(clock.clone())).expect("open object store"));
        Harness::over(clock, segments)
    }

    fn over(clock: ManualClock, segments: Arc<ObjectSegments>) -> Harness {
        wait_ready(&segments);
        segments.recover(&|_| None).expect("recover");
        let dir = tempfile::tempdir().expect("tempdir");
        let master = MasterKey::generate_file(&dir.path().join("master.key")).expect("master key");
        let local = Store::open(&dir.path().join("data"), master, Arc::new(clock.clone()), RetentionPolicy::default())
            .expect("open store");
        let mut parts = local.into_parts();
        parts.segments = Arc::clone(&segments) as Arc<dyn SegmentStore>;
        Harness { _dir: dir, clock, segments, store: Store::from_parts(parts) }
    }

    fn append(&self, device: &str, seq: u64, hostnames: &[String]) -> Result<(), StoreError> {
        let records: Vec<Record> = hostnames.iter().map(|h| record(h)).collect();
        self.store.append(&identity(device), 1, seq, &records).map(|_| ())
    }

    /// Every hostname served, sorted; no problem may be met.
    fn hostnames(&self) -> Vec<String> {
        let outcome = self.store.read(&org(), DataKind::Metadata, None, None).expect("read");
        assert!(outcome.problems.is_empty(), "{:?}", outcome.problems);
        let mut names: Vec<String> = outcome.records.iter().map(|r| hostname(&r.record)).collect();
        names.sort();
        names
    }

    fn verify_problems(&self) -> Vec<String> {
        let report = self.store.verify(Some(&org())).expect("verify");
        report.iter().flat_map(|(_, _, r)| r.problems.iter().map(|p| p.to_string())).collect()
    }
}

/// Waits until the store answers (Garage opens its port before its layout
/// is everywhere).
fn wait_ready(segments: &ObjectSegments) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        match segments.check() {
            Ok(()) => return,
            Err(e) if Instant::now() >= deadline => panic!("the object store never became ready: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

fn org() -> OrgId {
    OrgId::new("acme").unwrap()
}

fn identity(device: &str) -> DeviceIdentity {
    DeviceIdentity { org: org(), device: DeviceId::new(device).unwrap(), kind: DeviceKind::Ap }
}

fn record(hostname: &str) -> Record {
    Record {
        observed_at_ms: 1_700_000_000_000,
        body: RecordBody::Metadata(DeviceMetadata {
            hostname: BoundedString::truncating(hostname),
            ..Default::default()
        }),
    }
}

fn hostname(record: &Record) -> String {
    match &record.body {
        RecordBody::Metadata(m) => m.hostname.as_str().to_owned(),
        _ => String::new(),
    }
}

/// Every object under the bucket's root, sorted (through a client of its own).
fn objects(config: &ObjectStoreConfig) -> Vec<String> {
    let store = glimpse_objects::connect(config).expect("connect");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let listed: Vec<ObjectMeta> = runtime.block_on(async {
        let mut all = Vec::new();
        let mut stream = store.list(None);
        while let Some(meta) = stream.next().await {
            all.push(meta.expect("list"));
        }
        all
    });
    let mut paths: Vec<String> = listed.into_iter().map(|m| m.location.to_string()).collect();
    paths.sort();
    paths
}

fn delete_object(config: &ObjectStoreConfig, path: &str) {
    use glimpse_objects::object_store::ObjectStoreExt;

    let store = glimpse_objects::connect(config).expect("connect");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(store.delete(&Path::from(path))).expect("delete");
}

#[test]
fn batches_are_acknowledged_once_uploaded_and_read_back_by_any_collector() {
    let Some(garage) = Garage::start(1) else { return };
    let config = garage.config();
    let h = Harness::new(&config);
    std::thread::scope(|scope| {
        for thread in 0..4 {
            let h = &h;
            scope.spawn(move || {
                for seq in 1..=20u64 {
                    let names: Vec<String> = (0..5).map(|i| format!("h{thread}-{seq}-{i}")).collect();
                    h.append(&format!("ap-{thread}"), seq, &names).expect("append");
                }
            });
        }
    });
    assert_eq!(h.segments.pending_bytes(), 0);
    assert_eq!(h.hostnames().len(), 400);
    assert!(h.verify_problems().is_empty(), "{:?}", h.verify_problems());

    let objects = objects(&config);
    let day = glimpse_common::clock::format_day(utc_day(h.clock.now_millis()));
    assert!(!objects.is_empty() && objects.len() <= 80, "{objects:?}");
    for object in &objects {
        assert!(object.starts_with(&format!("orgs/acme/metadata/{day}/")) && object.ends_with(".seg"), "{object}");
    }

    // A second collector on the same bucket lists the same segments.
    let other = ObjectSegments::open(&config, Arc::new(h.clock.clone())).expect("open");
    let mut ignored = Vec::new();
    let day = utc_day(h.clock.now_millis());
    let mine = h.segments.segments(&org(), DataKind::Metadata, day, &mut ignored).unwrap();
    let theirs = other.segments(&org(), DataKind::Metadata, day, &mut ignored).unwrap();
    assert_eq!(mine, theirs);
    assert!(ignored.is_empty(), "{ignored:?}");
}

#[test]
fn a_deleted_object_is_named_by_the_catalog_check_and_retention_deletes_whole_days() {
    let Some(garage) = Garage::start(1) else { return };
    let config = garage.config();
    let h = Harness::new(&config);
    let first_day = utc_day(h.clock.now_millis());
    h.append("ap-1", 1, &["old".into()]).unwrap();
    h.clock.advance(MILLIS_PER_DAY);
    h.append("ap-1", 2, &["new-1".into()]).unwrap();
    h.append("ap-1", 3, &["new-2".into()]).unwrap();
    assert_eq!(h.hostnames(), ["new-1", "new-2", "old"]);

    // An acknowledged object deleted behind the store's back is reported
    // with its URL and what it held.
    let victim =
        objects(&config).into_iter().find(|p| !p.contains(&glimpse_common::clock::format_day(first_day))).unwrap();
    delete_object(&config, &victim);
    let problems = h.verify_problems();
    assert!(
        problems
            .iter()
            .any(|p| p.contains(&format!("s3://{}/{victim}", garage.bucket)) && p.contains("missing segment")),
        "{problems:?}"
    );

    // Retention: the first day goes, every object of it.
    let freed = h.segments.delete_day(&org(), DataKind::Metadata, first_day).unwrap();
    h.store.forget_segments(&org(), Some((DataKind::Metadata, first_day)));
    assert_eq!(freed.segments, 1);
    assert!(freed.bytes > 0);
    let left = objects(&config);
    assert!(left.iter().all(|p| !p.contains(&glimpse_common::clock::format_day(first_day))), "{left:?}");
    assert_eq!(h.segments.days(&org(), DataKind::Metadata, &mut Vec::new()).unwrap(), [first_day + 1]);
    let outcome = h.store.read(&org(), DataKind::Metadata, None, None).unwrap();
    assert_eq!(outcome.records.len(), 1);

    // An organisation's deletion leaves nothing of it.
    h.segments.delete_org(&org()).unwrap();
    assert!(objects(&config).is_empty(), "{:?}", objects(&config));
}

/// The bucket's client, but once `left` changes are made every later one
/// fails, as if the collector making them had died there.
#[derive(Debug)]
struct CrashAfter {
    inner: Arc<dyn ObjectStore>,
    left: Arc<AtomicUsize>,
    /// Reads fail too once crashed (the collector is gone altogether).
    reads_die: Arc<std::sync::atomic::AtomicBool>,
}

/// Counts a change (`usize::MAX` left: no crash planned).
fn change(left: &AtomicUsize) -> object_store::Result<()> {
    let now = left.load(Ordering::SeqCst);
    if now == 0 {
        return Err(object_store::Error::Generic { store: "CrashAfter", source: "crashed".into() });
    }
    if now != usize::MAX {
        left.store(now - 1, Ordering::SeqCst);
    }
    Ok(())
}

impl fmt::Display for CrashAfter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CrashAfter({})", self.inner)
    }
}

#[async_trait::async_trait]
impl ObjectStore for CrashAfter {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        change(&self.left)?;
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        change(&self.left)?;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> object_store::Result<GetResult> {
        if self.reads_die.load(Ordering::SeqCst) && self.left.load(Ordering::SeqCst) == 0 {
            return Err(object_store::Error::Generic { store: "CrashAfter", source: "crashed".into() });
        }
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        // A single DELETE comes this way too: each path is a change.
        let left = Arc::clone(&self.left);
        self.inner.delete_stream(locations.map(move |path| change(&left).and(path)).boxed())
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> object_store::Result<()> {
        change(&self.left)?;
        self.inner.copy_opts(from, to, options).await
    }
}

fn erase(store: &Store) -> Result<glimpse_store::store::EraseReport, StoreError> {
    store.erase_where(&org(), DataKind::Metadata, &|r| hostname(&r.record).starts_with("drop"))
}

#[test]
fn an_erase_replaces_objects_and_recover_settles_a_crash_in_the_middle_of_it() {
    let Some(garage) = Garage::start(1) else { return };
    let mut config = garage.config();
    config.prefix = Some("erase".into());
    let crash = Arc::new(CrashAfter {
        inner: glimpse_objects::connect(&config).unwrap(),
        left: Arc::new(usize::MAX.into()),
        reads_die: Arc::default(),
    });
    let clock = ManualClock::new(SystemClock.now_millis());
    let segments =
        ObjectSegments::with_store(Arc::clone(&crash) as Arc<dyn ObjectStore>, &config, Arc::new(clock.clone()));
    let h = Harness::over(clock, Arc::new(segments.unwrap()));
    h.append("ap-1", 1, &["keep-1".into(), "drop-1".into()]).unwrap();
    h.append("ap-1", 2, &["keep-2".into()]).unwrap();
    let before = objects(&config);
    let report = erase(&h.store).unwrap();
    assert_eq!((report.records, report.segments_rewritten), (1, 1));
    assert_eq!(h.hostnames(), ["keep-1", "keep-2"]);
    let after = objects(&config);
    assert_eq!(after.len(), before.len());
    assert_ne!(after, before, "the rewritten segment has a new name");
    assert!(h.verify_problems().is_empty(), "{:?}", h.verify_problems());

    // Crashes: after the old object was deleted (3 changes: intent, staged,
    // delete), and before it (2 changes).
    let mut keeps = 2;
    for (changes, deleted) in [(3, true), (2, false)] {
        // With a record that stays, so the segment is replaced, not deleted.
        keeps += 1;
        h.append("ap-1", 10 + changes as u64, &[format!("keep-{keeps}"), "drop-again".into()]).unwrap();
        crash.left.store(changes, Ordering::SeqCst);
        erase(&h.store).unwrap_err();
        crash.left.store(usize::MAX, Ordering::SeqCst);
        // Every collector serves each record once, at once: the new version
        // if the old one is gone, the old one otherwise.
        let names = h.hostnames();
        assert_eq!(names.contains(&"drop-again".to_owned()), !deleted, "{names:?}");
        assert_eq!(names.iter().filter(|n| n.starts_with("keep")).count(), keeps, "{names:?}");
        assert!(objects(&config).iter().any(|p| p.ends_with(".staged")), "{:?}", objects(&config));

        // A restart's recover: completes the first at once; the second only
        // once it is stale (a younger one may be another collector's,
        // still under way).
        let restarted = ObjectSegments::open(&config, Arc::new(h.clock.clone())).unwrap();
        restarted.recover(&|_| None).unwrap();
        if !deleted {
            assert!(objects(&config).iter().any(|p| p.contains("rewrites/")));
            h.clock.advance(glimpse_objects::rewrite::STALE_REWRITE_MS);
            restarted.recover(&|_| None).unwrap();
        }
        let left = objects(&config);
        assert!(left.iter().all(|p| !p.ends_with(".staged") && !p.contains("rewrites/")), "{left:?}");
        let names = h.hostnames();
        assert_eq!(names.contains(&"drop-again".to_owned()), !deleted, "{names:?}");
        // And the erase, run again, finishes the job.
        erase(&h.store).unwrap();
        let expected: Vec<String> = (1..=keeps).map(|k| format!("keep-{k}")).collect();
        assert_eq!(h.hostnames(), expected);
    }
}

/// A collector's store over Garage and PostgreSQL: the segment catalog and
/// stream sequences in the database, as in a cluster.
struct Distributed {
    dir: TempDir,
    clock: ManualClock,
    segments: Arc<ObjectSegments>,
    store: Store,
}

fn pg_config(pg: &glimpse_tests::postgres::Postgres) -> glimpse_postgres::PostgresConfig {
    glimpse_postgres::PostgresConfig {
        tls: glimpse_postgres::PgTls::Disable,
        timeout_ms: 5_000,
        ..glimpse_postgres::PostgresConfig::new(pg.url())
    }
}

impl Distributed {
    /// A collector (a new one, or this one restarted: `dir` keeps the
    /// master key) on `segments`.
    fn open(
        pg: &glimpse_tests::postgres::Postgres,
        clock: ManualClock,
        segments: Arc<ObjectSegments>,
        dir: TempDir,
    ) -> Distributed {
        wait_ready(&segments);
        let key_file = dir.path().join("master.key");
        let master = if key_file.exists() {
            MasterKey::load(&key_file).expect("master key")
        } else {
            MasterKey::generate_file(&key_file).expect("master key")
        };
        let control = Arc::new(glimpse_postgres::PgControl::connect(&pg_config(pg)).expect("connect"));
        let store = Store::open_with_control(
            &dir.path().join("data"),
            control,
            std::path::PathBuf::from("postgresql"),
            Some(Arc::clone(&segments) as Arc<dyn SegmentStore>),
            false,
            master,
            Arc::new(clock.clone()),
            RetentionPolicy::default(),
        )
        .expect("open store");
        Distributed { dir, clock, segments, store }
    }

    fn append(&self, device: &str, seq: u64, hostnames: &[String]) {
        let records: Vec<Record> = hostnames.iter().map(|h| record(h)).collect();
        self.store.append(&identity(device), 1, seq, &records).expect("append");
    }

    /// What an export serves after `cursor` (all from the start without
    /// one), with each record's cursor, in order; no problem may be met.
    fn export(&self, cursor: Option<&str>) -> Vec<(String, String)> {
        use glimpse_store::export::ExportCursor;
        let mark = cursor.map(|c| ExportCursor::decode(c, DataKind::Metadata).expect("cursor").mark);
        let mut out = Vec::new();
        let problems = self
            .store
            .read_after(&org(), DataKind::Metadata, (None, None), mark.as_ref(), &mut |mark, record| {
                out.push((ExportCursor { kind: DataKind::Metadata, mark }.encode(), hostname(&record.record)));
                std::ops::ControlFlow::Continue(())
            })
            .expect("read");
        assert!(problems.is_empty(), "{problems:?}");
        out
    }

    fn verify_clean(&self) {
        let report = self.store.verify(Some(&org())).expect("verify");
        let problems: Vec<String> =
            report.iter().flat_map(|(_, _, r)| r.problems.iter().map(|p| p.to_string())).collect();
        assert!(problems.is_empty(), "{problems:?}");
    }

    fn compact(&self, config: &ObjectStoreConfig) -> (glimpse_store::store::seam::Compacted, u64) {
        let (target, after) = config.compaction().expect("compaction on");
        self.store.compact(target, after, 1_000).expect("compact")
    }
}

/// The objects under `config`'s prefix.
fn objects_here(config: &ObjectStoreConfig) -> Vec<String> {
    let prefix = format!("{}/", config.prefix.as_deref().unwrap_or_default());
    objects(config).into_iter().filter(|p| p.starts_with(&prefix)).collect()
}

fn segment_objects(config: &ObjectStoreConfig) -> usize {
    objects_here(config).iter().filter(|p| p.contains("/orgs/") && p.ends_with(".seg")).count()
}

fn leftovers(config: &ObjectStoreConfig) -> Vec<String> {
    objects_here(config).into_iter().filter(|p| p.ends_with(".compact") || p.contains("/rewrites/")).collect()
}

/// Many small batches (one object each, from several appenders), then
/// compaction: the objects drop to a few and every export, resumed from any
/// cursor, serves exactly the same records once, during and after it.
#[test]
fn compaction_merges_many_small_objects_and_exports_serve_every_record_once() {
    let Some(garage) = Garage::start(1) else { return };
    let Some(pg) = glimpse_tests::postgres::Postgres::start() else { return };
    glimpse_postgres::PgControl::migrate(&pg_config(&pg)).expect("migrate");
    let mut config = garage.config();
    config.prefix = Some("compact".into());
    let clock = ManualClock::new(SystemClock.now_millis());
    let segments = Arc::new(ObjectSegments::open(&config, Arc::new(clock.clone())).expect("open"));
    let c = Distributed::open(&pg, clock, segments, tempfile::tempdir().unwrap());
    std::thread::scope(|scope| {
        for thread in 0..4 {
            let c = &c;
            scope.spawn(move || {
                for seq in 1..=60u64 {
                    let names: Vec<String> = (0..3).map(|i| format!("h{thread}-{seq:02}-{i}")).collect();
                    c.append(&format!("ap-{thread}"), seq, &names);
                }
            });
        }
    });
    let before = c.export(None);
    assert_eq!(before.len(), 720);
    let objects_before = segment_objects(&config);
    assert!(objects_before > 20, "{objects_before}");
    // Cursors handed out before the compaction, spread over the sources.
    let cursors: Vec<usize> = vec![0, 1, 100, 359, 360, 500, 718];
    let names = |from: &[(String, String)]| from.iter().map(|(_, n)| n.clone()).collect::<Vec<_>>();
    let check = |stage: &str| {
        assert_eq!(names(&c.export(None)), names(&before), "{stage}");
        for &at in &cursors {
            assert_eq!(names(&c.export(Some(&before[at].0))), names(&before[at + 1..]), "{stage}: after record {at}");
        }
        c.verify_clean();
    };

    assert_eq!(c.compact(&config).0.merges, 0, "nothing old enough yet");
    c.clock.advance(config.compact_after_ms as i64);
    let (first, failures) = c.compact(&config);
    assert_eq!(failures, 0);
    assert!(first.merges >= 1 && first.merged as usize == objects_before, "{first:?}");
    check("committed, in the listing grace");
    c.clock.advance(c.segments.listing_limit().as_millis() as i64 + 1);
    let (second, _) = c.compact(&config);
    assert_eq!(second.settled, first.merges, "{second:?}");
    let objects_after = segment_objects(&config);
    assert_eq!(objects_after as u64, first.merges);
    assert!(leftovers(&config).is_empty(), "{:?}", leftovers(&config));
    check("completed");
    // The catalog holds the merged objects' rows only.
    let rows = c.store.control().segment_rows("acme", "metadata").unwrap();
    assert_eq!(rows.len(), objects_after);
    assert_eq!(rows.iter().map(|(_, r)| r.records).sum::<u64>(), 720);
    eprintln!("compaction: {objects_before} objects of {} records before, {objects_after} after", before.len());
}

/// A collector stopped between the merged object's PUT and the catalog
/// switch, and one stopped between the switch and the deletes: every record
/// is served once meanwhile, and a restarted collector's runs settle it.
#[test]
fn a_compaction_cut_short_loses_nothing_serves_nothing_twice_and_is_settled_after_a_restart() {
    let Some(garage) = Garage::start(1) else { return };
    let mut config = garage.config();
    // (changes before the crash, whether the switch happened): the intent
    // and the merged object were PUT, and the collector died before the
    // catalog switch; or it switched and died at the commit's DELETE.
    for (round, (changes, switched)) in [(2usize, false), (2, true)].into_iter().enumerate() {
        // A database of its own each round: the catalog is the bucket's.
        let Some(pg) = glimpse_tests::postgres::Postgres::start() else { return };
        glimpse_postgres::PgControl::migrate(&pg_config(&pg)).expect("migrate");
        config.prefix = Some(format!("crash{round}"));
        let crash = Arc::new(CrashAfter {
            inner: glimpse_objects::connect(&config).unwrap(),
            left: Arc::new(usize::MAX.into()),
            reads_die: Arc::new((!switched).into()),
        });
        let clock = ManualClock::new(SystemClock.now_millis());
        let segments =
            ObjectSegments::with_store(Arc::clone(&crash) as Arc<dyn ObjectStore>, &config, Arc::new(clock.clone()));
        let c = Distributed::open(&pg, clock.clone(), Arc::new(segments.unwrap()), tempfile::tempdir().unwrap());
        for seq in 1..=12u64 {
            c.append(&format!("ap-{round}-{}", seq % 2), seq, &[format!("r{round}-{seq:02}")]);
        }
        let before = c.export(None);
        let objects_before = segment_objects(&config);
        c.clock.advance(config.compact_after_ms as i64);
        crash.left.store(changes, Ordering::SeqCst);
        let (done, failures) = c.compact(&config);
        assert_eq!((done.merges, failures), (0, 1), "round {round}");
        // The crashed collector is gone; another one (or it, restarted)
        // serves every record once from here on.
        let dir = c.dir;
        drop(c.store);
        let restarted = Arc::new(ObjectSegments::open(&config, Arc::new(clock.clone())).expect("open"));
        restarted.recover(&|_| None).expect("recover");
        let c = Distributed::open(&pg, clock, restarted, dir);
        let names = |from: &[(String, String)]| from.iter().map(|(_, n)| n.clone()).collect::<Vec<_>>();
        assert_eq!(names(&c.export(None)), names(&before), "round {round}");
        c.verify_clean();
        assert!(!leftovers(&config).is_empty(), "round {round}: the crash left its intent");
        // Its runs settle it: a switched one is committed at once (then
        // completed after the grace); one that never switched is rolled
        // back once it is stale, and merged afresh.
        let (first, _) = c.compact(&config);
        assert_eq!(first.settled, u64::from(switched), "round {round}: {first:?}");
        assert_eq!(names(&c.export(None)), names(&before), "round {round}");
        c.verify_clean();
        c.clock.advance(glimpse_objects::rewrite::STALE_REWRITE_MS);
        c.compact(&config);
        c.clock.advance(c.segments.listing_limit().as_millis() as i64 + 1);
        c.compact(&config);
        assert!(leftovers(&config).is_empty(), "round {round}: {:?}", leftovers(&config));
        assert_eq!(segment_objects(&config), 1, "round {round}: {objects_before} before: {:?}", objects_here(&config));
        assert_eq!(names(&c.export(None)), names(&before), "round {round}");
        c.verify_clean();
    }
}

#[test]
fn a_three_node_cluster_writes_with_a_node_down_and_refuses_quickly_with_all_down() {
    let Some(mut garage) = Garage::start(3) else { return };
    let mut config = garage.config();
    // Garage takes some 9 s to give up on a node that vanished, once, in
    // the first write after it: the timeout must cover that.
    config.request_timeout_ms = 20_000;
    let h = Harness::new(&config);
    let mut acknowledged = Vec::new();
    let mut seq = 0;
    let mut batch = |h: &Harness, acknowledged: &mut Vec<String>| {
        seq += 1;
        let names = vec![format!("batch-{seq}")];
        let result = h.append("ap-1", seq, &names);
        if result.is_ok() {
            acknowledged.extend(names);
        }
        result
    };
    for _ in 0..5 {
        batch(&h, &mut acknowledged).expect("all nodes up");
    }

    // One node of three down (not the one we talk to): a quorum remains.
    garage.kill(2);
    for _ in 0..5 {
        batch(&h, &mut acknowledged).expect("one node down");
    }

    // All down: refused, transiently, within the request timeout's reach.
    garage.kill(0);
    garage.kill(1);
    let started = Instant::now();
    let err = batch(&h, &mut acknowledged).unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    assert!(h.segments.check().is_err());
    assert_eq!(h.segments.pending_bytes(), 0, "failed uploads free their memory");

    // Back up: new batches are stored (once the cluster has found itself
    // again) and nothing acknowledged before is lost.
    for n in 0..3 {
        garage.restart(n);
    }
    wait_ready(&h.segments);
    let deadline = Instant::now() + DEADLINE;
    while let Err(e) = batch(&h, &mut acknowledged) {
        assert!(e.is_transient() && Instant::now() < deadline, "{e}");
        std::thread::sleep(Duration::from_millis(200));
    }
    acknowledged.sort();
    let served = h.hostnames();
    for name in &acknowledged {
        assert!(served.contains(name), "{name} was acknowledged but is not served: {served:?}");
    }
    assert!(h.verify_problems().is_empty(), "{:?}", h.verify_problems());
}

/// Not a check: the figures for docs/SCALING.md. Run with
/// `cargo test -p glimpse-tests --test objects -- --ignored --nocapture`.
#[test]
#[ignore]
fn measure_acknowledgement_latency_on_one_garage_node() {
    let Some(garage) = Garage::start(1) else { return };
    for (interval, threads) in [(5u64, 16usize), (25, 16), (50, 16), (100, 16), (25, 64)] {
        let mut config = garage.config();
        config.flush_interval_ms = interval;
        let prefix = format!("bench-{interval}-{threads}");
        config.prefix = Some(prefix.clone());
        let h = Harness::new(&config);
        let (batches, records) = (640 / threads as u64, 50usize);
        let started = Instant::now();
        let mut latencies: Vec<Duration> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let h = &h;
                    scope.spawn(move || {
                        (1..=batches)
                            .map(|seq| {
                                let names: Vec<String> = (0..records).map(|i| format!("host-{t}-{seq}-{i}")).collect();
                                let at = Instant::now();
                                h.append(&format!("ap-{t}"), seq, &names).expect("append");
                                at.elapsed()
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
        });
        let elapsed = started.elapsed();
        latencies.sort();
        let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
        let total = threads as u64 * batches * records as u64;
        let objects = objects(&config).iter().filter(|p| p.starts_with(&prefix)).count();
        eprintln!(
            "flush {interval:>3} ms, {threads} appenders: {:>7.0} records/s, {:>5.0} batches/s, ack p50 {:>6.1} ms, p99 {:>6.1} ms, \
             {objects} objects for {} batches",
            total as f64 / elapsed.as_secs_f64(),
            (threads as u64 * batches) as f64 / elapsed.as_secs_f64(),
            at(0.5).as_secs_f64() * 1e3,
            at(0.99).as_secs_f64() * 1e3,
            threads as u64 * batches,
        );
    }
}
