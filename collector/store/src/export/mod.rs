//! Export: decrypted records as JSON lines, one object per record.
//!
//! The field names are stable and documented in docs/FIELDS.md:
//! `org`, `device`, `device_kind`, `kind`, `received_at`, `observed_at`
//! (RFC 3339, UTC) and `record` (the record body, tagged by kind).

pub mod pcapng;

use std::io::Write;

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
}

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
        }
    }
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
    let outcome = store.read(org, kind, since, until)?;
    for stored in &outcome.records {
        serde_json::to_writer(&mut *out, &ExportLine::new(org, stored)).map_err(std::io::Error::from)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok((outcome.records.len(), outcome.problems.len()))
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
    use glimpse_common::capture::MAX_HEADER_BYTES;
    let mut buf = Vec::new();
    let mut writer = pcapng::PcapngWriter::new(
        MAX_HEADER_BYTES as u32,
        &format!("Glimpse header-only capture export, {org}"),
        &mut buf,
    );
    let mut packets = 0;
    let mut io_error = None;
    let problems = store.read_with(org, DataKind::Capture, since, until, |stored| {
        let RecordBody::Capture(packet) = &stored.record.body else { return };
        // An interface is labelled with its device, so packets from many
        // devices stay apart in Wireshark's interface list.
        let interface = format!("{}/{}", stored.device, packet.interface);
        writer.packet(
            &pcapng::PcapPacket {
                timestamp_us: packet.timestamp_us,
                interface: &interface,
                link_type: u16::try_from(packet.link_type).unwrap_or(u16::MAX),
                wire_len: packet.wire_len,
                bytes: &packet.headers,
            },
            &mut buf,
        );
        packets += 1;
        if buf.len() > 1 << 20 && io_error.is_none() {
            io_error = out.write_all(&buf).err();
            buf.clear();
        }
    })?;
    if let Some(e) = io_error {
        return Err(e.into());
    }
    out.write_all(&buf)?;
    out.flush()?;
    Ok((packets, problems.len()))
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

/// One export: whose data, which kind, which window, in which format.
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
    /// JSON lines or pcapng.
    pub format: ExportFormat,
}

/// What an export wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportSummary {
    /// Records (or packets) written.
    pub records: usize,
    /// Damaged segment regions skipped (each is logged with its file).
    pub problems: usize,
}

/// Exports as [`export`] or [`export_pcapng`] and appends a `data.export`
/// entry for `actor` to the audit log, so that every way data leaves the
/// collector (admin API or the local tool with the master key) is audited
/// alike. A pcapng export of anything but captures is refused before any
/// byte is written.
pub fn export_audited(
    store: &Store,
    actor: &str,
    request: &ExportRequest,
    out: &mut dyn Write,
) -> Result<ExportSummary, ExportError> {
    let ExportRequest { org, kind, since, until, format } = request;
    let (records, problems) = match format {
        ExportFormat::Pcapng if *kind != DataKind::Capture => return Err(ExportError::PcapOfMetadata),
        ExportFormat::Pcapng => export_pcapng(store, org, *since, *until, out)?,
        ExportFormat::JsonLines => export(store, org, *kind, *since, *until, out)?,
    };
    let detail = format!(
        "{records} {kind} records as {}, since {} until {}",
        format.name(),
        since.map_or("-".into(), format_time),
        until.map_or("-".into(), format_time)
    );
    store.audit_event(actor, "data.export", Some(org), crate::audit::AuditOutcome::Done, &detail);
    Ok(ExportSummary { records, problems })
}

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
