//! Importing a PKI directory: the manufacturing records `glimpse-certs`
//! writes (`registrations/<org>/<device>.json`) and its revocation list
//! (`revoked.json`), into the registry, auditing each new certificate, SSH
//! key and revocation; and the admin certificates it issued and revoked
//! (`admins.json`, [`import_admins`]). Run at start-up and on every reload.
//!
//! The record formats and their checks are `glimpse_common::registration`,
//! shared with the PKI tool, so both refuse the same files. A damaged or
//! misfiled record stops the import naming its file: a collector that
//! silently skipped one would refuse that device with no reason given.

use std::io::Read;
use std::path::{Path, PathBuf};

use tracing::warn;

use glimpse_common::identity::{DeviceIdentity, OrgId};
use glimpse_common::registration::{
    registration_file_stem, revoked_from_json, RecordError, Registration, RevokedEntry, MAX_RECORD_FILE_LEN,
};

use crate::keys::{DeviceRegistration, KeyError};
use crate::store::Store;

/// A PKI directory could not be imported.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    /// A file or directory could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// A file is larger than any record could be.
    #[error("{}: larger than {MAX_RECORD_FILE_LEN} bytes; not a record glimpse-certs wrote", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// A record is damaged, misfiled or holds a key the collector refuses.
    #[error("{}: {source}; fix or re-issue it with glimpse-certs", path.display())]
    Record {
        /// The file.
        path: PathBuf,
        /// Why.
        source: RecordError,
    },
    /// A device's SSH key could not be stored.
    #[error("{device}: SSH key: {reason}")]
    SshKey {
        /// The device.
        device: String,
        /// Why.
        reason: String,
    },
    /// The registry refused a write.
    #[error(transparent)]
    Registry(KeyError),
    /// The admin certificates could not be stored.
    #[error(transparent)]
    Admins(crate::control::AdminError),
}

/// Reads a record file, bounded in size, into a buffer wiped on drop (a
/// registration holds the device's shared key).
fn read_record(path: &Path) -> Result<zeroize::Zeroizing<String>, ImportError> {
    let io = |source| ImportError::Io { path: path.to_path_buf(), source };
    let file = std::fs::File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    if len > MAX_RECORD_FILE_LEN {
        return Err(ImportError::TooLarge { path: path.to_path_buf() });
    }
    // Reserved up front so that growing leaves no unwiped copy of a key.
    let mut text = zeroize::Zeroizing::new(String::with_capacity(usize::try_from(len).unwrap_or(0) + 1));
    file.take(MAX_RECORD_FILE_LEN + 1).read_to_string(&mut text).map_err(io)?;
    Ok(text)
}

/// Every `registrations/<org>/<device>.json`, sorted by organisation then
/// device. No `registrations/` yet is no registrations. Hidden files (an
/// interrupted `--force` write) and non-`.json` files are skipped.
pub fn read_registrations(pki_dir: &Path) -> Result<Vec<Registration>, ImportError> {
    let root = pki_dir.join("registrations");
    let list =
        |path: &Path| std::fs::read_dir(path).map_err(|source| ImportError::Io { path: path.to_path_buf(), source });
    let orgs = match std::fs::read_dir(&root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(ImportError::Io { path: root, source }),
    };
    let mut out = Vec::new();
    for org_entry in orgs {
        let org_entry = org_entry.map_err(|source| ImportError::Io { path: root.clone(), source })?;
        let org_path = org_entry.path();
        let org_name = org_entry.file_name().to_string_lossy().into_owned();
        if org_name.starts_with('.') {
            continue;
        }
        if !org_path.is_dir() {
            warn!(path = %org_path.display(), "ignoring a file among organisation directories");
            continue;
        }
        for file in list(&org_path)? {
            let file = file.map_err(|source| ImportError::Io { path: org_path.clone(), source })?;
            let path = file.path();
            let name = file.file_name().to_string_lossy().into_owned();
            let Some(stem) = registration_file_stem(&name) else {
                if !name.starts_with('.') {
                    warn!(path = %path.display(), "ignoring a file that is not a .json registration");
                }
                continue;
            };
            let record = |source| ImportError::Record { path: path.clone(), source };
            let text = read_record(&path)?;
            out.push(Registration::from_json(&text).and_then(|r| r.filed_as(&org_name, stem)).map_err(record)?);
        }
    }
    out.sort_by(|a, b| (&a.org, &a.device).cmp(&(&b.org, &b.device)));
    Ok(out)
}

/// `revoked.json`, oldest revocation first. `glimpse-certs init` always
/// writes it, so a missing file is an error.
pub fn read_revoked(pki_dir: &Path) -> Result<Vec<RevokedEntry>, ImportError> {
    let path = pki_dir.join("revoked.json");
    let text = read_record(&path)?;
    revoked_from_json(&text).map_err(|source| ImportError::Record { path, source })
}

/// Imports `registrations/` and `revoked.json` from a `glimpse-certs`
/// directory into the registry. Returns (registered, revoked) counts.
pub fn import_registrations(store: &Store, pki_dir: &Path) -> Result<(usize, usize), ImportError> {
    let registrations = read_registrations(pki_dir)?;
    let revoked = read_revoked(pki_dir)?;
    let registry = store.registry();
    // First what each registration changes, against the registry as it was;
    // then every row in one transaction (one commit, not one per device);
    // then the SSH keys and the audit entries, in registration order.
    let mut rows = Vec::with_capacity(registrations.len());
    let mut changes = Vec::with_capacity(registrations.len());
    for reg in &registrations {
        let identity = DeviceIdentity { org: reg.org.clone(), device: reg.device.clone(), kind: reg.kind };
        // Revocation is per certificate: a device re-issued after a revocation
        // has a new serial and is not revoked.
        let already_revoked = revoked
            .iter()
            .any(|r| r.org == reg.org && r.device == reg.device && r.serial.eq_ignore_ascii_case(&reg.cert_serial));
        let known = registry.get(&reg.org, &reg.device).map_err(ImportError::Registry)?;
        let ssh_key =
            reg.ssh_key().map_err(|e| ImportError::SshKey { device: identity.to_string(), reason: e.to_string() })?;
        let ssh_line = match &ssh_key {
            Some(key) => Some(
                key.to_openssh()
                    .map_err(|e| ImportError::SshKey { device: identity.to_string(), reason: e.to_string() })?,
            ),
            None => None,
        };
        rows.push(DeviceRegistration {
            identity: identity.clone(),
            shared_key: reg.shared_key(),
            cert_serial: reg.cert_serial.clone(),
            revoked: already_revoked,
            site: reg.site.clone(),
        });
        changes.push((identity, known, already_revoked, ssh_key, ssh_line));
    }
    registry.upsert_all(&rows).map_err(ImportError::Registry)?;
    for (reg, (identity, known, already_revoked, ssh_key, ssh_line)) in registrations.iter().zip(changes) {
        let new_certificate = known.as_ref().is_none_or(|k| k.cert_serial != reg.cert_serial);
        let known_ssh = registry.ssh_key(&reg.org, &reg.device).map_err(ImportError::Registry)?;
        if known_ssh != ssh_line {
            registry.set_ssh_key(&reg.org, &reg.device, ssh_line.as_deref()).map_err(ImportError::Registry)?;
            if let Some(key) = &ssh_key {
                audit_collector(
                    store,
                    "device.register",
                    &reg.org,
                    &format!("{identity} SSH key {}", glimpse_common::ssh_keys::fingerprint(key)),
                );
            }
        }
        if already_revoked && known.as_ref().is_some_and(|k| !k.revoked && !new_certificate) {
            audit_collector(
                store,
                "device.revoke",
                &reg.org,
                &format!("{identity} certificate serial {}", reg.cert_serial),
            );
        }
        if new_certificate {
            let site = reg.site.as_ref().map(|s| format!(" site {s}")).unwrap_or_default();
            audit_collector(
                store,
                "device.register",
                &reg.org,
                &format!("{identity} certificate serial {}{site}", reg.cert_serial),
            );
        }
        // A device moved to another site (issued again with another --site).
        if let Some(known) = known.as_ref().filter(|k| k.site != reg.site) {
            let name = |site: &Option<glimpse_common::identity::SiteId>| {
                site.as_ref().map_or_else(|| "(no site)".to_owned(), ToString::to_string)
            };
            audit_collector(
                store,
                "device.site",
                &reg.org,
                &format!("{identity} moved from site {} to {}", name(&known.site), name(&reg.site)),
            );
        }
    }
    for entry in &revoked {
        let was_revoked = registry.get(&entry.org, &entry.device).ok().flatten().is_some_and(|k| k.revoked);
        match registry.set_revoked(&entry.org, &entry.device, &entry.serial) {
            Ok(true) if !was_revoked => audit_collector(
                store,
                "device.revoke",
                &entry.org,
                &format!("{}/{} certificate serial {}", entry.org, entry.device, entry.serial),
            ),
            Ok(_) => {}
            Err(e) => warn!(org = %entry.org, device = %entry.device, "cannot mark device revoked: {e}"),
        }
    }
    Ok((registrations.len(), revoked.len()))
}

/// Imports `admins.json` (every admin and support certificate
/// `glimpse-certs admin` issued, and which `revoke-admin` revoked) into the
/// control store's admin certificates, auditing each new certificate as
/// `admin.register` and each new revocation as `admin.revoke`. A PKI
/// directory without the file (made before certificates were recorded)
/// imports nothing. Returns (certificates listed, revoked by this import).
pub fn import_admins(store: &Store, pki_dir: &Path) -> Result<(usize, usize), ImportError> {
    let path = pki_dir.join("admins.json");
    if !path.exists() {
        return Ok((0, 0));
    }
    let text = read_record(&path)?;
    let entries = glimpse_common::registration::admins_from_json(&text)
        .map_err(|source| ImportError::Record { path: path.clone(), source })?;
    let import = store.admins().import(&entries).map_err(ImportError::Admins)?;
    let describe = |r: &crate::control::AdminRecord| {
        format!("{} {} of {} certificate serial {}", r.role, r.name, r.org.as_deref().unwrap_or("*"), r.serial)
    };
    for record in &import.added {
        audit_admin(store, "admin.register", record, &describe(record));
    }
    for record in &import.revoked {
        audit_admin(store, "admin.revoke", record, &describe(record));
    }
    Ok((entries.len(), import.revoked.len()))
}

/// Audits an admin certificate change, under its organisation if scoped.
fn audit_admin(store: &Store, action: &str, record: &crate::control::AdminRecord, detail: &str) {
    let org = record.org.as_deref().and_then(|o| OrgId::new(o).ok());
    store.audit_event("collector", action, org.as_ref(), crate::audit::AuditOutcome::Done, detail);
}

/// Appends an entry the collector itself makes (imports) to the audit log;
/// a failure is logged, not fatal.
fn audit_collector(store: &Store, action: &str, org: &OrgId, detail: &str) {
    store.audit_event("collector", action, Some(org), crate::audit::AuditOutcome::Done, detail);
}

#[cfg(test)]
mod tests;
