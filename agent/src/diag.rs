//! The diagnostic bundle (`glimpse-agent diag`, or on the collector's
//! request under a support grant): what support needs to look into a
//! device's case, gathered on the device. See
//! [`glimpse_common::record::Diagnostics`] for what it holds and why none
//! of it is about the people on the network.
//!
//! Gathering runs one collection of the device kind's probes (so that the
//! tools' status is what they do now, not what they did at start) and
//! reads a few small files: it blocks for up to the probes' deadlines and
//! belongs on a blocking thread.

use std::path::Path;

use glimpse_common::bounded::{BoundedString, BoundedVec};
use glimpse_common::clock::{Clock, SystemClock};
use glimpse_common::record::diagnostics::{MAX_DIAG_CHECKS, MAX_DIAG_LOG_LINES};
use glimpse_common::record::{Check, ConnectionState, Diagnostics, SpoolState};

use crate::config::AgentConfig;

/// Files that name the hardware model, first found wins: the device tree
/// (ARM and MIPS boards), OpenWrt's board information, DMI (x86).
const MODEL_FILES: [&str; 4] = [
    "proc/device-tree/model",
    "tmp/sysinfo/model",
    "sys/class/dmi/id/product_name",
    "sys/firmware/devicetree/base/model",
];

/// Files that hold a serial number, first found wins. DMI's is readable by
/// root only on most systems; a missing one is simply left empty.
const SERIAL_FILES: [&str; 3] =
    ["proc/device-tree/serial-number", "sys/firmware/devicetree/base/serial-number", "sys/class/dmi/id/product_serial"];

/// Longest model or serial file read.
const SMALL_FILE: usize = 256;

/// The daemon's newest log lines, set once by the command line when it
/// starts the logger (an agent run inside another program has none).
static RECENT_LINES: std::sync::OnceLock<glimpse_files::logging::RecentLines> = std::sync::OnceLock::new();

/// How many of the daemon's log lines are kept for bundles.
pub const KEPT_LOG_LINES: usize = MAX_DIAG_LOG_LINES;

/// Keeps `recent` as the daemon's log lines for bundles (the first call
/// wins).
pub fn keep_recent_lines(recent: glimpse_files::logging::RecentLines) {
    let _ = RECENT_LINES.set(recent);
}

/// The daemon's log lines, if the command line keeps them.
pub fn recent_lines() -> Option<&'static glimpse_files::logging::RecentLines> {
    RECENT_LINES.get()
}

/// What the running daemon adds to a bundle it makes on request.
#[derive(Debug, Default)]
pub struct DaemonState<'a> {
    /// The collector's request id.
    pub request_id: u64,
    /// The daemon's newest log lines, oldest first.
    pub recent_logs: &'a [String],
    /// Its connection to the collector.
    pub connection: Option<ConnectionState>,
}

/// Gathers a bundle for the agent configured by `config`.
pub fn gather(config: &AgentConfig, daemon: DaemonState<'_>) -> Diagnostics {
    let root = config.sysroot.as_path();
    let mut checks = Vec::new();
    let mut reporter = crate::reports::Reporter::new(config);
    let now = SystemClock;
    // One collection, its records dropped: only how each probe went counts.
    let _ = reporter.collect(monotonic_ms(), now.now_millis());
    for (name, ok, detail) in reporter.checks() {
        checks.push(Check { name: BoundedString::truncating(name), ok, detail: BoundedString::truncating(detail) });
    }
    if let Some(libpcap) = libpcap_check() {
        checks.push(libpcap);
    }
    let first_of = |files: &[&str]| files.iter().find_map(|file| small_text(&root.join(file))).unwrap_or_default();
    let logs = daemon.recent_logs;
    let newest = logs.get(logs.len().saturating_sub(MAX_DIAG_LOG_LINES)..).unwrap_or_default();
    Diagnostics {
        request_id: daemon.request_id,
        agent_version: BoundedString::truncating(env!("CARGO_PKG_VERSION")),
        build: BoundedString::truncating(glimpse_files::long_version!().replace('\n', "; ").trim_end_matches("; ")),
        device_kind: BoundedString::truncating(config.identity.kind.as_str()),
        model: BoundedString::truncating(&first_of(&MODEL_FILES)),
        serial_number: BoundedString::truncating(&first_of(&SERIAL_FILES)),
        config: BoundedString::truncating(&config.redacted_text),
        recent_logs: BoundedVec::truncating(newest.iter().map(|line| BoundedString::truncating(line)).collect()),
        spool: spool_state(config),
        connection: daemon.connection,
        checks: BoundedVec::truncating(checks.into_iter().take(MAX_DIAG_CHECKS).collect()),
    }
}

/// A monotonic millisecond clock for the one collection's intervals.
fn monotonic_ms() -> u64 {
    use std::sync::OnceLock;
    static START: OnceLock<std::time::Instant> = OnceLock::new();
    u64::try_from(START.get_or_init(std::time::Instant::now).elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// A small text file's content, without the NULs device-tree strings end
/// with; `None` when absent, unreadable or empty.
fn small_text(path: &Path) -> Option<String> {
    let (bytes, _) = crate::probe::read_capped(path, SMALL_FILE).ok()??;
    let text = String::from_utf8_lossy(&bytes).replace('\0', " ");
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

fn spool_state(config: &AgentConfig) -> SpoolState {
    let Some(path) = &config.spool.path else {
        return SpoolState {
            path: BoundedString::truncating("(none: records are kept in memory only)"),
            ..Default::default()
        };
    };
    let meta = std::fs::metadata(path).ok();
    #[cfg(unix)]
    let mode = meta.as_ref().map_or(0, |m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o7777);
    #[cfg(not(unix))]
    let mode = 0;
    SpoolState {
        path: BoundedString::truncating(&path.display().to_string()),
        exists: meta.is_some(),
        bytes: meta.as_ref().map_or(0, std::fs::Metadata::len),
        max_bytes: config.spool.max_bytes,
        mode,
    }
}

/// Whether live capture would work: libpcap loads.
fn libpcap_check() -> Option<Check> {
    let (ok, detail) = match glimpse_libpcap::load() {
        Ok(()) => (true, "loaded".to_owned()),
        Err(e) => (false, e.to_string()),
    };
    Some(Check { name: BoundedString::truncating("libpcap"), ok, detail: BoundedString::truncating(&detail) })
}
