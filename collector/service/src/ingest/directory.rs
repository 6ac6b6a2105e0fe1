//! Which devices are connected right now, and a way to reach each one.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::{mpsc, watch};

use glimpse_common::identity::{DeviceId, DeviceIdentity, OrgId};
use glimpse_common::wire::{CaptureOutcome, ControlMessage};

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
    captures: Mutex<std::collections::VecDeque<ReportedCapture>>,
    directives: Mutex<HashMap<OrgId, watch::Sender<OrgDirectives>>>,
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
}

impl OrgDirectives {
    /// The directives an organisation's decisions give.
    pub fn of(policy: &glimpse_store::control::OrgPolicy) -> Self {
        Self {
            capture_consent: policy.capture_consent,
            omit: policy.omit.clone(),
            pseudonymise_macs: policy.pseudonymise_macs,
        }
    }
}

/// A device's latest report on one capture.
#[derive(Debug)]
struct ReportedCapture {
    org: OrgId,
    device: DeviceId,
    id: u64,
    outcome: CaptureOutcome,
}

/// Capture outcomes remembered for `capture status`, oldest forgotten first.
const REMEMBERED_CAPTURES: usize = 1024;

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

    /// Records what a device reported about a capture. Reports are kept
    /// per device, so a device cannot answer for another one's capture.
    pub(crate) fn capture_reported(&self, identity: &DeviceIdentity, id: u64, outcome: CaptureOutcome) {
        let mut captures = self.captures.lock().unwrap_or_else(|p| p.into_inner());
        captures.retain(|c| !(c.id == id && c.org == identity.org && c.device == identity.device));
        if captures.len() >= REMEMBERED_CAPTURES {
            captures.pop_front();
        }
        captures.push_back(ReportedCapture { org: identity.org.clone(), device: identity.device.clone(), id, outcome });
    }

    /// The latest outcome `device` of `org` reported for capture `id`.
    pub fn capture_outcome(&self, org: &OrgId, device: &DeviceId, id: u64) -> Option<CaptureOutcome> {
        let captures = self.captures.lock().unwrap_or_else(|p| p.into_inner());
        captures.iter().find(|c| c.id == id && &c.org == org && &c.device == device).map(|c| c.outcome.clone())
    }

    /// The organisation's connected devices, sorted.
    pub fn connected(&self, org: &OrgId) -> Vec<DeviceId> {
        let mut devices: Vec<_> = self.lock().keys().filter(|(o, _)| o == org).map(|(_, d)| d.clone()).collect();
        devices.sort();
        devices
    }
}
