//! Registered devices (identity, wrapped shared key, certificate serial,
//! revocation) and per-stream ingest progress.

use std::fmt;
use std::sync::Arc;

use glimpse_common::identity::{DeviceId, DeviceIdentity, DeviceKind, OrgId, SiteId};
use glimpse_common::secret::SecretKey;
use serde::{Deserialize, Serialize};

use super::master::MasterCell;
use super::{device_key_aad, unwrap_key, wrap_key, KeyError, MasterKey};
use crate::cohort::Cohort;
use crate::control::seam::{ControlStore, DeviceRow, SegmentRow, SegmentRowKey};

/// A device the collector knows, as the enrolment tooling registers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRegistration {
    /// Who the device is.
    pub identity: DeviceIdentity,
    /// The per-device shared key created at manufacturing.
    pub shared_key: SecretKey,
    /// Serial number of the device's current certificate.
    pub cert_serial: String,
    /// Whether the device's certificate has been revoked.
    pub revoked: bool,
    /// The site of the organisation it belongs to, as its registration
    /// (the PKI tool's record) names it; `None`: no site.
    pub site: Option<SiteId>,
}

/// A registry row's first part, as the first version wrote it. Field
/// order is the postcard format: never change it.
#[derive(Serialize, Deserialize)]
struct StoredDevice {
    kind: DeviceKind,
    wrapped_key: Vec<u8>,
    cert_serial: String,
    revoked: bool,
}

/// What later versions append to a row, after [`StoredDevice`]: a row
/// written before sites existed ends after the first part and decodes
/// with no site. Postcard is not self-describing, so the first part is
/// decoded on its own and this from the bytes left; an older collector's
/// `from_bytes` reads the first part and ignores these. Field order is
/// the postcard format: append only, each addition optional.
#[derive(Serialize, Deserialize, Default)]
struct StoredDeviceTail {
    site: Option<SiteId>,
}

/// A row's two parts; a tail with nothing in it is not written, so a
/// device without a site keeps the first version's row.
fn decode_row(bytes: &[u8]) -> Result<(StoredDevice, StoredDeviceTail), postcard::Error> {
    let (row, rest): (StoredDevice, &[u8]) = postcard::take_from_bytes(bytes)?;
    if rest.is_empty() {
        return Ok((row, StoredDeviceTail::default()));
    }
    let (tail, rest): (StoredDeviceTail, &[u8]) = postcard::take_from_bytes(rest)?;
    if !rest.is_empty() {
        return Err(postcard::Error::DeserializeBadEncoding);
    }
    Ok((row, tail))
}

fn encode_row(row: &StoredDevice, tail: &StoredDeviceTail) -> Result<Vec<u8>, postcard::Error> {
    let mut bytes = postcard::to_stdvec(row)?;
    if tail.site.is_some() {
        bytes.extend(postcard::to_stdvec(tail)?);
    }
    Ok(bytes)
}

/// The device registry view of the catalog.
pub struct Registry {
    control: Arc<dyn ControlStore>,
    master: Arc<MasterCell>,
    seq_commits: SeqCommits,
    /// Tests make this many sequence commits fail, as a full disk would.
    #[cfg(test)]
    pub(crate) failing_seq_commits: std::sync::atomic::AtomicU32,
    /// Sequence commits made (transactions), for the tests.
    #[cfg(test)]
    pub(crate) seq_commits_made: std::sync::atomic::AtomicU32,
    /// How long a cohort's leader waits for the rest (tests: long, so that
    /// a slow thread cannot make them flaky).
    linger: std::time::Duration,
}

/// Group commit for stream sequence numbers: every acknowledged batch
/// needs its sequence durable first, and one redb commit (an fsync) per
/// batch would cap ingest at the disk's sync rate. Callers join the open
/// group; whoever finds no commit running commits the whole group in one
/// transaction, and everyone in it learns the outcome.
#[derive(Default)]
struct SeqCommits {
    state: std::sync::Mutex<CommitState>,
    done: std::sync::Condvar,
}

#[derive(Default)]
struct CommitState {
    /// The group new updates join.
    open: u64,
    groups: std::collections::HashMap<u64, SeqGroup>,
    committing: bool,
}

#[derive(Default)]
struct SeqGroup {
    /// (organisation, device, stream) → highest sequence to record.
    updates: std::collections::BTreeMap<(String, String, u64), u64>,
    /// What the same batches added to the segment catalog.
    segments: std::collections::BTreeMap<SegmentRowKey, SegmentRow>,
    outcome: Option<Result<(), String>>,
    waiting: usize,
    /// Cohort id → members that joined this group.
    cohorts: std::collections::HashMap<u64, usize>,
}

/// The longest a commit waits for the rest of its cohort: they were all
/// woken by one upload's end, so they arrive within moments; one that
/// failed meanwhile never does.
pub(crate) const COHORT_LINGER: std::time::Duration = std::time::Duration::from_millis(3);

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

/// Serial numbers compare without case or `:` separators, since tools print
/// them both ways.
fn same_serial(a: &str, b: &str) -> bool {
    let norm = |s: &str| s.chars().filter(|c| *c != ':').map(|c| c.to_ascii_lowercase()).collect::<String>();
    norm(a) == norm(b)
}

impl Registry {
    pub(super) fn new(control: Arc<dyn ControlStore>, master: Arc<MasterCell>) -> Registry {
        Registry {
            control,
            master,
            seq_commits: SeqCommits::default(),
            #[cfg(test)]
            failing_seq_commits: std::sync::atomic::AtomicU32::new(0),
            #[cfg(test)]
            seq_commits_made: std::sync::atomic::AtomicU32::new(0),
            linger: if cfg!(test) { std::time::Duration::from_secs(30) } else { COHORT_LINGER },
        }
    }

    /// Adds a device or replaces its registration (including the revoked
    /// flag: re-enrolling is the caller's decision).
    pub fn upsert(&self, reg: DeviceRegistration) -> Result<(), KeyError> {
        self.upsert_all(std::slice::from_ref(&reg))
    }

    /// Adds or replaces many registrations in one transaction: all of them
    /// or, on error, none.
    pub fn upsert_all(&self, regs: &[DeviceRegistration]) -> Result<(), KeyError> {
        // Held until the rows are stored: a rotation must not come between.
        let master = self.master.read();
        let rows = regs.iter().map(|reg| Registry::encode(&master, reg)).collect::<Result<Vec<_>, KeyError>>()?;
        Ok(self.control.put_devices(&rows)?)
    }

    fn encode(master: &MasterKey, reg: &DeviceRegistration) -> Result<DeviceRow, KeyError> {
        let id = &reg.identity;
        let row = StoredDevice {
            kind: id.kind,
            wrapped_key: wrap_key(master, &device_key_aad(&id.org, &id.device), &reg.shared_key)?,
            cert_serial: reg.cert_serial.clone(),
            revoked: reg.revoked,
        };
        let tail = StoredDeviceTail { site: reg.site.clone() };
        let bytes = encode_row(&row, &tail)
            .map_err(|e| KeyError::Corrupt { what: format!("devices/{}/{}: {e}", id.org, id.device) })?;
        Ok(DeviceRow { org: id.org.as_str().to_owned(), device: id.device.as_str().to_owned(), row: bytes })
    }

    /// The device's registration, with its shared key unwrapped.
    pub fn get(&self, org: &OrgId, device: &DeviceId) -> Result<Option<DeviceRegistration>, KeyError> {
        let master = self.master.read();
        let Some(row) = self.control.device(org.as_str(), device.as_str())? else {
            return Ok(None);
        };
        Registry::decode(&master, org.clone(), device.clone(), &row).map(Some)
    }

    /// A registry row's wrapped shared key rewrapped from `old` to `new`
    /// master key, the rest of the row as it was (a master key rotation).
    pub(super) fn rewrap_row(
        old: &MasterKey,
        new: &MasterKey,
        org: &OrgId,
        device: &DeviceId,
        bytes: &[u8],
    ) -> Result<Vec<u8>, KeyError> {
        let (mut row, tail) =
            decode_row(bytes).map_err(|e| KeyError::Corrupt { what: format!("devices/{org}/{device}: {e}") })?;
        let aad = device_key_aad(org, device);
        let key = unwrap_key(old, &aad, &row.wrapped_key)
            .ok_or_else(|| KeyError::DeviceUnwrap { org: org.clone(), device: device.clone() })?;
        row.wrapped_key = wrap_key(new, &aad, &key)?;
        encode_row(&row, &tail).map_err(|e| KeyError::Corrupt { what: format!("devices/{org}/{device}: {e}") })
    }

    fn decode(master: &MasterKey, org: OrgId, device: DeviceId, bytes: &[u8]) -> Result<DeviceRegistration, KeyError> {
        let (row, tail) =
            decode_row(bytes).map_err(|e| KeyError::Corrupt { what: format!("devices/{org}/{device}: {e}") })?;
        let shared_key = unwrap_key(master, &device_key_aad(&org, &device), &row.wrapped_key)
            .ok_or_else(|| KeyError::DeviceUnwrap { org: org.clone(), device: device.clone() })?;
        Ok(DeviceRegistration {
            identity: DeviceIdentity { org, device, kind: row.kind },
            shared_key,
            cert_serial: row.cert_serial,
            revoked: row.revoked,
            site: tail.site,
        })
    }

    /// Marks the device revoked if its current certificate has serial
    /// `serial` (compared ignoring case and `:`). Returns whether a
    /// registration was marked; a device re-enrolled with a newer
    /// certificate is left alone.
    pub fn set_revoked(&self, org: &OrgId, device: &DeviceId, serial: &str) -> Result<bool, KeyError> {
        let mut corrupt = None;
        let marked = self.control.update_device(org.as_str(), device.as_str(), &mut |bytes| {
            let (mut row, tail) = match decode_row(bytes) {
                Ok(parts) => parts,
                Err(e) => {
                    corrupt = Some(KeyError::Corrupt { what: format!("devices/{org}/{device}: {e}") });
                    return None;
                }
            };
            if !same_serial(&row.cert_serial, serial) {
                return None;
            }
            row.revoked = true;
            match encode_row(&row, &tail) {
                Ok(bytes) => Some(bytes),
                Err(e) => {
                    corrupt = Some(KeyError::Corrupt { what: format!("devices/{org}/{device}: {e}") });
                    None
                }
            }
        })?;
        if let Some(e) = corrupt {
            return Err(e);
        }
        if marked {
            tracing::info!(%org, %device, serial, "device marked revoked");
        }
        Ok(marked)
    }

    /// Every registered device, ordered by organisation and device id.
    pub fn list(&self) -> Result<Vec<DeviceRegistration>, KeyError> {
        let mut out = Vec::new();
        let master = self.master.read();
        for DeviceRow { org, device, row } in self.control.devices()? {
            let corrupt = || KeyError::Corrupt {
                what: format!(
                    "devices/{:?}/{:?}",
                    org.chars().take(80).collect::<String>(),
                    device.chars().take(80).collect::<String>()
                ),
            };
            let org = OrgId::new(org.as_str()).map_err(|_| corrupt())?;
            let device = DeviceId::new(device.as_str()).map_err(|_| corrupt())?;
            out.push(Registry::decode(&master, org, device, &row)?);
        }
        Ok(out)
    }

    /// The devices of `org` at one of `sites`, sorted, with no shared key
    /// unwrapped (what a site-limited admin may see and act on).
    pub fn devices_at(&self, org: &OrgId, sites: &[SiteId]) -> Result<Vec<DeviceId>, KeyError> {
        let mut out = Vec::new();
        for DeviceRow { org: row_org, device, row } in self.control.devices()? {
            if row_org != org.as_str() {
                continue;
            }
            let corrupt = |e: &dyn fmt::Display| KeyError::Corrupt {
                what: format!("devices/{org}/{:?}: {e}", device.chars().take(80).collect::<String>()),
            };
            let (_, tail) = decode_row(&row).map_err(|e| corrupt(&e))?;
            if tail.site.as_ref().is_some_and(|site| sites.contains(site)) {
                out.push(DeviceId::new(device.as_str()).map_err(|e| corrupt(&e))?);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Registers (or, with `None`, removes) the SSH public key of a device.
    pub fn set_ssh_key(&self, org: &OrgId, device: &DeviceId, public_key: Option<&str>) -> Result<(), KeyError> {
        Ok(self.control.set_ssh_key(org.as_str(), device.as_str(), public_key)?)
    }

    /// Sets or removes several devices' SSH public key lines in one
    /// transaction: all of them, or on an error none.
    pub fn set_ssh_keys(&self, keys: &[(&OrgId, &DeviceId, Option<&str>)]) -> Result<(), KeyError> {
        // A reload that changed nothing commits nothing.
        if keys.is_empty() {
            return Ok(());
        }
        let rows: Vec<crate::control::seam::SshKeyRow> = keys
            .iter()
            .map(|(org, device, line)| crate::control::seam::SshKeyRow {
                org: org.as_str().to_owned(),
                device: device.as_str().to_owned(),
                line: line.map(str::to_owned),
            })
            .collect();
        Ok(self.control.set_ssh_keys(&rows)?)
    }

    /// The device's registered SSH public key line, if it has one.
    pub fn ssh_key(&self, org: &OrgId, device: &DeviceId) -> Result<Option<String>, KeyError> {
        Ok(self.control.ssh_key(org.as_str(), device.as_str())?)
    }

    /// The highest batch sequence of this stream that is durably stored; 0
    /// if none is.
    pub fn stored_seq(&self, identity: &DeviceIdentity, stream_id: u64) -> Result<u64, KeyError> {
        Ok(self.control.stored_seq(identity.org.as_str(), identity.device.as_str(), stream_id)?)
    }

    /// Records, durably, that every batch of the stream up to `seq` is
    /// stored. Never moves backwards, so a late or repeated call cannot
    /// cause re-storing. Concurrent callers share one commit.
    pub fn set_stored_seq(&self, identity: &DeviceIdentity, stream_id: u64, seq: u64) -> Result<(), KeyError> {
        self.set_stored_seq_with(identity, stream_id, seq, Vec::new())
    }

    /// As [`Registry::set_stored_seq`], adding to the segment catalog what
    /// the batch stored, in the same commit.
    pub fn set_stored_seq_with(
        &self,
        identity: &DeviceIdentity,
        stream_id: u64,
        seq: u64,
        segments: Vec<(SegmentRowKey, SegmentRow)>,
    ) -> Result<(), KeyError> {
        self.set_stored_seq_in(identity, (stream_id, seq), segments, None)
    }

    /// As [`Registry::set_stored_seq_with`], for a batch of `cohort` (the
    /// tickets one upload made durable at once): a commit led by one of
    /// them waits, at most a few milliseconds, for the rest of its cohort
    /// to join, so that they share one transaction.
    pub fn set_stored_seq_in(
        &self,
        identity: &DeviceIdentity,
        (stream_id, seq): (u64, u64),
        segments: Vec<(SegmentRowKey, SegmentRow)>,
        cohort: Option<Cohort>,
    ) -> Result<(), KeyError> {
        self.set_stored_seqs_in(vec![(identity, (stream_id, seq))], segments, cohort)
    }

    /// As [`Registry::set_stored_seq_in`] for several streams' batches at
    /// once, committed in one transaction (or with others': concurrent
    /// callers still share one commit).
    pub fn set_stored_seqs_in(
        &self,
        streams: Vec<(&DeviceIdentity, (u64, u64))>,
        segments: Vec<(SegmentRowKey, SegmentRow)>,
        cohort: Option<Cohort>,
    ) -> Result<(), KeyError> {
        let commits = &self.seq_commits;
        let lock = || commits.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut state = lock();
        let mine = state.open;
        {
            let group = state.groups.entry(mine).or_default();
            for (identity, (stream_id, seq)) in streams {
                let key = (identity.org.as_str().to_owned(), identity.device.as_str().to_owned(), stream_id);
                let entry = group.updates.entry(key).or_insert(seq);
                *entry = (*entry).max(seq);
            }
            for (segment, row) in segments {
                group.segments.entry(segment).or_default().merge(&row);
            }
            group.waiting += 1;
            if let Some(cohort) = cohort {
                *group.cohorts.entry(cohort.id).or_default() += 1;
            }
        }
        // A leader of a cohort about to commit may be waiting for us.
        if cohort.is_some() {
            commits.done.notify_all();
        }
        loop {
            let outcome = state.groups.get(&mine).and_then(|g| g.outcome.clone());
            if let Some(outcome) = outcome {
                if let Some(group) = state.groups.get_mut(&mine) {
                    group.waiting -= 1;
                    if group.waiting == 0 {
                        state.groups.remove(&mine);
                    }
                }
                return outcome.map_err(KeyError::SequenceCommit);
            }
            if state.committing {
                state = commits.done.wait(state).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            // Lead: commit the open group (ours is it, or was committed),
            // once the rest of our cohort joined it (or it is not coming).
            if let Some(cohort) = cohort.filter(|_| state.open == mine) {
                let until = std::time::Instant::now() + self.linger;
                loop {
                    let joined = state.groups.get(&mine).and_then(|g| g.cohorts.get(&cohort.id)).copied();
                    let now = std::time::Instant::now();
                    if joined.unwrap_or(0) >= cohort.size || now >= until || state.committing {
                        break;
                    }
                    state = commits.done.wait_timeout(state, until - now).unwrap_or_else(|p| p.into_inner()).0;
                }
                if state.committing || state.groups.get(&mine).is_some_and(|g| g.outcome.is_some()) {
                    continue;
                }
            }
            let leading = state.open;
            state.open += 1;
            state.committing = true;
            let (updates, segments) = state
                .groups
                .get_mut(&leading)
                .map(|g| (std::mem::take(&mut g.updates), std::mem::take(&mut g.segments)))
                .unwrap_or_default();
            drop(state);
            let result = self.commit_stored_seqs(&updates, &segments).map_err(|e| e.to_string());
            state = lock();
            state.committing = false;
            if let Some(group) = state.groups.get_mut(&leading) {
                group.outcome = Some(result);
            }
            commits.done.notify_all();
        }
    }

    fn commit_stored_seqs(
        &self,
        updates: &std::collections::BTreeMap<(String, String, u64), u64>,
        segments: &std::collections::BTreeMap<SegmentRowKey, SegmentRow>,
    ) -> Result<(), KeyError> {
        #[cfg(test)]
        {
            use std::sync::atomic::Ordering::SeqCst;
            self.seq_commits_made.fetch_add(1, SeqCst);
            let failing = &self.failing_seq_commits;
            if failing.fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1)).is_ok() {
                return Err(KeyError::SequenceCommit("injected failure: no space left on device".into()));
            }
        }
        let updates: Vec<_> = updates.iter().map(|(key, seq)| (key.clone(), *seq)).collect();
        let segments: Vec<_> = segments.iter().map(|(key, row)| (key.clone(), row.clone())).collect();
        Ok(self.control.raise_stored_seqs(&updates, &segments)?)
    }
}

#[cfg(test)]
mod tests {
    use crate::keys::{test_master, Catalog};

    use super::*;

    fn reg(org: &str, device: &str, serial: &str) -> DeviceRegistration {
        DeviceRegistration {
            identity: DeviceIdentity {
                org: OrgId::new(org).unwrap(),
                device: DeviceId::new(device).unwrap(),
                kind: DeviceKind::Ap,
            },
            shared_key: SecretKey::generate().unwrap(),
            cert_serial: serial.into(),
            revoked: false,
            site: None,
        }
    }

    #[test]
    fn a_site_survives_revocation_and_rewrapping_and_old_rows_have_none() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open(dir.path(), test_master(1)).unwrap();
        let r = catalog.registry();
        let mut a = reg("acme", "ap-1", "01");
        a.site = Some(SiteId::new("berlin-hq").unwrap());
        r.upsert(a.clone()).unwrap();
        let (org, device) = (&a.identity.org, &a.identity.device);
        assert_eq!(r.get(org, device).unwrap().unwrap().site, a.site);
        assert!(r.set_revoked(org, device, "01").unwrap());
        let got = r.get(org, device).unwrap().unwrap();
        assert!(got.revoked);
        assert_eq!(got.site, a.site, "revoking keeps the site");

        let bytes = r.control.device("acme", "ap-1").unwrap().unwrap();
        let master = test_master(1);
        let rewrapped = Registry::rewrap_row(&master, &test_master(2), org, device, &bytes).unwrap();
        let back = Registry::decode(&test_master(2), org.clone(), device.clone(), &rewrapped).unwrap();
        assert_eq!(back.site, a.site, "a master key rotation keeps the site");

        // A row as the first version wrote it (no tail) decodes with no
        // site, and a device without a site is still written that way.
        let first = StoredDevice {
            kind: DeviceKind::Ap,
            wrapped_key: wrap_key(&master, &device_key_aad(org, device), &a.shared_key).unwrap(),
            cert_serial: "01".into(),
            revoked: false,
        };
        let old = postcard::to_stdvec(&first).unwrap();
        assert_eq!(Registry::decode(&master, org.clone(), device.clone(), &old).unwrap().site, None);
        let mut plain = a.clone();
        plain.site = None;
        let plain_row = Registry::encode(&master, &plain).unwrap().row;
        let (_, rest) = postcard::take_from_bytes::<StoredDevice>(&plain_row).unwrap();
        assert!(rest.is_empty(), "no site: the first version's row");
        // What an older collector reads of a row with a site: the first part.
        let with_site = Registry::encode(&master, &a).unwrap().row;
        let (older, rest) = postcard::take_from_bytes::<StoredDevice>(&with_site).unwrap();
        assert!(!rest.is_empty());
        assert_eq!(older.cert_serial, "01");
        let older: StoredDevice = postcard::from_bytes(&with_site).unwrap();
        assert_eq!(older.cert_serial, "01");
        // Who is at which site, keys left wrapped.
        let mut b = reg("acme", "ap-2", "02");
        b.site = Some(SiteId::new("paris").unwrap());
        r.upsert(b.clone()).unwrap();
        r.upsert(reg("acme", "ap-3", "03")).unwrap();
        let mut other_org = reg("other", "ap-1", "04");
        other_org.site = a.site.clone();
        r.upsert(other_org).unwrap();
        let berlin = [SiteId::new("berlin-hq").unwrap()];
        assert_eq!(r.devices_at(org, &berlin).unwrap(), vec![device.clone()]);
        let both = [berlin[0].clone(), SiteId::new("paris").unwrap()];
        assert_eq!(r.devices_at(org, &both).unwrap(), vec![device.clone(), b.identity.device.clone()]);
        assert!(r.devices_at(org, &[]).unwrap().is_empty());
        // Bytes after the tail are damage.
        let mut damaged = with_site.clone();
        damaged.push(0);
        assert!(Registry::decode(&master, org.clone(), device.clone(), &damaged).is_err());
    }

    #[test]
    fn a_cohort_of_tickets_commits_its_sequences_in_one_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open(dir.path(), test_master(1)).unwrap();
        let r = catalog.registry();
        let made = || r.seq_commits_made.load(std::sync::atomic::Ordering::SeqCst);
        let cohort = Cohort { id: 7, size: 6 };
        std::thread::scope(|scope| {
            for device in 0..6 {
                scope.spawn(move || {
                    let id = reg("acme", &format!("ap-{device}"), "01").identity;
                    r.set_stored_seq_in(&id, (1, 3), Vec::new(), Some(cohort)).unwrap();
                });
            }
        });
        assert_eq!(made(), 1, "one upload's six batches, one transaction");
        for device in 0..6 {
            let id = reg("acme", &format!("ap-{device}"), "01").identity;
            assert_eq!(r.stored_seq(&id, 1).unwrap(), 3);
        }
        // Without a cohort, each caller alone commits at once.
        r.set_stored_seq(&reg("acme", "ap-9", "01").identity, 1, 1).unwrap();
        assert_eq!(made(), 2);
    }

    #[test]
    fn upsert_get_revoke_list_and_seq_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let a = reg("acme", "ap-1", "0A:1B");
        let b = reg("acme", "ap-2", "ff");
        let stream = a.identity.clone();
        {
            let catalog = Catalog::open(dir.path(), test_master(1)).unwrap();
            let r = catalog.registry();
            r.upsert(a.clone()).unwrap();
            r.upsert(b.clone()).unwrap();
            assert_eq!(r.get(&a.identity.org, &a.identity.device).unwrap(), Some(a.clone()));
            assert!(!r.set_revoked(&a.identity.org, &a.identity.device, "0c").unwrap());
            assert!(r.set_revoked(&a.identity.org, &a.identity.device, "0a1b").unwrap());
            let missing = DeviceId::new("nope").unwrap();
            assert!(!r.set_revoked(&a.identity.org, &missing, "0a1b").unwrap());
            assert_eq!(r.get(&a.identity.org, &missing).unwrap(), None);

            assert_eq!(r.stored_seq(&stream, 9).unwrap(), 0);
            r.set_stored_seq(&stream, 9, 5).unwrap();
            r.set_stored_seq(&stream, 9, 3).unwrap();
            r.set_stored_seq(&stream, 10, 1).unwrap();
        }
        let catalog = Catalog::open(dir.path(), test_master(1)).unwrap();
        let r = catalog.registry();
        let got = r.get(&a.identity.org, &a.identity.device).unwrap().unwrap();
        assert!(got.revoked);
        assert_eq!(got.shared_key, a.shared_key);
        assert_eq!(r.list().unwrap().len(), 2);
        assert_eq!(r.list().unwrap()[1], b);
        assert_eq!(r.stored_seq(&stream, 9).unwrap(), 5);
        assert_eq!(r.stored_seq(&stream, 10).unwrap(), 1);

        // SSH keys: set, replace, remove.
        let (org, device) = (&a.identity.org, &a.identity.device);
        assert_eq!(r.ssh_key(org, device).unwrap(), None);
        r.set_ssh_key(org, device, Some("ssh-ed25519 AAAA one")).unwrap();
        r.set_ssh_key(org, device, Some("ssh-ed25519 AAAA two")).unwrap();
        assert_eq!(r.ssh_key(org, device).unwrap().as_deref(), Some("ssh-ed25519 AAAA two"));
        r.set_ssh_key(org, device, None).unwrap();
        assert_eq!(r.ssh_key(org, device).unwrap(), None);

        // Shared keys are stored only wrapped.
        let bytes = std::fs::read(catalog.path()).unwrap();
        for key in [&a.shared_key, &b.shared_key] {
            assert!(!bytes.windows(32).any(|w| w == key.expose().as_slice()));
        }
    }

    #[test]
    fn concurrent_sequence_updates_are_committed_together_and_never_go_back() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open(dir.path(), test_master(1)).unwrap();
        let r = catalog.registry();
        let ids: Vec<DeviceIdentity> = (0..8).map(|d| reg("acme", &format!("ap-{d}"), "01").identity).collect();
        std::thread::scope(|scope| {
            for id in &ids {
                scope.spawn(move || {
                    for seq in 1..=50u64 {
                        r.set_stored_seq(id, 7, seq).unwrap();
                        // A stale update (a late duplicate) changes nothing.
                        r.set_stored_seq(id, 7, seq / 2).unwrap();
                    }
                });
            }
        });
        for id in &ids {
            assert_eq!(r.stored_seq(id, 7).unwrap(), 50);
        }
        assert!(r.seq_commits.state.lock().unwrap().groups.is_empty(), "finished groups are cleaned up");
    }

    #[test]
    fn shared_key_is_bound_to_its_row() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open(dir.path(), test_master(1)).unwrap();
        let r = catalog.registry();
        let a = reg("acme", "ap-1", "01");
        r.upsert(a.clone()).unwrap();
        // Copy ap-1's row to ap-2: the wrapped key must not unwrap there.
        let v = r.control.device("acme", "ap-1").unwrap().unwrap();
        r.control.put_devices(&[DeviceRow { org: "acme".into(), device: "ap-2".into(), row: v }]).unwrap();
        let err = r.get(&a.identity.org, &DeviceId::new("ap-2").unwrap()).unwrap_err();
        assert!(matches!(err, KeyError::DeviceUnwrap { .. }), "{err}");
    }
}
