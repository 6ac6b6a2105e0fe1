//! The `glimpse-collector` command line: the daemon ([`serve`]), the
//! offline tools that work on a stopped collector's data directory
//! ([`offline`]), and the admin client commands ([`admin`]).
//!
//! Business logic lives in the libraries (`glimpse-store`, the service,
//! `glimpse-admin-client`); this module parses arguments, calls them and
//! prints.

mod admin;
mod offline;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

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
#[command(version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the collector service. SIGTERM/SIGINT finish in-flight batches
    /// and exit; SIGHUP reloads certificates, CRL and device registrations.
    Serve {
        /// Path to collector.toml.
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
    },
    /// Print an organisation's stored records, decrypted, as JSON lines.
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
        /// Only records received at or after this time (RFC 3339 or YYYY-MM-DD, UTC).
        #[arg(long)]
        since: Option<String>,
        /// Only records received before this time (RFC 3339 or YYYY-MM-DD, UTC).
        #[arg(long)]
        until: Option<String>,
        /// Output format: json (JSON lines, any kind) or pcap (pcapng, captures
        /// only: open it in Wireshark or tshark).
        #[arg(long, default_value = "json", value_parser = ["json", "pcap"])]
        format: String,
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
    /// Delete expired segments now, then exit.
    Sweep {
        /// Path to collector.toml.
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
    },
}

/// The command line: parses arguments, runs the command, and returns the
/// process exit code. `main.rs` is only this call, so that test harnesses
/// can build the same program under another name.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // Export and the admin commands print their own output; keep the log
    // to problems.
    let default_level = match cli.command {
        Command::Export { .. } | Command::Capture { .. } | Command::Devices { .. } => "warn",
        _ => "info",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            error!("cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        // `export ... | head` closing the pipe early is not an error.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            // 77 (EX_NOPERM): a key file or data directory open to other users.
            if e.downcast_ref::<crate::service::ServiceError>()
                .is_some_and(crate::service::ServiceError::is_permission_refusal)
            {
                ExitCode::from(77)
            } else {
                ExitCode::from(64)
            }
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve { config } => serve::serve(&config).await,
        Command::Export { config, org, kind, since, until, format } => {
            offline::export(&config, org, kind, since.as_deref(), until.as_deref(), &format)
        }
        Command::Capture { action } => admin::run_capture(action).await,
        Command::Admin { action } => admin::run_admin(action).await,
        Command::Devices { admin, org } => admin::devices(admin, org).await,
        Command::SshHostKey { config } => offline::ssh_host_key(&config),
        Command::MasterKey { out } => offline::master_key(&out),
        Command::Sweep { config } => offline::sweep(&config),
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
