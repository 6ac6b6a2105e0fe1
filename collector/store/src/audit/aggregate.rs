//! Aggregating repeated audit events: the first event of a key (a source
//! address, a device) is audited on its own, the ones that follow within an
//! interval are counted and audited together as one summary entry when the
//! interval closes.
//!
//! Without this, anyone who can reach a port grows the audit log: every
//! bare TCP connect to the admin port, and every batch an agent sends with
//! capture records its organisation has not consented to, would be one
//! fsynced, HMAC-chained entry. With it, a key costs at most two entries
//! per interval, and the table of keys is bounded: past
//! [`RepeatAggregator::max_keys`] keys, events of new keys are counted in
//! one shared "other" tally instead, so a flood from many addresses costs
//! at most `max_keys + 1` summaries per interval.
//!
//! Sans-IO: the caller passes the time (from the store's injected clock)
//! and writes the entries; nothing here reads a clock or touches a file.

use std::collections::HashMap;
use std::hash::Hash;

/// What to do with one observed event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// The first of its key in this interval: audit it on its own now.
    Audit,
    /// Counted; it will be part of a [`Summary`].
    Counted,
}

/// Events counted for one key (or, with `key: None`, for keys the table had
/// no room for) over one interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary<K> {
    /// The key; `None` for the shared tally of keys beyond the table's bound.
    pub key: Option<K>,
    /// Events counted (not including the one audited on its own).
    pub events: u64,
    /// The sum of the amounts passed with those events (records dropped, ...).
    pub amount: u64,
    /// When the first counted event happened, Unix milliseconds.
    pub first_ms: i64,
    /// When the last counted event happened, Unix milliseconds.
    pub last_ms: i64,
    /// For the shared tally: how many events came from keys not seen
    /// before in it (an upper bound on distinct keys, 0 for a named key).
    pub other_keys: u64,
}

#[derive(Debug, Clone)]
struct Window {
    opened_ms: i64,
    events: u64,
    amount: u64,
    first_ms: i64,
    last_ms: i64,
    other_keys: u64,
}

impl Window {
    fn new(opened_ms: i64) -> Self {
        Self { opened_ms, events: 0, amount: 0, first_ms: opened_ms, last_ms: opened_ms, other_keys: 0 }
    }

    fn count(&mut self, amount: u64, now_ms: i64) {
        if self.events == 0 {
            self.first_ms = now_ms;
        }
        self.events = self.events.saturating_add(1);
        self.amount = self.amount.saturating_add(amount);
        self.last_ms = self.last_ms.max(now_ms);
    }

    fn summary<K>(self, key: Option<K>) -> Option<Summary<K>> {
        (self.events > 0).then_some(Summary {
            key,
            events: self.events,
            amount: self.amount,
            first_ms: self.first_ms,
            last_ms: self.last_ms,
            other_keys: self.other_keys,
        })
    }
}

/// Counts repeated events per key over fixed intervals (see the module
/// header).
#[derive(Debug)]
pub struct RepeatAggregator<K> {
    interval_ms: i64,
    max_keys: usize,
    windows: HashMap<K, Window>,
    /// Events of keys that found the table full.
    other: Option<Window>,
    /// Closed windows not yet taken by [`RepeatAggregator::due`].
    ready: Vec<Summary<K>>,
}

impl<K: Eq + Hash + Clone> RepeatAggregator<K> {
    /// An aggregator whose intervals last `interval_ms` (at least 1) and
    /// whose table holds at most `max_keys` keys (at least 1).
    pub fn new(interval_ms: i64, max_keys: usize) -> Self {
        Self {
            interval_ms: interval_ms.max(1),
            max_keys: max_keys.max(1),
            windows: HashMap::new(),
            other: None,
            ready: Vec::new(),
        }
    }

    /// The bound on keys tracked one by one.
    pub fn max_keys(&self) -> usize {
        self.max_keys
    }

    /// Keys tracked one by one right now.
    pub fn tracked(&self) -> usize {
        self.windows.len()
    }

    /// Records one event of `key` carrying `amount` (records, bytes; 1 when
    /// there is nothing to add up) at `now_ms`.
    pub fn observe(&mut self, key: &K, amount: u64, now_ms: i64) -> Seen {
        self.close_expired(now_ms);
        if let Some(window) = self.windows.get_mut(key) {
            window.count(amount, now_ms);
            return Seen::Counted;
        }
        if self.windows.len() < self.max_keys {
            self.windows.insert(key.clone(), Window::new(now_ms));
            return Seen::Audit;
        }
        let other = self.other.get_or_insert_with(|| Window::new(now_ms));
        other.count(amount, now_ms);
        other.other_keys = other.other_keys.saturating_add(1);
        Seen::Counted
    }

    /// Summaries of every interval that closed by `now_ms`, in no
    /// particular order; windows that counted nothing give none.
    pub fn due(&mut self, now_ms: i64) -> Vec<Summary<K>> {
        self.close_expired(now_ms);
        std::mem::take(&mut self.ready)
    }

    /// Closes every window, expired or not (shutdown), and returns the
    /// summaries.
    pub fn drain(&mut self) -> Vec<Summary<K>> {
        let mut out = std::mem::take(&mut self.ready);
        out.extend(self.windows.drain().filter_map(|(key, window)| window.summary(Some(key))));
        out.extend(self.other.take().and_then(|w| w.summary(None)));
        out
    }

    fn close_expired(&mut self, now_ms: i64) {
        let interval = self.interval_ms;
        let expired = |w: &Window| now_ms.saturating_sub(w.opened_ms) >= interval;
        if self.windows.values().any(expired) {
            let keys: Vec<K> = self.windows.iter().filter(|(_, w)| expired(w)).map(|(k, _)| k.clone()).collect();
            for key in keys {
                if let Some(window) = self.windows.remove(&key) {
                    self.ready.extend(window.summary(Some(key)));
                }
            }
        }
        if self.other.as_ref().is_some_and(expired) {
            self.ready.extend(self.other.take().and_then(|w| w.summary(None)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: i64 = 60_000;

    #[test]
    fn the_first_is_audited_the_rest_summarised_when_the_interval_closes() {
        let mut agg = RepeatAggregator::new(MINUTE, 16);
        assert_eq!(agg.observe(&"a", 1, 1_000), Seen::Audit);
        for t in 0..1999 {
            assert_eq!(agg.observe(&"a", 1, 1_001 + t), Seen::Counted);
        }
        assert!(agg.due(MINUTE).is_empty(), "the interval is still open");
        let due = agg.due(1_000 + MINUTE);
        assert_eq!(
            due,
            vec![Summary {
                key: Some("a"),
                events: 1999,
                amount: 1999,
                first_ms: 1_001,
                last_ms: 2_999,
                other_keys: 0
            }]
        );
        assert!(agg.due(10 * MINUTE).is_empty(), "summarised once");
        assert_eq!(agg.observe(&"a", 1, 10 * MINUTE), Seen::Audit, "a new interval starts with an audited event");
    }

    #[test]
    fn a_lone_event_gives_no_summary() {
        let mut agg = RepeatAggregator::new(MINUTE, 16);
        assert_eq!(agg.observe(&"a", 5, 0), Seen::Audit);
        assert!(agg.due(2 * MINUTE).is_empty());
        assert_eq!(agg.tracked(), 0, "closed windows are forgotten");
        assert!(agg.drain().is_empty());
    }

    #[test]
    fn keys_are_counted_apart_and_amounts_add_up() {
        let mut agg = RepeatAggregator::new(MINUTE, 16);
        agg.observe(&"acme/ap-1", 3, 0);
        agg.observe(&"acme/ap-1", 4, 10);
        agg.observe(&"acme/ap-1", 5, 20);
        agg.observe(&"globex/ap-1", 7, 30);
        agg.observe(&"globex/ap-1", 8, 40);
        let mut due = agg.due(MINUTE + 30);
        due.sort_by_key(|s| s.key);
        assert_eq!(due.len(), 2);
        assert_eq!((due[0].key, due[0].events, due[0].amount), (Some("acme/ap-1"), 2, 9));
        assert_eq!((due[1].key, due[1].events, due[1].amount), (Some("globex/ap-1"), 1, 8));
    }

    #[test]
    fn the_table_is_bounded_and_the_overflow_is_counted_together() {
        let mut agg = RepeatAggregator::new(MINUTE, 2);
        assert_eq!(agg.observe(&1u32, 1, 0), Seen::Audit);
        assert_eq!(agg.observe(&2u32, 1, 0), Seen::Audit);
        for key in 3..1003u32 {
            assert_eq!(agg.observe(&key, 1, 5), Seen::Counted, "no room: counted, not audited");
        }
        assert_eq!(agg.tracked(), 2);
        let due = agg.due(MINUTE + 5);
        assert_eq!(
            due,
            vec![Summary { key: None, events: 1000, amount: 1000, first_ms: 5, last_ms: 5, other_keys: 1000 }]
        );
        assert_eq!(agg.observe(&7u32, 1, MINUTE + 5), Seen::Audit, "room again once the interval closes");
    }

    #[test]
    fn drain_closes_everything_at_once() {
        let mut agg = RepeatAggregator::new(MINUTE, 1);
        agg.observe(&"a", 1, 0);
        agg.observe(&"a", 1, 1);
        agg.observe(&"b", 1, 2);
        let mut drained = agg.drain();
        drained.sort_by_key(|s| s.key);
        assert_eq!(drained.len(), 2);
        assert_eq!((drained[0].key, drained[0].events), (None, 1));
        assert_eq!((drained[1].key, drained[1].events), (Some("a"), 1));
        assert!(agg.drain().is_empty());
    }

    #[test]
    fn a_clock_going_backwards_does_not_panic_or_close_early() {
        let mut agg = RepeatAggregator::new(MINUTE, 4);
        agg.observe(&"a", 1, MINUTE);
        assert_eq!(agg.observe(&"a", 1, 0), Seen::Counted);
        assert!(agg.due(i64::MIN).is_empty());
        assert_eq!(agg.due(i64::MAX).len(), 1);
    }
}
