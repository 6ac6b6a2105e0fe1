//! The spool file format, as plain functions: no file handles here.
//!
//! ```text
//! header  "GLSPOOL" 0x01 | stream id (u64 BE)
//! entry   body length (u32 BE) | CRC-32 of body (u32 BE) | body (postcard SpoolEntry)
//! ```
//!
//! The file is a log. Records are appended as they are queued; forming a
//! batch, an acknowledgement and a removal (queue overflow, consent
//! withdrawn) each append one small entry. Replaying the log gives the
//! unacknowledged records, the in-flight batch with its sequence number
//! (so that a batch the collector stored just before a crash is recognised
//! as a duplicate), and the stream id the sequence numbers belong to.
//!
//! A tail cut short by a crash is expected and dropped. Every entry carries
//! its own checksum, so damage elsewhere (a flipped bit on flash) costs only
//! the entries it touches, never what is around them:
//!
//! - an entry whose checksum fails is re-read with each single bit of its
//!   length flipped back; if one of those lengths gives a body that matches
//!   the checksum, the damage was in the length and the entry is kept whole;
//! - otherwise, if its length leads to the end of the file or to a sound
//!   entry, that one entry is skipped and counted ([`SpoolDamage`]);
//! - otherwise the reader looks for the next sound entry byte by byte (with
//!   a bound on the work, so a wrecked file cannot stall a device) and
//!   skips what lies between.
//!
//! An entry is "sound" when its length is within bounds, its body is all
//! there and its CRC-32 matches: the chance that damage forges one is about
//! one in four billion per position tried. Skipped entries are counted as
//! records lost when their body starts like a `Record` entry. Only the
//! header (magic, version, stream id) is not protected: damage there makes
//! the whole file unusable ([`SpoolFormatError::BadHeader`]).
//!
//! What a skipped entry costs depends on what it was: a `Record` is lost; a
//! `Removed` brings records back that were dropped (an overflow, or captures
//! whose consent was withdrawn, which the collector drops again on arrival);
//! a `Batched` returns its records to the queue, to go out in a new batch;
//! an `Acked` is learnt again from the collector's welcome.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use glimpse_common::bounded::BoundedVec;
use glimpse_common::record::Record;

/// First bytes of a spool file; the last byte is the format version.
pub const MAGIC: [u8; 8] = *b"GLSPOOL\x01";
/// Header length: magic and stream id.
pub const HEADER_LEN: usize = 16;
/// Per-entry framing: length and checksum.
pub const ENTRY_HEADER_LEN: usize = 8;
/// Largest entry body accepted: one record, or a removal list.
pub const MAX_ENTRY_LEN: usize = 1024 * 1024;
/// Most ids one removal entry lists.
pub const MAX_REMOVED_PER_ENTRY: usize = 4096;

/// One log entry. Variants are only ever appended: the order is the format.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SpoolEntry {
    /// A record queued for the collector, with the agent's id for it.
    Record {
        /// Increasing per spool; never reused.
        id: u64,
        /// The record.
        record: Record,
    },
    /// These queued records are gone (dropped when full, or captures
    /// discarded when consent was withdrawn).
    Removed {
        /// Their ids.
        ids: BoundedVec<u64, MAX_REMOVED_PER_ENTRY>,
    },
    /// The records with these ids (those not removed) form batch `seq`.
    Batched {
        /// The batch's stream sequence number.
        seq: u64,
        /// Ids in the batch, in order.
        ids: BoundedVec<u64, { glimpse_common::wire::MAX_RECORDS_PER_BATCH }>,
    },
    /// Every batch up to `seq` is acknowledged: its records are stored.
    Acked {
        /// The acknowledged sequence number.
        seq: u64,
    },
}

/// Why a spool file cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpoolFormatError {
    /// Not a spool file, or another version.
    #[error("not a Glimpse spool (bad magic or version)")]
    BadHeader,
    /// An entry's checksum does not match: the file was altered or the disk
    /// returned other bytes than were written.
    #[error("entry at offset {offset}: checksum mismatch")]
    Checksum {
        /// Byte offset of the entry.
        offset: usize,
    },
    /// An entry is longer than any the agent writes.
    #[error("entry at offset {offset}: length {len} exceeds {MAX_ENTRY_LEN}")]
    TooLong {
        /// Byte offset of the entry.
        offset: usize,
        /// The claimed length.
        len: usize,
    },
    /// An entry's checksum matches but its contents do not decode.
    #[error("entry at offset {offset}: {reason}")]
    Undecodable {
        /// Byte offset of the entry.
        offset: usize,
        /// The decoder's reason.
        reason: String,
    },
}

/// The `Record` entry, serialised from a borrowed record. Same variant
/// index and fields as [`SpoolEntry::Record`], so the bytes are the same.
#[derive(Serialize)]
enum RecordEntryRef<'a> {
    Record { id: u64, record: &'a Record },
}

/// Appends one framed `Record` entry without cloning the record.
pub fn encode_record(id: u64, record: &Record, out: &mut Vec<u8>) -> Result<(), postcard::Error> {
    frame(&postcard::to_stdvec(&RecordEntryRef::Record { id, record })?, out);
    Ok(())
}

fn frame(body: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&crc32fast::hash(body).to_be_bytes());
    out.extend_from_slice(body);
}

/// Encodes the file header.
pub fn encode_header(stream_id: u64) -> [u8; HEADER_LEN] {
    let mut out = [0u8; HEADER_LEN];
    out[..8].copy_from_slice(&MAGIC);
    out[8..].copy_from_slice(&stream_id.to_be_bytes());
    out
}

/// Appends one framed entry to `out`.
pub fn encode_entry(entry: &SpoolEntry, out: &mut Vec<u8>) -> Result<(), postcard::Error> {
    frame(&postcard::to_stdvec(entry)?, out);
    Ok(())
}

/// What replaying a spool gives back.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SpoolState {
    /// The stream the sequence numbers belong to.
    pub stream_id: u64,
    /// The batch that was sent (or about to be) and not acknowledged.
    pub in_flight: Option<(u64, Vec<(u64, Record)>)>,
    /// Records not yet in a batch, oldest first.
    pub queued: Vec<(u64, Record)>,
    /// The next record id to hand out.
    pub next_id: u64,
    /// The highest acknowledged sequence number seen.
    pub acked_seq: u64,
    /// Bytes of the file that replay used; a torn tail lies past it.
    pub valid_len: usize,
    /// Damaged entries that were skipped.
    pub damage: SpoolDamage,
}

/// What replay had to skip over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SpoolDamage {
    /// Damaged entries (or damaged regions, where the framing was lost) skipped.
    pub entries: u64,
    /// Of those, the ones that were records: records lost.
    pub records: u64,
    /// Bytes skipped.
    pub bytes: u64,
    /// Entries whose damaged length was repaired, kept whole.
    pub repaired: u64,
}

impl SpoolDamage {
    /// Whether anything was damaged.
    pub fn is_empty(&self) -> bool {
        *self == SpoolDamage::default()
    }
}

/// Most bytes hashed while looking for the next sound entry after damage,
/// per file: a bound on the work a wrecked spool can cause.
const MAX_RESYNC_WORK: usize = 64 * 1024 * 1024;

/// The length and checksum of the entry framed at `at`.
fn entry_header(bytes: &[u8], at: usize) -> Option<(usize, u32)> {
    let h = bytes.get(at..at.checked_add(ENTRY_HEADER_LEN)?)?;
    Some((u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize, u32::from_be_bytes([h[4], h[5], h[6], h[7]])))
}

/// The body at `at` with length `len`, if it is all there, within bounds
/// and matches `crc`; `work` counts the bytes hashed.
fn sound_body<'a>(bytes: &'a [u8], at: usize, len: usize, crc: u32, work: &mut usize) -> Option<&'a [u8]> {
    // No entry is empty, and an empty body's CRC-32 is 0: zeroed bytes
    // must not read as entries.
    if len == 0 || len > MAX_ENTRY_LEN {
        return None;
    }
    let start = at.checked_add(ENTRY_HEADER_LEN)?;
    let body = bytes.get(start..start.checked_add(len)?)?;
    *work = work.saturating_add(len);
    (crc32fast::hash(body) == crc).then_some(body)
}

/// Whether a sound entry starts at `at`.
fn sound_entry_at(bytes: &[u8], at: usize, work: &mut usize) -> bool {
    entry_header(bytes, at).is_some_and(|(len, crc)| sound_body(bytes, at, len, crc, work).is_some())
}

/// Whether a damaged body was a `Record` entry: it starts with variant 0,
/// or it is one whose variant byte was hit (it decodes whole as a record
/// with variant 0, and not as what it says).
fn looks_like_record(body: &[u8]) -> bool {
    fn decodes_whole(body: &[u8]) -> Option<SpoolEntry> {
        match postcard::take_from_bytes::<SpoolEntry>(body) {
            Ok((entry, [])) => Some(entry),
            _ => None,
        }
    }
    match body.first() {
        None | Some(0) => true,
        Some(_) => {
            let mut fixed = body.to_vec();
            fixed[0] = 0;
            decodes_whole(body).is_none() && matches!(decodes_whole(&fixed), Some(SpoolEntry::Record { .. }))
        }
    }
}

/// Replays a whole spool file. A tail cut short mid-entry is ignored
/// (`valid_len` says where the good part ends); damaged entries are skipped
/// and counted in [`SpoolState::damage`] (see the module docs). Only a bad
/// header is an error, and the caller discards the file.
pub fn replay(bytes: &[u8]) -> Result<SpoolState, SpoolFormatError> {
    if bytes.len() < HEADER_LEN || bytes[..8] != MAGIC {
        return Err(SpoolFormatError::BadHeader);
    }
    let mut stream_id_bytes = [0u8; 8];
    stream_id_bytes.copy_from_slice(&bytes[8..16]);
    let mut state = SpoolState { stream_id: u64::from_be_bytes(stream_id_bytes), ..SpoolState::default() };
    let mut records: BTreeMap<u64, Record> = BTreeMap::new();
    let mut batches: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    let mut offset = HEADER_LEN;
    let mut work = 0usize;
    // Ends at the end of the file or at a torn tail.
    while let Some((len, crc)) = entry_header(bytes, offset) {
        let body = match sound_body(bytes, offset, len, crc, &mut work) {
            Some(body) => body,
            None => match recover(bytes, offset, len, crc, &mut work, &mut state.damage) {
                Recovery::Repaired(repaired_len) => {
                    state.damage.repaired += 1;
                    let start = offset + ENTRY_HEADER_LEN;
                    let body = &bytes[start..start + repaired_len];
                    apply(body, offset, &mut state, &mut records, &mut batches);
                    offset = start + repaired_len;
                    continue;
                }
                Recovery::SkipTo(next) => {
                    offset = next;
                    continue;
                }
                Recovery::TornTail => break,
            },
        };
        apply(body, offset, &mut state, &mut records, &mut batches);
        offset += ENTRY_HEADER_LEN + len;
    }
    state.valid_len = offset;
    // One batch is in flight at a time; should the log name several (it
    // never does), the lowest goes first and the rest are re-queued.
    if let Some((&seq, ids)) = batches.iter().next() {
        let members: Vec<(u64, Record)> =
            ids.iter().filter_map(|id| records.get(id).map(|r| (*id, r.clone()))).collect();
        if !members.is_empty() {
            for (id, _) in &members {
                records.remove(id);
            }
            state.in_flight = Some((seq, members));
        }
    }
    state.queued = records.into_iter().collect();
    Ok(state)
}

/// What to do about an entry that is not sound.
enum Recovery {
    /// Its length was damaged; this one is right.
    Repaired(usize),
    /// Skip to this offset (the damage is counted).
    SkipTo(usize),
    /// Nothing sound follows and the entry runs past the end: a write cut
    /// short by a crash, not damage.
    TornTail,
}

fn recover(bytes: &[u8], offset: usize, len: usize, crc: u32, work: &mut usize, damage: &mut SpoolDamage) -> Recovery {
    // A flipped bit in the length: the body and its checksum are intact.
    for bit in 0..32 {
        let candidate = len ^ (1 << bit);
        if sound_body(bytes, offset, candidate, crc, work).is_some() {
            return Recovery::Repaired(candidate);
        }
    }
    let start = offset + ENTRY_HEADER_LEN;
    let whole = len <= MAX_ENTRY_LEN && start.checked_add(len).is_some_and(|end| end <= bytes.len());
    if whole {
        // The length holds: skip exactly this entry if what follows is sound.
        let next = start + len;
        if next == bytes.len() || sound_entry_at(bytes, next, work) || entry_header(bytes, next).is_none() {
            damage.entries += 1;
            damage.records += u64::from(looks_like_record(&bytes[start..next]));
            damage.bytes += (next - offset) as u64;
            return Recovery::SkipTo(next);
        }
    }
    // The framing is lost: find the next sound entry, within the work bound.
    let mut at = offset + 1;
    while at + ENTRY_HEADER_LEN <= bytes.len() && *work < MAX_RESYNC_WORK {
        if sound_entry_at(bytes, at, work) {
            damage.entries += 1;
            damage.records += u64::from(looks_like_record(bytes.get(start..at).unwrap_or_default()));
            damage.bytes += (at - offset) as u64;
            return Recovery::SkipTo(at);
        }
        at += 1;
    }
    if !whole {
        return Recovery::TornTail;
    }
    // A whole entry that fails its checksum at the end of the file is
    // damage, not a torn write.
    damage.entries += 1;
    damage.records += u64::from(looks_like_record(&bytes[start..start + len]));
    damage.bytes += (bytes.len() - offset) as u64;
    Recovery::SkipTo(bytes.len())
}

/// Applies one sound entry. One whose checksum matches but which does not
/// decode (written by a newer agent, or forged by damage) is skipped.
fn apply(
    body: &[u8],
    offset: usize,
    state: &mut SpoolState,
    records: &mut BTreeMap<u64, Record>,
    batches: &mut BTreeMap<u64, Vec<u64>>,
) {
    let entry: SpoolEntry = match postcard::from_bytes(body) {
        Ok(entry) => entry,
        Err(e) => {
            tracing::debug!(offset, "spool entry skipped: {e}");
            state.damage.entries += 1;
            state.damage.records += u64::from(looks_like_record(body));
            state.damage.bytes += (ENTRY_HEADER_LEN + body.len()) as u64;
            return;
        }
    };
    match entry {
        SpoolEntry::Record { id, record } => {
            state.next_id = state.next_id.max(id.saturating_add(1));
            records.insert(id, record);
        }
        SpoolEntry::Removed { ids } => {
            for id in ids.iter() {
                records.remove(id);
            }
        }
        SpoolEntry::Batched { seq, ids } => {
            batches.insert(seq, ids.to_vec());
        }
        SpoolEntry::Acked { seq } => {
            state.acked_seq = state.acked_seq.max(seq);
            let done: Vec<u64> = batches.range(..=seq).map(|(s, _)| *s).collect();
            for s in done {
                for id in batches.remove(&s).unwrap_or_default() {
                    records.remove(&id);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use glimpse_common::record::{DeviceMetadata, RecordBody};

    fn record(n: i64) -> Record {
        Record { observed_at_ms: n, body: RecordBody::Metadata(DeviceMetadata::default()) }
    }

    fn log(entries: &[SpoolEntry]) -> Vec<u8> {
        let mut out = encode_header(42).to_vec();
        for e in entries {
            encode_entry(e, &mut out).unwrap();
        }
        out
    }

    fn rec(id: u64) -> SpoolEntry {
        SpoolEntry::Record { id, record: record(id as i64) }
    }

    fn ids(list: &[u64]) -> BoundedVec<u64, { glimpse_common::wire::MAX_RECORDS_PER_BATCH }> {
        BoundedVec::truncating(list.to_vec())
    }

    #[test]
    fn replay_gives_in_flight_batch_and_queue() {
        let bytes = log(&[
            rec(0),
            rec(1),
            rec(2),
            SpoolEntry::Batched { seq: 7, ids: ids(&[0, 1]) },
            SpoolEntry::Acked { seq: 7 },
            rec(3),
            SpoolEntry::Batched { seq: 8, ids: ids(&[2, 3]) },
            rec(4),
            rec(5),
            SpoolEntry::Removed { ids: BoundedVec::truncating(vec![4]) },
        ]);
        let state = replay(&bytes).unwrap();
        assert_eq!(state.stream_id, 42);
        assert_eq!(state.acked_seq, 7);
        let (seq, batch) = state.in_flight.unwrap();
        assert_eq!((seq, batch.iter().map(|(id, _)| *id).collect::<Vec<_>>()), (8, vec![2, 3]));
        assert_eq!(state.queued.iter().map(|(id, _)| *id).collect::<Vec<_>>(), vec![5]);
        assert_eq!(state.next_id, 6);
        assert_eq!(state.valid_len, bytes.len());
    }

    #[test]
    fn borrowed_record_entries_encode_like_owned_ones() {
        let mut borrowed = Vec::new();
        encode_record(9, &record(9), &mut borrowed).unwrap();
        let mut owned = Vec::new();
        encode_entry(&rec(9), &mut owned).unwrap();
        assert_eq!(borrowed, owned);
    }

    #[test]
    fn a_torn_tail_is_dropped_and_damage_costs_only_the_damaged_entry() {
        let bytes = log(&[rec(0), rec(1)]);
        for cut in HEADER_LEN..bytes.len() {
            let state = replay(&bytes[..cut]).unwrap();
            assert!(state.queued.len() <= 2 && state.valid_len <= cut);
            assert!(state.damage.is_empty(), "a torn tail is not damage (cut at {cut})");
        }
        // The last record's body damaged: it alone is lost, and counted.
        let mut damaged = bytes.clone();
        let last = damaged.len() - 1;
        damaged[last] ^= 0x40;
        let state = replay(&damaged).unwrap();
        assert_eq!(state.queued.iter().map(|(id, _)| *id).collect::<Vec<_>>(), vec![0]);
        assert_eq!((state.damage.entries, state.damage.records), (1, 1));
        assert_eq!(state.valid_len, damaged.len(), "the damaged entry is not a torn tail to cut");
        // A length blown past every bound is repaired back from the checksum.
        let mut huge = bytes.clone();
        huge[HEADER_LEN] ^= 0x80;
        let state = replay(&huge).unwrap();
        assert_eq!(state.queued.len(), 2);
        assert_eq!(state.damage, SpoolDamage { repaired: 1, ..SpoolDamage::default() });
        // Several bytes of the first entry wrecked: the reader finds the next.
        let mut wrecked = bytes.clone();
        for b in &mut wrecked[HEADER_LEN..HEADER_LEN + 6] {
            *b = 0xff;
        }
        let state = replay(&wrecked).unwrap();
        assert_eq!(state.queued.iter().map(|(id, _)| *id).collect::<Vec<_>>(), vec![1]);
        assert_eq!(state.damage.entries, 1);
        assert_eq!(replay(b"GLSPOOL\x02xxxxxxxx"), Err(SpoolFormatError::BadHeader));
        assert_eq!(replay(b""), Err(SpoolFormatError::BadHeader));
    }

    /// A record whose entry is `size`-ish bytes long, so that entries differ.
    fn sized(id: u64, size: usize) -> SpoolEntry {
        let metadata = DeviceMetadata {
            hostname: glimpse_common::bounded::BoundedString::truncating(&"h".repeat(size)),
            ..DeviceMetadata::default()
        };
        SpoolEntry::Record { id, record: Record { observed_at_ms: id as i64, body: RecordBody::Metadata(metadata) } }
    }

    /// Live records (id and record) of a replayed state.
    fn live(state: &SpoolState) -> BTreeMap<u64, Record> {
        state.in_flight.iter().flat_map(|(_, b)| b.iter().cloned()).chain(state.queued.iter().cloned()).collect()
    }

    /// Flips `bit` of `bytes[at]` in a log of `entries` and checks that only
    /// the entry holding that byte is lost: every other record is read back
    /// as written, none is invented, and a lost record is counted.
    fn only_the_damaged_entry_is_lost(entries: &[SpoolEntry], at: usize, bit: u8) -> Result<(), String> {
        let bytes = log(entries);
        let intact = replay(&bytes).unwrap();
        let written: BTreeMap<u64, Record> = entries
            .iter()
            .filter_map(|e| match e {
                SpoolEntry::Record { id, record } => Some((*id, record.clone())),
                _ => None,
            })
            .collect();
        // Which entry holds the byte.
        let mut offset = HEADER_LEN;
        let mut hit = None;
        for entry in entries {
            let mut one = Vec::new();
            encode_entry(entry, &mut one).unwrap();
            if (offset..offset + one.len()).contains(&at) {
                hit = Some(entry);
            }
            offset += one.len();
        }
        let mut damaged = bytes.clone();
        damaged[at] ^= 1 << bit;
        let state = replay(&damaged).map_err(|e| format!("flip at {at}: {e}"))?;
        let got = live(&state);
        for (id, record) in &got {
            if written.get(id) != Some(record) {
                return Err(format!("flip at {at}: record {id} was not written like that"));
            }
        }
        let lost_id = match hit {
            Some(SpoolEntry::Record { id, .. }) => Some(*id),
            _ => None,
        };
        for id in live(&intact).keys() {
            if !got.contains_key(id) && Some(*id) != lost_id {
                return Err(format!("flip at {at}: record {id} lost, but the damage was in {hit:?}"));
            }
        }
        let lost = live(&intact).keys().filter(|id| !got.contains_key(id)).count() as u64;
        if lost > state.damage.records {
            return Err(format!("flip at {at}: {lost} records lost, {} counted", state.damage.records));
        }
        if state.damage.entries > 1 {
            return Err(format!("flip at {at}: {:?}", state.damage));
        }
        Ok(())
    }

    #[test]
    fn every_single_bit_flip_loses_at_most_its_own_entry() {
        let entries = [
            rec(0),
            sized(1, 40),
            SpoolEntry::Batched { seq: 1, ids: ids(&[0, 1]) },
            sized(2, 3),
            SpoolEntry::Removed { ids: BoundedVec::truncating(vec![2]) },
            sized(3, 100),
            SpoolEntry::Acked { seq: 1 },
            sized(4, 0),
            SpoolEntry::Batched { seq: 2, ids: ids(&[3]) },
            sized(5, 7),
        ];
        let len = log(&entries).len();
        for at in HEADER_LEN..len {
            for bit in 0..8 {
                only_the_damaged_entry_is_lost(&entries, at, bit).unwrap();
            }
        }
    }

    proptest::proptest! {
        /// Any bytes after a valid header: a state or a clear error, never a panic.
        #[test]
        fn arbitrary_bytes_never_panic(tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048)) {
            let mut bytes = encode_header(1).to_vec();
            bytes.extend_from_slice(&tail);
            let _ = replay(&bytes);
        }

        /// Any bit flipped anywhere after the header of a spool of records
        /// of any sizes: never a panic, only the damaged entry lost.
        #[test]
        fn a_flipped_bit_loses_only_its_entry(
            sizes in proptest::collection::vec(0usize..300, 1..12),
            at in proptest::prelude::any::<proptest::sample::Index>(),
            bit in 0u8..8,
        ) {
            let mut entries: Vec<SpoolEntry> = sizes.iter().enumerate().map(|(i, n)| sized(i as u64, *n)).collect();
            entries.insert(entries.len() / 2, SpoolEntry::Batched { seq: 1, ids: ids(&[0]) });
            let len = log(&entries).len();
            let at = HEADER_LEN + at.index(len - HEADER_LEN);
            if let Err(e) = only_the_damaged_entry_is_lost(&entries, at, bit) {
                return Err(proptest::test_runner::TestCaseError::fail(e));
            }
        }

        /// A flipped bit in the header is refused as a bad header, or (in the
        /// stream id) read as another stream; never a panic.
        #[test]
        fn a_flipped_header_bit_never_panics(at in 0usize..HEADER_LEN, bit in 0u8..8) {
            let mut bytes = log(&[rec(0)]);
            bytes[at] ^= 1 << bit;
            let _ = replay(&bytes);
        }
    }
}
