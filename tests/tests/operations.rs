//! Issue 18, item 6: what an operator expects of every program. `check
//! --config` reporting every problem at once (exit 78), JSON logs and no
//! colour codes off a terminal, `--version` with build information, and no
//! panic when stdout is a closed pipe. Against the real programs.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use glimpse_tests::*;

const AGENT: &str = env!("CARGO_BIN_EXE_agent-under-test");
const COLLECTOR: &str = env!("CARGO_BIN_EXE_collector-under-test");
const CERTS: &str = env!("CARGO_BIN_EXE_certs-under-test");

/// A collector config in `dir` for our PKI, with a fresh master key; the
/// data directory does not exist yet.
fn good_config(dir: &Path) -> PathBuf {
    let master = dir.join("master.key");
    glimpse_store::keys::MasterKey::generate_file(&master).unwrap();
    let config = dir.join("collector.toml");
    std::fs::write(&config, collector_toml(&dir.join("data"), &master, free_port())).unwrap();
    config
}

fn check(config: &Path) -> Output {
    Command::new(COLLECTOR).arg("check").arg("--config").arg(config).output().expect("run check")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn check_accepts_a_good_config_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = good_config(dir.path());
    let out = check(&config);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "stdout: {stdout}\nstderr: {}", text(&out.stderr));
    for needle in ["ok    TLS key matches the certificate", "ok    master key", "ok    PKI records", "listen addresses"]
    {
        assert!(stdout.contains(needle), "{needle} missing: {stdout}");
    }
    assert!(stdout.contains("data directory") && stdout.contains("does not exist yet"), "{stdout}");
    assert!(!dir.path().join("data").exists(), "check created the data directory");
    assert!(stdout.contains("SSH host key") && !dir.path().join("data/ssh_host_ed25519_key").exists());
}

#[test]
fn check_reports_every_problem_at_once_with_exit_78() {
    let dir = tempfile::tempdir().unwrap();
    let pki = &pki().ours;
    // A key open to others, a CA that is not there, a CRL that is no PEM,
    // no master key, a data "directory" that is a file, and the admin port
    // on the agents' port.
    let loose_key = dir.path().join("collector.key");
    std::fs::copy(glimpse_certs::collector_key_path(pki), &loose_key).unwrap();
    std::fs::set_permissions(&loose_key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let bad_crl = dir.path().join("crl.pem");
    std::fs::write(&bad_crl, "-----BEGIN X509 CRL-----\nnot base64\n-----END X509 CRL-----\n").unwrap();
    let data_file = dir.path().join("data");
    std::fs::write(&data_file, "not a directory").unwrap();
    let port = free_port();
    let text_config = collector_toml(&data_file, &dir.path().join("missing-master.key"), port)
        .replace(&format!("{:?}", glimpse_certs::collector_key_path(pki)), &format!("{loose_key:?}"))
        .replace(&format!("{:?}", glimpse_certs::ca_cert_path(pki)), &format!("{:?}", dir.path().join("no-ca.pem")))
        .replace(&format!("{:?}", glimpse_certs::ca_crl_path(pki)), &format!("{bad_crl:?}"))
        .replace("[admin]\nlisten = \"127.0.0.1:0\"", &format!("[admin]\nlisten = \"0.0.0.0:{port}\""));
    let config = dir.path().join("collector.toml");
    std::fs::write(&config, text_config).unwrap();
    let out = check(&config);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "stderr: {stderr}");
    // The SSH host key, under the data "directory", is the seventh.
    assert!(stderr.contains("7 problem(s)"), "{stderr}");
    for needle in [
        "TLS CA",
        "no-ca.pem",
        "TLS key",
        "chmod 600",
        "CRL",
        "master key",
        "missing-master.key",
        "data directory",
        "not a directory",
        "admin.listen",
    ] {
        assert!(stderr.contains(needle), "{needle} missing: {stderr}");
    }

    // A config that does not parse: every problem of the file, still 78.
    std::fs::write(&config, "listen = \"nowhere\"\n").unwrap();
    let out = check(&config);
    assert_eq!(out.status.code(), Some(78), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("listen"), "{}", text(&out.stderr));
}

#[test]
fn check_finds_a_key_that_does_not_match_the_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let config = good_config(dir.path());
    // The foreign PKI's collector key, with our certificate.
    let other = private_copy(dir.path(), &glimpse_certs::collector_key_path(&pki().foreign));
    let ours = format!("{:?}", glimpse_certs::collector_key_path(&pki().ours));
    let text_config = std::fs::read_to_string(&config).unwrap().replace(&ours, &format!("{other:?}"));
    std::fs::write(&config, text_config).unwrap();
    let out = check(&config);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("TLS key matches the certificate") && stderr.contains("1 problem(s)"), "{stderr}");
}

#[test]
fn agent_check_names_every_missing_credential_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let device = issue_device("acme");
    let toml = agent_toml("127.0.0.1:9".parse().unwrap(), &device)
        .replace(&format!("{:?}", device.cert), &format!("{:?}", dir.path().join("no-cert.pem")))
        .replace(&format!("{:?}", device.shared_key), &format!("{:?}", dir.path().join("no-key.psk")));
    let config = dir.path().join("agent.toml");
    std::fs::write(&config, toml).unwrap();
    let out = Command::new(AGENT).arg("check").arg("--config").arg(&config).output().unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("no-cert.pem") && stderr.contains("no-key.psk"), "{stderr}");
}

/// Every stderr line a JSON object with a level and a message.
fn assert_json_lines(stderr: &str) -> Vec<serde_json::Value> {
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}")))
        .collect();
    assert!(!lines.is_empty(), "no log lines");
    for line in &lines {
        assert!(line["level"].is_string() && line["timestamp"].is_string() && line["target"].is_string(), "{line}");
    }
    lines
}

#[test]
fn agent_logs_json_on_request_and_never_colour_off_a_terminal() {
    // An empty sysroot: the probe warns about every missing source.
    let sysroot = tempfile::tempdir().unwrap();
    let probe = |args: &[&str], env: &[(&str, &str)]| {
        let mut cmd = Command::new(AGENT);
        cmd.args(args)
            .arg("probe")
            .arg("--sysroot")
            .arg(sysroot.path())
            .env_remove("RUST_LOG")
            .env_remove("GLIMPSE_LOG");
        cmd.envs(env.iter().copied()).output().expect("run agent")
    };
    let out = probe(&["--log-format", "json"], &[]);
    assert_eq!(out.status.code(), Some(0));
    let lines = assert_json_lines(&text(&out.stderr));
    assert!(lines.iter().any(|l| l["level"] == "WARN" && l["message"].as_str().is_some_and(|m| m.contains("unknown"))));
    // The same from the environment; GLIMPSE_LOG before RUST_LOG.
    let out = probe(&[], &[("GLIMPSE_LOG_FORMAT", "json"), ("GLIMPSE_LOG", "error"), ("RUST_LOG", "debug")]);
    assert!(out.stderr.is_empty(), "error level hides the warnings: {}", text(&out.stderr));
    let out = probe(&[], &[("RUST_LOG", "warn")]);
    let stderr = text(&out.stderr);
    assert!(stderr.contains("WARN") && !stderr.contains('\u{1b}'), "{stderr:?}");
    // A bad level on the command line is bad usage.
    let out = probe(&["--log-level", "loud"], &[]);
    assert_eq!(out.status.code(), Some(64), "{}", text(&out.stderr));
}

#[test]
fn collector_logs_json_when_its_config_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let config = good_config(dir.path());
    let with_json =
        format!("log_format = \"json\"\nlog_level = \"info\"\n{}", std::fs::read_to_string(&config).unwrap());
    std::fs::write(&config, with_json).unwrap();
    let mut child = Command::new(COLLECTOR)
        .args(["serve", "--config"])
        .arg(&config)
        .env_remove("RUST_LOG")
        .env_remove("GLIMPSE_LOG")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("start collector");
    // Read log lines until the collector says it listens, then stop it.
    let stderr = child.stderr.take().unwrap();
    let mut seen = Vec::new();
    for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)) {
        let line = line.unwrap();
        let value: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"));
        let listening = value.to_string().contains("listening");
        seen.push(value);
        if listening {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(seen.iter().any(|v| v.to_string().contains("listening")), "{seen:?}");
    assert!(seen.iter().all(|v| v["level"].is_string()), "{seen:?}");
}

#[test]
fn every_program_prints_its_build_on_version() {
    for (program, name) in [(COLLECTOR, "glimpse-collector"), (AGENT, "glimpse-agent"), (CERTS, "glimpse-certs")] {
        let out = Command::new(program).arg("--version").output().unwrap();
        let stdout = text(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{program}");
        assert!(stdout.starts_with(&format!("{name} {}", env!("CARGO_PKG_VERSION"))), "{stdout}");
        for field in ["commit:", "target:  ", "profile: ", "rustc:   rustc "] {
            assert!(stdout.contains(field), "{field} missing from {name}: {stdout}");
        }
        let short = text(&Command::new(program).arg("-V").output().unwrap().stdout);
        assert_eq!(short.trim(), format!("{name} {}", env!("CARGO_PKG_VERSION")));
    }
}

/// Runs `program args` with stdout a pipe whose reader is already closed,
/// as `program args | head -0` would leave it.
fn into_closed_pipe(program: &str, args: &[&str]) -> Output {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    Command::new(program).args(args).stdout(writer).stderr(Stdio::piped()).output().unwrap()
}

#[test]
fn a_closed_stdout_is_no_panic() {
    let sysroot = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = good_config(dir.path());
    let pki = pki().ours.display().to_string();
    let sysroot = sysroot.path().display().to_string();
    let config = config.display().to_string();
    for (program, args) in [
        (AGENT, vec!["probe", "--sysroot", &sysroot]),
        (AGENT, vec!["--help"]),
        (COLLECTOR, vec!["check", "--config", &config]),
        (COLLECTOR, vec!["--help"]),
        (CERTS, vec!["list", "--dir", &pki]),
    ] {
        let out = into_closed_pipe(program, &args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{program} {args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{program} {args:?}: {stderr}");
    }
}
