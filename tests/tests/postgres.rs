//! The PostgreSQL control plane against a real PostgreSQL server: the
//! migrations, the same contract as the embedded store, two collectors'
//! stores on one database (read-modify-writes that both keep, one linear
//! audit chain, change notifications), and an outage.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use glimpse_postgres::{PgControl, PgTls, PostgresConfig, LATEST_VERSION};
use glimpse_store::control::seam::{Change, ControlStore, DeviceRow, SegmentRow, StreamRange};
use glimpse_store::control::RedbControl;
use glimpse_tests::postgres::Postgres;
use glimpse_tests::DEADLINE;

fn config(pg: &Postgres) -> PostgresConfig {
    PostgresConfig { tls: PgTls::Disable, timeout_ms: 3_000, ..PostgresConfig::new(pg.url()) }
}

fn migrated(pg: &Postgres) -> PgControl {
    PgControl::migrate(&config(pg)).expect("migrate");
    PgControl::connect(&config(pg)).expect("connect")
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn migrations_apply_once_and_a_collector_refuses_an_unmigrated_database() {
    let Some(pg) = Postgres::start() else { return };
    let err = PgControl::connect(&config(&pg)).unwrap_err().to_string();
    assert!(err.contains("glimpse-collector migrate") && err.contains("version 0"), "{err}");

    let first = PgControl::migrate(&config(&pg)).unwrap();
    assert_eq!((first.from, first.version, first.applied.len()), (0, LATEST_VERSION, LATEST_VERSION as usize));
    let again = PgControl::migrate(&config(&pg)).unwrap();
    assert!(again.applied.is_empty(), "{again:?}");
    PgControl::connect(&config(&pg)).expect("connects once migrated");

    // A migration edited after it was applied is caught.
    pg.psql("UPDATE glimpse_migrations SET sha256 = repeat('0', 64) WHERE version = 1");
    let err = PgControl::connect(&config(&pg)).unwrap_err().to_string();
    assert!(err.contains("edited"), "{err}");
}

#[test]
fn the_postgres_store_keeps_the_embedded_stores_contract() {
    let Some(pg) = Postgres::start() else { return };
    let ours = migrated(&pg);
    let embedded = RedbControl::from_dump(&Default::default()).unwrap();
    let a = contract(&ours);
    let b = contract(&embedded);
    assert_eq!(a, b, "the same operations give the same answers");
}

/// Runs one sequence of operations and returns every answer, to compare
/// two implementations.
fn contract(store: &dyn ControlStore) -> Vec<String> {
    let mut seen = Vec::new();
    let mut note = |v: String| seen.push(v);
    note(format!("{:?}", store.meta_or_insert("master-check", b"one").unwrap()));
    note(format!("{:?}", store.meta_or_insert("master-check", b"two").unwrap()));

    let row = |org: &str, device: &str, b: u8| DeviceRow { org: org.into(), device: device.into(), row: vec![b; 3] };
    store.put_devices(&[row("zeta", "ap-2", 1), row("acme", "ap-9", 2), row("acme", "ap-10", 3)]).unwrap();
    store.put_devices(&[row("acme", "ap-9", 4)]).unwrap();
    note(format!("{:?}", store.devices().unwrap()));
    note(format!("{:?}", store.device("acme", "ap-9").unwrap()));
    note(format!("{:?}", store.device("acme", "nobody").unwrap()));
    note(format!("{:?}", store.update_device("acme", "ap-9", &mut |r| Some([r, b"+"].concat())).unwrap()));
    note(format!("{:?}", store.update_device("acme", "ap-9", &mut |_| None).unwrap()));
    note(format!("{:?}", store.update_device("acme", "nobody", &mut |_| Some(vec![1])).unwrap()));
    note(format!("{:?}", store.device("acme", "ap-9").unwrap()));

    store.set_ssh_key("acme", "sw-1", Some("ssh-ed25519 AAAA sw-1")).unwrap();
    note(format!("{:?}", store.ssh_key("acme", "sw-1").unwrap()));
    store.set_ssh_key("acme", "sw-1", None).unwrap();
    note(format!("{:?}", store.ssh_key("acme", "sw-1").unwrap()));

    let stream = u64::MAX - 5;
    let key = ("acme".to_owned(), "ap-9".to_owned(), stream);
    let segment = ("acme".to_owned(), "metadata".to_owned(), 20_415, "00000001-abcd".to_owned());
    let range = |first, last| SegmentRow {
        records: 10,
        blocks: 1,
        bytes: 100 * last,
        streams: vec![StreamRange { device: "ap-9".into(), stream, first, last, records: 10 }],
        more_streams: false,
    };
    store.raise_stored_seqs(&[(key.clone(), 7)], &[(segment.clone(), range(1, 7))]).unwrap();
    store.raise_stored_seqs(&[(key.clone(), 3)], &[(segment.clone(), range(8, 9))]).unwrap();
    note(format!("{}", store.stored_seq("acme", "ap-9", stream).unwrap()));
    note(format!("{}", store.stored_seq("acme", "ap-9", 1).unwrap()));
    note(format!("{:?}", store.segment_rows("acme", "metadata").unwrap()));
    note(format!("{:?}", store.segment_rows("acme", "capture").unwrap()));
    let other = ("acme".to_owned(), "metadata".to_owned(), 20_416, "00000002-ef01".to_owned());
    store.replace_segment_rows(std::slice::from_ref(&segment), &[(other.clone(), range(1, 1))]).unwrap();
    note(format!("{:?}", store.segment_rows("acme", "metadata").unwrap()));

    note(format!("{:?}", store.insert_org_key_if_absent("acme", b"wrapped-1").unwrap()));
    note(format!("{:?}", store.insert_org_key_if_absent("acme", b"wrapped-2").unwrap()));
    store.insert_org_key_if_absent("beta", b"wrapped-3").unwrap();
    note(format!("{:?}", store.org_key_names().unwrap()));
    note(format!("{:?}", store.remove_org_key("beta").unwrap()));
    note(format!("{:?}", store.remove_org_key("beta").unwrap()));
    note(format!("{:?}", store.org_key("acme").unwrap()));
    note(format!("{:?}", store.replace_org_key("acme", b"not-it", b"wrapped-4").unwrap()));
    note(format!("{:?}", store.replace_org_key("acme", b"wrapped-1", b"wrapped-4").unwrap()));
    note(format!("{:?}", store.replace_org_key("beta", b"wrapped-3", b"wrapped-5").unwrap()));
    note(format!("{:?}", store.org_key("acme").unwrap()));

    note(format!("{:?}", store.update_policy("acme", &mut |r| Some([r.unwrap_or_default(), b"c"].concat())).unwrap()));
    note(format!("{:?}", store.update_policy("acme", &mut |r| Some([r.unwrap_or_default(), b"g"].concat())).unwrap()));
    note(format!("{:?}", store.update_policy("acme", &mut |_| None).unwrap()));
    note(format!("{:?}", store.update_policy("none", &mut |_| None).unwrap()));
    store.put_policy("beta", b"p").unwrap();
    note(format!("{:?}", store.policies().unwrap()));
    note(format!("{:?}", store.policy("beta").unwrap()));

    note(format!("{:?}", store.replace_state("retention", "a").unwrap()));
    note(format!("{:?}", store.replace_state("retention", "b").unwrap()));
    note(format!("{:?}", store.replace_state("retention", "b").unwrap()));
    store.replace_state("api-token:2", "y").unwrap();
    store.replace_state("api-token:1", "x").unwrap();
    store.replace_state("api-tokens", "not one").unwrap();
    note(format!("{:?}", store.states_with_prefix("api-token:").unwrap()));
    note(format!("{:?}", store.state("nothing").unwrap()));

    note(format!("{:?}", store.audit_head().unwrap()));
    store.set_audit_head(&[1; 40]).unwrap();
    note(format!("{:?}", store.audit_head().unwrap()));
    store.ping().unwrap();
    seen
}

#[test]
fn two_collectors_on_one_database_keep_both_changes_and_one_audit_chain() {
    let Some(pg) = Postgres::start() else { return };
    let key = glimpse_store::audit::derive_audit_key(&glimpse_common::secret::SecretKey::from_bytes([7; 32]));
    let a: Arc<dyn ControlStore> = Arc::new(migrated(&pg));
    let b: Arc<dyn ControlStore> = Arc::new(PgControl::connect(&config(&pg)).unwrap());

    // Decisions: consent on one collector, a grant (of captures on one
    // device) on the other, at once; the grant's scope is stored with it.
    let policies_a = glimpse_store::control::Policies::open(Arc::clone(&a)).unwrap();
    let policies_b = glimpse_store::control::Policies::open(Arc::clone(&b)).unwrap();
    let org = glimpse_common::identity::OrgId::new("acme").unwrap();
    use glimpse_common::wire::admin::{GrantKind, GrantScope};
    let ap = glimpse_common::identity::DeviceId::new("ap-1").unwrap();
    let scope = GrantScope::new([GrantKind::Captures], [ap]).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| policies_a.set_consent(&org, true, 1_000).unwrap());
        s.spawn(|| policies_b.grant_support(&org, 4, &scope, 1_000).unwrap());
    });
    let both = glimpse_store::control::Policies::open(Arc::clone(&a)).unwrap().get(&org);
    assert!(both.capture_consent && both.support_until_ms.is_some(), "{both:?}");
    assert_eq!((both.support_scope, both.support_granted_at_ms), (scope, Some(1_000)));

    // One chain, appended from both at once.
    let dir_a = tempfile::tempdir().unwrap();
    let dir_b = tempfile::tempdir().unwrap();
    let log_a = glimpse_store::audit::AuditLog::open(dir_a.path(), key.clone(), Arc::clone(&a)).unwrap();
    let log_b = glimpse_store::audit::AuditLog::open(dir_b.path(), key.clone(), Arc::clone(&b)).unwrap();
    std::thread::scope(|s| {
        for (name, log) in [("a", &log_a), ("b", &log_b)] {
            s.spawn(move || {
                for i in 0..40 {
                    log.append(
                        i,
                        &format!("collector-{name}"),
                        "test.append",
                        Some("acme"),
                        glimpse_store::audit::AuditOutcome::Done,
                        "",
                    )
                    .unwrap();
                }
            });
        }
    });
    assert_eq!(log_a.verify().unwrap().entries, 80);
    assert_eq!(log_b.verify().unwrap().entries, 80);
    assert!(!dir_a.path().join("audit.log").exists(), "the lines are in the database, not a file");
    let entries = log_b.entries(Some("acme"), 0, 1_000).unwrap();
    assert_eq!(entries.iter().map(|e| e.seq).collect::<Vec<_>>(), (1..=80).collect::<Vec<_>>());

    // Editing a line in the database is caught.
    let edited = pg.psql(
        "UPDATE glimpse_audit_lines SET line = convert_to(replace(convert_from(line, 'UTF8'), 'collector-a', 'collector-x'), 'UTF8') \
         WHERE seq = (SELECT min(seq) FROM glimpse_audit_lines WHERE position('collector-a' in convert_from(line, 'UTF8')) > 0) \
         RETURNING seq",
    );
    let seq = edited.lines().next().unwrap_or_default().trim().to_owned();
    let err = log_a.verify().unwrap_err().to_string();
    assert!(err.contains(&format!("seq {seq}")) && err.contains("bad mac"), "{err}");
}

#[test]
fn a_change_on_one_collector_is_heard_on_the_other() {
    let Some(pg) = Postgres::start() else { return };
    let a = migrated(&pg);
    let b = PgControl::connect(&config(&pg)).unwrap();
    let heard: Arc<Mutex<Vec<Change>>> = Arc::default();
    let sink = Arc::clone(&heard);
    b.watch(Arc::new(move |change: &Change| sink.lock().unwrap().push(change.clone())));
    // The listener connects in the background; changes before it listens
    // are not heard, so keep changing until one is.
    let rounds = AtomicUsize::new(0);
    wait_for("a policy change to be heard", || {
        a.put_policy("acme", &[rounds.fetch_add(1, Ordering::SeqCst) as u8]).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        heard.lock().unwrap().contains(&Change::Policy("acme".into()))
    });
    a.put_devices(&[DeviceRow { org: "acme".into(), device: "ap-1".into(), row: vec![1] }]).unwrap();
    a.insert_org_key_if_absent("acme", b"k").unwrap();
    a.replace_state("api-token:7", "{}").unwrap();
    let expected = [
        Change::Device { org: "acme".into(), device: "ap-1".into() },
        Change::OrgKey("acme".into()),
        Change::State("api-token:7".into()),
    ];
    wait_for("every change to be heard", || expected.iter().all(|c| heard.lock().unwrap().contains(c)));

    // A restart of the database: the listener comes back and says that
    // changes may have been missed.
    let mut pg = pg;
    pg.kill();
    pg.start_server();
    wait_for("the listener to report a reconnect", || heard.lock().unwrap().contains(&Change::Everything));
    heard.lock().unwrap().clear();
    wait_for("changes to be heard again", || {
        a.put_policy("acme", b"after").ok();
        std::thread::sleep(std::time::Duration::from_millis(50));
        heard.lock().unwrap().contains(&Change::Policy("acme".into()))
    });
}

#[test]
fn an_outage_is_a_transient_error_and_the_store_comes_back_by_itself() {
    let Some(mut pg) = Postgres::start() else { return };
    let store = migrated(&pg);
    store.put_policy("acme", b"before").unwrap();
    pg.kill();
    let started = Instant::now();
    let err = store.policy("acme").unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(store.ping().unwrap_err().is_transient());
    // Bounded by the configured timeout, not hung: the generous margin is
    // for a slow machine, not a performance claim.
    assert!(started.elapsed() < DEADLINE, "{:?}", started.elapsed());
    pg.start_server();
    wait_for("the store to answer again", || store.policy("acme").is_ok());
    assert_eq!(store.policy("acme").unwrap().as_deref(), Some(&b"before"[..]), "committed rows survive");
}

#[test]
fn a_service_wide_lock_is_held_by_one_collector_at_a_time() {
    let Some(pg) = Postgres::start() else { return };
    let a = migrated(&pg);
    let b = PgControl::connect(&config(&pg)).unwrap();
    let order = Mutex::new(Vec::new());
    let held = a.exclusive("erase:acme:metadata").unwrap().expect("a guard");
    std::thread::scope(|s| {
        let waiter = s.spawn(|| {
            let guard = b.exclusive("erase:acme:metadata").unwrap();
            order.lock().unwrap().push("b took it");
            guard
        });
        // Another name is not held up.
        drop(b.exclusive("erase:acme:capture").unwrap());
        // Time for a broken lock to let the waiter through first.
        std::thread::sleep(std::time::Duration::from_millis(300));
        order.lock().unwrap().push("a let go");
        drop(held);
        drop(waiter.join().unwrap());
    });
    assert_eq!(*order.lock().unwrap(), ["a let go", "b took it"]);
    // Released: taken again at once.
    drop(a.exclusive("erase:acme:metadata").unwrap());
}

/// Master key rotation is refused on the shared control plane (every
/// collector holds the key in memory), before any key file is written,
/// and the keys stay usable under the old key.
#[test]
fn master_key_rotation_is_refused_on_the_shared_control_plane() {
    use glimpse_common::identity::OrgId;
    use glimpse_store::keys::{Catalog, KeyError, MasterKey};
    let Some(pg) = Postgres::start() else { return };
    let control: Arc<dyn ControlStore> = Arc::new(migrated(&pg));
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("master.key");
    let master = MasterKey::generate_file(&key_file).unwrap();
    let catalog = Catalog::with_control("postgres".into(), Arc::clone(&control), master).unwrap();
    let org = OrgId::new("acme").unwrap();
    catalog.org_keys().get_or_create(&org).unwrap();
    let before = std::fs::read(&key_file).unwrap();
    let err = catalog.rotate_master(&|_, _, _| Ok(None)).unwrap_err();
    assert!(matches!(err, KeyError::RotationUnavailable { .. }), "{err}");
    assert!(err.to_string().contains("shared by several collectors"), "{err}");
    assert!(!MasterKey::next_path(&key_file).exists());
    assert_eq!(std::fs::read(&key_file).unwrap(), before);
    catalog.org_keys().forget(None);
    assert!(catalog.org_keys().get(&org).unwrap().is_some());
    drop(catalog);
    Catalog::with_control("postgres".into(), control, MasterKey::load(&key_file).unwrap()).unwrap();
}

/// A data key rotated by one collector over the shared control plane: the
/// other, once it hears the change, reads the new version and still the
/// old; retirement is seen by both.
#[test]
fn a_data_key_rotation_on_one_collector_is_used_by_the_other() {
    use glimpse_common::identity::OrgId;
    use glimpse_store::keys::{Catalog, KeyState, MasterKey};
    let Some(pg) = Postgres::start() else { return };
    let a: Arc<dyn ControlStore> = Arc::new(migrated(&pg));
    let b_control = PgControl::connect(&config(&pg)).unwrap();
    let heard: Arc<Mutex<Vec<Change>>> = Arc::default();
    let sink = Arc::clone(&heard);
    b_control.watch(Arc::new(move |change: &Change| sink.lock().unwrap().push(change.clone())));
    let b: Arc<dyn ControlStore> = Arc::new(b_control);
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("master.key");
    MasterKey::generate_file(&key_file).unwrap();
    let one = Catalog::with_control("postgres".into(), a, MasterKey::load(&key_file).unwrap()).unwrap();
    let two = Catalog::with_control("postgres".into(), b, MasterKey::load(&key_file).unwrap()).unwrap();
    let org = OrgId::new("acme").unwrap();
    let first = one.org_keys().get_or_create(&org).unwrap();
    assert_eq!(two.org_keys().get(&org).unwrap().unwrap().version(), 1);
    let pseudonym = |c: &Catalog| ring::hmac::sign(&c.org_keys().pseudonym_key(&org).unwrap(), b"m").as_ref().to_vec();
    let before = pseudonym(&two);

    let rotated = one.org_keys().rotate(&org).unwrap();
    assert_eq!((rotated.previous, rotated.version), (1, 2));
    // A stale cache on the other collector until it hears the change.
    wait_for("the rotation to be heard", || heard.lock().unwrap().contains(&Change::OrgKey("acme".into())));
    two.org_keys().forget(Some(&org));
    let ring = two.org_keys().get(&org).unwrap().unwrap();
    assert_eq!(ring.version(), 2);
    assert_eq!(first.version(), 1);
    let states: Vec<_> = two.org_keys().versions(&org).unwrap().into_iter().map(|v| (v.version, v.state)).collect();
    assert_eq!(states, [(1, KeyState::Retiring), (2, KeyState::Current)]);
    assert_eq!(pseudonym(&two), before, "pseudonyms survive the rotation");

    // Both rotating at once: compare-and-set, so both rotations land.
    std::thread::scope(|s| {
        s.spawn(|| one.org_keys().rotate(&org).unwrap());
        s.spawn(|| two.org_keys().rotate(&org).unwrap());
    });
    let versions: Vec<_> = one.org_keys().versions(&org).unwrap().into_iter().map(|v| v.version).collect();
    assert_eq!(versions, [1, 2, 3, 4]);
    assert!(two.org_keys().retire(&org, 1).unwrap());
    assert!(!one.org_keys().retire(&org, 1).unwrap(), "retired once");
    one.org_keys().forget(None);
    assert_eq!(one.org_keys().get(&org).unwrap().unwrap().version(), 4);
    assert_eq!(pseudonym(&one), before);
}
