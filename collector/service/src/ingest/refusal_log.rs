//! Rate limits for refusal log lines, so that a flood of refused
//! connections cannot flood the log.
//!
//! A plain type (time comes in as `now`): per source address and reason,
//! the first [`RefusalLog::burst`] refusals of each interval are logged one
//! line each; the rest are counted, and a summary line with the count is
//! due when the interval ends. Memory is bounded: at most `capacity`
//! sources are tracked one by one, and refusals from any further source
//! share one "other sources" entry per reason.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// What to do with one refusal's log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Log it.
    Log,
    /// Count it towards the interval's summary instead.
    Suppress,
}

/// A summary of lines held back during one interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Summary {
    /// The source, or `None` for the sources beyond the table's capacity.
    pub(crate) source: Option<IpAddr>,
    /// The refusal reason.
    pub(crate) reason: &'static str,
    /// Lines not logged.
    pub(crate) suppressed: u64,
}

#[derive(Debug)]
struct Window {
    started: Instant,
    logged: u32,
    suppressed: u64,
}

/// Per-source, per-reason limits on refusal lines.
#[derive(Debug)]
pub(crate) struct RefusalLog {
    interval: Duration,
    burst: u32,
    capacity: usize,
    windows: HashMap<(Option<IpAddr>, &'static str), Window>,
    suppressed_total: u64,
}

impl RefusalLog {
    /// Lines logged per source and reason in each interval before the rest
    /// are only counted.
    pub(crate) fn burst(&self) -> u32 {
        self.burst
    }

    /// `burst` lines per `interval` for each of at most `capacity` sources.
    pub(crate) fn new(interval: Duration, burst: u32, capacity: usize) -> Self {
        Self { interval, burst: burst.max(1), capacity, windows: HashMap::new(), suppressed_total: 0 }
    }

    /// Whether to log a refusal of `source` for `reason` at `now`.
    pub(crate) fn check(&mut self, source: IpAddr, reason: &'static str, now: Instant) -> Verdict {
        let tracked = self.windows.contains_key(&(Some(source), reason));
        // Only sources with a window count towards capacity; the "other
        // sources" entries are at most one per reason.
        let key = if tracked || self.windows.keys().filter(|(s, _)| s.is_some()).count() < self.capacity {
            (Some(source), reason)
        } else {
            (None, reason)
        };
        let window = self.windows.entry(key).or_insert(Window { started: now, logged: 0, suppressed: 0 });
        if window.logged < self.burst {
            window.logged += 1;
            Verdict::Log
        } else {
            window.suppressed += 1;
            self.suppressed_total += 1;
            Verdict::Suppress
        }
    }

    /// Ends every interval that is over at `now`: the summaries of lines
    /// held back, and the windows freed.
    pub(crate) fn flush(&mut self, now: Instant) -> Vec<Summary> {
        let interval = self.interval;
        let mut summaries = Vec::new();
        self.windows.retain(|(source, reason), window| {
            if now.saturating_duration_since(window.started) < interval {
                return true;
            }
            if window.suppressed > 0 {
                summaries.push(Summary { source: *source, reason, suppressed: window.suppressed });
            }
            false
        });
        summaries.sort_by_key(|s| (s.source, s.reason));
        summaries
    }

    /// Lines held back since start.
    pub(crate) fn suppressed_total(&self) -> u64 {
        self.suppressed_total
    }

    /// The interval summaries cover.
    pub(crate) fn interval(&self) -> Duration {
        self.interval
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([198, 51, 100, n])
    }

    #[test]
    fn a_burst_per_source_and_reason_then_a_summary_with_the_count() {
        let t0 = Instant::now();
        let mut log = RefusalLog::new(Duration::from_secs(10), 3, 100);
        let verdicts: Vec<_> = (0..1000).map(|_| log.check(ip(1), "overload", t0)).collect();
        assert_eq!(verdicts.iter().filter(|v| **v == Verdict::Log).count(), 3);
        // Another reason and another source have their own allowance.
        assert_eq!(log.check(ip(1), "unknown-device", t0), Verdict::Log);
        assert_eq!(log.check(ip(2), "overload", t0), Verdict::Log);
        assert!(log.flush(t0 + Duration::from_secs(9)).is_empty(), "nothing is due before the interval ends");
        let due = log.flush(t0 + Duration::from_secs(10));
        assert_eq!(due, vec![Summary { source: Some(ip(1)), reason: "overload", suppressed: 997 }]);
        assert_eq!(log.suppressed_total(), 997);
        // A new interval starts afresh, and quiet sources are forgotten.
        assert!(log.windows.is_empty());
        assert_eq!(log.check(ip(1), "overload", t0 + Duration::from_secs(11)), Verdict::Log);
    }

    #[test]
    fn memory_is_bounded_by_capacity_with_one_shared_entry_beyond() {
        let t0 = Instant::now();
        let mut log = RefusalLog::new(Duration::from_secs(10), 1, 4);
        let mut logged = 0;
        for n in 0..=255u8 {
            for _ in 0..3 {
                if log.check(ip(n), "overload", t0) == Verdict::Log {
                    logged += 1;
                }
            }
        }
        assert!(log.windows.len() <= 5, "{}", log.windows.len());
        assert_eq!(logged, 5, "one line for each of 4 tracked sources and one for all others");
        let due = log.flush(t0 + Duration::from_secs(10));
        let others = due.iter().find(|s| s.source.is_none()).expect("a summary for the other sources");
        assert_eq!(others.suppressed, 252 * 3 - 1);
    }
}
