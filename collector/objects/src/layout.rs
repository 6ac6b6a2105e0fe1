//! Where segments sit in the bucket, and what their names say.
//!
//! ```text
//! <prefix>/orgs/<org>/<kind>/<YYYY-MM-DD>/<seq>-<id>.seg                  a segment
//! <prefix>/orgs/<org>/<kind>/<YYYY-MM-DD>/<seq>-<old id>.seg.<id>.staged  a rewrite's replacement, staged
//! <prefix>/rewrites/<org>/<kind>/<YYYY-MM-DD>/<seq>-<old id>.seg.<id>.<ms> a rewrite under way (empty)
//! <prefix>/orgs/<org>/<kind>/<YYYY-MM-DD>/<seq>-<first id>.seg.<id>.<last seq>.compact
//!                                                       a compaction's merged segment, staged
//! <prefix>/rewrites/<org>/<kind>/<YYYY-MM-DD>/<seq>-<first id>.seg.<id>.<ms>.compact
//!                                                       a compaction under way (its sources' names)
//! ```
//!
//! `<seq>` is 20 decimal digits: the collector clock's milliseconds when the
//! object was started, times 10^6, plus a random number below 10^6; a
//! collector also keeps its own sequences of one (organisation, kind)
//! increasing when its clock stands still or steps back. So names sort in
//! creation order within a day (to the millisecond across collectors, which
//! is all "creation order" can mean between machines) and two collectors
//! writing the same day at the same millisecond draw the same sequence only
//! with probability 10^-6; the random 64-bit segment id (which is half of
//! every block's nonce) keeps the names unique even then. Local segment
//! files have 8-digit sequences; both parse with
//! [`glimpse_store::store::parse_segment_name`].
//!
//! Rewrites are recorded under their own prefix so that
//! [`SegmentStore::recover`](glimpse_store::store::SegmentStore::recover)
//! lists only them, not the whole bucket (see `rewrite.rs`).

use glimpse_common::clock::{format_day, parse_day};
use glimpse_common::identity::OrgId;
use glimpse_common::record::DataKind;
use glimpse_store::store::{parse_segment_name, SEGMENT_SUFFIX};
use object_store::path::Path;

/// Suffix of a staged replacement (a name readers only serve when the
/// segment it replaces is gone; see `rewrite.rs`).
pub(crate) const STAGED_SUFFIX: &str = ".staged";
/// Suffix of a compaction's staged merged segment and of its intent (see
/// `compact.rs`).
pub(crate) const COMPACT_SUFFIX: &str = ".compact";
/// Sequences are `ms * SEQ_SPREAD + random`, below 10^19, so 20 digits.
pub(crate) const SEQ_SPREAD: u64 = 1_000_000;

/// The object paths of one bucket prefix.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    /// `<prefix>`, or the bucket's root.
    root: Path,
    /// `s3://<bucket>/`, for messages.
    url: String,
}

impl Layout {
    /// The layout under `prefix` (already checked: parts of `[A-Za-z0-9._-]`).
    pub(crate) fn new(bucket: &str, prefix: Option<&str>) -> Layout {
        let root = prefix.map(Path::from).unwrap_or_default();
        Layout { root, url: format!("s3://{bucket}/") }
    }

    /// `<prefix>/orgs`.
    pub(crate) fn orgs(&self) -> Path {
        self.root.clone().join("orgs")
    }

    /// `<prefix>/orgs/<org>`.
    pub(crate) fn org(&self, org: &OrgId) -> Path {
        self.orgs().join(org.as_str())
    }

    /// `<prefix>/orgs/<org>/<kind>`.
    pub(crate) fn kind(&self, org: &OrgId, kind: DataKind) -> Path {
        self.org(org).join(kind.as_str())
    }

    /// `<prefix>/orgs/<org>/<kind>/<YYYY-MM-DD>`.
    pub(crate) fn day(&self, org: &OrgId, kind: DataKind, day: i64) -> Path {
        self.kind(org, kind).join(format_day(day).as_str())
    }

    /// A segment or staged object of a day.
    pub(crate) fn object(&self, org: &OrgId, kind: DataKind, day: i64, name: &str) -> Path {
        self.day(org, kind, day).join(name)
    }

    /// `<prefix>/rewrites`.
    pub(crate) fn rewrites(&self) -> Path {
        self.root.clone().join("rewrites")
    }

    /// `<prefix>/rewrites/<org>`.
    pub(crate) fn org_rewrites(&self, org: &OrgId) -> Path {
        self.rewrites().join(org.as_str())
    }

    /// `<prefix>/rewrites/<org>/<kind>/<YYYY-MM-DD>`.
    pub(crate) fn day_intents(&self, org: &OrgId, kind: DataKind, day: i64) -> Path {
        self.org_rewrites(org).join(kind.as_str()).join(format_day(day).as_str())
    }

    /// The record of a rewrite under way.
    pub(crate) fn intent(&self, org: &OrgId, kind: DataKind, day: i64, name: &str) -> Path {
        self.day_intents(org, kind, day).join(name)
    }

    /// `s3://<bucket>/<path>`: how messages and problem reports name an object.
    pub(crate) fn url(&self, path: &Path) -> String {
        format!("{}{path}", self.url)
    }

    /// The path of a `s3://<bucket>/...` location this layout made.
    pub(crate) fn path_of_url(&self, location: &str) -> Option<Path> {
        Path::parse(location.strip_prefix(&self.url)?).ok()
    }
}

/// `<seq>-<id>.seg`, with the 20-digit sequence.
pub(crate) fn segment_name(seq: u64, segment_id: u64) -> String {
    format!("{seq:020}-{segment_id:016x}{SEGMENT_SUFFIX}")
}

/// A staged replacement of segment `old` with segment id `new_id`.
pub(crate) fn staged_name(old: &str, new_id: u64) -> String {
    format!("{old}.{new_id:016x}{STAGED_SUFFIX}")
}

/// The name a staged replacement takes when the rewrite completes: the old
/// sequence (so resume marks find their place) and the new id.
pub(crate) fn final_name(old: &str, new_id: u64) -> Option<String> {
    let (seq, _) = parse_segment_name(old)?;
    Some(segment_name_like(old, seq, new_id))
}

/// `<seq>-<id>.seg` with the sequence as wide as in `old` (a local segment
/// copied into the bucket keeps its 8 digits, so its day still sorts).
fn segment_name_like(old: &str, seq: u64, segment_id: u64) -> String {
    let width = old.find('-').unwrap_or(20);
    format!("{seq:0width$}-{segment_id:016x}{SEGMENT_SUFFIX}")
}

/// The segment a staged name replaces and the replacement's id.
pub(crate) fn parse_staged(name: &str) -> Option<(&str, u64)> {
    let (old, id) = name.strip_suffix(STAGED_SUFFIX)?.rsplit_once('.')?;
    parse_segment_name(old)?;
    Some((old, parse_id(id)?))
}

/// The record of a rewrite: `<old>.<new id>.<ms>`.
pub(crate) fn intent_name(old: &str, new_id: u64, started_ms: i64) -> String {
    format!("{old}.{new_id:016x}.{}", started_ms.max(0))
}

/// The segment, replacement id and start time in an intent's name.
pub(crate) fn parse_intent(name: &str) -> Option<(&str, u64, i64)> {
    let (rest, ms) = name.rsplit_once('.')?;
    let (old, id) = rest.rsplit_once('.')?;
    parse_segment_name(old)?;
    if ms.is_empty() || !ms.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((old, parse_id(id)?, ms.parse().ok()?))
}

/// A compaction's staged merged segment: it replaces the day's segments
/// from `first` (whose sequence the merged one keeps) to the one with
/// sequence `last_seq`, and takes the id `new_id`.
pub(crate) fn compact_name(first: &str, new_id: u64, last_seq: u64) -> String {
    format!("{first}.{new_id:016x}.{last_seq}{COMPACT_SUFFIX}")
}

/// The first segment, the new id and the last sequence in a staged merged
/// segment's name.
pub(crate) fn parse_compact(name: &str) -> Option<(&str, u64, u64)> {
    let (rest, last) = name.strip_suffix(COMPACT_SUFFIX)?.rsplit_once('.')?;
    let (first, id) = rest.rsplit_once('.')?;
    parse_segment_name(first)?;
    if last.is_empty() || !last.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((first, parse_id(id)?, last.parse().ok()?))
}

/// The record of a compaction under way: `<first>.<new id>.<ms>.compact`.
pub(crate) fn compact_intent_name(first: &str, new_id: u64, started_ms: i64) -> String {
    format!("{first}.{new_id:016x}.{}{COMPACT_SUFFIX}", started_ms.max(0))
}

/// The first segment, new id and start time in a compaction's intent name.
pub(crate) fn parse_compact_intent(name: &str) -> Option<(&str, u64, i64)> {
    parse_intent(name.strip_suffix(COMPACT_SUFFIX)?)
}

/// A 16-hex-digit segment id.
fn parse_id(id: &str) -> Option<u64> {
    if id.len() != 16 {
        return None;
    }
    u64::from_str_radix(id, 16).ok()
}

/// The day a `YYYY-MM-DD` part names.
pub(crate) fn day_of(part: &str) -> Option<i64> {
    parse_day(part)
}

/// The last part of a listed path (names we make need no decoding).
pub(crate) fn last_part(path: &Path) -> &str {
    path.filename().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back_and_sort_by_sequence() {
        let a = segment_name(1_700_000_000_000 * SEQ_SPREAD + 5, 0xfeed);
        let b = segment_name(1_700_000_000_001 * SEQ_SPREAD, 0x1);
        assert!(a < b, "{a} {b}");
        assert_eq!(parse_segment_name(&a), Some((1_700_000_000_000 * SEQ_SPREAD + 5, 0xfeed)));
        assert_eq!(a.len(), 20 + 1 + 16 + 4);
        // The widest sequence still has 20 digits.
        assert_eq!(segment_name(u64::MAX, 0).len(), 41);

        let staged = staged_name(&a, 0xabc);
        assert_eq!(parse_staged(&staged), Some((a.as_str(), 0xabc)));
        assert_eq!(final_name(&a, 0xabc), Some(segment_name(1_700_000_000_000 * SEQ_SPREAD + 5, 0xabc)));
        assert_eq!(parse_segment_name(&staged), None, "a staged name is no segment name");
        // A local segment keeps its width.
        assert_eq!(final_name("00000003-0000000000000001.seg", 2).as_deref(), Some("00000003-0000000000000002.seg"));

        let intent = intent_name(&a, 0xabc, 1234);
        assert_eq!(parse_intent(&intent), Some((a.as_str(), 0xabc, 1234)));
        for bad in ["x.seg.0000000000000abc.staged", "", ".staged", &format!("{a}.abc.staged")] {
            assert_eq!(parse_staged(bad), None, "{bad}");
        }
        for bad in ["", &format!("{a}.0000000000000abc."), &format!("{a}.abc.12"), "1.2.3"] {
            assert_eq!(parse_intent(bad), None, "{bad}");
        }
    }

    #[test]
    fn compaction_names_parse_back() {
        let first = segment_name(1_700_000_000_000 * SEQ_SPREAD + 5, 0xfeed);
        let staged = compact_name(&first, 0xabc, 1_700_000_000_100 * SEQ_SPREAD);
        assert_eq!(parse_compact(&staged), Some((first.as_str(), 0xabc, 1_700_000_000_100 * SEQ_SPREAD)));
        assert_eq!(parse_segment_name(&staged), None);
        assert_eq!(parse_staged(&staged), None, "not an erase's replacement");
        let intent = compact_intent_name(&first, 0xabc, 1234);
        assert_eq!(parse_compact_intent(&intent), Some((first.as_str(), 0xabc, 1234)));
        assert_eq!(parse_intent(&intent), None, "not an erase's intent");
        for bad in ["", ".compact", &format!("{first}.abc.12.compact"), &format!("{first}.0000000000000abc..compact")] {
            assert_eq!(parse_compact(bad), None, "{bad}");
        }
    }

    #[test]
    fn paths() {
        let layout = Layout::new("b", Some("glimpse/prod"));
        let org = OrgId::new("acme").unwrap();
        let path = layout.object(&org, DataKind::Metadata, 20_000, "n.seg");
        assert_eq!(path.as_ref(), "glimpse/prod/orgs/acme/metadata/2024-10-04/n.seg");
        let url = layout.url(&path);
        assert_eq!(url, "s3://b/glimpse/prod/orgs/acme/metadata/2024-10-04/n.seg");
        assert_eq!(layout.path_of_url(&url), Some(path));
        assert_eq!(layout.path_of_url("s3://other/x"), None);
        assert_eq!(Layout::new("b", None).orgs().as_ref(), "orgs");
        assert_eq!(
            layout.intent(&org, DataKind::Capture, 20_000, "i").as_ref(),
            "glimpse/prod/rewrites/acme/capture/2024-10-04/i"
        );
    }
}
