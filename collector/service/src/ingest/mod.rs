//! Ingest: the TLS listener (access points) and the SSH listener (switches
//! and gateways) that authenticate agents and store their batches.
//!
//! Each connection is a task that drives the sans-IO
//! [`glimpse_common::wire::CollectorSession`]; this module only moves bytes,
//! checks credentials against the registry and calls the store on a blocking
//! thread. Authentication has two gates, both required:
//!
//! 1. TLS: a client certificate chained to our CA, in its validity period,
//!    not on the CRL (rustls' webpki verifier).
//! 2. Registration: the certificate's identity is a registered, unrevoked
//!    device whose registered serial is this certificate's, and the agent's
//!    HMAC proves it holds that device's shared key for *this* session.
//!
//! Over SSH (see [`ssh`]) the first gate is the device's registered public
//! key, checked during SSH authentication, and the registry is checked
//! again when the agent's Hello arrives.
//!
//! On every reload each live session is checked again (see `withdraw`):
//! one whose device is now revoked, unregistered or re-keyed is sent an
//! `Error` naming the reason and closed, and nothing it sent after the
//! reload is stored.
//!
//! Every refusal is counted by reason in [`IngestMetrics`] and logged with
//! the peer address, at most a few lines per address and reason a minute
//! followed by a summary with the count (`refusal_log`); nothing from a
//! refused connection is stored.

mod connection;
pub mod details;
mod directory;
mod pipeline;
mod refusal_log;
mod reject;
mod server;
pub mod ssh;
mod withdraw;

pub use details::{AgentHealthView, DeviceDetail, DeviceTransport, SessionFacts};
pub use directory::{
    device_detail, device_details, AgentDirectory, CaptureWindow, Credential, DeliveryError, OrgDirectives, Withdrawn,
    REMEMBERED_CAPTURES,
};
pub use reject::{DropReason, IngestMetrics, RejectReason, Transport};
pub use server::{IngestServer, ServerTls};
pub use ssh::{SshError, SshServer};
pub(crate) use withdraw::{crl_serials, withdrawn};
