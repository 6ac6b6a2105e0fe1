//! Export end to end, with the real collector program: an export taken
//! while agents stream and resumed by its cursor gives exactly the records
//! stored after it (none repeated, none lost); a pcapng export of captures
//! opens in tshark with the resume cursor in every packet's comment; a
//! capture filter selects exactly the packets it names.

use std::path::Path;
use std::process::{Command, Output};

use glimpse_common::bounded::{BoundedString, BoundedVec};
use glimpse_common::capture::{CapturedPacket, LinkType};
use glimpse_common::identity::OrgId;
use glimpse_common::record::{DeviceMetadata, Record, RecordBody};
use glimpse_common::wire::Batch;
use glimpse_tests::*;

const COLLECTOR: &str = env!("CARGO_BIN_EXE_collector-under-test");

/// Runs `glimpse-collector export` with these arguments.
fn export(config: &Path, args: &[&str]) -> Output {
    let out = Command::new(COLLECTOR)
        .arg("export")
        .arg("--config")
        .arg(config)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run collector program");
    assert!(out.status.success(), "export {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// (line, cursor) of every JSON line exported.
fn lines(out: &Output) -> Vec<(String, String)> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
            (line.to_owned(), value["cursor"].as_str().expect("every line has its cursor").to_owned())
        })
        .collect()
}

fn metadata(hostname: &str) -> Record {
    Record {
        observed_at_ms: 1,
        body: RecordBody::Metadata(DeviceMetadata {
            hostname: BoundedString::truncating(hostname),
            ..Default::default()
        }),
    }
}

fn batch(org: &OrgId, seq: u64, records: Vec<Record>) -> Batch {
    Batch { org: org.clone(), stream_seq: seq, records: BoundedVec::truncating(records) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_during_ingest_resumes_by_cursor_with_nothing_repeated_or_lost() {
    init_logging();
    let streaming = issue_device("exportorg");
    let counted = issue_device("exportorg");
    let tc = TestCollector::start().await;
    // One agent streams on its own schedule throughout.
    let agent = start_agent(tc.addr(), &streaming);
    wait_for_status(&agent, "first records stored", |s| s.acked_seq >= 2).await;
    // Another device sends known batches, so counts are exact.
    let mut conn = try_connect(tc.addr(), &counted).await.expect("connect");
    let org = counted.identity.org.clone();
    for seq in 1..=4 {
        let records = (0..3).map(|i| metadata(&format!("first-{seq}-{i}"))).collect();
        assert_eq!(conn.send_batch(&batch(&org, seq, records)).await.unwrap(), seq);
    }
    let config = tc.config_path();
    let device = counted.identity.device.to_string();
    let first = lines(&export(&config, &["--org", "exportorg"]));
    let first_counted = lines(&export(&config, &["--org", "exportorg", "--device", &device]));
    assert_eq!(first_counted.len(), 12, "the known batches, and only that device's");
    assert!(first.len() > first_counted.len(), "the streaming agent's records too");

    // More arrives from both devices after the first download.
    for seq in 5..=7 {
        let records = (0..3).map(|i| metadata(&format!("second-{seq}-{i}"))).collect();
        assert_eq!(conn.send_batch(&batch(&org, seq, records)).await.unwrap(), seq);
    }
    let acked = agent.status().borrow().acked_seq;
    wait_for_status(&agent, "more records stored", |s| s.acked_seq >= acked + 2).await;

    // Resuming the device's export gives exactly its new records.
    let last_counted = &first_counted.last().unwrap().1;
    let rest_counted = lines(&export(&config, &["--org", "exportorg", "--device", &device, "--cursor", last_counted]));
    assert_eq!(rest_counted.len(), 9);
    assert!(rest_counted.iter().all(|(line, _)| line.contains("\"second-")), "{rest_counted:#?}");

    // Resuming the whole export: the parts put together are the whole, in order.
    let rest = lines(&export(&config, &["--org", "exportorg", "--cursor", &first.last().unwrap().1]));
    assert!(rest.len() >= 9 + 2, "both devices' new records: {}", rest.len());
    agent.shutdown().await;
    conn.close().await;
    let whole = lines(&export(&config, &["--org", "exportorg"]));
    let joined: Vec<_> = first.iter().chain(&rest).cloned().collect();
    assert_eq!(whole[..joined.len()], joined[..], "no record repeated or lost between the parts");
    // A cursor is refused for another kind, and when mangled, with a usage error.
    let refused = Command::new(COLLECTOR)
        .args(["export", "--org", "exportorg", "--kind", "capture", "--cursor", &first[0].1, "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(64), "{}", String::from_utf8_lossy(&refused.stderr));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("continues an export of metadata"));
    let mangled = Command::new(COLLECTOR)
        .args(["export", "--org", "exportorg", "--cursor", "not-a-cursor", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(mangled.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&mangled.stderr).contains("not an export cursor"));
}

/// An Ethernet/IPv4 header stack: UDP or TCP from 10.0.0.`host` to
/// 192.0.2.1:`port`, with a few payload bytes that the cut removes.
fn packet(host: u8, tcp: bool, port: u16) -> Record {
    let transport_len = if tcp { 20 } else { 8 };
    let total = (20 + transport_len + 4) as u16;
    let mut p = vec![0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, host, 0x08, 0x00];
    p.extend_from_slice(&[0x45, 0, (total >> 8) as u8, total as u8, 0, 1, 0x40, 0, 64, if tcp { 6 } else { 17 }, 0, 0]);
    p.extend_from_slice(&[10, 0, 0, host, 192, 0, 2, 1]);
    p.extend_from_slice(&40000u16.to_be_bytes());
    p.extend_from_slice(&port.to_be_bytes());
    if tcp {
        p.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
    } else {
        p.extend_from_slice(&[0, 12, 0, 0]);
    }
    p.extend_from_slice(b"DATA");
    let now_us =
        i64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros()).unwrap();
    let packet =
        CapturedPacket::from_packet(LinkType::Ethernet, now_us, BoundedString::truncating("eth0"), &p, p.len() as u32);
    Record { observed_at_ms: now_us / 1000, body: RecordBody::Capture(packet) }
}

/// tshark's fields for every packet of a pcapng file.
fn tshark(file: &Path, fields: &[&str]) -> Vec<String> {
    let mut command = Command::new("tshark");
    command.arg("-r").arg(file).args(["-T", "fields", "-E", "separator=,"]);
    for field in fields {
        command.args(["-e", field]);
    }
    let out = command.output().expect("tshark runs");
    assert!(out.status.success(), "tshark: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pcapng_export_opens_in_tshark_resumes_from_a_packet_comment_and_filters_by_headers() {
    if !require_tool("tshark", "apt-get install tshark") {
        return;
    }
    init_logging();
    let device = issue_device("pcaporg");
    let tc = TestCollector::start().await;
    set_consent(&tc, &device.identity.org, true);
    let mut conn = try_connect(tc.addr(), &device).await.expect("connect");
    // 10.0.0.1 asks DNS twice and opens HTTPS; 10.0.0.2 asks DNS and NTP.
    let sent = [(1, false, 53), (1, true, 443), (2, false, 53), (2, false, 123), (1, false, 53)];
    let records = sent.iter().map(|(host, tcp, port)| packet(*host, *tcp, *port)).collect();
    assert_eq!(conn.send_batch(&batch(&device.identity.org, 1, records)).await.unwrap(), 1);
    conn.close().await;

    let scratch = tempfile::tempdir().unwrap();
    let config = tc.config_path();
    let write = |name: &str, args: &[&str]| {
        let path = scratch.path().join(name);
        let base = ["--org", "pcaporg", "--kind", "capture", "--format", "pcap"];
        std::fs::write(&path, export(&config, &[&base[..], args].concat()).stdout).unwrap();
        path
    };
    let all = write("all.pcapng", &[]);
    let fields = tshark(&all, &["ip.src", "ip.dst", "ip.proto", "udp.dstport", "tcp.dstport", "frame.comment"]);
    assert_eq!(fields.len(), sent.len(), "{fields:#?}");
    let cursors: Vec<String> = fields
        .iter()
        .map(|line| {
            let comment = line.rsplit(',').next().unwrap();
            comment.strip_prefix("cursor=").unwrap_or_else(|| panic!("no cursor comment in {line}")).to_owned()
        })
        .collect();
    for (line, (host, tcp, port)) in fields.iter().zip(sent) {
        let (proto, udp_port, tcp_port) =
            if tcp { ("6", String::new(), port.to_string()) } else { ("17", port.to_string(), String::new()) };
        assert!(line.starts_with(&format!("10.0.0.{host},192.0.2.1,{proto},{udp_port},{tcp_port},")), "{line}");
    }

    // Resume after the second packet: the last three, as tshark reads them.
    let rest = write("rest.pcapng", &["--cursor", &cursors[1]]);
    let rest_fields = tshark(&rest, &["ip.src", "ip.dst", "ip.proto", "udp.dstport", "tcp.dstport", "frame.comment"]);
    assert_eq!(rest_fields, fields[2..]);

    // Filters pick packets by their headers.
    let count = |filter: &str| tshark(&write("filtered.pcapng", &["--filter", filter]), &["frame.number"]).len();
    assert_eq!(count("udp and dst port 53"), 3);
    assert_eq!(count("src host 10.0.0.1 and udp port 53"), 2);
    assert_eq!(count("tcp or port 123"), 2);
    assert_eq!(count("not net 10.0.0.0/31"), 2, "10.0.0.0/31 holds .0 and .1");
    assert_eq!(count("ether src host 02:00:00:00:00:02"), 2);
    // A filter that does not parse says where, as a usage error.
    let bad = Command::new(COLLECTOR)
        .args(["export", "--org", "pcaporg", "--kind", "capture", "--filter", "udp and prot 53", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("column 9"), "{}", String::from_utf8_lossy(&bad.stderr));
}

/// `GET /api/v1/orgs/{org}/export...` as `client`: the status, the
/// content type and the body.
async fn api_get(client: &glimpse_admin_client::ApiClient, path: &str) -> (u16, String, Vec<u8>) {
    let response = client.request(reqwest::Method::GET, path).send().await.expect("request");
    let status = response.status().as_u16();
    let content_type =
        response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    (status, content_type, response.bytes().await.expect("body").to_vec())
}

fn json_lines(body: &[u8]) -> Vec<(String, String)> {
    String::from_utf8_lossy(body)
        .lines()
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
            (line.to_owned(), value["cursor"].as_str().expect("cursor").to_owned())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_streams_an_export_during_ingest_resumes_it_and_refuses_other_organisations() {
    use glimpse_admin_client::ApiClient;
    use glimpse_common::identity::AdminRole;
    init_logging();
    let streaming = issue_device("apiexportorg");
    let counted = issue_device("apiexportorg");
    let tc = TestCollector::start().await;
    set_consent(&tc, &counted.identity.org, true);
    let agent = start_agent(tc.addr(), &streaming);
    wait_for_status(&agent, "first records stored", |s| s.acked_seq >= 2).await;
    let mut conn = try_connect(tc.addr(), &counted).await.expect("connect");
    let org = counted.identity.org.clone();
    for seq in 1..=3 {
        let records = (0..4).map(|i| metadata(&format!("api-first-{seq}-{i}"))).collect();
        assert_eq!(conn.send_batch(&batch(&org, seq, records)).await.unwrap(), seq);
    }
    let admin_credentials = issue_admin(&tc, AdminRole::OrgAdmin, Some("apiexportorg"));
    let admin = ApiClient::new(&admin_credentials).await.unwrap();
    let device = counted.identity.device.to_string();
    let base = "/api/v1/orgs/apiexportorg/export";

    let (status, content_type, body) = api_get(&admin, &format!("{base}?device={device}")).await;
    assert_eq!((status, content_type.as_str()), (200, "application/x-ndjson"), "{}", String::from_utf8_lossy(&body));
    let first = json_lines(&body);
    assert_eq!(first.len(), 12);
    for seq in 4..=5 {
        let records = (0..4).map(|i| metadata(&format!("api-second-{seq}-{i}"))).collect();
        assert_eq!(conn.send_batch(&batch(&org, seq, records)).await.unwrap(), seq);
    }
    let cursor = &first.last().unwrap().1;
    let (status, _, body) = api_get(&admin, &format!("{base}?device={device}&cursor={cursor}")).await;
    assert_eq!(status, 200);
    let rest = json_lines(&body);
    assert_eq!(rest.len(), 8, "exactly the records stored since");
    assert!(rest.iter().all(|(line, _)| line.contains("api-second-")));
    // The whole organisation while the agent streams: every line has a cursor.
    let (status, _, body) = api_get(&admin, base).await;
    assert_eq!(status, 200);
    assert!(json_lines(&body).len() > 20);

    // Captures as pcapng, read by tshark.
    let packets: Vec<Record> =
        [(1, false, 53), (2, true, 80), (3, false, 53)].map(|(h, t, p)| packet(h, t, p)).to_vec();
    assert_eq!(conn.send_batch(&batch(&org, 6, packets)).await.unwrap(), 6);
    let (status, content_type, body) =
        api_get(&admin, &format!("{base}?kind=capture&format=pcapng&filter=udp%20and%20port%2053")).await;
    assert_eq!((status, content_type.as_str()), (200, "application/x-pcapng"));
    if require_tool("tshark", "apt-get install tshark") {
        let scratch = tempfile::tempdir().unwrap();
        let file = scratch.path().join("api.pcapng");
        std::fs::write(&file, &body).unwrap();
        let fields = tshark(&file, &["ip.src", "udp.dstport", "frame.comment"]);
        assert_eq!(fields.len(), 2, "{fields:#?}");
        assert!(fields.iter().all(|f| f.contains(",53,cursor=")), "{fields:#?}");
    }

    // Bad input is a problem document naming the parameter.
    for (query, says) in [
        ("?kind=capture&filter=udp%20prot", "filter: column 5"),
        ("?cursor=xyz", "cursor: not an export cursor"),
        ("?format=pcapng", "pcapng exports captures"),
        ("?colour=blue", "unknown field"),
        ("?kind=metadata&filter=tcp", "capture filter selects packets"),
    ] {
        let (status, content_type, body) = api_get(&admin, &format!("{base}{query}")).await;
        assert_eq!((status, content_type.as_str()), (400, "application/problem+json"), "{query}");
        assert!(String::from_utf8_lossy(&body).contains(says), "{query}: {}", String::from_utf8_lossy(&body));
    }
    // Another organisation's admin, and support without a grant, are refused;
    // support under a grant may export.
    let other = ApiClient::new(&issue_admin(&tc, AdminRole::OrgAdmin, Some("someoneelse"))).await.unwrap();
    assert_eq!(api_get(&other, base).await.0, 403);
    let support = ApiClient::new(&issue_admin(&tc, AdminRole::Support, Some("apiexportorg"))).await.unwrap();
    assert_eq!(api_get(&support, base).await.0, 403);
    // Operators too read an organisation's data only under its grant.
    let operator = ApiClient::new(&issue_admin(&tc, AdminRole::Operator, None)).await.unwrap();
    assert_eq!(api_get(&operator, &format!("{base}?device={device}")).await.0, 403);
    let granted = admin
        .request(reqwest::Method::POST, "/api/v1/orgs/apiexportorg/support")
        .json(&serde_json::json!({"hours": 1}))
        .send()
        .await
        .unwrap();
    assert!(granted.status().is_success());
    assert_eq!(api_get(&support, &format!("{base}?device={device}")).await.0, 200);
    assert_eq!(api_get(&operator, &format!("{base}?device={device}")).await.0, 200);

    // Downloads and refusals are audited.
    let audit = tc.collector.store().audit().entries(Some("apiexportorg"), 0, 100_000).unwrap();
    let exports: Vec<_> = audit.iter().filter(|e| e.action == "data.export").collect();
    assert!(exports.iter().any(|e| e.detail.contains("resumed")), "{exports:#?}");
    assert!(exports.iter().any(|e| e.detail.contains("filter \"udp and port 53\"")), "{exports:#?}");
    assert!(exports.iter().any(|e| e.outcome == glimpse_store::audit::AuditOutcome::Refused));

    // The local command goes through the API when given a credential ...
    let config = tc.config_path();
    let cert = admin_credentials.cert.to_str().unwrap().to_owned();
    let key = admin_credentials.key.to_str().unwrap().to_owned();
    let address = admin_credentials.address.clone();
    let through =
        ["--org", "apiexportorg", "--device", &device, "--admin-cert", &cert, "--admin-key", &key, "--admin", &address];
    let out = export(&config, &through);
    assert!(String::from_utf8_lossy(&out.stderr).contains("through the admin API"), "{out:?}");
    let via_api = lines(&out);
    assert_eq!(via_api.len(), 20);
    agent.shutdown().await;
    conn.close().await;
    // ... and reads the data directory when the collector is stopped.
    let (_dir, config) = tc.stop_keeping_files().await;
    let out = export(&config, &through);
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not answer"), "{out:?}");
    assert_eq!(lines(&out), via_api, "the same records, with the same cursors");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operations_guide_export_examples_run_as_written() {
    use glimpse_admin_client::ApiClient;
    use glimpse_common::identity::AdminRole;
    if !require_tool("curl", "apt-get install curl") {
        return;
    }
    init_logging();
    let device = issue_device("acme");
    let tc = TestCollector::start().await;
    set_consent(&tc, &device.identity.org, true);
    let mut conn = try_connect(tc.addr(), &device).await.expect("connect");
    let org = device.identity.org.clone();
    let records = (0..5).map(|i| metadata(&format!("doc-{i}"))).collect();
    assert_eq!(conn.send_batch(&batch(&org, 1, records)).await.unwrap(), 1);
    let packets = [(1, false, 53), (1, true, 443), (2, false, 53)].map(|(h, t, p)| packet(h, t, p)).to_vec();
    assert_eq!(conn.send_batch(&batch(&org, 2, packets)).await.unwrap(), 2);
    conn.close().await;
    let admin = issue_admin(&tc, AdminRole::OrgAdmin, Some("acme"));
    let operator = ApiClient::new(&issue_admin(&tc, AdminRole::Operator, None)).await.unwrap();
    let created: serde_json::Value = operator
        .request(reqwest::Method::POST, "/api/v1/tokens")
        .json(&serde_json::json!({"name": "doc-example", "role": "org-admin", "org": "acme"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = created["token"].as_str().expect("a token").to_owned();

    let guide = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/OPERATIONS.md")).unwrap();
    let block = guide.split("<!-- export-api-examples -->\n```sh\n").nth(1).expect("the examples' marker");
    let script = block.split("\n```").next().unwrap();
    let port = tc.collector.admin_addr().unwrap().port();
    let script = script
        .replace("API=https://collector.example.net:7444", &format!("API=https://localhost:{port}"))
        .replace("curl ", &format!("curl --resolve localhost:{port}:127.0.0.1 "))
        .replace("--cacert ca.pem", &format!("--cacert {}", admin.ca.display()))
        .replace("--cert admin.pem", &format!("--cert {}", admin.cert.display()))
        .replace("--key admin.key", &format!("--key {}", admin.key.display()));
    let scratch = tempfile::tempdir().unwrap();
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .current_dir(scratch.path())
        .env("GLIMPSE_API_TOKEN", &token)
        .output()
        .unwrap();
    assert!(out.status.success(), "{script}\n{}", String::from_utf8_lossy(&out.stderr));
    // Both parts together: every record once (nothing arrived in between).
    let jsonl = std::fs::read(scratch.path().join("acme.jsonl")).unwrap();
    let parts = json_lines(&jsonl);
    assert_eq!(parts.len(), 5, "{}", String::from_utf8_lossy(&jsonl));
    let pcap = scratch.path().join("dns.pcapng");
    assert_eq!(std::fs::read(&pcap).unwrap()[..4], [0x0a, 0x0d, 0x0d, 0x0a], "a pcapng section header");
    if require_tool("tshark", "apt-get install tshark") {
        assert_eq!(tshark(&pcap, &["udp.dstport"]), ["53", "53"]);
    }
}
