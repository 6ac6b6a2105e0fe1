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

use collector_process::{CollectorProcess, ProcessSample};
use device::{Pace, Tally};
use fleet::{Fleet, Link};
use report::{Latency, Machine, ProcessFigures, Report};

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
    /// A running collector; `None`: start one.
    pub remote: Option<RemoteCollector>,
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
        Ok(())
    }

    /// Time between one device's batches at the set rate.
    fn interval(&self) -> Option<Duration> {
        self.rate.map(|rate| Duration::from_secs_f64(self.batch as f64 * self.devices as f64 / rate))
    }
}

/// The collector a run talks to.
enum Target {
    Own { process: CollectorProcess, config: PathBuf },
    Remote(RemoteCollector),
}

impl Target {
    fn pid(&self) -> Option<u32> {
        match self {
            Target::Own { process, .. } => Some(process.pid()),
            Target::Remote(remote) => remote.pid,
        }
    }
}

fn sample_opt(pid: Option<u32>) -> Option<ProcessSample> {
    pid.and_then(collector_process::sample)
}

/// Runs the load described by `options` and reports what it measured.
pub async fn run(options: &LoadOptions) -> Result<Report, BenchError> {
    options.check()?;
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
    let (target, link) = start_target(options, &dir, &prepared, &orgs)?;
    let state = dir.join("state");
    let configs = prepared
        .devices
        .iter()
        .map(|id| prepared.agent_config(id, &link, &state).map(|c| (id.clone(), c)))
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
    let collector_start = sample_opt(target.pid());
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
    let collector_connected = sample_opt(target.pid());

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
    let collector_end = sample_opt(target.pid());
    let generator_end = collector_process::sample(me).unwrap_or_default();
    progress.finish();

    // Verify phase.
    let records_sent = tally.sent.load(Ordering::Relaxed);
    let records_acked = tally.acked.load(Ordering::Relaxed);
    let records_stored = match target {
        Target::Own { process, config } => {
            process.stop()?;
            let orgs = orgs.clone();
            Some(
                tokio::task::spawn_blocking(move || count_stored(&config, &orgs))
                    .await
                    .map_err(|e| BenchError::Collector(e.to_string()))??,
            )
        }
        Target::Remote(_) => None,
    };
    let handshake_cpu = match (collector_start, collector_connected) {
        (Some(a), Some(b)) if b.cpu_seconds > a.cpu_seconds => {
            Some(connections as f64 / (b.cpu_seconds - a.cpu_seconds))
        }
        _ => None,
    };
    Ok(Report {
        target: "glimpse".into(),
        transport: match options.transport {
            Transport::Tls => "tls".into(),
            Transport::Ssh => "ssh".into(),
        },
        records: options.records.name().into(),
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
        collector: match (collector_connected, collector_end) {
            (Some(a), Some(b)) => Some(ProcessFigures::between(a, b, seconds)),
            _ => None,
        },
        generator: ProcessFigures::between(generator_start, generator_end, connect_seconds + seconds),
        errors: tally.errors.load(Ordering::Relaxed),
        refusals: tally.refusals.load(Ordering::Relaxed),
        devices_without_capture_consent: tally.without_consent.load(Ordering::Relaxed),
        first_error: tally.first_error(),
        machine: Machine::this(),
    })
}

/// Starts the bench's own collector (fresh data directory, this fleet's
/// registrations, capture consent for the bench organisations), or readies
/// a running one (SIGHUP so it imports the fleet).
fn start_target(
    options: &LoadOptions,
    dir: &Path,
    fleet: &Fleet,
    orgs: &[OrgId],
) -> Result<(Target, Link), BenchError> {
    match &options.remote {
        None => {
            let data = dir.join("data");
            if data.exists() {
                std::fs::remove_dir_all(&data)
                    .map_err(|e| BenchError::io(format!("clearing {}", data.display()), e))?;
            }
            let config =
                collector_process::write_config(dir, &fleet.pki, options.devices.saturating_add(64).max(20_000))?;
            let process = CollectorProcess::spawn(&config, orgs)?;
            let link = match options.transport {
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
            };
            Ok((Target::Own { process, config }, link))
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
            Ok((Target::Remote(remote.clone()), link))
        }
    }
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

/// Counts every record in the stopped collector's store for `orgs`, reading
/// it the way export does (decrypting and checking every block).
fn count_stored(config: &Path, orgs: &[OrgId]) -> Result<u64, BenchError> {
    let config =
        glimpse_collector::config::CollectorConfig::load(config).map_err(|e| BenchError::Collector(e.to_string()))?;
    let store = glimpse_collector::service::open_store(&config, Arc::new(glimpse_common::clock::SystemClock))
        .map_err(|e| BenchError::Collector(format!("opening the store to verify it: {e}")))?;
    let mut stored = 0u64;
    for org in orgs {
        for kind in [DataKind::Capture, DataKind::Metadata] {
            let problems = store
                .read_with(org, kind, None, None, |_| stored += 1)
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
