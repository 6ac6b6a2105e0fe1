//! Event-triggered capture: watch an interface for the packets the trigger
//! rules need (DHCP, DNS, EAPOL, 802.11 management), keep a small
//! pre-trigger ring of header-only packets on the device, and when a rule
//! fires send that ring plus the matching traffic of the following window.
//!
//! Outside a window nothing leaves the device. The watched packets are read
//! whole (up to the snap length) only by the sans-IO detector in
//! [`super::trigger`], on the device; what is queued for the collector is
//! always [`CapturedPacket::from_packet`] output, headers only.

use std::ops::ControlFlow;
use std::sync::atomic::AtomicBool;
use tracing::{info, warn};

use glimpse_common::capture::CapturedPacket;
use glimpse_common::clock::{Clock, SystemClock};

use super::pcap_source::{open_live, read_loop, Event, Until};
use super::trigger::{monitor_filter, EventDetector, Trigger, TriggerRule};
use super::{CaptureError, CaptureLimits, CaptureTally};

/// Watches `interface` until `stop` is set. `emit` receives header-only
/// packets to send: each trigger's pre-trigger ring, then the window's
/// packets, within `limits` per trigger.
pub fn run_monitor(
    interface: &str,
    rules: Vec<TriggerRule>,
    limits: &CaptureLimits,
    stop: &AtomicBool,
    mut emit: impl FnMut(CapturedPacket),
) -> Result<(), CaptureError> {
    // Learn the link type first: which events can be seen depends on it.
    let link = open_live(interface, "")?.link();
    let Some(filter) = monitor_filter(&rules, link) else {
        warn!(%interface, ?link, "no trigger rule can watch this kind of interface; event capture off");
        return Ok(());
    };
    let mut live = open_live(interface, &filter)?;
    info!(%interface, %filter, "watching for capture trigger events");

    let mut detector = EventDetector::new(rules);
    // While a window is open: when it ends and what it has kept so far.
    let mut window: Option<(i64, CaptureTally)> = None;
    let start_window = |trigger: Trigger,
                        window: &mut Option<(i64, CaptureTally)>,
                        emit: &mut dyn FnMut(CapturedPacket)| {
        info!(event = %trigger.event, reason = %trigger.reason, pre_trigger = trigger.pre_trigger.len(), "capture triggered");
        let mut tally = CaptureTally::default();
        for packet in trigger.pre_trigger {
            if tally.full(limits, packet.headers.len()) {
                break;
            }
            tally.packets_kept += 1;
            tally.header_bytes += packet.headers.len() as u64;
            emit(packet);
        }
        *window = Some((trigger.at_ms + trigger.window_ms, tally));
    };

    // The time of the current turn of the loop, taken before its read.
    let mut now = SystemClock.now_millis();
    read_loop(&mut live, interface, Until { stop: Some(stop), deadline: None }, |event| {
        match event {
            Event::Tick => {
                now = SystemClock.now_millis();
                if window.is_some_and(|(end, _)| now >= end) {
                    window = None;
                }
                while let Some(trigger) = detector.poll(now) {
                    if window.is_none() {
                        start_window(trigger, &mut window, &mut emit);
                    }
                }
            }
            Event::Packet { link, raw, kept } => match &mut window {
                Some((_, tally)) => {
                    if !tally.full(limits, kept.headers.len()) {
                        tally.packets_kept += 1;
                        tally.header_bytes += kept.headers.len() as u64;
                        emit(kept.clone());
                    }
                    // Keep the detector's state current, but a window already
                    // open absorbs new triggers.
                    let _ = detector.observe(now, link, raw, kept);
                }
                None => {
                    if let Some(trigger) = detector.observe(now, link, raw, kept) {
                        start_window(trigger, &mut window, &mut emit);
                    }
                }
            },
        }
        ControlFlow::Continue(())
    })
}
