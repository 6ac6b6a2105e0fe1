//! Issue 17, item 6: one permission rule for every private file and data
//! directory the agent and the collector read, with the same refusal (the
//! file, the mode found, the `chmod` to run) and exit code 77 (EX_NOPERM).
//! Against the real programs.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use glimpse_tests::*;

const AGENT: &str = env!("CARGO_BIN_EXE_agent-under-test");
const COLLECTOR: &str = env!("CARGO_BIN_EXE_collector-under-test");

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Runs `program args --config config` to its end (it must refuse at start).
fn run(program: &str, args: &[&str], config: &Path) -> Output {
    Command::new(program).args(args).arg("--config").arg(config).output().expect("run program")
}

/// The program refused with 77 and a message naming `path`, its mode and the fix.
fn assert_refused(output: &Output, path: &Path, mode: &str, fix: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(77), "exit code; stderr: {stderr}");
    let path = path.display().to_string();
    assert!(stderr.contains(&format!("{path} has mode {mode}")), "{stderr}");
    assert!(stderr.contains(&format!("{fix} {path}")), "{stderr}");
}

/// A collector config in `dir` for our PKI, with its TLS key at `key`.
fn collector_config(dir: &Path, data: &Path, key: &Path) -> std::path::PathBuf {
    let master = dir.join("master.key");
    glimpse_store::keys::MasterKey::generate_file(&master).unwrap();
    let pki = &pki().ours;
    let text = collector_toml(data, &master, free_port())
        .replace(&format!("{:?}", glimpse_certs::collector_key_path(pki)), &format!("{key:?}"));
    let config = dir.join("collector.toml");
    std::fs::write(&config, text).unwrap();
    config
}

#[test]
fn a_collector_tls_key_others_can_read_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("collector.key");
    std::fs::copy(glimpse_certs::collector_key_path(&pki().ours), &key).unwrap();
    chmod(&key, 0o644);
    let config = collector_config(dir.path(), &dir.path().join("data"), &key);
    assert_refused(&run(COLLECTOR, &["serve"], &config), &key, "0644", "chmod 600");
    // At 0600 the same key is what every other test's collector serves with.
}

#[test]
fn a_data_directory_others_can_write_is_refused_by_serve_and_the_offline_commands() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    chmod(&data, 0o777);
    let config = collector_config(dir.path(), &data, &glimpse_certs::collector_key_path(&pki().ours));
    assert_refused(&run(COLLECTOR, &["serve"], &config), &data, "0777", "chmod go-w");
    assert_refused(&run(COLLECTOR, &["sweep"], &config), &data, "0777", "chmod go-w");
}

#[test]
fn an_agent_key_or_shared_key_others_can_read_is_refused() {
    let device = issue_device("permorg");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent.toml");
    std::fs::write(&config, agent_toml("127.0.0.1:9".parse().unwrap(), &device)).unwrap();
    chmod(&device.key, 0o644);
    assert_refused(&run(AGENT, &["run"], &config), &device.key, "0644", "chmod 600");
    assert_refused(&run(AGENT, &["check"], &config), &device.key, "0644", "chmod 600");
    chmod(&device.key, 0o600);
    chmod(&device.shared_key, 0o640);
    assert_refused(&run(AGENT, &["run"], &config), &device.shared_key, "0640", "chmod 600");
    chmod(&device.shared_key, 0o600);
    let checked = run(AGENT, &["check"], &config);
    assert!(checked.status.success(), "{}", String::from_utf8_lossy(&checked.stderr));
}

#[test]
fn a_switch_ssh_key_others_can_read_is_refused() {
    let device = issue_ssh_device("permorg", glimpse_common::identity::DeviceKind::Switch);
    let key = device.ssh_key.clone().expect("a switch has an SSH key");
    let dir = tempfile::tempdir().unwrap();
    let mut text = agent_toml("127.0.0.1:9".parse().unwrap(), &device);
    // Over SSH: the [tls] section gives way to [ssh].
    let tls_start = text.find("[tls]").unwrap();
    let tls_end = text[tls_start..].find("[collect]").unwrap() + tls_start;
    text.replace_range(
        tls_start..tls_end,
        &format!(
            "[ssh]\nkey = {key:?}\nhost_key_fingerprint = \"SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"\n"
        ),
    );
    let text = text.replace("server_name = \"localhost\"\n", "transport = \"ssh\"\n");
    let config = dir.path().join("agent.toml");
    std::fs::write(&config, text).unwrap();
    chmod(&key, 0o644);
    assert_refused(&run(AGENT, &["check"], &config), &key, "0644", "chmod 600");
    chmod(&key, 0o600);
    let checked = run(AGENT, &["check"], &config);
    assert!(checked.status.success(), "{}", String::from_utf8_lossy(&checked.stderr));
}

#[test]
fn what_glimpse_certs_writes_passes_the_rule() {
    let device = issue_ssh_device("permorg", glimpse_common::identity::DeviceKind::Gateway);
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    for secret in [device.key.clone(), device.shared_key.clone(), device.ssh_key.clone().unwrap()] {
        assert_eq!(mode(&secret), 0o600, "{}", secret.display());
    }
    assert_eq!(mode(&glimpse_certs::collector_key_path(&pki().ours)), 0o600);
}
