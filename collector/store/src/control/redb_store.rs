//! The embedded [`ControlStore`]: tables of the catalog database
//! `glimpse.redb`, unchanged in name and layout from before the seam.
//! Every write is one redb write transaction, committed (and so fsynced)
//! before it returns.

use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use redb::{Database, ReadableTable, TableDefinition};

use glimpse_common::secret::SecretKey;

use super::backup::{self, Dump, HOT_WRITES_PER_BACKUP};
use super::sealed::RowSealer;
use super::seam::{
    ControlError, ControlStore, DeviceRow, PolicyEdit, RowRewrite, RowTable, SegmentRow, SegmentRowKey, SshKeyRow,
    StreamSeq,
};

/// Collector-wide metadata (the master key check).
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// (organisation, device) → the registry's encoded row.
pub(crate) const DEVICES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("devices");
/// (organisation, device) → the OpenSSH public key line a switch or gateway
/// authenticates with on the SSH port. Public, so stored as is.
const SSH_KEYS: TableDefinition<(&str, &str), &str> = TableDefinition::new("device_ssh_keys");
/// (organisation, device, stream id) → highest durably stored batch sequence.
const STREAMS: TableDefinition<(&str, &str, u64), u64> = TableDefinition::new("stream_seq");
/// organisation → wrapped data key.
pub(crate) const ORG_KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("org_keys");
/// organisation → encoded decisions.
pub(crate) const ORG_POLICY: TableDefinition<&str, &[u8]> = TableDefinition::new("org_policy");
/// Collector-wide facts: the retention policy last audited.
const COLLECTOR_STATE: TableDefinition<&str, &str> = TableDefinition::new("collector_state");
/// The audit chain head.
const AUDIT_HEAD: TableDefinition<&str, &[u8]> = TableDefinition::new("audit_head");
const HEAD_ROW: &str = "head";
/// (organisation, kind, day, segment name) → postcard([`SegmentRow`]).
const SEGMENTS: TableDefinition<(&str, &str, i64, &str), &[u8]> = TableDefinition::new("segment_catalog");

/// How long a reopen waits for operations still using the poisoned
/// database to finish before it gives up until the next failure.
const REOPEN_WAIT: Duration = Duration::from_secs(2);

/// The control store in a redb database.
#[derive(Debug, Clone)]
pub struct RedbControl {
    db: Arc<Handle>,
    backup: Option<Arc<Backup>>,
    /// Seals configuration row values once [`ControlStore::seal_values`]
    /// installed it (see [`super::sealed`]).
    sealer: Arc<RwLock<Option<Arc<RowSealer>>>>,
}

/// Names of the sealed tables, in the associated data (the same on every backend).
use super::sealed::{
    DEVICES as DEVICES_NAME, ORG_POLICY as ORG_POLICY_NAME, SSH_KEYS as SSH_KEYS_NAME, STATE as STATE_NAME,
    VALUES_SEALED_ROW,
};

type Sealer = Option<Arc<RowSealer>>;

fn seal_b(s: &Sealer, table: &str, key: &[&str], v: &[u8]) -> Result<Vec<u8>, ControlError> {
    match s {
        Some(s) => s.seal(table, key, v),
        None => Ok(v.to_vec()),
    }
}

fn open_b(s: &Sealer, table: &str, key: &[&str], v: Vec<u8>) -> Result<Vec<u8>, ControlError> {
    match s {
        Some(s) => s.open(table, key, &v),
        None => Ok(v),
    }
}

fn seal_t(s: &Sealer, table: &str, key: &[&str], v: &str) -> Result<String, ControlError> {
    match s {
        Some(s) => s.seal_text(table, key, v),
        None => Ok(v.to_owned()),
    }
}

fn open_t(s: &Sealer, table: &str, key: &[&str], v: String) -> Result<String, ControlError> {
    match s {
        Some(s) => s.open_text(table, key, &v),
        None => Ok(v),
    }
}

/// Opens a database file again, with the settings it was first opened
/// with: after a failed write (a full disk) redb refuses every later
/// transaction until the file is closed and re-opened.
pub struct Reopen {
    /// The file, named in log lines.
    pub path: PathBuf,
    /// Opens it.
    pub open: Box<dyn Fn() -> Result<Database, ControlError> + Send + Sync>,
}

/// The single owning handle of the database: operations take a clone for
/// their duration, so a reopen can wait for them and then drop the last
/// one (redb locks the file, so the old `Database` must be gone first).
struct Handle {
    current: RwLock<Option<Arc<Database>>>,
    reopen: Option<Reopen>,
    /// Serialises reopen attempts; others fail fast meanwhile.
    reopening: Mutex<()>,
    /// A failed reopen was logged (once until one succeeds).
    reopen_failed: AtomicBool,
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle").field("path", &self.reopen.as_ref().map(|r| &r.path)).finish_non_exhaustive()
    }
}

thread_local! {
    /// Set by [`err`] when a failure may have poisoned the database.
    static POISONING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

impl Handle {
    fn new(db: Arc<Database>, reopen: Option<Reopen>) -> Handle {
        Handle {
            current: RwLock::new(Some(db)),
            reopen,
            reopening: Mutex::new(()),
            reopen_failed: AtomicBool::new(false),
        }
    }

    fn current(&self) -> Option<Arc<Database>> {
        self.current.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn set(&self, db: Option<Arc<Database>>) -> Option<Arc<Database>> {
        std::mem::replace(&mut *self.current.write().unwrap_or_else(PoisonError::into_inner), db)
    }

    /// The open database, or after a failed reopen another attempt.
    fn get(&self) -> Result<Arc<Database>, ControlError> {
        if let Some(db) = self.current() {
            return Ok(db);
        }
        if let (Some(reopen), Ok(_only)) = (&self.reopen, self.reopening.try_lock()) {
            if self.current().is_none() {
                self.open_again(reopen);
            }
        }
        self.current().ok_or_else(|| ControlError::Transient("the control database is being reopened".into()))
    }

    /// After an operation failed in a way that may have poisoned the
    /// database (and dropped its clone): closes and re-opens the file.
    fn poisoned(&self, detail: &str) {
        let Some(reopen) = &self.reopen else { return };
        let Ok(_only) = self.reopening.try_lock() else { return };
        let Some(mut old) = self.set(None) else { return };
        tracing::error!(path = %reopen.path.display(), "the control database failed ({detail}); closing and re-opening it");
        let deadline = Instant::now() + REOPEN_WAIT;
        loop {
            match Arc::try_unwrap(old) {
                Ok(db) => {
                    drop(db);
                    break;
                }
                Err(still) if Instant::now() >= deadline => {
                    // Still in use: the next failure tries again.
                    tracing::warn!(path = %reopen.path.display(), "the control database is still in use; not re-opened yet");
                    self.set(Some(still));
                    return;
                }
                Err(still) => {
                    old = still;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
        self.open_again(reopen);
    }

    fn open_again(&self, reopen: &Reopen) {
        let opened = guarded(|| {
            let db = (reopen.open)()?;
            create_tables(&db)?;
            Ok(db)
        });
        match opened {
            Ok(db) => {
                self.set(Some(Arc::new(db)));
                self.reopen_failed.store(false, Ordering::SeqCst);
                tracing::info!(path = %reopen.path.display(), "re-opened the control database");
            }
            // Retried by the next operation; the first failure says why.
            Err(e) => {
                if !self.reopen_failed.swap(true, Ordering::SeqCst) {
                    tracing::warn!(path = %reopen.path.display(), "cannot re-open the control database yet: {e}");
                }
            }
        }
    }
}

/// Keeps the verified copy (see [`super::backup`]) of one database.
#[derive(Debug)]
struct Backup {
    db: Arc<Handle>,
    path: PathBuf,
    /// Serialises copies; holds hot commits since the last one.
    hot: Mutex<u64>,
    /// A change since the last copy was written.
    dirty: AtomicBool,
}

impl Backup {
    fn write(&self) {
        let mut hot = self.hot.lock().unwrap_or_else(PoisonError::into_inner);
        match self
            .db
            .get()
            .and_then(|db| dump_db(&db))
            .and_then(|dump| backup::write(&self.path, &dump).map_err(|e| ControlError::Permanent(e.to_string())))
        {
            Ok(()) => {
                *hot = 0;
                self.dirty.store(false, Ordering::SeqCst);
            }
            // The change itself is committed; the copy catches up on the next one.
            Err(e) => {
                self.dirty.store(true, Ordering::SeqCst);
                tracing::error!(path = %self.path.display(), "cannot write the key store's verified copy: {e}");
            }
        }
    }
}

impl Drop for Backup {
    fn drop(&mut self) {
        if self.dirty.load(Ordering::SeqCst) {
            self.write();
        }
    }
}

thread_local! {
    static GUARDED: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}
static GUARDED_ANYWHERE: AtomicU32 = AtomicU32::new(0);

/// Whether the current thread is inside [`guarded`]: a panic hook can keep
/// quiet about a panic that will be reported as a damaged file.
pub fn in_guarded_section() -> bool {
    GUARDED_ANYWHERE.load(Ordering::Relaxed) > 0 && GUARDED.with(|g| g.get() > 0)
}

/// Runs `f`, turning a panic inside the database library (it panics on
/// some damaged files instead of returning an error) into a permanent
/// error that says what panicked.
pub fn guarded<T>(f: impl FnOnce() -> Result<T, ControlError>) -> Result<T, ControlError> {
    GUARDED.with(|g| g.set(g.get() + 1));
    GUARDED_ANYWHERE.fetch_add(1, Ordering::Relaxed);
    let result = catch_unwind(AssertUnwindSafe(f));
    GUARDED_ANYWHERE.fetch_sub(1, Ordering::Relaxed);
    GUARDED.with(|g| g.set(g.get() - 1));
    result.unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".into());
        Err(ControlError::Permanent(format!("the database library failed on damaged data ({message})")))
    })
}

/// A database held in memory: the offline tools read a copy of the file
/// this way, so that nothing they do (redb's crash repair included) can
/// change a byte of it, and so that a damaged file cannot be made worse.
#[derive(Debug, Default)]
pub struct MemoryBackend(Mutex<Vec<u8>>);

impl MemoryBackend {
    /// A backend holding `bytes`.
    pub fn new(bytes: Vec<u8>) -> MemoryBackend {
        MemoryBackend(Mutex::new(bytes))
    }

    fn bytes(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl redb::StorageBackend for MemoryBackend {
    fn len(&self) -> Result<u64, io::Error> {
        Ok(self.bytes().len() as u64)
    }

    fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>, io::Error> {
        let bytes = self.bytes();
        let start = usize::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        match start.checked_add(len).and_then(|end| bytes.get(start..end)) {
            Some(slice) => Ok(slice.to_vec()),
            None => Err(io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end of the database")),
        }
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        let len = usize::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::OutOfMemory))?;
        self.bytes().resize(len, 0);
        Ok(())
    }

    fn sync_data(&self, _eventual: bool) -> Result<(), io::Error> {
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        let mut bytes = self.bytes();
        let start = usize::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let end = start.checked_add(data.len()).ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        if bytes.len() < end {
            bytes.resize(end, 0);
        }
        bytes[start..end].copy_from_slice(data);
        Ok(())
    }
}

/// Every row of `db`, in one read transaction.
fn dump_db(db: &Database) -> Result<Dump, ControlError> {
    let txn = db.begin_read().map_err(err)?;
    let mut dump = Dump::default();
    for row in txn.open_table(META).map_err(err)?.iter().map_err(err)? {
        let (k, v) = row.map_err(err)?;
        dump.meta.push((k.value().to_owned(), v.value().to_vec()));
    }
    for row in txn.open_table(DEVICES).map_err(err)?.iter().map_err(err)? {
        let (k, v) = row.map_err(err)?;
        let (org, device) = k.value();
        dump.devices.push(((org.to_owned(), device.to_owned()), v.value().to_vec()));
    }
    for row in txn.open_table(SSH_KEYS).map_err(err)?.iter().map_err(err)? {
        let (k, v) = row.map_err(err)?;
        let (org, device) = k.value();
        dump.ssh_keys.push(((org.to_owned(), device.to_owned()), v.value().to_owned()));
    }
    for row in txn.open_table(STREAMS).map_err(err)?.iter().map_err(err)? {
        let (k, v) = row.map_err(err)?;
        let (org, device, stream) = k.value();
        dump.streams.push(((org.to_owned(), device.to_owned(), stream), v.value()));
    }
    for row in txn.open_table(ORG_KEYS).map_err(err)?.iter().map_err(err)? {
        let (k, v) = row.map_err(err)?;
        dump.org_keys.push((k.value().to_owned(), v.value().to_vec()));
    }
    for row in txn.open_table(ORG_POLICY).map_err(err)?.iter().map_err(err)? {
        let (k, v) = row.map_err(err)?;
        dump.org_policy.push((k.value().to_owned(), v.value().to_vec()));
    }
    for row in txn.open_table(COLLECTOR_STATE).map_err(err)?.iter().map_err(err)? {
        let (k, v) = row.map_err(err)?;
        dump.collector_state.push((k.value().to_owned(), v.value().to_owned()));
    }
    for row in txn.open_table(AUDIT_HEAD).map_err(err)?.iter().map_err(err)? {
        let (k, v) = row.map_err(err)?;
        dump.audit_head.push((k.value().to_owned(), v.value().to_vec()));
    }
    for row in txn.open_table(SEGMENTS).map_err(err)?.iter().map_err(err)? {
        let (k, v) = row.map_err(err)?;
        let (org, kind, day, name) = k.value();
        dump.segments.push(((org.to_owned(), kind.to_owned(), day, name.to_owned()), decode_row(v.value())?));
    }
    Ok(dump)
}

fn decode_row(bytes: &[u8]) -> Result<SegmentRow, ControlError> {
    postcard::from_bytes(bytes).map_err(|e| ControlError::Permanent(format!("unreadable segment catalog row: {e}")))
}

/// A catalog row's key as the table stores it.
fn catalog_key((org, kind, day, name): &SegmentRowKey) -> (&str, &str, i64, &str) {
    (org.as_str(), kind.as_str(), *day, name.as_str())
}

fn encode_row(row: &SegmentRow) -> Result<Vec<u8>, ControlError> {
    postcard::to_stdvec(row).map_err(|e| ControlError::Permanent(format!("cannot encode a segment catalog row: {e}")))
}

/// Classifies a redb failure: only I/O that may pass is transient.
fn err<E: Into<redb::Error>>(e: E) -> ControlError {
    let e = e.into();
    let transient = match &e {
        redb::Error::Io(io) => matches!(
            io.kind(),
            io::ErrorKind::Interrupted
                | io::ErrorKind::WouldBlock
                | io::ErrorKind::TimedOut
                | io::ErrorKind::StorageFull
        ),
        _ => false,
    };
    if matches!(e, redb::Error::Io(_) | redb::Error::PreviousIo) {
        POISONING.with(|p| p.set(true));
    }
    if transient {
        ControlError::Transient(e.to_string())
    } else {
        ControlError::Permanent(e.to_string())
    }
}

impl RedbControl {
    /// The control store in `db`, creating its tables if missing.
    pub fn open(db: Arc<Database>) -> Result<RedbControl, ControlError> {
        create_tables(&db)?;
        Ok(RedbControl { db: Arc::new(Handle::new(db, None)), backup: None, sealer: Arc::default() })
    }

    /// As [`RedbControl::open`], keeping a verified copy at `backup_path`
    /// (see [`super::backup`]), written now and after changes. With
    /// `reopen`, an operation that fails on I/O (which leaves redb
    /// refusing every later transaction) closes and re-opens the file: it
    /// returns a transient error itself, and the next one works again.
    pub fn with_backup(
        db: Arc<Database>,
        backup_path: PathBuf,
        reopen: Option<Reopen>,
    ) -> Result<RedbControl, ControlError> {
        create_tables(&db)?;
        let db = Arc::new(Handle::new(db, reopen));
        let backup = Arc::new(Backup {
            db: Arc::clone(&db),
            path: backup_path,
            hot: Mutex::new(0),
            dirty: AtomicBool::new(true),
        });
        backup.write();
        Ok(RedbControl { db, backup: Some(backup), sealer: Arc::default() })
    }

    /// A control store in memory over a copy of a database file's bytes,
    /// checked from end to end (page checksums, then every row read): the
    /// file itself is never touched. Panics of the database library on
    /// damaged bytes come back as errors.
    pub fn verified_image(bytes: Vec<u8>) -> Result<(RedbControl, Dump), ControlError> {
        guarded(|| {
            let mut db = redb::Builder::new().create_with_backend(MemoryBackend::new(bytes)).map_err(err)?;
            db.check_integrity().map_err(err)?;
            let control = RedbControl::open(Arc::new(db))?;
            let dump = control.dump()?;
            Ok((control, dump))
        })
    }

    /// A control store in memory holding `dump`'s rows.
    pub fn from_dump(dump: &Dump) -> Result<RedbControl, ControlError> {
        guarded(|| {
            let db = redb::Builder::new().create_with_backend(MemoryBackend::default()).map_err(err)?;
            let control = RedbControl::open(Arc::new(db))?;
            control.load(dump)?;
            Ok(control)
        })
    }

    fn sealer(&self) -> Sealer {
        self.sealer.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Every row.
    pub fn dump(&self) -> Result<Dump, ControlError> {
        self.run(dump_db)
    }

    /// Runs one operation on the database; a failure that may have
    /// poisoned it re-opens the file (when it can be) and is transient.
    fn run<T>(&self, op: impl FnOnce(&Database) -> Result<T, ControlError>) -> Result<T, ControlError> {
        let db = self.db.get()?;
        POISONING.with(|p| p.set(false));
        let result = op(&db);
        drop(db);
        let poisoning = POISONING.with(|p| p.replace(false));
        match result {
            Err(ControlError::Transient(e) | ControlError::Permanent(e)) if poisoning && self.db.reopen.is_some() => {
                self.db.poisoned(&e);
                Err(ControlError::Transient(format!("{e} (the database is re-opened; retry)")))
            }
            other => other,
        }
    }

    /// Writes every row of `dump` in one transaction (a recovery into an
    /// empty database).
    pub fn load(&self, dump: &Dump) -> Result<(), ControlError> {
        self.run(|db| {
            let txn = db.begin_write().map_err(err)?;
            {
                let mut t = txn.open_table(META).map_err(err)?;
                for (k, v) in &dump.meta {
                    t.insert(k.as_str(), v.as_slice()).map_err(err)?;
                }
                let mut t = txn.open_table(DEVICES).map_err(err)?;
                for ((org, device), v) in &dump.devices {
                    t.insert((org.as_str(), device.as_str()), v.as_slice()).map_err(err)?;
                }
                let mut t = txn.open_table(SSH_KEYS).map_err(err)?;
                for ((org, device), v) in &dump.ssh_keys {
                    t.insert((org.as_str(), device.as_str()), v.as_str()).map_err(err)?;
                }
                let mut t = txn.open_table(STREAMS).map_err(err)?;
                for ((org, device, stream), v) in &dump.streams {
                    t.insert((org.as_str(), device.as_str(), *stream), *v).map_err(err)?;
                }
                let mut t = txn.open_table(ORG_KEYS).map_err(err)?;
                for (k, v) in &dump.org_keys {
                    t.insert(k.as_str(), v.as_slice()).map_err(err)?;
                }
                let mut t = txn.open_table(ORG_POLICY).map_err(err)?;
                for (k, v) in &dump.org_policy {
                    t.insert(k.as_str(), v.as_slice()).map_err(err)?;
                }
                let mut t = txn.open_table(COLLECTOR_STATE).map_err(err)?;
                for (k, v) in &dump.collector_state {
                    t.insert(k.as_str(), v.as_str()).map_err(err)?;
                }
                let mut t = txn.open_table(AUDIT_HEAD).map_err(err)?;
                for (k, v) in &dump.audit_head {
                    t.insert(k.as_str(), v.as_slice()).map_err(err)?;
                }
                let mut t = txn.open_table(SEGMENTS).map_err(err)?;
                for ((org, kind, day, name), row) in &dump.segments {
                    t.insert((org.as_str(), kind.as_str(), *day, name.as_str()), encode_row(row)?.as_slice())
                        .map_err(err)?;
                }
            }
            txn.commit().map_err(err)?;
            Ok(())
        })?;
        self.changed(false);
        Ok(())
    }

    /// Writes the verified copy now if anything changed since the last.
    pub fn flush_backup(&self) {
        if let Some(backup) = &self.backup {
            if backup.dirty.load(Ordering::SeqCst) {
                backup.write();
            }
        }
    }

    /// After a commit: a cold change (keys, registry, decisions) is copied
    /// at once; a hot one (sequences, the audit head) every
    /// [`HOT_WRITES_PER_BACKUP`] commits.
    fn changed(&self, hot: bool) {
        let Some(backup) = &self.backup else { return };
        backup.dirty.store(true, Ordering::SeqCst);
        if hot {
            let due = {
                let mut count = backup.hot.lock().unwrap_or_else(PoisonError::into_inner);
                *count += 1;
                *count >= HOT_WRITES_PER_BACKUP
            };
            if !due {
                return;
            }
        }
        backup.write();
    }
}

/// The database file's verified copy's path.
pub fn backup_path_of(db_path: &Path) -> PathBuf {
    backup::backup_path(db_path)
}

fn create_tables(db: &Database) -> Result<(), ControlError> {
    {
        let txn = db.begin_write().map_err(err)?;
        txn.open_table(META).map_err(err)?;
        txn.open_table(DEVICES).map_err(err)?;
        txn.open_table(SSH_KEYS).map_err(err)?;
        txn.open_table(STREAMS).map_err(err)?;
        txn.open_table(ORG_KEYS).map_err(err)?;
        txn.open_table(ORG_POLICY).map_err(err)?;
        txn.open_table(COLLECTOR_STATE).map_err(err)?;
        txn.open_table(AUDIT_HEAD).map_err(err)?;
        txn.open_table(SEGMENTS).map_err(err)?;
        txn.commit().map_err(err)?;
    }
    Ok(())
}

impl ControlStore for RedbControl {
    fn meta_or_insert(&self, name: &str, value: &[u8]) -> Result<Vec<u8>, ControlError> {
        let out = self.run(|db| {
            let txn = db.begin_write().map_err(err)?;
            let stored = {
                let mut table = txn.open_table(META).map_err(err)?;
                let existing = table.get(name).map_err(err)?.map(|v| v.value().to_vec());
                match existing {
                    Some(existing) => existing,
                    None => {
                        table.insert(name, value).map_err(err)?;
                        value.to_vec()
                    }
                }
            };
            txn.commit().map_err(err)?;
            Ok(stored)
        })?;
        self.changed(false);
        Ok(out)
    }

    fn device(&self, org: &str, device: &str) -> Result<Option<Vec<u8>>, ControlError> {
        let s = self.sealer();
        self.run(|db| {
            let txn = db.begin_read().map_err(err)?;
            let table = txn.open_table(DEVICES).map_err(err)?;
            let row = table.get((org, device)).map_err(err)?.map(|v| v.value().to_vec());
            row.map(|row| open_b(&s, DEVICES_NAME, &[org, device], row)).transpose()
        })
    }

    fn devices(&self) -> Result<Vec<DeviceRow>, ControlError> {
        let s = self.sealer();
        self.run(|db| {
            let txn = db.begin_read().map_err(err)?;
            let table = txn.open_table(DEVICES).map_err(err)?;
            let mut out = Vec::new();
            for row in table.iter().map_err(err)? {
                let (key, value) = row.map_err(err)?;
                let (org, device) = key.value();
                let row = open_b(&s, DEVICES_NAME, &[org, device], value.value().to_vec())?;
                out.push(DeviceRow { org: org.to_owned(), device: device.to_owned(), row });
            }
            Ok(out)
        })
    }

    fn put_devices(&self, rows: &[DeviceRow]) -> Result<(), ControlError> {
        let s = self.sealer();
        self.run(|db| {
            let txn = db.begin_write().map_err(err)?;
            {
                let mut table = txn.open_table(DEVICES).map_err(err)?;
                for row in rows {
                    let sealed = seal_b(&s, DEVICES_NAME, &[&row.org, &row.device], &row.row)?;
                    table.insert((row.org.as_str(), row.device.as_str()), sealed.as_slice()).map_err(err)?;
                }
            }
            txn.commit().map_err(err)?;
            Ok(())
        })?;
        self.changed(false);
        Ok(())
    }

    fn update_device(
        &self,
        org: &str,
        device: &str,
        edit: &mut dyn FnMut(&[u8]) -> Option<Vec<u8>>,
    ) -> Result<bool, ControlError> {
        let s = self.sealer();
        let out = self.run(|db| {
            let txn = db.begin_write().map_err(err)?;
            let changed = {
                let mut table = txn.open_table(DEVICES).map_err(err)?;
                let existing = table.get((org, device)).map_err(err)?.map(|v| v.value().to_vec());
                let existing = existing.map(|row| open_b(&s, DEVICES_NAME, &[org, device], row)).transpose()?;
                match existing.as_deref().and_then(&mut *edit) {
                    Some(row) => {
                        let sealed = seal_b(&s, DEVICES_NAME, &[org, device], &row)?;
                        table.insert((org, device), sealed.as_slice()).map_err(err)?;
                        true
                    }
                    None => false,
                }
            };
            if changed {
                txn.commit().map_err(err)?;
            } else {
                txn.abort().map_err(err)?;
            }
            Ok(changed)
        })?;
        if out {
            self.changed(false);
        }
        Ok(out)
    }

    fn ssh_key(&self, org: &str, device: &str) -> Result<Option<String>, ControlError> {
        let s = self.sealer();
        self.run(|db| {
            let txn = db.begin_read().map_err(err)?;
            let table = txn.open_table(SSH_KEYS).map_err(err)?;
            let line = table.get((org, device)).map_err(err)?.map(|v| v.value().to_owned());
            line.map(|line| open_t(&s, SSH_KEYS_NAME, &[org, device], line)).transpose()
        })
    }

    fn set_ssh_key(&self, org: &str, device: &str, line: Option<&str>) -> Result<(), ControlError> {
        let s = self.sealer();
        self.run(|db| {
            let txn = db.begin_write().map_err(err)?;
            {
                let mut table = txn.open_table(SSH_KEYS).map_err(err)?;
                match line {
                    Some(line) => {
                        let sealed = seal_t(&s, SSH_KEYS_NAME, &[org, device], line)?;
                        table.insert((org, device), sealed.as_str()).map_err(err)?;
                    }
                    None => {
                        table.remove((org, device)).map_err(err)?;
                    }
                }
            }
            txn.commit().map_err(err)?;
            Ok(())
        })?;
        self.changed(false);
        Ok(())
    }

    fn set_ssh_keys(&self, rows: &[SshKeyRow]) -> Result<(), ControlError> {
        let s = self.sealer();
        self.run(|db| {
            // Dropped uncommitted on any error: none of the rows is written.
            let txn = db.begin_write().map_err(err)?;
            {
                let mut table = txn.open_table(SSH_KEYS).map_err(err)?;
                for row in rows {
                    let key = (row.org.as_str(), row.device.as_str());
                    match &row.line {
                        Some(line) => {
                            let sealed = seal_t(&s, SSH_KEYS_NAME, &[&row.org, &row.device], line)?;
                            table.insert(key, sealed.as_str()).map_err(err)?;
                        }
                        None => {
                            table.remove(key).map_err(err)?;
                        }
                    }
                }
            }
            txn.commit().map_err(err)?;
            Ok(())
        })?;
        self.changed(false);
        Ok(())
    }

    fn stored_seq(&self, org: &str, device: &str, stream: u64) -> Result<u64, ControlError> {
        self.run(|db| {
            let txn = db.begin_read().map_err(err)?;
            let table = txn.open_table(STREAMS).map_err(err)?;
            let seq = table.get((org, device, stream)).map_err(err)?.map_or(0, |v| v.value());
            Ok(seq)
        })
    }

    fn raise_stored_seqs(
        &self,
        updates: &[StreamSeq],
        segments: &[(SegmentRowKey, SegmentRow)],
    ) -> Result<(), ControlError> {
        self.run(|db| {
            let txn = db.begin_write().map_err(err)?;
            {
                let mut table = txn.open_table(STREAMS).map_err(err)?;
                for ((org, device, stream), seq) in updates {
                    let key = (org.as_str(), device.as_str(), *stream);
                    let current = table.get(key).map_err(err)?.map_or(0, |v| v.value());
                    if *seq > current {
                        table.insert(key, *seq).map_err(err)?;
                    }
                }
                let mut catalog = txn.open_table(SEGMENTS).map_err(err)?;
                for (row_key, more) in segments {
                    let key = catalog_key(row_key);
                    let existing = catalog.get(key).map_err(err)?.map(|v| decode_row(v.value())).transpose()?;
                    let mut row = existing.unwrap_or_default();
                    row.merge(more);
                    catalog.insert(key, encode_row(&row)?.as_slice()).map_err(err)?;
                }
            }
            txn.commit().map_err(err)?;
            Ok(())
        })?;
        self.changed(true);
        Ok(())
    }

    fn segment_rows(&self, org: &str, kind: &str) -> Result<Vec<(SegmentRowKey, SegmentRow)>, ControlError> {
        self.run(|db| {
            let txn = db.begin_read().map_err(err)?;
            let table = txn.open_table(SEGMENTS).map_err(err)?;
            let mut out = Vec::new();
            for row in table.range((org, kind, i64::MIN, "")..).map_err(err)? {
                let (key, value) = row.map_err(err)?;
                let (o, k, day, name) = key.value();
                if o != org || k != kind {
                    break;
                }
                out.push(((o.to_owned(), k.to_owned(), day, name.to_owned()), decode_row(value.value())?));
            }
            Ok(out)
        })
    }

    fn replace_segment_rows(
        &self,
        remove: &[SegmentRowKey],
        put: &[(SegmentRowKey, SegmentRow)],
    ) -> Result<(), ControlError> {
        self.run(|db| {
            let txn = db.begin_write().map_err(err)?;
            {
                let mut table = txn.open_table(SEGMENTS).map_err(err)?;
                for row_key in remove {
                    table.remove(catalog_key(row_key)).map_err(err)?;
                }
                for (row_key, row) in put {
                    table.insert(catalog_key(row_key), encode_row(row)?.as_slice()).map_err(err)?;
                }
            }
            txn.commit().map_err(err)?;
            Ok(())
        })?;
        self.changed(false);
        Ok(())
    }

    fn org_key(&self, org: &str) -> Result<Option<Vec<u8>>, ControlError> {
        self.run(|db| {
            let txn = db.begin_read().map_err(err)?;
            let table = txn.open_table(ORG_KEYS).map_err(err)?;
            let wrapped = table.get(org).map_err(err)?.map(|v| v.value().to_vec());
            Ok(wrapped)
        })
    }

    fn insert_org_key_if_absent(&self, org: &str, wrapped: &[u8]) -> Result<(Vec<u8>, bool), ControlError> {
        let out = self.run(|db| {
            let txn = db.begin_write().map_err(err)?;
            let stored = {
                let mut table = txn.open_table(ORG_KEYS).map_err(err)?;
                let existing = table.get(org).map_err(err)?.map(|v| v.value().to_vec());
                match existing {
                    Some(existing) => (existing, false),
                    None => {
                        table.insert(org, wrapped).map_err(err)?;
                        (wrapped.to_vec(), true)
                    }
                }
            };
            txn.commit().map_err(err)?;
            Ok(stored)
        })?;
        self.changed(false);
        Ok(out)
    }

    fn replace_org_key(&self, org: &str, expected: &[u8], new: &[u8]) -> Result<bool, ControlError> {
        let out = self.run(|db| {
            let txn = db.begin_write().map_err(err)?;
            let replaced = {
                let mut table = txn.open_table(ORG_KEYS).map_err(err)?;
                let same = table.get(org).map_err(err)?.is_some_and(|v| v.value() == expected);
                if same {
                    table.insert(org, new).map_err(err)?;
                }
                same
            };
            txn.commit().map_err(err)?;
            Ok(replaced)
        })?;
        self.changed(false);
        Ok(out)
    }

    fn remove_org_key(&self, org: &str) -> Result<bool, ControlError> {
        let out = self.run(|db| {
            let txn = db.begin_write().map_err(err)?;
            let existed = txn.open_table(ORG_KEYS).map_err(err)?.remove(org).map_err(err)?.is_some();
            txn.commit().map_err(err)?;
            Ok(existed)
        })?;
        self.changed(false);
        Ok(out)
    }

    fn org_key_names(&self) -> Result<Vec<String>, ControlError> {
        self.run(|db| {
            let txn = db.begin_read().map_err(err)?;
            let table = txn.open_table(ORG_KEYS).map_err(err)?;
            let mut names = Vec::new();
            for row in table.iter().map_err(err)? {
                names.push(row.map_err(err)?.0.value().to_owned());
            }
            Ok(names)
        })
    }

    fn policies(&self) -> Result<Vec<(String, Vec<u8>)>, ControlError> {
        let s = self.sealer();
        self.run(|db| {
            let txn = db.begin_read().map_err(err)?;
            let table = txn.open_table(ORG_POLICY).map_err(err)?;
            let mut out = Vec::new();
            for row in table.iter().map_err(err)? {
                let (key, value) = row.map_err(err)?;
                let value = open_b(&s, ORG_POLICY_NAME, &[key.value()], value.value().to_vec())?;
                out.push((key.value().to_owned(), value));
            }
            Ok(out)
        })
    }

    fn policy(&self, org: &str) -> Result<Option<Vec<u8>>, ControlError> {
        let s = self.sealer();
        self.run(|db| {
            let txn = db.begin_read().map_err(err)?;
            let table = txn.open_table(ORG_POLICY).map_err(err)?;
            let row = table.get(org).map_err(err)?.map(|v| v.value().to_vec());
            row.map(|row| open_b(&s, ORG_POLICY_NAME, &[org], row)).transpose()
        })
    }

    fn update_policy(&self, org: &str, edit: &mut PolicyEdit<'_>) -> Result<Option<Vec<u8>>, ControlError> {
        let s = self.sealer();
        let (stored, changed) = self.run(|db| {
            let txn = db.begin_write().map_err(err)?;
            let (stored, changed) = {
                let mut table = txn.open_table(ORG_POLICY).map_err(err)?;
                let existing = table.get(org).map_err(err)?.map(|v| v.value().to_vec());
                let existing = existing.map(|row| open_b(&s, ORG_POLICY_NAME, &[org], row)).transpose()?;
                match edit(existing.as_deref()) {
                    Some(row) => {
                        let sealed = seal_b(&s, ORG_POLICY_NAME, &[org], &row)?;
                        table.insert(org, sealed.as_slice()).map_err(err)?;
                        (Some(row), true)
                    }
                    None => (existing, false),
                }
            };
            if changed {
                txn.commit().map_err(err)?;
            } else {
                txn.abort().map_err(err)?;
            }
            Ok((stored, changed))
        })?;
        if changed {
            self.changed(false);
        }
        Ok(stored)
    }

    fn put_policy(&self, org: &str, row: &[u8]) -> Result<(), ControlError> {
        let s = self.sealer();
        self.run(|db| {
            let txn = db.begin_write().map_err(err)?;
            let sealed = seal_b(&s, ORG_POLICY_NAME, &[org], row)?;
            txn.open_table(ORG_POLICY).map_err(err)?.insert(org, sealed.as_slice()).map_err(err)?;
            txn.commit().map_err(err)?;
            Ok(())
        })?;
        self.changed(false);
        Ok(())
    }

    fn replace_state(&self, name: &str, value: &str) -> Result<Option<String>, ControlError> {
        let s = self.sealer();
        let out = self.run(|db| {
            let txn = db.begin_write().map_err(err)?;
            let before = {
                let mut table = txn.open_table(COLLECTOR_STATE).map_err(err)?;
                let before = table.get(name).map_err(err)?.map(|v| v.value().to_owned());
                let before = before.map(|v| open_t(&s, STATE_NAME, &[name], v)).transpose()?;
                if before.as_deref() != Some(value) {
                    let sealed = seal_t(&s, STATE_NAME, &[name], value)?;
                    table.insert(name, sealed.as_str()).map_err(err)?;
                }
                before
            };
            txn.commit().map_err(err)?;
            Ok(before)
        })?;
        self.changed(false);
        Ok(out)
    }

    fn state(&self, name: &str) -> Result<Option<String>, ControlError> {
        let s = self.sealer();
        self.run(|db| {
            let txn = db.begin_read().map_err(err)?;
            let table = txn.open_table(COLLECTOR_STATE).map_err(err)?;
            let value = table.get(name).map_err(err)?.map(|v| v.value().to_owned());
            value.map(|v| open_t(&s, STATE_NAME, &[name], v)).transpose()
        })
    }

    fn states_with_prefix(&self, prefix: &str) -> Result<Vec<(String, String)>, ControlError> {
        let s = self.sealer();
        self.run(|db| {
            let txn = db.begin_read().map_err(err)?;
            let table = txn.open_table(COLLECTOR_STATE).map_err(err)?;
            let mut out = Vec::new();
            for row in table.range(prefix..).map_err(err)? {
                let (key, value) = row.map_err(err)?;
                if !key.value().starts_with(prefix) {
                    break;
                }
                let value = open_t(&s, STATE_NAME, &[key.value()], value.value().to_owned())?;
                out.push((key.value().to_owned(), value));
            }
            Ok(out)
        })
    }

    fn rewrites_rows(&self) -> bool {
        true
    }

    fn rewrite_rows(&self, edit: &mut RowRewrite<'_>) -> Result<u64, ControlError> {
        let s = self.sealer();
        let rewritten = self.run(|db| {
            let txn = db.begin_write().map_err(err)?;
            let mut rewritten = 0u64;
            // Each table read whole first: redb does not let a table be
            // written while an iterator borrows it. These tables are small
            // (keys, registrations, states), bounded by the registry.
            let refused = |table: RowTable| move |e: String| ControlError::Permanent(format!("{table:?} row: {e}"));
            for (def, table) in [(META, RowTable::Meta), (ORG_KEYS, RowTable::OrgKey)] {
                let mut t = txn.open_table(def).map_err(err)?;
                let rows = t
                    .iter()
                    .map_err(err)?
                    .map(|row| row.map(|(k, v)| (k.value().to_owned(), v.value().to_vec())).map_err(err))
                    .collect::<Result<Vec<_>, _>>()?;
                for (key, value) in rows {
                    if let Some(new) = edit(table, &[key.as_str()], &value).map_err(refused(table))? {
                        t.insert(key.as_str(), new.as_slice()).map_err(err)?;
                        rewritten += 1;
                    }
                }
            }
            {
                let mut t = txn.open_table(DEVICES).map_err(err)?;
                let rows = t
                    .iter()
                    .map_err(err)?
                    .map(|row| {
                        row.map(|(k, v)| {
                            let (org, device) = k.value();
                            ((org.to_owned(), device.to_owned()), v.value().to_vec())
                        })
                        .map_err(err)
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                for ((org, device), value) in rows {
                    let key = [org.as_str(), device.as_str()];
                    let value = open_b(&s, DEVICES_NAME, &key, value)?;
                    let new = edit(RowTable::Device, &key, &value).map_err(refused(RowTable::Device))?;
                    if let Some(new) = new {
                        let sealed = seal_b(&s, DEVICES_NAME, &key, &new)?;
                        t.insert((org.as_str(), device.as_str()), sealed.as_slice()).map_err(err)?;
                        rewritten += 1;
                    }
                }
            }
            {
                let mut t = txn.open_table(COLLECTOR_STATE).map_err(err)?;
                let rows = t
                    .iter()
                    .map_err(err)?
                    .map(|row| row.map(|(k, v)| (k.value().to_owned(), v.value().to_owned())).map_err(err))
                    .collect::<Result<Vec<_>, _>>()?;
                for (key, value) in rows {
                    let value = open_t(&s, STATE_NAME, &[key.as_str()], value)?;
                    let new =
                        edit(RowTable::State, &[key.as_str()], value.as_bytes()).map_err(refused(RowTable::State))?;
                    if let Some(new) = new {
                        let text = String::from_utf8(new).map_err(|_| {
                            ControlError::Permanent(format!("state {key:?}: rewritten value is not UTF-8"))
                        })?;
                        let sealed = seal_t(&s, STATE_NAME, &[key.as_str()], &text)?;
                        t.insert(key.as_str(), sealed.as_str()).map_err(err)?;
                        rewritten += 1;
                    }
                }
            }
            txn.commit().map_err(err)?;
            Ok(rewritten)
        })?;
        self.changed(false);
        Ok(rewritten)
    }

    fn seal_values(&self, key: SecretKey) -> Result<bool, ControlError> {
        let sealer = Arc::new(RowSealer::new(key));
        let migrated = self.run(|db| {
            let txn = db.begin_write().map_err(err)?;
            if txn.open_table(META).map_err(err)?.get(VALUES_SEALED_ROW).map_err(err)?.is_some() {
                txn.abort().map_err(err)?;
                return Ok(false);
            }
            // A store written before values were sealed: every value sealed
            // in this one transaction, with the row that says so, so a
            // crash leaves it all plain or all sealed.
            {
                let mut t = txn.open_table(DEVICES).map_err(err)?;
                let rows = t
                    .iter()
                    .map_err(err)?
                    .map(|row| {
                        row.map(|(k, v)| {
                            let (org, device) = k.value();
                            ((org.to_owned(), device.to_owned()), v.value().to_vec())
                        })
                        .map_err(err)
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                for ((org, device), value) in rows {
                    let sealed = sealer.seal(DEVICES_NAME, &[&org, &device], &value)?;
                    t.insert((org.as_str(), device.as_str()), sealed.as_slice()).map_err(err)?;
                }
                let mut t = txn.open_table(SSH_KEYS).map_err(err)?;
                let rows = t
                    .iter()
                    .map_err(err)?
                    .map(|row| {
                        row.map(|(k, v)| {
                            let (org, device) = k.value();
                            ((org.to_owned(), device.to_owned()), v.value().to_owned())
                        })
                        .map_err(err)
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                for ((org, device), value) in rows {
                    let sealed = sealer.seal_text(SSH_KEYS_NAME, &[&org, &device], &value)?;
                    t.insert((org.as_str(), device.as_str()), sealed.as_str()).map_err(err)?;
                }
                let mut t = txn.open_table(ORG_POLICY).map_err(err)?;
                let rows = t
                    .iter()
                    .map_err(err)?
                    .map(|row| row.map(|(k, v)| (k.value().to_owned(), v.value().to_vec())).map_err(err))
                    .collect::<Result<Vec<_>, _>>()?;
                for (org, value) in rows {
                    let sealed = sealer.seal(ORG_POLICY_NAME, &[&org], &value)?;
                    t.insert(org.as_str(), sealed.as_slice()).map_err(err)?;
                }
                let mut t = txn.open_table(COLLECTOR_STATE).map_err(err)?;
                let rows = t
                    .iter()
                    .map_err(err)?
                    .map(|row| row.map(|(k, v)| (k.value().to_owned(), v.value().to_owned())).map_err(err))
                    .collect::<Result<Vec<_>, _>>()?;
                for (name, value) in rows {
                    let sealed = sealer.seal_text(STATE_NAME, &[&name], &value)?;
                    t.insert(name.as_str(), sealed.as_str()).map_err(err)?;
                }
                txn.open_table(META).map_err(err)?.insert(VALUES_SEALED_ROW, &[1u8][..]).map_err(err)?;
            }
            txn.commit().map_err(err)?;
            Ok(true)
        })?;
        *self.sealer.write().unwrap_or_else(PoisonError::into_inner) = Some(sealer);
        if migrated {
            self.changed(false);
        }
        Ok(migrated)
    }

    fn flush(&self) {
        self.flush_backup();
    }

    fn describe(&self) -> String {
        match &self.db.reopen {
            Some(reopen) => reopen.path.display().to_string(),
            None => "the control database (in memory)".into(),
        }
    }

    fn audit_head(&self) -> Result<Option<Vec<u8>>, ControlError> {
        self.run(|db| {
            let txn = db.begin_read().map_err(err)?;
            let table = txn.open_table(AUDIT_HEAD).map_err(err)?;
            let head = table.get(HEAD_ROW).map_err(err)?.map(|v| v.value().to_vec());
            Ok(head)
        })
    }

    fn set_audit_head(&self, head: &[u8]) -> Result<(), ControlError> {
        self.run(|db| {
            let txn = db.begin_write().map_err(err)?;
            txn.open_table(AUDIT_HEAD).map_err(err)?.insert(HEAD_ROW, head).map_err(err)?;
            txn.commit().map_err(err)?;
            Ok(())
        })?;
        self.changed(true);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open() -> (tempfile::TempDir, RedbControl) {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Database::create(dir.path().join("c.redb")).unwrap());
        (dir, RedbControl::open(db).unwrap())
    }

    #[test]
    fn a_batch_of_registrations_is_one_transaction_and_sequences_never_go_back() {
        let (_dir, c) = open();
        let rows: Vec<DeviceRow> = (0..100)
            .map(|i| DeviceRow { org: "acme".into(), device: format!("ap-{i:03}"), row: vec![i as u8] })
            .collect();
        c.put_devices(&rows).unwrap();
        assert_eq!(c.devices().unwrap(), rows);
        let key = ("acme".to_owned(), "ap-001".to_owned(), 9);
        c.raise_stored_seqs(&[(key.clone(), 5)], &[]).unwrap();
        c.raise_stored_seqs(&[(key.clone(), 3)], &[]).unwrap();
        assert_eq!(c.stored_seq("acme", "ap-001", 9).unwrap(), 5);
        assert_eq!(c.stored_seq("acme", "ap-001", 8).unwrap(), 0);
    }

    #[test]
    fn a_batch_of_ssh_keys_sets_and_removes_sealed_and_the_last_of_a_device_wins() {
        let (_dir, c) = open();
        c.set_ssh_key("acme", "sw-old", Some("ssh-ed25519 AAAA old")).unwrap();
        c.seal_values(SecretKey::from_bytes([3; 32])).unwrap();
        let row = |device: &str, line: Option<&str>| SshKeyRow {
            org: "acme".into(),
            device: device.into(),
            line: line.map(str::to_owned),
        };
        let mut rows: Vec<SshKeyRow> =
            (0..300).map(|i| row(&format!("sw-{i:03}"), Some(&format!("ssh-ed25519 AAAA {i}")))).collect();
        rows.push(row("sw-old", None));
        rows.push(row("sw-007", Some("ssh-ed25519 AAAA seven")));
        rows.push(row("sw-008", None));
        c.set_ssh_keys(&rows).unwrap();
        assert_eq!(c.ssh_key("acme", "sw-000").unwrap().as_deref(), Some("ssh-ed25519 AAAA 0"));
        assert_eq!(c.ssh_key("acme", "sw-299").unwrap().as_deref(), Some("ssh-ed25519 AAAA 299"));
        assert_eq!(c.ssh_key("acme", "sw-007").unwrap().as_deref(), Some("ssh-ed25519 AAAA seven"));
        assert_eq!(c.ssh_key("acme", "sw-008").unwrap(), None);
        assert_eq!(c.ssh_key("acme", "sw-old").unwrap(), None);
        c.set_ssh_keys(&[]).unwrap();
        assert_eq!(c.ssh_key("acme", "sw-000").unwrap().as_deref(), Some("ssh-ed25519 AAAA 0"));
    }

    #[test]
    fn read_modify_writes_decide_once() {
        let (_dir, c) = open();
        assert_eq!(c.insert_org_key_if_absent("acme", b"first").unwrap(), (b"first".to_vec(), true));
        assert_eq!(c.insert_org_key_if_absent("acme", b"second").unwrap(), (b"first".to_vec(), false));
        assert_eq!(c.org_key_names().unwrap(), ["acme"]);
        assert!(!c.replace_org_key("acme", b"other", b"third").unwrap());
        assert!(c.replace_org_key("acme", b"first", b"third").unwrap());
        assert_eq!(c.org_key("acme").unwrap().as_deref(), Some(&b"third"[..]));
        assert!(!c.replace_org_key("globex", b"first", b"third").unwrap());
        assert!(c.remove_org_key("acme").unwrap());
        assert!(!c.remove_org_key("acme").unwrap());
        assert_eq!(c.replace_state("retention", "a").unwrap(), None);
        assert_eq!(c.replace_state("retention", "a").unwrap().as_deref(), Some("a"));
        assert!(!c.update_device("acme", "nobody", &mut |_| Some(vec![1])).unwrap(), "a missing device is not offered");
        assert_eq!(c.meta_or_insert("check", b"x").unwrap(), b"x");
        assert_eq!(c.meta_or_insert("check", b"y").unwrap(), b"x");
    }

    #[test]
    fn the_verified_copy_follows_changes_and_restores_every_row() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.redb");
        let copy = backup_path_of(&path);
        let db = Arc::new(Database::create(&path).unwrap());
        let c = RedbControl::with_backup(db, copy.clone(), None).unwrap();
        c.insert_org_key_if_absent("acme", b"wrapped").unwrap();
        let row = SegmentRow { records: 3, blocks: 1, bytes: 99, ..SegmentRow::default() };
        let seg = ("acme".to_owned(), "metadata".to_owned(), 20_000, "00000001-ab.seg".to_owned());
        c.raise_stored_seqs(&[(("acme".into(), "ap".into(), 1), 4)], &[(seg.clone(), row.clone())]).unwrap();
        c.raise_stored_seqs(&[], &[(seg.clone(), row.clone())]).unwrap();
        assert_eq!(c.segment_rows("acme", "metadata").unwrap()[0].1.records, 6);
        assert!(c.segment_rows("acme", "capture").unwrap().is_empty());
        // Keys are copied at once; the hot sequence commits at the latest on close.
        assert_eq!(backup::read(&copy).unwrap().org_keys.len(), 1);
        c.flush_backup();
        let dump = backup::read(&copy).unwrap();
        assert_eq!(dump, c.dump().unwrap());
        let restored = RedbControl::from_dump(&dump).unwrap();
        assert_eq!(restored.dump().unwrap(), dump);
        assert_eq!(restored.stored_seq("acme", "ap", 1).unwrap(), 4);
    }

    #[test]
    fn a_damaged_image_is_an_error_never_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.redb");
        {
            let c = RedbControl::open(Arc::new(Database::create(&path).unwrap())).unwrap();
            for i in 0..50 {
                c.insert_org_key_if_absent(&format!("org-{i}"), &[7; 61]).unwrap();
            }
        }
        let bytes = std::fs::read(&path).unwrap();
        RedbControl::verified_image(bytes.clone()).unwrap();
        assert!(RedbControl::verified_image(bytes[..bytes.len() / 2].to_vec()).is_err());
        let mut errors = 0;
        for at in (0..bytes.len()).step_by(509) {
            let mut bad = bytes.clone();
            bad[at] ^= 0x41;
            // Either it is still a valid database or it is refused; never a panic.
            if RedbControl::verified_image(bad).is_err() {
                errors += 1;
            }
        }
        assert!(errors > 0);
    }

    /// A file whose writes fail while `full` is set, as on a full disk.
    #[derive(Debug)]
    struct FullDisk {
        file: redb::backends::FileBackend,
        full: Arc<AtomicBool>,
    }

    impl FullDisk {
        fn check(&self) -> Result<(), io::Error> {
            if self.full.load(Ordering::SeqCst) {
                Err(io::ErrorKind::StorageFull.into())
            } else {
                Ok(())
            }
        }
    }

    impl redb::StorageBackend for FullDisk {
        fn len(&self) -> Result<u64, io::Error> {
            self.file.len()
        }
        fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>, io::Error> {
            self.file.read(offset, len)
        }
        fn set_len(&self, len: u64) -> Result<(), io::Error> {
            self.check()?;
            self.file.set_len(len)
        }
        fn sync_data(&self, eventual: bool) -> Result<(), io::Error> {
            self.check()?;
            self.file.sync_data(eventual)
        }
        fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
            self.check()?;
            self.file.write(offset, data)
        }
    }

    #[test]
    fn a_write_failed_on_a_full_disk_reopens_the_database_and_loses_nothing_committed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.redb");
        let full = Arc::new(AtomicBool::new(false));
        let open = {
            let (path, full) = (path.clone(), Arc::clone(&full));
            move || -> Result<Database, ControlError> {
                let file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path);
                let file = file.map_err(|e| ControlError::Transient(e.to_string()))?;
                let file = redb::backends::FileBackend::new(file).map_err(err)?;
                redb::Builder::new().create_with_backend(FullDisk { file, full: Arc::clone(&full) }).map_err(err)
            }
        };
        let db = Arc::new(open().unwrap());
        let reopen = Reopen { path: path.clone(), open: Box::new(open) };
        let c = RedbControl::with_backup(db, backup_path_of(&path), Some(reopen)).unwrap();
        let seq = |n| [(("acme".to_owned(), "ap".to_owned(), 1), n)];
        c.raise_stored_seqs(&seq(4), &[]).unwrap();

        full.store(true, Ordering::SeqCst);
        let failed = c.raise_stored_seqs(&seq(5), &[]).unwrap_err();
        assert!(failed.is_transient(), "{failed}");
        // Still full: refused, transient, and never a panic.
        for n in 6..9 {
            let refused = c.raise_stored_seqs(&seq(n), &[]).unwrap_err();
            assert!(refused.is_transient(), "{refused}");
        }

        full.store(false, Ordering::SeqCst);
        let mut retries = 0;
        while let Err(e) = c.raise_stored_seqs(&seq(9), &[]) {
            assert!(e.is_transient(), "{e}");
            retries += 1;
            assert!(retries < 3, "the database did not recover: {e}");
        }
        assert_eq!(c.stored_seq("acme", "ap", 1).unwrap(), 9);
        assert!(c.insert_org_key_if_absent("acme", b"wrapped").unwrap().1);
        drop(c);
        // What was committed is in the file, which opens cleanly.
        let again = RedbControl::open(Arc::new(Database::create(&path).unwrap())).unwrap();
        assert_eq!(again.stored_seq("acme", "ap", 1).unwrap(), 9);
        assert_eq!(again.org_key("acme").unwrap().as_deref(), Some(&b"wrapped"[..]));
    }

    #[test]
    fn only_passing_io_failures_are_transient() {
        assert!(err(redb::Error::Io(io::ErrorKind::StorageFull.into())).is_transient());
        assert!(!err(redb::Error::Io(io::ErrorKind::PermissionDenied.into())).is_transient());
        assert!(!err(redb::Error::Corrupted("bad page".into())).is_transient());
    }
}
