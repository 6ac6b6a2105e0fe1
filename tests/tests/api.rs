//! The HTTPS admin API end to end, with a real HTTP client (reqwest over
//! our rustls configuration) and curl against a real collector: every
//! endpoint for every role and scope (allowed or refused, and refused ones
//! audited), API tokens created, used and revoked (a revoked token's live
//! connection is closed at once), bad input answered with problem
//! documents, HTTP/1.1 and HTTP/2, and the curl examples of
//! docs/OPERATIONS.md run as written.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use glimpse_admin_client::{AdminCredentials, ApiClient};
use glimpse_common::identity::AdminRole;
use glimpse_tests::*;

use glimpse_tests::api_call as call;

/// Creates a token as `creator` and returns its secret and id.
async fn create_token(creator: &ApiClient, body: Value) -> (String, String) {
    let (status, created) = call(creator, Method::POST, "/api/v1/tokens", Some(body)).await;
    assert_eq!(status, StatusCode::OK, "{created}");
    (created["token"].as_str().unwrap().to_owned(), created["info"]["id"].as_str().unwrap().to_owned())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    /// An operator while the organisation grants nothing.
    Operator,
    /// An operator under the organisation's grant of every kind.
    OperatorGranted,
    OrgAdmin,
    OtherOrgAdmin,
    SupportNoGrant,
    /// Support staff under a grant of every kind.
    SupportGranted,
    /// Support staff under a grant of the default scope (devices,
    /// metadata, exports: no captures).
    SupportDefaultGrant,
    ReadOnlyToken,
    OrgToken,
    Nobody,
}

/// What an endpoint needs (the table in docs/SECURITY.md, "Roles and
/// grants").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Needs {
    /// Any authenticated caller (whoami).
    Anyone,
    /// What running the service needs: status, devices' health, the
    /// organisation's audit log.
    Service,
    /// Reading the organisation's stored metadata.
    Metadata,
    /// Reading its captures and capture reports.
    Captures,
    /// Data-subject exports.
    Exports,
    /// Requesting or stopping a capture.
    Capture,
    /// Changing the organisation's settings or data.
    Write,
    /// Granting support access.
    Grant,
    /// Operators only.
    Operator,
    /// Listing tokens: operators, and org-admins (certificate or token)
    /// for their own organisation.
    OwnTokens,
}

fn allowed(who: Who, needs: Needs) -> bool {
    use Needs::*;
    use Who::*;
    let reads = |n: Needs| matches!(n, Service | Metadata | Captures | Exports);
    match (who, needs) {
        (Nobody, _) => false,
        (_, Anyone) => true,
        (Who::Operator | OperatorGranted, Service | Write | Needs::Operator | OwnTokens) => true,
        (Who::Operator | OperatorGranted, Grant) => false,
        (Who::Operator, _) => false,
        (OperatorGranted, _) => true,
        (_, Needs::Operator) => false,
        (OrgAdmin | OrgToken, _) => true,
        (ReadOnlyToken, n) => reads(n) || n == OwnTokens,
        (OtherOrgAdmin, OwnTokens) => true,
        (OtherOrgAdmin, _) => false,
        (SupportGranted, n) => reads(n) || n == Capture,
        (SupportDefaultGrant, n) => matches!(n, Service | Metadata | Exports),
        (SupportNoGrant, _) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_allows_and_refuses_each_role_and_scope_as_documented() {
    init_logging();
    let tc = TestCollector::start().await;
    let org = "matrixorg";
    let operator = api_client(&issue_admin(&tc, AdminRole::Operator, None)).await;
    let org_admin = api_client(&issue_admin(&tc, AdminRole::OrgAdmin, Some(org))).await;
    let support = api_client(&issue_admin(&tc, AdminRole::Support, Some(org))).await;
    let mut clients: Vec<(Who, ApiClient)> = vec![
        (Who::Operator, operator.clone()),
        (Who::OperatorGranted, operator.clone()),
        (Who::OrgAdmin, org_admin.clone()),
        (Who::OtherOrgAdmin, api_client(&issue_admin(&tc, AdminRole::OrgAdmin, Some("othermatrix"))).await),
        (Who::SupportNoGrant, api_client(&issue_admin(&tc, AdminRole::Support, Some("othermatrix"))).await),
        (Who::SupportGranted, support.clone()),
        (Who::SupportDefaultGrant, support),
        (Who::Nobody, anonymous_api(&tc).await),
    ];
    let (ro, _) =
        create_token(&org_admin, json!({"name": "reader", "role": "org-admin", "org": org, "read_only": true})).await;
    let (rw, _) = create_token(&org_admin, json!({"name": "writer", "role": "org-admin", "org": org})).await;
    clients.push((Who::ReadOnlyToken, api_client(&token_credentials(&tc, &ro)).await));
    clients.push((Who::OrgToken, api_client(&token_credentials(&tc, &rw)).await));

    // An admin certificate every allowed caller revokes in turn (the
    // collector records it on its first use).
    let victim = issue_admin(&tc, AdminRole::OrgAdmin, Some(org));
    let (status, _) = call(&api_client(&victim).await, Method::GET, "/api/v1/whoami", None).await;
    assert_eq!(status, StatusCode::OK);
    let victim_serial =
        glimpse_certs::serial_hex_of(&glimpse_files::load_certs(&victim.cert).expect("certificate").remove(0))
            .expect("serial");
    let capture = json!({"device": "ap-1", "interface": "eth0", "duration_secs": 5, "max_packets": 10});
    let subject = json!({"subject": {"kind": "mac", "value": "02:00:5e:10:00:01"}});
    let endpoints: Vec<(Method, String, Option<Value>, Needs)> = vec![
        (Method::GET, "/api/v1/whoami".into(), None, Needs::Anyone),
        (Method::GET, format!("/api/v1/orgs/{org}"), None, Needs::Service),
        (Method::PUT, format!("/api/v1/orgs/{org}/consent"), Some(json!({"capture": false})), Needs::Write),
        (Method::PUT, format!("/api/v1/orgs/{org}/data-policy"), Some(json!({"omit": []})), Needs::Write),
        (Method::GET, format!("/api/v1/orgs/{org}/devices"), None, Needs::Service),
        (Method::GET, format!("/api/v1/devices?org={org}"), None, Needs::Service),
        (Method::GET, format!("/api/v1/orgs/{org}/devices/ap-1"), None, Needs::Service),
        (Method::GET, format!("/api/v1/orgs/{org}/devices/ap-1/rates"), None, Needs::Metadata),
        (Method::GET, format!("/api/v1/orgs/{org}/devices/ap-1/latest"), None, Needs::Metadata),
        (Method::GET, "/api/v1/identities/admins".into(), None, Needs::OwnTokens),
        (Method::POST, format!("/api/v1/identities/admins/{victim_serial}/revoke"), None, Needs::Write),
        (Method::POST, format!("/api/v1/orgs/{org}/captures"), Some(capture), Needs::Capture),
        (Method::GET, format!("/api/v1/orgs/{org}/captures"), None, Needs::Captures),
        (Method::GET, format!("/api/v1/orgs/{org}/captures/ap-1/7"), None, Needs::Captures),
        (Method::GET, format!("/api/v1/orgs/{org}/captures/ap-1/7/packets"), None, Needs::Captures),
        (Method::POST, format!("/api/v1/orgs/{org}/captures/ap-1/7/stop"), None, Needs::Capture),
        (Method::POST, format!("/api/v1/orgs/{org}/subjects/export"), Some(subject.clone()), Needs::Exports),
        (Method::GET, format!("/api/v1/orgs/{org}/export"), None, Needs::Metadata),
        (Method::GET, format!("/api/v1/orgs/{org}/export?kind=capture&format=pcapng"), None, Needs::Captures),
        (Method::POST, format!("/api/v1/orgs/{org}/subjects/erase"), Some(subject), Needs::Write),
        (Method::GET, format!("/api/v1/audit?org={org}"), None, Needs::Service),
        (Method::GET, format!("/api/v1/orgs/{org}/support/activity"), None, Needs::Service),
        (Method::GET, format!("/api/v1/orgs/{org}/data-key"), None, Needs::Service),
        (Method::POST, format!("/api/v1/orgs/{org}/data-key/rotate"), None, Needs::Write),
        (Method::GET, "/api/v1/audit".into(), None, Needs::Operator),
        (Method::GET, "/api/v1/audit/verify".into(), None, Needs::Operator),
        (Method::GET, "/api/v1/orgs".into(), None, Needs::Operator),
        (
            Method::POST,
            "/api/v1/tokens".into(),
            Some(json!({"name": "made", "role": "support", "org": org, "read_only": true})),
            Needs::Write,
        ),
        (Method::GET, "/api/v1/tokens".into(), None, Needs::OwnTokens),
        (Method::POST, format!("/api/v1/orgs/{org}/support"), Some(json!({"hours": 2})), Needs::Grant),
        (Method::DELETE, format!("/api/v1/orgs/{org}/support"), None, Needs::Write),
        (Method::DELETE, format!("/api/v1/orgs/{org}"), Some(json!({"confirm": org})), Needs::Write),
    ];
    let support_path = format!("/api/v1/orgs/{org}/support");
    let every_kind = json!({"hours": 1, "kinds": ["devices", "metadata", "captures", "exports"]});
    let mut checked = 0;
    for (method, path, body, needs) in &endpoints {
        for (who, client) in &clients {
            // The grant each caller is checked under (an earlier row may
            // have changed it).
            let grant = match who {
                Who::SupportGranted | Who::OperatorGranted => Some(Some(every_kind.clone())),
                Who::SupportDefaultGrant => Some(Some(json!({"hours": 1}))),
                Who::Operator => Some(None),
                _ => None,
            };
            match grant {
                Some(Some(body)) => {
                    let (status, _) = call(&org_admin, Method::POST, &support_path, Some(body)).await;
                    assert_eq!(status, StatusCode::OK);
                }
                Some(None) => {
                    let (status, _) = call(&org_admin, Method::DELETE, &support_path, None).await;
                    assert_eq!(status, StatusCode::OK);
                }
                None => {}
            }
            let (status, answer) = call(client, method.clone(), path, body.clone()).await;
            let expect = allowed(*who, *needs);
            if expect {
                assert!(
                    status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN,
                    "{who:?} {method} {path}: refused ({status}) but should be allowed: {answer}"
                );
            } else if *who == Who::Nobody {
                assert_eq!(status, StatusCode::UNAUTHORIZED, "{who:?} {method} {path}: {answer}");
            } else {
                assert_eq!(status, StatusCode::FORBIDDEN, "{who:?} {method} {path}: {answer}");
                assert_eq!(answer["code"], "forbidden");
            }
            checked += 1;
        }
    }
    assert_eq!(checked, endpoints.len() * clients.len());

    // Refusals are audited with who asked and why, like any admin action.
    let (_, audit) = call(&operator, Method::GET, "/api/v1/audit?org=othermatrix", None).await;
    let (_, mine) = call(&operator, Method::GET, &format!("/api/v1/audit?org={org}"), None).await;
    let entries: Vec<&Value> =
        audit["entries"].as_array().unwrap().iter().chain(mine["entries"].as_array().unwrap()).collect();
    assert!(
        entries.iter().any(|e| e["refused"] == true
            && e["actor"].as_str().unwrap().contains("org-admin of othermatrix")
            && e["detail"].as_str().unwrap().contains("may not act on organisation matrixorg")),
        "a cross-organisation refusal is audited"
    );
    assert!(entries.iter().any(|e| e["refused"] == true
        && e["actor"].as_str().unwrap().starts_with("token:reader")
        && e["detail"].as_str().unwrap().contains("read-only")));
    assert!(entries.iter().any(|e| e["action"] == "token.create" && e["refused"] == false));
    // Operators' reads of the organisation's data: refused without a
    // grant, and done under one naming it.
    let all = tc.collector.store().audit().entries(Some(org), 0, 100_000).unwrap();
    let operator_entry = |refused: bool, detail: &str| {
        all.iter().any(|e| {
            (e.outcome == glimpse_store::audit::AuditOutcome::Refused) == refused
                && e.actor.contains("(operator)")
                && e.detail.contains(detail)
        })
    };
    assert!(operator_entry(true, "operators may read matrixorg only under a grant"));
    assert!(operator_entry(false, "under the support grant of matrixorg given "));
    assert!(operator_entry(true, "only the admins of matrixorg may grant access"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_work_until_revoked_and_revocation_closes_their_live_connections() {
    init_logging();
    let tc = TestCollector::start().await;
    let org = "tokenorg";
    let admin = api_client(&issue_admin(&tc, AdminRole::OrgAdmin, Some(org))).await;
    let (token, id) = create_token(&admin, json!({"name": "nightly-export", "role": "org-admin", "org": org})).await;
    assert!(token.starts_with("glimpse_"));
    let script = api_client(&token_credentials(&tc, &token)).await;
    let (status, me) = call(&script, Method::GET, "/api/v1/whoami", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (me["via"].as_str(), me["name"].as_str(), me["org"].as_str()),
        (Some("token"), Some("nightly-export"), Some(org))
    );
    let (status, _) =
        call(&script, Method::PUT, &format!("/api/v1/orgs/{org}/consent"), Some(json!({"capture": true}))).await;
    assert_eq!(status, StatusCode::OK, "an org-admin token acts for its organisation");

    // Listed, with its last use, never with its secret.
    let (_, list) = call(&admin, Method::GET, "/api/v1/tokens", None).await;
    let listed = list["tokens"].as_array().unwrap().iter().find(|t| t["id"] == id.as_str()).expect("listed");
    assert!(listed["last_used_ms"].as_i64().is_some());
    assert!(!list.to_string().contains(token.rsplit('_').next().unwrap()), "the secret is never shown again");

    // The script's connection is open (kept alive); revoking closes it.
    let api = tc.collector.api().expect("admin API");
    let (status, revoked) = call(&admin, Method::DELETE, &format!("/api/v1/tokens/{id}"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(revoked["was_active"], true);
    assert_eq!(revoked["connections_closed"], 1, "the live connection that used it was closed at once");
    wait_until("the revoked token's connection is gone", || api.live.open() <= 1).await;
    let (status, problem) = call(&script, Method::GET, "/api/v1/whoami", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(problem["detail"].as_str().unwrap().contains("revoked"), "{problem}");

    // Another organisation's admin cannot revoke or see it.
    let other = api_client(&issue_admin(&tc, AdminRole::OrgAdmin, Some("othertoken"))).await;
    let (status, _) = call(&other, Method::DELETE, &format!("/api/v1/tokens/{id}"), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (_, theirs) = call(&other, Method::GET, "/api/v1/tokens", None).await;
    assert!(theirs["tokens"].as_array().unwrap().is_empty());
    // Creation, use and revocation are in the organisation's audit log.
    let (_, audit) = call(&admin, Method::GET, &format!("/api/v1/audit?org={org}"), None).await;
    let actions: Vec<&str> =
        audit["entries"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert!(actions.contains(&"token.create") && actions.contains(&"token.revoke") && actions.contains(&"consent.set"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_problem_documents_and_guessing_is_rate_limited() {
    init_logging();
    let tc = TestCollector::start().await;
    let operator = api_client(&issue_admin(&tc, AdminRole::Operator, None)).await;
    let consent = "/api/v1/orgs/badorg/consent";
    // Unknown fields, wrong types, a body too large, the wrong media type.
    let (status, p) = call(&operator, Method::PUT, consent, Some(json!({"capture": true, "extra": 1}))).await;
    assert_eq!((status, p["code"].as_str()), (StatusCode::BAD_REQUEST, Some("bad-request")), "{p}");
    assert!(p["detail"].as_str().unwrap().contains("extra"));
    let (status, _) = call(&operator, Method::PUT, consent, Some(json!({"capture": "yes"}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let huge = json!({"capture": true, "pad": "x".repeat(100_000)});
    let (status, p) = call(&operator, Method::PUT, consent, Some(huge)).await;
    assert_eq!((status, p["code"].as_str()), (StatusCode::PAYLOAD_TOO_LARGE, Some("payload-too-large")));
    let response = operator.request(Method::PUT, consent).body("capture=true").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // Invalid names, unknown paths and methods, long URIs, bad queries.
    let (status, _) = call(&operator, Method::GET, "/api/v1/orgs/Not%20An%20Org", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, p) = call(&operator, Method::GET, "/api/v1/nothing-here", None).await;
    assert_eq!((status, p["code"].as_str()), (StatusCode::NOT_FOUND, Some("not-found")));
    let (status, _) = call(&operator, Method::PATCH, "/api/v1/whoami", None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    let (status, _) = call(&operator, Method::GET, &format!("/api/v1/audit?org={}", "a".repeat(5000)), None).await;
    assert_eq!(status, StatusCode::URI_TOO_LONG);
    let (status, _) = call(&operator, Method::GET, "/api/v1/audit?bogus=1", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = call(&operator, Method::GET, "/api/v1/audit?after_seq=-4", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // The document itself is served and lists the endpoints.
    let (status, doc) = call(&operator, Method::GET, "/api/v1/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["paths"]["/api/v1/orgs/{org}/consent"]["put"].is_object());

    // Guessing tokens: after ten failures a minute, the address is held off.
    let guesser = api_client(&token_credentials(&tc, &format!("glimpse_{}_{}", "0".repeat(16), "0".repeat(64)))).await;
    let mut statuses = Vec::new();
    for _ in 0..12 {
        statuses.push(call(&guesser, Method::GET, "/api/v1/whoami", None).await.0);
    }
    assert!(statuses[..10].iter().all(|s| *s == StatusCode::UNAUTHORIZED), "{statuses:?}");
    assert_eq!(statuses[11], StatusCode::TOO_MANY_REQUESTS);
    // Failed guesses cost the audit log a bounded number of entries.
    let (_, audit) = call(&operator, Method::GET, "/api/v1/audit", None).await;
    let refusals = audit["entries"].as_array().unwrap().iter().filter(|e| e["action"] == "admin.authenticate").count();
    assert!((1..=2).contains(&refusals), "{refusals} audit entries for 12 failed guesses");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_speaks_http2_and_http1() {
    init_logging();
    let tc = TestCollector::start().await;
    let credentials = issue_admin(&tc, AdminRole::Operator, None);
    let h2 = api_client(&credentials).await;
    let response = h2.request(Method::GET, "/api/v1/whoami").send().await.unwrap();
    assert_eq!((response.status(), response.version()), (StatusCode::OK, reqwest::Version::HTTP_2));
    // curl over HTTP/1.1, as a script would.
    if !require_tool("curl", "apt-get install curl") {
        return;
    }
    let out = curl(&tc, &credentials, &["--http1.1", "-sS", "-w", "\n%{http_version}", "/api/v1/whoami"]);
    assert!(out.ends_with("\n1.1"), "{out}");
    assert!(out.contains("\"role\":\"operator\""), "{out}");
}

/// Runs curl against the collector's admin API with `credentials`; the
/// last argument is the path. Returns its standard output.
fn curl(tc: &TestCollector, credentials: &AdminCredentials, args: &[&str]) -> String {
    let addr = tc.collector.admin_addr().unwrap();
    let (path, flags) = args.split_last().unwrap();
    let output = std::process::Command::new("curl")
        .args(["--cacert", credentials.ca.to_str().unwrap()])
        .args(["--cert", credentials.cert.to_str().unwrap(), "--key", credentials.key.to_str().unwrap()])
        .args(["--resolve", &format!("localhost:{}:127.0.0.1", addr.port())])
        .args(flags)
        .arg(format!("https://localhost:{}{path}", addr.port()))
        .output()
        .expect("curl runs");
    assert!(output.status.success(), "curl: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

/// docs/OPERATIONS.md's curl examples, run as written (a `set -e` shell
/// script) with the variables they name pointing at a real collector and
/// a real connected agent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_curl_examples_in_operations_md_work() {
    init_logging();
    if !require_tool("curl", "apt-get install curl") || !require_tool("jq", "apt-get install jq") {
        return;
    }
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/OPERATIONS.md")).unwrap();
    let start = doc.find("<!-- curl-examples:start -->").expect("start marker");
    let end = doc.find("<!-- curl-examples:end -->").expect("end marker");
    let block = &doc[start..end];
    let script: String = block
        .lines()
        .skip_while(|l| !l.starts_with("```sh"))
        .skip(1)
        .take_while(|l| !l.starts_with("```"))
        // The test gives these itself.
        .filter(|l| !["API=", "ADMIN=", "OPERATOR=", "CA=", "DEVICE="].iter().any(|v| l.starts_with(v)))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(script.matches("curl ").count() >= 15, "the examples are there:\n{script}");

    let device = issue_device("acme");
    let tc = TestCollector::start().await;
    let agent = start_agent(tc.addr(), &device);
    wait_for_status(&agent, "connected", |s| s.connected).await;
    let admin = issue_admin(&tc, AdminRole::OrgAdmin, Some("acme"));
    let operator = issue_admin(&tc, AdminRole::Operator, None);
    let flags = |c: &AdminCredentials| {
        format!("--cacert {} --cert {} --key {}", c.ca.display(), c.cert.display(), c.key.display())
    };
    let port = tc.collector.admin_addr().unwrap().port();
    let mut command = std::process::Command::new("sh");
    command
        .arg("-euc")
        .arg(&script)
        .env("API", format!("https://localhost:{port}/api/v1"))
        .env("ADMIN", flags(&admin))
        .env("OPERATOR", flags(&operator))
        .env("CA", &admin.ca)
        .env("DEVICE", device.identity.device.as_str());
    // The collector runs on this runtime: wait for the script elsewhere.
    let output = tokio::task::spawn_blocking(move || command.output()).await.unwrap().expect("sh runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the examples failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    // What they did happened: the organisation is gone, the token revoked,
    // and each step is in the audit log.
    assert!(stdout.contains("\"key_destroyed\""), "{stdout}");
    let operator_api = api_client(&operator).await;
    let (_, audit) = call(&operator_api, Method::GET, "/api/v1/audit?org=acme", None).await;
    let actions: Vec<&str> =
        audit["entries"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    for action in [
        "consent.set",
        "support.grant",
        "support.revoke",
        "capture.start",
        "capture.stop",
        "subject.erase",
        "subject.correct",
        "subject.block",
        "subject.blocked",
        "subject.unblock",
        "token.revoke",
        "org.delete",
    ] {
        assert!(actions.contains(&action), "{action} not audited: {actions:?}");
    }
    drop(agent);
}

/// Runs the `glimpse-collector` command line with `args`, and `token` in
/// the environment if given; returns (success, stdout, stderr).
async fn cli(args: Vec<String>, token: Option<String>) -> (bool, String, String) {
    tokio::task::spawn_blocking(move || {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_collector-under-test"));
        command.args(&args).env_remove("GLIMPSE_API_TOKEN");
        if let Some(token) = token {
            command.env("GLIMPSE_API_TOKEN", token);
        }
        let out = command.output().expect("the CLI runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_creates_lists_uses_and_revokes_tokens() {
    init_logging();
    let tc = TestCollector::start().await;
    let admin = issue_admin(&tc, AdminRole::OrgAdmin, Some("cliorg"));
    let with_cert = |more: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = more.iter().map(|s| s.to_string()).collect();
        for (flag, value) in [
            ("--admin", admin.address.clone()),
            ("--ca", admin.ca.display().to_string()),
            ("--cert", admin.cert.display().to_string()),
            ("--key", admin.key.display().to_string()),
        ] {
            args.push(flag.into());
            args.push(value);
        }
        args
    };
    let (ok, token, err) = cli(
        with_cert(&[
            "admin",
            "token",
            "create",
            "--name",
            "ci",
            "--role",
            "org-admin",
            "--org",
            "cliorg",
            "--read-only",
        ]),
        None,
    )
    .await;
    assert!(ok, "{err}");
    let token = token.trim().to_owned();
    assert!(token.starts_with("glimpse_") && err.contains("shown this once"), "{token} {err}");
    // The token, from the environment, works for reads and not for changes.
    let by_token = |more: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = more.iter().map(|s| s.to_string()).collect();
        args.extend(["--admin".into(), admin.address.clone(), "--ca".into(), admin.ca.display().to_string()]);
        args
    };
    let (ok, out, err) = cli(by_token(&["admin", "status", "--org", "cliorg"]), Some(token.clone())).await;
    assert!(ok, "{out}{err}");
    let (ok, out, err) =
        cli(by_token(&["admin", "consent", "--org", "cliorg", "--capture", "on"]), Some(token.clone())).await;
    assert!(!ok && format!("{out}{err}").contains("read-only"), "{out}{err}");
    // A support grant of some kinds on some devices, from the command line.
    let grant = ["admin", "support", "grant", "--org", "cliorg", "--hours", "2", "--kinds", "captures,metadata"];
    let (ok, out, err) = cli(with_cert(&[&grant[..], &["--devices", "ap-2,ap-1"]].concat()), None).await;
    assert!(ok && out.contains("support may read until"), "{out}{err}");
    let policy = tc.collector.store().policies().get(&glimpse_common::identity::OrgId::new("cliorg").unwrap());
    assert_eq!(policy.support_scope.to_string(), "devices, metadata, captures on devices ap-1, ap-2");
    let (ok, out, err) = cli(with_cert(&[&grant[..8], &["everything"]].concat()), None).await;
    assert!(!ok && err.contains("use devices, metadata, captures or exports"), "{out}{err}");
    // Data key rotation: refused while the organisation has stored nothing
    // (so has no key), then done, and the versions shown.
    let (ok, out, err) = cli(with_cert(&["admin", "rotate-data-key", "cliorg"]), None).await;
    assert!(!ok && format!("{out}{err}").contains("no data key"), "{out}{err}");
    tc.collector.store().org_keys().get_or_create(&glimpse_common::identity::OrgId::new("cliorg").unwrap()).unwrap();
    let (ok, out, err) = cli(with_cert(&["admin", "rotate-data-key", "cliorg"]), None).await;
    assert!(ok && out.contains("version 2 is current") && out.contains("version 1 is retiring"), "{out}{err}");
    let (ok, out, err) = cli(with_cert(&["admin", "rotate-data-key", "cliorg", "--status"]), None).await;
    assert!(ok && out.contains("current") && out.contains("retiring") && !out.contains("rotated"), "{out}{err}");
    let id = token.split('_').nth(1).unwrap().to_owned();
    let (ok, list, err) = cli(with_cert(&["admin", "token", "list"]), None).await;
    assert!(ok && list.contains(&id) && list.contains("active") && !list.contains(&token), "{list}{err}");
    let (ok, out, err) = cli(with_cert(&["admin", "token", "revoke", "--id", &id]), None).await;
    assert!(ok && out.contains("revoked"), "{out}{err}");
    let (ok, out, err) = cli(by_token(&["admin", "status", "--org", "cliorg"]), Some(token)).await;
    assert!(!ok && format!("{out}{err}").contains("revoked"), "{out}{err}");
}

/// One address cannot take every connection slot with handshakes it never
/// finishes: past its share its connections are closed at once, and the
/// slots come back when it lets go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_holds_at_most_its_share_of_connections() {
    use tokio::io::AsyncReadExt;
    init_logging();
    let tc = TestCollector::start().await;
    let operator = issue_admin(&tc, AdminRole::Operator, None);
    let addr = tc.collector.admin_addr().unwrap();
    let mut idle = Vec::new();
    for _ in 0..glimpse_collector::api::limiter::MAX_CONNECTIONS_PER_SOURCE {
        idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    let mut one_more = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 1];
    let read = tokio::time::timeout(DEADLINE, one_more.read(&mut buf)).await.expect("closed at once");
    assert!(matches!(read, Ok(0) | Err(_)), "the connection past the share is closed: {read:?}");
    drop(idle);
    // Once they are gone, the address gets in again (each idle connection is
    // let go as soon as the collector sees it closed).
    let client = api_client(&operator).await;
    let started = std::time::Instant::now();
    loop {
        match client.request(Method::GET, "/api/v1/whoami").send().await {
            Ok(response) if response.status() == StatusCode::OK => break,
            other => assert!(started.elapsed() < DEADLINE, "still refused: {other:?}"),
        }
        tokio::task::yield_now().await;
    }
}
