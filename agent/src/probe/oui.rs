//! The vendor of a client's MAC address, from an embedded subset of the
//! IEEE MA-L (OUI) registry.
//!
//! The whole registry (some 59,000 assignments and their organisation
//! names, as the `oui-data` crate carries it) would add megabytes to an
//! agent that must fit in 4 MiB of flash on MIPS, and the collector cannot
//! do the lookup instead: when an organisation pseudonymises MACs, the
//! agent replaces them before anything leaves the device, so only the
//! device ever sees a real OUI. So the agent embeds the 24-bit assignments
//! of the vendors of client devices ([`VENDORS`]: phones, computers,
//! printers, consoles, media players, IoT modules), about 7,800 of them,
//! 4 bytes each (`oui_subset.bin`, about 31 KiB): three bytes of OUI and
//! the vendor's index, sorted. A unit test checks every entry against the
//! registry in `oui-data` and that the file is exactly what the registry
//! gives for [`VENDORS`]; `GLIMPSE_WRITE_OUI=1 cargo test -p glimpse-agent
//! --lib oui` rewrites it after an `oui-data` update.
//!
//! Locally administered addresses (the randomised MACs phones use per
//! network) and group addresses have no vendor: their first three bytes
//! are not an assignment.

use glimpse_common::record::MacAddr;

/// The client-device vendors in the subset: the name reported, and the
/// IEEE organisation names (`*` at the end: a prefix) assigned to it.
pub const VENDORS: &[(&str, &[&str])] = &[
    ("Apple", &["Apple, Inc.", "Apple Inc"]),
    ("Samsung", &["Samsung Electronics*"]),
    ("Google", &["Google, Inc.", "Google Inc.", "Google LLC"]),
    ("Huawei", &["HUAWEI TECHNOLOGIES*", "Huawei Device*"]),
    ("Xiaomi", &["Xiaomi Communications*", "Beijing Xiaomi*"]),
    ("Microsoft", &["Microsoft Corporation", "Microsoft Corp."]),
    ("Intel", &["Intel Corporate"]),
    ("Dell", &["Dell Inc."]),
    // Not "Hewlett Packard Enterprise": servers and network equipment.
    ("HP", &["HP Inc.", "Hewlett Packard"]),
    ("Lenovo", &["Lenovo*", "LCFC(HeFei) Electronics*"]),
    ("Sony", &["Sony Corporation", "Sony Interactive Entertainment*", "Sony Mobile*"]),
    ("LG", &["LG Electronics*"]),
    ("Motorola", &["Motorola Mobility*"]),
    ("OnePlus", &["OnePlus*"]),
    ("OPPO", &["GUANGDONG OPPO*"]),
    ("vivo", &["vivo Mobile*"]),
    ("Amazon", &["Amazon Technologies*"]),
    ("Espressif", &["Espressif*"]),
    ("Raspberry Pi", &["Raspberry Pi*"]),
    ("Nintendo", &["Nintendo*"]),
    ("Canon", &["Canon Inc*"]),
    ("Epson", &["Seiko Epson*"]),
    ("Brother", &["Brother Industries*"]),
    ("Sonos", &["Sonos*"]),
    ("Roku", &["Roku*"]),
    ("Nest Labs", &["Nest Labs*"]),
    ("Fitbit", &["Fitbit*"]),
    ("Garmin", &["Garmin*"]),
];

/// Sorted `[oui0, oui1, oui2, vendor index]` entries.
static TABLE: &[u8] = include_bytes!("oui_subset.bin");

/// The vendor [`VENDORS`] names for the IEEE organisation `organisation`.
pub fn vendor_for_organisation(organisation: &str) -> Option<&'static str> {
    VENDORS.iter().find_map(|(vendor, names)| {
        names
            .iter()
            .any(|name| match name.strip_suffix('*') {
                Some(prefix) => organisation.starts_with(prefix),
                None => organisation == *name,
            })
            .then_some(*vendor)
    })
}

/// Whether `mac`'s first three bytes can be an IEEE assignment: not
/// locally administered (randomised), not a group address.
pub fn has_vendor_part(mac: MacAddr) -> bool {
    mac.0[0] & 0x03 == 0
}

/// The vendor of `mac`, when its OUI is in the embedded subset.
pub fn vendor(mac: MacAddr) -> Option<&'static str> {
    if !has_vendor_part(mac) {
        return None;
    }
    let wanted = [mac.0[0], mac.0[1], mac.0[2]];
    let (mut low, mut high) = (0, TABLE.len() / 4);
    while low < high {
        let middle = low + (high - low) / 2;
        let entry = &TABLE[middle * 4..middle * 4 + 4];
        match entry[..3].cmp(&wanted) {
            std::cmp::Ordering::Less => low = middle + 1,
            std::cmp::Ordering::Greater => high = middle,
            std::cmp::Ordering::Equal => return VENDORS.get(usize::from(entry[3])).map(|(name, _)| *name),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(text: &str) -> MacAddr {
        text.parse().unwrap()
    }

    #[test]
    fn well_known_prefixes_have_their_vendor_and_random_ones_none() {
        assert_eq!(vendor(mac("3c:22:fb:aa:bb:01")), Some("Apple"));
        assert_eq!(vendor(mac("18:fe:34:cc:dd:03")), Some("Espressif"));
        assert_eq!(vendor(mac("b8:27:eb:00:00:01")), Some("Raspberry Pi"));
        assert_eq!(vendor(mac("d2:6e:41:0a:bb:02")), None, "locally administered: randomised");
        assert_eq!(vendor(mac("01:00:5e:00:00:01")), None, "a group address");
        assert_eq!(vendor(mac("00:00:00:00:00:01")), None, "Xerox: not a client-device vendor here");
    }

    #[test]
    fn the_table_is_sorted_whole_entries_with_known_vendors() {
        assert_eq!(TABLE.len() % 4, 0);
        let entries: Vec<&[u8]> = TABLE.chunks_exact(4).collect();
        assert!(entries.len() > 5_000, "{} entries", entries.len());
        assert!(entries.windows(2).all(|w| w[0][..3] < w[1][..3]), "sorted, no duplicates");
        assert!(entries.iter().all(|e| usize::from(e[3]) < VENDORS.len()));
        assert!(VENDORS.len() <= 255);
    }

    /// The subset as the IEEE registry (through `oui-data`) gives it.
    fn from_registry() -> Vec<u8> {
        let mut entries: Vec<[u8; 4]> = Vec::new();
        for (prefix, record) in oui_data::OUI_ENTRIES.entries() {
            if !matches!(record.registry(), oui_data::Registry::Mal) || prefix.len() != 6 {
                continue;
            }
            let Some(vendor) = vendor_for_organisation(record.organization()) else { continue };
            let index = VENDORS.iter().position(|(name, _)| *name == vendor).unwrap();
            let Ok(bytes) =
                (0..3).map(|i| u8::from_str_radix(&prefix[i * 2..i * 2 + 2], 16)).collect::<Result<Vec<_>, _>>()
            else {
                continue;
            };
            entries.push([bytes[0], bytes[1], bytes[2], u8::try_from(index).unwrap()]);
        }
        entries.sort_unstable();
        entries.into_iter().flatten().collect()
    }

    #[test]
    fn the_embedded_subset_is_what_the_ieee_registry_says() {
        let wanted = from_registry();
        if std::env::var_os("GLIMPSE_WRITE_OUI").is_some() {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/probe/oui_subset.bin");
            std::fs::write(&path, &wanted).unwrap();
            return;
        }
        assert!(
            TABLE == wanted.as_slice(),
            "src/probe/oui_subset.bin differs from the registry: rerun with GLIMPSE_WRITE_OUI=1"
        );
        // And every lookup agrees with the registry's own.
        for entry in TABLE.chunks_exact(4) {
            let text = format!("{:02X}{:02X}{:02X}", entry[0], entry[1], entry[2]);
            let record = oui_data::lookup(&text).expect("in the registry");
            assert_eq!(vendor_for_organisation(record.organization()), Some(VENDORS[usize::from(entry[3])].0));
        }
    }

    proptest::proptest! {
        #[test]
        fn any_mac_looks_up_without_panicking(bytes in proptest::prelude::any::<[u8; 6]>()) {
            let found = vendor(MacAddr(bytes));
            proptest::prop_assert!(found.is_none() || has_vendor_part(MacAddr(bytes)));
        }
    }
}
