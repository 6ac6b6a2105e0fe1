//! The open-file limit: the real collector program, started with a low
//! soft limit, raises it to the hard limit and keeps accepting while
//! hundreds of idle connections are open; with a low hard limit it lowers
//! `max_connections` to fit and says so.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use glimpse_tests::*;
use tokio::net::TcpStream;

const COLLECTOR: &str = env!("CARGO_BIN_EXE_collector-under-test");

/// The collector program under `prlimit --nofile=SOFT:HARD`, its log in a file.
struct Limited {
    child: Child,
    log: std::path::PathBuf,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Limited {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Limited {
    async fn start(soft: u32, hard: u32) -> Limited {
        let dir = tempfile::tempdir().unwrap();
        let master = dir.path().join("master.key");
        glimpse_store::keys::MasterKey::generate_file(&master).unwrap();
        let port = free_port();
        // Idle connections stay for minutes, as slow or stuck clients would.
        let text = collector_toml(&dir.path().join("data"), &master, port)
            .replace("handshake_timeout_secs = 10", "handshake_timeout_secs = 300");
        let config = dir.path().join("collector.toml");
        std::fs::write(&config, text).unwrap();
        let log = dir.path().join("collector.log");
        let child = Command::new("prlimit")
            .arg(format!("--nofile={soft}:{hard}"))
            .arg(COLLECTOR)
            .args(["serve", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start the collector under prlimit");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        wait_until("collector listening", || std::net::TcpStream::connect(addr).is_ok()).await;
        Limited { child, log, addr, _dir: dir }
    }

    fn log_text(&self) -> String {
        read(&self.log)
    }
}

/// The log's text without terminal colour codes.
fn read(path: &Path) -> String {
    let raw = String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned();
    let mut text = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // Skip to the end of the escape sequence (`ESC [ ... m`).
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            text.push(c);
        }
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_low_soft_limit_is_raised_so_idle_connections_do_not_lock_agents_out() {
    if !require_tool("prlimit", "apt-get install util-linux") {
        return;
    }
    init_logging();
    let device = issue_device("fdorg");
    let collector = Limited::start(256, 4096).await;
    wait_until("the limit is logged", || collector.log_text().contains("open-file limit raised")).await;
    let mut idle = Vec::new();
    for _ in 0..400 {
        idle.push(TcpStream::connect(collector.addr).await.expect("idle connection"));
    }
    // With the soft limit of 256 kept, every accept would now fail with
    // "Too many open files" until the idle ones time out.
    let connection = tokio::time::timeout(DEADLINE, async {
        loop {
            if let Ok(c) = try_connect(collector.addr, &device).await {
                return c;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("an agent connects while 400 idle connections are open");
    connection.close().await;
    assert!(!collector.log_text().contains("Too many open files"), "{}", collector.log_text());
    drop(idle);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_is_lowered_below_a_low_hard_limit_and_the_log_says_so() {
    if !require_tool("prlimit", "apt-get install util-linux") {
        return;
    }
    init_logging();
    let collector = Limited::start(300, 300).await;
    wait_until("the cap is logged", || collector.log_text().contains("limits.max_connections lowered")).await;
    let log = collector.log_text();
    assert!(log.contains("max_connections=44") && log.contains("configured=20000"), "{log}");
    // Past the cap, connections are refused by the collector, not by the kernel.
    let mut idle = Vec::new();
    for _ in 0..100 {
        idle.push(TcpStream::connect(collector.addr).await.expect("connect"));
    }
    wait_until("overload refusals logged", || collector.log_text().contains("connection limit reached")).await;
    assert!(!collector.log_text().contains("Too many open files"));
}
