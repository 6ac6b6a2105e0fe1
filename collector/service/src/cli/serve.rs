//! `serve`: the collector daemon. SIGTERM and SIGINT drain (in-flight
//! batches finish and are acknowledged), SIGHUP reloads certificates, the
//! CRL and device registrations.

use std::path::Path;

use anyhow::Context;
use tracing::{info, warn};

use crate::config::CollectorConfig;
use crate::Collector;

/// Runs the collector until SIGTERM or SIGINT, then drains.
pub(super) async fn serve(path: &Path) -> anyhow::Result<()> {
    let config = CollectorConfig::load(path)?;
    let collector = Collector::start(config).await.context("starting collector")?;
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
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
