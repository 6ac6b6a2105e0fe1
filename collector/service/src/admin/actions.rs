//! What admins may do, and doing it: authorisation by role and
//! organisation, the actions themselves, and an audit entry for every
//! request, allowed or refused. No sockets here; the server feeds it
//! authenticated requests.

use std::sync::Arc;

use tracing::error;

use glimpse_common::bounded::{BoundedString, BoundedVec};
use glimpse_common::identity::{AdminIdentity, AdminRole, OrgId};
use glimpse_common::wire::admin::{
    AdminAction, AdminReply, AuditRecord, MAX_AUDIT_PAGE, MAX_SUBJECT_PAGE, MAX_SUBJECT_PAGE_BYTES,
};
use glimpse_common::wire::{CaptureRequest, ControlMessage};

use crate::ingest::{AgentDirectory, OrgDirectives};
use glimpse_store::audit::{AuditError, AuditOutcome};
use glimpse_store::store::Store;

/// How much an action needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Reading: operators, the organisation's admins, and support staff
    /// during an active grant.
    Read,
    /// Changing something: operators and the organisation's admins.
    Write,
    /// Across organisations: operators only.
    Operator,
}

/// Whether `admin` may act with `access` on `org` at `now_ms`, given
/// whether the organisation's support grant is active; the error says why
/// not.
pub fn authorize(
    admin: &AdminIdentity,
    access: Access,
    org: Option<&OrgId>,
    support_active: bool,
) -> Result<(), String> {
    let own = |org: Option<&OrgId>| org.is_some() && admin.org.as_ref() == org;
    match admin.role {
        AdminRole::Operator => Ok(()),
        _ if access == Access::Operator => Err(format!("only operators may do this; {} is {}", admin.name, admin.role)),
        AdminRole::OrgAdmin if own(org) => Ok(()),
        AdminRole::OrgAdmin => Err(format!(
            "org-admin {} of {} may not act on organisation {}",
            admin.name,
            admin.org.as_ref().map_or("?", OrgId::as_str),
            org.map_or("(all)", OrgId::as_str),
        )),
        AdminRole::Support if !own(org) => Err(format!(
            "support {} works for {} only, not {}",
            admin.name,
            admin.org.as_ref().map_or("?", OrgId::as_str),
            org.map_or("(all)", OrgId::as_str),
        )),
        AdminRole::Support if access != Access::Read => Err("support staff have read-only access".to_owned()),
        AdminRole::Support if support_active => Ok(()),
        AdminRole::Support => Err(format!(
            "support staff may read {} only under a grant from the organisation, and none is active",
            org.map_or("?", OrgId::as_str)
        )),
    }
}

/// Why an action was not done, by kind, so that the HTTPS API can answer
/// with the right status and a stable problem code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    /// The caller may not do this (role, organisation, grant, read-only).
    Forbidden,
    /// The request itself is wrong (a zero duration, a mismatched
    /// confirmation, an unknown field name).
    Invalid,
    /// The state does not allow it now (no consent, device not connected,
    /// a tampered audit log).
    Conflict,
    /// The store could not do it now; trying again later may work.
    Unavailable,
}

/// An action refused: its kind and the reason, for the caller and the
/// audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// What kind of refusal.
    pub kind: RefusalKind,
    /// Why, in words.
    pub reason: String,
}

fn refusal(kind: RefusalKind, reason: impl Into<String>) -> Refusal {
    Refusal { kind, reason: reason.into() }
}

/// Who is acting: an admin identity (from a client certificate or an API
/// token) and whether it may only read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// Role, name and organisation.
    pub identity: AdminIdentity,
    /// How it authenticated, as the audit log names it.
    pub via: ActorVia,
    /// Only reads allowed (read-only API tokens).
    pub read_only: bool,
}

/// How an actor authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActorVia {
    /// An admin client certificate with this serial (hex).
    Certificate {
        /// The certificate's serial number, hex.
        serial: String,
    },
    /// An API token with this id.
    Token {
        /// The token's public id.
        id: String,
    },
    /// A web console session (signed in with an account's password or a
    /// browser certificate).
    Session {
        /// The session's public id.
        id: String,
        /// The console account, or `certificate:<serial>`.
        account: String,
    },
}

impl Actor {
    /// An admin authenticated by a client certificate.
    pub fn certificate(identity: AdminIdentity, serial: String) -> Self {
        Actor { identity, via: ActorVia::Certificate { serial }, read_only: false }
    }

    /// How the audit log names this actor.
    pub fn audit_name(&self) -> String {
        match &self.via {
            ActorVia::Certificate { .. } => actor_name(&self.identity),
            ActorVia::Session { id, .. } => {
                let admin = &self.identity;
                match &admin.org {
                    Some(org) => format!("console:{} ({} of {org}, session {id})", admin.name, admin.role),
                    None => format!("console:{} ({}, session {id})", admin.name, admin.role),
                }
            }
            ActorVia::Token { id } => {
                let admin = &self.identity;
                let ro = if self.read_only { ", read-only" } else { "" };
                match &admin.org {
                    Some(org) => format!("token:{} ({} of {org}{ro}, id {id})", admin.name, admin.role),
                    None => format!("token:{} ({}{ro}, id {id})", admin.name, admin.role),
                }
            }
        }
    }
}

/// Whether an action changes something (read-only tokens may not).
fn changes(action: &AdminAction) -> bool {
    !matches!(
        action,
        AdminAction::ConnectedDevices { .. }
            | AdminAction::CaptureStatus { .. }
            | AdminAction::OrgStatus { .. }
            | AdminAction::VerifyAudit
            | AdminAction::ShowAudit { .. }
            | AdminAction::ExportSubject { .. }
            | AdminAction::BlockedSubjects { .. }
    )
}

/// How an admin is named in the audit log.
pub fn actor_name(admin: &AdminIdentity) -> String {
    match &admin.org {
        Some(org) => format!("admin:{} ({} of {org})", admin.name, admin.role),
        None => format!("admin:{} ({})", admin.name, admin.role),
    }
}

/// The audit name, organisation and access an action needs.
fn describe(action: &AdminAction) -> (&'static str, Option<&OrgId>, Access) {
    match action {
        AdminAction::StartCapture { org, .. } => ("capture.start", Some(org), Access::Write),
        AdminAction::StopCapture { org, .. } => ("capture.stop", Some(org), Access::Write),
        AdminAction::ConnectedDevices { org } => ("devices.list", Some(org), Access::Read),
        AdminAction::CaptureStatus { org, .. } => ("capture.status", Some(org), Access::Read),
        AdminAction::SetConsent { org, .. } => ("consent.set", Some(org), Access::Write),
        AdminAction::GrantSupport { org, .. } => ("support.grant", Some(org), Access::Write),
        AdminAction::RevokeSupport { org } => ("support.revoke", Some(org), Access::Write),
        AdminAction::OrgStatus { org } => ("org.status", Some(org), Access::Read),
        AdminAction::VerifyAudit => ("audit.verify", None, Access::Operator),
        AdminAction::ShowAudit { org: Some(org), .. } => ("audit.show", Some(org), Access::Read),
        AdminAction::ShowAudit { org: None, .. } => ("audit.show", None, Access::Operator),
        AdminAction::ExportSubject { org, .. } => ("subject.export", Some(org), Access::Read),
        AdminAction::EraseSubject { org, .. } => ("subject.erase", Some(org), Access::Write),
        AdminAction::CorrectSubject { org, .. } => ("subject.correct", Some(org), Access::Write),
        AdminAction::BlockSubject { org, .. } => ("subject.block", Some(org), Access::Write),
        AdminAction::UnblockSubject { org, .. } => ("subject.unblock", Some(org), Access::Write),
        AdminAction::BlockedSubjects { org } => ("subject.blocked", Some(org), Access::Read),
        AdminAction::DeleteOrg { org, .. } => ("org.delete", Some(org), Access::Write),
        AdminAction::SetDataPolicy { org, .. } => ("data-policy.set", Some(org), Access::Write),
        AdminAction::SetLocationHistory { org, .. } => ("location-history.set", Some(org), Access::Write),
        AdminAction::SetRetention { org, .. } => ("retention.set", Some(org), Access::Write),
        _ => ("unknown", None, Access::Operator),
    }
}

/// Everything admin actions touch.
#[derive(Debug, Clone)]
pub struct AdminContext {
    /// The store, with the organisations' decisions and the audit log.
    pub store: Arc<Store>,
    /// Connected devices.
    pub directory: Arc<AgentDirectory>,
    /// Incident alerts: consent changes and support access are raised here.
    pub alerts: crate::alerts::Alerts,
}

/// What `perform` gives: the reply and the audit detail, or a refusal and
/// the audit detail.
type Performed = Result<(AdminReply, String), (Refusal, String)>;

fn refused(kind: RefusalKind, reason: impl Into<String>) -> Performed {
    Err((refusal(kind, reason), String::new()))
}

impl AdminContext {
    fn now(&self) -> i64 {
        self.store.clock().now_millis()
    }

    /// An organisation's own retention choice, each day count checked
    /// against what the operator lets it choose.
    fn set_retention(&self, org: &OrgId, metadata_days: Option<u32>, capture_days: Option<u32>) -> Performed {
        use glimpse_common::record::DataKind;
        let configured = self.store.retention();
        let mut choice = std::collections::BTreeMap::new();
        for (kind, days) in [(DataKind::Metadata, metadata_days), (DataKind::Capture, capture_days)] {
            let Some(days) = days else { continue };
            let max = configured.choice_max(org, kind);
            if !(glimpse_store::retention::MIN_RETENTION_DAYS..=max).contains(&days) {
                return refused(
                    RefusalKind::Invalid,
                    format!("{kind} retention of {days} days is outside what this service offers, 1..={max} days"),
                );
            }
            choice.insert(kind, days);
        }
        let (before, changed) = match self.store.policies().set_retention(org, &choice) {
            Ok(done) => done,
            Err(e) => return refused(RefusalKind::Unavailable, format!("retention not changed: {e}")),
        };
        let describe = |kind: DataKind, chosen: Option<&u32>| match chosen {
            Some(days) => format!("{kind} {days} days"),
            None => format!("{kind} {} days (the service's)", configured.days(org, kind)),
        };
        let detail = DataKind::ALL
            .iter()
            .map(|kind| {
                let (was, now) = (describe(*kind, before.get(kind)), describe(*kind, choice.get(kind)));
                if was == now {
                    now
                } else {
                    format!("{was} -> {now}")
                }
            })
            .collect::<Vec<_>>()
            .join(", ");
        Ok((
            AdminReply::RetentionSet {
                metadata_days: self.store.retention_days(org, DataKind::Metadata),
                capture_days: self.store.retention_days(org, DataKind::Capture),
                changed,
            },
            if changed { detail } else { format!("{detail} (unchanged)") },
        ))
    }

    /// Blocks or unblocks a subject and tells the organisation's connected
    /// devices the new list.
    fn set_blocked(&self, org: &OrgId, subject: &glimpse_common::wire::admin::Subject, block: bool) -> Performed {
        // Named by a keyed tag, as an erase is: the audit log outlives an
        // unblock and an erase, and must not keep who it was.
        let tag = self.store.audit().subject_tag(&subject.to_string());
        let (changed, list) = match self.store.policies().set_blocked(org, subject, block) {
            Ok(done) => done,
            Err(e @ glimpse_store::control::PolicyError::BlockListFull(_)) => {
                return Err((refusal(RefusalKind::Conflict, e.to_string()), tag))
            }
            Err(e) => return Err((refusal(RefusalKind::Unavailable, format!("block list not changed: {e}")), tag)),
        };
        let told = self.directory.publish(org, OrgDirectives::of(&self.store.policies().get(org)));
        let detail = format!(
            "{tag} {}{}, {} subjects blocked, {told} connected devices told",
            if block { "blocked" } else { "unblocked" },
            if changed { "" } else { " (unchanged)" },
            list.len()
        );
        let reply = AdminReply::BlockChanged {
            blocked: block,
            changed,
            blocked_subjects: u32::try_from(list.len()).unwrap_or(u32::MAX),
            devices_told: u32::try_from(told).unwrap_or(u32::MAX),
        };
        Ok((reply, detail))
    }

    /// Replaces one of a subject's values in every stored record about them.
    fn correct_subject(
        &self,
        org: &OrgId,
        subject: &glimpse_common::wire::admin::Subject,
        field: glimpse_common::wire::admin::CorrectableField,
        value: &str,
    ) -> Performed {
        let tag = self.store.audit().subject_tag(&subject.to_string());
        if value.chars().any(char::is_control) {
            return Err((refusal(RefusalKind::Invalid, "the corrected value holds control characters"), tag));
        }
        match glimpse_store::subject::correct_subject(&self.store, org, subject, field, value) {
            // The audit log keeps neither the subject nor either value: the
            // old one is what was wrong, the new one is as personal.
            Ok(done) => Ok((
                AdminReply::SubjectCorrected {
                    records: done.records,
                    values: done.values,
                    segments_rewritten: done.segments_rewritten,
                },
                format!(
                    "{tag}: {field} corrected, {} values in {} metadata records, {} segments rewritten",
                    done.values, done.records, done.segments_rewritten
                ),
            )),
            Err(e) => Err((refusal(RefusalKind::Unavailable, format!("correction failed: {e}")), tag)),
        }
    }

    /// Appends to the audit log; a failure is logged loudly, since the
    /// action itself has already happened.
    pub fn audit(&self, actor: &str, action: &str, org: Option<&OrgId>, outcome: AuditOutcome, detail: &str) {
        if let Err(e) = self.store.audit().append(self.now(), actor, action, org.map(OrgId::as_str), outcome, detail) {
            error!(actor, action, "audit log append failed: {e}");
        }
    }

    /// Authorises, acts, and audits one request of an admin certificate
    /// holder; a refusal is [`AdminReply::Refused`].
    pub fn act(&self, admin: &AdminIdentity, action: AdminAction) -> AdminReply {
        let actor =
            Actor { identity: admin.clone(), via: ActorVia::Certificate { serial: String::new() }, read_only: false };
        match self.execute(&actor, action) {
            Ok(reply) => reply,
            Err(refusal) => AdminReply::Refused(BoundedString::truncating(&refusal.reason)),
        }
    }

    /// Whether `actor` may do `action` (its audit name) on `org` with
    /// `access`; a refusal is audited. For the API's own actions (tokens,
    /// identities, export) that are not an [`AdminAction`]; `writes` says
    /// whether it changes something (read-only tokens may not).
    ///
    /// What support staff are allowed is audited too, reads included: an
    /// organisation sees everything support did under its grant (the
    /// support-activity endpoint files these entries per grant).
    pub fn permit(
        &self,
        actor: &Actor,
        action: &str,
        org: Option<&OrgId>,
        access: Access,
        writes: bool,
    ) -> Result<(), Refusal> {
        self.authorise(actor, action, org, access, writes)?;
        if actor.identity.role == AdminRole::Support {
            self.audit(&actor.audit_name(), action, org, AuditOutcome::Done, "allowed under the support grant");
            self.support_used(actor, action, org);
        }
        Ok(())
    }

    /// Raises the alert that support staff used a grant (one per support
    /// admin and organisation per `repeat_after_secs`, by its key).
    fn support_used(&self, actor: &Actor, action: &str, org: Option<&OrgId>) {
        let Some(org) = org else { return };
        let name = actor.identity.name.as_str();
        let summary = format!("support staff {name} used the support grant of {org} ({action})");
        let alert = crate::alerts::Alert::new(
            crate::alerts::AlertKind::SupportAccess,
            crate::alerts::Severity::Notice,
            &summary,
            self.now(),
        );
        self.alerts.raise(alert.org(org.as_str()).subject(&format!("support:{name}")));
    }

    /// Raises the alert for a change of an organisation's decisions that
    /// `reply` reports, made by `actor`.
    fn decision_changed(&self, actor: &str, org: Option<&OrgId>, reply: &AdminReply) {
        let Some(org) = org else { return };
        let (subject, summary) = match reply {
            AdminReply::ConsentSet { capture, changed: true, .. } => {
                let state = if *capture { "on" } else { "off" };
                (format!("capture:{state}"), format!("capture consent of {org} turned {state} by {actor}"))
            }
            AdminReply::SupportGranted { until_ms } => (
                "support:granted".to_owned(),
                format!(
                    "support access to {org} granted by {actor} until {}",
                    glimpse_store::export::format_time(*until_ms)
                ),
            ),
            AdminReply::SupportRevoked { was_active: true } => {
                ("support:revoked".to_owned(), format!("support access to {org} revoked by {actor}"))
            }
            _ => return,
        };
        let alert = crate::alerts::Alert::new(
            crate::alerts::AlertKind::ConsentChanged,
            crate::alerts::Severity::Notice,
            &summary,
            self.now(),
        );
        self.alerts.raise(alert.org(org.as_str()).subject(&subject));
    }

    /// [`permit`](Self::permit) without the support entry, for
    /// [`execute`](Self::execute), which audits every outcome itself.
    fn authorise(
        &self,
        actor: &Actor,
        action: &str,
        org: Option<&OrgId>,
        access: Access,
        writes: bool,
    ) -> Result<(), Refusal> {
        let support_active = org.is_some_and(|o| self.store.policies().support_active(o, self.now()));
        let allowed = if actor.read_only && writes {
            Err("this API token is read-only".to_owned())
        } else {
            authorize(&actor.identity, access, org, support_active)
        };
        allowed.map_err(|reason| {
            self.audit(&actor.audit_name(), action, org, AuditOutcome::Refused, &reason);
            refusal(RefusalKind::Forbidden, reason)
        })
    }

    /// Authorises, acts, and audits one request: the reply, or why not.
    /// Every outcome, allowed or refused, is in the audit log.
    pub fn execute(&self, actor: &Actor, action: AdminAction) -> Result<AdminReply, Refusal> {
        let (name, org, access) = describe(&action);
        let org = org.cloned();
        let actor_name = actor.audit_name();
        self.authorise(actor, name, org.as_ref(), access, changes(&action))?;
        match self.perform(action) {
            Ok((reply, detail)) => {
                self.audit(&actor_name, name, org.as_ref(), AuditOutcome::Done, &detail);
                if actor.identity.role == AdminRole::Support {
                    self.support_used(actor, name, org.as_ref());
                }
                self.decision_changed(&actor_name, org.as_ref(), &reply);
                Ok(reply)
            }
            Err((refusal, _)) => {
                self.audit(&actor_name, name, org.as_ref(), AuditOutcome::Refused, &refusal.reason);
                Err(refusal)
            }
        }
    }

    /// Does an authorised action; returns the reply and the audit detail.
    fn perform(&self, action: AdminAction) -> Performed {
        match action {
            AdminAction::StartCapture { org, device, interface, filter, duration_secs, max_packets } => {
                if duration_secs == 0 || max_packets == 0 {
                    return refused(RefusalKind::Invalid, "a capture needs a positive duration and packet limit");
                }
                if !self.store.policies().capture_consent(&org) {
                    return refused(RefusalKind::Conflict, format!("organisation {org} has not given capture consent"));
                }
                // At most 2^53 - 1: the id travels as a JSON number, and browsers
                // (the console) read numbers as doubles, exact only that far (I-JSON).
                let id = rand::random::<u64>() >> 11;
                let detail = format!(
                    "device {device} interface {interface} filter {:?} {duration_secs}s {max_packets} packets, id {id}",
                    filter.as_str()
                );
                let window = crate::ingest::CaptureWindow {
                    requested_at_ms: self.now(),
                    interface: interface.as_str().to_owned(),
                    duration_secs,
                };
                let request = CaptureRequest { id, interface, filter, duration_secs, max_packets };
                match self.directory.request_capture(&org, &device, request) {
                    Ok(()) => {
                        self.directory.capture_window_noted(&org, &device, id, window);
                        Ok((AdminReply::CaptureRequested { id }, detail))
                    }
                    Err(e) => Err((refusal(RefusalKind::Conflict, e.to_string()), detail)),
                }
            }
            AdminAction::StopCapture { org, device, id } => {
                match self.directory.send(&org, &device, ControlMessage::StopCapture { id }) {
                    Ok(()) => Ok((AdminReply::CaptureStopRequested, format!("device {device} id {id}"))),
                    Err(e) => refused(RefusalKind::Conflict, e.to_string()),
                }
            }
            AdminAction::ConnectedDevices { org } => {
                let devices = self.directory.connected(&org);
                let detail = format!("{} devices", devices.len());
                Ok((AdminReply::Devices(BoundedVec::truncating(devices)), detail))
            }
            AdminAction::CaptureStatus { org, device, id } => Ok((
                AdminReply::CaptureStatus(self.directory.capture_outcome(&org, &device, id)),
                format!("device {device} id {id}"),
            )),
            AdminAction::SetConsent { org, capture } => {
                let changed = match self.store.policies().set_consent(&org, capture, self.now()) {
                    Ok(changed) => changed,
                    Err(e) => return refused(RefusalKind::Unavailable, format!("consent not changed: {e}")),
                };
                let directives = OrgDirectives::of(&self.store.policies().get(&org));
                let told = self.directory.publish(&org, directives);
                let detail = format!(
                    "capture {}{}, {told} connected devices told",
                    if capture { "on" } else { "off" },
                    if changed { "" } else { " (unchanged)" }
                );
                Ok((
                    AdminReply::ConsentSet { capture, changed, devices_told: u32::try_from(told).unwrap_or(u32::MAX) },
                    detail,
                ))
            }
            AdminAction::GrantSupport { org, hours } => {
                match self.store.policies().grant_support(&org, hours, self.now()) {
                    Ok(until_ms) => Ok((
                        AdminReply::SupportGranted { until_ms },
                        format!("{hours} hours, until {}", glimpse_store::export::format_time(until_ms)),
                    )),
                    Err(e) => refused(RefusalKind::Invalid, e.to_string()),
                }
            }
            AdminAction::RevokeSupport { org } => match self.store.policies().revoke_support(&org, self.now()) {
                Ok(was_active) => Ok((
                    AdminReply::SupportRevoked { was_active },
                    if was_active { "active grant ended" } else { "no active grant" }.to_owned(),
                )),
                Err(e) => refused(RefusalKind::Unavailable, e.to_string()),
            },
            AdminAction::OrgStatus { org } => {
                let policy = self.store.policies().get(&org);
                let now = self.now();
                let connected = self.directory.connected(&org).len();
                Ok((
                    AdminReply::OrgStatus {
                        omitted_fields: BoundedVec::truncating(policy.omit.clone()),
                        pseudonymise_macs: policy.pseudonymise_macs,
                        strict_headers: policy.strict_headers,
                        capture_consent: policy.capture_consent,
                        support_until_ms: policy.support_until_ms.filter(|_| policy.support_active(now)),
                        connected_devices: u32::try_from(connected).unwrap_or(u32::MAX),
                    },
                    String::new(),
                ))
            }
            AdminAction::VerifyAudit => match self.store.audit().verify() {
                Ok(report) => Ok((
                    AdminReply::AuditVerified { entries: report.entries },
                    format!("{} entries intact", report.entries),
                )),
                Err(AuditError::Tampered { seq, line, reason }) => {
                    let reason = format!("audit log TAMPERED at entry {seq} (line {line}): {reason}");
                    error!("{reason}");
                    refused(RefusalKind::Conflict, reason)
                }
                Err(e) => refused(RefusalKind::Unavailable, format!("audit log unreadable: {e}")),
            },
            AdminAction::ShowAudit { org, after_seq } => {
                let entries =
                    match self.store.audit().entries(org.as_ref().map(OrgId::as_str), after_seq, MAX_AUDIT_PAGE) {
                        Ok(entries) => entries,
                        Err(e) => return refused(RefusalKind::Unavailable, format!("audit log unreadable: {e}")),
                    };
                let records: Vec<AuditRecord> = entries
                    .into_iter()
                    .map(|e| AuditRecord {
                        seq: e.seq,
                        at_ms: e.at_ms,
                        actor: BoundedString::truncating(&e.actor),
                        action: BoundedString::truncating(&e.action),
                        org: e.org.as_deref().and_then(|o| OrgId::new(o).ok()),
                        refused: e.outcome == AuditOutcome::Refused,
                        detail: BoundedString::truncating(&e.detail),
                    })
                    .collect();
                let detail = format!("{} entries after {after_seq}", records.len());
                Ok((AdminReply::AuditEntries(BoundedVec::truncating(records)), detail))
            }
            AdminAction::ExportSubject { org, subject, skip } => {
                let tag = self.store.audit().subject_tag(&subject.to_string());
                let found = glimpse_store::subject::export_subject(
                    &self.store,
                    &org,
                    &subject,
                    skip,
                    MAX_SUBJECT_PAGE,
                    MAX_SUBJECT_PAGE_BYTES,
                );
                let found = match found {
                    Ok(found) => found,
                    Err(e) => return refused(RefusalKind::Unavailable, format!("export failed: {e}")),
                };
                let total = found.total;
                let mut page = Vec::with_capacity(found.lines.len());
                for line in found.lines {
                    match BoundedString::try_new(line) {
                        Ok(line) => page.push(line),
                        // Never cut a record short: half a JSON object is no export.
                        Err(_) => {
                            return Err((
                                refusal(
                                    RefusalKind::Conflict,
                                    "a record is too large for the admin API; export on the collector host",
                                ),
                                tag,
                            ))
                        }
                    }
                }
                let detail = format!("{tag}: {total} records, {} sent from {skip}", page.len());
                Ok((AdminReply::SubjectRecords { total, lines: BoundedVec::truncating(page) }, detail))
            }
            AdminAction::EraseSubject { org, subject } => {
                // The audit log names the subject only by a keyed tag: it
                // must not keep what was just erased.
                let tag = self.store.audit().subject_tag(&subject.to_string());
                match glimpse_store::subject::erase_subject(&self.store, &org, &subject) {
                    Ok(done) => {
                        let segments = done.metadata.segments_rewritten + done.captures.segments_rewritten;
                        // A report about many clients that lost the
                        // subject's entries counts as a metadata record
                        // erased from: the subject is gone from it.
                        let metadata = done.metadata.records + done.metadata.redacted;
                        Ok((
                            AdminReply::SubjectErased {
                                metadata,
                                captures: done.captures.records,
                                segments_rewritten: segments,
                            },
                            format!(
                                "{tag}: {} metadata and {} capture records erased, {} metadata records cut down to the other clients, {segments} segments rewritten",
                                done.metadata.records, done.captures.records, done.metadata.redacted
                            ),
                        ))
                    }
                    Err(e) => Err((refusal(RefusalKind::Unavailable, format!("erase failed: {e}")), tag)),
                }
            }
            AdminAction::CorrectSubject { org, subject, field, value } => {
                self.correct_subject(&org, &subject, field, value.as_str())
            }
            AdminAction::BlockSubject { org, subject } => self.set_blocked(&org, &subject, true),
            AdminAction::UnblockSubject { org, subject } => self.set_blocked(&org, &subject, false),
            AdminAction::BlockedSubjects { org } => {
                let blocked = self.store.policies().get(&org).blocked;
                let detail = format!("{} subjects blocked", blocked.len());
                Ok((AdminReply::BlockedSubjects(blocked), detail))
            }
            AdminAction::SetDataPolicy { org, omit, pseudonymise_macs, strict_headers } => {
                let policies = self.store.policies();
                let mut policy = match policies.set_data_policy(&org, &omit, pseudonymise_macs) {
                    Ok(policy) => policy,
                    Err(e) => return refused(RefusalKind::Unavailable, format!("data policy not changed: {e}")),
                };
                if let Some(strict) = strict_headers {
                    // The fields above are set already: say so if this part
                    // fails, rather than pretend nothing changed.
                    if let Err(e) = policies.set_strict_headers(&org, strict) {
                        let detail = format!("fields and MACs set, strict headers not changed: {e}");
                        return refused(RefusalKind::Unavailable, detail);
                    }
                    policy = policies.get(&org);
                }
                let told = self.directory.publish(&org, OrgDirectives::of(&policy));
                let omitted: Vec<&str> = policy.omit.iter().map(|f| f.as_str()).collect();
                let detail = format!(
                    "omit [{}], MACs {}, {told} connected devices told",
                    omitted.join(", "),
                    if policy.pseudonymise_macs { "pseudonymised" } else { "as collected" }
                );
                let detail = format!("strict headers {}, {detail}", if policy.strict_headers { "on" } else { "off" });
                let reply = AdminReply::DataPolicySet {
                    devices_told: u32::try_from(told).unwrap_or(u32::MAX),
                    strict_headers: policy.strict_headers,
                };
                Ok((reply, detail))
            }
            AdminAction::SetLocationHistory { org, keep } => {
                match self.store.policies().set_location_history(&org, keep) {
                    Ok(changed) => Ok((
                        AdminReply::LocationHistorySet { keep, changed },
                        format!(
                            "station identities {} from now on{}",
                            if keep { "kept with each collection" } else { "unlinked before storage" },
                            if changed { "" } else { " (unchanged)" }
                        ),
                    )),
                    Err(e) => refused(RefusalKind::Unavailable, format!("location history not changed: {e}")),
                }
            }
            AdminAction::SetRetention { org, metadata_days, capture_days } => {
                self.set_retention(&org, metadata_days, capture_days)
            }
            AdminAction::DeleteOrg { org, confirm } => {
                if org != confirm {
                    return refused(RefusalKind::Invalid, "the confirmation does not repeat the organisation's name");
                }
                match self.store.delete_org(&org) {
                    Ok((key_destroyed, segments_deleted)) => Ok((
                        AdminReply::OrgDeleted { key_destroyed, segments_deleted },
                        format!("key destroyed: {key_destroyed}, {segments_deleted} segments deleted"),
                    )),
                    Err(e) => refused(RefusalKind::Unavailable, format!("delete failed: {e}")),
                }
            }
            _ => refused(RefusalKind::Invalid, "unknown admin action"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use glimpse_common::identity::AdminName;

    #[test]
    fn roles_are_scoped() {
        let acme = OrgId::new("acme").unwrap();
        let other = OrgId::new("other").unwrap();
        let name = AdminName::new("a").unwrap();
        let operator = AdminIdentity::new(name.clone(), AdminRole::Operator, None).unwrap();
        let org_admin = AdminIdentity::new(name.clone(), AdminRole::OrgAdmin, Some(acme.clone())).unwrap();
        let support = AdminIdentity::new(name, AdminRole::Support, Some(acme.clone())).unwrap();
        for access in [Access::Read, Access::Write, Access::Operator] {
            assert!(authorize(&operator, access, Some(&other), false).is_ok());
        }
        assert!(authorize(&operator, Access::Operator, None, false).is_ok());
        assert!(authorize(&org_admin, Access::Write, Some(&acme), false).is_ok());
        assert!(authorize(&org_admin, Access::Read, Some(&other), true)
            .unwrap_err()
            .contains("may not act on organisation other"));
        assert!(authorize(&org_admin, Access::Operator, None, false).unwrap_err().contains("only operators"));
        // Support: reads of its own organisation, only under a grant.
        assert!(authorize(&support, Access::Read, Some(&acme), false).unwrap_err().contains("grant"));
        assert!(authorize(&support, Access::Read, Some(&acme), true).is_ok());
        assert!(authorize(&support, Access::Write, Some(&acme), true).unwrap_err().contains("read-only"));
        assert!(authorize(&support, Access::Read, Some(&other), true).unwrap_err().contains("only"));
        assert!(authorize(&support, Access::Operator, None, true).is_err());
    }
}
