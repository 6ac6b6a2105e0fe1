//! Who is asking: an API token in `Authorization: Bearer`, a web console
//! session cookie (with its CSRF token on changes), or an admin client
//! certificate verified in the TLS handshake, in that order of precedence
//! (a browser may hold a certificate the user does not mean to use).
//! Failed attempts are counted per source address ([`super::limiter`]) and
//! refusals audited per source and minute.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use serde::de::DeserializeOwned;
use tracing::warn;

use glimpse_store::audit::aggregate::Seen;
use glimpse_store::audit::AuditOutcome;

use super::live::Credential;
use super::problem::ApiError;
use super::server::ConnInfo;
use super::ApiState;
use crate::admin::{Actor, ActorVia};

/// An authenticated caller; handlers take it as an argument.
#[derive(Debug, Clone)]
pub struct Authenticated(pub Actor);

/// The connection's facts (address, certificate), for handlers that do
/// their own admission (health probes).
pub fn conn_info(parts: &Parts) -> Result<&ConnInfo, ApiError> {
    parts.extensions.get::<ConnInfo>().ok_or_else(|| ApiError::internal("request without connection facts"))
}

fn refuse(state: &ApiState, info: &ConnInfo, now_ms: i64, error: ApiError) -> ApiError {
    let peer = info.peer;
    state.limiter.failed(peer.ip(), now_ms);
    audit_refusal(state, info, error)
}

/// Audits (per source and minute) a request refused before a credential
/// was verified, without counting it towards the token-guessing limit (a
/// request with no credential at all guesses nothing).
fn audit_refusal(state: &ApiState, info: &ConnInfo, error: ApiError) -> ApiError {
    let peer = info.peer;
    if state.refusals.observe(&peer.ip(), 1) == Seen::Audit {
        warn!(%peer, detail = %error.detail, "admin API request refused: not authenticated");
        let (state, detail) = (state.clone(), error.detail.clone());
        drop(tokio::task::spawn_blocking(move || {
            state.context.audit(&format!("peer:{peer}"), "admin.authenticate", None, AuditOutcome::Refused, &detail)
        }));
    }
    error
}

impl FromRequestParts<ApiState> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, Self::Rejection> {
        let info = conn_info(parts)?.clone();
        let now_ms = state.now_ms();
        if let Some(value) = parts.headers.get(header::AUTHORIZATION) {
            // Only tokens can be guessed, so only they are held off: an
            // address that failed too often cannot lock out the admins
            // with certificates behind the same NAT.
            if let Some(wait_ms) = state.limiter.blocked(info.peer.ip(), now_ms) {
                return Err(ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate-limited",
                    format!("too many failed authentications from this address; try again in {} s", wait_ms / 1000 + 1),
                ));
            }
            let token = value
                .to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
                .map(str::trim);
            let Some(token) = token else {
                return Err(refuse(
                    state,
                    &info,
                    now_ms,
                    ApiError::unauthenticated("Authorization must be `Bearer <token>`"),
                ));
            };
            return match state.tokens.authenticate(token, now_ms) {
                Ok((actor, persist)) => {
                    if let ActorVia::Token { id } = &actor.via {
                        info.live.used(Credential::Token(id.clone()));
                        if persist {
                            let (tokens, id) = (state.tokens.clone(), id.clone());
                            drop(tokio::task::spawn_blocking(move || tokens.persist_use(&id)));
                        }
                    }
                    Ok(Authenticated(actor))
                }
                Err(e) => Err(refuse(state, &info, now_ms, ApiError::unauthenticated(e.to_string()))),
            };
        }
        if let Some(token) = crate::api::console::sessions::cookie_token(&parts.headers) {
            if let Some(console) = &state.console {
                let actor = session_actor(console, parts, &token, now_ms)?;
                // A certificate session stops with its certificate's
                // revocation, at the next request.
                if let ActorVia::Session { account, .. } = &actor.via {
                    if let Some(serial) = account.strip_prefix("certificate:") {
                        if let Some(reason) = state.certificate_revoked(serial) {
                            let with =
                                crate::api::console::sessions::SignedInWith::Certificate { serial: serial.to_owned() };
                            console.sessions.end_all(&with);
                            return Err(ApiError::unauthenticated(reason));
                        }
                    }
                }
                return Ok(Authenticated(actor));
            }
        }
        match &info.certificate {
            Some(Ok((identity, serial))) => {
                if let Some(reason) = state.certificate_revoked(serial) {
                    return Err(refuse(state, &info, now_ms, ApiError::unauthenticated(reason)));
                }
                state.note_certificate_use(identity, serial);
                Ok(Authenticated(Actor::certificate(identity.clone(), serial.clone())))
            }
            Some(Err(reason)) => Err(ApiError::forbidden(reason.clone())),
            None => Err(audit_refusal(
                state,
                &info,
                ApiError::unauthenticated(
                    "present an admin client certificate or an API token (Authorization: Bearer)",
                ),
            )),
        }
    }
}

/// The actor a console session cookie stands for. A request that may
/// change something (any method but GET, HEAD, OPTIONS) must carry the
/// session's CSRF token in `X-CSRF-Token` and must not come from another
/// site (`Sec-Fetch-Site`, sent by every current browser).
pub fn session_actor(
    console: &crate::api::console::Console,
    parts: &Parts,
    token: &str,
    now_ms: i64,
) -> Result<Actor, ApiError> {
    let session = console.session(token, now_ms)?;
    if !parts.method.is_safe() {
        check_csrf(parts, &session)?;
    }
    Ok(Actor {
        identity: session.identity.clone(),
        via: ActorVia::Session { id: session.id.clone(), account: session.with.key() },
        read_only: false,
        sites: session.sites.clone(),
    })
}

/// Refuses a changing request without the session's CSRF token, or sent
/// from another site.
pub fn check_csrf(parts: &Parts, session: &crate::api::console::Session) -> Result<(), ApiError> {
    let cross_site = from_other_site(parts);
    let token_ok =
        parts.headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()).is_some_and(|token| session.csrf_matches(token));
    if cross_site || !token_ok {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "csrf-refused",
            "a change from the console must carry the session's X-CSRF-Token and come from the console itself",
        ));
    }
    Ok(())
}

/// Whether the browser says the request comes from another site
/// (`Sec-Fetch-Site` other than `same-origin` or `none`; absent from
/// non-browser clients, which carry no ambient cookie to abuse).
pub fn from_other_site(parts: &Parts) -> bool {
    parts
        .headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|site| !matches!(site, "same-origin" | "none"))
}

/// The header a console page sends its session's CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// Most bytes of a JSON request body.
pub const MAX_JSON_BODY: usize = 64 * 1024;

/// A JSON request body, bounded to [`MAX_JSON_BODY`], unknown fields
/// refused (by the types), every rejection a problem document.
#[derive(Debug, Clone)]
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let json =
            req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| {
                v.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
            });
        if !json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "send the body as Content-Type: application/json",
            ));
        }
        let bytes = axum::body::to_bytes(req.into_body(), MAX_JSON_BODY).await.map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload-too-large",
                format!("request bodies are at most {MAX_JSON_BODY} bytes"),
            )
        })?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
    }
}

/// A query string, bounded (see [`super::MAX_URI_BYTES`]), unknown
/// parameters refused by the types, a rejection a problem document.
#[derive(Debug, Clone)]
pub struct QueryArgs<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for QueryArgs<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        serde_urlencoded::from_str(query)
            .map(QueryArgs)
            .map_err(|e| ApiError::bad_request(format!("invalid query string: {e}")))
    }
}
