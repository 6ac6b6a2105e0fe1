//! The TLS policy both ends share, as rustls configurations built from
//! DER, plus PEM parsing to get that DER from text (the edges read the
//! files, through `glimpse-files`).
//!
//! - TLS 1.3, and TLS 1.2 with ECDHE key exchange and AEAD ciphers only
//!   (rustls offers nothing weaker, and we remove nothing it offers).
//! - The `ring` provider: aws-lc-rs does not build for MIPS.
//! - Cipher order follows the hardware: a device without AES instructions
//!   runs AES-GCM at a few MB/s, so it puts ChaCha20-Poly1305 first, and the
//!   collector honours the client's order.
//! - Mutual authentication is not optional: the builders demand a CA, an
//!   identity and (server side) a client verifier, in that order.

use std::path::Path;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{ring, CryptoProvider};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig, SupportedCipherSuite};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};

/// ALPN protocol id for the agent protocol.
pub const ALPN_AGENT: &[u8] = b"glimpse/1";

/// ALPN protocol ids of the HTTPS admin API, HTTP/2 preferred.
pub const ALPN_HTTPS: &[&[u8]] = &[b"h2", b"http/1.1"];

/// A TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsConfigError {
    /// The CA certificate was not usable as a trust anchor.
    #[error("CA certificate is not a usable trust anchor: {0}")]
    BadCa(rustls::Error),
    /// rustls refused the certificate, key or revocation lists.
    #[error("invalid TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client verifier could not be built (bad CRL, no CA).
    #[error("cannot build client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// The server verifier could not be built.
    #[error("cannot build server certificate verifier: {0}")]
    ServerVerifier(rustls::server::VerifierBuilderError),
    /// A private key file is open to other users (see
    /// [`crate::permissions`]).
    #[error(transparent)]
    Permissions(#[from] crate::permissions::PermissionError),
    /// A PEM file could not be read or held nothing usable.
    #[error("cannot load {what} from {path}: {reason}")]
    Pem {
        /// What was being loaded ("certificate", "private key", "CRL").
        what: &'static str,
        /// The file.
        path: std::path::PathBuf,
        /// Why it failed.
        reason: String,
    },
}

fn pem_error(what: &'static str, path: &Path, reason: impl ToString) -> TlsConfigError {
    TlsConfigError::Pem { what, path: path.to_owned(), reason: reason.to_string() }
}

/// Every certificate in PEM text (at least one). `origin` names the file
/// in errors; nothing is read here.
pub fn certs_from_pem(pem: &[u8], origin: &Path) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error("certificate", origin, e))?;
    if certs.is_empty() {
        return Err(pem_error("certificate", origin, "no CERTIFICATE block"));
    }
    Ok(certs)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) in PEM text.
pub fn key_from_pem(pem: &[u8], origin: &Path) -> Result<PrivateKeyDer<'static>, TlsConfigError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| pem_error("private key", origin, e))
}

/// Every CRL in PEM text.
pub fn crls_from_pem(pem: &[u8], origin: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsConfigError> {
    CertificateRevocationListDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error("CRL", origin, e))
}

/// Whether this CPU has AES instructions that make AES-GCM fast.
pub fn has_aes_hardware() -> bool {
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    {
        std::arch::is_x86_feature_detected!("aes") && std::arch::is_x86_feature_detected!("pclmulqdq")
    }
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("aes") && std::arch::is_aarch64_feature_detected!("pmull")
    }
    #[cfg(not(any(target_arch = "x86", target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

/// The `ring` provider with Glimpse's suite order: ChaCha20-Poly1305 first
/// when `prefer_chacha`, AES-GCM first otherwise.
pub fn provider(prefer_chacha: bool) -> CryptoProvider {
    let mut provider = ring::default_provider();
    let is_chacha = |s: &SupportedCipherSuite| {
        matches!(
            s.suite(),
            rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256
                | rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
                | rustls::CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
        )
    };
    // Stable sort: within each group, ring's own preference order stays.
    provider.cipher_suites.sort_by_key(|s| {
        let tls13_first = u8::from(matches!(s, SupportedCipherSuite::Tls12(_)));
        let chacha_rank = u8::from(is_chacha(s) != prefer_chacha);
        (tls13_first, chacha_rank)
    });
    provider
}

static VERSIONS: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];

fn versions() -> &'static [&'static rustls::SupportedProtocolVersion] {
    VERSIONS
}

fn roots(ca: &CertificateDer<'static>) -> Result<Arc<RootCertStore>, TlsConfigError> {
    let mut store = RootCertStore::empty();
    store.add(ca.clone()).map_err(TlsConfigError::BadCa)?;
    Ok(Arc::new(store))
}

/// Whether a port requires a client certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientCertificate {
    /// Agents: no connection without a device certificate.
    Required,
    /// The admin API: tokens and health probes come without one.
    Optional,
}

/// A server configuration whose client certificates (required or optional)
/// must chain to `ca` and not be on any of `crls`, speaking `alpn`.
fn server_config_for(
    ca: &CertificateDer<'static>,
    crls: Vec<CertificateRevocationListDer<'static>>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client: ClientCertificate,
    alpn: &[&[u8]],
) -> Result<ServerConfig, TlsConfigError> {
    // The server's own preference decides nothing: `ignore_client_order`
    // stays false, so a MIPS agent that asks for ChaCha20 gets it.
    let provider = Arc::new(provider(false));
    let builder = WebPkiClientVerifier::builder_with_provider(roots(ca)?, provider.clone())
        .with_crls(crls)
        .allow_unknown_revocation_status();
    let verifier = match client {
        ClientCertificate::Required => builder.build()?,
        ClientCertificate::Optional => builder.allow_unauthenticated().build()?,
    };
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions())?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    config.ignore_client_order = false;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    // No session resumption tickets: every connection re-proves who it is.
    config.send_tls13_tickets = 0;
    Ok(config)
}

/// The collector's server configuration: client certificates are required
/// and must chain to `ca` and not be on any of `crls`.
pub fn server_config(
    ca: &CertificateDer<'static>,
    crls: Vec<CertificateRevocationListDer<'static>>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<ServerConfig, TlsConfigError> {
    server_config_for(ca, crls, chain, key, ClientCertificate::Required, &[ALPN_AGENT])
}

/// The admin API's server configuration: HTTP/2 and HTTP/1.1. A client
/// certificate is optional here, because API tokens and health probes come
/// without one; one that is presented must chain to `ca` and not be on any
/// of `crls`, and the API decides per request what it may do.
pub fn api_server_config(
    ca: &CertificateDer<'static>,
    crls: Vec<CertificateRevocationListDer<'static>>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<ServerConfig, TlsConfigError> {
    server_config_for(ca, crls, chain, key, ClientCertificate::Optional, ALPN_HTTPS)
}

/// An admin API client's configuration: trusts only `ca`, presents
/// `identity` (certificate chain and key) when given, else no certificate
/// (API tokens).
pub fn api_client_config(
    ca: &CertificateDer<'static>,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Result<ClientConfig, TlsConfigError> {
    let provider = Arc::new(provider(false));
    let verifier = WebPkiServerVerifier::builder_with_provider(roots(ca)?, provider.clone())
        .build()
        .map_err(TlsConfigError::ServerVerifier)?;
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions())?
        .with_webpki_verifier(verifier);
    let mut config = match identity {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key)?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = ALPN_HTTPS.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// An agent's client configuration: trusts only `ca`, presents `chain`.
pub fn client_config(
    ca: &CertificateDer<'static>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    prefer_chacha: bool,
) -> Result<ClientConfig, TlsConfigError> {
    let provider = Arc::new(provider(prefer_chacha));
    let verifier = WebPkiServerVerifier::builder_with_provider(roots(ca)?, provider.clone())
        .build()
        .map_err(TlsConfigError::ServerVerifier)?;
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions())?
        .with_webpki_verifier(verifier)
        .with_client_auth_cert(chain, key)?;
    config.alpn_protocols = vec![ALPN_AGENT.to_vec()];
    config.resumption = rustls::client::Resumption::disabled();
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chacha_first_only_when_asked() {
        let first = |p: CryptoProvider| p.cipher_suites[0].suite();
        assert_eq!(first(provider(true)), rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256);
        assert_ne!(first(provider(false)), rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256);
        for p in [provider(true), provider(false)] {
            let tls12_at = p.cipher_suites.iter().position(|s| matches!(s, SupportedCipherSuite::Tls12(_)));
            let last13 = p.cipher_suites.iter().rposition(|s| matches!(s, SupportedCipherSuite::Tls13(_)));
            assert!(tls12_at > last13, "TLS 1.3 suites come first");
        }
    }
}
