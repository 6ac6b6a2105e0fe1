//! The last header of a packet: TCP, UDP, ICMP/ICMPv6, and the non-IP
//! EtherTypes we follow, ARP and EAPOL. Every function here ends the walk.

use std::net::{IpAddr, Ipv4Addr};

use super::parse::{CutReason, Layer, Parser, Step, Stop};

/// TCP with options; the data offset must be at least 5 words.
pub(super) fn tcp(p: &mut Parser<'_>) -> Step {
    const L: Layer = Layer::Tcp;
    p.need(L, 20)?;
    let src_port = p.be16(L, 0)?;
    let dst_port = p.be16(L, 2)?;
    let seq = p.be32(L, 4)?;
    let ack = p.be32(L, 8)?;
    let offset_flags = p.be16(L, 12)?;
    let window = p.be16(L, 14)?;
    let header_len = usize::from(offset_flags >> 12) * 4;
    if header_len < 20 {
        return Stop::at(L, CutReason::Malformed("TCP data offset under 5"));
    }
    p.need(L, header_len)?;
    p.accept(L, header_len);
    let s = &mut p.summary;
    s.src_port = Some(src_port);
    s.dst_port = Some(dst_port);
    s.tcp_seq = Some(seq);
    s.tcp_ack = Some(ack);
    s.tcp_flags = Some(offset_flags & 0x01ff);
    s.tcp_window = Some(window);
    Stop::at(L, CutReason::PayloadStarts)
}

/// UDP: 8 bytes. DNS, DHCP, RADIUS and everything else above it is payload.
pub(super) fn udp(p: &mut Parser<'_>) -> Step {
    const L: Layer = Layer::Udp;
    p.need(L, 8)?;
    let src_port = p.be16(L, 0)?;
    let dst_port = p.be16(L, 2)?;
    if p.be16(L, 4)? < 8 {
        return Stop::at(L, CutReason::Malformed("UDP length under 8"));
    }
    p.accept(L, 8);
    p.summary.src_port = Some(src_port);
    p.summary.dst_port = Some(dst_port);
    Stop::at(L, CutReason::PayloadStarts)
}

/// ICMP or ICMPv6: the fixed 8 bytes only (type, code, checksum, and the
/// identifier/sequence or pointer/MTU word). Echo data and the packet quoted
/// inside an error are payload.
pub(super) fn icmp(p: &mut Parser<'_>, layer: Layer) -> Step {
    p.need(layer, 8)?;
    let kind = p.u8(layer, 0)?;
    let code = p.u8(layer, 1)?;
    p.accept(layer, 8);
    p.summary.icmp_type = Some(kind);
    p.summary.icmp_code = Some(code);
    Stop::at(layer, CutReason::PayloadStarts)
}

/// ARP for Ethernet (or IEEE 802) hardware and IPv4: the whole 28-byte packet
/// is addressing and is kept. Other ARP flavours are not followed.
pub(super) fn arp(p: &mut Parser<'_>) -> Step {
    const L: Layer = Layer::Arp;
    p.need(L, 8)?;
    let hardware = p.be16(L, 0)?;
    let protocol = p.be16(L, 2)?;
    let sizes = p.bytes::<2>(L, 4)?;
    let opcode = p.be16(L, 6)?;
    if !matches!(hardware, 1 | 6) || protocol != 0x0800 || sizes != [6, 4] {
        return Stop::at(L, CutReason::Unsupported("ARP for other than Ethernet and IPv4"));
    }
    p.need(L, 28)?;
    let sender = p.bytes::<4>(L, 14)?;
    let target = p.bytes::<4>(L, 24)?;
    p.accept(L, 28);
    let s = &mut p.summary;
    s.arp_opcode = Some(opcode);
    s.src_ip = Some(IpAddr::V4(Ipv4Addr::from(sender)));
    s.dst_ip = Some(IpAddr::V4(Ipv4Addr::from(target)));
    Stop::at(L, CutReason::PayloadStarts)
}

/// EAPOL: the 4-byte header (version, type, body length). For an EAP packet,
/// also EAP's code, identifier, length and, for requests and responses, the
/// method type: 5 bytes at most. Key descriptors (nonces, MICs, key data),
/// identities and method data are never kept.
pub(super) fn eapol(p: &mut Parser<'_>) -> Step {
    const L: Layer = Layer::Eapol;
    p.need(L, 4)?;
    let version = p.u8(L, 0)?;
    let kind = p.u8(L, 1)?;
    let body_len = p.be16(L, 2)?;
    if !(1..=3).contains(&version) {
        return Stop::at(L, CutReason::Unsupported("EAPOL version"));
    }
    p.accept(L, 4);
    p.summary.eapol_type = Some(kind);
    if kind != 0 {
        return Stop::at(L, CutReason::PayloadStarts);
    }
    p.declare_len(body_len.into());
    eap(p)
}

fn eap(p: &mut Parser<'_>) -> Step {
    const L: Layer = Layer::Eap;
    p.need(L, 4)?;
    let code = p.u8(L, 0)?;
    let id = p.u8(L, 1)?;
    let eap_len = p.be16(L, 2)?;
    let len = match code {
        // Request, Response, Initiate, Finish: a Type byte follows.
        1 | 2 | 5 | 6 => 5,
        // Success, Failure: the 4-byte header is the whole packet.
        3 | 4 => 4,
        _ => return Stop::at(L, CutReason::Unsupported("EAP code")),
    };
    if usize::from(eap_len) < len {
        return Stop::at(L, CutReason::Malformed("EAP length under its header"));
    }
    p.need(L, len)?;
    let method = if len == 5 { Some(p.u8(L, 4)?) } else { None };
    p.accept(L, len);
    let s = &mut p.summary;
    s.eap_code = Some(code);
    s.eap_id = Some(id);
    s.eap_type = method;
    Stop::at(L, CutReason::PayloadStarts)
}
