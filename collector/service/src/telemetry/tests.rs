use super::*;

use glimpse_common::bounded::BoundedString;
use glimpse_common::identity::{DeviceId, DeviceIdentity, DeviceKind, OrgId};
use glimpse_common::record::{AgentHealth, DataKind, DeviceMetadata, Record, RecordBody};
use glimpse_common::secret::SecretKey;
use glimpse_store::keys::MasterKey;

use crate::ingest::{RejectReason, Transport};

fn store(dir: &std::path::Path) -> Arc<Store> {
    let master = MasterKey::from_secret(SecretKey::from_bytes([5; 32]));
    let clock = Arc::new(glimpse_common::clock::SystemClock);
    Arc::new(Store::open(dir, master, clock, Default::default()).unwrap())
}

fn identity() -> DeviceIdentity {
    DeviceIdentity { org: OrgId::new("acme").unwrap(), device: DeviceId::new("ap-1").unwrap(), kind: DeviceKind::Ap }
}

fn metadata(hostname: &str) -> Record {
    Record {
        observed_at_ms: 1_700_000_000_000,
        body: RecordBody::Metadata(DeviceMetadata {
            hostname: BoundedString::truncating(hostname),
            ..Default::default()
        }),
    }
}

fn health(metadata: u64, captures: u64) -> Record {
    let body = AgentHealth { dropped_metadata: metadata, dropped_captures: captures, discarded_corrupt_spool: false };
    Record { observed_at_ms: 1_700_000_000_000, body: RecordBody::AgentHealth(body) }
}

/// The value of the sample named `name` with exactly `labels` (as
/// rendered, `a="b",c="d"`), if present.
fn sample(text: &str, name: &str, labels: &str) -> Option<f64> {
    let head = if labels.is_empty() { format!("{name} ") } else { format!("{name}{{{labels}}} ") };
    text.lines().find_map(|line| line.strip_prefix(&head)).map(|v| v.trim().parse().unwrap())
}

#[test]
fn render_shows_every_family_and_counters_move() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let t = Telemetry::new(store.clone(), 0);
    let text = t.render();
    assert!(text.ends_with("# EOF\n"), "OpenMetrics ends with # EOF");
    // Every reason and transport is there from the start, at zero.
    for reason in RejectReason::ALL {
        assert_eq!(sample(&text, "glimpse_refusals_total", &format!("reason=\"{}\"", reason.as_str())), Some(0.0));
    }
    assert_eq!(sample(&text, "glimpse_connections", "transport=\"admin\""), Some(0.0));
    assert_eq!(sample(&text, "glimpse_build_info", &format!("version=\"{}\"", env!("CARGO_PKG_VERSION"))), Some(1.0));
    for family in ["# TYPE glimpse_ack_latency_seconds histogram", "# TYPE glimpse_fsync_latency_seconds histogram"] {
        assert!(text.contains(family), "{family} missing from:\n{text}");
    }

    let m = t.ingest();
    m.reject(RejectReason::UnknownIssuer);
    m.reject(RejectReason::UnknownIssuer);
    m.authenticated(Transport::Ssh);
    let open = m.open_connection(Transport::Tls);
    let id = identity();
    let batch = vec![metadata("ap-1"), metadata("ap-1b"), health(3, 1)];
    m.received(&id.org, &batch);
    m.stored(&id, &batch, Duration::from_millis(2));
    m.acknowledged(Duration::from_millis(5));
    m.payload_cut(&id.org, 40);
    // The agent reports totals since it started: 3 then 5 is 2 more; a
    // lower total means it restarted, and all of it is new.
    m.stored(&id, &[health(5, 1)], Duration::ZERO);
    m.stored(&id, &[health(1, 0)], Duration::ZERO);
    let store_id = id.clone();
    store.append(&store_id, 1, 1, &[metadata("x")]).unwrap();
    store.audit_event("test", "test.event", None, glimpse_store::audit::AuditOutcome::Done, "one entry");
    t.refresh_store_size();
    t.sweep_done(&glimpse_store::retention::sweep(&store));

    let text = t.render();
    // GLIMPSE_PRINT_METRICS=1 cargo test -p glimpse-collector render_shows -- --nocapture shows the text.
    if std::env::var_os("GLIMPSE_PRINT_METRICS").is_some() {
        println!("{text}");
    }
    let acme_meta = "org=\"acme\",kind=\"metadata\"";
    assert_eq!(sample(&text, "glimpse_refusals_total", "reason=\"unknown-issuer\""), Some(2.0));
    assert_eq!(sample(&text, "glimpse_handshakes_total", "transport=\"ssh\""), Some(1.0));
    assert_eq!(sample(&text, "glimpse_connections", "transport=\"tls\""), Some(1.0));
    drop(open);
    assert_eq!(sample(&t.render(), "glimpse_connections", "transport=\"tls\""), Some(0.0));
    assert_eq!(sample(&text, "glimpse_records_received_total", acme_meta), Some(3.0));
    assert_eq!(sample(&text, "glimpse_records_stored_total", acme_meta), Some(5.0));
    let received_bytes = sample(&text, "glimpse_received_bytes_total", acme_meta).unwrap();
    assert!(received_bytes > 10.0, "{received_bytes}");
    assert_eq!(sample(&text, "glimpse_batches_stored_total", ""), Some(3.0));
    assert_eq!(sample(&text, "glimpse_payload_cut_bytes_total", "org=\"acme\""), Some(40.0));
    assert_eq!(sample(&text, "glimpse_agent_spool_dropped_records_total", acme_meta), Some(3.0 + 2.0 + 1.0));
    assert_eq!(sample(&text, "glimpse_agent_spool_dropped_records_total", "org=\"acme\",kind=\"capture\""), Some(1.0));
    assert_eq!(sample(&text, "glimpse_ack_latency_seconds_count", ""), Some(1.0));
    assert_eq!(sample(&text, "glimpse_fsync_latency_seconds_count", ""), Some(3.0));
    assert!(sample(&text, "glimpse_store_bytes", acme_meta).unwrap() > 0.0, "{text}");
    assert_eq!(sample(&text, "glimpse_store_segments", acme_meta), Some(1.0));
    assert!(sample(&text, "glimpse_audit_entries_appended_total", "").unwrap() >= 1.0);
    assert_eq!(sample(&text, "glimpse_retention_sweeps_total", "outcome=\"done\""), Some(1.0));
    assert_eq!(sample(&text, "glimpse_retention_segments_deleted_total", ""), Some(0.0));
    // The accessors read the same counters.
    assert_eq!(m.rejections(RejectReason::UnknownIssuer), 2);
    assert_eq!(m.stored_totals(), (3, 5));
    assert_eq!(m.payload_bytes_cut(), 40);
    assert_eq!(m.records_stored(&id.org, DataKind::Metadata), 5);
}

#[test]
fn consent_drops_count_as_drops_and_as_captures_without_consent() {
    let dir = tempfile::tempdir().unwrap();
    let t = Telemetry::new(store(dir.path()), 0);
    let org = OrgId::new("acme").unwrap();
    let records = [metadata("a"), metadata("b")];
    t.ingest().dropped(&org, records.iter(), crate::ingest::DropReason::NoConsent);
    let text = t.render();
    let labels = "org=\"acme\",kind=\"metadata\",reason=\"no-consent\"";
    assert_eq!(sample(&text, "glimpse_records_dropped_total", labels), Some(2.0));
    assert!(sample(&text, "glimpse_dropped_bytes_total", labels).unwrap() > 0.0);
    // Only capture records count as captures dropped without consent.
    assert_eq!(t.ingest().captures_dropped_without_consent(), 0);
}

#[test]
fn readiness_names_each_problem() {
    let dir = tempfile::tempdir().unwrap();
    let t = Telemetry::new(store(dir.path()), 0);
    assert_eq!(t.readiness(), Readiness { ready: true, problems: vec![] });
    t.expect("the TLS ingest listener");
    let r = t.readiness();
    assert!(!r.ready && r.problems == ["the TLS ingest listener is not running"], "{r:?}");
    assert!(!t.liveness().ready, "a part that never ran is not alive");
    let running = t.running("the TLS ingest listener");
    assert!(t.readiness().ready && t.liveness().ready);
    drop(running);
    assert!(!t.liveness().ready, "a part whose task ended is not alive");
    let _running = t.running("the TLS ingest listener");

    // Free space below the floor.
    let t2 = Telemetry::new(t.store.clone(), u64::MAX);
    let r = t2.readiness();
    assert!(!r.ready && r.problems.len() == 1 && r.problems[0].contains("min_free_bytes"), "{r:?}");
    assert!(t2.liveness().ready, "a full disk is not a reason to restart");
    assert!(free_bytes(dir.path()).unwrap() > 0);

    // A segment directory that cannot be written.
    let t3 = Telemetry::new(t.store.clone(), 0);
    let orgs = dir.path().join(glimpse_store::store::ORGS_DIR);
    let mode = |m| std::fs::set_permissions(&orgs, std::os::unix::fs::PermissionsExt::from_mode(m)).unwrap();
    mode(0o500);
    let r = t3.readiness();
    mode(0o700);
    // root writes anywhere: access() says so too.
    if !rustix::process::geteuid().is_root() {
        assert!(!r.ready && r.problems.iter().any(|p| p.contains("not writable")), "{r:?}");
    }

    t.stopping();
    let r = t.readiness();
    assert!(!r.ready && r.problems == ["the collector is shutting down"], "{r:?}");
}

#[test]
fn compaction_runs_count_what_they_merged() {
    let dir = tempfile::tempdir().unwrap();
    let t = Telemetry::new(store(dir.path()), 0);
    let done = Compacted { merges: 2, merged: 70, bytes: 4096, settled: 1 };
    t.compaction_done(&Ok((done, 0)));
    t.compaction_done(&Ok((Compacted::default(), 1)));
    let text = t.render();
    assert_eq!(sample(&text, "glimpse_compaction_runs_total", "outcome=\"done\""), Some(1.0), "{text}");
    assert_eq!(sample(&text, "glimpse_compaction_runs_total", "outcome=\"failed\""), Some(1.0));
    assert_eq!(sample(&text, "glimpse_compactions_total", ""), Some(2.0));
    assert_eq!(sample(&text, "glimpse_compaction_objects_merged_total", ""), Some(70.0));
    assert_eq!(sample(&text, "glimpse_compaction_written_bytes_total", ""), Some(4096.0));
}
