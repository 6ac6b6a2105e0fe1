//! The capture record: one packet's headers, cut on the device and re-cut by
//! the collector.

use std::fmt;
use std::ops::Deref;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use super::parse::{header_boundary, LinkType, PacketSummary};
use crate::bounded::{BoundedString, TooLong};
use crate::net::MAX_IFNAME;

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

    /// The bytes, to change in place (the length, and so the bound,
    /// cannot change).
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.0
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

    /// Strict mode: zeroes every free-form byte of the stored headers in
    /// place (see [`super::scrub_strict`]); returns how many bytes changed.
    /// The length, and so every offset, stays. A link type we cannot parse
    /// has every byte zeroed ([`Self::enforce`] cuts them anyway).
    pub fn scrub_strict(&mut self) -> usize {
        match self.link() {
            Some(link) => super::scrub_strict(link, self.headers.as_mut_slice()),
            None => {
                let bytes = self.headers.as_mut_slice();
                let changed = bytes.iter().filter(|b| **b != 0).count();
                bytes.fill(0);
                changed
            }
        }
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

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde::de::value::{Error as ValueError, SeqDeserializer};

    use super::*;
    use crate::capture::tests::build::*;

    const SECRET: &[u8] = b"SECRET-PAYLOAD";

    fn tcp_packet() -> Vec<u8> {
        [eth(0x0800), ipv4(6, &[], 20 + SECRET.len()), tcp(&[], 0x18), SECRET.to_vec()].concat()
    }

    fn captured(packet: &[u8]) -> CapturedPacket {
        CapturedPacket::from_packet(
            LinkType::Ethernet,
            1_700_000_000_000_000,
            BoundedString::truncating("eth0"),
            packet,
            1514,
        )
    }

    #[test]
    fn bytes_bound_is_checked_before_allocation() {
        // A length prefix of 2^32-1 bytes with nothing behind it.
        assert!(postcard::from_bytes::<BoundedBytes<16>>(&[0xff, 0xff, 0xff, 0xff, 0x0f]).is_err());
        // 17 real bytes against a bound of 16.
        let mut bytes = vec![17u8];
        bytes.extend([7u8; 17]);
        assert!(postcard::from_bytes::<BoundedBytes<16>>(&bytes).is_err());
        assert_eq!(postcard::from_bytes::<BoundedBytes<17>>(&bytes).unwrap().as_slice(), &[7; 17]);
        // Serialized as a byte string: one length byte, then the bytes.
        let value = BoundedBytes::<4>::try_from_vec(vec![1, 2, 3]).unwrap();
        assert_eq!(postcard::to_stdvec(&value).unwrap(), vec![3, 1, 2, 3]);
        assert!(BoundedBytes::<2>::try_from_vec(vec![1, 2, 3]).is_err());
        assert_eq!(BoundedBytes::<2>::truncating(&[1, 2, 3]).as_slice(), &[1, 2]);
    }

    #[test]
    fn bytes_are_lowercase_hex_in_json() {
        let value = BoundedBytes::<4>::try_from_vec(vec![0xde, 0xad, 0xbe, 0xef]).unwrap();
        assert_eq!(serde_json::to_string(&value).unwrap(), "\"deadbeef\"");
        assert_eq!(serde_json::from_str::<BoundedBytes<4>>("\"DEADbeef\"").unwrap(), value);
        assert!(serde_json::from_str::<BoundedBytes<3>>("\"deadbeef\"").is_err());
        assert!(serde_json::from_str::<BoundedBytes<4>>("\"dea\"").is_err());
        assert!(serde_json::from_str::<BoundedBytes<4>>("\"zz\"").is_err());
        assert!(serde_json::from_str::<BoundedBytes<4>>("[1, 2]").is_err());
    }

    #[test]
    fn bytes_from_a_sequence_are_bounded() {
        let seq = |n: u8| SeqDeserializer::<_, ValueError>::new(0..n);
        assert_eq!(BoundedBytes::<4>::deserialize(seq(4)).unwrap().as_slice(), &[0, 1, 2, 3]);
        assert!(BoundedBytes::<4>::deserialize(seq(5)).is_err());
    }

    #[test]
    fn from_packet_keeps_headers_only() {
        let packet = tcp_packet();
        let record = captured(&packet);
        assert_eq!(record.headers.as_slice(), &packet[..54]);
        assert_eq!((record.link_type, record.wire_len), (1, 1514));
        assert_eq!(record.summary().unwrap().dst_port, Some(443));

        let json = serde_json::to_string(&record).unwrap();
        assert!(json.contains(&format!("\"headers\":\"{}\"", hex::encode(&packet[..54]))), "{json}");
        assert_eq!(serde_json::from_str::<CapturedPacket>(&json).unwrap(), record);
        let bytes = postcard::to_stdvec(&record).unwrap();
        assert_eq!(postcard::from_bytes::<CapturedPacket>(&bytes).unwrap(), record);
    }

    #[test]
    fn enforce_cuts_what_an_agent_should_not_have_sent() {
        let packet = tcp_packet();
        let mut record = captured(&packet);
        assert_eq!(record.enforce(), 0);
        // A hostile agent appends the payload.
        record.headers = BoundedBytes::try_from_vec(packet.clone()).unwrap();
        assert_eq!(record.enforce(), SECRET.len());
        assert_eq!(record.headers.as_slice(), &packet[..54]);
        assert_eq!(record.enforce(), 0);
        // A link type we cannot parse keeps nothing.
        record.link_type = 147;
        assert_eq!(record.enforce(), 54);
        assert!(record.headers.is_empty() && record.summary().is_none());
    }

    #[test]
    fn headers_over_the_bound_are_cut_to_a_whole_layer() {
        // Radiotap of 450 bytes, QoS data, SNAP, IPv6, TCP: layers end at
        // 450, 476, 484, 524, 584. 512 falls inside IPv6, so SNAP's end stays.
        let packet = [
            radiotap_empty(450),
            wlan_data(8, 0x01),
            snap(0x86dd),
            ipv6(6, 60 + SECRET.len()),
            tcp(&[1; 40], 0x10),
            SECRET.to_vec(),
        ]
        .concat();
        assert_eq!(header_boundary(LinkType::Ieee80211Radiotap, &packet).header_len, 584);
        let mut record = CapturedPacket::from_packet(
            LinkType::Ieee80211Radiotap,
            0,
            BoundedString::truncating("wlan0mon"),
            &packet,
            packet.len() as u32,
        );
        assert_eq!(record.headers.len(), 484);
        assert_eq!(record.enforce(), 0);
        // The collector cuts the same way if an agent sent the first 512.
        record.headers = BoundedBytes::truncating(&packet);
        assert_eq!(record.headers.len(), MAX_HEADER_BYTES);
        assert_eq!(record.enforce(), 512 - 484);
    }

    proptest! {
        #[test]
        fn enforce_is_idempotent_and_never_grows(
            headers in prop::collection::vec(any::<u8>(), 0..=MAX_HEADER_BYTES),
            link_type in prop::sample::select(vec![0u32, 1, 101, 105, 113, 127, 228, 229, 276, 147]),
        ) {
            let mut record = CapturedPacket {
                timestamp_us: 0,
                interface: BoundedString::truncating("eth0"),
                link_type,
                wire_len: 0,
                headers: BoundedBytes::try_from_vec(headers.clone()).unwrap(),
            };
            let cut = record.enforce();
            prop_assert_eq!(record.headers.len() + cut, headers.len());
            prop_assert_eq!(record.headers.as_slice(), &headers[..record.headers.len()]);
            prop_assert_eq!(record.enforce(), 0);

            if let Some(link) = LinkType::from_dlt(link_type) {
                let mut fresh = CapturedPacket::from_packet(link, 0, BoundedString::truncating("x"), &headers, 0);
                prop_assert_eq!(fresh.enforce(), 0);
                prop_assert_eq!(fresh.headers, record.headers);
            }
        }
    }
}
