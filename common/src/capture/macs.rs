//! Where the link-layer (MAC) addresses sit in captured headers, so they
//! can be pseudonymised in place (see [`crate::minimise`]).
//!
//! Covered: Ethernet source and destination, Linux cooked (SLL, SLL2)
//! source address, 802.11 addresses 1 to 4 (with or without radiotap), and
//! the sender and target hardware addresses of ARP over Ethernet (also
//! VLAN-tagged) and Linux cooked captures. Not covered: ARP inside 802.11
//! data frames, and MAC-derived IPv6 interface identifiers (EUI-64), which
//! are IP addresses and stay as captured.

use super::record::CapturedPacket;
use super::LinkType;
use crate::net::MacAddr;

const ETHERTYPE_ARP: u16 = 0x0806;
const VLAN_TAGS: [u16; 3] = [0x8100, 0x88a8, 0x9100];
/// Most MAC positions any supported header has (802.11: 4, ARP: 2, more
/// than enough).
const MAX_POSITIONS: usize = 8;

fn be16(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*bytes.get(at)?, *bytes.get(at + 1)?]))
}

/// ARP over Ethernet/IPv4 starting at `at`: sender and target hardware
/// addresses.
fn arp_positions(bytes: &[u8], at: usize, out: &mut Vec<usize>) {
    // Hardware type 1 (Ethernet), hardware address length 6.
    if be16(bytes, at) == Some(1) && bytes.get(at + 4) == Some(&6) {
        out.push(at + 8);
        out.push(at + 18);
    }
}

fn ethernet_positions(bytes: &[u8], out: &mut Vec<usize>) {
    out.push(0);
    out.push(6);
    let mut at = 12;
    let mut ethertype = be16(bytes, at);
    while ethertype.is_some_and(|t| VLAN_TAGS.contains(&t)) {
        at += 4;
        ethertype = be16(bytes, at);
        if out.len() > MAX_POSITIONS {
            return;
        }
    }
    if ethertype == Some(ETHERTYPE_ARP) {
        arp_positions(bytes, at + 2, out);
    }
}

fn ieee80211_positions(bytes: &[u8], start: usize, out: &mut Vec<usize>) {
    let (Some(&fc0), Some(&fc1)) = (bytes.get(start), bytes.get(start + 1)) else { return };
    let frame_type = (fc0 >> 2) & 0x3;
    out.push(start + 4);
    match frame_type {
        // Control frames: a transmitter address after the receiver in
        // most (RTS, BlockAck, PS-Poll...); where the frame is shorter the
        // position lies past the headers and is skipped.
        1 => out.push(start + 10),
        0 | 2 => {
            out.push(start + 10);
            out.push(start + 16);
            if frame_type == 2 && fc1 & 0x3 == 0x3 {
                out.push(start + 24);
            }
        }
        _ => {}
    }
}

/// Offsets of MAC addresses in `headers` of `link`; only those wholly
/// inside the headers are returned.
pub fn mac_positions(link: LinkType, headers: &[u8]) -> Vec<usize> {
    let mut out = Vec::with_capacity(MAX_POSITIONS);
    match link {
        LinkType::Ethernet => ethernet_positions(headers, &mut out),
        LinkType::LinuxSll => {
            if be16(headers, 4) == Some(6) {
                out.push(6);
            }
            if be16(headers, 14) == Some(ETHERTYPE_ARP) {
                arp_positions(headers, 16, &mut out);
            }
        }
        LinkType::LinuxSll2 => {
            if headers.get(11) == Some(&6) {
                out.push(12);
            }
            if be16(headers, 0) == Some(ETHERTYPE_ARP) {
                arp_positions(headers, 20, &mut out);
            }
        }
        LinkType::Ieee80211 => ieee80211_positions(headers, 0, &mut out),
        LinkType::Ieee80211Radiotap => {
            if let (Some(&lo), Some(&hi)) = (headers.get(2), headers.get(3)) {
                ieee80211_positions(headers, usize::from(u16::from_le_bytes([lo, hi])), &mut out);
            }
        }
        _ => {}
    }
    out.retain(|&at| at.checked_add(6).is_some_and(|end| end <= headers.len()));
    out
}

/// Replaces every MAC address in `packet`'s headers with `f(address)`;
/// returns how many were replaced.
pub fn rewrite_macs(packet: &mut CapturedPacket, mut f: impl FnMut(MacAddr) -> MacAddr) -> usize {
    let Some(link) = packet.link() else { return 0 };
    let positions = mac_positions(link, &packet.headers);
    let bytes = packet.headers.as_mut_slice();
    for &at in &positions {
        let mut mac = [0u8; 6];
        mac.copy_from_slice(&bytes[at..at + 6]);
        bytes[at..at + 6].copy_from_slice(&f(MacAddr(mac)).0);
    }
    positions.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bounded::BoundedString;
    use proptest::prelude::*;

    fn packet(link: LinkType, bytes: &[u8]) -> CapturedPacket {
        CapturedPacket::from_packet(link, 0, BoundedString::truncating("x"), bytes, bytes.len() as u32)
    }

    const A: [u8; 6] = [0x02, 0xaa, 0xaa, 0xaa, 0xaa, 0x01];
    const B: [u8; 6] = [0x02, 0xbb, 0xbb, 0xbb, 0xbb, 0x02];

    #[test]
    fn ethernet_vlan_arp_addresses_are_all_found() {
        let mut frame = [&B[..], &A, &[0x81, 0x00, 0, 10, 0x08, 0x06]].concat();
        frame.extend([0, 1, 0x08, 0x00, 6, 4, 0, 1]);
        frame.extend(A);
        frame.extend([192, 0, 2, 1]);
        frame.extend(B);
        frame.extend([192, 0, 2, 2]);
        let mut p = packet(LinkType::Ethernet, &frame);
        assert_eq!(p.headers.len(), frame.len(), "ARP is kept whole");
        let replaced = rewrite_macs(&mut p, |m| MacAddr([m.0[5]; 6]));
        assert_eq!(replaced, 4);
        for mac in [A, B] {
            assert!(!p.headers.windows(6).any(|w| w == mac), "{mac:?} left in {:?}", p.headers);
        }
        let summary = p.summary().unwrap();
        assert_eq!(summary.src_mac, Some([1; 6]));
        assert_eq!(summary.dst_mac, Some([2; 6]));
    }

    #[test]
    fn wifi_addresses_behind_radiotap() {
        let radiotap = [0u8, 0, 8, 0, 0, 0, 0, 0];
        // Data frame, ToDS and FromDS: four addresses.
        let mut frame = radiotap.to_vec();
        frame.extend([0x08, 0x03, 0, 0]);
        frame.extend(A);
        frame.extend(B);
        frame.extend(A);
        frame.extend([0, 0]);
        frame.extend(B);
        let positions = mac_positions(LinkType::Ieee80211Radiotap, &frame);
        assert_eq!(positions, [12, 18, 24, 32]);
    }

    proptest! {
        #[test]
        fn never_panics_and_stays_inside(link in prop::sample::select(LinkType::ALL.to_vec()), bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            for at in mac_positions(link, &bytes) {
                prop_assert!(at + 6 <= bytes.len());
            }
            let mut p = packet(link, &bytes);
            let before = p.headers.len();
            rewrite_macs(&mut p, |_| MacAddr([0; 6]));
            prop_assert_eq!(p.headers.len(), before);
        }
    }
}
