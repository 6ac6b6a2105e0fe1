//! Arbitrary bytes through the header boundary parser, as the agent sees
//! packets off the wire and the collector sees header bytes from agents. The
//! first byte picks the link type, the rest is the packet.
#![no_main]

use glimpse_common::bounded::BoundedString;
use glimpse_common::capture::{header_boundary, BoundedBytes, CapturedPacket, LinkType, MAX_HEADER_BYTES};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, packet)) = data.split_first() else { return };
    let link = LinkType::ALL[usize::from(selector) % LinkType::ALL.len()];

    let b = header_boundary(link, packet);
    assert!(b.header_len <= packet.len());
    // Stable under its own cut: what the collector re-parses, it keeps.
    assert_eq!(header_boundary(link, &packet[..b.header_len]).header_len, b.header_len);
    // Any shorter capture keeps no more, and nothing past the cut.
    let n = usize::from(selector).wrapping_mul(31) % (packet.len() + 1);
    let shorter = header_boundary(link, &packet[..n]).header_len;
    assert!(shorter <= n && shorter <= b.header_len);
    if n >= b.header_len {
        assert_eq!(shorter, b.header_len);
    }

    // The agent's record needs no cutting by the collector.
    let name = BoundedString::truncating("fuzz0");
    let mut record = CapturedPacket::from_packet(link, 0, name, packet, packet.len() as u32);
    assert!(record.headers.len() <= b.header_len.min(MAX_HEADER_BYTES));
    assert_eq!(record.enforce(), 0);

    // A hostile agent's record: enforce never grows it and is idempotent.
    record.headers = BoundedBytes::truncating(packet);
    let before = record.headers.len();
    let cut = record.enforce();
    assert_eq!(record.headers.len() + cut, before);
    assert_eq!(record.enforce(), 0);
});
