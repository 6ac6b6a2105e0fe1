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
    /// The devices' SSH keys could not be stored (none of them was).
    #[error("SSH keys of {devices} devices not stored: {reason}")]
    SshKeys {
        /// How many devices' keys were to be written.
        devices: usize,
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
    // then every row in one transaction (one commit, not one per device).
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
    // Then what changed, in registration order: the SSH keys to write (one
    // transaction for all of them) and the audit entries (one durable
    // append per batch), instead of a commit and an fsync per device.
    let mut ssh_writes = Vec::new();
    let mut audits = Audits::default();
    for (reg, (identity, known, already_revoked, ssh_key, ssh_line)) in registrations.iter().zip(&changes) {
        let new_certificate = known.as_ref().is_none_or(|k| k.cert_serial != reg.cert_serial);
        let known_ssh = registry.ssh_key(&reg.org, &reg.device).map_err(ImportError::Registry)?;
        if known_ssh != *ssh_line {
            ssh_writes.push((&reg.org, &reg.device, ssh_line.as_deref()));
            if let Some(key) = ssh_key {
                let detail = format!("{identity} SSH key {}", glimpse_common::ssh_keys::fingerprint(key));
                audits.push_ssh("device.register", &reg.org, detail);
            }
        }
        if *already_revoked && known.as_ref().is_some_and(|k| !k.revoked && !new_certificate) {
            audits.push("device.revoke", &reg.org, format!("{identity} certificate serial {}", reg.cert_serial));
        }
        if new_certificate {
            let site = reg.site.as_ref().map(|s| format!(" site {s}")).unwrap_or_default();
            audits.push(
                "device.register",
                &reg.org,
                format!("{identity} certificate serial {}{site}", reg.cert_serial),
            );
        }
        // A device moved to another site (issued again with another --site).
        if let Some(known) = known.as_ref().filter(|k| k.site != reg.site) {
            let name = |site: &Option<glimpse_common::identity::SiteId>| {
                site.as_ref().map_or_else(|| "(no site)".to_owned(), ToString::to_string)
            };
            let detail = format!("{identity} moved from site {} to {}", name(&known.site), name(&reg.site));
            audits.push("device.site", &reg.org, detail);
        }
    }
    if let Err(e) = registry.set_ssh_keys(&ssh_writes) {
        // No SSH key was written; the registry rows were, and are audited.
        audits.entries.retain(|entry| !entry.ssh);
        audits.append(store);
        return Err(ImportError::SshKeys { devices: ssh_writes.len(), reason: e.to_string() });
    }
    for entry in &revoked {
        let was_revoked = registry.get(&entry.org, &entry.device).ok().flatten().is_some_and(|k| k.revoked);
        // Already revoked (by the rows above or an earlier import): nothing
        // to write, and nothing to audit.
        if was_revoked {
            continue;
        }
        match registry.set_revoked(&entry.org, &entry.device, &entry.serial) {
            Ok(true) => audits.push(
                "device.revoke",
                &entry.org,
                format!("{}/{} certificate serial {}", entry.org, entry.device, entry.serial),
            ),
            Ok(false) => {}
            Err(e) => warn!(org = %entry.org, device = %entry.device, "cannot mark device revoked: {e}"),
        }
    }
    audits.append(store);
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

/// The audit entries an import makes, in order, appended together at its
/// end ([`crate::audit::AuditLog::append_all`]).
#[derive(Default)]
struct Audits {
    entries: Vec<Pending>,
}

/// One entry the collector itself makes.
struct Pending {
    action: &'static str,
    org: OrgId,
    detail: String,
    /// It records an SSH key written with the others (and is dropped if
    /// that write fails).
    ssh: bool,
}

impl Audits {
    fn push(&mut self, action: &'static str, org: &OrgId, detail: String) {
        self.entries.push(Pending { action, org: org.clone(), detail, ssh: false });
    }

    fn push_ssh(&mut self, action: &'static str, org: &OrgId, detail: String) {
        self.entries.push(Pending { action, org: org.clone(), detail, ssh: true });
    }

    /// Appends every entry to the audit log, as `collector`, at the
    /// store's time; a failure is logged, not fatal (as for one entry,
    /// [`Store::audit_event`]).
    fn append(self, store: &Store) {
        if self.entries.is_empty() {
            return;
        }
        let drafts: Vec<crate::audit::AuditDraft<'_>> = self
            .entries
            .iter()
            .map(|e| crate::audit::AuditDraft {
                actor: "collector",
                action: e.action,
                org: Some(e.org.as_str()),
                outcome: crate::audit::AuditOutcome::Done,
                detail: &e.detail,
            })
            .collect();
        match store.audit().append_all(store.clock().now_millis(), &drafts) {
            Ok(_) => {}
            // An offline tool on a store opened read-only: nothing may change.
            Err(crate::audit::AuditError::ReadOnly { .. }) => {
                tracing::info!(entries = drafts.len(), "import not in the audit log: the store is open read-only")
            }
            Err(e) => tracing::error!(entries = drafts.len(), "audit log append of the import failed: {e}"),
        }
    }
}

#[cfg(test)]
mod tests;
