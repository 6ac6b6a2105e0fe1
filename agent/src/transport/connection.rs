//! One authenticated connection to the collector.

use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use glimpse_common::auth::{device_proof, EXPORTER_LABEL, EXPORTER_LEN};
use glimpse_common::bounded::BoundedString;
use glimpse_common::identity::DeviceIdentity;
use glimpse_common::secret::SecretKey;
use glimpse_common::tls::{client_config, load_certs, load_key, TlsConfigError};
use glimpse_common::wire::io::{write_message, FrameIoError, FrameReader};
use glimpse_common::wire::{
    AgentMessage, AuthProof, Batch, CollectorMessage, ControlMessage, ErrorCode, Hello, PROTOCOL_VERSION,
};

use crate::config::AgentConfig;

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
}

/// Builds the client TLS configuration from the files a config names.
pub fn client_tls_config(config: &AgentConfig) -> Result<Arc<ClientConfig>, TransportError> {
    let ca = load_certs(&config.ca_path)?.remove(0);
    let chain = load_certs(&config.cert_path)?;
    let key = load_key(&config.key_path)?;
    Ok(Arc::new(client_config(&ca, chain, key, config.cipher_preference.prefer_chacha())?))
}

/// Reads the per-device shared key file (64 hex digits).
pub fn load_shared_key(path: &std::path::Path) -> Result<SecretKey, TransportError> {
    use std::io::Read;
    let bad = |reason: String| TransportError::SharedKey { path: path.to_owned(), reason };
    let mut text = zeroize::Zeroizing::new(String::new());
    std::fs::File::open(path).and_then(|f| f.take(256).read_to_string(&mut text)).map_err(|e| bad(e.to_string()))?;
    SecretKey::from_hex(&text).map_err(|e| bad(e.to_string()))
}

/// An authenticated connection to the collector.
#[derive(Debug)]
pub struct Connection {
    stream: TlsStream<TcpStream>,
    max_frame: usize,
    reader: FrameReader,
    stored_seq: u64,
    /// Control messages that arrived while we waited for an acknowledgement.
    pending_controls: Vec<ControlMessage>,
    cipher_suite: Option<rustls::CipherSuite>,
}

impl Connection {
    /// Connects, completes mutual TLS, proves the shared key and waits for
    /// the collector's welcome.
    pub async fn open(
        config: &AgentConfig,
        tls: Arc<ClientConfig>,
        shared_key: &SecretKey,
        stream_id: u64,
    ) -> Result<Self, TransportError> {
        let timeout = config.connect_timeout;
        tokio::time::timeout(timeout, Self::open_inner(config, tls, shared_key, stream_id))
            .await
            .map_err(|_| TransportError::Timeout(timeout))?
    }

    async fn open_inner(
        config: &AgentConfig,
        tls: Arc<ClientConfig>,
        shared_key: &SecretKey,
        stream_id: u64,
    ) -> Result<Self, TransportError> {
        let address = &config.collector_address;
        let tcp = TcpStream::connect(address)
            .await
            .map_err(|source| TransportError::Connect { address: address.clone(), source })?;
        // Batches are small and latency matters more than packing.
        let _ = tcp.set_nodelay(true);
        let server_name = ServerName::try_from(config.server_name.clone())
            .map_err(|_| TransportError::UnexpectedReply("invalid server name"))?;
        let stream = TlsConnector::from(tls).connect(server_name, tcp).await.map_err(TransportError::Tls)?;
        let cipher_suite = stream.get_ref().1.negotiated_cipher_suite().map(|s| s.suite());

        let mut exported = [0u8; EXPORTER_LEN];
        stream
            .get_ref()
            .1
            .export_keying_material(&mut exported, EXPORTER_LABEL, None)
            .map_err(TransportError::Exporter)?;
        let proof = device_proof(shared_key, &exported, &config.identity);

        // Accept the collector's full default bound: an error may come
        // before we learn its own.
        let mut conn = Self {
            stream,
            max_frame: config.max_frame_bytes,
            reader: FrameReader::new(glimpse_common::wire::DEFAULT_MAX_FRAME_LEN),
            stored_seq: 0,
            pending_controls: Vec::new(),
            cipher_suite,
        };
        conn.send(&hello(&config.identity, stream_id)).await?;
        conn.send(&AgentMessage::AuthProof(AuthProof { proof })).await?;
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

    /// The negotiated TLS cipher suite.
    pub fn cipher_suite(&self) -> Option<rustls::CipherSuite> {
        self.cipher_suite
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
        // Serialise from a borrowed view: cloning a 4096-record batch per send
        // would double the agent's memory for nothing.
        let mut out = Vec::new();
        glimpse_common::wire::message::encode_batch_frame(batch, self.max_frame, &mut out)
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
