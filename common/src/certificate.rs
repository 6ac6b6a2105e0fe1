//! Reading identities and serial numbers back out of DER certificates, as
//! the collector does for every peer and the PKI tool for what it issued.
//!
//! A device certificate carries exactly one URI subject alternative name,
//! [`DeviceIdentity::to_uri`]; an admin certificate [`AdminIdentity::to_uri`].
//! Serial numbers are written as lowercase hex without leading zero bytes
//! ([`serial_hex_of`]), the form registrations, `revoked.json` and logs use.
//!
//! Bytes in, values out: no files. Hostile input gives an error, never a
//! panic (x509-parser bounds every length by the input).

use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

use crate::identity::{AdminIdentity, DeviceIdentity, IdentityError};

/// A certificate did not carry a usable identity.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertificateError {
    /// Not one well-formed DER certificate.
    #[error("invalid certificate: {0}")]
    Malformed(String),
    /// No URI subject alternative name.
    #[error("certificate carries no identity URI")]
    NoIdentity,
    /// More than one URI subject alternative name.
    #[error("certificate carries {0} URIs; expected exactly one identity")]
    AmbiguousIdentity(usize),
    /// The URI is not an identity of the expected kind.
    #[error("invalid identity: {0}")]
    Identity(#[from] IdentityError),
}

/// Parses one DER certificate, refusing trailing bytes.
pub fn parse_certificate(der: &[u8]) -> Result<X509Certificate<'_>, CertificateError> {
    let (rest, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| CertificateError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CertificateError::Malformed(format!("{} bytes after the certificate", rest.len())));
    }
    Ok(cert)
}

/// The certificate's single URI subject alternative name.
fn identity_uri(der: &[u8]) -> Result<String, CertificateError> {
    let cert = parse_certificate(der)?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| CertificateError::Malformed(format!("subject alternative names: {e}")))?
        .ok_or(CertificateError::NoIdentity)?;
    let mut uris = san.value.general_names.iter().filter_map(|name| match name {
        GeneralName::URI(uri) => Some(*uri),
        _ => None,
    });
    match (uris.next(), uris.count()) {
        (None, _) => Err(CertificateError::NoIdentity),
        (Some(uri), 0) => Ok(uri.to_owned()),
        (Some(_), more) => Err(CertificateError::AmbiguousIdentity(more + 1)),
    }
}

/// The device identity a certificate's URI subject alternative name carries.
///
/// Fails if the bytes are not one DER certificate, or if it carries no URI,
/// several URIs, or a URI that is not a device identity (an admin
/// certificate, for example).
pub fn device_identity_of(cert_der: &[u8]) -> Result<DeviceIdentity, CertificateError> {
    Ok(DeviceIdentity::from_uri(&identity_uri(cert_der)?)?)
}

/// The admin identity a certificate's URI subject alternative name carries.
///
/// Fails like [`device_identity_of`], and for a device certificate.
pub fn admin_identity_of(cert_der: &[u8]) -> Result<AdminIdentity, CertificateError> {
    Ok(AdminIdentity::from_uri(&identity_uri(cert_der)?)?)
}

/// The certificate's serial number as lowercase hex without leading zero
/// bytes: the form used in registrations, `revoked.json` and logs.
pub fn serial_hex_of(cert_der: &[u8]) -> Result<String, CertificateError> {
    Ok(serial_hex(parse_certificate(cert_der)?.raw_serial()))
}

/// The end of the certificate's validity (notAfter), in Unix seconds.
pub fn not_after_unix_of(cert_der: &[u8]) -> Result<i64, CertificateError> {
    Ok(parse_certificate(cert_der)?.validity().not_after.timestamp())
}

/// The serial numbers a DER certificate revocation list names, in the form
/// of [`serial_hex_of`]. The signature is not checked here: the caller
/// trusts the file it loaded (the collector's own configured CRL, which
/// rustls' verifier checks on every handshake).
pub fn crl_revoked_serials(crl_der: &[u8]) -> Result<Vec<String>, CertificateError> {
    let (rest, crl) = x509_parser::parse_x509_crl(crl_der).map_err(|e| CertificateError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CertificateError::Malformed(format!("{} bytes after the revocation list", rest.len())));
    }
    Ok(crl.iter_revoked_certificates().map(|r| serial_hex(r.raw_serial())).collect())
}

/// Canonical hex of a DER INTEGER's content bytes (a serial number).
pub fn serial_hex(raw: &[u8]) -> String {
    let start = raw.iter().position(|&b| b != 0).unwrap_or(raw.len().saturating_sub(1));
    hex::encode(&raw[start..])
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
            assert!(not_after_unix_of(bad).is_err());
            assert!(crl_revoked_serials(bad).is_err());
        }
    }

    #[test]
    fn serial_hex_is_canonical() {
        assert_eq!(serial_hex(&[0x00, 0x8f, 0x01]), "8f01");
        assert_eq!(serial_hex(&[0x00]), "00");
        assert_eq!(serial_hex(&[0x7f]), "7f");
        assert_eq!(serial_hex(&[]), "");
    }

    proptest::proptest! {
        /// Arbitrary bytes, and DER-looking prefixes, never panic.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let _ = device_identity_of(&bytes);
            let _ = admin_identity_of(&bytes);
            let mut der = vec![0x30, 0x82];
            der.extend_from_slice(&bytes);
            let _ = serial_hex_of(&der);
        }
    }
}
