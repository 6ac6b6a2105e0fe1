//! Event triggers: when a header-only capture starts by itself.
//!
//! A small monitoring capture (see [`monitor_filter`]) feeds every packet to
//! an [`EventDetector`]. When the detector sees one of the configured events
//! it returns a [`Trigger`]: the runtime then captures headers for the rule's
//! window, within [`super::CaptureLimits`], and only if
//! [`super::CaptureSettings::allowed`] says so. The detector is sans-IO: packets
//! and the current time go in, triggers and the next deadline come out.
//!
//! # What fires
//!
//! | Event | Fires on |
//! |-------|----------|
//! | `dhcp-timeout` | a DHCPDISCOVER or DHCPREQUEST (UDP to port 67, BOOTREQUEST) with no DHCPOFFER or DHCPACK for its transaction id within [`DHCP_TIMEOUT_MS`] (at [`EventDetector::poll`]); a DHCPNAK at once |
//! | `dns-failure` | a DNS response (UDP from port 53) with RCODE 2 SERVFAIL, 3 NXDOMAIN or 5 REFUSED; a standard query (UDP to port 53) with no response within [`DNS_TIMEOUT_MS`] |
//! | `auth-failure` | an EAP Failure inside EAPOL; an 802.11 deauthentication or disassociation whose reason is an RSN or 802.1X failure (14 to 24, see [`AUTH_FAILURE_REASONS`]); an 802.11 authentication frame whose status is a failure (not 0, nor the SAE flow codes 76, 126, 127) |
//! | `association-failure` | an 802.11 (re)association response whose status is not 0, nor 30 (the PMF "try again later" comeback that clients follow by themselves) |
//!
//! Each rule fires at most once per cooldown, which is never shorter than its
//! own window. With no rules the detector does nothing and holds nothing.
//!
//! # Read on the device only
//!
//! Detection needs a few fields past the header boundary, and reads them from
//! `raw` (the packet as libpcap gave it, at most the snap length) only while
//! [`EventDetector::observe`] runs: the BOOTP op, transaction id, magic
//! cookie and option 53 (message type) of DHCP; the DNS header's id, QR,
//! opcode and RCODE; the first fields of an 802.11 management body (reason or
//! status code). Options other than 53, query names, answers and
//! information elements are skipped or never looked at.
//!
//! # What is kept
//!
//! Invariant (tested): no byte of `raw` past the header boundary is stored in
//! the detector or in a [`Trigger`]; from past it the detector keeps only the
//! fixed-width numbers it needs to match answers (DHCP transaction id and
//! message type, DNS query id), never bytes. What the detector keeps:
//! - the pre-trigger ring: the `kept` [`CapturedPacket`]s, which the caller
//!   builds header-only with [`CapturedPacket::from_packet`] and which the
//!   detector cuts again with [`CapturedPacket::enforce`] before storing;
//! - pending DHCP and DNS transactions: those numbers, a deadline, and
//!   addresses and ports read from the headers, at most [`MAX_PENDING`] per
//!   table, oldest evicted first;
//! - per rule, when it last fired.
//!
//! A trigger's `reason` is built from those numbers, addresses and fixed
//! descriptions: never a name, an option or any other payload text.
//!
//! Memory is bounded: at most [`MAX_PRE_TRIGGER_PACKETS`] packets of at most
//! [`super::MAX_HEADER_BYTES`] each in the ring (allocated once, in
//! [`EventDetector::new`]), and two tables of [`MAX_PENDING`] small entries.

use std::collections::VecDeque;
use std::fmt;
use std::net::IpAddr;

use serde::Deserialize;

use glimpse_common::capture::{header_boundary, Boundary, CapturedPacket, CutReason, Layer, LinkType};

/// How long a DHCPDISCOVER or DHCPREQUEST waits for its offer or ACK.
pub const DHCP_TIMEOUT_MS: i64 = 10_000;
/// How long a DNS query waits for its response.
pub const DNS_TIMEOUT_MS: i64 = 5_000;
/// Most pending transactions per table (DHCP, DNS); the oldest is evicted.
pub const MAX_PENDING: usize = 256;
/// Longest capture window a rule may ask for, in seconds.
pub const MAX_WINDOW_SECS: u32 = 300;
/// Most packets a rule may keep from before its trigger.
pub const MAX_PRE_TRIGGER_PACKETS: u32 = 1024;
/// Longest cooldown a rule may ask for, in seconds (one day).
pub const MAX_COOLDOWN_SECS: u32 = 86_400;

/// 802.11 deauthentication and disassociation reason codes that count as an
/// authentication failure: RSN and 802.1X failures (802.11-2020 table 9-49).
/// Leaving, inactivity and load (1 to 8) are ordinary and do not fire.
pub const AUTH_FAILURE_REASONS: [u16; 11] = [14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24];

/// A kind of event that can trigger a capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum EventKind {
    /// A DHCP exchange that got no answer in time, or a DHCPNAK.
    DhcpTimeout,
    /// A DNS error response, or a query that got no response in time.
    DnsFailure,
    /// An EAP Failure, or an 802.11 authentication refused or torn down for
    /// a security reason.
    AuthFailure,
    /// An 802.11 (re)association refused.
    AssociationFailure,
}

impl EventKind {
    /// Every event kind.
    pub const ALL: [EventKind; 4] =
        [EventKind::DhcpTimeout, EventKind::DnsFailure, EventKind::AuthFailure, EventKind::AssociationFailure];

    /// The name used in `agent.toml`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::DhcpTimeout => "dhcp-timeout",
            EventKind::DnsFailure => "dns-failure",
            EventKind::AuthFailure => "auth-failure",
            EventKind::AssociationFailure => "association-failure",
        }
    }

    /// The libpcap filter a monitoring capture on `link` needs to see this
    /// event, or `None` if it cannot be seen there.
    ///
    /// DHCP, DNS and EAPOL match on every link that carries them: on 802.11
    /// link types libpcap looks inside unprotected data frames (so on a
    /// monitor interface of an encrypted network only EAPOL is visible,
    /// which is sent before the keys). The 802.11 management frames are
    /// visible only on 802.11 link types (a monitor interface); an access
    /// point's own Ethernet-framed interfaces never show them. VLAN-tagged
    /// frames need `vlan and ...` and are not matched.
    pub fn bpf_filter(self, link: LinkType) -> Option<&'static str> {
        let radio = matches!(link, LinkType::Ieee80211Radiotap | LinkType::Ieee80211);
        let ethernet_like = radio || matches!(link, LinkType::Ethernet | LinkType::LinuxSll | LinkType::LinuxSll2);
        match self {
            EventKind::DhcpTimeout => Some("udp port 67 or udp port 68"),
            EventKind::DnsFailure => Some("udp port 53"),
            EventKind::AuthFailure if radio => Some(
                "ether proto 0x888e or type mgt subtype auth or type mgt subtype deauth or type mgt subtype disassoc",
            ),
            EventKind::AuthFailure if ethernet_like => Some("ether proto 0x888e"),
            EventKind::AssociationFailure if radio => {
                Some("type mgt subtype assoc-resp or type mgt subtype reassoc-resp")
            }
            EventKind::AuthFailure | EventKind::AssociationFailure => None,
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One `[[capture.rules]]` entry: which event starts a capture, and how.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerRule {
    /// The event that fires this rule.
    pub event: EventKind,
    /// How long the capture runs after the trigger, in seconds (1..=300).
    #[serde(default = "default_window_secs")]
    pub window_secs: u32,
    /// How many packets from before the trigger to keep (0..=1024).
    #[serde(default = "default_pre_trigger_packets")]
    pub pre_trigger_packets: u32,
    /// How long after firing this rule stays quiet, in seconds; never
    /// shorter than the window.
    #[serde(default = "default_cooldown_secs")]
    pub cooldown_secs: u32,
}

fn default_window_secs() -> u32 {
    30
}

fn default_pre_trigger_packets() -> u32 {
    64
}

fn default_cooldown_secs() -> u32 {
    60
}

impl TriggerRule {
    /// A rule for `event` with the default window, ring and cooldown.
    pub fn new(event: EventKind) -> Self {
        Self {
            event,
            window_secs: default_window_secs(),
            pre_trigger_packets: default_pre_trigger_packets(),
            cooldown_secs: default_cooldown_secs(),
        }
    }

    /// Problems with the values, one line each.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !(1..=MAX_WINDOW_SECS).contains(&self.window_secs) {
            problems.push(format!("window_secs must be 1..={MAX_WINDOW_SECS}, got {}", self.window_secs));
        }
        if self.pre_trigger_packets > MAX_PRE_TRIGGER_PACKETS {
            problems.push(format!(
                "pre_trigger_packets must be 0..={MAX_PRE_TRIGGER_PACKETS}, got {}",
                self.pre_trigger_packets
            ));
        }
        if self.cooldown_secs > MAX_COOLDOWN_SECS {
            problems.push(format!("cooldown_secs must be 0..={MAX_COOLDOWN_SECS}, got {}", self.cooldown_secs));
        }
        problems
    }

    /// The values forced into their bounds, so that a detector built from
    /// unvalidated rules still keeps its hard bounds.
    fn clamped(&self) -> Self {
        Self {
            event: self.event,
            window_secs: self.window_secs.clamp(1, MAX_WINDOW_SECS),
            pre_trigger_packets: self.pre_trigger_packets.min(MAX_PRE_TRIGGER_PACKETS),
            cooldown_secs: self.cooldown_secs.min(MAX_COOLDOWN_SECS),
        }
    }

    fn window_ms(&self) -> i64 {
        i64::from(self.window_secs) * 1000
    }

    fn cooldown_ms(&self) -> i64 {
        i64::from(self.cooldown_secs.max(self.window_secs)) * 1000
    }
}

/// Problems with a whole `capture.rules` list, each prefixed with its entry:
/// every rule's [`TriggerRule::validate`], and events named twice.
pub fn validate_rules(rules: &[TriggerRule]) -> Vec<String> {
    let mut problems = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        for problem in rule.validate() {
            problems.push(format!("capture.rules[{i}] ({}): {problem}", rule.event));
        }
        if rules[..i].iter().any(|earlier| earlier.event == rule.event) {
            problems.push(format!("capture.rules[{i}]: event {} already has a rule", rule.event));
        }
    }
    problems
}

/// The libpcap filter for a monitoring capture on `link` that sees every
/// event `rules` name (their [`EventKind::bpf_filter`]s, OR-ed). `None` when
/// there is nothing to watch on this link: open no monitoring capture then,
/// because an empty filter would match everything.
pub fn monitor_filter(rules: &[TriggerRule], link: LinkType) -> Option<String> {
    let mut filter = String::new();
    for (i, rule) in rules.iter().enumerate() {
        if rules[..i].iter().any(|earlier| earlier.event == rule.event) {
            continue;
        }
        if let Some(part) = rule.event.bpf_filter(link) {
            if !filter.is_empty() {
                filter.push_str(" or ");
            }
            filter.push('(');
            filter.push_str(part);
            filter.push(')');
        }
    }
    (!filter.is_empty()).then_some(filter)
}

/// A rule fired: capture headers for `window_ms` from `at_ms`.
#[derive(Debug, Clone, PartialEq)]
pub struct Trigger {
    /// The event that fired.
    pub event: EventKind,
    /// When it fired (the `now_ms` passed in).
    pub at_ms: i64,
    /// How long to capture, from the rule.
    pub window_ms: i64,
    /// Up to the rule's `pre_trigger_packets` most recent monitored packets,
    /// oldest first, the triggering packet last; headers only.
    pub pre_trigger: Vec<CapturedPacket>,
    /// What was seen, e.g. `DNS response rcode 3 (NXDOMAIN) for query id
    /// 0x1234 from 198.51.100.2`: numbers, addresses and fixed descriptions,
    /// never names or payload text.
    pub reason: String,
}

/// Watches monitored packets for the configured events. Sans-IO: the caller
/// feeds packets to [`Self::observe`], calls [`Self::poll`] at
/// [`Self::next_deadline`], and starts a capture for each [`Trigger`].
///
/// `now_ms` is any millisecond clock that does not go backwards (a monotonic
/// one is best); if it does, timeouts fire late, never early.
#[derive(Debug)]
pub struct EventDetector {
    /// At most one rule per event (the first configured), values clamped.
    rules: Vec<Armed>,
    /// Header-only packets from before a trigger, oldest first.
    ring: VecDeque<CapturedPacket>,
    /// The ring's bound: the largest `pre_trigger_packets` of the rules.
    ring_cap: usize,
    /// DHCPDISCOVERs and DHCPREQUESTs waiting for their answer, oldest first.
    dhcp: VecDeque<DhcpPending>,
    /// DNS queries waiting for their response, oldest first.
    dns: VecDeque<DnsPending>,
}

#[derive(Debug)]
struct Armed {
    rule: TriggerRule,
    last_fired_ms: Option<i64>,
}

#[derive(Debug, Clone, Copy)]
struct DhcpPending {
    xid: u32,
    /// DHCP message type: 1 DISCOVER or 3 REQUEST.
    message: u8,
    /// The client's MAC, from the link header.
    client: Option<[u8; 6]>,
    deadline_ms: i64,
}

#[derive(Debug, Clone, Copy)]
struct DnsPending {
    id: u16,
    client: Option<IpAddr>,
    client_port: u16,
    server: Option<IpAddr>,
    deadline_ms: i64,
}

/// An event seen, as numbers and addresses; turned into a reason string only
/// if a rule fires.
#[derive(Debug, Clone, Copy)]
enum Seen {
    DhcpNak {
        xid: u32,
        server: Option<IpAddr>,
    },
    DhcpUnanswered(DhcpPending),
    DnsError {
        id: u16,
        rcode: u8,
        server: Option<IpAddr>,
    },
    DnsUnanswered(DnsPending),
    EapFailure {
        id: Option<u8>,
        station: Option<[u8; 6]>,
    },
    /// An 802.11 management frame's reason or status code.
    Wlan {
        subtype: u8,
        code: u16,
        from: Option<[u8; 6]>,
        to: Option<[u8; 6]>,
    },
}

impl Seen {
    fn kind(&self) -> EventKind {
        match self {
            Seen::DhcpNak { .. } | Seen::DhcpUnanswered(_) => EventKind::DhcpTimeout,
            Seen::DnsError { .. } | Seen::DnsUnanswered(_) => EventKind::DnsFailure,
            Seen::EapFailure { .. } => EventKind::AuthFailure,
            Seen::Wlan { subtype: 1 | 3, .. } => EventKind::AssociationFailure,
            Seen::Wlan { .. } => EventKind::AuthFailure,
        }
    }

    fn reason(&self) -> String {
        match *self {
            Seen::DhcpNak { xid, server } => format!("DHCPNAK for xid 0x{xid:08x} from server {}", Ip(server)),
            Seen::DhcpUnanswered(p) => {
                let (request, answer) = if p.message == 1 { ("DHCPDISCOVER", "offer") } else { ("DHCPREQUEST", "ACK") };
                format!(
                    "{request} xid 0x{:08x} from {} got no {answer} within {} s",
                    p.xid,
                    Mac(p.client),
                    DHCP_TIMEOUT_MS / 1000
                )
            }
            Seen::DnsError { id, rcode, server } => format!(
                "DNS response rcode {rcode} ({}) for query id 0x{id:04x} from {}",
                rcode_name(rcode),
                Ip(server)
            ),
            Seen::DnsUnanswered(p) => format!(
                "DNS query id 0x{:04x} from {} port {} to {} got no response within {} s",
                p.id,
                Ip(p.client),
                p.client_port,
                Ip(p.server),
                DNS_TIMEOUT_MS / 1000
            ),
            Seen::EapFailure { id, station } => match id {
                Some(id) => format!("EAP Failure (identifier {id}) to {}", Mac(station)),
                None => format!("EAP Failure to {}", Mac(station)),
            },
            Seen::Wlan { subtype, code, from, to } => {
                let (frame, what, name) = match subtype {
                    1 => ("association response", "status", status_name(code)),
                    3 => ("reassociation response", "status", status_name(code)),
                    11 => ("authentication", "status", status_name(code)),
                    10 => ("disassociation", "reason", reason_name(code)),
                    _ => ("deauthentication", "reason", reason_name(code)),
                };
                format!("802.11 {frame} {what} {code} ({name}) from {} to {}", Mac(from), Mac(to))
            }
        }
    }
}

impl EventDetector {
    /// A detector for `rules`. Values out of bounds are clamped (run
    /// [`validate_rules`] first to report them); for an event named twice
    /// the first rule counts. No rules: a detector that does nothing.
    pub fn new(rules: Vec<TriggerRule>) -> Self {
        let mut armed: Vec<Armed> = Vec::with_capacity(EventKind::ALL.len());
        for rule in rules {
            if !armed.iter().any(|a| a.rule.event == rule.event) {
                armed.push(Armed { rule: rule.clamped(), last_fired_ms: None });
            }
        }
        let ring_cap = armed.iter().map(|a| a.rule.pre_trigger_packets as usize).max().unwrap_or(0);
        let has = |event| armed.iter().any(|a: &Armed| a.rule.event == event);
        let table = |event| if has(event) { MAX_PENDING } else { 0 };
        Self {
            ring: VecDeque::with_capacity(ring_cap),
            ring_cap,
            dhcp: VecDeque::with_capacity(table(EventKind::DhcpTimeout)),
            dns: VecDeque::with_capacity(table(EventKind::DnsFailure)),
            rules: armed,
        }
    }

    /// Whether any rule is configured.
    pub fn enabled(&self) -> bool {
        !self.rules.is_empty()
    }

    /// Looks at one monitored packet. `raw` is the packet as libpcap gave it
    /// (at most the snap length) and is read here only, never stored;
    /// `kept` is its header-only record, cut again and kept in the
    /// pre-trigger ring. Returns a trigger if the packet is an event whose
    /// rule is not cooling down.
    pub fn observe(&mut self, now_ms: i64, link: LinkType, raw: &[u8], mut kept: CapturedPacket) -> Option<Trigger> {
        if self.rules.is_empty() {
            return None;
        }
        if self.ring_cap > 0 {
            // The caller built `kept` header-only; cutting again means the
            // ring holds headers only even if a caller got that wrong.
            kept.enforce();
            if self.ring.len() >= self.ring_cap {
                self.ring.pop_front();
            }
            self.ring.push_back(kept);
        }
        let boundary = header_boundary(link, raw);
        let seen = self.detect(now_ms, raw, &boundary)?;
        self.fire(now_ms, seen)
    }

    /// Fires time-based events: DHCP and DNS transactions past their
    /// deadline. Call at [`Self::next_deadline`], and again until `None`
    /// (one trigger per call).
    pub fn poll(&mut self, now_ms: i64) -> Option<Trigger> {
        while let Some(i) = self.dhcp.iter().position(|p| p.deadline_ms <= now_ms) {
            if let Some(pending) = self.dhcp.remove(i) {
                if let Some(trigger) = self.fire(now_ms, Seen::DhcpUnanswered(pending)) {
                    return Some(trigger);
                }
            }
        }
        while let Some(i) = self.dns.iter().position(|p| p.deadline_ms <= now_ms) {
            if let Some(pending) = self.dns.remove(i) {
                if let Some(trigger) = self.fire(now_ms, Seen::DnsUnanswered(pending)) {
                    return Some(trigger);
                }
            }
        }
        None
    }

    /// When [`Self::poll`] next has something to do, if ever.
    pub fn next_deadline(&self) -> Option<i64> {
        let dhcp = self.dhcp.iter().map(|p| p.deadline_ms);
        let dns = self.dns.iter().map(|p| p.deadline_ms);
        dhcp.chain(dns).min()
    }

    /// Packets in the pre-trigger ring now.
    pub fn buffered(&self) -> usize {
        self.ring.len()
    }

    /// The ring's bound: the largest `pre_trigger_packets` of the rules.
    pub fn ring_capacity(&self) -> usize {
        self.ring_cap
    }

    /// DHCP and DNS transactions waiting for an answer now (at most
    /// [`MAX_PENDING`] each).
    pub fn pending(&self) -> usize {
        self.dhcp.len() + self.dns.len()
    }

    fn armed(&self, event: EventKind) -> bool {
        self.rules.iter().any(|a| a.rule.event == event)
    }

    /// Reads the event, if any, from `raw`'s headers and the few payload
    /// fields named in the module header. Updates the pending tables.
    fn detect(&mut self, now_ms: i64, raw: &[u8], b: &Boundary) -> Option<Seen> {
        let s = &b.summary;
        if s.eapol_type == Some(0) && s.eap_code == Some(4) {
            return Some(Seen::EapFailure { id: s.eap_id, station: s.dst_mac });
        }
        if s.stopped_at == Layer::Ieee80211 && s.cut_reason == CutReason::PayloadStarts && s.wlan_type == Some(0) {
            return wlan_management(raw, b);
        }
        let payload = udp_payload(raw, b)?;
        let (src_port, dst_port) = (s.src_port?, s.dst_port?);
        if (dst_port == 67 || src_port == 67) && self.armed(EventKind::DhcpTimeout) {
            return self.dhcp(now_ms, payload, b, src_port, dst_port);
        }
        if (dst_port == 53 || src_port == 53) && self.armed(EventKind::DnsFailure) {
            return self.dns(now_ms, payload, b, src_port, dst_port);
        }
        None
    }

    fn dhcp(&mut self, now_ms: i64, payload: &[u8], b: &Boundary, src_port: u16, dst_port: u16) -> Option<Seen> {
        let (op, xid, message) = dhcp_fields(payload)?;
        match (op, message) {
            // BOOTREQUEST DISCOVER or REQUEST, from a client or a relay.
            (1, 1 | 3) if dst_port == 67 => {
                // A retransmission keeps the first deadline, or a client
                // retrying every few seconds would never time out.
                if !self.dhcp.iter().any(|p| p.xid == xid) {
                    if self.dhcp.len() >= MAX_PENDING {
                        self.dhcp.pop_front();
                    }
                    let deadline_ms = now_ms.saturating_add(DHCP_TIMEOUT_MS);
                    self.dhcp.push_back(DhcpPending { xid, message, client: b.summary.src_mac, deadline_ms });
                }
                None
            }
            // BOOTREPLY OFFER, ACK or NAK, to a client or a relay. The reply
            // may go to the broadcast MAC, so the xid alone matches.
            (2, 2 | 5 | 6) if src_port == 67 => {
                self.dhcp.retain(|p| p.xid != xid);
                (message == 6).then_some(Seen::DhcpNak { xid, server: b.summary.src_ip })
            }
            _ => None,
        }
    }

    fn dns(&mut self, now_ms: i64, payload: &[u8], b: &Boundary, src_port: u16, dst_port: u16) -> Option<Seen> {
        let id = be16(payload, 0)?;
        let flags = be16(payload, 2)?;
        let response = flags & 0x8000 != 0;
        let opcode = (flags >> 11) & 0x0f;
        let s = &b.summary;
        if response && src_port == 53 {
            let (client, client_port) = (s.dst_ip, dst_port);
            self.dns.retain(|p| !(p.id == id && p.client_port == client_port && p.client == client));
            let rcode = (flags & 0x000f) as u8;
            return matches!(rcode, 2 | 3 | 5).then_some(Seen::DnsError { id, rcode, server: s.src_ip });
        }
        if !response && opcode == 0 && dst_port == 53 {
            let (client, client_port) = (s.src_ip, src_port);
            if !self.dns.iter().any(|p| p.id == id && p.client_port == client_port && p.client == client) {
                if self.dns.len() >= MAX_PENDING {
                    self.dns.pop_front();
                }
                let deadline_ms = now_ms.saturating_add(DNS_TIMEOUT_MS);
                self.dns.push_back(DnsPending { id, client, client_port, server: s.dst_ip, deadline_ms });
            }
        }
        None
    }

    /// Fires `seen`'s rule unless it is cooling down: the ring is drained,
    /// its newest `pre_trigger_packets` go into the trigger.
    fn fire(&mut self, now_ms: i64, seen: Seen) -> Option<Trigger> {
        let event = seen.kind();
        let armed = self.rules.iter_mut().find(|a| a.rule.event == event)?;
        if armed.last_fired_ms.is_some_and(|last| now_ms.saturating_sub(last) < armed.rule.cooldown_ms()) {
            return None;
        }
        armed.last_fired_ms = Some(now_ms);
        let keep = armed.rule.pre_trigger_packets as usize;
        let window_ms = armed.rule.window_ms();
        let skip = self.ring.len().saturating_sub(keep);
        let pre_trigger = self.ring.drain(..).skip(skip).collect();
        Some(Trigger { event, at_ms: now_ms, window_ms, pre_trigger, reason: seen.reason() })
    }
}

/// The reason or status code of an 802.11 management frame, if it is a
/// failure. The body starts at the header boundary; 802.11 fields are
/// little-endian.
fn wlan_management(raw: &[u8], b: &Boundary) -> Option<Seen> {
    let s = &b.summary;
    let body = raw.get(b.header_len..)?;
    let subtype = s.wlan_subtype?;
    let code = match subtype {
        // (Re)association response: capability, status, AID.
        1 | 3 => le16(body, 2).filter(|&status| status != 0 && status != 30)?,
        // Authentication: algorithm, transaction sequence, status.
        11 => le16(body, 4).filter(|status| !matches!(status, 0 | 76 | 126 | 127))?,
        // Disassociation, deauthentication: reason.
        10 | 12 => le16(body, 0).filter(|reason| AUTH_FAILURE_REASONS.contains(reason))?,
        _ => return None,
    };
    let [to, from, _] = s.wlan_addrs;
    Some(Seen::Wlan { subtype, code, from, to })
}

/// The UDP payload, up to the UDP length field, if the headers end with a
/// whole UDP header.
fn udp_payload<'a>(raw: &'a [u8], b: &Boundary) -> Option<&'a [u8]> {
    let s = &b.summary;
    if s.stopped_at != Layer::Udp || s.cut_reason != CutReason::PayloadStarts {
        return None;
    }
    let udp_start = b.header_len.checked_sub(8)?;
    let udp_len = usize::from(be16(raw, udp_start + 4)?);
    let end = udp_start.saturating_add(udp_len).min(raw.len());
    raw.get(b.header_len..end)
}

/// A BOOTP message's op, transaction id and DHCP message type (option 53).
/// Other options are skipped by their lengths, never read.
fn dhcp_fields(bootp: &[u8]) -> Option<(u8, u32, u8)> {
    const MAGIC_COOKIE: u32 = 0x6382_5363;
    let op = *bootp.first()?;
    let xid = be32(bootp, 4)?;
    if be32(bootp, 236)? != MAGIC_COOKIE {
        return None;
    }
    // Each step consumes at least one byte, so this ends.
    let mut options = bootp.get(240..)?;
    loop {
        match *options {
            [0, ref rest @ ..] => options = rest,
            [53, 1, message, ..] => return Some((op, xid, message)),
            [code, len, ref rest @ ..] if code != 255 => options = rest.get(usize::from(len)..)?,
            _ => return None,
        }
    }
}

fn be16(bytes: &[u8], at: usize) -> Option<u16> {
    bytes.get(at..)?.first_chunk().copied().map(u16::from_be_bytes)
}

fn be32(bytes: &[u8], at: usize) -> Option<u32> {
    bytes.get(at..)?.first_chunk().copied().map(u32::from_be_bytes)
}

fn le16(bytes: &[u8], at: usize) -> Option<u16> {
    bytes.get(at..)?.first_chunk().copied().map(u16::from_le_bytes)
}

fn rcode_name(rcode: u8) -> &'static str {
    match rcode {
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        5 => "REFUSED",
        _ => "error",
    }
}

/// 802.11 status codes (802.11-2020 table 9-50), the common failures.
fn status_name(status: u16) -> &'static str {
    match status {
        1 => "unspecified failure",
        10 => "capabilities unsupported",
        11 => "reassociation without association",
        12 => "denied for another reason",
        13 => "authentication algorithm unsupported",
        14 => "unexpected authentication sequence",
        15 => "challenge failure",
        16 => "authentication timeout",
        17 => "AP cannot handle more stations",
        18 => "basic rates unsupported",
        31 => "robust management frame policy violation",
        40 => "invalid element",
        41 => "invalid group cipher",
        42 => "invalid pairwise cipher",
        43 => "invalid AKM",
        44 => "unsupported RSNE version",
        45 => "invalid RSNE capabilities",
        46 => "cipher suite rejected by policy",
        53 => "invalid PMKID",
        123 => "unknown password identifier",
        _ => "failure",
    }
}

/// 802.11 reason codes in [`AUTH_FAILURE_REASONS`] (802.11-2020 table 9-49).
fn reason_name(reason: u16) -> &'static str {
    match reason {
        14 => "MIC failure",
        15 => "4-way handshake timeout",
        16 => "group key handshake timeout",
        17 => "element in 4-way handshake differs",
        18 => "invalid group cipher",
        19 => "invalid pairwise cipher",
        20 => "invalid AKM",
        21 => "unsupported RSNE version",
        22 => "invalid RSNE capabilities",
        23 => "IEEE 802.1X authentication failed",
        24 => "cipher suite rejected by policy",
        _ => "failure",
    }
}

/// A MAC address as `02:00:00:00:00:0a`, or `unknown`.
struct Mac(Option<[u8; 6]>);

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some([a, b, c, d, e, g]) => write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}"),
            None => f.write_str("unknown"),
        }
    }
}

/// An IP address, or `unknown`.
struct Ip(Option<IpAddr>);

impl fmt::Display for Ip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(ip) => ip.fmt(f),
            None => f.write_str("unknown"),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use glimpse_common::bounded::BoundedString;

    use super::*;

    /// Payload that must never leave `raw`: placed in query names, DHCP
    /// options, 802.11 elements and padding.
    const MARKER: &[u8] = b"MARKER-PAYLOAD";
    const CLIENT: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
    const SERVER: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];
    const AP: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0c];
    const BROADCAST: [u8; 6] = [0xff; 6];
    const CLIENT_IP: [u8; 4] = [192, 0, 2, 1];
    const SERVER_IP: [u8; 4] = [198, 51, 100, 2];
    const CLIENT_MAC: &str = "02:00:00:00:00:0a";
    const AP_MAC: &str = "02:00:00:00:00:0c";
    const XID: u32 = 0x1a2b_3c4d;
    const DNS_ID: u16 = 0x1234;

    fn eth(dst: [u8; 6], src: [u8; 6], ethertype: u16) -> Vec<u8> {
        [&dst[..], &src, &ethertype.to_be_bytes()].concat()
    }

    /// IPv4, UDP and the payload.
    fn ipv4_udp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        let udp_len = u16::try_from(8 + payload.len()).unwrap();
        let total = (20 + udp_len).to_be_bytes();
        let mut p = vec![0x45, 0, total[0], total[1], 0, 1, 0x40, 0, 64, 17, 0, 0];
        p.extend(src);
        p.extend(dst);
        p.extend(sport.to_be_bytes());
        p.extend(dport.to_be_bytes());
        p.extend(udp_len.to_be_bytes());
        p.extend([0, 0]);
        p.extend(payload);
        p
    }

    /// A BOOTP/DHCP message with the marker in `sname` and in a host name
    /// option before option 53.
    fn bootp(op: u8, xid: u32, message: u8) -> Vec<u8> {
        let mut m = vec![op, 1, 6, 0];
        m.extend(xid.to_be_bytes());
        m.resize(28, 0);
        m.extend(CLIENT);
        m.resize(44, 0);
        m.extend(MARKER); // sname
        m.resize(236, 0);
        m.extend(0x6382_5363u32.to_be_bytes());
        m.extend([0, 0, 12, MARKER.len() as u8]);
        m.extend(MARKER);
        m.extend([53, 1, message, 255]);
        m
    }

    fn dhcp(op: u8, xid: u32, message: u8) -> Vec<u8> {
        let body = bootp(op, xid, message);
        if op == 1 {
            [eth(BROADCAST, CLIENT, 0x0800), ipv4_udp([0; 4], [255; 4], 68, 67, &body)].concat()
        } else {
            [eth(CLIENT, SERVER, 0x0800), ipv4_udp(SERVER_IP, [255; 4], 67, 68, &body)].concat()
        }
    }

    /// A DNS message for `<MARKER>.example`: a query, or a response with
    /// `rcode`.
    fn dns(id: u16, response: Option<u8>) -> Vec<u8> {
        let flags: u16 = match response {
            Some(rcode) => 0x8180 | u16::from(rcode),
            None => 0x0100,
        };
        let mut m = Vec::new();
        m.extend(id.to_be_bytes());
        m.extend(flags.to_be_bytes());
        m.extend([0, 1, 0, 0, 0, 0, 0, 0]);
        m.push(MARKER.len() as u8);
        m.extend(MARKER);
        m.extend(b"\x07example\x00\x00\x01\x00\x01");
        match response {
            Some(_) => [eth(CLIENT, SERVER, 0x0800), ipv4_udp(SERVER_IP, CLIENT_IP, 53, 40000, &m)].concat(),
            None => [eth(SERVER, CLIENT, 0x0800), ipv4_udp(CLIENT_IP, SERVER_IP, 40000, 53, &m)].concat(),
        }
    }

    /// EAPOL carrying an EAP packet of `code`, then Ethernet padding with
    /// the marker.
    fn eap(code: u8) -> Vec<u8> {
        [eth(CLIENT, AP, 0x888e), vec![2, 0, 0, 4, code, 7, 0, 4], MARKER.to_vec()].concat()
    }

    /// EAPOL carrying an EAP packet of `code` in an unprotected 802.11 data
    /// frame from the AP, as a monitor interface sees it.
    fn eap_wlan(code: u8) -> Vec<u8> {
        let mut p = vec![0, 0, 8, 0, 0, 0, 0, 0];
        p.extend([0x08, 0x02, 0, 0]);
        p.extend(CLIENT);
        p.extend(AP);
        p.extend(AP);
        p.extend([0x20, 0]);
        p.extend([0xaa, 0xaa, 0x03, 0, 0, 0, 0x88, 0x8e]);
        p.extend([2, 0, 0, 4, code, 9, 0, 4]);
        p.extend(MARKER);
        p
    }

    /// Radiotap (no fields), an 802.11 management header from the AP to the
    /// client, then `body` and an SSID element holding the marker.
    fn wlan_mgmt(subtype: u8, body: &[u8]) -> Vec<u8> {
        let mut p = vec![0, 0, 8, 0, 0, 0, 0, 0];
        p.extend([subtype << 4, 0, 0, 0]);
        p.extend(CLIENT);
        p.extend(AP);
        p.extend(AP);
        p.extend([0x10, 0]);
        p.extend(body);
        p.extend([0, MARKER.len() as u8]);
        p.extend(MARKER);
        p
    }

    fn assoc_resp(subtype: u8, status: u16) -> Vec<u8> {
        wlan_mgmt(subtype, &[[0x11, 0x04], status.to_le_bytes(), [0x01, 0xc0]].concat())
    }

    fn link_of(raw: &[u8]) -> LinkType {
        if raw.starts_with(&[0, 0, 8, 0]) {
            LinkType::Ieee80211Radiotap
        } else {
            LinkType::Ethernet
        }
    }

    fn kept(link: LinkType, raw: &[u8]) -> CapturedPacket {
        CapturedPacket::from_packet(link, 0, BoundedString::truncating("mon0"), raw, raw.len() as u32)
    }

    fn feed(d: &mut EventDetector, now_ms: i64, raw: &[u8]) -> Option<Trigger> {
        let link = link_of(raw);
        d.observe(now_ms, link, raw, kept(link, raw))
    }

    fn detector(events: &[EventKind]) -> EventDetector {
        EventDetector::new(events.iter().map(|&e| TriggerRule::new(e)).collect())
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    /// The marker is nowhere in what a trigger carries or the detector holds.
    fn assert_no_marker(d: &EventDetector, trigger: &Trigger) {
        for packet in &trigger.pre_trigger {
            assert!(!contains(&packet.headers, MARKER), "{packet:?}");
            assert_eq!(packet.clone().enforce(), 0);
        }
        assert!(!contains(trigger.reason.as_bytes(), MARKER), "{}", trigger.reason);
        let marker_hex: String = MARKER.iter().map(|b| format!("{b:02x}")).collect();
        let held = format!("{d:?}");
        assert!(!held.contains("MARKER") && !held.contains(&marker_hex), "{held}");
    }

    #[test]
    fn dhcp_discover_without_offer_times_out() {
        let mut d = detector(&[EventKind::DhcpTimeout]);
        let discover = dhcp(1, XID, 1);
        assert!(feed(&mut d, 1_000, &discover).is_none());
        // A retransmission keeps the first deadline.
        assert!(feed(&mut d, 5_000, &discover).is_none());
        assert_eq!((d.pending(), d.next_deadline()), (1, Some(11_000)));
        assert!(d.poll(10_999).is_none());
        let trigger = d.poll(11_000).unwrap();
        assert_eq!((trigger.event, trigger.at_ms, trigger.window_ms), (EventKind::DhcpTimeout, 11_000, 30_000));
        assert_eq!(trigger.reason, "DHCPDISCOVER xid 0x1a2b3c4d from 02:00:00:00:00:0a got no offer within 10 s");
        assert_eq!(trigger.pre_trigger.len(), 2);
        assert_eq!(trigger.pre_trigger[0].headers.as_slice(), &discover[..42]);
        assert_no_marker(&d, &trigger);
        assert_eq!((d.pending(), d.next_deadline(), d.buffered()), (0, None, 0));
        assert!(d.poll(60_000).is_none());
    }

    #[test]
    fn answered_dhcp_does_not_fire() {
        let mut d = detector(&[EventKind::DhcpTimeout]);
        assert!(feed(&mut d, 0, &dhcp(1, XID, 1)).is_none());
        assert!(feed(&mut d, 100, &dhcp(2, XID, 2)).is_none());
        assert!(feed(&mut d, 200, &dhcp(1, XID, 3)).is_none());
        assert!(feed(&mut d, 300, &dhcp(2, XID, 5)).is_none());
        assert_eq!(d.pending(), 0);
        assert!(d.poll(100_000).is_none());
        // A reply to another transaction leaves this one pending.
        assert!(feed(&mut d, 0, &dhcp(1, XID, 3)).is_none());
        assert!(feed(&mut d, 100, &dhcp(2, XID + 1, 5)).is_none());
        assert!(d.poll(10_000).unwrap().reason.starts_with("DHCPREQUEST xid 0x1a2b3c4d"));
    }

    #[test]
    fn dhcp_nak_fires_at_once() {
        let mut d = detector(&[EventKind::DhcpTimeout]);
        assert!(feed(&mut d, 0, &dhcp(1, XID, 3)).is_none());
        let trigger = feed(&mut d, 50, &dhcp(2, XID, 6)).unwrap();
        assert_eq!((trigger.event, trigger.at_ms), (EventKind::DhcpTimeout, 50));
        assert_eq!(trigger.reason, "DHCPNAK for xid 0x1a2b3c4d from server 198.51.100.2");
        assert_eq!(trigger.pre_trigger.len(), 2);
        assert_no_marker(&d, &trigger);
        // The NAK answered the request.
        assert!(d.poll(100_000).is_none());
    }

    #[test]
    fn dns_error_responses_fire() {
        for (rcode, name) in [(2, "SERVFAIL"), (3, "NXDOMAIN"), (5, "REFUSED")] {
            let mut d = detector(&[EventKind::DnsFailure]);
            let trigger = feed(&mut d, 0, &dns(DNS_ID, Some(rcode))).unwrap();
            assert_eq!(trigger.event, EventKind::DnsFailure);
            assert_eq!(
                trigger.reason,
                format!("DNS response rcode {rcode} ({name}) for query id 0x1234 from 198.51.100.2")
            );
            assert_no_marker(&d, &trigger);
        }
        let mut d = detector(&[EventKind::DnsFailure]);
        for rcode in [0, 1, 4] {
            assert!(feed(&mut d, 0, &dns(DNS_ID, Some(rcode))).is_none());
        }
    }

    #[test]
    fn unanswered_dns_query_fires_after_timeout() {
        let mut d = detector(&[EventKind::DnsFailure]);
        assert!(feed(&mut d, 0, &dns(DNS_ID, None)).is_none());
        assert!(feed(&mut d, 10, &dns(DNS_ID + 1, None)).is_none());
        assert!(feed(&mut d, 20, &dns(DNS_ID + 1, Some(0))).is_none());
        assert_eq!(d.next_deadline(), Some(5_000));
        assert!(d.poll(4_999).is_none());
        let trigger = d.poll(5_000).unwrap();
        assert_eq!(
            trigger.reason,
            "DNS query id 0x1234 from 192.0.2.1 port 40000 to 198.51.100.2 got no response within 5 s"
        );
        assert_eq!(trigger.pre_trigger.len(), 3);
        assert_no_marker(&d, &trigger);
        assert_eq!(d.pending(), 0);
    }

    #[test]
    fn eap_failure_fires() {
        let mut d = detector(&[EventKind::AuthFailure]);
        assert!(feed(&mut d, 0, &eap(3)).is_none());
        let trigger = feed(&mut d, 1, &eap(4)).unwrap();
        assert_eq!(trigger.event, EventKind::AuthFailure);
        assert_eq!(trigger.reason, "EAP Failure (identifier 7) to 02:00:00:00:00:0a");
        assert_eq!(trigger.pre_trigger.len(), 2);
        assert_eq!(trigger.pre_trigger[1].headers.as_slice(), &eap(4)[..22]);
        assert_no_marker(&d, &trigger);

        let mut d = detector(&[EventKind::AuthFailure]);
        assert!(feed(&mut d, 0, &eap_wlan(3)).is_none());
        let trigger = feed(&mut d, 0, &eap_wlan(4)).unwrap();
        assert_eq!(trigger.reason, "EAP Failure (identifier 9) to 02:00:00:00:00:0a");
        assert_eq!(trigger.pre_trigger[1].headers.len(), 8 + 24 + 8 + 8);
        assert_no_marker(&d, &trigger);
    }

    #[test]
    fn association_failures_fire() {
        let mut d = detector(&[EventKind::AssociationFailure]);
        assert!(feed(&mut d, 0, &assoc_resp(1, 0)).is_none());
        assert!(feed(&mut d, 0, &assoc_resp(3, 30)).is_none());
        let trigger = feed(&mut d, 0, &assoc_resp(1, 17)).unwrap();
        assert_eq!(trigger.event, EventKind::AssociationFailure);
        assert_eq!(
            trigger.reason,
            format!(
                "802.11 association response status 17 (AP cannot handle more stations) from {AP_MAC} to {CLIENT_MAC}"
            )
        );
        assert_eq!(trigger.pre_trigger.len(), 3);
        assert!(trigger.pre_trigger.iter().all(|p| p.headers.len() == 32));
        assert_no_marker(&d, &trigger);

        let mut d = detector(&[EventKind::AssociationFailure]);
        assert!(feed(&mut d, 0, &assoc_resp(3, 1))
            .unwrap()
            .reason
            .starts_with("802.11 reassociation response status 1 "));
        // A status cut off by the snap length is not read.
        let mut d = detector(&[EventKind::AssociationFailure]);
        assert!(feed(&mut d, 0, &assoc_resp(1, 17)[..8 + 24 + 3]).is_none());
    }

    #[test]
    fn security_deauthentication_fires() {
        let mut d = detector(&[EventKind::AuthFailure]);
        // Leaving (3) and inactivity (4) are ordinary.
        assert!(feed(&mut d, 0, &wlan_mgmt(12, &3u16.to_le_bytes())).is_none());
        assert!(feed(&mut d, 0, &wlan_mgmt(10, &4u16.to_le_bytes())).is_none());
        let trigger = feed(&mut d, 0, &wlan_mgmt(12, &23u16.to_le_bytes())).unwrap();
        assert_eq!(trigger.event, EventKind::AuthFailure);
        assert_eq!(
            trigger.reason,
            format!(
                "802.11 deauthentication reason 23 (IEEE 802.1X authentication failed) from {AP_MAC} to {CLIENT_MAC}"
            )
        );
        assert_no_marker(&d, &trigger);

        let mut d = detector(&[EventKind::AuthFailure]);
        let disassoc = feed(&mut d, 0, &wlan_mgmt(10, &15u16.to_le_bytes())).unwrap();
        assert!(disassoc.reason.starts_with("802.11 disassociation reason 15 (4-way handshake timeout)"));
        // Authentication frames: algorithm, sequence, status.
        let mut d = detector(&[EventKind::AuthFailure]);
        let auth = |status: u16| wlan_mgmt(11, &[[3, 0], [2, 0], status.to_le_bytes()].concat());
        assert!(feed(&mut d, 0, &auth(0)).is_none());
        assert!(feed(&mut d, 0, &auth(126)).is_none());
        assert!(feed(&mut d, 0, &auth(15)).unwrap().reason.starts_with("802.11 authentication status 15 "));
        // A protected (802.11w) deauthentication's body is encrypted: not read.
        let mut d = detector(&[EventKind::AuthFailure]);
        let mut protected = wlan_mgmt(12, &23u16.to_le_bytes());
        protected[9] |= 0x40;
        assert!(feed(&mut d, 0, &protected).is_none());
    }

    #[test]
    fn only_configured_events_fire() {
        let mut d = detector(&[EventKind::DnsFailure]);
        assert!(feed(&mut d, 0, &dhcp(1, XID, 1)).is_none());
        assert!(feed(&mut d, 0, &dhcp(2, XID, 6)).is_none());
        assert!(feed(&mut d, 0, &eap(4)).is_none());
        assert!(feed(&mut d, 0, &assoc_resp(1, 17)).is_none());
        assert!(d.poll(100_000).is_none());
        assert_eq!(d.pending(), 0);
        assert!(feed(&mut d, 0, &dns(DNS_ID, Some(3))).is_some());
    }

    #[test]
    fn cooldown_is_respected() {
        let mut d = detector(&[EventKind::DnsFailure, EventKind::AuthFailure]);
        let nxdomain = dns(DNS_ID, Some(3));
        assert!(feed(&mut d, 1_000, &nxdomain).is_some());
        assert!(feed(&mut d, 60_999, &nxdomain).is_none());
        // Another rule has its own cooldown.
        assert!(feed(&mut d, 2_000, &eap(4)).is_some());
        assert!(feed(&mut d, 61_000, &nxdomain).is_some());
        // Timeouts expiring while cooling down are dropped, not deferred.
        assert!(feed(&mut d, 62_000, &dns(DNS_ID, None)).is_none());
        assert!(d.poll(67_000).is_none());
        assert_eq!(d.pending(), 0);

        // The cooldown is never shorter than the window.
        let rule = TriggerRule { window_secs: 120, cooldown_secs: 10, ..TriggerRule::new(EventKind::DnsFailure) };
        let mut d = EventDetector::new(vec![rule]);
        assert!(feed(&mut d, 0, &nxdomain).is_some());
        assert!(feed(&mut d, 119_999, &nxdomain).is_none());
        assert!(feed(&mut d, 120_000, &nxdomain).is_some());
    }

    #[test]
    fn ring_is_bounded_and_holds_headers_only() {
        let rules = vec![
            TriggerRule { pre_trigger_packets: 4, ..TriggerRule::new(EventKind::DnsFailure) },
            TriggerRule { pre_trigger_packets: 2, ..TriggerRule::new(EventKind::DhcpTimeout) },
        ];
        let mut d = EventDetector::new(rules);
        assert_eq!(d.ring_capacity(), 4);
        for i in 0..10 {
            assert!(feed(&mut d, i, &dns(i as u16, None)).is_none());
            assert!(d.buffered() <= 4);
        }
        // A caller that wrongly passes the whole packet still gets it cut.
        let query = dns(99, None);
        let sloppy = CapturedPacket {
            headers: glimpse_common::capture::BoundedBytes::truncating(&query),
            ..kept(LinkType::Ethernet, &query)
        };
        assert!(d.observe(10, LinkType::Ethernet, &query, sloppy).is_none());
        assert_eq!(d.buffered(), 4);
        let trigger = feed(&mut d, 11, &dhcp(2, XID, 6)).unwrap();
        // The DHCP rule keeps 2 of the 4; the ring is drained.
        assert_eq!(trigger.pre_trigger.len(), 2);
        assert_eq!(trigger.pre_trigger[0].headers.as_slice(), &query[..42]);
        assert_no_marker(&d, &trigger);
        assert_eq!(d.buffered(), 0);

        let trigger = feed(&mut d, 12, &dns(DNS_ID, Some(3))).unwrap();
        assert_eq!(trigger.pre_trigger.len(), 1);
        assert_no_marker(&d, &trigger);

        // No ring at all when no rule wants one.
        let rule = TriggerRule { pre_trigger_packets: 0, ..TriggerRule::new(EventKind::DnsFailure) };
        let mut d = EventDetector::new(vec![rule]);
        assert!(feed(&mut d, 0, &dns(1, None)).is_none());
        assert_eq!(d.buffered(), 0);
        assert!(feed(&mut d, 0, &dns(1, Some(2))).unwrap().pre_trigger.is_empty());
    }

    #[test]
    fn pending_tables_are_bounded() {
        let mut d = detector(&[EventKind::DhcpTimeout, EventKind::DnsFailure]);
        for i in 0..1000u32 {
            feed(&mut d, i64::from(i), &dhcp(1, i, 1));
            feed(&mut d, i64::from(i), &dns(i as u16, None));
        }
        assert_eq!(d.pending(), 2 * MAX_PENDING);
        // The oldest were evicted: the earliest deadline left is the 745th.
        assert_eq!(d.next_deadline(), Some(744 + DNS_TIMEOUT_MS));
        assert!(d.poll(i64::MAX).is_some());
        assert!(d.poll(i64::MAX).is_some());
        assert!(d.poll(i64::MAX).is_none());
        assert_eq!(d.pending(), 0);
    }

    #[test]
    fn no_rules_no_work() {
        let mut d = EventDetector::new(Vec::new());
        assert!(!d.enabled());
        for raw in [dhcp(1, XID, 1), dhcp(2, XID, 6), dns(DNS_ID, Some(3)), eap(4), assoc_resp(1, 17)] {
            assert!(feed(&mut d, 0, &raw).is_none());
        }
        assert_eq!((d.buffered(), d.pending(), d.next_deadline()), (0, 0, None));
        assert!(d.poll(i64::MAX).is_none());
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Config {
        capture: Capture,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Capture {
        rules: Vec<TriggerRule>,
    }

    #[test]
    fn rules_parse_from_toml() {
        let config: Config = toml::from_str(
            r#"
            [[capture.rules]]
            event = "dhcp-timeout"

            [[capture.rules]]
            event = "association-failure"
            window_secs = 10
            pre_trigger_packets = 0
            cooldown_secs = 600
            "#,
        )
        .unwrap();
        let rules = config.capture.rules;
        assert_eq!(rules[0], TriggerRule::new(EventKind::DhcpTimeout));
        assert_eq!((rules[0].window_secs, rules[0].pre_trigger_packets, rules[0].cooldown_secs), (30, 64, 60));
        assert_eq!(
            rules[1],
            TriggerRule {
                event: EventKind::AssociationFailure,
                window_secs: 10,
                pre_trigger_packets: 0,
                cooldown_secs: 600
            }
        );
        assert!(validate_rules(&rules).is_empty());
        for bad in [
            "[[capture.rules]]\nevent = \"dhcp_timeout\"",
            "[[capture.rules]]\nevent = \"dns-failure\"\nwindow = 5",
            "[[capture.rules]]\nwindow_secs = 5",
        ] {
            assert!(toml::from_str::<Config>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn validation_lists_every_problem() {
        let bad = TriggerRule {
            event: EventKind::DnsFailure,
            window_secs: 0,
            pre_trigger_packets: 1025,
            cooldown_secs: MAX_COOLDOWN_SECS + 1,
        };
        assert_eq!(bad.validate().len(), 3);
        let rules = [TriggerRule::new(EventKind::DnsFailure), bad.clone()];
        let problems = validate_rules(&rules);
        assert_eq!(problems.len(), 4, "{problems:#?}");
        assert_eq!(problems[0], "capture.rules[1] (dns-failure): window_secs must be 1..=300, got 0");
        assert_eq!(problems[3], "capture.rules[1]: event dns-failure already has a rule");
        assert!(TriggerRule { window_secs: 301, ..TriggerRule::new(EventKind::AuthFailure) }.validate().len() == 1);

        // Unvalidated values are clamped: the bounds hold anyway.
        let d = EventDetector::new(vec![TriggerRule { event: EventKind::AuthFailure, ..bad }]);
        assert_eq!(d.ring_capacity(), MAX_PRE_TRIGGER_PACKETS as usize);
    }

    #[test]
    fn monitor_filter_ors_what_the_link_can_show() {
        let all: Vec<TriggerRule> = EventKind::ALL.into_iter().map(TriggerRule::new).collect();
        assert_eq!(
            monitor_filter(&all, LinkType::Ethernet).unwrap(),
            "(udp port 67 or udp port 68) or (udp port 53) or (ether proto 0x888e)"
        );
        let radio = monitor_filter(&all, LinkType::Ieee80211Radiotap).unwrap();
        assert!(radio.ends_with("or (type mgt subtype assoc-resp or type mgt subtype reassoc-resp)"), "{radio}");
        let assoc = [TriggerRule::new(EventKind::AssociationFailure)];
        assert_eq!(monitor_filter(&assoc, LinkType::Ethernet), None);
        assert_eq!(monitor_filter(&[], LinkType::Ethernet), None);
        let twice = [TriggerRule::new(EventKind::DnsFailure), TriggerRule::new(EventKind::DnsFailure)];
        assert_eq!(monitor_filter(&twice, LinkType::RawIp).unwrap(), "(udp port 53)");
    }

    /// Every filter we hand out compiles for the link it is meant for.
    #[cfg(feature = "pcap")]
    #[test]
    fn filters_compile_with_libpcap() {
        if !crate::capture::pcap_source::tests::libpcap_present() {
            return;
        }
        let all: Vec<TriggerRule> = EventKind::ALL.into_iter().map(TriggerRule::new).collect();
        for link in LinkType::ALL {
            // libpcap takes a DLT here, which for raw IP is not the LINKTYPE
            // number (101) but DLT_RAW, 12 on Linux.
            let dlt = if link == LinkType::RawIp { 12 } else { link.dlt() as i32 };
            let dead = glimpse_libpcap::Capture::dead(dlt, 65535).unwrap();
            let filters = EventKind::ALL.into_iter().filter_map(|e| e.bpf_filter(link).map(str::to_owned));
            for filter in filters.chain(monitor_filter(&all, link)) {
                assert!(dead.compile(&filter).is_ok(), "{link:?}: {filter}");
            }
        }
        // And they match what the detector looks for, and not other traffic.
        let rules = |events: &[EventKind]| events.iter().map(|&e| TriggerRule::new(e)).collect::<Vec<_>>();
        let cases = [
            (EventKind::DhcpTimeout, vec![dhcp(1, XID, 1), dhcp(2, XID, 6)]),
            (EventKind::DnsFailure, vec![dns(DNS_ID, None), dns(DNS_ID, Some(3))]),
            (EventKind::AuthFailure, vec![eap(4), eap_wlan(4), wlan_mgmt(12, &[23, 0]), wlan_mgmt(10, &[15, 0])]),
            (EventKind::AssociationFailure, vec![assoc_resp(1, 17), assoc_resp(3, 17)]),
        ];
        let other = [
            [eth(SERVER, CLIENT, 0x0800), ipv4_udp(CLIENT_IP, SERVER_IP, 40000, 443, b"quic")].concat(),
            wlan_mgmt(8, &[0; 12]),
        ];
        for (event, packets) in cases {
            for raw in packets {
                let link = link_of(&raw);
                let filter = monitor_filter(&rules(&[event]), link).unwrap();
                let dead = glimpse_libpcap::Capture::dead(link.dlt() as i32, 65535).unwrap();
                let program = dead.compile(&filter).unwrap();
                assert!(program.matches(&raw), "{event}: {filter} misses {raw:02x?}");
                for raw in other.iter().filter(|o| link_of(o) == link) {
                    assert!(!program.matches(raw), "{event}: {filter} matches {raw:02x?}");
                }
            }
        }
    }

    /// Packets to mutate: every kind the detector reads, so mutations reach
    /// the payload parsers.
    fn templates() -> Vec<Vec<u8>> {
        vec![
            dhcp(1, XID, 1),
            dhcp(2, XID, 6),
            dns(DNS_ID, None),
            dns(DNS_ID, Some(3)),
            eap(4),
            assoc_resp(1, 17),
            wlan_mgmt(12, &23u16.to_le_bytes()),
        ]
    }

    fn packet() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..=512),
            (
                prop::sample::select(templates()),
                prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
                0usize..=512
            )
                .prop_map(|(mut p, edits, cut)| {
                    for (at, byte) in edits {
                        let i = at.index(p.len());
                        p[i] = byte;
                    }
                    p.truncate(cut);
                    p
                }),
        ]
    }

    proptest! {
        #[test]
        fn never_panics_and_stays_bounded(
            steps in prop::collection::vec(
                (0i64..3_000, prop::sample::select(LinkType::ALL.to_vec()), packet(), any::<bool>()),
                1..64,
            ),
        ) {
            let rules: Vec<TriggerRule> = EventKind::ALL
                .into_iter()
                .map(|e| TriggerRule { pre_trigger_packets: 5, cooldown_secs: 0, window_secs: 1, event: e })
                .collect();
            let mut d = EventDetector::new(rules);
            let mut now = 0i64;
            for (dt, link, raw, poll) in steps {
                now += dt;
                let mut triggers = Vec::new();
                triggers.extend(d.observe(now, link, &raw, kept(link, &raw)));
                if poll {
                    triggers.extend(std::iter::from_fn(|| d.poll(now)));
                }
                prop_assert!(d.buffered() <= 5);
                prop_assert!(d.pending() <= 2 * MAX_PENDING);
                for trigger in triggers {
                    prop_assert!(trigger.pre_trigger.len() <= 5);
                    for packet in &trigger.pre_trigger {
                        prop_assert!(packet.headers.len() <= crate::capture::MAX_HEADER_BYTES);
                        prop_assert_eq!(packet.clone().enforce(), 0);
                    }
                }
            }
        }
    }
}
