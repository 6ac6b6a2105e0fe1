//! The typed records agents send and the collector stores.
//!
//! Every field has a bound, so a decoded record's size is fixed by its type.
//! Field names are stable: they are the JSON keys `glimpse-collector export`
//! prints and docs/FIELDS.md documents.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::bounded::{BoundedString, BoundedVec};
use crate::capture::CapturedPacket;
use crate::clock::UnixMillis;
use crate::identity::DeviceKind;

mod clients;
mod counters;
pub mod diagnostics;
pub mod personal;
mod profile;
pub mod subject;
mod wan;
mod wired;
mod wireless;
pub mod withheld;

pub use clients::{ClientDevice, ClientDeviceReport, Evidence, MAX_EVIDENCE};
pub use counters::{counter_change, per_second, CounterChange, CounterReport, InterfaceDelta};
pub use diagnostics::{Check, ConnectionState, Diagnostics, SpoolState};
pub use profile::{DeviceProfile, Location};
pub use wan::{
    merge_destination_rows, ApplicationSessions, DestinationCounters, WanDestination, WanDestinationReport, WanReport,
    MAX_APPLICATIONS, MAX_APPLICATION_NAME, MAX_DESTINATIONS, MAX_WAN_INTERFACES,
};
pub use wired::{
    LldpNeighbour, PortVlans, VlanRange, WiredHost, WiredReport, MAX_HOSTS, MAX_LLDP_ID, MAX_NEIGHBOURS,
    MAX_VLAN_RANGES,
};
pub use wireless::{
    Radio, RoamEvent, RoamKind, Station, WirelessReport, MAX_CLIENT_ADDRESSES, MAX_RADIOS, MAX_ROAMS, MAX_SSID,
    MAX_STATIONS,
};

/// Most interfaces one metadata record describes.
pub const MAX_INTERFACES: usize = 256;
/// Most addresses listed per interface.
pub const MAX_ADDRESSES: usize = 32;
/// Longest free-text field (hostname, OS name, model), in bytes.
pub const MAX_TEXT: usize = 255;
pub use crate::net::{BadMac, MacAddr, MAX_IFNAME};

/// Retention classes: each kind lives in its own segments with its own window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum DataKind {
    /// Device, client and interface metadata (default retention 60 days).
    Metadata,
    /// Header-only packet captures (default retention 7 days).
    Capture,
}

impl DataKind {
    /// Every kind, for sweeps and listings.
    pub const ALL: [DataKind; 2] = [DataKind::Metadata, DataKind::Capture];

    /// The name used on disk and in the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            DataKind::Metadata => "metadata",
            DataKind::Capture => "capture",
        }
    }

    /// The product's default retention for this kind, in days.
    pub fn default_retention_days(self) -> u32 {
        match self {
            DataKind::Metadata => 60,
            DataKind::Capture => 7,
        }
    }
}

impl fmt::Display for DataKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A data kind name that is not one of ours.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown data kind {0:?}: expected metadata or capture")]
pub struct UnknownDataKind(pub String);

impl FromStr for DataKind {
    type Err = UnknownDataKind;
    fn from_str(s: &str) -> Result<Self, UnknownDataKind> {
        match s {
            "metadata" => Ok(DataKind::Metadata),
            "capture" => Ok(DataKind::Capture),
            other => Err(UnknownDataKind(other.chars().take(40).collect())),
        }
    }
}

/// One observation from a device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// When the device observed it (device clock, Unix milliseconds).
    pub observed_at_ms: UnixMillis,
    /// What was observed.
    pub body: RecordBody,
}

impl Record {
    /// The retention class this record belongs to.
    pub fn kind(&self) -> DataKind {
        match self.body {
            RecordBody::Metadata(_) => DataKind::Metadata,
            RecordBody::Capture(_) => DataKind::Capture,
            RecordBody::AgentHealth(_)
            | RecordBody::SpoolRecovery(_)
            | RecordBody::Counters(_)
            | RecordBody::Wireless(_)
            | RecordBody::Wired(_)
            | RecordBody::Wan(_)
            | RecordBody::ClientDevices(_)
            | RecordBody::Diagnostics(_)
            | RecordBody::WanDestinations(_) => DataKind::Metadata,
        }
    }
}

/// The content of a record. New variants are appended at the end only:
/// postcard identifies variants by position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum RecordBody {
    /// The device's own metadata and interface counters.
    Metadata(DeviceMetadata),
    /// One captured packet, headers only.
    Capture(CapturedPacket),
    /// The agent's account of records it could not deliver, sent when the
    /// counts change so operators see gaps in a device's data.
    AgentHealth(AgentHealth),
    /// Interface counter changes since the previous collection, and rates.
    Counters(CounterReport),
    /// An access point's radios, client stations and roaming events.
    Wireless(Box<WirelessReport>),
    /// A switch's VLANs, learned hosts and LLDP neighbours.
    Wired(Box<WiredReport>),
    /// A gateway's application and session summaries.
    Wan(Box<WanReport>),
    /// The agent's account of its spool found damaged at start: what was
    /// skipped and what was kept. Sent once after such a start; the other
    /// half of the agent's health beside [`RecordBody::AgentHealth`] (a new
    /// kind rather than new fields there, which would change how every
    /// stored agent-health record decodes).
    SpoolRecovery(SpoolRecovery),
    /// An access point's inferences about its Wi-Fi clients' devices
    /// (type, model, OS, MAC vendor, confidence): a kind of its own beside
    /// [`RecordBody::Wireless`], whose stations' stored layout stays.
    ClientDevices(Box<ClientDeviceReport>),
    /// A diagnostic bundle for a support case: the agent's build, the
    /// device's model and serial number, its configuration without
    /// secrets, recent log lines, spool state, probe and tool status.
    Diagnostics(Box<Diagnostics>),
    /// A gateway's WAN sessions per client and destination, with site
    /// names from its DNS resolver; only when the organisation enables
    /// them (a new kind beside [`RecordBody::Wan`], whose stored records
    /// must keep decoding).
    WanDestinations(Box<WanDestinationReport>),
}

/// What an agent lost, counted since it started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AgentHealth {
    /// Metadata records dropped, oldest first, because the spool was full.
    pub dropped_metadata: u64,
    /// Capture records dropped because the spool was full.
    pub dropped_captures: u64,
    /// Whether the spool was found corrupt at start and discarded (what it
    /// held is lost and not counted above).
    pub discarded_corrupt_spool: bool,
}

/// What an agent found when it read its spool back at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SpoolRecovery {
    /// Damaged entries (or damaged regions) skipped; each has its own
    /// checksum, so the entries around them were kept.
    pub damaged_entries: u64,
    /// Records lost with the damaged entries.
    pub records_lost: u64,
    /// Unacknowledged records read back and kept.
    pub records_kept: u64,
    /// Whether the file was not a spool at all (bad header, over its size
    /// bound) and was replaced by an empty one: what it held is lost and
    /// not counted in `records_lost`.
    pub discarded: bool,
}

/// What a device reports about itself.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct DeviceMetadata {
    /// The device's kind, as configured.
    pub kind: Option<DeviceKind>,
    /// Hostname (`/proc/sys/kernel/hostname`).
    pub hostname: BoundedString<MAX_TEXT>,
    /// OS name (`NAME` in `/etc/os-release`).
    pub os_name: BoundedString<MAX_TEXT>,
    /// OS version (`VERSION_ID` or `VERSION` in `/etc/os-release`).
    pub os_version: BoundedString<MAX_TEXT>,
    /// Hardware model (device tree `model`, or DMI product name), when known.
    pub model: Option<BoundedString<MAX_TEXT>>,
    /// Kernel release (`/proc/sys/kernel/osrelease`).
    pub kernel: BoundedString<MAX_TEXT>,
    /// Seconds since boot (`/proc/uptime`).
    pub uptime_secs: u64,
    /// Network interfaces, sorted by name.
    pub interfaces: BoundedVec<InterfaceStats, MAX_INTERFACES>,
}

/// One network interface and its cumulative counters since boot.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct InterfaceStats {
    /// Interface name, e.g. `eth0`, `wlan0`, `br-lan`.
    pub name: BoundedString<MAX_IFNAME>,
    /// Hardware address, if the interface has one.
    pub mac: Option<MacAddr>,
    /// Addresses assigned to the interface.
    pub addresses: BoundedVec<IpAddr, MAX_ADDRESSES>,
    /// Whether the link is operationally up (`operstate` is `up`).
    pub oper_up: bool,
    /// MTU in bytes.
    pub mtu: u32,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Packets received.
    pub rx_packets: u64,
    /// Receive errors.
    pub rx_errors: u64,
    /// Received packets dropped.
    pub rx_dropped: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Packets sent.
    pub tx_packets: u64,
    /// Transmit errors.
    pub tx_errors: u64,
    /// Transmitted packets dropped.
    pub tx_dropped: u64,
}

impl InterfaceStats {
    /// The eight cumulative counters: rx bytes, packets, errors, dropped,
    /// then the same for tx (the order of [`InterfaceStats::set_counters`]
    /// and of the fields).
    pub fn counters(&self) -> [u64; 8] {
        [
            self.rx_bytes,
            self.rx_packets,
            self.rx_errors,
            self.rx_dropped,
            self.tx_bytes,
            self.tx_packets,
            self.tx_errors,
            self.tx_dropped,
        ]
    }

    /// Sets the eight cumulative counters, in [`InterfaceStats::counters`]
    /// order.
    pub fn set_counters(&mut self, counters: [u64; 8]) {
        let [rx_bytes, rx_packets, rx_errors, rx_dropped, tx_bytes, tx_packets, tx_errors, tx_dropped] = counters;
        self.rx_bytes = rx_bytes;
        self.rx_packets = rx_packets;
        self.rx_errors = rx_errors;
        self.rx_dropped = rx_dropped;
        self.tx_bytes = tx_bytes;
        self.tx_packets = tx_packets;
        self.tx_errors = tx_errors;
        self.tx_dropped = tx_dropped;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_text_and_binary_forms() {
        let mac: MacAddr = "02:00:5E:10:00:01".parse().unwrap();
        assert_eq!(mac.to_string(), "02:00:5e:10:00:01");
        assert_eq!(serde_json::to_string(&mac).unwrap(), "\"02:00:5e:10:00:01\"");
        assert_eq!(postcard::to_stdvec(&mac).unwrap(), vec![2, 0, 0x5e, 0x10, 0, 1]);
        for bad in ["", "02:00:5e:10:00", "02:00:5e:10:00:01:02", "0g:00:5e:10:00:01", "2:00:5e:10:00:011"] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn record_json_uses_stable_names() {
        let record = Record {
            observed_at_ms: 1,
            body: RecordBody::Metadata(DeviceMetadata {
                hostname: BoundedString::truncating("ap-lobby"),
                ..Default::default()
            }),
        };
        let json = serde_json::to_string(&record).unwrap();
        assert!(json.contains("\"metadata\":{\"kind\":null,\"hostname\":\"ap-lobby\""), "{json}");
        assert_eq!(record.kind(), DataKind::Metadata);
    }
}
