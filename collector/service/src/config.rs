//! The collector's configuration file (`collector.toml`).
//!
//! Relative paths are resolved against the config file's directory. Every
//! problem is reported at once.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use glimpse_common::config::config_base;
use glimpse_files::read_config_text;

use glimpse_common::wire::DEFAULT_MAX_FRAME_LEN;

use glimpse_store::retention::{RetentionConfig, RetentionPolicy};

const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

pub use glimpse_common::config::ConfigError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: SocketAddr,
    data_dir: PathBuf,
    master_key_file: PathBuf,
    tls: RawTls,
    pki_dir: Option<PathBuf>,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    retention: RetentionConfig,
    #[serde(default)]
    privacy: glimpse_store::control::PrivacyDefaults,
    #[serde(default = "default_sweep")]
    sweep_interval_secs: u64,
    #[serde(default)]
    admin: Option<RawAdmin>,
    #[serde(default)]
    ssh: Option<RawSsh>,
    #[serde(default)]
    console: ConsoleConfig,
    #[serde(default)]
    control: RawControl,
    #[serde(default)]
    storage: RawStorage,
    #[serde(default)]
    log_level: Option<String>,
    #[serde(default)]
    log_format: Option<String>,
    #[serde(default)]
    alerts: Option<crate::alerts::config::RawAlerts>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawControl {
    #[serde(default)]
    backend: ControlBackend,
    #[serde(default)]
    postgres: Option<glimpse_postgres::PostgresConfig>,
}

/// `[control] backend`: where the control plane lives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum ControlBackend {
    #[default]
    Redb,
    Postgres,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStorage {
    #[serde(default)]
    backend: StorageBackend,
    #[serde(default)]
    s3: Option<glimpse_objects::ObjectStoreConfig>,
}

/// `[storage] backend`: where segments live.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum StorageBackend {
    #[default]
    Local,
    S3,
}

/// Where segments (the sealed records) live.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
// One value per configuration, read at start: its size does not matter.
#[allow(clippy::large_enum_variant)]
pub enum SegmentPlace {
    /// Files under `<data_dir>/orgs`: one collector.
    #[default]
    Local,
    /// An S3-compatible object store, shared by every collector.
    S3(glimpse_objects::ObjectStoreConfig),
}

/// Where the control plane (registry, keys, decisions, stream sequences,
/// audit chain, segment catalog) lives.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ControlPlane {
    /// `glimpse.redb` in the data directory: one collector.
    #[default]
    Embedded,
    /// A PostgreSQL database, shared by every collector of the service.
    Postgres(glimpse_postgres::PostgresConfig),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSsh {
    listen: SocketAddr,
    host_key: Option<PathBuf>,
    #[serde(default = "default_ssh_unauthenticated")]
    max_unauthenticated: usize,
    #[serde(default = "default_ssh_auth_timeout")]
    auth_timeout_secs: u64,
    #[serde(default = "default_ssh_auth_attempts")]
    max_auth_attempts: usize,
    #[serde(default = "default_ssh_per_source")]
    max_unauthenticated_per_source: usize,
    #[serde(default)]
    post_quantum_kex_only: bool,
}

fn default_ssh_per_source() -> usize {
    8
}

fn default_ssh_unauthenticated() -> usize {
    256
}

fn default_ssh_auth_timeout() -> u64 {
    20
}

fn default_ssh_auth_attempts() -> usize {
    3
}

/// The SSH listener for switches and gateways.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshConfig {
    /// Where switches and gateways connect.
    pub listen: SocketAddr,
    /// The Ed25519 host key (OpenSSH format, 0600); created on first start.
    pub host_key: PathBuf,
    /// Most connections that have not authenticated yet. A new connection
    /// is never refused for want of a slot: when all are taken it evicts
    /// the least advanced connection of an address holding more than
    /// `max_unauthenticated_per_source`, so a flood of half-open logins
    /// cannot starve devices.
    pub max_unauthenticated: usize,
    /// Time allowed from accept to successful authentication.
    pub auth_timeout: Duration,
    /// Authentication attempts allowed per connection.
    pub max_auth_attempts: usize,
    /// One IP address's fair share of `max_unauthenticated`: when the slots
    /// are all taken, only addresses above it lose connections, and an
    /// address at its share that opens another loses its connections that
    /// stalled (silent for 5 s). Connections that progress are never
    /// refused on its account, so devices behind one NAT all get in.
    pub max_unauthenticated_per_source: usize,
    /// Offer only the hybrid post-quantum key exchange
    /// (mlkem768x25519-sha256). Every Glimpse agent speaks it; OpenSSH
    /// clients need 9.9 or later.
    pub post_quantum_kex_only: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    listen: SocketAddr,
    health_from: Option<Vec<String>>,
    metrics_from: Option<Vec<String>>,
    min_free_bytes: Option<u64>,
}

/// Free space below which the collector reports itself not ready, unless
/// the config says otherwise (`[admin] min_free_bytes`).
pub const DEFAULT_MIN_FREE_BYTES: u64 = 256 * 1024 * 1024;

/// Most address ranges in `health_from` or `metrics_from`.
const MAX_RANGES: usize = 64;
/// Longest address range text (an IPv6 address with a prefix is 43 chars).
const MAX_RANGE_CHARS: usize = 64;

/// Who may read health and metrics without a client certificate, and the
/// readiness floor of free disk space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthConfig {
    /// Address ranges allowed to call `/healthz` and `/readyz` without a
    /// client certificate.
    pub health_from: Vec<ipnet::IpNet>,
    /// Address ranges allowed to scrape `/metrics` without a client
    /// certificate (Prometheus scrapers rarely have one); defaults to
    /// `health_from`.
    pub metrics_from: Vec<ipnet::IpNet>,
    /// The collector reports itself not ready below this much free space
    /// on the data directory's file system.
    pub min_free_bytes: u64,
}

impl HealthConfig {
    /// Whether `addr` may call the health endpoints without a certificate.
    pub fn health_allowed(&self, addr: std::net::IpAddr) -> bool {
        in_ranges(addr, &self.health_from)
    }

    /// Whether `addr` may scrape metrics without a certificate.
    pub fn metrics_allowed(&self, addr: std::net::IpAddr) -> bool {
        in_ranges(addr, &self.metrics_from)
    }
}

impl Default for HealthConfig {
    fn default() -> Self {
        let local = default_health_from();
        Self { metrics_from: local.clone(), health_from: local, min_free_bytes: DEFAULT_MIN_FREE_BYTES }
    }
}

/// Whether `addr` is in one of `ranges` (health probes and scrapers
/// without a certificate).
pub fn in_ranges(addr: std::net::IpAddr, ranges: &[ipnet::IpNet]) -> bool {
    // An IPv4 client on a dual-stack socket shows as ::ffff:a.b.c.d.
    let addr = match addr {
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, std::net::IpAddr::V4),
        v4 => v4,
    };
    ranges.iter().any(|range| range.contains(&addr))
}

fn default_health_from() -> Vec<ipnet::IpNet> {
    ["127.0.0.1/32", "::1/128"].iter().filter_map(|r| r.parse().ok()).collect()
}

/// Parses address ranges (`10.0.0.0/8`, `::1/128`, or a bare address for
/// itself), naming each bad one in `problems`.
fn parse_ranges(key: &str, texts: &[String], problems: &mut Vec<String>) -> Vec<ipnet::IpNet> {
    if texts.len() > MAX_RANGES {
        problems.push(format!("admin.{key} has {} ranges, at most {MAX_RANGES} allowed", texts.len()));
        return Vec::new();
    }
    let mut ranges = Vec::new();
    for text in texts {
        if text.len() > MAX_RANGE_CHARS {
            problems.push(format!("admin.{key}: an entry is longer than {MAX_RANGE_CHARS} characters"));
            continue;
        }
        let parsed = text
            .parse::<ipnet::IpNet>()
            .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
            .map(|net| net.trunc());
        match parsed {
            Ok(net) => ranges.push(net),
            Err(_) => {
                problems.push(format!("admin.{key}: {text:?} is not an address range like 10.0.0.0/8 or ::1/128"))
            }
        }
    }
    ranges
}

fn default_sweep() -> u64 {
    3600
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    crl: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLimits {
    max_frame_bytes: usize,
    max_connections: usize,
    handshake_timeout_secs: u64,
    idle_timeout_secs: u64,
    storage_retry_secs: u64,
}

impl Default for RawLimits {
    fn default() -> Self {
        Self {
            max_frame_bytes: DEFAULT_MAX_FRAME_LEN,
            max_connections: 20_000,
            handshake_timeout_secs: 10,
            idle_timeout_secs: 600,
            storage_retry_secs: 5,
        }
    }
}

/// `[console]` in collector.toml.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleConfig {
    /// Serve the console on the admin port (on by default; the API stays
    /// either way).
    pub enabled: bool,
    /// A session unused this long ends, in minutes.
    pub idle_timeout_minutes: u64,
    /// A session ends this long after sign-in whatever its use, in hours.
    pub session_hours: u64,
    /// Failed sign-ins in a row that lock an account.
    pub max_failed_sign_ins: u32,
    /// How long a locked account stays locked, in minutes.
    pub lockout_minutes: u64,
    /// Let a browser that presented an admin client certificate in the TLS
    /// handshake sign in with it (`POST /console/api/session/certificate`).
    /// Off by default: a certificate installed in a shared browser would
    /// otherwise open the console to whoever sits there.
    pub certificate_sign_in: bool,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            idle_timeout_minutes: 30,
            session_hours: 12,
            max_failed_sign_ins: 5,
            lockout_minutes: 15,
            certificate_sign_in: false,
        }
    }
}

impl ConsoleConfig {
    /// Names every out-of-range value in `problems`.
    pub fn check(&self, problems: &mut Vec<String>) {
        if !(1..=24 * 60).contains(&self.idle_timeout_minutes) {
            problems.push(format!("console.idle_timeout_minutes must be 1..=1440, got {}", self.idle_timeout_minutes));
        }
        if !(1..=24 * 7).contains(&self.session_hours) {
            problems.push(format!("console.session_hours must be 1..=168, got {}", self.session_hours));
        }
        if !(1..=100).contains(&self.max_failed_sign_ins) {
            problems.push(format!("console.max_failed_sign_ins must be 1..=100, got {}", self.max_failed_sign_ins));
        }
        if !(1..=24 * 60).contains(&self.lockout_minutes) {
            problems.push(format!("console.lockout_minutes must be 1..=1440, got {}", self.lockout_minutes));
        }
    }
}

/// A validated collector configuration.
#[derive(Debug, Clone)]
pub struct CollectorConfig {
    /// Where agents connect (TLS).
    pub listen: SocketAddr,
    /// Segments, key store and registry live here.
    pub data_dir: PathBuf,
    /// The master key that wraps every organisation's key (0600, 64 hex digits).
    pub master_key_file: PathBuf,
    /// CA that signs device certificates.
    pub ca: PathBuf,
    /// The collector's certificate chain.
    pub cert: PathBuf,
    /// The collector's private key.
    pub key: PathBuf,
    /// Certificate revocation list (PEM), if any.
    pub crl: Option<PathBuf>,
    /// A `glimpse-certs` directory whose `registrations/` and `revoked.json`
    /// are imported at start-up and on SIGHUP.
    pub pki_dir: Option<PathBuf>,
    /// Largest frame accepted from an agent.
    pub max_frame_bytes: usize,
    /// Most simultaneous agent connections.
    pub max_connections: usize,
    /// Time allowed from TCP accept to an authenticated session.
    pub handshake_timeout: Duration,
    /// A connection silent this long is closed.
    pub idle_timeout: Duration,
    /// When a batch cannot be stored, how long the agent is told to wait
    /// before sending it again on the same connection (doubling on each
    /// further failure on that connection, below the idle timeout).
    pub storage_retry: Duration,
    /// Retention windows.
    pub retention: RetentionPolicy,
    /// What organisations that have decided nothing get (`[privacy]`).
    pub privacy: glimpse_store::control::PrivacyDefaults,
    /// How often expired segments are deleted.
    pub sweep_interval: Duration,
    /// Where the admin API listens (mutual TLS, admin certificates); off when `None`.
    pub admin_listen: Option<SocketAddr>,
    /// Health, readiness and metrics access (`[admin]` keys).
    pub health: HealthConfig,
    /// The SSH port for switches and gateways; off when `None`.
    pub ssh: Option<SshConfig>,
    /// The web console on the admin port (`[console]`).
    pub console: ConsoleConfig,
    /// Trust the clock at the start-up sweep even if it jumped (set by
    /// `serve --accept-clock`, never by the file).
    pub accept_clock: bool,
    /// `[control]`: where the control plane lives.
    pub control: ControlPlane,
    /// `[storage]`: where segments live.
    pub storage: SegmentPlace,
    /// `log_level` and `log_format` (the command line and the environment
    /// take precedence: `glimpse_files::logging`).
    pub log: glimpse_files::logging::LogConfig,
    /// `[alerts]`: incident alerts to a webhook and syslog; off when `None`.
    pub alerts: Option<crate::alerts::AlertsConfig>,
}

impl CollectorConfig {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = read_config_text(path, MAX_CONFIG_BYTES)?;
        Self::parse(&text, path, config_base(path))
    }

    /// Parses config text; relative paths are resolved against `base`.
    pub fn parse(text: &str, path: &Path, base: &Path) -> Result<Self, ConfigError> {
        let raw: RawConfig =
            toml::from_str(text).map_err(|e| ConfigError::Parse { path: path.to_owned(), message: e.to_string() })?;
        let mut problems = Vec::new();
        let l = &raw.limits;
        if !(1024..=16 * 1024 * 1024).contains(&l.max_frame_bytes) {
            problems.push(format!("limits.max_frame_bytes must be 1 KiB..16 MiB, got {}", l.max_frame_bytes));
        }
        if !(1..=1_000_000).contains(&l.max_connections) {
            problems.push(format!("limits.max_connections must be 1..=1000000, got {}", l.max_connections));
        }
        if !(1..=300).contains(&l.handshake_timeout_secs) {
            problems.push(format!("limits.handshake_timeout_secs must be 1..=300, got {}", l.handshake_timeout_secs));
        }
        if l.idle_timeout_secs == 0 {
            problems.push("limits.idle_timeout_secs must be positive".to_owned());
        }
        if !(1..=600).contains(&l.storage_retry_secs) || l.storage_retry_secs >= l.idle_timeout_secs {
            problems.push(format!(
                "limits.storage_retry_secs must be 1..=600 and below limits.idle_timeout_secs ({}), got {}",
                l.idle_timeout_secs, l.storage_retry_secs
            ));
        }
        if raw.sweep_interval_secs == 0 {
            problems.push("sweep_interval_secs must be positive".to_owned());
        }
        if let Some(ssh) = &raw.ssh {
            if !(1..=100_000).contains(&ssh.max_unauthenticated) {
                problems.push(format!("ssh.max_unauthenticated must be 1..=100000, got {}", ssh.max_unauthenticated));
            }
            if !(1..=600).contains(&ssh.auth_timeout_secs) {
                problems.push(format!("ssh.auth_timeout_secs must be 1..=600, got {}", ssh.auth_timeout_secs));
            }
            if !(1..=ssh.max_unauthenticated.max(1)).contains(&ssh.max_unauthenticated_per_source) {
                problems.push(format!(
                    "ssh.max_unauthenticated_per_source must be 1..=max_unauthenticated, got {}",
                    ssh.max_unauthenticated_per_source
                ));
            }
            if !(1..=10).contains(&ssh.max_auth_attempts) {
                problems.push(format!("ssh.max_auth_attempts must be 1..=10, got {}", ssh.max_auth_attempts));
            }
        }
        let mut health = HealthConfig::default();
        if let Some(admin) = &raw.admin {
            if let Some(texts) = &admin.health_from {
                health.health_from = parse_ranges("health_from", texts, &mut problems);
            }
            health.metrics_from = match &admin.metrics_from {
                Some(texts) => parse_ranges("metrics_from", texts, &mut problems),
                None => health.health_from.clone(),
            };
            if let Some(min) = admin.min_free_bytes {
                health.min_free_bytes = min;
            }
        }
        let log =
            glimpse_files::logging::LogConfig::from_config(raw.log_level, raw.log_format.as_deref(), &mut problems);
        let data_dir = base.join(&raw.data_dir);
        let ssh = raw.ssh.map(|ssh| SshConfig {
            listen: ssh.listen,
            host_key: ssh.host_key.map_or_else(|| data_dir.join("ssh_host_ed25519_key"), |p| base.join(p)),
            max_unauthenticated: ssh.max_unauthenticated,
            auth_timeout: Duration::from_secs(ssh.auth_timeout_secs),
            max_auth_attempts: ssh.max_auth_attempts,
            max_unauthenticated_per_source: ssh.max_unauthenticated_per_source,
            post_quantum_kex_only: ssh.post_quantum_kex_only,
        });
        raw.console.check(&mut problems);
        let alerts = raw.alerts.map(|a| a.resolve(base, &mut problems));
        let control = match (raw.control.backend, raw.control.postgres) {
            (ControlBackend::Redb, None) => ControlPlane::Embedded,
            (ControlBackend::Redb, Some(_)) => {
                problems.push("[control.postgres] is set but control.backend is \"redb\"".into());
                ControlPlane::Embedded
            }
            (ControlBackend::Postgres, None) => {
                problems.push("control.backend = \"postgres\" needs [control.postgres] with its url".into());
                ControlPlane::Embedded
            }
            (ControlBackend::Postgres, Some(mut pg)) => {
                problems.extend(pg.problems());
                pg.password_file = pg.password_file.map(|p| base.join(p));
                pg.ca = pg.ca.map(|p| base.join(p));
                ControlPlane::Postgres(pg)
            }
        };
        let storage = match (raw.storage.backend, raw.storage.s3) {
            (StorageBackend::Local, None) => SegmentPlace::Local,
            (StorageBackend::Local, Some(_)) => {
                problems.push("[storage.s3] is set but storage.backend is \"local\"".into());
                SegmentPlace::Local
            }
            (StorageBackend::S3, None) => {
                problems.push("storage.backend = \"s3\" needs [storage.s3] with endpoint, region and bucket".into());
                SegmentPlace::Local
            }
            (StorageBackend::S3, Some(mut s3)) => {
                s3.resolve_paths(base);
                problems.extend(s3.problems());
                SegmentPlace::S3(s3)
            }
        };
        if matches!(storage, SegmentPlace::S3(_)) && control == ControlPlane::Embedded {
            // The catalog and the stream sequences must be shared with the
            // segments, or a second collector would store a replay twice
            // and miss the first's catalog.
            problems.push(
                "storage.backend = \"s3\" needs control.backend = \"postgres\": segments shared by several collectors need a shared catalog"
                    .into(),
            );
        }
        let retention =
            RetentionPolicy::try_from(raw.retention).map_err(|e| problems.push(format!("retention: {e}"))).ok();
        let Some(retention) = retention.filter(|_| problems.is_empty()) else {
            return Err(ConfigError::Invalid { path: path.to_owned(), problems });
        };
        Ok(Self {
            listen: raw.listen,
            data_dir,
            master_key_file: base.join(raw.master_key_file),
            ca: base.join(raw.tls.ca),
            cert: base.join(raw.tls.cert),
            key: base.join(raw.tls.key),
            crl: raw.tls.crl.map(|p| base.join(p)),
            pki_dir: raw.pki_dir.map(|p| base.join(p)),
            max_frame_bytes: l.max_frame_bytes,
            max_connections: l.max_connections,
            handshake_timeout: Duration::from_secs(l.handshake_timeout_secs),
            idle_timeout: Duration::from_secs(l.idle_timeout_secs),
            storage_retry: Duration::from_secs(l.storage_retry_secs),
            retention,
            privacy: raw.privacy,
            sweep_interval: Duration::from_secs(raw.sweep_interval_secs),
            admin_listen: raw.admin.map(|a| a.listen),
            health,
            ssh,
            console: raw.console,
            accept_clock: false,
            control,
            storage,
            log,
            alerts,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use glimpse_common::identity::OrgId;
    use glimpse_common::record::DataKind;

    const GOOD: &str = r#"
listen = "127.0.0.1:7443"
data_dir = "data"
master_key_file = "master.key"
pki_dir = "pki"

[tls]
ca = "pki/ca.pem"
cert = "pki/collector.pem"
key = "pki/collector.key"
"#;

    fn parse(text: &str) -> Result<CollectorConfig, ConfigError> {
        CollectorConfig::parse(text, Path::new("/srv/glimpse/collector.toml"), Path::new("/srv/glimpse"))
    }

    #[test]
    fn defaults_and_relative_paths() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.data_dir, Path::new("/srv/glimpse/data"));
        assert_eq!(c.pki_dir.as_deref(), Some(Path::new("/srv/glimpse/pki")));
        assert_eq!(c.max_frame_bytes, 1 << 20);
        let acme = OrgId::new("acme").unwrap();
        assert_eq!(c.retention.days(&acme, DataKind::Capture), 7);
        assert_eq!(c.retention.days(&acme, DataKind::Metadata), 60);
        assert_eq!(c.ssh, None);
        let c = parse(&format!("{GOOD}\n[ssh]\nlisten = \"0.0.0.0:2222\"\n")).unwrap();
        let ssh = c.ssh.unwrap();
        assert_eq!(ssh.host_key, Path::new("/srv/glimpse/data/ssh_host_ed25519_key"));
        assert_eq!(
            (ssh.max_unauthenticated, ssh.auth_timeout, ssh.max_auth_attempts),
            (256, Duration::from_secs(20), 3)
        );
        let err =
            parse(&format!("{GOOD}\n[ssh]\nlisten = \"0.0.0.0:2222\"\nmax_auth_attempts = 0\nauth_timeout_secs = 0\n"))
                .unwrap_err()
                .to_string();
        assert!(err.contains("ssh.max_auth_attempts") && err.contains("ssh.auth_timeout_secs"), "{err}");
    }

    #[test]
    fn the_control_plane_is_embedded_unless_postgres_is_asked_for_whole() {
        assert_eq!(parse(GOOD).unwrap().control, ControlPlane::Embedded);
        let pg = "[control]\nbackend = \"postgres\"\n[control.postgres]\nurl = \"postgresql://glimpse@db.example/glimpse\"\n\
                  password_file = \"pg-password\"\nca = \"pg-ca.pem\"\n";
        let c = parse(&format!("{GOOD}\n{pg}")).unwrap();
        let ControlPlane::Postgres(settings) = &c.control else { panic!("{:?}", c.control) };
        assert!(settings.password_file.as_ref().unwrap().is_absolute(), "resolved against the config's directory");
        assert!(settings.ca.as_ref().unwrap().ends_with("pg-ca.pem"));

        let err = parse(&format!("{GOOD}\n[control]\nbackend = \"postgres\"\n")).unwrap_err().to_string();
        assert!(err.contains("needs [control.postgres]"), "{err}");
        let err = parse(&format!("{GOOD}\n[control.postgres]\nurl = \"host=/tmp\"\n")).unwrap_err().to_string();
        assert!(err.contains("control.backend is \"redb\""), "{err}");
        let err = parse(&format!("{GOOD}\n{}", pg.replace("ca = \"pg-ca.pem\"\n", ""))).unwrap_err().to_string();
        assert!(err.contains("needs ca"), "{err}");
        assert!(parse(&format!("{GOOD}\n[control]\nbackend = \"mysql\"\n")).is_err());
    }

    #[test]
    fn health_ranges_default_parse_and_refuse() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.health, HealthConfig::default());
        let local: std::net::IpAddr = "127.0.0.1".parse().unwrap();
        let outside: std::net::IpAddr = "192.0.2.7".parse().unwrap();
        assert!(c.health.health_allowed(local) && c.health.metrics_allowed("::1".parse().unwrap()));
        assert!(c.health.health_allowed("::ffff:127.0.0.1".parse().unwrap()), "IPv4-mapped");
        assert!(!c.health.health_allowed(outside));

        let admin = "[admin]\nlisten = \"127.0.0.1:0\"\n";
        let c =
            parse(&format!("{GOOD}\n{admin}health_from = [\"10.1.2.3/8\", \"192.0.2.7\"]\nmin_free_bytes = 1024\n"))
                .unwrap();
        assert!(c.health.health_allowed("10.200.0.1".parse().unwrap()) && c.health.health_allowed(outside));
        assert!(!c.health.health_allowed(local));
        assert_eq!(c.health.metrics_from, c.health.health_from, "metrics_from defaults to health_from");
        assert_eq!(c.health.min_free_bytes, 1024);
        let c = parse(&format!("{GOOD}\n{admin}metrics_from = []\n")).unwrap();
        assert!(c.health.health_allowed(local) && !c.health.metrics_allowed(local), "empty: certificate always");

        let long = "1".repeat(100);
        let err = parse(&format!("{GOOD}\n{admin}health_from = [\"10.0.0.0/33\", \"nonsense\", \"{long}\"]\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("10.0.0.0/33") && err.contains("nonsense") && err.contains("longer than"), "{err}");
        let many = vec!["\"10.0.0.1\""; MAX_RANGES + 1].join(",");
        let err = parse(&format!("{GOOD}\n{admin}metrics_from = [{many}]\n")).unwrap_err().to_string();
        assert!(err.contains("at most 64"), "{err}");
        assert!(parse(&format!("{GOOD}\n{admin}health_form = []\n")).is_err(), "unknown keys are refused");
        let c = parse(&format!("{GOOD}\n[console]\nidle_timeout_minutes = 5\n")).unwrap();
        assert_eq!((c.console.idle_timeout_minutes, c.console.session_hours), (5, 12));
        let err = parse(&format!("{GOOD}\n[console]\nsession_hours = 0\nmax_failed_sign_ins = 1000\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("console.session_hours") && err.contains("console.max_failed_sign_ins"), "{err}");
        assert!(parse(&format!("{GOOD}\n[console]\nenable = true\n")).is_err(), "unknown keys are refused");
    }

    proptest::proptest! {
        /// Any list of texts is either parsed or named as a problem, never
        /// a panic, and nothing past the bounds is kept.
        #[test]
        fn range_lists_parse_or_are_named(texts in proptest::collection::vec("[0-9a-f:./]{0,70}", 0..70)) {
            let mut problems = Vec::new();
            let ranges = parse_ranges("health_from", &texts, &mut problems);
            proptest::prop_assert!(ranges.len() <= MAX_RANGES);
            if texts.len() > MAX_RANGES {
                proptest::prop_assert!(ranges.is_empty() && problems.len() == 1);
            } else {
                proptest::prop_assert_eq!(ranges.len() + problems.len(), texts.len());
            }
            for range in &ranges {
                proptest::prop_assert!(range.contains(&range.network()));
            }
        }
    }

    #[test]
    fn the_packaged_example_parses() {
        let text = include_str!("../../packaging/collector.example.toml");
        let c =
            CollectorConfig::parse(text, Path::new("/etc/glimpse/collector.toml"), Path::new("/etc/glimpse")).unwrap();
        assert_eq!(c.data_dir, Path::new("/var/lib/glimpse"));
        assert_eq!(c.key, Path::new("/etc/glimpse/pki/collector.key"));
        assert_eq!(c.admin_listen, Some("127.0.0.1:7444".parse().unwrap()));
        assert_eq!(c.alerts, None);
        // Its [alerts] example, uncommented, is a valid section.
        let start = text.find("# [alerts]").unwrap();
        let alerts: String =
            text[start..].lines().map(|l| l.strip_prefix("# ").unwrap_or(l)).collect::<Vec<_>>().join("\n");
        let c = CollectorConfig::parse(
            &format!("{}\n{alerts}\n", &text[..start]),
            Path::new("/etc/glimpse/collector.toml"),
            Path::new("/etc/glimpse"),
        )
        .unwrap();
        let alerts = c.alerts.unwrap();
        assert_eq!(alerts.certificate_lead_days, 30);
        assert!(alerts.webhook.is_some() && alerts.syslog.is_some());
    }

    #[test]
    fn retention_overrides_within_bounds() {
        let c = parse(&format!("{GOOD}\n[retention]\ncapture_days = 3\n[retention.orgs.acme]\nmetadata_days = 90\n"))
            .unwrap();
        let acme = OrgId::new("acme").unwrap();
        let other = OrgId::new("other").unwrap();
        assert_eq!(c.retention.days(&acme, DataKind::Metadata), 90);
        assert_eq!(c.retention.days(&other, DataKind::Metadata), 60);
        assert_eq!(c.retention.days(&other, DataKind::Capture), 3);
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let text =
            format!("{GOOD}\n[limits]\nmax_frame_bytes = 1\nmax_connections = 0\n[retention]\ncapture_days = 30\n");
        let err = parse(&text).unwrap_err().to_string();
        for needle in ["max_frame_bytes", "max_connections", "retention"] {
            assert!(err.contains(needle), "{needle} missing from: {err}");
        }
        assert!(matches!(parse("listen = 5"), Err(ConfigError::Parse { .. })));
        assert!(matches!(parse(&format!("{GOOD}\nbogus = 1\n")), Err(ConfigError::Parse { .. })));
        // A path-escaping organisation name in retention overrides is refused.
        assert!(parse(&format!("{GOOD}\n[retention.orgs.\"../etc\"]\nmetadata_days = 9\n")).is_err());
        let err = parse(&format!("log_level = \"inf\"\nlog_format = \"xml\"\n{GOOD}")).unwrap_err().to_string();
        assert!(err.contains("log_level") && err.contains("log_format"), "{err}");
        let c = parse(&format!("log_level = \"warn,glimpse_collector=debug\"\nlog_format = \"json\"\n{GOOD}")).unwrap();
        assert_eq!(c.log.format, Some(glimpse_files::logging::LogFormat::Json));
    }
}
