//! Admin and support certificates end to end: issued certificates are
//! recorded by `glimpse-certs` and imported by the collector, listed with
//! their expiry and last use through the HTTPS API, and revoked either at
//! once through the API (refused on the next request) or with
//! `glimpse-certs revoke-admin` and a reload (refused in the TLS
//! handshake, from the CRL).

use glimpse_admin_client::{admin_request, AdminClientError, AdminCredentials, ApiClient};
use glimpse_api::Problem;
use glimpse_common::identity::{AdminRole, OrgId};
use glimpse_common::wire::admin::{AdminAction, AdminReply};
use glimpse_store::audit::AuditOutcome;
use glimpse_tests::*;

fn serial_of(who: &AdminCredentials) -> String {
    let der = glimpse_files::load_certs(&who.cert).expect("certificate").remove(0);
    glimpse_certs::serial_hex_of(&der).expect("serial")
}

async fn org_status(who: &AdminCredentials, org: &OrgId) -> Result<AdminReply, String> {
    admin_request(who, AdminAction::OrgStatus { org: org.clone() }).await.map_err(|e| e.to_string())
}

fn problem(result: Result<serde_json::Value, AdminClientError>) -> Problem {
    match result {
        Err(AdminClientError::Problem(problem)) => problem,
        other => panic!("expected a problem document, got {other:?}"),
    }
}

async fn revoke(client: &ApiClient, serial: &str) -> Result<serde_json::Value, AdminClientError> {
    let path = format!("/api/v1/identities/admins/{serial}/revoke");
    client.send(reqwest::Method::POST, &path, None::<&()>).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_revoked_through_the_api_is_refused_on_its_next_request() {
    init_logging();
    let org = OrgId::new("identitiesorg").unwrap();
    let tc = TestCollector::start().await;
    let operator_credentials = issue_admin(&tc, AdminRole::Operator, None);
    let operator = ApiClient::new(&operator_credentials).await.unwrap();
    let alice_credentials = issue_admin(&tc, AdminRole::OrgAdmin, Some(org.as_str()));
    let serial = serial_of(&alice_credentials);
    let alice = ApiClient::new(&alice_credentials).await.unwrap();
    let outsider = ApiClient::new(&issue_admin(&tc, AdminRole::OrgAdmin, Some("elsewhere"))).await.unwrap();

    // Issued after the collector started, so not imported yet: its first
    // request records it, with its last use.
    let whoami: serde_json::Value = alice.get("/api/v1/whoami").await.unwrap();
    assert_eq!(whoami["role"], "org-admin");
    let admins = tc.collector.store().admins();
    wait_until("alice's certificate recorded on first use", || admins.get(&serial).is_some()).await;
    let listed: serde_json::Value = operator.get("/api/v1/identities/admins").await.unwrap();
    let entry = listed["admins"].as_array().unwrap().iter().find(|a| a["serial"] == serial.as_str()).cloned();
    let entry = entry.unwrap_or_else(|| panic!("{listed:#}"));
    assert_eq!((entry["role"].as_str(), entry["org"].as_str()), (Some("org-admin"), Some(org.as_str())));
    assert_eq!(entry["revoked"], false);
    assert!(entry["last_used_ms"].is_i64(), "{entry:#}");
    // An org-admin sees its organisation's certificates only.
    let own: serde_json::Value = alice.get("/api/v1/identities/admins").await.unwrap();
    assert!(own["admins"].as_array().unwrap().iter().all(|a| a["org"] == org.as_str()), "{own:#}");
    assert!(own["admins"].as_array().unwrap().iter().any(|a| a["serial"] == serial.as_str()));

    // Another organisation's admin may not revoke it; an unknown serial is 404.
    assert_eq!(problem(revoke(&outsider, &serial).await).code, "forbidden");
    assert_eq!(problem(revoke(&operator, "0abc").await).code, "not-found");
    let _: serde_json::Value = alice.get("/api/v1/whoami").await.expect("still allowed");

    // The operator revokes it: the very next request is refused.
    let revoked = revoke(&operator, &serial).await.unwrap();
    assert_eq!((revoked["was_active"].as_bool(), revoked["admin"]["revoked"].as_bool()), (Some(true), Some(true)));
    assert!(admins.is_revoked(&serial));
    assert!(revoked["connections_closed"].as_u64() >= Some(1), "alice's open connection is cut: {revoked:#}");
    let refused = problem(alice.get("/api/v1/whoami").await);
    assert_eq!(refused.status, 401, "{refused:?}");
    assert!(refused.detail.contains("revoked"), "{refused:?}");
    // A fresh client (a new connection) is refused too.
    let again = ApiClient::new(&alice_credentials).await.unwrap();
    assert_eq!(problem(again.get::<serde_json::Value>("/api/v1/whoami").await).status, 401);
    assert_eq!(revoke(&operator, &serial).await.unwrap()["was_active"], false);

    let audit = tc.collector.store().audit().entries(Some(org.as_str()), 0, usize::MAX).unwrap();
    assert_eq!(
        audit.iter().filter(|e| e.action == "identity.revoke" && e.detail.contains(&serial)).count(),
        2,
        "{audit:#?}"
    );
    assert!(audit.iter().any(|e| e.action == "identity.revoke" && e.outcome == AuditOutcome::Refused));

    // A restart keeps the revocation and the last uses (written at shutdown).
    let operator_serial = serial_of(&operator_credentials);
    let used = admins.get(&operator_serial).and_then(|a| a.last_used_ms);
    assert!(used.is_some());
    let (dir, config) = tc.stop_keeping_files().await;
    let config = glimpse_collector::config::CollectorConfig::load(&config).unwrap();
    // PKI files are replaced by renames, so the import reads whole files
    // even while another test issues.
    let collector = glimpse_collector::Collector::start(config).await.unwrap();
    assert!(collector.store().admins().is_revoked(&serial));
    assert_eq!(collector.store().admins().get(&operator_serial).and_then(|a| a.last_used_ms), used);
    let moved = AdminCredentials { address: collector.admin_addr().unwrap().to_string(), ..alice_credentials };
    let after = ApiClient::new(&moved).await.unwrap();
    assert_eq!(problem(after.get::<serde_json::Value>("/api/v1/whoami").await).status, 401);
    collector.shutdown().await;
    drop(dir);
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
