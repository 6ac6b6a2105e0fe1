//! Per-device details as operators see them: real TLS and SSH sessions to a
//! real collector, and what the directory then says about each device (how
//! it is connected, which agent it runs, what its agent-health records
//! said, when its certificate expires), including registered devices that
//! are not connected.

use glimpse_collector::ingest::{device_detail, device_details, DeviceDetail, DeviceTransport as Transport};
use glimpse_common::bounded::BoundedVec;
use glimpse_common::identity::{DeviceId, DeviceKind};
use glimpse_common::record::{AgentHealth, Record, RecordBody};
use glimpse_common::wire::Batch;
use glimpse_tests::*;

fn find(all: &[DeviceDetail], device: &Device) -> DeviceDetail {
    all.iter().find(|d| d.device == device.identity.device.as_str()).cloned().expect("device listed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_show_how_they_connect_what_they_run_and_what_they_lost() {
    init_logging();
    let ap = issue_device("devicesorg");
    let switch = issue_ssh_device("devicesorg", DeviceKind::Switch);
    let idle = issue_device("devicesorg");
    let elsewhere = issue_device("otherdevicesorg");
    let tc = TestCollector::start().await;
    let org = ap.identity.org.clone();
    let (store, directory) = (tc.collector.store(), tc.collector.directory());
    let details = || device_details(store, directory, &org).expect("registry readable");

    // Before anything connects: every registered device of the organisation
    // is listed, not connected, and nothing is known of its agent.
    let before = details();
    assert_eq!(before.len(), 3, "{before:#?}");
    assert!(before.iter().all(|d| d.registered && !d.revoked && !d.connected && d.agent_version.is_none()));
    assert_eq!(find(&before, &switch).kind, "switch");

    // An access point over TLS sends its agent-health counters.
    let mut conn = try_connect(tc.addr(), &ap).await.expect("AP connects");
    let health = AgentHealth { dropped_metadata: 7, dropped_captures: 2, discarded_corrupt_spool: false };
    let batch = Batch {
        org: org.clone(),
        stream_seq: conn.stored_seq() + 1,
        records: BoundedVec::truncating(vec![Record { observed_at_ms: 1234, body: RecordBody::AgentHealth(health) }]),
    };
    conn.send_batch(&batch).await.expect("acknowledged");
    let now = find(&details(), &ap);
    assert!(now.connected && now.connected_since_ms.is_some(), "{now:#?}");
    assert_eq!(now.transport, Some(Transport::Tls));
    assert_eq!(now.tls_version.as_deref(), Some("TLSv1_3"));
    assert!(now.cipher.as_deref().is_some_and(|c| c.starts_with("TLS13_")), "{now:#?}");
    assert!(now.kex.is_some(), "{now:#?}");
    assert!(now.peer.as_deref().is_some_and(|p| p.starts_with("127.0.0.1:")), "{now:#?}");
    assert_eq!(now.agent_version.as_deref(), Some(env!("CARGO_PKG_VERSION")));
    assert_eq!(now.agent_build.as_deref(), option_env!("GLIMPSE_BUILD").filter(|b| !b.is_empty()));
    assert_eq!(now.records_received, 1);
    assert!(now.last_record_ms.is_some());
    let shown = now.health.expect("agent-health shown");
    assert_eq!((shown.dropped_metadata, shown.dropped_captures, shown.observed_at_ms), (7, 2, 1234));
    let registration = glimpse_certs::load_registrations(&pki().ours)
        .unwrap()
        .into_iter()
        .find(|r| r.device == ap.identity.device)
        .unwrap();
    assert_eq!(now.certificate_not_after_ms, Some(registration.not_after.unix_timestamp() * 1000));

    // Once it leaves, what was known stays and it is shown disconnected.
    conn.close().await;
    wait_until("the AP's session end is seen", || !find(&details(), &ap).connected).await;
    let gone = find(&details(), &ap);
    assert!(gone.connected_since_ms.is_none() && gone.last_seen_ms.is_some(), "{gone:#?}");
    assert_eq!(gone.health.map(|h| h.dropped_metadata), Some(7));
    assert_eq!(gone.agent_version.as_deref(), Some(env!("CARGO_PKG_VERSION")));

    // A switch over SSH: the algorithms its KEXINIT chose, no certificate
    // to expire.
    let ssh = ssh_agent_config(tc.ssh_addr(), &tc.ssh_fingerprint(), &switch);
    let conn = try_connect_with(ssh).await.expect("switch connects");
    wait_until("the switch's session is seen", || find(&details(), &switch).connected).await;
    let sw = find(&details(), &switch);
    assert_eq!((sw.transport, sw.tls_version.as_deref()), (Some(Transport::Ssh), None));
    assert_eq!(sw.certificate_not_after_ms, None);
    let offered = glimpse_collector::ingest::ssh::preferred_algorithms(false);
    let kex = sw.kex.clone().expect("key exchange told");
    assert!(offered.kex.iter().any(|k| k.as_ref() == kex) && !kex.starts_with("ext-info"), "{sw:#?}");
    let cipher = sw.cipher.clone().expect("cipher told");
    assert!(offered.cipher.iter().any(|c| c.as_ref() == cipher), "{sw:#?}");
    assert_eq!(sw.agent_version.as_deref(), Some(env!("CARGO_PKG_VERSION")));
    conn.close().await;

    // The one that never connected, by itself; an unknown device is none.
    let quiet = device_detail(store, directory, &org, &idle.identity.device).unwrap().expect("registered");
    assert!(quiet.registered && !quiet.connected && quiet.last_seen_ms.is_none() && quiet.transport.is_none());
    assert!(device_detail(store, directory, &org, &DeviceId::new("nobody").unwrap()).unwrap().is_none());
    // Another organisation's device is not listed here, nor this one there.
    assert!(details().iter().all(|d| d.device != elsewhere.identity.device.as_str()));
    let theirs = device_details(store, directory, &elsewhere.identity.org).unwrap();
    assert!(theirs.iter().all(|d| d.org == elsewhere.identity.org.as_str()));
}

fn problem_code(result: Result<serde_json::Value, glimpse_admin_client::AdminClientError>) -> String {
    match result {
        Err(glimpse_admin_client::AdminClientError::Problem(problem)) => problem.code,
        other => panic!("expected a problem document, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_devices_api_lists_and_shows_an_organisations_devices_to_those_allowed() {
    use glimpse_admin_client::ApiClient;
    use glimpse_common::identity::AdminRole;

    init_logging();
    let ap = issue_device("devicesapiorg");
    let idle = issue_device("devicesapiorg");
    let tc = TestCollector::start().await;
    let org = ap.identity.org.as_str().to_owned();
    let admin = ApiClient::new(&issue_admin(&tc, AdminRole::OrgAdmin, Some(&org))).await.unwrap();
    let outsider = ApiClient::new(&issue_admin(&tc, AdminRole::OrgAdmin, Some("someoneelse"))).await.unwrap();
    let support = ApiClient::new(&issue_admin(&tc, AdminRole::Support, Some(&org))).await.unwrap();

    let mut conn = try_connect(tc.addr(), &ap).await.expect("AP connects");
    let health = AgentHealth { dropped_metadata: 3, dropped_captures: 0, discarded_corrupt_spool: true };
    let batch = Batch {
        org: ap.identity.org.clone(),
        stream_seq: conn.stored_seq() + 1,
        records: BoundedVec::truncating(vec![Record { observed_at_ms: 99, body: RecordBody::AgentHealth(health) }]),
    };
    conn.send_batch(&batch).await.expect("acknowledged");

    let list: serde_json::Value = admin.get(&format!("/api/v1/devices?org={org}")).await.unwrap();
    let devices = list["devices"].as_array().unwrap_or_else(|| panic!("{list:#}"));
    assert_eq!(devices.len(), 2, "{list:#}");
    let live = devices.iter().find(|d| d["device"] == ap.identity.device.as_str()).expect("the AP");
    assert_eq!(
        (live["connected"].as_bool(), live["transport"].as_str(), live["kind"].as_str()),
        (Some(true), Some("tls"), Some("ap"))
    );
    assert_eq!(live["health"]["dropped_metadata"], 3);
    assert_eq!(live["health"]["discarded_corrupt_spool"], true);
    assert_eq!(live["agent_version"], env!("CARGO_PKG_VERSION"));
    assert!(live["certificate_not_after_ms"].is_i64() && live["tls_version"] == "TLSv1_3", "{live:#}");
    let quiet = devices.iter().find(|d| d["device"] == idle.identity.device.as_str()).expect("the idle one");
    assert_eq!((quiet["connected"].as_bool(), quiet["registered"].as_bool()), (Some(false), Some(true)));
    assert!(quiet["transport"].is_null() && quiet["last_seen_ms"].is_null(), "{quiet:#}");

    let one: serde_json::Value =
        admin.get(&format!("/api/v1/orgs/{org}/devices/{}", ap.identity.device)).await.unwrap();
    // The same, but for `last_seen_ms`, which is "now" while connected.
    let without_now = |mut v: serde_json::Value| {
        v.as_object_mut().unwrap().remove("last_seen_ms");
        v
    };
    assert_eq!(without_now(one.clone()), without_now(live.clone()));
    assert!(one["last_seen_ms"].as_i64() >= live["last_seen_ms"].as_i64());
    conn.close().await;

    // Refused: another organisation's admin, support without a grant, an
    // unknown device, an unknown or missing query parameter.
    assert_eq!(problem_code(outsider.get(&format!("/api/v1/devices?org={org}")).await), "forbidden");
    let path = format!("/api/v1/orgs/{org}/devices/{}", ap.identity.device);
    assert_eq!(problem_code(outsider.get(&path).await), "forbidden");
    assert_eq!(problem_code(support.get(&format!("/api/v1/devices?org={org}")).await), "forbidden");
    assert_eq!(problem_code(admin.get(&format!("/api/v1/orgs/{org}/devices/nobody")).await), "not-found");
    assert_eq!(problem_code(admin.get(&format!("/api/v1/devices?org={org}&extra=1")).await), "bad-request");
    assert_eq!(problem_code(admin.get("/api/v1/devices").await), "bad-request");
    let audit = tc.collector.store().audit().entries(Some(&org), 0, usize::MAX).unwrap();
    assert!(audit
        .iter()
        .any(|e| e.action == "devices.list" && e.outcome == glimpse_store::audit::AuditOutcome::Refused));
}

/// The `curl` lines of OPERATIONS.md's devices and admin-identities
/// sections, in order.
fn documented_curl_lines() -> Vec<String> {
    let doc = include_str!("../../docs/OPERATIONS.md");
    let start = doc.find("### Devices").expect("a devices section");
    let end = doc[start..].find("### Capture consent").map_or(doc.len(), |e| start + e);
    doc[start..end].lines().filter(|l| l.starts_with("curl ")).map(str::to_owned).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_curl_commands_work() {
    use glimpse_common::identity::AdminRole;

    if !require_tool("curl", "apt-get install curl") {
        return;
    }
    init_logging();
    let ap = issue_device("curlorg");
    let tc = TestCollector::start().await;
    let org = ap.identity.org.as_str().to_owned();
    let alice = issue_admin(&tc, AdminRole::OrgAdmin, Some(&org));
    let ops = issue_admin(&tc, AdminRole::Operator, None);
    let victim = issue_admin(&tc, AdminRole::Support, Some(&org));
    let victim_serial = {
        let der = glimpse_files::load_certs(&victim.cert).unwrap().remove(0);
        glimpse_certs::serial_hex_of(&der).unwrap()
    };
    tc.collector.reload().unwrap();
    let port = tc.collector.admin_addr().unwrap().port();
    let ca = glimpse_certs::ca_cert_path(&pki().ours);
    let path = |p: &std::path::Path| p.to_str().unwrap().to_owned();

    let lines = documented_curl_lines();
    assert_eq!(lines.len(), 4, "{lines:#?}");
    let mut outputs = Vec::new();
    for line in &lines {
        let line = line
            .replace("collector.example:9443", &format!("localhost:{port}"))
            .replace("orgs/acme/", &format!("orgs/{org}/"))
            .replace("org=acme", &format!("org={org}"))
            .replace("/ap-1", &format!("/{}", ap.identity.device))
            .replace("SERIAL", &victim_serial);
        let mut args: Vec<String> = line.split_whitespace().skip(1).map(|a| a.trim_matches('"').to_owned()).collect();
        for arg in &mut args {
            *arg = match arg.as_str() {
                "pki/ca.pem" => path(&ca),
                "alice.pem" => path(&alice.cert),
                "alice.key" => path(&alice.key),
                "ops.pem" => path(&ops.cert),
                "ops.key" => path(&ops.key),
                other => other.to_owned(),
            };
        }
        args.extend(["--silent".into(), "--resolve".into(), format!("localhost:{port}:127.0.0.1")]);
        let output = tokio::task::spawn_blocking(move || std::process::Command::new("curl").args(&args).output())
            .await
            .unwrap()
            .expect("curl runs");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(output.status.success(), "{line}: {stdout} {}", String::from_utf8_lossy(&output.stderr));
        outputs.push(
            serde_json::from_str::<serde_json::Value>(&stdout).unwrap_or_else(|e| panic!("{line}: {e}: {stdout}")),
        );
    }
    assert!(outputs[0]["devices"].as_array().unwrap().iter().any(|d| d["device"] == ap.identity.device.as_str()));
    assert_eq!(outputs[1]["device"], ap.identity.device.as_str());
    assert!(outputs[2]["admins"].as_array().unwrap().iter().any(|a| a["serial"] == victim_serial.as_str()));
    assert_eq!(outputs[3]["was_active"], true);
    assert!(tc.collector.store().admins().is_revoked(&victim_serial));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_long_prints_every_device_in_a_table() {
    use glimpse_common::identity::AdminRole;

    init_logging();
    let ap = issue_device("clidevicesorg");
    let idle = issue_device("clidevicesorg");
    let tc = TestCollector::start().await;
    let admin = issue_admin(&tc, AdminRole::OrgAdmin, Some(ap.identity.org.as_str()));
    let mut conn = try_connect(tc.addr(), &ap).await.expect("AP connects");
    let health = AgentHealth { dropped_metadata: 7, dropped_captures: 0, discarded_corrupt_spool: false };
    let batch = Batch {
        org: ap.identity.org.clone(),
        stream_seq: conn.stored_seq() + 1,
        records: BoundedVec::truncating(vec![Record { observed_at_ms: 5, body: RecordBody::AgentHealth(health) }]),
    };
    conn.send_batch(&batch).await.expect("acknowledged");

    let args: Vec<String> = vec![
        "devices".into(),
        "--long".into(),
        "--org".into(),
        ap.identity.org.to_string(),
        "--admin".into(),
        admin.address.clone(),
        "--ca".into(),
        admin.ca.to_str().unwrap().into(),
        "--cert".into(),
        admin.cert.to_str().unwrap().into(),
        "--key".into(),
        admin.key.to_str().unwrap().into(),
    ];
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_collector-under-test")).args(&args).output()
    })
    .await
    .unwrap()
    .expect("the CLI runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("DEVICE") && lines[0].contains("CERT EXPIRES"), "{stdout}");
    let live = lines.iter().find(|l| l.starts_with(ap.identity.device.as_str())).unwrap_or_else(|| panic!("{stdout}"));
    for expected in
        ["ap", "connected", "tls", "TLS13_", "127.0.0.1:", env!("CARGO_PKG_VERSION"), "7 metadata, 0 captures"]
    {
        assert!(live.contains(expected), "{expected:?} missing in {live:?}");
    }
    let quiet =
        lines.iter().find(|l| l.starts_with(idle.identity.device.as_str())).unwrap_or_else(|| panic!("{stdout}"));
    assert!(quiet.contains("offline"), "{quiet}");
    conn.close().await;
}
