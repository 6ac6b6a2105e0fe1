//! `GET /api/v1/orgs/{org}/export`: an organisation's data, streamed as
//! JSON lines or pcapng while the collector runs.
//!
//! The store's export engine ([`glimpse_store::export::export_chunks`])
//! runs on a blocking thread and hands its chunks through a channel of
//! [`CHANNEL_CHUNKS`] to the response body, so a slow client slows the
//! reader instead of filling memory: at most that many chunks are queued.
//! A client that takes nothing for [`STALL_LIMIT`] ends its export, and at
//! most [`MAX_CONCURRENT_EXPORTS`] run at once (more get `429`). Who may
//! export: the organisation's admins, and support staff and operators
//! under its active grant if that includes the kind (metadata or
//! captures) and the devices; the download is audited as
//! `data.export` when it ends (also when the client stopped it).

use std::io;
use std::ops::ControlFlow;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use glimpse_api::{ExportParams, Problem};
use glimpse_common::capture::CaptureFilter;
use glimpse_common::identity::DeviceId;
use glimpse_common::record::DataKind;
use glimpse_store::export::{
    export_chunks_audited, parse_time, ExportCursor, ExportFormat, ExportRequest, DEFAULT_CHUNK_BYTES, MAX_DEVICES,
};

use super::auth::{Authenticated, QueryArgs};
use super::problem::ApiError;
use super::routes::{org, PathArgs};
use super::ApiState;
use crate::admin::{Access, Permit};
use glimpse_common::wire::admin::GrantKind;
use glimpse_store::audit::AuditOutcome;

/// Chunks queued between the reader and the client at most.
pub const CHANNEL_CHUNKS: usize = 4;
/// How long a client may take no data before its export ends.
pub const STALL_LIMIT: Duration = Duration::from_secs(300);
/// Exports running at once, each holding a blocking thread.
pub const MAX_CONCURRENT_EXPORTS: usize = 4;

static RUNNING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(MAX_CONCURRENT_EXPORTS);

/// The store's request for these query parameters; every refusal names the
/// parameter.
pub fn export_request(org: glimpse_common::identity::OrgId, q: &ExportParams) -> Result<ExportRequest, ApiError> {
    // An empty parameter (`cursor=` from a script with nothing to resume) is no parameter.
    let given = |v: &Option<String>| v.clone().filter(|v| !v.is_empty());
    let q = &ExportParams {
        kind: given(&q.kind),
        since: given(&q.since),
        until: given(&q.until),
        device: given(&q.device),
        filter: given(&q.filter),
        format: given(&q.format),
        cursor: given(&q.cursor),
    };
    let kind = match q.kind.as_deref() {
        None | Some("metadata") => DataKind::Metadata,
        Some("capture") => DataKind::Capture,
        Some(other) => return Err(ApiError::bad_request(format!("kind {other:?}: use metadata or capture"))),
    };
    let format = match q.format.as_deref() {
        None | Some("jsonl") => ExportFormat::JsonLines,
        Some("pcapng") => ExportFormat::Pcapng,
        Some(other) => return Err(ApiError::bad_request(format!("format {other:?}: use jsonl or pcapng"))),
    };
    let time = |name: &str, value: &Option<String>| {
        value.as_deref().map(parse_time).transpose().map_err(|e| ApiError::bad_request(format!("{name}: {e}")))
    };
    let mut devices = Vec::new();
    for name in q.device.as_deref().unwrap_or_default().split(',').filter(|d| !d.is_empty()) {
        if devices.len() == MAX_DEVICES {
            return Err(ApiError::bad_request(format!("device: at most {MAX_DEVICES} devices")));
        }
        devices.push(DeviceId::new(name).map_err(|e| ApiError::bad_request(format!("device {name:?}: {e}")))?);
    }
    let filter = q
        .filter
        .as_deref()
        .map(CaptureFilter::parse)
        .transpose()
        .map_err(|e| ApiError::bad_request(format!("filter: {e}")))?;
    let cursor = q
        .cursor
        .as_deref()
        .map(|c| ExportCursor::decode(c, kind))
        .transpose()
        .map_err(|e| ApiError::bad_request(format!("cursor: {e}")))?;
    let request = ExportRequest {
        since: time("since", &q.since)?,
        until: time("until", &q.until)?,
        devices,
        filter,
        cursor,
        ..ExportRequest::new(org, kind, format)
    };
    request.check().map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok(request)
}

/// Download an organisation's records of one kind, streamed: JSON lines
/// (each with its `cursor`) or pcapng (the cursor in each packet's
/// comment), filtered by time, device and, for captures, a header filter;
/// `cursor` resumes right after a record already received.
#[utoipa::path(get, path = "/api/v1/orgs/{org}/export", tag = "data rights",
    params(("org" = String, Path, description = "The organisation"), ExportParams),
    responses(
        (status = 200, description = "The records, streamed", content_type = "application/x-ndjson", body = String),
        (status = 200, description = "Captures as pcapng", content_type = "application/x-pcapng", body = Vec<u8>),
        (status = "4XX", body = Problem)))]
pub async fn export(
    State(state): State<ApiState>,
    Authenticated(actor): Authenticated,
    PathArgs(name): PathArgs<String>,
    QueryArgs(params): QueryArgs<ExportParams>,
) -> Result<Response, ApiError> {
    let id = org(&name)?;
    let mut request = export_request(id.clone(), &params)?;
    let context = state.context.clone();
    let who = actor.clone();
    let permit_org = id.clone();
    let kind = if request.kind == DataKind::Capture { GrantKind::Captures } else { GrantKind::Metadata };
    let asked = request.devices.clone();
    let permit = tokio::task::spawn_blocking(move || -> Result<Permit, ApiError> {
        let permit = context.permit(&who, "data.export", Some(&permit_org), Access::Read(kind), false)?;
        // Under a grant limited to devices, every device asked for must be
        // one of them.
        // Likewise for an admin limited to sites: its sites' devices.
        if let Some(device) = asked.iter().find(|d| !permit.covers(d)) {
            let reason = if who.sites.is_empty() {
                format!("the support grant of {permit_org} does not include device {device}")
            } else {
                format!("device {device} of {permit_org} is not at the sites {} is limited to", who.identity.name)
            };
            context.audit(&who.audit_name(), "data.export", Some(&permit_org), AuditOutcome::Refused, &reason);
            return Err(ApiError::forbidden(reason));
        }
        // Asking for every device when none may be seen (a site with no
        // device yet, a grant naming none of the sites' devices) would ask
        // for every device of the organisation: refused instead.
        if asked.is_empty() && permit.devices.as_ref().is_some_and(Vec::is_empty) {
            let reason = format!("no device of {permit_org} is within what the caller may see");
            context.audit(&who.audit_name(), "data.export", Some(&permit_org), AuditOutcome::Refused, &reason);
            return Err(ApiError::forbidden(reason));
        }
        Ok(permit)
    })
    .await
    .map_err(|_| ApiError::internal("authorisation failed unexpectedly; see the collector's log"))??;
    // Asking for no device is asking for every device the grant covers.
    if let (Some(devices), true) = (permit.devices, request.devices.is_empty()) {
        request.devices = devices;
    }
    let slot = RUNNING.try_acquire().map_err(|_| {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate-limited",
            format!("{MAX_CONCURRENT_EXPORTS} exports are running; try again when one has finished"),
        )
    })?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Bytes, io::Error>>(CHANNEL_CHUNKS);
    let store = state.context.store.clone();
    let actor_name = actor.audit_name();
    let format = request.format;
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let _slot = slot;
        let mut emit = |chunk: Vec<u8>| {
            match runtime.block_on(tokio::time::timeout(STALL_LIMIT, tx.send(Ok(Bytes::from(chunk))))) {
                Ok(Ok(())) => ControlFlow::Continue(()),
                // The client went away, or took nothing for too long.
                _ => ControlFlow::Break(()),
            }
        };
        match export_chunks_audited(&store, &actor_name, &request, DEFAULT_CHUNK_BYTES, &mut emit) {
            Ok(summary) if summary.problems > 0 => tracing::warn!(
                org = %request.org,
                problems = summary.problems,
                "export skipped damaged or missing segment regions (each is logged with its file)"
            ),
            Ok(_) => {}
            Err(e) => {
                tracing::error!(org = %request.org, "export failed: {e}");
                // Ends the body abnormally, so the client sees a cut download
                // (and resumes from its last cursor) rather than a short one.
                let _ = tx.blocking_send(Err(io::Error::other("export failed; see the collector's log")));
            }
        }
    });
    let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let (content_type, extension) = match format {
        ExportFormat::Pcapng => ("application/x-pcapng", "pcapng"),
        _ => ("application/x-ndjson", "jsonl"),
    };
    let mut response = Body::from_stream(stream).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(value) = HeaderValue::from_str(&format!(
        "attachment; filename=\"{id}-{}.{extension}\"",
        params.kind.as_deref().unwrap_or("metadata")
    )) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}
