//! Whether the registry (and the CRL) still admit what a live session
//! authenticated with: checked for every live session on reload, and once
//! by each session as it goes live, so that one authenticating while a
//! reload runs is not missed.

use std::collections::HashSet;

use tracing::warn;

use glimpse_common::identity::DeviceIdentity;
use glimpse_store::store::Store;

use crate::ingest::directory::{Credential, Withdrawn};

/// Why `identity`, which authenticated with `credential`, may no longer be
/// connected, or `None` while it still may. A registry that cannot be read
/// keeps the session (a storage fault must not disconnect every device);
/// it is logged.
pub(crate) fn withdrawn(
    store: &Store,
    identity: &DeviceIdentity,
    credential: &Credential,
    on_crl: &dyn Fn(&str) -> bool,
) -> Option<Withdrawn> {
    if let Credential::Certificate { serial } = credential {
        if on_crl(serial) {
            return Some(Withdrawn::Revoked);
        }
    }
    let registry = store.registry();
    let registration = match registry.get(&identity.org, &identity.device) {
        Ok(Some(registration)) => registration,
        Ok(None) => return Some(Withdrawn::Unregistered),
        Err(e) => {
            warn!(device = %identity, "cannot check a live session against the registry: {e}");
            return None;
        }
    };
    if registration.revoked {
        return Some(Withdrawn::Revoked);
    }
    match credential {
        Credential::Certificate { serial } => {
            (!registration.cert_serial.eq_ignore_ascii_case(serial)).then_some(Withdrawn::Rekeyed)
        }
        Credential::SshKey { fingerprint } => match registry.ssh_key(&identity.org, &identity.device) {
            Ok(Some(line)) => match russh::keys::PublicKey::from_openssh(&line) {
                Ok(key) => (glimpse_common::ssh_keys::fingerprint(&key) != *fingerprint).then_some(Withdrawn::Rekeyed),
                Err(_) => Some(Withdrawn::Rekeyed),
            },
            Ok(None) => Some(Withdrawn::Rekeyed),
            Err(e) => {
                warn!(device = %identity, "cannot check a live session's SSH key against the registry: {e}");
                None
            }
        },
    }
}

/// The serials the CRL files at `path` list; `None` when there is no CRL.
pub(crate) fn crl_serials(path: Option<&std::path::Path>) -> Result<HashSet<String>, String> {
    let Some(path) = path else { return Ok(HashSet::new()) };
    let crls = glimpse_files::load_crls(path).map_err(|e| e.to_string())?;
    let mut serials = HashSet::new();
    for crl in crls {
        let listed = glimpse_common::certificate::crl_revoked_serials(crl.as_ref())
            .map_err(|e| format!("{}: {e}", path.display()))?;
        serials.extend(listed);
    }
    Ok(serials)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use glimpse_common::identity::{DeviceId, DeviceKind, OrgId};
    use glimpse_common::secret::SecretKey;
    use glimpse_store::keys::{DeviceRegistration, MasterKey};

    fn registration(identity: &DeviceIdentity, serial: &str, revoked: bool) -> DeviceRegistration {
        DeviceRegistration {
            identity: identity.clone(),
            shared_key: SecretKey::from_bytes([7; 32]),
            cert_serial: serial.to_owned(),
            revoked,
            site: None,
        }
    }

    #[test]
    fn every_reason_is_told_apart_and_a_session_still_admitted_stays() {
        let dir = tempfile::tempdir().unwrap();
        let master = MasterKey::from_secret(SecretKey::from_bytes([3; 32]));
        let clock = Arc::new(glimpse_common::clock::SystemClock);
        let store = Store::open(dir.path(), master, clock, Default::default()).unwrap();
        let org = OrgId::new("acme").unwrap();
        let ap = DeviceIdentity { org: org.clone(), device: DeviceId::new("ap-1").unwrap(), kind: DeviceKind::Ap };
        let sw = DeviceIdentity { org: org.clone(), device: DeviceId::new("sw-1").unwrap(), kind: DeviceKind::Switch };
        let no_crl = |_: &str| false;
        let cert = |serial: &str| Credential::Certificate { serial: serial.to_owned() };

        assert_eq!(withdrawn(&store, &ap, &cert("0a"), &no_crl), Some(Withdrawn::Unregistered));
        store.registry().upsert(registration(&ap, "0a", false)).unwrap();
        assert_eq!(withdrawn(&store, &ap, &cert("0a"), &no_crl), None, "still admitted");
        assert_eq!(withdrawn(&store, &ap, &cert("0A"), &no_crl), None, "serials compare without case");
        assert_eq!(withdrawn(&store, &ap, &cert("0a"), &|s| s == "0a"), Some(Withdrawn::Revoked), "on the CRL");
        assert_eq!(withdrawn(&store, &ap, &cert("0b"), &no_crl), Some(Withdrawn::Rekeyed), "another certificate");
        store.registry().upsert(registration(&ap, "0a", true)).unwrap();
        assert_eq!(withdrawn(&store, &ap, &cert("0a"), &no_crl), Some(Withdrawn::Revoked), "revoked in the registry");

        let key = glimpse_common::ssh_keys::generate_ed25519("acme/sw-1").unwrap();
        let parsed = russh::keys::PublicKey::from_openssh(&key.public_openssh).unwrap();
        let ssh = Credential::SshKey { fingerprint: glimpse_common::ssh_keys::fingerprint(&parsed) };
        store.registry().upsert(registration(&sw, "0c", false)).unwrap();
        assert_eq!(withdrawn(&store, &sw, &ssh, &no_crl), Some(Withdrawn::Rekeyed), "no SSH key registered");
        store.registry().set_ssh_key(&org, &sw.device, Some(&key.public_openssh)).unwrap();
        assert_eq!(withdrawn(&store, &sw, &ssh, &|_| true), None, "the CRL lists certificates, not SSH keys");
        let other = glimpse_common::ssh_keys::generate_ed25519("acme/sw-1").unwrap();
        store.registry().set_ssh_key(&org, &sw.device, Some(&other.public_openssh)).unwrap();
        assert_eq!(withdrawn(&store, &sw, &ssh, &no_crl), Some(Withdrawn::Rekeyed), "another SSH key");
    }
}
