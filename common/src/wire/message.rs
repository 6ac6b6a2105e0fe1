//! The messages, and the one way to turn them into bytes and back.
//!
//! Compatibility rules, because postcard identifies enum variants by
//! position: new variants are appended at the end of an enum, never inserted;
//! [`AgentMessage::Hello`] stays variant 0 and its first field stays the
//! protocol version, so any future agent's first frame can be read far enough
//! to refuse it by version rather than as garbage.

use serde::{Deserialize, Serialize};

use crate::bounded::{BoundedString, BoundedVec};
use crate::identity::{DeviceIdentity, OrgId};
use crate::record::Record;
use crate::wire::frame::{encode_frame, FrameError};

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u16 = 1;

/// Most records in one batch.
pub const MAX_RECORDS_PER_BATCH: usize = 4096;

/// Longest human-readable error text carried in a message.
pub const MAX_ERROR_TEXT: usize = 256;

/// What an agent sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum AgentMessage {
    /// The first message on every connection.
    Hello(Hello),
    /// Proof of the per-device shared key, bound to this TLS session.
    AuthProof(AuthProof),
    /// Records to store.
    Batch(Batch),
    /// The agent is closing the connection cleanly.
    Goodbye,
    /// How a capture the collector asked for went.
    CaptureStatus(CaptureStatus),
    /// Records to store, whose MAC addresses the agent already replaced by
    /// their pseudonyms under the organisation's device key (see
    /// [`crate::minimise`]); otherwise as [`AgentMessage::Batch`].
    PseudonymisedBatch(Batch),
}

impl AgentMessage {
    /// The batch this message carries and the form of its MAC addresses.
    pub fn into_batch(self) -> Option<(Batch, crate::minimise::MacForm)> {
        match self {
            AgentMessage::Batch(batch) => Some((batch, crate::minimise::MacForm::Real)),
            AgentMessage::PseudonymisedBatch(batch) => Some((batch, crate::minimise::MacForm::DevicePseudonyms)),
            _ => None,
        }
    }
}

/// The first message on every connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// Protocol version; must stay the first field.
    pub version: u16,
    /// Who the agent says it is; must match its certificate.
    pub identity: DeviceIdentity,
    /// The agent's software version, for operators.
    pub agent_version: BoundedString<32>,
    /// Identifies this agent's stream of batches; sequence numbers are per stream.
    pub stream_id: u64,
}

/// Proof of the shared key (see [`crate::auth`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuthProof {
    /// HMAC-SHA256 over the TLS exporter output and the identity.
    pub proof: [u8; crate::auth::PROOF_LEN],
}

/// A batch of records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    /// The organisation the records belong to; must match the certificate's.
    pub org: OrgId,
    /// Position in the agent's stream, starting at 1 and increasing by one.
    pub stream_seq: u64,
    /// The records.
    pub records: BoundedVec<Record, MAX_RECORDS_PER_BATCH>,
}

/// What the collector sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum CollectorMessage {
    /// The agent is authenticated and may stream.
    Welcome(Welcome),
    /// Every batch up to and including `stream_seq` is durably stored.
    Ack {
        /// Highest stored sequence number.
        stream_seq: u64,
    },
    /// The collector refuses something; the connection closes after this.
    Error(ProtocolError),
    /// An instruction for the agent, sent whenever it arises.
    Control(ControlMessage),
    /// The collector could not store a batch now (its storage is full or
    /// failing) and keeps the connection open: the agent sends that batch
    /// and every later one again after the stated delay. An agent older
    /// than this message cannot decode it, drops the connection and
    /// reconnects, as it did after the `Error` that came before it.
    RetryLater(RetryLater),
}

/// A batch was not stored; send it again after a delay, on this connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetryLater {
    /// The first batch not stored: it and everything sent after it are
    /// dropped by the collector until it arrives again.
    pub stream_seq: u64,
    /// How long to wait before sending it again, in milliseconds.
    pub retry_after_ms: u32,
    /// Why, as a code ([`ErrorCode::StorageUnavailable`]).
    pub code: ErrorCode,
    /// Why, for the agent's log.
    pub message: BoundedString<MAX_ERROR_TEXT>,
}

/// Longest delay a [`RetryLater`] may name; an agent never waits longer.
pub const MAX_RETRY_AFTER_MS: u32 = 10 * 60 * 1000;

/// Instructions the collector sends to a connected agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ControlMessage {
    /// Capture headers on an interface, within the given bounds.
    StartCapture(CaptureRequest),
    /// Stop the capture with this id now.
    StopCapture {
        /// The request's id.
        id: u64,
    },
    /// The organisation's packet-capture consent. Sent right after
    /// [`Welcome`] and whenever an admin changes it. On `false` the agent
    /// stops every capture and discards capture records not yet sent.
    Consent {
        /// Whether the organisation allows packet capture.
        capture: bool,
    },
    /// The metadata fields the organisation does not want collected. Sent
    /// right after [`Welcome`] and whenever an admin changes it.
    DataPolicy {
        /// Fields to leave out of every metadata record.
        omit: BoundedVec<crate::minimise::MetadataField, MAX_POLICY_FIELDS>,
    },
    /// Whether to pseudonymise MAC addresses on the device. Sent right
    /// after [`Welcome`] when the organisation pseudonymises, and whenever
    /// an admin turns it on or off.
    MacPseudonyms {
        /// The organisation's device key to pseudonymise with, or `None` to
        /// send addresses as they are (the collector may still pseudonymise
        /// them on arrival).
        key: Option<crate::minimise::DevicePseudonymKey>,
    },
    /// Whether to scrub captured headers strictly (see
    /// [`crate::capture::scrub_strict`]). Sent right after [`Welcome`]
    /// when the organisation asks for it and whenever an admin turns it on
    /// or off, and only to agents that can decode it (see
    /// [`agent_decodes`]); the collector scrubs on arrival regardless.
    StrictHeaders {
        /// Whether captured headers are scrubbed strictly.
        on: bool,
    },
    /// Gather a diagnostic bundle ([`crate::record::Diagnostics`]) and send
    /// it as a record, answering request `id`. Sent when support (under a
    /// grant), an organisation's admin or an operator asks for one, and
    /// only to agents that can decode it (see [`agent_decodes`]).
    CollectDiagnostics {
        /// The request's id, repeated in the bundle.
        id: u64,
    },
    /// The organisation's blocked subjects, the whole list each time: the
    /// agent drops their data before queueing it (see
    /// [`crate::record::subject::drop_subjects`]). Sent right after
    /// [`Welcome`] when the list is not empty and whenever an admin blocks
    /// or unblocks someone, and only to agents that can decode it (see
    /// [`agent_decodes`]); the collector drops their data on arrival
    /// regardless.
    BlockedSubjects {
        /// Who is blocked.
        subjects: crate::record::subject::BlockedSubjects,
    },
    /// Whether to collect WAN destinations (sessions per client and
    /// destination, with site names from the gateway's DNS resolver). Off
    /// until the organisation enables it: sent right after [`Welcome`] when
    /// it is on and whenever an admin turns it on or off, and only to
    /// agents that can decode it (see [`agent_decodes`]); the collector
    /// drops such records on arrival when it is off, regardless.
    WanDestinations {
        /// Whether WAN destinations are collected.
        on: bool,
    },
}

/// The first agent release that decodes every variant of
/// [`ControlMessage`] up to [`ControlMessage::StrictHeaders`].
pub const STRICT_HEADERS_SINCE: (u64, u64, u64) = (0, 2, 0);

/// The first agent release that decodes every variant of
/// [`ControlMessage`] up to [`ControlMessage::CollectDiagnostics`].
pub const DIAGNOSTICS_SINCE: (u64, u64, u64) = (0, 3, 0);
/// The first agent release that decodes [`ControlMessage::BlockedSubjects`].
pub const BLOCKED_SUBJECTS_SINCE: (u64, u64, u64) = (0, 3, 0);
/// The first agent release that decodes [`ControlMessage::WanDestinations`].
pub const WAN_DESTINATIONS_SINCE: (u64, u64, u64) = (0, 3, 0);

impl ControlMessage {
    /// The first agent release (major, minor, patch) that can decode this
    /// message. Postcard cannot skip an enum variant it does not know, so an
    /// older agent that got one would drop the connection; the collector
    /// sends a message only to agents whose Hello names this release or a
    /// later one (see PROTOCOL.md, "Versions and refusals").
    pub fn first_agent_release(&self) -> (u64, u64, u64) {
        match self {
            ControlMessage::StrictHeaders { .. } => STRICT_HEADERS_SINCE,
            ControlMessage::CollectDiagnostics { .. } => DIAGNOSTICS_SINCE,
            ControlMessage::BlockedSubjects { .. } => BLOCKED_SUBJECTS_SINCE,
            ControlMessage::WanDestinations { .. } => WAN_DESTINATIONS_SINCE,
            _ => (0, 0, 0),
        }
    }
}

/// Whether an agent whose Hello named `agent_version` (`version` or
/// `version+build`) can decode `message`. A version that does not read as
/// `major.minor.patch` (a pre-release suffix is ignored) is taken to be
/// older than any release, so it gets only the messages every agent knows.
pub fn agent_decodes(agent_version: &str, message: &ControlMessage) -> bool {
    agent_is_at_least(agent_version, message.first_agent_release())
}

/// Whether an agent whose Hello named `agent_version` is release `needed`
/// or later, read as [`agent_decodes`] reads it (`(0, 0, 0)`: any agent).
pub fn agent_is_at_least(agent_version: &str, needed: (u64, u64, u64)) -> bool {
    if needed == (0, 0, 0) {
        return true;
    }
    let version = agent_version.split('+').next().unwrap_or_default();
    let version = version.split('-').next().unwrap_or_default();
    let mut parts = version.split('.').map(|part| part.parse::<u64>().ok());
    match (parts.next().flatten(), parts.next().flatten(), parts.next().flatten(), parts.next()) {
        (Some(major), Some(minor), Some(patch), None) => (major, minor, patch) >= needed,
        _ => false,
    }
}

/// Most fields a data policy can name.
pub const MAX_POLICY_FIELDS: usize = 32;

/// An on-demand capture request. The agent applies its own, lower bounds
/// on top and refuses outright when its organisation has not allowed
/// capture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaptureRequest {
    /// Identifies the capture in status reports and logs.
    pub id: u64,
    /// Interface to capture on.
    pub interface: BoundedString<32>,
    /// A libpcap (BPF) filter; empty for everything.
    pub filter: BoundedString<MAX_FILTER_TEXT>,
    /// Longest the capture may run, in seconds.
    pub duration_secs: u32,
    /// Most packets it may keep.
    pub max_packets: u32,
}

/// Longest BPF filter text accepted in a capture request.
pub const MAX_FILTER_TEXT: usize = 512;

/// What happened to a capture request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaptureStatus {
    /// The request's id.
    pub id: u64,
    /// What happened.
    pub outcome: CaptureOutcome,
}

/// The outcome of a capture request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum CaptureOutcome {
    /// The capture is running.
    Started,
    /// The capture ended (bound reached, stopped, or finished).
    Finished {
        /// Packets kept as header-only records.
        packets: u64,
        /// Header bytes kept.
        header_bytes: u64,
    },
    /// The agent refused or failed (not allowed, no such interface, bad filter).
    Refused {
        /// Why.
        reason: BoundedString<MAX_ERROR_TEXT>,
    },
}

/// Sent once authentication succeeds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Welcome {
    /// The collector's protocol version.
    pub version: u16,
    /// Largest frame payload the collector accepts.
    pub max_frame_len: u32,
    /// The highest sequence number of this stream already stored (0 for
    /// none): a reconnecting agent resends only what comes after.
    pub stored_seq: u64,
}

/// A refusal with a machine-readable code and a human-readable reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProtocolError {
    /// What went wrong.
    pub code: ErrorCode,
    /// Why, for the agent's log.
    pub message: BoundedString<MAX_ERROR_TEXT>,
}

impl ProtocolError {
    /// Builds an error message, cutting an over-long reason.
    pub fn new(code: ErrorCode, message: &str) -> Self {
        Self { code, message: BoundedString::truncating(message) }
    }
}

/// Why the collector refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The agent speaks a protocol version the collector does not.
    UnsupportedVersion,
    /// A frame or message could not be decoded.
    Malformed,
    /// A message arrived out of order.
    UnexpectedMessage,
    /// Certificate, registration or shared key did not check out.
    AuthenticationFailed,
    /// A batch named another organisation than the certificate.
    WrongOrganisation,
    /// A batch sequence number went backwards or skipped.
    BadSequence,
    /// The collector could not store the batch; retry later.
    StorageUnavailable,
    /// The collector is shutting down; reconnect later.
    ShuttingDown,
}

/// A message could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The frame layer refused.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The first message named a protocol version we do not speak.
    #[error("unsupported protocol version {got} (this build speaks version {supported})")]
    UnsupportedVersion {
        /// The peer's version.
        got: u16,
        /// Ours.
        supported: u16,
    },
    /// The payload was not a valid message (unknown message type, bad field,
    /// over a bound, or truncated).
    #[error("malformed message: {0}")]
    Malformed(postcard::Error),
    /// A valid message was followed by extra bytes in the same frame.
    #[error("{0} trailing bytes after the message")]
    TrailingBytes(usize),
    /// A message could not be encoded (it is over a bound).
    #[error("cannot encode message: {0}")]
    Encode(postcard::Error),
}

/// The one way in and out for message bytes.
pub trait Codec: Sized {
    /// Appends this message to `out` as one frame.
    fn encode_frame(&self, max_frame_len: usize, out: &mut Vec<u8>) -> Result<(), WireError>;
    /// Decodes exactly one message from a frame payload.
    fn decode(payload: &[u8]) -> Result<Self, WireError>;
}

pub(crate) fn encode_framed<T: Serialize>(msg: &T, max_frame_len: usize, out: &mut Vec<u8>) -> Result<(), WireError> {
    let payload = postcard::to_stdvec(msg).map_err(WireError::Encode)?;
    encode_frame(&payload, max_frame_len, out)?;
    Ok(())
}

pub(crate) fn decode_exact<'a, T: Deserialize<'a>>(payload: &'a [u8]) -> Result<T, WireError> {
    let (msg, rest) = postcard::take_from_bytes(payload).map_err(WireError::Malformed)?;
    if !rest.is_empty() {
        return Err(WireError::TrailingBytes(rest.len()));
    }
    Ok(msg)
}

/// Encodes `batch` as an [`AgentMessage::Batch`] frame, or an
/// [`AgentMessage::PseudonymisedBatch`] one for [`MacForm::DevicePseudonyms`](crate::minimise::MacForm),
/// without cloning it.
pub fn encode_batch_frame(
    batch: &Batch,
    macs: crate::minimise::MacForm,
    max_frame_len: usize,
    out: &mut Vec<u8>,
) -> Result<(), WireError> {
    encode_batch_parts(&batch.org, batch.stream_seq, &batch.records, macs, max_frame_len, out)
}

/// As [`encode_batch_frame`], from a batch's parts, so that a sender
/// holding its records elsewhere (shared, or in a session's window) need
/// not assemble a [`Batch`] to send one.
pub fn encode_batch_parts(
    org: &OrgId,
    stream_seq: u64,
    records: &[Record],
    macs: crate::minimise::MacForm,
    max_frame_len: usize,
    out: &mut Vec<u8>,
) -> Result<(), WireError> {
    // Same bytes as AgentMessage::Batch(batch) (or PseudonymisedBatch): the
    // variant index, then the struct's fields in order (a slice encodes
    // like the BoundedVec it came from). The unit test
    // `borrowed_batch_encoding_matches` pins this.
    #[derive(Serialize)]
    struct BorrowedBatch<'a> {
        org: &'a OrgId,
        stream_seq: u64,
        records: &'a [Record],
    }
    #[derive(Serialize)]
    enum BorrowedAgentMessage<'a> {
        _Hello,
        _AuthProof,
        Batch(BorrowedBatch<'a>),
        _Goodbye,
        _CaptureStatus,
        PseudonymisedBatch(BorrowedBatch<'a>),
    }
    let batch = BorrowedBatch { org, stream_seq, records };
    let message = match macs {
        crate::minimise::MacForm::Real => BorrowedAgentMessage::Batch(batch),
        crate::minimise::MacForm::DevicePseudonyms => BorrowedAgentMessage::PseudonymisedBatch(batch),
    };
    encode_framed(&message, max_frame_len, out)
}

impl Codec for AgentMessage {
    fn encode_frame(&self, max_frame_len: usize, out: &mut Vec<u8>) -> Result<(), WireError> {
        encode_framed(self, max_frame_len, out)
    }

    fn decode(payload: &[u8]) -> Result<Self, WireError> {
        // Read the variant and, for a Hello, the version before anything else:
        // a future agent's Hello may not decode as ours, and it deserves
        // "unsupported version", not "malformed".
        if let Ok((0u32, (version, _))) =
            postcard::take_from_bytes::<(u32, u16)>(payload).map(|(v, rest)| (v.0, (v.1, rest)))
        {
            if version != PROTOCOL_VERSION {
                return Err(WireError::UnsupportedVersion { got: version, supported: PROTOCOL_VERSION });
            }
        }
        decode_exact(payload)
    }
}

impl Codec for CollectorMessage {
    fn encode_frame(&self, max_frame_len: usize, out: &mut Vec<u8>) -> Result<(), WireError> {
        encode_framed(self, max_frame_len, out)
    }

    fn decode(payload: &[u8]) -> Result<Self, WireError> {
        decode_exact(payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{DeviceId, DeviceKind};
    use crate::record::{DeviceMetadata, InterfaceStats, MacAddr, RecordBody};
    use crate::wire::frame::parse_frame;
    use proptest::prelude::*;

    fn identity() -> DeviceIdentity {
        DeviceIdentity {
            org: OrgId::new("acme").unwrap(),
            device: DeviceId::new("ap-1").unwrap(),
            kind: DeviceKind::Ap,
        }
    }

    fn hello(version: u16) -> AgentMessage {
        AgentMessage::Hello(Hello {
            version,
            identity: identity(),
            agent_version: BoundedString::truncating("0.1.0"),
            stream_id: 42,
        })
    }

    fn round_trip(msg: &AgentMessage) -> AgentMessage {
        let mut wire = Vec::new();
        msg.encode_frame(1 << 20, &mut wire).unwrap();
        let (payload, used) = parse_frame(&wire, 1 << 20).unwrap().unwrap();
        assert_eq!(used, wire.len());
        AgentMessage::decode(payload).unwrap()
    }

    fn sample_batch(n: usize) -> AgentMessage {
        let record = Record {
            observed_at_ms: 1_700_000_000_000,
            body: RecordBody::Metadata(DeviceMetadata {
                hostname: BoundedString::truncating("ap-lobby"),
                interfaces: BoundedVec::truncating(vec![InterfaceStats {
                    name: BoundedString::truncating("wlan0"),
                    mac: Some(MacAddr([2, 0, 0, 0, 0, 1])),
                    addresses: BoundedVec::truncating(vec!["192.0.2.7".parse().unwrap()]),
                    rx_bytes: 123_456,
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        };
        AgentMessage::Batch(Batch {
            org: OrgId::new("acme").unwrap(),
            stream_seq: 7,
            records: BoundedVec::truncating(vec![record; n]),
        })
    }

    #[test]
    fn messages_round_trip() {
        assert_eq!(round_trip(&hello(PROTOCOL_VERSION)), hello(PROTOCOL_VERSION));
        assert_eq!(round_trip(&sample_batch(3)), sample_batch(3));
        assert_eq!(round_trip(&AgentMessage::Goodbye), AgentMessage::Goodbye);
    }

    #[test]
    fn directives_round_trip_and_their_truncations_are_errors() {
        use crate::minimise::MetadataField;
        for control in [
            ControlMessage::Consent { capture: true },
            ControlMessage::Consent { capture: false },
            ControlMessage::DataPolicy { omit: BoundedVec::truncating(MetadataField::ALL.to_vec()) },
            ControlMessage::StopCapture { id: 9 },
            ControlMessage::MacPseudonyms { key: None },
            ControlMessage::StrictHeaders { on: true },
            ControlMessage::CollectDiagnostics { id: 300 },
            ControlMessage::BlockedSubjects {
                subjects: vec![
                    crate::record::subject::Subject::Mac(MacAddr([2, 0, 0, 0, 0, 0xb0])),
                    crate::record::subject::Subject::Ip("2001:db8::7".parse().unwrap()),
                    crate::record::subject::Subject::Username(BoundedString::truncating("bob")),
                ]
                .try_into()
                .unwrap(),
            },
            ControlMessage::WanDestinations { on: true },
            ControlMessage::MacPseudonyms {
                key: Some(crate::minimise::DevicePseudonymKey::derive(&ring::hmac::Key::new(
                    ring::hmac::HMAC_SHA256,
                    &[7; 32],
                ))),
            },
        ] {
            let msg = CollectorMessage::Control(control);
            let mut out = Vec::new();
            msg.encode_frame(1 << 20, &mut out).unwrap();
            let payload = &out[4..];
            assert_eq!(CollectorMessage::decode(payload).unwrap(), msg);
            for cut in 0..payload.len() {
                assert!(CollectorMessage::decode(&payload[..cut]).is_err(), "{msg:?} cut at {cut}");
            }
        }
        // A data policy naming more fields than the bound is refused.
        let mut too_many =
            postcard::to_stdvec(&CollectorMessage::Control(ControlMessage::DataPolicy { omit: BoundedVec::default() }))
                .unwrap();
        too_many.pop();
        too_many.push(u8::try_from(MAX_POLICY_FIELDS + 1).unwrap());
        too_many.extend(std::iter::repeat_n(0u8, MAX_POLICY_FIELDS + 1));
        assert!(CollectorMessage::decode(&too_many).is_err());
    }

    #[test]
    fn newer_directives_go_only_to_agents_that_decode_them() {
        let strict = ControlMessage::StrictHeaders { on: true };
        for (version, decodes) in [
            ("0.2.0", true),
            ("0.2.0+abc123", true),
            ("0.2.1-rc.1+x", true),
            ("1.0.0", true),
            ("0.1.9", false),
            ("0.1.0+abc123", false),
            ("", false),
            ("0.2", false),
            ("0.2.0.1", false),
            ("v0.2.0", false),
            ("garbage", false),
        ] {
            assert_eq!(agent_decodes(version, &strict), decodes, "{version:?}");
            assert!(agent_decodes(version, &ControlMessage::Consent { capture: true }), "{version:?}");
        }
        // Appended: every older variant keeps its index, the new one is last.
        let bytes = postcard::to_stdvec(&strict).unwrap();
        assert_eq!(bytes, [5, 1]);
        let diagnostics = ControlMessage::CollectDiagnostics { id: 2 };
        assert_eq!(postcard::to_stdvec(&diagnostics).unwrap(), [6, 2]);
        for (version, decodes) in [("0.3.0", true), ("0.3.1+abc", true), ("0.2.9", false), ("0.2.0", false)] {
            assert_eq!(agent_decodes(version, &diagnostics), decodes, "{version:?}");
        }
        let blocked = ControlMessage::BlockedSubjects { subjects: Default::default() };
        assert_eq!(postcard::to_stdvec(&blocked).unwrap(), [7, 0]);
        for (version, decodes) in [("0.2.9", false), ("0.3.0", true), ("0.3.0+abc", true), ("1.0.0", true)] {
            assert_eq!(agent_decodes(version, &blocked), decodes, "{version:?}");
        }
        let wan = ControlMessage::WanDestinations { on: true };
        assert_eq!(postcard::to_stdvec(&wan).unwrap(), [8, 1]);
        for (version, decodes) in [("0.2.0", false), ("0.3.0", true)] {
            assert_eq!(agent_decodes(version, &wan), decodes, "{version:?}");
        }
    }

    #[test]
    fn retry_later_round_trips_and_older_messages_keep_their_bytes() {
        let msg = CollectorMessage::RetryLater(RetryLater {
            stream_seq: 12,
            retry_after_ms: 5000,
            code: ErrorCode::StorageUnavailable,
            message: BoundedString::truncating("storage unavailable"),
        });
        let mut out = Vec::new();
        msg.encode_frame(1 << 20, &mut out).unwrap();
        assert_eq!(out[4], 4, "appended after Control: the variants before it keep their numbers");
        assert_eq!(CollectorMessage::decode(&out[4..]).unwrap(), msg);
        for cut in 0..out.len() - 4 {
            assert!(CollectorMessage::decode(&out[4..4 + cut]).is_err());
        }
        let ack = postcard::to_stdvec(&CollectorMessage::Ack { stream_seq: 3 }).unwrap();
        assert_eq!(ack, vec![1, 3]);
    }

    #[test]
    fn borrowed_batch_encoding_matches() {
        use crate::minimise::MacForm;
        let AgentMessage::Batch(batch) = sample_batch(2) else { unreachable!() };
        for (form, owned_message) in [
            (MacForm::Real, AgentMessage::Batch(batch.clone())),
            (MacForm::DevicePseudonyms, AgentMessage::PseudonymisedBatch(batch.clone())),
        ] {
            let mut borrowed = Vec::new();
            encode_batch_frame(&batch, form, 1 << 20, &mut borrowed).unwrap();
            let mut owned = Vec::new();
            owned_message.encode_frame(1 << 20, &mut owned).unwrap();
            assert_eq!(borrowed, owned, "{form:?}");
            let decoded = AgentMessage::decode(&borrowed[4..]).unwrap();
            assert_eq!(decoded.into_batch(), Some((batch.clone(), form)));
        }
    }

    #[test]
    fn unknown_version_is_refused_by_name() {
        let payload = postcard::to_stdvec(&hello(9)).unwrap();
        assert_eq!(AgentMessage::decode(&payload), Err(WireError::UnsupportedVersion { got: 9, supported: 1 }));
        // Even a future Hello whose remaining fields we cannot parse.
        assert_eq!(AgentMessage::decode(&[0, 2, 0xff]), Err(WireError::UnsupportedVersion { got: 2, supported: 1 }));
    }

    #[test]
    fn unknown_message_type_and_trailing_bytes_are_refused() {
        assert!(matches!(AgentMessage::decode(&[77]), Err(WireError::Malformed(_))));
        let mut payload = postcard::to_stdvec(&AgentMessage::Goodbye).unwrap();
        payload.push(0);
        assert_eq!(AgentMessage::decode(&payload), Err(WireError::TrailingBytes(1)));
    }

    #[test]
    fn batch_over_record_bound_is_refused() {
        // A batch claiming 4097 records.
        let mut payload = vec![2u8];
        payload.extend(postcard::to_stdvec(&OrgId::new("acme").unwrap()).unwrap());
        payload.push(1);
        payload.extend(postcard::to_stdvec(&4097u32).unwrap());
        assert!(matches!(AgentMessage::decode(&payload), Err(WireError::Malformed(_))));
    }

    #[test]
    fn every_truncation_of_a_valid_message_is_an_error() {
        let payload = postcard::to_stdvec(&sample_batch(2)).unwrap();
        for cut in 0..payload.len() {
            assert!(AgentMessage::decode(&payload[..cut]).is_err(), "cut at {cut}");
        }
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(payload in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = AgentMessage::decode(&payload);
            let _ = CollectorMessage::decode(&payload);
        }

        #[test]
        fn mutated_valid_messages_never_panic(pos in 0usize..400, byte in any::<u8>()) {
            let mut payload = postcard::to_stdvec(&sample_batch(2)).unwrap();
            let at = pos % payload.len();
            payload[at] = byte;
            if let Ok(AgentMessage::Batch(batch)) = AgentMessage::decode(&payload) {
                prop_assert!(batch.records.len() <= MAX_RECORDS_PER_BATCH);
            }
        }
    }
}
