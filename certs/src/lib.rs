//! Glimpse's PKI: one root CA that signs the collector's server certificate,
//! a certificate and shared key per device, and admin client certificates;
//! plus revocation.
//!
//! The collector's demo and the end-to-end tests call this library directly;
//! operators use the `glimpse-certs` binary, a thin wrapper around it.
//!
//! # What it deliberately does not do
//!
//! No intermediate CAs (the root has `pathlen:0`), no CSRs, no OCSP, no
//! network: keys are made where the PKI directory lives and copied to devices
//! by the manufacturing process. It never overwrites a file unless told to
//! (`force`, `--force`), and never loosens a private file's mode.
//!
//! # PKI directory layout
//!
//! ```text
//! <dir>/
//!   ca.pem                    root CA certificate, CN "Glimpse Root CA", pathlen 0,
//!                             keyCertSign + cRLSign, 20 years                       0644
//!   ca.key                    RSA-4096 private key, PKCS#8 PEM                        0600
//!   ca.crl.pem                CRL signed by the CA listing every revoked serial       0644
//!   revoked.json              [{"org","device","serial","revoked_at"}], oldest first  0644
//!   collector.pem / .key      ECDSA P-256, serverAuth, DNS/IP SANs, 1 year       0644/0600
//!   devices/<org>/<device>/
//!     device.pem / .key       ECDSA P-256, clientAuth, 10 years                  0644/0600
//!     device.psk              the 256-bit shared key: 64 hex digits and a newline     0600
//!   registrations/<org>/<device>.json
//!                             the manufacturing record the collector imports          0600
//!   admins/<name>/
//!     admin.pem / .key        ECDSA P-256, clientAuth, 1 year                    0644/0600
//!   admins.json               every admin certificate issued, oldest first:
//!                             [{"name","role","org"?,"serial","not_after","revoked_at"?}] 0644
//! ```
//!
//! Directories the tool creates are `0700`. Private files are created with
//! mode `0600` from the first byte (never chmod-ed afterwards); a forced
//! replacement is written to a temporary file beside the target and renamed
//! over it.
//!
//! # Identities in certificates
//!
//! A device certificate carries exactly one URI subject alternative name,
//! [`DeviceIdentity::to_uri`] (`urn:glimpse:device:acme:ap:ap-1`); its
//! subject is CN = device id, O = organisation, OU = kind, for humans only.
//! An admin certificate carries [`AdminIdentity::to_uri`] and CN = admin
//! name. Read them back with [`device_identity_of`] and
//! [`admin_identity_of`]. Serial numbers are 16 random bytes with the top bit
//! clear, written as lowercase hex without leading zero bytes
//! ([`serial_hex_of`]).
//!
//! # Records
//!
//! `registrations/<org>/<device>.json` is a [`Registration`]:
//! `{"org","device","kind","shared_key","cert_serial","cert_sha256","not_after"}`,
//! hex for the key, serial and SHA-256 of the certificate's DER, RFC 3339 for
//! the time. `revoked.json` is a list of [`RevokedEntry`]; `admins.json` a
//! list of [`AdminCertEntry`], one per admin certificate issued, with
//! `revoked_at` once `revoke-admin` revoked it. The CRL lists revoked device
//! and admin serials alike. Every revoke rewrites the CRL with a higher CRL
//! number; `init` writes an empty one so
//! the collector can always load it.
//!
//! [`DeviceIdentity::to_uri`]: glimpse_common::identity::DeviceIdentity::to_uri
//! [`AdminIdentity::to_uri`]: glimpse_common::identity::AdminIdentity::to_uri

#![forbid(unsafe_code)]

mod ca;
pub mod cli;
mod error;
mod fsio;
mod inspect;
mod issue;
mod paths;
mod record;
mod revoke;
pub mod ssh;

#[cfg(test)]
mod pki_tests;

pub use error::CertsError;
pub use inspect::{admin_identity_of, device_identity_of, serial_hex_of};
pub use issue::{
    init, issue_admin, issue_device, issue_device_with, AdminFiles, DeviceFiles, DeviceOptions, InitOptions, Validity,
    ADMIN_LIFETIME, BACKDATE, CA_LIFETIME, COLLECTOR_LIFETIME, DEVICE_LIFETIME,
};
pub use paths::{
    admin_dir, admins_path, ca_cert_path, ca_crl_path, ca_key_path, collector_cert_path, collector_key_path,
    device_dir, registration_path, registrations_dir, revoked_path,
};
pub use record::{
    load_admins, load_registrations, load_revoked, AdminCertEntry, Registration, RevokedEntry, SharedKey,
};
pub use revoke::{revoke, revoke_admin, AdminSelector};
