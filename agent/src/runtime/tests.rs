//! The daemon's drain against a collector driven by the real
//! [`glimpse_common::wire::CollectorSession`], over an in-memory stream.

use std::path::Path;
use std::time::Instant;

use glimpse_common::wire::io::{write_message, FrameReader};
use glimpse_common::wire::{
    AgentMessage, Authentication, CollectorMessage, CollectorSession, SessionAction, Welcome, PROTOCOL_VERSION,
};

use super::*;

const CONFIG: &str = r#"
[device]
org = "acme"
id = "ap-1"
kind = "ap"

[collector]
address = "127.0.0.1:7443"

[transport]
max_batch_records = 2

[tls]
ca = "ca.pem"
cert = "device.pem"
key = "device.key"
shared_key = "device.psk"
"#;

/// What the collector saw: records per stored batch, and whether the agent
/// said goodbye.
type Seen = (Vec<usize>, bool);

/// A collector that welcomes the agent and, before acknowledging each batch,
/// withdraws capture consent: the drain must act on it, not drop it.
async fn collector(mut stream: tokio::io::DuplexStream, identity: glimpse_common::identity::DeviceIdentity) -> Seen {
    let mut reader = FrameReader::new(1 << 20);
    let mut session = CollectorSession::with_authentication(identity, Authentication::Transport);
    let mut stored = Vec::new();
    loop {
        let Ok(message) = reader.next::<AgentMessage, _>(&mut stream).await else { return (stored, false) };
        let reply = match session.handle(Instant::now(), message).expect("the agent keeps to the protocol") {
            SessionAction::Admit => {
                let stored_seq = session.proof_accepted(Instant::now(), 0);
                vec![CollectorMessage::Welcome(Welcome {
                    version: PROTOCOL_VERSION,
                    max_frame_len: 1 << 20,
                    stored_seq,
                })]
            }
            SessionAction::Store(batch, _) => {
                stored.push(batch.records.len());
                session.batch_stored(batch.stream_seq);
                vec![
                    CollectorMessage::Control(ControlMessage::Consent { capture: false }),
                    CollectorMessage::Ack { stream_seq: batch.stream_seq },
                ]
            }
            SessionAction::Close => return (stored, true),
            _ => vec![],
        };
        for message in reply {
            write_message(&mut stream, &message, 1 << 20).await.unwrap();
        }
    }
}

#[tokio::test]
async fn a_drain_sends_the_queue_in_batches_hears_controls_meanwhile_and_says_goodbye() {
    let config = AgentConfig::parse(CONFIG, Path::new("agent.toml"), Path::new("/nonexistent")).unwrap();
    let (agent_end, collector_end) = tokio::io::duplex(1 << 16);
    let peer = tokio::spawn(collector(collector_end, config.identity.clone()));

    let mut session = AgentSession::new(session_config(&config, 7, 1));
    let mut link = Link::over(agent_end, "test");
    session.connect(None);
    link.flush(&mut session).await.unwrap();
    while !session.is_established() {
        session.handle_message(std::time::Instant::now(), link.receive().await.unwrap()).unwrap();
    }
    while session.poll_event().is_some() {}

    let queue = Arc::new(Queue::new(Vec::new(), 0));
    for at in 0..5 {
        queue.push(Record { observed_at_ms: at, body: RecordBody::Metadata(Default::default()) }, 100);
    }
    let (status, watched) = watch::channel(AgentStatus { capture_consent: true, ..AgentStatus::default() });
    let mut captures = Captures::new(queue.clone(), crate::capture::consent::Consent::load(None));
    let mut spool = SpoolSlot { spool: None, max_bytes: 0 };
    let mut omitted_fields = Vec::new();
    let diagnosing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut device = Device {
        queue: &queue,
        diagnosing: &diagnosing,
        spool: &mut spool,
        status: &status,
        captures: &mut captures,
        config: &config,
        omitted_fields: &mut omitted_fields,
    };
    drain(link, &mut session, &mut device).await;

    let (stored, goodbye) = peer.await.unwrap();
    assert_eq!(stored, vec![2, 2, 1], "the queue went out in batches of max_batch_records");
    assert!(goodbye, "a completed drain ends in goodbye");
    assert!(session.is_closed() && session.is_drained());
    assert!(queue.is_empty());
    let seen = watched.borrow().clone();
    assert_eq!((seen.acked_seq, seen.acked_records), (3, 5));
    assert!(!seen.capture_consent, "the consent withdrawn during the drain was acted on");
    assert!(!seen.connected);
}

/// The backoff is reset only when `apply_events` says a batch sent on this
/// connection was acknowledged: not by a welcome (even one that says older
/// batches are stored), not by a `RetryLater`.
#[test]
fn only_an_acknowledgement_of_a_sent_batch_counts_as_storing_again() {
    use glimpse_common::bounded::BoundedString;
    use glimpse_common::wire::{ErrorCode, RetryLater};
    let config = AgentConfig::parse(CONFIG, Path::new("agent.toml"), Path::new("/nonexistent")).unwrap();
    let queue = Arc::new(Queue::new(Vec::new(), 0));
    let (status, watched) = watch::channel(AgentStatus::default());
    let mut captures = Captures::new(queue.clone(), crate::capture::consent::Consent::load(None));
    let mut spool = SpoolSlot { spool: None, max_bytes: 0 };
    let mut omitted_fields = Vec::new();
    let diagnosing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut device = Device {
        queue: &queue,
        diagnosing: &diagnosing,
        spool: &mut spool,
        status: &status,
        captures: &mut captures,
        config: &config,
        omitted_fields: &mut omitted_fields,
    };
    let now = Instant::now();
    let record = || {
        Arc::new(BoundedVec::truncating(vec![Record {
            observed_at_ms: 1,
            body: RecordBody::Metadata(Default::default()),
        }]))
    };
    let mut session = AgentSession::new(session_config(&config, 7, 1));
    session.push_batch_at(3, record(), vec![]).unwrap();
    session.connect(None);
    let mut out = Vec::new();
    while session.poll_transmit(now, &mut out).unwrap() {}
    let welcome = |stored_seq| {
        CollectorMessage::Welcome(Welcome { version: PROTOCOL_VERSION, max_frame_len: 1 << 20, stored_seq })
    };
    // The welcome says batch 3 is stored: acknowledged, but nothing was sent.
    session.handle_message(now, welcome(3)).unwrap();
    assert!(!device.apply_events(&mut session, false).stored);
    session.push_batch(record(), vec![]).unwrap();
    while session.poll_transmit(now, &mut out).unwrap() {}
    let retry = RetryLater {
        stream_seq: 4,
        retry_after_ms: 1000,
        code: ErrorCode::StorageUnavailable,
        message: BoundedString::truncating("storage unavailable; retry later"),
    };
    session.handle_message(now, CollectorMessage::RetryLater(retry)).unwrap();
    let applied = device.apply_events(&mut session, false);
    assert!(!applied.stored);
    assert_eq!(
        applied.refused_until,
        Some(now + std::time::Duration::from_secs(1)),
        "the failover policy hears the delay"
    );
    assert_eq!(watched.borrow().storage_retries, 1);
    assert!(watched.borrow().last_error.as_deref().unwrap_or_default().contains("StorageUnavailable"));
    let later = now + std::time::Duration::from_secs(1);
    session.handle_timeout(later).unwrap();
    while session.poll_transmit(later, &mut out).unwrap() {}
    session.handle_message(later, CollectorMessage::Ack { stream_seq: 4 }).unwrap();
    assert!(device.apply_events(&mut session, false).stored, "stored again: the backoff may reset");
}
