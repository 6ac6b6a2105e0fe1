//! The private tokio runtime object_store's async client runs on, and the
//! one way synchronous code waits for it.
//!
//! glimpse-store is synchronous and its callers call it from blocking
//! threads (the service's `spawn_blocking`, the offline tools' main
//! thread). [`Bridge::run`] spawns a future onto this crate's own runtime
//! and waits for its answer on a std channel with a deadline: never
//! `Handle::block_on`, which panics inside an async context, so every
//! method stays safe to call from any thread.

use std::future::Future;
use std::sync::mpsc;
use std::time::Duration;

use tokio::runtime::{Handle, Runtime};

/// Worker threads: uploads and reads wait on the network, not the CPU.
const WORKER_THREADS: usize = 2;

/// The runtime, shut down in the background when dropped (dropping a
/// runtime the ordinary way panics in an async context, and the last
/// reference to a store may well be dropped in one).
#[derive(Debug)]
pub(crate) struct Bridge {
    runtime: Option<Runtime>,
    handle: Handle,
}

impl Bridge {
    /// A new runtime with its own named threads.
    pub(crate) fn new() -> std::io::Result<Bridge> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(WORKER_THREADS)
            .thread_name("glimpse-objects")
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        Ok(Bridge { runtime: Some(runtime), handle })
    }

    /// Where tasks are spawned.
    pub(crate) fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Runs `future` on the runtime and waits for it here, at most `limit`:
    /// `None` if it took longer (it is then cancelled).
    pub(crate) fn run<T: Send + 'static>(
        &self,
        limit: Duration,
        future: impl Future<Output = T> + Send + 'static,
    ) -> Option<T> {
        let (tx, rx) = mpsc::sync_channel(1);
        let task = self.handle.spawn(async move {
            if let Ok(value) = tokio::time::timeout(limit, future).await {
                let _ = tx.send(value);
            }
        });
        // The task's own timeout ends it; the margin only covers a runtime
        // too busy to notice in time.
        let answer = rx.recv_timeout(limit + Duration::from_millis(500)).ok();
        if answer.is_none() {
            task.abort();
        }
        answer
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_from_any_thread_and_bounds_the_wait() {
        let bridge = Bridge::new().unwrap();
        assert_eq!(bridge.run(Duration::from_secs(5), async { 7 }), Some(7));
        let never = bridge.run(Duration::from_millis(50), std::future::pending::<()>());
        assert_eq!(never, None);

        // From inside another runtime's async task (a caller that forgot
        // spawn_blocking): no panic, the answer still comes.
        let outer = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let got = outer.block_on(async { bridge.run(Duration::from_secs(5), async { 8 }) });
        assert_eq!(got, Some(8));

        // Dropped inside an async context: no panic either.
        outer.block_on(async move { drop(bridge) });
    }
}
