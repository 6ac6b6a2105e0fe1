//! SSH keys for switches and gateways: the rules (accepted algorithms,
//! fingerprints, generation) live in `glimpse_common::ssh_keys`, shared with
//! the collector, and are re-exported here for the PKI tool's callers.

pub use glimpse_common::ssh_keys::{
    check_algorithm, fingerprint, generate_ed25519, parse_device_public_key, GeneratedSshKey, MAX_PUBLIC_KEY_LEN,
};
