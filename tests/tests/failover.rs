//! Several collectors as one service (issue 20, item 3): an agent given
//! several collector addresses connects to one that answers, fails over
//! when it dies, keeps its spool across the move, and uses every address
//! a name resolves to. The collectors are the real program where they are
//! killed; every wait has a deadline and nothing is timed.

use std::collections::BTreeSet;
use std::net::{SocketAddr, ToSocketAddrs};

use glimpse_agent::config::CollectorAddress;
use glimpse_agent::AgentHandle;
use glimpse_tests::*;

const COLLECTOR: &str = env!("CARGO_BIN_EXE_collector-under-test");

/// Records the stopped agent of `device` left unacknowledged in its spool.
fn left_in_spool(device: &Device) -> usize {
    let bytes = std::fs::read(device.cert.with_file_name("spool")).unwrap_or_default();
    let spool = glimpse_agent::spool::format::replay(&bytes).expect("the spool replays");
    spool.queued.len() + spool.in_flight.as_ref().map_or(0, |(_, batch)| batch.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_whose_first_collector_is_closed_connects_to_the_second() {
    init_logging();
    let device = issue_device("failoverorg");
    let tc = TestCollector::start().await;
    let closed = SocketAddr::from(([127, 0, 0, 1], free_port()));
    // No server_name: each collector is checked against its own host, here
    // the IP address the collector's certificate carries.
    let config = agent_config_for_collectors(&[closed.to_string(), tc.addr().to_string()], None, &device);
    let agent = AgentHandle::spawn(config).unwrap();
    let status =
        wait_for_status(&agent, "streaming to the second collector", |s| s.connected && s.acked_seq >= 3).await;
    assert_eq!(status.collector_addr, Some(tc.addr()), "{status:?}");
    assert_eq!(status.collector, Some(tc.addr().to_string()));
    let final_status = agent.shutdown().await;
    assert_eq!(tc.stored_records_of(&device.identity) as u64, final_status.acked_records, "acknowledged = stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_fails_over_when_its_collector_is_killed_and_every_record_is_stored() {
    init_logging();
    let device = issue_device("failoverorg");
    // Two collectors of the same PKI, each with its own data directory.
    let files = [CollectorFiles::new(COLLECTOR), CollectorFiles::new(COLLECTOR)];
    let mut processes = [Some(files[0].start().await), Some(files[1].start().await)];
    let addresses: Vec<String> = files.iter().map(|f| f.addr().to_string()).collect();
    let agent = AgentHandle::spawn(agent_config_for_collectors(&addresses, None, &device)).unwrap();
    let status = wait_for_status(&agent, "streaming", |s| s.connected && s.acked_seq >= 5).await;

    // Whichever the agent started with (a random one) dies with SIGKILL
    // while the agent streams to it.
    let first = files.iter().position(|f| Some(f.addr()) == status.collector_addr).expect("one of the two");
    let other = 1 - first;
    processes[first].take().unwrap().kill();
    let before = agent.status().borrow().acked_records;
    let moved = wait_for_status(&agent, "streaming to the other collector", |s| {
        s.connected && s.collector_addr == Some(files[other].addr()) && s.acked_records > before + 5
    })
    .await;
    assert!(moved.connections >= 2, "{moved:?}");
    let final_status = agent.shutdown().await;
    processes[other].take().unwrap().terminate().await;

    // What the agent kept: after the drain nothing should be left, and
    // whatever is left is still in its spool, never dropped.
    let left = left_in_spool(&device);

    // Both stores, read as the offline export reads them (the killed one
    // as it was left).
    let (count_first, first_set) = files[first].stored(&device.identity);
    let (count_other, other_set) = files[other].stored(&device.identity);
    assert_eq!(count_first, first_set.len(), "a record was stored twice in the first collector");
    assert_eq!(count_other, other_set.len(), "a record was stored twice in the second collector");
    assert!(count_first > 0 && count_other > 0, "both collectors stored records: {count_first}, {count_other}");
    // A batch the first stored but could not acknowledge before it died
    // went to the other too: the union counts it once, as acknowledged.
    let union: BTreeSet<&String> = first_set.iter().chain(&other_set).collect();
    assert!(union.len() as u64 >= final_status.acked_records, "an acknowledged record is in neither store");
    if left == 0 {
        assert_eq!(union.len() as u64, final_status.acked_records, "every record the agent produced is stored");
    }
    assert!(
        final_status.acked_records + left as u64 >= final_status.collected_records,
        "a record was dropped: {final_status:?}, {left} left in the spool"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_address_a_name_resolves_to_is_a_candidate() {
    init_logging();
    // Registered before the collector starts: it imports registrations then.
    let device = issue_device("failoverorg");
    let tc = TestCollector::start().await;
    let port = tc.addr().port();
    let name = format!("localhost:{port}");
    let resolved = glimpse_agent::transport::resolve(
        &[CollectorAddress::parse(&name).unwrap()],
        std::time::Duration::from_secs(30),
    )
    .await;
    let candidates: BTreeSet<SocketAddr> = resolved.candidates.iter().map(|c| c.addr).collect();
    let system: BTreeSet<SocketAddr> = ("localhost", port).to_socket_addrs().unwrap().collect();
    assert_eq!(candidates, system, "every address of the name, as the system resolves it");
    assert_eq!(candidates.len(), resolved.candidates.len(), "each once");
    assert!(candidates.contains(&tc.addr()));
    if system.iter().any(SocketAddr::is_ipv6) && system.iter().any(SocketAddr::is_ipv4) {
        assert!(candidates.len() >= 2);
    } else {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "note: localhost resolves to one family only here ({system:?}); expansion checked for what it returns"
        );
    }

    // The agent reaches the collector through the name whichever address
    // it tries first (the collector listens on 127.0.0.1 only), and TLS
    // checks the certificate against the name, not the address.
    let agent = AgentHandle::spawn(agent_config_for_collectors(std::slice::from_ref(&name), None, &device)).unwrap();
    let status = wait_for_status(&agent, "streaming through the name", |s| s.connected && s.acked_seq >= 2).await;
    assert_eq!(status.collector, Some(name));
    assert_eq!(status.collector_addr, Some(tc.addr()));
    agent.shutdown().await;
}

/// A collector whose disk fills: the first refusal is waited out on the
/// same connection, the second sends the agent to the other collector of
/// the service, and the two stores together hold every acknowledged record,
/// none twice. Needs root (a small tmpfs), like the full-disk tests in
/// `faults.rs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_keeps_refusing_storage_is_left_for_another() {
    use glimpse_common::record::DataKind;
    use glimpse_tests::disk::{collector_on_small_disk_with, fill_disk};
    init_logging();
    let device = issue_device("failoverorg");
    let retry = "storage_retry_secs = 1";
    let small =
        [collector_on_small_disk_with("16m", retry, "").await, collector_on_small_disk_with("16m", retry, "").await];
    let addresses: Vec<String> = small.iter().map(|(_, _, _, c)| c.local_addr().to_string()).collect();
    let agent = AgentHandle::spawn(agent_config_for_collectors(&addresses, None, &device)).unwrap();
    let status = wait_for_status(&agent, "streaming", |s| s.connected && s.acked_seq >= 3).await;
    let first = small.iter().position(|(_, _, _, c)| Some(c.local_addr()) == status.collector_addr).unwrap();
    let other = 1 - first;

    let filler = fill_disk(&small[first].0.path().join("data"));
    let moved = wait_for_status(&agent, "moved to the other collector", |s| {
        s.storage_failovers >= 1 && s.connected && s.collector_addr == Some(small[other].3.local_addr())
    })
    .await;
    assert!(moved.storage_retries >= 2, "the first refusal was waited out: {moved:?}");
    let acked = moved.acked_records;
    wait_for_status(&agent, "streaming to the other collector", |s| s.acked_records >= acked + 5).await;
    let final_status = agent.shutdown().await;
    std::fs::remove_file(filler).unwrap();

    let stored = |index: usize| -> Vec<String> {
        let store = small[index].3.store();
        let outcome = store.read(&device.identity.org, DataKind::Metadata, None, None).unwrap();
        assert!(outcome.problems.is_empty(), "the full disk left damage: {:?}", outcome.problems);
        outcome.records.iter().filter(|r| r.device == device.identity.device).map(|r| identify(&r.record)).collect()
    };
    let (in_first, in_other) = (stored(first), stored(other));
    for records in [&in_first, &in_other] {
        let distinct: BTreeSet<&String> = records.iter().collect();
        assert_eq!(records.len(), distinct.len(), "a record was stored twice by one collector");
    }
    let union: BTreeSet<&String> = in_first.iter().chain(&in_other).collect();
    assert!(union.len() as u64 >= final_status.acked_records, "an acknowledged record is in neither store");
    if left_in_spool(&device) == 0 {
        assert_eq!(union.len() as u64, final_status.acked_records, "acknowledged = stored in one of the two");
    }
    for (_, _, _, collector) in small {
        collector.shutdown().await;
    }
}
