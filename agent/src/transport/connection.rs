//! One authenticated connection to the collector: credentials, TCP and
//! TLS (or SSH, in [`super::ssh`]), and moving frames between the socket
//! and an [`AgentSession`].
//!
//! What it deliberately does not do: decide anything about the protocol.
//! Handshake order, sequence numbers and acknowledgements are the
//! session's; [`Link`] only writes what the session hands it and hands it
//! what arrives. [`Connection`] bundles a link with a session of its own for
//! one-connection senders; it has a few raw methods that bypass the session
//! so that tests can misbehave on purpose.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use glimpse_common::auth::{device_proof, EXPORTER_LABEL, EXPORTER_LEN};
use glimpse_common::bounded::BoundedString;
use glimpse_common::secret::SecretKey;
use glimpse_common::tls::{client_config, TlsConfigError};
use glimpse_common::wire::io::{write_message, FrameIoError, FrameReader};
use glimpse_common::wire::{
    AgentEvent, AgentMessage, AgentSession, AgentSessionConfig, AgentSessionError, AuthProof, Batch, CollectorMessage,
    ErrorCode,
};
use glimpse_files::{load_certs, load_key};

use crate::config::{AgentConfig, CollectorAddress, TlsSettings, TransportSecurity};

/// A connection attempt or an exchange on it failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// TCP connect failed (collector down, wrong address).
    #[error("cannot connect to {address}: {source}")]
    Connect {
        /// The collector address (as configured, and what it resolved to).
        address: String,
        /// Why.
        source: std::io::Error,
    },
    /// No configured collector address resolved to anything (DNS down, a
    /// misspelt name).
    #[error("cannot resolve any collector address: {0}")]
    Unresolved(String),
    /// Connect or handshake took longer than the configured timeout.
    #[error("timed out after {0:?} connecting to the collector")]
    Timeout(Duration),
    /// The TLS handshake failed (certificate refused, wrong CA, expired...).
    #[error("TLS handshake with the collector failed: {0}")]
    Tls(std::io::Error),
    /// The TLS session could not export keying material for the proof.
    #[error("cannot derive the shared-key proof from the TLS session: {0}")]
    Exporter(rustls::Error),
    /// The collector refused with a reason.
    #[error("collector refused ({code:?}): {message}")]
    Refused {
        /// The collector's error code.
        code: ErrorCode,
        /// The collector's explanation.
        message: String,
    },
    /// The collector sent something the protocol does not allow here.
    #[error("unexpected reply from the collector: {0}")]
    UnexpectedReply(&'static str),
    /// Framing, decoding or the stream itself failed.
    #[error(transparent)]
    Frame(#[from] FrameIoError),
    /// The device's certificate, key or CA could not be loaded.
    #[error(transparent)]
    TlsConfig(#[from] TlsConfigError),
    /// The shared key file could not be used.
    #[error("shared key {path}: {reason}")]
    SharedKey {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        reason: String,
    },
    /// The device's SSH private key could not be used.
    #[error("SSH key {path}: {reason}")]
    SshKey {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        reason: String,
    },
    /// The collector presented a host key other than the pinned one: a
    /// reinstalled collector, or someone in the middle. Nothing was sent.
    #[error(
        "the collector's SSH host key {presented} is not the pinned {expected}; refusing to connect \
         (if the collector was reinstalled, update [ssh] host_key_fingerprint from `glimpse-collector ssh-host-key`)"
    )]
    HostKeyMismatch {
        /// The fingerprint in the config.
        expected: String,
        /// The fingerprint the collector presented.
        presented: String,
    },
    /// The collector did not accept the device's SSH key.
    #[error(
        "the collector refused SSH login as {user} with key {fingerprint}: not registered for this device, or revoked"
    )]
    SshLoginRefused {
        /// The user name tried.
        user: String,
        /// The key's fingerprint.
        fingerprint: String,
    },
    /// Any other SSH failure (negotiation, channel, subsystem).
    #[error("SSH with the collector failed: {0}")]
    Ssh(String),
    /// A key file (shared key, SSH key) is open to other users; refused.
    /// (The TLS private key's refusal is [`TlsConfigError::Permissions`]
    /// inside [`TransportError::TlsConfig`].)
    #[error(transparent)]
    Permissions(#[from] glimpse_files::PermissionError),
    /// The config asks for SSH but this build has no SSH support.
    #[error("collector.transport = \"ssh\" but this agent was built without the `ssh` feature")]
    SshUnavailable,
    /// The session gave up or was misused (an acknowledgement of a batch
    /// never sent, a drain past its deadline, a batch out of order).
    #[error(transparent)]
    Session(AgentSessionError),
}

impl TransportError {
    /// The permission refusal behind this error, if it is one: the agent
    /// exits with 77 (`EX_NOPERM`) for it.
    pub fn permission_error(&self) -> Option<&glimpse_files::PermissionError> {
        match self {
            TransportError::Permissions(e) | TransportError::TlsConfig(TlsConfigError::Permissions(e)) => Some(e),
            _ => None,
        }
    }
}

impl From<AgentSessionError> for TransportError {
    fn from(e: AgentSessionError) -> Self {
        // The two the edge always reported by name stay as they were.
        match e {
            AgentSessionError::Refused { code, message } => TransportError::Refused { code, message },
            AgentSessionError::Unexpected(what) => TransportError::UnexpectedReply(what),
            other => TransportError::Session(other),
        }
    }
}

/// What connections authenticate with, loaded once at start and on reload
/// so that a bad file fails early.
#[derive(Clone)]
pub enum Credentials {
    /// Mutual TLS and the shared-key proof.
    Tls {
        /// The client TLS configuration (certificate, key, CA).
        config: Arc<ClientConfig>,
        /// The per-device shared key.
        shared_key: Arc<SecretKey>,
        /// The name every collector's certificate must carry; `None`: the
        /// host of the address each was reached by.
        server_name: Option<String>,
    },
    /// SSH public-key login with a pinned host key.
    #[cfg(feature = "ssh")]
    Ssh(super::ssh::SshCredentials),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Tls { server_name, .. } => {
                f.debug_struct("Tls").field("server_name", server_name).finish_non_exhaustive()
            }
            #[cfg(feature = "ssh")]
            Credentials::Ssh(ssh) => ssh.fmt(f),
        }
    }
}

impl Credentials {
    /// Loads every file the config names for its transport.
    pub fn load(config: &AgentConfig) -> Result<Self, TransportError> {
        match &config.security {
            TransportSecurity::Tls(tls) => Ok(Credentials::Tls {
                config: client_tls_config(tls, config.cipher_preference.prefer_chacha())?,
                shared_key: Arc::new(load_shared_key(&tls.shared_key_path)?),
                server_name: tls.server_name.clone(),
            }),
            #[cfg(feature = "ssh")]
            TransportSecurity::Ssh(ssh) => {
                Ok(Credentials::Ssh(super::ssh::SshCredentials::load(ssh, config.cipher_preference.prefer_chacha())?))
            }
            #[cfg(not(feature = "ssh"))]
            TransportSecurity::Ssh(_) => Err(TransportError::SshUnavailable),
        }
    }
}

/// Builds the client TLS configuration from the files `[tls]` names.
pub fn client_tls_config(tls: &TlsSettings, prefer_chacha: bool) -> Result<Arc<ClientConfig>, TransportError> {
    let ca = load_certs(&tls.ca_path)?.remove(0);
    let chain = load_certs(&tls.cert_path)?;
    let key = load_key(&tls.key_path)?;
    Ok(Arc::new(client_config(&ca, chain, key, prefer_chacha)?))
}

/// A byte stream the framed protocol runs over: TLS, or an SSH channel.
trait AgentStream: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> AgentStream for T {}

/// Reads the per-device shared key file (64 hex digits).
pub fn load_shared_key(path: &std::path::Path) -> Result<SecretKey, TransportError> {
    use std::io::Read;
    let bad = |reason: String| TransportError::SharedKey { path: path.to_owned(), reason };
    let mut text = zeroize::Zeroizing::new(String::new());
    let file = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
    glimpse_files::check_secret(path, &file.metadata().map_err(|e| bad(e.to_string()))?, "shared key")?;
    file.take(256).read_to_string(&mut text).map_err(|e| bad(e.to_string()))?;
    SecretKey::from_hex(&text).map_err(|e| bad(e.to_string()))
}

/// One authenticated connection: moves frames between the socket and an
/// [`AgentSession`], which decides what they are. It keeps no protocol
/// state of its own.
pub struct Link {
    stream: Box<dyn AgentStream>,
    reader: FrameReader,
    security: String,
    /// What must outlive the stream (the SSH session under the channel).
    _session: Option<Box<dyn std::any::Any + Send + Sync>>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link").field("security", &self.security).finish_non_exhaustive()
    }
}

/// What the agent's Hello names as its software: the crate version and, when
/// the build set `GLIMPSE_BUILD` (a commit or package revision), `+build`
/// after it, semver's build-metadata form. The field is 32 bytes at most, so
/// a longer build is cut; the collector splits the two at the first `+`.
pub fn hello_version() -> String {
    let version = env!("CARGO_PKG_VERSION");
    match option_env!("GLIMPSE_BUILD").filter(|b| !b.is_empty()) {
        Some(build) => format!("{version}+{build}"),
        None => version.to_owned(),
    }
}

/// The session settings an agent with `config` uses for stream `stream_id`.
pub fn session_config(config: &AgentConfig, stream_id: u64, window: usize) -> AgentSessionConfig {
    AgentSessionConfig {
        identity: config.identity.clone(),
        stream_id,
        agent_version: BoundedString::truncating(&hello_version()),
        max_frame_len: config.max_frame_bytes,
        window,
    }
}

/// The name and address of one collector candidate, for errors and logs:
/// `collector.example:7443 (192.0.2.7:7443)`, or the address alone when it
/// was configured as one.
pub fn describe(collector: &CollectorAddress, addr: SocketAddr) -> String {
    let configured = collector.to_string();
    if configured == addr.to_string() {
        configured
    } else {
        format!("{configured} ({addr})")
    }
}

impl Link {
    /// Resolves every configured collector address and connects to the
    /// first candidate that welcomes us, in the configured order (for
    /// one-shot senders such as `replay`; the daemon picks candidates with
    /// [`super::Failover`] and [`Link::open_to`]). Each attempt has the
    /// configured connect timeout; the last failure is returned.
    pub async fn open(
        config: &AgentConfig,
        credentials: &Credentials,
        session: &mut AgentSession,
    ) -> Result<Self, TransportError> {
        let resolved = super::resolve::resolve(&config.collectors, config.connect_timeout).await;
        let mut last = None;
        for candidate in &resolved.candidates {
            let Some(collector) = config.collectors.get(candidate.origin) else { continue };
            match Self::open_to(config, credentials, session, collector, candidate.addr).await {
                Ok(link) => return Ok(link),
                Err(e) => last = Some(e),
            }
        }
        session.connection_lost();
        Err(last.unwrap_or_else(|| TransportError::Unresolved(unresolved_detail(config, &resolved.failures))))
    }

    /// Connects to the collector configured as `collector` at `addr` (one
    /// of the addresses it resolved to), authenticates (mutual TLS and the
    /// shared-key proof, or SSH public-key login) and runs `session`'s
    /// handshake until the collector's welcome, all within the configured
    /// connect timeout. On failure the session is told the connection is
    /// lost.
    pub async fn open_to(
        config: &AgentConfig,
        credentials: &Credentials,
        session: &mut AgentSession,
        collector: &CollectorAddress,
        addr: SocketAddr,
    ) -> Result<Self, TransportError> {
        let timeout = config.connect_timeout;
        let opened =
            tokio::time::timeout(timeout, Self::open_inner(config, credentials, session, collector, addr)).await;
        let result = opened.map_err(|_| TransportError::Timeout(timeout)).and_then(|r| r);
        if result.is_err() {
            session.connection_lost();
        }
        result
    }

    async fn open_inner(
        config: &AgentConfig,
        credentials: &Credentials,
        session: &mut AgentSession,
        collector: &CollectorAddress,
        addr: SocketAddr,
    ) -> Result<Self, TransportError> {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|source| TransportError::Connect { address: describe(collector, addr), source })?;
        // Batches are small and each waits for its acknowledgement: Nagle's
        // algorithm would add a delayed-ACK round trip to every one.
        let _ = tcp.set_nodelay(true);
        let (stream, proof, security, ssh): (Box<dyn AgentStream>, _, _, _) = match credentials {
            Credentials::Tls { config: tls, shared_key, server_name } => {
                let name = server_name.as_deref().unwrap_or(collector.host());
                let (stream, proof, suite) = open_tls(config, tcp, tls, shared_key, name).await?;
                (Box::new(stream), Some(AuthProof { proof }), suite, None)
            }
            #[cfg(feature = "ssh")]
            Credentials::Ssh(ssh) => {
                let (stream, session) = super::ssh::connect(tcp, ssh).await?;
                (Box::new(stream), None, "SSH".to_owned(), Some(session))
            }
        };
        // Accept the collector's full default bound: an error may come
        // before we learn its own.
        let mut link = Self {
            stream,
            reader: FrameReader::new(glimpse_common::wire::DEFAULT_MAX_FRAME_LEN),
            security,
            _session: ssh,
        };
        // Over SSH the login already proved who we are; over TLS the
        // session sends the shared-key proof after its Hello.
        session.connect(proof);
        link.flush(session).await?;
        while !session.is_established() {
            let message = link.receive().await?;
            session.handle_message(Instant::now(), message)?;
        }
        Ok(link)
    }

    /// A link over an already authenticated byte stream, for tests of what
    /// runs on top of one.
    #[cfg(test)]
    pub(crate) fn over<S: AsyncRead + AsyncWrite + Unpin + Send + Sync + 'static>(stream: S, security: &str) -> Self {
        Self {
            stream: Box::new(stream),
            reader: FrameReader::new(glimpse_common::wire::DEFAULT_MAX_FRAME_LEN),
            security: security.to_owned(),
            _session: None,
        }
    }

    /// How the connection is secured: the negotiated TLS cipher suite, or `SSH`.
    pub fn security(&self) -> &str {
        &self.security
    }

    /// Writes everything `session` has to send. Not cancel-safe: a frame
    /// cut short would break the stream, so it is not raced against other
    /// work (except when the connection is being given up anyway).
    pub async fn flush(&mut self, session: &mut AgentSession) -> Result<(), TransportError> {
        let mut out = Vec::new();
        while session.poll_transmit(Instant::now(), &mut out)? {}
        if !out.is_empty() {
            self.write_raw(&out).await?;
        }
        Ok(())
    }

    /// Receives one message from the collector, for the caller to hand to
    /// its session. Cancel-safe, so it can wait in a `select!` beside other
    /// work.
    pub async fn receive(&mut self) -> Result<CollectorMessage, TransportError> {
        Ok(self.reader.next(&mut self.stream).await?)
    }

    async fn write_raw(&mut self, bytes: &[u8]) -> Result<(), TransportError> {
        use tokio::io::AsyncWriteExt;
        self.stream.write_all(bytes).await.map_err(FrameIoError::Io)?;
        self.stream.flush().await.map_err(FrameIoError::Io)?;
        Ok(())
    }

    /// Closes the stream (TLS close_notify, or the SSH channel).
    pub async fn shutdown(mut self) {
        let _ = tokio::io::AsyncWriteExt::shutdown(&mut self.stream).await;
    }
}

/// A connection with a session of its own, for senders that live for one
/// connection: `replay`, the load tool, tests.
pub struct Connection {
    link: Link,
    session: AgentSession,
    /// Events passed over while [`Connection::send_batch`] waited for its
    /// acknowledgement, returned first by [`Connection::next_event`].
    held: VecDeque<AgentEvent>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("security", &self.link.security)
            .field("stored_seq", &self.session.welcomed_seq())
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// Connects with a new session that keeps one batch in flight.
    pub async fn open(config: &AgentConfig, credentials: &Credentials, stream_id: u64) -> Result<Self, TransportError> {
        Self::open_with_window(config, credentials, stream_id, 1).await
    }

    /// Connects with a new session that keeps up to `window` batches in flight.
    pub async fn open_with_window(
        config: &AgentConfig,
        credentials: &Credentials,
        stream_id: u64,
        window: usize,
    ) -> Result<Self, TransportError> {
        let mut session = AgentSession::new(session_config(config, stream_id, window));
        let link = Link::open(config, credentials, &mut session).await?;
        // The welcome is what opening waited for; what else it brought is
        // for the caller.
        let held = std::iter::from_fn(|| session.poll_event())
            .filter(|e| !matches!(e, AgentEvent::Connected { .. }))
            .collect();
        Ok(Self { link, session, held })
    }

    /// The highest sequence number of this stream the collector had already
    /// stored when it welcomed us.
    pub fn stored_seq(&self) -> u64 {
        self.session.welcomed_seq()
    }

    /// How the connection is secured: the negotiated TLS cipher suite, or `SSH`.
    pub fn security(&self) -> &str {
        self.link.security()
    }

    /// The session, to push batches into (then [`Connection::flush`]).
    pub fn session_mut(&mut self) -> &mut AgentSession {
        &mut self.session
    }

    /// The session.
    pub fn session(&self) -> &AgentSession {
        &self.session
    }

    /// Writes what the session has to send.
    pub async fn flush(&mut self) -> Result<(), TransportError> {
        self.link.flush(&mut self.session).await
    }

    /// The session's next event, reading from the collector as needed;
    /// call [`Connection::flush`] after pushing. When the collector said
    /// `RetryLater`, it waits out the delay and writes the held batches
    /// again itself. Cancel-safe except during that write: a caller that
    /// races it against other work (the load tool) may break the stream
    /// if it drops the future just as a retry delay ends, so such a caller
    /// should flush held batches itself ([`AgentSession::held_until`]).
    pub async fn next_event(&mut self) -> Result<AgentEvent, TransportError> {
        loop {
            if let Some(event) = self.held.pop_front().or_else(|| self.session.poll_event()) {
                return Ok(event);
            }
            let wake = self.session.poll_timeout();
            tokio::select! {
                message = self.link.receive() => self.session.handle_message(Instant::now(), message?)?,
                () = sleep_until(wake) => {
                    self.session.handle_timeout(Instant::now())?;
                    self.link.flush(&mut self.session).await?;
                }
            }
        }
    }

    /// Sends `batch` under its own sequence number and waits until the
    /// collector acknowledges it as durably stored; returns the
    /// acknowledged sequence number. A batch at or below what the
    /// collector said it stored is acknowledged without being sent. The
    /// batch goes out under this connection's organisation.
    pub async fn send_batch(&mut self, batch: &Batch) -> Result<u64, TransportError> {
        let records = std::sync::Arc::new(batch.records.clone());
        self.session.push_batch_at(batch.stream_seq, records, Vec::new())?;
        self.flush().await?;
        let mut passed = VecDeque::new();
        let outcome = loop {
            match self.next_event().await {
                Ok(AgentEvent::Acked { seq, through, .. }) if seq == batch.stream_seq => break Ok(through),
                Ok(other) => passed.push_back(other),
                Err(e) => break Err(e),
            }
        };
        passed.append(&mut self.held);
        self.held = passed;
        outcome
    }

    /// Writes a batch frame outside the session: no sequence checks, no
    /// acknowledgement awaited. For tests that flood or misbehave on
    /// purpose; an agent never needs it.
    pub async fn send_batch_only(&mut self, batch: &Batch) -> Result<(), TransportError> {
        let mut out = Vec::new();
        glimpse_common::wire::message::encode_batch_frame(
            batch,
            glimpse_common::minimise::MacForm::Real,
            self.session.max_frame_len(),
            &mut out,
        )
        .map_err(FrameIoError::Wire)?;
        self.link.write_raw(&out).await
    }

    /// Says goodbye and closes the connection cleanly.
    pub async fn close(mut self) {
        self.session.close();
        let _ = self.link.flush(&mut self.session).await;
        self.link.shutdown().await;
    }

    /// Sends any message outside the session; for tests that need to
    /// misbehave on purpose.
    pub async fn send(&mut self, msg: &AgentMessage) -> Result<(), TransportError> {
        write_message(&mut self.link.stream, msg, self.session.max_frame_len()).await?;
        Ok(())
    }

    /// Writes arbitrary bytes on the authenticated stream. Only for tests
    /// that must misbehave on purpose; an agent never needs it.
    pub async fn dangerous_send_raw(&mut self, bytes: &[u8]) -> Result<(), TransportError> {
        self.link.write_raw(bytes).await
    }

    /// Receives one message from the collector, bypassing the session; for
    /// tests that look at exactly what the collector says.
    pub async fn receive(&mut self) -> Result<CollectorMessage, TransportError> {
        self.link.receive().await
    }
}

/// Sleeps until `deadline`, or for ever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// Why no collector address resolved, for [`TransportError::Unresolved`].
pub fn unresolved_detail(config: &AgentConfig, failures: &[(usize, String)]) -> String {
    let named: Vec<String> = failures
        .iter()
        .filter_map(|(index, why)| config.collectors.get(*index).map(|c| format!("{c}: {why}")))
        .collect();
    if named.is_empty() {
        "no addresses".to_owned()
    } else {
        named.join("; ")
    }
}

/// Mutual TLS over `tcp` and the shared-key proof for this session; the
/// collector's certificate must carry `server_name` and chain to the CA.
async fn open_tls(
    config: &AgentConfig,
    tcp: TcpStream,
    tls: &Arc<ClientConfig>,
    shared_key: &SecretKey,
    server_name: &str,
) -> Result<(TlsStream<TcpStream>, [u8; glimpse_common::auth::PROOF_LEN], String), TransportError> {
    let server_name = ServerName::try_from(server_name.to_owned())
        .map_err(|_| TransportError::UnexpectedReply("invalid server name"))?;
    let stream = TlsConnector::from(Arc::clone(tls)).connect(server_name, tcp).await.map_err(TransportError::Tls)?;
    let suite =
        stream.get_ref().1.negotiated_cipher_suite().map_or_else(|| "TLS".to_owned(), |s| format!("{:?}", s.suite()));
    let mut exported = [0u8; EXPORTER_LEN];
    stream.get_ref().1.export_keying_material(&mut exported, EXPORTER_LABEL, None).map_err(TransportError::Exporter)?;
    let proof = device_proof(shared_key, &exported, &config.identity);
    Ok((stream, proof, suite))
}
