//! A small BPF-like filter over the decoded headers of stored packets, for
//! selecting captures in an export (`host 10.0.0.1 and port 53`).
//!
//! It is evaluated against a [`PacketSummary`] (what [`header_boundary`]
//! read from the kept headers), never against raw bytes: there is no byte
//! offset syntax (`ip[2:2]`), because the stored headers are already cut
//! and the summary is what they say.
//!
//! # Language
//!
//! ```text
//! expr      := term ( ("or" | "||") term )*
//! term      := factor ( ("and" | "&&") factor )*
//! factor    := ("not" | "!") factor | "(" expr ")" | primitive
//! primitive := [src|dst] host ADDRESS        IPv4 or IPv6 address
//!            | [src|dst] net ADDRESS/LEN     a prefix
//!            | [tcp|udp] [src|dst] port N
//!            | tcp | udp | icmp | icmp6 | arp | ip | ip6
//!            | vlan [N]                      either tag, or any tag
//!            | ether [src|dst] host MAC
//! ```
//!
//! `and` binds tighter than `or`, as in tcpdump. Keywords are lowercase.
//! A filter is at most [`MAX_FILTER_LEN`] bytes of ASCII, nests at most
//! [`MAX_DEPTH`] deep and holds at most [`MAX_TERMS`] primitives; every
//! error names the 1-based column where it was found.
//!
//! Sans-IO: text in, a [`CaptureFilter`] out; [`CaptureFilter::matches`]
//! takes a summary and allocates nothing.

use std::fmt;
use std::net::IpAddr;

#[cfg(doc)]
use super::parse::header_boundary;
use super::parse::PacketSummary;
use crate::net::MacAddr;

/// Longest filter text accepted, in bytes.
pub const MAX_FILTER_LEN: usize = 1024;
/// Deepest nesting of parentheses and `not`.
pub const MAX_DEPTH: usize = 32;
/// Most primitives in one filter.
pub const MAX_TERMS: usize = 128;

const ETHERTYPE_ARP: u16 = 0x0806;
const PROTO_ICMP: u8 = 1;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const PROTO_ICMP6: u8 = 58;

/// A filter could not be parsed. Columns are 1-based byte positions.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FilterError {
    /// The filter is longer than [`MAX_FILTER_LEN`].
    #[error("filter is {len} bytes long, at most {MAX_FILTER_LEN} are allowed")]
    TooLong {
        /// Its length.
        len: usize,
    },
    /// The filter is empty.
    #[error("filter is empty")]
    Empty,
    /// A character that is not printable ASCII.
    #[error("column {column}: unexpected character (filters are ASCII)")]
    BadCharacter {
        /// Where.
        column: usize,
    },
    /// Nested deeper than [`MAX_DEPTH`].
    #[error("column {column}: nested more than {MAX_DEPTH} deep")]
    TooDeep {
        /// Where.
        column: usize,
    },
    /// More than [`MAX_TERMS`] primitives.
    #[error("column {column}: more than {MAX_TERMS} primitives")]
    TooManyTerms {
        /// Where.
        column: usize,
    },
    /// A word or symbol where something else was expected.
    #[error("column {column}: expected {expected}, found {found:?}")]
    Unexpected {
        /// Where.
        column: usize,
        /// What was found (cut to 40 characters).
        found: String,
        /// What would have been accepted.
        expected: &'static str,
    },
    /// The filter ended where something else was expected.
    #[error("column {column}: expected {expected}, found the end of the filter")]
    UnexpectedEnd {
        /// Where (one past the last character).
        column: usize,
        /// What would have been accepted.
        expected: &'static str,
    },
    /// A value that does not parse (address, prefix, port, VLAN id, MAC).
    #[error("column {column}: {value:?} is not {expected}")]
    BadValue {
        /// Where.
        column: usize,
        /// The value (cut to 40 characters).
        value: String,
        /// What it should have been.
        expected: &'static str,
    },
}

/// Which end of a packet an address or port test looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Either source or destination.
    Either,
    /// Source only.
    Src,
    /// Destination only.
    Dst,
}

/// One test against a packet's headers.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Primitive {
    /// `host A`: the source and/or destination IP address.
    Host(Direction, IpAddr),
    /// `net A/L`: an address in the prefix (`A` has no bits past `L`).
    Net(Direction, IpAddr, u8),
    /// `port N`, optionally only TCP or UDP.
    Port(Direction, u16, Option<u8>),
    /// `tcp`, `udp`, `icmp`, `icmp6`: the IP protocol (ICMP over IPv4 only).
    Protocol(u8),
    /// `arp`.
    Arp,
    /// `ip` (4) or `ip6` (6).
    IpVersion(u8),
    /// `vlan N` (outer or inner tag), or `vlan` (tagged at all).
    Vlan(Option<u16>),
    /// `ether host M`: the source and/or destination MAC address.
    EtherHost(Direction, [u8; 6]),
}

/// A parsed filter.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CaptureFilter {
    /// Every part matches.
    And(Vec<CaptureFilter>),
    /// Some part matches.
    Or(Vec<CaptureFilter>),
    /// The part does not match.
    Not(Box<CaptureFilter>),
    /// One test.
    Is(Primitive),
}

impl CaptureFilter {
    /// Parses a filter (see the module documentation for the language).
    pub fn parse(text: &str) -> Result<Self, FilterError> {
        if text.len() > MAX_FILTER_LEN {
            return Err(FilterError::TooLong { len: text.len() });
        }
        let tokens = tokenize(text)?;
        if tokens.is_empty() {
            return Err(FilterError::Empty);
        }
        let mut parser = Parser { tokens, next: 0, end: text.len() + 1, terms: 0 };
        let filter = parser.expr(0)?;
        match parser.peek() {
            None => Ok(filter),
            Some(token) => Err(FilterError::Unexpected {
                column: token.column,
                found: cut(token.text),
                expected: "\"and\", \"or\" or the end of the filter",
            }),
        }
    }

    /// Whether a packet with these decoded headers matches.
    pub fn matches(&self, packet: &PacketSummary) -> bool {
        match self {
            CaptureFilter::And(parts) => parts.iter().all(|p| p.matches(packet)),
            CaptureFilter::Or(parts) => parts.iter().any(|p| p.matches(packet)),
            CaptureFilter::Not(part) => !part.matches(packet),
            CaptureFilter::Is(primitive) => primitive.matches(packet),
        }
    }
}

fn either<T: PartialEq>(dir: Direction, src: Option<T>, dst: Option<T>, test: impl Fn(&T) -> bool) -> bool {
    let src = src.as_ref().is_some_and(&test);
    let dst = dst.as_ref().is_some_and(&test);
    match dir {
        Direction::Either => src || dst,
        Direction::Src => src,
        Direction::Dst => dst,
    }
}

fn in_prefix(addr: &IpAddr, net: &IpAddr, len: u8) -> bool {
    match (addr, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => mask32(u32::from(*a), len) == u32::from(*n),
        (IpAddr::V6(a), IpAddr::V6(n)) => mask128(u128::from(*a), len) == u128::from(*n),
        _ => false,
    }
}

fn mask32(v: u32, len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        v & (u32::MAX << (32 - u32::from(len.min(32))))
    }
}

fn mask128(v: u128, len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        v & (u128::MAX << (128 - u32::from(len.min(128))))
    }
}

impl Primitive {
    /// Whether a packet with these decoded headers passes this test.
    pub fn matches(&self, p: &PacketSummary) -> bool {
        match *self {
            Primitive::Host(dir, addr) => either(dir, p.src_ip, p.dst_ip, |a| *a == addr),
            Primitive::Net(dir, net, len) => either(dir, p.src_ip, p.dst_ip, |a| in_prefix(a, &net, len)),
            Primitive::Port(dir, port, proto) => {
                proto.is_none_or(|proto| p.ip_protocol == Some(proto))
                    && either(dir, p.src_port, p.dst_port, |q| *q == port)
            }
            Primitive::Protocol(PROTO_ICMP) => p.ip_version == Some(4) && p.ip_protocol == Some(PROTO_ICMP),
            Primitive::Protocol(proto) => p.ip_protocol == Some(proto),
            Primitive::Arp => p.ethertype == Some(ETHERTYPE_ARP),
            Primitive::IpVersion(v) => p.ip_version == Some(v),
            Primitive::Vlan(None) => p.vlan_outer.is_some(),
            Primitive::Vlan(Some(id)) => p.vlan_outer == Some(id) || p.vlan_inner == Some(id),
            Primitive::EtherHost(dir, mac) => either(dir, p.src_mac, p.dst_mac, |m| *m == mac),
        }
    }
}

/// The canonical text of a filter, which parses back to the same filter.
impl fmt::Display for CaptureFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let joined = |f: &mut fmt::Formatter<'_>, parts: &[CaptureFilter], op: &str| {
            for (i, part) in parts.iter().enumerate() {
                if i > 0 {
                    write!(f, " {op} ")?;
                }
                match part {
                    CaptureFilter::And(_) | CaptureFilter::Or(_) => write!(f, "({part})")?,
                    _ => write!(f, "{part}")?,
                }
            }
            Ok(())
        };
        match self {
            CaptureFilter::And(parts) => joined(f, parts, "and"),
            CaptureFilter::Or(parts) => joined(f, parts, "or"),
            CaptureFilter::Not(part) => match **part {
                CaptureFilter::And(_) | CaptureFilter::Or(_) => write!(f, "not ({part})"),
                _ => write!(f, "not {part}"),
            },
            CaptureFilter::Is(primitive) => write!(f, "{primitive}"),
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Either => "",
            Direction::Src => "src ",
            Direction::Dst => "dst ",
        })
    }
}

impl fmt::Display for Primitive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Primitive::Host(dir, addr) => write!(f, "{dir}host {addr}"),
            Primitive::Net(dir, addr, len) => write!(f, "{dir}net {addr}/{len}"),
            Primitive::Port(dir, port, None) => write!(f, "{dir}port {port}"),
            Primitive::Port(dir, port, Some(proto)) => write!(f, "{} {dir}port {port}", protocol_name(*proto)),
            Primitive::Protocol(proto) => f.write_str(protocol_name(*proto)),
            Primitive::Arp => f.write_str("arp"),
            Primitive::IpVersion(6) => f.write_str("ip6"),
            Primitive::IpVersion(_) => f.write_str("ip"),
            Primitive::Vlan(None) => f.write_str("vlan"),
            Primitive::Vlan(Some(id)) => write!(f, "vlan {id}"),
            Primitive::EtherHost(dir, mac) => write!(f, "ether {dir}host {}", MacAddr(*mac)),
        }
    }
}

fn protocol_name(proto: u8) -> &'static str {
    match proto {
        PROTO_TCP => "tcp",
        PROTO_UDP => "udp",
        PROTO_ICMP => "icmp",
        _ => "icmp6",
    }
}

#[derive(Debug, Clone, Copy)]
struct Token<'a> {
    text: &'a str,
    column: usize,
}

fn cut(text: &str) -> String {
    text.chars().take(40).collect()
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b':' | b'/' | b'-' | b'_')
}

fn tokenize(text: &str) -> Result<Vec<Token<'_>>, FilterError> {
    let bytes = text.as_bytes();
    let mut tokens = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let b = bytes[at];
        let start = at;
        if b == b' ' || b == b'\t' || b == b'\n' || b == b'\r' {
            at += 1;
            continue;
        }
        if b == b'(' || b == b')' || b == b'!' {
            at += 1;
        } else if (b == b'&' || b == b'|') && bytes.get(at + 1) == Some(&b) {
            at += 2;
        } else if is_word_byte(b) {
            while at < bytes.len() && is_word_byte(bytes[at]) {
                at += 1;
            }
        } else {
            return Err(FilterError::BadCharacter { column: start + 1 });
        }
        // Every byte taken is ASCII, so these are character boundaries.
        tokens.push(Token { text: &text[start..at], column: start + 1 });
    }
    Ok(tokens)
}

struct Parser<'a> {
    tokens: Vec<Token<'a>>,
    next: usize,
    /// The column one past the end, for errors at the end.
    end: usize,
    terms: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<Token<'a>> {
        self.tokens.get(self.next).copied()
    }

    fn eat(&mut self, word: &str) -> bool {
        if self.peek().is_some_and(|t| t.text == word) {
            self.next += 1;
            true
        } else {
            false
        }
    }

    fn take(&mut self, expected: &'static str) -> Result<Token<'a>, FilterError> {
        let token = self.peek().ok_or(FilterError::UnexpectedEnd { column: self.end, expected })?;
        self.next += 1;
        Ok(token)
    }

    fn column(&self) -> usize {
        self.peek().map_or(self.end, |t| t.column)
    }

    fn expr(&mut self, depth: usize) -> Result<CaptureFilter, FilterError> {
        let mut parts = vec![self.term(depth)?];
        while self.eat("or") || self.eat("||") {
            parts.push(self.term(depth)?);
        }
        Ok(if parts.len() == 1 { parts.remove(0) } else { CaptureFilter::Or(parts) })
    }

    fn term(&mut self, depth: usize) -> Result<CaptureFilter, FilterError> {
        let mut parts = vec![self.factor(depth)?];
        while self.eat("and") || self.eat("&&") {
            parts.push(self.factor(depth)?);
        }
        Ok(if parts.len() == 1 { parts.remove(0) } else { CaptureFilter::And(parts) })
    }

    fn factor(&mut self, depth: usize) -> Result<CaptureFilter, FilterError> {
        let column = self.column();
        if self.eat("not") || self.eat("!") {
            if depth >= MAX_DEPTH {
                return Err(FilterError::TooDeep { column });
            }
            return Ok(CaptureFilter::Not(Box::new(self.factor(depth + 1)?)));
        }
        if self.eat("(") {
            if depth >= MAX_DEPTH {
                return Err(FilterError::TooDeep { column });
            }
            let inner = self.expr(depth + 1)?;
            let close = self.take("\")\"")?;
            if close.text != ")" {
                return Err(FilterError::Unexpected {
                    column: close.column,
                    found: cut(close.text),
                    expected: "\")\"",
                });
            }
            return Ok(inner);
        }
        self.terms += 1;
        if self.terms > MAX_TERMS {
            return Err(FilterError::TooManyTerms { column });
        }
        self.primitive().map(CaptureFilter::Is)
    }

    fn direction(&mut self) -> Direction {
        if self.eat("src") {
            Direction::Src
        } else if self.eat("dst") {
            Direction::Dst
        } else {
            Direction::Either
        }
    }

    fn primitive(&mut self) -> Result<Primitive, FilterError> {
        const EXPECTED: &str = "a primitive (host, net, port, tcp, udp, icmp, icmp6, arp, ip, ip6, vlan, ether), \
                                \"not\" or \"(\"";
        let token = self.take(EXPECTED)?;
        let proto = match token.text {
            "tcp" => Some(PROTO_TCP),
            "udp" => Some(PROTO_UDP),
            _ => None,
        };
        match token.text {
            "tcp" | "udp" => {
                // `tcp port 80`, `udp src port 53`: the protocol qualifies the port.
                let save = self.next;
                let dir = self.direction();
                if self.eat("port") {
                    let port = self.number::<u16>("a port number (0 to 65535)")?;
                    return Ok(Primitive::Port(dir, port, proto));
                }
                self.next = save;
                Ok(Primitive::Protocol(proto.unwrap_or(PROTO_TCP)))
            }
            "icmp" => Ok(Primitive::Protocol(PROTO_ICMP)),
            "icmp6" => Ok(Primitive::Protocol(PROTO_ICMP6)),
            "arp" => Ok(Primitive::Arp),
            "ip" => Ok(Primitive::IpVersion(4)),
            "ip6" => Ok(Primitive::IpVersion(6)),
            "vlan" => {
                if self.peek().is_some_and(|t| t.text.bytes().all(|b| b.is_ascii_digit())) {
                    let column = self.column();
                    let id = self.number::<u16>("a VLAN id (0 to 4095)")?;
                    if id > 4095 {
                        return Err(FilterError::BadValue {
                            column,
                            value: id.to_string(),
                            expected: "a VLAN id (0 to 4095)",
                        });
                    }
                    return Ok(Primitive::Vlan(Some(id)));
                }
                Ok(Primitive::Vlan(None))
            }
            "ether" => {
                let dir = self.direction();
                let word = self.take("\"host\"")?;
                if word.text != "host" {
                    return Err(FilterError::Unexpected {
                        column: word.column,
                        found: cut(word.text),
                        expected: "\"host\"",
                    });
                }
                let value = self.take("a MAC address (02:00:5e:10:00:01)")?;
                let mac: MacAddr = value.text.parse().map_err(|_| FilterError::BadValue {
                    column: value.column,
                    value: cut(value.text),
                    expected: "a MAC address (02:00:5e:10:00:01)",
                })?;
                Ok(Primitive::EtherHost(dir, mac.0))
            }
            "src" | "dst" | "host" | "net" | "port" => {
                self.next -= 1;
                let dir = self.direction();
                let word = self.take("\"host\", \"net\" or \"port\"")?;
                match word.text {
                    "host" => {
                        let value = self.take("an IP address")?;
                        let addr = value.text.parse().map_err(|_| FilterError::BadValue {
                            column: value.column,
                            value: cut(value.text),
                            expected: "an IPv4 or IPv6 address",
                        })?;
                        Ok(Primitive::Host(dir, addr))
                    }
                    "net" => {
                        let value = self.take("a prefix (10.0.0.0/8)")?;
                        let (addr, len) = parse_prefix(value.text).ok_or_else(|| FilterError::BadValue {
                            column: value.column,
                            value: cut(value.text),
                            expected: "a prefix with no host bits set (10.0.0.0/8, fd00::/8)",
                        })?;
                        Ok(Primitive::Net(dir, addr, len))
                    }
                    "port" => Ok(Primitive::Port(dir, self.number::<u16>("a port number (0 to 65535)")?, None)),
                    _ => Err(FilterError::Unexpected {
                        column: word.column,
                        found: cut(word.text),
                        expected: "\"host\", \"net\" or \"port\"",
                    }),
                }
            }
            _ => Err(FilterError::Unexpected { column: token.column, found: cut(token.text), expected: EXPECTED }),
        }
    }

    fn number<T: std::str::FromStr>(&mut self, expected: &'static str) -> Result<T, FilterError> {
        let value = self.take(expected)?;
        if !value.text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(FilterError::BadValue { column: value.column, value: cut(value.text), expected });
        }
        value.text.parse().map_err(|_| FilterError::BadValue { column: value.column, value: cut(value.text), expected })
    }
}

/// `A/L` with no bits of `A` set past `L`, like tcpdump's `net`.
fn parse_prefix(text: &str) -> Option<(IpAddr, u8)> {
    let (addr, len) = text.split_once('/')?;
    let addr: IpAddr = addr.parse().ok()?;
    if !len.bytes().all(|b| b.is_ascii_digit()) || len.is_empty() || len.len() > 3 {
        return None;
    }
    let len: u8 = len.parse().ok()?;
    let exact = match addr {
        IpAddr::V4(a) => len <= 32 && mask32(u32::from(a), len) == u32::from(a),
        IpAddr::V6(a) => len <= 128 && mask128(u128::from(a), len) == u128::from(a),
    };
    exact.then_some((addr, len))
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use proptest::prelude::*;

    use super::*;

    fn packet() -> PacketSummary {
        PacketSummary {
            src_mac: Some([2, 0, 0, 0, 0, 1]),
            dst_mac: Some([2, 0, 0, 0, 0, 2]),
            ethertype: Some(0x0800),
            ip_version: Some(4),
            src_ip: Some(IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3))),
            dst_ip: Some(IpAddr::V4(Ipv4Addr::new(192, 168, 1, 1))),
            ip_protocol: Some(PROTO_UDP),
            src_port: Some(40000),
            dst_port: Some(53),
            vlan_outer: Some(100),
            ..PacketSummary::EMPTY
        }
    }

    fn eval(text: &str) -> bool {
        CaptureFilter::parse(text).unwrap_or_else(|e| panic!("{text}: {e}")).matches(&packet())
    }

    #[test]
    fn primitives_match_the_headers() {
        for yes in [
            "host 10.1.2.3",
            "src host 10.1.2.3",
            "dst host 192.168.1.1",
            "net 10.0.0.0/8",
            "src net 10.1.0.0/16",
            "net 0.0.0.0/0",
            "port 53",
            "dst port 53",
            "src port 40000",
            "udp",
            "udp port 53",
            "udp dst port 53",
            "ip",
            "vlan",
            "vlan 100",
            "ether host 02:00:00:00:00:01",
            "ether dst host 02:00:00:00:00:02",
            "udp and port 53 and not tcp",
            "tcp or udp",
            "!(tcp || icmp) && host 10.1.2.3",
            "not (src port 53 or arp)",
        ] {
            assert!(eval(yes), "{yes} should match");
        }
        for no in [
            "host 10.1.2.4",
            "dst host 10.1.2.3",
            "net 172.16.0.0/12",
            "dst net 10.0.0.0/8",
            "port 80",
            "src port 53",
            "tcp",
            "tcp port 53",
            "icmp",
            "icmp6",
            "arp",
            "ip6",
            "vlan 200",
            "ether src host 02:00:00:00:00:02",
            "host ::1",
            "net fd00::/8",
            "udp and not port 53",
        ] {
            assert!(!eval(no), "{no} should not match");
        }
    }

    #[test]
    fn and_binds_tighter_than_or() {
        // tcp or (udp and port 80): false or (true and false).
        assert!(!eval("tcp or udp and port 80"));
        // (tcp or udp) and port 53.
        assert!(eval("(tcp or udp) and port 53"));
        assert!(eval("tcp and port 80 or udp"));
    }

    #[test]
    fn icmp_is_ipv4_only_and_icmp6_ipv6_only() {
        let mut p = packet();
        p.ip_protocol = Some(PROTO_ICMP);
        assert!(CaptureFilter::parse("icmp").unwrap().matches(&p));
        p.ip_version = Some(6);
        assert!(!CaptureFilter::parse("icmp").unwrap().matches(&p));
        p.ip_protocol = Some(PROTO_ICMP6);
        assert!(CaptureFilter::parse("icmp6").unwrap().matches(&p));
    }

    #[test]
    fn errors_name_the_column() {
        let err = |text: &str| CaptureFilter::parse(text).unwrap_err();
        assert_eq!(err(""), FilterError::Empty);
        assert_eq!(err("   "), FilterError::Empty);
        assert!(matches!(err("host 10.0.0.300"), FilterError::BadValue { column: 6, .. }));
        assert!(matches!(err("port 99999"), FilterError::BadValue { column: 6, .. }));
        assert!(matches!(err("port -1"), FilterError::BadValue { column: 6, .. }));
        assert!(matches!(err("net 10.0.0.1/8"), FilterError::BadValue { column: 5, .. }));
        assert!(matches!(err("net 10.0.0.0/33"), FilterError::BadValue { .. }));
        assert!(matches!(err("vlan 5000"), FilterError::BadValue { column: 6, .. }));
        assert!(matches!(err("tcp and"), FilterError::UnexpectedEnd { column: 8, .. }));
        assert!(matches!(err("(tcp"), FilterError::UnexpectedEnd { column: 5, .. }));
        assert!(matches!(err("tcp)"), FilterError::Unexpected { column: 4, .. }));
        assert!(matches!(err("tcp udp"), FilterError::Unexpected { column: 5, .. }));
        assert!(matches!(err("hots 1.2.3.4"), FilterError::Unexpected { column: 1, .. }));
        assert!(matches!(err("src tcp"), FilterError::Unexpected { column: 5, .. }));
        assert!(matches!(err("ether host zz"), FilterError::BadValue { column: 12, .. }));
        assert!(matches!(err("tcp and ip[2] = 1"), FilterError::BadCharacter { column: 11 }));
        assert!(matches!(err("host é"), FilterError::BadCharacter { column: 6 }));
        assert!(matches!(err(&"x".repeat(MAX_FILTER_LEN + 1)), FilterError::TooLong { .. }));
        let deep = format!("{}tcp{}", "(".repeat(MAX_DEPTH + 1), ")".repeat(MAX_DEPTH + 1));
        assert!(matches!(err(&deep), FilterError::TooDeep { column: 33 }));
        let nots = format!("{}tcp", "not ".repeat(MAX_DEPTH + 1));
        assert!(matches!(err(&nots), FilterError::TooDeep { .. }));
        let many = vec!["tcp"; MAX_TERMS + 1].join(" or ");
        assert!(matches!(err(&many), FilterError::TooManyTerms { .. }));
        // The messages say where and what.
        assert_eq!(err("port x").to_string(), "column 6: \"x\" is not a port number (0 to 65535)");
    }

    #[test]
    fn limits_themselves_are_accepted() {
        let deep = format!("{}tcp{}", "(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
        assert!(CaptureFilter::parse(&deep).is_ok());
        assert!(CaptureFilter::parse(&vec!["tcp"; MAX_TERMS].join(" or ")).is_ok());
    }

    fn direction() -> impl Strategy<Value = Direction> {
        prop_oneof![Just(Direction::Either), Just(Direction::Src), Just(Direction::Dst)]
    }

    fn ip() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            any::<[u8; 4]>().prop_map(|b| IpAddr::V4(Ipv4Addr::from(b))),
            any::<[u8; 16]>().prop_map(|b| IpAddr::V6(Ipv6Addr::from(b))),
            // Few distinct values, so that generated packets often match.
            (0u8..3).prop_map(|b| IpAddr::V4(Ipv4Addr::new(10, 0, 0, b))),
        ]
    }

    fn primitive() -> impl Strategy<Value = Primitive> {
        prop_oneof![
            (direction(), ip()).prop_map(|(d, a)| Primitive::Host(d, a)),
            (direction(), ip(), 0u8..=128).prop_map(|(d, a, len)| {
                let len = if a.is_ipv4() { len % 33 } else { len };
                let net = match a {
                    IpAddr::V4(v) => IpAddr::V4(Ipv4Addr::from(mask32(u32::from(v), len))),
                    IpAddr::V6(v) => IpAddr::V6(Ipv6Addr::from(mask128(u128::from(v), len))),
                };
                Primitive::Net(d, net, len)
            }),
            (direction(), 50u16..55, prop::option::of(prop_oneof![Just(PROTO_TCP), Just(PROTO_UDP)]))
                .prop_map(|(d, p, proto)| Primitive::Port(d, p, proto)),
            prop_oneof![Just(PROTO_TCP), Just(PROTO_UDP), Just(PROTO_ICMP), Just(PROTO_ICMP6)]
                .prop_map(Primitive::Protocol),
            Just(Primitive::Arp),
            prop_oneof![Just(4u8), Just(6u8)].prop_map(Primitive::IpVersion),
            prop::option::of(0u16..4096).prop_map(Primitive::Vlan),
            (direction(), prop_oneof![any::<[u8; 6]>(), Just([2, 0, 0, 0, 0, 1])])
                .prop_map(|(d, m)| Primitive::EtherHost(d, m)),
        ]
    }

    fn filter() -> impl Strategy<Value = CaptureFilter> {
        primitive().prop_map(CaptureFilter::Is).prop_recursive(6, 48, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 2..4).prop_map(CaptureFilter::And),
                prop::collection::vec(inner.clone(), 2..4).prop_map(CaptureFilter::Or),
                inner.prop_map(|f| CaptureFilter::Not(Box::new(f))),
            ]
        })
    }

    fn summary() -> impl Strategy<Value = PacketSummary> {
        (
            prop::option::of(ip()),
            prop::option::of(ip()),
            prop::option::of(prop_oneof![Just(PROTO_TCP), Just(PROTO_UDP), Just(PROTO_ICMP), Just(PROTO_ICMP6)]),
            (prop::option::of(50u16..55), prop::option::of(50u16..55)),
            (prop::option::of(0u16..4), prop::option::of(0u16..4)),
            prop::option::of(prop_oneof![Just(0x0800u16), Just(0x86dd), Just(0x0806)]),
            prop::option::of(Just([2, 0, 0, 0, 0, 1])),
        )
            .prop_map(
                |(src_ip, dst_ip, ip_protocol, (src_port, dst_port), (vlan_outer, vlan_inner), ethertype, mac)| {
                    PacketSummary {
                        ip_version: src_ip.map(|a: IpAddr| if a.is_ipv4() { 4 } else { 6 }),
                        src_ip,
                        dst_ip,
                        ip_protocol,
                        src_port,
                        dst_port,
                        vlan_outer,
                        vlan_inner,
                        ethertype,
                        src_mac: mac,
                        ..PacketSummary::EMPTY
                    }
                },
            )
    }

    /// The reference meaning of a filter, written independently of the
    /// parser's tree walk.
    fn reference(f: &CaptureFilter, p: &PacketSummary) -> bool {
        match f {
            CaptureFilter::And(parts) => parts.iter().fold(true, |acc, part| acc & reference(part, p)),
            CaptureFilter::Or(parts) => parts.iter().fold(false, |acc, part| acc | reference(part, p)),
            CaptureFilter::Not(part) => !reference(part, p),
            CaptureFilter::Is(prim) => prim.matches(p),
        }
    }

    proptest! {
        #[test]
        fn canonical_text_parses_back_to_the_same_filter(f in filter()) {
            let text = f.to_string();
            let parsed = CaptureFilter::parse(&text);
            // A generated tree can be deeper or longer than the limits allow;
            // then the parser must say so, not accept something else.
            match parsed {
                Ok(parsed) => prop_assert_eq!(flatten(parsed), flatten(f), "{}", text),
                Err(e) => prop_assert!(matches!(e, FilterError::TooDeep { .. } | FilterError::TooManyTerms { .. } | FilterError::TooLong { .. }), "{}: {}", text, e),
            }
        }

        #[test]
        fn evaluation_follows_boolean_logic(f in filter(), p in summary()) {
            let text = f.to_string();
            if let Ok(parsed) = CaptureFilter::parse(&text) {
                prop_assert_eq!(parsed.matches(&p), reference(&f, &p), "{}", text);
                let negated = CaptureFilter::parse(&format!("not ({text})"));
                if let Ok(negated) = negated {
                    prop_assert_eq!(negated.matches(&p), !reference(&f, &p));
                }
            }
        }

        #[test]
        fn arbitrary_text_never_panics_and_errors_point_inside(text in "[ -~]{0,200}") {
            if let Err(e) = CaptureFilter::parse(&text) {
                let column = match e {
                    FilterError::BadCharacter { column }
                    | FilterError::TooDeep { column }
                    | FilterError::TooManyTerms { column }
                    | FilterError::Unexpected { column, .. }
                    | FilterError::UnexpectedEnd { column, .. }
                    | FilterError::BadValue { column, .. } => column,
                    _ => 1,
                };
                prop_assert!(column >= 1 && column <= text.len() + 1);
            }
        }

        #[test]
        fn keyword_soup_never_panics(words in prop::collection::vec(prop_oneof![
            Just("host"), Just("src"), Just("dst"), Just("net"), Just("port"), Just("tcp"), Just("udp"),
            Just("and"), Just("or"), Just("not"), Just("("), Just(")"), Just("vlan"), Just("ether"),
            Just("10.0.0.1"), Just("10.0.0.0/8"), Just("53"), Just("02:00:00:00:00:01"), Just("!"),
        ], 0..40)) {
            let text = words.join(" ");
            if let Ok(f) = CaptureFilter::parse(&text) {
                prop_assert_eq!(CaptureFilter::parse(&f.to_string()).map(flatten), Ok(flatten(f)));
            }
        }
    }

    /// Nested `and` in `and` (and `or` in `or`) are the same filter as one
    /// flat list; the canonical text keeps their parentheses, the parse
    /// does too, so this normalises both sides.
    fn flatten(f: CaptureFilter) -> CaptureFilter {
        match f {
            CaptureFilter::And(parts) => CaptureFilter::And(
                parts
                    .into_iter()
                    .map(flatten)
                    .flat_map(|p| match p {
                        CaptureFilter::And(inner) => inner,
                        other => vec![other],
                    })
                    .collect(),
            ),
            CaptureFilter::Or(parts) => CaptureFilter::Or(
                parts
                    .into_iter()
                    .map(flatten)
                    .flat_map(|p| match p {
                        CaptureFilter::Or(inner) => inner,
                        other => vec![other],
                    })
                    .collect(),
            ),
            CaptureFilter::Not(part) => CaptureFilter::Not(Box::new(flatten(*part))),
            other => other,
        }
    }
}
