//! The client side of the admin protocol: one request to a running
//! collector's admin port, over mutual TLS with an admin certificate from
//! `glimpse-certs admin`, and the collector's one reply.
//!
//! The `glimpse-collector admin …` commands, the demo and the end-to-end
//! tests all go through [`admin_request`]. It holds no policy: the collector
//! decides what the admin's role allows and audits it.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpStream;

use glimpse_common::tls::{client_config, TlsConfigError, ALPN_ADMIN};
use glimpse_common::wire::admin::{AdminAction, AdminReply, AdminRequest, ADMIN_PROTOCOL_VERSION};
use glimpse_common::wire::io::{write_message, FrameIoError, FrameReader};
use glimpse_files::{load_certs, load_key};

/// An admin request could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminClientError {
    /// Certificate, key or CA could not be loaded.
    #[error(transparent)]
    Tls(#[from] TlsConfigError),
    /// The collector could not be reached or the TLS handshake failed.
    #[error("cannot reach the collector's admin port {address}: {source}")]
    Connect {
        /// Where.
        address: String,
        /// Why.
        source: std::io::Error,
    },
    /// The exchange failed.
    #[error(transparent)]
    Frame(#[from] FrameIoError),
    /// The server name is not valid.
    #[error("invalid server name {0:?}")]
    ServerName(String),
}

/// Who the admin is and how to reach the collector.
#[derive(Debug, Clone)]
pub struct AdminCredentials {
    /// Collector admin address, `host:port`.
    pub address: String,
    /// Name in the collector's certificate.
    pub server_name: String,
    /// The CA certificate.
    pub ca: PathBuf,
    /// The admin's certificate.
    pub cert: PathBuf,
    /// The admin's private key.
    pub key: PathBuf,
}

/// Sends one request and returns the collector's reply.
pub async fn admin_request(
    credentials: &AdminCredentials,
    action: AdminAction,
) -> Result<AdminReply, AdminClientError> {
    let ca = load_certs(&credentials.ca)?.remove(0);
    let mut config = client_config(&ca, load_certs(&credentials.cert)?, load_key(&credentials.key)?, false)?;
    config.alpn_protocols = vec![ALPN_ADMIN.to_vec()];
    let name = rustls_pki_types::ServerName::try_from(credentials.server_name.clone())
        .map_err(|_| AdminClientError::ServerName(credentials.server_name.clone()))?;
    let connect_error = |source| AdminClientError::Connect { address: credentials.address.clone(), source };
    let tcp = TcpStream::connect(&credentials.address).await.map_err(connect_error)?;
    let mut stream =
        tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.map_err(connect_error)?;
    write_message(&mut stream, &AdminRequest { version: ADMIN_PROTOCOL_VERSION, action }, 64 * 1024).await?;
    Ok(FrameReader::new(glimpse_common::wire::admin::MAX_ADMIN_REPLY_FRAME).next(&mut stream).await?)
}
