//! Sites end to end over real HTTPS, against a real collector with real
//! agents connected over mutual TLS (issue 21, item 8):
//!
//! - a device's site comes from `glimpse-certs device --site` (its
//!   certificate's subject and its registration), and the device lists
//!   show it;
//! - an org-admin token limited to sites sees and acts on its sites'
//!   devices only: other devices are left out of lists and exports and
//!   refused by name (403), and what concerns the whole organisation
//!   (its decisions, grants, audit log, subject rights, tokens) is
//!   refused; every refusal is in the audit log under the token's name.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use glimpse_admin_client::ApiClient;
use glimpse_common::identity::AdminRole;
use glimpse_tests::*;

use glimpse_tests::api_call as call;

async fn get(client: &ApiClient, path: &str) -> (StatusCode, Value) {
    call(client, Method::GET, path, None).await
}

/// The body of an export (JSON lines), or the status it was refused with.
async fn export(client: &ApiClient, path: &str) -> Result<Vec<Value>, (StatusCode, String)> {
    let response = client.request(Method::GET, path).send().await.expect("request");
    let status = response.status();
    let text = response.text().await.expect("body");
    if !status.is_success() {
        return Err((status, text));
    }
    Ok(text.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect())
}

fn detail(problem: &Value) -> &str {
    problem["detail"].as_str().unwrap_or_default()
}

fn listed(list: &Value) -> Vec<(String, Value)> {
    let mut out: Vec<(String, Value)> = list["devices"]
        .as_array()
        .unwrap_or_else(|| panic!("{list}"))
        .iter()
        .map(|d| (d["device"].as_str().unwrap().to_owned(), d["site"].clone()))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_limited_admin_sees_and_acts_only_on_its_sites_devices() {
    init_logging();
    let org = "siteorg";
    let berlin = issue_device_at_site(org, "berlin");
    let paris = issue_device_at_site(org, "paris");
    let unsited = issue_device(org);
    let tc = TestCollector::start().await;
    let mut agents = Vec::new();
    for device in [&berlin, &paris, &unsited] {
        let agent = start_agent(tc.addr(), device);
        wait_for_status(&agent, "connected", |s| s.connected).await;
        wait_until("records stored", || tc.stored_records_of(&device.identity) > 0).await;
        agents.push(agent);
    }
    let admin_credentials = issue_admin(&tc, AdminRole::OrgAdmin, Some(org));
    let admin = api_client(&admin_credentials).await;
    let (b, p, u) = (berlin.identity.device.as_str(), paris.identity.device.as_str(), unsited.identity.device.as_str());

    // The organisation's admin sees every device, each with its site.
    let (status, all) = get(&admin, &format!("/api/v1/devices?org={org}")).await;
    assert_eq!(status, StatusCode::OK, "{all}");
    let mut expected =
        vec![(b.to_owned(), json!("berlin")), (p.to_owned(), json!("paris")), (u.to_owned(), Value::Null)];
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(listed(&all), expected, "{all}");
    let (_, connected) = get(&admin, &format!("/api/v1/orgs/{org}/devices")).await;
    assert_eq!(listed(&connected), expected, "{connected}");
    let (_, one) = get(&admin, &format!("/api/v1/orgs/{org}/devices/{p}")).await;
    assert_eq!(one["site"], "paris", "{one}");

    // Its registration was audited with the site.
    let audit = tc.collector.store().audit().entries(Some(org), 0, 100_000).unwrap();
    assert!(
        audit
            .iter()
            .any(|e| e.action == "device.register" && e.detail.contains(b) && e.detail.ends_with(" site berlin")),
        "{audit:?}"
    );

    // A token limited to Berlin. Bad site names are refused.
    let (status, _) = call(
        &admin,
        Method::POST,
        "/api/v1/tokens",
        Some(json!({"name": "bad", "role": "org-admin", "org": org, "sites": ["Not A Site"]})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, created) = call(
        &admin,
        Method::POST,
        "/api/v1/tokens",
        Some(json!({"name": "berlin-it", "role": "org-admin", "org": org, "sites": ["berlin"]})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{created}");
    assert_eq!(created["info"]["sites"], json!(["berlin"]), "{created}");
    let site_admin = api_client(&token_credentials(&tc, created["token"].as_str().unwrap())).await;
    let (_, me) = get(&site_admin, "/api/v1/whoami").await;
    assert_eq!((me["role"].as_str(), &me["sites"]), (Some("org-admin"), &json!(["berlin"])), "{me}");

    // Lists: Berlin's device only.
    let (status, mine) = get(&site_admin, &format!("/api/v1/devices?org={org}")).await;
    assert_eq!(status, StatusCode::OK, "{mine}");
    assert_eq!(listed(&mine), [(b.to_owned(), json!("berlin"))], "{mine}");
    let (_, mine) = get(&site_admin, &format!("/api/v1/orgs/{org}/devices")).await;
    assert_eq!(listed(&mine), [(b.to_owned(), json!("berlin"))], "{mine}");
    assert_eq!(get(&site_admin, &format!("/api/v1/orgs/{org}/devices/{b}")).await.0, StatusCode::OK);
    assert_eq!(get(&site_admin, &format!("/api/v1/orgs/{org}/devices/{b}/latest")).await.0, StatusCode::OK);

    // Another site's device, and one of no site, are refused by name.
    for device in [p, u] {
        for path in [
            format!("/api/v1/orgs/{org}/devices/{device}"),
            format!("/api/v1/orgs/{org}/devices/{device}/latest"),
            format!("/api/v1/orgs/{org}/devices/{device}/rates"),
        ] {
            let (status, problem) = get(&site_admin, &path).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {problem}");
            assert!(detail(&problem).contains(&format!("device {device} of {org} is not at the sites")), "{problem}");
        }
    }

    // Acting on a device: its own site's, yes; another's, no.
    let diagnostics = |device: &str| format!("/api/v1/orgs/{org}/devices/{device}/diagnostics");
    let (status, asked) = call(&site_admin, Method::POST, &diagnostics(b), None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{asked}");
    let (status, problem) = call(&site_admin, Method::POST, &diagnostics(p), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");
    let capture = json!({"device": p, "interface": "lo", "filter": "udp", "duration_secs": 10, "max_packets": 1});
    let (status, problem) =
        call(&site_admin, Method::POST, &format!("/api/v1/orgs/{org}/captures"), Some(capture)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");

    // Data: an export is of Berlin's records only; Paris's are refused.
    let base = format!("/api/v1/orgs/{org}/export");
    let lines = export(&site_admin, &base).await.expect("export allowed");
    assert!(!lines.is_empty());
    assert!(lines.iter().all(|l| l["device"] == b), "only the site's records");
    let everything = export(&admin, &base).await.unwrap();
    assert!(everything.iter().any(|l| l["device"] == p), "the other site's device has records");
    let (status, text) = export(&site_admin, &format!("{base}?device={p}")).await.unwrap_err();
    assert_eq!(status, StatusCode::FORBIDDEN, "{text}");

    // What concerns the whole organisation is refused.
    let subject = json!({"subject": {"kind": "mac", "value": "02:00:5e:10:00:01"}});
    let organisation_wide = [
        (Method::PUT, format!("/api/v1/orgs/{org}/consent"), Some(json!({"capture": true}))),
        (Method::POST, format!("/api/v1/orgs/{org}/support"), Some(json!({"hours": 1}))),
        (Method::DELETE, format!("/api/v1/orgs/{org}/support"), None),
        (Method::PUT, format!("/api/v1/orgs/{org}/retention"), Some(json!({"metadata_days": 30}))),
        (Method::POST, format!("/api/v1/orgs/{org}/subjects/export"), Some(subject.clone())),
        (Method::POST, format!("/api/v1/orgs/{org}/subjects/erase"), Some(subject)),
        (Method::GET, format!("/api/v1/audit?org={org}"), None),
        (Method::GET, format!("/api/v1/orgs/{org}/support/activity"), None),
        (Method::POST, "/api/v1/tokens".to_owned(), Some(json!({"name": "x", "role": "support", "org": org}))),
        (Method::GET, "/api/v1/tokens".to_owned(), None),
        (Method::DELETE, format!("/api/v1/orgs/{org}"), Some(json!({"confirm": org}))),
    ];
    for (method, path, body) in organisation_wide {
        let (status, problem) = call(&site_admin, method.clone(), &path, body).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {problem}");
    }
    let (_, status_now) = get(&admin, &format!("/api/v1/orgs/{org}")).await;
    assert_eq!(status_now["capture_consent"], false, "nothing changed: {status_now}");

    // The organisation's admin still does all of it; the audit log names
    // the token, its sites, and each refusal.
    assert_eq!(
        call(&admin, Method::POST, &diagnostics(p), None).await.0,
        StatusCode::ACCEPTED,
        "the whole organisation's admin acts on every site"
    );
    let audit = audit_of(&admin_credentials, &glimpse_common::identity::OrgId::new(org).unwrap()).await;
    let by_token: Vec<_> = audit.iter().filter(|e| e.actor.as_str().contains("sites berlin")).collect();
    assert!(
        by_token
            .iter()
            .any(|e| !e.refused && e.action.as_str() == "diagnostics.request" && e.detail.as_str().contains(b)),
        "{by_token:?}"
    );
    for action in ["diagnostics.request", "consent.set", "support.grant", "devices.show", "data.export"] {
        assert!(
            by_token.iter().any(|e| e.refused && e.action.as_str() == action),
            "refused {action} audited: {by_token:?}"
        );
    }
    let created = audit.iter().find(|e| e.action.as_str() == "token.create" && !e.refused).unwrap();
    assert!(created.detail.as_str().contains("sites berlin"), "{created:?}");

    // A console account limited to Paris: its session sees Paris only.
    let account = json!({"name": "paris-it", "role": "org-admin", "org": org,
        "password": CONSOLE_PASSWORD, "sites": ["paris"]});
    let (status, made) = call(&admin, Method::POST, "/api/v1/accounts", Some(account)).await;
    assert_eq!(status, StatusCode::OK, "{made}");
    assert_eq!(made["sites"], json!(["paris"]), "{made}");
    let browser = anonymous_api(&tc).await;
    let response = browser
        .request(Method::POST, "/console/api/session")
        .json(&json!({"name": "paris-it", "password": CONSOLE_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let cookie =
        response.headers()[reqwest::header::SET_COOKIE].to_str().unwrap().split(';').next().unwrap().to_owned();
    let as_console = |path: String| {
        let request = browser.request(Method::GET, &path).header(reqwest::header::COOKIE, cookie.clone());
        async move {
            let response = request.send().await.unwrap();
            let status = response.status();
            (status, response.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (status, theirs) = as_console(format!("/api/v1/devices?org={org}")).await;
    assert_eq!(status, StatusCode::OK, "{theirs}");
    assert_eq!(listed(&theirs), [(p.to_owned(), json!("paris"))], "{theirs}");
    let (status, problem) = as_console(format!("/api/v1/orgs/{org}/devices/{b}")).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");
    assert_eq!(as_console(format!("/api/v1/audit?org={org}")).await.0, StatusCode::FORBIDDEN);
    let (_, me) = as_console("/api/v1/whoami".to_owned()).await;
    assert_eq!(me["sites"], json!(["paris"]), "{me}");
    for agent in agents {
        agent.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_support_grant_limited_to_a_site_covers_that_sites_devices_only() {
    init_logging();
    let org = "sitegrantorg";
    let lyon = issue_device_at_site(org, "lyon");
    let nice = issue_device_at_site(org, "nice");
    let tc = TestCollector::start().await;
    let mut agents = Vec::new();
    for device in [&lyon, &nice] {
        let agent = start_agent(tc.addr(), device);
        wait_for_status(&agent, "connected", |s| s.connected).await;
        wait_until("records stored", || tc.stored_records_of(&device.identity) > 0).await;
        agents.push(agent);
    }
    let admin = api_client(&issue_admin(&tc, AdminRole::OrgAdmin, Some(org))).await;
    let support = api_client(&issue_admin(&tc, AdminRole::Support, Some(org))).await;
    let (l, n) = (lyon.identity.device.as_str(), nice.identity.device.as_str());
    let support_path = format!("/api/v1/orgs/{org}/support");

    let (status, _) = call(&admin, Method::POST, &support_path, Some(json!({"hours": 1, "sites": ["../lyon"]}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let body = json!({"hours": 2, "kinds": ["metadata"], "sites": ["lyon"]});
    let (status, granted) = call(&admin, Method::POST, &support_path, Some(body)).await;
    assert_eq!(status, StatusCode::OK, "{granted}");
    let (_, org_status) = get(&support, &format!("/api/v1/orgs/{org}")).await;
    assert_eq!(org_status["support_sites"], json!(["lyon"]), "{org_status}");
    assert_eq!(org_status["support_devices"], json!([]), "{org_status}");

    // Lists, views and exports: Lyon's device only.
    let (_, devices) = get(&support, &format!("/api/v1/devices?org={org}")).await;
    assert_eq!(listed(&devices), [(l.to_owned(), json!("lyon"))], "{devices}");
    assert_eq!(get(&support, &format!("/api/v1/orgs/{org}/devices/{l}/latest")).await.0, StatusCode::OK);
    let (status, problem) = get(&support, &format!("/api/v1/orgs/{org}/devices/{n}/latest")).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");
    assert!(detail(&problem).contains(&format!("does not include device {n}")), "{problem}");
    let base = format!("/api/v1/orgs/{org}/export");
    let lines = export(&support, &base).await.expect("export allowed");
    assert!(!lines.is_empty() && lines.iter().all(|line| line["device"] == l), "only Lyon's records");
    assert_eq!(export(&support, &format!("{base}?device={n}")).await.unwrap_err().0, StatusCode::FORBIDDEN);
    let (_, all) = get(&admin, &format!("/api/v1/devices?org={org}")).await;
    assert_eq!(all["devices"].as_array().unwrap().len(), 2, "the organisation's admin sees both: {all}");

    // A site with no device yet: nothing to see, and no export of everything.
    let body = json!({"hours": 1, "kinds": ["metadata"], "sites": ["empty-site"]});
    assert_eq!(call(&admin, Method::POST, &support_path, Some(body)).await.0, StatusCode::OK);
    let (_, devices) = get(&support, &format!("/api/v1/devices?org={org}")).await;
    assert!(listed(&devices).is_empty(), "{devices}");
    assert_eq!(export(&support, &base).await.unwrap_err().0, StatusCode::FORBIDDEN);

    // The grants' scopes, sites included, are in the audit log.
    let audit = tc.collector.store().audit().entries(Some(org), 0, 100_000).unwrap();
    let given: Vec<_> = audit.iter().filter(|e| e.action == "support.grant").map(|e| e.detail.as_str()).collect();
    assert!(given.iter().any(|d| d.contains("devices, metadata on all devices at sites lyon")), "{given:?}");
    assert!(
        audit.iter().any(|e| e.action == "devices.latest" && e.detail.contains("at sites lyon")),
        "reads under the grant name it: {audit:?}"
    );
    for agent in agents {
        agent.shutdown().await;
    }
}
