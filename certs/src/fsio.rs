//! Careful file writing: private files are born `0600`, nothing is replaced
//! unless the caller said `force`, and a forced replacement is atomic.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::CertsError;

/// Who may read a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Keys and records holding keys: owner only (`0600`).
    Private,
    /// Certificates and CRLs (`0644`).
    Public,
}

impl Access {
    #[cfg(unix)]
    fn mode(self) -> u32 {
        match self {
            Access::Private => 0o600,
            Access::Public => 0o644,
        }
    }
}

/// Creates `dir` and its parents, owner-only, if missing.
pub(crate) fn ensure_dir(dir: &Path) -> Result<(), CertsError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(|e| CertsError::io("create directory", dir, e))
}

/// Fails with [`CertsError::AlreadyExists`] naming the first of `paths` that
/// exists, unless `force`. Checked before any slow work so that a refusal is
/// immediate and leaves nothing half-written.
pub(crate) fn refuse_existing<'a>(paths: impl IntoIterator<Item = &'a Path>, force: bool) -> Result<(), CertsError> {
    if force {
        return Ok(());
    }
    for path in paths {
        match fs::symlink_metadata(path) {
            Ok(_) => return Err(CertsError::AlreadyExists { path: path.to_path_buf() }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(CertsError::io("inspect", path, e)),
        }
    }
    Ok(())
}

fn open_new(path: &Path, access: Access) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, access.mode());
    #[cfg(not(unix))]
    let _ = access;
    options.open(path)
}

/// Creates `path` (never following or replacing an existing file), writes
/// `contents` and syncs; removes the partial file if writing fails.
fn create_with(path: &Path, contents: &[u8], access: Access) -> Result<(), CertsError> {
    let mut file = open_new(path, access).map_err(|e| {
        if e.kind() == io::ErrorKind::AlreadyExists {
            CertsError::AlreadyExists { path: path.to_path_buf() }
        } else {
            CertsError::io("create", path, e)
        }
    })?;
    if let Err(e) = file.write_all(contents).and_then(|()| file.sync_all()) {
        drop(file);
        let _ = fs::remove_file(path);
        return Err(CertsError::io("write", path, e));
    }
    Ok(())
}

fn temp_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}-{:016x}", std::process::id(), rand::random::<u64>()))
}

/// Writes a new file. Without `force` an existing file is an error; with it,
/// the new contents go to a fresh temporary file (with the right mode from
/// the start) that is then renamed over the old one.
pub(crate) fn write_file(path: &Path, contents: &[u8], access: Access, force: bool) -> Result<(), CertsError> {
    if force {
        let tmp = temp_path(path);
        create_with(&tmp, contents, access)?;
        if let Err(e) = fs::rename(&tmp, path) {
            let _ = fs::remove_file(&tmp);
            return Err(CertsError::io("replace", path, e));
        }
    } else {
        create_with(path, contents, access)?;
    }
    sync_parent(path)
}

/// Makes a completed create or rename durable.
fn sync_parent(path: &Path) -> Result<(), CertsError> {
    #[cfg(unix)]
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        File::open(parent).and_then(|d| d.sync_all()).map_err(|e| CertsError::io("sync directory", parent, e))?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// Reads a public text file.
pub(crate) fn read_text(path: &Path) -> Result<String, CertsError> {
    fs::read_to_string(path).map_err(|e| CertsError::io("read", path, e))
}

/// Reads a file holding key material into a buffer that is wiped on drop,
/// warning if other users can read it.
pub(crate) fn read_secret(path: &Path) -> Result<Zeroizing<String>, CertsError> {
    let mut file = File::open(path).map_err(|e| CertsError::io("read", path, e))?;
    let meta = file.metadata().map_err(|e| CertsError::io("inspect", path, e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(path = %path.display(), mode = format_args!("{mode:o}"),
                "private key file is readable by other users; chmod 600 it");
        }
    }
    // Reserve up front so that growing the buffer leaves no unwiped copies behind.
    let capacity = usize::try_from(meta.len()).unwrap_or(0).saturating_add(1);
    let mut text = Zeroizing::new(String::with_capacity(capacity));
    file.read_to_string(&mut text).map_err(|e| CertsError::io("read", path, e))?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_files_are_0600_and_never_replaced_without_force() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        write_file(&path, b"one", Access::Private, false).unwrap();
        let err = write_file(&path, b"two", Access::Private, false).unwrap_err();
        assert!(matches!(err, CertsError::AlreadyExists { .. }), "{err}");
        assert!(err.to_string().contains(&path.display().to_string()));
        assert_eq!(fs::read(&path).unwrap(), b"one");
        write_file(&path, b"three", Access::Private, true).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"three");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        // No temporary files are left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
