//! object_store's errors as [`SegmentError`]s that say whether to retry.
//!
//! Transient: timeouts, refused or reset connections, 5xx and throttling
//! answers (object_store retries those itself first, within the request
//! timeout), and a request cut short by our own deadline. Permanent: the
//! credentials refused (401, 403), a missing bucket (404 where an object
//! cannot be missing), other 4xx answers, bad paths, unsupported requests.
//! A permanent error misread as transient only makes an agent resend
//! later; the reverse would make it give up, so anything unrecognised is
//! transient.
//!
//! Messages never hold credentials: object_store's errors name the method
//! and URL (no query string is signed into our URLs: requests are signed
//! in headers) and the answer's body.

use std::error::Error as StdError;

use glimpse_store::store::SegmentError;
use object_store::client::HttpError;

/// Longest message kept from an error (a server's answer body can be long).
const MAX_MESSAGE_LEN: usize = 512;

/// A remote failure of `action` on `location`.
pub(crate) fn remote(action: &'static str, location: String, error: &object_store::Error) -> SegmentError {
    SegmentError::Remote { action, location, transient: is_transient(error), message: message(error) }
}

/// A failure of ours (a deadline, uploads backed up, a refused object).
pub(crate) fn local(action: &'static str, location: String, transient: bool, message: String) -> SegmentError {
    SegmentError::Remote { action, location, transient, message }
}

/// The error and its causes, on one line, bounded.
fn message(error: &object_store::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        let more = e.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = e.source();
    }
    if text.len() > MAX_MESSAGE_LEN {
        let mut end = MAX_MESSAGE_LEN;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str("...");
    }
    text.replace(['\n', '\r'], " ")
}

/// Whether retrying `error` later may succeed (see the module header).
pub(crate) fn is_transient(error: &object_store::Error) -> bool {
    use object_store::Error as E;
    match error {
        E::Generic { source, .. } => generic_is_transient(source.as_ref()),
        E::JoinError { .. } => true,
        E::NotFound { .. }
        | E::InvalidPath { .. }
        | E::NotSupported { .. }
        | E::AlreadyExists { .. }
        | E::Precondition { .. }
        | E::NotModified { .. }
        | E::NotImplemented { .. }
        | E::PermissionDenied { .. }
        | E::Unauthenticated { .. }
        | E::UnknownConfigurationKey { .. } => false,
        _ => true,
    }
}

/// A generic error is transient unless the server answered with a client
/// error (4xx other than 408 and 429): object_store's retry error, which
/// carries the status, is private, so its status is read from its message
/// ("... status code: 400 Bad Request ...").
fn generic_is_transient(source: &(dyn StdError + 'static)) -> bool {
    let mut cause: Option<&(dyn StdError + 'static)> = Some(source);
    while let Some(e) = cause {
        // Every kind of HTTP failure (connect, request, timeout, an
        // interrupted or undecodable answer) is of the network, not of us.
        if e.downcast_ref::<HttpError>().is_some() {
            return true;
        }
        if let Some(status) = status_in(&e.to_string()) {
            return !(400..500).contains(&status) || status == 408 || status == 429;
        }
        cause = e.source();
    }
    true
}

/// The HTTP status an error message names after "status code: ".
fn status_in(text: &str) -> Option<u16> {
    let (_, rest) = text.split_once("status code: ")?;
    let digits = rest.get(..3)?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use object_store::client::HttpErrorKind;

    use super::*;

    #[test]
    fn statuses_in_messages() {
        assert_eq!(status_in("Server returned non-2xx status code: 503 Service Unavailable: "), Some(503));
        assert_eq!(status_in("status code: 40"), None);
        assert_eq!(status_in("no status"), None);
    }

    #[test]
    fn refusals_are_permanent_the_rest_transient() {
        let boxed = |s: &str| -> Box<dyn StdError + Send + Sync> { s.to_owned().into() };
        let not_found = object_store::Error::NotFound { path: "p".into(), source: boxed("gone") };
        assert!(!is_transient(&not_found));
        let denied = object_store::Error::PermissionDenied { path: "p".into(), source: boxed("no") };
        assert!(!is_transient(&denied));
        let generic = |text: &str| object_store::Error::Generic { store: "S3", source: boxed(text) };
        assert!(is_transient(&generic("Server returned non-2xx status code: 503 Service Unavailable")));
        assert!(is_transient(&generic("Server returned non-2xx status code: 429 Too Many Requests")));
        assert!(!is_transient(&generic("Server returned non-2xx status code: 400 Bad Request")));
        assert!(is_transient(&generic("something else entirely")));
        let http = object_store::Error::Generic {
            store: "S3",
            source: Box::new(HttpError::new(HttpErrorKind::Connect, std::io::Error::other("refused"))),
        };
        assert!(is_transient(&http));
    }

    #[test]
    fn messages_are_one_bounded_line() {
        let long = "x\n".repeat(1000);
        let e = object_store::Error::Generic { store: "S3", source: long.into() };
        let SegmentError::Remote { message, transient, .. } = remote("put", "s3://b/k".into(), &e) else {
            panic!("not remote");
        };
        assert!(transient);
        assert!(message.len() <= MAX_MESSAGE_LEN + 3 && !message.contains('\n'), "{message}");
    }
}
