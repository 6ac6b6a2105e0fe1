//! The PostgreSQL control plane against a real PostgreSQL server: the
//! migrations, the same contract as the embedded store, two collectors'
//! stores on one database (read-modify-writes that both keep, one linear
//! audit chain, change notifications), and an outage.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use glimpse_postgres::{PgControl, PgTls, PostgresConfig, LATEST_VERSION};
use glimpse_store::control::seam::{AuditAppend, Change, ControlStore, DeviceRow, SegmentRow, SshKeyRow, StreamRange};
use glimpse_store::control::RedbControl;
use glimpse_tests::postgres::Postgres;
use glimpse_tests::DEADLINE;

fn config(pg: &Postgres) -> PostgresConfig {
    PostgresConfig { tls: PgTls::Disable, timeout_ms: 3_000, ..PostgresConfig::new(pg.url()) }
}

/// A collector's store with its configuration key installed (a
/// collector's key store does that when it opens: see `Catalog`).
fn connected(pg: &Postgres) -> PgControl {
    let store = PgControl::connect(&config(pg)).expect("connect");
    store.seal_values(glimpse_common::secret::SecretKey::from_bytes([9; 32])).expect("configuration key");
    store
}

fn migrated(pg: &Postgres) -> PgControl {
    PgControl::migrate(&config(pg)).expect("migrate");
    connected(pg)
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
    let key = |device: &str, line: Option<&str>| SshKeyRow {
        org: "acme".into(),
        device: device.into(),
        line: line.map(str::to_owned),
    };
    store.set_ssh_key("acme", "sw-4", Some("ssh-ed25519 AAAA sw-4")).unwrap();
    store
        .set_ssh_keys(&[
            key("sw-2", Some("ssh-ed25519 AAAA sw-2")),
            key("sw-3", Some("ssh-ed25519 AAAA sw-3")),
            key("sw-2", Some("ssh-ed25519 AAAA sw-2 again")),
            key("sw-4", None),
        ])
        .unwrap();
    for device in ["sw-2", "sw-3", "sw-4"] {
        note(format!("{:?}", store.ssh_key("acme", device).unwrap()));
    }
    store.set_ssh_keys(&[key("sw-3", None)]).unwrap();
    note(format!("{:?}", store.ssh_key("acme", "sw-3").unwrap()));

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
    let b: Arc<dyn ControlStore> = Arc::new(connected(&pg));

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
fn a_batch_of_ssh_keys_or_audit_lines_is_one_transaction_and_batches_keep_one_chain() {
    let Some(pg) = Postgres::start() else { return };
    let store = migrated(&pg);
    let key = |org: &str, device: &str, line: Option<&str>| SshKeyRow {
        org: org.into(),
        device: device.into(),
        line: line.map(str::to_owned),
    };
    // PostgreSQL refuses a NUL in text: the removal after the sets fails,
    // and the sets before it are rolled back with it.
    let sets: Vec<SshKeyRow> =
        (0..1500).map(|i| key("acme", &format!("sw-{i:04}"), Some(&format!("ssh-ed25519 AAAA {i}")))).collect();
    let mut batch = sets.clone();
    batch.push(key("ac\0me", "sw-x", None));
    store.set_ssh_keys(&batch).unwrap_err();
    assert_eq!(store.ssh_key("acme", "sw-0000").unwrap(), None, "nothing of a failed batch is kept");
    assert_eq!(store.ssh_key("acme", "sw-1499").unwrap(), None);
    store.set_ssh_keys(&sets).unwrap();
    assert_eq!(store.ssh_key("acme", "sw-1499").unwrap().as_deref(), Some("ssh-ed25519 AAAA 1499"));

    // A line already there past the first of a batch: none of the batch is
    // appended, nor its head.
    pg.psql("INSERT INTO glimpse_audit_lines (seq, line) VALUES (3, 'x')");
    let lines = [b"one".to_vec(), b"two".to_vec(), b"three".to_vec()];
    assert_eq!(store.append_audit_lines(1, &lines, &[1; 40]).unwrap(), AuditAppend::Taken);
    assert_eq!(store.audit_lines(0, 10).unwrap(), vec![(3, b"x".to_vec())]);
    assert_eq!(store.audit_head().unwrap(), None);
    pg.psql("DELETE FROM glimpse_audit_lines");

    // Batches from one collector and single entries from another, at once:
    // one linear chain.
    let a: Arc<dyn ControlStore> = Arc::new(store);
    let b: Arc<dyn ControlStore> = Arc::new(connected(&pg));
    let audit_key = glimpse_store::audit::derive_audit_key(&glimpse_common::secret::SecretKey::from_bytes([7; 32]));
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let log_a = glimpse_store::audit::AuditLog::open(dir_a.path(), audit_key.clone(), Arc::clone(&a)).unwrap();
    let log_b = glimpse_store::audit::AuditLog::open(dir_b.path(), audit_key, Arc::clone(&b)).unwrap();
    let details: Vec<String> = (0..glimpse_store::audit::APPEND_BATCH + 100).map(|i| format!("batched {i}")).collect();
    let drafts: Vec<glimpse_store::audit::AuditDraft<'_>> = details
        .iter()
        .map(|detail| glimpse_store::audit::AuditDraft {
            actor: "collector-a",
            action: "device.register",
            org: Some("acme"),
            outcome: glimpse_store::audit::AuditOutcome::Done,
            detail,
        })
        .collect();
    std::thread::scope(|s| {
        s.spawn(|| {
            for _ in 0..3 {
                assert_eq!(log_a.append_all(1, &drafts).unwrap(), drafts.len());
            }
        });
        s.spawn(|| {
            for i in 0..40 {
                log_b
                    .append(i, "collector-b", "test.append", None, glimpse_store::audit::AuditOutcome::Done, "")
                    .unwrap();
            }
        });
    });
    let total = 3 * drafts.len() as u64 + 40;
    assert_eq!(log_a.verify().unwrap().entries, total);
    assert_eq!(log_b.verify().unwrap().entries, total);
    let batched = log_b.entries(Some("acme"), 0, 10_000).unwrap();
    assert_eq!(batched.len(), 3 * drafts.len());
    // Each batch's entries stay in order, whatever came between slices.
    let order: Vec<&str> = batched.iter().map(|e| e.detail.as_str()).collect();
    let expected: Vec<&str> = (0..3).flat_map(|_| details.iter().map(String::as_str)).collect();
    assert_eq!(order, expected);
}

#[test]
fn a_change_on_one_collector_is_heard_on_the_other() {
    let Some(pg) = Postgres::start() else { return };
    let a = migrated(&pg);
    let b = connected(&pg);
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
    let b = connected(&pg);
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

/// Issue 21 item 10 on PostgreSQL: the configuration values (what
/// identifies a device, its SSH key, the decisions, tokens and accounts)
/// are sealed in the tables and on disk.
mod sealed {
    use super::*;
    use glimpse_common::identity::{DeviceId, DeviceIdentity, DeviceKind, OrgId};
    use glimpse_common::secret::SecretKey;
    use glimpse_store::keys::{Catalog, DeviceRegistration, KeyError, MasterKey, Resealer};

    const SERIAL: &str = "SERIAL-PLAINTEXT-0451";
    const SSH: &str = "ssh-ed25519 AAAAC3Nz comment-plaintext-ssh";
    const POLICY: &[u8] = b"POLICY-PLAINTEXT-consent";
    const STATE: &str = "{\"name\":\"STATE-PLAINTEXT\"}";
    const PLAINTEXTS: [&str; 4] = ["SERIAL-PLAINTEXT", "comment-plaintext-ssh", "POLICY-PLAINTEXT", "STATE-PLAINTEXT"];

    fn org(name: &str) -> OrgId {
        OrgId::new(name).unwrap()
    }

    /// A value only `org`'s data key gives (a MAC under its pseudonym key).
    fn key_of(c: &Catalog, name: &str) -> Vec<u8> {
        let key = c.org_keys().pseudonym_key(&org(name)).unwrap();
        ring::hmac::sign(&key, b"probe").as_ref().to_vec()
    }

    fn device(name: &str) -> DeviceId {
        DeviceId::new(name).unwrap()
    }

    /// A collector's key store on the shared database under `key_file`.
    fn collector(pg: &Postgres, key_file: &std::path::Path) -> Result<Catalog, KeyError> {
        let control: Arc<dyn ControlStore> = Arc::new(PgControl::connect(&config(pg)).expect("connect"));
        Catalog::with_control("postgres".into(), control, MasterKey::load(key_file)?)
    }

    fn register(catalog: &Catalog, name: &str, shared_key: &SecretKey) {
        catalog
            .registry()
            .upsert(DeviceRegistration {
                identity: DeviceIdentity { org: org("acme"), device: device(name), kind: DeviceKind::Ap },
                shared_key: shared_key.clone(),
                cert_serial: SERIAL.into(),
                revoked: false,
                site: None,
            })
            .unwrap();
    }

    /// Rows of the four sealed tables holding `text`, by a query.
    fn rows_showing(pg: &Postgres, text: &str) -> u64 {
        let out = pg.psql(&format!(
            "SELECT (SELECT count(*) FROM glimpse_devices WHERE position(convert_to('{text}', 'UTF8') in sealed) > 0)
                  + (SELECT count(*) FROM glimpse_device_ssh_keys WHERE position(convert_to('{text}', 'UTF8') in sealed) > 0)
                  + (SELECT count(*) FROM glimpse_org_policy WHERE position(convert_to('{text}', 'UTF8') in sealed) > 0)
                  + (SELECT count(*) FROM glimpse_state WHERE position(convert_to('{text}', 'UTF8') in sealed) > 0)"
        ));
        out.trim().parse().unwrap()
    }

    /// Files of the cluster's data directory (tables, WAL) holding `text`.
    fn files_showing(pg: &Postgres, text: &str) -> Vec<std::path::PathBuf> {
        fn walk(dir: &std::path::Path, text: &[u8], found: &mut Vec<std::path::PathBuf>) {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, text, found);
                } else if std::fs::read(&path).is_ok_and(|b| b.windows(text.len()).any(|w| w == text)) {
                    found.push(path);
                }
            }
        }
        let mut found = Vec::new();
        walk(&pg.data_dir(), text.as_bytes(), &mut found);
        found
    }

    #[test]
    fn configuration_values_are_sealed_in_the_tables_and_on_disk_and_a_moved_row_does_not_open() {
        let Some(pg) = Postgres::start() else { return };
        PgControl::migrate(&config(&pg)).expect("migrate");
        let keys = tempfile::tempdir().unwrap();
        let key_file = keys.path().join("master.key");
        MasterKey::generate_file(&key_file).unwrap();
        let catalog = collector(&pg, &key_file).unwrap();
        let control = catalog.control();
        register(&catalog, "ap-1", &SecretKey::generate().unwrap());
        register(&catalog, "ap-2", &SecretKey::generate().unwrap());
        catalog.registry().set_ssh_key(&org("acme"), &device("ap-1"), Some(SSH)).unwrap();
        control.put_policy("acme", POLICY).unwrap();
        control.put_policy("globex", b"other").unwrap();
        control.replace_state("console-account:ada", STATE).unwrap();

        // Everything reads back, on this collector and on another.
        let other = collector(&pg, &key_file).unwrap();
        for c in [&catalog, &other] {
            assert_eq!(c.registry().get(&org("acme"), &device("ap-1")).unwrap().unwrap().cert_serial, SERIAL);
            assert_eq!(c.registry().ssh_key(&org("acme"), &device("ap-1")).unwrap().as_deref(), Some(SSH));
            assert_eq!(c.control().policy("acme").unwrap().as_deref(), Some(POLICY));
            assert_eq!(c.control().state("console-account:ada").unwrap().as_deref(), Some(STATE));
        }
        // Not in the tables, and not in any file of the cluster (tables
        // and write-ahead log, after a checkpoint).
        pg.psql("CHECKPOINT");
        for text in PLAINTEXTS {
            assert_eq!(rows_showing(&pg, text), 0, "{text} readable in a table");
            assert!(files_showing(&pg, text).is_empty(), "{text} readable in {:?}", files_showing(&pg, text));
        }
        // The query and the scan would see it if it were there: the
        // organisation names are keys, stored as they are.
        assert!(!files_showing(&pg, "globex").is_empty());

        // A sealed value moved to another row does not open.
        pg.psql("UPDATE glimpse_org_policy SET sealed = (SELECT sealed FROM glimpse_org_policy WHERE org = 'acme') WHERE org = 'globex'");
        let err = control.policy("globex").unwrap_err().to_string();
        assert!(err.contains("does not open"), "{err}");
        assert!(control.policies().is_err(), "a listing with a moved row is refused, not partly served");
        pg.psql(
            "UPDATE glimpse_devices SET sealed = (SELECT sealed FROM glimpse_devices WHERE device = 'ap-1') WHERE device = 'ap-2'",
        );
        let err = control.device("acme", "ap-2").unwrap_err().to_string();
        assert!(err.contains("does not open"), "{err}");
        pg.psql("UPDATE glimpse_state SET name = 'console-account:eve' WHERE name = 'console-account:ada'");
        assert!(control.state("console-account:eve").is_err());
        // So does one sealed under another key: a collector whose
        // configuration key differs is refused at once.
        let stranger = PgControl::connect(&config(&pg)).unwrap();
        let err = stranger.seal_values(SecretKey::from_bytes([1; 32])).unwrap_err().to_string();
        assert!(err.contains("does not open the sealed values"), "{err}");
        // And a store that never installed the key reads nothing.
        let keyless = PgControl::connect(&config(&pg)).unwrap();
        assert!(keyless.policy("acme").is_err());
        assert!(keyless.put_policy("acme", b"plain").is_err());
    }

    /// A database an earlier Glimpse wrote (schema version 1, values
    /// plain): `migrate` and then collectors starting at once seal it
    /// once.
    #[test]
    fn a_plain_database_is_migrated_and_sealed_once_by_collectors_starting_together() {
        let Some(pg) = Postgres::start() else { return };
        let v1 = glimpse_postgres::MIGRATIONS[0];
        pg.psql(
            "CREATE TABLE glimpse_migrations (version integer PRIMARY KEY, name text NOT NULL, sha256 text NOT NULL, \
             applied_at timestamptz NOT NULL DEFAULT now())",
        );
        pg.psql(v1.sql);
        pg.psql(&format!(
            "INSERT INTO glimpse_migrations (version, name, sha256) \
             VALUES (1, '{}', encode(sha256(convert_to($glimpse_v1${}$glimpse_v1$, 'UTF8')), 'hex'))",
            v1.name, v1.sql
        ));
        pg.psql(&format!(
            "INSERT INTO glimpse_devices (org, device, row) VALUES ('acme', 'ap-1', convert_to('{SERIAL}', 'UTF8'));
             INSERT INTO glimpse_device_ssh_keys (org, device, line) VALUES ('acme', 'ap-1', '{SSH}');
             INSERT INTO glimpse_org_policy (org, row) VALUES ('acme', convert_to('POLICY-PLAINTEXT-consent', 'UTF8'));
             INSERT INTO glimpse_state (name, value) VALUES ('console-account:ada', '{STATE}')"
        ));
        let err = PgControl::connect(&config(&pg)).unwrap_err().to_string();
        assert!(err.contains("version 1") && err.contains("migrate"), "{err}");
        let report = PgControl::migrate(&config(&pg)).unwrap();
        assert_eq!((report.from, report.version), (1, LATEST_VERSION));
        // The SQL migration keeps the values (it has no key to seal them).
        assert_eq!(rows_showing(&pg, "PLAINTEXT"), 3, "the check sees plain values");
        assert_eq!(rows_showing(&pg, "comment-plaintext-ssh"), 1);

        let keys = tempfile::tempdir().unwrap();
        let key_file = keys.path().join("master.key");
        MasterKey::generate_file(&key_file).unwrap();
        let catalogs: Vec<Catalog> = std::thread::scope(|s| {
            let started: Vec<_> = (0..3).map(|_| s.spawn(|| collector(&pg, &key_file).unwrap())).collect();
            started.into_iter().map(|t| t.join().unwrap()).collect()
        });
        assert_eq!(rows_showing(&pg, "PLAINTEXT"), 0);
        assert_eq!(pg.psql("SELECT count(*) FROM glimpse_meta WHERE name = 'values-sealed'").trim(), "1");
        // Sealed once (twice would read back sealed bytes), on every collector.
        for c in &catalogs {
            let control = c.control();
            assert_eq!(control.device("acme", "ap-1").unwrap().as_deref(), Some(SERIAL.as_bytes()));
            assert_eq!(control.ssh_key("acme", "ap-1").unwrap().as_deref(), Some(SSH));
            assert_eq!(control.policy("acme").unwrap().as_deref(), Some(POLICY));
            assert_eq!(control.state("console-account:ada").unwrap().as_deref(), Some(STATE));
        }
        drop(catalogs);
        // A later start finds it sealed and reads the same.
        let again = collector(&pg, &key_file).unwrap();
        assert_eq!(again.control().policy("acme").unwrap().as_deref(), Some(POLICY));
    }

    const SEALED_STATE: &str = "console-totp:ada";

    fn reseal_hex(name: &str, value: &str, r: &Resealer<'_>) -> Result<Option<String>, String> {
        if name != SEALED_STATE {
            return Ok(None);
        }
        let sealed = hex::decode(value).map_err(|e| e.to_string())?;
        r.reseal("totp:ada", &sealed).map(hex::encode).map(Some).ok_or_else(|| "does not open".to_owned())
    }

    /// Master key rotation on the shared control plane: one collector
    /// rewraps every key in one transaction; another still holding the old
    /// key keeps serving the keys it holds, is refused writing new key
    /// material under the old key and refused at start with the old key
    /// file, and works again with the new one.
    #[test]
    fn master_key_rotation_on_postgres_and_the_other_collectors_take_the_new_key() {
        let Some(pg) = Postgres::start() else { return };
        PgControl::migrate(&config(&pg)).expect("migrate");
        let keys = tempfile::tempdir().unwrap();
        let (key_a, key_b) = (keys.path().join("a.key"), keys.path().join("b.key"));
        MasterKey::generate_file(&key_a).unwrap();
        std::fs::copy(&key_a, &key_b).unwrap();
        let a = collector(&pg, &key_a).unwrap();
        let b = collector(&pg, &key_b).unwrap();
        a.org_keys().get_or_create(&org("acme")).unwrap();
        let org_key = key_of(&a, "acme");
        let shared_key = SecretKey::generate().unwrap();
        register(&a, "ap-1", &shared_key);
        a.registry().set_ssh_key(&org("acme"), &device("ap-1"), Some(SSH)).unwrap();
        a.control().put_policy("acme", POLICY).unwrap();
        let totp = SecretKey::generate().unwrap();
        a.control().replace_state(SEALED_STATE, &hex::encode(a.seal_secret("totp:ada", &totp).unwrap())).unwrap();
        let audit_key = a.audit_key().unwrap();
        assert!(b.org_keys().get(&org("acme")).unwrap().is_some());
        assert_eq!(key_of(&b, "acme"), org_key, "b holds acme's key");
        let wrapped_before = pg.psql("SELECT encode(wrapped, 'hex') FROM glimpse_org_keys WHERE org = 'acme'");

        let intact = |c: &Catalog| {
            c.org_keys().forget(None);
            assert_eq!(key_of(c, "acme"), org_key);
            let reg = c.registry().get(&org("acme"), &device("ap-1")).unwrap().unwrap();
            assert_eq!((reg.shared_key, reg.cert_serial.as_str()), (shared_key.clone(), SERIAL));
            assert_eq!(c.registry().ssh_key(&org("acme"), &device("ap-1")).unwrap().as_deref(), Some(SSH));
            assert_eq!(c.control().policy("acme").unwrap().as_deref(), Some(POLICY));
            let sealed = hex::decode(c.control().state(SEALED_STATE).unwrap().unwrap()).unwrap();
            assert_eq!(c.open_secret("totp:ada", &sealed).unwrap(), totp);
            assert_eq!(c.audit_key().unwrap(), audit_key);
        };

        let report = a.rotate_master(&reseal_hex).expect("rotation on PostgreSQL");
        assert_eq!((report.org_keys, report.device_keys), (1, 1), "{report:?}");
        // The check, the audit and configuration keys, the TOTP key.
        assert_eq!(report.other_rows, 4, "{report:?}");
        assert!(!MasterKey::next_path(&key_a).exists());
        assert_ne!(std::fs::read(&key_a).unwrap(), std::fs::read(&key_b).unwrap());
        assert_ne!(pg.psql("SELECT encode(wrapped, 'hex') FROM glimpse_org_keys WHERE org = 'acme'"), wrapped_before);
        intact(&a);
        a.org_keys().get_or_create(&org("initech")).unwrap();

        // b, still under the old key: what it holds keeps working ...
        assert_eq!(key_of(&b, "acme"), org_key);
        assert_eq!(b.control().policy("acme").unwrap().as_deref(), Some(POLICY));
        // ... new key material under the old key is refused, clearly.
        let err = b.org_keys().get_or_create(&org("globex")).unwrap_err().to_string();
        assert!(err.contains("rotated by another collector"), "{err}");
        let err = b
            .registry()
            .upsert(DeviceRegistration {
                identity: DeviceIdentity { org: org("acme"), device: device("ap-9"), kind: DeviceKind::Ap },
                shared_key: SecretKey::generate().unwrap(),
                cert_serial: "09".into(),
                revoked: false,
                site: None,
            })
            .unwrap_err()
            .to_string();
        assert!(err.contains("rotated by another collector"), "{err}");
        assert!(b.rotate_master(&reseal_hex).is_err(), "b cannot rotate from a key it no longer shares");
        assert!(!MasterKey::next_path(&key_b).exists());
        // A reload (SIGHUP) with the old key file still there: refused, clearly.
        assert!(!b.master_is_current().unwrap());
        let err = b.adopt_master(MasterKey::load(&key_b).unwrap()).unwrap_err();
        assert!(matches!(err, KeyError::WrongMasterKey { .. }), "{err}");
        // With the new key file installed, a reload takes it up without a
        // restart: new key material is accepted again.
        let installed = keys.path().join("installed.key");
        std::fs::copy(&key_a, &installed).unwrap();
        assert!(b.adopt_master(MasterKey::load(&installed).unwrap()).unwrap());
        assert!(b.master_is_current().unwrap());
        assert!(!b.adopt_master(MasterKey::load(&installed).unwrap()).unwrap(), "only once");
        b.org_keys().get_or_create(&org("hooli")).unwrap();
        intact(&b);
        drop(b);
        // Restarted with the old key file: refused.
        let err = collector(&pg, &key_b).unwrap_err();
        assert!(matches!(err, KeyError::WrongMasterKey { .. }), "{err}");
        // With the new key file installed: everything, old and new.
        std::fs::copy(&key_a, &key_b).unwrap();
        let b = collector(&pg, &key_b).unwrap();
        intact(&b);
        assert!(b.org_keys().get(&org("initech")).unwrap().is_some());
        b.org_keys().get_or_create(&org("globex")).unwrap();
        assert!(a.org_keys().get(&org("globex")).unwrap().is_some());
    }

    /// Another collector creating organisation keys while one rotates:
    /// every key it was told is stored opens under the new master key (it
    /// was written before the rotation read, and rewrapped), and every
    /// later one was refused; none is left wrapped under the old key.
    #[test]
    fn key_writes_racing_a_rotation_on_another_collector_are_rewrapped_or_refused() {
        let Some(pg) = Postgres::start() else { return };
        PgControl::migrate(&config(&pg)).expect("migrate");
        let keys = tempfile::tempdir().unwrap();
        let (key_a, key_b) = (keys.path().join("a.key"), keys.path().join("b.key"));
        MasterKey::generate_file(&key_a).unwrap();
        std::fs::copy(&key_a, &key_b).unwrap();
        let a = collector(&pg, &key_a).unwrap();
        let b = collector(&pg, &key_b).unwrap();
        let stop = std::sync::atomic::AtomicBool::new(false);
        let (stored, refused) = std::thread::scope(|s| {
            let writer = s.spawn(|| {
                let (mut stored, mut refused) = (Vec::new(), 0);
                for i in 0.. {
                    let name = format!("org-{i}");
                    match b.org_keys().get_or_create(&org(&name)) {
                        Ok(_) => stored.push(name),
                        Err(e) => {
                            assert!(e.to_string().contains("rotated by another collector"), "{e}");
                            refused += 1;
                        }
                    }
                    if stop.load(Ordering::SeqCst) && refused > 0 {
                        break;
                    }
                    assert!(i < 100_000, "the writer was never refused");
                }
                (stored, refused)
            });
            // Let the writer get going, rotate, let it meet the refusal.
            wait_for("keys being created", || pg.psql("SELECT count(*) FROM glimpse_org_keys").trim() != "0");
            a.rotate_master(&|_, _, _| Ok(None)).expect("rotation");
            stop.store(true, Ordering::SeqCst);
            writer.join().unwrap()
        });
        assert!(!stored.is_empty() && refused > 0, "{} stored, {refused} refused", stored.len());
        // Every stored key opens under the new key, on a fresh start.
        drop((a, b));
        let fresh = collector(&pg, &key_a).unwrap();
        let names = fresh.org_keys().orgs().unwrap();
        assert_eq!(names.len(), stored.len(), "only the keys the writer was told are stored");
        for name in &stored {
            assert!(fresh.org_keys().get(&org(name)).unwrap().is_some(), "{name} does not open under the new key");
        }
    }

    /// A rotation that fails in its transaction (a row that does not
    /// rewrap) leaves every row under the old key, on PostgreSQL too.
    #[test]
    fn a_failed_rotation_on_postgres_changes_nothing() {
        let Some(pg) = Postgres::start() else { return };
        PgControl::migrate(&config(&pg)).expect("migrate");
        let keys = tempfile::tempdir().unwrap();
        let key_file = keys.path().join("master.key");
        MasterKey::generate_file(&key_file).unwrap();
        let a = collector(&pg, &key_file).unwrap();
        a.org_keys().get_or_create(&org("acme")).unwrap();
        let org_key = key_of(&a, "acme");
        a.control().replace_state(SEALED_STATE, "not hex").unwrap();
        let before = pg.psql("SELECT name, encode(value, 'hex') FROM glimpse_meta ORDER BY name");
        let err = a.rotate_master(&reseal_hex).unwrap_err().to_string();
        assert!(err.contains("Odd number") || err.contains("Invalid"), "{err}");
        assert_eq!(pg.psql("SELECT name, encode(value, 'hex') FROM glimpse_meta ORDER BY name"), before);
        assert!(!MasterKey::next_path(&key_file).exists());
        drop(a);
        let a = collector(&pg, &key_file).unwrap();
        assert_eq!(key_of(&a, "acme"), org_key);
        a.org_keys().get_or_create(&org("globex")).unwrap();
    }
}

/// A data key rotated by one collector over the shared control plane: the
/// other, once it hears the change, reads the new version and still the
/// old; retirement is seen by both.
#[test]
fn a_data_key_rotation_on_one_collector_is_used_by_the_other() {
    use glimpse_common::identity::OrgId;
    use glimpse_store::keys::{Catalog, KeyState, MasterKey};
    let Some(pg) = Postgres::start() else { return };
    // Not `migrated`: the catalogs install the configuration key their
    // master key derives.
    PgControl::migrate(&config(&pg)).expect("migrate");
    let a: Arc<dyn ControlStore> = Arc::new(PgControl::connect(&config(&pg)).unwrap());
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
