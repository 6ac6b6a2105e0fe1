//! Where MAC addresses sit in captured headers, so they can be
//! pseudonymised in place (see [`crate::minimise`]) and found by subject
//! requests.
//!
//! The places are read off the layers the header parser kept (the same
//! walk that cut the headers and that strict scrubbing uses), so an
//! address is found wherever its layer is, whatever came before it:
//! Ethernet source and destination, the Linux cooked (SLL, SLL2) source
//! address, 802.11 addresses 1 to 4 (with or without radiotap), the sender
//! and target hardware addresses of ARP over any link (Ethernet, VLAN,
//! cooked, and 802.11 data frames through LLC/SNAP), and MACs carried
//! inside IPv6 addresses as modified EUI-64 interface identifiers (RFC
//! 4291 appendix A: the MAC with `ff:fe` in the middle and the
//! universal/local bit inverted), which SLAAC and link-local addresses
//! are made of: the source and destination of every IPv6 header, the
//! addresses of routing headers (types 0, 2 and 4) and the Home Address
//! destination option. An EUI-64 identifier is rewritten as the EUI-64
//! form of the rewritten MAC, so an address keeps its prefix and a
//! pseudonymised device keeps one pseudonym in both its MAC and its IPv6
//! addresses. Rewriting changes the bytes the TCP/UDP checksums cover; a
//! pseudonymised capture's checksums are not recomputed (nothing real to
//! check them against).

use super::parse::{walk, Layer};
use super::record::CapturedPacket;
use super::LinkType;
use crate::net::MacAddr;

/// Most address places one packet's headers are searched for: an 802.11
/// header has 4, ARP 2, an IPv6 header 2 and a routing header up to 16 of
/// its addresses; anything beyond is left as captured.
const MAX_SITES: usize = 32;

/// Most addresses read from one routing header.
const MAX_ROUTING_ADDRESSES: usize = 16;

/// Where one MAC address sits in a packet's headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MacSite {
    /// Six bytes at this offset are the MAC itself.
    Plain(usize),
    /// Eight bytes at this offset are an IPv6 interface identifier in
    /// modified EUI-64 form, made from a MAC.
    Eui64(usize),
}

impl MacSite {
    /// The MAC address at this site of `headers`.
    pub fn read(self, headers: &[u8]) -> Option<MacAddr> {
        match self {
            MacSite::Plain(at) => Some(MacAddr(*headers.get(at..)?.first_chunk::<6>()?)),
            MacSite::Eui64(at) => mac_of_eui64(headers.get(at..)?.first_chunk::<8>()?),
        }
    }

    /// Writes `mac` at this site of `headers`, in the site's form.
    fn write(self, headers: &mut [u8], mac: MacAddr) {
        match self {
            MacSite::Plain(at) => {
                if let Some(bytes) = headers.get_mut(at..).and_then(|rest| rest.first_chunk_mut::<6>()) {
                    *bytes = mac.0;
                }
            }
            MacSite::Eui64(at) => {
                if let Some(bytes) = headers.get_mut(at..).and_then(|rest| rest.first_chunk_mut::<8>()) {
                    *bytes = eui64_of_mac(mac);
                }
            }
        }
    }

    fn end(self) -> Option<usize> {
        match self {
            MacSite::Plain(at) => at.checked_add(6),
            MacSite::Eui64(at) => at.checked_add(8),
        }
    }
}

/// The MAC an interface identifier was made from, if it is in modified
/// EUI-64 form (`xx:xx:xx:ff:fe:xx:xx:xx`).
pub fn mac_of_eui64(iid: &[u8; 8]) -> Option<MacAddr> {
    (iid[3] == 0xff && iid[4] == 0xfe).then(|| MacAddr([iid[0] ^ 0x02, iid[1], iid[2], iid[5], iid[6], iid[7]]))
}

/// The modified EUI-64 interface identifier made from `mac`.
pub fn eui64_of_mac(mac: MacAddr) -> [u8; 8] {
    let m = mac.0;
    [m[0] ^ 0x02, m[1], m[2], 0xff, 0xfe, m[3], m[4], m[5]]
}

/// The MAC inside an IPv6 address's interface identifier, if there is one.
pub fn mac_of_ipv6(address: &std::net::Ipv6Addr) -> Option<MacAddr> {
    let octets = address.octets();
    mac_of_eui64(octets.last_chunk::<8>()?)
}

/// `address` with the MAC inside its interface identifier replaced by
/// `rewrite(mac)`; unchanged when it holds none.
pub fn rewrite_ipv6_mac(address: std::net::Ipv6Addr, rewrite: impl FnOnce(MacAddr) -> MacAddr) -> std::net::Ipv6Addr {
    let Some(mac) = mac_of_ipv6(&address) else { return address };
    let mut octets = address.octets();
    if let Some(iid) = octets.last_chunk_mut::<8>() {
        *iid = eui64_of_mac(rewrite(mac));
    }
    std::net::Ipv6Addr::from(octets)
}

fn be16(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(*bytes.get(at..)?.first_chunk::<2>()?))
}

/// The sites found so far; bounded, and only sites inside `limit`.
struct Sites<'a> {
    headers: &'a [u8],
    out: Vec<MacSite>,
}

impl Sites<'_> {
    fn push_within(&mut self, site: MacSite, span_end: usize) {
        let inside = site.end().is_some_and(|end| end <= span_end && end <= self.headers.len());
        if inside && self.out.len() < MAX_SITES {
            self.out.push(site);
        }
    }

    /// An IPv6 address at `at`, if its interface identifier is a MAC.
    fn ipv6_address(&mut self, at: usize, span_end: usize) {
        let iid = at + 8;
        if let Some(bytes) = self.headers.get(iid..).and_then(|rest| rest.first_chunk::<8>()) {
            if mac_of_eui64(bytes).is_some() {
                self.push_within(MacSite::Eui64(iid), span_end);
            }
        }
    }

    fn ieee80211(&mut self, start: usize, end: usize) {
        let (Some(&fc0), Some(&fc1)) = (self.headers.get(start), self.headers.get(start + 1)) else { return };
        let frame_type = (fc0 >> 2) & 0x3;
        self.push_within(MacSite::Plain(start + 4), end);
        match frame_type {
            // Control frames: a transmitter address after the receiver in
            // most (RTS, BlockAck, PS-Poll...); where the frame is shorter
            // the place lies past the header and is skipped.
            1 => self.push_within(MacSite::Plain(start + 10), end),
            0 | 2 => {
                self.push_within(MacSite::Plain(start + 10), end);
                self.push_within(MacSite::Plain(start + 16), end);
                if frame_type == 2 && fc1 & 0x3 == 0x3 {
                    self.push_within(MacSite::Plain(start + 24), end);
                }
            }
            _ => {}
        }
    }

    /// An IPv6 extension header of protocol `kind` spanning `start..end`.
    fn extension(&mut self, kind: u8, start: usize, end: usize) {
        match kind {
            // Routing: types 0 (deprecated but parseable), 2 (Mobile IPv6
            // home address) and 4 (segment routing) list whole addresses
            // after 8 fixed bytes.
            43 if matches!(self.headers.get(start + 2), Some(0 | 2 | 4)) => {
                let mut at = start + 8;
                for _ in 0..MAX_ROUTING_ADDRESSES {
                    if at + 16 > end {
                        break;
                    }
                    self.ipv6_address(at, end);
                    at += 16;
                }
            }
            // Hop-by-hop and destination options: the Home Address option
            // (type 201, 16 bytes) carries a whole address.
            0 | 60 => {
                let mut at = start + 2;
                while at < end {
                    let Some(&option) = self.headers.get(at) else { break };
                    if option == 0 {
                        at += 1;
                        continue;
                    }
                    let Some(&len) = self.headers.get(at + 1) else { break };
                    if option == 201 && len == 16 {
                        self.ipv6_address(at + 2, end);
                    }
                    at += 2 + usize::from(len);
                }
            }
            _ => {}
        }
    }
}

/// Where the MAC addresses are in `headers` of `link`; only those wholly
/// inside the headers (and inside their layer) are returned.
pub fn mac_sites(link: LinkType, headers: &[u8]) -> Vec<MacSite> {
    let (_, spans) = walk(link, headers);
    let mut sites = Sites { headers, out: Vec::new() };
    for span in spans.as_slice() {
        let (start, end) = (span.start(), span.start().saturating_add(span.len()));
        match span.layer {
            Layer::Ethernet => {
                sites.push_within(MacSite::Plain(start), end);
                sites.push_within(MacSite::Plain(start + 6), end);
            }
            Layer::LinuxSll => {
                if be16(headers, start + 4) == Some(6) {
                    sites.push_within(MacSite::Plain(start + 6), end);
                }
            }
            Layer::LinuxSll2 => {
                if headers.get(start + 11) == Some(&6) {
                    sites.push_within(MacSite::Plain(start + 12), end);
                }
            }
            Layer::Ieee80211 => sites.ieee80211(start, end),
            Layer::Arp => {
                // Hardware type 1 (Ethernet), hardware address length 6.
                if be16(headers, start) == Some(1) && headers.get(start + 4) == Some(&6) {
                    sites.push_within(MacSite::Plain(start + 8), end);
                    sites.push_within(MacSite::Plain(start + 18), end);
                }
            }
            Layer::Ipv6 => {
                sites.ipv6_address(start + 8, end);
                sites.ipv6_address(start + 24, end);
            }
            Layer::IpExtension => sites.extension(span.kind, start, end),
            Layer::Radiotap
            | Layer::Llc
            | Layer::Vlan
            | Layer::Loopback
            | Layer::Ip
            | Layer::Ipv4
            | Layer::Tcp
            | Layer::Udp
            | Layer::Icmp
            | Layer::Icmpv6
            | Layer::Eapol
            | Layer::Eap => {}
        }
    }
    sites.out
}

/// Replaces every MAC address in `packet`'s headers with `f(address)`, in
/// the form it sits in; returns how many were replaced.
pub fn rewrite_macs(packet: &mut CapturedPacket, mut f: impl FnMut(MacAddr) -> MacAddr) -> usize {
    let Some(link) = packet.link() else { return 0 };
    let sites = mac_sites(link, &packet.headers);
    let bytes = packet.headers.as_mut_slice();
    let mut replaced = 0;
    for site in sites {
        if let Some(mac) = site.read(bytes) {
            site.write(bytes, f(mac));
            replaced += 1;
        }
    }
    replaced
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
        let sites = mac_sites(LinkType::Ieee80211Radiotap, &frame);
        assert_eq!(sites, [12, 18, 24, 32].map(MacSite::Plain));
    }

    /// An 802.11 data frame (ToDS) carrying `ethertype` through LLC/SNAP.
    fn wifi_data(ethertype: [u8; 2]) -> Vec<u8> {
        let mut frame = vec![0x08, 0x01, 0, 0];
        frame.extend(B); // BSSID (receiver)
        frame.extend(A); // source
        frame.extend(B); // destination
        frame.extend([0, 0]); // sequence control
        frame.extend([0xaa, 0xaa, 0x03, 0, 0, 0]);
        frame.extend(ethertype);
        frame
    }

    fn arp_body(sender: [u8; 6], target: [u8; 6]) -> Vec<u8> {
        let mut arp = vec![0, 1, 0x08, 0x00, 6, 4, 0, 1];
        arp.extend(sender);
        arp.extend([192, 0, 2, 1]);
        arp.extend(target);
        arp.extend([192, 0, 2, 2]);
        arp
    }

    #[test]
    fn arp_inside_an_80211_data_frame_is_found() {
        let mut frame = wifi_data([0x08, 0x06]);
        frame.extend(arp_body(A, [0; 6]));
        let sites = mac_sites(LinkType::Ieee80211, &frame);
        let arp_at = 24 + 8;
        assert_eq!(
            sites,
            [4, 10, 16, arp_at + 8, arp_at + 18].map(MacSite::Plain),
            "three 802.11 addresses and ARP's two"
        );
        let mut p = packet(LinkType::Ieee80211, &frame);
        assert_eq!(p.headers.len(), frame.len(), "ARP is kept whole");
        assert_eq!(rewrite_macs(&mut p, |m| MacAddr([m.0[5] | 0xf0; 6])), 5);
        assert!(!p.headers.windows(6).any(|w| w == A), "{:?}", p.headers);
    }

    /// An IPv6 address with prefix 2001:db8:1::/64 and `mac`'s EUI-64
    /// interface identifier.
    fn slaac(mac: [u8; 6]) -> [u8; 16] {
        let mut address = [0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        address[8..].copy_from_slice(&eui64_of_mac(MacAddr(mac)));
        address
    }

    #[test]
    fn eui64_round_trips_and_flips_the_universal_local_bit() {
        let mac = MacAddr([0x00, 0x1b, 0x21, 0x3a, 0x4f, 0x5e]);
        let iid = eui64_of_mac(mac);
        assert_eq!(iid, [0x02, 0x1b, 0x21, 0xff, 0xfe, 0x3a, 0x4f, 0x5e]);
        assert_eq!(mac_of_eui64(&iid), Some(mac));
        assert_eq!(mac_of_eui64(&[1, 2, 3, 4, 5, 6, 7, 8]), None, "a random identifier holds no MAC");
        let address: std::net::Ipv6Addr = "fe80::21b:21ff:fe3a:4f5e".parse().unwrap();
        assert_eq!(mac_of_ipv6(&address), Some(mac));
        let rewritten = rewrite_ipv6_mac(address, |_| MacAddr([0x02, 0, 0, 0, 0, 9]));
        assert_eq!(rewritten, "fe80::ff:fe00:9".parse::<std::net::Ipv6Addr>().unwrap(), "prefix kept");
        let privacy: std::net::Ipv6Addr = "2001:db8::1c2d:3e4f:5a6b:7c8d".parse().unwrap();
        assert_eq!(rewrite_ipv6_mac(privacy, |_| unreachable!()), privacy);
    }

    /// Ethernet, then an IPv6 header from `src` to `dst` with next header
    /// `next`, payload length `payload`.
    fn ethernet_ipv6(src: [u8; 16], dst: [u8; 16], next: u8, payload: u16) -> Vec<u8> {
        let mut frame = [&B[..], &A, &[0x86, 0xdd]].concat();
        frame.extend([0x60, 0, 0, 0]);
        frame.extend(payload.to_be_bytes());
        frame.extend([next, 64]);
        frame.extend(src);
        frame.extend(dst);
        frame
    }

    #[test]
    fn mac_derived_ipv6_addresses_are_rewritten_with_their_prefix() {
        let random_dst = [0x20, 0x01, 0x0d, 0xb8, 0, 2, 0, 0, 0x1c, 0x2d, 0x3e, 0x4f, 0x5a, 0x6b, 0x7c, 0x8d];
        let mut frame = ethernet_ipv6(slaac(A), random_dst, 17, 8);
        frame.extend([0x12, 0x34, 0, 53, 0, 8, 0, 0]);
        let sites = mac_sites(LinkType::Ethernet, &frame);
        assert_eq!(sites, [MacSite::Plain(0), MacSite::Plain(6), MacSite::Eui64(14 + 8 + 8)]);
        let mut p = packet(LinkType::Ethernet, &frame);
        let pseudonym = MacAddr([0x06, 0x11, 0x22, 0x33, 0x44, 0x55]);
        assert_eq!(rewrite_macs(&mut p, |_| pseudonym), 3);
        let summary = p.summary().unwrap();
        let expected_src = {
            let mut a = slaac(A);
            a[8..].copy_from_slice(&eui64_of_mac(pseudonym));
            std::net::IpAddr::from(a)
        };
        assert_eq!(summary.src_ip, Some(expected_src), "the source keeps its /64 and holds the pseudonym");
        assert_eq!(summary.dst_ip, Some(std::net::IpAddr::from(random_dst)), "a privacy address is left alone");
        assert!(!p.headers.windows(3).any(|w| w == [0x2a, 0xaa, 0xaa]), "{:?}", p.headers);
    }

    #[test]
    fn routing_header_and_home_address_option_addresses_are_found() {
        // Routing header type 2 (one home address), then a destination
        // options header with a Home Address option, then no next header.
        let mut routing = vec![60, 2, 2, 1, 0, 0, 0, 0];
        routing.extend(slaac(B));
        let mut options = vec![59, 2, 201, 16];
        options.extend(slaac(A));
        options.extend([1, 2, 0, 0]); // PadN to a multiple of 8
        let payload = (routing.len() + options.len()) as u16;
        let mut frame = ethernet_ipv6(slaac(A), slaac(B), 43, payload);
        frame.extend(&routing);
        frame.extend(&options);
        let ipv6_at = 14;
        let routing_at = ipv6_at + 40;
        let options_at = routing_at + routing.len();
        assert_eq!(
            mac_sites(LinkType::Ethernet, &frame),
            [
                MacSite::Plain(0),
                MacSite::Plain(6),
                MacSite::Eui64(ipv6_at + 16),
                MacSite::Eui64(ipv6_at + 32),
                MacSite::Eui64(routing_at + 16),
                MacSite::Eui64(options_at + 12),
            ]
        );
    }

    proptest! {
        #[test]
        fn never_panics_and_stays_inside(link in prop::sample::select(LinkType::ALL.to_vec()), bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            for site in mac_sites(link, &bytes) {
                prop_assert!(site.end().is_some_and(|end| end <= bytes.len()));
                prop_assert!(site.read(&bytes).is_some());
            }
            let mut p = packet(link, &bytes);
            let before = p.headers.len();
            rewrite_macs(&mut p, |_| MacAddr([0; 6]));
            prop_assert_eq!(p.headers.len(), before);
        }
    }
}
