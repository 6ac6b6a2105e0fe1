//! Serving admin requests.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use glimpse_common::bounded::BoundedString;
use glimpse_common::wire::admin::{AdminReply, AdminRequest, MAX_ADMIN_REPLY_FRAME};
use glimpse_common::wire::io::{write_message, FrameReader};

use super::actions::AdminContext;
use crate::ingest::ServerTls;
use crate::listener::{accept_until_shutdown, Drain};
use crate::repeats::{span, RepeatAudit};
use glimpse_store::audit::aggregate::{Seen, Summary};
use glimpse_store::audit::AuditOutcome;

/// Largest admin request accepted.
const MAX_ADMIN_FRAME: usize = 64 * 1024;
/// Admin connections open at once; each lasts at most [`ADMIN_TIMEOUT`].
const MAX_ADMIN_CONNECTIONS: usize = 64;
/// Time allowed for one admin exchange.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The admin listener.
#[derive(Debug)]
pub struct AdminServer {
    listener: TcpListener,
    tls: ServerTls,
    context: AdminContext,
    slots: Arc<Semaphore>,
    refusals: Arc<RepeatAudit<IpAddr>>,
}

/// Connections refused before a client certificate was verified (bare
/// connects, scanners, failed handshakes), counted per source address.
type Refusals = RepeatAudit<IpAddr>;

fn describe_refusals(summary: &Summary<IpAddr>) -> (String, Option<glimpse_common::identity::OrgId>, String) {
    let when = span(summary);
    match summary.key {
        Some(ip) => (
            format!("peer:{ip}"),
            None,
            format!(
                "{} more admin connections from {ip} refused before a client certificate was verified, {when} \
                 (the first of the interval is audited on its own)",
                summary.events
            ),
        ),
        None => (
            "peer:other".to_owned(),
            None,
            format!(
                "{} admin connections from up to {} further addresses refused before a client certificate was \
                 verified, {when} (more sources than the table tracks one by one)",
                summary.events, summary.other_keys
            ),
        ),
    }
}

impl AdminServer {
    /// Binds the admin port.
    pub async fn bind(addr: SocketAddr, tls: ServerTls, context: AdminContext) -> std::io::Result<Self> {
        Ok(Self {
            listener: TcpListener::bind(addr).await?,
            tls,
            refusals: Arc::new(RepeatAudit::new(context.store.clone(), "admin.connect", describe_refusals)),
            context,
            slots: Arc::new(Semaphore::new(MAX_ADMIN_CONNECTIONS)),
        })
    }

    /// The aggregated refusals, for the service's periodic flush.
    pub(crate) fn refusals(&self) -> Arc<dyn crate::repeats::Flush> {
        self.refusals.clone()
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` turns true, then aborts open exchanges.
    pub async fn run(self, shutdown: watch::Receiver<bool>) {
        let Self { listener, tls, context, slots, refusals } = self;
        accept_until_shutdown("admin", &listener, shutdown, Drain::Abort, |tcp, peer| {
            // Admin connections are unauthenticated until the TLS handshake
            // completes: bounded, so a flood cannot exhaust the collector.
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                // Counted with the other refusals before a certificate is
                // verified, so that every one is accounted for.
                if refusals.observe(&peer.ip(), 1) == Seen::Audit {
                    warn!(%peer, "admin connection limit reached; refusing");
                    let context = context.clone();
                    // The audit append does blocking file I/O.
                    drop(tokio::task::spawn_blocking(move || {
                        let reason = format!("admin connection limit ({MAX_ADMIN_CONNECTIONS}) reached");
                        context.audit(&format!("peer:{peer}"), "admin.connect", None, AuditOutcome::Refused, &reason)
                    }));
                }
                return None;
            };
            let (acceptor, context, refusals) = (TlsAcceptor::from(tls.current()), context.clone(), refusals.clone());
            Some(async move {
                if tokio::time::timeout(ADMIN_TIMEOUT, serve(tcp, peer, acceptor, context, refusals)).await.is_err() {
                    warn!(%peer, "admin request timed out");
                }
                drop(slot);
            })
        })
        .await;
    }
}

async fn serve(
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    context: AdminContext,
    refusals: Arc<Refusals>,
) {
    let unauthenticated = format!("peer:{peer}");
    let mut stream = match acceptor.accept(tcp).await {
        Ok(stream) => stream,
        Err(e) => {
            // Anyone who can reach the port can fail a handshake: only the
            // first per source and interval is logged and audited on its
            // own, the rest are counted into one summary entry.
            if refusals.observe(&peer.ip(), 1) == Seen::Counted {
                debug!(%peer, "admin refused: TLS handshake failed: {e} (counted)");
                return;
            }
            warn!(%peer, "admin refused: TLS handshake failed: {e} (further refusals from this address are counted for {:?})", crate::repeats::REPEAT_INTERVAL);
            let reason = format!("TLS handshake failed: {e}");
            let context = context.clone();
            // The audit append does blocking file I/O.
            let _ = tokio::task::spawn_blocking(move || {
                context.audit(&unauthenticated, "admin.connect", None, AuditOutcome::Refused, &reason)
            })
            .await;
            return;
        }
    };
    let admin = match stream.get_ref().1.peer_certificates().and_then(|c| c.first()) {
        Some(leaf) => match glimpse_common::certificate::admin_identity_of(leaf) {
            Ok(admin) => admin,
            Err(e) => {
                warn!(%peer, "admin refused: not an admin certificate: {e}");
                let reason = format!("not an admin certificate: {e}");
                let audit = context.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    audit.audit(&unauthenticated, "admin.connect", None, AuditOutcome::Refused, &reason)
                })
                .await;
                let _ = reply(&mut stream, AdminReply::Refused(BoundedString::truncating("not an admin certificate")))
                    .await;
                return;
            }
        },
        None => return,
    };
    let request = match FrameReader::new(MAX_ADMIN_FRAME).next::<AdminRequest, _>(&mut stream).await {
        Ok(request) => request,
        Err(e) => {
            warn!(%peer, admin = %admin.to_uri(), "admin request unreadable: {e}");
            let _ = reply(&mut stream, AdminReply::Refused(BoundedString::truncating(&e.to_string()))).await;
            return;
        }
    };
    let actor = admin.clone();
    let (serial, not_after_ms) = match stream.get_ref().1.peer_certificates().and_then(|c| c.first()) {
        Some(leaf) => (
            glimpse_common::certificate::serial_hex_of(leaf).unwrap_or_default(),
            glimpse_common::certificate::not_after_unix_of(leaf).ok().map(|s| s.saturating_mul(1000)),
        ),
        None => (String::new(), None),
    };
    let act = move || match context.admit_certificate(&actor, &serial, not_after_ms) {
        Ok(()) => context.act(&actor, request.action),
        Err(reason) => AdminReply::Refused(BoundedString::truncating(&reason)),
    };
    let answer = match tokio::task::spawn_blocking(act).await {
        Ok(answer) => answer,
        Err(e) => AdminReply::Refused(BoundedString::truncating(&format!("internal error: {e}"))),
    };
    match &answer {
        AdminReply::Refused(reason) => warn!(%peer, admin = %admin.to_uri(), %reason, "admin request refused"),
        done => info!(%peer, admin = %admin.to_uri(), ?done, "admin request done"),
    }
    let _ = reply(&mut stream, answer).await;
    let _ = tokio::io::AsyncWriteExt::shutdown(&mut stream).await;
}

async fn reply(
    stream: &mut tokio_rustls::server::TlsStream<TcpStream>,
    answer: AdminReply,
) -> Result<(), glimpse_common::wire::io::FrameIoError> {
    write_message(stream, &answer, MAX_ADMIN_REPLY_FRAME).await
}
