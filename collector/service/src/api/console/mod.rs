//! The web console: a browser front end to the admin API, served by the
//! collector on its admin HTTPS port with every asset embedded in the
//! binary (collectors run on premises, often air-gapped: no CDN, no
//! external font or script).
//!
//! - [`assets`]: the embedded files under `/console/`, with a strict
//!   Content-Security-Policy (`default-src 'self'`).
//! - [`accounts`]: local console accounts (Argon2id password hashes) kept
//!   in the control store, each with the same role and organisation scope
//!   as an admin certificate.
//! - [`sessions`]: signed-in browsers, in memory, bounded, with idle and
//!   absolute expiry on the collector's (injectable) clock, each with its
//!   CSRF token.
//! - [`totp`]: RFC 6238 one-time codes, the optional second factor.
//! - [`routes`]: sign-in (password and code, or a browser's admin client
//!   certificate where configured), sign-out, the session's facts, TOTP
//!   enrolment and the user's own password change, under `/console/api/`.
//! - [`manage`]: account management for operators and org-admins under
//!   `/api/v1/accounts`, in the OpenAPI document.
//!
//! The pages call the same `/api/v1` endpoints as every other client:
//! [`crate::api::auth::Authenticated`] accepts the session cookie beside
//! tokens and certificates, and requires the session's CSRF token in the
//! `X-CSRF-Token` header on every request that changes something.

pub mod accounts;
pub mod assets;
pub mod gate;
pub mod manage;
pub mod routes;
pub mod sessions;
pub mod totp;

use std::sync::Arc;

use glimpse_store::Store;

pub use accounts::{Account, AccountBook, AccountError};
pub use sessions::{Session, SessionBook, SESSION_COOKIE};

pub use crate::config::ConsoleConfig;

/// The console's shared parts, held by the API state.
#[derive(Debug, Clone)]
pub struct Console {
    /// Settings.
    pub config: ConsoleConfig,
    /// Local accounts.
    pub accounts: Arc<AccountBook>,
    /// Signed-in browsers.
    pub sessions: Arc<SessionBook>,
    /// The bound on password checks running at once.
    pub gate: gate::PasswordGate,
}

impl Console {
    /// The console over `store`'s accounts.
    pub fn load(config: ConsoleConfig, store: Arc<Store>) -> Self {
        let accounts = Arc::new(AccountBook::new(store));
        let sessions = Arc::new(SessionBook::new(&config));
        Self { config, accounts, sessions, gate: gate::PasswordGate::default() }
    }

    /// Runs `work`, which checks or hashes a password, on a blocking
    /// thread once the gate gives it a turn; `503 busy` (retry shortly)
    /// when too many are already running or waiting.
    pub async fn hashing<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, crate::api::problem::ApiError> + Send + 'static,
    ) -> Result<T, crate::api::problem::ApiError> {
        use crate::api::problem::ApiError;
        match self.gate.run(work).await {
            Ok(result) => result,
            Err(e @ gate::GateError::Busy) => {
                Err(ApiError::new(axum::http::StatusCode::SERVICE_UNAVAILABLE, "busy", e.to_string()))
            }
            Err(e @ gate::GateError::Failed) => Err(ApiError::internal(e.to_string())),
        }
    }

    /// The live session a cookie value opens, or the 401 saying why not.
    pub fn session(&self, token: &str, now_ms: i64) -> Result<Session, crate::api::problem::ApiError> {
        self.sessions
            .lookup(token, now_ms)
            .map_err(|end| crate::api::problem::ApiError::unauthenticated(end.describe()))
    }

    /// The session the request's cookie opens, with its cookie value.
    pub fn request_session(
        &self,
        headers: &axum::http::HeaderMap,
        now_ms: i64,
    ) -> Result<(String, Session), crate::api::problem::ApiError> {
        let token = sessions::cookie_token(headers)
            .ok_or_else(|| crate::api::problem::ApiError::unauthenticated("not signed in"))?;
        let session = self.session(&token, now_ms)?;
        Ok((token, session))
    }
}
