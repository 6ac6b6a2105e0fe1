//! Why connections were refused, counted for operators and tests.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::ingest::refusal_log::{RefusalLog, Verdict};

/// Refusal lines logged per source and reason in each interval.
const REFUSAL_LOG_BURST: u32 = 5;
/// How long each interval is; its summary comes at the end.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(60);
/// Sources tracked one by one; the rest share one entry per reason.
const REFUSAL_LOG_SOURCES: usize = 4096;

/// Why the collector refused an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum RejectReason {
    /// The TLS client presented no certificate.
    NoCertificate,
    /// The certificate does not chain to our CA.
    UnknownIssuer,
    /// The certificate is expired.
    Expired,
    /// The certificate is not valid yet (its start lies ahead of the
    /// collector's clock: a clock or issuing mistake, not an old device).
    NotYetValid,
    /// The certificate is on the CRL, or the registry marks the device revoked.
    Revoked,
    /// Any other TLS handshake failure (protocol, cipher, garbage).
    TlsHandshake,
    /// The certificate carries no valid Glimpse device identity.
    BadIdentity,
    /// The certificate names a device that is not registered.
    UnknownDevice,
    /// The certificate is not the one registered for the device (serial or kind differ).
    RegistrationMismatch,
    /// The shared-key proof did not verify.
    WrongSharedKey,
    /// The agent broke the protocol (version, order, malformed frames, identity in Hello).
    Protocol,
    /// Too many connections, or the handshake took too long.
    Overload,
    /// An authenticated connection sent nothing for the idle timeout.
    IdleTimeout,
    /// The collector is shutting down and closed the connection.
    ShuttingDown,
    /// A batch could not be stored; the agent keeps it and retries.
    StorageUnavailable,
}

impl RejectReason {
    /// A short, stable name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::NoCertificate => "no-certificate",
            RejectReason::UnknownIssuer => "unknown-issuer",
            RejectReason::Expired => "expired",
            RejectReason::NotYetValid => "not-yet-valid",
            RejectReason::Revoked => "revoked",
            RejectReason::TlsHandshake => "tls-handshake",
            RejectReason::BadIdentity => "bad-identity",
            RejectReason::UnknownDevice => "unknown-device",
            RejectReason::RegistrationMismatch => "registration-mismatch",
            RejectReason::WrongSharedKey => "wrong-shared-key",
            RejectReason::Protocol => "protocol",
            RejectReason::Overload => "overload",
            RejectReason::IdleTimeout => "idle-timeout",
            RejectReason::ShuttingDown => "shutting-down",
            RejectReason::StorageUnavailable => "storage-unavailable",
        }
    }

    /// Classifies a failed TLS accept.
    pub(crate) fn from_tls(error: &std::io::Error) -> Self {
        use rustls::{CertificateError, Error};
        match error.get_ref().and_then(|inner| inner.downcast_ref::<Error>()) {
            Some(Error::NoCertificatesPresented) => RejectReason::NoCertificate,
            Some(Error::InvalidCertificate(cert)) => match cert {
                CertificateError::UnknownIssuer | CertificateError::BadSignature => RejectReason::UnknownIssuer,
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => RejectReason::Expired,
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                    RejectReason::NotYetValid
                }
                CertificateError::Revoked => RejectReason::Revoked,
                _ => RejectReason::TlsHandshake,
            },
            _ => RejectReason::TlsHandshake,
        }
    }
}

/// Counters the ingest path keeps.
#[derive(Debug)]
pub struct IngestMetrics {
    refusal_log: Mutex<RefusalLog>,
    rejections: Mutex<BTreeMap<RejectReason, u64>>,
    batches: Mutex<(u64, u64)>,
    payload_bytes_cut: Mutex<u64>,
    captures_without_consent: Mutex<u64>,
    /// Batches stored under MAC pseudonymisation: (pseudonymised on the
    /// device, arrived with real MACs).
    pseudonymised_batches: Mutex<(u64, u64)>,
    /// Connections that completed authentication (TLS and SSH).
    authenticated: Mutex<u64>,
    sessions_withdrawn: Mutex<u64>,
    unsolicited_capture_statuses: Mutex<u64>,
}

impl Default for IngestMetrics {
    fn default() -> Self {
        Self {
            refusal_log: Mutex::new(RefusalLog::new(REFUSAL_LOG_INTERVAL, REFUSAL_LOG_BURST, REFUSAL_LOG_SOURCES)),
            rejections: Mutex::default(),
            batches: Mutex::default(),
            payload_bytes_cut: Mutex::default(),
            captures_without_consent: Mutex::default(),
            pseudonymised_batches: Mutex::default(),
            authenticated: Mutex::default(),
            sessions_withdrawn: Mutex::default(),
            unsolicited_capture_statuses: Mutex::default(),
        }
    }
}

/// Logs a refusal line at WARN unless the refusal log limit for its source
/// and reason is used up (then it is counted for the interval's summary).
macro_rules! refusal_warn {
    ($metrics:expr, $source:expr, $reason:expr, $($arg:tt)+) => {
        if $metrics.should_log_refusal($source, $reason) {
            tracing::warn!($($arg)+);
        }
    };
}
pub(crate) use refusal_warn;

impl IngestMetrics {
    /// Whether a refusal of `source` for `reason` gets its own log line now.
    pub(crate) fn should_log_refusal(&self, source: IpAddr, reason: RejectReason) -> bool {
        let mut log = self.refusal_log.lock().unwrap_or_else(|p| p.into_inner());
        log.check(source, reason.as_str(), Instant::now()) == Verdict::Log
    }

    /// Logs one summary line per source and reason whose interval ended
    /// with lines held back; the service calls this periodically, and with
    /// `all` at shutdown (every interval ends there).
    pub(crate) fn log_refusal_summaries(&self, all: bool) {
        let (summaries, interval, burst) = {
            let mut log = self.refusal_log.lock().unwrap_or_else(|p| p.into_inner());
            let now = if all { Instant::now() + log.interval() } else { Instant::now() };
            (log.flush(now), log.interval(), log.burst())
        };
        for s in summaries {
            let source = s.source.map_or_else(|| "other addresses".to_owned(), |ip| ip.to_string());
            tracing::warn!(
                %source,
                reason = s.reason,
                suppressed = s.suppressed,
                "{} more refusals ({}) from {source} in the last {interval:?} not logged one by one (at most {burst} a source and reason per interval)",
                s.suppressed,
                s.reason,
            );
        }
    }

    /// Refusal log lines held back (and counted in summaries) since start.
    pub fn refusal_lines_suppressed(&self) -> u64 {
        self.refusal_log.lock().unwrap_or_else(|p| p.into_inner()).suppressed_total()
    }

    pub(crate) fn reject(&self, reason: RejectReason) {
        *self.rejections.lock().unwrap_or_else(|p| p.into_inner()).entry(reason).or_default() += 1;
    }

    pub(crate) fn authenticated(&self) {
        *self.authenticated.lock().unwrap_or_else(|p| p.into_inner()) += 1;
    }

    /// Connections that completed authentication since start: each is one
    /// full handshake, so a rise without new devices means agents are
    /// reconnecting.
    pub fn handshakes(&self) -> u64 {
        *self.authenticated.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn stored(&self, records: usize) {
        let mut b = self.batches.lock().unwrap_or_else(|p| p.into_inner());
        b.0 += 1;
        b.1 += records as u64;
    }

    pub(crate) fn payload_cut(&self, bytes: usize) {
        *self.payload_bytes_cut.lock().unwrap_or_else(|p| p.into_inner()) += bytes as u64;
    }

    pub(crate) fn pseudonymised(&self, form: glimpse_common::minimise::MacForm) {
        let mut counts = self.pseudonymised_batches.lock().unwrap_or_else(|p| p.into_inner());
        match form {
            glimpse_common::minimise::MacForm::DevicePseudonyms => counts.0 += 1,
            glimpse_common::minimise::MacForm::Real => counts.1 += 1,
        }
    }

    /// Batches whose MAC addresses were pseudonymised: first those the
    /// device had already pseudonymised, then those that arrived with real
    /// addresses (sent before the device heard of the policy, or by an
    /// agent that does not pseudonymise) and got both layers here.
    pub fn pseudonymised_batches(&self) -> (u64, u64) {
        *self.pseudonymised_batches.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn captures_without_consent(&self, records: usize) {
        *self.captures_without_consent.lock().unwrap_or_else(|p| p.into_inner()) += records as u64;
    }

    /// Capture records dropped because their organisation had not given
    /// (or had withdrawn) capture consent when they arrived.
    pub fn captures_dropped_without_consent(&self) -> u64 {
        *self.captures_without_consent.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Bytes past header boundaries that agents sent and the collector cut.
    pub fn payload_bytes_cut(&self) -> u64 {
        *self.payload_bytes_cut.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn session_withdrawn(&self) {
        *self.sessions_withdrawn.lock().unwrap_or_else(|p| p.into_inner()) += 1;
    }

    /// Live sessions closed because a reload withdrew their device's
    /// credential (revoked, unregistered or re-keyed).
    pub fn sessions_withdrawn(&self) -> u64 {
        *self.sessions_withdrawn.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn unsolicited_capture_status(&self) {
        *self.unsolicited_capture_statuses.lock().unwrap_or_else(|p| p.into_inner()) += 1;
    }

    /// Capture statuses ignored because no such capture was requested from
    /// the device that sent them.
    pub fn unsolicited_capture_statuses(&self) -> u64 {
        *self.unsolicited_capture_statuses.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many connections were refused for `reason`.
    pub fn rejections(&self, reason: RejectReason) -> u64 {
        self.rejections.lock().unwrap_or_else(|p| p.into_inner()).get(&reason).copied().unwrap_or(0)
    }

    /// Every refusal count, by reason.
    pub fn all_rejections(&self) -> BTreeMap<RejectReason, u64> {
        self.rejections.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Batches and records stored since start.
    pub fn stored_totals(&self) -> (u64, u64) {
        *self.batches.lock().unwrap_or_else(|p| p.into_inner())
    }
}
