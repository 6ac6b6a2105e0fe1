//! Errors as RFC 9457 problem details (`application/problem+json`) with a
//! stable `code`; never a stack trace or an internal type name.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use glimpse_api::{Problem, PROBLEM_JSON};

use crate::admin::{Refusal, RefusalKind};

/// An API error: the status, the stable code and what went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable code (see [`Problem::code`]).
    pub code: &'static str,
    /// For a person.
    pub detail: String,
}

impl ApiError {
    /// An error with this status, code and detail.
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        ApiError { status, code, detail: detail.into() }
    }

    /// 400: the request is malformed.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad-request", detail)
    }

    /// 401: no credential, or one that is not valid.
    pub fn unauthenticated(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthenticated", detail)
    }

    /// 403: the credential does not allow this.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", detail)
    }

    /// 404: no such thing.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", detail)
    }

    /// 503: the collector cannot do it now.
    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", detail)
    }

    /// 500: a fault of ours; the detail says no more than that.
    pub fn internal(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", detail)
    }

    /// The problem document.
    pub fn problem(&self) -> Problem {
        Problem {
            kind: format!("urn:glimpse:problem:{}", self.code),
            title: self.status.canonical_reason().unwrap_or("Error").to_owned(),
            status: self.status.as_u16(),
            detail: self.detail.clone(),
            code: self.code.to_owned(),
        }
    }
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> Self {
        match refusal.kind {
            RefusalKind::Forbidden => ApiError::forbidden(refusal.reason),
            RefusalKind::Invalid => ApiError::bad_request(refusal.reason),
            RefusalKind::Conflict => ApiError::new(StatusCode::CONFLICT, "conflict", refusal.reason),
            RefusalKind::Unavailable => ApiError::unavailable(refusal.reason),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.problem()).unwrap_or_default();
        let mut response = (self.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"glimpse\""));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_map_to_statuses_and_stable_codes() {
        let of = |kind| ApiError::from(Refusal { kind, reason: "why".into() });
        assert_eq!(of(RefusalKind::Forbidden).status, StatusCode::FORBIDDEN);
        assert_eq!(of(RefusalKind::Invalid).code, "bad-request");
        assert_eq!(of(RefusalKind::Conflict).status, StatusCode::CONFLICT);
        assert_eq!(of(RefusalKind::Unavailable).code, "unavailable");
        let problem = of(RefusalKind::Forbidden).problem();
        assert_eq!(problem.kind, "urn:glimpse:problem:forbidden");
        assert_eq!((problem.status, problem.detail.as_str()), (403, "why"));
    }
}
