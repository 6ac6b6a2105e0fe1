//! The accept loop: connection limit, reloadable TLS, graceful shutdown.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use glimpse_common::tls::{server_config, TlsConfigError};
use glimpse_files::{load_certs, load_crls, load_key};

use crate::config::CollectorConfig;
use crate::ingest::connection::{serve_connection, ConnectionContext};
use crate::ingest::directory::AgentDirectory;
use crate::ingest::reject::{refusal_warn, IngestMetrics, RejectReason, Transport};
use crate::listener::{accept_until_shutdown, Drain};
use glimpse_store::store::Store;

/// The current TLS configuration; replaced on SIGHUP without touching
/// connections that are already up.
#[derive(Debug, Clone)]
pub struct ServerTls {
    current: Arc<RwLock<Arc<ServerConfig>>>,
    port: Port,
}

/// Which port a TLS configuration is for.
#[derive(Debug, Clone, Copy)]
enum Port {
    /// Agents: a device certificate is required.
    Agent,
    /// The HTTPS admin API: a client certificate is optional.
    Api,
}

impl ServerTls {
    /// Loads the CA, CRL, certificate and key the config names, for the
    /// agent port.
    pub fn load(config: &CollectorConfig) -> Result<Self, TlsConfigError> {
        Ok(Self { current: Arc::new(RwLock::new(Self::build(config, Port::Agent)?)), port: Port::Agent })
    }

    /// As [`ServerTls::load`], for the HTTPS admin API (HTTP/2 and
    /// HTTP/1.1; client certificates optional, checked against the same CA
    /// and CRL).
    pub fn load_api(config: &CollectorConfig) -> Result<Self, TlsConfigError> {
        Ok(Self { current: Arc::new(RwLock::new(Self::build(config, Port::Api)?)), port: Port::Api })
    }

    fn build(config: &CollectorConfig, port: Port) -> Result<Arc<ServerConfig>, TlsConfigError> {
        let ca = load_certs(&config.ca)?.remove(0);
        let crls = match &config.crl {
            Some(path) => load_crls(path)?,
            None => Vec::new(),
        };
        let chain = load_certs(&config.cert)?;
        let key = load_key(&config.key)?;
        let server = match port {
            Port::Agent => server_config(&ca, crls, chain, key)?,
            Port::Api => glimpse_common::tls::api_server_config(&ca, crls, chain, key)?,
        };
        Ok(Arc::new(server))
    }

    /// Re-reads every TLS file; on error the running configuration stays.
    pub fn reload(&self, config: &CollectorConfig) -> Result<(), TlsConfigError> {
        let fresh = Self::build(config, self.port)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(())
    }

    pub(crate) fn current(&self) -> Arc<ServerConfig> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// The agent-facing listener.
#[derive(Debug)]
pub struct IngestServer {
    listener: TcpListener,
    tls: ServerTls,
    context: Arc<ConnectionContext>,
    limit: Arc<Semaphore>,
}

impl IngestServer {
    /// Binds the listener. Use port 0 for an ephemeral port (tests).
    pub async fn bind(
        config: &CollectorConfig,
        tls: ServerTls,
        store: Arc<Store>,
        metrics: Arc<IngestMetrics>,
        directory: Arc<AgentDirectory>,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(config.listen).await?;
        let writer = crate::ingest::pipeline::StoreWriter::start(store.clone())?;
        let context = Arc::new(ConnectionContext {
            writer,
            store: store.clone(),
            metrics,
            directory,
            max_frame: config.max_frame_bytes,
            handshake_timeout: config.handshake_timeout,
            idle_timeout: config.idle_timeout,
            storage_retry: config.storage_retry,
            consent_drops: Arc::new(crate::repeats::RepeatAudit::new(
                store,
                "capture.receive",
                crate::ingest::connection::describe_consent_drops,
            )),
        });
        Ok(Self { listener, tls, context, limit: Arc::new(Semaphore::new(config.max_connections)) })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The aggregated consent-drop audit, for the service's periodic flush.
    pub(crate) fn repeated_audits(&self) -> Arc<dyn crate::repeats::Flush> {
        self.context.consent_drops.clone()
    }

    /// The connection limit; the SSH listener shares it.
    pub(crate) fn connection_limit(&self) -> Arc<Semaphore> {
        self.limit.clone()
    }

    /// What connections share; the SSH listener serves with the same.
    pub(crate) fn context(&self) -> Arc<ConnectionContext> {
        self.context.clone()
    }

    /// Accepts until `shutdown` turns true, then lets every connection
    /// finish the batch it is storing, tells its agent we are shutting
    /// down, and returns.
    pub async fn run(self, shutdown: watch::Receiver<bool>) {
        let Self { listener, tls, context, limit } = self;
        let stop = shutdown.clone();
        accept_until_shutdown("ingest", &listener, stop, Drain::Finish, |tcp, peer| {
            let Ok(permit) = limit.clone().try_acquire_owned() else {
                refusal_warn!(context.metrics, peer.ip(), RejectReason::Overload, %peer, reason = RejectReason::Overload.as_str(), "connection limit reached; refusing agent");
                context.metrics.reject(RejectReason::Overload);
                return None;
            };
            let _ = tcp.set_nodelay(true);
            let open = context.metrics.open_connection(Transport::Tls);
            let (context, tls, shutdown) = (context.clone(), tls.current(), shutdown.clone());
            Some(async move {
                serve_connection(tcp, peer, tls, context, shutdown).await;
                drop((permit, open));
            })
        })
        .await;
    }
}
