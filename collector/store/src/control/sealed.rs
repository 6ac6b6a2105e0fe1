//! Sealed row values: the configuration rows of both control stores
//! (registry rows, devices' SSH keys, organisations' decisions, collector
//! state such as API tokens and console accounts) are stored encrypted, so
//! that reading `glimpse.redb` (`strings glimpse.redb`) or the PostgreSQL
//! control plane's tables shows none of them. Both backends use this one
//! implementation and the same logical table names ([`DEVICES`],
//! [`SSH_KEYS`], [`ORG_POLICY`], [`STATE`]) in the associated data.
//!
//! Format: `[u8 version = 1][96-bit random nonce][AES-256-GCM(key, value)
//! || 16-byte tag]`; redb's text tables hold it as lowercase hex,
//! PostgreSQL's `bytea` columns as bytes. The associated
//! data is `b"glimpse-control-row-v1" || table || 0 || key parts joined by
//! 0`, so a sealed value copied to another row or table does not open.
//!
//! The key is the catalog's configuration key ([`crate::keys::Catalog`]):
//! derived from the master key by HKDF when first needed and kept wrapped
//! under it, so a master key rotation rewraps one row instead of resealing
//! every value.
//!
//! Not sealed: table keys (organisation and device names, state names, the
//! segment catalog's keys), which lookups and ordered scans need, the
//! segment catalog's rows, stream sequences, the audit head and rows that
//! already hold only wrapped keys.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use glimpse_common::secret::SecretKey;

use super::seam::ControlError;

const VERSION: u8 = 1;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const AAD_PREFIX: &[u8] = b"glimpse-control-row-v1";

/// The registry's table, in the associated data (key: organisation, device).
pub const DEVICES: &str = "devices";
/// Devices' SSH public keys (key: organisation, device).
pub const SSH_KEYS: &str = "device_ssh_keys";
/// Organisations' decisions (key: organisation).
pub const ORG_POLICY: &str = "org_policy";
/// Collector-wide state entries (key: the entry's name).
pub const STATE: &str = "collector_state";
/// The metadata row recording that every configuration value is sealed.
pub const VALUES_SEALED_ROW: &str = "values-sealed";

/// Seals and opens row values under the configuration key.
pub struct RowSealer {
    key: SecretKey,
}

impl std::fmt::Debug for RowSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RowSealer([redacted])")
    }
}

fn aad(table: &str, key: &[&str]) -> Vec<u8> {
    let mut aad = AAD_PREFIX.to_vec();
    aad.extend_from_slice(table.as_bytes());
    for part in key {
        aad.push(0);
        aad.extend_from_slice(part.as_bytes());
    }
    aad
}

impl RowSealer {
    /// A sealer under `key`.
    pub fn new(key: SecretKey) -> RowSealer {
        RowSealer { key }
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(self.key.expose()))
    }

    /// `value` sealed for the row `key` of `table`.
    pub fn seal(&self, table: &str, key: &[&str], value: &[u8]) -> Result<Vec<u8>, ControlError> {
        let mut nonce = [0u8; NONCE_LEN];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut nonce)
            .map_err(|_| ControlError::Transient("the system random number generator failed".into()))?;
        let sealed = self
            .cipher()
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: value, aad: &aad(table, key) })
            .map_err(|_| ControlError::Permanent(format!("{table} row too large to seal")))?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + sealed.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// The value sealed in `stored` for the row `key` of `table`; an error
    /// naming the row if it does not authenticate (damaged, moved, or
    /// sealed under another key).
    pub fn open(&self, table: &str, key: &[&str], stored: &[u8]) -> Result<Vec<u8>, ControlError> {
        let damaged = || {
            let row: String = key.join("/").chars().take(160).collect();
            ControlError::Permanent(format!("sealed {table} row {row:?} does not open: damaged or moved"))
        };
        if stored.len() < 1 + NONCE_LEN + TAG_LEN || stored[0] != VERSION {
            return Err(damaged());
        }
        let (nonce, sealed) = stored[1..].split_at(NONCE_LEN);
        self.cipher()
            .decrypt(Nonce::from_slice(nonce), Payload { msg: sealed, aad: &aad(table, key) })
            .map_err(|_| damaged())
    }

    /// [`RowSealer::open`] of UTF-8 text (a PostgreSQL `bytea` column
    /// holding a sealed SSH key line or state entry).
    pub fn open_utf8(&self, table: &str, key: &[&str], stored: &[u8]) -> Result<String, ControlError> {
        String::from_utf8(self.open(table, key, stored)?)
            .map_err(|_| ControlError::Permanent(format!("sealed {table} row {:?} is not text", key.join("/"))))
    }

    /// [`RowSealer::seal`] for a text table: hex.
    pub fn seal_text(&self, table: &str, key: &[&str], value: &str) -> Result<String, ControlError> {
        Ok(hex::encode(self.seal(table, key, value.as_bytes())?))
    }

    /// [`RowSealer::open`] for a text table.
    pub fn open_text(&self, table: &str, key: &[&str], stored: &str) -> Result<String, ControlError> {
        let bytes = hex::decode(stored).map_err(|_| {
            ControlError::Permanent(format!("sealed {table} row {:?} is not hex: damaged", key.join("/")))
        })?;
        String::from_utf8(self.open(table, key, &bytes)?)
            .map_err(|_| ControlError::Permanent(format!("sealed {table} row {:?} is not text", key.join("/"))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_in_their_row() {
        let sealer = RowSealer::new(SecretKey::from_bytes([7; 32]));
        let sealed = sealer.seal("org_policy", &["acme"], b"capture consent").unwrap();
        assert!(!sealed.windows(7).any(|w| w == b"capture"));
        assert_eq!(sealer.open("org_policy", &["acme"], &sealed).unwrap(), b"capture consent");
        assert!(sealer.open("org_policy", &["acme2"], &sealed).is_err());
        assert!(sealer.open("devices", &["acme"], &sealed).is_err());
        // The separator keeps ("a", "bc") and ("ab", "c") apart.
        let two = sealer.seal("devices", &["a", "bc"], b"x").unwrap();
        assert!(sealer.open("devices", &["ab", "c"], &two).is_err());
        let other = RowSealer::new(SecretKey::from_bytes([8; 32]));
        assert!(other.open("org_policy", &["acme"], &sealed).is_err());
        for cut in 0..sealed.len() {
            assert!(sealer.open("org_policy", &["acme"], &sealed[..cut]).is_err());
        }
        let text = sealer.seal_text("collector_state", &["api-token:1"], "hash").unwrap();
        assert_eq!(sealer.open_text("collector_state", &["api-token:1"], &text).unwrap(), "hash");
        assert!(sealer.open_text("collector_state", &["api-token:1"], "zz").is_err());
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_stored_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            let sealer = RowSealer::new(SecretKey::from_bytes([7; 32]));
            let _ = sealer.open("devices", &["o", "d"], &bytes);
            let _ = sealer.open_text("devices", &["o", "d"], &String::from_utf8_lossy(&bytes));
        }
    }
}
