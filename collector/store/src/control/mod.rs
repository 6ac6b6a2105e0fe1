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

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, PoisonError, RwLock};

use glimpse_common::clock::UnixMillis;
use glimpse_common::identity::OrgId;
use glimpse_common::identity::{DeviceId, SiteId};
use glimpse_common::minimise::MetadataField;
use glimpse_common::record::subject::{BlockedSubjects, Subject};
use glimpse_common::record::DataKind;
use glimpse_common::wire::admin::{GrantKind, GrantScope};
use serde::{Deserialize, Serialize};

pub mod admins;
pub mod backup;
pub mod redb_store;
pub mod sealed;
pub mod seam;

pub use admins::{AdminError, AdminImport, AdminRecord, Admins};
pub use redb_store::RedbControl;
pub use seam::{ControlError, ControlStore, RowRewrite, RowTable, SegmentRow, SegmentRowKey, StreamRange};

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
    /// The organisation's block list is full.
    #[error(transparent)]
    BlockListFull(#[from] glimpse_common::record::subject::BlockListFull),
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
    /// What the grant lets support staff (and operators) see; a grant
    /// stored before grants had a scope has the default, what grants meant
    /// then (see [`GrantScope::default`]).
    pub support_scope: GrantScope,
    /// When the grant was given, which names it in the audit log; `None`
    /// for a grant stored before this was kept.
    pub support_granted_at_ms: Option<UnixMillis>,
    /// Metadata fields its devices must not collect.
    pub omit: Vec<MetadataField>,
    /// Whether MAC addresses are stored as keyed pseudonyms.
    pub pseudonymise_macs: bool,
    /// Whether every collection's stations are kept with the radio and
    /// access point that served them, which is a location history of every
    /// person carrying a device. Off by default: then only each station's
    /// latest place is kept (see OPERATIONS.md, "Location history").
    pub location_history: bool,
    /// How many days the organisation chose to keep each kind of data,
    /// where it chose (within what the operator offers: see
    /// `RetentionPolicy::effective_days`); kinds it did not choose keep
    /// what the operator configured.
    pub retention_days: BTreeMap<DataKind, u32>,
    /// Whether captured headers are scrubbed strictly: every byte of them
    /// that is not structure or a well-known option (unknown option data,
    /// AH's ICV, radiotap vendor data, IDs, reserved bits) is zeroed, on the
    /// device and again on arrival (see CAPTURE.md, "Strict header
    /// scrubbing"). Off by default.
    pub strict_headers: bool,
    /// The data subjects whose data is not processed: dropped on arrival,
    /// not collected by devices that know the list, left out of exports
    /// (see OPERATIONS.md, "Blocking a data subject"). Empty by default.
    pub blocked: BlockedSubjects,
    /// Whether its gateways report WAN destinations: sessions per client
    /// and destination address, protocol and port, with site names from
    /// the gateway's DNS resolver (see OPERATIONS.md, "WAN destinations").
    /// Off by default: devices are told not to collect them and such
    /// records are dropped on arrival.
    pub wan_destinations: bool,
    /// Decisions this collector's version does not know, kept as stored so
    /// that a newer collector's choices survive this one's read-modify-write
    /// (several collectors of different versions share one control plane
    /// during a rolling upgrade).
    unknown: Vec<(u16, Vec<u8>)>,
}

impl OrgPolicy {
    /// Whether a support grant is active at `now_ms`.
    pub fn support_active(&self, now_ms: UnixMillis) -> bool {
        self.support_until_ms.is_some_and(|until| now_ms < until)
    }
}

/// The first part of a stored row, as the first version wrote it. Field
/// order is the postcard format: never change it.
#[derive(Serialize, Deserialize)]
struct StoredPolicy {
    capture_consent: bool,
    consent_changed_at_ms: Option<i64>,
    support_until_ms: Option<i64>,
    omit: Vec<MetadataField>,
    pseudonymise_macs: bool,
}

/// Every decision added after the first version follows the first part as
/// one postcard list of `(tag, value)` pairs, each value its own postcard
/// encoding. Postcard is not self-describing, so fields appended to
/// [`StoredPolicy`] would make older rows unreadable; tagged values let a
/// row written before a decision existed decode with that decision's
/// default, and one written by a newer collector keep the decisions this
/// one does not know (see [`OrgPolicy::unknown`]). A tag is never reused.
mod tag {
    /// [`super::OrgPolicy::location_history`]: `bool`.
    pub(super) const LOCATION_HISTORY: u16 = 1;
    /// [`super::OrgPolicy::retention_days`]: `Vec<(String, u32)>`, the
    /// kind by name, so that a kind this version does not know is skipped
    /// rather than making the row unreadable.
    pub(super) const RETENTION_DAYS: u16 = 2;
    /// [`super::OrgPolicy::strict_headers`]: `bool`.
    pub(super) const STRICT_HEADERS: u16 = 3;
    /// [`super::OrgPolicy::blocked`]: `BlockedSubjects` (a list of at most
    /// `MAX_BLOCKED_SUBJECTS`).
    pub(super) const BLOCKED_SUBJECTS: u16 = 4;
    /// The support grant's scope and start: [`super::StoredGrant`].
    pub(super) const SUPPORT_GRANT: u16 = 5;
    /// [`super::OrgPolicy::wan_destinations`]: `bool`.
    pub(super) const WAN_DESTINATIONS: u16 = 6;
    /// The sites the support grant is limited to: [`super::StoredGrantSites`],
    /// written only for a grant limited to sites. Apart from tag 5 so that
    /// a grant's row without sites is what it was before sites existed.
    pub(super) const SUPPORT_GRANT_SITES: u16 = 7;
}

/// The sites a support grant is limited to, with the end of the grant
/// they belong to (as [`StoredGrant`]): a collector that predates sites
/// keeps this value as it is when it gives a new grant, whose end then no
/// longer matches, so the old grant's sites do not carry over.
#[derive(Serialize, Deserialize)]
struct StoredGrantSites {
    until_ms: i64,
    sites: Vec<String>,
}

/// A support grant's scope as stored, with the end of the grant it
/// belongs to: a collector that predates scopes keeps this value as it is
/// when it gives a new grant, and the end then no longer matches, which
/// makes the new grant one of the default scope rather than the old one's.
/// Kinds are stored by name, so that one this version does not know (a
/// newer collector's) is skipped: never more access than it understands.
#[derive(Serialize, Deserialize)]
struct StoredGrant {
    until_ms: i64,
    granted_at_ms: i64,
    kinds: Vec<String>,
    devices: Vec<String>,
}

/// Most tagged values in one row: far more than there are decisions, and
/// a bound on what a damaged row can make us allocate.
const MAX_EXTENSIONS: usize = 64;

/// One tagged value as stored.
#[derive(Serialize, Deserialize)]
struct Extension<'a> {
    tag: u16,
    #[serde(borrow)]
    value: &'a [u8],
}

fn corrupt(org: &str, problem: impl std::fmt::Display) -> PolicyError {
    PolicyError::Corrupt { org: org.to_owned(), problem: problem.to_string() }
}

/// Decodes one tagged value of `org`'s row.
fn extension<'de, T: Deserialize<'de>>(org: &str, tag: u16, value: &'de [u8]) -> Result<T, PolicyError> {
    postcard::from_bytes(value).map_err(|e| corrupt(org, format_args!("decision {tag}: {e}")))
}

fn decode(org: &str, row: &[u8]) -> Result<OrgPolicy, PolicyError> {
    let (stored, rest): (StoredPolicy, &[u8]) = postcard::take_from_bytes(row).map_err(|e| corrupt(org, e))?;
    let mut policy = OrgPolicy {
        capture_consent: stored.capture_consent,
        consent_changed_at_ms: stored.consent_changed_at_ms,
        support_until_ms: stored.support_until_ms,
        omit: stored.omit,
        pseudonymise_macs: stored.pseudonymise_macs,
        location_history: false,
        retention_days: BTreeMap::new(),
        strict_headers: false,
        support_scope: GrantScope::default(),
        support_granted_at_ms: None,
        blocked: BlockedSubjects::default(),
        wan_destinations: false,
        unknown: Vec::new(),
    };
    if rest.is_empty() {
        return Ok(policy);
    }
    let extensions: Vec<Extension<'_>> = postcard::from_bytes(rest).map_err(|e| corrupt(org, e))?;
    if extensions.len() > MAX_EXTENSIONS {
        return Err(corrupt(org, format_args!("{} tagged decisions, at most {MAX_EXTENSIONS}", extensions.len())));
    }
    let mut grant_sites = None;
    for Extension { tag, value } in extensions {
        match tag {
            tag::LOCATION_HISTORY => policy.location_history = extension(org, tag, value)?,
            tag::RETENTION_DAYS => policy.retention_days = retention_days(org, extension(org, tag, value)?)?,
            tag::STRICT_HEADERS => policy.strict_headers = extension(org, tag, value)?,
            tag::SUPPORT_GRANT => {
                let grant: StoredGrant = extension(org, tag, value)?;
                if policy.support_until_ms == Some(grant.until_ms) {
                    policy.support_scope = stored_scope(org, grant.kinds, grant.devices)?;
                    policy.support_granted_at_ms = Some(grant.granted_at_ms);
                }
            }
            tag::BLOCKED_SUBJECTS => {
                policy.blocked = extension::<BlockedSubjects>(org, tag, value)?.deduplicated();
            }
            tag::WAN_DESTINATIONS => policy.wan_destinations = extension(org, tag, value)?,
            tag::SUPPORT_GRANT_SITES => grant_sites = Some(extension::<StoredGrantSites>(org, tag, value)?),
            _ => policy.unknown.push((tag, value.to_vec())),
        }
    }
    // After the loop: the scope the sites narrow is tag 5's.
    if let Some(stored) = grant_sites {
        if policy.support_granted_at_ms.is_some() && policy.support_until_ms == Some(stored.until_ms) {
            if stored.sites.len() > glimpse_common::wire::admin::MAX_GRANT_SITES {
                return Err(corrupt(org, format_args!("support grant: {} sites", stored.sites.len())));
            }
            let sites = stored
                .sites
                .into_iter()
                .map(SiteId::new)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| corrupt(org, format_args!("support grant: {e}")))?;
            policy.support_scope = policy.support_scope.clone().at_sites(sites).map_err(|e| corrupt(org, e))?;
        }
    }
    Ok(policy)
}

/// A grant's scope as stored, checked like one given through the API.
fn stored_scope(org: &str, kinds: Vec<String>, devices: Vec<String>) -> Result<GrantScope, PolicyError> {
    if kinds.len() > MAX_EXTENSIONS {
        return Err(corrupt(org, format_args!("{} grant kinds", kinds.len())));
    }
    let kinds = kinds.iter().filter_map(|k| GrantKind::parse(k));
    let devices = devices
        .into_iter()
        .take(glimpse_common::wire::admin::MAX_GRANT_DEVICES + 1)
        .map(DeviceId::new)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| corrupt(org, format_args!("support grant: {e}")))?;
    GrantScope::new(kinds, devices).map_err(|e| corrupt(org, e))
}

/// The retention choice as stored, checked: each day count within what
/// any organisation may ever keep, kinds this version does not know
/// skipped (a newer collector's; they have no data here).
fn retention_days(org: &str, stored: Vec<(String, u32)>) -> Result<BTreeMap<DataKind, u32>, PolicyError> {
    if stored.len() > MAX_EXTENSIONS {
        return Err(corrupt(org, format_args!("{} retention choices", stored.len())));
    }
    let mut days = BTreeMap::new();
    for (kind, n) in stored {
        let Ok(kind) = kind.parse::<DataKind>() else { continue };
        let (min, max) = crate::retention_policy::bounds(kind, true);
        if !(min..=max).contains(&n) {
            return Err(corrupt(org, format_args!("{kind} retention of {n} days is outside {min}..={max}")));
        }
        days.insert(kind, n);
    }
    Ok(days)
}

/// One tagged value's encoding.
fn value(value: &impl Serialize) -> Result<Vec<u8>, PolicyError> {
    postcard::to_stdvec(value).map_err(db_error)
}

fn encode(policy: &OrgPolicy) -> Result<Vec<u8>, PolicyError> {
    let stored = StoredPolicy {
        capture_consent: policy.capture_consent,
        consent_changed_at_ms: policy.consent_changed_at_ms,
        support_until_ms: policy.support_until_ms,
        omit: policy.omit.clone(),
        pseudonymise_macs: policy.pseudonymise_macs,
    };
    let mut row = postcard::to_stdvec(&stored).map_err(db_error)?;
    // Known decisions are written only when they differ from their
    // default, so an organisation that changed nothing keeps the first
    // version's row.
    let mut values: Vec<(u16, Vec<u8>)> = Vec::new();
    if policy.location_history {
        values.push((tag::LOCATION_HISTORY, value(&policy.location_history)?));
    }
    if !policy.retention_days.is_empty() {
        let days: Vec<(&str, u32)> = policy.retention_days.iter().map(|(kind, days)| (kind.as_str(), *days)).collect();
        values.push((tag::RETENTION_DAYS, value(&days)?));
    }
    if policy.strict_headers {
        values.push((tag::STRICT_HEADERS, value(&policy.strict_headers)?));
    }
    if let (Some(until_ms), Some(granted_at_ms)) = (policy.support_until_ms, policy.support_granted_at_ms) {
        let grant = StoredGrant {
            until_ms,
            granted_at_ms,
            kinds: policy.support_scope.kinds().iter().map(|k| k.as_str().to_owned()).collect(),
            devices: policy.support_scope.devices().iter().map(|d| d.as_str().to_owned()).collect(),
        };
        values.push((tag::SUPPORT_GRANT, value(&grant)?));
        if !policy.support_scope.sites().is_empty() {
            let sites = StoredGrantSites {
                until_ms,
                sites: policy.support_scope.sites().iter().map(|s| s.as_str().to_owned()).collect(),
            };
            values.push((tag::SUPPORT_GRANT_SITES, value(&sites)?));
        }
    }
    if !policy.blocked.is_empty() {
        values.push((tag::BLOCKED_SUBJECTS, value(&policy.blocked)?));
    }
    if policy.wan_destinations {
        values.push((tag::WAN_DESTINATIONS, value(&policy.wan_destinations)?));
    }
    values.extend(policy.unknown.iter().cloned());
    values.sort_by_key(|(tag, _)| *tag);
    if !values.is_empty() {
        let extensions: Vec<Extension<'_>> = values.iter().map(|(tag, value)| Extension { tag: *tag, value }).collect();
        row.extend(postcard::to_stdvec(&extensions).map_err(db_error)?);
    }
    Ok(row)
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

/// What an organisation that has not decided gets, chosen by the operator
/// (`[privacy]` in the collector's configuration). An organisation's first
/// decision of any kind stores these with it, so a later change of the
/// defaults applies to organisations new from then on, never to one that
/// has decided something.
///
/// ```toml
/// [privacy]
/// pseudonymise_macs = true   # the default: MACs stored as keyed pseudonyms
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivacyDefaults {
    /// Store MAC addresses as keyed pseudonyms: the service needs a stable
    /// identifier per device (counting, correlating, subject requests by
    /// MAC still work through the pseudonym), not the vendor's address.
    #[serde(default = "yes")]
    pub pseudonymise_macs: bool,
}

fn yes() -> bool {
    true
}

impl Default for PrivacyDefaults {
    fn default() -> Self {
        PrivacyDefaults { pseudonymise_macs: true }
    }
}

impl PrivacyDefaults {
    /// The decisions of an organisation that made none.
    pub fn policy(&self) -> OrgPolicy {
        OrgPolicy { pseudonymise_macs: self.pseudonymise_macs, ..OrgPolicy::default() }
    }
}

/// The organisations' decisions.
#[derive(Debug)]
pub struct Policies {
    control: Arc<dyn ControlStore>,
    cache: RwLock<HashMap<OrgId, OrgPolicy>>,
    undecided: RwLock<OrgPolicy>,
}

impl Policies {
    /// Opens the table in `db` and loads every decision.
    pub fn open(control: Arc<dyn ControlStore>) -> Result<Policies, PolicyError> {
        let cache = load_all(&*control)?;
        let undecided = RwLock::new(PrivacyDefaults::default().policy());
        Ok(Policies { control, cache: RwLock::new(cache), undecided })
    }

    /// Sets what organisations that have decided nothing get (at start and
    /// on reload, from the configuration).
    pub fn set_defaults(&self, defaults: &PrivacyDefaults) {
        *self.undecided.write().unwrap_or_else(PoisonError::into_inner) = defaults.policy();
    }

    fn undecided(&self) -> OrgPolicy {
        self.undecided.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Reads `org`'s decisions again (another collector sharing the control
    /// plane changed them) and returns them.
    pub fn reload(&self, org: &OrgId) -> Result<OrgPolicy, PolicyError> {
        let row = self.control.policy(org.as_str()).map_err(db_error)?;
        let Some(row) = row else {
            self.cache.write().unwrap_or_else(PoisonError::into_inner).remove(org);
            return Ok(self.undecided());
        };
        let policy = decode(org.as_str(), &row)?;
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
        let decided = self.cache.read().unwrap_or_else(PoisonError::into_inner).get(org).cloned();
        decided.unwrap_or_else(|| self.undecided())
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
        let undecided = self.undecided();
        let mut problem = None;
        let mut changed = false;
        let stored = self
            .control
            .update_policy(org.as_str(), &mut |row| {
                let mut policy = match row.map(|row| decode(org.as_str(), row)).transpose() {
                    Ok(policy) => policy.unwrap_or_else(|| undecided.clone()),
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
        let Some(row) = stored else {
            cache.remove(org);
            return Ok((undecided, changed));
        };
        let policy = decode(org.as_str(), &row)?;
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

    /// Grants support staff access to what `scope` names for `hours` from
    /// `now_ms`, replacing any earlier grant. Returns when it ends.
    pub fn grant_support(
        &self,
        org: &OrgId,
        hours: u32,
        scope: &GrantScope,
        now_ms: UnixMillis,
    ) -> Result<UnixMillis, PolicyError> {
        if !(1..=MAX_GRANT_HOURS).contains(&hours) {
            return Err(PolicyError::GrantLength(hours));
        }
        let until = now_ms.saturating_add(i64::from(hours) * 3_600_000);
        self.update(org, |p| {
            p.support_until_ms = Some(until);
            p.support_scope = scope.clone();
            p.support_granted_at_ms = Some(now_ms);
            true
        })?;
        Ok(until)
    }

    /// Ends the support grant now; returns whether one was active.
    pub fn revoke_support(&self, org: &OrgId, now_ms: UnixMillis) -> Result<bool, PolicyError> {
        let was_active = std::cell::Cell::new(false);
        self.update(org, |p| {
            was_active.set(p.support_active(now_ms));
            p.support_scope = GrantScope::default();
            p.support_granted_at_ms = None;
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

    /// Sets whether `org` keeps the history of where its stations were
    /// (see [`OrgPolicy::location_history`]); returns whether it changed.
    pub fn set_location_history(&self, org: &OrgId, keep: bool) -> Result<bool, PolicyError> {
        let (_, changed) = self.update(org, |p| {
            let changed = p.location_history != keep;
            p.location_history = keep;
            changed
        })?;
        Ok(changed)
    }

    /// Replaces `org`'s own retention choice (kinds left out keep what the
    /// operator configured). The caller checks the days against what the
    /// operator offers. Returns the choice before and whether it changed.
    pub fn set_retention(
        &self,
        org: &OrgId,
        days: &BTreeMap<DataKind, u32>,
    ) -> Result<(BTreeMap<DataKind, u32>, bool), PolicyError> {
        let before = std::cell::RefCell::new(BTreeMap::new());
        let (_, changed) = self.update(org, |p| {
            *before.borrow_mut() = p.retention_days.clone();
            let changed = p.retention_days != *days;
            p.retention_days.clone_from(days);
            changed
        })?;
        Ok((before.into_inner(), changed))
    }

    /// Sets whether `org`'s captured headers are scrubbed strictly (see
    /// [`OrgPolicy::strict_headers`]); returns whether it changed.
    pub fn set_strict_headers(&self, org: &OrgId, strict: bool) -> Result<bool, PolicyError> {
        let (_, changed) = self.update(org, |p| {
            let changed = p.strict_headers != strict;
            p.strict_headers = strict;
            changed
        })?;
        Ok(changed)
    }

    /// Blocks (`block`) or unblocks `subject` in `org`; returns whether it
    /// changed and the list now in force. A full list refuses one more.
    pub fn set_blocked(
        &self,
        org: &OrgId,
        subject: &Subject,
        block: bool,
    ) -> Result<(bool, BlockedSubjects), PolicyError> {
        let full = std::cell::Cell::new(None);
        let (policy, changed) = self.update(org, |p| {
            if !block {
                return p.blocked.remove(subject);
            }
            match p.blocked.insert(subject.clone()) {
                Ok(added) => added,
                Err(e) => {
                    full.set(Some(e));
                    false
                }
            }
        })?;
        if let Some(e) = full.take() {
            return Err(e.into());
        }
        Ok((changed, policy.blocked))
    }

    /// Sets whether `org`'s gateways report WAN destinations (see
    /// [`OrgPolicy::wan_destinations`]); returns whether it changed.
    pub fn set_wan_destinations(&self, org: &OrgId, on: bool) -> Result<bool, PolicyError> {
        let (_, changed) = self.update(org, |p| {
            let changed = p.wan_destinations != on;
            p.wan_destinations = on;
            changed
        })?;
        Ok(changed)
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

    fn first_version_row() -> Vec<u8> {
        let stored = StoredPolicy {
            capture_consent: true,
            consent_changed_at_ms: Some(5),
            support_until_ms: None,
            omit: vec![MetadataField::Hostname],
            pseudonymise_macs: true,
        };
        postcard::to_stdvec(&stored).unwrap()
    }

    #[test]
    fn rows_of_the_first_version_decode_with_the_defaults_of_later_decisions() {
        let policy = decode("acme", &first_version_row()).unwrap();
        assert!(policy.capture_consent && policy.pseudonymise_macs && !policy.location_history);
        assert!(!policy.strict_headers);
        assert_eq!(encode(&policy).unwrap(), first_version_row(), "nothing changed: the same bytes");
    }

    #[test]
    fn tagged_decisions_round_trip_and_unknown_ones_are_kept() {
        let mut row = first_version_row();
        let later = [Extension { tag: 1, value: &[1] }, Extension { tag: 999, value: b"from a newer collector" }];
        row.extend(postcard::to_stdvec(&later[..]).unwrap());
        let mut policy = decode("acme", &row).unwrap();
        assert!(policy.location_history);
        policy.retention_days = BTreeMap::from([(DataKind::Metadata, 365), (DataKind::Capture, 3)]);
        let mut row = encode(&policy).unwrap();
        assert_eq!(decode("acme", &row).unwrap(), policy);
        // A kind from a newer collector is skipped; days out of any
        // bound are damage.
        let later: Vec<(&str, u32)> = vec![("metadata", 90), ("flows", 30)];
        let mut tail = first_version_row();
        tail.extend(
            postcard::to_stdvec(&[Extension { tag: 2, value: &postcard::to_stdvec(&later).unwrap() }][..]).unwrap(),
        );
        assert_eq!(decode("acme", &tail).unwrap().retention_days, BTreeMap::from([(DataKind::Metadata, 90)]));
        let wrong: Vec<(&str, u32)> = vec![("capture", 30)];
        row = first_version_row();
        row.extend(
            postcard::to_stdvec(&[Extension { tag: 2, value: &postcard::to_stdvec(&wrong).unwrap() }][..]).unwrap(),
        );
        assert!(decode("acme", &row).unwrap_err().to_string().contains("capture retention of 30 days"));
        policy.retention_days.clear();
        assert_eq!(policy.unknown, [(999, b"from a newer collector".to_vec())]);
        assert_eq!(decode("acme", &encode(&policy).unwrap()).unwrap(), policy);
        policy.location_history = false;
        let again = decode("acme", &encode(&policy).unwrap()).unwrap();
        assert!(!again.location_history);
        assert_eq!(again.unknown.len(), 1, "another version's decision survives this one's change");
    }

    #[test]
    fn strict_headers_is_tag_3_written_only_when_on() {
        let mut row = first_version_row();
        row.extend(postcard::to_stdvec(&[Extension { tag: 3, value: &[1] }][..]).unwrap());
        let mut policy = decode("acme", &row).unwrap();
        assert!(policy.strict_headers && !policy.location_history);
        assert_eq!(encode(&policy).unwrap(), row, "the same bytes back");
        policy.strict_headers = false;
        assert_eq!(encode(&policy).unwrap(), first_version_row(), "off is the default: not written");
        let mut row = first_version_row();
        row.extend(postcard::to_stdvec(&[Extension { tag: 3, value: &[2] }][..]).unwrap());
        let e = decode("acme", &row).unwrap_err().to_string();
        assert!(e.contains("decision 3"), "{e}");
    }

    #[test]
    fn wan_destinations_are_tag_6_off_by_default_and_persist() {
        assert!(!decode("acme", &first_version_row()).unwrap().wan_destinations, "off for every stored row");
        let mut row = first_version_row();
        row.extend(postcard::to_stdvec(&[Extension { tag: 6, value: &[1] }][..]).unwrap());
        let mut policy = decode("acme", &row).unwrap();
        assert!(policy.wan_destinations && !policy.strict_headers);
        assert_eq!(encode(&policy).unwrap(), row, "the same bytes back");
        policy.wan_destinations = false;
        assert_eq!(encode(&policy).unwrap(), first_version_row(), "off is the default: not written");

        let dir = tempfile::tempdir().unwrap();
        let acme = OrgId::new("acme").unwrap();
        {
            let p = open(dir.path());
            assert!(!p.get(&acme).wan_destinations);
            assert!(p.set_strict_headers(&acme, true).unwrap());
            assert!(p.set_wan_destinations(&acme, true).unwrap());
            assert!(!p.set_wan_destinations(&acme, true).unwrap(), "no change");
        }
        let p = open(dir.path());
        let policy = p.get(&acme);
        assert!(policy.wan_destinations && policy.strict_headers);
        assert!(p.set_wan_destinations(&acme, false).unwrap());
        assert!(!p.get(&acme).wan_destinations);
    }

    #[test]
    fn strict_headers_setter_persists_and_keeps_other_decisions() {
        let dir = tempfile::tempdir().unwrap();
        let acme = OrgId::new("acme").unwrap();
        {
            let p = open(dir.path());
            p.set_data_policy(&acme, &[MetadataField::Hostname], true).unwrap();
            assert!(p.set_location_history(&acme, true).unwrap());
            assert!(p.set_strict_headers(&acme, true).unwrap());
            assert!(!p.set_strict_headers(&acme, true).unwrap(), "no change");
            assert!(p.get(&acme).strict_headers);
        }
        {
            let p = open(dir.path());
            let policy = p.get(&acme);
            assert!(policy.strict_headers && policy.location_history && policy.pseudonymise_macs);
            assert_eq!(policy.omit, [MetadataField::Hostname]);
            assert!(p.set_strict_headers(&acme, false).unwrap());
            assert!(!p.get(&OrgId::new("other").unwrap()).strict_headers, "off by default");
        }
        assert!(!open(dir.path()).get(&acme).strict_headers);
    }

    #[test]
    fn blocked_subjects_are_tag_4_kept_across_restarts_and_bounded() {
        use glimpse_common::bounded::BoundedString;
        let dir = tempfile::tempdir().unwrap();
        let acme = OrgId::new("acme").unwrap();
        let bob = Subject::Username(BoundedString::truncating("bob"));
        let mac = Subject::Mac(glimpse_common::record::MacAddr([2, 0, 0, 0, 0, 0xb0]));
        {
            let p = open(dir.path());
            assert!(p.set_strict_headers(&acme, true).unwrap());
            let (changed, list) = p.set_blocked(&acme, &bob, true).unwrap();
            assert!(changed && list.as_slice() == [bob.clone()]);
            assert!(!p.set_blocked(&acme, &bob, true).unwrap().0, "already blocked");
            assert!(p.set_blocked(&acme, &mac, true).unwrap().0);
            assert!(!p.set_blocked(&acme, &Subject::Ip("192.0.2.1".parse().unwrap()), false).unwrap().0);
        }
        let p = open(dir.path());
        let policy = p.get(&acme);
        assert_eq!(policy.blocked.as_slice(), [bob.clone(), mac.clone()]);
        assert!(policy.strict_headers, "other decisions stay");
        assert!(p.set_blocked(&acme, &bob, false).unwrap().0);
        assert!(p.set_blocked(&acme, &mac, false).unwrap().0);
        assert!(p.get(&acme).blocked.is_empty());
        // Nobody blocked: not written at all.
        let row = encode(&p.get(&acme)).unwrap();
        assert!(decode("acme", &row).unwrap().blocked.is_empty());
        let mut first = decode("acme", &first_version_row()).unwrap();
        first.blocked.insert(bob.clone()).unwrap();
        let row = encode(&first).unwrap();
        assert_eq!(decode("acme", &row).unwrap(), first);
        // A full list refuses one more.
        for i in 0..glimpse_common::record::subject::MAX_BLOCKED_SUBJECTS {
            let ip = std::net::Ipv6Addr::from(i as u128 + 1);
            assert!(p.set_blocked(&acme, &Subject::Ip(ip.into()), true).unwrap().0);
        }
        assert!(matches!(p.set_blocked(&acme, &bob, true), Err(PolicyError::BlockListFull(_))));
    }

    #[test]
    fn damaged_rows_are_errors_naming_the_organisation() {
        let mut row = first_version_row();
        row.extend(postcard::to_stdvec(&[Extension { tag: 1, value: &[7] }][..]).unwrap());
        let e = decode("acme", &row).unwrap_err().to_string();
        assert!(e.contains("acme") && e.contains("decision 1"), "{e}");
        let many: Vec<Extension<'_>> =
            (0..=MAX_EXTENSIONS as u16).map(|tag| Extension { tag: 100 + tag, value: &[] }).collect();
        let mut row = first_version_row();
        row.extend(postcard::to_stdvec(&many).unwrap());
        assert!(decode("acme", &row).is_err());
        for cut in 0..first_version_row().len() {
            assert!(decode("acme", &first_version_row()[..cut]).is_err());
        }
        let mut row = first_version_row();
        row.push(0xff);
        assert!(decode("acme", &row).is_err(), "trailing garbage");
    }

    #[test]
    fn decoding_never_panics() {
        proptest::proptest!(|(row in proptest::collection::vec(proptest::num::u8::ANY, 0..200))| {
            let _ = decode("acme", &row);
        });
    }

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
            assert_eq!(p.get(&acme), PrivacyDefaults::default().policy());
            assert!(p.get(&acme).pseudonymise_macs, "pseudonyms unless the organisation decides otherwise");
            p.set_defaults(&PrivacyDefaults { pseudonymise_macs: false });
            assert!(!p.get(&acme).pseudonymise_macs);
            p.set_defaults(&PrivacyDefaults::default());
            assert!(!p.capture_consent(&acme) && !p.support_active(&acme, 0));
            assert!(p.set_consent(&acme, true, 1_000).unwrap());
            assert!(!p.set_consent(&acme, true, 2_000).unwrap(), "no change");
            p.set_defaults(&PrivacyDefaults { pseudonymise_macs: false });
            assert!(p.get(&acme).pseudonymise_macs, "decided something: the defaults it got stay");
            assert!(!p.get(&other).pseudonymise_macs, "a new organisation gets the new defaults");
            p.set_defaults(&PrivacyDefaults::default());
            assert_eq!(p.grant_support(&acme, 2, &GrantScope::default(), 10_000).unwrap(), 10_000 + 2 * 3_600_000);
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
        assert!(matches!(p.grant_support(&acme, 0, &GrantScope::default(), 0), Err(PolicyError::GrantLength(0))));
        assert!(matches!(
            p.grant_support(&acme, MAX_GRANT_HOURS + 1, &GrantScope::default(), 0),
            Err(PolicyError::GrantLength(_))
        ));
        assert_eq!(p.all().len(), 1);
        let set =
            p.set_data_policy(&acme, &[MetadataField::Hostname, MetadataField::Os, MetadataField::Hostname], true);
        assert_eq!(set.unwrap().omit, [MetadataField::Hostname, MetadataField::Os]);
        assert!(p.get(&acme).capture_consent, "other decisions stay");
    }

    #[test]
    fn a_grant_keeps_its_scope_and_an_old_grant_reads_as_the_default() {
        let device = |n: &str| DeviceId::new(n).unwrap();
        // A grant stored before scopes existed: only its end.
        let old = StoredPolicy {
            capture_consent: true,
            consent_changed_at_ms: None,
            support_until_ms: Some(50_000),
            omit: vec![],
            pseudonymise_macs: true,
        };
        let policy = decode("acme", &postcard::to_stdvec(&old).unwrap()).unwrap();
        assert_eq!(policy.support_scope, GrantScope::default());
        assert!(!policy.support_scope.allows(GrantKind::Captures), "old grants never included captures");
        assert_eq!(policy.support_granted_at_ms, None);

        let scope = GrantScope::new([GrantKind::Captures], [device("ap-2"), device("ap-1")]).unwrap();
        let mut granted = policy.clone();
        granted.support_until_ms = Some(90_000);
        granted.support_scope = scope.clone();
        granted.support_granted_at_ms = Some(10_000);
        let row = encode(&granted).unwrap();
        assert_eq!(decode("acme", &row).unwrap(), granted);

        // An older collector gives a new grant and keeps our value as it
        // was: its end no longer matches, so the new grant has the default
        // scope, never the previous grant's.
        let mut row = postcard::to_stdvec(&StoredPolicy {
            support_until_ms: Some(200_000),
            ..postcard::from_bytes::<StoredPolicy>(&row).unwrap()
        })
        .unwrap();
        let stored = StoredGrant {
            until_ms: 90_000,
            granted_at_ms: 10_000,
            kinds: vec!["captures".into(), "from-the-future".into()],
            devices: vec!["ap-1".into()],
        };
        let value = postcard::to_stdvec(&stored).unwrap();
        row.extend(postcard::to_stdvec(&vec![Extension { tag: tag::SUPPORT_GRANT, value: &value }]).unwrap());
        let decoded = decode("acme", &row).unwrap();
        assert_eq!(decoded.support_scope, GrantScope::default());
        assert_eq!(decoded.support_granted_at_ms, None);

        // A kind this version does not know is skipped, a bad device name
        // is a corrupt row.
        let mut row = postcard::to_stdvec(&StoredPolicy { support_until_ms: Some(90_000), ..old }).unwrap();
        let mut tail = row.clone();
        let value = postcard::to_stdvec(&stored).unwrap();
        row.extend(postcard::to_stdvec(&vec![Extension { tag: tag::SUPPORT_GRANT, value: &value }]).unwrap());
        let decoded = decode("acme", &row).unwrap();
        assert_eq!(decoded.support_scope, GrantScope::new([GrantKind::Captures], [device("ap-1")]).unwrap());
        let bad = StoredGrant { devices: vec!["../etc".into()], ..stored };
        let value = postcard::to_stdvec(&bad).unwrap();
        tail.extend(postcard::to_stdvec(&vec![Extension { tag: tag::SUPPORT_GRANT, value: &value }]).unwrap());
        assert!(matches!(decode("acme", &tail), Err(PolicyError::Corrupt { .. })));
    }

    #[test]
    fn a_grant_limited_to_sites_keeps_them_and_one_without_writes_no_sites() {
        let site = |n: &str| SiteId::new(n).unwrap();
        let mut granted = decode(
            "acme",
            &postcard::to_stdvec(&StoredPolicy {
                capture_consent: false,
                consent_changed_at_ms: None,
                support_until_ms: Some(90_000),
                omit: vec![],
                pseudonymise_macs: true,
            })
            .unwrap(),
        )
        .unwrap();
        granted.support_granted_at_ms = Some(10_000);
        granted.support_scope = GrantScope::new([GrantKind::Metadata], []).unwrap();
        let without = encode(&granted).unwrap();
        granted.support_scope = granted.support_scope.clone().at_sites([site("paris"), site("berlin")]).unwrap();
        let with = encode(&granted).unwrap();
        assert_eq!(decode("acme", &with).unwrap(), granted);
        assert_eq!(decode("acme", &with).unwrap().support_scope.sites(), [site("berlin"), site("paris")]);
        // Without sites the row is what it was before sites existed: no
        // tag 7 (an older collector reads it exactly).
        let tags = |row: &[u8]| {
            let (_, rest) = postcard::take_from_bytes::<StoredPolicy>(row).unwrap();
            postcard::from_bytes::<Vec<Extension<'_>>>(rest).unwrap().iter().map(|e| e.tag).collect::<Vec<_>>()
        };
        assert_eq!(tags(&without), [tag::SUPPORT_GRANT]);
        assert_eq!(tags(&with), [tag::SUPPORT_GRANT, tag::SUPPORT_GRANT_SITES]);

        // An older collector gives a new grant keeping tag 7 as it was:
        // the end no longer matches, so the new grant has no sites.
        let (first, rest) = postcard::take_from_bytes::<StoredPolicy>(&with).unwrap();
        let mut row = postcard::to_stdvec(&StoredPolicy { support_until_ms: Some(200_000), ..first }).unwrap();
        row.extend_from_slice(rest);
        let decoded = decode("acme", &row).unwrap();
        assert!(decoded.support_scope.sites().is_empty(), "{:?}", decoded.support_scope);

        // A bad site name is a corrupt row.
        let bad = StoredGrantSites { until_ms: 90_000, sites: vec!["../x".into()] };
        let (first, _) = postcard::take_from_bytes::<StoredPolicy>(&with).unwrap();
        let mut row = postcard::to_stdvec(&first).unwrap();
        let grant = postcard::to_stdvec(&StoredGrant {
            until_ms: 90_000,
            granted_at_ms: 10_000,
            kinds: vec!["metadata".into()],
            devices: vec![],
        })
        .unwrap();
        let sites = postcard::to_stdvec(&bad).unwrap();
        let extensions = vec![
            Extension { tag: tag::SUPPORT_GRANT, value: &grant },
            Extension { tag: tag::SUPPORT_GRANT_SITES, value: &sites },
        ];
        row.extend(postcard::to_stdvec(&extensions).unwrap());
        assert!(matches!(decode("acme", &row), Err(PolicyError::Corrupt { .. })));
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
