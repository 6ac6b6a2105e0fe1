//! The web console's sign-in over real HTTPS against a real collector:
//! the embedded pages and their security headers, Argon2id accounts,
//! session cookies (`__Host-`, `Secure`, `HttpOnly`, `SameSite=Strict`)
//! that the `/api/v1` endpoints accept with the same role and organisation
//! scope as certificates, CSRF tokens required on every change, lockout
//! after repeated failures and session expiry on the collector's injected
//! clock, and every sign-in, failure and sign-out in the audit log.

use std::sync::Arc;

use reqwest::{header, Method, StatusCode};
use serde_json::{json, Value};

use glimpse_admin_client::ApiClient;
use glimpse_common::clock::{Clock, ManualClock, SystemClock};
use glimpse_common::identity::{AdminIdentity, AdminName, AdminRole, OrgId};
use glimpse_tests::*;

const PASSWORD: &str = "a long enough passphrase";

fn add_account(tc: &TestCollector, name: &str, role: AdminRole, org: Option<&str>) {
    let console = tc.collector.api().and_then(|api| api.console.clone()).expect("console enabled");
    let identity =
        AdminIdentity::new(AdminName::new(name).unwrap(), role, org.map(|o| OrgId::new(o).unwrap())).unwrap();
    let now = tc.collector.store().clock().now_millis();
    console.accounts.create(&identity, PASSWORD, "test", now).expect("account created");
}

/// A browser's view: the session cookie (if any) and its CSRF token.
#[derive(Default)]
struct Browser {
    cookie: Option<String>,
    csrf: Option<String>,
}

async fn send(
    client: &ApiClient,
    browser: &Browser,
    method: Method,
    path: &str,
    body: Option<Value>,
    extra: &[(&str, &str)],
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let mut request = client.request(method, path);
    if let Some(cookie) = &browser.cookie {
        request = request.header(header::COOKIE, cookie);
    }
    for (name, value) in extra {
        request = request.header(*name, *value);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request sent");
    let (status, headers) = (response.status(), response.headers().clone());
    let text = response.text().await.unwrap_or_default();
    (status, headers, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn sign_in(client: &ApiClient, name: &str, password: &str) -> (StatusCode, Browser, Value) {
    let (status, headers, body) = send(
        client,
        &Browser::default(),
        Method::POST,
        "/console/api/session",
        Some(json!({"name": name, "password": password})),
        &[],
    )
    .await;
    let cookie = headers
        .get(header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or_default().to_owned());
    let csrf = body["csrf"].as_str().map(str::to_owned);
    (status, Browser { cookie, csrf }, body)
}

fn audit_actions(tc: &TestCollector) -> Vec<(String, String, String)> {
    tc.collector
        .store()
        .audit()
        .entries(None, 0, 10_000)
        .unwrap()
        .into_iter()
        .map(|e| (e.actor.clone(), e.action.clone(), format!("{:?}", e.outcome)))
        .collect()
}

#[tokio::test]
async fn the_console_is_served_from_the_binary_with_a_strict_policy() {
    init_logging();
    let tc = TestCollector::start().await;
    let client = anonymous_api(&tc).await;
    let (status, headers, _) = send(&client, &Browser::default(), Method::GET, "/console/", None, &[]).await;
    assert_eq!(status, StatusCode::OK);
    let csp = headers.get(header::CONTENT_SECURITY_POLICY).unwrap().to_str().unwrap();
    assert!(csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(headers.get(header::X_FRAME_OPTIONS).unwrap(), "DENY");
    for file in ["app.js", "app.css"] {
        let (status, _, _) =
            send(&client, &Browser::default(), Method::GET, &format!("/console/{file}"), None, &[]).await;
        assert_eq!(status, StatusCode::OK, "{file}");
    }
    let (status, _, _) = send(&client, &Browser::default(), Method::GET, "/console/nothing.js", None, &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Without a session the API refuses, and the session endpoint says so.
    let (status, _, _) = send(&client, &Browser::default(), Method::GET, "/console/api/session", None, &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_session_acts_with_its_accounts_scope_and_every_change_needs_its_csrf_token() {
    init_logging();
    let tc = TestCollector::start().await;
    add_account(&tc, "ada", AdminRole::OrgAdmin, Some("acme"));
    let client = anonymous_api(&tc).await;

    let (status, browser, _) = sign_in(&client, "ada", "not the passphrase").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(browser.cookie.is_none());
    // An unknown name gets the same answer as a wrong password.
    let (status, _, body) = sign_in(&client, "nobody", PASSWORD).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["detail"], "wrong account name or password");

    let (status, headers, body) = send(
        &client,
        &Browser::default(),
        Method::POST,
        "/console/api/session",
        Some(json!({"name": "ada", "password": PASSWORD})),
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let set_cookie = headers.get(header::SET_COOKIE).unwrap().to_str().unwrap().to_owned();
    for part in ["__Host-glimpse_session=", "Secure", "HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set_cookie.contains(part), "{set_cookie}");
    }
    assert_eq!(body["role"], "org-admin");
    let browser = Browser {
        cookie: Some(set_cookie.split(';').next().unwrap().to_owned()),
        csrf: body["csrf"].as_str().map(str::to_owned),
    };
    let csrf = browser.csrf.clone().unwrap();

    let (status, _, whoami) = send(&client, &browser, Method::GET, "/api/v1/whoami", None, &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!((whoami["name"].as_str(), whoami["via"].as_str()), (Some("ada"), Some("console")));
    let (status, _, _) = send(&client, &browser, Method::GET, "/api/v1/orgs/acme", None, &[]).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = send(&client, &browser, Method::GET, "/api/v1/orgs/globex", None, &[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "an org-admin of acme cannot see globex");

    let consent = Some(json!({"capture": true}));
    let (status, _, body) =
        send(&client, &browser, Method::PUT, "/api/v1/orgs/acme/consent", consent.clone(), &[]).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::FORBIDDEN, Some("csrf-refused")));
    let wrong = [("x-csrf-token", "0000")];
    let (status, _, _) =
        send(&client, &browser, Method::PUT, "/api/v1/orgs/acme/consent", consent.clone(), &wrong).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let cross = [("x-csrf-token", csrf.as_str()), ("sec-fetch-site", "cross-site")];
    let (status, _, _) =
        send(&client, &browser, Method::PUT, "/api/v1/orgs/acme/consent", consent.clone(), &cross).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a request from another site is refused even with the token");
    let right = [("x-csrf-token", csrf.as_str()), ("sec-fetch-site", "same-origin")];
    let (status, _, body) = send(&client, &browser, Method::PUT, "/api/v1/orgs/acme/consent", consent, &right).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let (status, _, _) = send(&client, &browser, Method::DELETE, "/console/api/session", None, &[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "signing out needs the token too");
    let (status, headers, _) = send(&client, &browser, Method::DELETE, "/console/api/session", None, &right).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(headers.get(header::SET_COOKIE).unwrap().to_str().unwrap().contains("Max-Age=0"));
    let (status, _, _) = send(&client, &browser, Method::GET, "/api/v1/whoami", None, &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the cookie is dead after sign-out");

    let audit = audit_actions(&tc);
    let has = |actor: &str, action: &str, outcome: &str| {
        audit.iter().any(|(a, b, c)| a.starts_with(actor) && b == action && c == outcome)
    };
    assert!(has("console:ada", "console.sign-in", "Refused"), "{audit:?}");
    assert!(has("console:ada", "console.sign-in", "Done"), "{audit:?}");
    assert!(has("console:ada", "consent.set", "Done"), "{audit:?}");
    assert!(has("console:ada", "console.sign-out", "Done"), "{audit:?}");
    assert!(has("peer:", "console.sign-in", "Refused"), "an unknown name is audited by source: {audit:?}");
}

#[tokio::test]
async fn accounts_lock_after_repeated_failures_and_sessions_expire_on_the_collectors_clock() {
    init_logging();
    let clock = Arc::new(ManualClock::new(SystemClock.now_millis()));
    let tc = TestCollector::start_with_clock(clock.clone()).await;
    add_account(&tc, "olga", AdminRole::Operator, None);
    let client = anonymous_api(&tc).await;

    for _ in 0..5 {
        let (status, _, _) = sign_in(&client, "olga", "wrong wrong wrong").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, _, body) = sign_in(&client, "olga", PASSWORD).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::FORBIDDEN, Some("account-locked")), "{body}");
    clock.advance(16 * 60_000);
    let (status, browser, body) = sign_in(&client, "olga", PASSWORD).await;
    assert_eq!(status, StatusCode::OK, "unlocked after the lockout: {body}");

    // Idle for 29 minutes: still signed in; then 31 more: signed out.
    clock.advance(29 * 60_000);
    let (status, _, _) = send(&client, &browser, Method::GET, "/api/v1/whoami", None, &[]).await;
    assert_eq!(status, StatusCode::OK);
    clock.advance(31 * 60_000);
    let (status, _, body) = send(&client, &browser, Method::GET, "/api/v1/whoami", None, &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body["detail"].as_str().unwrap().contains("without use"), "{body}");

    // Used every 20 minutes, a session still ends 12 hours after sign-in.
    let (_, browser, _) = sign_in(&client, "olga", PASSWORD).await;
    for _ in 0..36 {
        clock.advance(20 * 60_000);
        let (status, _, _) = send(&client, &browser, Method::GET, "/api/v1/whoami", None, &[]).await;
        assert_eq!(status, StatusCode::OK);
    }
    clock.advance(60_000);
    let (status, _, body) = send(&client, &browser, Method::GET, "/api/v1/whoami", None, &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body["detail"].as_str().unwrap().contains("maximum lifetime"), "{body}");
}

/// The first account is made with the collector stopped, by
/// `glimpse-collector account add`, and signs in once it runs.
// The PKI lock only keeps PKI writers of other test threads out while
// registrations are imported at start; nothing in this runtime waits on it.
#[allow(clippy::await_holding_lock)]
#[tokio::test]
async fn the_account_command_makes_an_account_that_signs_in() {
    init_logging();
    const COLLECTOR: &str = env!("CARGO_BIN_EXE_collector-under-test");
    let dir = tempfile::tempdir().unwrap();
    let master = dir.path().join("master.key");
    glimpse_store::keys::MasterKey::generate_file(&master).unwrap();
    let config_path = dir.path().join("collector.toml");
    std::fs::write(&config_path, collector_toml(&dir.path().join("data"), &master, 0)).unwrap();
    let password_file = dir.path().join("password");
    std::fs::write(&password_file, format!("{PASSWORD}\n")).unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(COLLECTOR).args(args).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let config = config_path.to_str().unwrap();
    let pw = password_file.to_str().unwrap();
    let (code, stdout, stderr) =
        run(&["account", "add", "root-op", "--role", "operator", "--password-file", pw, "--config", config]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let (code, _, stderr) =
        run(&["account", "add", "x", "--role", "org-admin", "--password-file", pw, "--config", config]);
    assert_eq!(code, Some(64), "an org-admin needs an organisation: {stderr}");
    std::fs::write(&password_file, "short\n").unwrap();
    let (code, _, stderr) =
        run(&["account", "add", "y", "--role", "support", "--org", "acme", "--password-file", pw, "--config", config]);
    assert_eq!(code, Some(64), "{stderr}");
    assert!(stderr.contains("at least 12"), "{stderr}");
    let (code, stdout, _) = run(&["account", "list", "--config", config]);
    assert_eq!(code, Some(0));
    assert!(stdout.contains("root-op\toperator\t-"), "{stdout}");

    let loaded = glimpse_collector::config::CollectorConfig::load(&config_path).unwrap();
    let collector = {
        let _guard = pki().lock();
        glimpse_collector::service::Collector::start_with_clock(loaded, Arc::new(SystemClock)).await.unwrap()
    };
    let address = collector.admin_addr().unwrap().to_string();
    let client = ApiClient::anonymous(&address, "localhost", &glimpse_certs::ca_cert_path(&pki().ours)).await.unwrap();
    let (status, browser, body) = sign_in(&client, "root-op", PASSWORD).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _, whoami) = send(&client, &browser, Method::GET, "/api/v1/whoami", None, &[]).await;
    assert_eq!((status, whoami["role"].as_str()), (StatusCode::OK, Some("operator")));
    collector.shutdown().await;
}
