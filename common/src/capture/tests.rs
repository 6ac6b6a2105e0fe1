//! Hand-built packets for every link type and layer, the invariants over
//! every prefix of each, property tests, and pcap fixtures.

use std::net::IpAddr;

use proptest::prelude::*;

use super::*;

/// What no kept header may contain.
const SECRET: &[u8] = b"SECRET-PAYLOAD";
const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];
const MAC_C: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0c];

/// Packet builders. Each returns one layer's bytes.
pub(super) mod build {
    use super::{MAC_A, MAC_B, MAC_C};

    pub(crate) fn eth(ethertype: u16) -> Vec<u8> {
        [&MAC_B[..], &MAC_A, &ethertype.to_be_bytes()].concat()
    }

    pub(crate) fn tag(id: u16, inner: u16) -> Vec<u8> {
        [(0x2000 | id).to_be_bytes(), inner.to_be_bytes()].concat()
    }

    /// IPv4 with `options` and `upper_len` bytes after the header.
    pub(crate) fn ipv4(protocol: u8, options: &[u8], upper_len: usize) -> Vec<u8> {
        ipv4_frag(protocol, options, upper_len, 0x4000)
    }

    pub(crate) fn ipv4_frag(protocol: u8, options: &[u8], upper_len: usize, flags_offset: u16) -> Vec<u8> {
        assert_eq!(options.len() % 4, 0);
        let header_len = 20 + options.len();
        let total = u16::try_from(header_len + upper_len).unwrap();
        let mut h = vec![0x40 | (header_len / 4) as u8, 0];
        h.extend(total.to_be_bytes());
        h.extend([0x12, 0x34]);
        h.extend(flags_offset.to_be_bytes());
        h.extend([64, protocol, 0, 0, 192, 0, 2, 1, 198, 51, 100, 2]);
        h.extend(options);
        h
    }

    pub(crate) fn ipv6(next: u8, payload_len: usize) -> Vec<u8> {
        let mut h = vec![0x60, 0, 0, 0];
        h.extend(u16::try_from(payload_len).unwrap().to_be_bytes());
        h.extend([next, 64]);
        h.extend([0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        h.extend([0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        h
    }

    /// Hop-by-hop, routing or destination options of `len` bytes (a
    /// multiple of 8), filled with PadN.
    pub(crate) fn ext(next: u8, len: usize) -> Vec<u8> {
        assert!(len >= 8 && len.is_multiple_of(8));
        let mut h = vec![next, (len / 8 - 1) as u8, 1, (len - 4) as u8];
        h.resize(len, 0);
        h
    }

    pub(crate) fn frag6(next: u8, offset: u16, more: bool) -> Vec<u8> {
        let field = offset | u16::from(more);
        [&[next, 0][..], &field.to_be_bytes(), &[0xde, 0xad, 0xbe, 0xef]].concat()
    }

    /// AH with `len` bytes (a multiple of 4, at least 12).
    pub(crate) fn ah(next: u8, len: usize) -> Vec<u8> {
        let mut h = vec![next, (len / 4 - 2) as u8, 0, 0, 0, 0, 0x10, 0x01, 0, 0, 0, 7];
        h.resize(len, 0xa5);
        h
    }

    pub(crate) fn tcp(options: &[u8], flags: u8) -> Vec<u8> {
        assert_eq!(options.len() % 4, 0);
        let words = (20 + options.len()) / 4;
        let mut h = vec![0xc0, 0x00, 0x01, 0xbb, 1, 2, 3, 4, 5, 6, 7, 8, (words as u8) << 4, flags, 0xff, 0xff];
        h.extend([0, 0, 0, 0]);
        h.extend(options);
        h
    }

    pub(crate) fn udp(src: u16, dst: u16, payload_len: usize) -> Vec<u8> {
        let len = u16::try_from(8 + payload_len).unwrap();
        [src.to_be_bytes(), dst.to_be_bytes(), len.to_be_bytes(), [0, 0]].concat()
    }

    pub(crate) fn icmp(kind: u8, code: u8) -> Vec<u8> {
        vec![kind, code, 0, 0, 0x12, 0x34, 0, 1]
    }

    /// Radiotap with TSFT, Flags, Rate, Channel and dBm Antenna Signal:
    /// 23 bytes.
    pub(crate) fn radiotap(flags: u8, signal: i8) -> Vec<u8> {
        let mut h = vec![0, 0, 23, 0, 0x2f, 0, 0, 0];
        h.extend([1, 2, 3, 4, 5, 6, 7, 8]);
        h.extend([flags, 0x0c]);
        h.extend(2437u16.to_le_bytes());
        h.extend(0x00a0u16.to_le_bytes());
        h.push(signal as u8);
        assert_eq!(h.len(), 23);
        h
    }

    /// A radiotap header of exactly `len` bytes with no fields.
    pub(crate) fn radiotap_empty(len: u16) -> Vec<u8> {
        let mut h = vec![0, 0];
        h.extend(len.to_le_bytes());
        h.resize(usize::from(len), 0);
        h
    }

    /// An 802.11 data frame header: FC, duration, 3 addresses, sequence
    /// control, then the 4th address and QoS/HT Control as the flags say.
    pub(crate) fn wlan_data(subtype: u8, fc1: u8) -> Vec<u8> {
        let mut h = vec![0x08 | (subtype << 4), fc1, 0x2c, 0x00];
        h.extend(MAC_C); // BSSID
        h.extend(MAC_A);
        h.extend(MAC_B);
        h.extend([0x10, 0x00]);
        if fc1 & 0x03 == 0x03 {
            h.extend([0x02, 0, 0, 0, 0, 0x0d]);
        }
        if subtype & 0x08 != 0 {
            h.extend([0x00, 0x00]);
            if fc1 & 0x80 != 0 {
                h.extend([0, 0, 0, 0]);
            }
        }
        h
    }

    pub(crate) fn wlan_mgmt(subtype: u8) -> Vec<u8> {
        let mut h = vec![subtype << 4, 0, 0, 0];
        h.extend([0xff; 6]);
        h.extend(MAC_C);
        h.extend(MAC_C);
        h.extend([0x20, 0x00]);
        h
    }

    pub(crate) fn snap(ethertype: u16) -> Vec<u8> {
        [&[0xaa, 0xaa, 0x03, 0, 0, 0][..], &ethertype.to_be_bytes()].concat()
    }
}

use build::*;

/// A packet and where each of its header layers ends.
#[derive(Debug, Clone, Default)]
struct Stack {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Stack {
    fn new() -> Self {
        Self::default()
    }

    /// Appends a header layer the parser must keep.
    fn layer(mut self, bytes: impl AsRef<[u8]>) -> Self {
        self.bytes.extend_from_slice(bytes.as_ref());
        self.ends.push(self.bytes.len());
        self
    }

    /// Appends bytes the parser must cut.
    fn payload(mut self, bytes: impl AsRef<[u8]>) -> Self {
        self.bytes.extend_from_slice(bytes.as_ref());
        self
    }

    fn header_len(&self) -> usize {
        self.ends.last().copied().unwrap_or(0)
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The summary without where/why it stopped, which may change when a packet
/// is cut at its own boundary (e.g. `UnknownProtocol` becomes `Truncated`).
fn fields(mut s: PacketSummary) -> PacketSummary {
    s.stopped_at = Layer::Ethernet;
    s.cut_reason = CutReason::Truncated;
    s
}

/// Parses `stack` and checks: the boundary is its last layer; the secret
/// marker is in the packet but not in the kept bytes; every prefix keeps
/// exactly its whole layers; and the cut is stable.
fn check(link: LinkType, stack: &Stack) -> PacketSummary {
    let pkt = &stack.bytes;
    let b = header_boundary(link, pkt);
    assert_eq!(b.header_len, stack.header_len(), "{link:?} {:?}", b.summary);
    if contains(pkt, b"SECRET") {
        assert!(!contains(&pkt[..b.header_len], b"SECRET"), "payload kept: {:?}", b.summary);
    }
    for n in 0..=pkt.len() {
        let cut = header_boundary(link, &pkt[..n]);
        let whole = stack.ends.iter().copied().filter(|&end| end <= n).max().unwrap_or(0);
        assert_eq!(cut.header_len, whole, "{link:?} prefix {n}: {:?}", cut.summary);
    }
    let again = header_boundary(link, &pkt[..b.header_len]);
    assert_eq!(again.header_len, b.header_len);
    assert_eq!(fields(again.summary), fields(b.summary));
    b.summary
}

fn ip(text: &str) -> Option<IpAddr> {
    Some(text.parse().unwrap())
}

#[test]
fn link_type_numbers_round_trip() {
    for link in LinkType::ALL {
        assert_eq!(LinkType::from_dlt(link.dlt()), Some(link));
    }
    assert_eq!(LinkType::from_dlt(1), Some(LinkType::Ethernet));
    assert_eq!(LinkType::from_dlt(127), Some(LinkType::Ieee80211Radiotap));
    assert_eq!(LinkType::from_dlt(276), Some(LinkType::LinuxSll2));
    assert_eq!(LinkType::from_dlt(0), Some(LinkType::BsdLoopback));
    assert_eq!(LinkType::from_dlt(12), None);
    assert_eq!(LinkType::from_dlt(u32::MAX), None);
}

#[test]
fn ethernet_vlan_stack_ipv4_options_tcp_options() {
    let ip_options = [0x94, 0x04, 0, 0, 1, 1, 1, 0];
    let tcp_options = [2, 4, 5, 180, 1, 3, 3, 7, 4, 2, 1, 1];
    let stack = Stack::new()
        .layer(eth(0x88a8))
        .layer(tag(100, 0x8100))
        .layer(tag(200, 0x0800))
        .layer(ipv4(6, &ip_options, 32 + SECRET.len()))
        .layer(tcp(&tcp_options, 0x18))
        .payload(SECRET);
    let s = check(LinkType::Ethernet, &stack);
    assert_eq!(stack.header_len(), 14 + 8 + 28 + 32);
    assert_eq!((s.src_mac, s.dst_mac), (Some(MAC_A), Some(MAC_B)));
    assert_eq!((s.vlan_outer, s.vlan_inner, s.ethertype), (Some(100), Some(200), Some(0x0800)));
    assert_eq!((s.ip_version, s.src_ip, s.dst_ip), (Some(4), ip("192.0.2.1"), ip("198.51.100.2")));
    assert_eq!((s.ip_protocol, s.ttl, s.ip_total_len), (Some(6), Some(64), Some(28 + 32 + 14)));
    assert!(!s.is_fragment);
    assert_eq!((s.src_port, s.dst_port), (Some(49152), Some(443)));
    assert_eq!((s.tcp_seq, s.tcp_ack), (Some(0x01020304), Some(0x05060708)));
    assert_eq!((s.tcp_flags, s.tcp_window), (Some(0x18), Some(0xffff)));
    assert_eq!((s.stopped_at, s.cut_reason), (Layer::Tcp, CutReason::PayloadStarts));
}

#[test]
fn ipv6_extension_chain_then_udp() {
    let upper = 8 + 24 + 8 + 8 + 24 + 8 + SECRET.len();
    let stack = Stack::new()
        .layer(eth(0x86dd))
        .layer(ipv6(0, upper))
        .layer(ext(43, 8))
        .layer(ext(44, 24))
        .layer(frag6(60, 0, true))
        .layer(ext(51, 8))
        .layer(ah(17, 24))
        .layer(udp(5353, 5353, SECRET.len()))
        .payload(SECRET);
    let s = check(LinkType::Ethernet, &stack);
    assert_eq!(stack.header_len(), 14 + 40 + 8 + 24 + 8 + 8 + 24 + 8);
    assert_eq!((s.ip_version, s.src_ip, s.dst_ip), (Some(6), ip("2001:db8::1"), ip("2001:db8::2")));
    assert_eq!((s.ip_protocol, s.ip_total_len), (Some(17), Some(40 + upper as u32)));
    assert_eq!((s.is_fragment, s.more_fragments, s.fragment_offset), (true, true, 0));
    assert_eq!((s.src_port, s.dst_port), (Some(5353), Some(5353)));
}

#[test]
fn ipv4_non_first_fragment_keeps_only_ip() {
    // Offset 1480: the payload looks like a TCP header but is the middle of
    // the datagram.
    let stack = Stack::new()
        .layer(eth(0x0800))
        .layer(ipv4_frag(6, &[], 20 + SECRET.len(), 185))
        .payload(tcp(&[], 0x02))
        .payload(SECRET);
    let s = check(LinkType::Ethernet, &stack);
    assert_eq!(stack.header_len(), 34);
    assert_eq!((s.is_fragment, s.more_fragments, s.fragment_offset), (true, false, 1480));
    assert_eq!((s.stopped_at, s.cut_reason), (Layer::Ipv4, CutReason::NonFirstFragment));
    assert_eq!(s.src_port, None);
}

#[test]
fn ipv4_first_fragment_is_followed() {
    let stack = Stack::new()
        .layer(eth(0x0800))
        .layer(ipv4_frag(17, &[], 8 + SECRET.len(), 0x2000))
        .layer(udp(1, 2, SECRET.len()))
        .payload(SECRET);
    let s = check(LinkType::Ethernet, &stack);
    assert_eq!((s.is_fragment, s.more_fragments, s.fragment_offset), (true, true, 0));
}

#[test]
fn ipv6_non_first_fragment_keeps_ip_and_fragment_header() {
    let stack =
        Stack::new().layer(eth(0x86dd)).layer(ipv6(44, 8 + SECRET.len())).layer(frag6(6, 1448, true)).payload(SECRET);
    let s = check(LinkType::Ethernet, &stack);
    assert_eq!(stack.header_len(), 14 + 40 + 8);
    assert_eq!((s.is_fragment, s.more_fragments, s.fragment_offset), (true, true, 1448));
    assert_eq!((s.ip_protocol, s.cut_reason), (Some(6), CutReason::NonFirstFragment));
}

#[test]
fn icmp_echo_keeps_eight_bytes() {
    let stack = Stack::new().layer(eth(0x0800)).layer(ipv4(1, &[], 8 + SECRET.len())).layer(icmp(8, 0)).payload(SECRET);
    let s = check(LinkType::Ethernet, &stack);
    assert_eq!(stack.header_len(), 42);
    assert_eq!((s.icmp_type, s.icmp_code, s.stopped_at), (Some(8), Some(0), Layer::Icmp));
}

#[test]
fn icmp_error_does_not_keep_the_quoted_packet() {
    // Destination unreachable quoting an IPv4+UDP header whose payload is
    // the secret.
    let quoted = [ipv4(17, &[], 8 + SECRET.len()), udp(1, 2, SECRET.len()), SECRET.to_vec()].concat();
    let stack = Stack::new().layer(eth(0x0800)).layer(ipv4(1, &[], 8 + quoted.len())).layer(icmp(3, 3)).payload(quoted);
    check(LinkType::Ethernet, &stack);
}

#[test]
fn icmpv6_echo_keeps_eight_bytes() {
    let stack = Stack::new().layer(eth(0x86dd)).layer(ipv6(58, 8 + SECRET.len())).layer(icmp(128, 0)).payload(SECRET);
    let s = check(LinkType::Ethernet, &stack);
    assert_eq!(stack.header_len(), 62);
    assert_eq!((s.icmp_type, s.stopped_at), (Some(128), Layer::Icmpv6));
}

#[test]
fn arp_keeps_the_whole_packet_but_not_padding() {
    let mut arp = vec![0, 1, 8, 0, 6, 4, 0, 1];
    arp.extend(MAC_A);
    arp.extend([192, 0, 2, 1]);
    arp.extend([0; 6]);
    arp.extend([192, 0, 2, 254]);
    let stack = Stack::new().layer(eth(0x0806)).layer(arp).payload(&b"SECRET-PAYLOAD-PAD"[..]);
    let s = check(LinkType::Ethernet, &stack);
    assert_eq!(stack.header_len(), 42);
    assert_eq!((s.arp_opcode, s.src_ip, s.dst_ip), (Some(1), ip("192.0.2.1"), ip("192.0.2.254")));
}

#[test]
fn eapol_key_keeps_four_bytes() {
    let mut key = vec![2, 0x01, 0x0a, 0, 16, 0, 0, 0, 0, 0, 0, 0, 1];
    key.extend(SECRET); // stands in for the nonce, MIC and key data
    key.resize(95, 0x5a);
    let stack = Stack::new().layer(eth(0x888e)).layer([2, 3, 0, 95]).payload(key);
    let s = check(LinkType::Ethernet, &stack);
    assert_eq!(stack.header_len(), 18);
    assert_eq!((s.eapol_type, s.eap_code), (Some(3), None));
}

#[test]
fn eap_response_identity_keeps_only_the_eap_header_and_type() {
    let identity = b"alice@SECRET-PAYLOAD.example";
    let eap_len = u16::try_from(5 + identity.len()).unwrap().to_be_bytes();
    let stack = Stack::new()
        .layer(eth(0x888e))
        .layer([1, 0, eap_len[0], eap_len[1]])
        .layer([2, 7, eap_len[0], eap_len[1], 1])
        .payload(identity);
    let s = check(LinkType::Ethernet, &stack);
    assert_eq!(stack.header_len(), 14 + 4 + 5);
    assert_eq!((s.eapol_type, s.eap_code, s.eap_id, s.eap_type), (Some(0), Some(2), Some(7), Some(1)));
    assert!(!contains(&stack.bytes[..23], b"alice"));
}

#[test]
fn eap_success_keeps_four_bytes_and_no_padding() {
    let stack = Stack::new()
        .layer(eth(0x888e))
        .layer([2, 0, 0, 4])
        .layer([3, 9, 0, 4])
        .payload(&b"SECRET-PAYLOAD-SECRET-PAYLOAD-PAD"[..]);
    let s = check(LinkType::Ethernet, &stack);
    assert_eq!((s.eap_code, s.eap_type), (Some(3), None));
}

#[test]
fn eapol_start_and_bad_eap_stop_at_eapol() {
    check(LinkType::Ethernet, &Stack::new().layer(eth(0x888e)).layer([1, 1, 0, 0]).payload(SECRET));
    // An EAP length longer than the EAPOL body: malformed.
    let stack = Stack::new().layer(eth(0x888e)).layer([1, 0, 0, 4]).payload([2, 1, 0, 40, 1]).payload(SECRET);
    assert!(matches!(check(LinkType::Ethernet, &stack).cut_reason, CutReason::Malformed(_)));
    // Unknown EAP code.
    let stack = Stack::new().layer(eth(0x888e)).layer([1, 0, 0, 9]).payload([9, 1, 0, 9, 1]).payload(SECRET);
    assert!(matches!(check(LinkType::Ethernet, &stack).cut_reason, CutReason::Unsupported(_)));
}

#[test]
fn dns_query_name_is_cut() {
    let mut dns = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    dns.extend(b"\x06secret\x07example\x00");
    dns.extend([0, 1, 0, 1]);
    let stack = Stack::new()
        .layer(eth(0x0800))
        .layer(ipv4(17, &[], 8 + dns.len()))
        .layer(udp(53000, 53, dns.len()))
        .payload(&dns);
    let s = check(LinkType::Ethernet, &stack);
    assert_eq!(stack.header_len(), 42);
    assert!(!contains(&stack.bytes[..42], b"secret") && !contains(&stack.bytes[..42], b"example"));
    assert_eq!((s.dst_port, s.stopped_at), (Some(53), Layer::Udp));
}

#[test]
fn linux_sll_and_sll2() {
    let mut sll = vec![0, 0, 0, 1, 0, 6];
    sll.extend(MAC_A);
    sll.extend([0, 0, 0x08, 0x00]);
    let stack = Stack::new().layer(sll).layer(ipv4(6, &[], 20 + SECRET.len())).layer(tcp(&[], 0x10)).payload(SECRET);
    let s = check(LinkType::LinuxSll, &stack);
    assert_eq!(stack.header_len(), 16 + 40);
    assert_eq!((s.src_mac, s.ethertype, s.stopped_at), (Some(MAC_A), Some(0x0800), Layer::Tcp));

    let mut sll2 = vec![0x86, 0xdd, 0, 0, 0, 0, 0, 2, 0, 1, 4, 6];
    sll2.extend(MAC_A);
    sll2.extend([0, 0]);
    let stack = Stack::new().layer(sll2).layer(ipv6(6, 20 + SECRET.len())).layer(tcp(&[], 0x10)).payload(SECRET);
    let s = check(LinkType::LinuxSll2, &stack);
    assert_eq!(stack.header_len(), 20 + 60);
    assert_eq!((s.src_mac, s.ip_version), (Some(MAC_A), Some(6)));

    // A cooked protocol that is not an EtherType (0x0004: 802.2 LLC).
    let mut sll = vec![0, 0, 0, 1, 0, 6];
    sll.extend(MAC_A);
    sll.extend([0, 0, 0x00, 0x04]);
    let stack = Stack::new().layer(sll).payload(SECRET);
    assert!(matches!(check(LinkType::LinuxSll, &stack).cut_reason, CutReason::Unsupported(_)));
}

#[test]
fn bsd_loopback_in_both_byte_orders() {
    for family in [[2, 0, 0, 0], [0, 0, 0, 2]] {
        let stack = Stack::new()
            .layer(family)
            .layer(ipv4(17, &[], 8 + SECRET.len()))
            .layer(udp(1, 2, SECRET.len()))
            .payload(SECRET);
        assert_eq!(check(LinkType::BsdLoopback, &stack).ip_version, Some(4));
    }
    for family in [[30, 0, 0, 0], [0, 0, 0, 30], [24, 0, 0, 0], [0, 0, 0, 28]] {
        let stack =
            Stack::new().layer(family).layer(ipv6(17, 8 + SECRET.len())).layer(udp(1, 2, SECRET.len())).payload(SECRET);
        assert_eq!(check(LinkType::BsdLoopback, &stack).ip_version, Some(6));
    }
    let stack = Stack::new().layer([7, 0, 0, 0]).payload(SECRET);
    assert_eq!(check(LinkType::BsdLoopback, &stack).cut_reason, CutReason::UnknownFamily(7));
}

#[test]
fn raw_ipv4_and_ipv6() {
    let v4 = Stack::new().layer(ipv4(6, &[], 20 + SECRET.len())).layer(tcp(&[], 0x02)).payload(SECRET);
    let v6 = Stack::new().layer(ipv6(6, 20 + SECRET.len())).layer(tcp(&[], 0x02)).payload(SECRET);
    assert_eq!(check(LinkType::RawIp, &v4).ip_version, Some(4));
    assert_eq!(check(LinkType::Ipv4, &v4).ip_version, Some(4));
    assert_eq!(check(LinkType::RawIp, &v6).ip_version, Some(6));
    assert_eq!(check(LinkType::Ipv6, &v6).ip_version, Some(6));
    // The wrong version for the link type keeps nothing.
    let crossed = Stack::new().payload(&v6.bytes);
    assert!(matches!(check(LinkType::Ipv4, &crossed).cut_reason, CutReason::Malformed(_)));
    let crossed = Stack::new().payload(&v4.bytes);
    assert!(matches!(check(LinkType::Ipv6, &crossed).cut_reason, CutReason::Malformed(_)));
    let garbage = Stack::new().payload(SECRET);
    assert!(matches!(check(LinkType::RawIp, &garbage).cut_reason, CutReason::Malformed(_)));
}

#[test]
fn radiotap_qos_data_llc_snap_ipv4_udp() {
    let stack = Stack::new()
        .layer(radiotap(0x10, -42))
        .layer(wlan_data(8, 0x01))
        .layer(snap(0x0800))
        .layer(ipv4(17, &[], 8 + SECRET.len()))
        .layer(udp(68, 67, SECRET.len()))
        .payload(SECRET)
        .payload([0xde, 0xad, 0xbe, 0xef]); // FCS
    let s = check(LinkType::Ieee80211Radiotap, &stack);
    assert_eq!(stack.header_len(), 23 + 26 + 8 + 20 + 8);
    assert_eq!(s.radiotap_signal_dbm, Some(-42));
    assert_eq!((s.wlan_type, s.wlan_subtype), (Some(2), Some(8)));
    assert_eq!(s.wlan_addrs, [Some(MAC_C), Some(MAC_A), Some(MAC_B)]);
    // To the DS: SA is address 2, DA is address 3.
    assert_eq!((s.src_mac, s.dst_mac), (Some(MAC_A), Some(MAC_B)));
    assert_eq!((s.ethertype, s.dst_port), (Some(0x0800), Some(67)));

    // The same frame without radiotap.
    let bare = Stack { bytes: stack.bytes[23..].to_vec(), ends: stack.ends[1..].iter().map(|e| e - 23).collect() };
    assert_eq!(check(LinkType::Ieee80211, &bare).radiotap_signal_dbm, None);
}

#[test]
fn radiotap_padding_four_addresses_and_ht_control() {
    // Flags 0x20: the 26-byte QoS header is padded to 28.
    let padded = [wlan_data(8, 0x01), vec![0, 0]].concat();
    let stack = Stack::new()
        .layer(radiotap(0x20, -60))
        .layer(padded)
        .layer(snap(0x86dd))
        .layer(ipv6(6, 20 + SECRET.len()))
        .layer(tcp(&[], 0x10))
        .payload(SECRET);
    check(LinkType::Ieee80211Radiotap, &stack);

    // WDS (to and from DS) QoS data with HT Control: 24 + 6 + 2 + 4.
    let wds = wlan_data(8, 0x83);
    assert_eq!(wds.len(), 36);
    let stack = Stack::new()
        .layer(radiotap(0, -60))
        .layer(wds)
        .layer(snap(0x0800))
        .layer(ipv4(6, &[], 20 + SECRET.len()))
        .layer(tcp(&[], 0x10))
        .payload(SECRET);
    let s = check(LinkType::Ieee80211Radiotap, &stack);
    assert_eq!((s.src_mac, s.dst_mac), (Some([0x02, 0, 0, 0, 0, 0x0d]), Some(MAC_B)));
}

#[test]
fn radiotap_extended_presence_and_alignment() {
    // Presence words: TSFT + Antenna Signal + Ext, then an empty word. TSFT
    // starts at 16 (8-aligned after the 12 bytes of bitmaps), signal at 24.
    let mut rt = vec![0, 0, 25, 0];
    rt.extend(0x8000_0021u32.to_le_bytes());
    rt.extend(0u32.to_le_bytes());
    rt.extend([0; 4]);
    rt.extend([9; 8]);
    rt.push(-71i8 as u8);
    let stack = Stack::new().layer(rt).layer(wlan_mgmt(4)).payload(SECRET);
    assert_eq!(check(LinkType::Ieee80211Radiotap, &stack).radiotap_signal_dbm, Some(-71));

    // A field past the declared length, a bad version, a length under 8.
    let mut short = vec![0, 0, 9, 0];
    short.extend(0x0000_0001u32.to_le_bytes());
    short.push(0);
    for bad in [short, vec![1, 0, 8, 0, 0, 0, 0, 0], vec![0, 0, 4, 0, 0, 0, 0, 0]] {
        let stack = Stack::new().payload(bad).payload(wlan_mgmt(8)).payload(SECRET);
        check(LinkType::Ieee80211Radiotap, &stack);
    }
}

#[test]
fn beacon_keeps_only_the_mac_header() {
    let mut body = vec![1, 2, 3, 4, 5, 6, 7, 8, 0x64, 0, 0x11, 0x04, 0, SECRET.len() as u8];
    body.extend(SECRET);
    body.extend([1, 1, 0x82]);
    let stack = Stack::new().layer(radiotap_empty(8)).layer(wlan_mgmt(8)).payload(&body);
    let s = check(LinkType::Ieee80211Radiotap, &stack);
    assert_eq!(stack.header_len(), 8 + 24);
    assert_eq!((s.wlan_type, s.wlan_subtype), (Some(0), Some(8)));
    assert_eq!(s.wlan_addrs, [Some([0xff; 6]), Some(MAC_C), Some(MAC_C)]);
    assert_eq!((s.stopped_at, s.cut_reason), (Layer::Ieee80211, CutReason::PayloadStarts));

    let bare = Stack::new().layer(wlan_mgmt(8)).payload(&body);
    assert_eq!(check(LinkType::Ieee80211, &bare).wlan_subtype, Some(8));
}

#[test]
fn protected_null_and_amsdu_data_frames_keep_the_mac_header() {
    // Protected: the CCMP header and ciphertext are cut.
    let ccmp = [1, 0, 0, 0x20, 0, 0, 0, 0];
    let stack = Stack::new().layer(wlan_data(0, 0x41)).payload(ccmp).payload(SECRET);
    let s = check(LinkType::Ieee80211, &stack);
    assert_eq!(stack.header_len(), 24);
    assert_eq!(s.cut_reason, CutReason::Encrypted);

    let stack = Stack::new().layer(radiotap(0, -50)).layer(wlan_data(8, 0x41)).payload(ccmp).payload(SECRET);
    assert_eq!(check(LinkType::Ieee80211Radiotap, &stack).cut_reason, CutReason::Encrypted);

    // QoS Null: no body at all.
    let stack = Stack::new().layer(wlan_data(12, 0x11)).payload(SECRET);
    assert_eq!(check(LinkType::Ieee80211, &stack).cut_reason, CutReason::PayloadStarts);

    // A-MSDU present (QoS control bit 7).
    let mut amsdu = wlan_data(8, 0x01);
    amsdu[24] = 0x80;
    let stack = Stack::new().layer(amsdu).payload(snap(0x0800)).payload(SECRET);
    assert!(matches!(check(LinkType::Ieee80211, &stack).cut_reason, CutReason::Unsupported(_)));

    // Non-SNAP LLC after a data header.
    let stack = Stack::new().layer(wlan_data(0, 0x01)).payload([0x42, 0x42, 0x03, 0, 0, 0, 0, 0]).payload(SECRET);
    assert!(matches!(check(LinkType::Ieee80211, &stack).cut_reason, CutReason::Unsupported(_)));
}

#[test]
fn control_frames_keep_their_addresses() {
    let mut ack = vec![0xd4, 0, 0, 0];
    ack.extend(MAC_A);
    let s = check(LinkType::Ieee80211, &Stack::new().layer(&ack).payload([1, 2, 3, 4]));
    assert_eq!((s.wlan_type, s.wlan_subtype, s.wlan_addrs), (Some(1), Some(13), [Some(MAC_A), None, None]));

    let mut rts = vec![0xb4, 0, 0, 0];
    rts.extend(MAC_A);
    rts.extend(MAC_B);
    let s = check(LinkType::Ieee80211, &Stack::new().layer(&rts).payload([1, 2, 3, 4]));
    assert_eq!(s.wlan_addrs, [Some(MAC_A), Some(MAC_B), None]);

    // BlockAck: the addresses, not the bitmap.
    let mut ba = vec![0x94, 0, 0, 0];
    ba.extend(MAC_A);
    ba.extend(MAC_B);
    check(LinkType::Ieee80211, &Stack::new().layer(&ba).payload([5, 0, 0x10, 0]).payload(SECRET));

    // Extension frames and protocol version 1 keep nothing.
    check(LinkType::Ieee80211, &Stack::new().payload([0x0c, 0, 0, 0]).payload(SECRET));
    check(LinkType::Ieee80211, &Stack::new().payload([0x81, 0, 0, 0]).payload(SECRET));
}

#[test]
fn ieee8023_with_snap_and_without() {
    let inner = [snap(0x0800), ipv4(6, &[], 20 + SECRET.len()), tcp(&[], 2), SECRET.to_vec()].concat();
    let stack = Stack::new()
        .layer(eth(u16::try_from(inner.len()).unwrap()))
        .layer(snap(0x0800))
        .layer(ipv4(6, &[], 20 + SECRET.len()))
        .layer(tcp(&[], 2))
        .payload(SECRET);
    check(LinkType::Ethernet, &stack);

    // Spanning tree BPDU: LLC 42 42 03, no SNAP.
    let stack = Stack::new().layer(eth(38)).payload([0x42, 0x42, 0x03, 0, 0, 0, 0]).payload(SECRET);
    assert!(matches!(check(LinkType::Ethernet, &stack).cut_reason, CutReason::Unsupported(_)));

    // An 802.3 length too short for SNAP.
    let stack = Stack::new().layer(eth(4)).payload(snap(0x0800)).payload(SECRET);
    assert!(matches!(check(LinkType::Ethernet, &stack).cut_reason, CutReason::Malformed(_)));

    // Type/length values 1501..=1535 are neither.
    let stack = Stack::new().payload(eth(1510)).payload(SECRET);
    assert!(matches!(check(LinkType::Ethernet, &stack).cut_reason, CutReason::Malformed(_)));
}

#[test]
fn unknown_ethertype_keeps_the_link_header() {
    let stack = Stack::new().layer(eth(0x88cc)).payload(SECRET);
    let s = check(LinkType::Ethernet, &stack);
    assert_eq!((s.stopped_at, s.cut_reason), (Layer::Ethernet, CutReason::UnknownEtherType(0x88cc)));
    let stack = Stack::new().layer(eth(0x8100)).layer(tag(5, 0x8847)).payload(SECRET);
    let s = check(LinkType::Ethernet, &stack);
    assert_eq!((s.stopped_at, s.cut_reason), (Layer::Vlan, CutReason::UnknownEtherType(0x8847)));
}

#[test]
fn unknown_and_encrypted_ip_protocols_keep_the_ip_headers() {
    let stack = Stack::new().layer(eth(0x0800)).layer(ipv4(47, &[], 4 + SECRET.len())).payload(SECRET);
    let s = check(LinkType::Ethernet, &stack);
    assert_eq!((s.stopped_at, s.cut_reason), (Layer::Ipv4, CutReason::UnknownProtocol(47)));

    let stack = Stack::new().layer(eth(0x0800)).layer(ipv4(50, &[], 8 + SECRET.len())).payload(SECRET);
    assert_eq!(check(LinkType::Ethernet, &stack).cut_reason, CutReason::Encrypted);

    // AH under IPv4, then ESP.
    let stack =
        Stack::new().layer(eth(0x0800)).layer(ipv4(51, &[], 16 + SECRET.len())).layer(ah(50, 16)).payload(SECRET);
    assert_eq!(check(LinkType::Ethernet, &stack).stopped_at, Layer::IpExtension);

    // IPv6 "no next header" after destination options.
    let stack = Stack::new().layer(eth(0x86dd)).layer(ipv6(60, 8 + SECRET.len())).layer(ext(59, 8)).payload(SECRET);
    assert_eq!(check(LinkType::Ethernet, &stack).cut_reason, CutReason::PayloadStarts);

    // ICMP under IPv6 and ICMPv6 under IPv4 are not followed.
    let stack = Stack::new().layer(eth(0x86dd)).layer(ipv6(1, 8 + SECRET.len())).payload(icmp(8, 0)).payload(SECRET);
    check(LinkType::Ethernet, &stack);
    let stack =
        Stack::new().layer(eth(0x0800)).layer(ipv4(58, &[], 8 + SECRET.len())).payload(icmp(8, 0)).payload(SECRET);
    check(LinkType::Ethernet, &stack);
}

#[test]
fn ethernet_padding_is_not_header() {
    // A bare ACK: 54 bytes padded to the 60-byte minimum with junk.
    let stack = Stack::new().layer(eth(0x0800)).layer(ipv4(6, &[], 20)).layer(tcp(&[], 0x10)).payload(b"SECRET");
    assert_eq!(check(LinkType::Ethernet, &stack).ip_total_len, Some(40));
}

#[test]
fn length_fields_bound_the_headers_above_them() {
    // IPv4 total length 30: a 20-byte TCP header cannot fit.
    let mut ip = ipv4(6, &[], 10);
    let stack = Stack::new().layer(eth(0x0800)).layer(&ip).payload(tcp(&[], 2)).payload(SECRET);
    assert!(matches!(check(LinkType::Ethernet, &stack).cut_reason, CutReason::Malformed(_)));
    // Total length under the header length, IHL under 5, wrong version.
    ip[3] = 19;
    let stack = Stack::new().layer(eth(0x0800)).payload(&ip).payload(SECRET);
    assert!(matches!(check(LinkType::Ethernet, &stack).cut_reason, CutReason::Malformed(_)));
    for first in [0x44, 0x65] {
        let mut ip = ipv4(6, &[], 20);
        ip[0] = first;
        let stack = Stack::new().layer(eth(0x0800)).payload(&ip).payload(tcp(&[], 2)).payload(SECRET);
        assert!(matches!(check(LinkType::Ethernet, &stack).cut_reason, CutReason::Malformed(_)));
    }
    // IPv6 payload length 0 (a jumbogram): nothing past the fixed header.
    let stack = Stack::new().layer(eth(0x86dd)).layer(ipv6(6, 0)).payload(tcp(&[], 2)).payload(SECRET);
    assert!(matches!(check(LinkType::Ethernet, &stack).cut_reason, CutReason::Malformed(_)));
    // TCP data offset under 5; UDP length under 8.
    let mut t = tcp(&[], 2);
    t[12] = 0x40;
    let stack = Stack::new().layer(eth(0x0800)).layer(ipv4(6, &[], 40)).payload(&t).payload([0; 20]);
    assert!(matches!(check(LinkType::Ethernet, &stack).cut_reason, CutReason::Malformed(_)));
    let stack = Stack::new().layer(eth(0x0800)).layer(ipv4(17, &[], 8)).payload([0, 1, 0, 2, 0, 7, 0, 0]);
    assert!(matches!(check(LinkType::Ethernet, &stack).cut_reason, CutReason::Malformed(_)));
}

#[test]
fn header_chains_are_bounded() {
    let mut stack = Stack::new().layer(eth(0x8100));
    for _ in 0..4 {
        stack = stack.layer(tag(1, 0x8100));
    }
    let s = check(LinkType::Ethernet, &stack.payload(tag(1, 0x0800)).payload(SECRET));
    assert_eq!((s.stopped_at, s.cut_reason), (Layer::Vlan, CutReason::TooManyHeaders));

    let mut stack = Stack::new().layer(eth(0x86dd)).layer(ipv6(60, 9 * 8 + 8));
    for _ in 0..8 {
        stack = stack.layer(ext(60, 8));
    }
    let s = check(LinkType::Ethernet, &stack.payload(ext(17, 8)).payload(udp(1, 2, 0)));
    assert_eq!((s.stopped_at, s.cut_reason), (Layer::IpExtension, CutReason::TooManyHeaders));
}

#[test]
fn every_prefix_of_every_sample_is_safe() {
    // `check` already walks every prefix of each sample above; this covers
    // the empty packet and one-byte packets for every link type.
    for link in LinkType::ALL {
        assert_eq!(header_boundary(link, &[]).header_len, 0);
        for byte in 0..=255u8 {
            assert_eq!(header_boundary(link, &[byte]).header_len, 0);
        }
    }
}

/// Minimal pcap reader: (link type, packets).
fn read_pcap(file: &[u8]) -> (u32, Vec<&[u8]>) {
    let u32_at = |at: usize| u32::from_le_bytes(file[at..at + 4].try_into().unwrap());
    assert_eq!(u32_at(0), 0xa1b2_c3d4, "little-endian microsecond pcap");
    let link = u32_at(20);
    let mut packets = Vec::new();
    let mut at = 24;
    while at < file.len() {
        let caplen = u32_at(at + 8) as usize;
        packets.push(&file[at + 16..at + 16 + caplen]);
        at += 16 + caplen;
    }
    (link, packets)
}

/// Fixtures written by `tests/fixtures/make_pcaps.py` with Python's `struct`,
/// independently of the builders above; expected lengths worked out by hand.
#[test]
fn pcap_fixtures() {
    let cases: [(&[u8], &[usize]); 2] = [
        (
            include_bytes!("../../tests/fixtures/ethernet.pcap"),
            // TCP SYN with options, DNS query, ARP, EAP identity, ICMPv6
            // echo over a VLAN, IPv4 later fragment.
            &[14 + 20 + 60, 14 + 20 + 8, 14 + 28, 14 + 4 + 5, 14 + 4 + 40 + 8, 14 + 20],
        ),
        (
            include_bytes!("../../tests/fixtures/radiotap.pcap"),
            // Beacon, QoS data with IPv4/TCP, protected data, EAPOL-Key.
            &[18 + 24, 18 + 26 + 8 + 20 + 20, 18 + 24, 18 + 26 + 8 + 4],
        ),
    ];
    for (file, expected) in cases {
        let (dlt, packets) = read_pcap(file);
        let link = LinkType::from_dlt(dlt).unwrap();
        assert_eq!(packets.len(), expected.len());
        for (packet, &want) in packets.iter().zip(expected) {
            let b = header_boundary(link, packet);
            assert_eq!(b.header_len, want, "{link:?}: {:?}", b.summary);
            assert!(!contains(&packet[..want], b"SECRET"), "{:?}", b.summary);
            assert!(contains(packet, b"SECRET"));
        }
    }
}

/// A valid header stack from a handful of choices, with an arbitrary payload.
fn valid_stack() -> impl Strategy<Value = (LinkType, Stack)> {
    let link = prop::sample::select(vec![
        LinkType::Ethernet,
        LinkType::LinuxSll,
        LinkType::LinuxSll2,
        LinkType::RawIp,
        LinkType::BsdLoopback,
        LinkType::Ieee80211Radiotap,
    ]);
    (
        link,
        0..=2usize,
        any::<bool>(),
        0..=10usize,
        prop::collection::vec((0..4u8, 0..3usize), 0..4),
        0..3u8,
        0..=10usize,
        prop::collection::vec(any::<u8>(), 0..300),
        0..40usize,
    )
        .prop_map(|(link, vlans, v6, ip_opts, exts, transport, tcp_opts, payload, padding)| {
            let (protocol, upper) = match transport {
                0 => (6, tcp(&vec![1; tcp_opts * 4], 0x18)),
                1 => (17, udp(1000, 53, payload.len())),
                _ => (if v6 { 58 } else { 1 }, icmp(3, 1)),
            };
            let ethertype = if v6 { 0x86dd } else { 0x0800 };
            let mut stack = Stack::new();
            stack = match link {
                LinkType::Ethernet => {
                    let mut stack = stack.layer(eth(if vlans > 0 { 0x8100 } else { ethertype }));
                    for n in 0..vlans {
                        stack = stack.layer(tag(n as u16 + 1, if n + 1 < vlans { 0x8100 } else { ethertype }));
                    }
                    stack
                }
                LinkType::LinuxSll => {
                    stack.layer([&[0, 4, 0, 1, 0, 6][..], &MAC_A, &[0, 0], &u16::to_be_bytes(ethertype)].concat())
                }
                LinkType::LinuxSll2 => stack.layer(
                    [&u16::to_be_bytes(ethertype)[..], &[0, 0, 0, 0, 0, 3, 0, 1, 0, 6], &MAC_A, &[0, 0]].concat(),
                ),
                LinkType::BsdLoopback => stack.layer(if v6 { [0, 0, 0, 30] } else { [2, 0, 0, 0] }),
                LinkType::Ieee80211Radiotap => {
                    stack.layer(radiotap(0, -30)).layer(wlan_data(8, 0x02)).layer(snap(ethertype))
                }
                _ => stack,
            };
            // Extension headers, built back to front so each names the
            // next: hop-by-hop/routing/destination options of 8-24 bytes, or
            // AH of 12-20; IPv4 gets AH only.
            let mut next = protocol;
            let mut built: Vec<Vec<u8>> = Vec::new();
            for &(kind, units) in exts.iter().rev() {
                let kind = if v6 { [0, 43, 60, 51][usize::from(kind)] } else { 51 };
                built.push(if kind == 51 { ah(next, 12 + 4 * units) } else { ext(next, 8 * (1 + units)) });
                next = kind;
            }
            built.reverse();
            let upper_len = built.iter().map(Vec::len).sum::<usize>() + upper.len() + payload.len();
            stack = if v6 {
                stack.layer(ipv6(next, upper_len))
            } else {
                stack.layer(ipv4(next, &vec![1; ip_opts * 4], upper_len))
            };
            for header in built {
                stack = stack.layer(header);
            }
            stack = stack.layer(upper).payload(payload);
            if link == LinkType::Ethernet {
                // Trailing bytes after the datagram (padding, FCS).
                stack = stack.payload(vec![0x55; padding]);
            }
            (link, stack)
        })
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic_and_stay_in_bounds(
        bytes in prop::collection::vec(any::<u8>(), 0..600),
        link in prop::sample::select(LinkType::ALL.to_vec()),
        cut in any::<prop::sample::Index>(),
    ) {
        let b = header_boundary(link, &bytes);
        prop_assert!(b.header_len <= bytes.len());
        // Stable under its own cut, and a cut never keeps more.
        prop_assert_eq!(header_boundary(link, &bytes[..b.header_len]).header_len, b.header_len);
        let n = cut.index(bytes.len() + 1);
        let shorter = header_boundary(link, &bytes[..n]).header_len;
        if n >= b.header_len {
            prop_assert_eq!(shorter, b.header_len);
        } else {
            prop_assert!(shorter <= n);
        }
    }

    #[test]
    fn valid_stacks_keep_exactly_their_headers((link, stack) in valid_stack()) {
        let b = header_boundary(link, &stack.bytes);
        prop_assert_eq!(b.header_len, stack.header_len(), "{:?}", b.summary);
        prop_assert_eq!(b.summary.cut_reason, CutReason::PayloadStarts);
    }
}
