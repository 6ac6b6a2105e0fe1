//! The SSH listener for switches and gateways.
//!
//! A device logs in as `<org>/<device>` with the public key registered for
//! it (nothing else: no passwords, no keyboard-interactive), opens one
//! session channel and starts the `glimpse` subsystem, which carries the
//! same framed protocol as TLS. Shells, exec, terminals, port, agent, X11
//! and socket forwarding are all refused.
//!
//! Algorithms are limited to what an audit calls strong: hybrid
//! post-quantum ML-KEM-768 + X25519 or curve25519 key exchange with
//! OpenSSH's strict-kex (Terrapin) countermeasure, an Ed25519 host key,
//! ChaCha20-Poly1305 or AES-GCM, and encrypt-then-MAC SHA-2 MACs should a
//! client insist on a MAC. No compression.
//!
//! Unauthenticated connections are bounded in number, per source address
//! and in time (`[ssh] max_unauthenticated`,
//! `max_unauthenticated_per_source`, `auth_timeout_secs`), and a connection may
//! try `max_auth_attempts` keys; each refusal takes russh's constant
//! rejection time so that timing does not reveal which check failed.

mod handler;
pub mod host_key;

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::keys::{Algorithm, HashAlg, PrivateKey};
use russh::server::Config;
use russh::{cipher, compression, kex, mac, Preferred};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch, Semaphore};
use tracing::{debug, warn};

use crate::config::SshConfig;
use crate::ingest::connection::{serve_ssh_channel, ConnectionContext};
use crate::ingest::reject::RejectReason;
use crate::listener::{accept_until_shutdown, Drain};

pub use handler::SUBSYSTEM;

/// The SSH listener could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SshError {
    /// The host key could not be loaded or created.
    #[error("SSH host key {path}: {reason}")]
    HostKey {
        /// The key file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// The host key file is open to other users; refused.
    #[error(transparent)]
    HostKeyPermissions(#[from] glimpse_files::PermissionError),
    /// The SSH port could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Key exchanges offered with `post_quantum_kex_only`.
const KEX_POST_QUANTUM: &[kex::Name] =
    &[kex::MLKEM768X25519_SHA256, kex::EXTENSION_SUPPORT_AS_SERVER, kex::EXTENSION_OPENSSH_STRICT_KEX_AS_SERVER];
/// Key exchanges offered, best first, with the server's extension markers.
/// curve25519 stays for OpenSSH clients older than 9.9.
const KEX: &[kex::Name] = &[
    kex::MLKEM768X25519_SHA256,
    kex::CURVE25519,
    kex::CURVE25519_PRE_RFC_8731,
    kex::EXTENSION_SUPPORT_AS_SERVER,
    kex::EXTENSION_OPENSSH_STRICT_KEX_AS_SERVER,
];
/// AEAD ciphers only; the client's order decides (a MIPS device without
/// AES instructions asks for ChaCha20-Poly1305 first).
const CIPHERS: &[cipher::Name] = &[cipher::CHACHA20_POLY1305, cipher::AES_256_GCM, cipher::AES_128_GCM];
/// Never used with the AEAD ciphers above, but negotiated anyway: only
/// encrypt-then-MAC with SHA-2.
const MACS: &[mac::Name] = &[mac::HMAC_SHA512_ETM, mac::HMAC_SHA256_ETM];

/// The algorithm lists the collector offers.
pub fn preferred_algorithms(post_quantum_kex_only: bool) -> Preferred {
    Preferred {
        kex: Cow::Borrowed(if post_quantum_kex_only { KEX_POST_QUANTUM } else { KEX }),
        key: Cow::Borrowed(&[Algorithm::Ed25519]),
        cipher: Cow::Borrowed(CIPHERS),
        mac: Cow::Borrowed(MACS),
        compression: Cow::Borrowed(&[compression::NONE]),
        ..Preferred::DEFAULT
    }
}

/// The SHA-256 fingerprint devices pin, as `ssh-keygen -l` prints it.
pub fn host_key_fingerprint(key: &PrivateKey) -> String {
    key.public_key().fingerprint(HashAlg::Sha256).to_string()
}

/// The SSH listener.
pub struct SshServer {
    listener: TcpListener,
    config: Arc<Config>,
    settings: SshConfig,
    context: Arc<ConnectionContext>,
    connections: Arc<Semaphore>,
    unauthenticated: Arc<Semaphore>,
    per_source: Arc<SourceLimit>,
    fingerprint: String,
}

/// Unauthenticated connections per source address.
#[derive(Debug)]
struct SourceLimit {
    limit: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One unauthenticated connection's place in its source's count; given
/// back on drop.
pub(crate) struct SourceSlot {
    limits: Arc<SourceLimit>,
    source: IpAddr,
}

impl SourceLimit {
    fn try_take(self: &Arc<Self>, source: IpAddr) -> Option<SourceSlot> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let count = open.entry(source).or_insert(0);
        if *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(SourceSlot { limits: Arc::clone(self), source })
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut open = self.limits.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = open.get_mut(&self.source) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.source);
            }
        }
    }
}

impl std::fmt::Debug for SshServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshServer").field("fingerprint", &self.fingerprint).finish_non_exhaustive()
    }
}

impl SshServer {
    /// Loads (or creates) the host key and binds the listener.
    pub(crate) async fn bind(
        settings: &SshConfig,
        max_connections: usize,
        context: Arc<ConnectionContext>,
    ) -> Result<Self, SshError> {
        let key = host_key::load_or_create(&settings.host_key)?;
        let fingerprint = host_key_fingerprint(&key);
        let config = Config {
            // No version: nothing for a scanner to match against advisories.
            server_id: russh::SshId::Standard(Cow::Borrowed("SSH-2.0-glimpse")),
            methods: handler::methods(),
            auth_rejection_time: Duration::from_millis(500),
            // OpenSSH probes with "none" first; answering that at once is no leak.
            auth_rejection_time_initial: Some(Duration::ZERO),
            keys: vec![key],
            preferred: preferred_algorithms(settings.post_quantum_kex_only),
            max_auth_attempts: settings.max_auth_attempts,
            inactivity_timeout: Some(context.idle_timeout),
            keepalive_interval: Some(Duration::from_secs(30)),
            keepalive_max: 3,
            nodelay: true,
            ..Config::default()
        };
        let listener = TcpListener::bind(settings.listen)
            .await
            .map_err(|source| SshError::Bind { addr: settings.listen, source })?;
        Ok(Self {
            listener,
            config: Arc::new(config),
            settings: settings.clone(),
            context,
            connections: Arc::new(Semaphore::new(max_connections)),
            unauthenticated: Arc::new(Semaphore::new(settings.max_unauthenticated)),
            per_source: Arc::new(SourceLimit {
                limit: settings.max_unauthenticated_per_source,
                open: Mutex::new(HashMap::new()),
            }),
            fingerprint,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The host key's SHA-256 fingerprint.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Accepts until `shutdown`, then drains as the TLS listener does.
    pub(crate) async fn run(self, shutdown: watch::Receiver<bool>) {
        let stop = shutdown.clone();
        accept_until_shutdown("SSH ingest", &self.listener, stop, Drain::Finish, |tcp, peer| {
            let Some(source_slot) = self.per_source.try_take(peer.ip()) else {
                warn!(%peer, reason = RejectReason::Overload.as_str(), "too many unauthenticated SSH connections from this address; refusing");
                self.context.metrics.reject(RejectReason::Overload);
                return None;
            };
            let (Ok(connection), Ok(unauthenticated)) =
                (self.connections.clone().try_acquire_owned(), self.unauthenticated.clone().try_acquire_owned())
            else {
                warn!(%peer, reason = RejectReason::Overload.as_str(), "SSH connection limit reached; refusing device");
                self.context.metrics.reject(RejectReason::Overload);
                return None;
            };
            let handler = handler::DeviceHandler {
                peer,
                store: self.context.store.clone(),
                metrics: self.context.metrics.clone(),
                unauthenticated: Some((unauthenticated, source_slot)),
                on_authenticated: None,
                on_admitted: None,
                identity: None,
                key_fingerprint: None,
                channel: None,
                opened_session: false,
            };
            let (config, context, auth_timeout) = (self.config.clone(), self.context.clone(), self.settings.auth_timeout);
            let shutdown = shutdown.clone();
            Some(async move {
                serve(tcp, peer, handler, config, context, auth_timeout, shutdown).await;
                drop(connection);
            })
        })
        .await;
    }
}

/// One SSH connection: authentication within the deadline, the `glimpse`
/// subsystem within the handshake timeout, then the framed protocol.
async fn serve(
    tcp: TcpStream,
    peer: SocketAddr,
    mut handler: handler::DeviceHandler,
    config: Arc<Config>,
    context: Arc<ConnectionContext>,
    auth_timeout: Duration,
    shutdown: watch::Receiver<bool>,
) {
    let (authenticated_tx, authenticated) = oneshot::channel();
    let (admitted_tx, admitted) = oneshot::channel();
    handler.on_authenticated = Some(authenticated_tx);
    handler.on_admitted = Some(admitted_tx);
    // Acknowledgements are small and latency-bound (russh's `nodelay`
    // setting applies only to sockets it accepts itself).
    let _ = tcp.set_nodelay(true);
    let deadline = tokio::time::Instant::now() + auth_timeout;
    let mut running = match tokio::time::timeout_at(deadline, russh::server::run_stream(config, tcp, handler)).await {
        Ok(Ok(running)) => running,
        Ok(Err(e)) => {
            debug!(%peer, "SSH session did not start: {e}");
            return;
        }
        Err(_) => {
            warn!(%peer, reason = RejectReason::Overload.as_str(), "SSH client sent no version line in {auth_timeout:?}");
            context.metrics.reject(RejectReason::Overload);
            return;
        }
    };
    let handle = running.handle();
    let refuse = |why: String| {
        let handle = handle.clone();
        async move {
            let _ = handle.disconnect(russh::Disconnect::ByApplication, why, String::new()).await;
        }
    };
    tokio::select! {
        ended = &mut running => {
            debug!(%peer, "SSH session ended before authentication: {:?}", ended.err());
            return;
        }
        result = tokio::time::timeout_at(deadline, authenticated) => {
            if !matches!(result, Ok(Ok(()))) {
                warn!(%peer, reason = RejectReason::Overload.as_str(), "SSH authentication not completed in {auth_timeout:?}");
                context.metrics.reject(RejectReason::Overload);
                refuse("authentication timeout".into()).await;
                let _ = tokio::time::timeout(Duration::from_secs(1), running).await;
                return;
            }
        }
    }
    let admitted = tokio::select! {
        ended = &mut running => {
            debug!(%peer, "SSH session ended before the glimpse subsystem started: {:?}", ended.err());
            return;
        }
        result = tokio::time::timeout(context.handshake_timeout, admitted) => match result {
            Ok(Ok(admitted)) => admitted,
            _ => {
                warn!(%peer, "SSH device did not start the {SUBSYSTEM} subsystem in {:?}", context.handshake_timeout);
                context.metrics.reject(RejectReason::Protocol);
                refuse(format!("expected the {SUBSYSTEM} subsystem")).await;
                let _ = tokio::time::timeout(Duration::from_secs(1), running).await;
                return;
            }
        }
    };
    serve_ssh_channel(admitted.stream, peer, admitted.identity, admitted.key_fingerprint, context, shutdown).await;
    // The channel is closed (EOF and close went out behind the last frame).
    // Let the client read them and hang up itself; disconnecting at once
    // could overtake the last frame, an error the device should see.
    if tokio::time::timeout(Duration::from_secs(2), &mut running).await.is_err() {
        refuse("goodbye".into()).await;
        let _ = tokio::time::timeout(Duration::from_secs(1), running).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unauthenticated_slots_are_bounded_per_source_and_given_back() {
        let limits = Arc::new(SourceLimit { limit: 2, open: Mutex::new(HashMap::new()) });
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let first = limits.try_take(a).unwrap();
        let _second = limits.try_take(a).unwrap();
        assert!(limits.try_take(a).is_none(), "a third from the same address is refused");
        let other = limits.try_take(b).expect("another address is not affected");
        drop(first);
        assert!(limits.try_take(a).is_some(), "a slot comes back when its connection authenticates or ends");
        drop(other);
        assert!(!limits.open.lock().unwrap().contains_key(&b), "no entry is kept for an idle address");
    }

    #[test]
    fn offered_algorithms_are_the_strong_ones_only() {
        let default = preferred_algorithms(false);
        assert_eq!(default.kex[0], kex::MLKEM768X25519_SHA256);
        assert!(default.kex.contains(&kex::EXTENSION_OPENSSH_STRICT_KEX_AS_SERVER));
        assert!(default
            .kex
            .iter()
            .all(|k| !k.as_ref().starts_with("diffie-hellman") && !k.as_ref().starts_with("ecdh")));
        let post_quantum = preferred_algorithms(true);
        assert!(!post_quantum.kex.contains(&kex::CURVE25519));
        assert_eq!(default.key.as_ref(), &[Algorithm::Ed25519]);
        assert!(default.cipher.iter().all(|c| c.as_ref().contains("gcm") || c.as_ref().contains("poly1305")));
        assert!(default.mac.iter().all(|m| m.as_ref().ends_with("-etm@openssh.com")));
        assert_eq!(default.compression.as_ref(), &[compression::NONE]);
    }
}
