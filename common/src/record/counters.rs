//! Interface counters as changes since the previous collection, and rates.
//!
//! Devices keep cumulative counters; operators want "how much in the last
//! interval". The agent computes the difference itself so it can handle what
//! only it can see: a 32-bit counter that wrapped (many small-device drivers
//! still keep 32-bit statistics even where the kernel reports 64 bits), and
//! an interface that was recreated or a device that rebooted (counters back
//! to zero).

use serde::{Deserialize, Serialize};

use crate::bounded::{BoundedString, BoundedVec};

use super::{InterfaceStats, MAX_IFNAME, MAX_INTERFACES};

/// Per-interface counter changes over one collection interval.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CounterReport {
    /// Length of the interval the changes cover, in milliseconds.
    pub interval_ms: u64,
    /// One entry per interface seen in both collections, sorted by name.
    pub interfaces: BoundedVec<InterfaceDelta, MAX_INTERFACES>,
}

/// How one interface's counters changed over an interval.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct InterfaceDelta {
    /// Interface name.
    pub name: BoundedString<MAX_IFNAME>,
    /// Bytes received in the interval.
    pub rx_bytes: u64,
    /// Packets received in the interval.
    pub rx_packets: u64,
    /// Receive errors in the interval.
    pub rx_errors: u64,
    /// Received packets dropped in the interval.
    pub rx_dropped: u64,
    /// Bytes sent in the interval.
    pub tx_bytes: u64,
    /// Packets sent in the interval.
    pub tx_packets: u64,
    /// Transmit errors in the interval.
    pub tx_errors: u64,
    /// Transmitted packets dropped in the interval.
    pub tx_dropped: u64,
    /// Receive rate over the interval, bytes per second.
    pub rx_bytes_per_sec: u64,
    /// Transmit rate over the interval, bytes per second.
    pub tx_bytes_per_sec: u64,
    /// Receive rate over the interval, packets per second.
    pub rx_packets_per_sec: u64,
    /// Transmit rate over the interval, packets per second.
    pub tx_packets_per_sec: u64,
    /// How many of the eight counters wrapped at 2^32 during the interval
    /// (the difference accounts for the wrap).
    pub wrapped: u8,
    /// Whether a counter went back in a way a wrap cannot explain (the
    /// interface was recreated or its driver reset): the changes then count
    /// from zero, so they may miss traffic from before the reset.
    pub reset: bool,
}

impl InterfaceDelta {
    /// How `now`'s counters changed since `before` (the same interface at
    /// the previous collection), over `interval_ms`.
    pub fn between(before: &InterfaceStats, now: &InterfaceStats, interval_ms: u64) -> InterfaceDelta {
        let (was, is) = (before.counters(), now.counters());
        let changes: [CounterChange; 8] = std::array::from_fn(|i| counter_change(was[i], is[i]));
        let wrapped = changes.iter().filter(|c| matches!(c, CounterChange::Wrapped(_))).count();
        let reset = changes.iter().any(|c| matches!(c, CounterChange::Reset(_)));
        let [rx_bytes, rx_packets, rx_errors, rx_dropped, tx_bytes, tx_packets, tx_errors, tx_dropped] =
            changes.map(CounterChange::amount);
        InterfaceDelta {
            name: now.name.clone(),
            rx_bytes,
            rx_packets,
            rx_errors,
            rx_dropped,
            tx_bytes,
            tx_packets,
            tx_errors,
            tx_dropped,
            rx_bytes_per_sec: per_second(rx_bytes, interval_ms),
            tx_bytes_per_sec: per_second(tx_bytes, interval_ms),
            rx_packets_per_sec: per_second(rx_packets, interval_ms),
            tx_packets_per_sec: per_second(tx_packets, interval_ms),
            // At most eight.
            wrapped: wrapped as u8,
            reset,
        }
    }
}

/// What happened to one counter between two readings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CounterChange {
    /// It grew by this much.
    Grew(u64),
    /// It passed 2^32 - 1 and started again from 0; it grew by this much.
    Wrapped(u64),
    /// It went back for another reason; this is its value now, which is the
    /// best estimate of the change.
    Reset(u64),
}

impl CounterChange {
    /// The change, whichever way it came about.
    pub fn amount(self) -> u64 {
        match self {
            CounterChange::Grew(n) | CounterChange::Wrapped(n) | CounterChange::Reset(n) => n,
        }
    }
}

/// The change of a counter from `before` to `now`.
///
/// A decrease from the upper half of the 32-bit range to a value that, after
/// a wrap through 2^32 - 1, is less than 2^31 further on is a 32-bit wrap.
/// Any other decrease is a reset: an interface recreated with small
/// counters must not read as a 4 GiB burst. A 32-bit counter that wraps
/// more than once in an interval cannot be told apart from one that
/// wrapped once; at the default 30 s interval that takes over 1.1 Gbit/s on
/// one interface, which the devices that still keep 32-bit counters do not
/// reach.
pub fn counter_change(before: u64, now: u64) -> CounterChange {
    const WRAP: u64 = 1 << 32;
    const HALF: u64 = 1 << 31;
    if now >= before {
        CounterChange::Grew(now - before)
    } else if (HALF..WRAP).contains(&before) && now < WRAP && WRAP - before + now <= HALF {
        CounterChange::Wrapped(WRAP - before + now)
    } else {
        CounterChange::Reset(now)
    }
}

/// `amount` per second over `interval_ms`, rounded down; 0 for an empty
/// interval.
pub fn per_second(amount: u64, interval_ms: u64) -> u64 {
    if interval_ms == 0 {
        return 0;
    }
    let rate = u128::from(amount) * 1000 / u128::from(interval_ms);
    u64::try_from(rate).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn growth_wrap_and_reset() {
        assert_eq!(counter_change(10, 25), CounterChange::Grew(15));
        assert_eq!(counter_change(10, 10), CounterChange::Grew(0));
        // A 32-bit counter near its top wraps to a small value.
        assert_eq!(counter_change(u64::from(u32::MAX) - 5, 10), CounterChange::Wrapped(16));
        // A 64-bit counter does not wrap in practice: going back is a reset.
        assert_eq!(counter_change(5_000_000_000, 1_000), CounterChange::Reset(1_000));
        assert_eq!(counter_change(u64::MAX, 0), CounterChange::Reset(0));
        // Small counters going back: the interface was recreated.
        assert_eq!(counter_change(7, 3), CounterChange::Reset(3));
        assert_eq!(counter_change(1 << 31, 5), CounterChange::Reset(5), "too far for one wrap");
    }

    #[test]
    fn rates() {
        assert_eq!(per_second(3_000, 30_000), 100);
        assert_eq!(per_second(1, 30_000), 0);
        assert_eq!(per_second(5, 0), 0);
        assert_eq!(per_second(u64::MAX, 1), u64::MAX, "saturates rather than overflows");
    }

    #[test]
    fn a_delta_between_two_readings_of_an_interface() {
        let reading = |counters: [u64; 8]| {
            let mut stats =
                InterfaceStats { name: BoundedString::truncating("br-lan"), mtu: 1500, ..InterfaceStats::default() };
            stats.set_counters(counters);
            stats
        };
        let before = reading([u64::from(u32::MAX) - 999, 10, 0, 0, 1_000, 20, 5, 0]);
        let now = reading([1_000, 40, 0, 0, 3_001_000, 80, 1, 0]);
        assert_eq!(now.counters(), [1_000, 40, 0, 0, 3_001_000, 80, 1, 0]);
        let delta = InterfaceDelta::between(&before, &now, 30_000);
        assert_eq!(
            delta,
            InterfaceDelta {
                name: BoundedString::truncating("br-lan"),
                rx_bytes: 2_000,
                rx_packets: 30,
                rx_errors: 0,
                rx_dropped: 0,
                tx_bytes: 3_000_000,
                tx_packets: 60,
                tx_errors: 1,
                tx_dropped: 0,
                rx_bytes_per_sec: 66,
                tx_bytes_per_sec: 100_000,
                rx_packets_per_sec: 1,
                tx_packets_per_sec: 2,
                wrapped: 1,
                reset: true,
            }
        );
    }

    proptest! {
        #[test]
        fn a_32_bit_counter_that_advanced_is_measured_exactly(start in any::<u32>(), step in 0u64..=(1 << 31)) {
            let now = (u64::from(start) + step) % (1 << 32);
            prop_assert_eq!(counter_change(u64::from(start), now).amount(), step);
        }

        #[test]
        fn never_panics(before in any::<u64>(), now in any::<u64>(), ms in any::<u64>()) {
            let change = counter_change(before, now);
            let _ = per_second(change.amount(), ms);
            if now >= before {
                prop_assert_eq!(change, CounterChange::Grew(now - before));
            }
        }
    }
}
