//! Rewriting a segment (erasure), atomically across crashes, and finishing
//! what a crash left of a rewrite.
//!
//! Objects are immutable, so a segment is replaced by a new object with a
//! fresh segment id (its blocks are sealed under nonces never used
//! before), as local files are (`glimpse-store`'s `local.rs`). An object
//! store has no rename, so the staged replacement is copied to its final
//! name; and several collectors share the bucket, so the steps are chosen
//! so that a reader on any collector, at any moment, serves the segment
//! exactly once, crash or not:
//!
//! 0. PUT the intent `rewrites/<org>/<kind>/<day>/<old>.<new id>.<ms>`
//!    (empty; `<ms>` is the clock when the rewrite started);
//! 1. PUT the replacement as `<old>.<new id>.staged` beside the old segment;
//! 2. DELETE the old segment;
//! 3. COPY the staged object to `<old sequence>-<new id>.seg`;
//! 4. DELETE the staged object;
//! 5. DELETE the intent.
//!
//! Readers serve a staged object exactly when neither the segment it
//! replaces nor its final name is listed (between steps 2 and 3), under
//! its final name; otherwise they skip it. So before step 2 the old
//! segment is served, from step 2 to 4 the new one (staged, then final),
//! and never both or neither, even while a collector lies crashed between
//! two steps. A replacement that removes every record is one DELETE.
//!
//! [`recover`] lists only the intents (not the whole bucket) and, for each:
//! the old segment still there means the rewrite stopped before step 2: it
//! is rolled back (staged object and intent deleted; run the erase again)
//! once the intent is older than [`STALE_REWRITE_MS`], since a younger one
//! may be another collector's rewrite under way, which a roll-back would
//! ruin (until then the staged object is simply not served); the old
//! segment gone means it stopped after step 2: it is completed (copied if
//! the final name is missing, then the staged object and intent deleted),
//! which is harmless even while the rewriter itself still runs. A rewrite
//! re-checks before step 2 that its staged object is still there and that
//! it is not itself older than half the stale age.
//!
//! One erase of an organisation's kind may run at a time across the
//! service (a rewrite also settles, without waiting, what an earlier one
//! left in the days it visits); the collector holding the control plane's
//! lock for the erase is expected to ensure that.

use std::sync::Arc;
use std::time::Instant;

use glimpse_common::identity::OrgId;
use glimpse_common::record::DataKind;
use glimpse_store::keys::OrgKey;
use glimpse_store::store::seam::{Rewrite, SegmentBytes, SegmentInfo, SegmentKey, SegmentStore};
use glimpse_store::store::{SegmentBuilder, SegmentError};
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};

use crate::error::local;
use crate::layout::{day_of, final_name, intent_name, last_part, parse_compact_intent, parse_intent, staged_name};
use crate::segments::{DayListing, ObjectSegments};

/// An intent younger than this (by the collector clocks) may belong to a
/// rewrite still under way on another collector: recover leaves it.
pub const STALE_REWRITE_MS: i64 = 60 * 60 * 1000;

/// See [`SegmentStore::rewrite`] and the module header.
pub(crate) fn rewrite(
    segs: &ObjectSegments,
    org: &OrgId,
    kind: DataKind,
    key: &OrgKey,
    edit: &mut dyn FnMut(&SegmentInfo, &dyn SegmentBytes) -> Rewrite,
) -> Result<Vec<(SegmentKey, Option<SegmentKey>)>, SegmentError> {
    // Everything acknowledged before the erase is offered to it. Appends
    // meanwhile go on, into new objects this rewrite does not offer: the
    // outcome of local files, where they wait and are stored after it.
    segs.commit.drain(org, kind);
    let mut rewritten = Vec::new();
    let mut ignored = Vec::new();
    for day in segs.days(org, kind, &mut ignored)? {
        let mut listing = segs.list_day(org, kind, day, &mut ignored)?;
        if !listing.staged.is_empty() {
            settle_day(segs, org, kind, day, &listing)?;
            listing = segs.list_day(org, kind, day, &mut ignored)?;
        }
        for segment in listing.served {
            let path = segs.commit.layout.object(org, kind, day, &segment.key.name);
            let Some(bytes) = segs.get(&path)? else { continue };
            match edit(&segment, &bytes) {
                Rewrite::Keep => {}
                Rewrite::Stop => return Ok(rewritten),
                Rewrite::Replace(blocks) => {
                    drop(bytes);
                    let new = replace(segs, &segment.key, &path, key, &blocks)?;
                    rewritten.push((segment.key.clone(), new.map(|name| SegmentKey { name, ..segment.key.clone() })));
                }
            }
        }
    }
    Ok(rewritten)
}

/// Replaces the segment at `old` with one holding `blocks` (steps 0 to 5),
/// or deletes it when there are none. Returns the new name.
fn replace(
    segs: &ObjectSegments,
    old_key: &SegmentKey,
    old: &Path,
    key: &OrgKey,
    blocks: &[Vec<u8>],
) -> Result<Option<String>, SegmentError> {
    let layout = &segs.commit.layout;
    let (org, kind, day) = (&old_key.org, old_key.kind, old_key.day);
    if blocks.is_empty() {
        delete(segs, old)?;
        return Ok(None);
    }
    let started = Instant::now();
    let mut builder = SegmentBuilder::new(org, kind, day, key)?;
    for block in blocks {
        builder.seal(key, block)?;
    }
    let id = builder.segment_id();
    let old_name = &old_key.name;
    let Some(final_name) = final_name(old_name, id) else {
        return Err(local("rewrite", layout.url(old), false, "not a segment name".into()));
    };
    let staged = layout.object(org, kind, day, &staged_name(old_name, id));
    let target = layout.object(org, kind, day, &final_name);
    let intent = layout.intent(org, kind, day, &intent_name(old_name, id, segs.clock.now_millis()));
    put(segs, &intent, Vec::new())?;
    put(segs, &staged, builder.into_bytes())?;
    let stale = std::time::Duration::from_millis((STALE_REWRITE_MS / 2) as u64);
    if started.elapsed() > stale || !segs.exists(&staged)? {
        // Another collector's recover may take this rewrite for an
        // abandoned one: undo it rather than race that.
        delete(segs, &staged)?;
        delete(segs, &intent)?;
        return Err(local("rewrite", layout.url(old), true, "the rewrite stalled; run the erase again".into()));
    }
    delete(segs, old)?;
    copy(segs, &staged, &target)?;
    delete(segs, &staged)?;
    delete(segs, &intent)?;
    tracing::debug!(old = %layout.url(old), new = %layout.url(&target), "segment rewritten");
    Ok(Some(final_name))
}

/// Finishes or rolls back, without waiting, what earlier rewrites left in
/// one day, before a rewrite of it (see the module header).
fn settle_day(
    segs: &ObjectSegments,
    org: &OrgId,
    kind: DataKind,
    day: i64,
    listing: &DayListing,
) -> Result<(), SegmentError> {
    let layout = &segs.commit.layout;
    let intents = segs.list_all(layout.day_intents(org, kind, day))?;
    for (old, id, meta) in &listing.staged {
        let mine: Vec<Path> = intents
            .iter()
            .filter(|i| parse_intent(last_part(&i.location)).is_some_and(|(o, i_id, _)| o == old && i_id == *id))
            .map(|i| i.location.clone())
            .collect();
        if listing.names.contains(old) {
            tracing::warn!(object = %layout.url(&meta.location), "interrupted erase rolled back");
        } else if let Some(final_name) = final_name(old, *id) {
            if !listing.names.contains(&final_name) {
                copy(segs, &meta.location, &layout.object(org, kind, day, &final_name))?;
            }
            tracing::warn!(object = %layout.url(&meta.location), "interrupted erase completed");
        }
        delete(segs, &meta.location)?;
        for intent in mine {
            delete(segs, &intent)?;
        }
    }
    Ok(())
}

/// See [`SegmentStore::recover`] and the module header.
pub(crate) fn recover(segs: &ObjectSegments) -> Result<(), SegmentError> {
    let layout = &segs.commit.layout;
    let root = layout.rewrites();
    for meta in segs.list_all(root.clone())? {
        let parts: Option<Vec<String>> =
            meta.location.prefix_match(&root).map(|parts| parts.map(|p| p.as_ref().to_owned()).collect());
        let parsed = parts.as_deref().and_then(|parts| match parts {
            [org, kind, day, name] => {
                let (old, id, started) = parse_intent(name)?;
                Some((
                    OrgId::new(org.as_str()).ok()?,
                    kind.parse::<DataKind>().ok()?,
                    day_of(day)?,
                    old.to_owned(),
                    id,
                    started,
                ))
            }
            _ => None,
        });
        if parse_compact_intent(last_part(&meta.location)).is_some() {
            // A compaction's: settled by the next compaction run, which
            // has the segment catalog at hand (see `compact.rs`).
            continue;
        }
        let Some((org, kind, day, old, id, started)) = parsed else {
            tracing::warn!(object = %layout.url(&meta.location), "unrecognised rewrite record left alone");
            continue;
        };
        let old_path = layout.object(&org, kind, day, &old);
        let staged = layout.object(&org, kind, day, &staged_name(&old, id));
        if segs.exists(&old_path)? {
            let age = segs.clock.now_millis().saturating_sub(started);
            if age < STALE_REWRITE_MS {
                tracing::info!(object = %layout.url(&staged), age_ms = age,
                    "a rewrite under way (here before a crash, or on another collector); left until it is stale");
                continue;
            }
            delete(segs, &staged)?;
            tracing::warn!(object = %layout.url(&old_path), "interrupted erase rolled back; run it again");
        } else {
            if segs.exists(&staged)? {
                if let Some(final_name) = final_name(&old, id) {
                    let target = layout.object(&org, kind, day, &final_name);
                    if !segs.exists(&target)? {
                        copy(segs, &staged, &target)?;
                    }
                }
                delete(segs, &staged)?;
            }
            tracing::warn!(object = %layout.url(&old_path), "interrupted erase completed");
        }
        delete(segs, &meta.location)?;
    }
    Ok(())
}

pub(crate) fn put(segs: &ObjectSegments, path: &Path, bytes: Vec<u8>) -> Result<(), SegmentError> {
    let store = Arc::clone(&segs.commit.store);
    let at = path.clone();
    segs.request("upload", segs.commit.layout.url(path), async move {
        store.put(&at, PutPayload::from(bytes)).await.map(|_| ())
    })
}

pub(crate) fn delete(segs: &ObjectSegments, path: &Path) -> Result<(), SegmentError> {
    let store = Arc::clone(&segs.commit.store);
    let at = path.clone();
    segs.request("delete", segs.commit.layout.url(path), async move {
        match store.delete(&at).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    })
}

/// Copies `from` to `to`; `from` already gone is fine if `to` is there
/// (a recover elsewhere finished this step).
pub(crate) fn copy(segs: &ObjectSegments, from: &Path, to: &Path) -> Result<(), SegmentError> {
    let store = Arc::clone(&segs.commit.store);
    let (src, dst) = (from.clone(), to.clone());
    let copied = segs.request("copy", segs.commit.layout.url(from), async move {
        match store.copy(&src, &dst).await {
            Ok(()) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    })?;
    if copied || segs.exists(to)? {
        return Ok(());
    }
    Err(local("copy", segs.commit.layout.url(from), false, "the staged replacement is gone".into()))
}
