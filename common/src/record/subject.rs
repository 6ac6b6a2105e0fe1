//! Data subjects: whom a request about stored data concerns (a person or
//! their device, named by a MAC address, an IP address or a username), what
//! of a record is about them, and the organisation's list of subjects whose
//! data is not to be processed at all ([`BlockedSubjects`]).
//!
//! What "about" means, per record kind (the fields come from
//! [`super::personal`], the one walk over what records hold about people,
//! so a new record kind or field is covered here once it is covered there):
//!
//! | kind | a MAC matches | an IP matches | a username matches |
//! |---|---|---|---|
//! | metadata | an interface's MAC | an interface's address | never |
//! | wireless | a station's MAC, a roaming event's MAC | a station's address | a station's username |
//! | wired | a learned host's MAC | a host's address | a host's username |
//! | capture | source or destination MAC; the MAC anywhere in the kept headers (802.11 addresses, ARP, EAPOL) | source or destination address; an IPv6 address anywhere in the headers; an IPv4 address inside ARP | never: headers hold no usernames (EAP identities are never kept) |
//!
//! Wireless and wired reports describe many clients at once, so a subject
//! request takes only the subject's part of them: an export shows the
//! report with the subject's stations, hosts and roaming events and nobody
//! else's, and an erase (or a block) removes those entries and keeps the
//! report for the others. Counter and WAN reports name no client.
//!
//! Searching the raw header bytes for MACs and IPv6 addresses errs on the
//! side of erasing: 6 and 16 byte patterns practically never occur by
//! chance, and an erase that misses a record is worse than one that takes a
//! stray packet with it. IPv4 addresses (4 bytes) are matched by field only,
//! since a 4-byte pattern can occur by chance in sequence numbers.
//!
//! Pure functions over records: the collector uses them to export, erase,
//! correct and drop on arrival, the agent to drop blocked subjects' data
//! before it queues it, so both ends agree on what a subject's data is.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::personal::{self, Category, Entry, Field, FieldMut, FieldRef, Scope, Visit, VisitMut};
use super::{MacAddr, Record, RecordBody, MAX_TEXT};
use crate::bounded::{BoundedString, BoundedVec};
use crate::capture::{CapturedPacket, PacketSummary};

/// EtherType of ARP.
const ETHERTYPE_ARP: u16 = 0x0806;

/// A data subject: the person or device a request about stored data
/// concerns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Subject {
    /// A MAC address: interfaces in metadata, link-layer addresses in
    /// captured headers (Ethernet, 802.11, ARP).
    Mac(MacAddr),
    /// An IPv4 or IPv6 address: interface addresses in metadata, source and
    /// destination in captured headers (and ARP).
    Ip(IpAddr),
    /// A username, wherever a record carries one.
    Username(BoundedString<128>),
}

impl std::fmt::Display for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Subject::Mac(mac) => write!(f, "mac {mac}"),
            Subject::Ip(ip) => write!(f, "ip {ip}"),
            Subject::Username(name) => write!(f, "username {}", name.as_str()),
        }
    }
}

/// Most subjects one organisation can block: a block is for the few people
/// who objected, not a firewall; the list travels to every device of the
/// organisation and is matched against every record.
pub const MAX_BLOCKED_SUBJECTS: usize = 1000;

/// An organisation's blocked subjects: their data is dropped on arrival,
/// devices stop sending it, and exports leave it out, until unblocked. In
/// the order they were blocked; no subject twice.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockedSubjects(BoundedVec<Subject, MAX_BLOCKED_SUBJECTS>);

/// The block list already holds [`MAX_BLOCKED_SUBJECTS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("an organisation can block at most {MAX_BLOCKED_SUBJECTS} subjects; unblock one first")]
pub struct BlockListFull;

impl BlockedSubjects {
    /// The subjects, in the order they were blocked.
    pub fn as_slice(&self) -> &[Subject] {
        &self.0
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether nobody is blocked.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `subject` is blocked.
    pub fn contains(&self, subject: &Subject) -> bool {
        self.0.contains(subject)
    }

    /// Blocks `subject`; returns whether it was not blocked already.
    pub fn insert(&mut self, subject: Subject) -> Result<bool, BlockListFull> {
        if self.contains(&subject) {
            return Ok(false);
        }
        self.0.try_push(subject).map_err(|_| BlockListFull)?;
        Ok(true)
    }

    /// Unblocks `subject`; returns whether it was blocked.
    pub fn remove(&mut self, subject: &Subject) -> bool {
        let before = self.0.len();
        self.0.retain(|s| s != subject);
        self.0.len() != before
    }

    /// The list, with a repeated subject kept once (a list decoded from
    /// the wire or a stored row is not trusted to be free of them).
    pub fn deduplicated(mut self) -> Self {
        let mut seen = Vec::with_capacity(self.0.len());
        self.0.retain(|s| {
            let first = !seen.contains(s);
            if first {
                seen.push(s.clone());
            }
            first
        });
        self
    }
}

impl TryFrom<Vec<Subject>> for BlockedSubjects {
    type Error = BlockListFull;

    fn try_from(subjects: Vec<Subject>) -> Result<Self, BlockListFull> {
        BoundedVec::try_from_vec(subjects).map(|list| BlockedSubjects(list).deduplicated()).map_err(|_| BlockListFull)
    }
}

/// What removing subjects' data does with one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redaction {
    /// Nothing in it is to go: it stays as it was.
    Keep,
    /// Part of it was removed in place; the rest stays.
    Changed,
    /// All of it goes.
    Remove,
}

/// Whether `record` is about `subject`.
pub fn concerns(record: &Record, subject: &Subject) -> bool {
    mentions(&record.body, std::slice::from_ref(subject), Mentions::Anywhere)
}

/// Where in a record [`mentions`] looks for a subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mentions {
    /// In fields about the record as a whole and in client entries.
    Anywhere,
    /// In fields about the record as a whole only: a match there takes
    /// the whole record.
    WholeRecord,
}

/// Whether any of `subjects` is in `body`, looking `where_`. The reporting
/// device's own part of a report about its clients (its location, its
/// radios' BSSIDs) never matches: the device's own records are its
/// metadata, and a request about it finds those.
fn mentions(body: &RecordBody, subjects: &[Subject], where_: Mentions) -> bool {
    let mut finder = Finder { subjects, where_, found: false };
    personal::visit(body, &mut finder);
    finder.found
}

/// Looks for the subjects in visited fields.
struct Finder<'a> {
    subjects: &'a [Subject],
    where_: Mentions,
    found: bool,
}

impl Visit for Finder<'_> {
    fn field(&mut self, field: Field, value: FieldRef<'_>) {
        let looked_at = match field.scope() {
            Scope::Record => true,
            Scope::Client => self.where_ == Mentions::Anywhere,
            Scope::Reporter => false,
        };
        if looked_at && !self.found {
            self.found = match value {
                FieldRef::Packet(packet) if field.category() == Category::PacketHeaders => {
                    packet_holds_any(packet, self.subjects)
                }
                _ => self.subjects.iter().any(|subject| field_is(subject, field, value)),
            };
        }
    }
}

/// Subjects beyond which a packet's addresses are indexed rather than
/// searched for one subject after another (a block list holds up to
/// [`MAX_BLOCKED_SUBJECTS`], and each MAC and IPv6 address is searched for
/// in every packet's headers).
const INDEX_PACKET_FROM: usize = 8;

/// Whether a captured packet is about any of `subjects` (see
/// [`capture_concerns`]), its headers parsed once whatever their number.
fn packet_holds_any(packet: &CapturedPacket, subjects: &[Subject]) -> bool {
    let summary = packet.summary();
    if subjects.len() < INDEX_PACKET_FROM {
        return subjects.iter().any(|subject| capture_concerns(packet, summary.as_ref(), subject));
    }
    // Every 6 and 16 byte window of the headers, once: then each subject
    // is a lookup, not a search.
    let headers = &packet.headers;
    let windows6: std::collections::HashSet<&[u8]> = headers.windows(6).collect();
    let windows16: std::collections::HashSet<&[u8]> = headers.windows(16).collect();
    let arp = summary.as_ref().is_some_and(|s| s.ethertype == Some(ETHERTYPE_ARP));
    subjects.iter().any(|subject| match subject {
        Subject::Mac(mac) => {
            summary.as_ref().is_some_and(|s| s.src_mac == Some(mac.0) || s.dst_mac == Some(mac.0))
                || windows6.contains(&mac.0[..])
        }
        Subject::Ip(ip) => {
            let by_field = summary.as_ref().is_some_and(|s| s.src_ip == Some(*ip) || s.dst_ip == Some(*ip));
            by_field
                || match ip {
                    IpAddr::V6(v6) => windows16.contains(&v6.octets()[..]),
                    IpAddr::V4(v4) => arp && contains(headers, &v4.octets()),
                }
        }
        Subject::Username(_) => false,
    })
}

/// Whether `value`, the content of `field`, is (or holds) `subject`.
fn field_is(subject: &Subject, field: Field, value: FieldRef<'_>) -> bool {
    match (field.category(), value) {
        (Category::Mac, FieldRef::Mac(Some(mac))) => matches!(subject, Subject::Mac(m) if *m == mac),
        (Category::Ip, FieldRef::Addresses(addresses)) => match subject {
            Subject::Ip(ip) => addresses.contains(ip),
            // A SLAAC or link-local address made from the MAC (modified
            // EUI-64) is the MAC in another form.
            Subject::Mac(mac) => addresses.iter().any(|address| match address {
                IpAddr::V6(v6) => crate::capture::macs::mac_of_ipv6(v6) == Some(*mac),
                IpAddr::V4(_) => false,
            }),
            _ => false,
        },
        (Category::Username, FieldRef::Text(name)) => {
            matches!(subject, Subject::Username(wanted) if !name.is_empty() && name == wanted.as_str())
        }
        (Category::PacketHeaders, FieldRef::Packet(packet)) => {
            capture_concerns(packet, packet.summary().as_ref(), subject)
        }
        // What a subject request cannot name, and values of another shape.
        (
            Category::Mac
            | Category::Ip
            | Category::Username
            | Category::PacketHeaders
            | Category::Hostname
            | Category::UserAgent
            | Category::Location
            | Category::Vlan
            | Category::Signal
            | Category::Traffic
            | Category::Movement
            | Category::Software
            | Category::Uptime
            | Category::Neighbours
            | Category::Applications
            | Category::DeviceDetails
            | Category::Site,
            _,
        ) => false,
    }
}

/// Whether a client entry is about any of `subjects`.
fn entry_is(entry: Entry<'_>, subjects: &[Subject]) -> bool {
    let mut finder = Finder { subjects, where_: Mentions::Anywhere, found: false };
    entry.visit(&mut finder);
    finder.found
}

/// The MACs of the stations in `body` that are about any of `subjects`,
/// and the subjects' own MACs: roaming events carry only a MAC, so an IP or
/// username request also takes the events of the stations it matched.
fn subjects_stations(body: &RecordBody, subjects: &[Subject]) -> Vec<MacAddr> {
    struct Stations<'a> {
        subjects: &'a [Subject],
        macs: Vec<MacAddr>,
    }
    impl Visit for Stations<'_> {
        fn field(&mut self, _: Field, _: FieldRef<'_>) {}
        fn entry(&mut self, entry: Entry<'_>) {
            match entry {
                Entry::Station(_) => {
                    if entry_is(entry, self.subjects) {
                        self.macs.extend(entry.client_mac());
                    }
                }
                Entry::Roam(_) | Entry::WiredHost(_) | Entry::ClientDevice(_) | Entry::WanDestination(_) => {}
            }
        }
    }
    let mut stations = Stations { subjects, macs: Vec::new() };
    personal::visit(body, &mut stations);
    stations.macs.extend(subjects.iter().filter_map(|s| if let Subject::Mac(m) = s { Some(*m) } else { None }));
    stations.macs
}

/// Whether a client entry is one of the subjects': a station or roaming
/// event by the stations' MACs ([`subjects_stations`]), a wired host by its
/// own fields.
fn subjects_entry(entry: Entry<'_>, subjects: &[Subject], station_macs: &[MacAddr]) -> bool {
    match entry {
        // A client-device report is a record of its own, with no station to
        // match an IP or username by: its entries are found by the
        // subjects' MACs.
        Entry::Station(_) | Entry::Roam(_) | Entry::ClientDevice(_) => {
            entry.client_mac().is_some_and(|mac| station_macs.contains(&mac))
        }
        Entry::WiredHost(_) | Entry::WanDestination(_) => entry_is(entry, subjects),
    }
}

/// Splits a many-client report: keeps either the subjects' entries (for an
/// export) or everyone else's (for an erase), and counts the subjects'.
struct Split<'a> {
    subjects: &'a [Subject],
    /// See [`subjects_stations`].
    station_macs: Vec<MacAddr>,
    keep_subjects: bool,
    subjects_entries: usize,
}

impl VisitMut for Split<'_> {
    fn field(&mut self, field: Field, mut value: FieldMut<'_>) {
        // Neighbours are the switch's, not the subject's.
        if self.keep_subjects && field.category() == Category::Neighbours {
            value.clear();
        }
    }

    fn keep_entry(&mut self, entry: Entry<'_>) -> bool {
        let subjects = subjects_entry(entry, self.subjects, &self.station_macs);
        self.subjects_entries += usize::from(subjects);
        subjects == self.keep_subjects
    }
}

/// Keeps in `record` only the subjects' client entries (`keep_subjects`)
/// or only everyone else's, and returns how many were the subjects'.
fn split(record: &mut Record, subjects: &[Subject], keep_subjects: bool) -> usize {
    let station_macs = subjects_stations(&record.body, subjects);
    let mut split = Split { subjects, station_macs, keep_subjects, subjects_entries: 0 };
    personal::visit_mut(&mut record.body, &mut split);
    split.subjects_entries
}

/// The part of `record` about any of `subjects`, for an export: the whole
/// record when it is about them as a whole, only the subject's entries
/// (with the report's device and radios) for many-client reports; `None`
/// when nothing in it is about them.
pub fn view(record: &Record, subjects: &[Subject]) -> Option<Record> {
    if mentions(&record.body, subjects, Mentions::WholeRecord) {
        return Some(record.clone());
    }
    let mut view = record.clone();
    (split(&mut view, subjects, true) > 0).then_some(view)
}

/// Removes from `record` what is about any of `subjects`, for an erase or
/// a block: the whole record when it is about one of them as a whole, the
/// subjects' client entries of a many-client report (the others stay).
pub fn redact(record: &mut Record, subjects: &[Subject]) -> Redaction {
    if subjects.is_empty() {
        return Redaction::Keep;
    }
    if mentions(&record.body, subjects, Mentions::WholeRecord) {
        return Redaction::Remove;
    }
    if split(record, subjects, false) > 0 {
        Redaction::Changed
    } else {
        Redaction::Keep
    }
}

/// Removes from `records` what is about any of `subjects` (see
/// [`redact`]); returns how many records went and how many were cut down
/// to the other clients.
pub fn drop_subjects(records: &mut Vec<Record>, subjects: &[Subject]) -> (usize, usize) {
    if subjects.is_empty() {
        return (0, 0);
    }
    let (mut removed, mut changed) = (0, 0);
    records.retain_mut(|record| match redact(record, subjects) {
        Redaction::Keep => true,
        Redaction::Changed => {
            changed += 1;
            true
        }
        Redaction::Remove => {
            removed += 1;
            false
        }
    });
    (removed, changed)
}

/// A value a correction can replace: what a data subject can show to be
/// wrong about them. Addresses are not among them: a MAC or IP address a
/// device observed is a fact of the network, not a statement about the
/// person, and changing one would make records point at another device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum CorrectableField {
    /// The username (802.1X identity) of the subject's stations and hosts.
    Username,
    /// The hostname of the subject's stations and hosts, and of a device
    /// whose own metadata is the subject's.
    Hostname,
}

impl CorrectableField {
    /// Every field, for listings and help.
    pub const ALL: [CorrectableField; 2] = [CorrectableField::Username, CorrectableField::Hostname];

    /// The name in the API, the CLI and the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            CorrectableField::Username => "username",
            CorrectableField::Hostname => "hostname",
        }
    }

    fn category(self) -> Category {
        match self {
            CorrectableField::Username => Category::Username,
            CorrectableField::Hostname => Category::Hostname,
        }
    }
}

impl std::str::FromStr for CorrectableField {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        CorrectableField::ALL.into_iter().find(|f| f.as_str() == name).ok_or_else(|| {
            let names: Vec<&str> = CorrectableField::ALL.iter().map(|f| f.as_str()).collect();
            format!("{name:?} cannot be corrected; the fields are {}", names.join(", "))
        })
    }
}

impl std::fmt::Display for CorrectableField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Replaces the subjects' `field` in `record` by `value`: in the subjects'
/// client entries of a many-client report (nobody else's), and in the
/// record's own fields when the record is about one of them as a whole.
/// Returns how many values changed (one already equal is not counted).
pub fn correct(record: &mut Record, subjects: &[Subject], field: CorrectableField, value: &str) -> usize {
    struct Correct<'a> {
        subjects: &'a [Subject],
        station_macs: Vec<MacAddr>,
        whole: bool,
        /// Whether each entry offered is the subjects', in order: a list's
        /// entries are all offered before the first one's fields come.
        entries: std::collections::VecDeque<bool>,
        in_subjects_entry: bool,
        category: Category,
        value: BoundedString<MAX_TEXT>,
        changed: usize,
    }
    impl VisitMut for Correct<'_> {
        fn field(&mut self, field: Field, value: FieldMut<'_>) {
            // Every entry's fields start with its MAC.
            if matches!(field, Field::StationMac | Field::RoamMac | Field::HostMac) {
                self.in_subjects_entry = self.entries.pop_front().unwrap_or(false);
            }
            let theirs = match field.scope() {
                Scope::Record => self.whole,
                Scope::Client => self.in_subjects_entry,
                Scope::Reporter => false,
            };
            if !theirs || field.category() != self.category {
                return;
            }
            match value {
                FieldMut::Text(text) if *text != self.value => {
                    *text = self.value.clone();
                    self.changed += 1;
                }
                FieldMut::OptionalText(text) if text.as_ref() != Some(&self.value) => {
                    *text = Some(self.value.clone());
                    self.changed += 1;
                }
                _ => {}
            }
        }

        fn keep_entry(&mut self, entry: Entry<'_>) -> bool {
            self.entries.push_back(subjects_entry(entry, self.subjects, &self.station_macs));
            true
        }
    }
    if subjects.is_empty() {
        return 0;
    }
    let mut correct = Correct {
        subjects,
        station_macs: subjects_stations(&record.body, subjects),
        whole: mentions(&record.body, subjects, Mentions::WholeRecord),
        entries: std::collections::VecDeque::new(),
        in_subjects_entry: false,
        category: field.category(),
        value: BoundedString::truncating(value),
        changed: 0,
    };
    personal::visit_mut(&mut record.body, &mut correct);
    correct.changed
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// Whether a captured packet is about `subject`: by its parsed source and
/// destination, and by the raw bytes (see the module header).
fn capture_concerns(packet: &CapturedPacket, summary: Option<&PacketSummary>, subject: &Subject) -> bool {
    match subject {
        Subject::Mac(mac) => {
            let by_field = summary.as_ref().is_some_and(|s| s.src_mac == Some(mac.0) || s.dst_mac == Some(mac.0));
            by_field || contains(&packet.headers, &mac.0)
        }
        Subject::Ip(ip) => {
            let by_field = summary.as_ref().is_some_and(|s| s.src_ip == Some(*ip) || s.dst_ip == Some(*ip));
            let by_bytes = match ip {
                IpAddr::V6(v6) => contains(&packet.headers, &v6.octets()),
                IpAddr::V4(v4) => {
                    summary.as_ref().is_some_and(|s| s.ethertype == Some(ETHERTYPE_ARP))
                        && contains(&packet.headers, &v4.octets())
                }
            };
            by_field || by_bytes
        }
        // Headers hold no usernames.
        Subject::Username(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::LinkType;
    use crate::record::{DeviceMetadata, InterfaceStats};

    const MAC: MacAddr = MacAddr([0x02, 0, 0x5e, 0x10, 0, 0x01]);

    fn metadata(mac: MacAddr, ip: &str) -> Record {
        let interface = InterfaceStats {
            name: BoundedString::truncating("wlan0"),
            mac: Some(mac),
            addresses: BoundedVec::truncating(vec![ip.parse().unwrap()]),
            ..Default::default()
        };
        Record {
            observed_at_ms: 0,
            body: RecordBody::Metadata(DeviceMetadata {
                interfaces: BoundedVec::truncating(vec![interface]),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn a_mac_is_found_inside_the_ipv6_addresses_made_from_it() {
        let mac = Subject::Mac(MAC);
        // MAC 02:00:5e:10:00:01 as a modified EUI-64 identifier.
        let slaac = "2001:db8:1::5eff:fe10:1";
        let mut meta = metadata(MAC, slaac);
        let RecordBody::Metadata(m) = &mut meta.body else { unreachable!() };
        m.interfaces.as_mut_slice()[0].mac = None;
        assert!(concerns(&meta, &mac), "the address alone names the MAC");
        assert!(!concerns(&metadata(MacAddr([9; 6]), "2001:db8:1::1c2d:3e4f:5a6b:7c8d"), &mac));

        // A routed packet: no link header, only the IPv6 source.
        let source: std::net::Ipv6Addr = slaac.parse().unwrap();
        let mut packet = vec![0x60, 0, 0, 0, 0, 0, 59, 64];
        packet.extend(source.octets());
        packet.extend([0x20, 0x01, 0x0d, 0xb8, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        let routed = Record {
            observed_at_ms: 0,
            body: RecordBody::Capture(CapturedPacket::from_packet(
                LinkType::Ipv6,
                0,
                BoundedString::truncating("wan"),
                &packet,
                packet.len() as u32,
            )),
        };
        assert!(concerns(&routed, &mac));
        assert!(!concerns(&routed, &Subject::Mac(MacAddr([9; 6]))));
    }

    fn capture(frame: &[u8]) -> Record {
        Record {
            observed_at_ms: 0,
            body: RecordBody::Capture(CapturedPacket::from_packet(
                LinkType::Ethernet,
                0,
                BoundedString::truncating("eth0"),
                frame,
                frame.len() as u32,
            )),
        }
    }

    fn udp4(src_mac: MacAddr, src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
        let mut f = vec![0x02, 0, 0, 0, 0, 0xfe];
        f.extend(src_mac.0);
        f.extend([0x08, 0x00, 0x45, 0, 0, 28, 0, 0, 0x40, 0, 64, 17, 0, 0]);
        f.extend(src);
        f.extend(dst);
        f.extend([0x30, 0x39, 0, 53, 0, 8, 0, 0]);
        f
    }

    #[test]
    fn subjects_match_by_field_and_by_header_bytes() {
        let mac = Subject::Mac(MAC);
        let ip = Subject::Ip("192.0.2.7".parse().unwrap());
        let other_ip = Subject::Ip("192.0.2.8".parse().unwrap());
        let name = Subject::Username(BoundedString::truncating("alice"));

        let meta = metadata(MAC, "192.0.2.7");
        assert!(concerns(&meta, &mac) && concerns(&meta, &ip));
        assert!(!concerns(&meta, &other_ip) && !concerns(&meta, &name));
        assert!(!concerns(&metadata(MacAddr([9; 6]), "192.0.2.9"), &mac));

        let packet = capture(&udp4(MAC, [192, 0, 2, 7], [198, 51, 100, 1]));
        assert!(concerns(&packet, &mac) && concerns(&packet, &ip));
        assert!(!concerns(&packet, &other_ip) && !concerns(&packet, &name));
        let reply = capture(&udp4(MacAddr([7; 6]), [198, 51, 100, 1], [192, 0, 2, 7]));
        assert!(concerns(&reply, &ip), "destination counts");
        assert!(!concerns(&reply, &mac));

        // ARP carries the subject's MAC and address in its body.
        let mut arp = vec![0xff; 6];
        arp.extend([0x02, 0, 0, 0, 0, 0xfe, 0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
        arp.extend(MAC.0);
        arp.extend([192, 0, 2, 7]);
        arp.extend([0; 6]);
        arp.extend([192, 0, 2, 1]);
        let arp = capture(&arp);
        assert!(concerns(&arp, &mac) && concerns(&arp, &ip));
        // IPv4 bytes elsewhere (here: as a TCP-ish payload-free header) do not match.
        let mut lookalike = udp4(MacAddr([7; 6]), [10, 0, 0, 1], [10, 0, 0, 2]);
        lookalike[34..38].copy_from_slice(&[192, 0, 2, 7]);
        assert!(!concerns(&capture(&lookalike), &ip));
    }

    fn station(mac: MacAddr, ip: &str, username: &str) -> crate::record::Station {
        crate::record::Station {
            mac,
            interface: BoundedString::truncating("wlan0"),
            addresses: BoundedVec::truncating(vec![ip.parse().unwrap()]),
            username: BoundedString::truncating(username),
            ..Default::default()
        }
    }

    fn wireless(stations: Vec<crate::record::Station>) -> Record {
        use crate::record::{RoamEvent, RoamKind, WirelessReport};
        let roaming = stations
            .iter()
            .map(|s| RoamEvent {
                mac: s.mac,
                event: RoamKind::Joined,
                interface: s.interface.clone(),
                previous_interface: None,
            })
            .collect();
        Record {
            observed_at_ms: 0,
            body: RecordBody::Wireless(Box::new(WirelessReport {
                stations: BoundedVec::truncating(stations),
                roaming: BoundedVec::truncating(roaming),
                ..Default::default()
            })),
        }
    }

    #[test]
    fn a_wan_destination_row_is_taken_alone_by_client_mac_or_address() {
        use crate::record::{DestinationCounters, WanDestination, WanDestinationReport};
        let bob = MacAddr([0x02, 0, 0, 0, 0, 0xb0]);
        let row = |mac: Option<MacAddr>, ip: &str| WanDestination {
            client_mac: mac,
            client_address: Some(ip.parse().unwrap()),
            destination: Some("93.184.216.34".parse().unwrap()),
            protocol: 6,
            port: Some(443),
            application: BoundedString::truncating("https"),
            site: BoundedString::truncating("www.example.com"),
            counters: DestinationCounters { active_sessions: 1, ..Default::default() },
        };
        let record = Record {
            observed_at_ms: 0,
            body: RecordBody::WanDestinations(Box::new(WanDestinationReport {
                destinations: BoundedVec::truncating(vec![
                    row(Some(MAC), "192.168.1.23"),
                    row(Some(bob), "192.168.1.24"),
                    row(None, "192.168.1.25"),
                ]),
                ..Default::default()
            })),
        };
        for subject in [Subject::Mac(MAC), Subject::Ip("192.168.1.23".parse().unwrap())] {
            assert!(concerns(&record, &subject), "{subject}");
            let shown = view(&record, std::slice::from_ref(&subject)).unwrap();
            let RecordBody::WanDestinations(shown) = shown.body else { panic!() };
            assert_eq!((shown.destinations.len(), shown.destinations[0].client_mac), (1, Some(MAC)));
            let mut erased = record.clone();
            assert_eq!(redact(&mut erased, std::slice::from_ref(&subject)), Redaction::Changed);
            let RecordBody::WanDestinations(left) = &erased.body else { panic!() };
            assert_eq!(left.destinations.len(), 2, "the other clients' rows stay");
            assert!(!concerns(&erased, &subject));
        }
        // A client the gateway knows only by its address.
        assert!(concerns(&record, &Subject::Ip("192.168.1.25".parse().unwrap())));
        assert!(!concerns(&record, &Subject::Username(BoundedString::truncating("alice"))));
    }

    #[test]
    fn a_many_client_report_gives_up_only_the_subject() {
        let bob = MacAddr([0x02, 0, 0, 0, 0, 0xb0]);
        let record = wireless(vec![station(MAC, "192.0.2.7", "alice"), station(bob, "192.0.2.8", "bob")]);
        for subject in [
            Subject::Mac(MAC),
            Subject::Ip("192.0.2.7".parse().unwrap()),
            Subject::Username(BoundedString::truncating("alice")),
        ] {
            assert!(concerns(&record, &subject), "{subject}");
            let view = view(&record, std::slice::from_ref(&subject)).unwrap();
            let RecordBody::Wireless(view) = view.body else { panic!() };
            assert_eq!(view.stations.len(), 1, "the export shows alice only");
            assert_eq!((view.stations[0].mac, view.roaming.len(), view.roaming[0].mac), (MAC, 1, MAC));

            let mut erased = record.clone();
            assert_eq!(redact(&mut erased, std::slice::from_ref(&subject)), Redaction::Changed);
            let RecordBody::Wireless(left) = &erased.body else { panic!() };
            assert_eq!(left.stations.len(), 1);
            assert_eq!((left.stations[0].mac, left.roaming.len(), left.roaming[0].mac), (bob, 1, bob), "bob stays");
            assert!(!concerns(&erased, &subject));
        }
        let nobody = Subject::Username(BoundedString::truncating("carol"));
        assert!(!concerns(&record, &nobody) && view(&record, std::slice::from_ref(&nobody)).is_none());
        let mut untouched = record.clone();
        assert_eq!(redact(&mut untouched, &[nobody]), Redaction::Keep);
        assert_eq!(untouched, record);
        // An empty username never matches an empty request.
        let anonymous = wireless(vec![station(bob, "192.0.2.8", "")]);
        assert!(!concerns(&anonymous, &Subject::Username(BoundedString::truncating(""))));
    }

    #[test]
    fn a_wired_host_is_taken_alone_and_the_reporting_device_is_not_a_subject() {
        use crate::record::{Radio, WiredHost, WiredReport};
        let host = |mac: MacAddr, ip: &str| WiredHost {
            mac,
            port: BoundedString::truncating("lan1"),
            addresses: BoundedVec::truncating(vec![ip.parse().unwrap()]),
            ..Default::default()
        };
        let bob = MacAddr([0x02, 0, 0, 0, 0, 0xb0]);
        let record = Record {
            observed_at_ms: 0,
            body: RecordBody::Wired(Box::new(WiredReport {
                hosts: BoundedVec::truncating(vec![host(MAC, "2001:db8::7"), host(bob, "2001:db8::8")]),
                neighbours: BoundedVec::truncating(vec![Default::default()]),
                ..Default::default()
            })),
        };
        let alice = [Subject::Ip("2001:db8::7".parse().unwrap())];
        let view = view(&record, &alice).unwrap();
        let RecordBody::Wired(view) = view.body else { panic!() };
        assert_eq!((view.hosts.len(), view.hosts[0].mac, view.neighbours.len()), (1, MAC, 0));
        let mut erased = record.clone();
        assert_eq!(redact(&mut erased, &alice), Redaction::Changed);
        let RecordBody::Wired(left) = &erased.body else { panic!() };
        assert_eq!((left.hosts.len(), left.hosts[0].mac, left.neighbours.len()), (1, bob, 1));

        // An access point's BSSID is the access point's: a request about
        // it finds the device's metadata, not every report it sent.
        let mut report = wireless(vec![station(bob, "192.0.2.8", "bob")]);
        let RecordBody::Wireless(w) = &mut report.body else { panic!() };
        w.radios = BoundedVec::truncating(vec![Radio { bssid: Some(MAC), ..Default::default() }]);
        assert!(!concerns(&report, &Subject::Mac(MAC)));
        assert_eq!(redact(&mut report.clone(), &[Subject::Mac(MAC)]), Redaction::Keep);
    }

    #[test]
    fn the_block_list_is_bounded_and_holds_a_subject_once() {
        let mut list = BlockedSubjects::default();
        let bob = Subject::Username(BoundedString::truncating("bob"));
        assert_eq!(list.insert(bob.clone()), Ok(true));
        assert_eq!(list.insert(bob.clone()), Ok(false), "already blocked");
        assert!(list.contains(&bob) && list.len() == 1);
        for i in 1..MAX_BLOCKED_SUBJECTS {
            assert_eq!(list.insert(Subject::Ip(std::net::Ipv6Addr::from(i as u128).into())), Ok(true));
        }
        assert_eq!(list.insert(Subject::Mac(MAC)), Err(BlockListFull));
        assert!(list.remove(&bob) && !list.remove(&bob));
        assert_eq!(list.insert(Subject::Mac(MAC)), Ok(true), "room again");
        // Decoded lists: longer than the bound is refused, repeats kept once.
        let too_long = vec![Subject::Mac(MAC); MAX_BLOCKED_SUBJECTS + 1];
        let bytes = postcard::to_stdvec(&too_long).unwrap();
        assert!(postcard::from_bytes::<BlockedSubjects>(&bytes).is_err());
        let twice = BlockedSubjects::try_from(vec![Subject::Mac(MAC), bob.clone(), Subject::Mac(MAC)]).unwrap();
        assert_eq!(twice.as_slice(), [Subject::Mac(MAC), bob]);
    }

    #[test]
    fn dropping_subjects_keeps_everyone_else() {
        let bob = MacAddr([0x02, 0, 0, 0, 0, 0xb0]);
        let mut records = vec![
            metadata(MAC, "192.0.2.7"),
            wireless(vec![station(MAC, "192.0.2.7", "alice"), station(bob, "192.0.2.8", "bob")]),
            capture(&udp4(bob, [192, 0, 2, 8], [198, 51, 100, 1])),
        ];
        let alice = [Subject::Username(BoundedString::truncating("alice")), Subject::Mac(MAC)];
        assert_eq!(drop_subjects(&mut records, &alice), (1, 1));
        assert_eq!(records.len(), 2);
        let RecordBody::Wireless(left) = &records[0].body else { panic!() };
        assert_eq!((left.stations.len(), left.stations[0].mac), (1, bob));
        assert_eq!(drop_subjects(&mut records, &[]), (0, 0), "nobody blocked: nothing goes");
        assert_eq!(records.len(), 2);
    }

    #[test]
    fn a_correction_changes_only_the_subjects_values() {
        let bob = MacAddr([0x02, 0, 0, 0, 0, 0xb0]);
        let mut alice_station = station(MAC, "192.0.2.7", "alice");
        alice_station.hostname = BoundedString::truncating("alices-phone");
        let mut record = wireless(vec![alice_station, station(bob, "192.0.2.8", "bob")]);
        let alice = [Subject::Ip("192.0.2.7".parse().unwrap())];
        assert_eq!(correct(&mut record, &alice, CorrectableField::Username, "alice.smith"), 1);
        assert_eq!(correct(&mut record, &alice, CorrectableField::Hostname, "alice-laptop"), 1);
        assert_eq!(correct(&mut record, &alice, CorrectableField::Hostname, "alice-laptop"), 0, "already right");
        let RecordBody::Wireless(report) = &record.body else { panic!() };
        assert_eq!(
            (report.stations[0].username.as_str(), report.stations[0].hostname.as_str()),
            ("alice.smith", "alice-laptop")
        );
        assert_eq!((report.stations[1].username.as_str(), report.stations[1].hostname.as_str()), ("bob", ""));
        // A record about the subject as a whole: its own hostname.
        let mut meta = metadata(MAC, "192.0.2.7");
        assert_eq!(correct(&mut meta, &[Subject::Mac(MAC)], CorrectableField::Hostname, "ap-7"), 1);
        let RecordBody::Metadata(m) = &meta.body else { panic!() };
        assert_eq!(m.hostname.as_str(), "ap-7");
        assert_eq!(correct(&mut meta, &[Subject::Mac(bob)], CorrectableField::Hostname, "x"), 0, "not bob's");
        assert_eq!("hostname".parse::<CorrectableField>(), Ok(CorrectableField::Hostname));
        assert!("mac".parse::<CorrectableField>().unwrap_err().contains("username, hostname"));
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_decode_to_a_bounded_list_or_an_error(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            if let Ok(list) = postcard::from_bytes::<BlockedSubjects>(&bytes) {
                proptest::prop_assert!(list.len() <= MAX_BLOCKED_SUBJECTS);
                let again: BlockedSubjects = postcard::from_bytes(&postcard::to_stdvec(&list).unwrap()).unwrap();
                proptest::prop_assert_eq!(again, list);
            }
        }
    }

    #[test]
    fn a_long_list_matches_packets_as_a_short_one_does() {
        let packets = [
            capture(&udp4(MAC, [192, 0, 2, 7], [198, 51, 100, 1])),
            capture(&udp4(MacAddr([7; 6]), [198, 51, 100, 1], [192, 0, 2, 7])),
            capture(&udp4(MacAddr([7; 6]), [10, 0, 0, 1], [10, 0, 0, 2])),
        ];
        let filler: Vec<Subject> = (1..20u8).map(|i| Subject::Mac(MacAddr([0x0a, 0, 0, 0, 0, i]))).collect();
        for subject in [
            Subject::Mac(MAC),
            Subject::Ip("192.0.2.7".parse().unwrap()),
            Subject::Ip("2001:db8::1".parse().unwrap()),
            Subject::Username(BoundedString::truncating("alice")),
        ] {
            let mut long = filler.clone();
            long.push(subject.clone());
            for packet in &packets {
                assert_eq!(mentions(&packet.body, &long, Mentions::Anywhere), concerns(packet, &subject), "{subject}");
            }
        }
    }
}
