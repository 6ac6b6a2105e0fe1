//! The `glimpse-certs` program as an operator runs it: the collector's
//! certificate is valid for a year, lifetimes are set in days, and a
//! certificate that would already be expired is refused with a clear word
//! (or issued with a warning when asked for on purpose).

use std::process::{Command, Output};

use glimpse_tests::*;

const CERTS: &str = env!("CARGO_BIN_EXE_certs-under-test");
const ORG: &str = "certsorg";

fn run(args: &[&str]) -> Output {
    let _guard = pki().lock();
    Command::new(CERTS).args(args).env("GLIMPSE_LOG", "warn").output().expect("glimpse-certs runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Validity of the PEM certificate at `path`, in days.
fn validity_days(path: &std::path::Path) -> i64 {
    let der = glimpse_files::load_certs(path).expect("certificate").remove(0);
    let cert = glimpse_common::certificate::parse_certificate(der.as_ref()).expect("parses");
    (cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp()) / 86_400
}

fn device_args<'a>(dir: &'a str, device: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["device", "--dir", dir, "--org", ORG, "--device", device, "--kind", "ap"];
    args.extend_from_slice(extra);
    args
}

#[test]
fn the_collector_certificate_is_valid_for_a_year() {
    // Made by `init` with its defaults, as every test PKI is.
    assert_eq!(validity_days(&glimpse_certs::collector_cert_path(&pki().ours)), 365);
    // A lifetime of 0 days is refused before anything is generated.
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("pki");
    let output = run(&["init", "--dir", target.to_str().unwrap(), "--collector-days", "0"]);
    assert_eq!(output.status.code(), Some(64), "{}", stderr(&output));
    assert!(!target.exists(), "nothing created");
}

#[test]
fn an_already_expired_certificate_is_refused_unless_asked_for() {
    let dir = pki().ours.to_str().unwrap().to_owned();
    let past = "2020-01-01T00:00:00Z";

    let refused = unique_device("expired");
    let output = run(&device_args(&dir, refused.as_str(), &["--not-after", past]));
    assert_eq!(output.status.code(), Some(64), "{}", stderr(&output));
    assert!(stderr(&output).contains("would already be expired"), "{}", stderr(&output));
    let id = glimpse_common::identity::OrgId::new(ORG).unwrap();
    assert!(!glimpse_certs::registration_path(&pki().ours, &id, &refused).exists(), "nothing issued");

    let zero = unique_device("zero-days");
    let output = run(&device_args(&dir, zero.as_str(), &["--days", "0"]));
    assert_eq!(output.status.code(), Some(64), "{}", stderr(&output));

    let on_purpose = unique_device("expired-on-purpose");
    let output = run(&device_args(&dir, on_purpose.as_str(), &["--not-after", past, "--allow-expired"]));
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stderr(&output).contains("already expired"), "a warning: {}", stderr(&output));
}

#[test]
fn lifetimes_are_given_in_days_and_a_future_start_is_warned_about() {
    let dir = pki().ours.to_str().unwrap().to_owned();
    let month = unique_device("thirty-days");
    let output = run(&device_args(&dir, month.as_str(), &["--days", "30"]));
    assert!(output.status.success(), "{}", stderr(&output));
    let org = glimpse_common::identity::OrgId::new(ORG).unwrap();
    let cert = glimpse_certs::device_dir(&pki().ours, &org, &month).join("device.pem");
    assert_eq!(validity_days(&cert), 30);

    let later = unique_device("not-yet");
    let start = (time::OffsetDateTime::now_utc() + time::Duration::days(3))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let output = run(&device_args(&dir, later.as_str(), &["--not-before", &start, "--days", "10"]));
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stderr(&output).contains("not valid yet"), "a warning: {}", stderr(&output));
    assert_eq!(validity_days(&glimpse_certs::device_dir(&pki().ours, &org, &later).join("device.pem")), 10);

    // --days and --not-after together are a usage error.
    let both = unique_device("both");
    let output = run(&device_args(&dir, both.as_str(), &["--days", "10", "--not-after", "2040-01-01T00:00:00Z"]));
    assert_eq!(output.status.code(), Some(64), "{}", stderr(&output));
}

#[test]
fn each_kind_of_failure_has_its_exit_code() {
    let empty = tempfile::tempdir().unwrap();
    let empty = empty.path().to_str().unwrap().to_owned();
    let output = run(&device_args(&empty, "no-ca", &[]));
    assert_eq!(output.status.code(), Some(78), "no CA is a configuration error: {}", stderr(&output));
    assert!(stderr(&output).contains("glimpse-certs init"), "{}", stderr(&output));

    let dir = pki().ours.to_str().unwrap().to_owned();
    let output = run(&["revoke", "--dir", &dir, "--org", ORG, "--device", "never-issued"]);
    assert_eq!(output.status.code(), Some(65), "an unknown device is bad input data: {}", stderr(&output));

    let twice = unique_device("twice");
    let first = run(&device_args(&dir, twice.as_str(), &[]));
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    let second = run(&device_args(&dir, twice.as_str(), &[]));
    assert_eq!(second.status.code(), Some(73), "an existing file is not overwritten: {}", stderr(&second));
    assert!(stderr(&second).contains("--force"), "{}", stderr(&second));

    let output = run(&["device", "--dir", &dir, "--org", ORG, "--device", "ap-1", "--kind", "toaster"]);
    assert_eq!(output.status.code(), Some(64), "{}", stderr(&output));
}

#[test]
fn admins_are_listed_and_revoked_from_the_command_line() {
    let dir = pki().ours.to_str().unwrap().to_owned();
    let name = format!("leaver-{}", unique_device("x"));
    let issued = run(&["admin", "--dir", &dir, "--name", &name, "--role", "support", "--org", ORG]);
    assert!(issued.status.success(), "{}", stderr(&issued));

    let listed = run(&["list-admins", "--dir", &dir]);
    assert!(listed.status.success(), "{}", stderr(&listed));
    let stdout = String::from_utf8_lossy(&listed.stdout).into_owned();
    let line = stdout.lines().find(|l| l.starts_with(&name)).unwrap_or_else(|| panic!("{stdout}"));
    assert!(line.contains("support") && line.contains(ORG) && line.contains("active"), "{line}");

    let revoked = run(&["revoke-admin", "--dir", &dir, "--name", &name]);
    assert!(revoked.status.success(), "{}", stderr(&revoked));
    assert!(String::from_utf8_lossy(&revoked.stdout).contains("revoked support certificate"));
    let listed = String::from_utf8_lossy(&run(&["list-admins", "--dir", &dir]).stdout).into_owned();
    assert!(listed.lines().any(|l| l.starts_with(&name) && l.contains("revoked")), "{listed}");

    // Again, or someone unknown: bad data (65); neither flag: bad usage (64).
    assert_eq!(run(&["revoke-admin", "--dir", &dir, "--name", &name]).status.code(), Some(65));
    assert_eq!(run(&["revoke-admin", "--dir", &dir, "--serial", "0abc"]).status.code(), Some(65));
    assert_eq!(run(&["revoke-admin", "--dir", &dir]).status.code(), Some(64));
}
