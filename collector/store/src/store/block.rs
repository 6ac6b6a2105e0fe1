//! What a block's plaintext holds, per segment format version, and which
//! batch its records came from.
//!
//! ```text
//! version 1:  postcard(Vec<StoredRecord>)
//! version 2:  postcard(Option<BlockOrigin>) || postcard(Vec<StoredRecord>)
//! version 3:  as version 2 (the header gained the data key version)
//! ```
//!
//! The origin names the agent stream, the batch's sequence number in it,
//! and the position of the block's first record among that batch's records
//! of this kind. A batch can reach the disk twice: its blocks become
//! durable, then the commit of its sequence number fails or the collector
//! dies before it, so the agent is never acknowledged and sends the same
//! batch again. The origin lets readers serve such a record once (see
//! [`super::repeats`]). A block holds records of one origin run only:
//! consecutive positions of one batch.

use serde::{Deserialize, Serialize};

use glimpse_common::identity::{DeviceId, DeviceKind};

use super::segment::MAX_PLAINTEXT_LEN;
use super::{StoreError, StoredRecord, StoredRecordRef};

/// Where one stored record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct RecordOrigin {
    /// The agent's stream (random per spool).
    pub(crate) stream_id: u64,
    /// The batch's sequence number in the stream.
    pub(crate) stream_seq: u64,
    /// Position among the batch's records of this data kind.
    pub(crate) index: u32,
}

impl RecordOrigin {
    /// Whether `next` directly follows `self` in the same batch, so both
    /// can share one block's origin.
    fn is_followed_by(&self, next: &RecordOrigin) -> bool {
        self.stream_id == next.stream_id
            && self.stream_seq == next.stream_seq
            && self.index.checked_add(1) == Some(next.index)
    }
}

/// The origin of a block's first record; the others follow it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct BlockOrigin {
    stream_id: u64,
    stream_seq: u64,
    first_index: u32,
}

/// A version 2 block plaintext, as it decodes.
#[derive(Deserialize)]
struct BlockBody {
    origin: Option<BlockOrigin>,
    records: Vec<StoredRecord>,
}

/// One record to store and its origin (`None` for records whose origin was
/// lost: those read from version 1 segments and rewritten by an erase).
pub(crate) type Stamped<'a> = (StoredRecordRef<'a>, Option<RecordOrigin>);

/// Splits records into block plaintexts of at most [`MAX_PLAINTEXT_LEN`]
/// bytes in the current format. A new block starts whenever the origin run
/// breaks, so each block's origin is its first record's.
pub(crate) fn encode_blocks(records: &[Stamped<'_>]) -> Result<Vec<Vec<u8>>, StoreError> {
    // The origin (at most 1 + 10 + 10 + 5 bytes of varints) and the varint
    // record count in front of the records.
    const ROOM: usize = 40;
    fn finish(origin: Option<RecordOrigin>, count: usize, body: &[u8]) -> Result<Vec<u8>, StoreError> {
        let origin =
            origin.map(|o| BlockOrigin { stream_id: o.stream_id, stream_seq: o.stream_seq, first_index: o.index });
        let mut block = Vec::with_capacity(ROOM + body.len());
        block = postcard::to_extend(&origin, block)?;
        // postcard writes a sequence as a varint length then the elements,
        // and a usize as the same varint.
        block = postcard::to_extend(&count, block)?;
        block.extend_from_slice(body);
        Ok(block)
    }
    let mut blocks = Vec::new();
    // Records are encoded straight onto the end of the block's body: no
    // buffer per record (the ingest path stores millions a second).
    let mut body = Vec::new();
    let mut count = 0usize;
    let mut first: Option<RecordOrigin> = None;
    let mut last: Option<RecordOrigin> = None;
    // A stored record encodes as its fields one after another, and a
    // batch's records share the first three (device, kind, receive time):
    // those are encoded once and copied.
    let mut prefix: Option<(&DeviceId, DeviceKind, i64)> = None;
    let mut prefix_bytes = Vec::new();
    for (record, origin) in records {
        let start = body.len();
        let this = (record.device, record.device_kind, record.received_at_ms);
        if prefix != Some(this) {
            prefix_bytes = postcard::to_stdvec(&this)?;
            prefix = Some(this);
        }
        body.extend_from_slice(&prefix_bytes);
        body = postcard::to_extend(record.record, body)?;
        let len = body.len() - start;
        if len + ROOM > MAX_PLAINTEXT_LEN {
            return Err(StoreError::RecordTooLarge { len });
        }
        let continues = match (&last, origin) {
            (Some(last), Some(next)) => last.is_followed_by(next),
            (None, None) => true,
            _ => false,
        };
        if count > 0 && (!continues || body.len() + ROOM > MAX_PLAINTEXT_LEN) {
            // This record starts the next block.
            blocks.push(finish(first, count, &body[..start])?);
            body.drain(..start);
            count = 0;
        }
        if count == 0 {
            first = *origin;
        }
        count += 1;
        last = *origin;
    }
    if count > 0 {
        blocks.push(finish(first, count, &body)?);
    }
    Ok(blocks)
}

/// Decodes a block plaintext of a segment of format `version`: its records
/// with their origins, or `None` if it does not decode completely.
/// How many records an [`encode_blocks`] plaintext holds, read from its
/// front without decoding them (for the segment catalog).
pub(crate) fn block_record_count(plaintext: &[u8]) -> u64 {
    postcard::take_from_bytes::<Option<BlockOrigin>>(plaintext)
        .ok()
        .and_then(|(_, rest)| postcard::take_from_bytes::<usize>(rest).ok())
        .map_or(0, |(count, _)| count as u64)
}

pub(crate) fn decode_block(version: u16, plaintext: &[u8]) -> Option<Vec<(StoredRecord, Option<RecordOrigin>)>> {
    match version {
        1 => match postcard::take_from_bytes::<Vec<StoredRecord>>(plaintext) {
            Ok((records, [])) => Some(records.into_iter().map(|r| (r, None)).collect()),
            _ => None,
        },
        // Version 3 changed the header only.
        2 | 3 => match postcard::take_from_bytes::<BlockBody>(plaintext) {
            Ok((BlockBody { origin: None, records }, [])) => Some(records.into_iter().map(|r| (r, None)).collect()),
            Ok((BlockBody { origin: Some(origin), records }, [])) => records
                .into_iter()
                .enumerate()
                .map(|(offset, record)| {
                    let index = u32::try_from(offset).ok().and_then(|o| origin.first_index.checked_add(o))?;
                    Some((
                        record,
                        Some(RecordOrigin { stream_id: origin.stream_id, stream_seq: origin.stream_seq, index }),
                    ))
                })
                .collect(),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use glimpse_common::identity::{DeviceId, DeviceKind};
    use glimpse_common::record::{DeviceMetadata, Record, RecordBody};
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Whatever the bytes, decoding returns or refuses; it never panics,
        /// and what it returns re-encodes to a block that decodes the same.
        #[test]
        fn any_plaintext_decodes_or_is_refused(version in 0u16..4, bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Some(records) = decode_block(version, &bytes) {
                let stamped: Vec<Stamped<'_>> = records.iter().map(|(r, o)| (r.borrowed(), *o)).collect();
                let again: Vec<_> = encode_blocks(&stamped)
                    .unwrap()
                    .iter()
                    .flat_map(|b| decode_block(super::super::segment::FORMAT_VERSION, b).unwrap())
                    .collect();
                prop_assert_eq!(again, records);
            }
        }

        /// Records of several devices, kinds and times in any order encode
        /// exactly as each stored record does on its own.
        #[test]
        fn a_shared_prefix_encodes_as_the_records_do(picks in proptest::collection::vec((0usize..2, 0usize..2, 0i64..2), 1..30)) {
            let devices = [DeviceId::new("ap-1").unwrap(), DeviceId::new("switch-22").unwrap()];
            let kinds = [DeviceKind::Ap, DeviceKind::Switch];
            let record = Record { observed_at_ms: 5, body: RecordBody::Metadata(DeviceMetadata::default()) };
            let stamped: Vec<Stamped<'_>> = picks
                .iter()
                .map(|&(d, k, t)| {
                    (StoredRecordRef { device: &devices[d], device_kind: kinds[k], received_at_ms: 1_000 + t, record: &record }, None)
                })
                .collect();
            let blocks = encode_blocks(&stamped).unwrap();
            prop_assert_eq!(blocks.len(), 1);
            let mut expected = postcard::to_stdvec(&None::<BlockOrigin>).unwrap();
            expected.extend(postcard::to_stdvec(&stamped.len()).unwrap());
            for (r, _) in &stamped {
                expected.extend(postcard::to_stdvec(r).unwrap());
            }
            prop_assert_eq!(&blocks[0], &expected);
        }

        /// Any run of origins survives encoding, however it splits.
        #[test]
        fn origins_round_trip(origins in proptest::collection::vec(proptest::option::of((0u64..3, 0u64..3, 0u32..6)), 0..40)) {
            let device = DeviceId::new("ap-1").unwrap();
            let record = Record { observed_at_ms: 1, body: RecordBody::Metadata(DeviceMetadata::default()) };
            let stamped: Vec<Stamped<'_>> = origins
                .iter()
                .map(|o| {
                    let origin = o.map(|(stream_id, stream_seq, index)| RecordOrigin { stream_id, stream_seq, index });
                    (StoredRecordRef { device: &device, device_kind: DeviceKind::Ap, received_at_ms: 2, record: &record }, origin)
                })
                .collect();
            let decoded: Vec<Option<RecordOrigin>> = encode_blocks(&stamped)
                .unwrap()
                .iter()
                .flat_map(|b| decode_block(super::super::segment::FORMAT_VERSION, b).unwrap())
                .map(|(_, o)| o)
                .collect();
            let expected: Vec<Option<RecordOrigin>> = stamped.iter().map(|(_, o)| *o).collect();
            prop_assert_eq!(decoded, expected);
        }
    }
}
