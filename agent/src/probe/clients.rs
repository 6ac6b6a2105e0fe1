//! Where a device learns its clients' addresses and names: the kernel's ARP
//! table and DHCP server lease files (dnsmasq, which OpenWrt runs, and ISC
//! dhcpd).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

use glimpse_common::record::{MacAddr, MAX_TEXT};

use super::lex::{bad, dec_u64, hex_u32, printable, valid_ifname};
use super::{Parsed, ProbeError};

/// Most ARP entries kept.
pub const MAX_ARP_ENTRIES: usize = 4096;
/// Most leases kept from one file.
pub const MAX_LEASES: usize = 4096;

/// One row of `/proc/net/arp`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArpEntry {
    /// The neighbour's address.
    pub ip: Ipv4Addr,
    /// Its hardware address.
    pub mac: MacAddr,
    /// The interface it was seen on.
    pub interface: String,
    /// Whether the entry is complete (`ATF_COM`, flag 0x2): incomplete ones
    /// hold no real MAC.
    pub complete: bool,
}

/// Parses `/proc/net/arp`.
pub fn parse_proc_net_arp(text: &str) -> Parsed<ArpEntry> {
    let mut parsed = Parsed::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        if line.starts_with("IP address") || line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split_ascii_whitespace().collect();
        let [ip, _hw_type, flags, mac, _mask, device] = fields.as_slice() else {
            parsed.skip(ProbeError::Malformed { line: number, reason: "expected 6 columns" });
            continue;
        };
        let Ok(ip) = ip.parse::<Ipv4Addr>() else {
            parsed.skip(bad(number, "IP address", ip));
            continue;
        };
        let Some(flags) = flags.strip_prefix("0x").and_then(hex_u32) else {
            parsed.skip(bad(number, "flags", flags));
            continue;
        };
        let Ok(mac) = mac.parse::<MacAddr>() else {
            parsed.skip(bad(number, "HW address", mac));
            continue;
        };
        if !valid_ifname(device) {
            parsed.skip(bad(number, "device", device));
            continue;
        }
        let entry = ArpEntry { ip, mac, interface: (*device).to_owned(), complete: flags & 0x2 != 0 };
        parsed.push_bounded(entry, MAX_ARP_ENTRIES, number);
    }
    parsed
}

/// A DHCP lease, from either server's file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The leased address.
    pub ip: IpAddr,
    /// The client's MAC (`None` for DHCPv6 leases, which name a DUID).
    pub mac: Option<MacAddr>,
    /// The hostname the client sent.
    pub hostname: Option<String>,
    /// Its vendor class (DHCP option 60), where the server records it.
    pub vendor_class: Option<String>,
    /// When the lease ends, Unix seconds (dnsmasq writes 0 for never).
    pub expires_unix: Option<u64>,
}

/// A free-text value of a lease: printable, bounded, `*` for none.
fn lease_text(
    number: usize,
    field: &'static str,
    value: &str,
    parsed_error: &mut Option<ProbeError>,
) -> Option<String> {
    if value.is_empty() || value == "*" {
        return None;
    }
    if !printable(value) || value.len() > MAX_TEXT {
        parsed_error.get_or_insert(bad(number, field, value));
        return None;
    }
    Some(value.to_owned())
}

/// Parses dnsmasq's lease file: `EXPIRY MAC IP HOSTNAME CLIENT-ID` per
/// line; DHCPv6 lines carry an IAID where the MAC goes, after a `duid` line.
pub fn parse_dnsmasq_leases(text: &str) -> Parsed<Lease> {
    let mut parsed = Parsed::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let fields: Vec<&str> = line.split_ascii_whitespace().collect();
        if fields.is_empty() || fields[0] == "duid" {
            continue;
        }
        if fields.len() < 4 {
            parsed.skip(ProbeError::Malformed { line: number, reason: "expected expiry, MAC, address, hostname" });
            continue;
        }
        let Some(expires) = dec_u64(fields[0]) else {
            parsed.skip(bad(number, "expiry", fields[0]));
            continue;
        };
        let Ok(ip) = fields[2].parse::<IpAddr>() else {
            parsed.skip(bad(number, "address", fields[2]));
            continue;
        };
        // IPv6 leases hold an IAID; other hardware types longer addresses.
        let mac = fields[1].parse::<MacAddr>().ok();
        if mac.is_none() && ip.is_ipv4() {
            parsed.skip(bad(number, "MAC", fields[1]));
        }
        let mut error = None;
        let hostname = lease_text(number, "hostname", fields[3], &mut error);
        if let Some(error) = error {
            parsed.skip(error);
        }
        let lease = Lease { ip, mac, hostname, vendor_class: None, expires_unix: Some(expires) };
        parsed.push_bounded(lease, MAX_LEASES, number);
    }
    parsed
}

/// Longest ISC lease block read; real ones are well under 1 KiB.
const MAX_ISC_BLOCK: usize = 16 * 1024;

/// Parses ISC dhcpd's `dhcpd.leases`: `lease ADDRESS { ...; }` blocks,
/// appended as leases change, so the last block for an address wins. Only
/// active leases are returned; a block cut off at the end of the file (the
/// server is writing) is dropped.
pub fn parse_isc_dhcpd_leases(text: &str) -> Parsed<Lease> {
    let mut parsed = Parsed::new();
    let mut by_ip: HashMap<IpAddr, usize> = HashMap::new();
    let mut leases: Vec<Option<Lease>> = Vec::new();
    let mut tokens = Tokens::new(text);
    while let Some((line, token)) = tokens.next() {
        if token != "lease" {
            // Top-level statements (`server-duid ...;`, `failover peer ... {`)
            // are skipped to their end.
            tokens.skip_statement(&token);
            continue;
        }
        let Some((_, address)) = tokens.next() else { break };
        let Some((_, open)) = tokens.next() else { break };
        let Ok(ip) = address.parse::<IpAddr>() else {
            parsed.skip(bad(line, "lease address", &address));
            if open == "{" {
                tokens.skip_block();
            }
            continue;
        };
        if open != "{" {
            parsed.skip(ProbeError::Malformed { line, reason: "expected `{` after the lease address" });
            continue;
        }
        let Some(statements) = tokens.block_statements() else {
            // Unterminated: the server is still writing it.
            break;
        };
        let mut lease = Lease { ip, mac: None, hostname: None, vendor_class: None, expires_unix: None };
        let mut active = false;
        let mut error = None;
        for (number, words) in statements {
            let word = |i: usize| words.get(i).map(String::as_str).unwrap_or("");
            match (word(0), word(1)) {
                ("binding", "state") => active = word(2) == "active",
                ("hardware", "ethernet") => match word(2).parse::<MacAddr>() {
                    Ok(mac) => lease.mac = Some(mac),
                    Err(_) => error = error.or(Some(bad(number, "hardware ethernet", word(2)))),
                },
                ("client-hostname", _) => lease.hostname = lease_text(number, "client-hostname", word(1), &mut error),
                ("ends", "never") => lease.expires_unix = None,
                ("ends", _) => match isc_time(word(2), word(3)) {
                    Some(t) => lease.expires_unix = Some(t),
                    None => error = error.or(Some(bad(number, "ends", word(2)))),
                },
                ("set", "vendor-class-identifier") if word(2) == "=" => {
                    lease.vendor_class = lease_text(number, "vendor-class-identifier", word(3), &mut error);
                }
                ("option", "vendor-class-identifier") => {
                    lease.vendor_class = lease_text(number, "vendor-class-identifier", word(2), &mut error);
                }
                _ => {}
            }
        }
        if let Some(error) = error {
            parsed.skip(error);
        }
        let slot = if active { Some(lease) } else { None };
        match by_ip.get(&ip) {
            // A later block supersedes: the old position is emptied and the
            // lease moves to the end, in order of last appearance.
            Some(&at) => {
                leases[at] = None;
                by_ip.insert(ip, leases.len());
                leases.push(slot);
            }
            None if by_ip.len() < MAX_LEASES => {
                by_ip.insert(ip, leases.len());
                leases.push(slot);
            }
            None => parsed.skip(ProbeError::Malformed { line, reason: "over the entry limit; dropped" }),
        }
    }
    parsed.items.extend(leases.into_iter().flatten());
    parsed
}

/// `2026/11/19` `22:00:00;` (UTC) as Unix seconds.
fn isc_time(date: &str, time: &str) -> Option<u64> {
    let mut d = date.split('/');
    let (year, month, day) = (dec_u64(d.next()?)?, dec_u64(d.next()?)?, dec_u64(d.next()?)?);
    let mut t = time.trim_end_matches(';').split(':');
    let (hour, minute, second) = (dec_u64(t.next()?)?, dec_u64(t.next()?)?, dec_u64(t.next()?)?);
    if d.next().is_some() || t.next().is_some() || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    if !(1970..=9999).contains(&year) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's
/// algorithm), for years from 1970.
fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe).saturating_sub(719_468)
}

/// Tokens of the ISC lease file: words, quoted strings (unescaped), `{`,
/// `}` and `;`, with `#` comments dropped; each with its line number.
struct Tokens<'a> {
    bytes: &'a [u8],
    at: usize,
    line: usize,
}

impl<'a> Tokens<'a> {
    fn new(text: &'a str) -> Self {
        Self { bytes: text.as_bytes(), at: 0, line: 1 }
    }

    fn next(&mut self) -> Option<(usize, String)> {
        loop {
            let &b = self.bytes.get(self.at)?;
            match b {
                b'\n' => {
                    self.line += 1;
                    self.at += 1;
                }
                b'#' => {
                    while self.bytes.get(self.at).is_some_and(|&b| b != b'\n') {
                        self.at += 1;
                    }
                }
                b if b.is_ascii_whitespace() => self.at += 1,
                b'{' | b'}' | b';' => {
                    self.at += 1;
                    return Some((self.line, (b as char).to_string()));
                }
                b'"' => return Some(self.quoted()),
                _ => {
                    let start = self.at;
                    while self
                        .bytes
                        .get(self.at)
                        .is_some_and(|&b| !b.is_ascii_whitespace() && !matches!(b, b'{' | b'}' | b';' | b'"'))
                    {
                        self.at += 1;
                    }
                    let word = String::from_utf8_lossy(&self.bytes[start..self.at]).into_owned();
                    return Some((self.line, word));
                }
            }
        }
    }

    /// A quoted string: `\"`, `\\` and octal `\NNN` escapes; bytes that are
    /// not UTF-8 are replaced. Its length is bounded so a missing closing
    /// quote cannot build a huge token.
    fn quoted(&mut self) -> (usize, String) {
        let line = self.line;
        self.at += 1;
        let mut out = Vec::new();
        while let Some(&b) = self.bytes.get(self.at) {
            self.at += 1;
            match b {
                b'"' => break,
                b'\\' => {
                    let digits: Vec<u8> = self.bytes[self.at..]
                        .iter()
                        .take(3)
                        .take_while(|b| (b'0'..=b'7').contains(b))
                        .copied()
                        .collect();
                    if digits.len() == 3 {
                        let value = digits.iter().fold(0u32, |v, d| v * 8 + u32::from(d - b'0'));
                        out.push(value as u8);
                        self.at += 3;
                    } else if let Some(&escaped) = self.bytes.get(self.at) {
                        out.push(escaped);
                        self.at += 1;
                    }
                }
                b'\n' => {
                    self.line += 1;
                    out.push(b);
                }
                _ => out.push(b),
            }
            if out.len() > MAX_ISC_BLOCK {
                break;
            }
        }
        (line, String::from_utf8_lossy(&out).into_owned())
    }

    /// Skips to the end of a statement that began with `first`: its `;`,
    /// or its block.
    fn skip_statement(&mut self, first: &str) {
        match first {
            ";" | "}" => {}
            "{" => self.skip_block(),
            _ => {
                while let Some((_, token)) = self.next() {
                    match token.as_str() {
                        ";" => return,
                        "{" => return self.skip_block(),
                        _ => {}
                    }
                }
            }
        }
    }

    /// Skips the rest of a block whose `{` was just read.
    fn skip_block(&mut self) {
        let mut depth = 1usize;
        while let Some((_, token)) = self.next() {
            match token.as_str() {
                "{" => depth += 1,
                "}" => {
                    depth -= 1;
                    if depth == 0 {
                        return;
                    }
                }
                _ => {}
            }
        }
    }

    /// The statements of a block whose `{` was just read, each as its words
    /// with the line it started on; `None` if the block never closes.
    fn block_statements(&mut self) -> Option<Vec<(usize, Vec<String>)>> {
        let start = self.at;
        let mut statements = Vec::new();
        let mut words: Vec<String> = Vec::new();
        let mut first_line = self.line;
        loop {
            let (line, token) = self.next()?;
            if self.at - start > MAX_ISC_BLOCK {
                // Not a lease block anyone wrote: leave it.
                self.skip_block();
                return Some(Vec::new());
            }
            match token.as_str() {
                "}" => return Some(statements),
                ";" => {
                    if !words.is_empty() {
                        statements.push((first_line, std::mem::take(&mut words)));
                    }
                }
                "{" => self.skip_block(),
                _ => {
                    if words.is_empty() {
                        first_line = line;
                    }
                    if words.len() < 16 {
                        words.push(token);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ARP: &str = include_str!("../../tests/fixtures/probe/commands/proc-net-arp.txt");
    const DNSMASQ: &str = include_str!("../../tests/fixtures/probe/commands/dnsmasq.leases");
    const ISC: &str = include_str!("../../tests/fixtures/probe/commands/dhcpd.leases");

    #[test]
    fn arp_table() {
        let parsed = parse_proc_net_arp(ARP);
        assert_eq!(parsed.skipped, 0, "{:?}", parsed.first_error);
        assert_eq!(parsed.items.len(), 4);
        let first = &parsed.items[0];
        assert_eq!(
            (first.ip.to_string().as_str(), first.mac.to_string().as_str()),
            ("192.168.1.23", "3c:22:fb:aa:bb:01")
        );
        assert_eq!((first.interface.as_str(), first.complete), ("br-lan", true));
        assert!(!parsed.items[2].complete, "flags 0x0: still resolving");
        let broken = parse_proc_net_arp(&format!("{ARP}10.0.0.1 0x1 0x2 zz:00:00:00:00:00 * eth0\nshort line\n"));
        assert_eq!((broken.items.len(), broken.skipped), (4, 2));
    }

    #[test]
    fn dnsmasq_leases_v4_and_v6() {
        let parsed = parse_dnsmasq_leases(DNSMASQ);
        assert_eq!(parsed.skipped, 0, "{:?}", parsed.first_error);
        assert_eq!(parsed.items.len(), 4);
        let alice = &parsed.items[0];
        assert_eq!(alice.hostname.as_deref(), Some("alice-laptop"));
        assert_eq!(
            (alice.expires_unix, alice.mac.unwrap().to_string()),
            (Some(1_764_000_000), "3c:22:fb:aa:bb:01".to_owned())
        );
        assert_eq!(parsed.items[1].hostname, None, "* is no hostname");
        assert_eq!(parsed.items[2].expires_unix, Some(0), "infinite lease");
        let v6 = &parsed.items[3];
        assert_eq!((v6.ip.to_string().as_str(), v6.mac), ("fd00::23", None));
    }

    #[test]
    fn isc_leases_last_block_wins_and_only_active_ones() {
        let parsed = parse_isc_dhcpd_leases(ISC);
        assert_eq!(parsed.skipped, 0, "{:?}", parsed.first_error);
        let ips: Vec<String> = parsed.items.iter().map(|l| l.ip.to_string()).collect();
        assert_eq!(ips, ["192.168.1.60", "192.168.1.41"], "freed .50 dropped; .41 renewed last");
        let bob = &parsed.items[1];
        assert_eq!(bob.hostname.as_deref(), Some("Pixel-8"));
        assert_eq!(bob.vendor_class.as_deref(), Some("android-dhcp-14"));
        assert_eq!(bob.expires_unix, Some(1_764_018_721), "2025/11/24 21:12:01 UTC");
        let iot = &parsed.items[0];
        assert_eq!((iot.vendor_class.as_deref(), iot.expires_unix), (Some("udhcp 1.36.1; \"quoted\" {x}"), None));
    }

    #[test]
    fn isc_edge_cases() {
        // Cut while the server writes: earlier blocks stay.
        let cut = &ISC[..ISC.rfind("hardware").unwrap()];
        let parsed = parse_isc_dhcpd_leases(cut);
        let bob = parsed.items.iter().find(|l| l.ip.to_string() == "192.168.1.41").unwrap();
        assert_eq!(
            (bob.hostname.as_deref(), bob.vendor_class.as_deref()),
            (Some("Pixel-8"), None),
            "the earlier block holds"
        );
        let bad = parse_isc_dhcpd_leases("lease 999.1.1.1 {\n binding state active;\n}\nlease 10.0.0.1 {\n binding state active;\n hardware ethernet 02:00:00:00:00:09;\n}\n");
        assert_eq!((bad.items.len(), bad.skipped), (1, 1));
        assert_eq!(isc_time("1970/01/01", "00:00:00;"), Some(0));
        assert_eq!(isc_time("2000/03/01", "00:00:00;"), Some(951_868_800));
        assert_eq!(isc_time("2026/13/01", "00:00:00;"), None);
        assert!(parse_isc_dhcpd_leases("").items.is_empty());
        assert!(parse_dnsmasq_leases("").items.is_empty() && parse_proc_net_arp("").items.is_empty());
    }

    #[test]
    fn lists_are_bounded() {
        let many: String = (0..MAX_LEASES + 3)
            .map(|i| format!("0 02:00:00:00:{:02x}:{:02x} 10.0.{}.{} h *\n", i / 256, i % 256, i / 256, i % 256))
            .collect();
        let parsed = parse_dnsmasq_leases(&many);
        assert_eq!((parsed.items.len(), parsed.skipped), (MAX_LEASES, 3));
        let blocks: String = (0..MAX_LEASES + 3)
            .map(|i| format!("lease 10.1.{}.{} {{ binding state active; }}\n", i / 256, i % 256))
            .collect();
        assert_eq!(parse_isc_dhcpd_leases(&blocks).items.len(), MAX_LEASES);
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,400}") {
            prop_assert!(parse_proc_net_arp(&text).items.len() <= MAX_ARP_ENTRIES);
            prop_assert!(parse_dnsmasq_leases(&text).items.len() <= MAX_LEASES);
            for lease in parse_isc_dhcpd_leases(&text).items {
                prop_assert!(lease.hostname.map_or(0, |h| h.len()) <= MAX_TEXT);
            }
        }

        #[test]
        fn cut_fixtures_never_panic(at in 0usize..2000, junk in "[ -~\\n{};\"\\\\]{0,40}") {
            for fixture in [ARP, DNSMASQ, ISC] {
                let end = at.min(fixture.len());
                let text = format!("{}{junk}", &fixture[..end]);
                let _ = parse_proc_net_arp(&text);
                let _ = parse_dnsmasq_leases(&text);
                let _ = parse_isc_dhcpd_leases(&text);
            }
        }
    }
}
