//! The organisation's capture consent, as this agent last heard it.
//!
//! Consent is the organisation's decision, made by its admins on the
//! collector (`glimpse-collector admin consent`). The collector tells the
//! agent on every connection and on every change; the agent remembers the
//! last word in a small file so that it keeps honouring it across restarts
//! and while the collector is unreachable. When it knows nothing (no file,
//! an unreadable file, a file it cannot understand) it assumes **off**.
//!
//! File format: one line, `capture=on` or `capture=off`. It is written to a
//! temporary file, fsynced and renamed into place, so a power cut leaves
//! either the old or the new decision, never a torn one.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tracing::{info, warn};

/// Longest consent file read; anything longer is not ours.
const MAX_FILE_BYTES: u64 = 64;

/// The remembered consent, shared with capture threads so that they stop
/// emitting the moment consent is withdrawn.
#[derive(Debug, Clone)]
pub struct Consent {
    allowed: Arc<AtomicBool>,
    file: Option<PathBuf>,
}

impl Consent {
    /// Loads the remembered consent from `file` (off if it is missing or
    /// unreadable). `None` keeps consent in memory only.
    pub fn load(file: Option<&Path>) -> Consent {
        let allowed = file.is_some_and(read_file);
        Consent { allowed: Arc::new(AtomicBool::new(allowed)), file: file.map(Path::to_owned) }
    }

    /// Whether capture is allowed now.
    pub fn allowed(&self) -> bool {
        self.allowed.load(Ordering::SeqCst)
    }

    /// The flag capture threads check before queueing each packet.
    pub fn flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.allowed)
    }

    /// Records what the collector said; returns whether it changed.
    /// A file that cannot be written is logged: the new decision still
    /// applies now, and the collector repeats it on the next connection.
    pub fn set(&self, capture: bool) -> bool {
        let before = self.allowed.swap(capture, Ordering::SeqCst);
        if let Some(file) = &self.file {
            if before != capture || !file.exists() {
                if let Err(e) = write_file(file, capture) {
                    warn!(file = %file.display(), "cannot remember capture consent: {e}");
                }
            }
        }
        if before != capture {
            info!(capture = if capture { "on" } else { "off" }, "organisation changed capture consent");
        }
        before != capture
    }
}

fn read_file(file: &Path) -> bool {
    let text = match std::fs::metadata(file) {
        Ok(meta) if meta.len() <= MAX_FILE_BYTES => std::fs::read_to_string(file),
        Ok(_) => {
            warn!(file = %file.display(), "capture consent file is too long; assuming capture is off");
            return false;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return false,
        Err(e) => Err(e),
    };
    match text.as_deref().map(str::trim) {
        Ok("capture=on") => true,
        Ok("capture=off") => false,
        Ok(_) => {
            warn!(file = %file.display(), "capture consent file not understood; assuming capture is off");
            false
        }
        Err(e) => {
            warn!(file = %file.display(), "cannot read capture consent file ({e}); assuming capture is off");
            false
        }
    }
}

fn write_file(file: &Path, capture: bool) -> std::io::Result<()> {
    // Unique per process and call: two agents sharing a consent file by
    // mistake must not rename each other's half-written file.
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = file.with_extension(format!("tmp-{}-{n}", std::process::id()));
    {
        let mut out = std::fs::File::create(&tmp)?;
        out.write_all(if capture { b"capture=on\n" } else { b"capture=off\n" })?;
        out.sync_all()?;
    }
    std::fs::rename(&tmp, file)?;
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        // The rename is durable only once the directory is.
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_means_off_and_decisions_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("consent");
        let consent = Consent::load(Some(&file));
        assert!(!consent.allowed(), "no file: off");
        assert!(consent.set(true));
        assert!(!consent.set(true), "no change");
        assert!(Consent::load(Some(&file)).allowed(), "remembered");
        let flag = consent.flag();
        consent.set(false);
        assert!(!flag.load(Ordering::SeqCst), "capture threads see it at once");
        assert!(!Consent::load(Some(&file)).allowed());

        for garbage in ["capture=yes", "", "capture=on\0", &"x".repeat(100)] {
            std::fs::write(&file, garbage).unwrap();
            assert!(!Consent::load(Some(&file)).allowed(), "{garbage:?}");
        }
        std::fs::write(&file, "capture=on\n").unwrap();
        assert!(Consent::load(Some(&file)).allowed());
        assert!(!Consent::load(None).allowed());
    }
}
