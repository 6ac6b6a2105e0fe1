//! The embedded [`ControlStore`]: tables of the catalog database
//! `glimpse.redb`, unchanged in name and layout from before the seam.
//! Every write is one redb write transaction, committed (and so fsynced)
//! before it returns.

use std::io;
use std::sync::Arc;

use redb::{Database, ReadableTable, TableDefinition};

use super::seam::{ControlError, ControlStore, DeviceRow, StreamSeq};

/// Collector-wide metadata (the master key check).
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// (organisation, device) → the registry's encoded row.
pub(crate) const DEVICES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("devices");
/// (organisation, device) → the OpenSSH public key line a switch or gateway
/// authenticates with on the SSH port. Public, so stored as is.
const SSH_KEYS: TableDefinition<(&str, &str), &str> = TableDefinition::new("device_ssh_keys");
/// (organisation, device, stream id) → highest durably stored batch sequence.
const STREAMS: TableDefinition<(&str, &str, u64), u64> = TableDefinition::new("stream_seq");
/// organisation → wrapped data key.
pub(crate) const ORG_KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("org_keys");
/// organisation → encoded decisions.
pub(crate) const ORG_POLICY: TableDefinition<&str, &[u8]> = TableDefinition::new("org_policy");
/// Collector-wide facts: the retention policy last audited.
const COLLECTOR_STATE: TableDefinition<&str, &str> = TableDefinition::new("collector_state");
/// The audit chain head.
const AUDIT_HEAD: TableDefinition<&str, &[u8]> = TableDefinition::new("audit_head");
const HEAD_ROW: &str = "head";

/// The control store in a redb database.
#[derive(Debug, Clone)]
pub struct RedbControl {
    db: Arc<Database>,
}

/// Classifies a redb failure: only I/O that may pass is transient.
fn err<E: Into<redb::Error>>(e: E) -> ControlError {
    let e = e.into();
    let transient = match &e {
        redb::Error::Io(io) => matches!(
            io.kind(),
            io::ErrorKind::Interrupted
                | io::ErrorKind::WouldBlock
                | io::ErrorKind::TimedOut
                | io::ErrorKind::StorageFull
        ),
        _ => false,
    };
    if transient {
        ControlError::Transient(e.to_string())
    } else {
        ControlError::Permanent(e.to_string())
    }
}

impl RedbControl {
    /// The control store in `db`, creating its tables if missing.
    pub fn open(db: Arc<Database>) -> Result<RedbControl, ControlError> {
        let txn = db.begin_write().map_err(err)?;
        txn.open_table(META).map_err(err)?;
        txn.open_table(DEVICES).map_err(err)?;
        txn.open_table(SSH_KEYS).map_err(err)?;
        txn.open_table(STREAMS).map_err(err)?;
        txn.open_table(ORG_KEYS).map_err(err)?;
        txn.open_table(ORG_POLICY).map_err(err)?;
        txn.open_table(COLLECTOR_STATE).map_err(err)?;
        txn.open_table(AUDIT_HEAD).map_err(err)?;
        txn.commit().map_err(err)?;
        Ok(RedbControl { db })
    }
}

impl ControlStore for RedbControl {
    fn meta_or_insert(&self, name: &str, value: &[u8]) -> Result<Vec<u8>, ControlError> {
        let txn = self.db.begin_write().map_err(err)?;
        let stored = {
            let mut table = txn.open_table(META).map_err(err)?;
            let existing = table.get(name).map_err(err)?.map(|v| v.value().to_vec());
            match existing {
                Some(existing) => existing,
                None => {
                    table.insert(name, value).map_err(err)?;
                    value.to_vec()
                }
            }
        };
        txn.commit().map_err(err)?;
        Ok(stored)
    }

    fn device(&self, org: &str, device: &str) -> Result<Option<Vec<u8>>, ControlError> {
        let txn = self.db.begin_read().map_err(err)?;
        let table = txn.open_table(DEVICES).map_err(err)?;
        let row = table.get((org, device)).map_err(err)?.map(|v| v.value().to_vec());
        Ok(row)
    }

    fn devices(&self) -> Result<Vec<DeviceRow>, ControlError> {
        let txn = self.db.begin_read().map_err(err)?;
        let table = txn.open_table(DEVICES).map_err(err)?;
        let mut out = Vec::new();
        for row in table.iter().map_err(err)? {
            let (key, value) = row.map_err(err)?;
            let (org, device) = key.value();
            out.push(DeviceRow { org: org.to_owned(), device: device.to_owned(), row: value.value().to_vec() });
        }
        Ok(out)
    }

    fn put_devices(&self, rows: &[DeviceRow]) -> Result<(), ControlError> {
        let txn = self.db.begin_write().map_err(err)?;
        {
            let mut table = txn.open_table(DEVICES).map_err(err)?;
            for row in rows {
                table.insert((row.org.as_str(), row.device.as_str()), row.row.as_slice()).map_err(err)?;
            }
        }
        txn.commit().map_err(err)
    }

    fn update_device(
        &self,
        org: &str,
        device: &str,
        edit: &mut dyn FnMut(&[u8]) -> Option<Vec<u8>>,
    ) -> Result<bool, ControlError> {
        let txn = self.db.begin_write().map_err(err)?;
        let changed = {
            let mut table = txn.open_table(DEVICES).map_err(err)?;
            let existing = table.get((org, device)).map_err(err)?.map(|v| v.value().to_vec());
            match existing.as_deref().and_then(&mut *edit) {
                Some(row) => {
                    table.insert((org, device), row.as_slice()).map_err(err)?;
                    true
                }
                None => false,
            }
        };
        if changed {
            txn.commit().map_err(err)?;
        } else {
            txn.abort().map_err(err)?;
        }
        Ok(changed)
    }

    fn ssh_key(&self, org: &str, device: &str) -> Result<Option<String>, ControlError> {
        let txn = self.db.begin_read().map_err(err)?;
        let table = txn.open_table(SSH_KEYS).map_err(err)?;
        let line = table.get((org, device)).map_err(err)?.map(|v| v.value().to_owned());
        Ok(line)
    }

    fn set_ssh_key(&self, org: &str, device: &str, line: Option<&str>) -> Result<(), ControlError> {
        let txn = self.db.begin_write().map_err(err)?;
        {
            let mut table = txn.open_table(SSH_KEYS).map_err(err)?;
            match line {
                Some(line) => {
                    table.insert((org, device), line).map_err(err)?;
                }
                None => {
                    table.remove((org, device)).map_err(err)?;
                }
            }
        }
        txn.commit().map_err(err)
    }

    fn stored_seq(&self, org: &str, device: &str, stream: u64) -> Result<u64, ControlError> {
        let txn = self.db.begin_read().map_err(err)?;
        let table = txn.open_table(STREAMS).map_err(err)?;
        let seq = table.get((org, device, stream)).map_err(err)?.map_or(0, |v| v.value());
        Ok(seq)
    }

    fn raise_stored_seqs(&self, updates: &[StreamSeq]) -> Result<(), ControlError> {
        let txn = self.db.begin_write().map_err(err)?;
        {
            let mut table = txn.open_table(STREAMS).map_err(err)?;
            for ((org, device, stream), seq) in updates {
                let key = (org.as_str(), device.as_str(), *stream);
                let current = table.get(key).map_err(err)?.map_or(0, |v| v.value());
                if *seq > current {
                    table.insert(key, *seq).map_err(err)?;
                }
            }
        }
        txn.commit().map_err(err)
    }

    fn org_key(&self, org: &str) -> Result<Option<Vec<u8>>, ControlError> {
        let txn = self.db.begin_read().map_err(err)?;
        let table = txn.open_table(ORG_KEYS).map_err(err)?;
        let wrapped = table.get(org).map_err(err)?.map(|v| v.value().to_vec());
        Ok(wrapped)
    }

    fn insert_org_key_if_absent(&self, org: &str, wrapped: &[u8]) -> Result<(Vec<u8>, bool), ControlError> {
        let txn = self.db.begin_write().map_err(err)?;
        let stored = {
            let mut table = txn.open_table(ORG_KEYS).map_err(err)?;
            let existing = table.get(org).map_err(err)?.map(|v| v.value().to_vec());
            match existing {
                Some(existing) => (existing, false),
                None => {
                    table.insert(org, wrapped).map_err(err)?;
                    (wrapped.to_vec(), true)
                }
            }
        };
        txn.commit().map_err(err)?;
        Ok(stored)
    }

    fn remove_org_key(&self, org: &str) -> Result<bool, ControlError> {
        let txn = self.db.begin_write().map_err(err)?;
        let existed = txn.open_table(ORG_KEYS).map_err(err)?.remove(org).map_err(err)?.is_some();
        txn.commit().map_err(err)?;
        Ok(existed)
    }

    fn org_key_names(&self) -> Result<Vec<String>, ControlError> {
        let txn = self.db.begin_read().map_err(err)?;
        let table = txn.open_table(ORG_KEYS).map_err(err)?;
        let mut names = Vec::new();
        for row in table.iter().map_err(err)? {
            names.push(row.map_err(err)?.0.value().to_owned());
        }
        Ok(names)
    }

    fn policies(&self) -> Result<Vec<(String, Vec<u8>)>, ControlError> {
        let txn = self.db.begin_read().map_err(err)?;
        let table = txn.open_table(ORG_POLICY).map_err(err)?;
        let mut out = Vec::new();
        for row in table.iter().map_err(err)? {
            let (key, value) = row.map_err(err)?;
            out.push((key.value().to_owned(), value.value().to_vec()));
        }
        Ok(out)
    }

    fn put_policy(&self, org: &str, row: &[u8]) -> Result<(), ControlError> {
        let txn = self.db.begin_write().map_err(err)?;
        txn.open_table(ORG_POLICY).map_err(err)?.insert(org, row).map_err(err)?;
        txn.commit().map_err(err)
    }

    fn replace_state(&self, name: &str, value: &str) -> Result<Option<String>, ControlError> {
        let txn = self.db.begin_write().map_err(err)?;
        let before = {
            let mut table = txn.open_table(COLLECTOR_STATE).map_err(err)?;
            let before = table.get(name).map_err(err)?.map(|v| v.value().to_owned());
            if before.as_deref() != Some(value) {
                table.insert(name, value).map_err(err)?;
            }
            before
        };
        txn.commit().map_err(err)?;
        Ok(before)
    }

    fn audit_head(&self) -> Result<Option<Vec<u8>>, ControlError> {
        let txn = self.db.begin_read().map_err(err)?;
        let table = txn.open_table(AUDIT_HEAD).map_err(err)?;
        let head = table.get(HEAD_ROW).map_err(err)?.map(|v| v.value().to_vec());
        Ok(head)
    }

    fn set_audit_head(&self, head: &[u8]) -> Result<(), ControlError> {
        let txn = self.db.begin_write().map_err(err)?;
        txn.open_table(AUDIT_HEAD).map_err(err)?.insert(HEAD_ROW, head).map_err(err)?;
        txn.commit().map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open() -> (tempfile::TempDir, RedbControl) {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Database::create(dir.path().join("c.redb")).unwrap());
        (dir, RedbControl::open(db).unwrap())
    }

    #[test]
    fn a_batch_of_registrations_is_one_transaction_and_sequences_never_go_back() {
        let (_dir, c) = open();
        let rows: Vec<DeviceRow> = (0..100)
            .map(|i| DeviceRow { org: "acme".into(), device: format!("ap-{i:03}"), row: vec![i as u8] })
            .collect();
        c.put_devices(&rows).unwrap();
        assert_eq!(c.devices().unwrap(), rows);
        let key = ("acme".to_owned(), "ap-001".to_owned(), 9);
        c.raise_stored_seqs(&[(key.clone(), 5)]).unwrap();
        c.raise_stored_seqs(&[(key.clone(), 3)]).unwrap();
        assert_eq!(c.stored_seq("acme", "ap-001", 9).unwrap(), 5);
        assert_eq!(c.stored_seq("acme", "ap-001", 8).unwrap(), 0);
    }

    #[test]
    fn read_modify_writes_decide_once() {
        let (_dir, c) = open();
        assert_eq!(c.insert_org_key_if_absent("acme", b"first").unwrap(), (b"first".to_vec(), true));
        assert_eq!(c.insert_org_key_if_absent("acme", b"second").unwrap(), (b"first".to_vec(), false));
        assert_eq!(c.org_key_names().unwrap(), ["acme"]);
        assert!(c.remove_org_key("acme").unwrap());
        assert!(!c.remove_org_key("acme").unwrap());
        assert_eq!(c.replace_state("retention", "a").unwrap(), None);
        assert_eq!(c.replace_state("retention", "a").unwrap().as_deref(), Some("a"));
        assert!(!c.update_device("acme", "nobody", &mut |_| Some(vec![1])).unwrap(), "a missing device is not offered");
        assert_eq!(c.meta_or_insert("check", b"x").unwrap(), b"x");
        assert_eq!(c.meta_or_insert("check", b"y").unwrap(), b"x");
    }

    #[test]
    fn only_passing_io_failures_are_transient() {
        assert!(err(redb::Error::Io(io::ErrorKind::StorageFull.into())).is_transient());
        assert!(!err(redb::Error::Io(io::ErrorKind::PermissionDenied.into())).is_transient());
        assert!(!err(redb::Error::Corrupted("bad page".into())).is_transient());
    }
}
