//! The host metadata probe: what the device is, and what its network
//! interfaces carry.
//!
//! [`HostProbe::collect`] reads the kernel's text interfaces under a root
//! directory (`/` on a device, a fixture tree in tests) and fills a
//! [`DeviceMetadata`]. Sources, with fallbacks in order:
//!
//! | Field | Read from |
//! |---|---|
//! | hostname | `proc/sys/kernel/hostname`, `etc/hostname` |
//! | OS name, version | `etc/os-release`, `usr/lib/os-release` (`NAME`; `VERSION_ID` or `VERSION`), `etc/openwrt_release` (`DISTRIB_ID`, `DISTRIB_RELEASE`) |
//! | model | `sys/firmware/devicetree/base/model`, `proc/device-tree/model`, `sys/class/dmi/id/product_name` |
//! | kernel | `proc/sys/kernel/osrelease` |
//! | uptime | first field of `proc/uptime` |
//! | interfaces | directories in `sys/class/net` (`address`, `operstate`, `mtu`, `statistics/*`); `proc/net/dev` for the names when there is no `sys/class/net`, and for counters when an interface has no `statistics` |
//! | IPv6 addresses | `proc/net/if_inet6` |
//! | IPv4 addresses | `proc/net/fib_trie` and `proc/net/route` (see below) |
//!
//! What it deliberately does not do: open netlink or any other socket, call
//! ioctls, run `ip`/`ifconfig`/`uci`, or write anything. Reading files keeps
//! the probe free of `unsafe` and of capabilities, identical on every
//! architecture, and testable against a directory tree.
//!
//! # Untrusted input
//!
//! Every byte is treated as hostile. Files are read with a hard cap (64 KiB;
//! 1 MiB for the routing tables, which grow with the number of routes), never
//! by their reported size (procfs reports 0); only regular files are opened,
//! so a FIFO cannot block the daemon; invalid UTF-8 is replaced; malformed
//! lines are skipped and the rest of the file is used; every list is bounded
//! by [`MAX_INTERFACES`] and [`MAX_ADDRESSES`] and every string is cut to its
//! field's bound. Parsing never panics (property-tested).
//!
//! A missing source leaves its fields empty and logs one `warn` line naming
//! the path; a malformed or unreadable one logs one `warn` line with the path
//! and what was wrong. Each (source, problem) pair is logged once per
//! [`HostProbe`], so a daemon collecting every 30 seconds does not flood its
//! log.
//!
//! # IPv4 addresses without netlink
//!
//! Linux has no text file that lists IPv4 addresses by interface. The probe
//! combines two that together come close:
//!
//! 1. `proc/net/fib_trie` prints every routing table as a trie. Each local
//!    address appears as a leaf (`|-- 192.168.1.1`) followed by the line
//!    `/32 host LOCAL`. That gives the set of local addresses, but not their
//!    interfaces.
//! 2. `proc/net/route` prints the main table with interface names. When an
//!    address is added, the kernel adds a directly connected route for its
//!    prefix on its interface. Each local address is attributed to the
//!    interface of the most specific such route (up, no gateway, not reject,
//!    mask not /0) whose network contains it; ties go to the lower metric,
//!    then to the earlier line. Addresses in 127.0.0.0/8 go to `lo`.
//!
//! Limits, all accepted as the price of not using netlink: an address with no
//! connected route of its own is not reported (`noprefixroute`, a /32 without
//! a peer, the local end of a point-to-point link such as PPPoE whose route
//! names only the peer); two interfaces on the same subnet get all of that
//! subnet's addresses attributed to one of them; routes in tables other than
//! main (policy routing, VRFs) are invisible; `ip route add local x/32`
//! entries look like addresses; a loopback-range address configured on
//! another interface is reported on `lo`. `proc/net/route` prints addresses in
//! the CPU's byte order (`0001A8C0` on little-endian, `C0A80100` on the
//! big-endian MIPS of many routers), so it is decoded in native order.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use glimpse_common::bounded::BoundedVec;
use glimpse_common::record::{DeviceMetadata, InterfaceStats, MAX_ADDRESSES, MAX_INTERFACES};
use tracing::warn;

mod addresses;
pub mod clients;
pub mod dns;
pub mod fingerprint;
mod host;
mod interfaces;
mod lex;
pub mod oui;
pub mod sessions;
mod source;
#[cfg(test)]
mod tests;
pub mod wifi;
pub mod wired;

pub use addresses::{
    interface_for, parse_fib_trie, parse_if_inet6, parse_proc_net_route, Inet6Entry, Ipv4Route, KernelByteOrder,
};
pub use clients::{parse_dnsmasq_leases, parse_isc_dhcpd_leases, parse_proc_net_arp, ArpEntry, Lease};
pub use dns::{parse_dnsmasq_log_line, LogTail, SiteNames, TailPlan};
pub use fingerprint::{infer, parse_fingerprints, DhcpFingerprint, Signals};
pub use host::{parse_hostname, parse_kernel_release, parse_model, parse_os_release, parse_uptime};
pub use interfaces::{parse_mac, parse_operstate, parse_proc_net_dev, parse_sysfs_number};
pub use sessions::{
    parse_conntrack_line, parse_conntrack_table, ApplicationKey, ApplicationTable, ConntrackEntry, DestinationSessions,
    FlowTuple, SessionSummary, SessionTracker,
};
pub use wifi::{parse_hostapd_all_sta, parse_iw_dev, parse_station_dump, HostapdStation, StationDump, WifiInterface};
pub use wired::{parse_bridge_fdb_json, parse_bridge_vlan_json, parse_lldpcli_json, FdbEntry};

pub(crate) use source::{decode, read_capped};
use source::{Fetched, Issue};

/// Why a source could not be read or parsed, in whole or in part.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProbeError {
    /// The source holds no value where one is required.
    #[error("no value")]
    Empty,
    /// A required field is not set anywhere in the file.
    #[error("{field} is not set")]
    NotSet {
        /// Which field.
        field: &'static str,
    },
    /// A line does not have the layout its format requires.
    #[error("{}{reason}", At(*line))]
    Malformed {
        /// 1-based line number; 0 when the source is not line-based.
        line: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A field holds text that is not a valid value of its type.
    #[error("{}invalid {field}: {value:?}", At(*line))]
    BadValue {
        /// 1-based line number; 0 when the source is not line-based.
        line: usize,
        /// Which field.
        field: &'static str,
        /// The first characters of the offending text.
        value: String,
    },
    /// The file is larger than the probe reads; only its beginning was used.
    #[error("larger than {limit} bytes; only the beginning was read")]
    TooLarge {
        /// The read limit, in bytes.
        limit: usize,
    },
    /// The file exists but could not be read.
    #[error("unreadable: {0}")]
    Unreadable(#[source] std::io::Error),
}

/// What a line-oriented parser made of a file: the entries of the
/// well-formed lines, and what it skipped.
#[derive(Debug)]
pub struct Parsed<T> {
    /// Entries from the well-formed lines, in file order.
    pub items: Vec<T>,
    /// How many lines were skipped as malformed.
    pub skipped: usize,
    /// Why the first skipped line was malformed.
    pub first_error: Option<ProbeError>,
}

impl<T> Parsed<T> {
    pub(super) fn new() -> Self {
        Self { items: Vec::new(), skipped: 0, first_error: None }
    }

    pub(super) fn skip(&mut self, error: ProbeError) {
        self.skipped += 1;
        self.first_error.get_or_insert(error);
    }

    /// Keeps `item` unless `max` are already kept; past that, counts it as
    /// skipped (line `line`), so a hostile source cannot grow the list.
    pub(super) fn push_bounded(&mut self, item: T, max: usize, line: usize) {
        if self.items.len() < max {
            self.items.push(item);
        } else {
            self.skip(ProbeError::Malformed { line, reason: "over the entry limit; dropped" });
        }
    }
}

/// Reads the device's own metadata from `/proc`, `/sys` and `/etc` under a
/// root directory.
///
/// Keep one probe for the life of the daemon: it remembers which sources it
/// has already warned about.
#[derive(Debug)]
pub struct HostProbe {
    root: PathBuf,
    /// (source, problem) pairs already logged.
    warned: HashSet<(&'static str, Issue)>,
    route_byte_order: KernelByteOrder,
}

impl HostProbe {
    /// A probe reading under `root`: `/` on a device, a fixture tree in tests.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into(), warned: HashSet::new(), route_byte_order: KernelByteOrder::NATIVE }
    }

    /// Reads everything it can. A missing or broken source leaves its fields
    /// empty (or zero) and the rest is still filled; `kind` is left for the
    /// caller.
    pub fn collect(&mut self) -> DeviceMetadata {
        let (os_name, os_version) = self.os_release();
        DeviceMetadata {
            kind: None,
            hostname: self.hostname(),
            os_name,
            os_version,
            model: self.model(),
            kernel: self.kernel(),
            uptime_secs: self.uptime(),
            interfaces: self.interfaces(),
        }
    }

    /// Reads `proc/net/route` as printed by a kernel of the given byte order
    /// (for fixtures captured on another architecture).
    #[cfg(test)]
    fn with_route_byte_order(mut self, order: KernelByteOrder) -> Self {
        self.route_byte_order = order;
        self
    }

    fn path(&self, relative: impl AsRef<Path>) -> PathBuf {
        self.root.join(relative)
    }

    /// True the first time `(key, issue)` is seen by this probe.
    fn first_time(&mut self, key: &'static str, issue: Issue) -> bool {
        self.warned.insert((key, issue))
    }

    /// Logs, once per `key`, that none of `tried` exists.
    fn warn_missing(&mut self, key: &'static str, tried: &[&str], consequence: &str) {
        if self.first_time(key, Issue::Missing) {
            let paths = PathList(&self.root, tried);
            warn!(path = %paths, "{consequence}: source missing");
        }
    }

    /// Logs, once per `key`, that `path` holds something unusable.
    fn warn_malformed(&mut self, key: &'static str, path: &Path, error: &ProbeError) {
        if self.first_time(key, Issue::Malformed) {
            warn!(path = %path.display(), "malformed content ignored: {error}");
        }
    }

    /// Logs, once per `key`, the first problem of a partly parsed file.
    fn warn_skipped<T>(&mut self, key: &'static str, path: &Path, parsed: &Parsed<T>) {
        if let Some(error) = &parsed.first_error {
            if self.first_time(key, Issue::Malformed) {
                warn!(
                    path = %path.display(),
                    skipped = parsed.skipped,
                    "malformed lines skipped, using the rest; first: {error}"
                );
            }
        }
    }

    /// Logs, once per `key`, that something was dropped to stay in bounds.
    fn warn_overflow(&mut self, key: &'static str, path: &Path, what: fmt::Arguments<'_>) {
        if self.first_time(key, Issue::Overflow) {
            warn!(path = %path.display(), "{what}");
        }
    }

    /// Tries each of `chain` in order and returns the first value `parse`
    /// accepts. Warns once if none exists, and once per malformed file.
    fn first_value<T>(
        &mut self,
        key: &'static str,
        chain: &[&'static str],
        limit: usize,
        consequence: &str,
        parse: impl Fn(&str) -> Result<T, ProbeError>,
    ) -> Option<T> {
        let mut any_present = false;
        for &relative in chain {
            let path = self.path(relative);
            match self.fetch(relative, &path, limit) {
                Fetched::Text(text) => {
                    any_present = true;
                    match parse(&text) {
                        Ok(value) => return Some(value),
                        Err(error) => self.warn_malformed(relative, &path, &error),
                    }
                }
                Fetched::Failed => any_present = true,
                Fetched::Missing => {}
            }
        }
        if !any_present {
            self.warn_missing(key, chain, consequence);
        }
        None
    }

    /// Interfaces sorted by name, with their addresses.
    fn interfaces(&mut self) -> BoundedVec<InterfaceStats, MAX_INTERFACES> {
        let found = self.interface_stats();
        let mut v4 = self.ipv4_by_interface();
        let mut v6 = self.ipv6_by_interface();
        let mut dropped = 0usize;
        let mut out = Vec::with_capacity(found.len());
        for (name, mut stats) in found {
            let mut addrs: Vec<IpAddr> = Vec::new();
            addrs.extend(v4.remove(&name).into_iter().flatten().map(IpAddr::from));
            addrs.extend(v6.remove(&name).into_iter().flatten().map(IpAddr::from));
            dropped += addrs.len().saturating_sub(MAX_ADDRESSES);
            stats.addresses = BoundedVec::truncating(addrs);
            out.push(stats);
        }
        if dropped > 0 {
            let path = self.path("proc/net");
            self.warn_overflow(
                "addresses",
                &path,
                format_args!("over {MAX_ADDRESSES} addresses on an interface; {dropped} not reported"),
            );
        }
        BoundedVec::truncating(out)
    }
}

/// Paths joined onto the root, for one log field.
struct PathList<'a>(&'a Path, &'a [&'a str]);

impl fmt::Display for PathList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, relative) in self.1.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}", self.0.join(relative).display())?;
        }
        Ok(())
    }
}

/// Interfaces by name, before addresses are attached; at most
/// [`MAX_INTERFACES`] of them.
type InterfaceMap = BTreeMap<String, InterfaceStats>;

/// `line N: ` for errors in line-based files; nothing for whole-file values
/// (line 0).
struct At(usize);

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            0 => Ok(()),
            line => write!(f, "line {line}: "),
        }
    }
}
