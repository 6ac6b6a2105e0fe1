//! Serving a record that reached the disk twice only once.
//!
//! A batch is stored a second time when its first copy became durable but
//! was never acknowledged (the commit of its sequence number failed, or the
//! collector died between the two), because the agent then sends the same
//! batch again under the same sequence number. Every copy carries the same
//! origin (stream, sequence, position; see [`super::block`]), so a reader
//! drops any record whose origin it has already served.
//!
//! Memory stays bounded without remembering every origin of a long read.
//! A stream has one batch in flight and the collector stores sequence `n`
//! only after `n - 1` is committed, so in write order (which is read order:
//! days, then segments, then blocks ascending) a repeated record can only
//! belong to the newest batch of its stream seen so far. The filter keeps,
//! per (device, stream), that batch's sequence and the positions served,
//! as ranges. If the order assumption breaks (the collector's clock stepped
//! back over midnight, so later batches sit in an earlier day), the filter
//! serves a repeat rather than hide a record: it never drops a record whose
//! origin it has not served.

use std::collections::HashMap;
use std::ops::Range;

use glimpse_common::identity::DeviceId;

use super::block::RecordOrigin;

/// Streams tracked at once before the filter starts over (about 100 bytes
/// each). Starting over can only let a repeat through, never hide a record.
const MAX_TRACKED_STREAMS: usize = 1 << 16;
/// Disjoint position ranges kept for one batch. A batch holds at most a
/// few thousand records and arrives mostly in order, so one or two ranges
/// is the norm.
const MAX_RANGES_PER_BATCH: usize = 1024;

/// Drops records whose origin was already served in this read.
#[derive(Debug, Default)]
pub(crate) struct RepeatFilter {
    newest: HashMap<DeviceId, HashMap<u64, NewestBatch>>,
    tracked: usize,
    /// Records dropped as repeats so far.
    pub(crate) repeats: u64,
}

/// The newest batch seen of one stream and the positions served from it.
#[derive(Debug)]
struct NewestBatch {
    stream_seq: u64,
    /// Sorted, disjoint, never adjacent.
    served: Vec<Range<u64>>,
}

impl RepeatFilter {
    /// Whether to serve a record of `device` with `origin`; records without
    /// an origin are always served.
    pub(crate) fn admit(&mut self, device: &DeviceId, origin: Option<RecordOrigin>) -> bool {
        let Some(origin) = origin else { return true };
        let index = u64::from(origin.index);
        if let Some(batch) = self.newest.get_mut(device).and_then(|streams| streams.get_mut(&origin.stream_id)) {
            if batch.stream_seq == origin.stream_seq {
                if contains(&batch.served, index) {
                    self.repeats += 1;
                    return false;
                }
                if batch.served.len() < MAX_RANGES_PER_BATCH {
                    insert(&mut batch.served, index);
                }
            } else {
                batch.stream_seq = origin.stream_seq;
                batch.served = std::iter::once(index..index + 1).collect();
            }
            return true;
        }
        if self.tracked >= MAX_TRACKED_STREAMS {
            self.newest.clear();
            self.tracked = 0;
        }
        self.newest.entry(device.clone()).or_default().insert(
            origin.stream_id,
            NewestBatch { stream_seq: origin.stream_seq, served: std::iter::once(index..index + 1).collect() },
        );
        self.tracked += 1;
        true
    }
}

fn contains(ranges: &[Range<u64>], index: u64) -> bool {
    let at = ranges.partition_point(|r| r.end <= index);
    ranges.get(at).is_some_and(|r| r.start <= index)
}

/// Adds `index`, which must not be in `ranges`, merging neighbours.
fn insert(ranges: &mut Vec<Range<u64>>, index: u64) {
    // The first range ending at or after `index`.
    let at = ranges.partition_point(|r| r.end < index);
    let joins_left = ranges.get(at).is_some_and(|r| r.end == index);
    if joins_left {
        ranges[at].end = index + 1;
        if ranges.get(at + 1).is_some_and(|r| r.start == index + 1) {
            let right = ranges.remove(at + 1);
            ranges[at].end = right.end;
        }
    } else if ranges.get(at).is_some_and(|r| r.start == index + 1) {
        ranges[at].start = index;
    } else {
        ranges.insert(at, index..index + 1);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use proptest::prelude::*;

    use super::*;

    fn origin(stream_id: u64, stream_seq: u64, index: u32) -> Option<RecordOrigin> {
        Some(RecordOrigin { stream_id, stream_seq, index })
    }

    fn device(name: &str) -> DeviceId {
        DeviceId::new(name).unwrap()
    }

    #[test]
    fn a_batch_stored_twice_is_served_once() {
        let ap = device("ap-1");
        let mut filter = RepeatFilter::default();
        let served: Vec<bool> = [0, 1, 2, 0, 1, 2].into_iter().map(|i| filter.admit(&ap, origin(7, 1, i))).collect();
        assert_eq!(served, [true, true, true, false, false, false]);
        assert_eq!(filter.repeats, 3);
        // The next batch of the stream, and the same positions elsewhere.
        assert!(filter.admit(&ap, origin(7, 2, 0)));
        assert!(filter.admit(&ap, origin(8, 2, 0)));
        assert!(filter.admit(&device("ap-2"), origin(7, 2, 0)));
        assert!(filter.admit(&ap, None));
        assert!(filter.admit(&ap, None));
    }

    #[test]
    fn a_partial_first_copy_is_completed_by_the_second() {
        let ap = device("ap-1");
        let mut filter = RepeatFilter::default();
        let first: Vec<bool> = [0, 1].into_iter().map(|i| filter.admit(&ap, origin(7, 4, i))).collect();
        let second: Vec<bool> = [0, 1, 2, 3].into_iter().map(|i| filter.admit(&ap, origin(7, 4, i))).collect();
        assert_eq!(first, [true, true]);
        assert_eq!(second, [false, false, true, true]);
    }

    #[test]
    fn ranges_merge() {
        let mut ranges = Vec::new();
        for index in [5, 3, 4, 9, 0, 1, 2, 8, 6, 7] {
            assert!(!contains(&ranges, index));
            insert(&mut ranges, index);
            assert!(contains(&ranges, index));
        }
        assert_eq!(ranges, vec![0..10]);
        insert(&mut ranges, u64::from(u32::MAX));
        assert!(contains(&ranges, u64::from(u32::MAX)) && !contains(&ranges, 10));
    }

    /// One delivery attempt: a stream's batch, the positions that reached
    /// the disk in this attempt.
    fn attempts() -> impl Strategy<Value = Vec<(u8, u8, u64, Vec<u32>)>> {
        // (device, stream, sequence step, positions)
        proptest::collection::vec((0u8..3, 0u8..3, 0u64..2, proptest::collection::vec(0u32..40, 0..30)), 0..60)
            .prop_map(|raw| {
                // Sequences per stream never go down, as the collector enforces.
                let mut seq: HashMap<(u8, u8), u64> = HashMap::new();
                raw.into_iter()
                    .map(|(dev, stream, step, positions)| {
                        let s = seq.entry((dev, stream)).or_insert(1);
                        *s += step;
                        (dev, stream, *s, positions)
                    })
                    .collect()
            })
    }

    proptest! {
        /// In write order, every origin is served exactly once: nothing new
        /// hidden, nothing repeated.
        #[test]
        fn serves_each_origin_exactly_once(attempts in attempts()) {
            let devices: Vec<DeviceId> = (0..3).map(|i| device(&format!("dev-{i}"))).collect();
            let mut filter = RepeatFilter::default();
            let mut model = HashSet::new();
            for (dev, stream, seq, positions) in attempts {
                for index in positions {
                    let o = origin(u64::from(stream), seq, index);
                    let fresh = model.insert((dev, o));
                    prop_assert_eq!(filter.admit(&devices[usize::from(dev)], o), fresh);
                }
            }
        }

        /// In any order, a record never served before is served.
        #[test]
        fn never_hides_a_new_origin(raw in proptest::collection::vec((0u8..2, 0u64..4, 0u32..8), 0..200)) {
            let ap = device("ap-1");
            let mut filter = RepeatFilter::default();
            let mut model = HashSet::new();
            for (stream, seq, index) in raw {
                let o = origin(u64::from(stream), seq, index);
                if model.insert(o) {
                    prop_assert!(filter.admit(&ap, o));
                } else {
                    filter.admit(&ap, o);
                }
            }
        }
    }
}
