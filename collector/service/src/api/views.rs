//! Read-only views of stored data for the console (and any API client):
//! a device's interface rates bucketed over time, its newest Wi-Fi, wired
//! and WAN reports, a stored capture's decoded packet list, and the
//! operators' organisations and collector overviews.
//!
//! Each reads the store on a blocking thread through
//! [`glimpse_store::store::Store::read_after`], the reader the export uses,
//! so it sees exactly what an export would (the retention window, the
//! organisation's own key), and each scan stops at a bound
//! ([`MAX_SCANNED`]) whatever the store holds. Authorisation is
//! [`crate::admin::AdminContext::permit`], as for every endpoint: refusals
//! are audited there; reads that hand out stored records (`latest`,
//! `packets`) are audited when done as well, like an export.

use std::collections::{BTreeMap, HashMap};
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Mutex;

use axum::extract::State;
use axum::Json;

use glimpse_api::{
    CertificateWarning, DeviceLatest, DeviceRates, IngestRate, InterfaceRates, LatestReport, OrgList, OrgSummary,
    Overview, PacketList, PacketSummaryView, PacketsQuery, Problem, RatesQuery, StoreSize,
};
use glimpse_common::identity::{DeviceId, OrgId};
use glimpse_common::record::subject::{redact, Redaction};
use glimpse_common::record::{CounterReport, DataKind, RecordBody};
use glimpse_store::audit::AuditOutcome;
use glimpse_store::store::Store;

/// The stored forms of `org`'s blocked subjects, whose data no view shows.
fn blocked_forms(store: &Store, org: &OrgId) -> Result<Vec<glimpse_common::wire::admin::Subject>, ApiError> {
    glimpse_store::subject::blocked_forms(store, org).map_err(store_error)
}

use super::auth::{Authenticated, QueryArgs};
use super::problem::ApiError;
use super::routes::{blocking, org, PathArgs};
use super::ApiState;
use crate::admin::Access;
use glimpse_common::wire::admin::GrantKind;

/// The device views read stored metadata; under a grant, that kind.
const METADATA: Access = Access::Read(GrantKind::Metadata);

/// The packet view reads captured headers.
const CAPTURES: Access = Access::Read(GrantKind::Captures);

/// Most buckets one rates answer has.
pub const MAX_BUCKETS: u32 = 500;
/// Buckets when none are asked for.
pub const DEFAULT_BUCKETS: u32 = 60;
/// The range when none is asked for: the last hour.
pub const DEFAULT_RANGE_MS: i64 = 3_600_000;
/// The longest range one rates answer covers.
pub const MAX_RANGE_MS: i64 = 31 * 86_400_000;
/// Shortest bucket, so that a long interval cannot spread over very many.
pub const MIN_BUCKET_MS: i64 = 1_000;
/// Records one request reads at most, whatever the store holds.
pub const MAX_SCANNED: usize = 200_000;
/// Longest interval one counter report is believed to cover (agents
/// collect every 30 s by default); a longer claimed interval is cut to
/// this, so a hostile value cannot smear one report over the range.
pub const MAX_REPORT_INTERVAL_MS: u64 = 600_000;
/// Most packets one page lists.
pub const MAX_PACKETS_PAGE: u32 = 1000;
/// Packets one page lists when no limit is asked for.
pub const DEFAULT_PACKETS_PAGE: u32 = 200;
/// Certificates ending within this many days are warned about.
pub const WARNING_DAYS: u32 = 30;
/// The window of the ingest rate.
pub const INGEST_WINDOW_MS: i64 = 60_000;
/// How long after a capture's requested end its last packets may still
/// arrive (an agent sends them in batches, and may have been reconnecting).
const CAPTURE_GRACE_MS: i64 = 120_000;
/// How late a counter record may be received after it was observed and
/// still be found (a device that spooled through an outage sends late).
const LATE_RECEIPT_MS: i64 = 3_600_000;

const DAY_MS: i64 = 86_400_000;

fn device_id(value: &str) -> Result<DeviceId, ApiError> {
    DeviceId::new(value).map_err(|e| ApiError::bad_request(format!("device {value:?}: {e}")))
}

fn store_error(e: impl std::fmt::Display) -> ApiError {
    tracing::error!("a store read for a view failed: {e}");
    ApiError::unavailable("the store cannot be read now; see the collector's log")
}

/// The range and buckets a rates query asks for, checked: `(from, to,
/// bucket_ms, buckets)`.
pub fn rate_range(query: &RatesQuery, now_ms: i64) -> Result<(i64, i64, i64, usize), ApiError> {
    let to = query.to_ms.unwrap_or(now_ms);
    let from = query.from_ms.unwrap_or(to.saturating_sub(DEFAULT_RANGE_MS));
    if from >= to {
        return Err(ApiError::bad_request("from_ms must be before to_ms"));
    }
    if to - from > MAX_RANGE_MS {
        return Err(ApiError::bad_request(format!("the range is at most {} days", MAX_RANGE_MS / DAY_MS)));
    }
    let buckets = query.buckets.unwrap_or(DEFAULT_BUCKETS);
    if !(1..=MAX_BUCKETS).contains(&buckets) {
        return Err(ApiError::bad_request(format!("buckets must be 1..={MAX_BUCKETS}")));
    }
    let buckets = i64::from(buckets).min((to - from) / MIN_BUCKET_MS).max(1);
    // Round up, so that the buckets cover the whole range.
    let bucket_ms = (to - from + buckets - 1) / buckets;
    Ok((from, from + bucket_ms * buckets, bucket_ms, buckets as usize))
}

/// Sums of one interface's counters over one bucket: what each counter
/// report's interval contributed to it, and how much of the bucket the
/// reports covered.
#[derive(Debug, Clone, Copy, Default)]
struct Sums {
    covered_ms: f64,
    tx_bytes: f64,
    rx_bytes: f64,
    tx_errors: f64,
    rx_errors: f64,
    tx_dropped: f64,
    rx_dropped: f64,
}

/// Buckets counter reports into per-interface rates.
///
/// A report observed at `t` with interval `i` covers `[t - i, t)`; its
/// counts are spread over the buckets that interval overlaps, in
/// proportion to the overlap, and a bucket's rate is what fell in it over
/// how long reports covered it (a time-weighted mean). A bucket no report
/// covered is `None`, a gap, not a zero: the device sent nothing about it.
/// `reports` are `(observed_at_ms, report)`; interfaces are at most
/// [`glimpse_common::record::MAX_INTERFACES`] per report and the names
/// kept are bounded by `max_interfaces`.
pub fn bucket_rates<'a>(
    reports: impl IntoIterator<Item = (i64, &'a CounterReport)>,
    from_ms: i64,
    bucket_ms: i64,
    buckets: usize,
    max_interfaces: usize,
) -> Vec<InterfaceRates> {
    let mut sums: BTreeMap<String, Vec<Sums>> = BTreeMap::new();
    let to_ms = from_ms.saturating_add(bucket_ms.saturating_mul(buckets as i64));
    let bucket_ms = bucket_ms.max(1);
    for (end, report) in reports {
        let interval = report.interval_ms.min(MAX_REPORT_INTERVAL_MS) as i64;
        if interval == 0 {
            continue;
        }
        let start = end.saturating_sub(interval);
        let (lo, hi) = (start.max(from_ms), end.min(to_ms));
        if lo >= hi {
            continue;
        }
        let first = ((lo - from_ms) / bucket_ms) as usize;
        let last = (((hi - 1 - from_ms) / bucket_ms) as usize).min(buckets - 1);
        for delta in report.interfaces.iter() {
            let name = delta.name.as_str();
            if !sums.contains_key(name) {
                if sums.len() >= max_interfaces {
                    continue;
                }
                sums.insert(name.to_owned(), vec![Sums::default(); buckets]);
            }
            let Some(series) = sums.get_mut(name) else { continue };
            for (b, slot) in series.iter_mut().enumerate().take(last + 1).skip(first) {
                let b_start = from_ms + b as i64 * bucket_ms;
                let overlap = (hi.min(b_start + bucket_ms) - lo.max(b_start)).max(0) as f64;
                let share = overlap / interval as f64;
                slot.covered_ms += overlap;
                slot.tx_bytes += delta.tx_bytes as f64 * share;
                slot.rx_bytes += delta.rx_bytes as f64 * share;
                slot.tx_errors += delta.tx_errors as f64 * share;
                slot.rx_errors += delta.rx_errors as f64 * share;
                slot.tx_dropped += delta.tx_dropped as f64 * share;
                slot.rx_dropped += delta.rx_dropped as f64 * share;
            }
        }
    }
    sums.into_iter()
        .map(|(name, series)| {
            let rate = |f: fn(&Sums) -> f64, scale: f64| -> Vec<Option<f64>> {
                series
                    .iter()
                    .map(|s| (s.covered_ms > 0.0).then(|| round3(f(s) * scale * 1000.0 / s.covered_ms)))
                    .collect()
            };
            InterfaceRates {
                tx_bps: rate(|s| s.tx_bytes, 8.0),
                rx_bps: rate(|s| s.rx_bytes, 8.0),
                tx_errors_per_sec: rate(|s| s.tx_errors, 1.0),
                rx_errors_per_sec: rate(|s| s.rx_errors, 1.0),
                tx_drops_per_sec: rate(|s| s.tx_dropped, 1.0),
                rx_drops_per_sec: rate(|s| s.rx_dropped, 1.0),
                name,
            }
        })
        .collect()
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// A device's interface rates over time: per interface and bucket, Tx/Rx
/// bits per second and errors and drops per second, from the interval
/// counter records stored for it. Default: the last hour in 60 buckets;
/// at most 500 buckets and 31 days.
#[utoipa::path(get, path = "/api/v1/orgs/{org}/devices/{device}/rates", tag = "devices",
    params(("org" = String, Path, description = "The organisation"), ("device" = String, Path, description = "The device"),
        RatesQuery),
    responses((status = 200, body = DeviceRates), (status = "4XX", body = Problem)))]
pub async fn device_rates(
    State(state): State<ApiState>,
    Authenticated(actor): Authenticated,
    PathArgs((org_name, device_name)): PathArgs<(String, String)>,
    QueryArgs(query): QueryArgs<RatesQuery>,
) -> Result<Json<DeviceRates>, ApiError> {
    let org = org(&org_name)?;
    let device = device_id(&device_name)?;
    let (from, to, bucket_ms, buckets) = rate_range(&query, state.now_ms())?;
    blocking(move || {
        state.context.permit_device(&actor, "devices.rates", Some(&org), Some(&device), METADATA, false)?;
        let store = &state.context.store;
        let mut reports: Vec<(i64, CounterReport)> = Vec::new();
        let (mut scanned, mut truncated) = (0usize, false);
        let window = (Some(from.saturating_sub(300_000)), Some(to.saturating_add(LATE_RECEIPT_MS)));
        store
            .read_after(&org, DataKind::Metadata, window, None, &mut |_, stored| {
                scanned += 1;
                if scanned > MAX_SCANNED {
                    truncated = true;
                    return ControlFlow::Break(());
                }
                if stored.device != device {
                    return ControlFlow::Continue(());
                }
                if let RecordBody::Counters(report) = stored.record.body {
                    let at = stored.record.observed_at_ms;
                    if at > from && at.saturating_sub(MAX_REPORT_INTERVAL_MS as i64) < to {
                        reports.push((at, report));
                    }
                }
                ControlFlow::Continue(())
            })
            .map_err(store_error)?;
        let interfaces = bucket_rates(
            reports.iter().map(|(at, r)| (*at, r)),
            from,
            bucket_ms,
            buckets,
            glimpse_common::record::MAX_INTERFACES,
        );
        Ok(Json(DeviceRates {
            org: org.as_str().to_owned(),
            device: device.as_str().to_owned(),
            from_ms: from,
            to_ms: to,
            bucket_ms,
            bucket_starts_ms: (0..buckets).map(|b| from + b as i64 * bucket_ms).collect(),
            reports: reports.len() as u64,
            truncated,
            interfaces,
        }))
    })
    .await
}

/// The newest report of each network kind in `records`, by received
/// order (the last seen wins).
#[derive(Debug, Default)]
struct Newest {
    wireless: Option<LatestReport>,
    wired: Option<LatestReport>,
    wan: Option<LatestReport>,
    client_devices: Option<LatestReport>,
}

impl Newest {
    fn take(&mut self, received_at_ms: i64, observed_at_ms: i64, body: &RecordBody) {
        let slot = match body {
            RecordBody::Wireless(_) => &mut self.wireless,
            RecordBody::Wired(_) => &mut self.wired,
            RecordBody::Wan(_) => &mut self.wan,
            RecordBody::ClientDevices(_) => &mut self.client_devices,
            _ => return,
        };
        // The tagged body, as the JSON-lines export writes it; take the inner report.
        let report = match serde_json::to_value(body) {
            Ok(serde_json::Value::Object(mut map)) => map.values_mut().next().map(std::mem::take),
            _ => None,
        };
        if let Some(report) = report {
            *slot = Some(LatestReport { observed_at_ms, received_at_ms, report });
        }
    }

    fn any(&self) -> bool {
        self.wireless.is_some() || self.wired.is_some() || self.wan.is_some()
    }
}

/// A device's newest Wi-Fi report (radios, stations, roams), wired report
/// (VLANs, learned hosts, LLDP neighbours) and WAN report (sessions per
/// application), each `null` if it sent none. Looks at the last hour
/// first and, finding none, the last 7 days.
#[utoipa::path(get, path = "/api/v1/orgs/{org}/devices/{device}/latest", tag = "devices",
    params(("org" = String, Path, description = "The organisation"), ("device" = String, Path, description = "The device")),
    responses((status = 200, body = DeviceLatest), (status = "4XX", body = Problem)))]
pub async fn device_latest(
    State(state): State<ApiState>,
    Authenticated(actor): Authenticated,
    PathArgs((org_name, device_name)): PathArgs<(String, String)>,
) -> Result<Json<DeviceLatest>, ApiError> {
    let org = org(&org_name)?;
    let device = device_id(&device_name)?;
    blocking(move || {
        let context = &state.context;
        context.permit_device(&actor, "devices.latest", Some(&org), Some(&device), METADATA, false)?;
        let now = state.now_ms();
        let mut newest = Newest::default();
        let blocked = blocked_forms(&context.store, &org)?;
        for back in [3_600_000, 7 * DAY_MS] {
            let mut scanned = 0usize;
            context
                .store
                .read_after(&org, DataKind::Metadata, (Some(now - back), None), None, &mut |_, mut stored| {
                    scanned += 1;
                    if scanned > MAX_SCANNED {
                        return ControlFlow::Break(());
                    }
                    // A blocked subject's stations and hosts are not shown.
                    if redact(&mut stored.record, &blocked) == Redaction::Remove {
                        return ControlFlow::Continue(());
                    }
                    if stored.device == device {
                        newest.take(stored.received_at_ms, stored.record.observed_at_ms, &stored.record.body);
                    }
                    ControlFlow::Continue(())
                })
                .map_err(store_error)?;
            if newest.any() {
                break;
            }
        }
        let found: Vec<&str> = [
            ("wireless", &newest.wireless),
            ("wired", &newest.wired),
            ("wan", &newest.wan),
            ("client-devices", &newest.client_devices),
        ]
        .iter()
        .filter(|(_, r)| r.is_some())
        .map(|(n, _)| *n)
        .collect();
        context.audit(
            &actor.audit_name(),
            "devices.latest",
            Some(&org),
            AuditOutcome::Done,
            &format!("device {device}: newest {}", if found.is_empty() { "none".into() } else { found.join(", ") }),
        );
        Ok(Json(DeviceLatest {
            org: org.as_str().to_owned(),
            device: device.as_str().to_owned(),
            wireless: newest.wireless,
            wired: newest.wired,
            wan: newest.wan,
            client_devices: newest.client_devices,
        }))
    })
    .await
}

/// The name of IP protocol `number` (or the ARP EtherType), for the list.
pub fn protocol_name(ethertype: Option<u16>, ip_protocol: Option<u8>) -> String {
    match (ethertype, ip_protocol) {
        (_, Some(6)) => "tcp".into(),
        (_, Some(17)) => "udp".into(),
        (_, Some(1)) => "icmp".into(),
        (_, Some(58)) => "icmpv6".into(),
        (_, Some(n)) => format!("ip-proto-{n}"),
        (Some(0x0806), None) => "arp".into(),
        (Some(0x0800), None) => "ipv4".into(),
        (Some(0x86dd), None) => "ipv6".into(),
        (Some(t), None) => format!("ethertype-0x{t:04x}"),
        (None, None) => "unknown".into(),
    }
}

/// TCP flag bits as names, lowest bit first (`FIN,SYN,RST,PSH,ACK,URG,ECE,CWR,NS`).
pub fn tcp_flag_names(flags: u16) -> String {
    const NAMES: [&str; 9] = ["FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR", "NS"];
    let names: Vec<&str> = NAMES.iter().enumerate().filter(|(i, _)| flags & (1 << i) != 0).map(|(_, n)| *n).collect();
    names.join(",")
}

/// One stored packet as the list shows it (the decoding of the JSON-lines
/// export's `summary`).
pub fn packet_view(packet: &glimpse_common::capture::CapturedPacket) -> PacketSummaryView {
    let summary = packet.summary();
    let s = summary.as_ref();
    let mac = |m: Option<[u8; 6]>| m.map(|m| glimpse_common::record::MacAddr(m).to_string());
    let ethertype = s.and_then(|s| s.ethertype);
    let ip_protocol = s.and_then(|s| s.ip_protocol);
    let tcp_flags = s.and_then(|s| s.tcp_flags);
    PacketSummaryView {
        timestamp_us: packet.timestamp_us,
        src_mac: mac(s.and_then(|s| s.src_mac)),
        dst_mac: mac(s.and_then(|s| s.dst_mac)),
        vlan: s.and_then(|s| s.vlan_outer),
        ethertype,
        src_ip: s.and_then(|s| s.src_ip).map(|a| a.to_string()),
        dst_ip: s.and_then(|s| s.dst_ip).map(|a| a.to_string()),
        ip_protocol,
        protocol: protocol_name(ethertype, ip_protocol),
        src_port: s.and_then(|s| s.src_port),
        dst_port: s.and_then(|s| s.dst_port),
        tcp_flags,
        tcp_flag_names: tcp_flags.map(tcp_flag_names),
        captured_len: packet.headers.len() as u32,
        original_len: packet.wire_len,
        headers_only: true,
    }
}

/// A stored capture's packets, decoded from the kept headers (time,
/// addresses, protocol, ports, TCP flags, captured and original lengths),
/// a page at a time (at most 1000). Packets carry no capture id: these are
/// the device's packets from the capture's interface received while it
/// ran, so the collector must still remember the request (the newest
/// 1024 per organisation since it started).
#[utoipa::path(get, path = "/api/v1/orgs/{org}/captures/{device}/{id}/packets", tag = "captures",
    params(("org" = String, Path, description = "The organisation"), ("device" = String, Path, description = "The device"),
        ("id" = u64, Path, description = "The capture's id"), PacketsQuery),
    responses((status = 200, body = PacketList), (status = "4XX", body = Problem)))]
pub async fn capture_packets(
    State(state): State<ApiState>,
    Authenticated(actor): Authenticated,
    PathArgs((org_name, device_name, id)): PathArgs<(String, String, u64)>,
    QueryArgs(query): QueryArgs<PacketsQuery>,
) -> Result<Json<PacketList>, ApiError> {
    let org = org(&org_name)?;
    let device = device_id(&device_name)?;
    let limit = query.limit.unwrap_or(DEFAULT_PACKETS_PAGE);
    if !(1..=MAX_PACKETS_PAGE).contains(&limit) {
        return Err(ApiError::bad_request(format!("limit must be 1..={MAX_PACKETS_PAGE}")));
    }
    let offset = query.offset.unwrap_or(0);
    blocking(move || {
        let context = &state.context;
        context.permit_device(&actor, "capture.packets", Some(&org), Some(&device), CAPTURES, false)?;
        let window = context.directory.capture_window(&org, &device, id).ok_or_else(|| {
            ApiError::not_found(format!("no remembered capture {id} of device {device}; export by time instead"))
        })?;
        let from = window.requested_at_ms.saturating_sub(5_000);
        let to = window
            .requested_at_ms
            .saturating_add(i64::from(window.duration_secs).saturating_mul(1000))
            .saturating_add(CAPTURE_GRACE_MS);
        let (mut total, mut scanned) = (0u64, 0usize);
        let mut packets = Vec::new();
        let blocked = blocked_forms(&context.store, &org)?;
        context
            .store
            .read_after(&org, DataKind::Capture, (Some(from), Some(to)), None, &mut |_, mut stored| {
                scanned += 1;
                if scanned > MAX_SCANNED {
                    return ControlFlow::Break(());
                }
                // A blocked subject's packets are not shown.
                if redact(&mut stored.record, &blocked) == Redaction::Remove {
                    return ControlFlow::Continue(());
                }
                let RecordBody::Capture(packet) = &stored.record.body else { return ControlFlow::Continue(()) };
                let any = matches!(window.interface.as_str(), "" | "any");
                if stored.device != device || !(any || packet.interface.as_str() == window.interface) {
                    return ControlFlow::Continue(());
                }
                if total >= offset && packets.len() < limit as usize {
                    packets.push(packet_view(packet));
                }
                total += 1;
                ControlFlow::Continue(())
            })
            .map_err(store_error)?;
        context.audit(
            &actor.audit_name(),
            "capture.packets",
            Some(&org),
            AuditOutcome::Done,
            &format!("device {device} capture {id}: {} of {total} packets from {offset}", packets.len()),
        );
        Ok(Json(PacketList {
            id,
            device: device.as_str().to_owned(),
            interface: window.interface,
            from_ms: from,
            to_ms: to,
            offset,
            total,
            packets,
        }))
    })
    .await
}

/// Who last changed an organisation's consent, and when.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConsentChange {
    /// The audit log's actor of the last `consent.set` that changed it.
    pub by: Option<String>,
    /// When, Unix ms (the organisation's policy, else the audit entry).
    pub at_ms: Option<i64>,
}

/// What has been read of one audit log: up to which entry, and the last
/// consent change per organisation found so far.
#[derive(Debug, Default)]
struct ConsentScan {
    after_seq: u64,
    last: HashMap<String, (String, i64)>,
}

/// Per audit log file: the log only grows, so each lookup reads only the
/// entries appended since the last one.
static CONSENT_SCANS: Mutex<Option<HashMap<PathBuf, ConsentScan>>> = Mutex::new(None);

/// Most organisations whose last consent change is remembered.
const MAX_CONSENT_ORGS: usize = 100_000;

/// Who last changed `org`'s capture consent, from the audit log's last
/// `consent.set` entry that changed it, and when (the stored policy's
/// time). Blocking: reads the log's new entries.
pub fn consent_change(store: &Store, org: &OrgId) -> ConsentChange {
    let at_ms = store.policies().get(org).consent_changed_at_ms;
    let log = store.audit();
    let mut scans = CONSENT_SCANS.lock().unwrap_or_else(|p| p.into_inner());
    let scan = scans.get_or_insert_with(HashMap::new).entry(log.path().to_path_buf()).or_default();
    loop {
        let page = match log.entries(None, scan.after_seq, 1000) {
            Ok(page) => page,
            Err(e) => {
                tracing::warn!("cannot read the audit log for consent changes: {e}");
                break;
            }
        };
        let Some(last) = page.last() else { break };
        scan.after_seq = last.seq;
        for entry in &page {
            let changed = entry.action == "consent.set"
                && entry.outcome == AuditOutcome::Done
                && !entry.detail.contains("(unchanged)");
            if let (true, Some(org)) = (changed, &entry.org) {
                if scan.last.len() < MAX_CONSENT_ORGS || scan.last.contains_key(org) {
                    scan.last.insert(org.clone(), (entry.actor.clone(), entry.at_ms));
                }
            }
        }
        if page.len() < 1000 {
            break;
        }
    }
    match scan.last.get(org.as_str()) {
        Some((by, at)) => ConsentChange { by: Some(by.clone()), at_ms: at_ms.or(Some(*at)) },
        None => ConsentChange { by: None, at_ms },
    }
}

/// Every organisation the collector knows (a store directory, a decision
/// or a registered device), sorted.
fn known_orgs(store: &Store) -> Vec<OrgId> {
    let mut orgs: Vec<OrgId> = store.orgs();
    orgs.extend(store.policies().all().into_iter().map(|(o, _)| o));
    if let Ok(registered) = store.registry().list() {
        orgs.extend(registered.into_iter().map(|r| r.identity.org));
    }
    orgs.sort();
    orgs.dedup();
    orgs
}

/// Every organisation (operators): devices registered and connected per
/// kind, records received since start, bytes and segments stored per
/// kind, capture consent with who changed it and when, the support grant
/// and retention.
#[utoipa::path(get, path = "/api/v1/orgs", tag = "organisations",
    responses((status = 200, body = OrgList), (status = "4XX", body = Problem)))]
pub async fn list_orgs(
    State(state): State<ApiState>,
    Authenticated(actor): Authenticated,
) -> Result<Json<OrgList>, ApiError> {
    blocking(move || {
        let context = &state.context;
        context.permit(&actor, "orgs.list", None, Access::Operator, false)?;
        let store = &context.store;
        let stats = store.stats().map_err(store_error)?;
        let registered = store.registry().list().map_err(store_error)?;
        let now = state.now_ms();
        let mut orgs = Vec::new();
        for org in known_orgs(store) {
            let details = context.directory.device_details(&org, &registered, now);
            let mut connected_by_kind = BTreeMap::new();
            for d in details.iter().filter(|d| d.connected) {
                *connected_by_kind.entry(d.kind.clone()).or_insert(0u32) += 1;
            }
            let (mut stored_bytes, mut stored_segments) = (BTreeMap::new(), BTreeMap::new());
            for kind in DataKind::ALL {
                let row = stats.kinds.iter().find(|k| k.org == org && k.kind == kind);
                stored_bytes.insert(kind.to_string(), row.map_or(0, |r| r.bytes));
                stored_segments.insert(kind.to_string(), row.map_or(0, |r| r.segments));
            }
            let policy = store.policies().get(&org);
            let consent = consent_change(store, &org);
            orgs.push(OrgSummary {
                registered_devices: details.iter().filter(|d| d.registered).count() as u32,
                connected_by_kind,
                records_received: details.iter().map(|d| d.records_received).sum(),
                stored_bytes,
                stored_segments,
                capture_consent: policy.capture_consent,
                consent_changed_by: consent.by,
                consent_changed_at_ms: consent.at_ms,
                support_until_ms: policy.support_until_ms.filter(|until| *until > now),
                retention_days: DataKind::ALL.iter().map(|k| (k.to_string(), store.retention_days(&org, *k))).collect(),
                org: org.as_str().to_owned(),
            });
        }
        Ok(Json(OrgList { orgs }))
    })
    .await
}

/// One of the collector's own certificates: the one it serves on both
/// ports, or the CA it trusts. Read at start and at every reload, so the
/// operator page warns before the collector's own certificate ends and
/// every device and admin is refused at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnCertificate {
    /// `collector` (the served certificate) or `ca`.
    pub kind: &'static str,
    /// Its file.
    pub path: String,
    /// Its serial, hex.
    pub serial: String,
    /// When it ends, Unix ms.
    pub not_after_ms: i64,
}

/// The collector's served certificate and CA from `config`; one that cannot
/// be read is left out with a warning (start-up has already refused an
/// unusable one).
pub fn own_certificates(config: &crate::config::CollectorConfig) -> Vec<OwnCertificate> {
    [("collector", &config.cert), ("ca", &config.ca)]
        .into_iter()
        .filter_map(|(kind, path)| {
            let read = glimpse_files::load_certs(path).map_err(|e| e.to_string()).and_then(|certs| {
                let der = certs.first().ok_or_else(|| "no certificate in the file".to_owned())?;
                let not_after = glimpse_common::certificate::not_after_unix_of(der).map_err(|e| e.to_string())?;
                let serial = glimpse_common::certificate::serial_hex_of(der).map_err(|e| e.to_string())?;
                Ok((serial, not_after.saturating_mul(1000)))
            });
            match read {
                Ok((serial, not_after_ms)) => {
                    Some(OwnCertificate { kind, path: path.display().to_string(), serial, not_after_ms })
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), "cannot read the certificate's expiry: {e}");
                    None
                }
            }
        })
        .collect()
}

/// The collector's own certificates as the overview lists them.
pub fn own_expiry(own: &[OwnCertificate], now_ms: i64) -> Vec<CertificateWarning> {
    own.iter()
        .map(|c| CertificateWarning {
            kind: c.kind.into(),
            subject: c.path.clone(),
            org: None,
            serial: Some(c.serial.clone()),
            not_after_ms: c.not_after_ms,
            days_left: (c.not_after_ms - now_ms).div_euclid(DAY_MS),
        })
        .collect()
}

/// Certificates among `own`, `admins` and `devices` that end before `now +
/// WARNING_DAYS` (revoked ones are left out: they no longer matter).
pub fn certificate_warnings_with_own(
    own: &[OwnCertificate],
    admins: &[glimpse_store::control::AdminRecord],
    devices: &[crate::ingest::DeviceDetail],
    now_ms: i64,
) -> Vec<CertificateWarning> {
    let horizon = now_ms.saturating_add(i64::from(WARNING_DAYS) * DAY_MS);
    let mut warnings: Vec<CertificateWarning> =
        own_expiry(own, now_ms).into_iter().filter(|c| c.not_after_ms < horizon).collect();
    warnings.extend(certificate_warnings(admins, devices, now_ms));
    warnings.sort_by_key(|w| w.not_after_ms);
    warnings
}

/// Certificates among `admins` and `devices` that end before `now +
/// WARNING_DAYS` (revoked ones are left out: they no longer matter).
pub fn certificate_warnings(
    admins: &[glimpse_store::control::AdminRecord],
    devices: &[crate::ingest::DeviceDetail],
    now_ms: i64,
) -> Vec<CertificateWarning> {
    let horizon = now_ms.saturating_add(i64::from(WARNING_DAYS) * DAY_MS);
    let days_left = |at: i64| (at - now_ms).div_euclid(DAY_MS);
    let mut warnings: Vec<CertificateWarning> = admins
        .iter()
        .filter(|a| !a.revoked)
        .filter_map(|a| {
            let at = a.not_after_ms.filter(|at| *at < horizon)?;
            Some(CertificateWarning {
                kind: "admin".into(),
                subject: format!("{} ({})", a.name, a.role),
                org: a.org.clone(),
                serial: Some(a.serial.clone()),
                not_after_ms: at,
                days_left: days_left(at),
            })
        })
        .collect();
    warnings.extend(devices.iter().filter(|d| !d.revoked).filter_map(|d| {
        let at = d.certificate_not_after_ms.filter(|at| *at < horizon)?;
        Some(CertificateWarning {
            kind: "device".into(),
            subject: format!("{}/{}", d.org, d.device),
            org: Some(d.org.clone()),
            serial: None,
            not_after_ms: at,
            days_left: days_left(at),
        })
    }));
    warnings.sort_by_key(|w| w.not_after_ms);
    warnings
}

/// The collector at a glance (operators): store size per organisation,
/// what was stored over the last minute, and certificates (admin and
/// device) ending within 30 days.
#[utoipa::path(get, path = "/api/v1/overview", tag = "operations",
    responses((status = 200, body = Overview), (status = "4XX", body = Problem)))]
pub async fn overview(
    State(state): State<ApiState>,
    Authenticated(actor): Authenticated,
) -> Result<Json<Overview>, ApiError> {
    blocking(move || {
        let context = &state.context;
        context.permit(&actor, "overview.show", None, Access::Operator, false)?;
        let store = &context.store;
        let now = state.now_ms();
        let stats = store.stats().map_err(store_error)?;
        let mut sizes: BTreeMap<String, StoreSize> = BTreeMap::new();
        for k in &stats.kinds {
            let row = sizes.entry(k.org.as_str().to_owned()).or_insert_with(|| StoreSize {
                org: k.org.as_str().to_owned(),
                metadata_bytes: 0,
                capture_bytes: 0,
                bytes: 0,
                segments: 0,
            });
            match k.kind {
                DataKind::Capture => row.capture_bytes += k.bytes,
                _ => row.metadata_bytes += k.bytes,
            }
            row.bytes += k.bytes;
            row.segments += k.segments;
        }
        let mut store_sizes: Vec<StoreSize> = sizes.into_values().collect();
        store_sizes.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.org.cmp(&b.org)));
        // What the last minute stored: read back rather than sampled, so it
        // needs no history and runs on the collector's (injected) clock.
        let (mut records, mut bytes, mut scanned) = (0u64, 0u64, 0usize);
        let since = now - INGEST_WINDOW_MS;
        let orgs = known_orgs(store);
        'orgs: for org in &orgs {
            for kind in DataKind::ALL {
                let mut full = false;
                store
                    .read_after(org, kind, (Some(since), Some(now + 1)), None, &mut |_, stored| {
                        scanned += 1;
                        if scanned > MAX_SCANNED {
                            full = true;
                            return ControlFlow::Break(());
                        }
                        records += 1;
                        bytes += postcard::to_stdvec(&stored.record).map_or(0, |b| b.len() as u64);
                        ControlFlow::Continue(())
                    })
                    .map_err(store_error)?;
                if full {
                    break 'orgs;
                }
            }
        }
        let secs = INGEST_WINDOW_MS as f64 / 1000.0;
        let ingest = IngestRate {
            window_ms: INGEST_WINDOW_MS,
            records,
            bytes,
            records_per_sec: round3(records as f64 / secs),
            bytes_per_sec: round3(bytes as f64 / secs),
            records_since_start: state.telemetry.as_ref().map(|t| t.ingest().stored_totals().1),
        };
        let registered = store.registry().list().map_err(store_error)?;
        let mut devices = Vec::new();
        for org in &orgs {
            devices.extend(context.directory.device_details(org, &registered, now));
        }
        let own = state.own_certificates.read().map(|c| c.clone()).unwrap_or_default();
        let certificate_warnings = certificate_warnings_with_own(&own, &store.admins().list(), &devices, now);
        Ok(Json(Overview {
            at_ms: now,
            store_bytes: stats.bytes,
            store: store_sizes,
            ingest,
            certificate_warnings,
            warning_days: WARNING_DAYS,
            collector_certificates: own_expiry(&own, now),
        }))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use glimpse_common::bounded::{BoundedString, BoundedVec};
    use glimpse_common::record::InterfaceDelta;

    fn report(interval_ms: u64, ifaces: &[(&str, u64, u64, u64)]) -> CounterReport {
        let interfaces = ifaces
            .iter()
            .map(|(name, tx, rx, err)| InterfaceDelta {
                name: BoundedString::truncating(name),
                tx_bytes: *tx,
                rx_bytes: *rx,
                rx_errors: *err,
                ..Default::default()
            })
            .collect();
        CounterReport { interval_ms, interfaces: BoundedVec::truncating(interfaces) }
    }

    #[test]
    fn reports_inside_buckets_give_their_rates() {
        // Two 30 s reports in the first 60 s bucket, one in the second; none in the third.
        let a = report(30_000, &[("eth0", 3_000_000, 30_000, 30)]);
        let b = report(30_000, &[("eth0", 6_000_000, 30_000, 0), ("wlan0", 300, 0, 0)]);
        let c = report(30_000, &[("eth0", 375_000, 0, 0)]);
        let rates = bucket_rates([(30_000, &a), (60_000, &b), (90_000, &c)], 0, 60_000, 3, 256);
        assert_eq!(rates.len(), 2);
        let eth0 = &rates[0];
        assert_eq!(eth0.name, "eth0");
        // (3 MB + 6 MB) * 8 bits over 60 s = 1.2 Mb/s; 375 kB * 8 over 30 s = 100 kb/s.
        assert_eq!(eth0.tx_bps, vec![Some(1_200_000.0), Some(100_000.0), None]);
        assert_eq!(eth0.rx_bps, vec![Some(8_000.0), Some(0.0), None]);
        assert_eq!(eth0.rx_errors_per_sec, vec![Some(0.5), Some(0.0), None]);
        assert_eq!(eth0.tx_drops_per_sec[0], Some(0.0));
        let wlan0 = &rates[1];
        // Only reported in the second half of bucket 0: 300 B * 8 over 30 s.
        assert_eq!(wlan0.tx_bps, vec![Some(80.0), None, None]);
    }

    #[test]
    fn a_report_across_buckets_is_shared_by_overlap() {
        // 60 s of 600 kB ending at 90 s: half in [0, 60), half in [60, 120).
        let a = report(60_000, &[("eth0", 600_000, 0, 0)]);
        let rates = bucket_rates([(90_000, &a)], 0, 60_000, 2, 256);
        assert_eq!(rates[0].tx_bps, vec![Some(80_000.0), Some(80_000.0)]);
        // Outside the range entirely: nothing.
        assert!(bucket_rates([(200_000, &a)], 0, 60_000, 2, 256).is_empty());
        // A zero interval is no information.
        assert!(bucket_rates([(30_000, &report(0, &[("eth0", 1, 1, 1)]))], 0, 60_000, 2, 256).is_empty());
    }

    #[test]
    fn hostile_intervals_and_interface_counts_are_bounded() {
        let huge = report(u64::MAX, &[("eth0", u64::MAX, u64::MAX, u64::MAX)]);
        let rates = bucket_rates([(i64::MAX, &huge), (i64::MIN, &huge), (1_000_000, &huge)], 0, 1_000, 500, 256);
        assert_eq!(rates.len(), 1);
        assert!(rates[0].tx_bps.iter().flatten().all(|v| v.is_finite()));
        let many = report(30_000, &[("a", 1, 1, 1), ("b", 1, 1, 1), ("c", 1, 1, 1)]);
        assert_eq!(bucket_rates([(30_000, &many)], 0, 60_000, 1, 2).len(), 2, "interfaces capped");
    }

    #[test]
    fn ranges_default_and_are_bounded() {
        let now = 10 * DAY_MS;
        let (from, to, bucket, n) = rate_range(&RatesQuery::default(), now).unwrap();
        assert_eq!((from, to, bucket, n), (now - DEFAULT_RANGE_MS, now, 60_000, 60));
        let q = |from, to, buckets| RatesQuery { from_ms: Some(from), to_ms: Some(to), buckets: Some(buckets) };
        assert!(rate_range(&q(5, 5, 10), now).is_err());
        assert!(rate_range(&q(0, 32 * DAY_MS, 10), now).is_err());
        assert!(rate_range(&q(0, 1000, 0), now).is_err());
        assert!(rate_range(&q(0, 1000, 501), now).is_err());
        // Buckets never shorter than a second; they cover the range.
        assert_eq!(rate_range(&q(0, 10_000, 500), now).unwrap(), (0, 10_000, 1_000, 10));
        assert_eq!(rate_range(&q(0, 10_001, 3), now).unwrap(), (0, 10_002, 3_334, 3));
    }

    #[test]
    fn protocols_and_flags_are_named() {
        assert_eq!(protocol_name(Some(0x0800), Some(6)), "tcp");
        assert_eq!(protocol_name(Some(0x0806), None), "arp");
        assert_eq!(protocol_name(None, Some(47)), "ip-proto-47");
        assert_eq!(tcp_flag_names(0x12), "SYN,ACK");
        assert_eq!(tcp_flag_names(0), "");
    }

    #[test]
    fn certificates_ending_soon_are_warned_about() {
        let admin = |name: &str, not_after_ms, revoked| glimpse_store::control::AdminRecord {
            name: name.into(),
            role: "operator".into(),
            org: None,
            serial: "01".into(),
            not_after_ms,
            revoked,
            revoked_at_ms: None,
            last_used_ms: None,
        };
        let now = 100 * DAY_MS;
        let admins = [
            admin("soon", Some(now + 3 * DAY_MS), false),
            admin("later", Some(now + 60 * DAY_MS), false),
            admin("gone", Some(now - DAY_MS), true),
            admin("ended", Some(now - DAY_MS), false),
            admin("unknown", None, false),
        ];
        let w = certificate_warnings(&admins, &[], now);
        assert_eq!(
            w.iter().map(|w| (w.subject.as_str(), w.days_left)).collect::<Vec<_>>(),
            [("ended (operator)", -1), ("soon (operator)", 3)]
        );
        let own = |kind, days| OwnCertificate {
            kind,
            path: format!("/etc/{kind}.pem"),
            serial: "0a".into(),
            not_after_ms: now + days * DAY_MS,
        };
        let w = certificate_warnings_with_own(&[own("collector", 10), own("ca", 3650)], &admins, &[], now);
        assert_eq!(
            w.iter().map(|w| (w.kind.as_str(), w.days_left)).collect::<Vec<_>>(),
            [("admin", -1), ("admin", 3), ("collector", 10)]
        );
        assert_eq!(w[2].serial.as_deref(), Some("0a"));
    }
}
