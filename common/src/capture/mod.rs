//! Header-only packet capture: where a packet's headers end, and the record
//! that carries them.
//!
//! Glimpse promises that a captured packet's payload never leaves the device.
//! [`header_boundary`] finds the end of the headers; [`CapturedPacket`] keeps
//! exactly those bytes on the agent and [`CapturedPacket::enforce`] cuts them
//! again on the collector, with the same parser, so neither side has to trust
//! the other.
//!
//! # Fail closed
//!
//! A byte is header only if a parser here positively recognised it as part of
//! a header it understands, completely captured, and inside every enclosing
//! length field. Everything else is payload and is cut: an unknown EtherType
//! or IP protocol, a later fragment, an encrypted frame, a header that
//! contradicts itself, a header cut short by the capture. The boundary is
//! always the end of a whole layer, never inside one.
//!
//! # What is kept, per layer
//!
//! | Layer | Kept | Then |
//! |-------|------|------|
//! | Ethernet | 14 bytes | EtherType, or LLC/SNAP if the field is an 802.3 length |
//! | VLAN 802.1Q / 802.1ad / 0x9100 | 4 bytes per tag, at most 4 tags | inner EtherType |
//! | Linux SLL / SLL2 | 16 / 20 bytes | protocol as EtherType |
//! | BSD loopback | 4 bytes (AF 2, 24, 28, 30, either byte order) | IPv4 or IPv6 |
//! | Radiotap | its whole declared length (our radio's metadata) | 802.11 |
//! | 802.11 management | 24-byte MAC header (+4 HT Control); never the body (SSID, elements) | stop |
//! | 802.11 control | 10 or 16 bytes (addresses) | stop |
//! | 802.11 data | MAC header: 24, +6 for 4 addresses, +2 QoS, +4 HT Control, radiotap padding | LLC/SNAP; protected, null and A-MSDU frames stop |
//! | LLC/SNAP | 8 bytes (`AA AA 03`, OUI `000000` or `0000F8`) | EtherType |
//! | ARP (Ethernet/IPv4) | the whole 28-byte packet | stop |
//! | IPv4 | 20 to 60 bytes with options; total length bounds all above | protocol; a later fragment stops |
//! | IPv6 | 40 bytes; payload length bounds all above | next header |
//! | IPv6 extensions | hop-by-hop, routing, fragment, destination options, AH (also in IPv4): at most 8 | next header; a later fragment stops |
//! | TCP | 20 to 60 bytes with options | stop |
//! | UDP | 8 bytes (DNS, DHCP... are payload) | stop |
//! | ICMP / ICMPv6 | 8 bytes (not echo data, not the quoted packet in errors) | stop |
//! | EAPOL | 4 bytes (never key descriptors) | EAP packets only |
//! | EAP | code, id, length (4 bytes) and, for requests and responses, the type (5); never identities or method data | stop |
//!
//! ESP keeps the IP headers and stops (`Encrypted`); any other IP protocol
//! keeps the IP headers and stops (`UnknownProtocol`).
//!
//! # Strict mode
//!
//! An organisation may ask for strict header scrubbing ([`scrub_strict`],
//! [`CapturedPacket::scrub_strict`]): the same layers are kept, but every
//! byte inside them that is not structure or a well-known option (option
//! contents, AH's ICV, radiotap vendor data, IDs, reserved bits, padding,
//! checksums over the payload) is zeroed in place, on the device and again at
//! the collector. See `strict.rs` and docs/CAPTURE.md.
//!
//! Everything here is sans-IO: bytes in, a length and a summary out.

pub mod filter;
mod ip;
mod link;
pub mod macs;
pub mod parse;
pub mod record;
mod strict;
mod transport;

#[cfg(test)]
mod tests;

pub use filter::{CaptureFilter, FilterError};
pub use macs::rewrite_macs;
pub use parse::{header_boundary, Boundary, CutReason, Layer, LinkType, PacketSummary};
pub use record::{BoundedBytes, CapturedPacket, MAX_HEADER_BYTES};
pub use strict::scrub_strict;
