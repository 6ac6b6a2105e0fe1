//! Link layers: Ethernet and VLAN tags, Linux cooked captures, BSD loopback,
//! radiotap, 802.11 MAC headers and LLC/SNAP.

use std::ops::ControlFlow;

use super::parse::{CutReason, Layer, Next, Parser, Step, Stop};

/// Most VLAN tags followed: QinQ is 2, anything past 4 is not a real network.
const MAX_VLAN_TAGS: u8 = 4;

/// Ethernet II (EtherType ≥ 0x0600) or 802.3 (length ≤ 1500, LLC follows).
pub(super) fn ethernet(p: &mut Parser<'_>) -> Step {
    const L: Layer = Layer::Ethernet;
    p.need(L, 14)?;
    let dst = p.bytes::<6>(L, 0)?;
    let src = p.bytes::<6>(L, 6)?;
    let type_or_len = p.be16(L, 12)?;
    if (1501..0x0600).contains(&type_or_len) {
        return Stop::at(L, CutReason::Malformed("Ethernet type/length between 1501 and 1535"));
    }
    p.accept(L, 14);
    p.summary.dst_mac = Some(dst);
    p.summary.src_mac = Some(src);
    if type_or_len <= 1500 {
        // 802.3: the field is the length of what follows, which is LLC. Only
        // SNAP carries an EtherType we can follow.
        p.declare_len(usize::from(type_or_len));
        return ControlFlow::Continue(Next::Llc);
    }
    ControlFlow::Continue(Next::EtherType { ethertype: type_or_len, from: L, tags: 0 })
}

/// One 802.1Q / 802.1ad tag: TCI, then the inner EtherType.
pub(super) fn vlan(p: &mut Parser<'_>, tags: u8) -> Step {
    const L: Layer = Layer::Vlan;
    if tags >= MAX_VLAN_TAGS {
        return Stop::at(L, CutReason::TooManyHeaders);
    }
    let tci = p.be16(L, 0)?;
    let inner = p.be16(L, 2)?;
    p.accept(L, 4);
    let id = tci & 0x0fff;
    match tags {
        0 => p.summary.vlan_outer = Some(id),
        1 => p.summary.vlan_inner = Some(id),
        _ => {}
    }
    ControlFlow::Continue(Next::EtherType { ethertype: inner, from: L, tags: tags + 1 })
}

/// 802.2 LLC with SNAP: `AA AA 03`, an OUI of RFC 1042 (`00 00 00`) or 802.1H
/// bridge-tunnel (`00 00 F8`), then an EtherType. Other LLC (STP, NetBIOS...)
/// is not followed.
pub(super) fn llc_snap(p: &mut Parser<'_>) -> Step {
    const L: Layer = Layer::Llc;
    let header = p.bytes::<8>(L, 0)?;
    let [0xaa, 0xaa, 0x03, 0x00, 0x00, 0x00 | 0xf8, hi, lo] = header else {
        return Stop::at(L, CutReason::Unsupported("LLC without SNAP"));
    };
    p.accept(L, 8);
    ControlFlow::Continue(Next::EtherType { ethertype: u16::from_be_bytes([hi, lo]), from: L, tags: 0 })
}

/// Linux cooked capture v1: packet type, ARPHRD type, address length,
/// 8 address bytes, protocol.
pub(super) fn linux_sll(p: &mut Parser<'_>) -> Step {
    const L: Layer = Layer::LinuxSll;
    p.need(L, 16)?;
    let addr_len = p.be16(L, 4)?;
    let addr = p.bytes::<6>(L, 6)?;
    let protocol = p.be16(L, 14)?;
    p.accept(L, 16);
    cooked(p, L, addr_len, addr, protocol)
}

/// Linux cooked capture v2: protocol, reserved, interface index, ARPHRD type,
/// packet type, address length, 8 address bytes.
pub(super) fn linux_sll2(p: &mut Parser<'_>) -> Step {
    const L: Layer = Layer::LinuxSll2;
    p.need(L, 20)?;
    let protocol = p.be16(L, 0)?;
    let addr_len = p.u8(L, 11)?;
    let addr = p.bytes::<6>(L, 12)?;
    p.accept(L, 20);
    cooked(p, L, addr_len.into(), addr, protocol)
}

/// What both cooked headers share: a source address and an EtherType, or a
/// small value naming a non-Ethernet-II framing that we do not follow.
fn cooked(p: &mut Parser<'_>, layer: Layer, addr_len: u16, addr: [u8; 6], protocol: u16) -> Step {
    if addr_len == 6 {
        p.summary.src_mac = Some(addr);
    }
    if protocol < 0x0600 {
        return Stop::at(layer, CutReason::Unsupported("cooked-capture protocol is not an EtherType"));
    }
    ControlFlow::Continue(Next::EtherType { ethertype: protocol, from: layer, tags: 0 })
}

/// BSD loopback: a 4-byte address family in the capturing host's byte order.
/// The file does not say which, so both are tried: `AF_INET` is 2 everywhere,
/// `AF_INET6` is 24 (NetBSD, OpenBSD), 28 (FreeBSD) or 30 (macOS).
pub(super) fn bsd_loopback(p: &mut Parser<'_>) -> Step {
    const L: Layer = Layer::Loopback;
    let family = p.bytes::<4>(L, 0)?;
    let known = |af: u32| match af {
        2 => Some(Next::Ipv4),
        24 | 28 | 30 => Some(Next::Ipv6),
        _ => None,
    };
    let little = u32::from_le_bytes(family);
    let next = known(little).or_else(|| known(u32::from_be_bytes(family)));
    p.accept(L, 4);
    match next {
        Some(next) => ControlFlow::Continue(next),
        None => Stop::at(L, CutReason::UnknownFamily(little)),
    }
}

/// Radiotap: version 0, a little-endian length, then presence bitmaps and
/// fields. The whole header is capture metadata from our own radio and is
/// kept; we read the flags (for FCS/padding) and the antenna signal.
pub(super) fn radiotap(p: &mut Parser<'_>) -> Step {
    const L: Layer = Layer::Radiotap;
    let version = p.u8(L, 0)?;
    let len = usize::from(p.le16(L, 2)?);
    if version != 0 {
        return Stop::at(L, CutReason::Unsupported("radiotap version is not 0"));
    }
    if len < 8 {
        return Stop::at(L, CutReason::Malformed("radiotap length under 8"));
    }
    p.need(L, len)?;
    let Some((flags, signal)) = radiotap_fields(p, len) else {
        return Stop::at(L, CutReason::Malformed("radiotap fields run past its length"));
    };
    p.accept(L, len);
    p.summary.radiotap_signal_dbm = signal;
    // Flag 0x20: the driver padded the 802.11 header to a multiple of 4.
    ControlFlow::Continue(Next::Ieee80211 { datapad: flags & 0x20 != 0 })
}

/// Reads the Flags and dBm Antenna Signal fields, which are the 2nd and 6th
/// of the first presence word, so only the four fields before them need
/// skipping. `None` when a bitmap or field runs past `len`.
fn radiotap_fields(p: &Parser<'_>, len: usize) -> Option<(u8, Option<i8>)> {
    let le32 = |at: usize| if at + 4 <= len { p.le32(Layer::Radiotap, at).continue_value() } else { None };
    let first = le32(4)?;
    // Further presence words follow while bit 31 is set; fields start after
    // the last one. At most len / 4 words, so this is bounded.
    let mut at = 8;
    let mut word = first;
    while word & (1 << 31) != 0 {
        word = le32(at)?;
        at += 4;
    }
    // (presence bit, alignment, size) of fields 0..=5: TSFT, Flags, Rate,
    // Channel, FHSS, dBm Antenna Signal. Alignment is from the header start.
    const FIELDS: [(u32, usize, usize); 6] = [(0, 8, 8), (1, 1, 1), (2, 1, 1), (3, 2, 4), (4, 2, 2), (5, 1, 1)];
    let mut flags = 0;
    let mut signal = None;
    for (bit, align, size) in FIELDS {
        if first & (1 << bit) == 0 {
            continue;
        }
        at = at.next_multiple_of(align);
        if at + size > len {
            return None;
        }
        match bit {
            1 => flags = p.u8(Layer::Radiotap, at).continue_value()?,
            5 => signal = Some(p.u8(Layer::Radiotap, at).continue_value()? as i8),
            _ => {}
        }
        at += size;
    }
    Some((flags, signal))
}

/// An 802.11 MAC header. Management frames keep their 24-byte header (+4 HT
/// Control), never the body: SSIDs, vendor elements and action details are
/// payload here. Control frames keep their addresses. Data frames keep the
/// MAC header and go on to LLC/SNAP unless protected (encrypted), bodiless
/// (null) or A-MSDU.
pub(super) fn ieee80211(p: &mut Parser<'_>, datapad: bool) -> Step {
    const L: Layer = Layer::Ieee80211;
    let [fc0, fc1] = p.bytes::<2>(L, 0)?;
    if fc0 & 0x03 != 0 {
        return Stop::at(L, CutReason::Unsupported("802.11 protocol version is not 0"));
    }
    let kind = (fc0 >> 2) & 0x03;
    let subtype = fc0 >> 4;
    let protected = fc1 & 0x40 != 0;
    let order = fc1 & 0x80 != 0;
    let addr = |n: usize| p.bytes::<6>(L, 4 + 6 * n);

    match kind {
        0 => {
            // Management: FC, duration, 3 addresses, sequence control; the
            // Order bit adds HT Control (802.11n).
            let len = if order { 28 } else { 24 };
            p.need(L, len)?;
            let (a1, a2, a3) = (addr(0)?, addr(1)?, addr(2)?);
            p.accept(L, len);
            set_wlan(p, kind, subtype, [Some(a1), Some(a2), Some(a3)]);
            p.summary.dst_mac = Some(a1);
            p.summary.src_mac = Some(a2);
            Stop::at(L, if protected { CutReason::Encrypted } else { CutReason::PayloadStarts })
        }
        1 => {
            // Control: CTS, ACK and the control wrapper carry only the
            // receiver address; the others we know also carry a transmitter
            // address. Anything after the addresses (BlockAck bitmaps,
            // trigger fields) is not kept.
            let len = match subtype {
                7 | 12 | 13 => 10,
                2 | 4 | 5 | 8 | 9 | 10 | 11 | 14 | 15 => 16,
                _ => return Stop::at(L, CutReason::Unsupported("802.11 control subtype")),
            };
            p.need(L, len)?;
            let a1 = addr(0)?;
            let a2 = if len == 16 { Some(addr(1)?) } else { None };
            p.accept(L, len);
            set_wlan(p, kind, subtype, [Some(a1), a2, None]);
            Stop::at(L, CutReason::PayloadStarts)
        }
        2 => data_frame(p, fc1, subtype, datapad),
        _ => Stop::at(L, CutReason::Unsupported("802.11 extension frame")),
    }
}

fn data_frame(p: &mut Parser<'_>, fc1: u8, subtype: u8, datapad: bool) -> Step {
    const L: Layer = Layer::Ieee80211;
    let (to_ds, from_ds) = (fc1 & 0x01 != 0, fc1 & 0x02 != 0);
    let protected = fc1 & 0x40 != 0;
    let qos = subtype & 0x08 != 0;
    // Null and CF-Poll/Ack-only subtypes carry no frame body.
    let has_body = subtype & 0x04 == 0;
    let four_addr = to_ds && from_ds;
    let qos_at: usize = if four_addr { 30 } else { 24 };
    let mut len = qos_at;
    if qos {
        len += 2;
        // HT Control is present in QoS data frames when Order is set.
        if fc1 & 0x80 != 0 {
            len += 4;
        }
    }
    let unpadded = len;
    if datapad && has_body {
        len = len.next_multiple_of(4);
    }
    p.need(L, len)?;
    let addr = |n: usize| p.bytes::<6>(L, 4 + 6 * n);
    let (a1, a2, a3) = (addr(0)?, addr(1)?, addr(2)?);
    let a4 = if four_addr { Some(p.bytes::<6>(L, 24)?) } else { None };
    let amsdu = qos && p.u8(L, qos_at)? & 0x80 != 0;
    // At most 36 bytes, so it fits the span's note.
    p.accept_kind(L, u8::try_from(unpadded).unwrap_or(u8::MAX), len);
    set_wlan(p, 2, subtype, [Some(a1), Some(a2), Some(a3)]);
    // DA and SA by the distribution-system bits (802.11 Table 9-26).
    let (da, sa) = match (to_ds, from_ds) {
        (false, false) => (Some(a1), Some(a2)),
        (true, false) => (Some(a3), Some(a2)),
        (false, true) => (Some(a1), Some(a3)),
        (true, true) => (Some(a3), a4),
    };
    p.summary.dst_mac = da;
    p.summary.src_mac = sa;
    if protected {
        return Stop::at(L, CutReason::Encrypted);
    }
    if !has_body {
        return Stop::at(L, CutReason::PayloadStarts);
    }
    if amsdu {
        // The body is a list of subframes each with its own addresses and
        // LLC; not followed.
        return Stop::at(L, CutReason::Unsupported("A-MSDU"));
    }
    ControlFlow::Continue(Next::Llc)
}

fn set_wlan(p: &mut Parser<'_>, kind: u8, subtype: u8, addrs: [Option<[u8; 6]>; 3]) {
    p.summary.wlan_type = Some(kind);
    p.summary.wlan_subtype = Some(subtype);
    p.summary.wlan_addrs = addrs;
}
