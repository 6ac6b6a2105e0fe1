//! Getting records to the collector: mutually-authenticated TLS and the
//! shared-key proof (access points) or SSH with a pinned host key
//! (switches and gateways), the [`Link`] that carries a
//! [`glimpse_common::wire::AgentSession`]'s frames (the session owns
//! batches and acknowledgements), and which collector to connect to and
//! when: resolving the configured addresses afresh ([`mod@resolve`]), failing
//! over between them and pacing reconnects ([`failover`], [`backoff`]).

pub mod backoff;
pub mod connection;
pub mod failover;
pub mod resolve;
#[cfg(feature = "ssh")]
pub mod ssh;

pub use backoff::Backoff;
pub use connection::{client_tls_config, describe, session_config, Connection, Credentials, Link, TransportError};
pub use failover::{Candidate, Failover, StorageRefusal};
pub use resolve::{resolve, Resolved};
