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
