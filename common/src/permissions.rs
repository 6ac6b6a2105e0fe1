//! The one permission rule for what both programs read: files that hold a
//! secret (private keys, shared keys, the master key) must not be open to
//! group or others at all, and directories that hold data must not be
//! writable by them. The same rule, with the same refusal naming the file,
//! the mode found and the `chmod` to run, everywhere: the agent's TLS key,
//! shared key and SSH key, the collector's TLS key, SSH host key, master key
//! and data directory.
//!
//! A pure check of a mode the caller read: this crate does no file I/O
//! (the edges read the metadata, `glimpse-files` for most of them).

use std::fmt;
use std::path::{Path, PathBuf};

/// What a path must be protected as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Protection {
    /// A file holding a secret: no access for group or others
    /// (`mode & 0o077 == 0`, so 0600 or 0400).
    Secret,
    /// A directory holding data: group and others may not write in it
    /// (`mode & 0o022 == 0`), or they could replace what it holds.
    DataDirectory,
}

impl Protection {
    /// The mode bits this protection forbids.
    pub fn forbidden(self) -> u32 {
        match self {
            Protection::Secret => 0o077,
            Protection::DataDirectory => 0o022,
        }
    }
}

/// A file or directory is open to other users; it is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct PermissionError {
    /// What the path is ("private key", "shared key", "data directory"...).
    pub what: &'static str,
    /// The path.
    pub path: PathBuf,
    /// Its permission bits as found.
    pub mode: u32,
    /// The rule it broke.
    pub protection: Protection,
}

impl fmt::Display for PermissionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (who, fix) = match self.protection {
            Protection::Secret => ("group or others can access it", "chmod 600"),
            Protection::DataDirectory => ("group or others can write in it", "chmod go-w"),
        };
        write!(
            f,
            "{} {} has mode {:04o}: {who}; refused (run `{fix} {}`)",
            self.what,
            self.path.display(),
            self.mode & 0o7777,
            self.path.display()
        )
    }
}

/// Checks `mode` (the `st_mode` permission bits of `path`) against `protection`.
pub fn check_mode(protection: Protection, what: &'static str, path: &Path, mode: u32) -> Result<(), PermissionError> {
    if mode & protection.forbidden() == 0 {
        return Ok(());
    }
    Err(PermissionError { what, path: path.to_owned(), mode: mode & 0o7777, protection })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_owner_only_and_data_directories_owner_writable() {
        let key = Path::new("/etc/glimpse/device.key");
        for ok in [0o600, 0o400, 0o100600, 0o700] {
            assert_eq!(check_mode(Protection::Secret, "private key", key, ok), Ok(()), "{ok:o}");
        }
        for bad in [0o640, 0o604, 0o644, 0o100644, 0o660] {
            assert!(check_mode(Protection::Secret, "private key", key, bad).is_err(), "{bad:o}");
        }
        let err = check_mode(Protection::Secret, "private key", key, 0o100644).unwrap_err();
        assert_eq!(
            err.to_string(),
            "private key /etc/glimpse/device.key has mode 0644: group or others can access it; refused \
             (run `chmod 600 /etc/glimpse/device.key`)"
        );
        let data = Path::new("/var/lib/glimpse");
        for ok in [0o700, 0o750, 0o755] {
            assert_eq!(check_mode(Protection::DataDirectory, "data directory", data, ok), Ok(()), "{ok:o}");
        }
        let err = check_mode(Protection::DataDirectory, "data directory", data, 0o41777).unwrap_err();
        assert_eq!(err.mode, 0o1777);
        assert!(err.to_string().contains("has mode 1777") && err.to_string().contains("`chmod go-w /var/lib/glimpse`"));
        assert!(check_mode(Protection::DataDirectory, "data directory", data, 0o770).is_err());
    }
}
