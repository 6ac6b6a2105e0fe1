//! The web console in a real headless Chromium, driven through WebDriver
//! (Debian's `chromium` and `chromium-driver`), against a real collector
//! with real agents streaming: sign-in and sign-out, a wrong password and
//! lockout, organisation scope, support access under a grant (and its end
//! on the collector's injected clock), capture consent reaching an agent,
//! a capture started from the page and downloaded as pcapng for tshark,
//! and CSRF refusals. Every test ends by checking Chromium's network log:
//! no request may leave the collector's origin.
//!
//! With `GLIMPSE_WRITE_SCREENSHOTS=1` the tests also save the main pages
//! as docs/console/*.png (scripts/console-screenshots.sh).

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::{header, Method, StatusCode};
use serde_json::{json, Value};

use glimpse_common::clock::{Clock, ManualClock, SystemClock};
use glimpse_common::identity::AdminRole;
use glimpse_tests::browser::{browser_available, Browser, ChromeDriver};
use glimpse_tests::*;

/// Browser tests run side by side (each with its own collector, agents,
/// chromedriver and Chromium), except the one that times a path end to
/// end: it runs alone, so what it measures is the console and the
/// collector, not seven other browsers on a 2-core machine. Tokio's lock is
/// fair, so it is neither starved nor overtaken.
static TIMED_ALONE: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

// Each test names its own organisations: every collector of this binary
// imports the registrations of every device issued in its shared PKI, so
// one name per test keeps one test's devices off another's pages.
const PASSWORD: &str = CONSOLE_PASSWORD;
const SESSION_COOKIE: &str = "__Host-glimpse_session";

/// The console's origin: the collector's admin HTTPS port.
fn origin(tc: &TestCollector) -> String {
    format!("https://{}", tc.collector.admin_addr().expect("admin API enabled"))
}

/// Opens the console and fills in the sign-in form (does not wait for the answer).
async fn submit_sign_in(browser: &Browser, origin: &str, name: &str, password: &str) {
    if !browser.exists("#signin-submit").await {
        browser.goto(&format!("{origin}/console/")).await;
    }
    browser.type_into("#name", name).await;
    browser.type_into("#password", password).await;
    browser.click("#signin-submit").await;
}

/// Signs in and waits for the page to name the account.
async fn sign_in(browser: &Browser, origin: &str, name: &str) {
    submit_sign_in(browser, origin, name, PASSWORD).await;
    browser.wait_for_text("#whoami", name).await;
}

/// Follows a link of the main navigation.
async fn open(browser: &Browser, hash: &str) {
    browser.click(&format!("nav a[href=\"{hash}\"]")).await;
    browser.wait_for_js(hash, &format!("location.hash === '{hash}'")).await;
}

/// The session's CSRF token, read as the pages read it.
async fn csrf_token(browser: &Browser) -> String {
    let session = browser.fetch("GET", "/console/api/session", json!({}), None).await;
    assert_eq!(session.status, 200, "{}", session.text);
    session.json()["csrf"].as_str().expect("a CSRF token").to_owned()
}

/// `org`'s admin grants support staff and operators every kind of its
/// data for an hour (audited like a grant from the console).
fn grant_everything(tc: &TestCollector, org: &str) {
    use glimpse_common::identity::{AdminIdentity, AdminName, OrgId};
    use glimpse_common::wire::admin::{AdminAction, AdminReply, GrantKind, GrantScope};
    let org = OrgId::new(org).unwrap();
    let admin = AdminIdentity::new(AdminName::new("ada").unwrap(), AdminRole::OrgAdmin, Some(org.clone())).unwrap();
    let scope = GrantScope::new(GrantKind::ALL, []).unwrap();
    let reply = tc.collector.admin_context().act(&admin, AdminAction::GrantSupport { org, hours: 1, scope });
    assert!(matches!(reply, AdminReply::SupportGranted { .. }), "{reply:?}");
}

/// A connected agent streaming for a device issued before the collector started.
async fn streaming_agent(tc: &TestCollector, device: &Device) -> glimpse_agent::AgentHandle {
    let agent = start_agent(tc.addr(), device);
    wait_for_status(&agent, "connected", |s| s.connected).await;
    wait_until("records stored", || tc.stored_records_of(&device.identity) > 0).await;
    agent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_in_shows_the_account_and_signing_out_ends_the_session() {
    if !browser_available() {
        return;
    }
    let _side_by_side = TIMED_ALONE.read().await;
    init_logging();
    let org = "acme".to_owned();
    let (device, other) = (issue_device(&org), issue_device(&org));
    let tc = TestCollector::start().await;
    add_console_account(&tc, "olga", AdminRole::Operator, None);
    let agent = streaming_agent(&tc, &device).await;
    let other_agent = streaming_agent(&tc, &other).await;
    let origin = origin(&tc);
    let driver = ChromeDriver::start().await;
    let browser = driver.browser().await;

    browser.goto(&format!("{origin}/console/")).await;
    browser.wait_for_js("the sign-in form", "document.activeElement && document.activeElement.id === 'name'").await;
    browser.screenshot_for_docs("sign-in").await;
    sign_in(&browser, &origin, "olga").await;
    assert_eq!(browser.text("#whoami").await, "olga (operator)");
    assert!(!browser.exists("#signin-submit").await);

    // An operator picks the organisation.
    browser.type_into("#org", &org).await;
    browser.click("#org-form button[type=submit]").await;
    let status = browser.wait_for_text("table#org-status", "Devices connected").await;
    assert!(status.contains("Devices connected 2"), "{status}");
    browser.screenshot_for_docs("organisation").await;

    open(&browser, "#/devices").await;
    let devices = browser.wait_for_text("table#devices", device.identity.device.as_str()).await;
    assert!(devices.contains(other.identity.device.as_str()) && devices.contains("ap tls"), "{devices}");
    browser.screenshot_for_docs("devices").await;

    // A token, made from the page, for the tokens page to list.
    let csrf = csrf_token(&browser).await;
    let made = browser
        .fetch(
            "POST",
            "/api/v1/tokens",
            json!({"X-CSRF-Token": csrf}),
            Some(json!({"name": "grafana", "role": "org-admin", "org": org, "read_only": true})),
        )
        .await;
    assert_eq!(made.status, 200, "{}", made.text);
    open(&browser, "#/tokens").await;
    browser.wait_for_text("table#tokens", "grafana").await;
    browser.screenshot_for_docs("tokens").await;

    // The organisation's audit entries, the token made a moment ago first.
    open(&browser, "#/audit").await;
    browser.wait_for_text("table#audit", "token.create").await;
    browser.click("#audit-verify").await;
    browser.wait_for_text("#audit-verified", "The chain is intact").await;
    browser.screenshot_for_docs("audit").await;

    // Signing out: the form is back and the old cookie is dead.
    let cookie = browser.cookie(SESSION_COOKIE).await.expect("the session cookie");
    browser.click("#signout").await;
    browser.wait_for_js("the sign-in form", "document.getElementById('signin-submit')").await;
    assert!(!browser.exists("#whoami").await);
    assert_eq!(browser.cookie(SESSION_COOKIE).await, None, "the cookie is cleared");
    let session = browser.fetch("GET", "/console/api/session", json!({}), None).await;
    assert_eq!(session.status, 401);
    let client = anonymous_api(&tc).await;
    let replay = client
        .request(Method::GET, "/api/v1/whoami")
        .header(header::COOKIE, format!("{SESSION_COOKIE}={cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), StatusCode::UNAUTHORIZED, "the signed-out session is gone on the collector");

    browser.finish(&origin).await;
    agent.shutdown().await;
    other_agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_refused_and_five_lock_the_account() {
    if !browser_available() {
        return;
    }
    let _side_by_side = TIMED_ALONE.read().await;
    init_logging();
    let tc = TestCollector::start().await;
    add_console_account(&tc, "ada", AdminRole::OrgAdmin, Some("lockorg"));
    let origin = origin(&tc);
    let driver = ChromeDriver::start().await;
    let browser = driver.browser().await;

    let attempt = |password: &'static str| {
        let (browser, origin) = (&browser, &origin);
        async move {
            // Cleared first, so the text awaited is this attempt's answer.
            browser.wait_for_js("the sign-in form", "document.getElementById('signin-error')").await;
            browser.execute("document.getElementById('signin-error').textContent = '';", json!([])).await;
            submit_sign_in(browser, origin, "ada", password).await;
            browser.wait_for_js("an answer", "document.getElementById('signin-error').textContent").await;
            browser.text("#signin-error").await
        }
    };
    browser.goto(&format!("{origin}/console/")).await;
    for _ in 0..5 {
        assert_eq!(attempt("not the passphrase").await, "wrong account name or password");
        assert!(!browser.exists("#whoami").await);
    }
    let locked = attempt(PASSWORD).await;
    assert!(locked.contains("locked"), "even the right password is refused while locked: {locked}");
    assert!(!browser.exists("#whoami").await);
    assert_eq!(browser.cookie(SESSION_COOKIE).await, None);

    browser.finish(&origin).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_org_admin_sees_only_their_own_organisation() {
    if !browser_available() {
        return;
    }
    let _side_by_side = TIMED_ALONE.read().await;
    init_logging();
    let (ours, theirs) = ("initech".to_owned(), "globex".to_owned());
    let (our_device, their_device) = (issue_device(&ours), issue_device(&theirs));
    let tc = TestCollector::start().await;
    add_console_account(&tc, "ada", AdminRole::OrgAdmin, Some(&ours));
    let our_agent = streaming_agent(&tc, &our_device).await;
    let their_agent = streaming_agent(&tc, &their_device).await;
    let origin = origin(&tc);
    let driver = ChromeDriver::start().await;
    let browser = driver.browser().await;

    sign_in(&browser, &origin, "ada").await;
    browser.wait_for_text("main", &format!("Organisation: {ours}")).await;
    assert!(!browser.exists("#org").await, "an org-admin is not offered another organisation");
    open(&browser, "#/devices").await;
    let listed = browser.wait_for_text("table#devices", our_device.identity.device.as_str()).await;
    assert!(!listed.contains(their_device.identity.device.as_str()), "{listed}");

    // Asking the API for the other organisation from the page is refused,
    // and the answer names none of its data.
    for path in [format!("/api/v1/orgs/{theirs}"), format!("/api/v1/devices?org={theirs}")] {
        let answer = browser.fetch("GET", &path, json!({}), None).await;
        assert_eq!(answer.status, 403, "{path}: {}", answer.text);
        assert!(answer.text.contains("may not act on organisation"), "{}", answer.text);
        assert!(!answer.text.contains(their_device.identity.device.as_str()), "{}", answer.text);
    }
    assert!(!browser.body_text().await.contains(their_device.identity.device.as_str()));

    browser.finish(&origin).await;
    our_agent.shutdown().await;
    their_agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn support_is_refused_without_a_grant_and_allowed_with_one() {
    if !browser_available() {
        return;
    }
    let _side_by_side = TIMED_ALONE.read().await;
    init_logging();
    let org = "umbrella".to_owned();
    let device = issue_device(&org);
    let tc = TestCollector::start().await;
    add_console_account(&tc, "ada", AdminRole::OrgAdmin, Some(&org));
    add_console_account(&tc, "sam", AdminRole::Support, Some(&org));
    let agent = streaming_agent(&tc, &device).await;
    let origin = origin(&tc);
    let driver = ChromeDriver::start().await;
    let (support, admin) = (driver.browser().await, driver.browser().await);

    sign_in(&support, &origin, "sam").await;
    let refused = support.wait_for_text("#error", "only under a grant").await;
    assert!(refused.contains(&org), "{refused}");
    assert!(!support.exists("table#org-status").await);

    // The organisation's admin grants four hours on the support page.
    sign_in(&admin, &origin, "ada").await;
    open(&admin, "#/support").await;
    admin.wait_for_text("#grant-countdown", "No support grant").await;
    admin.type_into("#grant-hours", "4").await;
    admin.click("#grant-submit").await;
    admin.wait_for_text("#grant-countdown", "Support may read this organisation's data for 3 h 59 min").await;
    admin.screenshot_for_docs("support").await;

    support.refresh().await;
    support.wait_for_text("table#org-status", "Devices connected").await;
    assert_eq!(support.text("#error").await, "");
    open(&support, "#/devices").await;
    support.wait_for_text("table#devices", device.identity.device.as_str()).await;
    // Read-only even under a grant.
    let csrf = csrf_token(&support).await;
    let change = support
        .fetch(
            "PUT",
            &format!("/api/v1/orgs/{org}/consent"),
            json!({"X-CSRF-Token": csrf}),
            Some(json!({"capture": true})),
        )
        .await;
    assert_eq!(change.status, 403, "{}", change.text);

    // Revoked: refused again.
    admin.click("#grant-revoke").await;
    admin.wait_for_text("#grant-countdown", "No support grant").await;
    open(&support, "#/").await;
    support.wait_for_text("#error", "only under a grant").await;

    // The admin sees what support did under the grant, and what was
    // refused outside it.
    admin.refresh().await;
    let history = admin.wait_for_text("#grant-history", "ended early").await;
    assert!(history.contains("4 h granted"), "{history}");
    let actions = admin.text("#grant-history table").await;
    assert!(actions.contains("console:sam (support of umbrella") && actions.contains("org.status"), "{actions}");
    assert!(actions.contains("devices.list"), "support's reads are audited too: {actions}");
    let refused = admin.text("table#support-refused").await;
    assert!(refused.contains("console:sam") && refused.contains("only under a grant"), "{refused}");
    admin.screenshot_for_docs("support-history").await;

    // A grant of captures only, on this one device, chosen on the form:
    // the countdown says what it includes, and metadata is refused.
    let id = device.identity.device.as_str();
    admin.click("#grant-kind-metadata").await;
    admin.click("#grant-kind-exports").await;
    admin.click("#grant-kind-captures").await;
    admin.type_into("#grant-devices", id).await;
    admin.click("#grant-submit").await;
    admin.wait_for_text("#grant-countdown", &format!("devices, captures on devices {id}")).await;
    let latest = support.fetch("GET", &format!("/api/v1/orgs/{org}/devices/{id}/latest"), json!({}), None).await;
    assert_eq!(latest.status, 403, "{}", latest.text);
    assert!(latest.text.contains("does not include metadata"), "{}", latest.text);
    let history = admin.wait_for_text("#grant-history", &format!("Includes devices, captures on devices {id}")).await;
    assert!(history.contains("Includes devices, metadata, exports on all devices"), "the first grant's: {history}");

    support.finish(&origin).await;
    admin.finish(&origin).await;
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_support_grant_ends_on_the_collectors_clock() {
    if !browser_available() {
        return;
    }
    let _side_by_side = TIMED_ALONE.read().await;
    init_logging();
    let clock = Arc::new(ManualClock::new(SystemClock.now_millis()));
    let org = "wayne".to_owned();
    let device = issue_device(&org);
    let tc = TestCollector::start_with_clock(clock.clone()).await;
    add_console_account(&tc, "ada", AdminRole::OrgAdmin, Some(&org));
    add_console_account(&tc, "sam", AdminRole::Support, Some(&org));
    let agent = streaming_agent(&tc, &device).await;
    let origin = origin(&tc);
    let driver = ChromeDriver::start().await;
    let (support, admin) = (driver.browser().await, driver.browser().await);

    sign_in(&admin, &origin, "ada").await;
    open(&admin, "#/support").await;
    admin.type_into("#grant-hours", "1").await;
    admin.click("#grant-submit").await;
    admin.wait_for_text("#grant-countdown", "Support may read").await;

    sign_in(&support, &origin, "sam").await;
    support.wait_for_text("table#org-status", "Devices connected").await;
    // Each step is shorter than the session's idle limit (30 min), so the
    // session lives on and only the grant ends.
    for minutes in [20, 20] {
        clock.advance(minutes * 60_000);
        support.refresh().await;
        support.wait_for_text("table#org-status", "Devices connected").await;
    }
    clock.advance(21 * 60_000);
    support.refresh().await;
    let refused = support.wait_for_text("#error", "only under a grant").await;
    assert!(refused.contains(&org), "{refused}");
    assert!(!support.exists("table#org-status").await);
    support.wait_for_text("#whoami", "sam").await;

    support.finish(&origin).await;
    admin.finish(&origin).await;
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consent_toggled_in_the_browser_reaches_the_agent_within_a_second() {
    if !browser_available() {
        return;
    }
    let _alone = TIMED_ALONE.write().await;
    init_logging();
    let org = "contoso".to_owned();
    let device = issue_device(&org);
    let tc = TestCollector::start().await;
    add_console_account(&tc, "ada", AdminRole::OrgAdmin, Some(&org));
    let agent = streaming_agent(&tc, &device).await;
    assert!(!agent.status().borrow().capture_consent);
    let origin = origin(&tc);
    let driver = ChromeDriver::start().await;
    let browser = driver.browser().await;

    sign_in(&browser, &origin, "ada").await;
    open(&browser, "#/capture").await;
    assert_eq!(browser.property("#consent-toggle", "checked").await, json!(false));
    for wanted in [true, false] {
        let clicked = Instant::now();
        browser.click("#consent-toggle").await;
        loop {
            if agent.status().borrow().capture_consent == wanted {
                break;
            }
            assert!(
                clicked.elapsed() < Duration::from_secs(1),
                "consent {wanted} did not reach the agent within a second; the page says: {}",
                browser.text("#error").await
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(browser.property("#consent-toggle", "checked").await, json!(wanted));
    }
    assert_eq!(browser.text("#error").await, "");

    browser.finish(&origin).await;
    agent.shutdown().await;
}

/// Sends a UDP datagram to 127.0.0.1:`port` every 50 ms until `done` holds.
async fn send_udp_until(port: u16, what: &str, mut done: impl FnMut() -> bool) {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let deadline = Instant::now() + DEADLINE;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        socket.send_to(b"glimpse browser test", ("127.0.0.1", port)).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capture_started_in_the_browser_finishes_and_downloads_as_pcapng() {
    if !(browser_available() && require_libpcap() && require_tool("tshark", "apt-get install tshark")) {
        return;
    }
    let _side_by_side = TIMED_ALONE.read().await;
    init_logging();
    let org = "northwind".to_owned();
    let device = issue_device(&org);
    let tc = TestCollector::start().await;
    add_console_account(&tc, "ada", AdminRole::OrgAdmin, Some(&org));
    set_consent(&tc, &device.identity.org, true);
    let agent = start_agent(tc.addr(), &device);
    wait_for_status(&agent, "connected with consent", |s| s.connected && s.capture_consent).await;
    let origin = origin(&tc);
    let driver = ChromeDriver::start().await;
    let browser = driver.browser().await;
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = udp.local_addr().unwrap().port();

    sign_in(&browser, &origin, "ada").await;
    open(&browser, "#/capture").await;
    assert_eq!(browser.property("#consent-toggle", "checked").await, json!(true));
    browser.select("#capture-device", device.identity.device.as_str()).await;
    browser.type_into("#capture-interface", "lo").await;
    browser.type_into("#capture-filter", &format!("udp dst port {port}")).await;
    browser.type_into("#capture-duration", "60").await;
    browser.type_into("#capture-packets", "3").await;
    browser.click("#capture-start").await;
    browser.wait_for_text("table#captures", device.identity.device.as_str()).await;

    send_udp_until(port, "3 captured packets stored", || stored_captures(&tc, &device.identity.org).len() >= 3).await;
    let row = browser.wait_for_text("table#captures", "finished").await;
    assert!(row.contains("finished 3"), "3 packets kept: {row}");
    assert_eq!(browser.text("#error").await, "");
    browser.screenshot_for_docs("capture").await;

    // The download link, fetched as the browser would with its session.
    let href = browser.property("#pcapng-download", "href").await;
    let href = href.as_str().expect("a link").to_owned();
    assert!(href.starts_with(&origin), "{href}");
    let (status, pcapng) = browser.fetch_bytes(&href).await;
    assert_eq!(status, 200);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("download.pcapng");
    std::fs::write(&file, &pcapng).unwrap();
    let lines = glimpse_tests::traffic::tshark_lines(&file);
    assert_eq!(lines.len(), 3, "tshark reads the 3 packets: {lines:#?}");
    assert!(lines.iter().all(|l| l.contains("UDP") && l.contains(&port.to_string())), "{lines:#?}");

    // The capture's packets, decoded from the stored headers, each marked
    // as headers only.
    browser.click("table#captures button[data-capture]").await;
    browser.wait_for_text("#packets-count", "of 3").await;
    let packets = browser.text("table#packets").await;
    let rows: Vec<&str> = packets.lines().filter(|l| l.contains("headers only")).collect();
    assert_eq!(rows.len(), 3, "three packets, each headers only: {packets}");
    assert!(
        rows.iter().all(|r| r.to_lowercase().contains("udp") && r.contains(&format!("127.0.0.1:{port}"))),
        "{packets}"
    );
    browser.screenshot_for_docs("packets").await;

    browser.finish(&origin).await;
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_without_the_csrf_token_is_refused() {
    if !browser_available() {
        return;
    }
    let _side_by_side = TIMED_ALONE.read().await;
    init_logging();
    let org = "stark".to_owned();
    let tc = TestCollector::start().await;
    add_console_account(&tc, "ada", AdminRole::OrgAdmin, Some(&org));
    let origin = origin(&tc);
    let driver = ChromeDriver::start().await;
    let browser = driver.browser().await;
    sign_in(&browser, &origin, "ada").await;

    let consent = format!("/api/v1/orgs/{org}/consent");
    let change = Some(json!({"capture": true}));
    for headers in [json!({}), json!({"X-CSRF-Token": "0000"})] {
        let refused = browser.fetch("PUT", &consent, headers.clone(), change.clone()).await;
        assert_eq!(refused.status, 403, "{headers}: {}", refused.text);
        assert_eq!(refused.json()["code"], "csrf-refused", "{}", refused.text);
    }
    let signout = browser.fetch("DELETE", "/console/api/session", json!({}), None).await;
    assert_eq!(signout.status, 403, "signing out needs the token too");
    let status = browser.fetch("GET", &format!("/api/v1/orgs/{org}"), json!({}), None).await;
    assert_eq!(status.json()["capture_consent"], Value::Bool(false), "nothing changed: {}", status.text);

    // With the session's token, the same change from the same page is done.
    let csrf = csrf_token(&browser).await;
    let done = browser.fetch("PUT", &consent, json!({"X-CSRF-Token": csrf}), change).await;
    assert_eq!(done.status, 200, "{}", done.text);

    browser.finish(&origin).await;
}

/// The origin check at the end of every test is not vacuous: a page that
/// loads an image from another origin (a closed port on loopback, so
/// nothing leaves the machine) shows up in the network log it reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_network_log_sees_a_request_to_another_origin() {
    if !browser_available() {
        return;
    }
    let _side_by_side = TIMED_ALONE.read().await;
    let closed = free_port();
    let driver = ChromeDriver::start().await;
    let browser = driver.browser().await;
    let elsewhere = format!("http://127.0.0.1:{closed}/font.png");
    browser.goto(&format!("data:text/html,<p id=done>page</p><img src=\"{elsewhere}\">")).await;
    browser.wait_for_text("#done", "page").await;
    let deadline = Instant::now() + glimpse_tests::browser::PAGE_DEADLINE;
    loop {
        let urls = browser.requested_urls().await;
        let foreign = glimpse_tests::browser::foreign_requests(&urls, "https://127.0.0.1:4443");
        if foreign.iter().any(|u| **u == elsewhere) {
            break;
        }
        assert!(Instant::now() < deadline, "the image request never reached the log: {urls:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    browser.close().await;
}

/// Counter records stored for `device`.
fn stored_counter_records(tc: &TestCollector, device: &Device) -> usize {
    use glimpse_common::record::{DataKind, RecordBody};
    let mut count = 0;
    tc.collector
        .store()
        .read_after(&device.identity.org, DataKind::Metadata, (None, None), None, &mut |_, stored| {
            if stored.device == device.identity.device && matches!(stored.record.body, RecordBody::Counters(_)) {
                count += 1;
            }
            std::ops::ControlFlow::Continue(())
        })
        .expect("the store reads");
    count
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_see_every_organisation_the_device_charts_and_the_data_rights_page() {
    if !browser_available() {
        return;
    }
    let _side_by_side = TIMED_ALONE.read().await;
    init_logging();
    let org = "tailspin".to_owned();
    let device = issue_device(&org);
    let tc = TestCollector::start().await;
    add_console_account(&tc, "olga", AdminRole::Operator, None);
    add_console_account(&tc, "ada", AdminRole::OrgAdmin, Some(&org));
    // This host's real interfaces: their counters change between reports.
    let agent = streaming_agent(&tc, &device).await;
    wait_until("three counter reports stored", || stored_counter_records(&tc, &device) >= 3).await;
    let origin = origin(&tc);
    let driver = ChromeDriver::start().await;
    let (browser, admin) = (driver.browser().await, driver.browser().await);

    // An org-admin is not offered the operators' pages.
    sign_in(&admin, &origin, "ada").await;
    assert!(!admin.exists("nav a[href=\"#/orgs\"]").await && !admin.exists("nav a[href=\"#/operator\"]").await);
    admin.finish(&origin).await;

    sign_in(&browser, &origin, "olga").await;
    open(&browser, "#/orgs").await;
    let orgs = browser.wait_for_text("table#orgs", &org).await;
    assert!(
        orgs.contains("ap: 1") || orgs.contains("1 ap") || orgs.contains("ap 1"),
        "one access point connected: {orgs}"
    );
    browser.screenshot_for_docs("orgs").await;
    open(&browser, "#/operator").await;
    browser.wait_for_text("table#store-sizes", &org).await;
    let certs = browser.wait_for_text("table#collector-certs", "CA").await;
    assert!(certs.contains("collector"), "{certs}");
    assert!(!browser.text("#ingest-rate").await.is_empty());
    browser.screenshot_for_docs("operator").await;

    // The device page and data rights read the organisation's data: an
    // operator sees them only under its grant, given here by its admin.
    grant_everything(&tc, &org);

    // The device page: rate charts drawn from the interval counters.
    open(&browser, "#/devices").await;
    browser.type_into("#org", &org).await;
    browser.click("#org-form button[type=submit]").await;
    browser.wait_for_text("table#devices", device.identity.device.as_str()).await;
    // The PKI is shared by every run: devices of earlier runs are listed
    // too, not connected.
    browser.click(&format!("table#devices a.device-link[href=\"#/device/{}\"]", device.identity.device)).await;
    browser.wait_for_text("#main", &format!("Device {}", device.identity.device)).await;
    browser.wait_for_text("table#device-detail", "tls").await;
    browser
        .wait_for_js("a drawn Tx/Rx series", "document.querySelector('svg#chart-bits-0 path[stroke-width]') !== null")
        .await;
    let chart = browser.text("#rate-charts").await;
    assert!(["b/s", "kb/s", "Mb/s", "Gb/s"].iter().any(|u| chart.contains(u)), "a unit on the axis: {chart}");
    assert!(chart.contains("Time ("), "the time axis names its zone: {chart}");
    let label = browser
        .execute("return document.querySelector('svg#chart-bits-0').getAttribute('aria-labelledby')", json!([]))
        .await;
    assert!(label.as_str().is_some_and(|l| !l.is_empty()), "the chart has an accessible name");
    browser.click("#range-6h").await;
    browser
        .wait_for_js(
            "the 6 h range chosen",
            "document.querySelector('#range-6h').getAttribute('aria-pressed') === 'true'",
        )
        .await;
    browser
        .wait_for_js("the chart redrawn", "document.querySelector('svg#chart-bits-0 path[stroke-width]') !== null")
        .await;
    // The last five minutes, in 5 s buckets: the seconds this test streamed.
    browser.click("#range-5m").await;
    browser.wait_for_text("#rates-summary", "over the last 5 min, in 5 s buckets").await;
    browser
        .wait_for_js("the chart redrawn", "document.querySelector('svg#chart-bits-0 path[stroke-width]') !== null")
        .await;
    browser.screenshot_for_docs("device").await;

    // Data rights: nothing stored about an address nobody used; the
    // policy saved reaches the organisation's status.
    open(&browser, "#/rights").await;
    browser.type_into("#subject-value", "02:00:5e:99:99:99").await;
    browser.click("#subject-find").await;
    browser.wait_for_text("#subject-found", "0 stored records").await;
    browser.click("#omit-hostname").await;
    browser.click("#pseudonymise-macs").await;
    browser.click("#strict-headers").await;
    browser.click("#policy-save").await;
    browser.wait_for_text("#policy-saved", "Saved").await;
    let status = browser.fetch("GET", &format!("/api/v1/orgs/{org}"), json!({}), None).await;
    let status = status.json();
    assert_eq!(status["omitted_fields"], json!(["hostname"]), "{status}");
    assert_eq!(status["pseudonymise_macs"], json!(true), "{status}");
    assert_eq!(status["strict_headers"], json!(true), "{status}");
    assert_eq!(status["wan_destinations"], json!(false), "off by default: {status}");
    browser.click("#wan-destinations").await;
    browser.click("#wan-save").await;
    browser.wait_for_text("#wan-saved", "Saved").await;
    let status = browser.fetch("GET", &format!("/api/v1/orgs/{org}"), json!({}), None).await;
    assert_eq!(status.json()["wan_destinations"], json!(true), "{}", status.json());
    browser.screenshot_for_docs("rights").await;

    browser.finish(&origin).await;
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_made_in_the_browser_sets_up_one_time_codes_and_then_needs_one() {
    if !browser_available() {
        return;
    }
    let _side_by_side = TIMED_ALONE.read().await;
    init_logging();
    let clock = Arc::new(ManualClock::new(SystemClock.now_millis()));
    let org = "fabrikam".to_owned();
    let tc = TestCollector::start_with_clock(clock.clone()).await;
    add_console_account(&tc, "olga", AdminRole::Operator, None);
    let origin = origin(&tc);
    let driver = ChromeDriver::start().await;
    let (operator, user) = (driver.browser().await, driver.browser().await);

    // The operator makes an org-admin account on the Accounts page.
    sign_in(&operator, &origin, "olga").await;
    open(&operator, "#/accounts").await;
    operator.type_into("#account-name", "bea").await;
    operator.select("#account-role", "org-admin").await;
    operator.type_into("#account-org", &org).await;
    operator.type_into("#account-password", PASSWORD).await;
    operator.click("#account-create").await;
    let accounts = operator.wait_for_text("table#accounts", "bea").await;
    assert!(accounts.contains(&org), "{accounts}");
    operator.screenshot_for_docs("accounts").await;

    // Bea sets up one-time codes with the key shown, confirmed by a code.
    sign_in(&user, &origin, "bea").await;
    open(&user, "#/account").await;
    user.click("#totp-enrol").await;
    user.wait_for_js("the key shown", "(document.querySelector('#totp-secret')?.textContent || '').length > 0").await;
    let secret = user.text("#totp-secret").await;
    let key = base32_decode(secret.trim());
    assert!(key.len() >= 20, "an RFC 6238 key of 160 bits or more: {secret}");
    user.type_into("#totp-code", &totp_code_for(&key, clock.now_millis())).await;
    user.click("#totp-confirm").await;
    user.wait_for_text("#totp-status", "codes are on").await;
    user.screenshot_for_docs("account").await;
    user.click("#signout").await;
    user.wait_for_text("#signin-submit", "Sign in").await;

    // Now the password alone is refused, and the same code twice too: a
    // fresh code (the next step) signs in.
    submit_sign_in(&user, &origin, "bea", PASSWORD).await;
    user.wait_for_text("#signin-error", "wrong account name or password").await;
    clock.advance(30_000);
    user.type_into("#code", &totp_code_for(&key, clock.now_millis())).await;
    submit_sign_in(&user, &origin, "bea", PASSWORD).await;
    user.wait_for_text("#whoami", "bea").await;

    user.finish(&origin).await;
    operator.finish(&origin).await;
}
