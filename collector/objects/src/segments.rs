//! [`ObjectSegments`]: the [`SegmentStore`] over an object store.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use glimpse_common::clock::Clock;
use glimpse_common::identity::OrgId;
use glimpse_common::record::DataKind;
use glimpse_store::store::seam::{Freed, SegmentInfo, SegmentKey};
use glimpse_store::store::{parse_segment_name, SegmentError, SegmentProblem};
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};

use crate::bridge::Bridge;
use crate::commit::{Committer, Settings};
use crate::error::{local, remote};
use crate::layout::{final_name, last_part, parse_compact, parse_staged, Layout};
use crate::{ObjectStoreConfig, ObjectsError, FLUSH_BYTES, MAX_OBJECT_BYTES};

/// Segments as objects in an S3-compatible store (see the crate header).
/// Every method is synchronous and may be called from any thread; the
/// async client runs on the value's own small runtime.
pub struct ObjectSegments {
    pub(crate) bridge: Bridge,
    pub(crate) commit: Arc<Committer>,
    pub(crate) clock: Arc<dyn Clock>,
    /// Compactions this collector committed, waiting for their listing
    /// grace (see `compact.rs`).
    pub(crate) committed: std::sync::Mutex<Vec<Committed>>,
}

/// Never the client (it holds the credentials): where, and how much waits.
impl std::fmt::Debug for ObjectSegments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectSegments")
            .field("root", &self.commit.layout.url(&self.commit.layout.orgs()))
            .field("pending_bytes", &self.commit.in_flight())
            .finish_non_exhaustive()
    }
}

/// One listed day: its segments (those served), staged replacements and
/// everything else.
#[derive(Debug, Default)]
pub(crate) struct DayListing {
    /// Served, in name order: segments, and staged replacements whose old
    /// segment is gone (see `rewrite.rs`), under the name they will take.
    pub(crate) served: Vec<SegmentInfo>,
    /// Staged replacements: the old segment's name, the new id, the object.
    pub(crate) staged: Vec<(String, u64, ObjectMeta)>,
    /// Names of the plain segments listed.
    pub(crate) names: HashSet<String>,
    /// Compactions' staged merged segments: the first segment's name, the
    /// new id, the last sequence merged, the object.
    pub(crate) compacting: Vec<(String, u64, u64, ObjectMeta)>,
}

impl ObjectSegments {
    /// Segments in the bucket `config` names, signed with its credentials
    /// (read now, from the secret file or the environment). Nothing is
    /// sent yet: [`ObjectSegments::check`] does that. Run
    /// [`SegmentStore::recover`](glimpse_store::store::SegmentStore::recover)
    /// before the first append.
    pub fn open(config: &ObjectStoreConfig, clock: Arc<dyn Clock>) -> Result<ObjectSegments, ObjectsError> {
        ObjectSegments::with_store(crate::connect(config)?, config, clock)
    }

    /// Segments in `store` (any object_store backend: tests use the
    /// in-memory one), under `config`'s bucket name and prefix, with its
    /// group commit settings; its endpoint and credentials are not used.
    pub fn with_store(
        store: Arc<dyn ObjectStore>,
        config: &ObjectStoreConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<ObjectSegments, ObjectsError> {
        let bridge = Bridge::new().map_err(ObjectsError::Runtime)?;
        let layout = Layout::new(&config.bucket, config.prefix.as_deref());
        let settings = Settings {
            flush_interval: config.flush_interval(),
            flush_bytes: FLUSH_BYTES,
            request_timeout: config.request_timeout(),
            max_in_flight_bytes: config.max_in_flight_bytes,
        };
        let commit = Arc::new(Committer::new(store, layout, settings, Arc::clone(&clock), bridge.handle().clone()));
        Ok(ObjectSegments { bridge, commit, clock, committed: std::sync::Mutex::default() })
    }

    /// A cheap probe for readiness: one listing request under the prefix,
    /// which needs the endpoint up, the credentials accepted and the bucket
    /// there. Also fails (transiently) while more than half the memory
    /// bound waits to be uploaded: appends are refused, or soon will be.
    pub fn check(&self) -> Result<(), SegmentError> {
        let store = Arc::clone(&self.commit.store);
        let prefix = self.commit.layout.rewrites();
        let location = self.commit.layout.url(&prefix);
        let probe = async move { store.list(Some(&prefix)).next().await.transpose().map(|_| ()) };
        self.request("list", location, probe)?;
        // Half the bound waiting means uploads are not keeping up: appends
        // are about to be refused, if they are not already.
        let (pending, max) = (self.pending_bytes(), self.commit.settings.max_in_flight_bytes);
        if pending > max / 2 {
            return Err(local(
                "append to",
                self.root(),
                true,
                format!("uploads are backed up: {pending} bytes are waiting (at most {max})"),
            ));
        }
        Ok(())
    }

    /// Bytes appended but not uploaded yet.
    pub fn pending_bytes(&self) -> u64 {
        self.commit.in_flight()
    }

    /// `s3://<bucket>/<prefix>/orgs`, where segments are (for messages).
    pub fn root(&self) -> String {
        self.commit.layout.url(&self.commit.layout.orgs())
    }

    /// The longest a day's listing may take (its requests, one page after
    /// another): a compaction deletes its other sources only this long
    /// after its commit (see `compact.rs`).
    pub fn listing_limit(&self) -> Duration {
        self.commit.settings.request_timeout * 20 + Duration::from_secs(60)
    }

    pub(crate) fn committed(&self) -> std::sync::MutexGuard<'_, Vec<Committed>> {
        self.committed.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs one request on the runtime, bounded by the request timeout.
    pub(crate) fn request<T: Send + 'static>(
        &self,
        action: &'static str,
        location: String,
        future: impl std::future::Future<Output = object_store::Result<T>> + Send + 'static,
    ) -> Result<T, SegmentError> {
        self.bounded(action, location, self.commit.settings.request_timeout, future)
    }

    /// Runs a listing or a bulk deletion (many requests) on the runtime.
    pub(crate) fn bulk<T: Send + 'static>(
        &self,
        action: &'static str,
        location: String,
        future: impl std::future::Future<Output = object_store::Result<T>> + Send + 'static,
    ) -> Result<T, SegmentError> {
        // Each request is bounded by the client's own timeout; this only
        // bounds how many a day's listing may take (a page of 1000 names
        // each).
        self.bounded(action, location, self.listing_limit(), future)
    }

    fn bounded<T: Send + 'static>(
        &self,
        action: &'static str,
        location: String,
        limit: Duration,
        future: impl std::future::Future<Output = object_store::Result<T>> + Send + 'static,
    ) -> Result<T, SegmentError> {
        match self.bridge.run(limit, future) {
            Some(Ok(value)) => Ok(value),
            Some(Err(e)) => Err(remote(action, location, &e)),
            None => Err(local(action, location, true, format!("no answer within {} ms", limit.as_millis()))),
        }
    }

    /// The prefixes and objects directly under `prefix`.
    pub(crate) fn list_dir(&self, prefix: Path) -> Result<object_store::ListResult, SegmentError> {
        let store = Arc::clone(&self.commit.store);
        let location = self.commit.layout.url(&prefix);
        self.bulk("list", location, async move { store.list_with_delimiter(Some(&prefix)).await })
    }

    /// Every object under `prefix`, at any depth.
    pub(crate) fn list_all(&self, prefix: Path) -> Result<Vec<ObjectMeta>, SegmentError> {
        let store = Arc::clone(&self.commit.store);
        let location = self.commit.layout.url(&prefix);
        self.bulk("list", location, async move { store.list(Some(&prefix)).try_collect().await })
    }

    /// Deletes `paths` (missing ones are no error).
    pub(crate) fn delete_all(&self, what: String, paths: Vec<Path>) -> Result<(), SegmentError> {
        if paths.is_empty() {
            return Ok(());
        }
        let store = Arc::clone(&self.commit.store);
        self.bulk("delete", what, async move {
            let stream = futures_util::stream::iter(paths.into_iter().map(Ok)).boxed();
            let mut results = store.delete_stream(stream);
            while let Some(result) = results.next().await {
                match result {
                    Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        })
    }

    /// Lists one day (see [`DayListing`]); anything that is not a segment
    /// or a staged replacement is reported.
    pub(crate) fn list_day(
        &self,
        org: &OrgId,
        kind: DataKind,
        day: i64,
        problems: &mut Vec<SegmentProblem>,
    ) -> Result<DayListing, SegmentError> {
        let layout = &self.commit.layout;
        let listed = self.list_dir(layout.day(org, kind, day))?;
        let mut out = DayListing::default();
        for prefix in &listed.common_prefixes {
            problem(problems, layout.url(prefix), "not a segment object; ignored".into());
        }
        for meta in listed.objects {
            let name = last_part(&meta.location).to_owned();
            if parse_segment_name(&name).is_some() {
                let key = SegmentKey { org: org.clone(), kind, day, name: name.clone() };
                out.served.push(SegmentInfo {
                    key,
                    location: PathBuf::from(layout.url(&meta.location)),
                    bytes: meta.size,
                });
                out.names.insert(name);
            } else if let Some((old, id)) = parse_staged(&name) {
                out.staged.push((old.to_owned(), id, meta));
            } else if let Some((first, id, last)) = parse_compact(&name) {
                out.compacting.push((first.to_owned(), id, last, meta));
            } else {
                problem(problems, layout.url(&meta.location), "not a segment object; ignored".into());
            }
        }
        // A compaction's merged segment stands in for its sources once the
        // first of them is gone (its commit point, after the catalog
        // switched) until it has its final name; meanwhile the rest of its
        // sources are hidden, so its records are served once (see
        // `compact.rs`).
        for (first, id, last, meta) in &out.compacting {
            let (Some(final_name), Some((first_seq, _))) = (final_name(first, *id), parse_segment_name(first)) else {
                continue;
            };
            if out.names.contains(first) || out.names.contains(&final_name) {
                continue;
            }
            out.served
                .retain(|s| parse_segment_name(&s.key.name).is_none_or(|(seq, _)| seq <= first_seq || seq > *last));
            out.served.push(SegmentInfo {
                key: SegmentKey { org: org.clone(), kind, day, name: final_name },
                location: PathBuf::from(layout.url(&meta.location)),
                bytes: meta.size,
            });
        }
        // A staged replacement is the segment while the one it replaces is
        // gone and it has not reached its final name yet (a rewrite between
        // its second and third step, or a crash there): so a segment being
        // rewritten is always served exactly once.
        let mut stood_in: HashSet<String> = HashSet::new();
        for (old, id, meta) in &out.staged {
            let Some(final_name) = final_name(old, *id) else { continue };
            if out.names.contains(old) || out.names.contains(&final_name) {
                continue;
            }
            if !stood_in.insert(old.clone()) {
                problem(
                    problems,
                    layout.url(&meta.location),
                    "a second replacement of the same segment (left by an interrupted erase); not served".into(),
                );
                continue;
            }
            out.served.push(SegmentInfo {
                key: SegmentKey { org: org.clone(), kind, day, name: final_name },
                location: PathBuf::from(layout.url(&meta.location)),
                bytes: meta.size,
            });
        }
        out.served.sort_by(|a, b| a.key.name.cmp(&b.key.name));
        Ok(out)
    }

    /// The object a listed segment is read from: its location when it
    /// names one of ours (a staged replacement standing in), else its key.
    pub(crate) fn object_of(&self, segment: &SegmentInfo) -> Path {
        let layout = &self.commit.layout;
        let by_key = layout.object(&segment.key.org, segment.key.kind, segment.key.day, &segment.key.name);
        match segment.location.to_str().and_then(|l| layout.path_of_url(l)) {
            Some(path) if path.prefix_matches(&layout.day(&segment.key.org, segment.key.kind, segment.key.day)) => path,
            _ => by_key,
        }
    }

    /// An object's bytes, at most [`MAX_OBJECT_BYTES`]; `None` if it is gone.
    pub(crate) fn get(&self, path: &Path) -> Result<Option<Vec<u8>>, SegmentError> {
        let store = Arc::clone(&self.commit.store);
        let location = self.commit.layout.url(path);
        let path = path.clone();
        let fetch = async move {
            let got = match store.get(&path).await {
                Ok(got) => got,
                Err(object_store::Error::NotFound { .. }) => return Ok(Fetched::Gone),
                Err(e) => return Err(e),
            };
            if got.meta.size > MAX_OBJECT_BYTES {
                return Ok(Fetched::TooLarge(got.meta.size));
            }
            // The listing's size is a hint; the bytes are counted as they come.
            let mut bytes = Vec::with_capacity(usize::try_from(got.meta.size).unwrap_or(0));
            let mut body = got.into_stream();
            while let Some(chunk) = body.next().await {
                let chunk = chunk?;
                if (bytes.len() + chunk.len()) as u64 > MAX_OBJECT_BYTES {
                    return Ok(Fetched::TooLarge((bytes.len() + chunk.len()) as u64));
                }
                bytes.extend_from_slice(&chunk);
            }
            Ok(Fetched::Bytes(bytes))
        };
        // A whole object may take longer than one small request.
        let limit = self.commit.settings.request_timeout * 3;
        match self.bounded("read", location.clone(), limit, fetch)? {
            Fetched::Bytes(bytes) => Ok(Some(bytes)),
            Fetched::Gone => Ok(None),
            Fetched::TooLarge(size) => Err(local(
                "read",
                location,
                false,
                format!("the object holds {size} bytes, more than the {MAX_OBJECT_BYTES} a segment may; not read"),
            )),
        }
    }

    /// Whether an object exists.
    pub(crate) fn exists(&self, path: &Path) -> Result<bool, SegmentError> {
        let store = Arc::clone(&self.commit.store);
        let location = self.commit.layout.url(path);
        let path = path.clone();
        self.request("look up", location, async move {
            match store.head(&path).await {
                Ok(_) => Ok(true),
                Err(object_store::Error::NotFound { .. }) => Ok(false),
                Err(e) => Err(e),
            }
        })
    }

    /// Deletes what is under `prefix` and returns what it held (segments
    /// counted by name).
    pub(crate) fn delete_prefix(&self, prefix: Path) -> Result<Freed, SegmentError> {
        let objects = self.list_all(prefix.clone())?;
        let mut freed = Freed::default();
        for meta in &objects {
            freed.bytes += meta.size;
            let name = last_part(&meta.location);
            if parse_segment_name(name).is_some() || parse_staged(name).is_some() || parse_compact(name).is_some() {
                freed.segments += 1;
            }
        }
        let paths = objects.into_iter().map(|meta| meta.location).collect();
        self.delete_all(self.commit.layout.url(&prefix), paths)?;
        Ok(freed)
    }
}

enum Fetched {
    Bytes(Vec<u8>),
    Gone,
    TooLarge(u64),
}

pub(crate) fn problem(problems: &mut Vec<SegmentProblem>, location: String, what: String) {
    tracing::warn!(object = %location, problem = %what, "segment store problem");
    problems.push(SegmentProblem { path: PathBuf::from(location), offset: 0, what });
}

/// A compaction this collector committed, waiting for its listing grace
/// before the rest of its sources are deleted (see `compact.rs`). Kept
/// here, with the store that holds the list, so that `segments` needs
/// nothing from `compact`.
#[derive(Debug, Clone)]
pub(crate) struct Committed {
    /// The compaction's intent object.
    pub(crate) intent: object_store::path::Path,
    /// When it was committed, in the store clock's milliseconds.
    pub(crate) at_ms: i64,
}
