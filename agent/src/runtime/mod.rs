//! The agent daemon: collect on a timer, queue, send in order, reconnect.
//!
//! Records wait in a bounded in-memory queue, journalled to an on-disk
//! spool ([`crate::spool`]), until the collector acknowledges them. When the
//! collector is unreachable the queue fills and the oldest records are
//! dropped and counted (and reported to the collector as an
//! [`AgentHealth`] record), so a device never runs out of memory or flash
//! because its collector is down; what the spool holds survives a restart.
//!
//! Exactly one batch is in flight at a time. It keeps its sequence number
//! across reconnects so that the collector, which remembers the highest
//! sequence it stored per stream, stores a batch resent after a lost
//! acknowledgement only once.

mod queue;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};

use glimpse_common::bounded::BoundedVec;
use glimpse_common::clock::{Clock, SystemClock};
use glimpse_common::minimise::{omit_from_record, pseudonymise_at_source, DevicePseudonymKey, MacForm, MetadataField};
use glimpse_common::record::{AgentHealth, Record, RecordBody};
use glimpse_common::wire::{AgentMessage, Batch, CollectorMessage, ControlMessage};

use crate::capture::session::Captures;
use crate::config::AgentConfig;
use crate::reports::Reporter;
use crate::spool::{Spool, SpoolEntry};
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
    /// Whether the agent pseudonymises MAC addresses before sending them
    /// (it holds the organisation's device key).
    pub pseudonymising_macs: bool,
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

pub(crate) use queue::Queue;

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

/// The batch being sent, with the queue ids of its records (for the spool).
struct InFlight {
    batch: Batch,
    ids: Vec<u64>,
    /// Whether it was written on the current connection.
    written: bool,
}

/// The spool, if one is configured and healthy. A write failure (full or
/// failing flash) is logged once and the agent carries on in memory: a
/// device keeps working without its spool.
struct SpoolSlot {
    spool: Option<Spool>,
    max_bytes: u64,
}

impl SpoolSlot {
    fn open(config: &AgentConfig, fresh_stream_id: u64) -> (Self, Option<crate::spool::SpoolState>, bool) {
        let Some(path) = &config.spool.path else {
            return (Self { spool: None, max_bytes: config.spool.max_bytes }, None, false);
        };
        match Spool::open(path, config.spool.max_bytes, fresh_stream_id) {
            Ok(opened) => {
                let restored = opened.state.queued.len() + opened.state.in_flight.as_ref().map_or(0, |(_, b)| b.len());
                if restored > 0 {
                    info!(path = %path.display(), records = restored, "unacknowledged records restored from the spool");
                }
                let discarded = opened.discarded.is_some();
                (Self { spool: Some(opened.spool), max_bytes: config.spool.max_bytes }, Some(opened.state), discarded)
            }
            Err(e) => {
                error!("cannot open the spool; records will be kept in memory only: {e}");
                (Self { spool: None, max_bytes: config.spool.max_bytes }, None, false)
            }
        }
    }

    fn append(&mut self, entry: &SpoolEntry) {
        if let Some(spool) = self.spool.as_mut() {
            if let Err(e) = spool.append(entry) {
                self.fail(e);
            }
        }
    }

    /// Journals the queue's changes and syncs them; compacts when due.
    async fn sync(&mut self, queue: &Queue, in_flight: Option<&InFlight>) {
        let Some(spool) = self.spool.as_mut() else { return };
        if let Err(e) = queue.journal(spool) {
            return self.fail(e);
        }
        if !spool.has_pending() {
            return;
        }
        if let Err(e) = spool.flush().await {
            return self.fail(e);
        }
        if spool.needs_compaction() {
            let pairs: Option<(u64, Vec<(u64, Record)>)> = in_flight
                .map(|f| (f.batch.stream_seq, f.ids.iter().copied().zip(f.batch.records.iter().cloned()).collect()));
            let view = pairs.as_ref().map(|(seq, records)| (*seq, records.as_slice()));
            if let Err(e) = queue.compact(spool, view, self.max_bytes) {
                self.fail(e);
            }
        }
    }

    fn fail(&mut self, e: crate::spool::SpoolError) {
        error!("spool write failed; continuing with records in memory only (a restart will lose them): {e}");
        self.spool = None;
    }
}

async fn run(
    mut settings: Settings,
    status: watch::Sender<AgentStatus>,
    mut shutdown: watch::Receiver<bool>,
    mut reload: watch::Receiver<Option<Settings>>,
) {
    let (mut spool, restored, discarded_spool) = SpoolSlot::open(&settings.config, rand::thread_rng().gen());
    let restored = restored.unwrap_or_default();
    // Sequence numbers belong to a stream; a restored spool continues its
    // stream so the collector recognises batches it already stored.
    let stream_id: u64 = spool.spool.as_ref().map_or_else(|| rand::thread_rng().gen(), Spool::stream_id);
    let queue = Arc::new(Queue::new(restored.queued, restored.next_id));
    let mut in_flight: Option<InFlight> = restored.in_flight.map(|(seq, records)| {
        let (ids, records): (Vec<u64>, Vec<Record>) = records.into_iter().unzip();
        InFlight {
            batch: Batch {
                org: settings.config.identity.org.clone(),
                stream_seq: seq,
                records: BoundedVec::truncating(records),
            },
            ids,
            written: false,
        }
    });
    let mut next_seq: u64 = in_flight.as_ref().map_or(1, |f| f.batch.stream_seq + 1);
    let mut health = AgentHealth { discarded_corrupt_spool: discarded_spool, ..AgentHealth::default() };
    let mut reported_health = AgentHealth::default();
    let mut reporter = Some(Reporter::new(&settings.config));
    let started = tokio::time::Instant::now();
    let mut collect_timer = tokio::time::interval(settings.config.interval);
    collect_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut spool_timer = tokio::time::interval(settings.config.spool.sync_interval);
    spool_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut backoff = Backoff::new(settings.config.backoff_initial, settings.config.backoff_max);
    let mut connection: Option<Connection> = None;
    let mut retry_at: Option<tokio::time::Instant> = None;
    // Metadata fields the organisation does not want collected; the
    // collector says which right after the handshake.
    let mut omitted_fields: Vec<MetadataField> = Vec::new();
    // The organisation's device key when it pseudonymises MACs. Held in
    // memory only: after a restart the collector sends it again, and what
    // goes out before that is pseudonymised on arrival instead.
    let mut mac_key: Option<DevicePseudonymKey> = None;
    let consent = crate::capture::consent::Consent::load(settings.config.capture.consent_file.as_deref());
    let mut captures = Captures::new(queue.clone(), consent);
    status.send_modify(|s| {
        s.capture_consent = captures.consent();
        s.queued_records = queue.len();
    });
    captures.configure_monitor(&settings.config);

    info!(identity = %settings.config.identity, collector = %settings.config.collector_address, "agent started");
    loop {
        if *shutdown.borrow() {
            break;
        }
        // Connect when there is something to send and the backoff allows it.
        let has_work = in_flight.is_some() || !queue.is_empty();
        if connection.is_none() && has_work && retry_at.is_none_or(|at| at <= tokio::time::Instant::now()) {
            match Connection::open(&settings.config, &settings.credentials, stream_id).await {
                Ok(conn) => {
                    backoff.reset();
                    retry_at = None;
                    // The collector tells us what it already has: anything at
                    // or below it is stored; anything above must follow it
                    // without a gap.
                    let stored = conn.stored_seq();
                    if let Some(flight) = &mut in_flight {
                        if flight.batch.stream_seq <= stored {
                            let count = flight.batch.records.len() as u64;
                            in_flight = None;
                            spool.append(&SpoolEntry::Acked { seq: stored });
                            status.send_modify(|s| {
                                s.acked_seq = stored;
                                s.acked_records += count;
                            });
                        } else if flight.batch.stream_seq != stored + 1 {
                            flight.batch.stream_seq = stored + 1;
                            spool.append(&SpoolEntry::Batched {
                                seq: flight.batch.stream_seq,
                                ids: BoundedVec::truncating(flight.ids.clone()),
                            });
                        }
                    }
                    next_seq = in_flight.as_ref().map_or(stored + 1, |f| f.batch.stream_seq + 1);
                    if let Some(flight) = in_flight.as_mut() {
                        flight.written = false;
                    }
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
                // The records must be in the spool before the batch that
                // names them.
                if let Some(flight) = form_batch(&queue, &mut spool, &settings.config, &mut next_seq) {
                    in_flight = Some(flight);
                    // Durable before sent: after a crash the same records go
                    // out under the same sequence number.
                    spool.sync(&queue, in_flight.as_ref()).await;
                }
            }
            if let Some(flight) = in_flight.as_mut().filter(|f| !f.written) {
                match write_batch(conn, &flight.batch, mac_key.as_ref()).await {
                    Ok(()) => flight.written = true,
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
                let records = collect(&mut reporter, &settings.config, started, &omitted_fields).await;
                let count = records.len() as u64;
                let mut queued = (queue.len(), 0);
                for mut record in records {
                    omit_from_record(&mut record.body, &omitted_fields);
                    queued = queue.push(record, settings.config.max_queued_records);
                }
                let (dropped_metadata, dropped_captures) = queue.dropped();
                health.dropped_metadata = dropped_metadata;
                health.dropped_captures = dropped_captures;
                if health != reported_health {
                    // Operators see the gap as a record in the device's data.
                    let record = Record { observed_at_ms: SystemClock.now_millis(), body: RecordBody::AgentHealth(health) };
                    queue.push(record, settings.config.max_queued_records);
                    reported_health = health;
                }
                status.send_modify(|s| {
                    s.collected_records += count;
                    s.queued_records = queued.0;
                    s.dropped_records = dropped_metadata + dropped_captures;
                });
            }
            _ = spool_timer.tick() => {
                spool.sync(&queue, in_flight.as_ref()).await;
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
                            Some(flight) if flight.written && stream_seq >= flight.batch.stream_seq => {
                                debug!(seq = stream_seq, records = flight.batch.records.len(), "batch acknowledged");
                                spool.append(&SpoolEntry::Acked { seq: stream_seq });
                                let count = flight.batch.records.len() as u64;
                                let queued = queue.len();
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
                        queue.trim_metadata(&omitted_fields);
                        status.send_modify(|s| s.omitted_fields = omitted_fields.clone());
                    }
                    Ok(CollectorMessage::Control(ControlMessage::MacPseudonyms { key })) => {
                        info!(
                            pseudonymise = key.is_some(),
                            "organisation's MAC pseudonymisation received; applies from the next batch written"
                        );
                        mac_key = key;
                        let on = mac_key.is_some();
                        status.send_modify(|s| s.pseudonymising_macs = on);
                    }
                    Ok(CollectorMessage::Control(control)) => {
                        captures.handle(control, &settings.config);
                        status.send_modify(|s| s.capture_consent = captures.consent());
                        if !captures.consent() {
                            // Not sent yet: withdrawn consent covers it too.
                            if let Some(flight) = in_flight.as_mut().filter(|f| !f.written) {
                                let removed = drop_captures(flight);
                                if !removed.is_empty() {
                                    spool.append(&SpoolEntry::Removed { ids: BoundedVec::truncating(removed) });
                                }
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
                    reporter = Some(Reporter::new(&new.config));
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
    let outgoing = Outgoing { connection, in_flight, next_seq, mac_key };
    drain(&settings, &queue, &mut spool, outgoing, &status).await;
    // Whatever is left is kept for the next start.
    let left = queue.len();
    spool.sync(&queue, None).await;
    if left > 0 && spool.spool.is_some() {
        info!(records = left, "unsent records kept in the spool for the next start");
    }
    info!("agent stopped");
}

/// Takes the next batch from the queue, journalling its records and
/// membership to the spool first.
fn form_batch(queue: &Queue, spool: &mut SpoolSlot, config: &AgentConfig, next_seq: &mut u64) -> Option<InFlight> {
    if let Some(s) = spool.spool.as_mut() {
        if let Err(e) = queue.journal(s) {
            spool.fail(e);
        }
    }
    let taken = queue.take_batch(config.max_batch_records);
    if taken.is_empty() {
        return None;
    }
    let (ids, records): (Vec<u64>, Vec<Record>) = taken.into_iter().unzip();
    let seq = *next_seq;
    *next_seq += 1;
    spool.append(&SpoolEntry::Batched { seq, ids: BoundedVec::truncating(ids.clone()) });
    Some(InFlight {
        batch: Batch { org: config.identity.org.clone(), stream_seq: seq, records: BoundedVec::truncating(records) },
        ids,
        written: false,
    })
}

/// Removes capture records from an unsent batch; returns their ids.
fn drop_captures(flight: &mut InFlight) -> Vec<u64> {
    let mut removed = Vec::new();
    let mut kept_ids = Vec::new();
    let records = std::mem::take(&mut flight.batch.records).to_vec();
    let mut kept = Vec::new();
    for (id, record) in flight.ids.iter().copied().zip(records) {
        if matches!(record.body, RecordBody::Capture(_)) {
            removed.push(id);
        } else {
            kept_ids.push(id);
            kept.push(record);
        }
    }
    flight.ids = kept_ids;
    flight.batch.records = BoundedVec::truncating(kept);
    removed
}

/// Sends what is left, within the drain timeout, then says goodbye.
async fn drain(
    settings: &Settings,
    queue: &Queue,
    spool: &mut SpoolSlot,
    outgoing: Outgoing,
    status: &watch::Sender<AgentStatus>,
) {
    let Outgoing { connection, mut in_flight, mut next_seq, mac_key } = outgoing;
    let Some(mut conn) = connection else {
        if let Some(flight) = in_flight {
            requeue_unsent(spool, &flight);
        }
        return;
    };
    let work = async {
        loop {
            if in_flight.is_none() {
                in_flight = form_batch(queue, spool, &settings.config, &mut next_seq);
                if in_flight.is_none() {
                    break;
                }
                spool.sync(queue, in_flight.as_ref()).await;
            }
            if let Some(flight) = in_flight.as_ref() {
                let count = flight.batch.records.len() as u64;
                // A batch written before shutdown began is not written
                // again: its acknowledgement is on its way, and a second
                // copy would only earn a duplicate acknowledgement later.
                if !flight.written {
                    write_batch(&mut conn, &flight.batch, mac_key.as_ref()).await?;
                }
                let acked = await_ack(&mut conn, flight.batch.stream_seq).await?;
                spool.append(&SpoolEntry::Acked { seq: acked });
                in_flight = None;
                status.send_modify(|s| {
                    s.acked_seq = acked;
                    s.acked_records += count;
                });
            }
        }
        Ok::<_, TransportError>(())
    };
    let outcome = tokio::time::timeout(settings.config.drain_timeout, work).await;
    match outcome {
        Ok(Ok(())) => conn.close().await,
        Ok(Err(e)) => warn!(error = %e, "drain failed; unsent records stay in the spool"),
        Err(_) => warn!("drain timed out; unsent records stay in the spool"),
    }
    if let Some(flight) = in_flight {
        requeue_unsent(spool, &flight);
    }
    status.send_modify(|s| s.connected = false);
}

/// What is left to send at shutdown.
struct Outgoing {
    connection: Option<Connection>,
    in_flight: Option<InFlight>,
    next_seq: u64,
    mac_key: Option<DevicePseudonymKey>,
}

/// Writes `batch`; with the organisation's device key, a copy whose MAC
/// addresses are replaced by their pseudonyms, so no real address leaves
/// the device. The queue and the spool keep the real addresses (the device
/// saw them anyway): a batch restored after a restart may go out before the
/// key is heard again, and the collector must then be able to tell it
/// needs both layers, which it can only if the batch says how it was sent.
async fn write_batch(
    conn: &mut Connection,
    batch: &Batch,
    mac_key: Option<&DevicePseudonymKey>,
) -> Result<(), TransportError> {
    match mac_key {
        None => conn.write_batch(batch, MacForm::Real).await,
        Some(key) => conn.write_batch(&pseudonymised(batch, key), MacForm::DevicePseudonyms).await,
    }
}

/// A copy of `batch` with every MAC address pseudonymised under `key`.
fn pseudonymised(batch: &Batch, key: &DevicePseudonymKey) -> Batch {
    let key = key.hmac_key();
    let mut copy = batch.clone();
    for record in copy.records.as_mut_slice() {
        pseudonymise_at_source(&mut record.body, &key);
    }
    copy
}

/// Waits for the acknowledgement of batch `seq`, passing over control
/// messages and acknowledgements of older batches (duplicates).
async fn await_ack(conn: &mut Connection, seq: u64) -> Result<u64, TransportError> {
    loop {
        match conn.receive().await? {
            CollectorMessage::Ack { stream_seq } if stream_seq >= seq => return Ok(stream_seq),
            CollectorMessage::Ack { .. } | CollectorMessage::Control(_) => {}
            CollectorMessage::Error(e) => {
                return Err(TransportError::Refused { code: e.code, message: e.message.to_string() })
            }
            _ => return Err(TransportError::UnexpectedReply("a message out of place while draining")),
        }
    }
}

/// The batch in flight at exit is already in the spool with its sequence
/// number; without a spool it is lost, and said so.
fn requeue_unsent(spool: &SpoolSlot, flight: &InFlight) {
    if spool.spool.is_none() {
        warn!(records = flight.batch.records.len(), "no spool; unacknowledged records discarded at exit");
    }
}

/// One collection, on a blocking thread: the probes run tools (`iw`,
/// `bridge`, `conntrack`, ...) that may take up to their timeout, and the
/// connection's reads and acknowledgements must not wait for them.
async fn collect(
    reporter: &mut Option<Reporter>,
    config: &AgentConfig,
    started: tokio::time::Instant,
    omit: &[MetadataField],
) -> Vec<Record> {
    let mut current = reporter.take().unwrap_or_else(|| Reporter::new(config));
    let omit = omit.to_vec();
    let now_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let wall_ms = SystemClock.now_millis();
    let job = tokio::task::spawn_blocking(move || {
        current.omit(&omit);
        let records = current.collect(now_ms, wall_ms);
        (current, records)
    });
    match job.await {
        Ok((current, records)) => {
            *reporter = Some(current);
            records
        }
        Err(e) => {
            // A panic in a probe is a bug (device builds abort on panic);
            // elsewhere the agent goes on with a fresh reporter next time.
            warn!(error = %e, "collection failed");
            *reporter = Some(Reporter::new(config));
            Vec::new()
        }
    }
}

/// Queues a capture record, unless capture consent has been withdrawn.
#[cfg_attr(not(feature = "pcap"), allow(dead_code))]
pub(crate) fn push_capture(queue: &Queue, record: Record, max: usize, consent: &AtomicBool) -> bool {
    queue.push_capture(record, max, consent)
}

/// Drops every queued capture record (consent withdrawn); returns how many.
pub(crate) fn discard_captures(queue: &Queue) -> usize {
    queue.discard_captures()
}

fn lose_connection(connection: &mut Option<Connection>, error: &TransportError, status: &watch::Sender<AgentStatus>) {
    warn!(error = %error, "connection to collector lost; will resend");
    *connection = None;
    status.send_modify(|s| {
        s.connected = false;
        s.last_error = Some(error.to_string());
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use glimpse_common::record::{MacAddr, WiredHost, WiredReport};

    #[test]
    fn a_pseudonymised_copy_leaves_the_spooled_batch_real() {
        let real = MacAddr([0x8c, 0x16, 0x45, 0x44, 0x55, 0x66]);
        let report = WiredReport {
            hosts: BoundedVec::truncating(vec![WiredHost { mac: real, ..Default::default() }]),
            ..Default::default()
        };
        let batch = Batch {
            org: glimpse_common::identity::OrgId::new("acme").unwrap(),
            stream_seq: 3,
            records: BoundedVec::truncating(vec![Record {
                observed_at_ms: 1,
                body: RecordBody::Wired(Box::new(report)),
            }]),
        };
        let key: DevicePseudonymKey = postcard::from_bytes(&[4; 32]).unwrap();
        let sent = pseudonymised(&batch, &key);
        let RecordBody::Wired(sent_report) = &sent.records[0].body else { unreachable!() };
        assert_eq!(sent_report.hosts[0].mac, key.pseudonym(real));
        assert_eq!((sent.stream_seq, &sent.org), (3, &batch.org));
        let RecordBody::Wired(kept) = &batch.records[0].body else { unreachable!() };
        assert_eq!(kept.hosts[0].mac, real, "the batch the spool holds is untouched");
    }
}
