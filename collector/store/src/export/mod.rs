//! Export: decrypted records of one organisation and kind, streamed as JSON
//! lines or (captures) pcapng, filtered, and resumable by cursor.
//!
//! # The engine
//!
//! [`export_chunks`] reads the store in its read order (days, segments in
//! creation order, blocks, records: the order the collector stored them,
//! which is received order) through [`Store::read_after`], keeps the
//! records that pass the filters (time range, devices, and for captures a
//! [`CaptureFilter`] over the decoded headers), encodes them into a buffer
//! and hands the buffer on whenever it holds `chunk_bytes`. Memory is one
//! decrypted block (at most [`crate::store::MAX_BLOCK_LEN`]) plus one chunk,
//! whatever the export's size. The consumer can stop it at any chunk
//! (`ControlFlow::Break`: a client went away).
//!
//! Records about a subject the organisation has blocked are left out, and
//! their entries cut out of reports about many clients (see
//! [`Store::blocked_forms`]).
//!
//! # Cursors
//!
//! Every record carries its [`ExportCursor`]: in JSON lines as the line's
//! `cursor` field, in pcapng as the Enhanced Packet Block's comment
//! (`cursor=<text>`). Passing the cursor of the last record received back
//! continues right after it: records stored meanwhile are appended after
//! every existing position, so none is repeated or lost (see
//! [`crate::store::ReadMark`]). The same filters must be passed again; the
//! cursor only says where to start.
//!
//! # JSON lines
//!
//! The field names are stable and documented in docs/FIELDS.md:
//! `org`, `device`, `device_kind`, `kind`, `received_at`, `observed_at`
//! (RFC 3339, UTC), `record` (the record body, tagged by kind), `summary`
//! (captures: the decoded headers) and `cursor`.

pub mod cursor;
pub mod pcapng;

use std::io::Write;
use std::ops::ControlFlow;

use glimpse_common::capture::CaptureFilter;
use glimpse_common::identity::DeviceId;

pub use cursor::{CursorError, ExportCursor};

use serde::Serialize;

use glimpse_common::clock::{parse_day, UnixMillis, MILLIS_PER_DAY};
use glimpse_common::identity::OrgId;
use glimpse_common::record::{DataKind, RecordBody};

use crate::store::{Store, StoredRecord};

/// An export could not be produced.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// A `--since`/`--until` value was neither RFC 3339 nor `YYYY-MM-DD`.
    #[error("invalid time {0:?}: use RFC 3339 (2026-11-23T10:00:00Z) or a date (2026-11-23)")]
    BadTime(String),
    /// The store refused (missing or wrong key, unreadable directory).
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// A pcapng export was asked of something other than captures.
    #[error("pcapng exports captures: ask for the capture kind")]
    PcapOfMetadata,
    /// Writing the output failed.
    #[error("cannot write export: {0}")]
    Io(#[from] std::io::Error),
    /// The resume cursor was refused.
    #[error(transparent)]
    Cursor(#[from] CursorError),
    /// A capture filter was given for something other than captures.
    #[error("a capture filter selects packets: ask for the capture kind")]
    FilterOfMetadata,
    /// More devices named than one export takes.
    #[error("{count} devices named; one export takes at most {MAX_DEVICES}")]
    TooManyDevices {
        /// How many were named.
        count: usize,
    },
}

/// Most devices one export may name.
pub const MAX_DEVICES: usize = 256;
/// The chunk size of [`export_chunks`] unless the caller picks another.
pub const DEFAULT_CHUNK_BYTES: usize = 256 * 1024;

/// Parses an RFC 3339 timestamp or a `YYYY-MM-DD` date (midnight UTC).
pub fn parse_time(text: &str) -> Result<UnixMillis, ExportError> {
    if let Some(day) = parse_day(text) {
        return Ok(day * MILLIS_PER_DAY);
    }
    let parsed = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|_| ExportError::BadTime(text.chars().take(60).collect()))?;
    Ok((parsed.unix_timestamp_nanos() / 1_000_000) as UnixMillis)
}

/// Formats Unix milliseconds as RFC 3339 UTC.
pub fn format_time(at: UnixMillis) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(at) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| format!("@{at}ms"))
}

/// One exported line.
#[derive(Debug, Serialize)]
pub struct ExportLine<'a> {
    /// The organisation.
    pub org: &'a OrgId,
    /// The device that sent the record.
    pub device: &'a str,
    /// The device's kind.
    pub device_kind: &'a str,
    /// The retention class.
    pub kind: DataKind,
    /// When the collector stored it.
    pub received_at: String,
    /// When the device observed it.
    pub observed_at: String,
    /// The record itself.
    pub record: &'a RecordBody,
    /// For captures: what the kept headers say, decoded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<CaptureSummary>,
    /// Where to resume right after this record (see [`ExportCursor`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

/// The decoded headers of a captured packet, for the JSON-lines export.
#[derive(Debug, Serialize)]
pub struct CaptureSummary {
    /// Source MAC address.
    pub src_mac: Option<String>,
    /// Destination MAC address.
    pub dst_mac: Option<String>,
    /// Outer VLAN id.
    pub vlan: Option<u16>,
    /// Innermost EtherType, e.g. 2048 for IPv4.
    pub ethertype: Option<u16>,
    /// Source address.
    pub src_ip: Option<std::net::IpAddr>,
    /// Destination address.
    pub dst_ip: Option<std::net::IpAddr>,
    /// IP protocol number (6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6).
    pub ip_protocol: Option<u8>,
    /// Source port.
    pub src_port: Option<u16>,
    /// Destination port.
    pub dst_port: Option<u16>,
    /// TCP flag bits.
    pub tcp_flags: Option<u16>,
    /// Bytes kept (headers).
    pub captured_len: usize,
    /// Bytes on the wire.
    pub wire_len: u32,
}

impl CaptureSummary {
    fn of(packet: &glimpse_common::capture::CapturedPacket) -> Option<Self> {
        let s = packet.summary()?;
        let mac = |m: Option<[u8; 6]>| m.map(|m| glimpse_common::record::MacAddr(m).to_string());
        Some(Self {
            src_mac: mac(s.src_mac),
            dst_mac: mac(s.dst_mac),
            vlan: s.vlan_outer,
            ethertype: s.ethertype,
            src_ip: s.src_ip,
            dst_ip: s.dst_ip,
            ip_protocol: s.ip_protocol,
            src_port: s.src_port,
            dst_port: s.dst_port,
            tcp_flags: s.tcp_flags,
            captured_len: packet.headers.len(),
            wire_len: packet.wire_len,
        })
    }
}

impl<'a> ExportLine<'a> {
    /// The export view of a stored record.
    pub fn new(org: &'a OrgId, stored: &'a StoredRecord) -> Self {
        Self {
            org,
            device: stored.device.as_str(),
            device_kind: stored.device_kind.as_str(),
            kind: stored.record.kind(),
            received_at: format_time(stored.received_at_ms),
            observed_at: format_time(stored.record.observed_at_ms),
            record: &stored.record.body,
            summary: match &stored.record.body {
                RecordBody::Capture(packet) => CaptureSummary::of(packet),
                _ => None,
            },
            cursor: None,
        }
    }
}

/// What an export writes: JSON lines (any kind) or pcapng (captures only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExportFormat {
    /// One JSON object per record, as [`ExportLine`].
    JsonLines,
    /// One pcapng stream of the stored headers, for Wireshark or tshark.
    Pcapng,
}

impl ExportFormat {
    /// The name the command line and the audit log use.
    pub fn name(self) -> &'static str {
        match self {
            Self::JsonLines => "json",
            Self::Pcapng => "pcap",
        }
    }
}

/// One export: whose data, which kind, which records, in which format,
/// from where.
#[derive(Debug, Clone)]
pub struct ExportRequest {
    /// The organisation whose data is exported.
    pub org: OrgId,
    /// Metadata or captures.
    pub kind: DataKind,
    /// Only records received at or after this time.
    pub since: Option<UnixMillis>,
    /// Only records received before this time.
    pub until: Option<UnixMillis>,
    /// Only records of these devices (none: every device).
    pub devices: Vec<DeviceId>,
    /// Only packets whose headers match (captures only).
    pub filter: Option<CaptureFilter>,
    /// JSON lines or pcapng.
    pub format: ExportFormat,
    /// Start right after this record.
    pub cursor: Option<ExportCursor>,
}

impl ExportRequest {
    /// Every record of `kind` in the retention window, as `format`.
    pub fn new(org: OrgId, kind: DataKind, format: ExportFormat) -> Self {
        Self { org, kind, since: None, until: None, devices: Vec::new(), filter: None, format, cursor: None }
    }

    /// Refuses a request that cannot be served, before any byte is written.
    pub fn check(&self) -> Result<(), ExportError> {
        if self.format == ExportFormat::Pcapng && self.kind != DataKind::Capture {
            return Err(ExportError::PcapOfMetadata);
        }
        if self.filter.is_some() && self.kind != DataKind::Capture {
            return Err(ExportError::FilterOfMetadata);
        }
        if self.devices.len() > MAX_DEVICES {
            return Err(ExportError::TooManyDevices { count: self.devices.len() });
        }
        if let Some(cursor) = &self.cursor {
            if cursor.kind != self.kind {
                return Err(CursorError::Kind { found: cursor.kind.to_string(), asked: self.kind }.into());
            }
        }
        Ok(())
    }

    /// What the audit log says about it.
    fn describe(&self, summary: &ExportSummary) -> String {
        let mut detail = format!(
            "{} {} records as {}, since {} until {}",
            summary.records,
            self.kind,
            self.format.name(),
            self.since.map_or("-".into(), format_time),
            self.until.map_or("-".into(), format_time)
        );
        if !self.devices.is_empty() {
            detail.push_str(&format!(", {} devices", self.devices.len()));
        }
        if let Some(filter) = &self.filter {
            detail.push_str(&format!(", filter {:?}", filter.to_string()));
        }
        if self.cursor.is_some() {
            detail.push_str(", resumed");
        }
        if !summary.complete {
            detail.push_str(", stopped by the receiver");
        }
        detail
    }
}

/// What an export wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportSummary {
    /// Records (or packets) handed on.
    pub records: usize,
    /// Bytes handed on.
    pub bytes: u64,
    /// Damaged segment regions skipped (each is logged with its file).
    pub problems: usize,
    /// The cursor of the last record handed on.
    pub last_cursor: Option<ExportCursor>,
    /// False when the consumer stopped it.
    pub complete: bool,
}

/// The streaming export engine (see the module documentation): hands
/// `emit` chunks of about `chunk_bytes` (JSON lines, or pcapng starting
/// with its section header), each ending on a record boundary. `emit`
/// returning `Break` stops the export; the summary then counts only what
/// was handed on.
pub fn export_chunks(
    store: &Store,
    request: &ExportRequest,
    chunk_bytes: usize,
    emit: &mut dyn FnMut(Vec<u8>) -> ControlFlow<()>,
) -> Result<ExportSummary, ExportError> {
    use glimpse_common::capture::MAX_HEADER_BYTES;
    request.check()?;
    let ExportRequest { org, kind, since, until, devices, filter, format, cursor } = request;
    let chunk_bytes = chunk_bytes.max(1);
    let mut buf = Vec::with_capacity(chunk_bytes.min(4 << 20) + 1024);
    let mut pcap = (*format == ExportFormat::Pcapng).then(|| {
        pcapng::PcapngWriter::new(
            MAX_HEADER_BYTES as u32,
            &format!("Glimpse header-only capture export, {org}"),
            &mut buf,
        )
    });
    let mut summary = ExportSummary { records: 0, bytes: 0, problems: 0, last_cursor: None, complete: true };
    let (mut pending, mut pending_last) = (0usize, None);
    let mut json_error = None;
    // Blocked subjects never leave in an export: their records are skipped
    // and their entries cut out of reports about many clients.
    let blocked = store.blocked_forms(org)?;
    let mut flush = |buf: &mut Vec<u8>, pending: &mut usize, last: &mut Option<ExportCursor>, s: &mut ExportSummary| {
        let chunk = std::mem::replace(buf, Vec::with_capacity(chunk_bytes.min(4 << 20) + 1024));
        let len = chunk.len() as u64;
        if emit(chunk).is_break() {
            s.complete = false;
            return ControlFlow::Break(());
        }
        s.bytes += len;
        s.records += std::mem::take(pending);
        if last.is_some() {
            s.last_cursor = last.take();
        }
        ControlFlow::Continue(())
    };
    let problems =
        store.read_after(org, *kind, (*since, *until), cursor.as_ref().map(|c| &c.mark), &mut |mark, mut stored| {
            if !devices.is_empty() && !devices.contains(&stored.device) {
                return ControlFlow::Continue(());
            }
            let redaction = glimpse_common::record::subject::redact(&mut stored.record, &blocked);
            if redaction == glimpse_common::record::subject::Redaction::Remove {
                return ControlFlow::Continue(());
            }
            let packet = match &stored.record.body {
                RecordBody::Capture(packet) => Some(packet),
                _ => None,
            };
            if let Some(filter) = filter {
                // A packet whose headers cannot be decoded matches no filter.
                if !packet.and_then(|p| p.summary()).is_some_and(|s| filter.matches(&s)) {
                    return ControlFlow::Continue(());
                }
            }
            let here = ExportCursor { kind: *kind, mark };
            match (&mut pcap, packet) {
                (Some(writer), Some(packet)) => {
                    // An interface is labelled with its device, so packets from many
                    // devices stay apart in Wireshark's interface list.
                    let interface = format!("{}/{}", stored.device, packet.interface);
                    writer.packet_with_comment(
                        &pcapng::PcapPacket {
                            timestamp_us: packet.timestamp_us,
                            interface: &interface,
                            link_type: u16::try_from(packet.link_type).unwrap_or(u16::MAX),
                            wire_len: packet.wire_len,
                            bytes: &packet.headers,
                        },
                        Some(&format!("cursor={}", here.encode())),
                        &mut buf,
                    );
                }
                // Not a packet (a capture-kind record of another body): nothing to write.
                (Some(_), None) => return ControlFlow::Continue(()),
                (None, _) => {
                    let mut line = ExportLine::new(org, &stored);
                    line.cursor = Some(here.encode());
                    if let Err(e) = serde_json::to_writer(&mut buf, &line) {
                        json_error = Some(e);
                        return ControlFlow::Break(());
                    }
                    buf.push(b'\n');
                }
            }
            pending += 1;
            pending_last = Some(here);
            if buf.len() >= chunk_bytes {
                return flush(&mut buf, &mut pending, &mut pending_last, &mut summary);
            }
            ControlFlow::Continue(())
        })?;
    if let Some(e) = json_error {
        return Err(std::io::Error::from(e).into());
    }
    if summary.complete && !buf.is_empty() {
        let _ = flush(&mut buf, &mut pending, &mut pending_last, &mut summary);
    }
    summary.problems = problems.len();
    Ok(summary)
}

/// [`export_chunks`], then a `data.export` entry for `actor` in the audit
/// log (also for an export the consumer stopped), so that every way data
/// leaves the collector is audited alike.
pub fn export_chunks_audited(
    store: &Store,
    actor: &str,
    request: &ExportRequest,
    chunk_bytes: usize,
    emit: &mut dyn FnMut(Vec<u8>) -> ControlFlow<()>,
) -> Result<ExportSummary, ExportError> {
    let summary = export_chunks(store, request, chunk_bytes, emit)?;
    store.audit_event(
        actor,
        "data.export",
        Some(&request.org),
        crate::audit::AuditOutcome::Done,
        &request.describe(&summary),
    );
    Ok(summary)
}

/// Writes the export to `out`, stopping at the first write error.
fn export_to(
    store: &Store,
    actor: Option<&str>,
    request: &ExportRequest,
    out: &mut dyn Write,
) -> Result<ExportSummary, ExportError> {
    let mut io_error = None;
    let mut emit = |chunk: Vec<u8>| match out.write_all(&chunk) {
        Ok(()) => ControlFlow::Continue(()),
        Err(e) => {
            io_error = Some(e);
            ControlFlow::Break(())
        }
    };
    let summary = match actor {
        Some(actor) => export_chunks_audited(store, actor, request, DEFAULT_CHUNK_BYTES, &mut emit)?,
        None => export_chunks(store, request, DEFAULT_CHUNK_BYTES, &mut emit)?,
    };
    if let Some(e) = io_error {
        return Err(e.into());
    }
    out.flush()?;
    Ok(summary)
}

/// Writes every readable record of `org` and `kind` in the window as JSON
/// lines. Returns (records written, segment problems reported).
pub fn export(
    store: &Store,
    org: &OrgId,
    kind: DataKind,
    since: Option<UnixMillis>,
    until: Option<UnixMillis>,
    out: &mut dyn Write,
) -> Result<(usize, usize), ExportError> {
    let request = ExportRequest { since, until, ..ExportRequest::new(org.clone(), kind, ExportFormat::JsonLines) };
    let summary = export_to(store, None, &request, out)?;
    Ok((summary.records, summary.problems))
}

/// Writes `org`'s captures in the window as one pcapng stream: captured
/// length = the header bytes kept, original length = the wire length, so
/// Wireshark shows where payload was cut. Returns (packets written,
/// segment problems reported).
pub fn export_pcapng(
    store: &Store,
    org: &OrgId,
    since: Option<UnixMillis>,
    until: Option<UnixMillis>,
    out: &mut dyn Write,
) -> Result<(usize, usize), ExportError> {
    let request =
        ExportRequest { since, until, ..ExportRequest::new(org.clone(), DataKind::Capture, ExportFormat::Pcapng) };
    let summary = export_to(store, None, &request, out)?;
    Ok((summary.records, summary.problems))
}

/// Exports as [`export_chunks`] to `out` and appends a `data.export` entry
/// for `actor` to the audit log. A request that cannot be served (pcapng of
/// metadata, say) is refused before any byte is written.
pub fn export_audited(
    store: &Store,
    actor: &str,
    request: &ExportRequest,
    out: &mut dyn Write,
) -> Result<ExportSummary, ExportError> {
    export_to(store, Some(actor), request, out)
}

#[cfg(test)]
mod stream_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_and_format() {
        assert_eq!(parse_time("1970-01-02").unwrap(), MILLIS_PER_DAY);
        assert_eq!(parse_time("1970-01-01T00:00:01.5Z").unwrap(), 1_500);
        assert!(parse_time("yesterday").is_err());
        assert_eq!(format_time(1_500), "1970-01-01T00:00:01.5Z");
    }
}
