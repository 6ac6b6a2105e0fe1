//! One test per rule of [`AgentSession`], then a property test that drives
//! it against the real [`CollectorSession`] over a lossy, reconnecting
//! link.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::capture::{BoundedBytes, CapturedPacket};
use crate::identity::{DeviceId, DeviceKind, OrgId};
use crate::wire::frame::parse_frame;
use crate::wire::message::{ProtocolError, Welcome};
use crate::wire::session::{Authentication, CollectorSession, SessionAction};

fn identity() -> DeviceIdentity {
    DeviceIdentity { org: OrgId::new("acme").unwrap(), device: DeviceId::new("ap-1").unwrap(), kind: DeviceKind::Ap }
}

fn session(window: usize) -> AgentSession {
    AgentSession::new(AgentSessionConfig {
        identity: identity(),
        stream_id: 9,
        agent_version: BoundedString::truncating("test"),
        max_frame_len: 1 << 20,
        window,
    })
}

fn metadata(id: u64) -> Record {
    Record { observed_at_ms: id as i64, body: RecordBody::Metadata(Default::default()) }
}

fn capture(id: u64) -> Record {
    Record {
        observed_at_ms: id as i64,
        body: RecordBody::Capture(CapturedPacket {
            timestamp_us: 0,
            interface: BoundedString::truncating("eth0"),
            link_type: 1,
            wire_len: 60,
            headers: BoundedBytes::default(),
        }),
    }
}

fn records(list: Vec<Record>) -> BatchRecords {
    Arc::new(BoundedVec::truncating(list))
}

/// Every message the session has to send now, decoded.
fn sent(s: &mut AgentSession, now: Instant) -> Vec<AgentMessage> {
    let mut out = Vec::new();
    while s.poll_transmit(now, &mut out).unwrap() {}
    decode_all(&out)
}

fn decode_all(mut wire: &[u8]) -> Vec<AgentMessage> {
    let mut messages = Vec::new();
    while let Some((payload, used)) = parse_frame(wire, 1 << 20).unwrap() {
        messages.push(AgentMessage::decode(payload).unwrap());
        wire = &wire[used..];
    }
    messages
}

fn events(s: &mut AgentSession) -> Vec<AgentEvent> {
    std::iter::from_fn(|| s.poll_event()).collect()
}

fn welcome(stored_seq: u64) -> CollectorMessage {
    CollectorMessage::Welcome(Welcome { version: PROTOCOL_VERSION, max_frame_len: 1 << 20, stored_seq })
}

fn batch_seqs(messages: &[AgentMessage]) -> Vec<u64> {
    messages.iter().filter_map(|m| m.clone().into_batch()).map(|(b, _)| b.stream_seq).collect()
}

/// A session welcomed over SSH with `stored` already stored.
fn established(window: usize, stored: u64, now: Instant) -> AgentSession {
    let mut s = session(window);
    s.connect(None);
    sent(&mut s, now);
    s.handle_message(Instant::now(), welcome(stored)).unwrap();
    events(&mut s);
    s
}

#[test]
fn the_handshake_is_hello_then_the_proof_over_tls_and_hello_alone_over_ssh() {
    let now = Instant::now();
    let mut s = session(1);
    s.push_batch(records(vec![metadata(1)]), vec![]).unwrap();
    s.connect(Some(AuthProof { proof: [7; 32] }));
    let handshake = sent(&mut s, now);
    assert!(matches!(&handshake[..], [AgentMessage::Hello(h), AgentMessage::AuthProof(p)]
        if h.stream_id == 9 && h.identity == identity() && p.proof == [7; 32]));
    // Nothing else goes out before the welcome.
    assert!(sent(&mut s, now).is_empty());
    s.handle_message(Instant::now(), welcome(0)).unwrap();
    assert_eq!(events(&mut s), vec![AgentEvent::Connected { stored_seq: 0 }]);
    assert_eq!(batch_seqs(&sent(&mut s, now)), vec![1]);

    let mut s = session(1);
    s.connect(None);
    assert!(matches!(&sent(&mut s, now)[..], [AgentMessage::Hello(_)]));
}

#[test]
fn an_ack_older_than_the_oldest_in_flight_is_a_counted_duplicate() {
    let now = Instant::now();
    let mut s = established(1, 4, now);
    s.push_batch(records(vec![metadata(1)]), vec![]).unwrap();
    assert_eq!(batch_seqs(&sent(&mut s, now)), vec![5]);
    s.handle_message(Instant::now(), CollectorMessage::Ack { stream_seq: 3 }).unwrap();
    s.handle_message(Instant::now(), CollectorMessage::Ack { stream_seq: 4 }).unwrap();
    assert_eq!(s.stats().duplicate_acks, 2);
    assert!(events(&mut s).is_empty(), "a duplicate acknowledges nothing");
    assert_eq!(s.unacked().count(), 1);
    // With nothing in flight, anything already acknowledged is a duplicate too.
    s.handle_message(Instant::now(), CollectorMessage::Ack { stream_seq: 5 }).unwrap();
    s.handle_message(Instant::now(), CollectorMessage::Ack { stream_seq: 5 }).unwrap();
    assert_eq!(s.stats().duplicate_acks, 3);
    assert!(s.is_established());
}

#[test]
fn an_ack_of_a_sequence_never_sent_closes_the_connection_and_keeps_the_batch() {
    let now = Instant::now();
    let mut s = established(1, 0, now);
    // Nothing sent at all.
    assert_eq!(
        s.handle_message(Instant::now(), CollectorMessage::Ack { stream_seq: 1 }),
        Err(AgentSessionError::AckNeverSent { seq: 1, highest_sent: 0 })
    );
    assert!(!s.is_established());

    let mut s = established(1, 0, now);
    s.push_batch(records(vec![metadata(1)]), vec![]).unwrap();
    sent(&mut s, now);
    assert_eq!(
        s.handle_message(Instant::now(), CollectorMessage::Ack { stream_seq: 2 }),
        Err(AgentSessionError::AckNeverSent { seq: 2, highest_sent: 1 })
    );
    assert_eq!(s.unacked().map(OutgoingBatch::seq).collect::<Vec<_>>(), vec![1]);
    assert!(!s.unacked().any(OutgoingBatch::is_sent), "it goes out again on the next connection");
}

#[test]
fn an_ack_acknowledges_every_batch_in_flight_up_to_it_within_the_window() {
    let now = Instant::now();
    let later = now + Duration::from_millis(5);
    let mut s = established(3, 0, now);
    for id in 1..=3 {
        s.push_batch(records(vec![metadata(id)]), vec![]).unwrap();
    }
    assert_eq!(s.push_batch(records(vec![]), vec![]), Err(AgentSessionError::WindowFull { window: 3 }));
    assert_eq!(batch_seqs(&sent(&mut s, now)), vec![1, 2, 3]);
    s.handle_message(Instant::now(), CollectorMessage::Ack { stream_seq: 2 }).unwrap();
    assert_eq!(
        events(&mut s),
        vec![
            AgentEvent::Acked { seq: 1, through: 2, records: 1, sent_at: Some(now) },
            AgentEvent::Acked { seq: 2, through: 2, records: 1, sent_at: Some(now) },
        ]
    );
    assert!(s.has_room());
    assert_eq!(s.push_batch(records(vec![metadata(4)]), vec![]), Ok(4));
    // Each batch carries the time it was written, for latency.
    assert_eq!(batch_seqs(&sent(&mut s, later)), vec![4]);
    s.handle_message(Instant::now(), CollectorMessage::Ack { stream_seq: 4 }).unwrap();
    assert_eq!(
        events(&mut s),
        vec![
            AgentEvent::Acked { seq: 3, through: 4, records: 1, sent_at: Some(now) },
            AgentEvent::Acked { seq: 4, through: 4, records: 1, sent_at: Some(later) },
        ]
    );
}

#[test]
fn resume_acknowledges_what_was_stored_without_resending_and_closes_gaps() {
    let now = Instant::now();
    let mut s = established(3, 0, now);
    for id in 1..=3 {
        s.push_batch(records(vec![metadata(id)]), vec![]).unwrap();
    }
    sent(&mut s, now);
    s.connection_lost();
    // The collector had stored batches 1 and 2 when the connection failed.
    s.connect(None);
    sent(&mut s, now);
    s.handle_message(Instant::now(), welcome(2)).unwrap();
    assert_eq!(
        events(&mut s),
        vec![
            AgentEvent::Connected { stored_seq: 2 },
            AgentEvent::Acked { seq: 1, through: 2, records: 1, sent_at: None },
            AgentEvent::Acked { seq: 2, through: 2, records: 1, sent_at: None },
        ]
    );
    assert_eq!(batch_seqs(&sent(&mut s, now)), vec![3], "only what was not stored goes out again");

    // A batch restored from a spool under 7, to a collector that stored 4:
    // it follows what is stored, without a gap.
    let mut s = session(1);
    s.push_batch_at(7, records(vec![metadata(1)]), vec![70]).unwrap();
    s.connect(None);
    sent(&mut s, now);
    s.handle_message(Instant::now(), welcome(4)).unwrap();
    assert_eq!(
        events(&mut s),
        vec![AgentEvent::Connected { stored_seq: 4 }, AgentEvent::Renumbered { from: 7, to: 5 }]
    );
    assert_eq!(batch_seqs(&sent(&mut s, now)), vec![5]);
    assert_eq!(s.next_seq(), 6);
}

#[test]
fn pushing_under_a_given_number_follows_the_stream() {
    let now = Instant::now();
    let mut s = established(1, 3, now);
    // At or below what is stored: acknowledged at once, not sent.
    s.push_batch_at(2, records(vec![metadata(1)]), vec![]).unwrap();
    assert_eq!(events(&mut s), vec![AgentEvent::Acked { seq: 2, through: 3, records: 1, sent_at: None }]);
    assert!(sent(&mut s, now).is_empty());
    assert_eq!(s.push_batch_at(6, records(vec![]), vec![]), Err(AgentSessionError::OutOfOrder { seq: 6, expected: 4 }));
    assert_eq!(s.push_batch_at(0, records(vec![]), vec![]), Err(AgentSessionError::OutOfOrder { seq: 0, expected: 4 }));
    s.push_batch_at(4, records(vec![metadata(2)]), vec![]).unwrap();
    assert_eq!(batch_seqs(&sent(&mut s, now)), vec![4]);
}

#[test]
fn control_messages_become_events_and_withdrawn_consent_removes_unsent_captures() {
    let now = Instant::now();
    let mut s = established(2, 0, now);
    s.push_batch(records(vec![metadata(1), capture(2)]), vec![10, 11]).unwrap();
    sent(&mut s, now);
    s.push_batch(records(vec![capture(3), metadata(4), capture(5)]), vec![12, 13, 14]).unwrap();
    let request = CaptureRequest {
        id: 5,
        interface: BoundedString::truncating("eth0"),
        filter: BoundedString::truncating(""),
        duration_secs: 1,
        max_packets: 1,
    };
    for control in [
        ControlMessage::StartCapture(request.clone()),
        ControlMessage::StopCapture { id: 5 },
        ControlMessage::DataPolicy { omit: BoundedVec::new() },
        ControlMessage::Consent { capture: false },
    ] {
        s.handle_message(Instant::now(), CollectorMessage::Control(control)).unwrap();
    }
    assert_eq!(
        events(&mut s),
        vec![
            AgentEvent::CaptureRequest(request),
            AgentEvent::StopCapture { id: 5 },
            AgentEvent::Directive(ControlMessage::DataPolicy { omit: BoundedVec::new() }),
            AgentEvent::ConsentChanged { capture: false, discarded: vec![12, 14] },
        ]
    );
    let batches: Vec<_> = s.unacked().map(|b| (b.seq(), b.keys().to_vec(), b.records().len())).collect();
    assert_eq!(batches, vec![(1, vec![10, 11], 2), (2, vec![13], 1)], "a batch already sent is left as sent");
}

#[test]
fn a_refusal_or_a_message_out_of_place_ends_the_connection() {
    let now = Instant::now();
    let mut s = session(1);
    s.connect(None);
    let refusal = CollectorMessage::Error(ProtocolError::new(ErrorCode::AuthenticationFailed, "no"));
    assert_eq!(
        s.handle_message(Instant::now(), refusal),
        Err(AgentSessionError::Refused { code: ErrorCode::AuthenticationFailed, message: "no".into() })
    );
    s.connect(None);
    assert!(matches!(
        s.handle_message(Instant::now(), CollectorMessage::Ack { stream_seq: 0 }),
        Err(AgentSessionError::Unexpected(_))
    ));
    let mut s = established(1, 0, now);
    assert_eq!(s.handle_message(Instant::now(), welcome(0)), Err(AgentSessionError::Unexpected("a second welcome")));
    assert!(!s.is_established());
}

#[test]
fn a_drain_ends_in_goodbye_or_gives_up_at_its_deadline_still_hearing_controls() {
    let now = Instant::now();
    let mut s = established(1, 0, now);
    s.push_batch(records(vec![metadata(1)]), vec![]).unwrap();
    sent(&mut s, now);
    let deadline = now + Duration::from_secs(5);
    s.begin_drain(deadline);
    assert_eq!(s.poll_timeout(), Some(deadline));
    s.handle_message(Instant::now(), CollectorMessage::Control(ControlMessage::Consent { capture: true })).unwrap();
    s.handle_timeout(now + Duration::from_secs(1)).unwrap();
    s.handle_message(Instant::now(), CollectorMessage::Ack { stream_seq: 1 }).unwrap();
    let heard = events(&mut s);
    assert!(heard.contains(&AgentEvent::ConsentChanged { capture: true, discarded: vec![] }), "{heard:?}");
    assert!(s.is_drained());
    s.close();
    assert!(matches!(&sent(&mut s, now)[..], [AgentMessage::Goodbye]));
    assert!(s.is_closed());
    assert_eq!(s.poll_timeout(), None);
    assert!(matches!(s.push_batch(records(vec![]), vec![]), Err(AgentSessionError::Closed)));

    let mut s = established(1, 0, now);
    s.push_batch(records(vec![metadata(1)]), vec![]).unwrap();
    sent(&mut s, now);
    s.begin_drain(deadline);
    assert_eq!(s.handle_timeout(deadline), Err(AgentSessionError::DrainTimedOut { unacked: 1 }));
    assert!(s.is_closed());
    assert!(sent(&mut s, now).is_empty(), "no goodbye after giving up");
}

#[test]
fn a_goodbye_for_this_connection_only_keeps_the_stream_going() {
    let now = Instant::now();
    let mut s = established(1, 0, now);
    s.push_batch(records(vec![metadata(1)]), vec![]).unwrap();
    s.goodbye();
    // The goodbye goes first; the batch waits for the next connection.
    assert!(matches!(&sent(&mut s, now)[..], [AgentMessage::Goodbye]));
    assert!(!s.is_established() && !s.is_closed());
    s.connect(None);
    sent(&mut s, now);
    s.handle_message(Instant::now(), welcome(0)).unwrap();
    assert_eq!(batch_seqs(&sent(&mut s, now)), vec![1]);
}

#[test]
fn mac_pseudonyms_apply_to_what_is_written_not_to_what_is_kept() {
    use crate::record::{MacAddr, WiredHost, WiredReport};
    let now = Instant::now();
    let mac = MacAddr([2, 0, 0, 0, 0, 9]);
    let report = WiredReport {
        hosts: BoundedVec::truncating(vec![WiredHost { mac, ..Default::default() }]),
        ..Default::default()
    };
    let record = Record { observed_at_ms: 1, body: RecordBody::Wired(Box::new(report)) };
    let key = DevicePseudonymKey::derive(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &[4; 32]));
    let mut s = established(1, 0, now);
    s.set_mac_pseudonym_key(Some(key.clone()));
    s.push_batch(records(vec![record.clone()]), vec![]).unwrap();
    let written = sent(&mut s, now);
    let Some(AgentMessage::PseudonymisedBatch(batch)) = written.first() else { panic!("{written:?}") };
    let RecordBody::Wired(sent_report) = &batch.records[0].body else { unreachable!() };
    assert_eq!(sent_report.hosts[0].mac, key.pseudonym(mac));
    assert_eq!(s.unacked().next().unwrap().records(), &[record]);
}

#[test]
fn strict_headers_scrub_what_is_written_not_what_is_kept() {
    let now = Instant::now();
    // Ethernet, IPv4, TCP with an unknown option 253 carrying SECRET.
    let mut headers = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00];
    headers.extend([0x45, 0, 0, 48, 0, 0, 0x40, 0, 64, 6, 0, 0, 192, 0, 2, 1, 192, 0, 2, 2]);
    headers.extend([0x30, 0x39, 0x01, 0xbb, 0, 0, 0, 1, 0, 0, 0, 1, 0x70, 0x10, 0xff, 0xff, 0, 0, 0, 0]);
    headers.extend([253, 8, b'S', b'E', b'C', b'R', b'E', b'T']);
    let mut record = capture(1);
    let RecordBody::Capture(packet) = &mut record.body else { unreachable!() };
    packet.headers = BoundedBytes::try_from_vec(headers.clone()).unwrap();
    let mut s = established(1, 0, now);
    assert!(!s.strict_headers());
    s.handle_message(now, CollectorMessage::Control(ControlMessage::StrictHeaders { on: true })).unwrap();
    assert!(s.strict_headers(), "the session applies the decision itself");
    assert_eq!(events(&mut s), vec![AgentEvent::Directive(ControlMessage::StrictHeaders { on: true })]);
    s.push_batch(records(vec![record.clone(), metadata(2)]), vec![]).unwrap();
    let written = sent(&mut s, now);
    let Some(AgentMessage::Batch(batch)) = written.first() else { panic!("{written:?}") };
    let RecordBody::Capture(sent_packet) = &batch.records[0].body else { unreachable!() };
    assert_eq!(sent_packet.headers.len(), headers.len());
    assert_eq!(&sent_packet.headers[54..], &[253, 8, 0, 0, 0, 0, 0, 0]);
    assert_eq!(s.unacked().next().unwrap().records()[0], record, "kept as captured");
}

#[test]
fn retry_later_holds_the_batches_on_the_connection_until_the_delay_has_passed() {
    let now = Instant::now();
    let mut s = established(2, 0, now);
    s.push_batch(records(vec![metadata(1)]), vec![1]).unwrap();
    s.push_batch(records(vec![metadata(2)]), vec![2]).unwrap();
    assert_eq!(batch_seqs(&sent(&mut s, now)), vec![1, 2]);
    let retry = |seq| {
        CollectorMessage::RetryLater(RetryLater {
            stream_seq: seq,
            retry_after_ms: 5000,
            code: ErrorCode::StorageUnavailable,
            message: BoundedString::truncating("storage unavailable; retry later"),
        })
    };
    s.handle_message(now, retry(1)).unwrap();
    let until = now + Duration::from_secs(5);
    assert!(matches!(events(&mut s)[..], [AgentEvent::RetryLater { seq: 1, until: u, .. }] if u == until));
    assert!(s.is_established(), "the connection is kept");
    assert_eq!(s.poll_timeout(), Some(until));
    assert_eq!(s.stats().retries, 1);
    // Nothing goes out before the delay, not even the batch behind it...
    assert!(sent(&mut s, now + Duration::from_millis(4999)).is_empty());
    s.handle_timeout(now + Duration::from_millis(4999)).unwrap();
    assert_eq!(s.poll_timeout(), Some(until));
    // ...and both go again, in order, after it.
    s.handle_timeout(until).unwrap();
    assert_eq!(s.poll_timeout(), None);
    assert_eq!(batch_seqs(&sent(&mut s, until)), vec![1, 2]);
    s.handle_message(until, CollectorMessage::Ack { stream_seq: 2 }).unwrap();
    assert!(s.is_drained());

    // A retry for a batch not in flight is a confused collector.
    let mut s = established(1, 0, now);
    assert!(matches!(s.handle_message(now, retry(3)), Err(AgentSessionError::AckNeverSent { seq: 3, .. })));
    // The collector cannot park a device for longer than the bound.
    let mut s = established(1, 0, now);
    s.push_batch(records(vec![metadata(1)]), vec![1]).unwrap();
    sent(&mut s, now);
    let forever = CollectorMessage::RetryLater(RetryLater {
        stream_seq: 1,
        retry_after_ms: u32::MAX,
        code: ErrorCode::StorageUnavailable,
        message: BoundedString::default(),
    });
    s.handle_message(now, forever).unwrap();
    assert_eq!(s.held_until(), Some(now + Duration::from_millis(u64::from(MAX_RETRY_AFTER_MS))));
    // A new connection starts afresh: the edge's backoff paced it.
    s.connection_lost();
    assert_eq!(s.held_until(), None);
}

/// What the simulated network does next.
#[derive(Debug, Clone)]
enum Step {
    /// The device pushes a batch of this many records, if the window has room.
    Push(usize),
    /// One frame reaches the collector.
    ToCollector,
    /// One message reaches the agent.
    ToAgent,
    /// The connection fails: whatever is on the wire is lost.
    Disconnect,
    /// The collector sends an extra copy of its last acknowledgement.
    DuplicateAck,
    /// The collector sends a directive: a data policy, or (with `true`)
    /// consent withdrawn, which discards capture records not yet sent.
    Control(bool),
    /// The device starts draining.
    Drain,
    /// The collector's storage fails (`true`) or comes back (`false`).
    Storage(bool),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (1usize..4).prop_map(Step::Push),
        6 => Just(Step::ToCollector),
        6 => Just(Step::ToAgent),
        1 => Just(Step::Disconnect),
        1 => Just(Step::DuplicateAck),
        1 => any::<bool>().prop_map(Step::Control),
        1 => Just(Step::Drain),
        1 => any::<bool>().prop_map(Step::Storage),
    ]
}

/// A collector: the real [`CollectorSession`] per connection, over a store
/// that survives connections.
struct Collector {
    session: CollectorSession,
    /// Record ids stored, per batch sequence.
    stored: BTreeMap<u64, Vec<u64>>,
    last_ack: Option<u64>,
    /// Storage is failing: batches are answered with `RetryLater`.
    storage_down: bool,
}

impl Collector {
    fn stored_seq(&self) -> u64 {
        self.stored.keys().next_back().copied().unwrap_or(0)
    }

    fn fresh_connection(&mut self) {
        self.session = CollectorSession::with_authentication(identity(), Authentication::Transport);
    }

    fn receive(&mut self, message: AgentMessage, replies: &mut VecDeque<CollectorMessage>) {
        match self.session.handle(Instant::now(), message).expect("the agent keeps to the protocol") {
            SessionAction::Admit => {
                let stored_seq = self.session.proof_accepted(Instant::now(), self.stored_seq());
                replies.push_back(welcome(stored_seq));
            }
            SessionAction::Store(batch, _) if self.storage_down => {
                self.session.batch_deferred();
                replies.push_back(CollectorMessage::RetryLater(RetryLater {
                    stream_seq: batch.stream_seq,
                    retry_after_ms: 20,
                    code: ErrorCode::StorageUnavailable,
                    message: BoundedString::truncating("storage unavailable"),
                }));
            }
            SessionAction::Store(batch, _) => {
                let ids = batch.records.iter().map(|r| r.observed_at_ms as u64).collect();
                self.stored.insert(batch.stream_seq, ids);
                self.session.batch_stored(batch.stream_seq);
                self.last_ack = Some(batch.stream_seq);
                replies.push_back(CollectorMessage::Ack { stream_seq: batch.stream_seq });
            }
            SessionAction::AckDuplicate(seq) => replies.push_back(CollectorMessage::Ack { stream_seq: seq }),
            _ => {}
        }
    }
}

/// The agent, its pending records and the wire between it and the collector.
struct World {
    agent: AgentSession,
    collector: Collector,
    to_collector: VecDeque<Vec<u8>>,
    to_agent: VecDeque<CollectorMessage>,
    next_record: u64,
    pushed: Vec<u64>,
    /// Record ids the agent was told are stored.
    acked: Vec<u64>,
    /// Capture record ids the agent discarded when consent was withdrawn.
    discarded: Vec<u64>,
    now: Instant,
}

impl World {
    fn new(window: usize) -> Self {
        let mut world = Self {
            agent: session(window),
            collector: Collector {
                session: CollectorSession::with_authentication(identity(), Authentication::Transport),
                stored: BTreeMap::new(),
                last_ack: None,
                storage_down: false,
            },
            to_collector: VecDeque::new(),
            to_agent: VecDeque::new(),
            next_record: 0,
            pushed: Vec::new(),
            acked: Vec::new(),
            discarded: Vec::new(),
            now: Instant::now(),
        };
        world.reconnect();
        world
    }

    fn reconnect(&mut self) {
        self.to_collector.clear();
        self.to_agent.clear();
        self.agent.connection_lost();
        self.collector.fresh_connection();
        self.agent.connect(None);
    }

    /// Moves what the agent has to send onto the wire, checking that
    /// nothing acknowledged is ever sent again.
    fn transmit(&mut self) -> Result<(), TestCaseError> {
        let mut out = Vec::new();
        // The drain deadline is an hour away: only a retry delay ends here.
        self.agent.handle_timeout(self.now).unwrap();
        while self.agent.poll_transmit(self.now, &mut out).unwrap() {}
        for message in decode_all(&out) {
            if let Some((batch, _)) = message.clone().into_batch() {
                let ids: Vec<u64> = batch.records.iter().map(|r| r.observed_at_ms as u64).collect();
                prop_assert!(
                    !ids.iter().any(|id| self.acked.contains(id)),
                    "batch {} resends acknowledged records {ids:?}",
                    batch.stream_seq
                );
            }
            let mut frame = Vec::new();
            message.encode_frame(1 << 20, &mut frame).unwrap();
            self.to_collector.push_back(frame);
        }
        Ok(())
    }

    fn collect_events(&mut self) {
        while let Some(event) = self.agent.poll_event() {
            match event {
                AgentEvent::Acked { seq, .. } => {
                    // Every record of the batch the agent let go of must be stored.
                    let ids = self.collector.stored.get(&seq).cloned().unwrap_or_default();
                    self.acked.extend(ids);
                }
                AgentEvent::ConsentChanged { discarded, .. } => self.discarded.extend(discarded),
                _ => {}
            }
        }
    }

    fn run(&mut self, step: Step) -> Result<(), TestCaseError> {
        self.now += Duration::from_millis(1);
        match step {
            Step::Push(n) => {
                if self.agent.has_room() && !self.agent.is_closed() {
                    let ids: Vec<u64> = (0..n as u64).map(|i| self.next_record + i).collect();
                    self.next_record += n as u64;
                    // Every third record is a capture, which withdrawn consent may discard.
                    let list = ids.iter().map(|&id| if id % 3 == 0 { capture(id) } else { metadata(id) }).collect();
                    self.agent.push_batch(records(list), ids.clone()).unwrap();
                    self.pushed.extend(ids);
                }
            }
            Step::ToCollector => {
                if let Some(frame) = self.to_collector.pop_front() {
                    let (payload, _) = parse_frame(&frame, 1 << 20).unwrap().unwrap();
                    let message = AgentMessage::decode(payload).unwrap();
                    self.collector.receive(message, &mut self.to_agent);
                }
            }
            Step::ToAgent => {
                if let Some(message) = self.to_agent.pop_front() {
                    if let Err(e) = self.agent.handle_message(self.now, message) {
                        return Err(TestCaseError::fail(format!("agent refused a correct collector: {e}")));
                    }
                }
            }
            Step::Disconnect => self.reconnect(),
            Step::DuplicateAck => {
                if let (Some(seq), true) = (self.collector.last_ack, self.collector.session.is_authenticated()) {
                    self.to_agent.push_back(CollectorMessage::Ack { stream_seq: seq });
                }
            }
            Step::Control(withdraw_consent) => {
                if self.collector.session.is_authenticated() {
                    let control = if withdraw_consent {
                        ControlMessage::Consent { capture: false }
                    } else {
                        ControlMessage::DataPolicy { omit: BoundedVec::new() }
                    };
                    self.to_agent.push_back(CollectorMessage::Control(control));
                }
            }
            Step::Drain => self.agent.begin_drain(self.now + Duration::from_secs(3600)),
            Step::Storage(down) => self.collector.storage_down = down,
        }
        self.collect_events();
        self.transmit()
    }

    /// Lets the network deliver everything until nothing moves.
    fn settle(&mut self) -> Result<(), TestCaseError> {
        for _ in 0..10_000 {
            if self.to_collector.is_empty() && self.to_agent.is_empty() {
                return Ok(());
            }
            self.run(Step::ToCollector)?;
            self.run(Step::ToAgent)?;
        }
        Err(TestCaseError::fail("the exchange never settled"))
    }
}

proptest! {
    #[test]
    fn no_record_is_lost_or_stored_twice_whatever_the_network_does(
        window in 1usize..4,
        steps in proptest::collection::vec(step(), 0..120),
    ) {
        let mut world = World::new(window);
        for step in steps {
            world.run(step)?;
        }
        // The link and the storage heal: one clean connection, everything delivered.
        world.collector.storage_down = false;
        world.reconnect();
        world.transmit()?;
        world.settle()?;
        prop_assert!(world.agent.is_drained(), "unacknowledged after a clean exchange: {:?}",
            world.agent.unacked().map(OutgoingBatch::seq).collect::<Vec<_>>());
        let mut stored: Vec<u64> = world.collector.stored.values().flatten().copied().collect();
        let total = stored.len();
        stored.sort_unstable();
        stored.dedup();
        prop_assert_eq!(stored.len(), total, "a record was stored twice");
        prop_assert!(world.discarded.iter().all(|id| id % 3 == 0), "only captures are discarded");
        let mut accounted: Vec<u64> = stored.iter().chain(&world.discarded).copied().collect();
        accounted.sort_unstable();
        prop_assert_eq!(&accounted, &world.pushed, "every record pushed is stored or discarded, not both");
        let mut acked = world.acked.clone();
        acked.sort_unstable();
        prop_assert_eq!(&acked, &stored, "acknowledged is what was stored, once each");
        // The stream has no gaps.
        let seqs: Vec<u64> = world.collector.stored.keys().copied().collect();
        prop_assert_eq!(seqs, (1..=world.collector.stored_seq()).collect::<Vec<_>>());
        world.agent.close();
        world.transmit()?;
        prop_assert!(world.agent.is_closed());
    }

    #[test]
    fn arbitrary_collector_messages_never_panic(
        window in 1usize..4,
        inputs in proptest::collection::vec((any::<u8>(), 0u64..8), 0..40),
    ) {
        let now = Instant::now();
        let mut s = session(window);
        for (kind, n) in inputs {
            let message = match kind % 8 {
                0 => welcome(n),
                1 | 2 => CollectorMessage::Ack { stream_seq: n },
                3 => CollectorMessage::Control(ControlMessage::Consent { capture: n % 2 == 0 }),
                4 => CollectorMessage::Error(ProtocolError::new(ErrorCode::BadSequence, "x")),
                6 => CollectorMessage::RetryLater(RetryLater {
                    stream_seq: n,
                    retry_after_ms: u32::MAX,
                    code: ErrorCode::StorageUnavailable,
                    message: BoundedString::truncating("full"),
                }),
                5 => {
                    let _ = s.push_batch(records(vec![metadata(n), capture(n)]), vec![n, n + 100]);
                    continue;
                }
                _ => {
                    s.connect(None);
                    continue;
                }
            };
            let _ = s.handle_message(Instant::now(), message);
            let mut out = Vec::new();
            while let Ok(true) = s.poll_transmit(now, &mut out) {}
            while s.poll_event().is_some() {}
            prop_assert!(s.unacked().count() <= window);
        }
    }
}
