//! Data key rotation at the store: rotating an organisation's data key,
//! the status of its versions, and the background re-encryption that
//! moves segments off retiring versions and then retires them.
//!
//! # Steps, and what a crash at each leaves
//!
//! 1. Rotation is one compare-and-set of the organisation's key row (see
//!    [`crate::keys::OrgKeys::rotate`]): before it, the old version is
//!    current; after it, the new one, and the old one is retiring. Appends
//!    seal under whichever version is current when they start, and a
//!    segment under another version takes no more blocks.
//! 2. Re-encryption rewrites each segment still under a retiring version
//!    with [`SegmentStore::rewrite`](super::seam::SegmentStore::rewrite), the machinery of erasure: the new
//!    segment is written and synced, then switched for the old one
//!    atomically (a crash leaves one or the other, both readable: the
//!    retiring version's key still exists). The segment catalog's row
//!    moves along: out before the switch, in after (a crash between leaves
//!    a segment the catalog check reports as missing its row, never a row
//!    for a segment that is gone).
//! 3. A retiring version is retired (its key destroyed, one
//!    compare-and-set) only by a run that *starts* with no segment under
//!    it: a run that re-encrypted the last of them leaves retirement to the
//!    next, so an append that began before the rotation has long finished.
//!    The audit entry (`data-key.retire`) is written first: every
//!    destroyed key has one.
//!
//! `GLIMPSE_TEST_CRASH_AT` (see [`crate::keys::rotation`]) stops the
//! process at `data-key-rotation:committed`, `data-key-reencrypt:replaced`
//! (segments of a kind switched, their catalog rows not yet back) and `data-key-retire:committed`.

use std::collections::{BTreeMap, HashMap};

use glimpse_common::identity::OrgId;
use glimpse_common::record::DataKind;

use super::seam::{Rewrite, SegmentBytes, SegmentInfo};
use super::segment::{header_key_version, SegmentPlace, SegmentReader};
use super::{catalog, Store, StoreError};
use crate::keys::{DataKeyRotation, KeyError, KeyState};

/// One version of an organisation's data key and how much is under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataKeyVersionStatus {
    /// The version.
    pub version: u32,
    /// Its state.
    pub state: KeyState,
    /// Segments sealed under it now.
    pub segments: u64,
}

/// What one run of [`Store::reencrypt`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reencrypted {
    /// Segments rewritten under their organisation's current version.
    pub segments: u64,
    /// Of those, segments with blocks that did not authenticate (not
    /// readable before either); only what authenticated was kept.
    pub damaged: u64,
    /// Versions retired (their keys destroyed).
    pub retired: Vec<(OrgId, u32)>,
    /// Segments still under a retiring version after this run.
    pub remaining: u64,
}

impl Store {
    /// Rotates `org`'s data key (see [`crate::keys::OrgKeys::rotate`]):
    /// new segments are sealed under the new version from now on; older
    /// ones stay readable and are re-encrypted by [`Store::reencrypt`].
    pub fn rotate_data_key(&self, org: &OrgId) -> Result<DataKeyRotation, StoreError> {
        Ok(self.org_keys().rotate(org)?)
    }

    /// [`Store::rotate_data_key`], calling `before` just before the
    /// rotation commits (see [`crate::keys::OrgKeys::rotate_then`]).
    pub fn rotate_data_key_then(
        &self,
        org: &OrgId,
        before: &mut dyn FnMut(&DataKeyRotation) -> Result<(), KeyError>,
    ) -> Result<DataKeyRotation, StoreError> {
        Ok(self.org_keys().rotate_then(org, before)?)
    }

    /// `org`'s data key versions, oldest first, with how many segments are
    /// under each (every segment's header is read); empty if it has no key.
    pub fn data_key_status(&self, org: &OrgId) -> Result<Vec<DataKeyVersionStatus>, StoreError> {
        let versions = self.org_keys().versions(org)?;
        if versions.is_empty() {
            return Ok(Vec::new());
        }
        let counts = self.segments_by_key_version(org)?;
        Ok(versions
            .into_iter()
            .map(|v| DataKeyVersionStatus {
                version: v.version,
                state: v.state,
                segments: counts.get(&v.version).copied().unwrap_or(0),
            })
            .collect())
    }

    /// How many of `org`'s segments are under each data key version.
    fn segments_by_key_version(&self, org: &OrgId) -> Result<BTreeMap<u32, u64>, StoreError> {
        let mut counts = BTreeMap::new();
        let mut problems = Vec::new();
        for kind in DataKind::ALL {
            for day in self.segments.days(org, kind, &mut problems)? {
                for segment in self.segments.segments(org, kind, day, &mut problems)? {
                    let Ok(Some(bytes)) = self.segments.open(&segment) else { continue };
                    if let Some(version) = header_key_version(&*bytes) {
                        *counts.entry(version).or_insert(0) += 1;
                    }
                }
            }
        }
        Ok(counts)
    }

    /// Re-encrypts at most `max_segments` segments still under a retiring
    /// data key version, of every organisation, under its current version,
    /// and retires the versions no segment was under when the run started
    /// (see the module header). Bounded so that it never holds a kind's
    /// appends for long; call it again to go on.
    pub fn reencrypt(&self, max_segments: u64) -> Result<Reencrypted, StoreError> {
        let mut report = Reencrypted::default();
        for org in self.org_keys().orgs()? {
            let versions = self.org_keys().versions(&org)?;
            let retiring: Vec<u32> =
                versions.iter().filter(|v| v.state == KeyState::Retiring).map(|v| v.version).collect();
            if retiring.is_empty() {
                continue;
            }
            let counts = self.segments_by_key_version(&org)?;
            for version in retiring.iter().filter(|v| counts.get(v).copied().unwrap_or(0) == 0) {
                // Audited before the key goes, so that a crash between the
                // two leaves an entry for every destroyed key (at worst one
                // for a key the next run then destroys).
                let detail = format!("data key version {version}: no segment is under it any more; destroying its key");
                let outcome = crate::audit::AuditOutcome::Done;
                let now = self.clock().now_millis();
                if let Err(e) =
                    self.audit().append(now, "collector", "data-key.retire", Some(org.as_str()), outcome, &detail)
                {
                    // No destruction without its audit entry: left for a later run.
                    tracing::error!(%org, version, "audit log append failed; data key version not retired: {e}");
                    continue;
                }
                if self.org_keys().retire(&org, *version)? {
                    report.retired.push((org.clone(), *version));
                }
            }
            let old: u64 = retiring.iter().map(|v| counts.get(v).copied().unwrap_or(0)).sum();
            if old == 0 {
                continue;
            }
            for kind in DataKind::ALL {
                let budget = max_segments.saturating_sub(report.segments);
                if budget == 0 {
                    break;
                }
                let (done, damaged) = self.reencrypt_kind(&org, kind, budget)?;
                report.segments += done;
                report.damaged += damaged;
            }
            let after = self.segments_by_key_version(&org)?;
            report.remaining += retiring.iter().map(|v| after.get(v).copied().unwrap_or(0)).sum::<u64>();
        }
        if report.segments > 0 || !report.retired.is_empty() {
            tracing::info!(
                segments = report.segments,
                retired = report.retired.len(),
                remaining = report.remaining,
                "data key re-encryption ran"
            );
        }
        Ok(report)
    }

    /// Re-encrypts up to `budget` segments of `org`'s `kind` that are not
    /// under the current version. Returns how many, and how many of them
    /// were damaged.
    fn reencrypt_kind(&self, org: &OrgId, kind: DataKind, budget: u64) -> Result<(u64, u64), StoreError> {
        let control = self.control();
        // The erase lock: one rewrite of a kind at a time across collectors.
        let _exclusive = control
            .exclusive(&format!("erase:{org}:{}", kind.as_str()))
            .map_err(|e| StoreError::Key(KeyError::Control(e)))?;
        self.segments.settle_compactions(org, kind, &*control)?;
        // Read after the lock: the current version as of now.
        let Some(key) = self.org_keys().get(org)? else { return Ok((0, 0)) };
        let current = key.version();
        let rows: HashMap<_, _> = control
            .segment_rows(org.as_str(), kind.as_str())
            .map_err(|e| StoreError::Key(KeyError::Control(e)))?
            .into_iter()
            .collect();
        let mut moved = HashMap::new();
        let (mut done, mut damaged) = (0u64, 0u64);
        let mut failed = None;
        let mut edit = |segment: &SegmentInfo, bytes: &dyn SegmentBytes| {
            if done >= budget {
                return Rewrite::Stop;
            }
            match header_key_version(bytes) {
                Some(v) if v != current => {}
                _ => return Rewrite::Keep,
            }
            let place = SegmentPlace { org: org.clone(), kind, day: segment.key.day };
            let Ok(mut reader) = SegmentReader::open(bytes, &place, &key) else {
                // Its version's key is gone or the header is damaged: nothing
                // here can read it, so it is left for readers to report.
                return Rewrite::Keep;
            };
            let mut blocks = Vec::new();
            let mut defects = 0u64;
            reader.read_blocks(|item| match item {
                Ok((_, plaintext)) => blocks.push(plaintext),
                Err(_) => defects += 1,
            });
            if blocks.is_empty() {
                return Rewrite::Keep;
            }
            let row_key = catalog::row_key(&segment.key);
            if let Err(e) = control.replace_segment_rows(std::slice::from_ref(&row_key), &[]) {
                failed = Some(StoreError::Key(KeyError::Control(e)));
                return Rewrite::Stop;
            }
            if let Some(row) = rows.get(&row_key) {
                moved.insert(segment.key.clone(), row.clone());
            }
            if defects > 0 {
                tracing::warn!(path = %segment.location.display(), defects, "re-encrypting a damaged segment: only its authentic blocks are kept");
                damaged += 1;
            }
            done += 1;
            Rewrite::Replace(blocks)
        };
        let replaced = self.segments.rewrite(org, kind, &key, &mut edit)?;
        if !replaced.is_empty() {
            crate::keys::rotation::crash_point("data-key-reencrypt:replaced");
        }
        let put: Vec<_> = replaced
            .iter()
            .filter_map(|(old, new)| Some((catalog::row_key(new.as_ref()?), moved.get(old)?.clone())))
            .collect();
        if let Err(e) = control.replace_segment_rows(&[], &put) {
            tracing::error!(%org, %kind, "cannot update the segment catalog after re-encryption: {e}");
        }
        if let Some(e) = failed {
            return Err(e);
        }
        Ok((done, damaged))
    }
}
