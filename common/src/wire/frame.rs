//! Length-prefixed frames.
//!
//! ```text
//! +----------------------+------------------------------+
//! | length: u32 BE       | payload: `length` bytes      |
//! +----------------------+------------------------------+
//! ```
//!
//! The length is checked against the receiver's bound *before* any payload
//! is buffered, so a peer claiming a 4 GiB frame costs four bytes of memory.
//! Zero-length frames are refused: no message encodes to nothing.

/// Bytes in a frame header.
pub const FRAME_HEADER_LEN: usize = 4;

/// Default largest payload accepted: 1 MiB.
pub const DEFAULT_MAX_FRAME_LEN: usize = 1 << 20;

/// A frame could not be read or written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The header announced a payload over the bound.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Announced payload length.
        len: usize,
        /// The receiver's bound.
        max: usize,
    },
    /// The header announced an empty payload.
    #[error("empty frame")]
    Empty,
}

/// Parses one frame from the front of `input`.
///
/// Returns `Ok(None)` when more bytes are needed (the caller reads more and
/// calls again), or `Ok(Some((payload, consumed)))` where `payload` borrows
/// from `input` and `consumed` is how many bytes of `input` the frame used.
pub fn parse_frame(input: &[u8], max_len: usize) -> Result<Option<(&[u8], usize)>, FrameError> {
    let Some(header) = input.first_chunk::<FRAME_HEADER_LEN>() else {
        return Ok(None);
    };
    let len = announced_len(header, max_len)?;
    let total = FRAME_HEADER_LEN + len;
    match input.get(FRAME_HEADER_LEN..total) {
        Some(payload) => Ok(Some((payload, total))),
        None => Ok(None),
    }
}

/// Validates a frame header on its own, for edges that read the header and
/// then exactly the payload. Returns the payload length.
pub fn announced_len(header: &[u8; FRAME_HEADER_LEN], max_len: usize) -> Result<usize, FrameError> {
    // u32 always fits in usize on the 32- and 64-bit targets Glimpse supports.
    let len = u32::from_be_bytes(*header) as usize;
    if len == 0 {
        return Err(FrameError::Empty);
    }
    if len > max_len {
        return Err(FrameError::TooLarge { len, max: max_len });
    }
    Ok(len)
}

/// Appends `payload` to `out` as one frame.
pub fn encode_frame(payload: &[u8], max_len: usize, out: &mut Vec<u8>) -> Result<(), FrameError> {
    if payload.is_empty() {
        return Err(FrameError::Empty);
    }
    if payload.len() > max_len || u32::try_from(payload.len()).is_err() {
        return Err(FrameError::TooLarge { len: payload.len(), max: max_len });
    }
    out.reserve(FRAME_HEADER_LEN + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn incomplete_then_complete() {
        let mut wire = Vec::new();
        encode_frame(b"hello", 16, &mut wire).unwrap();
        for cut in 0..wire.len() {
            assert_eq!(parse_frame(&wire[..cut], 16), Ok(None), "cut at {cut}");
        }
        wire.extend_from_slice(b"next");
        assert_eq!(parse_frame(&wire, 16), Ok(Some((&b"hello"[..], 9))));
    }

    #[test]
    fn oversized_and_empty_frames_are_refused_from_the_header() {
        assert_eq!(
            parse_frame(&[0xff, 0xff, 0xff, 0xff], 1 << 20),
            Err(FrameError::TooLarge { len: u32::MAX as usize, max: 1 << 20 })
        );
        assert_eq!(parse_frame(&[0, 0, 0, 0], 16), Err(FrameError::Empty));
        assert_eq!(encode_frame(&[0; 17], 16, &mut Vec::new()), Err(FrameError::TooLarge { len: 17, max: 16 }));
    }

    proptest! {
        #[test]
        fn arbitrary_input_never_panics_and_respects_bound(input in proptest::collection::vec(any::<u8>(), 0..64), max in 1usize..32) {
            if let Ok(Some((payload, consumed))) = parse_frame(&input, max) {
                prop_assert!(payload.len() <= max);
                prop_assert_eq!(consumed, payload.len() + FRAME_HEADER_LEN);
            }
        }

        #[test]
        fn frames_round_trip(payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..40), 1..8)) {
            let mut wire = Vec::new();
            for p in &payloads {
                encode_frame(p, 64, &mut wire).unwrap();
            }
            let mut at = 0;
            for p in &payloads {
                let (payload, used) = parse_frame(&wire[at..], 64).unwrap().unwrap();
                prop_assert_eq!(payload, &p[..]);
                at += used;
            }
            prop_assert_eq!(at, wire.len());
        }
    }
}
