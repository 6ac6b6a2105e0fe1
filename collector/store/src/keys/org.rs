//! Per-organisation data keys: created on first use, stored only wrapped,
//! cached unwrapped in memory, rotated to new versions (see [`super::versions`]),
//! destroyable for crypto-shredding.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use glimpse_common::identity::OrgId;
use glimpse_common::secret::SecretKey;

use super::master::{MasterCell, MasterKey};
use super::versions::{Entry, KeyList, KeyState, MAX_KEY_VERSIONS};
use super::{org_key_aad, random_key, unwrap_key, wrap_key, KeyError};
use crate::control::seam::ControlStore;

/// Associated data of an organisation's wrapped pseudonym key.
const PSEUDONYM_KEY_AAD: &[u8] = b"glimpse-org-pseudonym-key-v1";
/// HMAC label deriving the pseudonym key from data key version 1.
const PSEUDONYM_LABEL: &[u8] = b"glimpse-pseudonym-key-v1";
/// How many times a rotation or retirement retries a row another collector
/// changed under it before giving up.
const CAS_ATTEMPTS: usize = 8;

/// Associated data of version `version` of an organisation's data key:
/// version 1 keeps the label it always had.
pub(crate) fn versioned_aad(org: &OrgId, version: u32) -> Vec<u8> {
    let mut aad = org_key_aad(org);
    if version != 1 {
        aad.push(b':');
        aad.extend_from_slice(&version.to_be_bytes());
    }
    aad
}

fn pseudonym_aad(org: &OrgId) -> Vec<u8> {
    [PSEUDONYM_KEY_AAD, org.as_str().as_bytes()].concat()
}

/// One organisation's unwrapped data keys: the current version, which
/// seals everything new, and every older version not yet retired, which
/// still opens what it sealed. Wiped when the last handle drops.
pub struct OrgKey {
    org: OrgId,
    current: u32,
    /// Every version with a key, ascending; the current one among them.
    keys: Vec<(u32, SecretKey)>,
    pseudonym: SecretKey,
}

impl OrgKey {
    /// The organisation these keys belong to.
    pub fn org(&self) -> &OrgId {
        &self.org
    }

    /// The current version: what new segments are sealed under.
    pub fn version(&self) -> u32 {
        self.current
    }

    /// The current key, for tests that look for it at rest.
    #[cfg(test)]
    pub(crate) fn secret(&self) -> &SecretKey {
        // The current version always has its key (`KeyList::check`).
        self.secret_of(self.current).unwrap_or(&self.pseudonym)
    }

    /// The key of `version`, if it is not retired (or unknown).
    pub(crate) fn secret_of(&self, version: u32) -> Option<&SecretKey> {
        self.keys.iter().find(|(v, _)| *v == version).map(|(_, k)| k)
    }

    /// A key ring of the given versions, for tests.
    #[cfg(test)]
    pub(crate) fn with_versions(org: OrgId, current: u32, keys: Vec<(u32, SecretKey)>) -> OrgKey {
        let pseudonym = derive_pseudonym(&keys[0].1);
        OrgKey { org, current, keys, pseudonym }
    }

    /// A single-version key ring, for tests and tools that seal with a key
    /// of their own.
    pub fn single(org: OrgId, key: SecretKey) -> OrgKey {
        let pseudonym = derive_pseudonym(&key);
        OrgKey { org, current: 1, keys: vec![(1, key)], pseudonym }
    }
}

impl fmt::Debug for OrgKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OrgKey({}, version {}, [redacted])", self.org, self.current)
    }
}

/// The pseudonym key as version 1 of a data key yields it.
fn derive_pseudonym(v1: &SecretKey) -> SecretKey {
    let outer = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, v1.expose());
    let tag = ring::hmac::sign(&outer, PSEUDONYM_LABEL);
    let mut bytes = [0u8; 32];
    bytes.copy_from_slice(tag.as_ref());
    let key = SecretKey::from_bytes(bytes);
    zeroize::Zeroize::zeroize(&mut bytes);
    key
}

/// A change of a stored key list: given the master key, edits the list and
/// returns what to report, or `None` to leave it as it was.
type ListChange<'a, T> = dyn FnMut(&MasterKey, &mut KeyList) -> Result<Option<T>, KeyError> + 'a;

/// One version of an organisation's data key, as the status reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyVersion {
    /// The version number (1 for the organisation's first key).
    pub version: u32,
    /// Its state.
    pub state: KeyState,
}

/// What a data key rotation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataKeyRotation {
    /// The new current version.
    pub version: u32,
    /// The version it replaced, now retiring.
    pub previous: u32,
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

    fn corrupt(org: &OrgId, what: String) -> KeyError {
        KeyError::Corrupt { what: format!("org_keys/{org}: {what}") }
    }

    /// The stored row, decoded.
    fn list(&self, org: &OrgId) -> Result<Option<(Vec<u8>, KeyList)>, KeyError> {
        let Some(row) = self.control.org_key(org.as_str())? else { return Ok(None) };
        let list = KeyList::decode(&row).map_err(|e| Self::corrupt(org, e))?;
        Ok(Some((row, list)))
    }

    /// Unwraps every version of `list` that has a key.
    fn unwrap_list(master: &MasterKey, org: &OrgId, list: &KeyList) -> Result<OrgKey, KeyError> {
        let unwrap = || KeyError::Unwrap { org: org.clone() };
        let mut keys = Vec::with_capacity(list.entries.len());
        for e in &list.entries {
            if let Some(w) = &e.wrapped {
                keys.push((e.version, unwrap_key(master, &versioned_aad(org, e.version), w).ok_or_else(unwrap)?));
            }
        }
        let pseudonym = match &list.pseudonym {
            Some(w) => unwrap_key(master, &pseudonym_aad(org), w).ok_or_else(unwrap)?,
            None => derive_pseudonym(&keys.iter().find(|(v, _)| *v == 1).ok_or_else(unwrap)?.1),
        };
        Ok(OrgKey { org: org.clone(), current: list.current(), keys, pseudonym })
    }

    /// The organisation's keys, creating and storing a fresh random one
    /// (version 1) on first use.
    pub fn get_or_create(&self, org: &OrgId) -> Result<Arc<OrgKey>, KeyError> {
        if let Some(key) = self.cached(org) {
            return Ok(key);
        }
        let _slow = self.slow.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(key) = self.cached(org) {
            return Ok(key);
        }
        // Held from the read to the write: a rotation must not rewrap the
        // rows between them.
        let master = self.master.read();
        let key = match self.list(org)? {
            Some((_, list)) => Self::unwrap_list(&master, org, &list)?,
            None => {
                let key = random_key()?;
                let wrapped = wrap_key(&master, &versioned_aad(org, 1), &key)?;
                // Another collector sharing the store may have won the race.
                let (stored, created) = self.control.insert_org_key_if_absent(org.as_str(), &wrapped)?;
                if created {
                    tracing::info!(%org, "created data key for organisation");
                    OrgKey::single(org.clone(), key)
                } else {
                    let list = KeyList::decode(&stored).map_err(|e| Self::corrupt(org, e))?;
                    Self::unwrap_list(&master, org, &list)?
                }
            }
        };
        drop(master);
        Ok(self.remember(key))
    }

    /// The organisation's keys if it has any (it has stored data and they
    /// were not destroyed).
    pub fn get(&self, org: &OrgId) -> Result<Option<Arc<OrgKey>>, KeyError> {
        if let Some(key) = self.cached(org) {
            return Ok(Some(key));
        }
        let _slow = self.slow.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(key) = self.cached(org) {
            return Ok(Some(key));
        }
        let master = self.master.read();
        let Some((_, list)) = self.list(org)? else {
            return Ok(None);
        };
        let key = Self::unwrap_list(&master, org, &list)?;
        drop(master);
        Ok(Some(self.remember(key)))
    }

    /// The organisation's key for pseudonymising identifiers (see
    /// [`glimpse_common::minimise`]): derived from version 1 of its data key
    /// (created if needed) and kept across rotations, so pseudonyms stay
    /// stable; destroyed with the data key.
    pub fn pseudonym_key(&self, org: &OrgId) -> Result<ring::hmac::Key, KeyError> {
        let keys = self.get_or_create(org)?;
        Ok(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, keys.pseudonym.expose()))
    }

    /// Drops the organisation's key from memory, so the next use reads it
    /// again (another collector sharing the control plane destroyed,
    /// created or rotated it); `None` drops every organisation's.
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

    /// Changes the organisation's stored list with `change` (which returns
    /// what to report, or `None` to change nothing), compare-and-set, so a
    /// change by another collector in between is seen and `change` applied
    /// to it instead. One transaction: a crash leaves the list before or
    /// after, never between.
    fn change_list<T>(&self, org: &OrgId, change: &mut ListChange<'_, T>) -> Result<Option<T>, KeyError> {
        let _slow = self.slow.lock().unwrap_or_else(PoisonError::into_inner);
        let master = self.master.read();
        for _ in 0..CAS_ATTEMPTS {
            let Some((row, mut list)) = self.list(org)? else { return Err(KeyError::NoDataKey { org: org.clone() }) };
            let Some(out) = change(&master, &mut list)? else { return Ok(None) };
            list.check().map_err(|e| Self::corrupt(org, e))?;
            if self.control.replace_org_key(org.as_str(), &row, &list.encode())? {
                self.cache.lock().unwrap_or_else(PoisonError::into_inner).remove(org);
                return Ok(Some(out));
            }
        }
        Err(KeyError::Control(crate::control::ControlError::Transient(format!(
            "the data key list of {org} kept changing under a rotation"
        ))))
    }

    /// Rotates the organisation's data key: a new random version becomes
    /// current (every new segment is sealed under it from now on) and the
    /// one it replaces becomes retiring (still read; its segments are
    /// re-encrypted in the background, then it is retired). No segment is
    /// rewritten here. Refused for an organisation without a key.
    pub fn rotate(&self, org: &OrgId) -> Result<DataKeyRotation, KeyError> {
        self.rotate_then(org, &mut |_| Ok(()))
    }

    /// [`OrgKeys::rotate`], calling `before` with what is about to commit
    /// just before it does (to audit it: a crash after the commit must not
    /// lose the entry). An error from `before` abandons the rotation. A
    /// commit that meets a change by another collector is tried again, so
    /// `before` may be called more than once.
    pub fn rotate_then(
        &self,
        org: &OrgId,
        before: &mut dyn FnMut(&DataKeyRotation) -> Result<(), KeyError>,
    ) -> Result<DataKeyRotation, KeyError> {
        let rotated = self.change_list(org, &mut |master, list| {
            if list.entries.len() >= MAX_KEY_VERSIONS {
                // Retired versions are only names: the oldest go first.
                let retired = list.entries.iter().take_while(|e| e.state == KeyState::Retired).count();
                if retired == 0 {
                    return Err(KeyError::RotationUnavailable {
                        reason: format!("{org} has {MAX_KEY_VERSIONS} data key versions not yet retired"),
                    });
                }
                list.entries.remove(0);
            }
            let previous = list.current();
            let version = previous
                .checked_add(1)
                .ok_or(KeyError::RotationUnavailable { reason: "no data key version is left".into() })?;
            if list.pseudonym.is_none() {
                let v1 = list
                    .entry(1)
                    .and_then(|e| e.wrapped.as_ref())
                    .ok_or_else(|| KeyError::Unwrap { org: org.clone() })?;
                let v1 = unwrap_key(master, &versioned_aad(org, 1), v1)
                    .ok_or_else(|| KeyError::Unwrap { org: org.clone() })?;
                list.pseudonym = Some(wrap_key(master, &pseudonym_aad(org), &derive_pseudonym(&v1))?);
            }
            for e in &mut list.entries {
                if e.state == KeyState::Current {
                    e.state = KeyState::Retiring;
                }
            }
            let key = random_key()?;
            let wrapped = wrap_key(master, &versioned_aad(org, version), &key)?;
            list.entries.push(Entry { version, state: KeyState::Current, wrapped: Some(wrapped) });
            let rotation = DataKeyRotation { version, previous };
            before(&rotation)?;
            Ok(Some(rotation))
        })?;
        let rotated = rotated.ok_or_else(|| KeyError::NoDataKey { org: org.clone() })?;
        super::rotation::crash_point("data-key-rotation:committed");
        tracing::warn!(%org, version = rotated.version, previous = rotated.previous, "rotated organisation data key");
        Ok(rotated)
    }

    /// Retires a retiring version: destroys its key, so whatever is still
    /// sealed under it becomes unreadable. The caller has made sure no
    /// segment is (see the store's re-encryption). Returns whether it was
    /// retiring (false: already retired, current, or unknown).
    pub fn retire(&self, org: &OrgId, version: u32) -> Result<bool, KeyError> {
        let done = self.change_list(org, &mut |_, list| {
            let Some(e) = list.entries.iter_mut().find(|e| e.version == version && e.state == KeyState::Retiring)
            else {
                return Ok(None);
            };
            e.state = KeyState::Retired;
            e.wrapped = None;
            Ok(Some(()))
        });
        let retired = match done {
            Ok(done) => done.is_some(),
            Err(KeyError::NoDataKey { .. }) => false,
            Err(e) => return Err(e),
        };
        if retired {
            super::rotation::crash_point("data-key-retire:committed");
            tracing::warn!(%org, version, "retired organisation data key version (key destroyed)");
        }
        Ok(retired)
    }

    /// The organisation's data key versions, oldest first; empty if it has
    /// no key.
    pub fn versions(&self, org: &OrgId) -> Result<Vec<KeyVersion>, KeyError> {
        let Some((_, list)) = self.list(org)? else { return Ok(Vec::new()) };
        Ok(list.entries.iter().map(|e| KeyVersion { version: e.version, state: e.state }).collect())
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

    /// The stored row, for tests that inspect what is at rest.
    #[cfg(test)]
    pub(crate) fn wrapped(&self, org: &OrgId) -> Result<Option<Vec<u8>>, KeyError> {
        Ok(self.control.org_key(org.as_str())?)
    }
}

/// A stored `org_keys` row rewrapped from `old` to `new` (master key
/// rotation): every version's key and the pseudonym key.
pub(super) fn rewrap_row(old: &MasterKey, new: &MasterKey, org: &OrgId, row: &[u8]) -> Result<Vec<u8>, KeyError> {
    let mut list = KeyList::decode(row).map_err(|e| OrgKeys::corrupt(org, e))?;
    let unwrap = || KeyError::Unwrap { org: org.clone() };
    for e in &mut list.entries {
        if let Some(w) = &e.wrapped {
            let aad = versioned_aad(org, e.version);
            let key = unwrap_key(old, &aad, w).ok_or_else(unwrap)?;
            e.wrapped = Some(wrap_key(new, &aad, &key)?);
        }
    }
    if let Some(w) = &list.pseudonym {
        let key = unwrap_key(old, &pseudonym_aad(org), w).ok_or_else(unwrap)?;
        list.pseudonym = Some(wrap_key(new, &pseudonym_aad(org), &key)?);
    }
    Ok(list.encode())
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

#[cfg(test)]
mod rotation_tests {
    use super::*;
    use crate::keys::{test_master, Catalog, MasterKey};

    #[test]
    fn rotation_adds_a_current_version_and_keeps_the_old_one_until_retired() {
        let dir = tempfile::tempdir().unwrap();
        let acme = OrgId::new("acme").unwrap();
        let catalog = Catalog::open(dir.path(), test_master(1)).unwrap();
        let keys = catalog.org_keys();
        assert!(matches!(keys.rotate(&acme), Err(KeyError::NoDataKey { .. })));
        let v1 = keys.get_or_create(&acme).unwrap().secret().clone();
        assert_eq!(keys.wrapped(&acme).unwrap().unwrap().len(), super::super::WRAPPED_LEN, "one key: the old form");
        let r = keys.rotate(&acme).unwrap();
        assert_eq!((r.previous, r.version), (1, 2));
        let ring = keys.get(&acme).unwrap().unwrap();
        assert_eq!((ring.version(), ring.secret_of(1)), (2, Some(&v1)));
        assert_ne!(ring.secret(), &v1);
        let v2 = ring.secret().clone();
        keys.rotate(&acme).unwrap();
        let states: Vec<_> = keys.versions(&acme).unwrap().iter().map(|v| (v.version, v.state)).collect();
        assert_eq!(states, [(1, KeyState::Retiring), (2, KeyState::Retiring), (3, KeyState::Current)]);
        assert!(keys.retire(&acme, 1).unwrap());
        drop(catalog);
        // Reopened: the list is what was stored; a wrapped key moved to
        // another version does not unwrap.
        let catalog = Catalog::open(dir.path(), test_master(1)).unwrap();
        let ring = catalog.org_keys().get(&acme).unwrap().unwrap();
        assert_eq!((ring.version(), ring.secret_of(1), ring.secret_of(2)), (3, None, Some(&v2)));
        let bytes = std::fs::read(catalog.path()).unwrap();
        for key in [&v1, &v2, ring.secret()] {
            assert!(!bytes.windows(32).any(|w| w == key.expose().as_slice()), "a data key at rest in the clear");
        }
        let mut list = KeyList::decode(&catalog.org_keys().wrapped(&acme).unwrap().unwrap()).unwrap();
        let (a, b) = (list.entries[1].wrapped.clone(), list.entries[2].wrapped.clone());
        (list.entries[1].wrapped, list.entries[2].wrapped) = (b, a);
        let row = catalog.org_keys().wrapped(&acme).unwrap().unwrap();
        assert!(catalog.control().replace_org_key("acme", &row, &list.encode()).unwrap());
        catalog.org_keys().forget(None);
        assert!(matches!(catalog.org_keys().get(&acme), Err(KeyError::Unwrap { .. })));
    }

    #[test]
    fn a_master_rotation_rewraps_every_version() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let key_file = dir.path().join("master.key");
        let acme = OrgId::new("acme").unwrap();
        let catalog = Catalog::open(&data, MasterKey::generate_file(&key_file).unwrap()).unwrap();
        let v1 = catalog.org_keys().get_or_create(&acme).unwrap().secret().clone();
        catalog.org_keys().rotate(&acme).unwrap();
        let v2 = catalog.org_keys().get(&acme).unwrap().unwrap().secret().clone();
        let pseudonym = ring::hmac::sign(&catalog.org_keys().pseudonym_key(&acme).unwrap(), b"x").as_ref().to_vec();
        let report = catalog.rotate_master(&|_, _, _| Ok(None)).unwrap();
        assert_eq!(report.org_keys, 1);
        drop(catalog);
        let catalog = Catalog::open(&data, MasterKey::load(&key_file).unwrap()).unwrap();
        let ring = catalog.org_keys().get(&acme).unwrap().unwrap();
        assert_eq!((ring.secret_of(1), ring.secret_of(2)), (Some(&v1), Some(&v2)));
        let after = ring::hmac::sign(&catalog.org_keys().pseudonym_key(&acme).unwrap(), b"x").as_ref().to_vec();
        assert_eq!(pseudonym, after);
    }
}
