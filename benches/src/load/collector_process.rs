//! The collector under test as a process of its own, so that its CPU time
//! and peak memory are its own and not the load generator's: the load tool
//! starts itself again as `glimpse-bench collector`, which runs the real
//! collector library on the bench directory's config, and reads its figures
//! from `/proc`.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use glimpse_collector::config::CollectorConfig;
use glimpse_collector::Collector;
use glimpse_common::identity::OrgId;
use serde::Serialize;

use super::backends::{config_text, Backends, ConfigPaths};
use super::BenchError;

/// The line the collector process prints once it listens.
const READY: &str = "glimpse-bench collector ready";

/// Larger than any config the bench writes (its own lines and the
/// backend tables).
const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// Writes collector `name`'s config (`<dir>/<name>.toml`, data in
/// `<dir>/<data>`) for a bench directory: see [`super::backends::config_text`];
/// the master key, made once, is `<dir>/master.key`, shared by every
/// collector of a run.
pub fn write_config(
    dir: &Path,
    name: &str,
    data: &str,
    pki: &Path,
    max_connections: usize,
    backends: Option<&Backends>,
) -> Result<PathBuf, BenchError> {
    let master = dir.join("master.key");
    if !master.exists() {
        glimpse_store::keys::MasterKey::generate_file(&master)
            .map_err(|e| BenchError::setup("the master key", e.to_string()))?;
    }
    let data_dir = dir.join(data);
    let paths = ConfigPaths { data_dir: &data_dir, master_key: &master, pki };
    let text = config_text(&paths, max_connections, backends.map(Backends::text));
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).map_err(|e| BenchError::io(format!("writing {}", path.display()), e))?;
    Ok(path)
}

/// Loads a config the bench wrote, relative paths against `base` (the
/// backend file's directory) or, without one, the config's own.
pub fn load_config(path: &Path, base: Option<&Path>) -> Result<CollectorConfig, BenchError> {
    let text =
        glimpse_files::read_config_text(path, MAX_CONFIG_BYTES).map_err(|e| BenchError::Collector(e.to_string()))?;
    let base = base.unwrap_or_else(|| glimpse_common::config::config_base(path));
    CollectorConfig::parse(&text, path, base).map_err(|e| BenchError::Collector(e.to_string()))
}

/// What `glimpse-bench collector` runs: the collector on `config` (relative
/// paths against `paths_base` when given), capture consent given for
/// `consent` (through the audited admin path, as the operator
/// `glimpse-bench`; with a shared control plane every collector gives it
/// again, which changes nothing), reloading on SIGHUP, until SIGTERM or
/// SIGINT, then a drain.
pub async fn serve(config: &Path, paths_base: Option<&Path>, consent: &[OrgId]) -> Result<(), BenchError> {
    use glimpse_common::identity::{AdminIdentity, AdminName, AdminRole};
    use glimpse_common::wire::admin::{AdminAction, AdminReply};

    let config = load_config(config, paths_base)?;
    let collector = Collector::start(config).await.map_err(|e| BenchError::Collector(e.to_string()))?;
    let operator = AdminName::new("glimpse-bench")
        .and_then(|name| AdminIdentity::new(name, AdminRole::Operator, None))
        .map_err(|e| BenchError::Collector(e.to_string()))?;
    for org in consent {
        let context = collector.admin_context();
        let (operator, org) = (operator.clone(), org.clone());
        let action = AdminAction::SetConsent { org: org.clone(), capture: true };
        let reply = tokio::task::spawn_blocking(move || context.act(&operator, action))
            .await
            .map_err(|e| BenchError::Collector(e.to_string()))?;
        if !matches!(reply, AdminReply::ConsentSet { .. }) {
            return Err(BenchError::Collector(format!("capture consent for {org} not given: {reply:?}")));
        }
    }
    let ssh = collector.ssh_addr().map_or_else(|| "-".to_owned(), |a| a.to_string());
    let fingerprint = collector.ssh_host_key_fingerprint().unwrap_or("-").to_owned();
    println!("{READY} tls={} ssh={ssh} fingerprint={fingerprint}", collector.local_addr());
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).map_err(|e| BenchError::io("installing the SIGTERM handler", e))?;
    let mut hup = signal(SignalKind::hangup()).map_err(|e| BenchError::io("installing the SIGHUP handler", e))?;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            // As `glimpse-collector serve` does: re-import registrations,
            // so a load run can add devices to this collector.
            _ = hup.recv() => {
                if let Err(e) = collector.reload() {
                    eprintln!("glimpse-bench collector: reload failed: {e}");
                }
            }
        }
    }
    let (batches, records) = collector.metrics().stored_totals();
    collector.shutdown().await;
    println!("glimpse-bench collector stopped: {batches} batches, {records} records stored");
    Ok(())
}

/// The collector process the load tool started.
#[derive(Debug)]
pub struct CollectorProcess {
    child: Child,
    /// Where access points connect.
    pub tls: SocketAddr,
    /// Where switches connect.
    pub ssh: Option<SocketAddr>,
    /// The SSH host key devices pin.
    pub fingerprint: Option<String>,
}

impl CollectorProcess {
    /// Starts `glimpse-bench collector --config CONFIG` from this very
    /// executable and waits until it listens.
    pub fn spawn(config: &Path, paths_base: Option<&Path>, consent: &[OrgId]) -> Result<Self, BenchError> {
        let exe = std::env::current_exe().map_err(|e| BenchError::io("finding glimpse-bench's own path", e))?;
        let mut command = Command::new(exe);
        command.arg("collector").arg("--config").arg(config);
        if let Some(base) = paths_base {
            command.arg("--paths-base").arg(base);
        }
        for org in consent {
            command.arg("--consent").arg(org.as_str());
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| BenchError::io("starting the collector process", e))?;
        let stdout = child.stdout.take().ok_or_else(|| BenchError::Collector("no stdout".into()))?;
        let mut lines = BufReader::new(stdout).lines();
        let ready = loop {
            match lines.next() {
                Some(Ok(line)) if line.starts_with(READY) => break line,
                Some(Ok(_)) => continue,
                _ => {
                    let status = child.wait().map_err(|e| BenchError::io("waiting for the collector process", e))?;
                    return Err(BenchError::Collector(format!("exited before listening ({status})")));
                }
            }
        };
        // The rest of its output (the drain summary) is not needed, but the
        // pipe must not fill up.
        std::thread::spawn(move || lines.for_each(drop));
        let field = |name: &str| {
            ready.split_whitespace().find_map(|w| w.strip_prefix(name)).filter(|v| *v != "-").map(str::to_owned)
        };
        let tls = field("tls=")
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| BenchError::Collector(format!("unreadable ready line {ready:?}")))?;
        Ok(Self { tls, ssh: field("ssh=").and_then(|a| a.parse().ok()), fingerprint: field("fingerprint="), child })
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM: the collector drains and exits (see [`CollectorProcess::wait`]).
    pub fn terminate(&self) -> Result<(), BenchError> {
        signal(self.child.id(), rustix::process::Signal::TERM)
    }

    /// SIGTERM, then waits for it.
    pub fn stop(self) -> Result<(), BenchError> {
        self.terminate()?;
        self.wait()
    }

    /// Waits (two minutes at most, then kills it) for the collector to exit
    /// after [`CollectorProcess::terminate`]; an exit status other than
    /// success is an error.
    pub fn wait(mut self) -> Result<(), BenchError> {
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(()),
                Ok(Some(status)) => return Err(BenchError::Collector(format!("exited with {status}"))),
                Ok(None) if std::time::Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
                Ok(None) => {
                    let _ = self.child.kill();
                    return Err(BenchError::Collector("did not drain within 120 s; killed".into()));
                }
                Err(e) => return Err(BenchError::io("waiting for the collector process", e)),
            }
        }
    }
}

impl Drop for CollectorProcess {
    fn drop(&mut self) {
        // A run that fails half-way must not leave a collector behind.
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Sends `signal` to process `pid`.
pub fn signal(pid: u32, signal: rustix::process::Signal) -> Result<(), BenchError> {
    let pid = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .ok_or_else(|| BenchError::Collector(format!("no such process id {pid}")))?;
    rustix::process::kill_process(pid, signal)
        .map_err(|e| BenchError::io(format!("signalling process {}", pid.as_raw_nonzero()), e.into()))
}

/// A process's CPU time and peak memory, from `/proc`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct ProcessSample {
    /// User plus system CPU time so far, seconds.
    pub cpu_seconds: f64,
    /// Peak resident set size so far (`VmHWM`), KiB.
    pub peak_rss_kib: u64,
}

/// Reads process `pid`'s CPU time and peak RSS; `None` if it is gone or
/// `/proc` is not there.
pub fn sample(pid: u32) -> Option<ProcessSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_proc(&stat, &status, rustix::param::clock_ticks_per_second())
}

/// Parses `/proc/PID/stat` (utime and stime, fields 14 and 15, counted
/// after the parenthesised command name, which may hold spaces) and
/// `/proc/PID/status` (`VmHWM`).
fn parse_proc(stat: &str, status: &str, ticks_per_second: u64) -> Option<ProcessSample> {
    let Stat { utime, stime, .. } = parse_stat(stat)?;
    let peak_rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    Some(ProcessSample { cpu_seconds: (utime + stime) as f64 / ticks_per_second.max(1) as f64, peak_rss_kib })
}

/// CPU seconds (user plus system) of process `pid` and its children: its
/// own, those of its children it has reaped (`cutime`, `cstime`: a
/// PostgreSQL backend that ended), and those of its children alive now
/// (another backend, a background writer). `None` if it is gone.
pub fn tree_cpu_seconds(pid: u32) -> Option<f64> {
    let ticks = rustix::param::clock_ticks_per_second().max(1) as f64;
    let own = parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)?;
    let mut total = own.utime + own.stime + own.cutime + own.cstime;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        // Only the numeric entries are processes; one may end meanwhile.
        let Some(child) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        if child == pid {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(format!("/proc/{child}/stat")) else { continue };
        if let Some(stat) = parse_stat(&text).filter(|s| s.ppid == pid) {
            total += stat.utime + stat.stime;
        }
    }
    Some(total as f64 / ticks)
}

/// The fields of `/proc/PID/stat` the figures need, in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    ppid: u32,
    utime: u64,
    stime: u64,
    cutime: u64,
    cstime: u64,
}

/// Parses `/proc/PID/stat`, counting fields after the parenthesised
/// command name (which may hold spaces and parentheses): state is field 3
/// overall, ppid 4, utime 14, stime 15, cutime 16, cstime 17.
fn parse_stat(stat: &str) -> Option<Stat> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let field = |overall: usize| fields.get(overall - 3).and_then(|f| f.parse::<u64>().ok());
    Some(Stat {
        ppid: u32::try_from(field(4)?).ok()?,
        utime: field(14)?,
        stime: field(15)?,
        // Signed in the kernel's format; never negative in practice.
        cutime: field(16).unwrap_or(0),
        cstime: field(17).unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_figures_are_read_past_a_command_name_with_spaces() {
        let stat = "4242 (glimpse (bench) x) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 9 0 100 1000 200";
        let status = "Name:\tglimpse-bench\nVmPeak:\t  900 kB\nVmHWM:\t   65536 kB\nVmRSS:\t  1000 kB\n";
        let sample = parse_proc(stat, status, 100).unwrap();
        assert_eq!(sample, ProcessSample { cpu_seconds: 3.0, peak_rss_kib: 65536 });
        assert_eq!(parse_proc("garbage", status, 100), None);
        assert_eq!(parse_proc("1 (x) S 1", status, 100), None);
    }

    #[test]
    fn parent_and_child_times_are_read_from_stat() {
        let stat = "77 (postgres: glimpse (x)) S 42 77 77 0 -1 4194560 1000 0 0 0 250 50 30 20 20 0 9 0 100 1000 200";
        assert_eq!(parse_stat(stat), Some(Stat { ppid: 42, utime: 250, stime: 50, cutime: 30, cstime: 20 }));
        assert_eq!(parse_stat("77 (x) S notapid 1 1"), None);
    }

    #[test]
    fn a_process_tree_includes_the_children_it_reaped() {
        let me = std::process::id();
        // The tree's CPU beyond this process's own: its children's.
        let children = || tree_cpu_seconds(me).unwrap() - sample(me).unwrap().cpu_seconds;
        let before = children();
        // A child that burns a few tenths of a second of CPU, then is reaped.
        let status =
            Command::new("sh").args(["-c", "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done"]).status().expect("sh");
        assert!(status.success());
        let after = children();
        assert!(after - before >= 0.05, "children's CPU {before} -> {after}");
        assert_eq!(tree_cpu_seconds(u32::MAX), None);
    }

    #[test]
    fn this_process_can_be_sampled() {
        let me = sample(std::process::id()).expect("/proc is mounted");
        assert!(me.peak_rss_kib > 0);
    }
}
