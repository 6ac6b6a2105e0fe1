//! What the demo's agents see of their "devices": this machine has no
//! radios, switch ports or NAT, so each device kind gets stand-ins for its
//! tools (`iw`, `hostapd_cli`, `bridge`, `lldpcli`, `conntrack`) that print
//! output saved from real devices (the end-to-end tests' fixtures), and an
//! access point's DHCP leases. Metadata still comes from this machine.

use std::path::{Path, PathBuf};

use anyhow::Context;
use glimpse_common::identity::DeviceKind;

/// The stand-in: prints `out/<tool>-<arg>-...` beside itself, or fails as
/// a device without that feature would.
const FAKE_TOOL: &str = include_str!("../../../tests/fixtures/tools/fake-tool");

/// (file name under `out/`, contents), per device kind.
fn outputs(kind: DeviceKind) -> Vec<(&'static str, &'static str)> {
    macro_rules! fixture {
        ($kind:literal, $name:literal) => {
            ($name, include_str!(concat!("../../../tests/fixtures/devices/", $kind, "/out/", $name)))
        };
    }
    match kind {
        DeviceKind::Ap => vec![
            fixture!("ap", "iw-dev"),
            fixture!("ap", "iw-dev-phy1-ap0-station-dump"),
            fixture!("ap", "iw-dev-phy0-ap0-station-dump"),
            fixture!("ap", "hostapd_cli--i-phy1-ap0-all_sta"),
            fixture!("ap", "hostapd_cli--i-phy0-ap0-all_sta"),
        ],
        DeviceKind::Switch => vec![
            fixture!("switch", "bridge--j-fdb-show"),
            fixture!("switch", "bridge--j-vlan-show"),
            fixture!("switch", "lldpcli--f-json-show-neighbors-details"),
            fixture!("switch", "hostapd_cli--i-lan3-all_sta"),
        ],
        DeviceKind::Gateway => Vec::new(),
    }
}

/// A gateway's connection tracking table.
const CONNTRACK: &str = include_str!("../../../tests/fixtures/devices/gateway/root/proc/net/nf_conntrack");

/// An access point's DHCP leases (dnsmasq and ISC).
const LEASES: [(&str, &str); 2] = [
    ("dhcp.leases", include_str!("../../../tests/fixtures/devices/ap/root/tmp/dhcp.leases")),
    ("dhcpd.leases", include_str!("../../../tests/fixtures/devices/ap/root/var/lib/dhcp/dhcpd.leases")),
];

/// Writes `dir/devices/<kind>/` and returns the `[probes]` sections of an
/// agent config that use it.
pub(super) fn probe_sections(dir: &Path, kind: DeviceKind) -> anyhow::Result<String> {
    let base = dir.join("devices").join(kind.as_str());
    let out = base.join("out");
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let base = base.canonicalize().with_context(|| format!("resolving {}", base.display()))?;
    for (name, text) in outputs(kind) {
        std::fs::write(out.join(name), text).with_context(|| format!("writing {name}"))?;
    }
    let mut tools = Vec::new();
    for tool in ["iw", "hostapd_cli", "bridge", "lldpcli", "conntrack"] {
        let path = base.join(tool);
        std::fs::write(&path, FAKE_TOOL).with_context(|| format!("writing {}", path.display()))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
        tools.push(format!("{tool} = [{:?}]", path.display().to_string()));
    }
    let mut leases: Vec<PathBuf> = Vec::new();
    if kind == DeviceKind::Ap {
        for (name, text) in LEASES {
            std::fs::write(base.join(name), text).with_context(|| format!("writing {name}"))?;
            leases.push(base.join(name));
        }
    }
    // The gateway's connection tracking table, saved from a real one.
    let table = base.join("nf_conntrack");
    std::fs::write(&table, CONNTRACK).with_context(|| format!("writing {}", table.display()))?;
    let leases: Vec<String> = leases.iter().map(|p| format!("{:?}", p.display().to_string())).collect();
    Ok(format!(
        "[probes]\ndhcp_leases = [{}]\nwan_interfaces = [\"eth1\"]\ndot1x_interfaces = [\"lan3\"]\nconntrack_table = {:?}\n\n\
         [probes.commands]\n{}\n\n",
        leases.join(", "),
        table.display().to_string(),
        tools.join("\n")
    ))
}
