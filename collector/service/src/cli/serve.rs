//! `serve`: the collector daemon. SIGTERM and SIGINT drain (in-flight
//! batches finish and are acknowledged), SIGHUP reloads certificates, the
//! CRL and device registrations.

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
    loop {
        tokio::select! {
            _ = hangup.recv() => match collector.reload() {
                Ok(()) => info!("reloaded certificates, CRL and registrations"),
                Err(e) => warn!("reload failed, keeping the running configuration: {e}"),
            },
            _ = terminate.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    info!("shutting down: finishing in-flight batches");
    collector.shutdown().await;
    Ok(())
}
