//! Compaction: merging a day's small objects into larger ones, online,
//! crash-safe and with every record served exactly once throughout.
//!
//! Each collector uploads up to one object per flush interval per
//! (organisation, kind), so a busy day holds very many small objects, and
//! reading it lists and GETs each. A compaction run (driven by the service
//! on a timer, under the kind's service-wide lock that erasure also takes)
//! merges runs of consecutive small objects of a day, all older than
//! `compact_after_ms` (by the sequence in their names, so nothing still
//! being uploaded or committed), into one object of about
//! `compact_target_bytes`. The merged object holds the sources' blocks in
//! order, decrypted and sealed afresh under a new segment id, and takes the
//! first source's sequence: a fresh read serves exactly the records it
//! served before, in the same order. It reuses the mechanism of erasure's
//! staged replacement (`rewrite.rs`), generalised from one segment to a
//! run of them:
//!
//! 0. PUT the intent `rewrites/<org>/<kind>/<day>/<first>.<id>.<ms>.compact`
//!    holding the sources' names;
//! 1. PUT the merged object staged, as `<first>.<id>.<last seq>.compact`;
//! 2. switch the segment catalog in one transaction: the sources' rows
//!    out, the merged object's row (their union) in;
//! 3. DELETE the first source: the commit point;
//! 4. after the listing grace (below), DELETE the other sources;
//! 5. COPY the staged object to its final name `<first seq>-<id>.seg`;
//! 6. DELETE the staged object, then the intent.
//!
//! Readers serve a staged merged object exactly when neither its first
//! source nor its final name is listed (from step 3 to step 5), under its
//! final name, and then hide every listed segment whose sequence lies
//! after the first source's and up to the last one's. So before step 3
//! the sources are served, from step 3 the merged object, never both and
//! never neither, at every moment and while a crashed collector lies
//! between two steps. The merged object's id is drawn above the first
//! source's, so its final name sorts after the staged one, and a listing
//! that misses the staged object (deleted meanwhile) finds the final one.
//!
//! **The listing grace.** A day's listing takes several requests, one page
//! after another; a listing that started before step 3 has decided to
//! serve the sources, and must still find them all. So the other sources
//! are deleted only once a listing started before the commit has ended
//! (a day's listing is bounded by [`ObjectSegments::listing_limit`]): by
//! the next compaction run after that long, which settles the compactions
//! it committed.
//!
//! **Settling** (every run, and before an erase rewrites the kind) looks at
//! each compaction intent of the kind: the first source gone means it was
//! committed, and it is completed (steps 4 to 6) once its grace has passed
//! (for one this process did not commit, once the intent is
//! [`STALE_REWRITE_MS`] old); the first source there and the merged row in
//! the catalog means a crash between steps 2 and 3: it is committed now;
//! neither means it stopped before the switch: it is rolled back (staged
//! object and intent deleted) once the intent is stale, since a younger one
//! may be another collector's compaction under way. A compaction re-checks
//! before the switch that its staged object is still there and that it is
//! not itself older than half the stale age, as erasure does.
//!
//! What a resume cursor pointing into a merged source does: see
//! `Store::read_after` in glimpse-store (the segment before the cursor's
//! vanished one is read first to find the cursor's record in it).

use std::collections::HashSet;
use std::time::Instant;

use glimpse_common::clock::MILLIS_PER_DAY;
use glimpse_common::identity::OrgId;
use glimpse_common::record::DataKind;
use glimpse_store::control::seam::{SegmentRow, SegmentRowKey};
use glimpse_store::control::ControlStore;
use glimpse_store::keys::OrgKey;
use glimpse_store::store::seam::{CompactPolicy, Compacted, SegmentInfo, SegmentStore};
use glimpse_store::store::{parse_segment_name, segment_plaintexts, SegmentBuilder, SegmentError};
use object_store::path::Path;

use crate::error::local;
use crate::layout::{compact_intent_name, compact_name, final_name, last_part, parse_compact_intent, SEQ_SPREAD};
use crate::rewrite::{copy, delete, put, STALE_REWRITE_MS};
use crate::segments::{Committed, ObjectSegments};

/// Most sources one merged object replaces (its intent names them all:
/// about 42 bytes each).
pub const MAX_SOURCES: usize = 10_000;

#[cfg(test)]
thread_local! {
    /// The step at which the unit tests make a compaction stop, as a crash.
    pub(crate) static CRASH_AT: std::cell::Cell<Option<&'static str>> = const { std::cell::Cell::new(None) };
}

/// Where the unit tests may stop a compaction as if its collector died.
fn crash_point(step: &'static str) -> Result<(), SegmentError> {
    #[cfg(test)]
    if CRASH_AT.with(|c| c.get()) == Some(step) {
        return Err(local("compact", step.into(), true, "the collector crashed here (test)".into()));
    }
    let _ = step;
    Ok(())
}

/// One compaction intent as found.
struct Intent {
    path: Path,
    day: i64,
    first: String,
    id: u64,
    started_ms: i64,
}

/// See [`SegmentStore::compact`] and the module header.
pub(crate) fn compact(
    segs: &ObjectSegments,
    org: &OrgId,
    kind: DataKind,
    key: &OrgKey,
    catalog: &dyn ControlStore,
    policy: &CompactPolicy,
) -> Result<Compacted, SegmentError> {
    let mut done =
        Compacted { settled: settle(segs, org, kind, catalog, policy.now_ms, false)?, ..Compacted::default() };
    let mut ignored = Vec::new();
    let settled_days = intents(segs, org, kind)?.into_iter().map(|i| i.day).collect::<HashSet<_>>();
    for day in segs.days(org, kind, &mut ignored)? {
        if (done.merges as usize) >= policy.max_merges {
            break;
        }
        if day.saturating_add(1).saturating_mul(MILLIS_PER_DAY) <= policy.keep_from_ms || settled_days.contains(&day) {
            continue;
        }
        let listing = segs.list_day(org, kind, day, &mut ignored)?;
        if !listing.staged.is_empty() || !listing.compacting.is_empty() {
            // An erase or a compaction of this day is not finished yet.
            continue;
        }
        for group in groups(segs, &listing.served, policy) {
            if (done.merges as usize) >= policy.max_merges {
                break;
            }
            match merge(segs, key, catalog, &group)? {
                Some(bytes) => {
                    done.merges += 1;
                    done.merged += group.len() as u64;
                    done.bytes += bytes;
                }
                None => break,
            }
        }
    }
    Ok(done)
}

/// Runs of consecutive small, old-enough segments of one day's listing,
/// each cut at about the target size; only runs of two or more.
fn groups(segs: &ObjectSegments, served: &[SegmentInfo], policy: &CompactPolicy) -> Vec<Vec<SegmentInfo>> {
    let old_enough = policy.now_ms.saturating_sub(policy.after_ms);
    let eligible = |s: &SegmentInfo| {
        // Only our own plain objects: 20-digit sequences (a local segment
        // copied in is left as it is), read from their own name (not a
        // staged stand-in), small, and old enough.
        let plain = s
            .location
            .to_str()
            .and_then(|l| segs.commit.layout.path_of_url(l))
            .is_some_and(|p| last_part(&p) == s.key.name);
        let started = parse_segment_name(&s.key.name)
            .filter(|_| s.key.name.find('-') == Some(20))
            .map(|(seq, _)| i64::try_from(seq / SEQ_SPREAD).unwrap_or(i64::MAX));
        plain && s.bytes < policy.target_bytes / 2 && started.is_some_and(|ms| ms <= old_enough)
    };
    let mut out = Vec::new();
    let mut current: Vec<SegmentInfo> = Vec::new();
    let mut bytes = 0u64;
    let close = |current: &mut Vec<SegmentInfo>, out: &mut Vec<Vec<SegmentInfo>>| {
        if current.len() >= 2 {
            out.push(std::mem::take(current));
        } else {
            current.clear();
        }
    };
    for s in served {
        if !eligible(s) {
            close(&mut current, &mut out);
            bytes = 0;
            continue;
        }
        if !current.is_empty() && (bytes + s.bytes > policy.target_bytes || current.len() >= MAX_SOURCES) {
            close(&mut current, &mut out);
            bytes = 0;
        }
        bytes += s.bytes;
        current.push(s.clone());
    }
    close(&mut current, &mut out);
    out
}

/// Merges `group` (steps 0 to 3). Returns the merged object's size, or
/// `None` when the group was left as it is (a source gone or damaged).
fn merge(
    segs: &ObjectSegments,
    secret: &OrgKey,
    catalog: &dyn ControlStore,
    group: &[SegmentInfo],
) -> Result<Option<u64>, SegmentError> {
    let layout = &segs.commit.layout;
    let first = &group[0].key;
    let (org, kind, day) = (&first.org, first.kind, first.day);
    let Some((_, first_id)) = parse_segment_name(&first.name) else { return Ok(None) };
    let Some(last_seq) = group.last().and_then(|s| parse_segment_name(&s.key.name)).map(|(seq, _)| seq) else {
        return Ok(None);
    };
    let started = Instant::now();
    let mut builder = draw_builder(org, kind, day, first_id, secret)?;
    for source in group {
        let path = layout.object(org, kind, day, &source.key.name);
        let Some(bytes) = segs.get(&path)? else {
            tracing::info!(object = %layout.url(&path), "a segment to merge is gone; left for the next run");
            return Ok(None);
        };
        let blocks = match segment_plaintexts(&bytes, &source.key, secret) {
            Ok(blocks) => blocks,
            Err(why) => {
                tracing::warn!(object = %layout.url(&path), problem = %why, "a damaged segment is not merged");
                return Ok(None);
            }
        };
        for block in &blocks {
            builder.seal(secret, block)?;
        }
    }
    let id = builder.segment_id();
    let Some(final_name) = final_name(&first.name, id) else { return Ok(None) };
    let staged = layout.object(org, kind, day, &compact_name(&first.name, id, last_seq));
    let intent = layout.intent(org, kind, day, &compact_intent_name(&first.name, id, segs.clock.now_millis()));
    let names: Vec<&str> = group.iter().map(|s| s.key.name.as_str()).collect();
    let (blocks, size) = (builder.blocks(), builder.len());
    put(segs, &intent, names.join("\n").into_bytes())?;
    put(segs, &staged, builder.into_bytes())?;
    crash_point("after the put")?;
    let stale = std::time::Duration::from_millis((STALE_REWRITE_MS / 2) as u64);
    if started.elapsed() > stale || !segs.exists(&staged)? {
        // Another collector's settling may take this for an abandoned
        // compaction: undo it rather than race that.
        delete(segs, &staged)?;
        delete(segs, &intent)?;
        return Err(local("compact", layout.url(&staged), true, "the compaction stalled; run it again".into()));
    }
    // The switch: one transaction, the sources' rows out, the union in.
    let wanted: HashSet<&str> = names.iter().copied().collect();
    let rows = catalog.segment_rows(org.as_str(), kind.as_str()).map_err(|e| catalog_error(&staged, segs, &e))?;
    let mut row = SegmentRow::default();
    let mut removed: Vec<SegmentRowKey> = Vec::new();
    for (row_key, source_row) in rows {
        if row_key.2 == day && wanted.contains(row_key.3.as_str()) {
            row.merge(&source_row);
            removed.push(row_key);
        }
    }
    row.blocks = blocks;
    row.bytes = size;
    let added: SegmentRowKey = (org.as_str().to_owned(), kind.as_str().to_owned(), day, final_name.clone());
    if let Err(e) = catalog.replace_segment_rows(&removed, &[(added, row)]) {
        delete(segs, &staged)?;
        delete(segs, &intent)?;
        return Err(catalog_error(&staged, segs, &e));
    }
    crash_point("after the switch")?;
    // The commit point: from here the merged object is served.
    delete(segs, &layout.object(org, kind, day, &first.name))?;
    segs.committed().push(Committed { intent, at_ms: segs.clock.now_millis() });
    tracing::info!(
        first = %layout.url(&layout.object(org, kind, day, &first.name)),
        merged = %final_name,
        sources = group.len(),
        bytes = size,
        "segments merged (the other sources are deleted after the listing grace)"
    );
    Ok(Some(size))
}

/// A segment builder whose random id is above `first_id` (see the module
/// header), drawn uniformly from the ids above it when there are plenty;
/// else any random id (the names then need not sort as wished, which only
/// narrows what a listing racing the completion may see).
fn draw_builder(
    org: &OrgId,
    kind: DataKind,
    day: i64,
    first_id: u64,
    key: &OrgKey,
) -> Result<SegmentBuilder, SegmentError> {
    let above = u64::MAX - first_id;
    if above < 1 << 32 {
        return SegmentBuilder::new(org, kind, day, key);
    }
    let mut random = [0u8; 8];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut random).map_err(|_| SegmentError::Random)?;
    let id = first_id + 1 + u64::from_be_bytes(random) % above;
    Ok(SegmentBuilder::with_segment_id(org, kind, day, id, key))
}

fn catalog_error(at: &Path, segs: &ObjectSegments, e: &glimpse_store::control::ControlError) -> SegmentError {
    local("switch the segment catalog for", segs.commit.layout.url(at), e.is_transient(), e.to_string())
}

/// The compaction intents of `org`'s `kind`.
fn intents(segs: &ObjectSegments, org: &OrgId, kind: DataKind) -> Result<Vec<Intent>, SegmentError> {
    let layout = &segs.commit.layout;
    let root = layout.org_rewrites(org).join(kind.as_str());
    let mut out = Vec::new();
    for meta in segs.list_all(root.clone())? {
        let parts: Option<Vec<String>> =
            meta.location.prefix_match(&root).map(|parts| parts.map(|p| p.as_ref().to_owned()).collect());
        let Some([day, name]) = parts.as_deref() else { continue };
        let (Some(day), Some((first, id, started_ms))) = (crate::layout::day_of(day), parse_compact_intent(name))
        else {
            continue;
        };
        out.push(Intent { path: meta.location.clone(), day, first: first.to_owned(), id, started_ms });
    }
    Ok(out)
}

/// Settles what compactions of `org`'s `kind` left (see the module
/// header); `force` (before an erase, under the kind's lock) completes
/// committed ones without waiting and rolls back the rest whatever their
/// age. Returns how many were settled.
pub(crate) fn settle(
    segs: &ObjectSegments,
    org: &OrgId,
    kind: DataKind,
    catalog: &dyn ControlStore,
    now_ms: i64,
    force: bool,
) -> Result<u64, SegmentError> {
    let layout = &segs.commit.layout;
    let grace = i64::try_from(segs.listing_limit().as_millis()).unwrap_or(i64::MAX);
    let mut settled = 0;
    let mut rows: Option<HashSet<(i64, String)>> = None;
    for intent in intents(segs, org, kind)? {
        let Some(body) = segs.get(&intent.path)? else { continue };
        let sources: Vec<String> = String::from_utf8_lossy(&body)
            .lines()
            .take(MAX_SOURCES)
            .filter(|name| parse_segment_name(name).is_some())
            .map(str::to_owned)
            .collect();
        let Some(last_seq) = sources.last().and_then(|n| parse_segment_name(n)).map(|(seq, _)| seq) else {
            tracing::warn!(object = %layout.url(&intent.path), "compaction record names no segment; left alone");
            continue;
        };
        let Some(final_name) = final_name(&intent.first, intent.id) else { continue };
        let day = intent.day;
        let staged = layout.object(org, kind, day, &compact_name(&intent.first, intent.id, last_seq));
        let first = layout.object(org, kind, day, &intent.first);
        let age = now_ms.saturating_sub(intent.started_ms);
        let mut committed = !segs.exists(&first)?;
        if !committed {
            let switched = match &rows {
                Some(rows) => rows.contains(&(day, final_name.clone())),
                None => {
                    let found: HashSet<(i64, String)> = catalog
                        .segment_rows(org.as_str(), kind.as_str())
                        .map_err(|e| catalog_error(&staged, segs, &e))?
                        .into_iter()
                        .map(|(k, _)| (k.2, k.3))
                        .collect();
                    let switched = found.contains(&(day, final_name.clone()));
                    rows = Some(found);
                    switched
                }
            };
            if switched {
                // Stopped between the switch and the commit: the catalog
                // holds the merged object, so it is committed now; the rest
                // after the grace.
                delete(segs, &first)?;
                segs.committed().push(Committed { intent: intent.path.clone(), at_ms: now_ms });
                tracing::warn!(merged = %layout.url(&staged), "interrupted compaction committed");
                settled += 1;
                committed = force;
            } else if force || age >= STALE_REWRITE_MS {
                delete(segs, &staged)?;
                delete(segs, &intent.path)?;
                tracing::warn!(merged = %layout.url(&staged), "interrupted compaction rolled back");
                settled += 1;
            } else {
                tracing::info!(object = %layout.url(&staged), age_ms = age,
                    "a compaction under way (here before a crash, or on another collector); left until it is stale");
            }
        } else {
            let mine = segs.committed().iter().find(|c| c.intent == intent.path).map(|c| c.at_ms);
            committed = force || mine.map_or(age >= STALE_REWRITE_MS, |at| now_ms.saturating_sub(at) >= grace);
        }
        if committed {
            let rest: Vec<Path> = sources.iter().skip(1).map(|n| layout.object(org, kind, day, n)).collect();
            segs.delete_all(layout.url(&layout.day(org, kind, day)), rest)?;
            crash_point("after the deletes")?;
            copy(segs, &staged, &layout.object(org, kind, day, &final_name))?;
            delete(segs, &staged)?;
            delete(segs, &intent.path)?;
            segs.committed().retain(|c| c.intent != intent.path);
            tracing::info!(merged = %layout.url(&layout.object(org, kind, day, &final_name)), sources = sources.len(),
                "compaction completed");
            settled += 1;
        }
    }
    Ok(settled)
}

/// The kind's settling before an erase: see [`SegmentStore::settle_compactions`].
pub(crate) fn settle_now(
    segs: &ObjectSegments,
    org: &OrgId,
    kind: DataKind,
    catalog: &dyn ControlStore,
) -> Result<(), SegmentError> {
    settle(segs, org, kind, catalog, segs.clock.now_millis(), true).map(|_| ())
}
