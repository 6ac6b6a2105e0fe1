//! Data minimisation: which metadata fields an organisation lets its
//! devices collect, and how MAC addresses are pseudonymised.
//!
//! An organisation's admins choose fields to omit (`glimpse-collector admin
//! minimise`). The collector tells the organisation's agents, which stop
//! collecting them, and clears them again from every record that arrives,
//! so an agent that has not heard yet (or ignores it) cannot get them
//! stored. An omitted field keeps its type but holds nothing: empty text,
//! `None`, zero counters, no addresses. Which record fields each setting
//! clears is said once, by [`Field::omitted_by`], and the fields are found
//! by the one walk over records, [`crate::record::personal`]; so are the
//! MAC addresses pseudonymised here.
//!
//! Pseudonymised MAC addresses are `HMAC-SHA256(key, MAC)` cut to 6 bytes
//! with the locally-administered bit set and the multicast bit clear
//! ([`pseudonymous_mac`]): the same device keeps the same pseudonym within
//! an organisation (so counting and correlating still work), other
//! organisations see unrelated values, and nobody without the key can go
//! back to the real address.
//!
//! Pseudonymisation happens in two layers so that a real MAC never leaves
//! a device and yet holding a device is not enough to reverse what is
//! stored. The collector gives an organisation's devices a *device key*
//! ([`DevicePseudonymKey`], derived from the organisation's pseudonym key);
//! agents replace every MAC with its pseudonym under that key before a
//! batch is written ([`pseudonymise_at_source`]) and say so
//! ([`MacForm::DevicePseudonyms`]). The collector then applies its own
//! layer under the organisation's pseudonym key, which never leaves it:
//! stored = `pseudonymous_mac(org key, pseudonymous_mac(device key, MAC))`.
//! A batch that arrives with real MACs (sent before the device heard of
//! the policy, or by an agent too old to know) gets both layers at the
//! collector, so every record ends up in the same stored form
//! ([`Pseudonymiser`]). A MAC space is small (2^24 addresses per vendor
//! prefix), so a single keyed layer known to devices could be reversed by
//! anyone who took one device apart; the outer layer is what stops that.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::record::personal::{self, Category, Field, FieldMut, VisitMut};
use crate::record::{DeviceMetadata, MacAddr, RecordBody};

pub use crate::record::withheld::{MetadataField, UnknownField};

/// Clears the `omit`ted fields of `metadata`.
pub fn omit_fields(metadata: &mut DeviceMetadata, omit: &[MetadataField]) {
    if omit.is_empty() {
        return;
    }
    personal::visit_metadata_mut(metadata, &mut Omit(omit));
}

/// Clears the `omit`ted fields of any record body. Records that carry none
/// of them (captures, agent health) are left as they are.
pub fn omit_from_record(body: &mut RecordBody, omit: &[MetadataField]) {
    if omit.is_empty() {
        return;
    }
    personal::visit_mut(body, &mut Omit(omit));
    // Rows told apart only by what was just withheld now say the same
    // thing: one row each, as the agent itself would have sent them.
    if let RecordBody::WanDestinations(report) = body {
        report.merge_rows();
    }
}

/// Clears every visited field whose setting is in the list.
struct Omit<'a>(&'a [MetadataField]);

impl VisitMut for Omit<'_> {
    fn field(&mut self, field: Field, mut value: FieldMut<'_>) {
        if field.omitted_by().is_some_and(|setting| self.0.contains(&setting)) {
            value.clear();
        }
    }
}

/// Calls `rewrite` on every MAC address a metadata-kind record holds about
/// a device or a client: interfaces, radios' BSSIDs, stations, roaming
/// events, learned hosts. (LLDP chassis identifiers name network equipment,
/// not people, and stay.) A MAC inside an IPv6 address's interface
/// identifier (modified EUI-64, as SLAAC and link-local addresses are made)
/// is the same MAC and is rewritten too, prefix kept.
pub fn rewrite_record_macs(body: &mut RecordBody, mut rewrite: impl FnMut(MacAddr) -> MacAddr) {
    personal::visit_fields_mut(body, |field, mut value| match field.category() {
        Category::Mac if field != Field::CaptureMac => value.rewrite_mac(&mut rewrite),
        Category::Ip => value.rewrite_ipv6_macs(&mut rewrite),
        _ => {}
    });
}

/// Calls `rewrite` on every MAC address any record holds: those of
/// [`rewrite_record_macs`] and, for a capture, the addresses in its headers
/// (link, 802.11, ARP, and the EUI-64 identifiers of IPv6 addresses; see
/// [`crate::capture::macs`]).
pub fn rewrite_all_macs(body: &mut RecordBody, mut rewrite: impl FnMut(MacAddr) -> MacAddr) {
    personal::visit_fields_mut(body, |field, mut value| match field.category() {
        Category::Mac => value.rewrite_mac(&mut rewrite),
        Category::Ip => value.rewrite_ipv6_macs(&mut rewrite),
        _ => {}
    });
}

/// Takes out of a Wi-Fi report what would let stored reports be joined
/// into each person's movements, for an organisation that keeps no
/// location history (the default; see `OrgPolicy::location_history` in
/// glimpse-store). A report names the access point and the radio that
/// served each station, so the station's identity across reports is a
/// location history: its MAC is replaced by its pseudonym under
/// `report_key`, a key the caller makes afresh for this one report and
/// forgets (stations and roaming events stay distinct and matched within
/// the report, unrelated across reports), and its addresses, hostname,
/// username and user agent, which would link reports just as well, are
/// cleared. Signal, rates, counters and VLAN stay: they are what Wi-Fi
/// assurance needs and say nothing about who. A client-devices report is
/// treated the same way: its MACs become stand-ins under its own key, its
/// model (the most specific inference, often from the hostname) is
/// cleared, and the coarse type, OS family, vendor and confidence stay (a
/// small fixed vocabulary: how many phones, which OSes, not whose). Other
/// records are left as they are.
pub fn unlink_stations(body: &mut RecordBody, report_key: &ring::hmac::Key) {
    if !matches!(body, RecordBody::Wireless(_) | RecordBody::ClientDevices(_)) {
        return;
    }
    personal::visit_fields_mut(body, |field, mut value| match field {
        Field::StationMac | Field::RoamMac | Field::ClientDeviceMac => {
            value.rewrite_mac(|mac| pseudonymous_mac(report_key, mac));
        }
        Field::StationAddresses
        | Field::StationHostname
        | Field::StationUsername
        | Field::StationUserAgent
        | Field::ClientDeviceModel => {
            value.clear();
        }
        _ => {}
    });
}

/// Whether a batch's MAC addresses are real or already replaced on the
/// device by their pseudonyms under the [`DevicePseudonymKey`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MacForm {
    /// The addresses as the device saw them.
    Real,
    /// Each address replaced by `pseudonymous_mac(device key, address)`.
    DevicePseudonyms,
}

/// The key an organisation's devices pseudonymise MAC addresses with
/// before anything leaves them (see the module header). Wiped on drop,
/// never printed, compared in constant time.
#[derive(Clone, PartialEq, Eq)]
pub struct DevicePseudonymKey(crate::secret::SecretKey);

/// What the device key is derived with; a new version gives new pseudonyms.
const DEVICE_KEY_LABEL: &[u8] = b"glimpse-device-pseudonym-key-v1";

impl DevicePseudonymKey {
    /// The device key of the organisation whose pseudonym key is
    /// `org_pseudonym_key`. Deterministic, so every device of the
    /// organisation gives a client the same pseudonym (roaming between
    /// access points stays visible), and it changes when the
    /// organisation's data key is destroyed.
    pub fn derive(org_pseudonym_key: &ring::hmac::Key) -> Self {
        let tag = ring::hmac::sign(org_pseudonym_key, DEVICE_KEY_LABEL);
        let mut bytes = zeroize::Zeroizing::new([0u8; crate::secret::KEY_LEN]);
        bytes.copy_from_slice(&tag.as_ref()[..crate::secret::KEY_LEN]);
        Self(crate::secret::SecretKey::from_bytes(*bytes))
    }

    /// The pseudonym of `mac` under this key.
    pub fn pseudonym(&self, mac: MacAddr) -> MacAddr {
        pseudonymous_mac(&self.hmac_key(), mac)
    }

    /// The key as an HMAC key, to pseudonymise many addresses with.
    pub fn hmac_key(&self) -> ring::hmac::Key {
        ring::hmac::Key::new(ring::hmac::HMAC_SHA256, self.0.expose())
    }
}

impl fmt::Debug for DevicePseudonymKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DevicePseudonymKey([redacted])")
    }
}

impl Serialize for DevicePseudonymKey {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.expose().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for DevicePseudonymKey {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let bytes = zeroize::Zeroizing::new(<[u8; crate::secret::KEY_LEN]>::deserialize(deserializer)?);
        Ok(Self(crate::secret::SecretKey::from_bytes(*bytes)))
    }
}

/// Replaces every MAC address in `body` by its pseudonym under the device
/// key: what an agent does to each record before it leaves the device.
pub fn pseudonymise_at_source(body: &mut RecordBody, key: &ring::hmac::Key) {
    rewrite_all_macs(body, |mac| pseudonymous_mac(key, mac));
}

/// The collector's side: brings MAC addresses of either [`MacForm`] to the
/// one stored form, `pseudonymous_mac(org key, pseudonymous_mac(device key, MAC))`.
pub struct Pseudonymiser {
    org: ring::hmac::Key,
    device: ring::hmac::Key,
    /// Names the pair of keys without revealing them, so that a
    /// [`PseudonymCache`] filled under other keys is never consulted.
    fingerprint: [u8; 16],
}

/// What the key fingerprint of a [`PseudonymCache`] is made with.
const CACHE_FINGERPRINT_LABEL: &[u8] = b"glimpse-pseudonym-cache-fingerprint-v1";

impl Pseudonymiser {
    /// For the organisation whose pseudonym key is `org_pseudonym_key`.
    pub fn new(org_pseudonym_key: ring::hmac::Key) -> Self {
        let device = DevicePseudonymKey::derive(&org_pseudonym_key).hmac_key();
        let mut fingerprint = [0u8; 16];
        fingerprint.copy_from_slice(&ring::hmac::sign(&org_pseudonym_key, CACHE_FINGERPRINT_LABEL).as_ref()[..16]);
        Self { org: org_pseudonym_key, device, fingerprint }
    }

    /// [`Self::apply`] through `cache`: an address seen recently costs a
    /// lookup instead of two HMACs. The stored forms are exactly those
    /// of [`Self::apply`]; a cache filled under other keys is emptied first.
    pub fn apply_cached(&self, body: &mut RecordBody, form: MacForm, cache: &mut PseudonymCache) {
        cache.bind(self.fingerprint);
        rewrite_all_macs(body, |mac| cache.stored_form(mac, form, |mac| self.stored_form(mac, form)));
    }

    /// The stored form of an address that arrived as `form`.
    pub fn stored_form(&self, mac: MacAddr, form: MacForm) -> MacAddr {
        let inner = match form {
            MacForm::Real => pseudonymous_mac(&self.device, mac),
            MacForm::DevicePseudonyms => mac,
        };
        pseudonymous_mac(&self.org, inner)
    }

    /// Rewrites every MAC address in `body`, which arrived as `form`, to
    /// its stored form.
    pub fn apply(&self, body: &mut RecordBody, form: MacForm) {
        rewrite_all_macs(body, |mac| self.stored_form(mac, form));
    }
}

impl fmt::Debug for Pseudonymiser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pseudonymiser([redacted])")
    }
}

/// Recently computed stored forms of MAC addresses, for one connection:
/// a capture batch names the same few stations hundreds of times, and each
/// stored form costs two HMAC-SHA256s. Direct-mapped (a colliding address
/// replaces the older one), it starts small and grows, up to
/// [`PseudonymCache::MAX_SLOTS`], only for connections whose batches keep
/// missing, so that ten thousand quiet devices cost a few hundred bytes
/// each. It holds pseudonyms and the addresses they came from, as the
/// batch being processed does, and is forgotten with the connection.
#[derive(Default)]
pub struct PseudonymCache {
    fingerprint: [u8; 16],
    slots: Vec<CacheSlot>,
    misses: usize,
}

#[derive(Clone, Copy, Default)]
struct CacheSlot {
    /// 0: empty; 1: a real address; 2: a device pseudonym.
    form: u8,
    mac: [u8; 6],
    stored: [u8; 6],
}

impl PseudonymCache {
    /// Slots a new cache starts with once it is first used.
    pub const MIN_SLOTS: usize = 32;
    /// Slots a cache grows to at most (13 bytes each).
    pub const MAX_SLOTS: usize = 1024;

    /// An empty cache; nothing is allocated until it is first used.
    pub fn new() -> Self {
        Self::default()
    }

    /// Slots allocated now (for tests and memory accounting).
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    fn bind(&mut self, fingerprint: [u8; 16]) {
        if self.slots.is_empty() {
            self.slots = vec![CacheSlot::default(); Self::MIN_SLOTS];
        }
        if self.fingerprint != fingerprint {
            self.slots.fill(CacheSlot::default());
            self.fingerprint = fingerprint;
        }
    }

    fn stored_form(&mut self, mac: MacAddr, form: MacForm, compute: impl FnOnce(MacAddr) -> MacAddr) -> MacAddr {
        let tag = match form {
            MacForm::Real => 1,
            MacForm::DevicePseudonyms => 2,
        };
        let m = mac.0;
        let folded = u64::from_le_bytes([m[0], m[1], m[2], m[3], m[4], m[5], tag, 0]);
        // Fibonacci hashing: the top bits of a multiplication spread the
        // addresses' low-entropy vendor prefixes over the slots.
        let bits = self.slots.len().trailing_zeros();
        let index = (folded.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - bits)) as usize;
        let Some(slot) = self.slots.get_mut(index) else { return compute(mac) };
        if slot.form == tag && slot.mac == m {
            return MacAddr(slot.stored);
        }
        let stored = compute(mac);
        *slot = CacheSlot { form: tag, mac: m, stored: stored.0 };
        self.misses += 1;
        stored
    }

    /// Ends a batch: the cache grows when the batch missed more often than
    /// half its slots (its working set does not fit).
    pub fn end_batch(&mut self) {
        // More misses than half the slots: the working set does not fit.
        if self.misses > self.slots.len() / 2 && self.slots.len() < Self::MAX_SLOTS {
            self.slots = vec![CacheSlot::default(); (self.slots.len() * 4).min(Self::MAX_SLOTS)];
        }
        self.misses = 0;
    }
}

impl fmt::Debug for PseudonymCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PseudonymCache({} slots)", self.slots.len())
    }
}

/// The pseudonym of `mac` under `key` (see the module header).
pub fn pseudonymous_mac(key: &ring::hmac::Key, mac: MacAddr) -> MacAddr {
    // Two updates rather than one concatenation: no allocation per address.
    let mut context = ring::hmac::Context::with_key(key);
    context.update(b"glimpse-pseudonym-mac-v1:");
    context.update(&mac.0);
    let tag = context.sign();
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
    use crate::record::{DeviceProfile, InterfaceStats, Location, Station, WiredReport, WirelessReport};

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

    fn wireless_with(macs: [MacAddr; 3]) -> RecordBody {
        use crate::record::{Radio, RoamEvent, RoamKind};
        RecordBody::Wireless(Box::new(WirelessReport {
            radios: BoundedVec::truncating(vec![Radio { bssid: Some(macs[0]), ..Default::default() }]),
            stations: BoundedVec::truncating(vec![Station { mac: macs[1], ..Default::default() }]),
            roaming: BoundedVec::truncating(vec![RoamEvent {
                mac: macs[2],
                event: RoamKind::Joined,
                interface: BoundedString::truncating("wlan0"),
                previous_interface: None,
            }]),
            ..Default::default()
        }))
    }

    #[test]
    fn pseudonymised_on_the_device_or_on_arrival_gives_the_same_stored_form() {
        let org = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &[9; 32]);
        let device = DevicePseudonymKey::derive(&org);
        let macs =
            [MacAddr([0x94, 0x83, 0xc4, 1, 2, 3]), MacAddr([0x3c, 0x22, 0xfb, 4, 5, 6]), MacAddr([2, 0, 0, 7, 8, 9])];
        let real = wireless_with(macs);

        let mut on_arrival = real.clone();
        let pseudonymiser = Pseudonymiser::new(org);
        pseudonymiser.apply(&mut on_arrival, MacForm::Real);

        let mut at_source = real.clone();
        pseudonymise_at_source(&mut at_source, &device.hmac_key());
        assert_eq!(at_source, wireless_with(macs.map(|m| device.pseudonym(m))));
        pseudonymiser.apply(&mut at_source, MacForm::DevicePseudonyms);

        assert_eq!(at_source, on_arrival);
        let stored = macs.map(|m| pseudonymiser.stored_form(m, MacForm::Real));
        assert_eq!(on_arrival, wireless_with(stored));
        for (real, stored) in macs.iter().zip(stored) {
            assert_ne!(*real, stored);
            assert_ne!(device.pseudonym(*real), stored, "the device's layer alone is not the stored form");
        }
    }

    /// A known HMAC-SHA256 output: the pseudonym is a format on disk, and
    /// computing it without an allocation must not change it.
    #[test]
    fn a_pseudonym_is_the_cut_hmac_of_label_and_address() {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &[9; 32]);
        let mac = MacAddr([0x94, 0x83, 0xc4, 1, 2, 3]);
        let tag = ring::hmac::sign(&key, &[b"glimpse-pseudonym-mac-v1:".as_slice(), &mac.0].concat());
        let mut expected = [0u8; 6];
        expected.copy_from_slice(&tag.as_ref()[..6]);
        expected[0] = (expected[0] | 0x02) & !0x01;
        assert_eq!(pseudonymous_mac(&key, mac), MacAddr(expected));
    }

    proptest::proptest! {
        /// Through a cache, whatever the addresses, their order, repeats
        /// and forms, every stored form is the uncached one; and a cache
        /// filled under one organisation's keys gives another's nothing.
        #[test]
        fn the_cache_never_changes_a_stored_form(
            macs in proptest::collection::vec((0u8..4, 0u8..40, proptest::bool::ANY), 1..3000),
        ) {
            let one = Pseudonymiser::new(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &[9; 32]));
            let other = Pseudonymiser::new(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &[10; 32]));
            let mut cache = PseudonymCache::new();
            for (i, chunk) in macs.chunks(200).enumerate() {
                let pseudonymiser = if i % 3 == 2 { &other } else { &one };
                let batch: Vec<(MacAddr, MacForm)> = chunk
                    .iter()
                    .map(|&(a, b, device)| {
                        let form = if device { MacForm::DevicePseudonyms } else { MacForm::Real };
                        (MacAddr([0x3c, a, 0xfb, 0, b, a ^ b]), form)
                    })
                    .collect();
                for (mac, form) in batch {
                    let mut cached = wireless_with([mac, mac, MacAddr([2, 0, 0, 0, 0, 1])]);
                    let mut plain = cached.clone();
                    pseudonymiser.apply_cached(&mut cached, form, &mut cache);
                    pseudonymiser.apply(&mut plain, form);
                    proptest::prop_assert_eq!(cached, plain);
                }
                cache.end_batch();
                proptest::prop_assert!(cache.capacity() <= PseudonymCache::MAX_SLOTS);
            }
        }
    }

    #[test]
    fn a_cache_grows_only_for_a_working_set_that_does_not_fit() {
        let pseudonymiser = Pseudonymiser::new(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &[9; 32]));
        let mut cache = PseudonymCache::new();
        assert_eq!(cache.capacity(), 0, "nothing allocated before it is used");
        let few = [MacAddr([2, 0, 0, 0, 0, 1]), MacAddr([2, 0, 0, 0, 0, 2]), MacAddr([2, 0, 0, 0, 0, 3])];
        for _ in 0..10 {
            for _ in 0..100 {
                pseudonymiser.apply_cached(&mut wireless_with(few), MacForm::Real, &mut cache);
            }
            cache.end_batch();
        }
        assert_eq!(cache.capacity(), PseudonymCache::MIN_SLOTS, "three stations fit");
        for round in 0..10u8 {
            for i in 0..100u8 {
                let macs =
                    [MacAddr([2, round, i, 0, 0, 1]), MacAddr([2, round, i, 0, 0, 2]), MacAddr([2, round, i, 0, 0, 3])];
                pseudonymiser.apply_cached(&mut wireless_with(macs), MacForm::Real, &mut cache);
            }
            cache.end_batch();
        }
        assert_eq!(cache.capacity(), PseudonymCache::MAX_SLOTS, "a scan grows it to the bound, no further");
    }

    #[test]
    fn a_stations_mac_derived_ipv6_address_takes_the_pseudonym_of_its_mac() {
        use std::net::IpAddr;
        let mac = MacAddr([0x3c, 0x22, 0xfb, 4, 5, 6]);
        let slaac: IpAddr = "2001:db8:1:2:3e22:fbff:fe04:506".parse().unwrap();
        let privacy: IpAddr = "2001:db8:1:2:1c2d:3e4f:5a6b:7c8d".parse().unwrap();
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        let mut body = RecordBody::Wireless(Box::new(WirelessReport {
            stations: BoundedVec::truncating(vec![Station {
                mac,
                addresses: BoundedVec::truncating(vec![slaac, privacy, v4]),
                ..Default::default()
            }]),
            ..Default::default()
        }));
        let pseudonymiser = Pseudonymiser::new(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &[5; 32]));
        pseudonymiser.apply(&mut body, MacForm::Real);
        let RecordBody::Wireless(report) = &body else { unreachable!() };
        let station = &report.stations[0];
        let stored = pseudonymiser.stored_form(mac, MacForm::Real);
        assert_eq!(station.mac, stored);
        let IpAddr::V6(rewritten) = station.addresses[0] else { panic!("{:?}", station.addresses) };
        assert_eq!(crate::capture::macs::mac_of_ipv6(&rewritten), Some(stored), "one pseudonym in both forms");
        assert_eq!(rewritten.segments()[..4], [0x2001, 0xdb8, 1, 2], "the prefix stays");
        assert_eq!(&station.addresses[1..], [privacy, v4], "addresses that hold no MAC stay");
    }

    #[test]
    fn a_capture_is_pseudonymised_in_its_headers() {
        use crate::capture::{CapturedPacket, LinkType};
        let mut frame = vec![0u8; 14];
        frame[..6].copy_from_slice(&[0x3c, 0x22, 0xfb, 4, 5, 6]);
        frame[6..12].copy_from_slice(&[0x94, 0x83, 0xc4, 1, 2, 3]);
        frame[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
        let packet = CapturedPacket {
            timestamp_us: 1,
            interface: BoundedString::truncating("eth0"),
            link_type: LinkType::Ethernet.dlt(),
            wire_len: 1500,
            headers: crate::capture::BoundedBytes::try_from_vec(frame).unwrap(),
        };
        let mut body = RecordBody::Capture(packet);
        let key = DevicePseudonymKey::derive(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &[3; 32]));
        pseudonymise_at_source(&mut body, &key.hmac_key());
        let RecordBody::Capture(packet) = &body else { unreachable!() };
        assert_eq!(&packet.headers[..6], &key.pseudonym(MacAddr([0x3c, 0x22, 0xfb, 4, 5, 6])).0);
        assert_eq!(&packet.headers[6..12], &key.pseudonym(MacAddr([0x94, 0x83, 0xc4, 1, 2, 3])).0);
    }

    #[test]
    fn the_device_key_is_derived_stable_secret_and_round_trips() {
        let org = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &[5; 32]);
        let key = DevicePseudonymKey::derive(&org);
        assert_eq!(key, DevicePseudonymKey::derive(&org));
        assert_ne!(key, DevicePseudonymKey::derive(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &[6; 32])));
        assert_eq!(format!("{key:?}"), "DevicePseudonymKey([redacted])");
        let bytes = postcard::to_stdvec(&key).unwrap();
        assert_eq!(bytes.len(), 32);
        assert_eq!(postcard::from_bytes::<DevicePseudonymKey>(&bytes).unwrap(), key);
        assert!(postcard::from_bytes::<DevicePseudonymKey>(&bytes[..31]).is_err());
    }

    proptest::proptest! {
        #[test]
        fn both_routes_agree_for_any_address(mac: [u8; 6], org_key: [u8; 32]) {
            let org = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &org_key);
            let device = DevicePseudonymKey::derive(&org);
            let pseudonymiser = Pseudonymiser::new(org);
            let mac = MacAddr(mac);
            proptest::prop_assert_eq!(
                pseudonymiser.stored_form(device.pseudonym(mac), MacForm::DevicePseudonyms),
                pseudonymiser.stored_form(mac, MacForm::Real)
            );
        }
    }

    #[test]
    fn omitted_fields_hold_nothing_in_the_device_kind_reports() {
        use crate::record::{RoamEvent, RoamKind, WiredHost};
        let station = Station {
            mac: MacAddr([2, 0, 0, 0, 0, 7]),
            addresses: BoundedVec::truncating(vec!["192.0.2.7".parse().unwrap()]),
            hostname: BoundedString::truncating("alice-phone"),
            username: BoundedString::truncating("alice"),
            user_agent: BoundedString::truncating("android-dhcp-14"),
            vlan: Some(20),
            signal_dbm: Some(-50),
            rx_bytes: Some(5),
            ..Default::default()
        };
        let mut wireless = RecordBody::Wireless(Box::new(WirelessReport {
            device: DeviceProfile {
                name: BoundedString::truncating("AP-1"),
                location: Location { site: BoundedString::truncating("HQ"), latitude: Some(1.0), ..Default::default() },
                ..Default::default()
            },
            stations: BoundedVec::truncating(vec![station]),
            roaming: BoundedVec::truncating(vec![RoamEvent {
                mac: MacAddr([2, 0, 0, 0, 0, 7]),
                event: RoamKind::Joined,
                interface: BoundedString::truncating("wlan0"),
                previous_interface: None,
            }]),
            ..Default::default()
        }));
        let full = wireless.clone();
        omit_from_record(&mut wireless, &[]);
        assert_eq!(wireless, full);
        omit_from_record(&mut wireless, &MetadataField::ALL);
        let RecordBody::Wireless(w) = &wireless else { panic!() };
        let s = &w.stations[0];
        assert_eq!(s.mac, MacAddr([2, 0, 0, 0, 0, 7]), "the MAC is pseudonymised, never omitted");
        assert!(s.addresses.is_empty() && s.hostname.is_empty() && s.username.is_empty() && s.user_agent.is_empty());
        assert_eq!((s.vlan, s.signal_dbm, s.rx_bytes), (None, None, None));
        assert!(w.roaming.is_empty());
        assert_eq!(w.device.location, Location::default());
        assert_eq!(w.device.name.as_str(), "AP-1", "the device's name is not a listed field");

        let mut wired = RecordBody::Wired(Box::new(WiredReport {
            hosts: BoundedVec::truncating(vec![WiredHost {
                username: BoundedString::truncating("bob"),
                vlan: Some(10),
                ..Default::default()
            }]),
            ..Default::default()
        }));
        omit_from_record(&mut wired, &[MetadataField::Usernames]);
        let RecordBody::Wired(w) = &wired else { panic!() };
        assert_eq!((w.hosts[0].username.as_str(), w.hosts[0].vlan), ("", Some(10)));

        let mut seen = Vec::new();
        rewrite_record_macs(&mut RecordBody::Wireless(Box::default()), |m| m);
        rewrite_record_macs(&mut full.clone(), |m| {
            seen.push(m);
            m
        });
        assert_eq!(seen.len(), 2, "the station and its roaming event");
    }

    #[test]
    fn withheld_wan_clients_add_up_across_clients_and_destinations_stay() {
        use crate::record::{DestinationCounters, WanDestination, WanDestinationReport};
        let row = |client: u8, site: &str, bytes: u64| WanDestination {
            client_mac: Some(MacAddr([2, 0, 0, 0, 0, client])),
            client_address: Some(std::net::IpAddr::from([192, 168, 1, client])),
            destination: Some(std::net::IpAddr::from([93, 184, 216, 34])),
            protocol: 6,
            port: Some(443),
            application: BoundedString::truncating("https"),
            site: BoundedString::truncating(site),
            counters: DestinationCounters { active_sessions: 1, bytes_in: bytes, ..Default::default() },
        };
        let report = WanDestinationReport {
            destinations: BoundedVec::truncating(vec![row(1, "example.com", 10), row(2, "example.com", 20)]),
            ..Default::default()
        };
        let mut body = RecordBody::WanDestinations(Box::new(report.clone()));
        omit_from_record(&mut body, &[MetadataField::WanSites]);
        let RecordBody::WanDestinations(r) = &body else { panic!() };
        assert_eq!(r.destinations.len(), 2, "two clients stay two rows");
        assert!(r.destinations.iter().all(|d| d.site.is_empty() && d.client_mac.is_some()));

        let mut body = RecordBody::WanDestinations(Box::new(report));
        omit_from_record(&mut body, &[MetadataField::WanClients, MetadataField::WanDestinations]);
        let RecordBody::WanDestinations(r) = &body else { panic!() };
        assert_eq!(r.destinations.len(), 1, "one row once clients are withheld");
        let merged = &r.destinations[0];
        assert_eq!((merged.client_mac, merged.client_address, merged.destination), (None, None, None));
        assert_eq!((merged.site.as_str(), merged.port, merged.counters.bytes_in), ("example.com", Some(443), 30));
        assert_eq!(merged.counters.active_sessions, 2);
    }

    #[test]
    fn unlinked_reports_cannot_be_joined_into_a_station_history() {
        let macs = [
            MacAddr([0x94, 0x83, 0xc4, 1, 2, 3]),
            MacAddr([0x3c, 0x22, 0xfb, 4, 5, 6]),
            MacAddr([0x3c, 0x22, 0xfb, 4, 5, 6]),
        ];
        let with_identity = |mut body: RecordBody| {
            let RecordBody::Wireless(w) = &mut body else { unreachable!() };
            let station = &mut w.stations.as_mut_slice()[0];
            station.addresses = BoundedVec::truncating(vec!["192.0.2.7".parse().unwrap()]);
            station.hostname = BoundedString::truncating("alice-laptop");
            station.username = BoundedString::truncating("alice");
            station.user_agent = BoundedString::truncating("Mozilla/5.0");
            station.signal_dbm = Some(-51);
            station.vlan = Some(20);
            body
        };
        let report = with_identity(wireless_with(macs));
        let unlinked = |n: u8| {
            let mut body = report.clone();
            unlink_stations(&mut body, &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &[n; 32]));
            let RecordBody::Wireless(w) = body else { unreachable!() };
            w
        };
        let (first, second) = (unlinked(1), unlinked(2));
        let s = &first.stations[0];
        assert!(s.mac != macs[1] && s.mac.0[0] & 0x03 == 0x02, "a locally administered stand-in");
        assert_eq!(first.roaming[0].mac, s.mac, "matched within the report");
        assert_ne!(second.stations[0].mac, s.mac, "unrelated across reports");
        assert!(s.addresses.is_empty() && s.hostname.is_empty() && s.username.is_empty() && s.user_agent.is_empty());
        assert_eq!((s.signal_dbm, s.vlan), (Some(-51), Some(20)), "what Wi-Fi assurance needs stays");
        assert_eq!(first.radios[0].bssid, Some(macs[0]), "the access point's own radio is not a person");

        let mut other = RecordBody::Wired(Box::default());
        unlink_stations(&mut other, &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &[1; 32]));
        assert_eq!(other, RecordBody::Wired(Box::default()));
    }

    fn client_devices(mac: MacAddr) -> RecordBody {
        use crate::record::{ClientDevice, ClientDeviceReport, Evidence};
        RecordBody::ClientDevices(Box::new(ClientDeviceReport {
            clients: BoundedVec::truncating(vec![ClientDevice {
                mac,
                device_type: BoundedString::truncating("phone"),
                model: BoundedString::truncating("iPhone"),
                os: BoundedString::truncating("iOS"),
                vendor: BoundedString::truncating("Apple"),
                confidence: 90,
                evidence: BoundedVec::truncating(vec![Evidence::DhcpOptions, Evidence::MacVendor]),
            }]),
        }))
    }

    #[test]
    fn client_devices_are_withheld_by_their_setting_and_pseudonymised_like_stations() {
        let mac = MacAddr([0x3c, 0x22, 0xfb, 4, 5, 6]);
        let full = client_devices(mac);
        let mut body = full.clone();
        let others: Vec<_> = MetadataField::ALL.into_iter().filter(|f| *f != MetadataField::ClientDevices).collect();
        omit_from_record(&mut body, &others);
        assert_eq!(body, full, "only client-devices withholds them");
        omit_from_record(&mut body, &[MetadataField::ClientDevices]);
        let RecordBody::ClientDevices(report) = &body else { unreachable!() };
        let device = &report.clients[0];
        assert_eq!(device.mac, mac, "the MAC is pseudonymised, never omitted");
        assert!(device.device_type.is_empty() && device.model.is_empty() && device.os.is_empty());
        assert!(device.vendor.is_empty() && device.evidence.is_empty());
        assert_eq!(device.confidence, 0);

        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &[7; 32]);
        let mut pseudonymised = full.clone();
        pseudonymise_at_source(&mut pseudonymised, &key);
        let RecordBody::ClientDevices(report) = &pseudonymised else { unreachable!() };
        assert_eq!(report.clients[0].mac, pseudonymous_mac(&key, mac));
        assert_eq!(report.clients[0].vendor.as_str(), "Apple", "the vendor was looked up before, on the device");

        let mut unlinked = full.clone();
        unlink_stations(&mut unlinked, &key);
        let RecordBody::ClientDevices(report) = &unlinked else { unreachable!() };
        let device = &report.clients[0];
        assert_eq!(device.mac, pseudonymous_mac(&key, mac), "a stand-in under the report's key");
        assert_eq!(device.model.as_str(), "", "the most specific inference goes without location history");
        assert_eq!(
            (device.device_type.as_str(), device.os.as_str(), device.vendor.as_str()),
            ("phone", "iOS", "Apple")
        );
    }
}
