//! Arbitrary text through the export's capture filter parser, as an
//! organisation's admin sends it in `filter=`. It must never panic; any
//! accepted filter's canonical text must parse back to a filter that
//! decides every packet the same way (checked on packets whose headers are
//! cut from the rest of the input).
#![no_main]

use glimpse_common::capture::{header_boundary, CaptureFilter, LinkType};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|b| *b == 0).unwrap_or(data.len());
    let Ok(text) = std::str::from_utf8(&data[..split]) else { return };
    let Ok(filter) = CaptureFilter::parse(text) else { return };
    let again = CaptureFilter::parse(&filter.to_string()).expect("canonical text parses");
    let packet = data.get(split + 1..).unwrap_or_default();
    let summary = header_boundary(LinkType::Ethernet, packet).summary;
    assert_eq!(filter.matches(&summary), again.matches(&summary), "{text:?}");
});
