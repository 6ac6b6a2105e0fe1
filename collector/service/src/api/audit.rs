//! The audit endpoints that read the log: a filtered page of it, and what
//! support staff did under each support grant. Both read the log through
//! [`glimpse_store::audit::AuditLog`]'s bounded scans, so memory stays
//! within one page however long the log has grown.

use std::collections::VecDeque;

use axum::extract::State;
use axum::Json;

use glimpse_api::{AuditEntry, AuditPage, AuditQuery, Problem, SupportActivity, SupportGrantActivity};
use glimpse_common::wire::admin::MAX_AUDIT_PAGE;
use glimpse_store::audit::{AuditEntry as StoredEntry, AuditOutcome, AuditSearch};

use super::auth::{Authenticated, QueryArgs};
use super::problem::ApiError;
use super::routes::{blocking, org, PathArgs};
use super::ApiState;
use crate::admin::Access;

/// Most grants [`support_activity`] lists.
pub const MAX_LISTED_GRANTS: usize = 50;

/// Most actions listed under one grant.
pub const MAX_GRANT_ACTIONS: usize = 200;

/// Longest text filter accepted (actor or action).
const MAX_FILTER_CHARS: usize = 128;

fn entry(e: StoredEntry) -> AuditEntry {
    AuditEntry {
        seq: e.seq,
        at_ms: e.at_ms,
        actor: e.actor,
        action: e.action,
        org: e.org,
        refused: e.outcome == AuditOutcome::Refused,
        detail: e.detail,
    }
}

fn unreadable(e: glimpse_store::audit::AuditError) -> ApiError {
    ApiError::unavailable(format!("the audit log cannot be read: {e}"))
}

fn text_filter(name: &str, value: Option<String>) -> Result<Option<String>, ApiError> {
    match value {
        Some(v) if v.chars().count() > MAX_FILTER_CHARS => {
            Err(ApiError::bad_request(format!("{name}: at most {MAX_FILTER_CHARS} characters")))
        }
        Some(v) if v.trim().is_empty() => Ok(None),
        other => Ok(other),
    }
}

/// The query as a store search, or what is wrong with it.
fn search_of(query: AuditQuery) -> Result<(AuditSearch, usize), ApiError> {
    let outcome = match query.outcome.as_deref() {
        None | Some("") => None,
        Some("done") => Some(AuditOutcome::Done),
        Some("refused") => Some(AuditOutcome::Refused),
        Some(other) => return Err(ApiError::bad_request(format!("outcome {other:?}: expected done or refused"))),
    };
    let limit = match query.limit {
        None => MAX_AUDIT_PAGE,
        Some(n) if (1..=MAX_AUDIT_PAGE as u32).contains(&n) => n as usize,
        Some(n) => return Err(ApiError::bad_request(format!("limit {n}: from 1 to {MAX_AUDIT_PAGE}"))),
    };
    if let (Some(from), Some(to)) = (query.from_ms, query.to_ms) {
        if from > to {
            return Err(ApiError::bad_request("from_ms is after to_ms"));
        }
    }
    let search = AuditSearch {
        org: query.org,
        after_seq: query.after_seq,
        before_seq: query.before_seq,
        actor_contains: text_filter("actor", query.actor)?,
        action: text_filter("action", query.action)?,
        from_ms: query.from_ms,
        to_ms: query.to_ms,
        outcome,
        newest_first: query.newest_first,
    };
    Ok((search, limit))
}

/// Audit entries, oldest first after `after_seq` or newest first before
/// `before_seq`, filtered by actor, action, time and outcome. An
/// organisation's entries need read access to it; the whole log is for
/// operators.
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", params(AuditQuery),
    responses((status = 200, body = AuditPage), (status = "4XX", body = Problem)))]
pub async fn audit(
    State(state): State<ApiState>,
    Authenticated(actor): Authenticated,
    QueryArgs(query): QueryArgs<AuditQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    let scope = query.org.as_deref().map(org).transpose()?;
    let (search, limit) = search_of(query)?;
    blocking(move || {
        let context = &state.context;
        let access = if scope.is_some() { Access::Service } else { Access::Operator };
        context.permit(&actor, "audit.show", scope.as_ref(), access, false)?;
        let found = context.store.audit().search(&search, limit).map_err(unreadable)?;
        let full = found.len() == limit;
        let entries: Vec<AuditEntry> = found.into_iter().map(entry).collect();
        let last = entries.last().map(|e| e.seq);
        let (next_after_seq, next_before_seq) = match (full, search.newest_first) {
            (false, _) => (None, None),
            (true, false) => (last, None),
            (true, true) => (None, last),
        };
        let unfiltered = AuditSearch { org: search.org.clone(), after_seq: search.after_seq, ..Default::default() };
        let detail = if search == unfiltered {
            format!("{} entries after {}", entries.len(), search.after_seq)
        } else {
            format!("{} entries matching a filter", entries.len())
        };
        context.audit(&actor.audit_name(), "audit.show", scope.as_ref(), AuditOutcome::Done, &detail);
        Ok(Json(AuditPage { entries, next_after_seq, next_before_seq }))
    })
    .await
}

/// Whether an audit actor name is support staff's: every credential's name
/// carries the role in the same place (`admin:bob (support of acme)`,
/// `token:… (support of acme, id …)`, `console:bob (support of acme, …)`).
fn is_support(actor: &str) -> bool {
    actor.contains("(support of ") || actor.contains("(support)") || actor.contains("(support,")
}

/// Whether an entry's detail says it rested on a support grant, or was
/// refused for want of one (operators' reads of the organisation's data;
/// support staff are recognised by name).
fn under_grant(detail: &str) -> bool {
    detail.contains("under the support grant of ")
        || detail.contains("only under a grant from the organisation")
        || detail.contains("the support grant of ")
}

/// The grant hours from a `support.grant` entry's detail (`"4 hours, until …"`).
fn granted_hours(detail: &str) -> Option<u32> {
    detail.split_once(' ').and_then(|(n, rest)| rest.starts_with("hours").then(|| n.parse().ok()).flatten())
}

/// The scope from a `support.grant` entry's detail (`"4 hours, until
/// <time>, devices, metadata on all devices"`); `None` for an entry written
/// before grants had a scope.
fn granted_scope(detail: &str) -> Option<String> {
    let (_, rest) = detail.split_once(", until ")?;
    let (_, scope) = rest.split_once(", ")?;
    Some(scope.to_owned())
}

/// Folds an organisation's audit entries, oldest first, into its grants
/// and what support did under them. Pure, so it is tested without a log.
#[derive(Debug, Default)]
pub struct GrantFolder {
    grants: VecDeque<SupportGrantActivity>,
    refused_outside: VecDeque<AuditEntry>,
}

impl GrantFolder {
    /// Takes the next entry of the organisation, in log order.
    pub fn push(&mut self, e: StoredEntry) {
        let done = e.outcome == AuditOutcome::Done;
        match e.action.as_str() {
            "support.grant" if done => {
                let Some(hours) = granted_hours(&e.detail) else { return };
                self.end_open(e.at_ms, &e.actor);
                if self.grants.len() == MAX_LISTED_GRANTS {
                    self.grants.pop_front();
                }
                self.grants.push_back(SupportGrantActivity {
                    granted_seq: e.seq,
                    granted_at_ms: e.at_ms,
                    granted_by: e.actor,
                    hours,
                    scope: granted_scope(&e.detail),
                    until_ms: e.at_ms.saturating_add(i64::from(hours) * 3_600_000),
                    ended_at_ms: None,
                    ended_by: None,
                    active: false,
                    actions: Vec::new(),
                    more_actions: 0,
                });
            }
            "support.revoke" if done => self.end_open(e.at_ms, &e.actor),
            _ if is_support(&e.actor) || under_grant(&e.detail) => {
                let at = e.at_ms;
                match self.grants.back_mut().filter(|g| g.ended_at_ms.is_none() && at < g.until_ms) {
                    Some(grant) if grant.actions.len() < MAX_GRANT_ACTIONS => grant.actions.push(entry(e)),
                    Some(grant) => grant.more_actions += 1,
                    None if e.outcome == AuditOutcome::Refused => {
                        if self.refused_outside.len() == MAX_LISTED_GRANTS {
                            self.refused_outside.pop_front();
                        }
                        self.refused_outside.push_back(entry(e));
                    }
                    None => {}
                }
            }
            _ => {}
        }
    }

    /// Ends the grant in force at `at_ms`, if any (revoked or replaced).
    fn end_open(&mut self, at_ms: i64, by: &str) {
        if let Some(grant) = self.grants.back_mut().filter(|g| g.ended_at_ms.is_none() && at_ms < g.until_ms) {
            grant.ended_at_ms = Some(at_ms);
            grant.ended_by = Some(by.to_owned());
        }
    }

    /// The grants newest first, marked active as of `now_ms`.
    pub fn finish(self, org: String, now_ms: i64) -> SupportActivity {
        let mut grants: Vec<SupportGrantActivity> = self.grants.into();
        for grant in &mut grants {
            grant.active = grant.ended_at_ms.is_none() && now_ms < grant.until_ms;
        }
        grants.reverse();
        let mut refused_outside_grants: Vec<AuditEntry> = self.refused_outside.into();
        refused_outside_grants.reverse();
        SupportActivity { org, grants, refused_outside_grants, now_ms }
    }
}

/// The organisation's support grants, newest first: who granted each, for
/// how long, whether it was revoked, and every request support staff made
/// under it; and support requests refused outside any grant.
#[utoipa::path(get, path = "/api/v1/orgs/{org}/support/activity", tag = "organisations",
    params(("org" = String, Path, description = "The organisation")),
    responses((status = 200, body = SupportActivity), (status = "4XX", body = Problem)))]
pub async fn support_activity(
    State(state): State<ApiState>,
    Authenticated(actor): Authenticated,
    PathArgs(name): PathArgs<String>,
) -> Result<Json<SupportActivity>, ApiError> {
    let id = org(&name)?;
    blocking(move || {
        let context = &state.context;
        context.permit(&actor, "support.activity", Some(&id), Access::Service, false)?;
        let mut folder = GrantFolder::default();
        context
            .store
            .audit()
            .scan(|e| {
                if e.org.as_deref() == Some(id.as_str()) {
                    folder.push(e);
                }
                true
            })
            .map_err(unreadable)?;
        let activity = folder.finish(name, context.store.clock().now_millis());
        let detail = format!("{} grants", activity.grants.len());
        context.audit(&actor.audit_name(), "support.activity", Some(&id), AuditOutcome::Done, &detail);
        Ok(Json(activity))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(seq: u64, at_ms: i64, actor: &str, action: &str, outcome: AuditOutcome, detail: &str) -> StoredEntry {
        StoredEntry {
            seq,
            at_ms,
            at: String::new(),
            actor: actor.into(),
            action: action.into(),
            org: Some("acme".into()),
            outcome,
            detail: detail.into(),
            prev: String::new(),
            mac: String::new(),
        }
    }

    const H: i64 = 3_600_000;
    const ADMIN: &str = "console:alice (org-admin of acme, session 1)";
    const SUPPORT: &str = "token:sam (support of acme, id 2)";
    const OPERATOR: &str = "admin:olga (operator)";

    #[test]
    fn support_requests_are_filed_under_the_grant_in_force() {
        use AuditOutcome::*;
        let mut f = GrantFolder::default();
        f.push(stored(1, 0, SUPPORT, "export.records", Refused, "no grant"));
        f.push(stored(2, 10, ADMIN, "support.grant", Done, "4 hours, until x"));
        f.push(stored(3, 20, SUPPORT, "export.records", Done, "12 records"));
        f.push(stored(4, 30, ADMIN, "consent.set", Done, "capture on"));
        // A new grant replaces the old one.
        f.push(stored(5, H, ADMIN, "support.grant", Done, "2 hours, until y"));
        f.push(stored(6, H + 1, SUPPORT, "devices.list", Done, ""));
        f.push(stored(7, 2 * H, ADMIN, "support.revoke", Done, "active grant ended"));
        f.push(stored(8, 2 * H + 1, SUPPORT, "devices.list", Refused, "no grant"));
        f.push(stored(9, 3 * H, ADMIN, "support.grant", Refused, "too long"));
        f.push(stored(10, 3 * H, ADMIN, "support.grant", Done, "1 hours, until z"));
        f.push(stored(11, 3 * H + 1, OPERATOR, "devices.latest", Done, "allowed under the support grant of acme …"));
        f.push(stored(12, 3 * H + 2, OPERATOR, "org.status", Done, ""));
        let a = f.finish("acme".into(), 3 * H + 5);
        assert_eq!(a.grants.iter().map(|g| g.granted_seq).collect::<Vec<_>>(), vec![10, 5, 2]);
        let [now, second, first] = &a.grants[..] else { panic!("three grants") };
        assert!(now.active && now.until_ms == 4 * H);
        assert_eq!(now.actions.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![11], "an operator's read under it");
        assert_eq!((second.ended_at_ms, second.hours), (Some(2 * H), 2));
        assert_eq!(second.actions.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![6]);
        assert_eq!(first.ended_at_ms, Some(H));
        assert_eq!(first.ended_by.as_deref(), Some(ADMIN));
        assert_eq!(first.actions.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![3]);
        assert!(!first.active && !second.active);
        assert_eq!(a.refused_outside_grants.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![8, 1]);
    }

    #[test]
    fn a_grant_runs_out_by_itself_and_lists_are_bounded() {
        use AuditOutcome::*;
        let mut f = GrantFolder::default();
        f.push(stored(1, 0, ADMIN, "support.grant", Done, "1 hours, until x"));
        for i in 0..(MAX_GRANT_ACTIONS as u64 + 5) {
            f.push(stored(2 + i, 1 + i as i64, SUPPORT, "devices.list", Done, ""));
        }
        f.push(stored(1000, H, SUPPORT, "devices.list", Refused, "no grant"));
        for i in 0..(MAX_LISTED_GRANTS as u64 + 3) {
            f.push(stored(2000 + i, 2 * H + i as i64, ADMIN, "support.grant", Done, "1 hours, until x"));
        }
        let a = f.finish("acme".into(), 10 * H);
        assert_eq!(a.grants.len(), MAX_LISTED_GRANTS);
        assert!(a.grants.iter().all(|g| !g.active));
        assert_eq!(a.refused_outside_grants.len(), 1);
        assert!(is_support("admin:sam (support of acme)") && !is_support(ADMIN));
        assert_eq!(granted_hours("12 hours, until 2026"), Some(12));
        assert_eq!(granted_hours("garbage"), None);
        assert_eq!(
            granted_scope("2 hours, until 2026-12-07T10:00:00Z, devices, captures on devices ap-1").as_deref(),
            Some("devices, captures on devices ap-1")
        );
        assert_eq!(granted_scope("4 hours, until 2026-12-07T10:00:00Z"), None, "a grant from before scopes");
    }
}
