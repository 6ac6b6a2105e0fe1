//! The per-device shared-key proof.
//!
//! The product promises that an access point authenticates with a
//! certificate *and* a shared key made at manufacturing. The certificate is
//! checked by TLS. The shared key is proven, never sent: after the handshake
//! both ends derive 32 bytes from the session with the TLS exporter
//! (RFC 5705 / RFC 8446 §7.5) and the agent sends
//!
//! ```text
//! HMAC-SHA256(shared_key, "glimpse-device-auth-v1" || exporter || identity-uri)
//! ```
//!
//! The exporter output is unique to the TLS session, so a proof cannot be
//! replayed on another connection, and binding the identity URI keeps a proof
//! for one device from vouching for another. A stolen certificate without the
//! key, or the key without the certificate's private key, gets nowhere.

use ring::hmac;

use crate::identity::DeviceIdentity;
use crate::secret::SecretKey;

/// The TLS exporter label both ends use.
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-glimpse-device-auth-v1";
/// Bytes taken from the exporter.
pub const EXPORTER_LEN: usize = 32;
/// Length of a proof.
pub const PROOF_LEN: usize = 32;

const DOMAIN: &[u8] = b"glimpse-device-auth-v1";

/// Computes the proof a device sends for `identity` on a session whose
/// exporter produced `exported`.
pub fn device_proof(key: &SecretKey, exported: &[u8; EXPORTER_LEN], identity: &DeviceIdentity) -> [u8; PROOF_LEN] {
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key.expose()), &message(exported, identity));
    let mut out = [0u8; PROOF_LEN];
    out.copy_from_slice(tag.as_ref());
    out
}

/// Checks a device's proof in constant time.
pub fn verify_device_proof(
    key: &SecretKey,
    exported: &[u8; EXPORTER_LEN],
    identity: &DeviceIdentity,
    proof: &[u8],
) -> bool {
    hmac::verify(&hmac::Key::new(hmac::HMAC_SHA256, key.expose()), &message(exported, identity), proof).is_ok()
}

fn message(exported: &[u8; EXPORTER_LEN], identity: &DeviceIdentity) -> Vec<u8> {
    let uri = identity.to_uri();
    let mut msg = Vec::with_capacity(DOMAIN.len() + EXPORTER_LEN + uri.len());
    msg.extend_from_slice(DOMAIN);
    msg.extend_from_slice(exported);
    msg.extend_from_slice(uri.as_bytes());
    msg
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{DeviceId, DeviceKind, OrgId};

    fn identity(device: &str) -> DeviceIdentity {
        DeviceIdentity {
            org: OrgId::new("acme").unwrap(),
            device: DeviceId::new(device).unwrap(),
            kind: DeviceKind::Ap,
        }
    }

    #[test]
    fn proof_binds_key_session_and_identity() {
        let key = SecretKey::generate().unwrap();
        let session = [7u8; EXPORTER_LEN];
        let proof = device_proof(&key, &session, &identity("ap-1"));
        assert!(verify_device_proof(&key, &session, &identity("ap-1"), &proof));
        assert!(!verify_device_proof(&SecretKey::generate().unwrap(), &session, &identity("ap-1"), &proof));
        assert!(!verify_device_proof(&key, &[8u8; EXPORTER_LEN], &identity("ap-1"), &proof));
        assert!(!verify_device_proof(&key, &session, &identity("ap-2"), &proof));
        assert!(!verify_device_proof(&key, &session, &identity("ap-1"), &proof[..31]));
    }
}
