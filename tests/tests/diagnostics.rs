//! Diagnostic bundles for support cases: `glimpse-agent diag` on the
//! device, and a bundle requested through the collector's HTTPS API from a
//! running agent process over mutual TLS, stored as metadata and read back,
//! under the roles' rules.

use std::path::Path;

use glimpse_admin_client::{admin_request, AdminCredentials, ApiClient};
use glimpse_common::identity::{AdminRole, OrgId};
use glimpse_common::record::{DataKind, Diagnostics, RecordBody};
use glimpse_common::wire::admin::{AdminAction, AdminReply, GrantScope};
use glimpse_tests::*;

const AGENT: &str = env!("CARGO_BIN_EXE_agent-under-test");

/// An access point's filesystem whose device tree names the board and
/// its serial number (NUL-terminated, as the kernel gives them).
fn board_sysroot() -> tempfile::TempDir {
    let dir = ap_sysroot("diag-ap");
    let tree = dir.path().join("proc/device-tree");
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::write(tree.join("model"), b"Glimpse Lab AP 500\0").unwrap();
    std::fs::write(tree.join("serial-number"), b"GLX0123456\0").unwrap();
    std::fs::write(
        dir.path().join("proc/net/arp"),
        "IP address       HW type     Flags       HW address            Mask     Device\n\
         192.168.1.20     0x1         0x2         02:00:00:00:20:01     *        wlan0\n",
    )
    .unwrap();
    dir
}

/// `device`'s agent.toml pointed at `collector`, reading `sysroot`.
fn config_file(dir: &Path, collector: std::net::SocketAddr, device: &Device, sysroot: &Path) -> std::path::PathBuf {
    let toml = agent_toml(collector, device).replace("sysroot = \"/\"", &format!("sysroot = {:?}", sysroot));
    assert!(toml.contains(&format!("{sysroot:?}")), "the sysroot was set");
    let path = dir.join("agent.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

#[test]
fn diag_writes_a_private_bundle_naming_the_board_the_build_and_the_probes() {
    let device = issue_device("diagorg");
    let sysroot = board_sysroot();
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path(), "127.0.0.1:9".parse().unwrap(), &device, sysroot.path());
    let bundle_path = dir.path().join("bundle.json");
    let run = || {
        std::process::Command::new(AGENT)
            .args(["diag", "--config"])
            .arg(&config)
            .arg("--output")
            .arg(&bundle_path)
            .output()
            .unwrap()
    };
    let out = run();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&bundle_path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the configuration is in it: owner only");
    let text = std::fs::read_to_string(&bundle_path).unwrap();
    let bundle: Diagnostics = serde_json::from_str(&text).unwrap();
    assert_eq!(bundle.request_id, 0, "made by hand");
    assert_eq!(bundle.model.as_str(), "Glimpse Lab AP 500");
    assert_eq!(bundle.serial_number.as_str(), "GLX0123456");
    assert_eq!(bundle.agent_version.as_str(), env!("CARGO_PKG_VERSION"));
    assert!(bundle.build.as_str().contains("commit"), "{}", bundle.build.as_str());
    assert_eq!(bundle.device_kind.as_str(), "ap");
    assert!(bundle.config.as_str().contains("[device]") && bundle.config.as_str().contains("diagorg"));
    assert!(bundle.connection.is_none() && bundle.recent_logs.is_empty(), "no daemon involved");
    let names: Vec<&str> = bundle.checks.iter().map(|c| c.name.as_str()).collect();
    assert!(names.contains(&"/proc/net/arp") && names.contains(&"iw") && names.contains(&"libpcap"), "{names:?}");
    let arp = bundle.checks.iter().find(|c| c.name.as_str() == "/proc/net/arp").unwrap();
    assert!(arp.ok, "the fixture has an ARP table: {arp:?}");
    assert!(bundle.spool.path.as_str().ends_with("spool") && bundle.spool.max_bytes > 0, "{:?}", bundle.spool);
    let secret = std::fs::read(&device.shared_key).unwrap();
    assert!(!text.as_bytes().windows(secret.len()).any(|w| w == secret), "the shared key is not in the bundle");

    // An existing file is never overwritten.
    let again = run();
    assert!(!again.status.success());
    assert_eq!(std::fs::read_to_string(&bundle_path).unwrap(), text);
}

/// The stored bundle answering request `id`, if it has arrived.
fn stored_bundle(tc: &TestCollector, org: &OrgId, id: u64) -> Option<Diagnostics> {
    let outcome = tc.collector.store().read(org, DataKind::Metadata, None, None).ok()?;
    outcome.records.into_iter().find_map(|stored| match stored.record.body {
        RecordBody::Diagnostics(bundle) if bundle.request_id == id => Some(*bundle),
        _ => None,
    })
}

async fn ask(who: &AdminCredentials, action: AdminAction) -> AdminReply {
    admin_request(who, action).await.expect("admin API answers")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_asked_for_through_the_api_comes_from_the_running_agent_and_support_needs_a_grant() {
    init_logging();
    let device = issue_device("diagorg2");
    let org = device.identity.org.clone();
    let tc = TestCollector::start().await;
    let admin = issue_admin(&tc, AdminRole::OrgAdmin, Some(org.as_str()));
    let support = issue_admin(&tc, AdminRole::Support, Some(org.as_str()));
    let other_admin = issue_admin(&tc, AdminRole::OrgAdmin, Some("someoneelse"));
    let sysroot = board_sysroot();
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path(), tc.addr(), &device, sysroot.path());
    let agent = Process::start(AGENT, &["run"], &config);
    let request = || AdminAction::RequestDiagnostics { org: org.clone(), device: device.identity.device.clone() };
    // Connected once its records arrive.
    wait_until("the agent's records stored", || {
        tc.collector.store().read(&org, DataKind::Metadata, None, None).is_ok_and(|o| !o.records.is_empty())
    })
    .await;

    // Support without a grant, and another organisation's admin, are refused.
    match ask(&support, request()).await {
        AdminReply::Refused(reason) => assert!(reason.as_str().contains("grant"), "{}", reason.as_str()),
        other => panic!("support without a grant: {other:?}"),
    }
    assert!(matches!(ask(&other_admin, request()).await, AdminReply::Refused(_)));

    // Under a grant, support asks; the running agent answers.
    assert!(matches!(
        ask(&admin, AdminAction::GrantSupport { org: org.clone(), hours: 1, scope: GrantScope::default() }).await,
        AdminReply::SupportGranted { .. }
    ));
    let AdminReply::DiagnosticsRequested { id } = ask(&support, request()).await else { panic!("not requested") };
    wait_until("the bundle stored", || stored_bundle(&tc, &org, id).is_some()).await;
    let bundle = stored_bundle(&tc, &org, id).unwrap();
    assert_eq!((bundle.model.as_str(), bundle.serial_number.as_str()), ("Glimpse Lab AP 500", "GLX0123456"));
    let connection = bundle.connection.as_ref().expect("the daemon's connection state");
    assert!(connection.connected && connection.acked_records > 0, "{connection:?}");
    assert!(connection.cipher_suite.as_str().starts_with("TLS"), "{connection:?}");
    assert!(
        bundle.recent_logs.iter().any(|line| line.as_str().contains("agent started")),
        "the daemon's own log lines: {:?}",
        bundle.recent_logs
    );
    assert!(bundle.checks.iter().any(|c| c.name.as_str() == "/proc/net/arp" && c.ok), "{:?}", bundle.checks);
    // Export prints exactly the fields the field reference lists.
    let exported: Vec<serde_json::Value> = tc
        .collector
        .store()
        .read(&org, DataKind::Metadata, None, None)
        .unwrap()
        .records
        .iter()
        .filter(|r| matches!(r.record.body, RecordBody::Diagnostics(_)))
        .map(|r| serde_json::to_value(glimpse_store::export::ExportLine::new(&org, r)).unwrap())
        .collect();
    assert_field_reference_lists_exactly(&exported, &["diagnostics"]);

    // Read back through the API, by the request's id.
    let client = ApiClient::new(&support).await.unwrap();
    let path = format!("/api/v1/orgs/{org}/devices/{}/diagnostics?request_id={id}", device.identity.device);
    let list: glimpse_api::DiagnosticsList = client.get(&path).await.unwrap();
    assert_eq!(list.bundles.len(), 1);
    assert_eq!(list.bundles[0].bundle["request_id"], serde_json::json!(id));
    assert_eq!(list.bundles[0].bundle["serial_number"], "GLX0123456");
    let secret = std::fs::read(&device.shared_key).unwrap();
    let json = serde_json::to_vec(&list).unwrap();
    assert!(!json.windows(secret.len()).any(|w| w == secret), "the shared key is not in the bundle");

    // After the grant, support is refused again; every step is audited.
    assert!(matches!(
        ask(&admin, AdminAction::RevokeSupport { org: org.clone() }).await,
        AdminReply::SupportRevoked { .. }
    ));
    assert!(matches!(ask(&support, request()).await, AdminReply::Refused(_)));
    assert!(client.get::<glimpse_api::DiagnosticsList>(&path).await.is_err(), "reading needs the grant too");
    let audit = audit_of(&admin, &org).await;
    let requests: Vec<(bool, &str)> = audit
        .iter()
        .filter(|e| e.action.as_str() == "diagnostics.request")
        .map(|e| (e.refused, e.actor.as_str()))
        .collect();
    // Support refused, the other organisation's admin refused, support
    // under the grant, support after it.
    assert_eq!(requests.len(), 4, "{requests:?}");
    let done: Vec<_> = requests.iter().filter(|(refused, _)| !refused).collect();
    assert!(done.len() == 1 && done[0].1.contains("support"), "{requests:?}");
    assert_eq!(requests.iter().filter(|(_, actor)| actor.contains("support")).count(), 3, "{requests:?}");
    assert!(audit.iter().any(|e| e.action.as_str() == "diagnostics.read" && !e.refused));
    agent.terminate().await;
}
