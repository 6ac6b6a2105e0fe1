//! The `/api/v1` handlers for every admin action. Each turns its request
//! into an [`AdminAction`] and runs it through [`crate::admin`] (the same
//! authorisation and audit for certificates and tokens), off the async
//! threads because the store and the audit log do blocking I/O.

use std::collections::BTreeMap;

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::Json;

use glimpse_api::*;
use glimpse_common::bounded::{BoundedString, BoundedVec};
use glimpse_common::identity::{AdminName, AdminRole, DeviceId, OrgId, SiteId};
use glimpse_common::record::DataKind;
use glimpse_common::wire::admin::{AdminAction, AdminReply, GrantKind, GrantScope, Subject, MAX_GRANT_DEVICES};
use glimpse_common::wire::CaptureOutcome;

use super::auth::{Authenticated, JsonBody};
use super::problem::ApiError;
use super::tokens::{TokenScope, DEFAULT_TOKEN_DAYS};
use super::ApiState;
use crate::admin::{Access, Actor};

/// Path parameters, a rejection a problem document.
#[derive(Debug)]
pub struct PathArgs<T>(pub T);

impl<T: serde::de::DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for PathArgs<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| PathArgs(p.0))
            .map_err(|e| ApiError::bad_request(format!("invalid path: {e}")))
    }
}

/// An organisation named in a path or body.
pub fn org(value: &str) -> Result<OrgId, ApiError> {
    OrgId::new(value).map_err(|e| ApiError::bad_request(format!("organisation {value:?}: {e}")))
}

fn device(value: &str) -> Result<DeviceId, ApiError> {
    DeviceId::new(value).map_err(|e| ApiError::bad_request(format!("device {value:?}: {e}")))
}

/// Runs `work` (store and audit I/O) on a blocking thread.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work).await.map_err(|_| ApiError::internal("the request failed unexpectedly"))?
}

/// What listing or revoking identities and tokens is scoped to: everything
/// for operators (who have no organisation), the caller's organisation
/// for the others, with the access that needs.
pub(crate) fn identity_scope(actor: &Actor) -> (Option<OrgId>, Access) {
    match &actor.identity.org {
        Some(org) => (Some(org.clone()), Access::Write),
        None => (None, Access::Operator),
    }
}

/// Runs an action as `actor` on a blocking thread.
pub async fn act(state: &ApiState, actor: Actor, action: AdminAction) -> Result<AdminReply, ApiError> {
    let context = state.context.clone();
    tokio::task::spawn_blocking(move || context.execute(&actor, action))
        .await
        .map_err(|_| ApiError::internal("the action failed unexpectedly; see the collector's log"))?
        .map_err(ApiError::from)
}

pub(crate) fn unexpected(reply: AdminReply) -> ApiError {
    tracing::error!(?reply, "admin action gave an unexpected reply");
    ApiError::internal("unexpected reply; see the collector's log")
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Who the caller is.
#[utoipa::path(get, path = "/api/v1/whoami", tag = "identity",
    responses((status = 200, body = Whoami), (status = 401, body = Problem)))]
pub async fn whoami(Authenticated(actor): Authenticated) -> Json<Whoami> {
    Json(Whoami {
        name: actor.identity.name.as_str().to_owned(),
        role: actor.identity.role.as_str().to_owned(),
        org: actor.identity.org.as_ref().map(|o| o.as_str().to_owned()),
        sites: actor.sites.iter().map(|s| s.as_str().to_owned()).collect(),
        via: match actor.via {
            crate::admin::ActorVia::Certificate { .. } => "certificate",
            crate::admin::ActorVia::Token { .. } => "token",
            crate::admin::ActorVia::Session { .. } => "console",
        }
        .to_owned(),
        read_only: actor.read_only,
    })
}

/// An organisation's consent, support grant, data policy, retention and
/// connected devices.
#[utoipa::path(get, path = "/api/v1/orgs/{org}", tag = "organisations",
    params(("org" = String, Path, description = "The organisation")),
    responses((status = 200, body = OrgStatus), (status = "4XX", body = Problem)))]
pub async fn org_status(
    State(state): State<ApiState>,
    Authenticated(actor): Authenticated,
    PathArgs(name): PathArgs<String>,
) -> Result<Json<OrgStatus>, ApiError> {
    let id = org(&name)?;
    match act(&state, actor, AdminAction::OrgStatus { org: id.clone() }).await? {
        AdminReply::OrgStatus {
            omitted_fields,
            pseudonymise_macs,
            strict_headers,
            capture_consent,
            support_until_ms,
            connected_devices,
        } => {
            let store = &state.context.store;
            let retention_days: BTreeMap<String, u32> =
                DataKind::ALL.iter().map(|k| (k.to_string(), store.retention_days(&id, *k))).collect();
            let retention_max_days: BTreeMap<String, u32> =
                DataKind::ALL.iter().map(|k| (k.to_string(), store.retention().choice_max(&id, *k))).collect();
            let (store, org_id) = (state.context.store.clone(), id.clone());
            let consent = blocking(move || Ok(super::views::consent_change(&store, &org_id))).await?;
            let policy = state.context.store.policies().get(&id);
            let (support_kinds, support_devices, support_sites) = match support_until_ms {
                Some(_) => (
                    policy.support_scope.kinds().iter().map(|k| k.as_str().to_owned()).collect(),
                    policy.support_scope.devices().iter().map(|d| d.as_str().to_owned()).collect(),
                    policy.support_scope.sites().iter().map(|s| s.as_str().to_owned()).collect(),
                ),
                None => (Vec::new(), Vec::new(), Vec::new()),
            };
            Ok(Json(OrgStatus {
                org: name,
                capture_consent,
                support_until_ms,
                support_kinds,
                support_devices,
                support_sites,
                omitted_fields: omitted_fields.iter().map(|f| f.as_str().to_owned()).collect(),
                pseudonymise_macs,
                location_history: state.context.store.policies().get(&id).location_history,
                wan_destinations: state.context.store.policies().get(&id).wan_destinations,
                strict_headers,
                connected_devices,
                retention_days,
                retention_max_days,
                consent_changed_at_ms: consent.at_ms,
                consent_changed_by: consent.by,
            }))
        }
        other => Err(unexpected(other)),
    }
}

/// Delete all of an organisation's data and destroy its key.
#[utoipa::path(delete, path = "/api/v1/orgs/{org}", tag = "organisations",
    params(("org" = String, Path, description = "The organisation")),
    request_body = DeleteOrgRequest,
    responses((status = 200, body = OrgDeleted), (status = "4XX", body = Problem)))]
pub async fn delete_org(
    State(state): State<ApiState>,
    Authenticated(actor): Authenticated,
    PathArgs(name): PathArgs<String>,
    JsonBody(body): JsonBody<DeleteOrgRequest>,
) -> Result<Json<OrgDeleted>, ApiError> {
    let action = AdminAction::DeleteOrg { org: org(&name)?, confirm: org(&body.confirm)? };
    match act(&state, actor, action).await? {
        AdminReply::OrgDeleted { key_destroyed, segments_deleted } => {
            Ok(Json(OrgDeleted { key_destroyed, segments_deleted }))
        }
        other => Err(unexpected(other)),
    }
}

/// Give or withdraw packet-capture consent; connected devices are told at
/// once.
#[utoipa::path(put, path = "/api/v1/orgs/{org}/consent", tag = "organisations",
    params(("org" = String, Path, description = "The organisation")),
    request_body = ConsentRequest,
    responses((status = 200, body = ConsentSet), (status = "4XX", body = Problem)))]
pub async fn set_consent(
    State(state): State<ApiState>,
    Authenticated(actor): Authenticated,
    PathArgs(name): PathArgs<String>,
    JsonBody(body): JsonBody<ConsentRequest>,
) -> Result<Json<ConsentSet>, ApiError> {
    match act(&state, actor, AdminAction::SetConsent { org: org(&name)?, capture: body.capture }).await? {
        AdminReply::ConsentSet { capture, changed, devices_told } => {
            Ok(Json(ConsentSet { capture, changed, devices_told }))
        }
        other => Err(unexpected(other)),
    }
}

/// A grant's scope from the request: the default when no kinds are named;
/// an unknown kind or device name is refused, never ignored.
pub(crate) fn grant_scope(kinds: Option<&[String]>, devices: &[String]) -> Result<GrantScope, ApiError> {
    if devices.len() > MAX_GRANT_DEVICES {
        return Err(ApiError::bad_request(format!("devices: at most {MAX_GRANT_DEVICES}")));
    }
    let devices = devices.iter().map(|d| device(d)).collect::<Result<Vec<_>, _>>()?;
    let kinds = match kinds {
        None => GrantScope::default().kinds().to_vec(),
        Some(names) if names.len() > GrantKind::ALL.len() * 4 => {
            return Err(ApiError::bad_request("kinds: too many"));
        }
        Some(names) => names
            .iter()
            .map(|n| {
                GrantKind::parse(n).ok_or_else(|| {
                    ApiError::bad_request(format!("kind {n:?}: use devices, metadata, captures or exports"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?,
    };
    GrantScope::new(kinds, devices).map_err(|e| ApiError::bad_request(e.to_string()))
}

/// Let support staff (and operators) see the organisation's data for some
/// hours: the kinds and devices the request names.
#[utoipa::path(post, path = "/api/v1/orgs/{org}/support", tag = "organisations",
    params(("org" = String, Path, description = "The organisation")),
    request_body = SupportGrantRequest,
    responses((status = 200, body = SupportGranted), (status = "4XX", body = Problem)))]
pub async fn grant_support(
    State(state): State<ApiState>,
    Authenticated(actor): Authenticated,
    PathArgs(name): PathArgs<String>,
    JsonBody(body): JsonBody<SupportGrantRequest>,
) -> Result<Json<SupportGranted>, ApiError> {
    if body.sites.len() > glimpse_common::wire::admin::MAX_GRANT_SITES {
        return Err(ApiError::bad_request(format!("sites: at most {}", glimpse_common::wire::admin::MAX_GRANT_SITES)));
    }
    let sites = body
        .sites
        .iter()
        .map(|s| SiteId::new(s.as_str()).map_err(|e| ApiError::bad_request(format!("sites: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let scope = grant_scope(body.kinds.as_deref(), &body.devices)?
        .at_sites(sites)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    match act(&state, actor, AdminAction::GrantSupport { org: org(&name)?, hours: body.hours, scope }).await? {
        AdminReply::SupportGranted { until_ms } => Ok(Json(SupportGranted { until_ms })),
        other => Err(unexpected(other)),
    }
}

/// End the organisation's support grant now.
#[utoipa::path(delete, path = "/api/v1/orgs/{org}/support", tag = "organisations",
    params(("org" = String, Path, description = "The organisation")),
    responses((status = 200, body = SupportRevoked), (status = "4XX", body = Problem)))]
pub async fn revoke_support(
    State(state): State<ApiState>,
    Authenticated(actor): Authenticated,
    PathArgs(name): PathArgs<String>,
) -> Result<Json<SupportRevoked>, ApiError> {
    match act(&state, actor, AdminAction::RevokeSupport { org: org(&name)? }).await? {
        AdminReply::SupportRevoked { was_active } => Ok(Json(SupportRevoked { was_active })),
        other => Err(unexpected(other)),
    }
}

/// Choose which metadata fields the devices collect, whether MACs are
/// stored pseudonymised and whether captured headers are scrubbed strictly.
#[utoipa::path(put, path = "/api/v1/orgs/{org}/data-policy", tag = "organisations",
    params(("org" = String, Path, description = "The organisation")),
    request_body = DataPolicyRequest,
    responses((status = 200, body = DataPolicySet), (status = "4XX", body = Problem)))]
pub async fn set_data_policy(
    State(state): State<ApiState>,
    Authenticated(actor): Authenticated,
    PathArgs(name): PathArgs<String>,
    JsonBody(body): JsonBody<DataPolicyRequest>,
) -> Result<Json<DataPolicySet>, ApiError> {
    let omit = body
        .omit
        .iter()
        .map(|f| f.parse::<glimpse_common::minimise::MetadataField>().map_err(|e| ApiError::bad_request(e.to_string())))
        .collect::<Result<Vec<_>, _>>()?;
    let omit = BoundedVec::try_from_vec(omit).map_err(|e| ApiError::bad_request(format!("omit: {e}")))?;
    let action = AdminAction::SetDataPolicy {
        org: org(&name)?,
        omit,
        pseudonymise_macs: body.pseudonymise_macs,
        strict_headers: body.strict_headers,
    };
    match act(&state, actor, action).await? {
        AdminReply::DataPolicySet { devices_told, strict_headers } => {
            Ok(Json(DataPolicySet { devices_told, strict_headers }))
        }
        other => Err(unexpected(other)),
    }
}

/// Choose whether the organisation keeps a history of where its Wi-Fi
/// stations were. Off by default: each stored report's stations are then
/// unlinked (MAC replaced by a stand-in valid for that report only;
/// addresses, hostname, username and user agent cleared).
#[utoipa::path(put, path = "/api/v1/orgs/{org}/location-history", tag = "organisations",
    params(("org" = String, Path, description = "The organisation")),
    request_body = LocationHistoryRequest,
    responses((status = 200, body = LocationHistorySet), (status = "4XX", body = Problem)))]
pub async fn set_location_history(
    State(state): State<ApiState>,
    Authenticated(actor): Authenticated,
    PathArgs(name): PathArgs<String>,
    JsonBody(body): JsonBody<LocationHistoryRequest>,
) -> Result<Json<LocationHistorySet>, ApiError> {
    match act(&state, actor, AdminAction::SetLocationHistory { org: org(&name)?, keep: body.keep }).await? {
        AdminReply::LocationHistorySet { keep, changed } => Ok(Json(LocationHistorySet { keep, changed })),
        other => Err(unexpected(other)),
    }
}

/// Choose whether the organisation's gateways report WAN destinations:
/// sessions per client and destination address, protocol and port, with
/// site names from the gateway's DNS resolver. Off by default: devices do
/// not collect them and such records are dropped on arrival.
#[utoipa::path(put, path = "/api/v1/orgs/{org}/wan-destinations", tag = "organisations",
    params(("org" = String, Path, description = "The organisation")),
    request_body = WanDestinationsRequest,
    responses((status = 200, body = WanDestinationsSet), (status = "4XX", body = Problem)))]
pub async fn set_wan_destinations(
    State(state): State<ApiState>,
    Authenticated(actor): Authenticated,
    PathArgs(name): PathArgs<String>,
    JsonBody(body): JsonBody<WanDestinationsRequest>,
) -> Result<Json<WanDestinationsSet>, ApiError> {
    match act(&state, actor, AdminAction::SetWanDestinations { org: org(&name)?, on: body.on }).await? {
        AdminReply::WanDestinationsSet { on, changed, devices_told } => {
            Ok(Json(WanDestinationsSet { on, changed, devices_told }))
        }
        other => Err(unexpected(other)),
    }
}

/// Choose how long the organisation's data is kept, within what the service
/// offers. Shorter takes effect at once: records past the new window are no
/// longer served and the next sweep deletes them.
#[utoipa::path(put, path = "/api/v1/orgs/{org}/retention", tag = "organisations",
    params(("org" = String, Path, description = "The organisation")),
    request_body = RetentionRequest,
    responses((status = 200, body = RetentionSet), (status = "4XX", body = Problem)))]
pub async fn set_retention(
    State(state): State<ApiState>,
    Authenticated(actor): Authenticated,
    PathArgs(name): PathArgs<String>,
    JsonBody(body): JsonBody<RetentionRequest>,
) -> Result<Json<RetentionSet>, ApiError> {
    let action = AdminAction::SetRetention {
        org: org(&name)?,
        metadata_days: body.metadata_days,
        capture_days: body.capture_days,
    };
    match act(&state, actor, action).await? {
        AdminReply::RetentionSet { metadata_days, capture_days, changed } => Ok(Json(RetentionSet {
            retention_days: BTreeMap::from([
                (DataKind::Metadata.to_string(), metadata_days),
                (DataKind::Capture.to_string(), capture_days),
            ]),
            changed,
        })),
        other => Err(unexpected(other)),
    }
}

/// The organisation's devices connected now.
#[utoipa::path(get, path = "/api/v1/orgs/{org}/devices", tag = "devices",
    params(("org" = String, Path, description = "The organisation")),
    responses((status = 200, body = DeviceList), (status = "4XX", body = Problem)))]
pub async fn devices(
    State(state): State<ApiState>,
    Authenticated(actor): Authenticated,
    PathArgs(name): PathArgs<String>,
) -> Result<Json<DeviceList>, ApiError> {
    let org = org(&name)?;
    match act(&state, actor, AdminAction::ConnectedDevices { org: org.clone() }).await? {
        AdminReply::Devices(ids) => {
            blocking(move || {
                let registry = state.context.store.registry();
                let mut devices = Vec::with_capacity(ids.len());
                for device in ids.iter() {
                    let site = registry
                        .get(&org, device)
                        .map_err(|e| ApiError::unavailable(format!("the registry cannot be read: {e}")))?
                        .and_then(|r| r.site)
                        .map(|s| s.as_str().to_owned());
                    devices.push(DeviceSummary { device: device.as_str().to_owned(), connected: true, site });
                }
                Ok(Json(DeviceList { devices }))
            })
            .await
        }
        other => Err(unexpected(other)),
    }
}

/// Start a header-only capture on a connected device (needs consent).
#[utoipa::path(post, path = "/api/v1/orgs/{org}/captures", tag = "captures",
    params(("org" = String, Path, description = "The organisation")),
    request_body = CaptureStartRequest,
    responses((status = 200, body = CaptureStarted), (status = "4XX", body = Problem)))]
pub async fn start_capture(
    State(state): State<ApiState>,
    Authenticated(actor): Authenticated,
    PathArgs(name): PathArgs<String>,
    JsonBody(body): JsonBody<CaptureStartRequest>,
) -> Result<Json<CaptureStarted>, ApiError> {
    let action = AdminAction::StartCapture {
        org: org(&name)?,
        device: device(&body.device)?,
        interface: BoundedString::try_new(body.interface)
            .map_err(|e| ApiError::bad_request(format!("interface: {e}")))?,
        filter: BoundedString::try_new(body.filter).map_err(|e| ApiError::bad_request(format!("filter: {e}")))?,
        duration_secs: body.duration_secs,
        max_packets: body.max_packets,
    };
    match act(&state, actor, action).await? {
        AdminReply::CaptureRequested { id } => Ok(Json(CaptureStarted { id, device: body.device })),
        other => Err(unexpected(other)),
    }
}

fn capture_status(device: String, id: u64, outcome: Option<CaptureOutcome>) -> CaptureStatus {
    let mut status =
        CaptureStatus { id, device, state: "requested".into(), packets: None, header_bytes: None, reason: None };
    match outcome {
        None => {}
        Some(CaptureOutcome::Started) => status.state = "running".into(),
        Some(CaptureOutcome::Finished { packets, header_bytes }) => {
            status.state = "finished".into();
            status.packets = Some(packets);
            status.header_bytes = Some(header_bytes);
        }
        Some(CaptureOutcome::Refused { reason }) => {
            status.state = "refused".into();
            status.reason = Some(reason.as_str().to_owned());
        }
        Some(_) => status.state = "unknown".into(),
    }
    status
}

/// The organisation's recent capture requests and their latest reports.
#[utoipa::path(get, path = "/api/v1/orgs/{org}/captures", tag = "captures",
    params(("org" = String, Path, description = "The organisation")),
    responses((status = 200, body = CaptureList), (status = "4XX", body = Problem)))]
pub async fn list_captures(
    State(state): State<ApiState>,
    Authenticated(actor): Authenticated,
    PathArgs(name): PathArgs<String>,
) -> Result<Json<CaptureList>, ApiError> {
    let id = org(&name)?;
    let context = state.context.clone();
    let check = id.clone();
    let access = Access::Read(GrantKind::Captures);
    let permit =
        tokio::task::spawn_blocking(move || context.permit(&actor, "capture.list", Some(&check), access, false))
            .await
            .map_err(|_| ApiError::internal("authorisation failed unexpectedly"))??;
    let captures = state
        .context
        .directory
        .captures_of(&id)
        .into_iter()
        .filter(|(device, _, _)| permit.covers(device))
        .map(|(device, capture, outcome)| capture_status(device.as_str().to_owned(), capture, outcome))
        .collect();
    Ok(Json(CaptureList { captures }))
}

/// What a device last reported about a capture.
#[utoipa::path(get, path = "/api/v1/orgs/{org}/captures/{device}/{id}", tag = "captures",
    params(("org" = String, Path, description = "The organisation"), ("device" = String, Path, description = "The device"),
        ("id" = u64, Path, description = "The capture's id")),
    responses((status = 200, body = CaptureStatus), (status = "4XX", body = Problem)))]
pub async fn capture(
    State(state): State<ApiState>,
    Authenticated(actor): Authenticated,
    PathArgs((name, device_name, id)): PathArgs<(String, String, u64)>,
) -> Result<Json<CaptureStatus>, ApiError> {
    let action = AdminAction::CaptureStatus { org: org(&name)?, device: device(&device_name)?, id };
    match act(&state, actor, action).await? {
        AdminReply::CaptureStatus(outcome) => Ok(Json(capture_status(device_name, id, outcome))),
        other => Err(unexpected(other)),
    }
}

/// Stop a running capture.
#[utoipa::path(post, path = "/api/v1/orgs/{org}/captures/{device}/{id}/stop", tag = "captures",
    params(("org" = String, Path, description = "The organisation"), ("device" = String, Path, description = "The device"),
        ("id" = u64, Path, description = "The capture's id")),
    responses((status = 200, body = CaptureStopped), (status = "4XX", body = Problem)))]
pub async fn stop_capture(
    State(state): State<ApiState>,
    Authenticated(actor): Authenticated,
    PathArgs((name, device_name, id)): PathArgs<(String, String, u64)>,
) -> Result<Json<CaptureStopped>, ApiError> {
    let action = AdminAction::StopCapture { org: org(&name)?, device: device(&device_name)?, id };
    match act(&state, actor, action).await? {
        AdminReply::CaptureStopRequested => Ok(Json(CaptureStopped { id })),
        other => Err(unexpected(other)),
    }
}

fn subject(subject: &SubjectRef) -> Result<Subject, ApiError> {
    match subject.kind.as_str() {
        "mac" => subject.value.parse().map(Subject::Mac).map_err(|_| ApiError::bad_request("not a MAC address")),
        "ip" => subject.value.parse().map(Subject::Ip).map_err(|_| ApiError::bad_request("not an IP address")),
        "username" => BoundedString::try_new(subject.value.clone())
            .map(Subject::Username)
            .map_err(|e| ApiError::bad_request(format!("username: {e}"))),
        other => Err(ApiError::bad_request(format!("subject kind {other:?}: use mac, ip or username"))),
    }
}

/// Every stored record about a data subject, a page at a time.
#[utoipa::path(post, path = "/api/v1/orgs/{org}/subjects/export", tag = "data rights",
    params(("org" = String, Path, description = "The organisation")),
    request_body = SubjectExportRequest,
    responses((status = 200, body = SubjectRecords), (status = "4XX", body = Problem)))]
pub async fn export_subject(
    State(state): State<ApiState>,
    Authenticated(actor): Authenticated,
    PathArgs(name): PathArgs<String>,
    JsonBody(body): JsonBody<SubjectExportRequest>,
) -> Result<Json<SubjectRecords>, ApiError> {
    let action = AdminAction::ExportSubject { org: org(&name)?, subject: subject(&body.subject)?, skip: body.skip };
    match act(&state, actor, action).await? {
        AdminReply::SubjectRecords { total, lines } => {
            // Every line is one exported record; one that is not JSON is
            // a fault of ours, and a page without it would hide a record.
            let records = lines
                .iter()
                .map(|l| serde_json::from_str(l.as_str()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| ApiError::internal("an exported record is not valid JSON; see the collector's log"))?;
            Ok(Json(SubjectRecords { total, records }))
        }
        other => Err(unexpected(other)),
    }
}

/// Erase every stored record about a data subject.
#[utoipa::path(post, path = "/api/v1/orgs/{org}/subjects/erase", tag = "data rights",
    params(("org" = String, Path, description = "The organisation")),
    request_body = SubjectEraseRequest,
    responses((status = 200, body = SubjectErased), (status = "4XX", body = Problem)))]
pub async fn erase_subject(
    State(state): State<ApiState>,
    Authenticated(actor): Authenticated,
    PathArgs(name): PathArgs<String>,
    JsonBody(body): JsonBody<SubjectEraseRequest>,
) -> Result<Json<SubjectErased>, ApiError> {
    let action = AdminAction::EraseSubject { org: org(&name)?, subject: subject(&body.subject)? };
    match act(&state, actor, action).await? {
        AdminReply::SubjectErased { metadata, captures, segments_rewritten } => {
            Ok(Json(SubjectErased { metadata, captures, segments_rewritten }))
        }
        other => Err(unexpected(other)),
    }
}

/// Correct one of a data subject's values (username or hostname) in
/// every stored record about them.
#[utoipa::path(post, path = "/api/v1/orgs/{org}/subjects/correct", tag = "data rights",
    params(("org" = String, Path, description = "The organisation")),
    request_body = SubjectCorrectRequest,
    responses((status = 200, body = SubjectCorrected), (status = "4XX", body = Problem)))]
pub async fn correct_subject(
    State(state): State<ApiState>,
    Authenticated(actor): Authenticated,
    PathArgs(name): PathArgs<String>,
    JsonBody(body): JsonBody<SubjectCorrectRequest>,
) -> Result<Json<SubjectCorrected>, ApiError> {
    let field = body.field.parse().map_err(ApiError::bad_request)?;
    let value = BoundedString::try_new(body.value).map_err(|e| ApiError::bad_request(format!("value: {e}")))?;
    let action = AdminAction::CorrectSubject { org: org(&name)?, subject: subject(&body.subject)?, field, value };
    match act(&state, actor, action).await? {
        AdminReply::SubjectCorrected { records, values, segments_rewritten } => {
            Ok(Json(SubjectCorrected { records, values, segments_rewritten }))
        }
        other => Err(unexpected(other)),
    }
}

/// Block a data subject: their data is dropped on arrival, devices stop
/// sending it and exports leave it out, until unblocked.
#[utoipa::path(post, path = "/api/v1/orgs/{org}/subjects/block", tag = "data rights",
    params(("org" = String, Path, description = "The organisation")),
    request_body = SubjectBlockRequest,
    responses((status = 200, body = BlockChanged), (status = "4XX", body = Problem)))]
pub async fn block_subject(
    State(state): State<ApiState>,
    Authenticated(actor): Authenticated,
    PathArgs(name): PathArgs<String>,
    JsonBody(body): JsonBody<SubjectBlockRequest>,
) -> Result<Json<BlockChanged>, ApiError> {
    block_changed(&state, actor, AdminAction::BlockSubject { org: org(&name)?, subject: subject(&body.subject)? }).await
}

/// Unblock a data subject: their data is processed again from now on.
#[utoipa::path(post, path = "/api/v1/orgs/{org}/subjects/unblock", tag = "data rights",
    params(("org" = String, Path, description = "The organisation")),
    request_body = SubjectBlockRequest,
    responses((status = 200, body = BlockChanged), (status = "4XX", body = Problem)))]
pub async fn unblock_subject(
    State(state): State<ApiState>,
    Authenticated(actor): Authenticated,
    PathArgs(name): PathArgs<String>,
    JsonBody(body): JsonBody<SubjectBlockRequest>,
) -> Result<Json<BlockChanged>, ApiError> {
    block_changed(&state, actor, AdminAction::UnblockSubject { org: org(&name)?, subject: subject(&body.subject)? })
        .await
}

async fn block_changed(state: &ApiState, actor: Actor, action: AdminAction) -> Result<Json<BlockChanged>, ApiError> {
    match act(state, actor, action).await? {
        AdminReply::BlockChanged { blocked, changed, blocked_subjects, devices_told } => {
            Ok(Json(BlockChanged { blocked, changed, blocked_subjects, devices_told }))
        }
        other => Err(unexpected(other)),
    }
}

/// The organisation's blocked data subjects.
#[utoipa::path(get, path = "/api/v1/orgs/{org}/subjects/blocked", tag = "data rights",
    params(("org" = String, Path, description = "The organisation")),
    responses((status = 200, body = BlockedSubjectList), (status = "4XX", body = Problem)))]
pub async fn blocked_subjects(
    State(state): State<ApiState>,
    Authenticated(actor): Authenticated,
    PathArgs(name): PathArgs<String>,
) -> Result<Json<BlockedSubjectList>, ApiError> {
    match act(&state, actor, AdminAction::BlockedSubjects { org: org(&name)? }).await? {
        AdminReply::BlockedSubjects(list) => {
            Ok(Json(BlockedSubjectList { subjects: list.as_slice().iter().map(subject_ref).collect() }))
        }
        other => Err(unexpected(other)),
    }
}

/// How the API names a subject.
fn subject_ref(subject: &Subject) -> SubjectRef {
    let (kind, value) = match subject {
        Subject::Mac(mac) => ("mac", mac.to_string()),
        Subject::Ip(ip) => ("ip", ip.to_string()),
        Subject::Username(name) => ("username", name.as_str().to_owned()),
        _ => ("unknown", String::new()),
    };
    SubjectRef { kind: kind.into(), value }
}

/// Check the whole audit log's hash chain (operators).
#[utoipa::path(get, path = "/api/v1/audit/verify", tag = "audit",
    responses((status = 200, body = AuditVerified), (status = "4XX", body = Problem)))]
pub async fn verify_audit(
    State(state): State<ApiState>,
    Authenticated(actor): Authenticated,
) -> Result<Json<AuditVerified>, ApiError> {
    match act(&state, actor, AdminAction::VerifyAudit).await? {
        AdminReply::AuditVerified { entries } => Ok(Json(AuditVerified { entries })),
        other => Err(unexpected(other)),
    }
}

/// Create an API token (shown once).
#[utoipa::path(post, path = "/api/v1/tokens", tag = "identity", request_body = TokenCreateRequest,
    responses((status = 200, body = TokenCreated), (status = "4XX", body = Problem)))]
pub async fn create_token(
    State(state): State<ApiState>,
    Authenticated(actor): Authenticated,
    JsonBody(body): JsonBody<TokenCreateRequest>,
) -> Result<Json<TokenCreated>, ApiError> {
    let role: AdminRole = body.role.parse().map_err(|e| ApiError::bad_request(format!("role: {e}")))?;
    let scope_org = body.org.as_deref().map(org).transpose()?;
    let name = AdminName::new(&body.name).map_err(|e| ApiError::bad_request(format!("name: {e}")))?;
    let scope = TokenScope {
        name,
        role,
        org: scope_org.clone(),
        read_only: body.read_only,
        days: body.expires_in_days.unwrap_or(DEFAULT_TOKEN_DAYS),
        sites: body
            .sites
            .iter()
            .map(|s| SiteId::new(s.as_str()).map_err(|e| ApiError::bad_request(format!("sites: {e}"))))
            .collect::<Result<_, _>>()?,
    };
    let access = if role == AdminRole::Operator { Access::Operator } else { Access::Write };
    let state2 = state.clone();
    tokio::task::spawn_blocking(move || {
        let context = &state2.context;
        context.permit(&actor, "token.create", scope_org.as_ref(), access, true)?;
        let now = state2.now_ms();
        match state2.tokens.create(&actor, scope, now) {
            Ok((token, info)) => {
                let sites =
                    if info.sites.is_empty() { String::new() } else { format!(" sites {}", info.sites.join("+")) };
                let detail = format!(
                    "token {} id {} role {}{sites}{}, expires {}",
                    info.name,
                    info.id,
                    info.role,
                    if info.read_only { " read-only" } else { "" },
                    glimpse_store::export::format_time(info.expires_ms)
                );
                context.audit(
                    &actor.audit_name(),
                    "token.create",
                    scope_org.as_ref(),
                    glimpse_store::audit::AuditOutcome::Done,
                    &detail,
                );
                Ok(Json(TokenCreated { token: token.to_string(), info }))
            }
            Err(e) => {
                context.audit(
                    &actor.audit_name(),
                    "token.create",
                    scope_org.as_ref(),
                    glimpse_store::audit::AuditOutcome::Refused,
                    &e.to_string(),
                );
                Err(ApiError::bad_request(e.to_string()))
            }
        }
    })
    .await
    .map_err(|_| ApiError::internal("token creation failed unexpectedly"))?
}

/// API tokens: all of them for operators, the organisation's for its
/// admins.
#[utoipa::path(get, path = "/api/v1/tokens", tag = "identity",
    responses((status = 200, body = TokenList), (status = "4XX", body = Problem)))]
pub async fn list_tokens(
    State(state): State<ApiState>,
    Authenticated(actor): Authenticated,
) -> Result<Json<TokenList>, ApiError> {
    let (scope, access) = identity_scope(&actor);
    let state2 = state.clone();
    let check = scope.clone();
    blocking(move || {
        state2.context.permit(&actor, "token.list", check.as_ref(), access, false).map_err(ApiError::from)
    })
    .await?;
    Ok(Json(TokenList { tokens: state.tokens.list(scope.as_ref()) }))
}

/// Revoke an API token: it stops working at once and connections that
/// used it are closed.
#[utoipa::path(delete, path = "/api/v1/tokens/{id}", tag = "identity",
    params(("id" = String, Path, description = "The token's id")),
    responses((status = 200, body = TokenRevoked), (status = "4XX", body = Problem)))]
pub async fn revoke_token(
    State(state): State<ApiState>,
    Authenticated(actor): Authenticated,
    PathArgs(id): PathArgs<String>,
) -> Result<Json<TokenRevoked>, ApiError> {
    let Some(scope) = state.tokens.org_of(&id) else {
        return Err(ApiError::not_found(format!("no API token {id:?}")));
    };
    let access = if scope.is_none() { Access::Operator } else { Access::Write };
    let state2 = state.clone();
    tokio::task::spawn_blocking(move || {
        let context = &state2.context;
        context.permit(&actor, "token.revoke", scope.as_ref(), access, true)?;
        let was_active =
            state2.tokens.revoke(&id, state2.now_ms()).map_err(|e| ApiError::unavailable(e.to_string()))?;
        let closed = state2.live.cut(|c| *c == super::live::Credential::Token(id.clone()));
        context.audit(
            &actor.audit_name(),
            "token.revoke",
            scope.as_ref(),
            glimpse_store::audit::AuditOutcome::Done,
            &format!(
                "token id {id}{}, {closed} live connections closed",
                if was_active { "" } else { " (was not active)" }
            ),
        );
        Ok(Json(TokenRevoked { was_active, connections_closed: count(closed) }))
    })
    .await
    .map_err(|_| ApiError::internal("token revocation failed unexpectedly"))?
}

/// Rotate an organisation's data key (its admins and operators): a new
/// random version becomes current and seals every new segment; segments
/// under older versions stay readable and are re-encrypted by the
/// collector in the background, after which those versions are retired
/// (their keys destroyed). Nothing is rewritten by the request itself.
#[utoipa::path(post, path = "/api/v1/orgs/{org}/data-key/rotate", tag = "keys",
    params(("org" = String, Path, description = "The organisation")),
    responses((status = 200, body = DataKeyRotated), (status = "4XX", body = Problem)))]
pub async fn rotate_data_key(
    State(state): State<ApiState>,
    Authenticated(actor): Authenticated,
    PathArgs(name): PathArgs<String>,
) -> Result<Json<DataKeyRotated>, ApiError> {
    const ACTION: &str = "data-key.rotate";
    let org = org(&name)?;
    blocking(move || {
        let context = &state.context;
        context.permit(&actor, ACTION, Some(&org), Access::Write, true)?;
        let audit = |outcome, detail: &str| context.audit(&actor.audit_name(), ACTION, Some(&org), outcome, detail);
        // Audited just before the rotation commits, so that a crash right
        // after it cannot lose the entry; a rotation that then fails says so
        // in a second one.
        let mut audited = false;
        let mut before = |r: &glimpse_store::keys::DataKeyRotation| {
            let detail = format!(
                "data key version {} is current; version {} is retiring (re-encrypted in the background)",
                r.version, r.previous
            );
            audit(glimpse_store::audit::AuditOutcome::Done, &detail);
            audited = true;
            Ok(())
        };
        let rotated = context.store.rotate_data_key_then(&org, &mut before);
        match rotated {
            Ok(r) => Ok(Json(DataKeyRotated { version: r.version, previous: r.previous })),
            Err(e) if audited => {
                let detail = format!("the data key rotation audited above did not commit: {e}");
                audit(glimpse_store::audit::AuditOutcome::Refused, &detail);
                Err(ApiError::unavailable(detail))
            }
            Err(glimpse_store::store::StoreError::Key(e @ glimpse_store::keys::KeyError::NoDataKey { .. })) => {
                audit(glimpse_store::audit::AuditOutcome::Refused, &e.to_string());
                Err(ApiError::not_found(format!("{e}: it has stored nothing yet, so there is nothing to rotate")))
            }
            Err(glimpse_store::store::StoreError::Key(
                e @ glimpse_store::keys::KeyError::RotationUnavailable { .. },
            )) => {
                audit(glimpse_store::audit::AuditOutcome::Refused, &e.to_string());
                Err(ApiError::new(axum::http::StatusCode::CONFLICT, "not-supported", e.to_string()))
            }
            Err(e) => {
                let detail = format!("data key not rotated (the current version is unchanged): {e}");
                audit(glimpse_store::audit::AuditOutcome::Refused, &detail);
                Err(ApiError::unavailable(detail))
            }
        }
    })
    .await
}

/// An organisation's data key versions (its admins, operators and support
/// staff under a grant): each one's state and how many segments are still
/// sealed under it.
#[utoipa::path(get, path = "/api/v1/orgs/{org}/data-key", tag = "keys",
    params(("org" = String, Path, description = "The organisation")),
    responses((status = 200, body = DataKeyStatus), (status = "4XX", body = Problem)))]
pub async fn data_key_status(
    State(state): State<ApiState>,
    Authenticated(actor): Authenticated,
    PathArgs(name): PathArgs<String>,
) -> Result<Json<DataKeyStatus>, ApiError> {
    let org = org(&name)?;
    blocking(move || {
        let context = &state.context;
        context.permit(&actor, "data-key.status", Some(&org), Access::Service, false)?;
        let versions = context.store.data_key_status(&org).map_err(|e| ApiError::unavailable(e.to_string()))?;
        let current =
            versions.iter().find(|v| v.state == glimpse_store::keys::KeyState::Current).map_or(0, |v| v.version);
        Ok(Json(DataKeyStatus {
            org: org.as_str().to_owned(),
            current,
            versions: versions
                .into_iter()
                .map(|v| DataKeyVersion {
                    version: v.version,
                    state: v.state.as_str().to_owned(),
                    segments: v.segments,
                })
                .collect(),
        }))
    })
    .await
}

/// Rotate the master key (operators): a new key is written beside the
/// master key file, every key wrapped under the old one (organisation and
/// device keys, the audit key, console TOTP keys) is rewrapped in one
/// transaction, then the new key replaces the old in the file. No segment
/// is rewritten. Crash-safe: a restart finishes or rolls back. With a
/// shared (PostgreSQL) control plane, install the new key file on every
/// other collector and restart it: until then they refuse new key material.
#[utoipa::path(post, path = "/api/v1/master-key/rotate", tag = "keys",
    responses((status = 200, body = MasterKeyRotated), (status = "4XX", body = Problem)))]
pub async fn rotate_master_key(
    State(state): State<ApiState>,
    Authenticated(actor): Authenticated,
) -> Result<Json<MasterKeyRotated>, ApiError> {
    const ACTION: &str = "master-key.rotate";
    blocking(move || {
        let context = &state.context;
        context.permit(&actor, ACTION, None, Access::Operator, true)?;
        let held = state.console.as_ref().map(|console| console.accounts.hold_writes());
        let rotated = context.store.rotate_master_key(&crate::api::console::accounts::reseal_row);
        drop(held);
        let audit = |outcome, detail: &str| context.audit(&actor.audit_name(), ACTION, None, outcome, detail);
        match rotated {
            Ok(report) => {
                let detail = format!(
                    "{} organisation keys, {} device keys and {} other rows rewrapped; new key in {}",
                    report.org_keys,
                    report.device_keys,
                    report.other_rows,
                    report.key_file.display()
                );
                audit(glimpse_store::audit::AuditOutcome::Done, &detail);
                Ok(Json(MasterKeyRotated {
                    org_keys: report.org_keys,
                    device_keys: report.device_keys,
                    other_rows: report.other_rows,
                    key_file: report.key_file.display().to_string(),
                }))
            }
            Err(
                e @ glimpse_store::store::StoreError::Key(glimpse_store::keys::KeyError::RotationUnfinished { .. }),
            ) => {
                audit(glimpse_store::audit::AuditOutcome::Done, &e.to_string());
                Err(ApiError::internal(e.to_string()))
            }
            Err(glimpse_store::store::StoreError::Key(
                e @ glimpse_store::keys::KeyError::RotationUnavailable { .. },
            )) => {
                audit(glimpse_store::audit::AuditOutcome::Refused, &e.to_string());
                Err(ApiError::new(axum::http::StatusCode::CONFLICT, "not-supported", e.to_string()))
            }
            Err(e) => {
                let detail = format!("master key not rotated (the old key is still in use): {e}");
                audit(glimpse_store::audit::AuditOutcome::Refused, &detail);
                Err(ApiError::unavailable(detail))
            }
        }
    })
    .await
}
