//! Reconnect pacing.

use std::time::Duration;

/// A jittered exponential backoff strategy.
///
/// Delays double from `initial` up to `max`; each is then scaled by a
/// random factor in [0.5, 1.0) so that a fleet of access points that lost the
/// collector at the same moment does not reconnect in lockstep.
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

    /// The delay before the next attempt; `jitter` is a uniform sample in [0, 1).
    pub fn next_delay(&mut self, jitter: f64) -> Duration {
        let doubled = self.initial.saturating_mul(1u32 << self.attempt.min(20));
        let capped = doubled.min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        capped.mul_f64(0.5 + jitter.clamp(0.0, 1.0) / 2.0)
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
