//! IPv4 (with options) and IPv6 (with its extension header chain).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::ControlFlow;

use super::parse::{CutReason, Layer, Next, Parser, Step, Stop};

/// Most extension headers followed. Real packets carry one to three; a long
/// chain is an evasion attempt or garbage.
const MAX_EXTENSIONS: u8 = 8;

/// Raw IP: the version nibble says which.
pub(super) fn version(p: &mut Parser<'_>) -> Step {
    match p.u8(Layer::Ip, 0)? >> 4 {
        4 => ControlFlow::Continue(Next::Ipv4),
        6 => ControlFlow::Continue(Next::Ipv6),
        _ => Stop::at(Layer::Ip, CutReason::Malformed("IP version is neither 4 nor 6")),
    }
}

/// IPv4 with options. The total length bounds every header above it, so
/// Ethernet padding after a short datagram is never counted as header. A
/// later fragment keeps only this header.
pub(super) fn ipv4(p: &mut Parser<'_>) -> Step {
    const L: Layer = Layer::Ipv4;
    p.need(L, 20)?;
    let version_ihl = p.u8(L, 0)?;
    let total_len = p.be16(L, 2)?;
    let flags_offset = p.be16(L, 6)?;
    let ttl = p.u8(L, 8)?;
    let protocol = p.u8(L, 9)?;
    let src = p.bytes::<4>(L, 12)?;
    let dst = p.bytes::<4>(L, 16)?;
    if version_ihl >> 4 != 4 {
        return Stop::at(L, CutReason::Malformed("IPv4 version field is not 4"));
    }
    let header_len = usize::from(version_ihl & 0x0f) * 4;
    if header_len < 20 {
        return Stop::at(L, CutReason::Malformed("IPv4 header length under 20"));
    }
    if usize::from(total_len) < header_len {
        return Stop::at(L, CutReason::Malformed("IPv4 total length under its header length"));
    }
    p.need(L, header_len)?;
    p.declare_len(total_len.into());
    p.accept(L, header_len);

    let offset = (flags_offset & 0x1fff) * 8;
    let more = flags_offset & 0x2000 != 0;
    let s = &mut p.summary;
    s.ip_version = Some(4);
    s.src_ip = Some(IpAddr::V4(Ipv4Addr::from(src)));
    s.dst_ip = Some(IpAddr::V4(Ipv4Addr::from(dst)));
    s.ttl = Some(ttl);
    s.ip_total_len = Some(total_len.into());
    s.ip_protocol = Some(protocol);
    set_fragment(s, offset, more);
    if offset != 0 {
        return Stop::at(L, CutReason::NonFirstFragment);
    }
    ControlFlow::Continue(Next::IpProtocol { protocol, from: L, v6: false, extensions: 0 })
}

/// The fixed 40-byte IPv6 header. The payload length bounds everything
/// after it; a jumbogram (payload length 0) therefore keeps only this header.
pub(super) fn ipv6(p: &mut Parser<'_>) -> Step {
    const L: Layer = Layer::Ipv6;
    p.need(L, 40)?;
    let version = p.u8(L, 0)? >> 4;
    let payload_len = p.be16(L, 4)?;
    let next = p.u8(L, 6)?;
    let hop_limit = p.u8(L, 7)?;
    let src = p.bytes::<16>(L, 8)?;
    let dst = p.bytes::<16>(L, 24)?;
    if version != 6 {
        return Stop::at(L, CutReason::Malformed("IPv6 version field is not 6"));
    }
    p.declare_len(40 + usize::from(payload_len));
    p.accept(L, 40);
    let s = &mut p.summary;
    s.ip_version = Some(6);
    s.src_ip = Some(IpAddr::V6(Ipv6Addr::from(src)));
    s.dst_ip = Some(IpAddr::V6(Ipv6Addr::from(dst)));
    s.ttl = Some(hop_limit);
    s.ip_total_len = Some(40 + u32::from(payload_len));
    ControlFlow::Continue(Next::IpProtocol { protocol: next, from: L, v6: true, extensions: 0 })
}

/// One extension header: IPv6 hop-by-hop (0), routing (43), fragment (44),
/// destination options (60), or AH (51) under either IP version. Their
/// options (router alert, segment lists, AH's ICV) are header. A fragment
/// header with a non-zero offset ends the walk: what follows it is the middle
/// of the original datagram.
pub(super) fn extension(p: &mut Parser<'_>, kind: u8, v6: bool, extensions: u8) -> Step {
    const L: Layer = Layer::IpExtension;
    if extensions >= MAX_EXTENSIONS {
        return Stop::at(L, CutReason::TooManyHeaders);
    }
    let next = p.u8(L, 0)?;
    let len_field = usize::from(p.u8(L, 1)?);
    let len = match kind {
        44 => 8,
        // AH counts 4-byte units minus 2 (RFC 4302).
        51 => (len_field + 2) * 4,
        // The others count 8-byte units not counting the first (RFC 8200).
        _ => (len_field + 1) * 8,
    };
    p.need(L, len)?;
    let fragment = if kind == 44 { Some(p.be16(L, 2)?) } else { None };
    p.accept_kind(L, kind, len);
    p.summary.ip_protocol = Some(next);
    if let Some(field) = fragment {
        // 13-bit offset in 8-byte units, 2 reserved bits, the M flag.
        let offset = (field >> 3) * 8;
        set_fragment(&mut p.summary, offset, field & 1 != 0);
        if offset != 0 {
            return Stop::at(L, CutReason::NonFirstFragment);
        }
    }
    ControlFlow::Continue(Next::IpProtocol { protocol: next, from: L, v6, extensions: extensions + 1 })
}

fn set_fragment(s: &mut super::PacketSummary, offset: u16, more: bool) {
    s.fragment_offset = offset;
    s.more_fragments = more;
    s.is_fragment = offset != 0 || more;
}
