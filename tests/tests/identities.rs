//! Admin and support certificates end to end: issued certificates are
//! recorded by `glimpse-certs` and imported by the collector, listed with
//! their expiry and last use, and revoked either at once in the collector
//! (refused on the next request) or with `glimpse-certs revoke-admin` and a
//! reload (refused in the TLS handshake, from the CRL).

use glimpse_admin_client::{admin_request, AdminCredentials};
use glimpse_common::identity::{AdminRole, OrgId};
use glimpse_common::wire::admin::{AdminAction, AdminReply};
use glimpse_tests::*;

fn serial_of(who: &AdminCredentials) -> String {
    let der = glimpse_files::load_certs(&who.cert).expect("certificate").remove(0);
    glimpse_certs::serial_hex_of(&der).expect("serial")
}

async fn org_status(who: &AdminCredentials, org: &OrgId) -> Result<AdminReply, String> {
    admin_request(who, AdminAction::OrgStatus { org: org.clone() }).await.map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_revoked_in_the_collector_is_refused_on_its_next_request() {
    init_logging();
    let org = OrgId::new("identitiesorg").unwrap();
    let tc = TestCollector::start().await;
    let alice = issue_admin(&tc, AdminRole::OrgAdmin, Some(org.as_str()));
    let serial = serial_of(&alice);
    let admins = tc.collector.store().admins();

    // Issued after the collector started, so it is not imported yet: its
    // first request records it, with its expiry and last use.
    assert!(admins.get(&serial).is_none());
    assert!(matches!(org_status(&alice, &org).await, Ok(AdminReply::OrgStatus { .. })));
    let record = admins.get(&serial).expect("recorded on first use");
    assert_eq!((record.role.as_str(), record.org.as_deref()), ("org-admin", Some(org.as_str())));
    assert!(record.last_used_ms.is_some() && record.not_after_ms.is_some() && !record.revoked);
    assert!(admins.list().iter().any(|r| r.serial == serial));

    // Revoked through the store (as the API does): the very next request
    // is refused, and the refusal is audited.
    let now = tc.collector.store().clock().now_millis();
    let (revoked, changed) = admins.revoke(&serial, now).unwrap();
    assert!(changed && revoked.revoked);
    assert!(admins.is_revoked(&serial));
    match org_status(&alice, &org).await {
        Ok(AdminReply::Refused(reason)) => assert!(reason.as_str().contains("revoked"), "{reason}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    let audit = tc.collector.store().audit().entries(Some(org.as_str()), 0, usize::MAX).unwrap();
    assert!(
        audit.iter().any(|e| e.action == "admin.connect" && e.detail.contains(&serial) && e.detail.contains("revoked")),
        "{audit:#?}"
    );
    // Another admin is not affected.
    let bob = issue_admin(&tc, AdminRole::OrgAdmin, Some(org.as_str()));
    assert!(matches!(org_status(&bob, &org).await, Ok(AdminReply::OrgStatus { .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_admin_in_the_pki_and_a_reload_refuse_the_certificate_in_the_handshake() {
    init_logging();
    let org = OrgId::new("pkirevokeorg").unwrap();
    let tc = TestCollector::start().await;
    let carol = issue_admin(&tc, AdminRole::Support, Some(org.as_str()));
    let serial = serial_of(&carol);

    // A reload imports admins.json: the certificate is listed before use.
    tc.collector.reload().unwrap();
    let listed = tc.collector.store().admins().get(&serial).expect("imported");
    assert_eq!((listed.role.as_str(), listed.revoked, listed.last_used_ms), ("support", false, None));
    assert!(org_status(&carol, &org).await.is_ok());

    let revoked = {
        let _guard = pki().lock();
        glimpse_certs::revoke_admin(&pki().ours, &glimpse_certs::AdminSelector::Serial(serial.clone())).unwrap()
    };
    assert_eq!(revoked.len(), 1);
    tc.collector.reload().unwrap();
    assert!(tc.collector.store().admins().is_revoked(&serial));
    let err = org_status(&carol, &org).await.expect_err("refused in the TLS handshake");
    assert!(!err.is_empty());
    let audit = tc.collector.store().audit().entries(Some(org.as_str()), 0, usize::MAX).unwrap();
    assert_eq!(
        audit.iter().filter(|e| e.action == "admin.revoke" && e.detail.contains(&serial)).count(),
        1,
        "{audit:#?}"
    );
    // A second reload changes nothing and audits nothing more.
    tc.collector.reload().unwrap();
    let audit = tc.collector.store().audit().entries(Some(org.as_str()), 0, usize::MAX).unwrap();
    assert_eq!(audit.iter().filter(|e| e.action == "admin.revoke").count(), 1);
}
