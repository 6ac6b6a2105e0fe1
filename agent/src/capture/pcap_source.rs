//! The one capture loop, and the packet sources it reads: a live interface
//! through libpcap (loaded at run time, see [`glimpse_libpcap`]) or a pcap /
//! pcapng file read in pure Rust (the private `pcap_file` module).
//!
//! On-demand captures ([`capture_live`], [`capture_file`]) and the event
//! monitor ([`super::monitor`]) all run one crate-private loop, `read_loop`:
//! it owns the stop flag, the deadline, the idle wake and the truncation of
//! every packet to its headers, so those cannot drift apart between them. What is done with
//! each packet (counting against bounds, trigger detection) is the caller's.

use std::ops::ControlFlow;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use glimpse_common::bounded::BoundedString;
use glimpse_common::capture::{CapturedPacket, LinkType, MAX_HEADER_BYTES};

use super::pcap_file::PcapFile;
use super::{CaptureError, CaptureLimits, CaptureTally};

/// A libpcap failure on `source_name`, or, when libpcap is not there at
/// all, the error that says how to install it.
pub(crate) fn pcap_error(source_name: &str, e: glimpse_libpcap::Error) -> CaptureError {
    match e {
        glimpse_libpcap::Error::NotInstalled { .. } | glimpse_libpcap::Error::MissingFunction { .. } => {
            CaptureError::NoLibpcap(e.to_string())
        }
        other => CaptureError::Pcap { source_name: source_name.to_owned(), message: other.to_string() },
    }
}

/// Whether live capture can work on this machine: libpcap loads. Without
/// it the error says how to install it; files are read without libpcap.
pub fn live_capture_available() -> Result<(), CaptureError> {
    glimpse_libpcap::load().map_err(|e| pcap_error("libpcap", e))
}

/// Reads every packet of a pcap or pcapng file (within `limits`), keeping
/// headers only, and hands each to `emit`. `interface` labels the records.
pub fn capture_file(
    path: &Path,
    interface: &str,
    limits: &CaptureLimits,
    emit: impl FnMut(CapturedPacket),
) -> Result<CaptureTally, CaptureError> {
    let mut file = PcapFile::open(path)?;
    capture(&mut file, interface, limits, Until::default(), emit)
}

/// [`capture_file`] for a file's bytes from any reader (a pipe, memory);
/// `name` labels errors.
pub fn capture_stream(
    reader: impl std::io::Read + Send + 'static,
    name: &str,
    interface: &str,
    limits: &CaptureLimits,
    emit: impl FnMut(CapturedPacket),
) -> Result<CaptureTally, CaptureError> {
    let mut file = PcapFile::from_reader(reader, name.to_owned())?;
    capture(&mut file, interface, limits, Until::default(), emit)
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
    let mut live = open_live(interface, filter)?;
    let until = Until { stop: Some(stop), deadline: Some(Instant::now() + limits.max_duration) };
    capture(&mut live, interface, limits, until, emit)
}

/// How long a live capture waits for a packet before it looks at its stop
/// flag and deadline again.
pub(crate) const IDLE_WAKE: Duration = Duration::from_millis(100);

/// A packet as its source delivered it, before truncation. Not `Debug`:
/// its bytes hold payload, which must never reach a log line.
#[derive(Clone, Copy)]
pub(crate) struct RawPacket<'a> {
    /// The link type of `data`.
    pub(crate) link: LinkType,
    /// Microseconds since the Unix epoch.
    pub(crate) timestamp_us: i64,
    /// The captured bytes (at most the snap length, for a live capture).
    pub(crate) data: &'a [u8],
    /// The packet's length on the wire.
    pub(crate) wire_len: u32,
}

/// What one [`PacketSource::read`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Handed one packet over; what the handler said.
    Packet(ControlFlow<()>),
    /// No packet ready yet: [`PacketSource::wait`], then read again.
    NotReady,
    /// No packet will come (end of the file).
    Ended,
}

/// Where packets come from: a live interface or a file.
pub(crate) trait PacketSource {
    /// Reads at most one packet and hands it to `on_packet`.
    fn read(&mut self, on_packet: &mut dyn FnMut(RawPacket<'_>) -> ControlFlow<()>) -> Result<Step, CaptureError>;
    /// Blocks until packets may be ready, or [`IDLE_WAKE`] passes.
    fn wait(&self) -> Result<(), CaptureError>;
}

/// What ends a loop besides its handler: a stop flag and a deadline, each
/// optional (a file read has neither, the monitor no deadline).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Until<'a> {
    pub(crate) stop: Option<&'a AtomicBool>,
    pub(crate) deadline: Option<Instant>,
}

impl Until<'_> {
    fn reached(&self) -> bool {
        self.stop.is_some_and(|stop| stop.load(Ordering::Relaxed)) || self.deadline.is_some_and(|d| Instant::now() >= d)
    }
}

/// What [`read_loop`] hands its handler. Not `Debug`, for the payload in `raw`.
pub(crate) enum Event<'a> {
    /// Once before every read, packet or not: for work that must happen
    /// while the interface is quiet (trigger timeouts).
    Tick,
    /// A packet: the bytes as captured, for on-device inspection only, and
    /// the header-only record that may leave the device.
    Packet {
        /// The link type of `raw`.
        link: LinkType,
        /// The packet as captured.
        raw: &'a [u8],
        /// Its headers, truncated by [`CapturedPacket::from_packet`].
        kept: CapturedPacket,
    },
}

/// The capture loop: reads `source` until `until` is reached, the source
/// ends or `handle` breaks, waking at least every [`IDLE_WAKE`] while no
/// packet comes. Every packet reaches `handle` already cut to its headers;
/// `interface` labels the records.
pub(crate) fn read_loop(
    source: &mut dyn PacketSource,
    interface: &str,
    until: Until<'_>,
    mut handle: impl FnMut(Event<'_>) -> ControlFlow<()>,
) -> Result<(), CaptureError> {
    let label = BoundedString::truncating(interface);
    loop {
        if until.reached() || handle(Event::Tick).is_break() {
            return Ok(());
        }
        let step = source.read(&mut |packet| {
            let kept = CapturedPacket::from_packet(
                packet.link,
                packet.timestamp_us,
                label.clone(),
                packet.data,
                packet.wire_len,
            );
            handle(Event::Packet { link: packet.link, raw: packet.data, kept })
        })?;
        match step {
            Step::Packet(ControlFlow::Continue(())) => {}
            Step::Packet(ControlFlow::Break(())) | Step::Ended => return Ok(()),
            Step::NotReady => source.wait()?,
        }
    }
}

/// A bounded capture: [`read_loop`], keeping packets until `limits` are hit.
fn capture(
    source: &mut dyn PacketSource,
    interface: &str,
    limits: &CaptureLimits,
    until: Until<'_>,
    mut emit: impl FnMut(CapturedPacket),
) -> Result<CaptureTally, CaptureError> {
    let mut tally = CaptureTally::default();
    read_loop(source, interface, until, |event| {
        let Event::Packet { kept, .. } = event else { return ControlFlow::Continue(()) };
        tally.packets_seen += 1;
        if tally.full(limits, kept.headers.len()) {
            return ControlFlow::Break(());
        }
        tally.packets_kept += 1;
        tally.header_bytes += kept.headers.len() as u64;
        tally.bytes_cut += u64::from(kept.wire_len).saturating_sub(kept.headers.len() as u64);
        emit(kept);
        // Stop as soon as a bound is reached, not when the next packet
        // happens to arrive.
        if tally.packets_kept >= limits.max_packets || tally.header_bytes >= limits.max_bytes {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })?;
    Ok(tally)
}

/// A live interface opened through libpcap.
pub(crate) struct LiveSource {
    capture: glimpse_libpcap::Capture,
    link: LinkType,
    interface: String,
}

impl LiveSource {
    /// The interface's link type.
    pub(crate) fn link(&self) -> LinkType {
        self.link
    }
}

/// Opens `interface` for a header-only live capture with the BPF `filter`
/// (everything when empty), in non-blocking mode: see [`PacketSource::wait`].
///
/// The kernel copies at most [`MAX_HEADER_BYTES`] of each packet.
pub(crate) fn open_live(interface: &str, filter: &str) -> Result<LiveSource, CaptureError> {
    // Non-blocking: libpcap's own read timeout does not bring a blocking
    // read back on Linux while the filter matches nothing (it polls again),
    // so a quiet capture would never see its stop flag or deadline.
    let mut capture = glimpse_libpcap::Capture::open_live(interface, MAX_HEADER_BYTES as i32)
        .map_err(|e| pcap_error(interface, e))?;
    if !filter.is_empty() {
        capture.set_filter(filter).map_err(|e| pcap_error(interface, e))?;
    }
    let link = link_type(capture.datalink())?;
    Ok(LiveSource { capture, link, interface: interface.to_owned() })
}

impl PacketSource for LiveSource {
    fn read(&mut self, on_packet: &mut dyn FnMut(RawPacket<'_>) -> ControlFlow<()>) -> Result<Step, CaptureError> {
        match self.capture.next_packet().map_err(|e| pcap_error(&self.interface, e))? {
            glimpse_libpcap::Next::Packet(packet) => {
                let timestamp_us =
                    packet.timestamp_secs.saturating_mul(1_000_000).saturating_add(packet.timestamp_micros);
                let raw = RawPacket { link: self.link, timestamp_us, data: packet.data, wire_len: packet.wire_len };
                Ok(Step::Packet(on_packet(raw)))
            }
            glimpse_libpcap::Next::NotReady => Ok(Step::NotReady),
            glimpse_libpcap::Next::Ended => Ok(Step::Ended),
        }
    }

    fn wait(&self) -> Result<(), CaptureError> {
        use rustix::event::{poll, PollFd, PollFlags, Timespec};

        let Some(fd) = self.capture.selectable_fd() else {
            // Only platforms other than Linux lack one; waking on a timer
            // keeps the stop flag and deadline honoured there too.
            std::thread::sleep(IDLE_WAKE);
            return Ok(());
        };
        let mut fds = [PollFd::new(&fd, PollFlags::IN)];
        let timeout = Timespec { tv_sec: 0, tv_nsec: IDLE_WAKE.as_nanos() as _ };
        match poll(&mut fds, Some(&timeout)) {
            Ok(_) | Err(rustix::io::Errno::INTR) => Ok(()),
            Err(e) => Err(CaptureError::Pcap { source_name: self.interface.clone(), message: format!("poll: {e}") }),
        }
    }
}

/// The link type of a libpcap DLT.
pub(crate) fn link_type(dlt: i32) -> Result<LinkType, CaptureError> {
    // libpcap reports raw IP with its own DLT numbers (12 on Linux, 14 on
    // OpenBSD) where pcap files say LINKTYPE_RAW (101).
    let linktype = if dlt == 12 || dlt == 14 { 101 } else { dlt };
    u32::try_from(linktype).ok().and_then(LinkType::from_dlt).ok_or(CaptureError::UnsupportedLinkType(dlt))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Whether to run a test that needs libpcap at run time: skipped with
    /// one line saying so when the library is missing, except under CI
    /// (`CI` set), which installs it, so there the test fails instead.
    pub(crate) fn libpcap_present() -> bool {
        match glimpse_libpcap::load() {
            Ok(()) => true,
            Err(e) if std::env::var_os("CI").is_some() => panic!("CI must have libpcap: {e}"),
            Err(e) => {
                // Not `eprintln!`, which the harness swallows for a passing test.
                use std::io::Write;
                let _ = writeln!(std::io::stderr(), "skipped: {e}");
                false
            }
        }
    }

    #[test]
    fn a_missing_libpcap_says_how_to_install_it_and_other_failures_name_the_interface() {
        let missing = pcap_error("eth0", glimpse_libpcap::Error::NotInstalled { tried: "libpcap.so.1: no".into() });
        assert_eq!(
            missing.to_string(),
            "live capture needs libpcap (Debian: apt-get install libpcap0.8; OpenWrt: opkg install libpcap)"
        );
        let refused = pcap_error("eth0", glimpse_libpcap::Error::Pcap("permission denied".into()));
        assert_eq!(refused.to_string(), "capture failed on eth0: permission denied");
    }

    #[test]
    fn a_live_capture_on_a_missing_interface_fails_naming_it() {
        if !libpcap_present() {
            return;
        }
        let limits = CaptureLimits { max_packets: 1, max_bytes: 1000, max_duration: Duration::from_secs(1) };
        let stop = AtomicBool::new(false);
        let e = capture_live("glimpse-none0", "", &limits, &stop, |_| panic!("no packet")).unwrap_err();
        assert!(matches!(&e, CaptureError::Pcap { source_name, .. } if source_name == "glimpse-none0"), "{e}");
    }

    /// A capture already told to stop returns at once, without waiting
    /// for a packet or its deadline.
    #[test]
    fn a_stopped_live_capture_returns_at_once() {
        if !libpcap_present() {
            return;
        }
        let limits = CaptureLimits { max_packets: 10, max_bytes: 1000, max_duration: Duration::from_secs(3600) };
        let stop = AtomicBool::new(true);
        match capture_live("lo", "udp port 9 and udp src port 9", &limits, &stop, |_| {}) {
            Ok(tally) => assert_eq!(tally, CaptureTally::default()),
            // Opening `lo` needs CAP_NET_RAW, and a kernel that answers
            // libpcap's ioctls (qemu-user's emulation does not): without
            // them there is no live handle to stop.
            Err(CaptureError::Pcap { message, .. })
                if ["ermission", "ermitted", "not implemented"].iter().any(|m| message.contains(m)) =>
            {
                use std::io::Write;
                let _ = writeln!(std::io::stderr(), "skipped: cannot open lo here: {message}");
            }
            Err(e) => panic!("{e}"),
        }
    }
}
