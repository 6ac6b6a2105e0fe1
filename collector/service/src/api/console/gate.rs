//! A bound on the password checks running at once. One Argon2id check takes
//! 19 MiB and tens of milliseconds of a core, and sign-in is reachable
//! before authentication: without a bound, a few hundred connections each
//! opening HTTP/2 streams could ask for thousands of checks at once and
//! exhaust the collector's memory. The gate lets a few run (one per core,
//! at most four), keeps a short queue, and answers the rest "busy" at once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

/// Checks that may wait for a turn; more are refused at once.
pub const MAX_WAITING: usize = 64;

/// How long a check waits for its turn before it is refused.
pub const MAX_WAIT: Duration = Duration::from_secs(10);

/// Why a check did not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GateError {
    /// Too many sign-ins are being checked; the caller should retry.
    #[error("too many sign-ins are being checked at once; try again in a few seconds")]
    Busy,
    /// The blocking thread that ran the check failed.
    #[error("the password check failed unexpectedly")]
    Failed,
}

/// The bound itself; cheap to clone (one gate per console).
#[derive(Debug, Clone)]
pub struct PasswordGate {
    running: Arc<Semaphore>,
    queued: Arc<AtomicUsize>,
    max_waiting: usize,
    max_wait: Duration,
}

impl Default for PasswordGate {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self::new(cores.clamp(1, 4), MAX_WAITING, MAX_WAIT)
    }
}

/// Gives back a queue place however the wait ends.
struct Queued<'a>(&'a AtomicUsize);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl PasswordGate {
    /// A gate running `parallel` checks at once with `max_waiting` more
    /// waiting at most `max_wait`.
    pub fn new(parallel: usize, max_waiting: usize, max_wait: Duration) -> Self {
        Self {
            running: Arc::new(Semaphore::new(parallel.max(1))),
            queued: Arc::new(AtomicUsize::new(0)),
            max_waiting: parallel.max(1) + max_waiting,
            max_wait,
        }
    }

    /// Runs `work` on a blocking thread once a turn is free.
    pub async fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Result<T, GateError> {
        if self.queued.fetch_add(1, Ordering::AcqRel) >= self.max_waiting {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(GateError::Busy);
        }
        let _place = Queued(&self.queued);
        let permit = tokio::time::timeout(self.max_wait, self.running.clone().acquire_owned())
            .await
            .map_err(|_| GateError::Busy)?
            .map_err(|_| GateError::Busy)?;
        let result = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work()
        })
        .await;
        result.map_err(|_| GateError::Failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn checks_beyond_the_queue_are_refused_at_once_and_places_come_back() {
        let gate = PasswordGate::new(1, 1, Duration::from_secs(30));
        let (release, hold) = std::sync::mpsc::channel::<()>();
        let (started_tx, started) = tokio::sync::oneshot::channel();
        let first = {
            let gate = gate.clone();
            tokio::spawn(async move {
                gate.run(move || {
                    started_tx.send(()).unwrap();
                    hold.recv().unwrap();
                    1
                })
                .await
            })
        };
        started.await.unwrap();
        // One waits for the running check; the next finds the queue full.
        let second = {
            let gate = gate.clone();
            tokio::spawn(async move { gate.run(|| 2).await })
        };
        while gate.queued.load(Ordering::Acquire) < 2 {
            tokio::task::yield_now().await;
        }
        assert_eq!(gate.run(|| 3).await, Err(GateError::Busy));
        release.send(()).unwrap();
        assert_eq!(first.await.unwrap(), Ok(1));
        assert_eq!(second.await.unwrap(), Ok(2));
        assert_eq!(gate.queued.load(Ordering::Acquire), 0);
        assert_eq!(gate.run(|| 4).await, Ok(4));
    }

    #[tokio::test]
    async fn a_check_that_waits_too_long_is_refused() {
        // The turn is never given back before the deadline, so the outcome
        // does not depend on timing.
        let gate = PasswordGate::new(1, 4, Duration::from_millis(20));
        let held = gate.running.clone().acquire_owned().await.unwrap();
        assert_eq!(gate.run(|| ()).await, Err(GateError::Busy));
        drop(held);
        assert_eq!(gate.run(|| 5).await, Ok(5));
    }
}
