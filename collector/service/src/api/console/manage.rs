//! Console account management over the API (`/api/v1/accounts`), with
//! the same scopes as everything else: operators manage every account; an
//! org-admin manages the org-admin and support accounts of their own
//! organisation (never an operator's, never another organisation's);
//! support staff manage none. Every change, allowed or refused, is
//! audited as `console.account.<what>`, and every change ends the
//! account's sessions, so a new role, a reset second factor or a new
//! password takes effect at once.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use zeroize::Zeroizing;

use glimpse_api::{
    AccountChanged, AccountCreateRequest, AccountDeleted, AccountInfo, AccountList, AccountUpdateRequest, Problem,
};
use glimpse_common::identity::{AdminIdentity, AdminName, AdminRole, OrgId};
use glimpse_store::audit::AuditOutcome;

use super::accounts::{Account, AccountChange, AccountError};
use super::sessions::SignedInWith;
use super::Console;
use crate::admin::{Access, Actor};
use crate::api::auth::{Authenticated, JsonBody};
use crate::api::problem::ApiError;
use crate::api::routes::{blocking, identity_scope, org, PathArgs};
use crate::api::ApiState;

/// The account as the API shows it (no hash, no key).
pub fn info(account: &Account) -> AccountInfo {
    AccountInfo {
        name: account.name.clone(),
        role: account.role.as_str().to_owned(),
        org: account.org.clone(),
        created_by: account.created_by.clone(),
        created_ms: account.created_ms,
        last_sign_in_ms: account.last_sign_in_ms,
        locked_until_ms: account.locked_until_ms,
        failed_sign_ins: account.failed_sign_ins,
        totp: account.totp_sealed.is_some(),
        disabled: account.disabled,
        sites: account.sites.iter().map(|s| s.as_str().to_owned()).collect(),
    }
}

/// The problem an account error is.
pub fn problem(error: AccountError) -> ApiError {
    match error {
        AccountError::Exists(_) | AccountError::Full | AccountError::Conflict(_) => {
            ApiError::new(StatusCode::CONFLICT, "conflict", error.to_string())
        }
        AccountError::NotFound(_) => ApiError::not_found(error.to_string()),
        AccountError::Invalid(_) => ApiError::bad_request(error.to_string()),
        AccountError::BadCredentials | AccountError::BadCode => {
            ApiError::new(StatusCode::FORBIDDEN, "forbidden", error.to_string())
        }
        AccountError::Locked { .. } => ApiError::new(StatusCode::FORBIDDEN, "account-locked", error.to_string()),
        AccountError::Disabled => ApiError::forbidden(error.to_string()),
        AccountError::Store(_) => ApiError::unavailable(error.to_string()),
    }
}

fn console(state: &ApiState) -> Result<Console, ApiError> {
    state.console.clone().ok_or_else(|| ApiError::not_found("the web console is turned off"))
}

/// Who may touch an account of `role` in `org`: operators' accounts only
/// operators; the others the organisation's admins (and operators).
fn scope(role: AdminRole, org: Option<&str>) -> Result<(Option<OrgId>, Access), ApiError> {
    match (role, org) {
        (AdminRole::Operator, _) | (_, None) => Ok((None, Access::Operator)),
        (_, Some(o)) => Ok((Some(self::org(o)?), Access::Write)),
    }
}

fn org_of(account_org: Option<&str>) -> Option<OrgId> {
    account_org.and_then(|o| OrgId::new(o).ok())
}

/// Checks `actor` may change an account in each scope, auditing a refusal.
fn permit_all(
    state: &ApiState,
    actor: &Actor,
    action: &str,
    scopes: &[(Option<OrgId>, Access)],
) -> Result<(), ApiError> {
    for (org, access) in scopes {
        state.context.permit(actor, action, org.as_ref(), *access, true)?;
    }
    Ok(())
}

/// Checks `actor` may touch the existing account `name` (its scope
/// `target`). For callers other than operators, an account outside their
/// reach is answered like one that does not exist: otherwise the 403 and
/// 404 would tell an org-admin which names other organisations use. The
/// refusal is audited all the same.
fn permit_existing(
    state: &ApiState,
    actor: &Actor,
    action: &str,
    name: &str,
    target: &(Option<OrgId>, Access),
) -> Result<(), ApiError> {
    match permit_all(state, actor, action, std::slice::from_ref(target)) {
        Err(_) if actor.identity.role != AdminRole::Operator => {
            Err(ApiError::not_found(format!("no account named {name}")))
        }
        other => other,
    }
}

fn audit(state: &ApiState, actor: &Actor, action: &str, org: Option<&OrgId>, outcome: AuditOutcome, detail: &str) {
    state.context.audit(&actor.audit_name(), action, org, outcome, detail);
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Console accounts: every one for operators, the organisation's for its
/// admins; support staff are refused.
#[utoipa::path(get, path = "/api/v1/accounts", tag = "identity",
    responses((status = 200, body = AccountList), (status = "4XX", body = Problem)))]
pub async fn list_accounts(
    State(state): State<ApiState>,
    Authenticated(actor): Authenticated,
) -> Result<Json<AccountList>, ApiError> {
    let console = console(&state)?;
    let (scope, access) = identity_scope(&actor);
    blocking(move || {
        state.context.permit(&actor, "console.account.list", scope.as_ref(), access, false)?;
        let mut accounts: Vec<AccountInfo> = console
            .accounts
            .list()
            .map_err(problem)?
            .iter()
            .filter(|a| scope.as_ref().is_none_or(|o| a.org.as_deref() == Some(o.as_str())))
            .map(info)
            .collect();
        accounts.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Json(AccountList { accounts }))
    })
    .await
}

/// Create a console account (an org-admin: org-admin or support accounts
/// of their own organisation only).
#[utoipa::path(post, path = "/api/v1/accounts", tag = "identity", request_body = AccountCreateRequest,
    responses((status = 200, body = AccountInfo), (status = "4XX", body = Problem)))]
pub async fn create_account(
    State(state): State<ApiState>,
    Authenticated(actor): Authenticated,
    JsonBody(body): JsonBody<AccountCreateRequest>,
) -> Result<Json<AccountInfo>, ApiError> {
    let console = console(&state)?;
    let password = Zeroizing::new(body.password);
    let role: AdminRole = body.role.parse().map_err(|e| ApiError::bad_request(format!("role: {e}")))?;
    let name = AdminName::new(&body.name).map_err(|e| ApiError::bad_request(format!("name: {e}")))?;
    let target_org = body.org.as_deref().map(org).transpose()?;
    let identity = AdminIdentity::new(name, role, target_org).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let target = scope(role, identity.org.as_ref().map(OrgId::as_str))?;
    let sites = body
        .sites
        .iter()
        .map(|s| glimpse_common::identity::SiteId::new(s.as_str()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::bad_request(format!("sites: {e}")))?;
    let gate = console.clone();
    gate.hashing(move || {
        permit_all(&state, &actor, "console.account.create", std::slice::from_ref(&target))?;
        let now = state.now_ms();
        let org = identity.org.clone();
        match console.accounts.create_at_sites(&identity, &sites, &password, &actor.audit_name(), now) {
            Ok(account) => {
                let detail = format!("account {} ({})", account.name, describe(&account));
                audit(&state, &actor, "console.account.create", org.as_ref(), AuditOutcome::Done, &detail);
                Ok(Json(info(&account)))
            }
            Err(e) => {
                let detail = format!("account {}: {e}", identity.name);
                audit(&state, &actor, "console.account.create", org.as_ref(), AuditOutcome::Refused, &detail);
                Err(problem(e))
            }
        }
    })
    .await
}

fn describe(account: &Account) -> String {
    let sites: Vec<&str> = account.sites.iter().map(|s| s.as_str()).collect();
    match &account.org {
        Some(org) if !sites.is_empty() => format!("{} of {org}, sites {}", account.role.as_str(), sites.join("+")),
        Some(org) => format!("{} of {org}", account.role.as_str()),
        None => account.role.as_str().to_owned(),
    }
}

/// Change a console account: role and organisation, password, disabled,
/// reset its one-time codes, unlock. Ends the account's sessions.
#[utoipa::path(patch, path = "/api/v1/accounts/{name}", tag = "identity", request_body = AccountUpdateRequest,
    params(("name" = String, Path, description = "The account's name")),
    responses((status = 200, body = AccountChanged), (status = "4XX", body = Problem)))]
pub async fn update_account(
    State(state): State<ApiState>,
    Authenticated(actor): Authenticated,
    PathArgs(name): PathArgs<String>,
    JsonBody(body): JsonBody<AccountUpdateRequest>,
) -> Result<Json<AccountChanged>, ApiError> {
    let console = console(&state)?;
    let password = body.password.map(Zeroizing::new);
    let new_role: Option<AdminRole> =
        body.role.as_deref().map(str::parse).transpose().map_err(|e| ApiError::bad_request(format!("role: {e}")))?;
    let new_org = body.org.as_deref().map(org).transpose()?;
    if let Some(p) = &password {
        super::accounts::check_password(p).map_err(problem)?;
    }
    let gate = console.clone();
    gate.hashing(move || {
        let Some(current) = console.accounts.get(&name).map_err(problem)? else {
            // Only operators may learn which names exist across
            // organisations; everyone else is told the same as for an
            // account out of their scope.
            let (scope, access) = identity_scope(&actor);
            state.context.permit(&actor, "console.account.update", scope.as_ref(), access, true)?;
            return Err(ApiError::not_found(format!("no account named {name}")));
        };
        let old_scope = scope(current.role, current.org.as_deref())?;
        let identity = if new_role.is_some() || new_org.is_some() {
            let role = new_role.unwrap_or(current.role);
            // A new role brings its organisation (none for an operator);
            // a new organisation alone keeps the role.
            let org =
                if new_role.is_some() { new_org.clone() } else { new_org.clone().or(org_of(current.org.as_deref())) };
            let admin = AdminName::new(&current.name).map_err(|e| ApiError::bad_request(e.to_string()))?;
            Some(AdminIdentity::new(admin, role, org).map_err(|e| ApiError::bad_request(e.to_string()))?)
        } else {
            None
        };
        permit_existing(&state, &actor, "console.account.update", &name, &old_scope)?;
        if let Some(identity) = &identity {
            let new_scope = scope(identity.role, identity.org.as_ref().map(OrgId::as_str))?;
            permit_all(&state, &actor, "console.account.update", std::slice::from_ref(&new_scope))?;
        }
        let mut what = Vec::new();
        if let Some(identity) = &identity {
            what.push(match &identity.org {
                Some(org) => format!("role {} of {org}", identity.role.as_str()),
                None => format!("role {}", identity.role.as_str()),
            });
        }
        if password.is_some() {
            what.push("new password".to_owned());
        }
        match body.disabled {
            Some(true) => what.push("disabled".to_owned()),
            Some(false) => what.push("enabled".to_owned()),
            None => {}
        }
        if body.reset_totp {
            what.push("one-time codes reset".to_owned());
        }
        if body.unlock {
            what.push("unlocked".to_owned());
        }
        if what.is_empty() {
            return Err(ApiError::bad_request("nothing to change"));
        }
        let change = AccountChange {
            identity,
            password,
            disabled: body.disabled,
            reset_totp: body.reset_totp,
            unlock: body.unlock,
        };
        let org = org_of(current.org.as_deref());
        match console.accounts.update(&name, change) {
            Ok(account) => {
                let ended = console.sessions.end_all(&SignedInWith::Password { account: name.clone() });
                let detail = format!("account {name}: {}; {ended} sessions ended", what.join(", "));
                audit(&state, &actor, "console.account.update", org.as_ref(), AuditOutcome::Done, &detail);
                Ok(Json(AccountChanged { account: info(&account), sessions_ended: count(ended) }))
            }
            Err(e) => {
                let detail = format!("account {name}: {e}");
                audit(&state, &actor, "console.account.update", org.as_ref(), AuditOutcome::Refused, &detail);
                Err(problem(e))
            }
        }
    })
    .await
}

/// Delete a console account and end its sessions.
#[utoipa::path(delete, path = "/api/v1/accounts/{name}", tag = "identity",
    params(("name" = String, Path, description = "The account's name")),
    responses((status = 200, body = AccountDeleted), (status = "4XX", body = Problem)))]
pub async fn delete_account(
    State(state): State<ApiState>,
    Authenticated(actor): Authenticated,
    PathArgs(name): PathArgs<String>,
) -> Result<Json<AccountDeleted>, ApiError> {
    let console = console(&state)?;
    blocking(move || {
        let Some(current) = console.accounts.get(&name).map_err(problem)? else {
            let (scope, access) = identity_scope(&actor);
            state.context.permit(&actor, "console.account.delete", scope.as_ref(), access, true)?;
            return Err(ApiError::not_found(format!("no account named {name}")));
        };
        let target = scope(current.role, current.org.as_deref())?;
        permit_existing(&state, &actor, "console.account.delete", &name, &target)?;
        console.accounts.delete(&name).map_err(problem)?;
        let ended = console.sessions.end_all(&SignedInWith::Password { account: name.clone() });
        let org = org_of(current.org.as_deref());
        let detail = format!("account {name} ({}); {ended} sessions ended", describe(&current));
        audit(&state, &actor, "console.account.delete", org.as_ref(), AuditOutcome::Done, &detail);
        Ok(Json(AccountDeleted { name, sessions_ended: count(ended) }))
    })
    .await
}
