//! Admin and support certificates: which were issued, which are revoked,
//! and when each was last used.
//!
//! Rows come from the PKI directory's `admins.json` (every certificate
//! `glimpse-certs admin` issued, imported at start and on every reload; see
//! [`crate::import::import_admins`]) and from certificates that present
//! themselves on the admin port without one (issued before certificates
//! were recorded). A certificate is revoked by `glimpse-certs revoke-admin`
//! (then it is also on the CRL, which the admin listener enforces in the
//! TLS handshake once reloaded) or through the API, at once
//! ([`Admins::revoke`]). A revocation is never undone: an import that
//! still lists the certificate as active leaves it revoked.
//!
//! # Storage
//!
//! One row per certificate in the control store's collector-wide facts
//! (`collector_state`), named `admin-cert:<serial>`, holding the JSON of a
//! [`StoredAdmin`]: there, the verified copy of the control store carries
//! them with no change to its format. Every row is loaded at open and
//! kept in memory, so [`Admins::is_revoked`] costs a map lookup.
//! Revocations are written before they take effect in memory; last use is
//! noted in memory ([`Admins::note_use`]) and written by
//! [`Admins::flush_uses`], which the service runs every few seconds and at
//! shutdown, so a crash loses at most that much of the last-use times.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use serde::{Deserialize, Serialize};

use glimpse_common::clock::UnixMillis;
use glimpse_common::identity::AdminIdentity;
use glimpse_common::registration::{is_serial_hex, AdminCertEntry};

use super::seam::{ControlError, ControlStore};

/// The prefix of an admin certificate's row name in `collector_state`.
pub const ROW_PREFIX: &str = "admin-cert:";

/// Most admin certificates kept: a bound on what certificates presenting
/// themselves can add (each must chain to the CA, so this is generous).
pub const MAX_ADMINS: usize = 100_000;

/// Reading or changing the admin certificates failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// The control store failed.
    #[error("admin certificates: {0}")]
    Database(#[from] ControlError),
    /// A stored row did not decode (a damaged database).
    #[error("stored admin certificate {serial} is unreadable: {problem}")]
    Corrupt {
        /// The row's serial.
        serial: String,
        /// What was wrong.
        problem: String,
    },
    /// No certificate with this serial is known.
    #[error("no admin certificate with serial {0}")]
    Unknown(String),
    /// Not a serial number (1 to 20 bytes of hex).
    #[error("not a certificate serial (1 to 20 bytes of hex): {0:?}")]
    BadSerial(String),
    /// More than [`MAX_ADMINS`] certificates.
    #[error("more than {MAX_ADMINS} admin certificates")]
    TooMany,
}

/// One admin or support certificate, as the identities API lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AdminRecord {
    /// The admin's name.
    pub name: String,
    /// `operator`, `org-admin` or `support`.
    pub role: String,
    /// The organisation an org-admin or support certificate is scoped to.
    pub org: Option<String>,
    /// The certificate's serial number, lowercase hex.
    pub serial: String,
    /// When the certificate expires (Unix milliseconds); `null` if only
    /// known from its use before expiry was recorded.
    pub not_after_ms: Option<UnixMillis>,
    /// Whether it is revoked.
    pub revoked: bool,
    /// When it was revoked (Unix milliseconds).
    pub revoked_at_ms: Option<UnixMillis>,
    /// When it last authenticated a request (Unix milliseconds).
    pub last_used_ms: Option<UnixMillis>,
}

/// A stored row (JSON). New fields get `#[serde(default)]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredAdmin {
    name: String,
    role: String,
    #[serde(default)]
    org: Option<String>,
    #[serde(default)]
    not_after_ms: Option<UnixMillis>,
    #[serde(default)]
    revoked_at_ms: Option<UnixMillis>,
    #[serde(default)]
    last_used_ms: Option<UnixMillis>,
}

/// What an import changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdminImport {
    /// Certificates not known before.
    pub added: Vec<AdminRecord>,
    /// Certificates revoked by this import (they were active before).
    pub revoked: Vec<AdminRecord>,
}

#[derive(Debug, Default)]
struct Rows {
    rows: HashMap<String, StoredAdmin>,
    /// Serials whose last use changed since [`Admins::flush_uses`].
    used: std::collections::HashSet<String>,
}

fn load_rows(control: &dyn ControlStore) -> Result<HashMap<String, StoredAdmin>, AdminError> {
    let mut rows = HashMap::new();
    for (name, value) in control.states_with_prefix(ROW_PREFIX)? {
        let serial = name.strip_prefix(ROW_PREFIX).unwrap_or(&name).to_owned();
        let stored: StoredAdmin = serde_json::from_str(&value)
            .map_err(|e| AdminError::Corrupt { serial: serial.clone(), problem: e.to_string() })?;
        rows.insert(serial, stored);
    }
    Ok(rows)
}

/// The admin certificates (see the module header).
#[derive(Debug)]
pub struct Admins {
    control: Arc<dyn ControlStore>,
    rows: RwLock<Rows>,
}

/// A serial as rows name it: lowercase, no `0x`.
fn canonical(serial: &str) -> Result<String, AdminError> {
    let serial = serial.trim().trim_start_matches("0x").to_ascii_lowercase();
    if is_serial_hex(&serial) {
        Ok(serial)
    } else {
        Err(AdminError::BadSerial(serial.chars().take(48).collect()))
    }
}

fn millis(t: time::OffsetDateTime) -> UnixMillis {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

impl StoredAdmin {
    fn record(&self, serial: &str) -> AdminRecord {
        AdminRecord {
            name: self.name.clone(),
            role: self.role.clone(),
            org: self.org.clone(),
            serial: serial.to_owned(),
            not_after_ms: self.not_after_ms,
            revoked: self.revoked_at_ms.is_some(),
            revoked_at_ms: self.revoked_at_ms,
            last_used_ms: self.last_used_ms,
        }
    }
}

impl Admins {
    /// Loads every row from `control`.
    pub fn open(control: Arc<dyn ControlStore>) -> Result<Admins, AdminError> {
        let rows = load_rows(&*control)?;
        Ok(Admins { control, rows: RwLock::new(Rows { rows, used: Default::default() }) })
    }

    /// Reads every row again (another collector sharing the control plane
    /// imported or revoked a certificate), keeping the uses seen here and
    /// not flushed yet.
    pub fn reload(&self) -> Result<(), AdminError> {
        let mut fresh = load_rows(&*self.control)?;
        let mut rows = self.rows.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        for serial in &rows.used {
            if let (Some(new), Some(old)) = (fresh.get_mut(serial), rows.rows.get(serial)) {
                new.last_used_ms = new.last_used_ms.max(old.last_used_ms);
            }
        }
        rows.rows = fresh;
        Ok(())
    }

    fn write(&self, serial: &str, row: &StoredAdmin) -> Result<(), AdminError> {
        let json = serde_json::to_string(row)
            .map_err(|e| AdminError::Corrupt { serial: serial.to_owned(), problem: e.to_string() })?;
        self.control.replace_state(&format!("{ROW_PREFIX}{serial}"), &json)?;
        Ok(())
    }

    /// Every certificate known, by name then serial.
    pub fn list(&self) -> Vec<AdminRecord> {
        let rows = self.rows.read().unwrap_or_else(PoisonError::into_inner);
        let mut out: Vec<_> = rows.rows.iter().map(|(serial, row)| row.record(serial)).collect();
        out.sort_by(|a, b| (&a.name, &a.serial).cmp(&(&b.name, &b.serial)));
        out
    }

    /// The certificate with this serial, if known.
    pub fn get(&self, serial: &str) -> Option<AdminRecord> {
        let serial = canonical(serial).ok()?;
        let rows = self.rows.read().unwrap_or_else(PoisonError::into_inner);
        rows.rows.get(&serial).map(|row| row.record(&serial))
    }

    /// Whether the certificate with this serial is revoked. Unknown and
    /// malformed serials are not (the CA and the CRL decide about those).
    pub fn is_revoked(&self, serial: &str) -> bool {
        let Ok(serial) = canonical(serial) else { return false };
        let rows = self.rows.read().unwrap_or_else(PoisonError::into_inner);
        rows.rows.get(&serial).is_some_and(|row| row.revoked_at_ms.is_some())
    }

    /// Revokes the certificate with this serial at `now`, durably before it
    /// takes effect. Returns the record and whether this call revoked it
    /// (`false`: it already was).
    pub fn revoke(&self, serial: &str, now: UnixMillis) -> Result<(AdminRecord, bool), AdminError> {
        let serial = canonical(serial)?;
        let mut rows = self.rows.write().unwrap_or_else(PoisonError::into_inner);
        let current = rows.rows.get(&serial).ok_or_else(|| AdminError::Unknown(serial.clone()))?;
        if current.revoked_at_ms.is_some() {
            return Ok((current.record(&serial), false));
        }
        let mut row = current.clone();
        row.revoked_at_ms = Some(now);
        self.write(&serial, &row)?;
        let record = row.record(&serial);
        rows.rows.insert(serial, row);
        Ok((record, true))
    }

    /// Notes that the certificate with this serial authenticated a request
    /// at `now`. Memory only (see [`Admins::flush_uses`]); unknown serials
    /// are ignored (see [`Admins::note_seen`]).
    pub fn note_use(&self, serial: &str, now: UnixMillis) {
        let Ok(serial) = canonical(serial) else { return };
        let mut rows = self.rows.write().unwrap_or_else(PoisonError::into_inner);
        let Rows { rows, used } = &mut *rows;
        if let Some(row) = rows.get_mut(&serial) {
            if row.last_used_ms.is_none_or(|last| last < now) {
                row.last_used_ms = Some(now);
                used.insert(serial);
            }
        }
    }

    /// Like [`Admins::note_use`], for a certificate that the admin listener
    /// verified: one without a row (issued before certificates were
    /// recorded) gets one from what it carries, written at once, so that it
    /// is listed and can be revoked. Returns whether it was new.
    pub fn note_seen(
        &self,
        identity: &AdminIdentity,
        serial: &str,
        not_after_ms: Option<UnixMillis>,
        now: UnixMillis,
    ) -> Result<bool, AdminError> {
        let serial = canonical(serial)?;
        {
            let rows = self.rows.read().unwrap_or_else(PoisonError::into_inner);
            if rows.rows.contains_key(&serial) {
                drop(rows);
                self.note_use(&serial, now);
                return Ok(false);
            }
            if rows.rows.len() >= MAX_ADMINS {
                return Err(AdminError::TooMany);
            }
        }
        let row = StoredAdmin {
            name: identity.name.to_string(),
            role: identity.role.to_string(),
            org: identity.org.as_ref().map(ToString::to_string),
            not_after_ms,
            revoked_at_ms: None,
            last_used_ms: Some(now),
        };
        let mut rows = self.rows.write().unwrap_or_else(PoisonError::into_inner);
        if rows.rows.contains_key(&serial) {
            return Ok(false);
        }
        self.write(&serial, &row)?;
        rows.rows.insert(serial, row);
        Ok(true)
    }

    /// Writes the last-use times noted since the last flush. Blocking I/O
    /// (one transaction per certificate used); a failure is retried on the
    /// next flush.
    pub fn flush_uses(&self) -> Result<usize, AdminError> {
        let pending: Vec<(String, StoredAdmin)> = {
            let mut rows = self.rows.write().unwrap_or_else(PoisonError::into_inner);
            let Rows { rows, used } = &mut *rows;
            used.drain().filter_map(|serial| rows.get(&serial).cloned().map(|row| (serial, row))).collect()
        };
        let mut written = 0;
        for (i, (serial, row)) in pending.iter().enumerate() {
            if let Err(e) = self.write(serial, row) {
                let mut rows = self.rows.write().unwrap_or_else(PoisonError::into_inner);
                rows.used.extend(pending[i..].iter().map(|(s, _)| s.clone()));
                return Err(e);
            }
            written += 1;
        }
        Ok(written)
    }

    /// Brings the rows up to what `admins.json` lists: new certificates are
    /// added, details of known ones refreshed from the file, and any the
    /// file marks revoked are revoked. Nothing is ever un-revoked, and rows
    /// the file no longer lists are kept.
    pub fn import(&self, entries: &[AdminCertEntry]) -> Result<AdminImport, AdminError> {
        let mut rows = self.rows.write().unwrap_or_else(PoisonError::into_inner);
        let mut import = AdminImport::default();
        for entry in entries {
            let serial = canonical(&entry.serial)?;
            let known = rows.rows.get(&serial);
            if known.is_none() && rows.rows.len() >= MAX_ADMINS {
                return Err(AdminError::TooMany);
            }
            let revoked_at_ms = known.and_then(|k| k.revoked_at_ms).or(entry.revoked_at.map(millis));
            let row = StoredAdmin {
                name: entry.name.to_string(),
                role: entry.role.to_string(),
                org: entry.org.as_ref().map(ToString::to_string),
                not_after_ms: Some(millis(entry.not_after)),
                revoked_at_ms,
                last_used_ms: known.and_then(|k| k.last_used_ms),
            };
            if known == Some(&row) {
                continue;
            }
            let newly_revoked = known.is_some_and(|k| k.revoked_at_ms.is_none()) && revoked_at_ms.is_some();
            let added = known.is_none();
            self.write(&serial, &row)?;
            if added {
                import.added.push(row.record(&serial));
            }
            if newly_revoked || (added && revoked_at_ms.is_some()) {
                import.revoked.push(row.record(&serial));
            }
            rows.rows.insert(serial, row);
        }
        Ok(import)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::RedbControl;
    use glimpse_common::identity::{AdminName, AdminRole, OrgId};

    fn control(dir: &std::path::Path) -> Arc<dyn ControlStore> {
        let db = redb::Database::create(dir.join("glimpse.redb")).unwrap();
        Arc::new(RedbControl::open(Arc::new(db)).unwrap())
    }

    fn entry(name: &str, serial: &str, revoked: bool) -> AdminCertEntry {
        AdminCertEntry {
            name: AdminName::new(name).unwrap(),
            role: AdminRole::OrgAdmin,
            org: Some(OrgId::new("acme").unwrap()),
            serial: serial.into(),
            not_after: time::OffsetDateTime::from_unix_timestamp(2_000_000_000).unwrap(),
            revoked_at: revoked.then(|| time::OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()),
        }
    }

    #[test]
    fn import_revoke_and_use_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let admins = Admins::open(control(dir.path())).unwrap();
        let first = admins.import(&[entry("alice", "0a", false), entry("bob", "0b", false)]).unwrap();
        assert_eq!(first.added.len(), 2);
        assert!(first.revoked.is_empty());
        assert!(admins.import(&[entry("alice", "0a", false)]).unwrap() == AdminImport::default(), "nothing new");

        let (record, now) = admins.revoke("0A", 1_000).unwrap();
        assert!(now && record.revoked && record.revoked_at_ms == Some(1_000));
        assert!(!admins.revoke("0a", 2_000).unwrap().1, "already revoked");
        assert!(admins.is_revoked("0a") && !admins.is_revoked("0b") && !admins.is_revoked("ff"));
        assert!(matches!(admins.revoke("ff", 1_000), Err(AdminError::Unknown(_))));
        assert!(matches!(admins.revoke("zz", 1_000), Err(AdminError::BadSerial(_))));

        admins.note_use("0b", 5_000);
        admins.note_use("0b", 4_000);
        assert_eq!(admins.get("0b").unwrap().last_used_ms, Some(5_000), "never backwards");
        assert_eq!(admins.flush_uses().unwrap(), 1);
        assert_eq!(admins.flush_uses().unwrap(), 0);
        admins.note_use("0b", 6_000);
        drop(admins);

        let again = Admins::open(control(dir.path())).unwrap();
        assert!(again.is_revoked("0a"), "an API revocation survives a restart");
        // An import that still lists it as active does not bring it back.
        let import = again.import(&[entry("alice", "0a", false), entry("bob", "0b", true)]).unwrap();
        assert!(again.is_revoked("0a"));
        assert_eq!(import.revoked.iter().map(|r| r.serial.as_str()).collect::<Vec<_>>(), ["0b"]);
        let listed = again.list();
        assert_eq!(listed.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["alice", "bob"]);
        assert_eq!(listed[1].last_used_ms, Some(5_000), "only flushed uses are kept");
        assert_eq!(listed[0].not_after_ms, Some(2_000_000_000_000));
    }

    #[test]
    fn certificates_without_a_record_are_added_when_seen() {
        let dir = tempfile::tempdir().unwrap();
        let admins = Admins::open(control(dir.path())).unwrap();
        let ops = AdminIdentity::new(AdminName::new("ops").unwrap(), AdminRole::Operator, None).unwrap();
        assert!(admins.note_seen(&ops, "01ff", Some(9), 100).unwrap());
        assert!(!admins.note_seen(&ops, "01ff", Some(9), 200).unwrap());
        let record = admins.get("01ff").unwrap();
        assert_eq!((record.role.as_str(), record.org, record.last_used_ms), ("operator", None, Some(200)));
        admins.revoke("01ff", 300).unwrap();
        drop(admins);
        let again = Admins::open(control(dir.path())).unwrap();
        assert!(again.is_revoked("01ff"));
        assert!(matches!(again.note_seen(&ops, "nothex", None, 1), Err(AdminError::BadSerial(_))));
    }
}
