//! Header-only capture end to end, on real packets made by real tools:
//! loopback traffic carrying a marker in HTTP, DNS, UDP, ICMP and IPv6
//! payloads is recorded by dumpcap, replayed by the agent through its
//! capture path and mutual TLS, stored by the collector, and exported as
//! pcapng. The marker is in the original file and nowhere after it.

use std::process::Command;

use glimpse_agent::capture::replay::replay;
use glimpse_agent::capture::CaptureError;
use glimpse_common::bounded::{BoundedString, BoundedVec};
use glimpse_common::capture::{BoundedBytes, CapturedPacket, LinkType};
use glimpse_common::record::{DataKind, Record, RecordBody};
use glimpse_common::wire::Batch;
use glimpse_tests::traffic::{contains, record_marked_traffic, tshark_lines, MARKER};
use glimpse_tests::*;

fn stored_captures(tc: &TestCollector, org: &glimpse_common::identity::OrgId) -> Vec<CapturedPacket> {
    let outcome = tc.collector.store().read(org, DataKind::Capture, None, None).unwrap();
    assert!(outcome.problems.is_empty(), "{:?}", outcome.problems);
    outcome
        .records
        .into_iter()
        .filter_map(|r| match r.record.body {
            RecordBody::Capture(p) => Some(p),
            _ => None,
        })
        .collect()
}

/// Header fields tshark decodes, one line per packet.
fn header_fields(file: &std::path::Path) -> Vec<String> {
    let output = Command::new("tshark")
        .arg("-r")
        .arg(file)
        .args(["-T", "fields", "-E", "separator=,"])
        .args(["-e", "ip.src", "-e", "ip.dst", "-e", "ipv6.src", "-e", "ipv6.dst", "-e", "ip.proto"])
        .args(["-e", "tcp.srcport", "-e", "tcp.dstport", "-e", "tcp.flags", "-e", "tcp.seq_raw"])
        .args(["-e", "udp.srcport", "-e", "udp.dstport", "-e", "icmp.type", "-e", "icmpv6.type", "-e", "frame.len"])
        .output()
        .expect("tshark runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).lines().map(str::to_owned).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_capture_keeps_headers_and_never_the_payload() {
    init_logging();
    let scratch = tempfile::tempdir().unwrap();
    let original = scratch.path().join("marked.pcapng");
    let sent_on_purpose = record_marked_traffic(&original);
    let original_bytes = std::fs::read(&original).unwrap();
    assert!(
        contains(&original_bytes, MARKER),
        "the recorded traffic must carry the marker, or this test proves nothing"
    );
    let original_lines = tshark_lines(&original);
    assert!(original_lines.len() >= sent_on_purpose, "{original_lines:#?}");

    let device = issue_device("captureorg");
    let tc = TestCollector::start().await;
    let mut config = agent_config(tc.addr(), &device);

    // Without the organisation's consent nothing is captured or sent.
    assert!(matches!(replay(&config, &original, "lo").await, Err(CaptureError::NotAllowed)));
    assert!(stored_captures(&tc, &device.identity.org).is_empty());

    config.capture.allowed = true;
    let report = replay(&config, &original, "lo").await.expect("replay");
    assert_eq!(report.tally.packets_kept as usize, original_lines.len());
    assert_eq!(report.records, report.tally.packets_kept);
    assert!(report.tally.bytes_cut > 0);

    // What the agent sent was headers only: the collector had nothing to cut.
    assert_eq!(tc.collector.metrics().payload_bytes_cut(), 0);
    let stored = stored_captures(&tc, &device.identity.org);
    assert_eq!(stored.len(), original_lines.len());
    for packet in &stored {
        assert!(!contains(&packet.headers, MARKER), "marker stored in {packet:?}");
        assert!(packet.headers.len() as u32 <= packet.wire_len);
    }
    for (path, bytes) in tc.data_files() {
        assert!(!contains(&bytes, MARKER), "marker in {}", path.display());
    }

    // The pcapng export opens in tshark, packet for packet, with every
    // header field intact and no payload.
    let exported = scratch.path().join("export.pcapng");
    let mut out = Vec::new();
    let (written, problems) =
        glimpse_collector::export::export_pcapng(tc.collector.store(), &device.identity.org, None, None, &mut out)
            .unwrap();
    assert_eq!((written, problems), (stored.len(), 0));
    assert!(!contains(&out, MARKER));
    std::fs::write(&exported, &out).unwrap();
    assert_eq!(tshark_lines(&exported).len(), original_lines.len());
    assert_eq!(header_fields(&exported), header_fields(&original), "headers decode the same before and after");
    let text = tshark_lines(&exported).join("\n");
    for protocol in ["TCP", "UDP", "ICMP", "ICMPv6"] {
        assert!(text.contains(protocol), "{protocol} missing from export:\n{text}");
    }

    // The JSON-lines form carries the decoded summary.
    let mut json = Vec::new();
    glimpse_collector::export::export(
        tc.collector.store(),
        &device.identity.org,
        DataKind::Capture,
        None,
        None,
        &mut json,
    )
    .unwrap();
    assert!(!contains(&json, MARKER));
    let first: serde_json::Value =
        serde_json::from_str(std::str::from_utf8(&json).unwrap().lines().next().unwrap()).unwrap();
    assert_eq!(first["kind"], "capture");
    assert!(first["summary"]["src_ip"].is_string(), "{first}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_cuts_payload_a_misbehaving_agent_sends() {
    init_logging();
    let device = issue_device("captureorg");
    let tc = TestCollector::start().await;
    // Ethernet + IPv4 + UDP + the marker as payload, all sent as "headers".
    let mut packet = vec![0u8; 12];
    packet.extend_from_slice(&[0x08, 0x00]);
    let payload_len = MARKER.len() as u16;
    let ip_total = 20 + 8 + payload_len;
    packet.extend_from_slice(&[0x45, 0, (ip_total >> 8) as u8, ip_total as u8, 0, 1, 0, 0, 64, 17, 0, 0]);
    packet.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
    let udp_len = 8 + payload_len;
    packet.extend_from_slice(&[0x30, 0x39, 0x00, 0x35, (udp_len >> 8) as u8, udp_len as u8, 0, 0]);
    packet.extend_from_slice(MARKER);
    let header_len = packet.len() - MARKER.len();
    let sneaky = CapturedPacket {
        timestamp_us: 1,
        interface: BoundedString::truncating("eth0"),
        link_type: LinkType::Ethernet.dlt(),
        wire_len: packet.len() as u32,
        headers: BoundedBytes::truncating(&packet),
    };
    let mut conn = try_connect(tc.addr(), &device).await.unwrap();
    let batch = Batch {
        org: device.identity.org.clone(),
        stream_seq: conn.stored_seq() + 1,
        records: BoundedVec::truncating(vec![Record { observed_at_ms: 1, body: RecordBody::Capture(sneaky) }]),
    };
    conn.send_batch(&batch).await.unwrap();
    conn.close().await;

    assert_eq!(tc.collector.metrics().payload_bytes_cut(), MARKER.len() as u64);
    let stored = stored_captures(&tc, &device.identity.org);
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].headers.len(), header_len);
    assert!(!contains(&stored[0].headers, MARKER));
}
