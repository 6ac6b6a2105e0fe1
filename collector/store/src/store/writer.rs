//! The segment currently being appended to, per (organisation, kind), and
//! the durable creation of files and directories.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use glimpse_common::secret::SecretKey;

use super::segment::{encode_header, seal_block, SegmentPlace, FRAME_HEADER_LEN, MAX_BLOCK_INDEX, SEGMENT_ROLL_BYTES};
use super::StoreError;
use crate::keys::fill_random;

/// Segment files are `<8-digit sequence>-<16 hex digit segment id>.seg`, so
/// names sort in creation order within a day directory.
pub(crate) const SEGMENT_SUFFIX: &str = ".seg";

/// Group commit for one segment file: appenders write under the slot lock,
/// then wait here, outside it, until an fsync covers their bytes. One
/// fsync at a time runs; it covers everything written before it started,
/// so the appenders that arrive meanwhile share the next one instead of
/// queueing an fsync each.
#[derive(Debug)]
pub(crate) struct SyncPoint {
    file: Arc<File>,
    path: PathBuf,
    state: Mutex<SyncState>,
    done: Condvar,
}

#[derive(Debug)]
struct SyncState {
    /// Bytes whose write has returned.
    written: u64,
    /// Bytes an fsync has made durable: what a concurrent reader may trust.
    synced: u64,
    /// An fsync is running.
    syncing: bool,
    /// An fsync failed; nothing written after the last good one is durable.
    failed: bool,
}

impl SyncPoint {
    fn lock(&self) -> MutexGuard<'_, SyncState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Bytes durable so far.
    pub(crate) fn synced(&self) -> u64 {
        self.lock().synced
    }

    /// Returns once the file is durable through byte `end`, running an
    /// fsync if none is running, or waiting for the one that is.
    pub(crate) fn sync_through(&self, end: u64) -> Result<(), StoreError> {
        let mut state = self.lock();
        loop {
            // Bytes a good fsync covered stay durable even if a later one
            // failed (a roll-back cuts only what was never synced).
            if state.synced >= end {
                return Ok(());
            }
            if state.failed {
                return Err(StoreError::Io {
                    action: "sync segment",
                    path: self.path.clone(),
                    source: io::Error::other("an earlier sync of this segment failed"),
                });
            }
            if state.syncing {
                state = self.done.wait(state).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            state.syncing = true;
            let target = state.written;
            drop(state);
            let result = self.file.sync_data();
            state = self.lock();
            state.syncing = false;
            match result {
                Ok(()) => state.synced = state.synced.max(target),
                Err(source) => {
                    state.failed = true;
                    self.done.notify_all();
                    return Err(StoreError::Io { action: "sync segment", path: self.path.clone(), source });
                }
            }
            self.done.notify_all();
        }
    }
}

/// An open segment being appended to.
#[derive(Debug)]
pub(crate) struct ActiveSegment {
    pub(crate) place: SegmentPlace,
    pub(crate) path: PathBuf,
    file: Arc<File>,
    segment_id: u64,
    sync: Arc<SyncPoint>,
    /// Bytes written, synced or not.
    len: u64,
    next_index: u64,
}

impl ActiveSegment {
    /// Starts a new segment file in `dir` (created if needed).
    pub(crate) fn create(dir: &Path, place: SegmentPlace) -> Result<ActiveSegment, StoreError> {
        create_dir_durable(dir)?;
        let seq = next_sequence(dir)?;
        let segment_id = random_segment_id()?;
        let path = dir.join(segment_file_name(seq, segment_id));
        Self::create_at(path, place, segment_id)
    }

    /// Starts a new segment file at exactly `path` (its directory must
    /// exist), with `segment_id`, which must be fresh: see
    /// [`random_segment_id`].
    pub(crate) fn create_at(path: PathBuf, place: SegmentPlace, segment_id: u64) -> Result<ActiveSegment, StoreError> {
        let io_err = |action: &'static str| {
            let path = path.clone();
            move |source| StoreError::Io { action, path, source }
        };
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(io_err("create segment"))?;
        let header = encode_header(&place, segment_id);
        if let Err(e) = file.write_all(&header).and_then(|()| file.sync_data()) {
            // A headerless file holds nothing; leaving it would only make
            // every later read report it.
            drop(file);
            let _ = fs::remove_file(&path);
            return Err(io_err("write segment header")(e));
        }
        if let Some(dir) = path.parent() {
            sync_dir(dir).map_err(io_err("sync directory of"))?;
        }
        tracing::debug!(path = %path.display(), "started segment");
        let file = Arc::new(file);
        let header_len = header.len() as u64;
        let sync = Arc::new(SyncPoint {
            file: Arc::clone(&file),
            path: path.clone(),
            state: Mutex::new(SyncState { written: header_len, synced: header_len, syncing: false, failed: false }),
            done: Condvar::new(),
        });
        Ok(ActiveSegment { place, path, file, segment_id, sync, len: header_len, next_index: 0 })
    }

    /// Whether this segment can take another block for `day`.
    pub(crate) fn accepts(&self, day: i64) -> bool {
        self.place.day == day && self.len < SEGMENT_ROLL_BYTES && self.next_index <= MAX_BLOCK_INDEX
    }

    /// Seals and writes one block (not yet synced). Returns the bytes
    /// written.
    pub(crate) fn append_block(&mut self, key: &SecretKey, plaintext: &[u8]) -> Result<u64, StoreError> {
        let frame = seal_block(key, &self.place, self.segment_id, self.next_index, plaintext)
            .ok_or(StoreError::BlockTooLarge { len: plaintext.len() })?;
        debug_assert!(frame.len() as u64 > FRAME_HEADER_LEN);
        (&*self.file).write_all(&frame).map_err(|source| StoreError::Io {
            action: "append to segment",
            path: self.path.clone(),
            source,
        })?;
        self.len += frame.len() as u64;
        self.next_index += 1;
        self.sync.lock().written = self.len;
        Ok(frame.len() as u64)
    }

    /// Bytes written so far (the end of the last block).
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Where appenders wait for their bytes to be durable.
    pub(crate) fn sync_point(&self) -> Arc<SyncPoint> {
        Arc::clone(&self.sync)
    }

    /// Bytes durable so far: what a concurrent reader may trust.
    pub(crate) fn committed_len(&self) -> u64 {
        self.sync.synced()
    }

    /// Cuts the file back to what was last synced, after a failed write
    /// or sync, so that no partial block stays behind (a full disk must not
    /// leave damage for readers to report).
    pub(crate) fn roll_back(&mut self) -> Result<(), StoreError> {
        let io_err = |source| StoreError::Io { action: "roll back segment", path: self.path.clone(), source };
        let synced = {
            let mut state = self.sync.lock();
            // Appenders still waiting on this segment must not be told
            // their bytes are durable: they are being cut away.
            state.failed = true;
            self.sync.done.notify_all();
            state.synced
        };
        self.file.set_len(synced).map_err(io_err)?;
        self.file.sync_data().map_err(io_err)?;
        self.len = synced;
        Ok(())
    }

    /// Makes every block written so far durable.
    pub(crate) fn sync(&mut self) -> Result<(), StoreError> {
        self.sync.sync_through(self.len)
    }
}

/// A fresh random segment id. Ids must never repeat under one key: they
/// are half of every block's nonce.
pub(crate) fn random_segment_id() -> Result<u64, StoreError> {
    let mut id = [0u8; 8];
    fill_random(&mut id)?;
    Ok(u64::from_be_bytes(id))
}

/// `<8-digit sequence>-<16 hex digit id>.seg`.
pub(crate) fn segment_file_name(seq: u64, segment_id: u64) -> String {
    format!("{seq:08}-{segment_id:016x}{SEGMENT_SUFFIX}")
}

/// The sequence number for the next segment in `dir`.
fn next_sequence(dir: &Path) -> Result<u64, StoreError> {
    let entries =
        fs::read_dir(dir).map_err(|source| StoreError::Io { action: "list", path: dir.to_path_buf(), source })?;
    let mut max = 0u64;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(seq) = name
            .strip_suffix(SEGMENT_SUFFIX)
            .and_then(|stem| stem.split_once('-'))
            .and_then(|(seq, _)| seq.parse::<u64>().ok())
        {
            max = max.max(seq);
        }
    }
    Ok(max + 1)
}

/// Creates `dir` and any missing parents with mode 0700, syncing each new
/// entry's parent so the directories survive a crash with the data in them.
pub(crate) fn create_dir_durable(dir: &Path) -> Result<(), StoreError> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut missing = Vec::new();
    let mut cursor = Some(dir);
    while let Some(d) = cursor {
        if d.is_dir() {
            break;
        }
        missing.push(d);
        cursor = d.parent();
    }
    for d in missing.into_iter().rev() {
        match DirBuilder::new().mode(0o700).create(d) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(source) => return Err(StoreError::Io { action: "create directory", path: d.to_path_buf(), source }),
        }
        if let Some(parent) = d.parent() {
            let parent = if parent.as_os_str().is_empty() { Path::new(".") } else { parent };
            sync_dir(parent).map_err(|source| StoreError::Io {
                action: "sync directory",
                path: parent.to_path_buf(),
                source,
            })?;
        }
    }
    Ok(())
}

/// fsyncs a directory, making entries created or removed in it durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
