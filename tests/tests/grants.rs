//! Support grants end to end over real HTTPS, against a real collector
//! with real agents connected over mutual TLS, on the collector's injected
//! clock (grants run out without sleeping):
//!
//! - support staff request a capture only under an active grant that
//!   includes captures and only with the organisation's capture consent;
//!   every step, refused or done, is in the audit log and filed under the
//!   grant (issue 21, item 5);
//! - a grant names what it includes (devices and status, metadata,
//!   captures, subject exports) and optionally which devices: the rest is
//!   refused or left out of lists and exports (item 6);
//! - operators run the service (status, sizes, health, audit) without a
//!   grant, but read an organisation's data only under its grant, which
//!   the audit log names for each read (item 7).

use std::sync::Arc;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use glimpse_admin_client::ApiClient;
use glimpse_common::clock::{Clock, ManualClock, SystemClock};
use glimpse_common::identity::AdminRole;
use glimpse_tests::*;

use glimpse_tests::api_call as call;

const HOUR: i64 = 3_600_000;

async fn get(client: &ApiClient, path: &str) -> (StatusCode, Value) {
    call(client, Method::GET, path, None).await
}

/// The body of an export (JSON lines), or the status it was refused with.
async fn export(client: &ApiClient, path: &str) -> Result<Vec<Value>, (StatusCode, String)> {
    let response = client.request(Method::GET, path).send().await.expect("request");
    let status = response.status();
    let text = response.text().await.expect("body");
    if !status.is_success() {
        return Err((status, text));
    }
    Ok(text.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect())
}

fn detail(problem: &Value) -> &str {
    problem["detail"].as_str().unwrap_or_default()
}

/// The organisation's audit entries, oldest first.
fn audit_of(tc: &TestCollector, org: &str) -> Vec<glimpse_store::audit::AuditEntry> {
    tc.collector.store().audit().entries(Some(org), 0, 100_000).unwrap()
}

/// Sends UDP datagrams to `port` on loopback until `done`.
async fn send_udp_until(port: u16, what: &str, mut done: impl FnMut() -> bool) {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        socket.send_to(b"glimpse-grants-payload", ("127.0.0.1", port)).unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn support_captures_only_under_a_grant_that_includes_captures_and_with_consent() {
    if !require_libpcap() {
        return;
    }
    init_logging();
    let org = "grantcaptureorg";
    let device = issue_device(org);
    let clock = Arc::new(ManualClock::new(SystemClock.now_millis()));
    let tc = TestCollector::start_with_clock(clock.clone()).await;
    let agent = start_agent(tc.addr(), &device);
    wait_for_status(&agent, "connected", |s| s.connected).await;
    let admin = api_client(&issue_admin(&tc, AdminRole::OrgAdmin, Some(org))).await;
    let support = api_client(&issue_admin(&tc, AdminRole::Support, Some(org))).await;
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = udp.local_addr().unwrap().port();
    let captures = format!("/api/v1/orgs/{org}/captures");
    let request = json!({"device": device.identity.device.as_str(), "interface": "lo",
        "filter": format!("udp dst port {port}"), "duration_secs": 60, "max_packets": 2});
    let grant = |body: Value| {
        let admin = admin.clone();
        async move {
            let (status, granted) =
                call(&admin, Method::POST, &format!("/api/v1/orgs/{org}/support"), Some(body)).await;
            assert_eq!(status, StatusCode::OK, "{granted}");
        }
    };

    // No grant: refused.
    let (status, problem) = call(&support, Method::POST, &captures, Some(request.clone())).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");
    assert!(detail(&problem).contains("only under a grant"), "{problem}");

    // A grant of the default scope (what a client that sends only the
    // hours gets) does not include captures.
    grant(json!({"hours": 2})).await;
    let (status, problem) = call(&support, Method::POST, &captures, Some(request.clone())).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");
    assert!(detail(&problem).contains("does not include captures"), "{problem}");
    let (_, org_status) = get(&admin, &format!("/api/v1/orgs/{org}")).await;
    assert_eq!(org_status["support_kinds"], json!(["devices", "metadata", "exports"]), "{org_status}");

    // A grant of captures, but no capture consent: refused by the consent.
    grant(json!({"hours": 2, "kinds": ["captures"]})).await;
    let (status, problem) = call(&support, Method::POST, &captures, Some(request.clone())).await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    assert!(detail(&problem).contains("consent"), "{problem}");

    // With consent: the capture runs on the real agent, headers only.
    let (status, _) =
        call(&admin, Method::PUT, &format!("/api/v1/orgs/{org}/consent"), Some(json!({"capture": true}))).await;
    assert_eq!(status, StatusCode::OK);
    wait_for_status(&agent, "consent reached the agent", |s| s.capture_consent).await;
    let (status, started) = call(&support, Method::POST, &captures, Some(request.clone())).await;
    assert_eq!(status, StatusCode::OK, "{started}");
    let id = started["id"].as_u64().expect("a capture id");
    let status_path = format!("{captures}/{}/{id}", device.identity.device);
    send_udp_until(port, "2 captured packets stored", || stored_captures(&tc, &device.identity.org).len() >= 2).await;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let (status, report) = get(&support, &status_path).await;
        assert_eq!(status, StatusCode::OK, "{report}");
        if report["state"] == "finished" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the capture did not finish: {report}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (status, packets) = get(&support, &format!("{status_path}/packets")).await;
    assert_eq!((status, packets["total"].as_u64()), (StatusCode::OK, Some(2)), "{packets}");
    assert!(packets["packets"].as_array().unwrap().iter().all(|p| p["headers_only"] == true));
    // That grant is of captures only: no metadata views.
    let (status, problem) =
        get(&support, &format!("/api/v1/orgs/{org}/devices/{}/latest", device.identity.device)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(detail(&problem).contains("does not include metadata"), "{problem}");
    // Support still changes nothing of the organisation's decisions.
    let (status, _) =
        call(&support, Method::PUT, &format!("/api/v1/orgs/{org}/consent"), Some(json!({"capture": false}))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Consent withdrawn: refused again, grant or not.
    let (status, _) =
        call(&admin, Method::PUT, &format!("/api/v1/orgs/{org}/consent"), Some(json!({"capture": false}))).await;
    assert_eq!(status, StatusCode::OK);
    let (status, problem) = call(&support, Method::POST, &captures, Some(request.clone())).await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    // The grant runs out on the collector's clock.
    let (status, _) =
        call(&admin, Method::PUT, &format!("/api/v1/orgs/{org}/consent"), Some(json!({"capture": true}))).await;
    assert_eq!(status, StatusCode::OK);
    clock.advance(2 * HOUR);
    let (status, problem) = call(&support, Method::POST, &captures, Some(request)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");
    assert!(detail(&problem).contains("only under a grant"), "{problem}");
    agent.shutdown().await;

    // Every step is in the audit log, and filed under the grant in force.
    let starts: Vec<(bool, String)> = audit_of(&tc, org)
        .into_iter()
        .filter(|e| e.action == "capture.start" && e.actor.contains("support of"))
        .map(|e| (e.outcome == glimpse_store::audit::AuditOutcome::Refused, e.detail))
        .collect();
    let refused: Vec<bool> = starts.iter().map(|(r, _)| *r).collect();
    assert_eq!(refused, [true, true, true, false, true, true], "{starts:#?}");
    assert!(starts[3].1.contains("under the support grant of grantcaptureorg given "), "{starts:#?}");
    assert!(starts[3].1.contains("devices, captures on all devices"), "{starts:#?}");
    let (status, activity) = get(&admin, &format!("/api/v1/orgs/{org}/support/activity")).await;
    assert_eq!(status, StatusCode::OK);
    let grants = activity["grants"].as_array().unwrap();
    assert_eq!(grants.len(), 2, "{activity}");
    assert_eq!(grants[0]["scope"], "devices, captures on all devices", "{activity}");
    assert_eq!(grants[1]["scope"], "devices, metadata, exports on all devices", "{activity}");
    let filed: Vec<&str> =
        grants[0]["actions"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    for step in ["capture.start", "capture.status", "capture.packets", "devices.latest", "consent.set"] {
        assert!(filed.contains(&step), "{step} not filed under the captures grant: {filed:?}");
    }
    assert!(activity["refused_outside_grants"].as_array().unwrap().iter().any(|e| e["action"] == "capture.start"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_limited_to_kinds_and_devices_shows_only_those() {
    init_logging();
    let org = "scopedgrantorg";
    let (shared, private) = (issue_device(org), issue_device(org));
    let clock = Arc::new(ManualClock::new(SystemClock.now_millis()));
    let tc = TestCollector::start_with_clock(clock.clone()).await;
    let agents = [start_agent(tc.addr(), &shared), start_agent(tc.addr(), &private)];
    for (agent, device) in agents.iter().zip([&shared, &private]) {
        wait_for_status(agent, "connected", |s| s.connected).await;
        wait_until("records stored", || tc.stored_records_of(&device.identity) > 0).await;
    }
    let admin = api_client(&issue_admin(&tc, AdminRole::OrgAdmin, Some(org))).await;
    let support = api_client(&issue_admin(&tc, AdminRole::Support, Some(org))).await;
    let (a, b) = (shared.identity.device.as_str(), private.identity.device.as_str());

    // Unknown kinds and bad device names are refused, not ignored.
    let support_path = format!("/api/v1/orgs/{org}/support");
    let (status, problem) =
        call(&admin, Method::POST, &support_path, Some(json!({"hours": 1, "kinds": ["everything"]}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    let (status, _) = call(&admin, Method::POST, &support_path, Some(json!({"hours": 1, "devices": ["../x"]}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Metadata of one device, for two hours.
    let body = json!({"hours": 2, "kinds": ["metadata"], "devices": [a]});
    let (status, granted) = call(&admin, Method::POST, &support_path, Some(body)).await;
    assert_eq!(status, StatusCode::OK, "{granted}");
    let (_, status_now) = get(&support, &format!("/api/v1/orgs/{org}")).await;
    assert_eq!(status_now["support_kinds"], json!(["devices", "metadata"]));
    assert_eq!(status_now["support_devices"], json!([a]));

    // Lists show only the granted device; the other is refused by name.
    let (_, devices) = get(&support, &format!("/api/v1/devices?org={org}")).await;
    let listed: Vec<&str> =
        devices["devices"].as_array().unwrap().iter().map(|d| d["device"].as_str().unwrap()).collect();
    assert_eq!(listed, [a], "{devices}");
    let (_, connected) = get(&support, &format!("/api/v1/orgs/{org}/devices")).await;
    assert_eq!(connected["devices"].as_array().unwrap().len(), 1, "{connected}");
    let (_, all) = get(&admin, &format!("/api/v1/devices?org={org}")).await;
    assert!(all["devices"].as_array().unwrap().len() >= 2, "the organisation's admin sees every device: {all}");
    assert_eq!(get(&support, &format!("/api/v1/orgs/{org}/devices/{a}/latest")).await.0, StatusCode::OK);
    assert_eq!(get(&support, &format!("/api/v1/orgs/{org}/devices/{a}/rates")).await.0, StatusCode::OK);
    for path in [format!("/api/v1/orgs/{org}/devices/{b}/latest"), format!("/api/v1/orgs/{org}/devices/{b}")] {
        let (status, problem) = get(&support, &path).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
        assert!(detail(&problem).contains(&format!("does not include device {b}")), "{problem}");
    }

    // An export without devices is an export of the granted ones.
    let base = format!("/api/v1/orgs/{org}/export");
    let lines = export(&support, &base).await.expect("export allowed");
    assert!(!lines.is_empty());
    assert!(lines.iter().all(|l| l["device"] == a), "only the granted device's records");
    let everything = export(&admin, &base).await.unwrap();
    assert!(everything.iter().any(|l| l["device"] == b), "the other device has records");
    let (status, text) = export(&support, &format!("{base}?device={a},{b}")).await.unwrap_err();
    assert_eq!(status, StatusCode::FORBIDDEN, "{text}");
    // Kinds not granted: captures, subject exports.
    let (status, _) = export(&support, &format!("{base}?kind=capture")).await.unwrap_err();
    assert_eq!(status, StatusCode::FORBIDDEN);
    let subject = json!({"subject": {"kind": "mac", "value": "02:00:5e:10:00:01"}});
    let (status, problem) =
        call(&support, Method::POST, &format!("/api/v1/orgs/{org}/subjects/export"), Some(subject.clone())).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(detail(&problem).contains("does not include exports"), "{problem}");

    // The grant runs out on the collector's clock, scope and all.
    clock.advance(2 * HOUR - 1);
    assert_eq!(get(&support, &format!("/api/v1/orgs/{org}/devices/{a}/latest")).await.0, StatusCode::OK);
    clock.advance(1);
    assert_eq!(get(&support, &format!("/api/v1/orgs/{org}/devices/{a}/latest")).await.0, StatusCode::FORBIDDEN);
    assert_eq!(get(&support, &format!("/api/v1/devices?org={org}")).await.0, StatusCode::FORBIDDEN);

    // The grant's scope is in the audit log.
    let audit = audit_of(&tc, org);
    let given =
        audit.iter().find(|e| e.action == "support.grant" && e.outcome == glimpse_store::audit::AuditOutcome::Done);
    assert!(given.unwrap().detail.contains(&format!("devices, metadata on devices {a}")), "{given:?}");
    for agent in agents {
        agent.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_run_the_service_but_read_an_organisations_data_only_under_its_grant() {
    init_logging();
    let org = "opgrantorg";
    let device = issue_device(org);
    let clock = Arc::new(ManualClock::new(SystemClock.now_millis()));
    let tc = TestCollector::start_with_clock(clock.clone()).await;
    let agent = start_agent(tc.addr(), &device);
    wait_for_status(&agent, "connected", |s| s.connected).await;
    wait_until("records stored", || tc.stored_records_of(&device.identity) > 0).await;
    let admin = api_client(&issue_admin(&tc, AdminRole::OrgAdmin, Some(org))).await;
    let operator = api_client(&issue_admin(&tc, AdminRole::Operator, None)).await;
    let d = device.identity.device.as_str();
    let latest = format!("/api/v1/orgs/{org}/devices/{d}/latest");
    let export_path = format!("/api/v1/orgs/{org}/export");
    let subject = json!({"subject": {"kind": "mac", "value": "02:00:5e:10:00:01"}});
    let subject_path = format!("/api/v1/orgs/{org}/subjects/export");

    // What running the service needs, without any grant.
    for path in [
        format!("/api/v1/orgs/{org}"),
        "/api/v1/orgs".to_owned(),
        "/api/v1/overview".to_owned(),
        format!("/api/v1/devices?org={org}"),
        format!("/api/v1/audit?org={org}"),
        "/api/v1/audit/verify".to_owned(),
        "/metrics".to_owned(),
    ] {
        let response = operator.request(Method::GET, &path).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
    }
    // The organisation's data: refused, and operators cannot grant
    // themselves access.
    let (status, problem) = get(&operator, &latest).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(detail(&problem).contains("operators may read opgrantorg only under a grant"), "{problem}");
    assert_eq!(export(&operator, &export_path).await.unwrap_err().0, StatusCode::FORBIDDEN);
    assert_eq!(call(&operator, Method::POST, &subject_path, Some(subject.clone())).await.0, StatusCode::FORBIDDEN);
    let (status, problem) =
        call(&operator, Method::POST, &format!("/api/v1/orgs/{org}/support"), Some(json!({"hours": 1}))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(detail(&problem).contains("only the admins of opgrantorg may grant"), "{problem}");

    // Under the organisation's grant: what it includes, nothing more.
    let (status, _) = call(
        &admin,
        Method::POST,
        &format!("/api/v1/orgs/{org}/support"),
        Some(json!({"hours": 1, "kinds": ["metadata"]})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(get(&operator, &latest).await.0, StatusCode::OK);
    assert!(!export(&operator, &export_path).await.expect("export under the grant").is_empty());
    let (status, problem) = call(&operator, Method::POST, &subject_path, Some(subject)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(detail(&problem).contains("does not include exports"), "{problem}");

    // Ended by the organisation: refused again.
    assert_eq!(call(&admin, Method::DELETE, &format!("/api/v1/orgs/{org}/support"), None).await.0, StatusCode::OK);
    assert_eq!(get(&operator, &latest).await.0, StatusCode::FORBIDDEN);
    agent.shutdown().await;

    // The audit log shows each case: service reads as they are, data reads
    // refused for want of a grant, and those under it naming the grant.
    let audit = audit_of(&tc, org);
    let by_operator: Vec<_> = audit.iter().filter(|e| e.actor.contains("(operator)")).collect();
    let refused = |action: &str| {
        by_operator.iter().any(|e| {
            e.action == action
                && e.outcome == glimpse_store::audit::AuditOutcome::Refused
                && e.detail.contains("only under a grant")
        })
    };
    let granted = |action: &str| {
        by_operator.iter().any(|e| {
            e.action == action
                && e.outcome == glimpse_store::audit::AuditOutcome::Done
                && e.detail.contains("under the support grant of opgrantorg given ")
                && e.detail.contains("(devices, metadata on all devices)")
        })
    };
    assert!(refused("devices.latest") && refused("data.export") && refused("subject.export"), "{by_operator:#?}");
    assert!(granted("devices.latest") && granted("data.export"), "{by_operator:#?}");
    assert!(by_operator.iter().any(|e| e.action == "org.status" && !e.detail.contains("grant")));
    // The organisation sees the operator's reads under its grant.
    let (_, activity) = get(&admin, &format!("/api/v1/orgs/{org}/support/activity")).await;
    let under: Vec<&str> =
        activity["grants"][0]["actions"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert!(under.contains(&"devices.latest") && under.contains(&"data.export"), "{activity}");
}
