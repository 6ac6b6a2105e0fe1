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
    /// Connection attempts the collector refused or dropped before the
    /// device was authenticated (overload, eviction, deadline), each
    /// retried after a backoff as an agent would.
    pub refusals: AtomicU64,
    /// Devices the collector told that their organisation has no capture
    /// consent (their capture records are dropped, not stored).
    pub without_consent: AtomicU64,
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
            refusals: AtomicU64::new(0),
            without_consent: AtomicU64::new(0),
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

/// A uniform sample in [0, 1) for the backoff's jitter, from the standard
/// library's randomly keyed hasher (no random-number crate needed here).
fn jitter() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let bits = std::collections::hash_map::RandomState::new().build_hasher().finish();
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// Attempts before a device gives up connecting.
pub const CONNECT_ATTEMPTS: u32 = 10;

/// Whether `error` is the collector turning a connection away before the
/// device authenticated (too many connections, an evicted or timed-out
/// unauthenticated SSH connection, shutting down): what an agent retries
/// after a backoff. Anything else (a refused key or certificate, a wrong
/// host key, a bad configuration) is a failure.
pub fn is_refusal(error: &TransportError) -> bool {
    use glimpse_common::wire::ErrorCode;
    use std::io::ErrorKind;
    let dropped = |e: &std::io::Error| {
        matches!(
            e.kind(),
            ErrorKind::ConnectionReset
                | ErrorKind::ConnectionAborted
                | ErrorKind::UnexpectedEof
                | ErrorKind::BrokenPipe
        )
    };
    match error {
        TransportError::Ssh(_) | TransportError::Timeout(_) => true,
        TransportError::Tls(e) => dropped(e),
        TransportError::Connect { source, .. } => dropped(source),
        TransportError::Refused { code, .. } => matches!(code, ErrorCode::ShuttingDown | ErrorCode::StorageUnavailable),
        _ => false,
    }
}

/// [`connect`], retrying refusals ([`is_refusal`]) with the agent's
/// jittered exponential backoff, counting each in `tally.refusals`.
pub async fn connect_retrying(
    config: &AgentConfig,
    stream_id: u64,
    window: usize,
    tally: &Tally,
) -> Result<Connection, TransportError> {
    let mut backoff = glimpse_agent::transport::Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    let mut attempt = 1;
    loop {
        match connect(config, stream_id, window).await {
            Ok(conn) => return Ok(conn),
            Err(e) if is_refusal(&e) && attempt < CONNECT_ATTEMPTS => {
                tally.refusals.fetch_add(1, Ordering::Relaxed);
                attempt += 1;
                tokio::time::sleep(backoff.next_delay(jitter())).await;
            }
            Err(e) => {
                if is_refusal(&e) {
                    tally.refusals.fetch_add(1, Ordering::Relaxed);
                }
                return Err(e);
            }
        }
    }
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
    let mut told_no_consent = false;
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
                match event? {
                    AgentEvent::Acked { records, sent_at, .. } => {
                        if let Some(written) = sent_at {
                            tally.latency(shard, written.elapsed());
                        }
                        tally.acked.fetch_add(records as u64, Ordering::Relaxed);
                        acked += records as u64;
                    }
                    AgentEvent::ConsentChanged { capture: false, .. } if !told_no_consent => {
                        told_no_consent = true;
                        tally.without_consent.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {}
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

#[cfg(test)]
mod tests {
    use super::*;
    use glimpse_common::wire::ErrorCode;

    #[test]
    fn turned_away_before_authentication_is_a_refusal_anything_else_a_failure() {
        let io = |kind| std::io::Error::new(kind, "x");
        assert!(is_refusal(&TransportError::Ssh("Disconnected".into())));
        assert!(is_refusal(&TransportError::Tls(io(std::io::ErrorKind::ConnectionReset))));
        assert!(is_refusal(&TransportError::Refused { code: ErrorCode::ShuttingDown, message: String::new() }));
        assert!(!is_refusal(&TransportError::Refused {
            code: ErrorCode::AuthenticationFailed,
            message: String::new()
        }));
        assert!(!is_refusal(&TransportError::SshLoginRefused { user: "a/b".into(), fingerprint: "f".into() }));
        assert!(!is_refusal(&TransportError::Tls(io(std::io::ErrorKind::InvalidData))));
        let j = jitter();
        assert!((0.0..1.0).contains(&j));
    }
}
