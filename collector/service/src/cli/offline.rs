//! The tools that work on a collector's data directory with its master
//! key, while the collector is stopped: export, sweep, and the key files.

use std::path::Path;
use std::sync::Arc;

use glimpse_common::clock::SystemClock;
use glimpse_common::identity::OrgId;
use glimpse_common::record::DataKind;
use glimpse_store::export::{export_audited, parse_time, ExportFormat, ExportRequest};

use crate::config::CollectorConfig;
use crate::service;

/// `export`: an organisation's records, decrypted, to standard output.
pub(super) fn export(
    config: &Path,
    org: OrgId,
    kind: DataKind,
    since: Option<&str>,
    until: Option<&str>,
    format: &str,
) -> anyhow::Result<()> {
    let config = CollectorConfig::load(config)?;
    let format = match format {
        "pcap" => ExportFormat::Pcapng,
        _ => ExportFormat::JsonLines,
    };
    if format == ExportFormat::Pcapng && kind != DataKind::Capture {
        anyhow::bail!("--format pcap exports captures: add --kind capture");
    }
    let request = ExportRequest {
        org,
        kind,
        since: since.map(parse_time).transpose()?,
        until: until.map(parse_time).transpose()?,
        format,
    };
    let store = service::open_store(&config, Arc::new(SystemClock))?;
    // Exports on the collector host, with the master key, are audited like
    // those through the admin API.
    let actor = format!("local:{}", std::env::var("USER").unwrap_or_else(|_| "unknown user".into()));
    let summary = export_audited(&store, &actor, &request, &mut std::io::stdout().lock())?;
    eprintln!("exported {} {kind} records for {}", summary.records, request.org);
    if summary.problems > 0 {
        eprintln!("warning: {} damaged segment regions were skipped (see log)", summary.problems);
    }
    Ok(())
}

/// `ssh-host-key`: the SSH host key's fingerprint, creating the key first
/// if the collector has not started with SSH yet.
pub(super) fn ssh_host_key(config: &Path) -> anyhow::Result<()> {
    let config = CollectorConfig::load(config)?;
    let Some(ssh) = &config.ssh else {
        anyhow::bail!("the config has no [ssh] section; add one with `listen = \"0.0.0.0:2222\"` to enable SSH");
    };
    let key = crate::ingest::ssh::host_key::load_or_create(&ssh.host_key)?;
    println!("{}", crate::ingest::ssh::host_key_fingerprint(&key));
    Ok(())
}

/// `master-key`: a new master key file, mode 0600, never over an old one.
pub(super) fn master_key(out: &Path) -> anyhow::Result<()> {
    glimpse_store::keys::MasterKey::generate_file(out)?;
    println!("wrote a new master key to {} (mode 0600); back it up: without it no data can be read", out.display());
    Ok(())
}

/// `sweep`: delete expired segments now.
pub(super) fn sweep(config: &Path) -> anyhow::Result<()> {
    let config = CollectorConfig::load(config)?;
    let store = service::open_store(&config, Arc::new(SystemClock))?;
    let report = glimpse_store::retention::sweep(&store)?;
    println!("{report:?}");
    Ok(())
}
