//! Packets from libpcap: a live interface or a pcap/pcapng file, both
//! through the same truncation.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use pcap::{Activated, Active, Capture, Offline};

use glimpse_common::bounded::BoundedString;
use glimpse_common::capture::{CapturedPacket, LinkType, MAX_HEADER_BYTES};

use super::{CaptureError, CaptureLimits, CaptureTally};

pub(crate) fn pcap_error(source_name: &str, e: pcap::Error) -> CaptureError {
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
    drain(&mut cap, &name, interface, limits, None, emit)
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
    let (mut cap, _) = open_live(interface, filter)?;
    let live = Live { deadline: Instant::now() + limits.max_duration, stop };
    drain(&mut cap, interface, interface, limits, Some(live), emit)
}

/// How long a live capture waits for a packet before it looks at its stop
/// flag and deadline again.
pub(crate) const IDLE_WAKE: Duration = Duration::from_millis(100);

/// Opens `interface` for a header-only live capture with the BPF `filter`
/// (everything when empty), in non-blocking mode: see [`wait_for_packets`].
///
/// The kernel copies at most [`MAX_HEADER_BYTES`] of each packet.
pub(crate) fn open_live(interface: &str, filter: &str) -> Result<(Capture<Active>, LinkType), CaptureError> {
    let mut cap = Capture::from_device(interface)
        .map_err(|e| pcap_error(interface, e))?
        .snaplen(MAX_HEADER_BYTES as i32)
        .promisc(false)
        .immediate_mode(true)
        .open()
        .map_err(|e| pcap_error(interface, e))?
        // libpcap's own read timeout does not bring a blocking read back on
        // Linux while the filter matches nothing (it polls again), so a
        // quiet capture would never see its stop flag or deadline.
        .setnonblock()
        .map_err(|e| pcap_error(interface, e))?;
    if !filter.is_empty() {
        cap.filter(filter, true).map_err(|e| pcap_error(interface, e))?;
    }
    let link = link_type(cap.get_datalink().0)?;
    Ok((cap, link))
}

/// Blocks until the capture has packets to read or [`IDLE_WAKE`] passes.
pub(crate) fn wait_for_packets(cap: &Capture<Active>, interface: &str) -> Result<(), CaptureError> {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};

    let mut fds = [PollFd::new(cap, PollFlags::IN)];
    let timeout = Timespec { tv_sec: 0, tv_nsec: IDLE_WAKE.as_nanos() as _ };
    match poll(&mut fds, Some(&timeout)) {
        Ok(_) | Err(rustix::io::Errno::INTR) => Ok(()),
        Err(e) => Err(CaptureError::Pcap { source_name: interface.to_owned(), message: format!("poll: {e}") }),
    }
}

/// The link type of a libpcap DLT.
pub(crate) fn link_type(dlt: i32) -> Result<LinkType, CaptureError> {
    // libpcap reports raw IP with its own DLT numbers (12 on Linux, 14 on
    // OpenBSD) where pcap files say LINKTYPE_RAW (101).
    let linktype = if dlt == 12 || dlt == 14 { 101 } else { dlt };
    u32::try_from(linktype).ok().and_then(LinkType::from_dlt).ok_or(CaptureError::UnsupportedLinkType(dlt))
}

/// What ends a live capture besides its packet and byte bounds.
struct Live<'a> {
    deadline: Instant,
    stop: &'a AtomicBool,
}

/// What a source does when no packet is ready.
trait Idle {
    fn idle(&self, source_name: &str) -> Result<(), CaptureError>;
}

impl Idle for Capture<Active> {
    fn idle(&self, source_name: &str) -> Result<(), CaptureError> {
        wait_for_packets(self, source_name)
    }
}

impl Idle for Capture<Offline> {
    // A file never makes its reader wait.
    fn idle(&self, _source_name: &str) -> Result<(), CaptureError> {
        Ok(())
    }
}

fn drain<T: Activated + ?Sized>(
    cap: &mut Capture<T>,
    source_name: &str,
    interface: &str,
    limits: &CaptureLimits,
    live: Option<Live<'_>>,
    mut emit: impl FnMut(CapturedPacket),
) -> Result<CaptureTally, CaptureError>
where
    Capture<T>: Idle,
{
    let link = link_type(cap.get_datalink().0)?;
    let label = BoundedString::truncating(interface);
    let mut tally = CaptureTally::default();
    loop {
        if live.as_ref().is_some_and(|l| l.stop.load(Ordering::Relaxed) || Instant::now() >= l.deadline) {
            break;
        }
        let packet = match cap.next_packet() {
            Ok(packet) => packet,
            Err(pcap::Error::NoMorePackets) => break,
            Err(pcap::Error::TimeoutExpired) => {
                cap.idle(source_name)?;
                continue;
            }
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
