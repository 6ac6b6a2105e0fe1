//! The admin actions: what an admin can ask of a running collector, and
//! its answers. The collector's HTTPS API (`/api/v1`, JSON) turns each
//! request into an [`AdminAction`], runs it through the same authorisation
//! and audit whatever the credential, and maps the [`AdminReply`] back to
//! JSON; the admin client maps the other way. These types are no longer on
//! any wire: the framed postcard admin protocol (`glimpse-admin/1`) was
//! removed with the HTTPS API (see docs/PROTOCOL.md).

use serde::{Deserialize, Serialize};

use crate::bounded::{BoundedString, BoundedVec};
use crate::identity::{DeviceId, OrgId};
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

/// A data subject: the person or device a request about stored data
/// concerns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Subject {
    /// A MAC address: interfaces in metadata, link-layer addresses in
    /// captured headers (Ethernet, 802.11, ARP).
    Mac(crate::record::MacAddr),
    /// An IPv4 or IPv6 address: interface addresses in metadata, source and
    /// destination in captured headers (and ARP).
    Ip(std::net::IpAddr),
    /// A username, wherever a record carries one.
    Username(BoundedString<128>),
}

impl std::fmt::Display for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Subject::Mac(mac) => write!(f, "mac {mac}"),
            Subject::Ip(ip) => write!(f, "ip {ip}"),
            Subject::Username(name) => write!(f, "username {}", name.as_str()),
        }
    }
}

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
    /// Let support staff read the organisation's data for a while.
    GrantSupport {
        /// The organisation.
        org: OrgId,
        /// How long, in hours.
        hours: u32,
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
    /// The device was asked for a diagnostic bundle.
    DiagnosticsRequested {
        /// The request's id, repeated in the bundle.
        id: u64,
    },
}
