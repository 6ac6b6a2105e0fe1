//! Collections on fixture trees with stand-in tools that log their calls:
//! counters across wraps and resets, roaming between collections, missing
//! and broken sources, and minimisation sparing the tools nobody wants.

use std::fs;
use std::path::{Path, PathBuf};

use glimpse_common::record::{RecordBody, RoamKind};

use super::*;

const CONFIG: &str = r#"
[device]
org = "acme"
id = "ap-1"
kind = "KIND"

[collector]
address = "127.0.0.1:7443"

[tls]
ca = "ca.pem"
cert = "device.pem"
key = "device.key"
shared_key = "device.psk"
"#;

/// A fixture tree (a copy of `openwrt-ap`, plus `extra` files) and a tools
/// directory whose stand-ins print `out/<tool>-<args>` and log each call.
struct Device {
    dir: tempfile::TempDir,
}

impl Device {
    fn new(extra: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/probe/openwrt-ap");
        copy(&fixture, &dir.path().join("root"));
        for (path, text) in extra {
            let path = dir.path().join("root").join(path);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        }
        fs::create_dir_all(dir.path().join("tools/out")).unwrap();
        let script = "#!/bin/sh\nd=$(dirname \"$0\")\necho \"$(basename \"$0\") $*\" >> \"$d/calls\"\n\
                      f=\"$d/out/$(basename \"$0\")$(printf -- '-%s' \"$@\")\"\n\
                      [ -f \"$f\" ] && exec cat \"$f\"\necho \"no such device\" >&2\nexit 1\n";
        for tool in ["iw", "hostapd_cli", "bridge", "lldpcli", "conntrack"] {
            let path = dir.path().join("tools").join(tool);
            fs::write(&path, script).unwrap();
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        }
        Self { dir }
    }

    fn out(&self, name: &str, text: &str) {
        fs::write(self.dir.path().join("tools/out").join(name), text).unwrap();
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn calls(&self) -> String {
        fs::read_to_string(self.dir.path().join("tools/calls")).unwrap_or_default()
    }

    fn reporter(&self, kind: &str) -> Reporter {
        let text = CONFIG.replace("KIND", kind);
        let mut config = AgentConfig::parse(&text, Path::new("agent.toml"), Path::new("/etc/glimpse")).unwrap();
        config.sysroot = self.root();
        let tool = |name: &str| vec![self.dir.path().join("tools").join(name).display().to_string()];
        config.probes.commands.iw = tool("iw");
        config.probes.commands.hostapd_cli = tool("hostapd_cli");
        config.probes.commands.bridge = tool("bridge");
        config.probes.commands.lldpcli = tool("lldpcli");
        config.probes.commands.conntrack = tool("conntrack");
        Reporter::new(&config)
    }
}

fn copy(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        let kind = entry.file_type().unwrap();
        if kind.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(entry.path()).unwrap(), target).unwrap();
        } else if kind.is_dir() {
            copy(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn wireless(records: &[Record]) -> Vec<&WirelessReport> {
    records.iter().filter_map(|r| if let RecordBody::Wireless(w) = &r.body { Some(&**w) } else { None }).collect()
}

fn counters(records: &[Record]) -> Option<&CounterReport> {
    records.iter().find_map(|r| if let RecordBody::Counters(c) = &r.body { Some(c) } else { None })
}

const IW_DEV: &str = "phy#0\n\tInterface wlan0\n\t\tifindex 5\n\t\twdev 0x1\n\t\taddr 02:00:00:00:01:00\n\t\tssid Lab\n\t\ttype AP\n\t\tchannel 1 (2412 MHz), width: 20 MHz, center1: 2412 MHz\n\t\ttxpower 20.00 dBm\n\
                      \tInterface wlan1\n\t\tifindex 6\n\t\twdev 0x2\n\t\taddr 02:00:00:00:01:01\n\t\tssid Lab\n\t\ttype AP\n\t\tchannel 36 (5180 MHz), width: 80 MHz, center1: 5210 MHz\n\t\ttxpower 23.00 dBm\n";

fn station(mac: &str, interface: &str) -> String {
    format!("Station {mac} (on {interface})\n\tinactive time:\t10 ms\n\tsignal:  \t-50 [-50, -52] dBm\n\tconnected time:\t5 seconds\n")
}

#[test]
fn stations_joining_leaving_and_moving_between_radios() {
    let device = Device::new(&[]);
    device.out("iw-dev", IW_DEV);
    device.out(
        "iw-dev-wlan0-station-dump",
        &(station("02:aa:00:00:00:01", "wlan0") + &station("02:aa:00:00:00:02", "wlan0")),
    );
    device.out("iw-dev-wlan1-station-dump", "");
    let mut reporter = device.reporter("ap");
    let first = reporter.collect(0, 1_000);
    let w = wireless(&first);
    assert_eq!(w.len(), 1);
    assert_eq!((w[0].radios.len(), w[0].stations.len()), (2, 2));
    assert!(w[0].roaming.is_empty(), "nothing to compare the first collection with");
    assert!(counters(&first).is_none(), "no interval yet");

    // Station 1 moves to the 5 GHz radio, station 2 leaves, station 3 joins.
    device.out("iw-dev-wlan0-station-dump", &station("02:aa:00:00:00:03", "wlan0"));
    device.out("iw-dev-wlan1-station-dump", &station("02:aa:00:00:00:01", "wlan1"));
    let second = reporter.collect(30_000, 31_000);
    let roaming = &wireless(&second)[0].roaming;
    let event = |mac: &str| {
        roaming
            .iter()
            .find(|e| e.mac.to_string() == mac)
            .map(|e| (e.event, e.interface.as_str(), e.previous_interface.as_deref()))
    };
    assert_eq!(event("02:aa:00:00:00:01"), Some((RoamKind::Moved, "wlan1", Some("wlan0"))));
    assert_eq!(event("02:aa:00:00:00:02"), Some((RoamKind::Left, "wlan0", None)));
    assert_eq!(event("02:aa:00:00:00:03"), Some((RoamKind::Joined, "wlan0", None)));
    assert_eq!(roaming.len(), 3);
    assert_eq!(counters(&second).unwrap().interval_ms, 30_000);
}

#[test]
fn many_stations_are_split_across_reports() {
    let device = Device::new(&[]);
    device.out("iw-dev", IW_DEV);
    let many: String =
        (0..300).map(|i| station(&format!("02:bb:00:00:{:02x}:{:02x}", i / 256, i % 256), "wlan0")).collect();
    device.out("iw-dev-wlan0-station-dump", &many);
    device.out("iw-dev-wlan1-station-dump", "");
    let records = device.reporter("ap").collect(0, 0);
    let reports = wireless(&records);
    assert_eq!(reports.iter().map(|r| r.stations.len()).collect::<Vec<_>>(), vec![128, 128, 44]);
    assert_eq!(reports[0].radios.len(), 2);
    assert!(reports[1].radios.is_empty() && reports[2].radios.is_empty(), "radios once");
}

#[test]
fn counters_count_through_a_32_bit_wrap_and_restart_after_a_reset() {
    let device = Device::new(&[]);
    let mut reporter = device.reporter("gateway");
    let stats = device.root().join("sys/class/net/br-lan/statistics");
    assert!(stats.join("rx_bytes").exists(), "the fixture has sysfs statistics for br-lan");
    fs::write(stats.join("rx_bytes"), format!("{}\n", u64::from(u32::MAX) - 999)).unwrap();
    fs::write(stats.join("tx_bytes"), "5000000\n").unwrap();
    reporter.collect(0, 0);
    fs::write(stats.join("rx_bytes"), "1000\n").unwrap();
    fs::write(stats.join("tx_bytes"), "6000000\n").unwrap();
    let second = reporter.collect(10_000, 10_000);
    let lan = counters(&second).unwrap().interfaces.iter().find(|i| i.name.as_str() == "br-lan").unwrap().clone();
    assert_eq!((lan.rx_bytes, lan.wrapped, lan.reset), (2_000, 1, false));
    assert_eq!((lan.tx_bytes, lan.tx_bytes_per_sec, lan.rx_bytes_per_sec), (1_000_000, 100_000, 200));
    fs::write(stats.join("tx_bytes"), "300\n").unwrap();
    let third = reporter.collect(20_000, 20_000);
    let lan = counters(&third).unwrap().interfaces.iter().find(|i| i.name.as_str() == "br-lan").unwrap().clone();
    assert_eq!((lan.tx_bytes, lan.reset), (300, true), "recreated: counted from zero");
}

#[test]
fn missing_and_broken_sources_leave_the_rest_of_the_collection() {
    let device = Device::new(&[("proc/net/arp", "IP address HW type Flags HW address Mask Device\ngarbage\n")]);
    // No iw output saved: the stand-in fails as iw does without nl80211.
    let mut reporter = device.reporter("ap");
    for round in 0..3 {
        let records = reporter.collect(round * 1000, 0);
        assert!(matches!(records[0].body, RecordBody::Metadata(_)), "metadata still collected");
        assert!(wireless(&records).is_empty());
    }
    // The switch's tools are absent altogether: a program that is not there.
    let text = CONFIG.replace("KIND", "switch");
    let mut config = AgentConfig::parse(&text, Path::new("agent.toml"), Path::new("/")).unwrap();
    config.sysroot = device.root();
    config.probes.commands.bridge = vec!["/nonexistent/bridge".into()];
    config.probes.commands.lldpcli = vec!["/nonexistent/lldpcli".into()];
    let mut switch = Reporter::new(&config);
    let records = switch.collect(0, 0);
    let wired: Vec<_> = records.iter().filter(|r| matches!(r.body, RecordBody::Wired(_))).collect();
    assert_eq!(wired.len(), 1, "an empty report: the device says what it could not see by sending nothing");
    let missing: Vec<_> =
        switch.warned.iter().filter(|(_, problem)| *problem == "missing").map(|(s, _)| s.as_str()).collect();
    assert_eq!(missing.len(), 3, "bridge fdb, bridge vlan and lldpcli: {missing:?}");
    assert!(switch.warned.contains(&("proc/net/arp".to_owned(), "malformed")));
    let logged = switch.warned.len();
    switch.collect(1000, 0);
    assert_eq!(switch.warned.len(), logged, "logged once, not every collection");
}

#[test]
fn omitted_fields_spare_the_tools_that_only_feed_them() {
    let device = Device::new(&[]);
    device.out("iw-dev", IW_DEV);
    device.out("iw-dev-wlan0-station-dump", &station("02:aa:00:00:00:01", "wlan0"));
    device.out("iw-dev-wlan1-station-dump", "");
    device.out(
        "hostapd_cli--i-wlan0-all_sta",
        "02:aa:00:00:00:01\nflags=[AUTH][ASSOC][AUTHORIZED]\ndot1xAuthSessionUserName=alice\n",
    );
    let mut reporter = device.reporter("ap");
    let records = reporter.collect(0, 0);
    assert_eq!(wireless(&records)[0].stations[0].username.as_str(), "alice");
    assert!(device.calls().contains("hostapd_cli -i wlan0 all_sta"));

    fs::remove_file(device.dir.path().join("tools/calls")).unwrap();
    reporter.omit(&[MetadataField::Usernames, MetadataField::Vlans]);
    let records = reporter.collect(1000, 0);
    assert_eq!(wireless(&records)[0].stations[0].username.as_str(), "");
    assert!(!device.calls().contains("hostapd_cli"), "not run: {}", device.calls());
}

fn client_devices(records: &[Record]) -> Vec<&glimpse_common::record::ClientDeviceReport> {
    records
        .iter()
        .filter_map(|r| match &r.body {
            RecordBody::ClientDevices(report) => Some(&**report),
            _ => None,
        })
        .collect()
}

fn destinations(records: &[Record]) -> Vec<&WanDestinationReport> {
    records
        .iter()
        .filter_map(|r| match &r.body {
            RecordBody::WanDestinations(report) => Some(&**report),
            _ => None,
        })
        .collect()
}

#[test]
fn client_devices_come_from_the_fingerprint_file_and_stop_when_omitted() {
    let fingerprints = "3c:22:fb:aa:bb:01 1,3,6,15,31,33,43,44,46,47,119,121,249,252 MSFT 5.0\n\
                        02:aa:00:00:00:09 1,121,3,6,15,119,252 -\n";
    let device = Device::new(&[(FINGERPRINTS, fingerprints)]);
    device.out("iw-dev", IW_DEV);
    device.out(
        "iw-dev-wlan0-station-dump",
        &(station("3c:22:fb:aa:bb:01", "wlan0") + &station("02:aa:00:00:00:02", "wlan0")),
    );
    device.out("iw-dev-wlan1-station-dump", "");
    let mut reporter = device.reporter("ap");
    let records = reporter.collect(0, 1_000);
    let reports = client_devices(&records);
    assert_eq!(reports.len(), 1);
    let clients = &reports[0].clients;
    assert_eq!(clients.len(), 1, "a station nothing is known about has no entry; a file line without a station none");
    let laptop = &clients[0];
    assert_eq!(laptop.mac.to_string(), "3c:22:fb:aa:bb:01");
    assert_eq!((laptop.os.as_str(), laptop.device_type.as_str()), ("Windows", "computer"));
    assert_eq!(laptop.vendor.as_str(), "Apple", "Boot Camp, say: the signals disagree");
    assert!(laptop.confidence < 90, "{laptop:?}");
    let stations = &wireless(&records)[0].stations;
    let station = stations.iter().find(|s| s.mac == laptop.mac).unwrap();
    assert_eq!(station.user_agent.as_str(), "MSFT 5.0", "the file's vendor class, which dnsmasq's leases lack");

    reporter.omit(&[MetadataField::UserAgents]);
    let without_agents = reporter.collect(30_000, 31_000);
    let laptop = &client_devices(&without_agents)[0].clients[0];
    assert!(!laptop.evidence.contains(&glimpse_common::record::Evidence::VendorClass), "an omitted signal is not used");

    reporter.omit(&[MetadataField::ClientDevices]);
    assert!(client_devices(&reporter.collect(60_000, 61_000)).is_empty());
}

const CONNTRACK: &str = "\
ipv4 2 tcp 6 300 ESTABLISHED src=192.168.1.23 dst=93.184.216.34 sport=51234 dport=443 packets=1 bytes=100 src=93.184.216.34 dst=203.0.113.7 sport=443 dport=51234 packets=1 bytes=200 [ASSURED] mark=0 zone=0 use=2
ipv4 2 tcp 6 300 ESTABLISHED src=192.168.1.41 dst=93.184.216.34 sport=40000 dport=443 packets=1 bytes=100 src=93.184.216.34 dst=203.0.113.7 sport=443 dport=40000 packets=1 bytes=200 [ASSURED] mark=0 zone=0 use=2
";

#[test]
fn wan_destinations_need_the_organisation_and_follow_its_minimisation() {
    let device = Device::new(&[
        ("proc/net/nf_conntrack", CONNTRACK),
        ("proc/net/arp", "IP address       HW type     Flags       HW address            Mask     Device\n192.168.1.23     0x1         0x2         3c:22:fb:aa:bb:01     *        br-lan\n"),
        ("var/log/dnsmasq.log", "dnsmasq[1]: query[A] www.example.com from 192.168.1.23\ndnsmasq[1]: reply www.example.com is 93.184.216.34\n"),
    ]);
    let mut reporter = device.reporter("gateway");
    assert!(destinations(&reporter.collect(0, 0)).is_empty(), "off until the organisation enables them");

    reporter.allow_destinations(true);
    let records = reporter.collect(30_000, 30_000);
    let report = destinations(&records)[0];
    assert_eq!(report.destinations.len(), 2, "one row per client");
    let alice = report.destinations.iter().find(|r| r.client_address == Some("192.168.1.23".parse().unwrap())).unwrap();
    assert_eq!(alice.client_mac, Some("3c:22:fb:aa:bb:01".parse().unwrap()), "from the ARP table");
    assert_eq!((alice.site.as_str(), alice.application.as_str()), ("www.example.com", "https"));

    reporter.omit(&[MetadataField::WanClients, MetadataField::WanSites]);
    let records = reporter.collect(60_000, 60_000);
    let report = destinations(&records)[0];
    assert_eq!(report.destinations.len(), 1, "rows add up across clients");
    let row = &report.destinations[0];
    assert_eq!((row.client_mac, row.client_address, row.site.as_str()), (None, None, ""));
    assert_eq!((row.destination, row.counters.active_sessions), (Some("93.184.216.34".parse().unwrap()), 2));

    reporter.allow_destinations(false);
    assert!(destinations(&reporter.collect(90_000, 90_000)).is_empty(), "and stop when it turns them off");
}
