//! Faults with real processes on loopback: the collector and the agent
//! are the real programs (built under test names), killed with SIGKILL in
//! the middle of their work and started again. Acknowledged means stored,
//! stored means once.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use glimpse_common::clock::SystemClock;
use glimpse_common::record::DataKind;
use glimpse_tests::disk::{collector_on_small_disk_with, fill_disk, Mounted};
use glimpse_tests::*;

const AGENT: &str = env!("CARGO_BIN_EXE_agent-under-test");
const COLLECTOR: &str = env!("CARGO_BIN_EXE_collector-under-test");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_killed_mid_stream_loses_no_acknowledged_record_and_stores_none_twice() {
    init_logging();
    let device = issue_device("faultorg");
    let files = CollectorFiles::new(COLLECTOR);
    let collector = files.start().await;
    let agent = start_agent(files.addr(), &device);
    wait_for_status(&agent, "streaming", |s| s.acked_seq >= 5).await;

    // Three times: kill -9 while the agent streams, start again, wait for
    // the agent to resume.
    let mut collector = Some(collector);
    for round in 0..3 {
        collector.take().unwrap().kill();
        let before = agent.status().borrow().acked_records;
        tokio::time::sleep(Duration::from_millis(300)).await;
        collector = Some(files.start().await);
        wait_for_status(&agent, &format!("resumed after kill {round}"), |s| {
            s.connected && s.acked_records > before + 3
        })
        .await;
    }
    let final_status = agent.shutdown().await;
    collector.take().unwrap().terminate().await;

    let (count, distinct) = files.stored(&device.identity);
    assert_eq!(count, distinct.len(), "a record was stored twice");
    assert_eq!(count as u64, final_status.acked_records, "stored = acknowledged");
    assert!(final_status.connections >= 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_killed_with_a_full_spool_delivers_it_after_restart() {
    init_logging();
    let device = issue_device("faultorg");
    let files = CollectorFiles::new(COLLECTOR);
    // The collector is down: the agent spools.
    let agent_dir = tempfile::tempdir().unwrap();
    let agent_config = agent_dir.path().join("agent.toml");
    std::fs::write(&agent_config, agent_toml(files.addr(), &device)).unwrap();
    let spool = device.cert.with_file_name("spool");
    let agent = Process::start(AGENT, &["run"], &agent_config);
    let spooled = |min: usize| {
        let bytes = std::fs::read(&spool).unwrap_or_default();
        glimpse_agent::spool::format::replay(&bytes).map(|s| s.queued.len()).unwrap_or(0) >= min
    };
    wait_until("records spooled while the collector is down", || spooled(10)).await;
    agent.kill();
    let bytes = std::fs::read(&spool).unwrap();
    let in_spool: BTreeSet<String> = glimpse_agent::spool::format::replay(&bytes)
        .expect("a spool left by kill -9 replays")
        .queued
        .iter()
        .map(|(_, r)| identify(r))
        .collect();
    assert!(in_spool.len() >= 10);

    // Collector up, agent restarted: the spooled records arrive, once.
    let collector = files.start().await;
    let agent = Process::start(AGENT, &["run"], &agent_config);
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Read through a second store handle only once the collector has
        // stopped; meanwhile watch the spool drain.
        let left = glimpse_agent::spool::format::replay(&std::fs::read(&spool).unwrap_or_default())
            .map(|s| s.queued.iter().filter(|(_, r)| in_spool.contains(&identify(r))).count())
            .unwrap_or(usize::MAX);
        if left == 0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "spooled records not delivered; {left} left");
    }
    agent.terminate().await;
    collector.terminate().await;
    let (count, stored) = files.stored(&device.identity);
    assert_eq!(count, stored.len(), "a record was stored twice");
    let missing: Vec<_> = in_spool.difference(&stored).collect();
    assert!(missing.is_empty(), "spooled records lost: {missing:?}");
}

/// Issue 17, item 13: one flipped bit in the spool of a stopped agent
/// costs the one record it hit, not every unacknowledged record; the agent
/// says so in its log and in a record the collector stores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_spool_bit_costs_one_record_and_is_reported() {
    use glimpse_agent::spool::format::{self, SpoolEntry, ENTRY_HEADER_LEN, HEADER_LEN};
    init_logging();
    let device = issue_device("faultorg");
    let files = CollectorFiles::new(COLLECTOR);
    // The collector is down: the agent spools.
    let agent_dir = tempfile::tempdir().unwrap();
    let agent_config = agent_dir.path().join("agent.toml");
    std::fs::write(&agent_config, agent_toml(files.addr(), &device)).unwrap();
    let spool = device.cert.with_file_name("spool");
    let agent = Process::start(AGENT, &["run"], &agent_config);
    let spooled = |min: usize| {
        let bytes = std::fs::read(&spool).unwrap_or_default();
        format::replay(&bytes).map(|s| s.queued.len()).unwrap_or(0) >= min
    };
    wait_until("records spooled while the collector is down", || spooled(20)).await;
    agent.kill();

    // Flip one bit in the middle of the body of the tenth record entry.
    let mut bytes = std::fs::read(&spool).unwrap();
    let before = format::replay(&bytes).unwrap();
    assert!(before.damage.is_empty());
    let mut offset = HEADER_LEN;
    let mut records_seen = 0;
    let damaged = loop {
        let len = u32::from_be_bytes(bytes[offset..offset + 4].try_into().unwrap()) as usize;
        let body = &bytes[offset + ENTRY_HEADER_LEN..offset + ENTRY_HEADER_LEN + len];
        if let Ok(SpoolEntry::Record { id, record }) = postcard::from_bytes::<SpoolEntry>(body) {
            records_seen += 1;
            if records_seen == 10 {
                bytes[offset + ENTRY_HEADER_LEN + len / 2] ^= 0x10;
                break (id, identify(&record));
            }
        }
        offset += ENTRY_HEADER_LEN + len;
    };
    std::fs::write(&spool, &bytes).unwrap();
    let expected: BTreeSet<String> =
        before.queued.iter().filter(|(id, _)| *id != damaged.0).map(|(_, r)| identify(r)).collect();
    assert_eq!(expected.len() + 1, before.queued.len());

    // Collector up, agent restarted: everything but the damaged record arrives, once.
    let collector = files.start().await;
    let agent = Process::start(AGENT, &["run"], &agent_config);
    wait_until("the spooled records delivered", || {
        format::replay(&std::fs::read(&spool).unwrap_or_default())
            .map(|s| s.damage.is_empty() && !s.queued.iter().any(|(_, r)| expected.contains(&identify(r))))
            .unwrap_or(false)
    })
    .await;
    agent.terminate().await;
    collector.terminate().await;

    let config = glimpse_collector::config::CollectorConfig::load(&files.config()).unwrap();
    let store = glimpse_collector::service::open_store(&config, Arc::new(SystemClock)).unwrap();
    let outcome = store.read(&device.identity.org, DataKind::Metadata, None, None).unwrap();
    let mine: Vec<_> = outcome.records.iter().filter(|r| r.device == device.identity.device).collect();
    let stored: Vec<String> = mine.iter().map(|r| identify(&r.record)).collect();
    let distinct: BTreeSet<&String> = stored.iter().collect();
    assert_eq!(stored.len(), distinct.len(), "a record was stored twice");
    let missing: Vec<_> = expected.iter().filter(|r| !distinct.contains(r)).collect();
    assert!(missing.is_empty(), "{} undamaged spooled records lost", missing.len());
    assert!(!distinct.contains(&damaged.1), "the damaged record is not delivered");
    let recovery: Vec<_> = mine
        .iter()
        .filter_map(|r| match &r.record.body {
            glimpse_common::record::RecordBody::SpoolRecovery(recovery) => Some(*recovery),
            _ => None,
        })
        .collect();
    assert_eq!(recovery.len(), 1, "one account of the damage: {recovery:?}");
    assert_eq!(recovery[0].records_lost, 1, "{recovery:?}");
    assert_eq!(recovery[0].damaged_entries, 1, "{recovery:?}");
    assert!(recovery[0].records_kept as usize >= expected.len(), "{recovery:?}");
    assert!(!recovery[0].discarded);
}

/// A TCP relay on 127.0.0.1 whose link can be cut (every connection
/// dropped, new ones refused) and restored, like a WAN outage.
struct CutProxy {
    addr: SocketAddr,
    cut: tokio::sync::watch::Sender<bool>,
}

impl CutProxy {
    async fn start(upstream: SocketAddr) -> CutProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (cut, _) = tokio::sync::watch::channel(false);
        let watch = cut.clone();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if *watch.borrow() {
                    continue; // dropped: the link is down
                }
                let mut down = watch.subscribe();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = down.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        CutProxy { addr, cut }
    }

    fn set_cut(&self, cut: bool) {
        self.cut.send_replace(cut);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_network_cut_is_buffered_and_replayed_once_restored() {
    init_logging();
    let device = issue_device("faultorg");
    let tc = TestCollector::start().await;
    let proxy = CutProxy::start(tc.addr()).await;
    let agent = start_agent(proxy.addr, &device);
    wait_for_status(&agent, "streaming through the link", |s| s.acked_seq >= 3).await;

    proxy.set_cut(true);
    wait_for_status(&agent, "the cut noticed", |s| !s.connected).await;
    let during = agent.status().borrow().collected_records;
    wait_for_status(&agent, "records collected during the cut", |s| s.collected_records >= during + 10).await;
    let collected_during_cut = agent.status().borrow().collected_records;

    proxy.set_cut(false);
    wait_for_status(&agent, "replayed after the link is back", |s| {
        s.connected && s.acked_records >= collected_during_cut && s.queued_records == 0
    })
    .await;
    let final_status = agent.shutdown().await;
    let stored = tc.collector.store().read(&device.identity.org, DataKind::Metadata, None, None).unwrap();
    let mine: Vec<String> =
        stored.records.iter().filter(|r| r.device == device.identity.device).map(|r| identify(&r.record)).collect();
    let distinct: BTreeSet<&String> = mine.iter().collect();
    assert_eq!(mine.len(), distinct.len(), "a record was stored twice");
    assert_eq!(mine.len() as u64, final_status.acked_records, "stored = acknowledged");
    assert_eq!(final_status.dropped_records, 0, "nothing dropped: the outage fit in the queue");
    assert!(final_status.connections >= 2);
}

/// A batch of `n` metadata records of a few hundred bytes each.
fn bulky_batch(org: &glimpse_common::identity::OrgId, seq: u64, n: usize) -> glimpse_common::wire::Batch {
    use glimpse_common::bounded::{BoundedString, BoundedVec};
    use glimpse_common::record::{DeviceMetadata, Record, RecordBody};
    let records = (0..n)
        .map(|i| Record {
            observed_at_ms: (seq * 100_000 + i as u64) as i64,
            body: RecordBody::Metadata(DeviceMetadata {
                hostname: BoundedString::truncating(&format!("{seq}-{i}-{}", "h".repeat(200))),
                os_name: BoundedString::truncating(&"o".repeat(200)),
                ..DeviceMetadata::default()
            }),
        })
        .collect();
    glimpse_common::wire::Batch { org: org.clone(), stream_seq: seq, records: BoundedVec::truncating(records) }
}

/// A collector whose data directory is a small tmpfs (root, like the
/// capture tests), with `limits` lines added to its `[limits]` table.
async fn collector_on_small_disk(
    size: &str,
    limits: &str,
) -> (tempfile::TempDir, Mounted, glimpse_collector::config::CollectorConfig, glimpse_collector::Collector) {
    collector_on_small_disk_with(size, limits, "").await
}

/// `GET /readyz` follows the free space of the data directory's file
/// system: 503 naming the floor when the disk fills, 200 again once space
/// is freed; `/healthz` stays 200 throughout (a restart would not free the
/// disk).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_goes_unready_on_a_full_disk_and_back() {
    init_logging();
    let (dir, _unmount, _, collector) = collector_on_small_disk_with("8m", "", "min_free_bytes = 1048576").await;
    let data = dir.path().join("data");
    let address = collector.admin_addr().expect("admin API").to_string();
    let ca = glimpse_certs::ca_cert_path(&pki().ours);
    let probe = glimpse_admin_client::ApiClient::anonymous(&address, "localhost", &ca).await.unwrap();
    let get = |path: &'static str| {
        let probe = probe.clone();
        async move {
            let response = probe.request(reqwest::Method::GET, path).send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<glimpse_api::Health>().await.unwrap())
        }
    };
    let (status, ready) = get("/readyz").await;
    assert_eq!(status, 200, "{ready:?}");
    let filler = fill_disk(&data);
    let (status, full) = get("/readyz").await;
    assert_eq!(status, 503, "{full:?}");
    assert!(!full.ready && full.problems.iter().any(|p| p.contains("min_free_bytes")), "{full:?}");
    assert_eq!(get("/healthz").await.0, 200, "a full disk is not a reason to restart");
    std::fs::remove_file(filler).unwrap();
    let (status, again) = get("/readyz").await;
    assert_eq!(status, 200, "{again:?}");
    collector.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_refused_clearly_and_corrupts_nothing() {
    init_logging();
    let device = issue_device("faultorg");
    let (dir, _unmount, _, collector) = collector_on_small_disk("8m", "storage_retry_secs = 1").await;
    let data = dir.path().join("data");

    // Batches of about 500 KB until the disk is full.
    let org = device.identity.org.clone();
    let mut conn = try_connect(collector.local_addr(), &device).await.unwrap();
    let mut seq = conn.stored_seq() + 1;
    let mut acked = 0usize;
    let refusal = loop {
        assert!(seq < 100, "8 MiB never filled up");
        let batch = bulky_batch(&org, seq, 1000);
        conn.session_mut().push_batch_at(seq, Arc::new(batch.records.clone()), Vec::new()).unwrap();
        conn.flush().await.unwrap();
        let refused = loop {
            match conn.next_event().await.unwrap() {
                glimpse_common::wire::AgentEvent::Acked { .. } => break None,
                glimpse_common::wire::AgentEvent::RetryLater { code, message, .. } => break Some((code, message)),
                // Consent and data policy, after the welcome.
                _ => {}
            }
        };
        match refused {
            None => {
                acked += batch.records.len();
                seq += 1;
            }
            Some(refusal) => break refusal,
        }
    };
    assert_eq!(refusal.0, glimpse_common::wire::ErrorCode::StorageUnavailable);
    assert!(refusal.1.contains("storage unavailable"), "{}", refusal.1);
    assert!(acked > 0, "some batches fitted");
    assert!(
        collector.metrics().rejections(glimpse_collector::ingest::RejectReason::StorageUnavailable) >= 1,
        "the refusal is counted"
    );

    // Space is freed; the same connection sends the refused batch again
    // after the stated delay, and it goes in once.
    let grown = Command::new("mount").args(["-o", "remount,size=64m"]).arg(&data).status().unwrap();
    assert!(grown.success());
    loop {
        match conn.next_event().await.unwrap() {
            glimpse_common::wire::AgentEvent::Acked { seq: got, .. } if got == seq => break,
            _ => {}
        }
    }
    acked += 1000;
    conn.close().await;
    let conn = try_connect(collector.local_addr(), &device).await.unwrap();
    assert_eq!(conn.stored_seq(), seq, "the stream resumes after the batch stored late");
    conn.close().await;

    let outcome = collector.store().read(&org, DataKind::Metadata, None, None).unwrap();
    assert!(outcome.problems.is_empty(), "the full disk left damage: {:?}", outcome.problems);
    let mine: Vec<String> =
        outcome.records.iter().filter(|r| r.device == device.identity.device).map(|r| identify(&r.record)).collect();
    let distinct: BTreeSet<&String> = mine.iter().collect();
    assert_eq!(mine.len(), distinct.len(), "a record was stored twice");
    assert_eq!(mine.len(), acked, "stored = acknowledged");
    collector.shutdown().await;
}

/// Issue 17, item 11: while the collector's disk is full, an agent keeps
/// its connection and waits as told, rather than reconnecting (a full TLS
/// handshake) every few hundred milliseconds; once the disk has room again
/// nothing acknowledged is lost and nothing is stored twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storage_outage_costs_no_handshakes_and_loses_nothing() {
    use glimpse_collector::ingest::RejectReason;
    init_logging();
    let device = issue_device("faultorg");
    let (dir, _unmount, _config, collector) = collector_on_small_disk("16m", "storage_retry_secs = 1").await;
    let agent = start_agent(collector.local_addr(), &device);
    wait_for_status(&agent, "streaming", |s| s.acked_seq >= 3).await;

    let filler = fill_disk(&dir.path().join("data"));
    let handshakes = collector.metrics().handshakes();
    let connections = agent.status().borrow().connections;
    // Three refused attempts: 1 s, then 2 s apart, on the same connection.
    wait_until("the collector refuses batches while the disk is full", || {
        collector.metrics().rejections(RejectReason::StorageUnavailable) >= 3
    })
    .await;
    let during = collector.metrics().handshakes() - handshakes;
    assert!(during <= 1, "{during} handshakes during the outage: the agent reconnected instead of waiting");
    let status = agent.status().borrow().clone();
    assert!(status.storage_retries >= 3, "{status:?}");
    assert!(status.connections <= connections + 1, "{status:?}");
    // Registrations imported now are a write into the control database
    // (redb) on the full disk; once there are enough rows that the commit
    // needs pages the file never had, it fails, and redb refuses every
    // later transaction until the file is re-opened.
    let mut during_outage = None;
    for _ in 0..10 {
        for _ in 0..40 {
            issue_device("faultorg");
        }
        if let Err(e) = collector.reload() {
            during_outage = Some(e);
            break;
        }
    }
    let during_outage = during_outage.expect("a registration written to a full disk fails");
    assert!(during_outage.to_string().contains("No space left"), "{during_outage}");

    // Room again: what waited is stored, once, by the same collector. A
    // write that failed inside the control database (redb) poisons it;
    // the collector re-opens the file by itself rather than refusing
    // every batch until a restart.
    std::fs::remove_file(&filler).unwrap();
    let acked = agent.status().borrow().acked_seq;
    wait_for_status(&agent, "streaming again once the disk has room", |s| s.acked_seq >= acked + 3).await;
    collector.reload().expect("the control database takes writes again without a restart");
    let final_status = agent.shutdown().await;
    let outcome = collector.store().read(&device.identity.org, DataKind::Metadata, None, None).unwrap();
    assert!(outcome.problems.is_empty(), "the outage left damage: {:?}", outcome.problems);
    let mine: Vec<String> =
        outcome.records.iter().filter(|r| r.device == device.identity.device).map(|r| identify(&r.record)).collect();
    let distinct: BTreeSet<&String> = mine.iter().collect();
    assert_eq!(mine.len(), distinct.len(), "a record was stored twice");
    assert_eq!(mine.len() as u64, final_status.acked_records, "stored = acknowledged");
    collector.shutdown().await;
}

/// The collector process's peak resident memory, from `/proc`.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// 1,000 agents, each on its own mutually-authenticated connection,
/// stream to a real collector process for 60 s (`GLIMPSE_SOAK_AGENTS`,
/// `GLIMPSE_SOAK_SECS` change that); then every acknowledged record must
/// be stored exactly once. Prints the collector's peak RSS. Run it with
/// `cargo test --release -p glimpse-tests --test faults -- --ignored soak --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a minute-long soak; run by hand (see docs/OPERATIONS.md, Outages and restarts)"]
async fn soak_many_agents_stored_equals_sent() {
    init_logging();
    let agents: usize = std::env::var("GLIMPSE_SOAK_AGENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    let secs: u64 = std::env::var("GLIMPSE_SOAK_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(60);
    let devices: Vec<Device> = (0..agents).map(|_| issue_device("soakorg")).collect();
    let files = CollectorFiles::new(COLLECTOR);
    let collector = files.start().await;
    let pid = collector.0.id();
    let handles: Vec<_> = devices
        .iter()
        .map(|d| {
            let mut config = agent_config(files.addr(), d);
            // One record a second per agent, as a fleet of access points would send.
            config.interval = Duration::from_secs(1);
            glimpse_agent::AgentHandle::spawn(config).unwrap()
        })
        .collect();
    let started = tokio::time::Instant::now();
    let mut peak = 0;
    while started.elapsed() < Duration::from_secs(secs) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        peak = peak.max(peak_rss_kib(pid).unwrap_or(0));
    }
    // Every agent is told to stop at once, as a fleet's daemons would be.
    let connected = handles.iter().filter(|h| h.status().borrow().connections > 0).count();
    let stopping = std::time::Instant::now();
    let mut shutdowns = tokio::task::JoinSet::new();
    for handle in handles {
        shutdowns.spawn(handle.shutdown());
    }
    let mut acked = 0u64;
    while let Some(status) = shutdowns.join_next().await {
        acked += status.expect("agent task").acked_records;
    }
    println!("soak: {agents} agents drained and stopped in {:?}", stopping.elapsed());
    peak = peak.max(peak_rss_kib(pid).unwrap_or(0));
    collector.terminate().await;
    let by_device = files.stored_by_device(&devices[0].identity.org);
    let mut stored = 0usize;
    for (device, times) in &by_device {
        let distinct: BTreeSet<&String> = times.iter().collect();
        assert_eq!(times.len(), distinct.len(), "{device} has a record stored twice");
        stored += times.len();
    }
    println!(
        "soak: {agents} agents ({connected} connected) for {secs} s: {acked} records acknowledged, {stored} stored; \
         collector peak RSS {:.1} MiB",
        peak as f64 / 1024.0
    );
    assert_eq!(connected, agents);
    assert_eq!(stored as u64, acked, "stored = acknowledged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_agent_is_held_back_and_others_are_still_served() {
    init_logging();
    let flooder = issue_device("floodorg");
    let neighbour = issue_device("floodorg");
    let tc = TestCollector::start().await;
    let agent = start_agent(tc.addr(), &neighbour);
    wait_for_status(&agent, "neighbour streaming", |s| s.acked_seq >= 2).await;

    // The flooder writes 200 batches of about 500 KB (100 MB) without ever
    // reading an acknowledgement. The collector reads one batch at a time
    // and stores it before reading the next, so once the socket buffers
    // are full the flooder's writes wait: flow control, not memory.
    let mut conn = try_connect(tc.addr(), &flooder).await.unwrap();
    let first = conn.stored_seq() + 1;
    let org = flooder.identity.org.clone();
    let written = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = written.clone();
    let flood = tokio::spawn(async move {
        for seq in first..first + 200 {
            if conn.send_batch_only(&bulky_batch(&org, seq, 1000)).await.is_err() {
                break;
            }
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        conn
    });

    // Meanwhile the neighbour's batches keep being acknowledged.
    let before = agent.status().borrow().acked_seq;
    wait_for_status(&agent, "neighbour served during the flood", |s| s.acked_seq >= before + 5).await;
    let so_far = written.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        !flood.is_finished() && so_far < 200,
        "100 MB went out without acknowledgements being read ({so_far} batches)"
    );
    flood.abort();
    agent.shutdown().await;
    // Whatever the collector took in from the flooder, it stored whole.
    let outcome = tc.collector.store().read(&flooder.identity.org, DataKind::Metadata, None, None).unwrap();
    assert!(outcome.problems.is_empty(), "{:?}", outcome.problems);
    let flooded = outcome.records.iter().filter(|r| r.device == flooder.identity.device).count();
    assert_eq!(flooded % 1000, 0, "batches are stored whole");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_keeps_connections_and_sigterm_drains_and_says_so() {
    init_logging();
    let device = issue_device("faultorg");
    let observer = issue_device("faultorg");
    let files = CollectorFiles::new(COLLECTOR);
    let collector = files.start().await;
    let agent = start_agent(files.addr(), &device);
    let status = wait_for_status(&agent, "streaming", |s| s.acked_seq >= 3).await;

    // SIGHUP: certificates and registrations are re-read; the agent's
    // connection stays up and batches keep being acknowledged on it.
    let hup = Command::new("kill").arg("-HUP").arg(collector.0.id().to_string()).status().unwrap();
    assert!(hup.success());
    let acked = status.acked_seq;
    let after = wait_for_status(&agent, "acknowledged after SIGHUP", |s| s.acked_seq >= acked + 5).await;
    assert_eq!(after.connections, status.connections, "SIGHUP dropped the connection");

    // SIGTERM: the collector finishes what it is storing, tells every
    // connected device it is shutting down, and exits cleanly. A second,
    // hand-driven connection shows exactly what a device is told.
    let mut watching = try_connect(files.addr(), &observer).await.unwrap();
    collector.terminate().await;
    loop {
        match watching.receive().await {
            // The organisation's directives come first, on every connection.
            Ok(glimpse_common::wire::CollectorMessage::Control(_)) => continue,
            Ok(glimpse_common::wire::CollectorMessage::Error(e)) => {
                assert_eq!(e.code, glimpse_common::wire::ErrorCode::ShuttingDown);
                assert!(e.message.as_str().contains("shutting down"), "{}", e.message.as_str());
                break;
            }
            other => panic!("expected an explicit shutdown notice, got {other:?}"),
        }
    }
    wait_for_status(&agent, "agent noticed the shutdown", |s| !s.connected).await;

    // Back up: what the agent kept arrives, once.
    let collector = files.start().await;
    wait_for_status(&agent, "reconnected", |s| s.connected && s.connections > status.connections).await;
    let final_status = agent.shutdown().await;
    collector.terminate().await;
    let (count, distinct) = files.stored(&device.identity);
    assert_eq!(count, distinct.len(), "a record was stored twice");
    assert_eq!(count as u64, final_status.acked_records, "stored = acknowledged");
}
