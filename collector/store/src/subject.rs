//! Data-subject rights: finding, exporting and erasing every stored record
//! about one person or device, named by a MAC address, an IP address or a
//! username.
//!
//! What "about" means, per record kind (the fields come from
//! [`glimpse_common::record::personal`], the one walk over what records
//! hold about people, so a new record kind or field is covered here once it
//! is covered there):
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
//! else's, and an erase removes those entries and keeps the report for the
//! others. Counter and WAN reports name no client.
//!
//! Searching the raw header bytes for MACs and IPv6 addresses errs on the
//! side of erasing: 6 and 16 byte patterns practically never occur by
//! chance, and an erase that misses a record is worse than one that takes a
//! stray packet with it. IPv4 addresses (4 bytes) are matched by field only,
//! since a 4-byte pattern can occur by chance in sequence numbers.

use std::net::IpAddr;

use glimpse_common::capture::macs::mac_of_ipv6;
use glimpse_common::capture::CapturedPacket;
use glimpse_common::identity::OrgId;
use glimpse_common::record::personal::{self, Category, Entry, Field, FieldMut, FieldRef, Scope, Visit, VisitMut};
use glimpse_common::record::{DataKind, MacAddr, Record, RecordBody};
use glimpse_common::wire::admin::Subject;

use crate::export::ExportLine;
use crate::store::{EraseReport, Redaction, Store, StoreError};

/// EtherType of ARP.
const ETHERTYPE_ARP: u16 = 0x0806;

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
            self.found = self.subjects.iter().any(|subject| field_is(subject, field, value));
        }
    }
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
                IpAddr::V6(v6) => mac_of_ipv6(v6) == Some(*mac),
                IpAddr::V4(_) => false,
            }),
            _ => false,
        },
        (Category::Username, FieldRef::Text(name)) => {
            matches!(subject, Subject::Username(wanted) if !name.is_empty() && name == wanted.as_str())
        }
        (Category::PacketHeaders, FieldRef::Packet(packet)) => capture_concerns(packet, subject),
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
            | Category::DeviceDetails,
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
                        self.macs.push(entry.client_mac());
                    }
                }
                Entry::Roam(_) | Entry::WiredHost(_) | Entry::ClientDevice(_) => {}
            }
        }
    }
    let mut stations = Stations { subjects, macs: Vec::new() };
    personal::visit(body, &mut stations);
    stations.macs.extend(subjects.iter().filter_map(|s| if let Subject::Mac(m) = s { Some(*m) } else { None }));
    stations.macs
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
        let subjects = match entry {
            // A client-device report is a record of its own, with no
            // station to match an IP or username by: its entries are found
            // by the subjects' MACs.
            Entry::Station(_) | Entry::Roam(_) | Entry::ClientDevice(_) => {
                self.station_macs.contains(&entry.client_mac())
            }
            Entry::WiredHost(_) => entry_is(entry, self.subjects),
        };
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
fn subject_view(record: &Record, subjects: &[Subject]) -> Option<Record> {
    if mentions(&record.body, subjects, Mentions::WholeRecord) {
        return Some(record.clone());
    }
    let mut view = record.clone();
    (split(&mut view, subjects, true) > 0).then_some(view)
}

/// What an erase of `subjects` does to `record`.
fn redaction(record: &mut Record, subjects: &[Subject]) -> Redaction {
    if mentions(&record.body, subjects, Mentions::WholeRecord) {
        return Redaction::Remove;
    }
    if split(record, subjects, false) > 0 {
        Redaction::Changed
    } else {
        Redaction::Keep
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// Whether a captured packet is about `subject`: by its parsed source and
/// destination, and by the raw bytes (see the module header).
fn capture_concerns(packet: &CapturedPacket, subject: &Subject) -> bool {
    let summary = packet.summary();
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
        // Headers hold no usernames; a subject kind added later matches
        // nothing here until it says how.
        _ => false,
    }
}

/// The forms `subject` may be stored under in `org`: as given and, for a
/// MAC address, as the organisation's pseudonym of it (stored when the
/// organisation pseudonymises MACs, or did at some point): the two-layer
/// form of [`glimpse_common::minimise`], and the one-layer form that
/// collectors stored before devices pseudonymised themselves.
fn stored_forms(store: &Store, org: &OrgId, subject: &Subject) -> Result<Vec<Subject>, StoreError> {
    let mut forms = vec![subject.clone()];
    if let Subject::Mac(mac) = subject {
        if store.org_keys().get(org)?.is_some() {
            let key = store.pseudonym_key(org)?;
            forms.push(Subject::Mac(glimpse_common::minimise::pseudonymous_mac(&key, *mac)));
            let pseudonymiser = glimpse_common::minimise::Pseudonymiser::new(key);
            forms.push(Subject::Mac(pseudonymiser.stored_form(*mac, glimpse_common::minimise::MacForm::Real)));
        }
    }
    Ok(forms)
}

/// One page of a subject export.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubjectPage {
    /// Records about the subject in all.
    pub total: u64,
    /// The page: export JSON lines of the records after the first `skip`.
    pub lines: Vec<String>,
}

/// Stored records about `subject` in `org`, as export JSON lines: metadata
/// first, then captures, each oldest first; the `skip` first are left out,
/// and the page ends before `max_lines` lines or `max_bytes` bytes. Only the
/// page is held in memory, whatever the subject's total. Records past their
/// retention window are not returned (they are as good as deleted).
pub fn export_subject(
    store: &Store,
    org: &OrgId,
    subject: &Subject,
    skip: u64,
    max_lines: usize,
    max_bytes: usize,
) -> Result<SubjectPage, StoreError> {
    let forms = stored_forms(store, org, subject)?;
    let mut page = SubjectPage::default();
    let mut bytes = 0usize;
    let mut full = false;
    for kind in DataKind::ALL {
        store.read_with(org, kind, None, None, |mut stored| {
            let Some(view) = subject_view(&stored.record, &forms) else { return };
            stored.record = view;
            page.total += 1;
            if page.total <= skip || full {
                return;
            }
            // Serialising our own types cannot fail.
            let Ok(line) = serde_json::to_string(&ExportLine::new(org, &stored)) else { return };
            if page.lines.len() >= max_lines || (!page.lines.is_empty() && bytes + line.len() > max_bytes) {
                full = true;
                return;
            }
            bytes += line.len();
            page.lines.push(line);
        })?;
    }
    Ok(page)
}

/// What [`erase_subject`] removed, per kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SubjectErasure {
    /// From metadata.
    pub metadata: EraseReport,
    /// From captures.
    pub captures: EraseReport,
}

/// Erases every stored record about `subject` in `org`, whatever its age.
pub fn erase_subject(store: &Store, org: &OrgId, subject: &Subject) -> Result<SubjectErasure, StoreError> {
    let forms = stored_forms(store, org, subject)?;
    let redact = |stored: &mut crate::store::StoredRecord| redaction(&mut stored.record, &forms);
    Ok(SubjectErasure {
        metadata: store.redact_where(org, DataKind::Metadata, &redact)?,
        captures: store.redact_where(org, DataKind::Capture, &redact)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use glimpse_common::bounded::{BoundedString, BoundedVec};
    use glimpse_common::capture::LinkType;
    use glimpse_common::record::{DeviceMetadata, InterfaceStats, MacAddr};

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

    #[test]
    fn exports_page_within_their_bounds() {
        let f = crate::store::testutil::Fixture::new();
        let ap = crate::store::testutil::identity("acme", "ap-1");
        let records: Vec<Record> =
            (0..5).map(|i| metadata(if i == 2 { MacAddr([9; 6]) } else { MAC }, &format!("192.0.2.{i}"))).collect();
        f.store.append(&ap, 1, 1, &records).unwrap();
        let org = OrgId::new("acme").unwrap();
        let subject = Subject::Mac(MAC);
        let first = export_subject(&f.store, &org, &subject, 0, 3, usize::MAX).unwrap();
        assert_eq!((first.total, first.lines.len()), (4, 3));
        let rest = export_subject(&f.store, &org, &subject, 3, 3, usize::MAX).unwrap();
        assert_eq!((rest.total, rest.lines.len()), (4, 1));
        let by_bytes = export_subject(&f.store, &org, &subject, 0, 100, first.lines[0].len() + 1).unwrap();
        assert_eq!(by_bytes.lines.len(), 1, "the byte bound ends the page");
        let tiny = export_subject(&f.store, &org, &subject, 0, 100, 1).unwrap();
        assert_eq!(tiny.lines.len(), 1, "a page always carries at least one record");
        assert!(export_subject(&f.store, &org, &subject, 4, 3, usize::MAX).unwrap().lines.is_empty());
    }

    fn station(mac: MacAddr, ip: &str, username: &str) -> glimpse_common::record::Station {
        glimpse_common::record::Station {
            mac,
            interface: BoundedString::truncating("wlan0"),
            addresses: BoundedVec::truncating(vec![ip.parse().unwrap()]),
            username: BoundedString::truncating(username),
            ..Default::default()
        }
    }

    fn wireless(stations: Vec<glimpse_common::record::Station>) -> Record {
        use glimpse_common::record::{RoamEvent, RoamKind, WirelessReport};
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
    fn a_many_client_report_gives_up_only_the_subject() {
        let bob = MacAddr([0x02, 0, 0, 0, 0, 0xb0]);
        let record = wireless(vec![station(MAC, "192.0.2.7", "alice"), station(bob, "192.0.2.8", "bob")]);
        for subject in [
            Subject::Mac(MAC),
            Subject::Ip("192.0.2.7".parse().unwrap()),
            Subject::Username(BoundedString::truncating("alice")),
        ] {
            assert!(concerns(&record, &subject), "{subject}");
            let view = subject_view(&record, std::slice::from_ref(&subject)).unwrap();
            let RecordBody::Wireless(view) = view.body else { panic!() };
            assert_eq!(view.stations.len(), 1, "the export shows alice only");
            assert_eq!((view.stations[0].mac, view.roaming.len(), view.roaming[0].mac), (MAC, 1, MAC));

            let mut erased = record.clone();
            assert_eq!(redaction(&mut erased, std::slice::from_ref(&subject)), Redaction::Changed);
            let RecordBody::Wireless(left) = &erased.body else { panic!() };
            assert_eq!(left.stations.len(), 1);
            assert_eq!((left.stations[0].mac, left.roaming.len(), left.roaming[0].mac), (bob, 1, bob), "bob stays");
            assert!(!concerns(&erased, &subject));
        }
        let nobody = Subject::Username(BoundedString::truncating("carol"));
        assert!(!concerns(&record, &nobody) && subject_view(&record, std::slice::from_ref(&nobody)).is_none());
        let mut untouched = record.clone();
        assert_eq!(redaction(&mut untouched, &[nobody]), Redaction::Keep);
        assert_eq!(untouched, record);
        // An empty username never matches an empty request.
        let anonymous = wireless(vec![station(bob, "192.0.2.8", "")]);
        assert!(!concerns(&anonymous, &Subject::Username(BoundedString::truncating(""))));
    }

    #[test]
    fn erasing_a_station_rewrites_the_report_without_it() {
        let f = crate::store::testutil::Fixture::new();
        let ap = crate::store::testutil::identity("acme", "ap-1");
        let bob = MacAddr([0x02, 0, 0, 0, 0, 0xb0]);
        let records = vec![wireless(vec![station(MAC, "192.0.2.7", "alice"), station(bob, "192.0.2.8", "bob")])];
        f.store.append(&ap, 1, 1, &records).unwrap();
        let org = OrgId::new("acme").unwrap();
        let alice = Subject::Username(BoundedString::truncating("alice"));
        let page = export_subject(&f.store, &org, &alice, 0, 10, usize::MAX).unwrap();
        assert_eq!(page.total, 1);
        assert!(page.lines[0].contains("\"alice\"") && !page.lines[0].contains("\"bob\""), "{}", page.lines[0]);
        let done = erase_subject(&f.store, &org, &alice).unwrap();
        assert_eq!((done.metadata.records, done.metadata.redacted), (0, 1));
        assert_eq!(export_subject(&f.store, &org, &alice, 0, 10, usize::MAX).unwrap().total, 0);
        let bob_page = export_subject(&f.store, &org, &Subject::Mac(bob), 0, 10, usize::MAX).unwrap();
        assert_eq!(bob_page.total, 1, "bob's part of the report is still stored");
    }

    #[test]
    fn a_wired_host_is_taken_alone_and_the_reporting_device_is_not_a_subject() {
        use glimpse_common::record::{Radio, WiredHost, WiredReport};
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
        let view = subject_view(&record, &alice).unwrap();
        let RecordBody::Wired(view) = view.body else { panic!() };
        assert_eq!((view.hosts.len(), view.hosts[0].mac, view.neighbours.len()), (1, MAC, 0));
        let mut erased = record.clone();
        assert_eq!(redaction(&mut erased, &alice), Redaction::Changed);
        let RecordBody::Wired(left) = &erased.body else { panic!() };
        assert_eq!((left.hosts.len(), left.hosts[0].mac, left.neighbours.len()), (1, bob, 1));

        // An access point's BSSID is the access point's: a request about
        // it finds the device's metadata, not every report it sent.
        let mut report = wireless(vec![station(bob, "192.0.2.8", "bob")]);
        let RecordBody::Wireless(w) = &mut report.body else { panic!() };
        w.radios = BoundedVec::truncating(vec![Radio { bssid: Some(MAC), ..Default::default() }]);
        assert!(!concerns(&report, &Subject::Mac(MAC)));
        assert_eq!(redaction(&mut report.clone(), &[Subject::Mac(MAC)]), Redaction::Keep);
    }

    #[test]
    fn a_client_devices_report_gives_up_only_the_subjects_entry_by_mac() {
        use glimpse_common::record::{ClientDevice, ClientDeviceReport};
        let bob = MacAddr([0x02, 0, 0, 0, 0, 0xb0]);
        let device = |mac| ClientDevice { mac, os: BoundedString::truncating("iOS"), ..Default::default() };
        let record = Record {
            observed_at_ms: 0,
            body: RecordBody::ClientDevices(Box::new(ClientDeviceReport {
                clients: BoundedVec::truncating(vec![device(MAC), device(bob)]),
            })),
        };
        let subject = Subject::Mac(MAC);
        assert!(concerns(&record, &subject));
        let view = subject_view(&record, std::slice::from_ref(&subject)).unwrap();
        let RecordBody::ClientDevices(view) = view.body else { panic!() };
        assert_eq!(view.clients.iter().map(|c| c.mac).collect::<Vec<_>>(), [MAC], "the export shows the subject only");
        let mut erased = record.clone();
        assert_eq!(redaction(&mut erased, std::slice::from_ref(&subject)), Redaction::Changed);
        let RecordBody::ClientDevices(left) = &erased.body else { panic!() };
        assert_eq!(left.clients.iter().map(|c| c.mac).collect::<Vec<_>>(), [bob], "bob stays");
        let nobody = Subject::Username(BoundedString::truncating("alice"));
        assert!(!concerns(&record, &nobody), "a client-devices entry holds no username");
    }
}
