//! The write seam: the few file system operations the local segment store
//! performs, behind a trait, so tests can run the store over a file system
//! that loses unsynced writes, tears them or runs out of space.
//!
//! # Contract every implementation keeps
//!
//! - [`FsFile::append`] adds bytes at the end of the file; they are durable
//!   only once [`FsFile::sync`] has returned `Ok`. An append that fails may
//!   have written a prefix of its bytes.
//! - A created, renamed or removed directory entry is durable only once
//!   [`FileSystem::sync_dir`] of its parent has returned `Ok`.
//! - Errors are plain [`io::Error`]s; the caller decides what they mean
//!   (see `SegmentError::is_transient`).
//!
//! [`StdFs`] is the real thing: `std::fs`, directories 0700 and files 0600.
//! The fault-injecting implementation lives with the tests
//! (`faulty_fs.rs`). What is deliberately not here: buffering, caching or
//! any notion of segments; this is only the file system.

use std::fmt;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Arc;

/// One entry of a directory listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsEntry {
    /// The entry's file name (lossily converted if it is not UTF-8, which
    /// no name the store writes is).
    pub name: String,
    /// Whether it is a directory.
    pub is_dir: bool,
    /// Whether it is a regular file.
    pub is_file: bool,
    /// Its length in bytes (0 for directories).
    pub len: u64,
}

/// An open file of a [`FileSystem`]. Shared between the writer and the
/// group commit that syncs it, so every method takes `&self`.
pub trait FsFile: Send + Sync + fmt::Debug {
    /// Writes all of `bytes` at the end of the file (not yet durable).
    fn append(&self, bytes: &[u8]) -> io::Result<()>;
    /// Makes everything appended so far durable.
    fn sync(&self) -> io::Result<()>;
    /// The file's current length in bytes, synced or not.
    fn size(&self) -> io::Result<u64>;
    /// Fills `buf` from byte `pos`; fails if that runs past the end.
    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()>;
    /// Cuts the file to `len` bytes (not yet durable: sync after).
    fn truncate(&self, len: u64) -> io::Result<()>;
}

/// The file system operations the local segment store uses, and no more.
pub trait FileSystem: Send + Sync + fmt::Debug {
    /// Creates one directory (its parent must exist); `AlreadyExists` if it
    /// does.
    fn create_dir(&self, dir: &Path) -> io::Result<()>;
    /// Whether `path` is a directory.
    fn is_dir(&self, path: &Path) -> bool;
    /// Whether anything exists at `path`.
    fn exists(&self, path: &Path) -> bool;
    /// Creates a new, empty file; `AlreadyExists` if there is one.
    fn create_new(&self, path: &Path) -> io::Result<Arc<dyn FsFile>>;
    /// Opens an existing file for reading and, if `write`, appending and
    /// truncating.
    fn open(&self, path: &Path, write: bool) -> io::Result<Arc<dyn FsFile>>;
    /// The entries of a directory, in no particular order.
    fn list(&self, dir: &Path) -> io::Result<Vec<FsEntry>>;
    /// Renames a file within one directory.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes a file.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Removes an empty directory.
    fn remove_dir(&self, dir: &Path) -> io::Result<()>;
    /// Removes a directory and everything in it.
    fn remove_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Makes the entries created, renamed or removed in `dir` durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// The real file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct StdFs;

#[derive(Debug)]
struct StdFile(File);

impl FsFile for StdFile {
    fn append(&self, bytes: &[u8]) -> io::Result<()> {
        (&self.0).write_all(bytes)
    }

    fn sync(&self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }

    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        FileExt::read_exact_at(&self.0, buf, pos)
    }

    fn truncate(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
}

impl FileSystem for StdFs {
    fn create_dir(&self, dir: &Path) -> io::Result<()> {
        DirBuilder::new().mode(0o700).create(dir)
    }

    fn is_dir(&self, path: &Path) -> bool {
        path.is_dir()
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }

    fn create_new(&self, path: &Path) -> io::Result<Arc<dyn FsFile>> {
        // O_APPEND: every write lands at the end, also after a truncation.
        let file = OpenOptions::new().read(true).append(true).create_new(true).mode(0o600).open(path)?;
        Ok(Arc::new(StdFile(file)))
    }

    fn open(&self, path: &Path, write: bool) -> io::Result<Arc<dyn FsFile>> {
        let file = OpenOptions::new().read(true).append(write).open(path)?;
        Ok(Arc::new(StdFile(file)))
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<FsEntry>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(dir)?.flatten() {
            let Ok(file_type) = entry.file_type() else { continue };
            let len = if file_type.is_file() { entry.metadata().map(|m| m.len()).unwrap_or(0) } else { 0 };
            out.push(FsEntry {
                name: entry.file_name().to_string_lossy().into_owned(),
                is_dir: file_type.is_dir(),
                is_file: file_type.is_file(),
                len,
            });
        }
        Ok(out)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn remove_dir(&self, dir: &Path) -> io::Result<()> {
        fs::remove_dir(dir)
    }

    fn remove_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::remove_dir_all(dir)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
}
