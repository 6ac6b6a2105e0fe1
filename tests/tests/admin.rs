//! The admin control plane end to end, through the real admin API over
//! mutual TLS: capture consent reaching live agents, support access under
//! time-limited grants (injected clock), role scoping, foreign admin
//! certificates, and the tamper-evident audit log.

use std::sync::Arc;

use glimpse_admin_client::{admin_request, AdminCredentials};
use glimpse_common::bounded::{BoundedString, BoundedVec};
use glimpse_common::capture::CapturedPacket;
use glimpse_common::clock::{Clock, ManualClock, SystemClock};
use glimpse_common::identity::{AdminRole, OrgId};
use glimpse_common::record::{DataKind, MacAddr, Record, RecordBody};
use glimpse_common::wire::admin::{AdminAction, AdminReply, GrantScope, Subject};
use glimpse_common::wire::{Batch, CaptureOutcome};
use glimpse_tests::traffic::{contains, MARKER};
use glimpse_tests::*;

async fn ask(who: &AdminCredentials, action: AdminAction) -> AdminReply {
    admin_request(who, action).await.expect("admin API answers")
}

fn refused(reply: &AdminReply) -> &str {
    match reply {
        AdminReply::Refused(reason) => reason.as_str(),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_consent_is_off_by_default_reaches_agents_and_stops_a_running_capture() {
    init_logging();
    let device = issue_device("consentorg");
    let org = device.identity.org.clone();
    let tc = TestCollector::start().await;
    let admin = issue_admin(&tc, AdminRole::OrgAdmin, Some(org.as_str()));
    let operator = issue_admin(&tc, AdminRole::Operator, None);
    let agent = start_agent(tc.addr(), &device);
    wait_for_status(&agent, "connected", |s| s.connected).await;
    let consent_file = device.cert.with_file_name("capture-consent");

    // Off by default: the organisation says so, the agent knows it, and a
    // capture request is refused.
    match ask(&admin, AdminAction::OrgStatus { org: org.clone() }).await {
        AdminReply::OrgStatus { capture_consent, support_until_ms, connected_devices, .. } => {
            assert!(!capture_consent);
            assert_eq!(support_until_ms, None);
            assert_eq!(connected_devices, 1);
        }
        other => panic!("{other:?}"),
    }
    assert!(!agent.status().borrow().capture_consent);
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = udp.local_addr().unwrap().port();
    let start = AdminAction::StartCapture {
        org: org.clone(),
        device: device.identity.device.clone(),
        interface: BoundedString::truncating("lo"),
        filter: BoundedString::truncating(&format!("udp dst port {port}")),
        duration_secs: 120,
        max_packets: 100_000,
    };
    assert!(refused(&ask(&admin, start.clone()).await).contains("consent"));

    // On: the connected agent hears it over its existing connection and
    // remembers it on disk.
    match ask(&admin, AdminAction::SetConsent { org: org.clone(), capture: true }).await {
        AdminReply::ConsentSet { capture: true, changed: true, devices_told: 1 } => {}
        other => panic!("{other:?}"),
    }
    wait_for_status(&agent, "consent on", |s| s.capture_consent).await;
    assert_eq!(std::fs::read_to_string(&consent_file).unwrap().trim(), "capture=on");

    // A live capture runs and stores headers...
    let AdminReply::CaptureRequested { id } = ask(&admin, start.clone()).await else { panic!("not started") };
    let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while stored_captures(&tc, &org).len() < 3 {
        assert!(tokio::time::Instant::now() < deadline, "no capture stored");
        sender.send_to(MARKER, ("127.0.0.1", port)).unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    // ... until consent is withdrawn mid-capture, with traffic still flowing.
    let withdrawn_at_us = SystemClock.now_millis() * 1000;
    match ask(&admin, AdminAction::SetConsent { org: org.clone(), capture: false }).await {
        AdminReply::ConsentSet { capture: false, changed: true, devices_told: 1 } => {}
        other => panic!("{other:?}"),
    }
    for _ in 0..20 {
        sender.send_to(MARKER, ("127.0.0.1", port)).unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    wait_for_status(&agent, "consent off", |s| !s.capture_consent).await;
    wait_until("the capture to stop", || {
        matches!(
            tc.collector.directory().capture_outcome(&org, &device.identity.device, id),
            Some(CaptureOutcome::Finished { .. })
        )
    })
    .await;
    for _ in 0..20 {
        sender.send_to(MARKER, ("127.0.0.1", port)).unwrap();
    }
    // Let the agent send whatever it still would (it sends metadata every 50 ms).
    let acked = agent.status().borrow().acked_records;
    wait_for_status(&agent, "more batches acknowledged", |s| s.acked_records > acked + 2 && s.queued_records == 0)
        .await;
    assert_eq!(std::fs::read_to_string(&consent_file).unwrap().trim(), "capture=off");

    let stored = stored_captures(&tc, &org);
    assert!(stored.len() >= 3);
    for packet in &stored {
        assert!(packet.timestamp_us <= withdrawn_at_us, "captured after consent was withdrawn: {packet:?}");
        assert!(!contains(&packet.headers, MARKER));
    }

    // Records captured before the withdrawal but arriving after it are
    // dropped by the collector too: here from a hand-built agent.
    let frozen = stored.len();
    let late = Record { observed_at_ms: withdrawn_at_us / 1000 - 1, body: RecordBody::Capture(stored[0].clone()) };
    let mut conn = try_connect(tc.addr(), &device).await.unwrap();
    let batch =
        Batch { org: org.clone(), stream_seq: conn.stored_seq() + 1, records: BoundedVec::truncating(vec![late]) };
    conn.send_batch(&batch).await.expect("acknowledged, without its capture");
    conn.close().await;
    assert_eq!(stored_captures(&tc, &org).len(), frozen);
    assert!(tc.collector.metrics().captures_dropped_without_consent() >= 1);

    // A restarted agent remembers "off" before it reaches any collector.
    agent.shutdown().await;
    assert!(!glimpse_agent::capture::consent::Consent::load(Some(&consent_file)).allowed());

    // Everything is in the audit log.
    let audit = audit_of(&operator, &org).await;
    let actions: Vec<(&str, bool)> = audit.iter().map(|e| (e.action.as_str(), e.refused)).collect();
    for expected in [
        ("org.status", false),
        ("capture.start", true),
        ("consent.set", false),
        ("capture.start", false),
        ("capture.receive", true),
    ] {
        assert!(actions.contains(&expected), "{expected:?} missing from {actions:?}");
    }
    assert_eq!(audit.iter().filter(|e| e.action.as_str() == "consent.set").count(), 2);
    assert!(matches!(ask(&operator, AdminAction::VerifyAudit).await, AdminReply::AuditVerified { .. }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn support_reads_only_inside_an_active_grant() {
    init_logging();
    let clock = Arc::new(ManualClock::new(1_800_000_000_000));
    let tc = TestCollector::start_with_clock(clock.clone()).await;
    let org = OrgId::new("supportorg").unwrap();
    let admin = issue_admin(&tc, AdminRole::OrgAdmin, Some(org.as_str()));
    let support = issue_admin(&tc, AdminRole::Support, Some(org.as_str()));
    let operator = issue_admin(&tc, AdminRole::Operator, None);
    let read = || AdminAction::OrgStatus { org: org.clone() };

    // Before any grant.
    assert!(refused(&ask(&support, read()).await).contains("grant"));
    // Support cannot grant itself access.
    assert!(refused(
        &ask(&support, AdminAction::GrantSupport { org: org.clone(), hours: 2, scope: GrantScope::default() }).await
    )
    .contains("read-only"));

    // During a 2-hour grant: reads succeed, writes never do.
    let AdminReply::SupportGranted { until_ms } =
        ask(&admin, AdminAction::GrantSupport { org: org.clone(), hours: 2, scope: GrantScope::default() }).await
    else {
        panic!("grant refused")
    };
    assert_eq!(until_ms, clock.now_millis() + 2 * 3_600_000);
    match ask(&support, read()).await {
        AdminReply::OrgStatus { support_until_ms, .. } => assert_eq!(support_until_ms, Some(until_ms)),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        ask(&support, AdminAction::ShowAudit { org: Some(org.clone()), after_seq: 0 }).await,
        AdminReply::AuditEntries(_)
    ));
    assert!(refused(&ask(&support, AdminAction::SetConsent { org: org.clone(), capture: true }).await)
        .contains("read-only"));
    assert!(refused(&ask(&support, AdminAction::ShowAudit { org: None, after_seq: 0 }).await).contains("operators"));
    clock.advance(2 * 3_600_000 - 1);
    assert!(matches!(ask(&support, read()).await, AdminReply::OrgStatus { .. }), "still inside the grant");

    // After it expires by itself.
    clock.advance(1);
    assert!(refused(&ask(&support, read()).await).contains("grant"));

    // A new grant, revoked early.
    assert!(matches!(
        ask(&admin, AdminAction::GrantSupport { org: org.clone(), hours: 1, scope: GrantScope::default() }).await,
        AdminReply::SupportGranted { .. }
    ));
    assert!(matches!(ask(&support, read()).await, AdminReply::OrgStatus { .. }));
    assert_eq!(
        ask(&admin, AdminAction::RevokeSupport { org: org.clone() }).await,
        AdminReply::SupportRevoked { was_active: true }
    );
    assert!(refused(&ask(&support, read()).await).contains("grant"));

    // Grants are bounded.
    assert!(refused(
        &ask(&admin, AdminAction::GrantSupport { org: org.clone(), hours: 721, scope: GrantScope::default() }).await
    )
    .contains("720"));

    // The audit log tells the story, refusals included.
    let audit = audit_of(&operator, &org).await;
    let support_reads: Vec<bool> = audit
        .iter()
        .filter(|e| e.action.as_str() == "org.status" && e.actor.as_str().contains("support"))
        .map(|e| e.refused)
        .collect();
    assert_eq!(support_reads, [true, false, false, true, false, true]);
    assert_eq!(audit.iter().filter(|e| e.action.as_str() == "support.grant" && !e.refused).count(), 2);
    assert!(audit.iter().any(|e| e.action.as_str() == "support.revoke" && !e.refused));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn org_admins_stay_in_their_organisation_and_foreign_admins_are_refused() {
    init_logging();
    let tc = TestCollector::start().await;
    let acme = OrgId::new("acme-admin-test").unwrap();
    let globex = OrgId::new("globex-admin-test").unwrap();
    let acme_admin = issue_admin(&tc, AdminRole::OrgAdmin, Some(acme.as_str()));
    let operator = issue_admin(&tc, AdminRole::Operator, None);

    for action in [
        AdminAction::SetConsent { org: globex.clone(), capture: true },
        AdminAction::GrantSupport { org: globex.clone(), hours: 1, scope: GrantScope::default() },
        AdminAction::OrgStatus { org: globex.clone() },
        AdminAction::ShowAudit { org: Some(globex.clone()), after_seq: 0 },
        AdminAction::ShowAudit { org: None, after_seq: 0 },
        AdminAction::VerifyAudit,
    ] {
        let reply = ask(&acme_admin, action.clone()).await;
        assert!(!refused(&reply).is_empty(), "{action:?}");
    }
    assert!(!tc.collector.store().policies().capture_consent(&globex), "nothing changed");
    assert!(matches!(
        ask(&acme_admin, AdminAction::SetConsent { org: acme.clone(), capture: true }).await,
        AdminReply::ConsentSet { capture: true, .. }
    ));

    // An admin certificate from another CA does not get past TLS; the
    // attempt is audited.
    let foreign = issue_admin_in(&pki().foreign, &tc, AdminRole::Operator, None);
    assert!(admin_request(&foreign, AdminAction::VerifyAudit).await.is_err());
    wait_until("the foreign attempt is audited", || {
        let entries = tc.collector.store().audit().entries(None, 0, 10_000).unwrap();
        entries.iter().any(|e| e.action == "admin.connect" && e.actor.starts_with("peer:"))
    })
    .await;

    let audit = audit_of(&operator, &globex).await;
    assert_eq!(audit.len(), 4, "{audit:#?}");
    assert!(audit.iter().all(|e| e.refused && e.actor.as_str().contains("acme-admin-test")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_audit_log_is_detected() {
    init_logging();
    let tc = TestCollector::start().await;
    let org = OrgId::new("auditorg").unwrap();
    let admin = issue_admin(&tc, AdminRole::OrgAdmin, Some(org.as_str()));
    let operator = issue_admin(&tc, AdminRole::Operator, None);
    let support = issue_admin(&tc, AdminRole::Support, Some(org.as_str()));
    assert!(matches!(ask(&support, AdminAction::OrgStatus { org: org.clone() }).await, AdminReply::Refused(_)));
    ask(&admin, AdminAction::SetConsent { org: org.clone(), capture: true }).await;
    ask(&admin, AdminAction::GrantSupport { org: org.clone(), hours: 4, scope: GrantScope::default() }).await;
    ask(&admin, AdminAction::SetConsent { org: org.clone(), capture: false }).await;
    let AdminReply::AuditVerified { entries } = ask(&operator, AdminAction::VerifyAudit).await else {
        panic!("an untouched log verifies")
    };
    assert!(entries >= 4);

    let log = tc.config.data_dir.join("audit.log");
    let original = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = original.lines().collect();
    let refusal = lines.iter().position(|l| l.contains("\"refused\"")).expect("the support refusal is logged");

    // Rewriting history: the refusal made to look like a success.
    let edited = original.replacen("\"refused\"", "\"done\"", 1);
    std::fs::write(&log, &edited).unwrap();
    let reason = refused(&ask(&operator, AdminAction::VerifyAudit).await).to_owned();
    assert!(reason.contains("TAMPERED") && reason.contains(&format!("line {}", refusal + 1)), "{reason}");

    // Removing an entry.
    let mut without: Vec<&str> = lines.clone();
    without.remove(refusal);
    std::fs::write(&log, without.join("\n") + "\n").unwrap();
    assert!(refused(&ask(&operator, AdminAction::VerifyAudit).await).contains("TAMPERED"));

    // Reordering two entries.
    let mut swapped: Vec<&str> = lines.clone();
    swapped.swap(0, 1);
    std::fs::write(&log, swapped.join("\n") + "\n").unwrap();
    assert!(refused(&ask(&operator, AdminAction::VerifyAudit).await).contains("TAMPERED"));

    // Cutting off the latest entries.
    std::fs::write(&log, lines[..lines.len() - 2].join("\n") + "\n").unwrap();
    assert!(refused(&ask(&operator, AdminAction::VerifyAudit).await).contains("TAMPERED"));

    // Putting the old file back is a rollback: the verifications since were
    // audited too, and their entries are now missing.
    std::fs::write(&log, &original).unwrap();
    assert!(refused(&ask(&operator, AdminAction::VerifyAudit).await).contains("TAMPERED"));
}

fn interface_with(mac: glimpse_common::record::MacAddr, ip: &str) -> glimpse_common::record::InterfaceStats {
    glimpse_common::record::InterfaceStats {
        name: BoundedString::truncating("wlan0"),
        mac: Some(mac),
        addresses: BoundedVec::truncating(vec![ip.parse().unwrap()]),
        ..Default::default()
    }
}

fn metadata_about(hostname: &str, mac: glimpse_common::record::MacAddr, ip: &str) -> Record {
    Record {
        observed_at_ms: 1,
        body: RecordBody::Metadata(glimpse_common::record::DeviceMetadata {
            hostname: BoundedString::truncating(hostname),
            interfaces: BoundedVec::truncating(vec![interface_with(mac, ip)]),
            ..Default::default()
        }),
    }
}

/// An Ethernet/IPv4/UDP packet from `src_mac`/`src` with a payload the
/// agent's truncation removes.
fn packet_from(src_mac: glimpse_common::record::MacAddr, src: [u8; 4]) -> Record {
    let mut frame = vec![0x02, 0, 0, 0, 0, 0xfe];
    frame.extend(src_mac.0);
    frame.extend([0x08, 0x00, 0x45, 0, 0, 36, 0, 0, 0x40, 0, 64, 17, 0, 0]);
    frame.extend(src);
    frame.extend([198, 51, 100, 1, 0x30, 0x39, 0, 53, 0, 16, 0, 0]);
    frame.extend(b"payload!");
    Record {
        observed_at_ms: 2,
        body: RecordBody::Capture(CapturedPacket::from_packet(
            glimpse_common::capture::LinkType::Ethernet,
            2_000,
            BoundedString::truncating("wlan0"),
            &frame,
            frame.len() as u32,
        )),
    }
}

/// An 802.11 data frame from `src_mac` carrying an ARP request from it
/// (through LLC/SNAP), and an IPv6 packet from its link-local address
/// (modified EUI-64) routed with no link header: the MAC in the two places
/// that are not plain link-layer addresses.
fn packets_hiding(src_mac: glimpse_common::record::MacAddr) -> [Record; 2] {
    use glimpse_common::capture::LinkType;
    let mut wifi = vec![0x08, 0x01, 0, 0];
    wifi.extend([0x02, 0, 0, 0, 0, 0xfe]);
    wifi.extend([0x02, 0, 0, 0, 0, 0xfe]); // transmitter: the access point
    wifi.extend([0xff; 6]);
    wifi.extend([0, 0, 0xaa, 0xaa, 0x03, 0, 0, 0, 0x08, 0x06]);
    wifi.extend([0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    wifi.extend(src_mac.0);
    wifi.extend([192, 0, 2, 10, 0, 0, 0, 0, 0, 0, 192, 0, 2, 1]);
    let m = src_mac.0;
    let mut ipv6 = vec![0x60, 0, 0, 0, 0, 0, 59, 64, 0xfe, 0x80, 0, 0, 0, 0, 0, 0];
    ipv6.extend([m[0] ^ 0x02, m[1], m[2], 0xff, 0xfe, m[3], m[4], m[5]]);
    ipv6.extend([0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
    [(LinkType::Ieee80211, wifi), (LinkType::Ipv6, ipv6)].map(|(link, frame)| Record {
        observed_at_ms: 3,
        body: RecordBody::Capture(CapturedPacket::from_packet(
            link,
            3_000,
            BoundedString::truncating("wlan0"),
            &frame,
            frame.len() as u32,
        )),
    })
}

async fn export_subject(who: &AdminCredentials, org: &OrgId, subject: &Subject) -> Vec<serde_json::Value> {
    let mut lines = Vec::new();
    loop {
        let action =
            AdminAction::ExportSubject { org: org.clone(), subject: subject.clone(), skip: lines.len() as u64 };
        match ask(who, action).await {
            AdminReply::SubjectRecords { total, lines: page } => {
                lines.extend(page.iter().map(|l| serde_json::from_str::<serde_json::Value>(l.as_str()).unwrap()));
                if page.is_empty() || lines.len() as u64 >= total {
                    return lines;
                }
            }
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subject_export_and_erase_cover_metadata_and_captures() {
    init_logging();
    let device = issue_device("subjectorg");
    let org = device.identity.org.clone();
    let tc = TestCollector::start().await;
    set_consent(&tc, &org, true);
    let admin = issue_admin(&tc, AdminRole::OrgAdmin, Some(org.as_str()));
    let operator = issue_admin(&tc, AdminRole::Operator, None);
    let alice = MacAddr([0x02, 0xa1, 0x1c, 0xe0, 0, 1]);
    let bob = MacAddr([0x02, 0xb0, 0xb0, 0, 0, 2]);

    // Two batches (two segments per kind): alice's records mixed with bob's.
    let mut conn = try_connect(tc.addr(), &device).await.unwrap();
    let first = vec![
        metadata_about("alice-laptop", alice, "192.0.2.10"),
        metadata_about("bob-phone", bob, "192.0.2.20"),
        packet_from(alice, [192, 0, 2, 10]),
        packet_from(bob, [192, 0, 2, 20]),
    ];
    let second = vec![packet_from(alice, [192, 0, 2, 10]), metadata_about("bob-phone", bob, "192.0.2.20")];
    for records in [first, second] {
        let batch =
            Batch { org: org.clone(), stream_seq: conn.stored_seq() + 1, records: BoundedVec::truncating(records) };
        conn.send_batch(&batch).await.unwrap();
        conn.close().await;
        conn = try_connect(tc.addr(), &device).await.unwrap();
    }
    conn.close().await;

    // Export finds alice's three records, across both kinds, by MAC or by IP.
    let by_mac = export_subject(&admin, &org, &Subject::Mac(alice)).await;
    assert_eq!(by_mac.len(), 3, "{by_mac:#?}");
    assert_eq!(by_mac.iter().filter(|l| l["kind"] == "metadata").count(), 1);
    assert_eq!(by_mac.iter().filter(|l| l["kind"] == "capture").count(), 2);
    assert_eq!(by_mac[0]["record"]["metadata"]["hostname"], "alice-laptop");
    assert!(by_mac[1..].iter().all(|l| l["summary"]["src_mac"] == alice.to_string()));
    let by_ip = export_subject(&admin, &org, &Subject::Ip("192.0.2.10".parse().unwrap())).await;
    assert_eq!(by_ip, by_mac);
    assert!(export_subject(&admin, &org, &Subject::Username(BoundedString::truncating("alice"))).await.is_empty());

    // Erase removes exactly them.
    match ask(&admin, AdminAction::EraseSubject { org: org.clone(), subject: Subject::Mac(alice) }).await {
        AdminReply::SubjectErased { metadata: 1, captures: 2, segments_rewritten } => assert!(segments_rewritten >= 2),
        other => panic!("{other:?}"),
    }
    assert!(export_subject(&admin, &org, &Subject::Mac(alice)).await.is_empty());
    assert!(export_subject(&admin, &org, &Subject::Ip("192.0.2.10".parse().unwrap())).await.is_empty());
    let bob_left = export_subject(&admin, &org, &Subject::Mac(bob)).await;
    assert_eq!(bob_left.len(), 3, "bob's records stay");
    let metadata = tc.collector.store().read(&org, DataKind::Metadata, None, None).unwrap();
    assert!(metadata.problems.is_empty(), "{:?}", metadata.problems);
    assert_eq!(metadata.records.len(), 2);
    assert_eq!(stored_captures(&tc, &org).len(), 1);

    // The audit log records the requests without keeping who they were about.
    let audit = audit_of(&operator, &org).await;
    let erase = audit.iter().find(|e| e.action.as_str() == "subject.erase").expect("erase audited");
    assert!(erase.detail.as_str().contains("subject#") && erase.detail.as_str().contains("1 metadata and 2 capture"));
    let log = std::fs::read_to_string(tc.config.data_dir.join("audit.log")).unwrap();
    assert!(!log.contains(&alice.to_string()) && !log.contains("192.0.2.10"), "the erased subject is in the audit log");

    // Deleting the organisation: a slip is refused, the real thing shreds it.
    let slip = AdminAction::DeleteOrg { org: org.clone(), confirm: OrgId::new("subjectorg-typo").unwrap() };
    assert!(refused(&ask(&admin, slip).await).contains("confirmation"));
    match ask(&admin, AdminAction::DeleteOrg { org: org.clone(), confirm: org.clone() }).await {
        AdminReply::OrgDeleted { key_destroyed: true, segments_deleted } => assert!(segments_deleted >= 2),
        other => panic!("{other:?}"),
    }
    assert!(tc.collector.store().org_keys().get(&org).unwrap().is_none());
    assert!(tc.data_files().iter().all(|(path, _)| !path.to_string_lossy().contains("/orgs/subjectorg/")));
    assert!(export_subject(&admin, &org, &Subject::Mac(bob)).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_revocations_and_retention_are_audited() {
    init_logging();
    let device = issue_device("registryorg");
    let org = device.identity.org.clone();
    let tc = TestCollector::start().await;
    let operator = issue_admin(&tc, AdminRole::Operator, None);
    let audit = audit_of(&operator, &org).await;
    let registered: Vec<_> = audit.iter().filter(|e| e.action.as_str() == "device.register").collect();
    assert_eq!(registered.len(), 1, "{audit:#?}");
    assert!(registered[0].detail.as_str().contains(device.identity.device.as_str()));
    assert_eq!(registered[0].actor.as_str(), "collector");

    {
        let _guard = pki().lock();
        glimpse_certs::revoke(&pki().ours, &org, &device.identity.device).unwrap();
    }
    tc.collector.reload().unwrap();
    tc.collector.reload().unwrap();
    let audit = audit_of(&operator, &org).await;
    assert_eq!(audit.iter().filter(|e| e.action.as_str() == "device.revoke").count(), 1, "once, not per reload");

    let everything = tc.collector.store().audit().entries(None, 0, usize::MAX).unwrap();
    assert_eq!(everything.iter().filter(|e| e.action == "retention.policy").count(), 1);
    assert!(matches!(ask(&operator, AdminAction::VerifyAudit).await, AdminReply::AuditVerified { .. }));
}

fn stored_metadata(tc: &TestCollector, org: &OrgId) -> Vec<(i64, glimpse_common::record::DeviceMetadata)> {
    let outcome = tc.collector.store().read(org, DataKind::Metadata, None, None).unwrap();
    outcome
        .records
        .into_iter()
        .filter_map(|r| match r.record.body {
            RecordBody::Metadata(m) => Some((r.received_at_ms, m)),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_minimisation_reaches_agents_and_is_enforced_on_arrival() {
    use glimpse_common::minimise::MetadataField;

    init_logging();
    let device = issue_device("minimalorg");
    let org = device.identity.org.clone();
    let tc = TestCollector::start().await;
    let admin = issue_admin(&tc, AdminRole::OrgAdmin, Some(org.as_str()));
    let sysroot = ap_sysroot("alice-ap");
    let agent =
        glimpse_agent::AgentHandle::spawn(agent_config_with_sysroot(tc.addr(), &device, sysroot.path())).unwrap();
    wait_until("full records stored", || stored_metadata(&tc, &org).len() >= 2).await;
    let (_, before) = stored_metadata(&tc, &org).pop().unwrap();
    assert_eq!(before.hostname.as_str(), "alice-ap");
    let real_macs: Vec<MacAddr> = before.interfaces.iter().filter_map(|i| i.mac).collect();
    assert!(!real_macs.is_empty(), "the fixture has MACs, or this test proves nothing");

    let omit = vec![MetadataField::Hostname, MetadataField::InterfaceAddresses];
    let policy = AdminAction::SetDataPolicy {
        org: org.clone(),
        omit: BoundedVec::truncating(omit.clone()),
        pseudonymise_macs: true,
        strict_headers: None,
    };
    assert_eq!(ask(&admin, policy).await, AdminReply::DataPolicySet { devices_told: 1, strict_headers: false });
    wait_for_status(&agent, "policy and device key heard", |s| s.omitted_fields == omit && s.pseudonymising_macs).await;
    let changed_at = SystemClock.now_millis();
    wait_until("records after the change", || {
        stored_metadata(&tc, &org).iter().filter(|(at, _)| *at > changed_at).count() >= 2
    })
    .await;
    agent.shutdown().await;
    let after: Vec<_> = stored_metadata(&tc, &org).into_iter().filter(|(at, _)| *at > changed_at).collect();
    let mut pseudonyms = std::collections::BTreeSet::new();
    for (_, m) in &after {
        assert_eq!(m.hostname.as_str(), "");
        assert!(m.interfaces.iter().all(|i| i.addresses.is_empty()));
        assert!(!m.os_name.as_str().is_empty(), "fields not omitted are still collected");
        for mac in m.interfaces.iter().filter_map(|i| i.mac) {
            assert!(!real_macs.contains(&mac), "real MAC stored");
            assert_eq!(mac.0[0] & 0x03, 0x02, "pseudonyms are locally administered");
            pseudonyms.insert(mac);
        }
    }
    assert_eq!(pseudonyms.len(), real_macs.len(), "one stable pseudonym per device MAC");
    // The agent pseudonymised them itself (no real MAC left the device);
    // the collector added its layer, giving the one stored form.
    let (by_device, on_arrival) = tc.collector.metrics().pseudonymised_batches();
    assert!(by_device >= 1, "batches pseudonymised on the device: {by_device}");
    let pseudonymiser = glimpse_common::minimise::Pseudonymiser::new(tc.collector.store().pseudonym_key(&org).unwrap());
    let expected: std::collections::BTreeSet<MacAddr> =
        real_macs.iter().map(|mac| pseudonymiser.stored_form(*mac, glimpse_common::minimise::MacForm::Real)).collect();
    assert_eq!(pseudonyms, expected);

    // An agent that ignores the policy gets nothing extra stored, and MACs
    // in captured headers are pseudonymised too.
    set_consent(&tc, &org, true);
    let alice = MacAddr([0x02, 0xa1, 0x1c, 0xe0, 0, 1]);
    let mut conn = try_connect(tc.addr(), &device).await.unwrap();
    let mut records = vec![metadata_about("leaky-hostname", alice, "192.0.2.10"), packet_from(alice, [192, 0, 2, 10])];
    records.extend(packets_hiding(alice));
    let batch = Batch { org: org.clone(), stream_seq: conn.stored_seq() + 1, records: BoundedVec::truncating(records) };
    conn.send_batch(&batch).await.unwrap();
    conn.close().await;
    assert_eq!(
        tc.collector.metrics().pseudonymised_batches(),
        (by_device, on_arrival + 1),
        "real MACs get both layers on arrival"
    );
    let (_, leaked) = stored_metadata(&tc, &org)
        .into_iter()
        .find(|(_, m)| m.interfaces.len() == 1 && m.interfaces[0].name.as_str() == "wlan0")
        .unwrap();
    assert_eq!(leaked.hostname.as_str(), "");
    assert!(leaked.interfaces[0].addresses.is_empty());
    let stored_mac = leaked.interfaces[0].mac.unwrap();
    assert_ne!(stored_mac, alice);
    let captured = stored_captures(&tc, &org);
    assert_eq!(captured.len(), 3);
    assert!(!captured[0].headers.windows(6).any(|w| w == alice.0), "real MAC in captured headers");
    assert_eq!(captured[0].summary().unwrap().src_mac, Some(stored_mac.0), "the same pseudonym in both kinds");
    // ARP inside the 802.11 frame, and the IPv6 address made from the MAC.
    let arp = &captured[1].headers;
    assert_eq!(arp.len(), 24 + 8 + 28, "the ARP request is kept whole");
    assert!(!arp.windows(6).any(|w| w == alice.0), "real MAC in 802.11 ARP: {arp:02x?}");
    assert_eq!(&arp[24 + 8 + 8..24 + 8 + 14], &stored_mac.0, "ARP's sender holds the same pseudonym");
    let Some(std::net::IpAddr::V6(source)) = captured[2].summary().unwrap().src_ip else { panic!("{:?}", captured[2]) };
    assert_eq!(source.segments()[..4], [0xfe80, 0, 0, 0], "the prefix stays");
    assert_eq!(
        glimpse_common::capture::macs::mac_of_ipv6(&source),
        Some(stored_mac),
        "the link-local address holds the MAC's pseudonym: {source}"
    );

    // A subject request by the real MAC finds what is stored under its
    // pseudonym, in both kinds and in every form.
    let found = export_subject(&admin, &org, &Subject::Mac(alice)).await;
    assert_eq!(found.len(), 4, "{found:#?}");

    match ask(&admin, AdminAction::OrgStatus { org: org.clone() }).await {
        AdminReply::OrgStatus { omitted_fields, pseudonymise_macs, strict_headers, .. } => {
            assert_eq!(omitted_fields.to_vec(), omit);
            assert!(pseudonymise_macs);
            assert!(!strict_headers, "off by default");
        }
        other => panic!("{other:?}"),
    }

    // Strict header scrubbing over the API: set, kept by a change that
    // leaves it out, and audited (capture.rs shows agents applying it).
    let strict = |strict_headers| AdminAction::SetDataPolicy {
        org: org.clone(),
        omit: BoundedVec::truncating(omit.clone()),
        pseudonymise_macs: true,
        strict_headers,
    };
    let reply = ask(&admin, strict(Some(true))).await;
    assert!(matches!(reply, AdminReply::DataPolicySet { strict_headers: true, .. }), "{reply:?}");
    let kept = ask(&admin, strict(None)).await;
    assert!(matches!(kept, AdminReply::DataPolicySet { strict_headers: true, .. }), "{kept:?}");
    match ask(&admin, AdminAction::OrgStatus { org: org.clone() }).await {
        AdminReply::OrgStatus { strict_headers, .. } => assert!(strict_headers, "left out, it stays"),
        other => panic!("{other:?}"),
    }
    let audit = tc.collector.store().audit().entries(Some(org.as_str()), 0, 10_000).unwrap();
    assert!(
        audit.iter().any(|e| e.action == "data-policy.set" && e.detail.starts_with("strict headers on")),
        "{audit:#?}"
    );
    let reply = ask(&admin, strict(Some(false))).await;
    assert!(matches!(reply, AdminReply::DataPolicySet { strict_headers: false, .. }), "{reply:?}");
}

/// A Wi-Fi report of an access point serving `stations` (MAC, address,
/// username, hostname).
fn wifi_report(stations: &[(MacAddr, &str, &str, &str)]) -> Record {
    use glimpse_common::record::{Station, WirelessReport};
    let stations = stations
        .iter()
        .map(|(mac, ip, username, hostname)| Station {
            mac: *mac,
            interface: BoundedString::truncating("wlan0"),
            addresses: BoundedVec::truncating(vec![ip.parse().unwrap()]),
            username: BoundedString::truncating(username),
            hostname: BoundedString::truncating(hostname),
            ..Default::default()
        })
        .collect();
    Record {
        observed_at_ms: 3,
        body: RecordBody::Wireless(Box::new(WirelessReport {
            stations: BoundedVec::truncating(stations),
            ..Default::default()
        })),
    }
}

/// The organisation's whole metadata export through the API, as text.
async fn bulk_export(who: &AdminCredentials, org: &OrgId, kind: &str) -> String {
    let client = api_client(who).await;
    let response = client
        .request(reqwest::Method::GET, &format!("/api/v1/orgs/{org}/export?kind={kind}"))
        .send()
        .await
        .expect("export request");
    assert_eq!(response.status().as_u16(), 200);
    response.text().await.expect("export body")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_subject_is_dropped_on_arrival_and_left_out_of_exports_until_unblocked() {
    init_logging();
    let device = issue_device("blockorg");
    let org = device.identity.org.clone();
    let tc = TestCollector::start().await;
    set_consent(&tc, &org, true);
    set_location_history(&tc, &org, true);
    let admin = issue_admin(&tc, AdminRole::OrgAdmin, Some(org.as_str()));
    let operator = issue_admin(&tc, AdminRole::Operator, None);
    let support = issue_admin(&tc, AdminRole::Support, Some(org.as_str()));
    let stranger = issue_admin(&tc, AdminRole::OrgAdmin, Some("otherblockorg"));
    let alice = MacAddr([0x02, 0xa1, 0x1c, 0xe0, 0, 1]);
    let bob = MacAddr([0x02, 0xb0, 0xb0, 0, 0, 2]);
    let bob_name = Subject::Username(BoundedString::truncating("bob"));
    // What one collection sends: bob's own device, a report about both,
    // and a packet each.
    let collection = || {
        vec![
            metadata_about("alice-laptop", alice, "192.0.2.10"),
            metadata_about("bob-phone", bob, "192.0.2.20"),
            wifi_report(&[(alice, "192.0.2.10", "alice", "alice-laptop"), (bob, "192.0.2.20", "bob", "bob-phone")]),
            packet_from(alice, [192, 0, 2, 10]),
            packet_from(bob, [192, 0, 2, 20]),
        ]
    };
    let send = |records: Vec<Record>| {
        let (addr, device, org) = (tc.addr(), device.clone(), org.clone());
        async move {
            let mut conn = try_connect(addr, &device).await.unwrap();
            let batch = Batch { org, stream_seq: conn.stored_seq() + 1, records: BoundedVec::truncating(records) };
            conn.send_batch(&batch).await.unwrap();
            conn.close().await;
        }
    };

    // The issue's case: bob erased, and the next collection stores five
    // records about him again.
    send(collection()).await;
    match ask(&admin, AdminAction::EraseSubject { org: org.clone(), subject: Subject::Mac(bob) }).await {
        AdminReply::SubjectErased { metadata: 2, captures: 1, .. } => {}
        other => panic!("{other:?}"),
    }
    assert!(export_subject(&admin, &org, &Subject::Mac(bob)).await.is_empty());
    send(collection()).await;
    assert_eq!(export_subject(&admin, &org, &Subject::Mac(bob)).await.len(), 3, "bob is back");

    // Who may block: the organisation's admins and operators, not support
    // (even under a grant), not another organisation's admin.
    assert!(matches!(
        ask(&admin, AdminAction::GrantSupport { org: org.clone(), hours: 1, scope: GrantScope::default() }).await,
        AdminReply::SupportGranted { .. }
    ));
    let by_support = ask(&support, AdminAction::BlockSubject { org: org.clone(), subject: bob_name.clone() }).await;
    assert!(refused(&by_support).contains("read-only"));
    let by_stranger = ask(&stranger, AdminAction::BlockSubject { org: org.clone(), subject: bob_name.clone() }).await;
    assert!(refused(&by_stranger).contains("may not act on organisation blockorg"));
    match ask(&admin, AdminAction::BlockSubject { org: org.clone(), subject: Subject::Mac(bob) }).await {
        AdminReply::BlockChanged { blocked: true, changed: true, blocked_subjects: 1, .. } => {}
        other => panic!("{other:?}"),
    }
    match ask(&operator, AdminAction::BlockSubject { org: org.clone(), subject: bob_name.clone() }).await {
        AdminReply::BlockChanged { blocked: true, changed: true, blocked_subjects: 2, .. } => {}
        other => panic!("{other:?}"),
    }
    match ask(&admin, AdminAction::BlockSubject { org: org.clone(), subject: bob_name.clone() }).await {
        AdminReply::BlockChanged { changed: false, blocked_subjects: 2, .. } => {}
        other => panic!("{other:?}"),
    }
    match ask(&support, AdminAction::BlockedSubjects { org: org.clone() }).await {
        AdminReply::BlockedSubjects(list) => assert_eq!(list.as_slice(), [Subject::Mac(bob), bob_name.clone()]),
        other => panic!("{other:?}"),
    }

    // Blocked: exports leave out what is stored about him...
    let metadata = bulk_export(&admin, &org, "metadata").await;
    assert!(metadata.contains("alice-laptop"), "{metadata}");
    assert!(!metadata.contains("bob-phone") && !metadata.contains(&bob.to_string()), "{metadata}");
    let captures = bulk_export(&admin, &org, "capture").await;
    assert_eq!(captures.lines().count(), 2, "alice's two packets, not bob's: {captures}");
    // ...and the next collection stores nothing about him, and all of
    // alice's (her part of the shared report too).
    let stored_before = tc.collector.store().read(&org, DataKind::Metadata, None, None).unwrap().records.len();
    let captures_before = stored_captures(&tc, &org).len();
    send(collection()).await;
    let stored = tc.collector.store().read(&org, DataKind::Metadata, None, None).unwrap().records;
    assert_eq!(stored.len(), stored_before + 2, "alice's metadata and the report");
    let newest_report = stored.iter().rev().find(|r| matches!(r.record.body, RecordBody::Wireless(_))).unwrap();
    let RecordBody::Wireless(report) = &newest_report.record.body else { unreachable!() };
    assert_eq!(report.stations.len(), 1);
    assert_eq!(report.stations[0].username.as_str(), "alice", "alice's part stays, bob's is gone");
    assert_eq!(stored_captures(&tc, &org).len(), captures_before + 1, "alice's packet only");
    // His own subject export still answers him: the three records from
    // before the block.
    assert_eq!(export_subject(&admin, &org, &Subject::Mac(bob)).await.len(), 3);

    // Unblocked: processed again from the next collection on.
    for subject in [Subject::Mac(bob), bob_name.clone()] {
        match ask(&admin, AdminAction::UnblockSubject { org: org.clone(), subject }).await {
            AdminReply::BlockChanged { blocked: false, changed: true, .. } => {}
            other => panic!("{other:?}"),
        }
    }
    send(collection()).await;
    assert_eq!(export_subject(&admin, &org, &Subject::Mac(bob)).await.len(), 6);
    assert!(bulk_export(&admin, &org, "metadata").await.contains("bob-phone"));

    // Every block and unblock audited, the refusals too, never naming him.
    let audit = audit_of(&operator, &org).await;
    let count = |action: &str, refused: bool| {
        audit.iter().filter(|e| e.action.as_str() == action && e.refused == refused).count()
    };
    assert_eq!((count("subject.block", false), count("subject.block", true)), (3, 2));
    assert_eq!(count("subject.unblock", false), 2);
    assert!(audit.iter().filter(|e| e.action.as_str().starts_with("subject.")).all(|e| {
        let detail = e.detail.as_str();
        !detail.contains("bob") && !detail.contains(&bob.to_string())
    }));
    let log = std::fs::read_to_string(tc.config.data_dir.join("audit.log")).unwrap();
    assert!(!log.contains(&bob.to_string()), "the blocked subject is in the audit log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_correction_replaces_the_subjects_value_in_every_stored_record_and_only_theirs() {
    use glimpse_common::wire::admin::CorrectableField;
    init_logging();
    let device = issue_device("correctorg");
    let org = device.identity.org.clone();
    let tc = TestCollector::start().await;
    set_location_history(&tc, &org, true);
    let admin = issue_admin(&tc, AdminRole::OrgAdmin, Some(org.as_str()));
    let operator = issue_admin(&tc, AdminRole::Operator, None);
    let support = issue_admin(&tc, AdminRole::Support, Some(org.as_str()));
    let alice = MacAddr([0x02, 0xa1, 0x1c, 0xe0, 0, 1]);
    let bob = MacAddr([0x02, 0xb0, 0xb0, 0, 0, 2]);
    // Two collections: two reports with alice's name misspelt.
    for _ in 0..2 {
        let mut conn = try_connect(tc.addr(), &device).await.unwrap();
        let records = vec![
            wifi_report(&[(alice, "192.0.2.10", "alcie", "alice-laptop"), (bob, "192.0.2.20", "bob", "bob-phone")]),
            metadata_about("bob-phone", bob, "192.0.2.20"),
        ];
        let batch =
            Batch { org: org.clone(), stream_seq: conn.stored_seq() + 1, records: BoundedVec::truncating(records) };
        conn.send_batch(&batch).await.unwrap();
        conn.close().await;
    }
    let wrong = Subject::Username(BoundedString::truncating("alcie"));
    let correct = |subject: Subject, field, value: &str| AdminAction::CorrectSubject {
        org: org.clone(),
        subject,
        field,
        value: BoundedString::truncating(value),
    };
    assert!(refused(&ask(&support, correct(wrong.clone(), CorrectableField::Username, "alice")).await)
        .contains("read-only"));
    match ask(&admin, correct(wrong.clone(), CorrectableField::Username, "alice")).await {
        AdminReply::SubjectCorrected { records: 2, values: 2, segments_rewritten: 1.. } => {}
        other => panic!("{other:?}"),
    }
    assert!(export_subject(&admin, &org, &wrong).await.is_empty(), "the wrong name is gone");
    let right = export_subject(&admin, &org, &Subject::Username(BoundedString::truncating("alice"))).await;
    assert_eq!(right.len(), 2);
    let station = &right[0]["record"]["wireless"]["stations"][0];
    assert_eq!((station["username"].as_str(), station["hostname"].as_str()), (Some("alice"), Some("alice-laptop")));
    // By MAC, the hostname; bob's values and bob's own metadata stay.
    match ask(&operator, correct(Subject::Mac(alice), CorrectableField::Hostname, "alice-desktop")).await {
        AdminReply::SubjectCorrected { records: 2, values: 2, .. } => {}
        other => panic!("{other:?}"),
    }
    let exported = bulk_export(&admin, &org, "metadata").await;
    assert_eq!(exported.matches("alice-desktop").count(), 2, "{exported}");
    assert!(!exported.contains("alice-laptop") && !exported.contains("alcie"), "{exported}");
    assert_eq!(exported.matches("bob-phone").count(), 4, "bob's report entries and his metadata: {exported}");
    let stored = tc.collector.store().read(&org, DataKind::Metadata, None, None).unwrap();
    assert!(stored.problems.is_empty(), "{:?}", stored.problems);
    assert_eq!(stored.records.len(), 4);

    // Audited by subject tag, without either value.
    let audit = audit_of(&operator, &org).await;
    let done: Vec<_> = audit.iter().filter(|e| e.action.as_str() == "subject.correct" && !e.refused).collect();
    assert_eq!(done.len(), 2);
    assert!(done.iter().all(|e| e.detail.as_str().contains("subject#")));
    assert!(done[0].detail.as_str().contains("username corrected, 2 values in 2 metadata records"));
    let log = std::fs::read_to_string(tc.config.data_dir.join("audit.log")).unwrap();
    assert!(!log.contains("alcie") && !log.contains("alice-desktop"), "a value is in the audit log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_by_mac_holds_when_macs_are_stored_as_pseudonyms() {
    init_logging();
    let device = issue_device("blockpseudo");
    let org = device.identity.org.clone();
    let tc = TestCollector::start_with_default_privacy().await;
    let admin = issue_admin(&tc, AdminRole::OrgAdmin, Some(org.as_str()));
    let alice = MacAddr([0x02, 0xa1, 0x1c, 0xe0, 0, 1]);
    let bob = MacAddr([0x02, 0xb0, 0xb0, 0, 0, 2]);
    let send = |records: Vec<Record>| {
        let (addr, device, org) = (tc.addr(), device.clone(), org.clone());
        async move {
            let mut conn = try_connect(addr, &device).await.unwrap();
            let batch = Batch { org, stream_seq: conn.stored_seq() + 1, records: BoundedVec::truncating(records) };
            conn.send_batch(&batch).await.unwrap();
            conn.close().await;
        }
    };
    send(vec![metadata_about("bob-phone", bob, "192.0.2.20")]).await;
    let stored = tc.collector.store().read(&org, DataKind::Metadata, None, None).unwrap().records;
    assert_eq!(stored.len(), 1);
    let as_sent = glimpse_common::record::subject::concerns(&stored[0].record, &Subject::Mac(bob));
    assert!(!as_sent, "stored pseudonymised, not as sent");
    // Blocked by the address the admin knows, not by its pseudonym.
    match ask(&admin, AdminAction::BlockSubject { org: org.clone(), subject: Subject::Mac(bob) }).await {
        AdminReply::BlockChanged { blocked: true, changed: true, .. } => {}
        other => panic!("{other:?}"),
    }
    let exported = bulk_export(&admin, &org, "metadata").await;
    assert!(!exported.contains("bob-phone"), "the stored pseudonym is matched: {exported}");
    send(vec![metadata_about("bob-phone", bob, "192.0.2.20"), metadata_about("alice-laptop", alice, "192.0.2.10")])
        .await;
    let stored = tc.collector.store().read(&org, DataKind::Metadata, None, None).unwrap().records;
    assert_eq!(stored.len(), 2, "bob's first record and alice's; bob's second was dropped on arrival");
    let exported = bulk_export(&admin, &org, "metadata").await;
    assert!(exported.contains("alice-laptop") && !exported.contains("bob-phone"), "{exported}");
}
