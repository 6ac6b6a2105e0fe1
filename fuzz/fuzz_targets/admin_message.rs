//! Arbitrary bytes through the admin protocol's decoders (what the
//! collector's admin port and the admin CLI read off the network), and the
//! collector's control messages the agent reads.
#![no_main]

use glimpse_common::wire::admin::{AdminReply, AdminRequest, MAX_AUDIT_PAGE, MAX_SUBJECT_PAGE};
use glimpse_common::wire::{parse_frame, Codec, CollectorMessage, ControlMessage, MAX_POLICY_FIELDS};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok(Some((payload, used))) = parse_frame(rest, 64 * 1024) {
        let _ = AdminRequest::decode(payload);
        match AdminReply::decode(payload) {
            Ok(AdminReply::AuditEntries(page)) => assert!(page.len() <= MAX_AUDIT_PAGE),
            Ok(AdminReply::SubjectRecords { lines, .. }) => assert!(lines.len() <= MAX_SUBJECT_PAGE),
            _ => {}
        }
        if let Ok(CollectorMessage::Control(ControlMessage::DataPolicy { omit })) = CollectorMessage::decode(payload) {
            assert!(omit.len() <= MAX_POLICY_FIELDS);
        }
        rest = &rest[used..];
    }
    let _ = AdminRequest::decode(data);
    let _ = AdminReply::decode(data);
});
