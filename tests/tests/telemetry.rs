//! Telemetry with real agents and real processes: `GET /metrics` over
//! HTTPS, parsed by Prometheus' own OpenMetrics parser (the Python
//! `prometheus_client`), moves as records arrive and refusals happen;
//! `/healthz`, `/readyz` and `/metrics` need no credential from the
//! configured ranges and one from anywhere else; the collector speaks the
//! systemd notification protocol to a real datagram socket.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};

use glimpse_admin_client::ApiClient;
use glimpse_collector::ingest::RejectReason;
use glimpse_common::identity::{AdminRole, DeviceKind};
use glimpse_tests::*;

const COLLECTOR: &str = env!("CARGO_BIN_EXE_collector-under-test");
const ORG: &str = "telemetryorg";

/// Parses OpenMetrics text with `prometheus_client.openmetrics.parser`,
/// which rejects anything malformed; returns every sample as
/// (name, labels, value).
fn parse(text: &str) -> Vec<(String, BTreeMap<String, String>, f64)> {
    const SCRIPT: &str = "import sys, json\n\
        from prometheus_client.openmetrics.parser import text_string_to_metric_families\n\
        out = [[s.name, s.labels, s.value] for f in text_string_to_metric_families(sys.stdin.read()) for s in f.samples]\n\
        json.dump(out, sys.stdout)\n";
    let mut child = Command::new("python3")
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "the parser refused the metrics: {}\n{text}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("parser output")
}

/// The value of `name` whose labels include every pair of `labels`,
/// summed over the series that match (0 when none does).
fn value(samples: &[(String, BTreeMap<String, String>, f64)], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|(n, l, _)| n == name && labels.iter().all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v)))
        .map(|(_, _, v)| v)
        .sum()
}

/// `GET /metrics` as a scraper does: status, content type, the text.
async fn scrape(client: &ApiClient) -> String {
    let response = client.request(reqwest::Method::GET, "/metrics").send().await.expect("scrape");
    assert_eq!(response.status(), 200);
    let content_type = response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    assert!(content_type.starts_with("application/openmetrics-text; version=1.0.0"), "{content_type}");
    response.text().await.expect("metrics text")
}

/// A probe's answer: the status and the JSON body.
async fn probe(client: &ApiClient, path: &str) -> (u16, serde_json::Value) {
    let response = client.request(reqwest::Method::GET, path).send().await.expect("probe");
    let status = response.status().as_u16();
    (status, response.json().await.expect("a JSON body"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_move_as_records_arrive_and_refusals_happen() {
    if !require_python_module("prometheus_client", "pip install prometheus_client") {
        return;
    }
    init_logging();
    let device = issue_device(ORG);
    let foreign = issue_device_in(&pki().foreign, ORG, DeviceKind::Ap, glimpse_certs::Validity::default());
    let tc = TestCollector::start().await;
    let telemetry = tc.collector.telemetry().clone();
    // From 127.0.0.1, in the default metrics_from: no credential.
    let scraper = anonymous_api(&tc).await;
    let before = parse(&scrape(&scraper).await);
    let stored = ("org", ORG);
    assert_eq!(value(&before, "glimpse_records_stored_total", &[stored]), 0.0);
    assert_eq!(value(&before, "glimpse_refusals_total", &[("reason", "unknown-issuer")]), 0.0);

    let agent = start_agent(tc.addr(), &device);
    wait_for_status(&agent, "two batches acknowledged", |s| s.acked_seq >= 2).await;
    // A real TLS client with a certificate from another CA.
    assert!(try_connect(tc.addr(), &foreign).await.is_err(), "a foreign certificate is refused");
    wait_until("the refusal counted", || tc.collector.metrics().rejections(RejectReason::UnknownIssuer) >= 1).await;
    let during = parse(&scrape(&scraper).await);
    let metadata = [stored, ("kind", "metadata")];
    assert!(value(&during, "glimpse_records_stored_total", &metadata) >= 2.0);
    assert!(value(&during, "glimpse_stored_bytes_total", &metadata) > 0.0);
    assert!(
        value(&during, "glimpse_records_received_total", &metadata)
            >= value(&during, "glimpse_records_stored_total", &metadata)
    );
    assert!(value(&during, "glimpse_batches_stored_total", &[]) >= 2.0);
    assert!(value(&during, "glimpse_refusals_total", &[("reason", "unknown-issuer")]) >= 1.0);
    assert!(value(&during, "glimpse_handshakes_total", &[("transport", "tls")]) >= 1.0);
    assert_eq!(value(&during, "glimpse_connections", &[("transport", "tls")]), 1.0, "the agent, connected");
    assert!(value(&during, "glimpse_connections", &[("transport", "admin")]) >= 1.0, "the scraper, connected");
    assert!(value(&during, "glimpse_ack_latency_seconds_count", &[]) >= 2.0);
    assert!(value(&during, "glimpse_fsync_latency_seconds_count", &[]) >= 2.0);
    // A histogram's +Inf bucket counts every observation.
    assert_eq!(
        value(&during, "glimpse_ack_latency_seconds_bucket", &[("le", "+Inf")]),
        value(&during, "glimpse_ack_latency_seconds_count", &[])
    );
    assert!(value(&during, "glimpse_audit_entries_appended_total", &[]) >= 1.0, "the retention policy audit");
    assert_eq!(value(&during, "glimpse_retention_sweeps_total", &[("outcome", "done")]), 1.0, "the start-up sweep");

    // The store size is the minute's listing: recomputed on demand here.
    let refresh = telemetry.clone();
    tokio::task::spawn_blocking(move || refresh.refresh_store_size()).await.unwrap();
    let sized = parse(&scrape(&scraper).await);
    assert!(value(&sized, "glimpse_store_bytes", &metadata) > 0.0);
    assert!(value(&sized, "glimpse_store_segments", &metadata) >= 1.0);

    // Counters keep moving while the agent streams.
    let so_far = value(&during, "glimpse_records_stored_total", &metadata);
    let seq = agent.status().borrow().acked_seq;
    wait_for_status(&agent, "more batches acknowledged", |s| s.acked_seq > seq).await;
    let later = parse(&scrape(&scraper).await);
    assert!(value(&later, "glimpse_records_stored_total", &metadata) > so_far);
    agent.shutdown().await;
}

/// From inside the ranges the probes answer without a credential; from
/// outside (here 127.0.0.1 is outside) they need one, and metrics an
/// operator's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_and_metrics_need_a_credential_outside_the_ranges() {
    init_logging();
    let tc = TestCollector::start().await;
    let anonymous = anonymous_api(&tc).await;
    for path in ["/healthz", "/readyz"] {
        let (status, body) = probe(&anonymous, path).await;
        assert_eq!(
            (status, &body["ready"], &body["problems"]),
            (200, &serde_json::json!(true), &serde_json::json!([]))
        );
    }
    tc.collector.shutdown().await;

    let tc = TestCollector::start_with_admin_settings("health_from = [\"192.0.2.0/24\"]").await;
    let anonymous = anonymous_api(&tc).await;
    for path in ["/healthz", "/readyz", "/metrics"] {
        let response = anonymous.request(reqwest::Method::GET, path).send().await.unwrap();
        assert_eq!(response.status(), 401, "{path} from outside the ranges without a credential");
        let problem: glimpse_api::Problem = response.json().await.expect("a problem document");
        assert_eq!(problem.code, "unauthenticated", "{path}");
    }
    let operator = api_client(&issue_admin(&tc, AdminRole::Operator, None)).await;
    let org_admin = api_client(&issue_admin(&tc, AdminRole::OrgAdmin, Some(ORG))).await;
    assert_eq!(probe(&org_admin, "/healthz").await.0, 200, "any admin may probe");
    assert_eq!(probe(&operator, "/readyz").await.0, 200);
    assert!(scrape(&operator).await.contains("glimpse_refusals_total"));
    let response = org_admin.request(reqwest::Method::GET, "/metrics").send().await.unwrap();
    assert_eq!(response.status(), 403, "metrics name every organisation: operators only");
}

/// The curl lines of docs/OPERATIONS.md's "Health and readiness" run as
/// written, with the test collector's address, CA and an operator's files
/// in place of the example ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_curl_examples_work() {
    if !require_tool("curl", "apt-get install curl") {
        return;
    }
    init_logging();
    let tc = TestCollector::start().await;
    let operator = issue_admin(&tc, AdminRole::Operator, None);
    let port = tc.collector.admin_addr().unwrap().port();
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/OPERATIONS.md")).unwrap();
    let section = doc.split("### Health and readiness").nth(1).expect("the section").split("\n### ").next().unwrap();
    let lines: Vec<&str> = section.lines().filter(|l| l.starts_with("curl ")).collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    let ca = glimpse_certs::ca_cert_path(&pki().ours);
    for line in lines {
        let args: Vec<String> = line
            .split_whitespace()
            .skip(1)
            .map(|arg| match arg {
                "/etc/glimpse/pki/ca.pem" => ca.display().to_string(),
                "operator.pem" => operator.cert.display().to_string(),
                "operator.key" => operator.key.display().to_string(),
                other => other.replace("collector.example.net:7444", &format!("localhost:{port}")),
            })
            .collect();
        let output = Command::new("curl")
            .args(["--resolve", &format!("localhost:{port}:127.0.0.1")])
            .args(&args)
            .output()
            .expect("curl runs");
        assert!(output.status.success(), "{line}: {}", String::from_utf8_lossy(&output.stderr));
        let body = String::from_utf8_lossy(&output.stdout);
        if line.ends_with("/readyz") {
            assert!(body.contains("\"ready\":true"), "{line}: {body}");
        } else {
            assert!(body.ends_with("# EOF\n") && body.contains("glimpse_refusals_total"), "{line}: {body}");
        }
    }
}

/// `READY=1` once the listeners are up, `WATCHDOG=1` at half
/// `WATCHDOG_USEC`, `STOPPING=1` on SIGTERM: read from a real datagram
/// socket named by `NOTIFY_SOCKET`, as systemd would.
#[test]
fn the_collector_process_notifies_systemd() {
    let dir = tempfile::tempdir().unwrap();
    let master = dir.path().join("master.key");
    glimpse_store::keys::MasterKey::generate_file(&master).unwrap();
    let port = free_port();
    std::fs::write(dir.path().join("collector.toml"), collector_toml(&dir.path().join("data"), &master, port)).unwrap();
    let socket_path = dir.path().join("notify");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    // A bound on a hang, not a timed assertion.
    socket.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut child = Killed({
        let _guard = pki().lock();
        let log = if std::env::var_os("GLIMPSE_TEST_LOG").is_some() { Stdio::inherit() } else { Stdio::null() };
        Command::new(COLLECTOR)
            .args(["serve", "--config"])
            .arg(dir.path().join("collector.toml"))
            .env("NOTIFY_SOCKET", &socket_path)
            .env("WATCHDOG_USEC", "200000")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start the collector")
    });
    let next = || {
        let mut buf = [0u8; 4096];
        let len = socket.recv(&mut buf).expect("a notification before the deadline");
        String::from_utf8(buf[..len].to_vec()).unwrap()
    };
    let ready = next();
    assert!(ready.starts_with("READY=1\nSTATUS="), "{ready:?}");
    // Ready means listening.
    std::net::TcpStream::connect(("127.0.0.1", port)).expect("the ingest port is open once READY=1 is sent");
    for _ in 0..3 {
        assert_eq!(next(), "WATCHDOG=1");
    }
    let _ = Command::new("kill").arg("-TERM").arg(child.0.id().to_string()).status();
    let stopping = loop {
        let message = next();
        if message != "WATCHDOG=1" {
            break message;
        }
    };
    assert!(stopping.starts_with("STOPPING=1"), "{stopping:?}");
    let status = child.0.wait().unwrap();
    assert!(status.success(), "exited with {status}");
}

/// A child process killed if the test ends without it exiting.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
