//! Bounded reads of the kernel's text files.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::Path;

use tracing::warn;

use super::{HostProbe, ProbeError};

/// Read cap for ordinary files. procfs reports a size of 0, so the cap, not
/// the file's metadata, bounds the read.
pub(super) const FILE_LIMIT: usize = 64 * 1024;
/// Read cap for the routing tables, which grow with the number of routes.
pub(super) const TABLE_LIMIT: usize = 1024 * 1024;
/// Read cap for single-value sysfs and procfs files.
pub(super) const VALUE_LIMIT: usize = 4 * 1024;

/// A kind of problem with a source, for logging each one once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Issue {
    Missing,
    Unreadable,
    TooLarge,
    Malformed,
    Overflow,
}

/// The outcome of reading one file.
pub(super) enum Fetched {
    /// Its text (cut at the last newline if the file was over the cap).
    Text(String),
    /// It does not exist; the caller decides whether that is worth a warning.
    Missing,
    /// It exists but could not be read; already logged.
    Failed,
}

/// Reads at most `limit` bytes of the regular file at `path`. `Ok(None)` when
/// it does not exist; the flag says whether there was more.
pub(crate) fn read_capped(path: &Path, limit: usize) -> io::Result<Option<(Vec<u8>, bool)>> {
    let absent = |e: &io::Error| matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory);
    // Only regular files: opening a FIFO planted at one of our paths would
    // block the daemon. procfs and sysfs attributes are regular files.
    match fs::metadata(path) {
        Ok(meta) if meta.is_file() => {}
        Ok(_) => return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a regular file")),
        Err(e) if absent(&e) => return Ok(None),
        Err(e) => return Err(e),
    }
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if absent(&e) => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut bytes = Vec::new();
    file.take(limit as u64 + 1).read_to_end(&mut bytes)?;
    let over = bytes.len() > limit;
    bytes.truncate(limit);
    Ok(Some((bytes, over)))
}

/// Text from file bytes: a cut file loses its partial last line, and invalid
/// UTF-8 is replaced rather than rejected.
pub(crate) fn decode(mut bytes: Vec<u8>, over: bool) -> String {
    if over {
        let keep = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        bytes.truncate(keep);
    }
    match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

impl HostProbe {
    /// Reads `path` with a cap of `limit` bytes. Unreadable and oversized
    /// files are logged once per `key`; a missing file is left to the caller.
    pub(super) fn fetch(&mut self, key: &'static str, path: &Path, limit: usize) -> Fetched {
        match read_capped(path, limit) {
            Ok(Some((bytes, over))) => {
                if over && self.first_time(key, Issue::TooLarge) {
                    let error = ProbeError::TooLarge { limit };
                    warn!(path = %path.display(), "{error}");
                }
                Fetched::Text(decode(bytes, over))
            }
            Ok(None) => Fetched::Missing,
            Err(e) => {
                if self.first_time(key, Issue::Unreadable) {
                    let error = ProbeError::Unreadable(e);
                    warn!(path = %path.display(), "{error}");
                }
                Fetched::Failed
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_capped_and_cut_at_a_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, "one\ntwo\nthree").unwrap();
        let (bytes, over) = read_capped(&path, 10).unwrap().unwrap();
        assert!(over);
        assert_eq!(decode(bytes, over), "one\ntwo\n");
        let (bytes, over) = read_capped(&path, 100).unwrap().unwrap();
        assert!(!over);
        assert_eq!(decode(bytes, over), "one\ntwo\nthree");
        assert!(read_capped(&dir.path().join("absent"), 10).unwrap().is_none());
        assert!(read_capped(&path.join("below-a-file"), 10).unwrap().is_none());
        assert!(read_capped(dir.path(), 10).is_err());
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        assert_eq!(decode(b"ap\xff-1\n".to_vec(), false), "ap\u{fffd}-1\n");
    }
}
