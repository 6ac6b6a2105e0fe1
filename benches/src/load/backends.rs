//! `--backend-config`: the bench's own collectors on the distributed
//! backends (the control plane in PostgreSQL, segments in an S3-compatible
//! object store) instead of the embedded store in their data directories.
//!
//! The file holds only a collector config's `[control]` and `[storage]`
//! tables (with their sub-tables), exactly as an operator writes them in
//! `collector.toml`; the load tool appends them to each of its collectors'
//! configs. Relative paths in them (a password or secret key file, a CA)
//! are resolved against the file's own directory, as the collector
//! resolves paths against its config file's directory.

use std::path::{Path, PathBuf};

use glimpse_collector::config::{CollectorConfig, ConfigError, ControlPlane, SegmentPlace};

use super::BenchError;

/// Larger than any real pair of tables; the file is untrusted input.
const MAX_BACKEND_CONFIG_BYTES: u64 = 64 * 1024;

/// The top-level tables the file may hold: everything else of the
/// collector's config (listeners, data directory, TLS, limits) is the
/// bench's own.
const ALLOWED_TABLES: [&str; 2] = ["control", "storage"];

/// A checked `--backend-config` file.
#[derive(Debug, Clone)]
pub struct Backends {
    /// The file, canonical.
    path: PathBuf,
    /// Its text: the `[control]` and `[storage]` tables.
    text: String,
    /// Where its relative paths point: the file's directory.
    base: PathBuf,
    /// The control plane is PostgreSQL, shared by the collectors.
    pub shared_control: bool,
    /// Segments are in an object store, shared by the collectors.
    pub shared_segments: bool,
}

impl Backends {
    /// Reads and checks the file at `path` (bounded; every problem the
    /// collector's own config check finds is reported).
    pub fn load(path: &Path) -> Result<Self, BenchError> {
        let path = std::fs::canonicalize(path)
            .map_err(|e| BenchError::io(format!("--backend-config {}", path.display()), e))?;
        let text = glimpse_files::read_config_text(&path, MAX_BACKEND_CONFIG_BYTES)
            .map_err(|e| BenchError::Options(format!("--backend-config: {e}")))?;
        let base = glimpse_common::config::config_base(&path).to_owned();
        Self::parse(&path, text, base)
    }

    /// Checks `text` (the file at `path`, relative paths against `base`).
    pub fn parse(path: &Path, text: String, base: PathBuf) -> Result<Self, BenchError> {
        let bad = |m: String| BenchError::Options(format!("--backend-config {}: {m}", path.display()));
        // Parsed alone first, so syntax errors carry the file's own line numbers.
        let table: toml::Table = toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
        for (key, value) in &table {
            if !ALLOWED_TABLES.contains(&key.as_str()) || !value.is_table() {
                return Err(bad(format!(
                    "`{key}` does not belong here: the file holds only the [control] and [storage] tables \
                     (and their sub-tables); the rest of the collector's config is the bench's own"
                )));
            }
        }
        if table.is_empty() {
            return Err(bad("no [control] or [storage] table".into()));
        }
        // Then as part of a collector config, so that the collector's own
        // checks (backends, URLs, 0600 key files are not read yet) apply.
        let paths = ConfigPaths {
            data_dir: Path::new("/glimpse-bench/data"),
            master_key: Path::new("/glimpse-bench/master.key"),
            pki: Path::new("/glimpse-bench/pki"),
        };
        let full = config_text(&paths, 1, Some(&text));
        let config = CollectorConfig::parse(&full, path, &base).map_err(|e| match e {
            // The parser counts lines in the whole config.
            ConfigError::Parse { message, .. } => {
                let first = full.lines().count() - text.lines().count() + 1;
                bad(format!("{message}\n(line numbers count from the bench's collector config, where this file starts at line {first})"))
            }
            e => BenchError::Options(format!("--backend-config: {e}")),
        })?;
        Ok(Self {
            path: path.to_owned(),
            text,
            base,
            shared_control: matches!(config.control, ControlPlane::Postgres(_)),
            shared_segments: matches!(config.storage, SegmentPlace::S3(_)),
        })
    }

    /// Both backends are shared, so several collectors serve as one.
    pub fn shared(&self) -> bool {
        self.shared_control && self.shared_segments
    }

    /// The tables to append to a collector config.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The directory the tables' relative paths are resolved against.
    pub fn base(&self) -> &Path {
        &self.base
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// For the report: `control postgres, segments s3`.
    pub fn describe(&self) -> String {
        format!(
            "control {}, segments {}",
            if self.shared_control { "postgres" } else { "redb" },
            if self.shared_segments { "s3" } else { "local" }
        )
    }
}

/// The bench collector's own paths, absolute: the config may be loaded
/// with another directory as its base (the backend file's).
#[derive(Debug, Clone, Copy)]
pub struct ConfigPaths<'a> {
    /// Its data directory.
    pub data_dir: &'a Path,
    /// The master key file, shared by every collector of a run.
    pub master_key: &'a Path,
    /// The bench PKI (`glimpse-certs` directory).
    pub pki: &'a Path,
}

/// A bench collector's config: listeners on ephemeral loopback ports,
/// registrations imported from the PKI, limits that admit a large fleet at
/// once, and the backend tables, if any, last (TOML tables end the root).
pub fn config_text(paths: &ConfigPaths<'_>, max_connections: usize, backends: Option<&str>) -> String {
    let pki = paths.pki;
    let mut text = format!(
        "# Written by glimpse-bench for its own collector process.\n\
         listen = \"127.0.0.1:0\"\ndata_dir = {data:?}\nmaster_key_file = {master:?}\npki_dir = {pki:?}\n\n\
         [tls]\nca = {ca:?}\ncert = {cert:?}\nkey = {key:?}\ncrl = {crl:?}\n\n\
         # A fleet connecting at once queues its handshakes on a few cores.\n\
         [limits]\nmax_connections = {max_connections}\nhandshake_timeout_secs = 120\n\n\
         [ssh]\nlisten = \"127.0.0.1:0\"\nauth_timeout_secs = 120\n",
        data = paths.data_dir,
        master = paths.master_key,
        ca = glimpse_certs::ca_cert_path(pki),
        cert = glimpse_certs::collector_cert_path(pki),
        key = glimpse_certs::collector_key_path(pki),
        crl = glimpse_certs::ca_crl_path(pki),
    );
    if let Some(tables) = backends {
        text.push_str("\n# From --backend-config; its relative paths are resolved against that file's directory.\n");
        text.push_str(tables);
        if !tables.ends_with('\n') {
            text.push('\n');
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const POSTGRES: &str = "[control]\nbackend = \"postgres\"\n[control.postgres]\n\
                            url = \"host=127.0.0.1 port=5432 user=glimpse dbname=glimpse\"\ntls = \"disable\"\n";
    const S3: &str = "[storage]\nbackend = \"s3\"\n[storage.s3]\nendpoint = \"http://127.0.0.1:3900\"\n\
                      region = \"garage\"\nbucket = \"glimpse\"\naccess_key_id = \"GK1\"\n\
                      secret_access_key_file = \"s3.secret\"\nallow_http = true\n";

    fn parse(text: &str) -> Result<Backends, BenchError> {
        Backends::parse(Path::new("/etc/bench/backends.toml"), text.to_owned(), PathBuf::from("/etc/bench"))
    }

    #[test]
    fn postgres_and_s3_are_shared_backends() {
        let both = parse(&format!("{POSTGRES}{S3}")).unwrap();
        assert!(both.shared_control && both.shared_segments && both.shared());
        assert_eq!(both.describe(), "control postgres, segments s3");
        let control_only = parse(POSTGRES).unwrap();
        assert!(control_only.shared_control && !control_only.shared_segments && !control_only.shared());
        assert_eq!(control_only.describe(), "control postgres, segments local");
    }

    #[test]
    fn relative_paths_resolve_beside_the_backend_file() {
        let both = parse(&format!("{POSTGRES}{S3}")).unwrap();
        let paths = ConfigPaths {
            data_dir: Path::new("/tmp/b/data-1"),
            master_key: Path::new("/tmp/b/master.key"),
            pki: Path::new("/tmp/b/pki"),
        };
        let text = config_text(&paths, 100, Some(both.text()));
        let config = CollectorConfig::parse(&text, Path::new("/tmp/b/collector-1.toml"), both.base()).unwrap();
        let SegmentPlace::S3(s3) = &config.storage else { panic!("s3 expected: {:?}", config.storage) };
        assert_eq!(s3.secret_access_key_file.as_deref(), Some(Path::new("/etc/bench/s3.secret")));
        // The bench's own paths are absolute, whatever the base.
        assert_eq!(config.data_dir, Path::new("/tmp/b/data-1"));
        assert_eq!(config.master_key_file, Path::new("/tmp/b/master.key"));
    }

    #[test]
    fn anything_but_control_and_storage_tables_is_refused() {
        for text in [
            "listen = \"0.0.0.0:7443\"\n",
            "[limits]\nmax_connections = 5\n",
            "control = 1\n",
            "",
            "# only a comment\n",
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains("--backend-config /etc/bench/backends.toml"), "{e}");
        }
        let e = parse("[admin]\nlisten = \"127.0.0.1:1\"\n").unwrap_err().to_string();
        assert!(e.contains("`admin` does not belong here"), "{e}");
    }

    #[test]
    fn the_collectors_own_checks_apply() {
        // Syntax: the file's own line number.
        let e = parse("[control]\nbackend = \"postgres\"\nurl = \n").unwrap_err().to_string();
        assert!(e.contains("line 3"), "{e}");
        // A backend without its settings, a typo in a sub-table, S3 without PostgreSQL.
        for (text, says) in [
            ("[control]\nbackend = \"postgres\"\n", "needs [control.postgres]"),
            ("[control]\nbackend = \"mysql\"\n", "mysql"),
            (&format!("{POSTGRES}{S3}flush_interval = 5\n"), "flush_interval"),
            (S3, "needs control.backend = \"postgres\""),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(says) && e.contains("/etc/bench/backends.toml"), "{text}: {e}");
        }
        // Where the file starts in the composed config, for the parser's line numbers.
        let e = parse(&format!("{POSTGRES}{S3}flush_interval = 5\n")).unwrap_err().to_string();
        let at: usize = e.rsplit("starts at line ").next().unwrap().trim_end_matches(')').parse().unwrap();
        let full = config_text(
            &ConfigPaths { data_dir: Path::new("/d"), master_key: Path::new("/m"), pki: Path::new("/p") },
            1,
            Some(POSTGRES),
        );
        assert_eq!(full.lines().nth(at - 1), POSTGRES.lines().next(), "{e}");
    }
}
