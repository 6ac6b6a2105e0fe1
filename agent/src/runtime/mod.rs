//! The agent daemon: collect on a timer, queue, send in order, reconnect,
//! fail over between the collectors of the service.
//!
//! Records wait in a bounded in-memory queue, journalled to an on-disk
//! spool ([`crate::spool`]), until the collector acknowledges them. When the
//! collector is unreachable the queue fills and the oldest records are
//! dropped and counted (and reported to the collector as an
//! [`AgentHealth`] record), so a device never runs out of memory or flash
//! because its collector is down; what the spool holds survives a restart.
//!
//! The protocol itself (handshake, sequence numbers, acknowledgements,
//! resume, drain) is [`AgentSession`]'s; this loop moves its frames over a
//! [`Link`], feeds it the time and what arrives, and acts on its events.
//! Exactly one batch is in flight at a time. It keeps its sequence number
//! across reconnects so that the collector, which remembers the highest
//! sequence it stored per stream, stores a batch resent after a lost
//! acknowledgement only once.
//!
//! The same holds across collectors: the queue, the spool and the session
//! (with its batch in flight) belong to the device, not to a connection,
//! so failing over to another collector of the service resends exactly what
//! was not acknowledged; the collectors share the per-stream sequence
//! numbers through their backend and store a resent batch once. Which
//! collector to try, and when, is [`Failover`]'s decision.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};

use glimpse_common::bounded::BoundedVec;
use glimpse_common::clock::{Clock, SystemClock};
use glimpse_common::minimise::{omit_from_record, MetadataField};
use glimpse_common::record::{AgentHealth, Record, RecordBody, SpoolRecovery};
use glimpse_common::wire::{AgentEvent, AgentSession, AgentSessionError, ControlMessage, OutgoingBatch};

use crate::capture::session::Captures;
use crate::config::AgentConfig;
use crate::queue::Queue;
use crate::reports::Reporter;
use crate::spool::{Spool, SpoolEntry};
use crate::transport::connection::unresolved_detail;
use crate::transport::{
    describe, resolve, session_config, Backoff, Credentials, Failover, Link, StorageRefusal, TransportError,
};

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
    /// Acknowledgements older than the batch in flight, ignored (a
    /// collector acknowledging a batch it already had).
    pub duplicate_acks: u64,
    /// Successful connections so far.
    pub connections: u64,
    /// Times the collector could not store a batch and asked for it again
    /// later on the same connection (its storage is full or failing).
    pub storage_retries: u64,
    /// The last connection or protocol failure.
    pub last_error: Option<String>,
    /// The TLS cipher suite of the current or last connection, or `SSH`.
    pub cipher_suite: Option<String>,
    /// The collector of the current or last connection, as configured
    /// (`host:port`).
    pub collector: Option<String>,
    /// The address that collector was reached at (what its name resolved to).
    pub collector_addr: Option<SocketAddr>,
    /// Times the agent moved to another collector of the service after
    /// repeated storage refusals.
    pub storage_failovers: u64,
    /// The organisation's capture consent, as the agent last heard it.
    pub capture_consent: bool,
    /// Metadata fields the organisation does not want collected.
    pub omitted_fields: Vec<MetadataField>,
    /// Whether the agent pseudonymises MAC addresses before sending them
    /// (it holds the organisation's device key).
    pub pseudonymising_macs: bool,
    /// Whether the organisation asks for strict header scrubbing, which the
    /// session applies to captured headers as it writes them.
    pub strict_headers: bool,
    /// Data subjects the organisation has blocked, whose data is dropped
    /// before it is queued.
    pub blocked_subjects: usize,
    /// Records (and entries of reports about many clients) about blocked
    /// subjects dropped so far.
    pub blocked_dropped: u64,
    /// Whether the organisation enables WAN destinations (per client and
    /// destination rows with site names); off until the collector says so.
    pub wan_destinations: bool,
}

/// The agent could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// TLS material or the shared key could not be loaded.
    #[error(transparent)]
    Transport(#[from] TransportError),
}

impl AgentError {
    /// The permission refusal behind this error, if it is one.
    pub fn permission_error(&self) -> Option<&glimpse_files::PermissionError> {
        match self {
            AgentError::Transport(e) => e.permission_error(),
        }
    }
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

/// The spool, if one is configured and healthy. A write failure (full or
/// failing flash) is logged once and the agent carries on in memory: a
/// device keeps working without its spool.
struct SpoolSlot {
    spool: Option<Spool>,
    max_bytes: u64,
}

impl SpoolSlot {
    /// Opens the configured spool; also returns what it held and, when it
    /// was found damaged or unusable, the account of it for the collector.
    fn open(
        config: &AgentConfig,
        fresh_stream_id: u64,
    ) -> (Self, Option<crate::spool::SpoolState>, Option<SpoolRecovery>) {
        let Some(path) = &config.spool.path else {
            return (Self { spool: None, max_bytes: config.spool.max_bytes }, None, None);
        };
        match Spool::open(path, config.spool.max_bytes, fresh_stream_id) {
            Ok(opened) => {
                let restored = opened.state.queued.len() + opened.state.in_flight.as_ref().map_or(0, |(_, b)| b.len());
                if restored > 0 {
                    info!(path = %path.display(), records = restored, "unacknowledged records restored from the spool");
                }
                let discarded = opened.discarded.is_some();
                let recovery = (discarded || !opened.damage.is_empty()).then_some(SpoolRecovery {
                    damaged_entries: opened.damage.entries,
                    records_lost: opened.damage.records,
                    records_kept: restored as u64,
                    discarded,
                });
                (Self { spool: Some(opened.spool), max_bytes: config.spool.max_bytes }, Some(opened.state), recovery)
            }
            Err(e) => {
                error!("cannot open the spool; records will be kept in memory only: {e}");
                (Self { spool: None, max_bytes: config.spool.max_bytes }, None, None)
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

    /// Journals the queue's changes and syncs them; compacts when due,
    /// keeping the batch the session has in flight.
    async fn sync(&mut self, queue: &Queue, in_flight: Option<&OutgoingBatch>) {
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
            let pairs: Option<(u64, Vec<(u64, Record)>)> =
                in_flight.map(|f| (f.seq(), f.keys().iter().copied().zip(f.records().iter().cloned()).collect()));
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

/// What [`Device::apply_events`] saw that the failover policy must hear.
#[derive(Debug, Default, Clone, Copy)]
struct Applied {
    /// A batch sent on this connection was acknowledged.
    stored: bool,
    /// The collector could not store a batch and asked for it again then.
    refused_until: Option<std::time::Instant>,
}

/// What the daemon keeps besides the session and the link: the things the
/// collector's directives change, and where acknowledgements are recorded.
struct Device<'a> {
    queue: &'a Arc<Queue>,
    /// Whether a diagnostic bundle is being gathered (one at a time).
    diagnosing: &'a Arc<AtomicBool>,
    spool: &'a mut SpoolSlot,
    status: &'a watch::Sender<AgentStatus>,
    captures: &'a mut Captures,
    config: &'a AgentConfig,
    /// Metadata fields the organisation does not want collected; the
    /// collector says which right after the handshake.
    omitted_fields: &'a mut Vec<MetadataField>,
}

impl Device<'_> {
    /// Acts on everything the session has to tell. While `draining`, no
    /// capture is started (captures were stopped for the shutdown), but a
    /// withdrawal of consent or a new data policy still takes effect.
    /// Returns whether the collector acknowledged a batch sent on this
    /// connection (only that proves it is storing again), and until when
    /// it last asked for a batch again.
    fn apply_events(&mut self, session: &mut AgentSession, draining: bool) -> Applied {
        let mut applied = Applied::default();
        while let Some(event) = session.poll_event() {
            match event {
                AgentEvent::RetryLater { seq, until, code, message } => {
                    applied.refused_until = Some(until);
                    let retry_in = until.saturating_duration_since(std::time::Instant::now());
                    warn!(
                        seq,
                        ?code,
                        ?retry_in,
                        "collector cannot store the batch now; not sending it there again before then: {message}"
                    );
                    self.status.send_modify(|s| {
                        s.storage_retries += 1;
                        s.last_error =
                            Some(format!("collector refused ({code:?}): {message}; retrying in {retry_in:?}"));
                    });
                }
                AgentEvent::Acked { seq, through, records, sent_at } => {
                    applied.stored |= sent_at.is_some();
                    debug!(seq, records, "batch acknowledged");
                    self.spool.append(&SpoolEntry::Acked { seq: through });
                    let queued = self.queue.len();
                    self.status.send_modify(|s| {
                        s.acked_seq = through;
                        s.acked_records += records as u64;
                        s.queued_records = queued;
                    });
                }
                AgentEvent::Renumbered { from, to } => {
                    debug!(from, to, "unsent batch renumbered to follow what the collector stored");
                    let ids = session.unacked().find(|b| b.seq() == to).map_or_else(Vec::new, |b| b.keys().to_vec());
                    self.spool.append(&SpoolEntry::Batched { seq: to, ids: BoundedVec::truncating(ids) });
                }
                AgentEvent::ConsentChanged { capture, discarded } => {
                    if !(draining && capture) {
                        self.captures.handle(ControlMessage::Consent { capture }, self.config.capture_config());
                    }
                    let consent = self.captures.consent();
                    self.status.send_modify(|s| s.capture_consent = consent);
                    if !discarded.is_empty() {
                        // Not sent yet: withdrawn consent covers them too.
                        self.spool.append(&SpoolEntry::Removed { ids: BoundedVec::truncating(discarded) });
                    }
                }
                AgentEvent::Directive(ControlMessage::DataPolicy { omit }) => {
                    *self.omitted_fields = omit.to_vec();
                    info!(omit = ?self.omitted_fields, "organisation's data policy received");
                    // Records collected before the policy arrived are
                    // trimmed too (the collector would trim them anyway).
                    self.queue.trim_metadata(self.omitted_fields);
                    let omitted = self.omitted_fields.clone();
                    self.status.send_modify(|s| s.omitted_fields = omitted);
                }
                AgentEvent::Directive(ControlMessage::MacPseudonyms { key }) => {
                    info!(
                        pseudonymise = key.is_some(),
                        "organisation's MAC pseudonymisation received; applies from the next batch written"
                    );
                    // Held in memory only: after a restart the collector
                    // sends it again, and what goes out before that is
                    // pseudonymised on arrival instead.
                    let on = key.is_some();
                    session.set_mac_pseudonym_key(key);
                    self.status.send_modify(|s| s.pseudonymising_macs = on);
                }
                AgentEvent::Directive(ControlMessage::StrictHeaders { on }) => {
                    // The session applies it; held in memory only, like the
                    // pseudonym key: the collector says it again after a
                    // restart and scrubs on arrival meanwhile.
                    info!(strict = on, "organisation's strict header scrubbing received");
                    self.status.send_modify(|s| s.strict_headers = on);
                }
                AgentEvent::Directive(ControlMessage::CollectDiagnostics { id }) => self.diagnose(id),
                AgentEvent::Directive(ControlMessage::BlockedSubjects { subjects }) => {
                    // Held in memory only, like the other directives: after
                    // a restart the collector says it again on connecting,
                    // and drops the subjects' data on arrival meanwhile.
                    let count = subjects.len();
                    let (removed, cut) = self.queue.set_blocked(subjects.as_slice().to_vec());
                    info!(
                        count,
                        removed, cut, "organisation's blocked subjects received; their data is no longer queued"
                    );
                    let dropped = self.queue.blocked_dropped();
                    self.status.send_modify(|s| {
                        s.blocked_subjects = count;
                        s.blocked_dropped = dropped;
                    });
                }
                AgentEvent::Directive(ControlMessage::WanDestinations { on }) => {
                    // Held in memory only: after a restart nothing is
                    // collected until the collector says so again.
                    info!(on, "organisation's WAN destinations setting received");
                    if !on {
                        // Rows collected while allowed and not yet sent go
                        // (the collector would drop them anyway).
                        self.queue.discard(|r| matches!(r.body, RecordBody::WanDestinations(_)));
                    }
                    self.status.send_modify(|s| s.wan_destinations = on);
                }
                AgentEvent::Directive(other) => self.captures.handle(other, self.config.capture_config()),
                AgentEvent::CaptureRequest(request) if !draining => {
                    self.captures.handle(ControlMessage::StartCapture(request), self.config.capture_config());
                }
                AgentEvent::StopCapture { id } => {
                    self.captures.handle(ControlMessage::StopCapture { id }, self.config.capture_config())
                }
                _ => {}
            }
        }
        let duplicates = session.stats().duplicate_acks;
        self.status.send_if_modified(|s| std::mem::replace(&mut s.duplicate_acks, duplicates) != duplicates);
        applied
    }

    /// Gathers a diagnostic bundle for request `id` on a blocking thread
    /// (it runs the probes' tools) and queues it as a record. One at a
    /// time: a request while one is being gathered is dropped (logged), so
    /// repeated requests cannot pile up threads on the device.
    fn diagnose(&mut self, id: u64) {
        if self.diagnosing.swap(true, Ordering::SeqCst) {
            warn!(request = id, "diagnostic bundle requested while one is being gathered; ignored");
            return;
        }
        info!(request = id, "diagnostic bundle requested by the collector");
        let queue = Arc::clone(self.queue);
        let busy = Arc::clone(self.diagnosing);
        let config = self.config.clone();
        let status = self.status.borrow().clone();
        let omit = self.omitted_fields.clone();
        tokio::task::spawn_blocking(move || {
            // Cleared however gathering ends, a panicking probe included.
            struct Done(Arc<AtomicBool>);
            impl Drop for Done {
                fn drop(&mut self) {
                    self.0.store(false, Ordering::SeqCst);
                }
            }
            let _done = Done(busy);
            let logs = crate::diag::recent_lines().map(|recent| recent.snapshot()).unwrap_or_default();
            let daemon = crate::diag::DaemonState {
                request_id: id,
                recent_logs: &logs,
                connection: Some(connection_state(&status)),
            };
            let bundle = crate::diag::gather(&config, daemon);
            let mut body = RecordBody::Diagnostics(Box::new(bundle));
            omit_from_record(&mut body, &omit);
            queue.push(Record { observed_at_ms: SystemClock.now_millis(), body }, config.max_queued_records);
            info!(request = id, "diagnostic bundle queued");
        });
    }

    /// Moves the next batch from the queue into the session when it has
    /// room, journalling its records and membership to the spool first and
    /// syncing them: after a crash the same records go out under the same
    /// sequence number. Returns whether it did.
    async fn form_batch(&mut self, session: &mut AgentSession) -> bool {
        if !session.has_room() || session.is_closed() {
            return false;
        }
        // The records must be in the spool before the batch that names them.
        if let Some(s) = self.spool.spool.as_mut() {
            if let Err(e) = self.queue.journal(s) {
                self.spool.fail(e);
            }
        }
        let taken = self.queue.take_batch(self.config.max_batch_records);
        if taken.is_empty() {
            return false;
        }
        let (ids, records): (Vec<u64>, Vec<Record>) = taken.into_iter().unzip();
        let spooled_ids = BoundedVec::truncating(ids.clone());
        match session.push_batch(Arc::new(BoundedVec::truncating(records)), ids) {
            Ok(seq) => self.spool.append(&SpoolEntry::Batched { seq, ids: spooled_ids }),
            Err(e) => {
                // Cannot happen with room checked on an open session; the
                // records stay in the spool for the next start.
                warn!(error = %e, "batch not accepted by the session");
                return false;
            }
        }
        self.spool.sync(self.queue, session.unacked().next()).await;
        true
    }
}

async fn run(
    mut settings: Settings,
    status: watch::Sender<AgentStatus>,
    mut shutdown: watch::Receiver<bool>,
    mut reload: watch::Receiver<Option<Settings>>,
) {
    let (mut spool, restored, recovery) = SpoolSlot::open(&settings.config, rand::thread_rng().gen());
    let restored = restored.unwrap_or_default();
    // Sequence numbers belong to a stream; a restored spool continues its
    // stream so the collector recognises batches it already stored.
    let stream_id: u64 = spool.spool.as_ref().map_or_else(|| rand::thread_rng().gen(), Spool::stream_id);
    let queue = Arc::new(Queue::new(restored.queued, restored.next_id));
    let diagnosing = Arc::new(AtomicBool::new(false));
    // Exactly one batch in flight: the spool journals one.
    let mut session = AgentSession::new(session_config(&settings.config, stream_id, 1));
    if let Some((seq, records)) = restored.in_flight {
        let (ids, records): (Vec<u64>, Vec<Record>) = records.into_iter().unzip();
        if let Err(e) = session.push_batch_at(seq, Arc::new(BoundedVec::truncating(records)), ids) {
            warn!(error = %e, seq, "the spool's batch in flight cannot be resumed");
        }
    }
    let discarded_spool = recovery.is_some_and(|r| r.discarded);
    let mut health = AgentHealth { discarded_corrupt_spool: discarded_spool, ..AgentHealth::default() };
    if let Some(recovery) = recovery {
        // Operators see what the damage cost in the device's own data.
        let record = Record { observed_at_ms: SystemClock.now_millis(), body: RecordBody::SpoolRecovery(recovery) };
        queue.push(record, settings.config.max_queued_records);
    }
    let mut reported_health = AgentHealth::default();
    let mut reporter = Some(Reporter::new(&settings.config));
    let started = tokio::time::Instant::now();
    let mut collect_timer = tokio::time::interval(settings.config.interval);
    collect_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut spool_timer = tokio::time::interval(settings.config.spool.sync_interval);
    spool_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The backoff settings are read at start only: a reload keeps the
    // policy, its pacing and the collector that works.
    let backoff = Backoff::new(settings.config.backoff_initial, settings.config.backoff_max);
    let mut failover = Failover::new(backoff, StdRng::from_entropy());
    let mut link: Option<Link> = None;
    let mut omitted_fields: Vec<MetadataField> = Vec::new();
    let consent = crate::capture::consent::Consent::load(settings.config.capture.consent_file.as_deref());
    let mut captures = Captures::new(queue.clone(), consent);
    status.send_modify(|s| {
        s.capture_consent = captures.consent();
        s.queued_records = queue.len();
    });
    captures.configure_monitor(settings.config.capture_config());

    info!(identity = %settings.config.identity, collectors = %collector_list(&settings.config), "agent started");
    loop {
        if *shutdown.borrow() {
            break;
        }
        let mut device = Device {
            queue: &queue,
            diagnosing: &diagnosing,
            spool: &mut spool,
            status: &status,
            captures: &mut captures,
            config: &settings.config,
            omitted_fields: &mut omitted_fields,
        };
        // Connect when there is something to send and the failover policy
        // allows it.
        let has_work = !session.is_drained() || !queue.is_empty();
        let due = failover.next_attempt_at().is_none_or(|at| at <= std::time::Instant::now());
        if link.is_none() && has_work && due {
            // Names are resolved afresh for every attempt (a collector may
            // have moved); a shutdown does not wait for a slow resolver.
            let resolved = tokio::select! {
                resolved = resolve(&settings.config.collectors, settings.config.connect_timeout) => resolved,
                Ok(()) = shutdown.changed() => continue,
            };
            for (index, why) in &resolved.failures {
                if let Some(collector) = settings.config.collectors.get(*index) {
                    warn!(collector = %collector, "cannot resolve collector address: {why}");
                }
            }
            let now = std::time::Instant::now();
            failover.set_candidates(resolved.candidates);
            let Some(candidate) = failover.poll(now) else {
                if failover.candidates().is_empty() {
                    let e = TransportError::Unresolved(unresolved_detail(&settings.config, &resolved.failures));
                    warn!(error = %e, retry_in = ?retry_in(&failover, now), "cannot reach collector");
                    status.send_modify(|s| s.last_error = Some(e.to_string()));
                }
                continue;
            };
            let Some(collector) = settings.config.collectors.get(candidate.origin).cloned() else {
                failover.failed(now);
                continue;
            };
            let target = describe(&collector, candidate.addr);
            match Link::open_to(&settings.config, &settings.credentials, &mut session, &collector, candidate.addr).await
            {
                Ok(opened) => {
                    // The backoff is not reset here: a collector that welcomes
                    // and then cannot store (a full disk) must not be
                    // reconnected to at full speed. Only an acknowledgement
                    // resets it.
                    failover.connected();
                    info!(collector = %target, security = opened.security(), stored_seq = session.welcomed_seq(), "connected to collector");
                    status.send_modify(|s| {
                        s.connected = true;
                        s.connections += 1;
                        s.last_error = None;
                        s.cipher_suite = Some(opened.security().to_owned());
                        s.collector = Some(collector.to_string());
                        s.collector_addr = Some(candidate.addr);
                    });
                    // The welcome may have acknowledged or renumbered the
                    // batch in flight.
                    if device.apply_events(&mut session, false).stored {
                        failover.stored();
                    }
                    link = Some(opened);
                }
                Err(e) => {
                    let now = std::time::Instant::now();
                    failover.failed(now);
                    match failover.next_attempt_at() {
                        None => warn!(collector = %target, error = %e, "cannot reach collector; trying the next one"),
                        Some(_) => {
                            warn!(collector = %target, error = %e, retry_in = ?retry_in(&failover, now), "cannot reach collector")
                        }
                    }
                    status.send_modify(|s| s.last_error = Some(e.to_string()));
                }
            }
            continue;
        }

        // Form the next batch when the last is acknowledged, and write
        // whatever the session has to send; acknowledgements arrive in the
        // select below.
        if let Some(open) = link.as_mut() {
            device.form_batch(&mut session).await;
            if let Err(e) = open.flush(&mut session).await {
                lose_connection(&mut link, &mut session, &e, &status);
                failover.lost(std::time::Instant::now());
                continue;
            }
        }

        // The next connection attempt, while there is none and something
        // to send (a due one was made at the top of the loop).
        let has_work = !session.is_drained() || !queue.is_empty();
        let retry_at =
            failover.next_attempt_at().filter(|_| link.is_none() && has_work).map(tokio::time::Instant::from_std);
        let sleep_until = retry_at.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
        // The end of a collector's RetryLater delay, while connected.
        let session_wake = session.poll_timeout().filter(|_| link.is_some()).map(tokio::time::Instant::from_std);
        tokio::select! {
            _ = collect_timer.tick() => {
                let destinations = status.borrow().wan_destinations;
                let records = collect(&mut reporter, &settings.config, started, &omitted_fields, destinations).await;
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
                let blocked_dropped = queue.blocked_dropped();
                status.send_modify(|s| {
                    s.collected_records += count;
                    s.queued_records = queued.0;
                    s.dropped_records = dropped_metadata + dropped_captures;
                    s.blocked_dropped = blocked_dropped;
                });
            }
            _ = spool_timer.tick() => {
                spool.sync(&queue, session.unacked().next()).await;
            }
            // Cancel-safe: a half-read frame waits in the link's buffer.
            received = async {
                match link.as_mut() {
                    Some(open) => open.receive().await,
                    None => std::future::pending().await,
                }
            } => {
                let handled = received
                    .and_then(|message| Ok(session.handle_message(std::time::Instant::now(), message)?));
                match handled {
                    Ok(()) => {
                        let mut device = Device {
                            queue: &queue,
                            diagnosing: &diagnosing,
                            spool: &mut spool,
                            status: &status,
                            captures: &mut captures,
                            config: &settings.config,
                            omitted_fields: &mut omitted_fields,
                        };
                        let applied = device.apply_events(&mut session, false);
                        if applied.stored {
                            failover.stored();
                        }
                        let leave = applied.refused_until.is_some_and(|until| {
                            failover.storage_refused(std::time::Instant::now(), until) == StorageRefusal::Leave
                        });
                        if let Some(open) = link.take_if(|_| leave) {
                            // Still refused after a delay: another collector
                            // of the service may be storing.
                            let collector = status.borrow().collector.clone().unwrap_or_default();
                            info!(collector = %collector, "collector still cannot store; trying another collector of the service");
                            say_goodbye(open, &mut session, settings.config.drain_timeout).await;
                            status.send_modify(|s| {
                                s.connected = false;
                                s.storage_failovers += 1;
                            });
                        }
                    }
                    Err(e) => {
                        lose_connection(&mut link, &mut session, &e, &status);
                        failover.lost(std::time::Instant::now());
                    }
                }
            }
            Some(report) = captures.reports.recv() => {
                // Written with the next flush, at the top of the loop.
                session.queue_capture_status(report);
            }
            _ = tokio::time::sleep_until(sleep_until), if retry_at.is_some() => {}
            _ = async {
                match session_wake {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => {
                // Releases the held batch; the top of the loop writes it.
                if let Err(e) = session.handle_timeout(std::time::Instant::now()) {
                    warn!(error = %e, "session timeout");
                }
            }
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
                    captures.configure_monitor(new.config.capture_config());
                    reporter = Some(Reporter::new(&new.config));
                    settings = new;
                    if let Some(open) = link.take() {
                        say_goodbye(open, &mut session, settings.config.drain_timeout).await;
                    }
                    session.connection_lost();
                    status.send_modify(|s| s.connected = false);
                    // At once, to the collector in use first.
                    failover.restart();
                }
            }
        }
    }

    captures.stop_all();
    if let Some(open) = link {
        let mut device = Device {
            queue: &queue,
            diagnosing: &diagnosing,
            spool: &mut spool,
            status: &status,
            captures: &mut captures,
            config: &settings.config,
            omitted_fields: &mut omitted_fields,
        };
        drain(open, &mut session, &mut device).await;
    }
    if !session.is_drained() && spool.spool.is_none() {
        let records: usize = session.unacked().map(|b| b.records().len()).sum();
        warn!(records, "no spool; unacknowledged records discarded at exit");
    }
    // Whatever is left is kept for the next start.
    let left = queue.len();
    spool.sync(&queue, None).await;
    if left > 0 && spool.spool.is_some() {
        info!(records = left, "unsent records kept in the spool for the next start");
    }
    info!("agent stopped");
}

/// Sends what is left, within the drain timeout, then says goodbye. What
/// the collector says meanwhile is still acted on. A batch written before
/// shutdown began is not written again: its acknowledgement is on its way.
async fn drain(mut link: Link, session: &mut AgentSession, device: &mut Device<'_>) {
    let deadline = tokio::time::Instant::now() + device.config.drain_timeout;
    session.begin_drain(deadline.into_std());
    let outcome: Result<(), TransportError> = async {
        loop {
            let formed = device.form_batch(session).await;
            if !formed && session.is_drained() {
                return Ok(());
            }
            // Writes are raced against the deadline too: a collector that
            // stops reading must not hold the shutdown. The connection is
            // abandoned then, so a frame cut short does not matter.
            let wake = session.poll_timeout().map_or(deadline, tokio::time::Instant::from_std);
            tokio::select! {
                flushed = link.flush(session) => flushed?,
                _ = tokio::time::sleep_until(wake) => {}
            }
            tokio::select! {
                received = link.receive() => {
                    session.handle_message(std::time::Instant::now(), received?)?;
                    device.apply_events(session, true);
                }
                _ = tokio::time::sleep_until(wake) => {}
            }
            session.handle_timeout(std::time::Instant::now())?;
        }
    }
    .await;
    match outcome {
        Ok(()) => {
            session.close();
            let _ = link.flush(session).await;
            link.shutdown().await;
        }
        Err(TransportError::Session(AgentSessionError::DrainTimedOut { .. })) => {
            warn!("drain timed out; unsent records stay in the spool")
        }
        Err(e) => warn!(error = %e, "drain failed; unsent records stay in the spool"),
    }
    device.status.send_modify(|s| s.connected = false);
}

/// One collection, on a blocking thread: the probes run tools (`iw`,
/// `bridge`, `conntrack`, ...) that may take up to their timeout, and the
/// connection's reads and acknowledgements must not wait for them.
async fn collect(
    reporter: &mut Option<Reporter>,
    config: &AgentConfig,
    started: tokio::time::Instant,
    omit: &[MetadataField],
    destinations: bool,
) -> Vec<Record> {
    let mut current = reporter.take().unwrap_or_else(|| Reporter::new(config));
    let omit = omit.to_vec();
    let now_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let wall_ms = SystemClock.now_millis();
    let job = tokio::task::spawn_blocking(move || {
        current.omit(&omit);
        current.allow_destinations(destinations);
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

/// Says goodbye on `link` and closes it, waiting at most `timeout` for a
/// collector that has stopped reading; the session is then disconnected.
async fn say_goodbye(mut link: Link, session: &mut AgentSession, timeout: Duration) {
    session.goodbye();
    let _ = tokio::time::timeout(timeout, async {
        let _ = link.flush(session).await;
        link.shutdown().await;
    })
    .await;
    session.connection_lost();
}

/// The configured collectors, for the log.
fn collector_list(config: &AgentConfig) -> String {
    config.collectors.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

/// How long until the policy's next attempt.
fn retry_in<R: Rng>(failover: &Failover<R>, now: std::time::Instant) -> Duration {
    failover.next_attempt_at().map_or(Duration::ZERO, |at| at.saturating_duration_since(now))
}

fn lose_connection(
    link: &mut Option<Link>,
    session: &mut AgentSession,
    error: &TransportError,
    status: &watch::Sender<AgentStatus>,
) {
    warn!(error = %error, "connection to collector lost; will resend");
    *link = None;
    session.connection_lost();
    status.send_modify(|s| {
        s.connected = false;
        s.last_error = Some(error.to_string());
    });
}

#[cfg(test)]
mod tests;

/// The daemon's connection as a diagnostic bundle reports it.
fn connection_state(status: &AgentStatus) -> glimpse_common::record::ConnectionState {
    use glimpse_common::bounded::BoundedString;
    glimpse_common::record::ConnectionState {
        connected: status.connected,
        collector: BoundedString::truncating(status.collector.as_deref().unwrap_or("")),
        cipher_suite: BoundedString::truncating(status.cipher_suite.as_deref().unwrap_or("")),
        queued_records: u64::try_from(status.queued_records).unwrap_or(u64::MAX),
        dropped_records: status.dropped_records,
        acked_records: status.acked_records,
        last_error: BoundedString::truncating(status.last_error.as_deref().unwrap_or("")),
    }
}
