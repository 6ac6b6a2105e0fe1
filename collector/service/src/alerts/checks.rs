//! The conditions looked at periodically (every `check_interval_secs`, on
//! a blocking thread): storage, the audit chain, certificates, silent
//! devices. The decisions are plain functions of what was read and `now`
//! ([`certificate_alert`], [`silent_alert`]), unit-tested below; the rest
//! reads the store, the files and the directory of devices.
//!
//! - **Storage**: the control database answers and the segment store can
//!   take data (what `/readyz` checks), and no batch was refused since the
//!   last check because it could not be stored (ingest's
//!   `storage-unavailable` count grew), every check.
//! - **Audit chain**: verified whole at the first check and then every
//!   `audit_verify_interval_secs`; at every other check the entries
//!   appended since (and the last one verified, read again), so that a log
//!   edited on disk while the collector runs is found without anyone
//!   asking, at the cost of reading only the new lines.
//! - **Certificates**: the collector's own and the CA every check; devices
//!   seen since start (their session's certificate) every check; admin
//!   certificates and the PKI directory's device registrations at the
//!   first check and then hourly (reading every registration is not free).
//! - **Silent devices**: a device seen since the collector started whose
//!   last activity is older than its organisation's threshold. Devices not
//!   heard from since start are not judged: they may be served by another
//!   collector, or not deployed yet.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::warn;

use glimpse_common::clock::{UnixMillis, MILLIS_PER_DAY};
use glimpse_store::audit::AuditError;

use super::model::{rfc3339, Alert, AlertKind, Severity};
use super::{Alerts, AlertsConfig};
use glimpse_common::identity::{DeviceId, OrgId};

/// How often the slower certificate sources (admins, registrations) are read.
const SLOW_CHECKS_EVERY: Duration = Duration::from_secs(3600);

/// What the alerts' periodic checks need of a device seen since start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenDevice {
    /// Its organisation.
    pub org: OrgId,
    /// Its id.
    pub device: DeviceId,
    /// Whether it has a session now.
    pub connected: bool,
    /// When it last did something: a batch stored, a session started, a
    /// session ended (collector clock).
    pub last_activity_ms: UnixMillis,
    /// Its TLS certificate's notAfter, from its newest session.
    pub certificate_not_after_ms: Option<UnixMillis>,
}

/// A reading taken from another part of the service (ingest's counters,
/// its directory of devices), so that this module depends on neither.
pub type Probe<T> = Arc<dyn Fn() -> T + Send + Sync>;

/// What the checks look at besides the store: the collector's own
/// certificate files and PKI directory (from collector.toml), and what
/// ingest knows.
#[derive(Clone, Default)]
pub struct Watched {
    /// The collector's TLS certificate chain (its first is the leaf).
    pub cert: Option<PathBuf>,
    /// The CA certificate.
    pub ca: Option<PathBuf>,
    /// The `glimpse-certs` directory with `registrations/`.
    pub pki_dir: Option<PathBuf>,
    /// Batches ingest refused because they could not be stored, so far.
    pub storage_refusals: Option<Probe<u64>>,
    /// Every device seen since start.
    pub devices: Option<Probe<Vec<SeenDevice>>>,
}

impl std::fmt::Debug for Watched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watched")
            .field("cert", &self.cert)
            .field("ca", &self.ca)
            .field("pki_dir", &self.pki_dir)
            .finish_non_exhaustive()
    }
}

/// An alert for a certificate that expires within `lead_days` of `now`
/// (or has expired); `what` names it for people, `subject` for the key.
pub fn certificate_alert(
    what: &str,
    subject: &str,
    not_after_ms: UnixMillis,
    now: UnixMillis,
    lead_days: u32,
) -> Option<Alert> {
    let left = not_after_ms.saturating_sub(now);
    if left > i64::from(lead_days) * MILLIS_PER_DAY {
        return None;
    }
    let on = rfc3339(not_after_ms);
    let (severity, summary) = if left <= 0 {
        (Severity::Critical, format!("{what} expired on {on}"))
    } else {
        let days = left / MILLIS_PER_DAY;
        let hours = left / 3_600_000;
        let inside = if days > 0 { format!("{days} day(s)") } else { format!("{hours} hour(s)") };
        (Severity::Warning, format!("{what} expires in {inside}, on {on}: renew it (glimpse-certs) and reload"))
    };
    Some(Alert::new(AlertKind::CertificateExpiring, severity, &summary, now).subject(subject))
}

/// An alert for a device whose last activity at `last_ms` is more than
/// `threshold` before `now`.
pub fn silent_alert(
    org: &str,
    device: &str,
    last_ms: UnixMillis,
    now: UnixMillis,
    threshold: Duration,
) -> Option<Alert> {
    let threshold_ms = i64::try_from(threshold.as_millis()).unwrap_or(i64::MAX);
    let quiet = now.saturating_sub(last_ms);
    if quiet <= threshold_ms {
        return None;
    }
    let summary = format!(
        "device {device} of {org} has sent nothing for {} minutes (threshold {} minutes), last at {}",
        quiet / 60_000,
        threshold_ms / 60_000,
        rfc3339(last_ms)
    );
    Some(Alert::new(AlertKind::DeviceSilent, Severity::Warning, &summary, now).org(org).device(device))
}

/// State kept between checks.
#[derive(Debug, Default)]
struct Schedule {
    /// When the whole audit chain was last verified.
    audit_verified: Option<Instant>,
    /// Where the last verification of the chain ended.
    audit_point: Option<glimpse_store::audit::Verified>,
    slow_checked: Option<Instant>,
    /// Ingest's storage refusals at the last check.
    storage_refusals: Option<u64>,
}

/// Runs the checks until shutdown: one at once, then one per
/// `check_interval_secs` of the configuration in force.
pub(super) async fn run(alerts: Alerts, own: Watched, mut shutdown: watch::Receiver<bool>) {
    let own = Arc::new(own);
    let mut schedule = Schedule::default();
    loop {
        let interval = match alerts.config() {
            Some(config) => {
                let (a, o) = (alerts.clone(), own.clone());
                let checked = tokio::task::spawn_blocking(move || {
                    schedule.check(&a, &o, &config);
                    schedule
                })
                .await;
                schedule = match checked {
                    Ok(schedule) => schedule,
                    Err(e) => {
                        warn!("alert checks failed: {e}");
                        Schedule::default()
                    }
                };
                alerts.config().map_or(Duration::from_secs(60), |c| c.check_interval)
            }
            None => Duration::from_secs(60),
        };
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = crate::listener::stopped(&mut shutdown) => return,
        }
    }
}

impl Schedule {
    /// One round of checks. Blocking I/O.
    fn check(&mut self, alerts: &Alerts, own: &Watched, config: &AlertsConfig) {
        let store = alerts.store();
        let now = store.clock().now_millis();
        let raise = |alert: Alert| alerts.raise(alert);

        let control = store.control();
        if let Err(e) = control.ping() {
            raise(
                Alert::new(
                    AlertKind::StorageUnavailable,
                    Severity::Critical,
                    &format!("the control database ({}) does not answer: {e}", control.describe()),
                    now,
                )
                .subject("control"),
            );
        }
        if let Some(refusals) = &own.storage_refusals {
            let refused = refusals();
            let before = self.storage_refusals.replace(refused).unwrap_or(0);
            if refused > before {
                let summary = format!(
                    "{} batch(es) could not be stored since the last check; the devices keep them and retry (see the collector's log)",
                    refused - before
                );
                raise(Alert::new(AlertKind::StorageUnavailable, Severity::Critical, &summary, now).subject("ingest"));
            }
        }
        let segments = store.segments();
        if let Err(e) = segments.check() {
            raise(
                Alert::new(
                    AlertKind::StorageUnavailable,
                    Severity::Critical,
                    &format!("the segment store ({}) cannot take data: {e}", segments.describe()),
                    now,
                )
                .subject("segments"),
            );
        }

        // The whole chain now and then; the lines appended since, every check.
        let whole = self.audit_verified.is_none_or(|at| at.elapsed() >= config.audit_verify_interval);
        let from = if whole { None } else { self.audit_point.as_ref() };
        if whole {
            self.audit_verified = Some(Instant::now());
        }
        match store.audit().verify_since(from) {
            Ok(point) => self.audit_point = Some(point),
            Err(e) => {
                // Checked whole again next time: the point may be what broke.
                self.audit_point = None;
                let summary = match e {
                    AuditError::Tampered { .. } => format!("the audit log failed verification: {e}"),
                    _ => format!("the audit log cannot be verified: {e}"),
                };
                raise(Alert::new(AlertKind::AuditChainBroken, Severity::Critical, &summary, now).subject("audit-log"));
            }
        }

        let lead = config.certificate_lead_days;
        for (what, subject, path) in [
            ("the collector's TLS certificate", "certificate:collector", &own.cert),
            ("the CA certificate", "certificate:ca", &own.ca),
        ] {
            let Some(path) = path else { continue };
            match glimpse_files::load_certs(path) {
                Ok(chain) => {
                    if let Some(not_after) =
                        chain.first().and_then(|c| glimpse_common::certificate::not_after_unix_of(c).ok())
                    {
                        let what = format!("{what} {}", path.display());
                        if let Some(alert) =
                            certificate_alert(&what, subject, not_after.saturating_mul(1000), now, lead)
                        {
                            raise(alert);
                        }
                    }
                }
                Err(e) => warn!("alert checks: cannot read {}: {e}", path.display()),
            }
        }

        let seen = own.devices.as_ref().map(|devices| devices()).unwrap_or_default();
        for device in &seen {
            let (org, id) = (device.org.as_str(), device.device.as_str());
            if let Some(not_after) = device.certificate_not_after_ms {
                let what = format!("the certificate of device {id} of {org}");
                if let Some(alert) = certificate_alert(&what, "certificate:device", not_after, now, lead) {
                    raise(alert.org(org).device(id));
                }
            }
            let Some(threshold) = config.silent_after(&device.org) else { continue };
            if let Some(alert) = silent_alert(org, id, device.last_activity_ms, now, threshold) {
                // A revoked device is silent on purpose.
                let revoked =
                    store.registry().get(&device.org, &device.device).ok().flatten().is_none_or(|r| r.revoked);
                if !revoked {
                    raise(alert);
                }
            }
        }

        if self.slow_checked.is_none_or(|at| at.elapsed() >= SLOW_CHECKS_EVERY) {
            self.slow_checked = Some(Instant::now());
            for admin in store.admins().list() {
                let Some(not_after) = admin.not_after_ms.filter(|_| !admin.revoked) else { continue };
                let what = format!("the {} certificate of admin {} (serial {})", admin.role, admin.name, admin.serial);
                if let Some(mut alert) =
                    certificate_alert(&what, &format!("certificate:{}", admin.serial), not_after, now, lead)
                {
                    if let Some(org) = &admin.org {
                        alert = alert.org(org);
                    }
                    raise(alert);
                }
            }
            if let Some(pki) = &own.pki_dir {
                match glimpse_store::import::read_registrations(pki) {
                    Ok(registrations) => {
                        for r in registrations {
                            let not_after = r.not_after.unix_timestamp().saturating_mul(1000);
                            if not_after.saturating_sub(now) > i64::from(lead) * MILLIS_PER_DAY {
                                continue;
                            }
                            // Only the certificate the registry holds now, not revoked.
                            let current = store
                                .registry()
                                .get(&r.org, &r.device)
                                .ok()
                                .flatten()
                                .is_some_and(|row| !row.revoked && row.cert_serial == r.cert_serial);
                            if !current {
                                continue;
                            }
                            let what = format!("the certificate of device {} of {}", r.device, r.org);
                            if let Some(alert) = certificate_alert(&what, "certificate:device", not_after, now, lead) {
                                raise(alert.org(r.org.as_str()).device(r.device.as_str()));
                            }
                        }
                    }
                    Err(e) => warn!("alert checks: cannot read the registrations in {}: {e}", pki.display()),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_767_225_600_000;

    #[test]
    fn certificates_alert_within_the_lead_time_and_after_expiry() {
        let day = MILLIS_PER_DAY;
        assert!(certificate_alert("c", "s", NOW + 31 * day, NOW, 30).is_none());
        let soon = certificate_alert("the CA certificate", "certificate:ca", NOW + 10 * day + 5, NOW, 30).unwrap();
        assert_eq!((soon.kind, soon.severity), (AlertKind::CertificateExpiring, Severity::Warning));
        assert!(soon.summary.starts_with("the CA certificate expires in 10 day(s), on 2026-01-11"), "{}", soon.summary);
        let hours = certificate_alert("c", "s", NOW + 5 * 3_600_000, NOW, 30).unwrap();
        assert!(hours.summary.contains("in 5 hour(s)"), "{}", hours.summary);
        let gone = certificate_alert("c", "s", NOW - 1, NOW, 30).unwrap();
        assert_eq!(gone.severity, Severity::Critical);
        assert!(gone.summary.contains("expired on"));
        assert!(certificate_alert("c", "s", i64::MIN, i64::MAX, 365).is_some(), "no overflow");
    }

    #[test]
    fn devices_alert_only_past_their_threshold() {
        let hour = Duration::from_secs(3600);
        assert!(silent_alert("acme", "ap-1", NOW - 3_600_000, NOW, hour).is_none(), "exactly at the threshold");
        let alert = silent_alert("acme", "ap-1", NOW - 3_600_001 - 60_000, NOW, hour).unwrap();
        assert_eq!((alert.org.as_deref(), alert.device.as_deref()), (Some("acme"), Some("ap-1")));
        assert!(alert.summary.contains("for 61 minutes (threshold 60 minutes)"), "{}", alert.summary);
        assert!(silent_alert("acme", "ap-1", NOW + 10_000, NOW, hour).is_none(), "a clock step back");
        assert!(silent_alert("acme", "ap-1", UnixMillis::MIN, NOW, hour).is_some());
    }
}
