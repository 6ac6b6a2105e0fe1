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
use glimpse_common::identity::{AdminIdentity, AdminName, AdminRole};
use glimpse_tests::*;

const PASSWORD: &str = CONSOLE_PASSWORD;

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
    add_console_account(&tc, "ada", AdminRole::OrgAdmin, Some("acme"));
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
    add_console_account(&tc, "olga", AdminRole::Operator, None);
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
    let (code, stdout, stderr) = run(&["account", "reset", "root-op", "--config", config]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let (code, _, _) = run(&["account", "reset", "nobody", "--config", config]);
    assert_eq!(code, Some(64), "no such account");

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

/// Same-origin headers with the browser's CSRF token, as the pages send.
fn same_origin(browser: &Browser) -> Vec<(&'static str, String)> {
    vec![("x-csrf-token", browser.csrf.clone().unwrap_or_default()), ("sec-fetch-site", "same-origin".to_owned())]
}

async fn change(
    client: &ApiClient,
    browser: &Browser,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let headers = same_origin(browser);
    let extra: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let (status, _, body) = send(client, browser, method, path, body, &extra).await;
    (status, body)
}

async fn sign_in_with_code(client: &ApiClient, name: &str, password: &str, code: &str) -> (StatusCode, Browser, Value) {
    let (status, headers, body) = send(
        client,
        &Browser::default(),
        Method::POST,
        "/console/api/session",
        Some(json!({"name": name, "password": password, "code": code})),
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

fn has_entry(tc: &TestCollector, actor: &str, action: &str, outcome: &str) -> bool {
    audit_actions(tc).iter().any(|(a, b, c)| a.starts_with(actor) && b == action && c == outcome)
}

#[tokio::test]
async fn totp_enrolment_then_sign_in_needs_a_fresh_code_and_wrong_codes_lock_the_account() {
    init_logging();
    let clock = Arc::new(ManualClock::new(SystemClock.now_millis()));
    let tc = TestCollector::start_with_clock(clock.clone()).await;
    add_console_account(&tc, "ada", AdminRole::OrgAdmin, Some("acme"));
    add_console_account(&tc, "olga", AdminRole::Operator, None);
    let client = anonymous_api(&tc).await;

    let (status, browser, _) = sign_in(&client, "ada", PASSWORD).await;
    assert_eq!(status, StatusCode::OK);
    // Set-up needs the CSRF token like every change.
    let (status, _, _) = send(&client, &browser, Method::POST, "/console/api/totp", None, &[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, setup) = change(&client, &browser, Method::POST, "/console/api/totp", None).await;
    assert_eq!(status, StatusCode::OK, "{setup}");
    let secret = setup["secret"].as_str().unwrap().to_owned();
    let uri = setup["uri"].as_str().unwrap();
    assert!(uri.starts_with("otpauth://totp/Glimpse:ada?secret=") && uri.contains(&secret), "{uri}");
    let key = base32_decode(&secret);
    assert_eq!(key.len(), 32);
    // At rest the key is sealed: neither its base32 nor its hex is in the row.
    let row = tc.collector.store().control().state("console-account:ada").unwrap().unwrap();
    assert!(!row.contains(&secret) && !row.contains(&hex_of(&key)), "{row}");
    assert!(row.contains("totp_pending"), "{row}");

    // Not on until confirmed: sign-in still works without a code.
    let (status, _, _) = sign_in(&client, "ada", PASSWORD).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) =
        change(&client, &browser, Method::PUT, "/console/api/totp", Some(json!({"code": "000000"}))).await;
    let wrong =
        if totp_code_for(&key, clock.now_millis()) == "000000" { StatusCode::OK } else { StatusCode::FORBIDDEN };
    assert_eq!(status, wrong, "{body}");
    let now = clock.now_millis();
    let (status, body) =
        change(&client, &browser, Method::PUT, "/console/api/totp", Some(json!({"code": totp_code_for(&key, now)})))
            .await;
    assert_eq!((status, body["enabled"].as_bool()), (StatusCode::OK, Some(true)), "{body}");
    let (_, _, info) = send(&client, &browser, Method::GET, "/api/v1/accounts", None, &[]).await;
    assert_eq!(info["accounts"][0]["totp"], true, "{info}");

    // Now a password alone is refused, with the generic answer.
    let (status, _, body) = sign_in(&client, "ada", PASSWORD).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["detail"], "wrong account name or password");
    // The code that confirmed set-up was used: it is refused (replay).
    let (status, _, body) = sign_in_with_code(&client, "ada", PASSWORD, &totp_code_for(&key, now)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "a used code is never accepted again: {body}");
    // The next step's code signs in, once.
    clock.advance(30_000);
    let code = totp_code_for(&key, clock.now_millis());
    let (status, ada, body) = sign_in_with_code(&client, "ada", PASSWORD, &code).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _, _) = sign_in_with_code(&client, "ada", PASSWORD, &code).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the same code twice");
    // A code with the wrong password does not sign in either.
    clock.advance(30_000);
    let (status, _, _) =
        sign_in_with_code(&client, "ada", "not the passphrase", &totp_code_for(&key, clock.now_millis())).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Wrong codes with the right password count towards the lockout (5
    // in a row, the wrong password above being the first).
    clock.advance(30_000);
    let good = totp_code_for(&key, clock.now_millis());
    let bad = if good == "123456" { "654321" } else { "123456" };
    for _ in 0..3 {
        let (status, _, _) = sign_in_with_code(&client, "ada", PASSWORD, bad).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, _, body) = sign_in_with_code(&client, "ada", PASSWORD, &good).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::FORBIDDEN, Some("account-locked")), "{body}");

    // Turning codes off needs a current code; an operator can reset them.
    let (status, _) = change(&client, &ada, Method::DELETE, "/console/api/totp", Some(json!({"code": bad}))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (_, op, _) = sign_in(&client, "olga", PASSWORD).await;
    let (status, body) =
        change(&client, &op, Method::PATCH, "/api/v1/accounts/ada", Some(json!({"reset_totp": true, "unlock": true})))
            .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Both of ada's sessions: the one that set codes up, the one signed in with a code.
    assert_eq!((body["account"]["totp"].as_bool(), body["sessions_ended"].as_u64()), (Some(false), Some(2)));
    let (status, _, _) = send(&client, &ada, Method::GET, "/api/v1/whoami", None, &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the reset ended ada's session");
    let (status, ada, _) = sign_in(&client, "ada", PASSWORD).await;
    assert_eq!(status, StatusCode::OK, "a password alone again after the reset");

    // Set up again and turn off with a code.
    let (_, setup) = change(&client, &ada, Method::POST, "/console/api/totp", None).await;
    let key = base32_decode(setup["secret"].as_str().unwrap());
    clock.advance(30_000);
    let (status, _) = change(
        &client,
        &ada,
        Method::PUT,
        "/console/api/totp",
        Some(json!({"code": totp_code_for(&key, clock.now_millis())})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    clock.advance(30_000);
    let (status, body) = change(
        &client,
        &ada,
        Method::DELETE,
        "/console/api/totp",
        Some(json!({"code": totp_code_for(&key, clock.now_millis())})),
    )
    .await;
    assert_eq!((status, body["enabled"].as_bool()), (StatusCode::OK, Some(false)), "{body}");

    assert!(has_entry(&tc, "console:ada", "console.totp.begin", "Done"));
    assert!(has_entry(&tc, "console:ada", "console.totp.enable", "Done"));
    assert!(has_entry(&tc, "console:ada", "console.totp.disable", "Done"));
    assert!(has_entry(&tc, "console:ada", "console.totp.disable", "Refused"));
    assert!(has_entry(&tc, "console:ada", "console.sign-in", "Refused"));
    assert!(has_entry(&tc, "console:olga", "console.account.update", "Done"));
    let audit = tc.collector.store().audit().entries(None, 0, 10_000).unwrap();
    assert!(
        audit.iter().any(|e| e.action == "console.sign-in" && e.detail.contains("one-time code")),
        "the refusals say a code was wrong"
    );
    assert!(
        audit.iter().any(|e| e.detail.contains("with a password and a one-time code")),
        "the sign-in says it used both factors"
    );
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn accounts_are_managed_within_their_scope_and_every_change_ends_the_accounts_sessions() {
    init_logging();
    let tc = TestCollector::start().await;
    add_console_account(&tc, "olga", AdminRole::Operator, None);
    add_console_account(&tc, "ada", AdminRole::OrgAdmin, Some("acme"));
    add_console_account(&tc, "sam", AdminRole::Support, Some("acme"));
    add_console_account(&tc, "gil", AdminRole::OrgAdmin, Some("globex"));
    let client = anonymous_api(&tc).await;
    let (_, ada, _) = sign_in(&client, "ada", PASSWORD).await;

    // An org-admin cannot make an operator, nor an account of another org.
    let new = |name: &str, role: &str, org: Option<&str>| json!({"name": name, "role": role, "org": org, "password": PASSWORD});
    let (status, _) =
        change(&client, &ada, Method::POST, "/api/v1/accounts", Some(new("root2", "operator", None))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) =
        change(&client, &ada, Method::POST, "/api/v1/accounts", Some(new("g2", "support", Some("globex")))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) =
        change(&client, &ada, Method::POST, "/api/v1/accounts", Some(new("sue", "support", Some("acme")))).await;
    assert_eq!((status, body["role"].as_str()), (StatusCode::OK, Some("support")), "{body}");
    let (status, body) =
        change(&client, &ada, Method::POST, "/api/v1/accounts", Some(new("sue", "support", Some("acme")))).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::CONFLICT, Some("conflict")));
    let (status, body) = change(
        &client,
        &ada,
        Method::POST,
        "/api/v1/accounts",
        Some(json!({"name": "x", "role": "support", "org": "acme", "password": PASSWORD, "admin": true})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "unknown fields are refused: {body}");

    // The list is the org's own.
    let (status, _, list) = send(&client, &ada, Method::GET, "/api/v1/accounts", None, &[]).await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<&str> = list["accounts"].as_array().unwrap().iter().map(|a| a["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["ada", "sam", "sue"]);
    assert!(list.to_string().find("argon2").is_none(), "no hashes in the list");
    // Nor can ada touch globex's or the operator's accounts; they are
    // answered like a name nobody has, so she cannot probe which names
    // other organisations use (the refusals are audited all the same).
    let refusals_before =
        audit_actions(&tc).iter().filter(|(_, a, d)| a == "console.account.update" && d == "Refused").count();
    for target in ["gil", "olga", "nobody"] {
        let (status, body) =
            change(&client, &ada, Method::PATCH, &format!("/api/v1/accounts/{target}"), Some(json!({"unlock": true})))
                .await;
        assert_eq!(
            (status, body["detail"].as_str()),
            (StatusCode::NOT_FOUND, Some(format!("no account named {target}").as_str())),
            "{target}"
        );
        let (status, _) = change(&client, &ada, Method::DELETE, &format!("/api/v1/accounts/{target}"), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{target}");
    }
    let refusals_after =
        audit_actions(&tc).iter().filter(|(_, a, d)| a == "console.account.update" && d == "Refused").count();
    assert_eq!(refusals_after - refusals_before, 2, "gil and olga were refused and audited");
    // Nor promote her own org's account to operator, nor move it away.
    let (status, _) =
        change(&client, &ada, Method::PATCH, "/api/v1/accounts/sue", Some(json!({"role": "operator"}))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) =
        change(&client, &ada, Method::PATCH, "/api/v1/accounts/sue", Some(json!({"org": "globex"}))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Support staff manage nothing.
    let (_, sam, _) = sign_in(&client, "sam", PASSWORD).await;
    let (status, _, _) = send(&client, &sam, Method::GET, "/api/v1/accounts", None, &[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) =
        change(&client, &sam, Method::POST, "/api/v1/accounts", Some(new("s2", "support", Some("acme")))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // A change ends the account's sessions at once.
    let (status, sue, _) = sign_in(&client, "sue", PASSWORD).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) =
        change(&client, &ada, Method::PATCH, "/api/v1/accounts/sue", Some(json!({"role": "org-admin", "org": "acme"})))
            .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!((body["account"]["role"].as_str(), body["sessions_ended"].as_u64()), (Some("org-admin"), Some(1)));
    let (status, _, _) = send(&client, &sue, Method::GET, "/api/v1/whoami", None, &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "sue signs in again to get her new role");
    let (_, sue, _) = sign_in(&client, "sue", PASSWORD).await;
    let (_, _, whoami) = send(&client, &sue, Method::GET, "/api/v1/whoami", None, &[]).await;
    assert_eq!(whoami["role"], "org-admin");

    // A user changes her own password with the current one; her other
    // sessions end, this one stays.
    let (_, sue_elsewhere, _) = sign_in(&client, "sue", PASSWORD).await;
    let newpw = "another long passphrase";
    let (status, _) = change(
        &client,
        &sue,
        Method::PUT,
        "/console/api/password",
        Some(json!({"current": "not it at all", "new": newpw})),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) =
        change(&client, &sue, Method::PUT, "/console/api/password", Some(json!({"current": PASSWORD, "new": "short"})))
            .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) =
        change(&client, &sue, Method::PUT, "/console/api/password", Some(json!({"current": PASSWORD, "new": newpw})))
            .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _, _) = send(&client, &sue, Method::GET, "/api/v1/whoami", None, &[]).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = send(&client, &sue_elsewhere, Method::GET, "/api/v1/whoami", None, &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, _) = sign_in(&client, "sue", newpw).await;
    assert_eq!(status, StatusCode::OK);

    // An operator sets a password, disables, unlocks and deletes.
    let (_, olga, _) = sign_in(&client, "olga", PASSWORD).await;
    let (status, body) =
        change(&client, &olga, Method::PATCH, "/api/v1/accounts/gil", Some(json!({"disabled": true}))).await;
    assert_eq!((status, body["account"]["disabled"].as_bool()), (StatusCode::OK, Some(true)));
    let (status, _, body) = sign_in(&client, "gil", PASSWORD).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["detail"], "wrong account name or password", "a disabled account looks like any failure");
    for _ in 0..5 {
        sign_in(&client, "sam", "wrong wrong wrong").await;
    }
    let (status, _, _) = sign_in(&client, "sam", PASSWORD).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "locked");
    let (status, _) =
        change(&client, &olga, Method::PATCH, "/api/v1/accounts/sam", Some(json!({"unlock": true}))).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = sign_in(&client, "sam", PASSWORD).await;
    assert_eq!(status, StatusCode::OK, "unlocked by the operator");
    let (status, body) = change(&client, &olga, Method::DELETE, "/api/v1/accounts/sue", None).await;
    assert_eq!((status, body["sessions_ended"].as_u64()), (StatusCode::OK, Some(2)), "{body}");
    let (status, _, _) = send(&client, &sue, Method::GET, "/api/v1/whoami", None, &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, _) = sign_in(&client, "sue", newpw).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = change(&client, &olga, Method::DELETE, "/api/v1/accounts/sue", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // The name can be used again.
    let (status, _) =
        change(&client, &olga, Method::POST, "/api/v1/accounts", Some(new("sue", "operator", None))).await;
    assert_eq!(status, StatusCode::OK);

    for (actor, action, outcome) in [
        ("console:ada", "console.account.create", "Done"),
        ("console:ada", "console.account.create", "Refused"),
        ("console:ada", "console.account.update", "Done"),
        ("console:ada", "console.account.update", "Refused"),
        ("console:ada", "console.account.delete", "Refused"),
        ("console:sam", "console.account.list", "Refused"),
        ("console:sue", "console.account.password", "Done"),
        ("console:sue", "console.account.password", "Refused"),
        ("console:olga", "console.account.update", "Done"),
        ("console:olga", "console.account.delete", "Done"),
    ] {
        assert!(has_entry(&tc, actor, action, outcome), "{actor} {action} {outcome}: {:?}", audit_actions(&tc));
    }
}

#[tokio::test]
async fn a_browser_certificate_signs_in_only_where_configured_and_not_once_revoked_or_expired() {
    init_logging();
    // Off by default.
    let tc = TestCollector::start().await;
    let admin = issue_admin(&tc, AdminRole::OrgAdmin, Some("acme"));
    let with_cert = api_client(&admin).await;
    let (_, _, config) = send(&with_cert, &Browser::default(), Method::GET, "/console/api/config", None, &[]).await;
    assert_eq!(config["certificate_sign_in"], false);
    let (status, _, body) =
        send(&with_cert, &Browser::default(), Method::POST, "/console/api/session/certificate", Some(json!({})), &[])
            .await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::FORBIDDEN, Some("certificate-sign-in-off")));
    tc.collector.shutdown().await;

    // On: issue one certificate before the start (its expiry is imported)
    // and run the collector on a clock the test moves.
    let expiring = {
        let _guard = pki().lock();
        let name = AdminName::new(format!("admin-{}", unique_device("exp"))).unwrap();
        let identity = AdminIdentity::new(name, AdminRole::Operator, None).unwrap();
        let until = glimpse_certs::Validity {
            not_before: None,
            not_after: Some(time::OffsetDateTime::now_utc() + time::Duration::days(2)),
        };
        glimpse_certs::issue_admin(&pki().ours, &identity, &until, false).unwrap()
    };
    let clock = Arc::new(ManualClock::new(SystemClock.now_millis()));
    let tc = TestCollector::start_with_ssh_settings(0, clock.clone(), "[console]\ncertificate_sign_in = true").await;
    let admin = issue_admin(&tc, AdminRole::OrgAdmin, Some("acme"));
    let with_cert = api_client(&admin).await;
    let anonymous = anonymous_api(&tc).await;
    let (_, _, config) = send(&with_cert, &Browser::default(), Method::GET, "/console/api/config", None, &[]).await;
    assert_eq!(config["certificate_sign_in"], true);
    assert!(config["certificate_name"].as_str().unwrap().starts_with("admin-"), "{config}");
    let (status, _, _) =
        send(&anonymous, &Browser::default(), Method::POST, "/console/api/session/certificate", Some(json!({})), &[])
            .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "no certificate, no session");
    let cross = [("sec-fetch-site", "cross-site")];
    let (status, _, _) = send(
        &with_cert,
        &Browser::default(),
        Method::POST,
        "/console/api/session/certificate",
        Some(json!({})),
        &cross,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "not from another site");
    let (status, _, _) =
        send(&with_cert, &Browser::default(), Method::POST, "/console/api/session/certificate", None, &[]).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "JSON only, which a cross-site form cannot send");

    let (status, headers, body) = send(
        &with_cert,
        &Browser::default(),
        Method::POST,
        "/console/api/session/certificate",
        Some(json!({})),
        &[("sec-fetch-site", "same-origin")],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!((body["signed_in_with"].as_str(), body["role"].as_str()), (Some("certificate"), Some("org-admin")));
    let cookie = headers.get(header::SET_COOKIE).unwrap().to_str().unwrap();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
    let browser = Browser {
        cookie: Some(cookie.split(';').next().unwrap().to_owned()),
        csrf: body["csrf"].as_str().map(str::to_owned),
    };
    // The cookie alone now acts as the certificate's identity.
    let (status, _, whoami) = send(&anonymous, &browser, Method::GET, "/api/v1/whoami", None, &[]).await;
    assert_eq!(
        (status, whoami["via"].as_str(), whoami["org"].as_str()),
        (StatusCode::OK, Some("console"), Some("acme"))
    );
    let (status, _, _) = send(&anonymous, &browser, Method::GET, "/api/v1/orgs/globex", None, &[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Certificate sessions have no account for TOTP or passwords.
    let (status, _) = change(&anonymous, &browser, Method::POST, "/console/api/totp", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Revoked: the session ends and a new sign-in is refused.
    let operator = api_client(&issue_admin(&tc, AdminRole::Operator, None)).await;
    let serial = glimpse_certs::serial_hex_of(&glimpse_files::load_certs(&admin.cert).expect("certificate").remove(0))
        .expect("serial");
    let response =
        operator.request(Method::POST, &format!("/api/v1/identities/admins/{serial}/revoke")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let revoked: Value = response.json().await.unwrap();
    assert!(revoked["connections_closed"].as_u64().unwrap() >= 1, "{revoked}");
    // The session ended with the revocation itself, before any request.
    let console = tc.collector.api().and_then(|api| api.console.clone()).unwrap();
    let live = console.sessions.list(clock.now_millis());
    assert!(
        !live.iter().any(|s| matches!(&s.with, glimpse_collector::api::console::sessions::SignedInWith::Certificate { serial: s } if *s == serial)),
        "no session of the revoked certificate is left"
    );
    let (status, _, _) = send(&anonymous, &browser, Method::GET, "/api/v1/whoami", None, &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "a revoked certificate's session ends");
    let with_cert = api_client(&admin).await;
    let (status, _, _) =
        send(&with_cert, &Browser::default(), Method::POST, "/console/api/session/certificate", Some(json!({})), &[])
            .await;
    assert!(matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN), "revoked: {status}");

    // Expired on the collector's clock: refused; the session of a
    // certificate ends when the certificate does.
    let creds = glimpse_admin_client::AdminCredentials {
        address: tc.collector.admin_addr().unwrap().to_string(),
        server_name: "localhost".into(),
        ca: glimpse_certs::ca_cert_path(&pki().ours),
        cert: expiring.cert.clone(),
        key: expiring.key.clone(),
        token: None,
    };
    let expiring_client = api_client(&creds).await;
    let (status, headers, body) = send(
        &expiring_client,
        &Browser::default(),
        Method::POST,
        "/console/api/session/certificate",
        Some(json!({})),
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let short = Browser {
        cookie: headers
            .get(header::SET_COOKIE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap().to_owned()),
        csrf: None,
    };
    clock.advance(3 * 86_400_000);
    let (status, _, _) = send(&anonymous, &short, Method::GET, "/api/v1/whoami", None, &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the session ended with its certificate");
    let (status, _, body) = send(
        &expiring_client,
        &Browser::default(),
        Method::POST,
        "/console/api/session/certificate",
        Some(json!({})),
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("expired"), "{body}");

    assert!(has_entry(&tc, "console:admin-", "console.sign-in", "Done"));
    assert!(has_entry(&tc, "console:admin-", "console.sign-in", "Refused"));
}
