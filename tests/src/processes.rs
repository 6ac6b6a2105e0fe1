//! The real programs as child processes: a collector with its own config
//! and data directory on disk, started, killed with SIGKILL or stopped with
//! SIGTERM, and its store read afterwards with the offline tools' code.
//! The programs are the test binaries' (`env!("CARGO_BIN_EXE_collector-under-test")`),
//! which only an integration test can name, so callers pass them in.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use glimpse_common::clock::SystemClock;
use glimpse_common::identity::{DeviceIdentity, OrgId};
use glimpse_common::record::{DataKind, Record};

use crate::{collector_toml, free_port, wait_until, DEADLINE};

/// A child process, killed (SIGKILL) if the test ends without stopping it.
#[derive(Debug)]
pub struct Process(pub Child);

impl Process {
    /// Runs `program args... --config config`; its log goes to the test's
    /// stderr when `GLIMPSE_TEST_LOG` is set.
    pub fn start(program: &str, args: &[&str], config: &Path) -> Process {
        let log = if std::env::var_os("GLIMPSE_TEST_LOG").is_some() { Stdio::inherit() } else { Stdio::null() };
        let child = Command::new(program)
            .args(args)
            .arg("--config")
            .arg(config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start process");
        Process(child)
    }

    /// `kill -9`: no drain, no goodbye, nothing flushed.
    pub fn kill(mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    /// SIGTERM, then wait for the orderly exit (which must succeed).
    pub async fn terminate(mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.0.id().to_string()).status();
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            if let Ok(Some(status)) = self.0.try_wait() {
                assert!(status.success(), "process exited with {status}");
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "process did not exit after SIGTERM");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A collector config and data directory on disk (our PKI, a port of
/// 127.0.0.1 of its own), for the real program.
#[derive(Debug)]
pub struct CollectorFiles {
    dir: tempfile::TempDir,
    port: u16,
    program: String,
}

impl CollectorFiles {
    /// A fresh data directory and master key for `program` (the
    /// collector-under-test binary).
    pub fn new(program: &str) -> CollectorFiles {
        let dir = tempfile::tempdir().expect("tempdir");
        let master = dir.path().join("master.key");
        glimpse_store::keys::MasterKey::generate_file(&master).expect("master key");
        let port = free_port();
        let text = collector_toml(&dir.path().join("data"), &master, port);
        std::fs::write(dir.path().join("collector.toml"), text).expect("write config");
        CollectorFiles { dir, port, program: program.to_owned() }
    }

    /// A data directory for `program` sharing the master key file `master`
    /// with other collectors, its config ending with `tables` (whole TOML
    /// tables: a shared `[control]` and `[storage]`).
    pub fn with_tables(program: &str, master: &Path, tables: &str) -> CollectorFiles {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let text = format!("{}{tables}\n", collector_toml(&dir.path().join("data"), master, port));
        std::fs::write(dir.path().join("collector.toml"), text).expect("write config");
        CollectorFiles { dir, port, program: program.to_owned() }
    }

    /// Its config file.
    pub fn config(&self) -> PathBuf {
        self.dir.path().join("collector.toml")
    }

    /// Where agents connect.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Starts the collector and waits until it listens.
    pub async fn start(&self) -> Process {
        let process = Process::start(&self.program, &["serve"], &self.config());
        wait_until("collector listening", || std::net::TcpStream::connect(self.addr()).is_ok()).await;
        process
    }

    /// Every stored metadata record of `device`, by [`identify`], and how
    /// many there are (a duplicate shows as count > set size). Read with
    /// the offline tools' store, so only while the collector is stopped.
    pub fn stored(&self, device: &DeviceIdentity) -> (usize, BTreeSet<String>) {
        let mut all = self.stored_by_device(&device.org);
        let mine = all.remove(device.device.as_str()).unwrap_or_default();
        (mine.len(), mine.into_iter().collect())
    }

    /// [`identify`] of every stored metadata record of `org`, by device.
    pub fn stored_by_device(&self, org: &OrgId) -> HashMap<String, Vec<String>> {
        let config = glimpse_collector::config::CollectorConfig::load(&self.config()).expect("collector config");
        let store = glimpse_collector::service::open_store(&config, Arc::new(SystemClock)).expect("open store");
        let outcome = store.read(org, DataKind::Metadata, None, None).expect("read store");
        assert!(outcome.problems.is_empty(), "damaged store: {:?}", outcome.problems);
        let mut by_device: HashMap<String, Vec<String>> = HashMap::new();
        for record in &outcome.records {
            by_device.entry(record.device.to_string()).or_default().push(identify(&record.record));
        }
        by_device
    }
}

/// What tells one record from another: one collection sends several
/// records with the same observation time (metadata, counters, the
/// device-kind report), so the whole record is the identity.
pub fn identify(record: &Record) -> String {
    serde_json::to_string(record).expect("records serialise")
}
