//! What an access point reports about its radios and the client stations
//! associated with them.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::bounded::{BoundedString, BoundedVec};

use super::{DeviceProfile, MacAddr, MAX_IFNAME, MAX_TEXT};

/// Most radios (Wi-Fi interfaces) in one report.
pub const MAX_RADIOS: usize = 64;
/// Most stations in one report; an access point with more sends several.
pub const MAX_STATIONS: usize = 128;
/// Most roaming events in one report.
pub const MAX_ROAMS: usize = 256;
/// Most addresses listed for one client.
pub const MAX_CLIENT_ADDRESSES: usize = 8;
/// Longest SSID as `iw` prints it: 32 bytes, each possibly a `\xNN` escape.
pub const MAX_SSID: usize = 128;

/// An access point's radios, its associated stations and who came and went.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct WirelessReport {
    /// The access point's name, series and location (the general or
    /// specific location of its clients).
    pub device: DeviceProfile,
    /// The Wi-Fi interfaces the access point serves on.
    pub radios: BoundedVec<Radio, MAX_RADIOS>,
    /// Associated client stations, sorted by radio then MAC.
    pub stations: BoundedVec<Station, MAX_STATIONS>,
    /// Stations that joined, left or moved between this access point's
    /// radios since the previous collection.
    pub roaming: BoundedVec<RoamEvent, MAX_ROAMS>,
}

/// One Wi-Fi interface of the access point.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Radio {
    /// Interface name, e.g. `wlan0`, `phy1-ap0`.
    pub interface: BoundedString<MAX_IFNAME>,
    /// Network name, as `iw` prints it (non-printable bytes as `\xNN`).
    pub ssid: BoundedString<MAX_SSID>,
    /// BSSID: the radio's MAC address on this network.
    pub bssid: Option<MacAddr>,
    /// Interface mode as `iw` names it (`AP`, `AP/VLAN`, `managed`, ...).
    pub mode: BoundedString<32>,
    /// Operating frequency in MHz.
    pub frequency_mhz: Option<u32>,
    /// Channel number.
    pub channel: Option<u16>,
    /// Channel width in MHz.
    pub width_mhz: Option<u16>,
    /// Transmit power in hundredths of a dBm (2000 = 20 dBm).
    pub tx_power_mbm: Option<i32>,
    /// How many stations are associated with this radio.
    pub stations: u32,
}

/// One associated client station. `None` and empty text mean the device
/// did not say (or the organisation chose not to collect it).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Station {
    /// The client's MAC address (its pseudonym when the organisation
    /// pseudonymises MACs).
    pub mac: MacAddr,
    /// The serving radio's interface.
    pub interface: BoundedString<MAX_IFNAME>,
    /// The network it is associated with.
    pub ssid: BoundedString<MAX_SSID>,
    /// Its IP addresses, from the ARP table and DHCP leases.
    pub addresses: BoundedVec<IpAddr, MAX_CLIENT_ADDRESSES>,
    /// Its hostname, from DHCP leases.
    pub hostname: BoundedString<MAX_TEXT>,
    /// The user it authenticated as (802.1X / RADIUS identity).
    pub username: BoundedString<MAX_TEXT>,
    /// Its DHCP vendor class (option 60), e.g. `android-dhcp-14`, `MSFT 5.0`.
    pub user_agent: BoundedString<MAX_TEXT>,
    /// VLAN assigned to it (dynamic VLAN from RADIUS).
    pub vlan: Option<u16>,
    /// Last signal strength, dBm.
    pub signal_dbm: Option<i8>,
    /// Average signal strength, dBm.
    pub signal_avg_dbm: Option<i8>,
    /// Last transmit rate to it, kbit/s.
    pub tx_bitrate_kbps: Option<u32>,
    /// Last receive rate from it, kbit/s.
    pub rx_bitrate_kbps: Option<u32>,
    /// Seconds since it associated.
    pub connected_secs: Option<u32>,
    /// Milliseconds since it was last heard.
    pub inactive_ms: Option<u32>,
    /// Bytes received from it since it associated.
    pub rx_bytes: Option<u64>,
    /// Bytes sent to it since it associated.
    pub tx_bytes: Option<u64>,
    /// Packets received from it.
    pub rx_packets: Option<u64>,
    /// Packets sent to it.
    pub tx_packets: Option<u64>,
    /// Transmit retries to it.
    pub tx_retries: Option<u64>,
    /// Transmissions to it that failed.
    pub tx_failed: Option<u64>,
}

/// A station arriving at, leaving, or moving within this access point.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoamEvent {
    /// The station's MAC address.
    pub mac: MacAddr,
    /// What happened.
    pub event: RoamKind,
    /// The radio it is on now (joined, moved) or was last on (left).
    pub interface: BoundedString<MAX_IFNAME>,
    /// For a move between radios (band steering), the radio it left.
    pub previous_interface: Option<BoundedString<MAX_IFNAME>>,
}

/// Kinds of roaming event. Across access points, a station that left one
/// and joined another is a roam between them: the collector's data holds
/// both events with their devices and times.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RoamKind {
    /// It associated with this access point.
    Joined,
    /// It is no longer associated.
    Left,
    /// It moved from one of this access point's radios to another.
    Moved,
}
