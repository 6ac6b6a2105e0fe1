//! The capture record: one packet's headers, cut on the device and re-cut by
//! the collector.

use std::fmt;
use std::ops::Deref;

use serde::de::{self, Deserialize, Deserializer, SeqAccess, Visitor};
use serde::{Serialize, Serializer};

use super::parse::{header_boundary, LinkType, PacketSummary};
use crate::bounded::{BoundedString, TooLong};
use crate::record::MAX_IFNAME;

/// Most header bytes one captured packet keeps.
///
/// Worst realistic stacks: Ethernet + 2 VLAN tags (22) + IPv6 (40) + a
/// hop-by-hop and a 3-segment routing header (8 + 56) + TCP with a full 40
/// bytes of options (60) is 186; IPv4 with full options (60) + TCP (60) is at
/// most 150 with 4 tags. Wi-Fi is what breaks 256: recent drivers' radiotap
/// headers (HE/EHT fields, several presence words) run to 60-130 bytes, and a
/// 4-address QoS data frame with HT Control is 36 + 8 LLC/SNAP, so radiotap +
/// 802.11 + IPv6 + TCP reaches about 280. 512 covers that with room, costs
/// nothing for the usual 54-byte packet (the bytes are length-prefixed, not
/// padded), and still bounds what the collector accepts per record. The
/// parser decides what is header; this bound only cuts further, and a cut
/// here is always taken back to a whole layer.
pub const MAX_HEADER_BYTES: usize = 512;

/// A `Vec<u8>` of at most `MAX` bytes. Binary serializers (postcard) get a
/// byte string; human-readable ones (JSON) get lowercase hex. Decoding checks
/// the bound before allocating.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct BoundedBytes<const MAX: usize>(Vec<u8>);

impl<const MAX: usize> BoundedBytes<MAX> {
    /// No bytes.
    pub const fn new() -> Self {
        Self(Vec::new())
    }

    /// Wraps `bytes`, refusing more than `MAX` of them.
    pub fn try_from_vec(bytes: Vec<u8>) -> Result<Self, TooLong> {
        if bytes.len() > MAX {
            return Err(TooLong { what: "byte string", len: bytes.len(), max: MAX });
        }
        Ok(Self(bytes))
    }

    /// Copies at most the first `MAX` bytes of `bytes`.
    pub fn truncating(bytes: &[u8]) -> Self {
        Self(bytes.get(..MAX).unwrap_or(bytes).to_vec())
    }

    /// Shortens to `len` bytes; does nothing if already shorter.
    pub fn truncate(&mut self, len: usize) {
        self.0.truncate(len);
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }

    /// The bound.
    pub const fn max_len() -> usize {
        MAX
    }

    /// Unwraps into the inner `Vec`.
    pub fn into_vec(self) -> Vec<u8> {
        self.0
    }
}

impl<const MAX: usize> Deref for BoundedBytes<MAX> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl<const MAX: usize> AsRef<[u8]> for BoundedBytes<MAX> {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl<const MAX: usize> TryFrom<Vec<u8>> for BoundedBytes<MAX> {
    type Error = TooLong;
    fn try_from(bytes: Vec<u8>) -> Result<Self, TooLong> {
        Self::try_from_vec(bytes)
    }
}

impl<const MAX: usize> fmt::Debug for BoundedBytes<MAX> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BoundedBytes({})", hex::encode(&self.0))
    }
}

impl<const MAX: usize> Serialize for BoundedBytes<MAX> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.serialize_str(&hex::encode(&self.0))
        } else {
            serializer.serialize_bytes(&self.0)
        }
    }
}

impl<'de, const MAX: usize> Deserialize<'de> for BoundedBytes<MAX> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            deserializer.deserialize_str(BytesVisitor::<MAX>)
        } else {
            deserializer.deserialize_bytes(BytesVisitor::<MAX>)
        }
    }
}

/// Accepts a byte string, a sequence of bytes, or (human-readable formats) a
/// hex string, each checked against `MAX` before anything is allocated.
struct BytesVisitor<const MAX: usize>;

impl<'de, const MAX: usize> Visitor<'de> for BytesVisitor<MAX> {
    type Value = BoundedBytes<MAX>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at most {MAX} bytes")
    }

    fn visit_bytes<E: de::Error>(self, bytes: &[u8]) -> Result<Self::Value, E> {
        if bytes.len() > MAX {
            return Err(E::invalid_length(bytes.len(), &self));
        }
        Ok(BoundedBytes(bytes.to_vec()))
    }

    fn visit_borrowed_bytes<E: de::Error>(self, bytes: &'de [u8]) -> Result<Self::Value, E> {
        self.visit_bytes(bytes)
    }

    fn visit_byte_buf<E: de::Error>(self, bytes: Vec<u8>) -> Result<Self::Value, E> {
        if bytes.len() > MAX {
            return Err(E::invalid_length(bytes.len(), &self));
        }
        Ok(BoundedBytes(bytes))
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
        // Two hex digits per byte: check before decoding allocates.
        if text.len() > MAX.saturating_mul(2) {
            return Err(E::invalid_length(text.len() / 2, &self));
        }
        hex::decode(text).map(BoundedBytes).map_err(|_| E::invalid_value(de::Unexpected::Str(text), &"hex digits"))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let hinted = seq.size_hint().unwrap_or(0);
        if hinted > MAX {
            return Err(de::Error::invalid_length(hinted, &self));
        }
        let mut bytes = Vec::with_capacity(hinted);
        while let Some(byte) = seq.next_element::<u8>()? {
            if bytes.len() >= MAX {
                return Err(de::Error::invalid_length(MAX + 1, &self));
            }
            bytes.push(byte);
        }
        Ok(BoundedBytes(bytes))
    }
}

/// One captured packet, headers only.
///
/// The agent builds it with [`CapturedPacket::from_packet`], which never
/// copies a byte past the header boundary; the collector calls
/// [`CapturedPacket::enforce`] on every record it receives, so a buggy or
/// hostile agent still cannot get payload stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CapturedPacket {
    /// When the packet was captured (device clock, Unix microseconds).
    pub timestamp_us: i64,
    /// The interface it was captured on.
    pub interface: BoundedString<MAX_IFNAME>,
    /// The pcap `LINKTYPE_*` number of `headers` (see [`LinkType::dlt`]).
    pub link_type: u32,
    /// The packet's length on the wire, payload included.
    pub wire_len: u32,
    /// The packet's leading header bytes.
    pub headers: BoundedBytes<MAX_HEADER_BYTES>,
}

impl CapturedPacket {
    /// Keeps `packet`'s headers (up to [`header_boundary`]) and nothing
    /// else. Headers longer than [`MAX_HEADER_BYTES`] are cut back to the
    /// last whole layer that fits.
    pub fn from_packet(
        link: LinkType,
        timestamp_us: i64,
        interface: BoundedString<MAX_IFNAME>,
        packet: &[u8],
        wire_len: u32,
    ) -> CapturedPacket {
        let mut keep = header_boundary(link, packet).header_len;
        if keep > MAX_HEADER_BYTES {
            // Cutting at the bound may split a layer; parsing the cut bytes
            // again backs off to the last complete one.
            let capped = packet.get(..MAX_HEADER_BYTES).unwrap_or(packet);
            keep = header_boundary(link, capped).header_len;
        }
        let headers = BoundedBytes::truncating(packet.get(..keep).unwrap_or_default());
        CapturedPacket { timestamp_us, interface, link_type: link.dlt(), wire_len, headers }
    }

    /// The collector's check: parses the stored bytes as headers again and
    /// cuts everything past the boundary. Returns how many bytes were cut
    /// (0 for a record from an honest agent). A link type we cannot parse
    /// loses all its bytes: what we cannot read, we cannot vouch for.
    pub fn enforce(&mut self) -> usize {
        let before = self.headers.len();
        let keep = match self.link() {
            Some(link) => header_boundary(link, &self.headers).header_len,
            None => 0,
        };
        self.headers.truncate(keep);
        before - self.headers.len()
    }

    /// The link type, if it is one we parse.
    pub fn link(&self) -> Option<LinkType> {
        LinkType::from_dlt(self.link_type)
    }

    /// What the stored headers say (parsed again; `None` for an unknown link
    /// type).
    pub fn summary(&self) -> Option<PacketSummary> {
        self.link().map(|link| header_boundary(link, &self.headers).summary)
    }
}
