//! Incident alerts end to end: a collector with an `[alerts]` section, real
//! receivers on 127.0.0.1 (an HTTPS webhook on tokio-rustls with a
//! certificate of the test PKI that checks every signature itself, syslog
//! over UDP, over TCP with octet counting, and on a local datagram socket),
//! and real conditions: a short-lived device certificate, a consent change
//! and a support grant through the admin API, support staff reading under
//! the grant, a device gone silent (the collector's injected clock moved
//! on), an admin certificate near its end, and the audit log edited on
//! disk while the collector runs. Each alert must reach every receiver,
//! carry a valid signature, and be in the audit log.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use reqwest::Method;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use glimpse_common::clock::{Clock, ManualClock, SystemClock};
use glimpse_common::identity::{AdminIdentity, AdminName, AdminRole, DeviceKind, OrgId};
use glimpse_tests::{api_call, api_client, init_logging, issue_admin, pki, start_agent, wait_until, TestCollector};

const ORG: &str = "alertco";
const SECRET: &str = "webhook-shared-secret-for-the-test";

/// What the webhook received: the headers (lowercase names) and the body.
#[derive(Debug, Clone)]
struct Post {
    headers: HashMap<String, String>,
    body: Vec<u8>,
    /// The receiver's clock when it arrived (the collector's injected one).
    received_secs: i64,
}

type Log<T> = Arc<Mutex<Vec<T>>>;

#[derive(Debug, Default)]
struct Received {
    webhook: Log<Post>,
    udp: Log<String>,
    tcp: Log<String>,
    tls: Log<String>,
    local: Log<String>,
}

/// A TLS server configuration with the certificate `glimpse-certs` made
/// for the collector of the PKI in `dir` (names localhost and 127.0.0.1).
fn acceptor(dir: &Path) -> tokio_rustls::TlsAcceptor {
    let certs = glimpse_files::load_certs(&glimpse_certs::collector_cert_path(dir)).unwrap();
    let key = glimpse_files::load_key(&glimpse_certs::collector_key_path(dir)).unwrap();
    let tls = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(tls))
}

/// An HTTPS webhook receiver: every POST to /hook, answered 204.
async fn webhook_server(acceptor: tokio_rustls::TlsAcceptor, clock: Arc<ManualClock>, log: Log<Post>) -> u16 {
    let https = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = https.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = https.accept().await else { return };
            let (acceptor, log, clock) = (acceptor.clone(), log.clone(), clock.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                if let Some(mut post) = read_post(&mut tls).await {
                    post.received_secs = clock.now_millis().div_euclid(1000);
                    log.lock().unwrap().push(post);
                    let _ = tls
                        .write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                        .await;
                    let _ = tls.shutdown().await;
                }
            });
        }
    });
    port
}

/// A syslog receiver over TCP, or TLS with `acceptor`: octet-counted
/// frames (RFC 6587, RFC 5425), "LEN SP MSG" repeated.
async fn stream_server(acceptor: Option<tokio_rustls::TlsAcceptor>, log: Log<String>) -> u16 {
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = tcp.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = tcp.accept().await else { return };
            let (log, acceptor) = (log.clone(), acceptor.clone());
            tokio::spawn(async move {
                match acceptor {
                    Some(acceptor) => {
                        if let Ok(tls) = acceptor.accept(stream).await {
                            read_frames(tls, log).await;
                        }
                    }
                    None => read_frames(stream, log).await,
                }
            });
        }
    });
    port
}

async fn read_frames(mut stream: impl AsyncReadExt + Unpin, log: Log<String>) {
    loop {
        let mut len = 0usize;
        loop {
            let Ok(byte) = stream.read_u8().await else { return };
            match byte {
                b'0'..=b'9' if len < 100_000 => len = len * 10 + usize::from(byte - b'0'),
                b' ' => break,
                _ => panic!("not an octet-counted frame (byte {byte})"),
            }
        }
        let mut message = vec![0u8; len];
        if stream.read_exact(&mut message).await.is_err() {
            return;
        }
        log.lock().unwrap().push(String::from_utf8(message).expect("UTF-8"));
    }
}

/// Starts every receiver; returns their ports: webhook, UDP, TCP, TLS.
async fn receivers(received: &Received, socket: &Path, clock: Arc<ManualClock>) -> (u16, u16, u16, u16) {
    let ours = acceptor(&pki().ours);
    let https = webhook_server(ours.clone(), clock, received.webhook.clone()).await;
    let tcp = stream_server(None, received.tcp.clone()).await;
    let tls = stream_server(Some(ours), received.tls.clone()).await;

    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let udp_port = udp.local_addr().unwrap().port();
    let log = received.udp.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        while let Ok((n, _)) = udp.recv_from(&mut buf).await {
            log.lock().unwrap().push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    });

    let local = tokio::net::UnixDatagram::bind(socket).unwrap();
    let log = received.local.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        while let Ok(n) = local.recv(&mut buf).await {
            log.lock().unwrap().push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    });
    (https, udp_port, tcp, tls)
}

/// One HTTP/1.1 POST: the request line and headers, then the body by its
/// Content-Length (bounded).
async fn read_post(stream: &mut (impl AsyncReadExt + Unpin)) -> Option<Post> {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(stream.read_u8().await.ok()?);
        assert!(head.len() < 16 * 1024, "headers too long");
    }
    let text = String::from_utf8(head).ok()?;
    let mut lines = text.split("\r\n");
    let request = lines.next()?;
    assert!(request.starts_with("POST /hook "), "{request}");
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let len: usize = headers.get("content-length")?.parse().ok()?;
    assert!(len < 64 * 1024);
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await.ok()?;
    Some(Post { headers, body, received_secs: 0 })
}

/// The receiver's own check of a POST, as docs/OPERATIONS.md tells
/// receivers to do it: HMAC-SHA256 over "<timestamp>.<body>" with the
/// shared secret, compared in constant time, and a fresh timestamp.
fn verify(post: &Post) -> Value {
    let timestamp = post.headers.get("x-glimpse-timestamp").expect("timestamp header");
    let signature = post.headers.get("x-glimpse-signature").expect("signature header");
    let hex_tag = signature.strip_prefix("v1=").expect("v1 scheme");
    let tag = hex_decode(hex_tag);
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET.as_bytes());
    let mut message = format!("{timestamp}.").into_bytes();
    message.extend_from_slice(&post.body);
    ring::hmac::verify(&key, &message, &tag).expect("the signature verifies");
    let at: i64 = timestamp.parse().unwrap();
    assert!((at - post.received_secs).abs() <= 300, "fresh: {at} vs {}", post.received_secs);
    assert_eq!(post.headers.get("content-type").map(String::as_str), Some("application/json"));
    serde_json::from_slice(&post.body).expect("JSON body")
}

fn hex_decode(text: &str) -> Vec<u8> {
    assert_eq!(text.len(), 64);
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex")).collect()
}

impl Received {
    /// Every verified webhook payload so far.
    fn alerts(&self) -> Vec<Value> {
        self.webhook.lock().unwrap().iter().map(verify).collect()
    }

    /// The payload of the first alert matching `kind` and `matches`, if it
    /// reached every receiver.
    fn everywhere(&self, kind: &str, matches: impl Fn(&Value) -> bool) -> Option<Value> {
        let alert = self.alerts().into_iter().find(|a| a["kind"] == kind && matches(a))?;
        let id = alert["id"].as_str()?.to_owned();
        let marker = format!("id=\"{id}\"");
        let udp = self.udp.lock().unwrap().iter().any(|l| l.contains(&marker));
        let tcp = self.tcp.lock().unwrap().iter().any(|l| l.contains(&marker));
        let tls = self.tls.lock().unwrap().iter().any(|l| l.contains(&marker));
        let local = self
            .local
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains(&format!("id={id}:")) || l.contains(&format!("id={id} ")));
        (udp && tcp && tls && local).then_some(alert)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn incidents_reach_the_webhook_syslog_and_the_audit_log() {
    init_logging();
    let dir = tempfile::tempdir().unwrap();
    let received = Arc::new(Received::default());
    let socket = dir.path().join("log.sock");
    let clock = Arc::new(ManualClock::new(SystemClock.now_millis()));
    let (https, udp, tcp, tls) = receivers(&received, &socket, clock.clone()).await;
    let secret_file = dir.path().join("webhook.secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    std::fs::set_permissions(&secret_file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();

    let pki_dir = &pki().ours;
    // A device whose certificate ends in ten days, and an admin whose ends in five.
    let soon = |days: i64| glimpse_certs::Validity {
        not_before: None,
        not_after: Some(time::OffsetDateTime::from_unix_timestamp(clock.now_millis() / 1000 + days * 86_400).unwrap()),
    };
    let device = glimpse_tests::issue_device_in(pki_dir, ORG, DeviceKind::Ap, soon(10));
    let expiring_admin = AdminName::new(format!("expiring-{}", std::process::id())).unwrap();
    {
        let identity =
            AdminIdentity::new(expiring_admin.clone(), AdminRole::OrgAdmin, Some(OrgId::new(ORG).unwrap())).unwrap();
        let _guard = pki().lock();
        glimpse_certs::issue_admin(pki_dir, &identity, &soon(5), false).unwrap();
    }

    let tables = format!(
        "[alerts]\ncollector_name = \"collector-under-test\"\ncheck_interval_secs = 1\nrepeat_after_secs = 60\n\
         certificate_lead_days = 30\ndevice_silent_minutes = 600\naudit_verify_interval_secs = 3600\n\
         [alerts.device_silent_orgs]\n{ORG} = 10\n\
         [alerts.webhook]\nurl = \"https://127.0.0.1:{https}/hook\"\nsecret_file = {secret_file:?}\nca = {ca:?}\n\
         [alerts.syslog]\ntargets = [\"udp://127.0.0.1:{udp}\", \"tcp://127.0.0.1:{tcp}\", \"tls://localhost:{tls}\", \"unix:{socket}\"]\nfacility = \"local5\"\nca = {ca:?}\n",
        ca = glimpse_certs::ca_cert_path(pki_dir),
        socket = socket.display(),
    );
    let collector = TestCollector::start_with_tables_at(None, &tables, clock.clone()).await;

    // The admin certificate near its end is found at the first check.
    wait_until("the admin certificate's alert everywhere", || {
        received
            .everywhere("certificate-expiring", |a| {
                a["summary"].as_str().is_some_and(|s| s.contains(expiring_admin.as_str()) && s.contains("in 4 day(s)"))
            })
            .is_some()
    })
    .await;

    // A device with a short-lived certificate connects and sends.
    let agent = start_agent(collector.addr(), &device);
    wait_until("records stored", || collector.stored_records_of(&device.identity) > 0).await;
    let device_id = device.identity.device.to_string();
    let cert = {
        let id = device_id.clone();
        let mut found = None;
        wait_until("the device certificate's alert everywhere", || {
            found = received.everywhere("certificate-expiring", |a| a["device"] == id.as_str());
            found.is_some()
        })
        .await;
        found.unwrap()
    };
    assert_eq!((cert["org"].as_str(), cert["severity"].as_str()), (Some(ORG), Some("warning")));
    assert_eq!(cert["collector"], "collector-under-test");
    assert_eq!(cert["key"], format!("certificate-expiring|{ORG}|{device_id}|certificate:device"));

    // The organisation's admin turns capture consent on and grants support,
    // through the admin API.
    let admin = api_client(&issue_admin(&collector, AdminRole::OrgAdmin, Some(ORG))).await;
    let (status, _) =
        api_call(&admin, Method::PUT, &format!("/api/v1/orgs/{ORG}/consent"), Some(json!({"capture": true}))).await;
    assert!(status.is_success(), "{status}");
    let (status, _) =
        api_call(&admin, Method::POST, &format!("/api/v1/orgs/{ORG}/support"), Some(json!({"hours": 1}))).await;
    assert!(status.is_success(), "{status}");
    wait_until("the consent alert everywhere", || {
        received.everywhere("consent-changed", |a| a["subject"] == "capture:on" && a["org"] == ORG).is_some()
    })
    .await;
    wait_until("the support grant's alert everywhere", || {
        received.everywhere("consent-changed", |a| a["subject"] == "support:granted").is_some()
    })
    .await;

    // Support staff read the organisation's devices under the grant.
    let support = api_client(&issue_admin(&collector, AdminRole::Support, Some(ORG))).await;
    let (status, _) = api_call(&support, Method::GET, &format!("/api/v1/orgs/{ORG}/devices"), None).await;
    assert!(status.is_success(), "{status}");
    let used = {
        let mut found = None;
        wait_until("the support access alert everywhere", || {
            found = received.everywhere("support-access", |a| a["org"] == ORG);
            found.is_some()
        })
        .await;
        found.unwrap()
    };
    assert!(used["summary"].as_str().unwrap().contains("devices.list"), "{used}");
    // Reading again within repeat_after_secs is the same condition.
    let (status, _) = api_call(&support, Method::GET, &format!("/api/v1/orgs/{ORG}/devices"), None).await;
    assert!(status.is_success());

    // The device goes quiet, and the collector's clock moves past the
    // organisation's ten minutes.
    agent.shutdown().await;
    wait_until("the device's session ended", || {
        collector.collector.directory().connected(&device.identity.org).is_empty()
    })
    .await;
    clock.advance(11 * 60_000);
    let silent = {
        let id = device_id.clone();
        let mut found = None;
        wait_until("the silent device's alert everywhere", || {
            found = received.everywhere("device-silent", |a| a["device"] == id.as_str());
            found.is_some()
        })
        .await;
        found.unwrap()
    };
    assert!(silent["summary"].as_str().unwrap().contains("threshold 10 minutes"), "{silent}");

    // Someone edits the newest entries of the audit log on disk: the check
    // of the lines appended since the last verification finds it (the
    // whole chain is verified only hourly here).
    let log = collector.config.data_dir.join("audit.log");
    let text = std::fs::read_to_string(&log).unwrap();
    let last = text.trim_end().rsplit('\n').next().unwrap().to_owned();
    let edited = if last.contains("\"outcome\":\"done\"") {
        last.replacen("\"outcome\":\"done\"", "\"outcome\":\"refused\"", 1)
    } else {
        last.replacen("\"outcome\":\"refused\"", "\"outcome\":\"done\"", 1)
    };
    assert_ne!(edited, last);
    std::fs::write(&log, text.replacen(&last, &edited, 1)).unwrap();
    let broken = {
        let mut found = None;
        wait_until("the audit chain alert everywhere", || {
            found = received.everywhere("audit-chain-broken", |_| true);
            found.is_some()
        })
        .await;
        found.unwrap()
    };
    assert_eq!(broken["severity"], "critical");
    assert!(broken["summary"].as_str().unwrap().contains("failed verification"), "{broken}");

    // Every alert sent is in the audit log, by its id, as alert.<kind>.
    let sent = received.alerts();
    let search = glimpse_store::audit::AuditSearch { action: Some("alert".into()), ..Default::default() };
    let mut audited = Vec::new();
    wait_until("every alert audited", || {
        audited = collector.collector.store().audit().search(&search, 10_000).unwrap();
        sent.iter().all(|a| {
            let id = format!("id {}:", a["id"].as_str().unwrap());
            audited
                .iter()
                .any(|e| e.detail.starts_with(&id) && e.action == format!("alert.{}", a["kind"].as_str().unwrap()))
        })
    })
    .await;
    assert!(audited.iter().all(|e| e.actor == "collector"));
    // One support access alert although support read twice.
    assert_eq!(sent.iter().filter(|a| a["kind"] == "support-access").count(), 1, "{sent:?}");
    // Syslog lines are RFC 5424 with the facility asked for (local5 = 21):
    // warning 21*8+4, notice 21*8+5, critical 21*8+2.
    let udp_lines = received.udp.lock().unwrap().clone();
    assert!(
        udp_lines.iter().all(|l| l.starts_with("<17") && l.contains(">1 ") && l.contains("[glimpse@32473 ")),
        "{udp_lines:?}"
    );
    assert!(udp_lines.iter().any(|l| l.starts_with("<170>1 ") && l.contains(" audit-chain-broken ")), "{udp_lines:?}");
    // No secret anywhere a receiver sees.
    let everything =
        format!("{udp_lines:?}{:?}{:?}{sent:?}", received.tcp.lock().unwrap(), received.local.lock().unwrap());
    assert!(!everything.contains(SECRET));

    let metrics = collector.collector.telemetry().render();
    assert!(metrics.contains("glimpse_alerts_delivered_total{receiver=\"webhook\"}"), "{metrics}");
    assert!(metrics.contains("glimpse_alerts_suppressed_total{reason=\"repeat\"}"), "{metrics}");
}

/// A receiver whose certificate is not from the configured CA gets
/// nothing (the attempt fails and is counted); SIGHUP's reload of
/// `[alerts]` moves alerts to another receiver and a new secret, and a
/// reload with a secret file open to others is refused, keeping the
/// running configuration.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unverified_receivers_get_nothing_and_reload_replaces_receivers() {
    init_logging();
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(SystemClock.now_millis()));
    let foreign_log: Log<Post> = Log::default();
    let good_log: Log<Post> = Log::default();
    let foreign = webhook_server(acceptor(&pki().foreign), clock.clone(), foreign_log.clone()).await;
    let good = webhook_server(acceptor(&pki().ours), clock.clone(), good_log.clone()).await;
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let udp_port = udp.local_addr().unwrap().port();
    let secret = |name: &str, text: &str, mode: u32| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap();
        path
    };
    let first = secret("first.secret", "first-secret", 0o600);
    let second = secret("second.secret", "second-secret", 0o600);
    let open = secret("open.secret", "open-secret", 0o644);
    let section = |port: u16, secret: &Path| {
        format!(
            "[alerts]\ncheck_interval_secs = 1\nrepeat_after_secs = 60\n\
             [alerts.webhook]\nurl = \"https://127.0.0.1:{port}/hook\"\nsecret_file = {secret:?}\nca = {ca:?}\nmax_attempts = 1\n\
             [alerts.syslog]\ntargets = [\"udp://127.0.0.1:{udp_port}\"]\n",
            ca = glimpse_certs::ca_cert_path(&pki().ours),
        )
    };
    let collector = TestCollector::start_with_tables_at(None, &section(foreign, &first), clock.clone()).await;
    let org = OrgId::new(ORG).unwrap();
    glimpse_tests::set_consent(&collector, &org, true);
    // Other tests' short-lived certificates in the shared PKI alert too.
    let mut buf = vec![0u8; 8192];
    loop {
        let n = tokio::time::timeout(glimpse_tests::DEADLINE, udp.recv(&mut buf)).await.expect("syslog line").unwrap();
        if String::from_utf8_lossy(&buf[..n]).contains(" consent-changed ") {
            break;
        }
    }
    let failed = || {
        let text = collector.collector.telemetry().render();
        let line = text
            .lines()
            .find(|l| l.starts_with("glimpse_alerts_dropped_total{receiver=\"webhook\",reason=\"failed\"}"));
        line.and_then(|l| l.rsplit(' ').next()).and_then(|n| n.parse::<u64>().ok()).unwrap_or(0)
    };
    wait_until("the webhook's failed deliveries counted", || failed() >= 1).await;
    assert!(foreign_log.lock().unwrap().is_empty(), "a receiver the CA did not certify got an alert");

    // Edit the file and reload, as SIGHUP does: the good receiver, the new secret.
    let config_path = collector.config_path();
    let base = std::fs::read_to_string(&config_path).unwrap();
    let without = &base[..base.find("[alerts]").unwrap()];
    std::fs::write(&config_path, format!("{without}{}", section(good, &open))).unwrap();
    let config = glimpse_collector::config::CollectorConfig::load(&config_path).unwrap();
    let refused = collector.collector.reload_alerts(&config).unwrap_err();
    assert!(refused.to_string().contains("open.secret"), "{refused}");
    std::fs::write(&config_path, format!("{without}{}", section(good, &second))).unwrap();
    let config = glimpse_collector::config::CollectorConfig::load(&config_path).unwrap();
    collector.collector.reload_alerts(&config).unwrap();
    glimpse_tests::set_consent(&collector, &org, false);
    let is_capture_off = |p: &Post| String::from_utf8_lossy(&p.body).contains("\"capture:off\"");
    wait_until("the alert at the new receiver", || good_log.lock().unwrap().iter().any(is_capture_off)).await;
    let post = good_log.lock().unwrap().iter().find(|p| is_capture_off(p)).unwrap().clone();
    let timestamp = &post.headers["x-glimpse-timestamp"];
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"second-secret");
    let mut message = format!("{timestamp}.").into_bytes();
    message.extend_from_slice(&post.body);
    let tag = hex_decode(post.headers["x-glimpse-signature"].strip_prefix("v1=").unwrap());
    ring::hmac::verify(&key, &message, &tag).expect("signed with the reloaded secret");
    let alert: Value = serde_json::from_slice(&post.body).unwrap();
    assert_eq!((alert["kind"].as_str(), alert["subject"].as_str()), (Some("consent-changed"), Some("capture:off")));
    assert!(foreign_log.lock().unwrap().is_empty());
}

/// Storage running out while a device sends: the batches it cannot store
/// are refused (the device keeps them), and the next check alerts. Mounts
/// a small tmpfs, so it runs as root like the full-disk fault test.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_disk_is_alerted() {
    init_logging();
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = udp.local_addr().unwrap().port();
    let tables = format!(
        "[alerts]\ncheck_interval_secs = 1\nrepeat_after_secs = 60\n[alerts.syslog]\ntargets = [\"udp://127.0.0.1:{port}\"]\n"
    );
    // Registered before the collector starts, which imports registrations.
    let device = glimpse_tests::issue_device(ORG);
    let (_dir, _mounted, config, collector) =
        glimpse_tests::disk::collector_on_small_disk_edited("16m", |text| format!("{text}{tables}")).await;
    let agent = start_agent(collector.local_addr(), &device);
    let stored = || {
        collector
            .store()
            .read(&device.identity.org, glimpse_common::record::DataKind::Metadata, None, None)
            .map(|o| o.records.len())
            .unwrap_or(0)
    };
    wait_until("records stored", || stored() > 0).await;
    let filler = glimpse_tests::disk::fill_disk(&config.data_dir);
    let mut buf = vec![0u8; 8192];
    let line = loop {
        let n = tokio::time::timeout(glimpse_tests::DEADLINE, udp.recv(&mut buf)).await.expect("syslog line").unwrap();
        let line = String::from_utf8_lossy(&buf[..n]).into_owned();
        if line.contains(" storage-unavailable ") {
            break line;
        }
    };
    assert!(line.starts_with("<26>1 "), "daemon.critical: {line}");
    assert!(line.contains("subject=\"ingest\"") && line.contains("could not be stored"), "{line}");
    std::fs::remove_file(filler).unwrap();
    agent.shutdown().await;
    collector.shutdown().await;
}
