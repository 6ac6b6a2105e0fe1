//! What a Wi-Fi client's device is (type, model, OS), inferred from what
//! the access point already sees of it, with a confidence.
//!
//! Signals, each matched against a table of well-known values:
//!
//! | signal | from | weight |
//! |---|---|---|
//! | DHCP option 55 (parameter request list) | the fingerprint file a dnsmasq `dhcp-script` keeps ([`parse_fingerprints`]) | 70 |
//! | DHCP option 60 (vendor class) | the same file, or ISC dhcpd's leases | 40 to 75 |
//! | an HTTP user agent | the vendor class, where a client puts one there | 50 |
//! | the hostname | DHCP leases | 35 to 45 |
//! | the MAC's vendor | the embedded IEEE subset ([`super::oui`]) | 35 |
//!
//! Each matching signal is a [`Guess`]: the OS families it fits, and maybe
//! a device type and model. The OS, type and model chosen are the values
//! with the most weight behind them (none where two tie); the confidence is the noisy-OR of the
//! weights of the guesses that agree with the choice (independent signals
//! that agree make it surer), scaled down by the share of weight of those
//! that contradict it. A randomised MAC has no vendor, and a device that
//! sends nothing known gets no entry.
//!
//! Plain functions over text and values; the agent's reporter reads the
//! files. Nothing here sees a packet: option 55 and 60 come from what the
//! DHCP server already logged for its own purposes.

use std::collections::HashMap;

use glimpse_common::bounded::{BoundedString, BoundedVec};
use glimpse_common::record::{ClientDevice, Evidence, MacAddr, MAX_TEXT};

use super::lex::{bad, printable};
use super::oui;
use super::{Parsed, ProbeError};

/// Most clients kept from the fingerprint file (the script keeps fewer).
pub const MAX_FINGERPRINTS: usize = 4096;
/// Most option codes kept from one parameter request list (a DHCP option
/// holds at most 255 bytes).
pub const MAX_REQUESTED_OPTIONS: usize = 255;

/// What a DHCP server saw of one client's last request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpFingerprint {
    /// The client's MAC.
    pub mac: MacAddr,
    /// Option 55, the codes in the client's order; empty when it sent none.
    pub requested_options: Vec<u8>,
    /// Option 60, when it sent one.
    pub vendor_class: Option<String>,
}

/// Parses the fingerprint file that `agent/packaging/openwrt/glimpse-dhcp-fingerprint`
/// (a dnsmasq `dhcp-script`) keeps: one line per client, `MAC OPTIONS
/// VENDOR-CLASS`, where OPTIONS is dnsmasq's `DNSMASQ_REQUESTED_OPTIONS`
/// (comma-separated decimal codes) and VENDOR-CLASS its
/// `DNSMASQ_VENDOR_CLASS`, the rest of the line; `-` for either when the
/// client sent none. A later line for the same MAC replaces an earlier one.
pub fn parse_fingerprints(text: &str) -> Parsed<DhcpFingerprint> {
    let mut parsed: Parsed<DhcpFingerprint> = Parsed::new();
    let mut by_mac: HashMap<MacAddr, usize> = HashMap::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let line = line.trim_end();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut parts = line.splitn(3, ' ');
        let (Some(mac), Some(options), Some(vendor_class)) = (parts.next(), parts.next(), parts.next()) else {
            parsed.skip(ProbeError::Malformed { line: number, reason: "expected MAC, options, vendor class" });
            continue;
        };
        let Ok(mac) = mac.parse::<MacAddr>() else {
            parsed.skip(bad(number, "MAC", mac));
            continue;
        };
        let Some(requested_options) = parse_options(options) else {
            parsed.skip(bad(number, "requested options", options));
            continue;
        };
        let vendor_class = match vendor_class {
            "-" | "" => None,
            text if printable(text) && text.len() <= MAX_TEXT => Some(text.to_owned()),
            text => {
                parsed.skip(bad(number, "vendor class", text));
                continue;
            }
        };
        let fingerprint = DhcpFingerprint { mac, requested_options, vendor_class };
        if let Some(&at) = by_mac.get(&mac) {
            parsed.items[at] = fingerprint;
        } else {
            if parsed.items.len() < MAX_FINGERPRINTS {
                by_mac.insert(mac, parsed.items.len());
            }
            parsed.push_bounded(fingerprint, MAX_FINGERPRINTS, number);
        }
    }
    parsed
}

/// `1,3,6,15` to codes; `-` to none. Codes are 1 to 254 (0 is padding,
/// 255 the end marker).
fn parse_options(text: &str) -> Option<Vec<u8>> {
    if text == "-" {
        return Some(Vec::new());
    }
    let mut codes = Vec::new();
    for code in text.split(',') {
        if code.is_empty() || code.len() > 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let code: u8 = code.parse().ok().filter(|c| (1..=254).contains(c))?;
        if codes.len() == MAX_REQUESTED_OPTIONS {
            return None;
        }
        codes.push(code);
    }
    Some(codes)
}

/// What the access point knows about one client, for [`infer`]. A signal
/// the organisation withholds (hostnames, user agents) is left out by the
/// caller: what is not collected is not used either.
#[derive(Debug, Clone, Copy, Default)]
pub struct Signals<'a> {
    /// The client's real MAC (before any pseudonymisation).
    pub mac: MacAddr,
    /// DHCP option 55, in the client's order.
    pub requested_options: Option<&'a [u8]>,
    /// DHCP option 60 (or a user agent the client put there).
    pub vendor_class: Option<&'a str>,
    /// The hostname it sent.
    pub hostname: Option<&'a str>,
    /// Whether to look up the MAC's vendor.
    pub mac_vendor: bool,
}

/// One signal's reading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guess {
    /// Which signal.
    pub evidence: Evidence,
    /// How much it is worth alone, 0 to 100.
    pub weight: u8,
    /// The OS families it fits (empty: it says nothing about the OS).
    pub os: &'static [&'static str],
    /// An OS version, for the first family in `os`.
    pub os_version: Option<String>,
    /// The device type it says.
    pub device_type: Option<&'static str>,
    /// The model it says.
    pub model: Option<&'static str>,
}

impl Guess {
    fn new(evidence: Evidence, weight: u8, os: &'static [&'static str]) -> Self {
        Self { evidence, weight, os, os_version: None, device_type: None, model: None }
    }

    fn kind(mut self, device_type: &'static str) -> Self {
        self.device_type = Some(device_type);
        self
    }

    fn model(mut self, model: &'static str) -> Self {
        self.model = Some(model);
        self
    }
}

const WINDOWS: &[&str] = &["Windows"];
const MACOS: &[&str] = &["macOS"];
const IOS: &[&str] = &["iOS"];
const APPLE: &[&str] = &["iOS", "macOS"];
const ANDROID: &[&str] = &["Android"];
const LINUX: &[&str] = &["Linux"];
const NONE: &[&str] = &[];

/// How an option-55 entry matches.
enum Sequence {
    /// The whole list, in order.
    Exact(&'static [u8]),
    /// The list starts with these (clients that append options of their
    /// configuration after a fixed core).
    Prefix(&'static [u8]),
}

/// Well-known parameter request lists (the order is the client's DHCP
/// implementation's, which is what identifies it).
const OPTION_55: &[(Sequence, &[&str], Option<&str>)] = &[
    // Windows 10 and 11 (also Windows 8.1).
    (Sequence::Exact(&[1, 3, 6, 15, 31, 33, 43, 44, 46, 47, 119, 121, 249, 252]), WINDOWS, Some("computer")),
    // Windows 7 and 8.
    (Sequence::Exact(&[1, 15, 3, 6, 44, 46, 47, 31, 33, 121, 249, 43]), WINDOWS, Some("computer")),
    (Sequence::Exact(&[1, 15, 3, 6, 44, 46, 47, 31, 33, 121, 249, 252, 43]), WINDOWS, Some("computer")),
    // macOS (10.x to 11), then macOS 12 on, which adds 108 and 114.
    (Sequence::Exact(&[1, 121, 3, 6, 15, 119, 252, 95, 44, 46]), MACOS, Some("computer")),
    (Sequence::Exact(&[1, 121, 3, 6, 15, 108, 114, 119, 252, 95, 44, 46]), MACOS, Some("computer")),
    // iOS and iPadOS, then from iOS 16 (108, 114).
    (Sequence::Exact(&[1, 121, 3, 6, 15, 119, 252]), IOS, None),
    (Sequence::Exact(&[1, 121, 3, 6, 15, 108, 114, 119, 252]), IOS, None),
    // Android's own DHCP client (9 and 10), then with 114 (11 on).
    (Sequence::Exact(&[1, 3, 6, 15, 26, 28, 51, 58, 59, 43]), ANDROID, None),
    (Sequence::Exact(&[1, 3, 6, 15, 26, 28, 51, 58, 59, 43, 114]), ANDROID, None),
    // ISC dhclient on Debian, Ubuntu and their derivatives.
    (Sequence::Prefix(&[1, 28, 2, 3, 15, 6, 119, 12, 44, 47, 26, 121, 42]), LINUX, Some("computer")),
    // BusyBox udhcpc's defaults: embedded Linux.
    (Sequence::Exact(&[1, 3, 6, 12, 15, 28, 42]), LINUX, Some("iot")),
    // lwIP (ESP8266/ESP32 and other microcontrollers): no OS to speak of.
    (Sequence::Exact(&[1, 3, 28, 6]), NONE, Some("iot")),
];

/// The option-55 reading of `options`.
pub fn guess_from_options(options: &[u8]) -> Option<Guess> {
    OPTION_55.iter().find_map(|(sequence, os, device_type)| {
        let matches = match sequence {
            Sequence::Exact(wanted) => options == *wanted,
            Sequence::Prefix(wanted) => options.starts_with(wanted),
        };
        matches.then(|| Guess { device_type: *device_type, ..Guess::new(Evidence::DhcpOptions, 70, os) })
    })
}

/// The option-60 reading of `vendor_class` (or of the user agent a client
/// put there).
pub fn guess_from_vendor_class(vendor_class: &str) -> Option<Guess> {
    let class = vendor_class.trim();
    if class.starts_with("Mozilla/") {
        return guess_from_user_agent(class);
    }
    if let Some(version) = class.strip_prefix("android-dhcp-") {
        let mut guess = Guess::new(Evidence::VendorClass, 75, ANDROID);
        guess.os_version = version_number(version);
        return Some(guess);
    }
    if class == "MSFT 5.0" || class == "MSFT 98" {
        return Some(Guess::new(Evidence::VendorClass, 60, WINDOWS).kind("computer"));
    }
    if let Some(rest) = class.strip_prefix("dhcpcd-") {
        // dhcpcd sends `dhcpcd-VERSION:OS-RELEASE:MACHINE:PLATFORM`.
        let mut fields = rest.split(':');
        let _version = fields.next();
        let os = fields.next().unwrap_or_default();
        let platform = fields.nth(1).unwrap_or_default();
        if !os.starts_with("Linux") {
            return None;
        }
        let guess = Guess::new(Evidence::VendorClass, 60, LINUX);
        let raspberry = platform.starts_with("BCM2") || platform.contains("Raspberry");
        return Some(if raspberry { guess.kind("single-board-computer").model("Raspberry Pi") } else { guess });
    }
    if class.starts_with("udhcp ") {
        return Some(Guess::new(Evidence::VendorClass, 40, LINUX).kind("iot"));
    }
    None
}

/// The leading digits of `text` (`14`, `12.1`), as a version.
fn version_number(text: &str) -> Option<String> {
    let end = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let version = text[..end].trim_end_matches('.');
    (!version.is_empty() && version.len() <= 16).then(|| version.to_owned())
}

/// An HTTP user agent's platform part.
fn guess_from_user_agent(agent: &str) -> Option<Guess> {
    let platform = agent.split_once('(').and_then(|(_, rest)| rest.split_once(')')).map(|(p, _)| p)?;
    let guess = |os, kind| Some(Guess::new(Evidence::UserAgent, 50, os).kind(kind));
    if platform.contains("iPhone") {
        guess(IOS, "phone").map(|g| g.model("iPhone"))
    } else if platform.contains("iPad") {
        guess(IOS, "tablet").map(|g| g.model("iPad"))
    } else if platform.contains("Android") {
        let version = platform.split("Android ").nth(1).and_then(version_number);
        guess(ANDROID, "phone").map(|g| Guess { os_version: version, ..g })
    } else if platform.contains("Windows NT") {
        guess(WINDOWS, "computer")
    } else if platform.contains("Macintosh") {
        guess(MACOS, "computer")
    } else if platform.contains("CrOS") {
        guess(&["Chrome OS"], "computer")
    } else if platform.contains("Linux") {
        guess(LINUX, "computer")
    } else {
        None
    }
}

/// Whether `text` is `len` hexadecimal digits.
fn hex_digits(text: &str, len: usize) -> bool {
    text.len() == len && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The hostname reading: the names devices give themselves out of the box.
pub fn guess_from_hostname(hostname: &str) -> Option<Guess> {
    let name = hostname.to_ascii_lowercase();
    let guess = |weight, os| Guess::new(Evidence::Hostname, weight, os);
    let windows_default = |prefix: &str| {
        name.strip_prefix(prefix).is_some_and(|rest| rest.len() == 7 && rest.bytes().all(|b| b.is_ascii_alphanumeric()))
    };
    Some(if name.starts_with("iphone") || name.contains("s-iphone") {
        guess(45, IOS).kind("phone").model("iPhone")
    } else if name.starts_with("ipad") || name.contains("s-ipad") {
        guess(45, IOS).kind("tablet").model("iPad")
    } else if name.contains("macbook") {
        guess(45, MACOS).kind("computer").model("MacBook")
    } else if name.starts_with("imac") || name.contains("s-imac") {
        guess(45, MACOS).kind("computer").model("iMac")
    } else if windows_default("desktop-") || windows_default("laptop-") {
        guess(40, WINDOWS).kind("computer")
    } else if name.starts_with("android-") && hex_digits(&name["android-".len()..], 16) {
        guess(40, ANDROID).kind("phone")
    } else if name.starts_with("galaxy") {
        guess(40, ANDROID).kind("phone").model("Galaxy")
    } else if name.starts_with("pixel") {
        guess(45, ANDROID).kind("phone").model("Pixel")
    } else if name.starts_with("esp_") || name.starts_with("esp-") || name.starts_with("espressif") {
        guess(35, NONE).kind("iot").model("ESP8266/ESP32")
    } else if name.starts_with("raspberrypi") {
        guess(40, LINUX).kind("single-board-computer").model("Raspberry Pi")
    } else if name.starts_with("chromecast") {
        guess(45, NONE).kind("media-player").model("Chromecast")
    } else if (name.starts_with("brw") || name.starts_with("brn")) && hex_digits(&name[3..], 12) {
        guess(45, NONE).kind("printer").model("Brother printer")
    } else if name.starts_with("epson") {
        guess(40, NONE).kind("printer").model("Epson printer")
    } else if (name.starts_with("hp") || name.starts_with("npi"))
        && hex_digits(name.trim_start_matches(['h', 'p', 'n', 'i']), 6)
    {
        guess(35, NONE).kind("printer").model("HP printer")
    } else if name.starts_with("ps4") || name.starts_with("ps5") {
        guess(40, NONE).kind("game-console").model("PlayStation")
    } else if name.starts_with("xbox") {
        guess(40, NONE).kind("game-console").model("Xbox")
    } else if name.starts_with("kindle") {
        guess(40, NONE).kind("tablet").model("Kindle")
    } else {
        return None;
    })
}

/// The MAC-vendor reading: what a vendor's devices mostly are.
pub fn guess_from_vendor(vendor: &str) -> Option<Guess> {
    let guess = |os| Guess::new(Evidence::MacVendor, 35, os);
    Some(match vendor {
        "Apple" => guess(APPLE),
        "Samsung" | "Google" | "Xiaomi" | "OnePlus" | "OPPO" | "vivo" | "Motorola" | "Huawei" => guess(ANDROID),
        "Dell" | "Lenovo" | "Intel" => guess(NONE).kind("computer"),
        "Espressif" | "Nest Labs" => guess(NONE).kind("iot"),
        "Raspberry Pi" => guess(LINUX).kind("single-board-computer").model("Raspberry Pi"),
        "Nintendo" => guess(NONE).kind("game-console"),
        "Canon" | "Epson" | "Brother" => guess(NONE).kind("printer"),
        "Sonos" | "Roku" => guess(NONE).kind("media-player"),
        "Fitbit" | "Garmin" => guess(NONE).kind("wearable"),
        // Makers of too many kinds of device to say.
        _ => return None,
    })
}

/// Every reading `signals` give, in a fixed order.
pub fn guesses(signals: &Signals<'_>) -> (Option<&'static str>, Vec<Guess>) {
    let vendor = signals.mac_vendor.then(|| oui::vendor(signals.mac)).flatten();
    let readings = [
        signals.requested_options.and_then(guess_from_options),
        signals.vendor_class.and_then(guess_from_vendor_class),
        signals.hostname.and_then(guess_from_hostname),
        vendor.and_then(guess_from_vendor),
    ];
    (vendor, readings.into_iter().flatten().collect())
}

/// What `signals` say about the client's device; `None` when nothing is
/// known (no vendor, no reading).
pub fn infer(signals: &Signals<'_>) -> Option<ClientDevice> {
    let (vendor, guesses) = guesses(signals);
    decide(signals.mac, vendor, &guesses)
}

/// The inference from `guesses` (see the module header).
fn decide(mac: MacAddr, vendor: Option<&'static str>, guesses: &[Guess]) -> Option<ClientDevice> {
    if vendor.is_none() && guesses.is_empty() {
        return None;
    }
    let os = choose(guesses, |g| g.os.iter().map(move |os| (*os, g.os.len())));
    let device_type = choose(guesses, |g| g.device_type.map(|t| (t, 1)));
    let model = choose(guesses, |g| g.model.map(|m| (m, 1)));
    // Where nothing was chosen (the signals tie), no guess is against it.
    let agrees = |g: &Guess| {
        let os_ok = g.os.is_empty() || os.is_none_or(|chosen| g.os.contains(&chosen));
        let type_ok = g.device_type.is_none() || device_type.is_none() || g.device_type == device_type;
        let model_ok = g.model.is_none() || model.is_none() || g.model == model;
        os_ok && type_ok && model_ok
    };
    let decided = os.is_some() || device_type.is_some() || model.is_some();
    let (mut agreeing, mut disagreeing, mut miss) = (0u32, 0u32, 100u32);
    for guess in guesses {
        let weight = u32::from(guess.weight.min(100));
        if agrees(guess) {
            agreeing += weight;
            miss = miss * (100 - weight) / 100;
        } else {
            disagreeing += weight;
        }
    }
    let confidence = if agreeing == 0 || !decided { 0 } else { (100 - miss) * agreeing / (agreeing + disagreeing) };
    let version = os
        .and_then(|chosen| guesses.iter().filter(|g| g.os.first() == Some(&chosen)).find_map(|g| g.os_version.clone()));
    let os_text = match (os, version) {
        (Some(os), Some(version)) => format!("{os} {version}"),
        (Some(os), None) => os.to_owned(),
        (None, _) => String::new(),
    };
    // Without a type of their own, phones' and computers' OSes say it.
    let device_type = device_type.or(match os {
        Some("iOS" | "Android") => Some("phone"),
        Some("Windows" | "macOS" | "Chrome OS") => Some("computer"),
        _ => None,
    });
    let mut evidence: Vec<Evidence> = guesses.iter().filter(|g| agrees(g)).map(|g| g.evidence).collect();
    evidence.sort_unstable();
    evidence.dedup();
    Some(ClientDevice {
        mac,
        device_type: BoundedString::truncating(device_type.unwrap_or_default()),
        model: BoundedString::truncating(model.unwrap_or_default()),
        os: BoundedString::truncating(&os_text),
        vendor: BoundedString::truncating(vendor.unwrap_or_default()),
        confidence: u8::try_from(confidence.min(100)).unwrap_or(100),
        evidence: BoundedVec::truncating(evidence),
    })
}

/// The value with the most weight among what `values` gives for each
/// guess (each value with the number of values that guess splits its
/// weight between); none when two share the most (an Apple OUI alone is
/// as much iOS as macOS: better no answer than a coin toss).
fn choose<'g, I>(guesses: &'g [Guess], values: impl Fn(&'g Guess) -> I) -> Option<&'static str>
where
    I: IntoIterator<Item = (&'static str, usize)>,
{
    let mut totals: Vec<(&'static str, u32)> = Vec::new();
    for guess in guesses {
        for (value, among) in values(guess) {
            let share = u32::from(guess.weight) * 12 / u32::try_from(among.max(1)).unwrap_or(1);
            match totals.iter_mut().find(|(v, _)| *v == value) {
                Some((_, total)) => *total += share,
                None => totals.push((value, share)),
            }
        }
    }
    let most = totals.iter().map(|(_, total)| *total).max()?;
    let mut best = totals.iter().filter(|(_, total)| *total == most);
    match (best.next(), best.next()) {
        (Some((value, _)), None) => Some(value),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WIN10: &[u8] = &[1, 3, 6, 15, 31, 33, 43, 44, 46, 47, 119, 121, 249, 252];
    const IOS16: &[u8] = &[1, 121, 3, 6, 15, 108, 114, 119, 252];
    const ANDROID11: &[u8] = &[1, 3, 6, 15, 26, 28, 51, 58, 59, 43, 114];

    fn mac(text: &str) -> MacAddr {
        text.parse().unwrap()
    }

    /// A locally administered MAC: no vendor.
    const RANDOM: &str = "d2:6e:41:0a:bb:02";

    #[test]
    fn the_fingerprint_file_is_read_line_by_line_and_bad_lines_are_skipped() {
        let text = "\
3c:22:fb:aa:bb:01 1,121,3,6,15,108,114,119,252 -
d2:6e:41:0a:bb:02 1,3,6,15,26,28,51,58,59,43,114 android-dhcp-14
# a comment
18:fe:34:cc:dd:03 - udhcp 1.36.1
zz:22:fb:aa:bb:01 1,3 -
3c:22:fb:aa:bb:04 1,300 -
3c:22:fb:aa:bb:05 1,0 -
3c:22:fb:aa:bb:06 1,3
3c:22:fb:aa:bb:01 1,121,3,6,15,119,252 -
";
        let parsed = parse_fingerprints(text);
        assert_eq!(parsed.skipped, 4, "{:?}", parsed.first_error);
        assert_eq!(parsed.items.len(), 3);
        assert_eq!(parsed.items[0].requested_options, vec![1, 121, 3, 6, 15, 119, 252], "the later line wins");
        assert_eq!(parsed.items[1].vendor_class.as_deref(), Some("android-dhcp-14"));
        assert_eq!(parsed.items[2].requested_options, Vec::<u8>::new());
        assert_eq!(parsed.items[2].vendor_class.as_deref(), Some("udhcp 1.36.1"), "spaces in the rest of the line");
    }

    #[test]
    fn a_windows_laptop_is_surer_the_more_signals_agree() {
        let options = Signals { mac: mac(RANDOM), requested_options: Some(WIN10), ..Signals::default() };
        let alone = infer(&options).unwrap();
        assert_eq!((alone.os.as_str(), alone.device_type.as_str()), ("Windows", "computer"));
        assert_eq!(alone.confidence, 70);
        let two = infer(&Signals { vendor_class: Some("MSFT 5.0"), ..options }).unwrap();
        let three = infer(&Signals { vendor_class: Some("MSFT 5.0"), hostname: Some("DESKTOP-4F2K9QX"), ..options });
        let three = three.unwrap();
        assert!(alone.confidence < two.confidence && two.confidence < three.confidence, "{alone:?} {two:?} {three:?}");
        assert_eq!(three.evidence.to_vec(), vec![Evidence::DhcpOptions, Evidence::VendorClass, Evidence::Hostname]);
        assert_eq!(three.vendor.as_str(), "", "a randomised MAC has no vendor");
    }

    #[test]
    fn disagreement_lowers_the_confidence() {
        let agree = Signals {
            mac: mac("3c:22:fb:aa:bb:01"),
            requested_options: Some(IOS16),
            hostname: Some("Alices-iPhone"),
            mac_vendor: true,
            ..Signals::default()
        };
        let iphone = infer(&agree).unwrap();
        assert_eq!(
            (iphone.os.as_str(), iphone.device_type.as_str(), iphone.model.as_str(), iphone.vendor.as_str()),
            ("iOS", "phone", "iPhone", "Apple")
        );
        let conflicting = infer(&Signals { vendor_class: Some("MSFT 5.0"), ..agree }).unwrap();
        assert_eq!(conflicting.os.as_str(), "iOS", "more weight behind iOS");
        assert!(conflicting.confidence < iphone.confidence, "{conflicting:?} vs {iphone:?}");
        assert!(!conflicting.evidence.contains(&Evidence::VendorClass), "the disagreeing signal is not evidence");
    }

    #[test]
    fn the_known_kinds_of_client() {
        let case = |signals: Signals<'_>| {
            let d = infer(&signals).unwrap();
            (d.device_type.as_str().to_owned(), d.os.as_str().to_owned(), d.model.as_str().to_owned())
        };
        let of = |t: &str, o: &str, m: &str| (t.to_owned(), o.to_owned(), m.to_owned());
        let none = Signals { mac: mac(RANDOM), ..Signals::default() };
        assert_eq!(
            case(Signals { requested_options: Some(ANDROID11), vendor_class: Some("android-dhcp-14"), ..none }),
            of("phone", "Android 14", "")
        );
        assert_eq!(
            case(Signals { vendor_class: Some("dhcpcd-9.4.1:Linux-6.1.21-v8+:aarch64:BCM2835"), ..none }),
            of("single-board-computer", "Linux", "Raspberry Pi")
        );
        assert_eq!(case(Signals { hostname: Some("BRW0080927AFBCE"), ..none }), of("printer", "", "Brother printer"));
        assert_eq!(case(Signals { hostname: Some("HP3C2AF4"), ..none }), of("printer", "", "HP printer"));
        assert_eq!(
            case(Signals {
                vendor_class: Some("Mozilla/5.0 (Macintosh; Intel Mac OS X 14_1) AppleWebKit/605.1.15"),
                ..none
            }),
            of("computer", "macOS", "")
        );
        let esp = Signals {
            mac: mac("18:fe:34:cc:dd:03"),
            requested_options: Some(&[1, 3, 28, 6]),
            hostname: Some("ESP_CCDD03"),
            mac_vendor: true,
            ..Signals::default()
        };
        assert_eq!(case(esp), of("iot", "", "ESP8266/ESP32"));
        assert_eq!(infer(&esp).unwrap().vendor.as_str(), "Espressif");
        assert_eq!(
            case(Signals { requested_options: Some(&[1, 28, 2, 3, 15, 6, 119, 12, 44, 47, 26, 121, 42, 249]), ..none }),
            of("computer", "Linux", ""),
            "dhclient with a site option appended"
        );
    }

    #[test]
    fn nothing_known_is_no_entry_and_a_vendor_alone_is_a_weak_one() {
        assert_eq!(infer(&Signals { mac: mac(RANDOM), hostname: Some("kitchen"), ..Signals::default() }), None);
        assert_eq!(
            infer(&Signals { mac: mac(RANDOM), requested_options: Some(&[1, 2, 3]), ..Signals::default() }),
            None
        );
        let samsung = infer(&Signals { mac: mac("00:00:f0:00:00:01"), mac_vendor: true, ..Signals::default() });
        if let Some(samsung) = samsung {
            assert!(samsung.confidence <= 35, "{samsung:?}");
        }
        let apple = infer(&Signals { mac: mac("3c:22:fb:aa:bb:01"), mac_vendor: true, ..Signals::default() }).unwrap();
        assert_eq!((apple.vendor.as_str(), apple.os.as_str()), ("Apple", ""), "iOS and macOS tie: no answer");
        assert_eq!((apple.device_type.as_str(), apple.confidence), ("", 0), "a vendor, nothing inferred");
        assert_eq!(apple.evidence.to_vec(), vec![Evidence::MacVendor]);
        let unused = infer(&Signals { mac: mac("3c:22:fb:aa:bb:01"), ..Signals::default() });
        assert_eq!(unused, None, "the vendor is looked up only when asked");
    }

    /// The dnsmasq script the agent ships writes what this module reads.
    #[test]
    fn the_dhcp_script_writes_what_the_parser_reads() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("glimpse/dhcp-fingerprints");
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/openwrt/glimpse-dhcp-fingerprint");
        let run = |args: &[&str], options: &str, class: &str| {
            let status = std::process::Command::new("sh")
                .arg(&script)
                .args(args)
                .env("GLIMPSE_DHCP_FINGERPRINTS", &file)
                .env("DNSMASQ_REQUESTED_OPTIONS", options)
                .env("DNSMASQ_VENDOR_CLASS", class)
                .status()
                .unwrap();
            assert!(status.success());
        };
        run(&["add", "3C:22:FB:AA:BB:01", "192.168.1.23", "alice"], "1,121,3,6,15,119,252", "");
        run(&["add", "18:fe:34:cc:dd:03", "192.168.1.60"], "1,3,28,6", "udhcp 1.36.1\u{7}");
        run(&["old", "18:fe:34:cc:dd:03", "192.168.1.60"], "", "");
        run(&["add", "d2:6e:41:0a:bb:02", "192.168.1.41"], "1,3,6,15,26,28,51,58,59,43", "android-dhcp-14");
        run(&["add", "d2:6e:41:0a:bb:02", "192.168.1.41"], "1,3,6,15,26,28,51,58,59,43,114", "android-dhcp-14");
        run(&["add", "00:04:8a:6b:21:7f:3c:22", "fd00::23"], "1,2", "x");
        run(&["add", "aa:aa:aa:aa:aa:aa", "192.168.1.99"], "1", "");
        run(&["del", "aa:aa:aa:aa:aa:aa", "192.168.1.99"], "", "");
        let parsed = parse_fingerprints(&std::fs::read_to_string(&file).unwrap());
        assert_eq!(parsed.skipped, 0, "{:?}", parsed.first_error);
        let macs: Vec<String> = parsed.items.iter().map(|f| f.mac.to_string()).collect();
        assert_eq!(macs, ["3c:22:fb:aa:bb:01", "18:fe:34:cc:dd:03", "d2:6e:41:0a:bb:02"], "one line per client");
        assert_eq!(parsed.items[0].vendor_class, None);
        assert_eq!(parsed.items[1].requested_options, vec![1, 3, 28, 6], "a start-up `old` keeps the request's");
        assert_eq!(parsed.items[1].vendor_class.as_deref(), Some("udhcp 1.36.1"), "control bytes dropped");
        assert_eq!(parsed.items[2].requested_options.last(), Some(&114), "the latest request");
    }

    proptest::proptest! {
        /// Any file: no panic, every kept line well-formed and bounded.
        #[test]
        fn any_fingerprint_file_parses_without_panicking(text in "[ -~\n\t,0-9a-f:]{0,600}") {
            let parsed = parse_fingerprints(&text);
            proptest::prop_assert!(parsed.items.len() <= MAX_FINGERPRINTS);
            for item in &parsed.items {
                proptest::prop_assert!(item.requested_options.iter().all(|c| (1..=254).contains(c)));
                proptest::prop_assert!(item.vendor_class.as_ref().is_none_or(|v| v.len() <= MAX_TEXT));
            }
        }

        /// Any signals: a confidence within 0 to 100 and evidence only
        /// from the signals given.
        #[test]
        fn inference_is_bounded(
            bytes in proptest::prelude::any::<[u8; 6]>(),
            options in proptest::collection::vec(1u8..=254, 0..20),
            vendor_class in "[ -~]{0,40}",
            hostname in "[ -~]{0,40}",
        ) {
            let signals = Signals {
                mac: MacAddr(bytes),
                requested_options: Some(&options),
                vendor_class: Some(&vendor_class),
                hostname: Some(&hostname),
                mac_vendor: true,
            };
            let (_, readings) = guesses(&signals);
            if let Some(device) = infer(&signals) {
                proptest::prop_assert!(device.confidence <= 100);
                proptest::prop_assert!(device.evidence.iter().all(|e| readings.iter().any(|g| g.evidence == *e)));
                proptest::prop_assert_eq!(device.mac, MacAddr(bytes));
            } else {
                proptest::prop_assert!(readings.is_empty());
            }
        }

        /// Any readings: one more signal that agrees with the inference
        /// keeps it and never lowers its confidence.
        #[test]
        fn agreement_never_lowers_the_confidence(
            picks in proptest::collection::vec((0usize..6, 0usize..4, 1u8..=100), 1..6),
            extra_weight in 1u8..=100,
        ) {
            let families: [&'static [&'static str]; 6] = [WINDOWS, MACOS, IOS, APPLE, ANDROID, NONE];
            let kinds = [None, Some("phone"), Some("computer"), Some("iot")];
            let readings: Vec<Guess> = picks
                .iter()
                .map(|&(os, kind, weight)| Guess {
                    device_type: kinds[kind],
                    ..Guess::new(Evidence::DhcpOptions, weight, families[os])
                })
                .collect();
            let mac = MacAddr([2, 0, 0, 0, 0, 1]);
            let before = decide(mac, None, &readings).unwrap();
            // A signal for the OS chosen (none chosen: nothing to agree with).
            let chosen = families.into_iter().find(|f| *f == [before.os.as_str()]);
            proptest::prop_assume!(chosen.is_some());
            let agreeing = Guess {
                evidence: Evidence::Hostname,
                weight: extra_weight,
                os: chosen.unwrap_or(NONE),
                os_version: None,
                device_type: None,
                model: None,
            };
            let mut more = readings.clone();
            more.push(agreeing);
            let after = decide(mac, None, &more).unwrap();
            proptest::prop_assert_eq!(&after.os, &before.os);
            proptest::prop_assert!(after.confidence >= before.confidence, "{:?} then {:?}", before, after);
        }
    }
}
