//! Reading identities and fingerprints back out of DER certificates, as the
//! collector does for every peer. Hostile input gives an error, never a panic.

use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

use glimpse_common::identity::{AdminIdentity, DeviceIdentity};

use crate::CertsError;

/// Parses a DER certificate, refusing trailing bytes.
pub(crate) fn parse_cert(der: &[u8]) -> Result<X509Certificate<'_>, CertsError> {
    let (rest, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| CertsError::BadCertificate(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CertsError::BadCertificate(format!("{} bytes after the certificate", rest.len())));
    }
    Ok(cert)
}

/// The certificate's single URI subject alternative name.
fn identity_uri(der: &[u8]) -> Result<String, CertsError> {
    let cert = parse_cert(der)?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| CertsError::BadCertificate(format!("subject alternative names: {e}")))?
        .ok_or(CertsError::NoIdentity)?;
    let mut uris = san.value.general_names.iter().filter_map(|name| match name {
        GeneralName::URI(uri) => Some(*uri),
        _ => None,
    });
    match (uris.next(), uris.count()) {
        (None, _) => Err(CertsError::NoIdentity),
        (Some(uri), 0) => Ok(uri.to_owned()),
        (Some(_), more) => Err(CertsError::AmbiguousIdentity(more + 1)),
    }
}

/// The device identity a certificate's URI subject alternative name carries.
///
/// Fails if the bytes are not one DER certificate, or if it carries no URI,
/// several URIs, or a URI that is not a device identity (an admin
/// certificate, for example).
pub fn device_identity_of(cert_der: &[u8]) -> Result<DeviceIdentity, CertsError> {
    Ok(DeviceIdentity::from_uri(&identity_uri(cert_der)?)?)
}

/// The admin identity a certificate's URI subject alternative name carries.
///
/// Fails like [`device_identity_of`], and for a device certificate.
pub fn admin_identity_of(cert_der: &[u8]) -> Result<AdminIdentity, CertsError> {
    Ok(AdminIdentity::from_uri(&identity_uri(cert_der)?)?)
}

/// The certificate's serial number as lowercase hex without leading zero
/// bytes: the form used in registrations, `revoked.json` and logs.
pub fn serial_hex_of(cert_der: &[u8]) -> Result<String, CertsError> {
    Ok(serial_hex(parse_cert(cert_der)?.raw_serial()))
}

/// Canonical hex of a DER INTEGER's content bytes.
pub(crate) fn serial_hex(raw: &[u8]) -> String {
    let start = raw.iter().position(|&b| b != 0).unwrap_or(raw.len().saturating_sub(1));
    hex::encode(&raw[start..])
}

/// Lowercase hex SHA-256 of the DER bytes.
pub(crate) fn sha256_hex(der: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, der))
}

/// The certificate's notAfter.
pub(crate) fn not_after_of(cert: &X509Certificate<'_>) -> OffsetDateTime {
    cert.validity().not_after.to_datetime()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bad in [&b""[..], b"\x30", b"\x30\x03\x02\x01\x01", &[0xff; 64]] {
            assert!(device_identity_of(bad).is_err());
            assert!(admin_identity_of(bad).is_err());
            assert!(serial_hex_of(bad).is_err());
        }
    }

    #[test]
    fn serial_hex_is_canonical() {
        assert_eq!(serial_hex(&[0x00, 0x8f, 0x01]), "8f01");
        assert_eq!(serial_hex(&[0x00]), "00");
        assert_eq!(serial_hex(&[0x7f]), "7f");
        assert_eq!(serial_hex(&[]), "");
    }
}
