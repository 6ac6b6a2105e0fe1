//! Revocation: `revoked.json` is the list, `ca.crl.pem` the CA-signed form
//! the collector enforces. Both are rewritten whole on every change, the CRL
//! first, so an interrupted revoke can simply be run again.

use std::path::Path;

use rcgen::{CertificateRevocationListParams, KeyIdMethod, RevokedCertParams, SerialNumber};
use time::{Duration, OffsetDateTime};

use glimpse_common::identity::{DeviceId, OrgId};

use crate::ca::{pem_body, Ca};
use crate::fsio::{self, Access};
use crate::paths::{admins_path, ca_crl_path, registration_path, revoked_path};
use crate::record::{load_admins, load_revoked, read_registration, write_admins, AdminCertEntry, RevokedEntry};
use crate::CertsError;

/// How long a CRL claims to be current. The collector reads the file rather
/// than fetching it, so this is generous; a revoke always writes a new one.
const CRL_LIFETIME: Duration = Duration::days(365);

/// Revokes a device's current certificate: appends it to `revoked.json` and
/// writes a new CRL, with a higher CRL number, listing every revoked serial.
///
/// Fails with [`CertsError::UnknownDevice`] if the device has no
/// registration, and [`CertsError::AlreadyRevoked`] if its current
/// certificate is already on the list.
pub fn revoke(dir: &Path, org: &OrgId, device: &DeviceId) -> Result<(), CertsError> {
    let ca = Ca::load(dir)?;
    let reg_path = registration_path(dir, org, device);
    if !reg_path.exists() {
        return Err(CertsError::UnknownDevice { org: org.clone(), device: device.clone() });
    }
    let registration = read_registration(&reg_path)?;
    let mut entries = load_revoked(dir)?;
    if entries.iter().any(|e| e.serial == registration.cert_serial) {
        return Err(CertsError::AlreadyRevoked {
            org: org.clone(),
            device: device.clone(),
            serial: registration.cert_serial,
        });
    }
    entries.push(RevokedEntry {
        org: org.clone(),
        device: device.clone(),
        serial: registration.cert_serial.clone(),
        revoked_at: now_seconds(),
    });
    write_crl(dir, &ca, &entries, &load_admins(dir)?, false)?;
    write_revoked(dir, &entries, true)?;
    tracing::info!(%org, %device, serial = %registration.cert_serial, "device certificate revoked");
    Ok(())
}

/// Which admin certificates to revoke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminSelector {
    /// The one certificate with this serial (hex, any case).
    Serial(String),
    /// Every certificate issued to this admin name that is not revoked yet.
    Name(glimpse_common::identity::AdminName),
}

impl std::fmt::Display for AdminSelector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AdminSelector::Serial(serial) => write!(f, "with serial {serial}"),
            AdminSelector::Name(name) => write!(f, "of {name}"),
        }
    }
}

/// Revokes admin or support certificates recorded in `admins.json`: marks
/// them revoked there and writes a new CRL listing them beside the revoked
/// devices, so that the collector's admin listener refuses them once it
/// reloads. Returns the entries revoked now.
///
/// Fails with [`CertsError::UnknownAdmin`] if nothing matches and
/// [`CertsError::AdminAlreadyRevoked`] if everything that matches already is.
pub fn revoke_admin(dir: &Path, which: &AdminSelector) -> Result<Vec<AdminCertEntry>, CertsError> {
    let ca = Ca::load(dir)?;
    let mut admins = load_admins(dir)?;
    let matches = |entry: &AdminCertEntry| match which {
        AdminSelector::Serial(serial) => entry.serial.eq_ignore_ascii_case(serial.trim_start_matches("0x")),
        AdminSelector::Name(name) => &entry.name == name,
    };
    if !admins.iter().any(matches) {
        return Err(CertsError::UnknownAdmin(which.to_string()));
    }
    let now = now_seconds();
    let mut revoked = Vec::new();
    for entry in admins.iter_mut().filter(|e| matches(e) && e.revoked_at.is_none()) {
        entry.revoked_at = Some(now);
        revoked.push(entry.clone());
    }
    if revoked.is_empty() {
        return Err(CertsError::AdminAlreadyRevoked(which.to_string()));
    }
    write_crl(dir, &ca, &load_revoked(dir)?, &admins, false)?;
    write_admins(dir, &admins)?;
    for entry in &revoked {
        tracing::info!(admin = %entry.name, role = %entry.role, serial = %entry.serial, "admin certificate revoked");
    }
    Ok(revoked)
}

/// The current UTC time, truncated to the second that X.509 can express.
pub(crate) fn now_seconds() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    now.replace_nanosecond(0).unwrap_or(now)
}

/// Writes `revoked.json`.
pub(crate) fn write_revoked(dir: &Path, entries: &[RevokedEntry], force: bool) -> Result<(), CertsError> {
    let path = revoked_path(dir);
    let mut json =
        serde_json::to_vec_pretty(entries).map_err(|source| CertsError::Json { path: path.clone(), source })?;
    json.push(b'\n');
    fsio::write_file(&path, &json, Access::Public, force)
}

/// The CRL number of the CRL on disk, if there is one.
fn previous_crl_number(dir: &Path) -> Result<Option<u64>, CertsError> {
    let path = ca_crl_path(dir);
    if !path.exists() {
        return Ok(None);
    }
    let der = pem_body(&path, &fsio::read_text(&path)?, "X509 CRL")?;
    let bad = |problem: String| CertsError::BadCrl { path: path.clone(), problem };
    let (_, crl) = x509_parser::parse_x509_crl(&der).map_err(|e| bad(e.to_string()))?;
    let Some(number) = crl.crl_number() else {
        return Ok(None);
    };
    let bytes = number.to_bytes_be();
    if bytes.len() > 8 {
        return Err(bad("CRL number is larger than 64 bits".into()));
    }
    Ok(Some(bytes.iter().fold(0u64, |n, &b| (n << 8) | u64::from(b))))
}

/// Signs and writes `ca.crl.pem` listing every device entry and every
/// revoked admin certificate. A `fresh` CA's first
/// CRL is number 1; later ones are numbered one above the CRL they replace
/// (and never below the number of revocations plus one).
pub(crate) fn write_crl(
    dir: &Path,
    ca: &Ca,
    entries: &[RevokedEntry],
    admins: &[AdminCertEntry],
    fresh: bool,
) -> Result<(), CertsError> {
    let path = ca_crl_path(dir);
    let devices =
        entries.iter().map(|e| (e.serial.as_str(), e.revoked_at, format!("{}/{}", e.org, e.device), revoked_path(dir)));
    let admins = admins
        .iter()
        .filter_map(|e| e.revoked_at.map(|at| (e.serial.as_str(), at, format!("admin {}", e.name), admins_path(dir))));
    let listed: Vec<_> = devices.chain(admins).collect();
    let floor = u64::try_from(listed.len()).unwrap_or(u64::MAX).saturating_add(1);
    let previous = if fresh { None } else { previous_crl_number(dir)? };
    let number = previous.map_or(floor, |n| n.saturating_add(1)).max(floor);
    let revoked_certs = listed
        .into_iter()
        .map(|(serial_hex, revoked_at, whose, file)| {
            let serial = hex::decode(serial_hex).ok().filter(|s| !s.is_empty() && s.len() <= 20).ok_or_else(|| {
                CertsError::BadRecord {
                    path: file,
                    problem: format!(
                        "serial {:?} of {whose} is not 1 to 20 bytes of hex",
                        serial_hex.chars().take(48).collect::<String>(),
                    ),
                }
            })?;
            Ok(RevokedCertParams {
                serial_number: SerialNumber::from_slice(&serial),
                revocation_time: revoked_at,
                reason_code: None,
                invalidity_date: None,
            })
        })
        .collect::<Result<Vec<_>, CertsError>>()?;
    let this_update = now_seconds();
    let params = CertificateRevocationListParams {
        this_update,
        next_update: this_update
            .checked_add(CRL_LIFETIME)
            .ok_or(CertsError::InvalidValidity("CRL next update is out of range"))?,
        crl_number: SerialNumber::from_slice(&minimal_be(number)),
        issuing_distribution_point: None,
        revoked_certs,
        key_identifier_method: KeyIdMethod::Sha256,
    };
    let crl = ca.sign_crl(&params)?;
    let pem = crl.pem().map_err(CertsError::build("revocation list PEM"))?;
    fsio::write_file(&path, pem.as_bytes(), Access::Public, true)
}

/// Big-endian bytes of `n` without leading zeros (at least one byte).
fn minimal_be(n: u64) -> Vec<u8> {
    let bytes = n.to_be_bytes();
    let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len() - 1);
    bytes[start..].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_big_endian() {
        assert_eq!(minimal_be(0), vec![0]);
        assert_eq!(minimal_be(1), vec![1]);
        assert_eq!(minimal_be(0x1234), vec![0x12, 0x34]);
    }
}
