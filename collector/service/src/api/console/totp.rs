//! Time-based one-time passwords (RFC 6238 over RFC 4226): HMAC-SHA1,
//! 30-second steps counted from the Unix epoch, 6 digits, what every
//! authenticator app makes by default.
//!
//! HMAC-SHA1 comes from `ring` (already the collector's crypto library;
//! SHA-1's collision weakness does not touch HMAC, and RFC 6238 apps
//! expect it). The code is a few lines of dynamic truncation, so no TOTP
//! crate is added (see docs/DEPENDENCIES.md).
//!
//! Time is the caller's (the collector's injected clock), so tests move a
//! `ManualClock` instead of sleeping. A code is accepted for the step
//! before and after the current one (clock drift), and a step once
//! accepted is never accepted again for that account ([`verify`] takes the
//! last accepted step).

use subtle::ConstantTimeEq;

/// Seconds per step.
pub const STEP_SECS: i64 = 30;
/// Digits per code.
pub const DIGITS: usize = 6;
/// Steps either side of now that are accepted.
pub const DRIFT_STEPS: i64 = 1;
/// The issuer named in enrolment URIs (what the authenticator app shows).
pub const ISSUER: &str = "Glimpse";

/// The RFC 4226 code of `key` for counter `step`.
pub fn code_at(key: &[u8], step: u64) -> u32 {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key);
    let mac = ring::hmac::sign(&key, &step.to_be_bytes());
    let mac = mac.as_ref();
    // Dynamic truncation: the low nibble of the last byte picks 4 bytes.
    let offset = usize::from(mac[mac.len() - 1] & 0x0f);
    let word = u32::from_be_bytes([mac[offset] & 0x7f, mac[offset + 1], mac[offset + 2], mac[offset + 3]]);
    word % 10u32.pow(DIGITS as u32)
}

/// The code as the app shows it: zero-padded.
pub fn format_code(code: u32) -> String {
    format!("{code:0width$}", width = DIGITS)
}

/// The step `now_ms` falls in.
pub fn step_of(now_ms: i64) -> i64 {
    now_ms.div_euclid(1000).div_euclid(STEP_SECS)
}

/// The step whose code `code` is, within [`DRIFT_STEPS`] of `now_ms` and
/// after `last_step` (replay protection), or `None`. Anything but exactly
/// [`DIGITS`] ASCII digits (spaces allowed, as apps group them) fails.
pub fn verify(key: &[u8], code: &str, now_ms: i64, last_step: Option<i64>) -> Option<i64> {
    let digits: String = code.chars().filter(|c| *c != ' ').take(DIGITS + 1).collect();
    if digits.len() != DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let now = step_of(now_ms);
    let mut matched = None;
    // Every candidate is computed and compared in constant time, so the
    // timing does not say which step matched.
    for step in (now - DRIFT_STEPS)..=(now + DRIFT_STEPS) {
        if step < 0 || last_step.is_some_and(|last| step <= last) {
            continue;
        }
        let expected = format_code(code_at(key, step as u64));
        if bool::from(expected.as_bytes().ct_eq(digits.as_bytes())) && matched.is_none() {
            matched = Some(step);
        }
    }
    matched
}

/// RFC 4648 base32 without padding, as `otpauth://` URIs carry secrets.
pub fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &byte in bytes {
        buffer = (buffer << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((buffer >> bits) & 31) as usize]));
        }
        buffer &= (1 << bits) - 1;
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((buffer << (5 - bits)) & 31) as usize]));
    }
    out
}

fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The enrolment URI an authenticator app reads (Key Uri Format):
/// `otpauth://totp/Glimpse:<account>?secret=…&issuer=Glimpse&…`.
pub fn otpauth_uri(account: &str, secret_base32: &str) -> String {
    format!(
        "otpauth://totp/{issuer}:{account}?secret={secret_base32}&issuer={issuer}&algorithm=SHA1&digits={DIGITS}\
         &period={STEP_SECS}",
        issuer = percent_encode(ISSUER),
        account = percent_encode(account),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 appendix B, SHA-1 column (the 8-digit codes' last 6
    /// digits are the 6-digit codes).
    #[test]
    fn rfc_6238_test_vectors() {
        let key = b"12345678901234567890";
        for (secs, eight) in [
            (59i64, 94287082u32),
            (1111111109, 7081804),
            (1111111111, 14050471),
            (1234567890, 89005924),
            (2000000000, 69279037),
            (20000000000, 65353130),
        ] {
            let step = step_of(secs * 1000);
            assert_eq!(code_at(key, step as u64), eight % 1_000_000, "T = {secs}");
        }
    }

    /// RFC 4226 appendix D: the HOTP values of counters 0 to 9.
    #[test]
    fn rfc_4226_test_vectors() {
        let key = b"12345678901234567890";
        let expected = [755224, 287082, 359152, 969429, 338314, 254676, 287922, 162583, 399871, 520489];
        for (counter, code) in expected.iter().enumerate() {
            assert_eq!(code_at(key, counter as u64), *code);
        }
    }

    #[test]
    fn codes_are_accepted_one_step_either_side_and_never_twice() {
        let key = b"12345678901234567890";
        let now = 1_111_111_111_000;
        let step = step_of(now);
        let code = format_code(code_at(key, step as u64));
        assert_eq!(verify(key, &code, now, None), Some(step));
        assert_eq!(verify(key, &code, now, Some(step)), None, "the same step is refused once used");
        let before = format_code(code_at(key, (step - 1) as u64));
        let after = format_code(code_at(key, (step + 1) as u64));
        assert_eq!(verify(key, &before, now, None), Some(step - 1));
        assert_eq!(verify(key, &after, now, None), Some(step + 1));
        assert_eq!(verify(key, &before, now, Some(step)), None, "an older step after a newer one is refused");
        let far = format_code(code_at(key, (step + 2) as u64));
        assert_eq!(verify(key, &far, now, None), None);
        let spaced = format!("{} {}", &code[..3], &code[3..]);
        assert_eq!(verify(key, &spaced, now, None), Some(step));
        for bad in ["", "12345", "1234567", "abcdef", "１２３４５６", &format!("{code}0")] {
            assert_eq!(verify(key, bad, now, None), None, "{bad:?}");
        }
    }

    #[test]
    fn base32_and_the_uri() {
        // RFC 4648 section 10, padding removed.
        for (plain, coded) in [
            ("", ""),
            ("f", "MY"),
            ("fo", "MZXQ"),
            ("foo", "MZXW6"),
            ("foob", "MZXW6YQ"),
            ("fooba", "MZXW6YTB"),
            ("foobar", "MZXW6YTBOI"),
        ] {
            assert_eq!(base32(plain.as_bytes()), coded);
        }
        assert_eq!(base32(&[0u8; 32]).len(), 52);
        let uri = otpauth_uri("ada@acme", "MZXW6");
        assert!(uri.starts_with("otpauth://totp/Glimpse:ada%40acme?secret=MZXW6&issuer=Glimpse"), "{uri}");
        assert!(uri.contains("digits=6") && uri.contains("period=30"), "{uri}");
    }
}
