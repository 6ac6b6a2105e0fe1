//! The collector's own files under damage and misuse, with the real
//! program: a damaged key store is named and never panics, and `recover`
//! brings every organisation's data back; a deleted segment or one cut at
//! a block boundary is reported by `verify` and `export`; `export` works
//! while `serve` runs and on a read-only copy, changing no byte; retention
//! trusts neither a wrong clock nor a renamed folder; each class of
//! failure has its exit code.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use glimpse_common::clock::{format_day, utc_day, Clock, SystemClock};
use glimpse_tests::*;

const COLLECTOR: &str = env!("CARGO_BIN_EXE_collector-under-test");

/// Runs the collector program to completion.
fn run(args: &[&str], config: &Path, clock_offset_days: i64) -> Output {
    Command::new(COLLECTOR)
        .args(args)
        .arg("--config")
        .arg(config)
        .env("GLIMPSE_TEST_CLOCK_OFFSET_DAYS", clock_offset_days.to_string())
        .env("RUST_LOG", "warn")
        .output()
        .expect("run collector program")
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

/// Records in an export's output (JSON lines).
fn exported(out: &Output) -> usize {
    String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.starts_with('{')).count()
}

/// A stopped collector with a few batches of one device stored.
async fn stopped_collector_with_data(org: &str) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let device = issue_device(org);
    let tc = TestCollector::start().await;
    let agent = start_agent(tc.addr(), &device);
    wait_for_status(&agent, "records stored", |s| s.acked_seq >= 4).await;
    agent.shutdown().await;
    let data = tc.config.data_dir.clone();
    let (dir, config) = tc.stop_keeping_files().await;
    (dir, config, data)
}

fn segments(data: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![data.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "seg") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// Every file under `dir` with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.insert(path.clone(), std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

/// Where each block of a segment file ends.
fn block_ends(bytes: &[u8]) -> Vec<usize> {
    let header = 26;
    let org_len = usize::from(bytes[header]);
    let kind_len = usize::from(bytes[header + 1 + org_len]);
    // Format 3 headers end with the u32 data key version.
    let key_version = if u16::from_be_bytes([bytes[8], bytes[9]]) >= 3 { 4 } else { 0 };
    let mut pos = header + 2 + org_len + kind_len + key_version;
    let mut ends = Vec::new();
    while pos + 12 <= bytes.len() {
        let len = u32::from_be_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
        pos += 12 + len;
        if pos > bytes.len() {
            break;
        }
        ends.push(pos);
    }
    ends
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_key_store_is_named_never_panics_and_recover_restores_every_record() {
    init_logging();
    let (_dir, config, data) = stopped_collector_with_data("recoverorg").await;
    let before = run(&["export", "--org", "recoverorg"], &config, 0);
    assert_eq!(code(&before), 0, "{}", text(&before));
    let records = exported(&before);
    assert!(records > 0);

    let db = data.join("glimpse.redb");
    let good = std::fs::read(&db).unwrap();
    assert!(data.join("glimpse.redb.backup").exists(), "a verified copy is kept");
    let mut refused = 0;
    let offsets: Vec<usize> = (0..48).map(|i| i * good.len() / 48 + 7).collect();
    for (n, at) in offsets.iter().enumerate() {
        let mut bad = good.clone();
        bad[*at] ^= 0x5a;
        std::fs::write(&db, &bad).unwrap();
        let command: &[&str] = if n % 2 == 0 { &["export", "--org", "recoverorg"] } else { &["sweep"] };
        let out = run(command, &config, 0);
        assert_ne!(code(&out), 101, "panic on a flip at {at}: {}", text(&out));
        assert!(!text(&out).contains("panicked"), "flip at {at}: {}", text(&out));
        if code(&out) != 0 {
            refused += 1;
            assert!(text(&out).contains("glimpse.redb"), "the file is named (flip at {at}): {}", text(&out));
        }
        std::fs::write(&db, &good).unwrap();
    }
    assert!(refused > 0, "some flips must be detected");

    // Truncated: every command refuses, naming the file and the way out.
    std::fs::write(&db, &good[..good.len() / 3]).unwrap();
    for command in [&["export", "--org", "recoverorg"][..], &["sweep"], &["serve"], &["verify"]] {
        let out = run(command, &config, 0);
        assert_eq!(code(&out), 65, "{command:?}: {}", text(&out));
        let message = text(&out);
        assert!(message.contains("glimpse.redb") && message.contains("damaged"), "{message}");
        assert!(message.contains("recover"), "says what to do: {message}");
    }

    let recovered = run(&["recover"], &config, 0);
    assert_eq!(code(&recovered), 0, "{}", text(&recovered));
    assert!(data.join("glimpse.redb.damaged.1").exists(), "the damaged file is kept aside");
    let after = run(&["export", "--org", "recoverorg"], &config, 0);
    assert_eq!(code(&after), 0, "{}", text(&after));
    assert_eq!(exported(&after), records, "every record is readable again");
    let again = run(&["recover"], &config, 0);
    assert_eq!(code(&again), 0);
    assert!(text(&again).contains("intact"), "{}", text(&again));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tail_cut_at_a_block_boundary_and_a_deleted_segment_are_reported() {
    init_logging();
    let (_dir, config, data) = stopped_collector_with_data("catalogorg").await;
    let clean = run(&["verify"], &config, 0);
    assert_eq!(code(&clean), 0, "{}", text(&clean));

    let segment = segments(&data).pop().expect("a segment");
    let bytes = std::fs::read(&segment).unwrap();
    let ends = block_ends(&bytes);
    assert!(ends.len() >= 2, "several blocks: {ends:?}");
    // Exactly at a block boundary: the file is a valid, shorter segment.
    std::fs::write(&segment, &bytes[..ends[0]]).unwrap();
    let verify = run(&["verify"], &config, 0);
    assert_eq!(code(&verify), 65, "{}", text(&verify));
    let report = text(&verify);
    assert!(report.contains("missing tail") && report.contains(segment.to_str().unwrap()), "{report}");
    assert!(report.contains("batches"), "names the missing sequence range: {report}");
    let export = run(&["export", "--org", "catalogorg"], &config, 0);
    assert_eq!(code(&export), 65, "a partial export fails: {}", text(&export));
    assert!(text(&export).contains("partial"), "{}", text(&export));

    std::fs::remove_file(&segment).unwrap();
    let verify = run(&["verify"], &config, 0);
    assert_eq!(code(&verify), 65, "{}", text(&verify));
    let report = text(&verify);
    assert!(report.contains("missing segment") && report.contains(segment.to_str().unwrap()), "{report}");
    let export = run(&["export", "--org", "catalogorg"], &config, 0);
    assert_eq!(code(&export), 65, "{}", text(&export));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_works_while_serve_runs_and_on_a_read_only_copy_without_changing_a_byte() {
    init_logging();
    let device = issue_device("readonlyorg");
    let tc = TestCollector::start().await;
    let agent = start_agent(tc.addr(), &device);
    wait_for_status(&agent, "records stored", |s| s.acked_seq >= 3).await;
    agent.shutdown().await;

    // The running collector holds the key store: export reads its copy.
    let live = run(&["export", "--org", "readonlyorg"], &tc.config_path(), 0);
    assert_eq!(code(&live), 0, "{}", text(&live));
    assert!(exported(&live) > 0);
    assert!(text(&live).contains("verified copy"), "{}", text(&live));
    assert!(!text(&live).contains("already open"), "{}", text(&live));

    let data = tc.config.data_dir.clone();
    let (_dir, config) = tc.stop_keeping_files().await;
    // A torn tail on a segment of this organisation, as a crash leaves.
    let segment = segments(&data).pop().unwrap();
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes.extend_from_slice(&[0x00, 0x00, 0x01]);
    std::fs::write(&segment, &bytes).unwrap();

    let before = snapshot(&data);
    let chmod = |mode: &str| {
        assert!(Command::new("chmod").args(["-R", mode]).arg(&data).status().unwrap().success());
    };
    chmod("a-w");
    let other = run(&["export", "--org", "someotherorg"], &config, 0);
    let ours = run(&["export", "--org", "readonlyorg"], &config, 0);
    let verify = run(&["verify"], &config, 0);
    chmod("u+w");
    assert_eq!(code(&other), 0, "{}", text(&other));
    assert_eq!(code(&ours), 0, "an unacknowledged torn tail is no loss: {}", text(&ours));
    assert!(exported(&ours) > 0);
    assert_eq!(code(&verify), 0, "{}", text(&verify));
    let after = snapshot(&data);
    assert_eq!(before.keys().collect::<Vec<_>>(), after.keys().collect::<Vec<_>>(), "no file created or removed");
    for (path, bytes) in &before {
        assert!(after[path] == *bytes, "{} changed", path.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_trusts_neither_a_clock_ahead_nor_a_renamed_folder() {
    init_logging();
    let (_dir, config, data) = stopped_collector_with_data("clockorg").await;
    let count = || segments(&data).len();
    let stored = count();
    assert!(stored > 0);

    // 61 days ahead: everything would look expired. Refused, nothing deleted.
    let ahead = run(&["sweep"], &config, 61);
    assert_eq!(code(&ahead), 75, "{}", text(&ahead));
    assert!(text(&ahead).contains("jumped forward") && text(&ahead).contains("--accept-clock"), "{}", text(&ahead));
    assert_eq!(count(), stored);

    // The same clock at `serve`'s start-up sweep: the collector starts,
    // says why it did not sweep, and deletes nothing.
    {
        use std::io::BufRead;
        let mut child = Command::new(COLLECTOR)
            .args(["serve", "--config"])
            .arg(&config)
            .env("GLIMPSE_TEST_CLOCK_OFFSET_DAYS", "61")
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut seen = Vec::new();
        let found = loop {
            match rx.recv_timeout(DEADLINE) {
                Ok(line) if line.contains("start-up retention sweep skipped") => break true,
                Ok(line) => seen.push(line),
                Err(_) => break false,
            }
        };
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        let status = child.wait().unwrap();
        assert!(found, "serve says why it did not sweep: {seen:?}");
        assert!(status.success(), "{status}");
        assert_eq!(count(), stored, "serve's start-up sweep deleted nothing");
    }

    // Behind the stored data: refused too, and such records are not served.
    let behind = run(&["sweep"], &config, -2);
    assert_eq!(code(&behind), 75, "{}", text(&behind));
    assert_eq!(count(), stored);
    let future = run(&["export", "--org", "clockorg"], &config, -2);
    assert_eq!(code(&future), 65, "{}", text(&future));
    assert_eq!(exported(&future), 0, "records dated after the clock are not served");
    assert!(text(&future).contains("dated after"), "{}", text(&future));

    // A folder renamed to an old day: its headers say today, so it stays.
    let today = format_day(utc_day(SystemClock.now_millis()));
    let day_dir = segments(&data)[0].parent().unwrap().to_path_buf();
    assert_eq!(day_dir.file_name().unwrap().to_str().unwrap(), today);
    let renamed = day_dir.with_file_name("2020-01-01");
    std::fs::rename(&day_dir, &renamed).unwrap();
    let sweep = run(&["sweep"], &config, 0);
    assert_eq!(code(&sweep), 0, "{}", text(&sweep));
    assert!(renamed.exists(), "a folder whose headers say today is not swept");
    assert!(text(&sweep).contains("header says") && text(&sweep).contains("2020-01-01"), "{}", text(&sweep));
    std::fs::rename(&renamed, &day_dir).unwrap();

    // The operator confirms the clock: now the sweep goes ahead.
    let confirmed = run(&["sweep", "--accept-clock"], &config, 61);
    assert_eq!(code(&confirmed), 0, "{}", text(&confirmed));
    assert_eq!(count(), 0, "expired by the confirmed clock");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_class_of_failure_has_its_exit_code() {
    use std::os::unix::fs::PermissionsExt;
    init_logging();
    let (dir, config, _data) = stopped_collector_with_data("exitorg").await;
    let usage = run(&["export", "--org", "exitorg", "--no-such-option"], &config, 0);
    assert_eq!(code(&usage), 64, "{}", text(&usage));
    let bad_time = run(&["export", "--org", "exitorg", "--since", "yesterday"], &config, 0);
    assert_eq!(code(&bad_time), 64, "{}", text(&bad_time));
    let help = Command::new(COLLECTOR).arg("--help").output().unwrap();
    assert_eq!(code(&help), 0);
    assert!(text(&help).contains("65") && text(&help).contains("75") && text(&help).contains("78"), "{}", text(&help));

    let missing = run(&["export", "--org", "exitorg"], &dir.path().join("nowhere.toml"), 0);
    assert_eq!(code(&missing), 78, "{}", text(&missing));

    let key = dir.path().join("master.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let loose = run(&["export", "--org", "exitorg"], &config, 0);
    assert_eq!(code(&loose), 77, "{}", text(&loose));
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();

    // A collector that is not there.
    let admin = {
        let tc = TestCollector::start().await;
        let admin = issue_admin(&tc, glimpse_common::identity::AdminRole::Operator, None);
        tc.collector.shutdown().await;
        admin
    };
    let port = free_port();
    let out = Command::new(COLLECTOR)
        .args(["devices", "--org", "exitorg", "--admin", &format!("127.0.0.1:{port}")])
        .arg("--ca")
        .arg(&admin.ca)
        .arg("--cert")
        .arg(&admin.cert)
        .arg("--key")
        .arg(&admin.key)
        .output()
        .unwrap();
    assert_eq!(code(&out), 69, "{}", text(&out));
}
