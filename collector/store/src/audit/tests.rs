use std::os::unix::fs::PermissionsExt;

use super::*;

const T0: i64 = 1_700_000_000_000;

/// A data directory with an audit log and its head database.
struct Fixture {
    dir: tempfile::TempDir,
    db: Arc<dyn crate::control::ControlStore>,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(redb::Database::create(dir.path().join("glimpse.redb")).unwrap());
        let db = Arc::new(crate::control::RedbControl::open(db).unwrap());
        Fixture { dir, db }
    }

    fn open_with(&self, key_byte: u8) -> AuditLog {
        AuditLog::open(self.dir.path(), SecretKey::from_bytes([key_byte; KEY_LEN]), Arc::clone(&self.db)).unwrap()
    }

    fn open(&self) -> AuditLog {
        self.open_with(7)
    }

    /// A log with `n` entries, alternating between two organisations.
    fn with_entries(&self, n: u64) -> AuditLog {
        let log = self.open();
        for i in 1..=n {
            let (org, outcome) =
                if i % 2 == 1 { ("acme", AuditOutcome::Refused) } else { ("globex", AuditOutcome::Done) };
            let entry = log
                .append(T0 + i as i64, "admin:alice (org-admin of acme)", "consent.set", Some(org), outcome, "why")
                .unwrap();
            assert_eq!(entry.seq, i);
        }
        log
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join(AUDIT_FILE)
    }

    fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(self.path()).unwrap().lines().map(str::to_owned).collect()
    }

    fn write_lines(&self, lines: &[String]) {
        let mut text = lines.join("\n");
        text.push('\n');
        std::fs::write(self.path(), text).unwrap();
    }

    fn set_head(&self, head: &[u8]) {
        self.db.set_audit_head(head).unwrap();
    }

    fn head(&self) -> Vec<u8> {
        self.db.audit_head().unwrap().unwrap()
    }
}

/// The (seq, line, reason) of a `Tampered` error.
fn tampered(result: Result<VerifyReport, AuditError>) -> (u64, u64, String) {
    match result {
        Err(AuditError::Tampered { seq, line, reason }) => (seq, line, reason),
        other => panic!("expected Tampered, got {other:?}"),
    }
}

#[test]
fn append_then_verify() {
    let fx = Fixture::new();
    let log = fx.open();
    assert_eq!(log.verify().unwrap(), VerifyReport { entries: 0 });
    let first = log.append(T0, "collector", "capture.start", None, AuditOutcome::Done, "").unwrap();
    assert_eq!(first.seq, 1);
    assert_eq!(first.prev, "0".repeat(64));
    assert_eq!(first.at, "2023-11-14T22:13:20Z");
    assert_eq!(first.mac.len(), 64);
    let second =
        log.append(T0 + 5, "device:acme/ap-1", "support.grant", Some("acme"), AuditOutcome::Refused, "x").unwrap();
    assert_eq!(second.seq, 2);
    assert_eq!(second.prev, first.mac);
    assert_eq!(second.at, "2023-11-14T22:13:20.005Z");
    assert_eq!(log.verify().unwrap(), VerifyReport { entries: 2 });

    let lines = fx.lines();
    assert_eq!(lines.len(), 2);
    assert!(lines[1].contains(r#""outcome":"refused""#), "{}", lines[1]);
    assert!(lines[0].contains(r#""org":null"#), "{}", lines[0]);
    let mut head = 2u64.to_be_bytes().to_vec();
    head.extend_from_slice(&hex::decode(&second.mac).unwrap());
    assert_eq!(fx.head(), head);

    let mode = std::fs::metadata(fx.path()).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "{mode:o}");
}

#[test]
fn edited_middle_entry_is_detected() {
    let fx = Fixture::new();
    let log = fx.with_entries(5);
    let mut lines = fx.lines();
    assert!(lines[2].contains(r#""refused""#));
    lines[2] = lines[2].replace(r#""refused""#, r#""done""#);
    fx.write_lines(&lines);
    let (seq, line, reason) = tampered(log.verify());
    assert_eq!((seq, line), (3, 3));
    assert!(reason.contains("bad mac"), "{reason}");
}

#[test]
fn non_canonical_edit_is_detected() {
    let fx = Fixture::new();
    let log = fx.with_entries(3);
    let mut lines = fx.lines();
    lines[1] = lines[1].replacen(r#""seq":2,"#, r#""seq": 2,"#, 1);
    fx.write_lines(&lines);
    let (seq, line, reason) = tampered(log.verify());
    assert_eq!((seq, line), (2, 2));
    assert!(reason.contains("canonical"), "{reason}");
}

#[test]
fn deleted_middle_line_is_detected() {
    let fx = Fixture::new();
    let log = fx.with_entries(5);
    let mut lines = fx.lines();
    lines.remove(2);
    fx.write_lines(&lines);
    let (seq, line, reason) = tampered(log.verify());
    assert_eq!((seq, line), (3, 3));
    assert!(reason.contains("found seq 4 where seq 3 was expected"), "{reason}");
}

#[test]
fn swapped_lines_are_detected() {
    let fx = Fixture::new();
    let log = fx.with_entries(5);
    let mut lines = fx.lines();
    lines.swap(1, 3);
    fx.write_lines(&lines);
    let (seq, line, reason) = tampered(log.verify());
    assert_eq!((seq, line), (2, 2));
    assert!(reason.contains("found seq 4"), "{reason}");
}

#[test]
fn renumbered_entry_breaks_the_link() {
    // Deleting entry 3 and renumbering 4 and 5 keeps seq contiguous; the
    // MAC (and prev) still give it away.
    let fx = Fixture::new();
    let log = fx.with_entries(5);
    let mut lines = fx.lines();
    lines.remove(2);
    lines[2] = lines[2].replace(r#""seq":4,"#, r#""seq":3,"#);
    fx.write_lines(&lines);
    let (seq, line, reason) = tampered(log.verify());
    assert_eq!((seq, line), (3, 3));
    assert!(reason.contains("prev"), "{reason}");
}

#[test]
fn truncated_end_is_detected_by_the_head() {
    let fx = Fixture::new();
    let log = fx.with_entries(4);
    let mut lines = fx.lines();
    lines.pop();
    fx.write_lines(&lines);
    let (seq, line, reason) = tampered(log.verify());
    assert_eq!((seq, line), (4, 4));
    assert!(reason.contains("after seq 3") && reason.contains("head records seq 4"), "{reason}");

    std::fs::write(fx.path(), "").unwrap();
    let (seq, line, reason) = tampered(log.verify());
    assert_eq!((seq, line), (1, 1));
    assert!(reason.contains("after seq 0"), "{reason}");
}

#[test]
fn truncation_stays_visible_after_reopen_and_append() {
    let fx = Fixture::new();
    drop(fx.with_entries(4));
    let mut lines = fx.lines();
    lines.pop();
    fx.write_lines(&lines);
    let log = fx.open();
    let entry = log.append(T0, "collector", "collector.start", None, AuditOutcome::Done, "").unwrap();
    // Continues after the head, not after the shortened file.
    assert_eq!(entry.seq, 5);
    let (seq, line, reason) = tampered(log.verify());
    assert_eq!((seq, line), (4, 4));
    assert!(reason.contains("found seq 5 where seq 4 was expected"), "{reason}");
}

#[test]
fn rewritten_head_entry_is_detected() {
    let fx = Fixture::new();
    let log = fx.with_entries(3);
    let mut head = fx.head();
    head[8] ^= 1;
    fx.set_head(&head);
    let (seq, line, reason) = tampered(log.verify());
    assert_eq!((seq, line), (3, 3));
    assert!(reason.contains("head"), "{reason}");

    fx.set_head(&head[..10]);
    let (seq, line, reason) = tampered(log.verify());
    assert_eq!((seq, line), (0, 0));
    assert!(reason.contains("head record"), "{reason}");
}

#[test]
fn entries_past_the_head_are_accepted() {
    let fx = Fixture::new();
    let log = fx.with_entries(2);
    let old_head = fx.head();
    log.append(T0 + 10, "collector", "capture.stop", Some("acme"), AuditOutcome::Done, "").unwrap();
    log.append(T0 + 11, "collector", "capture.stop", Some("acme"), AuditOutcome::Done, "").unwrap();
    // As if the process died after writing entries 3 and 4 but before
    // recording them in the head.
    fx.set_head(&old_head);
    assert_eq!(log.verify().unwrap(), VerifyReport { entries: 4 });
    drop(log);
    let log = fx.open();
    assert_eq!(log.append(T0 + 12, "collector", "x", None, AuditOutcome::Done, "").unwrap().seq, 5);
    assert_eq!(log.verify().unwrap(), VerifyReport { entries: 5 });
}

#[test]
fn entries_filter_by_org_and_page() {
    let fx = Fixture::new();
    let log = fx.with_entries(7);
    let seqs = |v: Vec<AuditEntry>| v.into_iter().map(|e| e.seq).collect::<Vec<_>>();
    assert_eq!(seqs(log.entries(None, 0, 100).unwrap()), [1, 2, 3, 4, 5, 6, 7]);
    assert_eq!(seqs(log.entries(None, 2, 3).unwrap()), [3, 4, 5]);
    assert_eq!(seqs(log.entries(None, 5, 3).unwrap()), [6, 7]);
    assert_eq!(seqs(log.entries(None, 7, 3).unwrap()), Vec::<u64>::new());
    assert_eq!(seqs(log.entries(None, 0, 0).unwrap()), Vec::<u64>::new());
    assert_eq!(seqs(log.entries(Some("acme"), 0, 2).unwrap()), [1, 3]);
    assert_eq!(seqs(log.entries(Some("acme"), 3, 2).unwrap()), [5, 7]);
    assert_eq!(seqs(log.entries(Some("globex"), 0, 10).unwrap()), [2, 4, 6]);
    assert_eq!(seqs(log.entries(Some("initech"), 0, 10).unwrap()), Vec::<u64>::new());
    let all = log.entries(Some("acme"), 0, 1).unwrap();
    assert_eq!(all[0].outcome, AuditOutcome::Refused);
    assert_eq!(all[0].actor, "admin:alice (org-admin of acme)");
}

#[test]
fn reopen_continues_the_chain() {
    let fx = Fixture::new();
    let last = {
        let log = fx.with_entries(3);
        log.entries(None, 2, 1).unwrap().remove(0)
    };
    let log = fx.open();
    let next = log.append(T0 + 100, "collector", "collector.start", None, AuditOutcome::Done, "").unwrap();
    assert_eq!(next.seq, 4);
    assert_eq!(next.prev, last.mac);
    assert_eq!(log.verify().unwrap(), VerifyReport { entries: 4 });
}

#[test]
fn garbage_line_is_an_error_not_a_panic() {
    let fx = Fixture::new();
    drop(fx.with_entries(3));
    let mut lines = fx.lines();
    lines.insert(1, "{\"seq\": this is not json".into());
    fx.write_lines(&lines);
    let log = fx.open();
    let (seq, line, reason) = tampered(log.verify());
    assert_eq!((seq, line), (2, 2));
    assert!(reason.contains("not an audit entry"), "{reason}");
    assert!(matches!(log.entries(None, 0, 10), Err(AuditError::Tampered { line: 2, .. })));
    // Appending still works, chaining from the last parsable entry.
    assert_eq!(log.append(T0, "collector", "x", None, AuditOutcome::Done, "").unwrap().seq, 4);

    // Other kinds of junk after a valid first entry.
    for junk in ["", "null", "[]", "{}", "\u{0}\u{ff}", r#"{"seq":18446744073709551616}"#, "\r"] {
        let fx = Fixture::new();
        let log = fx.with_entries(1);
        let mut lines = fx.lines();
        lines.push(junk.into());
        fx.write_lines(&lines);
        let (seq, line, _) = tampered(log.verify());
        assert_eq!((seq, line), (2, 2), "{junk:?}");
    }
}

#[test]
fn overlong_line_is_an_error_not_a_panic() {
    let fx = Fixture::new();
    drop(fx.with_entries(2));
    let mut lines = fx.lines();
    lines.insert(1, "x".repeat(100 * 1024));
    fx.write_lines(&lines);
    let log = fx.open();
    let (seq, line, reason) = tampered(log.verify());
    assert_eq!((seq, line), (2, 2));
    assert!(reason.contains("longer than 65536 bytes"), "{reason}");
    assert!(matches!(log.entries(None, 0, 10), Err(AuditError::Tampered { line: 2, .. })));
    assert_eq!(log.entries(None, 0, 1).unwrap().len(), 1);
    assert_eq!(log.append(T0, "collector", "x", None, AuditOutcome::Done, "").unwrap().seq, 3);
}

#[test]
fn torn_last_line_is_cut_on_open() {
    let fx = Fixture::new();
    drop(fx.with_entries(2));
    let mut text = std::fs::read(fx.path()).unwrap();
    let good_len = text.len();
    text.extend_from_slice(br#"{"seq":3,"at_ms":17000"#);
    std::fs::write(fx.path(), &text).unwrap();
    let log = fx.open();
    assert_eq!(std::fs::metadata(fx.path()).unwrap().len(), good_len as u64);
    assert_eq!(log.append(T0, "collector", "x", None, AuditOutcome::Done, "").unwrap().seq, 3);
    assert_eq!(log.verify().unwrap(), VerifyReport { entries: 3 });
}

#[test]
fn valid_last_line_without_newline_is_kept() {
    let fx = Fixture::new();
    drop(fx.with_entries(2));
    let mut text = std::fs::read(fx.path()).unwrap();
    assert_eq!(text.pop(), Some(b'\n'));
    std::fs::write(fx.path(), &text).unwrap();
    let log = fx.open();
    assert_eq!(log.verify().unwrap(), VerifyReport { entries: 2 });
    assert_eq!(log.append(T0, "collector", "x", None, AuditOutcome::Done, "").unwrap().seq, 3);
    assert_eq!(log.verify().unwrap(), VerifyReport { entries: 3 });
    assert_eq!(fx.lines().len(), 3);
}

#[test]
fn different_key_fails_verification() {
    let fx = Fixture::new();
    drop(fx.with_entries(3));
    let log = fx.open_with(8);
    let (seq, line, reason) = tampered(log.verify());
    assert_eq!((seq, line), (1, 1));
    assert!(reason.contains("bad mac"), "{reason}");
}

#[test]
fn derived_key_is_stable_and_distinct() {
    let master = SecretKey::from_bytes([1; KEY_LEN]);
    let a = derive_audit_key(&master);
    assert_eq!(a, derive_audit_key(&master));
    assert_ne!(a, master);
    assert_ne!(a, derive_audit_key(&SecretKey::from_bytes([2; KEY_LEN])));
    let expected = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &[1; KEY_LEN]), b"glimpse-audit-key-v1");
    assert_eq!(a.expose().as_slice(), expected.as_ref());
}

#[test]
fn long_fields_are_cut_on_char_boundaries() {
    let fx = Fixture::new();
    let log = fx.open();
    let detail = "é".repeat(2000);
    let actor = "ü".repeat(300);
    let entry = log.append(T0, &actor, "a", Some("acme"), AuditOutcome::Done, &detail).unwrap();
    assert_eq!(entry.detail.chars().count(), MAX_DETAIL_CHARS);
    assert_eq!(entry.actor.chars().count(), MAX_NAME_CHARS);
    assert_eq!(log.verify().unwrap(), VerifyReport { entries: 1 });
    assert_eq!(truncate_chars("abc", 5), "abc");
    assert_eq!(truncate_chars("aé", 1), "a");
}

#[test]
fn hostile_strings_round_trip() {
    let fx = Fixture::new();
    let log = fx.open();
    let nasty = "line\nbreak \"quote\" \\ \u{0} \u{2028} {\"seq\":99}";
    log.append(i64::MIN, nasty, nasty, Some(nasty), AuditOutcome::Refused, nasty).unwrap();
    log.append(i64::MAX, "collector", "x", None, AuditOutcome::Done, "").unwrap();
    assert_eq!(fx.lines().len(), 2);
    assert_eq!(log.verify().unwrap(), VerifyReport { entries: 2 });
    let entries = log.entries(Some(nasty), 0, 10).unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].detail, nasty);
    assert!(entries[0].at.starts_with('@'), "{}", entries[0].at);
}

#[test]
fn concurrent_appends_keep_the_chain() {
    let fx = Fixture::new();
    let log = Arc::new(fx.open());
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for i in 0..10 {
                    log.append(T0 + i, &format!("thread:{t}"), "x", None, AuditOutcome::Done, "").unwrap();
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    assert_eq!(log.verify().unwrap(), VerifyReport { entries: 40 });
}

#[test]
fn debug_does_not_print_the_key() {
    let fx = Fixture::new();
    let log = fx.open_with(0xab);
    let text = format!("{log:?}");
    assert!(text.contains("audit.log") && !text.contains("ab, ab") && !text.contains("171"), "{text}");
}

mod arbitrary_files {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

        /// Whatever is in the file, opening, verifying, listing and
        /// appending never panic, and a complete line not written by us
        /// never verifies. (An unterminated last line is a torn write and
        /// is dropped on open, by design; the head catches a real loss.)
        #[test]
        fn any_file_content_is_handled(
            content in prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..2048),
                proptest::collection::vec(prop_oneof![Just(b'\n'), Just(b'{'), Just(b'"'), any::<u8>()], 0..2048),
            ]
        ) {
            let f = Fixture::new();
            std::fs::write(f.dir.path().join(AUDIT_FILE), &content).unwrap();
            let log = f.open();
            let verified = log.verify();
            let complete_lines = content.split(|b| *b == b'\n').rev().skip(1);
            if complete_lines.into_iter().any(|line| line.iter().any(|b| !b.is_ascii_whitespace())) {
                prop_assert!(verified.is_err(), "foreign content verified: {verified:?}");
            }
            let _ = log.entries(None, 0, 10);
            let _ = log.append(T0, "admin:x (operator)", "org.status", None, AuditOutcome::Done, "");
            let _ = log.verify();
        }
    }
}

#[test]
fn search_filters_and_returns_the_newest_first_within_its_limit() {
    let fx = Fixture::new();
    let log = fx.with_entries(9);
    log.append(
        T0 + 20,
        "console:bob (support of acme, session 1)",
        "support.grant",
        Some("acme"),
        AuditOutcome::Done,
        "",
    )
    .unwrap();
    log.append(T0 + 21, "admin:alice (org-admin of acme)", "supportive.thing", Some("acme"), AuditOutcome::Done, "")
        .unwrap();
    let seqs = |search: &AuditSearch, limit| -> Vec<u64> {
        log.search(search, limit).unwrap().iter().map(|e| e.seq).collect()
    };
    let acme = |more: AuditSearch| AuditSearch { org: Some("acme".into()), ..more };
    assert_eq!(seqs(&acme(AuditSearch::default()), 100), vec![1, 3, 5, 7, 9, 10, 11]);
    // Newest first, and only as many as asked, from anywhere in the log.
    assert_eq!(seqs(&acme(AuditSearch { newest_first: true, ..Default::default() }), 2), vec![11, 10]);
    assert_eq!(
        seqs(&acme(AuditSearch { newest_first: true, before_seq: Some(10), ..Default::default() }), 2),
        vec![9, 7]
    );
    // An action matches itself and its dotted children, not a longer word.
    assert_eq!(seqs(&AuditSearch { action: Some("support".into()), ..Default::default() }, 100), vec![10]);
    assert_eq!(seqs(&AuditSearch { action: Some("consent.set".into()), ..Default::default() }, 3), vec![1, 2, 3]);
    assert_eq!(seqs(&AuditSearch { actor_contains: Some("SUPPORT OF".into()), ..Default::default() }, 100), vec![10]);
    assert_eq!(
        seqs(&AuditSearch { outcome: Some(AuditOutcome::Done), to_ms: Some(T0 + 6), ..Default::default() }, 100),
        vec![2, 4]
    );
    assert_eq!(seqs(&AuditSearch { from_ms: Some(T0 + 9), after_seq: 9, ..Default::default() }, 100), vec![10, 11]);
    assert!(seqs(&AuditSearch::default(), 0).is_empty());
}

#[test]
fn verify_since_checks_what_was_appended_and_the_last_entry_verified() {
    let f = Fixture::new();
    let log = f.with_entries(2);
    let first = log.verify_since(None).unwrap();
    assert_eq!(first.entries, 2);
    for i in 0..3 {
        log.append(T0 + 10 + i, "collector", "alert.device-silent", Some("acme"), AuditOutcome::Done, "x").unwrap();
    }
    let second = log.verify_since(Some(&first)).unwrap();
    assert_eq!(second.entries, 5);
    assert_eq!(log.verify_since(Some(&second)).unwrap(), second, "nothing new: the same point");

    // An edit before the last entry verified is for the whole check only.
    let mut lines = f.lines();
    lines[0] = lines[0].replace("\"why\"", "\"WHY\"");
    f.write_lines(&lines);
    assert!(log.verify_since(Some(&second)).is_ok());
    let (seq, line, _) = tampered(log.verify());
    assert_eq!((seq, line), (1, 1));

    // An edit after it, and of it, are found by the next incremental check.
    let fresh = Fixture::new();
    let log = fresh.with_entries(3);
    let point = log.verify_since(None).unwrap();
    log.append(T0 + 10, "collector", "alert.x", None, AuditOutcome::Done, "new").unwrap();
    let mut lines = fresh.lines();
    lines[3] = lines[3].replace("\"new\"", "\"old\"");
    fresh.write_lines(&lines);
    let (seq, line, reason) = tampered(log.verify_since(Some(&point)).map(|v| VerifyReport { entries: v.entries }));
    assert_eq!((seq, line), (4, 4), "{reason}");
    let mut lines = fresh.lines();
    lines[2] = lines[2].replace("\"why\"", "\"WHY\"");
    fresh.write_lines(&lines);
    let (_, line, reason) = tampered(log.verify_since(Some(&point)).map(|v| VerifyReport { entries: v.entries }));
    assert_eq!(line, 3);
    assert!(reason.contains("changed"), "{reason}");
    // Cut off before it.
    fresh.write_lines(&fresh.lines()[..1]);
    let (_, _, reason) = tampered(log.verify_since(Some(&point)).map(|v| VerifyReport { entries: v.entries }));
    assert!(reason.contains("truncated") || reason.contains("changed"), "{reason}");
}

/// `n` drafts of varied content (some long enough to be cut).
fn drafts(n: usize) -> Vec<Drafted> {
    (0..n)
        .map(|i| {
            let org = [Some("acme"), Some("globex"), None][i % 3];
            let outcome = if i % 5 == 0 { AuditOutcome::Refused } else { AuditOutcome::Done };
            (format!("device.register.{i}"), org, outcome, "ü".repeat(i % 1500))
        })
        .collect()
}

type Drafted = (String, Option<&'static str>, AuditOutcome, String);

fn as_drafts(d: &[Drafted]) -> Vec<AuditDraft<'_>> {
    d.iter()
        .map(|(action, org, outcome, detail)| AuditDraft {
            actor: "collector",
            action,
            org: *org,
            outcome: *outcome,
            detail,
        })
        .collect()
}

#[test]
fn a_batch_appends_the_very_lines_single_appends_would_and_one_head() {
    let n = APPEND_BATCH * 2 + 7;
    let d = drafts(n);
    let one_by_one = Fixture::new();
    let log = one_by_one.with_entries(3);
    for (action, org, outcome, detail) in &d {
        log.append(T0, "collector", action, *org, *outcome, detail).unwrap();
    }
    let batched = Fixture::new();
    let log = batched.with_entries(3);
    assert_eq!(log.append_all(T0, &as_drafts(&d)).unwrap(), n);
    assert_eq!(log.append_all(T0, &[]).unwrap(), 0);
    assert_eq!(batched.lines(), one_by_one.lines(), "the same entries, chained the same");
    assert_eq!(batched.head(), one_by_one.head());
    assert_eq!(log.verify().unwrap().entries, 3 + n as u64);
    assert_eq!(log.appended(), 3 + n as u64);
    // The chain goes on from the batch, here and after a reopen.
    assert_eq!(log.append(T0, "collector", "x", None, AuditOutcome::Done, "").unwrap().seq, 4 + n as u64);
    drop(log);
    assert_eq!(batched.open().append(T0, "collector", "y", None, AuditOutcome::Done, "").unwrap().seq, 5 + n as u64);
}

#[test]
fn a_batch_the_chain_cannot_take_leaves_nothing_behind() {
    let fx = Fixture::new();
    let log = fx.with_entries(2);
    let before = fx.lines();
    // Room for two more entries (the last sequence number is never
    // used): a batch of three must not write two.
    let head = fx.head();
    let mut row = head.clone();
    row[..8].copy_from_slice(&(u64::MAX - 3).to_be_bytes());
    fx.set_head(&row);
    drop(log);
    let log = fx.open();
    let d = drafts(3);
    assert!(matches!(log.append_all(T0, &as_drafts(&d)), Err(AuditError::SeqExhausted)));
    assert_eq!(fx.lines(), before, "nothing of the batch was written");
    assert_eq!(fx.head(), row, "nor the head moved");
    // What fits still goes in.
    assert_eq!(log.append_all(T0, &as_drafts(&d[..2])).unwrap(), 2);
    assert_eq!(fx.lines().len(), before.len() + 2);
}

#[test]
fn a_read_only_log_refuses_a_batch() {
    let fx = Fixture::new();
    drop(fx.with_entries(1));
    let log = AuditLog::open_read_only(fx.dir.path(), SecretKey::from_bytes([7; KEY_LEN]), Arc::clone(&fx.db));
    let d = drafts(2);
    assert!(matches!(log.append_all(T0, &as_drafts(&d)), Err(AuditError::ReadOnly { .. })));
    assert_eq!(fx.lines().len(), 1);
}
