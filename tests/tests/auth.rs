//! Device authentication end to end: every way in that must fail, fails,
//! is logged and counted with its reason, and stores nothing; the one way
//! in that must work, works.

use std::sync::Arc;

use glimpse_collector::ingest::RejectReason;
use glimpse_common::identity::DeviceKind;
use glimpse_common::record::{DataKind, RecordBody};
use glimpse_tests::*;

const ORG: &str = "authorg";

fn days(n: i64) -> time::Duration {
    time::Duration::days(n)
}

async fn expect_refused(tc: &TestCollector, device: &Device, reason: RejectReason) {
    let before = tc.collector.metrics().rejections(reason);
    let result = try_connect(tc.addr(), device).await;
    assert!(result.is_err(), "{reason:?}: connection unexpectedly accepted");
    wait_until(&format!("rejection {reason:?} counted"), || tc.collector.metrics().rejections(reason) > before).await;
    assert_eq!(tc.stored_records_of(&device.identity), 0, "{reason:?}: records stored for a refused device");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registered_device_streams_and_plaintext_never_hits_disk() {
    init_logging();
    let device = issue_device(ORG);
    let tc = TestCollector::start().await;
    let marker = "ap-lobby-plaintext-marker-5c1e";
    let sysroot = ap_sysroot(marker);
    let agent =
        glimpse_agent::AgentHandle::spawn(agent_config_with_sysroot(tc.addr(), &device, sysroot.path())).unwrap();
    let status = wait_for_status(&agent, "3 batches acknowledged", |s| s.acked_seq >= 3).await;
    assert!(status.connected && status.acked_records >= 3);
    agent.shutdown().await;
    assert!(tc.stored_records_of(&device.identity) >= 3);

    // What the agent sent comes back intact through the organisation's key...
    let outcome = tc.collector.store().read(&device.identity.org, DataKind::Metadata, None, None).unwrap();
    let RecordBody::Metadata(meta) = &outcome.records[0].record.body else { panic!("metadata expected") };
    assert_eq!(meta.hostname.as_str(), marker);
    assert_eq!(meta.os_name.as_str(), "OpenWrt");
    let wlan = meta.interfaces.iter().find(|i| i.name.as_str() == "wlan0").expect("wlan0 reported");
    assert!(wlan.mac.is_some());
    // ...and is on disk only encrypted: neither the hostname nor the MAC
    // address appears in any file under the data directory.
    let mac = wlan.mac.unwrap().0;
    let mac_text = wlan.mac.unwrap().to_string();
    let needles: [&[u8]; 3] = [marker.as_bytes(), &mac, mac_text.as_bytes()];
    let files = tc.data_files();
    assert!(files.iter().any(|(p, _)| p.extension().is_some_and(|e| e == "seg")), "segments written");
    for (path, bytes) in files {
        for needle in needles {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "plaintext {:?} found in {}",
                String::from_utf8_lossy(needle),
                path.display()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_credential_is_refused_and_stores_nothing() {
    init_logging();
    let ours = pki().ours.clone();

    let expired = issue_device_in(
        &ours,
        ORG,
        DeviceKind::Ap,
        glimpse_certs::Validity {
            not_before: Some(time::OffsetDateTime::now_utc() - days(30)),
            not_after: Some(time::OffsetDateTime::now_utc() - days(1)),
        },
    );
    let not_yet_valid = issue_device_in(
        &ours,
        ORG,
        DeviceKind::Ap,
        glimpse_certs::Validity {
            not_before: Some(time::OffsetDateTime::now_utc() + days(2)),
            not_after: Some(time::OffsetDateTime::now_utc() + days(30)),
        },
    );
    let foreign = issue_device_in(&pki().foreign, ORG, DeviceKind::Ap, glimpse_certs::Validity::default());
    let revoked = issue_device(ORG);
    let unknown = issue_device(ORG);
    let mismatched = issue_device(ORG);
    {
        let _guard = pki().lock();
        glimpse_certs::revoke(&ours, &revoked.identity.org, &revoked.identity.device).unwrap();
        std::fs::remove_file(glimpse_certs::registration_path(&ours, &unknown.identity.org, &unknown.identity.device))
            .unwrap();
        // The registration now names another certificate than the one the device holds.
        let path = glimpse_certs::registration_path(&ours, &mismatched.identity.org, &mismatched.identity.device);
        let mut reg: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        reg["cert_serial"] = serde_json::Value::String("0123456789abcdef".into());
        std::fs::write(&path, serde_json::to_vec(&reg).unwrap()).unwrap();
    }
    let good = issue_device(ORG);
    let tc = TestCollector::start().await;

    expect_refused(&tc, &expired, RejectReason::Expired).await;
    // A certificate whose validity has not begun is a clock or issuing
    // mistake, not an old device: it is told apart.
    let expired_before = tc.collector.metrics().rejections(RejectReason::Expired);
    expect_refused(&tc, &not_yet_valid, RejectReason::NotYetValid).await;
    assert_eq!(tc.collector.metrics().rejections(RejectReason::Expired), expired_before, "not counted as expired");
    expect_refused(&tc, &foreign, RejectReason::UnknownIssuer).await;
    expect_refused(&tc, &revoked, RejectReason::Revoked).await;
    expect_refused(&tc, &unknown, RejectReason::UnknownDevice).await;
    expect_refused(&tc, &mismatched, RejectReason::RegistrationMismatch).await;

    // A stolen certificate without the shared key.
    let other_key = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(other_key.path(), format!("{}\n", "ab".repeat(32))).unwrap();
    let mut thief = good.clone();
    thief.shared_key = other_key.path().to_owned();
    expect_refused(&tc, &thief, RejectReason::WrongSharedKey).await;

    // A valid certificate whose Hello claims to be another device.
    let mut liar = agent_config(tc.addr(), &good);
    liar.identity.device = unique_device("someone-else");
    let before = tc.collector.metrics().rejections(RejectReason::Protocol);
    assert!(try_connect_with(liar).await.is_err());
    wait_until("identity mismatch counted", || tc.collector.metrics().rejections(RejectReason::Protocol) > before)
        .await;

    // No client certificate at all.
    let ca = glimpse_files::load_certs(&glimpse_certs::ca_cert_path(&ours)).unwrap().remove(0);
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).unwrap();
    let anonymous = rustls::ClientConfig::builder_with_provider(Arc::new(glimpse_common::tls::provider(false)))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let before = tc.collector.metrics().rejections(RejectReason::NoCertificate);
    if let Ok(mut stream) = raw_tls_with(tc.addr(), Arc::new(anonymous)).await {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 16];
        assert!(matches!(stream.read(&mut buf).await, Ok(0) | Err(_)), "anonymous client got data");
    }
    wait_until("no-certificate counted", || tc.collector.metrics().rejections(RejectReason::NoCertificate) > before)
        .await;

    // Through all of that, a good device is served normally.
    let agent = start_agent(tc.addr(), &good);
    wait_for_status(&agent, "good device acknowledged", |s| s.acked_seq >= 2).await;
    agent.shutdown().await;
    assert!(tc.stored_records_of(&good.identity) >= 2);
    for bad in [&expired, &not_yet_valid, &foreign, &revoked, &unknown, &mismatched] {
        assert_eq!(tc.stored_records_of(&bad.identity), 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_takes_effect_on_reload_without_restart() {
    init_logging();
    let device = issue_device(ORG);
    let tc = TestCollector::start().await;
    let conn = try_connect(tc.addr(), &device).await.expect("accepted before revocation");
    conn.close().await;
    {
        let _guard = pki().lock();
        glimpse_certs::revoke(&pki().ours, &device.identity.org, &device.identity.device).unwrap();
    }
    tc.collector.reload().expect("reload");
    expect_refused(&tc, &device, RejectReason::Revoked).await;
}
