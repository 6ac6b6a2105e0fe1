//! Which collector to try next, and when: the agent's failover policy as a
//! plain type, sans-IO.
//!
//! The service is several stateless collectors sharing one backend, so a
//! device may connect to any of them. [`Failover`] is handed the candidate
//! addresses (every address every configured name resolved to, afresh
//! before each attempt), the time and what happened (connected, failed,
//! lost, stored, asked to wait), and says which candidate to try and when.
//! It opens no socket, resolves no name and reads no clock: the runtime
//! does those and tests drive it with made-up instants and a seeded RNG.
//!
//! The rules:
//!
//! - **Spread.** The first candidate is a random one, so that a fleet
//!   configured with the same list does not all land on its first entry.
//! - **Stickiness.** The candidate that works is kept for as long as it
//!   works, and is tried first again after a reload.
//! - **Rotation.** A failed attempt moves on to the next candidate at once
//!   (a refused port costs a round trip); a lost connection moves on after
//!   a jittered pause, so that the devices a dead collector drops do not
//!   land on the next one in the same instant.
//! - **Backoff per round.** Once every candidate has failed since the
//!   last pause, the policy pauses for the next [`Backoff`] delay (full
//!   jitter, doubling to the configured maximum), so that a dead cluster
//!   is not hammered. Only an acknowledgement of a batch sent on a
//!   connection resets the backoff: a collector that welcomes and then
//!   cannot store, or closes, does not earn a fast reconnect.
//! - **Storage refusals.** A collector that says `RetryLater` (its
//!   storage is unavailable) is not sent anything before its delay ends.
//!   The agent keeps the connection for the first refusal (a one-off
//!   failed write costs no handshake); at the second refusal in a row it
//!   fails over to another candidate if one is not itself waiting, and
//!   comes back to this one only after the delay it named.

use std::net::SocketAddr;
use std::time::Instant;

use rand::Rng;

use super::Backoff;

/// Most candidate addresses tried, over every configured name: bounds
/// what a name resolving to hundreds of addresses can cost.
pub const MAX_CANDIDATES: usize = 32;

/// Storage refusals in a row on one connection before the agent tries
/// another collector.
pub const STORAGE_REFUSALS_BEFORE_FAILOVER: u32 = 2;

/// One address to try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// Where to connect.
    pub addr: SocketAddr,
    /// Which configured address it came from (an index into
    /// `AgentConfig::collectors`): its name for TLS and for logs.
    pub origin: usize,
}

/// The candidates for one attempt, from what each configured address
/// resolved to (in the configured order): duplicates dropped, at most
/// [`MAX_CANDIDATES`], each name given an equal share of them first so
/// that one name with many addresses cannot crowd out the others.
pub fn candidates(resolved: &[Vec<SocketAddr>]) -> Vec<Candidate> {
    let share = MAX_CANDIDATES / resolved.len().max(1);
    let mut out: Vec<Candidate> = Vec::new();
    let push = |addr: SocketAddr, origin: usize, out: &mut Vec<Candidate>| {
        if out.len() < MAX_CANDIDATES && !out.iter().any(|c| c.addr == addr) {
            out.push(Candidate { addr, origin });
        }
    };
    for (origin, addrs) in resolved.iter().enumerate() {
        for addr in addrs.iter().take(share.max(1)) {
            push(*addr, origin, &mut out);
        }
    }
    // Slots a name did not need go to the others' further addresses.
    for (origin, addrs) in resolved.iter().enumerate() {
        for addr in addrs.iter().skip(share.max(1)) {
            push(*addr, origin, &mut out);
        }
    }
    // Keep each name's addresses together and in the configured order.
    out.sort_by_key(|c| c.origin);
    out
}

/// What the runtime does after a storage refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageRefusal {
    /// Keep the connection; the session sends the batch again after the
    /// collector's delay.
    Stay,
    /// Close the connection and connect to another candidate; this one is
    /// not tried again before its delay ends.
    Leave,
}

/// The failover policy: candidates, the one in use, the round of failed
/// attempts and the backoff between rounds.
#[derive(Debug)]
pub struct Failover<R> {
    backoff: Backoff,
    rng: R,
    candidates: Vec<Candidate>,
    /// Index into `candidates` of the next one to try, or of the one in use.
    cursor: usize,
    /// The address at `cursor`, to find it again in a new list (resolvers
    /// may return addresses in another order each time).
    cursor_addr: Option<SocketAddr>,
    /// Whether the random start has been taken.
    started: bool,
    /// The candidate being tried or connected to.
    current: Option<Candidate>,
    /// Whether `current` is connected (welcomed).
    connected: bool,
    /// Addresses that failed since the last pause.
    tried: Vec<SocketAddr>,
    /// No attempt before this.
    wait_until: Option<Instant>,
    /// Collectors that asked to wait, and until when.
    held: Vec<(SocketAddr, Instant)>,
    /// `RetryLater`s in a row on the current connection.
    storage_refusals: u32,
}

impl<R: Rng> Failover<R> {
    /// A policy pausing between rounds by `backoff`, drawing its random
    /// start and jitter from `rng`.
    pub fn new(backoff: Backoff, rng: R) -> Self {
        Self {
            backoff,
            rng,
            candidates: Vec::new(),
            cursor: 0,
            cursor_addr: None,
            started: false,
            current: None,
            connected: false,
            tried: Vec::new(),
            wait_until: None,
            held: Vec::new(),
            storage_refusals: 0,
        }
    }

    /// Replaces the candidates with a fresh resolution (see
    /// [`candidates`]; bounded again here). The next candidate stays the
    /// same address if it is still in the list.
    pub fn set_candidates(&mut self, mut list: Vec<Candidate>) {
        let mut seen: Vec<SocketAddr> = Vec::with_capacity(list.len());
        list.retain(|c| {
            let fresh = !seen.contains(&c.addr);
            seen.push(c.addr);
            fresh
        });
        list.truncate(MAX_CANDIDATES);
        self.candidates = list;
        if self.candidates.is_empty() {
            return;
        }
        let found = self.cursor_addr.and_then(|addr| self.candidates.iter().position(|c| c.addr == addr));
        self.cursor = match found {
            Some(index) => index,
            None if !self.started => {
                self.started = true;
                // From a uniform draw rather than `gen_range`, whose
                // rejection sampling never ends on a constant test RNG.
                let draw: f64 = self.rng.gen();
                ((draw * self.candidates.len() as f64) as usize).min(self.candidates.len() - 1)
            }
            None => self.cursor % self.candidates.len(),
        };
        self.cursor_addr = Some(self.candidates[self.cursor].addr);
        // Only addresses still in the list count towards a round.
        let candidates = &self.candidates;
        self.tried.retain(|addr| candidates.iter().any(|c| c.addr == *addr));
    }

    /// The candidates of the last resolution.
    pub fn candidates(&self) -> &[Candidate] {
        &self.candidates
    }

    /// When the next attempt may be made; `None`: now.
    pub fn next_attempt_at(&self) -> Option<Instant> {
        self.wait_until
    }

    /// The candidate being tried or connected to.
    pub fn current(&self) -> Option<Candidate> {
        self.current
    }

    /// The candidate to connect to at `now`, or `None`: nothing to try yet
    /// ([`Failover::next_attempt_at`] says when to ask again). With no
    /// candidates at all (no name resolved) it pauses as after a failed
    /// round.
    pub fn poll(&mut self, now: Instant) -> Option<Candidate> {
        if self.wait_until.is_some_and(|until| now < until) {
            return None;
        }
        self.wait_until = None;
        if self.candidates.is_empty() || self.round_done() {
            self.pause(now);
            return None;
        }
        let count = self.candidates.len();
        let mut earliest_hold: Option<Instant> = None;
        for step in 0..count {
            let index = (self.cursor + step) % count;
            let candidate = self.candidates[index];
            if self.tried.contains(&candidate.addr) {
                continue;
            }
            if let Some(until) = self.held_until(candidate.addr, now) {
                earliest_hold = Some(earliest_hold.map_or(until, |e| e.min(until)));
                continue;
            }
            self.set_cursor(index);
            self.current = Some(candidate);
            self.connected = false;
            return Some(candidate);
        }
        // Every candidate not yet tried asked to wait: the first of them
        // to be free again is next.
        self.wait_until = earliest_hold;
        None
    }

    /// The current candidate welcomed us: it is kept while it works.
    pub fn connected(&mut self) {
        if let Some(candidate) = self.current {
            self.connected = true;
            self.tried.clear();
            self.storage_refusals = 0;
            self.held.retain(|(addr, _)| *addr != candidate.addr);
        }
    }

    /// The current connection stored a batch it was sent: it works, and
    /// past failures are forgotten.
    pub fn stored(&mut self) {
        self.backoff.reset();
        self.tried.clear();
        self.storage_refusals = 0;
    }

    /// The attempt on the current candidate failed before a welcome
    /// (refused, timed out, TLS, SSH or the collector's refusal). The next
    /// candidate is tried at once, unless this completed a round of
    /// failures: then the next backoff delay comes first.
    pub fn failed(&mut self, now: Instant) {
        let Some(candidate) = self.current.take() else { return };
        self.connected = false;
        if !self.tried.contains(&candidate.addr) && self.tried.len() < MAX_CANDIDATES {
            self.tried.push(candidate.addr);
        }
        self.advance_past(candidate.addr);
        if self.round_done() {
            self.pause(now);
        }
    }

    /// The connection to the current candidate was lost after its welcome
    /// (the collector died or closed it). The next candidate comes after a
    /// jittered pause; the lost one is tried again at the end of that
    /// round.
    pub fn lost(&mut self, now: Instant) {
        let Some(candidate) = self.current.take() else { return };
        self.connected = false;
        self.storage_refusals = 0;
        self.advance_past(candidate.addr);
        self.pause(now);
    }

    /// The current collector could not store a batch and asked for it again
    /// at `until`. Returns whether to keep the connection or leave for
    /// another candidate (see the module's rules); on [`StorageRefusal::Leave`]
    /// the runtime closes the connection and asks [`Failover::poll`] again.
    pub fn storage_refused(&mut self, now: Instant, until: Instant) -> StorageRefusal {
        let Some(candidate) = self.current.filter(|_| self.connected) else { return StorageRefusal::Stay };
        self.hold(candidate.addr, until, now);
        self.storage_refusals = self.storage_refusals.saturating_add(1);
        let elsewhere =
            self.candidates.iter().any(|c| c.addr != candidate.addr && self.held_until(c.addr, now).is_none());
        if self.storage_refusals < STORAGE_REFUSALS_BEFORE_FAILOVER || !elsewhere {
            return StorageRefusal::Stay;
        }
        self.current = None;
        self.connected = false;
        self.storage_refusals = 0;
        self.advance_past(candidate.addr);
        if self.tried.len() < MAX_CANDIDATES && !self.tried.contains(&candidate.addr) {
            self.tried.push(candidate.addr);
        }
        if self.round_done() {
            self.pause(now);
        }
        StorageRefusal::Leave
    }

    /// Starts afresh at the candidate last used, at once (after a reload:
    /// new settings deserve an attempt now). Holds the collectors asked
    /// for are kept.
    pub fn restart(&mut self) {
        self.current = None;
        self.connected = false;
        self.tried.clear();
        self.wait_until = None;
        self.storage_refusals = 0;
    }

    fn round_done(&self) -> bool {
        !self.candidates.is_empty() && self.candidates.iter().all(|c| self.tried.contains(&c.addr))
    }

    fn pause(&mut self, now: Instant) {
        self.tried.clear();
        let delay = self.backoff.next_delay(self.rng.gen());
        self.wait_until = Some(now + delay);
    }

    fn set_cursor(&mut self, index: usize) {
        self.cursor = index;
        self.cursor_addr = self.candidates.get(index).map(|c| c.addr);
    }

    /// Moves the cursor to the candidate after `addr`.
    fn advance_past(&mut self, addr: SocketAddr) {
        if self.candidates.is_empty() {
            return;
        }
        let index = self.candidates.iter().position(|c| c.addr == addr).unwrap_or(self.cursor);
        self.set_cursor((index + 1) % self.candidates.len());
    }

    fn held_until(&self, addr: SocketAddr, now: Instant) -> Option<Instant> {
        self.held.iter().find(|(a, until)| *a == addr && *until > now).map(|(_, until)| *until)
    }

    fn hold(&mut self, addr: SocketAddr, until: Instant, now: Instant) {
        self.held.retain(|(a, u)| *a != addr && *u > now);
        if self.held.len() >= MAX_CANDIDATES {
            // Bounded: the hold ending first matters least.
            if let Some(first) = self.held.iter().enumerate().min_by_key(|(_, (_, u))| *u).map(|(i, _)| i) {
                self.held.swap_remove(first);
            }
        }
        self.held.push((addr, until));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::mock::StepRng;
    use rand::rngs::StdRng;
    use rand::SeedableRng;
    use std::time::Duration;

    fn addr(n: u8) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, n], 7443))
    }

    fn list(n: u8) -> Vec<Candidate> {
        (1..=n).map(|i| Candidate { addr: addr(i), origin: usize::from(i - 1) }).collect()
    }

    fn backoff() -> Backoff {
        Backoff::new(Duration::from_millis(500), Duration::from_secs(60))
    }

    /// A policy whose random draws are all `0.0` (start at the first
    /// candidate, shortest jitter) or all just under 1 (`high`).
    fn policy(high: bool) -> Failover<StepRng> {
        Failover::new(backoff(), StepRng::new(if high { u64::MAX } else { 0 }, 0))
    }

    /// The address `poll` picks at `now`.
    fn pick<R: Rng>(f: &mut Failover<R>, now: Instant) -> Option<SocketAddr> {
        f.poll(now).map(|c| c.addr)
    }

    #[test]
    fn a_refused_candidate_moves_on_at_once_and_a_full_round_backs_off() {
        let mut f = policy(false);
        let t0 = Instant::now();
        f.set_candidates(list(3));
        assert_eq!(pick(&mut f, t0), Some(addr(1)));
        f.failed(t0);
        assert_eq!(f.next_attempt_at(), None, "the next candidate is tried at once");
        assert_eq!(pick(&mut f, t0), Some(addr(2)));
        f.failed(t0);
        assert_eq!(pick(&mut f, t0), Some(addr(3)));
        f.failed(t0);
        // Every candidate failed: a pause before the next round.
        let resume = f.next_attempt_at().expect("a full round backs off");
        assert_eq!(resume, t0 + Duration::from_millis(250), "the floor of the first delay with jitter 0");
        assert_eq!(pick(&mut f, t0), None);
        assert_eq!(pick(&mut f, resume - Duration::from_millis(1)), None);
        assert_eq!(pick(&mut f, resume), Some(addr(1)), "the next round starts where rotation left off");
    }

    #[test]
    fn the_working_candidate_is_kept_across_resolutions_and_reloads() {
        let mut f = policy(false);
        let t0 = Instant::now();
        f.set_candidates(list(3));
        assert_eq!(pick(&mut f, t0), Some(addr(1)));
        f.failed(t0);
        assert_eq!(pick(&mut f, t0), Some(addr(2)));
        f.connected();
        f.stored();
        // A reload: the resolver now returns the addresses in another order.
        f.restart();
        let mut shuffled = list(3);
        shuffled.reverse();
        f.set_candidates(shuffled);
        assert_eq!(pick(&mut f, t0), Some(addr(2)), "sticky to the one that worked");
        assert_eq!(f.current().map(|c| c.origin), Some(1));
    }

    #[test]
    fn a_lost_connection_pauses_with_jitter_then_tries_the_next_candidate() {
        let mut f = policy(false);
        let t0 = Instant::now();
        f.set_candidates(list(2));
        assert_eq!(pick(&mut f, t0), Some(addr(1)));
        f.connected();
        f.stored();
        f.lost(t0);
        let resume = f.next_attempt_at().expect("a pause after a loss");
        assert!(resume > t0);
        f.set_candidates(list(2));
        assert_eq!(pick(&mut f, resume), Some(addr(2)));
        // The lost one comes back at the end of the round.
        f.failed(resume);
        assert_eq!(f.next_attempt_at(), None);
        assert_eq!(pick(&mut f, resume), Some(addr(1)));
    }

    #[test]
    fn one_candidate_behaves_like_a_plain_reconnect() {
        let mut f = policy(false);
        let t0 = Instant::now();
        f.set_candidates(list(1));
        assert_eq!(pick(&mut f, t0), Some(addr(1)));
        f.connected();
        f.lost(t0);
        let resume = f.next_attempt_at().unwrap();
        assert_eq!(resume - t0, Duration::from_millis(250), "one backoff delay, not two");
        assert_eq!(pick(&mut f, resume), Some(addr(1)));
    }

    #[test]
    fn the_start_is_random_per_device_and_covers_every_candidate() {
        let mut starts = std::collections::BTreeSet::new();
        for seed in 0..200 {
            let mut f = Failover::new(backoff(), StdRng::seed_from_u64(seed));
            f.set_candidates(list(4));
            starts.insert(pick(&mut f, Instant::now()).unwrap());
        }
        assert_eq!(starts.len(), 4, "every candidate is some device's first: {starts:?}");
        // The start is drawn once: a new resolution does not move it.
        let mut f = Failover::new(backoff(), StdRng::seed_from_u64(7));
        f.set_candidates(list(4));
        let first = pick(&mut f, Instant::now()).unwrap();
        f.set_candidates(list(4));
        assert_eq!(pick(&mut f, Instant::now()), Some(first));
    }

    #[test]
    fn candidates_are_bounded_deduplicated_and_shared_between_names() {
        let many: Vec<SocketAddr> =
            (0..100u16).map(|i| SocketAddr::from(([10, 0, (i / 250) as u8, i as u8], 7443))).collect();
        let other = vec![addr(1), addr(1), addr(2)];
        let out = candidates(&[many.clone(), other]);
        assert_eq!(out.len(), MAX_CANDIDATES);
        assert_eq!(out.iter().filter(|c| c.origin == 1).count(), 2, "the second name keeps its addresses, once each");
        assert!(out.windows(2).all(|w| w[0].origin <= w[1].origin), "names stay in the configured order");
        // One name alone may use every slot.
        assert_eq!(candidates(std::slice::from_ref(&many)).len(), MAX_CANDIDATES);
        assert!(candidates(&[]).is_empty());
        // The policy bounds what it is handed too.
        let mut f = policy(false);
        f.set_candidates(many.iter().map(|a| Candidate { addr: *a, origin: 0 }).collect());
        assert_eq!(f.candidates().len(), MAX_CANDIDATES);
    }

    #[test]
    fn backoff_grows_per_failed_round_and_an_acknowledgement_resets_it() {
        let mut f = policy(true);
        let mut now = Instant::now();
        f.set_candidates(list(2));
        let mut pauses = Vec::new();
        for _ in 0..10 {
            while f.poll(now).is_some() {
                f.failed(now);
            }
            let resume = f.next_attempt_at().unwrap();
            pauses.push((resume - now).as_millis());
            now = resume;
        }
        // Jitter just under 1: the top of each window, doubling to the cap.
        assert_eq!(pauses, vec![500, 1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000, 60000]);
        // A welcome alone does not reset it; an acknowledgement does.
        assert!(f.poll(now).is_some());
        f.connected();
        f.lost(now);
        assert!(f.next_attempt_at().unwrap() - now > Duration::from_secs(59));
        now = f.next_attempt_at().unwrap();
        assert!(f.poll(now).is_some());
        f.connected();
        f.stored();
        f.lost(now);
        assert_eq!((f.next_attempt_at().unwrap() - now).as_millis(), 500);
    }

    #[test]
    fn no_resolved_candidate_backs_off_like_a_failed_round() {
        let mut f = policy(true);
        let t0 = Instant::now();
        f.set_candidates(Vec::new());
        assert_eq!(f.poll(t0), None);
        let first = f.next_attempt_at().unwrap() - t0;
        let t1 = f.next_attempt_at().unwrap();
        assert_eq!(f.poll(t1), None);
        let second = f.next_attempt_at().unwrap() - t1;
        assert!(second > first, "{first:?} then {second:?}");
    }

    #[test]
    fn a_storage_refusal_keeps_the_connection_once_then_fails_over_and_respects_the_delay() {
        let mut f = policy(false);
        let t0 = Instant::now();
        let (t5, t15) = (t0 + Duration::from_secs(5), t0 + Duration::from_secs(15));
        f.set_candidates(list(2));
        assert_eq!(pick(&mut f, t0), Some(addr(1)));
        f.connected();
        assert_eq!(f.storage_refused(t0, t5), StorageRefusal::Stay, "a one-off refusal costs no handshake");
        assert_eq!(f.storage_refused(t5, t15), StorageRefusal::Leave);
        assert_eq!(f.next_attempt_at(), None, "another collector may be tried at once");
        assert_eq!(pick(&mut f, t5), Some(addr(2)));
        // It fails too: a round is done, so a pause; then only it is free.
        f.failed(t5);
        let resume = f.next_attempt_at().expect("a round failed");
        assert!(resume < t15);
        assert_eq!(pick(&mut f, resume), Some(addr(2)), "the refusing collector is still waited for");
        f.failed(resume);
        // Only the refusing one is left untried: its own delay is next.
        assert_eq!(f.next_attempt_at(), None);
        assert_eq!(f.poll(resume), None);
        assert_eq!(f.next_attempt_at(), Some(t15));
        assert_eq!(pick(&mut f, t15), Some(addr(1)));
    }

    #[test]
    fn a_lone_collector_refusing_storage_is_kept() {
        let mut f = policy(false);
        let t0 = Instant::now();
        f.set_candidates(list(1));
        assert!(f.poll(t0).is_some());
        f.connected();
        for i in 0..5 {
            let now = t0 + Duration::from_secs(i);
            assert_eq!(f.storage_refused(now, now + Duration::from_secs(1)), StorageRefusal::Stay);
        }
    }

    #[test]
    fn jitter_stays_within_the_window() {
        for seed in 0..50 {
            let mut f = Failover::new(backoff(), StdRng::seed_from_u64(seed));
            let mut now = Instant::now();
            f.set_candidates(list(1));
            for round in 0..12u32 {
                assert!(f.poll(now).is_some());
                f.failed(now);
                let pause = f.next_attempt_at().unwrap() - now;
                let ceiling = Duration::from_millis(500).saturating_mul(1 << round).min(Duration::from_secs(60));
                assert!(pause >= Duration::from_millis(250) && pause <= ceiling, "round {round}: {pause:?}");
                now += pause;
            }
        }
    }
}
