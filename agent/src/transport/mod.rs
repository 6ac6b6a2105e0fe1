//! Getting records to the collector: mutually-authenticated TLS, the
//! shared-key proof, batches and acknowledgements, and reconnect pacing.

pub mod backoff;
pub mod connection;

pub use backoff::Backoff;
pub use connection::{client_tls_config, Connection, TransportError};
