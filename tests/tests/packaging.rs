//! Issue 18, item 7: the agent's OpenWrt package. `scripts/package-ipk.sh`
//! builds an .ipk from a host build of the agent (CI does not cross-build
//! every device target), then the test unpacks it as opkg would (an outer
//! tar.gz of debian-binary, data.tar.gz and control.tar.gz) and runs the
//! packaged agent's own UCI conversion on the packaged /etc/config/glimpse,
//! as the init script does; the agent's config loader must accept what it
//! wrote. The collector's Debian package is installed and checked by
//! `scripts/test-deb.sh` in CI (it needs root and dpkg).

use std::path::{Path, PathBuf};
use std::process::Command;

use glimpse_tests::require_tool;

const AGENT: &str = env!("CARGO_BIN_EXE_agent-under-test");

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ is in the repository").to_owned()
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Unpacks one tar.gz into `dir`.
fn untar(archive: &Path, dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    run(Command::new("tar").arg("-xzf").arg(archive).arg("-C").arg(dir));
}

#[test]
fn the_ipk_unpacks_and_its_uci_config_becomes_an_agent_toml_the_agent_loads() {
    if !require_tool("tar", "apt-get install tar gzip") || !require_tool("gzip", "apt-get install gzip") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // A smaller copy: the debug information of a test build is most of it.
    let binary = dir.path().join("glimpse-agent");
    std::fs::copy(AGENT, &binary).unwrap();
    let _ = Command::new("strip").arg("--strip-debug").arg(&binary).status();

    let out = dir.path().join("out");
    let printed = run(Command::new(repo_root().join("scripts/package-ipk.sh"))
        .arg("--out")
        .arg(&out)
        .arg("x86_64-unknown-linux-gnu")
        .arg(format!("{}:glimpse-agent", binary.display())));
    let ipk = PathBuf::from(printed.lines().last().expect("the script prints the package"));
    assert!(ipk.ends_with(format!("glimpse-agent_{}_x86_64.ipk", env!("CARGO_PKG_VERSION"))), "{ipk:?}");

    let outer = dir.path().join("outer");
    untar(&ipk, &outer);
    let listing = run(Command::new("tar").arg("-tzf").arg(&ipk));
    assert_eq!(listing.lines().collect::<Vec<_>>(), ["./debian-binary", "./data.tar.gz", "./control.tar.gz"]);
    assert_eq!(std::fs::read_to_string(outer.join("debian-binary")).unwrap(), "2.0\n");
    let control = outer.join("control");
    untar(&outer.join("control.tar.gz"), &control);
    let fields = std::fs::read_to_string(control.join("control")).unwrap();
    for field in
        ["Package: glimpse-agent\n", "Architecture: x86_64\n", &format!("Version: {}\n", env!("CARGO_PKG_VERSION"))]
    {
        assert!(fields.contains(field), "{field:?} missing: {fields}");
    }
    assert_eq!(std::fs::read_to_string(control.join("conffiles")).unwrap(), "/etc/config/glimpse\n");
    let root = dir.path().join("root");
    untar(&outer.join("data.tar.gz"), &root);
    let init = std::fs::read_to_string(root.join("etc/init.d/glimpse")).unwrap();
    assert!(init.starts_with("#!/bin/sh /etc/rc.common") && init.contains("config --from-uci"), "{init}");
    let script = root.join("usr/libexec/glimpse-dhcp-fingerprint");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&script).unwrap().permissions());
    assert_eq!(mode & 0o111, 0o111, "dnsmasq runs the DHCP fingerprint script");

    // What the init script runs at start, with the packaged agent and UCI file.
    let agent = root.join("usr/bin/glimpse-agent");
    let uci = root.join("etc/config/glimpse");
    let toml = dir.path().join("var/etc/glimpse/agent.toml");
    std::fs::create_dir_all(toml.parent().unwrap()).unwrap();
    run(Command::new(&agent).arg("config").arg("--from-uci").arg(&uci).arg("--out").arg(&toml));
    let config = glimpse_agent::AgentConfig::load(&toml).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.identity.to_string(), "acme/ap-1 (ap)");
    assert_eq!(config.collectors.iter().map(ToString::to_string).collect::<Vec<_>>(), ["collector.example:7443"]);
    assert_eq!(config.spool.path.as_deref(), Some(Path::new("/var/lib/glimpse-agent/spool")));

    // `uci set glimpse.device.kind=...; uci commit` with a mistake: refused
    // with 78, every problem named, and the running agent.toml untouched.
    let before = std::fs::read_to_string(&toml).unwrap();
    let broken = std::fs::read_to_string(&uci)
        .unwrap()
        .replace("option kind 'ap'", "option kind 'fridge'\n\toption colour 'blue'");
    std::fs::write(&uci, broken).unwrap();
    let out = Command::new(&agent).arg("config").arg("--from-uci").arg(&uci).arg("--out").arg(&toml).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("colour"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&toml).unwrap(), before);
    let broken = std::fs::read_to_string(&uci).unwrap().replace("\toption colour 'blue'\n", "");
    std::fs::write(&uci, broken).unwrap();
    let out = Command::new(&agent).arg("config").arg("--from-uci").arg(&uci).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("device.kind"), "the agent's own loader names the bad kind: {stderr}");
}
