//! The JSON records in a PKI directory that the PKI tool writes and the
//! collector imports: a device's manufacturing record
//! (`registrations/<org>/<device>.json`) and the revocation list
//! (`revoked.json`).
//!
//! Text in, records out: reading the directory is the caller's (the
//! collector's import, the PKI tool). A record is checked whole here,
//! including its SSH key and that it names the device its path names, so
//! both readers refuse the same files for the same reasons.

use std::fmt;

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};
use time::OffsetDateTime;
use zeroize::{Zeroize, Zeroizing};

use crate::identity::{DeviceId, DeviceIdentity, DeviceKind, IdentityError, OrgId, SiteId};
use crate::secret::SecretKey;
use crate::ssh_keys::SshKeyError;

/// A record in a PKI directory could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// Not valid JSON, or not the record's shape (a short key, an unknown field).
    #[error("invalid record: {0}")]
    Json(#[from] serde_json::Error),
    /// The record's SSH key is one the collector would refuse.
    #[error(transparent)]
    SshKey(#[from] SshKeyError),
    /// The record names another device than its path does.
    #[error("record is for {org}/{device}, not the device its path names")]
    Mismatch {
        /// The organisation in the record.
        org: OrgId,
        /// The device in the record.
        device: DeviceId,
    },
    /// A directory or file is not named after a valid organisation or device.
    #[error("not named after a valid organisation or device: {0}")]
    BadName(#[from] IdentityError),
    /// Well-formed JSON whose values break a rule (a bad serial, too many entries).
    #[error("invalid record: {0}")]
    Invalid(String),
}

/// Longest registration or revocation file read, in bytes: a registration
/// is well under 2 KiB, and a revocation list of a million devices fits.
pub const MAX_RECORD_FILE_LEN: u64 = 256 * 1024 * 1024;

/// RFC 3339 timestamps, without needing `time`'s serde feature.
pub mod rfc3339 {
    use serde::{de, Deserialize, Deserializer, Serializer};
    use time::format_description::well_known::Rfc3339;
    use time::OffsetDateTime;

    /// Writes RFC 3339.
    pub fn serialize<S: Serializer>(t: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
        let text = t.format(&Rfc3339).map_err(serde::ser::Error::custom)?;
        s.serialize_str(&text)
    }

    /// Reads RFC 3339, at most 64 bytes.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<OffsetDateTime, D::Error> {
        let text = crate::bounded::BoundedString::<64>::deserialize(d)?;
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
///  "cert_serial":"<hex>","cert_sha256":"<64 hex>","not_after":"2035-01-01T00:00:00Z",
///  "site":"berlin-hq"}
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
    /// The device certificate's serial number, lowercase hex (see [`crate::certificate::serial_hex_of`]).
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
    /// The site of the organisation the device belongs to
    /// (`glimpse-certs device --site`); absent for a device of no site.
    /// The collector takes a device's site from here, never from the
    /// device itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<SiteId>,
}

impl Registration {
    /// The device's shared key (validated when the record was parsed).
    pub fn shared_key(&self) -> SecretKey {
        self.shared_key.expose().clone()
    }

    /// The device's SSH public key, parsed and checked, if it has one.
    pub fn ssh_key(&self) -> Result<Option<ssh_key::PublicKey>, SshKeyError> {
        self.ssh_public_key.as_deref().map(crate::ssh_keys::parse_device_public_key).transpose()
    }

    /// The device identity the record describes.
    pub fn identity(&self) -> DeviceIdentity {
        DeviceIdentity { org: self.org.clone(), device: self.device.clone(), kind: self.kind }
    }

    /// The record as pretty JSON with a trailing newline, in a buffer wiped on drop.
    pub fn to_json(&self) -> Result<Zeroizing<Vec<u8>>, RecordError> {
        // Pre-sized so that growing never leaves an unwiped copy of the key.
        let mut out = Zeroizing::new(Vec::with_capacity(1024));
        serde_json::to_writer_pretty(&mut *out, self)?;
        out.push(b'\n');
        Ok(out)
    }

    /// Parses a registration file's text and checks it whole: its shape, its
    /// key, and its SSH key (one the collector could not use is refused here,
    /// not at the device's first connection attempt).
    pub fn from_json(text: &str) -> Result<Self, RecordError> {
        let registration: Registration = serde_json::from_str(text)?;
        registration.ssh_key()?;
        Ok(registration)
    }

    /// Checks that the record is filed where it belongs,
    /// `registrations/<org_dir>/<device>.json`, returning it if so.
    pub fn filed_as(self, org_dir: &str, file_stem: &str) -> Result<Self, RecordError> {
        let (org, device) = (OrgId::new(org_dir)?, DeviceId::new(file_stem)?);
        if self.org != org || self.device != device {
            return Err(RecordError::Mismatch { org: self.org, device: self.device });
        }
        Ok(self)
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
            .field("site", &self.site)
            .finish()
    }
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

/// Parses `revoked.json`: a list of [`RevokedEntry`], oldest first.
pub fn revoked_from_json(text: &str) -> Result<Vec<RevokedEntry>, RecordError> {
    Ok(serde_json::from_str(text)?)
}

/// One admin or support certificate `glimpse-certs admin` issued: an entry
/// of the PKI directory's `admins.json`, oldest first. Every certificate
/// issued stays listed (a re-issue with `--force` adds one; the old one is
/// valid until it expires or is revoked), so that each can be revoked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminCertEntry {
    /// The admin's name (the certificate's CN and identity URI).
    pub name: crate::identity::AdminName,
    /// What the certificate allows.
    pub role: crate::identity::AdminRole,
    /// The organisation an org-admin or support certificate is scoped to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org: Option<OrgId>,
    /// The certificate's serial number, lowercase hex.
    pub serial: String,
    /// When it expires.
    #[serde(with = "rfc3339")]
    pub not_after: OffsetDateTime,
    /// When `glimpse-certs revoke-admin` revoked it; it is then on the CRL.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "rfc3339_option")]
    pub revoked_at: Option<OffsetDateTime>,
}

/// Most entries `admins.json` may hold: a bound on what a damaged or
/// hostile file makes a reader keep.
pub const MAX_ADMIN_ENTRIES: usize = 100_000;

/// Parses `admins.json`: a list of [`AdminCertEntry`], oldest first. Each
/// serial is 1 to 20 bytes of lowercase hex, as certificates carry them.
pub fn admins_from_json(text: &str) -> Result<Vec<AdminCertEntry>, RecordError> {
    let entries: Vec<AdminCertEntry> = serde_json::from_str(text)?;
    if entries.len() > MAX_ADMIN_ENTRIES {
        return Err(RecordError::Invalid(format!("more than {MAX_ADMIN_ENTRIES} admin certificates")));
    }
    for entry in &entries {
        if !is_serial_hex(&entry.serial) {
            return Err(RecordError::Invalid(format!(
                "admin {}: serial {:?} is not 1 to 20 bytes of lowercase hex",
                entry.name,
                entry.serial.chars().take(48).collect::<String>()
            )));
        }
    }
    Ok(entries)
}

/// Whether `serial` is a certificate serial as records write it: 1 to 20
/// bytes of lowercase hex.
pub fn is_serial_hex(serial: &str) -> bool {
    (2..=40).contains(&serial.len())
        && serial.len().is_multiple_of(2)
        && serial.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// [`rfc3339`] for an optional time.
pub mod rfc3339_option {
    use serde::{Deserialize, Deserializer, Serializer};
    use time::OffsetDateTime;

    /// Writes RFC 3339 (only called for `Some`, with `skip_serializing_if`).
    pub fn serialize<S: Serializer>(t: &Option<OffsetDateTime>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => super::rfc3339::serialize(t, s),
            None => s.serialize_none(),
        }
    }

    /// Reads RFC 3339 or `null`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<OffsetDateTime>, D::Error> {
        #[derive(Deserialize)]
        struct Wrapped(#[serde(with = "super::rfc3339")] OffsetDateTime);
        Ok(Option::<Wrapped>::deserialize(d)?.map(|Wrapped(t)| t))
    }
}

/// Whether a name in `registrations/` or `registrations/<org>/` is one the
/// readers skip: hidden files (an interrupted `--force` write leaves
/// `.name.tmp-*`) and files not ending in `.json`. Returns the device stem
/// of a registration file.
pub fn registration_file_stem(file_name: &str) -> Option<&str> {
    file_name.strip_suffix(".json").filter(|_| !file_name.starts_with('.'))
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
            site: None,
        }
    }

    #[test]
    fn registration_round_trips_and_debug_redacts() {
        let reg = sample();
        let json = reg.to_json().unwrap();
        let text = std::str::from_utf8(&json).unwrap();
        assert!(text.contains(&"ab".repeat(32)));
        assert!(text.contains("\"not_after\": \"2035-01-01T00:00:00Z\""));
        let back = Registration::from_json(text).unwrap();
        assert_eq!(back, reg);
        assert_eq!(back.shared_key(), SecretKey::from_bytes([0xab; 32]));
        let debug = format!("{reg:?}");
        assert!(!debug.contains("abab"), "{debug}");
        assert!(debug.contains("redacted"));
    }

    #[test]
    fn a_site_is_kept_and_checked_and_a_record_without_one_has_none() {
        let mut reg = sample();
        let plain = reg.to_json().unwrap();
        assert!(!std::str::from_utf8(&plain).unwrap().contains("site"), "no site, no field");
        reg.site = Some(SiteId::new("berlin-hq").unwrap());
        let json = reg.to_json().unwrap();
        let text = std::str::from_utf8(&json).unwrap();
        assert!(text.contains("\"site\": \"berlin-hq\""), "{text}");
        assert_eq!(Registration::from_json(text).unwrap().site, reg.site);
        for bad in ["Berlin HQ", "../x", "", ".hidden"] {
            let bad = text.replace("berlin-hq", bad);
            assert!(matches!(Registration::from_json(&bad), Err(RecordError::Json(_))), "{bad}");
        }
        let long = text.replace("berlin-hq", &"s".repeat(65));
        assert!(Registration::from_json(&long).is_err());
    }

    #[test]
    fn bad_records_are_refused_with_a_reason() {
        let good = sample().to_json().unwrap();
        let text = std::str::from_utf8(&good).unwrap();
        assert!(Registration::from_json(text).unwrap().filed_as("acme", "ap-1").is_ok());
        let err = Registration::from_json(text).unwrap().filed_as("acme", "ap-2").unwrap_err();
        assert!(matches!(err, RecordError::Mismatch { .. }), "{err}");
        assert!(matches!(
            Registration::from_json(text).unwrap().filed_as("bad name", "ap-1"),
            Err(RecordError::BadName(_))
        ));
        let short = text.replace(&"ab".repeat(32), "abcd");
        assert!(matches!(Registration::from_json(&short), Err(RecordError::Json(_))));
        assert!(matches!(Registration::from_json("{"), Err(RecordError::Json(_))));
        let weak = text.replace("\"not_after\"", "\"ssh_public_key\": \"ssh-rsa AAAA\", \"not_after\"");
        assert!(matches!(Registration::from_json(&weak), Err(RecordError::SshKey(_))), "{weak}");
        assert_eq!(registration_file_stem("ap-1.json"), Some("ap-1"));
        assert_eq!(registration_file_stem(".ap-1.json.tmp-1"), None);
        assert_eq!(registration_file_stem(".hidden.json"), None);
        assert_eq!(registration_file_stem("notes.txt"), None);
    }

    proptest::proptest! {
        /// Registration files are untrusted text: anything parses or is refused, never a panic.
        #[test]
        fn arbitrary_record_text_never_panics(text in ".{0,600}") {
            let _ = Registration::from_json(&text);
            let _ = revoked_from_json(&text);
            let _ = admins_from_json(&text);
        }

        /// Whatever an admin entry holds, it reads back as written.
        #[test]
        fn admin_entries_round_trip(
            name in "[a-z0-9][a-z0-9._-]{0,20}",
            serial in proptest::collection::vec(proptest::num::u8::ANY, 1..=20),
            secs in 0i64..4_000_000_000,
            revoked in proptest::option::of(0i64..4_000_000_000),
            support in proptest::bool::ANY,
        ) {
            use crate::identity::{AdminName, AdminRole};
            let time = |s: i64| OffsetDateTime::from_unix_timestamp(s).unwrap();
            let entry = AdminCertEntry {
                name: AdminName::new(&name).unwrap(),
                role: if support { AdminRole::Support } else { AdminRole::Operator },
                org: support.then(|| OrgId::new("acme").unwrap()),
                serial: hex::encode(&serial),
                not_after: time(secs),
                revoked_at: revoked.map(time),
            };
            let text = serde_json::to_string(&vec![entry.clone()]).unwrap();
            proptest::prop_assert_eq!(admins_from_json(&text).unwrap(), vec![entry]);
        }
    }

    #[test]
    fn admin_entries_refuse_bad_serials_and_unknown_fields() {
        let good = r#"[{"name":"ops","role":"operator","serial":"0a1b","not_after":"2030-01-01T00:00:00Z"}]"#;
        let entries = admins_from_json(good).unwrap();
        assert_eq!((entries[0].serial.as_str(), entries[0].revoked_at), ("0a1b", None));
        for bad in [good.replace("0a1b", "0A1B"), good.replace("0a1b", "abc"), good.replace("0a1b", "")] {
            assert!(matches!(admins_from_json(&bad), Err(RecordError::Invalid(_))), "{bad}");
        }
        let unknown = good.replace("\"ops\"", "\"ops\",\"extra\":1");
        assert!(matches!(admins_from_json(&unknown), Err(RecordError::Json(_))));
        let revoked = good.replace("\"not_after\"", "\"revoked_at\":\"2026-01-01T00:00:00Z\",\"not_after\"");
        assert!(admins_from_json(&revoked).unwrap()[0].revoked_at.is_some());
    }
}
