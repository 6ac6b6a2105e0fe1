//! A [`FileSystem`] in memory that fails the way disks and kernels do, for
//! tests: unsynced writes and directory entries lost on a simulated crash,
//! torn writes (a prefix of what was appended since the last sync survives
//! the crash), ENOSPC on demand, and a power cut after a chosen number of
//! operations (every operation from then on fails until the crash).
//!
//! It models what the [`super::fs`] contract promises and nothing more:
//! file bytes are durable once the file is synced, entries once their
//! parent directory is synced. What it deliberately does not model:
//! permissions, hard links, reordering of synced writes, and a crash that
//! loses synced data (which no store can survive).

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::fs::{FileSystem, FsEntry, FsFile};

/// ENOSPC on Linux.
const ENOSPC: i32 = 28;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    Dir,
    File(u64),
}

#[derive(Debug, Default)]
struct FileData {
    /// The bytes as a reader sees them now.
    data: Vec<u8>,
    /// The bytes as of the last sync: what a crash keeps (plus a torn
    /// prefix of what follows, if `data` still extends it).
    synced: Vec<u8>,
}

#[derive(Debug, Default)]
struct State {
    /// The namespace as it is now.
    live: BTreeMap<PathBuf, Node>,
    /// The namespace a crash would leave.
    durable: BTreeMap<PathBuf, Node>,
    files: HashMap<u64, FileData>,
    next_inode: u64,
    /// Bumped by every crash: handles from before it are dead.
    epoch: u64,
    /// Bytes appends may still write before ENOSPC; `None` is unlimited.
    space_left: Option<u64>,
    /// Mutating operations left before the power is cut; `None` never.
    power_left: Option<u64>,
    /// The power is cut: everything fails until [`FaultyFs::crash`].
    dead: bool,
}

fn eio() -> io::Error {
    io::Error::other("simulated power loss")
}

fn not_found() -> io::Error {
    io::ErrorKind::NotFound.into()
}

impl State {
    /// Counts a mutating operation against the power budget.
    fn mutate(&mut self) -> io::Result<()> {
        if self.dead {
            return Err(eio());
        }
        if let Some(left) = self.power_left.as_mut() {
            if *left == 0 {
                self.dead = true;
                return Err(eio());
            }
            *left -= 1;
        }
        Ok(())
    }

    fn alive(&self) -> io::Result<()> {
        if self.dead {
            Err(eio())
        } else {
            Ok(())
        }
    }

    fn parent_is_dir(&self, path: &Path) -> bool {
        path.parent().is_some_and(|p| p.as_os_str().is_empty() || self.live.get(p) == Some(&Node::Dir))
    }

    fn children<'a>(map: &'a BTreeMap<PathBuf, Node>, dir: &'a Path) -> impl Iterator<Item = (&'a PathBuf, &'a Node)> {
        map.iter().filter(move |(p, _)| p.parent() == Some(dir))
    }
}

/// The fault-injecting file system. Clones share one state, so a test keeps
/// a clone to crash what the store it opened is using.
#[derive(Debug, Clone, Default)]
pub(crate) struct FaultyFs {
    state: Arc<Mutex<State>>,
}

impl FaultyFs {
    /// A file system holding only the root directory `/`.
    pub(crate) fn new() -> FaultyFs {
        let fs = FaultyFs::default();
        {
            let mut state = fs.lock();
            state.live.insert(PathBuf::from("/"), Node::Dir);
            state.durable.insert(PathBuf::from("/"), Node::Dir);
        }
        fs
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// From now on appends may write `bytes` more bytes, then fail with
    /// ENOSPC (the write that crosses the limit writes what fits); `None`
    /// lifts the limit.
    pub(crate) fn set_space(&self, bytes: Option<u64>) {
        self.lock().space_left = bytes;
    }

    /// Cuts the power after `ops` more mutating operations: the next one
    /// and every later one fail until [`FaultyFs::crash`].
    pub(crate) fn cut_power_after(&self, ops: u64) {
        self.lock().power_left = Some(ops);
    }

    /// Whether the power is cut.
    pub(crate) fn is_dead(&self) -> bool {
        self.lock().dead
    }

    /// Simulates a crash and restart: every entry not made durable by a
    /// directory sync is gone, every file is cut back to what was synced
    /// plus `tear % (unsynced + 1)` bytes of what was appended after it (a
    /// torn write), and every open handle is dead. The power comes back.
    pub(crate) fn crash(&self, tear: u64) {
        let mut state = self.lock();
        let durable = state.durable.clone();
        // An entry survives only if every ancestor directory did.
        let live: BTreeMap<PathBuf, Node> = durable
            .iter()
            .filter(|(path, _)| {
                path.ancestors().skip(1).all(|a| a.as_os_str().is_empty() || durable.get(a) == Some(&Node::Dir))
            })
            .map(|(p, n)| (p.clone(), *n))
            .collect();
        for file in state.files.values_mut() {
            let kept = if file.data.starts_with(&file.synced) {
                let unsynced = (file.data.len() - file.synced.len()) as u64;
                let keep = usize::try_from(tear % (unsynced + 1)).unwrap_or(0);
                file.data[..file.synced.len() + keep].to_vec()
            } else {
                // Cut or rewritten since the sync: the sync's view survives.
                file.synced.clone()
            };
            file.data = kept.clone();
            file.synced = kept;
        }
        state.durable = live.clone();
        state.live = live;
        state.epoch += 1;
        state.dead = false;
        state.power_left = None;
        state.space_left = None;
    }
}

/// An open file of a [`FaultyFs`].
#[derive(Debug)]
struct FaultyFile {
    fs: FaultyFs,
    inode: u64,
    epoch: u64,
    write: bool,
}

impl FaultyFile {
    fn with<T>(&self, mutating: bool, f: impl FnOnce(&mut State, u64) -> io::Result<T>) -> io::Result<T> {
        let mut state = self.fs.lock();
        if state.epoch != self.epoch {
            return Err(io::Error::other("handle from before a crash"));
        }
        if mutating {
            if !self.write {
                return Err(io::Error::other("file opened read-only"));
            }
            state.mutate()?;
        } else {
            state.alive()?;
        }
        f(&mut state, self.inode)
    }
}

impl FsFile for FaultyFile {
    fn append(&self, bytes: &[u8]) -> io::Result<()> {
        self.with(true, |state, inode| {
            let fits = match state.space_left {
                Some(left) => usize::try_from(left).unwrap_or(usize::MAX).min(bytes.len()),
                None => bytes.len(),
            };
            if let Some(left) = state.space_left.as_mut() {
                *left -= fits as u64;
            }
            let file = state.files.get_mut(&inode).ok_or_else(not_found)?;
            file.data.extend_from_slice(&bytes[..fits]);
            if fits < bytes.len() {
                return Err(io::Error::from_raw_os_error(ENOSPC));
            }
            Ok(())
        })
    }

    fn sync(&self) -> io::Result<()> {
        self.with(true, |state, inode| {
            let file = state.files.get_mut(&inode).ok_or_else(not_found)?;
            file.synced = file.data.clone();
            Ok(())
        })
    }

    fn size(&self) -> io::Result<u64> {
        self.with(false, |state, inode| Ok(state.files.get(&inode).ok_or_else(not_found)?.data.len() as u64))
    }

    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        self.with(false, |state, inode| {
            let data = &state.files.get(&inode).ok_or_else(not_found)?.data;
            let start = usize::try_from(pos).map_err(|_| io::ErrorKind::UnexpectedEof)?;
            let src = start
                .checked_add(buf.len())
                .and_then(|end| data.get(start..end))
                .ok_or(io::ErrorKind::UnexpectedEof)?;
            buf.copy_from_slice(src);
            Ok(())
        })
    }

    fn truncate(&self, len: u64) -> io::Result<()> {
        self.with(true, |state, inode| {
            let file = state.files.get_mut(&inode).ok_or_else(not_found)?;
            file.data.truncate(usize::try_from(len).unwrap_or(usize::MAX));
            Ok(())
        })
    }
}

impl FileSystem for FaultyFs {
    fn create_dir(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state.mutate()?;
        if state.live.contains_key(dir) {
            return Err(io::ErrorKind::AlreadyExists.into());
        }
        if !state.parent_is_dir(dir) {
            return Err(not_found());
        }
        state.live.insert(dir.to_path_buf(), Node::Dir);
        Ok(())
    }

    fn is_dir(&self, path: &Path) -> bool {
        let state = self.lock();
        !state.dead && state.live.get(path) == Some(&Node::Dir)
    }

    fn exists(&self, path: &Path) -> bool {
        let state = self.lock();
        !state.dead && state.live.contains_key(path)
    }

    fn create_new(&self, path: &Path) -> io::Result<Arc<dyn FsFile>> {
        let mut state = self.lock();
        state.mutate()?;
        if state.live.contains_key(path) {
            return Err(io::ErrorKind::AlreadyExists.into());
        }
        if !state.parent_is_dir(path) {
            return Err(not_found());
        }
        let inode = state.next_inode;
        state.next_inode += 1;
        state.files.insert(inode, FileData::default());
        state.live.insert(path.to_path_buf(), Node::File(inode));
        Ok(Arc::new(FaultyFile { fs: self.clone(), inode, epoch: state.epoch, write: true }))
    }

    fn open(&self, path: &Path, write: bool) -> io::Result<Arc<dyn FsFile>> {
        let state = self.lock();
        state.alive()?;
        match state.live.get(path) {
            Some(Node::File(inode)) => {
                Ok(Arc::new(FaultyFile { fs: self.clone(), inode: *inode, epoch: state.epoch, write }))
            }
            Some(Node::Dir) => Err(io::ErrorKind::IsADirectory.into()),
            None => Err(not_found()),
        }
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<FsEntry>> {
        let state = self.lock();
        state.alive()?;
        if state.live.get(dir) != Some(&Node::Dir) {
            return Err(not_found());
        }
        Ok(State::children(&state.live, dir)
            .map(|(path, node)| FsEntry {
                name: path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
                is_dir: *node == Node::Dir,
                is_file: *node != Node::Dir,
                len: match node {
                    Node::File(inode) => state.files.get(inode).map_or(0, |f| f.data.len() as u64),
                    Node::Dir => 0,
                },
            })
            .collect())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state.mutate()?;
        match state.live.get(from) {
            Some(Node::File(inode)) => {
                let inode = *inode;
                if !state.parent_is_dir(to) {
                    return Err(not_found());
                }
                state.live.remove(from);
                state.live.insert(to.to_path_buf(), Node::File(inode));
                Ok(())
            }
            Some(Node::Dir) => Err(io::Error::other("renaming directories is not modelled")),
            None => Err(not_found()),
        }
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state.mutate()?;
        match state.live.get(path) {
            Some(Node::File(_)) => {
                state.live.remove(path);
                Ok(())
            }
            Some(Node::Dir) => Err(io::ErrorKind::IsADirectory.into()),
            None => Err(not_found()),
        }
    }

    fn remove_dir(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state.mutate()?;
        if state.live.get(dir) != Some(&Node::Dir) {
            return Err(not_found());
        }
        if State::children(&state.live, dir).next().is_some() {
            return Err(io::ErrorKind::DirectoryNotEmpty.into());
        }
        state.live.remove(dir);
        Ok(())
    }

    fn remove_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state.mutate()?;
        if state.live.get(dir) != Some(&Node::Dir) {
            return Err(not_found());
        }
        state.live.retain(|path, _| !path.starts_with(dir));
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state.mutate()?;
        if state.live.get(dir) != Some(&Node::Dir) {
            return Err(not_found());
        }
        // The directory's own entries become what a crash keeps; a removed
        // subdirectory takes its durable contents with it.
        let gone: Vec<PathBuf> = State::children(&state.durable, dir)
            .filter(|(path, node)| state.live.get(*path) != Some(*node))
            .map(|(path, _)| path.clone())
            .collect();
        for path in gone {
            state.durable.retain(|p, _| !p.starts_with(&path));
        }
        let now: Vec<(PathBuf, Node)> = State::children(&state.live, dir).map(|(p, n)| (p.clone(), *n)).collect();
        for (path, node) in now {
            state.durable.insert(path, node);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    #[test]
    fn unsynced_bytes_and_entries_are_lost_synced_ones_kept() {
        let fs = FaultyFs::new();
        fs.create_dir(&p("/d")).unwrap();
        fs.sync_dir(&p("/")).unwrap();
        let f = fs.create_new(&p("/d/a")).unwrap();
        f.append(b"kept").unwrap();
        f.sync().unwrap();
        fs.sync_dir(&p("/d")).unwrap();
        f.append(b"lost").unwrap();
        fs.create_new(&p("/d/b")).unwrap();
        fs.crash(0);
        let mut buf = [0u8; 4];
        let f = fs.open(&p("/d/a"), false).unwrap();
        assert_eq!(f.size().unwrap(), 4);
        f.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"kept");
        assert!(!fs.exists(&p("/d/b")), "an entry whose directory was not synced is gone");
    }

    #[test]
    fn a_torn_write_keeps_a_prefix_and_old_handles_die() {
        let fs = FaultyFs::new();
        let f = fs.create_new(&p("/a")).unwrap();
        fs.sync_dir(&p("/")).unwrap();
        f.append(b"0123456789").unwrap();
        fs.crash(3);
        assert_eq!(fs.open(&p("/a"), false).unwrap().size().unwrap(), 3);
        assert!(f.append(b"x").is_err());
    }

    #[test]
    fn enospc_writes_what_fits_and_power_cut_fails_everything() {
        let fs = FaultyFs::new();
        let f = fs.create_new(&p("/a")).unwrap();
        fs.set_space(Some(3));
        let e = f.append(b"12345").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(ENOSPC));
        assert_eq!(f.size().unwrap(), 3);
        fs.set_space(None);
        fs.cut_power_after(1);
        f.append(b"6").unwrap();
        assert!(f.sync().is_err());
        assert!(fs.is_dead());
        assert!(fs.list(&p("/")).is_err());
        fs.crash(0);
        assert!(!fs.exists(&p("/a")), "never made durable in its directory");
    }

    #[test]
    fn removals_are_durable_only_after_the_directory_sync() {
        let fs = FaultyFs::new();
        fs.create_dir(&p("/d")).unwrap();
        fs.sync_dir(&p("/")).unwrap();
        fs.create_new(&p("/d/a")).unwrap();
        fs.sync_dir(&p("/d")).unwrap();
        fs.remove_dir_all(&p("/d")).unwrap();
        fs.crash(0);
        assert!(fs.exists(&p("/d/a")), "the removal was never synced");
        fs.remove_dir_all(&p("/d")).unwrap();
        fs.sync_dir(&p("/")).unwrap();
        fs.crash(0);
        assert!(!fs.exists(&p("/d")) && !fs.exists(&p("/d/a")));
    }
}
