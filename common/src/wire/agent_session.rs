//! The agent's half of the protocol, as one sans-IO state machine.
//!
//! [`AgentSession`] is to the agent what [`CollectorSession`](super::session::CollectorSession)
//! is to the collector, and is shaped like quinn-proto's `Connection`: the
//! edge feeds it what arrived ([`AgentSession::handle_message`]), the time
//! ([`AgentSession::handle_timeout`]) and what the device wants sent
//! ([`AgentSession::push_batch`], [`AgentSession::queue_capture_status`]);
//! it hands back frames to write ([`AgentSession::poll_transmit`]), events
//! for the device ([`AgentSession::poll_event`]) and when it next needs to
//! be woken ([`AgentSession::poll_timeout`]).
//!
//! It owns, once for every sender (the daemon, `replay`, the load tool):
//! the handshake order (`Hello`, then an `AuthProof` over TLS or nothing
//! over SSH, then the collector's `Welcome`), the stream's sequence
//! numbers, the window of unacknowledged batches, resuming after a
//! reconnect from the sequence the collector says it stored, and draining
//! before a goodbye.
//!
//! A session outlives connections: when one is lost the edge calls
//! [`AgentSession::connection_lost`], opens another and calls
//! [`AgentSession::connect`] again; unacknowledged batches keep their
//! sequence numbers and go out again unless the new `Welcome` says they
//! were stored.
//!
//! The acknowledgement rules:
//!
//! - an `Ack` older than the oldest batch in flight is a duplicate (a
//!   collector acknowledging a resent batch it had already stored): it is
//!   ignored and counted ([`SessionStats::duplicate_acks`]), and never taken
//!   as acknowledging anything newer;
//! - an `Ack` of a sequence number not sent on this connection is a protocol
//!   error: the session returns [`AgentSessionError::AckNeverSent`] and the
//!   edge closes the connection;
//! - an `Ack` of `n` acknowledges every batch in flight up to and including
//!   `n`.
//!
//! When the collector cannot store a batch (its disk is full) it says
//! `RetryLater{seq, delay}` and keeps the connection: the batch `seq` and
//! every later one in flight become unsent again, and no batch is written
//! until the delay has passed ([`AgentSession::poll_timeout`] says when).
//! The connection, and so the handshake, is kept: an outage costs one small
//! frame per delay rather than a reconnect.
//!
//! What it deliberately does not do: sockets, timers, spool files, the
//! record queue, or deciding when to reconnect (backoff is the edge's).
//! Decoding bytes into messages stays in the frame codec and
//! [`crate::wire::io::FrameReader`], which both ends share.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::bounded::{BoundedString, BoundedVec};
use crate::identity::DeviceIdentity;
use crate::minimise::{pseudonymise_at_source, DevicePseudonymKey, MacForm};
use crate::record::{Record, RecordBody};
use crate::wire::message::{
    encode_batch_parts, AgentMessage, AuthProof, CaptureRequest, CaptureStatus, Codec, CollectorMessage,
    ControlMessage, ErrorCode, Hello, RetryLater, WireError, MAX_RECORDS_PER_BATCH, MAX_RETRY_AFTER_MS,
    PROTOCOL_VERSION,
};

/// The records of one batch, shareable so that a sender that sends the
/// same records again and again (the load tool) need not copy them.
pub type BatchRecords = Arc<BoundedVec<Record, MAX_RECORDS_PER_BATCH>>;

/// What a session is set up with.
#[derive(Debug, Clone)]
pub struct AgentSessionConfig {
    /// Who the device is; the `Hello` says so and batches carry its organisation.
    pub identity: DeviceIdentity,
    /// Names the stream of batches; sequence numbers are per stream.
    pub stream_id: u64,
    /// The agent's software version, for the collector's operators.
    pub agent_version: BoundedString<32>,
    /// Largest frame payload this side will send; the collector's own
    /// bound, once its `Welcome` states it, lowers it further.
    pub max_frame_len: usize,
    /// Most batches sent and not yet acknowledged. The daemon uses 1; the
    /// load tool more. 0 is taken as 1.
    pub window: usize,
}

/// A batch the session holds until the collector acknowledges it.
#[derive(Debug, Clone)]
pub struct OutgoingBatch {
    seq: u64,
    records: BatchRecords,
    keys: Vec<u64>,
    /// When it was written on the current connection; `None`: not yet (or
    /// not since the last reconnect).
    sent_at: Option<Instant>,
}

impl OutgoingBatch {
    /// Its sequence number in the stream.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Its records.
    pub fn records(&self) -> &[Record] {
        &self.records
    }

    /// The caller's keys for its records (spool ids), as pushed; may be
    /// empty when the caller has none.
    pub fn keys(&self) -> &[u64] {
        &self.keys
    }

    /// Whether it went out on the current connection.
    pub fn is_sent(&self) -> bool {
        self.sent_at.is_some()
    }
}

/// Something the device must know or act on.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum AgentEvent {
    /// The collector welcomed us; `stored_seq` is the highest sequence of
    /// this stream it had already stored.
    Connected {
        /// From the `Welcome`.
        stored_seq: u64,
    },
    /// A batch is durably stored. `through` is what the collector
    /// acknowledged (or, on resume, said it stored): at least `seq`.
    Acked {
        /// The batch's sequence number.
        seq: u64,
        /// The acknowledgement's sequence number.
        through: u64,
        /// How many records the batch held.
        records: usize,
        /// When it was written on this connection; `None` when it was
        /// acknowledged without being sent again (resume).
        sent_at: Option<Instant>,
    },
    /// A batch not yet stored took a new sequence number so that it follows
    /// what the collector stored without a gap (the collector's store lost
    /// or never had the batches between).
    Renumbered {
        /// The old sequence number.
        from: u64,
        /// The new one.
        to: u64,
    },
    /// The organisation's capture consent, as the collector states it after
    /// the welcome and on every change. On `false`, capture records in
    /// batches not yet sent on this connection were removed; `discarded`
    /// holds their keys.
    ConsentChanged {
        /// Whether capture is allowed.
        capture: bool,
        /// The keys of the capture records removed from unsent batches.
        discarded: Vec<u64>,
    },
    /// A directive for the device: a data policy, a MAC pseudonymisation
    /// key, or any later kind of instruction.
    Directive(ControlMessage),
    /// The collector asks for a capture.
    CaptureRequest(CaptureRequest),
    /// The collector asks to stop a capture.
    StopCapture {
        /// The capture's id.
        id: u64,
    },
    /// The collector could not store batch `seq` (and what followed it) and
    /// keeps the connection; the session sends them again at `until`.
    RetryLater {
        /// The first batch to send again.
        seq: u64,
        /// When the session writes batches again.
        until: Instant,
        /// The collector's code.
        code: ErrorCode,
        /// The collector's explanation.
        message: String,
    },
}

/// Counts an operator or test may want.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// Acknowledgements older than anything in flight, ignored.
    pub duplicate_acks: u64,
    /// Welcomes received (connections that got through the handshake).
    pub connections: u64,
    /// `RetryLater`s received: batches the collector could not store yet.
    pub retries: u64,
}

/// The session cannot go on (on the current connection, or at all).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AgentSessionError {
    /// The collector refused with a reason.
    #[error("collector refused ({code:?}): {message}")]
    Refused {
        /// The collector's code.
        code: ErrorCode,
        /// Its explanation.
        message: String,
    },
    /// The collector sent something the protocol does not allow here.
    #[error("unexpected reply from the collector: {0}")]
    Unexpected(&'static str),
    /// An acknowledgement for a sequence number not sent on this connection.
    #[error("acknowledgement of batch {seq}, but the highest sent on this connection is {highest_sent}")]
    AckNeverSent {
        /// The acknowledged sequence number.
        seq: u64,
        /// The highest sent (0 for none).
        highest_sent: u64,
    },
    /// More batches than the window allows.
    #[error("{window} batches already await acknowledgement")]
    WindowFull {
        /// The window.
        window: usize,
    },
    /// A batch pushed with a sequence number that does not follow the stream.
    #[error("batch sequence {seq} does not follow the stream (next is {expected})")]
    OutOfOrder {
        /// The batch's sequence number.
        seq: u64,
        /// The next one the stream takes.
        expected: u64,
    },
    /// A message could not be encoded (a batch over the frame bound).
    #[error(transparent)]
    Encode(#[from] WireError),
    /// The drain deadline passed with batches unacknowledged.
    #[error("drain timed out with {unacked} batches unacknowledged")]
    DrainTimedOut {
        /// Batches still waiting.
        unacked: usize,
    },
    /// The session was closed.
    #[error("the session is closed")]
    Closed,
}

/// Where the session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No connection.
    Disconnected,
    /// `Hello` (and the proof) queued or sent; waiting for `Welcome`.
    AwaitingWelcome,
    /// Welcomed: batches flow.
    Established,
    /// Goodbye said, or given up; nothing more goes out.
    Closed,
}

/// The agent's side of the protocol across connections (see the module docs).
#[derive(Debug)]
pub struct AgentSession {
    config: AgentSessionConfig,
    phase: Phase,
    /// Non-batch messages waiting to be written, in order.
    outgoing: VecDeque<AgentMessage>,
    /// Batches not yet acknowledged, in sequence order; the sent ones are a prefix.
    unacked: VecDeque<OutgoingBatch>,
    next_seq: u64,
    /// Highest sequence the collector acknowledged or said it stored.
    acked_through: u64,
    /// The stored sequence in the last `Welcome`.
    welcomed_seq: u64,
    max_frame_len: usize,
    mac_key: Option<DevicePseudonymKey>,
    /// The organisation asks for strict header scrubbing: capture records
    /// are scrubbed as their batches are written.
    strict_headers: bool,
    events: VecDeque<AgentEvent>,
    drain_deadline: Option<Instant>,
    /// [`AgentSession::close`] was called: the goodbye is the last word.
    closing: bool,
    /// No batch is written before this (the collector said `RetryLater`).
    hold_until: Option<Instant>,
    stats: SessionStats,
}

impl AgentSession {
    /// A session that has sent nothing; its first batch will be sequence 1
    /// unless [`AgentSession::push_batch_at`] restores others first.
    pub fn new(mut config: AgentSessionConfig) -> Self {
        config.window = config.window.max(1);
        let max_frame_len = config.max_frame_len;
        Self {
            config,
            phase: Phase::Disconnected,
            outgoing: VecDeque::new(),
            unacked: VecDeque::new(),
            next_seq: 1,
            acked_through: 0,
            welcomed_seq: 0,
            max_frame_len,
            mac_key: None,
            strict_headers: false,
            events: VecDeque::new(),
            drain_deadline: None,
            closing: false,
            hold_until: None,
            stats: SessionStats::default(),
        }
    }

    /// The stream this session numbers batches in.
    pub fn stream_id(&self) -> u64 {
        self.config.stream_id
    }

    /// Whether the collector has welcomed us on the current connection.
    pub fn is_established(&self) -> bool {
        self.phase == Phase::Established
    }

    /// Whether the session said goodbye or gave up.
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// The stored sequence the last `Welcome` stated (0 before any).
    pub fn welcomed_seq(&self) -> u64 {
        self.welcomed_seq
    }

    /// Highest sequence number acknowledged (or stated stored) so far.
    pub fn acked_through(&self) -> u64 {
        self.acked_through
    }

    /// The sequence number the next pushed batch takes.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Counters.
    pub fn stats(&self) -> SessionStats {
        self.stats
    }

    /// Batches not yet acknowledged, oldest first.
    pub fn unacked(&self) -> impl Iterator<Item = &OutgoingBatch> {
        self.unacked.iter()
    }

    /// Whether another batch fits in the window.
    pub fn has_room(&self) -> bool {
        self.unacked.len() < self.config.window
    }

    /// The largest frame this side sends now.
    pub fn max_frame_len(&self) -> usize {
        self.max_frame_len
    }

    /// Pseudonymise MAC addresses in batches written from now on under
    /// `key` (or stop, with `None`). Batches stay in the session with their
    /// real addresses: a batch resent after the key changed is sent in the
    /// form the key then in force says, and says which form it is in.
    pub fn set_mac_pseudonym_key(&mut self, key: Option<DevicePseudonymKey>) {
        self.mac_key = key;
    }

    /// Whether captured headers in batches written from now on are scrubbed
    /// strictly (see [`crate::capture::scrub_strict`]). The session sets it
    /// itself from the collector's [`ControlMessage::StrictHeaders`]; batches
    /// keep their records as captured, like their MACs.
    pub fn set_strict_headers(&mut self, on: bool) {
        self.strict_headers = on;
    }

    /// Whether captured headers are scrubbed strictly.
    pub fn strict_headers(&self) -> bool {
        self.strict_headers
    }

    /// Adds a batch under the next sequence number, which it returns.
    /// `keys` are the caller's names for the records (returned in
    /// [`AgentEvent::ConsentChanged`] when records are removed); empty when
    /// the caller needs none.
    pub fn push_batch(&mut self, records: BatchRecords, keys: Vec<u64>) -> Result<u64, AgentSessionError> {
        let seq = self.next_seq;
        self.push_batch_at(seq, records, keys)?;
        Ok(seq)
    }

    /// Adds a batch under a given sequence number: one restored from a
    /// spool with the number it was journalled under, or one a caller
    /// numbered itself. A number at or below what the collector stored is
    /// acknowledged at once, without sending. Otherwise it must be the next
    /// number, except before any connection with nothing unacknowledged,
    /// when the stream continues from it (the welcome renumbers it if the
    /// collector's store does not reach it).
    pub fn push_batch_at(&mut self, seq: u64, records: BatchRecords, keys: Vec<u64>) -> Result<(), AgentSessionError> {
        if self.phase == Phase::Closed {
            return Err(AgentSessionError::Closed);
        }
        if seq != 0 && seq <= self.acked_through {
            self.events.push_back(AgentEvent::Acked {
                seq,
                through: self.acked_through,
                records: records.len(),
                sent_at: None,
            });
            return Ok(());
        }
        let restarting = self.phase == Phase::Disconnected && self.unacked.is_empty() && seq > self.acked_through;
        if seq == 0 || (seq != self.next_seq && !restarting) {
            return Err(AgentSessionError::OutOfOrder { seq, expected: self.next_seq });
        }
        if !self.has_room() {
            return Err(AgentSessionError::WindowFull { window: self.config.window });
        }
        self.next_seq = seq.saturating_add(1);
        self.unacked.push_back(OutgoingBatch { seq, records, keys, sent_at: None });
        Ok(())
    }

    /// Queues a capture status report for the collector. Reports are for
    /// the connection they are made on: without an established one the
    /// report is dropped (returns `false`), as a status line is not worth
    /// keeping across an outage.
    pub fn queue_capture_status(&mut self, status: CaptureStatus) -> bool {
        if self.phase != Phase::Established {
            return false;
        }
        self.outgoing.push_back(AgentMessage::CaptureStatus(status));
        true
    }

    /// A new connection is up (TLS with `proof` of the shared key, or SSH
    /// with `None`): queues the handshake, and everything unacknowledged
    /// goes out again after the welcome unless it says it was stored.
    pub fn connect(&mut self, proof: Option<AuthProof>) {
        if self.phase == Phase::Closed {
            return;
        }
        self.reset_connection();
        self.phase = Phase::AwaitingWelcome;
        self.outgoing.push_back(AgentMessage::Hello(Hello {
            version: PROTOCOL_VERSION,
            identity: self.config.identity.clone(),
            agent_version: self.config.agent_version.clone(),
            stream_id: self.config.stream_id,
        }));
        if let Some(proof) = proof {
            self.outgoing.push_back(AgentMessage::AuthProof(proof));
        }
    }

    /// The connection is gone (failed, refused, or closed by either side).
    pub fn connection_lost(&mut self) {
        if self.phase != Phase::Closed {
            self.phase = Phase::Disconnected;
        }
        self.reset_connection();
    }

    fn reset_connection(&mut self) {
        self.outgoing.clear();
        // A new connection starts with the collector's word in its welcome;
        // the edge's backoff paced the reconnect.
        self.hold_until = None;
        self.max_frame_len = self.config.max_frame_len;
        for batch in &mut self.unacked {
            batch.sent_at = None;
        }
    }

    /// Stops taking new work from the caller's point of view: from now the
    /// caller pushes only what it still has queued, and the session gives
    /// up at `deadline` if acknowledgements have not all arrived
    /// ([`AgentSession::handle_timeout`]). Control messages arriving
    /// meanwhile are still delivered as events.
    pub fn begin_drain(&mut self, deadline: Instant) {
        self.drain_deadline = Some(deadline);
    }

    /// Whether every batch pushed has been acknowledged.
    pub fn is_drained(&self) -> bool {
        self.unacked.is_empty()
    }

    /// Says goodbye for good: queues `Goodbye` on an established
    /// connection; after it is written (or at once without a connection)
    /// the session is closed. Batches not yet sent stay unsent.
    pub fn close(&mut self) {
        self.closing = true;
        match self.phase {
            Phase::Established => self.queue_goodbye(),
            _ => {
                self.phase = Phase::Closed;
                self.outgoing.clear();
            }
        }
    }

    /// Says goodbye on this connection only (the device is reconnecting,
    /// e.g. with reloaded credentials): once `Goodbye` is written the
    /// session is disconnected and may [`AgentSession::connect`] again.
    pub fn goodbye(&mut self) {
        match self.phase {
            Phase::Established => self.queue_goodbye(),
            _ => self.connection_lost(),
        }
    }

    fn queue_goodbye(&mut self) {
        if !matches!(self.outgoing.back(), Some(AgentMessage::Goodbye)) {
            self.outgoing.push_back(AgentMessage::Goodbye);
        }
    }

    /// When the session next needs [`AgentSession::handle_timeout`]: the
    /// drain deadline, or the end of a `RetryLater` delay.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.phase == Phase::Closed {
            return None;
        }
        match (self.drain_deadline, self.hold_until) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Until when batches are held back because the collector said
    /// `RetryLater` (`None`: they are not).
    pub fn held_until(&self) -> Option<Instant> {
        self.hold_until
    }

    /// The time is `now`. Returns an error (once) when the drain deadline
    /// has passed with batches unacknowledged: the session is then closed
    /// and the edge drops the connection without a goodbye.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), AgentSessionError> {
        if self.hold_until.is_some_and(|until| now >= until) {
            self.hold_until = None;
        }
        match self.drain_deadline {
            Some(deadline) if now >= deadline && self.phase != Phase::Closed => {
                self.phase = Phase::Closed;
                self.outgoing.clear();
                if self.unacked.is_empty() {
                    Ok(())
                } else {
                    Err(AgentSessionError::DrainTimedOut { unacked: self.unacked.len() })
                }
            }
            _ => Ok(()),
        }
    }

    /// The next event for the device.
    pub fn poll_event(&mut self) -> Option<AgentEvent> {
        self.events.pop_front()
    }

    /// Appends the next frame to write to `out`; returns whether it did.
    /// The edge calls it until it returns `false` and writes what it got.
    /// `now` is recorded as the batch's send time. An encoding failure (a
    /// batch over the frame bound) ends the connection; the batch stays
    /// unacknowledged.
    pub fn poll_transmit(&mut self, now: Instant, out: &mut Vec<u8>) -> Result<bool, AgentSessionError> {
        if let Some(message) = self.outgoing.pop_front() {
            let result = message.encode_frame(self.max_frame_len, out);
            if matches!(message, AgentMessage::Goodbye) {
                if self.closing {
                    self.phase = Phase::Closed;
                    self.outgoing.clear();
                } else {
                    self.connection_lost();
                }
            }
            return self.encoded(result);
        }
        if self.phase != Phase::Established {
            return Ok(false);
        }
        match self.hold_until {
            Some(until) if now < until => return Ok(false),
            Some(_) => self.hold_until = None,
            None => {}
        }
        let Some(batch) = self.unacked.iter_mut().find(|b| b.sent_at.is_none()) else {
            return Ok(false);
        };
        let org = &self.config.identity.org;
        let scrub = self.strict_headers && batch.records.iter().any(|r| matches!(r.body, RecordBody::Capture(_)));
        let macs = if self.mac_key.is_some() { MacForm::DevicePseudonyms } else { MacForm::Real };
        let result = if self.mac_key.is_none() && !scrub {
            encode_batch_parts(org, batch.seq, &batch.records, macs, self.max_frame_len, out)
        } else {
            // A copy: the session keeps the records as captured (see
            // set_mac_pseudonym_key and set_strict_headers).
            let key = self.mac_key.as_ref().map(DevicePseudonymKey::hmac_key);
            let mut copy = batch.records.to_vec();
            for record in &mut copy {
                if let Some(key) = &key {
                    pseudonymise_at_source(&mut record.body, key);
                }
                if let (true, RecordBody::Capture(packet)) = (scrub, &mut record.body) {
                    packet.scrub_strict();
                }
            }
            encode_batch_parts(org, batch.seq, &copy, macs, self.max_frame_len, out)
        };
        batch.sent_at = Some(now);
        self.encoded(result)
    }

    fn encoded(&mut self, result: Result<(), WireError>) -> Result<bool, AgentSessionError> {
        match result {
            Ok(()) => Ok(true),
            Err(e) => {
                self.connection_lost();
                Err(e.into())
            }
        }
    }

    /// Feeds one message from the collector, received at `now`. An error
    /// means the connection must be dropped (the session is then
    /// disconnected; unacknowledged batches are kept for the next one).
    pub fn handle_message(&mut self, now: Instant, message: CollectorMessage) -> Result<(), AgentSessionError> {
        let result = self.step(now, message);
        if result.is_err() {
            self.connection_lost();
        }
        result
    }

    fn step(&mut self, now: Instant, message: CollectorMessage) -> Result<(), AgentSessionError> {
        match (self.phase, message) {
            // After a goodbye (or giving up), whatever still arrives is moot.
            (Phase::Closed, _) => Ok(()),
            (_, CollectorMessage::Error(e)) => {
                Err(AgentSessionError::Refused { code: e.code, message: e.message.to_string() })
            }
            (Phase::Disconnected, _) => Err(AgentSessionError::Unexpected("a message with no connection open")),
            (Phase::AwaitingWelcome, CollectorMessage::Welcome(welcome)) => {
                self.on_welcome(welcome.stored_seq, welcome.max_frame_len);
                Ok(())
            }
            (Phase::AwaitingWelcome, CollectorMessage::Ack { .. }) => {
                Err(AgentSessionError::Unexpected("an acknowledgement before the welcome"))
            }
            (Phase::AwaitingWelcome, CollectorMessage::Control(_)) => {
                Err(AgentSessionError::Unexpected("a control message before the welcome"))
            }
            (Phase::AwaitingWelcome, CollectorMessage::RetryLater(_)) => {
                Err(AgentSessionError::Unexpected("a retry request before the welcome"))
            }
            (Phase::Established, CollectorMessage::RetryLater(retry)) => self.on_retry_later(now, retry),
            (Phase::Established, CollectorMessage::Welcome(_)) => {
                Err(AgentSessionError::Unexpected("a second welcome"))
            }
            (Phase::Established, CollectorMessage::Ack { stream_seq }) => self.on_ack(stream_seq),
            (Phase::Established, CollectorMessage::Control(control)) => {
                self.on_control(control);
                Ok(())
            }
        }
    }

    fn on_retry_later(&mut self, now: Instant, retry: RetryLater) -> Result<(), AgentSessionError> {
        let seq = retry.stream_seq;
        // Only a batch sent on this connection and not acknowledged can be
        // refused; anything else is a confused collector.
        let Some(first) = self.unacked.iter().position(|b| b.seq == seq && b.is_sent()) else {
            let highest_sent = self.unacked.iter().take_while(|b| b.is_sent()).last().map_or(0, |b| b.seq);
            return Err(AgentSessionError::AckNeverSent { seq, highest_sent });
        };
        for batch in self.unacked.iter_mut().skip(first) {
            batch.sent_at = None;
        }
        // A bounded wait, whatever the collector says: the device must not be
        // parked for ever by one message.
        let delay = Duration::from_millis(u64::from(retry.retry_after_ms.min(MAX_RETRY_AFTER_MS)));
        let until = now + delay;
        self.hold_until = Some(until);
        self.stats.retries += 1;
        self.events.push_back(AgentEvent::RetryLater {
            seq,
            until,
            code: retry.code,
            message: retry.message.to_string(),
        });
        Ok(())
    }

    fn on_welcome(&mut self, stored: u64, max_frame_len: u32) {
        self.phase = Phase::Established;
        self.stats.connections += 1;
        self.welcomed_seq = stored;
        // u32 fits usize on every target Glimpse builds for.
        self.max_frame_len = self.config.max_frame_len.min(max_frame_len as usize);
        self.events.push_back(AgentEvent::Connected { stored_seq: stored });
        // The collector's word on what it has is final, even when it is less
        // than it acknowledged before (a store restored from a backup).
        self.acked_through = stored;
        while let Some(batch) = self.unacked.pop_front_when(|b| b.seq <= stored) {
            self.events.push_back(AgentEvent::Acked {
                seq: batch.seq,
                through: stored,
                records: batch.records.len(),
                sent_at: None,
            });
        }
        let mut expected = stored.saturating_add(1);
        for batch in &mut self.unacked {
            if batch.seq != expected {
                self.events.push_back(AgentEvent::Renumbered { from: batch.seq, to: expected });
                batch.seq = expected;
            }
            expected = expected.saturating_add(1);
        }
        self.next_seq = expected;
    }

    fn on_ack(&mut self, seq: u64) -> Result<(), AgentSessionError> {
        let highest_sent = self.unacked.iter().take_while(|b| b.is_sent()).last().map_or(0, |b| b.seq);
        let oldest_sent = self.unacked.front().filter(|b| b.is_sent()).map(|b| b.seq);
        let duplicate = match oldest_sent {
            Some(oldest) => seq < oldest,
            None => seq <= self.acked_through,
        };
        if duplicate {
            self.stats.duplicate_acks += 1;
            return Ok(());
        }
        if oldest_sent.is_none() || seq > highest_sent {
            return Err(AgentSessionError::AckNeverSent { seq, highest_sent });
        }
        while let Some(batch) = self.unacked.pop_front_when(|b| b.seq <= seq) {
            self.events.push_back(AgentEvent::Acked {
                seq: batch.seq,
                through: seq,
                records: batch.records.len(),
                sent_at: batch.sent_at,
            });
        }
        self.acked_through = self.acked_through.max(seq);
        Ok(())
    }

    fn on_control(&mut self, control: ControlMessage) {
        let event = match control {
            ControlMessage::Consent { capture } => {
                let discarded = if capture { Vec::new() } else { self.discard_unsent_captures() };
                AgentEvent::ConsentChanged { capture, discarded }
            }
            ControlMessage::StartCapture(request) => AgentEvent::CaptureRequest(request),
            ControlMessage::StopCapture { id } => AgentEvent::StopCapture { id },
            ControlMessage::StrictHeaders { on } => {
                self.strict_headers = on;
                AgentEvent::Directive(ControlMessage::StrictHeaders { on })
            }
            other => AgentEvent::Directive(other),
        };
        self.events.push_back(event);
    }

    /// Withdrawn consent covers capture records not yet sent: they are
    /// removed from unsent batches. Returns their keys.
    fn discard_unsent_captures(&mut self) -> Vec<u64> {
        let is_capture = |r: &Record| matches!(r.body, RecordBody::Capture(_));
        let mut discarded = Vec::new();
        for batch in self.unacked.iter_mut().filter(|b| !b.is_sent()) {
            if !batch.records.iter().any(is_capture) {
                continue;
            }
            let records = Arc::make_mut(&mut batch.records);
            let mut kept_keys = Vec::with_capacity(batch.keys.len());
            let mut index = 0;
            records.retain(|record| {
                let key = batch.keys.get(index).copied();
                index += 1;
                if is_capture(record) {
                    discarded.extend(key);
                    false
                } else {
                    kept_keys.extend(key);
                    true
                }
            });
            batch.keys = kept_keys;
        }
        discarded
    }
}

/// `VecDeque::pop_front_if` is newer than the workspace's minimum Rust.
trait PopFrontIf<T> {
    fn pop_front_when(&mut self, keep: impl FnOnce(&T) -> bool) -> Option<T>;
}

impl<T> PopFrontIf<T> for VecDeque<T> {
    fn pop_front_when(&mut self, pred: impl FnOnce(&T) -> bool) -> Option<T> {
        if self.front().is_some_and(pred) {
            self.pop_front()
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests;
