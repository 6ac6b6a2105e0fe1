//! Serving admin requests.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tracing::{info, warn};

use glimpse_common::bounded::{BoundedString, BoundedVec};
use glimpse_common::identity::{AdminIdentity, AdminRole, OrgId};
use glimpse_common::wire::admin::{AdminAction, AdminReply, AdminRequest};
use glimpse_common::wire::io::{write_message, FrameReader};
use glimpse_common::wire::{CaptureRequest, ControlMessage};

use crate::ingest::{AgentDirectory, ServerTls};

/// Largest admin request accepted.
const MAX_ADMIN_FRAME: usize = 64 * 1024;
/// Time allowed for one admin exchange.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether `admin` may act on `org`; the error says why not.
pub fn authorize(admin: &AdminIdentity, org: &OrgId) -> Result<(), String> {
    match admin.role {
        AdminRole::Operator => Ok(()),
        AdminRole::OrgAdmin if admin.org.as_ref() == Some(org) => Ok(()),
        AdminRole::OrgAdmin => Err(format!(
            "org-admin {} of {} may not act on organisation {org}",
            admin.name,
            admin.org.as_ref().map_or("?", OrgId::as_str)
        )),
        AdminRole::Support => {
            Err(format!("support staff act on {org} only under a grant from the organisation, and none is active"))
        }
    }
}

/// The admin listener.
#[derive(Debug)]
pub struct AdminServer {
    listener: TcpListener,
    tls: ServerTls,
    directory: Arc<AgentDirectory>,
}

impl AdminServer {
    /// Binds the admin port.
    pub async fn bind(addr: SocketAddr, tls: ServerTls, directory: Arc<AgentDirectory>) -> std::io::Result<Self> {
        Ok(Self { listener: TcpListener::bind(addr).await?, tls, directory })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` turns true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut tasks = JoinSet::new();
        loop {
            tokio::select! {
                accepted = self.listener.accept() => {
                    let Ok((tcp, peer)) = accepted else { continue };
                    let acceptor = TlsAcceptor::from(self.tls.current());
                    let directory = self.directory.clone();
                    tasks.spawn(async move {
                        if tokio::time::timeout(ADMIN_TIMEOUT, serve(tcp, peer, acceptor, &directory)).await.is_err() {
                            warn!(%peer, "admin request timed out");
                        }
                    });
                }
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                _ = crate::service::stopped(&mut shutdown) => break,
            }
        }
        tasks.shutdown().await;
    }
}

async fn serve(tcp: TcpStream, peer: SocketAddr, acceptor: TlsAcceptor, directory: &AgentDirectory) {
    let mut stream = match acceptor.accept(tcp).await {
        Ok(stream) => stream,
        Err(e) => {
            warn!(%peer, "admin refused: TLS handshake failed: {e}");
            return;
        }
    };
    let admin = match stream.get_ref().1.peer_certificates().and_then(|c| c.first()) {
        Some(leaf) => match glimpse_certs::admin_identity_of(leaf) {
            Ok(admin) => admin,
            Err(e) => {
                warn!(%peer, "admin refused: not an admin certificate: {e}");
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
    let answer = act(&admin, request.action, directory);
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
    write_message(stream, &answer, MAX_ADMIN_FRAME).await
}

fn refused(reason: impl AsRef<str>) -> AdminReply {
    AdminReply::Refused(BoundedString::truncating(reason.as_ref()))
}

fn act(admin: &AdminIdentity, action: AdminAction, directory: &AgentDirectory) -> AdminReply {
    match action {
        AdminAction::StartCapture { org, device, interface, filter, duration_secs, max_packets } => {
            if let Err(reason) = authorize(admin, &org) {
                return refused(reason);
            }
            if duration_secs == 0 || max_packets == 0 {
                return refused("a capture needs a positive duration and packet limit");
            }
            let id = rand::random::<u64>() >> 1;
            let request = CaptureRequest { id, interface, filter, duration_secs, max_packets };
            match directory.send(&org, &device, ControlMessage::StartCapture(request)) {
                Ok(()) => AdminReply::CaptureRequested { id },
                Err(e) => refused(e.to_string()),
            }
        }
        AdminAction::StopCapture { org, device, id } => {
            if let Err(reason) = authorize(admin, &org) {
                return refused(reason);
            }
            match directory.send(&org, &device, ControlMessage::StopCapture { id }) {
                Ok(()) => AdminReply::CaptureStopRequested,
                Err(e) => refused(e.to_string()),
            }
        }
        AdminAction::ConnectedDevices { org } => {
            if let Err(reason) = authorize(admin, &org) {
                return refused(reason);
            }
            AdminReply::Devices(BoundedVec::truncating(directory.connected(&org)))
        }
        AdminAction::CaptureStatus { org, device, id } => {
            if let Err(reason) = authorize(admin, &org) {
                return refused(reason);
            }
            AdminReply::CaptureStatus(directory.capture_outcome(&org, &device, id))
        }
        _ => refused("unknown admin action"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use glimpse_common::identity::AdminName;

    #[test]
    fn roles_are_scoped() {
        let acme = OrgId::new("acme").unwrap();
        let other = OrgId::new("other").unwrap();
        let name = AdminName::new("a").unwrap();
        let operator = AdminIdentity::new(name.clone(), AdminRole::Operator, None).unwrap();
        let org_admin = AdminIdentity::new(name.clone(), AdminRole::OrgAdmin, Some(acme.clone())).unwrap();
        let support = AdminIdentity::new(name, AdminRole::Support, Some(acme.clone())).unwrap();
        assert!(authorize(&operator, &other).is_ok());
        assert!(authorize(&org_admin, &acme).is_ok());
        assert!(authorize(&org_admin, &other).unwrap_err().contains("may not act on organisation other"));
        assert!(authorize(&support, &acme).unwrap_err().contains("grant"));
    }
}
