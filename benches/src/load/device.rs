//! One simulated device: the agent's real transport (mutual TLS and the
//! shared-key proof, or SSH) and its real session, streaming batches with
//! up to `window` of them unacknowledged, at full speed or at a set pace, and timing each batch
//! from the moment it is written to the moment the collector acknowledges
//! it as durably stored.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use glimpse_agent::transport::{Connection, Credentials, TransportError};
use glimpse_agent::AgentConfig;
use glimpse_common::wire::{AgentEvent, Batch, BatchRecords};
use hdrhistogram::Histogram;
use portable_atomic::{AtomicU64, Ordering};
use tokio::sync::watch;

/// Latencies are kept in this many histograms, so that thousands of
/// devices do not queue on one lock.
const LATENCY_SHARDS: usize = 16;

/// Longest acknowledgement wait the histograms hold (longer ones count as
/// this): one minute, in microseconds.
const MAX_LATENCY_US: u64 = 60_000_000;

/// Counters every device adds to, read live by the progress bar.
#[derive(Debug)]
pub struct Tally {
    /// Records written to a connection.
    pub sent: AtomicU64,
    /// Records the collector acknowledged as stored.
    pub acked: AtomicU64,
    /// Devices connected now.
    pub connected: AtomicU64,
    /// Connections that failed to open, or failed while streaming.
    pub errors: AtomicU64,
    latencies: Vec<Mutex<Histogram<u64>>>,
    first_error: Mutex<Option<String>>,
}

impl Default for Tally {
    fn default() -> Self {
        let histogram =
            || Mutex::new(Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("constant bounds are valid"));
        Self {
            sent: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            connected: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            latencies: (0..LATENCY_SHARDS).map(|_| histogram()).collect(),
            first_error: Mutex::new(None),
        }
    }
}

impl Tally {
    /// Counts a failure, keeping the first one's text for the report.
    pub fn error(&self, what: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_error.lock().unwrap_or_else(|p| p.into_inner());
        first.get_or_insert(what);
    }

    /// The first failure's text.
    pub fn first_error(&self) -> Option<String> {
        self.first_error.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn latency(&self, shard: usize, elapsed: Duration) {
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX).clamp(1, MAX_LATENCY_US);
        let mut h = self.latencies[shard % LATENCY_SHARDS].lock().unwrap_or_else(|p| p.into_inner());
        let _ = h.record(us);
    }

    /// Every acknowledgement latency so far, in one histogram (µs).
    pub fn latencies(&self) -> Histogram<u64> {
        let mut all = Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("constant bounds are valid");
        for shard in &self.latencies {
            let _ = all.add(&*shard.lock().unwrap_or_else(|p| p.into_inner()));
        }
        all
    }
}

/// Opens a device's connection: TCP, TLS or SSH, Hello, proof, Welcome,
/// with a session that keeps up to `window` batches unacknowledged.
pub async fn connect(config: &AgentConfig, stream_id: u64, window: usize) -> Result<Connection, TransportError> {
    let credentials = Credentials::load(config)?;
    Connection::open_with_window(config, &credentials, stream_id, window).await
}

/// How a device streams.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    /// Batches written before the oldest must be acknowledged.
    pub window: usize,
    /// Time between batches; `None`: as fast as acknowledgements allow.
    pub interval: Option<Duration>,
}

/// Streams `batch`'s records (under the next sequence number each time) on
/// `conn`, whose session was opened with `pace.window`, until `stop` turns
/// true, then waits for every outstanding acknowledgement and says goodbye.
/// Returns the records acknowledged.
pub async fn stream(
    mut conn: Connection,
    batch: Batch,
    pace: Pace,
    shard: usize,
    tally: &Tally,
    mut stop: watch::Receiver<bool>,
) -> Result<u64, TransportError> {
    // Shared, not copied: every batch of this device is the same records.
    let records: BatchRecords = Arc::new(batch.records);
    let count = records.len() as u64;
    let mut acked = 0u64;
    let mut ticker = pace.interval.map(|every| {
        let mut t = tokio::time::interval(every);
        // A device that fell behind sends at its pace again, not a burst.
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    let mut stopping = *stop.borrow();
    loop {
        let waiting = !conn.session().is_drained();
        if stopping && !waiting {
            break;
        }
        let may_send = !stopping && conn.session().has_room();
        tokio::select! {
            biased;
            changed = stop.changed(), if !stopping => {
                // A dropped sender means the run is over too.
                stopping = changed.is_err() || *stop.borrow();
            }
            // Cancel-safe: it only reads.
            event = conn.next_event(), if waiting => {
                if let AgentEvent::Acked { records, sent_at, .. } = event? {
                    if let Some(written) = sent_at {
                        tally.latency(shard, written.elapsed());
                    }
                    tally.acked.fetch_add(records as u64, Ordering::Relaxed);
                    acked += records as u64;
                }
            }
            _ = tick(&mut ticker), if may_send => {
                conn.session_mut().push_batch(Arc::clone(&records), Vec::new())?;
                conn.flush().await?;
                tally.sent.fetch_add(count, Ordering::Relaxed);
            }
        }
    }
    conn.close().await;
    Ok(acked)
}

/// The next tick of `ticker`, or at once when there is no pace.
async fn tick(ticker: &mut Option<tokio::time::Interval>) {
    match ticker {
        Some(t) => {
            t.tick().await;
        }
        None => tokio::task::yield_now().await,
    }
}
