//! Arbitrary bytes as a pcap or pcapng file, through the agent's file
//! reader and the capture loop, as `glimpse-agent replay` reads a file
//! someone handed it.
#![no_main]

use std::io::Cursor;
use std::time::Duration;

use glimpse_agent::capture::pcap_source::capture_stream;
use glimpse_agent::capture::CaptureLimits;
use glimpse_common::capture::MAX_HEADER_BYTES;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = CaptureLimits { max_packets: 10_000, max_bytes: 1 << 24, max_duration: Duration::from_secs(1) };
    let mut kept = 0u64;
    let mut bytes = 0u64;
    let result = capture_stream(Cursor::new(data.to_vec()), "fuzz.pcap", "fuzz0", &limits, |packet| {
        assert!(packet.headers.len() <= MAX_HEADER_BYTES);
        kept += 1;
        bytes += packet.headers.len() as u64;
    });
    match result {
        Ok(tally) => {
            assert_eq!((tally.packets_kept, tally.header_bytes), (kept, bytes));
            assert!(tally.packets_kept <= tally.packets_seen);
        }
        // Errors name the file.
        Err(e) => assert!(e.to_string().contains("fuzz.pcap"), "{e}"),
    }
});
