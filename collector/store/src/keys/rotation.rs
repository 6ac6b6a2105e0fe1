//! Master key rotation: every key wrapped under the master key is rewrapped
//! under a new one in one transaction; no segment is rewritten (segments
//! are encrypted under organisation keys, which do not change; every
//! version of each is rewrapped).
//!
//! # Steps, and what a crash at each leaves
//!
//! 1. The new key is written to `<master_key_file>.next` (mode 0600,
//!    synced). A crash here leaves the store under the old key and a
//!    successor file that does not open it.
//! 2. One control-store transaction rewraps every row: the master key
//!    check, the audit and configuration keys, every organisation key, every device shared
//!    key and every sealed secret in state rows (console TOTP keys). A
//!    crash before its commit leaves everything under the old key; after
//!    it, everything under the new one, whose file is `.next`.
//! 3. `.next` is renamed over the key file and the directory synced.
//!
//! The master key check row says which key the store is under, so the
//! opening of the store ([`settle`]) finishes or rolls back: if the key
//! file opens the store, a `.next` beside it is a rotation that did not
//! commit and is deleted; if it does not but `.next` does, the rotation
//! committed and `.next` is renamed over the key file. Either way exactly
//! one key opens everything, and it ends up in the configured file.
//!
//! Rotation needs a control store that rewrites rows in one transaction
//! ([`ControlStore::rewrite_rows`]): the embedded one and the shared
//! PostgreSQL control plane both do. On PostgreSQL the other collectors
//! still hold the old key in memory: from the commit on, the store refuses
//! their writes of key material ([`ControlStore::settled_under`]) and
//! their uncached key reads fail, until the operator installs the new key
//! file on each and sends it SIGHUP ([`super::Catalog::adopt_master`]) or
//! restarts it (a start with the old file is refused as a wrong master
//! key). See OPERATIONS.md, "Rotating the master key".
//!
//! `GLIMPSE_TEST_CRASH_AT=<step>` in the environment makes the process
//! abort at that step (as `kill -9` would stop it), for the end-to-end
//! tests that check the above: `master-rotation:next-written`,
//! `master-rotation:committed`, `master-rotation:promoted`; and those of
//! an organisation's data key rotation (see `store::rekey`):
//! `data-key-rotation:committed`, `data-key-reencrypt:replaced`,
//! `data-key-retire:committed`.

use std::path::Path;
use std::sync::OnceLock;

use glimpse_common::identity::{DeviceId, OrgId};
use glimpse_common::secret::{SecretKey, KEY_LEN};

use super::registry::Registry;
use super::{unwrap_key, wrap_key, KeyError, MasterKey};
use super::{
    AUDIT_KEY_AAD, AUDIT_KEY_ROW, CONFIG_KEY_AAD, CONFIG_KEY_ROW, MASTER_CHECK_AAD, MASTER_CHECK_ROW, SEALED_SECRET_AAD,
};
use crate::control::seam::{ControlStore, RowTable};

/// Environment variable naming a step at which the process aborts (tests).
pub const CRASH_AT_ENV: &str = "GLIMPSE_TEST_CRASH_AT";

/// Aborts the process here if [`CRASH_AT_ENV`] names `step`: the fault
/// injection of the crash tests. Read once; unset in production.
pub(crate) fn crash_point(step: &str) {
    static CRASH_AT: OnceLock<Option<String>> = OnceLock::new();
    let at = CRASH_AT.get_or_init(|| std::env::var(CRASH_AT_ENV).ok());
    if at.as_deref() == Some(step) {
        eprintln!("{CRASH_AT_ENV}: aborting at {step}");
        std::process::abort();
    }
}

/// What a master key rotation rewrapped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MasterRotation {
    /// Organisation data keys rewrapped.
    pub org_keys: u64,
    /// Device shared keys rewrapped.
    pub device_keys: u64,
    /// Other rows rewritten: the key check, the audit key, sealed secrets.
    pub other_rows: u64,
    /// The key file now holding the new key.
    pub key_file: std::path::PathBuf,
    /// Set when the rotation committed but its key file could not be
    /// renamed into place: why. The new key is in use and in
    /// `<key_file>.next`; the next start moves it into place.
    pub unfinished: Option<String>,
}

/// Reseals secrets sealed under the old master key (see
/// [`super::Catalog::seal_secret`]) under the new one, for the owners of
/// state rows that hold them.
pub struct Resealer<'a> {
    old: &'a MasterKey,
    new: &'a MasterKey,
}

impl Resealer<'_> {
    /// `sealed` (sealed for `purpose` under the old key) sealed afresh
    /// under the new key; `None` if it does not open under the old key.
    pub fn reseal(&self, purpose: &str, sealed: &[u8]) -> Option<Vec<u8>> {
        let aad = [SEALED_SECRET_AAD, purpose.as_bytes()].concat();
        let secret = unwrap_key(self.old, &aad, sealed)?;
        wrap_key(self.new, &aad, &secret).ok()
    }
}

/// Rewrites a state row holding sealed secrets: given its name, its value
/// and a [`Resealer`], the new value (`Ok(None)`: the row holds none), or
/// why it cannot (the rotation is then abandoned).
pub type StateResealer<'a> = dyn Fn(&str, &str, &Resealer<'_>) -> Result<Option<String>, String> + 'a;

/// The master key check value: 32 zero bytes wrapped under `master`.
pub(super) fn check_value(master: &MasterKey) -> Result<Vec<u8>, KeyError> {
    wrap_key(master, MASTER_CHECK_AAD, &SecretKey::from_bytes([0; KEY_LEN]))
}

/// Whether `stored` is the check value of `master`.
pub(super) fn opens(master: &MasterKey, stored: &[u8]) -> bool {
    unwrap_key(master, MASTER_CHECK_AAD, stored).is_some_and(|k| k == SecretKey::from_bytes([0; KEY_LEN]))
}

/// The key that opens `control`: `master` or, after a rotation that
/// committed but did not rename its key file, the successor beside it.
/// With `files`, finishes the interrupted rotation on disk (renames the
/// successor over the key file) or rolls it back (deletes a successor that
/// does not open the store). A new store records `master`'s check value.
pub(super) fn settle(
    control: &dyn ControlStore,
    master: MasterKey,
    location: &Path,
    files: bool,
) -> Result<MasterKey, KeyError> {
    let stored = control.meta_or_insert(MASTER_CHECK_ROW, &check_value(&master)?)?;
    let settled = settle_files(master, &stored, location, files)?;
    control.settled_under(&stored);
    Ok(settled)
}

/// [`settle`] once the check value is read.
fn settle_files(master: MasterKey, stored: &[u8], location: &Path, files: bool) -> Result<MasterKey, KeyError> {
    if opens(&master, stored) {
        if let Some(stale) = master.pending_file().filter(|_| files) {
            std::fs::remove_file(&stale).map_err(|source| KeyError::MasterKeyIo { path: stale.clone(), source })?;
            tracing::warn!(file = %stale.display(), "master key rotation had not committed: rolled back (new key file removed)");
        }
        return Ok(master);
    }
    let wrong = || KeyError::WrongMasterKey { path: location.to_path_buf() };
    let next = master.pending().filter(|next| opens(next, stored)).ok_or_else(wrong)?;
    match master.file() {
        Some(file) if files => {
            let file = file.to_path_buf();
            let mut next = next;
            MasterKey::promote(&mut next, &file)?;
            tracing::warn!(file = %file.display(), "master key rotation had committed: finished (new key file in place)");
            Ok(next)
        }
        _ => Ok(next),
    }
}

/// Rotates `old` to a new master key beside its file (see the module
/// header), rewrapping every row of `control`; `reseal` rewrites state rows
/// holding sealed secrets. The caller holds the master key exclusively.
/// Returns the new key (naming the key file) and what was rewrapped.
pub(super) fn rotate(
    control: &dyn ControlStore,
    old: &MasterKey,
    reseal: &StateResealer<'_>,
) -> Result<(MasterKey, MasterRotation), KeyError> {
    let file = old
        .file()
        .ok_or(KeyError::RotationUnavailable { reason: "the master key was not loaded from a file".into() })?;
    if !control.rewrites_rows() {
        return Err(KeyError::RotationUnavailable {
            reason: format!(
                "{} cannot rewrap every key in one transaction (a control plane shared by several collectors)",
                control.describe()
            ),
        });
    }
    let file = file.to_path_buf();
    let next = MasterKey::generate_next(&file)?;
    crash_point("master-rotation:next-written");
    let mut report = MasterRotation { key_file: file.clone(), ..MasterRotation::default() };
    let mut new_check = None;
    let rewritten = {
        let mut counts = MasterRotation::default();
        let mut edit = |table: RowTable, key: &[&str], value: &[u8]| -> Result<Option<Vec<u8>>, String> {
            let out = rewrap_row(old, &next, reseal, table, key, value).map_err(|e| e.to_string())?;
            if (table, key) == (RowTable::Meta, &[MASTER_CHECK_ROW][..]) {
                new_check.clone_from(&out);
            }
            if out.is_some() {
                match table {
                    RowTable::OrgKey => counts.org_keys += 1,
                    RowTable::Device => counts.device_keys += 1,
                    _ => counts.other_rows += 1,
                }
            }
            Ok(out)
        };
        let result = control.rewrite_rows(&mut edit);
        result.map(|_| counts)
    };
    let counts = match rewritten {
        Ok(counts) => counts,
        Err(e) => {
            // A database server may have committed a transaction whose
            // COMMIT failed to answer (the connection lost at that moment):
            // the check row says which key the store is under now.
            match control.meta_or_insert(MASTER_CHECK_ROW, &check_value(old)?) {
                Ok(stored) if opens(&next, &stored) => {
                    tracing::warn!("the master key rotation's commit reported an error but committed: {e}");
                    new_check = Some(stored);
                    count_rows(control, &mut report)?;
                    MasterRotation::default()
                }
                Ok(_) => {
                    // Nothing committed: the store is under the old key still.
                    let next_file = MasterKey::next_path(&file);
                    drop(next);
                    let _ = std::fs::remove_file(&next_file);
                    return Err(KeyError::Control(e));
                }
                // Unknown: `.next` stays, and the next start settles it
                // (the key that opens the check row wins).
                Err(_) => return Err(KeyError::Control(e)),
            }
        }
    };
    if counts != MasterRotation::default() {
        (report.org_keys, report.device_keys, report.other_rows) =
            (counts.org_keys, counts.device_keys, counts.other_rows);
    }
    // This process's writes are under the new key from now on.
    if let Some(check) = &new_check {
        control.settled_under(check);
    }
    crash_point("master-rotation:committed");
    control.flush();
    let mut next = next;
    if let Err(e) = MasterKey::promote(&mut next, &file) {
        report.unfinished = Some(e.to_string());
    }
    crash_point("master-rotation:promoted");
    Ok((next, report))
}

/// The report's counts after a commit whose answer was lost: what the
/// store holds (every organisation key and device was rewrapped).
fn count_rows(control: &dyn ControlStore, report: &mut MasterRotation) -> Result<(), KeyError> {
    report.org_keys = control.org_key_names()?.len() as u64;
    report.device_keys = control.devices()?.len() as u64;
    Ok(())
}

/// One row rewrapped from `old` to `new`; `None` for rows that hold
/// nothing wrapped under the master key.
fn rewrap_row(
    old: &MasterKey,
    new: &MasterKey,
    reseal: &StateResealer<'_>,
    table: RowTable,
    key: &[&str],
    value: &[u8],
) -> Result<Option<Vec<u8>>, KeyError> {
    let corrupt = || KeyError::Corrupt { what: format!("{table:?} {:?}", key.join("/")) };
    match (table, key) {
        (RowTable::Meta, [MASTER_CHECK_ROW]) => {
            if !opens(old, value) {
                return Err(KeyError::WrongMasterKey { path: MASTER_CHECK_ROW.into() });
            }
            Ok(Some(check_value(new)?))
        }
        (RowTable::Meta, [AUDIT_KEY_ROW]) => {
            let key = unwrap_key(old, AUDIT_KEY_AAD, value).ok_or_else(corrupt)?;
            Ok(Some(wrap_key(new, AUDIT_KEY_AAD, &key)?))
        }
        (RowTable::Meta, [CONFIG_KEY_ROW]) => {
            let key = unwrap_key(old, CONFIG_KEY_AAD, value).ok_or_else(corrupt)?;
            Ok(Some(wrap_key(new, CONFIG_KEY_AAD, &key)?))
        }
        (RowTable::OrgKey, [org]) => {
            let org = OrgId::new(*org).map_err(|_| corrupt())?;
            // Every version of the organisation's data key, one row.
            Ok(Some(super::org::rewrap_row(old, new, &org, value)?))
        }
        (RowTable::Device, [org, device]) => {
            let org = OrgId::new(*org).map_err(|_| corrupt())?;
            let device = DeviceId::new(*device).map_err(|_| corrupt())?;
            Ok(Some(Registry::rewrap_row(old, new, &org, &device, value)?))
        }
        (RowTable::State, [name]) => {
            let text = std::str::from_utf8(value).map_err(|_| corrupt())?;
            let resealer = Resealer { old, new };
            let out = reseal(name, text, &resealer).map_err(|detail| KeyError::Corrupt { what: detail })?;
            Ok(out.map(String::into_bytes))
        }
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use glimpse_common::identity::{DeviceIdentity, DeviceKind};

    use super::*;
    use crate::keys::{Catalog, DeviceRegistration};

    const SEALED_STATE: &str = "test-sealed:ada";

    fn org(name: &str) -> OrgId {
        OrgId::new(name).unwrap()
    }

    /// A key store under a master key file, with an organisation key, a
    /// device and a sealed secret in a state row (hex, as the console's
    /// accounts keep theirs).
    struct Fixture {
        _dir: tempfile::TempDir,
        data: std::path::PathBuf,
        key_file: std::path::PathBuf,
        org_key: SecretKey,
        device_key: SecretKey,
        secret: SecretKey,
        audit_key: SecretKey,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let key_file = dir.path().join("master.key");
        let catalog = Catalog::open(&data, MasterKey::generate_file(&key_file).unwrap()).unwrap();
        let org_key = catalog.org_keys().get_or_create(&org("acme")).unwrap().secret().clone();
        let device_key = SecretKey::generate().unwrap();
        catalog
            .registry()
            .upsert(DeviceRegistration {
                identity: DeviceIdentity {
                    org: org("acme"),
                    device: DeviceId::new("ap-1").unwrap(),
                    kind: DeviceKind::Ap,
                },
                shared_key: device_key.clone(),
                cert_serial: "0a".into(),
                revoked: false,
                site: None,
            })
            .unwrap();
        let secret = SecretKey::generate().unwrap();
        let sealed = catalog.seal_secret("totp:ada", &secret).unwrap();
        catalog.control().replace_state(SEALED_STATE, &hex::encode(sealed)).unwrap();
        catalog.control().replace_state("plain", "nothing sealed here").unwrap();
        let audit_key = catalog.audit_key().unwrap();
        Fixture { _dir: dir, data, key_file, org_key, device_key, secret, audit_key }
    }

    fn reseal_hex(name: &str, value: &str, r: &Resealer<'_>) -> Result<Option<String>, String> {
        if name != SEALED_STATE {
            return Ok(None);
        }
        let sealed = hex::decode(value).map_err(|e| e.to_string())?;
        r.reseal("totp:ada", &sealed).map(hex::encode).map(Some).ok_or_else(|| "does not open".to_owned())
    }

    /// Everything the fixture stored reads back through `catalog`.
    fn assert_intact(f: &Fixture, catalog: &Catalog) {
        assert_eq!(catalog.org_keys().get(&org("acme")).unwrap().unwrap().secret(), &f.org_key);
        let device = catalog.registry().get(&org("acme"), &DeviceId::new("ap-1").unwrap()).unwrap().unwrap();
        assert_eq!(device.shared_key, f.device_key);
        let sealed = hex::decode(catalog.control().state(SEALED_STATE).unwrap().unwrap()).unwrap();
        assert_eq!(catalog.open_secret("totp:ada", &sealed).unwrap(), f.secret);
        assert_eq!(catalog.audit_key().unwrap(), f.audit_key);
        assert_eq!(catalog.control().state("plain").unwrap().as_deref(), Some("nothing sealed here"));
    }

    fn key_text(path: &Path) -> String {
        std::fs::read_to_string(path).unwrap()
    }

    #[test]
    fn rotation_rewraps_every_key_and_only_the_new_key_opens_the_store() {
        let f = fixture();
        let old = key_text(&f.key_file);
        let catalog = Catalog::open(&f.data, MasterKey::load(&f.key_file).unwrap()).unwrap();
        let wrapped_before = catalog.org_keys().wrapped(&org("acme")).unwrap().unwrap();
        let report = catalog.rotate_master(&reseal_hex).unwrap();
        assert_eq!((report.org_keys, report.device_keys), (1, 1));
        // The check, the audit and configuration keys and the one sealed secret.
        assert_eq!(report.other_rows, 4);
        assert_eq!(report.key_file, f.key_file);
        assert!(report.unfinished.is_none());
        assert_ne!(catalog.org_keys().wrapped(&org("acme")).unwrap().unwrap(), wrapped_before);
        // In use at once, without a restart, for old keys and new.
        assert_intact(&f, &catalog);
        catalog.org_keys().forget(None);
        assert_intact(&f, &catalog);
        catalog.org_keys().get_or_create(&org("globex")).unwrap();
        drop(catalog);

        let new = key_text(&f.key_file);
        assert_ne!(new, old);
        assert!(!MasterKey::next_path(&f.key_file).exists());
        let catalog = Catalog::open(&f.data, MasterKey::load(&f.key_file).unwrap()).unwrap();
        assert_intact(&f, &catalog);
        assert!(catalog.org_keys().get(&org("globex")).unwrap().is_some());
        drop(catalog);
        let old_key = MasterKey::from_secret(SecretKey::from_hex(old.trim()).unwrap());
        let err = Catalog::open(&f.data, old_key).unwrap_err();
        assert!(matches!(err, KeyError::WrongMasterKey { .. }), "{err}");
    }

    #[test]
    fn a_rotation_that_did_not_commit_is_rolled_back_at_open() {
        let f = fixture();
        let old = key_text(&f.key_file);
        // Step 1 done, the crash before the commit.
        MasterKey::generate_next(&f.key_file).unwrap();
        let next = MasterKey::next_path(&f.key_file);
        assert!(next.exists());
        let catalog = Catalog::open(&f.data, MasterKey::load(&f.key_file).unwrap()).unwrap();
        assert!(!next.exists(), "the successor that never committed is removed");
        assert_eq!(key_text(&f.key_file), old);
        assert_intact(&f, &catalog);
        drop(catalog);
        // A torn successor (a crash while writing it) likewise.
        std::fs::write(&next, "0123").unwrap();
        Catalog::open(&f.data, MasterKey::load(&f.key_file).unwrap()).unwrap();
        assert!(!next.exists());
    }

    #[test]
    fn a_rotation_that_committed_is_finished_at_open() {
        let f = fixture();
        let old = key_text(&f.key_file);
        let catalog = Catalog::open(&f.data, MasterKey::load(&f.key_file).unwrap()).unwrap();
        catalog.rotate_master(&reseal_hex).unwrap();
        drop(catalog);
        let new = key_text(&f.key_file);
        // As a crash after the commit and before the rename leaves it.
        let next = MasterKey::next_path(&f.key_file);
        std::fs::rename(&f.key_file, &next).unwrap();
        std::fs::write(&f.key_file, &old).unwrap();
        std::fs::set_permissions(&f.key_file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();

        // The read-only tools use the successor without moving files.
        let catalog = Catalog::open_read_only(&f.data, MasterKey::load(&f.key_file).unwrap()).unwrap();
        assert_intact(&f, &catalog);
        drop(catalog);
        assert!(next.exists());

        let catalog = Catalog::open(&f.data, MasterKey::load(&f.key_file).unwrap()).unwrap();
        assert_intact(&f, &catalog);
        assert!(!next.exists());
        assert_eq!(key_text(&f.key_file), new);
        drop(catalog);
        Catalog::open(&f.data, MasterKey::load(&f.key_file).unwrap()).unwrap();
    }

    #[test]
    fn a_row_that_does_not_rewrap_abandons_the_whole_rotation() {
        let f = fixture();
        let old = key_text(&f.key_file);
        let catalog = Catalog::open(&f.data, MasterKey::load(&f.key_file).unwrap()).unwrap();
        let refuse = |name: &str, _: &str, _: &Resealer<'_>| -> Result<Option<String>, String> {
            if name == SEALED_STATE {
                Err("cannot reseal".into())
            } else {
                Ok(None)
            }
        };
        let err = catalog.rotate_master(&refuse).unwrap_err();
        assert!(err.to_string().contains("cannot reseal"), "{err}");
        assert!(!MasterKey::next_path(&f.key_file).exists());
        assert_eq!(key_text(&f.key_file), old);
        assert_intact(&f, &catalog);
        drop(catalog);
        let catalog = Catalog::open(&f.data, MasterKey::load(&f.key_file).unwrap()).unwrap();
        assert_intact(&f, &catalog);

        // A control store that cannot rewrite its rows in one transaction
        // is refused before any file is written.
        #[derive(Debug)]
        struct Shared(Arc<dyn ControlStore>);
        impl ControlStore for Shared {
            fn meta_or_insert(&self, n: &str, v: &[u8]) -> Result<Vec<u8>, crate::control::ControlError> {
                self.0.meta_or_insert(n, v)
            }
            fn device(&self, o: &str, d: &str) -> Result<Option<Vec<u8>>, crate::control::ControlError> {
                self.0.device(o, d)
            }
            fn devices(&self) -> Result<Vec<crate::control::seam::DeviceRow>, crate::control::ControlError> {
                self.0.devices()
            }
            fn put_devices(&self, r: &[crate::control::seam::DeviceRow]) -> Result<(), crate::control::ControlError> {
                self.0.put_devices(r)
            }
            fn update_device(
                &self,
                o: &str,
                d: &str,
                e: &mut dyn FnMut(&[u8]) -> Option<Vec<u8>>,
            ) -> Result<bool, crate::control::ControlError> {
                self.0.update_device(o, d, e)
            }
            fn ssh_key(&self, o: &str, d: &str) -> Result<Option<String>, crate::control::ControlError> {
                self.0.ssh_key(o, d)
            }
            fn set_ssh_key(&self, o: &str, d: &str, l: Option<&str>) -> Result<(), crate::control::ControlError> {
                self.0.set_ssh_key(o, d, l)
            }
            fn set_ssh_keys(&self, r: &[crate::control::seam::SshKeyRow]) -> Result<(), crate::control::ControlError> {
                self.0.set_ssh_keys(r)
            }
            fn stored_seq(&self, o: &str, d: &str, s: u64) -> Result<u64, crate::control::ControlError> {
                self.0.stored_seq(o, d, s)
            }
            fn raise_stored_seqs(
                &self,
                u: &[crate::control::seam::StreamSeq],
                s: &[(crate::control::SegmentRowKey, crate::control::SegmentRow)],
            ) -> Result<(), crate::control::ControlError> {
                self.0.raise_stored_seqs(u, s)
            }
            fn segment_rows(
                &self,
                o: &str,
                k: &str,
            ) -> Result<Vec<(crate::control::SegmentRowKey, crate::control::SegmentRow)>, crate::control::ControlError>
            {
                self.0.segment_rows(o, k)
            }
            fn replace_segment_rows(
                &self,
                r: &[crate::control::SegmentRowKey],
                p: &[(crate::control::SegmentRowKey, crate::control::SegmentRow)],
            ) -> Result<(), crate::control::ControlError> {
                self.0.replace_segment_rows(r, p)
            }
            fn org_key(&self, o: &str) -> Result<Option<Vec<u8>>, crate::control::ControlError> {
                self.0.org_key(o)
            }
            fn insert_org_key_if_absent(
                &self,
                o: &str,
                w: &[u8],
            ) -> Result<(Vec<u8>, bool), crate::control::ControlError> {
                self.0.insert_org_key_if_absent(o, w)
            }
            fn replace_org_key(&self, o: &str, e: &[u8], n: &[u8]) -> Result<bool, crate::control::ControlError> {
                self.0.replace_org_key(o, e, n)
            }
            fn remove_org_key(&self, o: &str) -> Result<bool, crate::control::ControlError> {
                self.0.remove_org_key(o)
            }
            fn org_key_names(&self) -> Result<Vec<String>, crate::control::ControlError> {
                self.0.org_key_names()
            }
            fn policies(&self) -> Result<Vec<(String, Vec<u8>)>, crate::control::ControlError> {
                self.0.policies()
            }
            fn policy(&self, o: &str) -> Result<Option<Vec<u8>>, crate::control::ControlError> {
                self.0.policy(o)
            }
            fn put_policy(&self, o: &str, r: &[u8]) -> Result<(), crate::control::ControlError> {
                self.0.put_policy(o, r)
            }
            fn update_policy(
                &self,
                o: &str,
                e: &mut crate::control::seam::PolicyEdit<'_>,
            ) -> Result<Option<Vec<u8>>, crate::control::ControlError> {
                self.0.update_policy(o, e)
            }
            fn replace_state(&self, n: &str, v: &str) -> Result<Option<String>, crate::control::ControlError> {
                self.0.replace_state(n, v)
            }
            fn state(&self, n: &str) -> Result<Option<String>, crate::control::ControlError> {
                self.0.state(n)
            }
            fn states_with_prefix(&self, p: &str) -> Result<Vec<(String, String)>, crate::control::ControlError> {
                self.0.states_with_prefix(p)
            }
            fn audit_head(&self) -> Result<Option<Vec<u8>>, crate::control::ControlError> {
                self.0.audit_head()
            }
            fn set_audit_head(&self, h: &[u8]) -> Result<(), crate::control::ControlError> {
                self.0.set_audit_head(h)
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("shared.key");
        let db = redb::Builder::new().create(dir.path().join("shared.redb")).unwrap();
        let inner: Arc<dyn ControlStore> = Arc::new(crate::control::RedbControl::open(Arc::new(db)).unwrap());
        let shared: Arc<dyn ControlStore> = Arc::new(Shared(inner));
        let catalog =
            Catalog::with_control(dir.path().join("shared"), shared, MasterKey::generate_file(&key_file).unwrap())
                .unwrap();
        let before = key_text(&key_file);
        let err = catalog.rotate_master(&reseal_hex).unwrap_err();
        assert!(matches!(err, KeyError::RotationUnavailable { .. }), "{err}");
        assert!(!MasterKey::next_path(&key_file).exists());
        assert_eq!(key_text(&key_file), before);

        // A key held only in memory has no file to rotate.
        let dir = tempfile::tempdir().unwrap();
        let memory = Catalog::open(dir.path(), crate::keys::test_master(3)).unwrap();
        let err = memory.rotate_master(&reseal_hex).unwrap_err();
        assert!(matches!(err, KeyError::RotationUnavailable { .. }), "{err}");
    }

    #[test]
    fn a_catalog_whose_key_was_rotated_elsewhere_adopts_the_new_key_file() {
        // Two catalogs over one control store, as two collectors over one
        // shared database, each with its own copy of the key file.
        let dir = tempfile::tempdir().unwrap();
        let (key_a, key_b) = (dir.path().join("a.key"), dir.path().join("b.key"));
        MasterKey::generate_file(&key_a).unwrap();
        std::fs::copy(&key_a, &key_b).unwrap();
        let db = redb::Builder::new().create(dir.path().join("shared.redb")).unwrap();
        let control: Arc<dyn ControlStore> = Arc::new(crate::control::RedbControl::open(Arc::new(db)).unwrap());
        let a = Catalog::with_control("shared".into(), Arc::clone(&control), MasterKey::load(&key_a).unwrap()).unwrap();
        let b = Catalog::with_control("shared".into(), control, MasterKey::load(&key_b).unwrap()).unwrap();
        a.org_keys().get_or_create(&org("acme")).unwrap();
        assert!(b.master_is_current().unwrap());
        assert!(!b.adopt_master(MasterKey::load(&key_b).unwrap()).unwrap(), "nothing to adopt");
        a.rotate_master(&|_, _, _| Ok(None)).unwrap();
        assert!(!b.master_is_current().unwrap());
        b.org_keys().forget(None);
        assert!(matches!(b.org_keys().get(&org("acme")).unwrap_err(), KeyError::Unwrap { .. }));
        let err = b.adopt_master(MasterKey::load(&key_b).unwrap()).unwrap_err();
        assert!(matches!(err, KeyError::WrongMasterKey { .. }), "{err}");
        std::fs::copy(&key_a, &key_b).unwrap();
        assert!(b.adopt_master(MasterKey::load(&key_b).unwrap()).unwrap());
        assert!(b.master_is_current().unwrap());
        assert!(b.org_keys().get(&org("acme")).unwrap().is_some());
        b.org_keys().get_or_create(&org("globex")).unwrap();
        assert!(a.org_keys().get(&org("globex")).unwrap().is_some());
    }

    #[test]
    fn key_use_waits_for_a_rotation_in_progress() {
        let f = fixture();
        let catalog = Arc::new(Catalog::open(&f.data, MasterKey::load(&f.key_file).unwrap()).unwrap());
        std::thread::scope(|scope| {
            for i in 0..4 {
                let catalog = Arc::clone(&catalog);
                scope.spawn(move || {
                    for j in 0..20 {
                        catalog.org_keys().get_or_create(&org(&format!("org-{i}-{j}"))).unwrap();
                    }
                });
            }
            catalog.rotate_master(&reseal_hex).unwrap();
        });
        drop(catalog);
        // Every key created before, during or after the rotation opens
        // under the key now in the file.
        let catalog = Catalog::open(&f.data, MasterKey::load(&f.key_file).unwrap()).unwrap();
        for i in 0..4 {
            for j in 0..20 {
                assert!(catalog.org_keys().get(&org(&format!("org-{i}-{j}"))).unwrap().is_some());
            }
        }
        assert_intact(&f, &catalog);
    }
}
