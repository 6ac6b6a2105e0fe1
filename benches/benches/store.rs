//! Appending batches to the encrypted segment store on a real disk, every
//! append durable (fsync) before it returns, as the collector does before
//! acknowledging: from one connection at a time, and from eight at once,
//! where group commit lets one fsync cover every batch written meanwhile.

// criterion's macros generate undocumented functions.
#![allow(missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use glimpse_benches::capture_batch;
use glimpse_common::clock::SystemClock;
use glimpse_common::identity::{DeviceId, DeviceIdentity, DeviceKind, OrgId};
use glimpse_common::secret::SecretKey;
use glimpse_store::keys::MasterKey;
use glimpse_store::retention::RetentionPolicy;
use glimpse_store::store::Store;

const RECORDS: usize = 256;

fn store(c: &mut Criterion) {
    // On the target directory's disk, not a tmpfs: fsync must cost what it costs.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let store = Arc::new(
        Store::open(
            dir.path(),
            MasterKey::from_secret(SecretKey::from_bytes([9; 32])),
            Arc::new(SystemClock),
            RetentionPolicy::default(),
        )
        .unwrap(),
    );
    let batch = capture_batch(RECORDS);
    let mut group = c.benchmark_group("store_append");
    group.sample_size(20).measurement_time(Duration::from_secs(10));
    for writers in [1usize, 8] {
        group.throughput(Throughput::Elements((RECORDS * writers) as u64));
        group.bench_function(BenchmarkId::new("capture_256_records_writers", writers), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                std::thread::scope(|scope| {
                    for w in 0..writers {
                        let (store, records) = (Arc::clone(&store), &batch.records);
                        scope.spawn(move || {
                            let identity = DeviceIdentity {
                                org: OrgId::new("acme").unwrap(),
                                device: DeviceId::new(format!("ap-{w}")).unwrap(),
                                kind: DeviceKind::Ap,
                            };
                            // Sequence numbers only grow: criterion calls this closure many times.
                            let base = start.elapsed().as_nanos() as u64;
                            for i in 0..iters {
                                store.append(&identity, 1, base + i + 1, records).unwrap();
                            }
                        });
                    }
                });
                start.elapsed()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, store);
criterion_main!(benches);
