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
//! - [`routes`]: sign-in, sign-out and the session's facts, under
//!   `/console/api/`.
//!
//! The pages call the same `/api/v1` endpoints as every other client:
//! [`crate::api::auth::Authenticated`] accepts the session cookie beside
//! tokens and certificates, and requires the session's CSRF token in the
//! `X-CSRF-Token` header on every request that changes something.

pub mod accounts;
pub mod assets;
pub mod routes;
pub mod sessions;

use std::sync::Arc;

use serde::Deserialize;

use glimpse_store::control::ControlStore;

pub use accounts::{Account, AccountBook, AccountError};
pub use sessions::{Session, SessionBook, SESSION_COOKIE};

/// `[console]` in collector.toml.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleConfig {
    /// Serve the console on the admin port (on by default; the API stays
    /// either way).
    pub enabled: bool,
    /// A session unused this long ends, in minutes.
    pub idle_timeout_minutes: u64,
    /// A session ends this long after sign-in whatever its use, in hours.
    pub session_hours: u64,
    /// Failed sign-ins in a row that lock an account.
    pub max_failed_sign_ins: u32,
    /// How long a locked account stays locked, in minutes.
    pub lockout_minutes: u64,
    /// A browser that presents an admin client certificate may sign in
    /// with it (no password).
    pub certificate_sign_in: bool,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            idle_timeout_minutes: 30,
            session_hours: 12,
            max_failed_sign_ins: 5,
            lockout_minutes: 15,
            certificate_sign_in: false,
        }
    }
}

impl ConsoleConfig {
    /// Names every out-of-range value in `problems`.
    pub fn check(&self, problems: &mut Vec<String>) {
        if !(1..=24 * 60).contains(&self.idle_timeout_minutes) {
            problems.push(format!("console.idle_timeout_minutes must be 1..=1440, got {}", self.idle_timeout_minutes));
        }
        if !(1..=24 * 7).contains(&self.session_hours) {
            problems.push(format!("console.session_hours must be 1..=168, got {}", self.session_hours));
        }
        if !(1..=100).contains(&self.max_failed_sign_ins) {
            problems.push(format!("console.max_failed_sign_ins must be 1..=100, got {}", self.max_failed_sign_ins));
        }
        if !(1..=24 * 60).contains(&self.lockout_minutes) {
            problems.push(format!("console.lockout_minutes must be 1..=1440, got {}", self.lockout_minutes));
        }
    }
}

/// The console's shared parts, held by the API state.
#[derive(Debug, Clone)]
pub struct Console {
    /// Settings.
    pub config: ConsoleConfig,
    /// Local accounts.
    pub accounts: Arc<AccountBook>,
    /// Signed-in browsers.
    pub sessions: Arc<SessionBook>,
}

impl Console {
    /// The console over `control`'s accounts.
    pub fn load(config: ConsoleConfig, control: Arc<dyn ControlStore>) -> Self {
        let accounts = Arc::new(AccountBook::new(control));
        let sessions = Arc::new(SessionBook::new(&config));
        Self { config, accounts, sessions }
    }
}
