//! Arbitrary bytes as the JSON bodies and query strings the collector's
//! HTTPS admin API reads off the network (every request type of
//! `glimpse-api`), and the collector's control messages the agent reads.
//! A body must either decode into a value that encodes back to JSON that
//! decodes to the same value, or be refused; never panic.
#![no_main]

use glimpse_api::*;
use glimpse_common::wire::{parse_frame, Codec, CollectorMessage, ControlMessage, MAX_POLICY_FIELDS};
use libfuzzer_sys::fuzz_target;

fn round_trip<T: serde::de::DeserializeOwned + serde::Serialize + PartialEq + std::fmt::Debug>(data: &[u8]) {
    if let Ok(value) = serde_json::from_slice::<T>(data) {
        let again: T = serde_json::from_slice(&serde_json::to_vec(&value).unwrap()).unwrap();
        assert_eq!(again, value);
    }
}

fuzz_target!(|data: &[u8]| {
    round_trip::<ConsentRequest>(data);
    round_trip::<SupportGrantRequest>(data);
    round_trip::<DataPolicyRequest>(data);
    round_trip::<CaptureStartRequest>(data);
    round_trip::<SubjectExportRequest>(data);
    round_trip::<SubjectEraseRequest>(data);
    round_trip::<SubjectCorrectRequest>(data);
    round_trip::<SubjectBlockRequest>(data);
    round_trip::<DeleteOrgRequest>(data);
    round_trip::<TokenCreateRequest>(data);
    round_trip::<AccountCreateRequest>(data);
    round_trip::<AccountUpdateRequest>(data);
    round_trip::<AuditQuery>(data);
    round_trip::<RatesQuery>(data);
    round_trip::<PacketsQuery>(data);
    round_trip::<Problem>(data);
    let mut rest = data;
    while let Ok(Some((payload, used))) = parse_frame(rest, 64 * 1024) {
        if let Ok(CollectorMessage::Control(ControlMessage::DataPolicy { omit })) = CollectorMessage::decode(payload) {
            assert!(omit.len() <= MAX_POLICY_FIELDS);
        }
        rest = &rest[used..];
    }
});
