//! Which devices are connected right now, and a way to reach each one.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::{mpsc, watch};

use glimpse_common::identity::{DeviceId, DeviceIdentity, OrgId};
use glimpse_common::wire::{CaptureOutcome, ControlMessage};
use glimpse_store::keys::DeviceRegistration;

use crate::ingest::details::{Details, DeviceDetail, SessionFacts, SessionTicket};

/// Control messages queued per connection before the sender is told the
/// device is too busy.
const CONTROL_QUEUE: usize = 16;

/// A control message could not be delivered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DeliveryError {
    /// The device has no connection to this collector.
    #[error("device {org}/{device} is not connected")]
    NotConnected {
        /// The organisation.
        org: OrgId,
        /// The device.
        device: DeviceId,
    },
    /// The device's control queue is full.
    #[error("device {org}/{device} is not taking control messages; try again")]
    Busy {
        /// The organisation.
        org: OrgId,
        /// The device.
        device: DeviceId,
    },
}

/// Connected devices and the channels to their connection tasks.
#[derive(Debug, Default)]
pub struct AgentDirectory {
    agents: Mutex<HashMap<(OrgId, DeviceId), mpsc::Sender<ControlMessage>>>,
    captures: Mutex<HashMap<OrgId, OrgCaptures>>,
    directives: Mutex<HashMap<OrgId, watch::Sender<OrgDirectives>>>,
    live: Mutex<LiveSessions>,
    details: Mutex<Details>,
}

/// What a live session authenticated with, to tell on reload whether the
/// registry still admits it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// A TLS client certificate with this serial (lowercase hex).
    Certificate {
        /// The certificate's serial.
        serial: String,
    },
    /// An SSH public key with this SHA-256 fingerprint.
    SshKey {
        /// `SHA256:…`, as `ssh-keygen -l` prints it.
        fingerprint: String,
    },
}

/// Why a live session was closed: its device's credential was withdrawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Withdrawn {
    /// The certificate is on the CRL, or the registry marks the device revoked.
    Revoked,
    /// The device is no longer in the registry.
    Unregistered,
    /// The registry names another certificate or SSH key than the session used.
    Rekeyed,
}

impl Withdrawn {
    /// What the device and the log are told.
    pub fn as_str(self) -> &'static str {
        match self {
            Withdrawn::Revoked => "device revoked",
            Withdrawn::Unregistered => "device no longer registered",
            Withdrawn::Rekeyed => "device re-keyed: another certificate or SSH key is registered",
        }
    }
}

/// One authenticated connection, as the reload check sees it.
#[derive(Debug)]
struct LiveSession {
    identity: DeviceIdentity,
    credential: Credential,
    end: watch::Sender<Option<Withdrawn>>,
}

/// Every authenticated connection (a device that reconnects has two for a
/// moment, and both are checked), and the serials of the CRL last loaded.
#[derive(Debug, Default)]
struct LiveSessions {
    next: u64,
    sessions: HashMap<u64, LiveSession>,
    crl: std::collections::HashSet<String>,
}

/// A live session's place in the directory; removed on drop.
#[derive(Debug)]
pub(crate) struct LiveGuard<'a> {
    directory: &'a AgentDirectory,
    id: u64,
}

impl Drop for LiveGuard<'_> {
    fn drop(&mut self) {
        self.directory.live().sessions.remove(&self.id);
    }
}

/// Every device of `org` (registered, or seen since start) with what its
/// sessions showed, reading the registry now: what the devices API returns.
pub fn device_details(
    store: &glimpse_store::store::Store,
    directory: &AgentDirectory,
    org: &OrgId,
) -> Result<Vec<DeviceDetail>, glimpse_store::keys::KeyError> {
    let registered = store.registry().list()?;
    Ok(directory.device_details(org, &registered, store.clock().now_millis()))
}

/// One device of `org`, or `None` if neither the registry nor a session
/// since start knows it.
pub fn device_detail(
    store: &glimpse_store::store::Store,
    directory: &AgentDirectory,
    org: &OrgId,
    device: &DeviceId,
) -> Result<Option<DeviceDetail>, glimpse_store::keys::KeyError> {
    let registration = store.registry().get(org, device)?;
    Ok(directory.device_detail(org, device, registration.as_ref(), store.clock().now_millis()))
}

/// A session's entry in the device details; ends it when dropped.
pub(crate) struct DetailsGuard<'a> {
    directory: &'a AgentDirectory,
    identity: DeviceIdentity,
    ticket: SessionTicket,
    clock: std::sync::Arc<dyn glimpse_common::clock::Clock>,
}

impl Drop for DetailsGuard<'_> {
    fn drop(&mut self) {
        let now = self.clock.now_millis();
        self.directory.details().session_ended(&self.identity, self.ticket, now);
    }
}

/// An organisation's capture requests and what their devices reported.
#[derive(Debug, Default)]
struct OrgCaptures {
    /// (device, capture id) → latest outcome, `None` until the device reports.
    requested: HashMap<(DeviceId, u64), Option<CaptureOutcome>>,
    /// Request order, oldest first, for forgetting.
    order: std::collections::VecDeque<(DeviceId, u64)>,
    /// When and where each was asked for, so that its stored packets can
    /// be found again (packets carry no capture id).
    windows: HashMap<(DeviceId, u64), CaptureWindow>,
}

/// When and on which interface a capture was asked for, and for how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureWindow {
    /// When the collector sent the request, Unix ms (collector clock).
    pub requested_at_ms: i64,
    /// The interface asked for.
    pub interface: String,
    /// The duration asked for, seconds.
    pub duration_secs: u32,
}

/// What became of a capture status a device sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StatusTaken {
    /// It answers a capture requested from that device.
    Recorded,
    /// No such capture was requested from that device (or it was long
    /// forgotten): ignored.
    Unsolicited,
}

/// What an organisation's devices are told to do, besides captures on
/// request: its capture consent and the metadata fields to leave out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrgDirectives {
    /// Whether the organisation allows packet capture.
    pub capture_consent: bool,
    /// Metadata fields not to collect.
    pub omit: Vec<glimpse_common::minimise::MetadataField>,
    /// Whether devices pseudonymise MAC addresses before sending them.
    pub pseudonymise_macs: bool,
    /// Whether captured headers are scrubbed strictly.
    pub strict_headers: bool,
    /// Data subjects whose data devices are not to send.
    pub blocked: glimpse_common::record::subject::BlockedSubjects,
    /// Whether gateways collect WAN destinations.
    pub wan_destinations: bool,
}

impl OrgDirectives {
    /// The directives an organisation's decisions give.
    pub fn of(policy: &glimpse_store::control::OrgPolicy) -> Self {
        Self {
            capture_consent: policy.capture_consent,
            omit: policy.omit.clone(),
            pseudonymise_macs: policy.pseudonymise_macs,
            strict_headers: policy.strict_headers,
            blocked: policy.blocked.clone(),
            wan_destinations: policy.wan_destinations,
        }
    }
}

/// Capture requests (and their outcomes) remembered per organisation for
/// `capture status`, oldest forgotten first. Only an admin's request makes
/// an entry, so one organisation's devices cannot push out another's.
pub const REMEMBERED_CAPTURES: usize = 1024;

impl AgentDirectory {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(OrgId, DeviceId), mpsc::Sender<ControlMessage>>> {
        self.agents.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a newly authenticated connection; a device that reconnects
    /// replaces its old entry.
    pub(crate) fn register(
        &self,
        identity: &DeviceIdentity,
    ) -> (mpsc::Sender<ControlMessage>, mpsc::Receiver<ControlMessage>) {
        let (tx, rx) = mpsc::channel(CONTROL_QUEUE);
        self.lock().insert((identity.org.clone(), identity.device.clone()), tx.clone());
        (tx, rx)
    }

    /// Forgets a connection, unless the device has already reconnected.
    pub(crate) fn unregister(&self, identity: &DeviceIdentity, ours: &mpsc::Sender<ControlMessage>) {
        let mut agents = self.lock();
        let key = (identity.org.clone(), identity.device.clone());
        if agents.get(&key).is_some_and(|current| current.same_channel(ours)) {
            agents.remove(&key);
        }
    }

    /// Queues a control message for a connected device.
    pub fn send(&self, org: &OrgId, device: &DeviceId, message: ControlMessage) -> Result<(), DeliveryError> {
        let sender = self.lock().get(&(org.clone(), device.clone())).cloned();
        let sender = sender.ok_or_else(|| DeliveryError::NotConnected { org: org.clone(), device: device.clone() })?;
        sender.try_send(message).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => DeliveryError::Busy { org: org.clone(), device: device.clone() },
            mpsc::error::TrySendError::Closed(_) => {
                DeliveryError::NotConnected { org: org.clone(), device: device.clone() }
            }
        })
    }

    /// A receiver of `org`'s directives for a new connection, which sends
    /// the current ones at once and every change after. `stored` seeds the
    /// channel when this is the organisation's first connection.
    ///
    /// A watch channel, not the control queue: a busy device can miss
    /// intermediate values but never the latest one.
    pub(crate) fn directives_receiver(&self, org: &OrgId, stored: OrgDirectives) -> watch::Receiver<OrgDirectives> {
        let mut directives = self.directives.lock().unwrap_or_else(|p| p.into_inner());
        directives.entry(org.clone()).or_insert_with(|| watch::channel(stored).0).subscribe()
    }

    /// Tells every connected device of `org` its new directives; returns
    /// how many are connected.
    pub fn publish(&self, org: &OrgId, now: OrgDirectives) -> usize {
        {
            let mut directives = self.directives.lock().unwrap_or_else(|p| p.into_inner());
            let sender = directives.entry(org.clone()).or_insert_with(|| watch::channel(now.clone()).0);
            sender.send_replace(now);
        }
        self.connected(org).len()
    }

    fn captures(&self) -> std::sync::MutexGuard<'_, HashMap<OrgId, OrgCaptures>> {
        self.captures.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Remembers that capture `id` was requested from `device` of `org`, so
    /// that its reports are accepted; the organisation's oldest request is
    /// forgotten past [`REMEMBERED_CAPTURES`].
    pub(crate) fn capture_requested(&self, org: &OrgId, device: &DeviceId, id: u64) {
        let mut captures = self.captures();
        let org = captures.entry(org.clone()).or_default();
        let key = (device.clone(), id);
        if org.requested.insert(key.clone(), None).is_none() {
            org.order.push_back(key);
        }
        while org.order.len() > REMEMBERED_CAPTURES {
            if let Some(old) = org.order.pop_front() {
                org.requested.remove(&old);
                org.windows.remove(&old);
            }
        }
    }

    /// Sends `request` to a connected device as a `StartCapture`, having
    /// remembered it first so that even the quickest report is accepted as
    /// its answer; a request that cannot be delivered is forgotten again.
    /// The one way a capture is asked for: reports of captures not asked
    /// for this way are ignored.
    pub fn request_capture(
        &self,
        org: &OrgId,
        device: &DeviceId,
        request: glimpse_common::wire::CaptureRequest,
    ) -> Result<(), DeliveryError> {
        let id = request.id;
        self.capture_requested(org, device, id);
        let sent = self.send(org, device, ControlMessage::StartCapture(request));
        if sent.is_err() {
            self.capture_forgotten(org, device, id);
        }
        sent
    }

    /// Forgets a request that could not be delivered.
    pub(crate) fn capture_forgotten(&self, org: &OrgId, device: &DeviceId, id: u64) {
        let mut captures = self.captures();
        if let Some(org) = captures.get_mut(org) {
            let key = (device.clone(), id);
            org.requested.remove(&key);
            org.windows.remove(&key);
            org.order.retain(|k| k != &key);
        }
    }

    /// Notes when and where a remembered capture was asked for.
    pub(crate) fn capture_window_noted(&self, org: &OrgId, device: &DeviceId, id: u64, window: CaptureWindow) {
        let mut captures = self.captures();
        if let Some(org) = captures.get_mut(org) {
            let key = (device.clone(), id);
            if org.requested.contains_key(&key) {
                org.windows.insert(key, window);
            }
        }
    }

    /// When and where capture `id` of `device` was asked for, while it is
    /// remembered.
    pub fn capture_window(&self, org: &OrgId, device: &DeviceId, id: u64) -> Option<CaptureWindow> {
        self.captures().get(org)?.windows.get(&(device.clone(), id)).cloned()
    }

    /// Records what a device reported about a capture, if that capture was
    /// requested from that very device: a device can neither answer for
    /// another's capture nor fill the table with statuses nobody asked for.
    pub(crate) fn capture_reported(&self, identity: &DeviceIdentity, id: u64, outcome: CaptureOutcome) -> StatusTaken {
        let mut captures = self.captures();
        let slot = captures.get_mut(&identity.org).and_then(|o| o.requested.get_mut(&(identity.device.clone(), id)));
        match slot {
            Some(slot) => {
                *slot = Some(outcome);
                StatusTaken::Recorded
            }
            None => StatusTaken::Unsolicited,
        }
    }

    /// The organisation's remembered capture requests, newest first, with
    /// each device's latest report.
    pub fn captures_of(&self, org: &OrgId) -> Vec<(DeviceId, u64, Option<CaptureOutcome>)> {
        let captures = self.captures();
        let Some(org) = captures.get(org) else { return Vec::new() };
        org.order.iter().rev().map(|key| (key.0.clone(), key.1, org.requested.get(key).cloned().flatten())).collect()
    }

    /// The latest outcome `device` of `org` reported for capture `id`.
    pub fn capture_outcome(&self, org: &OrgId, device: &DeviceId, id: u64) -> Option<CaptureOutcome> {
        let captures = self.captures();
        captures.get(org)?.requested.get(&(device.clone(), id))?.clone()
    }

    fn live(&self) -> std::sync::MutexGuard<'_, LiveSessions> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Enters an authenticated connection; the receiver turns to
    /// `Some(reason)` when a reload withdraws its credential. The session
    /// leaves when the guard drops.
    pub(crate) fn enter_live(
        &self,
        identity: &DeviceIdentity,
        credential: Credential,
    ) -> (LiveGuard<'_>, watch::Receiver<Option<Withdrawn>>) {
        let (end, ended) = watch::channel(None);
        let mut live = self.live();
        live.next += 1;
        let id = live.next;
        live.sessions.insert(id, LiveSession { identity: identity.clone(), credential, end });
        (LiveGuard { directory: self, id }, ended)
    }

    /// The serials the CRL now lists; kept for checks of sessions that
    /// authenticate while a reload runs.
    pub(crate) fn set_crl(&self, serials: std::collections::HashSet<String>) {
        self.live().crl = serials;
    }

    /// Whether `serial` is on the CRL last loaded.
    pub(crate) fn on_crl(&self, serial: &str) -> bool {
        self.live().crl.contains(serial)
    }

    /// Ends every live session for which `check` names a reason; returns
    /// how many were told, by reason, with their devices.
    pub(crate) fn end_withdrawn(
        &self,
        check: impl Fn(&DeviceIdentity, &Credential, &std::collections::HashSet<String>) -> Option<Withdrawn>,
    ) -> Vec<(DeviceIdentity, Withdrawn)> {
        let live = self.live();
        let mut ended = Vec::new();
        for session in live.sessions.values() {
            if session.end.borrow().is_some() {
                continue;
            }
            if let Some(reason) = check(&session.identity, &session.credential, &live.crl) {
                session.end.send_replace(Some(reason));
                ended.push((session.identity.clone(), reason));
            }
        }
        ended
    }

    /// Authenticated connections right now (tests, metrics).
    pub fn live_sessions(&self) -> usize {
        self.live().sessions.len()
    }

    fn details(&self) -> std::sync::MutexGuard<'_, Details> {
        self.details.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A session of `identity` authenticated now (by `clock`) with
    /// `facts`; it ends in the details when the guard drops.
    pub(crate) fn session_details(
        &self,
        identity: &DeviceIdentity,
        facts: SessionFacts,
        clock: std::sync::Arc<dyn glimpse_common::clock::Clock>,
    ) -> DetailsGuard<'_> {
        let ticket = self.details().session_started(identity, facts, clock.now_millis());
        DetailsGuard { directory: self, identity: identity.clone(), ticket, clock }
    }

    /// A batch of `identity`'s records was stored at `now`.
    pub(crate) fn records_stored(
        &self,
        identity: &DeviceIdentity,
        records: usize,
        health: Option<(glimpse_common::record::AgentHealth, glimpse_common::clock::UnixMillis)>,
        now: glimpse_common::clock::UnixMillis,
    ) {
        self.details().records_stored(identity, records, health, now);
    }

    /// Every device of `org` that the registry (`registered`: rows of any
    /// organisation, e.g. `Registry::list`) or a session since the
    /// collector started knows, sorted by id, as of `now`.
    pub fn device_details(
        &self,
        org: &OrgId,
        registered: &[DeviceRegistration],
        now: glimpse_common::clock::UnixMillis,
    ) -> Vec<DeviceDetail> {
        self.details().details(org, registered, now)
    }

    /// One device of `org`, with its registration if it has one; `None`
    /// when neither the registry nor a session knows it.
    pub fn device_detail(
        &self,
        org: &OrgId,
        device: &DeviceId,
        registration: Option<&DeviceRegistration>,
        now: glimpse_common::clock::UnixMillis,
    ) -> Option<DeviceDetail> {
        self.details().detail(org, device, registration, now)
    }

    /// Every device seen since the collector started: connected or not,
    /// last activity, certificate expiry (the alerts' checks).
    pub fn seen_devices(&self) -> Vec<crate::alerts::checks::SeenDevice> {
        self.details().seen()
    }

    /// The organisation's connected devices, sorted.
    pub fn connected(&self, org: &OrgId) -> Vec<DeviceId> {
        let mut devices: Vec<_> = self.lock().keys().filter(|(o, _)| o == org).map(|(_, d)| d.clone()).collect();
        devices.sort();
        devices
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use glimpse_common::identity::DeviceKind;

    fn device(org: &str, id: &str) -> DeviceIdentity {
        DeviceIdentity { org: OrgId::new(org).unwrap(), device: DeviceId::new(id).unwrap(), kind: DeviceKind::Ap }
    }

    fn finished() -> CaptureOutcome {
        CaptureOutcome::Finished { packets: 3, header_bytes: 126 }
    }

    #[test]
    fn only_requested_captures_take_reports_and_orgs_keep_their_own() {
        let directory = AgentDirectory::default();
        let (acme, globex) = (device("acme", "ap-1"), device("globex", "ap-1"));
        directory.capture_requested(&globex.org, &globex.device, 7);
        assert_eq!(directory.capture_outcome(&globex.org, &globex.device, 7), None, "no report yet");
        assert_eq!(directory.capture_reported(&globex, 7, finished()), StatusTaken::Recorded);
        // Another organisation's device floods statuses, even for globex's id.
        for id in 0..(2 * REMEMBERED_CAPTURES as u64) {
            assert_eq!(directory.capture_reported(&acme, id, CaptureOutcome::Started), StatusTaken::Unsolicited);
        }
        assert_eq!(directory.capture_outcome(&globex.org, &globex.device, 7), Some(finished()));
        // Another device of the same organisation cannot answer for it either.
        let other = device("globex", "ap-2");
        assert_eq!(directory.capture_reported(&other, 7, CaptureOutcome::Started), StatusTaken::Unsolicited);
        assert_eq!(directory.capture_outcome(&globex.org, &globex.device, 7), Some(finished()));
    }

    #[test]
    fn each_org_forgets_only_its_own_oldest_requests() {
        let directory = AgentDirectory::default();
        let (acme, globex) = (device("acme", "ap-1"), device("globex", "ap-1"));
        directory.capture_requested(&globex.org, &globex.device, 1);
        directory.capture_reported(&globex, 1, finished());
        for id in 0..=(REMEMBERED_CAPTURES as u64) {
            directory.capture_requested(&acme.org, &acme.device, 1000 + id);
        }
        assert_eq!(directory.capture_outcome(&globex.org, &globex.device, 1), Some(finished()));
        assert_eq!(directory.capture_reported(&acme, 1000, finished()), StatusTaken::Unsolicited, "forgotten");
        assert_eq!(directory.capture_reported(&acme, 1001, finished()), StatusTaken::Recorded);
        directory.capture_forgotten(&acme.org, &acme.device, 1001);
        assert_eq!(directory.capture_outcome(&acme.org, &acme.device, 1001), None);
    }

    #[test]
    fn a_sessions_details_end_when_its_guard_drops() {
        use crate::ingest::details::DeviceTransport as Transport;
        use glimpse_common::clock::ManualClock;
        let directory = AgentDirectory::default();
        let ap = device("acme", "ap-1");
        let clock = ManualClock::new(1_000);
        let facts = SessionFacts {
            transport: Transport::Tls,
            peer: "127.0.0.1:1".parse().unwrap(),
            tls_version: None,
            cipher: None,
            kex: None,
            agent_version: "0.1.0".into(),
            certificate_not_after_ms: None,
        };
        let guard = directory.session_details(&ap, facts, std::sync::Arc::new(clock.clone()));
        assert!(directory.device_detail(&ap.org, &ap.device, None, 1_500).unwrap().connected);
        clock.set(2_000);
        drop(guard);
        let detail = directory.device_detail(&ap.org, &ap.device, None, 3_000).unwrap();
        assert_eq!((detail.connected, detail.last_seen_ms), (false, Some(2_000)));
    }

    #[test]
    fn withdrawn_sessions_are_told_once_and_leave_on_drop() {
        let directory = AgentDirectory::default();
        let a = device("acme", "ap-1");
        let b = device("acme", "ap-2");
        let (guard_a, mut ended_a) = directory.enter_live(&a, Credential::Certificate { serial: "0a".into() });
        let (guard_b, ended_b) = directory.enter_live(&b, Credential::Certificate { serial: "0b".into() });
        directory.set_crl(["0a".to_owned()].into_iter().collect());
        assert!(directory.on_crl("0a") && !directory.on_crl("0b"));
        let check = |_: &DeviceIdentity, c: &Credential, crl: &std::collections::HashSet<String>| match c {
            Credential::Certificate { serial } if crl.contains(serial) => Some(Withdrawn::Revoked),
            _ => None,
        };
        assert_eq!(directory.end_withdrawn(check), vec![(a.clone(), Withdrawn::Revoked)]);
        assert!(ended_a.has_changed().unwrap());
        assert_eq!(*ended_a.borrow_and_update(), Some(Withdrawn::Revoked));
        assert_eq!(*ended_b.borrow(), None);
        assert!(directory.end_withdrawn(check).is_empty(), "told once");
        assert_eq!(directory.live_sessions(), 2);
        drop(guard_a);
        drop(guard_b);
        assert_eq!(directory.live_sessions(), 0);
    }
}
