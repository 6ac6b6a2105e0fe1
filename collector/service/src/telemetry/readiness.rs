//! The verdict of a liveness or readiness check, and the disk checks.

use std::path::Path;

use serde::Serialize;

/// Whether the collector is ready (or alive), and why not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Readiness {
    /// True when nothing is wrong.
    pub ready: bool,
    /// What is wrong, one sentence each; empty when ready.
    pub problems: Vec<String>,
}

impl Readiness {
    pub(crate) fn from_problems(problems: Vec<String>) -> Self {
        Self { ready: problems.is_empty(), problems }
    }
}

/// Bytes an unprivileged process may still write on the file system of
/// `path` (statvfs: available blocks times the fragment size).
pub fn free_bytes(path: &Path) -> std::io::Result<u64> {
    let stat = rustix::fs::statvfs(path)?;
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// What keeps `dir` (the segment directory) from taking data: missing or
/// not writable, on a read-only file system, or with less than
/// `min_free` bytes free.
pub(crate) fn disk_problems(dir: &Path, min_free: u64) -> Vec<String> {
    let mut problems = Vec::new();
    let shown = dir.display();
    match rustix::fs::statvfs(dir) {
        Ok(stat) => {
            if stat.f_flag.contains(rustix::fs::StatVfsMountFlags::RDONLY) {
                problems.push(format!("{shown} is on a read-only file system"));
            }
            let free = stat.f_bavail.saturating_mul(stat.f_frsize);
            if free < min_free {
                problems.push(format!(
                    "only {free} bytes free on the file system of {shown}, below the floor of {min_free} \
                     ([admin] min_free_bytes)"
                ));
            }
        }
        Err(e) => problems.push(format!("cannot check the free space of {shown}: {e}")),
    }
    if let Err(e) = rustix::fs::access(dir, rustix::fs::Access::WRITE_OK) {
        problems.push(format!("{shown} is not writable: {e}"));
    }
    problems
}
