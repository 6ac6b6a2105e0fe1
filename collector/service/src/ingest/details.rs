//! What operators see of each device: how it is connected (transport,
//! cipher, peer, since when), what it last sent, which agent it runs and
//! what its agent-health records last said.
//!
//! Kept in memory only, by the connection tasks, and lost on restart: a
//! device that has not connected since shows what the registry knows
//! (kind, revoked) and nulls. The table holds one entry per device that
//! authenticated (so it is bounded by the registry, never by what
//! unauthenticated peers send), and nothing a device sends is kept beyond a
//! few bounded strings and counters.

use std::collections::HashMap;
use std::net::SocketAddr;

use serde::Serialize;

use glimpse_common::clock::UnixMillis;
use glimpse_common::identity::{DeviceId, DeviceIdentity, DeviceKind, OrgId};
use glimpse_common::record::{AgentHealth, Record, RecordBody};
use glimpse_store::keys::DeviceRegistration;

/// How a device reaches the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeviceTransport {
    /// Mutual TLS with a shared-key proof (access points).
    Tls,
    /// SSH with a registered public key (switches and gateways).
    Ssh,
}

impl DeviceTransport {
    /// The listener it came in on, as the metrics label it.
    pub fn listener(self) -> crate::ingest::reject::Transport {
        match self {
            DeviceTransport::Tls => crate::ingest::reject::Transport::Tls,
            DeviceTransport::Ssh => crate::ingest::reject::Transport::Ssh,
        }
    }
}

/// What a session's transport negotiated and who the peer is, taken when
/// the session authenticates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionFacts {
    /// TLS or SSH.
    pub transport: DeviceTransport,
    /// The peer's address.
    pub peer: SocketAddr,
    /// The TLS protocol version (`TLSv1_3`), for TLS.
    pub tls_version: Option<String>,
    /// The TLS cipher suite or the SSH cipher, when the transport says.
    pub cipher: Option<String>,
    /// The TLS key exchange group or the SSH key exchange, when the
    /// transport says.
    pub kex: Option<String>,
    /// The agent's Hello string: `version` or `version+build`.
    pub agent_version: String,
    /// The device certificate's notAfter (TLS); SSH keys do not expire.
    pub certificate_not_after_ms: Option<UnixMillis>,
}

/// The counters of a device's latest agent-health record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct AgentHealthView {
    /// Metadata records the agent dropped, oldest first, since it started,
    /// because its spool was full.
    pub dropped_metadata: u64,
    /// Capture records dropped because the spool was full.
    pub dropped_captures: u64,
    /// Whether the agent found its spool corrupt at start and discarded it.
    pub discarded_corrupt_spool: bool,
    /// When the device made the record (device clock, Unix milliseconds).
    pub observed_at_ms: UnixMillis,
    /// When the collector stored it (Unix milliseconds).
    pub received_at_ms: UnixMillis,
}

/// One device of an organisation, as the devices API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct DeviceDetail {
    /// The organisation.
    pub org: String,
    /// The device's id.
    pub device: String,
    /// `ap`, `switch` or `gateway`.
    pub kind: String,
    /// The site of the organisation it belongs to, from its registration
    /// (`glimpse-certs device --site`); `null` for a device of no site.
    pub site: Option<String>,
    /// Whether the registry knows the device.
    pub registered: bool,
    /// Whether its credential is revoked.
    pub revoked: bool,
    /// Whether it has a session with this collector now.
    pub connected: bool,
    /// How it is (or was last) connected.
    pub transport: Option<DeviceTransport>,
    /// TLS protocol version of the current or last session.
    pub tls_version: Option<String>,
    /// TLS cipher suite, or the SSH client-to-server cipher (worked out
    /// from the client's KEXINIT; `null` if that could not be read).
    pub cipher: Option<String>,
    /// TLS key exchange group, or the SSH key exchange (likewise).
    pub kex: Option<String>,
    /// The peer address of the current or last session.
    pub peer: Option<String>,
    /// When the current session authenticated (Unix milliseconds).
    pub connected_since_ms: Option<UnixMillis>,
    /// When the device was last connected: now if connected, else when its
    /// last session ended (since the collector started).
    pub last_seen_ms: Option<UnixMillis>,
    /// When a batch of its records was last stored (collector clock).
    pub last_record_ms: Option<UnixMillis>,
    /// Records stored from it since the collector started.
    pub records_received: u64,
    /// The agent's version (the Hello's string before any `+`).
    pub agent_version: Option<String>,
    /// The agent's build (after the `+`), if the agent was built with one.
    pub agent_build: Option<String>,
    /// What its latest agent-health record said.
    pub health: Option<AgentHealthView>,
    /// Its TLS certificate's notAfter (Unix milliseconds); `null` over SSH,
    /// whose registered keys do not expire.
    pub certificate_not_after_ms: Option<UnixMillis>,
}

/// The last agent-health record of a batch and when the device made it.
pub(crate) fn latest_health(records: &[Record]) -> Option<(AgentHealth, UnixMillis)> {
    records.iter().rev().find_map(|r| match &r.body {
        RecordBody::AgentHealth(health) => Some((*health, r.observed_at_ms)),
        _ => None,
    })
}

/// A session's place in [`Details`]: only the session that holds the
/// current one ends it (a device that reconnects has two for a moment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SessionTicket(u64);

#[derive(Debug)]
struct DeviceState {
    kind: DeviceKind,
    /// The newest session's facts, kept after it ends.
    facts: Option<SessionFacts>,
    /// The session connected now, and since when.
    current: Option<(SessionTicket, UnixMillis)>,
    last_seen_ms: Option<UnixMillis>,
    last_record_ms: Option<UnixMillis>,
    records_received: u64,
    health: Option<AgentHealthView>,
}

/// Every device that authenticated since the collector started.
#[derive(Debug, Default)]
pub(crate) struct Details {
    next: u64,
    devices: HashMap<(OrgId, DeviceId), DeviceState>,
}

impl Details {
    /// A session of `identity` authenticated at `now`.
    pub(crate) fn session_started(
        &mut self,
        identity: &DeviceIdentity,
        facts: SessionFacts,
        now: UnixMillis,
    ) -> SessionTicket {
        self.next += 1;
        let ticket = SessionTicket(self.next);
        let state = self.devices.entry((identity.org.clone(), identity.device.clone())).or_insert(DeviceState {
            kind: identity.kind,
            facts: None,
            current: None,
            last_seen_ms: None,
            last_record_ms: None,
            records_received: 0,
            health: None,
        });
        state.kind = identity.kind;
        state.facts = Some(facts);
        state.current = Some((ticket, now));
        state.last_seen_ms = Some(now);
        ticket
    }

    /// A batch of `records` records from `identity` was stored at `now`;
    /// `health` is the batch's last agent-health record, if it had one (see
    /// [`latest_health`]).
    pub(crate) fn records_stored(
        &mut self,
        identity: &DeviceIdentity,
        records: usize,
        health: Option<(AgentHealth, UnixMillis)>,
        now: UnixMillis,
    ) {
        let Some(state) = self.devices.get_mut(&(identity.org.clone(), identity.device.clone())) else { return };
        state.last_record_ms = Some(now);
        state.last_seen_ms = Some(now);
        state.records_received = state.records_received.saturating_add(records as u64);
        if let Some((AgentHealth { dropped_metadata, dropped_captures, discarded_corrupt_spool }, observed_at_ms)) =
            health
        {
            state.health = Some(AgentHealthView {
                dropped_metadata,
                dropped_captures,
                discarded_corrupt_spool,
                observed_at_ms,
                received_at_ms: now,
            });
        }
    }

    /// The session `ticket` of `identity` ended at `now`; a session that a
    /// reconnect already replaced changes nothing.
    pub(crate) fn session_ended(&mut self, identity: &DeviceIdentity, ticket: SessionTicket, now: UnixMillis) {
        let Some(state) = self.devices.get_mut(&(identity.org.clone(), identity.device.clone())) else { return };
        if state.current.is_some_and(|(current, _)| current == ticket) {
            state.current = None;
            state.last_seen_ms = Some(now);
        }
    }

    /// Every device seen since start, for the alerts' checks.
    pub(crate) fn seen(&self) -> Vec<crate::alerts::checks::SeenDevice> {
        self.devices
            .iter()
            .map(|((org, device), state)| {
                let since = state.current.map(|(_, since)| since);
                let ended = if state.current.is_none() { state.last_seen_ms } else { None };
                let last_activity_ms =
                    [state.last_record_ms, since, ended].into_iter().flatten().max().unwrap_or(UnixMillis::MIN);
                crate::alerts::checks::SeenDevice {
                    org: org.clone(),
                    device: device.clone(),
                    connected: since.is_some(),
                    last_activity_ms,
                    certificate_not_after_ms: state.facts.as_ref().and_then(|f| f.certificate_not_after_ms),
                }
            })
            .collect()
    }

    /// One device: what the registry says (`registration`, if any) and what
    /// its sessions showed. `None` if neither knows it.
    pub(crate) fn detail(
        &self,
        org: &OrgId,
        device: &DeviceId,
        registration: Option<&DeviceRegistration>,
        now: UnixMillis,
    ) -> Option<DeviceDetail> {
        let state = self.devices.get(&(org.clone(), device.clone()));
        let kind = match (registration, state) {
            (Some(registration), _) => registration.identity.kind,
            (None, Some(state)) => state.kind,
            (None, None) => return None,
        };
        let facts = state.and_then(|s| s.facts.as_ref());
        let connected_since_ms = state.and_then(|s| s.current).map(|(_, since)| since);
        let connected = connected_since_ms.is_some();
        let (agent_version, agent_build) = match facts.map(|f| f.agent_version.as_str()).filter(|v| !v.is_empty()) {
            Some(text) => match text.split_once('+') {
                Some((version, build)) => (Some(version.to_owned()), Some(build.to_owned())),
                None => (Some(text.to_owned()), None),
            },
            None => (None, None),
        };
        Some(DeviceDetail {
            org: org.to_string(),
            device: device.to_string(),
            kind: kind.to_string(),
            site: registration.and_then(|r| r.site.as_ref()).map(ToString::to_string),
            registered: registration.is_some(),
            revoked: registration.is_some_and(|r| r.revoked),
            connected,
            transport: facts.map(|f| f.transport),
            tls_version: facts.and_then(|f| f.tls_version.clone()),
            cipher: facts.and_then(|f| f.cipher.clone()),
            kex: facts.and_then(|f| f.kex.clone()),
            peer: facts.map(|f| f.peer.to_string()),
            connected_since_ms,
            last_seen_ms: if connected { Some(now) } else { state.and_then(|s| s.last_seen_ms) },
            last_record_ms: state.and_then(|s| s.last_record_ms),
            records_received: state.map_or(0, |s| s.records_received),
            agent_version,
            agent_build,
            health: state.and_then(|s| s.health),
            certificate_not_after_ms: facts.and_then(|f| f.certificate_not_after_ms),
        })
    }

    /// Every device of `org` that the registry (`registered`, any
    /// organisation's rows) or a session since start knows, sorted by id.
    pub(crate) fn details(&self, org: &OrgId, registered: &[DeviceRegistration], now: UnixMillis) -> Vec<DeviceDetail> {
        let mut ids: Vec<&DeviceId> =
            registered.iter().filter(|r| &r.identity.org == org).map(|r| &r.identity.device).collect();
        ids.extend(self.devices.keys().filter(|(o, _)| o == org).map(|(_, d)| d));
        ids.sort();
        ids.dedup();
        ids.into_iter()
            .filter_map(|device| {
                let registration = registered.iter().find(|r| &r.identity.org == org && &r.identity.device == device);
                self.detail(org, device, registration, now)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use glimpse_common::clock::{Clock, ManualClock};
    use glimpse_common::secret::SecretKey;

    fn identity(org: &str, device: &str, kind: DeviceKind) -> DeviceIdentity {
        DeviceIdentity { org: OrgId::new(org).unwrap(), device: DeviceId::new(device).unwrap(), kind }
    }

    fn registration(identity: &DeviceIdentity, revoked: bool) -> DeviceRegistration {
        DeviceRegistration {
            identity: identity.clone(),
            shared_key: SecretKey::from_bytes([7; 32]),
            cert_serial: "0a".into(),
            revoked,
            site: None,
        }
    }

    fn tls_facts(version: &str) -> SessionFacts {
        SessionFacts {
            transport: DeviceTransport::Tls,
            peer: "127.0.0.1:40000".parse().unwrap(),
            tls_version: Some("TLSv1_3".into()),
            cipher: Some("TLS13_AES_256_GCM_SHA384".into()),
            kex: Some("X25519".into()),
            agent_version: version.into(),
            certificate_not_after_ms: Some(2_000_000_000_000),
        }
    }

    fn health(dropped: u64, at: UnixMillis) -> Record {
        Record {
            observed_at_ms: at,
            body: RecordBody::AgentHealth(AgentHealth {
                dropped_metadata: dropped,
                dropped_captures: 1,
                discarded_corrupt_spool: false,
            }),
        }
    }

    #[test]
    fn a_session_its_records_and_its_end() {
        let clock = ManualClock::new(1_000);
        let mut details = Details::default();
        let ap = identity("acme", "ap-1", DeviceKind::Ap);
        let registered = [registration(&ap, false)];
        let ticket = details.session_started(&ap, tls_facts("0.1.0+abc123"), clock.now_millis());
        clock.advance(5_000);
        let batch = [health(3, 500), health(4, 600)];
        details.records_stored(&ap, batch.len(), latest_health(&batch), clock.now_millis());
        clock.advance(5_000);

        let now = details.detail(&ap.org, &ap.device, registered.first(), clock.now_millis()).unwrap();
        assert!(now.connected && now.registered && !now.revoked);
        assert_eq!(
            (now.connected_since_ms, now.last_record_ms, now.last_seen_ms),
            (Some(1_000), Some(6_000), Some(11_000))
        );
        assert_eq!((now.agent_version.as_deref(), now.agent_build.as_deref()), (Some("0.1.0"), Some("abc123")));
        assert_eq!(now.transport, Some(DeviceTransport::Tls));
        assert_eq!(now.cipher.as_deref(), Some("TLS13_AES_256_GCM_SHA384"));
        assert_eq!(now.records_received, 2);
        let health = now.health.unwrap();
        assert_eq!(
            (health.dropped_metadata, health.observed_at_ms, health.received_at_ms),
            (4, 600, 6_000),
            "the last one wins"
        );

        // A batch without agent-health records leaves the health as it was.
        let batch = [Record { observed_at_ms: 700, body: RecordBody::Metadata(Default::default()) }];
        details.records_stored(&ap, batch.len(), latest_health(&batch), 12_000);
        let detail = details.detail(&ap.org, &ap.device, None, 12_000).unwrap();
        assert_eq!((detail.health.unwrap().dropped_metadata, detail.records_received), (4, 3));

        details.session_ended(&ap, ticket, 20_000);
        let later = details.detail(&ap.org, &ap.device, registered.first(), 99_000).unwrap();
        assert!(!later.connected);
        assert_eq!((later.connected_since_ms, later.last_seen_ms), (None, Some(20_000)));
        assert_eq!(later.agent_version.as_deref(), Some("0.1.0"), "the last session's facts stay");
        assert_eq!(later.certificate_not_after_ms, Some(2_000_000_000_000));
    }

    #[test]
    fn a_reconnect_is_not_ended_by_the_old_session() {
        let mut details = Details::default();
        let ap = identity("acme", "ap-1", DeviceKind::Ap);
        let old = details.session_started(&ap, tls_facts("0.1.0"), 1_000);
        let _new = details.session_started(&ap, tls_facts("0.2.0"), 2_000);
        details.session_ended(&ap, old, 3_000);
        let detail = details.detail(&ap.org, &ap.device, None, 4_000).unwrap();
        assert!(detail.connected);
        assert_eq!(detail.connected_since_ms, Some(2_000));
        assert_eq!((detail.agent_version.as_deref(), detail.agent_build), (Some("0.2.0"), None));
        assert!(!detail.registered);
    }

    #[test]
    fn registered_devices_show_without_sessions_and_orgs_stay_apart() {
        let mut details = Details::default();
        let ap = identity("acme", "ap-1", DeviceKind::Ap);
        let sw = identity("acme", "sw-1", DeviceKind::Switch);
        let other = identity("globex", "ap-1", DeviceKind::Ap);
        let registered = [registration(&sw, true), registration(&ap, false), registration(&other, false)];
        let mut ssh = tls_facts("0.1.0");
        ssh.transport = DeviceTransport::Ssh;
        ssh.certificate_not_after_ms = None;
        details.session_started(&other, ssh, 1_000);

        let acme = details.details(&ap.org, &registered, 5_000);
        assert_eq!(acme.iter().map(|d| d.device.as_str()).collect::<Vec<_>>(), ["ap-1", "sw-1"]);
        assert!(acme.iter().all(|d| !d.connected && d.last_seen_ms.is_none() && d.agent_version.is_none()));
        assert_eq!((acme[1].kind.as_str(), acme[1].revoked), ("switch", true));
        let globex = details.details(&other.org, &registered, 5_000);
        assert_eq!(globex.len(), 1);
        assert_eq!((globex[0].transport, globex[0].certificate_not_after_ms), (Some(DeviceTransport::Ssh), None));
        assert!(details.detail(&ap.org, &DeviceId::new("nope").unwrap(), None, 5_000).is_none());
    }

    #[test]
    fn serialises_with_stable_names() {
        let mut details = Details::default();
        let ap = identity("acme", "ap-1", DeviceKind::Ap);
        details.session_started(&ap, tls_facts("0.1.0"), 1_000);
        let json = serde_json::to_value(details.detail(&ap.org, &ap.device, None, 1_000).unwrap()).unwrap();
        assert_eq!(json["transport"], "tls");
        assert_eq!(json["kind"], "ap");
        assert_eq!(json["health"], serde_json::Value::Null);
    }
}
