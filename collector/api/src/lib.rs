//! The collector's HTTPS admin API as types: what each endpoint under
//! [`PREFIX`] takes and returns, and the RFC 9457 problem document every
//! error is. The service (`glimpse-collector`) serves them, the CLI and the
//! tests (`glimpse-admin-client`) send them, and both derive the OpenAPI
//! document's schemas from them, so the three cannot drift apart.
//!
//! Deliberately plain data: identifiers are strings here and validated by
//! the service (an invalid one is a `400` problem with code `bad-request`),
//! and this crate knows nothing of HTTP, TLS or the store. Every request
//! type rejects unknown fields.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Every versioned endpoint lives under this path.
pub const PREFIX: &str = "/api/v1";

/// Media type of error responses (RFC 9457).
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An error, as RFC 9457 problem details with a stable machine-readable
/// `code`. Never a stack trace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem: `urn:glimpse:problem:<code>`.
    #[serde(rename = "type")]
    pub kind: String,
    /// A short summary of the kind of problem.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong in this case, for a person.
    pub detail: String,
    /// Stable code for programs: `unauthenticated`, `forbidden`,
    /// `not-found`, `bad-request`, `conflict`, `payload-too-large`,
    /// `rate-limited`, `unavailable`, `internal`, `method-not-allowed`.
    pub code: String,
}

/// Who the caller is, as the collector sees them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Whoami {
    /// The admin's or token's name.
    pub name: String,
    /// `operator`, `org-admin` or `support`.
    pub role: String,
    /// The organisation, for org-admins and support.
    pub org: Option<String>,
    /// `certificate` or `token`.
    pub via: String,
    /// Whether only reads are allowed.
    pub read_only: bool,
    /// The sites it is limited to; empty: every site.
    #[serde(default)]
    pub sites: Vec<String>,
}

/// An organisation's decisions and what is connected now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OrgStatus {
    /// The organisation.
    pub org: String,
    /// Whether its devices may capture packet headers.
    pub capture_consent: bool,
    /// When the active support grant ends (Unix ms), if one is active.
    pub support_until_ms: Option<i64>,
    /// What the active support grant includes (`devices`, `metadata`,
    /// `captures`, `exports`); empty when none is active.
    #[serde(default)]
    pub support_kinds: Vec<String>,
    /// The devices the active support grant is limited to; empty when it
    /// covers every device (or none is active).
    #[serde(default)]
    pub support_devices: Vec<String>,
    /// The sites the active support grant is limited to; empty when it
    /// covers every site (or none is active).
    #[serde(default)]
    pub support_sites: Vec<String>,
    /// Metadata fields its devices do not collect.
    pub omitted_fields: Vec<String>,
    /// Whether MAC addresses are stored as keyed pseudonyms.
    pub pseudonymise_macs: bool,
    /// Whether Wi-Fi stations are stored with their identity, which makes
    /// a location history (off by default).
    #[serde(default)]
    pub location_history: bool,
    /// Whether captured headers are scrubbed strictly (unknown option data,
    /// AH's ICV, radiotap vendor data, IDs and reserved bits zeroed).
    #[serde(default)]
    pub strict_headers: bool,
    /// Whether gateways report WAN destinations (sessions per client and
    /// destination, with site names; off by default).
    #[serde(default)]
    pub wan_destinations: bool,
    /// Devices connected now.
    pub connected_devices: u32,
    /// Retention in force, in days, per kind of data (`metadata`, `capture`).
    pub retention_days: BTreeMap<String, u32>,
    /// The longest the organisation may choose itself, per kind of data.
    #[serde(default)]
    pub retention_max_days: BTreeMap<String, u32>,
    /// When consent last changed, Unix ms, if ever.
    #[serde(default)]
    pub consent_changed_at_ms: Option<i64>,
    /// Who changed it then (the audit log's actor), if the log says.
    #[serde(default)]
    pub consent_changed_by: Option<String>,
}

/// Give or withdraw capture consent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsentRequest {
    /// Whether the organisation's devices may capture (headers only).
    pub capture: bool,
}

/// The consent now in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ConsentSet {
    /// The consent now in force.
    pub capture: bool,
    /// Whether this request changed it.
    pub changed: bool,
    /// Connected devices told at once.
    pub devices_told: u32,
}

/// Let support staff (and operators) see the organisation's data for a
/// while: some kinds of it, on all or some devices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SupportGrantRequest {
    /// How long, in hours (1 to 720).
    pub hours: u32,
    /// What the grant includes: `devices` (devices and status, always
    /// included), `metadata`, `captures` (requesting and reading captures,
    /// with the organisation's capture consent), `exports` (data-subject
    /// exports). Absent: devices, metadata and exports, what a grant meant
    /// before grants had a scope; captures only when named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kinds: Option<Vec<String>>,
    /// Only these devices (at most 256); absent or empty: every device.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<String>,
    /// Only the devices of these sites (at most 64; with `devices`, those
    /// of them at the sites); absent or empty: every site.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sites: Vec<String>,
}

/// A support grant in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SupportGranted {
    /// When it ends (Unix ms).
    pub until_ms: i64,
}

/// A support grant ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SupportRevoked {
    /// Whether a grant was active.
    pub was_active: bool,
}

/// Which metadata fields the organisation's devices collect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DataPolicyRequest {
    /// Fields not to collect (replaces the previous list), e.g.
    /// `hostname`, `usernames`, `client-addresses`.
    #[serde(default)]
    pub omit: Vec<String>,
    /// Store MAC addresses as keyed pseudonyms.
    #[serde(default)]
    pub pseudonymise_macs: bool,
    /// Scrub captured headers strictly: every header byte that is not
    /// structure or a well-known option is zeroed, on the device and on
    /// arrival. Absent leaves the decision as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict_headers: Option<bool>,
}

/// Whether the organisation keeps a history of where its Wi-Fi stations
/// were.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LocationHistoryRequest {
    /// `true` keeps each collection's stations with their MAC, addresses,
    /// hostname, username and user agent (a location history of every
    /// person carrying a device); `false`, the default, unlinks them before
    /// storage.
    pub keep: bool,
}

/// Whether the organisation's gateways report WAN destinations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WanDestinationsRequest {
    /// `true` has gateways report their sessions per client and
    /// destination address, protocol and port, with the site names their
    /// DNS resolver gave (from connection tracking and the resolver's log,
    /// never from packets); `false`, the default, has them not collected
    /// and dropped on arrival.
    pub on: bool,
}

/// The WAN destinations choice now in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WanDestinationsSet {
    /// Whether gateways report WAN destinations from now on.
    pub on: bool,
    /// Whether this request changed it.
    pub changed: bool,
    /// Devices connected now, told at once.
    pub devices_told: u32,
}

/// The location-history choice now in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LocationHistorySet {
    /// Whether station identities are kept from now on.
    pub keep: bool,
    /// Whether this request changed it.
    pub changed: bool,
}

/// How long the organisation keeps its data, within what the service
/// offers (`retention_max_days` in the organisation's status). Replaces the
/// previous choice: a kind left out goes back to the service's retention.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetentionRequest {
    /// Days of metadata to keep (1 up to the offer).
    #[serde(default)]
    pub metadata_days: Option<u32>,
    /// Days of header-only captures to keep (1 up to the offer, at most 7).
    #[serde(default)]
    pub capture_days: Option<u32>,
}

/// The retention now in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RetentionSet {
    /// Days kept, per kind of data (`metadata`, `capture`).
    pub retention_days: BTreeMap<String, u32>,
    /// Whether this request changed the organisation's choice.
    pub changed: bool,
}

/// The data policy now in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DataPolicySet {
    /// Connected devices told at once.
    pub devices_told: u32,
    /// Whether captured headers are now scrubbed strictly.
    #[serde(default)]
    pub strict_headers: bool,
}

/// Start a header-only capture on a connected device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CaptureStartRequest {
    /// The device.
    pub device: String,
    /// Interface on the device.
    pub interface: String,
    /// BPF filter; empty for all traffic.
    #[serde(default)]
    pub filter: String,
    /// Longest the capture may run, in seconds.
    pub duration_secs: u32,
    /// Most packets it may keep.
    pub max_packets: u32,
}

/// A capture request delivered to its device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CaptureStarted {
    /// The capture's id, for status and stop.
    pub id: u64,
    /// The device.
    pub device: String,
}

/// A stop delivered to the device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CaptureStopped {
    /// The capture's id.
    pub id: u64,
}

/// What a device last reported about a capture.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CaptureStatus {
    /// The capture's id.
    pub id: u64,
    /// The device.
    pub device: String,
    /// `requested` (no report yet, or the collector restarted since),
    /// `running`, `finished` or `refused`.
    pub state: String,
    /// Packets kept, once finished.
    pub packets: Option<u64>,
    /// Header bytes kept, once finished.
    pub header_bytes: Option<u64>,
    /// Why the device refused or failed.
    pub reason: Option<String>,
}

/// The organisation's recent captures (the collector remembers the last
/// few hundred per organisation since it started).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CaptureList {
    /// Newest first.
    pub captures: Vec<CaptureStatus>,
}

/// Who a data-subject request concerns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubjectRef {
    /// `mac`, `ip` or `username`.
    pub kind: String,
    /// The MAC address, IP address or username.
    pub value: String,
}

/// Every stored record about a subject, a page at a time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubjectExportRequest {
    /// Who.
    pub subject: SubjectRef,
    /// Records already received.
    #[serde(default)]
    pub skip: u64,
}

/// A page of a subject export.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SubjectRecords {
    /// Records about the subject in all.
    pub total: u64,
    /// This page's records (the same objects as the JSON-lines export).
    #[schema(value_type = Vec<Object>)]
    pub records: Vec<serde_json::Value>,
}

/// Erase every stored record about a subject.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubjectEraseRequest {
    /// Who.
    pub subject: SubjectRef,
}

/// What an erasure removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SubjectErased {
    /// Metadata records removed or cut down.
    pub metadata: u64,
    /// Capture records removed.
    pub captures: u64,
    /// Segment files rewritten.
    pub segments_rewritten: u64,
}

/// Correct one of a subject's values in every stored record about them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubjectCorrectRequest {
    /// Who.
    pub subject: SubjectRef,
    /// Which value: `username` or `hostname`.
    pub field: String,
    /// The right value, at most 255 bytes; empty for none.
    pub value: String,
}

/// What a correction replaced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SubjectCorrected {
    /// Metadata records in which a value was replaced.
    pub records: u64,
    /// Values replaced (a report can hold the subject's several times).
    pub values: u64,
    /// Segment files rewritten.
    pub segments_rewritten: u64,
}

/// Block or unblock a subject.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubjectBlockRequest {
    /// Who.
    pub subject: SubjectRef,
}

/// A subject's block, as it is now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BlockChanged {
    /// Whether the subject is blocked now.
    pub blocked: bool,
    /// Whether this request changed it.
    pub changed: bool,
    /// Subjects the organisation has blocked now (at most 1000).
    pub blocked_subjects: u32,
    /// Connected devices told the new list at once.
    pub devices_told: u32,
}

/// The organisation's blocked subjects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BlockedSubjectList {
    /// In the order they were blocked.
    pub subjects: Vec<SubjectRef>,
}

/// One audit log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditEntry {
    /// Position in the log, from 1.
    pub seq: u64,
    /// When (collector clock, Unix ms).
    pub at_ms: i64,
    /// Who acted.
    pub actor: String,
    /// What, e.g. `consent.set`.
    pub action: String,
    /// The organisation concerned.
    pub org: Option<String>,
    /// Whether it was refused.
    pub refused: bool,
    /// The values set, or why it was refused.
    pub detail: String,
}

/// A page of the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditPage {
    /// Oldest first.
    pub entries: Vec<AuditEntry>,
    /// Pass as `after_seq` for the next page; absent when this one was
    /// the last (oldest-first pages).
    pub next_after_seq: Option<u64>,
    /// Pass as `before_seq` for the next, older page; absent when this one
    /// was the last (`newest_first` pages).
    #[serde(default)]
    pub next_before_seq: Option<u64>,
}

/// The audit log's hash chain checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditVerified {
    /// Entries checked, all intact and in order.
    pub entries: u64,
}

/// The master key rotated: every key wrapped under it is rewrapped under a
/// new one, which is now in the collector's master key file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MasterKeyRotated {
    /// Organisation data keys rewrapped (the keys themselves, and so every
    /// segment, are unchanged).
    pub org_keys: u64,
    /// Device shared keys rewrapped.
    pub device_keys: u64,
    /// Other rows rewritten: the key check, the audit key, sealed console
    /// TOTP keys.
    pub other_rows: u64,
    /// The master key file, now holding the new key: back it up.
    pub key_file: String,
}

/// An organisation's data key rotated: new segments are sealed under the
/// new version; older ones stay readable and are re-encrypted in the
/// background, after which the old version is retired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DataKeyRotated {
    /// The new current version.
    pub version: u32,
    /// The version it replaced, now retiring.
    pub previous: u32,
}

/// One version of an organisation's data key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DataKeyVersion {
    /// The version (1 for the organisation's first key).
    pub version: u32,
    /// `current` (new segments are sealed under it), `retiring` (still
    /// read; its segments are being re-encrypted) or `retired` (no segment
    /// is under it; its key is destroyed).
    pub state: String,
    /// Segments sealed under it now.
    pub segments: u64,
}

/// An organisation's data key versions, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DataKeyStatus {
    /// The organisation.
    pub org: String,
    /// The current version (0: the organisation has no data key yet).
    pub current: u32,
    /// Every version, retired ones included.
    pub versions: Vec<DataKeyVersion>,
}

/// Delete an organisation's data and destroy its key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeleteOrgRequest {
    /// The organisation's name again, as a guard against slips.
    pub confirm: String,
}

/// What deleting an organisation removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OrgDeleted {
    /// Whether it had a key to destroy.
    pub key_destroyed: bool,
    /// Segment files deleted.
    pub segments_deleted: u64,
}

/// A device, as far as the collector knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DeviceSummary {
    /// The device.
    pub device: String,
    /// Whether it is connected now.
    pub connected: bool,
    /// The site of the organisation it belongs to, from its registration;
    /// `null` for a device of no site.
    #[serde(default)]
    pub site: Option<String>,
}

/// An organisation's devices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DeviceList {
    /// Sorted by id.
    pub devices: Vec<DeviceSummary>,
}

/// Create an API token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenCreateRequest {
    /// What it is for, e.g. `grafana` (letters, digits, `-`, `_`, `.`).
    pub name: String,
    /// `operator`, `org-admin` or `support`; at most the creator's own.
    pub role: String,
    /// The organisation (required unless the role is `operator`).
    #[serde(default)]
    pub org: Option<String>,
    /// Only reads allowed.
    #[serde(default)]
    pub read_only: bool,
    /// Days until it expires (1 to 366; default 90).
    #[serde(default)]
    pub expires_in_days: Option<u32>,
    /// Limit an org-admin or support token to these sites of its
    /// organisation: it sees and acts on their devices only, and on
    /// nothing that concerns the whole organisation. Default: every site.
    #[serde(default)]
    pub sites: Vec<String>,
}

/// An API token, without its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TokenInfo {
    /// Its id (also the token's public prefix).
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its role.
    pub role: String,
    /// Its organisation.
    pub org: Option<String>,
    /// Whether only reads are allowed.
    pub read_only: bool,
    /// Who created it.
    pub created_by: String,
    /// When (Unix ms).
    pub created_ms: i64,
    /// When it stops working (Unix ms).
    pub expires_ms: i64,
    /// When it was last used (Unix ms).
    pub last_used_ms: Option<i64>,
    /// When it was revoked (Unix ms).
    pub revoked_ms: Option<i64>,
    /// The sites of its organisation it is limited to; empty: every site.
    #[serde(default)]
    pub sites: Vec<String>,
}

/// A token just created: the secret is shown this once and stored only as
/// a hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TokenCreated {
    /// Send as `Authorization: Bearer <token>`.
    pub token: String,
    /// What it allows.
    pub info: TokenInfo,
}

/// API tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TokenList {
    /// Newest first.
    pub tokens: Vec<TokenInfo>,
}

/// A token revoked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TokenRevoked {
    /// Whether it was still valid.
    pub was_active: bool,
    /// Live connections that used it, closed at once.
    pub connections_closed: u32,
}

/// Query of the audit log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Only this organisation's entries (everything, operators only, when
    /// absent).
    pub org: Option<String>,
    /// Entries after this sequence number.
    #[serde(default)]
    pub after_seq: u64,
    /// Entries before this sequence number (to page back with
    /// `newest_first`).
    pub before_seq: Option<u64>,
    /// Entries whose actor contains this text, case-insensitive (a name,
    /// `support of`, `console:`, a session or token id).
    pub actor: Option<String>,
    /// Entries of this action or its sub-actions: `support` finds
    /// `support.grant` and `support.revoke`.
    pub action: Option<String>,
    /// Entries at or after this time (Unix ms).
    pub from_ms: Option<i64>,
    /// Entries before this time (Unix ms).
    pub to_ms: Option<i64>,
    /// `done` or `refused`.
    pub outcome: Option<String>,
    /// The newest matching entries, newest first (default: oldest first).
    #[serde(default)]
    pub newest_first: bool,
    /// At most this many entries (1 to 200, the default).
    pub limit: Option<u32>,
}

/// The query of `GET /api/v1/orgs/{org}/export`: which records, in which
/// format, from where. Every field is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ExportParams {
    /// `metadata` (default) or `capture`.
    pub kind: Option<String>,
    /// Only records received at or after this time (RFC 3339 or YYYY-MM-DD, UTC).
    pub since: Option<String>,
    /// Only records received before this time (RFC 3339 or YYYY-MM-DD, UTC).
    pub until: Option<String>,
    /// Only these devices, comma-separated (at most 256).
    pub device: Option<String>,
    /// Captures only: a filter over the stored headers, e.g. `udp and dst port 53`.
    pub filter: Option<String>,
    /// `jsonl` (default, any kind) or `pcapng` (captures only).
    pub format: Option<String>,
    /// Continue right after the record this cursor names (a JSON line's
    /// `cursor`, or `cursor=` in a packet's comment).
    pub cursor: Option<String>,
}

/// The answer of `GET /healthz` (alive) and `GET /readyz` (ready to take
/// data), with status 200 when `ready`, 503 otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Health {
    /// Nothing is wrong.
    pub ready: bool,
    /// What is wrong, one sentence each; empty when ready.
    pub problems: Vec<String>,
}

/// What support staff did under each of an organisation's support grants,
/// read from the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SupportActivity {
    /// The organisation.
    pub org: String,
    /// Its grants, newest first (at most 50).
    pub grants: Vec<SupportGrantActivity>,
    /// Requests by support staff that were refused while no grant was
    /// active, newest first (at most 50).
    pub refused_outside_grants: Vec<AuditEntry>,
    /// The collector's time of this answer (Unix ms), so a countdown
    /// runs on the collector's clock rather than the browser's.
    pub now_ms: i64,
}

/// One support grant and what was done under it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SupportGrantActivity {
    /// The audit entry that granted it.
    pub granted_seq: u64,
    /// When it was granted (Unix ms).
    pub granted_at_ms: i64,
    /// Who granted it.
    pub granted_by: String,
    /// How many hours it was granted for.
    pub hours: u32,
    /// What it included, as its audit entry says (`devices, metadata,
    /// exports on all devices`); absent for a grant given before grants
    /// had a scope, which included devices, metadata and exports.
    #[serde(default)]
    pub scope: Option<String>,
    /// When it runs out, or ran out (Unix ms).
    pub until_ms: i64,
    /// When it was ended early: revoked, or replaced by a newer grant.
    pub ended_at_ms: Option<i64>,
    /// Who ended it early.
    pub ended_by: Option<String>,
    /// Whether it is in force now.
    pub active: bool,
    /// What support staff did under it, oldest first (at most 200).
    pub actions: Vec<AuditEntry>,
    /// Actions under it beyond the 200 listed.
    pub more_actions: u64,
}

/// The time range and resolution of a device's interface rates.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RatesQuery {
    /// Start, Unix ms UTC (default: an hour before `to_ms`).
    pub from_ms: Option<i64>,
    /// End, Unix ms UTC (default: now).
    pub to_ms: Option<i64>,
    /// How many equal buckets to divide the range into (1..=500, default 60).
    pub buckets: Option<u32>,
}

/// A device's interface rates over time, bucketed by the collector from
/// the interval counter records it stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DeviceRates {
    /// The organisation.
    pub org: String,
    /// The device.
    pub device: String,
    /// Start of the range, Unix ms UTC.
    pub from_ms: i64,
    /// End of the range (exclusive), Unix ms UTC.
    pub to_ms: i64,
    /// Length of each bucket, ms.
    pub bucket_ms: i64,
    /// Start of each bucket, Unix ms UTC; every series has one value per
    /// bucket.
    pub bucket_starts_ms: Vec<i64>,
    /// Counter records that fell in the range.
    pub reports: u64,
    /// Whether the scan stopped at its bound before the end of the range.
    pub truncated: bool,
    /// One entry per interface, sorted by name (at most 256).
    pub interfaces: Vec<InterfaceRates>,
}

/// One interface's rates, one value per bucket; `null` where no counter
/// record covered the bucket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct InterfaceRates {
    /// Interface name.
    pub name: String,
    /// Transmit rate, bits per second.
    pub tx_bps: Vec<Option<f64>>,
    /// Receive rate, bits per second.
    pub rx_bps: Vec<Option<f64>>,
    /// Transmit errors per second.
    pub tx_errors_per_sec: Vec<Option<f64>>,
    /// Receive errors per second.
    pub rx_errors_per_sec: Vec<Option<f64>>,
    /// Transmitted packets dropped per second.
    pub tx_drops_per_sec: Vec<Option<f64>>,
    /// Received packets dropped per second.
    pub rx_drops_per_sec: Vec<Option<f64>>,
}

/// The newest stored report of each kind a device sends about its
/// network: Wi-Fi (radios, stations, roams), wired (VLANs, hosts, LLDP
/// neighbours) and WAN (sessions per application). A kind the device never
/// sent (or not within the metadata retention) is `null`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DeviceLatest {
    /// The organisation.
    pub org: String,
    /// The device.
    pub device: String,
    /// The newest Wi-Fi report.
    pub wireless: Option<LatestReport>,
    /// The newest wired report.
    pub wired: Option<LatestReport>,
    /// The newest WAN report.
    pub wan: Option<LatestReport>,
    /// The newest report of what its Wi-Fi clients' devices are (type,
    /// model, OS, vendor, confidence). Absent from collectors before it.
    #[serde(default)]
    pub client_devices: Option<LatestReport>,
}

/// One stored report with its times.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LatestReport {
    /// When the device observed it, Unix ms (device clock).
    pub observed_at_ms: i64,
    /// When the collector stored it, Unix ms.
    pub received_at_ms: i64,
    /// The report, with the field names of the JSON-lines export
    /// (docs/FIELDS.md).
    #[schema(value_type = Object)]
    pub report: serde_json::Value,
}

/// Which page of a capture's packets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PacketsQuery {
    /// Packets to skip (default 0).
    pub offset: Option<u64>,
    /// Packets to return (1..=1000, default 200).
    pub limit: Option<u32>,
}

/// A page of a stored capture's packets, decoded from the kept headers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PacketList {
    /// The capture's id.
    pub id: u64,
    /// The device.
    pub device: String,
    /// The interface it captured on.
    pub interface: String,
    /// Received-time window the packets were taken from, Unix ms.
    pub from_ms: i64,
    /// End of that window (exclusive), Unix ms.
    pub to_ms: i64,
    /// Packets skipped.
    pub offset: u64,
    /// Matching packets in total (up to the scan bound).
    pub total: u64,
    /// This page.
    pub packets: Vec<PacketSummaryView>,
}

/// One stored packet, headers only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PacketSummaryView {
    /// When it was captured, Unix microseconds (device clock).
    pub timestamp_us: i64,
    /// Source MAC address.
    pub src_mac: Option<String>,
    /// Destination MAC address.
    pub dst_mac: Option<String>,
    /// Outer VLAN id.
    pub vlan: Option<u16>,
    /// Innermost EtherType, e.g. 2048 for IPv4.
    pub ethertype: Option<u16>,
    /// Source address.
    pub src_ip: Option<String>,
    /// Destination address.
    pub dst_ip: Option<String>,
    /// IP protocol number.
    pub ip_protocol: Option<u8>,
    /// Its name: `tcp`, `udp`, `icmp`, `icmpv6`, `arp` or the number.
    pub protocol: String,
    /// Source port.
    pub src_port: Option<u16>,
    /// Destination port.
    pub dst_port: Option<u16>,
    /// TCP flag bits.
    pub tcp_flags: Option<u16>,
    /// TCP flags as letters (`SYN,ACK`).
    pub tcp_flag_names: Option<String>,
    /// Bytes kept (the headers).
    pub captured_len: u32,
    /// Bytes on the wire.
    pub original_len: u32,
    /// Always `true`: the collector stores headers only.
    pub headers_only: bool,
}

/// Every organisation the collector knows, for operators.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OrgList {
    /// Sorted by name.
    pub orgs: Vec<OrgSummary>,
}

/// One organisation at a glance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OrgSummary {
    /// The organisation.
    pub org: String,
    /// Registered devices.
    pub registered_devices: u32,
    /// Connected devices per kind (`access-point`, `switch`, `gateway`, ...).
    pub connected_by_kind: BTreeMap<String, u32>,
    /// Records received since the collector started, all devices.
    pub records_received: u64,
    /// Bytes in its segment files, per kind of data.
    pub stored_bytes: BTreeMap<String, u64>,
    /// Segment files, per kind of data.
    pub stored_segments: BTreeMap<String, u64>,
    /// Whether its devices may capture packet headers.
    pub capture_consent: bool,
    /// Who last changed the consent (the audit log's actor), if known.
    pub consent_changed_by: Option<String>,
    /// When consent last changed, Unix ms.
    pub consent_changed_at_ms: Option<i64>,
    /// When the active support grant ends, Unix ms.
    pub support_until_ms: Option<i64>,
    /// Retention in force, days, per kind of data.
    pub retention_days: BTreeMap<String, u32>,
}

/// The collector at a glance, for operators.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Overview {
    /// When this was computed, Unix ms.
    pub at_ms: i64,
    /// Bytes in segment files per organisation, largest first.
    pub store: Vec<StoreSize>,
    /// Bytes in segment files in total.
    pub store_bytes: u64,
    /// What was stored over the last minute.
    pub ingest: IngestRate,
    /// Certificates that end within `warning_days` (or have ended).
    pub certificate_warnings: Vec<CertificateWarning>,
    /// The warning horizon, days.
    pub warning_days: u32,
    /// The collector's own certificate (served to devices and admins) and
    /// the CA it trusts, with their expiry, whether or not they end soon.
    pub collector_certificates: Vec<CertificateWarning>,
}

/// One organisation's share of the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StoreSize {
    /// The organisation.
    pub org: String,
    /// Bytes of metadata segments.
    pub metadata_bytes: u64,
    /// Bytes of capture segments.
    pub capture_bytes: u64,
    /// Both.
    pub bytes: u64,
    /// Segment files.
    pub segments: u64,
}

/// Records and bytes the collector stored over a recent window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct IngestRate {
    /// The window, ms (60,000).
    pub window_ms: i64,
    /// Records stored in the window.
    pub records: u64,
    /// Their encoded size, bytes.
    pub bytes: u64,
    /// Records per second over the window.
    pub records_per_sec: f64,
    /// Bytes per second over the window.
    pub bytes_per_sec: f64,
    /// Records stored since the collector started (the `/metrics` counter).
    pub records_since_start: Option<u64>,
}

/// A certificate that ends soon or has ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CertificateWarning {
    /// `collector` (the collector's own), `ca`, `admin` or `device`.
    pub kind: String,
    /// Who it names (`alice (operator)`, `acme/ap-1`).
    pub subject: String,
    /// Its organisation, if any.
    pub org: Option<String>,
    /// Its serial, hex, when known.
    pub serial: Option<String>,
    /// When it ends, Unix ms.
    pub not_after_ms: i64,
    /// Whole days left (negative: ended).
    pub days_left: i64,
}

/// A web console account, without its password hash or TOTP key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AccountInfo {
    /// Sign-in name.
    pub name: String,
    /// `operator`, `org-admin` or `support`.
    pub role: String,
    /// Its organisation (none for operators).
    pub org: Option<String>,
    /// Who created it.
    pub created_by: String,
    /// When (Unix ms).
    pub created_ms: i64,
    /// Last successful sign-in (Unix ms).
    pub last_sign_in_ms: Option<i64>,
    /// Locked after failed sign-ins until then (Unix ms).
    pub locked_until_ms: Option<i64>,
    /// Failed sign-ins since the last success.
    pub failed_sign_ins: u32,
    /// Whether sign-in needs a one-time code (TOTP).
    pub totp: bool,
    /// Whether sign-in is refused.
    pub disabled: bool,
    /// The sites of its organisation it is limited to; empty: every site.
    #[serde(default)]
    pub sites: Vec<String>,
}

/// Console accounts: all of them for operators, the organisation's for
/// its admins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AccountList {
    /// By name.
    pub accounts: Vec<AccountInfo>,
}

/// A new console account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccountCreateRequest {
    /// Sign-in name (letters, digits, `.`, `-`, `_`, `@`).
    pub name: String,
    /// `operator`, `org-admin` or `support`; an org-admin creates only
    /// org-admin and support accounts of their own organisation.
    pub role: String,
    /// The organisation (required unless the role is `operator`).
    #[serde(default)]
    pub org: Option<String>,
    /// Its first password (12 characters to 1,024 bytes).
    pub password: String,
    /// Limit an org-admin or support account to these sites of its
    /// organisation, as a token can be. Default: every site.
    #[serde(default)]
    pub sites: Vec<String>,
}

/// Changes to a console account; absent fields stay as they are. Every
/// change ends the account's sessions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccountUpdateRequest {
    /// A new role; `org` then gives its organisation (absent: none, as
    /// for an operator).
    #[serde(default)]
    pub role: Option<String>,
    /// A new organisation (with or without `role`).
    #[serde(default)]
    pub org: Option<String>,
    /// A new password.
    #[serde(default)]
    pub password: Option<String>,
    /// Refuse (`true`) or allow (`false`) sign-in.
    #[serde(default)]
    pub disabled: Option<bool>,
    /// Turn the account's one-time codes off (the user sets them up again).
    #[serde(default)]
    pub reset_totp: bool,
    /// Clear its failed sign-ins and lockout.
    #[serde(default)]
    pub unlock: bool,
}

/// A console account changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AccountChanged {
    /// The account now.
    pub account: AccountInfo,
    /// Its sessions that were ended.
    pub sessions_ended: u32,
}

/// A console account deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AccountDeleted {
    /// Its name.
    pub name: String,
    /// Its sessions that were ended.
    pub sessions_ended: u32,
}

/// A device was asked for a diagnostic bundle; it arrives as a stored
/// record (see `GET .../diagnostics`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DiagnosticsRequested {
    /// The request's id, repeated in the bundle as `request_id`.
    pub id: u64,
}

/// Query of `GET /api/v1/orgs/{org}/devices/{device}/diagnostics`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DiagnosticsQuery {
    /// Only the bundle answering this request.
    pub request_id: Option<u64>,
}

/// A device's stored diagnostic bundles, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DiagnosticsList {
    /// The organisation.
    pub org: String,
    /// The device.
    pub device: String,
    /// The bundles of the last 60 days (at most 10), newest first.
    pub bundles: Vec<StoredDiagnostics>,
}

/// One stored diagnostic bundle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StoredDiagnostics {
    /// When the collector stored it (Unix ms).
    pub received_at_ms: i64,
    /// The bundle, as `glimpse-collector export` prints a `diagnostics`
    /// record's body (see docs/FIELDS.md).
    #[schema(value_type = Object)]
    pub bundle: serde_json::Value,
}
