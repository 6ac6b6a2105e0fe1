//! Frame and message encode/decode of a realistic metadata batch, and of
//! a batch of capture-header records (the collector's heaviest stream).

// criterion's macros generate undocumented functions.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use glimpse_benches::{capture_batch, sample_batch};
use glimpse_common::wire::{parse_frame, AgentMessage, Codec, DEFAULT_MAX_FRAME_LEN};

fn wire(c: &mut Criterion) {
    let mut group = c.benchmark_group("wire");
    let batches =
        [1usize, 64, 256].into_iter().map(|n| ("", sample_batch(n), n)).chain([("capture_", capture_batch(256), 256)]);
    for (prefix, batch, records) in batches {
        let msg = AgentMessage::Batch(batch);
        let mut framed = Vec::new();
        msg.encode_frame(DEFAULT_MAX_FRAME_LEN, &mut framed).unwrap();
        group.throughput(Throughput::Elements(records as u64));
        group.bench_with_input(BenchmarkId::new(format!("{prefix}encode_records"), records), &msg, |b, msg| {
            let mut out = Vec::with_capacity(framed.len());
            b.iter(|| {
                out.clear();
                msg.encode_frame(DEFAULT_MAX_FRAME_LEN, &mut out).unwrap();
            })
        });
        group.bench_with_input(BenchmarkId::new(format!("{prefix}decode_records"), records), &framed, |b, framed| {
            b.iter(|| {
                let (payload, _) = parse_frame(framed, DEFAULT_MAX_FRAME_LEN).unwrap().unwrap();
                AgentMessage::decode(payload).unwrap()
            })
        });
        group.throughput(Throughput::Bytes(framed.len() as u64));
        group.bench_with_input(BenchmarkId::new(format!("{prefix}decode_bytes"), records), &framed, |b, framed| {
            b.iter(|| {
                let (payload, _) = parse_frame(framed, DEFAULT_MAX_FRAME_LEN).unwrap().unwrap();
                AgentMessage::decode(payload).unwrap()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, wire);
criterion_main!(benches);
