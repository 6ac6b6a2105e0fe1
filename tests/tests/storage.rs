//! The store under bad conditions, end to end: damaged segments are
//! reported and skipped, never served or panicked on; another organisation's
//! key opens nothing; a master key with loose permissions, the wrong length or
//! the wrong value stops the collector with a clear error; export prints
//! stable JSON.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use glimpse_collector::config::CollectorConfig;
use glimpse_collector::service::open_store;
use glimpse_collector::Collector;
use glimpse_common::clock::SystemClock;
use glimpse_common::record::DataKind;
use glimpse_tests::*;

/// Streams a few batches from a fresh device into a fresh collector.
async fn collector_with_data(org: &str) -> (TestCollector, Device) {
    let device = issue_device(org);
    let tc = TestCollector::start().await;
    let agent = start_agent(tc.addr(), &device);
    wait_for_status(&agent, "records stored", |s| s.acked_seq >= 4).await;
    agent.shutdown().await;
    (tc, device)
}

fn segments(tc: &TestCollector) -> Vec<std::path::PathBuf> {
    let mut out: Vec<_> =
        tc.data_files().into_iter().map(|(p, _)| p).filter(|p| p.extension().is_some_and(|e| e == "seg")).collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_segments_are_reported_and_skipped() {
    init_logging();
    let (tc, device) = collector_with_data("storageorg").await;
    let store = tc.collector.store();
    let before = store.read(&device.identity.org, DataKind::Metadata, None, None).unwrap();
    assert!(before.problems.is_empty());
    let total = before.records.len();
    let segment = segments(&tc).pop().expect("a segment");

    // One flipped byte near the end: the block holding it fails GCM
    // authentication and is skipped; the rest is still served.
    let mut bytes = std::fs::read(&segment).unwrap();
    let at = bytes.len() - 20;
    bytes[at] ^= 0x01;
    std::fs::write(&segment, &bytes).unwrap();
    let damaged = store.read(&device.identity.org, DataKind::Metadata, None, None).unwrap();
    assert!(!damaged.problems.is_empty(), "corruption reported");
    assert!(damaged.records.len() < total && !damaged.records.is_empty(), "only the damaged block is lost");
    let problem = damaged.problems[0].to_string();
    assert!(problem.contains(segment.file_name().unwrap().to_str().unwrap()), "problem names the segment: {problem}");

    // A torn tail: the file cut in the middle of its last block.
    bytes[at] ^= 0x01;
    std::fs::write(&segment, &bytes[..bytes.len() - 7]).unwrap();
    let torn = store.read(&device.identity.org, DataKind::Metadata, None, None).unwrap();
    assert!(!torn.problems.is_empty());
    assert!(torn.records.len() < total);

    // Garbage in place of a segment.
    std::fs::write(&segment, b"not a segment at all").unwrap();
    let garbage = store.read(&device.identity.org, DataKind::Metadata, None, None).unwrap();
    assert!(!garbage.problems.is_empty());

    // Export goes on and says how much it skipped.
    let mut out = Vec::new();
    let (written, problems) =
        glimpse_store::export::export(store, &device.identity.org, DataKind::Metadata, None, None, &mut out).unwrap();
    assert_eq!(written, garbage.records.len());
    assert!(problems > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_organisations_data_is_unreadable_under_anothers_key() {
    init_logging();
    let (tc, device) = collector_with_data("keyorg-a").await;
    let store = tc.collector.store();
    let other = glimpse_common::identity::OrgId::new("keyorg-b").unwrap();
    // Give org B a key and a day directory, then plant org A's segment in it.
    store.org_keys().get_or_create(&other).unwrap();
    let segment = segments(&tc).pop().unwrap();
    let day_dir = segment.parent().unwrap();
    let planted_dir = tc
        .config
        .data_dir
        .join("orgs")
        .join(other.as_str())
        .join(DataKind::Metadata.as_str())
        .join(day_dir.file_name().unwrap());
    std::fs::create_dir_all(&planted_dir).unwrap();
    std::fs::copy(&segment, planted_dir.join(segment.file_name().unwrap())).unwrap();
    let outcome = store.read(&other, DataKind::Metadata, None, None).unwrap();
    assert!(outcome.records.is_empty(), "org A's records served as org B's");
    assert!(!outcome.problems.is_empty(), "the planted segment is reported");
    assert!(!store.read(&device.identity.org, DataKind::Metadata, None, None).unwrap().records.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_master_keys_stop_the_collector_with_a_clear_error() {
    init_logging();
    let (tc, _device) = collector_with_data("masterorg").await;
    let config: CollectorConfig = tc.config.clone();
    let key_file = config.master_key_file.clone();
    let original = std::fs::read(&key_file).unwrap();
    let TestCollector { collector, .. } = tc;
    collector.shutdown().await;

    let start_error = |config: CollectorConfig| async move {
        Collector::start(config).await.err().map(|e| e.to_string()).unwrap_or_else(|| "started".into())
    };

    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = start_error(config.clone()).await;
    assert!(err.contains(key_file.to_str().unwrap()), "{err}");

    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(&key_file, "abcd\n").unwrap();
    let err = start_error(config.clone()).await;
    assert!(err.contains(key_file.to_str().unwrap()), "{err}");

    // A well-formed but different key: the store refuses, and so does export.
    std::fs::write(&key_file, format!("{}\n", "11".repeat(32))).unwrap();
    let err = start_error(config.clone()).await;
    assert!(err.to_lowercase().contains("master key"), "{err}");
    assert!(open_store(&config, Arc::new(SystemClock)).is_err());

    std::fs::write(&key_file, &original).unwrap();
    assert!(open_store(&config, Arc::new(SystemClock)).is_ok(), "the right key opens the store again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_prints_stable_json_lines() {
    init_logging();
    let (tc, device) = collector_with_data("exportorg").await;
    let mut out = Vec::new();
    let (written, problems) = glimpse_store::export::export(
        tc.collector.store(),
        &device.identity.org,
        DataKind::Metadata,
        None,
        None,
        &mut out,
    )
    .unwrap();
    assert!(written >= 4);
    assert_eq!(problems, 0);
    let text = String::from_utf8(out).unwrap();
    assert_eq!(text.lines().count(), written);
    let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    for field in ["org", "device", "device_kind", "kind", "received_at", "observed_at", "record"] {
        assert!(first.get(field).is_some(), "missing {field}: {first}");
    }
    assert_eq!(first["org"], device.identity.org.as_str());
    assert_eq!(first["device"], device.identity.device.as_str());
    assert_eq!(first["kind"], "metadata");
    let meta = &first["record"]["metadata"];
    for field in ["kind", "hostname", "os_name", "os_version", "model", "kernel", "uptime_secs", "interfaces"] {
        assert!(meta.get(field).is_some(), "missing record.metadata.{field}: {meta}");
    }
    let lo = meta["interfaces"].as_array().unwrap().iter().find(|i| i["name"] == "lo").expect("lo exported");
    for field in [
        "name",
        "mac",
        "addresses",
        "oper_up",
        "mtu",
        "rx_bytes",
        "rx_packets",
        "rx_errors",
        "rx_dropped",
        "tx_bytes",
        "tx_packets",
        "tx_errors",
        "tx_dropped",
    ] {
        assert!(lo.get(field).is_some(), "missing interfaces[].{field}: {lo}");
    }

    // A window that excludes everything exports nothing.
    let mut out = Vec::new();
    let (none, _) = glimpse_store::export::export(
        tc.collector.store(),
        &device.identity.org,
        DataKind::Metadata,
        Some(glimpse_store::export::parse_time("2001-01-01").unwrap()),
        Some(glimpse_store::export::parse_time("2001-01-02").unwrap()),
        &mut out,
    )
    .unwrap();
    assert_eq!(none, 0);
    assert!(out.is_empty());
}
