//! The [`SegmentStore`] contract of [`ObjectSegments`], each method handed
//! to the part that does it: the group commit (`commit.rs`), listings and
//! reads (`segments.rs`), rewrites (`rewrite.rs`).

use std::path::PathBuf;
use std::sync::Arc;

use glimpse_common::identity::OrgId;
use glimpse_common::record::DataKind;
use glimpse_store::keys::OrgKey;
use glimpse_store::store::seam::{
    BlockRun, Freed, Rewrite, SegmentBytes, SegmentInfo, SegmentKey, SegmentStore, SyncTicket,
};
use glimpse_store::store::{SegmentError, SegmentProblem};

use crate::layout::{day_of, last_part};
use crate::segments::{problem, ObjectSegments};

impl SegmentStore for ObjectSegments {
    fn check(&self) -> Result<(), SegmentError> {
        ObjectSegments::check(self)
    }

    fn describe(&self) -> String {
        self.root()
    }

    fn append(&self, runs: &[BlockRun<'_>]) -> Result<SyncTicket, SegmentError> {
        self.commit.append(runs)
    }

    fn sync(&self, ticket: &SyncTicket) -> Result<(), SegmentError> {
        self.commit.sync(ticket)
    }

    fn location(&self, key: &SegmentKey) -> PathBuf {
        let layout = &self.commit.layout;
        PathBuf::from(layout.url(&layout.object(&key.org, key.kind, key.day, &key.name)))
    }

    fn orgs(&self) -> Result<Vec<OrgId>, SegmentError> {
        let listed = self.list_dir(self.commit.layout.orgs())?;
        let mut orgs: Vec<OrgId> =
            listed.common_prefixes.iter().filter_map(|prefix| OrgId::new(last_part(prefix)).ok()).collect();
        orgs.sort();
        Ok(orgs)
    }

    fn days(&self, org: &OrgId, kind: DataKind, problems: &mut Vec<SegmentProblem>) -> Result<Vec<i64>, SegmentError> {
        let layout = &self.commit.layout;
        let listed = self.list_dir(layout.kind(org, kind))?;
        let mut days = Vec::new();
        for prefix in &listed.common_prefixes {
            match day_of(last_part(prefix)) {
                Some(day) => days.push(day),
                None => problem(problems, layout.url(prefix), "not a day; ignored".into()),
            }
        }
        for meta in &listed.objects {
            problem(problems, layout.url(&meta.location), "not a day; ignored".into());
        }
        days.sort();
        Ok(days)
    }

    fn segments(
        &self,
        org: &OrgId,
        kind: DataKind,
        day: i64,
        problems: &mut Vec<SegmentProblem>,
    ) -> Result<Vec<SegmentInfo>, SegmentError> {
        Ok(self.list_day(org, kind, day, problems)?.served)
    }

    fn open(&self, segment: &SegmentInfo) -> Result<Option<Box<dyn SegmentBytes>>, SegmentError> {
        Ok(self.get(&self.object_of(segment))?.map(|bytes| Box::new(bytes) as Box<dyn SegmentBytes>))
    }

    fn rewrite(
        &self,
        org: &OrgId,
        kind: DataKind,
        key: &OrgKey,
        edit: &mut dyn FnMut(&SegmentInfo, &dyn SegmentBytes) -> Rewrite,
    ) -> Result<Vec<(SegmentKey, Option<SegmentKey>)>, SegmentError> {
        crate::rewrite::rewrite(self, org, kind, key, edit)
    }

    fn delete_day(&self, org: &OrgId, kind: DataKind, day: i64) -> Result<Freed, SegmentError> {
        self.commit.discard(org, kind, Some(day));
        let layout = &self.commit.layout;
        let freed = self.delete_prefix(layout.day(org, kind, day))?;
        self.delete_prefix(layout.day_intents(org, kind, day))?;
        Ok(freed)
    }

    fn delete_org(&self, org: &OrgId) -> Result<Freed, SegmentError> {
        for kind in DataKind::ALL {
            self.commit.discard(org, kind, None);
        }
        let freed = self.delete_prefix(self.commit.layout.org(org))?;
        self.delete_prefix(self.commit.layout.org_rewrites(org))?;
        Ok(freed)
    }

    /// Nothing to do: an object store has no directories to leave empty.
    fn tidy(&self, _org: &OrgId) -> (u64, Vec<SegmentError>) {
        (0, Vec::new())
    }

    fn compact(
        &self,
        org: &OrgId,
        kind: DataKind,
        key: &OrgKey,
        catalog: &dyn glimpse_store::control::ControlStore,
        policy: &glimpse_store::store::seam::CompactPolicy,
    ) -> Result<glimpse_store::store::seam::Compacted, SegmentError> {
        crate::compact::compact(self, org, kind, key, catalog, policy)
    }

    fn staged_merge(&self, key: &SegmentKey) -> bool {
        let mut ignored = Vec::new();
        let Ok(listing) = self.list_day(&key.org, key.kind, key.day, &mut ignored) else { return false };
        listing.compacting.iter().any(|(first, id, _, _)| {
            listing.names.contains(first) && crate::layout::final_name(first, *id).as_deref() == Some(key.name.as_str())
        })
    }

    fn settle_compactions(
        &self,
        org: &OrgId,
        kind: DataKind,
        catalog: &dyn glimpse_store::control::ControlStore,
    ) -> Result<(), SegmentError> {
        crate::compact::settle_now(self, org, kind, catalog)
    }

    fn recover(&self, _key_of: &dyn Fn(&OrgId) -> Option<Arc<OrgKey>>) -> Result<(), SegmentError> {
        // Objects are written whole, so there is no torn tail to cut: only
        // rewrites a crash interrupted.
        crate::rewrite::recover(self)
    }
}
