//! Several collectors serving as one, on a real PostgreSQL control plane:
//! a decision or a revocation made on one collector reaches the devices
//! connected to another, a token made on one works on the other, streams
//! resume from the sequence any collector stored, and the audit chain is
//! one.

use std::time::{Duration, Instant};

use glimpse_admin_client::admin_request;
use glimpse_common::identity::AdminRole;
use glimpse_common::wire::admin::{AdminAction, AdminReply};
use glimpse_postgres::{PgControl, PgTls, PostgresConfig};
use glimpse_tests::postgres::Postgres;
use glimpse_tests::*;

/// A migrated database and a master key file the collectors share.
fn shared_plane() -> Option<(Postgres, tempfile::TempDir, std::path::PathBuf)> {
    let pg = Postgres::start()?;
    let config = PostgresConfig { tls: PgTls::Disable, ..PostgresConfig::new(pg.url()) };
    PgControl::migrate(&config).expect("migrate");
    let dir = tempfile::tempdir().unwrap();
    let master = dir.path().join("master.key");
    glimpse_store::keys::MasterKey::generate_file(&master).unwrap();
    Some((pg, dir, master))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consent_and_revocation_on_one_collector_reach_devices_on_another() {
    init_logging();
    let Some((pg, _keys, master)) = shared_plane() else { return };
    // Registered before the collectors start, which import registrations.
    let device = issue_device("pgconsent");
    let a = TestCollector::start_with_tables(Some(&master), &pg.control_toml()).await;
    let b = TestCollector::start_with_tables(Some(&master), &pg.control_toml()).await;
    let org = device.identity.org.clone();
    let agent = start_agent(b.addr(), &device);
    wait_for_status(&agent, "connected to B", |s| s.connected && s.acked_seq >= 1).await;
    let admin_on_a = issue_admin(&a, AdminRole::OrgAdmin, Some(org.as_str()));

    for wanted in [true, false, true] {
        let asked = Instant::now();
        match admin_request(&admin_on_a, AdminAction::SetConsent { org: org.clone(), capture: wanted }).await {
            Ok(AdminReply::ConsentSet { capture, changed: true, devices_told: 0 }) if capture == wanted => {}
            other => panic!("{other:?}"),
        }
        wait_for_status(&agent, "consent to reach the agent on B", |s| s.capture_consent == wanted).await;
        assert!(
            asked.elapsed() < Duration::from_secs(1),
            "consent {wanted} set on A reached the agent on B after {:?}",
            asked.elapsed()
        );
    }
    // B answers with what A decided.
    match admin_request(
        &issue_admin(&b, AdminRole::OrgAdmin, Some(org.as_str())),
        AdminAction::OrgStatus { org: org.clone() },
    )
    .await
    {
        Ok(AdminReply::OrgStatus { capture_consent: true, connected_devices: 1, .. }) => {}
        other => panic!("{other:?}"),
    }

    // Streams: what B stored, A knows (a device failing over resumes).
    let acked = agent.status().borrow().acked_seq;
    let row = pg.psql(&format!(
        "SELECT stream, seq FROM glimpse_stream_seq WHERE org = '{org}' AND device = '{}'",
        device.identity.device
    ));
    let (stream, seq) = row.trim().split_once('|').expect("one stream row");
    let stream = u64::from_ne_bytes(stream.parse::<i64>().unwrap().to_ne_bytes());
    assert!(seq.parse::<u64>().unwrap() >= acked, "{row}");
    assert!(a.collector.store().registry().stored_seq(&device.identity, stream).unwrap() >= acked);

    // A revocation imported on A closes the device's session on B.
    {
        let _guard = pki().lock();
        glimpse_certs::revoke(&pki().ours, &device.identity.org, &device.identity.device).unwrap();
    }
    let revoked = Instant::now();
    a.collector.reload().expect("reload A");
    wait_for_status(&agent, "the device on B disconnected", |s| !s.connected).await;
    assert!(revoked.elapsed() < Duration::from_secs(5), "the revocation took {:?} to reach B", revoked.elapsed());
    agent.shutdown().await;

    // Both collectors wrote to one audit chain, which verifies from either.
    for tc in [&a, &b] {
        let operator = issue_admin(tc, AdminRole::Operator, None);
        match admin_request(&operator, AdminAction::VerifyAudit).await {
            Ok(AdminReply::AuditVerified { entries }) => assert!(entries > 3, "{entries}"),
            other => panic!("{other:?}"),
        }
    }
    let consent_entries = pg.psql(&format!(
        "SELECT count(*) FROM glimpse_audit_lines WHERE convert_from(line, 'UTF8') LIKE '%consent.set%{org}%'"
    ));
    assert_eq!(consent_entries.trim(), "3", "each consent change audited once, in the shared chain");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restart_mid_stream_is_refused_spooled_and_everything_arrives_once() {
    init_logging();
    let Some((mut pg, _keys, master)) = shared_plane() else { return };
    let device = issue_device("pgrestart");
    let tc = TestCollector::start_with_tables(Some(&master), &pg.control_toml()).await;
    let agent = start_agent(tc.addr(), &device);
    wait_for_status(&agent, "streaming", |s| s.acked_seq >= 3).await;

    // The database goes away as in a crash: batches are refused with a
    // retry delay (or the connection fails), the agent keeps them, and
    // readiness says why.
    pg.kill();
    let telemetry = tc.collector.telemetry().clone();
    wait_until("readiness to name the control database", || {
        let readiness = telemetry.readiness();
        !readiness.ready && readiness.problems.iter().any(|p| p.contains("control database"))
    })
    .await;
    wait_for_status(&agent, "records to wait in the agent", |s| s.queued_records > 20).await;
    let acked_while_down = agent.status().borrow().acked_records;

    pg.start_server();
    wait_until("readiness to come back", || telemetry.readiness().ready).await;
    wait_for_status(&agent, "the backlog acknowledged", |s| s.acked_records > acked_while_down + 5).await;
    let status = agent.shutdown().await;
    assert_eq!(status.dropped_records, 0);
    assert_eq!(tc.stored_records_of(&device.identity) as u64, status.acked_records, "acknowledged = stored, once each");
}
