//! Glimpse's benchmarks: shared fixtures for the criterion benchmarks (which
//! live in `benches/`), and [`load`], the engine of `glimpse-bench`, the load
//! tool an operator runs to size a collector.

pub mod load;
pub mod packets;

use glimpse_common::bounded::{BoundedString, BoundedVec};
use glimpse_common::capture::CapturedPacket;
use glimpse_common::identity::{DeviceKind, OrgId};
use glimpse_common::record::{DeviceMetadata, InterfaceStats, MacAddr, Record, RecordBody};
use glimpse_common::wire::Batch;

/// A metadata record shaped like an access point's: 4 interfaces with
/// addresses and counters.
pub fn sample_record(i: usize) -> Record {
    let interfaces = ["br-lan", "eth0", "lo", "wlan0"]
        .iter()
        .enumerate()
        .map(|(n, name)| InterfaceStats {
            name: BoundedString::truncating(name),
            // The device's own interfaces: the same addresses in every
            // record, as on a real access point.
            mac: Some(MacAddr([0x02, 0, 0, 0, n as u8, 1])),
            addresses: BoundedVec::truncating(vec![
                format!("192.0.2.{}", n + 1).parse().unwrap(),
                "2001:db8::1".parse().unwrap(),
            ]),
            oper_up: true,
            mtu: 1500,
            rx_bytes: 1_234_567_890 + i as u64,
            rx_packets: 9_876_543,
            tx_bytes: 987_654_321,
            tx_packets: 1_234_567,
            ..Default::default()
        })
        .collect();
    Record {
        observed_at_ms: 1_790_000_000_000 + i as i64,
        body: RecordBody::Metadata(DeviceMetadata {
            kind: Some(DeviceKind::Ap),
            hostname: BoundedString::truncating("ap-lobby-2f"),
            os_name: BoundedString::truncating("OpenWrt"),
            os_version: BoundedString::truncating("23.05.3"),
            model: Some(BoundedString::truncating("GL.iNet GL-MT3000")),
            kernel: BoundedString::truncating("5.15.150"),
            uptime_secs: 86_400,
            interfaces: BoundedVec::truncating(interfaces),
        }),
    }
}

/// A batch of `records` sample records.
pub fn sample_batch(records: usize) -> Batch {
    Batch {
        org: OrgId::new("acme").unwrap(),
        stream_seq: 1,
        records: BoundedVec::truncating((0..records).map(sample_record).collect()),
    }
}

/// A capture-header record: packet `i` of the realistic mix
/// ([`packets::mix`]) cut to its headers as the agent does, so about 100
/// bytes encoded.
pub fn sample_capture(packets: &[(glimpse_common::capture::LinkType, Vec<u8>)], i: usize, now_ms: i64) -> Record {
    let (link, packet) = &packets[i % packets.len()];
    let wire_len = u32::try_from(packet.len()).unwrap_or(u32::MAX);
    Record {
        observed_at_ms: now_ms,
        body: RecordBody::Capture(CapturedPacket::from_packet(
            *link,
            now_ms.saturating_mul(1000).saturating_add(i as i64),
            BoundedString::truncating("wlan0"),
            packet,
            wire_len,
        )),
    }
}

/// A batch of `records` capture-header records from the realistic mix.
pub fn capture_batch(records: usize) -> Batch {
    let packets = packets::mix();
    Batch {
        org: OrgId::new("acme").unwrap(),
        stream_seq: 1,
        records: BoundedVec::truncating((0..records).map(|i| sample_capture(&packets, i, 1_790_000_000_000)).collect()),
    }
}
