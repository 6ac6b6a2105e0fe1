//! The file reads below the agent and the collector: configuration files
//! and PEM files (certificates, private keys, CRLs), each bounded in size so
//! that a wrong path (`/dev/zero`, a multi-gigabyte log) is an error naming
//! the file, not an allocation that takes the device down.
//!
//! `glimpse-common` stays free of I/O (its rule); this crate is the one
//! place the shared loaders read, then hands the bytes to its parsers.

#![forbid(unsafe_code)]

use std::io::Read;
use std::path::Path;

use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use zeroize::Zeroizing;

pub use glimpse_common::config::ConfigError;
pub use glimpse_common::tls::TlsConfigError;
use glimpse_common::tls::{certs_from_pem, crls_from_pem, key_from_pem};

/// Largest PEM file read: a certificate chain or a CRL of many thousand
/// revoked devices is well under this.
pub const MAX_PEM_FILE_LEN: u64 = 64 * 1024 * 1024;

/// Reads at most `max` bytes of `path`; `Ok(None)` if it is longer.
fn read_bounded(path: &Path, max: u64, out: &mut Vec<u8>) -> std::io::Result<bool> {
    let file = std::fs::File::open(path)?;
    file.take(max + 1).read_to_end(out)?;
    Ok(out.len() as u64 <= max)
}

/// Reads a UTF-8 config file of at most `max` bytes, never more.
pub fn read_config_text(path: &Path, max: u64) -> Result<String, ConfigError> {
    let read_error = |source| ConfigError::Read { path: path.to_owned(), source };
    let mut bytes = Vec::new();
    if !read_bounded(path, max, &mut bytes).map_err(read_error)? {
        return Err(ConfigError::TooLarge { path: path.to_owned(), max });
    }
    String::from_utf8(bytes)
        .map_err(|_| read_error(std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text")))
}

/// Reads a PEM file, bounded; the buffer is wiped on drop (it may hold a key).
fn read_pem(path: &Path, what: &'static str) -> Result<Zeroizing<Vec<u8>>, TlsConfigError> {
    let failed = |reason: String| TlsConfigError::Pem { what, path: path.to_owned(), reason };
    let mut bytes = Zeroizing::new(Vec::new());
    match read_bounded(path, MAX_PEM_FILE_LEN, &mut bytes) {
        Ok(true) => Ok(bytes),
        Ok(false) => Err(failed(format!("larger than {MAX_PEM_FILE_LEN} bytes"))),
        Err(e) => Err(failed(e.to_string())),
    }
}

/// Loads every certificate in a PEM file (at least one).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    certs_from_pem(&read_pem(path, "certificate")?, path)
}

/// Loads the first private key (PKCS#8, PKCS#1 or SEC1) in a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsConfigError> {
    key_from_pem(&read_pem(path, "private key")?, path)
}

/// Loads every CRL in a PEM file.
pub fn load_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsConfigError> {
    crls_from_pem(&read_pem(path, "CRL")?, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_missing_and_binary_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.toml");
        std::fs::write(&big, vec![b'#'; 2048]).unwrap();
        let err = read_config_text(&big, 1024).unwrap_err().to_string();
        assert!(err.contains("big.toml") && err.contains("1024"), "{err}");
        assert_eq!(read_config_text(&big, 4096).unwrap().len(), 2048);
        let err = read_config_text(&dir.path().join("missing.toml"), 1024).unwrap_err().to_string();
        assert!(err.contains("missing.toml"), "{err}");
        let binary = dir.path().join("binary.toml");
        std::fs::write(&binary, [0xff, 0xfe, 0x00]).unwrap();
        assert!(read_config_text(&binary, 1024).unwrap_err().to_string().contains("UTF-8"));
    }

    #[test]
    fn pem_files_that_hold_nothing_usable_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no pem here\n").unwrap();
        let err = load_certs(&empty).unwrap_err().to_string();
        assert!(err.contains("empty.pem") && err.contains("no CERTIFICATE"), "{err}");
        assert!(load_key(&empty).unwrap_err().to_string().contains("empty.pem"));
        assert!(load_crls(&empty).unwrap().is_empty());
        let err = load_certs(&dir.path().join("missing.pem")).unwrap_err().to_string();
        assert!(err.contains("missing.pem"), "{err}");
    }
}
