//! Data minimisation: which metadata fields an organisation lets its
//! devices collect, and how MAC addresses are pseudonymised.
//!
//! An organisation's admins choose fields to omit (`glimpse-collector admin
//! minimise`). The collector tells the organisation's agents, which stop
//! collecting them, and clears them again from every record that arrives,
//! so an agent that has not heard yet (or ignores it) cannot get them
//! stored. An omitted field keeps its type but holds nothing: empty text,
//! `None`, zero counters, no addresses.
//!
//! Pseudonymised MAC addresses are `HMAC-SHA256(organisation key, MAC)`
//! cut to 6 bytes with the locally-administered bit set and the multicast
//! bit clear: the same device keeps the same pseudonym within an
//! organisation (so counting and correlating still work), other
//! organisations see unrelated values, and nobody without the key can go
//! back to the real address.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::record::{DeviceMetadata, MacAddr};

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
    /// Interfaces' traffic and error counters.
    InterfaceCounters,
}

impl MetadataField {
    /// Every field.
    pub const ALL: [MetadataField; 8] = [
        MetadataField::Hostname,
        MetadataField::Os,
        MetadataField::Model,
        MetadataField::Kernel,
        MetadataField::Uptime,
        MetadataField::InterfaceMacs,
        MetadataField::InterfaceAddresses,
        MetadataField::InterfaceCounters,
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
        }
    }
}

impl fmt::Display for MetadataField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A field name that is not one of [`MetadataField::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown metadata field {0:?}; known: hostname, os, model, kernel, uptime, interface-macs, interface-addresses, interface-counters")]
pub struct UnknownField(pub String);

impl FromStr for MetadataField {
    type Err = UnknownField;
    fn from_str(s: &str) -> Result<Self, UnknownField> {
        MetadataField::ALL
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| UnknownField(s.chars().take(40).collect()))
    }
}

/// Clears the `omit`ted fields of `metadata`.
pub fn omit_fields(metadata: &mut DeviceMetadata, omit: &[MetadataField]) {
    for field in omit {
        match field {
            MetadataField::Hostname => metadata.hostname = Default::default(),
            MetadataField::Os => {
                metadata.os_name = Default::default();
                metadata.os_version = Default::default();
            }
            MetadataField::Model => metadata.model = None,
            MetadataField::Kernel => metadata.kernel = Default::default(),
            MetadataField::Uptime => metadata.uptime_secs = 0,
            MetadataField::InterfaceMacs => metadata.interfaces.as_mut_slice().iter_mut().for_each(|i| i.mac = None),
            MetadataField::InterfaceAddresses => {
                metadata.interfaces.as_mut_slice().iter_mut().for_each(|i| i.addresses = Default::default())
            }
            MetadataField::InterfaceCounters => metadata.interfaces.as_mut_slice().iter_mut().for_each(|i| {
                i.rx_bytes = 0;
                i.rx_packets = 0;
                i.rx_errors = 0;
                i.rx_dropped = 0;
                i.tx_bytes = 0;
                i.tx_packets = 0;
                i.tx_errors = 0;
                i.tx_dropped = 0;
            }),
        }
    }
}

/// The pseudonym of `mac` under `key` (see the module header).
pub fn pseudonymous_mac(key: &ring::hmac::Key, mac: MacAddr) -> MacAddr {
    let tag = ring::hmac::sign(key, &[b"glimpse-pseudonym-mac-v1:".as_slice(), &mac.0].concat());
    let mut out = [0u8; 6];
    out.copy_from_slice(&tag.as_ref()[..6]);
    // Locally administered, unicast: never mistaken for a vendor address.
    out[0] = (out[0] | 0x02) & !0x01;
    MacAddr(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bounded::{BoundedString, BoundedVec};
    use crate::record::InterfaceStats;

    #[test]
    fn names_round_trip_and_unknown_names_are_errors() {
        for field in MetadataField::ALL {
            assert_eq!(field.as_str().parse::<MetadataField>().unwrap(), field);
        }
        let err = "macs".parse::<MetadataField>().unwrap_err().to_string();
        assert!(err.contains("\"macs\"") && err.contains("interface-macs"), "{err}");
    }

    #[test]
    fn omitted_fields_hold_nothing() {
        let interface = InterfaceStats {
            name: BoundedString::truncating("eth0"),
            mac: Some(MacAddr([2, 0, 0, 0, 0, 1])),
            addresses: BoundedVec::truncating(vec!["192.0.2.1".parse().unwrap()]),
            rx_bytes: 10,
            tx_errors: 2,
            mtu: 1500,
            ..Default::default()
        };
        let full = DeviceMetadata {
            hostname: BoundedString::truncating("alice-laptop"),
            os_name: BoundedString::truncating("OpenWrt"),
            model: Some(BoundedString::truncating("AP-1")),
            uptime_secs: 5,
            interfaces: BoundedVec::truncating(vec![interface]),
            ..Default::default()
        };
        let mut m = full.clone();
        omit_fields(&mut m, &[]);
        assert_eq!(m, full);
        omit_fields(&mut m, &MetadataField::ALL);
        assert_eq!(m.hostname.as_str(), "");
        assert_eq!((m.os_name.as_str(), m.model.as_ref(), m.uptime_secs), ("", None, 0));
        let i = &m.interfaces[0];
        assert_eq!((i.mac, i.addresses.len(), i.rx_bytes, i.tx_errors), (None, 0, 0, 0));
        assert_eq!((i.name.as_str(), i.mtu), ("eth0", 1500), "what is not a listed field stays");
    }

    #[test]
    fn pseudonyms_are_stable_keyed_and_local() {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &[1; 32]);
        let other = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &[2; 32]);
        let mac = MacAddr([0x00, 0x1b, 0x63, 0x84, 0x45, 0xe6]);
        let p = pseudonymous_mac(&key, mac);
        assert_eq!(p, pseudonymous_mac(&key, mac));
        assert_ne!(p, mac);
        assert_ne!(p, pseudonymous_mac(&other, mac));
        assert_ne!(p, pseudonymous_mac(&key, MacAddr([0x00, 0x1b, 0x63, 0x84, 0x45, 0xe7])));
        assert_eq!(p.0[0] & 0x03, 0x02, "locally administered unicast");
    }
}
