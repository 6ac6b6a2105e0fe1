//! Strict little parsers for the fields of kernel text files.
//!
//! Rust's `str::parse` accepts a leading `+`; the kernel never prints one, so
//! these accept only the digits it does print.

use glimpse_common::record::MAX_IFNAME;

use super::ProbeError;

/// A decimal `u64`, digits only.
pub(super) fn dec_u64(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// A hexadecimal `u32` of at most eight digits.
pub(super) fn hex_u32(text: &str) -> Option<u32> {
    if text.is_empty() || text.len() > 8 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(text, 16).ok()
}

/// A decimal `u32`, digits only.
pub(super) fn dec_u32(text: &str) -> Option<u32> {
    dec_u64(text).and_then(|v| u32::try_from(v).ok())
}

/// A decimal `i64` with an optional leading `-`.
pub(super) fn dec_i64(text: &str) -> Option<i64> {
    match text.strip_prefix('-') {
        Some(digits) => dec_u64(digits).and_then(|v| i64::try_from(v).ok()).map(|v| -v),
        None => dec_u64(text).and_then(|v| i64::try_from(v).ok()),
    }
}

/// A decimal number with an optional fraction (`866.7`), scaled by
/// 10^`scale` and rounded down: `fixed("866.7", 3) == Some(866_700)`.
pub(super) fn fixed(text: &str, scale: u32) -> Option<u64> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let whole = dec_u64(whole)?;
    if !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut value = whole.checked_mul(10u64.checked_pow(scale)?)?;
    for (i, digit) in fraction.bytes().take(scale as usize).enumerate() {
        let place = 10u64.pow(scale - 1 - i as u32);
        value = value.checked_add(u64::from(digit - b'0') * place)?;
    }
    Some(value)
}

/// `text` cut to at most `max` bytes on a character boundary.
pub(super) fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// A value for an error message: the first few characters, never the whole
/// (possibly huge) untrusted text.
pub(super) fn excerpt(text: &str) -> String {
    text.chars().take(32).collect()
}

/// A [`ProbeError::BadValue`] quoting `value`.
pub(super) fn bad(line: usize, field: &'static str, value: &str) -> ProbeError {
    ProbeError::BadValue { line, field, value: excerpt(value) }
}

/// Whether `name` can be a Linux interface name: what `dev_valid_name`
/// accepts (no `/`, `:` or whitespace, not `.` or `..`), within our bound.
/// Only such names are ever joined onto a path.
pub(super) fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_IFNAME
        && name != "."
        && name != ".."
        && !name.chars().any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
}

/// Whether `text` is a printable one-line value.
pub(super) fn printable(text: &str) -> bool {
    !text.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_strict() {
        assert_eq!(dec_u64("42"), Some(42));
        for bad in ["", "+1", "-1", " 1", "1a", "18446744073709551616"] {
            assert_eq!(dec_u64(bad), None, "{bad:?}");
        }
        assert_eq!(hex_u32("00FFFFFF"), Some(0x00ff_ffff));
        for bad in ["", "+1", "0x1", "123456789", "g"] {
            assert_eq!(hex_u32(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn fixed_point_and_signed() {
        assert_eq!(fixed("866.7", 3), Some(866_700));
        assert_eq!(fixed("54", 3), Some(54_000));
        assert_eq!(fixed("23.00", 2), Some(2300));
        assert_eq!(fixed("1.23456", 2), Some(123));
        for bad in ["", ".5", "1.x", "-1", "99999999999999999999"] {
            assert_eq!(fixed(bad, 3), None, "{bad:?}");
        }
        assert_eq!((dec_i64("-48"), dec_i64("7"), dec_i64("--1"), dec_i64("-")), (Some(-48), Some(7), None, None));
        assert_eq!(cut("héllo", 2), "h");
    }

    #[test]
    fn interface_names() {
        for good in ["lo", "eth0", "br-lan", "wlan0-1", "veth9f3c@if4"] {
            assert!(valid_ifname(good), "{good:?}");
        }
        for bad in ["", ".", "..", "a/b", "eth0:1", "a b", "a\nb", &"x".repeat(33)] {
            assert!(!valid_ifname(bad), "{bad:?}");
        }
    }
}
