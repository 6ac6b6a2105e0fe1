//! Local console accounts: a name, a role and organisation scope (as an
//! admin certificate carries), and a password hashed with Argon2id.
//!
//! Each account is one row of the control store's state table, named
//! `console-account:<name>`, so accounts survive restarts and reach the
//! store's verified copy. A leaked database holds only Argon2id hashes
//! (OWASP's parameters: 19 MiB, 2 passes, 1 lane), each with its own salt.
//! Verifying a password costs tens of milliseconds of one core by design:
//! callers run it on a blocking thread.

use std::sync::{Arc, Mutex};

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use glimpse_common::identity::{AdminIdentity, AdminName, AdminRole, OrgId};
use glimpse_store::control::ControlStore;

/// Name prefix of account rows in the control store.
const STATE_PREFIX: &str = "console-account:";
/// Most accounts kept, a bound on what creation can grow.
pub const MAX_ACCOUNTS: usize = 10_000;
/// Shortest password accepted.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// Longest password accepted (hashing cost grows with length).
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// An account could not be created, found or used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum AccountError {
    /// Wrong name or password. One error for both, so that a caller
    /// cannot learn which names exist.
    #[error("wrong account name or password")]
    BadCredentials,
    /// Too many failed sign-ins; locked until the time given.
    #[error("this account is locked after repeated failed sign-ins; try again in {minutes} min")]
    Locked {
        /// Minutes left, rounded up.
        minutes: i64,
    },
    /// The account exists already.
    #[error("an account named {0} exists already")]
    Exists(String),
    /// No such account.
    #[error("no account named {0}")]
    NotFound(String),
    /// The name, role, organisation or password is not acceptable.
    #[error("{0}")]
    Invalid(String),
    /// Too many accounts.
    #[error("at most {MAX_ACCOUNTS} console accounts may exist")]
    Full,
    /// The store could not keep or read it.
    #[error("the control store could not keep the account: {0}")]
    Store(String),
}

/// One account as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Account {
    /// Sign-in name (an admin name: letters, digits, `.`, `-`, `_`, `@`).
    pub name: String,
    /// What the account may do.
    pub role: AdminRole,
    /// The organisation an org-admin or support account is scoped to.
    pub org: Option<String>,
    /// The Argon2id hash in PHC string form (salt and parameters inside).
    pub password_hash: String,
    /// Who created it, as the audit log names them.
    pub created_by: String,
    /// When it was created, Unix ms.
    pub created_ms: i64,
    /// Failed sign-ins since the last success.
    #[serde(default)]
    pub failed_sign_ins: u32,
    /// Locked until then (Unix ms) after too many failures.
    #[serde(default)]
    pub locked_until_ms: Option<i64>,
    /// Last successful sign-in, Unix ms.
    #[serde(default)]
    pub last_sign_in_ms: Option<i64>,
}

impl Account {
    /// The admin identity this account acts as.
    pub fn identity(&self) -> Result<AdminIdentity, AccountError> {
        let name = AdminName::new(&self.name).map_err(|e| AccountError::Invalid(e.to_string()))?;
        let org = self.org.as_deref().map(OrgId::new).transpose().map_err(|e| AccountError::Invalid(e.to_string()))?;
        AdminIdentity::new(name, self.role, org).map_err(|e| AccountError::Invalid(e.to_string()))
    }
}

/// The hasher: Argon2id with OWASP's recommended minimum parameters.
fn hasher() -> Argon2<'static> {
    // 19 MiB, 2 iterations, 1 lane: OWASP Password Storage Cheat Sheet.
    let params = Params::new(19 * 1024, 2, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes `password` (Argon2id, a fresh random salt) into a PHC string.
pub fn hash_password(password: &str) -> Result<String, AccountError> {
    check_password(password)?;
    let salt = SaltString::generate(&mut OsRng);
    hasher()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AccountError::Invalid(format!("cannot hash the password: {e}")))
}

/// Whether `password` matches the PHC string `hash` (constant time inside
/// the Argon2 crate).
pub fn password_matches(password: &str, hash: &str) -> bool {
    if password.len() > MAX_PASSWORD_BYTES {
        return false;
    }
    PasswordHash::new(hash).is_ok_and(|parsed| hasher().verify_password(password.as_bytes(), &parsed).is_ok())
}

/// Refuses passwords too short or too long.
pub fn check_password(password: &str) -> Result<(), AccountError> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(AccountError::Invalid(format!("passwords have at least {MIN_PASSWORD_CHARS} characters")));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(AccountError::Invalid(format!("passwords have at most {MAX_PASSWORD_BYTES} bytes")));
    }
    Ok(())
}

/// A hash to verify against when the account does not exist, so that an
/// unknown name costs as long as a wrong password.
fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash_password("not-a-password-of-anyone").unwrap_or_default())
}

/// Every console account, over the control store.
#[derive(Debug)]
pub struct AccountBook {
    control: Arc<dyn ControlStore>,
    /// Serialises read-modify-write of rows (failure counts).
    write: Mutex<()>,
}

impl AccountBook {
    /// The accounts kept in `control`.
    pub fn new(control: Arc<dyn ControlStore>) -> Self {
        Self { control, write: Mutex::new(()) }
    }

    fn key(name: &str) -> String {
        format!("{STATE_PREFIX}{name}")
    }

    fn put(&self, account: &Account) -> Result<(), AccountError> {
        let text = serde_json::to_string(account).map_err(|e| AccountError::Store(e.to_string()))?;
        self.control.replace_state(&Self::key(&account.name), &text).map_err(|e| AccountError::Store(e.to_string()))?;
        Ok(())
    }

    /// The account named `name`.
    pub fn get(&self, name: &str) -> Result<Option<Account>, AccountError> {
        if AdminName::new(name).is_err() {
            return Ok(None);
        }
        let Some(text) = self.control.state(&Self::key(name)).map_err(|e| AccountError::Store(e.to_string()))? else {
            return Ok(None);
        };
        serde_json::from_str(&text).map(Some).map_err(|e| {
            AccountError::Store(format!("account row {name} is damaged ({e}); delete and re-create the account"))
        })
    }

    /// Every account, by name.
    pub fn list(&self) -> Result<Vec<Account>, AccountError> {
        let rows = self.control.states_with_prefix(STATE_PREFIX).map_err(|e| AccountError::Store(e.to_string()))?;
        Ok(rows.into_iter().filter_map(|(_, text)| serde_json::from_str(&text).ok()).collect())
    }

    /// Creates an account; `password` is hashed here (slow: call from a
    /// blocking thread).
    pub fn create(
        &self,
        identity: &AdminIdentity,
        password: &str,
        created_by: &str,
        now_ms: i64,
    ) -> Result<Account, AccountError> {
        let password_hash = hash_password(password)?;
        let _write = self.write.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let name = identity.name.as_str().to_owned();
        if self.get(&name)?.is_some() {
            return Err(AccountError::Exists(name));
        }
        if self.list()?.len() >= MAX_ACCOUNTS {
            return Err(AccountError::Full);
        }
        let account = Account {
            name,
            role: identity.role,
            org: identity.org.as_ref().map(|o| o.as_str().to_owned()),
            password_hash,
            created_by: created_by.to_owned(),
            created_ms: now_ms,
            failed_sign_ins: 0,
            locked_until_ms: None,
            last_sign_in_ms: None,
        };
        self.put(&account)?;
        Ok(account)
    }

    /// Checks a sign-in (slow: call from a blocking thread): the account
    /// and its identity, or why not. Failures are counted, and
    /// `max_failures` in a row lock the account for `lockout_ms`.
    pub fn sign_in(
        &self,
        name: &str,
        password: &str,
        now_ms: i64,
        max_failures: u32,
        lockout_ms: i64,
    ) -> Result<(Account, AdminIdentity), AccountError> {
        let password = Zeroizing::new(password.to_owned());
        let Some(account) = self.get(name)? else {
            let _ = password_matches(&password, dummy_hash());
            return Err(AccountError::BadCredentials);
        };
        if let Some(until) = account.locked_until_ms.filter(|until| *until > now_ms) {
            return Err(AccountError::Locked { minutes: (until - now_ms + 59_999) / 60_000 });
        }
        let ok = password_matches(&password, &account.password_hash);
        let _write = self.write.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // Re-read: another sign-in may have counted meanwhile.
        let mut account = self.get(name)?.ok_or(AccountError::BadCredentials)?;
        if ok {
            account.failed_sign_ins = 0;
            account.locked_until_ms = None;
            account.last_sign_in_ms = Some(now_ms);
            self.put(&account)?;
            let identity = account.identity()?;
            Ok((account, identity))
        } else {
            account.failed_sign_ins = account.failed_sign_ins.saturating_add(1);
            if account.failed_sign_ins >= max_failures {
                account.locked_until_ms = Some(now_ms + lockout_ms);
                account.failed_sign_ins = 0;
            }
            self.put(&account)?;
            Err(AccountError::BadCredentials)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_argon2id_salted_and_verify() {
        let a = hash_password("correct horse battery").unwrap();
        let b = hash_password("correct horse battery").unwrap();
        assert!(a.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{a}");
        assert_ne!(a, b, "each hash has its own salt");
        assert!(password_matches("correct horse battery", &a));
        assert!(!password_matches("correct horse batterY", &a));
        assert!(!password_matches("x", "not a phc string"));
        assert!(hash_password("short").is_err());
    }
}
