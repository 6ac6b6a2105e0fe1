//! Sealing a batch for storage: the collector's at-rest path (postcard
//! encoding plus AES-256-GCM, through `ring` since the ingest work of
//! issue 22), for metadata and capture-header records, and the AEAD alone
//! through `aes-gcm` (what the readers open with) and through `ring` on
//! the same plaintext.

// criterion's macros generate undocumented functions.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use glimpse_benches::sample_batch;

/// A batch's (stream id, sequence number): a random-looking stream id
/// encodes as long as real ones do.
const STREAM: (u64, u64) = (0x9e37_79b9_7f4a_7c15, 1);
use glimpse_common::identity::{DeviceId, DeviceIdentity, DeviceKind, OrgId};
use glimpse_common::record::DataKind;
use glimpse_common::secret::SecretKey;
use glimpse_store::store::seal_batch_in_memory;

fn seal(c: &mut Criterion) {
    let key = SecretKey::from_bytes([7; 32]);
    let identity = DeviceIdentity {
        org: OrgId::new("acme").unwrap(),
        device: DeviceId::new("ap-1").unwrap(),
        kind: DeviceKind::Ap,
    };
    let mut group = c.benchmark_group("seal");
    for records in [64usize, 256, 4096] {
        let batch = sample_batch(records);
        let sealed =
            seal_batch_in_memory(&key, &identity, DataKind::Metadata, 1_790_000_000_000, 1, STREAM, &batch.records)
                .unwrap();
        let bytes: usize = sealed.iter().map(Vec::len).sum();

        group.throughput(Throughput::Elements(records as u64));
        group.bench_with_input(BenchmarkId::new("store_records", records), &batch, |b, batch| {
            b.iter(|| {
                seal_batch_in_memory(&key, &identity, DataKind::Metadata, 1_790_000_000_000, 1, STREAM, &batch.records)
                    .unwrap()
            })
        });
        group.throughput(Throughput::Bytes(bytes as u64));
        group.bench_with_input(BenchmarkId::new("store_bytes", records), &batch, |b, batch| {
            b.iter(|| {
                seal_batch_in_memory(&key, &identity, DataKind::Metadata, 1_790_000_000_000, 1, STREAM, &batch.records)
                    .unwrap()
            })
        });

        // The AEAD alone on a plaintext of the same size, two implementations.
        let plaintext = vec![0x5au8; bytes];
        group.bench_with_input(BenchmarkId::new("aead_aes_gcm_crate", bytes), &plaintext, |b, plaintext| {
            use aes_gcm::aead::{Aead, KeyInit, Payload};
            let cipher = aes_gcm::Aes256Gcm::new(aes_gcm::Key::<aes_gcm::Aes256Gcm>::from_slice(key.expose()));
            let nonce = aes_gcm::Nonce::from_slice(&[1; 12]);
            b.iter(|| cipher.encrypt(nonce, Payload { msg: plaintext, aad: b"aad" }).unwrap())
        });
        group.bench_with_input(BenchmarkId::new("aead_ring", bytes), &plaintext, |b, plaintext| {
            use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
            let sealing = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key.expose()).unwrap());
            b.iter(|| {
                let mut in_out = plaintext.clone();
                sealing
                    .seal_in_place_append_tag(Nonce::assume_unique_for_key([1; 12]), Aad::from(b"aad"), &mut in_out)
                    .unwrap();
                in_out
            })
        });
    }
    // Capture headers, the records the collector stores most of.
    for records in [256usize, 4096] {
        let batch = glimpse_benches::capture_batch(records);
        group.throughput(Throughput::Elements(records as u64));
        group.bench_with_input(BenchmarkId::new("store_capture_records", records), &batch, |b, batch| {
            b.iter(|| {
                seal_batch_in_memory(&key, &identity, DataKind::Capture, 1_790_000_000_000, 1, STREAM, &batch.records)
                    .unwrap()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, seal);
criterion_main!(benches);
