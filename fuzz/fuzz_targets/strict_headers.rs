//! Arbitrary bytes through strict header scrubbing, as the agent scrubs its
//! cut headers and the collector scrubs whatever an agent sent. The first
//! byte picks the link type, the rest is the packet.
#![no_main]

use glimpse_common::capture::{header_boundary, scrub_strict, LinkType};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, packet)) = data.split_first() else { return };
    let link = LinkType::ALL[usize::from(selector) % LinkType::ALL.len()];
    let boundary = header_boundary(link, packet);

    // Over the cut headers, as every caller does: same length, same
    // boundary and layers, idempotent.
    let mut cut = packet[..boundary.header_len].to_vec();
    scrub_strict(link, &mut cut);
    assert_eq!(cut.len(), boundary.header_len);
    let again = header_boundary(link, &cut);
    assert_eq!(again.header_len, boundary.header_len);
    assert_eq!(again.summary.stopped_at, header_boundary(link, &packet[..boundary.header_len]).summary.stopped_at);
    let mut twice = cut.clone();
    assert_eq!(scrub_strict(link, &mut twice), 0);

    // Over the whole packet: nothing past the boundary survives.
    let mut whole = packet.to_vec();
    scrub_strict(link, &mut whole);
    assert_eq!(whole.len(), packet.len());
    assert!(whole[boundary.header_len..].iter().all(|&b| b == 0));
    assert_eq!(&whole[..boundary.header_len], &cut[..]);
});
