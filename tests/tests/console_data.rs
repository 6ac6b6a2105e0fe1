//! The console's data endpoints end to end: a real collector, real agents
//! streaming over mutual TLS, every call over HTTPS with admin
//! certificates. Interface rates agree with the interval counters the
//! agent sent; the newest Wi-Fi report shows the fixture's stations; a
//! capture started through the API lists its packets decoded, headers
//! only; the operators' organisations and overview show the stored data,
//! consent and who changed it, the ingest rate and a certificate ending
//! soon; other organisations and non-operators are refused.

use std::ops::ControlFlow;

use glimpse_admin_client::{AdminClientError, ApiClient};
use glimpse_common::identity::{AdminRole, DeviceKind};
use glimpse_common::record::{DataKind, RecordBody};
use glimpse_tests::*;
use reqwest::Method;
use serde_json::{json, Value};

const ORG: &str = "dataorg";

async fn get(client: &ApiClient, path: &str) -> Value {
    client.get::<Value>(path).await.unwrap_or_else(|e| panic!("GET {path}: {e:?}"))
}

/// The problem status of a refused GET.
async fn refused(client: &ApiClient, path: &str) -> u16 {
    match client.get::<Value>(path).await {
        Err(AdminClientError::Problem(p)) => p.status,
        other => panic!("GET {path}: expected a problem, got {other:?}"),
    }
}

/// Counter records stored for `device`: (observed at, report).
fn stored_counters(tc: &TestCollector, device: &Device) -> Vec<(i64, glimpse_common::record::CounterReport)> {
    let mut out = Vec::new();
    tc.collector
        .store()
        .read_after(&device.identity.org, DataKind::Metadata, (None, None), None, &mut |_, stored| {
            if stored.device == device.identity.device {
                if let RecordBody::Counters(report) = stored.record.body {
                    out.push((stored.record.observed_at_ms, report));
                }
            }
            ControlFlow::Continue(())
        })
        .unwrap();
    out
}

/// An access point's fixture tree and stand-ins for its tools (`iw`,
/// `hostapd_cli`) printing what the real ones printed, as in
/// device_kinds.rs; the directories live as long as the returned pair.
fn fake_ap(config: &mut glimpse_agent::AgentConfig) -> (tempfile::TempDir, tempfile::TempDir) {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let sysroot = ap_sysroot("ap-data");
    copy_tree(&fixtures.join("devices/ap/root"), sysroot.path());
    let tools = tempfile::tempdir().expect("tempdir");
    for tool in ["iw", "hostapd_cli", "bridge", "lldpcli", "conntrack"] {
        std::fs::copy(fixtures.join("tools/fake-tool"), tools.path().join(tool)).expect("copy tool");
    }
    copy_tree(&fixtures.join("devices/ap/out"), &tools.path().join("out"));
    config.sysroot = sysroot.path().to_owned();
    let tool = |name: &str| vec![tools.path().join(name).display().to_string()];
    let commands = &mut config.probes.commands;
    commands.iw = tool("iw");
    commands.hostapd_cli = tool("hostapd_cli");
    commands.bridge = tool("bridge");
    commands.lldpcli = tool("lldpcli");
    commands.conntrack = tool("conntrack");
    (sysroot, tools)
}

fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_endpoints_show_what_agents_stream() {
    init_logging();
    // Registrations are imported at start: issue every device first. The
    // access point's certificate ends in 10 days, inside the warning window.
    let host = issue_device(ORG);
    let ap = issue_device_in(
        &pki().ours,
        ORG,
        DeviceKind::Ap,
        glimpse_certs::Validity {
            not_before: None,
            not_after: Some(time::OffsetDateTime::now_utc() + time::Duration::days(10)),
        },
    );
    let tc = TestCollector::start().await;
    set_consent(&tc, &host.identity.org, true);
    // The station view below names people, which takes location history.
    set_location_history(&tc, &host.identity.org, true);
    // One agent reads this host's real interfaces (changing counters), the
    // other the OpenWrt access-point fixture (stations, radios).
    let host_agent = start_agent(tc.addr(), &host);
    let mut ap_config = agent_config(tc.addr(), &ap);
    let _fake = fake_ap(&mut ap_config);
    let ap_agent = glimpse_agent::AgentHandle::spawn(ap_config).unwrap();
    wait_for_status(&host_agent, "connected with consent", |s| s.connected && s.capture_consent).await;
    wait_for_status(&ap_agent, "connected", |s| s.connected).await;

    let operator = api_client(&issue_admin(&tc, AdminRole::Operator, None)).await;
    let admin = api_client(&issue_admin(&tc, AdminRole::OrgAdmin, Some(ORG))).await;
    let outsider = api_client(&issue_admin(&tc, AdminRole::OrgAdmin, Some("otherorg"))).await;
    let support = api_client(&issue_admin(&tc, AdminRole::Support, Some(ORG))).await;
    let device_path = |d: &Device| format!("/api/v1/orgs/{ORG}/devices/{}", d.identity.device);

    // The newest Wi-Fi report: the fixture's radios and stations.
    wait_until("a wireless report stored", || tc.stored_records_of(&ap.identity) > 3).await;
    let latest = get(&admin, &format!("{}/latest", device_path(&ap))).await;
    let wireless = &latest["wireless"];
    let stations = wireless["report"]["stations"].as_array().expect("stations");
    assert!(stations.iter().any(|s| s["mac"] == "3c:22:fb:aa:bb:01" && s["hostname"] == "alice-laptop"), "{latest}");
    assert!(wireless["report"]["radios"].as_array().is_some_and(|r| !r.is_empty()));
    assert!(wireless["received_at_ms"].as_i64().unwrap() <= now_ms());
    assert_eq!((latest["wired"].clone(), latest["wan"].clone()), (Value::Null, Value::Null), "an access point");
    // What its clients' devices are (stored beside the first collection's
    // Wi-Fi report, so there by now).
    let clients = latest["client_devices"]["report"]["clients"].as_array().expect("client devices");
    assert!(
        clients.iter().any(|c| c["mac"] == "3c:22:fb:aa:bb:01" && c["os"] == "macOS" && c["vendor"] == "Apple"),
        "{latest}"
    );

    // A capture started over the API lists its packets, decoded, headers only.
    if require_libpcap() {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        let started: Value = admin
            .send(
                Method::POST,
                &format!("/api/v1/orgs/{ORG}/captures"),
                Some(&json!({"device": host.identity.device.as_str(), "interface": "lo",
                    "filter": format!("udp dst port {port}"), "duration_secs": 60, "max_packets": 3})),
            )
            .await
            .unwrap();
        let id = started["id"].as_u64().unwrap();
        let status_path = format!("/api/v1/orgs/{ORG}/captures/{}/{id}", host.identity.device);
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            if get(&admin, &status_path).await["state"] == "finished" {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "the capture did not finish");
            sender.send_to(b"glimpse-console-data-payload", ("127.0.0.1", port)).unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        wait_until("3 packets stored", || stored_captures(&tc, &host.identity.org).len() >= 3).await;
        let packets_path = format!("{status_path}/packets");
        let list = get(&admin, &packets_path).await;
        assert_eq!((list["total"].as_u64(), list["interface"].as_str()), (Some(3), Some("lo")), "{list}");
        for p in list["packets"].as_array().unwrap() {
            assert_eq!((p["protocol"].as_str(), p["dst_port"].as_u64()), (Some("udp"), Some(u64::from(port))), "{p}");
            assert_eq!((p["src_ip"].as_str(), p["dst_ip"].as_str()), (Some("127.0.0.1"), Some("127.0.0.1")));
            assert_eq!(p["headers_only"], true);
            // The payload was cut: 42 bytes of Ethernet, IPv4 and UDP headers kept.
            assert_eq!(p["captured_len"], 42);
            assert_eq!(p["original_len"].as_u64(), Some(42 + b"glimpse-console-data-payload".len() as u64));
            assert!(p["timestamp_us"].as_i64().unwrap() > 0);
        }
        let page = get(&admin, &format!("{packets_path}?offset=2&limit=2")).await;
        assert_eq!((page["total"].as_u64(), page["packets"].as_array().unwrap().len()), (Some(3), 1));
        assert_eq!(refused(&admin, &format!("{packets_path}?limit=1001")).await, 400);
        assert_eq!(refused(&admin, &format!("{packets_path}?colour=red")).await, 400, "unknown parameters refused");
        assert_eq!(refused(&outsider, &packets_path).await, 403);
        assert_eq!(refused(&support, &packets_path).await, 403, "support needs a grant");
        let unknown = format!("/api/v1/orgs/{ORG}/captures/{}/12345/packets", host.identity.device);
        assert_eq!(refused(&admin, &unknown).await, 404);
    }

    // The operators' views, while both devices are connected.
    wait_until("counters stored", || stored_counters(&tc, &host).len() >= 5).await;
    let orgs = get(&operator, "/api/v1/orgs").await;
    let ours = orgs["orgs"].as_array().unwrap().iter().find(|o| o["org"] == ORG).expect("our organisation").clone();
    assert_eq!(ours["connected_by_kind"], json!({"ap": 2}), "{ours}");
    assert!(ours["registered_devices"].as_u64().unwrap() >= 2);
    assert!(ours["records_received"].as_u64().unwrap() > 5);
    assert!(ours["stored_bytes"]["metadata"].as_u64().unwrap() > 0, "{ours}");
    assert_eq!(ours["capture_consent"], true);
    assert!(ours["consent_changed_by"].as_str().is_some_and(|by| by.contains("test-operator")), "{ours}");
    assert!(ours["consent_changed_at_ms"].as_i64().is_some());
    assert_eq!(ours["retention_days"], json!({"metadata": 60, "capture": 7}));
    let status = get(&admin, &format!("/api/v1/orgs/{ORG}")).await;
    assert_eq!(status["consent_changed_by"], ours["consent_changed_by"], "the org status says it too");

    let overview = get(&operator, "/api/v1/overview").await;
    let size = overview["store"].as_array().unwrap().iter().find(|s| s["org"] == ORG).expect("our store size").clone();
    assert!(size["metadata_bytes"].as_u64().unwrap() > 0 && size["bytes"].as_u64() >= size["metadata_bytes"].as_u64());
    let ingest = &overview["ingest"];
    assert!(ingest["records"].as_u64().unwrap() > 0 && ingest["bytes"].as_u64().unwrap() > 0, "{ingest}");
    assert!(ingest["records_per_sec"].as_f64().unwrap() > 0.0);
    let warning = overview["certificate_warnings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["subject"] == format!("{ORG}/{}", ap.identity.device))
        .unwrap_or_else(|| panic!("the access point's certificate ends soon: {overview}"))
        .clone();
    assert_eq!(warning["kind"], "device");
    assert!((9..=10).contains(&warning["days_left"].as_i64().unwrap()), "{warning}");
    // The collector's own certificate and CA, read from its config files.
    let own = overview["collector_certificates"].as_array().unwrap();
    let kinds: Vec<&str> = own.iter().map(|c| c["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["collector", "ca"], "{overview}");
    let served = glimpse_files::load_certs(&glimpse_certs::collector_cert_path(&pki().ours)).unwrap();
    let serial = glimpse_common::certificate::serial_hex_of(&served[0]).unwrap();
    assert_eq!(own[0]["serial"].as_str(), Some(serial.as_str()), "{overview}");
    assert!(own.iter().all(|c| c["days_left"].as_i64().unwrap() > 30), "the test PKI's certificates are long-lived");
    for path in ["/api/v1/orgs", "/api/v1/overview"] {
        assert_eq!(refused(&admin, path).await, 403, "{path} is for operators");
        assert_eq!(refused(&support, path).await, 403, "{path} is for operators");
    }

    // Interface rates agree with the counters sent: with the agent stopped
    // the stored set is fixed; one bucket over all of it is their sum over
    // their intervals.
    host_agent.shutdown().await;
    let counters = stored_counters(&tc, &host);
    let (from, to) = (counters.iter().map(|(at, _)| *at).min().unwrap() - 120_000, now_ms() + 60_000);
    let rates_path = format!("{}/rates", device_path(&host));
    let rates = get(&admin, &format!("{rates_path}?from_ms={from}&to_ms={to}&buckets=1")).await;
    assert_eq!(rates["reports"].as_u64(), Some(counters.len() as u64));
    let interfaces = rates["interfaces"].as_array().unwrap();
    assert!(!interfaces.is_empty(), "{rates}");
    let mut moving = 0;
    for series in interfaces {
        let name = series["name"].as_str().unwrap();
        let (mut tx, mut rx_errors, mut ms) = (0u128, 0u128, 0u128);
        for (_, report) in &counters {
            if let Some(d) = report.interfaces.iter().find(|d| d.name.as_str() == name) {
                tx += u128::from(d.tx_bytes);
                rx_errors += u128::from(d.rx_errors);
                ms += u128::from(report.interval_ms);
            }
        }
        let expect_tx = tx as f64 * 8000.0 / ms as f64;
        let got_tx = series["tx_bps"][0].as_f64().unwrap();
        assert!(
            (got_tx - expect_tx).abs() <= 0.01 + expect_tx * 1e-9,
            "{name}: {got_tx} b/s, counters say {expect_tx}"
        );
        let expect_err = rx_errors as f64 * 1000.0 / ms as f64;
        assert!((series["rx_errors_per_sec"][0].as_f64().unwrap() - expect_err).abs() <= 0.01);
        if got_tx > 0.0 {
            moving += 1;
        }
    }
    assert!(moving > 0, "some interface carried traffic (loopback carries the agent's own TLS): {rates}");
    // Many buckets: one value per bucket start, gaps as null.
    let rates = get(&admin, &format!("{rates_path}?from_ms={from}&to_ms={to}&buckets=60")).await;
    let starts = rates["bucket_starts_ms"].as_array().unwrap();
    assert_eq!(starts.len(), 60);
    assert_eq!(starts[0].as_i64(), Some(from));
    for series in rates["interfaces"].as_array().unwrap() {
        assert_eq!(series["tx_bps"].as_array().unwrap().len(), 60);
        assert!(series["tx_bps"].as_array().unwrap().iter().any(|v| !v.is_null()), "{series}");
    }
    // The default is the last hour.
    let default = get(&admin, &rates_path).await;
    assert_eq!(default["to_ms"].as_i64().unwrap() - default["from_ms"].as_i64().unwrap(), 3_600_000);
    // Bounds and scope.
    assert_eq!(refused(&admin, &format!("{rates_path}?buckets=501")).await, 400);
    assert_eq!(refused(&admin, &format!("{rates_path}?from_ms=10&to_ms=5")).await, 400);
    assert_eq!(refused(&admin, &format!("{rates_path}?from_ms=0&to_ms=4000000000")).await, 400, "31 days at most");
    assert_eq!(refused(&outsider, &rates_path).await, 403);
    assert_eq!(refused(&outsider, &format!("{}/latest", device_path(&ap))).await, 403);
    assert_eq!(refused(&support, &rates_path).await, 403, "support needs a grant");

    // Support under a grant may read; refusals and reads are audited.
    let _: Value =
        admin.send(Method::POST, &format!("/api/v1/orgs/{ORG}/support"), Some(&json!({"hours": 1}))).await.unwrap();
    assert!(get(&support, &rates_path).await["interfaces"].is_array());
    let mut entries = Vec::new();
    let mut after = 0;
    loop {
        let page = get(&operator, &format!("/api/v1/audit?org={ORG}&after_seq={after}")).await;
        entries.extend(page["entries"].as_array().unwrap().iter().cloned());
        match page["next_after_seq"].as_u64() {
            Some(next) => after = next,
            None => break,
        }
    }
    assert!(
        entries.iter().any(|e| e["action"] == "devices.rates" && e["refused"] == true),
        "cross-org refusal audited"
    );
    assert!(entries.iter().any(|e| e["action"] == "devices.latest" && e["refused"] == false));
    ap_agent.shutdown().await;
}
