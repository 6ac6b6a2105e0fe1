//! The console's files, compiled into the binary from
//! `collector/service/console/` (no CDN, no external font or script), and
//! served under `/console/` with headers that keep the pages to their own
//! origin: `Content-Security-Policy: default-src 'self'` and no inline
//! script, `frame-ancestors 'none'`, no referrer.
//!
//! Adding a file: put it in `collector/service/console/` and add a line to
//! [`ASSETS`]; a unit test fails when a file there is not listed.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// One embedded file.
#[derive(Debug)]
pub struct Asset {
    /// Path under `/console/`.
    pub path: &'static str,
    /// Its media type.
    pub content_type: &'static str,
    /// Its bytes.
    pub bytes: &'static [u8],
}

macro_rules! asset {
    ($path:literal, $type:literal) => {
        Asset { path: $path, content_type: $type, bytes: include_bytes!(concat!("../../../console/", $path)) }
    };
}

/// Every file the console serves.
pub static ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("app.css", "text/css; charset=utf-8"),
    asset!("app.js", "text/javascript; charset=utf-8"),
    asset!("core.js", "text/javascript; charset=utf-8"),
    asset!("overview.js", "text/javascript; charset=utf-8"),
    asset!("devices.js", "text/javascript; charset=utf-8"),
    asset!("capture.js", "text/javascript; charset=utf-8"),
    asset!("support.js", "text/javascript; charset=utf-8"),
    asset!("audit.js", "text/javascript; charset=utf-8"),
    asset!("tokens.js", "text/javascript; charset=utf-8"),
    asset!("rights.js", "text/javascript; charset=utf-8"),
    asset!("chart.js", "text/javascript; charset=utf-8"),
    asset!("orgs.js", "text/javascript; charset=utf-8"),
    asset!("operator.js", "text/javascript; charset=utf-8"),
    asset!("accounts.js", "text/javascript; charset=utf-8"),
    asset!("account.js", "text/javascript; charset=utf-8"),
];

/// The policy every console answer carries: only this origin, no inline
/// script or style, no framing, no plugins.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; \
    form-action 'self'; frame-ancestors 'none'";

/// Adds the console's security headers to `response`.
pub fn harden(response: &mut Response) {
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert("cross-origin-opener-policy", HeaderValue::from_static("same-origin"));
    headers.insert("cross-origin-resource-policy", HeaderValue::from_static("same-origin"));
    headers.insert("permissions-policy", HeaderValue::from_static("camera=(), microphone=(), geolocation=()"));
}

/// The file at `path` (under `/console/`; empty is the index page).
pub fn serve(path: &str) -> Response {
    let path = if path.is_empty() { "index.html" } else { path };
    let Some(asset) = ASSETS.iter().find(|a| a.path == path) else {
        return (StatusCode::NOT_FOUND, "no such console file").into_response();
    };
    let mut response = ([(header::CONTENT_TYPE, asset.content_type), (header::CACHE_CONTROL, "no-cache")], asset.bytes)
        .into_response();
    harden(&mut response);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_of_the_console_directory_is_embedded() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/console");
        let mut missing = Vec::new();
        let mut stack = vec![std::path::PathBuf::from(dir)];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(&d).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                    continue;
                }
                let rel = path.strip_prefix(dir).unwrap().to_string_lossy().replace('\\', "/");
                if !ASSETS.iter().any(|a| a.path == rel) {
                    missing.push(rel);
                }
            }
        }
        assert!(missing.is_empty(), "add these to console::assets::ASSETS: {missing:?}");
    }

    /// The data-rights page offers every field a device can leave out.
    #[test]
    fn the_data_rights_page_lists_every_metadata_field() {
        let page = ASSETS.iter().find(|a| a.path == "rights.js").expect("rights.js embedded");
        let text = String::from_utf8_lossy(page.bytes);
        for field in glimpse_common::minimise::MetadataField::ALL {
            assert!(text.contains(&format!("[\"{}\",", field.as_str())), "rights.js lacks {}", field.as_str());
        }
    }

    #[test]
    fn no_asset_names_another_origin() {
        for asset in ASSETS {
            // The SVG namespace is an identifier, never fetched.
            let text = String::from_utf8_lossy(asset.bytes).replace("http://www.w3.org/", "");
            for needle in ["http://", "https://", "//cdn", "@import"] {
                let hits = text.matches(needle).count();
                assert_eq!(hits, 0, "{} mentions {needle}", asset.path);
            }
        }
    }
}
