//! The tools that work on a collector's data directory with its master
//! key: export and verify (read-only: they change no byte and work while
//! the collector runs), sweep, repair and recover (with the collector
//! stopped), and the key files.

use std::path::Path;
use std::sync::Arc;

use glimpse_common::capture::CaptureFilter;
use glimpse_common::clock::Clock;
use glimpse_common::identity::OrgId;
use glimpse_common::record::DataKind;
use glimpse_store::export::{export_audited, parse_time, ExportCursor, ExportFormat, ExportRequest};
use glimpse_store::keys::{CatalogSource, KeyError};

use super::exit::{ConfigProblem, IncompleteError, UsageError};
use crate::config::CollectorConfig;
use crate::service;

/// Says where a read-only store's key store rows came from, when it was
/// not the file itself.
fn note_source(store: &glimpse_store::Store) {
    if let CatalogSource::Copy(copy) = store.catalog_source() {
        eprintln!(
            "note: a running collector holds the key store; read its verified copy {} (as of its last write). \
             The running collector's admin API is the live path.",
            copy.display()
        );
    }
}

/// The store's export request for these command-line choices.
pub(super) fn export_request(
    org: OrgId,
    kind: DataKind,
    select: &super::ExportSelection,
    format: &str,
) -> anyhow::Result<ExportRequest> {
    let format = match format {
        "pcap" => ExportFormat::Pcapng,
        _ => ExportFormat::JsonLines,
    };
    if format == ExportFormat::Pcapng && kind != DataKind::Capture {
        return Err(UsageError("--format pcap exports captures: add --kind capture".into()).into());
    }
    if select.filter.is_some() && kind != DataKind::Capture {
        return Err(UsageError("--filter selects packets: add --kind capture".into()).into());
    }
    let filter = select.filter.as_deref().map(CaptureFilter::parse).transpose()?;
    let cursor = select.cursor.as_deref().map(|c| ExportCursor::decode(c, kind)).transpose()?;
    let request = ExportRequest {
        since: select.since.as_deref().map(parse_time).transpose()?,
        until: select.until.as_deref().map(parse_time).transpose()?,
        devices: select.devices.clone(),
        filter,
        cursor,
        ..ExportRequest::new(org, kind, format)
    };
    request.check()?;
    Ok(request)
}

/// `export`: an organisation's records, decrypted, to standard output.
pub(super) fn export(
    config: &Path,
    clock: Arc<dyn Clock>,
    org: OrgId,
    kind: DataKind,
    select: &super::ExportSelection,
    format: &str,
) -> anyhow::Result<()> {
    let config = CollectorConfig::load(config)?;
    let request = export_request(org, kind, select, format)?;
    let store = service::open_store_read_only(&config, clock)?;
    note_source(&store);
    // The store is read-only, so this export is not in the audit log (it is
    // logged); anyone with the master key and the files can read them
    // anyway. Exports through the admin API are audited.
    let actor = format!("local:{}", std::env::var("USER").unwrap_or_else(|_| "unknown user".into()));
    let summary = export_audited(&store, &actor, &request, &mut std::io::stdout().lock())?;
    eprintln!("exported {} {kind} records for {}", summary.records, request.org);
    if let Some(last) = summary.last_cursor {
        eprintln!("to continue after the last of them: --cursor {}", last.encode());
    }
    if summary.problems > 0 {
        return Err(IncompleteError(format!(
            "partial export: {} damaged or missing segment regions were skipped (each is logged with its file); \
             run `glimpse-collector verify` for the full list",
            summary.problems
        ))
        .into());
    }
    Ok(())
}

/// `verify`: every segment against the catalog, changing nothing.
pub(super) fn verify(config: &Path, clock: Arc<dyn Clock>, org: Option<&OrgId>) -> anyhow::Result<()> {
    let config = CollectorConfig::load(config)?;
    let store = service::open_store_read_only(&config, clock)?;
    note_source(&store);
    let reports = store.verify(org)?;
    let mut problems = 0;
    for (org, kind, report) in &reports {
        println!(
            "{org} {kind}: {} segments, {} records, {} problems",
            report.segments,
            report.records,
            report.problems.len()
        );
        for p in &report.problems {
            println!("  {p}");
        }
        problems += report.problems.len();
    }
    if problems > 0 {
        return Err(IncompleteError(format!("verify found {problems} problems (listed above)")).into());
    }
    println!("verified: no problems");
    Ok(())
}

/// `recover`: the key store from its verified copy.
pub(super) fn recover(config: &Path, clock: Arc<dyn Clock>) -> anyhow::Result<()> {
    let config = CollectorConfig::load(config)?;
    let master = glimpse_store::keys::MasterKey::load(&config.master_key_file)?;
    let report = match glimpse_store::keys::recover_catalog(&config.data_dir, &master) {
        Ok(report) => report,
        Err(e @ KeyError::Intact { .. }) => {
            println!("{e}");
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    if let Some(moved) = &report.damaged_moved_to {
        println!("moved the damaged key store to {}", moved.display());
    }
    println!(
        "restored {} from its verified copy: {} rows, {} organisation keys",
        report.path.display(),
        report.rows,
        report.org_keys
    );
    // Opening it the way `serve` does checks it and writes a new copy.
    let store = service::open_store(&config, clock)?;
    store.audit_event(
        "local",
        "keystore.recover",
        None,
        glimpse_store::audit::AuditOutcome::Done,
        &format!("{} rows restored from the verified copy", report.rows),
    );
    println!("run `glimpse-collector verify --config ...` to check the segments against the restored catalog");
    Ok(())
}

/// `repair`: what `serve` repairs at start, then exit.
pub(super) fn repair(config: &Path, clock: Arc<dyn Clock>) -> anyhow::Result<()> {
    let config = CollectorConfig::load(config)?;
    let _store = service::open_store(&config, clock)?;
    println!("repaired: torn segment tails cut and interrupted erasures finished (see the log)");
    Ok(())
}

/// `ssh-host-key`: the SSH host key's fingerprint, creating the key first
/// if the collector has not started with SSH yet.
pub(super) fn ssh_host_key(config: &Path) -> anyhow::Result<()> {
    let config = CollectorConfig::load(config)?;
    let Some(ssh) = &config.ssh else {
        return Err(ConfigProblem(
            "the config has no [ssh] section; add one with `listen = \"0.0.0.0:2222\"` to enable SSH".into(),
        )
        .into());
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
pub(super) fn sweep(config: &Path, clock: Arc<dyn Clock>, accept_clock: bool) -> anyhow::Result<()> {
    let config = CollectorConfig::load(config)?;
    let store = service::open_store(&config, clock)?;
    let check = if accept_clock {
        glimpse_store::retention::ClockCheck::Accept
    } else {
        glimpse_store::retention::ClockCheck::Enforce
    };
    let report = glimpse_store::retention::sweep_checked(&store, check)?;
    println!("{report:?}");
    for m in &report.mismatched {
        eprintln!(
            "warning: {} is in folder {} but its header says {}; kept until both days have expired",
            m.path.display(),
            m.folder_day,
            m.header_day
        );
    }
    Ok(())
}
