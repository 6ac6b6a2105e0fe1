//! The collector's persistent SSH host key.
//!
//! Devices pin its fingerprint, so it must survive restarts: it is created
//! once, on first start, as an OpenSSH Ed25519 private key readable by the
//! collector's user only, and refused afterwards if anyone else can read it
//! (as sshd refuses an unprotected host key).

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use russh::keys::{Algorithm, PrivateKey};
use zeroize::Zeroizing;

use super::SshError;

/// Largest host key file read. An OpenSSH Ed25519 key is about 400 bytes.
const MAX_HOST_KEY_BYTES: u64 = 16 * 1024;

/// Loads the host key at `path`, creating it first if the file does not exist.
pub fn load_or_create(path: &Path) -> Result<PrivateKey, SshError> {
    let bad = |reason: String| SshError::HostKey { path: path.to_owned(), reason };
    match std::fs::symlink_metadata(path) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create(path)?,
        Err(e) => return Err(bad(e.to_string())),
    }
    load(path)
}

/// Loads the host key at `path`, which must exist (`glimpse-collector
/// check` reads it without creating it).
pub fn load(path: &Path) -> Result<PrivateKey, SshError> {
    let bad = |reason: String| SshError::HostKey { path: path.to_owned(), reason };
    let mut file = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
    // As sshd refuses an unprotected host key; the same rule as every key.
    glimpse_files::check_secret(path, &file.metadata().map_err(|e| bad(e.to_string()))?, "SSH host key")?;
    let mut text = Zeroizing::new(Vec::new());
    (&mut file).take(MAX_HOST_KEY_BYTES + 1).read_to_end(&mut text).map_err(|e| bad(e.to_string()))?;
    if text.len() as u64 > MAX_HOST_KEY_BYTES {
        return Err(bad(format!("larger than {MAX_HOST_KEY_BYTES} bytes; not a host key")));
    }
    let key = PrivateKey::from_openssh(&*text).map_err(|e| bad(format!("not an OpenSSH private key: {e}")))?;
    if key.is_encrypted() {
        return Err(bad("encrypted with a passphrase; the collector needs it unencrypted".into()));
    }
    if key.algorithm() != Algorithm::Ed25519 {
        return Err(bad(format!("a {} key; the collector serves an Ed25519 host key only", key.algorithm())));
    }
    Ok(key)
}

fn create(path: &Path) -> Result<(), SshError> {
    let bad = |reason: String| SshError::HostKey { path: path.to_owned(), reason };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| bad(format!("cannot create {}: {e}", parent.display())))?;
    }
    let generated = glimpse_common::ssh_keys::generate_ed25519("glimpse-collector").map_err(|e| bad(e.to_string()))?;
    // Written under a temporary name and renamed, so a crash never leaves a
    // half-written key that the next start would refuse.
    let tmp: PathBuf = path.with_extension(format!("tmp-{}", std::process::id()));
    let result = (|| {
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        file.write_all(generated.private_openssh.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(bad(format!("cannot create it: {e}")));
    }
    tracing::info!(path = %path.display(), "created a new SSH host key");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn created_once_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/ssh_host_ed25519_key");
        let first = load_or_create(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let again = load_or_create(&path).unwrap();
        assert_eq!(first.public_key().key_data(), again.public_key().key_data());
    }

    #[test]
    fn unprotected_foreign_or_garbage_keys_are_refused_with_a_reason() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        load_or_create(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(load_or_create(&path).unwrap_err().to_string().contains("chmod 600"));

        std::fs::write(&path, b"not a key").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(load_or_create(&path).unwrap_err().to_string().contains("not an OpenSSH private key"));

        std::fs::write(&path, vec![b'A'; MAX_HOST_KEY_BYTES as usize + 10]).unwrap();
        assert!(load_or_create(&path).unwrap_err().to_string().contains("larger than"));
    }
}
