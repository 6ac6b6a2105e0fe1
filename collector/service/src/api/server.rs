//! The admin API's listener: TLS (client certificate optional) on our own
//! accept loop, then HTTP/1.1 or HTTP/2 by ALPN through hyper-util, with
//! every request carrying the connection's [`ConnInfo`].
//!
//! Pre-authentication resources are bounded: at most
//! [`MAX_API_CONNECTIONS`] connections, at most
//! [`super::limiter::MAX_CONNECTIONS_PER_SOURCE`] of them from one address,
//! a TLS handshake within
//! [`HANDSHAKE_TIMEOUT`], request headers within [`HEADER_TIMEOUT`] and at
//! most 16 KiB of them. Refusals before a certificate or token is checked
//! are audited per source address and minute (first on its own, the rest
//! summed).

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;
use tracing::{debug, warn};

use glimpse_common::identity::AdminIdentity;
use glimpse_store::audit::aggregate::{Seen, Summary};
use glimpse_store::audit::AuditOutcome;

use super::live::{Credential, LiveConnection};
use super::ApiState;
use crate::ingest::ServerTls;
use crate::listener::{accept_until_shutdown, stopped, Drain};
use crate::repeats::{span, RepeatAudit};

/// Connections open at once.
pub const MAX_API_CONNECTIONS: usize = 256;
/// Time allowed for the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed for a request's headers (and between requests on a
/// kept-alive HTTP/1.1 connection).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// Most bytes of request headers buffered.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// What every request knows about its connection.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The client's address.
    pub peer: SocketAddr,
    /// The client certificate's admin identity and serial, if one was
    /// presented; `Err` with the reason when it was not an admin
    /// certificate (a device's, say).
    pub certificate: Option<Result<(AdminIdentity, String), String>>,
    /// When the client certificate stops being valid (notAfter), Unix
    /// ms, so that what outlives the handshake (a console session) can
    /// end with it.
    pub certificate_not_after_ms: Option<i64>,
    /// The live connection, for revocation.
    pub live: Arc<LiveConnection>,
}

/// Refusals before a credential was verified, per source address.
pub(crate) type Refusals = RepeatAudit<IpAddr>;

pub(crate) fn describe_refusals(
    summary: &Summary<IpAddr>,
) -> (String, Option<glimpse_common::identity::OrgId>, String) {
    let when = span(summary);
    match summary.key {
        Some(ip) => (
            format!("peer:{ip}"),
            None,
            format!(
                "{} more admin API requests or connections from {ip} refused before a credential was verified, {when} \
                 (the first of the interval is audited on its own)",
                summary.events
            ),
        ),
        None => (
            "peer:other".to_owned(),
            None,
            format!(
                "{} admin API requests or connections from up to {} further addresses refused before a credential \
                 was verified, {when} (more sources than the table tracks one by one)",
                summary.events, summary.other_keys
            ),
        ),
    }
}

/// The admin API listener.
#[derive(Debug)]
pub struct ApiServer {
    listener: TcpListener,
    tls: ServerTls,
    state: ApiState,
    router: Router,
    slots: Arc<Semaphore>,
    per_source: Arc<super::limiter::SourceSlots>,
}

impl ApiServer {
    /// Binds the admin port.
    pub async fn bind(addr: SocketAddr, tls: ServerTls, state: ApiState) -> std::io::Result<Self> {
        let router = super::router(state.clone());
        Ok(Self {
            listener: TcpListener::bind(addr).await?,
            tls,
            state,
            router,
            slots: Arc::new(Semaphore::new(MAX_API_CONNECTIONS)),
            per_source: Arc::default(),
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` turns true, then closes open connections (a
    /// cut export resumes from its cursor).
    pub async fn run(self, shutdown: watch::Receiver<bool>) {
        let Self { listener, tls, state, router, slots, per_source } = self;
        let stop = shutdown.clone();
        accept_until_shutdown("admin API", &listener, shutdown, Drain::Abort, |tcp, peer| {
            let Some(source_slot) = per_source.take(peer.ip()) else {
                let share = super::limiter::MAX_CONNECTIONS_PER_SOURCE;
                refuse_connection(&state, peer, format!("this address already holds {share} admin API connections"));
                return None;
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                refuse_connection(&state, peer, format!("admin API connection limit ({MAX_API_CONNECTIONS}) reached"));
                return None;
            };
            let (acceptor, state, router, stop) =
                (TlsAcceptor::from(tls.current()), state.clone(), router.clone(), stop.clone());
            let open = state.telemetry.as_ref().map(|t| t.ingest().open_connection(crate::ingest::Transport::Admin));
            Some(async move {
                serve(tcp, peer, acceptor, state, router, stop).await;
                drop((slot, open, source_slot));
            })
        })
        .await;
    }
}

async fn serve(
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    state: ApiState,
    router: Router,
    mut shutdown: watch::Receiver<bool>,
) {
    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return handshake_refused(&state, peer, format!("TLS handshake failed: {e}")).await,
        Err(_) => return handshake_refused(&state, peer, "TLS handshake timed out".to_owned()).await,
    };
    let certificate: Option<Result<(AdminIdentity, String), String>> =
        stream.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|leaf| {
            let identity = glimpse_common::certificate::admin_identity_of(leaf)
                .map_err(|e| format!("not an admin certificate: {e}"))?;
            let serial = glimpse_common::certificate::serial_hex_of(leaf).map_err(|e| e.to_string())?;
            Ok((identity, serial))
        });
    if let Some(Err(reason)) = &certificate {
        // A certificate from our CA that is not an admin's (a device's):
        // audited once per connection; every request on it is refused.
        warn!(%peer, "admin API: {reason}");
        let (state, reason) = (state.clone(), reason.clone());
        drop(tokio::task::spawn_blocking(move || {
            state.context.audit(&format!("peer:{peer}"), "admin.connect", None, AuditOutcome::Refused, &reason)
        }));
    }
    let credential = match &certificate {
        Some(Ok((_, serial))) => Some(Credential::Certificate(serial.clone())),
        _ => None,
    };
    let guard = state.live.enter(credential);
    let mut cut = guard.connection.cut_signal();
    let certificate_not_after_ms = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|leaf| glimpse_common::certificate::not_after_unix_of(leaf).ok())
        .map(|secs| secs.saturating_mul(1000));
    let info = ConnInfo { peer, certificate, certificate_not_after_ms, live: guard.connection.clone() };
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(info.clone());
        let router = router.clone();
        async move { Ok::<_, Infallible>(router.oneshot(request.map(Body::new)).await.unwrap_or_else(|e| match e {})) }
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_HEADER_BYTES.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_HEADER_BYTES as u32)
        .max_concurrent_streams(32)
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        result = connection => {
            if let Err(e) = result {
                debug!(%peer, "admin API connection ended: {e}");
            }
        }
        _ = cut.wait_for(|cut| *cut) => {
            warn!(%peer, "admin API connection closed: a credential it used was revoked");
        }
        _ = stopped(&mut shutdown) => {}
    }
    drop(guard);
}

/// Logs and audits a connection refused at accept, the first per address
/// and minute on its own (the rest are summed).
fn refuse_connection(state: &ApiState, peer: SocketAddr, reason: String) {
    if state.refusals.observe(&peer.ip(), 1) == Seen::Audit {
        warn!(%peer, "admin API connection refused: {reason}");
        let state = state.clone();
        drop(tokio::task::spawn_blocking(move || {
            state.context.audit(&format!("peer:{peer}"), "admin.connect", None, AuditOutcome::Refused, &reason)
        }));
    }
}

async fn handshake_refused(state: &ApiState, peer: SocketAddr, reason: String) {
    // Anyone who can reach the port can fail a handshake: only the first
    // per source and interval is logged and audited on its own.
    if state.refusals.observe(&peer.ip(), 1) == Seen::Counted {
        debug!(%peer, "admin API refused: {reason} (counted)");
        return;
    }
    warn!(%peer, "admin API refused: {reason} (further refusals from this address are counted for a minute)");
    let state = state.clone();
    let _ = tokio::task::spawn_blocking(move || {
        state.context.audit(&format!("peer:{peer}"), "admin.connect", None, AuditOutcome::Refused, &reason)
    })
    .await;
}
