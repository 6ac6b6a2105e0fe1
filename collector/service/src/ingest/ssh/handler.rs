//! One SSH connection's policy, as russh asks it: which key may log in as
//! which device, and which requests are allowed afterwards (the `glimpse`
//! subsystem on one session channel; nothing else).

use std::net::SocketAddr;
use std::sync::Arc;

use russh::keys::PublicKey;
use russh::server::{Auth, ChannelOpenHandle, Msg, PublicKeyOffer, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, ChannelOpenFailure, ChannelStream, MethodKind, MethodSet};
use tokio::sync::oneshot;
use tracing::{debug, info, warn};

use glimpse_common::identity::{DeviceId, DeviceIdentity, DeviceKind, OrgId};

use super::slots::Phase;
use super::PendingSlot;
use crate::ingest::reject::{refusal_warn, IngestMetrics, RejectReason};
use glimpse_store::store::Store;

/// The only subsystem a device may start.
pub const SUBSYSTEM: &str = "glimpse";

/// A device that authenticated and started the `glimpse` subsystem.
pub(crate) struct Admitted {
    pub(crate) identity: DeviceIdentity,
    /// The SHA-256 fingerprint of the key it logged in with.
    pub(crate) key_fingerprint: String,
    pub(crate) stream: ChannelStream<Msg>,
}

/// Per-connection state handed to russh.
pub(crate) struct DeviceHandler {
    pub(crate) peer: SocketAddr,
    pub(crate) store: Arc<Store>,
    pub(crate) metrics: Arc<IngestMetrics>,
    /// This connection's unauthenticated slot (held by the listener, given
    /// back here as soon as authentication succeeds).
    pub(crate) pending: Arc<PendingSlot>,
    pub(crate) on_authenticated: Option<oneshot::Sender<()>>,
    pub(crate) on_admitted: Option<oneshot::Sender<Admitted>>,
    pub(crate) identity: Option<DeviceIdentity>,
    /// The fingerprint of the key `identity` logged in with.
    pub(crate) key_fingerprint: Option<String>,
    /// The one session channel a device may open, until it asks for the subsystem.
    pub(crate) channel: Option<Channel<Msg>>,
    /// Whether a session channel was ever opened (only one is allowed).
    pub(crate) opened_session: bool,
    /// Whether a refused `env` request was logged (once per connection).
    pub(crate) env_logged: bool,
}

/// Public key authentication only; what the server tells clients to try.
pub(crate) fn methods() -> MethodSet {
    MethodSet::from(&[MethodKind::PublicKey][..])
}

fn reject() -> Auth {
    Auth::Reject { proceed_with_methods: Some(methods()), partial_success: false }
}

impl DeviceHandler {
    /// Which registered device `user` with `key` is, or why it is none.
    /// The user name is `<org>/<device>`; the key must be the one
    /// registered for that device, which must be a switch or gateway and
    /// not revoked.
    fn device_for(&self, user: &str, key: &PublicKey) -> Result<DeviceIdentity, (RejectReason, String)> {
        let shown: String = user.chars().take(80).collect();
        let (org, device) = user
            .split_once('/')
            .ok_or_else(|| (RejectReason::BadIdentity, format!("user {shown:?} is not <org>/<device>")))?;
        let org = OrgId::new(org).map_err(|e| (RejectReason::BadIdentity, e.to_string()))?;
        let device = DeviceId::new(device).map_err(|e| (RejectReason::BadIdentity, e.to_string()))?;
        let registry = self.store.registry();
        let lookup =
            |e: glimpse_store::keys::KeyError| (RejectReason::UnknownDevice, format!("registry lookup failed: {e}"));
        let registration = registry
            .get(&org, &device)
            .map_err(lookup)?
            .ok_or_else(|| (RejectReason::UnknownDevice, format!("{org}/{device} is not registered")))?;
        let identity = registration.identity;
        if registration.revoked {
            return Err((RejectReason::Revoked, format!("{identity} is revoked")));
        }
        if identity.kind == DeviceKind::Ap {
            return Err((RejectReason::RegistrationMismatch, format!("{identity} is an access point; APs use TLS")));
        }
        let registered = registry
            .ssh_key(&org, &device)
            .map_err(lookup)?
            .ok_or_else(|| (RejectReason::UnknownDevice, format!("{identity} has no registered SSH key")))?;
        let registered = PublicKey::from_openssh(&registered)
            .map_err(|e| (RejectReason::UnknownDevice, format!("registered SSH key of {identity} unreadable: {e}")))?;
        // Public keys are not secret; equality of the key material is the check.
        if registered.key_data() != key.key_data() {
            return Err((
                RejectReason::RegistrationMismatch,
                format!("key {} is not the one registered for {identity}", glimpse_common::ssh_keys::fingerprint(key)),
            ));
        }
        Ok(identity)
    }

    fn refuse_channel_request(
        &self,
        what: &str,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), russh::Error> {
        warn!(peer = %self.peer, device = ?self.identity.as_ref().map(ToString::to_string), "SSH {what} request refused: devices may only start the glimpse subsystem");
        session.channel_failure(channel)
    }
}

impl russh::server::Handler for DeviceHandler {
    type Error = russh::Error;

    async fn auth_publickey_offered(&mut self, user: &str, offer: PublicKeyOffer<'_>) -> Result<Auth, Self::Error> {
        self.pending.heard(Phase::Authentication);
        // Spares a signature for keys that would be refused anyway. A key
        // that is not the registered one is worth a warning (a stranger, or
        // a device with a replaced key); flooding it is rate-limited.
        match self.device_for(user, offer.public_key) {
            Ok(_) => Ok(Auth::Accept),
            Err((reason, detail)) => {
                refusal_warn!(self.metrics, self.peer.ip(), reason, peer = %self.peer, reason = reason.as_str(), "SSH key refused: {detail}");
                self.metrics.reject(reason);
                Ok(reject())
            }
        }
    }

    async fn auth_none(&mut self, _user: &str) -> Result<Auth, Self::Error> {
        self.pending.heard(Phase::Authentication);
        Ok(reject())
    }

    async fn auth_publickey(&mut self, user: &str, key: VerifiedPublicKey<'_>) -> Result<Auth, Self::Error> {
        self.pending.heard(Phase::Authentication);
        if let Err(reason) = glimpse_common::ssh_keys::check_algorithm(key.algorithm) {
            refusal_warn!(self.metrics, self.peer.ip(), RejectReason::BadIdentity, peer = %self.peer, "SSH key refused: {reason}");
            return Ok(reject());
        }
        match self.device_for(user, key.public_key) {
            Ok(identity) => {
                self.identity = Some(identity);
                self.key_fingerprint = Some(glimpse_common::ssh_keys::fingerprint(key.public_key));
                Ok(Auth::Accept)
            }
            Err((reason, detail)) => {
                refusal_warn!(self.metrics, self.peer.ip(), reason, peer = %self.peer, reason = reason.as_str(), "SSH device refused: {detail}");
                self.metrics.reject(reason);
                Ok(reject())
            }
        }
    }

    async fn auth_succeeded(&mut self, _session: &mut Session) -> Result<(), Self::Error> {
        self.pending.release();
        if let Some(tx) = self.on_authenticated.take() {
            let _ = tx.send(());
        }
        debug!(peer = %self.peer, device = ?self.identity.as_ref().map(ToString::to_string), "SSH authenticated");
        Ok(())
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.identity.is_none() || self.opened_session {
            warn!(peer = %self.peer, "second SSH session channel refused");
            reply.reject(ChannelOpenFailure::AdministrativelyProhibited).await;
            return Ok(());
        }
        self.opened_session = true;
        self.channel = Some(channel);
        reply.accept().await;
        Ok(())
    }

    async fn channel_open_x11(
        &mut self,
        _channel: Channel<Msg>,
        _originator_address: &str,
        _originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        warn!(peer = %self.peer, "SSH X11 channel refused");
        reply.reject(ChannelOpenFailure::AdministrativelyProhibited).await;
        Ok(())
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        _channel: Channel<Msg>,
        host_to_connect: &str,
        port_to_connect: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let target: String = host_to_connect.chars().take(80).collect();
        warn!(peer = %self.peer, %target, port = port_to_connect, "SSH port forward refused");
        reply.reject(ChannelOpenFailure::AdministrativelyProhibited).await;
        Ok(())
    }

    async fn channel_open_direct_streamlocal(
        &mut self,
        _channel: Channel<Msg>,
        _socket_path: &str,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        warn!(peer = %self.peer, "SSH socket forward refused");
        reply.reject(ChannelOpenFailure::AdministrativelyProhibited).await;
        Ok(())
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.refuse_channel_request("terminal", channel, session)
    }

    async fn x11_request(
        &mut self,
        channel: ChannelId,
        _single_connection: bool,
        _x11_auth_protocol: &str,
        _x11_auth_cookie: &str,
        _x11_screen_number: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.refuse_channel_request("X11 forwarding", channel, session)
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        variable_name: &str,
        _variable_value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        // OpenSSH sends LANG without wanting a reply; refusing is harmless,
        // so one line a connection (the name only: values may be secrets).
        if !self.env_logged {
            self.env_logged = true;
            let name: String = variable_name.chars().take(40).collect();
            info!(peer = %self.peer, device = ?self.identity.as_ref().map(ToString::to_string), variable = %name, "SSH env request refused (further env requests on this connection are refused silently)");
        }
        session.channel_failure(channel)
    }

    async fn shell_request(&mut self, channel: ChannelId, session: &mut Session) -> Result<(), Self::Error> {
        self.refuse_channel_request("shell", channel, session)
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        _data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.refuse_channel_request("exec", channel, session)
    }

    async fn agent_request(&mut self, channel: ChannelId, session: &mut Session) -> Result<bool, Self::Error> {
        self.refuse_channel_request("agent forwarding", channel, session)?;
        Ok(false)
    }

    async fn tcpip_forward(
        &mut self,
        address: &str,
        port: &mut u32,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        let address: String = address.chars().take(80).collect();
        warn!(peer = %self.peer, %address, port = *port, "SSH remote port forward refused");
        Ok(false)
    }

    async fn streamlocal_forward(&mut self, _socket_path: &str, _session: &mut Session) -> Result<bool, Self::Error> {
        warn!(peer = %self.peer, "SSH remote socket forward refused");
        Ok(false)
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let ready = name == SUBSYSTEM && self.channel.as_ref().is_some_and(|c| c.id() == channel);
        let (Some(identity), true) = (self.identity.clone(), ready) else {
            let name: String = name.chars().take(40).collect();
            return self.refuse_channel_request(&format!("subsystem {name:?}"), channel, session);
        };
        let (Some(open), Some(admit)) = (self.channel.take(), self.on_admitted.take()) else {
            return self.refuse_channel_request("second glimpse subsystem", channel, session);
        };
        session.channel_success(channel)?;
        let key_fingerprint = self.key_fingerprint.clone().unwrap_or_default();
        let _ = admit.send(Admitted { identity, key_fingerprint, stream: open.into_stream() });
        Ok(())
    }
}
