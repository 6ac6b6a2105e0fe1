//! Data-subject rights: finding, exporting and erasing every stored record
//! about one person or device, named by a MAC address, an IP address or a
//! username.
//!
//! What "about" means, per record kind:
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

use glimpse_common::capture::CapturedPacket;
use glimpse_common::identity::OrgId;
use glimpse_common::record::{DataKind, DeviceMetadata, MacAddr, Record, RecordBody};
use glimpse_common::wire::admin::Subject;

use crate::export::ExportLine;
use crate::store::{EraseReport, Redaction, Store, StoreError};

/// EtherType of ARP.
const ETHERTYPE_ARP: u16 = 0x0806;

/// Whether `record` is about `subject`.
pub fn concerns(record: &Record, subject: &Subject) -> bool {
    match &record.body {
        RecordBody::Metadata(metadata) => metadata_concerns(metadata, subject),
        RecordBody::Capture(packet) => capture_concerns(packet, subject),
        RecordBody::Wireless(_) | RecordBody::Wired(_) => {
            let mut copy = record.clone();
            remove_clients(&mut copy.body, std::slice::from_ref(subject)) > 0
        }
        // A record kind added later must say here what it holds.
        _ => false,
    }
}

/// Whether a client entry with these identifiers is about `subject`.
fn client_is(subject: &Subject, mac: &MacAddr, addresses: &[IpAddr], username: &str) -> bool {
    match subject {
        Subject::Mac(m) => m == mac,
        Subject::Ip(ip) => addresses.contains(ip),
        Subject::Username(name) => !username.is_empty() && username == name.as_str(),
        _ => false,
    }
}

/// Removes from a many-client report the entries about any of `subjects`
/// (stations, roaming events, hosts) and returns how many went. Roaming
/// events carry only a MAC, so an IP or username request also removes the
/// events of the stations it matched.
fn remove_clients(body: &mut RecordBody, subjects: &[Subject]) -> usize {
    let is = |mac: &MacAddr, addresses: &[IpAddr], username: &str| {
        subjects.iter().any(|subject| client_is(subject, mac, addresses, username))
    };
    match body {
        RecordBody::Wireless(report) => {
            let mut stations = std::mem::take(&mut report.stations).into_vec();
            let before = stations.len();
            let mut macs: Vec<MacAddr> =
                stations.iter().filter(|s| is(&s.mac, &s.addresses, s.username.as_str())).map(|s| s.mac).collect();
            stations.retain(|s| !macs.contains(&s.mac));
            let mut removed = before - stations.len();
            report.stations = glimpse_common::bounded::BoundedVec::truncating(stations);
            macs.extend(subjects.iter().filter_map(|s| if let Subject::Mac(m) = s { Some(*m) } else { None }));
            let mut events = std::mem::take(&mut report.roaming).into_vec();
            let before = events.len();
            events.retain(|e| !macs.contains(&e.mac));
            removed += before - events.len();
            report.roaming = glimpse_common::bounded::BoundedVec::truncating(events);
            removed
        }
        RecordBody::Wired(report) => {
            let mut hosts = std::mem::take(&mut report.hosts).into_vec();
            let before = hosts.len();
            hosts.retain(|h| !is(&h.mac, &h.addresses, h.username.as_str()));
            let removed = before - hosts.len();
            report.hosts = glimpse_common::bounded::BoundedVec::truncating(hosts);
            removed
        }
        _ => 0,
    }
}

/// The part of `record` about any of `subjects`, for an export: the whole
/// record for single-subject kinds, only the subject's entries (with the
/// report's device and radios) for many-client reports; `None` when nothing
/// in it is about them.
fn subject_view(record: &Record, subjects: &[Subject]) -> Option<Record> {
    match &record.body {
        RecordBody::Wireless(_) | RecordBody::Wired(_) => {
            let mut others = record.clone();
            if remove_clients(&mut others.body, subjects) == 0 {
                return None;
            }
            // What was removed from the copy is the subject's part: keep
            // exactly those entries.
            let mut view = record.clone();
            match (&mut view.body, &others.body) {
                (RecordBody::Wireless(v), RecordBody::Wireless(o)) => {
                    let mut stations = std::mem::take(&mut v.stations).into_vec();
                    stations.retain(|s| !o.stations.iter().any(|k| k == s));
                    v.stations = glimpse_common::bounded::BoundedVec::truncating(stations);
                    let mut events = std::mem::take(&mut v.roaming).into_vec();
                    events.retain(|e| !o.roaming.iter().any(|k| k == e));
                    v.roaming = glimpse_common::bounded::BoundedVec::truncating(events);
                }
                (RecordBody::Wired(v), RecordBody::Wired(o)) => {
                    let mut hosts = std::mem::take(&mut v.hosts).into_vec();
                    hosts.retain(|h| !o.hosts.iter().any(|k| k == h));
                    v.hosts = glimpse_common::bounded::BoundedVec::truncating(hosts);
                    // Neighbours and VLANs are the switch's, not the subject's.
                    v.neighbours = Default::default();
                }
                _ => {}
            }
            Some(view)
        }
        _ => subjects.iter().any(|subject| concerns(record, subject)).then(|| record.clone()),
    }
}

/// What an erase of `subjects` does to `record`.
fn redaction(record: &mut Record, subjects: &[Subject]) -> Redaction {
    match record.body {
        RecordBody::Wireless(_) | RecordBody::Wired(_) => {
            if remove_clients(&mut record.body, subjects) > 0 {
                Redaction::Changed
            } else {
                Redaction::Keep
            }
        }
        _ if subjects.iter().any(|subject| concerns(record, subject)) => Redaction::Remove,
        _ => Redaction::Keep,
    }
}

fn metadata_concerns(metadata: &DeviceMetadata, subject: &Subject) -> bool {
    match subject {
        Subject::Mac(mac) => metadata.interfaces.iter().any(|i| i.mac.as_ref() == Some(mac)),
        Subject::Ip(ip) => metadata.interfaces.iter().any(|i| i.addresses.contains(ip)),
        _ => false,
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

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
    use glimpse_common::record::{InterfaceStats, MacAddr};

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
}
