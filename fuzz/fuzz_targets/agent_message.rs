//! Arbitrary bytes through the frame parser and both message decoders, as
//! the collector and agent read them off the network.
#![no_main]

use glimpse_common::wire::{parse_frame, AgentMessage, Codec, CollectorMessage, MAX_RECORDS_PER_BATCH};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok(Some((payload, used))) = parse_frame(rest, 64 * 1024) {
        assert!(payload.len() <= 64 * 1024);
        if let Ok(AgentMessage::Batch(batch)) = AgentMessage::decode(payload) {
            assert!(batch.records.len() <= MAX_RECORDS_PER_BATCH);
        }
        let _ = CollectorMessage::decode(payload);
        rest = &rest[used..];
    }
    let _ = AgentMessage::decode(data);
    let _ = CollectorMessage::decode(data);
});
