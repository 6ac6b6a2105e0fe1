//! The metadata fields an organisation may choose not to collect (its
//! minimisation policy names them), with their stable names. Which record
//! fields each one withholds is said by the personal-field visitor
//! ([`super::personal::Field::omitted_by`]); applying a policy is
//! `crate::minimise`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A metadata field an organisation can choose not to collect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[non_exhaustive]
pub enum MetadataField {
    /// The device's hostname.
    Hostname,
    /// OS name and version.
    Os,
    /// Hardware model.
    Model,
    /// Kernel release.
    Kernel,
    /// Uptime.
    Uptime,
    /// Interfaces' MAC addresses.
    InterfaceMacs,
    /// Interfaces' IP addresses.
    InterfaceAddresses,
    /// Interfaces' traffic and error counters (cumulative and per interval).
    InterfaceCounters,
    /// Clients' IP addresses (Wi-Fi stations, wired hosts).
    ClientAddresses,
    /// Clients' hostnames.
    ClientHostnames,
    /// Clients' usernames (802.1X identities).
    Usernames,
    /// Clients' user agents (DHCP vendor class).
    UserAgents,
    /// Stations' signal strength and bit rates.
    ClientSignal,
    /// Clients' traffic counters (stations, WAN destination rows).
    ClientCounters,
    /// Stations joining, leaving and moving between radios.
    Roaming,
    /// The device's configured location (site, building, floor, coordinates).
    Location,
    /// Ports' VLAN membership and hosts' VLANs.
    Vlans,
    /// LLDP neighbours.
    Lldp,
    /// Per-application session summaries (totals stay), and the
    /// application of each WAN destination row.
    Applications,
    /// What the access point infers about its clients' devices: type,
    /// model, OS, the MAC's vendor and the confidence (the
    /// `client-devices` records).
    ClientDevices,
    /// WAN destination rows' clients (MAC and LAN address): the rows then
    /// add up across clients.
    WanClients,
    /// WAN destination rows' destination addresses.
    WanDestinations,
    /// WAN destination rows' site names (from the gateway's DNS resolver).
    WanSites,
}

impl MetadataField {
    /// Every field.
    pub const ALL: [MetadataField; 23] = [
        MetadataField::Hostname,
        MetadataField::Os,
        MetadataField::Model,
        MetadataField::Kernel,
        MetadataField::Uptime,
        MetadataField::InterfaceMacs,
        MetadataField::InterfaceAddresses,
        MetadataField::InterfaceCounters,
        MetadataField::ClientAddresses,
        MetadataField::ClientHostnames,
        MetadataField::Usernames,
        MetadataField::UserAgents,
        MetadataField::ClientSignal,
        MetadataField::ClientCounters,
        MetadataField::Roaming,
        MetadataField::Location,
        MetadataField::Vlans,
        MetadataField::Lldp,
        MetadataField::Applications,
        MetadataField::ClientDevices,
        MetadataField::WanClients,
        MetadataField::WanDestinations,
        MetadataField::WanSites,
    ];

    /// The name admins type.
    pub fn as_str(self) -> &'static str {
        match self {
            MetadataField::Hostname => "hostname",
            MetadataField::Os => "os",
            MetadataField::Model => "model",
            MetadataField::Kernel => "kernel",
            MetadataField::Uptime => "uptime",
            MetadataField::InterfaceMacs => "interface-macs",
            MetadataField::InterfaceAddresses => "interface-addresses",
            MetadataField::InterfaceCounters => "interface-counters",
            MetadataField::ClientAddresses => "client-addresses",
            MetadataField::ClientHostnames => "client-hostnames",
            MetadataField::Usernames => "usernames",
            MetadataField::UserAgents => "user-agents",
            MetadataField::ClientSignal => "client-signal",
            MetadataField::ClientCounters => "client-counters",
            MetadataField::Roaming => "roaming",
            MetadataField::Location => "location",
            MetadataField::Vlans => "vlans",
            MetadataField::Lldp => "lldp",
            MetadataField::Applications => "applications",
            MetadataField::ClientDevices => "client-devices",
            MetadataField::WanClients => "wan-clients",
            MetadataField::WanDestinations => "wan-destinations",
            MetadataField::WanSites => "wan-sites",
        }
    }

    /// The first agent release (major, minor, patch) that can decode this
    /// field in a data policy. Postcard cannot skip an enum variant it does
    /// not know, so the collector leaves a newer field out of the policy it
    /// sends an older agent (which does not collect it anyway) and clears
    /// it on arrival as always.
    pub fn first_agent_release(self) -> (u64, u64, u64) {
        match self {
            MetadataField::ClientDevices => CLIENT_DEVICES_SINCE,
            MetadataField::WanClients | MetadataField::WanDestinations | MetadataField::WanSites => WAN_FIELDS_SINCE,
            _ => (0, 0, 0),
        }
    }
}

/// The first agent release that knows [`MetadataField::ClientDevices`].
pub const CLIENT_DEVICES_SINCE: (u64, u64, u64) = (0, 3, 0);

/// The first agent release that knows the WAN destination fields
/// ([`MetadataField::WanClients`], `WanDestinations`, `WanSites`).
pub const WAN_FIELDS_SINCE: (u64, u64, u64) = (0, 3, 0);

impl fmt::Display for MetadataField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A field name that is not one of [`MetadataField::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown metadata field {name:?}; known: {known}", name = .0, known = KnownFields)]
pub struct UnknownField(pub String);

/// Every field name, comma-separated, for error messages and help.
struct KnownFields;

impl fmt::Display for KnownFields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, field) in MetadataField::ALL.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(field.as_str())?;
        }
        Ok(())
    }
}

impl FromStr for MetadataField {
    type Err = UnknownField;
    fn from_str(s: &str) -> Result<Self, UnknownField> {
        MetadataField::ALL
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| UnknownField(s.chars().take(40).collect()))
    }
}
