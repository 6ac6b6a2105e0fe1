//! The header boundary parser over a realistic packet mix (see
//! `glimpse_benches::packets`).

// criterion's macros generate undocumented functions.
#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use glimpse_benches::packets::mix;
use glimpse_common::bounded::BoundedString;
use glimpse_common::capture::{header_boundary, scrub_strict, CapturedPacket, CutReason};

fn headers(c: &mut Criterion) {
    let packets = mix();
    assert_eq!(packets.len(), 100);
    // Every packet parses to its transport header: the bench measures whole walks.
    for (link, packet) in &packets {
        assert_eq!(header_boundary(*link, packet).summary.cut_reason, CutReason::PayloadStarts);
    }
    let mut group = c.benchmark_group("headers");
    group.throughput(Throughput::Elements(packets.len() as u64));
    group.bench_function("header_boundary_mix", |b| {
        b.iter(|| {
            let mut kept = 0;
            for (link, packet) in &packets {
                kept += header_boundary(*link, black_box(packet)).header_len;
            }
            kept
        })
    });
    let interface = BoundedString::truncating("eth0");
    group.bench_function("from_packet_mix", |b| {
        b.iter(|| {
            let mut kept = 0;
            for (link, packet) in &packets {
                let record = CapturedPacket::from_packet(*link, 0, interface.clone(), black_box(packet), 1500);
                kept += record.headers.len();
            }
            kept
        })
    });
    // Strict mode on top of the cut: the same records, scrubbed in place
    // (a fresh copy of the cut headers each time, as each record is new).
    let cut: Vec<_> = packets
        .iter()
        .map(|(link, packet)| (*link, CapturedPacket::from_packet(*link, 0, interface.clone(), packet, 1500).headers))
        .collect();
    group.bench_function("scrub_strict_mix", |b| {
        b.iter(|| {
            let mut changed = 0;
            for (link, headers) in &cut {
                let mut bytes = headers.clone();
                changed += scrub_strict(*link, black_box(bytes.as_mut_slice()));
            }
            changed
        })
    });
    group.finish();
}

criterion_group!(benches, headers);
criterion_main!(benches);
