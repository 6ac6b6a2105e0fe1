//! `[alerts]` in collector.toml: where alerts go and when conditions fire.
//!
//! ```toml
//! [alerts]
//! collector_name = "collector-1"      # in every alert; default: the host name
//! check_interval_secs = 60            # how often conditions are looked at (1..=3600)
//! repeat_after_secs = 3600            # one condition alerts at most this often (60..=604800)
//! max_per_minute = 60                 # all conditions together (1..=10000)
//! certificate_lead_days = 30          # certificates expiring within this (1..=365)
//! device_silent_minutes = 60          # 0: off (0..=43200)
//! audit_verify_interval_secs = 3600   # the whole audit chain verified this often (1..=604800)
//! queue = 1024                        # alerts waiting per receiver (1..=65536)
//!
//! [alerts.device_silent_orgs]         # per-organisation thresholds, minutes (0: off)
//! acme = 15
//!
//! [alerts.webhook]
//! url = "https://alerts.example.net/glimpse"
//! secret_file = "/etc/glimpse/alert-webhook.secret"  # 0600, one line
//! ca = "/etc/glimpse/alerts-ca.pem"   # optional: else the system's trust store
//! timeout_secs = 10
//! max_attempts = 6                    # with exponential backoff from 1 s
//!
//! [alerts.syslog]
//! targets = ["tls://syslog.example.net:6514", "unix:/dev/log"]  # udp://, tcp://, tls://, unix:
//! ca = "/etc/glimpse/syslog-ca.pem"   # for tls://; else the system's trust store
//! facility = "daemon"
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use glimpse_common::identity::OrgId;

use super::syslog::Facility;

/// The raw `[alerts]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAlerts {
    collector_name: Option<String>,
    #[serde(default = "default_check")]
    check_interval_secs: u64,
    #[serde(default = "default_repeat")]
    repeat_after_secs: u64,
    #[serde(default = "default_per_minute")]
    max_per_minute: u32,
    #[serde(default = "default_lead")]
    certificate_lead_days: u32,
    #[serde(default = "default_silent")]
    device_silent_minutes: u64,
    #[serde(default)]
    device_silent_orgs: BTreeMap<String, u64>,
    #[serde(default = "default_verify")]
    audit_verify_interval_secs: u64,
    #[serde(default = "default_queue")]
    queue: usize,
    webhook: Option<RawWebhook>,
    syslog: Option<RawSyslog>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebhook {
    url: String,
    secret_file: PathBuf,
    ca: Option<PathBuf>,
    #[serde(default = "default_timeout")]
    timeout_secs: u64,
    #[serde(default = "default_attempts")]
    max_attempts: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSyslog {
    targets: Vec<String>,
    ca: Option<PathBuf>,
    #[serde(default = "default_facility")]
    facility: String,
    #[serde(default = "default_timeout")]
    timeout_secs: u64,
    #[serde(default = "default_attempts")]
    max_attempts: u32,
}

fn default_check() -> u64 {
    60
}
fn default_repeat() -> u64 {
    3600
}
fn default_per_minute() -> u32 {
    60
}
fn default_lead() -> u32 {
    30
}
fn default_silent() -> u64 {
    60
}
fn default_verify() -> u64 {
    3600
}
fn default_queue() -> usize {
    1024
}
fn default_timeout() -> u64 {
    10
}
fn default_attempts() -> u32 {
    6
}
fn default_facility() -> String {
    "daemon".to_owned()
}

/// Most syslog targets.
const MAX_TARGETS: usize = 8;
/// Longest URL or target text.
const MAX_URL_CHARS: usize = 2048;

/// The validated `[alerts]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertsConfig {
    /// The name alerts carry; `None`: the host name.
    pub collector_name: Option<String>,
    /// How often conditions are looked at.
    pub check_interval: Duration,
    /// One condition alerts at most this often.
    pub repeat_after: Duration,
    /// All conditions together, per rolling minute.
    pub max_per_minute: u32,
    /// Certificates expiring within this many days alert.
    pub certificate_lead_days: u32,
    /// Devices silent this long alert (`None`: off), unless their
    /// organisation says otherwise.
    pub device_silent: Option<Duration>,
    /// Per-organisation silence thresholds (`None`: off for it).
    pub device_silent_orgs: BTreeMap<OrgId, Option<Duration>>,
    /// How often the whole audit chain is verified.
    pub audit_verify_interval: Duration,
    /// Alerts waiting per receiver; more are dropped and counted.
    pub queue: usize,
    /// The webhook, if any.
    pub webhook: Option<WebhookConfig>,
    /// The syslog receivers, if any.
    pub syslog: Option<SyslogConfig>,
}

impl AlertsConfig {
    /// The silence threshold for `org`.
    pub fn silent_after(&self, org: &OrgId) -> Option<Duration> {
        self.device_silent_orgs.get(org).copied().unwrap_or(self.device_silent)
    }
}

/// `[alerts.webhook]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    /// An `https://` URL.
    pub url: String,
    /// The shared secret's file (0600, one line).
    pub secret_file: PathBuf,
    /// The CA the receiver's certificate must chain to; `None`: the
    /// system's trust store.
    pub ca: Option<PathBuf>,
    /// One attempt's deadline.
    pub timeout: Duration,
    /// Attempts per alert, the first included.
    pub max_attempts: u32,
}

/// `[alerts.syslog]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyslogConfig {
    /// Where messages go.
    pub targets: Vec<SyslogTarget>,
    /// The CA for `tls://` targets; `None`: the system's trust store.
    pub ca: Option<PathBuf>,
    /// The facility.
    pub facility: Facility,
    /// One attempt's deadline (connect and write).
    pub timeout: Duration,
    /// Attempts per alert over TCP or TLS, the first included.
    pub max_attempts: u32,
}

/// One syslog receiver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyslogTarget {
    /// RFC 5424 in one datagram (RFC 5426).
    Udp {
        /// `host:port`.
        address: String,
    },
    /// RFC 5424 octet-counted over TCP (RFC 6587).
    Tcp {
        /// `host:port`.
        address: String,
    },
    /// RFC 5424 octet-counted over TLS (RFC 5425), the receiver verified.
    Tls {
        /// `host:port`.
        address: String,
        /// The name its certificate must carry (the host of `address`).
        server_name: String,
    },
    /// The local syslog socket, in the format `syslog(3)` writes.
    Unix {
        /// The socket, usually `/dev/log`.
        path: PathBuf,
    },
}

impl std::fmt::Display for SyslogTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SyslogTarget::Udp { address } => write!(f, "udp://{address}"),
            SyslogTarget::Tcp { address } => write!(f, "tcp://{address}"),
            SyslogTarget::Tls { address, .. } => write!(f, "tls://{address}"),
            SyslogTarget::Unix { path } => write!(f, "unix:{}", path.display()),
        }
    }
}

/// The host of `host:port` (brackets of an IPv6 address removed), if the
/// text is of that form with a port.
fn host_of(address: &str) -> Option<String> {
    let (host, port) = address.rsplit_once(':')?;
    port.parse::<u16>().ok().filter(|p| *p != 0)?;
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    (!host.is_empty() && !host.contains('/') && !host.contains('@')).then(|| host.to_owned())
}

/// Parses one target text, naming the problem in `problems`.
fn target(text: &str, base: &Path, problems: &mut Vec<String>) -> Option<SyslogTarget> {
    let bad = |problems: &mut Vec<String>, why: &str| {
        problems.push(format!("alerts.syslog.targets: {text:?} {why}"));
        None
    };
    if text.len() > MAX_URL_CHARS {
        return bad(problems, "is too long");
    }
    if let Some(path) = text.strip_prefix("unix:") {
        if path.is_empty() {
            return bad(problems, "names no socket (unix:/dev/log)");
        }
        return Some(SyslogTarget::Unix { path: base.join(path) });
    }
    let Some((scheme, address)) = text.split_once("://") else {
        return bad(problems, "is not udp://host:port, tcp://host:port, tls://host:port or unix:/dev/log");
    };
    let Some(host) = host_of(address) else {
        return bad(problems, "needs host:port with a port");
    };
    let address = address.to_owned();
    match scheme {
        "udp" => Some(SyslogTarget::Udp { address }),
        "tcp" => Some(SyslogTarget::Tcp { address }),
        "tls" => Some(SyslogTarget::Tls { address, server_name: host }),
        _ => bad(problems, "has an unknown scheme (udp, tcp, tls or unix)"),
    }
}

impl RawAlerts {
    /// Validates the section, naming every problem in `problems`; relative
    /// paths are resolved against `base`.
    pub fn resolve(self, base: &Path, problems: &mut Vec<String>) -> AlertsConfig {
        let mut range = |name: &str, value: u64, lo: u64, hi: u64| {
            if !(lo..=hi).contains(&value) {
                problems.push(format!("alerts.{name} must be {lo}..={hi}, got {value}"));
            }
        };
        range("check_interval_secs", self.check_interval_secs, 1, 3600);
        range("repeat_after_secs", self.repeat_after_secs, 60, 7 * 86_400);
        range("max_per_minute", u64::from(self.max_per_minute), 1, 10_000);
        range("certificate_lead_days", u64::from(self.certificate_lead_days), 1, 365);
        range("device_silent_minutes", self.device_silent_minutes, 0, 30 * 1440);
        range("audit_verify_interval_secs", self.audit_verify_interval_secs, 1, 7 * 86_400);
        range("queue", self.queue as u64, 1, 65_536);
        let minutes = |m: u64| (m > 0).then(|| Duration::from_secs(m * 60));
        let mut orgs = BTreeMap::new();
        for (org, m) in self.device_silent_orgs {
            match OrgId::new(org.clone()) {
                Ok(id) => {
                    if m > 30 * 1440 {
                        problems.push(format!("alerts.device_silent_orgs.{org} must be 0..=43200, got {m}"));
                    }
                    orgs.insert(id, minutes(m));
                }
                Err(e) => problems.push(format!("alerts.device_silent_orgs: {org:?}: {e}")),
            }
        }
        if let Some(name) = &self.collector_name {
            if name.is_empty() || name.len() > 255 || !name.bytes().all(|b| b.is_ascii_graphic()) {
                problems.push("alerts.collector_name must be 1 to 255 printable ASCII characters, no spaces".into());
            }
        }
        let mut attempts = |section: &str, timeout: u64, max: u32| {
            if !(1..=120).contains(&timeout) {
                problems.push(format!("alerts.{section}.timeout_secs must be 1..=120, got {timeout}"));
            }
            if !(1..=20).contains(&max) {
                problems.push(format!("alerts.{section}.max_attempts must be 1..=20, got {max}"));
            }
        };
        if let Some(w) = &self.webhook {
            attempts("webhook", w.timeout_secs, w.max_attempts);
        }
        if let Some(s) = &self.syslog {
            attempts("syslog", s.timeout_secs, s.max_attempts);
        }
        let webhook = self.webhook.map(|w| {
            match reqwest::Url::parse(&w.url) {
                Ok(url) if url.scheme() != "https" => {
                    problems.push(format!("alerts.webhook.url must be https://, got {}://", url.scheme()))
                }
                Ok(url) if !url.username().is_empty() || url.password().is_some() => {
                    problems.push("alerts.webhook.url must not hold credentials (the secret file signs instead)".into())
                }
                Ok(url) if url.host_str().is_none() => problems.push("alerts.webhook.url has no host".into()),
                Ok(_) if w.url.len() > MAX_URL_CHARS => problems.push("alerts.webhook.url is too long".into()),
                Ok(_) => {}
                Err(e) => problems.push(format!("alerts.webhook.url: {e}")),
            }
            WebhookConfig {
                url: w.url,
                secret_file: base.join(w.secret_file),
                ca: w.ca.map(|p| base.join(p)),
                timeout: Duration::from_secs(w.timeout_secs),
                max_attempts: w.max_attempts,
            }
        });
        let syslog = self.syslog.map(|s| {
            if s.targets.is_empty() || s.targets.len() > MAX_TARGETS {
                problems.push(format!("alerts.syslog.targets must list 1 to {MAX_TARGETS} receivers"));
            }
            let targets = s.targets.iter().take(MAX_TARGETS).filter_map(|t| target(t, base, problems)).collect();
            let facility = Facility::from_name(&s.facility).unwrap_or_else(|| {
                problems.push(format!(
                    "alerts.syslog.facility {:?} is not a syslog facility (daemon, local0, ...)",
                    s.facility
                ));
                Facility::default()
            });
            SyslogConfig {
                targets,
                ca: s.ca.map(|p| base.join(p)),
                facility,
                timeout: Duration::from_secs(s.timeout_secs),
                max_attempts: s.max_attempts,
            }
        });
        if webhook.is_none() && syslog.is_none() {
            problems.push("[alerts] needs [alerts.webhook] or [alerts.syslog] (alerts are audited either way)".into());
        }
        AlertsConfig {
            collector_name: self.collector_name,
            check_interval: Duration::from_secs(self.check_interval_secs),
            repeat_after: Duration::from_secs(self.repeat_after_secs),
            max_per_minute: self.max_per_minute,
            certificate_lead_days: self.certificate_lead_days,
            device_silent: minutes(self.device_silent_minutes),
            device_silent_orgs: orgs,
            audit_verify_interval: Duration::from_secs(self.audit_verify_interval_secs),
            queue: self.queue,
            webhook,
            syslog,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<AlertsConfig, Vec<String>> {
        let raw: RawAlerts = toml::from_str(text).map_err(|e| vec![e.to_string()])?;
        let mut problems = Vec::new();
        let c = raw.resolve(Path::new("/etc/glimpse"), &mut problems);
        if problems.is_empty() {
            Ok(c)
        } else {
            Err(problems)
        }
    }

    #[test]
    fn a_full_section() {
        let c = parse(
            "device_silent_minutes = 30\n[device_silent_orgs]\nacme = 5\nquiet = 0\n\
             [webhook]\nurl = \"https://alerts.example.net/hook\"\nsecret_file = \"hook.secret\"\n\
             [syslog]\ntargets = [\"udp://[2001:db8::1]:514\", \"tls://syslog.example.net:6514\", \"unix:/dev/log\"]\nfacility = \"local4\"\n",
        )
        .unwrap();
        let acme = OrgId::new("acme").unwrap();
        assert_eq!(c.silent_after(&acme), Some(Duration::from_secs(300)));
        assert_eq!(c.silent_after(&OrgId::new("quiet").unwrap()), None);
        assert_eq!(c.silent_after(&OrgId::new("other").unwrap()), Some(Duration::from_secs(1800)));
        let w = c.webhook.unwrap();
        assert_eq!(w.secret_file, Path::new("/etc/glimpse/hook.secret"));
        let s = c.syslog.unwrap();
        assert_eq!(
            s.targets,
            vec![
                SyslogTarget::Udp { address: "[2001:db8::1]:514".into() },
                SyslogTarget::Tls {
                    address: "syslog.example.net:6514".into(),
                    server_name: "syslog.example.net".into()
                },
                SyslogTarget::Unix { path: "/dev/log".into() },
            ]
        );
        assert_eq!(s.facility, Facility::from_name("local4").unwrap());
    }

    #[test]
    fn every_problem_at_once() {
        let err = parse(
            "check_interval_secs = 0\nqueue = 0\n[device_silent_orgs]\n\"../x\" = 5\n\
             [webhook]\nurl = \"http://alerts.example.net/\"\nsecret_file = \"s\"\nmax_attempts = 0\n\
             [syslog]\ntargets = [\"udp://nohost\", \"smtp://a:1\", \"tls://a\"]\nfacility = \"local9\"\n",
        )
        .unwrap_err()
        .join("\n");
        for needle in [
            "check_interval_secs",
            "queue",
            "device_silent_orgs",
            "must be https",
            "max_attempts",
            "nohost",
            "unknown scheme",
            "\"tls://a\"",
            "local9",
        ] {
            assert!(err.contains(needle), "{needle} missing from {err}");
        }
        assert!(parse("").unwrap_err()[0].contains("needs [alerts.webhook] or [alerts.syslog]"));
        assert!(
            parse("[webhook]\nurl = \"https://u:p@h/\"\nsecret_file = \"s\"\n").unwrap_err()[0].contains("credentials")
        );
        assert!(parse("bogus = 1\n").is_err(), "unknown keys are refused");
        assert!(parse("[webhook]\nurl = \"https://h/\"\nsecret = \"inline\"\n").is_err(), "no inline secret");
    }
}
