//! `glimpse-bench` end to end: the real binary starts its own collector
//! process, connects simulated devices over mutual TLS and SSH, streams, and
//! checks that the store holds exactly what was sent.

use std::process::Command;

fn bench(dir: &std::path::Path, args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_glimpse-bench"))
        .args(args)
        .arg("--json")
        .arg("--dir")
        .arg(dir)
        .output()
        .expect("glimpse-bench runs");
    assert!(out.status.success(), "glimpse-bench failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

#[test]
fn a_small_fleet_streams_and_everything_sent_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let report = bench(
        dir.path(),
        &["run", "--devices", "3", "--seconds", "1", "--records", "mixed", "--batch", "32", "--orgs", "2"],
    );
    assert_eq!(report["connections"], 3, "{report:#}");
    assert_eq!(report["errors"], 0, "{report:#}");
    let sent = report["records_sent"].as_u64().unwrap();
    assert!(sent > 0, "{report:#}");
    assert_eq!(report["records_acked"].as_u64(), Some(sent));
    assert_eq!(report["records_stored"].as_u64(), Some(sent));
    assert_eq!(report["stored_equals_sent"], true);
    assert!(report["latency_us"]["max"].as_u64().unwrap() >= report["latency_us"]["p50"].as_u64().unwrap());
    assert!(report["collector"]["peak_rss_kib"].as_u64().unwrap() > 0, "{report:#}");

    // The same PKI serves the SSH run: switches are issued beside the access points.
    let report = bench(dir.path(), &["run", "--devices", "2", "--seconds", "1", "--transport", "ssh", "--batch", "16"]);
    assert_eq!(report["transport"], "ssh");
    assert_eq!(report["stored_equals_sent"], true, "{report:#}");
}

#[test]
fn a_fleet_at_a_set_rate_sends_about_that_rate() {
    let dir = tempfile::tempdir().unwrap();
    // 4 devices, 1 record a batch, 20 records/s in all: 5 a second each.
    let report = bench(
        dir.path(),
        &["run", "--devices", "4", "--seconds", "2", "--batch", "1", "--rate", "20", "--window", "1"],
    );
    let sent = report["records_sent"].as_u64().unwrap();
    // Counts, not speed: a slow machine sends fewer, never more.
    assert!((4..=60).contains(&sent), "{report:#}");
    assert_eq!(report["stored_equals_sent"], true, "{report:#}");
}

#[test]
fn rustls_bulk_moves_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let report = bench(dir.path(), &["tls-bulk", "--seconds", "0.5"]);
    assert!(report["bytes"].as_u64().unwrap() > 0, "{report:#}");
    assert!(report["cipher_suite"].as_str().unwrap().starts_with("TLS13_"), "{report:#}");
}

#[test]
fn a_running_collector_is_loaded_through_its_pki_and_sighup() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    // A first run leaves a PKI and a collector config behind; the collector
    // started from them stands in for one an operator runs.
    let first = bench(dir.path(), &["run", "--devices", "1", "--seconds", "0"]);
    assert_eq!(first["connections"], 1, "{first:#}");
    let mut collector = Command::new(env!("CARGO_BIN_EXE_glimpse-bench"))
        .args(["collector", "--consent", "bench", "--config"])
        .arg(dir.path().join("collector.toml"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let ready = BufReader::new(collector.stdout.take().unwrap()).lines().next().unwrap().unwrap();
    let address = ready.split_whitespace().find_map(|w| w.strip_prefix("tls=")).unwrap().to_owned();
    let pid = collector.id().to_string();
    let pki = dir.path().join("pki");
    let other = tempfile::tempdir().unwrap();
    // Two devices: one already registered, one issued now and imported on SIGHUP.
    let report = bench(
        other.path(),
        &[
            "run",
            "--devices",
            "2",
            "--seconds",
            "1",
            "--collector",
            &address,
            "--pki",
            pki.to_str().unwrap(),
            "--collector-pid",
            &pid,
        ],
    );
    let _ = collector.kill();
    let _ = collector.wait();
    assert_eq!(report["connections"], 2, "{report:#}");
    let sent = report["records_sent"].as_u64().unwrap();
    assert!(sent > 0 && report["records_acked"].as_u64() == Some(sent), "{report:#}");
    assert!(report["records_stored"].is_null(), "the store is the running collector's: {report:#}");
    assert!(report["collector"]["peak_rss_kib"].as_u64().unwrap() > 0, "measured through --collector-pid: {report:#}");
}
