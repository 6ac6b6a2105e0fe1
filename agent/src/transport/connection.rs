//! One authenticated connection to the collector.

use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use glimpse_common::auth::{device_proof, EXPORTER_LABEL, EXPORTER_LEN};
use glimpse_common::bounded::BoundedString;
use glimpse_common::identity::DeviceIdentity;
use glimpse_common::secret::SecretKey;
use glimpse_common::tls::{client_config, TlsConfigError};
use glimpse_common::wire::io::{write_message, FrameIoError, FrameReader};
use glimpse_common::wire::{
    AgentMessage, AuthProof, Batch, CollectorMessage, ControlMessage, ErrorCode, Hello, PROTOCOL_VERSION,
};
use glimpse_files::{load_certs, load_key};

use crate::config::{AgentConfig, TlsSettings, TransportSecurity};

/// A connection attempt or an exchange on it failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// TCP connect failed (collector down, wrong address).
    #[error("cannot connect to {address}: {source}")]
    Connect {
        /// The collector address.
        address: String,
        /// Why.
        source: std::io::Error,
    },
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
    /// The config asks for SSH but this build has no SSH support.
    #[error("collector.transport = \"ssh\" but this agent was built without the `ssh` feature")]
    SshUnavailable,
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
        /// The name the collector's certificate must carry.
        server_name: String,
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
    std::fs::File::open(path).and_then(|f| f.take(256).read_to_string(&mut text)).map_err(|e| bad(e.to_string()))?;
    SecretKey::from_hex(&text).map_err(|e| bad(e.to_string()))
}

/// An authenticated connection to the collector.
pub struct Connection {
    stream: Box<dyn AgentStream>,
    max_frame: usize,
    reader: FrameReader,
    stored_seq: u64,
    /// Control messages that arrived while we waited for an acknowledgement.
    pending_controls: Vec<ControlMessage>,
    security: String,
    /// What must outlive the stream (the SSH session under the channel).
    _session: Option<Box<dyn std::any::Any + Send + Sync>>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("security", &self.security)
            .field("stored_seq", &self.stored_seq)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// Connects, authenticates (mutual TLS and the shared-key proof, or SSH
    /// public-key login) and waits for the collector's welcome.
    pub async fn open(config: &AgentConfig, credentials: &Credentials, stream_id: u64) -> Result<Self, TransportError> {
        let timeout = config.connect_timeout;
        tokio::time::timeout(timeout, Self::open_inner(config, credentials, stream_id))
            .await
            .map_err(|_| TransportError::Timeout(timeout))?
    }

    async fn open_inner(
        config: &AgentConfig,
        credentials: &Credentials,
        stream_id: u64,
    ) -> Result<Self, TransportError> {
        let (stream, proof, security, session): (Box<dyn AgentStream>, _, _, _) = match credentials {
            Credentials::Tls { config: tls, shared_key, server_name } => {
                let (stream, proof, suite) = open_tls(config, tls, shared_key, server_name).await?;
                (Box::new(stream), Some(proof), suite, None)
            }
            #[cfg(feature = "ssh")]
            Credentials::Ssh(ssh) => {
                let (stream, session) = super::ssh::connect(config, ssh).await?;
                (Box::new(stream), None, "SSH".to_owned(), Some(session))
            }
        };
        // Accept the collector's full default bound: an error may come
        // before we learn its own.
        let mut conn = Self {
            stream,
            max_frame: config.max_frame_bytes,
            reader: FrameReader::new(glimpse_common::wire::DEFAULT_MAX_FRAME_LEN),
            stored_seq: 0,
            pending_controls: Vec::new(),
            security,
            _session: session,
        };
        conn.send(&hello(&config.identity, stream_id)).await?;
        // Over SSH the login already proved who we are; over TLS the shared
        // key is proven now.
        if let Some(proof) = proof {
            conn.send(&AgentMessage::AuthProof(AuthProof { proof })).await?;
        }
        match conn.receive().await? {
            CollectorMessage::Welcome(welcome) => {
                conn.max_frame = conn.max_frame.min(welcome.max_frame_len as usize);
                conn.stored_seq = welcome.stored_seq;
                Ok(conn)
            }
            other => Err(refusal(other)),
        }
    }

    /// The highest sequence number of this stream the collector had already
    /// stored when it welcomed us.
    pub fn stored_seq(&self) -> u64 {
        self.stored_seq
    }

    /// How the connection is secured: the negotiated TLS cipher suite, or `SSH`.
    pub fn security(&self) -> &str {
        &self.security
    }

    /// Sends a batch and waits until the collector acknowledges it as
    /// durably stored. Returns the acknowledged sequence number.
    pub async fn send_batch(&mut self, batch: &Batch) -> Result<u64, TransportError> {
        self.send_batch_only(batch).await?;
        loop {
            match self.receive().await? {
                CollectorMessage::Ack { stream_seq } if stream_seq >= batch.stream_seq => return Ok(stream_seq),
                CollectorMessage::Ack { .. } => {
                    return Err(TransportError::UnexpectedReply("acknowledgement for an older batch"))
                }
                CollectorMessage::Control(control) => self.pending_controls.push(control),
                other => return Err(refusal(other)),
            }
        }
    }

    /// Writes a batch without waiting for its acknowledgement (which then
    /// arrives through [`Connection::receive`]).
    pub async fn send_batch_only(&mut self, batch: &Batch) -> Result<(), TransportError> {
        self.write_batch(batch, glimpse_common::minimise::MacForm::Real).await
    }

    /// Writes a batch whose MAC addresses are in the form `macs`, without
    /// waiting for its acknowledgement.
    pub async fn write_batch(
        &mut self,
        batch: &Batch,
        macs: glimpse_common::minimise::MacForm,
    ) -> Result<(), TransportError> {
        // Serialise from a borrowed view: cloning a 4096-record batch per send
        // would double the agent's memory for nothing.
        let mut out = Vec::new();
        glimpse_common::wire::message::encode_batch_frame(batch, macs, self.max_frame, &mut out)
            .map_err(FrameIoError::Wire)?;
        use tokio::io::AsyncWriteExt;
        self.stream.write_all(&out).await.map_err(FrameIoError::Io)?;
        self.stream.flush().await.map_err(FrameIoError::Io)?;
        Ok(())
    }

    /// Control messages that arrived during [`Connection::send_batch`].
    pub fn take_pending_controls(&mut self) -> Vec<ControlMessage> {
        std::mem::take(&mut self.pending_controls)
    }

    /// Says goodbye and closes the TLS session cleanly.
    pub async fn close(mut self) {
        let _ = self.send(&AgentMessage::Goodbye).await;
        let _ = tokio::io::AsyncWriteExt::shutdown(&mut self.stream).await;
    }

    /// Sends any message; for tests that need to misbehave on purpose.
    pub async fn send(&mut self, msg: &AgentMessage) -> Result<(), TransportError> {
        write_message(&mut self.stream, msg, self.max_frame).await?;
        Ok(())
    }

    /// Writes arbitrary bytes on the authenticated stream. Only for tests
    /// that must misbehave on purpose; an agent never needs it.
    pub async fn dangerous_send_raw(&mut self, bytes: &[u8]) -> Result<(), TransportError> {
        use tokio::io::AsyncWriteExt;
        self.stream.write_all(bytes).await.map_err(FrameIoError::Io)?;
        self.stream.flush().await.map_err(FrameIoError::Io)?;
        Ok(())
    }

    /// Receives one message from the collector. Cancel-safe, so it can
    /// wait in a `select!` beside other work.
    pub async fn receive(&mut self) -> Result<CollectorMessage, TransportError> {
        Ok(self.reader.next(&mut self.stream).await?)
    }
}

/// TCP, mutual TLS and the shared-key proof for this session.
async fn open_tls(
    config: &AgentConfig,
    tls: &Arc<ClientConfig>,
    shared_key: &SecretKey,
    server_name: &str,
) -> Result<(TlsStream<TcpStream>, [u8; glimpse_common::auth::PROOF_LEN], String), TransportError> {
    let address = &config.collector_address;
    let tcp = TcpStream::connect(address)
        .await
        .map_err(|source| TransportError::Connect { address: address.clone(), source })?;
    // Batches are small and latency matters more than packing.
    let _ = tcp.set_nodelay(true);
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

fn hello(identity: &DeviceIdentity, stream_id: u64) -> AgentMessage {
    AgentMessage::Hello(Hello {
        version: PROTOCOL_VERSION,
        identity: identity.clone(),
        agent_version: BoundedString::truncating(env!("CARGO_PKG_VERSION")),
        stream_id,
    })
}

fn refusal(msg: CollectorMessage) -> TransportError {
    match msg {
        CollectorMessage::Error(e) => TransportError::Refused { code: e.code, message: e.message.to_string() },
        CollectorMessage::Welcome(_) => TransportError::UnexpectedReply("a second welcome"),
        CollectorMessage::Ack { .. } => TransportError::UnexpectedReply("an acknowledgement before any batch"),
        _ => TransportError::UnexpectedReply("an unknown message"),
    }
}
