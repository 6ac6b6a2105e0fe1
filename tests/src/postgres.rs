//! A throwaway PostgreSQL cluster for the tests: `initdb` and `pg_ctl`
//! in a temporary directory, listening on 127.0.0.1 and a Unix socket in
//! that directory, run as the `postgres` user when the tests run as root
//! (PostgreSQL refuses to run as root).
//!
//! ```no_run
//! let Some(pg) = glimpse_tests::postgres::Postgres::start() else { return };
//! let url = pg.url();
//! ```

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use tempfile::TempDir;

/// How to get PostgreSQL, for the skip line.
const INSTALL: &str = "apt-get install postgresql";

/// One running cluster, stopped (immediately) and deleted on drop.
#[derive(Debug)]
pub struct Postgres {
    dir: TempDir,
    bin: PathBuf,
    port: u16,
    /// `Some("postgres")` when the tests run as root.
    run_as: Option<String>,
    running: bool,
}

/// The directory with `initdb` and `pg_ctl`: Debian's newest
/// `/usr/lib/postgresql/<version>/bin`, or `PATH`'s.
fn find_bin() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin): &(u32, PathBuf)| bin.join("initdb").is_file() && bin.join("pg_ctl").is_file())
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).find(|dir| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file())
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

impl Postgres {
    /// Starts a fresh cluster with a database `glimpse` owned by the
    /// superuser `glimpse` (trust authentication on 127.0.0.1 and the
    /// socket: the tests' own throwaway server). `None` (after one skip
    /// line) when PostgreSQL is not installed; under `CI` that panics.
    pub fn start() -> Option<Postgres> {
        let Some(bin) = find_bin() else {
            crate::skip_or_fail(&format!("PostgreSQL (initdb, pg_ctl) is not installed ({INSTALL})"));
            return None;
        };
        let run_as = is_root().then(|| "postgres".to_owned());
        let dir = tempfile::Builder::new().prefix("glimpse-pg-").tempdir().expect("tempdir");
        if let Some(user) = &run_as {
            // The server's user must own its directory.
            let chown = Command::new("chown").args(["-R", user]).arg(dir.path()).status().expect("chown");
            assert!(chown.success(), "chown {} to {user}", dir.path().display());
        }
        let mut pg = Postgres { dir, bin, port: crate::free_port(), run_as, running: false };
        let initdb = pg
            .as_server_user(pg.bin.join("initdb"))
            .args(["-U", "glimpse", "-A", "trust", "-E", "UTF8", "--locale=C", "-D"])
            .arg(pg.data_dir())
            .output()
            .expect("run initdb");
        check("initdb", &initdb);
        pg.start_server();
        let created = pg.psql_on("postgres", "CREATE DATABASE glimpse");
        assert!(created.contains("CREATE DATABASE"), "{created}");
        Some(pg)
    }

    /// The cluster's data directory (to look at what it stores on disk).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    fn as_server_user(&self, program: PathBuf) -> Command {
        match &self.run_as {
            Some(user) => {
                let mut cmd = Command::new("runuser");
                cmd.args(["-u", user, "--"]).arg(program);
                cmd
            }
            None => Command::new(program),
        }
    }

    /// Starts the server (again, after [`Postgres::kill`] or
    /// [`Postgres::stop`]) and waits until it accepts connections.
    pub fn start_server(&mut self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=on -c max_connections=200",
            self.port,
            self.socket_dir().display()
        );
        let started = self
            .as_server_user(self.bin.join("pg_ctl"))
            .args(["-w", "-t", "60", "-D"])
            .arg(self.data_dir())
            .args(["-l"])
            .arg(self.dir.path().join("server.log"))
            .args(["-o", &options, "start"])
            .output()
            .expect("run pg_ctl start");
        if !started.status.success() {
            let log = std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
            panic!("pg_ctl start failed: {}\n{log}", String::from_utf8_lossy(&started.stderr));
        }
        self.running = true;
    }

    /// Stops the server as a crash would: `pg_ctl stop -m immediate` (no
    /// checkpoint; the next start replays the WAL).
    pub fn kill(&mut self) {
        self.stop_mode("immediate");
    }

    /// Stops the server cleanly.
    pub fn stop(&mut self) {
        self.stop_mode("fast");
    }

    fn stop_mode(&mut self, mode: &str) {
        if !self.running {
            return;
        }
        let _ = self
            .as_server_user(self.bin.join("pg_ctl"))
            .args(["-w", "-D"])
            .arg(self.data_dir())
            .args(["-m", mode, "stop"])
            .output();
        self.running = false;
    }

    /// The connection settings for the `glimpse` database over TCP.
    pub fn url(&self) -> String {
        format!("host=127.0.0.1 port={} user=glimpse dbname=glimpse", self.port)
    }

    /// The connection settings over the Unix socket.
    pub fn socket_url(&self) -> String {
        format!("host={} port={} user=glimpse dbname=glimpse", self.socket_dir().display(), self.port)
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A `[control]` section naming this database (no TLS: loopback).
    pub fn control_toml(&self) -> String {
        format!(
            "[control]\nbackend = \"postgres\"\n[control.postgres]\nurl = {:?}\ntls = \"disable\"\ntimeout_ms = 3000\n",
            self.url()
        )
    }

    /// Runs `sql` in the `glimpse` database with psql; returns its output
    /// (unaligned, tuples only).
    pub fn psql(&self, sql: &str) -> String {
        self.psql_on("glimpse", sql)
    }

    fn psql_on(&self, db: &str, sql: &str) -> String {
        let deadline = Instant::now() + crate::DEADLINE;
        loop {
            let out = Command::new(psql_path(&self.bin))
                .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                .args(["-U", "glimpse", "-d", db, "-c", sql])
                .output()
                .expect("run psql");
            if out.status.success() {
                return String::from_utf8_lossy(&out.stdout).into_owned();
            }
            let err = String::from_utf8_lossy(&out.stderr).into_owned();
            // Right after a start the server may still be recovering.
            if Instant::now() > deadline || !err.contains("starting up") {
                panic!("psql {sql:?}: {err}");
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

fn psql_path(bin: &Path) -> PathBuf {
    let beside = bin.join("psql");
    if beside.is_file() {
        beside
    } else {
        PathBuf::from("psql")
    }
}

fn check(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop_mode("immediate");
    }
}
