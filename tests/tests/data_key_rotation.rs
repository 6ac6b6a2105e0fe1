//! Rotation of an organisation's data key against the real collector
//! program: rotated online through the admin API, records stored before
//! and after, and the collector killed at each step of the rotation, of
//! the background re-encryption and of the retirement (the process aborts
//! there, as under `kill -9`) and started again; every record stays
//! readable, none is stored twice, the old versions end retired and the
//! audit log has the rotations and retirements.
//!
//! The re-encryption runs when the collector starts and then every sweep
//! interval (an hour in these configs), so each start is one run; the test
//! waits for what a run leaves, never for a time.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};

use glimpse_admin_client::{AdminClientError, AdminCredentials, ApiClient};
use glimpse_common::identity::{AdminIdentity, AdminName, AdminRole, OrgId};
use glimpse_store::keys::rotation::CRASH_AT_ENV;
use glimpse_tests::*;
use reqwest::Method;

const COLLECTOR: &str = env!("CARGO_BIN_EXE_collector-under-test");
const ORG: &str = "dkrot";

/// A collector on disk whose admin API listens on a port we know, with
/// credentials of an operator and of the organisation's admin.
struct Rig {
    files: CollectorFiles,
    admin_port: u16,
    operator: AdminCredentials,
    org_admin: AdminCredentials,
}

impl Rig {
    fn new() -> Rig {
        let files = CollectorFiles::new(COLLECTOR);
        let admin_port = free_port();
        let text = std::fs::read_to_string(files.config()).unwrap();
        let text = text.replacen(
            "[admin]\nlisten = \"127.0.0.1:0\"",
            &format!("[admin]\nlisten = \"127.0.0.1:{admin_port}\""),
            1,
        );
        std::fs::write(files.config(), text).unwrap();
        let credentials = |role, org: Option<&str>| {
            let name = AdminName::new(format!("dk-{}", unique_device("dk"))).unwrap();
            let identity = AdminIdentity::new(name, role, org.map(|o| OrgId::new(o).unwrap())).unwrap();
            let issued = {
                let _guard = pki().lock();
                glimpse_certs::issue_admin(&pki().ours, &identity, &glimpse_certs::Validity::default(), false).unwrap()
            };
            AdminCredentials {
                address: format!("127.0.0.1:{admin_port}"),
                server_name: "localhost".into(),
                ca: glimpse_certs::ca_cert_path(&pki().ours),
                cert: issued.cert,
                key: issued.key,
                token: None,
            }
        };
        let operator = credentials(AdminRole::Operator, None);
        let org_admin = credentials(AdminRole::OrgAdmin, Some(ORG));
        Rig { files, admin_port, operator, org_admin }
    }

    /// Starts `serve`, aborting at `crash_at` if given, and waits until
    /// both listeners answer (or, with a crash point the start itself
    /// reaches, until it is gone).
    async fn start(&self, crash_at: Option<&str>) -> Process {
        let mut command = Command::new(COLLECTOR);
        command.args(["serve", "--config"]).arg(self.files.config()).stdout(Stdio::null());
        if std::env::var_os("GLIMPSE_TEST_LOG").is_none() {
            command.stderr(Stdio::null());
        }
        if let Some(step) = crash_at {
            command.env(CRASH_AT_ENV, step);
        }
        Process(command.spawn().expect("start collector"))
    }

    async fn listening(&self) {
        let admin = std::net::SocketAddr::from(([127, 0, 0, 1], self.admin_port));
        wait_until("collector listening", || {
            std::net::TcpStream::connect(self.files.addr()).is_ok() && std::net::TcpStream::connect(admin).is_ok()
        })
        .await;
    }

    async fn rotate(&self, who: &AdminCredentials) -> Result<glimpse_api::DataKeyRotated, AdminClientError> {
        let client = ApiClient::new(who).await.unwrap();
        client.send(Method::POST, &format!("/api/v1/orgs/{ORG}/data-key/rotate"), None::<&()>).await
    }

    async fn status(&self) -> glimpse_api::DataKeyStatus {
        let client = ApiClient::new(&self.org_admin).await.unwrap();
        client.get(&format!("/api/v1/orgs/{ORG}/data-key")).await.expect("data key status")
    }

    /// Waits until the status satisfies `check` (a re-encryption run is
    /// under way), polling the admin API.
    async fn wait_for_status(&self, what: &str, check: impl Fn(&glimpse_api::DataKeyStatus) -> bool) {
        let mut done = false;
        for _ in 0..1500 {
            if check(&self.status().await) {
                done = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(done, "timed out waiting for {what}; last status {:?}", self.status().await);
    }

    /// Segments under each data key version, from their headers on disk.
    fn segments_by_version(&self) -> std::collections::BTreeMap<u32, usize> {
        let root = self.files.config().with_file_name("data").join("orgs").join(ORG);
        let mut counts = std::collections::BTreeMap::new();
        let mut dirs = vec![root];
        while let Some(dir) = dirs.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "seg") {
                    *counts.entry(header_key_version(&std::fs::read(&path).unwrap())).or_insert(0) += 1;
                }
            }
        }
        counts
    }
}

/// The data key version of a segment file's header (format 3: after the
/// kind name; earlier formats: 1).
fn header_key_version(bytes: &[u8]) -> u32 {
    assert_eq!(&bytes[..8], b"GLSEG\0\0\x01");
    if u16::from_be_bytes([bytes[8], bytes[9]]) < 3 {
        return 1;
    }
    let mut pos = 26;
    for _ in 0..2 {
        pos += 1 + usize::from(bytes[pos]);
    }
    u32::from_be_bytes(bytes[pos..pos + 4].try_into().unwrap())
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

fn states(status: &glimpse_api::DataKeyStatus) -> Vec<(u32, String)> {
    status.versions.iter().map(|v| (v.version, v.state.clone())).collect()
}

fn under(status: &glimpse_api::DataKeyStatus, version: u32) -> u64 {
    status.versions.iter().find(|v| v.version == version).map_or(0, |v| v.segments)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_key_rotation_survives_a_kill_at_every_step_and_keeps_every_record() {
    init_logging();
    let device = issue_device(ORG);
    let rig = Rig::new();
    let check_records = |step: &str, before: &BTreeSet<String>| {
        // `stored` fails on any segment that does not read (one under a
        // destroyed key, say).
        let (count, now) = rig.files.stored(&device.identity);
        assert_eq!(count, now.len(), "{step}: a record stored twice");
        assert!(now.is_superset(before), "{step}: records lost");
        now
    };

    // Records under version 1.
    let collector = rig.start(None).await;
    rig.listening().await;
    let agent = start_agent(rig.files.addr(), &device);
    wait_for_status(&agent, "records stored", |s| s.acked_seq >= 4).await;
    agent.shutdown().await;
    collector.terminate().await;
    let stored = check_records("version 1", &BTreeSet::new());
    assert!(!stored.is_empty());
    assert_eq!(rig.segments_by_version().keys().copied().collect::<Vec<_>>(), [1]);

    // Killed right after the rotation committed: version 2 is current
    // after the restart, whose first re-encryption run moves version 1's
    // segments.
    let collector = rig.start(Some("data-key-rotation:committed")).await;
    rig.listening().await;
    let answer = rig.rotate(&rig.org_admin).await;
    assert!(answer.is_err(), "the collector answered {answer:?} instead of dying");
    assert!(!wait_for_exit(collector).await.success());
    let stored = check_records("rotation committed", &stored);
    let collector = rig.start(None).await;
    rig.listening().await;
    rig.wait_for_status("version 1's segments re-encrypted", |s| s.current == 2 && under(s, 1) == 0).await;
    collector.terminate().await;
    assert_eq!(rig.segments_by_version().keys().copied().collect::<Vec<_>>(), [2]);
    let stored = check_records("re-encrypted", &stored);

    // Killed right after version 1 was retired: it stays retired.
    let collector = rig.start(Some("data-key-retire:committed")).await;
    assert!(!wait_for_exit(collector).await.success());
    let collector = rig.start(None).await;
    rig.listening().await;
    let status = rig.status().await;
    assert_eq!(states(&status), [(1, "retired".to_owned()), (2, "current".to_owned())]);

    // More records, under version 2, then an online rotation by an
    // operator: version 3 seals what comes next.
    let agent = start_agent(rig.files.addr(), &device);
    wait_for_status(&agent, "records stored under version 2", |s| s.acked_records >= 2).await;
    agent.shutdown().await;
    let rotated = rig.rotate(&rig.operator).await.expect("online rotation");
    assert_eq!((rotated.previous, rotated.version), (2, 3));
    let agent = start_agent(rig.files.addr(), &device);
    wait_for_status(&agent, "records stored under version 3", |s| s.acked_records >= 2).await;
    agent.shutdown().await;
    collector.terminate().await;
    let by_version = rig.segments_by_version();
    assert!(by_version.get(&2).is_some_and(|n| *n > 0) && by_version.get(&3).is_some_and(|n| *n > 0), "{by_version:?}");
    let stored = check_records("versions 2 and 3", &stored);

    // Killed after a re-encryption switched segments, before their catalog
    // rows were back: every record still reads, once.
    let collector = rig.start(Some("data-key-reencrypt:replaced")).await;
    assert!(!wait_for_exit(collector).await.success());
    let stored = check_records("re-encryption interrupted", &stored);

    // The restart finishes the re-encryption; the one after retires.
    let collector = rig.start(None).await;
    rig.listening().await;
    rig.wait_for_status("version 2's segments re-encrypted", |s| under(s, 2) == 0).await;
    collector.terminate().await;
    let collector = rig.start(None).await;
    rig.listening().await;
    rig.wait_for_status("version 2 retired", |s| s.versions.iter().any(|v| v.version == 2 && v.state == "retired"))
        .await;
    let status = rig.status().await;
    assert_eq!(states(&status), [(1, "retired".to_owned()), (2, "retired".to_owned()), (3, "current".to_owned())]);
    assert_eq!(status.versions.iter().map(|v| v.segments).sum::<u64>(), under(&status, 3));

    let audit = audit_of(&rig.operator, &OrgId::new(ORG).unwrap()).await;
    let rotations = audit.iter().filter(|e| e.action.as_str() == "data-key.rotate" && !e.refused).count();
    assert!(rotations >= 2, "{audit:?}");
    for version in [1, 2] {
        let wanted = format!("data key version {version}:");
        assert!(
            audit.iter().any(|e| e.action.as_str() == "data-key.retire" && e.detail.as_str().contains(&wanted)),
            "{audit:?}"
        );
    }
    let client = ApiClient::new(&rig.operator).await.unwrap();
    let _: glimpse_api::AuditVerified = client.get("/api/v1/audit/verify").await.expect("audit verifies");
    collector.terminate().await;
    assert_eq!(rig.segments_by_version().keys().copied().collect::<Vec<_>>(), [3]);
    check_records("all retired", &stored);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_organisations_admins_and_operators_rotate_its_data_key() {
    init_logging();
    let device = issue_device(ORG);
    let rig = Rig::new();
    let collector = rig.start(None).await;
    rig.listening().await;
    // Nothing stored yet: nothing to rotate.
    let refused = rig.rotate(&rig.org_admin).await.unwrap_err();
    assert!(refused.to_string().contains("no data key"), "{refused}");
    let agent = start_agent(rig.files.addr(), &device);
    wait_for_status(&agent, "records stored", |s| s.acked_seq >= 1).await;
    agent.shutdown().await;
    // Another organisation's admin is refused.
    let name = AdminName::new(format!("dk-{}", unique_device("dk"))).unwrap();
    let identity = AdminIdentity::new(name, AdminRole::OrgAdmin, Some(OrgId::new("other").unwrap())).unwrap();
    let issued = {
        let _guard = pki().lock();
        glimpse_certs::issue_admin(&pki().ours, &identity, &glimpse_certs::Validity::default(), false).unwrap()
    };
    let stranger = AdminCredentials { cert: issued.cert, key: issued.key, ..rig.operator.clone() };
    assert!(rig.rotate(&stranger).await.is_err());
    assert_eq!(rig.status().await.current, 1);
    let rotated = rig.rotate(&rig.org_admin).await.expect("its admin rotates");
    assert_eq!(rotated.version, 2);
    collector.terminate().await;
}
