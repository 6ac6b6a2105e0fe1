//! The wire protocol between agents and the collector.
//!
//! A connection is a sequence of frames in each direction ([`frame`]); each
//! frame's payload is one `postcard`-encoded message ([`message`]). The order
//! of messages is enforced by one state machine per side:
//! [`agent_session`] for the agent, [`session`] for the collector. None of
//! this touches a socket: the agent and the collector drive them over TLS
//! or SSH at their edges.
//!
//! ```text
//! agent                                   collector
//!   | -- Hello{version, identity} -------->  |  version and certificate identity checked
//!   | -- AuthProof{hmac over exporter} --->  |  shared key checked (constant time)
//!   | <------------- Welcome{next_seq} ----  |
//!   | -- Batch{seq, records} ------------->  |  sealed and written
//!   | <------------------- Ack{seq} -------  |
//!   | -- Goodbye ------------------------->  |
//! ```

pub mod admin;
pub mod agent_session;
pub mod frame;
#[cfg(feature = "tokio")]
pub mod io;
pub mod message;
pub mod session;

pub use agent_session::{
    AgentEvent, AgentSession, AgentSessionConfig, AgentSessionError, BatchRecords, OutgoingBatch, SessionStats,
};
pub use frame::{encode_frame, parse_frame, FrameError, DEFAULT_MAX_FRAME_LEN, FRAME_HEADER_LEN};
pub use message::{
    agent_decodes, agent_is_at_least, BLOCKED_SUBJECTS_SINCE, DIAGNOSTICS_SINCE, STRICT_HEADERS_SINCE,
    WAN_DESTINATIONS_SINCE,
};
pub use message::{
    AgentMessage, AuthProof, Batch, CaptureOutcome, CaptureRequest, CaptureStatus, Codec, CollectorMessage,
    ControlMessage, ErrorCode, Hello, ProtocolError, RetryLater, Welcome, WireError, MAX_POLICY_FIELDS,
    MAX_RECORDS_PER_BATCH, MAX_RETRY_AFTER_MS, PROTOCOL_VERSION,
};
pub use session::{Authentication, CollectorSession, SessionAction, SessionError, SessionTimeouts};
