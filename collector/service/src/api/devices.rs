//! The devices and admin-identities endpoints: per-device details from the
//! ingest directory, and the admin and support certificates the collector
//! knows (listed with expiry and last use, revocable at once).

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use glimpse_api::Problem;
use glimpse_common::identity::AdminIdentity;
use glimpse_store::audit::AuditOutcome;
use glimpse_store::control::AdminRecord;

use super::auth::{Authenticated, QueryArgs};
use super::live::Credential;
use super::problem::ApiError;
use super::routes::{blocking, identity_scope, org, PathArgs};
use super::ApiState;
use crate::admin::Access;
use crate::ingest::DeviceDetail;

/// Which organisation's devices.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DevicesQuery {
    /// The organisation.
    pub org: String,
}

/// An organisation's devices: every registered one, connected or not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct DeviceDetails {
    /// Sorted by device id.
    pub devices: Vec<DeviceDetail>,
}

/// Every admin and support certificate the caller may see.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct AdminList {
    /// By name, then serial.
    pub admins: Vec<AdminRecord>,
}

/// What revoking an admin certificate did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct AdminRevoked {
    /// The certificate, now revoked.
    pub admin: AdminRecord,
    /// Whether it was active until now (`false`: it was already revoked).
    pub was_active: bool,
    /// Live connections and console sessions that used it, closed at once.
    pub connections_closed: u32,
}

/// Runs `work` on a blocking thread (authorisation audits, store reads).
fn registry_error(e: glimpse_store::keys::KeyError) -> ApiError {
    ApiError::unavailable(format!("the registry cannot be read: {e}"))
}

/// Every device of an organisation: how each is connected (transport,
/// cipher, peer, since when), its last record, agent version and build,
/// agent-health counters and certificate expiry; registered devices that
/// are not connected too.
#[utoipa::path(get, path = "/api/v1/devices", tag = "devices",
    params(DevicesQuery),
    responses((status = 200, body = DeviceDetails), (status = "4XX", body = Problem)))]
pub async fn list_devices(
    State(state): State<ApiState>,
    Authenticated(actor): Authenticated,
    QueryArgs(query): QueryArgs<DevicesQuery>,
) -> Result<Json<DeviceDetails>, ApiError> {
    let org = org(&query.org)?;
    blocking(move || {
        let permit = state.context.permit(&actor, "devices.list", Some(&org), Access::Service, false)?;
        let context = &state.context;
        let mut devices =
            crate::ingest::device_details(&context.store, &context.directory, &org).map_err(registry_error)?;
        // A grant limited to devices shows only those.
        devices.retain(|d| glimpse_common::identity::DeviceId::new(&d.device).is_ok_and(|id| permit.covers(&id)));
        Ok(Json(DeviceDetails { devices }))
    })
    .await
}

/// One device of an organisation, as in the list.
#[utoipa::path(get, path = "/api/v1/orgs/{org}/devices/{device}", tag = "devices",
    params(("org" = String, Path, description = "The organisation"), ("device" = String, Path, description = "The device")),
    responses((status = 200, body = DeviceDetail), (status = "4XX", body = Problem)))]
pub async fn show_device(
    State(state): State<ApiState>,
    Authenticated(actor): Authenticated,
    PathArgs((org_name, device_name)): PathArgs<(String, String)>,
) -> Result<Json<DeviceDetail>, ApiError> {
    let org = org(&org_name)?;
    let device = glimpse_common::identity::DeviceId::new(&device_name)
        .map_err(|e| ApiError::bad_request(format!("device {device_name:?}: {e}")))?;
    blocking(move || {
        state.context.permit_device(&actor, "devices.show", Some(&org), Some(&device), Access::Service, false)?;
        let context = &state.context;
        crate::ingest::device_detail(&context.store, &context.directory, &org, &device)
            .map_err(registry_error)?
            .map(Json)
            .ok_or_else(|| ApiError::not_found(format!("no device {device} in organisation {org}")))
    })
    .await
}

/// Admin and support certificates: operators see all, an org-admin those
/// of its organisation; with expiry, revocation and last use.
#[utoipa::path(get, path = "/api/v1/identities/admins", tag = "identity",
    responses((status = 200, body = AdminList), (status = "4XX", body = Problem)))]
pub async fn list_admins(
    State(state): State<ApiState>,
    Authenticated(actor): Authenticated,
) -> Result<Json<AdminList>, ApiError> {
    blocking(move || {
        let (scope, access) = identity_scope(&actor);
        state.context.permit(&actor, "identity.list", scope.as_ref(), access, false)?;
        let admins = state.context.store.admins().list();
        let admins = match &scope {
            Some(org) => admins.into_iter().filter(|a| a.org.as_deref() == Some(org.as_str())).collect(),
            None => admins,
        };
        Ok(Json(AdminList { admins }))
    })
    .await
}

/// Revoke an admin or support certificate at once: its next request is
/// refused, connections that used it are closed, and the revocation
/// survives restarts. Operators may revoke any; an org-admin those of its
/// organisation. Run `glimpse-certs revoke-admin` too, so that the CRL
/// refuses it in the TLS handshake as well.
#[utoipa::path(post, path = "/api/v1/identities/admins/{serial}/revoke", tag = "identity",
    params(("serial" = String, Path, description = "The certificate's serial number, hex")),
    responses((status = 200, body = AdminRevoked), (status = "4XX", body = Problem)))]
pub async fn revoke_admin(
    State(state): State<ApiState>,
    Authenticated(actor): Authenticated,
    PathArgs(serial): PathArgs<String>,
) -> Result<Json<AdminRevoked>, ApiError> {
    blocking(move || {
        let context = &state.context;
        let admins = context.store.admins();
        let Some(target) = admins.get(&serial) else {
            return Err(ApiError::not_found(format!("no admin certificate with serial {serial:?}")));
        };
        let org = target.org.as_deref().map(org).transpose()?;
        let access = if org.is_some() { Access::Write } else { Access::Operator };
        context.permit(&actor, "identity.revoke", org.as_ref(), access, true)?;
        let (admin, was_active) = admins
            .revoke(&target.serial, state.now_ms())
            .map_err(|e| ApiError::unavailable(format!("the revocation could not be stored: {e}")))?;
        let mut closed = state.live.cut(|c| *c == Credential::Certificate(admin.serial.clone()));
        // Console sessions opened with the certificate end now too, not at
        // their next request.
        if let Some(console) = &state.console {
            let with = crate::api::console::sessions::SignedInWith::Certificate { serial: admin.serial.clone() };
            closed += console.sessions.end_all(&with);
        }
        context.audit(
            &actor.audit_name(),
            "identity.revoke",
            org.as_ref(),
            AuditOutcome::Done,
            &format!(
                "{} {} certificate serial {}{}, {closed} live connections closed",
                admin.role,
                admin.name,
                admin.serial,
                if was_active { "" } else { " (already revoked)" }
            ),
        );
        Ok(Json(AdminRevoked { admin, was_active, connections_closed: u32::try_from(closed).unwrap_or(u32::MAX) }))
    })
    .await
}

impl ApiState {
    /// Notes that the admin certificate `serial` of `identity` made a
    /// request: in memory for a known one; one the collector has no record
    /// of (issued before certificates were recorded, or not imported yet)
    /// is recorded on a blocking thread, so that it is listed and can be
    /// revoked.
    pub(crate) fn note_certificate_use(&self, identity: &AdminIdentity, serial: &str) {
        let admins = self.context.store.admins();
        let now = self.now_ms();
        if admins.get(serial).is_some() {
            admins.note_use(serial, now);
            return;
        }
        let (store, identity, serial) = (self.context.store.clone(), identity.clone(), serial.to_owned());
        drop(tokio::task::spawn_blocking(move || {
            if let Err(e) = store.admins().note_seen(&identity, &serial, None, now) {
                tracing::warn!(admin = %identity.to_uri(), "cannot record the admin certificate: {e}");
            }
        }));
    }
}
