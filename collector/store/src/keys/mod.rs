//! Key management: the master key, per-organisation data keys and the device
//! registry, all kept in one embedded database, `<data_dir>/glimpse.redb`.
//!
//! Hierarchy: the master key (a file the operator provides, see
//! [`MasterKey`]) wraps every other key; nothing in the database is usable
//! without it. Each organisation gets a random 256-bit data key on first use
//! ([`OrgKeys`]) and each device's manufacturing shared key is kept in the
//! [`Registry`]; both are stored only wrapped.
//!
//! Wrapped key format (61 bytes): `[u8 version = 1][96-bit random nonce]
//! [AES-256-GCM(master, key) || 16-byte tag]`. The associated data names
//! what the key is for, so a wrapped key copied to another row does not
//! unwrap:
//!
//! - organisation data key: `b"glimpse-org-key-v1" || org` for version 1,
//!   `|| b":" || version (u32 big-endian)` for later versions; the row
//!   holds the organisation's versions (see `versions.rs`)
//! - organisation pseudonym key: `b"glimpse-org-pseudonym-key-v1" || org`
//! - device shared key: `b"glimpse-device-key-v1" || org || b":" || device`
//!   (names cannot contain `:`, so the split is unambiguous)
//! - master key check: `b"glimpse-master-check-v1"`, wrapping 32 zero bytes,
//!   so a wrong master key is refused when the store opens rather than on
//!   the first read.
//!
//! The database is checked whole before use and has a verified copy
//! (`glimpse.redb.backup`, see [`crate::control::backup`]); a damaged file is
//! refused ([`KeyError::Damaged`]) and restored by [`recover_catalog`].
//!
//! - audit key: `b"glimpse-audit-key-v1"`; the key that MACs the audit
//!   chain, first derived from the master key ([`crate::audit::derive_audit_key`])
//!   and since kept wrapped in the `meta` row `audit-key`, so that a
//!   master key rotation leaves the chain verifiable.
//!
//! - configuration key: `b"glimpse-config-key-v1"`; the key that seals the
//!   values of the control store's configuration rows (registry, SSH keys,
//!   decisions, state: see [`crate::control::sealed`]), derived from the
//!   master key by HKDF-SHA256 when first needed and since kept wrapped in
//!   the `meta` row `config-key`, for the same reason.
//!
//! The master key is rotated online by rewrapping every one of these rows
//! in one transaction ([`Catalog::rotate_master`], crash-safe: see
//! [`rotation`]); no segment is rewritten.
//!
//! What is deliberately not here: compaction of freed database pages (a
//! destroyed organisation key, or a key wrapped under a rotated-out master
//! key, may survive in a free page until redb reuses it).

mod master;
mod org;
mod registry;
pub mod rotation;
mod versions;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use glimpse_common::identity::{DeviceId, OrgId};
use glimpse_common::secret::{SecretKey, KEY_LEN};
use zeroize::Zeroizing;

use crate::control::redb_store::RedbControl;
use crate::control::seam::{ControlError, ControlStore, MASTER_CHECK_ROW};

pub use master::MasterKey;
pub use rotation::{MasterRotation, Resealer, StateResealer};

use master::MasterCell;
pub use org::{DataKeyRotation, KeyVersion, OrgKey, OrgKeys};
pub use registry::{DeviceRegistration, Registry};
pub use versions::{KeyState, MAX_KEY_VERSIONS};

/// File name of the key store and registry inside the data directory.
pub const CATALOG_FILE: &str = "glimpse.redb";

/// Length of an AES-GCM nonce, in bytes.
pub(crate) const NONCE_LEN: usize = 12;
/// Length of an AES-GCM authentication tag, in bytes.
pub(crate) const TAG_LEN: usize = 16;
const WRAP_VERSION: u8 = 1;
const WRAPPED_LEN: usize = 1 + NONCE_LEN + KEY_LEN + TAG_LEN;

const ORG_KEY_AAD: &[u8] = b"glimpse-org-key-v1";
const DEVICE_KEY_AAD: &[u8] = b"glimpse-device-key-v1";
const MASTER_CHECK_AAD: &[u8] = b"glimpse-master-check-v1";
/// Associated data prefix of other secrets sealed under the master key
/// (see [`Catalog::seal_secret`]); the purpose label follows it.
const SEALED_SECRET_AAD: &[u8] = b"glimpse-sealed-secret-v1:";
/// Associated data of the wrapped audit key.
const AUDIT_KEY_AAD: &[u8] = b"glimpse-audit-key-v1";
const AUDIT_KEY_ROW: &str = "audit-key";
/// Associated data of the wrapped configuration key.
const CONFIG_KEY_AAD: &[u8] = b"glimpse-config-key-v1";
const CONFIG_KEY_ROW: &str = "config-key";
/// HKDF info of the configuration key's derivation from the master key.
const CONFIG_KEY_INFO: &[u8] = b"glimpse-config-seal-v1";

/// A key store, registry or master key operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The master key file does not exist.
    #[error("master key file {} does not exist", path.display())]
    MasterKeyMissing {
        /// The file that was looked for.
        path: PathBuf,
    },
    /// The master key file is readable or writable by group or others
    /// (the rule of `glimpse_common::permissions`, worded as everywhere).
    #[error(
        "master key file {} has mode {mode:04o}: group or others can access it; refused (run `chmod 600 {}`)",
        path.display(),
        path.display()
    )]
    MasterKeyPermissions {
        /// The offending file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The master key file does not hold exactly 64 hex digits.
    #[error("master key file {} must hold 64 hex digits and an optional newline: {problem}", path.display())]
    MasterKeyFormat {
        /// The offending file.
        path: PathBuf,
        /// What is wrong, without any of the file's content.
        problem: String,
    },
    /// `generate_file` refused to overwrite an existing file.
    #[error("master key file {} already exists; refusing to overwrite it", path.display())]
    MasterKeyExists {
        /// The existing file.
        path: PathBuf,
    },
    /// Reading or writing the master key file failed.
    #[error("master key file {}: {source}", path.display())]
    MasterKeyIo {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The master key does not match the one the key store was created with.
    #[error("the master key does not open the key store {}: wrong master key file, or a corrupted key store", path.display())]
    WrongMasterKey {
        /// The key store database.
        path: PathBuf,
    },
    /// An organisation's wrapped data key did not authenticate.
    #[error("cannot unwrap key for organisation {org}: wrong master key or corrupted key store")]
    Unwrap {
        /// The organisation.
        org: OrgId,
    },
    /// The organisation has no data key (nothing stored, or destroyed).
    #[error("organisation {org} has no data key")]
    NoDataKey {
        /// The organisation.
        org: OrgId,
    },
    /// A device's wrapped shared key did not authenticate.
    #[error("cannot unwrap shared key for device {org}/{device}: wrong master key or corrupted key store")]
    DeviceUnwrap {
        /// The device's organisation.
        org: OrgId,
        /// The device.
        device: DeviceId,
    },
    /// A registry row could not be decoded.
    #[error("corrupted key store entry {what}")]
    Corrupt {
        /// Which entry.
        what: String,
    },
    /// The key store file could not be opened or created.
    #[error("key store {}: {source}", path.display())]
    Io {
        /// The database file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The key store file is damaged: it does not open, its checksums do
    /// not match or its rows do not read (redb panics on some damage;
    /// that is caught and reported here).
    #[error(
        "key store {} is damaged ({detail}); {advice}",
        path.display(),
        advice = recovery_advice(path)
    )]
    Damaged {
        /// The database file.
        path: PathBuf,
        /// What failed.
        detail: String,
    },
    /// The verified copy cannot be used either.
    #[error("the key store's verified copy {} cannot be used: {detail}", path.display())]
    BackupUnusable {
        /// The copy.
        path: PathBuf,
        /// Why.
        detail: String,
    },
    /// Another process (a running collector) has the key store open.
    #[error(
        "key store {} is in use by another process (a running `glimpse-collector serve`?): stop it first, \
         or use the running collector's admin API",
        path.display()
    )]
    Locked {
        /// The database file.
        path: PathBuf,
    },
    /// `recover` found nothing to recover.
    #[error("key store {} is intact; nothing to recover", path.display())]
    Intact {
        /// The database file.
        path: PathBuf,
    },
    /// The embedded database failed.
    #[error("key store database: {0}")]
    Database(#[source] Box<redb::Error>),
    /// A group commit of stream sequence numbers failed; every batch in
    /// the group is refused.
    #[error("cannot record stored batch sequences: {0}")]
    SequenceCommit(String),
    /// The operating system's random number generator failed.
    #[error("the system random number generator failed")]
    Random,
    /// A master key rotation cannot be done here.
    #[error("master key rotation refused: {reason}")]
    RotationUnavailable {
        /// Why.
        reason: String,
    },
    /// A master key rotation committed (every key is rewrapped and the new
    /// key is in use) but its key file could not be moved into place.
    #[error(
        "master key rotation committed, but the new key file could not be moved into place ({detail}); \
         it is in <master_key_file>.next and the next start moves it"
    )]
    RotationUnfinished {
        /// What failed.
        detail: String,
    },
    /// The control store failed (see [`ControlError::is_transient`]).
    #[error(transparent)]
    Control(#[from] ControlError),
}

/// What to do about a damaged key store, given whether a copy exists.
fn recovery_advice(path: &Path) -> String {
    let copy = crate::control::redb_store::backup_path_of(path);
    if copy.exists() {
        format!(
            "stop the collector and run `glimpse-collector recover --config <collector.toml>` to restore it \
             from its verified copy {} (segments are untouched)",
            copy.display()
        )
    } else {
        format!(
            "there is no verified copy {}; restore glimpse.redb and glimpse.redb.backup from your backups \
             (segments are untouched)",
            copy.display()
        )
    }
}

/// Largest key store read into memory for checking (a registry of a
/// million devices is far smaller).
pub const MAX_CATALOG_BYTES: u64 = 1 << 30;

/// Reads a key store file whole, bounded.
fn read_bounded(path: &Path, file: &std::fs::File) -> Result<Vec<u8>, KeyError> {
    use std::io::Read;
    let mut bytes = Vec::new();
    file.take(MAX_CATALOG_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| KeyError::Io { path: path.to_path_buf(), source })?;
    if bytes.len() as u64 > MAX_CATALOG_BYTES {
        return Err(KeyError::Damaged {
            path: path.to_path_buf(),
            detail: format!("larger than {MAX_CATALOG_BYTES} bytes"),
        });
    }
    Ok(bytes)
}

/// Where an opened catalog's rows came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatalogSource {
    /// The database file itself.
    Primary,
    /// Its verified copy, because a running collector holds the file: as of
    /// the copy's last write.
    Copy(PathBuf),
}

/// What `recover` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoverReport {
    /// The restored database.
    pub path: PathBuf,
    /// Where the damaged file was moved.
    pub damaged_moved_to: Option<PathBuf>,
    /// Rows restored.
    pub rows: usize,
    /// Organisation keys restored.
    pub org_keys: usize,
}

/// Restores `<data_dir>/glimpse.redb` from its verified copy: checks the
/// copy and that `master` opens it, moves the damaged file aside
/// (`glimpse.redb.damaged.N`) and writes a fresh database with the copy's
/// rows. Refuses while a collector has the store open, and when the file
/// is intact. Segments are not touched.
pub fn recover_catalog(data_dir: &Path, master: &MasterKey) -> Result<RecoverReport, KeyError> {
    let path = data_dir.join(CATALOG_FILE);
    let copy = crate::control::redb_store::backup_path_of(&path);
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| KeyError::Io { path: p, source }
    };
    if let Ok(file) = std::fs::File::open(&path) {
        if let Err(std::fs::TryLockError::WouldBlock) = file.try_lock() {
            return Err(KeyError::Locked { path });
        }
        let bytes = read_bounded(&path, &file)?;
        if !bytes.is_empty() && RedbControl::verified_image(bytes).is_ok() {
            return Err(KeyError::Intact { path });
        }
    }
    let dump = crate::control::backup::read(&copy)
        .map_err(|e| KeyError::BackupUnusable { path: copy.clone(), detail: e.to_string() })?;
    let image = RedbControl::from_dump(&dump)
        .map_err(|e| KeyError::BackupUnusable { path: copy.clone(), detail: e.to_string() })?;
    let stored = image.meta_or_insert(MASTER_CHECK_ROW, &rotation::check_value(master)?)?;
    if !rotation::opens(master, &stored) && !master.pending().is_some_and(|next| rotation::opens(&next, &stored)) {
        return Err(KeyError::WrongMasterKey { path: copy });
    }
    let mut moved = None;
    if path.exists() {
        let mut n = 1;
        let aside = loop {
            let candidate = path.with_file_name(format!("{CATALOG_FILE}.damaged.{n}"));
            if !candidate.exists() {
                break candidate;
            }
            n += 1;
        };
        std::fs::rename(&path, &aside).map_err(io(&path))?;
        moved = Some(aside);
    }
    let fresh = path.with_file_name(format!("{CATALOG_FILE}.restoring"));
    let _ = std::fs::remove_file(&fresh);
    {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&fresh)
            .map_err(io(&fresh))?;
        let db = redb::Builder::new().create_file(file).db()?;
        let control = RedbControl::open(Arc::new(db))?;
        control.load(&dump)?;
    }
    std::fs::rename(&fresh, &path).map_err(io(&path))?;
    std::fs::File::open(data_dir).and_then(|d| d.sync_all()).map_err(io(data_dir))?;
    Ok(RecoverReport { path, damaged_moved_to: moved, rows: dump.rows(), org_keys: dump.org_keys.len() })
}

/// Converts any redb error into a [`KeyError`].
trait DbResult<T> {
    fn db(self) -> Result<T, KeyError>;
}

impl<T, E: Into<redb::Error>> DbResult<T> for Result<T, E> {
    fn db(self) -> Result<T, KeyError> {
        self.map_err(|e| KeyError::Database(Box::new(e.into())))
    }
}

/// Fills `buf` from the operating system's CSPRNG.
pub(crate) fn fill_random(buf: &mut [u8]) -> Result<(), KeyError> {
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), buf).map_err(|_| KeyError::Random)
}

/// A fresh random 256-bit key.
fn random_key() -> Result<SecretKey, KeyError> {
    SecretKey::generate().map_err(|_| KeyError::Random)
}

/// Encrypts `key` under the master key (see the module header for the format).
fn wrap_key(master: &MasterKey, aad: &[u8], key: &SecretKey) -> Result<Vec<u8>, KeyError> {
    let mut nonce = [0u8; NONCE_LEN];
    fill_random(&mut nonce)?;
    let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(master.secret().expose()));
    let sealed = cipher
        .encrypt(Nonce::from_slice(&nonce), Payload { msg: key.expose(), aad })
        // Only fails for inputs longer than GCM's 64 GiB limit; 32 bytes is not.
        .map_err(|_| KeyError::Random)?;
    let mut out = Vec::with_capacity(WRAPPED_LEN);
    out.push(WRAP_VERSION);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// Decrypts a wrapped key; `None` if it does not authenticate under this
/// master key and associated data, or is malformed.
fn unwrap_key(master: &MasterKey, aad: &[u8], wrapped: &[u8]) -> Option<SecretKey> {
    if wrapped.len() != WRAPPED_LEN || wrapped[0] != WRAP_VERSION {
        return None;
    }
    let (nonce, sealed) = wrapped[1..].split_at(NONCE_LEN);
    let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(master.secret().expose()));
    let plain = Zeroizing::new(cipher.decrypt(Nonce::from_slice(nonce), Payload { msg: sealed, aad }).ok()?);
    let bytes: [u8; KEY_LEN] = plain.as_slice().try_into().ok()?;
    let key = SecretKey::from_bytes(bytes);
    // `bytes` is a copy on the stack; wipe it now that the key owns one.
    let mut bytes = bytes;
    zeroize::Zeroize::zeroize(&mut bytes);
    Some(key)
}

/// Associated data for an organisation's data key.
fn org_key_aad(org: &OrgId) -> Vec<u8> {
    [ORG_KEY_AAD, org.as_str().as_bytes()].concat()
}

/// Associated data for a device's shared key.
fn device_key_aad(org: &OrgId, device: &DeviceId) -> Vec<u8> {
    [DEVICE_KEY_AAD, org.as_str().as_bytes(), b":", device.as_str().as_bytes()].concat()
}

/// The key store and device registry: one redb database shared by the
/// organisation keys and the registry views it hands out.
#[derive(Debug)]
pub struct Catalog {
    path: PathBuf,
    control: Arc<dyn ControlStore>,
    master: Arc<MasterCell>,
    org_keys: OrgKeys,
    registry: Registry,
    source: CatalogSource,
}

impl Catalog {
    /// Opens (or creates) `<data_dir>/glimpse.redb` and checks that
    /// `master` is the key it was created with.
    ///
    /// The data directory must exist. The database file is created with mode
    /// 0600; it holds only wrapped keys and sealed configuration values
    /// (see [`crate::control::sealed`]), but the device names in its table
    /// keys are nobody else's business either.
    ///
    /// The file is first checked whole in a copy in memory (page checksums
    /// and every row), so a damaged file is refused with
    /// [`KeyError::Damaged`] naming it, never opened for writing, and
    /// never copied over the verified copy `glimpse.redb.backup`, which is
    /// rewritten from the file once it has passed.
    pub fn open(data_dir: &Path, master: MasterKey) -> Result<Catalog, KeyError> {
        use std::os::unix::fs::OpenOptionsExt;

        let path = data_dir.join(CATALOG_FILE);
        let damaged = |e: ControlError| KeyError::Damaged { path: path.clone(), detail: e.to_string() };
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|source| KeyError::Io { path: path.clone(), source })?;
        if let Err(std::fs::TryLockError::WouldBlock) = file.try_lock_shared() {
            return Err(KeyError::Locked { path });
        }
        let bytes = read_bounded(&path, &file)?;
        let _ = file.unlock();
        if !bytes.is_empty() {
            RedbControl::verified_image(bytes).map_err(damaged)?;
        }
        let db = crate::control::redb_store::guarded(|| {
            redb::Builder::new().create_file(file).map_err(|e| ControlError::Permanent(e.to_string()))
        })
        .map_err(|e| match e {
            ControlError::Permanent(m) if m.contains("already open") => KeyError::Locked { path: path.clone() },
            other => damaged(other),
        })?;
        let copy = crate::control::redb_store::backup_path_of(&path);
        let reopen = {
            let path = path.clone();
            crate::control::redb_store::Reopen {
                path: path.clone(),
                open: Box::new(move || {
                    let file = std::fs::OpenOptions::new()
                        .read(true)
                        .write(true)
                        .open(&path)
                        .map_err(|e| ControlError::Transient(format!("{}: {e}", path.display())))?;
                    redb::Builder::new().create_file(file).map_err(|e| ControlError::Transient(e.to_string()))
                }),
            }
        };
        let control: Arc<dyn ControlStore> = Arc::new(RedbControl::with_backup(Arc::new(db), copy, Some(reopen))?);
        Catalog::with_control(path, control, master)
    }

    /// Opens `<data_dir>/glimpse.redb` for reading only: a checked copy in
    /// memory of the file (nothing is written, not even redb's crash
    /// repair), or, while a running collector holds the file, of its
    /// verified copy (see [`Catalog::source`]).
    pub fn open_read_only(data_dir: &Path, master: MasterKey) -> Result<Catalog, KeyError> {
        let path = data_dir.join(CATALOG_FILE);
        let file = std::fs::File::open(&path).map_err(|source| KeyError::Io { path: path.clone(), source })?;
        let (control, source) = match file.try_lock_shared() {
            Err(std::fs::TryLockError::WouldBlock) => {
                let copy = crate::control::redb_store::backup_path_of(&path);
                let dump = crate::control::backup::read(&copy)
                    .map_err(|e| KeyError::BackupUnusable { path: copy.clone(), detail: e.to_string() })?;
                let control = RedbControl::from_dump(&dump)
                    .map_err(|e| KeyError::BackupUnusable { path: copy.clone(), detail: e.to_string() })?;
                (control, CatalogSource::Copy(copy))
            }
            _ => {
                let bytes = read_bounded(&path, &file)?;
                let _ = file.unlock();
                let (control, _) = RedbControl::verified_image(bytes)
                    .map_err(|e| KeyError::Damaged { path: path.clone(), detail: e.to_string() })?;
                (control, CatalogSource::Primary)
            }
        };
        let mut catalog = Catalog::settled(path, Arc::new(control), master, false)?;
        catalog.source = source;
        Ok(catalog)
    }

    /// Where the rows came from (the file, or its copy while a collector runs).
    pub fn source(&self) -> &CatalogSource {
        &self.source
    }

    /// The catalog over any control store; `location` names it in errors.
    /// Finishes or rolls back a master key rotation a crash interrupted
    /// (see [`rotation`]).
    pub fn with_control(
        location: PathBuf,
        control: Arc<dyn ControlStore>,
        master: MasterKey,
    ) -> Result<Catalog, KeyError> {
        Catalog::settled(location, control, master, true)
    }

    /// As [`Catalog::with_control`]; an interrupted rotation is settled
    /// on disk only with `files` (not by the read-only tools).
    fn settled(
        location: PathBuf,
        control: Arc<dyn ControlStore>,
        master: MasterKey,
        files: bool,
    ) -> Result<Catalog, KeyError> {
        let master = rotation::settle(&*control, master, &location, files)?;
        let config_key = kept_wrapped(&*control, &master, CONFIG_KEY_ROW, CONFIG_KEY_AAD, derive_config_key(&master)?)?;
        if control.seal_values(config_key)? {
            tracing::info!(store = %location.display(), "configuration values sealed under the configuration key");
        }
        let master = Arc::new(MasterCell::new(master));
        let org_keys = OrgKeys::new(Arc::clone(&control), Arc::clone(&master));
        let registry = Registry::new(Arc::clone(&control), Arc::clone(&master));
        Ok(Catalog { path: location, control, master, org_keys, registry, source: CatalogSource::Primary })
    }

    /// Organisation data keys.
    pub fn org_keys(&self) -> &OrgKeys {
        &self.org_keys
    }

    /// Registered devices and per-stream progress.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Where the database lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The control store, for the others whose rows live in it
    /// (organisation decisions, the audit log's head).
    pub fn control(&self) -> Arc<dyn ControlStore> {
        Arc::clone(&self.control)
    }

    /// Seals a 256-bit secret (a console account's TOTP key, say) under
    /// the master key, the same AES-256-GCM wrapping as organisation keys,
    /// bound to `purpose` (associated data), so a sealed value moved to
    /// another row or purpose does not open.
    pub fn seal_secret(&self, purpose: &str, secret: &SecretKey) -> Result<Vec<u8>, KeyError> {
        wrap_key(&self.master.read(), &[SEALED_SECRET_AAD, purpose.as_bytes()].concat(), secret)
    }

    /// Opens what [`Catalog::seal_secret`] sealed for `purpose`; `None`
    /// if it was sealed for another purpose, under another master key, or
    /// is damaged.
    pub fn open_secret(&self, purpose: &str, sealed: &[u8]) -> Option<SecretKey> {
        unwrap_key(&self.master.read(), &[SEALED_SECRET_AAD, purpose.as_bytes()].concat(), sealed)
    }

    /// The audit chain's MAC key: kept wrapped in the `meta` row
    /// `audit-key`, created on first use as
    /// [`crate::audit::derive_audit_key`] of the master key (what earlier
    /// versions used), so chains written before stay verifiable and a
    /// rotation of the master key keeps it.
    pub fn audit_key(&self) -> Result<SecretKey, KeyError> {
        let master = self.master.read();
        let derived = crate::audit::derive_audit_key(master.secret());
        kept_wrapped(&*self.control, &master, AUDIT_KEY_ROW, AUDIT_KEY_AAD, derived)
    }

    /// Rotates the master key online (see [`rotation`]): a new key is
    /// written beside the key file, every key wrapped under the old one is
    /// rewrapped in one transaction (`reseal` rewrites the state rows that
    /// hold sealed secrets), then the new key file replaces the old. Key
    /// use waits meanwhile. Refused for a key not loaded from a file and
    /// by a control store that cannot rewrite its rows in one transaction.
    pub fn rotate_master(&self, reseal: &StateResealer<'_>) -> Result<MasterRotation, KeyError> {
        let mut slot = self.master.write();
        let (next, report) = rotation::rotate(&*self.control, &slot, reseal)?;
        *slot = Arc::new(next);
        drop(slot);
        match &report.unfinished {
            Some(detail) => Err(KeyError::RotationUnfinished { detail: detail.clone() }),
            None => {
                tracing::warn!(
                    org_keys = report.org_keys,
                    device_keys = report.device_keys,
                    file = %report.key_file.display(),
                    "master key rotated"
                );
                Ok(report)
            }
        }
    }
}

impl Catalog {
    /// Whether the master key in use still opens the store: false once
    /// another collector sharing the control plane rotated it.
    pub fn master_is_current(&self) -> Result<bool, KeyError> {
        let master = self.master.read();
        let stored = self.control.meta_or_insert(MASTER_CHECK_ROW, &rotation::check_value(&master)?)?;
        Ok(rotation::opens(&master, &stored))
    }

    /// After another collector sharing the control plane rotated the
    /// master key and the operator installed the new key file here: uses
    /// `candidate` from now on if it opens the store (the keys in memory
    /// stay valid: they do not change with the master key). Returns
    /// whether it changed the key in use; refuses a key that does not open
    /// the store while the one in use does not either.
    pub fn adopt_master(&self, candidate: MasterKey) -> Result<bool, KeyError> {
        let mut slot = self.master.write();
        let stored = self.control.meta_or_insert(MASTER_CHECK_ROW, &rotation::check_value(&slot)?)?;
        if rotation::opens(&slot, &stored) {
            return Ok(false);
        }
        if !rotation::opens(&candidate, &stored) {
            return Err(KeyError::WrongMasterKey {
                path: candidate.file().map_or_else(|| self.path.clone(), Path::to_path_buf),
            });
        }
        *slot = Arc::new(candidate);
        self.control.settled_under(&stored);
        tracing::warn!(store = %self.path.display(), "the master key another collector rotated to is in use from now on");
        Ok(true)
    }
}

/// The key kept wrapped in the `meta` row `row`, storing `fresh` there
/// first if there is none.
fn kept_wrapped(
    control: &dyn ControlStore,
    master: &MasterKey,
    row: &str,
    aad: &[u8],
    fresh: SecretKey,
) -> Result<SecretKey, KeyError> {
    let stored = control.meta_or_insert(row, &wrap_key(master, aad, &fresh)?)?;
    unwrap_key(master, aad, &stored).ok_or_else(|| KeyError::Corrupt { what: format!("meta/{row}") })
}

/// HKDF-SHA256 of the master key for the configuration key.
fn derive_config_key(master: &MasterKey) -> Result<SecretKey, KeyError> {
    let prk = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, &[]).extract(master.secret().expose());
    let okm = prk.expand(&[CONFIG_KEY_INFO], ring::hkdf::HKDF_SHA256).map_err(|_| KeyError::Random)?;
    let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
    okm.fill(bytes.as_mut_slice()).map_err(|_| KeyError::Random)?;
    Ok(SecretKey::from_bytes(*bytes))
}

/// A fixed master key for tests.
#[cfg(test)]
pub(crate) fn test_master(byte: u8) -> MasterKey {
    MasterKey::from_secret(SecretKey::from_bytes([byte; KEY_LEN]))
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::test_master as master;

    #[test]
    fn wrap_binds_master_and_purpose() {
        let key = SecretKey::generate().unwrap();
        let org = OrgId::new("acme").unwrap();
        let wrapped = wrap_key(&master(1), &org_key_aad(&org), &key).unwrap();
        assert_eq!(wrapped.len(), WRAPPED_LEN);
        assert_eq!(unwrap_key(&master(1), &org_key_aad(&org), &wrapped).unwrap(), key);
        assert!(unwrap_key(&master(2), &org_key_aad(&org), &wrapped).is_none());
        let other = OrgId::new("acme2").unwrap();
        assert!(unwrap_key(&master(1), &org_key_aad(&other), &wrapped).is_none());
        assert!(unwrap_key(&master(1), &org_key_aad(&org), &wrapped[..60]).is_none());
        let aad = [SEALED_SECRET_AAD, b"console-totp:ada"].concat();
        assert!(unwrap_key(&master(1), &aad, &wrapped).is_none(), "a sealed secret is bound to its purpose");
    }

    #[test]
    fn wrong_master_key_is_refused_at_open() {
        let dir = tempfile::tempdir().unwrap();
        drop(Catalog::open(dir.path(), master(1)).unwrap());
        let err = Catalog::open(dir.path(), master(2)).unwrap_err();
        assert!(matches!(err, KeyError::WrongMasterKey { .. }), "{err}");
        assert!(err.to_string().contains("glimpse.redb"), "{err}");
        Catalog::open(dir.path(), master(1)).unwrap();
    }

    /// A registration, an SSH key, a decision and a state entry, with
    /// text that must not be readable in the file.
    fn configure(catalog: &Catalog) {
        use glimpse_common::identity::{DeviceIdentity, DeviceKind};
        let org = OrgId::new("acme").unwrap();
        let device = DeviceId::new("ap-1").unwrap();
        catalog
            .registry()
            .upsert(DeviceRegistration {
                identity: DeviceIdentity { org: org.clone(), device: device.clone(), kind: DeviceKind::Ap },
                shared_key: SecretKey::generate().unwrap(),
                cert_serial: "SERIAL-PLAINTEXT-0451".into(),
                revoked: false,
                site: None,
            })
            .unwrap();
        catalog.registry().set_ssh_key(&org, &device, Some("ssh-ed25519 AAAAC3Nz comment-plaintext-ssh")).unwrap();
        catalog.control().put_policy("acme", b"POLICY-PLAINTEXT-consent").unwrap();
        catalog.control().replace_state("console-account:ada", "{\"name\":\"STATE-PLAINTEXT\"}").unwrap();
    }

    const PLAINTEXTS: [&str; 4] =
        ["SERIAL-PLAINTEXT-0451", "comment-plaintext-ssh", "POLICY-PLAINTEXT-consent", "STATE-PLAINTEXT"];

    fn assert_configured(catalog: &Catalog) {
        let org = OrgId::new("acme").unwrap();
        let device = DeviceId::new("ap-1").unwrap();
        let reg = catalog.registry().get(&org, &device).unwrap().unwrap();
        assert_eq!(reg.cert_serial, "SERIAL-PLAINTEXT-0451");
        assert_eq!(catalog.registry().list().unwrap().len(), 1);
        assert_eq!(
            catalog.registry().ssh_key(&org, &device).unwrap().as_deref(),
            Some("ssh-ed25519 AAAAC3Nz comment-plaintext-ssh")
        );
        assert_eq!(catalog.control().policy("acme").unwrap().as_deref(), Some(&b"POLICY-PLAINTEXT-consent"[..]));
        assert_eq!(catalog.control().policies().unwrap().len(), 1);
        let states = catalog.control().states_with_prefix("console-account:").unwrap();
        assert_eq!(states, vec![("console-account:ada".to_owned(), "{\"name\":\"STATE-PLAINTEXT\"}".to_owned())]);
    }

    fn file_contains(path: &Path, text: &str) -> bool {
        std::fs::read(path).unwrap().windows(text.len()).any(|w| w == text.as_bytes())
    }

    #[test]
    fn configuration_values_are_sealed_in_the_file_and_its_copy() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open(dir.path(), master(1)).unwrap();
        configure(&catalog);
        assert_configured(&catalog);
        catalog.control().flush();
        let copy = crate::control::redb_store::backup_path_of(catalog.path());
        for text in PLAINTEXTS {
            assert!(!file_contains(catalog.path(), text), "{text} readable in glimpse.redb");
            assert!(!file_contains(&copy, text), "{text} readable in the verified copy");
        }
        drop(catalog);
        let catalog = Catalog::open(dir.path(), master(1)).unwrap();
        assert_configured(&catalog);
        drop(catalog);
        assert_configured(&Catalog::open_read_only(dir.path(), master(1)).unwrap());
        // A sealed value moved to another row does not open.
        {
            let db = redb::Database::create(dir.path().join(CATALOG_FILE)).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut t = txn.open_table(crate::control::redb_store::ORG_POLICY).unwrap();
                let v = redb::ReadableTable::get(&t, "acme").unwrap().unwrap().value().to_vec();
                t.insert("globex", v.as_slice()).unwrap();
            }
            txn.commit().unwrap();
        }
        let catalog = Catalog::open(dir.path(), master(1)).unwrap();
        let err = catalog.control().policy("globex").unwrap_err();
        assert!(err.to_string().contains("does not open"), "{err}");
    }

    #[test]
    fn a_plain_store_is_sealed_when_it_opens() {
        let dir = tempfile::tempdir().unwrap();
        // As an earlier version wrote it: the rows plain.
        {
            let db = redb::Builder::new().create(dir.path().join(CATALOG_FILE)).unwrap();
            let control = RedbControl::open(Arc::new(db)).unwrap();
            let check = rotation::check_value(&master(1)).unwrap();
            control.meta_or_insert(MASTER_CHECK_ROW, &check).unwrap();
            control.put_policy("acme", b"POLICY-PLAINTEXT-consent").unwrap();
            control.replace_state("console-account:ada", "{\"name\":\"STATE-PLAINTEXT\"}").unwrap();
            control.set_ssh_key("acme", "ap-1", Some("ssh-ed25519 AAAAC3Nz comment-plaintext-ssh")).unwrap();
        }
        assert!(file_contains(&dir.path().join(CATALOG_FILE), "POLICY-PLAINTEXT-consent"));
        let catalog = Catalog::open(dir.path(), master(1)).unwrap();
        assert_eq!(catalog.control().policy("acme").unwrap().as_deref(), Some(&b"POLICY-PLAINTEXT-consent"[..]));
        assert_eq!(catalog.control().state("console-account:ada").unwrap().unwrap(), "{\"name\":\"STATE-PLAINTEXT\"}");
        let org = OrgId::new("acme").unwrap();
        let device = DeviceId::new("ap-1").unwrap();
        assert!(catalog.registry().ssh_key(&org, &device).unwrap().is_some());
        // Sealed once: a second open finds the marker and reads the same.
        drop(catalog);
        let catalog = Catalog::open(dir.path(), master(1)).unwrap();
        assert_eq!(catalog.control().policy("acme").unwrap().as_deref(), Some(&b"POLICY-PLAINTEXT-consent"[..]));
        configure(&catalog);
        assert_configured(&catalog);
    }

    #[test]
    fn database_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open(dir.path(), master(1)).unwrap();
        let mode = std::fs::metadata(catalog.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "{mode:o}");
    }
}
