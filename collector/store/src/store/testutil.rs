//! Test fixtures shared by the store and retention tests.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use glimpse_common::bounded::BoundedString;
use glimpse_common::clock::{utc_day, Clock, ManualClock, MILLIS_PER_DAY};
use glimpse_common::identity::{DeviceId, DeviceIdentity, DeviceKind, OrgId};
use glimpse_common::record::{DataKind, DeviceMetadata, Record, RecordBody};
use tempfile::TempDir;

use super::{ReadOutcome, Store, StoreError, StoredRecordRef};
use crate::keys::test_master;
use crate::retention_policy::RetentionPolicy;

/// Noon UTC on 2025-11-23.
pub(crate) const T0: i64 = 20_415 * MILLIS_PER_DAY + 12 * 3_600_000;

/// A store in a temporary directory with a hand-driven clock.
#[derive(Debug)]
pub(crate) struct Fixture {
    pub(crate) dir: TempDir,
    pub(crate) clock: ManualClock,
    pub(crate) store: Store,
}

impl Fixture {
    pub(crate) fn new() -> Fixture {
        Fixture::with_policy(RetentionPolicy::default())
    }

    pub(crate) fn with_policy(policy: RetentionPolicy) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(T0);
        let store = open(dir.path(), &clock, 1, policy).unwrap();
        Fixture { dir, clock, store }
    }

    /// Closes the store and opens it again with master key `master`.
    pub(crate) fn reopen(self, master: u8) -> Result<Fixture, StoreError> {
        let Fixture { dir, clock, store } = self;
        let policy = store.retention().clone();
        drop(store);
        let store = open(dir.path(), &clock, master, policy)?;
        Ok(Fixture { dir, clock, store })
    }

    /// Appends one metadata record per hostname as a batch.
    pub(crate) fn append(&self, id: &DeviceIdentity, seq: u64, hostnames: &[&str]) {
        let records: Vec<Record> = hostnames.iter().map(|h| record(h)).collect();
        let receipt = self.store.append(id, 1, seq, &records).unwrap();
        assert_eq!(receipt.records, hostnames.len());
    }

    /// Appends records as data of `kind` regardless of their body, so capture
    /// retention can be tested before capture records exist.
    pub(crate) fn append_as(&self, id: &DeviceIdentity, kind: DataKind, hostnames: &[&str]) {
        let now = self.clock.now_millis();
        let records: Vec<Record> = hostnames.iter().map(|h| record(h)).collect();
        let refs: Vec<_> = records
            .iter()
            .map(|record| {
                (StoredRecordRef { device: &id.device, device_kind: id.kind, received_at_ms: now, record }, None)
            })
            .collect();
        let key = self.store.org_keys().get_or_create(&id.org).unwrap();
        self.store.append_group(&id.org, kind, utc_day(now), &key, &refs).unwrap();
    }

    pub(crate) fn read(&self, org: &str, kind: DataKind) -> ReadOutcome {
        self.store.read(&OrgId::new(org).unwrap(), kind, None, None).unwrap()
    }
}

fn open(dir: &Path, clock: &ManualClock, master: u8, policy: RetentionPolicy) -> Result<Store, StoreError> {
    Store::open(dir, test_master(master), Arc::new(clock.clone()), policy)
}

pub(crate) fn identity(org: &str, device: &str) -> DeviceIdentity {
    DeviceIdentity { org: OrgId::new(org).unwrap(), device: DeviceId::new(device).unwrap(), kind: DeviceKind::Ap }
}

pub(crate) fn record(hostname: &str) -> Record {
    Record {
        observed_at_ms: 1_700_000_000_000,
        body: RecordBody::Metadata(DeviceMetadata {
            hostname: BoundedString::truncating(hostname),
            ..Default::default()
        }),
    }
}

/// The hostnames of the records read, in order.
pub(crate) fn hostnames(outcome: &ReadOutcome) -> Vec<String> {
    outcome
        .records
        .iter()
        .map(|r| match &r.record.body {
            RecordBody::Metadata(m) => m.hostname.as_str().to_owned(),
            #[allow(unreachable_patterns)]
            _ => String::new(),
        })
        .collect()
}

/// Every regular file under `dir`, sorted.
pub(crate) fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// Every segment file under `dir`, sorted.
pub(crate) fn segments(dir: &Path) -> Vec<PathBuf> {
    files(dir).into_iter().filter(|p| p.extension().is_some_and(|e| e == "seg")).collect()
}
