//! The table of SSH connections that have not authenticated yet, and who
//! makes room when it is full.
//!
//! A plain type: time comes in as `now`, and eviction only *names* the
//! connection to close; the listener closes it. The policy:
//!
//! - **Nothing is refused for want of a slot.** When all `capacity` slots
//!   are taken, a new connection evicts one that holds a slot.
//! - **Who is evicted.** Only connections of sources holding more than
//!   their fair share (`per_source`) are candidates, unless no source does;
//!   among the candidates, the one that got least far (version line only,
//!   then key exchange, then authentication), and of those the one silent
//!   longest. A half-open flood from a few addresses evicts itself, and a
//!   device that is moving through key exchange and authentication is the
//!   last to go, even behind the same NAT address as the flood.
//! - **Per-source share without refusing fleets.** When a source that
//!   already holds `per_source` slots opens another, its connection that
//!   got least far among those silent for `stalled_after` is evicted,
//!   even with room left. Connections that keep sending are never stalled,
//!   so a hundred devices behind one address all get in.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// How far an unauthenticated connection got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Phase {
    /// Accepted; at most the client's version line arrived.
    Version,
    /// The client sent key-exchange messages after its version line.
    KeyExchange,
    /// The client asked to authenticate (key exchange is done).
    Authentication,
}

impl Phase {
    /// A short name for logs.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Phase::Version => "version",
            Phase::KeyExchange => "key-exchange",
            Phase::Authentication => "authentication",
        }
    }
}

/// One slot's number, unique for the table's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct SlotId(u64);

/// Why a connection was evicted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EvictionCause {
    /// Every slot was taken.
    Full,
    /// Its source was at its share and this connection had stalled.
    SourceStalled,
}

impl EvictionCause {
    /// A short name for logs.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            EvictionCause::Full => "all unauthenticated slots taken",
            EvictionCause::SourceStalled => "its address is at its share and it stalled",
        }
    }
}

/// A connection the table gave up to make room.
#[derive(Debug)]
pub(crate) struct Evicted<T> {
    pub(crate) source: IpAddr,
    pub(crate) phase: Phase,
    pub(crate) cause: EvictionCause,
    /// How long it had been silent.
    pub(crate) silent: Duration,
    /// What the caller stored with it (how to close it).
    pub(crate) value: T,
}

#[derive(Debug)]
struct Entry<T> {
    source: IpAddr,
    phase: Phase,
    last_heard: Instant,
    value: T,
}

/// The unauthenticated connections, each with a value `T` the caller
/// needs to close it.
#[derive(Debug)]
pub(crate) struct SlotTable<T> {
    capacity: usize,
    per_source: usize,
    stalled_after: Duration,
    next: u64,
    /// Ordered by id, which is the order of arrival.
    entries: BTreeMap<SlotId, Entry<T>>,
    by_source: HashMap<IpAddr, usize>,
}

impl<T> SlotTable<T> {
    /// A table of `capacity` slots where each source's share is
    /// `per_source` and a connection silent for `stalled_after` is stalled.
    pub(crate) fn new(capacity: usize, per_source: usize, stalled_after: Duration) -> Self {
        Self {
            capacity: capacity.max(1),
            per_source: per_source.max(1),
            stalled_after,
            next: 0,
            entries: BTreeMap::new(),
            by_source: HashMap::new(),
        }
    }

    /// Slots taken.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Slots `source` holds.
    pub(crate) fn held_by(&self, source: IpAddr) -> usize {
        self.by_source.get(&source).copied().unwrap_or(0)
    }

    /// Gives a slot to a connection from `source`, evicting another when
    /// the policy says so.
    pub(crate) fn open(&mut self, source: IpAddr, value: T, now: Instant) -> (SlotId, Option<Evicted<T>>) {
        let mut evicted = None;
        if self.held_by(source) >= self.per_source {
            let stalled_after = self.stalled_after;
            let victim = self.victim(now, |entry| {
                entry.source == source && now.saturating_duration_since(entry.last_heard) >= stalled_after
            });
            evicted = victim.map(|id| self.evict(id, EvictionCause::SourceStalled, now));
        }
        if evicted.is_none() && self.entries.len() >= self.capacity {
            let (per_source, by_source) = (self.per_source, &self.by_source);
            let any_over = by_source.values().any(|&held| held > per_source);
            let victim =
                self.victim(now, |entry| !any_over || by_source.get(&entry.source).copied().unwrap_or(0) > per_source);
            evicted = victim.map(|id| self.evict(id, EvictionCause::Full, now));
        }
        let id = SlotId(self.next);
        self.next += 1;
        self.entries.insert(id, Entry { source, phase: Phase::Version, last_heard: now, value });
        *self.by_source.entry(source).or_insert(0) += 1;
        (id, evicted)
    }

    /// The connection `id` sent something and has reached `phase` (a phase
    /// never goes back).
    pub(crate) fn heard(&mut self, id: SlotId, phase: Phase, now: Instant) {
        if let Some(entry) = self.entries.get_mut(&id) {
            entry.phase = entry.phase.max(phase);
            entry.last_heard = entry.last_heard.max(now);
        }
    }

    /// The phase `id` reached, if it still holds a slot.
    pub(crate) fn phase(&self, id: SlotId) -> Option<Phase> {
        self.entries.get(&id).map(|e| e.phase)
    }

    /// Gives `id`'s slot back (authenticated, ended or timed out); its
    /// value, or `None` if it held none any more.
    pub(crate) fn close(&mut self, id: SlotId) -> Option<T> {
        let entry = self.entries.remove(&id)?;
        self.forget_source(entry.source);
        Some(entry.value)
    }

    fn forget_source(&mut self, source: IpAddr) {
        if let Some(count) = self.by_source.get_mut(&source) {
            *count -= 1;
            if *count == 0 {
                self.by_source.remove(&source);
            }
        }
    }

    /// Among entries `eligible`, the one that got least far, then was
    /// silent longest, then arrived first.
    fn victim(&self, now: Instant, eligible: impl Fn(&Entry<T>) -> bool) -> Option<SlotId> {
        self.entries
            .iter()
            .filter(|(_, e)| eligible(e))
            .min_by_key(|(id, e)| (e.phase, std::cmp::Reverse(now.saturating_duration_since(e.last_heard)), **id))
            .map(|(id, _)| *id)
    }

    fn evict(&mut self, id: SlotId, cause: EvictionCause, now: Instant) -> Evicted<T> {
        let entry = self.entries.remove(&id).expect("the victim was chosen from the table");
        self.forget_source(entry.source);
        Evicted {
            source: entry.source,
            phase: entry.phase,
            cause,
            silent: now.saturating_duration_since(entry.last_heard),
            value: entry.value,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STALL: Duration = Duration::from_secs(5);

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, n])
    }

    fn at(start: Instant, ms: u64) -> Instant {
        start + Duration::from_millis(ms)
    }

    #[test]
    fn a_full_table_evicts_the_least_advanced_silent_longest_instead_of_refusing() {
        let t0 = Instant::now();
        let mut table = SlotTable::new(4, 8, STALL);
        let (a, _) = table.open(ip(1), "a", at(t0, 0));
        let (b, _) = table.open(ip(1), "b", at(t0, 10));
        table.open(ip(1), "c", at(t0, 20));
        let (d, _) = table.open(ip(1), "d", at(t0, 30));
        table.heard(a, Phase::KeyExchange, at(t0, 40));
        table.heard(b, Phase::Authentication, at(t0, 40));
        // c and d sent only their version lines; c has been silent longer.
        let (_e, evicted) = table.open(ip(1), "e", at(t0, 50));
        let evicted = evicted.expect("room is made, nothing refused");
        assert_eq!((evicted.value, evicted.cause, evicted.phase), ("c", EvictionCause::Full, Phase::Version));
        assert_eq!(evicted.silent, Duration::from_millis(30));
        assert_eq!(table.len(), 4);
        // d goes next, then the newcomer e (both version only, e silent since 50).
        assert_eq!(table.open(ip(1), "f", at(t0, 60)).1.unwrap().value, "d");
        assert_eq!(table.open(ip(1), "g", at(t0, 70)).1.unwrap().value, "e");
        // The authenticating connection outlives the rest.
        table.heard(a, Phase::KeyExchange, at(t0, 80));
        let mut gone = Vec::new();
        for n in 0..3 {
            gone.push(table.open(ip(1), "later", at(t0, 100 + n)).1.unwrap().value);
        }
        assert_eq!(gone, ["f", "g", "later"], "connections that got further outlive those that did not");
        assert_eq!(table.phase(d), None);
        assert_eq!(table.phase(b), Some(Phase::Authentication));
    }

    #[test]
    fn sources_over_their_share_are_evicted_before_anyone_else() {
        let t0 = Instant::now();
        let mut table = SlotTable::new(6, 2, STALL);
        // A device alone on its address, silent since its version line.
        let (device, _) = table.open(ip(9), "device", at(t0, 0));
        // A flood from one address fills the rest (its connections are not
        // stalled yet, so the per-source share evicts nothing).
        for n in 0..5 {
            assert!(table.open(ip(1), "flood", at(t0, 100 + n)).1.is_none());
        }
        assert_eq!(table.held_by(ip(1)), 5);
        for n in 0..20 {
            let evicted = table.open(ip(1), "flood", at(t0, 200 + n)).1.unwrap();
            assert_eq!((evicted.value, evicted.source), ("flood", ip(1)));
        }
        // A newcomer from a third address evicts from the flood too.
        assert_eq!(table.open(ip(3), "other", at(t0, 300)).1.unwrap().source, ip(1));
        assert_eq!(table.phase(device), Some(Phase::Version), "the device at its share keeps its slot");
        // With nobody over the share, the least advanced of all goes.
        let mut table = SlotTable::new(2, 2, STALL);
        let (x, _) = table.open(ip(1), "x", at(t0, 0));
        table.open(ip(2), "y", at(t0, 1));
        table.heard(x, Phase::KeyExchange, at(t0, 2));
        assert_eq!(table.open(ip(3), "z", at(t0, 3)).1.unwrap().value, "y");
    }

    #[test]
    fn a_source_at_its_share_loses_only_its_stalled_connections() {
        let t0 = Instant::now();
        let mut table = SlotTable::new(100, 2, STALL);
        let (first, _) = table.open(ip(1), "first", at(t0, 0));
        let (second, _) = table.open(ip(1), "second", at(t0, 1000));
        // Both still talking: the third gets in over the share (a NAT fleet).
        table.heard(first, Phase::KeyExchange, at(t0, 5000));
        assert!(table.open(ip(1), "third", at(t0, 5500)).1.is_none());
        assert_eq!(table.held_by(ip(1)), 3);
        // Later, `second` has been silent for the stall time: it goes.
        let evicted = table.open(ip(1), "fourth", at(t0, 6000)).1.unwrap();
        assert_eq!((evicted.value, evicted.cause), ("second", EvictionCause::SourceStalled));
        assert_eq!(table.phase(second), None);
        // Other addresses are never touched by a source's share.
        assert!(table.open(ip(2), "elsewhere", at(t0, 20_000)).1.is_none());
        assert_eq!(table.held_by(ip(2)), 1);
    }

    #[test]
    fn closing_gives_slots_back_and_forgets_idle_sources() {
        let t0 = Instant::now();
        let mut table = SlotTable::new(2, 1, STALL);
        let (a, _) = table.open(ip(1), 1, t0);
        assert_eq!(table.close(a), Some(1));
        assert_eq!(table.close(a), None, "closing twice is harmless");
        assert_eq!(table.held_by(ip(1)), 0);
        assert!(table.by_source.is_empty());
        let (b, _) = table.open(ip(1), 2, t0);
        table.heard(b, Phase::Authentication, t0);
        table.heard(b, Phase::Version, t0);
        assert_eq!(table.phase(b), Some(Phase::Authentication), "a phase never goes back");
        assert_eq!(table.len(), 1);
    }
}
