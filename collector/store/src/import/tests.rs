//! The registration import against a real store: what it audits, what a
//! reload changes, what a damaged record does; and (ignored, run in
//! release mode) how long 10,000 new devices take.

use std::path::Path;
use std::sync::Arc;

use glimpse_common::clock::ManualClock;
use glimpse_common::identity::{DeviceId, DeviceKind, OrgId};
use glimpse_common::registration::{Registration, SharedKey};
use glimpse_common::secret::SecretKey;

use super::*;
use crate::audit::AuditEntry;

const NOW: i64 = 1_780_000_000_000;

/// A registration as `glimpse-certs device` writes it; switches carry an SSH key.
fn registration(org: &str, device: &str, kind: DeviceKind, serial: &str) -> Registration {
    let ssh_public_key =
        (kind != DeviceKind::Ap).then(|| glimpse_common::ssh_keys::generate_ed25519(device).unwrap().public_openssh);
    let mut key = [0u8; 32];
    key[..device.len().min(32)].copy_from_slice(&device.as_bytes()[..device.len().min(32)]);
    Registration {
        org: OrgId::new(org).unwrap(),
        device: DeviceId::new(device).unwrap(),
        kind,
        shared_key: SharedKey::new(SecretKey::from_bytes(key)),
        cert_serial: serial.to_owned(),
        cert_sha256: "ab".repeat(32),
        not_after: time::OffsetDateTime::from_unix_timestamp(2_050_000_000).unwrap(),
        ssh_public_key,
        site: None,
    }
}

/// Files `reg` where `glimpse-certs` does.
fn write(pki: &Path, reg: &Registration) {
    let dir = pki.join("registrations").join(reg.org.as_str());
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{}.json", reg.device)), reg.to_json().unwrap().as_slice()).unwrap();
}

fn pki_dir() -> tempfile::TempDir {
    let pki = tempfile::tempdir().unwrap();
    std::fs::write(pki.path().join("revoked.json"), "[]\n").unwrap();
    pki
}

fn store(dir: &Path) -> Store {
    Store::open(dir, crate::keys::test_master(1), Arc::new(ManualClock::new(NOW)), Default::default()).unwrap()
}

/// Every audit entry, as (action, org, detail).
fn audited(store: &Store) -> Vec<(String, Option<String>, String)> {
    let entries: Vec<AuditEntry> = store.audit().entries(None, 0, usize::MAX).unwrap();
    entries.into_iter().map(|e| (e.action, e.org, e.detail)).collect()
}

#[test]
fn new_devices_are_audited_one_entry_each_in_registration_order_and_a_reload_audits_only_changes() {
    let pki = pki_dir();
    let data = tempfile::tempdir().unwrap();
    let regs = [
        registration("acme", "ap-1", DeviceKind::Ap, "0a"),
        registration("acme", "sw-1", DeviceKind::Switch, "0b"),
        registration("beta", "gw-1", DeviceKind::Gateway, "0c"),
    ];
    for reg in &regs {
        write(pki.path(), reg);
    }
    let store = store(data.path());
    assert_eq!(import_registrations(&store, pki.path()).unwrap(), (3, 0));

    let fingerprint = |reg: &Registration| glimpse_common::ssh_keys::fingerprint(&reg.ssh_key().unwrap().unwrap());
    let entry = |action: &str, org: &str, detail: String| (action.to_owned(), Some(org.to_owned()), detail);
    let mut expected = vec![
        entry("device.register", "acme", "acme/ap-1 (ap) certificate serial 0a".into()),
        entry("device.register", "acme", format!("acme/sw-1 (switch) SSH key {}", fingerprint(&regs[1]))),
        entry("device.register", "acme", "acme/sw-1 (switch) certificate serial 0b".into()),
        entry("device.register", "beta", format!("beta/gw-1 (gateway) SSH key {}", fingerprint(&regs[2]))),
        entry("device.register", "beta", "beta/gw-1 (gateway) certificate serial 0c".into()),
    ];
    assert_eq!(audited(&store), expected);
    let registry = store.registry();
    let sw = (OrgId::new("acme").unwrap(), DeviceId::new("sw-1").unwrap());
    assert_eq!(registry.ssh_key(&sw.0, &sw.1).unwrap(), regs[1].ssh_public_key);
    assert_eq!(registry.ssh_key(&OrgId::new("acme").unwrap(), &DeviceId::new("ap-1").unwrap()).unwrap(), None);

    // Nothing changed: nothing is audited again.
    assert_eq!(import_registrations(&store, pki.path()).unwrap(), (3, 0));
    assert_eq!(audited(&store), expected);

    // One device re-keyed, one revoked: exactly those.
    let rekeyed = registration("acme", "sw-1", DeviceKind::Switch, "0b");
    write(pki.path(), &rekeyed);
    std::fs::write(
        pki.path().join("revoked.json"),
        r#"[{"org":"beta","device":"gw-1","serial":"0c","revoked_at":"2026-01-01T00:00:00Z"}]"#,
    )
    .unwrap();
    assert_eq!(import_registrations(&store, pki.path()).unwrap(), (3, 1));
    expected.push(entry("device.register", "acme", format!("acme/sw-1 (switch) SSH key {}", fingerprint(&rekeyed))));
    expected.push(entry("device.revoke", "beta", "beta/gw-1 (gateway) certificate serial 0c".into()));
    assert_eq!(audited(&store), expected);
    assert_eq!(registry.ssh_key(&sw.0, &sw.1).unwrap(), rekeyed.ssh_public_key);
    assert_eq!(store.audit().verify().unwrap().entries, expected.len() as u64);
}

#[test]
fn a_damaged_record_stops_the_import_naming_its_file_and_writes_nothing() {
    let pki = pki_dir();
    let data = tempfile::tempdir().unwrap();
    write(pki.path(), &registration("acme", "sw-1", DeviceKind::Switch, "0b"));
    let damaged = pki.path().join("registrations/acme/sw-2.json");
    std::fs::write(&damaged, "{\"org\":\"acme\"").unwrap();
    let store = store(data.path());
    let err = import_registrations(&store, pki.path()).unwrap_err();
    assert!(err.to_string().contains(&damaged.display().to_string()), "{err}");
    assert_eq!(audited(&store), Vec::new());
    assert_eq!(store.registry().ssh_key(&OrgId::new("acme").unwrap(), &DeviceId::new("sw-1").unwrap()).unwrap(), None);
}

/// The figure in docs/PERFORMANCE.md ("Registration import"):
/// `cargo test --release -p glimpse-store --lib import::tests::timed -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement, run in release mode"]
fn timed_import_of_10000_new_switches() {
    const DEVICES: usize = 10_000;
    let pki = pki_dir();
    let data = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    for i in 0..DEVICES {
        let org = format!("org-{}", i % 10);
        write(pki.path(), &registration(&org, &format!("sw-{i:05}"), DeviceKind::Switch, &format!("{i:x}")));
    }
    eprintln!("wrote {DEVICES} registrations in {:?}", started.elapsed());
    let store = store(data.path());
    let started = std::time::Instant::now();
    assert_eq!(import_registrations(&store, pki.path()).unwrap(), (DEVICES, 0));
    eprintln!("first import of {DEVICES} new switches: {:?}", started.elapsed());
    let started = std::time::Instant::now();
    assert_eq!(import_registrations(&store, pki.path()).unwrap(), (DEVICES, 0));
    eprintln!("reload with nothing changed: {:?}", started.elapsed());
    assert_eq!(store.audit().verify().unwrap().entries, 2 * DEVICES as u64);
}
