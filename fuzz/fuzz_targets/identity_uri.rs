//! Arbitrary text through the certificate identity URI parsers, as the
//! collector reads them from a client certificate's subject alternative name.
//! Any accepted identity must round-trip through `to_uri`/`from_uri`, and
//! every name it carries must be a valid, traversal-free name.
#![no_main]

use glimpse_common::identity::{AdminIdentity, DeviceIdentity, MAX_NAME_LEN};
use libfuzzer_sys::fuzz_target;

fn check_name(name: &str) {
    assert!(!name.is_empty() && name.len() <= MAX_NAME_LEN, "{name:?}");
    assert!(!name.starts_with('.'), "{name:?}");
    assert!(
        name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')),
        "{name:?}"
    );
}

fuzz_target!(|uri: &str| {
    if let Ok(device) = DeviceIdentity::from_uri(uri) {
        check_name(device.org.as_str());
        check_name(device.device.as_str());
        let written = device.to_uri();
        assert_eq!(written, uri, "device URI is not canonical");
        assert_eq!(DeviceIdentity::from_uri(&written).as_ref(), Ok(&device));
    }
    if let Ok(admin) = AdminIdentity::from_uri(uri) {
        check_name(admin.name.as_str());
        if let Some(org) = &admin.org {
            check_name(org.as_str());
        }
        let written = admin.to_uri();
        assert_eq!(written, uri, "admin URI is not canonical");
        assert_eq!(AdminIdentity::from_uri(&written).as_ref(), Ok(&admin));
    }
});
