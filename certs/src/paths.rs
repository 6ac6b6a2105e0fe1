//! Where each file lives in a PKI directory (see the crate documentation).
//!
//! Every name used as a path component has been validated by
//! [`glimpse_common::identity`], which admits no `/` and no leading dot.

use std::path::{Path, PathBuf};

use glimpse_common::identity::{AdminName, DeviceId, OrgId};

/// The root CA certificate, `ca.pem`.
pub fn ca_cert_path(dir: &Path) -> PathBuf {
    dir.join("ca.pem")
}

/// The root CA's RSA-4096 private key, `ca.key`.
pub fn ca_key_path(dir: &Path) -> PathBuf {
    dir.join("ca.key")
}

/// The CA's revocation list, `ca.crl.pem`.
pub fn ca_crl_path(dir: &Path) -> PathBuf {
    dir.join("ca.crl.pem")
}

/// The list of revoked devices, `revoked.json`.
pub fn revoked_path(dir: &Path) -> PathBuf {
    dir.join("revoked.json")
}

/// The collector's server certificate, `collector.pem`.
pub fn collector_cert_path(dir: &Path) -> PathBuf {
    dir.join("collector.pem")
}

/// The collector's private key, `collector.key`.
pub fn collector_key_path(dir: &Path) -> PathBuf {
    dir.join("collector.key")
}

/// A device's directory, `devices/<org>/<device>/`.
pub fn device_dir(dir: &Path, org: &OrgId, device: &DeviceId) -> PathBuf {
    dir.join("devices").join(org.as_str()).join(device.as_str())
}

/// The registrations directory, `registrations/`.
pub fn registrations_dir(dir: &Path) -> PathBuf {
    dir.join("registrations")
}

/// A device's manufacturing record, `registrations/<org>/<device>.json`.
pub fn registration_path(dir: &Path, org: &OrgId, device: &DeviceId) -> PathBuf {
    registrations_dir(dir).join(org.as_str()).join(format!("{device}.json"))
}

/// Every admin certificate issued, `admins.json`.
pub fn admins_path(dir: &Path) -> PathBuf {
    dir.join("admins.json")
}

/// An admin's directory, `admins/<name>/`.
pub fn admin_dir(dir: &Path, name: &AdminName) -> PathBuf {
    dir.join("admins").join(name.as_str())
}
