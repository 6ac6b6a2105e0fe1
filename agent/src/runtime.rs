//! The agent daemon: collect on a timer, queue, send in order, reconnect.
//!
//! Records wait in a bounded in-memory queue until the collector
//! acknowledges them. When the collector is unreachable the queue fills and
//! the oldest records are dropped and counted, so a device never runs out of
//! memory because its collector is down. (A disk-backed spool that survives
//! an agent restart is a later step.)
//!
//! Exactly one batch is in flight at a time. It keeps its sequence number
//! across reconnects so that the collector, which remembers the highest
//! sequence it stored per stream, stores a batch resent after a lost
//! acknowledgement only once.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use glimpse_common::bounded::BoundedVec;
use glimpse_common::clock::{Clock, SystemClock};
use glimpse_common::minimise::{omit_fields, MetadataField};
use glimpse_common::record::{Record, RecordBody};
use glimpse_common::wire::{AgentMessage, Batch, CollectorMessage, ControlMessage};

use crate::capture::session::Captures;
use crate::config::AgentConfig;
use crate::probe::HostProbe;
use crate::transport::{Backoff, Connection, Credentials, TransportError};

/// What the agent is doing, for tests, the demo and status output.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentStatus {
    /// Whether an authenticated connection is up.
    pub connected: bool,
    /// Highest sequence number the collector acknowledged.
    pub acked_seq: u64,
    /// Records the collector acknowledged.
    pub acked_records: u64,
    /// Records collected.
    pub collected_records: u64,
    /// Records waiting to be sent.
    pub queued_records: usize,
    /// Records dropped because the queue was full.
    pub dropped_records: u64,
    /// Successful connections so far.
    pub connections: u64,
    /// The last connection or protocol failure.
    pub last_error: Option<String>,
    /// The TLS cipher suite of the current or last connection, or `SSH`.
    pub cipher_suite: Option<String>,
    /// The organisation's capture consent, as the agent last heard it.
    pub capture_consent: bool,
    /// Metadata fields the organisation does not want collected.
    pub omitted_fields: Vec<MetadataField>,
}

/// The agent could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// TLS material or the shared key could not be loaded.
    #[error(transparent)]
    Transport(#[from] TransportError),
}

/// Credentials and settings a reload replaces together.
#[derive(Clone)]
struct Settings {
    config: AgentConfig,
    credentials: Credentials,
}

impl Settings {
    fn load(config: AgentConfig) -> Result<Self, AgentError> {
        let credentials = Credentials::load(&config)?;
        Ok(Self { config, credentials })
    }
}

/// Records waiting for the collector, shared with capture threads.
pub(crate) struct Queue {
    records: Mutex<VecDeque<Record>>,
    ready: Notify,
}

/// A running agent.
pub struct AgentHandle {
    status: watch::Receiver<AgentStatus>,
    shutdown: watch::Sender<bool>,
    reload: watch::Sender<Option<Settings>>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for AgentHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentHandle").field("status", &*self.status.borrow()).finish()
    }
}

impl AgentHandle {
    /// Loads credentials and starts collecting and sending on the current
    /// tokio runtime. Bad certificates or keys fail here, not later.
    pub fn spawn(config: AgentConfig) -> Result<Self, AgentError> {
        let settings = Settings::load(config)?;
        let (status_tx, status) = watch::channel(AgentStatus::default());
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (reload, reload_rx) = watch::channel(None);
        let task = tokio::spawn(run(settings, status_tx, shutdown_rx, reload_rx));
        Ok(Self { status, shutdown, reload, task })
    }

    /// A receiver that sees every status change.
    pub fn status(&self) -> watch::Receiver<AgentStatus> {
        self.status.clone()
    }

    /// Replaces configuration and credentials (SIGHUP). The current
    /// connection is closed and reopened with the new credentials.
    pub fn reload(&self, config: AgentConfig) -> Result<(), AgentError> {
        let settings = Settings::load(config)?;
        let _ = self.reload.send(Some(settings));
        Ok(())
    }

    /// Stops collecting, sends what is queued (bounded by the drain
    /// timeout), says goodbye and waits for the agent to finish.
    pub async fn shutdown(self) -> AgentStatus {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
        let status = self.status.borrow().clone();
        status
    }
}

async fn run(
    mut settings: Settings,
    status: watch::Sender<AgentStatus>,
    mut shutdown: watch::Receiver<bool>,
    mut reload: watch::Receiver<Option<Settings>>,
) {
    let queue = Arc::new(Queue { records: Mutex::new(VecDeque::new()), ready: Notify::new() });
    let stream_id: u64 = rand::thread_rng().gen();
    let mut probe = HostProbe::new(settings.config.sysroot.clone());
    let mut collect_timer = tokio::time::interval(settings.config.interval);
    collect_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut backoff = Backoff::new(settings.config.backoff_initial, settings.config.backoff_max);
    let mut connection: Option<Connection> = None;
    let mut in_flight: Option<Batch> = None;
    let mut next_seq: u64 = 1;
    // Whether the in-flight batch was written on the current connection.
    let mut in_flight_written = false;
    let mut retry_at: Option<tokio::time::Instant> = None;
    // Metadata fields the organisation does not want collected; the
    // collector says which right after the handshake.
    let mut omitted_fields: Vec<MetadataField> = Vec::new();
    let consent = crate::capture::consent::Consent::load(settings.config.capture.consent_file.as_deref());
    let mut captures = Captures::new(queue.clone(), consent);
    status.send_modify(|s| s.capture_consent = captures.consent());
    captures.configure_monitor(&settings.config);

    info!(identity = %settings.config.identity, collector = %settings.config.collector_address, "agent started");
    loop {
        if *shutdown.borrow() {
            break;
        }
        // Connect when there is something to send and the backoff allows it.
        let has_work = in_flight.is_some() || !lock(&queue).is_empty();
        if connection.is_none() && has_work && retry_at.is_none_or(|at| at <= tokio::time::Instant::now()) {
            match Connection::open(&settings.config, &settings.credentials, stream_id).await {
                Ok(conn) => {
                    backoff.reset();
                    retry_at = None;
                    // The collector tells us what it already has: anything at
                    // or below it is stored; anything above must follow it
                    // without a gap.
                    let stored = conn.stored_seq();
                    if let Some(batch) = &mut in_flight {
                        if batch.stream_seq <= stored {
                            let count = batch.records.len() as u64;
                            in_flight = None;
                            status.send_modify(|s| {
                                s.acked_seq = stored;
                                s.acked_records += count;
                            });
                        } else {
                            batch.stream_seq = stored + 1;
                        }
                    }
                    next_seq = in_flight.as_ref().map_or(stored + 1, |b| b.stream_seq + 1);
                    in_flight_written = false;
                    info!(security = conn.security(), stored_seq = stored, "connected to collector");
                    status.send_modify(|s| {
                        s.connected = true;
                        s.connections += 1;
                        s.last_error = None;
                        s.cipher_suite = Some(conn.security().to_owned());
                    });
                    connection = Some(conn);
                }
                Err(e) => {
                    let delay = backoff.next_delay(rand::thread_rng().gen());
                    warn!(error = %e, retry_in = ?delay, "cannot reach collector");
                    status.send_modify(|s| s.last_error = Some(e.to_string()));
                    retry_at = Some(tokio::time::Instant::now() + delay);
                }
            }
            continue;
        }

        // Write the in-flight batch (formed from the queue if need be) once
        // per connection; its acknowledgement arrives in the select below.
        if let Some(conn) = connection.as_mut() {
            if in_flight.is_none() {
                let records: Vec<Record> = {
                    let mut q = lock(&queue);
                    let n = q.len().min(settings.config.max_batch_records);
                    q.drain(..n).collect()
                };
                if !records.is_empty() {
                    in_flight = Some(Batch {
                        org: settings.config.identity.org.clone(),
                        stream_seq: next_seq,
                        records: BoundedVec::truncating(records),
                    });
                    in_flight_written = false;
                    next_seq += 1;
                }
            }
            if let (Some(batch), false) = (&in_flight, in_flight_written) {
                match conn.send_batch_only(batch).await {
                    Ok(()) => in_flight_written = true,
                    Err(e) => {
                        lose_connection(&mut connection, &e, &status);
                        retry_at = Some(tokio::time::Instant::now() + backoff.next_delay(rand::thread_rng().gen()));
                    }
                }
                continue;
            }
        }

        let sleep_until = retry_at.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            _ = collect_timer.tick() => {
                let mut record = collect(&mut probe, &settings.config);
                if let RecordBody::Metadata(metadata) = &mut record.body {
                    omit_fields(metadata, &omitted_fields);
                }
                let queued = push(&queue, record, settings.config.max_queued_records);
                status.send_modify(|s| {
                    s.collected_records += 1;
                    s.queued_records = queued.0;
                    s.dropped_records += queued.1;
                });
            }
            // Cancel-safe: a half-read frame waits in the connection's buffer.
            received = async {
                match connection.as_mut() {
                    Some(conn) => conn.receive().await,
                    None => std::future::pending().await,
                }
            } => {
                match received {
                    Ok(CollectorMessage::Ack { stream_seq }) => {
                        match in_flight.take() {
                            Some(batch) if in_flight_written && stream_seq >= batch.stream_seq => {
                                debug!(seq = stream_seq, records = batch.records.len(), "batch acknowledged");
                                let count = batch.records.len() as u64;
                                let queued = lock(&queue).len();
                                status.send_modify(|s| {
                                    s.acked_seq = stream_seq;
                                    s.acked_records += count;
                                    s.queued_records = queued;
                                });
                            }
                            other => {
                                in_flight = other;
                                let e = TransportError::UnexpectedReply("acknowledgement for no batch in flight");
                                lose_connection(&mut connection, &e, &status);
                            }
                        }
                    }
                    Ok(CollectorMessage::Control(ControlMessage::DataPolicy { omit })) => {
                        omitted_fields = omit.to_vec();
                        info!(omit = ?omitted_fields, "organisation's data policy received");
                        // Records collected before the policy arrived are
                        // trimmed too (the collector would trim them anyway).
                        for record in lock(&queue).iter_mut() {
                            if let RecordBody::Metadata(metadata) = &mut record.body {
                                omit_fields(metadata, &omitted_fields);
                            }
                        }
                        status.send_modify(|s| s.omitted_fields = omitted_fields.clone());
                    }
                    Ok(CollectorMessage::Control(control)) => {
                        captures.handle(control, &settings.config);
                        status.send_modify(|s| s.capture_consent = captures.consent());
                        if !captures.consent() && !in_flight_written {
                            // Not sent yet: withdrawn consent covers it too.
                            if let Some(batch) = in_flight.as_mut() {
                                batch.records.retain(|r| !matches!(r.body, RecordBody::Capture(_)));
                            }
                        }
                    }
                    Ok(other) => {
                        let e = match other {
                            CollectorMessage::Error(e) => TransportError::Refused { code: e.code, message: e.message.to_string() },
                            _ => TransportError::UnexpectedReply("a message out of place"),
                        };
                        lose_connection(&mut connection, &e, &status);
                        retry_at = Some(tokio::time::Instant::now() + backoff.next_delay(rand::thread_rng().gen()));
                    }
                    Err(e) => {
                        lose_connection(&mut connection, &e, &status);
                        retry_at = Some(tokio::time::Instant::now() + backoff.next_delay(rand::thread_rng().gen()));
                    }
                }
            }
            Some(report) = captures.reports.recv() => {
                if let Some(conn) = connection.as_mut() {
                    if let Err(e) = conn.send(&AgentMessage::CaptureStatus(report)).await {
                        lose_connection(&mut connection, &e, &status);
                    }
                }
            }
            _ = tokio::time::sleep_until(sleep_until), if retry_at.is_some() => {}
            _ = queue.ready.notified() => {}
            _ = shutdown.changed() => {}
            changed = reload.changed() => {
                // Clone out of the watch first: its guard must not live across an await.
                let fresh = if changed.is_ok() { reload.borrow_and_update().clone() } else { None };
                if let Some(new) = fresh {
                    info!("configuration and credentials reloaded; reconnecting");
                    if new.config.interval != settings.config.interval {
                        collect_timer = tokio::time::interval(new.config.interval);
                    }
                    captures.configure_monitor(&new.config);
                    probe = HostProbe::new(new.config.sysroot.clone());
                    settings = new;
                    if let Some(conn) = connection.take() {
                        conn.close().await;
                    }
                    status.send_modify(|s| s.connected = false);
                    retry_at = None;
                }
            }
        }
    }

    captures.stop_all();
    drain(&settings, &queue, connection, in_flight, next_seq, &status).await;
    info!("agent stopped");
}

/// Sends what is left, within the drain timeout, then says goodbye.
async fn drain(
    settings: &Settings,
    queue: &Queue,
    connection: Option<Connection>,
    mut in_flight: Option<Batch>,
    mut next_seq: u64,
    status: &watch::Sender<AgentStatus>,
) {
    let Some(mut conn) = connection else {
        let left = lock(queue).len() + in_flight.map_or(0, |b| b.records.len());
        if left > 0 {
            warn!(records = left, "not connected at shutdown; unsent records discarded");
        }
        return;
    };
    let work = async {
        loop {
            if in_flight.is_none() {
                let records: Vec<Record> = {
                    let mut q = lock(queue);
                    let n = q.len().min(settings.config.max_batch_records);
                    q.drain(..n).collect()
                };
                if records.is_empty() {
                    break;
                }
                in_flight = Some(Batch {
                    org: settings.config.identity.org.clone(),
                    stream_seq: next_seq,
                    records: BoundedVec::truncating(records),
                });
                next_seq += 1;
            }
            if let Some(batch) = in_flight.take() {
                let count = batch.records.len() as u64;
                let acked = conn.send_batch(&batch).await?;
                status.send_modify(|s| {
                    s.acked_seq = acked;
                    s.acked_records += count;
                });
            }
        }
        Ok::<_, TransportError>(conn)
    };
    match tokio::time::timeout(settings.config.drain_timeout, work).await {
        Ok(Ok(conn)) => conn.close().await,
        Ok(Err(e)) => warn!(error = %e, "drain failed; unsent records discarded"),
        Err(_) => warn!("drain timed out; unsent records discarded"),
    }
    status.send_modify(|s| s.connected = false);
}

fn collect(probe: &mut HostProbe, config: &AgentConfig) -> Record {
    // The probe reads a handful of small /proc and /sys files; that is
    // quicker than handing it to a blocking thread on a single-core device.
    let mut metadata = probe.collect();
    metadata.kind = Some(config.identity.kind);
    Record { observed_at_ms: SystemClock.now_millis(), body: RecordBody::Metadata(metadata) }
}

/// Queues a record; returns (queued, dropped) after dropping the oldest
/// records beyond the bound.
pub(crate) fn push(queue: &Queue, record: Record, max: usize) -> (usize, u64) {
    let mut dropped = 0;
    let len = {
        let mut q = lock(queue);
        q.push_back(record);
        while q.len() > max {
            q.pop_front();
            dropped += 1;
        }
        q.len()
    };
    if dropped > 0 {
        warn!(dropped, "collector unreachable and queue full; dropped oldest records");
    }
    queue.ready.notify_one();
    (len, dropped)
}

/// Queues a capture record, unless capture consent has been withdrawn.
#[cfg_attr(not(feature = "pcap"), allow(dead_code))]
///
/// The consent flag is read under the queue lock, and
/// [`discard_captures`] runs under it after the flag is cleared, so no
/// capture record can slip into the queue after a withdrawal's discard.
pub(crate) fn push_capture(queue: &Queue, record: Record, max: usize, consent: &AtomicBool) -> bool {
    let mut dropped = 0;
    {
        let mut q = lock(queue);
        if !consent.load(Ordering::SeqCst) {
            return false;
        }
        q.push_back(record);
        while q.len() > max {
            q.pop_front();
            dropped += 1;
        }
    }
    if dropped > 0 {
        warn!(dropped, "collector unreachable and queue full; dropped oldest records");
    }
    queue.ready.notify_one();
    true
}

/// Drops every queued capture record (consent withdrawn); returns how many.
pub(crate) fn discard_captures(queue: &Queue) -> usize {
    let mut q = lock(queue);
    let before = q.len();
    q.retain(|record| !matches!(record.body, RecordBody::Capture(_)));
    before - q.len()
}

fn lock(queue: &Queue) -> std::sync::MutexGuard<'_, VecDeque<Record>> {
    // A poisoned queue only means another task panicked mid-push; the
    // records themselves are still whole.
    queue.records.lock().unwrap_or_else(|p| p.into_inner())
}

fn lose_connection(connection: &mut Option<Connection>, error: &TransportError, status: &watch::Sender<AgentStatus>) {
    warn!(error = %error, "connection to collector lost; will resend");
    *connection = None;
    status.send_modify(|s| {
        s.connected = false;
        s.last_error = Some(error.to_string());
    });
}
