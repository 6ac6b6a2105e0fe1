//! The SSH transport end to end: switches and gateways stream over SSH
//! exactly as access points do over TLS; wrong keys, revoked devices and a
//! wrong host key are refused; and the real OpenSSH client, used as an
//! attacker would use it, gets nothing but the `glimpse` subsystem.

use std::path::Path;
use std::process::{Command, Output};

use glimpse_collector::ingest::RejectReason;
use glimpse_common::identity::DeviceKind;
use glimpse_common::record::{DataKind, RecordBody};
use glimpse_tests::*;

const ORG: &str = "sshorg";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switch_and_gateway_stream_over_ssh_and_export_like_tls_agents() {
    init_logging();
    let tc = TestCollector::start().await;
    set_consent(&tc, &glimpse_common::identity::OrgId::new(ORG).unwrap(), false);
    for kind in [DeviceKind::Switch, DeviceKind::Gateway] {
        let device = issue_ssh_device(ORG, kind);
        tc.collector.reload().expect("import the new registration");
        let marker = format!("{}-ssh-marker", kind.as_str());
        let sysroot = ap_sysroot(&marker);
        let mut config = ssh_agent_config(tc.ssh_addr(), &tc.ssh_fingerprint(), &device);
        config.sysroot = sysroot.path().to_owned();
        let agent = glimpse_agent::AgentHandle::spawn(config).unwrap();
        let status = wait_for_status(&agent, "3 batches acknowledged over SSH", |s| s.acked_seq >= 3).await;
        assert_eq!(status.cipher_suite.as_deref(), Some("SSH"));
        // Directives reach SSH agents too: consent was stated at connect.
        assert!(!status.capture_consent);
        let final_status = agent.shutdown().await;
        assert_eq!(tc.stored_records_of(&device.identity) as u64, final_status.acked_records, "acknowledged = stored");

        // Export reads the records back like any TLS agent's.
        let outcome = tc.collector.store().read(&device.identity.org, DataKind::Metadata, None, None).unwrap();
        let mine: Vec<_> = outcome.records.iter().filter(|r| r.device == device.identity.device).collect();
        assert!(!mine.is_empty());
        let RecordBody::Metadata(meta) = &mine[0].record.body else { panic!("metadata expected") };
        assert_eq!(meta.hostname.as_str(), marker);
        let line = glimpse_store::export::ExportLine::new(&device.identity.org, mine[0]);
        let json = serde_json::to_string(&line).unwrap();
        assert!(json.contains(&marker) && json.contains(device.identity.device.as_str()), "{json}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_revoked_wrong_device_and_access_point_keys_are_refused() {
    init_logging();
    let switch = issue_ssh_device(ORG, DeviceKind::Switch);
    let other = issue_ssh_device(ORG, DeviceKind::Switch);
    let tc = TestCollector::start().await;
    let fingerprint = tc.ssh_fingerprint();

    // A key nobody registered.
    let stranger_dir = tempfile::tempdir().unwrap();
    let stranger = glimpse_certs::ssh::generate_ed25519("stranger").unwrap();
    let stranger_key = stranger_dir.path().join("key");
    std::fs::write(&stranger_key, stranger.private_openssh.as_bytes()).unwrap();
    // Private, as the agent requires of every key it reads.
    std::fs::set_permissions(&stranger_key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let mut unknown = ssh_agent_config(tc.ssh_addr(), &fingerprint, &switch);
    set_ssh_key(&mut unknown, &stranger_key);
    expect_ssh_refused(&tc, unknown, RejectReason::RegistrationMismatch).await;

    // Another device's real key, logging in as this device.
    let mut borrowed = ssh_agent_config(tc.ssh_addr(), &fingerprint, &switch);
    set_ssh_key(&mut borrowed, other.ssh_key.as_ref().unwrap());
    expect_ssh_refused(&tc, borrowed, RejectReason::RegistrationMismatch).await;

    // A user name that is no registered device.
    let mut nobody = ssh_agent_config(tc.ssh_addr(), &fingerprint, &switch);
    if let glimpse_agent::config::TransportSecurity::Ssh(ssh) = &mut nobody.security {
        ssh.user = format!("{ORG}/no-such-device");
    }
    expect_ssh_refused(&tc, nobody, RejectReason::UnknownDevice).await;

    // The right key works, until the device is revoked.
    let good = ssh_agent_config(tc.ssh_addr(), &fingerprint, &switch);
    try_connect_with(good.clone()).await.expect("registered key accepted").close().await;
    {
        let _guard = pki().lock();
        glimpse_certs::revoke(&pki().ours, &switch.identity.org, &switch.identity.device).unwrap();
    }
    tc.collector.reload().expect("reload");
    expect_ssh_refused(&tc, good, RejectReason::Revoked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_host_key_makes_the_agent_refuse_before_logging_in() {
    init_logging();
    let switch = issue_ssh_device(ORG, DeviceKind::Gateway);
    let tc = TestCollector::start().await;
    // A pinned fingerprint of some other host.
    let impostor = glimpse_certs::ssh::generate_ed25519("impostor").unwrap();
    let impostor_key = glimpse_certs::ssh::parse_device_public_key(&impostor.public_openssh).unwrap();
    let pinned = glimpse_certs::ssh::fingerprint(&impostor_key);
    let config = ssh_agent_config(tc.ssh_addr(), &pinned, &switch);
    let err = try_connect_with(config.clone()).await.unwrap_err();
    match &err {
        glimpse_agent::transport::TransportError::HostKeyMismatch { expected, presented } => {
            assert_eq!(expected, &pinned);
            assert_eq!(presented, &tc.ssh_fingerprint());
        }
        other => panic!("expected a host key mismatch, got {other}"),
    }
    assert!(err.to_string().contains("refusing to connect"), "{err}");
    // The daemon keeps refusing, and never logged in (nothing counted as a
    // device refusal on the collector, nothing stored).
    let agent = glimpse_agent::AgentHandle::spawn(config).unwrap();
    let status = wait_for_status(&agent, "host key refusal reported", |s| s.last_error.is_some()).await;
    assert!(status.last_error.unwrap().contains("is not the pinned"));
    agent.shutdown().await;
    assert_eq!(tc.stored_records_of(&switch.identity), 0);
}

fn set_ssh_key(config: &mut glimpse_agent::AgentConfig, key: &Path) {
    if let glimpse_agent::config::TransportSecurity::Ssh(ssh) = &mut config.security {
        ssh.key_path = key.to_owned();
    }
}

async fn expect_ssh_refused(tc: &TestCollector, config: glimpse_agent::AgentConfig, reason: RejectReason) {
    let before = tc.collector.metrics().rejections(reason);
    let err = try_connect_with(config).await.expect_err("connection unexpectedly accepted");
    assert!(
        matches!(err, glimpse_agent::transport::TransportError::SshLoginRefused { .. }),
        "{reason:?}: unexpected error {err}"
    );
    wait_until(&format!("rejection {reason:?} counted"), || tc.collector.metrics().rejections(reason) > before).await;
}

/// Runs the system's OpenSSH client against the collector with `key`,
/// never touching the user's own SSH configuration or known hosts.
fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssh_client_gets_only_the_glimpse_subsystem() {
    if !require_tool("ssh", "apt-get install openssh-client") {
        return;
    }
    init_logging();
    let switch = issue_ssh_device(ORG, DeviceKind::Switch);
    let tc = TestCollector::start().await;
    let dir = tempfile::tempdir().unwrap();
    let registered = private_copy(dir.path(), switch.ssh_key.as_ref().unwrap());
    let user = format!("{}/{}", switch.identity.org, switch.identity.device);

    // Blocking processes run off the runtime so the collector keeps serving.
    let run = |key: std::path::PathBuf,
               user: String,
               options: Vec<&'static str>,
               command: Vec<&'static str>,
               stdin: Vec<u8>| {
        let tc = &tc;
        tokio::task::block_in_place(move || openssh(tc.ssh_addr(), &key, &user, &options, &command, &stdin))
    };

    // An unregistered key: denied at authentication.
    let stranger_dir = tempfile::tempdir().unwrap();
    let stranger = glimpse_certs::ssh::generate_ed25519("stranger").unwrap();
    std::fs::write(stranger_dir.path().join("raw"), stranger.private_openssh.as_bytes()).unwrap();
    let stranger_key = private_copy(stranger_dir.path(), &stranger_dir.path().join("raw"));
    let out = run(stranger_key, user.clone(), vec![], vec!["true"], Vec::new());
    assert_eq!(out.status.code(), Some(255), "{}", stderr(&out));
    assert!(stderr(&out).contains("Permission denied (publickey)"), "{}", stderr(&out));

    // Password authentication is not even offered.
    let out = run(
        registered.clone(),
        user.clone(),
        vec!["-o", "PreferredAuthentications=password,keyboard-interactive"],
        vec!["true"],
        Vec::new(),
    );
    assert_eq!(out.status.code(), Some(255), "{}", stderr(&out));
    assert!(stderr(&out).contains("Permission denied (publickey)"), "{}", stderr(&out));

    // The registered key asking for a shell (with and without a terminal),
    // a command, or a port forward: refused, and nothing runs.
    let out = run(registered.clone(), user.clone(), vec!["-T"], vec![], b"echo pwned\n".to_vec());
    assert_ne!(out.status.code(), Some(0));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("pwned"));
    assert!(stderr(&out).contains("shell request failed"), "{}", stderr(&out));
    let out = run(registered.clone(), user.clone(), vec!["-tt"], vec![], b"echo pwned\n".to_vec());
    assert_ne!(out.status.code(), Some(0));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("pwned"));
    let out = run(registered.clone(), user.clone(), vec![], vec!["echo", "pwned"], Vec::new());
    assert_ne!(out.status.code(), Some(0));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("pwned"));
    assert!(stderr(&out).contains("exec request failed"), "{}", stderr(&out));
    // A local forward (-W: stdio through a direct-tcpip channel) and a
    // remote one (-R).
    let out = run(registered.clone(), user.clone(), vec!["-W", "127.0.0.1:22"], vec![], Vec::new());
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("administratively prohibited"), "{}", stderr(&out));
    let out = run(
        registered.clone(),
        user.clone(),
        vec!["-N", "-o", "ExitOnForwardFailure=yes", "-R", "0:127.0.0.1:22"],
        vec![],
        Vec::new(),
    );
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("forwarding failed"), "{}", stderr(&out));
    let out = run(registered.clone(), user.clone(), vec!["-s"], vec!["sftp"], Vec::new());
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("subsystem request failed"), "{}", stderr(&out));

    // The glimpse subsystem with garbage instead of a Hello: a clean
    // protocol error frame, then the connection closes...
    let before = tc.collector.metrics().rejections(RejectReason::Protocol);
    let garbage = b"GET / HTTP/1.1\r\nHost: glimpse\r\n\r\n".to_vec();
    let out = run(registered.clone(), user.clone(), vec!["-s"], vec!["glimpse"], garbage);
    let reply = out.stdout.clone();
    assert!(!reply.is_empty(), "an error frame comes back: {}", stderr(&out));
    let mut reader = glimpse_common::wire::io::FrameReader::new(glimpse_common::wire::DEFAULT_MAX_FRAME_LEN);
    let mut cursor = std::io::Cursor::new(reply);
    let message: glimpse_common::wire::CollectorMessage = reader.next(&mut cursor).await.expect("one valid frame");
    assert!(matches!(message, glimpse_common::wire::CollectorMessage::Error(_)), "{message:?}");
    wait_until("protocol refusal counted", || tc.collector.metrics().rejections(RejectReason::Protocol) > before).await;

    // ...and the collector keeps serving: the real agent streams after all that.
    let agent =
        glimpse_agent::AgentHandle::spawn(ssh_agent_config(tc.ssh_addr(), &tc.ssh_fingerprint(), &switch)).unwrap();
    wait_for_status(&agent, "streaming after the abuse", |s| s.acked_seq >= 2).await;
    agent.shutdown().await;
}

/// Runs `ssh-audit` (from PyPI) against the collector's SSH port and returns
/// its exit code and JSON report.
fn ssh_audit(tc: &TestCollector, extra: &[&str]) -> (i32, serde_json::Value) {
    let addr = tc.ssh_addr();
    let output = Command::new("ssh-audit")
        .args(["-j", "-p", &addr.port().to_string()])
        .args(extra)
        .arg(addr.ip().to_string())
        .output()
        .expect("ssh-audit (pip install ssh-audit) is installed");
    let report = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("ssh-audit printed no JSON ({e}): {}", String::from_utf8_lossy(&output.stdout)));
    (output.status.code().unwrap_or(-1), report)
}

/// Every (section, algorithm, level, note) ssh-audit flagged at `level`.
fn audit_notes(report: &serde_json::Value, level: &str) -> Vec<String> {
    let mut found = Vec::new();
    for section in ["kex", "key", "enc", "mac"] {
        for entry in report[section].as_array().into_iter().flatten() {
            for note in entry["notes"][level].as_array().into_iter().flatten() {
                found.push(format!("{section} {}: {note}", entry["algorithm"]));
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_audit_finds_nothing_weak() {
    if !require_tool("ssh-audit", "pip install ssh-audit") {
        return;
    }
    init_logging();
    // The default: hybrid post-quantum key exchange first, curve25519 kept
    // for OpenSSH clients older than 9.9. Nothing fails; the only warnings
    // are that curve25519 is not post-quantum.
    let tc = TestCollector::start().await;
    let (code, report) = tokio::task::block_in_place(|| ssh_audit(&tc, &["--skip-rate-test"]));
    assert!(audit_notes(&report, "fail").is_empty(), "{:#}", report);
    let warnings = audit_notes(&report, "warn");
    assert!(warnings.iter().all(|w| w.starts_with("kex \"curve25519") && w.contains("post-quantum")), "{warnings:#?}");
    assert!(report["cves"].as_array().is_some_and(Vec::is_empty), "{:#}", report["cves"]);
    assert!(code <= 2, "ssh-audit exit {code}: {report:#}");
    let kex: Vec<_> = report["kex"].as_array().unwrap().iter().map(|k| k["algorithm"].as_str().unwrap()).collect();
    assert_eq!(kex[0], "mlkem768x25519-sha256");
    assert!(kex.contains(&"kex-strict-s-v00@openssh.com"), "Terrapin countermeasure offered: {kex:?}");

    // Post-quantum only: a clean bill, exit code 0, connection throttling
    // test included.
    let tc = TestCollector::start_with_ssh_settings(
        0,
        std::sync::Arc::new(glimpse_common::clock::SystemClock),
        "post_quantum_kex_only = true",
    )
    .await;
    let (code, report) = tokio::task::block_in_place(|| ssh_audit(&tc, &[]));
    assert!(audit_notes(&report, "fail").is_empty() && audit_notes(&report, "warn").is_empty(), "{report:#}");
    assert_eq!(code, 0, "{report:#}");
}
