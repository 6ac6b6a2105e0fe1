//! The `glimpse-collector` command line: the daemon ([`serve`]), the
//! offline tools that work on a stopped collector's data directory
//! ([`offline`]), and the admin client commands ([`admin`]).
//!
//! Business logic lives in the libraries (`glimpse-store`, the service,
//! `glimpse-admin-client`); this module parses arguments, calls them and
//! prints.

mod admin;
mod check;
pub mod exit;
mod offline;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use glimpse_common::clock::{Clock, SystemClock};

use clap::{Parser, Subcommand};
use tracing::error;

use glimpse_common::identity::OrgId;
use glimpse_common::record::DataKind;

use admin::{AdminArgs, AdminCommand, CaptureCommand};

/// Glimpse collector: receives device telemetry from Glimpse agents over
/// mutually-authenticated TLS (access points) and SSH with registered
/// public keys (switches and gateways, `[ssh]` in collector.toml), stores each organisation's data encrypted
/// with that organisation's own AES-256 key, and deletes it when its
/// retention window ends (packet captures 7 days, everything else 60).
#[derive(Parser)]
#[command(name = "glimpse-collector", version, long_version = glimpse_files::long_version!(), about, long_about, after_help = exit::HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    log: glimpse_files::logging::LogArgs,
}

/// The command line's definition, for the man page and shell completions
/// (`glimpse-docgen`).
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

/// Which records an export takes, and where it resumes.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ExportSelection {
    /// Only records received at or after this time (RFC 3339 or YYYY-MM-DD, UTC).
    #[arg(long)]
    pub(crate) since: Option<String>,
    /// Only records received before this time (RFC 3339 or YYYY-MM-DD, UTC).
    #[arg(long)]
    pub(crate) until: Option<String>,
    /// Only records of this device; repeat for several (at most 256).
    #[arg(long = "device", value_name = "DEVICE")]
    pub(crate) devices: Vec<glimpse_common::identity::DeviceId>,
    /// Captures only: packets whose headers match this filter, e.g.
    /// 'host 10.0.0.5 and udp port 53' (language in docs/CAPTURE.md).
    #[arg(long, value_name = "EXPRESSION")]
    pub(crate) filter: Option<String>,
    /// Continue right after the record this cursor names (the `cursor` of
    /// the last JSON line received, or `cursor=` in a packet's comment).
    #[arg(long)]
    pub(crate) cursor: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the collector service. SIGTERM/SIGINT finish in-flight batches
    /// and exit; SIGHUP reloads certificates, CRL and device registrations.
    Serve {
        /// Path to collector.toml.
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
        /// Trust the clock for retention although it jumped forward or is
        /// behind stored data (see `sweep --accept-clock`).
        #[arg(long)]
        accept_clock: bool,
    },
    /// Print an organisation's stored records, decrypted, as JSON lines.
    ///
    /// With an admin certificate (--admin-cert/--admin-key) or an API token
    /// (GLIMPSE_API_TOKEN), through the running collector's admin API
    /// (authorised and audited); when the collector does not answer, or
    /// without a credential, reads the store directly, changing nothing
    /// (works on a stopped collector, a read-only copy, and while the
    /// collector runs: then from the key store's verified copy).
    /// Exits 65 when damaged regions or missing data were skipped.
    #[command(after_help = exit::HELP)]
    Export {
        /// Path to collector.toml.
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
        /// Organisation to export.
        #[arg(long)]
        org: OrgId,
        /// Kind of data: metadata or capture.
        #[arg(long, default_value = "metadata")]
        kind: DataKind,
        #[command(flatten)]
        select: ExportSelection,
        /// Output format: json (JSON lines, any kind) or pcap (pcapng, captures
        /// only: open it in Wireshark or tshark).
        #[arg(long, default_value = "json", value_parser = ["json", "pcap"])]
        format: String,
        #[command(flatten)]
        through: offline::ExportThrough,
    },
    /// Check collector.toml and every file it names, changing nothing.
    ///
    /// The TLS certificate, key (matching the certificate, mode 0600) and CA,
    /// the CRL, the master key, the data and PKI directories, the SSH host
    /// key, the listen addresses. Prints every problem at once; exits 0 when
    /// there is none, 78 otherwise.
    #[command(after_help = exit::HELP)]
    Check {
        /// Path to collector.toml.
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
    },
    /// Ask a connected device for a header-only packet capture, or stop one
    /// (through the collector's admin API, with an admin certificate).
    Capture {
        #[command(subcommand)]
        action: CaptureCommand,
    },
    /// Organisation decisions and the audit log, through the admin API:
    /// capture consent, support access, status, audit verification.
    Admin {
        #[command(subcommand)]
        action: AdminCommand,
    },
    /// List an organisation's devices connected now (admin API).
    Devices {
        #[command(flatten)]
        admin: AdminArgs,
        /// Organisation.
        #[arg(long)]
        org: OrgId,
        /// Every registered device, connected or not, with its transport and
        /// cipher, peer, agent version, last record, spool drops and
        /// certificate expiry (times in UTC).
        #[arg(long)]
        long: bool,
    },
    /// Create or upgrade the PostgreSQL control plane's schema
    /// (`[control] backend = "postgres"`): applies, in order and each in
    /// one transaction, the schema versions the database lacks. Safe to run
    /// again, and from several hosts at once (one applies, the others wait
    /// and find nothing to do). Run it before starting collectors of a new
    /// version; collectors refuse a database whose schema is older or newer
    /// than theirs. Nothing to do for the embedded control store.
    #[command(after_help = exit::HELP)]
    Migrate {
        /// Path to collector.toml.
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
    },
    /// Print the SSH host key's fingerprint for device configs
    /// (`[ssh] host_key_fingerprint`), creating the key if the collector has
    /// not started with SSH yet.
    SshHostKey {
        /// Path to collector.toml (with an `[ssh]` section).
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
    },
    /// Create a new master key file (mode 0600). Refuses to overwrite.
    MasterKey {
        /// Where to write it.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Delete expired segments now, then exit. Refuses (exit 75) when the
    /// clock is behind stored data or jumped forward more than 3 days
    /// since the last sweep.
    #[command(after_help = exit::HELP)]
    Sweep {
        /// Path to collector.toml.
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
        /// The clock is right: sweep by it and remember it.
        #[arg(long)]
        accept_clock: bool,
    },
    /// Check every segment against the segment catalog and the key store,
    /// changing nothing: reports damaged regions, missing segments and
    /// segments cut short, with their paths and what is missing (exit 65).
    #[command(after_help = exit::HELP)]
    Verify {
        /// Path to collector.toml.
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
        /// Only this organisation.
        #[arg(long)]
        org: Option<OrgId>,
    },
    /// Restore a damaged key store (glimpse.redb) from its verified copy
    /// (glimpse.redb.backup), with the collector stopped. The damaged file
    /// is kept as glimpse.redb.damaged.N; segments are not touched.
    #[command(after_help = exit::HELP)]
    Recover {
        /// Path to collector.toml.
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
    },
    /// Repair what a crash left, as `serve` does at start (torn segment
    /// tails cut, interrupted erasures finished), then exit.
    #[command(after_help = exit::HELP)]
    Repair {
        /// Path to collector.toml.
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
    },
    /// Web console accounts (local sign-in with a password), with the
    /// collector stopped: the first operator's account is made here.
    #[command(after_help = exit::HELP)]
    Account {
        /// Path to collector.toml.
        #[arg(long, short, value_name = "FILE", global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        action: offline::AccountAction,
    },
}

/// The command line: parses arguments, runs the command, and returns the
/// process exit code. `main.rs` is only this call, so that test harnesses
/// can build the same program under another name.
pub fn main() -> ExitCode {
    main_with_clock(Arc::new(SystemClock))
}

/// [`main`] with an injected clock (the test harness's program sets one
/// to reproduce a collector whose clock is wrong).
pub fn main_with_clock(clock: Arc<dyn Clock>) -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => ExitCode::SUCCESS,
                _ => ExitCode::from(exit::USAGE),
            };
        }
    };
    // Export and the admin commands print their own output; keep the log
    // to problems.
    let default_level = match cli.command {
        Command::Export { .. } | Command::Capture { .. } | Command::Devices { .. } | Command::Check { .. } => "warn",
        _ => "info",
    };
    // The daemon's config may set log_level and log_format; a config that
    // does not load is reported by `serve` itself, after the logger starts.
    let log_config = match &cli.command {
        Command::Serve { config, .. } => {
            crate::config::CollectorConfig::load(config).map(|c| c.log).unwrap_or_default()
        }
        _ => glimpse_files::logging::LogConfig::default(),
    };
    glimpse_files::logging::init(&cli.log, &log_config, default_level);
    install_panic_hook();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            error!("cannot start runtime: {e}");
            return ExitCode::from(exit::SOFTWARE);
        }
    };
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| runtime.block_on(run(cli.command, clock))));
    match outcome {
        Ok(Ok(())) => ExitCode::SUCCESS,
        // `export ... | head` closing the pipe early is not an error.
        Ok(Err(e)) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            let code = exit::exit_code(&e);
            if code == exit::OK {
                eprintln!("{e:#}");
            } else {
                eprintln!("error: {e:#}");
            }
            ExitCode::from(code)
        }
        Err(_) => {
            eprintln!("error: internal error (see the panic above); please report it");
            ExitCode::from(exit::SOFTWARE)
        }
    }
}

/// Panics print one line through the log; those the store catches on a
/// damaged file (reported as such) are only logged at debug.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let location = info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_default();
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        // `println!` panics when stdout is a closed pipe (`... | head -1`):
        // the reader has what it wanted, which is no failure. The commands
        // that print pass write errors up instead; this catches any other.
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(i32::from(exit::OK));
        }
        if glimpse_store::control::redb_store::in_guarded_section() {
            tracing::debug!(%location, %message, "panic on damaged data caught");
        } else {
            eprintln!("internal error: panicked at {location}: {message}");
        }
    }));
}

async fn run(command: Command, clock: Arc<dyn Clock>) -> anyhow::Result<()> {
    match command {
        Command::Serve { config, accept_clock } => serve::serve(&config, clock, accept_clock).await,
        Command::Export { config, org, kind, select, format, through } => {
            offline::export(&config, clock, org, kind, &select, &format, through).await
        }
        Command::Check { config } => check::check(&config),
        Command::Capture { action } => admin::run_capture(action).await,
        Command::Admin { action } => admin::run_admin(action).await,
        Command::Devices { admin, org, long } => admin::devices(admin, org, long).await,
        Command::SshHostKey { config } => offline::ssh_host_key(&config),
        Command::Migrate { config } => offline::migrate(&config),
        Command::MasterKey { out } => offline::master_key(&out),
        Command::Sweep { config, accept_clock } => offline::sweep(&config, clock, accept_clock),
        Command::Verify { config, org } => offline::verify(&config, clock, org.as_ref()),
        Command::Recover { config } => offline::recover(&config, clock),
        Command::Repair { config } => offline::repair(&config, clock),
        Command::Account { config, action } => offline::account(config.as_deref(), clock, action),
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            || matches!(
                cause.downcast_ref::<glimpse_store::export::ExportError>(),
                Some(glimpse_store::export::ExportError::Io(io)) if io.kind() == std::io::ErrorKind::BrokenPipe
            )
    })
}
