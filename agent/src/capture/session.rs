//! On-demand captures the collector asks for: each runs on its own blocking
//! thread within hard bounds, feeds header-only records into the agent's
//! queue, and reports how it went.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
#[cfg(feature = "pcap")]
use tracing::info;
use tracing::warn;

use glimpse_common::bounded::BoundedString;
use glimpse_common::wire::{CaptureOutcome, CaptureRequest, CaptureStatus, ControlMessage};

use super::consent::Consent;
use super::CaptureLimits;
use crate::queue::Queue;

/// What captures need of the agent's configuration: its `[capture]`
/// section and the queue bound (the config hands it over, so capture needs
/// no config module of its own).
#[derive(Debug, Clone, Copy)]
pub(crate) struct CaptureConfig<'a> {
    /// The `[capture]` section.
    pub(crate) settings: &'a super::CaptureSettings,
    /// Most records queued, captures included.
    pub(crate) max_queued_records: usize,
}

/// Most captures running at once on one device.
const MAX_RUNNING: usize = 4;

/// The captures running on this agent.
pub(crate) struct Captures {
    /// Reports to forward to the collector.
    pub(crate) reports: mpsc::Receiver<CaptureStatus>,
    reports_tx: mpsc::Sender<CaptureStatus>,
    running: HashMap<u64, Arc<AtomicBool>>,
    /// The event monitor's stop flag, while one runs.
    monitor: Option<Arc<AtomicBool>>,
    /// The organisation's capture consent as last heard.
    consent: Consent,
    #[cfg_attr(not(feature = "pcap"), allow(dead_code))]
    queue: Arc<Queue>,
}

impl Captures {
    pub(crate) fn new(queue: Arc<Queue>, consent: Consent) -> Self {
        let (reports_tx, reports) = mpsc::channel(64);
        Self { reports, reports_tx, running: HashMap::new(), monitor: None, consent, queue }
    }

    /// Whether the organisation allows capture, as last heard.
    pub(crate) fn consent(&self) -> bool {
        self.consent.allowed()
    }

    fn report(&self, id: u64, outcome: CaptureOutcome) {
        // A full report channel means the collector is far behind; a lost
        // status line is better than blocking capture.
        let _ = self.reports_tx.try_send(CaptureStatus { id, outcome });
    }

    fn refuse(&self, id: u64, reason: &str) {
        warn!(id, reason, "capture request refused");
        self.report(id, CaptureOutcome::Refused { reason: BoundedString::truncating(reason) });
    }

    /// Acts on a control message from the collector.
    pub(crate) fn handle(&mut self, control: ControlMessage, config: CaptureConfig<'_>) {
        // Captures whose thread has ended hold the only remaining reference.
        self.running.retain(|_, stop| Arc::strong_count(stop) > 1);
        match control {
            ControlMessage::StartCapture(request) => self.start(request, config),
            ControlMessage::StopCapture { id } => {
                if let Some(stop) = self.running.get(&id) {
                    stop.store(true, Ordering::Relaxed);
                }
            }
            ControlMessage::Consent { capture } => {
                // Repeated on every connection: restart the monitor only on
                // a change, so its pre-trigger ring survives reconnects.
                let changed = self.consent.set(capture);
                if capture {
                    if changed || self.monitor.is_none() {
                        self.configure_monitor(config);
                    }
                } else {
                    self.stop_all();
                    let discarded = self.queue.discard_captures();
                    if discarded > 0 {
                        warn!(discarded, "capture consent withdrawn; capture records not yet sent were discarded");
                    }
                }
            }
            _ => warn!("unknown control message ignored"),
        }
    }

    fn start(&mut self, request: CaptureRequest, config: CaptureConfig<'_>) {
        if !self.consent.allowed() {
            return self.refuse(request.id, "packet capture is not allowed for this organisation");
        }
        if self.running.len() >= MAX_RUNNING {
            return self.refuse(request.id, "too many captures running on this device");
        }
        if self.running.contains_key(&request.id) {
            return self.refuse(request.id, "a capture with this id is already running");
        }
        // The request's bounds, never beyond the device's own.
        let own = config.settings.limits();
        let limits = CaptureLimits {
            max_packets: u64::from(request.max_packets.max(1)).min(own.max_packets),
            max_bytes: own.max_bytes,
            max_duration: Duration::from_secs(u64::from(request.duration_secs.max(1))).min(own.max_duration),
        };
        self.spawn(request, limits, config.max_queued_records);
    }

    #[cfg(feature = "pcap")]
    fn spawn(&mut self, request: CaptureRequest, limits: CaptureLimits, max_queued: usize) {
        use glimpse_common::record::{Record, RecordBody};

        let stop = Arc::new(AtomicBool::new(false));
        self.running.insert(request.id, stop.clone());
        self.report(request.id, CaptureOutcome::Started);
        info!(id = request.id, interface = %request.interface, filter = %request.filter, ?limits, "capture started");
        let queue = self.queue.clone();
        let reports = self.reports_tx.clone();
        let consent = self.consent.flag();
        tokio::task::spawn_blocking(move || {
            let result =
                super::pcap_source::capture_live(&request.interface, &request.filter, &limits, &stop, |packet| {
                    let record =
                        Record { observed_at_ms: packet.timestamp_us / 1000, body: RecordBody::Capture(packet) };
                    queue.push_capture(record, max_queued, &consent);
                });
            let outcome = match result {
                Ok(tally) => {
                    info!(
                        id = request.id,
                        packets = tally.packets_kept,
                        header_bytes = tally.header_bytes,
                        "capture finished"
                    );
                    CaptureOutcome::Finished { packets: tally.packets_kept, header_bytes: tally.header_bytes }
                }
                Err(e) => {
                    warn!(id = request.id, "capture failed: {e}");
                    CaptureOutcome::Refused { reason: BoundedString::truncating(&e.to_string()) }
                }
            };
            let _ = reports.blocking_send(CaptureStatus { id: request.id, outcome });
            drop(stop);
        });
    }

    #[cfg(not(feature = "pcap"))]
    fn spawn(&mut self, request: CaptureRequest, _limits: CaptureLimits, _max_queued: usize) {
        self.refuse(request.id, "this agent was built without packet capture support");
    }

    /// Stops every running capture and the event monitor (consent
    /// withdrawn, shutdown).
    pub(crate) fn stop_all(&mut self) {
        for stop in self.running.values() {
            stop.store(true, Ordering::Relaxed);
        }
        self.stop_monitor();
    }

    fn stop_monitor(&mut self) {
        if let Some(stop) = self.monitor.take() {
            stop.store(true, Ordering::Relaxed);
        }
    }

    /// (Re)starts the event monitor the config asks for: only with consent,
    /// rules and an interface to watch.
    pub(crate) fn configure_monitor(&mut self, config: CaptureConfig<'_>) {
        self.stop_monitor();
        let settings = config.settings;
        let Some(interface) = settings.monitor_interface.clone() else { return };
        if !self.consent.allowed() || settings.rules.is_empty() {
            return;
        }
        self.spawn_monitor(interface, config);
    }

    #[cfg(feature = "pcap")]
    fn spawn_monitor(&mut self, interface: String, config: CaptureConfig<'_>) {
        use glimpse_common::record::{Record, RecordBody};

        let stop = Arc::new(AtomicBool::new(false));
        self.monitor = Some(stop.clone());
        let queue = self.queue.clone();
        let rules = config.settings.rules.clone();
        let limits = config.settings.limits();
        let max_queued = config.max_queued_records;
        let consent = self.consent.flag();
        tokio::task::spawn_blocking(move || {
            let result = super::monitor::run_monitor(&interface, rules, &limits, &stop, |packet| {
                let record = Record { observed_at_ms: packet.timestamp_us / 1000, body: RecordBody::Capture(packet) };
                queue.push_capture(record, max_queued, &consent);
            });
            if let Err(e) = result {
                warn!(%interface, "event capture stopped: {e}");
            }
        });
    }

    #[cfg(not(feature = "pcap"))]
    fn spawn_monitor(&mut self, interface: String, _config: CaptureConfig<'_>) {
        warn!(%interface, "event capture rules ignored: this agent was built without packet capture support");
    }
}
