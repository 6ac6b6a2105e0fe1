//! The collector's master key file.
//!
//! Format: exactly 64 hexadecimal digits (either case), optionally followed
//! by one `\n` (or `\r\n`). Hex rather than raw bytes so an operator can
//! back it up on paper and see at a glance that a file is complete. The file
//! must not be accessible to group or others (mode 0600 or 0400).

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use glimpse_common::secret::{SecretKey, KEY_LEN};
use zeroize::Zeroizing;

use super::{random_key, KeyError};

/// Longest acceptable file: 64 hex digits and `\r\n`.
const MAX_FILE_LEN: usize = KEY_LEN * 2 + 2;

/// The key that wraps every organisation key and device shared key.
///
/// Wiped from memory when dropped; `Debug` never prints it.
pub struct MasterKey {
    key: SecretKey,
    /// The file it was loaded from (rotation writes its successor beside
    /// it and then renames that over it).
    file: Option<PathBuf>,
}

impl MasterKey {
    /// Loads a master key file, refusing one that group or others can
    /// access, that is not a regular file, or that is not 64 hex digits.
    pub fn load(path: &Path) -> Result<MasterKey, KeyError> {
        let io_err = |source: io::Error| KeyError::MasterKeyIo { path: path.to_path_buf(), source };
        let format_err = |problem: String| KeyError::MasterKeyFormat { path: path.to_path_buf(), problem };
        let file = match File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(KeyError::MasterKeyMissing { path: path.to_path_buf() })
            }
            Err(e) => return Err(io_err(e)),
        };
        // Metadata of the open handle, not the path, so the checked file is
        // the one that is read.
        let meta = file.metadata().map_err(io_err)?;
        if !meta.is_file() {
            return Err(format_err("it is not a regular file".into()));
        }
        let mode = meta.permissions().mode() & 0o7777;
        let rule = glimpse_common::permissions::Protection::Secret;
        if glimpse_common::permissions::check_mode(rule, "master key file", path, mode).is_err() {
            return Err(KeyError::MasterKeyPermissions { path: path.to_path_buf(), mode });
        }
        if meta.len() > MAX_FILE_LEN as u64 {
            return Err(format_err(format!("the file is {} bytes long", meta.len())));
        }

        // A fixed buffer: no reallocation can leave copies of the key behind.
        let mut buf = Zeroizing::new([0u8; MAX_FILE_LEN + 1]);
        let mut len = 0;
        let mut limited = file.take(MAX_FILE_LEN as u64 + 1);
        loop {
            let n = limited.read(&mut buf[len..]).map_err(io_err)?;
            if n == 0 {
                break;
            }
            len += n;
        }
        let mut text = &buf[..len];
        if let Some(rest) = text.strip_suffix(b"\n") {
            text = rest.strip_suffix(b"\r").unwrap_or(rest);
        }
        if text.len() != KEY_LEN * 2 {
            return Err(format_err(format!("found {} characters before the end of the file", text.len())));
        }
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        hex::decode_to_slice(text, bytes.as_mut_slice())
            .map_err(|_| format_err("it contains a character that is not a hex digit".into()))?;
        Ok(MasterKey { key: SecretKey::from_bytes(*bytes), file: Some(path.to_path_buf()) })
    }

    /// Creates a new master key file with mode 0600 and returns the key.
    /// Never overwrites an existing file.
    pub fn generate_file(path: &Path) -> Result<MasterKey, KeyError> {
        let io_err = |source: io::Error| KeyError::MasterKeyIo { path: path.to_path_buf(), source };
        let key = random_key()?;
        let mut file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                KeyError::MasterKeyExists { path: path.to_path_buf() }
            } else {
                io_err(e)
            }
        })?;
        let written = (|| {
            // The umask may have cleared bits; make the mode exactly 0600.
            file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
            // Two writes rather than pushing '\n': growing the string could
            // leave an unwiped copy of the key in freed memory.
            file.write_all(key.to_hex().as_bytes())?;
            file.write_all(b"\n")?;
            file.sync_all()?;
            sync_parent(path)
        })();
        if let Err(e) = written {
            // A half-written key file would be refused later anyway; remove
            // it so that a retry can succeed.
            drop(file);
            let _ = std::fs::remove_file(path);
            return Err(io_err(e));
        }
        Ok(MasterKey { key, file: Some(path.to_path_buf()) })
    }

    /// Wraps a key held elsewhere (tests, tools that derive the file path
    /// themselves).
    pub fn from_secret(key: SecretKey) -> MasterKey {
        MasterKey { key, file: None }
    }

    /// The file this key was loaded from or written to, if any.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// Where a rotation writes the successor of the key file `path`:
    /// `<path>.next`, in the same directory, so the final rename is atomic.
    pub fn next_path(path: &Path) -> PathBuf {
        let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
        name.push(".next");
        path.with_file_name(name)
    }

    /// The successor key an interrupted rotation left beside this key's
    /// file, if there is one that loads.
    pub(crate) fn pending(&self) -> Option<MasterKey> {
        let next = MasterKey::next_path(self.file.as_deref()?);
        MasterKey::load(&next).ok()
    }

    /// Whether a successor file (loadable or not) exists beside this key's.
    pub(crate) fn pending_file(&self) -> Option<PathBuf> {
        let next = MasterKey::next_path(self.file.as_deref()?);
        next.symlink_metadata().is_ok().then_some(next)
    }

    /// Writes a fresh successor key to `<file>.next` (mode 0600, synced),
    /// replacing a stale one a rolled-back rotation left.
    pub(crate) fn generate_next(file: &Path) -> Result<MasterKey, KeyError> {
        let next = MasterKey::next_path(file);
        match std::fs::remove_file(&next) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(KeyError::MasterKeyIo { path: next, source }),
        }
        MasterKey::generate_file(&next)
    }

    /// Makes the successor written by [`MasterKey::generate_next`] the key
    /// file `file` (an atomic rename, then the directory synced) and
    /// makes `next` name `file`.
    pub(crate) fn promote(next: &mut MasterKey, file: &Path) -> Result<(), KeyError> {
        let from = MasterKey::next_path(file);
        std::fs::rename(&from, file)
            .and_then(|()| sync_parent(file))
            .map_err(|source| KeyError::MasterKeyIo { path: file.to_path_buf(), source })?;
        next.file = Some(file.to_path_buf());
        Ok(())
    }

    /// The key, for the wrapping code in this module only.
    pub(crate) fn secret(&self) -> &SecretKey {
        &self.key
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey([redacted])")
    }
}

/// The master key in use, swapped whole by a rotation. Whoever wraps a
/// key and stores it, or reads a wrapped key and unwraps it, holds
/// [`MasterCell::read`] across both, so a rotation (which holds
/// [`MasterCell::write`] while it rewraps every row) never interleaves
/// with them: no row is ever left wrapped under a key that is gone.
#[derive(Debug)]
pub(crate) struct MasterCell {
    key: std::sync::RwLock<std::sync::Arc<MasterKey>>,
}

impl MasterCell {
    pub(crate) fn new(key: MasterKey) -> MasterCell {
        MasterCell { key: std::sync::RwLock::new(std::sync::Arc::new(key)) }
    }

    /// The key in use; a rotation waits until the guard drops. Never
    /// take it twice on one thread (a waiting rotation would deadlock it).
    pub(crate) fn read(&self) -> std::sync::RwLockReadGuard<'_, std::sync::Arc<MasterKey>> {
        // The slot only ever holds a whole key: a panic elsewhere cannot
        // have left it half-changed.
        self.key.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Exclusive use, for a rotation.
    pub(crate) fn write(&self) -> std::sync::RwLockWriteGuard<'_, std::sync::Arc<MasterKey>> {
        self.key.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Makes a new directory entry durable.
fn sync_parent(path: &Path) -> io::Result<()> {
    let parent: PathBuf = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    File::open(parent)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_mode(path: &Path, content: &[u8], mode: u32) {
        std::fs::write(path, content).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn generate_then_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let key = MasterKey::generate_file(&path).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(meta.len(), 65);
        assert_eq!(MasterKey::load(&path).unwrap().secret(), key.secret());
        let err = MasterKey::generate_file(&path).unwrap_err();
        assert!(matches!(err, KeyError::MasterKeyExists { .. }), "{err}");
        assert_eq!(MasterKey::load(&path).unwrap().secret(), key.secret());
        assert_eq!(format!("{key:?}"), "MasterKey([redacted])");
    }

    #[test]
    fn refuses_group_or_other_access() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("loose.key");
        write_mode(&path, "ab".repeat(32).as_bytes(), 0o644);
        let err = MasterKey::load(&path).unwrap_err();
        assert!(matches!(err, KeyError::MasterKeyPermissions { mode: 0o644, .. }));
        let msg = err.to_string();
        assert!(msg.contains("loose.key") && msg.contains("0644"), "{msg}");
        for ok in [0o600, 0o400] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(ok)).unwrap();
            MasterKey::load(&path).unwrap();
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(MasterKey::load(&path).is_err());
    }

    #[test]
    fn refuses_bad_content_and_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.key");
        let hex = "0f".repeat(32);
        for bad in [
            "ab".repeat(31),
            "ab".repeat(33),
            format!("{hex}\n\n"),
            format!(" {hex}"),
            format!("{}zz", &hex[..62]),
            String::new(),
        ] {
            write_mode(&path, bad.as_bytes(), 0o600);
            let err = MasterKey::load(&path).unwrap_err();
            assert!(matches!(err, KeyError::MasterKeyFormat { .. }), "{bad:?}: {err}");
            let msg = err.to_string();
            assert!(msg.contains("bad.key"), "{msg}");
            assert!(!msg.contains("abab"), "error leaks key material: {msg}");
        }
        write_mode(&path, &[7u8; 32], 0o600);
        assert!(matches!(MasterKey::load(&path), Err(KeyError::MasterKeyFormat { .. })));
        for good in [hex.clone(), format!("{hex}\n"), format!("{hex}\r\n"), hex.to_uppercase()] {
            write_mode(&path, good.as_bytes(), 0o600);
            assert_eq!(MasterKey::load(&path).unwrap().secret(), &SecretKey::from_bytes([0x0f; KEY_LEN]));
        }
    }

    #[test]
    fn missing_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent.key");
        let err = MasterKey::load(&path).unwrap_err();
        assert!(matches!(err, KeyError::MasterKeyMissing { .. }));
        assert!(err.to_string().contains("absent.key"));
    }
}
