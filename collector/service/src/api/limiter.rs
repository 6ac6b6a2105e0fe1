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

/// Connections one address may hold open on the admin port at once, so
/// that one source cannot take every connection slot with handshakes it
/// never finishes (each lasts at most the handshake timeout).
pub const MAX_CONNECTIONS_PER_SOURCE: usize = 32;

/// Open connections per source address; a slot is given back when its
/// [`SourceSlot`] drops.
#[derive(Debug, Default)]
pub struct SourceSlots {
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection's share of its address's slots.
#[derive(Debug)]
pub struct SourceSlot {
    slots: std::sync::Arc<SourceSlots>,
    ip: IpAddr,
}

impl SourceSlots {
    /// A slot for a new connection from `ip`, or `None` when it already
    /// holds [`MAX_CONNECTIONS_PER_SOURCE`]. The table holds only
    /// addresses with open connections, so it is bounded by the
    /// connection limit.
    pub fn take(self: &std::sync::Arc<Self>, ip: IpAddr) -> Option<SourceSlot> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let count = open.entry(ip).or_insert(0);
        if *count >= MAX_CONNECTIONS_PER_SOURCE {
            return None;
        }
        *count += 1;
        Some(SourceSlot { slots: self.clone(), ip })
    }

    /// Addresses with connections open now.
    pub fn sources(&self) -> usize {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod source_tests {
    use super::*;

    #[test]
    fn one_address_holds_at_most_its_share_and_gets_slots_back() {
        let slots = std::sync::Arc::new(SourceSlots::default());
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let held: Vec<_> = (0..MAX_CONNECTIONS_PER_SOURCE).map(|_| slots.take(a).expect("slot")).collect();
        assert!(slots.take(a).is_none(), "full for a");
        let other = slots.take(b).expect("b is not affected");
        drop(held);
        assert!(slots.take(a).is_some(), "slots come back");
        drop(other);
        assert_eq!(slots.sources(), 0, "the table forgets closed addresses");
    }
}
