//! `glimpse-agent replay`: a pcap file's packets through exactly the path a
//! live capture takes (header-only truncation, batches, mutually
//! authenticated transport, acknowledgements), for lab replays and tests.

use std::path::Path;

use crate::capture::{CaptureError, CaptureTally};
use crate::config::AgentConfig;

/// Why a replay stopped or could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// Reading or cutting the file failed, or capture is not allowed.
    #[error(transparent)]
    Capture(#[from] CaptureError),
    /// Sending to the collector failed.
    #[error(transparent)]
    Transport(#[from] crate::transport::TransportError),
}

/// What a replay did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayReport {
    /// What the capture kept and cut.
    pub tally: CaptureTally,
    /// Batches the collector acknowledged.
    pub batches: u64,
    /// Records the collector acknowledged.
    pub records: u64,
}

/// How long a replay waits for the collector to state the organisation's
/// capture consent after the handshake.
pub const CONSENT_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Replays `pcap` to the collector `config` names, labelling packets with
/// `interface`. Refused unless the collector says the organisation allows
/// capture; stops if it withdraws consent midway.
pub async fn replay(config: &AgentConfig, pcap: &Path, interface: &str) -> Result<ReplayReport, ReplayError> {
    replay_file(config, pcap, interface).await
}

#[cfg(feature = "pcap")]
async fn replay_file(config: &AgentConfig, pcap: &Path, interface: &str) -> Result<ReplayReport, ReplayError> {
    use rand::Rng;
    use tracing::info;

    use glimpse_common::bounded::BoundedVec;
    use glimpse_common::record::{Record, RecordBody};
    use glimpse_common::wire::AgentEvent;

    use crate::transport::{Connection, Credentials, TransportError};

    let credentials = Credentials::load(config)?;
    let stream_id: u64 = rand::thread_rng().gen();
    let mut conn = Connection::open(config, &credentials, stream_id).await?;
    // The collector states consent right after the handshake, after the
    // directives that must hold before anything is captured (strict
    // header scrubbing: the session applies it to what it writes).
    let consent = tokio::time::timeout(CONSENT_WAIT, async {
        loop {
            match conn.next_event().await {
                Ok(AgentEvent::Directive(_)) => continue,
                other => return other,
            }
        }
    })
    .await;
    match consent {
        Ok(Ok(AgentEvent::ConsentChanged { capture: true, .. })) => {}
        Ok(Ok(AgentEvent::ConsentChanged { capture: false, .. })) => {
            conn.close().await;
            return Err(CaptureError::NotAllowed.into());
        }
        Ok(Ok(_)) | Err(_) => {
            conn.close().await;
            return Err(ReplayError::Transport(TransportError::UnexpectedReply(
                "no capture consent statement from the collector",
            )));
        }
        Ok(Err(e)) => return Err(e.into()),
    }

    // The file is read on a blocking thread; a small channel of batches
    // keeps memory bounded whatever the file's size.
    let (batches_tx, mut batches_rx) = tokio::sync::mpsc::channel::<Vec<Record>>(4);
    let path = pcap.to_owned();
    let label = interface.to_owned();
    let limits = config.capture.limits();
    let per_batch = config.max_batch_records;
    let reader = tokio::task::spawn_blocking(move || {
        let mut pending = Vec::with_capacity(per_batch);
        let tally = crate::capture::pcap_source::capture_file(&path, &label, &limits, |packet| {
            pending.push(Record { observed_at_ms: packet.timestamp_us / 1000, body: RecordBody::Capture(packet) });
            if pending.len() == per_batch {
                let _ = batches_tx.blocking_send(std::mem::take(&mut pending));
            }
        })?;
        if !pending.is_empty() {
            let _ = batches_tx.blocking_send(pending);
        }
        Ok::<_, CaptureError>(tally)
    });

    // One batch at a time through the connection's session: it numbers
    // them after what the collector stored and matches acknowledgements.
    let mut report = ReplayReport::default();
    let mut withdrawn = false;
    while let Some(records) = batches_rx.recv().await {
        let count = records.len() as u64;
        let sent = conn.session_mut().push_batch(std::sync::Arc::new(BoundedVec::truncating(records)), Vec::new());
        sent.map_err(TransportError::from)?;
        conn.flush().await?;
        loop {
            match conn.next_event().await? {
                AgentEvent::Acked { .. } => break,
                AgentEvent::ConsentChanged { capture, .. } => withdrawn |= !capture,
                _ => {}
            }
        }
        report.batches += 1;
        report.records += count;
        if withdrawn {
            conn.close().await;
            return Err(CaptureError::NotAllowed.into());
        }
    }
    report.tally = reader.await.map_err(|e| CaptureError::Pcap {
        source_name: pcap.display().to_string(),
        message: format!("reader task failed: {e}"),
    })??;
    conn.close().await;
    info!(
        packets = report.tally.packets_kept,
        header_bytes = report.tally.header_bytes,
        bytes_cut = report.tally.bytes_cut,
        batches = report.batches,
        "replay acknowledged by the collector"
    );
    Ok(report)
}

#[cfg(not(feature = "pcap"))]
async fn replay_file(_config: &AgentConfig, _pcap: &Path, _interface: &str) -> Result<ReplayReport, ReplayError> {
    Err(CaptureError::Unsupported.into())
}
