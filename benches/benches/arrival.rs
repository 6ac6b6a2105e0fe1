//! What the collector does to a batch on arrival before storing it: the
//! header boundary enforced again on every capture record, and every MAC
//! address brought to its stored pseudonym (two HMAC-SHA256s per address
//! without a cache, one lookup with the connection's `PseudonymCache`).
//! Both pseudonymisation paths run in the same process, so the ratio
//! between them is this machine's, whatever else runs beside it.

// criterion's macros generate undocumented functions.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use glimpse_benches::capture_batch;
use glimpse_common::minimise::{MacForm, PseudonymCache, Pseudonymiser};
use glimpse_common::record::RecordBody;

fn arrival(c: &mut Criterion) {
    let pseudonymiser = Pseudonymiser::new(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &[7; 32]));
    let mut group = c.benchmark_group("arrival");
    for records in [256usize, 4096] {
        let batch = capture_batch(records);
        group.throughput(Throughput::Elements(records as u64));
        group.bench_with_input(BenchmarkId::new("enforce_headers", records), &batch, |b, batch| {
            b.iter_batched_ref(
                || batch.records.clone().into_vec(),
                |records| {
                    records
                        .iter_mut()
                        .map(|r| match &mut r.body {
                            RecordBody::Capture(packet) => packet.enforce(),
                            _ => 0,
                        })
                        .sum::<usize>()
                },
                criterion::BatchSize::SmallInput,
            )
        });
        group.bench_with_input(BenchmarkId::new("pseudonymise_uncached", records), &batch, |b, batch| {
            b.iter_batched_ref(
                || batch.records.clone().into_vec(),
                |records| {
                    for record in records.iter_mut() {
                        pseudonymiser.apply(&mut record.body, MacForm::Real);
                    }
                },
                criterion::BatchSize::SmallInput,
            )
        });
        // A connection's cache, warm from its earlier batches.
        let mut cache = PseudonymCache::new();
        for _ in 0..4 {
            for record in batch.records.clone().into_vec().iter_mut() {
                pseudonymiser.apply_cached(&mut record.body, MacForm::Real, &mut cache);
            }
            cache.end_batch();
        }
        group.bench_with_input(BenchmarkId::new("pseudonymise_cached", records), &batch, |b, batch| {
            b.iter_batched_ref(
                || batch.records.clone().into_vec(),
                |records| {
                    for record in records.iter_mut() {
                        pseudonymiser.apply_cached(&mut record.body, MacForm::Real, &mut cache);
                    }
                    cache.end_batch();
                },
                criterion::BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, arrival);
criterion_main!(benches);
