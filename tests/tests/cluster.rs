//! Three stateless collectors as one service, on a real PostgreSQL
//! control plane and a real three-node Garage cluster: agents stream
//! through all of them while a collector is killed with SIGKILL, a Garage
//! node dies, the whole object store goes away and comes back, and the
//! database restarts. Afterwards every acknowledged record is stored and
//! served exactly once, whichever collector stored it.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use glimpse_agent::AgentHandle;
use glimpse_postgres::{PgControl, PgTls, PostgresConfig};
use glimpse_tests::garage::Garage;
use glimpse_tests::postgres::Postgres;
use glimpse_tests::*;

const COLLECTOR: &str = env!("CARGO_BIN_EXE_collector-under-test");
const DEVICES: usize = 6;

/// Records the stopped agent of `device` left unacknowledged in its spool.
fn left_in_spool(device: &Device) -> usize {
    let bytes = std::fs::read(device.cert.with_file_name("spool")).unwrap_or_default();
    let spool = glimpse_agent::spool::format::replay(&bytes).expect("the spool replays");
    spool.queued.len() + spool.in_flight.as_ref().map_or(0, |(_, batch)| batch.len())
}

/// Waits until every agent has had `more` records acknowledged beyond
/// what it had when called.
async fn all_advance(agents: &[AgentHandle], what: &str, more: u64) {
    let from: Vec<u64> = agents.iter().map(|a| a.status().borrow().acked_records).collect();
    for (agent, from) in agents.iter().zip(from) {
        wait_for_status(agent, what, |s| s.acked_records >= from + more).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_collectors_lose_nothing_acknowledged_and_store_nothing_twice_through_every_fault() {
    init_logging();
    let Some(mut pg) = Postgres::start() else { return };
    let Some(mut garage) = Garage::start(3) else { return };
    let pg_config = PostgresConfig { tls: PgTls::Disable, ..PostgresConfig::new(pg.url()) };
    PgControl::migrate(&pg_config).expect("migrate");
    let keys = tempfile::tempdir().unwrap();
    let master = keys.path().join("master.key");
    glimpse_store::keys::MasterKey::generate_file(&master).unwrap();

    // Registered before the collectors start (they import at start).
    let devices: Vec<Device> = (0..DEVICES).map(|_| issue_device("clusterorg")).collect();
    let org = devices[0].identity.org.clone();
    // Collectors 0 and 2 talk to Garage node 0, collector 1 to node 1:
    // node 2 can die without any collector losing its endpoint.
    let files: Vec<CollectorFiles> = (0..3)
        .map(|i| {
            let tables = format!("{}{}", pg.control_toml(), garage.storage_toml([0, 1, 0][i]));
            CollectorFiles::with_tables(COLLECTOR, &master, &tables)
        })
        .collect();
    let mut processes = Vec::new();
    for f in &files {
        processes.push(Some(f.start().await));
    }
    let addresses: Vec<String> = files.iter().map(|f| f.addr().to_string()).collect();
    let agents: Vec<AgentHandle> = devices
        .iter()
        .map(|d| AgentHandle::spawn(agent_config_for_collectors(&addresses, None, d)).expect("agent"))
        .collect();
    for agent in &agents {
        wait_for_status(agent, "streaming", |s| s.connected && s.acked_seq >= 3).await;
    }

    // 1. The collector with the most agents dies mid-stream.
    let mut load: HashMap<std::net::SocketAddr, usize> = HashMap::new();
    for agent in &agents {
        if let Some(at) = agent.status().borrow().collector_addr {
            *load.entry(at).or_default() += 1;
        }
    }
    let (busiest, _) = load.iter().max_by_key(|(_, n)| **n).map(|(a, n)| (*a, *n)).expect("agents connected");
    let victim = files.iter().position(|f| f.addr() == busiest).expect("a collector of ours");
    processes[victim].take().expect("running").kill();
    all_advance(&agents, "streaming after the collector was killed", 10).await;
    for agent in &agents {
        assert_ne!(agent.status().borrow().collector_addr, Some(busiest), "an agent stayed on the dead collector");
    }

    // 2. One Garage node dies: writes go on (a quorum of two remains).
    garage.kill(2);
    all_advance(&agents, "streaming with one Garage node down", 10).await;

    // 3. The whole object store goes away: batches are refused and wait in
    // the agents; then it comes back and everything goes through.
    for n in 0..3 {
        garage.kill(n);
    }
    for agent in &agents {
        wait_for_status(agent, "records waiting while the object store is down", |s| s.queued_records > 10).await;
    }
    for n in 0..3 {
        garage.restart(n);
    }
    all_advance(&agents, "streaming after the object store came back", 10).await;

    // 4. The database restarts mid-stream.
    pg.kill();
    pg.start_server();
    all_advance(&agents, "streaming after the database restarted", 10).await;

    // Drain: agents first (their last batches acknowledged), then the
    // collectors still running.
    let mut finals = Vec::new();
    for agent in agents {
        finals.push(agent.shutdown().await);
    }
    for process in processes.iter_mut().filter_map(Option::take) {
        process.terminate().await;
    }

    // Read back as any collector would serve it: through the shared
    // catalog and objects, each record once.
    let stored = files[(victim + 1) % 3].stored_by_device(&org);
    for (device, status) in devices.iter().zip(&finals) {
        let records = stored.get(device.identity.device.as_str()).cloned().unwrap_or_default();
        let unique: BTreeSet<&String> = records.iter().collect();
        assert_eq!(records.len(), unique.len(), "{}: a record was served twice", device.identity.device);
        assert!(
            unique.len() as u64 >= status.acked_records,
            "{}: {} acknowledged, {} stored",
            device.identity.device,
            status.acked_records,
            unique.len()
        );
        let left = left_in_spool(device);
        assert_eq!(status.dropped_records, 0, "{status:?}");
        assert!(status.acked_records + left as u64 >= status.collected_records, "a record was lost: {status:?}");
        if left == 0 {
            assert_eq!(unique.len() as u64, status.acked_records, "{}: stored = acknowledged", device.identity.device);
        }
        assert!(status.connections >= 1);
    }
}

fn metadata_about(hostname: &str, mac: glimpse_common::record::MacAddr) -> glimpse_common::record::Record {
    use glimpse_common::bounded::{BoundedString, BoundedVec};
    glimpse_common::record::Record {
        observed_at_ms: 1,
        body: glimpse_common::record::RecordBody::Metadata(glimpse_common::record::DeviceMetadata {
            hostname: BoundedString::truncating(hostname),
            interfaces: BoundedVec::truncating(vec![glimpse_common::record::InterfaceStats {
                name: BoundedString::truncating("wlan0"),
                mac: Some(mac),
                ..Default::default()
            }]),
            ..Default::default()
        }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erase_and_retention_run_on_one_collector_hold_for_every_collector() {
    use glimpse_common::clock::{Clock, ManualClock, MILLIS_PER_DAY};
    use glimpse_common::wire::admin::{AdminAction, AdminReply, Subject};
    use glimpse_common::wire::Batch;

    init_logging();
    let Some(pg) = Postgres::start() else { return };
    let Some(garage) = Garage::start(1) else { return };
    PgControl::migrate(&PostgresConfig { tls: PgTls::Disable, ..PostgresConfig::new(pg.url()) }).expect("migrate");
    let keys = tempfile::tempdir().unwrap();
    let master = keys.path().join("master.key");
    glimpse_store::keys::MasterKey::generate_file(&master).unwrap();
    let device = issue_device("clustererase");
    let org = device.identity.org.clone();
    let clock = ManualClock::new(glimpse_common::clock::SystemClock.now_millis());
    let tables = format!("{}{}", pg.control_toml(), garage.storage_toml(0));
    let a = TestCollector::start_with_tables_at(Some(&master), &tables, Arc::new(clock.clone())).await;
    let b = TestCollector::start_with_tables_at(Some(&master), &tables, Arc::new(clock.clone())).await;

    // Alice's and bob's records arrive through A.
    let alice = glimpse_common::record::MacAddr([0x02, 0xa1, 0x1c, 0xe0, 0, 1]);
    let bob = glimpse_common::record::MacAddr([0x02, 0xb0, 0xb0, 0, 0, 2]);
    let mut conn = try_connect(a.addr(), &device).await.unwrap();
    let records = vec![metadata_about("alice-laptop", alice), metadata_about("bob-phone", bob)];
    let batch = Batch {
        org: org.clone(),
        stream_seq: conn.stored_seq() + 1,
        records: glimpse_common::bounded::BoundedVec::truncating(records),
    };
    conn.send_batch(&batch).await.unwrap();
    conn.close().await;
    let hostnames = |tc: &TestCollector| -> Vec<String> {
        let outcome = tc.collector.store().read(&org, glimpse_common::record::DataKind::Metadata, None, None).unwrap();
        assert!(outcome.problems.is_empty(), "{:?}", outcome.problems);
        let mut names: Vec<String> = outcome
            .records
            .iter()
            .filter_map(|r| match &r.record.body {
                glimpse_common::record::RecordBody::Metadata(m) => Some(m.hostname.as_str().to_owned()),
                _ => None,
            })
            .collect();
        names.sort();
        names
    };
    assert_eq!(hostnames(&b), ["alice-laptop", "bob-phone"], "B serves what A stored");

    // Erased through B: gone for A too.
    let admin_b = issue_admin(&b, glimpse_common::identity::AdminRole::OrgAdmin, Some(org.as_str()));
    match glimpse_admin_client::admin_request(
        &admin_b,
        AdminAction::EraseSubject { org: org.clone(), subject: Subject::Mac(alice) },
    )
    .await
    {
        Ok(AdminReply::SubjectErased { metadata: 1, .. }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(hostnames(&a), ["bob-phone"]);
    assert_eq!(hostnames(&b), ["bob-phone"]);

    // Sixty-one days on, A's sweep deletes the day for everyone: objects
    // and catalog rows.
    clock.advance(61 * MILLIS_PER_DAY);
    let report =
        glimpse_store::retention::sweep_checked(a.collector.store(), glimpse_store::retention::ClockCheck::Accept)
            .expect("sweep");
    assert!(report.segments_deleted >= 1, "{report:?}");
    assert!(hostnames(&b).is_empty());
    let rows = pg.psql(&format!("SELECT count(*) FROM glimpse_segments WHERE org = '{org}'"));
    assert_eq!(rows.trim(), "0", "the catalog forgot the deleted day");
}
