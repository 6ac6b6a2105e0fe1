//! The JSON records in a PKI directory: a device's manufacturing record
//! (`registrations/<org>/<device>.json`) and the revocation list
//! (`revoked.json`).

use std::fmt;
use std::fs;
use std::io;
use std::path::Path;

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};
use time::OffsetDateTime;
use zeroize::{Zeroize, Zeroizing};

use glimpse_common::identity::{DeviceId, DeviceIdentity, DeviceKind, OrgId};
use glimpse_common::secret::SecretKey;

use crate::fsio;
use crate::paths::{registrations_dir, revoked_path};
use crate::CertsError;

/// RFC 3339 timestamps, without needing `time`'s serde feature.
pub(crate) mod rfc3339 {
    use serde::{de, Deserialize, Deserializer, Serializer};
    use time::format_description::well_known::Rfc3339;
    use time::OffsetDateTime;

    pub(crate) fn serialize<S: Serializer>(t: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
        let text = t.format(&Rfc3339).map_err(serde::ser::Error::custom)?;
        s.serialize_str(&text)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<OffsetDateTime, D::Error> {
        let text = glimpse_common::bounded::BoundedString::<64>::deserialize(d)?;
        OffsetDateTime::parse(text.as_str(), &Rfc3339).map_err(de::Error::custom)
    }
}

/// A per-device shared key as it appears in a registration: 64 hex digits on
/// disk, a [`SecretKey`] in memory, `[redacted]` in `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct SharedKey(SecretKey);

impl SharedKey {
    /// Wraps a key.
    pub fn new(key: SecretKey) -> Self {
        Self(key)
    }

    /// The key.
    pub fn expose(&self) -> &SecretKey {
        &self.0
    }
}

impl fmt::Debug for SharedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SharedKey([redacted])")
    }
}

impl Serialize for SharedKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0.to_hex())
    }
}

impl<'de> Deserialize<'de> for SharedKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct HexKey;
        impl de::Visitor<'_> for HexKey {
            type Value = SharedKey;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a 256-bit key as 64 hex digits")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<SharedKey, E> {
                SecretKey::from_hex(v).map(SharedKey).map_err(E::custom)
            }
            fn visit_string<E: de::Error>(self, mut v: String) -> Result<SharedKey, E> {
                let key = self.visit_str(&v);
                v.zeroize();
                key
            }
        }
        deserializer.deserialize_str(HexKey)
    }
}

/// A device's manufacturing record, `registrations/<org>/<device>.json`: what
/// the collector imports to know a device and its shared key.
///
/// ```json
/// {"org":"acme","device":"ap-1","kind":"ap","shared_key":"<64 hex>",
///  "cert_serial":"<hex>","cert_sha256":"<64 hex>","not_after":"2035-01-01T00:00:00Z"}
/// ```
///
/// `Debug` never prints the shared key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    /// The owning organisation.
    pub org: OrgId,
    /// The device's id.
    pub device: DeviceId,
    /// What the device is.
    pub kind: DeviceKind,
    /// The device's 256-bit shared key (64 hex digits in the file).
    pub shared_key: SharedKey,
    /// The device certificate's serial number, lowercase hex (see [`crate::serial_hex_of`]).
    pub cert_serial: String,
    /// SHA-256 of the device certificate's DER, lowercase hex.
    pub cert_sha256: String,
    /// When the device certificate expires.
    #[serde(with = "rfc3339")]
    pub not_after: OffsetDateTime,
    /// The OpenSSH public key a switch or gateway authenticates with on the
    /// collector's SSH port (`ssh-ed25519 AAAA…`); absent for access points.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_public_key: Option<String>,
}

impl Registration {
    /// The device's shared key.
    ///
    /// The key was validated when the record was parsed, so this does not
    /// fail today; the `Result` leaves room for encrypted records.
    pub fn shared_key(&self) -> Result<SecretKey, CertsError> {
        Ok(self.shared_key.expose().clone())
    }

    /// The device's SSH public key, parsed and checked, if it has one.
    pub fn ssh_key(&self) -> Result<Option<russh::keys::PublicKey>, CertsError> {
        self.ssh_public_key.as_deref().map(crate::ssh::parse_device_public_key).transpose()
    }

    /// The device identity the record describes.
    pub fn identity(&self) -> DeviceIdentity {
        DeviceIdentity { org: self.org.clone(), device: self.device.clone(), kind: self.kind }
    }

    /// The record as pretty JSON with a trailing newline, in a buffer wiped on drop.
    pub(crate) fn to_json(&self, path: &Path) -> Result<Zeroizing<Vec<u8>>, CertsError> {
        // Pre-sized so that growing never leaves an unwiped copy of the key.
        let mut out = Zeroizing::new(Vec::with_capacity(1024));
        serde_json::to_writer_pretty(&mut *out, self)
            .map_err(|source| CertsError::Json { path: path.to_path_buf(), source })?;
        out.push(b'\n');
        Ok(out)
    }
}

impl fmt::Debug for Registration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registration")
            .field("org", &self.org)
            .field("device", &self.device)
            .field("kind", &self.kind)
            .field("shared_key", &self.shared_key)
            .field("cert_serial", &self.cert_serial)
            .field("cert_sha256", &self.cert_sha256)
            .field("not_after", &self.not_after)
            .field("ssh_public_key", &self.ssh_public_key)
            .finish()
    }
}

/// Reads one registration file.
pub(crate) fn read_registration(path: &Path) -> Result<Registration, CertsError> {
    let text = fsio::read_secret(path)?;
    let registration: Registration =
        serde_json::from_str(&text).map_err(|source| CertsError::Json { path: path.to_path_buf(), source })?;
    // A key the collector could not use is reported here, naming the file,
    // not at the first connection attempt.
    if let Err(CertsError::SshKey { reason }) = registration.ssh_key() {
        return Err(CertsError::SshKey { reason: format!("{}: {reason}", path.display()) });
    }
    Ok(registration)
}

/// Reads every `registrations/<org>/<device>.json`, sorted by organisation
/// then device. A directory with no registrations yet gives an empty list.
///
/// Hidden files (an interrupted `--force` write leaves `.name.tmp-*`) and
/// files not ending in `.json` are skipped; a badly named directory or file,
/// a record that does not parse, or one whose contents name another device
/// than its path is an error naming the file.
pub fn load_registrations(dir: &Path) -> Result<Vec<Registration>, CertsError> {
    let root = registrations_dir(dir);
    let orgs = match fs::read_dir(&root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(CertsError::io("list", root, e)),
    };
    let mut out = Vec::new();
    for org_entry in orgs {
        let org_entry = org_entry.map_err(|e| CertsError::io("list", &root, e))?;
        let org_path = org_entry.path();
        let name = org_entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        if !org_path.is_dir() {
            tracing::warn!(path = %org_path.display(), "ignoring a file among organisation directories");
            continue;
        }
        let org = OrgId::new(name).map_err(|source| CertsError::BadRecordName { path: org_path.clone(), source })?;
        let files = fs::read_dir(&org_path).map_err(|e| CertsError::io("list", &org_path, e))?;
        for file in files {
            let file = file.map_err(|e| CertsError::io("list", &org_path, e))?;
            let path = file.path();
            let name = file.file_name().to_string_lossy().into_owned();
            let Some(stem) = name.strip_suffix(".json").filter(|_| !name.starts_with('.')) else {
                if !name.starts_with('.') {
                    tracing::warn!(path = %path.display(), "ignoring a file that is not a .json registration");
                }
                continue;
            };
            let device =
                DeviceId::new(stem).map_err(|source| CertsError::BadRecordName { path: path.clone(), source })?;
            let registration = read_registration(&path)?;
            if registration.org != org || registration.device != device {
                return Err(CertsError::RegistrationMismatch {
                    path,
                    org: registration.org,
                    device: registration.device,
                });
            }
            out.push(registration);
        }
    }
    out.sort_by(|a, b| (&a.org, &a.device).cmp(&(&b.org, &b.device)));
    Ok(out)
}

/// One revoked device certificate, an element of `revoked.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokedEntry {
    /// The device's organisation.
    pub org: OrgId,
    /// The device.
    pub device: DeviceId,
    /// The revoked certificate's serial number, lowercase hex.
    pub serial: String,
    /// When it was revoked.
    #[serde(with = "rfc3339")]
    pub revoked_at: OffsetDateTime,
}

/// Reads `revoked.json`, oldest revocation first. `init` always writes it, so
/// a missing file is an error.
pub fn load_revoked(dir: &Path) -> Result<Vec<RevokedEntry>, CertsError> {
    let path = revoked_path(dir);
    let text = fsio::read_text(&path)?;
    serde_json::from_str(&text).map_err(|source| CertsError::Json { path, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Registration {
        Registration {
            org: OrgId::new("acme").unwrap(),
            device: DeviceId::new("ap-1").unwrap(),
            kind: DeviceKind::Ap,
            shared_key: SharedKey::new(SecretKey::from_bytes([0xab; 32])),
            cert_serial: "01".into(),
            cert_sha256: "00".repeat(32),
            not_after: time::macros::datetime!(2035-01-01 0:00 UTC),
            ssh_public_key: None,
        }
    }

    #[test]
    fn registration_round_trips_and_debug_redacts() {
        let reg = sample();
        let json = reg.to_json(Path::new("x")).unwrap();
        let text = std::str::from_utf8(&json).unwrap();
        assert!(text.contains(&"ab".repeat(32)));
        assert!(text.contains("\"not_after\": \"2035-01-01T00:00:00Z\""));
        let back: Registration = serde_json::from_str(text).unwrap();
        assert_eq!(back, reg);
        assert_eq!(back.shared_key().unwrap(), SecretKey::from_bytes([0xab; 32]));
        let debug = format!("{reg:?}");
        assert!(!debug.contains("abab"), "{debug}");
        assert!(debug.contains("redacted"));
    }

    #[test]
    fn bad_records_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let org_dir = registrations_dir(dir.path()).join("acme");
        fs::create_dir_all(&org_dir).unwrap();
        let good = sample().to_json(Path::new("x")).unwrap();
        fs::write(org_dir.join("ap-1.json"), &*good).unwrap();
        assert_eq!(load_registrations(dir.path()).unwrap(), vec![sample()]);

        // A record filed under another device's name.
        fs::write(org_dir.join("ap-2.json"), &*good).unwrap();
        let err = load_registrations(dir.path()).unwrap_err();
        assert!(matches!(err, CertsError::RegistrationMismatch { .. }), "{err}");
        assert!(err.to_string().contains("ap-2.json"), "{err}");

        // A short key.
        let text = std::str::from_utf8(&good).unwrap().replace(&"ab".repeat(32), "abcd");
        fs::write(org_dir.join("ap-2.json"), text).unwrap();
        let err = load_registrations(dir.path()).unwrap_err();
        assert!(err.to_string().contains("ap-2.json"), "{err}");

        // Not JSON at all.
        fs::write(org_dir.join("ap-2.json"), "{").unwrap();
        let err = load_registrations(dir.path()).unwrap_err();
        assert!(matches!(err, CertsError::Json { .. }), "{err}");
        assert!(err.to_string().contains("ap-2.json"), "{err}");
    }

    #[test]
    fn empty_dir_has_no_registrations() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load_registrations(dir.path()).unwrap().is_empty());
    }
}
