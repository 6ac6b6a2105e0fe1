//! The configuration values sealed at rest in PostgreSQL, and the master
//! key rotation's rewrite of every row, in one transaction each.
//!
//! **What is sealed** ([`glimpse_store::control::sealed`], AES-256-GCM
//! under the configuration key, the table and row key as associated data,
//! the same format and table names as the embedded store): the registry
//! rows (`glimpse_devices.sealed`: kind, wrapped shared key, certificate
//! serial, revoked), devices' SSH key lines (`glimpse_device_ssh_keys`),
//! the organisations' decisions (`glimpse_org_policy`: consent, grants,
//! data policy) and the collector state (`glimpse_state`: API tokens,
//! console accounts, admin certificates, the retention policy audited).
//!
//! **What stays readable**, because lookups, ordered scans, the change
//! triggers and foreign tools need it, or because it is already protected:
//! the row keys (organisation and device names, state entry names such as
//! `console-account:<name>` or `api-token:<id>`), which are identifiers,
//! not configuration; the organisation keys and metadata rows (already
//! wrapped under the master key); stream sequences and the segment catalog
//! (counts, device names and sequence ranges per segment); the audit chain
//! (`glimpse_audit_lines`, `glimpse_audit_head`): its lines are the
//! operator's record, the same JSON the embedded store's `audit.log` holds
//! in the data directory, tamper-evident by their MAC chain under the audit
//! key (a changed, removed or reordered line fails `audit verify`), with
//! subjects pseudonymised; sealing them would hide nothing the audit
//! export does not show to every admin.
//!
//! **Migration**: migration 2 renames the value columns (so a collector
//! of an earlier version fails instead of writing plain values) and the
//! first collector to open the database afterwards seals every value in
//! one transaction under an advisory lock, with the metadata row
//! `values-sealed` (a check value sealed under the configuration key), so
//! a crash leaves all plain or all sealed and collectors starting at once
//! seal once; a collector whose configuration key does not open that row
//! refuses to start.
//!
//! **Master key rotation** ([`rewrite_rows`]): one transaction takes the
//! master key check row for update, so it waits for every write of key
//! material in progress on any collector (each holds that row shared, see
//! `control::guard`) and every later one waits for it and then finds the
//! new check value and refuses; it rewrites every metadata row,
//! organisation key, registry row and state entry with what the rotation
//! returns and commits, or, on any error, drops its connection (the
//! server rolls it back). The configuration key itself is kept, so sealed
//! values other than those holding master-wrapped keys do not change.

use std::sync::Arc;
use std::time::Duration;

use glimpse_store::control::sealed::{self, RowSealer, VALUES_SEALED_ROW};
use glimpse_store::control::seam::{ControlError, ControlStore, RowRewrite, RowTable, MASTER_CHECK_ROW};

use crate::control::{client, db, rotated_away, PgControl};

/// Any fixed number, the same in every Glimpse: the advisory lock under
/// which a plain database is sealed.
const SEAL_LOCK: i64 = 0x676c_696d_7073_6532;

/// The plain text of the `values-sealed` row's check value.
const SEALED_CHECK: &[u8] = b"glimpse-values-sealed-v1";

/// Rows per statement when every row of a table is rewritten.
const CHUNK: usize = 1000;

/// The metadata table's name in the `values-sealed` row's associated data.
const META: &str = "meta";

/// Seals every plain configuration value, once (see the module header).
/// Returns whether it sealed a plain database.
pub(crate) fn seal_plain_values(store: &PgControl, sealer: Arc<RowSealer>) -> Result<bool, ControlError> {
    let at = store.location().to_owned();
    store.run_long("seal configuration values", |pool| async move {
        let mut c = client(&pool).await?;
        let tx = c.transaction().await.map_err(db)?;
        // Tries rather than one waiting call: the connection's statement
        // timeout would cancel a long wait behind another collector.
        loop {
            let row = tx.query_one("SELECT pg_try_advisory_xact_lock($1)", &[&SEAL_LOCK]).await.map_err(db)?;
            if row.get::<_, bool>(0) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let marker =
            tx.query_opt("SELECT value FROM glimpse_meta WHERE name = $1", &[&VALUES_SEALED_ROW]).await.map_err(db)?;
        if let Some(marker) = marker {
            tx.commit().await.map_err(db)?;
            let opens = sealer.open(META, &[VALUES_SEALED_ROW], marker.get::<_, &[u8]>(0));
            return match opens {
                Ok(check) if check == SEALED_CHECK => Ok(false),
                _ => Err(ControlError::Permanent(format!(
                    "the configuration key does not open the sealed values at {at}: another master key sealed them"
                ))),
            };
        }
        let mut counts = [0usize; 4];
        // (org, device) tables.
        for (i, (sql_table, name)) in
            [("glimpse_devices", sealed::DEVICES), ("glimpse_device_ssh_keys", sealed::SSH_KEYS)]
                .into_iter()
                .enumerate()
        {
            let rows = tx
                .query(&format!("SELECT org, device, sealed FROM {sql_table} ORDER BY org, device"), &[])
                .await
                .map_err(db)?;
            counts[i] = rows.len();
            for chunk in rows.chunks(CHUNK) {
                let orgs: Vec<String> = chunk.iter().map(|r| r.get(0)).collect();
                let devices: Vec<String> = chunk.iter().map(|r| r.get(1)).collect();
                let values = chunk
                    .iter()
                    .zip(orgs.iter().zip(&devices))
                    .map(|(r, (o, d))| sealer.seal(name, &[o, d], r.get::<_, &[u8]>(2)))
                    .collect::<Result<Vec<_>, _>>()?;
                tx.execute(
                    &format!(
                        "UPDATE {sql_table} AS t SET sealed = u.sealed
                         FROM UNNEST($1::text[], $2::text[], $3::bytea[]) AS u(org, device, sealed)
                         WHERE t.org = u.org AND t.device = u.device"
                    ),
                    &[&orgs, &devices, &values],
                )
                .await
                .map_err(db)?;
            }
        }
        // Single-key tables.
        for (i, (sql_table, key, name)) in
            [("glimpse_org_policy", "org", sealed::ORG_POLICY), ("glimpse_state", "name", sealed::STATE)]
                .into_iter()
                .enumerate()
        {
            let rows =
                tx.query(&format!("SELECT {key}, sealed FROM {sql_table} ORDER BY {key}"), &[]).await.map_err(db)?;
            counts[2 + i] = rows.len();
            for chunk in rows.chunks(CHUNK) {
                let keys: Vec<String> = chunk.iter().map(|r| r.get(0)).collect();
                let values = chunk
                    .iter()
                    .zip(&keys)
                    .map(|(r, k)| sealer.seal(name, &[k], r.get::<_, &[u8]>(1)))
                    .collect::<Result<Vec<_>, _>>()?;
                tx.execute(
                    &format!(
                        "UPDATE {sql_table} AS t SET sealed = u.sealed
                         FROM UNNEST($1::text[], $2::bytea[]) AS u(k, sealed) WHERE t.{key} = u.k"
                    ),
                    &[&keys, &values],
                )
                .await
                .map_err(db)?;
            }
        }
        let check = sealer.seal(META, &[VALUES_SEALED_ROW], SEALED_CHECK)?;
        tx.execute("INSERT INTO glimpse_meta (name, value) VALUES ($1, $2)", &[&VALUES_SEALED_ROW, &check])
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        tracing::info!(
            at = %at,
            devices = counts[0],
            ssh_keys = counts[1],
            decisions = counts[2],
            states = counts[3],
            "sealed the PostgreSQL control plane's configuration values"
        );
        Ok(true)
    })
}

/// Every row a rotation may rewrite, read in the open transaction: table,
/// key parts, value (opened if sealed).
type Offered = Vec<(RowTable, Vec<String>, Vec<u8>)>;

/// The notification a rotation sends (on the changes channel) when it
/// commits, for every collector's log.
pub(crate) const ROTATED_NOTE: &str = "m:master-key-rotated";

/// The master key rotation's rewrite (see the module header).
pub(crate) fn rewrite_rows(
    store: &PgControl,
    sealer: Arc<RowSealer>,
    edit: &mut RowRewrite<'_>,
) -> Result<u64, ControlError> {
    let epoch = store.epoch();
    // 1. Begin, take the check row, read every row: the connection is kept
    // (the transaction open) while `edit` runs here, outside the runtime.
    let opener = Arc::clone(&sealer);
    let settings = store.settings();
    let (c, offered) = store.run_long("master key rotation: read", |_pool| async move {
        let c = PgControl::dedicated(settings).await?;
        let read = async {
            c.batch_execute("BEGIN; SET LOCAL glimpse.quiet = 'on'").await.map_err(db)?;
            let check = c
                .query_opt("SELECT value FROM glimpse_meta WHERE name = $1 FOR UPDATE", &[&MASTER_CHECK_ROW])
                .await
                .map_err(db)?;
            if let (Some(known), Some(check)) = (&epoch, &check) {
                if check.get::<_, &[u8]>(0) != known.as_slice() {
                    return Err(rotated_away());
                }
            }
            let mut offered: Offered = Vec::new();
            for r in c.query("SELECT name, value FROM glimpse_meta ORDER BY name FOR UPDATE", &[]).await.map_err(db)? {
                offered.push((RowTable::Meta, vec![r.get(0)], r.get(1)));
            }
            for r in
                c.query("SELECT org, wrapped FROM glimpse_org_keys ORDER BY org FOR UPDATE", &[]).await.map_err(db)?
            {
                offered.push((RowTable::OrgKey, vec![r.get(0)], r.get(1)));
            }
            for r in c
                .query("SELECT org, device, sealed FROM glimpse_devices ORDER BY org, device FOR UPDATE", &[])
                .await
                .map_err(db)?
            {
                let (org, device): (String, String) = (r.get(0), r.get(1));
                let row = opener.open(sealed::DEVICES, &[&org, &device], r.get::<_, &[u8]>(2))?;
                offered.push((RowTable::Device, vec![org, device], row));
            }
            for r in
                c.query("SELECT name, sealed FROM glimpse_state ORDER BY name FOR UPDATE", &[]).await.map_err(db)?
            {
                let name: String = r.get(0);
                let value = opener.open(sealed::STATE, &[&name], r.get::<_, &[u8]>(1))?;
                offered.push((RowTable::State, vec![name], value));
            }
            Ok(offered)
        };
        // On an error `c` is dropped, closed, and the server rolls back.
        read.await.map(|offered| (c, offered))
    })?;
    // 2. The rotation's edits, here (they may not cross to the runtime).
    let mut writes: Vec<(RowTable, Vec<String>, Vec<u8>)> = Vec::new();
    let edited = (|| {
        for (table, key, value) in &offered {
            let parts: Vec<&str> = key.iter().map(String::as_str).collect();
            let refused = |e: String| ControlError::Permanent(format!("{table:?} row: {e}"));
            if let Some(new) = edit(*table, &parts, value).map_err(refused)? {
                let stored = match table {
                    RowTable::Device => sealer.seal(sealed::DEVICES, &parts, &new)?,
                    RowTable::State => {
                        std::str::from_utf8(&new).map_err(|_| {
                            ControlError::Permanent(format!("state {:?}: rewritten value is not UTF-8", key[0]))
                        })?;
                        sealer.seal(sealed::STATE, &parts, &new)?
                    }
                    _ => new,
                };
                writes.push((*table, key.clone(), stored));
            }
        }
        Ok::<_, ControlError>(())
    })();
    if let Err(e) = edited {
        drop(c);
        return Err(e);
    }
    let rewritten = writes.len() as u64;
    let new_check = writes
        .iter()
        .find(|(table, key, _)| *table == RowTable::Meta && key.first().map(String::as_str) == Some(MASTER_CHECK_ROW))
        .map(|(_, _, value)| value.clone());
    // 3. Write and commit.
    store.run_long("master key rotation: write", |_pool| async move {
        let write = async {
            for (table, key, value) in &writes {
                let n = match table {
                    RowTable::Meta => {
                        c.execute("UPDATE glimpse_meta SET value = $2 WHERE name = $1", &[&key[0], value]).await
                    }
                    RowTable::OrgKey => {
                        c.execute("UPDATE glimpse_org_keys SET wrapped = $2 WHERE org = $1", &[&key[0], value]).await
                    }
                    RowTable::Device => {
                        c.execute(
                            "UPDATE glimpse_devices SET sealed = $3 WHERE org = $1 AND device = $2",
                            &[&key[0], &key[1], value],
                        )
                        .await
                    }
                    RowTable::State => {
                        c.execute("UPDATE glimpse_state SET sealed = $2 WHERE name = $1", &[&key[0], value]).await
                    }
                    _ => Ok(0),
                }
                .map_err(db)?;
                if n != 1 {
                    return Err(ControlError::Permanent(format!(
                        "{table:?} row {:?} vanished under the rotation",
                        key
                    )));
                }
            }
            // Other collectors keep the organisation keys they hold (the
            // keys themselves do not change): the rewrites notify nobody
            // row by row, one note says what happened.
            c.execute("SELECT pg_notify('glimpse_changes', $1)", &[&ROTATED_NOTE]).await.map_err(db)?;
            c.batch_execute("COMMIT").await.map_err(db)
        };
        // A failed COMMIT may still have committed: the caller asks the
        // check row (see glimpse-store's rotation).
        write.await
    })?;
    // This process's own writes are under the new key from the commit on.
    if let Some(check) = new_check {
        ControlStore::settled_under(store, &check);
    }
    Ok(rewritten)
}
