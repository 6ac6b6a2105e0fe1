//! How long each kind of data is kept, globally and per organisation.
//!
//! A module of its own, below both [`crate::store`] (reads clip to the
//! window) and [`crate::retention`] (the sweep deletes what is past it), so
//! neither depends on the other for it. Re-exported from
//! [`crate::retention`]. It decides windows only; it deletes nothing.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use glimpse_common::clock::{UnixMillis, MILLIS_PER_DAY};
use glimpse_common::identity::OrgId;
use glimpse_common::record::DataKind;
use serde::{Deserialize, Serialize};

/// A retention policy is invalid or a sweep could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RetentionError {
    /// One or more retention settings are outside their bounds.
    #[error("invalid retention settings: {}", join(.0))]
    OutOfBounds(Vec<OutOfBounds>),
    /// The store's organisations could not be listed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// To which path.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The clock is before data already stored or before a time the
    /// collector has already seen: sweeping by it is refused.
    #[error(
        "refusing to sweep: the clock says {now} but {what} is {seen}; the clock is wrong, or data is dated \
         in the future. Fix the clock, or confirm it with `glimpse-collector sweep --accept-clock`"
    )]
    ClockBehind {
        /// The clock's time (RFC 3339).
        now: String,
        /// What it is behind.
        what: &'static str,
        /// That time.
        seen: String,
    },
    /// The clock moved forward implausibly far since the collector last
    /// looked: sweeping by it could delete data that is not expired.
    #[error(
        "refusing to sweep: the clock jumped forward from {last} to {now}, more than {max_days} days; if the \
         collector was really stopped that long, confirm with `glimpse-collector sweep --accept-clock` \
         (or `serve --accept-clock`), otherwise fix the clock"
    )]
    ClockJump {
        /// The clock's time.
        now: String,
        /// The latest time the collector had seen.
        last: String,
        /// The largest accepted jump, in days.
        max_days: i64,
    },
    /// The clock check could not read or record its state.
    #[error("cannot check the clock against the store: {0}")]
    State(String),
}

fn join(problems: &[OutOfBounds]) -> String {
    problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

/// Shortest retention anything may have, in days.
pub const MIN_RETENTION_DAYS: u32 = 1;
/// Longest capture retention: the product keeps packet data 7 days.
pub const MAX_CAPTURE_DAYS: u32 = 7;
/// Longest default metadata retention: customer data is deleted on a
/// rolling 60 days.
pub const MAX_DEFAULT_METADATA_DAYS: u32 = 60;
/// Longest per-organisation metadata retention (the premium analytics
/// option).
pub const MAX_ORG_METADATA_DAYS: u32 = 365;

/// One retention setting outside its allowed range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutOfBounds {
    /// The organisation, or `None` for the default or the offer.
    pub org: Option<OrgId>,
    /// Whether this is `[retention.offer]`, the longest an organisation
    /// may choose itself.
    pub offered: bool,
    /// The data kind.
    pub kind: DataKind,
    /// The value given.
    pub days: u32,
    /// Smallest allowed value.
    pub min: u32,
    /// Largest allowed value.
    pub max: u32,
}

impl fmt::Display for OutOfBounds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scope = match (&self.org, self.offered) {
            (Some(org), _) => format!("for organisation {org}"),
            (None, true) => "offered to organisations ([retention.offer])".into(),
            (None, false) => "by default".into(),
        };
        write!(f, "{} retention of {} days {scope} is outside {}..={} days", self.kind, self.days, self.min, self.max)?;
        match (self.kind, &self.org) {
            (DataKind::Capture, _) => f.write_str(" (packet data is kept at most 7 days)"),
            (DataKind::Metadata, None) if !self.offered => {
                f.write_str(" (longer retention is only a per-organisation option: [retention.orgs.<org>])")
            }
            _ => Ok(()),
        }
    }
}

/// The allowed range of days for `kind`, by default or for one organisation.
pub fn bounds(kind: DataKind, per_org: bool) -> (u32, u32) {
    let max = match kind {
        DataKind::Capture => MAX_CAPTURE_DAYS,
        DataKind::Metadata if per_org => MAX_ORG_METADATA_DAYS,
        DataKind::Metadata => MAX_DEFAULT_METADATA_DAYS,
        // A kind added later gets no more than its own default until
        // someone decides otherwise here.
        other => other.default_retention_days(),
    };
    (MIN_RETENTION_DAYS, max)
}

/// Retention per data kind, with per-organisation overrides. Built only
/// through validation, so every value is within [`bounds`].
///
/// In the collector's TOML configuration:
///
/// ```toml
/// [retention]
/// capture_days = 7     # 1..=7
/// metadata_days = 60   # 1..=60
///
/// [retention.orgs.acme]
/// metadata_days = 90   # 1..=365: premium analytics
/// capture_days = 3     # 1..=7
///
/// [retention.offer]    # the longest each organisation may choose itself
/// metadata_days = 365  # 1..=365 (default: the default retention)
/// capture_days = 7     # 1..=7
/// ```
///
/// An organisation's own choice (`OrgPolicy::retention_days` in the
/// control store, set through the admin API) replaces what is configured
/// for it, within [`RetentionPolicy::choice_max`]; see
/// [`RetentionPolicy::effective_days`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RetentionConfig", into = "RetentionConfig")]
pub struct RetentionPolicy {
    defaults: BTreeMap<DataKind, u32>,
    orgs: BTreeMap<OrgId, BTreeMap<DataKind, u32>>,
    offer: BTreeMap<DataKind, u32>,
}

impl Default for RetentionPolicy {
    /// The product's promise: capture 7 days, metadata 60 days.
    fn default() -> Self {
        let defaults: BTreeMap<DataKind, u32> =
            DataKind::ALL.iter().map(|k| (*k, k.default_retention_days())).collect();
        RetentionPolicy { offer: defaults.clone(), defaults, orgs: BTreeMap::new() }
    }
}

impl RetentionPolicy {
    /// Validates a policy. Kinds missing from `defaults` keep the product
    /// default. Every out-of-bounds value is reported at once.
    pub fn new(
        defaults: HashMap<DataKind, u32>,
        overrides: HashMap<OrgId, HashMap<DataKind, u32>>,
    ) -> Result<RetentionPolicy, RetentionError> {
        let mut policy = RetentionPolicy::default();
        let mut problems = Vec::new();
        let mut check = |org: Option<&OrgId>, kind: DataKind, days: u32| {
            let (min, max) = bounds(kind, org.is_some());
            if (min..=max).contains(&days) {
                true
            } else {
                problems.push(OutOfBounds { org: org.cloned(), offered: false, kind, days, min, max });
                false
            }
        };
        for (kind, days) in defaults {
            if check(None, kind, days) {
                policy.defaults.insert(kind, days);
            }
        }
        for (org, kinds) in overrides {
            for (kind, days) in kinds {
                if check(Some(&org), kind, days) {
                    policy.orgs.entry(org.clone()).or_default().insert(kind, days);
                }
            }
        }
        if problems.is_empty() {
            Ok(policy)
        } else {
            problems.sort_by(|a, b| (&a.org, a.kind).cmp(&(&b.org, b.kind)));
            Err(RetentionError::OutOfBounds(problems))
        }
    }

    /// How many days `org`'s data of `kind` is kept.
    pub fn days(&self, org: &OrgId, kind: DataKind) -> u32 {
        self.orgs
            .get(org)
            .and_then(|kinds| kinds.get(&kind))
            .or_else(|| self.defaults.get(&kind))
            .copied()
            .unwrap_or_else(|| kind.default_retention_days())
    }

    /// The start of the retention window: records received before it are
    /// expired.
    pub fn window_start(&self, org: &OrgId, kind: DataKind, now: UnixMillis) -> UnixMillis {
        now.saturating_sub(i64::from(self.days(org, kind)) * MILLIS_PER_DAY)
    }

    /// The longest any organisation may choose for `kind` by itself
    /// (`[retention.offer]`; without one, the default retention, so that
    /// organisations may only shorten theirs).
    pub fn offer(&self, kind: DataKind) -> u32 {
        self.offer.get(&kind).copied().unwrap_or_else(|| kind.default_retention_days())
    }

    /// The longest `org` may choose for `kind`: the offer, or what the
    /// operator configured for that organisation when that is longer.
    pub fn choice_max(&self, org: &OrgId, kind: DataKind) -> u32 {
        self.offer(kind).max(self.days(org, kind))
    }

    /// The days in force for `org`'s `kind`, given the organisation's own
    /// `choice`: the choice, held within `1..=choice_max` (an offer the
    /// operator shortened since shortens a longer choice with it), or
    /// without one what is configured.
    pub fn effective_days(&self, org: &OrgId, kind: DataKind, choice: Option<u32>) -> u32 {
        match choice {
            Some(days) => days.clamp(MIN_RETENTION_DAYS, self.choice_max(org, kind)),
            None => self.days(org, kind),
        }
    }

    /// This policy with the organisations' own `choices` in force (each
    /// held within its bounds as [`RetentionPolicy::effective_days`] does):
    /// what a sweep deletes by.
    pub fn with_choices(&self, choices: impl IntoIterator<Item = (OrgId, DataKind, u32)>) -> RetentionPolicy {
        let mut policy = self.clone();
        for (org, kind, days) in choices {
            let days = self.effective_days(&org, kind, Some(days));
            policy.orgs.entry(org).or_default().insert(kind, days);
        }
        policy
    }
}

/// The configuration-file shape of [`RetentionPolicy`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Default capture retention in days (1..=7; default 7).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture_days: Option<u32>,
    /// Default metadata retention in days (1..=60; default 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata_days: Option<u32>,
    /// Per-organisation overrides.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub orgs: BTreeMap<OrgId, OrgRetentionConfig>,
    /// The longest each organisation may choose itself, per kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offer: Option<OrgRetentionConfig>,
}

/// One organisation's overrides in the configuration file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrgRetentionConfig {
    /// Capture retention in days (1..=7).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture_days: Option<u32>,
    /// Metadata retention in days (1..=365).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata_days: Option<u32>,
}

fn kinds(capture: Option<u32>, metadata: Option<u32>) -> HashMap<DataKind, u32> {
    [(DataKind::Capture, capture), (DataKind::Metadata, metadata)]
        .into_iter()
        .filter_map(|(kind, days)| days.map(|d| (kind, d)))
        .collect()
}

impl TryFrom<RetentionConfig> for RetentionPolicy {
    type Error = RetentionError;

    fn try_from(config: RetentionConfig) -> Result<Self, RetentionError> {
        let overrides = config.orgs.into_iter().map(|(org, c)| (org, kinds(c.capture_days, c.metadata_days))).collect();
        let offer = config.offer.map(|c| kinds(c.capture_days, c.metadata_days)).unwrap_or_default();
        let policy = RetentionPolicy::new(kinds(config.capture_days, config.metadata_days), overrides);
        // The offer is bounded as an organisation's retention is; its
        // problems are reported with the others'.
        let mut problems = match &policy {
            Err(RetentionError::OutOfBounds(problems)) => problems.clone(),
            _ => Vec::new(),
        };
        let mut offered = BTreeMap::new();
        for (kind, days) in offer {
            let (min, max) = bounds(kind, true);
            if (min..=max).contains(&days) {
                offered.insert(kind, days);
            } else {
                problems.push(OutOfBounds { org: None, offered: true, kind, days, min, max });
            }
        }
        match policy {
            Ok(mut policy) if problems.is_empty() => {
                policy.offer.extend(offered);
                Ok(policy)
            }
            Ok(_) => Err(RetentionError::OutOfBounds(problems)),
            Err(RetentionError::OutOfBounds(_)) => Err(RetentionError::OutOfBounds(problems)),
            Err(e) => Err(e),
        }
    }
}

impl From<RetentionPolicy> for RetentionConfig {
    fn from(policy: RetentionPolicy) -> Self {
        let get = |map: &BTreeMap<DataKind, u32>, kind| map.get(&kind).copied();
        RetentionConfig {
            capture_days: get(&policy.defaults, DataKind::Capture),
            metadata_days: get(&policy.defaults, DataKind::Metadata),
            orgs: policy
                .orgs
                .iter()
                .map(|(org, kinds)| {
                    (
                        org.clone(),
                        OrgRetentionConfig {
                            capture_days: get(kinds, DataKind::Capture),
                            metadata_days: get(kinds, DataKind::Metadata),
                        },
                    )
                })
                .collect(),
            offer: (policy.offer != RetentionPolicy::default().offer).then(|| OrgRetentionConfig {
                capture_days: get(&policy.offer, DataKind::Capture),
                metadata_days: get(&policy.offer, DataKind::Metadata),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn org(name: &str) -> OrgId {
        OrgId::new(name).unwrap()
    }

    #[test]
    fn defaults_are_the_product_promise() {
        let p = RetentionPolicy::default();
        assert_eq!(p.days(&org("a"), DataKind::Capture), 7);
        assert_eq!(p.days(&org("a"), DataKind::Metadata), 60);
        assert_eq!(p.window_start(&org("a"), DataKind::Capture, 10 * MILLIS_PER_DAY), 3 * MILLIS_PER_DAY);
        assert_eq!(p.window_start(&org("a"), DataKind::Capture, i64::MIN), i64::MIN);
    }

    #[test]
    fn toml_with_overrides() {
        #[derive(Deserialize)]
        struct Config {
            retention: RetentionPolicy,
        }
        let config: Config = toml::from_str(
            "[retention]\ncapture_days = 5\n[retention.orgs.acme]\nmetadata_days = 90\n\
             [retention.orgs.globex]\ncapture_days = 1\n",
        )
        .unwrap();
        let p = config.retention;
        assert_eq!(p.days(&org("acme"), DataKind::Metadata), 90);
        assert_eq!(p.days(&org("acme"), DataKind::Capture), 5);
        assert_eq!(p.days(&org("globex"), DataKind::Capture), 1);
        assert_eq!(p.days(&org("globex"), DataKind::Metadata), 60);
        assert_eq!(p.days(&org("other"), DataKind::Capture), 5);

        let empty: RetentionPolicy = toml::from_str("").unwrap();
        assert_eq!(empty, RetentionPolicy::default());
        let round: RetentionPolicy = toml::from_str(&toml::to_string(&p).unwrap()).unwrap();
        assert_eq!(round.days(&org("acme"), DataKind::Metadata), 90);
    }

    #[test]
    fn bounds_are_enforced_all_at_once() {
        let err = toml::from_str::<RetentionPolicy>(
            "capture_days = 8\nmetadata_days = 61\n[orgs.acme]\nmetadata_days = 366\n\
             capture_days = 0\n[orgs.ok]\nmetadata_days = 365\n",
        )
        .unwrap_err()
        .to_string();
        for needle in [
            "capture retention of 8 days by default is outside 1..=7 days",
            "metadata retention of 61 days by default is outside 1..=60 days",
            "metadata retention of 366 days for organisation acme is outside 1..=365 days",
            "capture retention of 0 days for organisation acme is outside 1..=7 days",
        ] {
            assert!(err.contains(needle), "{err}");
        }
        assert!(!err.contains("organisation ok"), "{err}");

        let e = RetentionPolicy::new(HashMap::from([(DataKind::Capture, 30)]), HashMap::new()).unwrap_err();
        assert!(matches!(e, RetentionError::OutOfBounds(ref v) if v.len() == 1));
        assert!(toml::from_str::<RetentionPolicy>("captur_days = 3").is_err());
        assert!(toml::from_str::<RetentionPolicy>("[orgs.\"../x\"]\ncapture_days = 3").is_err());
    }

    #[test]
    fn organisations_choose_within_the_offer() {
        let p: RetentionPolicy =
            toml::from_str("metadata_days = 30\n[orgs.premium]\nmetadata_days = 200\n[offer]\nmetadata_days = 90\n")
                .unwrap();
        let (plain, premium) = (org("plain"), org("premium"));
        assert_eq!((p.offer(DataKind::Metadata), p.offer(DataKind::Capture)), (90, 7));
        assert_eq!(p.choice_max(&plain, DataKind::Metadata), 90);
        assert_eq!(p.choice_max(&premium, DataKind::Metadata), 200, "what the operator gave it stays choosable");
        assert_eq!(p.effective_days(&plain, DataKind::Metadata, None), 30);
        assert_eq!(p.effective_days(&plain, DataKind::Metadata, Some(80)), 80);
        assert_eq!(p.effective_days(&plain, DataKind::Metadata, Some(300)), 90, "an offer shortened since");
        assert_eq!(p.effective_days(&plain, DataKind::Metadata, Some(0)), 1);
        assert_eq!(p.effective_days(&premium, DataKind::Metadata, Some(10)), 10, "shorter is always allowed");
        let swept = p.with_choices([(plain.clone(), DataKind::Metadata, 80), (org("x"), DataKind::Capture, 30)]);
        assert_eq!(swept.days(&plain, DataKind::Metadata), 80);
        assert_eq!(swept.days(&org("x"), DataKind::Capture), 7);
        assert_eq!(swept.days(&org("y"), DataKind::Metadata), 30);

        let round: RetentionPolicy = toml::from_str(&toml::to_string(&p).unwrap()).unwrap();
        assert_eq!(round, p, "the offer survives a round trip");
        assert_eq!(RetentionPolicy::default().offer(DataKind::Metadata), 60, "by default: only shorter");
        let e = toml::from_str::<RetentionPolicy>("capture_days = 9\n[offer]\nmetadata_days = 366\ncapture_days = 8\n")
            .unwrap_err()
            .to_string();
        for needle in [
            "metadata retention of 366 days offered to organisations ([retention.offer]) is outside 1..=365 days",
            "capture retention of 8 days offered to organisations",
            "capture retention of 9 days by default",
        ] {
            assert!(e.contains(needle), "{e}");
        }
        assert!(toml::from_str::<RetentionPolicy>("[offer]\nmetadata_dayz = 3").is_err());
    }
}
