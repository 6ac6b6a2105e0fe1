//! The webhook's signature: the receiver checks that a POST came from a
//! collector holding the shared secret, and that it is fresh.
//!
//! ```text
//! X-Glimpse-Timestamp: <unix seconds>
//! X-Glimpse-Signature: v1=<hex HMAC-SHA256(secret, "<unix seconds>." || body)>
//! ```
//!
//! The timestamp is inside the MAC, so a captured request cannot be
//! replayed later with a new time; a receiver refuses timestamps more than
//! a few minutes from its own clock (and may remember alert ids within
//! that window to refuse exact replays). `v1=` names the scheme, so a
//! future one can be sent beside it.

use ring::hmac;

/// The header holding the signature.
pub const SIGNATURE_HEADER: &str = "x-glimpse-signature";
/// The header holding the signing time.
pub const TIMESTAMP_HEADER: &str = "x-glimpse-timestamp";

/// The key of the webhook's HMAC, from the secret file's text (its bytes,
/// as written: a receiver uses the same text).
pub struct WebhookKey(hmac::Key);

impl std::fmt::Debug for WebhookKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookKey(..)")
    }
}

impl WebhookKey {
    /// The key for `secret`.
    pub fn new(secret: &[u8]) -> Self {
        WebhookKey(hmac::Key::new(hmac::HMAC_SHA256, secret))
    }

    /// The `X-Glimpse-Signature` value for `body` sent at `unix_secs`.
    pub fn sign(&self, unix_secs: i64, body: &[u8]) -> String {
        let tag = hmac::sign(&self.0, &message(unix_secs, body));
        format!("v1={}", hex::encode(tag.as_ref()))
    }

    /// Whether `signature` (a header value, possibly with several
    /// comma-separated schemes) is a valid `v1` signature of `body` at
    /// `unix_secs`, and `unix_secs` is within `tolerance_secs` of
    /// `now_secs`. What a receiver does; compared in constant time.
    pub fn verify(&self, signature: &str, unix_secs: i64, body: &[u8], now_secs: i64, tolerance_secs: i64) -> bool {
        if now_secs.abs_diff(unix_secs) > tolerance_secs.unsigned_abs() {
            return false;
        }
        let message = message(unix_secs, body);
        signature
            .split(',')
            .filter_map(|part| part.trim().strip_prefix("v1="))
            .any(|hex_tag| hex::decode(hex_tag).is_ok_and(|tag| hmac::verify(&self.0, &message, &tag).is_ok()))
    }
}

/// What the MAC covers: the decimal timestamp, a dot, the body.
fn message(unix_secs: i64, body: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(body.len() + 24);
    message.extend_from_slice(unix_secs.to_string().as_bytes());
    message.push(b'.');
    message.extend_from_slice(body);
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_known_vector() {
        // printf '%s' '1700000000.{"a":1}' | openssl dgst -sha256 -hmac s3cret
        let key = WebhookKey::new(b"s3cret");
        let expected = {
            let tag =
                ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"s3cret"), b"1700000000.{\"a\":1}");
            format!("v1={}", hex::encode(tag.as_ref()))
        };
        assert_eq!(key.sign(1_700_000_000, br#"{"a":1}"#), expected);
    }

    #[test]
    fn verification_needs_the_secret_the_body_and_a_fresh_time() {
        let key = WebhookKey::new(b"s3cret");
        let body = br#"{"kind":"device-silent"}"#;
        let sig = key.sign(1_000, body);
        assert!(key.verify(&sig, 1_000, body, 1_100, 300));
        assert!(key.verify(&format!("v0=00, {sig}"), 1_000, body, 1_000, 300), "other schemes are ignored");
        assert!(!key.verify(&sig, 1_000, br#"{"kind":"device-silent "}"#, 1_000, 300), "body changed");
        assert!(!key.verify(&sig, 1_001, body, 1_001, 300), "timestamp changed");
        assert!(!key.verify(&sig, 1_000, body, 1_301, 300), "stale");
        assert!(!key.verify(&sig, 1_000, body, 699, 300), "from the future");
        assert!(!WebhookKey::new(b"other").verify(&sig, 1_000, body, 1_000, 300), "another secret");
        assert!(!key.verify("v1=zz", 1_000, body, 1_000, 300));
        assert!(!key.verify("", 1_000, body, 1_000, 300));
        assert!(!key.verify(&sig, i64::MIN, body, i64::MAX, 300), "no overflow");
    }
}
