//! Data-subject rights over stored data: finding, exporting, erasing and
//! correcting every stored record about one person or device, named by a
//! MAC address, an IP address or a username, and the stored forms of an
//! organisation's blocked subjects (for dropping their data on arrival and
//! leaving it out of exports).
//!
//! What of a record is about a subject is decided in one place,
//! [`glimpse_common::record::subject`] (the agent uses the same rules to
//! drop blocked subjects' data before sending it); this module adds what
//! only the store knows: the forms a subject is stored under (a MAC as the
//! organisation's pseudonym of it) and the segments to read and rewrite.

use glimpse_common::identity::OrgId;
use glimpse_common::record::subject::{self as rules, CorrectableField, Redaction};
use glimpse_common::record::DataKind;
use glimpse_common::wire::admin::Subject;

use crate::export::ExportLine;
use crate::store::{EraseReport, Store, StoreError};

/// Whether `record` is about `subject`.
pub use glimpse_common::record::subject::concerns;

/// The forms `subject` may be stored under in `org`: as given and, for a
/// MAC address, as the organisation's pseudonym of it (stored when the
/// organisation pseudonymises MACs, or did at some point): the two-layer
/// form of [`glimpse_common::minimise`], and the one-layer form that
/// collectors stored before devices pseudonymised themselves.
fn stored_forms(store: &Store, org: &OrgId, subject: &Subject) -> Result<Vec<Subject>, StoreError> {
    store.subject_forms(org, std::slice::from_ref(subject))
}

/// The forms every subject `org` has blocked may be stored under (see
/// [`Store::blocked_forms`]).
pub fn blocked_forms(store: &Store, org: &OrgId) -> Result<Vec<Subject>, StoreError> {
    store.blocked_forms(org)
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
            let Some(view) = rules::view(&stored.record, &forms) else { return };
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
    let redact = |stored: &mut crate::store::StoredRecord| rules::redact(&mut stored.record, &forms);
    Ok(SubjectErasure {
        metadata: store.redact_where(org, DataKind::Metadata, &redact)?,
        captures: store.redact_where(org, DataKind::Capture, &redact)?,
    })
}

/// What [`correct_subject`] changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SubjectCorrection {
    /// Records in which a value was replaced.
    pub records: u64,
    /// Values replaced (a report can hold the subject's several times).
    pub values: u64,
    /// Segment files rewritten.
    pub segments_rewritten: u64,
}

/// Replaces `field` by `value` in every stored record about `subject` in
/// `org`, whatever its age, in the subject's part of each record only
/// (see [`glimpse_common::record::subject::correct`]): the segments that
/// hold them are rewritten as an erase rewrites them, with the same crash
/// safety. Captures hold no usernames or hostnames and are not read.
pub fn correct_subject(
    store: &Store,
    org: &OrgId,
    subject: &Subject,
    field: CorrectableField,
    value: &str,
) -> Result<SubjectCorrection, StoreError> {
    let forms = stored_forms(store, org, subject)?;
    let values = std::cell::Cell::new(0u64);
    let correct =
        |stored: &mut crate::store::StoredRecord| match rules::correct(&mut stored.record, &forms, field, value) {
            0 => Redaction::Keep,
            n => {
                values.set(values.get().saturating_add(n as u64));
                Redaction::Changed
            }
        };
    let done: EraseReport = store.redact_where(org, DataKind::Metadata, &correct)?;
    Ok(SubjectCorrection { records: done.redacted, values: values.get(), segments_rewritten: done.segments_rewritten })
}

#[cfg(test)]
mod tests {
    use super::*;
    use glimpse_common::bounded::{BoundedString, BoundedVec};
    use glimpse_common::record::{DeviceMetadata, InterfaceStats, MacAddr};
    use glimpse_common::record::{Record, RecordBody};

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
    fn a_correction_rewrites_the_subjects_values_and_a_block_keeps_them_out_of_exports() {
        let f = crate::store::testutil::Fixture::new();
        let ap = crate::store::testutil::identity("acme", "ap-1");
        let bob = MacAddr([0x02, 0, 0, 0, 0, 0xb0]);
        let records = vec![
            wireless(vec![station(MAC, "192.0.2.7", "alice"), station(bob, "192.0.2.8", "bob")]),
            metadata(bob, "192.0.2.8"),
        ];
        f.store.append(&ap, 1, 1, &records).unwrap();
        let org = OrgId::new("acme").unwrap();
        let alice = Subject::Username(BoundedString::truncating("alice"));
        let done = correct_subject(&f.store, &org, &alice, CorrectableField::Username, "alice.smith").unwrap();
        assert_eq!((done.records, done.values, done.segments_rewritten), (1, 1, 1));
        assert_eq!(export_subject(&f.store, &org, &alice, 0, 10, usize::MAX).unwrap().total, 0);
        let renamed = Subject::Username(BoundedString::truncating("alice.smith"));
        assert_eq!(export_subject(&f.store, &org, &renamed, 0, 10, usize::MAX).unwrap().total, 1);
        let bob_subject = Subject::Username(BoundedString::truncating("bob"));
        assert_eq!(export_subject(&f.store, &org, &bob_subject, 0, 10, usize::MAX).unwrap().total, 1, "bob's stays");
        let again = correct_subject(&f.store, &org, &renamed, CorrectableField::Username, "alice.smith").unwrap();
        assert_eq!((again.records, again.segments_rewritten), (0, 0), "nothing to change: nothing rewritten");

        // Blocking bob's MAC: the export leaves his metadata out and his
        // station out of the report; his subject export still answers him.
        let bulk = |store: &Store| {
            let request = crate::export::ExportRequest::new(
                org.clone(),
                DataKind::Metadata,
                crate::export::ExportFormat::JsonLines,
            );
            let mut out = Vec::new();
            crate::export::export_chunks(store, &request, 1 << 20, &mut |chunk| {
                out.extend(chunk);
                std::ops::ControlFlow::Continue(())
            })
            .unwrap();
            String::from_utf8(out).unwrap()
        };
        assert!(bulk(&f.store).contains("\"bob\""));
        f.store.policies().set_blocked(&org, &Subject::Mac(bob), true).unwrap();
        assert_eq!(blocked_forms(&f.store, &org).unwrap().len(), 3, "the MAC and its two pseudonyms");
        let exported = bulk(&f.store);
        assert_eq!(exported.lines().count(), 1, "{exported}");
        assert!(exported.contains("alice.smith") && !exported.contains("\"bob\""), "{exported}");
        assert_eq!(export_subject(&f.store, &org, &Subject::Mac(bob), 0, 10, usize::MAX).unwrap().total, 2);
    }
}
