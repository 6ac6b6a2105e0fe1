//! Bad input on an authenticated or half-open connection gets a clear
//! error, stores nothing, and never disturbs other agents.

use glimpse_collector::ingest::RejectReason;
use glimpse_common::bounded::{BoundedString, BoundedVec};
use glimpse_common::identity::OrgId;
use glimpse_common::wire::io::read_message;
use glimpse_common::wire::{AgentMessage, Batch, Codec, CollectorMessage, ErrorCode, Hello};
use glimpse_tests::*;
use tokio::io::AsyncWriteExt;

const ORG: &str = "ingestorg";

/// Reads the collector's reply on a raw stream: its error code, if any.
async fn error_reply(stream: &mut (impl tokio::io::AsyncRead + Unpin)) -> Option<ErrorCode> {
    let mut buf = Vec::new();
    match tokio::time::timeout(DEADLINE, read_message::<CollectorMessage, _>(stream, &mut buf, 1 << 20)).await {
        Ok(Ok(CollectorMessage::Error(e))) => Some(e.code),
        _ => None,
    }
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(payload);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_input_is_refused_clearly_and_others_keep_streaming() {
    init_logging();
    let good = issue_device(ORG);
    let bad = issue_device(ORG);
    let tc = TestCollector::start().await;
    let agent = start_agent(tc.addr(), &good);
    wait_for_status(&agent, "good agent streaming", |s| s.acked_seq >= 1).await;

    // Before authentication: garbage, an oversized frame header, a wrong
    // version, an unknown message type, a frame cut short.
    let hello_v9 = {
        let mut p = postcard::to_stdvec(&AgentMessage::Hello(Hello {
            version: 1,
            identity: bad.identity.clone(),
            agent_version: BoundedString::truncating("t"),
            stream_id: 1,
        }))
        .unwrap();
        p[1] = 9; // the version byte (varint 1 -> 9)
        p
    };
    let cases: Vec<(&str, Vec<u8>, Option<ErrorCode>)> = vec![
        ("garbage payload", frame(&[0xde, 0xad, 0xbe, 0xef, 0x99]), Some(ErrorCode::Malformed)),
        ("oversized frame header", vec![0x7f, 0xff, 0xff, 0xff], Some(ErrorCode::Malformed)),
        ("empty frame", vec![0, 0, 0, 0], Some(ErrorCode::Malformed)),
        ("wrong protocol version", frame(&hello_v9), Some(ErrorCode::UnsupportedVersion)),
        ("unknown message type", frame(&[200, 1]), Some(ErrorCode::Malformed)),
        (
            "goodbye before hello",
            frame(&postcard::to_stdvec(&AgentMessage::Goodbye).unwrap()),
            Some(ErrorCode::UnexpectedMessage),
        ),
    ];
    for (what, bytes, expected) in cases {
        let before = tc.collector.metrics().rejections(RejectReason::Protocol);
        let mut stream = raw_tls(tc.addr(), &bad.cert, &bad.key).await.expect("TLS up");
        stream.write_all(&bytes).await.unwrap();
        stream.flush().await.unwrap();
        assert_eq!(error_reply(&mut stream).await, expected, "{what}");
        wait_until(what, || tc.collector.metrics().rejections(RejectReason::Protocol) > before).await;
    }

    // A frame cut short: the collector sees the connection close mid-frame.
    let before = tc.collector.metrics().rejections(RejectReason::Protocol);
    let mut stream = raw_tls(tc.addr(), &bad.cert, &bad.key).await.unwrap();
    stream.write_all(&[0, 0, 0, 50, 1, 2, 3]).await.unwrap();
    stream.shutdown().await.unwrap();
    drop(stream);
    wait_until("truncated frame", || tc.collector.metrics().rejections(RejectReason::Protocol) > before).await;

    // After authentication: a batch for another organisation is refused
    // and nothing of it is stored.
    let mut conn = try_connect(tc.addr(), &bad).await.expect("bad device authenticates");
    conn.send(&AgentMessage::Batch(Batch {
        org: OrgId::new("someone-else").unwrap(),
        stream_seq: conn.stored_seq() + 1,
        records: BoundedVec::truncating(vec![glimpse_common::record::Record {
            observed_at_ms: 0,
            body: glimpse_common::record::RecordBody::Metadata(Default::default()),
        }]),
    }))
    .await
    .unwrap();
    match receive_skipping_control(&mut conn).await {
        CollectorMessage::Error(e) => {
            assert_eq!(e.code, ErrorCode::WrongOrganisation, "{}", e.message)
        }
        other => panic!("expected an error, got {other:?}"),
    }
    assert!(tc
        .collector
        .store()
        .read(&OrgId::new("someone-else").unwrap(), glimpse_common::record::DataKind::Metadata, None, None)
        .map(|o| o.records.is_empty())
        .unwrap_or(true));

    // Garbage after authentication.
    let mut conn = try_connect(tc.addr(), &bad).await.expect("bad device authenticates");
    let mut wire = Vec::new();
    AgentMessage::Goodbye.encode_frame(1 << 20, &mut wire).unwrap();
    wire[4] = 250;
    conn.dangerous_send_raw(&wire).await.unwrap();
    match receive_skipping_control(&mut conn).await {
        CollectorMessage::Error(e) => assert_eq!(e.code, ErrorCode::Malformed),
        other => panic!("expected an error, got {other:?}"),
    }
    assert_eq!(tc.stored_records_of(&bad.identity), 0);

    // The good agent never noticed.
    let seen = agent.status().borrow().acked_seq;
    let status = wait_for_status(&agent, "good agent still streaming", |s| s.acked_seq >= seen + 2).await;
    assert_eq!(status.connections, 1, "good agent was disconnected");
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_batches_are_stored_once() {
    init_logging();
    let device = issue_device(ORG);
    let tc = TestCollector::start().await;
    let record = glimpse_common::record::Record {
        observed_at_ms: 1,
        body: glimpse_common::record::RecordBody::Metadata(Default::default()),
    };
    let batch =
        Batch { org: device.identity.org.clone(), stream_seq: 1, records: BoundedVec::truncating(vec![record; 3]) };
    let mut conn = try_connect(tc.addr(), &device).await.unwrap();
    assert_eq!(conn.send_batch(&batch).await.unwrap(), 1);
    // The acknowledgement was "lost": the agent reconnects and resends.
    drop(conn);
    let mut conn = try_connect(tc.addr(), &device).await.unwrap();
    assert_eq!(conn.stored_seq(), 1, "collector remembers the stream");
    assert_eq!(conn.send_batch(&batch).await.unwrap(), 1);
    conn.close().await;
    assert_eq!(tc.stored_records_of(&device.identity), 3);
}

/// The collector's next message that is not a control message (it states
/// capture consent right after the handshake).
async fn receive_skipping_control(conn: &mut glimpse_agent::transport::Connection) -> CollectorMessage {
    loop {
        match conn.receive().await.unwrap() {
            CollectorMessage::Control(_) => continue,
            other => return other,
        }
    }
}
