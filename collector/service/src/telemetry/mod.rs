//! Telemetry: the service's one metrics registry, its Prometheus
//! (OpenMetrics) text rendering, liveness and readiness, and the systemd
//! notification protocol ([`notify`]).
//!
//! Metrics are registered where they are counted: the ingest counters in
//! [`crate::ingest::IngestMetrics`], the retention sweeps here (the sweeper
//! reports each one), and two read at scrape time from state kept elsewhere:
//! the audit entries the store's log appended, and the store size per
//! organisation and kind, which a task refreshes from the segment listing
//! every [`STORE_SIZE_EVERY`] rather than on every scrape.
//!
//! # What it deliberately does not do
//!
//! It serves no HTTP itself (the admin API routes `/metrics`, `/healthz`
//! and `/readyz` here), links no libsystemd, and keeps `glimpse-store` free
//! of metrics: the store only returns timings and counts.

pub mod notify;
mod readiness;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::{Registry, Unit};

use glimpse_store::retention::{RetentionError, SweepReport};
use glimpse_store::store::seam::Compacted;
use glimpse_store::store::{Store, StoreError};

use crate::ingest::IngestMetrics;

pub use readiness::{free_bytes, Readiness};

/// The content type of [`Telemetry::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// How often the store size per organisation and kind is recomputed.
pub const STORE_SIZE_EVERY: Duration = Duration::from_secs(60);

/// What the collector's parts report, and what operators read.
#[derive(Debug)]
pub struct Telemetry {
    registry: Registry,
    ingest: Arc<IngestMetrics>,
    alerts: Arc<crate::alerts::AlertMetrics>,
    sweeps: SweepMetrics,
    compactions: CompactionMetrics,
    store_size: Arc<StoreSize>,
    store: Arc<Store>,
    tasks: Arc<Tasks>,
    min_free_bytes: u64,
    stopping: AtomicBool,
}

impl Telemetry {
    /// A registry with every metric, for the service around `store`;
    /// `min_free_bytes` is the readiness floor of free disk space.
    pub fn new(store: Arc<Store>, min_free_bytes: u64) -> Self {
        let mut registry = Registry::with_prefix("glimpse");
        let ingest = Arc::new(IngestMetrics::new(&mut registry));
        let alerts = Arc::new(crate::alerts::AlertMetrics::new(&mut registry));
        let sweeps = SweepMetrics::new(&mut registry);
        let compactions = CompactionMetrics::new(&mut registry);
        let store_size = Arc::new(StoreSize::default());
        registry.register_collector(Box::new(store_size.clone()));
        registry.register_collector(Box::new(AuditAppended(store.clone())));
        let build = Family::<BuildLabels, Gauge>::default();
        build.get_or_create(&BuildLabels { version: env!("CARGO_PKG_VERSION") }).set(1);
        registry.register("build_info", "The collector's version (always 1)", build);
        Self {
            registry,
            ingest,
            alerts,
            sweeps,
            compactions,
            store_size,
            store,
            tasks: Arc::default(),
            min_free_bytes,
            stopping: AtomicBool::new(false),
        }
    }

    /// The ingest counters (the connection tasks count into them).
    pub fn ingest(&self) -> &Arc<IngestMetrics> {
        &self.ingest
    }

    /// The alerting's counters (the alert tasks count into them).
    pub fn alerts(&self) -> &Arc<crate::alerts::AlertMetrics> {
        &self.alerts
    }

    /// Every metric in the OpenMetrics text format ([`CONTENT_TYPE`]),
    /// which Prometheus scrapes natively.
    pub fn render(&self) -> String {
        let mut text = String::with_capacity(16 * 1024);
        // Writing to a String cannot fail; an encoder error would be a bug
        // in a metric's own encoding, and a scrape is better partial than absent.
        if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::error!("metrics encoding failed: {e}");
        }
        text
    }

    /// Counts a retention sweep's outcome and what it deleted.
    pub fn sweep_done(&self, result: &Result<SweepReport, RetentionError>) {
        self.sweeps.observe(result);
    }

    /// Counts a compaction run's outcome: what it merged, or that it
    /// failed (some kinds failed: `failed` kinds).
    pub fn compaction_done(&self, result: &Result<(Compacted, u64), StoreError>) {
        self.compactions.observe(result);
    }

    /// Recomputes the store size per organisation and kind from the
    /// segment listing. Blocking I/O: call it from a blocking thread.
    pub fn refresh_store_size(&self) {
        match self.store.stats() {
            Ok(stats) => {
                let rows = stats
                    .kinds
                    .into_iter()
                    .map(|k| StoreRow {
                        org: k.org.as_str().to_owned(),
                        kind: k.kind.as_str(),
                        segments: k.segments,
                        bytes: k.bytes,
                    })
                    .collect();
                *self.store_size.rows.lock().unwrap_or_else(|p| p.into_inner()) = Some(rows);
            }
            Err(e) => tracing::warn!("cannot compute the store size for metrics: {e}"),
        }
    }

    /// Declares a part that must run for the collector to be alive and
    /// ready (a listener, the sweeper); it counts as down until
    /// [`Telemetry::running`] is called for it.
    pub fn expect(&self, part: &'static str) {
        self.tasks.lock().entry(part).or_insert(false);
    }

    /// Marks `part` running until the returned guard is dropped (its task
    /// ended, normally or by panic).
    pub fn running(&self, part: &'static str) -> Running {
        self.tasks.lock().insert(part, true);
        Running { part, tasks: self.tasks.clone() }
    }

    /// Marks the collector as shutting down: from now on it is not ready.
    pub fn stopping(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    /// Whether every expected part is running (`/healthz`, and the
    /// condition for each systemd watchdog ping). Problems of the
    /// environment, like a full disk, do not count: a restart would not
    /// cure them.
    pub fn liveness(&self) -> Readiness {
        let problems = self
            .tasks
            .lock()
            .iter()
            .filter(|(_, up)| !**up)
            .map(|(part, _)| format!("{part} is not running"))
            .collect();
        Readiness::from_problems(problems)
    }

    /// Whether the collector can take data now (`/readyz`): every expected
    /// part running, the control database answering, the data directory
    /// writable and its file system above the free-space floor. Not ready
    /// while shutting down. Blocking (a database read and a statvfs).
    pub fn readiness(&self) -> Readiness {
        let mut problems = self.liveness().problems;
        if self.stopping.load(Ordering::Relaxed) {
            problems.push("the collector is shutting down".to_owned());
        }
        let control = self.store.control();
        if let Err(e) = control.ping().and_then(|()| control.audit_head()) {
            problems.push(format!("the control database ({}) does not answer: {e}", control.describe()));
        }
        let segments = self.store.segments();
        if let Err(e) = segments.check() {
            problems.push(format!("the segment store ({}) cannot take data now: {e}", segments.describe()));
        }
        let segments: PathBuf = self.store.data_dir().join(glimpse_store::store::ORGS_DIR);
        problems.extend(readiness::disk_problems(&segments, self.min_free_bytes));
        Readiness::from_problems(problems)
    }
}

/// A part of the collector counted as running while this lives.
#[derive(Debug)]
pub struct Running {
    part: &'static str,
    tasks: Arc<Tasks>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.tasks.lock().insert(self.part, false);
    }
}

#[derive(Debug, Default)]
struct Tasks(Mutex<BTreeMap<&'static str, bool>>);

impl Tasks {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, bool>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

/// What the retention sweeper did.
#[derive(Debug)]
struct SweepMetrics {
    sweeps: Family<OutcomeLabel, Counter>,
    segments_deleted: Counter,
    bytes_deleted: Counter,
}

impl SweepMetrics {
    fn new(registry: &mut Registry) -> Self {
        let m =
            Self { sweeps: Family::default(), segments_deleted: Counter::default(), bytes_deleted: Counter::default() };
        for outcome in ["done", "skipped", "failed"] {
            let _ = m.sweeps.get_or_create(&OutcomeLabel { outcome });
        }
        registry.register(
            "retention_sweeps",
            "Retention sweeps, by outcome (done; skipped: the clock was not trusted; failed)",
            m.sweeps.clone(),
        );
        registry.register(
            "retention_segments_deleted",
            "Segment files the retention sweeps deleted",
            m.segments_deleted.clone(),
        );
        registry.register_with_unit(
            "retention_deleted",
            "Bytes the retention sweeps freed",
            Unit::Bytes,
            m.bytes_deleted.clone(),
        );
        m
    }

    fn observe(&self, result: &Result<SweepReport, RetentionError>) {
        let outcome = match result {
            Ok(report) => {
                self.segments_deleted.inc_by(report.segments_deleted);
                self.bytes_deleted.inc_by(report.bytes_freed);
                "done"
            }
            Err(RetentionError::ClockBehind { .. } | RetentionError::ClockJump { .. }) => "skipped",
            Err(_) => "failed",
        };
        self.sweeps.get_or_create(&OutcomeLabel { outcome }).inc();
    }
}

/// What the compaction runs did (segments in an object store).
#[derive(Debug)]
struct CompactionMetrics {
    runs: Family<OutcomeLabel, Counter>,
    merges: Counter,
    merged: Counter,
    bytes: Counter,
}

impl CompactionMetrics {
    fn new(registry: &mut Registry) -> Self {
        let m = Self {
            runs: Family::default(),
            merges: Counter::default(),
            merged: Counter::default(),
            bytes: Counter::default(),
        };
        for outcome in ["done", "failed"] {
            let _ = m.runs.get_or_create(&OutcomeLabel { outcome });
        }
        registry.register(
            "compaction_runs",
            "Compaction runs, by outcome (failed: one kind or more could not be compacted; retried next run)",
            m.runs.clone(),
        );
        registry.register("compactions", "Merged objects written by compaction", m.merges.clone());
        registry.register("compaction_objects_merged", "Small objects that compaction merged", m.merged.clone());
        registry.register_with_unit(
            "compaction_written",
            "Bytes of the merged objects compaction wrote",
            Unit::Bytes,
            m.bytes.clone(),
        );
        m
    }

    fn observe(&self, result: &Result<(Compacted, u64), StoreError>) {
        let outcome = match result {
            Ok((done, failures)) => {
                self.merges.inc_by(done.merges);
                self.merged.inc_by(done.merged);
                self.bytes.inc_by(done.bytes);
                if *failures == 0 {
                    "done"
                } else {
                    "failed"
                }
            }
            Err(_) => "failed",
        };
        self.runs.get_or_create(&OutcomeLabel { outcome }).inc();
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OrgKindLabels {
    org: String,
    kind: &'static str,
}

#[derive(Debug, Clone)]
struct StoreRow {
    org: String,
    kind: &'static str,
    segments: u64,
    bytes: u64,
}

/// The last store size computed; `None` until the first listing.
#[derive(Debug, Default)]
struct StoreSize {
    rows: Mutex<Option<Vec<StoreRow>>>,
}

impl Collector for StoreSize {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let rows = self.rows.lock().unwrap_or_else(|p| p.into_inner()).clone().unwrap_or_default();
        let help = "Bytes of segment files per organisation and kind (recomputed each minute)";
        let mut family =
            encoder.encode_descriptor("store", help, Some(&Unit::Bytes), ConstGauge::new(0i64).metric_type())?;
        for row in &rows {
            let labels = OrgKindLabels { org: row.org.clone(), kind: row.kind };
            ConstGauge::new(i64::try_from(row.bytes).unwrap_or(i64::MAX)).encode(family.encode_family(&labels)?)?;
        }
        let help = "Segment files per organisation and kind (recomputed each minute)";
        let mut family =
            encoder.encode_descriptor("store_segments", help, None, ConstGauge::new(0i64).metric_type())?;
        for row in &rows {
            let labels = OrgKindLabels { org: row.org.clone(), kind: row.kind };
            ConstGauge::new(i64::try_from(row.segments).unwrap_or(i64::MAX)).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// The audit entries the store's log appended, read at scrape time.
#[derive(Debug)]
struct AuditAppended(Arc<Store>);

impl Collector for AuditAppended {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let counter = ConstCounter::new(self.0.audit().appended());
        let help = "Entries appended to the audit log since start";
        counter.encode(encoder.encode_descriptor("audit_entries_appended", help, None, counter.metric_type())?)
    }
}

#[cfg(test)]
mod tests;
