//! Reading the JSON records in a PKI directory: every device's manufacturing
//! record (`registrations/<org>/<device>.json`) and the revocation list
//! (`revoked.json`). The record formats and their checks are
//! `glimpse_common::registration`, shared with the collector's import.

use std::fs;
use std::io;
use std::path::Path;

use glimpse_common::registration::{admins_from_json, registration_file_stem, revoked_from_json};
pub use glimpse_common::registration::{AdminCertEntry, Registration, RevokedEntry, SharedKey};

use crate::fsio;
use crate::paths::{admins_path, registrations_dir, revoked_path};
use crate::CertsError;

/// Reads one registration file.
pub(crate) fn read_registration(path: &Path) -> Result<Registration, CertsError> {
    let text = fsio::read_secret(path)?;
    Registration::from_json(&text).map_err(|source| CertsError::Record { path: path.to_path_buf(), source })
}

/// Reads every `registrations/<org>/<device>.json`, sorted by organisation
/// then device. A directory with no registrations yet gives an empty list.
///
/// Hidden files (an interrupted `--force` write leaves `.name.tmp-*`) and
/// files not ending in `.json` are skipped; a badly named directory or file,
/// a record that does not parse, or one whose contents name another device
/// than its path is an error naming the file.
pub fn load_registrations(dir: &Path) -> Result<Vec<Registration>, CertsError> {
    let root = registrations_dir(dir);
    let orgs = match fs::read_dir(&root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(CertsError::io("list", root, e)),
    };
    let mut out = Vec::new();
    for org_entry in orgs {
        let org_entry = org_entry.map_err(|e| CertsError::io("list", &root, e))?;
        let org_path = org_entry.path();
        let org_name = org_entry.file_name().to_string_lossy().into_owned();
        if org_name.starts_with('.') {
            continue;
        }
        if !org_path.is_dir() {
            tracing::warn!(path = %org_path.display(), "ignoring a file among organisation directories");
            continue;
        }
        let files = fs::read_dir(&org_path).map_err(|e| CertsError::io("list", &org_path, e))?;
        for file in files {
            let file = file.map_err(|e| CertsError::io("list", &org_path, e))?;
            let path = file.path();
            let name = file.file_name().to_string_lossy().into_owned();
            let Some(stem) = registration_file_stem(&name) else {
                if !name.starts_with('.') {
                    tracing::warn!(path = %path.display(), "ignoring a file that is not a .json registration");
                }
                continue;
            };
            let registration = read_registration(&path)?
                .filed_as(&org_name, stem)
                .map_err(|source| CertsError::Record { path: path.clone(), source })?;
            out.push(registration);
        }
    }
    out.sort_by(|a, b| (&a.org, &a.device).cmp(&(&b.org, &b.device)));
    Ok(out)
}

/// Reads `revoked.json`, oldest revocation first. `init` always writes it, so
/// a missing file is an error.
pub fn load_revoked(dir: &Path) -> Result<Vec<RevokedEntry>, CertsError> {
    let path = revoked_path(dir);
    let text = fsio::read_text(&path)?;
    revoked_from_json(&text).map_err(|source| CertsError::Record { path, source })
}

/// Reads `admins.json`, oldest first. A PKI directory made before admin
/// certificates were recorded has none: no entries.
pub fn load_admins(dir: &Path) -> Result<Vec<AdminCertEntry>, CertsError> {
    let path = admins_path(dir);
    if !path.exists() {
        return Ok(Vec::new());
    }
    let text = fsio::read_text(&path)?;
    admins_from_json(&text).map_err(|source| CertsError::Record { path, source })
}

/// Writes `admins.json` (public: serials and names, no keys).
pub(crate) fn write_admins(dir: &Path, entries: &[AdminCertEntry]) -> Result<(), CertsError> {
    let path = admins_path(dir);
    let mut json =
        serde_json::to_vec_pretty(entries).map_err(|source| CertsError::Json { path: path.clone(), source })?;
    json.push(b'\n');
    fsio::write_file(&path, &json, fsio::Access::Public, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use glimpse_common::identity::{DeviceId, DeviceKind, OrgId};
    use glimpse_common::secret::SecretKey;

    fn sample() -> Registration {
        Registration {
            org: OrgId::new("acme").unwrap(),
            device: DeviceId::new("ap-1").unwrap(),
            kind: DeviceKind::Ap,
            shared_key: SharedKey::new(SecretKey::from_bytes([0xab; 32])),
            cert_serial: "01".into(),
            cert_sha256: "00".repeat(32),
            not_after: time::macros::datetime!(2035-01-01 0:00 UTC),
            ssh_public_key: None,
            site: None,
        }
    }

    #[test]
    fn bad_records_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let org_dir = registrations_dir(dir.path()).join("acme");
        fs::create_dir_all(&org_dir).unwrap();
        let good = sample().to_json().unwrap();
        fs::write(org_dir.join("ap-1.json"), &*good).unwrap();
        assert_eq!(load_registrations(dir.path()).unwrap(), vec![sample()]);

        // A record filed under another device's name.
        fs::write(org_dir.join("ap-2.json"), &*good).unwrap();
        let err = load_registrations(dir.path()).unwrap_err();
        assert!(
            matches!(
                err,
                CertsError::Record { source: glimpse_common::registration::RecordError::Mismatch { .. }, .. }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("ap-2.json"), "{err}");

        // A short key.
        let text = std::str::from_utf8(&good).unwrap().replace(&"ab".repeat(32), "abcd");
        fs::write(org_dir.join("ap-2.json"), text).unwrap();
        let err = load_registrations(dir.path()).unwrap_err();
        assert!(err.to_string().contains("ap-2.json"), "{err}");

        // Not JSON at all.
        fs::write(org_dir.join("ap-2.json"), "{").unwrap();
        let err = load_registrations(dir.path()).unwrap_err();
        assert!(
            matches!(err, CertsError::Record { source: glimpse_common::registration::RecordError::Json(_), .. }),
            "{err}"
        );
        assert!(err.to_string().contains("ap-2.json"), "{err}");
    }

    #[test]
    fn empty_dir_has_no_registrations() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load_registrations(dir.path()).unwrap().is_empty());
    }
}
