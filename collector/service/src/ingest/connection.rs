//! One agent connection, from TCP accept to goodbye.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use glimpse_common::auth::{verify_device_proof, EXPORTER_LABEL, EXPORTER_LEN};
use glimpse_common::bounded::{BoundedString, BoundedVec};
use glimpse_common::identity::{DeviceIdentity, OrgId};
use glimpse_common::minimise::{DevicePseudonymKey, MacForm, PseudonymCache, Pseudonymiser};
use glimpse_common::record::{Record, RecordBody};
use glimpse_common::wire::agent_decodes;
use glimpse_common::wire::io::{read_message, write_message, FrameIoError, FrameReader};
use glimpse_common::wire::{
    AgentMessage, AuthProof, Authentication, CollectorMessage, CollectorSession, ControlMessage, ErrorCode,
    ProtocolError, RetryLater, SessionAction, SessionError, SessionTimeouts, Welcome, WireError, PROTOCOL_VERSION,
};

use crate::ingest::details::{DeviceTransport, SessionFacts};
use crate::ingest::directory::{AgentDirectory, Credential, OrgDirectives, StatusTaken, Withdrawn};
use crate::ingest::pipeline::{InFlight, Pipeline, StoreWriter, Stored};
use crate::ingest::reject::{refusal_warn, DropReason, IngestMetrics, RejectReason};
use crate::ingest::withdraw::withdrawn;
use crate::repeats::{span, RepeatAudit};
use glimpse_store::audit::aggregate::{Seen, Summary};
use glimpse_store::store::Store;

/// What every connection task shares.
#[derive(Debug)]
pub(crate) struct ConnectionContext {
    pub(crate) store: Arc<Store>,
    pub(crate) metrics: Arc<IngestMetrics>,
    pub(crate) directory: Arc<AgentDirectory>,
    pub(crate) max_frame: usize,
    pub(crate) handshake_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    /// The first `RetryLater` delay when a batch cannot be stored.
    pub(crate) storage_retry: Duration,
    /// Capture records dropped for want of consent, audited per device and
    /// interval rather than per batch.
    pub(crate) consent_drops: Arc<RepeatAudit<DeviceIdentity>>,
    /// The threads that seal, sync and commit every connection's batches.
    pub(crate) writer: StoreWriter,
}

/// The summary entry of a device's consent drops over one interval.
pub(crate) fn describe_consent_drops(summary: &Summary<DeviceIdentity>) -> (String, Option<OrgId>, String) {
    let when = span(summary);
    match &summary.key {
        Some(identity) => (
            format!("device:{}/{}", identity.org, identity.device),
            Some(identity.org.clone()),
            format!(
                "{} more capture records dropped in {} more batches, {when}: no capture consent when they arrived",
                summary.amount, summary.events
            ),
        ),
        None => (
            "devices:other".to_owned(),
            None,
            format!(
                "{} capture records dropped in {} batches from up to {} further devices, {when}: no capture consent \
                 when they arrived",
                summary.amount, summary.events, summary.other_keys
            ),
        ),
    }
}

/// Why a connection ended early.
struct Refusal {
    reason: RejectReason,
    code: ErrorCode,
    /// Detailed reason for the collector's log.
    detail: String,
    /// What the agent is told; authentication failures stay vague so a
    /// prober learns nothing about which check failed.
    public: String,
}

/// Applies an organisation's data policy to records before storage; with a
/// pseudonymiser, every MAC address (which arrived in `form`) is brought to
/// its stored pseudonym.
fn minimise(
    records: &mut [glimpse_common::record::Record],
    omit: &[glimpse_common::minimise::MetadataField],
    pseudonyms: Option<(&Pseudonymiser, MacForm)>,
    cache: &mut PseudonymCache,
) {
    use glimpse_common::minimise::omit_from_record;
    for record in records {
        omit_from_record(&mut record.body, omit);
        if let Some((pseudonymiser, form)) = pseudonyms {
            pseudonymiser.apply_cached(&mut record.body, form, cache);
        }
    }
    cache.end_batch();
}

/// Unlinks the stations of every Wi-Fi report in `records`, each under a
/// key of its own made here and dropped at once (see
/// [`glimpse_common::minimise::unlink_stations`]): what an organisation
/// without location history gets stored. Fails only if the system's
/// random source does.
fn unlink_stations(records: &mut [glimpse_common::record::Record]) -> Result<(), ring::error::Unspecified> {
    let random = ring::rand::SystemRandom::new();
    for record in
        records.iter_mut().filter(|r| matches!(r.body, RecordBody::Wireless(_) | RecordBody::ClientDevices(_)))
    {
        let key = ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &random)?;
        glimpse_common::minimise::unlink_stations(&mut record.body, &key);
    }
    Ok(())
}

/// Removes blocked subjects' data (their stored `forms`) from `records`:
/// the records about one of them as a whole, which it returns, and their
/// entries in reports about many clients, whose number it returns (the
/// reports stay for the others).
fn drop_blocked<const N: usize>(
    records: &mut BoundedVec<glimpse_common::record::Record, N>,
    forms: &[glimpse_common::wire::admin::Subject],
) -> (Vec<glimpse_common::record::Record>, usize) {
    use glimpse_common::record::subject::{redact, Redaction};
    let (mut kept, mut removed, mut cut) = (Vec::with_capacity(records.len()), Vec::new(), 0);
    for mut record in std::mem::take(records).into_vec() {
        match redact(&mut record, forms) {
            Redaction::Keep => kept.push(record),
            Redaction::Changed => {
                cut += 1;
                kept.push(record);
            }
            Redaction::Remove => removed.push(record),
        }
    }
    // As many as there were, or fewer: within the bound.
    *records = BoundedVec::truncating(kept);
    (removed, cut)
}

/// The control messages that bring a device from `before` (nothing told
/// yet when `None`) to `now`. `device_key` gives the organisation's device
/// pseudonym key, asked for only when devices are to start pseudonymising.
/// `agent_version` is what the device's Hello named: a message it could not
/// decode is not sent (the collector applies that decision on arrival
/// instead).
fn directive_messages(
    before: Option<&OrgDirectives>,
    now: &OrgDirectives,
    agent_version: &str,
    device_key: impl FnOnce() -> Option<DevicePseudonymKey>,
) -> Vec<ControlMessage> {
    let mut messages = Vec::new();
    // First, and always on a new connection: a device hears how to scrub
    // before it hears it may capture (consent), so no capture of this
    // connection goes out unscrubbed; and one told "on" before a change
    // while it was away hears "off" too.
    if before.is_none_or(|b| b.strict_headers != now.strict_headers) {
        let message = ControlMessage::StrictHeaders { on: now.strict_headers };
        if agent_decodes(agent_version, &message) {
            messages.push(message);
        }
    }
    // Always on a new connection: a device that reconnects still holds the
    // list it heard before, which may have changed meanwhile.
    if before.is_none_or(|b| b.blocked != now.blocked) {
        let message = ControlMessage::BlockedSubjects { subjects: now.blocked.clone() };
        if agent_decodes(agent_version, &message) {
            messages.push(message);
        }
    }
    if before.is_none_or(|b| b.capture_consent != now.capture_consent) {
        messages.push(ControlMessage::Consent { capture: now.capture_consent });
    }
    if before.is_none_or(|b| b.omit != now.omit) {
        // A field newer than the agent would make the whole message
        // undecodable to it; it does not collect that field anyway, and
        // what arrives is trimmed here regardless.
        let omit = now
            .omit
            .iter()
            .copied()
            .filter(|field| glimpse_common::wire::agent_is_at_least(agent_version, field.first_agent_release()))
            .collect();
        messages.push(ControlMessage::DataPolicy { omit: BoundedVec::truncating(omit) });
    }
    // A device that was never told anything collects no WAN destinations,
    // so "keep not collecting them" is not worth a message; an agent that
    // cannot decode the directive never collects them at all.
    let was_collecting = before.is_some_and(|b| b.wan_destinations);
    if was_collecting != now.wan_destinations {
        let message = ControlMessage::WanDestinations { on: now.wan_destinations };
        if agent_decodes(agent_version, &message) {
            messages.push(message);
        }
    }
    // A device that was never told anything sends real MACs already, so
    // "keep sending them" is not worth a message.
    let was_pseudonymising = before.is_some_and(|b| b.pseudonymise_macs);
    if was_pseudonymising != now.pseudonymise_macs {
        let key = if now.pseudonymise_macs { device_key() } else { None };
        if now.pseudonymise_macs == key.is_some() {
            messages.push(ControlMessage::MacPseudonyms { key });
        }
    }
    messages
}

/// The organisation's device pseudonym key, for [`directive_messages`]. On
/// failure the device goes on sending real MACs, which are then pseudonymised
/// on arrival.
fn device_pseudonym_key(context: &ConnectionContext, org: &OrgId) -> Option<DevicePseudonymKey> {
    match context.store.pseudonym_key(org) {
        Ok(key) => Some(DevicePseudonymKey::derive(&key)),
        Err(e) => {
            warn!(%org, "devices cannot pseudonymise MACs themselves: the pseudonym key is unavailable: {e}");
            None
        }
    }
}

impl ConnectionContext {
    fn session_timeouts(&self) -> SessionTimeouts {
        SessionTimeouts { handshake: self.handshake_timeout, idle: self.idle_timeout }
    }

    /// The delay to name in the `failures`-th consecutive `RetryLater` of a
    /// connection: doubling from `storage_retry`, at most a minute, and
    /// well inside the idle timeout so that the waiting agent is not cut off.
    fn retry_delay(&self, failures: u32) -> Duration {
        let doubled = self.storage_retry.saturating_mul(1u32 << failures.saturating_sub(1).min(16));
        doubled
            .min(Duration::from_secs(60).max(self.storage_retry))
            .min(self.idle_timeout / 2)
            .max(Duration::from_millis(100))
    }

    /// Audits capture records dropped for want of consent. Blocking file
    /// I/O, but rare: an agent sends captures only with consent, so this
    /// covers the moments around a withdrawal and misbehaving agents.
    ///
    /// Only the first drop of a device per interval is audited on its own
    /// (and logged at WARN); the rest are summed into one entry when the
    /// interval closes. Returns whether this one was audited on its own.
    fn audit_captures_dropped(&self, identity: &DeviceIdentity, dropped: usize) -> bool {
        if self.consent_drops.observe(identity, dropped as u64) == Seen::Counted {
            return false;
        }
        let actor = format!("device:{}/{}", identity.org, identity.device);
        let detail = format!("{dropped} capture records dropped: no capture consent when they arrived");
        let outcome = glimpse_store::audit::AuditOutcome::Refused;
        self.store.audit_event(&actor, "capture.receive", Some(&identity.org), outcome, &detail);
        true
    }
}

impl Refusal {
    fn auth(reason: RejectReason, detail: String) -> Self {
        Self { reason, code: ErrorCode::AuthenticationFailed, detail, public: "authentication failed".to_owned() }
    }

    fn protocol(code: ErrorCode, detail: String) -> Self {
        Self { reason: RejectReason::Protocol, code, public: detail.clone(), detail }
    }

    /// The session's deadline passed before the agent authenticated.
    fn handshake_timeout(e: &SessionError) -> Self {
        Self { reason: RejectReason::Overload, code: e.code(), detail: e.to_string(), public: String::new() }
    }
}

/// Runs `work` unless the session's deadline passes first; the session
/// decides what a deadline means.
async fn before_deadline<T>(session: &mut CollectorSession, work: impl Future<Output = T>) -> Result<T, SessionError> {
    tokio::pin!(work);
    loop {
        let Some(deadline) = session.poll_timeout() else { return Ok(work.await) };
        tokio::select! {
            out = &mut work => return Ok(out),
            _ = tokio::time::sleep_until(deadline.into()) => session.handle_timeout(Instant::now())?,
        }
    }
}

/// Anything the framed protocol runs over once the transport has
/// authenticated the peer: a TLS stream or an SSH channel.
pub(crate) trait AgentStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> AgentStream for T {}

pub(crate) async fn serve_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    tls: Arc<ServerConfig>,
    context: Arc<ConnectionContext>,
    shutdown: watch::Receiver<bool>,
) {
    let accepted_at = Instant::now();
    let (stream, session, serial) = match authenticate(tcp, peer, tls, &context, accepted_at).await {
        Ok(authenticated) => authenticated,
        Err((refusal, stream)) => {
            refusal_warn!(context.metrics, peer.ip(), refusal.reason, %peer, reason = refusal.reason.as_str(), "agent refused: {}", refusal.detail);
            context.metrics.reject(refusal.reason);
            if let Some(mut stream) = stream {
                let _ = send_error(&mut stream, refusal.code, &refusal.public, context.max_frame).await;
            }
            return;
        }
    };
    let facts = tls_facts(&stream, peer);
    serve_authenticated(stream, session, facts, Credential::Certificate { serial }, &context, shutdown).await;
}

/// What the TLS handshake negotiated and the device certificate's expiry.
fn tls_facts(stream: &Stream, peer: SocketAddr) -> SessionFacts {
    let tls = stream.get_ref().1;
    let not_after = tls
        .peer_certificates()
        .and_then(|certs| certs.first())
        .and_then(|leaf| glimpse_common::certificate::not_after_unix_of(leaf).ok())
        .map(|secs| secs.saturating_mul(1000));
    SessionFacts {
        transport: DeviceTransport::Tls,
        peer,
        tls_version: tls.protocol_version().map(|v| format!("{v:?}")),
        cipher: tls.negotiated_cipher_suite().map(|s| format!("{:?}", s.suite())),
        kex: tls.negotiated_key_exchange_group().map(|g| format!("{:?}", g.name())),
        agent_version: String::new(),
        certificate_not_after_ms: not_after,
    }
}

/// The SSH key exchange and cipher a session runs, as far as they can be
/// told from the client's KEXINIT (see `ssh/kexinit.rs`).
#[derive(Debug, Clone, Default)]
pub(crate) struct SshAlgorithms {
    /// The key exchange.
    pub(crate) kex: Option<String>,
    /// The client-to-server cipher.
    pub(crate) cipher: Option<String>,
}

/// Runs the framed protocol on an SSH channel whose peer authenticated
/// with the registered public key of `identity`: Hello, a registry check
/// (the device may have been revoked since the key was checked), Welcome,
/// then batches exactly as over TLS. `key_fingerprint` is the key it
/// logged in with, checked again on every reload.
pub(crate) async fn serve_ssh_channel<S: AgentStream>(
    mut stream: S,
    peer: SocketAddr,
    identity: DeviceIdentity,
    key_fingerprint: String,
    algorithms: SshAlgorithms,
    context: Arc<ConnectionContext>,
    shutdown: watch::Receiver<bool>,
) {
    let session = match admit_ssh(&mut stream, &identity, &context).await {
        Ok(session) => session,
        Err((refusal, tell_agent)) => {
            refusal_warn!(context.metrics, peer.ip(), refusal.reason, %peer, device = %identity, reason = refusal.reason.as_str(), "SSH agent refused: {}", refusal.detail);
            context.metrics.reject(refusal.reason);
            if tell_agent {
                let _ = send_error(&mut stream, refusal.code, &refusal.public, context.max_frame).await;
                let _ = tokio::io::AsyncWriteExt::shutdown(&mut stream).await;
            }
            return;
        }
    };
    let credential = Credential::SshKey { fingerprint: key_fingerprint };
    // A registered SSH key has no expiry.
    let facts = SessionFacts {
        transport: DeviceTransport::Ssh,
        peer,
        tls_version: None,
        cipher: algorithms.cipher,
        kex: algorithms.kex,
        agent_version: String::new(),
        certificate_not_after_ms: None,
    };
    serve_authenticated(stream, session, facts, credential, &context, shutdown).await;
}

/// Everything after authentication, the same on every transport.
async fn serve_authenticated<S: AgentStream>(
    mut stream: S,
    mut session: CollectorSession,
    mut facts: SessionFacts,
    credential: Credential,
    context: &Arc<ConnectionContext>,
    shutdown: watch::Receiver<bool>,
) {
    let identity = session.identity().clone();
    let peer = facts.peer;
    let transport = facts.transport.listener();
    info!(
        %peer,
        device = %identity,
        transport = transport.as_str(),
        agent_version = session.agent_version(),
        cipher = facts.cipher.as_deref().unwrap_or("unknown"),
        kex = facts.kex.as_deref().unwrap_or("unknown"),
        "agent authenticated"
    );
    context.metrics.authenticated(transport);
    facts.agent_version = session.agent_version().to_owned();
    // Ends the session in the device details however this task ends.
    let _details = context.directory.session_details(&identity, facts, context.store.clock().clone());
    let (control_tx, control_rx) = context.directory.register(&identity);
    // Live first, then checked: a reload that ran after this connection's
    // registry check but before it went live is caught here, one that runs
    // later catches it itself.
    let (live, mut ended) = context.directory.enter_live(&identity, credential.clone());
    if let Some(reason) = withdrawn(&context.store, &identity, &credential, &|s| context.directory.on_crl(s)) {
        ended = watch::channel(Some(reason)).1;
    }
    let outcome = stream_batches(&mut stream, &mut session, context, shutdown, control_rx, ended).await;
    drop(live);
    context.directory.unregister(&identity, &control_tx);
    match outcome {
        Ok(()) => debug!(%peer, device = %identity, "agent disconnected"),
        Err(refusal) => {
            if refusal.reason == RejectReason::ShuttingDown {
                // An orderly part of shutdown, not a problem with the agent.
                info!(%peer, device = %identity, "agent connection closed: {}", refusal.detail);
            } else {
                warn!(%peer, device = %identity, reason = refusal.reason.as_str(), "agent connection closed: {}", refusal.detail);
            }
            if matches!(refusal.reason, RejectReason::Protocol | RejectReason::StorageUnavailable) {
                context.metrics.reject(refusal.reason);
            }
            let _ = send_error(&mut stream, refusal.code, &refusal.public, context.max_frame).await;
        }
    }
    let _ = tokio::io::AsyncWriteExt::shutdown(&mut stream).await;
}

/// Hello and the registry check for an SSH-authenticated device, within
/// the handshake timeout from the channel's start. On failure, the refusal
/// and whether to tell the agent (not when it ran out of time).
async fn admit_ssh<S: AgentStream>(
    stream: &mut S,
    identity: &DeviceIdentity,
    context: &ConnectionContext,
) -> Result<CollectorSession, (Refusal, bool)> {
    let mut session = CollectorSession::with_authentication(identity.clone(), Authentication::Transport)
        .with_timeouts(context.session_timeouts(), Instant::now());
    let mut buf = Vec::new();
    let read = before_deadline(&mut session, read_message::<AgentMessage, _>(stream, &mut buf, context.max_frame));
    let hello = read.await.map_err(|e| (Refusal::handshake_timeout(&e), false))?;
    let hello = hello.map_err(|e| (frame_refusal(e), true))?;
    let stored_seq = admit_ssh_hello(&mut session, hello, identity, context).map_err(|refusal| (refusal, true))?;
    let written = before_deadline(&mut session, write_welcome(stream, stored_seq, context)).await;
    written.map_err(|e| (Refusal::handshake_timeout(&e), false))?.map_err(|refusal| (refusal, true))?;
    session.proof_accepted(Instant::now(), stored_seq);
    Ok(session)
}

/// Checks the Hello and the registration; returns the stream's stored sequence.
fn admit_ssh_hello(
    session: &mut CollectorSession,
    hello: AgentMessage,
    identity: &DeviceIdentity,
    context: &ConnectionContext,
) -> Result<u64, Refusal> {
    match session.handle(Instant::now(), hello) {
        Ok(SessionAction::Admit) => {}
        Ok(_) => {
            return Err(Refusal::protocol(ErrorCode::UnexpectedMessage, "expected Hello".into()));
        }
        Err(e) if e.code() == ErrorCode::AuthenticationFailed => {
            return Err(Refusal::auth(RejectReason::Protocol, e.to_string()))
        }
        Err(e) => return Err(Refusal::protocol(e.code(), e.to_string())),
    }
    let lookup_failed = |e: glimpse_store::keys::KeyError| {
        Refusal::auth(RejectReason::UnknownDevice, format!("registry lookup failed: {e}"))
    };
    let registry = context.store.registry();
    let registration = registry
        .get(&identity.org, &identity.device)
        .map_err(lookup_failed)?
        .ok_or_else(|| Refusal::auth(RejectReason::UnknownDevice, format!("{identity} is no longer registered")))?;
    if registration.revoked {
        return Err(Refusal::auth(RejectReason::Revoked, format!("{identity} is revoked")));
    }
    registry.stored_seq(identity, session.stream_id()).map_err(lookup_failed)
}

/// Tells the agent it is in, and from which sequence to continue.
async fn write_welcome<S: AgentStream>(
    stream: &mut S,
    stored_seq: u64,
    context: &ConnectionContext,
) -> Result<(), Refusal> {
    let welcome = CollectorMessage::Welcome(Welcome {
        version: PROTOCOL_VERSION,
        max_frame_len: u32::try_from(context.max_frame).unwrap_or(u32::MAX),
        stored_seq,
    });
    write_message(stream, &welcome, context.max_frame)
        .await
        .map_err(|e| Refusal::protocol(ErrorCode::Malformed, format!("cannot send welcome: {e}")))
}

type Stream = TlsStream<TcpStream>;

/// TLS handshake, Hello, proof, registry checks. On failure returns the
/// refusal and, when TLS is up, the stream to send the error on.
async fn authenticate(
    tcp: TcpStream,
    peer: SocketAddr,
    tls: Arc<ServerConfig>,
    context: &ConnectionContext,
    accepted_at: Instant,
) -> Result<(Stream, CollectorSession, String), (Refusal, Option<Stream>)> {
    let timeouts = context.session_timeouts();
    // Before the TLS handshake there is no session yet (its certificate
    // says whom for); the deadline is the one the session will keep.
    let deadline = timeouts.handshake_deadline(accepted_at);
    let accepted = tokio::time::timeout_at(deadline.into(), TlsAcceptor::from(tls).accept(tcp)).await;
    let mut stream = match accepted {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            let reason = RejectReason::from_tls(&e);
            return Err((Refusal::auth(reason, format!("TLS handshake failed: {e}")), None));
        }
        Err(_) => return Err((Refusal::handshake_timeout(&SessionError::HandshakeTimeout(timeouts.handshake)), None)),
    };
    let (identity, serial) = match peer_identity(&stream) {
        Ok(pair) => pair,
        Err(detail) => return Err((Refusal::auth(RejectReason::BadIdentity, detail), Some(stream))),
    };
    let mut session = CollectorSession::new(identity.clone()).with_timeouts(timeouts, accepted_at);
    let mut buf = Vec::new();
    // Hello, then AuthProof.
    let proof = loop {
        let read =
            before_deadline(&mut session, read_message::<AgentMessage, _>(&mut stream, &mut buf, context.max_frame));
        let msg = match read.await {
            Ok(Ok(msg)) => msg,
            Ok(Err(e)) => return Err((frame_refusal(e), Some(stream))),
            Err(e) => return Err((Refusal::handshake_timeout(&e), None)),
        };
        match session.handle(Instant::now(), msg) {
            Ok(SessionAction::Continue) => continue,
            Ok(SessionAction::VerifyProof(proof)) => break proof,
            // CollectorSession only asks to continue or verify before the proof.
            Ok(_) => {
                return Err((
                    Refusal::protocol(ErrorCode::UnexpectedMessage, "unexpected message before authentication".into()),
                    Some(stream),
                ))
            }
            Err(e) => {
                let refusal = if e.code() == ErrorCode::AuthenticationFailed {
                    Refusal::auth(RejectReason::Protocol, e.to_string())
                } else {
                    Refusal::protocol(e.code(), e.to_string())
                };
                return Err((refusal, Some(stream)));
            }
        }
    };
    let stored_seq = match check_registration(&stream, &identity, &serial, &proof, session.stream_id(), context) {
        Ok(seq) => seq,
        Err(refusal) => return Err((refusal, Some(stream))),
    };
    // The welcome goes out within the handshake's deadline; the idle
    // clock starts once it is out.
    match before_deadline(&mut session, write_welcome(&mut stream, stored_seq, context)).await {
        Ok(Ok(())) => {}
        Ok(Err(refusal)) => return Err((refusal, None)),
        Err(e) => return Err((Refusal::handshake_timeout(&e), None)),
    }
    session.proof_accepted(Instant::now(), stored_seq);
    let _ = peer;
    Ok((stream, session, serial))
}

/// The device identity and serial from the verified client certificate.
fn peer_identity(stream: &Stream) -> Result<(DeviceIdentity, String), String> {
    let certs = stream.get_ref().1.peer_certificates().ok_or("no client certificate")?;
    let leaf = certs.first().ok_or("empty client certificate chain")?;
    let identity =
        glimpse_common::certificate::device_identity_of(leaf).map_err(|e| format!("certificate identity: {e}"))?;
    let serial = glimpse_common::certificate::serial_hex_of(leaf).map_err(|e| format!("certificate serial: {e}"))?;
    Ok((identity, serial))
}

fn check_registration(
    stream: &Stream,
    identity: &DeviceIdentity,
    serial: &str,
    proof: &AuthProof,
    stream_id: u64,
    context: &ConnectionContext,
) -> Result<u64, Refusal> {
    let registry = context.store.registry();
    let registration = registry
        .get(&identity.org, &identity.device)
        .map_err(|e| Refusal::auth(RejectReason::UnknownDevice, format!("registry lookup failed: {e}")))?
        .ok_or_else(|| Refusal::auth(RejectReason::UnknownDevice, format!("{identity} is not registered")))?;
    if registration.revoked {
        return Err(Refusal::auth(RejectReason::Revoked, format!("{identity} is revoked")));
    }
    if registration.identity != *identity {
        return Err(Refusal::auth(
            RejectReason::RegistrationMismatch,
            format!("certificate names {identity} but the registration is for {}", registration.identity),
        ));
    }
    if !registration.cert_serial.eq_ignore_ascii_case(serial) {
        return Err(Refusal::auth(
            RejectReason::RegistrationMismatch,
            format!("certificate serial {serial} is not the one registered for {identity}"),
        ));
    }
    let mut exported = [0u8; EXPORTER_LEN];
    stream
        .get_ref()
        .1
        .export_keying_material(&mut exported, EXPORTER_LABEL, None)
        .map_err(|e| Refusal::auth(RejectReason::TlsHandshake, format!("TLS exporter failed: {e}")))?;
    if !verify_device_proof(&registration.shared_key, &exported, identity, &proof.proof) {
        return Err(Refusal::auth(RejectReason::WrongSharedKey, format!("shared-key proof for {identity} is wrong")));
    }
    registry
        .stored_seq(identity, stream_id)
        .map_err(|e| Refusal::auth(RejectReason::UnknownDevice, format!("registry lookup failed: {e}")))
}

async fn stream_batches<S: AgentStream>(
    stream: &mut S,
    session: &mut CollectorSession,
    context: &Arc<ConnectionContext>,
    mut shutdown: watch::Receiver<bool>,
    mut control: tokio::sync::mpsc::Receiver<glimpse_common::wire::ControlMessage>,
    mut ended: watch::Receiver<Option<Withdrawn>>,
) -> Result<(), Refusal> {
    let mut reader = FrameReader::new(context.max_frame);
    let mut unsolicited: u64 = 0;
    // The organisation's capture consent and data policy: now, and on
    // every change.
    let org = session.identity().org.clone();
    let stored = OrgDirectives::of(&context.store.policies().get(&org));
    let mut directives = context.directory.directives_receiver(&org, stored);
    let mut told = directives.borrow_and_update().clone();
    let agent_version = session.agent_version().to_owned();
    for message in directive_messages(None, &told, &agent_version, || device_pseudonym_key(context, &org)) {
        send(stream, &CollectorMessage::Control(message), context.max_frame).await?;
    }
    // Storage failures in a row on this connection, for the retry delay.
    let mut failures: u32 = 0;
    // Stored forms of the addresses this device names again and again.
    let mut pseudonym_cache = PseudonymCache::new();
    // Batches being stored, acknowledged in order as they are.
    let mut pipeline = Pipeline::new(context.writer.clone());
    loop {
        // Copied out: the borrow must not be held across an await.
        let withdrawn = *ended.borrow();
        if let Some(reason) = withdrawn {
            // Batches read before the reload are finished and acknowledged,
            // as one being stored always was; nothing read after it is
            // stored.
            settle_all(stream, session, context, &mut pipeline, &mut failures).await?;
            return Err(withdrawn_refusal(context, session.identity(), reason));
        }
        // The session says how long the agent may stay quiet.
        let wake = session.poll_timeout();
        let msg = tokio::select! {
            // A withdrawal wins over a frame that arrived at the same time:
            // nothing read after the reload is stored.
            biased;
            Ok(()) = ended.changed() => continue,
            // Acknowledgements first: they free the agent's window.
            (done, outcome) = pipeline.next_outcome(), if !pipeline.is_empty() => {
                settle(stream, session, context, &mut pipeline, &mut failures, done, outcome).await?;
                continue;
            }
            // Cancel-safe: a frame half read when a control message goes out
            // stays buffered in the reader. Not while this connection has as
            // many batches being stored as it may.
            read = reader.next::<AgentMessage, _>(stream), if pipeline.has_room() => {
                match read {
                    Ok(msg) => (msg, Instant::now()),
                    Err(FrameIoError::Closed) => return Ok(()),
                    Err(e) => return Err(frame_refusal(e)),
                }
            }
            _ = sleep_until(wake) => {
                match session.handle_timeout(Instant::now()) {
                    Ok(()) => continue,
                    Err(e) => return Err(Refusal { reason: RejectReason::IdleTimeout, code: e.code(), detail: e.to_string(), public: e.to_string() }),
                }
            }
            Ok(()) = directives.changed() => {
                let now = directives.borrow_and_update().clone();
                for message in directive_messages(Some(&told), &now, &agent_version, || device_pseudonym_key(context, &org)) {
                    debug!(device = %session.identity(), ?message, "directive sent");
                    send(stream, &CollectorMessage::Control(message), context.max_frame).await?;
                }
                told = now;
                continue;
            }
            Some(message) = control.recv() => {
                // The admin action checked the version; a message the agent
                // could not decode would only end its connection.
                if !agent_decodes(&agent_version, &message) {
                    warn!(device = %session.identity(), ?message, agent_version, "control message not sent: the agent is too old to decode it");
                    continue;
                }
                debug!(device = %session.identity(), ?message, "control message sent");
                send(stream, &CollectorMessage::Control(message), context.max_frame).await?;
                continue;
            }
            _ = crate::listener::stopped(&mut shutdown) => {
                // Batches read before the signal are stored and acknowledged.
                settle_all(stream, session, context, &mut pipeline, &mut failures).await?;
                return Err(Refusal { reason: RejectReason::ShuttingDown, code: ErrorCode::ShuttingDown, detail: "collector shutting down".into(), public: "collector shutting down; reconnect later".into() });
            }
        };
        let (msg, read_at) = msg;
        match session.handle(read_at, msg).map_err(|e| Refusal::protocol(e.code(), e.to_string()))? {
            SessionAction::Store(mut batch, macs) => {
                let seq = batch.stream_seq;
                let counted = context.metrics.received(&org, &batch.records);
                // Whether the batch is stored exactly as counted on arrival:
                // no record dropped, none changed in size.
                let mut as_counted = true;
                // The second line of defence for the headers-only promise:
                // whatever an agent sent past a header boundary is cut here,
                // before anything is stored.
                // Consent is checked on arrival, not on capture: records
                // captured before a withdrawal that arrive after it are
                // dropped too.
                if !context.store.policies().capture_consent(&org) {
                    let captures = batch.records.iter().filter(|r| matches!(r.body, RecordBody::Capture(_)));
                    context.metrics.dropped(&org, captures, DropReason::NoConsent);
                    let before = batch.records.len();
                    batch.records.retain(|r| !matches!(r.body, RecordBody::Capture(_)));
                    let dropped = before - batch.records.len();
                    as_counted &= dropped == 0;
                    if dropped > 0 {
                        if context.audit_captures_dropped(session.identity(), dropped) {
                            warn!(
                                device = %session.identity(),
                                seq,
                                dropped,
                                "capture records from an organisation without capture consent; dropped (more from this device are counted into one audit entry per {:?})",
                                crate::repeats::REPEAT_INTERVAL
                            );
                        } else {
                            debug!(device = %session.identity(), seq, dropped, "capture records without consent dropped (counted)");
                        }
                    }
                }
                // Data minimisation is enforced here too: an agent that has
                // not heard the policy yet cannot get omitted fields stored.
                let policy = context.store.policies().get(&org);
                // WAN destinations only when the organisation enables them,
                // checked on arrival like consent: rows collected before it
                // turned them off are dropped too.
                if !policy.wan_destinations {
                    let is_destinations = |r: &Record| matches!(r.body, RecordBody::WanDestinations(_));
                    let rows = batch.records.iter().filter(|r| is_destinations(r));
                    context.metrics.dropped(&org, rows, DropReason::NotEnabled);
                    let before = batch.records.len();
                    batch.records.retain(|r| !is_destinations(r));
                    let dropped = before - batch.records.len();
                    as_counted &= dropped == 0;
                    if dropped > 0 {
                        debug!(device = %session.identity(), seq, dropped, "WAN destination records from an organisation that has not enabled them; dropped (counted)");
                    }
                }
                // Pseudonyms made on the device get the collector's layer
                // even if the organisation has just stopped pseudonymising:
                // they must stay comparable with what is already stored.
                let pseudonymise = policy.pseudonymise_macs || macs == MacForm::DevicePseudonyms;
                // Omitted fields shrink records; pseudonyms are as long as
                // the addresses they replace.
                as_counted &= policy.omit.is_empty();
                if !policy.omit.is_empty() || pseudonymise {
                    let pseudonymiser = if pseudonymise {
                        let key = match context.store.pseudonym_key(&org) {
                            Ok(key) => key,
                            Err(e) => {
                                if !settle_all(stream, session, context, &mut pipeline, &mut failures).await? {
                                    continue;
                                }
                                failures = failures.saturating_add(1);
                                let detail = format!("pseudonym key unavailable: {e}");
                                retry_later(stream, session, context, seq, failures, &detail).await?;
                                continue;
                            }
                        };
                        context.metrics.pseudonymised(macs);
                        Some(Pseudonymiser::new(key))
                    } else {
                        None
                    };
                    minimise(
                        batch.records.as_mut_slice(),
                        &policy.omit,
                        pseudonymiser.as_ref().map(|p| (p, macs)),
                        &mut pseudonym_cache,
                    );
                }
                // Blocked subjects' data is dropped before anything of it is
                // stored, whatever the device sent (an agent older than the
                // block list, records queued before it heard of a block).
                // After pseudonymisation: the forms matched are the stored
                // ones. Before unlinking: that hides which station is whose.
                if !policy.blocked.is_empty() {
                    let forms = match glimpse_store::subject::blocked_forms(&context.store, &org) {
                        Ok(forms) => forms,
                        Err(e) => {
                            if !settle_all(stream, session, context, &mut pipeline, &mut failures).await? {
                                continue;
                            }
                            failures = failures.saturating_add(1);
                            let detail = format!("blocked subjects cannot be matched: {e}");
                            retry_later(stream, session, context, seq, failures, &detail).await?;
                            continue;
                        }
                    };
                    let (removed, cut) = drop_blocked(&mut batch.records, &forms);
                    as_counted &= removed.is_empty() && cut == 0;
                    if !removed.is_empty() || cut > 0 {
                        debug!(device = %session.identity(), seq, removed = removed.len(), cut, "blocked subjects' data dropped on arrival");
                        context.metrics.dropped(&org, removed.iter(), DropReason::BlockedSubject);
                    }
                }
                // No location history unless the organisation chose one.
                // Unlinking clears stations' addresses and names.
                as_counted &= policy.location_history
                    || !batch
                        .records
                        .iter()
                        .any(|r| matches!(r.body, RecordBody::Wireless(_) | RecordBody::ClientDevices(_)));
                if !policy.location_history && unlink_stations(batch.records.as_mut_slice()).is_err() {
                    if !settle_all(stream, session, context, &mut pipeline, &mut failures).await? {
                        continue;
                    }
                    failures = failures.saturating_add(1);
                    retry_later(stream, session, context, seq, failures, "no random source to unlink stations").await?;
                    continue;
                }
                let (cut_bytes, cut_records, scrubbed) =
                    enforce_headers_only(batch.records.as_mut_slice(), policy.strict_headers);
                if scrubbed > 0 {
                    // Expected from agents older than strict mode and for
                    // captures sent before the decision reached the device.
                    debug!(device = %session.identity(), seq, scrubbed, "capture headers scrubbed strictly on arrival");
                    context.metrics.strict_scrubbed(&org, scrubbed);
                }
                // Strict scrubbing zeroes bytes in place; cutting shortens.
                as_counted &= cut_bytes == 0;
                if cut_bytes > 0 {
                    warn!(
                        device = %session.identity(),
                        seq,
                        cut_bytes,
                        cut_records,
                        "capture records carried bytes past their headers; cut before storage"
                    );
                    context.metrics.payload_cut(&org, cut_bytes);
                }
                // A reload may have withdrawn the credential while the batch
                // was being read and checked: this one is not stored, those
                // read before it are finished and acknowledged.
                let withdrawn = *ended.borrow();
                if let Some(reason) = withdrawn {
                    settle_all(stream, session, context, &mut pipeline, &mut failures).await?;
                    return Err(withdrawn_refusal(context, session.identity(), reason));
                }
                // A batch being stored when SIGTERM arrives is finished and
                // acknowledged: select! above only interrupts reads.
                let counted = as_counted.then_some(counted);
                pipeline.start(session.identity().clone(), session.stream_id(), batch, counted, read_at);
            }
            SessionAction::AckDuplicate(seq) => {
                // After the batches before it, which are acknowledged first.
                if !settle_all(stream, session, context, &mut pipeline, &mut failures).await? {
                    continue;
                }
                debug!(device = %session.identity(), seq, "duplicate batch acknowledged without storing");
                send(stream, &CollectorMessage::Ack { stream_seq: seq }, context.max_frame).await?;
            }
            SessionAction::CaptureStatus(status) => {
                let id = status.id;
                match context.directory.capture_reported(session.identity(), id, status.outcome.clone()) {
                    StatusTaken::Recorded => {
                        info!(device = %session.identity(), id, outcome = ?status.outcome, "capture status");
                    }
                    StatusTaken::Unsolicited => {
                        unsolicited += 1;
                        context.metrics.unsolicited_capture_status();
                        // One line for the first, then one per thousand: the
                        // frames cost nothing else, and the log stays readable.
                        if unsolicited == 1 || unsolicited.is_multiple_of(1000) {
                            warn!(device = %session.identity(), id, unsolicited, "capture status for a capture never requested from this device; ignored");
                        }
                    }
                }
            }
            SessionAction::Close => {
                // A goodbye after batches still being stored: they are
                // acknowledged first, as when they were stored one by one
                // (an agent gone already just misses the acknowledgements
                // and is told again when it reconnects).
                let _ = settle_all(stream, session, context, &mut pipeline, &mut failures).await;
                return Ok(());
            }
            SessionAction::Continue | SessionAction::VerifyProof(_) => {}
            _ => {}
        }
    }
}

/// Acknowledges the oldest batch being stored if it was stored; if not,
/// tells the agent to send it again and waits out the batches handed after
/// it (none of which is stored: see [`crate::ingest::pipeline`]).
async fn settle<S: AgentStream>(
    stream: &mut S,
    session: &mut CollectorSession,
    context: &ConnectionContext,
    pipeline: &mut Pipeline,
    failures: &mut u32,
    done: InFlight,
    outcome: Stored,
) -> Result<bool, Refusal> {
    match outcome {
        Ok((receipt, batch)) => {
            *failures = 0;
            session.batch_stored(done.seq);
            context.metrics.stored_counted(session.identity(), &batch.records, done.counted, receipt.sync_time);
            context.directory.records_stored(
                session.identity(),
                done.count,
                done.health,
                context.store.clock().now_millis(),
            );
            send(stream, &CollectorMessage::Ack { stream_seq: done.seq }, context.max_frame).await?;
            context.metrics.acknowledged(done.read_at.elapsed());
            Ok(true)
        }
        Err(e) => {
            pipeline.abandon().await;
            *failures = failures.saturating_add(1);
            retry_later(stream, session, context, done.seq, *failures, &format!("storage failed: {e}")).await?;
            Ok(false)
        }
    }
}

/// Settles every batch being stored, in order; `false` if one was not
/// stored (the agent was told to send it again).
async fn settle_all<S: AgentStream>(
    stream: &mut S,
    session: &mut CollectorSession,
    context: &ConnectionContext,
    pipeline: &mut Pipeline,
    failures: &mut u32,
) -> Result<bool, Refusal> {
    while !pipeline.is_empty() {
        let (done, outcome) = pipeline.next_outcome().await;
        if !settle(stream, session, context, pipeline, failures, done, outcome).await? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// A batch could not be stored: the connection stays open and the agent is
/// told to send it (and what followed it) again after a delay, so that an
/// outage of the disk costs no handshakes.
async fn retry_later<S: AgentStream>(
    stream: &mut S,
    session: &mut CollectorSession,
    context: &ConnectionContext,
    seq: u64,
    failures: u32,
    detail: &str,
) -> Result<(), Refusal> {
    let delay = context.retry_delay(failures);
    warn!(device = %session.identity(), seq, retry_in = ?delay, "batch not stored; the agent will send it again: {detail}");
    context.metrics.reject(RejectReason::StorageUnavailable);
    session.batch_deferred();
    let retry = RetryLater {
        stream_seq: seq,
        retry_after_ms: u32::try_from(delay.as_millis()).unwrap_or(u32::MAX),
        code: ErrorCode::StorageUnavailable,
        message: BoundedString::truncating("storage unavailable; retry later"),
    };
    send(stream, &CollectorMessage::RetryLater(retry), context.max_frame).await
}

/// The refusal that ends a live session whose credential a reload withdrew;
/// counted as it is made.
fn withdrawn_refusal(context: &ConnectionContext, identity: &DeviceIdentity, reason: Withdrawn) -> Refusal {
    context.metrics.session_withdrawn();
    let reject = match reason {
        Withdrawn::Revoked => RejectReason::Revoked,
        Withdrawn::Unregistered => RejectReason::UnknownDevice,
        Withdrawn::Rekeyed => RejectReason::RegistrationMismatch,
    };
    // The device authenticated earlier, so naming the reason tells a
    // prober nothing; it tells the device's operator what happened.
    Refusal {
        reason: reject,
        code: ErrorCode::AuthenticationFailed,
        detail: format!("credentials withdrawn on reload: {identity}: {}", reason.as_str()),
        public: format!("{}; connection closed", reason.as_str()),
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

async fn send<S: AgentStream>(stream: &mut S, msg: &CollectorMessage, max: usize) -> Result<(), Refusal> {
    write_message(stream, msg, max).await.map_err(|e| Refusal {
        reason: RejectReason::Protocol,
        code: ErrorCode::Malformed,
        detail: format!("write failed: {e}"),
        public: String::new(),
    })
}

async fn send_error<S: AgentStream>(
    stream: &mut S,
    code: ErrorCode,
    message: &str,
    max: usize,
) -> Result<(), FrameIoError> {
    write_message(stream, &CollectorMessage::Error(ProtocolError::new(code, message)), max).await
}

fn frame_refusal(e: FrameIoError) -> Refusal {
    let code = match &e {
        FrameIoError::Wire(WireError::UnsupportedVersion { .. }) => ErrorCode::UnsupportedVersion,
        _ => ErrorCode::Malformed,
    };
    Refusal::protocol(code, e.to_string())
}

/// Re-parses every capture record and cuts what lies past its header
/// boundary; in strict mode then scrubs what is left, whatever the agent
/// did (an agent that missed or ignored the decision cannot bypass it).
/// Returns (bytes cut, records affected, bytes zeroed by strict scrubbing).
pub(crate) fn enforce_headers_only(
    records: &mut [glimpse_common::record::Record],
    strict: bool,
) -> (usize, usize, usize) {
    let mut cut = (0, 0);
    let mut scrubbed = 0;
    for record in records {
        if let glimpse_common::record::RecordBody::Capture(packet) = &mut record.body {
            let bytes = packet.enforce();
            if bytes > 0 {
                cut.0 += bytes;
                cut.1 += 1;
            }
            if strict {
                scrubbed += packet.scrub_strict();
            }
        }
    }
    (cut.0, cut.1, scrubbed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use glimpse_common::minimise::MetadataField;

    fn directives(pseudonymise_macs: bool) -> OrgDirectives {
        OrgDirectives {
            capture_consent: false,
            omit: vec![MetadataField::Usernames],
            pseudonymise_macs,
            strict_headers: false,
            blocked: Default::default(),
            wan_destinations: false,
        }
    }

    /// An agent from before strict header scrubbing.
    const OLD: &str = "0.1.0+abc123";

    #[test]
    fn strict_headers_are_told_only_to_agents_that_decode_them() {
        let strict = OrgDirectives { strict_headers: true, ..directives(false) };
        let relaxed = directives(false);
        let new = "0.2.0+abc123";
        let told = directive_messages(None, &strict, new, || panic!("no key needed"));
        assert_eq!(told.first(), Some(&ControlMessage::StrictHeaders { on: true }), "before consent");
        let told = directive_messages(None, &relaxed, new, || panic!("no key needed"));
        assert_eq!(told.first(), Some(&ControlMessage::StrictHeaders { on: false }), "said on every connection");
        assert_eq!(
            directive_messages(Some(&relaxed), &strict, new, || panic!("no key needed")),
            vec![ControlMessage::StrictHeaders { on: true }]
        );
        assert_eq!(directive_messages(Some(&strict), &strict, new, || panic!("no key needed")), vec![]);
        // An older agent could not decode it and would drop the connection.
        for before in [None, Some(&relaxed)] {
            let told = directive_messages(before, &strict, OLD, || panic!("no key needed"));
            assert!(!told.iter().any(|m| matches!(m, ControlMessage::StrictHeaders { .. })), "{told:?}");
        }
    }

    #[test]
    fn blocked_subjects_are_told_on_every_connection_and_change_to_agents_that_decode_them() {
        use glimpse_common::wire::admin::Subject;
        let none = directives(false);
        let mut bob = directives(false);
        bob.blocked.insert(Subject::Username(BoundedString::truncating("bob"))).unwrap();
        let new = "0.3.0+abc123";
        let list = |d: &OrgDirectives| ControlMessage::BlockedSubjects { subjects: d.blocked.clone() };
        for now in [&none, &bob] {
            let told = directive_messages(None, now, new, || panic!("no key needed"));
            assert!(told.contains(&list(now)), "a reconnecting agent may hold an old list: {told:?}");
        }
        assert_eq!(directive_messages(Some(&none), &bob, new, || panic!("no key needed")), vec![list(&bob)]);
        assert_eq!(directive_messages(Some(&bob), &none, new, || panic!("no key needed")), vec![list(&none)]);
        assert_eq!(directive_messages(Some(&bob), &bob, new, || panic!("no key needed")), vec![]);
        for agent in ["0.2.0", OLD] {
            for before in [None, Some(&none)] {
                let told = directive_messages(before, &bob, agent, || panic!("no key needed"));
                assert!(!told.iter().any(|m| matches!(m, ControlMessage::BlockedSubjects { .. })), "{told:?}");
            }
        }
    }

    #[test]
    fn wan_destinations_are_told_when_on_and_on_every_change_to_agents_that_decode_them() {
        let on = OrgDirectives { wan_destinations: true, ..directives(false) };
        let off = directives(false);
        let new = "0.3.0";
        let is_wan = |m: &&ControlMessage| matches!(m, ControlMessage::WanDestinations { .. });
        let told = directive_messages(None, &on, new, || panic!("no key needed"));
        assert_eq!(told.iter().filter(is_wan).collect::<Vec<_>>(), [&ControlMessage::WanDestinations { on: true }]);
        let told = directive_messages(None, &off, new, || panic!("no key needed"));
        assert!(!told.iter().any(|m| is_wan(&m)), "agents start with them off: {told:?}");
        assert_eq!(
            directive_messages(Some(&on), &off, new, || panic!("no key needed")),
            vec![ControlMessage::WanDestinations { on: false }]
        );
        assert_eq!(directive_messages(Some(&on), &on, new, || panic!("no key needed")), vec![]);
        for (before, agent) in [(None, OLD), (Some(&off), OLD), (None, "0.2.0"), (Some(&off), "0.2.0")] {
            let told = directive_messages(before, &on, agent, || panic!("no key needed"));
            assert!(!told.iter().any(|m| is_wan(&m)), "an older agent cannot decode it: {told:?}");
        }
    }

    #[test]
    fn blocked_subjects_are_cut_out_of_a_batch_and_everyone_else_stays() {
        use glimpse_common::record::{MacAddr, Record, RecordBody, Station, WirelessReport};
        use glimpse_common::wire::admin::Subject;
        let station = |mac: u8, name: &str| Station {
            mac: MacAddr([2, 0, 0, 0, 0, mac]),
            username: BoundedString::truncating(name),
            ..Default::default()
        };
        let report = Record {
            observed_at_ms: 1,
            body: RecordBody::Wireless(Box::new(WirelessReport {
                stations: BoundedVec::truncating(vec![station(1, "alice"), station(2, "bob")]),
                ..Default::default()
            })),
        };
        let mut records: BoundedVec<Record, 8> = BoundedVec::truncating(vec![report.clone(), report]);
        let (removed, cut) = drop_blocked(&mut records, &[Subject::Username(BoundedString::truncating("bob"))]);
        assert_eq!((removed.len(), cut, records.len()), (0, 2, 2));
        let (removed, _) = drop_blocked(&mut records, &[Subject::Mac(MacAddr([2, 0, 0, 0, 0, 1]))]);
        assert_eq!((removed.len(), records.len()), (0, 2), "a report keeps its device even without stations");
    }

    #[test]
    fn the_collector_scrubs_captures_in_strict_mode_whatever_the_agent_did() {
        use glimpse_common::bounded::BoundedString;
        use glimpse_common::capture::{CapturedPacket, LinkType};
        use glimpse_common::record::{Record, RecordBody};
        let mut packet = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00];
        packet.extend([0x45, 0, 0, 48, 0, 0, 0x40, 0, 64, 6, 0, 0, 192, 0, 2, 1, 192, 0, 2, 2]);
        packet.extend([0x30, 0x39, 0x01, 0xbb, 0, 0, 0, 1, 0, 0, 0, 1, 0x70, 0x10, 0xff, 0xff, 0, 0, 0, 0]);
        packet.extend([253, 8, b'S', b'E', b'C', b'R', b'E', b'T']);
        let record = |bytes: &[u8]| Record {
            observed_at_ms: 1,
            body: RecordBody::Capture(CapturedPacket::from_packet(
                LinkType::Ethernet,
                0,
                BoundedString::truncating("eth0"),
                bytes,
                bytes.len() as u32,
            )),
        };
        let headers = |records: &[Record]| match &records[0].body {
            RecordBody::Capture(p) => p.headers.to_vec(),
            _ => unreachable!(),
        };
        let mut relaxed = vec![record(&packet)];
        assert_eq!(enforce_headers_only(&mut relaxed, false), (0, 0, 0));
        assert_eq!(headers(&relaxed), packet, "without strict mode the options are kept whole");
        let mut strict = vec![record(&packet)];
        let (cut, _, scrubbed) = enforce_headers_only(&mut strict, true);
        assert_eq!(cut, 0, "nothing cut, only zeroed");
        assert!(scrubbed >= 6, "SECRET and the checksums: {scrubbed}");
        assert_eq!(enforce_headers_only(&mut strict, true), (0, 0, 0), "scrubbed once is scrubbed");
        let kept = headers(&strict);
        assert_eq!(kept.len(), packet.len());
        assert_eq!(&kept[54..], &[253, 8, 0, 0, 0, 0, 0, 0]);
    }

    fn key() -> Option<DevicePseudonymKey> {
        Some(DevicePseudonymKey::derive(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &[1; 32])))
    }

    #[test]
    fn a_new_connection_hears_everything_in_force() {
        let quiet = directive_messages(None, &directives(false), OLD, || panic!("no key needed"));
        assert_eq!(
            quiet,
            vec![
                ControlMessage::Consent { capture: false },
                ControlMessage::DataPolicy { omit: BoundedVec::truncating(vec![MetadataField::Usernames]) },
            ],
            "real MACs are what a device sends anyway"
        );
        let pseudonymising = directive_messages(None, &directives(true), OLD, key);
        assert_eq!(pseudonymising.last(), Some(&ControlMessage::MacPseudonyms { key: key() }));
    }

    #[test]
    fn an_older_agent_hears_only_the_policy_fields_it_can_decode() {
        let mut now = directives(false);
        now.omit = vec![MetadataField::Usernames, MetadataField::ClientDevices];
        let policy = |version| {
            directive_messages(None, &now, version, || panic!("no key needed"))
                .into_iter()
                .find_map(|m| match m {
                    ControlMessage::DataPolicy { omit } => Some(omit.to_vec()),
                    _ => None,
                })
                .expect("a data policy")
        };
        assert_eq!(policy(OLD), vec![MetadataField::Usernames], "0.1 cannot decode client-devices");
        assert_eq!(policy("0.2.0"), vec![MetadataField::Usernames], "released before client-devices");
        assert_eq!(policy(env!("CARGO_PKG_VERSION")), now.omit);
    }

    #[test]
    fn changes_are_told_and_nothing_else() {
        let (off, on) = (directives(false), directives(true));
        assert_eq!(directive_messages(Some(&on), &on, OLD, || panic!("no key needed")), vec![]);
        assert_eq!(directive_messages(Some(&off), &on, OLD, key), vec![ControlMessage::MacPseudonyms { key: key() }]);
        assert_eq!(
            directive_messages(Some(&on), &off, OLD, || panic!("no key needed")),
            vec![ControlMessage::MacPseudonyms { key: None }]
        );
        // Without a key the device keeps sending real MACs, which are then
        // pseudonymised on arrival; telling it "pseudonymise" without one
        // would mean nothing.
        assert_eq!(directive_messages(Some(&off), &on, OLD, || None), vec![]);
    }
}
