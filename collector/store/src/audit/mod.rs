//! The audit log: an append-only, hash-chained record of who did what to
//! which organisation (consent changes, support grants, captures, refusals).
//!
//! # File format
//!
//! `<data_dir>/audit.log`, mode 0600, one [`AuditEntry`] per line as compact
//! JSON (`serde_json::to_vec`, fields in struct order, `\n`-terminated). The
//! file is only ever opened for appending and every append is fsynced before
//! [`AuditLog::append`] returns ([`AuditLog::append_all`] writes up to
//! [`APPEND_BATCH`] lines with one write and one fsync). No line we write exceeds [`MAX_LINE`] bytes:
//! `detail` is cut to 1024 characters and `actor`, `action` and `org` to 256.
//!
//! # Chain
//!
//! `seq` counts 1, 2, 3, ... without gaps. Each entry carries
//!
//! ```text
//! mac  = HMAC-SHA256(audit_key, b"glimpse-audit-v1" || canonical(entry with mac = ""))
//! prev = mac of the previous entry (64 zeros for seq 1)
//! ```
//!
//! where `canonical` is `serde_json::to_vec`. A line must be exactly the
//! canonical encoding of the entry it parses to, so even a semantically
//! neutral edit (whitespace, an escaped character, an extra field) is
//! reported. The audit key is derived from the master key
//! ([`derive_audit_key`]) and is never written anywhere.
//!
//! # Head
//!
//! The chain alone cannot tell a truncated log from a short one, so after
//! every append (file written and fsynced first; once per batch of
//! [`AuditLog::append_all`]) the last `seq` and its
//! `mac` are recorded in the redb table `audit_head`: one row `"head"`
//! holding `seq` as a big-endian `u64` followed by the 32 MAC bytes. A log
//! with valid entries *past* the head is accepted (a crash between the file
//! write and the head update); a log that ends before the head, or whose
//! entry at the head's `seq` carries another MAC, is reported as tampered.
//!
//! # Threat model
//!
//! Detected by [`AuditLog::verify`]: entries edited, removed from the middle
//! or the end, reordered, inserted or forged, and lines that are not entries,
//! by anyone who can write the file but does not hold the master key.
//!
//! Not detected: an attacker holding the master key (they can rewrite the
//! whole chain and the head), rolling back the log file *and* the redb
//! database together to an earlier consistent state, and removal of entries
//! written after the last head update (only possible after a crash or a
//! failed head update). The log is not confidential: anyone who can read the
//! file reads the entries.
//!
//! # Recovery choices
//!
//! [`AuditLog::open`] never verifies and never refuses a tampered log, so
//! that [`AuditLog::verify`] can report it. New entries chain from the last
//! line that parses as an entry, or from the head if the head is further
//! along (so entries removed from the end stay visible as a gap after new
//! appends, instead of being papered over). An unterminated last line that
//! does not parse is a torn write: it is cut off when the log is opened (it
//! can never be an acknowledged entry, and removing an acknowledged one is
//! caught by the head).

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::control::seam::ControlStore;
use glimpse_common::secret::{SecretKey, KEY_LEN};
use ring::hmac;
use serde::{Deserialize, Serialize};

pub mod aggregate;
#[cfg(test)]
mod tests;

/// File name of the audit log inside the data directory.
pub const AUDIT_FILE: &str = "audit.log";

/// Longest line accepted when reading the log, in bytes (newline excluded).
pub const MAX_LINE: usize = 64 * 1024;

/// Longest `detail`, in characters; longer text is cut.
pub const MAX_DETAIL_CHARS: usize = 1024;

/// Longest `actor`, `action` or `org`, in characters; longer text is cut.
pub const MAX_NAME_CHARS: usize = 256;

/// Domain separation for entry MACs.
const ENTRY_MAC_DOMAIN: &[u8] = b"glimpse-audit-v1";
/// Domain separation for deriving the audit key from the master key.
const KEY_DERIVATION_LABEL: &[u8] = b"glimpse-audit-key-v1";

const MAC_LEN: usize = 32;
const HEAD_LEN: usize = 8 + MAC_LEN;

/// Whether the audited action happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditOutcome {
    /// The action was carried out.
    Done,
    /// The action was refused (not allowed, invalid, or failed a check).
    Refused,
}

/// One line of the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Position in the log: 1, 2, 3, ... without gaps.
    pub seq: u64,
    /// When, in Unix milliseconds, as given by the caller's clock.
    pub at_ms: i64,
    /// The same time as RFC 3339 UTC, for people reading the file.
    pub at: String,
    /// Who: `"admin:alice (org-admin of acme)"`, `"device:acme/ap-1"`, `"collector"`.
    pub actor: String,
    /// What: `"consent.set"`, `"support.grant"`, `"capture.start"`, ...
    pub action: String,
    /// The organisation concerned, if any.
    pub org: Option<String>,
    /// Whether it was done or refused.
    pub outcome: AuditOutcome,
    /// Free text, at most [`MAX_DETAIL_CHARS`] characters.
    pub detail: String,
    /// Hex MAC of the previous entry; 64 zeros for the first.
    pub prev: String,
    /// Hex HMAC-SHA256 of this entry (see the module header).
    pub mac: String,
}

/// An entry to append with [`AuditLog::append_all`]: what
/// [`AuditLog::append`] takes besides the time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditDraft<'a> {
    /// Who.
    pub actor: &'a str,
    /// What.
    pub action: &'a str,
    /// The organisation concerned, if any.
    pub org: Option<&'a str>,
    /// Whether it was done or refused.
    pub outcome: AuditOutcome,
    /// Free text, cut to [`MAX_DETAIL_CHARS`] characters.
    pub detail: &'a str,
}

/// Most entries [`AuditLog::append_all`] writes with one fsync and one
/// head update: bounds the memory a batch holds (each line is at most
/// [`MAX_LINE`] bytes, and in practice well under 1 KiB).
pub const APPEND_BATCH: usize = 512;

/// Which audit entries [`AuditLog::search`] returns. Every condition given
/// must hold; the default matches every entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditSearch {
    /// Only entries concerning this organisation.
    pub org: Option<String>,
    /// Only entries with a higher sequence number.
    pub after_seq: u64,
    /// Only entries with a lower sequence number.
    pub before_seq: Option<u64>,
    /// Only entries whose actor contains this text (case-insensitive).
    pub actor_contains: Option<String>,
    /// Only entries whose action is this one or starts with it followed by
    /// a dot: `support` finds `support.grant` and `support.revoke`.
    pub action: Option<String>,
    /// Only entries at or after this time (Unix ms).
    pub from_ms: Option<i64>,
    /// Only entries before this time (Unix ms).
    pub to_ms: Option<i64>,
    /// Only entries with this outcome.
    pub outcome: Option<AuditOutcome>,
    /// The newest matches, newest first, instead of the oldest.
    pub newest_first: bool,
}

impl AuditSearch {
    /// Whether `entry` meets every condition.
    pub fn matches(&self, entry: &AuditEntry) -> bool {
        let action_ok = self.action.as_deref().is_none_or(|a| {
            entry.action == a || (entry.action.starts_with(a) && entry.action.as_bytes().get(a.len()) == Some(&b'.'))
        });
        let actor_ok = self
            .actor_contains
            .as_deref()
            .is_none_or(|needle| entry.actor.to_lowercase().contains(&needle.to_lowercase()));
        entry.seq > self.after_seq
            && self.before_seq.is_none_or(|b| entry.seq < b)
            && self.org.as_deref().is_none_or(|o| entry.org.as_deref() == Some(o))
            && self.from_ms.is_none_or(|t| entry.at_ms >= t)
            && self.to_ms.is_none_or(|t| entry.at_ms < t)
            && self.outcome.is_none_or(|o| entry.outcome == o)
            && action_ok
            && actor_ok
    }
}

/// The result of a successful [`AuditLog::verify`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifyReport {
    /// Number of entries in the log, all of them authentic and in order.
    pub entries: u64,
}

/// Where a verification ended: the next may check only what came after
/// ([`AuditLog::verify_since`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    /// Entries verified, all of them authentic and in order.
    pub entries: u64,
    /// The MAC of the last one.
    mac: [u8; MAC_LEN],
    /// Its line number (file) or sequence number (shared lines).
    line: u64,
    /// Where its line starts in the file (0 for shared lines).
    start: u64,
}

/// An audit log operation failed, or the log is not intact.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// Reading or writing the log file failed.
    #[error("audit log {}: {source}", path.display())]
    Io {
        /// The log file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The head table in the embedded database failed.
    #[error("audit head database: {0}")]
    Database(String),
    /// The log was altered: the first bad line, and what is wrong with it.
    ///
    /// `seq` is the sequence number the bad line should have carried (0 from
    /// [`AuditLog::entries`], which does not follow the chain); `seq` and
    /// `line` are both 0 when the problem is the head record itself.
    #[error("audit log tampered at line {line} (seq {seq}): {reason}")]
    Tampered {
        /// The sequence number expected at that point of the chain.
        seq: u64,
        /// The 1-based line number in the file.
        line: u64,
        /// What is wrong, in words.
        reason: String,
    },
    /// The log was opened read-only (an offline tool) and cannot be appended to.
    #[error("audit log {} is open read-only; nothing was appended", path.display())]
    ReadOnly {
        /// The log file.
        path: PathBuf,
    },
    /// The sequence number cannot grow any further.
    #[error("audit log sequence number exhausted")]
    SeqExhausted,
    /// An entry could not be encoded as JSON.
    #[error("cannot encode audit entry: {0}")]
    Encode(#[source] serde_json::Error),
}

/// Converts any redb error into [`AuditError::Database`].
fn db_err(e: crate::control::ControlError) -> AuditError {
    AuditError::Database(e.to_string())
}

/// Derives the audit log's MAC key from the collector's master key:
/// `HMAC-SHA256(master, b"glimpse-audit-key-v1")`.
pub fn derive_audit_key(master: &SecretKey) -> SecretKey {
    let key = hmac::Key::new(hmac::HMAC_SHA256, master.expose());
    let tag = hmac::sign(&key, KEY_DERIVATION_LABEL);
    let mut bytes = [0u8; KEY_LEN];
    bytes.copy_from_slice(tag.as_ref());
    let derived = SecretKey::from_bytes(bytes);
    zeroize::Zeroize::zeroize(&mut bytes);
    derived
}

/// The tamper-evident audit log of one collector.
///
/// All methods block on file and database I/O; call them from
/// `spawn_blocking` in async code. Appends, [`verify`](Self::verify) and
/// [`entries`](Self::entries) are serialised by an internal lock, so a reader
/// never sees a half-written line of this process.
pub struct AuditLog {
    path: PathBuf,
    // ring does not wipe its expanded key state on drop; the `SecretKey` the
    // caller handed in is wiped when `open` returns.
    key: hmac::Key,
    head: Arc<dyn ControlStore>,
    /// The lines live in the control store (shared by several collectors),
    /// not in the file.
    shared: bool,
    state: Mutex<State>,
    /// Entries appended since open, for the service's metrics (this crate
    /// exports none itself).
    appended: std::sync::atomic::AtomicU64,
}

/// Entries numbered, linked and signed ([`AuditLog::chain`]), not yet written.
struct Chained {
    /// Their lines, canonical, without newlines.
    lines: Vec<Vec<u8>>,
    /// The last one's MAC: the new end of the chain.
    last_mac: [u8; MAC_LEN],
    /// The sequence number after them.
    next_seq: u64,
}

/// What the appender needs to know about the end of the file.
struct State {
    /// `None` when opened read-only or when the lines are shared: appends
    /// to the file are refused.
    file: Option<File>,
    /// Opened read-only: every append is refused.
    read_only: bool,
    next_seq: u64,
    last_mac: [u8; MAC_LEN],
    /// The last line is a valid entry without its `\n`.
    needs_newline: bool,
    /// An earlier write failed or panicked: re-read the end of the file
    /// before appending again.
    rescan: bool,
}

impl fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditLog").field("path", &self.path).finish_non_exhaustive()
    }
}

impl AuditLog {
    /// A short keyed tag for a data subject (a MAC, an address, a
    /// username), so the audit log can show that two requests concerned the
    /// same person without itself keeping what was erased. Only this
    /// collector's key can compute it.
    pub fn subject_tag(&self, subject: &str) -> String {
        let tag = hmac::sign(&self.key, &[b"glimpse-audit-subject-v1:".as_slice(), subject.as_bytes()].concat());
        format!("subject#{}", hex::encode(&tag.as_ref()[..8]))
    }

    /// Opens (or creates, mode 0600) `<data_dir>/audit.log`, with its head
    /// recorded in `head`, and finds where the chain continues. `data_dir`
    /// must exist; `key` should come from [`derive_audit_key`].
    ///
    /// Succeeds on a tampered log (see the module header for how appends then
    /// continue); only [`verify`](Self::verify) judges the log.
    pub fn open(data_dir: &Path, key: SecretKey, head: Arc<dyn ControlStore>) -> Result<AuditLog, AuditError> {
        let path = data_dir.join(AUDIT_FILE);
        if head.keeps_audit_lines() {
            let described = PathBuf::from(format!("the audit lines in {}", head.describe()));
            return AuditLog::open_shared(described, key, head);
        }
        let io_err = |source: io::Error| AuditError::Io { path: path.clone(), source };
        let mut options = OpenOptions::new();
        options.read(true).append(true).mode(0o600);
        let file = match options.clone().create_new(true).open(&path) {
            Ok(file) => {
                // Make the new directory entry durable.
                File::open(data_dir).and_then(|d| d.sync_all()).map_err(io_err)?;
                file
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => options.open(&path).map_err(io_err)?,
            Err(e) => return Err(io_err(e)),
        };

        let log = AuditLog::with_state(path, key, head, false, Some(file), false);
        log.rescan(&mut log.lock())?;
        Ok(log)
    }

    /// The log whose lines the control store keeps (several collectors on
    /// one chain); `path` only names it in messages.
    fn open_shared(path: PathBuf, key: SecretKey, head: Arc<dyn ControlStore>) -> Result<AuditLog, AuditError> {
        let log = AuditLog::with_state(path, key, head, true, None, false);
        log.rescan(&mut log.lock())?;
        Ok(log)
    }

    /// A log whose end is not read yet (`rescan` finds it before the first
    /// append, unless read-only).
    fn with_state(
        path: PathBuf,
        key: SecretKey,
        head: Arc<dyn ControlStore>,
        shared: bool,
        file: Option<File>,
        read_only: bool,
    ) -> AuditLog {
        AuditLog {
            key: hmac::Key::new(hmac::HMAC_SHA256, key.expose()),
            path,
            head,
            shared,
            state: Mutex::new(State {
                file,
                read_only,
                next_seq: 1,
                last_mac: [0; MAC_LEN],
                needs_newline: false,
                rescan: !read_only,
            }),
            appended: Default::default(),
        }
    }

    /// The log of `data_dir` for reading only (the offline tools): nothing
    /// is created, cut or appended, and [`append`](Self::append) returns
    /// [`AuditError::ReadOnly`].
    pub fn open_read_only(data_dir: &Path, key: SecretKey, head: Arc<dyn ControlStore>) -> AuditLog {
        let shared = head.keeps_audit_lines();
        AuditLog::with_state(data_dir.join(AUDIT_FILE), key, head, shared, None, true)
    }

    /// Where the log file lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one entry, fsyncs the file, then records the new head.
    ///
    /// `detail` is cut to [`MAX_DETAIL_CHARS`] characters and `actor`,
    /// `action`, `org` to [`MAX_NAME_CHARS`], on character boundaries. On
    /// [`AuditError::Database`] the entry is already durable in the file (the
    /// head catches up at the next append); on [`AuditError::Io`] it may or
    /// may not be there.
    pub fn append(
        &self,
        at_ms: i64,
        actor: &str,
        action: &str,
        org: Option<&str>,
        outcome: AuditOutcome,
        detail: &str,
    ) -> Result<AuditEntry, AuditError> {
        self.append_chunk(at_ms, &[AuditDraft { actor, action, org, outcome, detail }])
    }

    /// Appends `drafts` in order, as many [`append`](Self::append)s would
    /// (the same entries, cut the same way, one per draft, chained), but
    /// with one durable write and one head update per [`APPEND_BATCH`]
    /// entries instead of one each: a registration import of thousands of
    /// devices. All at `at_ms`. Returns how many were appended.
    ///
    /// Each slice of [`APPEND_BATCH`] is signed whole before anything is
    /// written, so a slice the chain cannot take ([`AuditError::SeqExhausted`])
    /// or that a read-only log refuses leaves nothing of it behind. On an
    /// error the slices before the failing one are appended; of the failing
    /// one, the same holds as for [`append`](Self::append): on
    /// [`AuditError::Database`] its entries are durable in the file, on
    /// [`AuditError::Io`] some of them may be there (a shared log's lines
    /// are all there or none).
    pub fn append_all(&self, at_ms: i64, drafts: &[AuditDraft<'_>]) -> Result<usize, AuditError> {
        let mut appended = 0;
        for chunk in drafts.chunks(APPEND_BATCH) {
            self.append_chunk(at_ms, chunk)?;
            appended += chunk.len();
        }
        Ok(appended)
    }

    /// Appends a non-empty slice of entries with one write and one head
    /// update; returns the last.
    fn append_chunk(&self, at_ms: i64, drafts: &[AuditDraft<'_>]) -> Result<AuditEntry, AuditError> {
        // Never called so (chunks are non-empty), but nothing is written if it is.
        if drafts.is_empty() {
            return Err(AuditError::Database("no audit entries to append".into()));
        }
        let mut state = self.lock();
        if state.rescan {
            self.rescan(&mut state)?;
        }
        let at = format_rfc3339(at_ms);
        let mut entries: Vec<AuditEntry> = drafts
            .iter()
            .map(|d| AuditEntry {
                seq: 0,
                at_ms,
                at: at.clone(),
                actor: truncate_chars(d.actor, MAX_NAME_CHARS).to_owned(),
                action: truncate_chars(d.action, MAX_NAME_CHARS).to_owned(),
                org: d.org.map(|o| truncate_chars(o, MAX_NAME_CHARS).to_owned()),
                outcome: d.outcome,
                detail: truncate_chars(d.detail, MAX_DETAIL_CHARS).to_owned(),
                prev: String::new(),
                mac: String::new(),
            })
            .collect();
        if state.read_only {
            return Err(AuditError::ReadOnly { path: self.path.clone() });
        }
        if self.shared {
            return self.append_shared(&mut state, entries);
        }
        let Chained { lines, last_mac, next_seq } = self.chain(state.next_seq, state.last_mac, &mut entries)?;

        let mut buf = Vec::with_capacity(lines.iter().map(|l| l.len() + 1).sum::<usize>() + 1);
        if state.needs_newline {
            buf.push(b'\n');
        }
        for line in &lines {
            buf.extend_from_slice(line);
            buf.push(b'\n');
        }

        // fdatasync covers the file size, which is all an append changes.
        let Some(file) = state.file.as_mut() else {
            return Err(AuditError::ReadOnly { path: self.path.clone() });
        };
        if let Err(source) = file.write_all(&buf).and_then(|()| file.sync_data()) {
            state.rescan = true;
            return Err(AuditError::Io { path: self.path.clone(), source });
        }
        state.needs_newline = false;
        state.last_mac = last_mac;
        state.next_seq = next_seq;
        // Counted once durable in the file, even if the head update below
        // fails (see the error contract above).
        self.appended.fetch_add(entries.len() as u64, std::sync::atomic::Ordering::Relaxed);
        let last = entries.pop().ok_or_else(|| AuditError::Database("no entries to append".into()))?;
        self.write_head(last.seq, &last_mac)?;
        Ok(last)
    }

    /// Numbers, links and signs `entries` from `seq` after `prev`; returns
    /// their lines (canonical, no newline), the last MAC and the sequence
    /// number after them. Fails before any is usable if the chain cannot
    /// take them all.
    fn chain(&self, mut seq: u64, mut prev: [u8; MAC_LEN], entries: &mut [AuditEntry]) -> Result<Chained, AuditError> {
        let mut lines = Vec::with_capacity(entries.len());
        for entry in entries.iter_mut() {
            let next_seq = seq.checked_add(1).ok_or(AuditError::SeqExhausted)?;
            entry.seq = seq;
            entry.prev = hex::encode(prev);
            entry.mac.clear();
            let mac = self.sign(entry)?;
            entry.mac = hex::encode(mac);
            lines.push(serde_json::to_vec(&*entry).map_err(AuditError::Encode)?);
            prev = mac;
            seq = next_seq;
        }
        Ok(Chained { lines, last_mac: prev, next_seq: seq })
    }

    /// Appends `entries` (their `seq` and `prev` from `state`) to the lines
    /// the control store keeps, in one transaction: if another collector
    /// took the first sequence number first, reads the end of the chain
    /// again and signs afresh. Returns the last.
    fn append_shared(&self, state: &mut State, mut entries: Vec<AuditEntry>) -> Result<AuditEntry, AuditError> {
        // Each retry means another collector appended meanwhile, so this
        // bound is only reached under a storm of audit entries elsewhere.
        const ATTEMPTS: usize = 64;
        for _ in 0..ATTEMPTS {
            if state.rescan {
                self.rescan(state)?;
            }
            let first_seq = state.next_seq;
            let Chained { lines, last_mac, next_seq } = self.chain(first_seq, state.last_mac, &mut entries)?;
            let head = head_row(next_seq - 1, &last_mac);
            match self.head.append_audit_lines(first_seq, &lines, &head) {
                Ok(crate::control::seam::AuditAppend::Appended) => {
                    state.last_mac = last_mac;
                    state.next_seq = next_seq;
                    self.appended.fetch_add(entries.len() as u64, std::sync::atomic::Ordering::Relaxed);
                    return entries.pop().ok_or_else(|| AuditError::Database("no entries to append".into()));
                }
                Ok(crate::control::seam::AuditAppend::Taken) => state.rescan = true,
                Err(e) => {
                    state.rescan = true;
                    return Err(db_err(e));
                }
            }
        }
        Err(AuditError::Database(format!(
            "another collector kept taking the next audit sequence number ({ATTEMPTS} attempts)"
        )))
    }

    /// Entries this process appended since it opened the log.
    pub fn appended(&self) -> u64 {
        self.appended.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Checks the whole log against the chain and the recorded head.
    ///
    /// Returns [`AuditError::Tampered`] naming the first bad line: a line
    /// that is too long, does not parse or is not in canonical form, a bad
    /// MAC, a wrong `prev` link, a `seq` gap or reordering, a MAC that
    /// differs from the head's, or entries missing after the end.
    pub fn verify(&self) -> Result<VerifyReport, AuditError> {
        self.verify_since(None).map(|done| VerifyReport { entries: done.entries })
    }

    /// Checks the entries appended since an earlier verification ended at
    /// `from` (the whole log for `None`), and returns where this one ended,
    /// for the next. The last entry `from` verified is read again and must
    /// still carry its MAC, so a log truncated or rewritten at its end is
    /// found; entries before it are only checked by a whole
    /// [`verify`](Self::verify). The same errors as [`verify`](Self::verify).
    pub fn verify_since(&self, from: Option<&Verified>) -> Result<Verified, AuditError> {
        let from = from.filter(|f| f.entries > 0);
        let _state = self.lock();
        let head = self.read_head()?;
        let mut lines = self.reader_from(from)?;
        let mut expected_seq: u64 = 1;
        let mut prev = [0u8; MAC_LEN];
        let mut last_line = 0;
        let mut last_start = 0;
        if let Some(from) = from {
            // The last entry verified, again: its line must still be there.
            let gone =
                |reason: &str| AuditError::Tampered { seq: from.entries, line: from.line, reason: reason.into() };
            if !lines.advance().map_err(|e| self.io_err(e))? {
                return Err(gone("the entry verified last is gone: the log was truncated"));
            }
            let intact = lines.line().and_then(|bytes| parse_line(bytes).ok()).is_some_and(|entry| {
                let mut unsigned = entry.clone();
                unsigned.mac.clear();
                entry.seq == from.entries
                    && decode_mac(&entry.mac).is_some_and(|mac| ct_eq(&mac, &from.mac))
                    && mac_message(&unsigned).is_ok_and(|m| hmac::verify(&self.key, &m, &from.mac).is_ok())
            });
            if !intact {
                return Err(gone("the entry verified last was changed: the log was rewritten"));
            }
            expected_seq = from.entries.checked_add(1).ok_or(AuditError::SeqExhausted)?;
            prev = from.mac;
            last_line = from.line;
            last_start = from.start;
        }
        while lines.advance().map_err(|e| self.io_err(e))? {
            let number = lines.number();
            last_line = number;
            last_start = lines.start();
            let tampered = |reason: String| AuditError::Tampered { seq: expected_seq, line: number, reason };
            let bytes = lines.line().ok_or_else(|| tampered(format!("line is longer than {MAX_LINE} bytes")))?;
            let entry = parse_line(bytes).map_err(tampered)?;
            if entry.seq != expected_seq {
                return Err(tampered(format!(
                    "found seq {} where seq {expected_seq} was expected: entries removed, inserted or reordered",
                    entry.seq
                )));
            }
            if decode_mac(&entry.prev).is_none_or(|p| !ct_eq(&p, &prev)) {
                return Err(tampered("prev does not match the mac of the previous entry".into()));
            }
            let mac = decode_mac(&entry.mac).ok_or_else(|| tampered("mac is not 64 hex digits".into()))?;
            let mut unsigned = entry.clone();
            unsigned.mac.clear();
            let message = mac_message(&unsigned)?;
            if hmac::verify(&self.key, &message, &mac).is_err() {
                return Err(tampered("bad mac: the entry was altered or written with another key".into()));
            }
            if let Some((head_seq, head_mac)) = head {
                if entry.seq == head_seq && !ct_eq(&mac, &head_mac) {
                    return Err(tampered(
                        "the mac differs from the one recorded in the head: the log was rewritten".into(),
                    ));
                }
            }
            prev = mac;
            expected_seq = expected_seq.checked_add(1).ok_or(AuditError::SeqExhausted)?;
        }
        let entries = expected_seq - 1;
        if let Some((head_seq, _)) = head {
            if entries < head_seq {
                return Err(AuditError::Tampered {
                    seq: expected_seq,
                    line: last_line + 1,
                    reason: format!(
                        "missing entries after seq {entries}: the head records seq {head_seq}, the log was truncated"
                    ),
                });
            }
        }
        Ok(Verified { entries, mac: prev, line: last_line, start: last_start })
    }

    /// Entries with `seq > after_seq`, in log order, at most `limit` of them;
    /// only those concerning `org` when it is given.
    ///
    /// MACs are not checked here (that is [`verify`](Self::verify)'s job),
    /// but a line that is not a canonical entry is an error rather than
    /// silently skipped.
    pub fn entries(&self, org: Option<&str>, after_seq: u64, limit: usize) -> Result<Vec<AuditEntry>, AuditError> {
        let search = AuditSearch { org: org.map(str::to_owned), after_seq, ..AuditSearch::default() };
        self.search(&search, limit)
    }

    /// The entries `search` matches, at most `limit` of them: the oldest
    /// ones in log order, or with [`AuditSearch::newest_first`] the newest
    /// ones, newest first. Memory stays within `limit` entries however long
    /// the log is.
    pub fn search(&self, search: &AuditSearch, limit: usize) -> Result<Vec<AuditEntry>, AuditError> {
        let mut found = std::collections::VecDeque::new();
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.scan(|entry| {
            if !search.matches(&entry) {
                return true;
            }
            if search.newest_first {
                if found.len() == limit {
                    found.pop_front();
                }
                found.push_back(entry);
                true
            } else {
                found.push_back(entry);
                found.len() < limit
            }
        })?;
        let mut found: Vec<AuditEntry> = found.into();
        if search.newest_first {
            found.reverse();
        }
        Ok(found)
    }

    /// Calls `visit` with every entry in log order until it returns false.
    /// A line that is not a canonical entry is an error, named by its line
    /// number.
    pub fn scan(&self, mut visit: impl FnMut(AuditEntry) -> bool) -> Result<(), AuditError> {
        let _state = self.lock();
        let mut lines = self.reader()?;
        while lines.advance().map_err(|e| self.io_err(e))? {
            let number = lines.number();
            let tampered = |reason: String| AuditError::Tampered { seq: 0, line: number, reason };
            let bytes = lines.line().ok_or_else(|| tampered(format!("line is longer than {MAX_LINE} bytes")))?;
            let entry = parse_line(bytes).map_err(tampered)?;
            if !visit(entry) {
                break;
            }
        }
        Ok(())
    }

    /// Takes the lock; after a panic while it was held, the end of the file
    /// is re-read before the next append.
    fn lock(&self) -> MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(guard) => guard,
            Err(poisoned) => {
                self.state.clear_poison();
                let mut guard = poisoned.into_inner();
                guard.rescan = true;
                guard
            }
        }
    }

    /// Re-reads the file and the head to find the next `seq` and `prev`,
    /// cutting off a torn last line.
    fn rescan(&self, state: &mut State) -> Result<(), AuditError> {
        let mut last: Option<(u64, [u8; MAC_LEN])> = None;
        let mut needs_newline = false;
        if self.shared {
            // The end of the chain, not all of it: a collector whose append
            // lost a race reads this again at once.
            if let Some((_, line)) = self.head.last_audit_line().map_err(db_err)? {
                last = chain_point(&line);
            }
        } else {
            let mut lines = self.file_reader()?;
            let mut torn_at = None;
            while lines.advance().map_err(|e| self.io_err(e))? {
                if let Some(point) = lines.line().and_then(chain_point) {
                    last = Some(point);
                    needs_newline = !lines.terminated;
                } else if !lines.terminated {
                    torn_at = Some(lines.start);
                }
            }
            if let Some(start) = torn_at {
                let cut = lines.offset - start;
                tracing::warn!(path = %self.path.display(), offset = start, bytes = cut, "audit log: removing a torn last line");
                if let Some(file) = &state.file {
                    file.set_len(start).and_then(|()| file.sync_data()).map_err(|e| self.io_err(e))?;
                }
            }
        }

        let (mut next_seq, mut last_mac) = match last {
            Some((seq, mac)) => (seq.checked_add(1).ok_or(AuditError::SeqExhausted)?, mac),
            None => (1, [0; MAC_LEN]),
        };
        // Entries removed from the end must stay visible as a gap.
        if let Some((head_seq, head_mac)) = self.read_head()? {
            if head_seq >= next_seq {
                next_seq = head_seq.checked_add(1).ok_or(AuditError::SeqExhausted)?;
                last_mac = head_mac;
            }
        }
        state.next_seq = next_seq;
        state.last_mac = last_mac;
        state.needs_newline = needs_newline;
        state.rescan = false;
        Ok(())
    }

    /// The MAC of an entry whose `mac` field is empty.
    fn sign(&self, unsigned: &AuditEntry) -> Result<[u8; MAC_LEN], AuditError> {
        let tag = hmac::sign(&self.key, &mac_message(unsigned)?);
        let mut mac = [0u8; MAC_LEN];
        mac.copy_from_slice(tag.as_ref());
        Ok(mac)
    }

    /// The recorded head, if any entry was ever appended.
    fn read_head(&self) -> Result<Option<(u64, [u8; MAC_LEN])>, AuditError> {
        let Some(value) = self.head.audit_head().map_err(db_err)? else {
            return Ok(None);
        };
        let bytes = value.as_slice();
        if bytes.len() != HEAD_LEN {
            return Err(AuditError::Tampered {
                seq: 0,
                line: 0,
                reason: format!("the head record is {} bytes, expected {HEAD_LEN}", bytes.len()),
            });
        }
        let (seq, mac) = bytes.split_at(8);
        let mut seq_bytes = [0u8; 8];
        seq_bytes.copy_from_slice(seq);
        let mut mac_bytes = [0u8; MAC_LEN];
        mac_bytes.copy_from_slice(mac);
        Ok(Some((u64::from_be_bytes(seq_bytes), mac_bytes)))
    }

    /// Records `seq` and `mac` as the head.
    fn write_head(&self, seq: u64, mac: &[u8; MAC_LEN]) -> Result<(), AuditError> {
        self.head.set_audit_head(&head_row(seq, mac)).map_err(db_err)
    }

    /// A fresh bounded line reader over the whole file.
    fn file_reader(&self) -> Result<Lines<BufReader<File>>, AuditError> {
        let file = File::open(&self.path).map_err(|e| self.io_err(e))?;
        Ok(Lines::new(BufReader::new(file)))
    }

    /// A reader from the last entry `from` verified (included), or over
    /// every line.
    fn reader_from(&self, from: Option<&Verified>) -> Result<Reader, AuditError> {
        let Some(from) = from.filter(|f| f.entries > 0) else { return self.reader() };
        if self.shared {
            let mut reader = self.reader()?;
            if let Reader::Shared(lines) = &mut reader {
                lines.after = from.entries - 1;
            }
            return Ok(reader);
        }
        use std::io::Seek;
        let mut file = File::open(&self.path).map_err(|e| self.io_err(e))?;
        file.seek(io::SeekFrom::Start(from.start)).map_err(|e| self.io_err(e))?;
        let mut lines = Lines::new(BufReader::new(file));
        lines.offset = from.start;
        lines.number = from.line - 1;
        Ok(Reader::File(lines))
    }

    /// A fresh reader over every line, wherever they are kept.
    fn reader(&self) -> Result<Reader, AuditError> {
        if self.shared {
            return Ok(Reader::Shared(SharedLines {
                control: Arc::clone(&self.head),
                page: std::collections::VecDeque::new(),
                after: 0,
                number: 0,
                current: Vec::new(),
                too_long: false,
                done: false,
            }));
        }
        Ok(Reader::File(self.file_reader()?))
    }

    fn io_err(&self, source: io::Error) -> AuditError {
        AuditError::Io { path: self.path.clone(), source }
    }
}

/// The head row: `seq` big-endian, then the MAC.
fn head_row(seq: u64, mac: &[u8; MAC_LEN]) -> [u8; HEAD_LEN] {
    let mut row = [0u8; HEAD_LEN];
    row[..8].copy_from_slice(&seq.to_be_bytes());
    row[8..].copy_from_slice(mac);
    row
}

/// The bytes an entry's MAC covers.
fn mac_message(unsigned: &AuditEntry) -> Result<Vec<u8>, AuditError> {
    let mut message = ENTRY_MAC_DOMAIN.to_vec();
    serde_json::to_writer(&mut message, unsigned).map_err(AuditError::Encode)?;
    Ok(message)
}

/// Parses a line that must be the canonical encoding of an entry.
fn parse_line(bytes: &[u8]) -> Result<AuditEntry, String> {
    let entry: AuditEntry = serde_json::from_slice(bytes).map_err(|e| format!("not an audit entry: {e}"))?;
    match serde_json::to_vec(&entry) {
        Ok(canonical) if canonical == bytes => Ok(entry),
        _ => Err("the line is not in canonical form (edited)".into()),
    }
}

/// The `seq` and MAC of a line, if it parses as an entry (MAC not checked).
fn chain_point(bytes: &[u8]) -> Option<(u64, [u8; MAC_LEN])> {
    let entry: AuditEntry = serde_json::from_slice(bytes).ok()?;
    Some((entry.seq, decode_mac(&entry.mac)?))
}

/// Decodes 64 lowercase hex digits, the only form this module writes.
fn decode_mac(text: &str) -> Option<[u8; MAC_LEN]> {
    if !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut mac = [0u8; MAC_LEN];
    hex::decode_to_slice(text, &mut mac).ok()?;
    Some(mac)
}

/// Compares two MACs without an early exit.
fn ct_eq(a: &[u8; MAC_LEN], b: &[u8; MAC_LEN]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// At most `max` characters of `text`, cut on a character boundary.
fn truncate_chars(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

/// Unix milliseconds as RFC 3339 UTC; `@<ms>ms` outside the years 0-9999.
fn format_rfc3339(at_ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(at_ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| format!("@{at_ms}ms"))
}

/// Lines from the file or from the control store.
enum Reader {
    File(Lines<BufReader<File>>),
    Shared(SharedLines),
}

impl Reader {
    fn advance(&mut self) -> io::Result<bool> {
        match self {
            Reader::File(lines) => lines.advance(),
            Reader::Shared(lines) => lines.advance(),
        }
    }

    fn line(&self) -> Option<&[u8]> {
        match self {
            Reader::File(lines) => lines.line(),
            Reader::Shared(lines) => (!lines.too_long).then_some(lines.current.as_slice()),
        }
    }

    /// Where the current line starts in the file (0 for shared lines).
    fn start(&self) -> u64 {
        match self {
            Reader::File(lines) => lines.start,
            Reader::Shared(_) => 0,
        }
    }

    /// The line number in the file, or the sequence number a shared line
    /// is stored under.
    fn number(&self) -> u64 {
        match self {
            Reader::File(lines) => lines.number,
            Reader::Shared(lines) => lines.number,
        }
    }
}

/// The control store's audit lines, read a page at a time so memory stays
/// bounded however long the chain is.
struct SharedLines {
    control: Arc<dyn ControlStore>,
    page: std::collections::VecDeque<(u64, Vec<u8>)>,
    after: u64,
    number: u64,
    current: Vec<u8>,
    too_long: bool,
    done: bool,
}

/// Lines fetched from the control store at once.
const SHARED_PAGE: usize = 512;

impl SharedLines {
    fn advance(&mut self) -> io::Result<bool> {
        if self.page.is_empty() && !self.done {
            let page = self.control.audit_lines(self.after, SHARED_PAGE).map_err(io::Error::other)?;
            self.done = page.len() < SHARED_PAGE;
            self.page.extend(page);
        }
        let Some((seq, line)) = self.page.pop_front() else {
            return Ok(false);
        };
        self.after = seq;
        self.number = seq;
        self.too_long = line.len() > MAX_LINE;
        self.current = if self.too_long { Vec::new() } else { line };
        Ok(true)
    }
}

/// Splits a file into lines without ever holding more than [`MAX_LINE`]
/// bytes of one.
struct Lines<R> {
    reader: R,
    buf: Vec<u8>,
    /// 1-based number of the current line.
    number: u64,
    /// Bytes consumed so far.
    offset: u64,
    /// Byte offset where the current line starts.
    start: u64,
    /// Whether a `\n` ended the current line (only a file's last line may
    /// lack one).
    terminated: bool,
    /// The current line is longer than [`MAX_LINE`]; its bytes were skipped.
    too_long: bool,
}

impl<R: BufRead> Lines<R> {
    fn new(reader: R) -> Self {
        Lines { reader, buf: Vec::new(), number: 0, offset: 0, start: 0, terminated: false, too_long: false }
    }

    /// The current line without its `\n`; `None` if it is too long.
    fn line(&self) -> Option<&[u8]> {
        (!self.too_long).then_some(self.buf.as_slice())
    }

    /// Moves to the next line; `false` at the end of the file.
    fn advance(&mut self) -> io::Result<bool> {
        self.buf.clear();
        self.start = self.offset;
        self.terminated = false;
        self.too_long = false;
        let mut read_any = false;
        loop {
            let chunk = match self.reader.fill_buf() {
                Ok(chunk) => chunk,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if chunk.is_empty() {
                break;
            }
            read_any = true;
            let newline = chunk.iter().position(|&b| b == b'\n');
            let part = &chunk[..newline.unwrap_or(chunk.len())];
            if !self.too_long {
                if self.buf.len() + part.len() > MAX_LINE {
                    self.too_long = true;
                    self.buf = Vec::new();
                } else {
                    self.buf.extend_from_slice(part);
                }
            }
            let used = part.len() + usize::from(newline.is_some());
            self.reader.consume(used);
            self.offset += used as u64;
            if newline.is_some() {
                self.terminated = true;
                break;
            }
        }
        if read_any {
            self.number += 1;
        }
        Ok(read_any)
    }
}
