//! What each organisation has decided: whether packets may be captured,
//! whether (and until when) support staff may read its data, and which
//! metadata it lets devices collect (see [`glimpse_common::minimise`]).
//!
//! Decisions live in the [`ControlStore`] ([`seam`]; today the catalog
//! database `glimpse.redb`, table `org_policy`, see [`redb_store`]) so they
//! survive restarts, with an in-memory copy for the ingest path, which
//! checks consent on every batch that carries captures.
//! Both defaults are the private ones: no capture consent, no support access.
//! Every change is made through the admin API, which audits it.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use glimpse_common::clock::UnixMillis;
use glimpse_common::identity::OrgId;
use glimpse_common::minimise::MetadataField;
use serde::{Deserialize, Serialize};

pub mod admins;
pub mod backup;
pub mod redb_store;
pub mod seam;

pub use admins::{AdminError, AdminImport, AdminRecord, Admins};
pub use redb_store::RedbControl;
pub use seam::{ControlError, ControlStore, SegmentRow, SegmentRowKey, StreamRange};

/// The collector-wide fact naming the retention policy last audited.
const RETENTION_AUDITED: &str = "retention-policy-audited";

/// Longest support grant, in hours (30 days): access is meant to be
/// temporary, and a renewal is one more audited decision.
pub const MAX_GRANT_HOURS: u32 = 720;

/// Reading or writing a decision failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The catalog database failed.
    #[error("policy database: {0}")]
    Database(String),
    /// A stored row did not decode (corrupted database).
    #[error("stored policy for organisation {org} is unreadable: {problem}")]
    Corrupt {
        /// The organisation.
        org: String,
        /// What was wrong.
        problem: String,
    },
    /// A support grant outside 1..=[`MAX_GRANT_HOURS`] hours.
    #[error("a support grant must last 1 to {MAX_GRANT_HOURS} hours, not {0}")]
    GrantLength(u32),
}

fn db_error(e: impl std::fmt::Display) -> PolicyError {
    PolicyError::Database(e.to_string())
}

/// One organisation's decisions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrgPolicy {
    /// Whether its devices may capture packets (headers only).
    pub capture_consent: bool,
    /// When consent last changed, if ever.
    pub consent_changed_at_ms: Option<UnixMillis>,
    /// Until when support staff may read its data, if a grant was given.
    pub support_until_ms: Option<UnixMillis>,
    /// Metadata fields its devices must not collect.
    pub omit: Vec<MetadataField>,
    /// Whether MAC addresses are stored as keyed pseudonyms.
    pub pseudonymise_macs: bool,
}

impl OrgPolicy {
    /// Whether a support grant is active at `now_ms`.
    pub fn support_active(&self, now_ms: UnixMillis) -> bool {
        self.support_until_ms.is_some_and(|until| now_ms < until)
    }
}

/// A stored row. Field order is the postcard format: append only.
#[derive(Serialize, Deserialize)]
struct StoredPolicy {
    capture_consent: bool,
    consent_changed_at_ms: Option<i64>,
    support_until_ms: Option<i64>,
    omit: Vec<MetadataField>,
    pseudonymise_macs: bool,
}

fn decode(org: &str, row: &[u8]) -> Result<OrgPolicy, PolicyError> {
    let stored: StoredPolicy =
        postcard::from_bytes(row).map_err(|e| PolicyError::Corrupt { org: org.to_owned(), problem: e.to_string() })?;
    Ok(OrgPolicy {
        capture_consent: stored.capture_consent,
        consent_changed_at_ms: stored.consent_changed_at_ms,
        support_until_ms: stored.support_until_ms,
        omit: stored.omit,
        pseudonymise_macs: stored.pseudonymise_macs,
    })
}

fn encode(policy: &OrgPolicy) -> Result<Vec<u8>, PolicyError> {
    let stored = StoredPolicy {
        capture_consent: policy.capture_consent,
        consent_changed_at_ms: policy.consent_changed_at_ms,
        support_until_ms: policy.support_until_ms,
        omit: policy.omit.clone(),
        pseudonymise_macs: policy.pseudonymise_macs,
    };
    postcard::to_stdvec(&stored).map_err(db_error)
}

fn load_all(control: &dyn ControlStore) -> Result<HashMap<OrgId, OrgPolicy>, PolicyError> {
    let mut cache = HashMap::new();
    for (name, row) in control.policies().map_err(db_error)? {
        let org =
            OrgId::new(name.clone()).map_err(|e| PolicyError::Corrupt { org: name.clone(), problem: e.to_string() })?;
        cache.insert(org, decode(&name, &row)?);
    }
    Ok(cache)
}

/// The organisations' decisions.
#[derive(Debug)]
pub struct Policies {
    control: Arc<dyn ControlStore>,
    cache: RwLock<HashMap<OrgId, OrgPolicy>>,
}

impl Policies {
    /// Opens the table in `db` and loads every decision.
    pub fn open(control: Arc<dyn ControlStore>) -> Result<Policies, PolicyError> {
        let cache = load_all(&*control)?;
        Ok(Policies { control, cache: RwLock::new(cache) })
    }

    /// Reads `org`'s decisions again (another collector sharing the control
    /// plane changed them) and returns them.
    pub fn reload(&self, org: &OrgId) -> Result<OrgPolicy, PolicyError> {
        let row = self.control.policy(org.as_str()).map_err(db_error)?;
        let policy = row.map(|row| decode(org.as_str(), &row)).transpose()?.unwrap_or_default();
        let mut cache = self.cache.write().unwrap_or_else(PoisonError::into_inner);
        cache.insert(org.clone(), policy.clone());
        Ok(policy)
    }

    /// Reads every decision again (changes may have been missed).
    pub fn reload_all(&self) -> Result<(), PolicyError> {
        let fresh = load_all(&*self.control)?;
        *self.cache.write().unwrap_or_else(PoisonError::into_inner) = fresh;
        Ok(())
    }

    /// The organisation's decisions (the private defaults if it made none).
    pub fn get(&self, org: &OrgId) -> OrgPolicy {
        self.cache.read().unwrap_or_else(PoisonError::into_inner).get(org).cloned().unwrap_or_default()
    }

    /// Whether the organisation allows packet capture.
    pub fn capture_consent(&self, org: &OrgId) -> bool {
        self.get(org).capture_consent
    }

    /// Every organisation that made a decision, sorted.
    pub fn all(&self) -> Vec<(OrgId, OrgPolicy)> {
        let cache = self.cache.read().unwrap_or_else(PoisonError::into_inner);
        let mut all: Vec<_> = cache.iter().map(|(o, p)| (o.clone(), p.clone())).collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Changes `org`'s row in one read-modify-write of the control store
    /// (another collector may have changed another decision since this
    /// one cached it) and then the cache, under the cache's write lock so
    /// that concurrent changes here cannot interleave.
    ///
    /// `change` returns whether it changed anything; the row is written
    /// only then. Returns the policy now in force and whether it changed.
    fn update(&self, org: &OrgId, change: impl Fn(&mut OrgPolicy) -> bool) -> Result<(OrgPolicy, bool), PolicyError> {
        let mut cache = self.cache.write().unwrap_or_else(PoisonError::into_inner);
        let mut problem = None;
        let mut changed = false;
        let stored = self
            .control
            .update_policy(org.as_str(), &mut |row| {
                let mut policy = match row.map(|row| decode(org.as_str(), row)).transpose() {
                    Ok(policy) => policy.unwrap_or_default(),
                    Err(e) => {
                        problem = Some(e);
                        return None;
                    }
                };
                changed = change(&mut policy);
                if !changed {
                    return None;
                }
                match encode(&policy) {
                    Ok(bytes) => Some(bytes),
                    Err(e) => {
                        problem = Some(e);
                        None
                    }
                }
            })
            .map_err(db_error)?;
        if let Some(e) = problem {
            return Err(e);
        }
        let policy = stored.map(|row| decode(org.as_str(), &row)).transpose()?.unwrap_or_default();
        cache.insert(org.clone(), policy.clone());
        Ok((policy, changed))
    }

    /// Sets capture consent; returns whether it changed.
    pub fn set_consent(&self, org: &OrgId, capture: bool, now_ms: UnixMillis) -> Result<bool, PolicyError> {
        let (_, changed) = self.update(org, |p| {
            if p.capture_consent == capture {
                return false;
            }
            p.capture_consent = capture;
            p.consent_changed_at_ms = Some(now_ms);
            true
        })?;
        Ok(changed)
    }

    /// Grants support staff read access for `hours` from `now_ms`, replacing
    /// any earlier grant. Returns when it ends.
    pub fn grant_support(&self, org: &OrgId, hours: u32, now_ms: UnixMillis) -> Result<UnixMillis, PolicyError> {
        if !(1..=MAX_GRANT_HOURS).contains(&hours) {
            return Err(PolicyError::GrantLength(hours));
        }
        let until = now_ms.saturating_add(i64::from(hours) * 3_600_000);
        self.update(org, |p| {
            p.support_until_ms = Some(until);
            true
        })?;
        Ok(until)
    }

    /// Ends the support grant now; returns whether one was active.
    pub fn revoke_support(&self, org: &OrgId, now_ms: UnixMillis) -> Result<bool, PolicyError> {
        let was_active = std::cell::Cell::new(false);
        self.update(org, |p| {
            was_active.set(p.support_active(now_ms));
            p.support_until_ms.take().is_some()
        })?;
        Ok(was_active.get())
    }

    /// Sets which metadata fields `org`'s devices leave out, and whether
    /// MACs are stored pseudonymised. Returns the policy now in force.
    pub fn set_data_policy(
        &self,
        org: &OrgId,
        omit: &[MetadataField],
        pseudonymise_macs: bool,
    ) -> Result<OrgPolicy, PolicyError> {
        let mut omit = omit.to_vec();
        omit.sort();
        omit.dedup();
        let (policy, _) = self.update(org, |p| {
            let changed = p.omit != omit || p.pseudonymise_macs != pseudonymise_macs;
            p.omit.clone_from(&omit);
            p.pseudonymise_macs = pseudonymise_macs;
            changed
        })?;
        Ok(policy)
    }

    /// Records `policy` (a description of the retention policy in force) as
    /// audited; returns whether it differs from the one recorded before, so
    /// the caller audits a change exactly once.
    pub fn retention_changed(&self, policy: &str) -> Result<bool, PolicyError> {
        let before = self.control.replace_state(RETENTION_AUDITED, policy).map_err(db_error)?;
        let changed = before.as_deref() != Some(policy);
        Ok(changed)
    }

    /// Whether support staff may read `org`'s data at `now_ms`.
    pub fn support_active(&self, org: &OrgId, now_ms: UnixMillis) -> bool {
        self.get(org).support_active(now_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &std::path::Path) -> Policies {
        let db = redb::Database::create(dir.join("p.redb")).unwrap();
        Policies::open(Arc::new(RedbControl::open(Arc::new(db)).unwrap())).unwrap()
    }

    #[test]
    fn private_defaults_changes_and_restart() {
        let dir = tempfile::tempdir().unwrap();
        let acme = OrgId::new("acme").unwrap();
        let other = OrgId::new("other").unwrap();
        {
            let p = open(dir.path());
            assert_eq!(p.get(&acme), OrgPolicy::default());
            assert!(!p.capture_consent(&acme) && !p.support_active(&acme, 0));
            assert!(p.set_consent(&acme, true, 1_000).unwrap());
            assert!(!p.set_consent(&acme, true, 2_000).unwrap(), "no change");
            assert_eq!(p.grant_support(&acme, 2, 10_000).unwrap(), 10_000 + 2 * 3_600_000);
        }
        let p = open(dir.path());
        let acme_policy = p.get(&acme);
        assert!(acme_policy.capture_consent);
        assert_eq!(acme_policy.consent_changed_at_ms, Some(1_000));
        assert!(!p.capture_consent(&other), "another organisation is untouched");
        // The grant is active strictly before its end, and only for acme.
        assert!(p.support_active(&acme, 10_000));
        assert!(p.support_active(&acme, 10_000 + 2 * 3_600_000 - 1));
        assert!(!p.support_active(&acme, 10_000 + 2 * 3_600_000));
        assert!(!p.support_active(&other, 10_000));
        assert!(p.revoke_support(&acme, 20_000).unwrap());
        assert!(!p.support_active(&acme, 20_000));
        assert!(!p.revoke_support(&acme, 20_000).unwrap());
        assert!(matches!(p.grant_support(&acme, 0, 0), Err(PolicyError::GrantLength(0))));
        assert!(matches!(p.grant_support(&acme, MAX_GRANT_HOURS + 1, 0), Err(PolicyError::GrantLength(_))));
        assert_eq!(p.all().len(), 1);
        let set =
            p.set_data_policy(&acme, &[MetadataField::Hostname, MetadataField::Os, MetadataField::Hostname], true);
        assert_eq!(set.unwrap().omit, [MetadataField::Hostname, MetadataField::Os]);
        assert!(p.get(&acme).capture_consent, "other decisions stay");
    }

    #[test]
    fn a_retention_change_is_reported_once_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        assert!(open(dir.path()).retention_changed("capture 7, metadata 60").unwrap());
        let p = open(dir.path());
        assert!(!p.retention_changed("capture 7, metadata 60").unwrap(), "same policy after a restart");
        assert!(p.retention_changed("capture 3, metadata 60").unwrap());
        assert!(!p.retention_changed("capture 3, metadata 60").unwrap());
    }

    #[test]
    fn a_corrupt_row_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(redb::Database::create(dir.path().join("p.redb")).unwrap());
        let control = Arc::new(RedbControl::open(db).unwrap());
        control.put_policy("acme", &[0xff_u8, 0xff, 0xff]).unwrap();
        let err = Policies::open(control).unwrap_err().to_string();
        assert!(err.contains("organisation acme is unreadable"), "{err}");
    }
}
