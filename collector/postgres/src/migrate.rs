//! The schema's versions, kept in the repository (`migrations/*.sql`),
//! applied in order by `glimpse-collector migrate` and checked by every
//! collector at start.
//!
//! Each migration runs in one transaction with its row in
//! `glimpse_migrations` (version, name, SHA-256 of its text), under an
//! advisory lock so that two operators migrating at once apply each
//! version once. A collector refuses to start on a schema older than
//! [`LATEST_VERSION`] (run `migrate`), newer (written by a newer Glimpse),
//! or whose applied text differs from the one shipped (edited by hand).

use crate::PgError;

/// One schema version.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// 1, 2, 3, ... without gaps.
    pub version: u32,
    /// Its file name.
    pub name: &'static str,
    /// Its SQL.
    pub sql: &'static str,
}

/// Every migration, oldest first.
pub const MIGRATIONS: &[Migration] = &[
    Migration { version: 1, name: "0001_control_plane.sql", sql: include_str!("../migrations/0001_control_plane.sql") },
    // The configuration values sealed: see the file's header and
    // `PgControl::seal_values`, which seals what it left plain.
    Migration { version: 2, name: "0002_sealed_values.sql", sql: include_str!("../migrations/0002_sealed_values.sql") },
];

/// The schema version this build uses.
pub const LATEST_VERSION: u32 = 2;

/// Any fixed number, the same in every Glimpse: the advisory lock that
/// serialises migrations.
const MIGRATION_LOCK: i64 = 0x676c_696d_7073_6531;

const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS glimpse_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    sha256 text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)";

/// What `migrate` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    /// The schema version before.
    pub from: u32,
    /// The migrations applied now, oldest first.
    pub applied: Vec<(u32, &'static str)>,
    /// The schema version now.
    pub version: u32,
}

fn digest(sql: &str) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, sql.as_bytes()))
}

/// The versions applied, with their recorded digests; none if the table
/// does not exist.
async fn applied(client: &tokio_postgres::Client, at: &str) -> Result<Vec<(u32, String)>, PgError> {
    let exists = client
        .query_one("SELECT to_regclass('glimpse_migrations') IS NOT NULL", &[])
        .await
        .map_err(|e| connect_error(at, &e))?;
    if !exists.get::<_, bool>(0) {
        return Ok(Vec::new());
    }
    let rows = client
        .query("SELECT version, sha256 FROM glimpse_migrations ORDER BY version", &[])
        .await
        .map_err(|e| connect_error(at, &e))?;
    Ok(rows.iter().map(|r| (r.get::<_, i32>(0).unsigned_abs(), r.get::<_, String>(1))).collect())
}

fn connect_error(at: &str, e: &tokio_postgres::Error) -> PgError {
    PgError::Connect { at: at.to_owned(), message: crate::control::describe_error(e) }
}

/// Checks that the applied versions are exactly this build's, unedited.
fn judge(at: &str, applied: &[(u32, String)]) -> Result<(), PgError> {
    let schema = |problem: String| PgError::Schema { at: at.to_owned(), problem };
    for (version, sha) in applied {
        match MIGRATIONS.iter().find(|m| m.version == *version) {
            None => {
                return Err(schema(format!(
                    "has version {version}, newer than this collector's {LATEST_VERSION}: upgrade this collector"
                )))
            }
            Some(m) if digest(m.sql) != *sha => {
                return Err(schema(format!(
                    "has migration {version} ({}) applied with other text than this collector ships: it was edited; restore the database or ask for help",
                    m.name
                )))
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Refuses a schema this build cannot use.
pub(crate) async fn check(client: &tokio_postgres::Client, at: &str) -> Result<(), PgError> {
    let applied = applied(client, at).await?;
    judge(at, &applied)?;
    let version = applied.last().map_or(0, |(v, _)| *v);
    if version < LATEST_VERSION {
        return Err(PgError::Schema {
            at: at.to_owned(),
            problem: format!(
                "is at version {version}, this collector needs {LATEST_VERSION}: run `glimpse-collector migrate --config <file>`"
            ),
        });
    }
    Ok(())
}

/// Applies every migration not applied yet.
pub(crate) async fn apply(client: &mut tokio_postgres::Client, at: &str) -> Result<MigrationReport, PgError> {
    client.batch_execute(CREATE_TABLE).await.map_err(|e| connect_error(at, &e))?;
    client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK]).await.map_err(|e| connect_error(at, &e))?;
    let result = apply_locked(client, at).await;
    let _ = client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]).await;
    result
}

async fn apply_locked(client: &mut tokio_postgres::Client, at: &str) -> Result<MigrationReport, PgError> {
    let before = applied(client, at).await?;
    judge(at, &before)?;
    let from = before.last().map_or(0, |(v, _)| *v);
    let mut report = MigrationReport { from, applied: Vec::new(), version: from };
    for m in MIGRATIONS.iter().filter(|m| m.version > from) {
        let failed = |e: tokio_postgres::Error| PgError::Migration {
            version: m.version,
            name: m.name,
            at: at.to_owned(),
            message: crate::control::describe_error(&e),
        };
        let tx = client.transaction().await.map_err(failed)?;
        tx.batch_execute(m.sql).await.map_err(failed)?;
        let version = i32::try_from(m.version).unwrap_or(i32::MAX);
        tx.execute(
            "INSERT INTO glimpse_migrations (version, name, sha256) VALUES ($1, $2, $3)",
            &[&version, &m.name, &digest(m.sql)],
        )
        .await
        .map_err(failed)?;
        tx.commit().await.map_err(failed)?;
        tracing::info!(version = m.version, name = m.name, "applied a PostgreSQL migration");
        report.applied.push((m.version, m.name));
        report.version = m.version;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_count_up_without_gaps_and_the_latest_is_last() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version as usize, i + 1, "{}", m.name);
            assert!(m.name.starts_with(&format!("{:04}_", m.version)), "{}", m.name);
        }
        assert_eq!(MIGRATIONS.last().map(|m| m.version), Some(LATEST_VERSION));
    }

    #[test]
    fn an_edited_or_newer_schema_is_refused_by_name() {
        let good: Vec<_> = MIGRATIONS.iter().map(|m| (m.version, digest(m.sql))).collect();
        assert!(judge("db", &good).is_ok());
        let edited = vec![(1, "0".repeat(64))];
        assert!(judge("db", &edited).unwrap_err().to_string().contains("edited"));
        let newer = vec![(LATEST_VERSION + 1, String::new())];
        assert!(judge("db", &newer).unwrap_err().to_string().contains("upgrade this collector"));
    }
}
