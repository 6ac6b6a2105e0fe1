//! `glimpse-bench`: how many devices and records per second one collector
//! machine holds. See docs/PERFORMANCE.md.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use glimpse_benches::load::{self, RecordMix, RemoteCollector, Transport};
use glimpse_common::identity::OrgId;

/// The collector's allocator (see `glimpse-collector`'s main): the bench's
/// collector process is this binary, and must allocate as the real one does.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Load tool for sizing a Glimpse collector: simulates devices, each with
/// its own certificate and mutually-authenticated connection, streams
/// records into a collector and reports records/s, MiB/s, acknowledgement
/// latency, collector CPU and memory, and whether everything sent was stored.
#[derive(Debug, Parser)]
#[command(name = "glimpse-bench", version, long_version = glimpse_files::long_version!())]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    log: glimpse_files::logging::LogArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Stream into a collector: one it starts on this machine (default), or
    /// a running one (--collector).
    ///
    /// Examples:
    ///   glimpse-bench run --devices 100 --seconds 10
    ///   glimpse-bench run --devices 10000 --rate 10000 --batch 1 --seconds 30   (a big fleet, 1 record/s each)
    ///   glimpse-bench run --devices 2000 --seconds 0                          (handshake rate: the fleet reconnecting)
    ///   glimpse-bench run --backend-config backends.toml --collectors 2       (PostgreSQL and S3, two collectors)
    #[command(verbatim_doc_comment)]
    Run(RunArgs),
    /// Feed the same load to a syslog receiver over mutual TLS (RFC 5425),
    /// counting what it writes to its output file; for the comparison with
    /// rsyslog in scripts/bench-compare.sh.
    Syslog(SyslogArgs),
    /// Measure rustls bulk throughput over one loopback connection with the
    /// collector's TLS settings: the ceiling for ingest over TLS.
    TlsBulk(BulkArgs),
    /// (Internal) the collector process `run` starts.
    #[command(hide = true)]
    Collector {
        /// The collector config `run` wrote.
        #[arg(long)]
        config: PathBuf,
        /// The directory the config's relative paths are resolved against
        /// (the --backend-config file's; the bench's own paths are absolute).
        #[arg(long)]
        paths_base: Option<PathBuf>,
        /// Organisations given capture consent at start.
        #[arg(long)]
        consent: Vec<String>,
    },
}

#[derive(Debug, Args)]
struct Load {
    /// Simulated devices, each with its own certificate and connection.
    #[arg(long, default_value_t = 100)]
    devices: usize,
    /// Seconds of streaming after every device has connected (0: just
    /// connect, to measure handshakes).
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Which records: capture headers (~100 bytes), metadata (~320 bytes) or mixed.
    #[arg(long, value_enum, default_value_t = RecordMix::Capture)]
    records: RecordMix,
    /// Records per batch (one frame, one acknowledgement).
    #[arg(long, default_value_t = 256)]
    batch: usize,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct RunArgs {
    #[command(flatten)]
    load: Load,
    /// Batches a device may have unacknowledged.
    #[arg(long, default_value_t = 4)]
    window: usize,
    /// Records per second for the whole fleet (default: as fast as the
    /// collector acknowledges).
    #[arg(long)]
    rate: Option<f64>,
    /// tls: access points (mutual TLS and shared key); ssh: switches.
    #[arg(long, value_enum, default_value_t = Transport::Tls)]
    transport: Transport,
    /// Organisations to spread the devices over (each has its own key and segments).
    #[arg(long, default_value_t = 1)]
    orgs: usize,
    /// Handshakes in progress at once while the fleet connects.
    #[arg(long, default_value_t = 64)]
    connect_concurrency: usize,
    /// Where the PKI (kept between runs: issuing 10,000 devices takes a
    /// while), the collector's config and its data go.
    #[arg(long, env = "GLIMPSE_BENCH_DIR")]
    dir: Option<PathBuf>,
    /// The [control] and [storage] tables (with their sub-tables, as in
    /// collector.toml) for the bench's own collectors: e.g. the control
    /// plane in PostgreSQL and segments in an S3-compatible store. Relative
    /// paths in it are resolved against its directory. The schema must be
    /// migrated (glimpse-collector migrate); keep the same --dir for runs
    /// on one database (its master.key wraps the organisations' keys there).
    #[arg(long, value_name = "FILE")]
    backend_config: Option<PathBuf>,
    /// Collector processes to start, sharing the backends and the master
    /// key, each with its own data directory and ports; the devices are
    /// spread round-robin over them. More than one needs --backend-config
    /// with control in PostgreSQL and storage in S3.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    collectors: u16,
    /// Another process on this machine to measure while the fleet streams,
    /// with its children: its CPU is reported under NAME (e.g.
    /// postgres=PID of the postmaster, garage=PID). May be repeated.
    #[arg(long, value_name = "NAME=PID")]
    measure: Vec<load::Measured>,
    /// A running collector's address, instead of starting one. Needs --pki;
    /// stored = sent is then not checked (the store is the collector's).
    #[arg(long, requires = "pki", conflicts_with_all = ["backend_config", "collectors"])]
    collector: Option<String>,
    /// The running collector's pki_dir (with the CA key): bench devices are
    /// issued there, and the collector imports them on SIGHUP.
    #[arg(long)]
    pki: Option<PathBuf>,
    /// The running collector's process id: its CPU and memory are measured,
    /// and it is sent SIGHUP to import the bench devices.
    #[arg(long)]
    collector_pid: Option<u32>,
    /// The name in the running collector's certificate.
    #[arg(long, default_value = "localhost")]
    server_name: String,
    /// The running collector's SSH host key fingerprint (--transport ssh).
    #[arg(long)]
    ssh_fingerprint: Option<String>,
}

#[derive(Debug, Args)]
struct SyslogArgs {
    #[command(flatten)]
    load: Load,
    /// The receiver's address.
    #[arg(long)]
    target: String,
    /// The name in the receiver's certificate.
    #[arg(long, default_value = "localhost")]
    server_name: String,
    /// CA certificate (PEM) that signed the receiver's certificate.
    #[arg(long)]
    ca: PathBuf,
    /// Client certificate (PEM) the receiver checks.
    #[arg(long)]
    cert: PathBuf,
    /// Its private key (PEM).
    #[arg(long)]
    key: PathBuf,
    /// The file the receiver writes, one line per message.
    #[arg(long)]
    output_file: PathBuf,
    /// The receiver's process id, for its CPU and memory figures.
    #[arg(long)]
    collector_pid: Option<u32>,
}

#[derive(Debug, Args)]
struct BulkArgs {
    /// Seconds to stream.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Where the bench PKI is kept.
    #[arg(long, env = "GLIMPSE_BENCH_DIR")]
    dir: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn default_dir() -> PathBuf {
    std::env::temp_dir().join("glimpse-bench")
}

fn print<T: serde::Serialize>(json: bool, value: &T, table: impl FnOnce() -> String) -> anyhow::Result<()> {
    if json {
        glimpse_files::outln!("{}", serde_json::to_string_pretty(value)?)?;
    } else {
        glimpse_files::out!("{}", table())?;
    }
    Ok(())
}

/// Lifts this process's open-file limit to its hard limit (the collector
/// process inherits it): a fleet of 10,000 devices is 10,000 sockets on each
/// side, and many systems start programs with a soft limit of 1024.
fn raise_open_file_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        let _ = setrlimit(Resource::Nofile, limit);
    }
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // `run --json | head`: the reader closed the pipe, having what it wanted.
        Err(e) if glimpse_files::is_broken_pipe(e.as_ref()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    raise_open_file_limit();
    glimpse_files::logging::init(&cli.log, &glimpse_files::logging::LogConfig::default(), "error");
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        match cli.command {
            Command::Run(args) => {
                let options = load::LoadOptions {
                    devices: args.load.devices,
                    seconds: args.load.seconds,
                    records: args.load.records,
                    batch: args.load.batch,
                    window: args.window,
                    rate: args.rate,
                    transport: args.transport,
                    orgs: args.orgs,
                    connect_concurrency: args.connect_concurrency,
                    dir: args.dir.unwrap_or_else(default_dir),
                    remote: match (args.collector, args.pki) {
                        (Some(address), Some(pki)) => Some(RemoteCollector {
                            address,
                            pki,
                            pid: args.collector_pid,
                            server_name: args.server_name,
                            ssh_fingerprint: args.ssh_fingerprint,
                        }),
                        _ => None,
                    },
                    backend_config: args.backend_config,
                    collectors: usize::from(args.collectors),
                    measure: args.measure,
                    progress: !args.load.json,
                };
                let report = load::run(&options).await?;
                print(args.load.json, &report, || report.table())?;
                if report.stored_equals_sent == Some(false) {
                    anyhow::bail!("stored != sent");
                }
                Ok(())
            }
            Command::Syslog(args) => {
                let options = load::syslog::SyslogOptions {
                    target: args.target,
                    server_name: args.server_name,
                    ca: args.ca,
                    cert: args.cert,
                    key: args.key,
                    devices: args.load.devices,
                    seconds: args.load.seconds,
                    records: args.load.records,
                    batch: args.load.batch,
                    output_file: args.output_file,
                    receiver_pid: args.collector_pid,
                };
                let report = load::syslog::run(&options).await?;
                print(args.load.json, &report, || report.table())
            }
            Command::TlsBulk(args) => {
                let report = load::bulk::run(&args.dir.unwrap_or_else(default_dir), args.seconds).await?;
                print(args.json, &report, || {
                    format!(
                        "rustls over loopback: {:.0} MiB/s ({} bytes in {:.1} s, {})\n",
                        report.mib_per_sec, report.bytes, report.seconds, report.cipher_suite
                    )
                })
            }
            Command::Collector { config, paths_base, consent } => {
                let orgs = consent.into_iter().map(OrgId::new).collect::<Result<Vec<_>, _>>()?;
                load::collector_process::serve(&config, paths_base.as_deref(), &orgs)
                    .await
                    .context("glimpse-bench collector")
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_args(args: &[&str]) -> Result<RunArgs, clap::Error> {
        let cli = Cli::try_parse_from(["glimpse-bench", "run"].iter().chain(args))?;
        match cli.command {
            Command::Run(run) => Ok(run),
            other => panic!("not run: {other:?}"),
        }
    }

    #[test]
    fn one_collector_on_its_own_store_by_default() {
        let run = run_args(&[]).unwrap();
        assert_eq!((run.collectors, run.backend_config), (1, None));
    }

    #[test]
    fn backend_config_and_collectors_parse() {
        let run = run_args(&["--backend-config", "b.toml", "--collectors", "2"]).unwrap();
        assert_eq!(run.collectors, 2);
        assert_eq!(run.backend_config.as_deref(), Some(std::path::Path::new("b.toml")));
    }

    #[test]
    fn processes_to_measure_repeat() {
        let run = run_args(&["--measure", "postgres=10", "--measure", "garage=11"]).unwrap();
        let names: Vec<(&str, u32)> = run.measure.iter().map(|m| (m.name.as_str(), m.pid)).collect();
        assert_eq!(names, [("postgres", 10), ("garage", 11)]);
        assert!(run_args(&["--measure", "postgres"]).is_err());
    }

    #[test]
    fn collector_counts_are_bounded() {
        for bad in ["0", "65", "-1", "two"] {
            assert!(run_args(&["--collectors", bad]).is_err(), "{bad}");
        }
        assert_eq!(run_args(&["--collectors", "64"]).unwrap().collectors, 64);
    }

    #[test]
    fn a_running_collector_excludes_starting_collectors() {
        let remote = ["--collector", "127.0.0.1:7443", "--pki", "pki"];
        assert!(run_args(&remote).is_ok());
        for extra in [["--collectors", "2"], ["--backend-config", "b.toml"]] {
            let args: Vec<&str> = remote.iter().chain(&extra).copied().collect();
            let e = run_args(&args).unwrap_err();
            assert_eq!(e.kind(), clap::error::ErrorKind::ArgumentConflict, "{e}");
        }
    }
}
