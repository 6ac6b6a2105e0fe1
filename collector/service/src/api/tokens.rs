//! API tokens: bearer credentials for scripts and the web console, each
//! scoped to a role, an organisation (unless operator) and optionally to
//! reads, with an expiry, revocable at once.
//!
//! A token reads `glimpse_<id>_<secret>`: `id` is 16 hex digits, public
//! (listed, audited, used to revoke); `secret` is 32 random bytes in hex.
//! Only SHA-256 of the secret is stored (a 256-bit random secret needs no
//! slow hash: there is nothing to guess), in the control store's state
//! table under `api-token:<id>`, so tokens survive restarts, reach the
//! verified copy, and a leaked database holds no usable token. Hashes are
//! compared in constant time.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use glimpse_common::identity::{AdminIdentity, AdminName, AdminRole, OrgId, SiteId};
use glimpse_store::control::ControlStore;

use crate::admin::{Actor, ActorVia};

/// Prefix of every token, so that secret scanners recognise them.
const TOKEN_PREFIX: &str = "glimpse_";
/// Name prefix of token rows in the control store.
const STATE_PREFIX: &str = "api-token:";
/// Longest token string looked at; anything longer is not ours.
const MAX_TOKEN_LEN: usize = 128;
/// Most tokens kept (live or revoked), a bound on what creation can grow.
pub const MAX_TOKENS: usize = 10_000;
/// Default lifetime of a token, in days.
pub const DEFAULT_TOKEN_DAYS: u32 = 90;
/// Longest lifetime of a token, in days.
pub const MAX_TOKEN_DAYS: u32 = 366;
/// How often, at most, a token's last use is written to the store.
const LAST_USE_WRITE_MS: i64 = 60_000;
const DAY_MS: i64 = 86_400_000;

/// A token could not be created, found or used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenError {
    /// Not a Glimpse token, or no such token.
    #[error("not a valid API token")]
    Unknown,
    /// Revoked.
    #[error("this API token was revoked")]
    Revoked,
    /// Past its expiry.
    #[error("this API token has expired")]
    Expired,
    /// The requested scope is not valid.
    #[error("{0}")]
    Scope(String),
    /// Too many tokens.
    #[error("at most {MAX_TOKENS} API tokens may exist; revoke unused ones")]
    Full,
    /// The store could not keep it.
    #[error("the control store could not keep the token: {0}")]
    Store(String),
}

/// One token as stored (no secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRow {
    id: String,
    name: String,
    role: AdminRole,
    org: Option<String>,
    read_only: bool,
    /// SHA-256 of the secret, hex.
    hash: String,
    created_by: String,
    created_ms: i64,
    expires_ms: i64,
    last_used_ms: Option<i64>,
    revoked_ms: Option<i64>,
    /// The sites it is limited to; empty (and not written): every site. A
    /// collector that predates sites refuses a row with them (unknown
    /// field) rather than giving the token its whole organisation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    sites: Vec<SiteId>,
}

/// Most sites one token or console account can be limited to.
pub const MAX_SITES: usize = 64;

/// What a new token may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenScope {
    /// Its name (an admin name: letters, digits, `-`, `_`, `.`).
    pub name: AdminName,
    /// Its role.
    pub role: AdminRole,
    /// Its organisation; required unless the role is operator.
    pub org: Option<OrgId>,
    /// Only reads.
    pub read_only: bool,
    /// Lifetime in days.
    pub days: u32,
    /// The sites of its organisation it is limited to (org-admin and
    /// support tokens only); empty: every site.
    pub sites: Vec<SiteId>,
}

/// The collector's tokens, cached in memory and written through to the
/// control store.
#[derive(Debug)]
pub struct TokenBook {
    control: Arc<dyn ControlStore>,
    rows: RwLock<HashMap<String, TokenRow>>,
}

fn hash_hex(secret: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, secret))
}

fn info(row: &TokenRow) -> glimpse_api::TokenInfo {
    glimpse_api::TokenInfo {
        id: row.id.clone(),
        name: row.name.clone(),
        role: row.role.as_str().to_owned(),
        org: row.org.clone(),
        read_only: row.read_only,
        created_by: row.created_by.clone(),
        created_ms: row.created_ms,
        expires_ms: row.expires_ms,
        last_used_ms: row.last_used_ms,
        revoked_ms: row.revoked_ms,
        sites: row.sites.iter().map(|s| s.as_str().to_owned()).collect(),
    }
}

fn rank(role: AdminRole) -> u8 {
    match role {
        AdminRole::Support => 0,
        AdminRole::OrgAdmin => 1,
        AdminRole::Operator => 2,
    }
}

/// Splits `glimpse_<id>_<secret>` into the id and the secret's bytes.
fn parse(token: &str) -> Option<(&str, Zeroizing<Vec<u8>>)> {
    if token.len() > MAX_TOKEN_LEN {
        return None;
    }
    let rest = token.strip_prefix(TOKEN_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    if id.len() != 16 || !id.bytes().all(|b| b.is_ascii_hexdigit()) || secret.len() != 64 {
        return None;
    }
    hex::decode(secret).ok().map(|s| (id, Zeroizing::new(s)))
}

impl TokenBook {
    /// Loads every token from the control store. A row that does not parse
    /// is skipped with an error in the log (that token stops working; the
    /// others go on).
    pub fn load(control: Arc<dyn ControlStore>) -> Result<Self, TokenError> {
        let rows = Self::rows_of(&*control)?;
        Ok(TokenBook { control, rows: RwLock::new(rows) })
    }

    /// Reads every token again: another collector sharing the control
    /// plane created or revoked one.
    pub fn reload(&self) -> Result<(), TokenError> {
        let rows = Self::rows_of(&*self.control)?;
        *self.write() = rows;
        Ok(())
    }

    fn rows_of(control: &dyn ControlStore) -> Result<HashMap<String, TokenRow>, TokenError> {
        let stored = control.states_with_prefix(STATE_PREFIX).map_err(|e| TokenError::Store(e.to_string()))?;
        let mut rows = HashMap::new();
        for (name, value) in stored {
            match serde_json::from_str::<TokenRow>(&value) {
                Ok(row) => {
                    rows.insert(row.id.clone(), row);
                }
                Err(e) => tracing::error!(entry = %name, "API token entry unreadable, that token is refused: {e}"),
            }
        }
        Ok(rows)
    }

    /// Whether a control-store entry name is a token's.
    pub fn is_token_entry(name: &str) -> bool {
        name.starts_with(STATE_PREFIX)
    }

    fn persist(&self, row: &TokenRow) -> Result<(), TokenError> {
        let json = serde_json::to_string(row).map_err(|e| TokenError::Store(e.to_string()))?;
        self.control
            .replace_state(&format!("{STATE_PREFIX}{}", row.id), &json)
            .map(drop)
            .map_err(|e| TokenError::Store(e.to_string()))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, TokenRow>> {
        self.rows.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, TokenRow>> {
        self.rows.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Creates a token with `scope` for `creator` (already authorised to
    /// act on the scope's organisation): never more than the creator's
    /// own role, read-only if the creator is, and, when the creator is
    /// itself a token, expiring no later than it. Returns the token string
    /// (shown once) and its description.
    pub fn create(
        &self,
        creator: &Actor,
        scope: TokenScope,
        now_ms: i64,
    ) -> Result<(Zeroizing<String>, glimpse_api::TokenInfo), TokenError> {
        if rank(scope.role) > rank(creator.identity.role) {
            return Err(TokenError::Scope(format!(
                "a {} may not create a {} token",
                creator.identity.role, scope.role
            )));
        }
        if creator.read_only && !scope.read_only {
            return Err(TokenError::Scope("a read-only token may only create read-only tokens".into()));
        }
        if !creator.sites.is_empty() {
            return Err(TokenError::Scope(
                "an admin limited to sites may not create tokens (an organisation-wide action)".into(),
            ));
        }
        if !scope.sites.is_empty() && scope.role == AdminRole::Operator {
            return Err(TokenError::Scope("an operator token covers every organisation; it has no sites".into()));
        }
        if scope.sites.len() > MAX_SITES {
            return Err(TokenError::Scope(format!("a token can be limited to at most {MAX_SITES} sites")));
        }
        if scope.days == 0 || scope.days > MAX_TOKEN_DAYS {
            return Err(TokenError::Scope(format!("a token lives 1 to {MAX_TOKEN_DAYS} days")));
        }
        // The same rules as certificates: operators have no organisation,
        // the others exactly one.
        AdminIdentity::new(scope.name.clone(), scope.role, scope.org.clone())
            .map_err(|e| TokenError::Scope(e.to_string()))?;
        let mut expires_ms = now_ms.saturating_add(i64::from(scope.days) * DAY_MS);
        if let ActorVia::Token { id } = &creator.via {
            if let Some(parent) = self.read().get(id) {
                expires_ms = expires_ms.min(parent.expires_ms);
            }
        }
        let id = hex::encode(rand::random::<[u8; 8]>());
        let secret = Zeroizing::new(rand::random::<[u8; 32]>());
        let token = Zeroizing::new(format!("{TOKEN_PREFIX}{id}_{}", hex::encode(secret.as_slice())));
        let row = TokenRow {
            id: id.clone(),
            name: scope.name.as_str().to_owned(),
            role: scope.role,
            org: scope.org.as_ref().map(|o| o.as_str().to_owned()),
            read_only: scope.read_only,
            hash: hash_hex(secret.as_slice()),
            created_by: creator.audit_name(),
            created_ms: now_ms,
            expires_ms,
            last_used_ms: None,
            revoked_ms: None,
            sites: {
                let mut sites = scope.sites.clone();
                sites.sort();
                sites.dedup();
                sites
            },
        };
        if self.read().len() >= MAX_TOKENS {
            return Err(TokenError::Full);
        }
        self.persist(&row)?;
        let described = info(&row);
        self.write().insert(id, row);
        Ok((token, described))
    }

    /// The actor a presented token stands for, or why it is refused. Notes
    /// the use; the second element is whether the last-use time is due to
    /// be written ([`TokenBook::persist_use`]).
    pub fn authenticate(&self, token: &str, now_ms: i64) -> Result<(Actor, bool), TokenError> {
        let (id, secret) = parse(token).ok_or(TokenError::Unknown)?;
        let presented = hash_hex(&secret);
        let mut rows = self.write();
        let row = rows.get_mut(id).ok_or(TokenError::Unknown)?;
        if !bool::from(row.hash.as_bytes().ct_eq(presented.as_bytes())) {
            return Err(TokenError::Unknown);
        }
        if row.revoked_ms.is_some() {
            return Err(TokenError::Revoked);
        }
        if now_ms >= row.expires_ms {
            return Err(TokenError::Expired);
        }
        let name = AdminName::new(&row.name).map_err(|_| TokenError::Unknown)?;
        let org = match &row.org {
            Some(org) => Some(OrgId::new(org).map_err(|_| TokenError::Unknown)?),
            None => None,
        };
        let identity = AdminIdentity::new(name, row.role, org).map_err(|_| TokenError::Unknown)?;
        let due = row.last_used_ms.is_none_or(|last| now_ms - last >= LAST_USE_WRITE_MS);
        row.last_used_ms = Some(now_ms);
        let actor = Actor {
            identity,
            via: ActorVia::Token { id: row.id.clone() },
            read_only: row.read_only,
            sites: row.sites.clone(),
        };
        Ok((actor, due))
    }

    /// Writes a token's last use (blocking: call off the async threads).
    pub fn persist_use(&self, id: &str) {
        let row = self.read().get(id).cloned();
        if let Some(row) = row {
            if let Err(e) = self.persist(&row) {
                tracing::warn!(token = id, "cannot record the token's last use: {e}");
            }
        }
    }

    /// The organisation a token is scoped to (`None` for operator tokens
    /// and unknown ids), for authorising list and revoke.
    pub fn org_of(&self, id: &str) -> Option<Option<OrgId>> {
        self.read().get(id).map(|row| row.org.as_deref().and_then(|o| OrgId::new(o).ok()))
    }

    /// Tokens, newest first; only `org`'s when given.
    pub fn list(&self, org: Option<&OrgId>) -> Vec<glimpse_api::TokenInfo> {
        let mut out: Vec<_> = self
            .read()
            .values()
            .filter(|row| org.is_none_or(|o| row.org.as_deref() == Some(o.as_str())))
            .map(info)
            .collect();
        out.sort_by(|a, b| b.created_ms.cmp(&a.created_ms).then_with(|| a.id.cmp(&b.id)));
        out
    }

    /// Revokes a token; returns whether it was still valid.
    pub fn revoke(&self, id: &str, now_ms: i64) -> Result<bool, TokenError> {
        let mut row = self.read().get(id).cloned().ok_or(TokenError::Unknown)?;
        let was_active = row.revoked_ms.is_none() && now_ms < row.expires_ms;
        if row.revoked_ms.is_none() {
            row.revoked_ms = Some(now_ms);
            self.persist(&row)?;
            self.write().insert(id.to_owned(), row);
        }
        Ok(was_active)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn book() -> (tempfile::TempDir, TokenBook) {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(redb::Database::create(dir.path().join("c.redb")).unwrap());
        let control = glimpse_store::control::RedbControl::open(db).unwrap();
        let book = TokenBook::load(Arc::new(control)).unwrap();
        (dir, book)
    }

    fn operator() -> Actor {
        let id = AdminIdentity::new(AdminName::new("op").unwrap(), AdminRole::Operator, None).unwrap();
        Actor::certificate(id, "01".into())
    }

    fn scope(role: AdminRole, org: Option<&str>, read_only: bool) -> TokenScope {
        TokenScope {
            name: AdminName::new("script").unwrap(),
            role,
            org: org.map(|o| OrgId::new(o).unwrap()),
            read_only,
            days: 1,
            sites: Vec::new(),
        }
    }

    #[test]
    fn a_site_limited_token_carries_its_sites_and_creates_no_tokens() {
        let (_dir, book) = book();
        let sites = vec![SiteId::new("paris").unwrap(), SiteId::new("berlin").unwrap(), SiteId::new("paris").unwrap()];
        let limited = TokenScope { sites, ..scope(AdminRole::OrgAdmin, Some("acme"), false) };
        let (token, info) = book.create(&operator(), limited, 0).unwrap();
        assert_eq!(info.sites, ["berlin", "paris"], "sorted, once each");
        let (actor, _) = book.authenticate(&token, 1).unwrap();
        assert_eq!(actor.sites, [SiteId::new("berlin").unwrap(), SiteId::new("paris").unwrap()]);
        assert!(actor.audit_name().contains("org-admin of acme, sites berlin+paris"), "{}", actor.audit_name());
        let reloaded = TokenBook::load(book.control.clone()).unwrap();
        assert_eq!(reloaded.authenticate(&token, 2).unwrap().0.sites, actor.sites, "kept in the control store");
        // Creating admins is organisation-wide: never by a site-limited one.
        let err = book.create(&actor, scope(AdminRole::Support, Some("acme"), true), 1).unwrap_err();
        assert!(matches!(err, TokenError::Scope(_)), "{err}");
        // Operators have no sites; a token without sites stores none.
        let operator_sites =
            TokenScope { sites: vec![SiteId::new("x").unwrap()], ..scope(AdminRole::Operator, None, false) };
        assert!(book.create(&operator(), operator_sites, 0).is_err());
        let (_, plain) = book.create(&operator(), scope(AdminRole::OrgAdmin, Some("acme"), false), 0).unwrap();
        let row = book.control.states_with_prefix(STATE_PREFIX).unwrap();
        let stored = row.iter().find(|(name, _)| name.ends_with(&plain.id)).unwrap();
        assert!(!stored.1.contains("sites"), "{}", stored.1);
    }

    #[test]
    fn a_token_works_until_revoked_or_expired_and_survives_a_reload() {
        let (_dir, book) = book();
        let (token, info) = book.create(&operator(), scope(AdminRole::OrgAdmin, Some("acme"), true), 1_000).unwrap();
        let (actor, due) = book.authenticate(&token, 2_000).unwrap();
        assert!(due && actor.read_only);
        assert_eq!(actor.identity.org.as_ref().map(OrgId::as_str), Some("acme"));
        assert_eq!(book.authenticate(&token, 1_000 + DAY_MS).unwrap_err(), TokenError::Expired);
        // A wrong secret with the right id, and garbage, are both unknown.
        let mut forged = token.to_string();
        forged.replace_range(forged.len() - 4.., "0000");
        assert_eq!(book.authenticate(&forged, 2_000).unwrap_err(), TokenError::Unknown);
        assert_eq!(book.authenticate("Bearer nonsense", 2_000).unwrap_err(), TokenError::Unknown);
        assert_eq!(book.authenticate(&"x".repeat(10_000), 2_000).unwrap_err(), TokenError::Unknown);
        let reloaded = TokenBook::load(book.control.clone()).unwrap();
        assert!(reloaded.authenticate(&token, 3_000).is_ok(), "kept in the control store");
        assert!(reloaded.revoke(&info.id, 4_000).unwrap());
        assert_eq!(reloaded.authenticate(&token, 5_000).unwrap_err(), TokenError::Revoked);
        assert!(!reloaded.revoke(&info.id, 6_000).unwrap(), "already revoked");
        // The store keeps only a hash: the secret appears nowhere.
        let secret = token.rsplit('_').next().unwrap().to_owned();
        let rows = book.control.states_with_prefix(STATE_PREFIX).unwrap();
        assert!(rows.iter().all(|(_, v)| !v.contains(&secret)));
    }

    #[test]
    fn no_token_exceeds_its_creator() {
        let (_dir, book) = book();
        let org_admin = {
            let org = OrgId::new("acme").unwrap();
            let id = AdminIdentity::new(AdminName::new("alice").unwrap(), AdminRole::OrgAdmin, Some(org)).unwrap();
            Actor::certificate(id, "02".into())
        };
        assert!(matches!(
            book.create(&org_admin, scope(AdminRole::Operator, None, false), 0),
            Err(TokenError::Scope(_))
        ));
        assert!(book.create(&org_admin, scope(AdminRole::Support, Some("acme"), false), 0).is_ok());
        let (token, _) = book.create(&org_admin, scope(AdminRole::OrgAdmin, Some("acme"), true), 0).unwrap();
        let (reader, _) = book.authenticate(&token, 1).unwrap();
        assert!(matches!(
            book.create(&reader, scope(AdminRole::OrgAdmin, Some("acme"), false), 1),
            Err(TokenError::Scope(_))
        ));
        let (child, info) = book
            .create(&reader, TokenScope { days: 300, ..scope(AdminRole::OrgAdmin, Some("acme"), true) }, 1)
            .unwrap();
        assert!(info.expires_ms <= DAY_MS, "a token's token expires no later than it");
        assert!(book.authenticate(&child, 2).is_ok());
        // Operators have no organisation; the others need one.
        assert!(matches!(
            book.create(&operator(), scope(AdminRole::OrgAdmin, None, false), 0),
            Err(TokenError::Scope(_))
        ));
    }
}
