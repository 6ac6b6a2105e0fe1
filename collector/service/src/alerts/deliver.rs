//! Delivery at the edge: one tokio task per receiver (the webhook, each
//! syslog target), each with its own bounded queue, so a slow or dead
//! receiver delays only itself. A full queue drops the alert (counted);
//! a failed attempt is retried with exponential backoff up to the
//! receiver's attempt limit, then the alert is dropped (counted). Nothing
//! here ever waits on ingest, and ingest never waits here.
//!
//! TLS (the webhook's HTTPS, syslog over TLS) is rustls with ring, TLS 1.3
//! and 1.2, verifying the receiver's certificate and name against the
//! configured CA or, without one, the system's trust store. There is no
//! setting that skips verification.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use glimpse_common::clock::Clock;

use super::config::{SyslogConfig, SyslogTarget, WebhookConfig};
use super::model::Alert;
use super::signature::{WebhookKey, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use super::syslog::{self, Origin};
use super::{AlertMetrics, AlertsError};

/// First retry delay; doubled per attempt up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Longest webhook secret file.
const MAX_SECRET_BYTES: u64 = 4096;

/// One alert ready to send: the alert, its id, and the rate limiter's
/// count of alerts dropped before it.
#[derive(Debug, Clone)]
pub(crate) struct Outgoing {
    pub(crate) alert: Arc<Alert>,
    pub(crate) id: Arc<str>,
    pub(crate) suppressed_before: u64,
}

/// A receiver's queue.
#[derive(Debug, Clone)]
pub(crate) struct Receiver {
    /// `webhook` or `syslog` (the metrics label).
    pub(crate) label: &'static str,
    /// What the logs name.
    pub(crate) name: String,
    pub(crate) queue: mpsc::Sender<Outgoing>,
}

/// The rustls client configuration for a receiver: our ring provider,
/// TLS 1.3 and 1.2, the receiver verified against `ca` or the system roots.
pub(crate) fn tls_config(ca: Option<&Path>) -> Result<rustls::ClientConfig, AlertsError> {
    use rustls_platform_verifier::BuilderVerifierExt;
    let provider = Arc::new(glimpse_common::tls::provider(!glimpse_common::tls::has_aes_hardware()));
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| AlertsError::Tls(e.to_string()))?;
    Ok(match ca {
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in glimpse_files::load_certs(path).map_err(|e| AlertsError::Tls(e.to_string()))? {
                roots.add(cert).map_err(|e| AlertsError::Tls(format!("{}: {e}", path.display())))?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        None => builder.with_platform_verifier().map_err(|e| AlertsError::Tls(e.to_string()))?.with_no_client_auth(),
    })
}

/// The webhook's signing key, from its secret file (0600).
pub(crate) fn webhook_key(config: &WebhookConfig) -> Result<WebhookKey, AlertsError> {
    let secret = glimpse_files::read_secret_text(&config.secret_file, MAX_SECRET_BYTES, "alert webhook secret")
        .map_err(AlertsError::Secret)?;
    Ok(WebhookKey::new(secret.as_bytes()))
}

/// Everything a webhook task needs, built (and checked) before it starts.
pub(crate) struct Webhook {
    client: reqwest::Client,
    url: reqwest::Url,
    key: WebhookKey,
    max_attempts: u32,
}

impl Webhook {
    /// Builds the client and reads the secret; fails on a bad CA or secret.
    pub(crate) fn build(config: &WebhookConfig) -> Result<Self, AlertsError> {
        let url = reqwest::Url::parse(&config.url).map_err(|e| AlertsError::Tls(e.to_string()))?;
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls_config(config.ca.as_deref())?)
            .https_only(true)
            // A redirect would carry the signed alert somewhere not configured.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .user_agent(concat!("glimpse-collector/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| AlertsError::Tls(e.to_string()))?;
        Ok(Webhook { client, url, key: webhook_key(config)?, max_attempts: config.max_attempts })
    }

    async fn send(&self, body: &[u8], clock: &dyn Clock) -> Result<(), String> {
        let now = clock.now_millis().div_euclid(1000);
        let response = self
            .client
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(TIMESTAMP_HEADER, now.to_string())
            .header(SIGNATURE_HEADER, self.key.sign(now, body))
            .body(body.to_vec())
            .send()
            .await
            .map_err(|e| with_causes(&e))?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("the receiver answered {status}"))
        }
    }
}

/// Starts the webhook's task; returns its queue.
pub(crate) fn start_webhook(
    webhook: Webhook,
    collector: Arc<str>,
    queue: usize,
    clock: Arc<dyn Clock>,
    metrics: Arc<AlertMetrics>,
) -> Receiver {
    let (tx, mut rx) = mpsc::channel::<Outgoing>(queue);
    let name = webhook.url.origin().ascii_serialization();
    let label = "webhook";
    let task_name = name.clone();
    tokio::spawn(async move {
        while let Some(out) = rx.recv().await {
            let mut payload = out.alert.payload(&collector, &out.id);
            payload.suppressed_before = out.suppressed_before;
            let body = match serde_json::to_vec(&payload) {
                Ok(body) => body,
                Err(e) => {
                    warn!("cannot encode an alert: {e}");
                    continue;
                }
            };
            let mut retry = Retry::new(label, &task_name, webhook.max_attempts);
            let sent = loop {
                match webhook.send(&body, clock.as_ref()).await {
                    Ok(()) => break true,
                    Err(e) if retry.again(&metrics, &e).await => {}
                    Err(_) => break false,
                }
            };
            metrics.finished(label, sent);
        }
    });
    Receiver { label, name, queue: tx }
}

/// Starts one task per syslog target; returns their queues.
pub(crate) fn start_syslog(
    config: &SyslogConfig,
    collector: &str,
    queue: usize,
    metrics: Arc<AlertMetrics>,
) -> Result<Vec<Receiver>, AlertsError> {
    let origin = Arc::new(Origin::new(collector, std::process::id(), config.facility));
    let tls = if config.targets.iter().any(|t| matches!(t, SyslogTarget::Tls { .. })) {
        Some(tokio_rustls::TlsConnector::from(Arc::new(tls_config(config.ca.as_deref())?)))
    } else {
        None
    };
    let mut receivers = Vec::new();
    for target in &config.targets {
        let (tx, mut rx) = mpsc::channel::<Outgoing>(queue);
        let mut sender =
            SyslogSender { target: target.clone(), tls: tls.clone(), timeout: config.timeout, stream: None };
        let origin = origin.clone();
        let metrics = metrics.clone();
        let attempts = config.max_attempts;
        let name = target.to_string();
        let task_name = name.clone();
        tokio::spawn(async move {
            while let Some(out) = rx.recv().await {
                let message = match &sender.target {
                    SyslogTarget::Unix { .. } => syslog::local(&origin, &out.alert, &out.id),
                    _ => syslog::rfc5424(&origin, &out.alert, &out.id),
                };
                let mut retry = Retry::new("syslog", &task_name, attempts);
                let sent = loop {
                    match sender.send(&message).await {
                        Ok(()) => break true,
                        Err(e) if retry.again(&metrics, &e).await => {}
                        Err(_) => break false,
                    }
                };
                metrics.finished("syslog", sent);
            }
        });
        receivers.push(Receiver { label: "syslog", name, queue: tx });
    }
    Ok(receivers)
}

/// The attempts at one alert: exponential backoff between them, and the
/// count of what is left.
struct Retry<'a> {
    label: &'static str,
    name: &'a str,
    left: u32,
    made: u32,
    delay: Duration,
}

impl<'a> Retry<'a> {
    fn new(label: &'static str, name: &'a str, max_attempts: u32) -> Self {
        Retry { label, name, left: max_attempts.max(1), made: 0, delay: FIRST_BACKOFF }
    }

    /// An attempt failed with `error`: waits and returns true if another
    /// may be made, else logs the drop and returns false.
    async fn again(&mut self, metrics: &AlertMetrics, error: &str) -> bool {
        self.made += 1;
        self.left -= 1;
        if self.left == 0 {
            warn!(receiver = self.name, attempts = self.made, "alert dropped: delivery failed: {error}");
            return false;
        }
        metrics.retried(self.label);
        debug!(
            receiver = self.name,
            attempt = self.made,
            "alert delivery failed, retrying in {:?}: {error}",
            self.delay
        );
        tokio::time::sleep(self.delay).await;
        self.delay = (self.delay * 2).min(MAX_BACKOFF);
        true
    }
}

/// A syslog sender for one target; TCP and TLS connections are kept
/// between messages and made again after a failure.
struct SyslogSender {
    target: SyslogTarget,
    tls: Option<tokio_rustls::TlsConnector>,
    timeout: Duration,
    stream: Option<Box<dyn Stream>>,
}

trait Stream: tokio::io::AsyncWrite + Unpin + Send + Sync {}
impl<T: tokio::io::AsyncWrite + Unpin + Send + Sync> Stream for T {}

impl SyslogSender {
    async fn send(&mut self, message: &[u8]) -> Result<(), String> {
        match tokio::time::timeout(self.timeout, self.send_now(message)).await {
            Ok(result) => result,
            Err(_) => {
                self.stream = None;
                Err(format!("no progress within {:?}", self.timeout))
            }
        }
    }

    async fn send_now(&mut self, message: &[u8]) -> Result<(), String> {
        match &self.target {
            SyslogTarget::Udp { address } => {
                let peer = resolve(address).await?;
                let local: std::net::SocketAddr =
                    if peer.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { (std::net::Ipv6Addr::UNSPECIFIED, 0).into() };
                let socket = tokio::net::UdpSocket::bind(local).await.map_err(|e| e.to_string())?;
                socket.send_to(message, peer).await.map(drop).map_err(|e| e.to_string())
            }
            SyslogTarget::Unix { path } => {
                let socket = tokio::net::UnixDatagram::unbound().map_err(|e| e.to_string())?;
                socket.send_to(message, path).await.map(drop).map_err(|e| format!("{}: {e}", path.display()))
            }
            SyslogTarget::Tcp { .. } | SyslogTarget::Tls { .. } => {
                let framed = syslog::octet_counted(message);
                if self.stream.is_none() {
                    self.stream = Some(self.connect().await?);
                }
                let Some(stream) = self.stream.as_mut() else { return Err("not connected".into()) };
                let written = async {
                    stream.write_all(&framed).await?;
                    stream.flush().await
                }
                .await;
                if let Err(e) = written {
                    self.stream = None;
                    return Err(e.to_string());
                }
                Ok(())
            }
        }
    }

    async fn connect(&self) -> Result<Box<dyn Stream>, String> {
        let (address, server_name) = match &self.target {
            SyslogTarget::Tcp { address } => (address, None),
            SyslogTarget::Tls { address, server_name } => (address, Some(server_name)),
            _ => return Err("not a stream target".into()),
        };
        // Every address the name has, in order (localhost may be ::1 first).
        let peers =
            tokio::net::lookup_host(address.as_str()).await.map_err(|e| format!("cannot resolve {address}: {e}"))?;
        let mut last = format!("{address} resolves to no address");
        let mut connected = None;
        for peer in peers.take(16) {
            match tokio::net::TcpStream::connect(peer).await {
                Ok(tcp) => {
                    connected = Some(tcp);
                    break;
                }
                Err(e) => last = format!("connect {address} ({peer}): {e}"),
            }
        }
        let tcp = connected.ok_or(last)?;
        let _ = tcp.set_nodelay(true);
        match (server_name, &self.tls) {
            (None, _) => Ok(Box::new(tcp)),
            (Some(name), Some(tls)) => {
                let name = rustls_pki_types::ServerName::try_from(name.clone())
                    .map_err(|e| format!("{name:?} is not a server name: {e}"))?;
                let stream = tls.connect(name, tcp).await.map_err(|e| format!("TLS with {address}: {e}"))?;
                Ok(Box::new(stream))
            }
            (Some(_), None) => Err("no TLS configuration".into()),
        }
    }
}

/// An error with its causes: reqwest's own message ("error sending
/// request") says nothing of the TLS refusal beneath it.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The first address `address` (`host:port`) resolves to.
async fn resolve(address: &str) -> Result<std::net::SocketAddr, String> {
    tokio::net::lookup_host(address)
        .await
        .map_err(|e| format!("cannot resolve {address}: {e}"))?
        .next()
        .ok_or_else(|| format!("{address} resolves to no address"))
}
