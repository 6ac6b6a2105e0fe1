//! The admin actions: what an admin can ask of a running collector, and
//! its answers. The collector's HTTPS API (`/api/v1`, JSON) turns each
//! request into an [`AdminAction`], runs it through the same authorisation
//! and audit whatever the credential, and maps the [`AdminReply`] back to
//! JSON; the admin client maps the other way. These types are no longer on
//! any wire: the framed postcard admin protocol (`glimpse-admin/1`) was
//! removed with the HTTPS API (see docs/PROTOCOL.md).

use serde::{Deserialize, Serialize};

use crate::bounded::{BoundedString, BoundedVec};
use crate::identity::{DeviceId, OrgId, SiteId};
use crate::minimise::MetadataField;
use crate::wire::message::{CaptureOutcome, MAX_ERROR_TEXT, MAX_FILTER_TEXT, MAX_POLICY_FIELDS};

/// Most devices listed in one reply.
pub const MAX_LISTED_DEVICES: usize = 10_000;

/// Most audit entries in one reply; ask again with `after_seq` for more.
pub const MAX_AUDIT_PAGE: usize = 200;

/// Most records in one subject export reply; ask again with `skip`.
pub const MAX_SUBJECT_PAGE: usize = 100;

/// Longest JSON line of one exported record.
pub const MAX_EXPORT_LINE: usize = 64 * 1024;

/// Most JSON bytes in one subject export page (a page is one API
/// response, held in memory).
pub const MAX_SUBJECT_PAGE_BYTES: usize = 768 * 1024;

pub use crate::record::subject::{BlockedSubjects, CorrectableField, Subject, MAX_BLOCKED_SUBJECTS};

/// One audit log entry, as the admin API returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Position in the log, from 1.
    pub seq: u64,
    /// When it happened (collector clock, Unix milliseconds).
    pub at_ms: i64,
    /// Who acted: an admin, a device, or the collector itself.
    pub actor: BoundedString<256>,
    /// What was done or attempted, e.g. `consent.set`.
    pub action: BoundedString<64>,
    /// The organisation concerned, if any.
    pub org: Option<OrgId>,
    /// Whether it was refused (and so not done).
    pub refused: bool,
    /// Details: the values set, or why it was refused.
    pub detail: BoundedString<1024>,
}

/// One kind of an organisation's data a support grant can include.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[non_exhaustive]
pub enum GrantKind {
    /// Devices and status: the organisation's status, its devices, their
    /// connections and health, its audit log. Part of every grant: no other
    /// kind is usable without it.
    Devices,
    /// Stored metadata: the device views (rates, latest reports) and
    /// metadata exports.
    Metadata,
    /// Captures: requesting, stopping and following header-only captures
    /// (with the organisation's capture consent), reading and exporting
    /// captured headers.
    Captures,
    /// Data-subject exports: every record about one person or device.
    Exports,
}

impl GrantKind {
    /// Every kind, in order.
    pub const ALL: [GrantKind; 4] = [GrantKind::Devices, GrantKind::Metadata, GrantKind::Captures, GrantKind::Exports];

    /// The kind's name in the API, the CLI and the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            GrantKind::Devices => "devices",
            GrantKind::Metadata => "metadata",
            GrantKind::Captures => "captures",
            GrantKind::Exports => "exports",
        }
    }

    /// The kind named `name`, if this version knows it.
    pub fn parse(name: &str) -> Option<GrantKind> {
        GrantKind::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

impl std::fmt::Display for GrantKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Most devices one support grant can name.
pub const MAX_GRANT_DEVICES: usize = 256;

/// What a support grant lets its holders see: kinds of data, and
/// optionally only some devices. [`GrantScope::default`] is what a grant
/// meant before grants had a scope (and what a client that sends only a
/// duration gets): every kind but captures, on every device. Captures are
/// never granted unless named.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "ScopeParts")]
pub struct GrantScope {
    kinds: Vec<GrantKind>,
    devices: Vec<DeviceId>,
    /// The sites it is limited to: not in a scope's postcard encoding,
    /// which predates sites and stays as it was; the HTTPS API carries
    /// them (`sites`), and the collector stores them beside the scope (the
    /// policy row's tagged value 7).
    #[serde(skip_serializing)]
    sites: Vec<SiteId>,
}

/// Most sites one support grant can name.
pub const MAX_GRANT_SITES: usize = 64;

/// A scope as decoded, before [`GrantScope::new`] checks it: decoding
/// goes through the same checks as building one.
#[derive(Deserialize)]
struct ScopeParts {
    kinds: BoundedVec<GrantKind, 16>,
    devices: BoundedVec<DeviceId, MAX_GRANT_DEVICES>,
}

impl TryFrom<ScopeParts> for GrantScope {
    type Error = GrantScopeError;

    fn try_from(parts: ScopeParts) -> Result<Self, Self::Error> {
        GrantScope::new(parts.kinds.into_vec(), parts.devices.into_vec())
    }
}

impl Default for GrantScope {
    fn default() -> Self {
        GrantScope {
            kinds: vec![GrantKind::Devices, GrantKind::Metadata, GrantKind::Exports],
            devices: Vec::new(),
            sites: Vec::new(),
        }
    }
}

/// A grant scope that cannot be given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GrantScopeError {
    /// More devices than [`MAX_GRANT_DEVICES`].
    #[error("a support grant can name at most {MAX_GRANT_DEVICES} devices, not {0}")]
    TooManyDevices(usize),
    /// More sites than [`MAX_GRANT_SITES`].
    #[error("a support grant can name at most {MAX_GRANT_SITES} sites, not {0}")]
    TooManySites(usize),
}

impl GrantScope {
    /// A scope of `kinds` (devices and status is always added) on
    /// `devices` (every device when empty); duplicates are dropped.
    pub fn new(
        kinds: impl IntoIterator<Item = GrantKind>,
        devices: impl IntoIterator<Item = DeviceId>,
    ) -> Result<GrantScope, GrantScopeError> {
        let mut kinds: Vec<GrantKind> = kinds.into_iter().chain([GrantKind::Devices]).collect();
        kinds.sort_unstable();
        kinds.dedup();
        let mut listed = Vec::new();
        for device in devices {
            if listed.len() == MAX_GRANT_DEVICES {
                return Err(GrantScopeError::TooManyDevices(MAX_GRANT_DEVICES + 1));
            }
            listed.push(device);
        }
        listed.sort_unstable();
        listed.dedup();
        Ok(GrantScope { kinds, devices: listed, sites: Vec::new() })
    }

    /// The same scope limited to the devices of `sites` (every site when
    /// empty; with devices named too, to those of them at the sites);
    /// duplicates are dropped.
    pub fn at_sites(mut self, sites: impl IntoIterator<Item = SiteId>) -> Result<GrantScope, GrantScopeError> {
        let mut listed = Vec::new();
        for site in sites {
            if listed.len() == MAX_GRANT_SITES {
                return Err(GrantScopeError::TooManySites(MAX_GRANT_SITES + 1));
            }
            listed.push(site);
        }
        listed.sort_unstable();
        listed.dedup();
        self.sites = listed;
        Ok(self)
    }

    /// The sites it is limited to, sorted; empty when it covers all.
    pub fn sites(&self) -> &[SiteId] {
        &self.sites
    }

    /// The kinds included, in order (always with devices and status).
    pub fn kinds(&self) -> &[GrantKind] {
        &self.kinds
    }

    /// The devices it is limited to, sorted; empty when it covers all.
    pub fn devices(&self) -> &[DeviceId] {
        &self.devices
    }

    /// Whether it includes `kind`.
    pub fn allows(&self, kind: GrantKind) -> bool {
        self.kinds.contains(&kind)
    }

    /// Whether it covers `device`.
    pub fn covers(&self, device: &DeviceId) -> bool {
        self.devices.is_empty() || self.devices.binary_search(device).is_ok()
    }

    /// Whether it is limited to some devices.
    pub fn limited(&self) -> bool {
        !self.devices.is_empty()
    }
}

impl std::fmt::Display for GrantScope {
    /// `devices, metadata on all devices` or `… on devices ap-1, ap-2`, as
    /// the audit log says it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kinds: Vec<&str> = self.kinds.iter().map(|k| k.as_str()).collect();
        write!(f, "{}", kinds.join(", "))?;
        if self.devices.is_empty() {
            write!(f, " on all devices")?;
        } else {
            let devices: Vec<&str> = self.devices.iter().map(DeviceId::as_str).collect();
            write!(f, " on devices {}", devices.join(", "))?;
        }
        if !self.sites.is_empty() {
            let sites: Vec<&str> = self.sites.iter().map(SiteId::as_str).collect();
            write!(f, " at sites {}", sites.join(", "))?;
        }
        Ok(())
    }
}

/// What an admin can ask for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum AdminAction {
    /// Start a header-only capture on a connected device.
    StartCapture {
        /// The device's organisation.
        org: OrgId,
        /// The device.
        device: DeviceId,
        /// Interface on the device.
        interface: BoundedString<32>,
        /// BPF filter, empty for all traffic.
        filter: BoundedString<MAX_FILTER_TEXT>,
        /// Longest the capture may run.
        duration_secs: u32,
        /// Most packets it may keep.
        max_packets: u32,
    },
    /// Stop a running capture.
    StopCapture {
        /// The device's organisation.
        org: OrgId,
        /// The device.
        device: DeviceId,
        /// The capture's id.
        id: u64,
    },
    /// The organisation's devices that are connected now.
    ConnectedDevices {
        /// The organisation.
        org: OrgId,
    },
    /// What a device last reported about a capture.
    CaptureStatus {
        /// The device's organisation.
        org: OrgId,
        /// The device.
        device: DeviceId,
        /// The capture's id.
        id: u64,
    },
    /// Give or withdraw the organisation's packet-capture consent.
    SetConsent {
        /// The organisation.
        org: OrgId,
        /// Whether its devices may capture (headers only).
        capture: bool,
    },
    /// Let support staff (and operators) read the organisation's data
    /// for a while, as far as `scope` says.
    GrantSupport {
        /// The organisation.
        org: OrgId,
        /// How long, in hours.
        hours: u32,
        /// What the grant lets its holders see and do.
        scope: GrantScope,
    },
    /// End the organisation's support grant now.
    RevokeSupport {
        /// The organisation.
        org: OrgId,
    },
    /// The organisation's decisions and connected devices.
    OrgStatus {
        /// The organisation.
        org: OrgId,
    },
    /// Check the whole audit log's hash chain (operators only).
    VerifyAudit,
    /// Audit entries, oldest first, after `after_seq`.
    ShowAudit {
        /// Only this organisation's entries; every entry when `None`
        /// (operators only).
        org: Option<OrgId>,
        /// Entries with a higher sequence number than this.
        after_seq: u64,
    },
    /// Every stored record about a data subject, as JSON lines (the same
    /// lines as `glimpse-collector export`), metadata then captures.
    ExportSubject {
        /// The organisation.
        org: OrgId,
        /// Who.
        subject: Subject,
        /// Records already received, to page through a long answer.
        skip: u64,
    },
    /// Erase every stored record about a data subject: the affected
    /// segments are rewritten without them, re-encrypted under fresh nonces.
    EraseSubject {
        /// The organisation.
        org: OrgId,
        /// Who.
        subject: Subject,
    },
    /// Choose which metadata fields the organisation's devices collect and
    /// whether MAC addresses are stored pseudonymised.
    SetDataPolicy {
        /// The organisation.
        org: OrgId,
        /// Fields not to collect (replaces the previous list).
        omit: BoundedVec<MetadataField, MAX_POLICY_FIELDS>,
        /// Store MAC addresses as keyed pseudonyms.
        pseudonymise_macs: bool,
        /// Scrub captured headers strictly (see CAPTURE.md); `None` leaves
        /// the decision as it is, so a client that predates it cannot turn
        /// it off by accident.
        strict_headers: Option<bool>,
    },
    /// Delete all of an organisation's data and destroy its key.
    DeleteOrg {
        /// The organisation; must be repeated in `confirm`.
        org: OrgId,
        /// The organisation's name again, as a guard against slips.
        confirm: OrgId,
    },
    /// Replace the subject's `field` by `value` in every stored record
    /// about them (their part of each record only): the affected segments
    /// are rewritten, as an erase rewrites them.
    CorrectSubject {
        /// The organisation.
        org: OrgId,
        /// Who.
        subject: Subject,
        /// Which of their values is wrong.
        field: CorrectableField,
        /// The right value (empty: none).
        value: BoundedString<{ crate::record::MAX_TEXT }>,
    },
    /// Stop processing the subject's data: the collector drops it on
    /// arrival, the organisation's devices stop sending it, exports leave
    /// it out; until unblocked. Stored data stays (erase it separately).
    BlockSubject {
        /// The organisation.
        org: OrgId,
        /// Who.
        subject: Subject,
    },
    /// Process the subject's data again from now on.
    UnblockSubject {
        /// The organisation.
        org: OrgId,
        /// Who.
        subject: Subject,
    },
    /// The organisation's blocked subjects.
    BlockedSubjects {
        /// The organisation.
        org: OrgId,
    },
    /// Choose whether the organisation keeps a history of where its Wi-Fi
    /// stations were (off by default: stored reports then cannot be joined
    /// into a person's movements).
    SetLocationHistory {
        /// The organisation.
        org: OrgId,
        /// Keep each collection's stations with their identity.
        keep: bool,
    },
    /// Choose how long the organisation's data is kept, within what the
    /// operator offers. Replaces the previous choice: a kind given as
    /// `None` goes back to what the operator configured.
    SetRetention {
        /// The organisation.
        org: OrgId,
        /// Days of metadata, 1 up to the offer.
        metadata_days: Option<u32>,
        /// Days of header-only captures, 1 up to the offer (at most 7).
        capture_days: Option<u32>,
    },
    /// Ask a connected device for a diagnostic bundle (its build, model and
    /// serial number, configuration without secrets, recent logs, spool
    /// state, probe and tool status), which it sends as a record stored
    /// like metadata.
    RequestDiagnostics {
        /// The device's organisation.
        org: OrgId,
        /// The device.
        device: DeviceId,
    },
    /// Choose whether the organisation's gateways report WAN destinations:
    /// sessions per client and destination address, protocol and port,
    /// with site names from the gateway's DNS resolver (off by default).
    SetWanDestinations {
        /// The organisation.
        org: OrgId,
        /// Collect and store them.
        on: bool,
    },
}

/// The collector's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum AdminReply {
    /// A capture request was delivered to the device.
    CaptureRequested {
        /// The capture's id, for stop and for the logs.
        id: u64,
    },
    /// A stop was delivered.
    CaptureStopRequested,
    /// Connected devices.
    Devices(BoundedVec<DeviceId, MAX_LISTED_DEVICES>),
    /// The request was refused; the reason says why.
    Refused(BoundedString<MAX_ERROR_TEXT>),
    /// The device's latest report on a capture; `None` while it has sent
    /// none (not yet delivered, or the collector restarted since).
    CaptureStatus(Option<CaptureOutcome>),
    /// Consent is now `capture`.
    ConsentSet {
        /// The consent now in force.
        capture: bool,
        /// Whether this request changed it.
        changed: bool,
        /// Connected devices told at once.
        devices_told: u32,
    },
    /// Support may read until then.
    SupportGranted {
        /// End of the grant (Unix milliseconds).
        until_ms: i64,
    },
    /// The grant is over.
    SupportRevoked {
        /// Whether a grant was active.
        was_active: bool,
    },
    /// An organisation's decisions.
    OrgStatus {
        /// Metadata fields not collected.
        omitted_fields: BoundedVec<MetadataField, MAX_POLICY_FIELDS>,
        /// Whether MAC addresses are stored pseudonymised.
        pseudonymise_macs: bool,
        /// Whether captured headers are scrubbed strictly.
        strict_headers: bool,
        /// Whether capture is allowed.
        capture_consent: bool,
        /// When an active support grant ends, if one is active.
        support_until_ms: Option<i64>,
        /// Devices connected now.
        connected_devices: u32,
    },
    /// The audit log verified: every entry is intact and in order.
    AuditVerified {
        /// Entries checked.
        entries: u64,
    },
    /// A page of audit entries; more may follow after the last `seq`.
    AuditEntries(BoundedVec<AuditRecord, MAX_AUDIT_PAGE>),
    /// A page of a subject export.
    SubjectRecords {
        /// Records about the subject in all.
        total: u64,
        /// This page's records, one JSON object each.
        lines: BoundedVec<BoundedString<MAX_EXPORT_LINE>, MAX_SUBJECT_PAGE>,
    },
    /// What an erase removed.
    SubjectErased {
        /// Metadata records removed, or (reports about many clients) with
        /// the subject's entries removed.
        metadata: u64,
        /// Capture records removed.
        captures: u64,
        /// Segment files rewritten (or deleted when nothing else was left).
        segments_rewritten: u64,
    },
    /// The data policy now in force.
    DataPolicySet {
        /// Devices connected now, told at once.
        devices_told: u32,
        /// Whether captured headers are now scrubbed strictly.
        strict_headers: bool,
    },
    /// What a correction replaced.
    SubjectCorrected {
        /// Metadata records in which a value was replaced.
        records: u64,
        /// Values replaced.
        values: u64,
        /// Segment files rewritten.
        segments_rewritten: u64,
    },
    /// The subject is blocked (or unblocked) now.
    BlockChanged {
        /// Whether the subject is blocked now.
        blocked: bool,
        /// Whether this request changed it.
        changed: bool,
        /// Subjects the organisation has blocked now.
        blocked_subjects: u32,
        /// Connected devices told at once.
        devices_told: u32,
    },
    /// The organisation's blocked subjects, in the order they were blocked.
    BlockedSubjects(BlockedSubjects),
    /// The organisation's data and key are gone.
    OrgDeleted {
        /// Whether it had a key to destroy.
        key_destroyed: bool,
        /// Segment files deleted.
        segments_deleted: u64,
    },
    /// The location-history choice now in force.
    LocationHistorySet {
        /// Whether station identities are kept from now on.
        keep: bool,
        /// Whether this request changed it.
        changed: bool,
    },
    /// The retention now in force.
    RetentionSet {
        /// Days of metadata kept.
        metadata_days: u32,
        /// Days of captures kept.
        capture_days: u32,
        /// Whether this request changed the choice.
        changed: bool,
    },
    /// The WAN destinations choice now in force.
    WanDestinationsSet {
        /// Whether gateways report WAN destinations from now on.
        on: bool,
        /// Whether this request changed it.
        changed: bool,
        /// Devices connected now, told at once.
        devices_told: u32,
    },
    /// The device was asked for a diagnostic bundle.
    DiagnosticsRequested {
        /// The request's id, repeated in the bundle.
        id: u64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn device(name: &str) -> DeviceId {
        DeviceId::new(name).unwrap()
    }

    #[test]
    fn a_scope_always_has_devices_and_the_default_never_captures() {
        let old = GrantScope::default();
        assert!(old.allows(GrantKind::Metadata) && old.allows(GrantKind::Exports) && !old.allows(GrantKind::Captures));
        assert!(old.covers(&device("any")) && !old.limited());
        let scope = GrantScope::new([GrantKind::Captures, GrantKind::Captures], [device("b"), device("a")]).unwrap();
        assert_eq!(scope.kinds(), &[GrantKind::Devices, GrantKind::Captures]);
        assert!(scope.covers(&device("a")) && !scope.covers(&device("c")) && !scope.allows(GrantKind::Metadata));
        assert_eq!(scope.to_string(), "devices, captures on devices a, b");
        assert_eq!(old.to_string(), "devices, metadata, exports on all devices");
        let many = (0..=MAX_GRANT_DEVICES).map(|i| device(&format!("d{i}")));
        assert_eq!(GrantScope::new([], many), Err(GrantScopeError::TooManyDevices(MAX_GRANT_DEVICES + 1)));
        for kind in GrantKind::ALL {
            assert_eq!(GrantKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(GrantKind::parse("everything"), None);
    }

    #[test]
    fn sites_narrow_a_scope_and_stay_off_the_wire() {
        let site = |s: &str| SiteId::new(s).unwrap();
        let plain = GrantScope::new([GrantKind::Metadata], [device("ap-1")]).unwrap();
        let scope = plain.clone().at_sites([site("paris"), site("berlin"), site("paris")]).unwrap();
        assert_eq!(scope.sites(), &[site("berlin"), site("paris")]);
        assert_eq!(scope.to_string(), "devices, metadata on devices ap-1 at sites berlin, paris");
        let many = (0..=MAX_GRANT_SITES).map(|i| site(&format!("s{i}")));
        assert_eq!(plain.clone().at_sites(many), Err(GrantScopeError::TooManySites(MAX_GRANT_SITES + 1)));
        // A scope's postcard encoding is what it was before sites: an
        // older reader reads it, and sites are never in it.
        let bytes = postcard::to_stdvec(&scope).unwrap();
        assert_eq!(bytes, postcard::to_stdvec(&plain).unwrap());
        assert_eq!(postcard::from_bytes::<GrantScope>(&bytes).unwrap(), plain);
    }

    proptest! {
        /// Whatever bytes arrive, decoding a scope never panics, and what
        /// decodes keeps the invariants `new` gives.
        #[test]
        fn decoded_scopes_are_checked(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            if let Ok(scope) = postcard::from_bytes::<GrantScope>(&bytes) {
                prop_assert!(scope.allows(GrantKind::Devices));
                prop_assert!(scope.devices().windows(2).all(|w| w[0] < w[1]));
                prop_assert!(scope.devices().len() <= MAX_GRANT_DEVICES);
            }
        }

        #[test]
        fn scopes_round_trip(kinds in proptest::collection::vec(0usize..4, 0..6), n in 0usize..5) {
            let scope = GrantScope::new(
                kinds.into_iter().map(|i| GrantKind::ALL[i]),
                (0..n).map(|i| device(&format!("ap-{i}"))),
            ).unwrap();
            let bytes = postcard::to_stdvec(&scope).unwrap();
            prop_assert_eq!(postcard::from_bytes::<GrantScope>(&bytes).unwrap(), scope);
        }
    }
}
