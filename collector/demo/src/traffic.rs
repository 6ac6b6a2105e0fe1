//! A small pcap file of everyday traffic whose payloads carry a visible
//! marker, so the demo can show that captures keep headers only: the marker
//! is in the file the agent reads and nowhere in what the collector stores.
//!
//! No capture privileges are needed: the agent replays the file through the
//! same truncation and transport a live capture uses.

use std::io::Write;
use std::path::Path;

/// Text in every packet's payload, never in any stored capture.
pub(crate) const DEMO_PAYLOAD_MARKER: &[u8] = b"DEMO-SECRET-PAYLOAD";

const CLIENT_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x10, 0x00, 0x01];
const GATEWAY_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x10, 0x00, 0xfe];
const CLIENT_V4: [u8; 4] = [192, 168, 1, 23];
const SERVER_V4: [u8; 4] = [198, 51, 100, 80];
const RESOLVER_V4: [u8; 4] = [192, 168, 1, 1];
const CLIENT_V6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x23];
const SERVER_V6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x80];

fn ethernet(ethertype: u16, rest: &[u8]) -> Vec<u8> {
    [&GATEWAY_MAC[..], &CLIENT_MAC, &ethertype.to_be_bytes(), rest].concat()
}

fn ipv4(protocol: u8, src: [u8; 4], dst: [u8; 4], upper: &[u8]) -> Vec<u8> {
    let total = u16::try_from(20 + upper.len()).expect("demo packets are small");
    let mut header = vec![0x45, 0];
    header.extend(total.to_be_bytes());
    header.extend([0x1c, 0x46, 0x40, 0, 64, protocol, 0, 0]);
    header.extend(src);
    header.extend(dst);
    let checksum = internet_checksum(&header);
    header[10..12].copy_from_slice(&checksum.to_be_bytes());
    [header, upper.to_vec()].concat()
}

fn ipv6(next_header: u8, upper: &[u8]) -> Vec<u8> {
    let len = u16::try_from(upper.len()).expect("demo packets are small");
    let mut header = vec![0x60, 0, 0, 0];
    header.extend(len.to_be_bytes());
    header.extend([next_header, 64]);
    header.extend(CLIENT_V6);
    header.extend(SERVER_V6);
    [header, upper.to_vec()].concat()
}

fn internet_checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn tcp(src_port: u16, dst_port: u16, payload: &[u8]) -> Vec<u8> {
    let mut segment = Vec::new();
    segment.extend(src_port.to_be_bytes());
    segment.extend(dst_port.to_be_bytes());
    segment.extend(1_000_000u32.to_be_bytes());
    segment.extend(2_000_000u32.to_be_bytes());
    // Data offset 8 words (12 bytes of options), flags PSH+ACK.
    segment.extend([0x80, 0x18, 0x01, 0xf6, 0, 0, 0, 0]);
    segment.extend([1, 1, 8, 10, 0, 0, 0x10, 0, 0, 0, 0x20, 0]);
    segment.extend(payload);
    segment
}

fn udp(src_port: u16, dst_port: u16, payload: &[u8]) -> Vec<u8> {
    let len = u16::try_from(8 + payload.len()).expect("demo packets are small");
    [&src_port.to_be_bytes()[..], &dst_port.to_be_bytes(), &len.to_be_bytes(), &[0, 0], payload].concat()
}

fn demo_packets() -> Vec<Vec<u8>> {
    let marker = String::from_utf8_lossy(DEMO_PAYLOAD_MARKER);
    let http = format!("GET /login?user=alice&token={marker} HTTP/1.1\r\nHost: intranet.example\r\n\r\n");
    let mut dns = vec![0x4d, 0x2a, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in [DEMO_PAYLOAD_MARKER, b"example".as_slice()] {
        dns.push(u8::try_from(label.len()).expect("short labels"));
        dns.extend(label);
    }
    dns.extend([0, 0, 1, 0, 1]);
    let mut ping = vec![8, 0, 0, 0, 0x12, 0x34, 0, 1];
    ping.extend(DEMO_PAYLOAD_MARKER);
    let ping_checksum = internet_checksum(&ping);
    ping[2..4].copy_from_slice(&ping_checksum.to_be_bytes());
    vec![
        ethernet(0x0800, &ipv4(6, CLIENT_V4, SERVER_V4, &tcp(51_000, 80, http.as_bytes()))),
        ethernet(0x0800, &ipv4(17, CLIENT_V4, RESOLVER_V4, &udp(53_000, 53, &dns))),
        ethernet(0x0800, &ipv4(1, CLIENT_V4, SERVER_V4, &ping)),
        ethernet(0x86dd, &ipv6(17, &udp(40_000, 5_000, DEMO_PAYLOAD_MARKER))),
        ethernet(0x86dd, &ipv6(6, &tcp(51_001, 443, DEMO_PAYLOAD_MARKER))),
    ]
}

/// Writes the demo traffic as a classic little-endian pcap file
/// (Ethernet link type, microsecond timestamps from `start_us`).
pub(crate) fn write_demo_pcap(path: &Path, start_us: i64) -> std::io::Result<usize> {
    let mut out = Vec::new();
    out.extend(0xa1b2_c3d4u32.to_le_bytes());
    out.extend(2u16.to_le_bytes());
    out.extend(4u16.to_le_bytes());
    out.extend(0i32.to_le_bytes());
    out.extend(0u32.to_le_bytes());
    out.extend(65_535u32.to_le_bytes());
    out.extend(1u32.to_le_bytes());
    let packets = demo_packets();
    for (i, packet) in packets.iter().enumerate() {
        let at = start_us + i as i64 * 1_000;
        let len = u32::try_from(packet.len()).expect("demo packets are small");
        out.extend(u32::try_from(at / 1_000_000).unwrap_or(0).to_le_bytes());
        out.extend(u32::try_from(at % 1_000_000).unwrap_or(0).to_le_bytes());
        out.extend(len.to_le_bytes());
        out.extend(len.to_le_bytes());
        out.extend(packet);
    }
    std::fs::File::create(path)?.write_all(&out)?;
    Ok(packets.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use glimpse_common::capture::{header_boundary, LinkType};

    #[test]
    fn every_demo_packet_carries_the_marker_past_its_headers() {
        for packet in demo_packets() {
            let boundary = header_boundary(LinkType::Ethernet, &packet);
            let position = packet.windows(DEMO_PAYLOAD_MARKER.len()).position(|w| w == DEMO_PAYLOAD_MARKER);
            let position = position.expect("marker in the packet");
            assert!(position >= boundary.header_len, "{boundary:?}");
            assert!(boundary.header_len >= 14 + 20 + 8, "headers recognised: {boundary:?}");
        }
    }
}
