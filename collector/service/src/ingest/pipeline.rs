//! Several batches of one connection stored at once, by two long-lived
//! threads per store that group every connection's batches.
//!
//! A connection used to store one batch at a time on a blocking thread of
//! its own: read it, seal and write it, wait for the fsync and the
//! sequence commit, acknowledge, read the next. Each device then had one
//! batch in the store's group commit however many it had sent, every batch
//! cost two thread hand-offs, and hundreds of threads sat waiting on
//! fsyncs (docs/PERFORMANCE.md). Now a connection hands each batch, once
//! checked, to its store's [`StoreWriter`] and reads the next, up to
//! [`MAX_BATCHES_IN_FLIGHT`] batches ahead of its acknowledgements:
//!
//! - the *writer* thread takes every batch waiting (all connections'),
//!   seals and writes each ([`Store::write_blocks`]) and passes the group on;
//! - the *committer* thread makes the group durable (one fsync a segment,
//!   segments of different organisations in parallel) and commits every
//!   batch's sequence in one transaction ([`Store::commit_sequences`]),
//!   then answers each connection, while the writer seals the next group.
//!
//! What may overlap and what may not: writing blocks never hurts (blocks
//! of a batch whose sequence is never committed are sent again and served
//! once: see `glimpse_store::store::block`). Committing a sequence says
//! "everything of this stream up to here is stored", so a batch commits
//! only with or after the batch before it on its connection, and not at all
//! if that one failed: each batch carries its predecessor's
//! [`CommitGate`]. Connections send in order and both threads keep it, so
//! a predecessor not yet decided is in the same group, earlier, and the
//! two commit in the same transaction. Acknowledgements go out in sequence
//! order as the connection collects its answers front to back.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Instant;

use glimpse_common::clock::UnixMillis;
use glimpse_common::identity::DeviceIdentity;
use glimpse_common::record::AgentHealth;
use glimpse_common::wire::Batch;
use glimpse_store::store::{AppendReceipt, Store, WrittenBatch};
use tokio::sync::{mpsc, oneshot};

use crate::ingest::reject::Tally;

/// Batches one connection stores at once: the agent's default window,
/// so a device streaming as fast as it may keeps all of its unacknowledged
/// batches in the group commit, and a stalled disk holds no more than
/// this many of each device's batches in memory.
pub(crate) const MAX_BATCHES_IN_FLIGHT: usize = 4;

/// Batches the writer takes into one group at most: enough to fill a
/// commit on a busy collector, few enough that the first of them is not
/// kept waiting for long behind the sealing of the rest.
const MAX_GROUP: usize = 512;

/// Groups sealed ahead of the committer: one being committed, one ready.
const GROUPS_AHEAD: usize = 1;

/// Whether a batch's sequence was committed, for the batch after it.
#[derive(Debug, Default)]
pub(crate) struct CommitGate(AtomicU8);

const UNDECIDED: u8 = 0;
const COMMITTED: u8 = 1;
const FAILED: u8 = 2;

impl CommitGate {
    fn decide(&self, committed: bool) {
        let _ = self.0.compare_exchange(
            UNDECIDED,
            if committed { COMMITTED } else { FAILED },
            Ordering::AcqRel,
            Ordering::Acquire,
        );
    }

    fn failed(&self) -> bool {
        self.0.load(Ordering::Acquire) == FAILED
    }
}

/// One batch for the writer.
struct Job {
    identity: DeviceIdentity,
    stream_id: u64,
    batch: Batch,
    /// The gate of the batch before it on the same connection, if that one
    /// was still being stored when this one was handed over.
    before: Option<Arc<CommitGate>>,
    gate: Decides,
    answer: oneshot::Sender<Stored>,
}

/// A job's own gate, decided as failed if the job is dropped undecided (a
/// thread that died): the batch after it must not commit on its own.
struct Decides(Arc<CommitGate>);

impl Drop for Decides {
    fn drop(&mut self) {
        self.0.decide(false);
    }
}

impl Job {
    fn fail(self, why: String) {
        self.gate.0.decide(false);
        let _ = self.answer.send(Err(why));
    }
}

/// A store's writer and committer threads (see the module header). They
/// end once every handle is dropped and the batches handed over are done.
#[derive(Debug, Clone)]
pub(crate) struct StoreWriter {
    jobs: mpsc::UnboundedSender<Job>,
}

impl StoreWriter {
    /// Starts the two threads for `store`.
    pub(crate) fn start(store: Arc<Store>) -> std::io::Result<StoreWriter> {
        // Unbounded, yet bounded: each connection has at most
        // MAX_BATCHES_IN_FLIGHT batches here, and connections are bounded.
        let (jobs, mut incoming) = mpsc::unbounded_channel::<Job>();
        let (groups, sealed) = std::sync::mpsc::sync_channel::<Vec<(Job, WrittenBatch)>>(GROUPS_AHEAD);
        let committing = Arc::clone(&store);
        std::thread::Builder::new().name("glimpse-commit".into()).spawn(move || {
            while let Ok(group) = sealed.recv() {
                commit_group(&committing, group);
            }
        })?;
        std::thread::Builder::new().name("glimpse-write".into()).spawn(move || {
            while let Some(first) = incoming.blocking_recv() {
                let mut taken = vec![first];
                while taken.len() < MAX_GROUP {
                    match incoming.try_recv() {
                        Ok(job) => taken.push(job),
                        Err(_) => break,
                    }
                }
                let group = write_group(&store, taken);
                if !group.is_empty() && groups.send(group).is_err() {
                    return;
                }
            }
        })?;
        Ok(StoreWriter { jobs })
    }
}

/// Seals and writes each batch; those that fail are answered at once.
fn write_group(store: &Store, jobs: Vec<Job>) -> Vec<(Job, WrittenBatch)> {
    let mut written = Vec::with_capacity(jobs.len());
    for job in jobs {
        if job.before.as_ref().is_some_and(|gate| gate.failed()) {
            job.fail("an earlier batch of this connection was not stored".to_owned());
            continue;
        }
        // A panic in the store must cost this batch, not every later one.
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            store.write_blocks(&job.identity, job.stream_id, job.batch.stream_seq, &job.batch.records)
        }));
        match outcome {
            Ok(Ok(batch)) => written.push((job, batch)),
            Ok(Err(e)) => job.fail(e.to_string()),
            Err(_) => job.fail("storing the batch panicked; see the collector's log".to_owned()),
        }
    }
    written
}

/// Makes a group durable and commits every sequence that may be.
fn commit_group(store: &Store, mut group: Vec<(Job, WrittenBatch)>) {
    let synced = sync_in_parallel(store, &mut group);
    let mut committing = Vec::with_capacity(group.len());
    for ((job, written), synced) in group.into_iter().zip(synced) {
        if let Err(e) = synced {
            job.fail(e);
        } else if job.before.as_ref().is_some_and(|gate| gate.failed()) {
            // Its predecessor failed in this group, or was failed earlier.
            job.fail("an earlier batch of this connection was not stored".to_owned());
        } else {
            committing.push((job, written));
        }
    }
    if committing.is_empty() {
        return;
    }
    let batches: Vec<&WrittenBatch> = committing.iter().map(|(_, w)| w).collect();
    let committed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| store.commit_sequences(&batches)));
    let outcome = match committed {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("committing the batches panicked; see the collector's log".to_owned()),
    };
    for (job, written) in committing {
        match &outcome {
            Ok(()) => {
                job.gate.0.decide(true);
                let _ = job.answer.send(Ok((written.receipt(), job.batch)));
            }
            Err(e) => job.fail(e.clone()),
        }
    }
}

/// Syncs every batch of a group; each organisation's segments are other
/// files, so their fsyncs run side by side instead of one after another.
fn sync_in_parallel(store: &Store, group: &mut [(Job, WrittenBatch)]) -> Vec<Result<(), String>> {
    let mut by_org: Vec<(glimpse_common::identity::OrgId, Vec<usize>)> = Vec::new();
    for (i, (_, written)) in group.iter().enumerate() {
        let org = &written.identity().org;
        match by_org.iter_mut().find(|(o, _)| o == org) {
            Some((_, members)) => members.push(i),
            None => by_org.push((org.clone(), vec![i])),
        }
    }
    let sync = |written: &mut WrittenBatch| -> Result<(), String> {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| store.sync_written(written))) {
            Ok(result) => result.map_err(|e| e.to_string()),
            Err(_) => Err("syncing the batch panicked; see the collector's log".to_owned()),
        }
    };
    let mut results: Vec<Result<(), String>> = vec![Ok(()); group.len()];
    if by_org.len() == 1 {
        for (i, (_, written)) in group.iter_mut().enumerate() {
            results[i] = sync(written);
        }
        return results;
    }
    // At most this many fsyncs at once, whatever the organisations.
    const PARALLEL: usize = 8;
    let mut slots: Vec<Option<&mut WrittenBatch>> = group.iter_mut().map(|(_, w)| Some(w)).collect();
    for wave in by_org.chunks(PARALLEL) {
        let mut lanes: Vec<Vec<(usize, &mut WrittenBatch)>> = Vec::with_capacity(wave.len());
        for (_, members) in wave {
            lanes.push(members.iter().filter_map(|&i| slots[i].take().map(|w| (i, w))).collect());
        }
        let done: Vec<Vec<(usize, Result<(), String>)>> = std::thread::scope(|scope| {
            let handles: Vec<_> = lanes
                .into_iter()
                .map(|lane| scope.spawn(|| lane.into_iter().map(|(i, w)| (i, sync(w))).collect::<Vec<_>>()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or_default()).collect()
        });
        for (i, result) in done.into_iter().flatten() {
            results[i] = result;
        }
    }
    results
}

/// What a batch's task gives back: the receipt and the batch (for the
/// metrics), or why it was not stored.
pub(crate) type Stored = Result<(AppendReceipt, Batch), String>;

/// One batch being stored.
#[derive(Debug)]
pub(crate) struct InFlight {
    pub(crate) seq: u64,
    pub(crate) count: usize,
    pub(crate) health: Option<(AgentHealth, UnixMillis)>,
    /// The batch as counted on arrival, if it is stored unchanged.
    pub(crate) counted: Option<Tally>,
    pub(crate) read_at: Instant,
    answer: oneshot::Receiver<Stored>,
}

/// A connection's batches being stored, oldest first, and the gate of the
/// newest, which the next one handed over is checked against.
#[derive(Debug)]
pub(crate) struct Pipeline {
    writer: StoreWriter,
    in_flight: VecDeque<InFlight>,
    last_gate: Option<Arc<CommitGate>>,
}

impl Pipeline {
    /// A connection's pipeline into `writer`'s store.
    pub(crate) fn new(writer: StoreWriter) -> Self {
        Self { writer, in_flight: VecDeque::new(), last_gate: None }
    }

    /// Whether another batch may be handed over now.
    pub(crate) fn has_room(&self) -> bool {
        self.in_flight.len() < MAX_BATCHES_IN_FLIGHT
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.in_flight.is_empty()
    }

    /// Hands `batch` to the writer.
    pub(crate) fn start(
        &mut self,
        identity: DeviceIdentity,
        stream_id: u64,
        batch: Batch,
        counted: Option<Tally>,
        read_at: Instant,
    ) {
        let seq = batch.stream_seq;
        let count = batch.records.len();
        let health = crate::ingest::details::latest_health(&batch.records);
        let gate = Arc::new(CommitGate::default());
        // A predecessor already settled needs no gate.
        let before = if self.in_flight.is_empty() { None } else { self.last_gate.take() };
        self.last_gate = Some(Arc::clone(&gate));
        let (answer, answered) = oneshot::channel();
        let job = Job { identity, stream_id, batch, before, gate: Decides(gate), answer };
        if let Err(mpsc::error::SendError(job)) = self.writer.jobs.send(job) {
            job.fail("the store's writer has stopped".to_owned());
        }
        self.in_flight.push_back(InFlight { seq, count, health, counted, read_at, answer: answered });
    }

    /// The oldest batch's outcome, once it is decided. Cancel-safe: the
    /// batch stays at the front until this returns. Pending for ever when
    /// nothing is in flight (guard the select! branch with
    /// [`Self::is_empty`]).
    pub(crate) async fn next_outcome(&mut self) -> (InFlight, Stored) {
        let Some(front) = self.in_flight.front_mut() else {
            return std::future::pending().await;
        };
        let answered = (&mut front.answer).await;
        let outcome =
            answered.unwrap_or_else(|_| Err("the store's writer stopped before storing the batch".to_owned()));
        let front = self.in_flight.pop_front().expect("the front was just awaited");
        (front, outcome)
    }

    /// After a batch failed: waits for the batches handed after it, none
    /// of which commits, and starts afresh.
    pub(crate) async fn abandon(&mut self) {
        while let Some(next) = self.in_flight.pop_front() {
            let _ = next.answer.await;
        }
        self.last_gate = None;
    }
}

#[cfg(test)]
mod tests {
    use glimpse_common::bounded::BoundedVec;
    use glimpse_common::identity::{DeviceId, DeviceKind, OrgId};
    use glimpse_common::record::{DeviceMetadata, Record, RecordBody};
    use glimpse_common::secret::SecretKey;
    use glimpse_store::keys::MasterKey;

    use super::*;

    fn store(dir: &std::path::Path) -> Arc<Store> {
        let master = MasterKey::from_secret(SecretKey::from_bytes([5; 32]));
        let clock = Arc::new(glimpse_common::clock::SystemClock);
        Arc::new(Store::open(dir, master, clock, Default::default()).unwrap())
    }

    fn device(n: u32) -> DeviceIdentity {
        let org = OrgId::new(if n.is_multiple_of(2) { "acme" } else { "globex" }).unwrap();
        DeviceIdentity { org, device: DeviceId::new(format!("ap-{n}")).unwrap(), kind: DeviceKind::Ap }
    }

    fn batch(identity: &DeviceIdentity, seq: u64) -> Batch {
        let record = Record { observed_at_ms: seq as i64, body: RecordBody::Metadata(DeviceMetadata::default()) };
        Batch { org: identity.org.clone(), stream_seq: seq, records: BoundedVec::truncating(vec![record; 3]) }
    }

    /// One connection's job, with the gate of the one before it.
    fn job(
        identity: &DeviceIdentity,
        seq: u64,
        before: Option<&Arc<CommitGate>>,
    ) -> (Job, Arc<CommitGate>, oneshot::Receiver<Stored>) {
        let gate = Arc::new(CommitGate::default());
        let (answer, answered) = oneshot::channel();
        let job = Job {
            identity: identity.clone(),
            stream_id: 9,
            batch: batch(identity, seq),
            before: before.cloned(),
            gate: Decides(Arc::clone(&gate)),
            answer,
        };
        (job, gate, answered)
    }

    /// Batches of one connection in one group commit together; a batch
    /// whose predecessor failed is not committed, and the stored sequence
    /// stops before it.
    #[test]
    fn a_batch_commits_only_with_or_after_the_one_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let (a, b) = (device(0), device(1));
        let (a1, a1_gate, a1_answer) = job(&a, 1, None);
        let (a2, a2_gate, a2_answer) = job(&a, 2, Some(&a1_gate));
        let (b1, b1_gate, b1_answer) = job(&b, 1, None);
        let group = write_group(&store, vec![a1, a2, b1]);
        assert_eq!(group.len(), 3);
        commit_group(&store, group);
        for answer in [a1_answer, a2_answer, b1_answer] {
            assert!(answer.blocking_recv().unwrap().is_ok());
        }
        assert!(!a2_gate.failed() && !b1_gate.failed());
        assert_eq!(store.registry().stored_seq(&a, 9).unwrap(), 2);
        assert_eq!(store.registry().stored_seq(&b, 9).unwrap(), 1);

        // Batch 3 fails (decided failed as its thread would); 4, handed
        // after it, is written but never committed, in the same group or
        // in a later one.
        let (a3, a3_gate, _a3_answer) = job(&a, 3, Some(&a2_gate));
        drop(a3);
        assert!(a3_gate.failed(), "a job dropped undecided counts as failed");
        let (a4, a4_gate, a4_answer) = job(&a, 4, Some(&a3_gate));
        let (a5, _, a5_answer) = job(&a, 5, Some(&a4_gate));
        let group = write_group(&store, vec![a4]);
        assert!(group.is_empty(), "its predecessor had already failed");
        assert!(a4_answer.blocking_recv().unwrap().is_err());
        let group = write_group(&store, vec![a5]);
        commit_group(&store, group);
        assert!(a5_answer.blocking_recv().unwrap().is_err(), "failed in a chain, however far back");
        assert_eq!(store.registry().stored_seq(&a, 9).unwrap(), 2, "the stored sequence stops before the failure");
    }

    /// The threads end with the last handle, after the batches handed over.
    #[tokio::test]
    async fn a_pipeline_acknowledges_in_order_through_the_threads() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let writer = StoreWriter::start(Arc::clone(&store)).unwrap();
        let a = device(0);
        let mut pipeline = Pipeline::new(writer.clone());
        for seq in 1..=MAX_BATCHES_IN_FLIGHT as u64 {
            assert!(pipeline.has_room());
            pipeline.start(a.clone(), 9, batch(&a, seq), None, Instant::now());
        }
        assert!(!pipeline.has_room(), "at most {MAX_BATCHES_IN_FLIGHT} in flight");
        for seq in 1..=MAX_BATCHES_IN_FLIGHT as u64 {
            let (done, outcome) = pipeline.next_outcome().await;
            assert_eq!(done.seq, seq, "answers come in sequence order");
            assert_eq!(outcome.unwrap().0.records, 3);
        }
        assert!(pipeline.is_empty());
        assert_eq!(store.registry().stored_seq(&a, 9).unwrap(), MAX_BATCHES_IN_FLIGHT as u64);
    }
}
