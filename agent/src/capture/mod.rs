//! Header-only packet capture on the device.
//!
//! Every packet, live or from a file, goes through one loop
//! ([`pcap_source`]) and one function,
//! [`glimpse_common::capture::CapturedPacket::from_packet`], which keeps the
//! bytes up to the header boundary and nothing else. Live captures also ask
//! the kernel for at most [`MAX_HEADER_BYTES`] per packet (the snap length),
//! so payload beyond that is never even copied out of the kernel.
//!
//! Captures run only when the organisation allows them (its admins decide on
//! the collector, which tells the agent; see [`consent`]: off until told
//! otherwise) and always within hard bounds on duration, packets and bytes
//! ([`CaptureLimits`]).

pub mod consent;
#[cfg(feature = "pcap")]
pub mod monitor;
#[cfg(feature = "pcap")]
mod pcap_file;
#[cfg(feature = "pcap")]
pub mod pcap_source;
pub(crate) mod session;
pub mod trigger;

use std::time::Duration;

use serde::Deserialize;

pub use glimpse_common::capture::MAX_HEADER_BYTES;

/// Hard bounds every capture runs within.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaptureLimits {
    /// Most packets kept.
    pub max_packets: u64,
    /// Most header bytes kept.
    pub max_bytes: u64,
    /// Longest a live capture runs.
    pub max_duration: Duration,
}

/// Why a capture stopped or could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaptureError {
    /// The organisation has not allowed packet capture.
    #[error("packet capture is not allowed for this organisation (its admins have not given capture consent)")]
    NotAllowed,
    /// This agent was built without packet capture.
    #[error("this agent was built without packet capture support (cargo feature `pcap`)")]
    Unsupported,
    /// Live capture was asked for on a device without libpcap (the agent
    /// loads it at run time); the message says how to install it.
    #[error("{0}")]
    NoLibpcap(String),
    /// libpcap refused (no such interface, no permission, bad filter), or a
    /// capture file is unreadable or malformed.
    #[error("capture failed on {source_name}: {message}")]
    Pcap {
        /// The interface or file.
        source_name: String,
        /// libpcap's or the file reader's explanation.
        message: String,
    },
    /// The capture's link type is one the header parser does not know, so
    /// nothing from it could be vouched for as header-only.
    #[error("unsupported link type {0} (LINKTYPE number); nothing captured")]
    UnsupportedLinkType(i32),
}

/// The `[capture]` section of `agent.toml`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CaptureSettings {
    /// Where the agent remembers the organisation's capture consent
    /// (relative to the config file; default `capture-consent` beside it).
    pub consent_file: Option<std::path::PathBuf>,
    /// Most packets per capture.
    pub max_packets: u64,
    /// Most header bytes per capture.
    pub max_bytes: u64,
    /// Longest live capture, in seconds.
    pub max_duration_secs: u64,
    /// Interface watched for trigger events (e.g. `br-lan`); event
    /// capture is off without it.
    pub monitor_interface: Option<String>,
    /// Events that start a capture window (`[[capture.rules]]`).
    pub rules: Vec<trigger::TriggerRule>,
}

impl Default for CaptureSettings {
    fn default() -> Self {
        Self {
            consent_file: None,
            max_packets: 100_000,
            max_bytes: 16 * 1024 * 1024,
            max_duration_secs: 300,
            monitor_interface: None,
            rules: Vec::new(),
        }
    }
}

impl CaptureSettings {
    /// The hard bounds these settings give.
    pub fn limits(&self) -> CaptureLimits {
        CaptureLimits {
            max_packets: self.max_packets,
            max_bytes: self.max_bytes,
            max_duration: Duration::from_secs(self.max_duration_secs),
        }
    }

    /// Problems with the values, one line each.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !(1..=10_000_000).contains(&self.max_packets) {
            problems.push(format!("capture.max_packets must be 1..=10000000, got {}", self.max_packets));
        }
        if !(1..=1 << 30).contains(&self.max_bytes) {
            problems.push(format!("capture.max_bytes must be 1..=1073741824, got {}", self.max_bytes));
        }
        if !(1..=86_400).contains(&self.max_duration_secs) {
            problems.push(format!("capture.max_duration_secs must be 1..=86400, got {}", self.max_duration_secs));
        }
        problems.extend(trigger::validate_rules(&self.rules));
        if !self.rules.is_empty() && self.monitor_interface.is_none() {
            problems.push("capture.rules need capture.monitor_interface, the interface to watch".to_owned());
        }
        problems
    }
}

/// Counts a capture keeps while it runs, and the bounds that stop it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CaptureTally {
    /// Packets seen.
    pub packets_seen: u64,
    /// Packets kept (as header-only records).
    pub packets_kept: u64,
    /// Header bytes kept.
    pub header_bytes: u64,
    /// Bytes of the packets on the wire that were not kept (payload and
    /// anything the parser could not vouch for).
    pub bytes_cut: u64,
}

impl CaptureTally {
    /// Whether keeping `next_len` more bytes would break a bound.
    pub fn full(&self, limits: &CaptureLimits, next_len: usize) -> bool {
        self.packets_kept >= limits.max_packets || self.header_bytes + next_len as u64 > limits.max_bytes
    }
}
