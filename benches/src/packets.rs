//! A realistic packet mix for the capture benchmarks and the load tool:
//! 40% IPv4 TCP with options, 20% DNS over UDP, 15% IPv6 TCP, 10% radiotap
//! 802.11 QoS data, 5% VLAN-tagged, 5% ARP, 5% ICMP echo; payloads of
//! varying size.

use glimpse_common::capture::LinkType;

const MAC: [u8; 12] = [0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];

fn eth(ethertype: u16) -> Vec<u8> {
    [&MAC[..], &ethertype.to_be_bytes()].concat()
}

fn ipv4(protocol: u8, upper_len: usize) -> Vec<u8> {
    let total = (20 + upper_len) as u16;
    let mut h = vec![0x45, 0];
    h.extend(total.to_be_bytes());
    h.extend([0x12, 0x34, 0x40, 0, 64, protocol, 0, 0, 10, 0, 0, 2, 93, 184, 216, 34]);
    h
}

fn ipv6(next: u8, payload_len: usize) -> Vec<u8> {
    let mut h = vec![0x60, 0, 0, 0];
    h.extend((payload_len as u16).to_be_bytes());
    h.extend([next, 64]);
    h.extend([0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    h.extend([0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
    h
}

/// TCP with 12 bytes of options (NOP, NOP, timestamps).
fn tcp() -> Vec<u8> {
    let mut h = vec![0xc3, 0x50, 0x01, 0xbb, 0, 0, 0, 1, 0, 0, 0, 1, 0x80, 0x18, 0x01, 0xf5, 0, 0, 0, 0];
    h.extend([1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]);
    h
}

fn udp(dst: u16, payload_len: usize) -> Vec<u8> {
    [50000u16.to_be_bytes(), dst.to_be_bytes(), ((8 + payload_len) as u16).to_be_bytes(), [0, 0]].concat()
}

fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| i as u8).collect()
}

fn tcp4(len: usize) -> Vec<u8> {
    [eth(0x0800), ipv4(6, 32 + len), tcp(), payload(len)].concat()
}

fn dns() -> Vec<u8> {
    let mut q = vec![0xbe, 0xef, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    q.extend(b"\x03www\x07example\x03com\x00\x00\x01\x00\x01");
    [eth(0x0800), ipv4(17, 8 + q.len()), udp(53, q.len()), q].concat()
}

fn tcp6(len: usize) -> Vec<u8> {
    [eth(0x86dd), ipv6(6, 32 + len), tcp(), payload(len)].concat()
}

fn wifi(len: usize) -> Vec<u8> {
    // Radiotap with Flags (FCS present) and dBm Antenna Signal (-60).
    let radiotap = [0, 0, 12, 0, 0x22, 0, 0, 0, 0x10, 0xc4, 0, 0];
    let mut mac = vec![0x88, 0x01, 0x2c, 0];
    mac.extend(MAC);
    mac.extend(&MAC[..6]);
    mac.extend([0x10, 0, 0, 0]);
    let snap = [0xaa, 0xaa, 3, 0, 0, 0, 0x08, 0x00];
    [&radiotap[..], &mac, &snap, &ipv4(6, 32 + len), &tcp(), &payload(len)].concat()
}

fn vlan(len: usize) -> Vec<u8> {
    [eth(0x8100), vec![0, 100, 0x08, 0x00], ipv4(6, 32 + len), tcp(), payload(len)].concat()
}

fn arp() -> Vec<u8> {
    let mut a = vec![0, 1, 8, 0, 6, 4, 0, 1];
    a.extend(&MAC[6..]);
    a.extend([10, 0, 0, 2, 0, 0, 0, 0, 0, 0, 10, 0, 0, 1]);
    [eth(0x0806), a, vec![0; 18]].concat()
}

fn icmp() -> Vec<u8> {
    [eth(0x0800), ipv4(1, 64), vec![8, 0, 0, 0, 0, 1, 0, 1], payload(56)].concat()
}

/// 100 packets in the mix's proportions, interleaved; every one parses
/// to its transport header, so a walk over them is a whole walk.
pub fn mix() -> Vec<(LinkType, Vec<u8>)> {
    let sizes = [0, 40, 512, 1400, 1200];
    let mut packets = Vec::new();
    for i in 0..5 {
        let size = sizes[i % sizes.len()];
        for _ in 0..8 {
            packets.push((LinkType::Ethernet, tcp4(size)));
        }
        for _ in 0..4 {
            packets.push((LinkType::Ethernet, dns()));
        }
        for _ in 0..3 {
            packets.push((LinkType::Ethernet, tcp6(size)));
        }
        for _ in 0..2 {
            packets.push((LinkType::Ieee80211Radiotap, wifi(size)));
        }
        packets.push((LinkType::Ethernet, vlan(size)));
        packets.push((LinkType::Ethernet, arp()));
        packets.push((LinkType::Ethernet, icmp()));
    }
    packets
}
