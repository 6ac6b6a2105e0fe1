//! Glimpse's sans-IO core, shared by the agent, the collector and the tools.
//!
//! What is here: the wire protocol (length-prefixed frames carrying
//! `postcard`-encoded messages, see [`wire`]), the typed records an agent
//! sends ([`record`]), device and organisation identities as they appear in
//! certificates ([`identity`]; read out of certificates, SSH keys and PKI
//! records with the `pki` feature), the per-device shared-key proof bound to a TLS
//! session ([`auth`]), size-bounded containers for untrusted input
//! ([`bounded`]), an injectable clock ([`clock`]) and the TLS policy both ends
//! agree on ([`tls`]).
//!
//! What is deliberately not here: sockets, files, threads or timers. Bytes and
//! the current time go in; bytes, events and decisions come out, so every
//! parser and state machine is unit-tested and fuzzed without a network.

pub mod auth;
pub mod bounded;
pub mod capture;
#[cfg(feature = "pki")]
pub mod certificate;
pub mod clock;
pub mod config;
pub mod identity;
pub mod minimise;
pub mod net;
pub mod permissions;
pub mod record;
#[cfg(feature = "pki")]
pub mod registration;
pub mod secret;
#[cfg(feature = "pki")]
pub mod ssh_keys;
pub mod tls;
pub mod wire;
