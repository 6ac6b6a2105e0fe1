//! Header-only capture end to end, on real packets made by real tools:
//! loopback traffic carrying a marker in HTTP, DNS, UDP, ICMP and IPv6
//! payloads is recorded by dumpcap, replayed by the agent through its
//! capture path and mutual TLS, stored by the collector, and exported as
//! pcapng. The marker is in the original file and nowhere after it.

use std::process::Command;

use glimpse_agent::capture::CaptureError;
use glimpse_agent::replay::replay;
use glimpse_common::bounded::{BoundedString, BoundedVec};
use glimpse_common::capture::{BoundedBytes, CapturedPacket, LinkType};
use glimpse_common::record::{DataKind, Record, RecordBody};
use glimpse_common::wire::Batch;
use glimpse_tests::traffic::{contains, record_marked_traffic, tshark_lines, MARKER};
use glimpse_tests::*;

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
    // dumpcap records the traffic, tshark reads it back, ping sends ICMP.
    if !(require_tool("dumpcap", "apt-get install tshark")
        && require_tool("tshark", "apt-get install tshark")
        && require_tool("ping", "apt-get install iputils-ping"))
    {
        return;
    }
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
    let config = agent_config(tc.addr(), &device);

    // Without the organisation's consent nothing is captured or sent.
    assert!(matches!(
        replay(&config, &original, "lo").await,
        Err(glimpse_agent::replay::ReplayError::Capture(CaptureError::NotAllowed))
    ));
    assert!(stored_captures(&tc, &device.identity.org).is_empty());

    set_consent(&tc, &device.identity.org, true);
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
        glimpse_store::export::export_pcapng(tc.collector.store(), &device.identity.org, None, None, &mut out).unwrap();
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
    glimpse_store::export::export(tc.collector.store(), &device.identity.org, DataKind::Capture, None, None, &mut json)
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
    set_consent(&tc, &device.identity.org, true);
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

/// Sends the marker to 127.0.0.1:`port` every 50 ms until `done` holds.
async fn send_marked_udp_until(port: u16, what: &str, mut done: impl FnMut() -> bool) {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        socket.send_to(MARKER, ("127.0.0.1", port)).unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_demand_live_capture_through_the_admin_api() {
    use glimpse_admin_client::admin_request;
    use glimpse_common::bounded::BoundedString;
    use glimpse_common::identity::AdminRole;
    use glimpse_common::wire::admin::{AdminAction, AdminReply};
    use glimpse_common::wire::CaptureOutcome;

    if !require_libpcap() {
        return;
    }
    init_logging();
    let allowed = issue_device("liveorg");
    let forbidden = issue_device("closedorg");
    let tc = TestCollector::start().await;
    set_consent(&tc, &allowed.identity.org, true);
    let agent = start_agent(tc.addr(), &allowed);
    let other_agent = start_agent(tc.addr(), &forbidden);
    wait_for_status(&agent, "connected with consent", |s| s.connected && s.capture_consent).await;
    wait_for_status(&other_agent, "connected", |s| s.connected).await;

    // Captures are the organisations' own business: their admins ask
    // (operators only under a grant, see grants.rs).
    let operator = issue_admin(&tc, AdminRole::Operator, None);
    let admin = issue_admin(&tc, AdminRole::OrgAdmin, Some("liveorg"));
    let closed_admin = issue_admin(&tc, AdminRole::OrgAdmin, Some("closedorg"));
    let outsider = issue_admin(&tc, AdminRole::OrgAdmin, Some("someone-else"));
    let support = issue_admin(&tc, AdminRole::Support, Some("liveorg"));
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = udp.local_addr().unwrap().port();
    let start = |device: &Device| AdminAction::StartCapture {
        org: device.identity.org.clone(),
        device: device.identity.device.clone(),
        interface: BoundedString::truncating("lo"),
        filter: BoundedString::truncating(&format!("udp dst port {port}")),
        duration_secs: 60,
        max_packets: 3,
    };

    // Admins of another organisation, and support staff without a grant, are refused.
    for who in [&outsider, &support] {
        match admin_request(who, start(&allowed)).await.unwrap() {
            AdminReply::Refused(reason) => assert!(!reason.is_empty()),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
    let listed =
        admin_request(&operator, AdminAction::ConnectedDevices { org: allowed.identity.org.clone() }).await.unwrap();
    let AdminReply::Devices(devices) = listed else { panic!("{listed:?}") };
    assert_eq!(devices.to_vec(), vec![allowed.identity.device.clone()]);

    // The collector refuses a capture for an organisation without consent...
    match admin_request(&closed_admin, start(&forbidden)).await.unwrap() {
        AdminReply::Refused(reason) => assert!(reason.contains("consent"), "{reason}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    // ... and so does the device itself, should a request reach it anyway.
    let id = 77;
    let AdminAction::StartCapture { interface, filter, duration_secs, max_packets, .. } = start(&forbidden) else {
        unreachable!()
    };
    let request = glimpse_common::wire::CaptureRequest { id, interface, filter, duration_secs, max_packets };
    tc.collector.directory().request_capture(&forbidden.identity.org, &forbidden.identity.device, request).unwrap();
    wait_until("refusal reported", || {
        matches!(
            tc.collector.directory().capture_outcome(&forbidden.identity.org, &forbidden.identity.device, id),
            Some(CaptureOutcome::Refused { .. })
        )
    })
    .await;

    // The allowed device captures headers of exactly 3 packets, then stops on its bound.
    match admin_request(&operator, start(&allowed)).await.unwrap() {
        AdminReply::Refused(reason) => assert!(reason.contains("only under a grant"), "{reason}"),
        other => panic!("an operator without a grant captured: {other:?}"),
    }
    let AdminReply::CaptureRequested { id } = admin_request(&admin, start(&allowed)).await.unwrap() else {
        panic!("request not delivered")
    };
    send_marked_udp_until(port, "3 captured packets stored", || stored_captures(&tc, &allowed.identity.org).len() >= 3)
        .await;
    wait_until("capture finished", || {
        matches!(
            tc.collector.directory().capture_outcome(&allowed.identity.org, &allowed.identity.device, id),
            Some(CaptureOutcome::Finished { packets: 3, .. })
        )
    })
    .await;
    // The status is there for admins of the organisation through the API,
    // and only for the device that ran the capture.
    let status = |device: &Device, who| {
        let action =
            AdminAction::CaptureStatus { org: device.identity.org.clone(), device: device.identity.device.clone(), id };
        admin_request(who, action)
    };
    assert_eq!(
        status(&allowed, &admin).await.unwrap(),
        AdminReply::CaptureStatus(Some(CaptureOutcome::Finished { packets: 3, header_bytes: 3 * 42 }))
    );
    assert_eq!(status(&forbidden, &closed_admin).await.unwrap(), AdminReply::CaptureStatus(None));
    assert!(matches!(status(&allowed, &outsider).await.unwrap(), AdminReply::Refused(_)));
    let stored = stored_captures(&tc, &allowed.identity.org);
    assert_eq!(stored.len(), 3, "the packet bound holds");
    for packet in &stored {
        assert_eq!(packet.interface.as_str(), "lo");
        assert!(!contains(&packet.headers, MARKER), "payload captured: {packet:?}");
        assert!(packet.wire_len as usize > packet.headers.len());
        let summary = packet.summary().expect("parsable");
        assert_eq!(summary.dst_port, Some(port));
    }
    assert_eq!(tc.collector.metrics().payload_bytes_cut(), 0);
    agent.shutdown().await;
    other_agent.shutdown().await;
    assert!(stored_captures(&tc, &forbidden.identity.org).is_empty());
}

/// A DNS response (NXDOMAIN) for a query name carrying the marker.
fn nxdomain_response() -> Vec<u8> {
    // id, flags: QR=1, RD, RA, RCODE=3; one question.
    let mut dns = vec![0xbe, 0xef, 0x81, 0x83, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in [MARKER, b"example".as_slice()] {
        dns.push(label.len() as u8);
        dns.extend_from_slice(label);
    }
    dns.extend_from_slice(&[0, 0, 1, 0, 1]);
    dns
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dns_failure_triggers_a_header_only_capture_window() {
    use glimpse_agent::capture::trigger::{EventKind, TriggerRule};

    if !require_libpcap() {
        return;
    }
    init_logging();
    let device = issue_device("triggerorg");
    let tc = TestCollector::start().await;
    set_consent(&tc, &device.identity.org, true);
    let mut config = agent_config(tc.addr(), &device);
    config.capture.monitor_interface = Some("lo".into());
    let mut rule = TriggerRule::new(EventKind::DnsFailure);
    rule.window_secs = 2;
    rule.pre_trigger_packets = 8;
    config.capture.rules = vec![rule];
    let agent = glimpse_agent::AgentHandle::spawn(config).unwrap();
    wait_for_status(&agent, "connected", |s| s.connected).await;

    // A "resolver" on an unusual loopback address answers NXDOMAIN until the
    // watch is live and a capture arrives.
    let resolver = std::net::UdpSocket::bind("127.0.0.19:53").expect("bind 127.0.0.19:53 (needs root)");
    let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let response = nxdomain_response();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while stored_captures(&tc, &device.identity.org).is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "no capture was triggered");
        resolver.send_to(&response, client.local_addr().unwrap()).unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    agent.shutdown().await;
    let stored = stored_captures(&tc, &device.identity.org);
    for packet in &stored {
        assert!(!contains(&packet.headers, MARKER), "query name captured: {packet:?}");
        let summary = packet.summary().expect("parsable");
        assert_eq!(summary.src_port, Some(53));
        assert!(packet.headers.len() < packet.wire_len as usize, "payload cut");
    }
}

/// A live capture whose filter matches nothing still ends at its time bound,
/// and one stopped by an admin ends at once: neither waits for a packet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_captures_end_on_their_deadline_and_on_stop() {
    use glimpse_admin_client::admin_request;
    use glimpse_common::bounded::BoundedString;
    use glimpse_common::identity::AdminRole;
    use glimpse_common::wire::admin::{AdminAction, AdminReply};
    use glimpse_common::wire::CaptureOutcome;

    if !require_libpcap() {
        return;
    }
    init_logging();
    let device = issue_device("quietorg");
    let tc = TestCollector::start().await;
    set_consent(&tc, &device.identity.org, true);
    let agent = start_agent(tc.addr(), &device);
    wait_for_status(&agent, "connected with consent", |s| s.connected && s.capture_consent).await;
    let admin = issue_admin(&tc, AdminRole::OrgAdmin, Some("quietorg"));
    // Port 9 (discard) on loopback: nothing in this test sends there.
    let start = |duration_secs| AdminAction::StartCapture {
        org: device.identity.org.clone(),
        device: device.identity.device.clone(),
        interface: BoundedString::truncating("lo"),
        filter: BoundedString::truncating("udp dst port 9 and udp src port 9"),
        duration_secs,
        max_packets: 10,
    };
    let outcome = |id| tc.collector.directory().capture_outcome(&device.identity.org, &device.identity.device, id);
    let finished = |id| matches!(outcome(id), Some(CaptureOutcome::Finished { packets: 0, .. }));

    let AdminReply::CaptureRequested { id: timed } = admin_request(&admin, start(1)).await.unwrap() else {
        panic!("request not delivered")
    };
    wait_until("the 1-second capture to finish", || finished(timed)).await;

    // An hour-long capture, stopped by the organisation's admin.
    let AdminReply::CaptureRequested { id: stopped } = admin_request(&admin, start(3600)).await.unwrap() else {
        panic!("request not delivered")
    };
    wait_until("capture started", || matches!(outcome(stopped), Some(CaptureOutcome::Started))).await;
    let stop = AdminAction::StopCapture {
        org: device.identity.org.clone(),
        device: device.identity.device.clone(),
        id: stopped,
    };
    admin_request(&admin, stop).await.unwrap();
    wait_until("the stopped capture to finish", || finished(stopped)).await;
    agent.shutdown().await;
}

/// The same on-demand capture through a switch connected over SSH: consent,
/// the request, the status and the headers-only record travel the `glimpse`
/// subsystem exactly as they travel TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_demand_capture_reaches_a_switch_over_ssh() {
    use glimpse_admin_client::admin_request;
    use glimpse_common::bounded::BoundedString;
    use glimpse_common::identity::{AdminRole, DeviceKind};
    use glimpse_common::wire::admin::{AdminAction, AdminReply};
    use glimpse_common::wire::CaptureOutcome;

    if !require_libpcap() {
        return;
    }
    init_logging();
    let switch = issue_ssh_device("sshcaptureorg", DeviceKind::Switch);
    let tc = TestCollector::start().await;
    set_consent(&tc, &switch.identity.org, true);
    let agent =
        glimpse_agent::AgentHandle::spawn(ssh_agent_config(tc.ssh_addr(), &tc.ssh_fingerprint(), &switch)).unwrap();
    let status = wait_for_status(&agent, "connected over SSH with consent", |s| s.connected && s.capture_consent).await;
    assert_eq!(status.cipher_suite.as_deref(), Some("SSH"));

    let admin = issue_admin(&tc, AdminRole::OrgAdmin, Some("sshcaptureorg"));
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = udp.local_addr().unwrap().port();
    let request = AdminAction::StartCapture {
        org: switch.identity.org.clone(),
        device: switch.identity.device.clone(),
        interface: BoundedString::truncating("lo"),
        filter: BoundedString::truncating(&format!("udp dst port {port}")),
        duration_secs: 60,
        max_packets: 2,
    };
    let AdminReply::CaptureRequested { id } = admin_request(&admin, request).await.unwrap() else {
        panic!("request not delivered over SSH")
    };
    send_marked_udp_until(port, "2 captured packets stored", || stored_captures(&tc, &switch.identity.org).len() >= 2)
        .await;
    wait_until("capture finished", || {
        matches!(
            tc.collector.directory().capture_outcome(&switch.identity.org, &switch.identity.device, id),
            Some(CaptureOutcome::Finished { packets: 2, .. })
        )
    })
    .await;
    let stored = stored_captures(&tc, &switch.identity.org);
    assert_eq!(stored.len(), 2, "the packet bound holds");
    for packet in &stored {
        assert!(!contains(&packet.headers, MARKER), "payload captured: {packet:?}");
        assert_eq!(packet.summary().expect("parsable").dst_port, Some(port));
    }
    agent.shutdown().await;
}

/// Sets `org`'s strict header scrubbing through the admin checks and audit
/// log, leaving its other data-policy decisions as they are.
fn set_strict_headers(tc: &TestCollector, org: &glimpse_common::identity::OrgId, strict: bool) {
    use glimpse_common::identity::{AdminIdentity, AdminName, AdminRole};
    use glimpse_common::wire::admin::{AdminAction, AdminReply};
    let operator = AdminIdentity::new(AdminName::new("test-operator").unwrap(), AdminRole::Operator, None).unwrap();
    let action = AdminAction::SetDataPolicy {
        org: org.clone(),
        omit: BoundedVec::default(),
        pseudonymise_macs: false,
        strict_headers: Some(strict),
    };
    let reply = tc.collector.admin_context().act(&operator, action);
    assert!(matches!(reply, AdminReply::DataPolicySet { strict_headers, .. } if strict_headers == strict), "{reply:?}");
}

/// Covert bytes hidden in header fields the cut keeps whole.
const COVERT: [&[u8]; 3] = [b"SECRET", b"COVERT!!", b"HIDDEN"];

fn ethernet(ethertype: u16) -> Vec<u8> {
    [&[0x02, 0, 0, 0, 0, 0x0b, 0x02, 0, 0, 0, 0, 0x0a][..], &ethertype.to_be_bytes()].concat()
}

fn ipv4_header(protocol: u8, options: &[u8], upper_len: usize) -> Vec<u8> {
    let header_len = 20 + options.len();
    let total = (header_len + upper_len) as u16;
    let mut h = vec![0x40 | (header_len / 4) as u8, 0];
    h.extend(total.to_be_bytes());
    h.extend(*b"ID"); // an identification chosen by the sender: free bits
    h.extend([0x40, 0, 64, protocol, 0, 0, 127, 0, 0, 1, 127, 0, 0, 2]);
    h.extend(options);
    h
}

/// Three crafted packets, each with covert bytes in a kept header and the
/// marker as payload: TCP with an unknown option 253 beside MSS, window
/// scale, SACK permitted and timestamps; IPv4 with a timestamp option; IPv6
/// with a hop-by-hop header carrying an unknown option.
fn covert_packets() -> Vec<Vec<u8>> {
    let options = [
        &[2, 4, 0x05, 0xb4][..],
        &[1, 3, 3, 7],
        &[4, 2],
        &[8, 10, 0, 0, 0, 1, 0, 0, 0, 2],
        &[253, 8],
        COVERT[0],
        &[1, 1, 1, 1],
    ]
    .concat();
    let mut tcp = vec![0x30, 0x39, 0x1f, 0x90, 0, 0, 0, 1, 0, 0, 0, 0, (((20 + options.len()) / 4) << 4) as u8, 0x02];
    tcp.extend([0xff, 0xff, 0, 0, 0, 0]);
    tcp.extend(&options);
    let tcp_packet = [ethernet(0x0800), ipv4_header(6, &[], tcp.len() + MARKER.len()), tcp, MARKER.to_vec()].concat();

    let udp = |len: usize| [&[0x30, 0x39, 0, 53][..], &((8 + len) as u16).to_be_bytes(), &[0, 0]].concat();
    let timestamp = [&[68, 12, 5, 0][..], COVERT[1]].concat();
    let ip_options =
        [ethernet(0x0800), ipv4_header(17, &timestamp, 8 + MARKER.len()), udp(MARKER.len()), MARKER.to_vec()].concat();

    let hbh = [&[17, 1, 0x1e, 6][..], COVERT[2], &[1, 4, 0, 0, 0, 0]].concat();
    let mut ipv6 = vec![0x60, 0, 0, 0];
    ipv6.extend(((hbh.len() + 8 + MARKER.len()) as u16).to_be_bytes());
    ipv6.extend([0, 64]);
    ipv6.extend([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    ipv6.extend([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
    let hop_by_hop = [ethernet(0x86dd), ipv6, hbh, udp(MARKER.len()), MARKER.to_vec()].concat();
    vec![tcp_packet, ip_options, hop_by_hop]
}

/// A classic pcap file of Ethernet packets.
fn pcap_file(packets: &[Vec<u8>]) -> Vec<u8> {
    let mut file = Vec::new();
    file.extend(0xa1b2_c3d4u32.to_le_bytes());
    file.extend(2u16.to_le_bytes());
    file.extend(4u16.to_le_bytes());
    file.extend([0; 8]);
    file.extend(65_535u32.to_le_bytes());
    file.extend(1u32.to_le_bytes());
    for (n, packet) in packets.iter().enumerate() {
        file.extend((1_700_000_000 + n as u32).to_le_bytes());
        file.extend(0u32.to_le_bytes());
        file.extend((packet.len() as u32).to_le_bytes());
        file.extend((packet.len() as u32).to_le_bytes());
        file.extend(packet);
    }
    file
}

/// tshark's view of the options that must survive strict scrubbing.
fn option_fields(file: &std::path::Path) -> Vec<String> {
    let output = Command::new("tshark")
        .arg("-r")
        .arg(file)
        .args(["-T", "fields", "-E", "separator=|"])
        .args(["-e", "tcp.options.mss_val", "-e", "tcp.options.wscale.shift", "-e", "tcp.options.sack_perm"])
        .args(["-e", "tcp.options.timestamp.tsval", "-e", "tcp.option_kind", "-e", "ip.opt.type"])
        .args(["-e", "ipv6.hopopts.len", "-e", "ip.id", "-e", "ip.src", "-e", "ipv6.dst", "-e", "udp.dstport"])
        .output()
        .expect("tshark runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).lines().map(str::to_owned).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_mode_scrubs_covert_header_bytes_on_the_device_and_on_arrival() {
    if !require_tool("tshark", "apt-get install tshark") {
        return;
    }
    init_logging();
    let scratch = tempfile::tempdir().unwrap();
    let original = scratch.path().join("covert.pcap");
    let packets = covert_packets();
    std::fs::write(&original, pcap_file(&packets)).unwrap();
    let before = option_fields(&original);
    assert_eq!(before.len(), 3, "{before:?}");

    let device = issue_device("strictorg");
    let org = device.identity.org.clone();
    let tc = TestCollector::start().await;
    set_consent(&tc, &org, true);
    set_strict_headers(&tc, &org, true);

    // The real agent replays the file: it hears strict mode before consent
    // and scrubs what it sends, so the collector finds nothing to zero.
    let config = agent_config(tc.addr(), &device);
    let report = replay(&config, &original, "eth0").await.expect("replay");
    assert_eq!(report.tally.packets_kept, 3);
    assert_eq!(tc.collector.metrics().payload_bytes_cut(), 0);
    assert_eq!(tc.collector.metrics().strict_scrubbed_bytes(), 0, "the device scrubbed already");
    let stored = stored_captures(&tc, &org);
    assert_eq!(stored.len(), 3);
    for (packet, original) in stored.iter().zip(&packets) {
        for covert in COVERT.iter().chain([&MARKER]) {
            assert!(!contains(&packet.headers, covert), "{:?} stored in {packet:?}", String::from_utf8_lossy(covert));
        }
        assert!(packet.headers.len() < original.len(), "the payload is cut");
    }
    assert_eq!(stored[0].headers.len(), 14 + 20 + 52, "lengths never change");
    for (path, bytes) in tc.data_files() {
        for covert in COVERT {
            assert!(!contains(&bytes, covert), "covert bytes in {}", path.display());
        }
    }

    // The pcapng export opens in tshark: the well-known options decode as
    // they were sent, the unknown ones keep their kind and length.
    let mut out = Vec::new();
    let (written, problems) =
        glimpse_store::export::export_pcapng(tc.collector.store(), &org, None, None, &mut out).unwrap();
    assert_eq!((written, problems), (3, 0));
    let exported = scratch.path().join("export.pcapng");
    std::fs::write(&exported, &out).unwrap();
    for covert in COVERT {
        assert!(!contains(&out, covert));
    }
    let after = option_fields(&exported);
    assert_eq!(after.len(), 3, "{after:?}");
    let field = |lines: &[String], line: usize, n: usize| lines[line].split('|').nth(n).unwrap_or_default().to_owned();
    for n in [0, 1, 2, 3, 4, 5, 6, 8, 9, 10] {
        for line in 0..3 {
            assert_eq!(field(&after, line, n), field(&before, line, n), "field {n} of packet {line}: {after:?}");
        }
    }
    assert_eq!(field(&after, 0, 0), "1460");
    assert_eq!(field(&after, 0, 1), "7");
    assert_eq!(field(&after, 0, 3), "1");
    assert!(field(&after, 0, 4).contains("253"), "{after:?}");
    assert!(field(&after, 1, 5).contains("68"), "{after:?}");
    assert_ne!(field(&before, 0, 7), field(&after, 0, 7), "the free IP identification is zeroed");

    // A session that ignores strict mode (a modified agent: the decision
    // turned off before the batch is written, which happens before the
    // directives are read) sends an unscrubbed record: it is scrubbed on
    // arrival.
    let mut conn = try_connect(tc.addr(), &device).await.unwrap();
    conn.session_mut().set_strict_headers(false);
    let raw = CapturedPacket::from_packet(LinkType::Ethernet, 7, BoundedString::truncating("eth0"), &packets[0], 100);
    assert!(contains(&raw.headers, COVERT[0]));
    let batch = Batch {
        org: org.clone(),
        stream_seq: conn.stored_seq() + 1,
        records: BoundedVec::truncating(vec![Record { observed_at_ms: 7, body: RecordBody::Capture(raw.clone()) }]),
    };
    conn.send_batch(&batch).await.unwrap();
    conn.close().await;
    assert!(tc.collector.metrics().strict_scrubbed_bytes() >= COVERT[0].len() as u64);
    let stored = stored_captures(&tc, &org);
    let arrived = stored.iter().find(|p| p.timestamp_us == 7).expect("stored");
    assert_eq!(arrived.headers.len(), raw.headers.len());
    assert!(!contains(&arrived.headers, COVERT[0]), "{arrived:?}");
    let mut scrubbed = raw.clone();
    scrubbed.scrub_strict();
    assert_eq!(arrived.headers, scrubbed.headers, "the same scrub as the device's");
}
