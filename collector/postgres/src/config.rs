//! The `[control.postgres]` settings and how they become a connection.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio_postgres::config::{Host, SslMode};
use zeroize::Zeroizing;

use crate::PgError;

/// Longest password read from a file or the environment.
const MAX_PASSWORD_LEN: u64 = 1024;
/// Most pooled connections one collector opens.
pub(crate) const MAX_POOL_SIZE: usize = 64;

/// How a collector reaches the shared PostgreSQL database.
///
/// ```toml
/// [control]
/// backend = "postgres"
///
/// [control.postgres]
/// url = "postgresql://glimpse@db.example.net:5432/glimpse"
/// password_file = "/etc/glimpse/postgres-password"   # mode 0600
/// ca = "/etc/glimpse/postgres-ca.pem"                 # TLS, verify-full
/// ```
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// Where the database is: a URL (`postgresql://user@host:port/db`) or
    /// libpq key=value pairs (`host=/run/postgresql user=glimpse
    /// dbname=glimpse`). Without a password: that comes from
    /// `password_file` or `password_env`.
    pub url: String,
    /// A file (mode 0600) holding the password, one line.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// The environment variable holding the password, for a service
    /// manager's credentials (`LoadCredential=` or a container secret).
    #[serde(default)]
    pub password_env: Option<String>,
    /// TLS to the database: `"verify-full"` (the default: the server's
    /// certificate must chain to `ca` and name the host) or `"disable"`,
    /// allowed only for a Unix socket or a loopback address.
    #[serde(default)]
    pub tls: PgTls,
    /// The CA certificates (PEM) the database's certificate must chain
    /// to; needed with `tls = "verify-full"`.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// Connections this collector keeps open at most (1 to 64).
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    /// How long one operation may take, connecting included, before it
    /// fails as transient: the collector then refuses batches with a
    /// retry delay instead of waiting.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_pool_size() -> usize {
    8
}

fn default_timeout_ms() -> u64 {
    5_000
}

/// TLS to the database.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum PgTls {
    /// TLS required; the certificate must chain to `ca` and name the host.
    #[default]
    VerifyFull,
    /// No TLS: only for a Unix socket or a loopback address.
    Disable,
}

impl PostgresConfig {
    /// A config for `url` with every other setting at its default.
    pub fn new(url: impl Into<String>) -> PostgresConfig {
        PostgresConfig {
            url: url.into(),
            password_file: None,
            password_env: None,
            tls: PgTls::default(),
            ca: None,
            pool_size: default_pool_size(),
            timeout_ms: default_timeout_ms(),
        }
    }

    /// Every problem with these settings that can be seen without reading
    /// a file or connecting, one line each.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        match self.url.parse::<tokio_postgres::Config>() {
            Err(e) => problems.push(format!("control.postgres.url does not parse: {e}")),
            Ok(parsed) => {
                if parsed.get_password().is_some() {
                    problems.push(
                        "control.postgres.url holds a password: put it in password_file or password_env instead".into(),
                    );
                }
                if parsed.get_hosts().is_empty() {
                    problems.push("control.postgres.url names no host".into());
                }
                if self.tls == PgTls::Disable && !parsed.get_hosts().iter().all(is_local) {
                    problems.push(
                        "control.postgres.tls = \"disable\" is allowed only for a Unix socket or a loopback address"
                            .into(),
                    );
                }
            }
        }
        if self.password_file.is_some() && self.password_env.is_some() {
            problems.push("control.postgres: set password_file or password_env, not both".into());
        }
        if self.tls == PgTls::VerifyFull && self.ca.is_none() {
            problems.push("control.postgres.tls = \"verify-full\" needs ca (the database's CA certificates)".into());
        }
        if !(1..=MAX_POOL_SIZE).contains(&self.pool_size) {
            problems.push(format!("control.postgres.pool_size must be 1 to {MAX_POOL_SIZE}"));
        }
        if !(100..=600_000).contains(&self.timeout_ms) {
            problems.push("control.postgres.timeout_ms must be 100 to 600000".into());
        }
        problems
    }

    /// Where the database is, for messages: hosts, ports and database,
    /// never the password.
    pub fn describe(&self) -> String {
        let Ok(parsed) = self.url.parse::<tokio_postgres::Config>() else {
            return "PostgreSQL (unparsable url)".into();
        };
        let hosts: Vec<String> = parsed
            .get_hosts()
            .iter()
            .enumerate()
            .map(|(i, host)| {
                let port = parsed.get_ports().get(i).or(parsed.get_ports().first()).copied().unwrap_or(5432);
                match host {
                    Host::Tcp(name) => format!("{name}:{port}"),
                    Host::Unix(path) => format!("{}:{port}", path.display()),
                }
            })
            .collect();
        format!("PostgreSQL {}/{}", hosts.join(","), parsed.get_dbname().unwrap_or("(default database)"))
    }

    pub(crate) fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// The connection settings with the password, and the TLS connector.
    pub(crate) fn connect_settings(&self) -> Result<(tokio_postgres::Config, Connector), PgError> {
        let problems = self.problems();
        if !problems.is_empty() {
            return Err(PgError::Config(problems.join("; ")));
        }
        let mut config: tokio_postgres::Config =
            self.url.parse().map_err(|e| PgError::Config(format!("control.postgres.url: {e}")))?;
        if let Some(password) = self.password()? {
            config.password(password.as_bytes());
        }
        config.application_name("glimpse-collector");
        config.connect_timeout(self.timeout());
        // A statement the database cannot finish in time is cancelled
        // there too, not only abandoned here.
        config.options(format!("-c statement_timeout={}", self.timeout_ms));
        let connector = match self.tls {
            PgTls::Disable => {
                config.ssl_mode(SslMode::Disable);
                Connector::Plain
            }
            PgTls::VerifyFull => {
                config.ssl_mode(SslMode::Require);
                Connector::Tls(self.tls_connector()?)
            }
        };
        Ok((config, connector))
    }

    fn password(&self) -> Result<Option<Zeroizing<String>>, PgError> {
        if let Some(path) = &self.password_file {
            return Ok(Some(glimpse_files::read_secret_text(path, MAX_PASSWORD_LEN, "PostgreSQL password file")?));
        }
        if let Some(name) = &self.password_env {
            let value = std::env::var(name).map_err(|_| {
                PgError::Config(format!("control.postgres.password_env names {name}, which is not set (or not UTF-8)"))
            })?;
            if value.is_empty() || value.len() as u64 > MAX_PASSWORD_LEN {
                return Err(PgError::Config(format!("the password in {name} must be 1 to {MAX_PASSWORD_LEN} bytes")));
            }
            return Ok(Some(Zeroizing::new(value)));
        }
        Ok(None)
    }

    fn tls_connector(&self) -> Result<tokio_postgres_rustls::MakeRustlsConnect, PgError> {
        let Some(ca) = &self.ca else {
            return Err(PgError::Config("control.postgres.ca is needed for TLS".into()));
        };
        let mut roots = rustls::RootCertStore::empty();
        for cert in glimpse_files::load_certs(ca)? {
            roots.add(cert).map_err(|e| PgError::Config(format!("control.postgres.ca {}: {e}", ca.display())))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| PgError::Config(format!("TLS to PostgreSQL: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(tokio_postgres_rustls::MakeRustlsConnect::new(tls))
    }
}

/// A Unix socket or a loopback address.
fn is_local(host: &Host) -> bool {
    match host {
        Host::Unix(_) => true,
        Host::Tcp(name) => name == "localhost" || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback()),
    }
}

/// How connections are made: plain (local only) or TLS.
#[derive(Clone)]
pub(crate) enum Connector {
    Plain,
    Tls(tokio_postgres_rustls::MakeRustlsConnect),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<PostgresConfig, toml::de::Error> {
        toml::from_str(text)
    }

    #[test]
    fn a_remote_database_needs_tls_and_no_password_in_the_url() {
        let config =
            parse("url = \"postgresql://glimpse:hunter2@db.example:5432/glimpse\"\ntls = \"disable\"").unwrap();
        let problems = config.problems().join("\n");
        assert!(problems.contains("holds a password"), "{problems}");
        assert!(problems.contains("only for a Unix socket or a loopback"), "{problems}");
        assert!(!config.describe().contains("hunter2"), "{}", config.describe());

        let config = parse("url = \"postgresql://glimpse@db.example/glimpse\"").unwrap();
        assert!(config.problems().join("\n").contains("needs ca"));
        let config = parse("url = \"postgresql://glimpse@db.example/glimpse\"\nca = \"/etc/ca.pem\"").unwrap();
        assert_eq!(config.problems(), Vec::<String>::new());
        assert_eq!(config.describe(), "PostgreSQL db.example:5432/glimpse");
    }

    #[test]
    fn local_sockets_may_go_without_tls() {
        let config = parse("url = \"host=/run/postgresql user=glimpse dbname=glimpse\"\ntls = \"disable\"").unwrap();
        assert_eq!(config.problems(), Vec::<String>::new());
        let config = parse("url = \"postgresql://glimpse@127.0.0.1:5433/glimpse\"\ntls = \"disable\"").unwrap();
        assert_eq!(config.problems(), Vec::<String>::new());
        assert_eq!(config.describe(), "PostgreSQL 127.0.0.1:5433/glimpse");
    }

    #[test]
    fn unknown_keys_and_silly_bounds_are_refused() {
        assert!(parse("url = \"host=/tmp\"\npasword_file = \"x\"").unwrap_err().to_string().contains("pasword_file"));
        let config = parse("url = \"host=/tmp\"\ntls = \"disable\"\npool_size = 0\ntimeout_ms = 1").unwrap();
        let problems = config.problems().join("\n");
        assert!(problems.contains("pool_size") && problems.contains("timeout_ms"), "{problems}");
        let both =
            parse("url = \"host=/tmp\"\ntls = \"disable\"\npassword_file = \"a\"\npassword_env = \"B\"").unwrap();
        assert!(both.problems().join("").contains("not both"));
    }

    #[test]
    fn a_password_from_the_environment_must_be_set() {
        let config = PostgresConfig {
            tls: PgTls::Disable,
            password_env: Some("GLIMPSE_TEST_PG_PASSWORD_THAT_IS_NOT_SET".into()),
            ..PostgresConfig::new("host=/tmp user=glimpse")
        };
        let err = config.connect_settings().err().unwrap().to_string();
        assert!(err.contains("not set"), "{err}");
    }
}
