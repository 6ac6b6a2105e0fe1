//! Export throughput while ingest runs, and the ingest slowdown it causes,
//! against a real collector on loopback.
//!
//! Devices stream capture batches over mutual TLS (each batch sealed,
//! written durably and acknowledged before the next, the agent's real
//! loop) while an exporter downloads the organisation's captures again and
//! again, as pcapng and as JSON lines. Three phases of `PHASE` each: ingest
//! alone, export alone (on what is stored), both at once. It prints records/s
//! and MiB/s of the export and records/s of ingest in each phase.
//!
//! Not a criterion bench: the figure of interest is one rate measured while
//! another load runs, which criterion's sampling does not model. Run by
//! hand (`cargo bench -p glimpse-benches --bench export`); CI only builds
//! it (`cargo bench --no-run`).

#![allow(missing_docs)]

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use glimpse_benches::capture_batch;
use glimpse_common::identity::OrgId;
use glimpse_common::record::DataKind;
use glimpse_store::export::{export_chunks, ExportFormat, ExportRequest, DEFAULT_CHUNK_BYTES};
use glimpse_tests::{issue_device, set_consent, try_connect, TestCollector};

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

/// Exports the organisation's captures in a loop until `stop`, alternating
/// pcapng and JSON lines, on a blocking thread as the service does.
fn exporter(tc: &TestCollector, stop: Arc<AtomicBool>, moved: Arc<Moved>) -> std::thread::JoinHandle<()> {
    let store = Arc::clone(tc.collector.store());
    std::thread::spawn(move || {
        let org = OrgId::new(ORG).unwrap();
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let format = if n % 2 == 0 { ExportFormat::Pcapng } else { ExportFormat::JsonLines };
            let request = ExportRequest::new(org.clone(), DataKind::Capture, format);
            let summary = export_chunks(&store, &request, DEFAULT_CHUNK_BYTES, &mut |chunk| {
                moved.bytes.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                if stop.load(Ordering::Relaxed) {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })
            .expect("export");
            moved.records.fetch_add(summary.records as u64, Ordering::Relaxed);
            if summary.complete {
                moved.exports.fetch_add(1, Ordering::Relaxed);
            }
            n += 1;
        }
    })
}

fn main() {
    // `cargo bench` passes `--bench`; anything else (a filter) is ignored.
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let tc = runtime.block_on(TestCollector::start());
    let org = OrgId::new(ORG).unwrap();
    set_consent(&tc, &org, true);
    let ingested = Arc::new(AtomicU64::new(0));
    let streaming = Arc::new(AtomicBool::new(true));
    // Batches still to send before the phases: the preload.
    let preload = Arc::new(AtomicU64::new(PRELOAD_BATCHES * DEVICES as u64));
    let mut senders = Vec::new();
    for _ in 0..DEVICES {
        let device = issue_device(ORG);
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
    let export = exporter(&tc, Arc::clone(&stop), Arc::clone(&moved));
    std::thread::sleep(phase);
    stop.store(true, Ordering::Relaxed);
    let both_secs = start.elapsed().as_secs_f64();
    let ingest_during = (ingested.load(Ordering::Relaxed) - before) as f64 / both_secs;
    export.join().unwrap();
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
    let export = exporter(&tc, Arc::clone(&stop), Arc::clone(&moved));
    std::thread::sleep(phase);
    stop.store(true, Ordering::Relaxed);
    let alone_secs = start.elapsed().as_secs_f64();
    export.join().unwrap();
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
