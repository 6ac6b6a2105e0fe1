//! The header boundary: how many leading bytes of a captured packet are
//! protocol headers, and what those headers say.
//!
//! [`header_boundary`] walks the packet layer by layer (the layer parsers live
//! in the sibling `link`, `ip` and `transport` modules) and stops at the first
//! byte it cannot positively classify as a header. Everything before that byte
//! may leave the device; everything from it on is payload and must not.
//!
//! Invariants, all tested and fuzzed:
//! - `header_len <= packet.len()`, for every input; no panic, no allocation,
//!   work linear in the packet length.
//! - Whole layers only: the boundary is always the end of a layer that was
//!   read completely, never inside one.
//! - Stable under its own cut: parsing `packet[..header_len]` again gives the
//!   same `header_len`. Cutting a packet anywhere gives a boundary no further
//!   than either the cut or the original boundary. The collector relies on this
//!   to re-check what agents send (see [`super::CapturedPacket::enforce`]).
//! - The [`PacketSummary`] only describes bytes inside the boundary, so it is
//!   as safe to log or send as the headers themselves.

use std::convert::Infallible;
use std::net::IpAddr;
use std::ops::ControlFlow;

use super::{ip, link, transport};

/// A link-layer header type, as pcap files and `libpcap` name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LinkType {
    /// Ethernet II, possibly 802.3 with LLC/SNAP (`LINKTYPE_ETHERNET`, 1).
    Ethernet,
    /// Linux "cooked" capture v1, 16-byte header (`LINKTYPE_LINUX_SLL`, 113).
    LinuxSll,
    /// Linux "cooked" capture v2, 20-byte header (`LINKTYPE_LINUX_SLL2`, 276).
    LinuxSll2,
    /// Raw IPv4 or IPv6, told apart by the version nibble (`LINKTYPE_RAW`, 101).
    RawIp,
    /// Raw IPv4 only (`LINKTYPE_IPV4`, 228).
    Ipv4,
    /// Raw IPv6 only (`LINKTYPE_IPV6`, 229).
    Ipv6,
    /// BSD loopback: a 4-byte address family in the capturing host's byte
    /// order, read in either order (`LINKTYPE_NULL`, 0).
    BsdLoopback,
    /// Radiotap header, then an 802.11 frame (`LINKTYPE_IEEE802_11_RADIOTAP`, 127).
    Ieee80211Radiotap,
    /// A bare 802.11 frame (`LINKTYPE_IEEE802_11`, 105).
    Ieee80211,
}

impl LinkType {
    /// Every link type, for tests, fuzzing and listings.
    pub const ALL: [LinkType; 9] = [
        LinkType::Ethernet,
        LinkType::LinuxSll,
        LinkType::LinuxSll2,
        LinkType::RawIp,
        LinkType::Ipv4,
        LinkType::Ipv6,
        LinkType::BsdLoopback,
        LinkType::Ieee80211Radiotap,
        LinkType::Ieee80211,
    ];

    /// The link type for a pcap `LINKTYPE_*` number, if we parse it.
    pub fn from_dlt(linktype: u32) -> Option<LinkType> {
        Self::ALL.into_iter().find(|link| link.dlt() == linktype)
    }

    /// The pcap `LINKTYPE_*` number (what pcap and pcapng files store).
    pub fn dlt(self) -> u32 {
        match self {
            LinkType::BsdLoopback => 0,
            LinkType::Ethernet => 1,
            LinkType::RawIp => 101,
            LinkType::Ieee80211 => 105,
            LinkType::LinuxSll => 113,
            LinkType::Ieee80211Radiotap => 127,
            LinkType::Ipv4 => 228,
            LinkType::Ipv6 => 229,
            LinkType::LinuxSll2 => 276,
        }
    }
}

/// Where a packet's headers end, and what they say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Boundary {
    /// How many leading bytes are headers; always `<= packet.len()`.
    pub header_len: usize,
    /// The fields read from those headers.
    pub summary: PacketSummary,
}

/// A protocol layer, to say where parsing stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Layer {
    /// Radiotap capture metadata.
    Radiotap,
    /// An 802.11 MAC header.
    Ieee80211,
    /// An 802.2 LLC header with a SNAP extension.
    Llc,
    /// An Ethernet header.
    Ethernet,
    /// An 802.1Q / 802.1ad VLAN tag.
    Vlan,
    /// A Linux cooked-capture v1 header.
    LinuxSll,
    /// A Linux cooked-capture v2 header.
    LinuxSll2,
    /// A BSD loopback address-family header.
    Loopback,
    /// An IP header whose version is not known yet (raw IP link type).
    Ip,
    /// An ARP packet.
    Arp,
    /// An IPv4 header.
    Ipv4,
    /// An IPv6 header.
    Ipv6,
    /// An IP extension header (IPv6 hop-by-hop, routing, fragment,
    /// destination options; AH under either version).
    IpExtension,
    /// A TCP header.
    Tcp,
    /// A UDP header.
    Udp,
    /// An ICMP header.
    Icmp,
    /// An ICMPv6 header.
    Icmpv6,
    /// An EAPOL (802.1X) header.
    Eapol,
    /// An EAP header inside EAPOL.
    Eap,
}

/// Why parsing stopped. [`PacketSummary::stopped_at`] names the layer.
///
/// For the first four "normal" reasons the named layer was kept and what
/// follows it is not a header we read; for the others the named layer could
/// not be kept and the boundary is the end of the layer before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CutReason {
    /// The layer was kept and its payload follows (or nothing does).
    PayloadStarts,
    /// The layer was kept; what follows is encrypted (802.11 protected
    /// frame, IPsec ESP).
    Encrypted,
    /// The IP layer was kept; this is a later fragment, so what follows is
    /// the middle of some upper-layer data, not a header.
    NonFirstFragment,
    /// The link layer was kept; it names an EtherType we do not parse.
    UnknownEtherType(u16),
    /// The IP (and extension) headers were kept; they name a protocol we do
    /// not parse.
    UnknownProtocol(u8),
    /// The loopback header was kept; it names an address family we do not
    /// parse (read little-endian).
    UnknownFamily(u32),
    /// The packet ends inside this layer's header.
    Truncated,
    /// More VLAN tags or IP extension headers than we follow.
    TooManyHeaders,
    /// A valid header of a kind we do not follow (e.g. non-SNAP LLC, A-MSDU).
    Unsupported(&'static str),
    /// The header contradicts itself or its enclosing length field.
    Malformed(&'static str),
}

/// The fields read from a packet's headers. Small, `Copy` and heap-free.
///
/// A field is `None` when its layer is absent or was cut: the summary only
/// describes bytes inside [`Boundary::header_len`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct PacketSummary {
    /// Source MAC (Ethernet, SLL address, or 802.11 SA).
    pub src_mac: Option<[u8; 6]>,
    /// Destination MAC (Ethernet, or 802.11 DA).
    pub dst_mac: Option<[u8; 6]>,
    /// VLAN id of the first (outer) tag.
    pub vlan_outer: Option<u16>,
    /// VLAN id of the second (inner) tag.
    pub vlan_inner: Option<u16>,
    /// The innermost EtherType read (after any VLAN tags or LLC/SNAP).
    pub ethertype: Option<u16>,
    /// IP version, 4 or 6.
    pub ip_version: Option<u8>,
    /// Source IP address (for ARP: the sender protocol address).
    pub src_ip: Option<IpAddr>,
    /// Destination IP address (for ARP: the target protocol address).
    pub dst_ip: Option<IpAddr>,
    /// The protocol after the IP header and any extension headers.
    pub ip_protocol: Option<u8>,
    /// IPv4 TTL or IPv6 hop limit.
    pub ttl: Option<u8>,
    /// IPv4 total length, or IPv6 payload length plus 40.
    pub ip_total_len: Option<u32>,
    /// Fragment offset in bytes (IPv4 header or IPv6 fragment header).
    pub fragment_offset: u16,
    /// The more-fragments flag.
    pub more_fragments: bool,
    /// Whether the packet is a fragment (first or later).
    pub is_fragment: bool,
    /// TCP or UDP source port.
    pub src_port: Option<u16>,
    /// TCP or UDP destination port.
    pub dst_port: Option<u16>,
    /// The nine TCP flag bits (AE/NS, CWR, ECE, URG, ACK, PSH, RST, SYN, FIN).
    pub tcp_flags: Option<u16>,
    /// TCP sequence number.
    pub tcp_seq: Option<u32>,
    /// TCP acknowledgement number.
    pub tcp_ack: Option<u32>,
    /// TCP receive window (unscaled).
    pub tcp_window: Option<u16>,
    /// ICMP or ICMPv6 type.
    pub icmp_type: Option<u8>,
    /// ICMP or ICMPv6 code.
    pub icmp_code: Option<u8>,
    /// ARP operation (1 request, 2 reply).
    pub arp_opcode: Option<u16>,
    /// EAPOL packet type (0 EAP, 1 Start, 2 Logoff, 3 Key, ...).
    pub eapol_type: Option<u8>,
    /// EAP code (1 Request, 2 Response, 3 Success, 4 Failure, ...).
    pub eap_code: Option<u8>,
    /// EAP identifier.
    pub eap_id: Option<u8>,
    /// EAP method type (1 Identity, 13 TLS, 25 PEAP, ...), for requests and responses.
    pub eap_type: Option<u8>,
    /// 802.11 frame type (0 management, 1 control, 2 data).
    pub wlan_type: Option<u8>,
    /// 802.11 frame subtype.
    pub wlan_subtype: Option<u8>,
    /// 802.11 addresses 1 to 3, as far as the frame has them.
    pub wlan_addrs: [Option<[u8; 6]>; 3],
    /// Radiotap antenna signal, in dBm.
    pub radiotap_signal_dbm: Option<i8>,
    /// The layer where parsing stopped.
    pub stopped_at: Layer,
    /// Why it stopped there.
    pub cut_reason: CutReason,
}

impl PacketSummary {
    pub(crate) const EMPTY: PacketSummary = PacketSummary {
        src_mac: None,
        dst_mac: None,
        vlan_outer: None,
        vlan_inner: None,
        ethertype: None,
        ip_version: None,
        src_ip: None,
        dst_ip: None,
        ip_protocol: None,
        ttl: None,
        ip_total_len: None,
        fragment_offset: 0,
        more_fragments: false,
        is_fragment: false,
        src_port: None,
        dst_port: None,
        tcp_flags: None,
        tcp_seq: None,
        tcp_ack: None,
        tcp_window: None,
        icmp_type: None,
        icmp_code: None,
        arp_opcode: None,
        eapol_type: None,
        eap_code: None,
        eap_id: None,
        eap_type: None,
        wlan_type: None,
        wlan_subtype: None,
        wlan_addrs: [None; 3],
        radiotap_signal_dbm: None,
        stopped_at: Layer::Ethernet,
        cut_reason: CutReason::Truncated,
    };
}

/// Finds where `packet`'s headers end. Pure: no allocation, no panic on any
/// input, linear in the packet length. See the module header for the rules.
pub fn header_boundary(link: LinkType, packet: &[u8]) -> Boundary {
    walk(link, packet).0
}

/// Most layers one walk records: radiotap, 802.11, LLC, a link header, 4
/// VLAN tags, IP, 8 extension headers and a transport header (or EAPOL and
/// EAP) are 18; the rest is room.
pub(super) const MAX_SPANS: usize = 24;

/// One layer the walk kept: which, where it starts and how long it is, and
/// for some layers one more fact the scrubber needs (see [`Span::kind`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Span {
    pub(super) layer: Layer,
    /// For [`Layer::IpExtension`] the header's protocol number (0, 43, 44,
    /// 51, 60); for [`Layer::Ieee80211`] the MAC header's length without
    /// radiotap's padding; otherwise 0.
    pub(super) kind: u8,
    /// 32 bits rather than a usize: a walk copies its spans out, and the
    /// collector walks every capture record twice (see `Spans`).
    start: u32,
    len: u32,
}

impl Span {
    /// Where the layer starts in the packet.
    pub(super) fn start(&self) -> usize {
        self.start as usize
    }

    /// How long it is.
    pub(super) fn len(&self) -> usize {
        self.len as usize
    }
}

/// The layers of one walk, in packet order; together they cover exactly
/// `0..header_len`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Spans {
    spans: [Span; MAX_SPANS],
    count: usize,
}

impl Spans {
    const EMPTY: Spans =
        Spans { spans: [Span { layer: Layer::Ethernet, kind: 0, start: 0, len: 0 }; MAX_SPANS], count: 0 };

    /// The recorded layers.
    pub(super) fn as_slice(&self) -> &[Span] {
        self.spans.get(..self.count).unwrap_or_default()
    }

    fn push(&mut self, span: Span) {
        // A full list drops the layer; the scrubber zeroes every kept byte
        // no span covers, so a dropped layer fails closed.
        if let Some(slot) = self.spans.get_mut(self.count) {
            *slot = span;
            self.count += 1;
        }
    }
}

/// [`header_boundary`], and the layers it kept.
pub(super) fn walk(link: LinkType, packet: &[u8]) -> (Boundary, Spans) {
    let mut parser =
        Parser { pkt: packet, kept: 0, declared_end: None, summary: PacketSummary::EMPTY, spans: Spans::EMPTY };
    let stop = match parser.run(link) {
        ControlFlow::Break(stop) => stop,
        ControlFlow::Continue(never) => match never {},
    };
    let mut summary = parser.summary;
    summary.stopped_at = stop.layer;
    summary.cut_reason = stop.reason;
    (Boundary { header_len: parser.kept, summary }, parser.spans)
}

/// Where and why the walk ended.
#[derive(Debug, Clone, Copy)]
pub(super) struct Stop {
    pub(super) layer: Layer,
    pub(super) reason: CutReason,
}

impl Stop {
    /// Ends the walk at `layer` for `reason`.
    pub(super) fn at<T>(layer: Layer, reason: CutReason) -> ControlFlow<Stop, T> {
        ControlFlow::Break(Stop { layer, reason })
    }
}

/// One step of the walk: the next layer to read, or where the walk ends.
pub(super) type Step = ControlFlow<Stop, Next>;

/// What the layer just kept says comes next.
#[derive(Debug, Clone, Copy)]
pub(super) enum Next {
    Ieee80211 {
        /// Radiotap says the MAC header is padded to 4 bytes.
        datapad: bool,
    },
    Llc,
    EtherType {
        ethertype: u16,
        /// The layer that named it, to report an unknown EtherType.
        from: Layer,
        /// VLAN tags read so far.
        tags: u8,
    },
    Ip,
    Ipv4,
    Ipv6,
    IpProtocol {
        protocol: u8,
        /// The layer that named it (IPv4, IPv6 or an extension header).
        from: Layer,
        v6: bool,
        /// Extension headers read so far.
        extensions: u8,
    },
}

/// The walk's state: the packet, how much of it is kept so far, and the
/// summary being filled in.
pub(super) struct Parser<'a> {
    pkt: &'a [u8],
    /// End of the last layer kept: the boundary if the walk stops now.
    kept: usize,
    /// End of the enclosing unit as declared by a length field (IP total or
    /// payload length, 802.3 length, EAPOL body length). No header may reach
    /// past it: past it is padding or a lie.
    declared_end: Option<usize>,
    pub(super) summary: PacketSummary,
    /// The layers kept so far, for strict scrubbing.
    spans: Spans,
}

impl<'a> Parser<'a> {
    fn run(&mut self, link: LinkType) -> ControlFlow<Stop, Infallible> {
        let mut next = match link {
            LinkType::Ethernet => link::ethernet(self)?,
            LinkType::LinuxSll => link::linux_sll(self)?,
            LinkType::LinuxSll2 => link::linux_sll2(self)?,
            LinkType::BsdLoopback => link::bsd_loopback(self)?,
            LinkType::Ieee80211Radiotap => link::radiotap(self)?,
            LinkType::Ieee80211 => Next::Ieee80211 { datapad: false },
            LinkType::RawIp => Next::Ip,
            LinkType::Ipv4 => Next::Ipv4,
            LinkType::Ipv6 => Next::Ipv6,
        };
        // Each step keeps at least one byte or ends the walk, and VLAN tags
        // and extension headers are counted, so this loop is bounded by the
        // packet length.
        loop {
            next = match next {
                Next::Ieee80211 { datapad } => link::ieee80211(self, datapad)?,
                Next::Llc => link::llc_snap(self)?,
                Next::EtherType { ethertype, from, tags } => self.ethertype(ethertype, from, tags)?,
                Next::Ip => ip::version(self)?,
                Next::Ipv4 => ip::ipv4(self)?,
                Next::Ipv6 => ip::ipv6(self)?,
                Next::IpProtocol { protocol, from, v6, extensions } => {
                    self.ip_protocol(protocol, from, v6, extensions)?
                }
            };
        }
    }

    /// Dispatches on an EtherType; anything unknown keeps only the link header.
    fn ethertype(&mut self, ethertype: u16, from: Layer, tags: u8) -> Step {
        self.summary.ethertype = Some(ethertype);
        match ethertype {
            0x8100 | 0x88a8 | 0x9100 => link::vlan(self, tags),
            0x0800 => ControlFlow::Continue(Next::Ipv4),
            0x86dd => ControlFlow::Continue(Next::Ipv6),
            0x0806 => transport::arp(self),
            0x888e => transport::eapol(self),
            other => Stop::at(from, CutReason::UnknownEtherType(other)),
        }
    }

    /// Dispatches on an IP protocol / next-header value; anything unknown
    /// keeps only the IP and extension headers.
    fn ip_protocol(&mut self, protocol: u8, from: Layer, v6: bool, extensions: u8) -> Step {
        self.summary.ip_protocol = Some(protocol);
        match (protocol, v6) {
            (6, _) => transport::tcp(self),
            (17, _) => transport::udp(self),
            (1, false) => transport::icmp(self, Layer::Icmp),
            (58, true) => transport::icmp(self, Layer::Icmpv6),
            (0 | 43 | 44 | 60, true) | (51, _) => ip::extension(self, protocol, v6, extensions),
            (50, _) => Stop::at(from, CutReason::Encrypted),
            // IPv6 "no next header": whatever follows is not a header.
            (59, true) => Stop::at(from, CutReason::PayloadStarts),
            (other, _) => Stop::at(from, CutReason::UnknownProtocol(other)),
        }
    }

    /// Succeeds when the current layer's first `len` bytes are all captured
    /// and inside the declared end of the enclosing unit.
    pub(super) fn need(&self, layer: Layer, len: usize) -> ControlFlow<Stop> {
        let Some(end) = self.kept.checked_add(len) else {
            return Stop::at(layer, CutReason::Malformed("header length overflows"));
        };
        if self.declared_end.is_some_and(|declared| end > declared) {
            return Stop::at(layer, CutReason::Malformed("header runs past its enclosing length field"));
        }
        if end > self.pkt.len() {
            return Stop::at(layer, CutReason::Truncated);
        }
        ControlFlow::Continue(())
    }

    /// `N` bytes at `at` within the current layer, checked like [`Self::need`].
    pub(super) fn bytes<const N: usize>(&self, layer: Layer, at: usize) -> ControlFlow<Stop, [u8; N]> {
        self.need(layer, at.saturating_add(N))?;
        match self.pkt.get(self.kept + at..).and_then(|rest| rest.first_chunk::<N>()) {
            Some(bytes) => ControlFlow::Continue(*bytes),
            None => Stop::at(layer, CutReason::Truncated),
        }
    }

    /// The byte at `at` within the current layer.
    pub(super) fn u8(&self, layer: Layer, at: usize) -> ControlFlow<Stop, u8> {
        let [byte] = self.bytes::<1>(layer, at)?;
        ControlFlow::Continue(byte)
    }

    /// A big-endian (network order) `u16` at `at` within the current layer.
    pub(super) fn be16(&self, layer: Layer, at: usize) -> ControlFlow<Stop, u16> {
        self.bytes(layer, at).map_continue(u16::from_be_bytes)
    }

    /// A big-endian (network order) `u32` at `at` within the current layer.
    pub(super) fn be32(&self, layer: Layer, at: usize) -> ControlFlow<Stop, u32> {
        self.bytes(layer, at).map_continue(u32::from_be_bytes)
    }

    /// A little-endian `u16` at `at` (radiotap, 802.11 frame control).
    pub(super) fn le16(&self, layer: Layer, at: usize) -> ControlFlow<Stop, u16> {
        self.bytes(layer, at).map_continue(u16::from_le_bytes)
    }

    /// A little-endian `u32` at `at` (radiotap).
    pub(super) fn le32(&self, layer: Layer, at: usize) -> ControlFlow<Stop, u32> {
        self.bytes(layer, at).map_continue(u32::from_le_bytes)
    }

    /// Keeps the current layer's `len` bytes; the next layer starts after
    /// them. Callers check with [`Self::need`] first; the clamp only makes
    /// `header_len <= packet.len()` hold even if one forgot.
    pub(super) fn accept(&mut self, layer: Layer, len: usize) {
        self.accept_kind(layer, 0, len);
    }

    /// [`Self::accept`], noting one fact about the layer (see [`Span::kind`]).
    pub(super) fn accept_kind(&mut self, layer: Layer, kind: u8, len: usize) {
        let start = self.kept;
        self.kept = self.kept.saturating_add(len).min(self.pkt.len());
        // Packets are far below 4 GiB (pcap's snap length is a u32 too).
        let at = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        self.spans.push(Span { layer, kind, start: at(start), len: at(self.kept - start) });
    }

    /// Sets the end of the enclosing unit to `len` bytes from the current
    /// position, never widening an outer one.
    pub(super) fn declare_len(&mut self, len: usize) {
        let end = self.kept.saturating_add(len);
        self.declared_end = Some(self.declared_end.map_or(end, |outer| outer.min(end)));
    }
}
