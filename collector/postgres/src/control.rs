//! [`PgControl`]: the [`ControlStore`] over PostgreSQL.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use std::sync::RwLock;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use glimpse_common::secret::SecretKey;
use glimpse_store::control::sealed::{self, RowSealer};
use glimpse_store::control::seam::{
    AuditAppend, Change, ChangeSink, ControlError, ControlStore, DeviceRow, PolicyEdit, RowRewrite, SegmentRow,
    SegmentRowKey, SshKeyRow, StreamSeq, MASTER_CHECK_ROW,
};
use tokio_postgres::error::SqlState;

use crate::config::Connector;
use crate::runtime::Runtime;
use crate::{migrate, MigrationReport, PgError, PostgresConfig};

/// The control plane in a PostgreSQL database shared by several
/// collectors. Cheap to share behind an `Arc`; see the crate header for
/// how it works.
pub struct PgControl {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    // Dropped last, after the pool and the listener that run on it.
    pub(crate) pool: Pool,
    pub(crate) timeout: Duration,
    pub(crate) at: String,
    pub(crate) settings: (tokio_postgres::Config, Connector),
    pub(crate) sinks: Mutex<Vec<ChangeSink>>,
    pub(crate) listening: std::sync::Once,
    /// Seals and opens the configuration values, once
    /// [`ControlStore::seal_values`] installed it; until then they are
    /// refused (see [`crate::seal`]).
    pub(crate) sealer: RwLock<Option<Arc<RowSealer>>>,
    /// The master key check value this process's key opens
    /// ([`ControlStore::settled_under`]): writes of key material check it.
    pub(crate) epoch: RwLock<Option<Vec<u8>>>,
    pub(crate) rt: Runtime,
}

impl std::fmt::Debug for PgControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgControl").field("at", &self.inner.at).finish_non_exhaustive()
    }
}

/// A database error as a sentence, with its SQLSTATE when the server sent
/// one (tokio-postgres's own Display says only "db error").
pub(crate) fn describe_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({}, SQLSTATE {})", db.message(), db.severity(), db.code().code()),
        None => match std::error::Error::source(e) {
            Some(source) => format!("{e}: {source}"),
            None => e.to_string(),
        },
    }
}

/// Whether retrying may help: the connection, a conflict between
/// transactions, the server's resources or an operator's intervention
/// (SQLSTATE classes 08, 40, 53, 57, 58), or no answer at all.
fn is_transient(e: &tokio_postgres::Error) -> bool {
    match e.code() {
        None => true,
        Some(code) => {
            let class = &code.code()[..2];
            matches!(class, "08" | "40" | "53" | "57" | "58")
        }
    }
}

pub(crate) fn db(e: tokio_postgres::Error) -> ControlError {
    if is_transient(&e) {
        ControlError::Transient(format!("PostgreSQL: {}", describe_error(&e)))
    } else {
        ControlError::Permanent(format!("PostgreSQL: {}", describe_error(&e)))
    }
}

pub(crate) fn pool_error(e: deadpool_postgres::PoolError) -> ControlError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => db(e),
        other => ControlError::Transient(format!("PostgreSQL connection: {other}")),
    }
}

/// Sequences and stream ids are u64 on our side, bigint there: stream ids
/// keep their bits; sequences must stay below 2^63 (they count batches).
fn seq_to_sql(seq: u64) -> Result<i64, ControlError> {
    i64::try_from(seq).map_err(|_| ControlError::Permanent(format!("sequence {seq} does not fit PostgreSQL's bigint")))
}

fn stream_to_sql(stream: u64) -> i64 {
    i64::from_ne_bytes(stream.to_ne_bytes())
}

fn seq_from_sql(seq: i64) -> Result<u64, ControlError> {
    u64::try_from(seq).map_err(|_| ControlError::Permanent(format!("a negative sequence ({seq}) in PostgreSQL")))
}

fn decode_row(bytes: &[u8]) -> Result<SegmentRow, ControlError> {
    postcard::from_bytes(bytes).map_err(|e| ControlError::Permanent(format!("a damaged segment catalog row: {e}")))
}

fn encode_row(row: &SegmentRow) -> Result<Vec<u8>, ControlError> {
    postcard::to_stdvec(row).map_err(|e| ControlError::Permanent(format!("cannot encode a segment catalog row: {e}")))
}

/// How long taking a service-wide lock may wait for another collector's
/// erase to finish.
const LOCK_WAIT: Duration = Duration::from_secs(600);

/// Holds a service-wide advisory lock; unlocks when dropped.
struct LockGuard {
    held: Option<(Client, String)>,
    inner: Arc<Inner>,
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        let Some((c, name)) = self.held.take() else { return };
        let Some(handle) = self.inner.rt.handle() else { return };
        // Unlocked before the connection goes back to the pool, so the
        // next user of it does not inherit the lock; if that fails the
        // connection is dropped, which ends the lock too.
        handle.spawn(async move {
            if c.execute("SELECT pg_advisory_unlock(hashtextextended($1, 0))", &[&name]).await.is_err() {
                drop(deadpool_postgres::Object::take(c));
            }
        });
    }
}

/// The deadline of operations over every row ([`PgControl::run_long`]).
const LONG_WAIT: Duration = Duration::from_secs(120);

/// The refusal of a write of key material by a collector whose master
/// key another collector has rotated away.
pub(crate) fn rotated_away() -> ControlError {
    ControlError::Permanent(
        "the master key was rotated by another collector sharing this database since this collector started: \
         it holds the old key; install the new master key file here and reload (SIGHUP) or restart this collector"
            .into(),
    )
}

/// In a transaction that writes rows holding key material wrapped under
/// the master key: checks that the store is still under `epoch` (the
/// check value this process's key opens) and holds the check row shared
/// until the commit, so a rotation (which takes it for update) waits for
/// this write and this write cannot follow the rotation unseen. No check
/// before the store is settled (`epoch` unknown).
pub(crate) async fn guard(tx: &tokio_postgres::Transaction<'_>, epoch: Option<&[u8]>) -> Result<(), ControlError> {
    let Some(known) = epoch else { return Ok(()) };
    let row = tx
        .query_opt("SELECT value FROM glimpse_meta WHERE name = $1 FOR SHARE", &[&MASTER_CHECK_ROW])
        .await
        .map_err(db)?;
    match row {
        Some(r) if r.get::<_, &[u8]>(0) == known => Ok(()),
        _ => Err(rotated_away()),
    }
}

/// Row-conflict retries of a read-modify-write that lost an insert race.
const CONFLICT_RETRIES: usize = 8;

pub(crate) type Client = deadpool_postgres::Object;

impl PgControl {
    /// Connects to the database `config` names, checks its schema (see
    /// [`crate::migrate`]) and the connection, and returns the control
    /// store. Fails at once, naming the database, if it cannot.
    pub fn connect(config: &PostgresConfig) -> Result<PgControl, PgError> {
        let inner = Arc::new(Inner::new(config)?);
        let at = inner.at.clone();
        let pool = inner.pool.clone();
        inner
            .rt
            .run("schema check", inner.timeout, async move {
                let client = pool.get().await.map_err(pool_error)?;
                Ok(migrate::check(&client, &at).await)
            })
            .map_err(|e| PgError::Connect { at: inner.at.clone(), message: e.to_string() })??;
        Ok(PgControl { inner })
    }

    /// Applies the migrations the database lacks (`glimpse-collector
    /// migrate`).
    pub fn migrate(config: &PostgresConfig) -> Result<MigrationReport, PgError> {
        let inner = Inner::new(config)?;
        let at = inner.at.clone();
        let (settings, connector) = inner.settings.clone();
        // Migrations may take longer than one operation's deadline.
        let timeout = inner.timeout.max(Duration::from_secs(60));
        inner
            .rt
            .run("migrate", timeout, async move {
                let mut client = match crate::listen::connect(&settings, &connector).await {
                    Ok(client) => client,
                    Err(e) => return Ok(Err(PgError::Connect { at: at.clone(), message: describe_error(&e) })),
                };
                Ok(migrate::apply(&mut client, &at).await)
            })
            .map_err(|e| PgError::Connect { at: inner.at.clone(), message: e.to_string() })?
    }

    /// Where the database is (no password), for messages.
    pub fn location(&self) -> &str {
        &self.inner.at
    }

    pub(crate) fn run<T, F, Fut>(&self, what: &'static str, op: F) -> Result<T, ControlError>
    where
        T: Send + 'static,
        F: FnOnce(Pool) -> Fut,
        Fut: std::future::Future<Output = Result<T, ControlError>> + Send + 'static,
    {
        self.inner.rt.run(what, self.inner.timeout, op(self.inner.pool.clone()))
    }

    /// As `run`, for the few operations that touch every row (sealing a
    /// plain database, a master key rotation): a longer deadline.
    pub(crate) fn run_long<T, F, Fut>(&self, what: &'static str, op: F) -> Result<T, ControlError>
    where
        T: Send + 'static,
        F: FnOnce(Pool) -> Fut,
        Fut: std::future::Future<Output = Result<T, ControlError>> + Send + 'static,
    {
        self.inner.rt.run(what, self.inner.timeout.max(LONG_WAIT), op(self.inner.pool.clone()))
    }

    /// A connection of its own, outside the pool, for a transaction that
    /// spans several calls: dropping it (on any failure, or a deadline)
    /// closes it, and the server rolls back what it left open.
    pub(crate) async fn dedicated(
        settings: (tokio_postgres::Config, Connector),
    ) -> Result<tokio_postgres::Client, ControlError> {
        crate::listen::connect(&settings.0, &settings.1).await.map_err(db)
    }

    pub(crate) fn settings(&self) -> (tokio_postgres::Config, Connector) {
        self.inner.settings.clone()
    }

    /// The sealer, or a refusal: a process that has not installed it
    /// must neither read sealed values as plain nor write plain ones.
    pub(crate) fn sealer(&self) -> Result<Arc<RowSealer>, ControlError> {
        self.inner.sealer.read().unwrap_or_else(PoisonError::into_inner).clone().ok_or_else(|| {
            ControlError::Permanent(format!(
                "the configuration values at {} are sealed and this process has not installed the configuration key",
                self.inner.at
            ))
        })
    }

    pub(crate) fn epoch(&self) -> Option<Vec<u8>> {
        self.inner.epoch.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// One registry row's sealed bytes.
    fn raw_device(&self, org: &str, device: &str) -> Result<Option<Vec<u8>>, ControlError> {
        let (org, device) = (org.to_owned(), device.to_owned());
        self.run("device", |pool| async move {
            let c = client(&pool).await?;
            let stmt = c
                .prepare_cached("SELECT sealed FROM glimpse_devices WHERE org = $1 AND device = $2")
                .await
                .map_err(db)?;
            let row = c.query_opt(&stmt, &[&org, &device]).await.map_err(db)?;
            Ok(row.map(|r| r.get::<_, Vec<u8>>(0)))
        })
    }

    /// One organisation's sealed decisions.
    fn raw_policy(&self, org: &str) -> Result<Option<Vec<u8>>, ControlError> {
        let org = org.to_owned();
        self.run("decision", |pool| async move {
            let c = client(&pool).await?;
            let stmt = c.prepare_cached("SELECT sealed FROM glimpse_org_policy WHERE org = $1").await.map_err(db)?;
            Ok(c.query_opt(&stmt, &[&org]).await.map_err(db)?.map(|r| r.get::<_, Vec<u8>>(0)))
        })
    }
}

impl Inner {
    fn new(config: &PostgresConfig) -> Result<Inner, PgError> {
        let at = config.describe();
        let settings = config.connect_settings()?;
        let rt = Runtime::new().map_err(|e| PgError::Config(format!("cannot start the PostgreSQL runtime: {e}")))?;
        let manager_config = ManagerConfig { recycling_method: RecyclingMethod::Fast };
        let manager = match &settings.1 {
            Connector::Plain => Manager::from_config(settings.0.clone(), tokio_postgres::NoTls, manager_config),
            Connector::Tls(tls) => Manager::from_config(settings.0.clone(), tls.clone(), manager_config),
        };
        let timeout = config.timeout();
        let handle = rt.handle().cloned();
        let _entered = handle.as_ref().map(|h| h.enter());
        let pool = Pool::builder(manager)
            .max_size(config.pool_size)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(timeout))
            .create_timeout(Some(timeout))
            .recycle_timeout(Some(timeout))
            .build()
            .map_err(|e| PgError::Config(format!("cannot set up the PostgreSQL connection pool: {e}")))?;
        Ok(Inner {
            pool,
            timeout,
            at,
            settings,
            sinks: Mutex::new(Vec::new()),
            listening: std::sync::Once::new(),
            sealer: RwLock::new(None),
            epoch: RwLock::new(None),
            rt,
        })
    }

    /// Hands `change` to every sink.
    pub(crate) fn report(&self, change: &Change) {
        let sinks = self.sinks.lock().unwrap_or_else(PoisonError::into_inner).clone();
        for sink in sinks {
            sink(change);
        }
    }
}

pub(crate) async fn client(pool: &Pool) -> Result<Client, ControlError> {
    pool.get().await.map_err(pool_error)
}

impl ControlStore for PgControl {
    fn meta_or_insert(&self, name: &str, value: &[u8]) -> Result<Vec<u8>, ControlError> {
        let (name, value, epoch) = (name.to_owned(), value.to_vec(), self.epoch());
        self.run("meta", |pool| async move {
            let mut c = client(&pool).await?;
            // A row there is read without the master key guard (a rotation
            // asks for the check row after a failed commit).
            if let Some(row) =
                c.query_opt("SELECT value FROM glimpse_meta WHERE name = $1", &[&name]).await.map_err(db)?
            {
                return Ok(row.get::<_, Vec<u8>>(0));
            }
            let tx = c.transaction().await.map_err(db)?;
            // A metadata row holds a key wrapped under the master key.
            guard(&tx, epoch.as_deref()).await?;
            tx.execute(
                "INSERT INTO glimpse_meta (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
                &[&name, &value],
            )
            .await
            .map_err(db)?;
            let row = tx.query_one("SELECT value FROM glimpse_meta WHERE name = $1", &[&name]).await.map_err(db)?;
            tx.commit().await.map_err(db)?;
            Ok(row.get::<_, Vec<u8>>(0))
        })
    }

    fn device(&self, org: &str, device: &str) -> Result<Option<Vec<u8>>, ControlError> {
        let sealer = self.sealer()?;
        let (org, device) = (org.to_owned(), device.to_owned());
        let stored = self.raw_device(&org, &device)?;
        stored.map(|s| sealer.open(sealed::DEVICES, &[&org, &device], &s)).transpose()
    }

    fn devices(&self) -> Result<Vec<DeviceRow>, ControlError> {
        let sealer = self.sealer()?;
        self.run("devices", |pool| async move {
            let c = client(&pool).await?;
            let rows = c
                .query("SELECT org, device, sealed FROM glimpse_devices ORDER BY org, device", &[])
                .await
                .map_err(db)?;
            rows.iter()
                .map(|r| {
                    let (org, device): (String, String) = (r.get(0), r.get(1));
                    let row = sealer.open(sealed::DEVICES, &[&org, &device], r.get::<_, &[u8]>(2))?;
                    Ok(DeviceRow { org, device, row })
                })
                .collect()
        })
    }

    fn put_devices(&self, rows: &[DeviceRow]) -> Result<(), ControlError> {
        let sealer = self.sealer()?;
        let epoch = self.epoch();
        let mut rows = rows.to_vec();
        // Key order, so that two collectors importing at once cannot
        // deadlock; the last of duplicate keys wins, as in a loop of inserts.
        rows.reverse();
        rows.sort_by(|a, b| (&a.org, &a.device).cmp(&(&b.org, &b.device)));
        rows.dedup_by(|a, b| a.org == b.org && a.device == b.device);
        // Large imports go in slices, one transaction for all of them.
        self.run("put devices", |pool| async move {
            let mut c = client(&pool).await?;
            let tx = c.transaction().await.map_err(db)?;
            // Registry rows hold shared keys wrapped under the master key.
            guard(&tx, epoch.as_deref()).await?;
            for chunk in rows.chunks(1000) {
                let orgs: Vec<&str> = chunk.iter().map(|r| r.org.as_str()).collect();
                let devices: Vec<&str> = chunk.iter().map(|r| r.device.as_str()).collect();
                // Sealed values differ at every sealing (random nonces):
                // rows already stored as they are stay untouched, so a
                // repeated import notifies nobody.
                let existing = tx
                    .query(
                        "SELECT t.org, t.device, t.sealed FROM glimpse_devices t
                         JOIN UNNEST($1::text[], $2::text[]) AS u(org, device)
                           ON t.org = u.org AND t.device = u.device
                         ORDER BY t.org, t.device FOR UPDATE OF t",
                        &[&orgs, &devices],
                    )
                    .await
                    .map_err(db)?;
                let mut stored = std::collections::HashMap::new();
                for r in &existing {
                    let (org, device): (String, String) = (r.get(0), r.get(1));
                    let plain = sealer.open(sealed::DEVICES, &[&org, &device], r.get::<_, &[u8]>(2))?;
                    stored.insert((org, device), plain);
                }
                let changed: Vec<&DeviceRow> =
                    chunk.iter().filter(|r| stored.get(&(r.org.clone(), r.device.clone())) != Some(&r.row)).collect();
                if changed.is_empty() {
                    continue;
                }
                let orgs: Vec<&str> = changed.iter().map(|r| r.org.as_str()).collect();
                let devices: Vec<&str> = changed.iter().map(|r| r.device.as_str()).collect();
                let bytes = changed
                    .iter()
                    .map(|r| sealer.seal(sealed::DEVICES, &[&r.org, &r.device], &r.row))
                    .collect::<Result<Vec<_>, _>>()?;
                tx.execute(
                    "INSERT INTO glimpse_devices (org, device, sealed)
                     SELECT * FROM UNNEST($1::text[], $2::text[], $3::bytea[])
                     ON CONFLICT (org, device) DO UPDATE SET sealed = EXCLUDED.sealed",
                    &[&orgs, &devices, &bytes],
                )
                .await
                .map_err(db)?;
            }
            tx.commit().await.map_err(db)
        })
    }

    fn update_device(
        &self,
        org: &str,
        device: &str,
        edit: &mut dyn FnMut(&[u8]) -> Option<Vec<u8>>,
    ) -> Result<bool, ControlError> {
        let sealer = self.sealer()?;
        // Compare and swap: the edit runs here, not inside a transaction
        // held open across it, and the write applies only to the row it
        // was given (its sealed bytes); otherwise the edit runs again on
        // what is there now.
        for _ in 0..CONFLICT_RETRIES {
            let (o, d) = (org.to_owned(), device.to_owned());
            let Some(stored) = self.raw_device(&o, &d)? else {
                return Ok(false);
            };
            let existing = sealer.open(sealed::DEVICES, &[&o, &d], &stored)?;
            let Some(new_row) = edit(&existing) else {
                return Ok(false);
            };
            let new_row = sealer.seal(sealed::DEVICES, &[&o, &d], &new_row)?;
            let epoch = self.epoch();
            let swapped = self.run("update device", |pool| async move {
                let mut c = client(&pool).await?;
                let tx = c.transaction().await.map_err(db)?;
                guard(&tx, epoch.as_deref()).await?;
                let n = tx
                    .execute(
                        "UPDATE glimpse_devices SET sealed = $4 WHERE org = $1 AND device = $2 AND sealed = $3",
                        &[&o, &d, &stored, &new_row],
                    )
                    .await
                    .map_err(db)?;
                tx.commit().await.map_err(db)?;
                Ok(n == 1)
            })?;
            if swapped {
                return Ok(true);
            }
        }
        Err(ControlError::Transient(format!("the registration of {org}/{device} kept changing under this update")))
    }

    fn ssh_key(&self, org: &str, device: &str) -> Result<Option<String>, ControlError> {
        let sealer = self.sealer()?;
        let (org, device) = (org.to_owned(), device.to_owned());
        self.run("ssh key", |pool| async move {
            let c = client(&pool).await?;
            let stmt = c
                .prepare_cached("SELECT sealed FROM glimpse_device_ssh_keys WHERE org = $1 AND device = $2")
                .await
                .map_err(db)?;
            let row = c.query_opt(&stmt, &[&org, &device]).await.map_err(db)?;
            row.map(|r| sealer.open_utf8(sealed::SSH_KEYS, &[&org, &device], r.get::<_, &[u8]>(0))).transpose()
        })
    }

    fn set_ssh_key(&self, org: &str, device: &str, line: Option<&str>) -> Result<(), ControlError> {
        let sealer = self.sealer()?;
        let line = line.map(|l| sealer.seal(sealed::SSH_KEYS, &[org, device], l.as_bytes())).transpose()?;
        let (org, device) = (org.to_owned(), device.to_owned());
        // Sealed under the configuration key, which a master key rotation
        // keeps: no master key guard.
        self.run("set ssh key", |pool| async move {
            let c = client(&pool).await?;
            match line {
                Some(line) => c
                    .execute(
                        "INSERT INTO glimpse_device_ssh_keys (org, device, sealed) VALUES ($1, $2, $3)
                         ON CONFLICT (org, device) DO UPDATE SET sealed = EXCLUDED.sealed",
                        &[&org, &device, &line],
                    )
                    .await
                    .map_err(db)?,
                None => c
                    .execute("DELETE FROM glimpse_device_ssh_keys WHERE org = $1 AND device = $2", &[&org, &device])
                    .await
                    .map_err(db)?,
            };
            Ok(())
        })
    }

    fn set_ssh_keys(&self, rows: &[SshKeyRow]) -> Result<(), ControlError> {
        let sealer = self.sealer()?;
        let mut rows = rows.to_vec();
        // Key order, so that two collectors importing at once cannot
        // deadlock; the last of duplicate keys wins, as in a loop of sets.
        rows.reverse();
        rows.sort_by(|a, b| (&a.org, &a.device).cmp(&(&b.org, &b.device)));
        rows.dedup_by(|a, b| a.org == b.org && a.device == b.device);
        let (set, remove): (Vec<SshKeyRow>, Vec<SshKeyRow>) = rows.into_iter().partition(|r| r.line.is_some());
        let sealed = set
            .iter()
            .map(|r| {
                sealer.seal(sealed::SSH_KEYS, &[&r.org, &r.device], r.line.as_deref().unwrap_or_default().as_bytes())
            })
            .collect::<Result<Vec<_>, _>>()?;
        // Sealed under the configuration key, which a master key rotation
        // keeps: no master key guard. Large imports go in slices, one
        // transaction for all of them.
        self.run("set ssh keys", |pool| async move {
            let mut c = client(&pool).await?;
            let tx = c.transaction().await.map_err(db)?;
            for (chunk, sealed) in set.chunks(1000).zip(sealed.chunks(1000)) {
                let orgs: Vec<&str> = chunk.iter().map(|r| r.org.as_str()).collect();
                let devices: Vec<&str> = chunk.iter().map(|r| r.device.as_str()).collect();
                tx.execute(
                    "INSERT INTO glimpse_device_ssh_keys (org, device, sealed)
                     SELECT * FROM UNNEST($1::text[], $2::text[], $3::bytea[])
                     ON CONFLICT (org, device) DO UPDATE SET sealed = EXCLUDED.sealed",
                    &[&orgs, &devices, &sealed],
                )
                .await
                .map_err(db)?;
            }
            for chunk in remove.chunks(1000) {
                let orgs: Vec<&str> = chunk.iter().map(|r| r.org.as_str()).collect();
                let devices: Vec<&str> = chunk.iter().map(|r| r.device.as_str()).collect();
                tx.execute(
                    "DELETE FROM glimpse_device_ssh_keys t USING UNNEST($1::text[], $2::text[]) AS u(org, device)
                     WHERE t.org = u.org AND t.device = u.device",
                    &[&orgs, &devices],
                )
                .await
                .map_err(db)?;
            }
            // Dropped uncommitted on any error above: rolled back whole.
            tx.commit().await.map_err(db)
        })
    }

    fn stored_seq(&self, org: &str, device: &str, stream: u64) -> Result<u64, ControlError> {
        let (org, device, stream) = (org.to_owned(), device.to_owned(), stream_to_sql(stream));
        self.run("stored sequence", |pool| async move {
            let c = client(&pool).await?;
            let stmt = c
                .prepare_cached("SELECT seq FROM glimpse_stream_seq WHERE org = $1 AND device = $2 AND stream = $3")
                .await
                .map_err(db)?;
            match c.query_opt(&stmt, &[&org, &device, &stream]).await.map_err(db)? {
                Some(row) => seq_from_sql(row.get::<_, i64>(0)),
                None => Ok(0),
            }
        })
    }

    fn raise_stored_seqs(
        &self,
        updates: &[StreamSeq],
        segments: &[(SegmentRowKey, SegmentRow)],
    ) -> Result<(), ControlError> {
        // Highest sequence per stream, in key order (lock order).
        let mut highest = std::collections::BTreeMap::new();
        for ((org, device, stream), seq) in updates {
            let entry = highest.entry((org.clone(), device.clone(), stream_to_sql(*stream))).or_insert(0i64);
            *entry = (*entry).max(seq_to_sql(*seq)?);
        }
        let mut merged: std::collections::BTreeMap<SegmentRowKey, SegmentRow> = std::collections::BTreeMap::new();
        for (key, row) in segments {
            merged.entry(key.clone()).or_default().merge(row);
        }
        self.run("stored sequences", |pool| async move {
            let mut c = client(&pool).await?;
            let tx = c.transaction().await.map_err(db)?;
            if !highest.is_empty() {
                let orgs: Vec<&str> = highest.keys().map(|k| k.0.as_str()).collect();
                let devices: Vec<&str> = highest.keys().map(|k| k.1.as_str()).collect();
                let streams: Vec<i64> = highest.keys().map(|k| k.2).collect();
                let seqs: Vec<i64> = highest.values().copied().collect();
                let stmt = tx
                    .prepare_cached(
                        "INSERT INTO glimpse_stream_seq (org, device, stream, seq)
                         SELECT * FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::int8[])
                         ON CONFLICT (org, device, stream)
                         DO UPDATE SET seq = GREATEST(glimpse_stream_seq.seq, EXCLUDED.seq)",
                    )
                    .await
                    .map_err(db)?;
                tx.execute(&stmt, &[&orgs, &devices, &streams, &seqs]).await.map_err(db)?;
            }
            for ((org, kind, day, name), more) in &merged {
                let select = tx
                    .prepare_cached(
                        "SELECT row FROM glimpse_segments WHERE org = $1 AND kind = $2 AND day = $3 AND name = $4 FOR UPDATE",
                    )
                    .await
                    .map_err(db)?;
                let existing = tx.query_opt(&select, &[org, kind, day, name]).await.map_err(db)?;
                let mut row = match existing {
                    Some(r) => decode_row(r.get::<_, &[u8]>(0))?,
                    None => SegmentRow::default(),
                };
                row.merge(more);
                let upsert = tx
                    .prepare_cached(
                        "INSERT INTO glimpse_segments (org, kind, day, name, row) VALUES ($1, $2, $3, $4, $5)
                         ON CONFLICT (org, kind, day, name) DO UPDATE SET row = EXCLUDED.row",
                    )
                    .await
                    .map_err(db)?;
                tx.execute(&upsert, &[org, kind, day, name, &encode_row(&row)?]).await.map_err(db)?;
            }
            tx.commit().await.map_err(db)
        })
    }

    fn segment_rows(&self, org: &str, kind: &str) -> Result<Vec<(SegmentRowKey, SegmentRow)>, ControlError> {
        let (org, kind) = (org.to_owned(), kind.to_owned());
        self.run("segment catalog", |pool| async move {
            let c = client(&pool).await?;
            let rows = c
                .query(
                    "SELECT day, name, row FROM glimpse_segments WHERE org = $1 AND kind = $2 ORDER BY day, name",
                    &[&org, &kind],
                )
                .await
                .map_err(db)?;
            rows.iter()
                .map(|r| {
                    let key = (org.clone(), kind.clone(), r.get::<_, i64>(0), r.get::<_, String>(1));
                    Ok((key, decode_row(r.get::<_, &[u8]>(2))?))
                })
                .collect()
        })
    }

    fn replace_segment_rows(
        &self,
        remove: &[SegmentRowKey],
        put: &[(SegmentRowKey, SegmentRow)],
    ) -> Result<(), ControlError> {
        let mut remove = remove.to_vec();
        remove.sort();
        let mut put =
            put.iter().map(|(k, r)| Ok((k.clone(), encode_row(r)?))).collect::<Result<Vec<_>, ControlError>>()?;
        put.sort_by(|a, b| a.0.cmp(&b.0));
        self.run("replace segment catalog rows", |pool| async move {
            let mut c = client(&pool).await?;
            let tx = c.transaction().await.map_err(db)?;
            for (org, kind, day, name) in &remove {
                tx.execute(
                    "DELETE FROM glimpse_segments WHERE org = $1 AND kind = $2 AND day = $3 AND name = $4",
                    &[org, kind, day, name],
                )
                .await
                .map_err(db)?;
            }
            for ((org, kind, day, name), row) in &put {
                tx.execute(
                    "INSERT INTO glimpse_segments (org, kind, day, name, row) VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (org, kind, day, name) DO UPDATE SET row = EXCLUDED.row",
                    &[org, kind, day, name, row],
                )
                .await
                .map_err(db)?;
            }
            tx.commit().await.map_err(db)
        })
    }

    fn org_key(&self, org: &str) -> Result<Option<Vec<u8>>, ControlError> {
        let org = org.to_owned();
        self.run("organisation key", |pool| async move {
            let c = client(&pool).await?;
            let stmt = c.prepare_cached("SELECT wrapped FROM glimpse_org_keys WHERE org = $1").await.map_err(db)?;
            Ok(c.query_opt(&stmt, &[&org]).await.map_err(db)?.map(|r| r.get::<_, Vec<u8>>(0)))
        })
    }

    fn insert_org_key_if_absent(&self, org: &str, wrapped: &[u8]) -> Result<(Vec<u8>, bool), ControlError> {
        let (org, wrapped, epoch) = (org.to_owned(), wrapped.to_vec(), self.epoch());
        self.run("insert organisation key", |pool| async move {
            let mut c = client(&pool).await?;
            let tx = c.transaction().await.map_err(db)?;
            guard(&tx, epoch.as_deref()).await?;
            let inserted = tx
                .execute(
                    "INSERT INTO glimpse_org_keys (org, wrapped) VALUES ($1, $2) ON CONFLICT (org) DO NOTHING",
                    &[&org, &wrapped],
                )
                .await
                .map_err(db)?;
            if inserted == 1 {
                tx.commit().await.map_err(db)?;
                return Ok((wrapped, true));
            }
            let row = tx.query_opt("SELECT wrapped FROM glimpse_org_keys WHERE org = $1", &[&org]).await.map_err(db)?;
            tx.commit().await.map_err(db)?;
            match row {
                Some(r) => Ok((r.get::<_, Vec<u8>>(0), false)),
                // Destroyed between the two statements: try again later.
                None => Err(ControlError::Transient(format!("the key of {org} changed while it was created"))),
            }
        })
    }

    fn replace_org_key(&self, org: &str, expected: &[u8], new: &[u8]) -> Result<bool, ControlError> {
        let (org, expected, new, epoch) = (org.to_owned(), expected.to_vec(), new.to_vec(), self.epoch());
        self.run("replace organisation key", |pool| async move {
            let mut c = client(&pool).await?;
            // The new key list is wrapped under this collector's master key:
            // refused if another collector rotated that key away meanwhile.
            let tx = c.transaction().await.map_err(db)?;
            guard(&tx, epoch.as_deref()).await?;
            let n = tx
                .execute(
                    "UPDATE glimpse_org_keys SET wrapped = $3 WHERE org = $1 AND wrapped = $2",
                    &[&org, &expected, &new],
                )
                .await
                .map_err(db)?;
            tx.commit().await.map_err(db)?;
            Ok(n == 1)
        })
    }

    fn remove_org_key(&self, org: &str) -> Result<bool, ControlError> {
        let org = org.to_owned();
        self.run("remove organisation key", |pool| async move {
            let c = client(&pool).await?;
            Ok(c.execute("DELETE FROM glimpse_org_keys WHERE org = $1", &[&org]).await.map_err(db)? > 0)
        })
    }

    fn org_key_names(&self) -> Result<Vec<String>, ControlError> {
        self.run("organisation keys", |pool| async move {
            let c = client(&pool).await?;
            let rows = c.query("SELECT org FROM glimpse_org_keys ORDER BY org", &[]).await.map_err(db)?;
            Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
        })
    }

    fn policies(&self) -> Result<Vec<(String, Vec<u8>)>, ControlError> {
        let sealer = self.sealer()?;
        self.run("decisions", |pool| async move {
            let c = client(&pool).await?;
            let rows = c.query("SELECT org, sealed FROM glimpse_org_policy ORDER BY org", &[]).await.map_err(db)?;
            rows.iter()
                .map(|r| {
                    let org: String = r.get(0);
                    let row = sealer.open(sealed::ORG_POLICY, &[&org], r.get::<_, &[u8]>(1))?;
                    Ok((org, row))
                })
                .collect()
        })
    }

    fn policy(&self, org: &str) -> Result<Option<Vec<u8>>, ControlError> {
        let sealer = self.sealer()?;
        self.raw_policy(org)?.map(|s| sealer.open(sealed::ORG_POLICY, &[org], &s)).transpose()
    }

    fn put_policy(&self, org: &str, row: &[u8]) -> Result<(), ControlError> {
        let sealer = self.sealer()?;
        let row = sealer.seal(sealed::ORG_POLICY, &[org], row)?;
        let org = org.to_owned();
        self.run("put decision", |pool| async move {
            let c = client(&pool).await?;
            c.execute(
                "INSERT INTO glimpse_org_policy (org, sealed) VALUES ($1, $2) ON CONFLICT (org) DO UPDATE SET sealed = EXCLUDED.sealed",
                &[&org, &row],
            )
            .await
            .map_err(db)?;
            Ok(())
        })
    }

    fn update_policy(&self, org: &str, edit: &mut PolicyEdit<'_>) -> Result<Option<Vec<u8>>, ControlError> {
        let sealer = self.sealer()?;
        // Compare and swap, as in `update_device`: a consent change on one
        // collector and a grant on another both stay.
        for _ in 0..CONFLICT_RETRIES {
            let stored = self.raw_policy(org)?;
            let existing = stored.as_ref().map(|s| sealer.open(sealed::ORG_POLICY, &[org], s)).transpose()?;
            let Some(new_row) = edit(existing.as_deref()) else {
                return Ok(existing);
            };
            let new_sealed = sealer.seal(sealed::ORG_POLICY, &[org], &new_row)?;
            let o = org.to_owned();
            let swapped = self.run("update decision", |pool| async move {
                let c = client(&pool).await?;
                let n = match &stored {
                    Some(old) => c
                        .execute(
                            "UPDATE glimpse_org_policy SET sealed = $3 WHERE org = $1 AND sealed = $2",
                            &[&o, old, &new_sealed],
                        )
                        .await
                        .map_err(db)?,
                    None => c
                        .execute(
                            "INSERT INTO glimpse_org_policy (org, sealed) VALUES ($1, $2) ON CONFLICT (org) DO NOTHING",
                            &[&o, &new_sealed],
                        )
                        .await
                        .map_err(db)?,
                };
                Ok(n == 1)
            })?;
            if swapped {
                return Ok(Some(new_row));
            }
        }
        Err(ControlError::Transient(format!("the decisions of {org} kept changing under this update")))
    }

    fn replace_state(&self, name: &str, value: &str) -> Result<Option<String>, ControlError> {
        let sealer = self.sealer()?;
        let (name, value, epoch) = (name.to_owned(), value.to_owned(), self.epoch());
        self.run("replace state", |pool| async move {
            let mut c = client(&pool).await?;
            for _ in 0..CONFLICT_RETRIES {
                let tx = c.transaction().await.map_err(db)?;
                // A state entry may hold a secret sealed under the master key.
                guard(&tx, epoch.as_deref()).await?;
                let before = tx
                    .query_opt("SELECT sealed FROM glimpse_state WHERE name = $1 FOR UPDATE", &[&name])
                    .await
                    .map_err(db)?
                    .map(|r| sealer.open_utf8(sealed::STATE, &[&name], r.get::<_, &[u8]>(0)))
                    .transpose()?;
                let done = match &before {
                    Some(old) if *old == value => true,
                    Some(_) => {
                        let new = sealer.seal(sealed::STATE, &[&name], value.as_bytes())?;
                        tx.execute("UPDATE glimpse_state SET sealed = $2 WHERE name = $1", &[&name, &new])
                            .await
                            .map_err(db)?;
                        true
                    }
                    None => {
                        let new = sealer.seal(sealed::STATE, &[&name], value.as_bytes())?;
                        tx.execute(
                            "INSERT INTO glimpse_state (name, sealed) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
                            &[&name, &new],
                        )
                        .await
                        .map_err(db)?
                            == 1
                    }
                };
                if done {
                    tx.commit().await.map_err(db)?;
                    return Ok(before);
                }
                // Inserted by another collector meanwhile: read it again.
                tx.rollback().await.map_err(db)?;
            }
            Err(ControlError::Transient(format!("the state entry {name} kept changing under this update")))
        })
    }

    fn state(&self, name: &str) -> Result<Option<String>, ControlError> {
        let sealer = self.sealer()?;
        let name = name.to_owned();
        self.run("state", |pool| async move {
            let c = client(&pool).await?;
            let stmt = c.prepare_cached("SELECT sealed FROM glimpse_state WHERE name = $1").await.map_err(db)?;
            let row = c.query_opt(&stmt, &[&name]).await.map_err(db)?;
            row.map(|r| sealer.open_utf8(sealed::STATE, &[&name], r.get::<_, &[u8]>(0))).transpose()
        })
    }

    fn states_with_prefix(&self, prefix: &str) -> Result<Vec<(String, String)>, ControlError> {
        let sealer = self.sealer()?;
        let prefix = prefix.to_owned();
        self.run("states", |pool| async move {
            let c = client(&pool).await?;
            let rows = c
                .query("SELECT name, sealed FROM glimpse_state WHERE starts_with(name, $1) ORDER BY name", &[&prefix])
                .await
                .map_err(db)?;
            rows.iter()
                .map(|r| {
                    let name: String = r.get(0);
                    let value = sealer.open_utf8(sealed::STATE, &[&name], r.get::<_, &[u8]>(1))?;
                    Ok((name, value))
                })
                .collect()
        })
    }

    fn seal_values(&self, key: SecretKey) -> Result<bool, ControlError> {
        let sealer = Arc::new(RowSealer::new(key));
        let sealed = crate::seal::seal_plain_values(self, Arc::clone(&sealer))?;
        *self.inner.sealer.write().unwrap_or_else(PoisonError::into_inner) = Some(sealer);
        Ok(sealed)
    }

    fn settled_under(&self, check: &[u8]) {
        *self.inner.epoch.write().unwrap_or_else(PoisonError::into_inner) = Some(check.to_vec());
    }

    fn rewrites_rows(&self) -> bool {
        true
    }

    fn rewrite_rows(&self, edit: &mut RowRewrite<'_>) -> Result<u64, ControlError> {
        crate::seal::rewrite_rows(self, self.sealer()?, edit)
    }

    fn audit_head(&self) -> Result<Option<Vec<u8>>, ControlError> {
        self.run("audit head", |pool| async move {
            let c = client(&pool).await?;
            let row = c.query_opt("SELECT head FROM glimpse_audit_head WHERE id = 1", &[]).await.map_err(db)?;
            Ok(row.map(|r| r.get::<_, Vec<u8>>(0)))
        })
    }

    fn set_audit_head(&self, head: &[u8]) -> Result<(), ControlError> {
        let head = head.to_vec();
        self.run("set audit head", |pool| async move {
            let c = client(&pool).await?;
            c.execute(
                "INSERT INTO glimpse_audit_head (id, head) VALUES (1, $1) ON CONFLICT (id) DO UPDATE SET head = EXCLUDED.head",
                &[&head],
            )
            .await
            .map_err(db)?;
            Ok(())
        })
    }

    fn keeps_audit_lines(&self) -> bool {
        true
    }

    fn append_audit_line(&self, seq: u64, line: &[u8], head: &[u8]) -> Result<AuditAppend, ControlError> {
        self.append_audit_lines(seq, &[line.to_vec()], head)
    }

    fn append_audit_lines(&self, first_seq: u64, lines: &[Vec<u8>], head: &[u8]) -> Result<AuditAppend, ControlError> {
        let Some((first, rest)) = lines.split_first() else {
            return Err(ControlError::Permanent("no audit lines to append".into()));
        };
        let seqs = (1..=rest.len() as u64)
            .map(|i| first_seq.checked_add(i).ok_or_else(|| ControlError::Permanent("audit sequence overflow".into())))
            .map(|seq| seq.and_then(seq_to_sql))
            .collect::<Result<Vec<i64>, _>>()?;
        let (seq, first, rest, head) = (seq_to_sql(first_seq)?, first.clone(), rest.to_vec(), head.to_vec());
        self.run("append audit lines", |pool| async move {
            let mut c = client(&pool).await?;
            let tx = c.transaction().await.map_err(db)?;
            // The first only right after the last line: a writer that is
            // behind (or ahead of a gap) inserts nothing and reads the tail
            // again. The rest follow it in the same transaction, so another
            // writer sees all of them or none.
            let inserted = tx
                .execute(
                    "INSERT INTO glimpse_audit_lines (seq, line)
                     SELECT $1::int8, $2::bytea
                     WHERE $1::int8 = 1 OR EXISTS (SELECT 1 FROM glimpse_audit_lines WHERE seq = $1::int8 - 1)
                     ON CONFLICT (seq) DO NOTHING",
                    &[&seq, &first],
                )
                .await;
            match inserted {
                Ok(1) => {}
                Ok(_) => {
                    tx.rollback().await.map_err(db)?;
                    return Ok(AuditAppend::Taken);
                }
                Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => return Ok(AuditAppend::Taken),
                Err(e) => return Err(db(e)),
            }
            // A line already there past the first (written out of turn):
            // nothing of this batch is kept, and the writer reads the tail
            // again.
            let inserted = if rest.is_empty() {
                Ok(0)
            } else {
                tx.execute(
                    "INSERT INTO glimpse_audit_lines (seq, line) SELECT * FROM UNNEST($1::int8[], $2::bytea[])",
                    &[&seqs, &rest],
                )
                .await
            };
            match inserted {
                Ok(_) => {}
                Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => return Ok(AuditAppend::Taken),
                Err(e) => return Err(db(e)),
            }
            tx.execute(
                "INSERT INTO glimpse_audit_head (id, head) VALUES (1, $1) ON CONFLICT (id) DO UPDATE SET head = EXCLUDED.head",
                &[&head],
            )
            .await
            .map_err(db)?;
            tx.commit().await.map_err(db)?;
            Ok(AuditAppend::Appended)
        })
    }

    fn audit_lines(&self, after_seq: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, ControlError> {
        let after = i64::try_from(after_seq).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.run("audit lines", |pool| async move {
            let c = client(&pool).await?;
            let rows = c
                .query(
                    "SELECT seq, line FROM glimpse_audit_lines WHERE seq > $1 ORDER BY seq LIMIT $2",
                    &[&after, &limit],
                )
                .await
                .map_err(db)?;
            rows.iter().map(|r| Ok((seq_from_sql(r.get::<_, i64>(0))?, r.get::<_, Vec<u8>>(1)))).collect()
        })
    }

    fn last_audit_line(&self) -> Result<Option<(u64, Vec<u8>)>, ControlError> {
        self.run("last audit line", |pool| async move {
            let c = client(&pool).await?;
            let row = c
                .query_opt("SELECT seq, line FROM glimpse_audit_lines ORDER BY seq DESC LIMIT 1", &[])
                .await
                .map_err(db)?;
            row.map(|r| Ok((seq_from_sql(r.get::<_, i64>(0))?, r.get::<_, Vec<u8>>(1)))).transpose()
        })
    }

    fn exclusive(&self, name: &str) -> Result<Option<Box<dyn std::any::Any + Send>>, ControlError> {
        // A session-level advisory lock on a connection of the pool held by
        // the guard: the lock lives as long as the connection holds it,
        // and ends with it if this collector dies.
        let name = name.to_owned();
        let client = self.inner.rt.run("take a lock", LOCK_WAIT, {
            let pool = self.inner.pool.clone();
            async move {
                let c = client(&pool).await?;
                // Tries rather than one waiting call: the connection's
                // statement timeout would cancel a long wait.
                loop {
                    let row = c
                        .query_one("SELECT pg_try_advisory_lock(hashtextextended($1, 0))", &[&name])
                        .await
                        .map_err(db)?;
                    if row.get::<_, bool>(0) {
                        return Ok((c, name));
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        })?;
        Ok(Some(Box::new(LockGuard { held: Some(client), inner: Arc::clone(&self.inner) })))
    }

    fn watch(&self, sink: ChangeSink) {
        self.inner.sinks.lock().unwrap_or_else(PoisonError::into_inner).push(sink);
        let inner = Arc::clone(&self.inner);
        self.inner.listening.call_once(move || crate::listen::start(&inner));
    }

    fn ping(&self) -> Result<(), ControlError> {
        self.run("ping", |pool| async move {
            let c = client(&pool).await?;
            c.simple_query("SELECT 1").await.map_err(db)?;
            Ok(())
        })
    }

    fn describe(&self) -> String {
        self.inner.at.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids_keep_their_bits_and_sequences_must_fit() {
        for stream in [0, 1, u64::MAX, 1 << 63] {
            let sql = stream_to_sql(stream);
            assert_eq!(u64::from_ne_bytes(sql.to_ne_bytes()), stream);
        }
        assert_eq!(seq_to_sql(7).unwrap(), 7);
        assert!(seq_to_sql(u64::MAX).is_err());
        assert!(seq_from_sql(-1).is_err());
    }
}
