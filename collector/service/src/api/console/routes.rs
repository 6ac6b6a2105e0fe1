//! The console's own endpoints: its files under `/console/`, and under
//! `/console/api/`:
//!
//! - `GET /console/api/config`: what the sign-in page offers
//!   (certificate sign-in on or off, the certificate the browser shows);
//! - `GET|POST|DELETE /console/api/session`: the session's facts (with its
//!   CSRF token), sign-in with a password (and a one-time code once set
//!   up), sign-out;
//! - `POST /console/api/session/certificate`: sign-in with the admin
//!   client certificate of the TLS handshake, where configured;
//! - `POST|PUT|DELETE /console/api/totp`: set up, confirm and turn off
//!   one-time codes for the signed-in account;
//! - `PUT /console/api/password`: the signed-in account's own password.
//!
//! Everything else the pages show comes from `/api/v1`.

use axum::extract::{Path, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post, put};
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
        .route("/console/api/config", get(sign_in_config))
        .route("/console/api/session", get(session).post(sign_in).delete(sign_out))
        .route("/console/api/session/certificate", post(certificate_sign_in))
        .route("/console/api/totp", post(totp_begin).put(totp_confirm).delete(totp_disable))
        .route("/console/api/password", put(change_password))
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
    /// The current one-time code, once the account has set them up
    /// (empty or absent otherwise).
    #[serde(default)]
    pub code: Option<String>,
}

/// A one-time code, to confirm or turn off TOTP.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodeRequest {
    /// Six digits from the authenticator app.
    pub code: String,
}

/// The signed-in user's own password change.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordChangeRequest {
    /// The password now.
    pub current: String,
    /// The new one.
    pub new: String,
}

/// Certificate sign-in takes an empty JSON object (JSON so that a
/// cross-site form cannot send it).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateSignInRequest {}

/// What the sign-in page offers.
#[derive(Debug, Serialize)]
pub struct SignInConfig {
    /// Whether `POST /console/api/session/certificate` is on.
    pub certificate_sign_in: bool,
    /// The admin name of the client certificate this connection
    /// presented, when certificate sign-in is on.
    pub certificate_name: Option<String>,
}

/// A TOTP key to set up in an authenticator app (shown once).
#[derive(Debug, Serialize)]
pub struct TotpSetup {
    /// The key, base32.
    pub secret: String,
    /// The `otpauth://totp/...` URI (what a QR code would hold).
    pub uri: String,
    /// Digits per code.
    pub digits: usize,
    /// Seconds per code.
    pub period_secs: i64,
}

/// The account's TOTP state after a change.
#[derive(Debug, Serialize)]
pub struct TotpState {
    /// Whether sign-in needs a code.
    pub enabled: bool,
    /// Other sessions of the account that were ended.
    pub sessions_ended: usize,
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
    /// Whether the account signs in with a one-time code too (none for a
    /// certificate session).
    pub totp: Option<bool>,
}

fn info_of(console: &Console, session: &Session, now_ms: i64, totp: Option<bool>) -> SessionInfo {
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
        expires_ms: session
            .not_after_ms
            .map_or(session.created_ms + absolute_ms, |end| end.min(session.created_ms + absolute_ms)),
        totp,
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
    let totp = match &session.with {
        SignedInWith::Password { account } => {
            let (accounts, account) = (console.accounts.clone(), account.clone());
            blocking(move || Ok(accounts.get(&account).ok().flatten().map(|a| a.totp_sealed.is_some()))).await?
        }
        SignedInWith::Certificate { .. } => None,
    };
    Ok(Json(info_of(console, &session, now_ms, totp)))
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
    let code = request.code.map(Zeroizing::new);
    let (result, known) = console
        .hashing(move || {
            let result =
                accounts.sign_in(&name, &password, code.as_deref().map(String::as_str), now_ms, max, lockout_ms);
            let known =
                !matches!(result, Err(AccountError::BadCredentials)) || accounts.get(&name).ok().flatten().is_some();
            Ok((result, known))
        })
        .await?;
    let peer = info.peer;
    match result {
        Ok((account, identity)) => {
            let with = SignedInWith::Password { account: account.name.clone() };
            let new = console.sessions.create_at_sites(identity, account.sites.clone(), with, now_ms);
            let factor = if account.totp_sealed.is_some() { "a password and a one-time code" } else { "a password" };
            let detail = format!("signed in from {peer} with {factor}; session {}", new.session.id);
            info!(account = %account.name, %peer, "console sign-in");
            let org = new.session.identity.org.clone();
            audit(&state, format!("console:{}", account.name), "console.sign-in", org, AuditOutcome::Done, detail)
                .await?;
            let totp = Some(account.totp_sealed.is_some());
            let mut response = Json(info_of(&console, &new.session, now_ms, totp)).into_response();
            set_session_cookie(&mut response, &new.token)?;
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
                AccountError::BadCredentials
                | AccountError::BadCode
                | AccountError::Disabled
                | AccountError::NotFound(_) => ApiError::unauthenticated(error.public_text()),
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

/// `GET /console/api/config`: what the sign-in page offers.
async fn sign_in_config(State(state): State<ApiState>, parts: Parts) -> Result<Json<SignInConfig>, ApiError> {
    let console = console(&state)?;
    let on = console.config.certificate_sign_in;
    let certificate_name = match (&conn_info(&parts)?.certificate, on) {
        (Some(Ok((identity, _))), true) => Some(identity.name.as_str().to_owned()),
        _ => None,
    };
    Ok(Json(SignInConfig { certificate_sign_in: on, certificate_name }))
}

fn set_session_cookie(response: &mut Response, token: &str) -> Result<(), ApiError> {
    let cookie = HeaderValue::from_str(&sessions::set_cookie(token))
        .map_err(|_| ApiError::internal("cannot set the session cookie"))?;
    response.headers_mut().insert(header::SET_COOKIE, cookie);
    Ok(())
}

/// `POST /console/api/session/certificate`: signs in as the admin
/// certificate the browser presented in the TLS handshake, where
/// `[console] certificate_sign_in` is on. JSON only and not from another
/// site, like the password sign-in; a revoked or expired certificate is
/// refused; the session ends when the certificate does.
async fn certificate_sign_in(
    State(state): State<ApiState>,
    parts: Parts,
    JsonBody(_): JsonBody<CertificateSignInRequest>,
) -> Result<Response, ApiError> {
    let console = console(&state)?.clone();
    let info = conn_info(&parts)?.clone();
    let now_ms = state.now_ms();
    let peer = info.peer;
    if !console.config.certificate_sign_in {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "certificate-sign-in-off",
            "signing in with a client certificate is turned off ([console] certificate_sign_in)",
        ));
    }
    if from_other_site(&parts) {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "csrf-refused", "sign in from the console itself"));
    }
    let (identity, serial) = match &info.certificate {
        Some(Ok(pair)) => pair.clone(),
        Some(Err(reason)) => return Err(ApiError::forbidden(reason.clone())),
        None => {
            return Err(ApiError::unauthenticated(
                "this browser presented no admin client certificate when it connected",
            ))
        }
    };
    let actor = format!("console:{} (certificate {serial})", identity.name);
    let record = state.context.store.admins().get(&serial);
    // The certificate's own notAfter, or the one its record imported from
    // the PKI directory, whichever comes first.
    let not_after_ms = match (info.certificate_not_after_ms, record.as_ref().and_then(|r| r.not_after_ms)) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let refusal = if let Some(reason) = state.certificate_revoked(&serial) {
        Some(reason)
    } else if not_after_ms.is_some_and(|end| end <= now_ms) {
        Some(format!("admin certificate {serial} has expired"))
    } else {
        None
    };
    if let Some(reason) = refusal {
        warn!(%peer, "console certificate sign-in refused: {reason}");
        let detail = format!("from {peer} with a certificate: {reason}");
        audit(&state, actor, "console.sign-in", identity.org.clone(), AuditOutcome::Refused, detail).await?;
        return Err(ApiError::unauthenticated(reason));
    }
    // Recorded now (not later, as a request's use is), so that the
    // certificate can be listed and revoked at once.
    let (store, seen, seen_serial) = (state.context.store.clone(), identity.clone(), serial.clone());
    blocking(move || {
        if let Err(e) = store.admins().note_seen(&seen, &seen_serial, not_after_ms, now_ms) {
            warn!("cannot record the admin certificate: {e}");
        }
        Ok(())
    })
    .await?;
    let org = identity.org.clone();
    let new = console.sessions.create_until(
        identity,
        SignedInWith::Certificate { serial: serial.clone() },
        now_ms,
        not_after_ms,
    );
    info!(%peer, %serial, "console sign-in with a certificate");
    let detail = format!("signed in from {peer} with admin certificate {serial}; session {}", new.session.id);
    audit(&state, actor, "console.sign-in", org, AuditOutcome::Done, detail).await?;
    let mut response = Json(info_of(&console, &new.session, now_ms, None)).into_response();
    set_session_cookie(&mut response, &new.token)?;
    Ok(response)
}

/// The signed-in session of a changing request (cookie, CSRF token) and
/// its account's name; certificate sessions have no account.
fn account_session(console: &Console, parts: &Parts, now_ms: i64) -> Result<(Session, String), ApiError> {
    let (_, session) = console.request_session(&parts.headers, now_ms)?;
    check_csrf(parts, &session)?;
    match &session.with {
        SignedInWith::Password { account } => {
            let account = account.clone();
            Ok((session, account))
        }
        SignedInWith::Certificate { .. } => Err(ApiError::bad_request(
            "this session was opened with a client certificate, which has no console account",
        )),
    }
}

fn actor_of(session: &Session) -> String {
    format!("console:{} (session {})", session.identity.name, session.id)
}

/// `POST /console/api/totp`: a fresh TOTP key for the signed-in account,
/// pending until confirmed with a code (`PUT`).
async fn totp_begin(State(state): State<ApiState>, parts: Parts) -> Result<Json<TotpSetup>, ApiError> {
    let console = console(&state)?.clone();
    let (session, name) = account_session(&console, &parts, state.now_ms())?;
    let accounts = console.accounts.clone();
    let enrolment = blocking(move || accounts.begin_totp(&name).map_err(super::manage::problem)).await?;
    let org = session.identity.org.clone();
    let detail = "one-time code set-up started (not yet confirmed)".to_owned();
    audit(&state, actor_of(&session), "console.totp.begin", org, AuditOutcome::Done, detail).await?;
    Ok(Json(TotpSetup {
        secret: enrolment.secret.as_str().to_owned(),
        uri: enrolment.uri.as_str().to_owned(),
        digits: super::totp::DIGITS,
        period_secs: super::totp::STEP_SECS,
    }))
}

/// `PUT /console/api/totp`: confirms the pending key with a current code;
/// sign-in then needs a code. The account's other sessions end.
async fn totp_confirm(
    State(state): State<ApiState>,
    parts: Parts,
    JsonBody(request): JsonBody<CodeRequest>,
) -> Result<Json<TotpState>, ApiError> {
    totp_change(state, parts, request, true).await
}

/// `DELETE /console/api/totp`: turns one-time codes off, with a current
/// code as proof. The account's other sessions end.
async fn totp_disable(
    State(state): State<ApiState>,
    parts: Parts,
    JsonBody(request): JsonBody<CodeRequest>,
) -> Result<Json<TotpState>, ApiError> {
    totp_change(state, parts, request, false).await
}

async fn totp_change(
    state: ApiState,
    parts: Parts,
    request: CodeRequest,
    on: bool,
) -> Result<Json<TotpState>, ApiError> {
    let console = console(&state)?.clone();
    let now_ms = state.now_ms();
    let (session, name) = account_session(&console, &parts, now_ms)?;
    let accounts = console.accounts.clone();
    let code = Zeroizing::new(request.code);
    let account = name.clone();
    let result = blocking(move || {
        Ok(if on {
            accounts.confirm_totp(&account, &code, now_ms)
        } else {
            accounts.disable_totp(&account, &code, now_ms)
        })
    })
    .await?;
    let action = if on { "console.totp.enable" } else { "console.totp.disable" };
    let org = session.identity.org.clone();
    match result {
        Ok(_) => {
            let ended = console.sessions.end_others(&session.with, &session.id);
            let detail =
                format!("one-time codes turned {}; {ended} other sessions ended", if on { "on" } else { "off" });
            audit(&state, actor_of(&session), action, org, AuditOutcome::Done, detail).await?;
            Ok(Json(TotpState { enabled: on, sessions_ended: ended }))
        }
        Err(error) => {
            audit(&state, actor_of(&session), action, org, AuditOutcome::Refused, error.to_string()).await?;
            Err(match error {
                AccountError::BadCode => ApiError::new(
                    StatusCode::FORBIDDEN,
                    "wrong-code",
                    "that code is wrong, expired or already used; wait for the next one",
                ),
                other => super::manage::problem(other),
            })
        }
    }
}

/// `PUT /console/api/password`: the signed-in account's own new password,
/// with the current one. The account's other sessions end.
async fn change_password(
    State(state): State<ApiState>,
    parts: Parts,
    JsonBody(request): JsonBody<PasswordChangeRequest>,
) -> Result<StatusCode, ApiError> {
    let console = console(&state)?.clone();
    let now_ms = state.now_ms();
    let (session, name) = account_session(&console, &parts, now_ms)?;
    let ip = conn_info(&parts)?.peer.ip();
    if let Some(wait_ms) = state.limiter.blocked(ip, now_ms) {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate-limited",
            format!("too many failed attempts from this address; try again in {} s", wait_ms / 1000 + 1),
        ));
    }
    let accounts = console.accounts.clone();
    let (current, new) = (Zeroizing::new(request.current), Zeroizing::new(request.new));
    let result = console.hashing(move || Ok(accounts.change_password(&name, &current, &new))).await?;
    let org = session.identity.org.clone();
    match result {
        Ok(_) => {
            let ended = console.sessions.end_others(&session.with, &session.id);
            let detail = format!("own password changed; {ended} other sessions ended");
            audit(&state, actor_of(&session), "console.account.password", org, AuditOutcome::Done, detail).await?;
            Ok(StatusCode::NO_CONTENT)
        }
        Err(error) => {
            if error == AccountError::BadCredentials {
                // A stolen session must not become a password oracle.
                state.limiter.failed(ip, now_ms);
            }
            let detail = error.to_string();
            audit(&state, actor_of(&session), "console.account.password", org, AuditOutcome::Refused, detail).await?;
            Err(match error {
                AccountError::BadCredentials => {
                    ApiError::new(StatusCode::FORBIDDEN, "forbidden", "the current password is wrong")
                }
                other => super::manage::problem(other),
            })
        }
    }
}
