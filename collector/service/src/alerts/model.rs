//! What an alert is: its kind, severity, what it concerns, and the JSON
//! payload receivers get. Plain data; no I/O.
//!
//! An alert carries only what a receiver needs to act: the organisation,
//! a device or admin name where one is concerned, the kind, the time and a
//! one-line summary. Never keys, secrets, record contents or packet bytes:
//! the builders below take names and numbers, not records.

use serde::Serialize;

use glimpse_common::clock::UnixMillis;

/// Longest summary, in characters; longer text is cut (a receiver is a
/// pager or a syslog line, not a report).
pub const MAX_SUMMARY_CHARS: usize = 512;

/// Longest name field (organisation, device, subject, collector), in
/// characters.
pub const MAX_NAME_CHARS: usize = 128;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum AlertKind {
    /// The hash-chained audit log failed verification.
    AuditChainBroken,
    /// The control database or the segment store cannot take data.
    StorageUnavailable,
    /// A certificate (the collector's own, the CA, a device's or an
    /// admin's) expires within the configured lead time, or has expired.
    CertificateExpiring,
    /// An organisation changed its capture consent or its support grant.
    ConsentChanged,
    /// Support staff read an organisation's data under its grant.
    SupportAccess,
    /// A device has sent nothing for longer than its threshold.
    DeviceSilent,
}

impl AlertKind {
    /// The name in payloads, syslog MSGIDs and audit actions
    /// (`alert.<name>`).
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::AuditChainBroken => "audit-chain-broken",
            AlertKind::StorageUnavailable => "storage-unavailable",
            AlertKind::CertificateExpiring => "certificate-expiring",
            AlertKind::ConsentChanged => "consent-changed",
            AlertKind::SupportAccess => "support-access",
            AlertKind::DeviceSilent => "device-silent",
        }
    }
}

impl std::fmt::Display for AlertKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How urgent, in syslog's terms (RFC 5424 severities).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Immediate action: evidence may have been altered, data cannot be stored.
    Critical,
    /// Action soon: a certificate about to expire, a device gone quiet.
    Warning,
    /// Worth knowing: an organisation's decision changed, support read data.
    Notice,
}

impl Severity {
    /// The RFC 5424 severity number.
    pub fn syslog_code(self) -> u8 {
        match self {
            Severity::Critical => 2,
            Severity::Warning => 4,
            Severity::Notice => 5,
        }
    }
}

/// One alert, as raised. The same condition raised again has the same
/// [`Alert::key`], which deduplication and receivers use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    /// What happened.
    pub kind: AlertKind,
    /// How urgent.
    pub severity: Severity,
    /// The organisation concerned, if any.
    pub org: Option<String>,
    /// The device concerned, if any.
    pub device: Option<String>,
    /// What else it concerns (a certificate, a support admin, the
    /// audit log), so that two conditions of one kind and organisation are
    /// told apart.
    pub subject: Option<String>,
    /// One line for a person.
    pub summary: String,
    /// When it was raised (collector clock, Unix milliseconds).
    pub at_ms: UnixMillis,
}

impl Alert {
    /// An alert; names and the summary are cut to their bounds.
    pub fn new(kind: AlertKind, severity: Severity, summary: &str, at_ms: UnixMillis) -> Self {
        Alert {
            kind,
            severity,
            org: None,
            device: None,
            subject: None,
            summary: clean(summary, MAX_SUMMARY_CHARS),
            at_ms,
        }
    }

    /// Concerning organisation `org`.
    pub fn org(mut self, org: &str) -> Self {
        self.org = Some(clean(org, MAX_NAME_CHARS));
        self
    }

    /// Concerning device `device` (of the organisation).
    pub fn device(mut self, device: &str) -> Self {
        self.device = Some(clean(device, MAX_NAME_CHARS));
        self
    }

    /// Concerning `subject`.
    pub fn subject(mut self, subject: &str) -> Self {
        self.subject = Some(clean(subject, MAX_NAME_CHARS));
        self
    }

    /// The condition's identity: kind, organisation, device and subject.
    /// Alerts with the same key are one condition (deduplicated here, and
    /// across collectors by receivers that want to).
    pub fn key(&self) -> String {
        let part = |p: &Option<String>| p.as_deref().unwrap_or("").replace('|', "/");
        format!("{}|{}|{}|{}", self.kind, part(&self.org), part(&self.device), part(&self.subject))
    }

    /// The payload for receivers, with this collector's name and a unique id.
    pub fn payload<'a>(&'a self, collector: &'a str, id: &'a str) -> AlertPayload<'a> {
        AlertPayload {
            version: 1,
            id,
            key: self.key(),
            kind: self.kind,
            severity: self.severity,
            collector,
            org: self.org.as_deref(),
            device: self.device.as_deref(),
            subject: self.subject.as_deref(),
            summary: &self.summary,
            at_ms: self.at_ms,
            at: rfc3339(self.at_ms),
            suppressed_before: 0,
        }
    }
}

/// The JSON document posted to the webhook (and the structured data of a
/// syslog line). Field order is fixed; new fields are only ever added.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AlertPayload<'a> {
    /// The payload's format version: 1.
    pub version: u32,
    /// Unique per alert sent: `<collector-start>-<counter>` hex.
    pub id: &'a str,
    /// The condition's key ([`Alert::key`]).
    pub key: String,
    /// What happened.
    pub kind: AlertKind,
    /// How urgent.
    pub severity: Severity,
    /// The collector that raised it.
    pub collector: &'a str,
    /// The organisation, if any.
    pub org: Option<&'a str>,
    /// The device, if any.
    pub device: Option<&'a str>,
    /// What else it concerns, if anything.
    pub subject: Option<&'a str>,
    /// One line for a person.
    pub summary: &'a str,
    /// When (Unix milliseconds).
    pub at_ms: UnixMillis,
    /// When, RFC 3339 UTC.
    pub at: String,
    /// Alerts that the rate limit dropped since the last one delivered
    /// (across all conditions): a receiver sees that it missed some.
    pub suppressed_before: u64,
}

/// `text` without control characters, at most `max` characters: what a
/// receiver shows must not be able to forge lines or terminal escapes.
pub fn clean(text: &str, max: usize) -> String {
    text.chars().map(|c| if c.is_control() { ' ' } else { c }).take(max).collect()
}

/// Unix milliseconds as RFC 3339 UTC with milliseconds; `-` outside the
/// years RFC 3339 can say (RFC 5424's NILVALUE).
pub fn rfc3339(at_ms: UnixMillis) -> String {
    let Ok(t) = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(at_ms) * 1_000_000) else {
        return "-".to_owned();
    };
    if !(0..=9999).contains(&t.year()) {
        return "-".to_owned();
    }
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_tell_conditions_apart_and_cannot_be_confused() {
        let a = Alert::new(AlertKind::DeviceSilent, Severity::Warning, "quiet", 0).org("acme").device("ap-1");
        let b = a.clone().device("ap-2");
        assert_ne!(a.key(), b.key());
        assert_eq!(a.key(), "device-silent|acme|ap-1|");
        // A separator inside a name cannot make two conditions one.
        let c = Alert::new(AlertKind::DeviceSilent, Severity::Warning, "", 0).org("acme|ap-1");
        assert_ne!(c.key(), a.key());
    }

    #[test]
    fn text_is_bounded_and_has_no_control_characters() {
        let long = format!("line one\nline two\u{1b}[31m{}", "x".repeat(2000));
        let a = Alert::new(AlertKind::ConsentChanged, Severity::Notice, &long, 0).org(&"o".repeat(500));
        assert_eq!(a.summary.chars().count(), MAX_SUMMARY_CHARS);
        assert!(!a.summary.chars().any(char::is_control));
        assert_eq!(a.org.as_ref().unwrap().chars().count(), MAX_NAME_CHARS);
    }

    #[test]
    fn the_payload_is_the_documented_json() {
        let a = Alert::new(AlertKind::ConsentChanged, Severity::Notice, "capture consent turned on", 1_767_225_600_123)
            .org("acme")
            .subject("capture");
        let json = serde_json::to_value(a.payload("collector-1", "abc-1")).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "version": 1, "id": "abc-1", "key": "consent-changed|acme||capture", "kind": "consent-changed",
                "severity": "notice", "collector": "collector-1", "org": "acme", "device": null,
                "subject": "capture", "summary": "capture consent turned on", "at_ms": 1_767_225_600_123_i64,
                "at": "2026-01-01T00:00:00.123Z", "suppressed_before": 0
            })
        );
        assert_eq!(rfc3339(i64::MAX), "-");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59.999Z");
    }
}
