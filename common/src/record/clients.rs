//! What an access point infers about its Wi-Fi clients' devices: type,
//! model, OS and the MAC's vendor, with a confidence.
//!
//! A record of its own rather than new fields of [`super::Station`]:
//! postcard has no field names, so a field added to a stored struct would
//! make every stored Wi-Fi report unreadable. The inference itself (from
//! DHCP option 55 and 60, the hostname and the MAC's IEEE vendor) is done
//! on the access point, before MACs are pseudonymised: see the agent's
//! `probe::fingerprint`.

use serde::{Deserialize, Serialize};

use crate::bounded::{BoundedString, BoundedVec};

use super::{MacAddr, MAX_STATIONS, MAX_TEXT};

/// Most kinds of evidence one inference names.
pub const MAX_EVIDENCE: usize = 8;

/// An access point's inferences about its clients' devices.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ClientDeviceReport {
    /// One entry per associated station something could be said about,
    /// sorted by MAC; an access point with more sends several reports.
    pub clients: BoundedVec<ClientDevice, MAX_STATIONS>,
}

/// What the access point can tell about one client's device. Empty text
/// means not known (or withheld by the organisation's data policy).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ClientDevice {
    /// The client's MAC address (its pseudonym when the organisation
    /// pseudonymises MACs), as in the Wi-Fi report's stations.
    pub mac: MacAddr,
    /// Device type: `phone`, `tablet`, `computer`, `printer`, `media-player`,
    /// `game-console`, `iot`, `single-board-computer`.
    pub device_type: BoundedString<MAX_TEXT>,
    /// Model or model family, e.g. `iPhone`, `Pixel`, `ESP8266/ESP32`.
    pub model: BoundedString<MAX_TEXT>,
    /// Operating system (family, and version when a signal carries one),
    /// e.g. `Windows`, `iOS`, `Android 14`, `Linux`.
    pub os: BoundedString<MAX_TEXT>,
    /// The vendor the IEEE registry assigned the MAC's OUI to, from the
    /// agent's embedded subset; empty for locally administered (randomised)
    /// MACs and for vendors outside the subset.
    pub vendor: BoundedString<MAX_TEXT>,
    /// How sure the inference is, 0 to 100: higher when independent
    /// signals agree, lower when they disagree.
    pub confidence: u8,
    /// Which signals the inference rests on.
    pub evidence: BoundedVec<Evidence, MAX_EVIDENCE>,
}

/// A signal an inference used. New kinds are appended at the end only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Evidence {
    /// DHCP option 55, the parameter request list, matched a known sequence.
    DhcpOptions,
    /// DHCP option 60, the vendor class, matched a known one.
    VendorClass,
    /// The hostname the client sent matched a known pattern.
    Hostname,
    /// The MAC's IEEE vendor.
    MacVendor,
    /// An HTTP-style user agent (`Mozilla/5.0 (...)`) where the vendor
    /// class carries one.
    UserAgent,
}

impl Evidence {
    /// The name export prints.
    pub fn as_str(self) -> &'static str {
        match self {
            Evidence::DhcpOptions => "dhcp-options",
            Evidence::VendorClass => "vendor-class",
            Evidence::Hostname => "hostname",
            Evidence::MacVendor => "mac-vendor",
            Evidence::UserAgent => "user-agent",
        }
    }
}
