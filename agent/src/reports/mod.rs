//! One collection: everything the device reports each interval, per device
//! kind.
//!
//! Every kind sends its own metadata (the host probe) and, from the second
//! collection on, what its interface counters did since the previous one.
//! Then, as `[probes]` says (by default from the device's kind):
//!
//! | probe | sends | reads |
//! |---|---|---|
//! | wireless (access points) | [`WirelessReport`]: radios, stations, roaming; [`ClientDeviceReport`]: the stations' device type, model, OS and MAC vendor | `iw dev`, `iw dev IF station dump`, `hostapd_cli -i IF all_sta`, `proc/net/arp`, DHCP leases, the DHCP fingerprint file ([`FINGERPRINTS`]) |
//! | wired (switches) | [`WiredReport`]: port VLANs, learned hosts, LLDP neighbours | `bridge -j fdb show`, `bridge -j vlan show`, `lldpcli -f json show neighbors details`, `hostapd_cli` on 802.1X ports, `proc/net/arp`, DHCP leases |
//! | wan (gateways) | [`WanReport`]: sessions per application | `proc/net/nf_conntrack`, else `conntrack -L -o extended` |
//! | wan, when the organisation enables WAN destinations | [`WanDestinationReport`]: sessions per client and destination, with site names | the same table, `proc/net/arp`, DHCP leases, the DNS resolver's log (`dns_log`) |
//!
//! Parsing lives in [`crate::probe`] as plain functions; this module runs
//! the tools, reads the files, keeps what must be remembered between
//! collections (counters, stations, sessions) and builds the records. A
//! source that is missing on the device disables its part with one log
//! line; a broken one logs once per kind of problem and the rest of the
//! collection goes on.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use glimpse_common::bounded::{BoundedString, BoundedVec};
use glimpse_common::identity::DeviceKind;
use glimpse_common::record::{
    ClientDevice, ClientDeviceReport, CounterReport, DeviceMetadata, DeviceProfile, InterfaceDelta, InterfaceStats,
    MacAddr, Record, RecordBody, RoamEvent, RoamKind, WanDestination, WanDestinationReport, WanReport, WiredHost,
    WiredReport, WirelessReport, MAX_CLIENT_ADDRESSES, MAX_HOSTS, MAX_ROAMS, MAX_STATIONS,
};
use tracing::warn;

use glimpse_common::minimise::MetadataField;

use crate::config::{AgentConfig, ProbeSettings};
use crate::probe::{self, HostProbe};

pub mod command;

#[cfg(test)]
mod tests;

/// Read cap for tool output and the client tables.
const OUTPUT_LIMIT: usize = 1024 * 1024;
/// Most of the DNS resolver's log read per collection (the newest part
/// when more was written).
const DNS_LOG_LIMIT: u64 = 1024 * 1024;

/// Where the DHCP fingerprint script (`packaging/openwrt/glimpse-dhcp-fingerprint`,
/// dnsmasq's `dhcp-script`) keeps each client's option 55 and 60, under the
/// collection root.
pub const FINGERPRINTS: &str = "tmp/glimpse/dhcp-fingerprints";

/// Builds each collection's records and remembers what the next one needs.
///
/// Keep one for the life of the daemon (a reload makes a new one): it holds
/// the previous counters, the stations seen last time, the sessions being
/// followed, and which problems were already logged.
pub struct Reporter {
    kind: DeviceKind,
    profile: DeviceProfile,
    settings: ProbeSettings,
    root: PathBuf,
    host: HostProbe,
    /// Interfaces (for their counters) and monotonic time of the previous
    /// collection.
    previous_counters: Option<(u64, BTreeMap<String, InterfaceStats>)>,
    /// Station MAC to the radio it was on at the previous collection;
    /// `None` before the first.
    previous_stations: Option<BTreeMap<MacAddr, String>>,
    sessions: Option<probe::SessionTracker>,
    /// (source, problem) pairs already logged.
    warned: HashSet<(String, &'static str)>,
    /// Each tool and file read so far, and how its last use went: what a
    /// diagnostic bundle reports as probe and tool status.
    outcomes: BTreeMap<String, (bool, String)>,
    /// Fields the organisation does not want: sources that only feed them
    /// are not even read.
    omit: Vec<MetadataField>,
    /// Whether the organisation enables WAN destinations (off until it
    /// says so).
    destinations: bool,
    /// Addresses to site names from the DNS resolver's log, and where in
    /// the log reading goes on.
    site_names: probe::SiteNames,
    dns_tail: probe::LogTail,
}

impl Reporter {
    /// A reporter for the device `config` describes.
    pub fn new(config: &AgentConfig) -> Self {
        let settings = config.probes.clone();
        let sessions = settings.wan.then(|| {
            let mut table = probe::ApplicationTable::builtin();
            for (protocol, port, name) in &settings.applications {
                // The config already checked the names.
                if let Ok(with) = table.clone().with_override(*protocol, *port, name) {
                    table = with;
                }
            }
            probe::SessionTracker::new(settings.max_sessions, table)
        });
        Self {
            kind: config.identity.kind,
            profile: config.profile.clone(),
            root: config.sysroot.clone(),
            host: HostProbe::new(config.sysroot.clone()),
            settings,
            previous_counters: None,
            previous_stations: None,
            sessions,
            warned: HashSet::new(),
            outcomes: BTreeMap::new(),
            omit: Vec::new(),
            destinations: false,
            site_names: probe::SiteNames::new(probe::dns::MAX_SITE_ADDRESSES),
            dns_tail: probe::LogTail::default(),
        }
    }

    /// Whether the organisation enables WAN destinations: per client and
    /// destination rows with site names. Until it does, neither the rows
    /// are summed nor the DNS resolver's log read.
    pub fn allow_destinations(&mut self, on: bool) {
        if self.destinations && !on {
            // Nothing learned while allowed outlives the permission.
            self.site_names = probe::SiteNames::new(probe::dns::MAX_SITE_ADDRESSES);
            self.dns_tail = probe::LogTail::default();
        }
        self.destinations = on;
        if let Some(tracker) = self.sessions.as_mut() {
            tracker.per_destination(on);
        }
    }

    /// The fields the organisation's data policy omits (see
    /// [`glimpse_common::minimise`]). Records are trimmed again before they
    /// are queued; this only spares reading sources nobody wants.
    pub fn omit(&mut self, fields: &[MetadataField]) {
        self.omit = fields.to_vec();
    }

    fn omitted(&self, field: MetadataField) -> bool {
        self.omit.contains(&field)
    }

    /// One collection. `now_ms` is a monotonic clock in milliseconds (for
    /// intervals and rates), `wall_ms` the wall clock (for records' times
    /// and lease expiry).
    pub fn collect(&mut self, now_ms: u64, wall_ms: i64) -> Vec<Record> {
        let mut metadata = self.host.collect();
        metadata.kind = Some(self.kind);
        let mut bodies = Vec::new();
        let counters = self.counters(&metadata, now_ms);
        bodies.push(RecordBody::Metadata(metadata));
        bodies.extend(counters.map(RecordBody::Counters));
        if self.settings.wireless || self.settings.wired {
            let clients = self.clients(wall_ms);
            if self.settings.wireless {
                let reports = self.wireless(&clients);
                let devices = self.client_devices(&reports, &clients);
                bodies.extend(reports.into_iter().map(|r| RecordBody::Wireless(Box::new(r))));
                bodies.extend(devices.into_iter().map(|r| RecordBody::ClientDevices(Box::new(r))));
            }
            if self.settings.wired {
                bodies.extend(self.wired(&clients).into_iter().map(|r| RecordBody::Wired(Box::new(r))));
            }
        }
        if self.settings.wan {
            if let Some((report, destinations)) = self.wan(now_ms, wall_ms) {
                bodies.push(RecordBody::Wan(Box::new(report)));
                bodies.extend(destinations.map(|r| RecordBody::WanDestinations(Box::new(r))));
            }
        }
        bodies.into_iter().map(|body| Record { observed_at_ms: wall_ms, body }).collect()
    }

    /// Logs `message` the first time `(source, problem)` comes up.
    fn warn_once(&mut self, source: &str, problem: &'static str, message: std::fmt::Arguments<'_>) {
        if self.warned.insert((source.to_owned(), problem)) {
            warn!(source, "{message}");
        }
    }

    /// Each tool run and file read so far and how its last use went, by
    /// name: for a diagnostic bundle.
    pub fn checks(&self) -> impl Iterator<Item = (&str, bool, &str)> {
        self.outcomes.iter().map(|(name, (ok, detail))| (name.as_str(), *ok, detail.as_str()))
    }

    fn outcome(&mut self, source: &str, ok: bool, detail: String) {
        // Sources are the device kind's few tools and files: bounded.
        self.outcomes.insert(source.to_owned(), (ok, detail));
    }

    /// Runs a tool; `None` (logged once) when it is missing or fails.
    fn run(&mut self, source: &str, argv: Vec<String>, consequence: &str) -> Option<String> {
        let timeout: Duration = self.settings.command_timeout;
        let result = command::run(&argv, timeout, OUTPUT_LIMIT);
        let program = argv.first().map_or("", String::as_str);
        match &result {
            Ok(output) => self.outcome(source, true, format!("{program}: {} bytes of output", output.text.len())),
            Err(e) => self.outcome(source, false, e.to_string()),
        }
        match result {
            Ok(output) => {
                if output.truncated {
                    self.warn_once(
                        source,
                        "truncated",
                        format_args!("output over {OUTPUT_LIMIT} bytes; only the beginning was used"),
                    );
                }
                Some(output.text)
            }
            Err(e) if e.is_missing() => {
                self.warn_once(source, "missing", format_args!("{e}: {consequence}"));
                None
            }
            Err(e) => {
                self.warn_once(source, "failed", format_args!("{e}; {consequence} this time"));
                None
            }
        }
    }

    /// Reads a file under the collection root; `None` when it is absent
    /// (not logged: callers know whether that matters) or unreadable
    /// (logged once).
    fn read(&mut self, relative: &std::path::Path, limit: usize) -> Option<String> {
        let path = self.root.join(relative);
        let read = probe::read_capped(&path, limit);
        let source = format!("/{}", relative.display());
        match &read {
            Ok(Some((bytes, _))) => self.outcome(&source, true, format!("{} bytes", bytes.len())),
            Ok(None) => self.outcome(&source, false, "absent".to_owned()),
            Err(e) => self.outcome(&source, false, format!("unreadable: {e}")),
        }
        match read {
            Ok(Some((bytes, over))) => {
                if over {
                    let source = path.display().to_string();
                    self.warn_once(
                        &source,
                        "truncated",
                        format_args!("larger than {limit} bytes; only the beginning was used"),
                    );
                }
                Some(probe::decode(bytes, over))
            }
            Ok(None) => None,
            Err(e) => {
                let source = path.display().to_string();
                self.warn_once(&source, "unreadable", format_args!("unreadable: {e}"));
                None
            }
        }
    }

    /// Logs once the first malformed entry a parser skipped.
    fn note_skipped<T>(&mut self, source: &str, parsed: &probe::Parsed<T>) {
        if let Some(error) = &parsed.first_error {
            let skipped = parsed.skipped;
            self.warn_once(
                source,
                "malformed",
                format_args!("{skipped} malformed entries skipped, using the rest; first: {error}"),
            );
        }
    }

    /// Interface counter changes since the previous collection.
    fn counters(&mut self, metadata: &DeviceMetadata, now_ms: u64) -> Option<CounterReport> {
        let current: BTreeMap<String, InterfaceStats> =
            metadata.interfaces.iter().map(|i| (i.name.as_str().to_owned(), i.clone())).collect();
        let previous = self.previous_counters.replace((now_ms, current.clone()));
        let (then_ms, before) = previous?;
        let interval_ms = now_ms.saturating_sub(then_ms);
        let interfaces = current
            .iter()
            .filter_map(|(name, now)| Some(InterfaceDelta::between(before.get(name)?, now, interval_ms)))
            .collect();
        Some(CounterReport { interval_ms, interfaces: BoundedVec::truncating(interfaces) })
    }

    /// What the ARP table and DHCP leases say about clients, by MAC.
    fn clients(&mut self, wall_ms: i64) -> Clients {
        let mut clients = Clients::default();
        let wanted = [
            MetadataField::ClientAddresses,
            MetadataField::ClientHostnames,
            MetadataField::UserAgents,
            MetadataField::ClientDevices,
        ];
        if wanted.iter().all(|field| self.omitted(*field)) {
            return clients;
        }
        if let Some(text) = self.read(std::path::Path::new("proc/net/arp"), OUTPUT_LIMIT) {
            let parsed = probe::parse_proc_net_arp(&text);
            self.note_skipped("proc/net/arp", &parsed);
            for entry in parsed.items.into_iter().filter(|e| e.complete) {
                clients.entry(entry.mac).add_address(IpAddr::V4(entry.ip));
            }
        }
        let now_secs = u64::try_from(wall_ms / 1000).unwrap_or(0);
        for relative in self.settings.dhcp_leases.clone() {
            let Some(text) = self.read(&relative, OUTPUT_LIMIT) else { continue };
            // ISC's file is a sequence of `lease ADDRESS {` blocks; dnsmasq's
            // has one lease per line.
            let isc = text.lines().any(|l| l.trim_start().starts_with("lease ") && l.trim_end().ends_with('{'));
            let parsed = if isc { probe::parse_isc_dhcpd_leases(&text) } else { probe::parse_dnsmasq_leases(&text) };
            let source = relative.display().to_string();
            self.note_skipped(&source, &parsed);
            for lease in parsed.items {
                let Some(mac) = lease.mac else { continue };
                // dnsmasq writes 0 for infinite leases.
                if lease.expires_unix.is_some_and(|t| t != 0 && t < now_secs) {
                    continue;
                }
                let client = clients.entry(mac);
                client.add_address(lease.ip);
                if let Some(hostname) = lease.hostname {
                    client.hostname = Some(hostname);
                }
                if let Some(vendor_class) = lease.vendor_class {
                    client.vendor_class = Some(vendor_class);
                }
            }
        }
        if let Some(text) = self.read(std::path::Path::new(FINGERPRINTS), OUTPUT_LIMIT) {
            let parsed = probe::parse_fingerprints(&text);
            self.note_skipped(FINGERPRINTS, &parsed);
            for fingerprint in parsed.items {
                let client = clients.entry(fingerprint.mac);
                // dnsmasq's lease file has no vendor class; its script does.
                if client.vendor_class.is_none() {
                    client.vendor_class = fingerprint.vendor_class;
                }
                client.requested_options = Some(fingerprint.requested_options).filter(|o| !o.is_empty());
            }
        }
        clients
    }

    /// What the stations of `reports` are, as far as DHCP, their hostnames
    /// and their MACs' vendors tell (see [`probe::fingerprint`]), in as
    /// many reports as the stations need. A signal the organisation does
    /// not collect is not used either.
    fn client_devices(&self, reports: &[WirelessReport], clients: &Clients) -> Vec<ClientDeviceReport> {
        if self.omitted(MetadataField::ClientDevices) {
            return Vec::new();
        }
        let hostnames = !self.omitted(MetadataField::ClientHostnames);
        let user_agents = !self.omitted(MetadataField::UserAgents);
        let mut macs: Vec<MacAddr> = reports.iter().flat_map(|r| r.stations.iter().map(|s| s.mac)).collect();
        macs.sort_unstable();
        macs.dedup();
        let devices: Vec<ClientDevice> = macs
            .into_iter()
            .filter_map(|mac| {
                let client = clients.get(&mac);
                probe::infer(&probe::Signals {
                    mac,
                    requested_options: client.and_then(|c| c.requested_options.as_deref()),
                    vendor_class: client.and_then(|c| c.vendor_class.as_deref()).filter(|_| user_agents),
                    hostname: client.and_then(|c| c.hostname.as_deref()).filter(|_| hostnames),
                    mac_vendor: true,
                })
            })
            .collect();
        devices
            .chunks(MAX_STATIONS)
            .map(|chunk| ClientDeviceReport { clients: BoundedVec::truncating(chunk.to_vec()) })
            .collect()
    }

    /// 802.1X usernames and dynamic VLANs hostapd knows for `interface`.
    fn hostapd(&mut self, interface: &str) -> HashMap<MacAddr, probe::HostapdStation> {
        if self.omitted(MetadataField::Usernames) && self.omitted(MetadataField::Vlans) {
            return HashMap::new();
        }
        let mut argv = self.settings.commands.hostapd_cli.clone();
        argv.extend(["-i".to_owned(), interface.to_owned(), "all_sta".to_owned()]);
        let Some(text) = self.run("hostapd_cli", argv, "no usernames or dynamic VLANs") else {
            return HashMap::new();
        };
        let parsed = probe::parse_hostapd_all_sta(&text);
        self.note_skipped("hostapd_cli", &parsed);
        parsed.items.into_iter().map(|s| (s.mac, s)).collect()
    }

    /// Radios, stations and roaming, in as many reports as the stations need.
    fn wireless(&mut self, clients: &Clients) -> Vec<WirelessReport> {
        let mut argv = self.settings.commands.iw.clone();
        argv.push("dev".to_owned());
        let Some(text) = self.run("iw", argv, "wireless probe off (no radios or stations)") else {
            return Vec::new();
        };
        let parsed = probe::parse_iw_dev(&text);
        self.note_skipped("iw dev", &parsed);
        let mut radios = Vec::new();
        let mut stations = Vec::new();
        for probe::WifiInterface { mut radio, phy: _ } in
            parsed.items.into_iter().filter(|i| i.radio.mode.starts_with("AP"))
        {
            let name = radio.interface.as_str().to_owned();
            let mut argv = self.settings.commands.iw.clone();
            argv.extend(["dev", name.as_str(), "station", "dump"].map(str::to_owned));
            let dump = self.run("iw station dump", argv, "no stations").unwrap_or_default();
            let parsed = probe::parse_station_dump(&dump);
            self.note_skipped("iw station dump", &parsed);
            let hostapd = if parsed.items.is_empty() { HashMap::new() } else { self.hostapd(&name) };
            let mut count = 0u32;
            for dump in parsed.items {
                count += 1;
                // The dump fills in what `iw` knows; the rest comes from
                // leases, the ARP table and hostapd.
                let probe::StationDump { mut station, authorized: _, associated: _ } = dump;
                let client = clients.get(&station.mac);
                let auth = hostapd.get(&station.mac);
                station.interface = radio.interface.clone();
                station.ssid = radio.ssid.clone();
                station.addresses = client.map(Client::addresses).unwrap_or_default();
                station.hostname = text_of(client.and_then(|c| c.hostname.as_deref()));
                station.username = text_of(auth.and_then(|a| a.username.as_deref()));
                station.user_agent = text_of(client.and_then(|c| c.vendor_class.as_deref()));
                station.vlan = auth.and_then(|a| a.vlan_id);
                stations.push(station);
            }
            radio.stations = count;
            radios.push(radio);
        }
        stations.sort_by(|a, b| (a.interface.as_str(), a.mac).cmp(&(b.interface.as_str(), b.mac)));
        let now: BTreeMap<MacAddr, String> =
            stations.iter().map(|s| (s.mac, s.interface.as_str().to_owned())).collect();
        let roaming = roam_events(self.previous_stations.as_ref(), &now);
        self.previous_stations = Some(now);
        if roaming.len() > MAX_ROAMS {
            let dropped = roaming.len() - MAX_ROAMS;
            self.warn_once(
                "roaming",
                "overflow",
                format_args!("over {MAX_ROAMS} roaming events in one interval; {dropped} not reported"),
            );
        }
        let mut reports = Vec::new();
        let mut chunks = stations.chunks(MAX_STATIONS);
        let first = chunks.next().unwrap_or(&[]);
        reports.push(WirelessReport {
            device: self.profile.clone(),
            radios: BoundedVec::truncating(radios),
            stations: BoundedVec::truncating(first.to_vec()),
            roaming: BoundedVec::truncating(roaming),
        });
        for chunk in chunks {
            reports.push(WirelessReport {
                device: self.profile.clone(),
                stations: BoundedVec::truncating(chunk.to_vec()),
                ..WirelessReport::default()
            });
        }
        reports
    }

    /// Port VLANs, learned hosts and LLDP neighbours.
    fn wired(&mut self, clients: &Clients) -> Vec<WiredReport> {
        let bridge = self.settings.commands.bridge.clone();
        let with = |base: &[String], rest: &[&str]| {
            let mut argv = base.to_vec();
            argv.extend(rest.iter().map(|s| (*s).to_owned()));
            argv
        };
        let fdb_text = self.run("bridge fdb", with(&bridge, &["-j", "fdb", "show"]), "no learned hosts");
        let vlan_text = if self.omitted(MetadataField::Vlans) {
            None
        } else {
            self.run("bridge vlan", with(&bridge, &["-j", "vlan", "show"]), "no VLAN membership")
        };
        let lldp_text = if self.omitted(MetadataField::Lldp) {
            None
        } else {
            let argv = with(&self.settings.commands.lldpcli, &["-f", "json", "show", "neighbors", "details"]);
            self.run("lldpcli", argv, "no LLDP neighbours")
        };
        let mut usernames: HashMap<MacAddr, String> = HashMap::new();
        for port in self.settings.dot1x_interfaces.clone() {
            for (mac, station) in self.hostapd(&port) {
                if let Some(name) = station.username {
                    usernames.insert(mac, name);
                }
            }
        }

        let mut hosts: BTreeMap<(String, MacAddr, Option<u16>), WiredHost> = BTreeMap::new();
        if let Some(text) = fdb_text {
            let parsed = probe::parse_bridge_fdb_json(&text);
            self.note_skipped("bridge fdb", &parsed);
            // The bridge's own and static addresses are not hosts; group
            // addresses are not hosts either. A port's own hardware table
            // (`self`) repeats what the bridge learned, so it only adds
            // hosts the bridge does not list on that port.
            let (learned, own): (Vec<_>, Vec<_>) =
                parsed.items.into_iter().filter(|e| !e.permanent && e.mac.0[0] & 1 == 0).partition(|e| !e.self_entry);
            let mut seen: HashSet<(String, MacAddr)> = HashSet::new();
            for entry in learned.into_iter().chain(own) {
                let first_on_port = seen.insert((entry.port.clone(), entry.mac));
                if entry.self_entry && !first_on_port {
                    continue;
                }
                let client = clients.get(&entry.mac);
                hosts.entry((entry.port.clone(), entry.mac, entry.vlan)).or_insert_with(|| WiredHost {
                    mac: entry.mac,
                    port: BoundedString::truncating(&entry.port),
                    vlan: entry.vlan,
                    addresses: client.map(Client::addresses).unwrap_or_default(),
                    hostname: text_of(client.and_then(|c| c.hostname.as_deref())),
                    username: text_of(usernames.get(&entry.mac).map(String::as_str)),
                });
            }
        }
        let mut ports = Vec::new();
        if let Some(text) = vlan_text {
            let parsed = probe::parse_bridge_vlan_json(&text);
            self.note_skipped("bridge vlan", &parsed);
            ports = parsed.items;
            ports.sort_by(|a, b| a.port.as_str().cmp(b.port.as_str()));
        }
        let mut neighbours = Vec::new();
        if let Some(text) = lldp_text {
            let parsed = probe::parse_lldpcli_json(&text);
            self.note_skipped("lldpcli", &parsed);
            neighbours = parsed.items;
        }
        let hosts: Vec<WiredHost> = hosts.into_values().collect();
        let mut reports = Vec::new();
        let mut chunks = hosts.chunks(MAX_HOSTS);
        reports.push(WiredReport {
            device: self.profile.clone(),
            ports: BoundedVec::truncating(ports),
            hosts: BoundedVec::truncating(chunks.next().unwrap_or(&[]).to_vec()),
            neighbours: BoundedVec::truncating(neighbours),
        });
        for chunk in chunks {
            reports.push(WiredReport {
                device: self.profile.clone(),
                hosts: BoundedVec::truncating(chunk.to_vec()),
                ..WiredReport::default()
            });
        }
        reports
    }

    /// Sessions per application since the previous collection, and per
    /// client and destination when the organisation enables those.
    fn wan(&mut self, now_ms: u64, wall_ms: i64) -> Option<(WanReport, Option<WanDestinationReport>)> {
        // A conntrack line is about 250 bytes; read a little more than the
        // sessions we follow.
        let limit = (self.settings.max_sessions.saturating_mul(400)).clamp(OUTPUT_LIMIT, 64 * 1024 * 1024);
        let table = self.settings.conntrack_table.clone();
        let text = match self.read(&table, limit) {
            Some(text) => text,
            None => {
                let mut argv = self.settings.commands.conntrack.clone();
                argv.extend(["-L", "-o", "extended"].map(str::to_owned));
                self.run("conntrack", argv, "WAN probe off (no proc/net/nf_conntrack and no conntrack tool)")?
            }
        };
        let parsed = probe::parse_conntrack_table(&text);
        drop(text);
        self.note_skipped("conntrack", &parsed);
        let tracker = self.sessions.as_mut()?;
        tracker.per_destination(self.destinations);
        let mut summary = tracker.observe(&parsed.items, now_ms);
        let rows = std::mem::take(&mut summary.destinations);
        let destinations = self.destinations.then(|| self.destinations(summary.interval_ms, rows, wall_ms));
        let report = WanReport {
            device: self.profile.clone(),
            wan_interfaces: BoundedVec::truncating(
                self.settings.wan_interfaces.iter().map(|i| BoundedString::truncating(i)).collect(),
            ),
            interval_ms: summary.interval_ms,
            active_sessions: summary.active_sessions,
            untracked_sessions: summary.untracked_sessions,
            applications: BoundedVec::truncating(summary.applications),
        };
        Some((report, destinations))
    }

    /// The per-destination rows with their clients' MACs (from the ARP
    /// table and DHCP leases) and site names (from the DNS resolver's log).
    fn destinations(
        &mut self,
        interval_ms: u64,
        rows: Vec<probe::DestinationSessions>,
        wall_ms: i64,
    ) -> WanDestinationReport {
        let clients_withheld = self.omitted(MetadataField::WanClients);
        let mut macs: HashMap<IpAddr, MacAddr> = HashMap::new();
        if !clients_withheld {
            for (mac, client) in &self.clients_by_mac(wall_ms).0 {
                for address in &client.addresses {
                    macs.insert(*address, *mac);
                }
            }
        }
        let sites_withheld = self.omitted(MetadataField::WanSites);
        if !sites_withheld {
            self.read_dns_log();
        }
        let destinations_withheld = self.omitted(MetadataField::WanDestinations);
        let applications_withheld = self.omitted(MetadataField::Applications);
        let rows = rows
            .into_iter()
            .map(|row| WanDestination {
                client_mac: if clients_withheld { None } else { macs.get(&row.client).copied() },
                client_address: (!clients_withheld).then_some(row.client),
                destination: (!destinations_withheld).then_some(row.destination),
                protocol: row.protocol,
                port: row.port,
                application: text_of(if applications_withheld { None } else { Some(row.application.as_str()) }),
                site: text_of(if sites_withheld { None } else { self.site_names.name_of(&row.destination) }),
                counters: row.counters,
            })
            .collect();
        let (rows, folded_rows, folded) = glimpse_common::record::merge_destination_rows(rows);
        WanDestinationReport {
            device: self.profile.clone(),
            interval_ms,
            destinations: BoundedVec::truncating(rows),
            folded_rows,
            folded,
        }
    }

    /// The clients the ARP table and DHCP leases name, whatever the
    /// minimisation of the client reports says (WAN destinations have
    /// their own setting).
    fn clients_by_mac(&mut self, wall_ms: i64) -> Clients {
        let omit = std::mem::take(&mut self.omit);
        let clients = self.clients(wall_ms);
        self.omit = omit;
        clients
    }

    /// Takes in what the DNS resolver logged since the previous collection
    /// (a bounded tail; a rotated or truncated log is read from its start).
    fn read_dns_log(&mut self) {
        use std::io::{Read, Seek};
        let path = self.root.join(&self.settings.dns_log);
        let source = path.display().to_string();
        let mut file = match std::fs::File::open(&path) {
            Ok(file) => file,
            Err(e) => {
                let problem = if e.kind() == std::io::ErrorKind::NotFound { "missing" } else { "unreadable" };
                self.warn_once(&source, problem, format_args!("{e}: WAN destinations without site names"));
                return;
            }
        };
        let (len, file_id) = match file.metadata() {
            Ok(meta) => (meta.len(), file_identity(&meta)),
            Err(e) => {
                self.warn_once(&source, "unreadable", format_args!("{e}: WAN destinations without site names"));
                return;
            }
        };
        let plan = self.dns_tail.plan(len, file_id, DNS_LOG_LIMIT);
        if plan.broken {
            self.site_names.break_chain();
        }
        let mut bytes = Vec::new();
        let want = len.saturating_sub(plan.start);
        let read = file
            .seek(std::io::SeekFrom::Start(plan.start))
            .and_then(|_| (&mut file).take(want).read_to_end(&mut bytes));
        if let Err(e) = read {
            self.warn_once(&source, "unreadable", format_args!("{e}: WAN destinations without site names"));
            return;
        }
        let lines = self.dns_tail.take(plan, file_id, &bytes);
        self.site_names.feed(&String::from_utf8_lossy(lines));
    }
}

/// A file's identity, to tell a rotated log from the one read before.
#[cfg(unix)]
fn file_identity(meta: &std::fs::Metadata) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    Some(meta.ino())
}

#[cfg(not(unix))]
fn file_identity(_: &std::fs::Metadata) -> Option<u64> {
    None
}

/// Bounded text from an optional value (empty when absent).
fn text_of<const MAX: usize>(value: Option<&str>) -> BoundedString<MAX> {
    BoundedString::truncating(value.unwrap_or(""))
}

/// Stations that joined, left or moved between radios from `before` to
/// `now` (none at the first collection: nothing to compare with).
fn roam_events(before: Option<&BTreeMap<MacAddr, String>>, now: &BTreeMap<MacAddr, String>) -> Vec<RoamEvent> {
    let Some(before) = before else { return Vec::new() };
    let mut events = Vec::new();
    for (mac, interface) in now {
        match before.get(mac) {
            None => events.push(RoamEvent {
                mac: *mac,
                event: RoamKind::Joined,
                interface: BoundedString::truncating(interface),
                previous_interface: None,
            }),
            Some(old) if old != interface => events.push(RoamEvent {
                mac: *mac,
                event: RoamKind::Moved,
                interface: BoundedString::truncating(interface),
                previous_interface: Some(BoundedString::truncating(old)),
            }),
            Some(_) => {}
        }
    }
    for (mac, interface) in before {
        if !now.contains_key(mac) {
            events.push(RoamEvent {
                mac: *mac,
                event: RoamKind::Left,
                interface: BoundedString::truncating(interface),
                previous_interface: None,
            });
        }
    }
    events
}

/// What the device knows about one client beyond its MAC.
#[derive(Debug, Default)]
struct Client {
    addresses: Vec<IpAddr>,
    hostname: Option<String>,
    vendor_class: Option<String>,
    /// DHCP option 55, from the fingerprint file.
    requested_options: Option<Vec<u8>>,
}

impl Client {
    fn add_address(&mut self, ip: IpAddr) {
        if !self.addresses.contains(&ip) && self.addresses.len() < MAX_CLIENT_ADDRESSES {
            self.addresses.push(ip);
        }
    }

    fn addresses(&self) -> BoundedVec<IpAddr, MAX_CLIENT_ADDRESSES> {
        BoundedVec::truncating(self.addresses.clone())
    }
}

/// Clients by MAC; bounded by the parsers' own entry limits.
#[derive(Debug, Default)]
struct Clients(HashMap<MacAddr, Client>);

impl Clients {
    fn entry(&mut self, mac: MacAddr) -> &mut Client {
        self.0.entry(mac).or_default()
    }

    fn get(&self, mac: &MacAddr) -> Option<&Client> {
        self.0.get(mac)
    }
}
