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
    /// Metadata fields its devices do not collect.
    pub omitted_fields: Vec<String>,
    /// Whether MAC addresses are stored as keyed pseudonyms.
    pub pseudonymise_macs: bool,
    /// Devices connected now.
    pub connected_devices: u32,
    /// Retention in force, in days, per kind of data (`metadata`, `capture`).
    pub retention_days: BTreeMap<String, u32>,
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

/// Let support staff read the organisation's data for a while.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SupportGrantRequest {
    /// How long, in hours (1 to 720).
    pub hours: u32,
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
}

/// The data policy now in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DataPolicySet {
    /// Connected devices told at once.
    pub devices_told: u32,
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
    /// the last.
    pub next_after_seq: Option<u64>,
}

/// The audit log's hash chain checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditVerified {
    /// Entries checked, all intact and in order.
    pub entries: u64,
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
