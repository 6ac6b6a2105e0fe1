//! What a gateway reports about its WAN traffic: application information and
//! session summaries from connection tracking. Connection tracking holds
//! addresses, ports, counters and timers only, so no payload is ever read.

use serde::{Deserialize, Serialize};

use crate::bounded::{BoundedString, BoundedVec};

use super::{DeviceProfile, MAX_IFNAME};

/// Most applications listed in one report; the rest are folded into `other`.
pub const MAX_APPLICATIONS: usize = 256;
/// Most WAN interfaces named in one report.
pub const MAX_WAN_INTERFACES: usize = 16;
/// Longest application name.
pub const MAX_APPLICATION_NAME: usize = 32;

/// A gateway's sessions over one collection interval, per application.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct WanReport {
    /// The gateway's name, series and location.
    pub device: DeviceProfile,
    /// Which interfaces face the WAN (from the device's config); their
    /// addresses and counters are in the metadata and counter records.
    pub wan_interfaces: BoundedVec<BoundedString<MAX_IFNAME>, MAX_WAN_INTERFACES>,
    /// Length of the interval the summary covers, in milliseconds (0 for the
    /// first report after start, which only counts what is open).
    pub interval_ms: u64,
    /// Sessions open at the end of the interval.
    pub active_sessions: u32,
    /// Open sessions beyond the agent's tracking limit: counted as active,
    /// but their traffic and ends are not followed.
    pub untracked_sessions: u32,
    /// Per application, sorted by name.
    pub applications: BoundedVec<ApplicationSessions, MAX_APPLICATIONS>,
}

/// One application's sessions over the interval. Out is the direction the
/// session was opened in (client to server), in is the reply.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ApplicationSessions {
    /// Application name from the server port (`https`, `dns`, `quic`, ...),
    /// or `tcp-other`, `udp-other`, `other`.
    pub application: BoundedString<MAX_APPLICATION_NAME>,
    /// IP protocol number (6 TCP, 17 UDP, 1 ICMP, ...).
    pub protocol: u8,
    /// Sessions open at the end of the interval.
    pub active_sessions: u32,
    /// Sessions opened during the interval.
    pub sessions_started: u32,
    /// Sessions closed during the interval.
    pub sessions_ended: u32,
    /// Bytes client to server during the interval.
    pub bytes_out: u64,
    /// Bytes server to client during the interval.
    pub bytes_in: u64,
    /// Packets client to server during the interval.
    pub packets_out: u64,
    /// Packets server to client during the interval.
    pub packets_in: u64,
    /// Total duration of the sessions that ended, in milliseconds.
    pub ended_duration_ms_total: u64,
    /// Longest duration of a session that ended, in milliseconds.
    pub ended_duration_ms_max: u64,
}
