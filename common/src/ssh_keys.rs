//! SSH keys for switches and gateways, which reach the collector over SSH
//! with public-key authentication instead of TLS: which keys are accepted,
//! their fingerprints, and a fresh Ed25519 pair. The PKI tool issues with
//! these, the collector checks with the same rules.
//!
//! Keys are parsed and written with the `ssh-key` crate that russh itself
//! verifies signatures with (`russh::keys` re-exports it), so a key the PKI tool accepts is a
//! key the collector can check. Text in, keys out: no files. Only Ed25519 and ECDSA (P-256, P-384) keys
//! are accepted: RSA would need a 3072-bit minimum check and SHA-2
//! signature negotiation for no gain on a device we provision ourselves,
//! and DSA is broken.

use ssh_key::private::Ed25519Keypair;
use ssh_key::LineEnding;
use ssh_key::{Algorithm, EcdsaCurve, HashAlg, PrivateKey, PublicKey};
use zeroize::Zeroizing;

/// An SSH key was refused or could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SshKeyError {
    /// A public key line was refused, with the reason.
    #[error("SSH public key: {0}")]
    Refused(String),
    /// Key generation or encoding failed.
    #[error("cannot generate an SSH key: {0}")]
    Generation(String),
}

/// Longest public key line accepted, in bytes. An ECDSA P-384 key with a
/// long comment is well under 1 KiB.
pub const MAX_PUBLIC_KEY_LEN: usize = 4096;

/// A freshly generated device key pair in OpenSSH formats.
pub struct GeneratedSshKey {
    /// The private key, `-----BEGIN OPENSSH PRIVATE KEY-----`, wiped on drop.
    pub private_openssh: Zeroizing<String>,
    /// The public key line, `ssh-ed25519 AAAA… comment`.
    pub public_openssh: String,
}

impl std::fmt::Debug for GeneratedSshKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeneratedSshKey").field("public_openssh", &self.public_openssh).finish_non_exhaustive()
    }
}

/// Generates an Ed25519 key pair from the system RNG (through ring, the
/// same source as every other key this tool makes).
pub fn generate_ed25519(comment: &str) -> Result<GeneratedSshKey, SshKeyError> {
    let failed = SshKeyError::Generation;
    let mut seed = Zeroizing::new([0u8; 32]);
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), seed.as_mut())
        .map_err(|_| failed("the system random number generator failed".into()))?;
    let mut key = PrivateKey::from(Ed25519Keypair::from_seed(&seed));
    key.set_comment(comment);
    let private_openssh = key.to_openssh(LineEnding::LF).map_err(|e| SshKeyError::Generation(e.to_string()))?;
    let public_openssh = key.public_key().to_openssh().map_err(|e| SshKeyError::Generation(e.to_string()))?;
    Ok(GeneratedSshKey { private_openssh, public_openssh })
}

/// Parses a device's public key line (`ssh-ed25519 AAAA… comment`, as in
/// `id_ed25519.pub` or `authorized_keys`) and checks that its algorithm is
/// one the collector accepts.
pub fn parse_device_public_key(text: &str) -> Result<PublicKey, SshKeyError> {
    let bad = SshKeyError::Refused;
    let line = text.trim();
    if line.len() > MAX_PUBLIC_KEY_LEN {
        return Err(bad(format!("longer than {MAX_PUBLIC_KEY_LEN} bytes")));
    }
    if line.contains('\n') {
        return Err(bad("expected exactly one key line".into()));
    }
    let key = PublicKey::from_openssh(line).map_err(|e| bad(format!("not an OpenSSH public key: {e}")))?;
    check_algorithm(&key.algorithm()).map_err(bad)?;
    Ok(key)
}

/// Whether a key algorithm is allowed for device authentication.
pub fn check_algorithm(algorithm: &Algorithm) -> Result<(), String> {
    match algorithm {
        Algorithm::Ed25519 | Algorithm::Ecdsa { curve: EcdsaCurve::NistP256 | EcdsaCurve::NistP384 } => Ok(()),
        other => Err(format!(
            "{} keys are not accepted; use Ed25519 (ssh-keygen -t ed25519) or ECDSA P-256/P-384",
            other.as_str()
        )),
    }
}

/// The key's SHA-256 fingerprint as OpenSSH prints it (`SHA256:…`).
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_round_trip_and_are_accepted() {
        let key = generate_ed25519("acme/sw-1").unwrap();
        let private = PrivateKey::from_openssh(key.private_openssh.as_bytes()).unwrap();
        let public = parse_device_public_key(&key.public_openssh).unwrap();
        assert_eq!(private.public_key().key_data(), public.key_data());
        assert!(key.public_openssh.starts_with("ssh-ed25519 ") && key.public_openssh.ends_with(" acme/sw-1"));
        assert!(fingerprint(&public).starts_with("SHA256:"));
        // Two keys are never the same.
        assert_ne!(generate_ed25519("x").unwrap().public_openssh, generate_ed25519("x").unwrap().public_openssh);
        assert!(!format!("{key:?}").contains("PRIVATE"));
    }

    #[test]
    fn weak_foreign_and_malformed_keys_are_refused_with_a_reason() {
        // A real 1024-bit DSA key from ssh-keygen and an RSA key: refused by algorithm.
        let dsa = "ssh-dss AAAAB3NzaC1kc3MAAACBAP1/U4EddRIpUt9KnC7s5Of2EbdSPO9EAMMeP4C2USZpRV1AIlH7WT2NWPq/xfW6MPbLm1Vs14E7gB00b/JmYLdrmVClpJ+f6AR7ECLCT7up1/63xhv4O1fnxqimFQ8E+4P208UewwI1VBNaFpEy9nXzrith1yrv8iIDGZ3RSAHHAAAAFQCXYFCPFSMLzLKSuYKi64QL8Fgc9QAAAIEA9+GghdabPd7LvKtcNrhXuXmUr7v6OuqC+VdMCz0HgmdRWVeOutRZT+ZxBxCBgLRJFnEj6EwoFhO3zwkyjMim4TwWeotUfI0o4KOuHiuzpnWRbqN/C/ohNWLx+2J6ASQ7zKTxvqhRkImog9/hWuWfBpKLZl6Ae1UlZAFMO/7PSSoAAACBAJOMm1sCdZPv2dSSWWWLWxHEFNv8KSNyFtYXsvoL3mmM7O3LH3v7BmBOU6xMHqrwjPHGrzFN5K8EKzdU4dVn3yB7CMzfbpqEz3d/cx12Q5XILFEDnXRGl3VHh6rmixnSRAbRsiFphvJXRNJLxvGgIsN5C9ZyOigSLVa2T7CWxBQp test";
        let err = parse_device_public_key(dsa).unwrap_err().to_string();
        assert!(err.contains("not accepted") || err.contains("not an OpenSSH"), "{err}");
        for (text, expect) in [
            ("", "not an OpenSSH public key"),
            ("ssh-ed25519 !!!", "not an OpenSSH public key"),
            ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI", "not an OpenSSH public key"),
        ] {
            let err = parse_device_public_key(text).unwrap_err().to_string();
            assert!(err.contains(expect), "{text:?}: {err}");
        }
        let two = format!("{}\n{}", generate_ed25519("a").unwrap().public_openssh, "ssh-ed25519 AAAA");
        assert!(parse_device_public_key(&two).unwrap_err().to_string().contains("one key line"));
        let long = format!("ssh-ed25519 {}", "A".repeat(MAX_PUBLIC_KEY_LEN));
        assert!(parse_device_public_key(&long).unwrap_err().to_string().contains("longer than"));
        assert!(check_algorithm(&Algorithm::Rsa { hash: None }).unwrap_err().contains("ssh-rsa keys are not accepted"));
    }

    proptest::proptest! {
        /// Registration files and `--ssh-key` are untrusted: any text gives
        /// a key or a reasoned error, never a panic; and any mutation of a
        /// valid key line is either refused or still a well-formed,
        /// allowed key.
        #[test]
        fn arbitrary_key_text_never_panics(text in ".{0,600}") {
            let _ = parse_device_public_key(&text);
        }

        #[test]
        fn mutated_key_lines_are_refused_or_still_allowed(position in 0usize..200, byte in proptest::prelude::any::<u8>()) {
            let line = generate_ed25519("fuzz").unwrap().public_openssh.into_bytes();
            let mut mutated = line.clone();
            let at = position % mutated.len();
            mutated[at] = byte;
            if let Ok(text) = std::str::from_utf8(&mutated) {
                if let Ok(key) = parse_device_public_key(text) {
                    proptest::prop_assert!(check_algorithm(&key.algorithm()).is_ok());
                }
            }
        }
    }
}
