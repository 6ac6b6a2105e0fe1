//! Authentication failures per source address: after
//! [`FAILURES_PER_WINDOW`] failed attempts in a window, an address is
//! answered `429` without its credential being looked at until the window
//! ends, so guessing tokens from one place is slow and floods are cheap.
//! Sans-IO (times are passed in); the table is bounded, so many sources
//! cannot grow it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

/// Failed authentications allowed per address and window.
pub const FAILURES_PER_WINDOW: u32 = 10;
/// The window, in milliseconds.
pub const WINDOW_MS: i64 = 60_000;
/// Addresses tracked one by one; beyond it, the oldest window is dropped.
pub const MAX_SOURCES: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Window {
    start_ms: i64,
    failures: u32,
}

/// The failure counts.
#[derive(Debug, Default)]
pub struct AuthLimiter {
    sources: Mutex<HashMap<IpAddr, Window>>,
}

impl AuthLimiter {
    /// Whether `ip` is refused without looking at its credential now; the
    /// value is the milliseconds until it may try again.
    pub fn blocked(&self, ip: IpAddr, now_ms: i64) -> Option<i64> {
        let sources = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        let window = sources.get(&ip)?;
        let ends = window.start_ms.saturating_add(WINDOW_MS);
        (window.failures >= FAILURES_PER_WINDOW && now_ms < ends).then_some(ends - now_ms)
    }

    /// Counts a failed authentication from `ip`.
    pub fn failed(&self, ip: IpAddr, now_ms: i64) {
        let mut sources = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        if !sources.contains_key(&ip) && sources.len() >= MAX_SOURCES {
            sources.retain(|_, w| now_ms < w.start_ms.saturating_add(WINDOW_MS));
            if sources.len() >= MAX_SOURCES {
                if let Some(oldest) = sources.iter().min_by_key(|(_, w)| w.start_ms).map(|(ip, _)| *ip) {
                    sources.remove(&oldest);
                }
            }
        }
        let window = sources.entry(ip).or_insert(Window { start_ms: now_ms, failures: 0 });
        if now_ms >= window.start_ms.saturating_add(WINDOW_MS) {
            *window = Window { start_ms: now_ms, failures: 0 };
        }
        window.failures = window.failures.saturating_add(1);
    }

    /// Addresses tracked now.
    pub fn tracked(&self) -> usize {
        self.sources.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_held_off_after_repeated_failures_until_the_window_ends() {
        let limiter = AuthLimiter::default();
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        for _ in 0..FAILURES_PER_WINDOW {
            assert_eq!(limiter.blocked(a, 1_000), None);
            limiter.failed(a, 1_000);
        }
        assert_eq!(limiter.blocked(a, 1_000), Some(WINDOW_MS));
        assert_eq!(limiter.blocked(b, 1_000), None, "others are not affected");
        assert_eq!(limiter.blocked(a, 1_000 + WINDOW_MS), None);
        limiter.failed(a, 1_000 + WINDOW_MS);
        assert_eq!(limiter.blocked(a, 1_000 + WINDOW_MS), None, "a new window starts from zero");
    }

    #[test]
    fn many_sources_stay_bounded() {
        let limiter = AuthLimiter::default();
        for i in 0..(MAX_SOURCES as u32 * 2) {
            limiter.failed(IpAddr::from(i.to_be_bytes()), i64::from(i));
        }
        assert!(limiter.tracked() <= MAX_SOURCES);
    }
}
