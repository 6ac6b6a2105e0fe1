//! Deduplication and rate limiting, so that one flapping condition (a
//! device that connects and drops every second, a disk that comes and
//! goes) cannot flood a receiver. Sans-IO: the time comes in as `now`.
//!
//! Two rules, applied in order:
//!
//! 1. **Per condition**: an alert whose [`Alert::key`] was let through
//!    less than `repeat_after` ago is suppressed. The table of keys is
//!    bounded; when full, the key let through longest ago is forgotten
//!    (it may then alert again early, which is the safe direction).
//! 2. **Overall**: at most `max_per_minute` alerts in any rolling minute
//!    (a token bucket refilled continuously). What is dropped here is
//!    counted and reported in the next alert let through
//!    (`suppressed_before`), so a receiver knows it missed some.
//!
//! [`Alert::key`]: super::model::Alert::key

use std::collections::HashMap;

use glimpse_common::clock::UnixMillis;

/// Most distinct conditions remembered at once.
pub const MAX_KEYS: usize = 4096;

/// What the limiter decided about one alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Send it; `suppressed_before` alerts were dropped by the overall
    /// limit since the last one sent.
    Send {
        /// Dropped by the overall limit since the last alert sent.
        suppressed_before: u64,
    },
    /// The same condition alerted less than `repeat_after` ago.
    Repeat,
    /// Over the overall rate limit.
    RateLimited,
}

/// The limiter's state.
#[derive(Debug)]
pub struct Limiter {
    repeat_after_ms: i64,
    max_per_minute: u32,
    /// When each condition was last let through.
    last_sent: HashMap<String, UnixMillis>,
    /// Tokens in thousandths, so that refills are exact in integers.
    tokens_milli: u64,
    refilled_at: Option<UnixMillis>,
    dropped: u64,
}

impl Limiter {
    /// A limiter that lets each condition through once per `repeat_after_ms`
    /// and at most `max_per_minute` alerts a minute overall (at least 1).
    pub fn new(repeat_after_ms: i64, max_per_minute: u32) -> Self {
        let max_per_minute = max_per_minute.max(1);
        Limiter {
            repeat_after_ms: repeat_after_ms.max(0),
            max_per_minute,
            last_sent: HashMap::new(),
            tokens_milli: u64::from(max_per_minute) * 1000,
            refilled_at: None,
            dropped: 0,
        }
    }

    /// Decides about an alert of condition `key` raised at `now`.
    pub fn decide(&mut self, key: &str, now: UnixMillis) -> Decision {
        if let Some(&last) = self.last_sent.get(key) {
            // A clock stepped back counts as "just sent": never a burst.
            if now.saturating_sub(last) < self.repeat_after_ms {
                return Decision::Repeat;
            }
        }
        self.refill(now);
        if self.tokens_milli < 1000 {
            self.dropped = self.dropped.saturating_add(1);
            return Decision::RateLimited;
        }
        self.tokens_milli -= 1000;
        if self.last_sent.len() >= MAX_KEYS && !self.last_sent.contains_key(key) {
            self.forget_oldest();
        }
        self.last_sent.insert(key.to_owned(), now);
        Decision::Send { suppressed_before: std::mem::take(&mut self.dropped) }
    }

    /// Forgets condition `key`, so that it alerts again at once when it
    /// recurs (it was resolved: the device came back, the disk answers).
    pub fn resolved(&mut self, key: &str) {
        self.last_sent.remove(key);
    }

    /// New limits (a reload), keeping what was sent when: conditions that
    /// alerted before the reload do not all alert again at once.
    pub fn set_limits(&mut self, repeat_after_ms: i64, max_per_minute: u32) {
        let max_per_minute = max_per_minute.max(1);
        self.repeat_after_ms = repeat_after_ms.max(0);
        let capacity = u64::from(max_per_minute) * 1000;
        // A limiter that never decided starts full, as a new one would.
        self.tokens_milli = if self.refilled_at.is_none() { capacity } else { self.tokens_milli.min(capacity) };
        self.max_per_minute = max_per_minute;
    }

    /// Conditions remembered now.
    pub fn tracked(&self) -> usize {
        self.last_sent.len()
    }

    fn refill(&mut self, now: UnixMillis) {
        let capacity = u64::from(self.max_per_minute) * 1000;
        if let Some(at) = self.refilled_at {
            let elapsed = u64::try_from(now.saturating_sub(at)).unwrap_or(0);
            // max_per_minute tokens per 60,000 ms, in thousandths of a token.
            let add = elapsed.saturating_mul(u64::from(self.max_per_minute)) / 60;
            self.tokens_milli = self.tokens_milli.saturating_add(add).min(capacity);
        }
        if self.refilled_at.is_none_or(|at| now > at) {
            self.refilled_at = Some(now);
        }
    }

    fn forget_oldest(&mut self) {
        if let Some(oldest) = self.last_sent.iter().min_by_key(|(_, &at)| at).map(|(k, _)| k.clone()) {
            self.last_sent.remove(&oldest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flapping_condition_alerts_once_per_interval() {
        let mut l = Limiter::new(60_000, 100);
        assert_eq!(l.decide("k", 0), Decision::Send { suppressed_before: 0 });
        for t in (1_000..60_000).step_by(1_000) {
            assert_eq!(l.decide("k", t), Decision::Repeat, "at {t}");
        }
        assert_eq!(l.decide("k", 60_000), Decision::Send { suppressed_before: 0 });
        // Another condition is not held back by the first.
        assert_eq!(l.decide("other", 60_001), Decision::Send { suppressed_before: 0 });
        // A clock step back does not open the gate.
        assert_eq!(l.decide("k", -5_000_000), Decision::Repeat);
    }

    #[test]
    fn resolved_conditions_alert_again_at_once() {
        let mut l = Limiter::new(3_600_000, 100);
        assert!(matches!(l.decide("k", 0), Decision::Send { .. }));
        l.resolved("k");
        assert!(matches!(l.decide("k", 1), Decision::Send { .. }));
    }

    #[test]
    fn the_overall_limit_drops_and_counts_then_refills() {
        let mut l = Limiter::new(0, 3);
        for i in 0..3 {
            assert!(matches!(l.decide(&format!("k{i}"), 0), Decision::Send { .. }));
        }
        assert_eq!(l.decide("k3", 0), Decision::RateLimited);
        assert_eq!(l.decide("k4", 10), Decision::RateLimited);
        // One token back after a third of a minute.
        assert_eq!(l.decide("k5", 20_010), Decision::Send { suppressed_before: 2 });
        assert_eq!(l.decide("k6", 20_011), Decision::RateLimited);
        // Never more than the bucket holds, however long it rested.
        for i in 0..3 {
            assert!(matches!(l.decide(&format!("later{i}"), 100_000_000), Decision::Send { .. }));
        }
        assert_eq!(l.decide("later3", 100_000_000), Decision::RateLimited);
    }

    #[test]
    fn new_limits_keep_what_was_sent() {
        let mut fresh = Limiter::new(0, 1);
        fresh.set_limits(0, 5);
        for i in 0..5 {
            assert!(matches!(fresh.decide(&format!("k{i}"), 0), Decision::Send { .. }), "a fresh bucket is full");
        }
        let mut l = Limiter::new(60_000, 100);
        assert!(matches!(l.decide("k", 0), Decision::Send { .. }));
        l.set_limits(120_000, 1);
        assert_eq!(l.decide("k", 90_000), Decision::Repeat, "the longer interval applies, the send is remembered");
        assert!(matches!(l.decide("j", 90_000), Decision::Send { .. }));
        assert_eq!(l.decide("i", 90_000), Decision::RateLimited, "the smaller bucket applies at once");
    }

    #[test]
    fn the_table_of_conditions_is_bounded() {
        let mut l = Limiter::new(i64::MAX, u32::MAX);
        for i in 0..(MAX_KEYS + 10) {
            let at = i64::try_from(i).unwrap();
            assert!(matches!(l.decide(&format!("k{i}"), at), Decision::Send { .. }));
        }
        assert_eq!(l.tracked(), MAX_KEYS);
        // The oldest were forgotten, the newest are still held back.
        assert!(matches!(l.decide("k0", 1_000_000), Decision::Send { .. }));
        assert_eq!(l.decide(&format!("k{}", MAX_KEYS + 9), 1_000_000), Decision::Repeat);
    }
}
