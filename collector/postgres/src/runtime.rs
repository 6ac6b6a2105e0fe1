//! The private runtime the synchronous methods run their queries on.

use std::future::Future;
use std::time::Duration;

use glimpse_store::control::ControlError;

/// A small tokio runtime owned by one [`crate::PgControl`]: its
/// synchronous callers (on any thread, in an async context or not) hand it
/// a future and wait for the answer on a channel, with a deadline.
pub(crate) struct Runtime {
    rt: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").finish_non_exhaustive()
    }
}

impl Runtime {
    pub(crate) fn new() -> std::io::Result<Runtime> {
        // Two threads: queries are waits on the network, and the listening
        // connection must keep being polled while a query runs.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("glimpse-postgres")
            .enable_all()
            .build()?;
        Ok(Runtime { rt: Some(rt) })
    }

    pub(crate) fn handle(&self) -> Option<&tokio::runtime::Handle> {
        self.rt.as_ref().map(|rt| rt.handle())
    }

    /// Runs `op` on the runtime and waits at most `timeout` for it. A
    /// late answer is dropped; the operation is abandoned (a transaction
    /// not committed is rolled back by the database when its connection
    /// is dropped or reused).
    pub(crate) fn run<T, F>(&self, what: &'static str, timeout: Duration, op: F) -> Result<T, ControlError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, ControlError>> + Send + 'static,
    {
        let Some(handle) = self.handle() else {
            return Err(ControlError::Transient("the PostgreSQL runtime has shut down".into()));
        };
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        handle.spawn(async move {
            let out = match tokio::time::timeout(timeout, op).await {
                Ok(out) => out,
                Err(_) => Err(ControlError::Transient(format!(
                    "PostgreSQL did not answer within {} ms ({what})",
                    timeout.as_millis()
                ))),
            };
            let _ = tx.send(out);
        });
        // The task answers by its own deadline; the margin covers a
        // runtime too busy to poll the timer exactly on time.
        match rx.recv_timeout(timeout + Duration::from_secs(1)) {
            Ok(out) => out,
            Err(_) => Err(ControlError::Transient(format!("PostgreSQL operation abandoned ({what})"))),
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which panics inside another runtime
        // (a collector shutting down drops its store on a tokio thread).
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}
