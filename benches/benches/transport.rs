//! Records per second from one agent connection to a real collector on
//! loopback, over mutual TLS (access points) and over SSH (switches and
//! gateways), on the same machine in the same run. Each batch is encoded,
//! sent, decoded, sealed with the organisation's key, written durably and
//! acknowledged before the next one goes: the agent's real loop.

// criterion's macros generate undocumented functions.
#![allow(missing_docs)]

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use glimpse_agent::transport::Connection;
use glimpse_benches::sample_batch;
use glimpse_common::identity::DeviceKind;
use glimpse_tests::{agent_config, issue_device, issue_ssh_device, ssh_agent_config, try_connect_with, TestCollector};

const ORG: &str = "acme";

/// Sends `iters` batches on `conn`, each acknowledged before the next.
async fn stream(conn: &mut Connection, next_seq: &mut u64, records: usize, iters: u64) -> Duration {
    let mut batch = sample_batch(records);
    let start = Instant::now();
    for _ in 0..iters {
        batch.stream_seq = *next_seq;
        *next_seq += 1;
        conn.send_batch(&batch).await.expect("batch acknowledged");
    }
    start.elapsed()
}

fn transport(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (_collector, mut connections) = runtime.block_on(async {
        let ap = issue_device(ORG);
        let switch = issue_ssh_device(ORG, DeviceKind::Switch);
        let tc = TestCollector::start().await;
        let tls = try_connect_with(agent_config(tc.addr(), &ap)).await.expect("TLS agent connects");
        let ssh = try_connect_with(ssh_agent_config(tc.ssh_addr(), &tc.ssh_fingerprint(), &switch))
            .await
            .expect("SSH agent connects");
        (tc, vec![("tls", tls, 1u64), ("ssh", ssh, 1u64)])
    });
    let mut group = c.benchmark_group("transport");
    group.sample_size(20).measurement_time(Duration::from_secs(10));
    for records in [256usize, 1024] {
        group.throughput(Throughput::Elements(records as u64));
        for (name, conn, next_seq) in &mut connections {
            group.bench_function(BenchmarkId::new(format!("{name}_records"), records), |b| {
                b.iter_custom(|iters| runtime.block_on(stream(conn, next_seq, records, iters)))
            });
        }
    }
    group.finish();
    // An SSH channel closes itself from a task on drop, so the connections
    // go while the runtime is still there.
    runtime.block_on(async {
        for (_, conn, _) in connections {
            conn.close().await;
        }
    });
}

criterion_group!(benches, transport);
criterion_main!(benches);
