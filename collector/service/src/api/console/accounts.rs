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

use glimpse_common::identity::{AdminIdentity, AdminName, AdminRole, OrgId, SiteId};
use glimpse_common::secret::SecretKey;
use glimpse_store::control::ControlStore;
use glimpse_store::Store;

use super::totp;

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
    /// The account is disabled (sign-in refused; the caller answers with
    /// the generic [`AccountError::BadCredentials`] text).
    #[error("the account is disabled")]
    Disabled,
    /// A one-time code was needed and missing, wrong or used before
    /// (answered like [`AccountError::BadCredentials`]).
    #[error("missing, wrong or reused one-time code")]
    BadCode,
    /// The change does not fit the account's state (TOTP already on, or
    /// not enrolled).
    #[error("{0}")]
    Conflict(String),
    /// The store could not keep or read it.
    #[error("the control store could not keep the account: {0}")]
    Store(String),
}

impl AccountError {
    /// What the sign-in answer says: one text for every way the
    /// credentials were wrong, so it tells nothing about the account.
    pub fn public_text(&self) -> String {
        match self {
            AccountError::Disabled | AccountError::BadCode | AccountError::NotFound(_) => {
                AccountError::BadCredentials.to_string()
            }
            other => other.to_string(),
        }
    }
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
    /// The TOTP key, sealed under the master key (hex), once enrolment
    /// was confirmed with a code: sign-in then needs a code.
    #[serde(default)]
    pub totp_sealed: Option<String>,
    /// A TOTP key sealed (hex) and shown to the user, not yet confirmed.
    #[serde(default)]
    pub totp_pending: Option<String>,
    /// The last TOTP step accepted: no code of it or before is accepted
    /// again (replay protection).
    #[serde(default)]
    pub totp_last_step: Option<i64>,
    /// Sign-in refused (kept for the audit trail's names).
    #[serde(default)]
    pub disabled: bool,
    /// The sites of its organisation an org-admin or support account is
    /// limited to; empty (and not written): every site. A collector that
    /// predates sites cannot read a row with them, so the account cannot
    /// sign in there rather than getting the whole organisation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sites: Vec<SiteId>,
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

/// A new TOTP key, as the user types or scans it.
#[derive(Debug)]
pub struct TotpEnrolment {
    /// The key in base32 (secret: shown once).
    pub secret: Zeroizing<String>,
    /// The `otpauth://totp/...` URI with the key inside (secret).
    pub uri: Zeroizing<String>,
}

/// A change to an account (fields left `None` stay as they are).
#[derive(Debug, Default)]
pub struct AccountChange {
    /// A new role and organisation, together (an operator has none).
    pub identity: Option<AdminIdentity>,
    /// A new password (hashed here).
    pub password: Option<Zeroizing<String>>,
    /// Disable or enable sign-in.
    pub disabled: Option<bool>,
    /// Turn TOTP off (the user enrols again).
    pub reset_totp: bool,
    /// Clear the failure count and lockout.
    pub unlock: bool,
}

/// The sealing purpose of an account's TOTP key: bound to the account, so
/// a sealed key copied to another row does not open.
fn totp_purpose(name: &str) -> String {
    format!("console-totp:{name}")
}

/// Every console account, over the control store.
#[derive(Debug)]
pub struct AccountBook {
    store: Arc<Store>,
    control: Arc<dyn ControlStore>,
    /// Serialises read-modify-write of rows (failure counts).
    write: Mutex<()>,
}

/// An account row's sealed TOTP keys resealed under a new master key, for
/// a master key rotation ([`glimpse_store::keys::rotation`]); `None` for
/// rows that are not accounts or hold no TOTP key. An account key that does
/// not open under the old master key stops the rotation.
pub fn reseal_row(
    name: &str,
    value: &str,
    resealer: &glimpse_store::keys::Resealer<'_>,
) -> Result<Option<String>, String> {
    let Some(account_name) = name.strip_prefix(STATE_PREFIX) else {
        return Ok(None);
    };
    if value.is_empty() {
        return Ok(None);
    }
    let mut account: Account =
        serde_json::from_str(value).map_err(|e| format!("console account row {account_name} is damaged ({e})"))?;
    if account.totp_sealed.is_none() && account.totp_pending.is_none() {
        return Ok(None);
    }
    let purpose = totp_purpose(&account.name);
    for slot in [&mut account.totp_sealed, &mut account.totp_pending] {
        if let Some(text) = slot.as_mut() {
            let unreadable =
                || format!("console account {account_name}: its TOTP key does not open under the master key");
            let sealed = hex::decode(text.as_str()).map_err(|_| unreadable())?;
            *text = hex::encode(resealer.reseal(&purpose, &sealed).ok_or_else(unreadable)?);
        }
    }
    serde_json::to_string(&account).map(Some).map_err(|e| e.to_string())
}

impl AccountBook {
    /// Holds off every account write until the guard drops (a master key
    /// rotation, so that no write puts back a TOTP key sealed under the old
    /// key).
    pub fn hold_writes(&self) -> std::sync::MutexGuard<'_, ()> {
        self.lock()
    }

    /// The accounts kept in `store`'s control store (TOTP keys sealed
    /// under its master key).
    pub fn new(store: Arc<Store>) -> Self {
        let control = store.control();
        Self { store, control, write: Mutex::new(()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.write.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn seal(&self, name: &str, key: &SecretKey) -> Result<String, AccountError> {
        let sealed =
            self.store.seal_secret(&totp_purpose(name), key).map_err(|e| AccountError::Store(e.to_string()))?;
        Ok(hex::encode(sealed))
    }

    fn open(&self, name: &str, sealed_hex: &str) -> Result<SecretKey, AccountError> {
        let sealed = hex::decode(sealed_hex).map_err(|_| AccountError::Store(format!("{name}: damaged TOTP key")))?;
        self.store
            .open_secret(&totp_purpose(name), &sealed)
            .ok_or_else(|| AccountError::Store(format!("{name}: the TOTP key does not open under this master key")))
    }

    /// Whether `code` is a fresh code of the account's enrolled key; on
    /// success the step is recorded in `account` (the caller stores it).
    fn check_code(&self, account: &mut Account, code: Option<&str>, now_ms: i64) -> Result<(), AccountError> {
        let Some(sealed) = account.totp_sealed.clone() else {
            return Ok(());
        };
        let code = code.filter(|c| !c.trim().is_empty()).ok_or(AccountError::BadCode)?;
        let key = self.open(&account.name, &sealed)?;
        let step = totp::verify(key.expose(), code, now_ms, account.totp_last_step).ok_or(AccountError::BadCode)?;
        account.totp_last_step = Some(step);
        Ok(())
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
        // A deleted account leaves an empty row (the control store has no
        // row removal).
        if text.is_empty() {
            return Ok(None);
        }
        serde_json::from_str(&text).map(Some).map_err(|e| {
            AccountError::Store(format!("account row {name} is damaged ({e}); delete and re-create the account"))
        })
    }

    /// Every account, by name.
    pub fn list(&self) -> Result<Vec<Account>, AccountError> {
        let rows = self.control.states_with_prefix(STATE_PREFIX).map_err(|e| AccountError::Store(e.to_string()))?;
        Ok(rows
            .into_iter()
            .filter(|(_, text)| !text.is_empty())
            .filter_map(|(_, text)| serde_json::from_str(&text).ok())
            .collect())
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
        self.create_at_sites(identity, &[], password, created_by, now_ms)
    }

    /// As [`AccountBook::create`], limited to `sites` of its organisation
    /// (org-admin and support accounts; empty: every site).
    pub fn create_at_sites(
        &self,
        identity: &AdminIdentity,
        sites: &[SiteId],
        password: &str,
        created_by: &str,
        now_ms: i64,
    ) -> Result<Account, AccountError> {
        if !sites.is_empty() && identity.role == AdminRole::Operator {
            return Err(AccountError::Invalid("an operator account covers every organisation; it has no sites".into()));
        }
        if sites.len() > crate::api::tokens::MAX_SITES {
            return Err(AccountError::Invalid(format!(
                "an account can be limited to at most {} sites",
                crate::api::tokens::MAX_SITES
            )));
        }
        let mut sites = sites.to_vec();
        sites.sort();
        sites.dedup();
        let password_hash = hash_password(password)?;
        let _write = self.lock();
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
            totp_sealed: None,
            totp_pending: None,
            totp_last_step: None,
            disabled: false,
            sites,
        };
        self.put(&account)?;
        Ok(account)
    }

    /// Changes an account (a password is hashed here: call from a blocking
    /// thread); the account as it is now.
    pub fn update(&self, name: &str, change: AccountChange) -> Result<Account, AccountError> {
        let password_hash = change.password.as_deref().map(|p| hash_password(p)).transpose()?;
        let _write = self.lock();
        let mut account = self.get(name)?.ok_or_else(|| AccountError::NotFound(name.to_owned()))?;
        if let Some(identity) = &change.identity {
            account.role = identity.role;
            account.org = identity.org.as_ref().map(|o| o.as_str().to_owned());
        }
        if let Some(hash) = password_hash {
            account.password_hash = hash;
        }
        if let Some(disabled) = change.disabled {
            account.disabled = disabled;
        }
        if change.reset_totp {
            account.totp_sealed = None;
            account.totp_pending = None;
        }
        if change.unlock {
            account.failed_sign_ins = 0;
            account.locked_until_ms = None;
        }
        self.put(&account)?;
        Ok(account)
    }

    /// Deletes an account; whether there was one.
    pub fn delete(&self, name: &str) -> Result<bool, AccountError> {
        let _write = self.lock();
        if self.get(name)?.is_none() {
            return Ok(false);
        }
        // Overwritten whole: the hash and the sealed key go with it.
        self.control.replace_state(&Self::key(name), "").map_err(|e| AccountError::Store(e.to_string()))?;
        Ok(true)
    }

    /// The user's own password change: the current password must match
    /// (slow: blocking thread).
    pub fn change_password(&self, name: &str, current: &str, new: &str) -> Result<Account, AccountError> {
        let account = self.get(name)?.ok_or(AccountError::BadCredentials)?;
        if !password_matches(current, &account.password_hash) {
            return Err(AccountError::BadCredentials);
        }
        self.update(name, AccountChange { password: Some(Zeroizing::new(new.to_owned())), ..Default::default() })
    }

    /// Starts TOTP enrolment: a fresh key, sealed and kept as pending
    /// until [`AccountBook::confirm_totp`]. Refused while TOTP is on.
    pub fn begin_totp(&self, name: &str) -> Result<TotpEnrolment, AccountError> {
        let _write = self.lock();
        let mut account = self.get(name)?.ok_or_else(|| AccountError::NotFound(name.to_owned()))?;
        if account.totp_sealed.is_some() {
            return Err(AccountError::Conflict("a one-time code is already set up; turn it off first".into()));
        }
        let key = SecretKey::generate().map_err(|_| AccountError::Store("no randomness".into()))?;
        account.totp_pending = Some(self.seal(name, &key)?);
        self.put(&account)?;
        let secret = Zeroizing::new(totp::base32(key.expose()));
        let uri = Zeroizing::new(totp::otpauth_uri(name, &secret));
        Ok(TotpEnrolment { secret, uri })
    }

    /// Confirms enrolment with a current code of the pending key: from
    /// now on sign-in needs a code.
    pub fn confirm_totp(&self, name: &str, code: &str, now_ms: i64) -> Result<Account, AccountError> {
        let _write = self.lock();
        let mut account = self.get(name)?.ok_or_else(|| AccountError::NotFound(name.to_owned()))?;
        let pending = account
            .totp_pending
            .clone()
            .ok_or_else(|| AccountError::Conflict("no one-time code set-up was started".into()))?;
        let key = self.open(name, &pending)?;
        let step = totp::verify(key.expose(), code, now_ms, account.totp_last_step).ok_or(AccountError::BadCode)?;
        account.totp_sealed = Some(pending);
        account.totp_pending = None;
        account.totp_last_step = Some(step);
        self.put(&account)?;
        Ok(account)
    }

    /// Turns TOTP off, with a current code as proof.
    pub fn disable_totp(&self, name: &str, code: &str, now_ms: i64) -> Result<Account, AccountError> {
        let _write = self.lock();
        let mut account = self.get(name)?.ok_or_else(|| AccountError::NotFound(name.to_owned()))?;
        if account.totp_sealed.is_none() {
            return Err(AccountError::Conflict("no one-time code is set up".into()));
        }
        self.check_code(&mut account, Some(code), now_ms)?;
        account.totp_sealed = None;
        account.totp_pending = None;
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
        code: Option<&str>,
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
        let password_ok = password_matches(&password, &account.password_hash);
        let _write = self.lock();
        // Re-read: another sign-in may have counted (or used a code)
        // meanwhile.
        let mut account = self.get(name)?.ok_or(AccountError::BadCredentials)?;
        if account.disabled {
            return Err(AccountError::Disabled);
        }
        // The code is checked only after the password, so that a code
        // cannot be burnt (its step marked used) without the password.
        let checked =
            if password_ok { self.check_code(&mut account, code, now_ms) } else { Err(AccountError::BadCredentials) };
        if checked.is_ok() {
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
            Err(checked.err().unwrap_or(AccountError::BadCredentials))
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
