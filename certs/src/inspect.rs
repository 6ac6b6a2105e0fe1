//! Reading identities and fingerprints back out of DER certificates. The
//! identity rules live in `glimpse_common::certificate`, shared with the
//! collector; this adds what only issuing needs.

use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;

use crate::CertsError;

#[cfg(test)]
pub(crate) use glimpse_common::certificate::serial_hex;
pub use glimpse_common::certificate::{admin_identity_of, device_identity_of, serial_hex_of};

/// Parses a DER certificate, refusing trailing bytes.
pub(crate) fn parse_cert(der: &[u8]) -> Result<X509Certificate<'_>, CertsError> {
    Ok(glimpse_common::certificate::parse_certificate(der)?)
}

/// Lowercase hex SHA-256 of the DER bytes.
pub(crate) fn sha256_hex(der: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, der))
}

/// The certificate's notAfter.
pub(crate) fn not_after_of(cert: &X509Certificate<'_>) -> OffsetDateTime {
    cert.validity().not_after.to_datetime()
}
