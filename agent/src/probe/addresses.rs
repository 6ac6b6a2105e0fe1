//! IP addresses: IPv6 from `proc/net/if_inet6`, IPv4 from `proc/net/fib_trie`
//! attributed through `proc/net/route` (the heuristic and its limits are in
//! the module header of [`super`]).

use std::collections::{BTreeSet, HashMap};
use std::net::{Ipv4Addr, Ipv6Addr};

use super::lex::{bad, dec_u64, hex_u32, valid_ifname};
use super::source::{Fetched, FILE_LIMIT, TABLE_LIMIT};
use super::{HostProbe, Parsed, ProbeError};

/// One line of `proc/net/if_inet6`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inet6Entry {
    /// The address.
    pub addr: Ipv6Addr,
    /// Interface index.
    pub ifindex: u32,
    /// Prefix length, 0 to 128.
    pub prefix_len: u8,
    /// Scope (`0x00` global, `0x10` host, `0x20` link, ...).
    pub scope: u32,
    /// `IFA_F_*` flags (`0x80` permanent, `0x40` tentative, ...).
    pub flags: u32,
    /// Interface name.
    pub ifname: String,
}

/// Parses `proc/net/if_inet6`: per line, 32 hex digits of address, then
/// interface index, prefix length, scope and flags in hex, then the
/// interface name.
pub fn parse_if_inet6(text: &str) -> Parsed<Inet6Entry> {
    let mut parsed = Parsed::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match if_inet6_line(index + 1, line) {
            Ok(entry) => parsed.items.push(entry),
            Err(error) => parsed.skip(error),
        }
    }
    parsed
}

fn if_inet6_line(line: usize, text: &str) -> Result<Inet6Entry, ProbeError> {
    let mut fields = text.split_ascii_whitespace();
    let mut next = || fields.next().ok_or(ProbeError::Malformed { line, reason: "expected 6 fields" });
    let (addr, ifindex, prefix, scope, flags, ifname) = (next()?, next()?, next()?, next()?, next()?, next()?);
    if next().is_ok() {
        return Err(ProbeError::Malformed { line, reason: "expected 6 fields" });
    }
    if addr.len() != 32 || !addr.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad(line, "IPv6 address", addr));
    }
    let addr = u128::from_str_radix(addr, 16).map_err(|_| bad(line, "IPv6 address", addr))?;
    let prefix_len = hex_u32(prefix)
        .and_then(|p| u8::try_from(p).ok())
        .filter(|&p| p <= 128)
        .ok_or_else(|| bad(line, "prefix length", prefix))?;
    if !valid_ifname(ifname) {
        return Err(bad(line, "interface name", ifname));
    }
    Ok(Inet6Entry {
        addr: Ipv6Addr::from(addr),
        ifindex: hex_u32(ifindex).ok_or_else(|| bad(line, "interface index", ifindex))?,
        prefix_len,
        scope: hex_u32(scope).ok_or_else(|| bad(line, "scope", scope))?,
        flags: hex_u32(flags).ok_or_else(|| bad(line, "flags", flags))?,
        ifname: ifname.to_owned(),
    })
}

/// Parses `proc/net/fib_trie` into the local IPv4 addresses: each leaf
/// (`|-- a.b.c.d`) that carries a `/32 host LOCAL` alias line. Returned
/// sorted and without duplicates (an address appears once per table that
/// holds it, e.g. under both `Main:` and `Local:`).
///
/// The other line shapes are table headers (`Local:`, `Id 100:`) and inner
/// nodes (`+-- 10.0.0.0/8 2 0 2`); anything else is skipped as malformed.
pub fn parse_fib_trie(text: &str) -> Parsed<Ipv4Addr> {
    let mut parsed = Parsed::new();
    let mut found = BTreeSet::new();
    let mut leaf: Option<Ipv4Addr> = None;
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let trimmed = line.trim();
        if trimmed.is_empty() {
            continue;
        }
        if let Some(addr) = trimmed.strip_prefix("|-- ") {
            leaf = addr.trim().parse().ok();
            if leaf.is_none() {
                parsed.skip(bad(number, "leaf address", addr));
            }
        } else if let Some(alias) = trimmed.strip_prefix('/') {
            // `/32 host LOCAL`, possibly followed by ` tos=N`.
            let mut fields = alias.split_ascii_whitespace();
            let (len, scope, kind) = (fields.next(), fields.next(), fields.next());
            let Some(len) = len.and_then(dec_u64).filter(|&l| l <= 32) else {
                parsed.skip(bad(number, "prefix length", trimmed));
                continue;
            };
            if scope.is_none() || kind.is_none() {
                parsed.skip(ProbeError::Malformed { line: number, reason: "expected `/len scope type`" });
                continue;
            }
            let Some(addr) = leaf else {
                parsed.skip(ProbeError::Malformed { line: number, reason: "route type without a leaf address" });
                continue;
            };
            if len == 32 && scope == Some("host") && kind == Some("LOCAL") {
                found.insert(addr);
            }
        } else if trimmed.starts_with("+-- ") || trimmed.ends_with(':') {
            // An inner node or a table header: the next leaf starts afresh.
            leaf = None;
        } else {
            leaf = None;
            parsed.skip(ProbeError::Malformed { line: number, reason: "not a fib_trie line" });
        }
    }
    parsed.items = found.into_iter().collect();
    parsed
}

/// The byte order of the CPU whose kernel printed `proc/net/route`, which
/// prints each network-order address as a native-endian hex integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelByteOrder {
    /// x86, little-endian ARM and MIPS (`0001A8C0` is 192.168.1.0).
    Little,
    /// Big-endian MIPS and PowerPC (`C0A80100` is 192.168.1.0).
    Big,
}

impl KernelByteOrder {
    /// The byte order of the CPU this code runs on, and so of its kernel.
    pub const NATIVE: Self = if cfg!(target_endian = "big") { Self::Big } else { Self::Little };

    fn addr(self, raw: u32) -> Ipv4Addr {
        Ipv4Addr::from(match self {
            Self::Little => raw.to_le_bytes(),
            Self::Big => raw.to_be_bytes(),
        })
    }
}

/// One route of `proc/net/route` (the main table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipv4Route {
    /// Output interface; `*` for routes without one (e.g. unreachable).
    pub iface: String,
    /// Destination network.
    pub destination: Ipv4Addr,
    /// Next hop; 0.0.0.0 for a directly connected route.
    pub gateway: Ipv4Addr,
    /// `RTF_*` flags (`0x1` up, `0x2` gateway, `0x4` host, `0x200` reject).
    pub flags: u16,
    /// Route metric (priority).
    pub metric: u32,
    /// Network mask.
    pub mask: Ipv4Addr,
}

const RTF_UP: u16 = 0x0001;
const RTF_GATEWAY: u16 = 0x0002;
const RTF_REJECT: u16 = 0x0200;

/// Parses `proc/net/route`: a header line, then per route the interface,
/// destination, gateway, flags, refcount, use, metric, mask, MTU, window and
/// IRTT, tab-separated, addresses as 8 hex digits in the CPU's byte order.
pub fn parse_proc_net_route(text: &str, order: KernelByteOrder) -> Parsed<Ipv4Route> {
    let mut parsed = Parsed::new();
    for (index, line) in text.lines().enumerate() {
        let line_text = line.trim();
        if line_text.is_empty() || (index == 0 && line_text.starts_with("Iface")) {
            continue;
        }
        match route_line(index + 1, line_text, order) {
            Ok(route) => parsed.items.push(route),
            Err(error) => parsed.skip(error),
        }
    }
    parsed
}

fn route_line(line: usize, text: &str, order: KernelByteOrder) -> Result<Ipv4Route, ProbeError> {
    let fields: [&str; 8] = {
        let mut out = [""; 8];
        let mut it = text.split_ascii_whitespace();
        for slot in &mut out {
            *slot = it.next().ok_or(ProbeError::Malformed { line, reason: "expected at least 8 fields" })?;
        }
        out
    };
    let [iface, destination, gateway, flags, _refcnt, _use, metric, mask] = fields;
    if iface != "*" && !valid_ifname(iface) {
        return Err(bad(line, "interface name", iface));
    }
    let addr = |field: &'static str, text: &str| {
        (text.len() == 8)
            .then(|| hex_u32(text))
            .flatten()
            .map(|raw| order.addr(raw))
            .ok_or_else(|| bad(line, field, text))
    };
    // The kernel prints the metric with %d, so priorities above i32::MAX
    // appear negative; reinterpret them as the u32 they are.
    let metric = match metric.strip_prefix('-') {
        Some(magnitude) => dec_u64(magnitude).filter(|&m| m <= 1 << 31).map(|m| (m as u32).wrapping_neg()),
        None => dec_u64(metric).and_then(|m| u32::try_from(m).ok()),
    }
    .ok_or_else(|| bad(line, "metric", metric))?;
    Ok(Ipv4Route {
        iface: iface.to_owned(),
        destination: addr("destination", destination)?,
        gateway: addr("gateway", gateway)?,
        flags: hex_u32(flags).and_then(|f| u16::try_from(f).ok()).ok_or_else(|| bad(line, "flags", flags))?,
        metric,
        mask: addr("mask", mask)?,
    })
}

/// The interface a local address belongs to, by the heuristic in the module
/// header: `lo` for 127.0.0.0/8; otherwise the interface of the longest
/// directly connected route containing it (ties: lower metric, then earlier
/// line). `None` when no such route exists.
pub fn interface_for(addr: Ipv4Addr, routes: &[Ipv4Route]) -> Option<&str> {
    if addr.is_loopback() {
        return Some("lo");
    }
    let addr = u32::from(addr);
    let mut best: Option<(&Ipv4Route, u32)> = None;
    for route in routes {
        let mask = u32::from(route.mask);
        let destination = u32::from(route.destination);
        let connected = route.flags & RTF_UP != 0 && route.flags & (RTF_GATEWAY | RTF_REJECT) == 0;
        let contiguous = mask.leading_ones() + mask.trailing_zeros() == 32;
        if !connected
            || route.iface == "*"
            || mask == 0
            || !contiguous
            || destination & mask != destination
            || addr & mask != destination
            || route.destination.is_loopback()
        {
            continue;
        }
        let better = match best {
            None => true,
            Some((current, current_mask)) => {
                mask > current_mask || (mask == current_mask && route.metric < current.metric)
            }
        };
        if better {
            best = Some((route, mask));
        }
    }
    best.map(|(route, _)| route.iface.as_str())
}

impl HostProbe {
    /// IPv6 addresses by interface name, sorted, without duplicates.
    pub(super) fn ipv6_by_interface(&mut self) -> HashMap<String, Vec<Ipv6Addr>> {
        const KEY: &str = "proc/net/if_inet6";
        let path = self.path(KEY);
        let text = match self.fetch(KEY, &path, FILE_LIMIT) {
            Fetched::Text(text) => text,
            Fetched::Missing => {
                self.warn_missing(KEY, &[KEY], "IPv6 addresses unknown (IPv6 disabled?)");
                return HashMap::new();
            }
            Fetched::Failed => return HashMap::new(),
        };
        let parsed = parse_if_inet6(&text);
        self.warn_skipped(KEY, &path, &parsed);
        let mut out: HashMap<String, Vec<Ipv6Addr>> = HashMap::new();
        for entry in parsed.items {
            out.entry(entry.ifname).or_default().push(entry.addr);
        }
        for list in out.values_mut() {
            list.sort_unstable();
            list.dedup();
        }
        out
    }

    /// IPv4 addresses by interface name, sorted, without duplicates.
    pub(super) fn ipv4_by_interface(&mut self) -> HashMap<String, Vec<Ipv4Addr>> {
        const TRIE: &str = "proc/net/fib_trie";
        const ROUTE: &str = "proc/net/route";
        let path = self.path(TRIE);
        let local = match self.fetch(TRIE, &path, TABLE_LIMIT) {
            Fetched::Text(text) => {
                let parsed = parse_fib_trie(&text);
                self.warn_skipped(TRIE, &path, &parsed);
                parsed.items
            }
            Fetched::Missing => {
                self.warn_missing(TRIE, &[TRIE], "IPv4 addresses unknown");
                return HashMap::new();
            }
            Fetched::Failed => return HashMap::new(),
        };
        let path = self.path(ROUTE);
        let routes = match self.fetch(ROUTE, &path, TABLE_LIMIT) {
            Fetched::Text(text) => {
                let parsed = parse_proc_net_route(&text, self.route_byte_order);
                self.warn_skipped(ROUTE, &path, &parsed);
                parsed.items
            }
            Fetched::Missing => {
                self.warn_missing(ROUTE, &[ROUTE], "IPv4 addresses other than loopback unattributed");
                Vec::new()
            }
            Fetched::Failed => Vec::new(),
        };
        let mut out: HashMap<String, Vec<Ipv4Addr>> = HashMap::new();
        // `local` is sorted and unique, so each list is too.
        for addr in local {
            match interface_for(addr, &routes) {
                Some(iface) => out.entry(iface.to_owned()).or_default().push(addr),
                None => tracing::debug!(%addr, "local IPv4 address has no connected route"),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTE: &str = "\
Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT                                                       
eth0\t00000000\t016433C6\t0003\t0\t0\t0\t00000000\t0\t0\t0                                                                               
br-lan\t0001A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0                                                                             
eth0\t006433C6\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0                                                                               
";

    fn ip(text: &str) -> Ipv4Addr {
        text.parse().unwrap()
    }

    #[test]
    fn route_table_decodes_native_order() {
        let parsed = parse_proc_net_route(ROUTE, KernelByteOrder::Little);
        assert_eq!(parsed.skipped, 0, "{:?}", parsed.first_error);
        assert_eq!(parsed.items.len(), 3);
        let default = &parsed.items[0];
        assert_eq!(default.gateway, ip("198.51.100.1"));
        assert_eq!(default.flags, RTF_UP | RTF_GATEWAY);
        assert_eq!(parsed.items[1].destination, ip("192.168.1.0"));
        assert_eq!(parsed.items[1].mask, ip("255.255.255.0"));

        // The same table as a big-endian MIPS kernel prints it.
        let big = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                   br-lan\tC0A80100\t00000000\t0001\t0\t0\t-1\tFFFFFF00\t0\t0\t0\n";
        let parsed = parse_proc_net_route(big, KernelByteOrder::Big);
        assert_eq!(parsed.items[0].destination, ip("192.168.1.0"));
        assert_eq!(parsed.items[0].mask, ip("255.255.255.0"));
        assert_eq!(parsed.items[0].metric, u32::MAX);
    }

    #[test]
    fn route_bad_lines_are_skipped() {
        let text = format!(
            "{ROUTE}eth1\t0001A8C\t00000000\t0001\t0\t0\t0\t00FFFFFF\n\
             eth1\t0001A8C0\t00000000\n\
             eth1\t+001A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\n\
             eth1\t0001A8C0\t00000000\t10001\t0\t0\t0\t00FFFFFF\n"
        );
        let parsed = parse_proc_net_route(&text, KernelByteOrder::Little);
        assert_eq!(parsed.items.len(), 3);
        assert_eq!(parsed.skipped, 4);
    }

    #[test]
    fn addresses_attach_to_the_longest_connected_route() {
        let mut routes = parse_proc_net_route(ROUTE, KernelByteOrder::Little).items;
        assert_eq!(interface_for(ip("192.168.1.1"), &routes), Some("br-lan"));
        assert_eq!(interface_for(ip("198.51.100.23"), &routes), Some("eth0"));
        assert_eq!(interface_for(ip("127.0.0.1"), &routes), Some("lo"));
        // Only the default route covers it: not attributed.
        assert_eq!(interface_for(ip("10.9.9.9"), &routes), None);
        // A more specific connected route wins over the /24.
        routes.push(Ipv4Route {
            iface: "wg0".into(),
            destination: ip("192.168.1.0"),
            gateway: Ipv4Addr::UNSPECIFIED,
            flags: RTF_UP,
            metric: 0,
            mask: ip("255.255.255.128"),
        });
        assert_eq!(interface_for(ip("192.168.1.1"), &routes), Some("wg0"));
        assert_eq!(interface_for(ip("192.168.1.200"), &routes), Some("br-lan"));
        // A 127/8 route on another interface is never used; nor is a gateway,
        // reject or non-contiguous route.
        for (iface, dest, flags, mask) in [
            ("eth9", "127.0.0.0", RTF_UP, "255.0.0.0"),
            ("eth9", "10.9.0.0", RTF_UP | RTF_GATEWAY, "255.255.0.0"),
            ("eth9", "10.9.0.0", RTF_UP | RTF_REJECT, "255.255.0.0"),
            ("eth9", "10.9.0.0", 0, "255.255.0.0"),
            ("eth9", "10.0.0.0", RTF_UP, "255.0.255.0"),
        ] {
            routes.push(Ipv4Route {
                iface: iface.into(),
                destination: ip(dest),
                gateway: Ipv4Addr::UNSPECIFIED,
                flags,
                metric: 0,
                mask: ip(mask),
            });
        }
        assert_eq!(interface_for(ip("10.9.9.9"), &routes), None);
        assert_eq!(interface_for(ip("127.0.0.2"), &routes), Some("lo"));
    }

    #[test]
    fn fib_trie_local_addresses() {
        let text = "\
Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 192.168.1.0/24 2 0 2
        |-- 192.168.1.0
           /24 link UNICAST
        |-- 192.168.1.1
           /32 host LOCAL
        |-- 192.168.1.255
           /32 link BROADCAST
Local:
  +-- 0.0.0.0/0 3 0 5
        |-- 192.168.1.1
           /32 host LOCAL
        |-- 10.0.0.5
           /24 link UNICAST tos=4
           /32 host LOCAL
     |-- 127.0.0.1
        /32 host LOCAL
Id 100:
  +-- 172.16.0.0/12 2 0 2
     |-- 172.16.0.9
        /32 host LOCAL
";
        let parsed = parse_fib_trie(text);
        assert_eq!(parsed.skipped, 0, "{:?}", parsed.first_error);
        assert_eq!(parsed.items, [ip("10.0.0.5"), ip("127.0.0.1"), ip("172.16.0.9"), ip("192.168.1.1")]);
    }

    #[test]
    fn fib_trie_garbage_and_orphans() {
        let text = "Local:\n  +-- 0.0.0.0/0 3 0 5\n     /32 host LOCAL\n     |-- 999.1.1.1\n        /32 host LOCAL\n\
                    garbage\n     |-- 10.0.0.1\n        /99 host LOCAL\n        /32\n        /32 host LOCAL\n";
        let parsed = parse_fib_trie(text);
        assert_eq!(parsed.items, [ip("10.0.0.1")]);
        assert_eq!(parsed.skipped, 6);
    }

    #[test]
    fn if_inet6_lines() {
        let text = "\
fe800000000000009683c4fffe12ab00 04 40 20 80   br-lan
00000000000000000000000000000001 01 80 10 80       lo
fd123456789a00000000000000000001 1a4 3c 00 80   br-lan
fd12 04 40 20 80 br-lan
fd123456789a00000000000000000001 04 81 00 80   br-lan
fd123456789a00000000000000000001 04 40 00 80
fd123456789a0000000000000000000g 04 40 00 80   br-lan
fd123456789a00000000000000000001 04 40 00 80   br-lan extra
";
        let parsed = parse_if_inet6(text);
        assert_eq!(parsed.items.len(), 3);
        assert_eq!(parsed.skipped, 5);
        let e = &parsed.items[2];
        assert_eq!(e.addr, "fd12:3456:789a::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!((e.ifindex, e.prefix_len, e.scope, e.flags), (0x1a4, 60, 0, 0x80));
        assert_eq!(e.ifname, "br-lan");
        assert_eq!(parsed.items[1].addr, Ipv6Addr::LOCALHOST);
    }
}
