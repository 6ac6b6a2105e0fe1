//! The segment currently being appended to, per (organisation, kind), and
//! the durable creation of files and directories, all through the
//! [`FileSystem`] seam.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crate::keys::OrgKey;

use super::fs::{FileSystem, FsFile};
use super::seam::SegmentError;
use super::segment::{
    encode_header_for, seal_block, SegmentPlace, FRAME_HEADER_LEN, MAX_BLOCK_INDEX, SEGMENT_ROLL_BYTES,
};

/// How a segment's name ends. Local segment files are `<8-digit
/// sequence>-<16 hex digit segment id>.seg`, so names sort in creation
/// order within a day directory (see [`super::parse_segment_name`]).
pub const SEGMENT_SUFFIX: &str = ".seg";

/// Group commit for one segment file: appenders write under the slot lock,
/// then wait here, outside it, until an fsync covers their bytes. One
/// fsync at a time runs; it covers everything written before it started,
/// so the appenders that arrive meanwhile share the next one instead of
/// queueing an fsync each.
#[derive(Debug)]
pub(crate) struct SyncPoint {
    file: Arc<dyn FsFile>,
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
    pub(crate) fn sync_through(&self, end: u64) -> Result<(), SegmentError> {
        let mut state = self.lock();
        loop {
            // Bytes a good fsync covered stay durable even if a later one
            // failed (a roll-back cuts only what was never synced).
            if state.synced >= end {
                return Ok(());
            }
            if state.failed {
                return Err(SegmentError::io(
                    "sync segment",
                    &self.path,
                    io::Error::other("an earlier sync of this segment failed"),
                ));
            }
            if state.syncing {
                state = self.done.wait(state).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            state.syncing = true;
            let target = state.written;
            drop(state);
            let result = self.file.sync();
            state = self.lock();
            state.syncing = false;
            match result {
                Ok(()) => state.synced = state.synced.max(target),
                Err(source) => {
                    state.failed = true;
                    self.done.notify_all();
                    return Err(SegmentError::io("sync segment", &self.path, source));
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
    file: Arc<dyn FsFile>,
    segment_id: u64,
    sync: Arc<SyncPoint>,
    /// Bytes written, synced or not.
    len: u64,
    next_index: u64,
    /// The data key version the segment is sealed under.
    key_version: u32,
}

impl ActiveSegment {
    /// Starts a new segment file in `dir` (created if needed).
    pub(crate) fn create(
        fs: &dyn FileSystem,
        dir: &Path,
        place: SegmentPlace,
        key_version: u32,
    ) -> Result<ActiveSegment, SegmentError> {
        create_dir_durable(fs, dir)?;
        let seq = next_sequence(fs, dir)?;
        let segment_id = random_segment_id()?;
        let path = dir.join(segment_file_name(seq, segment_id));
        Self::create_at(fs, path, place, segment_id, key_version)
    }

    /// Starts a new segment file at exactly `path` (its directory must
    /// exist), with `segment_id`, which must be fresh: see
    /// [`random_segment_id`].
    pub(crate) fn create_at(
        fs: &dyn FileSystem,
        path: PathBuf,
        place: SegmentPlace,
        segment_id: u64,
        key_version: u32,
    ) -> Result<ActiveSegment, SegmentError> {
        let file = fs.create_new(&path).map_err(|e| SegmentError::io("create segment", &path, e))?;
        let header = encode_header_for(&place, segment_id, key_version);
        if let Err(e) = file.append(&header).and_then(|()| file.sync()) {
            // A headerless file holds nothing; leaving it would only make
            // every later read report it.
            drop(file);
            let _ = fs.remove_file(&path);
            return Err(SegmentError::io("write segment header", &path, e));
        }
        if let Some(dir) = path.parent() {
            fs.sync_dir(dir).map_err(|e| SegmentError::io("sync directory of", &path, e))?;
        }
        tracing::debug!(path = %path.display(), "started segment");
        let header_len = header.len() as u64;
        let sync = Arc::new(SyncPoint {
            file: Arc::clone(&file),
            path: path.clone(),
            state: Mutex::new(SyncState { written: header_len, synced: header_len, syncing: false, failed: false }),
            done: Condvar::new(),
        });
        Ok(ActiveSegment { place, path, file, segment_id, sync, len: header_len, next_index: 0, key_version })
    }

    /// Whether this segment can take another block for `day` under data
    /// key version `key_version` (after a rotation, the next block starts
    /// a segment under the new version).
    pub(crate) fn accepts(&self, day: i64, key_version: u32) -> bool {
        self.place.day == day
            && self.key_version == key_version
            && self.len < SEGMENT_ROLL_BYTES
            && self.next_index <= MAX_BLOCK_INDEX
    }

    /// Seals and writes one block (not yet synced). Returns the bytes
    /// written.
    pub(crate) fn append_block(&mut self, key: &OrgKey, plaintext: &[u8]) -> Result<u64, SegmentError> {
        let secret = key
            .secret_of(self.key_version)
            .ok_or(SegmentError::KeyVersion { org: self.place.org.clone(), version: self.key_version })?;
        let frame = seal_block(secret, &self.place, self.segment_id, self.next_index, plaintext)
            .ok_or(SegmentError::BlockTooLarge { len: plaintext.len() })?;
        debug_assert!(frame.len() as u64 > FRAME_HEADER_LEN);
        self.file.append(&frame).map_err(|e| SegmentError::io("append to segment", &self.path, e))?;
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
    pub(crate) fn roll_back(&mut self) -> Result<(), SegmentError> {
        let io_err = |source| SegmentError::io("roll back segment", &self.path, source);
        let synced = {
            let mut state = self.sync.lock();
            // Appenders still waiting on this segment must not be told
            // their bytes are durable: they are being cut away.
            state.failed = true;
            self.sync.done.notify_all();
            state.synced
        };
        self.file.truncate(synced).map_err(io_err)?;
        self.file.sync().map_err(io_err)?;
        self.len = synced;
        Ok(())
    }

    /// Makes every block written so far durable.
    pub(crate) fn sync(&mut self) -> Result<(), SegmentError> {
        self.sync.sync_through(self.len)
    }
}

/// A fresh random segment id. Ids must never repeat under one key: they
/// are half of every block's nonce.
pub(crate) fn random_segment_id() -> Result<u64, SegmentError> {
    let mut id = [0u8; 8];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut id).map_err(|_| SegmentError::Random)?;
    Ok(u64::from_be_bytes(id))
}

/// `<8-digit sequence>-<16 hex digit id>.seg`.
pub(crate) fn segment_file_name(seq: u64, segment_id: u64) -> String {
    format!("{seq:08}-{segment_id:016x}{SEGMENT_SUFFIX}")
}

/// The sequence number for the next segment in `dir`.
fn next_sequence(fs: &dyn FileSystem, dir: &Path) -> Result<u64, SegmentError> {
    let entries = fs.list(dir).map_err(|e| SegmentError::io("list", dir, e))?;
    let mut max = 0u64;
    for entry in entries {
        if let Some(seq) = entry
            .name
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
pub(crate) fn create_dir_durable(fs: &dyn FileSystem, dir: &Path) -> Result<(), SegmentError> {
    if fs.is_dir(dir) {
        return Ok(());
    }
    let mut missing = Vec::new();
    let mut cursor = Some(dir);
    while let Some(d) = cursor {
        if fs.is_dir(d) {
            break;
        }
        missing.push(d);
        cursor = d.parent();
    }
    for d in missing.into_iter().rev() {
        match fs.create_dir(d) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(source) => return Err(SegmentError::io("create directory", d, source)),
        }
        if let Some(parent) = d.parent() {
            let parent = if parent.as_os_str().is_empty() { Path::new(".") } else { parent };
            fs.sync_dir(parent).map_err(|source| SegmentError::io("sync directory", parent, source))?;
        }
    }
    Ok(())
}
