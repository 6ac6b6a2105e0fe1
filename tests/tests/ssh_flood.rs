//! SSH under a flood of connections that never authenticate: the deadline
//! closes them in any phase, a full table evicts rather than refuses, and
//! real devices (one alone, or a hundred behind one address) still get in.

use std::sync::Arc;

use glimpse_collector::ingest::RejectReason;
use glimpse_common::clock::SystemClock;
use glimpse_common::identity::DeviceKind;
use glimpse_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ORG: &str = "floodorg";

/// A client that sends its version line and then nothing.
async fn banner_only(addr: std::net::SocketAddr) -> TcpStream {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(b"SSH-2.0-x\r\n").await.expect("version line");
    tcp
}

/// Reads until the collector closes the connection (EOF or reset), within
/// the test deadline.
async fn read_until_closed(tcp: &mut TcpStream) {
    let mut buf = [0u8; 4096];
    let closed = tokio::time::timeout(DEADLINE, async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the collector kept a banner-only connection open past the deadline");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_banner_only_connection_is_closed_at_the_auth_deadline() {
    init_logging();
    let tc = TestCollector::start_with_ssh_settings(0, Arc::new(SystemClock), "auth_timeout_secs = 1").await;
    let before = tc.collector.metrics().rejections(RejectReason::Overload);
    let mut tcp = banner_only(tc.ssh_addr()).await;
    // The server's version line and key-exchange offer, then EOF: the
    // socket is closed although key exchange never finished.
    read_until_closed(&mut tcp).await;
    wait_until("the timeout counted", || tc.collector.metrics().rejections(RejectReason::Overload) > before).await;
    // And one that sends nothing at all.
    let mut silent = TcpStream::connect(tc.ssh_addr()).await.unwrap();
    read_until_closed(&mut silent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switch_gets_in_while_banner_only_connections_fill_every_slot() {
    init_logging();
    let device = issue_ssh_device(ORG, DeviceKind::Switch);
    // Fewer slots than held connections, all from the device's own address.
    let tc = TestCollector::start_with_ssh_settings(0, Arc::new(SystemClock), "max_unauthenticated = 32").await;
    let mut held = Vec::new();
    for _ in 0..64 {
        held.push(banner_only(tc.ssh_addr()).await);
    }
    let sysroot = ap_sysroot("flooded-switch");
    let mut config = ssh_agent_config(tc.ssh_addr(), &tc.ssh_fingerprint(), &device);
    config.sysroot = sysroot.path().to_owned();
    let agent = glimpse_agent::AgentHandle::spawn(config).unwrap();
    wait_for_status(&agent, "batches acknowledged during the flood", |s| s.acked_seq >= 3).await;
    let status = agent.shutdown().await;
    assert!(status.acked_records > 0);
    assert_eq!(tc.stored_records_of(&device.identity) as u64, status.acked_records);
    // The flood evicted itself: its oldest connections were closed.
    let mut first = held.remove(0);
    read_until_closed(&mut first).await;
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_switches_behind_one_address_all_connect_at_once() {
    init_logging();
    let devices: Vec<Device> = (0..100).map(|_| issue_ssh_device(ORG, DeviceKind::Switch)).collect();
    let tc = TestCollector::start().await;
    let fingerprint = tc.ssh_fingerprint();
    let attempts: Vec<_> = devices
        .iter()
        .map(|device| {
            let config = ssh_agent_config(tc.ssh_addr(), &fingerprint, device);
            tokio::spawn(async move { try_connect_with(config).await })
        })
        .collect();
    let mut connections = Vec::new();
    let mut failures = Vec::new();
    for attempt in attempts {
        match attempt.await.unwrap() {
            Ok(connection) => connections.push(connection),
            Err(e) => failures.push(e.to_string()),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of 100 failed on their first attempt, first: {:?}",
        failures.len(),
        failures.first()
    );
    assert_eq!(connections.len(), 100, "all held at once");
    for connection in connections {
        connection.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_refused_connections_gives_few_log_lines_and_a_count() {
    init_logging();
    let tc = TestCollector::start_with_ssh_settings(0, Arc::new(SystemClock), "auth_timeout_secs = 1").await;
    let metrics = tc.collector.metrics().clone();
    let before = metrics.rejections(RejectReason::Overload) + metrics.rejections(RejectReason::TlsHandshake);
    let mut held = Vec::new();
    for _ in 0..100 {
        held.push(banner_only(tc.ssh_addr()).await);
        let mut tls = TcpStream::connect(tc.addr()).await.unwrap();
        tls.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
        held.push(tls);
    }
    wait_until("200 refusals counted", || {
        metrics.rejections(RejectReason::Overload) + metrics.rejections(RejectReason::TlsHandshake) >= before + 200
    })
    .await;
    // At most 5 lines for each (address, reason) a minute; the rest are
    // counted for the summary.
    assert!(metrics.refusal_lines_suppressed() >= 190, "{}", metrics.refusal_lines_suppressed());
    drop(held);
}
