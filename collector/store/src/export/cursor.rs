//! The export cursor: an opaque, versioned, bounded string naming the last
//! record a consumer received, so that an export can resume right after it.
//!
//! # Format
//!
//! base64url without padding (so it travels in a URL query unescaped) of
//! 50 bytes, integers big-endian:
//!
//! ```text
//! version        u8    1
//! kind           u8    the data kind's number (metadata 0, capture 1, ...)
//! day            i64   UTC day of the record's segment
//! segment seq    u64   the segment's sequence within its day
//! segment id     u64   the segment's id
//! ordinal        u32   the record's position in the segment
//! received_at    i64   Unix milliseconds
//! batch          u64   digest of the record's device, stream and sequence
//! index          u32   the record's position in its batch
//! ```
//!
//! It is a position in the store's read order (see
//! [`crate::store::ReadMark`]), not a secret and not authenticated: a
//! forged cursor can only make an export start somewhere else in data the
//! caller may read anyway. Anything but exactly this length and version is
//! refused.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use glimpse_common::record::DataKind;

use crate::store::ReadMark;

const VERSION: u8 = 1;
const LEN: usize = 50;
/// The longest cursor text accepted (the encoding of [`LEN`] bytes).
pub const MAX_CURSOR_LEN: usize = 67;

/// A cursor was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CursorError {
    /// Not base64url, or not the right length.
    #[error("not an export cursor (use the cursor of an exported line or packet, unchanged)")]
    Malformed,
    /// Written by another version of the collector.
    #[error("export cursor version {0} is not supported (this collector writes version 1)")]
    Version(u8),
    /// For a kind other than the one asked for.
    #[error("this cursor continues an export of {found}, not of {asked}")]
    Kind {
        /// The kind the cursor belongs to.
        found: String,
        /// The kind asked for.
        asked: DataKind,
    },
}

/// Where an export of one kind stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportCursor {
    /// The kind exported.
    pub kind: DataKind,
    /// The last record received.
    pub mark: ReadMark,
}

fn kind_number(kind: DataKind) -> u8 {
    DataKind::ALL.iter().position(|k| *k == kind).unwrap_or(u8::MAX as usize) as u8
}

impl ExportCursor {
    /// The cursor's text.
    pub fn encode(&self) -> String {
        let m = &self.mark;
        let mut bytes = Vec::with_capacity(LEN);
        bytes.push(VERSION);
        bytes.push(kind_number(self.kind));
        bytes.extend_from_slice(&m.day.to_be_bytes());
        bytes.extend_from_slice(&m.segment_seq.to_be_bytes());
        bytes.extend_from_slice(&m.segment_id.to_be_bytes());
        bytes.extend_from_slice(&m.ordinal.to_be_bytes());
        bytes.extend_from_slice(&m.received_at_ms.to_be_bytes());
        bytes.extend_from_slice(&m.batch.to_be_bytes());
        bytes.extend_from_slice(&m.index.to_be_bytes());
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Reads a cursor's text, for an export of `kind`.
    pub fn decode(text: &str, kind: DataKind) -> Result<Self, CursorError> {
        if text.len() != MAX_CURSOR_LEN {
            return Err(CursorError::Malformed);
        }
        let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| CursorError::Malformed)?;
        let bytes: [u8; LEN] = bytes.try_into().map_err(|_| CursorError::Malformed)?;
        if bytes[0] != VERSION {
            return Err(CursorError::Version(bytes[0]));
        }
        if bytes[1] != kind_number(kind) {
            let found = DataKind::ALL.get(usize::from(bytes[1])).map_or("an unknown kind".into(), |k| k.to_string());
            return Err(CursorError::Kind { found, asked: kind });
        }
        let u64_at = |at: usize| u64::from_be_bytes(bytes[at..at + 8].try_into().unwrap_or_default());
        let mark = ReadMark {
            day: u64_at(2) as i64,
            segment_seq: u64_at(10),
            segment_id: u64_at(18),
            ordinal: u32::from_be_bytes(bytes[26..30].try_into().unwrap_or_default()),
            received_at_ms: u64_at(30) as i64,
            batch: u64_at(38),
            index: u32::from_be_bytes(bytes[46..50].try_into().unwrap_or_default()),
        };
        Ok(Self { kind, mark })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn mark() -> impl Strategy<Value = ReadMark> {
        (any::<i64>(), any::<u64>(), any::<u64>(), any::<u32>(), any::<i64>(), any::<u64>(), any::<u32>()).prop_map(
            |(day, segment_seq, segment_id, ordinal, received_at_ms, batch, index)| ReadMark {
                day,
                segment_seq,
                segment_id,
                ordinal,
                received_at_ms,
                batch,
                index,
            },
        )
    }

    proptest! {
        #[test]
        fn cursors_round_trip_and_fit_a_url(mark in mark(), kind in prop::sample::select(DataKind::ALL.to_vec())) {
            let text = ExportCursor { kind, mark }.encode();
            prop_assert_eq!(text.len(), MAX_CURSOR_LEN);
            prop_assert!(text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
            prop_assert_eq!(ExportCursor::decode(&text, kind), Ok(ExportCursor { kind, mark }));
        }

        #[test]
        fn arbitrary_text_is_refused_cleanly(text in ".{0,100}") {
            let _ = ExportCursor::decode(&text, DataKind::Capture);
        }
    }

    #[test]
    fn wrong_kind_version_or_length_is_refused() {
        let mark =
            ReadMark { day: 1, segment_seq: 2, segment_id: 3, ordinal: 4, received_at_ms: 5, batch: 6, index: 7 };
        let text = ExportCursor { kind: DataKind::Metadata, mark }.encode();
        assert!(matches!(ExportCursor::decode(&text, DataKind::Capture), Err(CursorError::Kind { .. })));
        assert_eq!(ExportCursor::decode(&text[1..], DataKind::Metadata), Err(CursorError::Malformed));
        assert_eq!(ExportCursor::decode(&format!("{text}A"), DataKind::Metadata), Err(CursorError::Malformed));
        let mut bytes = URL_SAFE_NO_PAD.decode(&text).unwrap();
        bytes[0] = 2;
        assert_eq!(
            ExportCursor::decode(&URL_SAFE_NO_PAD.encode(bytes), DataKind::Metadata),
            Err(CursorError::Version(2))
        );
    }
}
