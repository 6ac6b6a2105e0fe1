//! The streaming engine against a real store: chunks, filters and resume
//! by cursor with data arriving, erasures and repeats in between.

use std::ops::ControlFlow;

use glimpse_common::bounded::BoundedString;
use glimpse_common::capture::{CaptureFilter, CapturedPacket, LinkType};
use glimpse_common::clock::MILLIS_PER_DAY;
use glimpse_common::identity::{DeviceId, OrgId};
use glimpse_common::record::{DataKind, Record, RecordBody};

use super::*;
use crate::store::testutil::{identity, record, Fixture};

fn acme() -> OrgId {
    OrgId::new("acme").unwrap()
}

/// Every line of a JSON-lines export: (hostname, cursor).
fn run(f: &Fixture, request: &ExportRequest) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let summary = export_to(&f.store, None, request, &mut out).unwrap();
    assert!(summary.complete && summary.problems == 0, "{summary:?}");
    let lines = lines(&out);
    assert_eq!(summary.records, lines.len());
    assert_eq!(summary.last_cursor.map(|c| c.encode()), lines.last().map(|l| l.1.clone()));
    lines
}

fn lines(out: &[u8]) -> Vec<(String, String)> {
    std::str::from_utf8(out)
        .unwrap()
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let host = v["record"]["metadata"]["hostname"].as_str().unwrap_or_default().to_owned();
            (host, v["cursor"].as_str().unwrap().to_owned())
        })
        .collect()
}

fn json(kind: DataKind) -> ExportRequest {
    ExportRequest::new(acme(), kind, ExportFormat::JsonLines)
}

fn after(kind: DataKind, cursor: &str) -> ExportRequest {
    ExportRequest { cursor: Some(ExportCursor::decode(cursor, kind).unwrap()), ..json(kind) }
}

fn names(lines: &[(String, String)]) -> Vec<&str> {
    lines.iter().map(|l| l.0.as_str()).collect()
}

/// Records in three segments over two days, from two devices.
fn populated() -> Fixture {
    let f = Fixture::new();
    let (ap1, ap2) = (identity("acme", "ap-1"), identity("acme", "ap-2"));
    f.append(&ap1, 1, &["a", "b"]);
    f.append(&ap2, 1, &["c"]);
    let f = f.reopen(1).unwrap();
    f.append(&ap1, 2, &["d", "e"]);
    f.clock.advance(MILLIS_PER_DAY);
    f.append(&ap2, 2, &["f"]);
    f.append(&identity("other", "ap-9"), 1, &["not-acme"]);
    f
}

#[test]
fn resuming_at_every_cursor_gives_exactly_the_rest() {
    let f = populated();
    let all = run(&f, &json(DataKind::Metadata));
    assert_eq!(names(&all), ["a", "b", "c", "d", "e", "f"]);
    for (i, (_, cursor)) in all.iter().enumerate() {
        let rest = run(&f, &after(DataKind::Metadata, cursor));
        assert_eq!(rest, all[i + 1..], "after record {i}");
    }
}

#[test]
fn records_stored_after_the_cursor_come_next_and_none_twice() {
    let f = populated();
    let first = run(&f, &json(DataKind::Metadata));
    let (_, at_c) = &first[2];
    // New data in the newest segment, and in a new segment after a restart.
    f.append(&identity("acme", "ap-1"), 3, &["g"]);
    let f = f.reopen(1).unwrap();
    f.append(&identity("acme", "ap-2"), 3, &["h"]);
    let rest = run(&f, &after(DataKind::Metadata, at_c));
    assert_eq!(names(&rest), ["d", "e", "f", "g", "h"]);
    let last = &rest.last().unwrap().1;
    assert!(run(&f, &after(DataKind::Metadata, last)).is_empty());
}

#[test]
fn a_consumer_that_stops_resumes_from_the_last_chunk_it_took() {
    let f = populated();
    // One-byte chunks: every record is its own chunk.
    let mut taken = Vec::new();
    // The fifth chunk cannot be handed on (the client went away).
    let summary = export_chunks(&f.store, &json(DataKind::Metadata), 1, &mut |chunk| {
        if taken.iter().filter(|b| **b == b'\n').count() == 4 {
            return ControlFlow::Break(());
        }
        taken.extend_from_slice(&chunk);
        ControlFlow::Continue(())
    })
    .unwrap();
    assert!(!summary.complete);
    assert_eq!(summary.records, 4);
    assert_eq!(summary.bytes, taken.len() as u64);
    let got = lines(&taken);
    assert_eq!(summary.last_cursor.unwrap().encode(), got[3].1);
    let rest = run(&f, &ExportRequest { cursor: summary.last_cursor, ..json(DataKind::Metadata) });
    assert_eq!(names(&rest), ["e", "f"]);
}

#[test]
fn chunks_are_bounded_and_end_on_record_boundaries() {
    let f = Fixture::new();
    let ap = identity("acme", "ap-1");
    let hosts: Vec<String> = (0..500).map(|i| format!("host-{i:04}")).collect();
    let refs: Vec<&str> = hosts.iter().map(String::as_str).collect();
    f.append(&ap, 1, &refs);
    let mut sizes = Vec::new();
    let mut all = Vec::new();
    export_chunks(&f.store, &json(DataKind::Metadata), 4096, &mut |chunk| {
        assert_eq!(chunk.last(), Some(&b'\n'));
        sizes.push(chunk.len());
        all.extend_from_slice(&chunk);
        ControlFlow::Continue(())
    })
    .unwrap();
    assert!(sizes.len() > 10, "{sizes:?}");
    // A chunk is handed on as soon as it reaches the size: one line over at most.
    assert!(sizes.iter().all(|s| *s < 4096 + 1024), "{sizes:?}");
    assert_eq!(lines(&all).len(), 500);
}

#[test]
fn devices_and_time_range_select_records() {
    let f = populated();
    let only_ap2 = ExportRequest { devices: vec![DeviceId::new("ap-2").unwrap()], ..json(DataKind::Metadata) };
    let got = run(&f, &only_ap2);
    assert_eq!(names(&got), ["c", "f"]);
    // Resuming a filtered export keeps to the filter.
    let rest = run(
        &f,
        &ExportRequest { cursor: Some(ExportCursor::decode(&got[0].1, DataKind::Metadata).unwrap()), ..only_ap2 },
    );
    assert_eq!(names(&rest), ["f"]);
    let day_two =
        ExportRequest { since: Some(crate::store::testutil::T0 + MILLIS_PER_DAY / 2), ..json(DataKind::Metadata) };
    assert_eq!(names(&run(&f, &day_two)), ["f"]);
}

#[test]
fn an_erasure_between_the_parts_neither_repeats_nor_loses_a_record() {
    let f = Fixture::new();
    let ap = identity("acme", "ap-1");
    f.append(&ap, 1, &["a", "erase-me", "b", "c"]);
    f.append(&ap, 2, &["d"]);
    let all = run(&f, &json(DataKind::Metadata));
    let is = |name: &'static str| move |r: &crate::store::StoredRecord| matches!(&r.record.body, RecordBody::Metadata(m) if m.hostname.as_str() == name);
    // The segment is rewritten (new id) without a record before the cursor.
    f.store.erase_where(&acme(), DataKind::Metadata, &is("erase-me")).unwrap();
    assert_eq!(names(&run(&f, &after(DataKind::Metadata, &all[2].1))), ["c", "d"]);
    // ... and without the cursor's own record: the rest still follows.
    f.store.erase_where(&acme(), DataKind::Metadata, &is("b")).unwrap();
    assert_eq!(names(&run(&f, &after(DataKind::Metadata, &all[2].1))), ["c", "d"]);
    // ... and without the cursor's whole batch: the next batch follows.
    f.clock.advance(1);
    f.append(&ap, 3, &["e"]);
    f.store.erase_where(&acme(), DataKind::Metadata, &|r| !is("e")(r)).unwrap();
    assert_eq!(names(&run(&f, &after(DataKind::Metadata, &all[2].1))), ["e"]);
}

#[test]
fn a_batch_stored_twice_is_not_served_again_after_the_cursor() {
    let f = Fixture::new();
    let ap = identity("acme", "ap-1");
    let batch = [record("a"), record("b")];
    f.store.registry().failing_seq_commits.store(1, std::sync::atomic::Ordering::SeqCst);
    f.store.append(&ap, 7, 1, &batch).unwrap_err();
    f.store.append(&ap, 7, 1, &batch).unwrap();
    f.append(&ap, 2, &["c"]);
    let all = run(&f, &json(DataKind::Metadata));
    assert_eq!(names(&all), ["a", "b", "c"]);
    assert_eq!(names(&run(&f, &after(DataKind::Metadata, &all[1].1))), ["c"]);
}

#[test]
fn bad_requests_are_refused_before_any_byte() {
    let f = populated();
    let mut out = Vec::new();
    let pcap_of_metadata = ExportRequest { format: ExportFormat::Pcapng, ..json(DataKind::Metadata) };
    assert!(matches!(export_to(&f.store, None, &pcap_of_metadata, &mut out), Err(ExportError::PcapOfMetadata)));
    let filter = Some(CaptureFilter::parse("tcp").unwrap());
    let filter_of_metadata = ExportRequest { filter, ..json(DataKind::Metadata) };
    assert!(matches!(export_to(&f.store, None, &filter_of_metadata, &mut out), Err(ExportError::FilterOfMetadata)));
    let many = ExportRequest {
        devices: (0..=MAX_DEVICES).map(|i| DeviceId::new(format!("d{i}")).unwrap()).collect(),
        ..json(DataKind::Metadata)
    };
    assert!(matches!(export_to(&f.store, None, &many, &mut out), Err(ExportError::TooManyDevices { .. })));
    let cursor = run(&f, &json(DataKind::Metadata))[0].1.clone();
    assert!(ExportCursor::decode(&cursor, DataKind::Capture).is_err());
    let wrong_kind = ExportRequest {
        cursor: Some(ExportCursor {
            kind: DataKind::Metadata,
            ..ExportCursor::decode(&cursor, DataKind::Metadata).unwrap()
        }),
        ..json(DataKind::Capture)
    };
    assert!(matches!(export_to(&f.store, None, &wrong_kind, &mut out), Err(ExportError::Cursor(_))));
    assert!(out.is_empty());
}

/// An Ethernet/IPv4/UDP packet from 10.0.0.`last` to port `port`.
fn udp_packet(last: u8, port: u16) -> Record {
    let mut p = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
    let total: u16 = 20 + 8 + 4;
    p.extend_from_slice(&[0x45, 0, (total >> 8) as u8, total as u8, 0, 1, 0, 0, 64, 17, 0, 0]);
    p.extend_from_slice(&[10, 0, 0, last, 192, 168, 1, 1]);
    p.extend_from_slice(&40000u16.to_be_bytes());
    p.extend_from_slice(&port.to_be_bytes());
    p.extend_from_slice(&[0, 12, 0, 0]);
    p.extend_from_slice(b"DATA");
    let packet = CapturedPacket::from_packet(
        LinkType::Ethernet,
        1_700_000_000_000_000 + i64::from(last),
        BoundedString::truncating("eth0"),
        &p,
        p.len() as u32,
    );
    Record { observed_at_ms: 1_700_000_000_000, body: RecordBody::Capture(packet) }
}

/// The EPB comments of a pcapng stream, in order.
fn epb_comments(out: &[u8]) -> Vec<String> {
    let u32_at = |at: usize| u32::from_le_bytes(out[at..at + 4].try_into().unwrap()) as usize;
    let mut at = 0;
    let mut comments = Vec::new();
    while at < out.len() {
        let (kind, len) = (u32_at(at), u32_at(at + 4));
        if kind == 6 {
            let captured = u32_at(at + 20);
            let mut opt = at + 28 + captured + (4 - captured % 4) % 4;
            while opt < at + len - 4 {
                let code = u16::from_le_bytes([out[opt], out[opt + 1]]);
                let olen = u16::from_le_bytes([out[opt + 2], out[opt + 3]]) as usize;
                if code == 1 {
                    comments.push(String::from_utf8(out[opt + 4..opt + 4 + olen].to_vec()).unwrap());
                }
                if code == 0 {
                    break;
                }
                opt += 4 + olen + (4 - olen % 4) % 4;
            }
        }
        at += len;
    }
    comments
}

#[test]
fn captures_filter_by_headers_and_carry_cursors_in_pcapng() {
    let f = Fixture::new();
    let ap = identity("acme", "ap-1");
    let packets: Vec<Record> = [(1, 53), (2, 53), (1, 80), (3, 123)].map(|(h, p)| udp_packet(h, p)).to_vec();
    f.store.append(&ap, 1, 1, &packets).unwrap();
    let pcap = |filter: Option<&str>, cursor: Option<ExportCursor>| {
        let request = ExportRequest {
            filter: filter.map(|t| CaptureFilter::parse(t).unwrap()),
            cursor,
            ..ExportRequest::new(acme(), DataKind::Capture, ExportFormat::Pcapng)
        };
        let mut out = Vec::new();
        let summary = export_to(&f.store, None, &request, &mut out).unwrap();
        (summary, epb_comments(&out))
    };
    let (all, comments) = pcap(None, None);
    assert_eq!(all.records, 4);
    assert_eq!(comments.len(), 4);
    assert!(comments.iter().all(|c| c.starts_with("cursor=")));
    let (dns, dns_comments) = pcap(Some("host 10.0.0.1 and udp dst port 53"), None);
    assert_eq!(dns.records, 1);
    assert_eq!(dns_comments, comments[..1]);
    let (not_dns, not_dns_comments) = pcap(Some("not port 53"), None);
    assert_eq!(not_dns.records, 2);
    assert_eq!(not_dns_comments, [comments[2].clone(), comments[3].clone()]);
    // Resume from the second packet's comment.
    let cursor = ExportCursor::decode(comments[1].strip_prefix("cursor=").unwrap(), DataKind::Capture).unwrap();
    let (rest, rest_comments) = pcap(None, Some(cursor));
    assert_eq!(rest.records, 2);
    assert_eq!(rest_comments, comments[2..]);
    // JSON lines of captures carry the decoded headers and cursors too.
    let mut out = Vec::new();
    let request = ExportRequest { filter: Some(CaptureFilter::parse("port 123").unwrap()), ..json(DataKind::Capture) };
    export_to(&f.store, None, &request, &mut out).unwrap();
    let line: serde_json::Value = serde_json::from_slice(out.split(|b| *b == b'\n').next().unwrap()).unwrap();
    assert_eq!(line["summary"]["dst_port"], 123);
    assert_eq!(line["cursor"].as_str().unwrap(), comments[3].strip_prefix("cursor=").unwrap());
}
