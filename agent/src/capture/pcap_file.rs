//! pcap and pcapng files, read in pure Rust (no libpcap) as a
//! [`PacketSource`] for the one capture loop in [`super::pcap_source`].
//!
//! Files are untrusted: the reader streams through a buffer of fixed size
//! ([`MAX_RECORD_BYTES`]), so a record claiming a 4 GiB length is an error,
//! not an allocation, and every malformed or truncated record is an error
//! naming the file. Classic pcap in either byte order with microsecond or
//! nanosecond timestamps, and pcapng with any number of sections and
//! interfaces (each with its own link type and timestamp resolution), give
//! the timestamps libpcap would (microseconds, truncated).
//!
//! It deliberately does not write files (the collector's export does), and
//! does not truncate: the loop cuts every packet to its headers.

use std::fs::File;
use std::io::Read;
use std::ops::ControlFlow;
use std::path::Path;

use pcap_parser::pcapng::Block;
use pcap_parser::traits::{PcapNGPacketBlock, PcapReaderIterator};
use pcap_parser::{PcapBlockOwned, PcapError};

use glimpse_common::capture::LinkType;

use super::pcap_source::{link_type, PacketSource, RawPacket, Step};
use super::CaptureError;

/// The largest block or record the reader accepts, and so the size of its
/// buffer: libpcap's largest snap length (262144) with room for pcapng's
/// block framing and options.
pub(crate) const MAX_RECORD_BYTES: usize = 256 * 1024 + 64 * 1024;

/// How a packet's timestamp is to be read: what one second is in the
/// file's units, and the seconds to add (pcapng's `if_tsoffset`).
#[derive(Debug, Clone, Copy)]
struct Clock {
    units_per_sec: u64,
    offset_secs: i64,
}

impl Clock {
    /// Microseconds since the epoch for a timestamp of `units`, truncating
    /// finer resolutions as libpcap does; saturating rather than wrapping
    /// on absurd values.
    fn micros(self, units: u64) -> i64 {
        let secs = i64::try_from(units / self.units_per_sec).unwrap_or(i64::MAX).saturating_add(self.offset_secs);
        let fraction = u128::from(units % self.units_per_sec) * 1_000_000 / u128::from(self.units_per_sec);
        // `fraction` < 1_000_000, so it fits.
        secs.saturating_mul(1_000_000).saturating_add(fraction as i64)
    }
}

/// An interface of a pcapng section (or the one "interface" of a classic
/// pcap file).
#[derive(Debug, Clone, Copy)]
struct Interface {
    link: LinkType,
    clock: Clock,
}

/// A packet record of the file, before its timestamp is converted.
struct FilePacket<'b> {
    interface: Interface,
    /// The timestamp in the interface's units.
    units: u64,
    data: &'b [u8],
    wire_len: u32,
}

/// A pcap or pcapng file being read.
pub(crate) struct PcapFile {
    reader: Box<dyn PcapReaderIterator + Send>,
    /// The path, for errors.
    name: String,
    /// Classic pcap: the file's one entry. pcapng: the current section's
    /// interfaces, by interface id.
    interfaces: Vec<Interface>,
    /// How the next record states its length, once the file's (or the
    /// section's) header has said which format and byte order it is in.
    framing: Framing,
}

/// Where a record's length is and in which byte order, so that a length
/// beyond [`MAX_RECORD_BYTES`] is refused before the parser sees it: the
/// parser's own bound adds the claimed length to what it holds, which
/// overflows on 32-bit devices for a record claiming gigabytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// Before the first header.
    Unknown,
    /// Classic pcap: a 16-byte record header, the captured length at 8.
    Legacy { big_endian: bool },
    /// pcapng: the block's total length at 4 (a section header's own byte
    /// order is its byte-order magic at 8).
    Ng { big_endian: bool },
}

impl Framing {
    /// The length the record at the start of `data` claims, if enough of it
    /// is buffered to say.
    fn claimed_len(self, data: &[u8]) -> Option<u64> {
        let word = |at: usize, big_endian: bool| -> Option<u32> {
            let bytes: [u8; 4] = data.get(at..at + 4)?.try_into().ok()?;
            Some(if big_endian { u32::from_be_bytes(bytes) } else { u32::from_le_bytes(bytes) })
        };
        match self {
            Framing::Unknown => None,
            Framing::Legacy { big_endian } => word(8, big_endian).map(|caplen| 16 + u64::from(caplen)),
            Framing::Ng { big_endian } => {
                const SECTION_HEADER: u32 = 0x0A0D_0D0A;
                const BYTE_ORDER_MAGIC: u32 = 0x1A2B_3C4D;
                let big_endian =
                    if word(0, false)? == SECTION_HEADER { word(8, false)? != BYTE_ORDER_MAGIC } else { big_endian };
                word(4, big_endian).map(u64::from)
            }
        }
    }
}

impl std::fmt::Debug for PcapFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PcapFile").field("name", &self.name).field("interfaces", &self.interfaces).finish()
    }
}

impl PcapFile {
    /// Opens the file at `path`.
    pub(crate) fn open(path: &Path) -> Result<Self, CaptureError> {
        let name = path.display().to_string();
        let file = File::open(path).map_err(|e| file_error(&name, format!("cannot open: {e}")))?;
        Self::from_reader(file, name)
    }

    /// Reads a file's bytes from `reader`; `name` labels errors.
    pub(crate) fn from_reader(reader: impl Read + Send + 'static, name: String) -> Result<Self, CaptureError> {
        let reader = pcap_parser::create_reader(MAX_RECORD_BYTES, reader).map_err(|e| {
            let why = match e {
                PcapError::Eof => "the file is empty".to_owned(),
                PcapError::Incomplete(_) | PcapError::UnexpectedEof => {
                    "too short for a pcap or pcapng file header".to_owned()
                }
                PcapError::ReadError => "read error".to_owned(),
                PcapError::HeaderNotRecognized => "not a pcap or pcapng file".to_owned(),
                PcapError::BufferTooSmall => too_large(),
                // Not the error's Display: it prints the bytes it stopped at.
                PcapError::NomError(_, kind) | PcapError::OwnedNomError(_, kind) => {
                    format!("not a readable pcap or pcapng file ({})", kind.description())
                }
            };
            file_error(&name, why)
        })?;
        Ok(PcapFile { reader, name, interfaces: Vec::new(), framing: Framing::Unknown })
    }

    fn error(&self, why: impl Into<String>) -> CaptureError {
        file_error(&self.name, why.into())
    }

    /// Takes note of a block that describes rather than carries packets.
    /// Returns the packet in `block`, if it is one.
    fn packet_of<'b>(
        interfaces: &mut Vec<Interface>,
        block: &'b PcapBlockOwned<'_>,
    ) -> Result<Option<FilePacket<'b>>, String> {
        match block {
            PcapBlockOwned::LegacyHeader(header) => {
                let link = link_of(header.network.0)?;
                let units_per_sec = if header.is_nanosecond_precision() { 1_000_000_000 } else { 1_000_000 };
                interfaces.clear();
                interfaces.push(Interface { link, clock: Clock { units_per_sec, offset_secs: 0 } });
                Ok(None)
            }
            PcapBlockOwned::Legacy(packet) => {
                let interface = *interfaces.first().ok_or("a packet record before the file header")?;
                // Seconds and a fraction in the file's units, as one count of units.
                let units = u64::from(packet.ts_sec) * interface.clock.units_per_sec + u64::from(packet.ts_usec);
                Ok(Some(FilePacket { interface, units, data: packet.data, wire_len: packet.origlen }))
            }
            PcapBlockOwned::NG(Block::SectionHeader(_)) => {
                // Interface ids start again in each section.
                interfaces.clear();
                Ok(None)
            }
            PcapBlockOwned::NG(Block::InterfaceDescription(idb)) => {
                let link = link_of(idb.linktype.0)?;
                let units_per_sec = units_per_sec(idb.if_tsresol)
                    .ok_or_else(|| format!("interface {} has an invalid timestamp resolution", interfaces.len()))?;
                // Bounded like the agent's own buffers: no file needs more.
                if interfaces.len() >= MAX_INTERFACES {
                    return Err(format!("more than {MAX_INTERFACES} interfaces in one section"));
                }
                interfaces.push(Interface { link, clock: Clock { units_per_sec, offset_secs: idb.ts_offset() } });
                Ok(None)
            }
            PcapBlockOwned::NG(Block::EnhancedPacket(epb)) => {
                let interface = *interfaces
                    .get(epb.if_id as usize)
                    .ok_or_else(|| format!("a packet on interface {}, which the file does not describe", epb.if_id))?;
                let units = (u64::from(epb.ts_high) << 32) | u64::from(epb.ts_low);
                Ok(Some(FilePacket { interface, units, data: epb.packet_data(), wire_len: epb.origlen }))
            }
            PcapBlockOwned::NG(Block::SimplePacket(spb)) => {
                // Simple packets belong to the first interface and carry no timestamp.
                let interface = *interfaces.first().ok_or("a simple packet block before any interface description")?;
                Ok(Some(FilePacket { interface, units: 0, data: spb.packet_data(), wire_len: spb.origlen }))
            }
            // Statistics, name resolution, secrets, custom blocks: nothing
            // the capture uses, skipped as libpcap skips them.
            PcapBlockOwned::NG(_) => Ok(None),
        }
    }
}

/// One second in the units of a pcapng `if_tsresol` value: a power of ten,
/// or of two when the top bit is set. Not pcap-parser's own
/// `ts_resolution`, which refuses every power of two.
fn units_per_sec(if_tsresol: u8) -> Option<u64> {
    let exponent = u32::from(if_tsresol & 0x7f);
    if if_tsresol & 0x80 == 0 {
        10u64.checked_pow(exponent)
    } else {
        1u64.checked_shl(exponent).filter(|_| exponent < 64)
    }
}

/// Most interfaces one pcapng section may describe.
const MAX_INTERFACES: usize = 1024;

fn link_of(linktype: i32) -> Result<LinkType, String> {
    link_type(linktype).map_err(|_| format!("unsupported link type {linktype} (LINKTYPE number)"))
}

fn file_error(name: &str, why: String) -> CaptureError {
    CaptureError::Pcap { source_name: name.to_owned(), message: why }
}

/// Why the reader returned no block, without its borrow of the buffer.
enum NoBlock {
    End,
    NeedMore,
    Failed(String),
}

impl PacketSource for PcapFile {
    fn read(&mut self, on_packet: &mut dyn FnMut(RawPacket<'_>) -> ControlFlow<()>) -> Result<Step, CaptureError> {
        loop {
            if self.framing.claimed_len(self.reader.data()).is_some_and(|len| len > MAX_RECORD_BYTES as u64) {
                let at = self.reader.consumed();
                return Err(self.error(format!("{} at byte {at}", too_large())));
            }
            let no_block = match self.reader.next() {
                Ok((offset, block)) => {
                    match &block {
                        PcapBlockOwned::LegacyHeader(header) => {
                            self.framing = Framing::Legacy { big_endian: header.is_bigendian() }
                        }
                        PcapBlockOwned::NG(Block::SectionHeader(shb)) => {
                            self.framing = Framing::Ng { big_endian: shb.big_endian() }
                        }
                        _ => {}
                    }
                    let flow = match Self::packet_of(&mut self.interfaces, &block) {
                        Ok(Some(FilePacket { interface, units, data, wire_len })) => {
                            let timestamp_us = interface.clock.micros(units);
                            Some(on_packet(RawPacket { link: interface.link, timestamp_us, data, wire_len }))
                        }
                        Ok(None) => None,
                        Err(why) => return Err(file_error(&self.name, why)),
                    };
                    self.reader.consume(offset);
                    match flow {
                        Some(flow) => return Ok(Step::Packet(flow)),
                        None => continue,
                    }
                }
                Err(PcapError::Eof) => NoBlock::End,
                Err(PcapError::Incomplete(_)) => NoBlock::NeedMore,
                Err(PcapError::BufferTooSmall) => NoBlock::Failed(too_large()),
                Err(PcapError::UnexpectedEof) => NoBlock::Failed("truncated: the last record is cut short".to_owned()),
                Err(PcapError::ReadError) => NoBlock::Failed("read error".to_owned()),
                // Not the error's Display: it prints the rest of the buffer,
                // payload bytes included.
                Err(PcapError::NomError(_, kind) | PcapError::OwnedNomError(_, kind)) => {
                    NoBlock::Failed(format!("malformed record ({})", kind.description()))
                }
                Err(PcapError::HeaderNotRecognized) => NoBlock::Failed("malformed section header".to_owned()),
            };
            match no_block {
                NoBlock::End => return Ok(Step::Ended),
                NoBlock::Failed(why) => {
                    let at = self.reader.consumed();
                    return Err(self.error(format!("{why} at byte {at}")));
                }
                NoBlock::NeedMore => {
                    let buffered = self.reader.data().len();
                    self.reader.refill().map_err(|_| file_error(&self.name, "read error".to_owned()))?;
                    // A full buffer that still holds no whole block: the
                    // block is larger than the reader accepts.
                    if self.reader.data().len() == buffered && !self.reader.reader_exhausted() {
                        return Err(self.error(too_large()));
                    }
                }
            }
        }
    }

    // A file never makes its reader wait.
    fn wait(&self) -> Result<(), CaptureError> {
        Ok(())
    }
}

fn too_large() -> String {
    format!("a record is larger than the {MAX_RECORD_BYTES} bytes this reader accepts")
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;
    use std::time::Duration;

    use glimpse_common::capture::CapturedPacket;
    use proptest::prelude::*;

    use super::super::pcap_source::capture_stream;
    use super::super::{CaptureLimits, CaptureTally};
    use super::*;

    const LIMITS: CaptureLimits =
        CaptureLimits { max_packets: 1_000, max_bytes: 1 << 20, max_duration: Duration::from_secs(1) };

    /// Ethernet, IPv4 and UDP headers (42 bytes), then `payload`.
    fn udp_frame(payload: &[u8]) -> Vec<u8> {
        let mut frame = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00];
        let ip_len = (28 + payload.len()) as u16;
        frame.extend_from_slice(&[0x45, 0, (ip_len >> 8) as u8, ip_len as u8, 0, 1, 0, 0, 64, 17, 0, 0]);
        frame.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
        let udp_len = (8 + payload.len()) as u16;
        frame.extend_from_slice(&[0x30, 0x39, 0x00, 0x35, (udp_len >> 8) as u8, udp_len as u8, 0, 0]);
        frame.extend_from_slice(payload);
        frame
    }

    /// The same packet as raw IP (no Ethernet header).
    fn raw_ip_frame(payload: &[u8]) -> Vec<u8> {
        udp_frame(payload)[14..].to_vec()
    }

    /// A classic pcap file: byte order, nanosecond or microsecond
    /// timestamps, LINKTYPE, and (seconds, fraction, bytes, wire length).
    fn classic(big_endian: bool, nanos: bool, link: u32, packets: &[(u32, u32, &[u8], u32)]) -> Vec<u8> {
        let u32b = |v: u32| if big_endian { v.to_be_bytes() } else { v.to_le_bytes() };
        let u16b = |v: u16| if big_endian { v.to_be_bytes() } else { v.to_le_bytes() };
        let mut file = Vec::new();
        file.extend_from_slice(&u32b(if nanos { 0xa1b2_3c4d } else { 0xa1b2_c3d4 }));
        file.extend_from_slice(&u16b(2));
        file.extend_from_slice(&u16b(4));
        file.extend_from_slice(&[0; 8]);
        file.extend_from_slice(&u32b(262_144));
        file.extend_from_slice(&u32b(link));
        for &(secs, fraction, data, wire_len) in packets {
            for v in [secs, fraction, data.len() as u32, wire_len] {
                file.extend_from_slice(&u32b(v));
            }
            file.extend_from_slice(data);
        }
        file
    }

    /// pcapng blocks in one byte order.
    struct Ng {
        big_endian: bool,
        bytes: Vec<u8>,
    }

    impl Ng {
        fn u32b(&self, v: u32) -> [u8; 4] {
            if self.big_endian {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        }

        fn block(&mut self, kind: u32, body: &[u8]) -> &mut Self {
            let len = 12 + body.len().next_multiple_of(4) as u32;
            let (kind, len_bytes) = (self.u32b(kind), self.u32b(len));
            self.bytes.extend_from_slice(&kind);
            self.bytes.extend_from_slice(&len_bytes);
            self.bytes.extend_from_slice(body);
            self.bytes.resize(self.bytes.len().next_multiple_of(4), 0);
            self.bytes.extend_from_slice(&len_bytes);
            self
        }

        fn section(big_endian: bool) -> Self {
            let mut ng = Ng { big_endian, bytes: Vec::new() };
            ng.add_section();
            ng
        }

        fn add_section(&mut self) -> &mut Self {
            let mut body = self.u32b(0x1a2b_3c4d).to_vec();
            let (major, minor) = if self.big_endian {
                (1u16.to_be_bytes(), 0u16.to_be_bytes())
            } else {
                (1u16.to_le_bytes(), 0u16.to_le_bytes())
            };
            body.extend_from_slice(&major);
            body.extend_from_slice(&minor);
            body.extend_from_slice(&[0xff; 8]);
            self.block(0x0a0d_0d0a, &body)
        }

        /// An interface with LINKTYPE `link` and `if_tsresol` `resolution`.
        fn interface(&mut self, link: u16, resolution: u8) -> &mut Self {
            let u16b = |v: u16| if self.big_endian { v.to_be_bytes() } else { v.to_le_bytes() };
            let mut body = u16b(link).to_vec();
            body.extend_from_slice(&[0, 0]);
            body.extend_from_slice(&self.u32b(262_144));
            body.extend_from_slice(&u16b(9));
            body.extend_from_slice(&u16b(1));
            body.extend_from_slice(&[resolution, 0, 0, 0]);
            body.extend_from_slice(&[0, 0, 0, 0]);
            self.block(1, &body)
        }

        fn packet(&mut self, interface: u32, units: u64, data: &[u8], wire_len: u32) -> &mut Self {
            let mut body = Vec::new();
            for v in [interface, (units >> 32) as u32, units as u32, data.len() as u32, wire_len] {
                body.extend_from_slice(&self.u32b(v));
            }
            body.extend_from_slice(data);
            self.block(6, &body)
        }

        fn simple_packet(&mut self, data: &[u8]) -> &mut Self {
            let mut body = self.u32b(data.len() as u32).to_vec();
            body.extend_from_slice(data);
            self.block(3, &body)
        }
    }

    fn read(bytes: Vec<u8>) -> Result<(CaptureTally, Vec<CapturedPacket>), CaptureError> {
        read_within(bytes, &LIMITS)
    }

    fn read_within(
        bytes: Vec<u8>,
        limits: &CaptureLimits,
    ) -> Result<(CaptureTally, Vec<CapturedPacket>), CaptureError> {
        let mut packets = Vec::new();
        let tally = capture_stream(Cursor::new(bytes), "test.pcap", "eth0", limits, |p| packets.push(p))?;
        Ok((tally, packets))
    }

    #[test]
    fn classic_files_in_both_byte_orders_and_resolutions_give_microseconds_and_headers() {
        let frame = udp_frame(b"SECRET PAYLOAD");
        for big_endian in [false, true] {
            let micro = classic(big_endian, false, 1, &[(1_700_000_000, 123_456, &frame, 1500)]);
            let nano = classic(big_endian, true, 1, &[(1_700_000_000, 123_456_789, &frame, 1500)]);
            for file in [micro, nano] {
                let (tally, packets) = read(file).unwrap();
                assert_eq!(packets.len(), 1);
                let p = &packets[0];
                assert_eq!(p.timestamp_us, 1_700_000_000_123_456);
                assert_eq!(p.link_type, 1);
                assert_eq!(p.interface.as_str(), "eth0");
                assert_eq!(p.wire_len, 1500);
                // Exactly what the one truncation function keeps, here the 42 header bytes.
                let expected =
                    CapturedPacket::from_packet(LinkType::Ethernet, p.timestamp_us, p.interface.clone(), &frame, 1500);
                assert_eq!(p, &expected);
                assert_eq!(p.headers.len(), 42);
                let want = CaptureTally { packets_seen: 1, packets_kept: 1, header_bytes: 42, bytes_cut: 1500 - 42 };
                assert_eq!(tally, want);
            }
        }
    }

    #[test]
    fn pcapng_sections_and_interfaces_keep_their_own_link_types_and_clocks() {
        let eth = udp_frame(b"SECRET");
        let raw = raw_ip_frame(b"SECRET");
        let mut ng = Ng::section(false);
        ng.interface(1, 6) // Ethernet, microseconds
            .interface(101, 9) // raw IP, nanoseconds
            .interface(1, 0x80 | 10) // Ethernet, 2^-10 s
            .packet(0, 1_700_000_000_000_001, &eth, eth.len() as u32)
            .packet(1, 1_700_000_000_123_456_789, &raw, raw.len() as u32)
            .packet(2, (5 << 10) | 512, &eth, 100)
            .simple_packet(&eth);
        let mut file = ng.bytes;
        // A second, big-endian section whose interface 0 is raw IP.
        let mut be = Ng::section(true);
        be.interface(101, 6).packet(0, 42, &raw, 60);
        file.extend_from_slice(&be.bytes);

        let (tally, packets) = read(file).unwrap();
        let seen: Vec<_> = packets.iter().map(|p| (p.link_type, p.timestamp_us, p.headers.len(), p.wire_len)).collect();
        assert_eq!(
            seen,
            vec![
                (1, 1_700_000_000_000_001, 42, eth.len() as u32),
                (101, 1_700_000_000_123_456, 28, raw.len() as u32),
                (1, 5_500_000, 42, 100),
                (1, 0, 42, eth.len() as u32),
                (101, 42, 28, 60),
            ]
        );
        assert_eq!(tally.packets_kept, 5);
    }

    #[test]
    fn the_limits_stop_a_file_read_at_the_bound() {
        let frame = udp_frame(b"x");
        let file = classic(false, false, 1, &[(1, 0, &frame, 43), (2, 0, &frame, 43), (3, 0, &frame, 43)]);
        let two = CaptureLimits { max_packets: 2, ..LIMITS };
        let (tally, packets) = read_within(file.clone(), &two).unwrap();
        assert_eq!((tally.packets_kept, packets.len()), (2, 2));
        let bytes = CaptureLimits { max_bytes: 84, ..LIMITS };
        assert_eq!(read_within(file, &bytes).unwrap().0.header_bytes, 84);
    }

    fn error_of(bytes: Vec<u8>) -> String {
        let e = read(bytes).unwrap_err();
        assert!(matches!(&e, CaptureError::Pcap { source_name, .. } if source_name == "test.pcap"), "{e:?}");
        e.to_string()
    }

    #[test]
    fn malformed_files_are_errors_naming_the_file() {
        let frame = udp_frame(b"SECRET");
        assert!(error_of(Vec::new()).contains("empty"));
        assert!(error_of(b"not a capture file at all, but long enough".to_vec()).contains("not a pcap or pcapng file"));
        assert!(error_of(classic(false, false, 1, &[])[..10].to_vec()).contains("too short"));
        // The last record cut short, in its header and in its data.
        let whole = classic(false, false, 1, &[(1, 0, &frame, 42)]);
        assert!(error_of(whole[..whole.len() - 5].to_vec()).contains("truncated"));
        assert!(error_of(whole[..24 + 7].to_vec()).contains("truncated"));
        // A link type the header parser does not know: nothing captured.
        assert!(error_of(classic(false, false, 147, &[(1, 0, &frame, 42)])).contains("unsupported link type 147"));
        let mut ng = Ng::section(false);
        ng.interface(1, 6).packet(3, 0, &frame, 42);
        assert!(error_of(ng.bytes).contains("interface 3"));
        let mut ng = Ng::section(false);
        ng.interface(1, 6).interface(147, 6);
        assert!(error_of(ng.bytes).contains("unsupported link type 147"));
        let mut ng = Ng::section(false);
        ng.interface(1, 200);
        assert!(error_of(ng.bytes).contains("timestamp resolution"));
    }

    /// A record claiming 4 GiB is refused before anything of that size is
    /// allocated: the reader's buffer is fixed.
    #[test]
    fn a_record_claiming_gigabytes_is_an_error_not_an_allocation() {
        let mut file = classic(false, false, 1, &[]);
        for v in [1u32, 0, u32::MAX, u32::MAX] {
            file.extend_from_slice(&v.to_le_bytes());
        }
        file.extend_from_slice(&[0; 64]);
        // Refused on the length it claims, before the parser adds it to
        // what it holds (which overflows on 32-bit).
        let e = error_of(file);
        assert!(e.contains("larger than"), "{e}");

        let mut big = classic(false, false, 1, &[]);
        let huge = vec![0u8; MAX_RECORD_BYTES + 1];
        for v in [1u32, 0, huge.len() as u32, huge.len() as u32] {
            big.extend_from_slice(&v.to_le_bytes());
        }
        big.extend_from_slice(&huge);
        assert!(error_of(big).contains("larger than"));

        let mut ng = Ng::section(false);
        ng.interface(1, 6);
        ng.bytes.extend_from_slice(&6u32.to_le_bytes());
        ng.bytes.extend_from_slice(&0xffff_fff0u32.to_le_bytes());
        ng.bytes.extend_from_slice(&[0; 64]);
        let e = error_of(ng.bytes);
        assert!(e.contains("larger than"), "{e}");
        // A section header claiming gigabytes, in either byte order.
        for big_endian in [false, true] {
            let mut bytes = Ng::section(false).bytes;
            let word = |v: u32| if big_endian { v.to_be_bytes() } else { v.to_le_bytes() };
            bytes.extend_from_slice(&0x0A0D_0D0Au32.to_le_bytes());
            bytes.extend_from_slice(&word(0xffff_fff0));
            bytes.extend_from_slice(&word(0x1A2B_3C4D));
            bytes.extend_from_slice(&[0; 64]);
            let e = error_of(bytes);
            assert!(e.contains("larger than"), "{e}");
        }
    }

    /// A packet as large as libpcap ever captures is read whole.
    #[test]
    fn the_largest_snap_length_fits() {
        let frame = udp_frame(&vec![0x5a; 262_144 - 42]);
        let (tally, _) = read(classic(false, false, 1, &[(1, 0, &frame, frame.len() as u32)])).unwrap();
        assert_eq!((tally.packets_kept, tally.header_bytes), (1, 42));
        let mut ng = Ng::section(false);
        ng.interface(1, 6).packet(0, 0, &frame, frame.len() as u32);
        assert_eq!(read(ng.bytes).unwrap().0.packets_kept, 1);
    }

    /// Valid files of every kind, to mutate.
    fn templates() -> Vec<Vec<u8>> {
        let eth = udp_frame(b"SECRET");
        let raw = raw_ip_frame(b"SECRET");
        let mut ng = Ng::section(false);
        ng.interface(1, 6).interface(101, 9).packet(0, 1, &eth, 60).packet(1, 2, &raw, 60).simple_packet(&eth);
        ng.add_section().interface(127, 0x86).packet(0, 3, &eth, 60);
        let mut be = Ng::section(true);
        be.interface(1, 6).packet(0, 1, &eth, 60);
        vec![
            classic(false, false, 1, &[(1, 2, &eth, 60), (3, 4, &eth, 60)]),
            classic(true, true, 101, &[(1, 2, &raw, 60)]),
            ng.bytes,
            be.bytes,
        ]
    }

    fn check_never_panics(bytes: Vec<u8>) {
        if let Ok((tally, packets)) = read(bytes) {
            assert_eq!(tally.packets_kept as usize, packets.len());
            for p in &packets {
                assert!(p.headers.len() <= glimpse_common::capture::MAX_HEADER_BYTES);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Arbitrary bytes: an error or packets, never a panic.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            check_never_panics(bytes);
        }

        /// Valid files with bytes overwritten, cut short or extended: an
        /// error or packets, never a panic.
        #[test]
        fn mutated_files_never_panic(
            which in 0usize..4,
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
            cut in any::<prop::sample::Index>(),
            tail in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut bytes = templates().swap_remove(which);
            for (at, value) in edits {
                let i = at.index(bytes.len());
                bytes[i] = value;
            }
            bytes.truncate(cut.index(bytes.len() + 1));
            bytes.extend_from_slice(&tail);
            check_never_panics(bytes);
        }
    }
}
