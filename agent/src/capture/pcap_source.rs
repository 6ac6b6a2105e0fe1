//! Packets from libpcap: a live interface or a pcap/pcapng file, both
//! through the same truncation.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use pcap::{Activated, Capture};

use glimpse_common::bounded::BoundedString;
use glimpse_common::capture::{CapturedPacket, LinkType, MAX_HEADER_BYTES};

use super::{CaptureError, CaptureLimits, CaptureTally};

fn pcap_error(source_name: &str, e: pcap::Error) -> CaptureError {
    CaptureError::Pcap { source_name: source_name.to_owned(), message: e.to_string() }
}

/// Reads every packet of a pcap or pcapng file (within `limits`), keeping
/// headers only, and hands each to `emit`. `interface` labels the records.
pub fn capture_file(
    path: &Path,
    interface: &str,
    limits: &CaptureLimits,
    emit: impl FnMut(CapturedPacket),
) -> Result<CaptureTally, CaptureError> {
    let name = path.display().to_string();
    let mut cap = Capture::from_file(path).map_err(|e| pcap_error(&name, e))?;
    drain(&mut cap, &name, interface, limits, None, &AtomicBool::new(false), emit)
}

/// Captures live on `interface` with a BPF `filter` until a bound is hit or
/// `stop` is set. The kernel copies at most [`MAX_HEADER_BYTES`] of each
/// packet (the snap length), so payload past that never leaves the kernel.
pub fn capture_live(
    interface: &str,
    filter: &str,
    limits: &CaptureLimits,
    stop: &AtomicBool,
    emit: impl FnMut(CapturedPacket),
) -> Result<CaptureTally, CaptureError> {
    let cap = Capture::from_device(interface)
        .map_err(|e| pcap_error(interface, e))?
        .snaplen(MAX_HEADER_BYTES as i32)
        .promisc(false)
        .immediate_mode(true)
        // Wake up regularly to check the deadline and the stop flag.
        .timeout(100)
        .open()
        .map_err(|e| pcap_error(interface, e))?;
    let mut cap = cap;
    if !filter.is_empty() {
        cap.filter(filter, true).map_err(|e| pcap_error(interface, e))?;
    }
    let deadline = Instant::now() + limits.max_duration;
    drain(&mut cap, interface, interface, limits, Some(deadline), stop, emit)
}

fn drain<T: Activated + ?Sized>(
    cap: &mut Capture<T>,
    source_name: &str,
    interface: &str,
    limits: &CaptureLimits,
    deadline: Option<Instant>,
    stop: &AtomicBool,
    mut emit: impl FnMut(CapturedPacket),
) -> Result<CaptureTally, CaptureError> {
    let dlt = cap.get_datalink().0;
    // libpcap reports raw IP with its own DLT numbers (12 on Linux, 14 on
    // OpenBSD) where pcap files say LINKTYPE_RAW (101).
    let linktype = if dlt == 12 || dlt == 14 { 101 } else { dlt };
    let link =
        u32::try_from(linktype).ok().and_then(LinkType::from_dlt).ok_or(CaptureError::UnsupportedLinkType(dlt))?;
    let label = BoundedString::truncating(interface);
    let mut tally = CaptureTally::default();
    loop {
        if stop.load(Ordering::Relaxed) || deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let packet = match cap.next_packet() {
            Ok(packet) => packet,
            Err(pcap::Error::NoMorePackets) => break,
            Err(pcap::Error::TimeoutExpired) => continue,
            Err(e) => return Err(pcap_error(source_name, e)),
        };
        tally.packets_seen += 1;
        let ts = packet.header.ts;
        // timeval fields are 32-bit on 32-bit MIPS and ARM, 64-bit elsewhere.
        #[allow(clippy::useless_conversion)]
        let timestamp_us = i64::from(ts.tv_sec).saturating_mul(1_000_000).saturating_add(i64::from(ts.tv_usec));
        let record = CapturedPacket::from_packet(link, timestamp_us, label.clone(), packet.data, packet.header.len);
        if tally.full(limits, record.headers.len()) {
            break;
        }
        tally.packets_kept += 1;
        tally.header_bytes += record.headers.len() as u64;
        tally.bytes_cut += u64::from(packet.header.len).saturating_sub(record.headers.len() as u64);
        emit(record);
        // Stop as soon as a bound is reached, not when the next packet
        // happens to arrive.
        if tally.packets_kept >= limits.max_packets || tally.header_bytes >= limits.max_bytes {
            break;
        }
    }
    Ok(tally)
}
