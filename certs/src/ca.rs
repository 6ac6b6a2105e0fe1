//! The root CA: creating it, loading it from disk and signing with it.
//!
//! The CA key is RSA-4096, generated with the `rsa` crate (ring cannot
//! generate RSA keys) and handed to rcgen as PKCS#8 for signing with
//! RSA-PKCS#1-SHA256. rcgen is built without its `x509-parser` feature, so a
//! loaded CA is rebuilt from [`ca_params`]; every signature it then makes is
//! checked against `ca.pem` before anything is written, so a mismatched key or
//! name cannot produce a certificate that only fails later, in a handshake.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, CertificateRevocationList, CertificateRevocationListParams,
    DistinguishedName, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SerialNumber, PKCS_RSA_SHA256,
};
use ring::rand::SecureRandom;
use ring::signature::{UnparsedPublicKey, RSA_PKCS1_2048_8192_SHA256};
use rsa::pkcs8::{EncodePrivateKey, LineEnding};
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::fsio;
use crate::inspect::parse_cert;
use crate::paths::{ca_cert_path, ca_key_path};
use crate::CertsError;

/// The CA certificate's subject common name.
pub(crate) const CA_COMMON_NAME: &str = "Glimpse Root CA";

/// Size of the CA's RSA modulus, in bits.
pub(crate) const CA_KEY_BITS: usize = 4096;

/// Everything about the CA certificate that signing depends on: its name,
/// its key usages and how its key identifier is derived.
fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, CA_COMMON_NAME);
    params.distinguished_name = name;
    // pathlen 0: this CA signs leaves only, never another CA.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

/// A random, positive 128-bit serial number.
pub(crate) fn random_serial() -> Result<SerialNumber, CertsError> {
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new().fill(&mut bytes).map_err(|_| CertsError::KeyGeneration {
        what: "serial number",
        reason: "the system random number generator failed".into(),
    })?;
    // DER integers are signed: a clear top bit keeps the serial positive.
    bytes[0] &= 0x7f;
    Ok(SerialNumber::from_slice(&bytes))
}

/// Extracts the DER body of the single PEM block labelled `label` in `text`.
pub(crate) fn pem_body(path: &Path, text: &str, label: &str) -> Result<Vec<u8>, CertsError> {
    let bad = |problem: String| CertsError::BadPem { path: path.to_path_buf(), problem };
    let (_, pem) =
        x509_parser::pem::parse_x509_pem(text.as_bytes()).map_err(|e| bad(format!("not a PEM file: {e}")))?;
    if pem.label != label {
        return Err(bad(format!("expected a {label} block, found {}", pem.label)));
    }
    Ok(pem.contents)
}

/// A CA ready to sign.
pub(crate) struct Ca {
    issuer: Issuer<'static, KeyPair>,
    cert_der: Vec<u8>,
    cert_path: PathBuf,
}

/// A freshly generated CA and the PEM files to store.
pub(crate) struct NewCa {
    pub(crate) ca: Ca,
    pub(crate) cert_pem: String,
    pub(crate) key_pem: Zeroizing<String>,
}

impl Ca {
    /// Generates an RSA-4096 key and a self-signed CA certificate. Slow:
    /// seconds even optimised.
    pub(crate) fn create(
        dir: &Path,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<NewCa, CertsError> {
        let key_pem = {
            let rsa_key = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, CA_KEY_BITS)
                .map_err(|e| CertsError::KeyGeneration { what: "RSA-4096 CA key", reason: e.to_string() })?;
            // `RsaPrivateKey` wipes itself on drop; the PEM is `Zeroizing`.
            rsa_key.to_pkcs8_pem(LineEnding::LF).map_err(|e| CertsError::KeyGeneration {
                what: "RSA-4096 CA key",
                reason: format!("cannot encode as PKCS#8: {e}"),
            })?
        };
        let key = KeyPair::from_pkcs8_pem_and_sign_algo(&key_pem, &PKCS_RSA_SHA256)
            .map_err(CertsError::build("CA signing key"))?;
        let mut params = ca_params();
        params.not_before = not_before;
        params.not_after = not_after;
        params.serial_number = Some(random_serial()?);
        let cert = params.self_signed(&key).map_err(CertsError::build("CA certificate"))?;
        let ca = Ca { issuer: Issuer::new(params, key), cert_der: cert.der().to_vec(), cert_path: ca_cert_path(dir) };
        ca.check_signed(cert.der())?;
        Ok(NewCa { cert_pem: cert.pem(), key_pem, ca })
    }

    /// Loads `ca.pem` and `ca.key` from a PKI directory and checks that they
    /// belong together.
    pub(crate) fn load(dir: &Path) -> Result<Ca, CertsError> {
        let cert_path = ca_cert_path(dir);
        let key_path = ca_key_path(dir);
        for path in [&cert_path, &key_path] {
            if !path.exists() {
                return Err(CertsError::NoCa { dir: dir.to_path_buf(), missing: path.clone() });
            }
        }
        let cert_der = pem_body(&cert_path, &fsio::read_text(&cert_path)?, "CERTIFICATE")?;
        let key_pem = fsio::read_secret(&key_path)?;
        let key = KeyPair::from_pkcs8_pem_and_sign_algo(&key_pem, &PKCS_RSA_SHA256).map_err(|e| {
            CertsError::BadPem { path: key_path.clone(), problem: format!("not an RSA private key in PKCS#8 PEM: {e}") }
        })?;
        {
            let cert = parse_cert(&cert_der)
                .map_err(|e| CertsError::BadPem { path: cert_path.clone(), problem: e.to_string() })?;
            if !cert.is_ca() {
                return Err(CertsError::CaMismatch { path: cert_path, problem: "not a CA certificate" });
            }
            if cert.public_key().raw != key.subject_public_key_info().as_slice() {
                return Err(CertsError::CaMismatch {
                    path: key_path,
                    problem: "this key does not belong to the certificate in ca.pem",
                });
            }
        }
        Ok(Ca { issuer: Issuer::new(ca_params(), key), cert_der, cert_path })
    }

    /// Signs a leaf certificate for `subject_key`, then checks the result
    /// chains to `ca.pem`.
    pub(crate) fn sign(
        &self,
        what: &'static str,
        params: &CertificateParams,
        subject_key: &KeyPair,
    ) -> Result<Certificate, CertsError> {
        let cert = params.signed_by(subject_key, &self.issuer).map_err(CertsError::build(what))?;
        self.check_signed(cert.der())?;
        Ok(cert)
    }

    /// Signs a CRL, then checks its issuer name and signature.
    pub(crate) fn sign_crl(
        &self,
        params: &CertificateRevocationListParams,
    ) -> Result<CertificateRevocationList, CertsError> {
        let crl = params.signed_by(&self.issuer).map_err(CertsError::build("revocation list"))?;
        let (_, parsed) = x509_parser::parse_x509_crl(crl.der()).map_err(|e| CertsError::BadCrl {
            path: self.cert_path.clone(),
            problem: format!("freshly signed CRL does not parse: {e}"),
        })?;
        self.check(parsed.tbs_cert_list.as_ref(), parsed.issuer().as_raw(), &parsed.signature_value.data)?;
        Ok(crl)
    }

    /// Checks that `der` names this CA as issuer and carries its signature.
    fn check_signed(&self, der: &[u8]) -> Result<(), CertsError> {
        let cert = parse_cert(der)?;
        self.check(cert.tbs_certificate.as_ref(), cert.issuer().as_raw(), &cert.signature_value.data)
    }

    fn check(&self, signed: &[u8], issuer: &[u8], signature: &[u8]) -> Result<(), CertsError> {
        let ca = parse_cert(&self.cert_der)?;
        if issuer != ca.subject().as_raw() {
            return Err(CertsError::CaMismatch {
                path: self.cert_path.clone(),
                problem: "signed object's issuer name differs from the CA certificate's subject",
            });
        }
        UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &ca.public_key().subject_public_key.data)
            .verify(signed, signature)
            .map_err(|_| CertsError::CaMismatch {
                path: self.cert_path.clone(),
                problem: "signature does not verify with the CA certificate's public key",
            })
    }
}
