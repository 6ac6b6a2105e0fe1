//! What admins may do, and doing it: authorisation by role and
//! organisation, the actions themselves, and an audit entry for every
//! request, allowed or refused. No sockets here; the server feeds it
//! authenticated requests.

use std::sync::Arc;

use tracing::error;

use glimpse_common::bounded::{BoundedString, BoundedVec};
use glimpse_common::identity::{AdminIdentity, AdminRole, DeviceId, OrgId, SiteId};
use glimpse_common::wire::admin::{
    AdminAction, AdminReply, AuditRecord, GrantKind, GrantScope, MAX_AUDIT_PAGE, MAX_SUBJECT_PAGE,
    MAX_SUBJECT_PAGE_BYTES,
};
use glimpse_common::wire::{CaptureRequest, ControlMessage};

use crate::ingest::{AgentDirectory, OrgDirectives};
use glimpse_store::audit::{AuditError, AuditOutcome};
use glimpse_store::store::Store;

/// How much an action needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// What running the service needs of an organisation: its status,
    /// sizes, devices' connections and health, its audit log. Operators;
    /// the organisation's admins; support staff under any active grant
    /// (devices and status are part of every grant).
    Service,
    /// Reading the organisation's data of one kind: its admins; support
    /// staff and operators only under its active grant, if that includes
    /// the kind (and the device, for a grant limited to devices).
    Read(GrantKind),
    /// Requesting, stopping and following a capture: its admins; support
    /// staff and operators only under an active grant that includes
    /// captures. The action itself checks the capture consent.
    Capture,
    /// Changing the organisation's decisions: operators and its admins.
    Write,
    /// Giving access to the organisation's data (a support grant): its
    /// admins only, so that nobody grants themselves its data.
    Grant,
    /// Across organisations: operators only.
    Operator,
}

/// A support grant in force, as authorisation sees it.
#[derive(Debug, Clone, Copy)]
pub struct GrantInForce<'a> {
    /// What it lets its holders see.
    pub scope: &'a GrantScope,
    /// When it was given, if known (grants stored before this was kept).
    pub granted_at_ms: Option<i64>,
    /// When it ends.
    pub until_ms: i64,
}

impl GrantInForce<'_> {
    /// How the audit log names the grant: by the organisation, when it was
    /// given and when it ends (an organisation has one grant at a time, so
    /// this names one), and its scope.
    pub fn name(&self, org: &OrgId) -> String {
        let time = glimpse_store::export::format_time;
        match self.granted_at_ms {
            Some(at) => {
                format!("the support grant of {org} given {} until {} ({})", time(at), time(self.until_ms), self.scope)
            }
            None => format!("the support grant of {org} until {} ({})", time(self.until_ms), self.scope),
        }
    }
}

/// On what an allowed request rests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Basis {
    /// The caller's role: an organisation's admin, or an operator running
    /// the service.
    Role,
    /// The organisation's support grant.
    Grant,
}

/// Whether `admin` may act with `access` on `org` (and `device`, when the
/// request concerns one), given the organisation's grant in force; on
/// what that rests, or why not.
pub fn authorize(
    admin: &AdminIdentity,
    access: Access,
    org: Option<&OrgId>,
    device: Option<&DeviceId>,
    grant: Option<GrantInForce<'_>>,
) -> Result<Basis, String> {
    let own = |org: Option<&OrgId>| org.is_some() && admin.org.as_ref() == org;
    let org_name = org.map_or("(all)", OrgId::as_str);
    let under_grant = |who: &str| -> Result<Basis, String> {
        let Some(grant) = grant else {
            return Err(format!(
                "{who} may read {org_name} only under a grant from the organisation, and none is active"
            ));
        };
        let kind = match access {
            Access::Read(kind) => kind,
            Access::Capture => GrantKind::Captures,
            _ => GrantKind::Devices,
        };
        if !grant.scope.allows(kind) {
            return Err(format!("the support grant of {org_name} does not include {kind} ({})", grant.scope));
        }
        if let Some(device) = device.filter(|d| !grant.scope.covers(d)) {
            return Err(format!("the support grant of {org_name} does not include device {device} ({})", grant.scope));
        }
        Ok(Basis::Grant)
    };
    match (admin.role, access) {
        (AdminRole::Operator, Access::Service | Access::Write | Access::Operator) => Ok(Basis::Role),
        (AdminRole::Operator, Access::Grant) => {
            Err(format!("only the admins of {org_name} may grant access to its data; {} is an operator", admin.name))
        }
        (AdminRole::Operator, Access::Read(_) | Access::Capture) => under_grant("operators"),
        (_, Access::Operator) => Err(format!("only operators may do this; {} is {}", admin.name, admin.role)),
        (AdminRole::OrgAdmin, _) if own(org) => Ok(Basis::Role),
        (AdminRole::OrgAdmin, _) => Err(format!(
            "org-admin {} of {} may not act on organisation {org_name}",
            admin.name,
            admin.org.as_ref().map_or("?", OrgId::as_str),
        )),
        (AdminRole::Support, _) if !own(org) => Err(format!(
            "support {} works for {} only, not {org_name}",
            admin.name,
            admin.org.as_ref().map_or("?", OrgId::as_str),
        )),
        (AdminRole::Support, Access::Write | Access::Grant) => Err(
            "support staff have read-only access to an organisation's decisions (and request captures only under a grant that includes them)"
                .to_owned(),
        ),
        (AdminRole::Support, _) => under_grant("support staff"),
    }
}

/// What an allowed request may see: every device of the organisation, or
/// only those a device-limited grant names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permit {
    /// On what it rests.
    pub basis: Basis,
    /// The devices it is limited to; `None` for all.
    pub devices: Option<Vec<DeviceId>>,
}

impl Permit {
    /// Whether `device` is within the permit.
    pub fn covers(&self, device: &DeviceId) -> bool {
        self.devices.as_ref().is_none_or(|d| d.contains(device))
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
    /// The sites of its organisation it is limited to (an org-admin's or
    /// support token or console account); empty: every site. See
    /// `site_limited` for what such an actor may do.
    pub sites: Vec<SiteId>,
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
        Actor { identity, via: ActorVia::Certificate { serial }, read_only: false, sites: Vec::new() }
    }

    /// How the audit log names this actor.
    pub fn audit_name(&self) -> String {
        match &self.via {
            ActorVia::Certificate { .. } => actor_name(&self.identity),
            ActorVia::Session { id, .. } => {
                let admin = &self.identity;
                let sites = self.sites_named();
                match &admin.org {
                    Some(org) => format!("console:{} ({} of {org}{sites}, session {id})", admin.name, admin.role),
                    None => format!("console:{} ({}, session {id})", admin.name, admin.role),
                }
            }
            ActorVia::Token { id } => {
                let admin = &self.identity;
                let ro = if self.read_only { ", read-only" } else { "" };
                let sites = self.sites_named();
                match &admin.org {
                    Some(org) => format!("token:{} ({} of {org}{sites}{ro}, id {id})", admin.name, admin.role),
                    None => format!("token:{} ({}{ro}, id {id})", admin.name, admin.role),
                }
            }
        }
    }
}

impl Actor {
    /// `, sites a+b` for a site-limited actor, nothing otherwise.
    fn sites_named(&self) -> String {
        if self.sites.is_empty() {
            return String::new();
        }
        let names: Vec<&str> = self.sites.iter().map(SiteId::as_str).collect();
        format!(", sites {}", names.join("+"))
    }
}

/// What a site-limited actor may do besides acting on one of its sites'
/// devices: list the organisation's devices and captures (filtered to its
/// sites), see the organisation's status, and export records (of its
/// sites' devices only). Everything else that concerns the organisation
/// as a whole is refused: changing its decisions (consent, policies,
/// retention, blocked subjects, erasing it), granting or revoking support
/// access, subject rights (a subject's records span sites), its audit
/// log and support activity, tokens, console accounts and identities.
const SITE_LIMITED_LISTS: [&str; 4] = ["devices.list", "capture.list", "org.status", "data.export"];

/// Why a site-limited actor may not do `action` with `access`, or
/// `None` if it may (on the devices of its sites only).
fn site_limited(action: &str, access: Access, device: Option<&DeviceId>) -> Option<String> {
    let kind_ok = matches!(access, Access::Service | Access::Read(_) | Access::Capture);
    if kind_ok && (device.is_some() || SITE_LIMITED_LISTS.contains(&action)) {
        return None;
    }
    Some(format!(
        "{action} concerns the whole organisation; an admin limited to sites may act only on the devices of its sites"
    ))
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

/// The audit name, organisation, device and access an action needs.
fn describe(action: &AdminAction) -> (&'static str, Option<&OrgId>, Option<&DeviceId>, Access) {
    match action {
        AdminAction::StartCapture { org, device, .. } => ("capture.start", Some(org), Some(device), Access::Capture),
        AdminAction::StopCapture { org, device, .. } => ("capture.stop", Some(org), Some(device), Access::Capture),
        AdminAction::ConnectedDevices { org } => ("devices.list", Some(org), None, Access::Service),
        AdminAction::CaptureStatus { org, device, .. } => ("capture.status", Some(org), Some(device), Access::Capture),
        AdminAction::SetConsent { org, .. } => ("consent.set", Some(org), None, Access::Write),
        AdminAction::GrantSupport { org, .. } => ("support.grant", Some(org), None, Access::Grant),
        AdminAction::RevokeSupport { org } => ("support.revoke", Some(org), None, Access::Write),
        AdminAction::OrgStatus { org } => ("org.status", Some(org), None, Access::Service),
        AdminAction::VerifyAudit => ("audit.verify", None, None, Access::Operator),
        AdminAction::ShowAudit { org: Some(org), .. } => ("audit.show", Some(org), None, Access::Service),
        AdminAction::ShowAudit { org: None, .. } => ("audit.show", None, None, Access::Operator),
        AdminAction::ExportSubject { org, .. } => ("subject.export", Some(org), None, Access::Read(GrantKind::Exports)),
        AdminAction::EraseSubject { org, .. } => ("subject.erase", Some(org), None, Access::Write),
        AdminAction::CorrectSubject { org, .. } => ("subject.correct", Some(org), None, Access::Write),
        AdminAction::BlockSubject { org, .. } => ("subject.block", Some(org), None, Access::Write),
        AdminAction::UnblockSubject { org, .. } => ("subject.unblock", Some(org), None, Access::Write),
        // Names the subjects: read like a subject export.
        AdminAction::BlockedSubjects { org } => ("subject.blocked", Some(org), None, Access::Read(GrantKind::Exports)),
        AdminAction::DeleteOrg { org, .. } => ("org.delete", Some(org), None, Access::Write),
        AdminAction::SetDataPolicy { org, .. } => ("data-policy.set", Some(org), None, Access::Write),
        AdminAction::SetLocationHistory { org, .. } => ("location-history.set", Some(org), None, Access::Write),
        AdminAction::SetRetention { org, .. } => ("retention.set", Some(org), None, Access::Write),
        AdminAction::SetWanDestinations { org, .. } => ("wan-destinations.set", Some(org), None, Access::Write),
        // The device's state, not people's data, and changes nothing:
        // under a grant (devices are part of every grant) for support and
        // operators, as for the organisation's other reads.
        AdminAction::RequestDiagnostics { org, device } => {
            ("diagnostics.request", Some(org), Some(device), Access::Read(GrantKind::Devices))
        }
        _ => ("unknown", None, None, Access::Operator),
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
        let actor = Actor::certificate(admin.clone(), String::new());
        match self.execute(&actor, action) {
            Ok(reply) => reply,
            Err(refusal) => AdminReply::Refused(BoundedString::truncating(&refusal.reason)),
        }
    }

    /// Whether `actor` may do `action` (its audit name) on `org` with
    /// `access`; a refusal is audited. For the API's own actions (tokens,
    /// identities, export, views) that are not an [`AdminAction`]; `writes`
    /// says whether it changes something (read-only tokens may not).
    ///
    /// Whatever is allowed under a support grant is audited too, reads
    /// included, naming the grant: an organisation sees everything support
    /// staff and operators did under its grant (the support-activity
    /// endpoint files these entries per grant).
    pub fn permit(
        &self,
        actor: &Actor,
        action: &str,
        org: Option<&OrgId>,
        access: Access,
        writes: bool,
    ) -> Result<Permit, Refusal> {
        self.permit_device(actor, action, org, None, access, writes)
    }

    /// [`permit`](Self::permit) for a request about one device, which a
    /// grant limited to devices must name.
    pub fn permit_device(
        &self,
        actor: &Actor,
        action: &str,
        org: Option<&OrgId>,
        device: Option<&DeviceId>,
        access: Access,
        writes: bool,
    ) -> Result<Permit, Refusal> {
        let (permit, grant) = self.authorise(actor, action, org, device, access, writes)?;
        if permit.basis == Basis::Grant {
            let detail = format!("allowed under {}", grant.unwrap_or_default());
            self.audit(&actor.audit_name(), action, org, AuditOutcome::Done, &detail);
            self.support_used(actor, action, org);
        }
        Ok(permit)
    }

    /// Raises the alert that support staff used a grant (one per support
    /// admin and organisation per `repeat_after_secs`, by its key).
    fn support_used(&self, actor: &Actor, action: &str, org: Option<&OrgId>) {
        let Some(org) = org else { return };
        let name = actor.identity.name.as_str();
        let who = if actor.identity.role == AdminRole::Operator { "operator" } else { "support staff" };
        let summary = format!("{who} {name} used the support grant of {org} ({action})");
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

    /// [`permit`](Self::permit) without the grant's entry, for
    /// [`execute`](Self::execute), which audits every outcome itself; with
    /// the grant's name when it rests on one.
    fn authorise(
        &self,
        actor: &Actor,
        action: &str,
        org: Option<&OrgId>,
        device: Option<&DeviceId>,
        access: Access,
        writes: bool,
    ) -> Result<(Permit, Option<String>), Refusal> {
        let now = self.now();
        let policy = org.map(|o| self.store.policies().get(o));
        let grant = policy.as_ref().filter(|p| p.support_active(now)).map(|p| GrantInForce {
            scope: &p.support_scope,
            granted_at_ms: p.support_granted_at_ms,
            until_ms: p.support_until_ms.unwrap_or(now),
        });
        let allowed = if actor.read_only && writes {
            Err("this API token is read-only".to_owned())
        } else {
            authorize(&actor.identity, access, org, device, grant)
        };
        let allowed = allowed.and_then(|basis| {
            let grant_in_force = grant.filter(|_| basis == Basis::Grant);
            let mut devices = grant_in_force.filter(|g| g.scope.limited()).map(|g| g.scope.devices().to_vec());
            // A grant limited to sites: their devices (of those it names).
            if let (Some(grant), Some(org)) = (grant_in_force.filter(|g| !g.scope.sites().is_empty()), org) {
                let at_sites = self
                    .store
                    .registry()
                    .devices_at(org, grant.scope.sites())
                    .map_err(|e| format!("the grant's sites' devices cannot be read: {e}"))?;
                if let Some(device) = device.filter(|d| !at_sites.contains(d)) {
                    return Err(format!(
                        "the support grant of {org} does not include device {device} ({})",
                        grant.scope
                    ));
                }
                devices = Some(match devices {
                    Some(granted) => granted.into_iter().filter(|d| at_sites.contains(d)).collect(),
                    None => at_sites,
                });
            }
            if !actor.sites.is_empty() {
                let at_sites = self.site_devices(actor, action, org, device, access)?;
                devices = Some(match devices {
                    Some(granted) => granted.into_iter().filter(|d| at_sites.contains(d)).collect(),
                    None => at_sites,
                });
            }
            let name = grant_in_force.zip(org).map(|(g, org)| g.name(org));
            Ok((Permit { basis, devices }, name))
        });
        match allowed {
            Ok(done) => Ok(done),
            Err(reason) => {
                self.audit(&actor.audit_name(), action, org, AuditOutcome::Refused, &reason);
                Err(refusal(RefusalKind::Forbidden, reason))
            }
        }
    }

    /// The devices a site-limited `actor` may see of `org` for `action`,
    /// or why it may not do it (another site's device, an action on the
    /// whole organisation).
    fn site_devices(
        &self,
        actor: &Actor,
        action: &str,
        org: Option<&OrgId>,
        device: Option<&DeviceId>,
        access: Access,
    ) -> Result<Vec<DeviceId>, String> {
        let sites = || actor.sites.iter().map(SiteId::as_str).collect::<Vec<_>>().join(", ");
        let (Some(org), None) = (org, site_limited(action, access, device)) else {
            return Err(site_limited(action, access, device).unwrap_or_else(|| {
                format!("{action} concerns every organisation; an admin limited to sites may not do it")
            }));
        };
        let at_sites = self
            .store
            .registry()
            .devices_at(org, &actor.sites)
            .map_err(|e| format!("the sites' devices cannot be read: {e}"))?;
        if let Some(device) = device.filter(|d| !at_sites.contains(d)) {
            return Err(format!(
                "device {device} of {org} is not at the sites {} is limited to ({})",
                actor.identity.name,
                sites()
            ));
        }
        Ok(at_sites)
    }

    /// Authorises, acts, and audits one request: the reply, or why not.
    /// Every outcome, allowed or refused, is in the audit log; what rests
    /// on a support grant names the grant.
    pub fn execute(&self, actor: &Actor, action: AdminAction) -> Result<AdminReply, Refusal> {
        let (name, org, device, access) = describe(&action);
        let org = org.cloned();
        let device = device.cloned();
        let actor_name = actor.audit_name();
        let (permit, grant) = self.authorise(actor, name, org.as_ref(), device.as_ref(), access, changes(&action))?;
        let under = |detail: &str| match &grant {
            Some(grant) if detail.is_empty() => format!("under {grant}"),
            Some(grant) => format!("{detail}; under {grant}"),
            None => detail.to_owned(),
        };
        match self.perform(action, &permit) {
            Ok((reply, detail)) => {
                self.audit(&actor_name, name, org.as_ref(), AuditOutcome::Done, &under(&detail));
                if permit.basis == Basis::Grant {
                    self.support_used(actor, name, org.as_ref());
                }
                self.decision_changed(&actor_name, org.as_ref(), &reply);
                Ok(reply)
            }
            Err((refusal, _)) => {
                self.audit(&actor_name, name, org.as_ref(), AuditOutcome::Refused, &under(&refusal.reason));
                Err(refusal)
            }
        }
    }

    /// Does an authorised action; returns the reply and the audit detail.
    fn perform(&self, action: AdminAction, permit: &Permit) -> Performed {
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
            AdminAction::RequestDiagnostics { org, device } => {
                let now = self.now();
                let version = self
                    .directory
                    .device_detail(&org, &device, None, now)
                    .filter(|detail| detail.connected)
                    .and_then(|detail| detail.agent_version);
                let Some(version) = version else {
                    return refused(RefusalKind::Conflict, format!("device {device} of {org} is not connected"));
                };
                // Same range as capture ids: exact as a JSON number.
                let id = rand::random::<u64>() >> 11;
                let message = ControlMessage::CollectDiagnostics { id };
                if !glimpse_common::wire::agent_decodes(&version, &message) {
                    let (major, minor, patch) = message.first_agent_release();
                    return refused(
                        RefusalKind::Conflict,
                        format!("device {device} runs agent {version}; diagnostic bundles need {major}.{minor}.{patch} or later"),
                    );
                }
                let detail = format!("device {device} id {id}");
                match self.directory.send(&org, &device, message) {
                    Ok(()) => Ok((AdminReply::DiagnosticsRequested { id }, detail)),
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
                let mut devices = self.directory.connected(&org);
                devices.retain(|d| permit.covers(d));
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
            AdminAction::GrantSupport { org, hours, scope } => {
                match self.store.policies().grant_support(&org, hours, &scope, self.now()) {
                    Ok(until_ms) => Ok((
                        AdminReply::SupportGranted { until_ms },
                        format!("{hours} hours, until {}, {scope}", glimpse_store::export::format_time(until_ms)),
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
            AdminAction::SetWanDestinations { org, on } => {
                let policies = self.store.policies();
                match policies.set_wan_destinations(&org, on) {
                    Ok(changed) => {
                        let told = self.directory.publish(&org, OrgDirectives::of(&policies.get(&org)));
                        let reply = AdminReply::WanDestinationsSet {
                            on,
                            changed,
                            devices_told: u32::try_from(told).unwrap_or(u32::MAX),
                        };
                        let detail = format!(
                            "WAN destinations {}{}, {told} connected devices told",
                            if on { "collected" } else { "not collected" },
                            if changed { "" } else { " (unchanged)" }
                        );
                        Ok((reply, detail))
                    }
                    Err(e) => refused(RefusalKind::Unavailable, format!("WAN destinations not changed: {e}")),
                }
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
        let everything = GrantScope::new(GrantKind::ALL, []).unwrap();
        let all = GrantInForce { scope: &everything, granted_at_ms: Some(0), until_ms: 10 };
        let old = GrantScope::default();
        let default = GrantInForce { scope: &old, granted_at_ms: None, until_ms: 10 };
        let metadata = Access::Read(GrantKind::Metadata);
        // Operators run the service, and read data only under a grant.
        for access in [Access::Service, Access::Write, Access::Operator] {
            assert_eq!(authorize(&operator, access, Some(&other), None, None), Ok(Basis::Role));
        }
        assert!(authorize(&operator, metadata, Some(&acme), None, None).unwrap_err().contains("only under a grant"));
        assert_eq!(authorize(&operator, metadata, Some(&acme), None, Some(all)), Ok(Basis::Grant));
        assert!(authorize(&operator, Access::Capture, Some(&acme), None, Some(default))
            .unwrap_err()
            .contains("does not include captures"));
        assert!(authorize(&operator, Access::Grant, Some(&acme), None, None).unwrap_err().contains("only the admins"));
        // Org-admins: everything of their own organisation, nothing else.
        for access in [Access::Service, metadata, Access::Capture, Access::Write, Access::Grant] {
            assert_eq!(authorize(&org_admin, access, Some(&acme), None, None), Ok(Basis::Role));
        }
        assert!(authorize(&org_admin, metadata, Some(&other), None, Some(all))
            .unwrap_err()
            .contains("may not act on organisation other"));
        assert!(authorize(&org_admin, Access::Operator, None, None, None).unwrap_err().contains("only operators"));
        // Support: its own organisation, only under a grant, within its scope.
        assert!(authorize(&support, Access::Service, Some(&acme), None, None).unwrap_err().contains("grant"));
        assert_eq!(authorize(&support, Access::Service, Some(&acme), None, Some(default)), Ok(Basis::Grant));
        assert_eq!(authorize(&support, Access::Capture, Some(&acme), None, Some(all)), Ok(Basis::Grant));
        assert!(authorize(&support, Access::Capture, Some(&acme), None, Some(default))
            .unwrap_err()
            .contains("captures"));
        assert!(authorize(&support, Access::Write, Some(&acme), None, Some(all)).unwrap_err().contains("read-only"));
        assert!(authorize(&support, Access::Grant, Some(&acme), None, Some(all)).unwrap_err().contains("read-only"));
        assert!(authorize(&support, metadata, Some(&other), None, Some(all)).unwrap_err().contains("only"));
        assert!(authorize(&support, Access::Operator, None, None, Some(all)).is_err());
        // A grant limited to devices covers only those.
        let ap1 = DeviceId::new("ap-1").unwrap();
        let ap2 = DeviceId::new("ap-2").unwrap();
        let one = GrantScope::new([GrantKind::Metadata], [ap1.clone()]).unwrap();
        let limited = GrantInForce { scope: &one, granted_at_ms: Some(0), until_ms: 10 };
        assert_eq!(authorize(&support, metadata, Some(&acme), Some(&ap1), Some(limited)), Ok(Basis::Grant));
        assert!(authorize(&support, metadata, Some(&acme), Some(&ap2), Some(limited))
            .unwrap_err()
            .contains("does not include device ap-2"));
        assert!(authorize(&operator, metadata, Some(&acme), Some(&ap2), Some(limited)).is_err());
        assert!(limited.name(&acme).starts_with("the support grant of acme given "));
    }
}
