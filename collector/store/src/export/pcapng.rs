//! A minimal pcapng writer for exporting header-only captures.
//!
//! pcapng rather than classic pcap because one capture export mixes link
//! types (Ethernet from a switch port, radiotap from an access point's
//! radio): pcapng gives each (interface, link type) pair its own Interface
//! Description Block. Every Enhanced Packet Block records the header bytes
//! we kept as the captured length and the packet's original wire length, so
//! Wireshark and tshark show each packet as truncated where the payload was
//! cut. Written little-endian; the Section Header's byte-order magic tells
//! readers so. Timestamps are microseconds (the pcapng default resolution).

use std::collections::HashMap;

const SHB: u32 = 0x0A0D_0D0A;
const IDB: u32 = 0x0000_0001;
const EPB: u32 = 0x0000_0006;
const BYTE_ORDER_MAGIC: u32 = 0x1A2B_3C4D;
const OPT_END: u16 = 0;
const OPT_COMMENT: u16 = 1;
const IF_NAME: u16 = 2;

/// One packet to write.
#[derive(Debug, Clone, Copy)]
pub struct PcapPacket<'a> {
    /// Capture time, microseconds since the Unix epoch.
    pub timestamp_us: i64,
    /// Interface the packet was captured on (on its device).
    pub interface: &'a str,
    /// pcap LINKTYPE of the bytes.
    pub link_type: u16,
    /// Length of the packet on the wire.
    pub wire_len: u32,
    /// The bytes kept (headers only).
    pub bytes: &'a [u8],
}

/// Builds a pcapng stream incrementally: [`PcapngWriter::new`] writes the
/// section header, [`PcapngWriter::packet`] appends packets (and interface
/// descriptions as new interfaces appear).
#[derive(Debug)]
pub struct PcapngWriter {
    snaplen: u32,
    interfaces: HashMap<(String, u16), u32>,
}

fn pad4(len: usize) -> usize {
    (4 - len % 4) % 4
}

fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_option(out: &mut Vec<u8>, code: u16, value: &[u8]) {
    // Option values are at most a few hundred bytes (bounded interface names
    // and comments), so u16 lengths cannot overflow.
    let len = value.len().min(u16::MAX as usize);
    put_u16(out, code);
    put_u16(out, len as u16);
    out.extend_from_slice(&value[..len]);
    out.extend(std::iter::repeat_n(0u8, pad4(len)));
}

/// Wraps a block body with its type and both length fields.
fn block(out: &mut Vec<u8>, kind: u32, body: &[u8]) {
    let total = (12 + body.len()) as u32;
    put_u32(out, kind);
    put_u32(out, total);
    out.extend_from_slice(body);
    put_u32(out, total);
}

impl PcapngWriter {
    /// Starts a section; `comment` says where the file came from.
    pub fn new(snaplen: u32, comment: &str, out: &mut Vec<u8>) -> Self {
        let mut body = Vec::new();
        put_u32(&mut body, BYTE_ORDER_MAGIC);
        put_u16(&mut body, 1);
        put_u16(&mut body, 0);
        // Section length unknown: we stream.
        body.extend_from_slice(&(-1i64).to_le_bytes());
        put_option(&mut body, OPT_COMMENT, comment.as_bytes());
        put_option(&mut body, OPT_END, &[]);
        block(out, SHB, &body);
        Self { snaplen, interfaces: HashMap::new() }
    }

    /// Appends one packet, preceded by an interface description the first
    /// time its (interface, link type) pair is seen.
    pub fn packet(&mut self, packet: &PcapPacket<'_>, out: &mut Vec<u8>) {
        self.packet_with_comment(packet, None, out)
    }

    /// Like [`PcapngWriter::packet`], with a comment option (`opt_comment`)
    /// on the packet's block: the export puts its resume cursor there.
    pub fn packet_with_comment(&mut self, packet: &PcapPacket<'_>, comment: Option<&str>, out: &mut Vec<u8>) {
        let key = (packet.interface.to_owned(), packet.link_type);
        let next_id = self.interfaces.len() as u32;
        let id = *self.interfaces.entry(key).or_insert_with(|| {
            let mut body = Vec::new();
            put_u16(&mut body, packet.link_type);
            put_u16(&mut body, 0);
            put_u32(&mut body, self.snaplen);
            put_option(&mut body, IF_NAME, packet.interface.as_bytes());
            put_option(&mut body, OPT_END, &[]);
            block(out, IDB, &body);
            next_id
        });
        let captured = packet.bytes.len().min(self.snaplen as usize);
        // Timestamps before 1970 cannot be represented; clamp to the epoch.
        let ts = u64::try_from(packet.timestamp_us).unwrap_or(0);
        let mut body = Vec::with_capacity(20 + captured + 4);
        put_u32(&mut body, id);
        put_u32(&mut body, (ts >> 32) as u32);
        put_u32(&mut body, ts as u32);
        put_u32(&mut body, captured as u32);
        put_u32(&mut body, packet.wire_len.max(captured as u32));
        body.extend_from_slice(&packet.bytes[..captured]);
        body.extend(std::iter::repeat_n(0u8, pad4(captured)));
        if let Some(comment) = comment {
            put_option(&mut body, OPT_COMMENT, comment.as_bytes());
            put_option(&mut body, OPT_END, &[]);
        }
        block(out, EPB, &body);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
    }

    #[test]
    fn blocks_are_well_formed_and_interfaces_are_reused() {
        let mut out = Vec::new();
        let mut w = PcapngWriter::new(256, "test", &mut out);
        let pkt = |iface, link, bytes| PcapPacket {
            timestamp_us: 1_000_001,
            interface: iface,
            link_type: link,
            wire_len: 1500,
            bytes,
        };
        w.packet(&pkt("eth0", 1, &[1, 2, 3, 4, 5]), &mut out);
        w.packet(&pkt("eth0", 1, &[1, 2, 3]), &mut out);
        w.packet(&pkt("wlan0", 127, &[9; 8]), &mut out);
        // Walk the blocks: SHB, IDB, EPB, EPB, IDB, EPB.
        let mut at = 0;
        let mut kinds = Vec::new();
        while at < out.len() {
            let kind = u32_at(&out, at);
            let len = u32_at(&out, at + 4) as usize;
            assert_eq!(len % 4, 0);
            assert_eq!(u32_at(&out, at + len - 4) as usize, len, "trailing length matches");
            if kind == EPB {
                assert!(u32_at(&out, at + 20) <= 256);
                assert_eq!(u32_at(&out, at + 24), 1500, "original length kept");
            }
            kinds.push(kind);
            at += len;
        }
        assert_eq!(at, out.len());
        assert_eq!(kinds, vec![SHB, IDB, EPB, EPB, IDB, EPB]);
    }
}
