//! Diagnostic bundles for support cases: asking a connected device for one
//! (an admin action, so authorised and audited like the others), and
//! reading the bundles it sent, which are stored as metadata records with
//! metadata's retention.

use std::ops::ControlFlow;

use axum::extract::State;
use axum::Json;

use glimpse_api::{DiagnosticsList, DiagnosticsQuery, DiagnosticsRequested, Problem, StoredDiagnostics};
use glimpse_common::identity::DeviceId;
use glimpse_common::record::{DataKind, RecordBody};
use glimpse_common::wire::admin::{AdminAction, AdminReply};
use glimpse_store::audit::AuditOutcome;

use super::auth::{Authenticated, QueryArgs};
use super::problem::ApiError;
use super::routes::{act, blocking, org, unexpected, PathArgs};
use super::ApiState;
use crate::admin::Access;
use glimpse_common::wire::admin::GrantKind;

/// A bundle is the device's state: part of every support grant.
const DEVICES: Access = Access::Read(GrantKind::Devices);

/// Most bundles one answer lists.
pub const MAX_LISTED_BUNDLES: usize = 10;

/// Most records one read looks at in each window (bounded like the
/// console's views).
const MAX_SCANNED: usize = super::views::MAX_SCANNED;

const DAY_MS: i64 = 86_400_000;

fn device_id(value: &str) -> Result<DeviceId, ApiError> {
    DeviceId::new(value).map_err(|e| ApiError::bad_request(format!("device {value:?}: {e}")))
}

/// Ask a connected device for a diagnostic bundle: its build, model and
/// serial number, configuration without secrets, recent log lines, spool
/// state, and which probes and tools work. The device gathers it (running
/// its probes once) and sends it as a record; read it with `GET` on the
/// same path. Support staff and operators may ask under the organisation's
/// grant (devices are part of every one). Refused (409)
/// when the device is not connected or its agent is older than 0.3.0.
#[utoipa::path(post, path = "/api/v1/orgs/{org}/devices/{device}/diagnostics", tag = "devices",
    params(("org" = String, Path, description = "The organisation"), ("device" = String, Path, description = "The device")),
    responses((status = 202, body = DiagnosticsRequested), (status = "4XX", body = Problem)))]
pub async fn request_diagnostics(
    State(state): State<ApiState>,
    Authenticated(actor): Authenticated,
    PathArgs((org_name, device_name)): PathArgs<(String, String)>,
) -> Result<(axum::http::StatusCode, Json<DiagnosticsRequested>), ApiError> {
    let action = AdminAction::RequestDiagnostics { org: org(&org_name)?, device: device_id(&device_name)? };
    match act(&state, actor, action).await? {
        AdminReply::DiagnosticsRequested { id } => {
            Ok((axum::http::StatusCode::ACCEPTED, Json(DiagnosticsRequested { id })))
        }
        other => Err(unexpected(other)),
    }
}

/// A device's stored diagnostic bundles of the last 60 days, newest first
/// (at most 10), or only the one answering `request_id`. Empty while a
/// requested bundle is still on its way.
#[utoipa::path(get, path = "/api/v1/orgs/{org}/devices/{device}/diagnostics", tag = "devices",
    params(("org" = String, Path, description = "The organisation"), ("device" = String, Path, description = "The device"),
        DiagnosticsQuery),
    responses((status = 200, body = DiagnosticsList), (status = "4XX", body = Problem)))]
pub async fn list_diagnostics(
    State(state): State<ApiState>,
    Authenticated(actor): Authenticated,
    PathArgs((org_name, device_name)): PathArgs<(String, String)>,
    QueryArgs(query): QueryArgs<DiagnosticsQuery>,
) -> Result<Json<DiagnosticsList>, ApiError> {
    let org = org(&org_name)?;
    let device = device_id(&device_name)?;
    blocking(move || {
        let context = &state.context;
        context.permit_device(&actor, "diagnostics.read", Some(&org), Some(&device), DEVICES, false)?;
        let now = state.now_ms();
        let mut found: Vec<(i64, serde_json::Value)> = Vec::new();
        // The newest day first: a bundle is usually read right after it
        // was asked for, and a long scan is needed only for older ones.
        for back in [DAY_MS, 7 * DAY_MS, 60 * DAY_MS] {
            found.clear();
            let mut scanned = 0usize;
            let mut failed = None;
            context
                .store
                .read_after(&org, DataKind::Metadata, (Some(now - back), None), None, &mut |_, stored| {
                    scanned += 1;
                    if scanned > MAX_SCANNED {
                        return ControlFlow::Break(());
                    }
                    let RecordBody::Diagnostics(bundle) = &stored.record.body else { return ControlFlow::Continue(()) };
                    if stored.device != device || query.request_id.is_some_and(|id| id != bundle.request_id) {
                        return ControlFlow::Continue(());
                    }
                    match serde_json::to_value(bundle) {
                        Ok(json) => found.push((stored.received_at_ms, json)),
                        Err(e) => failed = Some(e),
                    }
                    // Newest kept: the read goes oldest first.
                    if found.len() > MAX_LISTED_BUNDLES {
                        found.remove(0);
                    }
                    ControlFlow::Continue(())
                })
                .map_err(|e| {
                    tracing::error!("reading diagnostic bundles failed: {e}");
                    ApiError::unavailable("the store cannot be read now; see the collector's log")
                })?;
            if let Some(e) = failed {
                tracing::error!("a stored diagnostic bundle does not render: {e}");
            }
            if !found.is_empty() {
                break;
            }
        }
        found.sort_by_key(|(received_at_ms, _)| std::cmp::Reverse(*received_at_ms));
        context.audit(
            &actor.audit_name(),
            "diagnostics.read",
            Some(&org),
            AuditOutcome::Done,
            &format!("device {device}: {} bundles", found.len()),
        );
        Ok(Json(DiagnosticsList {
            org: org.as_str().to_owned(),
            device: device.as_str().to_owned(),
            bundles: found
                .into_iter()
                .map(|(received_at_ms, bundle)| StoredDiagnostics { received_at_ms, bundle })
                .collect(),
        }))
    })
    .await
}
