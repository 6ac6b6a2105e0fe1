//! `GET /metrics`, `GET /healthz` and `GET /readyz`, outside `/api/v1`
//! where scrapers and probes expect them.
//!
//! From an address in `[admin] health_from` (`metrics_from` for metrics)
//! they need no credential: Prometheus scrapers and load-balancer probes
//! rarely hold a client certificate. From anywhere else they need one like
//! every other request (a certificate or a token), and metrics, which name
//! every organisation, an operator's.

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use glimpse_api::{Health, Problem};

use super::auth::{conn_info, Authenticated};
use super::problem::ApiError;
use super::ApiState;
use crate::admin::Access;
use crate::telemetry::{Readiness, Telemetry, CONTENT_TYPE};

/// Every metric, in the OpenMetrics text format.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses(
        (status = 200, description = "OpenMetrics text", content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8", body = String),
        (status = "4XX", body = Problem), (status = 503, body = Problem)))]
pub async fn metrics(State(state): State<ApiState>, mut parts: Parts) -> Result<Response, ApiError> {
    let telemetry = telemetry(&state)?;
    if !state.health.metrics_allowed(conn_info(&parts)?.peer.ip()) {
        let Authenticated(actor) = Authenticated::from_request_parts(&mut parts, &state).await?;
        let context = state.context.clone();
        // Refusals are audited by permit; a scrape every few seconds is
        // not an event worth an audit entry.
        tokio::task::spawn_blocking(move || context.permit(&actor, "metrics.read", None, Access::Operator, false))
            .await
            .map_err(|_| ApiError::internal("the authorisation failed unexpectedly"))??;
    }
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], telemetry.render()).into_response())
}

/// Alive: every part of the collector runs (200), or which does not (503).
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, body = Health), (status = 503, body = Health), (status = "4XX", body = Problem)))]
pub async fn healthz(State(state): State<ApiState>, mut parts: Parts) -> Result<Response, ApiError> {
    let telemetry = admit_probe(&state, &mut parts).await?;
    Ok(answer(telemetry.liveness()))
}

/// Ready to take data: every part runs, the control database answers, the
/// segment directory is writable with enough free space (200); or every
/// reason not (503).
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, body = Health), (status = 503, body = Health), (status = "4XX", body = Problem)))]
pub async fn readyz(State(state): State<ApiState>, mut parts: Parts) -> Result<Response, ApiError> {
    let telemetry = admit_probe(&state, &mut parts).await?;
    // A database read and a statvfs.
    let readiness = tokio::task::spawn_blocking(move || telemetry.readiness())
        .await
        .map_err(|_| ApiError::internal("the readiness check failed unexpectedly"))?;
    Ok(answer(readiness))
}

/// Lets a probe through from `health_from`, or any authenticated caller.
async fn admit_probe(state: &ApiState, parts: &mut Parts) -> Result<std::sync::Arc<Telemetry>, ApiError> {
    let telemetry = telemetry(state)?;
    if !state.health.health_allowed(conn_info(parts)?.peer.ip()) {
        Authenticated::from_request_parts(parts, state).await?;
    }
    Ok(telemetry)
}

fn telemetry(state: &ApiState) -> Result<std::sync::Arc<Telemetry>, ApiError> {
    state.telemetry.clone().ok_or_else(|| ApiError::unavailable("telemetry is not wired into this API"))
}

fn answer(readiness: Readiness) -> Response {
    let status = if readiness.ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(Health { ready: readiness.ready, problems: readiness.problems })).into_response()
}
