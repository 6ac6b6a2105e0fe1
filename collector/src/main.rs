//! `glimpse-collector`: the service, its export tool and the demo.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tracing::{error, info, warn};

use glimpse_collector::config::CollectorConfig;
use glimpse_collector::{demo, export, service, Collector};
use glimpse_common::clock::SystemClock;
use glimpse_common::identity::OrgId;
use glimpse_common::record::DataKind;

/// Glimpse collector: receives device telemetry from Glimpse agents over
/// mutually-authenticated TLS, stores each organisation's data encrypted
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
    /// Run everything on this machine: create certificates and configs,
    /// start a collector and agents on 127.0.0.1, stream, and print what was stored.
    Demo {
        /// Directory for the PKI, configs and data (reused if it exists).
        #[arg(long, default_value = "glimpse-demo")]
        dir: PathBuf,
        /// Number of agents (devices), spread over two organisations.
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=1000))]
        agents: u16,
        /// How long to stream, in seconds.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
        seconds: u64,
        /// Port to listen on (an ephemeral one is used if it is busy).
        #[arg(long, default_value_t = 7443)]
        port: u16,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo and export print their own output; keep the log to problems.
    // A demo host has no device tree or DMI model: worth one line on a
    // device, noise here.
    let default_level = match cli.command {
        Command::Demo { .. } => "warn,glimpse_agent::probe=error",
        Command::Export { .. } => "warn",
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
            ExitCode::from(64)
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve { config } => serve(config).await,
        Command::Export { config, org, kind, since, until, format } => {
            let config = CollectorConfig::load(&config)?;
            let since = since.as_deref().map(export::parse_time).transpose()?;
            let until = until.as_deref().map(export::parse_time).transpose()?;
            let store = service::open_store(&config, Arc::new(SystemClock))?;
            let stdout = std::io::stdout();
            let (records, problems) = if format == "pcap" {
                if kind != DataKind::Capture {
                    anyhow::bail!("--format pcap exports captures: add --kind capture");
                }
                export::export_pcapng(&store, &org, since, until, &mut stdout.lock())?
            } else {
                export::export(&store, &org, kind, since, until, &mut stdout.lock())?
            };
            eprintln!("exported {records} {kind} records for {org}");
            if problems > 0 {
                eprintln!("warning: {problems} damaged segment regions were skipped (see log)");
            }
            Ok(())
        }
        Command::MasterKey { out } => {
            glimpse_collector::keys::MasterKey::generate_file(&out)?;
            println!(
                "wrote a new master key to {} (mode 0600); back it up: without it no data can be read",
                out.display()
            );
            Ok(())
        }
        Command::Sweep { config } => {
            let config = CollectorConfig::load(&config)?;
            let store = service::open_store(&config, Arc::new(SystemClock))?;
            let report = glimpse_collector::retention::sweep(&store)?;
            println!("{report:?}");
            Ok(())
        }
        Command::Demo { dir, agents, seconds, port } => {
            demo::run(demo::DemoOptions { dir, agents: usize::from(agents), seconds, port }).await
        }
    }
}

async fn serve(path: PathBuf) -> anyhow::Result<()> {
    let config = CollectorConfig::load(&path)?;
    let collector = Collector::start(config).await.context("starting collector")?;
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = hangup.recv() => match collector.reload() {
                Ok(()) => info!("reloaded certificates, CRL and registrations"),
                Err(e) => warn!("reload failed, keeping the running configuration: {e}"),
            },
            _ = terminate.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    info!("shutting down: finishing in-flight batches");
    collector.shutdown().await;
    Ok(())
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            || matches!(
                cause.downcast_ref::<export::ExportError>(),
                Some(export::ExportError::Io(io)) if io.kind() == std::io::ErrorKind::BrokenPipe
            )
    })
}
