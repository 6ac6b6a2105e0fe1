//! Why connections were refused, counted for operators and tests.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

use glimpse_common::identity::{DeviceIdentity, OrgId};
use glimpse_common::record::{AgentHealth, DataKind, Record, RecordBody};

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
    /// Every reason, for metrics that show each from the start.
    pub const ALL: [RejectReason; 15] = [
        RejectReason::NoCertificate,
        RejectReason::UnknownIssuer,
        RejectReason::Expired,
        RejectReason::NotYetValid,
        RejectReason::Revoked,
        RejectReason::TlsHandshake,
        RejectReason::BadIdentity,
        RejectReason::UnknownDevice,
        RejectReason::RegistrationMismatch,
        RejectReason::WrongSharedKey,
        RejectReason::Protocol,
        RejectReason::Overload,
        RejectReason::IdleTimeout,
        RejectReason::ShuttingDown,
        RejectReason::StorageUnavailable,
    ];

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

/// Counters the ingest path keeps, registered in the service's one metrics
/// registry (see [`crate::telemetry`]) where they are counted.
///
/// Every label value comes from a closed set (an enum) or from an
/// organisation that authenticated through the registry, never from free
/// text a peer sent, so the number of series stays bounded.
#[derive(Debug)]
pub struct IngestMetrics {
    refusal_log: Mutex<RefusalLog>,
    refusals: Family<ReasonLabel, Counter>,
    connections: Family<TransportLabel, Gauge>,
    handshakes: Family<TransportLabel, Counter>,
    records_received: Family<OrgKind, Counter>,
    bytes_received: Family<OrgKind, Counter>,
    records_stored: Family<OrgKind, Counter>,
    bytes_stored: Family<OrgKind, Counter>,
    records_dropped: Family<OrgKindReason, Counter>,
    bytes_dropped: Family<OrgKindReason, Counter>,
    batches_stored: Counter,
    payload_bytes_cut: Family<OrgLabel, Counter>,
    strict_scrubbed_bytes: Family<OrgLabel, Counter>,
    captures_without_consent: Family<OrgLabel, Counter>,
    pseudonymised_batches: Family<FormLabel, Counter>,
    sessions_withdrawn: Counter,
    unsolicited_capture_statuses: Counter,
    ack_latency: Histogram,
    fsync_latency: Histogram,
    agent_spool_drops: Family<OrgKind, Counter>,
    /// The last spool-drop counts each device reported (they are totals
    /// since the agent started), so that only the increase is counted;
    /// bounded by the registered devices that authenticated.
    agent_spool_seen: Mutex<HashMap<DeviceIdentity, (u64, u64)>>,
    /// Sums across organisations for the accessors below, kept beside the
    /// labelled families because a family cannot be summed (its series are
    /// not listed); they move in the same call as the family.
    totals: Totals,
}

#[derive(Debug, Default)]
struct Totals {
    records_stored: AtomicU64,
    payload_bytes_cut: AtomicU64,
    strict_scrubbed_bytes: AtomicU64,
    captures_without_consent: AtomicU64,
}

/// Which listener a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Transport {
    /// Access points over mutual TLS.
    Tls,
    /// Switches and gateways over SSH.
    Ssh,
    /// Administrators on the admin port.
    Admin,
}

impl Transport {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Tls => "tls",
            Transport::Ssh => "ssh",
            Transport::Admin => "admin",
        }
    }
}

/// Why records that arrived were not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DropReason {
    /// Capture records from an organisation without capture consent.
    NoConsent,
    /// Records about a subject the organisation has blocked.
    BlockedSubject,
    /// Records of a kind the organisation has not enabled (WAN
    /// destinations).
    NotEnabled,
}

impl DropReason {
    fn as_str(self) -> &'static str {
        match self {
            DropReason::NoConsent => "no-consent",
            DropReason::BlockedSubject => "blocked-subject",
            DropReason::NotEnabled => "not-enabled",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TransportLabel {
    transport: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OrgLabel {
    org: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OrgKind {
    org: String,
    kind: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OrgKindReason {
    org: String,
    kind: &'static str,
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct FormLabel {
    /// Where the MAC pseudonyms were first made.
    form: &'static str,
}

fn org_kind(org: &OrgId, kind: DataKind) -> OrgKind {
    OrgKind { org: org.as_str().to_owned(), kind: kind.as_str() }
}

/// Latency buckets from 100 µs to about 13 s (doubling), in seconds.
fn latency_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.0001, 2.0, 18)
}

/// A connection counted as open in `glimpse_connections` until dropped.
#[derive(Debug)]
pub(crate) struct OpenConnection(Gauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Default for IngestMetrics {
    /// Counters registered in a registry of their own (tests, tools).
    fn default() -> Self {
        Self::new(&mut Registry::default())
    }
}

impl IngestMetrics {
    /// Creates the counters and registers them in `registry`.
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self {
            refusal_log: Mutex::new(RefusalLog::new(REFUSAL_LOG_INTERVAL, REFUSAL_LOG_BURST, REFUSAL_LOG_SOURCES)),
            refusals: Family::default(),
            connections: Family::default(),
            handshakes: Family::default(),
            records_received: Family::default(),
            bytes_received: Family::default(),
            records_stored: Family::default(),
            bytes_stored: Family::default(),
            records_dropped: Family::default(),
            bytes_dropped: Family::default(),
            batches_stored: Counter::default(),
            payload_bytes_cut: Family::default(),
            strict_scrubbed_bytes: Family::default(),
            captures_without_consent: Family::default(),
            pseudonymised_batches: Family::default(),
            sessions_withdrawn: Counter::default(),
            unsolicited_capture_statuses: Counter::default(),
            ack_latency: Histogram::new(latency_buckets()),
            fsync_latency: Histogram::new(latency_buckets()),
            agent_spool_drops: Family::default(),
            agent_spool_seen: Mutex::default(),
            totals: Totals::default(),
        };
        // Every reason and transport shows from the start, at zero, so a
        // rate() over a refusal that has never happened is 0, not absent.
        for reason in RejectReason::ALL {
            let _ = m.refusals.get_or_create(&ReasonLabel { reason: reason.as_str() });
        }
        for transport in [Transport::Tls, Transport::Ssh, Transport::Admin] {
            let _ = m.connections.get_or_create(&TransportLabel { transport: transport.as_str() });
        }
        // Device handshakes only: the admin port's are not counted here.
        for transport in [Transport::Tls, Transport::Ssh] {
            let _ = m.handshakes.get_or_create(&TransportLabel { transport: transport.as_str() });
        }
        for form in ["device", "collector"] {
            let _ = m.pseudonymised_batches.get_or_create(&FormLabel { form });
        }
        let r = registry;
        r.register("refusals", "Connections refused or closed early, by reason", m.refusals.clone());
        r.register("connections", "Connections open now, by transport (authenticated or not)", m.connections.clone());
        r.register("handshakes", "Connections that completed authentication, by transport", m.handshakes.clone());
        r.register(
            "records_received",
            "Records received from devices, by organisation and kind",
            m.records_received.clone(),
        );
        r.register_with_unit(
            "received",
            "Encoded size of the records received, by organisation and kind",
            Unit::Bytes,
            m.bytes_received.clone(),
        );
        r.register("records_stored", "Records stored durably, by organisation and kind", m.records_stored.clone());
        r.register_with_unit(
            "stored",
            "Encoded size of the records stored (before encryption), by organisation and kind",
            Unit::Bytes,
            m.bytes_stored.clone(),
        );
        r.register(
            "records_dropped",
            "Records received and not stored, by organisation, kind and reason",
            m.records_dropped.clone(),
        );
        r.register_with_unit(
            "dropped",
            "Encoded size of the records dropped, by organisation, kind and reason",
            Unit::Bytes,
            m.bytes_dropped.clone(),
        );
        r.register("batches_stored", "Batches stored durably and acknowledged", m.batches_stored.clone());
        r.register_with_unit(
            "payload_cut",
            "Bytes past packet header boundaries that agents sent and the collector cut, by organisation",
            Unit::Bytes,
            m.payload_bytes_cut.clone(),
        );
        r.register_with_unit(
            "strict_scrubbed",
            "Header bytes the collector zeroed on arrival for organisations in strict mode (captures made before \
             the device heard the decision, agents older than it, or agents ignoring it), by organisation",
            Unit::Bytes,
            m.strict_scrubbed_bytes.clone(),
        );
        r.register(
            "captures_dropped_without_consent",
            "Capture records dropped because their organisation had no capture consent when they arrived",
            m.captures_without_consent.clone(),
        );
        r.register(
            "pseudonymised_batches",
            "Batches stored under MAC pseudonymisation, by where the pseudonyms were first made (device, collector)",
            m.pseudonymised_batches.clone(),
        );
        r.register(
            "sessions_withdrawn",
            "Live sessions closed because a reload withdrew their credential",
            m.sessions_withdrawn.clone(),
        );
        r.register(
            "unsolicited_capture_statuses",
            "Capture statuses ignored because no such capture was requested from the device",
            m.unsolicited_capture_statuses.clone(),
        );
        r.register_with_unit(
            "ack_latency",
            "Time from a batch read off the connection to its acknowledgement sent",
            Unit::Seconds,
            m.ack_latency.clone(),
        );
        r.register_with_unit(
            "fsync_latency",
            "Time the store took to make a batch durable (fsync of its segments)",
            Unit::Seconds,
            m.fsync_latency.clone(),
        );
        r.register(
            "agent_spool_dropped_records",
            "Records agents report having dropped from a full spool, by organisation and kind",
            m.agent_spool_drops.clone(),
        );
        m
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
        self.refusals.get_or_create(&ReasonLabel { reason: reason.as_str() }).inc();
    }

    /// Counts a connection open on `transport` until the guard is dropped.
    pub(crate) fn open_connection(&self, transport: Transport) -> OpenConnection {
        let gauge = self.connections.get_or_create_owned(&TransportLabel { transport: transport.as_str() });
        gauge.inc();
        OpenConnection(gauge)
    }

    /// Connections open now on `transport`.
    pub fn open_connections(&self, transport: Transport) -> i64 {
        self.connections.get_or_create(&TransportLabel { transport: transport.as_str() }).get()
    }

    pub(crate) fn authenticated(&self, transport: Transport) {
        self.handshakes.get_or_create(&TransportLabel { transport: transport.as_str() }).inc();
    }

    /// Connections that completed authentication since start (TLS and
    /// SSH): each is one full handshake, so a rise without new devices
    /// means agents are reconnecting.
    pub fn handshakes(&self) -> u64 {
        [Transport::Tls, Transport::Ssh]
            .into_iter()
            .map(|t| self.handshakes.get_or_create(&TransportLabel { transport: t.as_str() }).get())
            .sum()
    }

    /// Counts the records of a batch as they arrive, before any is dropped.
    /// Returns the count, for [`Self::stored_counted`] when the batch is
    /// stored as it arrived.
    pub(crate) fn received(&self, org: &OrgId, records: &[Record]) -> Tally {
        let counted = tally(records);
        for &(kind, count, bytes) in &counted {
            let label = org_kind(org, kind);
            self.records_received.get_or_create(&label).inc_by(count);
            self.bytes_received.get_or_create(&label).inc_by(bytes);
        }
        counted
    }

    /// Counts records dropped for `reason`.
    pub(crate) fn dropped<'a>(&self, org: &OrgId, records: impl IntoIterator<Item = &'a Record>, reason: DropReason) {
        let records: Vec<&Record> = records.into_iter().collect();
        for (kind, count, bytes) in tally_refs(&records) {
            let label = OrgKindReason { org: org.as_str().to_owned(), kind: kind.as_str(), reason: reason.as_str() };
            self.records_dropped.get_or_create(&label).inc_by(count);
            self.bytes_dropped.get_or_create(&label).inc_by(bytes);
            if reason == DropReason::NoConsent && kind == DataKind::Capture {
                self.captures_without_consent.get_or_create(&OrgLabel { org: org.as_str().to_owned() }).inc_by(count);
                self.totals.captures_without_consent.fetch_add(count, Ordering::Relaxed);
            }
        }
    }

    /// [`Self::stored_counted`] with the records counted afresh (tests).
    #[cfg(test)]
    pub(crate) fn stored(&self, identity: &DeviceIdentity, records: &[Record], sync_time: Duration) {
        self.stored_counted(identity, records, None, sync_time);
    }

    /// Counts a batch stored durably: its records, the store's fsync time,
    /// and what agents report about their spools. `counted` is the batch as
    /// counted on arrival ([`Self::received`]) when no record was dropped or
    /// changed in size since, else `None` and the records are counted
    /// here: counting sizes means encoding every record again, a tenth of
    /// ingest's CPU at millions of records a second.
    pub(crate) fn stored_counted(
        &self,
        identity: &DeviceIdentity,
        records: &[Record],
        counted: Option<Tally>,
        sync_time: Duration,
    ) {
        self.batches_stored.inc();
        self.fsync_latency.observe(sync_time.as_secs_f64());
        for (kind, count, bytes) in counted.unwrap_or_else(|| tally(records)) {
            let label = org_kind(&identity.org, kind);
            self.records_stored.get_or_create(&label).inc_by(count);
            self.bytes_stored.get_or_create(&label).inc_by(bytes);
            self.totals.records_stored.fetch_add(count, Ordering::Relaxed);
        }
        for record in records {
            if let RecordBody::AgentHealth(health) = &record.body {
                self.agent_health(identity, health);
            }
        }
    }

    /// Counts the increase of a device's spool drops since its last report
    /// (a total below the last one means the agent restarted: all new).
    fn agent_health(&self, identity: &DeviceIdentity, health: &AgentHealth) {
        let now = (health.dropped_metadata, health.dropped_captures);
        let before = {
            let mut seen = self.agent_spool_seen.lock().unwrap_or_else(|p| p.into_inner());
            seen.insert(identity.clone(), now).unwrap_or_default()
        };
        let increase = |now: u64, before: u64| if now >= before { now - before } else { now };
        let metadata = increase(now.0, before.0);
        let captures = increase(now.1, before.1);
        if metadata > 0 {
            self.agent_spool_drops.get_or_create(&org_kind(&identity.org, DataKind::Metadata)).inc_by(metadata);
        }
        if captures > 0 {
            self.agent_spool_drops.get_or_create(&org_kind(&identity.org, DataKind::Capture)).inc_by(captures);
        }
    }

    /// Records the time from a batch read to its acknowledgement sent.
    pub(crate) fn acknowledged(&self, since_read: Duration) {
        self.ack_latency.observe(since_read.as_secs_f64());
    }

    pub(crate) fn payload_cut(&self, org: &OrgId, bytes: usize) {
        self.payload_bytes_cut.get_or_create(&OrgLabel { org: org.as_str().to_owned() }).inc_by(bytes as u64);
        self.totals.payload_bytes_cut.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub(crate) fn strict_scrubbed(&self, org: &OrgId, bytes: usize) {
        self.strict_scrubbed_bytes.get_or_create(&OrgLabel { org: org.as_str().to_owned() }).inc_by(bytes as u64);
        self.totals.strict_scrubbed_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub(crate) fn pseudonymised(&self, form: glimpse_common::minimise::MacForm) {
        let form = match form {
            glimpse_common::minimise::MacForm::DevicePseudonyms => "device",
            glimpse_common::minimise::MacForm::Real => "collector",
        };
        self.pseudonymised_batches.get_or_create(&FormLabel { form }).inc();
    }

    /// Batches whose MAC addresses were pseudonymised: first those the
    /// device had already pseudonymised, then those that arrived with real
    /// addresses (sent before the device heard of the policy, or by an
    /// agent that does not pseudonymise) and got both layers here.
    pub fn pseudonymised_batches(&self) -> (u64, u64) {
        let get = |form| self.pseudonymised_batches.get_or_create(&FormLabel { form }).get();
        (get("device"), get("collector"))
    }

    /// Capture records dropped because their organisation had not given
    /// (or had withdrawn) capture consent when they arrived.
    pub fn captures_dropped_without_consent(&self) -> u64 {
        self.totals.captures_without_consent.load(Ordering::Relaxed)
    }

    /// Bytes past header boundaries that agents sent and the collector cut.
    pub fn payload_bytes_cut(&self) -> u64 {
        self.totals.payload_bytes_cut.load(Ordering::Relaxed)
    }

    /// Header bytes zeroed on arrival by strict scrubbing, summed over
    /// organisations.
    pub fn strict_scrubbed_bytes(&self) -> u64 {
        self.totals.strict_scrubbed_bytes.load(Ordering::Relaxed)
    }

    pub(crate) fn session_withdrawn(&self) {
        self.sessions_withdrawn.inc();
    }

    /// Live sessions closed because a reload withdrew their device's
    /// credential (revoked, unregistered or re-keyed).
    pub fn sessions_withdrawn(&self) -> u64 {
        self.sessions_withdrawn.get()
    }

    pub(crate) fn unsolicited_capture_status(&self) {
        self.unsolicited_capture_statuses.inc();
    }

    /// Capture statuses ignored because no such capture was requested from
    /// the device that sent them.
    pub fn unsolicited_capture_statuses(&self) -> u64 {
        self.unsolicited_capture_statuses.get()
    }

    /// How many connections were refused for `reason`.
    pub fn rejections(&self, reason: RejectReason) -> u64 {
        self.refusals.get_or_create(&ReasonLabel { reason: reason.as_str() }).get()
    }

    /// Every refusal count, by reason (reasons never seen are absent).
    pub fn all_rejections(&self) -> BTreeMap<RejectReason, u64> {
        RejectReason::ALL.into_iter().map(|r| (r, self.rejections(r))).filter(|(_, n)| *n > 0).collect()
    }

    /// Batches and records stored since start.
    pub fn stored_totals(&self) -> (u64, u64) {
        (self.batches_stored.get(), self.totals.records_stored.load(Ordering::Relaxed))
    }

    /// Records of `org` and `kind` stored since start.
    pub fn records_stored(&self, org: &OrgId, kind: DataKind) -> u64 {
        self.records_stored.get_or_create(&org_kind(org, kind)).get()
    }
}

/// (kind, records, encoded bytes) of each kind present, in kind order.
/// Records and encoded bytes per data kind, in kind order.
pub(crate) type Tally = Vec<(DataKind, u64, u64)>;

fn tally(records: &[Record]) -> Tally {
    tally_refs(&records.iter().collect::<Vec<_>>())
}

fn tally_refs(records: &[&Record]) -> Vec<(DataKind, u64, u64)> {
    let mut out: Vec<(DataKind, u64, u64)> = Vec::new();
    for record in records {
        let kind = record.kind();
        // The postcard size, as on the wire and in the store's blocks;
        // counted without allocating.
        let bytes = postcard::serialize_with_flavor(*record, postcard::ser_flavors::Size::default()).unwrap_or(0);
        match out.iter_mut().find(|(k, _, _)| *k == kind) {
            Some(entry) => {
                entry.1 += 1;
                entry.2 += bytes as u64;
            }
            None => out.push((kind, 1, bytes as u64)),
        }
    }
    out.sort_by_key(|(k, _, _)| *k);
    out
}
