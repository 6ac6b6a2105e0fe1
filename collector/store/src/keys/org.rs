//! Per-organisation data keys: created on first use, stored only wrapped,
//! cached unwrapped in memory, destroyable for crypto-shredding.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use glimpse_common::identity::OrgId;
use glimpse_common::secret::SecretKey;

use super::master::MasterCell;
use super::{org_key_aad, random_key, unwrap_key, wrap_key, KeyError};
use crate::control::seam::ControlStore;

/// One organisation's unwrapped data key. Wiped when the last handle drops.
pub struct OrgKey {
    org: OrgId,
    key: SecretKey,
}

impl OrgKey {
    /// The organisation this key belongs to.
    pub fn org(&self) -> &OrgId {
        &self.org
    }

    /// The raw key, for the segment cipher.
    pub(crate) fn secret(&self) -> &SecretKey {
        &self.key
    }
}

impl fmt::Debug for OrgKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OrgKey({}, [redacted])", self.org)
    }
}

/// The organisation data keys in the catalog, with an in-memory cache.
pub struct OrgKeys {
    control: Arc<dyn ControlStore>,
    master: Arc<MasterCell>,
    cache: Mutex<HashMap<OrgId, Arc<OrgKey>>>,
    // Serialises every path that changes the database or fills the cache
    // from it, so a concurrent destroy cannot leave a stale key cached.
    slow: Mutex<()>,
}

impl fmt::Debug for OrgKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OrgKeys").finish_non_exhaustive()
    }
}

impl OrgKeys {
    pub(super) fn new(control: Arc<dyn ControlStore>, master: Arc<MasterCell>) -> OrgKeys {
        OrgKeys { control, master, cache: Mutex::new(HashMap::new()), slow: Mutex::new(()) }
    }

    fn cached(&self, org: &OrgId) -> Option<Arc<OrgKey>> {
        // The map is only ever changed by single inserts and removes, so it is
        // consistent even if a panicking thread poisoned the lock.
        let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        cache.get(org).cloned()
    }

    fn remember(&self, key: OrgKey) -> Arc<OrgKey> {
        let key = Arc::new(key);
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        cache.insert(key.org.clone(), Arc::clone(&key));
        key
    }

    /// The organisation's key, creating and storing a fresh random one on
    /// first use.
    pub fn get_or_create(&self, org: &OrgId) -> Result<Arc<OrgKey>, KeyError> {
        if let Some(key) = self.cached(org) {
            return Ok(key);
        }
        let _slow = self.slow.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(key) = self.cached(org) {
            return Ok(key);
        }
        let aad = org_key_aad(org);
        // Held from the read to the write: a rotation must not rewrap the
        // rows between them.
        let master = self.master.read();
        let key = match self.control.org_key(org.as_str())? {
            Some(wrapped) => {
                unwrap_key(&master, &aad, &wrapped).ok_or_else(|| KeyError::Unwrap { org: org.clone() })?
            }
            None => {
                let key = random_key()?;
                let wrapped = wrap_key(&master, &aad, &key)?;
                // Another collector sharing the store may have won the race.
                let (stored, created) = self.control.insert_org_key_if_absent(org.as_str(), &wrapped)?;
                if created {
                    tracing::info!(%org, "created data key for organisation");
                    key
                } else {
                    unwrap_key(&master, &aad, &stored).ok_or_else(|| KeyError::Unwrap { org: org.clone() })?
                }
            }
        };
        drop(master);
        Ok(self.remember(OrgKey { org: org.clone(), key }))
    }

    /// The organisation's key if it has one (it has stored data and the key
    /// was not destroyed).
    pub fn get(&self, org: &OrgId) -> Result<Option<Arc<OrgKey>>, KeyError> {
        if let Some(key) = self.cached(org) {
            return Ok(Some(key));
        }
        let _slow = self.slow.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(key) = self.cached(org) {
            return Ok(Some(key));
        }
        let master = self.master.read();
        let Some(wrapped) = self.wrapped(org)? else {
            return Ok(None);
        };
        let key =
            unwrap_key(&master, &org_key_aad(org), &wrapped).ok_or_else(|| KeyError::Unwrap { org: org.clone() })?;
        drop(master);
        Ok(Some(self.remember(OrgKey { org: org.clone(), key })))
    }

    /// The organisation's key for pseudonymising identifiers (see
    /// [`glimpse_common::minimise`]): derived from its data key (created if
    /// needed), so it is destroyed with it.
    pub fn pseudonym_key(&self, org: &OrgId) -> Result<ring::hmac::Key, KeyError> {
        let data_key = self.get_or_create(org)?;
        let outer = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, data_key.secret().expose());
        let derived = zeroize::Zeroizing::new(ring::hmac::sign(&outer, b"glimpse-pseudonym-key-v1").as_ref().to_vec());
        Ok(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &derived))
    }

    /// Drops the organisation's key from memory, so the next use reads it
    /// again (another collector sharing the control plane destroyed or
    /// created it); `None` drops every organisation's.
    pub fn forget(&self, org: Option<&OrgId>) {
        let _slow = self.slow.lock().unwrap_or_else(PoisonError::into_inner);
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        match org {
            Some(org) => {
                cache.remove(org);
            }
            None => cache.clear(),
        }
    }

    /// Destroys the organisation's key (crypto-shredding): everything stored
    /// under it becomes unreadable. Returns whether there was a key.
    ///
    /// The next write for the organisation creates a new, unrelated key.
    pub fn destroy_org_key(&self, org: &OrgId) -> Result<bool, KeyError> {
        let _slow = self.slow.lock().unwrap_or_else(PoisonError::into_inner);
        let existed = self.control.remove_org_key(org.as_str())?;
        self.cache.lock().unwrap_or_else(PoisonError::into_inner).remove(org);
        if existed {
            tracing::warn!(%org, "destroyed data key for organisation");
        }
        Ok(existed)
    }

    /// Every organisation that has a key.
    pub fn orgs(&self) -> Result<Vec<OrgId>, KeyError> {
        let mut orgs = Vec::new();
        for name in self.control.org_key_names()? {
            let org = OrgId::new(name.as_str()).map_err(|_| KeyError::Corrupt {
                what: format!("org_keys/{:?}", name.chars().take(80).collect::<String>()),
            })?;
            orgs.push(org);
        }
        Ok(orgs)
    }

    /// The stored wrapped key, for tests that inspect what is at rest.
    pub(crate) fn wrapped(&self, org: &OrgId) -> Result<Option<Vec<u8>>, KeyError> {
        Ok(self.control.org_key(org.as_str())?)
    }
}

#[cfg(test)]
mod tests {
    use redb::ReadableTable;

    use crate::keys::{test_master, Catalog};

    use super::*;

    fn org(name: &str) -> OrgId {
        OrgId::new(name).unwrap()
    }

    #[test]
    fn keys_are_per_org_persistent_and_wrapped() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = {
            let catalog = Catalog::open(dir.path(), test_master(1)).unwrap();
            let keys = catalog.org_keys();
            assert!(keys.get(&org("acme")).unwrap().is_none());
            let a = keys.get_or_create(&org("acme")).unwrap();
            let b = keys.get_or_create(&org("globex")).unwrap();
            assert_ne!(a.secret(), b.secret());
            assert!(Arc::ptr_eq(&a, &keys.get_or_create(&org("acme")).unwrap()));
            let wrapped = keys.wrapped(&org("acme")).unwrap().unwrap();
            assert!(!wrapped.windows(32).any(|w| w == a.secret().expose().as_slice()));
            (a.secret().clone(), b.secret().clone())
        };
        let catalog = Catalog::open(dir.path(), test_master(1)).unwrap();
        let keys = catalog.org_keys();
        assert_eq!(keys.get(&org("acme")).unwrap().unwrap().secret(), &a);
        assert_eq!(keys.get_or_create(&org("globex")).unwrap().secret(), &b);
        assert_eq!(keys.orgs().unwrap(), vec![org("acme"), org("globex")]);

        // The raw key bytes appear nowhere in the database file.
        let bytes = std::fs::read(catalog.path()).unwrap();
        assert!(!bytes.windows(32).any(|w| w == a.expose().as_slice()));
    }

    #[test]
    fn destroy_forgets_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open(dir.path(), test_master(1)).unwrap();
        let keys = catalog.org_keys();
        let old = keys.get_or_create(&org("acme")).unwrap().secret().clone();
        assert!(keys.destroy_org_key(&org("acme")).unwrap());
        assert!(!keys.destroy_org_key(&org("acme")).unwrap());
        assert!(keys.get(&org("acme")).unwrap().is_none());
        let new = keys.get_or_create(&org("acme")).unwrap();
        assert_ne!(new.secret(), &old);
    }

    #[test]
    fn corrupted_wrapped_key_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open(dir.path(), test_master(1)).unwrap();
        catalog.org_keys().get_or_create(&org("acme")).unwrap();
        drop(catalog);
        // Simulate a database whose master check passes but whose org key
        // row was damaged.
        {
            let db = redb::Database::create(dir.path().join(crate::keys::CATALOG_FILE)).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut t = txn.open_table(crate::control::redb_store::ORG_KEYS).unwrap();
                let mut v = t.get("acme").unwrap().unwrap().value().to_vec();
                v[20] ^= 1;
                t.insert("acme", v.as_slice()).unwrap();
            }
            txn.commit().unwrap();
        }
        let catalog = Catalog::open(dir.path(), test_master(1)).unwrap();
        let err = catalog.org_keys().get(&org("acme")).unwrap_err();
        assert_eq!(err.to_string(), "cannot unwrap key for organisation acme: wrong master key or corrupted key store");
    }
}
