//! Audit entries for events that anyone can repeat at will (refused admin
//! connections before a certificate is verified, capture records dropped
//! for want of consent): the first of each key per interval is audited on
//! its own, the rest are summed into one entry when the interval closes.
//! The counting itself is the sans-IO
//! [`glimpse_store::audit::aggregate::RepeatAggregator`]; this module stamps
//! events with the store's clock and writes the entries.

use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use glimpse_common::identity::OrgId;
use glimpse_store::audit::aggregate::{RepeatAggregator, Seen, Summary};
use glimpse_store::audit::AuditOutcome;
use glimpse_store::store::Store;

/// How long an interval of repeated events lasts: a key costs the audit log
/// at most two entries per interval.
pub(crate) const REPEAT_INTERVAL: Duration = Duration::from_secs(60);

/// Keys tracked one by one per aggregator; events of further keys in the
/// same interval are summed into one "other" entry.
pub(crate) const REPEAT_MAX_KEYS: usize = 1024;

/// What a summary entry says: actor, organisation and detail.
pub(crate) type Describe<K> = fn(&Summary<K>) -> (String, Option<OrgId>, String);

/// One kind of repeatable event and its aggregator.
pub(crate) struct RepeatAudit<K> {
    store: Arc<Store>,
    action: &'static str,
    describe: Describe<K>,
    counts: Mutex<RepeatAggregator<K>>,
}

impl<K> std::fmt::Debug for RepeatAudit<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RepeatAudit").field("action", &self.action).finish_non_exhaustive()
    }
}

/// What the periodic flusher and shutdown call, whatever the key type.
pub(crate) trait Flush: Send + Sync + std::fmt::Debug {
    /// Writes the summaries of intervals that have closed. Blocking I/O.
    fn flush_due(&self);
    /// Writes every summary, closed or not (shutdown). Blocking I/O.
    fn flush_all(&self);
}

impl<K: Eq + Hash + Clone + Send> RepeatAudit<K> {
    /// Summaries are audited as `action`, described by `describe`.
    pub(crate) fn new(store: Arc<Store>, action: &'static str, describe: Describe<K>) -> Self {
        let interval = i64::try_from(REPEAT_INTERVAL.as_millis()).unwrap_or(i64::MAX);
        Self { store, action, describe, counts: Mutex::new(RepeatAggregator::new(interval, REPEAT_MAX_KEYS)) }
    }

    /// Counts one event; [`Seen::Audit`] means the caller audits this one
    /// itself (and may log it at WARN), [`Seen::Counted`] that a summary
    /// will.
    pub(crate) fn observe(&self, key: &K, amount: u64) -> Seen {
        let now = self.store.clock().now_millis();
        self.lock().observe(key, amount, now)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RepeatAggregator<K>> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self, summaries: Vec<Summary<K>>) {
        for summary in summaries {
            let (actor, org, detail) = (self.describe)(&summary);
            tracing::info!(action = self.action, %actor, events = summary.events, "repeated events audited as one entry");
            self.store.audit_event(&actor, self.action, org.as_ref(), AuditOutcome::Refused, &detail);
        }
    }
}

impl<K: Eq + Hash + Clone + Send> Flush for RepeatAudit<K> {
    fn flush_due(&self) {
        let now = self.store.clock().now_millis();
        let due = self.lock().due(now);
        self.write(due);
    }

    fn flush_all(&self) {
        let all = self.lock().drain();
        self.write(all);
    }
}

/// "between <first> and <last>" in RFC 3339, for summary details.
pub(crate) fn span(summary: &Summary<impl Sized>) -> String {
    let at = |ms: i64| {
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
            .ok()
            .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
            .unwrap_or_else(|| ms.to_string())
    };
    format!("between {} and {}", at(summary.first_ms), at(summary.last_ms))
}
