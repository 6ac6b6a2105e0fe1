use std::collections::HashSet;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;

use glimpse_common::bounded::{BoundedString, BoundedVec};
use glimpse_common::clock::{format_day, utc_day, MILLIS_PER_DAY};
use glimpse_common::identity::OrgId;
use glimpse_common::record::{DataKind, DeviceMetadata, InterfaceStats, Record, RecordBody};

use super::segment::{SegmentPlace, MAX_PLAINTEXT_LEN};
use super::testutil::{files, hostnames, identity, record, segments, Fixture, T0};
use super::*;

fn org(name: &str) -> OrgId {
    OrgId::new(name).unwrap()
}

#[test]
fn segment_names_parse_whatever_the_sequence_width() {
    assert_eq!(parse_segment_name("00000003-00000000000000ff.seg"), Some((3, 0xff)));
    assert_eq!(
        parse_segment_name("01763899200000518980-75e59e492fd5ea04.seg"),
        Some((1_763_899_200_000_518_980, 0x75e5_9e49_2fd5_ea04))
    );
    for bad in ["3-ff", "-ff.seg", "3-.seg", "+3-ff.seg", "3-zz.seg", "00000003-00000000000000ff.seg.1.new"] {
        assert_eq!(parse_segment_name(bad), None, "{bad}");
    }
}

#[test]
fn a_local_segment_is_located_in_its_day_directory() {
    let fx = Fixture::new();
    let key = seam::SegmentKey {
        org: org("acme"),
        kind: DataKind::Metadata,
        day: utc_day(T0),
        name: "00000001-0000000000000001.seg".into(),
    };
    let at = fx.store.segments().location(&key);
    assert_eq!(at, fx.store.kind_dir(&org("acme"), DataKind::Metadata).join(format_day(utc_day(T0))).join(&key.name));
}

#[test]
fn store_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Store>();
}

#[test]
fn append_then_read_round_trips_in_order() {
    let f = Fixture::new();
    let ap = identity("acme", "ap-1");
    f.append(&ap, 1, &["a", "b"]);
    f.clock.advance(1_000);
    f.append(&ap, 2, &["c"]);

    let out = f.read("acme", DataKind::Metadata);
    assert!(out.problems.is_empty(), "{:?}", out.problems);
    assert_eq!(hostnames(&out), ["a", "b", "c"]);
    let first = &out.records[0];
    assert_eq!(first.device, ap.device);
    assert_eq!(first.device_kind, ap.kind);
    assert_eq!(first.received_at_ms, T0);
    assert_eq!(first.record, record("a"));
    assert_eq!(out.records[2].received_at_ms, T0 + 1_000);
    assert_eq!(f.store.registry().stored_seq(&ap, 1).unwrap(), 2);

    // since is inclusive, until exclusive.
    let o = org("acme");
    let only_c = f.store.read(&o, DataKind::Metadata, Some(T0 + 1), None).unwrap();
    assert_eq!(hostnames(&only_c), ["c"]);
    let only_ab = f.store.read(&o, DataKind::Metadata, Some(T0), Some(T0 + 1_000)).unwrap();
    assert_eq!(hostnames(&only_ab), ["a", "b"]);

    assert!(f.read("acme", DataKind::Capture).records.is_empty());
    assert!(f.read("nobody", DataKind::Metadata).records.is_empty());
    let path = &segments(f.dir.path())[0];
    let expected = f.dir.path().join("orgs/acme/metadata").join(format_day(utc_day(T0)));
    assert_eq!(path.parent().unwrap(), expected);
}

#[test]
fn empty_batch_only_records_the_sequence() {
    let f = Fixture::new();
    let ap = identity("acme", "ap-1");
    let receipt = f.store.append(&ap, 7, 3, &[]).unwrap();
    assert_eq!(receipt, AppendReceipt::default());
    assert_eq!(f.store.registry().stored_seq(&ap, 7).unwrap(), 3);
    assert!(segments(f.dir.path()).is_empty());
    assert!(f.store.org_keys().get(&ap.org).unwrap().is_none());
}

#[test]
fn nothing_is_stored_in_the_clear() {
    let f = Fixture::new();
    let ap = identity("acme", "ap-1");
    f.append(&ap, 1, &["PLAINTEXT-MARKER-123"]);
    let key = f.store.org_keys().get(&ap.org).unwrap().unwrap();
    let all = files(f.dir.path());
    assert!(all.len() >= 2, "{all:?}");
    for path in all {
        let bytes = std::fs::read(&path).unwrap();
        assert!(
            !bytes.windows(b"PLAINTEXT-MARKER-123".len()).any(|w| w == b"PLAINTEXT-MARKER-123"),
            "marker found in {}",
            path.display()
        );
        assert!(!bytes.windows(32).any(|w| w == key.secret().expose()), "raw org key found in {}", path.display());
    }
    assert_eq!(hostnames(&f.read("acme", DataKind::Metadata)), ["PLAINTEXT-MARKER-123"]);
}

#[test]
fn orgs_have_separate_keys_and_cannot_read_each_other() {
    let f = Fixture::new();
    f.append(&identity("acme", "ap-1"), 1, &["acme-host"]);
    f.append(&identity("globex", "ap-1"), 1, &["globex-host"]);
    let keys = f.store.org_keys();
    let acme = keys.get(&org("acme")).unwrap().unwrap();
    let globex = keys.get(&org("globex")).unwrap().unwrap();
    assert_ne!(acme.secret(), globex.secret());
    assert_eq!(f.store.orgs(), vec![org("acme"), org("globex")]);

    // Globex's key against acme's segment, read in acme's place: GCM fails.
    let acme_seg = segments(&f.dir.path().join("orgs/acme"))[0].clone();
    let bytes = std::fs::read(&acme_seg).unwrap();
    let place = SegmentPlace { org: org("acme"), kind: DataKind::Metadata, day: utc_day(T0) };
    let mut served = 0;
    let mut count = |_, _, _, _| {
        served += 1;
        std::ops::ControlFlow::Continue(())
    };
    let mut sink = Sink {
        each: &mut count,
        problems: Vec::new(),
        range: (i64::MIN, i64::MAX),
        tally: None,
        future: (0, 0),
        at: (0, 0),
        gate: super::Gate::Open,
        stopped: false,
    };
    let key = seam::SegmentKey { org: org("acme"), kind: DataKind::Metadata, day: utc_day(T0), name: String::new() };
    let info = seam::SegmentInfo { key, location: acme_seg.clone(), bytes: bytes.len() as u64 };
    read_source(&bytes, &info, &place, &globex, &mut HashSet::new(), &mut sink);
    let problems = sink.problems;
    assert_eq!(served, 0);
    assert!(problems[0].what.contains("failed authentication"), "{problems:?}");

    // Acme's segment copied into globex's directory is refused.
    let globex_day = f.dir.path().join("orgs/globex/metadata").join(format_day(utc_day(T0)));
    std::fs::copy(&acme_seg, globex_day.join("99999999-0000000000000001.seg")).unwrap();
    let out = f.read("globex", DataKind::Metadata);
    assert_eq!(hostnames(&out), ["globex-host"]);
    assert_eq!(out.problems.len(), 1, "{:?}", out.problems);
    assert!(out.problems[0].what.contains("moved segment"));
}

#[test]
fn moving_a_segment_to_another_day_or_kind_is_refused() {
    let f = Fixture::new();
    f.append(&identity("acme", "ap-1"), 1, &["x"]);
    let seg = segments(f.dir.path())[0].clone();
    let kind_dir = f.dir.path().join("orgs/acme/metadata");
    let other_day = kind_dir.join(format_day(utc_day(T0) - 1));
    std::fs::create_dir_all(&other_day).unwrap();
    std::fs::rename(&seg, other_day.join(seg.file_name().unwrap())).unwrap();
    let out = f.read("acme", DataKind::Metadata);
    assert!(out.records.is_empty());
    assert!(out.problems[0].what.contains("moved segment"), "{out:?}");

    let capture_day = f.dir.path().join("orgs/acme/capture").join(format_day(utc_day(T0)));
    std::fs::create_dir_all(&capture_day).unwrap();
    std::fs::rename(other_day.join(seg.file_name().unwrap()), capture_day.join("00000001-0000000000000001.seg"))
        .unwrap();
    let out = f.read("acme", DataKind::Capture);
    assert!(out.records.is_empty());
    assert_eq!(out.problems.len(), 1);
}

#[test]
fn a_copied_segment_is_not_served_twice() {
    let f = Fixture::new();
    f.append(&identity("acme", "ap-1"), 1, &["x"]);
    let seg = segments(f.dir.path())[0].clone();
    std::fs::copy(&seg, seg.with_file_name("99999999-ffffffffffffffff.seg")).unwrap();
    let out = f.read("acme", DataKind::Metadata);
    assert_eq!(hostnames(&out), ["x"]);
    assert!(out.problems[0].what.contains("repeats another segment"));
}

#[test]
fn corrupted_block_is_reported_and_others_still_read() {
    let f = Fixture::new();
    let ap = identity("acme", "ap-1");
    f.append(&ap, 1, &["one"]);
    f.append(&ap, 2, &["two"]);
    f.append(&ap, 3, &["three"]);
    let seg = segments(f.dir.path())[0].clone();
    let mut bytes = std::fs::read(&seg).unwrap();
    // Flip a byte in the middle of the file: inside the second block.
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&seg, &bytes).unwrap();
    let out = f.read("acme", DataKind::Metadata);
    assert_eq!(hostnames(&out), ["one", "three"]);
    assert_eq!(out.problems.len(), 1, "{:?}", out.problems);
    assert_eq!(out.problems[0].path, seg);
}

#[test]
fn torn_tail_and_garbage_are_reported() {
    let f = Fixture::new();
    let ap = identity("acme", "ap-1");
    f.append(&ap, 1, &["one"]);
    f.append(&ap, 2, &["two"]);
    let seg = segments(f.dir.path())[0].clone();
    let len = std::fs::metadata(&seg).unwrap().len();
    let day_dir = seg.parent().unwrap().to_path_buf();
    // A fresh store: the old one would bound its read by the committed length.
    let f = f.reopen(1).unwrap();
    std::fs::OpenOptions::new().write(true).open(&seg).unwrap().set_len(len - 5).unwrap();
    std::fs::write(day_dir.join("00000000-0000000000000000.seg"), b"garbage").unwrap();
    std::fs::write(day_dir.join("notes.txt"), b"hello").unwrap();
    let out = f.read("acme", DataKind::Metadata);
    assert_eq!(hostnames(&out), ["one"]);
    let whats: Vec<_> = out.problems.iter().map(|p| p.what.as_str()).collect();
    assert_eq!(whats.len(), 3, "{whats:?}");
    assert!(whats.iter().any(|w| w.contains("torn tail")), "{whats:?}");
    assert!(whats.iter().any(|w| w.contains("segment header")), "{whats:?}");
    assert!(whats.iter().any(|w| w.contains("not a segment file")), "{whats:?}");
}

#[test]
fn a_torn_tail_left_by_a_crash_is_truncated_at_open_and_other_damage_is_left() {
    use std::io::Write;
    let f = Fixture::new();
    let ap = identity("acme", "ap-1");
    f.append(&ap, 1, &["one"]);
    f.append(&ap, 2, &["two"]);
    let seg = segments(f.dir.path())[0].clone();
    let len = std::fs::metadata(&seg).unwrap().len();
    // A third block cut short: its header says 100 bytes, 3 made it to disk.
    let torn = [0, 0, 0, 100, 0, 0, 0, 0, 0, 0, 0, 2, 1, 2, 3];
    std::fs::OpenOptions::new().append(true).open(&seg).unwrap().write_all(&torn).unwrap();
    let f = f.reopen(1).unwrap();
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), len, "torn tail cut");
    let out = f.read("acme", DataKind::Metadata);
    assert_eq!(hostnames(&out), ["one", "two"]);
    assert!(out.problems.is_empty(), "{:?}", out.problems);

    // Damage before the tail is not a torn write: nothing is cut, and
    // readers report it.
    let seg = segments(f.dir.path()).last().unwrap().clone();
    let mut bytes = std::fs::read(&seg).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    bytes.extend_from_slice(&torn);
    std::fs::write(&seg, &bytes).unwrap();
    let f = f.reopen(1).unwrap();
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), bytes.len() as u64, "damaged segment left as it is");
    assert!(!f.read("acme", DataKind::Metadata).problems.is_empty());
}

#[test]
fn each_store_run_starts_a_new_segment_and_days_roll() {
    let f = Fixture::new();
    let ap = identity("acme", "ap-1");
    f.append(&ap, 1, &["a"]);
    let f = f.reopen(1).unwrap();
    f.append(&ap, 2, &["b"]);
    f.clock.advance(MILLIS_PER_DAY);
    f.append(&ap, 3, &["c"]);
    let segs = segments(f.dir.path());
    assert_eq!(segs.len(), 3);
    assert!(segs[0].file_name().unwrap().to_str().unwrap().starts_with("00000001-"));
    assert!(segs[1].file_name().unwrap().to_str().unwrap().starts_with("00000002-"));
    let out = f.read("acme", DataKind::Metadata);
    assert!(out.problems.is_empty(), "{:?}", out.problems);
    assert_eq!(hostnames(&out), ["a", "b", "c"]);
    assert_eq!(f.store.registry().stored_seq(&ap, 1).unwrap(), 3);

    let stats = f.store.stats().unwrap();
    assert_eq!(stats.segments, 3);
    assert_eq!(stats.kinds.len(), 1);
    assert_eq!(stats.kinds[0].days, 2);
    assert_eq!(stats.kinds[0].oldest_day, Some(format_day(utc_day(T0))));
    assert_eq!(stats.kinds[0].newest_day, Some(format_day(utc_day(T0) + 1)));
    let on_disk: u64 = segs.iter().map(|p| std::fs::metadata(p).unwrap().len()).sum();
    assert_eq!(stats.bytes, on_disk);
}

#[test]
fn wrong_master_key_on_reopen_is_a_clear_error() {
    let f = Fixture::new();
    f.append(&identity("acme", "ap-1"), 1, &["a"]);
    let err = f.reopen(2).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("master key does not open the key store") && msg.contains("glimpse.redb"), "{msg}");
}

#[test]
fn destroyed_org_key_is_a_hard_error_on_read() {
    let f = Fixture::new();
    f.append(&identity("acme", "ap-1"), 1, &["a"]);
    assert!(f.store.org_keys().destroy_org_key(&org("acme")).unwrap());
    let err = f.store.read(&org("acme"), DataKind::Metadata, None, None).unwrap_err();
    assert!(matches!(err, StoreError::NoOrgKey { .. }), "{err}");
}

#[test]
fn large_batches_split_into_bounded_blocks() {
    let iface = InterfaceStats {
        name: BoundedString::truncating("eth0"),
        addresses: BoundedVec::truncating(vec![IpAddr::V6(Ipv6Addr::LOCALHOST); 32]),
        ..Default::default()
    };
    let big = Record {
        observed_at_ms: 1,
        body: RecordBody::Metadata(DeviceMetadata {
            hostname: BoundedString::truncating(&"h".repeat(255)),
            interfaces: BoundedVec::truncating(vec![iface; 256]),
            ..Default::default()
        }),
    };
    let one = postcard::to_stdvec(&big).unwrap().len();
    let n = MAX_PLAINTEXT_LEN / one + 10;
    let records = vec![big; n];
    let f = Fixture::new();
    let receipt = f.store.append(&identity("acme", "ap-1"), 1, 1, &records).unwrap();
    assert_eq!(receipt.blocks, 2);
    assert_eq!(receipt.records, n);
    let out = f.read("acme", DataKind::Metadata);
    assert!(out.problems.is_empty());
    assert_eq!(out.records.len(), n);
    assert_eq!(out.records[n - 1].record, records[0]);
}

#[test]
fn blocks_carry_their_batch_origin() {
    let ap = identity("acme", "ap-1");
    let records = [record("a"), record("b"), record("c")];
    let origin = |index| Some(RecordOrigin { stream_id: 9, stream_seq: 4, index });
    // Positions 0, 1 then 5: the gap (an erased record) starts a new block.
    let stamped: Vec<_> = records
        .iter()
        .zip([origin(0), origin(1), origin(5)])
        .map(|(r, o)| (StoredRecordRef { device: &ap.device, device_kind: ap.kind, received_at_ms: 5, record: r }, o))
        .collect();
    let blocks = block::encode_blocks(&stamped).unwrap();
    assert_eq!(blocks.len(), 2);
    let decoded: Vec<_> =
        blocks.iter().flat_map(|b| block::decode_block(segment::FORMAT_VERSION, b).unwrap()).collect();
    let expected: Vec<_> = stamped
        .iter()
        .map(|(r, o)| {
            let owned = StoredRecord {
                device: r.device.clone(),
                device_kind: r.device_kind,
                received_at_ms: r.received_at_ms,
                record: r.record.clone(),
            };
            (owned, *o)
        })
        .collect();
    assert_eq!(decoded, expected);
    // Trailing bytes, a truncation or an unknown version do not decode.
    let mut longer = blocks[0].clone();
    longer.push(0);
    assert!(block::decode_block(segment::FORMAT_VERSION, &longer).is_none());
    assert!(block::decode_block(segment::FORMAT_VERSION, &blocks[0][..blocks[0].len() - 1]).is_none());
    assert!(block::decode_block(segment::FORMAT_VERSION + 1, &blocks[0]).is_none());
}

#[test]
fn version_1_segments_are_still_served() {
    // A segment as the previous release wrote it: version 1 header and
    // associated data, plaintext postcard(Vec<StoredRecord>).
    let f = Fixture::new();
    let ap = identity("acme", "ap-1");
    f.append(&ap, 1, &["new"]);
    let old: Vec<StoredRecord> = ["old-1", "old-2"]
        .iter()
        .map(|h| StoredRecord {
            device: ap.device.clone(),
            device_kind: ap.kind,
            received_at_ms: T0,
            record: record(h),
        })
        .collect();
    let place = SegmentPlace { org: org("acme"), kind: DataKind::Metadata, day: utc_day(T0) };
    let key = f.store.org_keys().get(&org("acme")).unwrap().unwrap();
    let mut bytes = segment::encode_legacy_header(1, &place, 0x0123_4567_89ab_cdef);
    let plain = postcard::to_stdvec(&old).unwrap();
    bytes.extend(segment::seal_block_in_format(1, key.secret(), &place, 0x0123_4567_89ab_cdef, 0, &plain).unwrap());
    let day_dir = f.dir.path().join("orgs/acme/metadata").join(format_day(utc_day(T0)));
    std::fs::write(day_dir.join("00000000-0123456789abcdef.seg"), bytes).unwrap();

    let out = f.read("acme", DataKind::Metadata);
    assert!(out.problems.is_empty(), "{:?}", out.problems);
    assert_eq!(hostnames(&out), ["old-1", "old-2", "new"]);
}

#[test]
fn a_batch_stored_twice_is_served_once() {
    let f = Fixture::new();
    let ap = identity("acme", "ap-1");
    let batch = [record("a"), record("b")];
    // The first copy is durable, then the sequence commit fails (a full
    // disk): the batch is refused, and the agent sends it again.
    f.store.registry().failing_seq_commits.store(1, std::sync::atomic::Ordering::SeqCst);
    let refused = f.store.append(&ap, 7, 1, &batch).unwrap_err();
    assert!(refused.to_string().contains("no space left"), "{refused}");
    assert_eq!(f.store.registry().stored_seq(&ap, 7).unwrap(), 0);
    f.store.append(&ap, 7, 1, &batch).unwrap();
    assert_eq!(f.store.registry().stored_seq(&ap, 7).unwrap(), 1);
    f.append(&ap, 2, &["c"]);

    let out = f.read("acme", DataKind::Metadata);
    assert!(out.problems.is_empty(), "{:?}", out.problems);
    assert_eq!(hostnames(&out), ["a", "b", "c"]);
    // Another stream of the same device is not a repeat, nor is another
    // device's batch with the same stream and sequence.
    f.store.append(&ap, 8, 1, &batch).unwrap();
    f.store.append(&identity("acme", "ap-2"), 7, 1, &batch).unwrap();
    assert_eq!(hostnames(&f.read("acme", DataKind::Metadata)), ["a", "b", "c", "a", "b", "a", "b"]);
}

#[test]
fn repeats_stay_hidden_after_an_erase_rewrites_their_segment() {
    let f = Fixture::new();
    let ap = identity("acme", "ap-1");
    let batch = [record("keep"), record("erase-me"), record("keep-too")];
    f.store.append(&ap, 7, 1, &batch).unwrap();
    f.store.append(&ap, 7, 1, &batch).unwrap();
    let erased = f
        .store
        .erase_where(
            &org("acme"),
            DataKind::Metadata,
            &|r| matches!(&r.record.body, RecordBody::Metadata(m) if m.hostname.as_str() == "erase-me"),
        )
        .unwrap();
    assert_eq!(erased.records, 2);
    assert_eq!(hostnames(&f.read("acme", DataKind::Metadata)), ["keep", "keep-too"]);
}

#[test]
fn concurrent_appends_and_reads() {
    let f = Fixture::new();
    let store = Arc::new(f.store);
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                let ap = identity(if t % 2 == 0 { "acme" } else { "globex" }, &format!("ap-{t}"));
                for seq in 1..=20u64 {
                    store.append(&ap, 1, seq, &[record(&format!("{t}-{seq}"))]).unwrap();
                    let out = store.read(&ap.org, DataKind::Metadata, None, None).unwrap();
                    assert!(out.problems.is_empty(), "{:?}", out.problems);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    for name in ["acme", "globex"] {
        let out = store.read(&org(name), DataKind::Metadata, None, None).unwrap();
        assert_eq!(out.records.len(), 80);
        assert!(out.problems.is_empty());
    }
}

#[test]
fn read_with_streams_the_same_records() {
    let f = Fixture::new();
    let ap = identity("acme", "ap-1");
    f.append(&ap, 1, &["a", "b"]);
    let mut seen = Vec::new();
    let problems = f.store.read_with(&org("acme"), DataKind::Metadata, None, None, |r| seen.push(r)).unwrap();
    assert!(problems.is_empty());
    assert_eq!(seen, f.read("acme", DataKind::Metadata).records);
}

#[test]
fn a_second_store_on_the_same_directory_is_refused() {
    let f = Fixture::new();
    let clock: Arc<dyn glimpse_common::clock::Clock> = Arc::new(f.clock.clone());
    let err = Store::open(f.dir.path(), crate::keys::test_master(1), clock, Default::default()).unwrap_err();
    assert!(err.to_string().contains("in use by another process"), "{err}");
}

#[test]
fn erase_rewrites_only_affected_segments_under_fresh_ids() {
    let f = Fixture::new();
    let ap = identity("acme", "ap-1");
    f.append(&ap, 1, &["keep-1", "alice", "keep-2"]);
    f.clock.advance(MILLIS_PER_DAY);
    f.append(&ap, 2, &["keep-3"]);
    f.clock.advance(MILLIS_PER_DAY);
    f.append(&ap, 3, &["alice"]);
    let kind_dir = f.store.kind_dir(&org("acme"), DataKind::Metadata);
    let before = segments(&kind_dir);
    assert_eq!(before.len(), 3);

    let is_alice =
        |r: &StoredRecord| matches!(&r.record.body, RecordBody::Metadata(m) if m.hostname.as_str() == "alice");
    let report = f.store.erase_where(&org("acme"), DataKind::Metadata, &is_alice).unwrap();
    assert_eq!((report.records, report.segments_rewritten, report.damaged_segments), (2, 2, 0));
    let out = f.read("acme", DataKind::Metadata);
    assert!(out.problems.is_empty(), "{:?}", out.problems);
    assert_eq!(hostnames(&out), ["keep-1", "keep-2", "keep-3"]);
    let after = segments(&kind_dir);
    // Day 1 rewritten under a new id, day 2 untouched, day 3 emptied and gone.
    assert_eq!(after.len(), 2);
    assert!(!after.contains(&before[0]) && after.contains(&before[1]) && !after.contains(&before[2]));
    assert!(files(&kind_dir).iter().all(|p| !p.to_string_lossy().ends_with(".new")));
    // A second erase finds nothing left to remove.
    assert!(f.store.erase_where(&org("acme"), DataKind::Metadata, &is_alice).unwrap() == EraseReport::default());

    // Appends carry on after an erase, in a fresh segment.
    f.append(&ap, 4, &["keep-4"]);
    assert_eq!(hostnames(&f.read("acme", DataKind::Metadata)), ["keep-1", "keep-2", "keep-3", "keep-4"]);
    let f = f.reopen(1).unwrap();
    assert_eq!(hostnames(&f.read("acme", DataKind::Metadata)), ["keep-1", "keep-2", "keep-3", "keep-4"]);
}

#[test]
fn an_interrupted_erase_is_finished_or_rolled_back_on_open() {
    let f = Fixture::new();
    let ap = identity("acme", "ap-1");
    f.append(&ap, 1, &["a", "b"]);
    let kind_dir = f.store.kind_dir(&org("acme"), DataKind::Metadata);
    let original = segments(&kind_dir).remove(0);
    let f = f.reopen(1).unwrap();

    // Rolled back: the old segment is still there beside a staged copy.
    let staged =
        original.with_file_name(format!("{}.{:016x}.new", original.file_name().unwrap().to_str().unwrap(), 0x1234u64));
    std::fs::write(&staged, b"half-written").unwrap();
    let f = f.reopen(1).unwrap();
    assert!(!staged.exists());
    assert_eq!(hostnames(&f.read("acme", DataKind::Metadata)), ["a", "b"]);

    // Finished: the old segment was unlinked, the staged one is complete.
    let is_b = |r: &StoredRecord| matches!(&r.record.body, RecordBody::Metadata(m) if m.hostname.as_str() == "b");
    f.store.erase_where(&org("acme"), DataKind::Metadata, &is_b).unwrap();
    let rewritten = segments(&kind_dir).remove(0);
    let name = rewritten.file_name().unwrap().to_str().unwrap().to_owned();
    let (seq, id) = name.strip_suffix(".seg").unwrap().split_once('-').unwrap();
    let fake_old = format!("{seq}-{:016x}.seg", 0xdeadu64);
    let staged = rewritten.with_file_name(format!("{fake_old}.{id}.new"));
    std::fs::rename(&rewritten, &staged).unwrap();
    assert!(hostnames(&f.read("acme", DataKind::Metadata)).is_empty(), "staged files are not served");
    let f = f.reopen(1).unwrap();
    assert_eq!(segments(&kind_dir), [rewritten]);
    assert_eq!(hostnames(&f.read("acme", DataKind::Metadata)), ["a"]);
}

#[test]
fn deleting_an_organisation_shreds_its_key_and_data_only() {
    let f = Fixture::new();
    f.append(&identity("acme", "ap-1"), 1, &["a"]);
    f.append_as(&identity("acme", "ap-1"), DataKind::Capture, &["c"]);
    f.append(&identity("globex", "ap-1"), 1, &["g"]);
    let (key_destroyed, segments_deleted) = f.store.delete_org(&org("acme")).unwrap();
    assert!(key_destroyed);
    assert_eq!(segments_deleted, 2);
    assert!(!f.store.orgs_dir().join("acme").exists());
    assert!(f.store.org_keys().get(&org("acme")).unwrap().is_none());
    assert!(f.read("acme", DataKind::Metadata).records.is_empty());
    assert_eq!(hostnames(&f.read("globex", DataKind::Metadata)), ["g"]);
    // The organisation can start over, under a new key.
    f.append(&identity("acme", "ap-1"), 2, &["fresh"]);
    assert_eq!(hostnames(&f.read("acme", DataKind::Metadata)), ["fresh"]);
    assert_eq!(f.store.delete_org(&org("nobody")).unwrap(), (false, 0));
}

#[test]
fn concurrent_appenders_share_fsyncs_and_lose_nothing() {
    // Eight devices of one organisation append at once: their batches go
    // into one segment, written one after another under the slot lock and
    // made durable by shared fsyncs (group commit).
    let f = Fixture::new();
    std::thread::scope(|scope| {
        for d in 0..8 {
            let f = &f;
            scope.spawn(move || {
                let ap = identity("acme", &format!("ap-{d}"));
                for seq in 1..=25u64 {
                    let names: Vec<String> = (0..3).map(|i| format!("{d}-{seq}-{i}")).collect();
                    let names: Vec<&str> = names.iter().map(String::as_str).collect();
                    f.append(&ap, seq, &names);
                }
            });
        }
    });
    let out = f.read("acme", DataKind::Metadata);
    assert!(out.problems.is_empty(), "{:?}", out.problems);
    assert_eq!(out.records.len(), 8 * 25 * 3);
    for d in 0..8 {
        let device = format!("ap-{d}");
        let mine: Vec<String> = hostnames(&out)
            .into_iter()
            .zip(&out.records)
            .filter(|(_, r)| r.device.as_str() == device)
            .map(|(h, _)| h.to_string())
            .collect();
        let expected: Vec<String> = (1..=25).flat_map(|seq| (0..3).map(move |i| format!("{d}-{seq}-{i}"))).collect();
        assert_eq!(mine, expected, "{device}'s records in order");
    }
    // Everything written is durable: a fresh store reads the same.
    let f = f.reopen(1).unwrap();
    assert_eq!(f.read("acme", DataKind::Metadata).records.len(), 600);
}

#[test]
fn the_catalog_reports_a_tail_cut_between_blocks_and_a_vanished_segment() {
    let f = Fixture::new();
    let ap = identity("acme", "ap-1");
    for seq in 1..=3 {
        f.append(&ap, seq, &[&format!("r{seq}")]);
    }
    assert!(f.read("acme", DataKind::Metadata).problems.is_empty());
    let seg = segments(f.dir.path())[0].clone();
    let bytes = std::fs::read(&seg).unwrap();
    let f = f.reopen(1).unwrap();
    // Cut after the first block: a valid, shorter segment.
    let ends = {
        // The fixed header, the two names and the data key version.
        let mut pos = 26 + 2 + "acme".len() + "metadata".len() + 4;
        let mut ends = Vec::new();
        while pos + 12 <= bytes.len() {
            pos += 12 + u32::from_be_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
            ends.push(pos);
        }
        ends
    };
    std::fs::write(&seg, &bytes[..ends[0]]).unwrap();
    let out = f.read("acme", DataKind::Metadata);
    assert_eq!(hostnames(&out), ["r1"]);
    assert_eq!(out.problems.len(), 1, "{:?}", out.problems);
    let what = &out.problems[0].what;
    assert!(what.contains("missing tail") && what.contains("2 acknowledged records"), "{what}");
    assert!(what.contains("batches 2..=3"), "{what}");

    std::fs::remove_file(&seg).unwrap();
    let out = f.read("acme", DataKind::Metadata);
    assert!(out.problems[0].what.contains("missing segment"), "{:?}", out.problems);
    assert_eq!(out.problems[0].path, seg);
    let report = f.store.verify(None).unwrap();
    assert_eq!(report.len(), 1);
    assert_eq!(report[0].2.problems.len(), 1);
}

#[test]
fn a_read_only_store_changes_nothing_and_cuts_no_torn_tail() {
    let f = Fixture::new();
    let ap = identity("acme", "ap-1");
    f.append(&ap, 1, &["one"]);
    f.append(&ap, 2, &["two"]);
    let dir = f.dir.path().to_path_buf();
    let clock: Arc<dyn glimpse_common::clock::Clock> = Arc::new(f.clock.clone());
    let Fixture { dir: keep, store, .. } = f;
    drop(store);
    let seg = segments(&dir)[0].clone();
    let mut torn = std::fs::read(&seg).unwrap();
    torn.extend_from_slice(&[0, 0, 0, 9, 1]);
    std::fs::write(&seg, &torn).unwrap();
    let before: Vec<_> = files(&dir).into_iter().map(|p| (std::fs::read(&p).unwrap(), p)).collect();
    let store = Store::open_read_only(&dir, crate::keys::test_master(1), clock, Default::default()).unwrap();
    let out = store.read(&org("acme"), DataKind::Metadata, None, None).unwrap();
    assert_eq!(hostnames(&out), ["one", "two"]);
    assert!(out.problems.is_empty(), "a torn tail after the catalogued blocks is no loss: {:?}", out.problems);
    store.audit_event("test", "data.export", None, crate::audit::AuditOutcome::Done, "");
    drop(store);
    let after: Vec<_> = files(&dir).into_iter().map(|p| (std::fs::read(&p).unwrap(), p)).collect();
    assert!(before == after, "nothing changed");
    drop(keep);
}

#[test]
fn a_data_key_rotation_keeps_old_segments_readable_until_reencrypted_and_retired() {
    use crate::keys::KeyState;
    let f = Fixture::new();
    let ap = identity("acme", "ap-1");
    f.append(&ap, 1, &["before-1", "before-2"]);
    let acme = org("acme");
    let first = f.store.org_keys().get(&acme).unwrap().unwrap();
    assert_eq!(first.version(), 1);
    let pseudonym_before =
        ring::hmac::sign(&f.store.org_keys().pseudonym_key(&acme).unwrap(), b"mac").as_ref().to_vec();

    let rotated = f.store.rotate_data_key(&acme).unwrap();
    assert_eq!((rotated.previous, rotated.version), (1, 2));
    f.append(&ap, 2, &["after"]);
    let out = f.read("acme", DataKind::Metadata);
    assert!(out.problems.is_empty(), "{:?}", out.problems);
    assert_eq!(hostnames(&out), ["before-1", "before-2", "after"]);
    let status = f.store.data_key_status(&acme).unwrap();
    let by: Vec<_> = status.iter().map(|s| (s.version, s.state, s.segments)).collect();
    assert_eq!(by, [(1, KeyState::Retiring, 1), (2, KeyState::Current, 1)], "the new batch went to a new segment");
    // Pseudonyms stay what they were.
    let pseudonym_after = ring::hmac::sign(&f.store.org_keys().pseudonym_key(&acme).unwrap(), b"mac").as_ref().to_vec();
    assert_eq!(pseudonym_before, pseudonym_after);

    // A budget of nothing does nothing; then the old segment moves.
    assert_eq!(f.store.reencrypt(0).unwrap().segments, 0);
    let run = f.store.reencrypt(10).unwrap();
    assert_eq!((run.segments, run.remaining), (1, 0));
    assert!(run.retired.is_empty(), "retired only by a run that starts with nothing under it");
    let out = f.read("acme", DataKind::Metadata);
    assert!(out.problems.is_empty(), "{:?}", out.problems);
    assert_eq!(hostnames(&out), ["before-1", "before-2", "after"]);
    for (_, _, report) in f.store.verify(Some(&acme)).unwrap() {
        assert!(report.problems.is_empty(), "the catalog rows moved along: {:?}", report.problems);
    }

    let run = f.store.reencrypt(10).unwrap();
    assert_eq!(run.retired, [(acme.clone(), 1)]);
    let status = f.store.data_key_status(&acme).unwrap();
    let by: Vec<_> = status.iter().map(|s| (s.version, s.state, s.segments)).collect();
    assert_eq!(by, [(1, KeyState::Retired, 0), (2, KeyState::Current, 2)]);
    let f = f.reopen(1).unwrap();
    let out = f.read("acme", DataKind::Metadata);
    assert!(out.problems.is_empty(), "{:?}", out.problems);
    assert_eq!(hostnames(&out), ["before-1", "before-2", "after"]);
    assert!(f.store.org_keys().get(&acme).unwrap().unwrap().secret_of(1).is_none(), "version 1 is destroyed");
    let pseudonym_retired =
        ring::hmac::sign(&f.store.org_keys().pseudonym_key(&acme).unwrap(), b"mac").as_ref().to_vec();
    assert_eq!(pseudonym_before, pseudonym_retired);
    // An organisation without a key cannot rotate.
    assert!(f.store.rotate_data_key(&org("globex")).is_err());
}

#[test]
fn a_segment_under_a_retired_version_is_reported_not_served() {
    let f = Fixture::new();
    let ap = identity("acme", "ap-1");
    f.append(&ap, 1, &["old"]);
    let acme = org("acme");
    f.store.rotate_data_key(&acme).unwrap();
    // Retired by hand, as if something had slipped past the re-encryption.
    assert!(f.store.org_keys().retire(&acme, 1).unwrap());
    assert!(!f.store.org_keys().retire(&acme, 1).unwrap());
    assert!(!f.store.org_keys().retire(&acme, 2).unwrap(), "the current version is never retired");
    f.append(&ap, 2, &["new"]);
    let out = f.read("acme", DataKind::Metadata);
    assert_eq!(hostnames(&out), ["new"]);
    assert!(out.problems.iter().any(|p| p.what.contains("data key version 1")), "{:?}", out.problems);
}

#[test]
fn a_read_loads_the_keys_again_for_a_version_it_has_not_seen() {
    let f = Fixture::new();
    let ap = identity("acme", "ap-1");
    let acme = org("acme");
    f.append(&ap, 1, &["one"]);
    let control = f.store.control();
    let single = control.org_key("acme").unwrap().unwrap();
    f.store.rotate_data_key(&acme).unwrap();
    f.append(&ap, 2, &["two"]);
    let rotated = control.org_key("acme").unwrap().unwrap();
    // This collector's keys as they were before the rotation, as if another
    // collector sharing the control plane had rotated and it had not heard.
    assert!(control.replace_org_key("acme", &rotated, &single).unwrap());
    f.store.org_keys().forget(None);
    assert_eq!(f.store.org_keys().get(&acme).unwrap().unwrap().version(), 1);
    assert!(control.replace_org_key("acme", &single, &rotated).unwrap());
    let out = f.read("acme", DataKind::Metadata);
    assert!(out.problems.is_empty(), "{:?}", out.problems);
    assert_eq!(hostnames(&out), ["one", "two"]);
}
