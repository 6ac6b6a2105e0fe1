//! Whole-probe tests on fixture trees (`agent/tests/fixtures/probe/`), on
//! broken trees, on this machine's `/`, and property tests of the parsers.

use std::fs;
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use glimpse_common::record::{DeviceMetadata, InterfaceStats, MAX_INTERFACES};
use proptest::prelude::*;

use super::*;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/probe").join(name)
}

/// A writable copy of a fixture, symlinks included.
fn copy_of(name: &str) -> tempfile::TempDir {
    fn copy(from: &Path, to: &Path) -> io::Result<()> {
        fs::create_dir_all(to)?;
        for entry in fs::read_dir(from)? {
            let entry = entry?;
            let target = to.join(entry.file_name());
            let kind = entry.file_type()?;
            if kind.is_symlink() {
                std::os::unix::fs::symlink(fs::read_link(entry.path())?, target)?;
            } else if kind.is_dir() {
                copy(&entry.path(), &target)?;
            } else {
                fs::copy(entry.path(), target)?;
            }
        }
        Ok(())
    }
    let dir = tempfile::tempdir().unwrap();
    copy(&fixture(name), dir.path()).unwrap();
    dir
}

fn write(root: &Path, relative: &str, content: impl AsRef<[u8]>) {
    let path = root.join(relative);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
}

/// A probe for a fixture tree; the fixtures were captured on little-endian
/// machines, so their `proc/net/route` is read as such on any test host.
fn probe(root: impl Into<PathBuf>) -> HostProbe {
    HostProbe::new(root).with_route_byte_order(KernelByteOrder::Little)
}

fn iface<'a>(meta: &'a DeviceMetadata, name: &str) -> &'a InterfaceStats {
    meta.interfaces
        .iter()
        .find(|i| i.name.as_str() == name)
        .unwrap_or_else(|| panic!("no {name} in {:?}", meta.interfaces))
}

fn names(meta: &DeviceMetadata) -> Vec<&str> {
    meta.interfaces.iter().map(|i| i.name.as_str()).collect()
}

fn addrs(stats: &InterfaceStats) -> Vec<String> {
    stats.addresses.iter().map(IpAddr::to_string).collect()
}

/// Log output captured while `f` runs.
fn logged<R>(f: impl FnOnce() -> R) -> (R, String) {
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let sink = Sink::default();
    let writer = sink.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .without_time()
        .with_max_level(tracing::Level::WARN)
        .finish();
    let result = tracing::subscriber::with_default(subscriber, f);
    let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
    (result, text)
}

#[test]
fn debian_x86_host() {
    let mut probe = probe(fixture("debian-x86"));
    let (meta, logs) = logged(|| probe.collect());
    assert_eq!(logs, "", "a complete tree logs nothing");
    assert_eq!(meta.kind, None);
    assert_eq!(meta.hostname.as_str(), "web-03");
    assert_eq!(meta.os_name.as_str(), "Debian GNU/Linux");
    assert_eq!(meta.os_version.as_str(), "12");
    assert_eq!(meta.model.as_deref(), Some("PowerEdge R650"));
    assert_eq!(meta.kernel.as_str(), "6.1.0-18-amd64");
    assert_eq!(meta.uptime_secs, 863_204);
    // `bonding_masters` is a file in sys/class/net, not an interface.
    assert_eq!(names(&meta), ["docker0", "enp1s0", "lo"]);

    let lo = iface(&meta, "lo");
    assert_eq!(lo.mac, None);
    assert!(!lo.oper_up, "lo reports `unknown`");
    assert_eq!(lo.mtu, 65536);
    assert_eq!(addrs(lo), ["127.0.0.1", "::1"]);

    let nic = iface(&meta, "enp1s0");
    assert_eq!(nic.mac, Some("52:54:00:6b:3e:91".parse().unwrap()));
    assert!(nic.oper_up);
    assert_eq!(nic.mtu, 1500);
    assert_eq!(addrs(nic), ["10.20.0.15", "10.20.0.16", "2001:db8:20::15", "fe80::5054:ff:fe6b:3e91"]);
    assert_eq!((nic.rx_bytes, nic.rx_packets, nic.rx_errors, nic.rx_dropped), (98_234_117_822, 71_203_344, 0, 1288));
    assert_eq!((nic.tx_bytes, nic.tx_packets, nic.tx_errors, nic.tx_dropped), (12_883_002_117, 40_127_733, 0, 0));

    let docker = iface(&meta, "docker0");
    assert!(!docker.oper_up);
    assert_eq!(addrs(docker), ["172.17.0.1"]);
    assert_eq!(docker.tx_dropped, 2);
}

#[test]
fn openwrt_access_point() {
    let mut probe = probe(fixture("openwrt-ap"));
    let (meta, logs) = logged(|| probe.collect());
    assert_eq!(logs, "", "a complete tree logs nothing");
    assert_eq!(meta.hostname.as_str(), "ap-lobby");
    assert_eq!(meta.os_name.as_str(), "OpenWrt");
    assert_eq!(meta.os_version.as_str(), "23.05.3");
    assert_eq!(meta.model.as_deref(), Some("Ubiquiti UniFi 6 Lite"));
    assert_eq!(meta.kernel.as_str(), "5.15.150");
    assert_eq!(meta.uptime_secs, 1_043_712);
    assert_eq!(names(&meta), ["br-lan", "eth0", "lo", "wlan0"]);

    let bridge = iface(&meta, "br-lan");
    assert_eq!(bridge.mac, Some("94:83:c4:12:ab:00".parse().unwrap()));
    assert_eq!(addrs(bridge), ["192.168.1.1", "fd12:3456:789a::1", "fe80::9683:c4ff:fe12:ab00"]);
    let wan = iface(&meta, "eth0");
    assert_eq!(addrs(wan), ["198.51.100.23", "2001:db8:4000:12:9683:c4ff:fe12:ab01", "fe80::9683:c4ff:fe12:ab01"]);
    assert_eq!(wan.rx_bytes, 4_823_915_023);
    let wifi = iface(&meta, "wlan0");
    assert!(wifi.oper_up);
    assert_eq!(wifi.mac, Some("94:83:c4:12:ab:02".parse().unwrap()));
    assert_eq!(addrs(wifi), ["fe80::9683:c4ff:fe12:ab02"]);
    assert_eq!((wifi.tx_bytes, wifi.tx_packets, wifi.tx_errors, wifi.tx_dropped), (4_620_118_223, 4_112_009, 3, 158));
}

#[test]
fn openwrt_fallback_sources() {
    let full = probe(fixture("openwrt-ap")).collect();
    let tree = copy_of("openwrt-ap");
    let root = tree.path();
    // An image without os-release, a board exposing only /proc/device-tree,
    // and an interface without a statistics directory.
    fs::remove_file(root.join("etc/os-release")).unwrap();
    fs::remove_file(root.join("usr/lib/os-release")).unwrap();
    fs::remove_dir_all(root.join("sys/firmware")).unwrap();
    write(root, "proc/device-tree/model", b"Ubiquiti UniFi 6 Lite\0");
    fs::remove_dir_all(root.join("sys/class/net/wlan0/statistics")).unwrap();

    let (meta, logs) = logged(|| probe(root).collect());
    assert_eq!(logs, "", "fallbacks are not worth a warning");
    assert_eq!(meta.os_name.as_str(), "OpenWrt");
    assert_eq!(meta.os_version.as_str(), "23.05.3");
    assert_eq!(meta.model.as_deref(), Some("Ubiquiti UniFi 6 Lite"));
    assert_eq!(iface(&meta, "wlan0"), iface(&full, "wlan0"), "proc/net/dev counters");

    // No sysfs at all (a minimal container): names and counters from
    // proc/net/dev, addresses still attached, link details unknown.
    fs::remove_dir_all(root.join("sys")).unwrap();
    let (meta, logs) = logged(|| probe(root).collect());
    assert_eq!(logs.lines().count(), 1, "{logs}");
    assert!(logs.contains("sys/class/net"), "{logs}");
    assert_eq!(names(&meta), names(&full));
    for (got, want) in meta.interfaces.iter().zip(full.interfaces.iter()) {
        assert_eq!(got.mac, None);
        assert!(!got.oper_up);
        assert_eq!(got.addresses, want.addresses);
        assert_eq!(
            (got.rx_bytes, got.rx_dropped, got.tx_bytes, got.tx_dropped),
            (want.rx_bytes, want.rx_dropped, want.tx_bytes, want.tx_dropped)
        );
    }
}

#[test]
fn big_endian_route_table() {
    let tree = copy_of("openwrt-ap");
    // proc/net/route as the kernel of a big-endian MIPS AP (ath79) prints it.
    write(
        tree.path(),
        "proc/net/route",
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
         eth0\t00000000\tC6336401\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
         br-lan\tC0A80100\t00000000\t0001\t0\t0\t0\tFFFFFF00\t0\t0\t0\n\
         eth0\tC6336400\t00000000\t0001\t0\t0\t0\tFFFFFF00\t0\t0\t0\n",
    );
    let meta = HostProbe::new(tree.path()).with_route_byte_order(KernelByteOrder::Big).collect();
    assert_eq!(addrs(iface(&meta, "br-lan"))[0], "192.168.1.1");
    assert_eq!(addrs(iface(&meta, "eth0"))[0], "198.51.100.23");
}

#[test]
fn missing_sources_leave_fields_empty_and_warn_once() {
    let tree = tempfile::tempdir().unwrap();
    let mut probe = HostProbe::new(tree.path());
    let (meta, logs) = logged(|| probe.collect());
    assert_eq!(meta, DeviceMetadata::default());
    // One line per missing source: hostname, OS, model, kernel, uptime,
    // sys/class/net, proc/net/dev, fib_trie, route skipped (no addresses to
    // attribute), if_inet6.
    assert_eq!(logs.lines().count(), 9, "{logs}");
    assert!(logs.lines().all(|l| l.contains("WARN")), "{logs}");
    assert!(logs.contains("proc/sys/kernel/hostname, "), "{logs}");
    assert!(logs.contains("proc/net/if_inet6"), "{logs}");

    let (again, logs) = logged(|| probe.collect());
    assert_eq!(again, meta);
    assert_eq!(logs, "", "a daemon collecting every 30 s must not repeat itself");

    // A source that appears later is picked up; it was never cached.
    write(tree.path(), "proc/sys/kernel/hostname", "late\n");
    assert_eq!(probe.collect().hostname.as_str(), "late");
}

#[test]
fn malformed_sources_give_partial_data() {
    let tree = copy_of("openwrt-ap");
    let root = tree.path();
    // Not UTF-8.
    write(root, "proc/sys/kernel/hostname", b"ap-\xff\xfe-1\n");
    // An unterminated quote and garbage around a good NAME.
    write(root, "usr/lib/os-release", "\x00\x01garbage\nNAME=\"OpenWrt\"\nVERSION_ID=\"23.05\nVERSION='23.05.3'\n");
    // Cut mid-line: wlan0 and br-lan are lost from it, but they have sysfs
    // statistics; eth0's directory is removed so it needs this file.
    let dev = fs::read_to_string(root.join("proc/net/dev")).unwrap();
    let cut = dev.find(" wlan0:").unwrap() + 30;
    write(root, "proc/net/dev", &dev[..cut]);
    fs::remove_dir_all(root.join("sys/class/net/eth0/statistics")).unwrap();
    // Garbage with one good entry in the middle.
    write(
        root,
        "proc/net/fib_trie",
        b"\xde\xad\xbe\xef\n|-- 192.168.1.1\n   /32 host LOCAL\n+-- \xff/99\n/32 nothing\n".as_slice(),
    );
    write(root, "proc/net/if_inet6", "fe80 zz\n00000000000000000000000000000001 01 80 10 80       lo\n");
    write(root, "sys/class/net/wlan0/mtu", "lots\n");
    write(root, "sys/class/net/wlan0/address", "zz:zz:zz:zz:zz:zz\n");
    write(root, "sys/class/net/br-lan/operstate", "sideways\n");
    write(root, "sys/class/net/br-lan/statistics/rx_bytes", "-5\n");
    // Two megabytes without a newline: over the cap, cut to nothing.
    write(root, "proc/uptime", "9".repeat(2 << 20));

    let mut probe = probe(root);
    let (meta, logs) = logged(|| probe.collect());
    assert_eq!(meta.hostname.as_str(), "ap-\u{fffd}\u{fffd}-1");
    assert_eq!(meta.os_name.as_str(), "OpenWrt");
    assert_eq!(meta.os_version.as_str(), "23.05.3");
    assert_eq!(meta.uptime_secs, 0);
    assert_eq!(meta.kernel.as_str(), "5.15.150", "untouched sources still read");
    assert_eq!(names(&meta), ["br-lan", "eth0", "lo", "wlan0"]);

    let eth0 = iface(&meta, "eth0");
    assert_eq!(eth0.rx_bytes, 4_823_915_023, "from proc/net/dev");
    assert!(eth0.addresses.is_empty(), "its IPv4 is gone from fib_trie");
    let wlan0 = iface(&meta, "wlan0");
    assert_eq!((wlan0.mtu, wlan0.mac), (0, None));
    assert!(wlan0.oper_up);
    assert_eq!(wlan0.tx_bytes, 4_620_118_223, "from sysfs");
    let bridge = iface(&meta, "br-lan");
    assert!(!bridge.oper_up);
    assert_eq!(bridge.rx_bytes, 0, "bad sysfs counter, and cut from proc/net/dev");
    assert_eq!(addrs(bridge), ["192.168.1.1"]);
    assert_eq!(addrs(iface(&meta, "lo")), ["::1"]);

    for path in [
        "etc/os-release",
        "proc/net/dev",
        "proc/net/fib_trie",
        "proc/net/if_inet6",
        "wlan0/mtu",
        "wlan0/address",
        "br-lan/operstate",
        "br-lan/statistics/rx_bytes",
        "proc/uptime",
    ] {
        assert!(logs.contains(path), "no warning for {path}:\n{logs}");
    }
    assert!(logs.contains("larger than"), "{logs}");
    let (_, logs) = logged(|| probe.collect());
    assert_eq!(logs, "", "each problem is logged once");
}

#[test]
fn huge_interface_lists_are_bounded() {
    let tree = tempfile::tempdir().unwrap();
    let mut dev = String::from("Inter-|\n face |\n");
    for i in 0..100_000 {
        dev.push_str(&format!("v{i:07}: {}\n", "1 ".repeat(16)));
    }
    write(tree.path(), "proc/net/dev", &dev);
    let meta = HostProbe::new(tree.path()).collect();
    assert_eq!(meta.interfaces.len(), MAX_INTERFACES);
    assert_eq!(meta.interfaces[0].name.as_str(), "v0000000");
    assert!(names(&meta).windows(2).all(|w| w[0] < w[1]));

    // Many addresses on one interface: bounded per interface.
    let mut trie = String::from("Local:\n");
    for i in 0..200u32 {
        trie.push_str(&format!("  |-- 10.0.{}.{}\n     /32 host LOCAL\n", i / 250, i % 250 + 1));
    }
    write(tree.path(), "proc/net/fib_trie", &trie);
    write(
        tree.path(),
        "proc/net/route",
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
         v0000000\t0000000A\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n",
    );
    let meta = probe(tree.path()).collect();
    assert_eq!(meta.interfaces[0].addresses.len(), glimpse_common::record::MAX_ADDRESSES);
}

#[test]
fn fifo_is_not_opened() {
    let tree = tempfile::tempdir().unwrap();
    fs::create_dir_all(tree.path().join("proc")).unwrap();
    let made = std::process::Command::new("mkfifo").arg(tree.path().join("proc/uptime")).status();
    if !matches!(made, Ok(status) if status.success()) {
        return; // No mkfifo here; nothing to test.
    }
    let (meta, logs) = logged(|| HostProbe::new(tree.path()).collect());
    assert_eq!(meta.uptime_secs, 0);
    assert!(logs.contains("not a regular file"), "{logs}");
}

#[test]
fn this_machine() {
    let meta = HostProbe::new("/").collect();
    assert!(meta.interfaces.iter().any(|i| i.name.as_str() == "lo"), "{meta:?}");
    assert!(!meta.kernel.is_empty());
}

fn lines_of(alphabet: &'static str) -> impl Strategy<Value = String> {
    proptest::string::string_regex(alphabet).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn parsers_never_panic_on_any_text(text in any::<String>()) {
        let _ = parse_proc_net_dev(&text);
        let _ = parse_if_inet6(&text);
        let _ = parse_fib_trie(&text);
        let _ = parse_proc_net_route(&text, KernelByteOrder::Little);
        let _ = parse_proc_net_route(&text, KernelByteOrder::Big);
        let _ = parse_os_release(&text);
        let _ = parse_hostname(&text);
        let _ = parse_model(&text);
        let _ = parse_kernel_release(&text);
        let _ = parse_uptime(&text);
        let _ = parse_mac(&text);
        let _ = parse_operstate(&text);
        let _ = parse_sysfs_number(&text);
    }

    #[test]
    fn parsers_never_panic_on_near_misses(
        dev in lines_of("([ a-z0-9]{0,8}:?( [0-9]{1,21}){0,18}\n|[|]\n){0,6}"),
        inet6 in lines_of("([0-9a-fg]{0,33}( [0-9a-f]{1,9}){0,5} [a-z0-9:]{0,3}\n){0,4}"),
        trie in lines_of("(( *[|+]-- [0-9./]{0,18}| */[0-9]{1,3}( host| link)?( LOCAL| UNICAST)?|[A-Za-z ]{0,6}:)\n){0,10}"),
        route in lines_of("([a-z*]{0,4}(\t[-0-9A-F]{0,9}){0,11}\n){0,4}"),
        release in lines_of("([A-Z_ ]{0,4}=?[\"'\\\\a #$]{0,8}\n){0,5}"),
        mac in lines_of("([0-9a-fz]{0,3}:){0,8}[0-9a-f]{0,3}"),
    ) {
        let parsed = parse_proc_net_dev(&dev);
        prop_assert!(parsed.items.iter().all(|l| lex::valid_ifname(&l.name)));
        let _ = parse_if_inet6(&inet6);
        let _ = parse_fib_trie(&trie);
        for order in [KernelByteOrder::Little, KernelByteOrder::Big] {
            let routes = parse_proc_net_route(&route, order).items;
            let _ = interface_for(std::net::Ipv4Addr::new(10, 0, 0, 1), &routes);
        }
        let _ = parse_os_release(&release);
        let _ = parse_mac(&mac);
    }

    #[test]
    fn os_release_values_round_trip(value in "[ -~]{0,40}") {
        // Escaped the way systemd writes os-release.
        let mut quoted = String::from("\"");
        for c in value.chars() {
            if matches!(c, '"' | '\\' | '$' | '`') {
                quoted.push('\\');
            }
            quoted.push(c);
        }
        quoted.push('"');
        let parsed = parse_os_release(&format!("NAME={quoted}\n"));
        prop_assert_eq!(parsed.skipped, 0);
        prop_assert_eq!(&parsed.items[0].1, &value);
    }
}
