//! Reconnect pacing.

use std::time::Duration;

/// A jittered exponential backoff strategy.
///
/// The window doubles from `initial` up to `max`; each delay is drawn
/// uniformly from the whole window above a floor of `initial / 2` ("full
/// jitter"), so that a fleet of access points that lost the collector at the
/// same moment does not reconnect in lockstep, while no delay is ever short
/// enough to hammer a collector that is down.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// A backoff starting at `initial` and never exceeding `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self { initial, max: max.max(initial), attempt: 0 }
    }

    /// The delay before the next attempt, in `[initial / 2, window]`;
    /// `jitter` is a uniform sample in [0, 1).
    pub fn next_delay(&mut self, jitter: f64) -> Duration {
        let doubled = self.initial.saturating_mul(1u32 << self.attempt.min(20));
        let window = doubled.min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let floor = self.initial / 2;
        // NaN clamps to NaN: taken as 0.
        let jitter = if jitter.is_nan() { 0.0 } else { jitter.clamp(0.0, 1.0) };
        floor + window.saturating_sub(floor).mul_f64(jitter)
    }

    /// Forgets past failures after a successful connection.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn doubles_then_caps_then_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let delays: Vec<_> = (0..6).map(|_| b.next_delay(0.999_999).as_millis()).collect();
        assert_eq!(delays, vec![99, 199, 399, 799, 999, 999]);
        b.reset();
        assert_eq!(b.next_delay(0.0), Duration::from_millis(50));
    }

    #[test]
    fn full_jitter_spans_the_whole_window_once_it_has_grown() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        for _ in 0..10 {
            b.next_delay(0.5);
        }
        // The window is the 10 s cap; the draw covers it from the floor up.
        assert_eq!(b.next_delay(0.0), Duration::from_millis(50));
        assert_eq!(b.next_delay(0.5), Duration::from_millis(5025));
        assert!(b.next_delay(f64::NAN) == Duration::from_millis(50));
    }

    proptest! {
        #[test]
        fn delay_is_always_within_bounds(attempts in 0usize..100, jitter in 0.0f64..1.0) {
            let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(60));
            for _ in 0..attempts { b.next_delay(jitter); }
            let d = b.next_delay(jitter);
            prop_assert!(d >= Duration::from_millis(250) && d <= Duration::from_secs(60));
        }
    }
}
