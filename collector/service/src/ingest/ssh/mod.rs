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
//! Connections that have not authenticated yet hold a slot of
//! `[ssh] max_unauthenticated` (see [`slots`] for who is evicted when they
//! are all taken: nothing is refused for want of one) and must authenticate
//! within `auth_timeout_secs`, whatever phase they are in (version line, key
//! exchange, authentication): at the deadline the socket is closed and the
//! slot freed (see [`kill`]). A connection may try `max_auth_attempts`
//! keys; each refusal takes russh's constant rejection time so that timing
//! does not reveal which check failed.

mod handler;
pub mod host_key;
mod kill;
mod slots;

use std::borrow::Cow;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use russh::keys::{Algorithm, HashAlg, PrivateKey};
use russh::server::Config;
use russh::{cipher, compression, kex, mac, Preferred};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch, Semaphore};
use tracing::{debug, warn};

use crate::config::SshConfig;
use crate::ingest::connection::{serve_ssh_channel, ConnectionContext};
use crate::ingest::reject::{refusal_warn, IngestMetrics, RejectReason};
use crate::listener::{accept_until_shutdown, stopped, Drain};
use kill::{KillSwitch, Killable};
use slots::{Phase, SlotId, SlotTable};

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
    slots: Arc<UnauthenticatedSlots>,
    fingerprint: String,
}

/// A connection silent this long while its address holds its share of
/// unauthenticated slots may be evicted by that address's next connection.
const STALLED_AFTER: Duration = Duration::from_secs(5);

/// The slot table behind a lock, each slot with the switch that closes it.
#[derive(Debug)]
pub(crate) struct UnauthenticatedSlots {
    table: Mutex<SlotTable<Arc<KillSwitch>>>,
    evictions: std::sync::atomic::AtomicUsize,
}

/// One connection's slot, until it authenticates or ends; given back on
/// drop.
#[derive(Debug)]
pub(crate) struct PendingSlot {
    slots: Arc<UnauthenticatedSlots>,
    id: SlotId,
    released: AtomicBool,
}

impl UnauthenticatedSlots {
    fn new(capacity: usize, per_source: usize) -> Self {
        Self {
            table: Mutex::new(SlotTable::new(capacity, per_source, STALLED_AFTER)),
            evictions: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// Takes a slot for a connection from `peer` that `switch` closes,
    /// closing the connection the table evicts to make room, if any.
    fn open(self: &Arc<Self>, peer: SocketAddr, switch: Arc<KillSwitch>, metrics: &IngestMetrics) -> PendingSlot {
        let (id, evicted) = {
            let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
            table.open(peer.ip(), switch, Instant::now())
        };
        if let Some(evicted) = evicted {
            evicted.value.kill();
            self.evictions.fetch_add(1, Ordering::Relaxed);
            metrics.reject(RejectReason::Overload);
            refusal_warn!(
                metrics,
                evicted.source,
                RejectReason::Overload,
                source = %evicted.source,
                phase = evicted.phase.as_str(),
                reason = RejectReason::Overload.as_str(),
                "unauthenticated SSH connection closed to admit {peer} ({}); it was in {} and silent for {:?}",
                evicted.cause.as_str(),
                evicted.phase.as_str(),
                evicted.silent,
            );
        }
        PendingSlot { slots: Arc::clone(self), id, released: AtomicBool::new(false) }
    }
}

impl PendingSlot {
    /// The client sent something and got as far as `phase`.
    pub(crate) fn heard(&self, phase: Phase) {
        if !self.is_released() {
            let mut table = self.slots.table.lock().unwrap_or_else(|p| p.into_inner());
            table.heard(self.id, phase, Instant::now());
        }
    }

    /// How far the client got, while it holds its slot.
    fn phase(&self) -> Option<Phase> {
        self.slots.table.lock().unwrap_or_else(|p| p.into_inner()).phase(self.id)
    }

    /// Whether the slot was given back.
    pub(crate) fn is_released(&self) -> bool {
        self.released.load(Ordering::Relaxed)
    }

    /// Gives the slot back (authenticated, ended or closed); idempotent.
    pub(crate) fn release(&self) {
        if !self.released.swap(true, Ordering::Relaxed) {
            self.slots.table.lock().unwrap_or_else(|p| p.into_inner()).close(self.id);
        }
    }
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        self.release();
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
        connections: Arc<Semaphore>,
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
            connections,
            slots: Arc::new(UnauthenticatedSlots::new(
                settings.max_unauthenticated,
                settings.max_unauthenticated_per_source,
            )),
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

    /// Unauthenticated connections evicted to make room since start.
    pub fn evictions(&self) -> usize {
        self.slots.evictions.load(Ordering::Relaxed)
    }

    /// Accepts until `shutdown`, then drains as the TLS listener does.
    pub(crate) async fn run(self, shutdown: watch::Receiver<bool>) {
        let stop = shutdown.clone();
        accept_until_shutdown("SSH ingest", &self.listener, stop, Drain::Finish, |tcp, peer| {
            let Ok(connection) = self.connections.clone().try_acquire_owned() else {
                refusal_warn!(self.context.metrics, peer.ip(), RejectReason::Overload, %peer, reason = RejectReason::Overload.as_str(), "SSH connection limit reached; refusing device");
                self.context.metrics.reject(RejectReason::Overload);
                return None;
            };
            let switch = Arc::new(KillSwitch::default());
            let pending = Arc::new(self.slots.open(peer, switch.clone(), &self.context.metrics));
            let handler = handler::DeviceHandler {
                peer,
                store: self.context.store.clone(),
                metrics: self.context.metrics.clone(),
                pending: pending.clone(),
                on_authenticated: None,
                on_admitted: None,
                identity: None,
                key_fingerprint: None,
                channel: None,
                opened_session: false,
                env_logged: false,
            };
            let (config, context, auth_timeout) = (self.config.clone(), self.context.clone(), self.settings.auth_timeout);
            let shutdown = shutdown.clone();
            let open = self.context.metrics.open_connection(crate::ingest::reject::Transport::Ssh);
            Some(async move {
                let link = Link { peer, switch, pending };
                serve(tcp, link, handler, config, context, auth_timeout, shutdown).await;
                drop((connection, open));
            })
        })
        .await;
    }
}

/// What the listener keeps of a connection it handed to russh.
struct Link {
    peer: SocketAddr,
    switch: Arc<KillSwitch>,
    pending: Arc<PendingSlot>,
}

impl Drop for Link {
    fn drop(&mut self) {
        // Whatever way serve() ends, the socket russh holds is closed and
        // the slot is free; nothing waits for russh's own timeouts.
        self.pending.release();
        self.switch.kill();
    }
}

/// Why a connection that had not authenticated stopped waiting.
enum Interrupted {
    Killed,
    Shutdown,
}

/// Resolves when the connection is evicted or the collector shuts down.
async fn interrupted(switch: &KillSwitch, shutdown: &mut watch::Receiver<bool>) -> Interrupted {
    tokio::select! {
        () = switch.killed() => Interrupted::Killed,
        () = stopped(shutdown) => Interrupted::Shutdown,
    }
}

/// One SSH connection: authentication within the deadline (whatever the
/// phase), the `glimpse` subsystem within the handshake timeout, then the
/// framed protocol.
async fn serve(
    tcp: TcpStream,
    link: Link,
    mut handler: handler::DeviceHandler,
    config: Arc<Config>,
    context: Arc<ConnectionContext>,
    auth_timeout: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let peer = link.peer;
    let (authenticated_tx, authenticated) = oneshot::channel();
    let (admitted_tx, admitted) = oneshot::channel();
    handler.on_authenticated = Some(authenticated_tx);
    handler.on_admitted = Some(admitted_tx);
    // Acknowledgements are small and latency-bound (russh's `nodelay`
    // setting applies only to sockets it accepts itself).
    let _ = tcp.set_nodelay(true);
    let stream = Killable::new(tcp, link.switch.clone(), link.pending.clone());
    let deadline = tokio::time::Instant::now() + auth_timeout;
    let timed_out = |phase: Option<Phase>| {
        let phase = phase.unwrap_or(Phase::Version).as_str();
        refusal_warn!(context.metrics, peer.ip(), RejectReason::Overload, %peer, phase, reason = RejectReason::Overload.as_str(), "SSH authentication not completed in {auth_timeout:?} (still in {phase}); connection closed");
        context.metrics.reject(RejectReason::Overload);
    };
    let started = tokio::select! {
        started = tokio::time::timeout_at(deadline, russh::server::run_stream(config, stream, handler)) => started,
        why = interrupted(&link.switch, &mut shutdown) => {
            if matches!(why, Interrupted::Shutdown) {
                debug!(%peer, "SSH connection closed before authentication: shutting down");
            }
            return;
        }
    };
    let mut running = match started {
        Ok(Ok(running)) => running,
        Ok(Err(e)) => {
            debug!(%peer, "SSH session did not start: {e}");
            return;
        }
        Err(_) => {
            timed_out(link.pending.phase());
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
        _ = interrupted(&link.switch, &mut shutdown) => return,
        result = tokio::time::timeout_at(deadline, authenticated) => {
            if !matches!(result, Ok(Ok(()))) {
                let phase = link.pending.phase();
                link.pending.release();
                timed_out(phase);
                if phase == Some(Phase::Authentication) {
                    // Key exchange is done, so russh can still send a
                    // disconnect message; the slot is already free.
                    let _ = tokio::time::timeout(Duration::from_millis(500), refuse("authentication timeout".into())).await;
                    let _ = tokio::time::timeout(Duration::from_millis(500), &mut running).await;
                }
                return;
            }
        }
    }
    link.pending.release();
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
