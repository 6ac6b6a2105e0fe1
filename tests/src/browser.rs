//! A small W3C WebDriver client for the console's browser tests: Debian's
//! `chromedriver` started on a port of its own choosing, a headless
//! Chromium session per [`Browser`], and the handful of commands the tests
//! use (navigate, find by CSS, click, type, read text and properties, run
//! scripts, take screenshots, read cookies, read the network log).
//!
//! Written over `reqwest` rather than taken from a WebDriver crate: the
//! protocol is plain JSON over HTTP to 127.0.0.1, and the crates that speak
//! it bring a second HTTP stack and TLS back ends this workspace keeps out.
//!
//! Every session records the network requests Chromium makes (its
//! performance log), so a test can assert that no page fetched anything
//! from another origin ([`Browser::finish`] does it for every test).

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

/// How long a wait for page state may take before the test fails: generous
/// for a busy 2-core machine; no assertion depends on speed.
pub const PAGE_DEADLINE: Duration = Duration::from_secs(20);

/// The key W3C WebDriver uses for an element reference.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Whether the browser tests can run here: Debian's `chromium` and
/// `chromium-driver` on `PATH` (see [`crate::require_tool`]: skipped with
/// one line when missing, a failure under CI).
pub fn browser_available() -> bool {
    crate::require_tool("chromium", "apt-get install chromium")
        && crate::require_tool("chromedriver", "apt-get install chromium-driver")
}

/// A `chromedriver` child process on a port of 127.0.0.1 it picked itself
/// (`--port=0`, so parallel tests never race for one). Dropping it deletes
/// every session it still has (closing their browsers) and kills it.
pub struct ChromeDriver {
    child: Child,
    port: u16,
    http: reqwest::Client,
    sessions: Arc<Mutex<Vec<String>>>,
}

impl std::fmt::Debug for ChromeDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChromeDriver").field("port", &self.port).finish_non_exhaustive()
    }
}

impl ChromeDriver {
    /// Starts `chromedriver` and waits until its `/status` says ready.
    pub async fn start() -> Self {
        // Before the child exists, so no panic here can leave it running.
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(plain_http_only())
            .timeout(Duration::from_secs(120))
            .build()
            .expect("HTTP client");
        let mut child = Command::new("chromedriver")
            .arg("--port=0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian package chromium-driver) starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        // The port is in a line of its start-up banner; the thread then
        // keeps draining stdout so chromedriver never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if !sent {
                    if let Some(port) = banner_port(&line) {
                        let _ = tx.send(port);
                        sent = true;
                    }
                }
            }
        });
        let port = match rx.recv_timeout(PAGE_DEADLINE) {
            Ok(port) => port,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("chromedriver did not say which port it listens on");
            }
        };
        let driver = ChromeDriver { child, port, http, sessions: Arc::default() };
        let deadline = Instant::now() + PAGE_DEADLINE;
        loop {
            let ready =
                driver.http.get(format!("http://127.0.0.1:{port}/status")).send().await.ok().map(|r| r.json::<Value>());
            if let Some(body) = ready {
                if body.await.is_ok_and(|v| v["value"]["ready"] == json!(true)) {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "chromedriver on port {port} never became ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        driver
    }

    /// A new headless Chromium session: 1280×900, certificate errors ignored
    /// (the test collector's CA is not the browser's), no background
    /// networking, and every request the pages make logged.
    pub async fn browser(&self) -> Browser {
        let capabilities = json!({
            "capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "acceptInsecureCerts": true,
                "goog:loggingPrefs": {"performance": "ALL"},
                "goog:chromeOptions": {
                    "binary": "/usr/bin/chromium",
                    "args": [
                        "--headless=new", "--no-sandbox", "--ignore-certificate-errors",
                        "--window-size=1280,900", "--disable-dev-shm-usage", "--disable-gpu",
                        "--no-first-run", "--no-default-browser-check", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync", "--disable-extensions",
                        "--force-device-scale-factor=1", "--lang=en-GB",
                    ],
                    "perfLoggingPrefs": {"enableNetwork": true, "enablePage": false},
                },
            }}
        });
        let url = format!("http://127.0.0.1:{}/session", self.port);
        let response = self.http.post(url).json(&capabilities).send().await.expect("new session request");
        let body: Value = response.json().await.expect("new session answer");
        let id = body["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("chromedriver refused a session: {body}"))
            .to_owned();
        self.sessions.lock().unwrap_or_else(|p| p.into_inner()).push(id.clone());
        Browser {
            http: self.http.clone(),
            base: format!("http://127.0.0.1:{}/session/{id}", self.port),
            id,
            sessions: self.sessions.clone(),
            requested: Mutex::default(),
        }
    }
}

/// The TLS settings reqwest insists on having (the workspace builds it
/// without a default crypto provider), though WebDriver here is plain HTTP
/// to 127.0.0.1: ring, and no trusted root, so no HTTPS request could
/// succeed by accident.
fn plain_http_only() -> rustls::ClientConfig {
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth()
}

/// The port in chromedriver's "started successfully on port N." line.
fn banner_port(line: &str) -> Option<u16> {
    let rest = line.split("on port ").nth(1)?;
    rest.trim_end_matches(|c: char| !c.is_ascii_digit()).parse().ok().filter(|p| *p != 0)
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        // Synchronously (Drop cannot await, and may run during a panic):
        // a raw HTTP DELETE per session left open closes its browser, so no
        // Chromium outlives its test.
        let sessions = std::mem::take(&mut *self.sessions.lock().unwrap_or_else(|p| p.into_inner()));
        for id in sessions {
            if let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(20)));
                let request = format!(
                    "DELETE /session/{id} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
                    self.port
                );
                if stream.write_all(request.as_bytes()).is_ok() {
                    // chromedriver answers once the browser has quit, and may
                    // keep the connection open after: the end of the
                    // answer's headers is enough.
                    let (mut seen, mut buf) = (Vec::new(), [0u8; 1024]);
                    while !seen.windows(4).any(|w| w == b"\r\n\r\n") && seen.len() < 64 * 1024 {
                        match stream.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => seen.extend_from_slice(&buf[..n]),
                        }
                    }
                }
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The answer of a `fetch` made from inside the page (so with its cookies,
/// origin and `Sec-Fetch-*` headers, like the console's own calls).
#[derive(Debug, Clone)]
pub struct PageFetch {
    /// HTTP status.
    pub status: u16,
    /// The body as text.
    pub text: String,
}

impl PageFetch {
    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }
}

/// One browser session (one Chromium) of a [`ChromeDriver`].
pub struct Browser {
    http: reqwest::Client,
    base: String,
    id: String,
    sessions: Arc<Mutex<Vec<String>>>,
    requested: Mutex<Vec<String>>,
}

impl std::fmt::Debug for Browser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Browser").field("session", &self.id).finish_non_exhaustive()
    }
}

impl Browser {
    /// One WebDriver command; `Err` carries WebDriver's error code and message.
    async fn command(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Value, String> {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.request(method, url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|e| format!("WebDriver request {path}: {e}"))?;
        let ok = response.status().is_success();
        let body: Value = response.json().await.map_err(|e| format!("WebDriver answer to {path}: {e}"))?;
        let value = body.get("value").cloned().unwrap_or(Value::Null);
        if ok {
            Ok(value)
        } else {
            Err(format!("{path}: {} ({})", value["error"], value["message"]))
        }
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        self.command(reqwest::Method::POST, path, Some(body)).await.unwrap_or_else(|e| panic!("{e}"))
    }

    async fn get(&self, path: &str) -> Value {
        self.command(reqwest::Method::GET, path, None).await.unwrap_or_else(|e| panic!("{e}"))
    }

    /// Loads `url` and waits for the document (not for the page's own
    /// fetches: wait for what they draw with [`Browser::wait_for_text`]).
    pub async fn goto(&self, url: &str) {
        self.post("/url", json!({ "url": url })).await;
    }

    /// Reloads the page.
    pub async fn refresh(&self) {
        self.post("/refresh", json!({})).await;
    }

    /// The first element matching `css`, if any.
    async fn try_find(&self, css: &str) -> Option<String> {
        match self
            .command(reqwest::Method::POST, "/element", Some(json!({"using": "css selector", "value": css})))
            .await
        {
            Ok(found) => found[ELEMENT_KEY].as_str().map(str::to_owned),
            Err(e) if e.contains("no such element") => None,
            Err(e) => panic!("looking for {css}: {e}"),
        }
    }

    /// The first element matching `css`, waiting for it to appear.
    async fn find(&self, css: &str) -> String {
        let deadline = Instant::now() + PAGE_DEADLINE;
        loop {
            if let Some(id) = self.try_find(css).await {
                return id;
            }
            assert!(Instant::now() < deadline, "no element {css} appeared; the page says: {}", self.body_text().await);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether an element matches `css` now.
    pub async fn exists(&self, css: &str) -> bool {
        self.try_find(css).await.is_some()
    }

    /// Clicks the element matching `css` (waiting for it to appear).
    pub async fn click(&self, css: &str) {
        let id = self.find(css).await;
        self.post(&format!("/element/{id}/click"), json!({})).await;
    }

    /// Clears the field matching `css` and types `text` into it.
    pub async fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css).await;
        self.post(&format!("/element/{id}/clear"), json!({})).await;
        self.post(&format!("/element/{id}/value"), json!({ "text": text })).await;
    }

    /// Chooses the option of the `<select>` matching `css` whose value is `value`.
    pub async fn select(&self, css: &str, value: &str) {
        self.click(&format!("{css} option[value=\"{value}\"]")).await;
    }

    /// The rendered text of the element matching `css` ("" when absent).
    pub async fn text(&self, css: &str) -> String {
        let Some(id) = self.try_find(css).await else { return String::new() };
        self.command(reqwest::Method::GET, &format!("/element/{id}/text"), None)
            .await
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    }

    /// A DOM property (`checked`, `value`, `href`...) of the element matching `css`.
    pub async fn property(&self, css: &str, name: &str) -> Value {
        let id = self.find(css).await;
        self.get(&format!("/element/{id}/property/{name}")).await
    }

    /// The page's address and text, for failure messages.
    pub async fn body_text(&self) -> String {
        let url = self.command(reqwest::Method::GET, "/url", None).await.unwrap_or_default();
        format!("({url}) {}", self.text("body").await)
    }

    /// Waits until the element matching `css` shows text containing
    /// `needle`; returns that text.
    pub async fn wait_for_text(&self, css: &str, needle: &str) -> String {
        let deadline = Instant::now() + PAGE_DEADLINE;
        loop {
            let text = self.text(css).await;
            if text.contains(needle) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "{css} never showed {needle:?}; it shows {text:?}; the page says: {}",
                self.body_text().await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the JavaScript expression `expression` is truthy in the
    /// page; returns its value.
    pub async fn wait_for_js(&self, what: &str, expression: &str) -> Value {
        let deadline = Instant::now() + PAGE_DEADLINE;
        loop {
            let value = self.execute(&format!("return ({expression});"), json!([])).await;
            if !matches!(&value, Value::Null | Value::Bool(false)) && value != json!("") && value != json!(0) {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; the page says: {}",
                self.body_text().await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page.
    pub async fn execute(&self, script: &str, args: Value) -> Value {
        self.post("/execute/sync", json!({ "script": script, "args": args })).await
    }

    /// Runs `script` in the page; it calls `arguments[arguments.length - 1]`
    /// with its result.
    pub async fn execute_async(&self, script: &str, args: Value) -> Value {
        self.post("/execute/async", json!({ "script": script, "args": args })).await
    }

    /// `fetch(path)` from inside the page, with `headers` and a JSON `body`.
    pub async fn fetch(&self, method: &str, path: &str, headers: Value, body: Option<Value>) -> PageFetch {
        let script = "const [method, path, headers, body, done] = arguments;
            const init = { method, headers, credentials: 'same-origin' };
            if (body !== null) { init.body = JSON.stringify(body); init.headers['Content-Type'] = 'application/json'; }
            fetch(path, init).then(async (r) => done({ status: r.status, text: await r.text() }))
              .catch((e) => done({ status: 0, text: String(e) }));";
        let answer = self.execute_async(script, json!([method, path, headers, body])).await;
        PageFetch {
            status: answer["status"].as_u64().and_then(|s| u16::try_from(s).ok()).unwrap_or(0),
            text: answer["text"].as_str().unwrap_or_default().to_owned(),
        }
    }

    /// `GET path` from inside the page, as bytes (a download the page links to).
    pub async fn fetch_bytes(&self, path: &str) -> (u16, Vec<u8>) {
        let script = "const [path, done] = arguments;
            fetch(path, { credentials: 'same-origin' }).then(async (r) => {
              const bytes = new Uint8Array(await r.arrayBuffer());
              let binary = '';
              for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
              done({ status: r.status, base64: btoa(binary) });
            }).catch((e) => done({ status: 0, base64: '' }));";
        let answer = self.execute_async(script, json!([path])).await;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(answer["base64"].as_str().unwrap_or_default())
            .expect("base64 from the page");
        (answer["status"].as_u64().and_then(|s| u16::try_from(s).ok()).unwrap_or(0), bytes)
    }

    /// The value of cookie `name`, HttpOnly ones included (WebDriver sees
    /// what the page's scripts cannot).
    pub async fn cookie(&self, name: &str) -> Option<String> {
        let value = self.command(reqwest::Method::GET, &format!("/cookie/{name}"), None).await.ok()?;
        value["value"].as_str().map(str::to_owned)
    }

    /// A PNG of the viewport.
    pub async fn screenshot(&self) -> Vec<u8> {
        let value = self.get("/screenshot").await;
        base64::engine::general_purpose::STANDARD.decode(value.as_str().unwrap_or_default()).expect("base64 PNG")
    }

    /// With `GLIMPSE_WRITE_SCREENSHOTS=1`, saves a PNG of the viewport as
    /// `docs/console/<name>.png` (scripts/console-screenshots.sh); otherwise
    /// does nothing.
    pub async fn screenshot_for_docs(&self, name: &str) {
        if std::env::var("GLIMPSE_WRITE_SCREENSHOTS").as_deref() != Ok("1") {
            return;
        }
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/console");
        std::fs::create_dir_all(&dir).expect("docs/console");
        let png = self.screenshot().await;
        std::fs::write(dir.join(format!("{name}.png")), png).expect("screenshot written");
    }

    /// Every URL the browser has requested so far (from Chromium's
    /// performance log: each `Network.requestWillBeSent`).
    pub async fn requested_urls(&self) -> Vec<String> {
        let entries = self.post("/se/log", json!({"type": "performance"})).await;
        let mut requested = self.requested.lock().unwrap_or_else(|p| p.into_inner());
        for entry in entries.as_array().into_iter().flatten() {
            let Some(message) = entry["message"].as_str() else { continue };
            let Ok(message) = serde_json::from_str::<Value>(message) else { continue };
            if message["message"]["method"] == "Network.requestWillBeSent" {
                if let Some(url) = message["message"]["params"]["request"]["url"].as_str() {
                    requested.push(url.to_owned());
                }
            }
        }
        requested.clone()
    }

    /// Fails the test if the browser requested anything that is not on
    /// `origin` (`https://127.0.0.1:<port>`) or a `data:`/`blob:` URL; then
    /// closes the browser. Every browser test ends with it.
    pub async fn finish(self, origin: &str) {
        let urls = self.requested_urls().await;
        assert!(!urls.is_empty(), "the performance log recorded no request; the origin check would prove nothing");
        let foreign = foreign_requests(&urls, origin);
        assert!(foreign.is_empty(), "requests to another origin than {origin}: {foreign:?}");
        self.close().await;
    }

    /// Closes the browser without the origin check (a test of the check itself).
    pub async fn close(self) {
        let _ = self.command(reqwest::Method::DELETE, "", None).await;
        self.sessions.lock().unwrap_or_else(|p| p.into_inner()).retain(|s| s != &self.id);
    }
}

/// The URLs of `urls` that are neither on `origin` (scheme, host and port,
/// e.g. `https://127.0.0.1:4443`) nor `data:` or `blob:` URLs.
pub fn foreign_requests<'a>(urls: &'a [String], origin: &str) -> Vec<&'a String> {
    let prefix = format!("{origin}/");
    urls.iter()
        .filter(|u| {
            !(u.as_str() == origin || u.starts_with(&prefix) || u.starts_with("data:") || u.starts_with("blob:"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{banner_port, foreign_requests};

    #[test]
    fn only_the_collectors_origin_and_inline_urls_pass_the_origin_check() {
        let origin = "https://127.0.0.1:4443";
        let urls: Vec<String> = [
            "https://127.0.0.1:4443/console/",
            "https://127.0.0.1:4443/console/app.js",
            "data:,",
            "blob:https://127.0.0.1:4443/0b5e",
            "https://127.0.0.1:44430/console/",
            "http://127.0.0.1:4443/console/",
            "https://127.0.0.1:4443.example/x",
            "https://fonts.example/x.woff2",
        ]
        .map(str::to_owned)
        .to_vec();
        let foreign: Vec<&str> = foreign_requests(&urls, origin).into_iter().map(String::as_str).collect();
        assert_eq!(foreign, &urls[4..].iter().map(String::as_str).collect::<Vec<_>>()[..]);
    }

    #[test]
    fn the_port_is_read_from_chromedrivers_banner() {
        assert_eq!(banner_port("ChromeDriver was started successfully on port 39207."), Some(39207));
        assert_eq!(banner_port("Starting ChromeDriver 148.0 (abc) on port 0"), None);
        assert_eq!(banner_port("Only local connections are allowed."), None);
    }
}
