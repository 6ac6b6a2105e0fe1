//! The agent's capture path on one core: a pcap file read in pure Rust,
//! each packet cut to its headers, batched, encoded as frames, and sealed
//! by the agent's real TLS client configuration (rustls, sans-IO, after a
//! real in-memory handshake with the collector's configuration); the TLS
//! records go to a sink, so only the device's own work is timed.

// criterion's macros generate undocumented functions.
#![allow(missing_docs)]

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use glimpse_agent::capture::pcap_source::capture_file;
use glimpse_agent::capture::CaptureLimits;
use glimpse_benches::packets::mix;
use glimpse_common::bounded::BoundedVec;
use glimpse_common::capture::LinkType;
use glimpse_common::identity::OrgId;
use glimpse_common::minimise::MacForm;
use glimpse_common::record::{Record, RecordBody};
use glimpse_common::tls::{client_config, server_config};
use glimpse_common::wire::message::encode_batch_frame;
use glimpse_common::wire::{Batch, DEFAULT_MAX_FRAME_LEN};
use glimpse_files::{load_certs, load_key};
use rustls::{ClientConnection, ServerConnection};

/// Packets in the file: the Ethernet part of the mix, repeated.
const PACKETS: usize = 20_000;
/// Records per batch, as the agent sends captures.
const PER_BATCH: usize = 256;

/// Writes a classic little-endian pcap file of Ethernet packets.
fn write_pcap(path: &Path) -> usize {
    let packets: Vec<Vec<u8>> = mix().into_iter().filter(|(l, _)| *l == LinkType::Ethernet).map(|(_, p)| p).collect();
    let mut out = Vec::new();
    out.extend(0xa1b2_c3d4u32.to_le_bytes());
    out.extend(2u16.to_le_bytes());
    out.extend(4u16.to_le_bytes());
    out.extend([0u8; 8]);
    out.extend(65_535u32.to_le_bytes());
    out.extend(1u32.to_le_bytes()); // LINKTYPE_ETHERNET
    for i in 0..PACKETS {
        let packet = &packets[i % packets.len()];
        out.extend(1_790_000_000u32.to_le_bytes());
        out.extend((i as u32 % 1_000_000).to_le_bytes());
        out.extend((packet.len() as u32).to_le_bytes());
        out.extend((packet.len() as u32).to_le_bytes());
        out.extend(packet);
    }
    std::fs::write(path, out).unwrap();
    PACKETS
}

/// A client connection past its handshake with the collector's config.
fn tls_client() -> ClientConnection {
    let device = glimpse_tests::issue_device("acme");
    let pki = &device.pki;
    let ca = load_certs(&glimpse_certs::ca_cert_path(pki)).unwrap().remove(0);
    let server = server_config(
        &ca,
        Vec::new(),
        load_certs(&glimpse_certs::collector_cert_path(pki)).unwrap(),
        load_key(&glimpse_certs::collector_key_path(pki)).unwrap(),
    )
    .unwrap();
    let prefer_chacha = !glimpse_common::tls::has_aes_hardware();
    let client =
        client_config(&ca, load_certs(&device.cert).unwrap(), load_key(&device.key).unwrap(), prefer_chacha).unwrap();
    let mut client = ClientConnection::new(Arc::new(client), "localhost".try_into().unwrap()).unwrap();
    let mut server = ServerConnection::new(Arc::new(server)).unwrap();
    let mut buf = Vec::new();
    while client.is_handshaking() || server.is_handshaking() {
        buf.clear();
        while client.wants_write() {
            client.write_tls(&mut buf).unwrap();
        }
        server.read_tls(&mut buf.as_slice()).unwrap();
        server.process_new_packets().unwrap();
        buf.clear();
        while server.wants_write() {
            server.write_tls(&mut buf).unwrap();
        }
        client.read_tls(&mut buf.as_slice()).unwrap();
        client.process_new_packets().unwrap();
    }
    client
}

fn replay(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("replay.pcap");
    let packets = write_pcap(&path);
    let limits = CaptureLimits { max_packets: u64::MAX, max_bytes: u64::MAX, max_duration: Duration::from_secs(3600) };
    let org = OrgId::new("acme").unwrap();
    let mut client = tls_client();
    let mut frame = Vec::new();

    // Reads, truncates, batches, encodes and (optionally) seals the whole file.
    let mut run = |seal: bool, client: &mut ClientConnection| {
        let mut batch = Batch { org: org.clone(), stream_seq: 0, records: BoundedVec::default() };
        let mut pending: Vec<Record> = Vec::with_capacity(PER_BATCH);
        let mut send = |records: Vec<Record>| {
            batch.stream_seq += 1;
            batch.records = BoundedVec::truncating(records);
            frame.clear();
            encode_batch_frame(&batch, MacForm::Real, DEFAULT_MAX_FRAME_LEN, &mut frame).unwrap();
            if seal {
                client.writer().write_all(&frame).unwrap();
                while client.wants_write() {
                    client.write_tls(&mut std::io::sink()).unwrap();
                }
            }
        };
        let tally = capture_file(&path, "eth0", &limits, |packet| {
            pending.push(Record { observed_at_ms: packet.timestamp_us / 1000, body: RecordBody::Capture(packet) });
            if pending.len() == PER_BATCH {
                send(std::mem::replace(&mut pending, Vec::with_capacity(PER_BATCH)));
            }
        })
        .unwrap();
        if !pending.is_empty() {
            send(pending);
        }
        assert_eq!(tally.packets_kept as usize, packets);
    };

    let mut group = c.benchmark_group("replay");
    group.sample_size(20).throughput(Throughput::Elements(packets as u64));
    group.bench_function("pcap_truncate_encode", |b| b.iter(|| run(false, &mut client)));
    group.bench_function("pcap_truncate_encode_tls", |b| b.iter(|| run(true, &mut client)));
    group.finish();
}

criterion_group!(benches, replay);
criterion_main!(benches);
