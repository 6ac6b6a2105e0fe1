//! The engine of `glimpse-bench`, the load tool for sizing a collector.
//!
//! A run has four phases, each timed on its own:
//! 1. **Set-up**: a PKI and one certificate and shared key (or SSH key) per
//!    simulated device, kept in the bench directory for the next run; the
//!    collector, started as a process of its own (`glimpse-bench collector`)
//!    unless `--collector` names a running one.
//! 2. **Connect**: every device opens the agent's real transport at once
//!    (at most `connect_concurrency` handshakes in progress): handshakes per
//!    second, and per second of collector CPU.
//! 3. **Stream**: each device writes batches with up to `window` of them
//!    unacknowledged, at full speed or at a set rate, for the set time; then
//!    it waits for every outstanding acknowledgement.
//! 4. **Verify**: the collector drains and stops, and the load tool opens
//!    its store and counts what is there: stored = sent, or the run failed.
//!
//! With `--backend-config` the collectors keep their control plane in
//! PostgreSQL and their segments in an object store (`backends.rs`), and
//! with `--collectors N` there are N of them sharing those backends, the
//! devices spread over them ([`fleet::collector_for`]).

pub mod backends;
pub mod bulk;
pub mod collector_process;
pub mod device;
pub mod fleet;
pub mod report;
pub mod syslog;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use glimpse_common::bounded::BoundedVec;
use glimpse_common::identity::OrgId;
use glimpse_common::record::{DataKind, Record};
use glimpse_common::wire::Batch;
use portable_atomic::Ordering;
use tokio::sync::{watch, Semaphore};

use backends::Backends;
use collector_process::{CollectorProcess, ProcessSample};
use device::{Pace, Tally};
use fleet::{Fleet, Link};
use report::{Latency, Machine, OtherFigures, ProcessFigures, Report};

/// Why a run could not be made.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Preparing certificates, keys or configs failed.
    #[error("setting up {what}: {reason}")]
    Setup {
        /// What was being prepared.
        what: String,
        /// Why it failed.
        reason: String,
    },
    /// The collector process failed to start, or failed.
    #[error("the collector: {0}")]
    Collector(String),
    /// A file or socket operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// Not one device could connect, so there is nothing to measure.
    #[error("no device connected; first error: {0}")]
    NoConnections(String),
    /// The options contradict each other or are out of range.
    #[error("{0}")]
    Options(String),
}

impl BenchError {
    pub(crate) fn setup(what: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Setup { what: what.into(), reason: reason.into() }
    }

    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io { what: what.into(), source }
    }
}

/// Which records the simulated devices send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RecordMix {
    /// Capture-header records (a realistic packet mix cut to its headers,
    /// about 100 bytes each): the collector's heaviest stream.
    Capture,
    /// Access-point metadata records (four interfaces, about 320 bytes).
    Metadata,
    /// Fifteen capture records to one metadata record.
    Mixed,
}

impl RecordMix {
    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Capture => "capture",
            Self::Metadata => "metadata",
            Self::Mixed => "mixed",
        }
    }

    /// Record `i` of a device's batch, observed at `now_ms`.
    pub fn record(self, packets: &[(glimpse_common::capture::LinkType, Vec<u8>)], i: usize, now_ms: i64) -> Record {
        let metadata = |i| {
            let mut r = crate::sample_record(i);
            r.observed_at_ms = now_ms;
            r
        };
        match self {
            Self::Capture => crate::sample_capture(packets, i, now_ms),
            Self::Metadata => metadata(i),
            Self::Mixed if i % 16 == 15 => metadata(i),
            Self::Mixed => crate::sample_capture(packets, i, now_ms),
        }
    }

    /// A batch of `records` for `org`, and its records' average encoded size.
    pub fn batch(self, org: &OrgId, records: usize, now_ms: i64) -> (Batch, f64) {
        let packets = crate::packets::mix();
        let records: Vec<Record> = (0..records).map(|i| self.record(&packets, i, now_ms)).collect();
        let bytes: usize = records.iter().map(|r| postcard::to_stdvec(r).map_or(0, |v| v.len())).sum();
        let average = bytes as f64 / records.len().max(1) as f64;
        (Batch { org: org.clone(), stream_seq: 1, records: BoundedVec::truncating(records) }, average)
    }
}

/// How the devices reach the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    /// Access points: mutual TLS and the per-device shared key.
    Tls,
    /// Switches: SSH with the device's Ed25519 key.
    Ssh,
}

/// A collector already running, instead of one the load tool starts.
#[derive(Debug, Clone)]
pub struct RemoteCollector {
    /// `host:port` of its TLS (or, with SSH, its SSH) listener.
    pub address: String,
    /// Its `pki_dir`: the bench devices are issued there, and the collector
    /// imports them on SIGHUP.
    pub pki: PathBuf,
    /// Its process id on this machine: for its CPU and memory figures and to
    /// send it SIGHUP; `None` if it runs elsewhere.
    pub pid: Option<u32>,
    /// The name its TLS certificate carries.
    pub server_name: String,
    /// Its SSH host key fingerprint (for `--transport ssh`).
    pub ssh_fingerprint: Option<String>,
}

/// A process to measure beside the collectors (`--measure NAME=PID`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Measured {
    /// What to call it in the report.
    pub name: String,
    /// Its process id (with its children: PostgreSQL's backends).
    pub pid: u32,
}

impl std::str::FromStr for Measured {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (name, pid) = text.split_once('=').ok_or_else(|| format!("{text:?} is not NAME=PID"))?;
        let named = !name.is_empty()
            && name.len() <= 32
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !named {
            return Err(format!("{name:?} is not a name (1 to 32 of a-z, A-Z, 0-9, '-' and '_')"));
        }
        let pid = pid.parse::<u32>().ok().filter(|p| *p > 0).ok_or_else(|| format!("{pid:?} is not a process id"))?;
        Ok(Self { name: name.to_owned(), pid })
    }
}

/// Everything a run needs to know.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Devices to simulate, each with its own certificate and connection.
    pub devices: usize,
    /// Seconds of streaming.
    pub seconds: f64,
    /// Which records.
    pub records: RecordMix,
    /// Records per batch.
    pub batch: usize,
    /// Batches in flight per connection.
    pub window: usize,
    /// Records per second over the whole fleet; `None`: as fast as possible.
    pub rate: Option<f64>,
    /// TLS or SSH.
    pub transport: Transport,
    /// Organisations the devices are spread over.
    pub orgs: usize,
    /// Handshakes in progress at once while the fleet connects.
    pub connect_concurrency: usize,
    /// Where the PKI, the collector's config and its data live.
    pub dir: PathBuf,
    /// A running collector; `None`: start the bench's own.
    pub remote: Option<RemoteCollector>,
    /// The `[control]` and `[storage]` tables for the bench's own
    /// collectors (`--backend-config`); `None`: the embedded store.
    pub backend_config: Option<PathBuf>,
    /// How many collectors the bench starts (`--collectors`); more than one
    /// needs shared backends.
    pub collectors: usize,
    /// Other processes on this machine whose CPU (with their children's)
    /// is measured while the fleet streams (`--measure`): the database, the
    /// object store.
    pub measure: Vec<Measured>,
    /// Draw a live progress bar on the terminal.
    pub progress: bool,
}

impl LoadOptions {
    fn check(&self) -> Result<(), BenchError> {
        let bad = |m: String| Err(BenchError::Options(m));
        if self.devices == 0 {
            return bad("--devices must be at least 1".into());
        }
        if !(1..=glimpse_common::wire::MAX_RECORDS_PER_BATCH).contains(&self.batch) {
            return bad(format!("--batch must be 1..={}", glimpse_common::wire::MAX_RECORDS_PER_BATCH));
        }
        if self.window == 0 || self.connect_concurrency == 0 || self.orgs == 0 {
            return bad("--window, --connect-concurrency and --orgs must be at least 1".into());
        }
        if !(self.seconds.is_finite() && self.seconds >= 0.0) {
            return bad("--seconds must be a non-negative number".into());
        }
        if self.rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
            return bad("--rate must be a positive number of records per second".into());
        }
        if self.collectors == 0 {
            return bad("--collectors must be at least 1".into());
        }
        if self.remote.is_some() && (self.collectors > 1 || self.backend_config.is_some()) {
            return bad(
                "--collectors and --backend-config are for the bench's own collectors, not with --collector".into()
            );
        }
        Ok(())
    }

    /// Time between one device's batches at the set rate.
    fn interval(&self) -> Option<Duration> {
        self.rate.map(|rate| Duration::from_secs_f64(self.batch as f64 * self.devices as f64 / rate))
    }
}

/// Several collectors serve as one only when they share both the control
/// plane (registry, keys, stream sequences, catalog) and the segments:
/// otherwise each would hold a part of the fleet's data that the others,
/// and the final count, could not see.
fn check_topology(collectors: usize, backends: Option<&Backends>) -> Result<(), BenchError> {
    if collectors > 1 && !backends.is_some_and(Backends::shared) {
        let has = backends.map_or_else(|| "no --backend-config".to_owned(), Backends::describe);
        return Err(BenchError::Options(format!(
            "--collectors {collectors} needs shared backends: --backend-config with [control] backend = \"postgres\" \
             and [storage] backend = \"s3\" (given: {has})"
        )));
    }
    Ok(())
}

/// The collector(s) a run talks to.
enum Target {
    Own {
        /// In the order of [`fleet::collector_for`].
        processes: Vec<CollectorProcess>,
        /// The first one's config, for opening the store to verify it.
        config: PathBuf,
        backends: Option<Backends>,
    },
    Remote(RemoteCollector),
}

impl Target {
    fn pids(&self) -> Vec<u32> {
        match self {
            Target::Own { processes, .. } => processes.iter().map(CollectorProcess::pid).collect(),
            Target::Remote(remote) => remote.pid.into_iter().collect(),
        }
    }
}

/// Every process's sample, or `None` if there are none or one is missing.
fn sample_all(pids: &[u32]) -> Option<Vec<ProcessSample>> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|pid| collector_process::sample(*pid)).collect()
}

/// Total CPU seconds of a set of samples.
fn cpu_seconds(samples: &[ProcessSample]) -> f64 {
    samples.iter().map(|s| s.cpu_seconds).sum()
}

/// Runs the load described by `options` and reports what it measured.
pub async fn run(options: &LoadOptions) -> Result<Report, BenchError> {
    options.check()?;
    let backends = options.backend_config.as_deref().map(Backends::load).transpose()?;
    check_topology(options.collectors, backends.as_ref())?;
    std::fs::create_dir_all(&options.dir)
        .map_err(|e| BenchError::io(format!("creating {}", options.dir.display()), e))?;
    let dir = std::fs::canonicalize(&options.dir).map_err(|e| BenchError::io("resolving the bench directory", e))?;
    let _lock = lock_dir(&dir)?;
    let pki = options.remote.as_ref().map_or_else(|| dir.join("pki"), |r| r.pki.clone());
    let prepared = {
        let (pki, devices, orgs, transport) = (pki.clone(), options.devices, options.orgs, options.transport);
        tokio::task::spawn_blocking(move || fleet::prepare(&pki, devices, orgs, transport))
            .await
            .map_err(|e| BenchError::setup("the fleet", e.to_string()))??
    };
    let orgs = fleet::org_names(options.orgs);
    let (target, links) = start_target(options, &dir, &prepared, &orgs, backends)?;
    let state = dir.join("state");
    let configs = prepared
        .devices
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let link = &links[fleet::collector_for(i, options.orgs, links.len())];
            prepared.agent_config(id, link, &state).map(|c| (id.clone(), c))
        })
        .collect::<Result<Vec<_>, _>>()?;

    let tally = Arc::new(Tally::default());
    let (go_tx, go_rx) = watch::channel(false);
    let (stop_tx, stop_rx) = watch::channel(false);
    let handshakes = Arc::new(Semaphore::new(options.connect_concurrency));
    let now_ms = glimpse_common::clock::Clock::now_millis(&glimpse_common::clock::SystemClock);
    // One stream per run, so every run's sequence numbers start afresh.
    let stream_id = u64::try_from(now_ms).unwrap_or(1);
    let pace = Pace { window: options.window, interval: options.interval() };
    let mut record_bytes = 0.0;

    let progress = Progress::new(options.progress);
    let me = std::process::id();
    let generator_start = collector_process::sample(me).unwrap_or_default();
    let pids = target.pids();
    let collector_start = sample_all(&pids);
    let connect_start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    // One batch per organisation, built and measured once, copied to its devices.
    let mut templates: std::collections::HashMap<OrgId, (Batch, f64)> = std::collections::HashMap::new();
    for (n, (identity, config)) in configs.into_iter().enumerate() {
        let (batch, bytes) = templates
            .entry(identity.org.clone())
            .or_insert_with(|| options.records.batch(&identity.org, options.batch, now_ms))
            .clone();
        record_bytes = bytes;
        let (tally, handshakes, mut go, stop) =
            (Arc::clone(&tally), Arc::clone(&handshakes), go_rx.clone(), stop_rx.clone());
        tasks.spawn(async move {
            let conn = {
                let _permit = handshakes.acquire_owned().await;
                device::connect_retrying(&config, stream_id, pace.window, &tally).await
            };
            let conn = match conn {
                Ok(conn) => conn,
                Err(e) => {
                    tally.error(format!("{identity}: connecting: {e}"));
                    return;
                }
            };
            tally.connected.fetch_add(1, Ordering::Relaxed);
            let _ = go.wait_for(|go| *go).await;
            if let Err(e) = device::stream(conn, batch, pace, n, &tally, stop).await {
                tally.error(format!("{identity}: streaming: {e}"));
            }
            tally.connected.fetch_sub(1, Ordering::Relaxed);
        });
    }

    // Connect phase: until every device is connected or has failed.
    let devices = options.devices as u64;
    progress.start_connecting(devices);
    loop {
        let (connected, errors) = (tally.connected.load(Ordering::Relaxed), tally.errors.load(Ordering::Relaxed));
        progress.connecting(connected, errors);
        if connected + errors >= devices {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let connect_seconds = connect_start.elapsed().as_secs_f64();
    let connections = tally.connected.load(Ordering::Relaxed);
    if connections == 0 {
        drop(target);
        return Err(BenchError::NoConnections(tally.first_error().unwrap_or_default()));
    }
    let collector_connected = sample_all(&pids);
    let others_start: Vec<Option<f64>> =
        options.measure.iter().map(|m| collector_process::tree_cpu_seconds(m.pid)).collect();

    // Stream phase.
    let stream_start = Instant::now();
    let _ = go_tx.send(true);
    progress.start_streaming(options.seconds);
    let deadline = stream_start + Duration::from_secs_f64(options.seconds);
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200).min(deadline.saturating_duration_since(Instant::now()))).await;
        progress.streaming(stream_start.elapsed(), &tally);
    }
    let _ = stop_tx.send(true);
    progress.draining();
    while tasks.join_next().await.is_some() {}
    let seconds = stream_start.elapsed().as_secs_f64();
    let collector_end = sample_all(&pids);
    let others_end: Vec<Option<f64>> =
        options.measure.iter().map(|m| collector_process::tree_cpu_seconds(m.pid)).collect();
    let generator_end = collector_process::sample(me).unwrap_or_default();
    progress.finish();

    // Verify phase.
    let records_sent = tally.sent.load(Ordering::Relaxed);
    let records_acked = tally.acked.load(Ordering::Relaxed);
    let mut described = None;
    let records_stored = match target {
        Target::Own { processes, config, backends } => {
            if backends.is_some() || processes.len() > 1 {
                described = Some(format!(
                    "{}, {} collector{}",
                    backends.as_ref().map_or_else(|| "control redb, segments local".to_owned(), Backends::describe),
                    processes.len(),
                    if processes.len() == 1 { "" } else { "s" }
                ));
            }
            // All drain at once, then each is waited for.
            for process in &processes {
                process.terminate()?;
            }
            for process in processes {
                process.wait()?;
            }
            let orgs = orgs.clone();
            // With the control plane in PostgreSQL, earlier runs' records
            // stay in the database and the bucket (or the kept data
            // directory, whose segments its catalog rows name): count only
            // this run's. Every record of this run carries the run's stamp
            // as its observation time (`RecordMix::batch`, the same stamp
            // as the run's stream id), so it is told apart exactly, even
            // from a run beside it on another bench directory, without
            // issuing a fresh fleet under new organisation names each time
            // (10,000 certificates take minutes).
            let this_run = backends.as_ref().filter(|b| b.shared_control).map(|_| now_ms);
            let base = backends.as_ref().map(|b| b.base().to_owned());
            Some(
                tokio::task::spawn_blocking(move || count_stored(&config, base.as_deref(), &orgs, this_run))
                    .await
                    .map_err(|e| BenchError::Collector(e.to_string()))??,
            )
        }
        Target::Remote(_) => None,
    };
    let handshake_cpu = match (&collector_start, &collector_connected) {
        (Some(a), Some(b)) if cpu_seconds(b) > cpu_seconds(a) => {
            Some(connections as f64 / (cpu_seconds(b) - cpu_seconds(a)))
        }
        _ => None,
    };
    let others = options
        .measure
        .iter()
        .zip(others_start.iter().zip(&others_end))
        .map(|(m, (start, end))| {
            let cpu_seconds = match (start, end) {
                (Some(a), Some(b)) => Some((b - a).max(0.0)),
                _ => None,
            };
            OtherFigures {
                name: m.name.clone(),
                pid: m.pid,
                cpu_seconds,
                cpu_cores: cpu_seconds.map(|c| c / seconds.max(1e-9)),
            }
        })
        .collect();
    let per_collector: Vec<ProcessFigures> = match (&collector_connected, &collector_end) {
        (Some(a), Some(b)) => a.iter().zip(b).map(|(a, b)| ProcessFigures::between(*a, *b, seconds)).collect(),
        _ => Vec::new(),
    };
    Ok(Report {
        target: "glimpse".into(),
        transport: match options.transport {
            Transport::Tls => "tls".into(),
            Transport::Ssh => "ssh".into(),
        },
        records: options.records.name().into(),
        backends: described,
        devices: options.devices,
        connections,
        connect_seconds,
        handshakes_per_sec: connections as f64 / connect_seconds.max(1e-9),
        handshakes_per_collector_core: handshake_cpu,
        seconds,
        batch: options.batch,
        record_bytes,
        records_sent,
        records_acked,
        records_stored,
        stored_equals_sent: records_stored.map(|s| s == records_sent && records_acked == records_sent),
        records_per_sec: records_acked as f64 / seconds.max(1e-9),
        mib_per_sec: records_acked as f64 * record_bytes / seconds.max(1e-9) / (1024.0 * 1024.0),
        latency_us: Latency::of(&tally.latencies()),
        collector: (!per_collector.is_empty()).then(|| ProcessFigures::sum(&per_collector)),
        collectors: if per_collector.len() > 1 { per_collector } else { Vec::new() },
        others,
        generator: ProcessFigures::between(generator_start, generator_end, connect_seconds + seconds),
        errors: tally.errors.load(Ordering::Relaxed),
        refusals: tally.refusals.load(Ordering::Relaxed),
        devices_without_capture_consent: tally.without_consent.load(Ordering::Relaxed),
        first_error: tally.first_error(),
        machine: Machine::this(),
    })
}

/// Starts the bench's own collectors (this fleet's registrations, capture
/// consent for the bench organisations; a fresh data directory each when
/// the control plane is theirs), or readies a running one (SIGHUP so it
/// imports the fleet). Returns where each collector is reached.
fn start_target(
    options: &LoadOptions,
    dir: &Path,
    fleet: &Fleet,
    orgs: &[OrgId],
    backends: Option<Backends>,
) -> Result<(Target, Vec<Link>), BenchError> {
    match &options.remote {
        None => {
            let mut processes = Vec::with_capacity(options.collectors);
            let mut links = Vec::with_capacity(options.collectors);
            let mut first_config = None;
            for n in 1..=options.collectors {
                // One collector keeps today's names; several are numbered.
                let (name, data) = if options.collectors == 1 {
                    ("collector".to_owned(), "data".to_owned())
                } else {
                    (format!("collector-{n}"), format!("data-{n}"))
                };
                let data_dir = dir.join(&data);
                // With the control plane in PostgreSQL the data directory
                // is kept: the catalog there names the segments of earlier
                // runs (local ones live here), and a cleared directory
                // would read as acknowledged data lost.
                let own_control = !backends.as_ref().is_some_and(|b| b.shared_control);
                if own_control && data_dir.exists() {
                    std::fs::remove_dir_all(&data_dir)
                        .map_err(|e| BenchError::io(format!("clearing {}", data_dir.display()), e))?;
                }
                let config = collector_process::write_config(
                    dir,
                    &name,
                    &data,
                    &fleet.pki,
                    options.devices.saturating_add(64).max(20_000),
                    backends.as_ref(),
                )?;
                let process = CollectorProcess::spawn(&config, backends.as_ref().map(Backends::base), orgs)?;
                links.push(link_to(&process, options.transport)?);
                processes.push(process);
                first_config.get_or_insert(config);
            }
            let config = first_config.ok_or_else(|| BenchError::Options("--collectors must be at least 1".into()))?;
            Ok((Target::Own { processes, config, backends }, links))
        }
        Some(remote) => {
            if let Some(pid) = remote.pid {
                // The collector imports registrations on SIGHUP; give it a
                // moment to read thousands of them.
                collector_process::signal(pid, rustix::process::Signal::HUP)?;
                std::thread::sleep(Duration::from_secs(2));
            } else {
                eprintln!("no --collector-pid: send the collector SIGHUP yourself so it imports the bench devices");
            }
            let link = match options.transport {
                Transport::Tls => {
                    Link::Tls { address: remote.address.clone(), server_name: remote.server_name.clone() }
                }
                Transport::Ssh => Link::Ssh {
                    address: remote.address.clone(),
                    host_key_fingerprint: remote.ssh_fingerprint.clone().ok_or_else(|| {
                        BenchError::Options("--transport ssh with --collector needs --ssh-fingerprint".into())
                    })?,
                },
            };
            Ok((Target::Remote(remote.clone()), vec![link]))
        }
    }
}

/// How a device reaches one of the bench's own collectors.
fn link_to(process: &CollectorProcess, transport: Transport) -> Result<Link, BenchError> {
    Ok(match transport {
        Transport::Tls => Link::Tls { address: process.tls.to_string(), server_name: "localhost".into() },
        Transport::Ssh => Link::Ssh {
            address: process
                .ssh
                .map(|a| a.to_string())
                .ok_or_else(|| BenchError::Collector("no SSH listener".into()))?,
            host_key_fingerprint: process
                .fingerprint
                .clone()
                .ok_or_else(|| BenchError::Collector("no SSH host key".into()))?,
        },
    })
}

/// Holds the bench directory for this run: a second run on the same
/// directory would clear the first one's data under its collector.
pub(crate) fn lock_dir(dir: &Path) -> Result<std::fs::File, BenchError> {
    let path = dir.join(".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| BenchError::io(format!("opening {}", path.display()), e))?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(|_| {
        BenchError::Options(format!(
            "another glimpse-bench is using {}; wait for it or give this one its own --dir",
            dir.display()
        ))
    })?;
    Ok(file)
}

/// Reading back a shared store, records received this long before the
/// run's stamp are still looked at (a clock stepped back meanwhile); older
/// days are not read at all.
const SHARED_READ_SLACK_MS: i64 = 3_600_000;

/// Counts the records in the stopped collectors' store for `orgs`, reading
/// it the way export does (decrypting and checking every block): all of
/// them, or with `this_run` only those observed at that stamp (a shared
/// store holds earlier runs' records too), reading the shared control plane
/// without writing to it.
fn count_stored(
    config: &Path,
    paths_base: Option<&Path>,
    orgs: &[OrgId],
    this_run: Option<i64>,
) -> Result<u64, BenchError> {
    let config = collector_process::load_config(config, paths_base)?;
    let clock = Arc::new(glimpse_common::clock::SystemClock);
    let store = match this_run {
        None => glimpse_collector::service::open_store(&config, clock),
        Some(_) => glimpse_collector::service::open_store_read_only(&config, clock),
    }
    .map_err(|e| BenchError::Collector(format!("opening the store to verify it: {e}")))?;
    let since = this_run.map(|stamp| stamp.saturating_sub(SHARED_READ_SLACK_MS));
    let mut stored = 0u64;
    for org in orgs {
        for kind in [DataKind::Capture, DataKind::Metadata] {
            let problems = store
                .read_with(org, kind, since, None, |r| {
                    if this_run.is_none_or(|stamp| r.record.observed_at_ms == stamp) {
                        stored += 1;
                    }
                })
                .map_err(|e| BenchError::Collector(format!("reading {org} {kind}: {e}")))?;
            if let Some(problem) = problems.first() {
                return Err(BenchError::Collector(format!(
                    "{} damaged places in the store, first: {problem:?}",
                    problems.len()
                )));
            }
        }
    }
    Ok(stored)
}

/// The live progress bar (nothing at all when off or not on a terminal).
struct Progress {
    bar: Option<indicatif::ProgressBar>,
}

impl Progress {
    fn new(on: bool) -> Self {
        Self { bar: on.then(indicatif::ProgressBar::hidden) }
    }

    fn restyle(&self, length: u64, template: &str) {
        if let Some(bar) = &self.bar {
            bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
            bar.set_length(length);
            bar.set_position(0);
            if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
                bar.set_style(style.progress_chars("=> "));
            }
        }
    }

    fn start_connecting(&self, devices: u64) {
        self.restyle(devices, "connecting [{bar:30}] {pos}/{len} devices {msg}");
    }

    fn connecting(&self, connected: u64, errors: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(connected + errors);
            bar.set_message(if errors > 0 { format!("({errors} failed)") } else { String::new() });
        }
    }

    fn start_streaming(&self, seconds: f64) {
        self.restyle((seconds * 10.0) as u64, "streaming  [{bar:30}] {elapsed} {msg}");
    }

    fn streaming(&self, elapsed: Duration, tally: &Tally) {
        if let Some(bar) = &self.bar {
            let acked = tally.acked.load(Ordering::Relaxed);
            let rate = acked as f64 / elapsed.as_secs_f64().max(1e-9);
            bar.set_position((elapsed.as_secs_f64() * 10.0) as u64);
            bar.set_message(format!(
                "{acked} records acked, {:.0} k/s, {} connected, {} errors",
                rate / 1e3,
                tally.connected.load(Ordering::Relaxed),
                tally.errors.load(Ordering::Relaxed)
            ));
        }
    }

    fn draining(&self) {
        if let Some(bar) = &self.bar {
            bar.set_message("waiting for the last acknowledgements");
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> LoadOptions {
        LoadOptions {
            devices: 10,
            seconds: 1.0,
            records: RecordMix::Capture,
            batch: 256,
            window: 4,
            rate: None,
            transport: Transport::Tls,
            orgs: 1,
            connect_concurrency: 64,
            dir: PathBuf::from("/nonexistent"),
            remote: None,
            backend_config: None,
            collectors: 1,
            measure: Vec::new(),
            progress: false,
        }
    }

    fn backends(text: &str) -> Backends {
        Backends::parse(Path::new("/b/backends.toml"), text.to_owned(), PathBuf::from("/b")).unwrap()
    }

    const POSTGRES: &str = "[control]\nbackend = \"postgres\"\n[control.postgres]\nurl = \"host=127.0.0.1 user=g dbname=g\"\ntls = \"disable\"\n";
    const S3: &str = "[storage]\nbackend = \"s3\"\n[storage.s3]\nendpoint = \"http://127.0.0.1:3900\"\nregion = \"garage\"\nbucket = \"bench\"\nallow_http = true\n";

    #[test]
    fn the_default_is_one_collector_on_its_own_store() {
        assert!(options().check().is_ok());
        assert!(check_topology(1, None).is_ok());
    }

    #[test]
    fn no_collector_at_all_is_refused() {
        let e = LoadOptions { collectors: 0, ..options() }.check().unwrap_err().to_string();
        assert!(e.contains("--collectors must be at least 1"), "{e}");
    }

    #[test]
    fn several_collectors_need_both_backends_shared() {
        let e = check_topology(2, None).unwrap_err().to_string();
        assert!(e.contains("--collectors 2 needs shared backends") && e.contains("no --backend-config"), "{e}");
        let e = check_topology(3, Some(&backends(POSTGRES))).unwrap_err().to_string();
        assert!(e.contains("given: control postgres, segments local"), "{e}");
        assert!(check_topology(2, Some(&backends(&format!("{POSTGRES}{S3}")))).is_ok());
        // One collector may use either backend alone.
        assert!(check_topology(1, Some(&backends(POSTGRES))).is_ok());
    }

    #[test]
    fn a_running_collector_is_not_started_or_multiplied() {
        let remote = RemoteCollector {
            address: "127.0.0.1:7443".into(),
            pki: PathBuf::from("pki"),
            pid: None,
            server_name: "localhost".into(),
            ssh_fingerprint: None,
        };
        for o in [
            LoadOptions { remote: Some(remote.clone()), collectors: 2, ..options() },
            LoadOptions { remote: Some(remote.clone()), backend_config: Some("b.toml".into()), ..options() },
        ] {
            let e = o.check().unwrap_err().to_string();
            assert!(e.contains("not with --collector"), "{e}");
        }
        assert!(LoadOptions { remote: Some(remote), ..options() }.check().is_ok());
    }

    #[test]
    fn process_samples_are_all_or_nothing() {
        assert_eq!(sample_all(&[]), None);
        let me = std::process::id();
        assert_eq!(sample_all(&[me, me]).map(|s| s.len()), Some(2));
        // A process id that cannot exist (above the kernel's pid_max).
        assert_eq!(sample_all(&[me, u32::MAX]), None);
        let s = ProcessSample { cpu_seconds: 1.5, peak_rss_kib: 1 };
        assert_eq!(cpu_seconds(&[s, s]), 3.0);
    }

    #[test]
    fn processes_to_measure_are_named_by_pid() {
        let m: Measured = "postgres=4242".parse().unwrap();
        assert_eq!(m, Measured { name: "postgres".into(), pid: 4242 });
        for bad in ["postgres", "=1", "pg=0", "pg=-1", "pg=x", "p g=1", "pg=1=2", &format!("{}=1", "a".repeat(33))] {
            assert!(bad.parse::<Measured>().is_err(), "{bad}");
        }
    }
}
