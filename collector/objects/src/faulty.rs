//! An object store that fails on demand, around object_store's in-memory
//! one, for the unit tests: refused or hanging uploads, unreachable
//! listings, and a "crash" after a given number of changes.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions,
    PutOptions, PutPayload, PutResult, Result,
};

/// The switches.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    /// Uploads answer 503.
    pub(crate) refuse_puts: AtomicBool,
    /// Uploads are refused for good (403: the key may not write).
    pub(crate) deny_puts: AtomicBool,
    /// Uploads never answer.
    pub(crate) hang_puts: AtomicBool,
    /// Listings answer 503.
    pub(crate) refuse_lists: AtomicBool,
    /// Changes (PUT, DELETE, COPY) allowed before every later one fails, as
    /// if the collector had died there; `usize::MAX`: no crash.
    pub(crate) changes_left: AtomicUsize,
}

/// The in-memory store behind [`Faults`].
#[derive(Debug)]
pub(crate) struct Faulty {
    pub(crate) inner: Arc<dyn ObjectStore>,
    pub(crate) faults: Arc<Faults>,
}

impl Faulty {
    pub(crate) fn new(inner: Arc<dyn ObjectStore>) -> Faulty {
        let faults = Arc::new(Faults { changes_left: AtomicUsize::new(usize::MAX), ..Faults::default() });
        Faulty { inner, faults }
    }
}

impl fmt::Display for Faulty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Faulty({})", self.inner)
    }
}

fn unavailable() -> object_store::Error {
    object_store::Error::Generic {
        store: "Faulty",
        source: "Server returned non-2xx status code: 503 Service Unavailable".into(),
    }
}

impl Faults {
    /// Counts one change; fails it once the crash point is passed.
    fn change(&self) -> Result<()> {
        let left = self.changes_left.load(Ordering::SeqCst);
        if left == 0 {
            return Err(object_store::Error::Generic { store: "Faulty", source: "crashed".into() });
        }
        if left != usize::MAX {
            self.changes_left.store(left - 1, Ordering::SeqCst);
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl ObjectStore for Faulty {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        if self.faults.hang_puts.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        if self.faults.refuse_puts.load(Ordering::SeqCst) {
            return Err(unavailable());
        }
        if self.faults.deny_puts.load(Ordering::SeqCst) {
            return Err(object_store::Error::PermissionDenied {
                path: location.to_string(),
                source: "AccessDenied".into(),
            });
        }
        self.faults.change()?;
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        self.faults.change()?;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        let faults = Arc::clone(&self.faults);
        let checked = locations.map(move |location| faults.change().and(location)).boxed();
        self.inner.delete_stream(checked)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        if self.faults.refuse_lists.load(Ordering::SeqCst) {
            return futures_util::stream::once(async { Err(unavailable()) }).boxed();
        }
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        if self.faults.refuse_lists.load(Ordering::SeqCst) {
            return Err(unavailable());
        }
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.faults.change()?;
        self.inner.copy_opts(from, to, options).await
    }
}
