//! A gateway's sessions from Linux connection tracking: the table's
//! parser, application names from server ports, and the tracker that turns
//! successive snapshots into per-interval session summaries.
//!
//! Connection tracking holds addresses, ports, counters and timers; nothing
//! here ever sees payload.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use glimpse_common::bounded::BoundedString;
use glimpse_common::record::{ApplicationSessions, DestinationCounters};

use super::lex::{bad, dec_u32, dec_u64};
use super::{Parsed, ProbeError};

/// Most entries kept from one table.
pub const MAX_CONNTRACK_ENTRIES: usize = 65_536;
/// Most applications in one summary; the rest are folded into `other`.
pub const MAX_SUMMARY_APPLICATIONS: usize = 256;

/// One direction of a tracked connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowTuple {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Source port (for ICMP: the echo id).
    pub sport: Option<u16>,
    /// Destination port.
    pub dport: Option<u16>,
}

/// One line of the connection tracking table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConntrackEntry {
    /// IP protocol number.
    pub protocol: u8,
    /// TCP state (`ESTABLISHED`, ...), when the protocol has one.
    pub state: Option<String>,
    /// The direction the connection was opened in.
    pub original: FlowTuple,
    /// The reply direction (after NAT).
    pub reply: FlowTuple,
    /// Packets in the original direction (`nf_conntrack_acct`).
    pub orig_packets: Option<u64>,
    /// Bytes in the original direction.
    pub orig_bytes: Option<u64>,
    /// Packets in the reply direction.
    pub reply_packets: Option<u64>,
    /// Bytes in the reply direction.
    pub reply_bytes: Option<u64>,
    /// `[ASSURED]`.
    pub assured: bool,
    /// `[UNREPLIED]`.
    pub unreplied: bool,
    /// Conntrack zone.
    pub zone: u16,
    /// Entry id (`conntrack -o id`).
    pub id: Option<u32>,
    /// Seconds since the connection started (`delta-time`, with
    /// `nf_conntrack_timestamp`).
    pub age_secs: Option<u64>,
}

/// One tuple being filled from `key=value` words.
#[derive(Default)]
struct PartialTuple {
    src: Option<IpAddr>,
    dst: Option<IpAddr>,
    sport: Option<u16>,
    dport: Option<u16>,
    packets: Option<u64>,
    bytes: Option<u64>,
}

impl PartialTuple {
    fn tuple(&self) -> Option<FlowTuple> {
        Some(FlowTuple { src: self.src?, dst: self.dst?, sport: self.sport, dport: self.dport })
    }
}

/// Parses one line of `/proc/net/nf_conntrack`, `conntrack -L` or
/// `conntrack -L -o extended[,id]`.
pub fn parse_conntrack_line(line: &str) -> Result<ConntrackEntry, ProbeError> {
    parse_line(line, 0)
}

fn parse_line(line: &str, number: usize) -> Result<ConntrackEntry, ProbeError> {
    let mut words = line.split_ascii_whitespace().peekable();
    // `/proc` and `-o extended` start with the layer 3 name and number.
    if matches!(words.peek(), Some(&("ipv4" | "ipv6"))) {
        words.next();
        words.next();
    }
    let _name = words.next().ok_or(ProbeError::Malformed { line: number, reason: "empty line" })?;
    let protocol_text = words.next().unwrap_or("");
    let protocol = dec_u32(protocol_text)
        .and_then(|p| u8::try_from(p).ok())
        .ok_or_else(|| bad(number, "protocol number", protocol_text))?;
    // The timeout.
    words.next();
    let mut entry_state = None;
    let mut tuples = [PartialTuple::default(), PartialTuple::default()];
    let mut current = 0usize;
    let (mut assured, mut unreplied, mut zone, mut id, mut age) = (false, false, 0u16, None, None);
    for word in words {
        let Some((key, value)) = word.split_once('=') else {
            match word {
                "[ASSURED]" => assured = true,
                "[UNREPLIED]" => unreplied = true,
                w if w.starts_with('[') => {}
                w if w.bytes().all(|b| b.is_ascii_uppercase() || b == b'_') && entry_state.is_none() => {
                    entry_state = Some(w.chars().take(16).collect());
                }
                _ => {}
            }
            continue;
        };
        let number_of = |field: &'static str| dec_u64(value).ok_or_else(|| bad(number, field, value));
        let port = |field: &'static str| {
            dec_u32(value).and_then(|p| u16::try_from(p).ok()).ok_or_else(|| bad(number, field, value))
        };
        match key {
            "src" => {
                // A second `src` starts the reply tuple.
                if tuples[current].src.is_some() {
                    current = 1;
                    if tuples[1].src.is_some() {
                        return Err(ProbeError::Malformed { line: number, reason: "more than two tuples" });
                    }
                }
                tuples[current].src = Some(value.parse().map_err(|_| bad(number, "src", value))?);
            }
            "dst" => tuples[current].dst = Some(value.parse().map_err(|_| bad(number, "dst", value))?),
            "sport" => tuples[current].sport = Some(port("sport")?),
            "dport" => tuples[current].dport = Some(port("dport")?),
            // ICMP has no ports; its echo id tells sessions apart.
            "id" if tuples[current].src.is_some()
                && tuples[current].sport.is_none()
                && protocol_has_echo_id(protocol) =>
            {
                tuples[current].sport = Some(port("icmp id")?);
            }
            "id" => id = Some(dec_u32(value).ok_or_else(|| bad(number, "id", value))?),
            "packets" => tuples[current].packets = Some(number_of("packets")?),
            "bytes" => tuples[current].bytes = Some(number_of("bytes")?),
            "zone" => {
                zone = dec_u32(value).and_then(|z| u16::try_from(z).ok()).ok_or_else(|| bad(number, "zone", value))?
            }
            "delta-time" => age = Some(number_of("delta-time")?),
            _ => {}
        }
    }
    let [original, reply] = tuples;
    let (Some(o), Some(r)) = (original.tuple(), reply.tuple()) else {
        return Err(ProbeError::Malformed { line: number, reason: "expected original and reply src= dst=" });
    };
    Ok(ConntrackEntry {
        protocol,
        state: entry_state,
        original: o,
        reply: r,
        orig_packets: original.packets,
        orig_bytes: original.bytes,
        reply_packets: reply.packets,
        reply_bytes: reply.bytes,
        assured,
        unreplied,
        zone,
        id,
        age_secs: age,
    })
}

fn protocol_has_echo_id(protocol: u8) -> bool {
    matches!(protocol, 1 | 58)
}

/// Parses a whole table; conntrack-tools' closing summary line is skipped.
pub fn parse_conntrack_table(text: &str) -> Parsed<ConntrackEntry> {
    let mut parsed = Parsed::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        if line.trim().is_empty() || line.starts_with("conntrack v") {
            continue;
        }
        match parse_line(line, number) {
            Ok(entry) => parsed.push_bounded(entry, MAX_CONNTRACK_ENTRIES, number),
            Err(error) => parsed.skip(error),
        }
    }
    parsed
}

/// An application: its short name and IP protocol.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ApplicationKey {
    /// Short name (`https`, `dns`, `tcp-other`, ...).
    pub name: String,
    /// IP protocol number.
    pub protocol: u8,
}

/// Names applications by protocol and server port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplicationTable {
    by_port: HashMap<(u8, u16), String>,
}

const TCP: u8 = 6;
const UDP: u8 = 17;

impl ApplicationTable {
    /// The well-known services.
    pub fn builtin() -> Self {
        let mut by_port = HashMap::new();
        let mut add = |protocols: &[u8], ports: &[u16], name: &str| {
            for &protocol in protocols {
                for &port in ports {
                    by_port.insert((protocol, port), name.to_owned());
                }
            }
        };
        add(&[TCP], &[80, 8080], "http");
        add(&[TCP], &[443], "https");
        add(&[UDP], &[443], "quic");
        add(&[TCP, UDP], &[53], "dns");
        add(&[TCP], &[853], "dns-over-tls");
        add(&[UDP], &[123], "ntp");
        add(&[TCP], &[22], "ssh");
        add(&[TCP], &[25, 465, 587], "smtp");
        add(&[TCP], &[143, 993], "imap");
        add(&[TCP], &[110, 995], "pop3");
        add(&[UDP], &[67, 68], "dhcp");
        add(&[TCP, UDP], &[5060], "sip");
        add(&[TCP], &[5061], "sip");
        add(&[UDP, TCP], &[3478, 3479], "stun");
        add(&[TCP, UDP], &[3389], "rdp");
        add(&[UDP], &[500, 4500], "ipsec");
        add(&[UDP, TCP], &[1194], "openvpn");
        add(&[UDP], &[51820], "wireguard");
        add(&[TCP], &[1883, 8883], "mqtt");
        add(&[TCP], &[5222], "xmpp");
        add(&[UDP], &[161, 162], "snmp");
        add(&[UDP], &[514], "syslog");
        add(&[TCP], &[21], "ftp");
        add(&[TCP], &[23], "telnet");
        add(&[UDP], &[1900], "ssdp");
        add(&[UDP], &[5353], "mdns");
        Self { by_port }
    }

    /// Names `protocol`/`port` `name` (1 to 32 of `a-z`, `0-9`, `.`, `_`,
    /// `-`), replacing a built-in name.
    pub fn with_override(mut self, protocol: u8, port: u16, name: &str) -> Result<Self, ProbeError> {
        let valid = (1..=32).contains(&name.len())
            && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
        if !valid {
            return Err(bad(0, "application name", name));
        }
        self.by_port.insert((protocol, port), name.to_owned());
        Ok(self)
    }

    /// The application of a session: by its server port (the original
    /// direction's destination), or by protocol when it has no ports.
    pub fn classify(&self, entry: &ConntrackEntry) -> ApplicationKey {
        let protocol = entry.protocol;
        let name = match (protocol, entry.original.dport) {
            (_, Some(port)) => match self.by_port.get(&(protocol, port)) {
                Some(name) => name.clone(),
                None if protocol == TCP => "tcp-other".to_owned(),
                None if protocol == UDP => "udp-other".to_owned(),
                None => "other".to_owned(),
            },
            (1, None) => "icmp".to_owned(),
            (58, None) => "icmpv6".to_owned(),
            (47, None) => "gre".to_owned(),
            (50, None) => "esp".to_owned(),
            _ => "other".to_owned(),
        };
        ApplicationKey { name, protocol }
    }
}

/// What [`SessionTracker::observe`] found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SessionSummary {
    /// Since the previous snapshot, ms (0 for the first).
    pub interval_ms: u64,
    /// Per application, sorted by name then protocol.
    pub applications: Vec<ApplicationSessions>,
    /// Sessions open now.
    pub active_sessions: u32,
    /// Open sessions beyond the tracking limit.
    pub untracked_sessions: u32,
    /// Per client and destination, when the tracker was asked for them
    /// ([`SessionTracker::per_destination`]); in no particular order.
    pub destinations: Vec<DestinationSessions>,
}

/// One client's sessions to one destination address, protocol and port
/// over the interval (sessions that ended are in the per-application
/// summary only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestinationSessions {
    /// The client: the original direction's source, before NAT.
    pub client: IpAddr,
    /// The destination: the original direction's destination.
    pub destination: IpAddr,
    /// IP protocol number.
    pub protocol: u8,
    /// Destination port, for protocols with ports.
    pub port: Option<u16>,
    /// The application the port names.
    pub application: String,
    /// Sessions and traffic.
    pub counters: DestinationCounters,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct SessionKey {
    zone: u16,
    protocol: u8,
    original: FlowTuple,
}

#[derive(Debug, Clone)]
struct Followed {
    application: u16,
    first_seen_ms: u64,
    last_seen_ms: u64,
    counters: [u64; 4],
}

/// Follows sessions across snapshots of the connection tracking table.
#[derive(Debug)]
pub struct SessionTracker {
    max_tracked: usize,
    applications: ApplicationTable,
    /// Application keys by index, so each followed session holds two bytes.
    names: Vec<ApplicationKey>,
    name_index: HashMap<ApplicationKey, u16>,
    sessions: HashMap<SessionKey, Followed>,
    last_ms: Option<u64>,
    per_destination: bool,
}

impl SessionTracker {
    /// A tracker following at most `max_tracked` sessions.
    pub fn new(max_tracked: usize, applications: ApplicationTable) -> Self {
        Self {
            max_tracked,
            applications,
            names: Vec::new(),
            name_index: HashMap::new(),
            sessions: HashMap::new(),
            last_ms: None,
            per_destination: false,
        }
    }

    /// Whether [`SessionTracker::observe`] also sums sessions per client
    /// and destination ([`SessionSummary::destinations`]).
    pub fn per_destination(&mut self, on: bool) {
        self.per_destination = on;
    }

    /// How many sessions are being followed.
    pub fn tracked(&self) -> usize {
        self.sessions.len()
    }

    fn application_index(&mut self, key: ApplicationKey) -> u16 {
        if let Some(&index) = self.name_index.get(&key) {
            return index;
        }
        // Names are bounded by the table (plus three fallbacks per
        // protocol), far below u16.
        let index = u16::try_from(self.names.len()).unwrap_or(u16::MAX);
        self.names.push(key.clone());
        self.name_index.insert(key, index);
        index
    }

    /// Takes the table as it is now (`now_ms` on a monotonic clock) and
    /// says what happened since the previous one.
    pub fn observe(&mut self, snapshot: &[ConntrackEntry], now_ms: u64) -> SessionSummary {
        let baseline = self.last_ms.is_none();
        let interval_ms = self.last_ms.map_or(0, |last| now_ms.saturating_sub(last));
        self.last_ms = Some(now_ms);
        let mut per_app: BTreeMap<ApplicationKey, ApplicationSessions> = BTreeMap::new();
        let mut seen: HashMap<SessionKey, ()> = HashMap::with_capacity(snapshot.len().min(self.max_tracked));
        let mut summary = SessionSummary { interval_ms, ..SessionSummary::default() };
        // Bounded by the snapshot, itself bounded by the parser.
        let mut destinations: HashMap<(IpAddr, IpAddr, u8, Option<u16>), DestinationSessions> = HashMap::new();
        for entry in snapshot {
            let key = SessionKey { zone: entry.zone, protocol: entry.protocol, original: entry.original };
            if seen.insert(key, ()).is_some() {
                continue;
            }
            summary.active_sessions = summary.active_sessions.saturating_add(1);
            let app_key = self.applications.classify(entry);
            let counters = [
                entry.orig_bytes.unwrap_or(0),
                entry.reply_bytes.unwrap_or(0),
                entry.orig_packets.unwrap_or(0),
                entry.reply_packets.unwrap_or(0),
            ];
            let room = self.sessions.len() < self.max_tracked;
            let mut started = false;
            let delta = match self.sessions.get_mut(&key) {
                Some(followed) => {
                    followed.last_seen_ms = now_ms;
                    let previous = std::mem::replace(&mut followed.counters, counters);
                    let reused = counters.iter().zip(previous).any(|(now, before)| *now < before);
                    if reused {
                        // The kernel reused the tuple for a new connection.
                        bump(&mut per_app, &app_key).sessions_started += 1;
                        started = true;
                        followed.first_seen_ms = now_ms;
                        counters
                    } else {
                        [0, 1, 2, 3].map(|i| counters[i] - previous[i])
                    }
                }
                None if room => {
                    let application = self.application_index(app_key.clone());
                    let first_seen_ms =
                        entry.age_secs.map_or(now_ms, |age| now_ms.saturating_sub(age.saturating_mul(1000)));
                    self.sessions.insert(key, Followed { application, first_seen_ms, last_seen_ms: now_ms, counters });
                    if baseline {
                        // Before the first snapshot nothing was watched: its
                        // sessions are open, not new, and their bytes are
                        // not this interval's.
                        [0; 4]
                    } else {
                        bump(&mut per_app, &app_key).sessions_started += 1;
                        started = true;
                        counters
                    }
                }
                None => {
                    summary.untracked_sessions = summary.untracked_sessions.saturating_add(1);
                    [0; 4]
                }
            };
            let app = bump(&mut per_app, &app_key);
            app.active_sessions = app.active_sessions.saturating_add(1);
            app.bytes_out = app.bytes_out.saturating_add(delta[0]);
            app.bytes_in = app.bytes_in.saturating_add(delta[1]);
            app.packets_out = app.packets_out.saturating_add(delta[2]);
            app.packets_in = app.packets_in.saturating_add(delta[3]);
            if self.per_destination {
                let original = entry.original;
                let row = destinations
                    .entry((original.src, original.dst, entry.protocol, original.dport))
                    .or_insert_with(|| DestinationSessions {
                        client: original.src,
                        destination: original.dst,
                        protocol: entry.protocol,
                        port: original.dport,
                        application: app_key.name.clone(),
                        counters: DestinationCounters::default(),
                    });
                row.counters.add(&DestinationCounters {
                    active_sessions: 1,
                    sessions_started: u32::from(started),
                    bytes_out: delta[0],
                    bytes_in: delta[1],
                    packets_out: delta[2],
                    packets_in: delta[3],
                });
            }
        }
        summary.destinations = destinations.into_values().collect();
        let ended: Vec<SessionKey> = self.sessions.keys().filter(|key| !seen.contains_key(key)).copied().collect();
        for key in ended {
            let Some(followed) = self.sessions.remove(&key) else { continue };
            let Some(app_key) = self.names.get(usize::from(followed.application)).cloned() else { continue };
            let duration = followed.last_seen_ms.saturating_sub(followed.first_seen_ms);
            let app = bump(&mut per_app, &app_key);
            app.sessions_ended = app.sessions_ended.saturating_add(1);
            app.ended_duration_ms_total = app.ended_duration_ms_total.saturating_add(duration);
            app.ended_duration_ms_max = app.ended_duration_ms_max.max(duration);
        }
        summary.applications = fold_overflow(per_app);
        summary
    }
}

fn bump<'a>(
    per_app: &'a mut BTreeMap<ApplicationKey, ApplicationSessions>,
    key: &ApplicationKey,
) -> &'a mut ApplicationSessions {
    per_app.entry(key.clone()).or_insert_with(|| ApplicationSessions {
        application: BoundedString::truncating(&key.name),
        protocol: key.protocol,
        ..ApplicationSessions::default()
    })
}

/// At most [`MAX_SUMMARY_APPLICATIONS`]: the busiest stay and the rest are
/// added up in one `other` entry (protocol 0). Only custom application
/// names can get there: the built-in ones and fallbacks are far fewer.
fn fold_overflow(per_app: BTreeMap<ApplicationKey, ApplicationSessions>) -> Vec<ApplicationSessions> {
    let mut all: Vec<ApplicationSessions> = per_app.into_values().collect();
    if all.len() <= MAX_SUMMARY_APPLICATIONS {
        return all;
    }
    all.sort_by_key(|a| std::cmp::Reverse(a.bytes_in.saturating_add(a.bytes_out)));
    let rest = all.split_off(MAX_SUMMARY_APPLICATIONS - 1);
    let mut other = ApplicationSessions {
        application: BoundedString::truncating("other"),
        protocol: 0,
        ..ApplicationSessions::default()
    };
    for a in rest {
        other.active_sessions = other.active_sessions.saturating_add(a.active_sessions);
        other.sessions_started = other.sessions_started.saturating_add(a.sessions_started);
        other.sessions_ended = other.sessions_ended.saturating_add(a.sessions_ended);
        other.bytes_out = other.bytes_out.saturating_add(a.bytes_out);
        other.bytes_in = other.bytes_in.saturating_add(a.bytes_in);
        other.packets_out = other.packets_out.saturating_add(a.packets_out);
        other.packets_in = other.packets_in.saturating_add(a.packets_in);
        other.ended_duration_ms_total = other.ended_duration_ms_total.saturating_add(a.ended_duration_ms_total);
        other.ended_duration_ms_max = other.ended_duration_ms_max.max(a.ended_duration_ms_max);
    }
    all.push(other);
    all.sort_by(|a, b| (a.application.as_str(), a.protocol).cmp(&(b.application.as_str(), b.protocol)));
    all
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const PROC: &str = include_str!("../../tests/fixtures/probe/commands/nf_conntrack.txt");
    const EXTENDED_ID: &str = include_str!("../../tests/fixtures/probe/commands/conntrack-extended-id.txt");

    #[test]
    fn proc_table_of_an_openwrt_router() {
        let parsed = parse_conntrack_table(PROC);
        assert_eq!(parsed.skipped, 0, "{:?}", parsed.first_error);
        assert_eq!(parsed.items.len(), 12);
        let https = &parsed.items[0];
        assert_eq!((https.protocol, https.state.as_deref(), https.assured), (6, Some("ESTABLISHED"), true));
        assert_eq!(https.original.src, "192.168.1.23".parse::<IpAddr>().unwrap());
        assert_eq!((https.original.sport, https.original.dport), (Some(51234), Some(443)));
        assert_eq!(https.reply.dst, "203.0.113.7".parse::<IpAddr>().unwrap(), "after NAT");
        assert_eq!((https.orig_packets, https.orig_bytes, https.reply_bytes), (Some(12), Some(3456), Some(9876)));
        let unreplied = parsed.items.iter().find(|e| e.unreplied).unwrap();
        assert_eq!(unreplied.protocol, 17);
        let icmp = parsed.items.iter().find(|e| e.protocol == 1).unwrap();
        assert_eq!((icmp.original.sport, icmp.original.dport), (Some(1234), None), "the echo id tells pings apart");
        let v6 = parsed.items.iter().find(|e| e.original.src.is_ipv6()).unwrap();
        assert_eq!(v6.original.dport, Some(443));
        let no_acct = parsed.items.iter().find(|e| e.protocol == 47).unwrap();
        assert_eq!((no_acct.orig_bytes, no_acct.original.dport), (None, None));
        assert_eq!(parsed.items.iter().find(|e| e.age_secs.is_some()).unwrap().age_secs, Some(93));
    }

    #[test]
    fn conntrack_tool_output_with_ids() {
        let parsed = parse_conntrack_table(EXTENDED_ID);
        assert_eq!(parsed.skipped, 0, "{:?}", parsed.first_error);
        assert_eq!(parsed.items.len(), 3, "the summary line is not an entry");
        assert_eq!(parsed.items[0].id, Some(3_735_928_559));
        let plain = parse_conntrack_line("tcp      6 431999 ESTABLISHED src=10.0.0.2 dst=10.0.0.1 sport=5000 dport=22 src=10.0.0.1 dst=10.0.0.2 sport=22 dport=5000 [ASSURED] mark=0 use=1").unwrap();
        assert_eq!((plain.protocol, plain.original.dport, plain.zone), (6, Some(22), 0));
    }

    #[test]
    fn malformed_lines_are_named_and_skipped() {
        let text = format!("{PROC}ipv4 2 tcp 6 1 ESTABLISHED src=1.2.3.4 dst=5.6.7.8 sport=99999 dport=1 src=5.6.7.8 dst=1.2.3.4\nipv4 2 tcp x\nipv4 2 udp 17 30 src=1.1.1.1\n");
        let parsed = parse_conntrack_table(&text);
        assert_eq!((parsed.items.len(), parsed.skipped), (12, 3));
        assert!(parsed.first_error.unwrap().to_string().contains("sport"));
        let cut = &PROC[..PROC.len() - 150];
        assert_eq!(parse_conntrack_table(cut).items.len(), 11, "a cut last line is skipped, the rest kept");
    }

    #[test]
    fn applications_by_server_port() {
        let table = ApplicationTable::builtin().with_override(6, 8443, "intranet").unwrap();
        assert!(ApplicationTable::builtin().with_override(6, 1, "Bad Name").is_err());
        let parsed = parse_conntrack_table(PROC);
        let names: BTreeMap<String, usize> = parsed.items.iter().fold(BTreeMap::new(), |mut m, e| {
            *m.entry(table.classify(e).name).or_default() += 1;
            m
        });
        let expect = [
            ("dns", 2),
            ("gre", 1),
            ("https", 3),
            ("icmp", 1),
            ("intranet", 1),
            ("mqtt", 1),
            ("ntp", 1),
            ("quic", 1),
            ("udp-other", 1),
        ];
        assert_eq!(names, expect.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect::<BTreeMap<_, _>>());
    }

    fn entry(dport: u16, sport: u16, out: u64, into: u64) -> ConntrackEntry {
        parse_conntrack_line(&format!(
            "ipv4 2 tcp 6 100 ESTABLISHED src=10.0.0.2 dst=192.0.2.1 sport={sport} dport={dport} packets={out} bytes={} src=192.0.2.1 dst=203.0.113.7 sport={dport} dport={sport} packets={into} bytes={} [ASSURED] mark=0 zone=0 use=1",
            out * 100,
            into * 100
        ))
        .unwrap()
    }

    fn app<'a>(summary: &'a SessionSummary, name: &str) -> &'a ApplicationSessions {
        summary.applications.iter().find(|a| a.application.as_str() == name).unwrap()
    }

    #[test]
    fn sessions_add_up_per_client_and_destination_only_when_asked() {
        let mut tracker = SessionTracker::new(100, ApplicationTable::builtin());
        assert!(tracker.observe(&[entry(443, 5000, 10, 20)], 1_000).destinations.is_empty(), "off by default");
        tracker.per_destination(true);
        let summary =
            tracker.observe(&[entry(443, 5000, 15, 40), entry(443, 5001, 2, 3), entry(22, 6000, 1, 1)], 31_000);
        let mut rows = summary.destinations;
        rows.sort_by_key(|r| r.port);
        assert_eq!(rows.len(), 2, "two sessions to one port are one row");
        let ssh = &rows[0];
        assert_eq!((ssh.application.as_str(), ssh.port, ssh.counters.sessions_started), ("ssh", Some(22), 1));
        let https = &rows[1];
        assert_eq!(https.client, "10.0.0.2".parse::<IpAddr>().unwrap());
        assert_eq!(https.destination, "192.0.2.1".parse::<IpAddr>().unwrap(), "before NAT");
        assert_eq!((https.counters.active_sessions, https.counters.sessions_started), (2, 1));
        assert_eq!((https.counters.bytes_out, https.counters.bytes_in), (500 + 200, 2_000 + 300));
    }

    #[test]
    fn sessions_start_grow_end_and_reuse_tuples() {
        let mut tracker = SessionTracker::new(100, ApplicationTable::builtin());
        let baseline = tracker.observe(&[entry(443, 5000, 10, 20)], 1_000);
        assert_eq!((baseline.interval_ms, baseline.active_sessions), (0, 1));
        let https = app(&baseline, "https");
        assert_eq!((https.sessions_started, https.bytes_out, https.active_sessions), (0, 0, 1), "open, not new");

        let grown = tracker.observe(&[entry(443, 5000, 15, 40), entry(22, 6000, 3, 4)], 31_000);
        assert_eq!(grown.interval_ms, 30_000);
        let https = app(&grown, "https");
        assert_eq!((https.bytes_out, https.bytes_in, https.packets_out, https.packets_in), (500, 2_000, 5, 20));
        let ssh = app(&grown, "ssh");
        assert_eq!((ssh.sessions_started, ssh.bytes_out, ssh.bytes_in), (1, 300, 400), "a new session's bytes so far");

        let ended = tracker.observe(&[entry(22, 6000, 1, 1)], 61_000);
        let https = app(&ended, "https");
        assert_eq!((https.sessions_ended, https.active_sessions, https.ended_duration_ms_total), (1, 0, 30_000));
        let ssh = app(&ended, "ssh");
        assert_eq!((ssh.sessions_started, ssh.bytes_out), (1, 100), "smaller counters: the tuple was reused");
        assert_eq!(ended.active_sessions, 1);
        assert_eq!(tracker.tracked(), 1);
        // The clock going back is an empty interval, not a panic.
        assert_eq!(tracker.observe(&[], 5).interval_ms, 0);
    }

    #[test]
    fn memory_is_capped() {
        let mut tracker = SessionTracker::new(16, ApplicationTable::builtin());
        let many: Vec<_> = (0..40).map(|i| entry(443, 10_000 + i, 1, 1)).collect();
        let summary = tracker.observe(&many, 0);
        assert_eq!((summary.active_sessions, summary.untracked_sessions, tracker.tracked()), (40, 24, 16));
        assert_eq!(app(&summary, "https").active_sessions, 40);
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,300}") {
            let _ = parse_conntrack_table(&text);
        }

        #[test]
        fn mutated_fixture_never_panics(at in 0usize..3000, junk in "[ -~]{0,30}") {
            let end = at.min(PROC.len());
            let _ = parse_conntrack_table(&format!("{}{junk}{}", &PROC[..end], &PROC[end..]));
        }

        #[test]
        fn tracker_invariants(
            rounds in prop::collection::vec(prop::collection::vec((0u16..6, 0u16..8, 0u64..50, 0u64..50), 0..20), 1..8),
            cap in 1usize..12,
            clock in prop::collection::vec(any::<u32>(), 8),
        ) {
            let mut tracker = SessionTracker::new(cap, ApplicationTable::builtin());
            tracker.per_destination(true);
            for (round, snapshot) in rounds.iter().enumerate() {
                let entries: Vec<_> = snapshot.iter().map(|(port, sport, o, i)| entry([22, 53, 80, 443, 8883, 9999][usize::from(*port)], 40_000 + sport, *o, *i)).collect();
                let summary = tracker.observe(&entries, u64::from(clock[round]));
                prop_assert!(tracker.tracked() <= cap);
                let sum: u32 = summary.applications.iter().map(|a| a.active_sessions).sum();
                prop_assert_eq!(sum, summary.active_sessions);
                prop_assert!(summary.untracked_sessions <= summary.active_sessions);
                let per_destination: u32 = summary.destinations.iter().map(|d| d.counters.active_sessions).sum();
                prop_assert_eq!(per_destination, summary.active_sessions);
                let bytes = |f: fn(&DestinationCounters) -> u64| summary.destinations.iter().map(|d| f(&d.counters)).sum::<u64>();
                let app_bytes: u64 = summary.applications.iter().map(|a| a.bytes_out + a.bytes_in).sum();
                prop_assert_eq!(bytes(|c| c.bytes_out) + bytes(|c| c.bytes_in), app_bytes);
            }
        }
    }
}
