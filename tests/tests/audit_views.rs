//! The audit log read through the API over real HTTPS: filtered by actor,
//! action, outcome and time, newest first with paging back; and what
//! support staff did under each support grant, on the collector's injected
//! clock (grants replaced, revoked and run out without sleeping).

use std::sync::Arc;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use glimpse_admin_client::ApiClient;
use glimpse_common::clock::{Clock, ManualClock, SystemClock};
use glimpse_common::identity::AdminRole;
use glimpse_tests::*;

use glimpse_tests::api_call as call;

const HOUR: i64 = 3_600_000;

async fn get(client: &ApiClient, path: &str) -> (StatusCode, Value) {
    call(client, Method::GET, path, None).await
}

fn seqs(entries: &Value) -> Vec<u64> {
    entries.as_array().unwrap().iter().map(|e| e["seq"].as_u64().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn support_activity_is_filed_per_grant_and_the_audit_log_filters() {
    let clock = Arc::new(ManualClock::new(SystemClock.now_millis()));
    let tc = TestCollector::start_with_clock(clock.clone()).await;
    let admin = api_client(&issue_admin(&tc, AdminRole::OrgAdmin, Some("acme"))).await;
    let support = api_client(&issue_admin(&tc, AdminRole::Support, Some("acme"))).await;
    let operator = api_client(&issue_admin(&tc, AdminRole::Operator, None)).await;
    let outsider = api_client(&issue_admin(&tc, AdminRole::OrgAdmin, Some("globex"))).await;
    let t0 = clock.now_millis();

    // Refused before any grant; allowed under one; the first grant is
    // replaced by a longer one an hour later, which is then revoked.
    assert_eq!(get(&support, "/api/v1/orgs/acme").await.0, StatusCode::FORBIDDEN);
    let (status, granted) = call(&admin, Method::POST, "/api/v1/orgs/acme/support", Some(json!({"hours": 2}))).await;
    assert_eq!(status, StatusCode::OK, "{granted}");
    assert_eq!(get(&support, "/api/v1/orgs/acme").await.0, StatusCode::OK);
    clock.advance(HOUR);
    assert_eq!(
        call(&admin, Method::POST, "/api/v1/orgs/acme/support", Some(json!({"hours": 4, "kinds": ["captures"]})))
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(get(&support, "/api/v1/orgs/acme").await.0, StatusCode::OK);
    assert_eq!(get(&support, "/api/v1/orgs/acme/captures").await.0, StatusCode::OK);
    clock.advance(HOUR);
    assert_eq!(call(&admin, Method::DELETE, "/api/v1/orgs/acme/support", None).await.0, StatusCode::OK);
    assert_eq!(get(&support, "/api/v1/orgs/acme").await.0, StatusCode::FORBIDDEN);
    // A third grant that runs out by itself.
    assert_eq!(
        call(&admin, Method::POST, "/api/v1/orgs/acme/support", Some(json!({"hours": 1}))).await.0,
        StatusCode::OK
    );
    clock.advance(2 * HOUR);
    assert_eq!(get(&support, "/api/v1/orgs/acme").await.0, StatusCode::FORBIDDEN);

    let (status, activity) = get(&admin, "/api/v1/orgs/acme/support/activity").await;
    assert_eq!(status, StatusCode::OK, "{activity}");
    assert_eq!(activity["now_ms"].as_i64(), Some(t0 + 4 * HOUR));
    let grants = activity["grants"].as_array().unwrap();
    assert_eq!(grants.len(), 3, "{activity}");
    let hours: Vec<u64> = grants.iter().map(|g| g["hours"].as_u64().unwrap()).collect();
    assert_eq!(hours, vec![1, 4, 2], "newest first");
    assert!(grants.iter().all(|g| g["active"] == false), "{activity}");
    assert!(grants[0]["ended_at_ms"].is_null(), "the last grant ran out by itself");
    assert_eq!(grants[1]["ended_at_ms"].as_i64(), Some(t0 + 2 * HOUR), "revoked");
    assert_eq!(grants[2]["ended_at_ms"].as_i64(), Some(t0 + HOUR), "replaced");
    assert!(grants[2]["ended_by"].as_str().unwrap().contains("org-admin of acme"));
    let actions = |g: &Value| -> Vec<String> {
        g["actions"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap().to_owned()).collect()
    };
    assert_eq!(actions(&grants[2]), vec!["org.status"]);
    assert_eq!(actions(&grants[1]), vec!["org.status", "capture.list"]);
    assert!(actions(&grants[0]).is_empty());
    let refused = activity["refused_outside_grants"].as_array().unwrap();
    assert_eq!(refused.len(), 3, "{activity}");
    assert!(refused.iter().all(|e| e["refused"] == true && e["actor"].as_str().unwrap().contains("support of acme")));

    // Another organisation's admin may not read it (and that is audited).
    assert_eq!(get(&outsider, "/api/v1/orgs/acme/support/activity").await.0, StatusCode::FORBIDDEN);

    // The audit log, filtered on the collector.
    let (status, page) = get(&admin, "/api/v1/audit?org=acme&action=support&newest_first=true").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let entries = page["entries"].as_array().unwrap();
    let names: Vec<&str> = entries.iter().map(|e| e["action"].as_str().unwrap()).collect();
    // `support` is the action and its sub-actions: the two reads of the
    // activity above are in it too.
    assert_eq!(
        names,
        vec![
            "support.activity",
            "support.activity",
            "support.grant",
            "support.revoke",
            "support.grant",
            "support.grant"
        ],
        "{page}"
    );
    assert_eq!(entries[0]["refused"], true, "the other organisation's read was refused");
    let (_, page) = get(&admin, "/api/v1/audit?org=acme&actor=SUPPORT%20OF&outcome=refused").await;
    assert_eq!(page["entries"].as_array().unwrap().len(), 3, "{page}");
    // Only what happened in the second hour.
    let window = format!("/api/v1/audit?org=acme&from_ms={}&to_ms={}", t0 + HOUR, t0 + 2 * HOUR);
    let (_, page) = get(&admin, &window).await;
    let names: Vec<&str> = page["entries"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["support.grant", "org.status", "capture.list"], "{page}");

    // Newest first, one at a time, paging back with next_before_seq.
    let (_, first) = get(&admin, "/api/v1/audit?org=acme&newest_first=true&limit=2").await;
    let before = first["next_before_seq"].as_u64().expect("a full page says where to go on");
    let (_, second) =
        get(&admin, &format!("/api/v1/audit?org=acme&newest_first=true&limit=2&before_seq={before}")).await;
    let (a, b) = (seqs(&first["entries"]), seqs(&second["entries"]));
    assert!(a[0] > a[1] && a[1] > b[0] && b[0] > b[1], "{a:?} then {b:?}");
    assert_eq!(b[0], a[1] - 1);

    // Bad filters are refused with a problem document; the whole log is for
    // operators.
    for bad in
        ["/api/v1/audit?org=acme&outcome=maybe", "/api/v1/audit?org=acme&limit=0", "/api/v1/audit?org=acme&colour=red"]
    {
        let (status, problem) = get(&admin, bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {problem}");
    }
    let long = format!("/api/v1/audit?org=acme&actor={}", "a".repeat(200));
    assert_eq!(get(&admin, &long).await.0, StatusCode::BAD_REQUEST);
    assert_eq!(get(&admin, "/api/v1/audit?action=support").await.0, StatusCode::FORBIDDEN);
    let (status, all) = get(&operator, "/api/v1/audit?action=support.activity&outcome=refused").await;
    assert_eq!(status, StatusCode::OK);
    let refusal = &all["entries"][0];
    assert!(refusal["actor"].as_str().unwrap().contains("org-admin of globex"), "{all}");
}
