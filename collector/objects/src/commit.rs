//! Group commit by upload: appends seal blocks into the open in-memory
//! object of their (organisation, kind); the object is uploaded whole, and
//! every ticket holding blocks in it is durable once that PUT succeeded.
//!
//! Each (organisation, kind) has a slot: at most one *open* object taking
//! appends, then a queue of *sealed* objects uploaded one at a time, in
//! creation order. An object is sealed when its flush interval (counted
//! from its first block) has passed, when it reaches the size limit, or
//! when the day changes. Uploading one at a time per slot means that while
//! one PUT runs the next object gathers every append that arrives
//! meanwhile, so the objects grow when the store is slow instead of
//! queueing more requests (the local store shares fsyncs the same way),
//! and one collector's objects become visible in name order.
//!
//! A failed or timed-out PUT fails every ticket in its object (with a
//! transient error, unless the store refused for good: credentials, a
//! missing bucket), and the objects queued behind it in the slot (the store is most likely down,
//! and a quick refusal lets agents resend once it is back rather than wait
//! behind a queue of doomed uploads): the caller refuses those batches as
//! storage-unavailable, and the agents send them again. A PUT that timed
//! out may still land later; its blocks were never acknowledged and the
//! retry's copy carries the same origins, so readers serve them once.
//!
//! Memory is bounded: bytes in open, queued and uploading objects never
//! exceed the configured maximum. An append that would pass it fails at
//! once with a transient error rather than wait.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use glimpse_common::clock::Clock;
use glimpse_common::identity::OrgId;
use glimpse_common::record::DataKind;
use glimpse_store::store::seam::{BlockRun, Cohort, Placed, RemoteWait, SegmentKey, SyncTicket};
use glimpse_store::store::{SegmentBuilder, SegmentError};
use object_store::path::Path;
use object_store::{ObjectStore, PutOptions, PutPayload};
use tokio::runtime::Handle;

use crate::error::{local, remote};
use crate::layout::{segment_name, Layout, SEQ_SPREAD};

/// Framing and tag added to each block plaintext: length, index, GCM tag.
const BLOCK_OVERHEAD: u64 = 12 + 16;
/// Room reserved for one object's header (the organisation's name is at
/// most 64 bytes).
const HEADER_ALLOWANCE: u64 = 128;
/// How late past its expected end a wait still waits: timers and tasks of
/// a busy machine run late.
const WAIT_SLACK: Duration = Duration::from_secs(2);

/// The group commit's settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    /// How long an object takes appends before it is uploaded.
    pub(crate) flush_interval: Duration,
    /// An object is uploaded once it holds this many bytes.
    pub(crate) flush_bytes: u64,
    /// How long one request may take, retries included.
    pub(crate) request_timeout: Duration,
    /// Most bytes held in objects not yet uploaded.
    pub(crate) max_in_flight_bytes: u64,
}

/// What the group commit shares with its tasks.
#[derive(Debug)]
pub(crate) struct Committer {
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) layout: Layout,
    pub(crate) settings: Settings,
    clock: Arc<dyn Clock>,
    handle: Handle,
    slots: Mutex<HashMap<(OrgId, DataKind), SlotRef>>,
    /// Bytes held in objects not yet uploaded, and reserved by appends.
    in_flight: AtomicU64,
}

/// A slot, shared with its timer and upload tasks.
type SlotRef = Arc<Mutex<Slot>>;

/// One (organisation, kind)'s objects not yet uploaded.
#[derive(Debug, Default)]
struct Slot {
    open: Option<Building>,
    /// Sealed, oldest first; the first is being uploaded while `uploading`.
    queue: VecDeque<Arc<Upload>>,
    uploading: bool,
    /// The last sequence given to an object of this slot.
    last_seq: u64,
}

/// The open object.
#[derive(Debug)]
struct Building {
    builder: SegmentBuilder,
    upload: Arc<Upload>,
}

/// One object on its way to the store: what sync waits on.
#[derive(Debug)]
pub(crate) struct Upload {
    key: SegmentKey,
    path: Path,
    /// Names this upload's cohort of tickets (see [`RemoteWait::cohort`]).
    id: u64,
    /// Tickets whose durability this upload decides (it is their last).
    tickets: AtomicUsize,
    state: Mutex<UploadState>,
    done: Condvar,
}

#[derive(Debug)]
struct UploadState {
    status: Status,
    /// The object's bytes once sealed, until the PUT ends.
    body: Option<Bytes>,
    /// Bytes counted in `in_flight` for it.
    counted: u64,
    /// When the upload should have ended by (see [`Upload::wait`]).
    expected_by: Instant,
}

#[derive(Debug, Clone)]
enum Status {
    Open,
    Queued,
    Putting,
    Durable,
    /// Why, and whether a retry may succeed (a refused key or a missing
    /// bucket will not).
    Failed(String, bool),
}

impl RemoteWait for Upload {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    /// The tickets that this object's PUT makes durable at once: their
    /// sequences are then committed in one transaction.
    fn cohort(&self) -> Option<Cohort> {
        Some(Cohort { id: self.id, size: self.tickets.load(Ordering::SeqCst).max(1) })
    }
}

/// Cohort ids, unique within the process.
static NEXT_UPLOAD_ID: AtomicU64 = AtomicU64::new(1);

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves the state consistent between steps, so
    // a panic in one (a bug) must not wedge every later append.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Upload {
    fn new(key: SegmentKey, path: Path, expected_by: Instant) -> Upload {
        Upload {
            key,
            path,
            id: NEXT_UPLOAD_ID.fetch_add(1, Ordering::Relaxed),
            tickets: AtomicUsize::new(0),
            state: Mutex::new(UploadState { status: Status::Open, body: None, counted: 0, expected_by }),
            done: Condvar::new(),
        }
    }

    /// Waits until the object is durable or has failed; `location` names it.
    /// A wait that outlasts the upload's expected end (plus slack) gives up
    /// with a transient error: the runtime is stalled, and the agent had
    /// better resend than wait.
    pub(crate) fn wait(&self, location: impl Fn(&Path) -> String) -> Result<(), SegmentError> {
        let mut state = lock(&self.state);
        loop {
            match &state.status {
                Status::Durable => return Ok(()),
                Status::Failed(why, transient) => {
                    return Err(local("upload", location(&self.path), *transient, why.clone()))
                }
                Status::Open | Status::Queued | Status::Putting => {}
            }
            let now = Instant::now();
            let until = state.expected_by + WAIT_SLACK;
            if now >= until {
                return Err(local(
                    "upload",
                    location(&self.path),
                    true,
                    "the upload did not finish in time (the object store or this collector is overloaded)".into(),
                ));
            }
            state = self.done.wait_timeout(state, until - now).unwrap_or_else(PoisonError::into_inner).0;
        }
    }

    /// Ends the upload; returns the bytes it had counted.
    fn finish(&self, status: Status) -> u64 {
        let mut state = lock(&self.state);
        state.status = status;
        state.body = None;
        self.done.notify_all();
        std::mem::take(&mut state.counted)
    }
}

impl Committer {
    pub(crate) fn new(
        store: Arc<dyn ObjectStore>,
        layout: Layout,
        settings: Settings,
        clock: Arc<dyn Clock>,
        handle: Handle,
    ) -> Committer {
        Committer {
            store,
            layout,
            settings,
            clock,
            handle,
            slots: Mutex::new(HashMap::new()),
            in_flight: AtomicU64::new(0),
        }
    }

    /// Bytes held in objects not yet uploaded.
    pub(crate) fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::SeqCst)
    }

    fn slot(&self, org: &OrgId, kind: DataKind) -> SlotRef {
        Arc::clone(lock(&self.slots).entry((org.clone(), kind)).or_default())
    }

    /// Counts `bytes` against the memory bound, or refuses.
    fn reserve(&self, bytes: u64) -> Result<(), SegmentError> {
        let max = self.settings.max_in_flight_bytes;
        let mut current = self.in_flight.load(Ordering::SeqCst);
        loop {
            let next = current.saturating_add(bytes);
            // One append bigger than the whole bound may still go alone.
            if next > max && current > 0 {
                return Err(local(
                    "append to",
                    self.layout.url(&self.layout.orgs()),
                    true,
                    format!(
                        "uploads are backed up: {current} bytes are waiting for the object store \
                         (at most {max}); refused rather than queued"
                    ),
                ));
            }
            match self.in_flight.compare_exchange(current, next, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => return Ok(()),
                Err(seen) => current = seen,
            }
        }
    }

    fn release(&self, bytes: u64) {
        self.in_flight.fetch_sub(bytes, Ordering::SeqCst);
    }

    /// Seals `runs` into their slots' open objects; see the module header.
    pub(crate) fn append(self: &Arc<Self>, runs: &[BlockRun<'_>]) -> Result<SyncTicket, SegmentError> {
        let estimate: u64 = runs
            .iter()
            .map(|run| HEADER_ALLOWANCE + run.plaintexts.iter().map(|p| p.len() as u64 + BLOCK_OVERHEAD).sum::<u64>())
            .sum();
        self.reserve(estimate)?;
        let mut ticket = SyncTicket::default();
        let mut counted = 0;
        let mut result = Ok(());
        for (index, run) in runs.iter().enumerate().filter(|(_, run)| !run.plaintexts.is_empty()) {
            if let Err(e) = self.append_run(index, run, &mut ticket, &mut counted) {
                result = Err(e);
                break;
            }
        }
        // What the objects now hold is counted there; the rest of the
        // estimate goes back.
        self.release(estimate.saturating_sub(counted));
        result.map(|()| ticket)
    }

    fn append_run(
        self: &Arc<Self>,
        index: usize,
        run: &BlockRun<'_>,
        ticket: &mut SyncTicket,
        counted: &mut u64,
    ) -> Result<(), SegmentError> {
        let slot = self.slot(run.org, run.kind);
        let mut state = lock(&slot);
        let mut kick = false;
        for (i, plaintext) in run.plaintexts.iter().enumerate() {
            let fits = state.open.as_ref().is_some_and(|open| {
                open.upload.key.day == run.day
                    // After a rotation, a new object under the new version.
                    && open.builder.key_version() == run.key.version()
                    && open.builder.len() < self.settings.flush_bytes
                    && open.builder.has_room()
            });
            if !fits {
                kick |= self.seal(&mut state);
                self.start(&slot, &mut state, run)?;
            }
            let Some(open) = state.open.as_mut() else { continue };
            let added = open.builder.seal(run.key, plaintext)?;
            let mut upload = lock(&open.upload.state);
            let header = if upload.counted == 0 { open.builder.len() - added } else { 0 };
            upload.counted += added + header;
            *counted += added + header;
            drop(upload);
            let end = open.builder.len();
            let key = &open.upload.key;
            match ticket.placed.last_mut() {
                Some(last) if last.run == index && last.segment == *key => {
                    last.blocks.end = i + 1;
                    last.end = end;
                }
                _ => ticket.placed.push(Placed { run: index, blocks: i..i + 1, segment: key.clone(), end }),
            }
            ticket.blocks += 1;
            ticket.bytes += added;
            let attached = ticket.attached().last().and_then(|w| w.as_any().downcast_ref::<Upload>());
            if !attached.is_some_and(|u| std::ptr::eq(u, &*open.upload)) {
                // The ticket's durability is now this upload's to decide,
                // no longer the one it was attached to before.
                if let Some(before) = attached {
                    before.tickets.fetch_sub(1, Ordering::SeqCst);
                }
                open.upload.tickets.fetch_add(1, Ordering::SeqCst);
                ticket.attach(Arc::clone(&open.upload) as Arc<dyn RemoteWait>);
            }
        }
        if state.open.as_ref().is_some_and(|open| open.builder.len() >= self.settings.flush_bytes) {
            kick |= self.seal(&mut state);
        }
        if kick {
            self.kick(&slot, &mut state);
        }
        Ok(())
    }

    /// Opens a new object in the slot for `run`'s day and arms its timer.
    fn start(self: &Arc<Self>, slot: &SlotRef, state: &mut Slot, run: &BlockRun<'_>) -> Result<(), SegmentError> {
        let builder = SegmentBuilder::new(run.org, run.kind, run.day, run.key)?;
        let seq = self.next_seq(state.last_seq)?;
        state.last_seq = seq;
        let name = segment_name(seq, builder.segment_id());
        let path = self.layout.object(run.org, run.kind, run.day, &name);
        let key = SegmentKey { org: run.org.clone(), kind: run.kind, day: run.day, name };
        let interval = self.settings.flush_interval;
        let upload = Arc::new(Upload::new(key, path, Instant::now() + interval));
        state.open = Some(Building { builder, upload: Arc::clone(&upload) });
        let (this, slot) = (Arc::clone(self), Arc::clone(slot));
        self.handle.spawn(async move {
            tokio::time::sleep(interval).await;
            let mut state = lock(&slot);
            let still_open = state.open.as_ref().is_some_and(|open| Arc::ptr_eq(&open.upload, &upload));
            if still_open && this.seal(&mut state) {
                this.kick(&slot, &mut state);
            }
        });
        Ok(())
    }

    /// A sequence after `last`, from the clock (see `layout.rs`).
    fn next_seq(&self, last: u64) -> Result<u64, SegmentError> {
        let millis = u64::try_from(self.clock.now_millis()).unwrap_or(0);
        let mut random = [0u8; 4];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut random)
            .map_err(|_| SegmentError::Random)?;
        let jitter = u64::from(u32::from_be_bytes(random)) % SEQ_SPREAD;
        let seq = millis.saturating_mul(SEQ_SPREAD).saturating_add(jitter).min(10u64.pow(19) - 1);
        Ok(if seq > last { seq } else { last.saturating_add(1) })
    }

    /// Seals the open object, if any, onto the queue. Returns whether the
    /// queue needs a driver.
    fn seal(&self, state: &mut Slot) -> bool {
        let Some(Building { builder, upload }) = state.open.take() else { return false };
        if builder.is_empty() {
            // Its first block failed to seal: nothing to upload, nobody waits.
            self.release(upload.finish(Status::Failed("empty".into(), true)));
            return false;
        }
        {
            let mut u = lock(&upload.state);
            u.status = Status::Queued;
            u.body = Some(Bytes::from(builder.into_bytes()));
            // It waits for the uploads ahead of it, then takes one request.
            let ahead = state.queue.back().map(|last| lock(&last.state).expected_by);
            let start = ahead.map_or_else(Instant::now, |t| t.max(Instant::now()));
            u.expected_by = start + self.settings.request_timeout;
        }
        state.queue.push_back(upload);
        !state.uploading
    }

    /// Starts the slot's upload driver if none runs.
    fn kick(self: &Arc<Self>, slot: &SlotRef, state: &mut Slot) {
        if state.uploading || state.queue.is_empty() {
            return;
        }
        state.uploading = true;
        let (this, slot) = (Arc::clone(self), Arc::clone(slot));
        self.handle.spawn(async move { this.drive(slot).await });
    }

    /// Uploads the slot's queue, one object at a time, until it is empty.
    async fn drive(self: Arc<Self>, slot: SlotRef) {
        loop {
            let upload = {
                let mut state = lock(&slot);
                match state.queue.front() {
                    Some(upload) => Arc::clone(upload),
                    None => {
                        state.uploading = false;
                        return;
                    }
                }
            };
            let body = {
                let mut u = lock(&upload.state);
                u.status = Status::Putting;
                u.expected_by = Instant::now() + self.settings.request_timeout;
                u.body.clone()
            };
            let status = match body {
                Some(body) => self.put(&upload.path, body).await,
                None => Status::Failed("the object was discarded".into(), true),
            };
            let failed = matches!(status, Status::Failed(..));
            if let Status::Failed(why, _) = &status {
                tracing::warn!(object = %self.layout.url(&upload.path), error = %why, "upload failed; its batches are refused");
            }
            self.release(upload.finish(status.clone()));
            let mut state = lock(&slot);
            if state.queue.front().is_some_and(|front| Arc::ptr_eq(front, &upload)) {
                state.queue.pop_front();
            }
            if failed {
                // Those behind it would most likely fail too, one timeout
                // after another: refuse them now (see the module header).
                for behind in state.queue.drain(..) {
                    self.release(
                        behind.finish(Status::Failed(format!("an earlier upload failed: {}", message(&status)), true)),
                    );
                }
            }
        }
    }

    /// One PUT, bounded by the request timeout.
    async fn put(&self, path: &Path, body: Bytes) -> Status {
        let put = self.store.put_opts(path, PutPayload::from(body), PutOptions::default());
        match tokio::time::timeout(self.settings.request_timeout, put).await {
            Ok(Ok(_)) => Status::Durable,
            Ok(Err(e)) => match remote("upload", self.layout.url(path), &e) {
                SegmentError::Remote { message, transient, .. } => Status::Failed(message, transient),
                other => Status::Failed(other.to_string(), other.is_transient()),
            },
            Err(_) => Status::Failed(
                format!("no answer within the request timeout ({} ms)", self.settings.request_timeout.as_millis()),
                true,
            ),
        }
    }

    /// Waits for everything `ticket` put in objects.
    pub(crate) fn sync(&self, ticket: &SyncTicket) -> Result<(), SegmentError> {
        for wait in ticket.attached() {
            if let Some(upload) = wait.as_any().downcast_ref::<Upload>() {
                upload.wait(|path| self.layout.url(path))?;
            }
        }
        Ok(())
    }

    /// Seals (org, kind)'s open object and waits until nothing of it is left
    /// to upload (a rewrite then sees everything acknowledged before it).
    pub(crate) fn drain(self: &Arc<Self>, org: &OrgId, kind: DataKind) {
        let slot = self.slot(org, kind);
        let last = {
            let mut state = lock(&slot);
            if self.seal(&mut state) {
                self.kick(&slot, &mut state);
            }
            state.queue.back().cloned()
        };
        if let Some(last) = last {
            // Failed or not, it has ended; failed tickets were not acknowledged.
            let _ = last.wait(|path| self.layout.url(path));
        }
    }

    /// Drops what (org, kind) holds for `day` (every day: `None`) that is
    /// not uploaded yet, failing its tickets, and waits for an upload of it
    /// already under way: a deletion must not be followed by a PUT that
    /// brings some of it back.
    pub(crate) fn discard(&self, org: &OrgId, kind: DataKind, day: Option<i64>) {
        let slot = self.slot(org, kind);
        let of_day = |upload: &Upload| day.is_none_or(|day| upload.key.day == day);
        let running = {
            let mut state = lock(&slot);
            if state.open.as_ref().is_some_and(|open| of_day(&open.upload)) {
                if let Some(open) = state.open.take() {
                    self.release(open.upload.finish(Status::Failed("its day was deleted meanwhile".into(), true)));
                }
            }
            let uploading = state.uploading;
            let mut running = None;
            let mut kept = VecDeque::new();
            for (at, upload) in std::mem::take(&mut state.queue).into_iter().enumerate() {
                if at == 0 && uploading {
                    // The driver owns it; it is waited for below.
                    if of_day(&upload) {
                        running = Some(Arc::clone(&upload));
                    }
                    kept.push_back(upload);
                } else if of_day(&upload) {
                    self.release(upload.finish(Status::Failed("its day was deleted meanwhile".into(), true)));
                } else {
                    kept.push_back(upload);
                }
            }
            state.queue = kept;
            running
        };
        if let Some(running) = running {
            let _ = running.wait(|path| self.layout.url(path));
        }
    }
}

fn message(status: &Status) -> String {
    match status {
        Status::Failed(why, _) => why.clone(),
        other => format!("{other:?}"),
    }
}
