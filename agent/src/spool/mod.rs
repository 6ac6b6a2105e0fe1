//! The agent's spool: records not yet acknowledged, kept on disk so that a
//! collector outage or an agent restart (even `kill -9`) loses nothing the
//! spool had room for.
//!
//! The in-memory queue stays the working copy; the spool is its log
//! ([`format`]). New records, removals and acknowledgements are buffered
//! and written in groups (`[spool] sync_interval_ms`), and a batch's
//! membership is made durable *before* the batch is sent, so that after a
//! crash the same records go out under the same sequence number and the
//! collector recognises any it already stored. When the file outgrows
//! `[spool] max_bytes` it is compacted: rewritten with only the live
//! records, atomically (temporary file, fsync, rename).
//!
//! The file is created 0600. Damaged entries (each has its own checksum)
//! are skipped and counted, the rest kept, and the spool is rewritten
//! without them so that the damage is reported once; one log line names
//! the file and what was lost. Only a file that is not a spool at all (bad
//! header, over its size bound) is replaced by an empty one. Either way the
//! agent keeps running.

pub mod format;

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use glimpse_common::record::Record;

pub use format::{SpoolDamage, SpoolEntry, SpoolFormatError, SpoolState};

/// A spool file could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpoolError {
    /// Reading, writing or syncing the file failed.
    #[error("spool {path}: {source}")]
    Io {
        /// The spool file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// Another process (a second agent with the same config) holds the spool.
    #[error("spool {0} is in use by another process; give each agent its own [spool] path")]
    InUse(PathBuf),
    /// An entry could not be encoded (a record beyond the format's bounds).
    #[error("spool entry not encodable: {0}")]
    Encode(String),
}

/// The open spool file.
#[derive(Debug)]
pub struct Spool {
    path: PathBuf,
    file: Arc<File>,
    /// Bytes in the file, including what `pending` will add.
    len: u64,
    max_bytes: u64,
    stream_id: u64,
    /// Entries encoded but not yet written.
    pending: Vec<u8>,
}

/// What opening a spool found.
#[derive(Debug)]
pub struct Opened {
    /// The spool, ready to append.
    pub spool: Spool,
    /// What it held (empty for a new or discarded spool).
    pub state: SpoolState,
    /// Why an existing spool was discarded, if it was.
    pub discarded: Option<String>,
    /// Damaged entries skipped in an existing spool (also in `state.damage`).
    pub damage: format::SpoolDamage,
}

impl Spool {
    /// Opens the spool at `path`, replaying what it holds; a missing file
    /// starts a new spool for `new_stream_id`, a damaged one is replaced.
    pub fn open(path: &Path, max_bytes: u64, new_stream_id: u64) -> Result<Opened, SpoolError> {
        let io_err = |source| SpoolError::Io { path: path.to_owned(), source };
        let mut discarded = None;
        let mut existing = None;
        match File::open(path) {
            Ok(file) => {
                // A spool is never larger than twice its bound (compaction
                // runs past it); more means it is not ours to trust.
                let limit = max_bytes.saturating_mul(2).saturating_add(format::MAX_ENTRY_LEN as u64);
                let mut bytes = Vec::new();
                file.take(limit + 1).read_to_end(&mut bytes).map_err(io_err)?;
                if bytes.len() as u64 > limit {
                    discarded = Some(format!("larger than {limit} bytes"));
                } else {
                    match format::replay(&bytes) {
                        Ok(state) => existing = Some((state, bytes.len())),
                        Err(e) => discarded = Some(e.to_string()),
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(e)),
        }
        if let Some(reason) = &discarded {
            tracing::error!(path = %path.display(), "spool is corrupt ({reason}); discarding it and starting empty");
        }
        match existing {
            Some((state, _)) if !state.damage.is_empty() => {
                let damage = state.damage;
                let kept = state.queued.len() + state.in_flight.as_ref().map_or(0, |(_, b)| b.len());
                tracing::error!(
                    path = %path.display(),
                    damaged_entries = damage.entries,
                    records_lost = damage.records,
                    damaged_bytes = damage.bytes,
                    records_kept = kept,
                    "spool has damaged entries; they were skipped and the rest kept"
                );
                // Locked first, as below: another agent's spool is not ours to rewrite.
                let held = OpenOptions::new().append(true).open(path).map_err(io_err)?;
                lock(&held, path)?;
                let mut spool = Spool {
                    path: path.to_owned(),
                    file: Arc::new(held),
                    len: 0,
                    max_bytes,
                    stream_id: state.stream_id,
                    pending: Vec::new(),
                };
                // Rewritten without the damage, so that it is neither read
                // nor counted again at the next start.
                let in_flight = state.in_flight.as_ref().map(|(seq, batch)| (*seq, batch.as_slice()));
                spool.compact(in_flight, state.queued.iter())?;
                Ok(Opened { spool, state, discarded, damage })
            }
            Some((state, file_len)) => {
                if state.damage.repaired > 0 {
                    tracing::warn!(path = %path.display(), entries = state.damage.repaired, "spool entries with a damaged length were repaired from their checksums");
                }
                let file = OpenOptions::new().append(true).open(path).map_err(io_err)?;
                lock(&file, path)?;
                if state.valid_len < file_len {
                    // A write cut short by a crash: drop the torn entry.
                    tracing::info!(path = %path.display(), torn_bytes = file_len - state.valid_len, "spool tail from an interrupted write dropped");
                    file.set_len(state.valid_len as u64).map_err(io_err)?;
                    file.sync_all().map_err(io_err)?;
                }
                let spool = Spool {
                    path: path.to_owned(),
                    file: Arc::new(file),
                    len: state.valid_len as u64,
                    max_bytes,
                    stream_id: state.stream_id,
                    pending: Vec::new(),
                };
                Ok(Opened { spool, state, discarded, damage: format::SpoolDamage::default() })
            }
            None => {
                let spool = Self::create(path, max_bytes, new_stream_id, &[])?;
                let state = SpoolState { stream_id: new_stream_id, ..SpoolState::default() };
                Ok(Opened { spool, state, discarded, damage: format::SpoolDamage::default() })
            }
        }
    }

    /// Writes a fresh spool holding `entries` atomically at `path`.
    fn create(path: &Path, max_bytes: u64, stream_id: u64, entries: &[u8]) -> Result<Self, SpoolError> {
        let io_err = |source| SpoolError::Io { path: path.to_owned(), source };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io_err)?;
        }
        let tmp = path.with_extension("compacting");
        let mut file =
            OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp).map_err(io_err)?;
        file.write_all(&format::encode_header(stream_id)).map_err(io_err)?;
        file.write_all(entries).map_err(io_err)?;
        file.sync_all().map_err(io_err)?;
        std::fs::rename(&tmp, path).map_err(io_err)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            // The rename is durable once the directory is.
            if let Ok(dir) = File::open(dir) {
                let _ = dir.sync_all();
            }
        }
        let file = OpenOptions::new().append(true).open(path).map_err(io_err)?;
        lock(&file, path)?;
        Ok(Spool {
            path: path.to_owned(),
            file: Arc::new(file),
            len: (format::HEADER_LEN + entries.len()) as u64,
            max_bytes,
            stream_id,
            pending: Vec::new(),
        })
    }

    /// The stream id this spool's sequence numbers belong to.
    pub fn stream_id(&self) -> u64 {
        self.stream_id
    }

    /// The spool file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Buffers an entry; [`Spool::flush`] writes it.
    pub fn append(&mut self, entry: &SpoolEntry) -> Result<(), SpoolError> {
        let before = self.pending.len();
        format::encode_entry(entry, &mut self.pending).map_err(|e| SpoolError::Encode(e.to_string()))?;
        self.len += (self.pending.len() - before) as u64;
        Ok(())
    }

    /// Buffers a `Record` entry without cloning the record.
    pub fn append_record(&mut self, id: u64, record: &Record) -> Result<(), SpoolError> {
        let before = self.pending.len();
        format::encode_record(id, record, &mut self.pending).map_err(|e| SpoolError::Encode(e.to_string()))?;
        self.len += (self.pending.len() - before) as u64;
        Ok(())
    }

    /// Whether entries are waiting to be written.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Whether the file has outgrown its bound and should be compacted.
    pub fn needs_compaction(&self) -> bool {
        self.len > self.max_bytes
    }

    /// Writes buffered entries and syncs them to disk, on a blocking
    /// thread so that a slow flash write does not stall the agent.
    pub async fn flush(&mut self) -> Result<(), SpoolError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let bytes = std::mem::take(&mut self.pending);
        let file = Arc::clone(&self.file);
        let written = tokio::task::spawn_blocking(move || {
            let mut handle: &File = &file;
            handle.write_all(&bytes)?;
            file.sync_data()
        })
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e.to_string())));
        written.map_err(|source| SpoolError::Io { path: self.path.clone(), source })
    }

    /// Rewrites the spool with only `in_flight` and `queued` (the live
    /// records, oldest first), keeping the stream id.
    pub fn compact<'a>(
        &mut self,
        in_flight: Option<(u64, &'a [(u64, Record)])>,
        queued: impl Iterator<Item = &'a (u64, Record)>,
    ) -> Result<(), SpoolError> {
        let mut entries = Vec::new();
        let encode = |entry: &SpoolEntry, out: &mut Vec<u8>| {
            format::encode_entry(entry, out).map_err(|e| SpoolError::Encode(e.to_string()))
        };
        let encode_record = |id: u64, record: &Record, out: &mut Vec<u8>| {
            format::encode_record(id, record, out).map_err(|e| SpoolError::Encode(e.to_string()))
        };
        if let Some((seq, records)) = in_flight {
            for (id, record) in records {
                encode_record(*id, record, &mut entries)?;
            }
            let ids = records.iter().map(|(id, _)| *id).collect();
            encode(
                &SpoolEntry::Batched { seq, ids: glimpse_common::bounded::BoundedVec::truncating(ids) },
                &mut entries,
            )?;
        }
        for (id, record) in queued {
            encode_record(*id, record, &mut entries)?;
        }
        *self = Self::create(&self.path, self.max_bytes, self.stream_id, &entries)?;
        tracing::debug!(path = %self.path.display(), bytes = self.len, "spool compacted");
        Ok(())
    }
}

/// Takes the advisory lock that keeps two agents off one spool.
fn lock(file: &File, path: &Path) -> Result<(), SpoolError> {
    match file.try_lock() {
        Ok(()) => Ok(()),
        Err(std::fs::TryLockError::WouldBlock) => Err(SpoolError::InUse(path.to_owned())),
        Err(std::fs::TryLockError::Error(source)) => Err(SpoolError::Io { path: path.to_owned(), source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use glimpse_common::bounded::BoundedVec;
    use glimpse_common::record::{DeviceMetadata, RecordBody};
    use std::os::unix::fs::PermissionsExt;

    fn record(n: i64) -> Record {
        Record { observed_at_ms: n, body: RecordBody::Metadata(DeviceMetadata::default()) }
    }

    #[tokio::test]
    async fn survives_reopen_compacts_and_discards_damage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/spool");
        let Opened { mut spool, state, discarded, .. } = Spool::open(&path, 4096, 99).unwrap();
        assert!(state.queued.is_empty() && discarded.is_none());
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        for id in 0..3 {
            spool.append(&SpoolEntry::Record { id, record: record(id as i64) }).unwrap();
        }
        spool.append(&SpoolEntry::Batched { seq: 5, ids: BoundedVec::truncating(vec![0, 1]) }).unwrap();
        spool.flush().await.unwrap();
        drop(spool);

        let Opened { mut spool, state, .. } = Spool::open(&path, 4096, 1).unwrap();
        assert!(matches!(Spool::open(&path, 4096, 1), Err(SpoolError::InUse(_))), "one agent per spool");
        assert_eq!(spool.stream_id(), 99, "the stream id survives, so sequence numbers stay meaningful");
        assert_eq!(state.in_flight.as_ref().map(|(seq, b)| (*seq, b.len())), Some((5, 2)));
        assert_eq!(state.queued.len(), 1);

        // Compaction keeps exactly the live records.
        let (seq, batch) = state.in_flight.clone().unwrap();
        spool.compact(Some((seq, &batch)), state.queued.iter()).unwrap();
        drop(spool);
        let reopened = Spool::open(&path, 4096, 1).unwrap().state;
        assert_eq!((reopened.in_flight, reopened.queued), (state.in_flight.clone(), state.queued.clone()));

        // A torn tail is trimmed; a flipped byte costs only its entry.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(&[0, 0, 0, 50, 1, 2]);
        std::fs::write(&path, &bytes).unwrap();
        let opened = Spool::open(&path, 4096, 1).unwrap();
        assert!(opened.discarded.is_none());
        assert_eq!(opened.state.queued.len(), 1);
        drop(opened);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let opened = Spool::open(&path, 4096, 7).unwrap();
        assert!(opened.discarded.is_none());
        assert_eq!((opened.damage.entries, opened.damage.records), (1, 1), "the last record is lost and counted");
        assert_eq!(opened.state.in_flight.as_ref().map(|(seq, b)| (*seq, b.len())), Some((5, 2)), "the rest is kept");
        assert_eq!(opened.spool.stream_id(), 99, "the stream goes on");
        drop(opened);
        // The damage was rewritten away: the next start finds none.
        let opened = Spool::open(&path, 4096, 7).unwrap();
        assert!(opened.damage.is_empty() && opened.state.damage.is_empty());
        assert_eq!(opened.state.in_flight.as_ref().map(|(_, b)| b.len()), Some(2));
        drop(opened);
        // Only a file that is not a spool is discarded.
        std::fs::write(&path, b"not a spool at all").unwrap();
        let opened = Spool::open(&path, 4096, 7).unwrap();
        assert!(opened.discarded.is_some());
        assert_eq!(opened.spool.stream_id(), 7, "a discarded spool starts a new stream");
    }
}
