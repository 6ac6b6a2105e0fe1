//! The console's own endpoints: its files under `/console/`, and under
//! `/console/api/` sign-in, the session's facts (with its CSRF token) and
//! sign-out. Everything else the pages show comes from `/api/v1`.

use axum::extract::{Path, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};
use zeroize::Zeroizing;

use glimpse_store::audit::aggregate::Seen;
use glimpse_store::audit::AuditOutcome;

use super::accounts::AccountError;
use super::assets;
use super::sessions::{self, Session, SignedInWith};
use super::Console;
use crate::api::auth::{check_csrf, conn_info, from_other_site, JsonBody};
use crate::api::problem::ApiError;
use crate::api::routes::blocking;
use crate::api::ApiState;

/// The console's routes (merged into the admin API's router).
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/console/") }))
        .route("/console", get(|| async { Redirect::to("/console/") }))
        .route("/console/", get(|State(state): State<ApiState>| async move { file(&state, "") }))
        .route("/console/api/session", get(session).post(sign_in).delete(sign_out))
        .route(
            "/console/{*path}",
            get(|State(state): State<ApiState>, Path(path): Path<String>| async move { file(&state, &path) }),
        )
}

fn file(state: &ApiState, path: &str) -> Response {
    if state.console.is_none() {
        return ApiError::not_found("the web console is turned off ([console] enabled = false)").into_response();
    }
    assets::serve(path)
}

fn console(state: &ApiState) -> Result<&Console, ApiError> {
    state.console.as_ref().ok_or_else(|| ApiError::not_found("the web console is turned off"))
}

/// A sign-in with an account's password.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignInRequest {
    /// Account name.
    pub name: String,
    /// Password.
    pub password: String,
}

/// The signed-in session, as the pages see it.
#[derive(Debug, Serialize)]
pub struct SessionInfo {
    /// Admin name.
    pub name: String,
    /// Role: operator, org-admin or support.
    pub role: String,
    /// Organisation (none for operators).
    pub org: Option<String>,
    /// How the session was opened: `password` or `certificate`.
    pub signed_in_with: String,
    /// The token to send in `X-CSRF-Token` with every change.
    pub csrf: String,
    /// Sign-in time, Unix ms.
    pub created_ms: i64,
    /// When the session ends if unused from now on, Unix ms.
    pub idle_expires_ms: i64,
    /// When the session ends whatever its use, Unix ms.
    pub expires_ms: i64,
}

fn info_of(console: &Console, session: &Session, now_ms: i64) -> SessionInfo {
    let idle_ms = (console.config.idle_timeout_minutes as i64) * 60_000;
    let absolute_ms = (console.config.session_hours as i64) * 3_600_000;
    SessionInfo {
        name: session.identity.name.as_str().to_owned(),
        role: session.identity.role.as_str().to_owned(),
        org: session.identity.org.as_ref().map(|o| o.as_str().to_owned()),
        signed_in_with: match session.with {
            SignedInWith::Password { .. } => "password",
            SignedInWith::Certificate { .. } => "certificate",
        }
        .to_owned(),
        csrf: session.csrf.clone(),
        created_ms: session.created_ms,
        idle_expires_ms: now_ms + idle_ms,
        expires_ms: session.created_ms + absolute_ms,
    }
}

/// Writes an audit entry on a blocking thread (the log does file I/O).
async fn audit(
    state: &ApiState,
    actor: String,
    action: &'static str,
    org: Option<glimpse_common::identity::OrgId>,
    outcome: AuditOutcome,
    detail: String,
) -> Result<(), ApiError> {
    let context = state.context.clone();
    blocking(move || {
        context.audit(&actor, action, org.as_ref(), outcome, &detail);
        Ok(())
    })
    .await
}

/// `GET /console/api/session`: the session the cookie opens, with its
/// CSRF token.
async fn session(State(state): State<ApiState>, parts: Parts) -> Result<Json<SessionInfo>, ApiError> {
    let console = console(&state)?;
    let now_ms = state.now_ms();
    let (_, session) = console.request_session(&parts.headers, now_ms)?;
    Ok(Json(info_of(console, &session, now_ms)))
}

/// `POST /console/api/session`: signs in with a name and password; the
/// answer sets the session cookie.
async fn sign_in(
    State(state): State<ApiState>,
    parts: Parts,
    JsonBody(request): JsonBody<SignInRequest>,
) -> Result<Response, ApiError> {
    let console = console(&state)?.clone();
    let info = conn_info(&parts)?.clone();
    let now_ms = state.now_ms();
    if from_other_site(&parts) {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "csrf-refused", "sign in from the console itself"));
    }
    let ip = info.peer.ip();
    if let Some(wait_ms) = state.limiter.blocked(ip, now_ms) {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate-limited",
            format!("too many failed sign-ins from this address; try again in {} s", wait_ms / 1000 + 1),
        ));
    }
    let accounts = console.accounts.clone();
    let (max, lockout_ms) = (console.config.max_failed_sign_ins, (console.config.lockout_minutes as i64) * 60_000);
    let name = request.name.clone();
    let password = Zeroizing::new(request.password);
    let (result, known) = blocking(move || {
        let result = accounts.sign_in(&name, &password, now_ms, max, lockout_ms);
        let known =
            !matches!(result, Err(AccountError::BadCredentials)) || accounts.get(&name).ok().flatten().is_some();
        Ok((result, known))
    })
    .await?;
    let peer = info.peer;
    match result {
        Ok((account, identity)) => {
            let new =
                console.sessions.create(identity, SignedInWith::Password { account: account.name.clone() }, now_ms);
            let detail = format!("signed in from {peer} with a password; session {}", new.session.id);
            info!(account = %account.name, %peer, "console sign-in");
            let org = new.session.identity.org.clone();
            audit(&state, format!("console:{}", account.name), "console.sign-in", org, AuditOutcome::Done, detail)
                .await?;
            let mut response = Json(info_of(&console, &new.session, now_ms)).into_response();
            let cookie = HeaderValue::from_str(&sessions::set_cookie(&new.token))
                .map_err(|_| ApiError::internal("cannot set the session cookie"))?;
            response.headers_mut().insert(header::SET_COOKIE, cookie);
            Ok(response)
        }
        Err(error) => {
            state.limiter.failed(ip, now_ms);
            // Failures against an account are bounded by its lockout, so
            // each is audited; guesses at names that do not exist are
            // audited per source and minute.
            if known || state.refusals.observe(&ip, 1) == Seen::Audit {
                warn!(%peer, "console sign-in refused: {error}");
                let actor = if known { format!("console:{}", request.name) } else { format!("peer:{peer}") };
                let detail = format!("from {peer}: {error}");
                audit(&state, actor, "console.sign-in", None, AuditOutcome::Refused, detail).await?;
            }
            Err(match error {
                AccountError::Locked { .. } => {
                    ApiError::new(StatusCode::FORBIDDEN, "account-locked", error.to_string())
                }
                AccountError::BadCredentials => ApiError::unauthenticated(error.to_string()),
                other => ApiError::unavailable(other.to_string()),
            })
        }
    }
}

/// `DELETE /console/api/session`: signs out (CSRF token required).
async fn sign_out(State(state): State<ApiState>, parts: Parts) -> Result<Response, ApiError> {
    let console = console(&state)?;
    let now_ms = state.now_ms();
    let (token, session) = console.request_session(&parts.headers, now_ms)?;
    check_csrf(&parts, &session)?;
    console.sessions.end(&token);
    let actor = format!("console:{}", session.identity.name);
    let detail = format!("signed out; session {}", session.id);
    audit(&state, actor, "console.sign-out", session.identity.org.clone(), AuditOutcome::Done, detail).await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&sessions::clear_cookie()).map_err(|_| ApiError::internal("cookie"))?,
    );
    Ok(response)
}
