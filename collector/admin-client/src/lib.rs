//! A client of a running collector's HTTPS admin API (`/api/v1`), over TLS
//! with an admin client certificate from `glimpse-certs admin` or with an
//! API token, trusting only the Glimpse CA.
//!
//! [`ApiClient`] sends typed requests (`glimpse-api`'s types) and turns
//! problem documents into [`AdminClientError::Problem`]. [`admin_request`]
//! runs one [`AdminAction`] over the API and answers with the
//! [`AdminReply`] the collector's admin layer gave (a refusal is
//! [`AdminReply::Refused`] with the problem's detail), for the
//! `glimpse-collector` admin commands, the demo and the tests. It holds no
//! policy: the collector decides what the caller's role allows and audits
//! it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

use glimpse_api::*;
use glimpse_common::bounded::{BoundedString, BoundedVec};
use glimpse_common::identity::{DeviceId, OrgId};
use glimpse_common::tls::{api_client_config, TlsConfigError};
use glimpse_common::wire::admin::{AdminAction, AdminReply, AuditRecord, Subject};
use glimpse_common::wire::CaptureOutcome;
use glimpse_files::{load_certs, load_key};

/// An admin request could not be made or was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminClientError {
    /// Certificate, key or CA could not be loaded.
    #[error(transparent)]
    Tls(#[from] TlsConfigError),
    /// The collector could not be reached, or the exchange failed.
    #[error("cannot reach the collector's admin API at {address}: {reason}")]
    Connect {
        /// Where.
        address: String,
        /// Why.
        reason: String,
    },
    /// The collector answered with a problem document.
    #[error("{} ({}): {}", .0.title, .0.code, .0.detail)]
    Problem(Problem),
    /// The collector's answer was not what the API documents.
    #[error("unexpected answer from the admin API: {0}")]
    Unexpected(String),
}

/// Who the admin is and how to reach the collector.
#[derive(Debug, Clone)]
pub struct AdminCredentials {
    /// Collector admin address, `host:port`.
    pub address: String,
    /// Name in the collector's certificate.
    pub server_name: String,
    /// The CA certificate.
    pub ca: PathBuf,
    /// The admin's certificate (unused with a token).
    pub cert: PathBuf,
    /// The admin's private key (unused with a token).
    pub key: PathBuf,
    /// An API token instead of the certificate.
    pub token: Option<String>,
}

/// A connection pool to one collector's admin API.
#[derive(Debug, Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    address: String,
}

/// Longest an admin request may take (exports stream for longer; their
/// reads are bounded by [`ApiClient::stream`]'s caller).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

impl ApiClient {
    /// A client for `credentials`: HTTP/2 or HTTP/1.1 by ALPN, only the
    /// Glimpse CA trusted, the certificate presented unless a token is
    /// given.
    pub async fn new(credentials: &AdminCredentials) -> Result<Self, AdminClientError> {
        let ca = load_certs(&credentials.ca)?.remove(0);
        let identity = match credentials.token {
            Some(_) => None,
            None => Some((load_certs(&credentials.cert)?, load_key(&credentials.key)?)),
        };
        let tls = api_client_config(&ca, identity)?;
        Self::with_tls(tls, &credentials.address, &credentials.server_name, credentials.token.clone()).await
    }

    /// A client that presents no credential at all (health probes, and
    /// tests of what the API refuses).
    pub async fn anonymous(address: &str, server_name: &str, ca: &std::path::Path) -> Result<Self, AdminClientError> {
        let ca = load_certs(ca)?.remove(0);
        Self::with_tls(api_client_config(&ca, None)?, address, server_name, None).await
    }

    async fn with_tls(
        tls: rustls::ClientConfig,
        address: &str,
        server_name: &str,
        token: Option<String>,
    ) -> Result<Self, AdminClientError> {
        let unreachable = |reason: String| AdminClientError::Connect { address: address.to_owned(), reason };
        let addr: SocketAddr = tokio::net::lookup_host(address)
            .await
            .map_err(|e| unreachable(e.to_string()))?
            .next()
            .ok_or_else(|| unreachable("the name has no address".into()))?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .resolve(server_name, addr)
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| unreachable(e.to_string()))?;
        Ok(ApiClient {
            http,
            base: format!("https://{server_name}:{}", addr.port()),
            token,
            address: address.to_owned(),
        })
    }

    /// A request builder for `path` (under the collector's origin, e.g.
    /// `/api/v1/whoami`), with the token if any.
    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let builder = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(token) => builder.bearer_auth(token),
            None => builder,
        }
    }

    /// Sends `body` (if any) and decodes the answer as `T`, or the problem.
    pub async fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<T, AdminClientError> {
        let mut request = self.request(method, path);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| AdminClientError::Connect { address: self.address.clone(), reason: chain(&e) })?;
        decode(response).await
    }

    /// GET `path` as `T`.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, AdminClientError> {
        self.send(Method::GET, path, None::<&()>).await
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The answer's body as `T`, or its problem document as the error.
pub async fn decode<T: DeserializeOwned>(response: reqwest::Response) -> Result<T, AdminClientError> {
    let status = response.status();
    let bytes = response.bytes().await.map_err(|e| AdminClientError::Unexpected(chain(&e)))?;
    if status.is_success() {
        return serde_json::from_slice(&bytes).map_err(|e| AdminClientError::Unexpected(e.to_string()));
    }
    match serde_json::from_slice::<Problem>(&bytes) {
        Ok(problem) => Err(AdminClientError::Problem(problem)),
        Err(_) => Err(AdminClientError::Unexpected(format!("{status} without a problem document"))),
    }
}

fn subject_ref(subject: &Subject) -> SubjectRef {
    let (kind, value) = match subject {
        Subject::Mac(mac) => ("mac", mac.to_string()),
        Subject::Ip(ip) => ("ip", ip.to_string()),
        Subject::Username(name) => ("username", name.as_str().to_owned()),
        _ => ("unknown", String::new()),
    };
    SubjectRef { kind: kind.into(), value }
}

fn outcome(status: &CaptureStatus) -> Option<CaptureOutcome> {
    match status.state.as_str() {
        "running" => Some(CaptureOutcome::Started),
        "finished" => Some(CaptureOutcome::Finished {
            packets: status.packets.unwrap_or(0),
            header_bytes: status.header_bytes.unwrap_or(0),
        }),
        "refused" => Some(CaptureOutcome::Refused {
            reason: BoundedString::truncating(status.reason.as_deref().unwrap_or_default()),
        }),
        _ => None,
    }
}

/// The subject an API subject reference names.
fn subject_of(subject: &SubjectRef) -> Result<Subject, AdminClientError> {
    match subject.kind.as_str() {
        "mac" => subject.value.parse().map(Subject::Mac).map_err(bad),
        "ip" => subject.value.parse().map(Subject::Ip).map_err(bad),
        "username" => BoundedString::try_new(subject.value.clone()).map(Subject::Username).map_err(bad),
        other => Err(bad(format!("a subject of kind {other:?}"))),
    }
}

/// Blocks or unblocks (`verb`) a subject.
async fn block(client: &ApiClient, org: &str, verb: &str, subject: &Subject) -> Result<AdminReply, AdminClientError> {
    let path = format!("{PREFIX}/orgs/{org}/subjects/{verb}");
    let body = SubjectBlockRequest { subject: subject_ref(subject) };
    let done: BlockChanged = client.send(Method::POST, &path, Some(&body)).await?;
    Ok(AdminReply::BlockChanged {
        blocked: done.blocked,
        changed: done.changed,
        blocked_subjects: done.blocked_subjects,
        devices_told: done.devices_told,
    })
}

fn bad(what: impl std::fmt::Display) -> AdminClientError {
    AdminClientError::Unexpected(what.to_string())
}

/// Runs one admin action over the API: the reply, [`AdminReply::Refused`]
/// with the problem's detail when the collector refused, or an error when
/// it could not be asked.
pub async fn admin_request(
    credentials: &AdminCredentials,
    action: AdminAction,
) -> Result<AdminReply, AdminClientError> {
    let client = ApiClient::new(credentials).await?;
    match perform(&client, action).await {
        Err(AdminClientError::Problem(problem)) if problem.status != StatusCode::TOO_MANY_REQUESTS.as_u16() => {
            Ok(AdminReply::Refused(BoundedString::truncating(&problem.detail)))
        }
        other => other,
    }
}

/// [`admin_request`] with an existing client.
pub async fn perform(client: &ApiClient, action: AdminAction) -> Result<AdminReply, AdminClientError> {
    let o = |org: &OrgId| org.as_str().to_owned();
    Ok(match action {
        AdminAction::StartCapture { org, device, interface, filter, duration_secs, max_packets } => {
            let body = CaptureStartRequest {
                device: device.as_str().to_owned(),
                interface: interface.as_str().to_owned(),
                filter: filter.as_str().to_owned(),
                duration_secs,
                max_packets,
            };
            let started: CaptureStarted =
                client.send(Method::POST, &format!("{PREFIX}/orgs/{}/captures", o(&org)), Some(&body)).await?;
            AdminReply::CaptureRequested { id: started.id }
        }
        AdminAction::StopCapture { org, device, id } => {
            let path = format!("{PREFIX}/orgs/{}/captures/{}/{id}/stop", o(&org), device.as_str());
            let _: CaptureStopped = client.send(Method::POST, &path, None::<&()>).await?;
            AdminReply::CaptureStopRequested
        }
        AdminAction::ConnectedDevices { org } => {
            let list: serde_json::Value = client.get(&format!("{PREFIX}/orgs/{}/devices", o(&org))).await?;
            let mut ids = Vec::new();
            for device in list["devices"].as_array().ok_or_else(|| bad("no device list"))? {
                if device["connected"].as_bool() == Some(true) {
                    let id = device["device"].as_str().ok_or_else(|| bad("a device without an id"))?;
                    ids.push(DeviceId::new(id).map_err(bad)?);
                }
            }
            AdminReply::Devices(BoundedVec::truncating(ids))
        }
        AdminAction::CaptureStatus { org, device, id } => {
            let path = format!("{PREFIX}/orgs/{}/captures/{}/{id}", o(&org), device.as_str());
            let status: CaptureStatus = client.get(&path).await?;
            AdminReply::CaptureStatus(outcome(&status))
        }
        AdminAction::SetConsent { org, capture } => {
            let path = format!("{PREFIX}/orgs/{}/consent", o(&org));
            let set: ConsentSet = client.send(Method::PUT, &path, Some(&ConsentRequest { capture })).await?;
            AdminReply::ConsentSet { capture: set.capture, changed: set.changed, devices_told: set.devices_told }
        }
        AdminAction::GrantSupport { org, hours, scope } => {
            let path = format!("{PREFIX}/orgs/{}/support", o(&org));
            let request = SupportGrantRequest {
                hours,
                kinds: Some(scope.kinds().iter().map(|k| k.as_str().to_owned()).collect()),
                devices: scope.devices().iter().map(|d| d.as_str().to_owned()).collect(),
                sites: scope.sites().iter().map(|s| s.as_str().to_owned()).collect(),
            };
            let granted: SupportGranted = client.send(Method::POST, &path, Some(&request)).await?;
            AdminReply::SupportGranted { until_ms: granted.until_ms }
        }
        AdminAction::RevokeSupport { org } => {
            let path = format!("{PREFIX}/orgs/{}/support", o(&org));
            let revoked: SupportRevoked = client.send(Method::DELETE, &path, None::<&()>).await?;
            AdminReply::SupportRevoked { was_active: revoked.was_active }
        }
        AdminAction::OrgStatus { org } => {
            let status: OrgStatus = client.get(&format!("{PREFIX}/orgs/{}", o(&org))).await?;
            let omitted =
                status.omitted_fields.iter().map(|f| f.parse()).collect::<Result<Vec<_>, _>>().map_err(bad)?;
            AdminReply::OrgStatus {
                omitted_fields: BoundedVec::truncating(omitted),
                pseudonymise_macs: status.pseudonymise_macs,
                strict_headers: status.strict_headers,
                capture_consent: status.capture_consent,
                support_until_ms: status.support_until_ms,
                connected_devices: status.connected_devices,
            }
        }
        AdminAction::VerifyAudit => {
            let verified: AuditVerified = client.get(&format!("{PREFIX}/audit/verify")).await?;
            AdminReply::AuditVerified { entries: verified.entries }
        }
        AdminAction::ShowAudit { org, after_seq } => {
            let mut path = format!("{PREFIX}/audit?after_seq={after_seq}");
            if let Some(org) = &org {
                path.push_str(&format!("&org={}", o(org)));
            }
            let page: AuditPage = client.get(&path).await?;
            let records = page
                .entries
                .into_iter()
                .map(|e| AuditRecord {
                    seq: e.seq,
                    at_ms: e.at_ms,
                    actor: BoundedString::truncating(&e.actor),
                    action: BoundedString::truncating(&e.action),
                    org: e.org.as_deref().and_then(|o| OrgId::new(o).ok()),
                    refused: e.refused,
                    detail: BoundedString::truncating(&e.detail),
                })
                .collect();
            AdminReply::AuditEntries(BoundedVec::truncating(records))
        }
        AdminAction::ExportSubject { org, subject, skip } => {
            let path = format!("{PREFIX}/orgs/{}/subjects/export", o(&org));
            let body = SubjectExportRequest { subject: subject_ref(&subject), skip };
            let page: SubjectRecords = client.send(Method::POST, &path, Some(&body)).await?;
            let lines = page
                .records
                .iter()
                .map(|r| BoundedString::try_new(r.to_string()).map_err(bad))
                .collect::<Result<Vec<_>, _>>()?;
            AdminReply::SubjectRecords { total: page.total, lines: BoundedVec::truncating(lines) }
        }
        AdminAction::EraseSubject { org, subject } => {
            let path = format!("{PREFIX}/orgs/{}/subjects/erase", o(&org));
            let body = SubjectEraseRequest { subject: subject_ref(&subject) };
            let erased: SubjectErased = client.send(Method::POST, &path, Some(&body)).await?;
            AdminReply::SubjectErased {
                metadata: erased.metadata,
                captures: erased.captures,
                segments_rewritten: erased.segments_rewritten,
            }
        }
        AdminAction::CorrectSubject { org, subject, field, value } => {
            let path = format!("{PREFIX}/orgs/{}/subjects/correct", o(&org));
            let body = SubjectCorrectRequest {
                subject: subject_ref(&subject),
                field: field.as_str().to_owned(),
                value: value.as_str().to_owned(),
            };
            let done: SubjectCorrected = client.send(Method::POST, &path, Some(&body)).await?;
            AdminReply::SubjectCorrected {
                records: done.records,
                values: done.values,
                segments_rewritten: done.segments_rewritten,
            }
        }
        AdminAction::BlockSubject { org, subject } => block(client, &o(&org), "block", &subject).await?,
        AdminAction::UnblockSubject { org, subject } => block(client, &o(&org), "unblock", &subject).await?,
        AdminAction::BlockedSubjects { org } => {
            let path = format!("{PREFIX}/orgs/{}/subjects/blocked", o(&org));
            let list: BlockedSubjectList = client.get(&path).await?;
            let subjects = list.subjects.iter().map(subject_of).collect::<Result<Vec<_>, _>>()?;
            AdminReply::BlockedSubjects(subjects.try_into().map_err(|e| bad(format!("{e}")))?)
        }
        AdminAction::SetDataPolicy { org, omit, pseudonymise_macs, strict_headers } => {
            let path = format!("{PREFIX}/orgs/{}/data-policy", o(&org));
            let body = DataPolicyRequest {
                omit: omit.iter().map(|f| f.as_str().to_owned()).collect(),
                pseudonymise_macs,
                strict_headers,
            };
            let set: DataPolicySet = client.send(Method::PUT, &path, Some(&body)).await?;
            AdminReply::DataPolicySet { devices_told: set.devices_told, strict_headers: set.strict_headers }
        }
        AdminAction::SetLocationHistory { org, keep } => {
            let path = format!("{PREFIX}/orgs/{}/location-history", o(&org));
            let set: LocationHistorySet =
                client.send(Method::PUT, &path, Some(&LocationHistoryRequest { keep })).await?;
            AdminReply::LocationHistorySet { keep: set.keep, changed: set.changed }
        }
        AdminAction::RequestDiagnostics { org, device } => {
            let path = format!("{PREFIX}/orgs/{}/devices/{}/diagnostics", o(&org), device.as_str());
            let requested: glimpse_api::DiagnosticsRequested = client.send(Method::POST, &path, None::<&()>).await?;
            AdminReply::DiagnosticsRequested { id: requested.id }
        }
        AdminAction::SetWanDestinations { org, on } => {
            let path = format!("{PREFIX}/orgs/{}/wan-destinations", o(&org));
            let set: WanDestinationsSet = client.send(Method::PUT, &path, Some(&WanDestinationsRequest { on })).await?;
            AdminReply::WanDestinationsSet { on: set.on, changed: set.changed, devices_told: set.devices_told }
        }
        AdminAction::SetRetention { org, metadata_days, capture_days } => {
            let path = format!("{PREFIX}/orgs/{}/retention", o(&org));
            let set: RetentionSet =
                client.send(Method::PUT, &path, Some(&RetentionRequest { metadata_days, capture_days })).await?;
            let days = |kind: &str| set.retention_days.get(kind).copied().unwrap_or_default();
            AdminReply::RetentionSet {
                metadata_days: days("metadata"),
                capture_days: days("capture"),
                changed: set.changed,
            }
        }
        AdminAction::DeleteOrg { org, confirm } => {
            let path = format!("{PREFIX}/orgs/{}", o(&org));
            let body = DeleteOrgRequest { confirm: confirm.as_str().to_owned() };
            let deleted: OrgDeleted = client.send(Method::DELETE, &path, Some(&body)).await?;
            AdminReply::OrgDeleted { key_destroyed: deleted.key_destroyed, segments_deleted: deleted.segments_deleted }
        }
        other => return Err(bad(format!("no API endpoint for {other:?}"))),
    })
}
