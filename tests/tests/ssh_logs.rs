//! What the collector's log says about SSH misuse, read from the log lines
//! themselves: a refused `env` request is one line naming the variable and
//! never its value, an unregistered key is a warning, and a flood of refused
//! connections gives a few lines and a count rather than a line each.
//!
//! Its own test binary: the log of this process is captured into a buffer
//! (a global subscriber), so no other test may write into it.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use glimpse_collector::ingest::RejectReason;
use glimpse_common::clock::SystemClock;
use glimpse_common::identity::DeviceKind;
use glimpse_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ORG: &str = "sshlogs";

/// Every line this process has logged, at INFO and above.
fn log() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let sink = buffer.clone();
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
            .with_ansi(false)
            .with_writer(move || Sink(sink.clone()))
            .init();
        buffer
    })
}

struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn lines() -> Vec<String> {
    String::from_utf8_lossy(&log().lock().unwrap()).lines().map(str::to_owned).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_misuse_is_logged_once_by_name_and_floods_are_summarised() {
    if !require_tool("ssh", "apt-get install openssh-client") {
        return;
    }
    log();
    let switch = issue_ssh_device(ORG, DeviceKind::Switch);
    let tc = TestCollector::start_with_ssh_settings(0, Arc::new(SystemClock), "auth_timeout_secs = 1").await;
    let addr = tc.ssh_addr();
    let dir = tempfile::tempdir().unwrap();
    let registered = private_copy(dir.path(), switch.ssh_key.as_ref().unwrap());
    let user = format!("{}/{}", switch.identity.org, switch.identity.device);

    // Two env requests with secret-looking values, then a command (refused).
    let out = tokio::task::block_in_place(|| {
        let env = ["-o", "SetEnv=GLIMPSE_TOKEN=hunter2 GLIMPSE_OTHER=hunter3"];
        openssh(addr, &registered, &user, &env, &["true"], b"")
    });
    assert_ne!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    wait_until("the env request is logged", || lines().iter().any(|l| l.contains("SSH env request refused"))).await;
    let env_lines: Vec<String> = lines().into_iter().filter(|l| l.contains("SSH env request")).collect();
    assert_eq!(env_lines.len(), 1, "one line a connection: {env_lines:?}");
    assert!(env_lines[0].contains("GLIMPSE_TOKEN"), "names the variable: {env_lines:?}");
    assert!(lines().iter().all(|l| !l.contains("hunter")), "a value is never logged");

    // An unregistered key for a registered device: a warning.
    let stranger = glimpse_certs::ssh::generate_ed25519("stranger").unwrap();
    std::fs::write(dir.path().join("stranger"), stranger.private_openssh.as_bytes()).unwrap();
    let stranger = private_copy(dir.path(), &dir.path().join("stranger"));
    let out = tokio::task::block_in_place(|| openssh(addr, &stranger, &user, &[], &["true"], b""));
    assert_eq!(out.status.code(), Some(255), "{}", String::from_utf8_lossy(&out.stderr));
    wait_until("the unregistered key is logged", || {
        lines().iter().any(|l| l.contains(" WARN ") && l.contains("SSH key refused"))
    })
    .await;

    // 100 connections that send a version line and nothing more: each is
    // closed at the 1 s deadline and refused, yet the log gains a few lines.
    let metrics = tc.collector.metrics().clone();
    let before_refused = metrics.rejections(RejectReason::Overload);
    let before_lines = lines().len();
    let mut held = Vec::new();
    for _ in 0..100 {
        let mut tcp = TcpStream::connect(tc.ssh_addr()).await.unwrap();
        tcp.write_all(b"SSH-2.0-x\r\n").await.unwrap();
        held.push(tcp);
    }
    for mut tcp in held {
        // Until the collector hangs up (its version line comes first).
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(DEADLINE, tcp.read_to_end(&mut sink)).await.expect("closed at the deadline");
    }
    wait_until("100 refusals counted", || metrics.rejections(RejectReason::Overload) >= before_refused + 100).await;
    let flood: Vec<String> = lines()[before_lines..].iter().filter(|l| l.contains(" WARN ")).cloned().collect();
    assert!(flood.len() <= 10, "a few lines for 100 refusals from one address, not one each: {flood:#?}");
    assert!(metrics.refusal_lines_suppressed() >= 90, "the rest are counted: {}", metrics.refusal_lines_suppressed());
}
