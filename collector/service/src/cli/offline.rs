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

/// How `export` may reach a running collector's admin API.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ExportThrough {
    /// Your admin certificate: export through the running collector's admin
    /// API, authorised and audited like any admin request.
    #[arg(long, value_name = "FILE", requires = "admin_key")]
    admin_cert: Option<std::path::PathBuf>,
    /// Your admin private key.
    #[arg(long, value_name = "FILE", requires = "admin_cert")]
    admin_key: Option<std::path::PathBuf>,
    /// An API token instead of a certificate (better in the environment).
    #[arg(long, env = "GLIMPSE_API_TOKEN", hide_env_values = true, conflicts_with_all = ["admin_cert", "admin_key"])]
    token: Option<String>,
    /// Admin API address, host:port (default: `[admin] listen` in the config).
    #[arg(long, value_name = "ADDR")]
    admin: Option<String>,
    /// Name in the collector's certificate.
    #[arg(long, default_value = "localhost")]
    server_name: String,
}

/// The API's query for these command-line choices.
fn export_params(kind: DataKind, select: &super::ExportSelection, format: &str) -> glimpse_api::ExportParams {
    glimpse_api::ExportParams {
        kind: Some(kind.to_string()),
        since: select.since.clone(),
        until: select.until.clone(),
        device: (!select.devices.is_empty())
            .then(|| select.devices.iter().map(|d| d.as_str()).collect::<Vec<_>>().join(",")),
        filter: select.filter.clone(),
        format: Some(if format == "pcap" { "pcapng" } else { "jsonl" }.to_owned()),
        cursor: select.cursor.clone(),
    }
}

/// Streams the export from the admin API to standard output. `Ok(false)`:
/// the API does not answer (the collector is not running).
async fn export_through_api(
    config: &CollectorConfig,
    through: ExportThrough,
    org: &OrgId,
    params: &glimpse_api::ExportParams,
) -> anyhow::Result<bool> {
    use std::io::Write;
    let address = match (through.admin, config.admin_listen) {
        (Some(address), _) => address,
        (None, Some(listen)) => listen.to_string(),
        (None, None) => {
            return Err(UsageError("give --admin ADDR, or an [admin] listen address in the config".into()).into())
        }
    };
    let credentials = glimpse_admin_client::AdminCredentials {
        address: address.clone(),
        server_name: through.server_name,
        ca: config.ca.clone(),
        cert: through.admin_cert.unwrap_or_default(),
        key: through.admin_key.unwrap_or_default(),
        token: through.token,
    };
    let client = glimpse_admin_client::ApiClient::new(&credentials).await?;
    let path = format!("{}/orgs/{org}/export", glimpse_api::PREFIX);
    // A large export takes as long as it takes; the client's usual request
    // timeout would cut it.
    let sent = client.request(reqwest::Method::GET, &path).query(params).timeout(EXPORT_TIMEOUT).send().await;
    let mut response = match sent {
        Ok(response) => response,
        Err(e) if e.is_connect() => {
            eprintln!(
                "note: the collector's admin API at {address} does not answer; reading the data directory instead"
            );
            return Ok(false);
        }
        Err(e) => return Err(anyhow::Error::new(e).context(format!("export from the admin API at {address}"))),
    };
    if !response.status().is_success() {
        glimpse_admin_client::decode::<serde_json::Value>(response).await?;
        anyhow::bail!("the admin API refused the export");
    }
    let mut out = std::io::stdout().lock();
    let (mut records, mut last_line) = (0u64, Vec::new());
    let jsonl = params.format.as_deref() == Some("jsonl");
    loop {
        let chunk = match response.chunk().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(e) => {
                out.flush()?;
                let resume = last_cursor(&last_line).map_or(String::new(), |c| format!("; continue with --cursor {c}"));
                return Err(IncompleteError(format!("the export was cut after {records} records ({e}){resume}")).into());
            }
        };
        out.write_all(&chunk)?;
        if jsonl {
            // Only the last complete line is kept, for its cursor.
            records += chunk.iter().filter(|b| **b == b'\n').count() as u64;
            last_line.extend_from_slice(&chunk);
            if let Some(end) = last_line.iter().rposition(|b| *b == b'\n') {
                let start = last_line[..end].iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
                last_line = last_line[start..].to_vec();
            }
        }
    }
    out.flush()?;
    if jsonl {
        eprintln!(
            "exported {records} {} records for {org} through the admin API",
            params.kind.as_deref().unwrap_or("")
        );
        if let Some(cursor) = last_cursor(&last_line) {
            eprintln!("to continue after the last of them: --cursor {cursor}");
        }
    } else {
        eprintln!("exported captures of {org} through the admin API (each packet's comment holds its cursor)");
    }
    Ok(true)
}

/// Longest an export through the API may take.
const EXPORT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// The cursor of the last complete JSON line in `tail`.
fn last_cursor(tail: &[u8]) -> Option<String> {
    let line = tail.split(|b| *b == b'\n').rfind(|l| !l.is_empty())?;
    let value: serde_json::Value = serde_json::from_slice(line).ok()?;
    value.get("cursor")?.as_str().map(str::to_owned)
}

/// `export`: an organisation's records, decrypted, to standard output,
/// through the running collector's admin API when a credential is given,
/// else (or when it does not answer) from the data directory.
pub(super) async fn export(
    config: &Path,
    clock: Arc<dyn Clock>,
    org: OrgId,
    kind: DataKind,
    select: &super::ExportSelection,
    format: &str,
    through: ExportThrough,
) -> anyhow::Result<()> {
    let config = CollectorConfig::load(config)?;
    let request = export_request(org, kind, select, format)?;
    if through.admin_cert.is_some() || through.token.is_some() {
        let params = export_params(kind, select, format);
        if export_through_api(&config, through, &request.org, &params).await? {
            return Ok(());
        }
    }
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

/// `migrate`: the PostgreSQL control plane's schema brought up to this
/// version.
pub(super) fn migrate(config: &Path) -> anyhow::Result<()> {
    let config = CollectorConfig::load(config)?;
    let Some(report) = service::migrate(&config)? else {
        glimpse_files::outln!(
            "nothing to migrate: the control plane is the embedded store (control.backend = \"redb\")"
        )?;
        return Ok(());
    };
    for (version, name) in &report.applied {
        glimpse_files::outln!("applied schema version {version} ({name})")?;
    }
    if report.applied.is_empty() {
        glimpse_files::outln!("the schema is at version {}, this collector's; nothing to do", report.version)?;
    } else {
        glimpse_files::outln!("the schema is now at version {} (was {})", report.version, report.from)?;
    }
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

/// What `account` does.
#[derive(Debug, clap::Subcommand)]
pub(super) enum AccountAction {
    /// Create an account. The password is read from the first line of
    /// --password-file (`-`: standard input); at least 12 characters.
    Add {
        /// Sign-in name (letters, digits, `.`, `-`, `_`, `@`).
        name: String,
        /// operator, org-admin or support.
        #[arg(long)]
        role: glimpse_common::identity::AdminRole,
        /// The organisation of an org-admin or support account.
        #[arg(long)]
        org: Option<OrgId>,
        /// File holding the password on its first line; `-` reads stdin.
        #[arg(long, value_name = "FILE")]
        password_file: std::path::PathBuf,
        /// Limit an org-admin or support account to these sites of its
        /// organisation, comma-separated (default: every site).
        #[arg(long = "site", value_name = "SITE", value_delimiter = ',')]
        sites: Vec<glimpse_common::identity::SiteId>,
    },
    /// List accounts (no password hashes).
    List,
    /// Turn an account's one-time codes off and clear its lockout (a lost
    /// phone, when no other operator can do it in the console).
    Reset {
        /// The account's name.
        name: String,
    },
}

/// `account`: console accounts in the key store, collector stopped.
pub(super) fn account(config: Option<&Path>, clock: Arc<dyn Clock>, action: AccountAction) -> anyhow::Result<()> {
    let Some(config) = config else {
        return Err(UsageError("name the collector's config with --config FILE".into()).into());
    };
    let config = CollectorConfig::load(config)?;
    let store = Arc::new(service::open_store(&config, clock.clone())?);
    let accounts = crate::api::console::AccountBook::new(store.clone());
    match action {
        AccountAction::Add { name, role, org, password_file, sites } => {
            let text =
                if password_file.as_os_str() == "-" {
                    let mut line = String::new();
                    std::io::stdin().read_line(&mut line)?;
                    zeroize::Zeroizing::new(line)
                } else {
                    zeroize::Zeroizing::new(std::fs::read_to_string(&password_file).map_err(|e| {
                        anyhow::anyhow!("cannot read the password from {}: {e}", password_file.display())
                    })?)
                };
            let password = text.lines().next().unwrap_or_default();
            let admin_name = glimpse_common::identity::AdminName::new(&name)
                .map_err(|e| UsageError(format!("account name {name:?}: {e}")))?;
            let identity = glimpse_common::identity::AdminIdentity::new(admin_name, role, org)
                .map_err(|e| UsageError(e.to_string()))?;
            let account = accounts
                .create_at_sites(&identity, &sites, password, "local", clock.now_millis())
                .map_err(|e| UsageError(e.to_string()))?;
            store.audit_event(
                "local",
                "console.account.create",
                identity.org.as_ref(),
                glimpse_store::audit::AuditOutcome::Done,
                &format!("account {} ({})", account.name, account.role.as_str()),
            );
            let sites: Vec<&str> = account.sites.iter().map(|s| s.as_str()).collect();
            println!(
                "created console account {} ({}{}{})",
                account.name,
                account.role.as_str(),
                account.org.as_deref().map(|o| format!(" of {o}")).unwrap_or_default(),
                if sites.is_empty() { String::new() } else { format!(", sites {}", sites.join(", ")) }
            );
        }
        AccountAction::List => {
            for a in accounts.list()? {
                let org = a.org.as_deref().unwrap_or("-");
                let locked = if a.locked_until_ms.is_some_and(|t| t > clock.now_millis()) { " locked" } else { "" };
                let totp = if a.totp_sealed.is_some() { " totp" } else { "" };
                let disabled = if a.disabled { " disabled" } else { "" };
                println!("{}\t{}\t{}{}{}{}", a.name, a.role.as_str(), org, locked, totp, disabled);
            }
        }
        AccountAction::Reset { name } => {
            let change =
                crate::api::console::accounts::AccountChange { reset_totp: true, unlock: true, ..Default::default() };
            let account = accounts.update(&name, change).map_err(|e| UsageError(e.to_string()))?;
            let org = account.org.as_deref().and_then(|o| OrgId::new(o).ok());
            store.audit_event(
                "local",
                "console.account.update",
                org.as_ref(),
                glimpse_store::audit::AuditOutcome::Done,
                &format!("account {name}: one-time codes reset, unlocked"),
            );
            println!("console account {name}: one-time codes off, unlocked");
        }
    }
    Ok(())
}
