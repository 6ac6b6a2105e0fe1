//! A Linux switch's forwarding table and VLANs (`bridge -j`, iproute2) and
//! its LLDP neighbours (`lldpcli -f json`, lldpd).
//!
//! All three are JSON, walked as `serde_json::Value` with every type
//! checked: a field of the wrong type is a skipped entry, never a panic.
//! Both tools have changed their JSON shapes over the years; the shapes
//! accepted are listed at each parser.

use std::net::IpAddr;

use glimpse_common::bounded::{BoundedString, BoundedVec};
use glimpse_common::record::{LldpNeighbour, MacAddr, PortVlans, VlanRange, MAX_LLDP_ID, MAX_TEXT};
use serde_json::Value;

use super::lex::{bad, cut, excerpt, printable, valid_ifname};
use super::{Parsed, ProbeError};

/// Largest JSON document parsed.
pub const MAX_JSON: usize = 4 * 1024 * 1024;
/// Most forwarding entries kept.
pub const MAX_FDB_ENTRIES: usize = 8192;
/// Most ports with VLANs kept.
pub const MAX_VLAN_PORTS: usize = 256;
/// Most LLDP neighbours kept.
pub const MAX_LLDP_NEIGHBOURS: usize = 256;

/// One entry of `bridge -j fdb show`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FdbEntry {
    /// The address.
    pub mac: MacAddr,
    /// The port it was learned on.
    pub port: String,
    /// The VLAN it was learned in.
    pub vlan: Option<u16>,
    /// The bridge (`master`).
    pub master: Option<String>,
    /// `state: permanent`: the bridge's own or a static address.
    pub permanent: bool,
    /// `flags` has `self`: the port's own (hardware) table, not the bridge's.
    pub self_entry: bool,
}

fn parse_json(text: &str) -> Result<Value, ProbeError> {
    if text.len() > MAX_JSON {
        return Err(ProbeError::TooLarge { limit: MAX_JSON });
    }
    if text.trim().is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(text).map_err(|e| ProbeError::BadValue { line: e.line(), field: "JSON", value: e.to_string() })
}

/// A VLAN id, 1 to 4094.
fn vlan_id(value: &Value) -> Option<u16> {
    let id = match value {
        Value::Number(n) => n.as_u64()?,
        Value::String(s) => s.parse().ok()?,
        _ => return None,
    };
    u16::try_from(id).ok().filter(|id| (1..=4094).contains(id))
}

/// A bounded, printable string field.
fn text_field(value: Option<&Value>, max: usize) -> Option<String> {
    let s = value?.as_str()?.trim();
    (!s.is_empty() && printable(s)).then(|| cut(s, max))
}

/// Parses `bridge -j fdb show`: an array of
/// `{"mac","ifname","vlan"?,"flags":[..],"master"?,"state"}`.
pub fn parse_bridge_fdb_json(text: &str) -> Parsed<FdbEntry> {
    let mut parsed = Parsed::new();
    let value = match parse_json(text) {
        Ok(value) => value,
        Err(error) => {
            parsed.skip(error);
            return parsed;
        }
    };
    let Some(entries) = value.as_array() else {
        if !value.is_null() {
            parsed.skip(ProbeError::Malformed { line: 0, reason: "expected a JSON array of entries" });
        }
        return parsed;
    };
    for (index, entry) in entries.iter().enumerate() {
        let number = index + 1;
        let mac = entry.get("mac").and_then(Value::as_str).and_then(|m| m.parse::<MacAddr>().ok());
        let port = entry.get("ifname").and_then(Value::as_str).filter(|p| valid_ifname(p));
        let (Some(mac), Some(port)) = (mac, port) else {
            parsed.skip(bad(number, "fdb entry", &excerpt(&entry.to_string())));
            continue;
        };
        // vxlan's `dst` entries and the like name no VLAN: fine.
        let vlan = entry.get("vlan").and_then(vlan_id);
        let flags = entry.get("flags").and_then(Value::as_array);
        let self_entry = flags.is_some_and(|f| f.iter().any(|f| f == "self"));
        let permanent = entry.get("state").and_then(Value::as_str) == Some("permanent");
        let master = entry.get("master").and_then(Value::as_str).filter(|m| valid_ifname(m)).map(str::to_owned);
        let entry = FdbEntry { mac, port: port.to_owned(), vlan, master, permanent, self_entry };
        parsed.push_bounded(entry, MAX_FDB_ENTRIES, number);
    }
    parsed
}

/// Parses `bridge -j vlan show` in both shapes iproute2 has printed:
/// `{"lan1":[{"vlan":1,"flags":["PVID","Egress Untagged"]}]}` (before 5.x)
/// and `[{"ifname":"lan1","vlans":[{"vlan":10,"vlanEnd":20}]}]` (since).
pub fn parse_bridge_vlan_json(text: &str) -> Parsed<PortVlans> {
    let mut parsed = Parsed::new();
    let value = match parse_json(text) {
        Ok(value) => value,
        Err(error) => {
            parsed.skip(error);
            return parsed;
        }
    };
    let ports: Vec<(&str, &Value)> = match &value {
        Value::Array(items) => items
            .iter()
            .map(|item| {
                (item.get("ifname").and_then(Value::as_str).unwrap_or(""), item.get("vlans").unwrap_or(&Value::Null))
            })
            .collect(),
        Value::Object(map) => map.iter().map(|(port, vlans)| (port.as_str(), vlans)).collect(),
        Value::Null => Vec::new(),
        _ => {
            parsed.skip(ProbeError::Malformed { line: 0, reason: "expected a JSON array or object of ports" });
            return parsed;
        }
    };
    for (index, (port, vlans)) in ports.into_iter().enumerate() {
        let number = index + 1;
        let Some(vlans) = vlans.as_array().filter(|_| valid_ifname(port)) else {
            parsed.skip(bad(number, "port", port));
            continue;
        };
        let mut pvid = None;
        let (mut untagged, mut tagged) = (Vec::new(), Vec::new());
        for vlan in vlans {
            let Some(first) = vlan.get("vlan").and_then(vlan_id) else {
                parsed.skip(bad(number, "vlan", &excerpt(&vlan.to_string())));
                continue;
            };
            let last = vlan.get("vlanEnd").and_then(vlan_id).unwrap_or(first).max(first);
            let flags = vlan.get("flags").and_then(Value::as_array);
            let has = |flag: &str| flags.is_some_and(|f| f.iter().any(|f| f == flag));
            if has("PVID") {
                pvid = Some(first);
            }
            let list = if has("Egress Untagged") { &mut untagged } else { &mut tagged };
            // Ids are 1..=4094, so a port's lists stay within 4094 each.
            list.extend(first..=last);
        }
        for list in [&mut untagged, &mut tagged] {
            list.sort_unstable();
            list.dedup();
        }
        let entry = PortVlans {
            port: BoundedString::truncating(port),
            pvid,
            untagged: BoundedVec::truncating(VlanRange::runs(&untagged)),
            tagged: BoundedVec::truncating(VlanRange::runs(&tagged)),
        };
        parsed.push_bounded(entry, MAX_VLAN_PORTS, number);
    }
    parsed
}

/// `value` as a list: lldpd prints one item bare and several as an array.
fn items(value: Option<&Value>) -> Vec<&Value> {
    match value {
        Some(Value::Array(items)) => items.iter().collect(),
        Some(Value::Null) | None => Vec::new(),
        Some(other) => vec![other],
    }
}

/// `{"name": {...}}` (a one-key object, lldpd's way of naming things) as
/// (name, inner); anything else as (no name, itself).
fn named(value: &Value) -> (Option<&str>, &Value) {
    match value.as_object() {
        Some(map) if map.len() == 1 => {
            let (key, inner) = map.iter().next().map(|(k, v)| (k.as_str(), v)).unwrap_or(("", value));
            if inner.is_object() && !matches!(key, "id" | "descr" | "name") {
                (Some(key), inner)
            } else {
                (None, value)
            }
        }
        _ => (None, value),
    }
}

/// A value lldpd may print as `"x"`, `{"value":"x"}` or `[{"value":"x"}]`
/// (the `json0` format).
fn scalar(value: Option<&Value>) -> Option<&Value> {
    let value = value?;
    match value {
        Value::Array(items) => scalar(items.first()),
        Value::Object(map) => map.get("value"),
        other => Some(other),
    }
}

/// An `{"type":..,"value":..}` identifier, possibly inside a `json0` array.
fn identifier(value: Option<&Value>) -> (Option<String>, Option<String>) {
    let id = match value {
        Some(Value::Array(items)) => items.first(),
        other => other,
    };
    (text_field(scalar(id), MAX_LLDP_ID), text_field(id.and_then(|i| i.get("type")), 16))
}

/// What lldpd said, or empty text for what it did not, as in every record.
fn said<const MAX: usize>(value: Option<String>) -> BoundedString<MAX> {
    BoundedString::truncating(value.as_deref().unwrap_or(""))
}

/// Parses `lldpcli -f json show neighbors details` (and `-f json0`).
///
/// Shapes accepted: `{"lldp":{"interface":{"eth0":{..}}}}` for one
/// neighbour, `{"lldp":{"interface":[{"eth0":{..}},..]}}` for several,
/// `{"lldp":{}}` or `{"lldp":[]}` for none; json0's
/// `{"lldp":[{"interface":[{"name":"eth0",..}]}]}`. Inside: `chassis`
/// keyed by system name (or bare when the neighbour sends none), values
/// bare or as `[{"value":..}]`, `capability` and `mgmt-ip` single or lists.
pub fn parse_lldpcli_json(text: &str) -> Parsed<LldpNeighbour> {
    let mut parsed = Parsed::new();
    let value = match parse_json(text) {
        Ok(value) => value,
        Err(error) => {
            parsed.skip(error);
            return parsed;
        }
    };
    let mut interfaces = Vec::new();
    for lldp in items(value.get("lldp")) {
        for interface in items(lldp.get("interface")) {
            match interface.as_object() {
                // json0: `{"name": "eth0", "chassis": [...], ...}`.
                Some(map) if map.contains_key("name") && map.contains_key("chassis") => {
                    interfaces.push((text_field(scalar(map.get("name")), 32), interface));
                }
                // json: one object per port, or all ports in one object.
                Some(map) => {
                    for (port, inner) in map {
                        interfaces.push((Some(port.clone()), inner));
                    }
                }
                None => parsed.skip(ProbeError::Malformed { line: 0, reason: "interface is not an object" }),
            }
        }
    }
    for (index, (port, interface)) in interfaces.into_iter().enumerate() {
        let number = index + 1;
        let Some(port) = port.filter(|p| valid_ifname(p)) else {
            parsed.skip(bad(number, "local port", "?"));
            continue;
        };
        let (mut system_name, mut system_description) = (None, None);
        let ((mut chassis_id, mut chassis_id_type), (mut port_id, mut port_id_type)) = ((None, None), (None, None));
        let mut port_description = None;
        let (mut management_addresses, mut capabilities, mut vlans) = (Vec::new(), Vec::new(), Vec::new());
        if let Some(chassis) = items(interface.get("chassis")).first() {
            let (name, chassis) = named(chassis);
            system_name = name
                .filter(|n| printable(n))
                .map(|n| cut(n, MAX_TEXT))
                .or_else(|| text_field(scalar(chassis.get("name")), MAX_TEXT));
            (chassis_id, chassis_id_type) = identifier(chassis.get("id"));
            system_description = text_field(scalar(chassis.get("descr")), MAX_TEXT);
            for address in items(chassis.get("mgmt-ip")) {
                if let Some(ip) = scalar(Some(address)).and_then(Value::as_str).and_then(|a| a.parse::<IpAddr>().ok()) {
                    if management_addresses.len() < 8 && !management_addresses.contains(&ip) {
                        management_addresses.push(ip);
                    }
                }
            }
            for capability in items(chassis.get("capability")) {
                let enabled = capability.get("enabled").and_then(Value::as_bool).unwrap_or(false);
                if let Some(kind) = text_field(capability.get("type"), 16).filter(|_| enabled) {
                    if capabilities.len() < 8 {
                        capabilities.push(BoundedString::truncating(&kind));
                    }
                }
            }
        }
        if let Some(port) = items(interface.get("port")).first() {
            (port_id, port_id_type) = identifier(port.get("id"));
            port_description = text_field(scalar(port.get("descr")), MAX_TEXT);
        }
        for vlan in items(interface.get("vlan")) {
            if let Some(id) = vlan.get("vlan-id").and_then(|v| vlan_id(scalar(Some(v)).unwrap_or(v))) {
                if vlans.len() < 32 && !vlans.contains(&id) {
                    vlans.push(id);
                }
            }
        }
        let neighbour = LldpNeighbour {
            local_port: BoundedString::truncating(&port),
            chassis_id: said(chassis_id),
            chassis_id_type: said(chassis_id_type),
            system_name: said(system_name),
            system_description: said(system_description),
            management_addresses: BoundedVec::truncating(management_addresses),
            capabilities: BoundedVec::truncating(capabilities),
            port_id: said(port_id),
            port_id_type: said(port_id_type),
            port_description: said(port_description),
            vlans: BoundedVec::truncating(vlans),
        };
        parsed.push_bounded(neighbour, MAX_LLDP_NEIGHBOURS, number);
    }
    parsed
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const FDB: &str = include_str!("../../tests/fixtures/probe/commands/bridge-fdb.json");
    const VLAN_NEW: &str = include_str!("../../tests/fixtures/probe/commands/bridge-vlan.json");
    const VLAN_OLD: &str = include_str!("../../tests/fixtures/probe/commands/bridge-vlan-iproute2-4.json");
    const LLDP_ONE: &str = include_str!("../../tests/fixtures/probe/commands/lldpcli-one.json");
    const LLDP_MANY: &str = include_str!("../../tests/fixtures/probe/commands/lldpcli-two.json");
    const LLDP_JSON0: &str = include_str!("../../tests/fixtures/probe/commands/lldpcli-json0.json");

    fn range(first: u16, last: u16) -> VlanRange {
        VlanRange { first, last }
    }

    fn names<const N: usize>(list: &[BoundedString<N>]) -> Vec<&str> {
        list.iter().map(|name| name.as_str()).collect()
    }

    #[test]
    fn fdb_entries_and_their_kinds() {
        let parsed = parse_bridge_fdb_json(FDB);
        assert_eq!(parsed.skipped, 0, "{:?}", parsed.first_error);
        assert_eq!(parsed.items.len(), 9);
        let learned = parsed.items.iter().find(|e| e.mac.to_string() == "8c:16:45:44:55:66").unwrap();
        assert_eq!(
            (learned.port.as_str(), learned.vlan, learned.master.as_deref()),
            ("lan3", Some(20), Some("br-lan"))
        );
        assert!(!learned.permanent && !learned.self_entry);
        assert!(parsed.items[0].permanent && parsed.items[0].self_entry);
    }

    #[test]
    fn vlans_in_both_iproute2_shapes() {
        for text in [VLAN_NEW, VLAN_OLD] {
            let parsed = parse_bridge_vlan_json(text);
            assert_eq!(parsed.skipped, 0, "{:?}", parsed.first_error);
            let lan1 = parsed.items.iter().find(|p| p.port.as_str() == "lan1").unwrap();
            assert_eq!((lan1.pvid, &lan1.untagged[..]), (Some(1), &[range(1, 1)][..]));
            assert_eq!(lan1.tagged[..], [range(10, 10), range(20, 20), range(30, 33)]);
            assert_eq!(parsed.items.iter().find(|p| p.port.as_str() == "lan2").unwrap().pvid, Some(10));
        }
        let all = parse_bridge_vlan_json(r#"[{"ifname":"trunk","vlans":[{"vlan":1,"vlanEnd":4094}]}]"#);
        assert_eq!(all.items[0].tagged[..], [range(1, 4094)]);
    }

    #[test]
    fn lldp_in_its_many_shapes() {
        let one = parse_lldpcli_json(LLDP_ONE);
        assert_eq!(one.skipped, 0, "{:?}", one.first_error);
        assert_eq!(one.items.len(), 1);
        let n = &one.items[0];
        assert_eq!((n.local_port.as_str(), n.system_name.as_str()), ("lan1", "core-sw-1"));
        assert_eq!((n.chassis_id.as_str(), n.chassis_id_type.as_str()), ("00:1b:21:aa:bb:cc", "mac"));
        assert_eq!(n.management_addresses[..], ["10.0.0.2".parse::<IpAddr>().unwrap(), "fd00::2".parse().unwrap()]);
        assert_eq!(names(&n.capabilities), ["Bridge"]);
        assert_eq!((n.port_id.as_str(), n.port_id_type.as_str()), ("Gi1/0/24", "ifname"));
        assert_eq!(n.port_description.as_str(), "GigabitEthernet1/0/24");
        assert_eq!(n.vlans[..], [1]);
        assert!(n.system_description.as_str().starts_with("Cisco IOS"));

        let many = parse_lldpcli_json(LLDP_MANY);
        assert_eq!(many.skipped, 0, "{:?}", many.first_error);
        let ports: Vec<_> = many.items.iter().map(|n| n.local_port.as_str()).collect();
        assert_eq!(ports, ["lan1", "lan4"]);
        let phone = &many.items[1];
        assert_eq!((phone.system_name.as_str(), names(&phone.capabilities)), ("", vec!["Telephone"]));
        assert_eq!(phone.chassis_id.as_str(), "10.1.2.3");

        let json0 = parse_lldpcli_json(LLDP_JSON0);
        assert_eq!(json0.skipped, 0, "{:?}", json0.first_error);
        assert_eq!(json0.items[0].system_name.as_str(), "core-sw-1");
        assert_eq!(json0.items[0].port_id.as_str(), "Gi1/0/24");
        assert_eq!(json0.items[0].management_addresses.len(), 1);

        for none in [r#"{"lldp":{}}"#, r#"{"lldp":[]}"#, "", "{}"] {
            let parsed = parse_lldpcli_json(none);
            assert!(parsed.items.is_empty() && parsed.skipped == 0, "{none:?}");
        }
    }

    #[test]
    fn broken_json_is_an_error_naming_the_place() {
        let cut = &FDB[..FDB.len() / 2];
        let parsed = parse_bridge_fdb_json(cut);
        assert!(parsed.items.is_empty());
        assert!(parsed.first_error.unwrap().to_string().contains("JSON"));
        let wrong = parse_bridge_fdb_json(
            r#"[{"mac":"zz","ifname":"lan1"},{"mac":"02:00:00:00:00:01","ifname":"a/b"},{"mac":"02:00:00:00:00:01","ifname":"lan1","vlan":"x"}]"#,
        );
        assert_eq!((wrong.items.len(), wrong.skipped), (1, 2));
        assert_eq!(wrong.items[0].vlan, None);
        assert!(matches!(parse_lldpcli_json(&" ".repeat(MAX_JSON + 1)).first_error, Some(ProbeError::TooLarge { .. })));
    }

    #[test]
    fn lists_are_bounded() {
        let entries: Vec<String> = (0..MAX_FDB_ENTRIES + 2)
            .map(|i| format!(r#"{{"mac":"02:00:00:00:{:02x}:{:02x}","ifname":"lan1"}}"#, i / 256, i % 256))
            .collect();
        let parsed = parse_bridge_fdb_json(&format!("[{}]", entries.join(",")));
        assert_eq!((parsed.items.len(), parsed.skipped), (MAX_FDB_ENTRIES, 2));
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,300}") {
            let _ = parse_bridge_fdb_json(&text);
            let _ = parse_bridge_vlan_json(&text);
            let _ = parse_lldpcli_json(&text);
        }

        #[test]
        fn arbitrary_json_never_panics(json in arbitrary_json()) {
            let text = json.to_string();
            let _ = parse_bridge_fdb_json(&text);
            let _ = parse_bridge_vlan_json(&text);
            for n in parse_lldpcli_json(&text).items {
                prop_assert!(n.management_addresses.len() <= 8 && n.vlans.len() <= 32);
            }
            let wrapped = serde_json::json!({"lldp": {"interface": [{"lan1": json.clone()}, {"lan2": {"chassis": json.clone(), "port": json}}]}});
            let _ = parse_lldpcli_json(&wrapped.to_string());
        }
    }

    fn arbitrary_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            "[a-z0-9:./ ]{0,12}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                prop::collection::btree_map(
                    prop_oneof![
                        Just("id".to_owned()),
                        Just("value".to_owned()),
                        Just("type".to_owned()),
                        Just("vlan".to_owned()),
                        Just("mgmt-ip".to_owned()),
                        Just("capability".to_owned()),
                        "[a-z]{1,6}"
                    ],
                    inner,
                    0..4
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }
}
