//! Getting records to the collector: mutually-authenticated TLS and the
//! shared-key proof (access points) or SSH with a pinned host key
//! (switches and gateways), the [`Link`] that carries a
//! [`glimpse_common::wire::AgentSession`]'s frames (the session owns
//! batches and acknowledgements), and reconnect pacing.

pub mod backoff;
pub mod connection;
#[cfg(feature = "ssh")]
pub mod ssh;

pub use backoff::Backoff;
pub use connection::{client_tls_config, session_config, Connection, Credentials, Link, TransportError};
