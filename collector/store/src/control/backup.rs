//! The verified copy of the control store, `glimpse.redb.backup`: every
//! row of `glimpse.redb` (wrapped keys, registry, decisions, sequences,
//! the segment catalog, the audit head) as one checksummed file, so that a
//! damaged database does not take every organisation's keys with it.
//!
//! # Format (integers big-endian)
//!
//! ```text
//!   magic    8 bytes  "GLCTLBK\x01"
//!   length   u64      of the body
//!   sha256   32 bytes of the body
//!   body     postcard(Dump)
//! ```
//!
//! It holds only what the database holds: wrapped keys, never a key in the
//! clear, so it needs the master key like the database does.
//!
//! # Writing
//!
//! Written to `<name>.tmp` (mode 0600), fsynced, read back and checked
//! (checksum and decoding), renamed over the previous copy and the
//! directory fsynced: at every moment there is one whole, verified copy.
//! A copy is written when the collector opens a store it has verified,
//! after every change of keys, registry, decisions or catalog deletions,
//! after every [`HOT_WRITES_PER_BACKUP`] sequence or audit-head commits,
//! and when the store closes.

use std::fs::OpenOptions;
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::seam::{SegmentRow, SegmentRowKey};

/// Suffix added to the database's file name for its verified copy.
pub const BACKUP_SUFFIX: &str = ".backup";
const MAGIC: &[u8; 8] = b"GLCTLBK\x01";
/// Largest copy read back: far beyond any registry, and a bound on what a
/// damaged length field can make us allocate.
pub const MAX_BACKUP_BYTES: u64 = 1 << 30;
/// Sequence and audit-head commits (one per group commit of batches)
/// between two copies; every other change writes one at once.
pub const HOT_WRITES_PER_BACKUP: u64 = 512;

/// Every row of the control store.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Dump {
    /// `meta`.
    pub meta: Vec<(String, Vec<u8>)>,
    /// `devices`.
    pub devices: Vec<((String, String), Vec<u8>)>,
    /// `device_ssh_keys`.
    pub ssh_keys: Vec<((String, String), String)>,
    /// `stream_seq`.
    pub streams: Vec<((String, String, u64), u64)>,
    /// `org_keys`.
    pub org_keys: Vec<(String, Vec<u8>)>,
    /// `org_policy`.
    pub org_policy: Vec<(String, Vec<u8>)>,
    /// `collector_state`.
    pub collector_state: Vec<(String, String)>,
    /// `audit_head`.
    pub audit_head: Vec<(String, Vec<u8>)>,
    /// `segment_catalog`.
    pub segments: Vec<(SegmentRowKey, SegmentRow)>,
}

impl Dump {
    /// Rows in all tables.
    pub fn rows(&self) -> usize {
        self.meta.len()
            + self.devices.len()
            + self.ssh_keys.len()
            + self.streams.len()
            + self.org_keys.len()
            + self.org_policy.len()
            + self.collector_state.len()
            + self.audit_head.len()
            + self.segments.len()
    }
}

/// The verified copy of the database at `db_path`.
pub fn backup_path(db_path: &Path) -> PathBuf {
    let mut name = db_path.file_name().unwrap_or_default().to_os_string();
    name.push(BACKUP_SUFFIX);
    db_path.with_file_name(name)
}

fn invalid(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

fn encode(dump: &Dump) -> io::Result<Vec<u8>> {
    let body = postcard::to_stdvec(dump).map_err(|e| invalid(format!("cannot encode: {e}")))?;
    let digest = ring::digest::digest(&ring::digest::SHA256, &body);
    let mut out = Vec::with_capacity(48 + body.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(body.len() as u64).to_be_bytes());
    out.extend_from_slice(digest.as_ref());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Decodes and checks a copy's bytes.
pub fn decode(bytes: &[u8]) -> io::Result<Dump> {
    if bytes.len() < 48 || &bytes[..8] != MAGIC {
        return Err(invalid("not a glimpse key store copy (bad magic or too short)".into()));
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&bytes[8..16]);
    let len = u64::from_be_bytes(len);
    let body = &bytes[48..];
    if body.len() as u64 != len {
        return Err(invalid(format!("the copy is {} bytes long, its header says {len} (truncated?)", body.len())));
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, body);
    if digest.as_ref() != &bytes[16..48] {
        return Err(invalid("checksum mismatch: the copy is damaged".into()));
    }
    postcard::from_bytes(body).map_err(|e| invalid(format!("checksum matches but the rows do not decode: {e}")))
}

/// Reads and checks the copy at `path`.
pub fn read(path: &Path) -> io::Result<Dump> {
    let file = std::fs::File::open(path)?;
    let mut bytes = Vec::new();
    file.take(MAX_BACKUP_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_BACKUP_BYTES {
        return Err(invalid(format!("larger than {MAX_BACKUP_BYTES} bytes")));
    }
    decode(&bytes)
}

/// Writes `dump` to `path` atomically and verified (see the module header).
pub fn write(path: &Path, dump: &Dump) -> io::Result<()> {
    let bytes = encode(dump)?;
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    {
        let mut file = OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
    }
    // What reached the disk is what a recovery will read: check it.
    let back = read(&tmp)?;
    if back != *dump {
        return Err(invalid("the copy read back differs from what was written".into()));
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_round_trips_and_any_damage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("glimpse.redb.backup");
        let dump = Dump {
            org_keys: vec![("acme".into(), vec![1; 61])],
            streams: vec![(("acme".into(), "ap-1".into(), 7), 42)],
            ..Dump::default()
        };
        write(&path, &dump).unwrap();
        assert_eq!(read(&path).unwrap(), dump);
        let bytes = std::fs::read(&path).unwrap();
        for at in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[at] ^= 0x10;
            assert!(decode(&bad).is_err(), "flip at {at} accepted");
        }
        assert!(decode(&bytes[..bytes.len() - 1]).is_err());
        assert_eq!(backup_path(Path::new("/d/glimpse.redb")), Path::new("/d/glimpse.redb.backup"));
    }
}
