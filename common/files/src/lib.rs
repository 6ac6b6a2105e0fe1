//! The file reads below the agent and the collector: configuration files
//! and PEM files (certificates, private keys, CRLs), each bounded in size so
//! that a wrong path (`/dev/zero`, a multi-gigabyte log) is an error naming
//! the file, not an allocation that takes the device down.
//!
//! `glimpse-common` stays free of I/O (its rule); this crate is the one
//! place the shared loaders read, then hands the bytes to its parsers.

#![forbid(unsafe_code)]

#[cfg(feature = "logging")]
pub mod logging;

/// `println!` that returns the write's `io::Result` instead of panicking:
/// `glimpse-agent probe | head -1` closes the pipe early, and `println!`
/// panics on the broken pipe (Rust ignores SIGPIPE). Callers pass the
/// error up with `?` and exit quietly on `BrokenPipe` ([`is_broken_pipe`]).
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {{
        use ::std::io::Write as _;
        ::std::writeln!(::std::io::stdout(), $($arg)*)
    }};
}

/// `print!` that returns the write's `io::Result` (see [`outln!`]).
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {{
        use ::std::io::Write as _;
        let mut stdout = ::std::io::stdout();
        ::std::write!(stdout, $($arg)*).and_then(|()| stdout.flush())
    }};
}

/// Whether an error, or anything in its chain of sources, is a write to a
/// closed pipe: the reader (`head`, `less`) has all it wanted, which is
/// not a failure of the program.
pub fn is_broken_pipe(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if e.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe) {
            return true;
        }
        cause = e.source();
    }
    false
}

/// The `--version` text of a Glimpse program: its version, then the git
/// commit, target triple, cargo profile and compiler it was built with, one
/// per line. Expands in the program's own crate, which must use
/// `scripts/build-info.rs` as its build script.
#[macro_export]
macro_rules! long_version {
    () => {
        concat!(
            env!("CARGO_PKG_VERSION"),
            "\ncommit:  ",
            env!("GLIMPSE_BUILD_COMMIT"),
            "\ntarget:  ",
            env!("GLIMPSE_BUILD_TARGET"),
            "\nprofile: ",
            env!("GLIMPSE_BUILD_PROFILE"),
            "\nrustc:   ",
            env!("GLIMPSE_BUILD_RUSTC"),
        )
    };
}

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use zeroize::Zeroizing;

pub use glimpse_common::config::ConfigError;
pub use glimpse_common::permissions::{PermissionError, Protection};
pub use glimpse_common::tls::TlsConfigError;
use glimpse_common::tls::{certs_from_pem, crls_from_pem, key_from_pem};

/// Largest PEM file read: a certificate chain or a CRL of many thousand
/// revoked devices is well under this.
pub const MAX_PEM_FILE_LEN: u64 = 64 * 1024 * 1024;

/// Reads at most `max` bytes of `path`; `Ok(false)` if it is longer.
/// With `secret`, the open file must pass [`check_secret`] first (an
/// `Ok(Err)`): the file checked is the file read.
fn read_bounded(
    path: &Path,
    max: u64,
    out: &mut Vec<u8>,
    secret: Option<&'static str>,
) -> std::io::Result<Result<bool, PermissionError>> {
    let file = std::fs::File::open(path)?;
    if let Some(what) = secret {
        if let Err(e) = check_secret(path, &file.metadata()?, what) {
            return Ok(Err(e));
        }
    }
    file.take(max + 1).read_to_end(out)?;
    Ok(Ok(out.len() as u64 <= max))
}

/// A secret file (a database password, an object store's secret key)
/// could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretFileError {
    /// Group or others may read it.
    #[error(transparent)]
    Permissions(#[from] PermissionError),
    /// It could not be read.
    #[error("cannot read {what} {}: {source}", path.display())]
    Read {
        /// What it holds.
        what: &'static str,
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// It is empty, longer than any such secret, or not UTF-8 text.
    #[error("{what} {} must be one line of UTF-8 text of 1 to {max} bytes", path.display())]
    Invalid {
        /// What it holds.
        what: &'static str,
        /// The file.
        path: std::path::PathBuf,
        /// The limit.
        max: u64,
    },
}

/// Reads a one-line secret from a file that must pass [`check_secret`], at
/// most `max` bytes; a trailing newline is dropped and the buffer wiped on
/// drop.
pub fn read_secret_text(path: &Path, max: u64, what: &'static str) -> Result<Zeroizing<String>, SecretFileError> {
    let mut bytes = Zeroizing::new(Vec::new());
    let fits = read_bounded(path, max, &mut bytes, Some(what)).map_err(|source| SecretFileError::Read {
        what,
        path: path.to_owned(),
        source,
    })??;
    let invalid = || SecretFileError::Invalid { what, path: path.to_owned(), max };
    if !fits {
        return Err(invalid());
    }
    let text = std::str::from_utf8(&bytes).map_err(|_| invalid())?;
    let line = text.strip_suffix('\n').unwrap_or(text);
    let line = line.strip_suffix('\r').unwrap_or(line);
    if line.is_empty() || line.contains('\n') {
        return Err(invalid());
    }
    Ok(Zeroizing::new(line.to_owned()))
}

/// The rule for a file holding a secret (a private or shared key), given
/// its metadata (of the open file, so that the file checked is the one
/// read): no access for group or others.
pub fn check_secret(path: &Path, metadata: &std::fs::Metadata, what: &'static str) -> Result<(), PermissionError> {
    glimpse_common::permissions::check_mode(Protection::Secret, what, path, metadata.permissions().mode())
}

/// The rule for a directory holding data: group and others may not write
/// in it. A directory that does not exist yet passes (whoever creates it
/// creates it 0700); one that cannot be inspected is left to the code that
/// opens it to report.
pub fn check_data_dir(path: &Path, what: &'static str) -> Result<(), PermissionError> {
    match std::fs::metadata(path) {
        Ok(meta) => {
            glimpse_common::permissions::check_mode(Protection::DataDirectory, what, path, meta.permissions().mode())
        }
        Err(_) => Ok(()),
    }
}

/// Reads a UTF-8 config file of at most `max` bytes, never more.
pub fn read_config_text(path: &Path, max: u64) -> Result<String, ConfigError> {
    let read_error = |source| ConfigError::Read { path: path.to_owned(), source };
    let mut bytes = Vec::new();
    if !read_bounded(path, max, &mut bytes, None).map_err(read_error)?.unwrap_or(true) {
        return Err(ConfigError::TooLarge { path: path.to_owned(), max });
    }
    String::from_utf8(bytes)
        .map_err(|_| read_error(std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text")))
}

/// Reads a PEM file, bounded; the buffer is wiped on drop (it may hold a
/// key). A `secret` one must pass [`check_secret`].
fn read_pem(path: &Path, what: &'static str, secret: bool) -> Result<Zeroizing<Vec<u8>>, TlsConfigError> {
    let failed = |reason: String| TlsConfigError::Pem { what, path: path.to_owned(), reason };
    let mut bytes = Zeroizing::new(Vec::new());
    match read_bounded(path, MAX_PEM_FILE_LEN, &mut bytes, secret.then_some(what)) {
        Ok(Ok(true)) => Ok(bytes),
        Ok(Ok(false)) => Err(failed(format!("larger than {MAX_PEM_FILE_LEN} bytes"))),
        Ok(Err(e)) => Err(e.into()),
        Err(e) => Err(failed(e.to_string())),
    }
}

/// Loads every certificate in a PEM file (at least one).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    certs_from_pem(&read_pem(path, "certificate", false)?, path)
}

/// Loads the first private key (PKCS#8, PKCS#1 or SEC1) in a PEM file,
/// refusing one that group or others can access ([`check_secret`]).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsConfigError> {
    key_from_pem(&read_pem(path, "private key", true)?, path)
}

/// Loads every CRL in a PEM file.
pub fn load_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsConfigError> {
    crls_from_pem(&read_pem(path, "CRL", false)?, path)
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
    fn keys_open_to_others_and_writable_data_dirs_are_refused_by_name() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("device.key");
        std::fs::write(&key, "no pem here\n").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = load_key(&key).unwrap_err();
        assert!(matches!(err, TlsConfigError::Permissions(PermissionError { mode: 0o644, .. })), "{err}");
        let text = err.to_string();
        assert!(text.contains("device.key") && text.contains("0644") && text.contains("chmod 600"), "{text}");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(load_key(&key), Err(TlsConfigError::Pem { .. })), "checked, then read");

        let data = dir.path().join("data");
        assert_eq!(check_data_dir(&data, "data directory"), Ok(()), "not there yet");
        std::fs::create_dir(&data).unwrap();
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = check_data_dir(&data, "data directory").unwrap_err();
        assert!(err.to_string().contains("chmod go-w"), "{err}");
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(check_data_dir(&data, "data directory"), Ok(()));
    }

    #[test]
    fn secret_files_are_one_private_line() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("password");
        std::fs::write(&file, "s3cret\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = read_secret_text(&file, 64, "database password").unwrap_err();
        assert!(matches!(err, SecretFileError::Permissions(_)), "{err}");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_secret_text(&file, 64, "database password").unwrap().as_str(), "s3cret");
        for bad in ["", "\n", "two\nlines\n"] {
            std::fs::write(&file, bad).unwrap();
            let err = read_secret_text(&file, 64, "database password").unwrap_err().to_string();
            assert!(err.contains("password") && err.contains("one line"), "{bad:?}: {err}");
        }
        std::fs::write(&file, vec![b'x'; 65]).unwrap();
        assert!(matches!(read_secret_text(&file, 64, "key"), Err(SecretFileError::Invalid { .. })));
        let missing = read_secret_text(&dir.path().join("gone"), 64, "key").unwrap_err().to_string();
        assert!(missing.contains("gone"), "{missing}");
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
