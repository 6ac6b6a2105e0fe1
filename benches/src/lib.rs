//! Shared fixtures for Glimpse's criterion benchmarks (the benchmarks
//! themselves live in `benches/`).

use glimpse_common::bounded::{BoundedString, BoundedVec};
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
            mac: Some(MacAddr([0x02, 0, 0, 0, n as u8, i as u8])),
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
