//! Issuing: the CA, collector certificate and empty CRL at `init`, then
//! device and admin certificates signed by that CA.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::string::Ia5String;
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
    PKCS_ECDSA_P256_SHA256,
};
use time::{Duration, OffsetDateTime};
use zeroize::Zeroizing;

use glimpse_common::identity::{AdminIdentity, DeviceIdentity, SiteId};
use glimpse_common::secret::SecretKey;

use crate::ca::{random_serial, Ca, NewCa};
use crate::fsio::{self, Access};
use crate::inspect::{not_after_of, parse_cert, serial_hex_of, sha256_hex};
use crate::paths::{
    admin_dir, ca_cert_path, ca_crl_path, ca_key_path, collector_cert_path, collector_key_path, device_dir,
    registration_path, revoked_path,
};
use crate::record::{load_admins, write_admins, AdminCertEntry};
use crate::record::{Registration, SharedKey};
use crate::revoke::{now_seconds, write_crl, write_revoked};
use crate::CertsError;

/// The root CA's default lifetime: 20 years.
pub const CA_LIFETIME: Duration = Duration::days(20 * 365 + 5);
/// The collector certificate's default lifetime: 1 year. TLS scanners flag
/// server certificates valid for more than 366 days (the CA/Browser Forum
/// limit clients enforce for public certificates); `init --collector-days`
/// changes it.
pub const COLLECTOR_LIFETIME: Duration = Duration::days(365);
/// A device certificate's default lifetime: 10 years, the life of the hardware.
pub const DEVICE_LIFETIME: Duration = Duration::days(10 * 365 + 2);
/// An admin certificate's default lifetime: 1 year.
pub const ADMIN_LIFETIME: Duration = Duration::days(365);
/// Default certificates start this long before "now", so that a peer whose
/// clock is a little behind does not reject a certificate issued moments ago.
pub const BACKDATE: Duration = Duration::hours(1);

/// What `init` creates besides the CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitOptions {
    /// DNS names and IP addresses the collector certificate is valid for.
    pub collector_sans: Vec<String>,
    /// Replace an existing CA (invalidating every certificate it signed).
    pub force: bool,
    /// How long the collector certificate is valid from issue.
    pub collector_lifetime: Duration,
}

impl Default for InitOptions {
    fn default() -> Self {
        Self {
            collector_sans: vec!["localhost".into(), "127.0.0.1".into()],
            force: false,
            collector_lifetime: COLLECTOR_LIFETIME,
        }
    }
}

/// A certificate's validity period; `None` means the default for its kind
/// (see the `*_LIFETIME` constants). Tests set these to make expired or
/// not-yet-valid certificates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Validity {
    /// Start of validity; default one hour ago (or, if only `not_after` is
    /// given, one lifetime before it when that is earlier).
    pub not_before: Option<OffsetDateTime>,
    /// End of validity; default `not_before` plus the lifetime.
    pub not_after: Option<OffsetDateTime>,
}

impl Validity {
    /// The period a certificate with this validity and a default lifetime
    /// of `lifetime` gets, in whole seconds (what `glimpse-certs` checks
    /// before issuing: an end already past, a start still ahead).
    pub fn period(&self, lifetime: Duration) -> Result<(OffsetDateTime, OffsetDateTime), CertsError> {
        self.resolve(lifetime)
    }

    /// The concrete period, in whole seconds.
    fn resolve(&self, lifetime: Duration) -> Result<(OffsetDateTime, OffsetDateTime), CertsError> {
        let range = || CertsError::InvalidValidity("date out of range");
        let now = now_seconds();
        let (not_before, not_after) = match (self.not_before, self.not_after) {
            (Some(before), Some(after)) => (before, after),
            (Some(before), None) => (before, before.checked_add(lifetime).ok_or_else(range)?),
            (None, Some(after)) => {
                let backdated = now.checked_sub(BACKDATE).ok_or_else(range)?;
                let before = after.checked_sub(lifetime).map_or(backdated, |b| b.min(backdated));
                (before, after)
            }
            (None, None) => {
                let before = now.checked_sub(BACKDATE).ok_or_else(range)?;
                (before, before.checked_add(lifetime).ok_or_else(range)?)
            }
        };
        let utc_seconds = |t: OffsetDateTime| {
            let t = t.to_offset(time::UtcOffset::UTC);
            t.replace_nanosecond(0).unwrap_or(t)
        };
        let (not_before, not_after) = (utc_seconds(not_before), utc_seconds(not_after));
        // X.509 time encodings stop at year 9999.
        if !(0..=9999).contains(&not_before.year()) || !(0..=9999).contains(&not_after.year()) {
            return Err(CertsError::InvalidValidity("dates must lie in the years 0 to 9999"));
        }
        if not_after <= not_before {
            return Err(CertsError::InvalidValidity("not_after must be later than not_before"));
        }
        Ok((not_before, not_after))
    }
}

/// Where `issue_device` put a device's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceFiles {
    /// `devices/<org>/<device>/device.pem`.
    pub cert: PathBuf,
    /// `devices/<org>/<device>/device.key` (0600).
    pub key: PathBuf,
    /// `devices/<org>/<device>/device.psk` (0600).
    pub shared_key: PathBuf,
    /// `registrations/<org>/<device>.json` (0600).
    pub registration: PathBuf,
    /// `devices/<org>/<device>/ssh_ed25519_key` (0600), when the tool made
    /// the device's SSH key.
    pub ssh_key: Option<PathBuf>,
    /// `devices/<org>/<device>/ssh_ed25519_key.pub` or `ssh_key.pub`: the
    /// registered SSH public key of a switch or gateway.
    pub ssh_public_key: Option<PathBuf>,
}

/// Choices for [`issue_device_with`] beyond the identity.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceOptions {
    /// A public key line the device made itself (its private key never
    /// leaves it). `None` for a switch or gateway means: generate an Ed25519
    /// key pair here. Refused for access points, which use TLS.
    pub ssh_public_key: Option<String>,
    /// The site of the organisation the device is installed at: written
    /// into the certificate's subject as its localityName (L) and into the
    /// registration, which the collector takes it from. `None`: no site.
    pub site: Option<SiteId>,
    /// Replace the device's existing files.
    pub force: bool,
}

/// Where `issue_admin` put an admin's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminFiles {
    /// `admins/<name>/admin.pem`.
    pub cert: PathBuf,
    /// `admins/<name>/admin.key` (0600).
    pub key: PathBuf,
}

/// Checks a collector name: an IP address, or a DNS name of letters, digits
/// and hyphens that TLS clients will match.
fn collector_san(name: &str) -> Result<SanType, CertsError> {
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    let bad = || CertsError::InvalidSan(name.chars().take(80).collect());
    if name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(bad());
    }
    let ia5 = Ia5String::try_from(name.to_ascii_lowercase()).map_err(|_| bad())?;
    Ok(SanType::DnsName(ia5))
}

fn uri_san(uri: String) -> Result<SanType, CertsError> {
    Ok(SanType::URI(Ia5String::try_from(uri).map_err(CertsError::build("identity URI"))?))
}

/// Parameters shared by every leaf: ECDSA key, digital signature only, one EKU.
fn leaf_params(
    name: DistinguishedName,
    sans: Vec<SanType>,
    eku: ExtendedKeyUsagePurpose,
    (not_before, not_after): (OffsetDateTime, OffsetDateTime),
) -> Result<CertificateParams, CertsError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = name;
    params.subject_alt_names = sans;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![eku];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(random_serial()?);
    params.not_before = not_before;
    params.not_after = not_after;
    Ok(params)
}

fn leaf_key(what: &'static str) -> Result<KeyPair, CertsError> {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
        .map_err(|e| CertsError::KeyGeneration { what, reason: e.to_string() })
}

/// Creates a PKI directory: an RSA-4096 root CA (`ca.pem`, `ca.key`), the
/// collector's certificate and key, an empty `revoked.json` and an empty CRL.
///
/// Refuses, before generating anything, if any of those files exist and
/// `opts.force` is false. Generating the CA key takes seconds.
pub fn init(dir: &Path, opts: &InitOptions) -> Result<(), CertsError> {
    if opts.collector_sans.is_empty() {
        return Err(CertsError::NoCollectorSans);
    }
    let sans = opts.collector_sans.iter().map(|s| collector_san(s)).collect::<Result<Vec<_>, _>>()?;
    let (ca_cert, ca_key) = (ca_cert_path(dir), ca_key_path(dir));
    let (collector_cert, collector_key) = (collector_cert_path(dir), collector_key_path(dir));
    let (crl, revoked) = (ca_crl_path(dir), revoked_path(dir));
    fsio::refuse_existing(
        [&ca_cert, &ca_key, &crl, &revoked, &collector_cert, &collector_key].map(PathBuf::as_path),
        opts.force,
    )?;
    fsio::ensure_dir(dir)?;

    tracing::info!(dir = %dir.display(), "generating the RSA-4096 root CA key");
    let (not_before, not_after) = Validity::default().resolve(CA_LIFETIME)?;
    let NewCa { ca, cert_pem, key_pem } = Ca::create(dir, not_before, not_after)?;

    let key = leaf_key("collector key")?;
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, "Glimpse Collector");
    let params = leaf_params(
        name,
        sans,
        ExtendedKeyUsagePurpose::ServerAuth,
        Validity::default().resolve(opts.collector_lifetime)?,
    )?;
    let cert = ca.sign("collector certificate", &params, &key)?;
    let collector_key_pem = Zeroizing::new(key.serialize_pem());

    let force = opts.force;
    fsio::write_file(&ca_key, key_pem.as_bytes(), Access::Private, force)?;
    fsio::write_file(&ca_cert, cert_pem.as_bytes(), Access::Public, force)?;
    fsio::write_file(&collector_key, collector_key_pem.as_bytes(), Access::Private, force)?;
    fsio::write_file(&collector_cert, cert.pem().as_bytes(), Access::Public, force)?;
    write_revoked(dir, &[], force)?;
    write_crl(dir, &ca, &[], &[], true)?;
    if force && dir.join("devices").exists() {
        tracing::warn!(
            "replaced the CA: existing device and admin certificates no longer verify; reissue them with --force"
        );
    }
    tracing::info!(dir = %dir.display(), "PKI initialised");
    Ok(())
}

/// Issues a device certificate (ECDSA P-256, clientAuth, identity URI
/// SAN), a fresh 256-bit shared key, and the registration record the
/// collector imports. A switch or gateway also gets an Ed25519 SSH key pair
/// for the collector's SSH port.
///
/// Refuses, before doing anything, if any of the device's files exist and
/// `force` is false.
pub fn issue_device(
    dir: &Path,
    identity: &DeviceIdentity,
    validity: &Validity,
    force: bool,
) -> Result<DeviceFiles, CertsError> {
    issue_device_with(dir, identity, validity, &DeviceOptions { ssh_public_key: None, site: None, force })
}

/// As [`issue_device`], registering an SSH public key the device made
/// itself when `options` gives one.
pub fn issue_device_with(
    dir: &Path,
    identity: &DeviceIdentity,
    validity: &Validity,
    options: &DeviceOptions,
) -> Result<DeviceFiles, CertsError> {
    let force = options.force;
    let uses_ssh = !matches!(identity.kind, glimpse_common::identity::DeviceKind::Ap);
    if options.ssh_public_key.is_some() && !uses_ssh {
        return Err(CertsError::SshKeyForTls(identity.kind));
    }
    // Checked before anything is generated or written.
    let brought_key = options.ssh_public_key.as_deref().map(crate::ssh::parse_device_public_key).transpose()?;
    let device_dir = device_dir(dir, &identity.org, &identity.device);
    let files = DeviceFiles {
        cert: device_dir.join("device.pem"),
        key: device_dir.join("device.key"),
        shared_key: device_dir.join("device.psk"),
        registration: registration_path(dir, &identity.org, &identity.device),
        ssh_key: (uses_ssh && brought_key.is_none()).then(|| device_dir.join("ssh_ed25519_key")),
        ssh_public_key: match (uses_ssh, &brought_key) {
            (false, _) => None,
            (true, None) => Some(device_dir.join("ssh_ed25519_key.pub")),
            (true, Some(_)) => Some(device_dir.join("ssh_key.pub")),
        },
    };
    let mut paths = vec![&files.cert, &files.key, &files.shared_key, &files.registration];
    paths.extend(files.ssh_key.iter().chain(files.ssh_public_key.iter()));
    fsio::refuse_existing(paths.into_iter().map(PathBuf::as_path), force)?;
    let ca = Ca::load(dir)?;
    let period = validity.resolve(DEVICE_LIFETIME)?;

    let key = leaf_key("device key")?;
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, identity.device.as_str());
    name.push(DnType::OrganizationName, identity.org.as_str());
    name.push(DnType::OrganizationalUnitName, identity.kind.as_str());
    // The site as a place, where PKI tools and inventories look for one;
    // the identity URI stays the certificate's only URI.
    if let Some(site) = &options.site {
        name.push(DnType::LocalityName, site.as_str());
    }
    let params = leaf_params(name, vec![uri_san(identity.to_uri())?], ExtendedKeyUsagePurpose::ClientAuth, period)?;
    let cert = ca.sign("device certificate", &params, &key)?;
    let key_pem = Zeroizing::new(key.serialize_pem());

    let shared_key = SecretKey::generate().map_err(|_| CertsError::KeyGeneration {
        what: "device shared key",
        reason: "the system random number generator failed".into(),
    })?;
    let mut psk = Zeroizing::new(String::with_capacity(65));
    psk.push_str(&shared_key.to_hex());
    psk.push('\n');

    let comment = format!("{}/{}", identity.org, identity.device);
    let (ssh_private, ssh_public) = match brought_key {
        Some(key) => {
            let line = key.to_openssh().map_err(|e| CertsError::SshKey { reason: e.to_string() })?;
            (None, Some(line))
        }
        None if uses_ssh => {
            let generated = crate::ssh::generate_ed25519(&comment)?;
            (Some(generated.private_openssh), Some(generated.public_openssh))
        }
        None => (None, None),
    };

    let der = cert.der();
    let registration = Registration {
        org: identity.org.clone(),
        device: identity.device.clone(),
        kind: identity.kind,
        shared_key: SharedKey::new(shared_key),
        cert_serial: serial_hex_of(der)?,
        cert_sha256: sha256_hex(der),
        not_after: not_after_of(&parse_cert(der)?),
        ssh_public_key: ssh_public.clone(),
        site: options.site.clone(),
    };
    let record =
        registration.to_json().map_err(|source| CertsError::Record { path: files.registration.clone(), source })?;

    fsio::ensure_dir(&device_dir)?;
    if let Some(parent) = files.registration.parent() {
        fsio::ensure_dir(parent)?;
    }
    fsio::write_file(&files.key, key_pem.as_bytes(), Access::Private, force)?;
    fsio::write_file(&files.shared_key, psk.as_bytes(), Access::Private, force)?;
    fsio::write_file(&files.cert, cert.pem().as_bytes(), Access::Public, force)?;
    if let (Some(path), Some(private)) = (&files.ssh_key, &ssh_private) {
        fsio::write_file(path, private.as_bytes(), Access::Private, force)?;
    }
    if let (Some(path), Some(public)) = (&files.ssh_public_key, &ssh_public) {
        fsio::write_file(path, format!("{public}\n").as_bytes(), Access::Public, force)?;
    }
    fsio::write_file(&files.registration, &record, Access::Private, force)?;
    tracing::info!(device = %identity, serial = %registration.cert_serial, "device certificate issued");
    Ok(files)
}

/// Issues an admin client certificate (ECDSA P-256, clientAuth, identity URI
/// SAN) into `admins/<name>/`.
///
/// Refuses, before doing anything, if the files exist and `force` is false.
pub fn issue_admin(
    dir: &Path,
    identity: &AdminIdentity,
    validity: &Validity,
    force: bool,
) -> Result<AdminFiles, CertsError> {
    let admin_dir = admin_dir(dir, &identity.name);
    let files = AdminFiles { cert: admin_dir.join("admin.pem"), key: admin_dir.join("admin.key") };
    fsio::refuse_existing([&files.cert, &files.key].map(PathBuf::as_path), force)?;
    let ca = Ca::load(dir)?;
    let period = validity.resolve(ADMIN_LIFETIME)?;

    let key = leaf_key("admin key")?;
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, identity.name.as_str());
    if let Some(org) = &identity.org {
        name.push(DnType::OrganizationName, org.as_str());
    }
    name.push(DnType::OrganizationalUnitName, identity.role.as_str());
    let params = leaf_params(name, vec![uri_san(identity.to_uri())?], ExtendedKeyUsagePurpose::ClientAuth, period)?;
    let cert = ca.sign("admin certificate", &params, &key)?;
    let key_pem = Zeroizing::new(key.serialize_pem());

    let der = cert.der();
    let entry = AdminCertEntry {
        name: identity.name.clone(),
        role: identity.role,
        org: identity.org.clone(),
        serial: serial_hex_of(der)?,
        not_after: not_after_of(&parse_cert(der)?),
        revoked_at: None,
    };
    // Read before anything is written, so that a damaged admins.json stops
    // the issue rather than leaving an unrecorded certificate.
    let mut admins = load_admins(dir)?;

    fsio::ensure_dir(&admin_dir)?;
    fsio::write_file(&files.key, key_pem.as_bytes(), Access::Private, force)?;
    fsio::write_file(&files.cert, cert.pem().as_bytes(), Access::Public, force)?;
    tracing::info!(admin = %identity.name, role = %identity.role, serial = %entry.serial, "admin certificate issued");
    admins.push(entry);
    write_admins(dir, &admins)?;
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn validity_defaults_and_errors() {
        let (before, after) = Validity::default().resolve(ADMIN_LIFETIME).unwrap();
        assert_eq!(after - before, ADMIN_LIFETIME);
        assert!(before < OffsetDateTime::now_utc());

        let past = datetime!(2020-01-01 0:00 UTC);
        let only_after = Validity { not_before: None, not_after: Some(past) };
        let (before, after) = only_after.resolve(DEVICE_LIFETIME).unwrap();
        assert_eq!((after, after - before), (past, DEVICE_LIFETIME));

        let inverted = Validity { not_before: Some(past), not_after: Some(past) };
        assert!(matches!(inverted.resolve(DEVICE_LIFETIME), Err(CertsError::InvalidValidity(_))));
    }

    #[test]
    fn collector_names() {
        for good in ["localhost", "127.0.0.1", "::1", "collector.example.net", "a-1"] {
            assert!(collector_san(good).is_ok(), "{good}");
        }
        for bad in ["", "-x", "a..b", "a b", "a/b", "*.example", "é.example"] {
            assert!(collector_san(bad).is_err(), "{bad}");
        }
    }
}
