//! Master key rotation against the real collector program: rotated online
//! through the admin API, and killed at each step of a rotation (the
//! process aborts there, as under `kill -9`) and started again, after which
//! every record is still readable and exportable, the devices still
//! authenticate and the audit chain still verifies.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use glimpse_admin_client::{AdminClientError, AdminCredentials, ApiClient};
use glimpse_common::identity::{AdminIdentity, AdminName, AdminRole};
use glimpse_store::keys::rotation::CRASH_AT_ENV;
use glimpse_store::keys::MasterKey;
use glimpse_tests::*;
use reqwest::Method;

const COLLECTOR: &str = env!("CARGO_BIN_EXE_collector-under-test");

/// A collector on disk whose admin API listens on a port we know, with an
/// operator's credentials for it.
struct Rig {
    files: CollectorFiles,
    admin_port: u16,
    operator: AdminCredentials,
    key_file: PathBuf,
}

impl Rig {
    fn new() -> Rig {
        Rig::with_tables("")
    }

    /// A collector whose config ends with `tables` (a `[control]` on
    /// PostgreSQL, say).
    fn with_tables(tables: &str) -> Rig {
        let files = CollectorFiles::new(COLLECTOR);
        let admin_port = free_port();
        let text = std::fs::read_to_string(files.config()).unwrap();
        let text = text.replacen(
            "[admin]\nlisten = \"127.0.0.1:0\"",
            &format!("[admin]\nlisten = \"127.0.0.1:{admin_port}\""),
            1,
        ) + tables;
        std::fs::write(files.config(), text).unwrap();
        let key_file = files.config().with_file_name("master.key");
        let name = AdminName::new(format!("op-{}", unique_device("rot"))).unwrap();
        let identity = AdminIdentity::new(name, AdminRole::Operator, None).unwrap();
        let issued = {
            let _guard = pki().lock();
            glimpse_certs::issue_admin(&pki().ours, &identity, &glimpse_certs::Validity::default(), false).unwrap()
        };
        let operator = AdminCredentials {
            address: format!("127.0.0.1:{admin_port}"),
            server_name: "localhost".into(),
            ca: glimpse_certs::ca_cert_path(&pki().ours),
            cert: issued.cert,
            key: issued.key,
            token: None,
        };
        Rig { files, admin_port, operator, key_file }
    }

    /// Starts `serve`, aborting at `crash_at` if given, and waits until
    /// both listeners answer.
    async fn start(&self, crash_at: Option<&str>) -> Process {
        let mut command = Command::new(COLLECTOR);
        command.args(["serve", "--config"]).arg(self.files.config()).stdout(Stdio::null());
        if std::env::var_os("GLIMPSE_TEST_LOG").is_none() {
            command.stderr(Stdio::null());
        }
        if let Some(step) = crash_at {
            command.env(CRASH_AT_ENV, step);
        }
        let process = Process(command.spawn().expect("start collector"));
        let admin = std::net::SocketAddr::from(([127, 0, 0, 1], self.admin_port));
        wait_until("collector listening", || {
            std::net::TcpStream::connect(self.files.addr()).is_ok() && std::net::TcpStream::connect(admin).is_ok()
        })
        .await;
        process
    }

    async fn rotate(&self) -> Result<glimpse_api::MasterKeyRotated, AdminClientError> {
        let client = ApiClient::new(&self.operator).await.unwrap();
        client.send(Method::POST, "/api/v1/master-key/rotate", None::<&()>).await
    }

    async fn audit_entries(&self) -> u64 {
        let client = ApiClient::new(&self.operator).await.unwrap();
        let verified: glimpse_api::AuditVerified = client.get("/api/v1/audit/verify").await.expect("audit verifies");
        verified.entries
    }

    fn next_file(&self) -> PathBuf {
        MasterKey::next_path(&self.key_file)
    }

    fn key_text(&self) -> String {
        std::fs::read_to_string(&self.key_file).unwrap()
    }

    /// The offline export's JSON lines of `org`.
    fn export(&self, org: &str) -> BTreeSet<String> {
        let out = offline(&["export", "--org", org], &self.files.config());
        assert!(out.status.success(), "export failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.starts_with('{')).map(str::to_owned).collect()
    }
}

fn offline(args: &[&str], config: &Path) -> Output {
    Command::new(COLLECTOR)
        .args(args)
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run collector program")
}

/// Waits for a process that aborted itself to be gone.
async fn wait_for_exit(mut process: Process) -> std::process::ExitStatus {
    let mut status = None;
    wait_until("collector aborted at the crash point", || {
        status = process.0.try_wait().expect("wait");
        status.is_some()
    })
    .await;
    status.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_key_rotation_survives_a_kill_at_every_step_and_keeps_every_record() {
    init_logging();
    let device = issue_device("rotorg");
    let rig = Rig::new();

    // Records stored under the first master key.
    let collector = rig.start(None).await;
    let agent = start_agent(rig.files.addr(), &device);
    wait_for_status(&agent, "records stored", |s| s.acked_seq >= 4).await;
    agent.shutdown().await;
    let audited = rig.audit_entries().await;
    collector.terminate().await;
    let (_, stored) = rig.files.stored(&device.identity);
    assert!(!stored.is_empty());
    let exported = rig.export("rotorg");
    assert!(!exported.is_empty());
    let key = kill_at_every_step(&rig, &device, "rotorg", audited, &stored, &exported).await;
    online_rotation(&rig, &device, "rotorg", &key, &stored, &exported).await;
}

/// Kills the collector at each step of a rotation (the process aborts
/// there) and starts it again: the rotation is rolled back or finished,
/// the device streams, the audit chain verifies, nothing stored is lost.
/// Returns the key in the file afterwards.
async fn kill_at_every_step(
    rig: &Rig,
    device: &Device,
    org: &str,
    audited: u64,
    stored: &BTreeSet<String>,
    exported: &BTreeSet<String>,
) -> String {
    let mut key = rig.key_text();
    // The new key written, the crash before the commit: rolled back.
    // After the commit, before the key file moved: finished at restart.
    // After the key file moved: done.
    for (step, committed) in [
        ("master-rotation:next-written", false),
        ("master-rotation:committed", true),
        ("master-rotation:promoted", true),
    ] {
        let collector = rig.start(Some(step)).await;
        let answer = rig.rotate().await;
        assert!(answer.is_err(), "{step}: the collector answered {answer:?} instead of dying");
        let status = wait_for_exit(collector).await;
        assert!(!status.success(), "{step}: {status}");
        let moved = step == "master-rotation:promoted";
        assert_eq!(rig.next_file().exists(), !moved, "{step}: the new key file beside the old");
        assert_eq!(rig.key_text() != key, moved, "{step}: the key file");

        let collector = rig.start(None).await;
        assert!(!rig.next_file().exists(), "{step}: the restart settled the rotation");
        assert_eq!(rig.key_text() != key, committed, "{step}: the key in the file after the restart");
        key = rig.key_text();
        // The device authenticates (its shared key unwraps) and streams on.
        let agent = start_agent(rig.files.addr(), device);
        wait_for_status(&agent, &format!("{step}: the device streams again"), |s| s.acked_records >= 2).await;
        agent.shutdown().await;
        assert!(rig.audit_entries().await > audited, "{step}: the audit chain verifies");
        collector.terminate().await;

        let (count, now_stored) = rig.files.stored(&device.identity);
        assert_eq!(count, now_stored.len(), "{step}: a record stored twice");
        assert!(now_stored.is_superset(stored), "{step}: records lost");
        assert!(rig.export(org).is_superset(exported), "{step}: records no longer exportable");
    }
    key
}

/// An online rotation that completes: audited, in use at once, and only
/// the new key opens the store afterwards.
async fn online_rotation(
    rig: &Rig,
    device: &Device,
    org: &str,
    key: &str,
    stored: &BTreeSet<String>,
    exported: &BTreeSet<String>,
) {
    let collector = rig.start(None).await;
    let rotated = rig.rotate().await.expect("rotation");
    // The other tests of this file issue devices into the same PKI
    // directory while this one runs, and the registry imports them all: at
    // least this organisation's key and this device's shared key.
    assert!(rotated.org_keys >= 1 && rotated.device_keys >= 1, "{rotated:?}");
    assert_eq!(PathBuf::from(&rotated.key_file), rig.key_file);
    assert_ne!(rig.key_text(), key);
    assert!(!rig.next_file().exists());
    let agent = start_agent(rig.files.addr(), device);
    wait_for_status(&agent, "the device streams after the rotation", |s| s.acked_records >= 2).await;
    agent.shutdown().await;
    rig.audit_entries().await;
    let client = ApiClient::new(&rig.operator).await.unwrap();
    let audit: glimpse_api::AuditPage = client.get("/api/v1/audit?action=master-key.rotate").await.expect("audit");
    assert!(
        audit
            .entries
            .iter()
            .any(|e| e.action == "master-key.rotate" && !e.refused && e.detail.contains("1 organisation keys")),
        "{audit:?}"
    );
    collector.terminate().await;
    let (_, now_stored) = rig.files.stored(&device.identity);
    assert!(now_stored.is_superset(stored));
    assert!(rig.export(org).is_superset(exported));

    // The old key file no longer opens the store.
    let old = rig.files.config().with_file_name("old.key");
    std::fs::write(&old, key).unwrap();
    std::fs::set_permissions(&old, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    std::fs::copy(&old, &rig.key_file).unwrap();
    let out = offline(&["export", "--org", org], &rig.files.config());
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("master key"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// The same on the PostgreSQL control plane: every wrapped key and sealed
/// secret is rewritten in one PostgreSQL transaction, and a kill at each
/// step leaves a state the restart settles.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_key_rotation_on_postgres_survives_a_kill_at_every_step() {
    use glimpse_postgres::{PgControl, PgTls, PostgresConfig};
    init_logging();
    let Some(pg) = glimpse_tests::postgres::Postgres::start() else { return };
    PgControl::migrate(&PostgresConfig { tls: PgTls::Disable, ..PostgresConfig::new(pg.url()) }).expect("migrate");
    let device = issue_device("pgrotorg");
    let rig = Rig::with_tables(&pg.control_toml());

    let collector = rig.start(None).await;
    let agent = start_agent(rig.files.addr(), &device);
    wait_for_status(&agent, "records stored", |s| s.acked_seq >= 4).await;
    agent.shutdown().await;
    let audited = rig.audit_entries().await;
    collector.terminate().await;
    let (_, stored) = rig.files.stored(&device.identity);
    assert!(!stored.is_empty());
    let exported = rig.export("pgrotorg");
    assert!(!exported.is_empty());
    let wrapped = || pg.psql("SELECT encode(wrapped, 'hex') FROM glimpse_org_keys WHERE org = 'pgrotorg'");
    let before = wrapped();

    let key = kill_at_every_step(&rig, &device, "pgrotorg", audited, &stored, &exported).await;
    assert_ne!(wrapped(), before, "the organisation key is rewrapped in the database");
    online_rotation(&rig, &device, "pgrotorg", &key, &stored, &exported).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_operators_may_rotate_the_master_key() {
    init_logging();
    let rig = Rig::new();
    let name = AdminName::new(format!("orgadmin-{}", unique_device("rot"))).unwrap();
    let identity =
        AdminIdentity::new(name, AdminRole::OrgAdmin, Some(glimpse_common::identity::OrgId::new("rotorg").unwrap()))
            .unwrap();
    let issued = {
        let _guard = pki().lock();
        glimpse_certs::issue_admin(&pki().ours, &identity, &glimpse_certs::Validity::default(), false).unwrap()
    };
    let org_admin = AdminCredentials { cert: issued.cert, key: issued.key, ..rig.operator.clone() };
    let collector = rig.start(None).await;
    let key = rig.key_text();
    let client = ApiClient::new(&org_admin).await.unwrap();
    let refused = client
        .send::<glimpse_api::MasterKeyRotated>(Method::POST, "/api/v1/master-key/rotate", None::<&()>)
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("only operators"), "{refused}");
    assert_eq!(rig.key_text(), key);
    assert!(!rig.next_file().exists());
    collector.terminate().await;
}

/// Issue 21 item 10: what `strings glimpse.redb` showed (registrations,
/// decisions, API tokens) is sealed in the file and in its verified copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_store_file_shows_no_registration_decision_or_token() {
    init_logging();
    let device = issue_device("sealorg");
    let rig = Rig::new();
    let collector = rig.start(None).await;
    let agent = start_agent(rig.files.addr(), &device);
    wait_for_status(&agent, "records stored", |s| s.acked_seq >= 2).await;
    agent.shutdown().await;
    let client = ApiClient::new(&rig.operator).await.unwrap();
    let token_name = "dashboard-named-plaintext";
    let body = glimpse_api::TokenCreateRequest {
        name: token_name.into(),
        role: "org-admin".into(),
        org: Some("sealorg".into()),
        read_only: true,
        expires_in_days: Some(3),
        sites: Vec::new(),
    };
    let _: glimpse_api::TokenCreated = client.send(Method::POST, "/api/v1/tokens", Some(&body)).await.unwrap();
    collector.terminate().await;

    let der = glimpse_files::load_certs(&device.cert).unwrap().remove(0);
    let serial = glimpse_common::certificate::serial_hex_of(der.as_ref()).unwrap();
    let data = rig.files.config().with_file_name("data");
    for file in ["glimpse.redb", "glimpse.redb.backup"] {
        let bytes = std::fs::read(data.join(file)).unwrap();
        let contains = |text: &str| bytes.windows(text.len()).any(|w| w.eq_ignore_ascii_case(text.as_bytes()));
        assert!(!contains(token_name), "{file} shows the API token's name");
        assert!(!contains(&serial), "{file} shows the device's certificate serial {serial}");
        assert!(!contains(&serial.replace(':', "")), "{file} shows the device's certificate serial");
    }
    // And everything still reads: the device registered, the records there.
    let (count, _) = rig.files.stored(&device.identity);
    assert!(count > 0);
}

/// A console account's TOTP key, sealed under the master key, is resealed
/// by an online rotation: sign-in with a code works before and after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_totp_keys_open_after_an_online_rotation() {
    use glimpse_common::clock::{Clock, ManualClock, SystemClock};
    init_logging();
    let clock = std::sync::Arc::new(ManualClock::new(SystemClock.now_millis()));
    let tc = TestCollector::start_with_clock(clock.clone()).await;
    add_console_account(&tc, "ada", AdminRole::OrgAdmin, Some("acme"));
    let accounts = tc.collector.api().and_then(|api| api.console.clone()).expect("console").accounts;
    let enrolment = accounts.begin_totp("ada").unwrap();
    let key = base32_decode(&enrolment.secret);
    accounts.confirm_totp("ada", &totp_code_for(&key, clock.now_millis()), clock.now_millis()).unwrap();
    let sign_in = |code: &str| accounts.sign_in("ada", CONSOLE_PASSWORD, Some(code), clock.now_millis(), 5, 60_000);
    clock.advance(30_000);
    sign_in(&totp_code_for(&key, clock.now_millis())).expect("sign-in before the rotation");
    let key_before = std::fs::read(&tc.config.master_key_file).unwrap();

    let operator = issue_admin(&tc, AdminRole::Operator, None);
    let client = api_client(&operator).await;
    let rotated: glimpse_api::MasterKeyRotated =
        client.send(Method::POST, "/api/v1/master-key/rotate", None::<&()>).await.expect("rotation");
    // The check, the audit and configuration keys, and ada's TOTP key.
    assert_eq!(rotated.other_rows, 4, "{rotated:?}");
    assert_ne!(std::fs::read(&tc.config.master_key_file).unwrap(), key_before);

    clock.advance(30_000);
    sign_in(&totp_code_for(&key, clock.now_millis())).expect("sign-in after the rotation");
}

/// Two collector programs on one PostgreSQL control plane, each with its
/// own copy of the master key file: a rotation on one, and the other,
/// still holding the old key, refuses new key material until the new key
/// file is installed there and it is sent SIGHUP; then it works again, and
/// restarts with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_rotation_on_postgres_another_collector_takes_the_new_key_file_on_sighup() {
    use glimpse_postgres::{PgControl, PgTls, PostgresConfig};
    init_logging();
    let Some(pg) = glimpse_tests::postgres::Postgres::start() else { return };
    PgControl::migrate(&PostgresConfig { tls: PgTls::Disable, ..PostgresConfig::new(pg.url()) }).expect("migrate");
    let a = Rig::with_tables(&pg.control_toml());
    let b = Rig::with_tables(&pg.control_toml());
    std::fs::copy(&a.key_file, &b.key_file).unwrap();
    let collector_a = a.start(None).await;
    let collector_b = b.start(None).await;
    let token = |rig: &Rig, name: &str| {
        let (operator, name) = (rig.operator.clone(), name.to_owned());
        async move {
            let client = ApiClient::new(&operator).await.unwrap();
            let body = glimpse_api::TokenCreateRequest {
                name,
                role: "org-admin".into(),
                org: Some("pgrot2".into()),
                read_only: true,
                expires_in_days: Some(3),
                sites: Vec::new(),
            };
            client.send::<glimpse_api::TokenCreated>(Method::POST, "/api/v1/tokens", Some(&body)).await
        }
    };
    token(&b, "before").await.expect("a token on b before the rotation");

    a.rotate().await.expect("rotation on a");
    assert_ne!(a.key_text(), b.key_text());
    token(&a, "on-a").await.expect("a works under the new key");
    let refused = token(&b, "on-b").await.unwrap_err().to_string();
    assert!(refused.contains("rotated by another collector"), "{refused}");

    // The operator installs the new key file on b and sends SIGHUP.
    std::fs::copy(&a.key_file, &b.key_file).unwrap();
    let hup = Command::new("kill").args(["-HUP", &collector_b.0.id().to_string()]).status().unwrap();
    assert!(hup.success());
    let deadline = std::time::Instant::now() + DEADLINE;
    while let Err(e) = token(&b, "after-hup").await {
        assert!(std::time::Instant::now() < deadline, "b did not take the new key: {e}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // And b starts again with it; a restarted b with the old file would not.
    collector_b.terminate().await;
    let collector_b = b.start(None).await;
    token(&b, "after-restart").await.expect("b after a restart");
    collector_b.terminate().await;
    collector_a.terminate().await;
}
