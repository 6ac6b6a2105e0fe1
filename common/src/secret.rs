//! 256-bit secrets: per-device shared keys, organisation data keys, the
//! collector's master key.
//!
//! The bytes are wiped when the value is dropped, never printed by `Debug`,
//! and compared in constant time.

use std::fmt;

use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Length of every Glimpse secret key, in bytes.
pub const KEY_LEN: usize = 32;

/// A secret key file or string was not 32 bytes of hex.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SecretKeyError {
    /// The text was not hexadecimal.
    #[error("key is not hexadecimal")]
    NotHex,
    /// The key had the wrong length.
    #[error("key is {0} bytes, expected {KEY_LEN} (64 hex digits)")]
    WrongLength(usize),
}

/// A 256-bit secret key, wiped on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SecretKey([u8; KEY_LEN]);

impl SecretKey {
    /// Wraps raw key bytes.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// A fresh key from the operating system's CSPRNG.
    pub fn generate() -> Result<Self, ring::error::Unspecified> {
        let mut bytes = [0u8; KEY_LEN];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)?;
        Ok(Self(bytes))
    }

    /// Parses 64 hex digits; surrounding whitespace (a trailing newline in a
    /// key file) is ignored.
    pub fn from_hex(text: &str) -> Result<Self, SecretKeyError> {
        let text = text.trim();
        if text.len() != KEY_LEN * 2 {
            return Err(if text.bytes().all(|b| b.is_ascii_hexdigit()) {
                SecretKeyError::WrongLength(text.len() / 2)
            } else {
                SecretKeyError::NotHex
            });
        }
        let mut bytes = [0u8; KEY_LEN];
        hex::decode_to_slice(text, &mut bytes).map_err(|_| SecretKeyError::NotHex)?;
        Ok(Self(bytes))
    }

    /// The key as 64 lowercase hex digits, for writing a key file. The
    /// returned string is wiped when dropped.
    pub fn to_hex(&self) -> zeroize::Zeroizing<String> {
        zeroize::Zeroizing::new(hex::encode(self.0))
    }

    /// The raw key bytes, for handing to a cipher.
    pub fn expose(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl PartialEq for SecretKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for SecretKey {}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_errors() {
        let key = SecretKey::generate().unwrap();
        assert_eq!(SecretKey::from_hex(&format!("{}\n", key.to_hex().as_str())).unwrap(), key);
        assert_eq!(SecretKey::from_hex("abcd"), Err(SecretKeyError::WrongLength(2)));
        assert_eq!(SecretKey::from_hex(&"zz".repeat(32)), Err(SecretKeyError::NotHex));
        assert_eq!(format!("{key:?}"), "SecretKey([redacted])");
    }
}
