//! Export throughput while ingest runs, and the ingest slowdown it causes,
//! against a real collector on loopback.
//!
//! Devices stream capture batches over mutual TLS (each batch sealed,
//! written durably and acknowledged before the next, the agent's real
//! loop) while an org-admin downloads the organisation's captures through
//! the HTTPS admin API (`GET /api/v1/orgs/{org}/export`) again and again,
//! as pcapng and as JSON lines. Three phases of `PHASE` each: ingest
//! alone, export alone (on what is stored), both at once. It prints records/s
//! and MiB/s of the export and records/s of ingest in each phase.
//!
//! Not a criterion bench: the figure of interest is one rate measured while
//! another load runs, which criterion's sampling does not model. Run by
//! hand (`cargo bench -p glimpse-benches --bench export`); CI only builds
//! it (`cargo bench --no-run`).

#![allow(missing_docs)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use glimpse_admin_client::ApiClient;
use glimpse_benches::capture_batch;
use glimpse_common::identity::{AdminRole, OrgId};
use glimpse_tests::{issue_admin, issue_device, set_consent, try_connect, TestCollector};

const ORG: &str = "exportbench";
const DEVICES: usize = 4;
const RECORDS_PER_BATCH: usize = 256;
/// Records stored before the phases start, so an export has something to read.
const PRELOAD_BATCHES: u64 = 100;

fn phase() -> Duration {
    Duration::from_secs(std::env::var("GLIMPSE_EXPORT_BENCH_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(10))
}

/// What an exporter moved.
#[derive(Default)]
struct Moved {
    records: AtomicU64,
    bytes: AtomicU64,
    exports: AtomicU64,
}

/// Counts the Enhanced Packet Blocks of a pcapng stream as it arrives.
#[derive(Default)]
struct BlockCounter {
    /// Bytes still to skip of the current block.
    skip: usize,
    /// A block header split between chunks.
    header: Vec<u8>,
}

impl BlockCounter {
    fn feed(&mut self, mut chunk: &[u8]) -> u64 {
        let mut packets = 0;
        loop {
            let skipped = self.skip.min(chunk.len());
            self.skip -= skipped;
            chunk = &chunk[skipped..];
            if chunk.is_empty() {
                return packets;
            }
            let need = 8 - self.header.len();
            let take = need.min(chunk.len());
            self.header.extend_from_slice(&chunk[..take]);
            chunk = &chunk[take..];
            if self.header.len() < 8 {
                return packets;
            }
            let kind = u32::from_le_bytes(self.header[..4].try_into().unwrap());
            let len = u32::from_le_bytes(self.header[4..8].try_into().unwrap()) as usize;
            packets += u64::from(kind == 6);
            self.skip = len.saturating_sub(8);
            self.header.clear();
        }
    }
}

/// Downloads the organisation's captures through the admin API in a loop
/// until `stop`, alternating pcapng and JSON lines.
async fn exporter(client: ApiClient, stop: Arc<AtomicBool>, moved: Arc<Moved>) {
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let format = if n.is_multiple_of(2) { "pcapng" } else { "jsonl" };
        let path = format!("/api/v1/orgs/{ORG}/export?kind=capture&format={format}");
        let mut response = client
            .request(reqwest::Method::GET, &path)
            .timeout(Duration::from_secs(3600))
            .send()
            .await
            .expect("export request");
        assert!(response.status().is_success(), "{}", response.status());
        let mut blocks = BlockCounter::default();
        let mut whole = true;
        while let Some(chunk) = response.chunk().await.expect("export body") {
            moved.bytes.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            let records = if format == "jsonl" {
                chunk.iter().filter(|b| **b == b'\n').count() as u64
            } else {
                blocks.feed(&chunk)
            };
            moved.records.fetch_add(records, Ordering::Relaxed);
            if stop.load(Ordering::Relaxed) {
                whole = false;
                break;
            }
        }
        moved.exports.fetch_add(u64::from(whole), Ordering::Relaxed);
        n += 1;
    }
}

fn main() {
    // `cargo bench` passes `--bench`; anything else (a filter) is ignored.
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    // Devices are registered before the collector starts, as in the transport bench.
    let devices: Vec<_> = (0..DEVICES).map(|_| issue_device(ORG)).collect();
    let tc = runtime.block_on(TestCollector::start());
    let org = OrgId::new(ORG).unwrap();
    set_consent(&tc, &org, true);
    let client = runtime.block_on(ApiClient::new(&issue_admin(&tc, AdminRole::OrgAdmin, Some(ORG)))).unwrap();
    let ingested = Arc::new(AtomicU64::new(0));
    let streaming = Arc::new(AtomicBool::new(true));
    // Batches still to send before the phases: the preload.
    let preload = Arc::new(AtomicU64::new(PRELOAD_BATCHES * DEVICES as u64));
    let mut senders = Vec::new();
    for device in devices {
        let addr = tc.addr();
        let (ingested, streaming, preload) = (Arc::clone(&ingested), Arc::clone(&streaming), Arc::clone(&preload));
        senders.push(runtime.spawn(async move {
            let mut conn = try_connect(addr, &device).await.expect("device connects");
            let mut batch = capture_batch(RECORDS_PER_BATCH);
            batch.org = OrgId::new(ORG).unwrap();
            let mut seq = 1;
            while streaming.load(Ordering::Relaxed) {
                batch.stream_seq = seq;
                seq += 1;
                conn.send_batch(&batch).await.expect("batch acknowledged");
                ingested.fetch_add(RECORDS_PER_BATCH as u64, Ordering::Relaxed);
                let _ = preload.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
            }
            conn.close().await;
        }));
    }
    while preload.load(Ordering::Relaxed) > 0 {
        std::thread::sleep(Duration::from_millis(100));
    }
    let stored = ingested.load(Ordering::Relaxed);
    let phase = phase();
    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);

    // 1. Ingest alone.
    let before = ingested.load(Ordering::Relaxed);
    let start = Instant::now();
    std::thread::sleep(phase);
    let ingest_alone = (ingested.load(Ordering::Relaxed) - before) as f64 / start.elapsed().as_secs_f64();

    // 3. Both at once.
    let stop = Arc::new(AtomicBool::new(false));
    let moved = Arc::new(Moved::default());
    let before = ingested.load(Ordering::Relaxed);
    let start = Instant::now();
    let export = runtime.spawn(exporter(client.clone(), Arc::clone(&stop), Arc::clone(&moved)));
    std::thread::sleep(phase);
    stop.store(true, Ordering::Relaxed);
    let both_secs = start.elapsed().as_secs_f64();
    let ingest_during = (ingested.load(Ordering::Relaxed) - before) as f64 / both_secs;
    runtime.block_on(export).unwrap();
    let during = (
        moved.records.load(Ordering::Relaxed) as f64 / both_secs,
        mib(moved.bytes.load(Ordering::Relaxed)) / both_secs,
        moved.exports.load(Ordering::Relaxed),
    );

    // 2. Export alone, on everything stored by now.
    streaming.store(false, Ordering::Relaxed);
    for sender in senders {
        runtime.block_on(sender).unwrap();
    }
    let total = ingested.load(Ordering::Relaxed);
    let stop = Arc::new(AtomicBool::new(false));
    let moved = Arc::new(Moved::default());
    let start = Instant::now();
    let export = runtime.spawn(exporter(client, Arc::clone(&stop), Arc::clone(&moved)));
    std::thread::sleep(phase);
    stop.store(true, Ordering::Relaxed);
    let alone_secs = start.elapsed().as_secs_f64();
    runtime.block_on(export).unwrap();
    let alone = (
        moved.records.load(Ordering::Relaxed) as f64 / alone_secs,
        mib(moved.bytes.load(Ordering::Relaxed)) / alone_secs,
        moved.exports.load(Ordering::Relaxed),
    );

    println!("export bench: {DEVICES} devices over mutual TLS, {RECORDS_PER_BATCH} capture records a batch");
    println!("  stored before the phases: {stored} records; after: {total}; phases of {} s", phase.as_secs());
    println!("  ingest alone:            {ingest_alone:>10.0} records/s");
    println!(
        "  ingest during export:    {ingest_during:>10.0} records/s  ({:+.1} %)",
        100.0 * (ingest_during / ingest_alone - 1.0)
    );
    println!(
        "  export during ingest:    {:>10.0} records/s  {:>7.1} MiB/s  ({} whole exports)",
        during.0, during.1, during.2
    );
    println!(
        "  export alone:            {:>10.0} records/s  {:>7.1} MiB/s  ({} whole exports)",
        alone.0, alone.1, alone.2
    );
    runtime.block_on(async move { tc.collector.shutdown().await });
}
