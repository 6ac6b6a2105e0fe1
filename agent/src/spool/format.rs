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
//! A tail cut short by a crash is expected and dropped. A checksum or
//! decoding failure anywhere else means the file is not what we wrote: the
//! whole spool is reported corrupt and discarded, never half believed.

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
}

/// Replays a whole spool file. A tail cut short mid-entry is ignored
/// (`valid_len` says where the good part ends); anything else wrong is an
/// error, and the caller discards the file.
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
    loop {
        let rest = &bytes[offset..];
        if rest.len() < ENTRY_HEADER_LEN {
            break;
        }
        let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let crc = u32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]);
        if len > MAX_ENTRY_LEN {
            return Err(SpoolFormatError::TooLong { offset, len });
        }
        let Some(body) = rest.get(ENTRY_HEADER_LEN..ENTRY_HEADER_LEN + len) else {
            break; // torn tail
        };
        if crc32fast::hash(body) != crc {
            // The last entry half-written by a crash has a length and a
            // short body; a full-length body with the wrong checksum is
            // damage, wherever it is.
            return Err(SpoolFormatError::Checksum { offset });
        }
        let entry: SpoolEntry =
            postcard::from_bytes(body).map_err(|e| SpoolFormatError::Undecodable { offset, reason: e.to_string() })?;
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
    fn a_torn_tail_is_dropped_and_damage_is_refused() {
        let bytes = log(&[rec(0), rec(1)]);
        for cut in HEADER_LEN..bytes.len() {
            let state = replay(&bytes[..cut]).unwrap();
            assert!(state.queued.len() <= 2 && state.valid_len <= cut);
        }
        let mut damaged = bytes.clone();
        let last = damaged.len() - 1;
        damaged[last] ^= 0x40;
        assert!(matches!(replay(&damaged), Err(SpoolFormatError::Checksum { .. })));
        let mut huge = bytes.clone();
        huge[HEADER_LEN..HEADER_LEN + 4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(replay(&huge), Err(SpoolFormatError::TooLong { .. })));
        assert_eq!(replay(b"GLSPOOL\x02xxxxxxxx"), Err(SpoolFormatError::BadHeader));
        assert_eq!(replay(b""), Err(SpoolFormatError::BadHeader));
    }

    proptest::proptest! {
        /// Any bytes after a valid header: a state or a clear error, never a panic.
        #[test]
        fn arbitrary_bytes_never_panic(tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048)) {
            let mut bytes = encode_header(1).to_vec();
            bytes.extend_from_slice(&tail);
            let _ = replay(&bytes);
        }

        /// Any single flipped bit in a written log's entries is caught, or
        /// (in a length field) reads as a torn tail before it; it never
        /// yields records that were not written.
        #[test]
        fn a_flipped_byte_is_caught(at in 0usize..400, bit in 0u8..8) {
            let bytes = log(&[rec(0), rec(1), SpoolEntry::Batched { seq: 1, ids: ids(&[0]) }, rec(2)]);
            let mut damaged = bytes.clone();
            let at = HEADER_LEN + at % (damaged.len() - HEADER_LEN);
            damaged[at] ^= 1 << bit;
            if let Ok(state) = replay(&damaged) {
                // Only a length field grown past the end reads as a torn tail.
                let all: Vec<u64> = state.in_flight.iter().flat_map(|(_, b)| b.iter().map(|(id, _)| *id)).chain(state.queued.iter().map(|(id, _)| *id)).collect();
                proptest::prop_assert!(all.iter().all(|id| *id <= 2));
                proptest::prop_assert!(state.valid_len <= at);
            }
        }
    }
}
