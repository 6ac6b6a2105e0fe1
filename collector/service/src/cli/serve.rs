//! `serve`: the collector daemon. SIGTERM and SIGINT drain (in-flight
//! batches finish and are acknowledged), SIGHUP reloads certificates, the
//! CRL and device registrations.
//!
//! Under systemd (`Type=notify`) it sends `READY=1` once every listener is
//! up, `WATCHDOG=1` every half `WatchdogSec=` while every part is running,
//! and `STOPPING=1` when shutdown begins (see [`crate::telemetry::notify`]).

use std::path::Path;

use anyhow::Context;
use tracing::{info, warn};

use std::sync::Arc;

use glimpse_common::clock::Clock;

use crate::config::CollectorConfig;
use crate::Collector;

/// Runs the collector until SIGTERM or SIGINT, then drains.
pub(super) async fn serve(path: &Path, clock: Arc<dyn Clock>, accept_clock: bool) -> anyhow::Result<()> {
    let mut config = CollectorConfig::load(path)?;
    config.accept_clock = accept_clock;
    // Before starting: a SIGTERM or SIGHUP that arrives during a slow start
    // (registrations imported, the start-up sweep) waits for the loop below
    // instead of killing the process half started.
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let collector = Collector::start_with_clock(config, clock).await.context("starting collector")?;
    let notifier = Arc::new(crate::telemetry::notify::Notifier::from_env());
    notifier.ready(&format!("listening for agents on {}", collector.local_addr()));
    if let Some(every) = notifier.watchdog_interval() {
        info!(?every, "systemd watchdog enabled");
        tokio::spawn(watchdog(notifier.clone(), collector.telemetry().clone(), every));
    }
    loop {
        tokio::select! {
            _ = hangup.recv() => {
                match collector.reload() {
                    Ok(()) => info!("reloaded certificates, CRL and registrations"),
                    Err(e) => warn!("reload failed, keeping the running configuration: {e}"),
                }
                // [alerts] is the one section read again from the file.
                match CollectorConfig::load(path).map_err(|e| e.to_string()).and_then(|c| collector.reload_alerts(&c).map_err(|e| e.to_string())) {
                    Ok(()) => info!("reloaded [alerts]"),
                    Err(e) => warn!("[alerts] not reloaded, keeping the running alerting: {e}"),
                }
            }
            _ = terminate.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    notifier.stopping();
    info!("shutting down: finishing in-flight batches");
    collector.shutdown().await;
    Ok(())
}

/// Pings the systemd watchdog while every part of the collector runs; a
/// part that died stops the pings, and systemd restarts the service. A
/// stuck runtime stops them too, since this task runs on it.
async fn watchdog(
    notifier: Arc<crate::telemetry::notify::Notifier>,
    telemetry: Arc<crate::telemetry::Telemetry>,
    every: std::time::Duration,
) {
    let mut timer = tokio::time::interval(every);
    let mut was_alive = true;
    loop {
        timer.tick().await;
        let alive = telemetry.liveness();
        if alive.ready {
            notifier.watchdog();
        } else if was_alive {
            warn!(problems = ?alive.problems, "not alive: systemd watchdog pings stopped");
        }
        was_alive = alive.ready;
    }
}
