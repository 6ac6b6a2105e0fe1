//! Network interfaces: names, link state, MTU, hardware address, counters.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::io;

use glimpse_common::bounded::BoundedString;
use glimpse_common::record::{InterfaceStats, MacAddr, MAX_INTERFACES};

use super::lex::{bad, dec_u64, valid_ifname};
use super::source::{Fetched, Issue, FILE_LIMIT, VALUE_LIMIT};
use super::{HostProbe, InterfaceMap, Parsed, ProbeError};

/// The files of `sys/class/net/<if>/statistics`, in
/// [`InterfaceStats::counters`] order.
const SYSFS_COUNTER_FILES: [&str; 8] =
    ["rx_bytes", "rx_packets", "rx_errors", "rx_dropped", "tx_bytes", "tx_packets", "tx_errors", "tx_dropped"];

/// Columns of a `proc/net/dev` line after the name: eight receive counters
/// (bytes packets errs drop fifo frame compressed multicast), then eight
/// transmit counters (bytes packets errs drop fifo colls carrier compressed).
const NET_DEV_COLUMNS: usize = 16;

/// Parses `proc/net/dev` into interfaces with their names and counters set
/// (and nothing else: the rest comes from sysfs).
///
/// The two header lines (recognised by their `|`) are skipped. Each other
/// line is `name:` and 16 decimal counters; the kernel right-aligns names to
/// six characters and does not put a space after the colon when the first
/// counter is wide (`  eth0:4823915023 ...`), so the line is split at the
/// colon, which interface names cannot contain. Lines with fewer than 16
/// counters (a file cut mid-line) or non-numeric ones are skipped.
pub fn parse_proc_net_dev(text: &str) -> Parsed<InterfaceStats> {
    let mut parsed = Parsed::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        if line.trim().is_empty() || line.contains('|') {
            continue;
        }
        let Some((name, rest)) = line.split_once(':') else {
            parsed.skip(ProbeError::Malformed { line: number, reason: "expected `name: counters`" });
            continue;
        };
        let name = name.trim();
        if !valid_ifname(name) {
            parsed.skip(bad(number, "interface name", name));
            continue;
        }
        let mut columns = [0u64; NET_DEV_COLUMNS];
        let mut count = 0;
        let mut error = None;
        for field in rest.split_ascii_whitespace() {
            let Some(value) = dec_u64(field) else {
                error = Some(bad(number, "counter", field));
                break;
            };
            if let Some(slot) = columns.get_mut(count) {
                *slot = value;
            }
            // Later kernels may append columns; the first 16 keep their meaning.
            count += 1;
        }
        if let Some(error) = error {
            parsed.skip(error);
            continue;
        }
        if count < NET_DEV_COLUMNS {
            parsed.skip(ProbeError::Malformed { line: number, reason: "fewer than 16 counters" });
            continue;
        }
        let c = columns;
        let mut stats = InterfaceStats { name: BoundedString::truncating(name), ..InterfaceStats::default() };
        stats.set_counters([c[0], c[1], c[2], c[3], c[8], c[9], c[10], c[11]]);
        parsed.items.push(stats);
    }
    parsed
}

/// Parses `sys/class/net/<if>/address`.
///
/// `None` for an interface without a MAC-48: no hardware address (`tun`),
/// all zeros (`lo`), or one of another length (4 bytes for IP tunnels, 20
/// for InfiniBand). An error only for text that is not an address at all.
pub fn parse_mac(text: &str) -> Result<Option<MacAddr>, ProbeError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let mut mac = [0u8; 6];
    let mut count = 0;
    for part in text.split(':') {
        let byte = (part.len() == 2)
            .then(|| u8::from_str_radix(part, 16).ok())
            .flatten()
            .ok_or_else(|| bad(0, "hardware address", text))?;
        if let Some(slot) = mac.get_mut(count) {
            *slot = byte;
        }
        count += 1;
        if count > 32 {
            return Err(bad(0, "hardware address", text));
        }
    }
    if count != 6 || mac == [0; 6] {
        return Ok(None);
    }
    Ok(Some(MacAddr(mac)))
}

/// Parses `sys/class/net/<if>/operstate`: whether the link is `up`. The
/// RFC 2863 states the kernel prints are accepted; anything else is an error.
/// `lo` and many tunnels report `unknown`, which is not up.
pub fn parse_operstate(text: &str) -> Result<bool, ProbeError> {
    match text.trim() {
        "up" => Ok(true),
        "unknown" | "notpresent" | "down" | "lowerlayerdown" | "testing" | "dormant" => Ok(false),
        "" => Err(ProbeError::Empty),
        other => Err(bad(0, "operstate", other)),
    }
}

/// Parses a single decimal sysfs value such as `mtu` or
/// `statistics/rx_bytes`.
pub fn parse_sysfs_number(text: &str) -> Result<u64, ProbeError> {
    let value = text.trim();
    if value.is_empty() {
        return Err(ProbeError::Empty);
    }
    dec_u64(value).ok_or_else(|| bad(0, "number", value))
}

impl HostProbe {
    /// Every interface, without addresses: from `sys/class/net`, or from
    /// `proc/net/dev` when there is no sysfs.
    pub(super) fn interface_stats(&mut self) -> InterfaceMap {
        let mut proc_net_dev = None;
        let mut found = InterfaceMap::new();
        match self.sysfs_names() {
            Some(names) => {
                for name in names {
                    if let Some(stats) = self.sysfs_interface(&name, &mut proc_net_dev) {
                        found.insert(name, stats);
                    }
                }
            }
            None => {
                let interfaces = self.proc_net_dev();
                let total = interfaces.len();
                for (name, stats) in interfaces {
                    found.insert(name, stats);
                    if found.len() > MAX_INTERFACES {
                        found.pop_last();
                    }
                }
                self.warn_too_many("proc/net/dev", total);
            }
        }
        found
    }

    /// Interface directories in `sys/class/net`, the first [`MAX_INTERFACES`]
    /// by name. `None` when there is no readable `sys/class/net`.
    fn sysfs_names(&mut self) -> Option<BTreeSet<String>> {
        const KEY: &str = "sys/class/net";
        let dir = self.path(KEY);
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) => {
                if e.kind() == io::ErrorKind::NotFound {
                    self.warn_missing(KEY, &[KEY], "link state, MTU and MAC unknown; interfaces from proc/net/dev");
                } else if self.first_time(KEY, Issue::Unreadable) {
                    let error = ProbeError::Unreadable(e);
                    tracing::warn!(path = %dir.display(), "{error}; interfaces from proc/net/dev");
                }
                return None;
            }
        };
        let mut names = BTreeSet::new();
        let mut total = 0usize;
        for entry in entries.flatten() {
            let file_name = entry.file_name();
            let Some(name) = file_name.to_str().filter(|name| valid_ifname(name)) else {
                let error = bad(0, "interface name", &file_name.to_string_lossy());
                self.warn_malformed(KEY, &dir, &error);
                continue;
            };
            // `bonding_masters` and the like are files, not interfaces.
            if !entry.path().is_dir() {
                continue;
            }
            total += 1;
            names.insert(name.to_owned());
            if names.len() > MAX_INTERFACES {
                names.pop_last();
            }
        }
        self.warn_too_many(KEY, total);
        Some(names)
    }

    fn warn_too_many(&mut self, key: &'static str, total: usize) {
        if total > MAX_INTERFACES {
            let path = self.path(key);
            self.warn_overflow(
                key,
                &path,
                format_args!("{total} interfaces; reporting the first {MAX_INTERFACES} by name"),
            );
        }
    }

    /// One interface from its sysfs directory; `None` if it vanished while
    /// being read.
    fn sysfs_interface(
        &mut self,
        name: &str,
        proc_net_dev: &mut Option<HashMap<String, InterfaceStats>>,
    ) -> Option<InterfaceStats> {
        let mut stats = InterfaceStats { name: BoundedString::truncating(name), ..Default::default() };
        stats.mac = self.attribute(name, "address", "sys/class/net/*/address", parse_mac)?.flatten();
        stats.oper_up =
            self.attribute(name, "operstate", "sys/class/net/*/operstate", parse_operstate)?.unwrap_or(false);
        stats.mtu = self
            .attribute(name, "mtu", "sys/class/net/*/mtu", |text| {
                let mtu = parse_sysfs_number(text)?;
                u32::try_from(mtu).map_err(|_| bad(0, "mtu", text.trim()))
            })?
            .unwrap_or(0);
        let counters = match self.sysfs_counters(name) {
            Some(counters) => Some(counters),
            None => proc_net_dev.get_or_insert_with(|| self.proc_net_dev()).get(name).map(InterfaceStats::counters),
        };
        stats.set_counters(counters.unwrap_or_default());
        Some(stats)
    }

    /// Reads and parses `sys/class/net/<name>/<file>`. The outer `None` means
    /// the interface itself is gone; the inner one that this attribute is
    /// missing or unusable (logged once per `key`).
    fn attribute<T>(
        &mut self,
        name: &str,
        file: &str,
        key: &'static str,
        parse: impl Fn(&str) -> Result<T, ProbeError>,
    ) -> Option<Option<T>> {
        let relative = format!("sys/class/net/{name}/{file}");
        let path = self.path(&relative);
        match self.fetch(key, &path, VALUE_LIMIT) {
            Fetched::Text(text) => match parse(&text) {
                Ok(value) => Some(Some(value)),
                Err(error) => {
                    self.warn_malformed(key, &path, &error);
                    Some(None)
                }
            },
            Fetched::Failed => Some(None),
            Fetched::Missing => {
                if !self.path(format!("sys/class/net/{name}")).is_dir() {
                    return None;
                }
                self.warn_missing(key, &[&relative], "interface attribute unknown");
                Some(None)
            }
        }
    }

    /// Counters from `sys/class/net/<name>/statistics`, or `None` to fall
    /// back to `proc/net/dev`.
    fn sysfs_counters(&mut self, name: &str) -> Option<[u64; 8]> {
        const KEY: &str = "sys/class/net/*/statistics";
        let dir = self.path(format!("sys/class/net/{name}/statistics"));
        if !dir.is_dir() {
            return None;
        }
        let mut values = [0u64; 8];
        for (slot, file) in values.iter_mut().zip(SYSFS_COUNTER_FILES) {
            let path = dir.join(file);
            match self.fetch(KEY, &path, VALUE_LIMIT) {
                Fetched::Text(text) => match parse_sysfs_number(&text) {
                    Ok(value) => *slot = value,
                    Err(error) => {
                        self.warn_malformed(KEY, &path, &error);
                        return None;
                    }
                },
                Fetched::Missing => {
                    let error = ProbeError::NotSet { field: file };
                    self.warn_malformed(KEY, &dir, &error);
                    return None;
                }
                Fetched::Failed => return None,
            }
        }
        Some(values)
    }

    /// Counters by interface from `proc/net/dev`.
    fn proc_net_dev(&mut self) -> HashMap<String, InterfaceStats> {
        const KEY: &str = "proc/net/dev";
        let path = self.path(KEY);
        match self.fetch(KEY, &path, FILE_LIMIT) {
            Fetched::Text(text) => {
                let parsed = parse_proc_net_dev(&text);
                self.warn_skipped(KEY, &path, &parsed);
                parsed.items.into_iter().map(|stats| (stats.name.as_str().to_owned(), stats)).collect()
            }
            Fetched::Missing => {
                self.warn_missing(KEY, &[KEY], "interface counters unknown");
                HashMap::new()
            }
            Fetched::Failed => HashMap::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NET_DEV: &str = "\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:    3193      29    0    0    0     0          0         0     3193      29    0    0    0     0       0          0
  eth0:4823915023 5120334    0   12    0     0          0      8810 912384721 3011876    1    2    0     0       0          0
peer-wan:     426       5    0    0    0     0          0         0      516       6    0    0    0     0       0          0
";

    #[test]
    fn proc_net_dev_columns() {
        let parsed = parse_proc_net_dev(NET_DEV);
        assert_eq!(parsed.skipped, 0, "{:?}", parsed.first_error);
        let names: Vec<_> = parsed.items.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["lo", "eth0", "peer-wan"]);
        assert_eq!(
            parsed.items[1],
            InterfaceStats {
                name: BoundedString::truncating("eth0"),
                rx_bytes: 4_823_915_023,
                rx_packets: 5_120_334,
                rx_errors: 0,
                rx_dropped: 12,
                tx_bytes: 912_384_721,
                tx_packets: 3_011_876,
                tx_errors: 1,
                tx_dropped: 2,
                ..InterfaceStats::default()
            }
        );
    }

    #[test]
    fn proc_net_dev_bad_lines_are_skipped() {
        let text = format!(
            "{NET_DEV}  eth1: 1 2 3\n  eth2: 1 2 x 4 5 6 7 8 9 10 11 12 13 14 15 16\nnonsense\n a b: 1\n  eth3: {}",
            "7 ".repeat(16)
        );
        let parsed = parse_proc_net_dev(&text);
        assert_eq!(parsed.items.len(), 4);
        assert_eq!(parsed.items[3].name.as_str(), "eth3");
        assert_eq!(parsed.skipped, 4);
        assert!(matches!(parsed.first_error, Some(ProbeError::Malformed { line: 6, .. })));
        // Cut mid-line: the partial last line is dropped, the rest kept.
        let cut = &NET_DEV[..NET_DEV.len() - 40];
        let parsed = parse_proc_net_dev(cut);
        assert_eq!(parsed.items.len(), 2);
        assert_eq!(parsed.skipped, 1);
    }

    #[test]
    fn sysfs_values() {
        assert_eq!(parse_mac("94:83:c4:12:ab:01\n").unwrap(), Some("94:83:c4:12:ab:01".parse().unwrap()));
        assert_eq!(parse_mac("00:00:00:00:00:00\n").unwrap(), None);
        assert_eq!(parse_mac("\n").unwrap(), None);
        assert_eq!(parse_mac("c0:00:02:01\n").unwrap(), None);
        for bad in ["zz:00:00:00:00:01", "0:1:2:3:4:5", "01-02-03-04-05-06", "::"] {
            assert!(parse_mac(bad).is_err(), "{bad:?}");
        }
        assert!(parse_mac(&"ab:".repeat(40)).is_err());

        assert!(parse_operstate("up\n").unwrap());
        assert!(!parse_operstate("unknown\n").unwrap());
        assert!(!parse_operstate("lowerlayerdown\n").unwrap());
        assert!(parse_operstate("sideways\n").is_err());

        assert_eq!(parse_sysfs_number("1500\n").unwrap(), 1500);
        assert!(parse_sysfs_number("-1\n").is_err());
        assert!(matches!(parse_sysfs_number(""), Err(ProbeError::Empty)));
    }
}
