//! The agent as a daemon: it keeps working while the collector is down,
//! catches up when it returns, bounds what it holds, and reloads its
//! credentials without a restart.

use std::sync::Arc;

use glimpse_common::clock::SystemClock;
use glimpse_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_rides_out_a_collector_outage_and_catches_up() {
    init_logging();
    let device = issue_device("outageorg");
    let port = free_port();
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let mut config = agent_config(addr, &device);
    config.max_queued_records = 5;
    let agent = glimpse_agent::AgentHandle::spawn(config).unwrap();

    // No collector yet: the agent keeps collecting, fails to connect with a
    // clear error, and drops its oldest records once 5 are queued.
    let status =
        wait_for_status(&agent, "records dropped while the collector is down", |s| s.dropped_records > 0).await;
    assert!(!status.connected);
    assert!(status.last_error.as_deref().unwrap_or("").contains("cannot connect"), "{status:?}");
    assert!(status.queued_records <= 5);

    let tc = TestCollector::start_on(port, Arc::new(SystemClock)).await;
    let status = wait_for_status(&agent, "caught up after the outage", |s| s.connected && s.acked_records >= 5).await;
    assert!(status.connections >= 1);
    agent.shutdown().await;
    assert!(tc.stored_records_of(&device.identity) >= 5);

    // The gap is on record: the agent said what it dropped, per kind.
    let stored = tc
        .collector
        .store()
        .read(&device.identity.org, glimpse_common::record::DataKind::Metadata, None, None)
        .unwrap();
    let health: Vec<_> = stored
        .records
        .iter()
        .filter_map(|r| match &r.record.body {
            glimpse_common::record::RecordBody::AgentHealth(h) if r.device == device.identity.device => Some(*h),
            _ => None,
        })
        .collect();
    let last = health.last().expect("an agent-health record reached the collector");
    assert!(last.dropped_metadata > 0 && last.dropped_captures == 0, "{last:?}");
    assert!(!last.discarded_corrupt_spool);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_reconnects_with_new_credentials() {
    init_logging();
    let device = issue_device("reloadorg");
    let tc = TestCollector::start().await;
    let agent = start_agent(tc.addr(), &device);
    wait_for_status(&agent, "first connection", |s| s.connections == 1 && s.acked_seq >= 1).await;

    // A broken reload is refused and the agent keeps running as it was.
    let mut broken = agent_config(tc.addr(), &device);
    if let glimpse_agent::config::TransportSecurity::Tls(tls) = &mut broken.security {
        tls.cert_path = "/nonexistent/device.pem".into();
    }
    assert!(agent.reload(broken).is_err());

    agent.reload(agent_config(tc.addr(), &device)).unwrap();
    let status = wait_for_status(&agent, "reconnected after reload", |s| s.connections >= 2 && s.connected).await;
    let acked = status.acked_seq;
    wait_for_status(&agent, "streaming after reload", |s| s.acked_seq > acked).await;
    let final_status = agent.shutdown().await;
    assert_eq!(tc.stored_records_of(&device.identity) as u64, final_status.acked_records, "acknowledged = stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_spool_entry_is_skipped_and_reported_not_fatal() {
    init_logging();
    let device = issue_device("spoolorg");
    let tc = TestCollector::start().await;
    let config = agent_config(tc.addr(), &device);
    let spool = config.spool.path.clone().expect("spool configured");
    // A spool whose only entry fails its checksum.
    let mut bytes = b"GLSPOOL\x01".to_vec();
    bytes.extend_from_slice(&7u64.to_be_bytes());
    bytes.extend_from_slice(&[0, 0, 0, 4, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4]);
    std::fs::write(&spool, &bytes).unwrap();

    let agent = glimpse_agent::AgentHandle::spawn(config).unwrap();
    wait_for_status(&agent, "streaming with a fresh spool", |s| s.acked_seq >= 2).await;
    agent.shutdown().await;
    let stored = tc
        .collector
        .store()
        .read(&device.identity.org, glimpse_common::record::DataKind::Metadata, None, None)
        .unwrap();
    // The one entry failed its checksum: skipped and counted, not the
    // whole spool thrown away.
    let reported = stored.records.iter().any(|r| {
        matches!(&r.record.body, glimpse_common::record::RecordBody::SpoolRecovery(s) if s.damaged_entries == 1 && !s.discarded)
    });
    assert!(reported, "the damaged spool is reported to the collector");
    assert!(glimpse_agent::spool::format::replay(&std::fs::read(&spool).unwrap()).is_ok(), "a sound spool replaced it");
}
