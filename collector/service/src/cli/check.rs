//! `check --config`: collector.toml and every file it names, checked the
//! way `serve` will read them, changing nothing (no key, directory or host
//! key is created). Every problem is reported at once, so that one run
//! tells an operator all there is to fix; exit 78 when there is any.

use std::net::SocketAddr;
use std::path::Path;

use glimpse_files::{check_data_dir, load_certs, load_crls, load_key};

use crate::cli::exit::ConfigProblem;
use crate::config::CollectorConfig;

/// Certificates expiring within this are reported (as a note, not a problem).
const EXPIRY_WARNING_DAYS: i64 = 30;

/// What one run found: lines for what is fine, and the problems.
#[derive(Debug, Default)]
struct Report {
    ok: Vec<String>,
    notes: Vec<String>,
    problems: Vec<String>,
}

impl Report {
    fn check<T>(&mut self, what: &str, result: Result<T, String>) -> Option<T> {
        match result {
            Ok(value) => {
                self.ok.push(what.to_owned());
                Some(value)
            }
            Err(e) => {
                self.problems.push(format!("{what}: {e}"));
                None
            }
        }
    }
}

/// Checks `path` and prints what is fine; the problems come back as one
/// [`ConfigProblem`] (exit 78) listing them all.
pub(super) fn check(path: &Path) -> anyhow::Result<()> {
    let config = CollectorConfig::load(path).map_err(|e| ConfigProblem(format!("{e}")))?;
    let report = check_files(&config);
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    writeln!(out, "config {}: parsed", path.display())?;
    for line in &report.ok {
        writeln!(out, "ok    {line}")?;
    }
    for line in &report.notes {
        writeln!(out, "note  {line}")?;
    }
    out.flush()?;
    if report.problems.is_empty() {
        return Ok(());
    }
    let mut message = format!("{}: {} problem(s):", path.display(), report.problems.len());
    for problem in &report.problems {
        message.push_str("\n  - ");
        message.push_str(problem);
    }
    Err(ConfigProblem(message).into())
}

fn check_files(config: &CollectorConfig) -> Report {
    let mut report = Report::default();
    let shown = |p: &Path| p.display().to_string();

    let ca = report.check(&format!("TLS CA {}", shown(&config.ca)), load_certs(&config.ca).map_err(|e| e.to_string()));
    let chain = report.check(
        &format!("TLS certificate {}", shown(&config.cert)),
        load_certs(&config.cert).map_err(|e| e.to_string()),
    );
    let key =
        report.check(&format!("TLS key {}", shown(&config.key)), load_key(&config.key).map_err(|e| e.to_string()));
    let crls = match &config.crl {
        Some(crl) => report.check(&format!("CRL {}", shown(crl)), load_crls(crl).map_err(|e| e.to_string())),
        None => Some(Vec::new()),
    };
    if let Some(chain) = &chain {
        if let Some(leaf) = chain.first() {
            expiry(&mut report, &config.cert, leaf);
        }
    }
    if let (Some(chain), Some(key)) = (&chain, &key) {
        let matching =
            rustls::crypto::ring::sign::any_supported_type(key).map_err(|e| format!("unusable key: {e}")).and_then(
                |signer| rustls::sign::CertifiedKey::new(chain.clone(), signer).keys_match().map_err(|e| e.to_string()),
            );
        if report.check("TLS key matches the certificate", matching).is_some() {
            if let (Some(ca), Some(crls)) = (ca.as_ref().and_then(|c| c.first()), crls) {
                let built = glimpse_common::tls::server_config(ca, crls, chain.clone(), key.clone_key())
                    .map(drop)
                    .map_err(|e| e.to_string());
                report.check("TLS server configuration builds", built);
            }
        }
    }

    report.check(
        &format!("master key {}", shown(&config.master_key_file)),
        glimpse_store::keys::MasterKey::load(&config.master_key_file).map(drop).map_err(|e| e.to_string()),
    );
    directory(&mut report, "data directory", &config.data_dir, true);
    if let Some(pki) = &config.pki_dir {
        if directory(&mut report, "PKI directory", pki, false) {
            let records = glimpse_store::import::read_registrations(pki)
                .map(|r| r.len())
                .and_then(|n| glimpse_store::import::read_revoked(pki).map(|v| (n, v.len())))
                .map_err(|e| e.to_string());
            if let Some((registered, revoked)) = report.check(&format!("PKI records in {}", shown(pki)), records) {
                report.notes.push(format!("{registered} device registration(s), {revoked} revocation(s)"));
            }
        }
    }
    if let Some(ssh) = &config.ssh {
        match std::fs::symlink_metadata(&ssh.host_key) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => report.notes.push(format!(
                "SSH host key {} does not exist yet: serve creates it (print its fingerprint with ssh-host-key)",
                shown(&ssh.host_key)
            )),
            _ => {
                let loaded = crate::ingest::ssh::host_key::load(&ssh.host_key).map_err(|e| e.to_string());
                if let Some(key) = report.check(&format!("SSH host key {}", shown(&ssh.host_key)), loaded) {
                    report
                        .notes
                        .push(format!("SSH host key fingerprint {}", crate::ingest::ssh::host_key_fingerprint(&key)));
                }
            }
        }
    }
    if let crate::config::ControlPlane::Postgres(pg) = &config.control {
        // Connecting reads the password file and the CA, checks TLS and the
        // schema version; it writes nothing.
        let reached = glimpse_postgres::PgControl::connect(pg).map(drop).map_err(|e| e.to_string());
        if report.check(&format!("control plane {}", pg.describe()), reached).is_some() {
            report.notes.push(format!(
                "{} answers, schema at version {}",
                pg.describe(),
                glimpse_postgres::LATEST_VERSION
            ));
        }
    }
    listeners(&mut report, config);
    if let Some(alerts) = &config.alerts {
        crate::alerts::check_receivers(alerts, &mut report.ok, &mut report.problems);
    }
    report
}

/// A certificate past its end is a problem; one ending soon is a note.
fn expiry(report: &mut Report, path: &Path, leaf: &rustls_pki_types::CertificateDer<'_>) {
    let Ok(cert) = glimpse_common::certificate::parse_certificate(leaf) else {
        report.problems.push(format!("TLS certificate {}: not a parsable X.509 certificate", path.display()));
        return;
    };
    let validity = cert.validity();
    match validity.time_to_expiration() {
        None => report.problems.push(format!(
            "TLS certificate {}: not valid now (valid {} to {})",
            path.display(),
            validity.not_before,
            validity.not_after
        )),
        Some(left) if left.whole_days() < EXPIRY_WARNING_DAYS => report.notes.push(format!(
            "TLS certificate {} expires in {} day(s), on {}: renew it (glimpse-certs) and reload",
            path.display(),
            left.whole_days(),
            validity.not_after
        )),
        Some(_) => {}
    }
}

/// A directory: it must be one, and not writable by group or others. The
/// data directory may not exist yet (serve creates it, 0700); returns
/// whether the directory exists and passed.
fn directory(report: &mut Report, what: &'static str, path: &Path, may_be_created: bool) -> bool {
    let label = format!("{what} {}", path.display());
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && may_be_created => {
            let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
            if parent.is_dir() {
                report.notes.push(format!("{label} does not exist yet: serve creates it (mode 0700)"));
            } else {
                report.problems.push(format!("{label}: neither it nor its parent {} exists", parent.display()));
            }
            false
        }
        Err(e) => {
            report.problems.push(format!("{label}: {e}"));
            false
        }
        Ok(meta) if !meta.is_dir() => {
            report.problems.push(format!("{label}: not a directory"));
            false
        }
        Ok(_) => report.check(&label, check_data_dir(path, what).map_err(|e| e.to_string())).is_some(),
    }
}

/// The listen addresses (parsed already by the config loader) must not
/// collide: two listeners on one address would fail at bind.
fn listeners(report: &mut Report, config: &CollectorConfig) {
    let mut all: Vec<(&str, SocketAddr)> = vec![("listen", config.listen)];
    all.extend(config.admin_listen.map(|a| ("admin.listen", a)));
    all.extend(config.ssh.as_ref().map(|s| ("ssh.listen", s.listen)));
    let mut clash = false;
    for (i, (name, addr)) in all.iter().enumerate() {
        for (other, other_addr) in &all[i + 1..] {
            let same_port = addr.port() == other_addr.port() && addr.port() != 0;
            let overlapping =
                addr.ip() == other_addr.ip() || addr.ip().is_unspecified() || other_addr.ip().is_unspecified();
            if same_port && overlapping {
                clash = true;
                report.problems.push(format!("{name} ({addr}) and {other} ({other_addr}) are the same port"));
            }
        }
    }
    if !clash {
        let shown: Vec<String> = all.iter().map(|(name, addr)| format!("{name} {addr}")).collect();
        report.ok.push(format!("listen addresses: {}", shown.join(", ")));
    }
}
