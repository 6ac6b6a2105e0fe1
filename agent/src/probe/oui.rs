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
//! printers, consoles, media players, IoT modules), about 7,700 of them, in
//! `oui_subset.bin` (16.8 KiB, a little over 2 bytes an assignment; 31 KiB
//! as plain 4-byte entries): for each vendor of [`VENDORS`] in order, the
//! number of its assignments, then its 24-bit OUIs in ascending order, each
//! as the difference from the one before (the first from 0), all as
//! LEB128 varints. A lookup decodes the whole table (microseconds, once per
//! client device and collection). A unit test checks every entry against
//! the registry in `oui-data` and that the file is exactly what the
//! registry gives for [`VENDORS`]; `GLIMPSE_WRITE_OUI=1 cargo test -p
//! glimpse-agent --lib oui` rewrites it after an `oui-data` update.
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

/// Per vendor: a count, then that many ascending OUIs as deltas (LEB128).
static TABLE: &[u8] = include_bytes!("oui_subset.bin");

/// Reads one LEB128 varint of at most 32 bits at `*at`, advancing it;
/// `None` at the end of `bytes` or on an overlong number.
fn varint(bytes: &[u8], at: &mut usize) -> Option<u32> {
    let mut value = 0u32;
    for shift in (0..32).step_by(7) {
        let byte = *bytes.get(*at)?;
        *at += 1;
        value |= u32::from(byte & 0x7f).checked_shl(shift)?;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// Every `(OUI, vendor index)` of `table`, vendor by vendor; it ends at
/// the end of the table or at the first malformed number.
fn entries(table: &[u8]) -> impl Iterator<Item = (u32, usize)> + '_ {
    let mut at = 0usize;
    // The vendor whose assignments are being read, and how many are left.
    let mut vendor: Option<usize> = None;
    let (mut left, mut oui) = (0u32, 0u32);
    std::iter::from_fn(move || {
        while left == 0 {
            if at >= table.len() {
                return None;
            }
            vendor = Some(vendor.map_or(0, |v| v + 1));
            left = varint(table, &mut at)?;
            oui = 0;
        }
        left -= 1;
        oui = oui.checked_add(varint(table, &mut at)?)?;
        Some((oui, vendor?))
    })
    .fuse()
}

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
    let wanted = u32::from_be_bytes([0, mac.0[0], mac.0[1], mac.0[2]]);
    let (_, index) = entries(TABLE).find(|&(oui, _)| oui == wanted)?;
    VENDORS.get(index).map(|(name, _)| *name)
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
    fn the_table_decodes_whole_to_ascending_ouis_of_known_vendors() {
        let all: Vec<(u32, usize)> = entries(TABLE).collect();
        assert!(all.len() > 5_000, "{} entries", all.len());
        assert!(all.iter().all(|&(oui, vendor)| oui < 1 << 24 && vendor < VENDORS.len()));
        assert!(
            all.windows(2).all(|w| w[0].1 < w[1].1 || (w[0].1 == w[1].1 && w[0].0 < w[1].0)),
            "ascending per vendor"
        );
        let mut ouis: Vec<u32> = all.iter().map(|&(oui, _)| oui).collect();
        ouis.sort_unstable();
        ouis.dedup();
        assert_eq!(ouis.len(), all.len(), "no OUI under two vendors");
        // Every byte is read: a count too many or too few would not end here.
        assert_eq!(encode(&all), TABLE);
    }

    #[test]
    fn varints_decode_and_malformed_tables_end_without_panicking() {
        let mut at = 0;
        assert_eq!(varint(&[0x96, 0x01, 0x05], &mut at), Some(150));
        assert_eq!((varint(&[0x96, 0x01, 0x05], &mut at), at), (Some(5), 3));
        assert_eq!(varint(&[0x80, 0x80], &mut 0), None, "truncated");
        assert_eq!(varint(&[0xff, 0xff, 0xff, 0xff, 0xff, 0x01], &mut 0), None, "over 32 bits");
        // Two vendors: the first with 0x10 and 0x30, the second with 0x05.
        let table = [2, 0x10, 0x20, 1, 0x05];
        assert_eq!(entries(&table).collect::<Vec<_>>(), [(0x10, 0), (0x30, 0), (0x05, 1)]);
        assert_eq!(entries(&table[..2]).collect::<Vec<_>>(), [(0x10, 0)], "a count larger than what follows");
    }

    /// The table of `entries` (ascending within each vendor, vendors in
    /// order): a count and the deltas per vendor of [`VENDORS`].
    fn encode(entries: &[(u32, usize)]) -> Vec<u8> {
        fn push(out: &mut Vec<u8>, mut value: u32) {
            while value >= 0x80 {
                out.push((value & 0x7f) as u8 | 0x80);
                value >>= 7;
            }
            out.push(value as u8);
        }
        let mut out = Vec::new();
        for vendor in 0..VENDORS.len() {
            let ouis: Vec<u32> = entries.iter().filter(|&&(_, v)| v == vendor).map(|&(oui, _)| oui).collect();
            push(&mut out, u32::try_from(ouis.len()).unwrap());
            let mut previous = 0;
            for oui in ouis {
                push(&mut out, oui - previous);
                previous = oui;
            }
        }
        out
    }

    /// The subset as the IEEE registry (through `oui-data`) gives it.
    fn from_registry() -> Vec<u8> {
        let mut entries: Vec<(u32, usize)> = Vec::new();
        for (prefix, record) in oui_data::OUI_ENTRIES.entries() {
            if !matches!(record.registry(), oui_data::Registry::Mal) || prefix.len() != 6 {
                continue;
            }
            let Some(vendor) = vendor_for_organisation(record.organization()) else { continue };
            let index = VENDORS.iter().position(|(name, _)| *name == vendor).unwrap();
            let Ok(oui) = u32::from_str_radix(prefix, 16) else { continue };
            entries.push((oui, index));
        }
        entries.sort_unstable_by_key(|&(oui, vendor)| (vendor, oui));
        encode(&entries)
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
        for (oui, vendor) in entries(TABLE) {
            let text = format!("{oui:06X}");
            let record = oui_data::lookup(&text).expect("in the registry");
            assert_eq!(vendor_for_organisation(record.organization()), Some(VENDORS[vendor].0));
            let [_, a, b, c] = oui.to_be_bytes();
            if has_vendor_part(MacAddr([a, b, c, 0, 0, 1])) {
                assert_eq!(super::vendor(MacAddr([a, b, c, 0, 0, 1])), Some(VENDORS[vendor].0));
            }
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
