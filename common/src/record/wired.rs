//! What a switch reports: VLAN membership of its ports, the hosts it has
//! learned, and its LLDP neighbours.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::bounded::{BoundedString, BoundedVec};

use super::wireless::MAX_CLIENT_ADDRESSES;
use super::{DeviceProfile, MacAddr, MAX_IFNAME, MAX_INTERFACES, MAX_TEXT};

/// Most learned hosts in one report; a switch with more sends several.
pub const MAX_HOSTS: usize = 256;
/// Most LLDP neighbours in one report.
pub const MAX_NEIGHBOURS: usize = 256;
/// Most VLAN ranges listed per port.
pub const MAX_VLAN_RANGES: usize = 64;
/// Longest LLDP chassis or port identifier kept, in bytes.
pub const MAX_LLDP_ID: usize = 64;

/// A switch's ports, learned hosts and neighbours.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct WiredReport {
    /// The switch's name, series and location.
    pub device: DeviceProfile,
    /// VLAN (group) membership per bridge port, sorted by port.
    pub ports: BoundedVec<PortVlans, MAX_INTERFACES>,
    /// Hosts learned on the ports (the bridge forwarding table), with what
    /// the switch knows about each; sorted by port then MAC.
    pub hosts: BoundedVec<WiredHost, MAX_HOSTS>,
    /// Devices heard on the ports by LLDP.
    pub neighbours: BoundedVec<LldpNeighbour, MAX_NEIGHBOURS>,
}

/// VLAN membership of one port.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PortVlans {
    /// Port (interface) name.
    pub port: BoundedString<MAX_IFNAME>,
    /// Untagged ingress VLAN (PVID).
    pub pvid: Option<u16>,
    /// VLANs sent untagged on the port.
    pub untagged: BoundedVec<VlanRange, MAX_VLAN_RANGES>,
    /// VLANs sent tagged on the port.
    pub tagged: BoundedVec<VlanRange, MAX_VLAN_RANGES>,
}

/// VLAN ids `first..=last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct VlanRange {
    /// First VLAN id.
    pub first: u16,
    /// Last VLAN id (equal to `first` for a single VLAN).
    pub last: u16,
}

impl VlanRange {
    /// Consecutive runs of sorted, deduplicated `ids`.
    pub fn runs(ids: &[u16]) -> Vec<VlanRange> {
        let mut out: Vec<VlanRange> = Vec::new();
        for &id in ids {
            match out.last_mut() {
                Some(run) if run.last.checked_add(1) == Some(id) => run.last = id,
                _ => out.push(VlanRange { first: id, last: id }),
            }
        }
        out
    }
}

/// A host the switch has learned on one of its ports.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct WiredHost {
    /// The host's MAC address.
    pub mac: MacAddr,
    /// The port it was learned on.
    pub port: BoundedString<MAX_IFNAME>,
    /// The VLAN it was learned in.
    pub vlan: Option<u16>,
    /// Its IP addresses, from the ARP table and DHCP leases.
    pub addresses: BoundedVec<IpAddr, MAX_CLIENT_ADDRESSES>,
    /// Its hostname, from DHCP leases.
    pub hostname: BoundedString<MAX_TEXT>,
    /// The user it authenticated as on an 802.1X port.
    pub username: BoundedString<MAX_TEXT>,
}

/// A neighbour heard by LLDP.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LldpNeighbour {
    /// Our port it was heard on.
    pub local_port: BoundedString<MAX_IFNAME>,
    /// Its chassis identifier.
    pub chassis_id: BoundedString<MAX_LLDP_ID>,
    /// What kind of identifier that is (`mac`, `ip`, `local`, ...).
    pub chassis_id_type: BoundedString<16>,
    /// Its system name.
    pub system_name: BoundedString<MAX_TEXT>,
    /// Its system description (make, model, software).
    pub system_description: BoundedString<MAX_TEXT>,
    /// Its management addresses.
    pub management_addresses: BoundedVec<IpAddr, 8>,
    /// Its enabled capabilities (`Bridge`, `Router`, `Wlan`, ...).
    pub capabilities: BoundedVec<BoundedString<16>, 8>,
    /// Its port's identifier.
    pub port_id: BoundedString<MAX_LLDP_ID>,
    /// What kind of identifier that is (`ifname`, `mac`, `local`, ...).
    pub port_id_type: BoundedString<16>,
    /// Its port's description.
    pub port_description: BoundedString<MAX_TEXT>,
    /// VLANs it announces on the link.
    pub vlans: BoundedVec<u16, 32>,
}
