//! Records waiting for the collector: the in-memory queue, shared with
//! capture threads, and its journal into the spool.
//!
//! Its own module, below both [`crate::runtime`] (which takes batches from
//! it) and [`crate::capture`] (whose threads push into it), so neither
//! depends on the other. It does not send anything or know about
//! connections.
//!
//! Every record gets an id when queued. Ids only grow, so "not yet in the
//! spool" is "id at or above `spooled_below`", and the spool learns about
//! removals (drops when full, captures discarded when consent goes) by id.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use tokio::sync::Notify;
use tracing::warn;

use glimpse_common::bounded::BoundedVec;
use glimpse_common::minimise::{omit_from_record, MetadataField};
use glimpse_common::record::subject::{redact, Redaction, Subject};
use glimpse_common::record::{Record, RecordBody};

use crate::spool::{format::MAX_REMOVED_PER_ENTRY, Spool, SpoolEntry, SpoolError};

/// Records waiting for the collector.
pub(crate) struct Queue {
    inner: Mutex<Inner>,
    pub(crate) ready: Notify,
}

struct Inner {
    records: VecDeque<(u64, Record)>,
    next_id: u64,
    /// Ids below this are in the spool (or were removed before reaching it).
    spooled_below: u64,
    /// Spooled ids removed since the last journal.
    removed: Vec<u64>,
    dropped_metadata: u64,
    dropped_captures: u64,
    /// The organisation's blocked subjects: their data is not queued.
    blocked: Vec<Subject>,
    /// Records and report entries about them dropped so far.
    blocked_dropped: u64,
}

impl Inner {
    fn remove_front(&mut self) {
        if let Some((id, record)) = self.records.pop_front() {
            if id < self.spooled_below {
                self.removed.push(id);
            }
            match record.body {
                RecordBody::Capture(_) => self.dropped_captures += 1,
                _ => self.dropped_metadata += 1,
            }
        }
    }
}

impl Queue {
    /// A queue holding `restored` (from the spool), handing out ids from `next_id`.
    pub(crate) fn new(restored: Vec<(u64, Record)>, next_id: u64) -> Self {
        let next_id = restored.iter().map(|(id, _)| id + 1).max().unwrap_or(0).max(next_id);
        Self {
            inner: Mutex::new(Inner {
                records: restored.into(),
                next_id,
                spooled_below: next_id,
                removed: Vec::new(),
                dropped_metadata: 0,
                dropped_captures: 0,
                blocked: Vec::new(),
                blocked_dropped: 0,
            }),
            ready: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A poisoned queue only means another task panicked mid-push; the
        // records themselves are still whole.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a record; returns (queued, dropped) after dropping the
    /// oldest records beyond `max`.
    pub(crate) fn push(&self, record: Record, max: usize) -> (usize, u64) {
        let pushed = self.push_if(record, max, || true);
        pushed.unwrap_or((0, 0))
    }

    /// Queues a capture record, unless capture consent has been withdrawn.
    ///
    /// The consent flag is read under the queue lock, and
    /// [`Queue::discard_captures`] runs under it after the flag is cleared,
    /// so no capture record can slip in after a withdrawal's discard.
    #[cfg_attr(not(feature = "pcap"), allow(dead_code))]
    pub(crate) fn push_capture(&self, record: Record, max: usize, consent: &AtomicBool) -> bool {
        self.push_if(record, max, || consent.load(Ordering::SeqCst)).is_some()
    }

    /// Queues `record` if `allowed()` holds under the queue lock, dropping
    /// the oldest records beyond `max`; returns (queued, dropped).
    fn push_if(&self, mut record: Record, max: usize, allowed: impl FnOnce() -> bool) -> Option<(usize, u64)> {
        let (len, dropped) = {
            let mut q = self.lock();
            if !allowed() {
                return None;
            }
            // Under the lock, like consent: nothing of a subject blocked
            // before this push gets in.
            match redact(&mut record, &q.blocked) {
                Redaction::Keep => {}
                Redaction::Changed => q.blocked_dropped += 1,
                Redaction::Remove => {
                    q.blocked_dropped += 1;
                    return Some((q.records.len(), 0));
                }
            }
            let id = q.next_id;
            q.next_id += 1;
            q.records.push_back((id, record));
            let mut dropped = 0;
            while q.records.len() > max {
                q.remove_front();
                dropped += 1;
            }
            (q.records.len(), dropped)
        };
        if dropped > 0 {
            warn!(dropped, "collector unreachable and queue full; dropped oldest records");
        }
        self.ready.notify_one();
        Some((len, dropped))
    }

    /// Drops every queued capture record (consent withdrawn); returns how many.
    pub(crate) fn discard_captures(&self) -> usize {
        self.discard(|record| matches!(record.body, RecordBody::Capture(_)))
    }

    /// Drops every queued record `gone` says; returns how many.
    pub(crate) fn discard(&self, gone: impl Fn(&Record) -> bool) -> usize {
        let mut q = self.lock();
        let before = q.records.len();
        let spooled_below = q.spooled_below;
        let mut removed = Vec::new();
        q.records.retain(|(id, record)| {
            let keep = !gone(record);
            if !keep && *id < spooled_below {
                removed.push(*id);
            }
            keep
        });
        q.removed.extend(removed);
        before - q.records.len()
    }

    /// Stops queueing the data of `subjects` (the organisation's blocked
    /// subjects, replacing the list before) and drops what of it is queued
    /// already: whole records about one of them, their entries in reports
    /// about many clients. Returns (records dropped, records cut down).
    /// Batches already formed are left to the collector, which drops the
    /// subjects' data on arrival.
    pub(crate) fn set_blocked(&self, subjects: Vec<Subject>) -> (usize, usize) {
        let mut q = self.lock();
        let inner = &mut *q;
        inner.blocked = subjects;
        if inner.blocked.is_empty() {
            return (0, 0);
        }
        let spooled_below = inner.spooled_below;
        let (mut removed, mut cut, mut ids) = (0, 0, Vec::new());
        let blocked = &inner.blocked;
        inner.records.retain_mut(|(id, record)| match redact(record, blocked) {
            Redaction::Keep => true,
            Redaction::Changed => {
                cut += 1;
                true
            }
            Redaction::Remove => {
                removed += 1;
                if *id < spooled_below {
                    ids.push(*id);
                }
                false
            }
        });
        inner.removed.extend(ids);
        inner.blocked_dropped += (removed + cut) as u64;
        (removed, cut)
    }

    /// Records and report entries about blocked subjects dropped so far.
    pub(crate) fn blocked_dropped(&self) -> u64 {
        self.lock().blocked_dropped
    }

    /// Takes up to `max` records from the front for a batch.
    pub(crate) fn take_batch(&self, max: usize) -> Vec<(u64, Record)> {
        let mut q = self.lock();
        let n = q.records.len().min(max);
        q.records.drain(..n).collect()
    }

    /// Records waiting.
    pub(crate) fn len(&self) -> usize {
        self.lock().records.len()
    }

    /// Whether nothing waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.lock().records.is_empty()
    }

    /// Records dropped because the queue was full: (metadata, captures).
    pub(crate) fn dropped(&self) -> (u64, u64) {
        let q = self.lock();
        (q.dropped_metadata, q.dropped_captures)
    }

    /// Removes omitted fields from queued metadata (a new data policy).
    pub(crate) fn trim_metadata(&self, omit: &[MetadataField]) {
        for (_, record) in self.lock().records.iter_mut() {
            omit_from_record(&mut record.body, omit);
        }
    }

    /// Appends what changed since the last call to the spool's buffer: new
    /// records, then removals. The caller flushes.
    pub(crate) fn journal(&self, spool: &mut Spool) -> Result<(), SpoolError> {
        let mut q = self.lock();
        let from = q.spooled_below;
        for (id, record) in q.records.iter().filter(|(id, _)| *id >= from) {
            spool.append_record(*id, record)?;
        }
        q.spooled_below = q.next_id;
        let removed = std::mem::take(&mut q.removed);
        for chunk in removed.chunks(MAX_REMOVED_PER_ENTRY) {
            spool.append(&SpoolEntry::Removed { ids: BoundedVec::truncating(chunk.to_vec()) })?;
        }
        Ok(())
    }

    /// Rewrites the spool with the live records (`in_flight` first), after
    /// dropping the oldest queued records while they would not fit in
    /// `max_bytes`. Runs under the queue lock: it is rare, and capture
    /// threads wait for it rather than race it.
    pub(crate) fn compact(
        &self,
        spool: &mut Spool,
        in_flight: Option<(u64, &[(u64, Record)])>,
        max_bytes: u64,
    ) -> Result<(), SpoolError> {
        let mut q = self.lock();
        let size = |record: &Record| postcard::to_stdvec(record).map_or(0, |v| v.len()) as u64 + 24;
        let in_flight_bytes: u64 = in_flight.map_or(0, |(_, records)| records.iter().map(|(_, r)| size(r)).sum());
        let mut total = in_flight_bytes + q.records.iter().map(|(_, r)| size(r)).sum::<u64>();
        // Leave a quarter of the bound for what arrives before the next compaction.
        let target = max_bytes / 4 * 3;
        let mut dropped = 0u64;
        while total > target && !q.records.is_empty() {
            if let Some((_, front)) = q.records.front() {
                total -= size(front);
            }
            q.remove_front();
            dropped += 1;
        }
        if dropped > 0 {
            warn!(dropped, max_bytes, "spool full; dropped oldest records");
        }
        q.removed.clear();
        q.spooled_below = q.next_id;
        spool.compact(in_flight, q.records.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use glimpse_common::record::{DeviceMetadata, InterfaceStats, MacAddr, Station, WirelessReport};

    fn device_with(mac: MacAddr) -> Record {
        let interface = InterfaceStats { mac: Some(mac), ..Default::default() };
        Record {
            observed_at_ms: 0,
            body: RecordBody::Metadata(DeviceMetadata {
                interfaces: BoundedVec::truncating(vec![interface]),
                ..Default::default()
            }),
        }
    }

    fn report(macs: &[MacAddr]) -> Record {
        let stations = macs.iter().map(|mac| Station { mac: *mac, ..Default::default() }).collect();
        Record {
            observed_at_ms: 0,
            body: RecordBody::Wireless(Box::new(WirelessReport {
                stations: BoundedVec::truncating(stations),
                ..Default::default()
            })),
        }
    }

    #[test]
    fn blocked_subjects_data_is_dropped_from_the_queue_and_not_queued_again() {
        let (alice, bob) = (MacAddr([2, 0, 0, 0, 0, 1]), MacAddr([2, 0, 0, 0, 0, 2]));
        let queue = Queue::new(vec![(0, device_with(bob))], 1);
        queue.push(report(&[alice, bob]), 100);
        queue.push(device_with(alice), 100);
        assert_eq!(queue.set_blocked(vec![Subject::Mac(bob)]), (1, 1));
        assert_eq!(queue.lock().removed, [0], "the spool hears of the spooled record removed");
        queue.push(device_with(bob), 100);
        queue.push(report(&[bob, alice]), 100);
        assert_eq!(queue.blocked_dropped(), 4);
        let left: Vec<Record> = queue.take_batch(10).into_iter().map(|(_, r)| r).collect();
        assert_eq!(left.len(), 3, "alice's device and both reports");
        for record in &left {
            assert!(!glimpse_common::record::subject::concerns(record, &Subject::Mac(bob)), "{record:?}");
        }
        // Unblocked: queued again.
        queue.set_blocked(Vec::new());
        queue.push(device_with(bob), 100);
        assert_eq!(queue.len(), 1);
    }
}
