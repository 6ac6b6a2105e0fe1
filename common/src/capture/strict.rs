//! Strict header scrubbing: the header cut keeps whole headers, and some
//! header fields are free-form bytes (TCP and IP options, IPv6 option data,
//! AH's ICV, radiotap vendor namespaces, IDs and reserved bits). Up to 40
//! bytes per header could carry anything through a capture. An organisation
//! in strict mode has every such byte zeroed, on the device and again at the
//! collector.
//!
//! [`scrub_strict`] works in place over bytes already cut at the header
//! boundary: it walks the same layers as [`super::header_boundary`] (the
//! parser records them), keeps what is structure or a well-known option and
//! zeroes the rest. Lengths never change, so every offset, length field and
//! option boundary stays where it was and the packet still dissects; the
//! IPv4 header checksum is recomputed (it covers only the header), the TCP,
//! UDP and ICMP checksums are zeroed (they cover the payload, which is not
//! kept, so they cannot be recomputed and would be a digest of it).
//!
//! Invariants, property-tested and fuzzed:
//! - no panic and no allocation on any input; the length never changes;
//! - the header boundary and every structural field of the summary stay as
//!   they were (same layers, same lengths, same addresses and ports);
//! - idempotent: scrubbing twice is scrubbing once;
//! - the output depends only on kept bytes: changing any byte that was
//!   zeroed as data (option contents, ICV, vendor data, IDs, padding,
//!   checksums) changes nothing in the output;
//! - fail closed: a byte no recorded layer covers, a malformed option list
//!   from the bad option on, a radiotap header from its first unknown field
//!   on, and everything past the header boundary are zeroed.
//!
//! The per-field table is in docs/CAPTURE.md, "Strict header scrubbing".

use super::parse::{walk, Layer, LinkType, Span};

/// Which bytes a scrub zeroed, and whether their value mattered, for the
/// property tests; production code uses `()`, which compiles away.
pub(super) trait Mark {
    /// Bits `mask` of byte `at` were zeroed or rewritten without their
    /// value mattering: any other value gives the same output.
    fn data(&mut self, at: usize, mask: u8);
    /// Byte `at` was zeroed because of what it (or a byte like it) said: a
    /// malformed option, an unknown radiotap field, bytes past the boundary.
    fn decided(&mut self, at: usize);
}

impl Mark for () {
    fn data(&mut self, _: usize, _: u8) {}
    fn decided(&mut self, _: usize) {}
}

/// Zeroes `link` headers' free-form bytes in place; returns how many bytes
/// changed (0 for headers already scrubbed). `headers` should be cut at the
/// header boundary already (a [`super::CapturedPacket`]'s are); anything
/// past the boundary is payload and zeroed too.
pub fn scrub_strict(link: LinkType, headers: &mut [u8]) -> usize {
    scrub_marked(link, headers, &mut ())
}

pub(super) fn scrub_marked(link: LinkType, headers: &mut [u8], mark: &mut impl Mark) -> usize {
    let (boundary, spans) = walk(link, headers);
    let mut s = Scrub { bytes: headers, mark, changed: 0 };
    let mut covered = 0;
    for span in spans.as_slice() {
        // Spans are contiguous from 0; anything between them (never, unless
        // the list filled up) is zeroed below.
        if span.start() != covered {
            break;
        }
        covered = span.start() + span.len();
        s.layer(span);
    }
    s.zero_decided(covered, s.bytes.len());
    debug_assert!(covered <= boundary.header_len);
    s.changed
}

/// The bytes being scrubbed, what was marked, and how many bytes changed.
struct Scrub<'a, M: Mark> {
    bytes: &'a mut [u8],
    mark: &'a mut M,
    changed: usize,
}

impl<M: Mark> Scrub<'_, M> {
    fn get(&self, at: usize) -> u8 {
        self.bytes.get(at).copied().unwrap_or(0)
    }

    fn be16(&self, at: usize) -> u16 {
        u16::from_be_bytes([self.get(at), self.get(at + 1)])
    }

    fn le16(&self, at: usize) -> u16 {
        u16::from_le_bytes([self.get(at), self.get(at + 1)])
    }

    fn le32(&self, at: usize) -> u32 {
        u32::from_le_bytes([self.get(at), self.get(at + 1), self.get(at + 2), self.get(at + 3)])
    }

    /// Sets byte `at` to `value`; out of range does nothing.
    fn put(&mut self, at: usize, value: u8) {
        if let Some(byte) = self.bytes.get_mut(at) {
            if *byte != value {
                *byte = value;
                self.changed += 1;
            }
        }
    }

    /// Clears the bits of `mask` in byte `at`; their value does not matter.
    fn clear_bits(&mut self, at: usize, mask: u8) {
        if at < self.bytes.len() {
            self.mark.data(at, mask);
            self.put(at, self.get(at) & !mask);
        }
    }

    /// Clears the bits of `mask` in byte `at` for what other bytes said.
    fn clear_bits_decided(&mut self, at: usize, mask: u8) {
        if at < self.bytes.len() && mask != 0 {
            self.mark.decided(at);
            self.put(at, self.get(at) & !mask);
        }
    }

    /// Zeroes `from..to` (clamped); their values do not matter.
    fn zero(&mut self, from: usize, to: usize) {
        for at in from..to.min(self.bytes.len()) {
            self.mark.data(at, 0xff);
            self.put(at, 0);
        }
    }

    /// Zeroes `from..to` (clamped) because of what they (or others) said.
    fn zero_decided(&mut self, from: usize, to: usize) {
        for at in from..to.min(self.bytes.len()) {
            self.mark.decided(at);
            self.put(at, 0);
        }
    }

    fn layer(&mut self, span: &Span) {
        let (at, len) = (span.start(), span.len());
        match span.layer {
            // Addresses, types, lengths, tags, the SNAP header, the address
            // family, ARP's addresses, EAPOL's and EAP's fixed fields: all
            // structure, kept.
            Layer::Ethernet
            | Layer::Vlan
            | Layer::Llc
            | Layer::Loopback
            | Layer::Arp
            | Layer::Eapol
            | Layer::Eap
            | Layer::Ip => {}
            Layer::LinuxSll => {
                // Address bytes past the address length are padding.
                let addr_len = usize::from(self.be16(at + 4)).min(8);
                self.zero(at + 6 + addr_len, at + 14);
            }
            Layer::LinuxSll2 => {
                self.zero(at + 2, at + 4);
                let addr_len = usize::from(self.get(at + 11)).min(8);
                self.zero(at + 12 + addr_len, at + 20);
            }
            Layer::Radiotap => self.radiotap(at, len),
            Layer::Ieee80211 => {
                // Radiotap's padding after the MAC header.
                let unpadded = match usize::from(span.kind) {
                    0 => len,
                    n => n.min(len),
                };
                self.zero(at + unpadded, at + len);
            }
            Layer::Ipv4 => self.ipv4(at, len),
            Layer::Ipv6 => {
                // The flow label: a per-flow random number, 20 free bits.
                self.clear_bits(at + 1, 0x0f);
                self.zero(at + 2, at + 4);
            }
            Layer::IpExtension => self.extension(span.kind, at, len),
            Layer::Tcp => self.tcp(at, len),
            Layer::Udp => self.zero(at + 6, at + 8),
            Layer::Icmp => self.icmp(at, false),
            Layer::Icmpv6 => self.icmp(at, true),
        }
    }

    fn ipv4(&mut self, at: usize, len: usize) {
        let flags = self.get(at + 6);
        let offset = self.be16(at + 6) & 0x1fff;
        // The identification only groups fragments (RFC 6864): for a
        // datagram that is not one it means nothing and is free bits.
        if flags & 0x20 == 0 && offset == 0 {
            self.zero(at + 4, at + 6);
        }
        // The reserved ("evil") bit.
        self.clear_bits(at + 6, 0x80);
        self.options(at + 20, at + len, OptionStyle::Ipv4);
        // The header checksum covers only this header, which is all here:
        // recomputed, so that tools see a valid header (and the value sent
        // does not matter).
        if len >= 20 && at + len <= self.bytes.len() {
            self.mark.data(at + 10, 0xff);
            self.mark.data(at + 11, 0xff);
            let mut sum: u32 = 0;
            for word in (at..at + len).step_by(2).filter(|&word| word != at + 10) {
                sum += u32::from(self.be16(word));
            }
            while sum > 0xffff {
                sum = (sum & 0xffff) + (sum >> 16);
            }
            let [hi, lo] = (!(sum as u16)).to_be_bytes();
            self.put(at + 10, hi);
            self.put(at + 11, lo);
        }
    }

    fn extension(&mut self, kind: u8, at: usize, len: usize) {
        let end = at + len;
        match kind {
            // Hop-by-hop and destination options.
            0 | 60 => self.options(at + 2, end, OptionStyle::Ipv6),
            // Routing: next header, length, type and segments left are
            // structure; what follows depends on the type.
            43 => match self.get(at + 2) {
                // Type 0 (deprecated) and 2 (Mobile IPv6): 4 reserved
                // bytes, then addresses.
                0 | 2 => self.zero(at + 4, at + 8),
                // Segment routing (RFC 8754): last entry, flags (none
                // assigned), tag, the segment list; TLVs after it are
                // free-form.
                4 => {
                    self.zero(at + 5, at + 6);
                    let segments = (usize::from(self.get(at + 4)) + 1) * 16;
                    self.zero((at + 8).saturating_add(segments), end);
                }
                // Others (RPL's compressed addresses among them) are not
                // read: zeroed after the fixed four bytes.
                _ => self.zero(at + 4, end),
            },
            // Fragment: reserved byte and the two reserved bits; the
            // identification groups the fragments and is kept.
            44 => {
                self.zero(at + 1, at + 2);
                self.clear_bits(at + 3, 0x06);
            }
            // AH: reserved, then SPI and sequence number kept; the ICV is a
            // MAC, free bytes to anyone who can choose them.
            51 => {
                self.zero(at + 2, at + 4);
                self.zero(at + 12, end);
            }
            _ => self.zero_decided(at, end),
        }
    }

    fn tcp(&mut self, at: usize, len: usize) {
        let flags = self.get(at + 13);
        // The acknowledgement number means nothing without ACK.
        if flags & 0x10 == 0 {
            self.zero(at + 8, at + 12);
        }
        // Three reserved bits between the data offset and AE.
        self.clear_bits(at + 12, 0x0e);
        self.zero(at + 16, at + 18);
        // The urgent pointer means nothing without URG.
        if flags & 0x20 == 0 {
            self.zero(at + 18, at + 20);
        }
        self.options(at + 20, at + len, OptionStyle::Tcp);
    }

    fn icmp(&mut self, at: usize, v6: bool) {
        let (kind, code) = (self.get(at), self.get(at + 1));
        self.zero(at + 2, at + 4);
        // Which of the four bytes after the checksum are fields, by type:
        // a mask of bytes 4 to 7 (bit 0 is byte 4).
        let keep: u8 = if v6 {
            match kind {
                // Destination unreachable, time exceeded: RFC 4884 length.
                1 | 3 => 0b0001,
                // Packet too big (MTU), parameter problem (pointer), echo.
                2 | 4 | 128 | 129 => 0b1111,
                // MLD query, report, done: maximum response delay.
                130..=132 => 0b0011,
                // Router advertisement: hop limit, flags, lifetime.
                134 => 0b1111,
                // Neighbour advertisement: the R, S and O flags.
                136 => 0b0001,
                // MLDv2 report: number of records.
                143 => 0b1100,
                _ => 0,
            }
        } else {
            match kind {
                // Destination unreachable: RFC 4884 length, and the next-hop
                // MTU for "fragmentation needed".
                3 if code == 4 => 0b1110,
                3 | 11 => 0b0010,
                // Parameter problem: pointer and length.
                12 => 0b0011,
                // Echo, timestamp, information, address mask: identifier
                // and sequence; redirect: gateway; router advertisement:
                // count, entry size, lifetime.
                0 | 8 | 13..=18 | 5 | 9 => 0b1111,
                _ => 0,
            }
        };
        for n in 0..4 {
            if keep & (1 << n) == 0 {
                self.zero(at + 4 + n, at + 5 + n);
            }
        }
        if v6 && kind == 136 {
            self.clear_bits(at + 4, 0x1f);
        }
    }

    /// Walks a type-length-value option list in `from..to`: single-byte
    /// options and well-formed well-known ones are kept, other options keep
    /// their type and length and lose their contents, and a malformed list
    /// is zeroed from the bad option on (which reads as end-of-list or
    /// padding afterwards).
    fn options(&mut self, from: usize, to: usize, style: OptionStyle) {
        let to = to.min(self.bytes.len());
        let mut at = from;
        while at < to {
            let kind = self.get(at);
            match (style, kind) {
                // End of list: what follows is padding.
                (OptionStyle::Ipv4 | OptionStyle::Tcp, 0) => {
                    self.zero(at + 1, to);
                    return;
                }
                // NOP, Pad1.
                (OptionStyle::Ipv4 | OptionStyle::Tcp, 1) | (OptionStyle::Ipv6, 0) => {
                    at += 1;
                    continue;
                }
                _ => {}
            }
            if at + 1 >= to {
                self.zero_decided(at, to);
                return;
            }
            let len_byte = usize::from(self.get(at + 1));
            // IPv4 and TCP count the type and length bytes, IPv6 does not.
            let total = match style {
                OptionStyle::Ipv6 => len_byte + 2,
                _ => len_byte,
            };
            if total < 2 || at + total > to {
                self.zero_decided(at, to);
                return;
            }
            if !style.well_known(kind, total) {
                self.zero(at + 2, at + total);
            }
            at += total;
        }
    }

    fn radiotap(&mut self, base: usize, len: usize) {
        let end = base + len;
        self.zero(base + 1, base + 2);
        // The presence words: the parser checked that they end inside the
        // header; checked again, failing closed.
        let mut words_end = base + 4;
        loop {
            if words_end + 4 > end {
                self.zero_decided(base + 4, end);
                return;
            }
            let word = self.le32(words_end);
            words_end += 4;
            if word & (1 << 31) == 0 {
                break;
            }
        }
        let mut at = words_end;
        let mut in_radiotap = true;
        let mut index_base: u32 = 0;
        let mut failed = false;
        for word_at in (base + 4..words_end).step_by(4) {
            let word = self.le32(word_at);
            if failed || !in_radiotap {
                // After an unknown field nothing is read any more, and in a
                // vendor namespace the bits are the vendor's: only the
                // namespace and extension bits stay.
                let clear = if failed { Self::clear_bits_decided } else { Self::clear_bits };
                clear(self, word_at, 0xff);
                clear(self, word_at + 1, 0xff);
                clear(self, word_at + 2, 0xff);
                clear(self, word_at + 3, 0x1f);
            } else {
                for bit in 0..29u32 {
                    if word & (1 << bit) == 0 {
                        continue;
                    }
                    let field = RADIOTAP_FIELDS.get((index_base + bit) as usize).copied().flatten();
                    let placed = field.and_then(|(align, size)| {
                        let start = base + (at - base).next_multiple_of(align);
                        (start + size <= end).then_some((start, size))
                    });
                    match placed {
                        Some((start, size)) => {
                            self.zero(at, start);
                            at = start + size;
                        }
                        None => {
                            // Unknown (or too long): its size is unknown, so
                            // is where anything after it lies.
                            failed = true;
                            let mut unknown = word & !((1u32 << bit) - 1) & 0x1fff_ffff;
                            for byte in 0..4 {
                                self.clear_bits_decided(word_at + byte, (unknown & 0xff) as u8);
                                unknown >>= 8;
                            }
                            break;
                        }
                    }
                }
            }
            if failed {
                continue;
            }
            let (radiotap_ns, vendor_ns) = (word & (1 << 29) != 0, word & (1 << 30) != 0);
            if radiotap_ns && vendor_ns {
                failed = true;
            } else if vendor_ns {
                // OUI, sub-namespace and skip length are kept; the vendor's
                // data is zeroed whole.
                let start = base + (at - base).next_multiple_of(2);
                if start + 6 > end {
                    failed = true;
                    continue;
                }
                let data_end = start + 6 + usize::from(self.le16(start + 4));
                if data_end > end {
                    failed = true;
                    continue;
                }
                self.zero(at, start);
                self.zero(start + 6, data_end);
                at = data_end;
                in_radiotap = false;
                index_base = 0;
            } else if radiotap_ns {
                in_radiotap = true;
                index_base = 0;
            } else {
                index_base += 32;
            }
        }
        if failed {
            self.zero_decided(at, end);
        } else {
            self.zero(at, end);
        }
    }
}

/// The three option list encodings.
#[derive(Debug, Clone, Copy)]
enum OptionStyle {
    Ipv4,
    Tcp,
    /// IPv6 hop-by-hop and destination options.
    Ipv6,
}

impl OptionStyle {
    /// Whether an option of `kind` and `total` bytes (type and length
    /// included) is kept whole.
    fn well_known(self, kind: u8, total: usize) -> bool {
        match self {
            // Router alert.
            OptionStyle::Ipv4 => (kind, total) == (148, 4),
            // MSS, window scale, SACK permitted, SACK (1 to 4 blocks),
            // timestamps.
            OptionStyle::Tcp => {
                matches!((kind, total), (2, 4) | (3, 3) | (4, 2) | (5, 10 | 18 | 26 | 34) | (8, 10))
            }
            // Router alert, jumbo payload; PadN's bytes are zeroed.
            OptionStyle::Ipv6 => matches!((kind, total), (5, 4) | (0xc2, 6)),
        }
    }
}

/// (alignment, size) of the radiotap namespace's fields by presence bit;
/// `None` for bits whose field we do not know (28, TLVs, is variable).
const RADIOTAP_FIELDS: [Option<(usize, usize)>; 29] = [
    Some((8, 8)),  // 0 TSFT
    Some((1, 1)),  // 1 Flags
    Some((1, 1)),  // 2 Rate
    Some((2, 4)),  // 3 Channel
    Some((2, 2)),  // 4 FHSS
    Some((1, 1)),  // 5 dBm antenna signal
    Some((1, 1)),  // 6 dBm antenna noise
    Some((2, 2)),  // 7 lock quality
    Some((2, 2)),  // 8 TX attenuation
    Some((2, 2)),  // 9 dB TX attenuation
    Some((1, 1)),  // 10 dBm TX power
    Some((1, 1)),  // 11 antenna
    Some((1, 1)),  // 12 dB antenna signal
    Some((1, 1)),  // 13 dB antenna noise
    Some((2, 2)),  // 14 RX flags
    Some((2, 2)),  // 15 TX flags
    Some((1, 1)),  // 16 RTS retries
    Some((1, 1)),  // 17 data retries
    Some((4, 8)),  // 18 XChannel
    Some((1, 3)),  // 19 MCS
    Some((4, 8)),  // 20 A-MPDU status
    Some((2, 12)), // 21 VHT
    Some((8, 12)), // 22 timestamp
    Some((2, 12)), // 23 HE
    Some((2, 12)), // 24 HE-MU
    Some((2, 6)),  // 25 HE-MU other user
    Some((1, 1)),  // 26 0-length PSDU
    Some((2, 4)),  // 27 L-SIG
    None,          // 28 TLVs
];

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::capture::header_boundary;
    use crate::capture::tests::build::*;

    const SECRET: &[u8] = b"SECRET";

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    /// Which bits a scrub declared free (their value does not matter) and
    /// which bytes it zeroed for what they said.
    #[derive(Debug)]
    struct Recorder {
        free: Vec<u8>,
        decided: Vec<bool>,
    }

    impl Recorder {
        fn new(len: usize) -> Self {
            Self { free: vec![0; len], decided: vec![false; len] }
        }
    }

    impl Mark for Recorder {
        fn data(&mut self, at: usize, mask: u8) {
            self.free[at] |= mask;
        }
        fn decided(&mut self, at: usize) {
            self.decided[at] = true;
        }
    }

    /// Scrubs a copy, checks length, boundary and idempotence, returns it.
    fn scrubbed(link: LinkType, packet: &[u8]) -> Vec<u8> {
        let mut out = packet.to_vec();
        scrub_strict(link, &mut out);
        assert_eq!(out.len(), packet.len());
        assert_eq!(header_boundary(link, &out).header_len, header_boundary(link, packet).header_len);
        let mut again = out.clone();
        assert_eq!(scrub_strict(link, &mut again), 0, "idempotent");
        out
    }

    fn ipv4_checksum_ok(header: &[u8]) -> bool {
        let mut sum: u32 = header.chunks(2).map(|w| u32::from(u16::from_be_bytes([w[0], w[1]]))).sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        sum == 0xffff
    }

    #[test]
    fn tcp_unknown_option_loses_its_data_and_well_known_ones_stay() {
        let known: Vec<u8> = [
            &[2, 4, 0x05, 0xb4][..],          // MSS 1460
            &[1, 3, 3, 7],                    // NOP, window scale 7
            &[4, 2],                          // SACK permitted
            &[8, 10, 1, 2, 3, 4, 5, 6, 7, 8], // timestamps
            &[5, 10, 0, 0, 0, 1, 0, 0, 0, 2], // one SACK block
        ]
        .concat();
        let unknown = [&[253, 8][..], SECRET].concat();
        let options = [&known[..], &unknown, &[0, 0x77]].concat(); // EOL, then junk padding
        let segment = tcp(&options, 0x10);
        let packet = [eth(0x0800), ipv4(6, &[], segment.len()), segment].concat();
        assert!(contains(&packet, SECRET));
        let out = scrubbed(LinkType::Ethernet, &packet);
        assert!(!contains(&out, SECRET), "covert bytes survived");
        let opts = &out[14 + 20 + 20..];
        assert_eq!(&opts[..known.len()], &known[..], "well-known options are intact");
        assert_eq!(&opts[known.len()..known.len() + 2], &[253, 8], "the unknown option's kind and length stay");
        assert_eq!(&opts[known.len() + 2..], &[0u8; 8][..], "its data and the padding after EOL are zeroed");
        // Ports, sequence, ack (ACK set), offset, flags, window stay;
        // checksum and urgent pointer (URG clear) are zeroed.
        assert_eq!(&out[34..50], &packet[34..50]);
        assert_eq!(&out[50..54], &[0, 0, 0, 0]);
    }

    #[test]
    fn tcp_fields_without_their_flag_are_zeroed() {
        let mut segment = tcp(&[], 0x02); // SYN: no ACK, no URG
        segment[12] |= 0x0e; // reserved bits
        segment[16..20].copy_from_slice(&[0xaa, 0xbb, 0xcc, 0xdd]);
        let packet = [ipv4(6, &[], segment.len()), segment.clone()].concat();
        let out = scrubbed(LinkType::Ipv4, &packet);
        let t = &out[20..];
        assert_eq!(&t[..8], &segment[..8], "ports and sequence stay");
        assert_eq!(&t[8..12], &[0; 4], "no ACK: the acknowledgement number is free bits");
        assert_eq!(t[12], segment[12] & 0xf1);
        assert_eq!(&t[16..20], &[0; 4], "checksum and urgent pointer");
    }

    #[test]
    fn ipv4_record_route_and_timestamp_lose_their_data_router_alert_stays() {
        let options = [
            &[7, 11, 4, 192, 0, 2, 9, b'S', b'E', b'C', b'R'][..], // record route, 11 bytes
            &[1],                                                  // NOP
            &[68, 12, 5, 0x01, b'E', b'T', b'!', b'!', 1, 2, 3, 4], // timestamp
            &[148, 4, 0, 0],                                       // router alert
        ]
        .concat();
        assert_eq!(options.len(), 28);
        let mut header = ipv4(17, &options, 8);
        header[8] = 0x80; // a flag byte with the evil bit: DF clear so ID would be zeroed
        header[6] = 0x80; // reserved bit set, not a fragment
        header[4..6].copy_from_slice(b"ID");
        let packet = [header.clone(), udp(1, 2, 0)].concat();
        let out = scrubbed(LinkType::Ipv4, &packet);
        let h = &out[..48];
        assert_eq!(&h[4..6], &[0, 0], "the identification of an unfragmented datagram is free");
        assert_eq!(h[6] & 0x80, 0, "the reserved bit");
        assert_eq!(&h[20..22], &[7, 11]);
        assert_eq!(&h[22..31], &[0; 9]);
        assert_eq!(h[31], 1);
        assert_eq!(&h[32..34], &[68, 12]);
        assert_eq!(&h[34..44], &[0; 10]);
        assert_eq!(&h[44..48], &[148, 4, 0, 0]);
        assert!(ipv4_checksum_ok(h), "the header checksum is recomputed");
        assert!(!contains(&out, b"SECR") && !contains(&out, b"ET!!"));
        // UDP's checksum covers the payload: zeroed.
        assert_eq!(&out[54..56], &[0, 0]);
    }

    #[test]
    fn fragments_keep_their_identification() {
        let mut header = ipv4_frag(17, &[], 8, 0x2000);
        header[4..6].copy_from_slice(&[0x12, 0x34]);
        let packet = [header, udp(1, 2, 100)].concat();
        let out = scrubbed(LinkType::Ipv4, &packet);
        assert_eq!(&out[4..6], &[0x12, 0x34]);
        let packet = [ipv6(44, 8 + 8), frag6(17, 0, true), udp(1, 2, 0)].concat();
        let out = scrubbed(LinkType::Ipv6, &packet);
        assert_eq!(&out[44..48], &[0xde, 0xad, 0xbe, 0xef], "IPv6 fragment identification");
    }

    #[test]
    fn ipv6_hop_by_hop_unknown_option_and_padn_are_zeroed() {
        // Next header, length (3 = 32 bytes), router alert, jumbo, an
        // unknown skippable option with SECRET, PadN with bytes in it.
        let mut hbh = vec![17, 3];
        hbh.extend([5, 2, 0, 0]); // router alert
        hbh.extend([0xc2, 4, 0, 1, 0, 0]); // jumbo payload
        hbh.extend([0x1e, 6]);
        hbh.extend(SECRET);
        hbh.extend([0]); // Pad1
        hbh.extend([1, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9]); // PadN with data
        assert_eq!(hbh.len(), 32);
        let mut fixed = ipv6(0, 32 + 8);
        fixed[1] |= 0x0a; // flow label
        fixed[2..4].copy_from_slice(&[0xbe, 0xef]);
        let packet = [fixed.clone(), hbh.clone(), udp(1, 2, 0)].concat();
        let out = scrubbed(LinkType::Ipv6, &packet);
        assert!(!contains(&out, SECRET));
        assert_eq!(out[1] & 0x0f, 0);
        assert_eq!(&out[2..4], &[0, 0], "the flow label is free bits");
        let h = &out[40..72];
        assert_eq!(&h[..12], &hbh[..12], "next header, length, router alert, jumbo");
        assert_eq!(&h[12..14], &[0x1e, 6], "the unknown option's type and length");
        assert_eq!(&h[14..21], &[0; 7], "its data, then Pad1");
        assert_eq!(&h[21..23], &[1, 9]);
        assert_eq!(&h[23..32], &[0; 9], "PadN's bytes are zeroed too");
    }

    #[test]
    fn ah_keeps_spi_and_sequence_and_loses_its_icv() {
        let mut auth = ah(6, 24);
        auth[2..4].copy_from_slice(&[7, 7]);
        let segment = tcp(&[], 0x10);
        let packet = [ipv4(51, &[], auth.len() + segment.len()), auth.clone(), segment].concat();
        let out = scrubbed(LinkType::Ipv4, &packet);
        let a = &out[20..44];
        assert_eq!(&a[..2], &auth[..2]);
        assert_eq!(&a[2..4], &[0, 0], "reserved");
        assert_eq!(&a[4..12], &auth[4..12], "SPI and sequence number");
        assert_eq!(&a[12..], &[0; 12], "the ICV");
    }

    /// Radiotap with Flags, dBm signal and a vendor namespace holding
    /// SECRET, then an 802.11 QoS data frame, SNAP, IPv4, UDP.
    fn radiotap_with_vendor() -> Vec<u8> {
        let mut r = vec![0, 0x55, 26, 0];
        r.extend((1u32 << 1 | 1 << 5 | 1 << 30 | 1 << 31).to_le_bytes());
        r.extend(0x0000_0007u32.to_le_bytes()); // vendor's own bits
        r.extend([0x10, (-40i8) as u8]); // flags, signal at 12 and 13
        r.extend([0x00, 0x11, 0x22, 0x01]); // OUI, sub-namespace at 14
        r.extend(6u16.to_le_bytes()); // skip length
        r.extend(SECRET);
        assert_eq!(r.len(), 26);
        r
    }

    #[test]
    fn radiotap_vendor_namespace_is_zeroed_known_fields_stay() {
        let packet =
            [radiotap_with_vendor(), wlan_data(8, 0x02), snap(0x0800), ipv4(17, &[], 8), udp(1, 2, 0)].concat();
        let before = header_boundary(LinkType::Ieee80211Radiotap, &packet);
        assert_eq!(before.header_len, packet.len());
        let out = scrubbed(LinkType::Ieee80211Radiotap, &packet);
        assert!(!contains(&out, SECRET));
        assert_eq!(out[1], 0, "the pad byte");
        assert_eq!(&out[4..8], &packet[4..8], "the radiotap presence word");
        assert_eq!(&out[8..12], &[0, 0, 0, 0], "the vendor's presence bits");
        assert_eq!(&out[12..20], &packet[12..20], "flags, signal, OUI, sub-namespace, skip length");
        assert_eq!(&out[20..26], &[0; 6]);
        assert_eq!(header_boundary(LinkType::Ieee80211Radiotap, &out).summary.radiotap_signal_dbm, Some(-40));
        assert_eq!(&out[26..50], &packet[26..50], "the 802.11 header");
    }

    #[test]
    fn radiotap_unknown_field_zeroes_the_rest() {
        // Bit 28 (TLVs) after Flags: nothing after Flags can be placed.
        let mut r = vec![0, 0, 16, 0];
        r.extend((1u32 << 1 | 1 << 28).to_le_bytes());
        r.extend([0x00]);
        r.extend(b"SECRET!");
        let packet = [r, wlan_mgmt(8)].concat();
        let out = scrubbed(LinkType::Ieee80211Radiotap, &packet);
        assert!(!contains(&out, SECRET));
        assert_eq!(u32::from_le_bytes(out[4..8].try_into().unwrap()), 1 << 1, "the unknown bit is cleared");
    }

    #[test]
    fn icmp_keeps_echo_ids_and_zeroes_unused_words() {
        let mut unreachable = icmp(3, 1);
        unreachable[4..8].copy_from_slice(b"SECR");
        let echo = icmp(8, 0);
        // Byte 5 of an unreachable is RFC 4884's length of the quoted
        // datagram: a length field, kept.
        for (message, kept) in [(unreachable, [0u8, b'E', 0, 0]), (echo.clone(), [0x12, 0x34, 0, 1])] {
            let packet = [ipv4(1, &[], 8), message].concat();
            let out = scrubbed(LinkType::Ipv4, &packet);
            assert_eq!(&out[24..28], &kept);
            assert_eq!(&out[22..24], &[0, 0], "the checksum covers the payload");
        }
    }

    #[test]
    fn cooked_capture_address_padding_is_zeroed() {
        let mut sll = vec![0, 4, 0, 1, 0, 6];
        sll.extend([2, 0, 0, 0, 0, 0x0a, b'S', b'!']);
        sll.extend(0x0800u16.to_be_bytes());
        let packet = [sll, ipv4(17, &[], 8), udp(1, 2, 0)].concat();
        let out = scrubbed(LinkType::LinuxSll, &packet);
        assert_eq!(&out[6..14], &[2, 0, 0, 0, 0, 0x0a, 0, 0]);
    }

    #[test]
    fn bytes_past_the_boundary_and_unknown_links_are_zeroed() {
        let segment = tcp(&[], 0x18);
        let packet = [eth(0x0800), ipv4(6, &[], segment.len() + 6), segment, SECRET.to_vec()].concat();
        let out = scrubbed(LinkType::Ethernet, &packet);
        assert!(!contains(&out, SECRET));
        let mut record = crate::capture::CapturedPacket::from_packet(
            LinkType::Ethernet,
            0,
            crate::bounded::BoundedString::truncating("eth0"),
            &packet,
            packet.len() as u32,
        );
        assert!(record.scrub_strict() > 0);
        assert_eq!(record.scrub_strict(), 0);
        record.link_type = 147;
        record.scrub_strict();
        assert!(record.headers.iter().all(|&b| b == 0));
    }

    /// A TCP or IPv4 option list of up to 40 bytes from a mix of well-known,
    /// unknown and malformed options.
    fn option_list() -> impl Strategy<Value = Vec<u8>> {
        let option = prop_oneof![
            Just(vec![1u8]),
            Just(vec![0u8]),
            any::<[u8; 2]>().prop_map(|v| [&[2, 4][..], &v].concat()),
            any::<u8>().prop_map(|v| vec![3, 3, v]),
            Just(vec![4, 2]),
            any::<[u8; 8]>().prop_map(|v| [&[8, 10][..], &v].concat()),
            any::<[u8; 8]>().prop_map(|v| [&[5, 10][..], &v].concat()),
            Just(vec![148, 4, 0, 0]),
            (any::<u8>(), prop::collection::vec(any::<u8>(), 0..10)).prop_map(|(kind, data)| [
                &[kind, data.len() as u8 + 2][..],
                &data
            ]
            .concat()),
            prop::collection::vec(any::<u8>(), 1..4),
        ];
        prop::collection::vec(option, 0..8).prop_map(|parts| {
            let mut list: Vec<u8> = parts.concat();
            list.truncate(40);
            while !list.len().is_multiple_of(4) {
                list.push(1);
            }
            list
        })
    }

    fn stacks() -> impl Strategy<Value = (LinkType, Vec<u8>)> {
        (
            option_list(),
            option_list(),
            any::<bool>(),
            prop::collection::vec(any::<u8>(), 0..40),
            any::<[u8; 4]>(),
            0..4u8,
        )
            .prop_map(|(ip_opts, tcp_opts, v6, hbh_data, noise, upper)| {
                let segment = match upper {
                    0 | 1 => {
                        let mut t = tcp(&tcp_opts, noise[0]);
                        t[16..20].copy_from_slice(&noise);
                        t
                    }
                    2 => udp(1, 2, 0),
                    _ => {
                        let mut m = icmp(noise[0] % 20, noise[1] % 5);
                        m[4..8].copy_from_slice(&noise);
                        if v6 {
                            m[0] = 128 + noise[0] % 20;
                        }
                        m
                    }
                };
                let protocol = match upper {
                    0 | 1 => 6,
                    2 => 17,
                    _ if v6 => 58,
                    _ => 1,
                };
                if v6 {
                    // A destination options header: an unknown option with
                    // the arbitrary data, padded with Pad1.
                    let mut dst = vec![protocol, 0, 0x1e, hbh_data.len().min(20) as u8];
                    dst.extend(&hbh_data[..hbh_data.len().min(20)]);
                    while !dst.len().is_multiple_of(8) {
                        dst.push(0);
                    }
                    dst[1] = (dst.len() / 8 - 1) as u8;
                    let mut fixed = ipv6(60, dst.len() + segment.len());
                    fixed[1] |= noise[1] & 0x0f;
                    fixed[2..4].copy_from_slice(&noise[2..4]);
                    (LinkType::Ethernet, [eth(0x86dd), fixed, dst, segment].concat())
                } else {
                    let mut header = ipv4(protocol, &ip_opts, segment.len());
                    header[4..6].copy_from_slice(&noise[..2]);
                    header[6] |= noise[2] & 0xa0;
                    (LinkType::Ethernet, [eth(0x0800), header, segment].concat())
                }
            })
    }

    /// The property: changing any bit the scrub declared free changes
    /// nothing in its output; every byte it did not touch is the input's.
    fn free_bits_do_not_matter(link: LinkType, packet: &[u8], flips: &[u8]) -> Result<(), TestCaseError> {
        let mut out = packet.to_vec();
        let mut recorder = Recorder::new(packet.len());
        scrub_marked(link, &mut out, &mut recorder);
        prop_assert_eq!(out.len(), packet.len());
        let mut again = out.clone();
        prop_assert_eq!(scrub_strict(link, &mut again), 0, "idempotent");
        let before = header_boundary(link, packet);
        let after = header_boundary(link, &out);
        prop_assert_eq!(after.header_len, before.header_len);
        prop_assert_eq!(
            (after.summary.stopped_at, after.summary.cut_reason),
            (before.summary.stopped_at, before.summary.cut_reason)
        );
        let (b, a) = (before.summary, after.summary);
        prop_assert_eq!(
            (a.src_ip, a.dst_ip, a.src_port, a.dst_port, a.ip_protocol),
            (b.src_ip, b.dst_ip, b.src_port, b.dst_port, b.ip_protocol)
        );
        prop_assert_eq!(
            (a.src_mac, a.dst_mac, a.tcp_flags, a.tcp_seq, a.ttl),
            (b.src_mac, b.dst_mac, b.tcp_flags, b.tcp_seq, b.ttl)
        );
        for at in 0..packet.len() {
            if recorder.free[at] == 0 && !recorder.decided[at] {
                prop_assert_eq!(out[at], packet[at], "byte {} changed but was not marked", at);
            }
        }
        let mut mutated = packet.to_vec();
        for (at, byte) in mutated.iter_mut().enumerate() {
            if !recorder.decided[at] {
                *byte ^= flips.get(at).copied().unwrap_or(0xff) & recorder.free[at];
            }
        }
        scrub_strict(link, &mut mutated);
        prop_assert_eq!(mutated, out, "a free bit changed the output");
        Ok(())
    }

    proptest! {
        #[test]
        fn crafted_stacks_keep_structure_and_nothing_free(
            (link, packet) in stacks(),
            flips in prop::collection::vec(any::<u8>(), 200),
        ) {
            free_bits_do_not_matter(link, &packet, &flips)?;
        }

        #[test]
        fn arbitrary_bytes_never_panic_and_keep_structure(
            bytes in prop::collection::vec(any::<u8>(), 0..600),
            link in prop::sample::select(LinkType::ALL.to_vec()),
            flips in prop::collection::vec(any::<u8>(), 600),
        ) {
            // Cut first, as every caller does, then scrub.
            let cut = header_boundary(link, &bytes).header_len;
            free_bits_do_not_matter(link, &bytes[..cut], &flips)?;
            // And uncut: past the boundary is zeroed, nothing panics.
            let mut whole = bytes.clone();
            scrub_strict(link, &mut whole);
            prop_assert_eq!(whole.len(), bytes.len());
            prop_assert!(whole[cut..].iter().all(|&b| b == 0));
        }
    }
}
