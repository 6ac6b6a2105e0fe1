//! Signed-in browsers. A session is a random 256-bit secret in a cookie
//! (`__Host-glimpse_session`: `Secure`, `HttpOnly`, `SameSite=Strict`,
//! `Path=/`, no `Domain`), kept here only as its SHA-256, with the admin
//! identity it acts as, a CSRF token the pages send back in
//! `X-CSRF-Token`, and two expiries: idle (unused for
//! `idle_timeout_minutes`) and absolute (`session_hours` after sign-in),
//! both on the collector's clock, so tests move time instead of sleeping.
//!
//! Sessions live in memory: a restart signs everyone out, which is the
//! safe direction. The table is bounded ([`MAX_SESSIONS`] in all,
//! [`MAX_SESSIONS_PER_ACCOUNT`] per account, the oldest going first), and
//! only a successful sign-in adds to it.

use std::collections::HashMap;
use std::sync::Mutex;

use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use glimpse_common::identity::{AdminIdentity, SiteId};

use super::ConsoleConfig;

/// The session cookie's name. The `__Host-` prefix makes browsers refuse
/// it unless it is `Secure`, has `Path=/` and no `Domain`.
pub const SESSION_COOKIE: &str = "__Host-glimpse_session";
/// Most sessions at once.
pub const MAX_SESSIONS: usize = 4096;
/// Most sessions of one account at once.
pub const MAX_SESSIONS_PER_ACCOUNT: usize = 16;
/// Longest cookie value looked at.
const MAX_TOKEN_LEN: usize = 128;

/// How a session was opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignedInWith {
    /// A console account's password (and second factor, if enrolled).
    Password {
        /// The account's name.
        account: String,
    },
    /// A browser's admin client certificate.
    Certificate {
        /// The certificate's serial, hex.
        serial: String,
    },
}

impl SignedInWith {
    /// The account (or certificate) name sessions are grouped by.
    pub fn key(&self) -> String {
        match self {
            SignedInWith::Password { account } => format!("account:{account}"),
            SignedInWith::Certificate { serial } => format!("certificate:{serial}"),
        }
    }
}

/// One signed-in browser.
#[derive(Debug, Clone)]
pub struct Session {
    /// Public id (the first 16 hex digits of the secret's hash), for the
    /// audit log and listing; never enough to use the session.
    pub id: String,
    /// Who acts.
    pub identity: AdminIdentity,
    /// How they signed in.
    pub with: SignedInWith,
    /// The token every changing request carries in `X-CSRF-Token`.
    pub csrf: String,
    /// Sign-in time, Unix ms.
    pub created_ms: i64,
    /// Last use, Unix ms.
    pub last_used_ms: i64,
    /// A hard end besides the configured ones (a certificate's expiry),
    /// Unix ms.
    pub not_after_ms: Option<i64>,
    /// The sites its account is limited to; empty: every site.
    pub sites: Vec<SiteId>,
}

impl Session {
    /// Whether `token` is this session's CSRF token (constant time).
    pub fn csrf_matches(&self, token: &str) -> bool {
        self.csrf.as_bytes().ct_eq(token.as_bytes()).into()
    }
}

/// What a new session gives the browser.
#[derive(Debug)]
pub struct NewSession {
    /// The cookie value (secret).
    pub token: Zeroizing<String>,
    /// The session as kept.
    pub session: Session,
}

/// Why a cookie did not give a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEnd {
    /// Not a session of ours (never was, signed out, or the collector
    /// restarted).
    Unknown,
    /// Unused for longer than the idle timeout.
    Idle,
    /// Older than the absolute lifetime.
    Expired,
}

impl SessionEnd {
    /// In words, for the problem document.
    pub fn describe(self) -> &'static str {
        match self {
            SessionEnd::Unknown => "not signed in (or the session ended); sign in again",
            SessionEnd::Idle => "the session ended after a period without use; sign in again",
            SessionEnd::Expired => "the session reached its maximum lifetime; sign in again",
        }
    }
}

/// Every live session.
#[derive(Debug)]
pub struct SessionBook {
    idle_ms: i64,
    absolute_ms: i64,
    table: Mutex<HashMap<String, Session>>,
}

fn hash(token: &str) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, token.as_bytes()))
}

impl SessionBook {
    /// An empty table with `config`'s expiries.
    pub fn new(config: &ConsoleConfig) -> Self {
        Self {
            idle_ms: (config.idle_timeout_minutes as i64).saturating_mul(60_000),
            absolute_ms: (config.session_hours as i64).saturating_mul(3_600_000),
            table: Mutex::new(HashMap::new()),
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.table.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Opens a session for `identity`, evicting the oldest of the same
    /// account (or of all) when at the bounds.
    pub fn create(&self, identity: AdminIdentity, with: SignedInWith, now_ms: i64) -> NewSession {
        self.create_until(identity, with, now_ms, None)
    }

    /// Like [`SessionBook::create`], for an account limited to `sites`.
    pub fn create_at_sites(
        &self,
        identity: AdminIdentity,
        sites: Vec<SiteId>,
        with: SignedInWith,
        now_ms: i64,
    ) -> NewSession {
        self.open(identity, sites, with, now_ms, None)
    }

    /// Like [`SessionBook::create`], ending at `not_after_ms` at the latest
    /// (a certificate session ends when its certificate does).
    pub fn create_until(
        &self,
        identity: AdminIdentity,
        with: SignedInWith,
        now_ms: i64,
        not_after_ms: Option<i64>,
    ) -> NewSession {
        self.open(identity, Vec::new(), with, now_ms, not_after_ms)
    }

    fn open(
        &self,
        identity: AdminIdentity,
        sites: Vec<SiteId>,
        with: SignedInWith,
        now_ms: i64,
        not_after_ms: Option<i64>,
    ) -> NewSession {
        let token = Zeroizing::new(hex::encode(rand::random::<[u8; 32]>()));
        let csrf = hex::encode(rand::random::<[u8; 32]>());
        let key = hash(&token);
        let session = Session {
            id: key[..16].to_owned(),
            identity,
            with,
            csrf,
            created_ms: now_ms,
            last_used_ms: now_ms,
            not_after_ms,
            sites,
        };
        let mut table = self.table();
        self.expire(&mut table, now_ms);
        let group = session.with.key();
        let mine: Vec<(String, i64)> =
            table.iter().filter(|(_, s)| s.with.key() == group).map(|(k, s)| (k.clone(), s.created_ms)).collect();
        if mine.len() >= MAX_SESSIONS_PER_ACCOUNT {
            if let Some((oldest, _)) = mine.iter().min_by_key(|(_, created)| *created) {
                table.remove(oldest);
            }
        }
        if table.len() >= MAX_SESSIONS {
            let oldest = table.iter().min_by_key(|(_, s)| s.last_used_ms).map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                table.remove(&oldest);
            }
        }
        table.insert(key, session.clone());
        NewSession { token, session }
    }

    fn expire(&self, table: &mut HashMap<String, Session>, now_ms: i64) {
        table.retain(|_, s| {
            now_ms - s.last_used_ms <= self.idle_ms
                && now_ms - s.created_ms <= self.absolute_ms
                && s.not_after_ms.is_none_or(|end| now_ms < end)
        });
    }

    /// The session a cookie value opens, marked used now; or why not.
    pub fn lookup(&self, token: &str, now_ms: i64) -> Result<Session, SessionEnd> {
        if token.is_empty() || token.len() > MAX_TOKEN_LEN {
            return Err(SessionEnd::Unknown);
        }
        let key = hash(token);
        let mut table = self.table();
        let Some(session) = table.get_mut(&key) else {
            return Err(SessionEnd::Unknown);
        };
        if now_ms - session.created_ms > self.absolute_ms || session.not_after_ms.is_some_and(|end| now_ms >= end) {
            table.remove(&key);
            return Err(SessionEnd::Expired);
        }
        if now_ms - session.last_used_ms > self.idle_ms {
            table.remove(&key);
            return Err(SessionEnd::Idle);
        }
        session.last_used_ms = now_ms.max(session.last_used_ms);
        Ok(session.clone())
    }

    /// Ends the session a cookie value opens (sign-out); the ended session.
    pub fn end(&self, token: &str) -> Option<Session> {
        if token.len() > MAX_TOKEN_LEN {
            return None;
        }
        self.table().remove(&hash(token))
    }

    /// Ends every session signed in with `with` (an account deleted, a
    /// password changed, a certificate revoked); how many.
    pub fn end_all(&self, with: &SignedInWith) -> usize {
        let mut table = self.table();
        let before = table.len();
        table.retain(|_, s| &s.with != with);
        before - table.len()
    }

    /// Ends every session signed in with `with` except the one with id
    /// `keep` (the user's own, after changing their password); how many.
    pub fn end_others(&self, with: &SignedInWith, keep: &str) -> usize {
        let mut table = self.table();
        let before = table.len();
        table.retain(|_, s| &s.with != with || s.id == keep);
        before - table.len()
    }

    /// Live sessions, for listing (no secrets inside).
    pub fn list(&self, now_ms: i64) -> Vec<Session> {
        let mut table = self.table();
        self.expire(&mut table, now_ms);
        let mut all: Vec<Session> = table.values().cloned().collect();
        all.sort_by_key(|s| s.created_ms);
        all
    }
}

/// The session cookie's value in a `Cookie` header, if any.
pub fn cookie_token(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.trim().to_owned())
}

/// The `Set-Cookie` value that gives the browser `token`.
pub fn set_cookie(token: &str) -> String {
    format!("{SESSION_COOKIE}={token}; Path=/; Secure; HttpOnly; SameSite=Strict")
}

/// The `Set-Cookie` value that removes the session cookie.
pub fn clear_cookie() -> String {
    format!("{SESSION_COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0")
}

#[cfg(test)]
mod tests {
    use super::*;
    use glimpse_common::identity::AdminRole;

    fn identity() -> AdminIdentity {
        AdminIdentity::new(glimpse_common::identity::AdminName::new("alice").unwrap(), AdminRole::Operator, None)
            .unwrap()
    }

    fn book() -> SessionBook {
        SessionBook::new(&ConsoleConfig { idle_timeout_minutes: 30, session_hours: 12, ..Default::default() })
    }

    #[test]
    fn sessions_end_when_idle_and_at_their_absolute_lifetime() {
        let book = book();
        let with = SignedInWith::Password { account: "alice".into() };
        let new = book.create(identity(), with.clone(), 0);
        assert!(book.lookup(&new.token, 29 * 60_000).is_ok());
        // Used at 29 min, so still alive at 58 min.
        assert!(book.lookup(&new.token, 58 * 60_000).is_ok());
        assert_eq!(book.lookup(&new.token, 89 * 60_000).unwrap_err(), SessionEnd::Idle);
        let new = book.create(identity(), with, 0);
        let mut t = 0;
        while t < 12 * 3_600_000 {
            t += 20 * 60_000;
            if t <= 12 * 3_600_000 {
                assert!(book.lookup(&new.token, t).is_ok(), "{t}");
            }
        }
        assert_eq!(book.lookup(&new.token, 12 * 3_600_000 + 1).unwrap_err(), SessionEnd::Expired);
        assert_eq!(book.lookup("nonsense", 0).unwrap_err(), SessionEnd::Unknown);
    }

    #[test]
    fn sign_out_ends_the_session_and_accounts_are_bounded() {
        let book = book();
        let with = SignedInWith::Password { account: "alice".into() };
        let first = book.create(identity(), with.clone(), 0);
        for i in 1..=MAX_SESSIONS_PER_ACCOUNT as i64 {
            book.create(identity(), with.clone(), i);
        }
        assert_eq!(book.list(100).len(), MAX_SESSIONS_PER_ACCOUNT);
        assert!(book.lookup(&first.token, 100).is_err(), "the oldest went first");
        let new = book.create(identity(), with.clone(), 200);
        assert!(new.session.csrf_matches(&new.session.csrf));
        assert!(!new.session.csrf_matches("x"));
        assert!(book.end(&new.token).is_some());
        assert!(book.lookup(&new.token, 201).is_err());
        assert_eq!(book.end_all(&with), MAX_SESSIONS_PER_ACCOUNT - 1);
    }

    #[test]
    fn a_session_ends_at_its_hard_end_and_others_can_be_ended() {
        let book = book();
        let with = SignedInWith::Certificate { serial: "0a".into() };
        let new = book.create_until(identity(), with.clone(), 0, Some(60_000));
        assert!(book.lookup(&new.token, 59_999).is_ok());
        assert_eq!(book.lookup(&new.token, 60_000).unwrap_err(), SessionEnd::Expired);
        let mine = book.create(identity(), with.clone(), 0);
        let other = book.create(identity(), with.clone(), 0);
        assert_eq!(book.end_others(&with, &mine.session.id), 1);
        assert!(book.lookup(&mine.token, 1).is_ok());
        assert!(book.lookup(&other.token, 1).is_err());
    }

    fn headers_with(values: &[String]) -> axum::http::HeaderMap {
        let mut headers = axum::http::HeaderMap::new();
        for value in values {
            if let Ok(value) = axum::http::HeaderValue::from_str(value) {
                headers.append(axum::http::header::COOKIE, value);
            }
        }
        headers
    }

    proptest::proptest! {
        /// Whatever a browser (or anyone) sends as `Cookie`, the parser
        /// does not panic, and a token it returns is never longer than
        /// the header.
        #[test]
        fn any_cookie_header_parses_without_panicking(values in proptest::collection::vec(".{0,200}", 0..4)) {
            let headers = headers_with(&values);
            if let Some(token) = cookie_token(&headers) {
                proptest::prop_assert!(values.iter().any(|v| v.len() >= token.len()));
            }
        }

        /// The session cookie is found among any other cookies, in any
        /// position, with or without spaces around `;`.
        #[test]
        fn the_session_cookie_is_found_among_arbitrary_others(
            before in proptest::collection::vec(("[a-zA-Z0-9_-]{1,12}", "[a-zA-Z0-9%._-]{0,24}"), 0..5),
            after in proptest::collection::vec(("[a-zA-Z0-9_-]{1,12}", "[a-zA-Z0-9%._-]{0,24}"), 0..5),
            token in "[0-9a-f]{64}",
            spaced in proptest::bool::ANY,
        ) {
            let others = |list: &[(String, String)]| {
                list.iter().filter(|(n, _)| n != SESSION_COOKIE).map(|(n, v)| format!("{n}={v}")).collect::<Vec<_>>()
            };
            let mut parts = others(&before);
            parts.push(format!("{SESSION_COOKIE}={token}"));
            parts.extend(others(&after));
            let header = parts.join(if spaced { "; " } else { ";" });
            proptest::prop_assert_eq!(cookie_token(&headers_with(&[header])), Some(token));
        }
    }

    #[test]
    fn the_cookie_is_found_among_others_and_set_strictly() {
        let mut headers = axum::http::HeaderMap::new();
        headers.insert(axum::http::header::COOKIE, format!("a=b; {SESSION_COOKIE}=abc ; c=d").parse().unwrap());
        assert_eq!(cookie_token(&headers).as_deref(), Some("abc"));
        let set = set_cookie("abc");
        for part in ["Secure", "HttpOnly", "SameSite=Strict", "Path=/"] {
            assert!(set.contains(part), "{set}");
        }
    }
}
