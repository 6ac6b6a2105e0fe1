//! Alerts for incidents: conditions an operator or an organisation must
//! hear about promptly, delivered to a webhook (HTTPS, HMAC-signed) and to
//! syslog, and each one audited in the hash-chained audit log.
//!
//! The conditions ([`model::AlertKind`]): the audit chain fails
//! verification, storage cannot take data, a certificate is near its end,
//! an organisation changes its capture consent or support grant, support
//! staff read data under a grant, a device has gone silent. The admin
//! actions raise the consent and support alerts as they happen
//! ([`Alerts::raise`]); a periodic task ([`checks`]) looks at the others.
//!
//! The parts: [`model`] (the alert and its JSON payload), [`limit`]
//! (deduplication and rate limiting, sans-IO), [`signature`] (the
//! webhook's HMAC), [`syslog`] (RFC 5424 and local formatting, sans-IO),
//! [`config`] (`[alerts]`), `deliver` (the tokio tasks at the edge).
//!
//! # What it deliberately does not do
//!
//! It never blocks ingest or an admin request: [`Alerts::raise`] only takes
//! a short lock and tries a bounded queue; the audit append and the
//! delivery happen on tasks of their own, and what does not fit is dropped
//! and counted (`glimpse_alerts_dropped_total`). It puts no secrets, keys,
//! record contents or packet bytes in an alert. It does not deduplicate
//! across collectors: each collector alerts on what it sees, and every
//! alert carries the condition's `key` and the `collector` so receivers can.

pub mod checks;
pub mod config;
mod deliver;
pub mod limit;
pub mod model;
pub mod signature;
pub mod syslog;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use glimpse_store::audit::AuditOutcome;
use glimpse_store::store::Store;

pub use config::AlertsConfig;
pub use model::{Alert, AlertKind, Severity};

use deliver::{Outgoing, Receiver};
use limit::{Decision, Limiter};

/// Alerts raised but not yet audited and handed to the receivers.
const INTAKE: usize = 1024;

/// The alerting could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AlertsError {
    /// A receiver's TLS configuration (its CA file) is unusable.
    #[error("alert receiver TLS: {0}")]
    Tls(String),
    /// The webhook's secret file is missing, open to others or malformed.
    #[error(transparent)]
    Secret(glimpse_files::SecretFileError),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReceiverLabels {
    receiver: &'static str,
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReceiverLabel {
    receiver: &'static str,
}

/// The alerting's counters, registered in the service's one registry.
#[derive(Debug)]
pub struct AlertMetrics {
    raised: Family<KindLabel, Counter>,
    suppressed: Family<ReasonLabel, Counter>,
    delivered: Family<ReceiverLabel, Counter>,
    dropped: Family<ReceiverLabels, Counter>,
    retries: Family<ReceiverLabel, Counter>,
}

impl AlertMetrics {
    /// The counters, registered in `registry`.
    pub fn new(registry: &mut Registry) -> Self {
        let m = AlertMetrics {
            raised: Family::default(),
            suppressed: Family::default(),
            delivered: Family::default(),
            dropped: Family::default(),
            retries: Family::default(),
        };
        registry.register(
            "alerts_raised",
            "Alerts let through deduplication and the rate limit, by kind",
            m.raised.clone(),
        );
        registry.register(
            "alerts_suppressed",
            "Alerts held back: repeat (the same condition alerted within repeat_after_secs) or rate (over max_per_minute)",
            m.suppressed.clone(),
        );
        registry.register(
            "alerts_delivered",
            "Alerts a receiver accepted, by receiver (webhook, syslog)",
            m.delivered.clone(),
        );
        registry.register(
            "alerts_dropped",
            "Alerts not delivered, by receiver and reason (queue: its queue was full; failed: every attempt failed; intake: the collector's own queue was full)",
            m.dropped.clone(),
        );
        registry.register("alerts_retries", "Delivery attempts retried, by receiver", m.retries.clone());
        m
    }

    fn dropped(&self, receiver: &'static str, reason: &'static str) {
        self.dropped.get_or_create(&ReceiverLabels { receiver, reason }).inc();
    }

    pub(crate) fn retried(&self, receiver: &'static str) {
        self.retries.get_or_create(&ReceiverLabel { receiver }).inc();
    }

    pub(crate) fn finished(&self, receiver: &'static str, delivered: bool) {
        if delivered {
            self.delivered.get_or_create(&ReceiverLabel { receiver }).inc();
        } else {
            self.dropped(receiver, "failed");
        }
    }
}

/// What the current configuration made: its settings and its receivers.
#[derive(Debug)]
struct Active {
    config: AlertsConfig,
    receivers: Vec<Receiver>,
}

/// The alerting of one collector: cheap to clone, shared by the admin
/// actions, the periodic checks and the reload.
#[derive(Debug, Clone)]
pub struct Alerts {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Arc<Store>,
    metrics: Arc<AlertMetrics>,
    active: watch::Sender<Option<Arc<Active>>>,
    limiter: Mutex<Limiter>,
    intake: Mutex<Option<mpsc::Sender<(Alert, u64)>>>,
    /// Start time and counter: alert ids unique per collector run.
    started_ms: i64,
    counter: AtomicU64,
}

impl Alerts {
    /// Alerting that is off until [`configure`](Self::configure)d, or
    /// for good (no `[alerts]` section): raising costs a lock and nothing
    /// more.
    pub fn off(store: Arc<Store>, metrics: Arc<AlertMetrics>) -> Self {
        let started_ms = store.clock().now_millis();
        Alerts {
            inner: Arc::new(Inner {
                store,
                metrics,
                active: watch::Sender::new(None),
                limiter: Mutex::new(Limiter::new(0, 1)),
                intake: Mutex::new(None),
                started_ms,
                counter: AtomicU64::new(0),
            }),
        }
    }

    /// Starts alerting with `config` (`None`: off) on the current tokio
    /// runtime: the intake task, the receivers and the periodic checks,
    /// stopped by `shutdown`. The service calls it at start.
    pub fn start(
        &self,
        config: Option<AlertsConfig>,
        own: checks::Watched,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Vec<tokio::task::JoinHandle<()>>, AlertsError> {
        self.configure(config)?;
        let (tx, rx) = mpsc::channel(INTAKE);
        *self.inner.intake.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
        let intake = tokio::spawn(self.clone().intake(rx, shutdown.clone()));
        let checks = tokio::spawn(checks::run(self.clone(), own, shutdown));
        Ok(vec![intake, checks])
    }

    /// Replaces the configuration (SIGHUP): new receivers are built and
    /// checked first; on error the running ones stay. Alerts queued for the
    /// old receivers are still delivered by them.
    pub fn configure(&self, config: Option<AlertsConfig>) -> Result<(), AlertsError> {
        let Some(config) = config else {
            self.inner.active.send_replace(None);
            return Ok(());
        };
        let collector: Arc<str> = config.collector_name.clone().unwrap_or_else(host_name).into();
        let mut receivers = Vec::new();
        if let Some(webhook) = &config.webhook {
            let built = deliver::Webhook::build(webhook)?;
            receivers.push(deliver::start_webhook(
                built,
                collector.clone(),
                config.queue,
                self.inner.store.clock().clone(),
                self.inner.metrics.clone(),
            ));
        }
        if let Some(syslog) = &config.syslog {
            receivers.extend(deliver::start_syslog(syslog, &collector, config.queue, self.inner.metrics.clone())?);
        }
        let repeat = i64::try_from(config.repeat_after.as_millis()).unwrap_or(i64::MAX);
        {
            let mut limiter = self.inner.limiter.lock().unwrap_or_else(|p| p.into_inner());
            limiter.set_limits(repeat, config.max_per_minute);
        }
        let names: Vec<&str> = receivers.iter().map(|r| r.name.as_str()).collect();
        info!(collector = %collector, receivers = ?names, "alerts configured");
        self.inner.active.send_replace(Some(Arc::new(Active { config, receivers })));
        Ok(())
    }

    /// The configuration in force, if alerting is on.
    pub fn config(&self) -> Option<AlertsConfig> {
        self.inner.active.borrow().as_ref().map(|a| a.config.clone())
    }

    /// Raises `alert`: deduplicated and rate limited, then audited and
    /// delivered by the alerting's own tasks. Never blocks on I/O; callable
    /// from any thread, async or not.
    pub fn raise(&self, alert: Alert) {
        if self.inner.active.borrow().is_none() {
            return;
        }
        let decision = self.inner.limiter.lock().unwrap_or_else(|p| p.into_inner()).decide(&alert.key(), alert.at_ms);
        let suppressed_before = match decision {
            Decision::Send { suppressed_before } => suppressed_before,
            Decision::Repeat => {
                self.inner.metrics.suppressed.get_or_create(&ReasonLabel { reason: "repeat" }).inc();
                return;
            }
            Decision::RateLimited => {
                self.inner.metrics.suppressed.get_or_create(&ReasonLabel { reason: "rate" }).inc();
                warn!(kind = %alert.kind, "alert over the rate limit, dropped (counted in the next one)");
                return;
            }
        };
        self.inner.metrics.raised.get_or_create(&KindLabel { kind: alert.kind.as_str() }).inc();
        let intake = self.inner.intake.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let queued = intake.is_some_and(|tx| tx.try_send((alert, suppressed_before)).is_ok());
        if !queued {
            self.inner.metrics.dropped("all", "intake");
            warn!("alert dropped: the alert intake is full");
        }
    }

    /// Audits each alert, then hands it to every receiver's queue.
    async fn intake(self, mut rx: mpsc::Receiver<(Alert, u64)>, mut shutdown: watch::Receiver<bool>) {
        loop {
            let (alert, suppressed_before) = tokio::select! {
                next = rx.recv() => match next {
                    Some(next) => next,
                    None => return,
                },
                _ = crate::listener::stopped(&mut shutdown) => {
                    // What was raised is audited even if it is not sent.
                    rx.close();
                    let store = self.inner.store.clone();
                    let mut left = Vec::new();
                    while let Ok((alert, _)) = rx.try_recv() {
                        left.push(alert);
                    }
                    let _ = tokio::task::spawn_blocking(move || {
                        for alert in left {
                            audit(&store, &alert, "not sent: the collector stopped");
                        }
                    })
                    .await;
                    return;
                }
            };
            let n = self.inner.counter.fetch_add(1, Ordering::Relaxed) + 1;
            let id: Arc<str> = format!("{:x}-{n}", self.inner.started_ms).into();
            let alert = Arc::new(alert);
            warn!(
                kind = %alert.kind,
                org = alert.org.as_deref().unwrap_or("-"),
                device = alert.device.as_deref().unwrap_or("-"),
                id = %id,
                "alert: {}",
                alert.summary
            );
            let store = self.inner.store.clone();
            let (audited, audit_id) = (alert.clone(), id.clone());
            let _ = tokio::task::spawn_blocking(move || audit(&store, &audited, &format!("id {audit_id}"))).await;
            let Some(active) = self.inner.active.borrow().clone() else { continue };
            let out = Outgoing { alert, id, suppressed_before };
            for receiver in &active.receivers {
                if receiver.queue.try_send(out.clone()).is_err() {
                    self.inner.metrics.dropped(receiver.label, "queue");
                    warn!(receiver = %receiver.name, "alert dropped: the receiver's queue is full");
                }
            }
        }
    }

    fn store(&self) -> &Arc<Store> {
        &self.inner.store
    }
}

/// `glimpse-collector check`: the receivers' files (the webhook's secret,
/// the CAs) read and their TLS configurations built as `serve` would,
/// nothing sent. What is fine goes to `ok`, what is not to `problems`.
pub fn check_receivers(config: &AlertsConfig, ok: &mut Vec<String>, problems: &mut Vec<String>) {
    let mut check = |what: String, result: Result<(), AlertsError>| match result {
        Ok(()) => ok.push(what),
        Err(e) => problems.push(format!("{what}: {e}")),
    };
    if let Some(webhook) = &config.webhook {
        check(
            format!("alert webhook secret {}", webhook.secret_file.display()),
            deliver::webhook_key(webhook).map(drop),
        );
        let trust =
            webhook.ca.as_ref().map_or_else(|| "the system's trust store".to_owned(), |ca| ca.display().to_string());
        check(
            format!("alert webhook {} verified against {trust}", webhook.url),
            deliver::tls_config(webhook.ca.as_deref()).map(drop),
        );
    }
    if let Some(syslog) = &config.syslog {
        if syslog.targets.iter().any(|t| matches!(t, config::SyslogTarget::Tls { .. })) {
            let trust =
                syslog.ca.as_ref().map_or_else(|| "the system's trust store".to_owned(), |ca| ca.display().to_string());
            check(
                format!("alert syslog TLS verified against {trust}"),
                deliver::tls_config(syslog.ca.as_deref()).map(drop),
            );
        }
        let targets: Vec<String> = syslog.targets.iter().map(ToString::to_string).collect();
        ok.push(format!("alert syslog targets: {}", targets.join(", ")));
    }
}

/// Audits `alert` as `alert.<kind>` by the collector: `<prefix>: <summary>;
/// device <device>; <subject>`.
fn audit(store: &Store, alert: &Alert, prefix: &str) {
    let mut detail = format!("{prefix}: {}", alert.summary);
    if let Some(device) = &alert.device {
        detail.push_str(&format!("; device {device}"));
    }
    if let Some(subject) = &alert.subject {
        detail.push_str(&format!("; {subject}"));
    }
    let action = format!("alert.{}", alert.kind);
    store.audit_event("collector", &action, org_id(alert).as_ref(), AuditOutcome::Done, &detail);
}

fn org_id(alert: &Alert) -> Option<glimpse_common::identity::OrgId> {
    alert.org.as_deref().and_then(|o| glimpse_common::identity::OrgId::new(o.to_owned()).ok())
}

/// This host's name, for alerts of a collector without `collector_name`.
fn host_name() -> String {
    let name = rustix::system::uname().nodename().to_string_lossy().into_owned();
    if name.is_empty() {
        "glimpse-collector".to_owned()
    } else {
        name
    }
}

pub use checks::Watched;

#[cfg(test)]
mod tests {
    use super::*;

    fn section(secret: &std::path::Path) -> AlertsConfig {
        let text = format!(
            "[webhook]\nurl = \"https://alerts.example.net/hook\"\nsecret_file = {secret:?}\n\
             [syslog]\ntargets = [\"udp://192.0.2.1:514\", \"unix:/dev/log\"]\n"
        );
        let raw: config::RawAlerts = toml::from_str(&text).unwrap();
        let mut problems = Vec::new();
        let c = raw.resolve(std::path::Path::new("/"), &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        c
    }

    #[test]
    fn check_reads_the_secret_as_serve_would() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("hook.secret");
        let (mut ok, mut problems) = (Vec::new(), Vec::new());
        check_receivers(&section(&secret), &mut ok, &mut problems);
        assert!(problems.iter().any(|p| p.contains("hook.secret")), "missing: {problems:?}");

        std::fs::write(&secret, "s3cret\n").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
        let (mut ok, mut problems) = (Vec::new(), Vec::new());
        check_receivers(&section(&secret), &mut ok, &mut problems);
        assert_eq!(problems.len(), 1, "open to others: {problems:?}");

        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        let (mut ok2, mut problems) = (Vec::new(), Vec::new());
        check_receivers(&section(&secret), &mut ok2, &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        assert!(ok2.iter().any(|l| l.contains("udp://192.0.2.1:514, unix:/dev/log")), "{ok2:?}");
        assert!(!format!("{ok:?}{ok2:?}").contains("s3cret"), "the secret is never printed");
    }
}
