//! An access point's Wi-Fi state as `iw` and `hostapd_cli` print it.
//!
//! Parsers only: [`crate::reports`] runs the tools. The formats are the
//! tools' human-readable ones (there is no machine-readable `iw` output);
//! they have been stable for a decade, and unknown lines are ignored so a
//! newer `iw` that adds fields still parses.

use glimpse_common::bounded::BoundedString;
use glimpse_common::record::{MacAddr, Radio, Station, MAX_TEXT};

use super::lex::{bad, dec_i64, dec_u32, dec_u64, fixed, printable, valid_ifname};
use super::Parsed;
#[cfg(test)]
use super::ProbeError;

/// Most Wi-Fi interfaces kept from one `iw dev`.
pub const MAX_WIFI_INTERFACES: usize = 64;
/// Most stations kept from one dump.
pub const MAX_DUMP_STATIONS: usize = 1024;

/// One interface from `iw dev`: the record's radio with what `iw dev`
/// says filled in (not yet its station count), and its `phy#N`, which the
/// record does not carry.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WifiInterface {
    /// The radio: `interface`, `ssid` (as printed, non-printable bytes as
    /// `\xNN`; empty when none), `bssid` (its `addr`), `mode` (its
    /// `type`: `AP`, `AP/VLAN`, `managed`, `monitor`, ...), channel,
    /// frequency, width and transmit power.
    pub radio: Radio,
    /// Its `phy#N`.
    pub phy: Option<u32>,
}

/// Parses `iw dev`.
pub fn parse_iw_dev(text: &str) -> Parsed<WifiInterface> {
    let mut parsed = Parsed::new();
    let mut phy = None;
    let mut current: Option<(usize, WifiInterface)> = None;
    for (index, raw) in text.lines().enumerate() {
        let number = index + 1;
        let line = raw.trim();
        if let Some(n) = line.strip_prefix("phy#") {
            finish_interface(&mut parsed, current.take());
            phy = dec_u32(n);
            continue;
        }
        if let Some(name) = line.strip_prefix("Interface ") {
            finish_interface(&mut parsed, current.take());
            let name = name.trim();
            if valid_ifname(name) {
                let radio = Radio { interface: BoundedString::truncating(name), ..Radio::default() };
                current = Some((number, WifiInterface { radio, phy }));
            } else {
                parsed.skip(bad(number, "interface name", name));
            }
            continue;
        }
        let Some((_, WifiInterface { radio: interface, phy: _ })) = current.as_mut() else { continue };
        let (key, value) = line.split_once(' ').unwrap_or((line, ""));
        let value = value.trim();
        match key {
            "addr" => match value.parse::<MacAddr>() {
                Ok(mac) => interface.bssid = Some(mac),
                Err(_) => parsed.skip(bad(number, "addr", value)),
            },
            "type" if printable(value) => interface.mode = BoundedString::truncating(value),
            "ssid" if printable(value) => interface.ssid = BoundedString::truncating(value),
            "channel" => match parse_channel(value) {
                Some((channel, frequency, width)) => {
                    interface.channel = Some(channel);
                    interface.frequency_mhz = Some(frequency);
                    interface.width_mhz = width;
                }
                None => parsed.skip(bad(number, "channel", value)),
            },
            "txpower" => {
                let dbm = value.strip_suffix(" dBm").unwrap_or(value);
                let (negative, digits) = dbm.strip_prefix('-').map_or((false, dbm), |d| (true, d));
                match fixed(digits, 2).and_then(|v| i32::try_from(v).ok()) {
                    Some(v) => interface.tx_power_mbm = Some(if negative { -v } else { v }),
                    None => parsed.skip(bad(number, "txpower", value)),
                }
            }
            _ => {}
        }
    }
    finish_interface(&mut parsed, current.take());
    parsed
}

fn finish_interface(parsed: &mut Parsed<WifiInterface>, interface: Option<(usize, WifiInterface)>) {
    if let Some((line, interface)) = interface {
        parsed.push_bounded(interface, MAX_WIFI_INTERFACES, line);
    }
}

/// `36 (5180 MHz), width: 80 MHz, center1: 5210 MHz` → (36, 5180, 80).
fn parse_channel(value: &str) -> Option<(u16, u32, Option<u16>)> {
    let (channel, rest) = value.split_once(" (")?;
    let (frequency, rest) = rest.split_once(" MHz)")?;
    let width = rest
        .split(',')
        .find_map(|part| part.trim().strip_prefix("width: "))
        .and_then(|w| w.split_whitespace().next())
        .and_then(|w| dec_u32(w.split('.').next().unwrap_or(w)))
        .and_then(|w| u16::try_from(w).ok());
    Some((u16::try_from(dec_u32(channel.trim())?).ok()?, dec_u32(frequency)?, width))
}

/// One station from `iw dev IF station dump`: the record's station with
/// what the dump says filled in (the rest comes from leases, the ARP table
/// and hostapd), and the two flags the record does not carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StationDump {
    /// The station: MAC, interface (`(on wlan0)`), signal, rates, counters
    /// and times.
    pub station: Station,
    /// `authorized`.
    pub authorized: Option<bool>,
    /// `associated`.
    pub associated: Option<bool>,
}

/// Parses `iw dev IF station dump`.
pub fn parse_station_dump(text: &str) -> Parsed<StationDump> {
    let mut parsed = Parsed::new();
    let mut current: Option<(usize, StationDump)> = None;
    // A block whose header was bad: its lines are not someone else's.
    let mut in_bad_block = false;
    for (index, raw) in text.lines().enumerate() {
        let number = index + 1;
        if let Some(header) = raw.strip_prefix("Station ") {
            if let Some((line, station)) = current.take() {
                parsed.push_bounded(station, MAX_DUMP_STATIONS, line);
            }
            match parse_station_header(header) {
                Some((mac, interface)) => {
                    in_bad_block = false;
                    current = Some((number, station_dump(mac, &interface)));
                }
                None => {
                    in_bad_block = true;
                    parsed.skip(bad(number, "station", header));
                }
            }
            continue;
        }
        if in_bad_block {
            continue;
        }
        let Some((_, StationDump { station, authorized, associated })) = current.as_mut() else { continue };
        let Some((key, value)) = raw.trim().split_once(':') else { continue };
        let value = value.trim();
        let first = value.split_whitespace().next().unwrap_or("");
        let ok = match key.trim() {
            "inactive time" => set(&mut station.inactive_ms, dec_u32(first)),
            "rx bytes" => set(&mut station.rx_bytes, dec_u64(first)),
            "tx bytes" => set(&mut station.tx_bytes, dec_u64(first)),
            "rx packets" => set(&mut station.rx_packets, dec_u64(first)),
            "tx packets" => set(&mut station.tx_packets, dec_u64(first)),
            "tx retries" => set(&mut station.tx_retries, dec_u64(first)),
            "tx failed" => set(&mut station.tx_failed, dec_u64(first)),
            "signal" => set(&mut station.signal_dbm, dec_i64(first).and_then(|v| i8::try_from(v).ok())),
            "signal avg" => set(&mut station.signal_avg_dbm, dec_i64(first).and_then(|v| i8::try_from(v).ok())),
            "tx bitrate" => set(&mut station.tx_bitrate_kbps, bitrate(value)),
            "rx bitrate" => set(&mut station.rx_bitrate_kbps, bitrate(value)),
            "connected time" => set(&mut station.connected_secs, dec_u32(first)),
            "authorized" => set(authorized, yes_no(first)),
            "associated" => set(associated, yes_no(first)),
            _ => true,
        };
        if !ok {
            parsed.skip(bad(number, "station field", raw.trim()));
        }
    }
    if let Some((line, station)) = current.take() {
        parsed.push_bounded(station, MAX_DUMP_STATIONS, line);
    }
    parsed
}

fn station_dump(mac: MacAddr, interface: &str) -> StationDump {
    StationDump {
        station: Station { mac, interface: BoundedString::truncating(interface), ..Station::default() },
        authorized: None,
        associated: None,
    }
}

/// `3c:22:fb:aa:bb:cc (on wlan0)`.
fn parse_station_header(header: &str) -> Option<(MacAddr, String)> {
    let (mac, rest) = header.trim().split_once(' ')?;
    let interface = rest.trim().strip_prefix("(on ")?.strip_suffix(')')?;
    valid_ifname(interface).then(|| Some((mac.parse().ok()?, interface.to_owned())))?
}

/// Stores `value` when there is one; false when the text was not valid.
fn set<T>(slot: &mut Option<T>, value: Option<T>) -> bool {
    let ok = value.is_some();
    if ok {
        *slot = value;
    }
    ok
}

fn yes_no(text: &str) -> Option<bool> {
    match text {
        "yes" => Some(true),
        "no" => Some(false),
        _ => None,
    }
}

/// `866.7 MBit/s VHT-MCS 9 ...` → 866 700 kbit/s.
fn bitrate(value: &str) -> Option<u32> {
    let mut words = value.split_whitespace();
    let number = words.next()?;
    if words.next()? != "MBit/s" {
        return None;
    }
    fixed(number, 3).and_then(|v| u32::try_from(v).ok())
}

/// One station from `hostapd_cli -i IF all_sta`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostapdStation {
    /// The station.
    pub mac: MacAddr,
    /// Its 802.1X identity (`dot1xAuthSessionUserName`, else `identity`).
    pub username: Option<String>,
    /// Its dynamic VLAN (`vlan_id`).
    pub vlan_id: Option<u16>,
    /// Whether `flags` has `[AUTHORIZED]`.
    pub authorized: bool,
    /// `connected_time`, seconds.
    pub connected_secs: Option<u32>,
}

/// Parses `hostapd_cli -i IF all_sta`: each station is a line holding only
/// its MAC, then `key=value` lines.
pub fn parse_hostapd_all_sta(text: &str) -> Parsed<HostapdStation> {
    let mut parsed = Parsed::new();
    let mut current: Option<(usize, HostapdStation, bool)> = None;
    fn finish(parsed: &mut Parsed<HostapdStation>, current: Option<(usize, HostapdStation, bool)>) {
        if let Some((line, station, _)) = current {
            parsed.push_bounded(station, MAX_DUMP_STATIONS, line);
        }
    }
    for (index, raw) in text.lines().enumerate() {
        let number = index + 1;
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            finish(&mut parsed, current.take());
            match line.parse::<MacAddr>() {
                Ok(mac) => {
                    let station =
                        HostapdStation { mac, username: None, vlan_id: None, authorized: false, connected_secs: None };
                    current = Some((number, station, false));
                }
                // hostapd_cli prints e.g. "Failed to connect to hostapd".
                Err(_) => parsed.skip(bad(number, "station address", line)),
            }
            continue;
        };
        let Some((_, station, from_session)) = current.as_mut() else { continue };
        match key {
            "flags" => station.authorized = value.contains("[AUTHORIZED]"),
            "dot1xAuthSessionUserName" | "identity" => {
                let preferred = key == "dot1xAuthSessionUserName";
                if value.is_empty() || (*from_session && !preferred) {
                    continue;
                }
                if !printable(value) || value.len() > MAX_TEXT {
                    let field = if preferred { "dot1xAuthSessionUserName" } else { "identity" };
                    parsed.skip(bad(number, field, value));
                    continue;
                }
                station.username = Some(value.to_owned());
                *from_session = preferred;
            }
            "vlan_id" => match dec_u32(value).and_then(|v| u16::try_from(v).ok()).filter(|v| (1..=4094).contains(v)) {
                Some(vlan) => station.vlan_id = Some(vlan),
                None => parsed.skip(bad(number, "vlan_id", value)),
            },
            "connected_time" => match dec_u32(value) {
                Some(secs) => station.connected_secs = Some(secs),
                None => parsed.skip(bad(number, "connected_time", value)),
            },
            _ => {}
        }
    }
    finish(&mut parsed, current.take());
    parsed
}

/// Whether `error` is about a line over a parser's entry limit.
#[cfg(test)]
fn is_limit(error: &ProbeError) -> bool {
    matches!(error, ProbeError::Malformed { reason, .. } if reason.contains("limit"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const IW_DEV: &str = include_str!("../../tests/fixtures/probe/commands/iw-dev.txt");
    const DUMP: &str = include_str!("../../tests/fixtures/probe/commands/iw-station-dump.txt");
    const ALL_STA: &str = include_str!("../../tests/fixtures/probe/commands/hostapd-all-sta.txt");

    #[test]
    fn iw_dev_of_a_dual_band_openwrt_ap() {
        let parsed = parse_iw_dev(IW_DEV);
        assert_eq!(parsed.skipped, 0, "{:?}", parsed.first_error);
        let names: Vec<_> = parsed.items.iter().map(|i| i.radio.interface.as_str()).collect();
        assert_eq!(names, ["phy1-ap0", "phy1-ap1", "phy0-ap0", "phy0-mon0"]);
        assert_eq!(parsed.items[0].phy, Some(1));
        let ap = &parsed.items[0].radio;
        assert_eq!(ap.bssid, Some("94:83:c4:12:34:57".parse().unwrap()));
        assert_eq!((ap.mode.as_str(), ap.ssid.as_str()), ("AP", "Acme-Corp"));
        assert_eq!(
            (ap.channel, ap.frequency_mhz, ap.width_mhz, ap.tx_power_mbm),
            (Some(36), Some(5180), Some(80), Some(2300))
        );
        assert_eq!(parsed.items[1].radio.ssid.as_str(), "Acme Guest \\xe2\\x98\\x95");
        let monitor = &parsed.items[3].radio;
        assert_eq!((monitor.mode.as_str(), monitor.ssid.as_str(), monitor.channel), ("monitor", "", None));
    }

    #[test]
    fn station_dump_fields_and_units() {
        let parsed = parse_station_dump(DUMP);
        assert_eq!(parsed.skipped, 0, "{:?}", parsed.first_error);
        assert_eq!(parsed.items.len(), 2);
        let (dump, s) = (&parsed.items[0], &parsed.items[0].station);
        assert_eq!((s.mac.to_string().as_str(), s.interface.as_str()), ("3c:22:fb:aa:bb:01", "phy1-ap0"));
        assert_eq!((s.inactive_ms, s.rx_bytes, s.tx_bytes), (Some(120), Some(4_860_123), Some(91_234_567)));
        assert_eq!(
            (s.rx_packets, s.tx_packets, s.tx_retries, s.tx_failed),
            (Some(31_022), Some(62_011), Some(1201), Some(3))
        );
        assert_eq!((s.signal_dbm, s.signal_avg_dbm), (Some(-48), Some(-47)));
        assert_eq!((s.tx_bitrate_kbps, s.rx_bitrate_kbps), (Some(866_700), Some(780_000)));
        assert_eq!((s.connected_secs, dump.authorized, dump.associated), (Some(3600), Some(true), Some(true)));
        let legacy = &parsed.items[1].station;
        assert_eq!((legacy.rx_bitrate_kbps, legacy.tx_bitrate_kbps), (Some(54_000), Some(1_200_900)), "HE rates too");
    }

    #[test]
    fn hostapd_usernames_vlans_and_flags() {
        let parsed = parse_hostapd_all_sta(ALL_STA);
        assert_eq!(parsed.skipped, 0, "{:?}", parsed.first_error);
        assert_eq!(parsed.items.len(), 3);
        let alice = &parsed.items[0];
        assert_eq!(
            (alice.username.as_deref(), alice.vlan_id, alice.authorized),
            (Some("alice@acme.example"), Some(20), true)
        );
        assert_eq!(alice.connected_secs, Some(3600));
        let psk = &parsed.items[1];
        assert_eq!((psk.username.as_deref(), psk.vlan_id), (None, None), "WPA2-PSK: no identity");
        assert_eq!(parsed.items[2].username.as_deref(), Some("bob"), "identity= when the session name is absent");
    }

    #[test]
    fn malformed_and_truncated_input_keeps_the_rest() {
        let broken = DUMP.replacen("signal:  \t-48", "signal:  \tloud", 1).replacen("Station d2", "Station zz", 1);
        let parsed = parse_station_dump(&broken);
        assert_eq!(parsed.items.len(), 1, "the block with a bad header is skipped, not merged");
        assert_eq!(parsed.items[0].station.signal_dbm, None);
        assert_eq!(parsed.skipped, 2);
        assert!(parsed.first_error.unwrap().to_string().contains("signal"));

        let cut_at = DUMP.find("tx bitrate").unwrap();
        let parsed = parse_station_dump(&DUMP[..cut_at]);
        assert_eq!(parsed.items.len(), 1);
        assert_eq!(parsed.items[0].station.tx_bitrate_kbps, None);

        let failed = parse_hostapd_all_sta("Failed to connect to hostapd - wpa_ctrl_open: No such file or directory\n");
        assert!(failed.items.is_empty() && failed.skipped == 1);
        let bad_vlan = parse_hostapd_all_sta("02:00:00:00:00:01\nvlan_id=9999\ndot1xAuthSessionUserName=a\u{7}b\n");
        assert_eq!(
            bad_vlan.items[0],
            HostapdStation {
                mac: "02:00:00:00:00:01".parse().unwrap(),
                username: None,
                vlan_id: None,
                authorized: false,
                connected_secs: None
            }
        );
        assert_eq!(bad_vlan.skipped, 2);
        for empty in
            [parse_iw_dev("").items.len(), parse_station_dump("").items.len(), parse_hostapd_all_sta("").items.len()]
        {
            assert_eq!(empty, 0);
        }
    }

    #[test]
    fn lists_are_bounded() {
        let many: String = (0..MAX_DUMP_STATIONS + 5)
            .map(|i| format!("Station 02:00:00:00:{:02x}:{:02x} (on wlan0)\n\tsignal:\t-50 dBm\n", i / 256, i % 256))
            .collect();
        let parsed = parse_station_dump(&many);
        assert_eq!((parsed.items.len(), parsed.skipped), (MAX_DUMP_STATIONS, 5));
        assert!(is_limit(parsed.first_error.as_ref().unwrap()));
        let interfaces: String = (0..100).map(|i| format!("\tInterface w{i}\n\t\ttype AP\n")).collect();
        assert_eq!(parse_iw_dev(&interfaces).items.len(), MAX_WIFI_INTERFACES);
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,400}") {
            prop_assert!(parse_iw_dev(&text).items.len() <= MAX_WIFI_INTERFACES);
            prop_assert!(parse_station_dump(&text).items.len() <= MAX_DUMP_STATIONS);
            prop_assert!(parse_hostapd_all_sta(&text).items.len() <= MAX_DUMP_STATIONS);
        }

        #[test]
        fn cut_fixtures_never_panic(at in 0usize..4000, junk in "[ -~\\t\\n]{0,40}") {
            for fixture in [IW_DEV, DUMP, ALL_STA] {
                let mut end = at.min(fixture.len());
                while !fixture.is_char_boundary(end) {
                    end -= 1;
                }
                let text = format!("{}{junk}", &fixture[..end]);
                let _ = parse_iw_dev(&text);
                for s in parse_station_dump(&text).items {
                    prop_assert!(s.station.interface.len() <= 32);
                }
                for s in parse_hostapd_all_sta(&text).items {
                    prop_assert!(s.username.map_or(0, |u| u.len()) <= MAX_TEXT);
                }
            }
        }
    }
}
