//! The agent's configuration file (`agent.toml`).
//!
//! Relative paths are resolved against the directory holding the config
//! file, so a device directory can be moved or mounted anywhere. Every
//! problem found is reported at once, not one per restart.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::capture::CaptureSettings;

use glimpse_common::config::config_base;
use glimpse_files::read_config_text;

use glimpse_common::bounded::BoundedString;
use glimpse_common::identity::{DeviceId, DeviceIdentity, DeviceKind, OrgId};
use glimpse_common::record::{DeviceProfile, Location};
use glimpse_common::wire::DEFAULT_MAX_FRAME_LEN;

/// Largest configuration file read, in bytes.
const MAX_CONFIG_BYTES: u64 = 256 * 1024;

pub use glimpse_common::config::ConfigError;

/// Which AEAD the agent asks TLS for first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CipherPreference {
    /// ChaCha20-Poly1305 first when the CPU lacks AES instructions (most MIPS).
    #[default]
    Auto,
    /// Always ChaCha20-Poly1305 first.
    Chacha20,
    /// Always AES-GCM first.
    AesGcm,
}

impl CipherPreference {
    /// Whether to put ChaCha20-Poly1305 first on this CPU.
    pub fn prefer_chacha(self) -> bool {
        match self {
            CipherPreference::Auto => !glimpse_common::tls::has_aes_hardware(),
            CipherPreference::Chacha20 => true,
            CipherPreference::AesGcm => false,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    device: RawDevice,
    collector: RawCollector,
    #[serde(default)]
    tls: Option<RawTls>,
    #[serde(default)]
    ssh: Option<RawSsh>,
    #[serde(default)]
    collect: RawCollect,
    #[serde(default)]
    transport: RawTransport,
    #[serde(default)]
    capture: CaptureSettings,
    #[serde(default)]
    spool: RawSpool,
    #[serde(default)]
    probes: RawProbes,
    #[serde(default)]
    log_level: Option<String>,
    #[serde(default)]
    log_format: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawProbes {
    wireless: Option<bool>,
    wired: Option<bool>,
    wan: Option<bool>,
    command_timeout_secs: f64,
    dhcp_leases: Vec<PathBuf>,
    wan_interfaces: Vec<String>,
    dot1x_interfaces: Vec<String>,
    max_sessions: usize,
    conntrack_table: PathBuf,
    dns_log: PathBuf,
    commands: RawCommands,
    applications: std::collections::BTreeMap<String, String>,
}

impl Default for RawProbes {
    fn default() -> Self {
        Self {
            wireless: None,
            wired: None,
            wan: None,
            command_timeout_secs: 5.0,
            dhcp_leases: ["tmp/dhcp.leases", "var/lib/misc/dnsmasq.leases", "var/lib/dhcp/dhcpd.leases"]
                .into_iter()
                .map(PathBuf::from)
                .collect(),
            wan_interfaces: Vec::new(),
            dot1x_interfaces: Vec::new(),
            max_sessions: 8192,
            conntrack_table: PathBuf::from("proc/net/nf_conntrack"),
            dns_log: PathBuf::from("var/log/dnsmasq.log"),
            commands: RawCommands::default(),
            applications: Default::default(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawCommands {
    iw: Vec<String>,
    hostapd_cli: Vec<String>,
    bridge: Vec<String>,
    lldpcli: Vec<String>,
    conntrack: Vec<String>,
}

impl Default for RawCommands {
    fn default() -> Self {
        let one = |program: &str| vec![program.to_owned()];
        Self {
            iw: one("iw"),
            hostapd_cli: one("hostapd_cli"),
            bridge: one("bridge"),
            lldpcli: one("lldpcli"),
            conntrack: one("conntrack"),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLocation {
    site: String,
    building: String,
    floor: String,
    description: String,
    latitude: Option<f64>,
    longitude: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawSpool {
    enabled: bool,
    path: PathBuf,
    max_bytes: u64,
    sync_interval_ms: u64,
}

impl Default for RawSpool {
    fn default() -> Self {
        Self { enabled: true, path: PathBuf::from("spool"), max_bytes: 4 * 1024 * 1024, sync_interval_ms: 1000 }
    }
}

/// Where unacknowledged records are kept across outages and restarts (`[spool]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolSettings {
    /// The spool file; `None` when the spool is disabled (records then live
    /// in memory only and a restart loses them).
    pub path: Option<PathBuf>,
    /// The file is compacted past this size, dropping the oldest records
    /// if the live ones alone would not fit.
    pub max_bytes: u64,
    /// How often new records are written and synced; a batch's membership
    /// is synced before the batch is sent regardless.
    pub sync_interval: Duration,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDevice {
    org: String,
    id: String,
    kind: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    series: String,
    #[serde(default)]
    location: RawLocation,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCollector {
    /// One collector (every address its name resolves to).
    #[serde(default)]
    address: Option<String>,
    /// Several collectors of one service; exactly one of the two is set.
    #[serde(default)]
    addresses: Option<Vec<String>>,
    server_name: Option<String>,
    #[serde(default)]
    transport: TransportKind,
}

/// Most collector addresses one config may list (`collector.addresses`).
pub const MAX_COLLECTOR_ADDRESSES: usize = 16;

/// Longest host part of a collector address, in bytes (a DNS name's limit).
const MAX_HOST_BYTES: usize = 253;

/// One collector address as configured: a DNS name, an IPv4 address or an
/// IPv6 address, and a port. A name stands for every address it resolves
/// to, looked up afresh at each connection attempt
/// ([`crate::transport::resolve()`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectorAddress {
    host: String,
    port: u16,
}

impl CollectorAddress {
    /// Parses `host:port`, an IPv6 address in brackets (`[2001:db8::1]:7443`).
    /// The error says what is wrong, for the config loader to prefix with
    /// the key.
    pub fn parse(text: &str) -> Result<Self, String> {
        const EXAMPLE: &str = "e.g. collector.example:7443 or [2001:db8::1]:7443";
        let Some((host, port)) = text.rsplit_once(':') else {
            return Err(format!("needs a port, {EXAMPLE}"));
        };
        let host = match host.strip_prefix('[') {
            Some(inner) => {
                let inner = inner.strip_suffix(']').ok_or_else(|| format!("has an unclosed '[', {EXAMPLE}"))?;
                inner
                    .parse::<std::net::Ipv6Addr>()
                    .map_err(|_| format!("has {inner:?} in brackets, which is not an IPv6 address"))?;
                inner
            }
            None if host.contains(':') => return Err(format!("needs brackets around an IPv6 address, {EXAMPLE}")),
            None => host,
        };
        if host.is_empty() {
            return Err(format!("needs a host before the port, {EXAMPLE}"));
        }
        if host.len() > MAX_HOST_BYTES || host.chars().any(|c| c.is_whitespace() || c.is_control() || c == '/') {
            return Err(format!("does not name a host (at most {MAX_HOST_BYTES} bytes, no spaces or '/')"));
        }
        match port.parse::<u16>() {
            Ok(port) if port > 0 => Ok(Self { host: host.to_owned(), port }),
            _ => Err(format!("needs a port of 1..=65535 after the last ':', {EXAMPLE}")),
        }
    }

    /// The host: a DNS name or an IP address (IPv6 without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether both name the same collector (host names compare without case).
    fn same_as(&self, other: &Self) -> bool {
        self.port == other.port && self.host.eq_ignore_ascii_case(&other.host)
    }
}

impl std::fmt::Display for CollectorAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl From<std::net::SocketAddr> for CollectorAddress {
    fn from(addr: std::net::SocketAddr) -> Self {
        Self { host: addr.ip().to_string(), port: addr.port() }
    }
}

/// How the agent reaches the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    /// Mutual TLS with a device certificate and the shared-key proof (access points).
    #[default]
    Tls,
    /// SSH with the device's registered key and a pinned host key (switches, gateways).
    Ssh,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSsh {
    key: PathBuf,
    host_key_fingerprint: String,
    user: Option<String>,
    #[serde(default)]
    cipher_preference: CipherPreference,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    shared_key: PathBuf,
    #[serde(default)]
    cipher_preference: CipherPreference,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawCollect {
    interval_secs: f64,
    sysroot: PathBuf,
}

impl Default for RawCollect {
    fn default() -> Self {
        Self { interval_secs: 30.0, sysroot: PathBuf::from("/") }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawTransport {
    max_frame_bytes: usize,
    max_batch_records: usize,
    max_queued_records: usize,
    connect_timeout_secs: f64,
    backoff_initial_ms: u64,
    backoff_max_secs: u64,
    drain_timeout_secs: f64,
}

impl Default for RawTransport {
    fn default() -> Self {
        Self {
            max_frame_bytes: DEFAULT_MAX_FRAME_LEN,
            max_batch_records: 256,
            max_queued_records: 10_000,
            connect_timeout_secs: 10.0,
            backoff_initial_ms: 500,
            backoff_max_secs: 60,
            drain_timeout_secs: 5.0,
        }
    }
}

/// The files and names mutual TLS needs (`[tls]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// The name every collector's certificate must carry
    /// (`collector.server_name`); `None`: each collector's certificate must
    /// carry the host of the address it was reached by
    /// ([`TlsSettings::server_name_for`]).
    pub server_name: Option<String>,
    /// CA certificate (PEM) that signed the collector's certificate.
    pub ca_path: PathBuf,
    /// This device's certificate (PEM).
    pub cert_path: PathBuf,
    /// This device's private key (PEM).
    pub key_path: PathBuf,
    /// This device's 256-bit shared key (64 hex digits).
    pub shared_key_path: PathBuf,
}

impl TlsSettings {
    /// The name the certificate of the collector reached at `address` must
    /// carry: `collector.server_name` if set, else the address's own host.
    /// Either way the certificate is verified in full against the CA; a
    /// second address never widens what one connection accepts.
    pub fn server_name_for<'a>(&'a self, address: &'a CollectorAddress) -> &'a str {
        self.server_name.as_deref().unwrap_or(address.host())
    }
}

/// What SSH needs (`[ssh]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshSettings {
    /// This device's OpenSSH private key (Ed25519 or ECDSA), registered on the collector.
    pub key_path: PathBuf,
    /// The collector's host key fingerprint, `SHA256:…`, as
    /// `glimpse-collector ssh-host-key` prints it. Any other host key is
    /// refused. With several collector addresses every collector must
    /// present this one key (they share the host key file).
    pub host_key_fingerprint: String,
    /// The SSH user name, `<org>/<device>` unless configured.
    pub user: String,
}

/// How the agent authenticates to the collector, and with what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransportSecurity {
    /// Mutual TLS plus the shared-key proof.
    Tls(TlsSettings),
    /// SSH public-key authentication with a pinned host key.
    Ssh(SshSettings),
}

/// A validated agent configuration.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Who this device is; must match its certificate or registered SSH key.
    pub identity: DeviceIdentity,
    /// The collectors of the service, `host:port` each (the TLS or the SSH
    /// port), in the configured order; at least one, at most
    /// [`MAX_COLLECTOR_ADDRESSES`]. Every address a name resolves to is a
    /// candidate (`crate::transport::failover` picks which to try).
    pub collectors: Vec<CollectorAddress>,
    /// TLS or SSH, and the credentials for it.
    pub security: TransportSecurity,
    /// Which AEAD to offer first.
    pub cipher_preference: CipherPreference,
    /// How often metadata is collected.
    pub interval: Duration,
    /// Root of the filesystem the probes read (`/` on a device).
    pub sysroot: PathBuf,
    /// Largest frame sent or accepted.
    pub max_frame_bytes: usize,
    /// Most records per batch.
    pub max_batch_records: usize,
    /// Most records held while the collector is unreachable; oldest dropped first.
    pub max_queued_records: usize,
    /// TCP + TLS connect timeout.
    pub connect_timeout: Duration,
    /// First reconnect delay.
    pub backoff_initial: Duration,
    /// Longest reconnect delay.
    pub backoff_max: Duration,
    /// How long SIGTERM waits to flush queued records.
    pub drain_timeout: Duration,
    /// Whether and within which bounds packets may be captured.
    pub capture: CaptureSettings,
    /// The on-disk spool.
    pub spool: SpoolSettings,
    /// The device's name, series and location, sent with every device-kind
    /// report.
    pub profile: DeviceProfile,
    /// Which device-kind probes run, and where they read.
    pub probes: ProbeSettings,
    /// `log_level` and `log_format` (the command line and the environment
    /// take precedence: `glimpse_files::logging`).
    pub log: glimpse_files::logging::LogConfig,
    /// The file's text with secret-looking values replaced
    /// ([`glimpse_common::record::diagnostics::redact_config`]), for
    /// diagnostic bundles.
    pub redacted_text: String,
}

/// The device-kind probes (`[probes]`).
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeSettings {
    /// Radios, stations and roaming (default: on for access points).
    pub wireless: bool,
    /// VLANs, learned hosts and LLDP neighbours (default: on for switches).
    pub wired: bool,
    /// Application and session summaries (default: on for gateways).
    pub wan: bool,
    /// How long a tool may take before it is killed.
    pub command_timeout: Duration,
    /// DHCP lease files to read (dnsmasq or ISC format, told apart by
    /// content), relative to the collection root.
    pub dhcp_leases: Vec<PathBuf>,
    /// Interfaces that face the WAN.
    pub wan_interfaces: Vec<String>,
    /// Wired ports with 802.1X (hostapd's wired driver), for usernames.
    pub dot1x_interfaces: Vec<String>,
    /// Most sessions the WAN probe follows.
    pub max_sessions: usize,
    /// The connection tracking table, relative to the collection root;
    /// when it is absent the `conntrack` tool is asked instead.
    pub conntrack_table: PathBuf,
    /// The gateway's DNS resolver log (dnsmasq with `log-queries` and
    /// `log-facility=`), relative to the collection root: site names for
    /// WAN destinations, read only when the organisation enables those.
    pub dns_log: PathBuf,
    /// The tools run, each as program and leading arguments.
    pub commands: ProbeCommands,
    /// Application names for server ports beyond the built-in ones:
    /// (protocol number, port, name).
    pub applications: Vec<(u8, u16, String)>,
}

/// The tools the probes run (program and leading arguments).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeCommands {
    /// `iw`: radios and stations.
    pub iw: Vec<String>,
    /// `hostapd_cli`: 802.1X usernames and dynamic VLANs.
    pub hostapd_cli: Vec<String>,
    /// `bridge` (iproute2): forwarding table and VLANs.
    pub bridge: Vec<String>,
    /// `lldpcli` (lldpd): LLDP neighbours.
    pub lldpcli: Vec<String>,
    /// `conntrack` (conntrack-tools): sessions, when the kernel has no
    /// `/proc/net/nf_conntrack`.
    pub conntrack: Vec<String>,
}

impl AgentConfig {
    /// What captures need of this config.
    pub(crate) fn capture_config(&self) -> crate::capture::session::CaptureConfig<'_> {
        crate::capture::session::CaptureConfig { settings: &self.capture, max_queued_records: self.max_queued_records }
    }

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
        let default_ssh_user = format!("{}/{}", raw.device.org, raw.device.id);
        let profile = device_profile(&raw.device, &mut problems);
        let org = OrgId::new(raw.device.org).map_err(|e| problems.push(format!("device.org: {e}"))).ok();
        let device = DeviceId::new(raw.device.id).map_err(|e| problems.push(format!("device.id: {e}"))).ok();
        let kind = raw.device.kind.parse::<DeviceKind>().map_err(|e| problems.push(format!("device.kind: {e}"))).ok();
        let secs = |name: &str, value: f64, problems: &mut Vec<String>| {
            if value.is_finite() && value > 0.0 && value <= 86_400.0 {
                Duration::from_secs_f64(value)
            } else {
                problems.push(format!("{name} must be between 0 and 86400 seconds, got {value}"));
                Duration::from_secs(1)
            }
        };
        let interval = secs("collect.interval_secs", raw.collect.interval_secs, &mut problems);
        let connect_timeout = secs("transport.connect_timeout_secs", raw.transport.connect_timeout_secs, &mut problems);
        let drain_timeout = secs("transport.drain_timeout_secs", raw.transport.drain_timeout_secs, &mut problems);
        let t = &raw.transport;
        if !(1024..=16 * 1024 * 1024).contains(&t.max_frame_bytes) {
            problems.push(format!("transport.max_frame_bytes must be 1 KiB..16 MiB, got {}", t.max_frame_bytes));
        }
        if !(1..=glimpse_common::wire::MAX_RECORDS_PER_BATCH).contains(&t.max_batch_records) {
            problems.push(format!(
                "transport.max_batch_records must be 1..={}, got {}",
                glimpse_common::wire::MAX_RECORDS_PER_BATCH,
                t.max_batch_records
            ));
        }
        if !(1..=1_000_000).contains(&t.max_queued_records) {
            problems.push(format!("transport.max_queued_records must be 1..=1000000, got {}", t.max_queued_records));
        }
        if t.backoff_initial_ms == 0 || t.backoff_max_secs == 0 || t.backoff_initial_ms > t.backoff_max_secs * 1000 {
            problems.push("transport.backoff_initial_ms must be positive and at most backoff_max_secs".to_owned());
        }
        let collectors = collector_addresses(&raw.collector, &mut problems);
        let server_name = raw.collector.server_name.clone();
        let security = match raw.collector.transport {
            TransportKind::Tls => {
                match &server_name {
                    Some(name) => {
                        if rustls_pki_types::ServerName::try_from(name.clone()).is_err() {
                            problems.push(format!("collector.server_name {name:?} is not a DNS name or IP address"));
                        }
                    }
                    // Each collector is then checked against its own host.
                    None => {
                        for (key, address) in &collectors {
                            if rustls_pki_types::ServerName::try_from(address.host()).is_err() {
                                problems.push(format!(
                                    "{key}: {:?} is not a DNS name or IP address a certificate can carry; set collector.server_name",
                                    address.host()
                                ));
                            }
                        }
                    }
                }
                if raw.ssh.is_some() {
                    problems.push("[ssh] is set but collector.transport is \"tls\"".to_owned());
                }
                raw.tls.as_ref().map(|tls| {
                    TransportSecurity::Tls(TlsSettings {
                        server_name: server_name.clone(),
                        ca_path: base.join(&tls.ca),
                        cert_path: base.join(&tls.cert),
                        key_path: base.join(&tls.key),
                        shared_key_path: base.join(&tls.shared_key),
                    })
                })
            }
            TransportKind::Ssh => {
                if raw.tls.is_some() {
                    problems.push("[tls] is set but collector.transport is \"ssh\"".to_owned());
                }
                raw.ssh.as_ref().map(|ssh| {
                    let fingerprint = ssh.host_key_fingerprint.trim();
                    if !valid_fingerprint(fingerprint) {
                        problems.push(format!(
                            "ssh.host_key_fingerprint must look like SHA256:<43 base64 characters> (from `glimpse-collector ssh-host-key`), got {:?}",
                            fingerprint.chars().take(80).collect::<String>()
                        ));
                    }
                    TransportSecurity::Ssh(SshSettings {
                        key_path: base.join(&ssh.key),
                        host_key_fingerprint: fingerprint.to_owned(),
                        user: ssh.user.clone().unwrap_or_else(|| default_ssh_user.clone()),
                    })
                })
            }
        };
        if security.is_none() {
            let section = match raw.collector.transport {
                TransportKind::Tls => "[tls] (ca, cert, key, shared_key)",
                TransportKind::Ssh => "[ssh] (key, host_key_fingerprint)",
            };
            problems.push(format!("collector.transport needs {section}"));
        }
        let cipher_preference = match (&raw.tls, &raw.ssh) {
            (_, Some(ssh)) => ssh.cipher_preference,
            (Some(tls), None) => tls.cipher_preference,
            (None, None) => CipherPreference::Auto,
        };
        problems.extend(raw.capture.problems());
        if !(64 * 1024..=1024 * 1024 * 1024).contains(&raw.spool.max_bytes) {
            problems.push(format!("spool.max_bytes must be 64 KiB..1 GiB, got {}", raw.spool.max_bytes));
        }
        if !(10..=60_000).contains(&raw.spool.sync_interval_ms) {
            problems.push(format!("spool.sync_interval_ms must be 10..=60000, got {}", raw.spool.sync_interval_ms));
        }
        let probes = probe_settings(&raw.probes, kind, &mut problems);
        let log =
            glimpse_files::logging::LogConfig::from_config(raw.log_level, raw.log_format.as_deref(), &mut problems);
        let (Some(org), Some(device), Some(kind), Some(security)) = (org, device, kind, security) else {
            return Err(ConfigError::Invalid { path: path.to_owned(), problems });
        };
        if !problems.is_empty() {
            return Err(ConfigError::Invalid { path: path.to_owned(), problems });
        }
        Ok(Self {
            identity: DeviceIdentity { org, device, kind },
            collectors: collectors.into_iter().map(|(_, address)| address).collect(),
            security,
            cipher_preference,
            interval,
            sysroot: base.join(raw.collect.sysroot),
            max_frame_bytes: t.max_frame_bytes,
            max_batch_records: t.max_batch_records,
            max_queued_records: t.max_queued_records,
            connect_timeout,
            backoff_initial: Duration::from_millis(t.backoff_initial_ms),
            backoff_max: Duration::from_secs(t.backoff_max_secs),
            drain_timeout,
            capture: CaptureSettings {
                consent_file: Some(
                    base.join(raw.capture.consent_file.clone().unwrap_or_else(|| PathBuf::from("capture-consent"))),
                ),
                ..raw.capture
            },
            spool: SpoolSettings {
                path: raw.spool.enabled.then(|| base.join(&raw.spool.path)),
                max_bytes: raw.spool.max_bytes,
                sync_interval: Duration::from_millis(raw.spool.sync_interval_ms),
            },
            profile,
            probes,
            log,
            redacted_text: glimpse_common::record::diagnostics::redact_config(text),
        })
    }
}

/// `collector.address` or `collector.addresses` (exactly one), each
/// parsed and named by its key for [`AgentConfig::parse`]'s problems.
fn collector_addresses(raw: &RawCollector, problems: &mut Vec<String>) -> Vec<(String, CollectorAddress)> {
    let listed: Vec<(String, &str)> = match (&raw.address, &raw.addresses) {
        (Some(_), Some(_)) => {
            problems.push("collector: set address or addresses, not both".to_owned());
            return Vec::new();
        }
        (None, None) => {
            problems.push("collector needs address = \"host:port\" or addresses = [\"host:port\", ...]".to_owned());
            return Vec::new();
        }
        (Some(address), None) => vec![("collector.address".to_owned(), address.as_str())],
        (None, Some(list)) if list.is_empty() => {
            problems.push("collector.addresses is empty; list at least one \"host:port\"".to_owned());
            return Vec::new();
        }
        (None, Some(list)) if list.len() > MAX_COLLECTOR_ADDRESSES => {
            problems
                .push(format!("collector.addresses lists {} addresses; at most {MAX_COLLECTOR_ADDRESSES}", list.len()));
            return Vec::new();
        }
        (None, Some(list)) => list
            .iter()
            .enumerate()
            .map(|(i, address)| (format!("collector.addresses[{i}]"), address.as_str()))
            .collect(),
    };
    let mut parsed: Vec<(String, CollectorAddress)> = Vec::new();
    for (key, text) in listed {
        let shown = text.chars().take(80).collect::<String>();
        match CollectorAddress::parse(text) {
            Ok(address) => match parsed.iter().find(|(_, seen)| seen.same_as(&address)) {
                Some((first, _)) => problems.push(format!("{key} {shown:?} repeats {first}")),
                None => parsed.push((key, address)),
            },
            Err(why) => problems.push(format!("{key} {shown:?} {why}")),
        }
    }
    parsed
}

/// The `[device]` name, series and location, checked.
fn device_profile(raw: &RawDevice, problems: &mut Vec<String>) -> DeviceProfile {
    let mut text = |name: &str, value: &str| {
        if value.len() > glimpse_common::record::MAX_TEXT || value.chars().any(char::is_control) {
            problems.push(format!("device.{name} must be one line of at most 255 bytes"));
        }
        BoundedString::truncating(value)
    };
    let l = &raw.location;
    let profile = DeviceProfile {
        name: text("name", &raw.name),
        series: text("series", &raw.series),
        location: Location {
            site: text("location.site", &l.site),
            building: text("location.building", &l.building),
            floor: text("location.floor", &l.floor),
            description: text("location.description", &l.description),
            latitude: l.latitude,
            longitude: l.longitude,
        },
    };
    if l.latitude.is_some_and(|v| !(-90.0..=90.0).contains(&v)) {
        problems.push("device.location.latitude must be between -90 and 90 degrees".to_owned());
    }
    if l.longitude.is_some_and(|v| !(-180.0..=180.0).contains(&v)) {
        problems.push("device.location.longitude must be between -180 and 180 degrees".to_owned());
    }
    if l.latitude.is_some() != l.longitude.is_some() {
        problems.push("device.location needs both latitude and longitude, or neither".to_owned());
    }
    profile
}

/// The `[probes]` section, checked; which probes run defaults from the
/// device's kind.
fn probe_settings(raw: &RawProbes, kind: Option<DeviceKind>, problems: &mut Vec<String>) -> ProbeSettings {
    let timeout = raw.command_timeout_secs;
    if !(timeout.is_finite() && (0.1..=60.0).contains(&timeout)) {
        problems.push(format!("probes.command_timeout_secs must be 0.1..=60, got {timeout}"));
    }
    if !(16..=1_000_000).contains(&raw.max_sessions) {
        problems.push(format!("probes.max_sessions must be 16..=1000000, got {}", raw.max_sessions));
    }
    let c = &raw.commands;
    for (name, argv) in [
        ("iw", &c.iw),
        ("hostapd_cli", &c.hostapd_cli),
        ("bridge", &c.bridge),
        ("lldpcli", &c.lldpcli),
        ("conntrack", &c.conntrack),
    ] {
        if argv.first().is_none_or(|program| program.is_empty()) {
            problems.push(format!("probes.commands.{name} needs a program"));
        }
    }
    for name in raw.wan_interfaces.iter().chain(&raw.dot1x_interfaces) {
        if name.is_empty() || name.len() > 15 || name.contains(['/', ' ', ':']) {
            problems.push(format!("probes: {name:?} is not an interface name"));
        }
    }
    let mut applications = Vec::new();
    for (key, name) in &raw.applications {
        let parsed = key.split_once('/').and_then(|(proto, port)| {
            let proto = match proto {
                "tcp" => 6u8,
                "udp" => 17,
                "sctp" => 132,
                _ => return None,
            };
            Some((proto, port.parse::<u16>().ok().filter(|p| *p > 0)?))
        });
        let good_name = (1..=32).contains(&name.len())
            && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
        match parsed {
            Some((proto, port)) if good_name => applications.push((proto, port, name.clone())),
            Some(_) => problems.push(format!(
                "probes.applications.{key:?}: name {name:?} must be 1-32 characters of a-z, 0-9, '.', '_', '-'"
            )),
            None => problems.push(format!("probes.applications: {key:?} must look like \"tcp/8443\" or \"udp/5000\"")),
        }
    }
    let is = |k: DeviceKind| kind == Some(k);
    ProbeSettings {
        wireless: raw.wireless.unwrap_or(is(DeviceKind::Ap)),
        wired: raw.wired.unwrap_or(is(DeviceKind::Switch)),
        wan: raw.wan.unwrap_or(is(DeviceKind::Gateway)),
        command_timeout: Duration::from_secs_f64(if timeout.is_finite() { timeout.clamp(0.1, 60.0) } else { 5.0 }),
        dhcp_leases: raw.dhcp_leases.clone(),
        wan_interfaces: raw.wan_interfaces.clone(),
        dot1x_interfaces: raw.dot1x_interfaces.clone(),
        max_sessions: raw.max_sessions,
        conntrack_table: raw.conntrack_table.clone(),
        dns_log: raw.dns_log.clone(),
        commands: ProbeCommands {
            iw: c.iw.clone(),
            hostapd_cli: c.hostapd_cli.clone(),
            bridge: c.bridge.clone(),
            lldpcli: c.lldpcli.clone(),
            conntrack: c.conntrack.clone(),
        },
        applications,
    }
}

/// Whether `text` looks like an OpenSSH SHA-256 fingerprint: `SHA256:`
/// and 43 characters of unpadded base64.
fn valid_fingerprint(text: &str) -> bool {
    text.strip_prefix("SHA256:")
        .is_some_and(|b64| b64.len() == 43 && b64.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[device]
org = "acme"
id = "ap-1"
kind = "ap"

[collector]
address = "127.0.0.1:7443"

[tls]
ca = "ca.pem"
cert = "device.pem"
key = "device.key"
shared_key = "device.psk"
"#;

    #[test]
    fn defaults_and_relative_paths() {
        let c = AgentConfig::parse(GOOD, Path::new("/etc/glimpse/agent.toml"), Path::new("/etc/glimpse")).unwrap();
        assert_eq!(c.identity.to_uri(), "urn:glimpse:device:acme:ap:ap-1");
        let TransportSecurity::Tls(tls) = &c.security else { panic!("TLS by default") };
        assert_eq!(c.collectors, vec![CollectorAddress::parse("127.0.0.1:7443").unwrap()]);
        assert_eq!(tls.server_name, None);
        assert_eq!(tls.server_name_for(&c.collectors[0]), "127.0.0.1");
        assert_eq!(tls.cert_path, Path::new("/etc/glimpse/device.pem"));
        assert_eq!(c.interval, Duration::from_secs(30));
        assert_eq!(c.max_frame_bytes, 1 << 20);
    }

    /// `GOOD` with its `[collector]` lines replaced by `lines`.
    fn with_collector(lines: &str) -> Result<AgentConfig, String> {
        let text = GOOD.replace("address = \"127.0.0.1:7443\"\n", lines);
        AgentConfig::parse(&text, Path::new("a.toml"), Path::new(".")).map_err(|e| e.to_string())
    }

    #[test]
    fn several_collector_addresses_each_checked_against_its_own_name() {
        let c = with_collector(
            "addresses = [\"c1.example:7443\", \"192.0.2.7:7443\", \"[2001:db8::7]:7443\", \"C2.example:7443\"]\n",
        )
        .unwrap();
        let shown: Vec<String> = c.collectors.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["c1.example:7443", "192.0.2.7:7443", "[2001:db8::7]:7443", "C2.example:7443"]);
        assert_eq!(c.collectors[2].host(), "2001:db8::7");
        let TransportSecurity::Tls(tls) = &c.security else { panic!("TLS") };
        let names: Vec<&str> = c.collectors.iter().map(|a| tls.server_name_for(a)).collect();
        assert_eq!(names, ["c1.example", "192.0.2.7", "2001:db8::7", "C2.example"]);
        // One name for all of them when the collectors share a certificate.
        let c = with_collector(
            "addresses = [\"c1.example:7443\", \"c2.example:7443\"]\nserver_name = \"ingest.example\"\n",
        )
        .unwrap();
        let TransportSecurity::Tls(tls) = &c.security else { panic!("TLS") };
        assert!(c.collectors.iter().all(|a| tls.server_name_for(a) == "ingest.example"));
        // `address` alone still loads, as before.
        assert_eq!(with_collector("address = \"c1.example:7443\"\n").unwrap().collectors.len(), 1);
    }

    #[test]
    fn collector_address_problems_name_their_key() {
        for (lines, expected) in [
            ("", "collector needs address"),
            ("address = \"a.example:1\"\naddresses = [\"b.example:1\"]\n", "address or addresses, not both"),
            ("addresses = []\n", "collector.addresses is empty"),
            ("addresses = [\"a.example:7443\", \"b.example\"]\n", "collector.addresses[1] \"b.example\" needs a port"),
            ("address = \"c.example:0\"\n", "collector.address \"c.example:0\" needs a port of 1..=65535"),
            ("address = \"c.example:http\"\n", "needs a port of 1..=65535"),
            ("address = \"::1:7443\"\n", "needs brackets around an IPv6 address"),
            ("address = \"[::1:7443\"\n", "unclosed '['"),
            ("address = \"[c.example]:7443\"\n", "not an IPv6 address"),
            ("address = \":7443\"\n", "needs a host"),
            ("address = \"a b:7443\"\n", "does not name a host"),
            (
                "addresses = [\"a.example:7443\", \"A.example:7443\"]\n",
                "collector.addresses[1] \"A.example:7443\" repeats collector.addresses[0]",
            ),
            ("address = \"a..example:7443\"\n", "collector.address: \"a..example\" is not a DNS name or IP address"),
        ] {
            let err = with_collector(lines).unwrap_err();
            assert!(err.contains(expected), "{lines:?}: {err}");
        }
        let too_many: Vec<String> = (0..=MAX_COLLECTOR_ADDRESSES).map(|i| format!("\"c{i}.example:7443\"")).collect();
        let err = with_collector(&format!("addresses = [{}]\n", too_many.join(", "))).unwrap_err();
        assert!(err.contains("collector.addresses lists 17 addresses; at most 16"), "{err}");
        // A host that is no certificate name is fine once server_name says which name to check.
        assert!(with_collector("address = \"a..example:7443\"\nserver_name = \"c.example\"\n").is_ok());
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let text = GOOD.replace("\"acme\"", "\"Acme Corp\"").replace("\"ap\"", "\"router\"");
        let err = AgentConfig::parse(&text, Path::new("a.toml"), Path::new(".")).unwrap_err().to_string();
        assert!(err.contains("device.org") && err.contains("device.kind"), "{err}");
        let text = format!("{GOOD}\n[transport]\nmax_frame_bytes = 10\n");
        let err = AgentConfig::parse(&text, Path::new("a.toml"), Path::new(".")).unwrap_err().to_string();
        assert!(err.contains("max_frame_bytes"), "{err}");
        let err = AgentConfig::parse("[device]\nbogus = 1", Path::new("a.toml"), Path::new(".")).unwrap_err();
        assert!(matches!(err, ConfigError::Parse { .. }), "{err}");
    }

    const SSH: &str = r#"
[device]
org = "acme"
id = "sw-1"
kind = "switch"

[collector]
address = "collector.example:2222"
transport = "ssh"

[ssh]
key = "ssh_ed25519_key"
host_key_fingerprint = "SHA256:0123456789abcdefghijklmnopqrstuvwxyzABCDEFG"
"#;

    #[test]
    fn ssh_transport_needs_its_section_and_a_well_formed_fingerprint() {
        let c = AgentConfig::parse(SSH, Path::new("/etc/glimpse/agent.toml"), Path::new("/etc/glimpse")).unwrap();
        let TransportSecurity::Ssh(ssh) = &c.security else { panic!("SSH") };
        assert_eq!(ssh.key_path, Path::new("/etc/glimpse/ssh_ed25519_key"));
        assert_eq!(ssh.user, "acme/sw-1");

        let short = SSH.replace("ABCDEFG\"", "ABC\"");
        let err = AgentConfig::parse(&short, Path::new("a.toml"), Path::new(".")).unwrap_err().to_string();
        assert!(err.contains("ssh.host_key_fingerprint"), "{err}");
        let without = SSH.split("[ssh]").next().unwrap().to_owned();
        let err = AgentConfig::parse(&without, Path::new("a.toml"), Path::new(".")).unwrap_err().to_string();
        assert!(err.contains("collector.transport needs [ssh]"), "{err}");
        let both = format!("{SSH}\n[tls]\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\nshared_key = \"d\"\n");
        let err = AgentConfig::parse(&both, Path::new("a.toml"), Path::new(".")).unwrap_err().to_string();
        assert!(err.contains("[tls] is set"), "{err}");
    }

    #[test]
    fn capture_rules_parse_and_need_an_interface() {
        let with_rules = format!(
            "{GOOD}\n[capture]\nconsent_file = \"state/consent\"\nmonitor_interface = \"br-lan\"\n\n[[capture.rules]]\nevent = \"dns-failure\"\nwindow_secs = 10\n"
        );
        let c = AgentConfig::parse(&with_rules, Path::new("a.toml"), Path::new(".")).unwrap();
        assert_eq!(c.capture.consent_file.as_deref(), Some(Path::new("./state/consent")));
        assert_eq!(c.capture.monitor_interface.as_deref(), Some("br-lan"));
        assert_eq!(c.capture.rules.len(), 1);
        assert_eq!(c.capture.rules[0].window_secs, 10);

        let without_interface = with_rules.replace("monitor_interface = \"br-lan\"\n", "");
        let err = AgentConfig::parse(&without_interface, Path::new("a.toml"), Path::new(".")).unwrap_err().to_string();
        assert!(err.contains("capture.monitor_interface"), "{err}");
        let bad_window = with_rules.replace("window_secs = 10", "window_secs = 0");
        let err = AgentConfig::parse(&bad_window, Path::new("a.toml"), Path::new(".")).unwrap_err().to_string();
        assert!(err.contains("capture.rules[0] (dns-failure): window_secs"), "{err}");
    }

    /// The number after `key` on the first line that starts with it (`30s` reads as 30).
    fn seconds_after(text: &str, key: &str) -> u64 {
        let line = text.lines().map(str::trim_start).find(|l| l.starts_with(key)).unwrap_or_else(|| panic!("no {key}"));
        line[key.len()..].trim().trim_end_matches('s').parse().unwrap_or_else(|e| panic!("{line}: {e}"))
    }

    #[test]
    fn packaged_example_config_loads_and_fits_the_service_files() {
        let text = include_str!("../packaging/agent.example.toml");
        let c = AgentConfig::parse(text, Path::new("/etc/glimpse/agent.toml"), Path::new("/etc/glimpse")).unwrap();
        let TransportSecurity::Tls(tls) = &c.security else { panic!("the example is an access point over TLS") };
        assert_eq!(tls.key_path, Path::new("/etc/glimpse/device.key"));
        // The service files leave /etc read-only: what the agent writes lives in its state directory.
        assert_eq!(c.spool.path.as_deref(), Some(Path::new("/var/lib/glimpse-agent/spool")));
        assert_eq!(c.capture.consent_file.as_deref(), Some(Path::new("/var/lib/glimpse-agent/capture-consent")));

        // SIGTERM may wait for a connection attempt, then drains: both stop
        // timeouts must outlast that, or the drain is cut short by SIGKILL.
        let unit = include_str!("../packaging/systemd/glimpse-agent.service");
        let init = include_str!("../packaging/openwrt/glimpse-agent.init");
        let needed = c.connect_timeout + c.drain_timeout;
        for (file, secs) in [
            ("glimpse-agent.service", seconds_after(unit, "TimeoutStopSec=")),
            ("glimpse-agent.init", seconds_after(init, "procd_set_param term_timeout")),
        ] {
            assert!(Duration::from_secs(secs) > needed, "{file}: {secs} s to stop, the example needs {needed:?}");
        }
    }
}
