//! What each device kind collects, end to end: an access point over TLS, a
//! switch and a gateway over SSH, each a real agent reading a fixture tree
//! and running stand-ins for its tools (`iw`, `hostapd_cli`, `bridge`,
//! `lldpcli`) that print what the real ones printed, streaming to a real
//! collector; the stored records are read back as `export` prints them.
//! Also: the organisation's minimisation reaches the stations, without
//! location history (the default) stored stations cannot be linked across
//! reports, and the field reference (`docs/FIELDS.md`) lists exactly the
//! fields export prints.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use glimpse_common::identity::{DeviceIdentity, DeviceKind, OrgId};
use glimpse_common::record::DataKind;
use glimpse_store::export::ExportLine;
use glimpse_tests::*;
use serde_json::Value;

const ORG: &str = "kinds";

/// A device's filesystem and its tools, in temporary directories.
struct FakeDevice {
    sysroot: tempfile::TempDir,
    tools: tempfile::TempDir,
}

impl FakeDevice {
    /// The OpenWrt fixture tree with `tests/fixtures/devices/<kind>/root`
    /// laid over it, and the tool stand-ins with `<kind>/out`.
    fn new(kind: &str, hostname: &str) -> Self {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
        let sysroot = ap_sysroot(hostname);
        let root = fixtures.join("devices").join(kind).join("root");
        if root.exists() {
            copy_tree(&root, sysroot.path());
        }
        let tools = tempfile::tempdir().expect("tempdir");
        for tool in ["iw", "hostapd_cli", "bridge", "lldpcli", "conntrack"] {
            std::fs::copy(fixtures.join("tools/fake-tool"), tools.path().join(tool)).expect("copy tool");
        }
        // A gateway runs no tool with saved output (conntrack is read from /proc), and git keeps no
        // empty folder, so a device kind may have no `out` folder at all.
        let outputs = fixtures.join("devices").join(kind).join("out");
        std::fs::create_dir_all(tools.path().join("out")).expect("mkdir out");
        if outputs.exists() {
            copy_tree(&outputs, &tools.path().join("out"));
        }
        Self { sysroot, tools }
    }

    fn tool(&self, name: &str) -> Vec<String> {
        vec![self.tools.path().join(name).display().to_string()]
    }

    fn output(&self, name: &str) -> PathBuf {
        self.tools.path().join("out").join(name)
    }

    /// Points `config` at this device, with a name, series and location.
    fn configure(&self, config: &mut glimpse_agent::AgentConfig) {
        config.sysroot = self.sysroot.path().to_owned();
        let commands = &mut config.probes.commands;
        commands.iw = self.tool("iw");
        commands.hostapd_cli = self.tool("hostapd_cli");
        commands.bridge = self.tool("bridge");
        commands.lldpcli = self.tool("lldpcli");
        commands.conntrack = self.tool("conntrack");
        config.profile.name = glimpse_common::bounded::BoundedString::truncating("Lobby-2");
        config.profile.series = glimpse_common::bounded::BoundedString::truncating("X500");
        config.profile.location.site = glimpse_common::bounded::BoundedString::truncating("HQ Berlin");
        config.profile.location.floor = glimpse_common::bounded::BoundedString::truncating("2");
        config.profile.location.latitude = Some(52.52);
        config.profile.location.longitude = Some(13.405);
    }
}

/// Every metadata-kind record `identity` has stored, as export prints them.
fn exported(tc: &TestCollector, identity: &DeviceIdentity) -> Vec<Value> {
    let outcome = tc.collector.store().read(&identity.org, DataKind::Metadata, None, None).expect("read");
    assert!(outcome.problems.is_empty(), "{:?}", outcome.problems);
    outcome
        .records
        .iter()
        .filter(|r| r.device == identity.device)
        .map(|r| serde_json::to_value(ExportLine::new(&identity.org, r)).expect("json"))
        .collect()
}

/// The `record.<kind>` objects among `lines`.
fn bodies<'a>(lines: &'a [Value], kind: &str) -> Vec<&'a Value> {
    lines.iter().filter_map(|line| line["record"].get(kind)).collect()
}

fn find<'a>(items: &'a Value, key: &str, value: &str) -> &'a Value {
    items
        .as_array()
        .and_then(|items| items.iter().find(|item| item[key] == value))
        .unwrap_or_else(|| panic!("no {key} = {value} in {items:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_access_point_reports_radios_stations_roaming_and_honours_minimisation() {
    init_logging();
    let tc = TestCollector::start().await;
    let org = OrgId::new(ORG).unwrap();
    // This test reads who was where: the organisation opts in to that.
    set_location_history(&tc, &org, true);
    let device = issue_device(ORG);
    tc.collector.reload().expect("import the new registration");
    let fake = FakeDevice::new("ap", "ap-kinds");
    let mut config = agent_config(tc.addr(), &device);
    fake.configure(&mut config);
    assert!(config.probes.wireless && !config.probes.wired && !config.probes.wan, "access point defaults");
    let agent = glimpse_agent::AgentHandle::spawn(config).unwrap();
    wait_for_status(&agent, "3 batches acknowledged", |s| s.acked_seq >= 3).await;

    // Bob leaves: the next collection reports it.
    let dump = std::fs::read_to_string(fake.output("iw-dev-phy1-ap0-station-dump")).unwrap();
    let alice_only = &dump[..dump.find("Station d2:6e:41:0a:bb:02").expect("bob in the fixture")];
    std::fs::write(fake.output("iw-dev-phy1-ap0-station-dump"), alice_only).unwrap();
    let left = |lines: &[Value]| {
        bodies(lines, "wireless").iter().any(|w| {
            w["roaming"]
                .as_array()
                .is_some_and(|events| events.iter().any(|e| e["mac"] == "d2:6e:41:0a:bb:02" && e["event"] == "left"))
        })
    };
    wait_until("bob's departure stored", || left(&exported(&tc, &device.identity))).await;

    let lines = exported(&tc, &device.identity);
    let wireless = bodies(&lines, "wireless");
    let first = wireless.iter().find(|w| w["stations"].as_array().is_some_and(|s| s.len() == 3)).expect("3 stations");
    assert_eq!(first["device"]["name"], "Lobby-2");
    assert_eq!(first["device"]["series"], "X500");
    assert_eq!(first["device"]["location"]["site"], "HQ Berlin");
    assert_eq!(first["device"]["location"]["latitude"], 52.52);

    let radio = find(&first["radios"], "interface", "phy1-ap0");
    assert_eq!(radio["ssid"], "Acme-Corp");
    assert_eq!(radio["bssid"], "94:83:c4:12:34:57");
    assert_eq!((radio["channel"].as_u64(), radio["frequency_mhz"].as_u64()), (Some(36), Some(5180)));
    assert_eq!((radio["width_mhz"].as_u64(), radio["tx_power_mbm"].as_i64()), (Some(80), Some(2300)));
    assert_eq!(radio["stations"], 2);
    assert_eq!(find(&first["radios"], "interface", "phy0-ap0")["stations"], 1);

    let alice = find(&first["stations"], "mac", "3c:22:fb:aa:bb:01");
    assert_eq!(alice["interface"], "phy1-ap0");
    assert_eq!(alice["ssid"], "Acme-Corp");
    assert_eq!(alice["addresses"], serde_json::json!(["192.168.1.23"]));
    assert_eq!(alice["hostname"], "alice-laptop");
    assert_eq!(alice["username"], "alice@acme.example");
    assert_eq!(alice["vlan"], 20);
    assert_eq!((alice["signal_dbm"].as_i64(), alice["signal_avg_dbm"].as_i64()), (Some(-48), Some(-47)));
    assert_eq!((alice["tx_bitrate_kbps"].as_u64(), alice["rx_bitrate_kbps"].as_u64()), (Some(866_700), Some(780_000)));
    assert_eq!((alice["connected_secs"].as_u64(), alice["rx_bytes"].as_u64()), (Some(3600), Some(4_860_123)));

    let bob = find(&first["stations"], "mac", "d2:6e:41:0a:bb:02");
    assert_eq!(bob["hostname"], "Pixel-8", "from the ISC lease; dnsmasq's says *");
    assert_eq!(bob["user_agent"], "android-dhcp-14");
    assert_eq!(bob["username"], "bob");
    let thermostat = find(&first["stations"], "mac", "18:fe:34:cc:dd:03");
    assert_eq!(thermostat["interface"], "phy0-ap0");
    assert_eq!(
        (thermostat["hostname"].as_str(), thermostat["user_agent"].as_str()),
        (Some("esp-thermostat"), Some("udhcp 1.36.1"))
    );
    assert_eq!(thermostat["addresses"], serde_json::json!(["192.168.1.60"]));
    assert_eq!(thermostat["username"], "", "no 802.1X on this network");

    // What each client's device is, from the DHCP fingerprint file that
    // dnsmasq's script keeps, the leases' hostnames and the MACs' vendors.
    let devices = bodies(&lines, "client-devices");
    let latest = devices
        .iter()
        .find(|d| d["clients"].as_array().is_some_and(|c| c.len() == 3))
        .expect("a client-devices record beside the wireless report of 3 stations");
    let laptop = find(&latest["clients"], "mac", "3c:22:fb:aa:bb:01");
    assert_eq!(
        (laptop["device_type"].as_str(), laptop["os"].as_str(), laptop["vendor"].as_str()),
        (Some("computer"), Some("macOS"), Some("Apple")),
        "macOS's option 55 and Apple's OUI: {laptop:#}"
    );
    assert_eq!(laptop["confidence"], 81);
    assert_eq!(laptop["evidence"], serde_json::json!(["dhcp-options", "mac-vendor"]));
    let phone = find(&latest["clients"], "mac", "d2:6e:41:0a:bb:02");
    assert_eq!(
        (phone["device_type"].as_str(), phone["os"].as_str(), phone["model"].as_str()),
        (Some("phone"), Some("Android 14"), Some("Pixel"))
    );
    assert_eq!(phone["vendor"], "", "a randomised MAC has no vendor");
    assert_eq!(phone["confidence"], 97, "option 55, option 60 and the hostname agree");
    let sensor = find(&latest["clients"], "mac", "18:fe:34:cc:dd:03");
    assert_eq!(
        (sensor["device_type"].as_str(), sensor["model"].as_str(), sensor["vendor"].as_str()),
        (Some("iot"), Some("ESP8266/ESP32"), Some("Espressif"))
    );
    assert_eq!(sensor["os"], "Linux");
    assert_eq!(bob["user_agent"], "android-dhcp-14");

    let counters = bodies(&lines, "counters");
    assert!(!counters.is_empty(), "interval counters from the second collection on");
    assert!(counters.iter().all(|c| c["interval_ms"].as_u64().is_some_and(|ms| ms > 0)));
    assert!(find(&counters[0]["interfaces"], "name", "br-lan")["rx_bytes_per_sec"].is_u64());

    // The organisation stops collecting usernames and location, and
    // pseudonymises MACs: new records carry neither, and no real MAC.
    use glimpse_common::minimise::MetadataField;
    use glimpse_common::wire::admin::{AdminAction, AdminReply};
    let operator = glimpse_common::identity::AdminIdentity::new(
        glimpse_common::identity::AdminName::new("kinds-operator").unwrap(),
        glimpse_common::identity::AdminRole::Operator,
        None,
    )
    .unwrap();
    let policy = AdminAction::SetDataPolicy {
        org: org.clone(),
        omit: glimpse_common::bounded::BoundedVec::truncating(vec![MetadataField::Usernames, MetadataField::Location]),
        pseudonymise_macs: true,
        strict_headers: None,
    };
    let reply = tc.collector.admin_context().act(&operator, policy);
    assert!(matches!(reply, AdminReply::DataPolicySet { .. }), "{reply:?}");
    wait_for_status(&agent, "the device key heard", |s| s.pseudonymising_macs).await;
    let before = bodies(&lines, "wireless").len();
    wait_until("records under the new policy", || {
        bodies(&exported(&tc, &device.identity), "wireless").len() > before + 2
    })
    .await;
    agent.shutdown().await;
    let lines = exported(&tc, &device.identity);
    let last = *bodies(&lines, "wireless").last().unwrap();
    let station = find(&last["stations"], "hostname", "alice-laptop");
    assert_eq!(station["username"], "");
    // One stored form, whichever side pseudonymised: the agent with the
    // organisation's device key, then the collector with its own key.
    let pseudonymiser = glimpse_common::minimise::Pseudonymiser::new(tc.collector.store().pseudonym_key(&org).unwrap());
    let stored = |mac: &str| {
        let form = glimpse_common::minimise::MacForm::Real;
        pseudonymiser.stored_form(mac.parse().unwrap(), form).to_string()
    };
    assert_eq!(station["mac"], stored("3c:22:fb:aa:bb:01"));
    assert_eq!(find(&last["radios"], "interface", "phy1-ap0")["bssid"], stored("94:83:c4:12:34:57"));
    let (by_device, _) = tc.collector.metrics().pseudonymised_batches();
    assert!(by_device >= 1, "the access point pseudonymised MACs itself");
    assert!(last["stations"].as_array().unwrap().iter().all(|s| s["username"] == ""));
    assert_eq!(last["device"]["location"]["site"], "");
    assert_eq!(last["device"]["name"], "Lobby-2");
    // The vendor was looked up on the device, before the MAC became a
    // pseudonym (which, locally administered, has none).
    let pseudonymous_laptop = bodies(&lines, "client-devices")
        .into_iter()
        .flat_map(|r| r["clients"].as_array().unwrap().iter())
        .find(|c| c["mac"] == stored("3c:22:fb:aa:bb:01"))
        .cloned()
        .expect("a client-devices record under the new policy");
    assert_eq!(pseudonymous_laptop["vendor"], "Apple");
    assert!(!serde_json::to_string(&bodies(&lines, "client-devices").last()).unwrap().contains("3c:22:fb:aa:bb:01"));

    assert_field_reference_lists_exactly(&lines, &["counters", "wireless", "client-devices"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_organisation_that_omits_client_devices_stores_none_of_their_details() {
    init_logging();
    let tc = TestCollector::start().await;
    let org = OrgId::new("nodevices").unwrap();
    set_location_history(&tc, &org, true);
    let operator = glimpse_common::identity::AdminIdentity::new(
        glimpse_common::identity::AdminName::new("nodevices-operator").unwrap(),
        glimpse_common::identity::AdminRole::Operator,
        None,
    )
    .unwrap();
    let policy = glimpse_common::wire::admin::AdminAction::SetDataPolicy {
        org: org.clone(),
        omit: glimpse_common::bounded::BoundedVec::truncating(vec![
            glimpse_common::minimise::MetadataField::ClientDevices,
        ]),
        pseudonymise_macs: false,
        strict_headers: None,
    };
    let reply = tc.collector.admin_context().act(&operator, policy);
    assert!(matches!(reply, glimpse_common::wire::admin::AdminReply::DataPolicySet { .. }), "{reply:?}");
    let device = issue_device("nodevices");
    tc.collector.reload().expect("import the new registration");
    let fake = FakeDevice::new("ap", "ap-nodevices");
    let mut config = agent_config(tc.addr(), &device);
    fake.configure(&mut config);
    let agent = glimpse_agent::AgentHandle::spawn(config).unwrap();
    wait_for_status(&agent, "the data policy heard", |s| {
        s.omitted_fields.contains(&glimpse_common::minimise::MetadataField::ClientDevices)
    })
    .await;
    // A collection that reads the clock after this point started after the
    // agent took the policy in: it infers nothing.
    let heard_ms =
        i64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()).unwrap();
    let observed = |tc: &TestCollector, wanted: fn(&glimpse_common::record::RecordBody) -> bool| -> Vec<i64> {
        let outcome = tc.collector.store().read(&org, DataKind::Metadata, None, None).expect("read");
        outcome.records.iter().filter(|r| wanted(&r.record.body)).map(|r| r.record.observed_at_ms).collect()
    };
    use glimpse_common::record::RecordBody;
    wait_until("two wireless reports collected after the policy was heard", || {
        observed(&tc, |b| matches!(b, RecordBody::Wireless(_))).iter().filter(|t| **t > heard_ms).count() >= 2
    })
    .await;
    agent.shutdown().await;
    let late: Vec<i64> =
        observed(&tc, |b| matches!(b, RecordBody::ClientDevices(_))).into_iter().filter(|t| *t > heard_ms).collect();
    assert!(late.is_empty(), "the agent stopped inferring at the source: {late:?}");
    let lines = exported(&tc, &device.identity);
    // Anything it sent before is cleared on arrival: nothing is stored.
    for report in bodies(&lines, "client-devices") {
        for client in report["clients"].as_array().unwrap() {
            for field in ["device_type", "model", "os", "vendor"] {
                assert_eq!(client[field], "", "{field} stored although omitted: {client:#}");
            }
            assert_eq!(
                (client["confidence"].as_u64(), client["evidence"].as_array().map(Vec::len)),
                (Some(0), Some(0))
            );
        }
    }
    let wireless = bodies(&lines, "wireless");
    let last = wireless.last().unwrap();
    assert_eq!(find(&last["stations"], "mac", "d2:6e:41:0a:bb:02")["user_agent"], "android-dhcp-14", "the rest stays");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_location_history_stored_stations_cannot_be_linked_across_reports() {
    init_logging();
    let tc = TestCollector::start().await;
    let org = OrgId::new("nohistory").unwrap();
    let device = issue_device("nohistory");
    tc.collector.reload().expect("import the new registration");
    let fake = FakeDevice::new("ap", "ap-nohistory");
    let mut config = agent_config(tc.addr(), &device);
    fake.configure(&mut config);
    let agent = glimpse_agent::AgentHandle::spawn(config).unwrap();
    let reports = |n: usize| {
        let tc = &tc;
        let identity = &device.identity;
        move || bodies(&exported(tc, identity), "wireless").len() >= n
    };
    wait_until("two wireless reports under the default", reports(2)).await;

    let lines = exported(&tc, &device.identity);
    let wireless = bodies(&lines, "wireless");
    let real = ["3c:22:fb:aa:bb:01", "d2:6e:41:0a:bb:02", "18:fe:34:cc:dd:03"];
    let macs = |report: &Value| -> BTreeSet<String> {
        report["stations"].as_array().unwrap().iter().map(|s| s["mac"].as_str().unwrap().to_owned()).collect()
    };
    for report in &wireless {
        let stations = report["stations"].as_array().expect("stations");
        assert_eq!(stations.len(), 3, "every station is still counted and measured: {report:#}");
        for station in stations {
            let mac = station["mac"].as_str().unwrap();
            assert!(!real.contains(&mac), "no real MAC: {station:#}");
            let first_octet = u8::from_str_radix(&mac[..2], 16).unwrap();
            assert_eq!(first_octet & 0x03, 0x02, "a locally administered stand-in: {mac}");
            for field in ["hostname", "username", "user_agent"] {
                assert_eq!(station[field], "", "{field} would link reports: {station:#}");
            }
            assert_eq!(station["addresses"], serde_json::json!([]));
        }
        assert!(stations.iter().any(|s| s["signal_dbm"].is_i64()), "signal is kept");
        assert_eq!(find(&report["radios"], "interface", "phy1-ap0")["bssid"], "94:83:c4:12:34:57");
        assert_eq!(report["device"]["location"]["site"], "HQ Berlin", "the access point's own place stays");
    }
    assert!(macs(wireless[0]).is_disjoint(&macs(wireless[1])), "stand-ins differ from report to report");
    let text = serde_json::to_string(&lines).unwrap();
    for needle in real.iter().copied().chain(["alice-laptop", "alice@acme.example", "Pixel-8", "192.168.1.23"]) {
        assert!(!text.contains(needle), "{needle} stored without location history");
    }

    // The organisation opts in: from then on stations keep their identity,
    // and the choice is in the audit log.
    set_location_history(&tc, &org, true);
    let before = wireless.len();
    wait_until("a report with location history", || {
        bodies(&exported(&tc, &device.identity), "wireless").iter().skip(before).any(|w| {
            w["stations"].as_array().unwrap().iter().any(|s| s["mac"] == real[0] && s["hostname"] == "alice-laptop")
        })
    })
    .await;
    agent.shutdown().await;
    let entries = tc.collector.store().audit().entries(Some("nohistory"), 0, 10_000).expect("audit log");
    assert!(
        entries.iter().any(|e| e.action == "location-history.set" && e.org.as_deref() == Some("nohistory")),
        "the opt-in is audited"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_organisation_gets_mac_pseudonyms_by_default() {
    init_logging();
    let tc = TestCollector::start_with_default_privacy().await;
    let org = OrgId::new("newdefaults").unwrap();
    let device = issue_device("newdefaults");
    tc.collector.reload().expect("import the new registration");
    let fake = FakeDevice::new("ap", "ap-defaults");
    let mut config = agent_config(tc.addr(), &device);
    fake.configure(&mut config);
    let agent = glimpse_agent::AgentHandle::spawn(config).unwrap();
    wait_for_status(&agent, "the device key heard", |s| s.pseudonymising_macs).await;
    wait_until("a wireless report", || !bodies(&exported(&tc, &device.identity), "wireless").is_empty()).await;
    agent.shutdown().await;
    let lines = exported(&tc, &device.identity);
    let pseudonymiser = glimpse_common::minimise::Pseudonymiser::new(tc.collector.store().pseudonym_key(&org).unwrap());
    let stored =
        pseudonymiser.stored_form("94:83:c4:12:34:57".parse().unwrap(), glimpse_common::minimise::MacForm::Real);
    let wireless = bodies(&lines, "wireless");
    assert_eq!(find(&wireless[0]["radios"], "interface", "phy1-ap0")["bssid"], stored.to_string());
    assert!(!serde_json::to_string(&lines).unwrap().contains("94:83:c4:12:34:57"), "no real MAC stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switch_reports_vlans_hosts_usernames_and_lldp_neighbours_over_ssh() {
    init_logging();
    let tc = TestCollector::start().await;
    let device = issue_ssh_device(ORG, DeviceKind::Switch);
    tc.collector.reload().expect("import the new registration");
    let fake = FakeDevice::new("switch", "sw-kinds");
    let mut config = ssh_agent_config(tc.ssh_addr(), &tc.ssh_fingerprint(), &device);
    fake.configure(&mut config);
    config.probes.dot1x_interfaces = vec!["lan3".to_owned()];
    assert!(config.probes.wired && !config.probes.wireless && !config.probes.wan, "switch defaults");
    let agent = glimpse_agent::AgentHandle::spawn(config).unwrap();
    wait_for_status(&agent, "3 batches acknowledged over SSH", |s| s.acked_seq >= 3).await;
    agent.shutdown().await;

    let lines = exported(&tc, &device.identity);
    let wired = bodies(&lines, "wired");
    let report = wired.first().expect("a wired report");
    assert_eq!(report["device"]["location"]["floor"], "2");

    let lan1 = find(&report["ports"], "port", "lan1");
    assert_eq!(lan1["pvid"], 1);
    assert_eq!(lan1["untagged"], serde_json::json!([{"first": 1, "last": 1}]));
    assert_eq!(
        lan1["tagged"],
        serde_json::json!([{"first": 10, "last": 10}, {"first": 20, "last": 20}, {"first": 30, "last": 33}])
    );

    let hosts = report["hosts"].as_array().unwrap();
    let macs: BTreeSet<&str> = hosts.iter().filter_map(|h| h["mac"].as_str()).collect();
    assert_eq!(
        macs,
        BTreeSet::from(["00:1b:21:aa:bb:cc", "f4:39:09:11:22:33", "8c:16:45:44:55:66"]),
        "the bridge's own, static and group addresses are not hosts"
    );
    assert_eq!(hosts.iter().filter(|h| h["mac"] == "f4:39:09:11:22:33").count(), 1, "a port's own table adds nothing");
    let printer = find(&report["hosts"], "mac", "f4:39:09:11:22:33");
    assert_eq!((printer["port"].as_str(), printer["vlan"].as_u64()), (Some("lan2"), Some(10)));
    assert_eq!(printer["addresses"], serde_json::json!(["10.20.0.15"]));
    assert_eq!(printer["hostname"], "printer-2f");
    let carol = find(&report["hosts"], "mac", "8c:16:45:44:55:66");
    assert_eq!(carol["username"], "carol@acme.example");
    assert_eq!(carol["hostname"], "carol-desktop");

    let core = find(&report["neighbours"], "system_name", "core-sw-1");
    assert_eq!(core["local_port"], "lan1");
    assert_eq!(
        (core["chassis_id"].as_str(), core["chassis_id_type"].as_str()),
        (Some("00:1b:21:aa:bb:cc"), Some("mac"))
    );
    assert_eq!(core["management_addresses"], serde_json::json!(["10.0.0.2", "fd00::2"]));
    assert_eq!(core["capabilities"], serde_json::json!(["Bridge"]));
    assert_eq!((core["port_id"].as_str(), core["port_id_type"].as_str()), (Some("Gi1/0/24"), Some("ifname")));
    assert_eq!(core["port_description"], "GigabitEthernet1/0/24");
    assert!(core["system_description"].as_str().unwrap().starts_with("Cisco IOS"));
    assert_eq!(core["vlans"], serde_json::json!([1]));

    assert_field_reference_lists_exactly(&lines, &["counters", "wired"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_reports_sessions_per_application_over_ssh() {
    init_logging();
    let tc = TestCollector::start().await;
    let device = issue_ssh_device(ORG, DeviceKind::Gateway);
    tc.collector.reload().expect("import the new registration");
    let fake = FakeDevice::new("gateway", "gw-kinds");
    let mut config = ssh_agent_config(tc.ssh_addr(), &tc.ssh_fingerprint(), &device);
    fake.configure(&mut config);
    config.probes.wan_interfaces = vec!["wan".to_owned()];
    assert!(config.probes.wan && !config.probes.wireless && !config.probes.wired, "gateway defaults");
    let agent = glimpse_agent::AgentHandle::spawn(config).unwrap();
    wait_for_status(&agent, "2 batches acknowledged over SSH", |s| s.acked_seq >= 2).await;

    // The table moves on: a DNS query ends, HTTPS and QUIC carry more, an
    // SSH session opens.
    let next = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/devices/gateway/nf_conntrack.next");
    let table = fake.sysroot.path().join("proc/net/nf_conntrack");
    std::fs::write(table.with_extension("tmp"), std::fs::read(next).unwrap()).unwrap();
    std::fs::rename(table.with_extension("tmp"), &table).unwrap();
    let ssh_started = |lines: &[Value]| {
        bodies(lines, "wan").iter().any(|w| {
            w["applications"]
                .as_array()
                .is_some_and(|apps| apps.iter().any(|a| a["application"] == "ssh" && a["sessions_started"] == 1))
        })
    };
    wait_until("the SSH session's start stored", || ssh_started(&exported(&tc, &device.identity))).await;
    agent.shutdown().await;

    let lines = exported(&tc, &device.identity);
    let wan = bodies(&lines, "wan");
    let first = wan[0];
    assert_eq!(first["wan_interfaces"], serde_json::json!(["wan"]));
    assert_eq!(first["active_sessions"], 5, "the baseline counts what is open");
    let change =
        wan.iter().find(|w| w["applications"].as_array().unwrap().iter().any(|a| a["sessions_started"] == 1)).unwrap();
    assert_eq!(change["active_sessions"], 5);
    assert!(change["interval_ms"].as_u64().unwrap() > 0);
    let https = find(&change["applications"], "application", "https");
    assert_eq!((https["protocol"].as_u64(), https["active_sessions"].as_u64()), (Some(6), Some(2)));
    assert_eq!((https["bytes_out"].as_u64(), https["bytes_in"].as_u64()), (Some(2_000), Some(40_000)));
    assert_eq!((https["packets_out"].as_u64(), https["packets_in"].as_u64()), (Some(10), Some(20)));
    let quic = find(&change["applications"], "application", "quic");
    assert_eq!((quic["protocol"].as_u64(), quic["bytes_in"].as_u64()), (Some(17), Some(1_000_000)));
    let dns = find(&change["applications"], "application", "dns");
    assert_eq!((dns["sessions_ended"].as_u64(), dns["active_sessions"].as_u64()), (Some(1), Some(0)));
    let ssh = find(&change["applications"], "application", "ssh");
    assert_eq!(
        (ssh["bytes_out"].as_u64(), ssh["bytes_in"].as_u64()),
        (Some(5_000), Some(8_000)),
        "a new session's bytes so far"
    );
    let mqtt = find(&change["applications"], "application", "mqtt");
    assert_eq!((mqtt["active_sessions"].as_u64(), mqtt["bytes_in"].as_u64()), (Some(1), Some(0)), "idle");

    assert_field_reference_lists_exactly(&lines, &["counters", "wan"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_reports_wan_destinations_with_site_names_only_once_its_organisation_enables_them() {
    init_logging();
    let tc = TestCollector::start_with_default_privacy().await;
    let org = OrgId::new("wandest").unwrap();
    let device = issue_ssh_device("wandest", DeviceKind::Gateway);
    tc.collector.reload().expect("import the new registration");
    let fake = FakeDevice::new("gateway", "gw-destinations");
    let mut config = ssh_agent_config(tc.ssh_addr(), &tc.ssh_fingerprint(), &device);
    fake.configure(&mut config);
    let agent = glimpse_agent::AgentHandle::spawn(config).unwrap();
    wait_for_status(&agent, "2 batches acknowledged over SSH", |s| s.acked_seq >= 2).await;

    // Off by default: sessions per application only.
    let lines = exported(&tc, &device.identity);
    assert!(!bodies(&lines, "wan").is_empty());
    assert!(
        bodies(&lines, "wan-destinations").is_empty(),
        "nothing per destination before the organisation enables it"
    );
    assert!(!agent.status().borrow().wan_destinations);

    set_wan_destinations(&tc, &org, true);
    wait_for_status(&agent, "the agent told to collect WAN destinations", |s| s.wan_destinations).await;
    wait_until("a WAN destinations report stored", || {
        !bodies(&exported(&tc, &device.identity), "wan-destinations").is_empty()
    })
    .await;
    // The table moves on: the DNS query ends, HTTPS and QUIC carry more,
    // an SSH session opens.
    let next = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/devices/gateway/nf_conntrack.next");
    let table = fake.sysroot.path().join("proc/net/nf_conntrack");
    std::fs::write(table.with_extension("tmp"), std::fs::read(next).unwrap()).unwrap();
    std::fs::rename(table.with_extension("tmp"), &table).unwrap();
    let ssh_started = |report: &&Value| {
        report["destinations"].as_array().is_some_and(|rows| {
            rows.iter().any(|r| r["application"] == "ssh" && r["counters"]["sessions_started"] == 1)
        })
    };
    wait_until("the SSH session's row stored", || {
        bodies(&exported(&tc, &device.identity), "wan-destinations").iter().any(ssh_started)
    })
    .await;
    agent.shutdown().await;

    let lines = exported(&tc, &device.identity);
    let reports = bodies(&lines, "wan-destinations");
    let change = reports.iter().copied().find(ssh_started).unwrap();
    assert_eq!(change["device"]["name"], "Lobby-2");
    assert!(change["interval_ms"].as_u64().unwrap() > 0);
    let rows = change["destinations"].as_array().unwrap();
    let row = |destination: &str| {
        rows.iter().find(|r| r["destination"] == destination).unwrap_or_else(|| panic!("no {destination} in {rows:#?}"))
    };
    let https = row("93.184.216.34");
    assert_eq!((https["protocol"].as_u64(), https["port"].as_u64()), (Some(6), Some(443)));
    assert_eq!((https["application"].as_str(), https["site"].as_str()), (Some("https"), Some("www.example.com")));
    assert_eq!(https["client_address"], "192.168.1.23");
    let counters = &https["counters"];
    assert_eq!((counters["bytes_out"].as_u64(), counters["bytes_in"].as_u64()), (Some(2_000), Some(40_000)));
    assert_eq!((counters["packets_out"].as_u64(), counters["packets_in"].as_u64()), (Some(10), Some(20)));
    assert_eq!((counters["active_sessions"].as_u64(), counters["sessions_started"].as_u64()), (Some(1), Some(0)));
    // The client's MAC, from the ARP table, stored as the organisation's
    // pseudonym of it (the default), the same for each of its rows.
    let client_mac = https["client_mac"].as_str().expect("a MAC from the ARP table");
    let pseudonymiser = glimpse_common::minimise::Pseudonymiser::new(tc.collector.store().pseudonym_key(&org).unwrap());
    let stored =
        pseudonymiser.stored_form("3c:22:fb:aa:bb:01".parse().unwrap(), glimpse_common::minimise::MacForm::Real);
    assert_eq!(client_mac, stored.to_string(), "pseudonymised, both layers");
    let quic = row("142.250.185.78");
    assert_eq!(
        (quic["application"].as_str(), quic["site"].as_str()),
        (Some("quic"), Some("video.example.org")),
        "the name asked, not the CNAME target"
    );
    assert_eq!(
        (quic["client_mac"].as_str(), quic["counters"]["bytes_in"].as_u64()),
        (Some(client_mac), Some(1_000_000))
    );
    let ssh = row("198.51.100.5");
    assert_eq!((ssh["site"].as_str(), ssh["client_address"].as_str()), (Some("ssh.example.com"), Some("192.168.1.41")));
    assert_eq!(
        (ssh["counters"]["bytes_out"].as_u64(), ssh["counters"]["bytes_in"].as_u64()),
        (Some(5_000), Some(8_000))
    );
    assert_ne!(ssh["client_mac"].as_str(), Some(client_mac));
    assert_eq!(row("198.51.100.20")["site"], "broker.example.io");
    let v6 = row("2606:4700::6810:85e5");
    assert_eq!(
        (v6["site"].as_str(), v6["client_mac"].is_null()),
        (Some("cdn.example.net"), true),
        "no ARP entry for IPv6"
    );
    assert!(rows.iter().all(|r| r["destination"] != "8.8.8.8"), "the ended DNS query has no row");
    assert_field_reference_lists_exactly(&lines, &["wan-destinations"]);

    // A subject request by the client's real MAC finds its rows and no one
    // else's; erasing takes them and leaves the others'.
    let store = tc.collector.store();
    let alice = glimpse_common::wire::admin::Subject::Mac("3c:22:fb:aa:bb:01".parse().unwrap());
    let page = glimpse_store::subject::export_subject(store, &org, &alice, 0, 10_000, usize::MAX).unwrap();
    assert!(page.total > 0);
    for line in &page.lines {
        let line: Value = serde_json::from_str(line).unwrap();
        let report = &line["record"]["wan-destinations"];
        for r in report["destinations"].as_array().expect("only WAN destination reports are about this client") {
            assert_eq!(r["client_address"], "192.168.1.23", "{r:#}");
        }
    }
    glimpse_store::subject::erase_subject(store, &org, &alice).unwrap();
    assert_eq!(glimpse_store::subject::export_subject(store, &org, &alice, 0, 10, usize::MAX).unwrap().total, 0);
    let left = exported(&tc, &device.identity);
    let rows: Vec<&Value> = bodies(&left, "wan-destinations")
        .into_iter()
        .flat_map(|report| report["destinations"].as_array().unwrap().iter())
        .collect();
    assert!(rows.iter().all(|r| r["client_address"] != "192.168.1.23"));
    assert!(rows.iter().any(|r| r["client_address"] == "192.168.1.41"), "the other clients' rows stay");

    let entries = tc.collector.store().audit().entries(Some("wandest"), 0, 10_000).expect("audit log");
    assert!(entries.iter().any(|e| e.action == "wan-destinations.set"), "the choice is audited");
}

/// An agent that sends WAN destinations its organisation has not enabled
/// (one that missed the directive, or ignores it) cannot get them stored:
/// they are dropped on arrival and counted; the rest of the batch is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wan_destinations_an_organisation_has_not_enabled_are_dropped_on_arrival() {
    use glimpse_common::bounded::{BoundedString, BoundedVec};
    use glimpse_common::record::{DestinationCounters, Record, RecordBody, WanDestination, WanDestinationReport};
    init_logging();
    let device = issue_device("wanoff");
    let tc = TestCollector::start().await;
    let destinations = |site: &str| Record {
        observed_at_ms: 1,
        body: RecordBody::WanDestinations(Box::new(WanDestinationReport {
            destinations: BoundedVec::truncating(vec![WanDestination {
                client_address: Some("192.168.1.23".parse().unwrap()),
                destination: Some("93.184.216.34".parse().unwrap()),
                protocol: 6,
                port: Some(443),
                site: BoundedString::truncating(site),
                counters: DestinationCounters { active_sessions: 1, ..Default::default() },
                ..Default::default()
            }]),
            ..Default::default()
        })),
    };
    let wan = Record { observed_at_ms: 1, body: RecordBody::Wan(Box::default()) };
    let mut conn = try_connect(tc.addr(), &device).await.unwrap();
    let batch = glimpse_common::wire::Batch {
        org: device.identity.org.clone(),
        stream_seq: conn.stored_seq() + 1,
        records: BoundedVec::truncating(vec![destinations("before.example"), wan]),
    };
    conn.send_batch(&batch).await.unwrap();
    conn.close().await;
    let lines = exported(&tc, &device.identity);
    assert_eq!(bodies(&lines, "wan").len(), 1, "the rest of the batch is stored");
    assert!(bodies(&lines, "wan-destinations").is_empty(), "{lines:#?}");
    let metrics = tc.collector.telemetry().render();
    assert!(
        metrics.lines().any(|l| l.starts_with("glimpse_records_dropped_total{")
            && l.contains("reason=\"not-enabled\"")
            && l.contains("org=\"wanoff\"")
            && l.ends_with(" 1")),
        "{metrics}"
    );

    // Once enabled, the same records are stored.
    set_wan_destinations(&tc, &device.identity.org, true);
    let mut conn = try_connect(tc.addr(), &device).await.unwrap();
    let batch = glimpse_common::wire::Batch {
        org: device.identity.org.clone(),
        stream_seq: conn.stored_seq() + 1,
        records: BoundedVec::truncating(vec![destinations("after.example")]),
    };
    conn.send_batch(&batch).await.unwrap();
    conn.close().await;
    let lines = exported(&tc, &device.identity);
    let stored = bodies(&lines, "wan-destinations");
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["destinations"][0]["site"], "after.example");
}
