//! Live sessions and what anyone can repeat at will, end to end: a reload
//! that revokes or re-keys a device ends its live TLS and SSH sessions with
//! an `Error` naming the reason and stores nothing they send afterwards;
//! bare connects to the admin port and consent drops are audited per source
//! and interval, not one entry each; one organisation's devices cannot erase
//! another's capture outcomes.

use glimpse_agent::transport::Connection;
use glimpse_collector::ingest::RejectReason;
use glimpse_common::bounded::BoundedVec;
use glimpse_common::identity::{AdminIdentity, AdminName, AdminRole, DeviceKind, OrgId};
use glimpse_common::record::{Record, RecordBody};
use glimpse_common::wire::admin::{AdminAction, AdminReply};
use glimpse_common::wire::{
    AgentMessage, Batch, CaptureOutcome, CaptureStatus, CollectorMessage, ControlMessage, ErrorCode,
};
use glimpse_tests::*;

const ORG: &str = "sessionorg";

fn now_ms() -> i64 {
    i64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()).unwrap()
}

fn batch(org: &OrgId, seq: u64) -> Batch {
    let record = Record { observed_at_ms: now_ms(), body: RecordBody::Metadata(Default::default()) };
    Batch { org: org.clone(), stream_seq: seq, records: BoundedVec::truncating(vec![record; 2]) }
}

/// The collector's next message that is not a control message.
async fn next_non_control(conn: &mut Connection) -> CollectorMessage {
    let next = async {
        loop {
            match conn.receive().await.expect("the collector's message arrives") {
                CollectorMessage::Control(_) => continue,
                other => return other,
            }
        }
    };
    tokio::time::timeout(DEADLINE, next).await.expect("a message within the deadline")
}

/// Sends a batch after the reload and expects the `Error` naming `reason`
/// instead of an acknowledgement; the stream's stored sequence is unchanged.
async fn expect_withdrawn(tc: &TestCollector, conn: &mut Connection, device: &Device, seq: u64, reason: &str) {
    let stored = tc.collector.store().registry().stored_seq(&device.identity, 1).unwrap();
    // Written straight after the reload: the collector must not store it.
    let _ = conn.send_batch_only(&batch(&device.identity.org, seq)).await;
    match next_non_control(conn).await {
        CollectorMessage::Error(e) => {
            assert_eq!(e.code, ErrorCode::AuthenticationFailed, "{}", e.message);
            assert!(e.message.as_str().contains(reason), "{reason:?} not named in {:?}", e.message.as_str());
        }
        other => panic!("{}: expected an Error after the reload, got {other:?}", device.identity),
    }
    assert_eq!(
        tc.collector.store().registry().stored_seq(&device.identity, 1).unwrap(),
        stored,
        "{}: a batch sent after the reload was stored",
        device.identity
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_ends_live_tls_and_ssh_sessions_on_reload() {
    init_logging();
    let ap = issue_device(ORG);
    let switch = issue_ssh_device(ORG, DeviceKind::Switch);
    let bystander = issue_device(ORG);
    let tc = TestCollector::start().await;

    // Raw sessions, to see exactly what the collector says...
    let mut tls = try_connect(tc.addr(), &ap).await.expect("AP accepted");
    let mut ssh = try_connect_with(ssh_agent_config(tc.ssh_addr(), &tc.ssh_fingerprint(), &switch))
        .await
        .expect("switch accepted");
    assert_eq!(tls.send_batch(&batch(&ap.identity.org, 1)).await.unwrap(), 1);
    assert_eq!(ssh.send_batch(&batch(&switch.identity.org, 1)).await.unwrap(), 1);
    // ...and a real agent streaming beside them, which is not revoked.
    let agent = start_agent(tc.addr(), &bystander);
    wait_for_status(&agent, "bystander streaming", |s| s.acked_seq >= 2).await;

    {
        let _guard = pki().lock();
        glimpse_certs::revoke(&pki().ours, &ap.identity.org, &ap.identity.device).unwrap();
        glimpse_certs::revoke(&pki().ours, &switch.identity.org, &switch.identity.device).unwrap();
    }
    let withdrawn = tc.collector.metrics().sessions_withdrawn();
    tc.collector.reload().expect("reload");
    expect_withdrawn(&tc, &mut tls, &ap, 2, "revoked").await;
    expect_withdrawn(&tc, &mut ssh, &switch, 2, "revoked").await;
    assert_eq!(tc.collector.metrics().sessions_withdrawn(), withdrawn + 2);
    assert_eq!(tc.stored_records_of(&ap.identity), 2, "only the batch before the reload");
    assert_eq!(tc.stored_records_of(&switch.identity), 2, "only the batch before the reload");

    // The bystander was not disturbed.
    let seen = agent.status().borrow().acked_seq;
    let status = wait_for_status(&agent, "bystander still streaming", |s| s.acked_seq >= seen + 2).await;
    assert_eq!(status.connections, 1, "an unrevoked device was disconnected");
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_real_agent_stops_being_stored_after_the_reload() {
    init_logging();
    let ap = issue_device(ORG);
    let switch = issue_ssh_device(ORG, DeviceKind::Switch);
    let tc = TestCollector::start().await;
    let tls_agent = start_agent(tc.addr(), &ap);
    let ssh_agent =
        glimpse_agent::AgentHandle::spawn(ssh_agent_config(tc.ssh_addr(), &tc.ssh_fingerprint(), &switch)).unwrap();
    wait_for_status(&tls_agent, "AP streaming", |s| s.acked_seq >= 2).await;
    wait_for_status(&ssh_agent, "switch streaming", |s| s.acked_seq >= 2).await;
    {
        let _guard = pki().lock();
        glimpse_certs::revoke(&pki().ours, &ap.identity.org, &ap.identity.device).unwrap();
        glimpse_certs::revoke(&pki().ours, &switch.identity.org, &switch.identity.device).unwrap();
    }
    let refused = |tc: &TestCollector| {
        tc.collector.metrics().rejections(RejectReason::Revoked)
            + tc.collector.metrics().rejections(RejectReason::TlsHandshake)
    };
    let refused_before = refused(&tc);
    tc.collector.reload().expect("reload");
    let registry = tc.collector.store().registry();
    // A batch already being stored when the reload ran may still land: one
    // at most per agent (one batch is in flight at a time).
    let at_reload = [registry.stored_seq(&ap.identity, 1).unwrap(), registry.stored_seq(&switch.identity, 1).unwrap()];
    wait_for_status(&tls_agent, "AP disconnected", |s| !s.connected).await;
    wait_for_status(&ssh_agent, "switch disconnected", |s| !s.connected).await;
    // Both come back and are refused at the door: by then the old sessions
    // are long closed.
    wait_until("both revoked agents refused on reconnect", || refused(&tc) >= refused_before + 2).await;
    let after = [registry.stored_seq(&ap.identity, 1).unwrap(), registry.stored_seq(&switch.identity, 1).unwrap()];
    for (at, after) in at_reload.iter().zip(after) {
        assert!(after <= at + 1, "batches stored after the reload: {at} at the reload, {after} now");
    }
    let tls_status = tls_agent.shutdown().await;
    let ssh_status = ssh_agent.shutdown().await;
    assert_eq!(tc.stored_records_of(&ap.identity) as u64, tls_status.acked_records, "acknowledged = stored");
    assert_eq!(tc.stored_records_of(&switch.identity) as u64, ssh_status.acked_records, "acknowledged = stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reissued_device_loses_the_session_of_its_old_certificate_and_key() {
    init_logging();
    let ap = issue_device(ORG);
    let switch = issue_ssh_device(ORG, DeviceKind::Gateway);
    let tc = TestCollector::start().await;
    let mut tls = try_connect(tc.addr(), &ap).await.expect("AP accepted");
    let mut ssh = try_connect_with(ssh_agent_config(tc.ssh_addr(), &tc.ssh_fingerprint(), &switch))
        .await
        .expect("gateway accepted");
    // Copies of the old credentials, since re-issuing rewrites the files.
    let old = tempfile::tempdir().unwrap();
    let old_ap = {
        let mut copy = ap.clone();
        for (path, name) in [(&mut copy.cert, "cert.pem"), (&mut copy.key, "key.pem"), (&mut copy.shared_key, "psk")] {
            let target = old.path().join(name);
            std::fs::copy(&*path, &target).unwrap();
            *path = target;
        }
        copy
    };
    {
        let _guard = pki().lock();
        for device in [&ap, &switch] {
            glimpse_certs::issue_device(&pki().ours, &device.identity, &glimpse_certs::Validity::default(), true)
                .unwrap();
        }
    }
    tc.collector.reload().expect("reload");
    expect_withdrawn(&tc, &mut tls, &ap, 1, "re-keyed").await;
    expect_withdrawn(&tc, &mut ssh, &switch, 1, "re-keyed").await;
    // The old certificate cannot come back either.
    assert!(try_connect(tc.addr(), &old_ap).await.is_err());
    // The new credentials work.
    let mut fresh = try_connect(tc.addr(), &ap).await.expect("re-issued AP accepted");
    assert_eq!(fresh.send_batch(&batch(&ap.identity.org, 1)).await.unwrap(), 1);
    fresh.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_admin_connects_cost_a_handful_of_audit_entries() {
    init_logging();
    let tc = TestCollector::start().await;
    let admin = tc.collector.admin_addr().expect("admin API");
    let before = tc.collector.store().audit().entries(None, 0, 100_000).unwrap().len();
    for _ in 0..2000 {
        let tcp = tokio::net::TcpStream::connect(admin).await.expect("connect");
        drop(tcp);
    }
    // An authenticated request afterwards is audited on its own, and, the
    // connections being handled in order, after the refusals.
    let operator = issue_admin(&tc, AdminRole::Operator, None);
    let reply = glimpse_admin_client::admin_request(&operator, AdminAction::VerifyAudit).await.expect("request");
    assert!(matches!(reply, AdminReply::AuditVerified { .. }), "{reply:?}");
    let entries = tc.collector.store().audit().entries(None, 0, 100_000).unwrap();
    let added = entries.len() - before;
    assert!(added <= 5, "2,000 bare connects added {added} audit entries");
    assert!(entries.iter().skip(before).any(|e| e.action == "audit.verify"), "the request is audited on its own");

    // At shutdown the count is written as one summary entry, and the chain
    // still verifies.
    let store = tc.collector.store().clone();
    let TestCollector { collector, .. } = tc;
    collector.shutdown().await;
    let entries = store.audit().entries(None, 0, 100_000).unwrap();
    let refused: Vec<_> = entries.iter().skip(before).filter(|e| e.action == "admin.connect").collect();
    let individual = refused.iter().filter(|e| e.actor.matches(':').count() >= 2).count();
    let summarised: u64 =
        refused.iter().filter_map(|e| e.detail.split_whitespace().next().and_then(|n| n.parse::<u64>().ok())).sum();
    assert!(
        individual as u64 + summarised >= 2000,
        "every refusal counted: {individual} individually, {summarised} in summaries: {refused:#?}"
    );
    assert!(refused.len() <= 4, "{refused:#?}");
    store.audit().verify().expect("the audit chain verifies");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsolicited_capture_statuses_cannot_erase_another_organisations_outcome() {
    init_logging();
    let acme = issue_device("acme-status");
    let globex = issue_device("globex-status");
    let tc = TestCollector::start().await;
    set_consent(&tc, &globex.identity.org, true);
    let mut globex_conn = try_connect(tc.addr(), &globex).await.expect("globex device");
    let mut acme_conn = try_connect(tc.addr(), &acme).await.expect("acme device");
    wait_until("both connected", || tc.collector.directory().connected(&globex.identity.org).len() == 1).await;

    // Globex's admin asks its device for a capture; the device answers.
    let operator = AdminIdentity::new(
        AdminName::new("status-admin").unwrap(),
        AdminRole::OrgAdmin,
        Some(globex.identity.org.clone()),
    )
    .unwrap();
    let acme_admin = AdminIdentity::new(
        AdminName::new("status-admin").unwrap(),
        AdminRole::OrgAdmin,
        Some(acme.identity.org.clone()),
    )
    .unwrap();
    let start = AdminAction::StartCapture {
        org: globex.identity.org.clone(),
        device: globex.identity.device.clone(),
        interface: glimpse_common::bounded::BoundedString::truncating("eth0"),
        filter: glimpse_common::bounded::BoundedString::truncating(""),
        duration_secs: 5,
        max_packets: 10,
    };
    let AdminReply::CaptureRequested { id } = tc.collector.admin_context().act(&operator, start) else {
        panic!("capture not requested")
    };
    let asked = loop {
        match tokio::time::timeout(DEADLINE, globex_conn.receive()).await.expect("request arrives").unwrap() {
            CollectorMessage::Control(ControlMessage::StartCapture(request)) => break request.id,
            _ => continue,
        }
    };
    assert_eq!(asked, id);
    let finished = CaptureOutcome::Finished { packets: 3, header_bytes: 126 };
    globex_conn.send(&AgentMessage::CaptureStatus(CaptureStatus { id, outcome: finished.clone() })).await.unwrap();
    let status =
        AdminAction::CaptureStatus { org: globex.identity.org.clone(), device: globex.identity.device.clone(), id };
    wait_until("globex's outcome recorded", || {
        tc.collector.admin_context().act(&operator, status.clone()) == AdminReply::CaptureStatus(Some(finished.clone()))
    })
    .await;

    // An acme device floods statuses nobody asked for, globex's id among them.
    let ignored = tc.collector.metrics().unsolicited_capture_statuses();
    for n in 0..1100u64 {
        let outcome = CaptureOutcome::Refused { reason: glimpse_common::bounded::BoundedString::truncating("x") };
        let id = if n == 0 { id } else { n };
        acme_conn.send(&AgentMessage::CaptureStatus(CaptureStatus { id, outcome })).await.unwrap();
    }
    // The session answers in order: once this batch is acknowledged, every
    // status before it was handled.
    assert_eq!(acme_conn.send_batch(&batch(&acme.identity.org, 1)).await.unwrap(), 1);
    assert_eq!(tc.collector.metrics().unsolicited_capture_statuses(), ignored + 1100);
    assert_eq!(
        tc.collector.admin_context().act(&operator, status.clone()),
        AdminReply::CaptureStatus(Some(finished)),
        "globex's finished capture still reads its real outcome"
    );
    // acme's device did not get an outcome recorded for a capture it was never asked for.
    let forged =
        AdminAction::CaptureStatus { org: acme.identity.org.clone(), device: acme.identity.device.clone(), id: 5 };
    assert_eq!(tc.collector.admin_context().act(&acme_admin, forged), AdminReply::CaptureStatus(None));
    acme_conn.close().await;
    globex_conn.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consent_drops_are_audited_per_device_and_interval() {
    init_logging();
    let device = issue_device("consentless-org");
    let tc = TestCollector::start().await;
    set_consent(&tc, &device.identity.org, false);
    let before = tc.collector.store().audit().entries(None, 0, 100_000).unwrap().len();
    let mut conn = try_connect(tc.addr(), &device).await.expect("connect");
    // An Ethernet header and nothing after it: headers only, as an agent sends.
    let frame = [[0x02u8, 0, 0, 0, 0, 1], [0x02, 0, 0, 0, 0, 2]].concat();
    let frame = [frame.as_slice(), &[0x88, 0xb5]].concat();
    let packet = glimpse_common::capture::CapturedPacket::from_packet(
        glimpse_common::capture::LinkType::Ethernet,
        now_ms() * 1000,
        glimpse_common::bounded::BoundedString::truncating("eth0"),
        &frame,
        64,
    );
    let capture = Record { observed_at_ms: now_ms(), body: RecordBody::Capture(packet) };
    let batches = 200u64;
    for seq in 1..=batches {
        let batch = Batch {
            org: device.identity.org.clone(),
            stream_seq: seq,
            records: BoundedVec::truncating(vec![capture.clone(); 3]),
        };
        assert_eq!(conn.send_batch(&batch).await.unwrap(), seq, "acknowledged, captures dropped");
    }
    conn.close().await;
    assert_eq!(tc.collector.metrics().captures_dropped_without_consent(), 3 * batches);
    let entries = tc.collector.store().audit().entries(None, 0, 100_000).unwrap();
    let drops = entries.iter().skip(before).filter(|e| e.action == "capture.receive").count();
    assert_eq!(drops, 1, "one entry for the first drop, the rest counted");

    let store = tc.collector.store().clone();
    let TestCollector { collector, .. } = tc;
    collector.shutdown().await;
    let entries = store.audit().entries(None, 0, 100_000).unwrap();
    let drops: Vec<_> = entries.iter().skip(before).filter(|e| e.action == "capture.receive").collect();
    assert_eq!(drops.len(), 2, "the first drop and one summary: {drops:#?}");
    assert!(
        drops[1].detail.starts_with(&format!(
            "{} more capture records dropped in {} more batches",
            3 * (batches - 1),
            batches - 1
        )),
        "{}",
        drops[1].detail
    );
    assert_eq!(drops[1].org.as_deref(), Some(device.identity.org.as_str()));
    store.audit().verify().expect("the audit chain verifies");
}
