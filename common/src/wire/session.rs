//! The collector's view of one agent connection, as a state machine.
//!
//! The edge decodes a message, hands it to [`CollectorSession::handle`], and
//! does what the returned [`SessionAction`] says: check a proof against the
//! registry, store a batch, close. The order rules live here, once, for
//! every transport.
//!
//! The two transports differ in one step only. Over TLS the certificate
//! names the device and the agent then proves its shared key
//! (`Hello`, `AuthProof`). Over SSH the transport has already checked the
//! device's registered public key, whose signature covers the SSH session,
//! so the agent sends `Hello` alone and the edge admits it after a
//! registry check ([`SessionAction::Admit`]).
//!
//! The session also owns the connection's clock rules: how long the agent
//! may take to authenticate, and how long it may stay silent once
//! streaming ([`SessionTimeouts`]). The edge sleeps until
//! [`CollectorSession::poll_timeout`] and calls
//! [`CollectorSession::handle_timeout`]; it decides nothing itself.

use std::time::{Duration, Instant};

use crate::identity::DeviceIdentity;
use crate::minimise::MacForm;
use crate::wire::message::{AgentMessage, AuthProof, Batch, ErrorCode, Hello, PROTOCOL_VERSION};

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    AwaitingHello,
    AwaitingProof,
    AwaitingVerification,
    Streaming,
    Closed,
}

impl State {
    fn expecting(self) -> &'static str {
        match self {
            State::AwaitingHello => "Hello",
            State::AwaitingProof => "AuthProof",
            State::AwaitingVerification => "nothing until the proof is checked",
            State::Streaming => "Batch, PseudonymisedBatch, CaptureStatus or Goodbye",
            State::Closed => "nothing (closed)",
        }
    }
}

/// What the edge must do next.
#[derive(Debug, PartialEq)]
#[non_exhaustive]
pub enum SessionAction {
    /// Nothing; read the next message.
    Continue,
    /// Check this proof against the device's registered shared key, then call
    /// [`CollectorSession::proof_accepted`] (or close on failure).
    VerifyProof(AuthProof),
    /// The transport authenticated the device (SSH public key): check that
    /// it is still registered and not revoked, then call
    /// [`CollectorSession::proof_accepted`] (or close on failure).
    Admit,
    /// Store this batch durably, then acknowledge it. Its MAC addresses are
    /// in the given form (see [`crate::minimise`]).
    Store(Batch, crate::minimise::MacForm),
    /// This batch was already stored (a replay after reconnect): acknowledge
    /// it again without storing.
    AckDuplicate(u64),
    /// The agent said goodbye; close cleanly.
    Close,
    /// The agent reports on a capture the collector requested.
    CaptureStatus(crate::wire::message::CaptureStatus),
}

/// The agent broke the protocol; the edge sends the code and message, then closes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// Wrong protocol version in Hello.
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u16),
    /// Hello named a different identity than the certificate.
    #[error("hello names {claimed} but the certificate names {certified}")]
    IdentityMismatch {
        /// What the Hello said.
        claimed: String,
        /// What the certificate said.
        certified: String,
    },
    /// A message arrived in the wrong state.
    #[error("unexpected {got}, expected {expected}")]
    Unexpected {
        /// The message that arrived.
        got: &'static str,
        /// What the state allowed.
        expected: &'static str,
    },
    /// A batch for another organisation.
    #[error("batch for organisation {got} on a connection authenticated for {certified}")]
    WrongOrganisation {
        /// The batch's organisation.
        got: String,
        /// The certificate's.
        certified: String,
    },
    /// A sequence number that skipped ahead.
    #[error("batch sequence {got} skips ahead of the expected {expected}")]
    SequenceGap {
        /// The batch's sequence number.
        got: u64,
        /// The next one expected.
        expected: u64,
    },
    /// A batch sent again while the collector is still storing it (an
    /// agent resends only after a `RetryLater` or on a new connection).
    #[error("batch sequence {got} sent again while it is still being stored")]
    Resent {
        /// The batch's sequence number.
        got: u64,
    },
    /// The agent did not authenticate in time.
    #[error("handshake not completed in {0:?}")]
    HandshakeTimeout(Duration),
    /// The authenticated agent sent nothing for too long.
    #[error("idle timeout")]
    IdleTimeout(Duration),
}

impl SessionError {
    /// The protocol error code to send for this failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            SessionError::UnsupportedVersion(_) => ErrorCode::UnsupportedVersion,
            SessionError::IdentityMismatch { .. } => ErrorCode::AuthenticationFailed,
            SessionError::Unexpected { .. } => ErrorCode::UnexpectedMessage,
            SessionError::WrongOrganisation { .. } => ErrorCode::WrongOrganisation,
            SessionError::SequenceGap { .. } | SessionError::Resent { .. } => ErrorCode::BadSequence,
            // Only the idle timeout is told to the agent; a handshake that
            // timed out is closed without a word.
            SessionError::HandshakeTimeout(_) | SessionError::IdleTimeout(_) => ErrorCode::UnexpectedMessage,
        }
    }
}

/// How the device proves who it is once its `Hello` has arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Authentication {
    /// TLS: the agent sends an [`AuthProof`] of its shared key, bound to the
    /// TLS session.
    SharedKeyProof,
    /// SSH: the transport verified the device's registered public key; no
    /// proof message follows `Hello`.
    Transport,
}

/// How long a connection may take, from accept to `Welcome`, and how long
/// an authenticated agent may go without sending anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionTimeouts {
    /// From accept to the agent's authentication being checked.
    pub handshake: Duration,
    /// Between two messages from an authenticated agent.
    pub idle: Duration,
}

impl SessionTimeouts {
    /// When a connection accepted at `accepted_at` must have authenticated:
    /// the edge needs it before a session exists (during the TLS handshake,
    /// which tells it whom the session is for).
    pub fn handshake_deadline(&self, accepted_at: Instant) -> Instant {
        accepted_at + self.handshake
    }
}

/// The collector side of one agent connection.
#[derive(Debug)]
pub struct CollectorSession {
    certified: DeviceIdentity,
    authentication: Authentication,
    state: State,
    stream_id: u64,
    /// The agent's `version+build` string from its Hello (empty before it).
    agent_version: String,
    stored_seq: u64,
    /// The highest sequence handed to the edge to store ([`SessionAction::Store`]),
    /// stored yet or not: the edge stores several batches at once, so the
    /// next one follows this, not [`Self::stored_seq`].
    handed_seq: u64,
    timeouts: Option<SessionTimeouts>,
    /// When the session gives up unless something happens first.
    deadline: Option<Instant>,
    /// A batch could not be stored and the agent was told to send it again:
    /// batches after it that were already on their way are dropped until it
    /// comes back.
    deferred: bool,
}

impl CollectorSession {
    /// A session for a TLS peer whose certificate names `certified`.
    pub fn new(certified: DeviceIdentity) -> Self {
        Self::with_authentication(certified, Authentication::SharedKeyProof)
    }

    /// A session for a peer the transport identified as `certified`
    /// (a certificate for TLS, a registered public key for SSH).
    pub fn with_authentication(certified: DeviceIdentity, authentication: Authentication) -> Self {
        Self {
            certified,
            authentication,
            state: State::AwaitingHello,
            stream_id: 0,
            agent_version: String::new(),
            stored_seq: 0,
            handed_seq: 0,
            timeouts: None,
            deadline: None,
            deferred: false,
        }
    }

    /// Applies `timeouts` to a connection accepted at `accepted_at`.
    /// Without this a session never times out.
    pub fn with_timeouts(mut self, timeouts: SessionTimeouts, accepted_at: Instant) -> Self {
        self.timeouts = Some(timeouts);
        self.deadline = Some(timeouts.handshake_deadline(accepted_at));
        self
    }

    /// When the edge must call [`CollectorSession::handle_timeout`] unless a
    /// message arrives first.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Closed => None,
            _ => self.deadline,
        }
    }

    /// The time is `now`: past the deadline the session closes and says
    /// why (the handshake took too long, or the agent went quiet).
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), SessionError> {
        let (Some(deadline), Some(timeouts)) = (self.poll_timeout(), self.timeouts) else { return Ok(()) };
        if now < deadline {
            return Ok(());
        }
        let error = match self.state {
            State::Streaming => SessionError::IdleTimeout(timeouts.idle),
            _ => SessionError::HandshakeTimeout(timeouts.handshake),
        };
        self.state = State::Closed;
        Err(error)
    }

    fn heard_at(&mut self, now: Instant) {
        if let (State::Streaming, Some(timeouts)) = (self.state, self.timeouts) {
            self.deadline = Some(now + timeouts.idle);
        }
    }

    /// The identity the transport vouches for.
    pub fn identity(&self) -> &DeviceIdentity {
        &self.certified
    }

    /// The stream id from the agent's Hello (0 before it).
    pub fn stream_id(&self) -> u64 {
        self.stream_id
    }

    /// The software version the agent's Hello named (empty before it), as
    /// sent: `version` or `version+build`, at most 32 bytes.
    pub fn agent_version(&self) -> &str {
        &self.agent_version
    }

    /// Whether the agent has proven its shared key.
    pub fn is_authenticated(&self) -> bool {
        self.state == State::Streaming
    }

    /// Feeds one decoded message, read at `now`.
    pub fn handle(&mut self, now: Instant, msg: AgentMessage) -> Result<SessionAction, SessionError> {
        let result = self.step(msg);
        if result.is_err() {
            self.state = State::Closed;
        }
        self.heard_at(now);
        result
    }

    fn step(&mut self, msg: AgentMessage) -> Result<SessionAction, SessionError> {
        match (self.state, msg) {
            (State::AwaitingHello, AgentMessage::Hello(hello)) => self.on_hello(hello),
            (State::AwaitingProof, AgentMessage::AuthProof(proof)) => {
                self.state = State::AwaitingVerification;
                Ok(SessionAction::VerifyProof(proof))
            }
            (State::Streaming, AgentMessage::Batch(batch)) => self.on_batch(batch, MacForm::Real),
            (State::Streaming, AgentMessage::PseudonymisedBatch(batch)) => {
                self.on_batch(batch, MacForm::DevicePseudonyms)
            }
            (State::Streaming, AgentMessage::CaptureStatus(status)) => Ok(SessionAction::CaptureStatus(status)),
            (State::Streaming, AgentMessage::Goodbye) => {
                self.state = State::Closed;
                Ok(SessionAction::Close)
            }
            (state, msg) => Err(SessionError::Unexpected { got: message_name(&msg), expected: state.expecting() }),
        }
    }

    fn on_hello(&mut self, hello: Hello) -> Result<SessionAction, SessionError> {
        if hello.version != PROTOCOL_VERSION {
            return Err(SessionError::UnsupportedVersion(hello.version));
        }
        if hello.identity != self.certified {
            return Err(SessionError::IdentityMismatch {
                claimed: hello.identity.to_string(),
                certified: self.certified.to_string(),
            });
        }
        self.stream_id = hello.stream_id;
        self.agent_version = hello.agent_version.to_string();
        match self.authentication {
            Authentication::SharedKeyProof => {
                self.state = State::AwaitingProof;
                Ok(SessionAction::Continue)
            }
            Authentication::Transport => {
                self.state = State::AwaitingVerification;
                Ok(SessionAction::Admit)
            }
        }
    }

    /// The edge checked the proof (or, for [`Authentication::Transport`],
    /// the registration); `stored_seq` is the highest sequence of this
    /// stream already in the store (0 for none). Returns it for the Welcome
    /// message. From `now` the agent may stay silent for the idle timeout.
    pub fn proof_accepted(&mut self, now: Instant, stored_seq: u64) -> u64 {
        debug_assert_eq!(self.state, State::AwaitingVerification);
        self.stored_seq = stored_seq;
        self.handed_seq = stored_seq;
        self.state = State::Streaming;
        self.heard_at(now);
        stored_seq
    }

    /// The edge stored the batch with this sequence number.
    pub fn batch_stored(&mut self, stream_seq: u64) {
        self.stored_seq = self.stored_seq.max(stream_seq);
        self.handed_seq = self.handed_seq.max(stream_seq);
    }

    /// The edge could not store the batch it was handed and told the agent
    /// to send it again later (a `RetryLater`). Until that batch arrives
    /// again, later batches the agent had already sent are dropped
    /// ([`SessionAction::Continue`]) rather than taken as a sequence gap:
    /// the agent sends them again after it.
    ///
    /// Batches handed after it are not stored either (the edge commits a
    /// connection's batches in order and stops at the first that fails),
    /// so the deferred batch is the next one expected.
    pub fn batch_deferred(&mut self) {
        self.deferred = true;
        self.handed_seq = self.stored_seq;
    }

    fn on_batch(&mut self, batch: Batch, macs: MacForm) -> Result<SessionAction, SessionError> {
        if batch.org != self.certified.org {
            return Err(SessionError::WrongOrganisation {
                got: batch.org.to_string(),
                certified: self.certified.org.to_string(),
            });
        }
        // Acknowledged again only once stored: a batch still being stored
        // is acknowledged when it is.
        if batch.stream_seq <= self.stored_seq {
            return Ok(SessionAction::AckDuplicate(batch.stream_seq));
        }
        if batch.stream_seq <= self.handed_seq {
            return Err(SessionError::Resent { got: batch.stream_seq });
        }
        let expected = self.handed_seq.saturating_add(1);
        if batch.stream_seq > expected {
            if self.deferred {
                return Ok(SessionAction::Continue);
            }
            return Err(SessionError::SequenceGap { got: batch.stream_seq, expected });
        }
        self.deferred = false;
        self.handed_seq = batch.stream_seq;
        Ok(SessionAction::Store(batch, macs))
    }
}

fn message_name(msg: &AgentMessage) -> &'static str {
    match msg {
        AgentMessage::Hello(_) => "Hello",
        AgentMessage::AuthProof(_) => "AuthProof",
        AgentMessage::Batch(_) => "Batch",
        AgentMessage::Goodbye => "Goodbye",
        AgentMessage::CaptureStatus(_) => "CaptureStatus",
        AgentMessage::PseudonymisedBatch(_) => "PseudonymisedBatch",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bounded::{BoundedString, BoundedVec};
    use crate::identity::{DeviceId, DeviceKind, OrgId};

    fn now() -> Instant {
        Instant::now()
    }

    fn id(org: &str) -> DeviceIdentity {
        DeviceIdentity { org: OrgId::new(org).unwrap(), device: DeviceId::new("ap-1").unwrap(), kind: DeviceKind::Ap }
    }

    fn hello(identity: DeviceIdentity) -> AgentMessage {
        AgentMessage::Hello(Hello {
            version: PROTOCOL_VERSION,
            identity,
            agent_version: BoundedString::truncating("t"),
            stream_id: 5,
        })
    }

    fn batch(org: &str, seq: u64) -> AgentMessage {
        AgentMessage::Batch(Batch { org: OrgId::new(org).unwrap(), stream_seq: seq, records: BoundedVec::new() })
    }

    fn authenticated(stored: u64) -> CollectorSession {
        let mut s = CollectorSession::new(id("acme"));
        assert_eq!(s.handle(now(), hello(id("acme"))), Ok(SessionAction::Continue));
        assert!(matches!(
            s.handle(now(), AgentMessage::AuthProof(AuthProof { proof: [0; 32] })),
            Ok(SessionAction::VerifyProof(_))
        ));
        s.proof_accepted(now(), stored);
        s
    }

    #[test]
    fn happy_path_and_replay() {
        let mut s = authenticated(3);
        assert!(s.is_authenticated());
        assert_eq!(s.agent_version(), "t", "the Hello's version is kept for operators");
        assert_eq!(s.handle(now(), batch("acme", 2)), Ok(SessionAction::AckDuplicate(2)));
        assert!(matches!(s.handle(now(), batch("acme", 4)), Ok(SessionAction::Store(..))));
        s.batch_stored(4);
        assert!(matches!(s.handle(now(), batch("acme", 5)), Ok(SessionAction::Store(_, MacForm::Real))));
        s.batch_stored(5);
        // A batch pseudonymised on the device follows the same sequence
        // rules and is passed on with its form.
        let Some((pseudonymised, _)) = batch("acme", 6).into_batch() else { unreachable!() };
        let replay = AgentMessage::PseudonymisedBatch(pseudonymised.clone());
        assert!(matches!(s.handle(now(), replay), Ok(SessionAction::Store(_, MacForm::DevicePseudonyms))));
        s.batch_stored(6);
        assert_eq!(
            s.handle(now(), AgentMessage::PseudonymisedBatch(pseudonymised)),
            Ok(SessionAction::AckDuplicate(6))
        );
        assert_eq!(s.handle(now(), AgentMessage::Goodbye), Ok(SessionAction::Close));
    }

    /// The edge stores several batches at once: each next batch follows
    /// the last handed over, a batch is acknowledged again only once
    /// stored, and a failure brings the sequence back to the stored one.
    #[test]
    fn batches_are_handed_on_before_the_earlier_ones_are_stored() {
        let mut s = authenticated(0);
        assert!(matches!(s.handle(now(), batch("acme", 1)), Ok(SessionAction::Store(..))));
        assert!(matches!(s.handle(now(), batch("acme", 2)), Ok(SessionAction::Store(..))));
        assert!(matches!(s.handle(now(), batch("acme", 3)), Ok(SessionAction::Store(..))));
        assert_eq!(s.handle(now(), batch("acme", 5)).unwrap_err().code(), ErrorCode::BadSequence);

        let mut s = authenticated(0);
        assert!(matches!(s.handle(now(), batch("acme", 1)), Ok(SessionAction::Store(..))));
        assert!(matches!(s.handle(now(), batch("acme", 2)), Ok(SessionAction::Store(..))));
        s.batch_stored(1);
        assert_eq!(s.handle(now(), batch("acme", 1)), Ok(SessionAction::AckDuplicate(1)));
        // Not stored yet: never acknowledged as a duplicate.
        assert_eq!(s.handle(now(), batch("acme", 2)).unwrap_err().code(), ErrorCode::BadSequence);

        let mut s = authenticated(0);
        for seq in 1..=4 {
            assert!(matches!(s.handle(now(), batch("acme", seq)), Ok(SessionAction::Store(..))));
        }
        s.batch_stored(1);
        // 2 failed, so 3 and 4 were not stored either; 5 was on the wire.
        s.batch_deferred();
        assert_eq!(s.handle(now(), batch("acme", 5)), Ok(SessionAction::Continue));
        assert!(matches!(s.handle(now(), batch("acme", 2)), Ok(SessionAction::Store(..))));
        assert!(matches!(s.handle(now(), batch("acme", 3)), Ok(SessionAction::Store(..))));
    }

    #[test]
    fn order_identity_org_and_gaps_are_enforced() {
        let mut s = CollectorSession::new(id("acme"));
        assert_eq!(s.handle(now(), batch("acme", 1)).unwrap_err().code(), ErrorCode::UnexpectedMessage);

        let mut s = CollectorSession::new(id("acme"));
        assert_eq!(s.handle(now(), hello(id("other"))).unwrap_err().code(), ErrorCode::AuthenticationFailed);

        let mut s = CollectorSession::new(id("acme"));
        s.handle(now(), hello(id("acme"))).unwrap();
        assert_eq!(s.handle(now(), batch("acme", 1)).unwrap_err().code(), ErrorCode::UnexpectedMessage);

        let mut s = authenticated(0);
        assert_eq!(s.handle(now(), batch("other", 1)).unwrap_err().code(), ErrorCode::WrongOrganisation);
        // A failed session stays closed.
        assert!(s.handle(now(), batch("acme", 1)).is_err());

        let mut s = authenticated(0);
        assert_eq!(s.handle(now(), batch("acme", 3)).unwrap_err().code(), ErrorCode::BadSequence);
    }

    #[test]
    fn after_a_deferral_later_batches_are_dropped_until_the_deferred_one_returns() {
        let mut s = authenticated(4);
        assert!(matches!(s.handle(now(), batch("acme", 5)), Ok(SessionAction::Store(..))));
        s.batch_deferred();
        // 6 and 7 were already on the wire: dropped, not a gap.
        assert_eq!(s.handle(now(), batch("acme", 6)), Ok(SessionAction::Continue));
        assert_eq!(s.handle(now(), batch("acme", 7)), Ok(SessionAction::Continue));
        assert!(matches!(s.handle(now(), batch("acme", 5)), Ok(SessionAction::Store(..))));
        s.batch_stored(5);
        assert!(matches!(s.handle(now(), batch("acme", 6)), Ok(SessionAction::Store(..))));
        s.batch_stored(6);
        // Once the deferred batch is back, a gap is a gap again.
        assert_eq!(s.handle(now(), batch("acme", 9)).unwrap_err().code(), ErrorCode::BadSequence);
    }

    #[test]
    fn transport_authenticated_sessions_are_admitted_after_hello_and_refuse_proofs() {
        let mut s = CollectorSession::with_authentication(id("acme"), Authentication::Transport);
        assert_eq!(s.handle(now(), hello(id("acme"))), Ok(SessionAction::Admit));
        // Nothing is streamed before the edge has checked the registration.
        assert_eq!(s.handle(now(), batch("acme", 1)).unwrap_err().code(), ErrorCode::UnexpectedMessage);

        let mut s = CollectorSession::with_authentication(id("acme"), Authentication::Transport);
        s.handle(now(), hello(id("acme"))).unwrap();
        s.proof_accepted(now(), 0);
        assert!(s.is_authenticated());
        assert!(matches!(s.handle(now(), batch("acme", 1)), Ok(SessionAction::Store(..))));

        // An SSH peer has no proof to give; sending one is a protocol error.
        let mut s = CollectorSession::with_authentication(id("acme"), Authentication::Transport);
        assert_eq!(s.handle(now(), hello(id("acme"))), Ok(SessionAction::Admit));
        let proof = AgentMessage::AuthProof(AuthProof { proof: [0; 32] });
        assert_eq!(s.handle(now(), proof).unwrap_err().code(), ErrorCode::UnexpectedMessage);

        // The key names the device: a Hello for another is refused as before.
        let mut s = CollectorSession::with_authentication(id("acme"), Authentication::Transport);
        assert_eq!(s.handle(now(), hello(id("other"))).unwrap_err().code(), ErrorCode::AuthenticationFailed);
    }

    fn timeouts() -> SessionTimeouts {
        SessionTimeouts { handshake: Duration::from_secs(10), idle: Duration::from_secs(600) }
    }

    #[test]
    fn a_handshake_not_completed_in_time_closes_the_session() {
        let accepted = Instant::now();
        let mut s = CollectorSession::new(id("acme")).with_timeouts(timeouts(), accepted);
        assert_eq!(s.poll_timeout(), Some(accepted + Duration::from_secs(10)));
        s.handle(accepted + Duration::from_secs(3), hello(id("acme"))).unwrap();
        // A Hello does not extend the handshake's deadline.
        assert_eq!(s.poll_timeout(), Some(accepted + Duration::from_secs(10)));
        assert_eq!(s.handle_timeout(accepted + Duration::from_secs(9)), Ok(()));
        assert_eq!(
            s.handle_timeout(accepted + Duration::from_secs(10)),
            Err(SessionError::HandshakeTimeout(Duration::from_secs(10)))
        );
        assert_eq!(s.poll_timeout(), None);
        assert!(s.handle(accepted, AgentMessage::AuthProof(AuthProof { proof: [0; 32] })).is_err());
    }

    #[test]
    fn an_authenticated_agent_may_stay_silent_for_the_idle_timeout_from_its_last_message() {
        let accepted = Instant::now();
        let welcomed = accepted + Duration::from_secs(2);
        let mut s = CollectorSession::with_authentication(id("acme"), Authentication::Transport)
            .with_timeouts(timeouts(), accepted);
        s.handle(accepted, hello(id("acme"))).unwrap();
        s.proof_accepted(welcomed, 0);
        let idle = Duration::from_secs(600);
        assert_eq!(s.poll_timeout(), Some(welcomed + idle));
        let heard = welcomed + Duration::from_secs(500);
        assert!(matches!(s.handle(heard, batch("acme", 1)), Ok(SessionAction::Store(..))));
        assert_eq!(s.poll_timeout(), Some(heard + idle));
        assert_eq!(s.handle_timeout(welcomed + idle), Ok(()), "the batch reset the clock");
        let err = s.handle_timeout(heard + idle).unwrap_err();
        assert_eq!(err, SessionError::IdleTimeout(idle));
        assert_eq!(err.code(), ErrorCode::UnexpectedMessage);
        assert!(!s.is_authenticated());
    }

    #[test]
    fn without_timeouts_a_session_never_times_out() {
        let mut s = authenticated(0);
        assert_eq!(s.poll_timeout(), None);
        assert_eq!(s.handle_timeout(Instant::now() + Duration::from_secs(1 << 30)), Ok(()));
    }
}
