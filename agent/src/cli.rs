//! The `glimpse-agent` command line: the device daemon.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tracing::{error, info, warn};

use crate::{AgentConfig, AgentHandle};

/// Glimpse agent: collects this device's metadata (hostname, OS, model,
/// interfaces, addresses and counters) and streams it to a Glimpse collector
/// over mutually-authenticated TLS (access points) or SSH with a pinned
/// host key (switches and gateways; `transport = "ssh"` in [collector]).
/// No user traffic or payload ever leaves the device.
/// The exit codes, for `--help`.
const EXIT_HELP: &str = "\
Exit status:
  0   success
  64  bad usage (arguments, options)
  69  the collector cannot be reached (replay)
  70  internal error
  74  input/output error
  77  permission denied: a refusal by the collector, a file that cannot be read
  78  configuration error: agent.toml, certificates, keys";

#[derive(Parser)]
#[command(name = "glimpse-agent", version, long_version = glimpse_files::long_version!(), about, long_about, after_help = EXIT_HELP)]
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

#[derive(Subcommand)]
enum Command {
    /// Run the daemon. SIGTERM/SIGINT flush queued records and exit;
    /// SIGHUP reloads the config file and credentials (certificate, key and
    /// shared key, or SSH key).
    Run {
        /// Path to agent.toml (device identity, collector addresses, TLS or SSH files).
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
    },
    /// Send a pcap or pcapng file's packets to the collector through the
    /// same header-only truncation and transport as a live capture (for lab
    /// replays). Refused unless the organisation has given capture consent
    /// (the collector says so on connecting).
    Replay {
        /// Path to agent.toml.
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
        /// The capture file to replay.
        #[arg(long, value_name = "FILE")]
        pcap: PathBuf,
        /// Interface name to record the packets under.
        #[arg(long, default_value = "replay")]
        interface: String,
    },
    /// Check a config file and its TLS files, print what it says, and exit.
    Check {
        /// Path to agent.toml.
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
    },
    /// Write agent.toml from OpenWrt's UCI configuration (/etc/config/glimpse),
    /// as the init script does at every start and reload. The result is
    /// checked by the agent's config loader first: on any problem (each one
    /// named, with its line) nothing is written and the exit status is 78.
    Config {
        /// The UCI file to read.
        #[arg(long, value_name = "FILE")]
        from_uci: PathBuf,
        /// Where to write agent.toml (replaced atomically); standard output
        /// if not given.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Collect metadata once and print it as JSON (nothing is sent).
    Probe {
        /// Root of the filesystem to read (default `/`).
        #[arg(long, default_value = "/")]
        sysroot: PathBuf,
    },
    /// Write a diagnostic bundle for a support case: the agent's version
    /// and build, the device's model and serial number where it has them,
    /// the configuration with secrets replaced, the spool's state, and
    /// which probes and tools work now (one collection is run; nothing is
    /// sent). JSON, to the file given (created readable by its owner only)
    /// or standard output. The daemon's own log lines are in the system log
    /// (`logread`, `journalctl -u glimpse-agent`); a bundle requested
    /// through the collector includes them.
    Diag {
        /// Path to agent.toml.
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
        /// Where to write the bundle; standard output if not given.
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Run two collections as the daemon would (its device kind, probes and
    /// tools) and print every record of the second as a JSON line: what the
    /// device reports, including interval counters. Nothing is sent.
    Collect {
        /// Path to agent.toml.
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
        /// Seconds between the two collections.
        #[arg(long, default_value_t = 1.0)]
        interval_secs: f64,
    },
}

/// The command line: parses arguments, runs the command, and returns the
/// process exit code. `main.rs` is only this call, so that test harnesses
/// can build the same program under another name.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { ExitCode::from(64) } else { ExitCode::SUCCESS };
        }
    };
    // The daemon's agent.toml may set log_level and log_format; one that
    // does not load is reported by `run` itself, once the logger runs.
    let log_config = match &cli.command {
        Command::Run { config } => AgentConfig::load(config).map(|c| c.log).unwrap_or_default(),
        _ => glimpse_files::logging::LogConfig::default(),
    };
    // No colour (the agent is built without it): device logs go to syslog
    // or the journal.
    // The daemon keeps its newest lines for diagnostic bundles.
    let recent = matches!(cli.command, Command::Run { .. }).then(|| {
        let recent = glimpse_files::logging::RecentLines::new(crate::diag::KEPT_LOG_LINES);
        crate::diag::keep_recent_lines(recent.clone());
        recent
    });
    glimpse_files::logging::init_keeping(&cli.log, &log_config, "info", recent);
    let result = match cli.command {
        Command::Run { config } => run(config),
        Command::Check { config } => check(config),
        Command::Replay { config, pcap, interface } => replay(config, pcap, interface),
        Command::Probe { sysroot } => probe(sysroot),
        Command::Config { from_uci, out } => config_from_uci(&from_uci, out.as_deref()),
        Command::Collect { config, interval_secs } => collect(config, interval_secs),
        Command::Diag { config, output } => diag(config, output.as_deref()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // `probe | head -1`: the reader closed the pipe, having what it wanted.
        Err(e) if glimpse_files::is_broken_pipe(e.as_ref()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            ExitCode::from(exit_code(&e))
        }
    }
}

/// The sysexits code of a failure (see [`EXIT_HELP`]). The commands fail
/// at start, on their config and credentials, unless a cause says otherwise.
fn exit_code(e: &anyhow::Error) -> u8 {
    use crate::transport::TransportError;
    // A key file open to other users: refused before anything else is read.
    let loose_key =
        e.downcast_ref::<crate::runtime::AgentError>().and_then(crate::runtime::AgentError::permission_error).is_some()
            || e.downcast_ref::<TransportError>().and_then(TransportError::permission_error).is_some();
    if loose_key {
        return 77;
    }
    for cause in e.chain() {
        if let Some(t) = cause.downcast_ref::<TransportError>() {
            match t {
                TransportError::Connect { .. } | TransportError::Timeout(_) | TransportError::Unresolved(_) => {
                    return 69
                }
                TransportError::Refused { .. } | TransportError::Tls(_) => return 77,
                _ => {}
            }
        }
        if cause.is::<glimpse_common::config::ConfigError>() {
            return 78;
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return if io.kind() == std::io::ErrorKind::PermissionDenied { 77 } else { 74 };
        }
    }
    78
}

fn check(path: PathBuf) -> anyhow::Result<()> {
    let config = AgentConfig::load(&path)?;
    // Each TLS file on its own first, so that one run names every file to
    // fix; one problem keeps its own exit code (77 for a key open to others).
    if let crate::config::TransportSecurity::Tls(tls) = &config.security {
        use crate::transport::TransportError;
        let mut problems: Vec<TransportError> = Vec::new();
        for cert in [&tls.ca_path, &tls.cert_path] {
            problems.extend(glimpse_files::load_certs(cert).err().map(TransportError::from));
        }
        problems.extend(glimpse_files::load_key(&tls.key_path).err().map(TransportError::from));
        problems.extend(crate::transport::connection::load_shared_key(&tls.shared_key_path).err());
        if problems.len() > 1 {
            let problems = problems.iter().map(|e| format!("{e:#}")).collect();
            return Err(glimpse_common::config::ConfigError::Invalid { path, problems }.into());
        }
        if let Some(problem) = problems.pop() {
            return Err(problem.into());
        }
    }
    crate::transport::Credentials::load(&config)?;
    let how = match &config.security {
        crate::config::TransportSecurity::Tls(tls) => match &tls.server_name {
            Some(name) => format!("TLS, server name {name}"),
            None if config.collectors.len() == 1 => format!("TLS, server name {}", config.collectors[0].host()),
            None => "TLS, each collector's server name its host".to_owned(),
        },
        crate::config::TransportSecurity::Ssh(ssh) => {
            format!("SSH as {}, host key {}", ssh.user, ssh.host_key_fingerprint)
        }
    };
    glimpse_files::outln!(
        "ok: {} -> {} ({how}), every {:?}, cipher preference {:?}",
        config.identity,
        config.collectors.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
        config.interval,
        config.cipher_preference
    )?;
    Ok(())
}

fn config_from_uci(uci: &std::path::Path, out: Option<&std::path::Path>) -> anyhow::Result<()> {
    use glimpse_common::config::ConfigError;
    let text = glimpse_files::read_config_text(uci, crate::uci::MAX_UCI_BYTES as u64)?;
    let invalid = |problems: Vec<String>| ConfigError::Invalid { path: uci.to_owned(), problems };
    let sections = crate::uci::parse(&text).map_err(|e| invalid(vec![e.to_string()]))?;
    let toml = crate::uci::to_toml(&sections, &uci.display().to_string()).map_err(invalid)?;
    // Relative paths resolve against agent.toml's directory, as `run` will.
    let target = out.unwrap_or(uci);
    AgentConfig::parse(&toml, target, glimpse_common::config::config_base(target))?;
    let Some(out) = out else {
        return Ok(glimpse_files::out!("{toml}")?);
    };
    // Beside the target and renamed over it: `run` never reads half a file.
    let tmp = out.with_extension(format!("tmp-{}", std::process::id()));
    let written = std::fs::write(&tmp, &toml).and_then(|()| std::fs::rename(&tmp, out));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.with_context(|| format!("writing {}", out.display()))
}

fn replay(path: PathBuf, pcap: PathBuf, interface: String) -> anyhow::Result<()> {
    let config = AgentConfig::load(&path)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting runtime")?;
    let report = runtime.block_on(crate::replay::replay(&config, &pcap, &interface))?;
    glimpse_files::outln!(
        "replayed {} of {} packets: {} header bytes kept, {} payload bytes cut on the device; {} records in {} batches acknowledged",
        report.tally.packets_kept,
        report.tally.packets_seen,
        report.tally.header_bytes,
        report.tally.bytes_cut,
        report.records,
        report.batches
    )?;
    Ok(())
}

fn probe(sysroot: PathBuf) -> anyhow::Result<()> {
    let metadata = crate::probe::HostProbe::new(sysroot).collect();
    glimpse_files::outln!("{}", pretty_json(&serde_json::to_string(&metadata)?))?;
    Ok(())
}

fn diag(path: PathBuf, output: Option<&std::path::Path>) -> anyhow::Result<()> {
    let config = AgentConfig::load(&path)?;
    let bundle = crate::diag::gather(&config, crate::diag::DaemonState::default());
    let json = pretty_json(&serde_json::to_string(&bundle)?);
    match output {
        None => glimpse_files::outln!("{json}")?,
        Some(file) => {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            // The configuration is in it: owner only, and never over
            // another file's contents by surprise.
            let mut out = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(file)
                .with_context(|| format!("creating {}", file.display()))?;
            out.write_all(json.as_bytes())
                .and_then(|()| out.write_all(b"\n"))
                .and_then(|()| out.sync_all())
                .with_context(|| format!("writing {}", file.display()))?;
            info!(bundle = %file.display(), checks = bundle.checks.len(), "diagnostic bundle written");
        }
    }
    Ok(())
}

fn collect(path: PathBuf, interval_secs: f64) -> anyhow::Result<()> {
    use glimpse_common::clock::{Clock, SystemClock};
    let config = AgentConfig::load(&path)?;
    anyhow::ensure!(
        interval_secs.is_finite() && (0.0..=3600.0).contains(&interval_secs),
        "--interval-secs must be 0..=3600"
    );
    let mut reporter = crate::reports::Reporter::new(&config);
    let started = std::time::Instant::now();
    let elapsed_ms = || u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    reporter.collect(elapsed_ms(), SystemClock.now_millis());
    std::thread::sleep(std::time::Duration::from_secs_f64(interval_secs));
    for record in reporter.collect(elapsed_ms(), SystemClock.now_millis()) {
        glimpse_files::outln!("{}", serde_json::to_string(&record)?)?;
    }
    Ok(())
}

fn run(path: PathBuf) -> anyhow::Result<()> {
    let config = AgentConfig::load(&path)?;
    // One thread: an access point has one or two slow cores and other work to do.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting runtime")?;
    runtime.block_on(async move {
        let agent = AgentHandle::spawn(config)?;
        let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        loop {
            tokio::select! {
                _ = hangup.recv() => {
                    match AgentConfig::load(&path).map_err(anyhow::Error::from).and_then(|c| agent.reload(c).map_err(Into::into)) {
                        Ok(()) => info!(config = %path.display(), "reloaded"),
                        Err(e) => warn!("reload failed, keeping the running configuration: {e:#}"),
                    }
                }
                _ = terminate.recv() => break,
                _ = tokio::signal::ctrl_c() => break,
            }
        }
        info!("shutting down: flushing queued records");
        let status = agent.shutdown().await;
        info!(acked = status.acked_records, dropped = status.dropped_records, "stopped");
        Ok(())
    })
}

/// `compact` (serde_json's compact output) indented as
/// `serde_json::to_string_pretty` would: the same text, but without a
/// second serializer instantiated for every type printed, which costs
/// flash on a device.
fn pretty_json(compact: &str) -> String {
    fn newline(out: &mut String, depth: usize) {
        out.push('\n');
        out.extend(std::iter::repeat_n("  ", depth));
    }
    let mut out = String::with_capacity(compact.len() * 2);
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    let mut chars = compact.chars().peekable();
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                out.push(c);
            }
            '{' | '[' => {
                out.push(c);
                let close = if c == '{' { '}' } else { ']' };
                if chars.peek() == Some(&close) {
                    out.push(close);
                    chars.next();
                } else {
                    depth += 1;
                    newline(&mut out, depth);
                }
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(c);
            }
            ',' => {
                out.push(c);
                newline(&mut out, depth);
            }
            ':' => out.push_str(": "),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pretty_json_is_serde_jsons_own_pretty_output() {
        let metadata = crate::probe::HostProbe::new(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/probe/openwrt-ap"),
        )
        .collect();
        let value = serde_json::to_value(&metadata).unwrap();
        assert!(value.as_object().is_some_and(|o| o.len() > 5), "a real record: {value}");
        assert_eq!(
            pretty_json(&serde_json::to_string(&metadata).unwrap()),
            serde_json::to_string_pretty(&metadata).unwrap()
        );
        let tricky = serde_json::json!({
            "empty": {}, "none": [], "nested": [[], [{}], {"a": [1, 2.5, null, true]}],
            "text": "a \"quoted\", {braced} [bracketed]: \\ \u{1} é", "": ""
        });
        assert_eq!(pretty_json(&tricky.to_string()), serde_json::to_string_pretty(&tricky).unwrap());
        assert_eq!(pretty_json("[]"), "[]");
        assert_eq!(pretty_json("7"), "7");
    }

    #[test]
    fn failures_map_to_sysexits_codes() {
        let unreachable = crate::transport::TransportError::Connect {
            address: "127.0.0.1:1".into(),
            source: std::io::ErrorKind::ConnectionRefused.into(),
        };
        assert_eq!(exit_code(&anyhow::Error::new(unreachable).context("replay")), 69);
        let denied = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        assert_eq!(exit_code(&anyhow::Error::new(denied)), 77);
        assert_eq!(exit_code(&anyhow::anyhow!("no [collector] address")), 78);
    }
}
