//! Wiring: the store, the registry import, the ingest listener and the
//! retention sweeper, started together and stopped together.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use glimpse_common::clock::{Clock, SystemClock};

use crate::api::{ApiServer, ApiState};
use crate::config::{CollectorConfig, ControlPlane, SegmentPlace};
use crate::ingest::{AgentDirectory, IngestMetrics, IngestServer, ServerTls, SshServer};
use crate::listener::stopped;
use crate::telemetry::Telemetry;
use glimpse_store::keys::MasterKey;
use glimpse_store::retention;
use glimpse_store::store::Store;

/// The collector could not start or reload.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// The master key could not be loaded.
    #[error(transparent)]
    Key(#[from] glimpse_store::keys::KeyError),
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] glimpse_store::store::StoreError),
    /// TLS files could not be loaded.
    #[error(transparent)]
    Tls(#[from] glimpse_common::tls::TlsConfigError),
    /// The SSH listener could not start.
    #[error(transparent)]
    Ssh(#[from] crate::ingest::SshError),
    /// The certificate revocation list could not be read.
    #[error("cannot read the certificate revocation list: {0}")]
    Crl(String),
    /// Registrations or revocations could not be imported.
    #[error("cannot import device registrations: {0}")]
    Import(String),
    /// A data directory is writable by group or others; refused.
    #[error(transparent)]
    Permissions(#[from] glimpse_files::PermissionError),
    /// The admin API could not start (its tokens could not be read).
    #[error("cannot start the admin API: {0}")]
    Api(String),
    /// The object store for segments could not be set up.
    #[error(transparent)]
    Objects(#[from] glimpse_objects::ObjectsError),
    /// The PostgreSQL control plane could not be reached or used.
    #[error(transparent)]
    Postgres(#[from] glimpse_postgres::PgError),
    /// The alert receivers could not be set up.
    #[error(transparent)]
    Alerts(crate::alerts::AlertsError),
    /// The listener could not bind.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

impl ServiceError {
    /// Whether this is a permission refusal: a key file open to other
    /// users, or a data directory they can write in. The collector exits
    /// with 77 (`EX_NOPERM`) for it.
    pub fn is_permission_refusal(&self) -> bool {
        matches!(
            self,
            ServiceError::Permissions(_)
                | ServiceError::Tls(glimpse_common::tls::TlsConfigError::Permissions(_))
                | ServiceError::Key(glimpse_store::keys::KeyError::MasterKeyPermissions { .. })
                | ServiceError::Ssh(crate::ingest::SshError::HostKeyPermissions(_))
        )
    }
}

/// A running collector.
#[derive(Debug)]
pub struct Collector {
    config: CollectorConfig,
    store: Arc<Store>,
    metrics: Arc<IngestMetrics>,
    telemetry: Arc<Telemetry>,
    tls: ServerTls,
    admin_tls: Option<ServerTls>,
    local_addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    ssh_addr: Option<SocketAddr>,
    ssh_fingerprint: Option<String>,
    directory: Arc<AgentDirectory>,
    api: Option<ApiState>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    /// Aggregated audit entries of repeatable events, flushed periodically
    /// and at shutdown.
    repeats: Vec<Arc<dyn crate::repeats::Flush>>,
    /// Incident alerts (`[alerts]`).
    alerts: crate::alerts::Alerts,
}

/// Opens the store a config names, without serving (sweep, repair, tests).
pub fn open_store(config: &CollectorConfig, clock: Arc<dyn Clock>) -> Result<Store, ServiceError> {
    open_configured(config, clock, false)
}

/// Opens the store a config names for reading only (export, verify): no
/// byte of the data directory changes, and it works while a collector
/// runs (see [`Store::open_read_only`]). With the control plane in
/// PostgreSQL, its rows are read there (nothing is written to it).
pub fn open_store_read_only(config: &CollectorConfig, clock: Arc<dyn Clock>) -> Result<Store, ServiceError> {
    open_configured(config, clock, true)
}

fn open_configured(config: &CollectorConfig, clock: Arc<dyn Clock>, read_only: bool) -> Result<Store, ServiceError> {
    let store = open_backends(config, clock, read_only)?;
    store.policies().set_defaults(&config.privacy);
    Ok(store)
}

fn open_backends(config: &CollectorConfig, clock: Arc<dyn Clock>, read_only: bool) -> Result<Store, ServiceError> {
    if !read_only {
        glimpse_files::check_data_dir(&config.data_dir, "data directory")?;
    }
    let master = MasterKey::load(&config.master_key_file)?;
    let retention = config.retention.clone();
    let segments: Option<Arc<dyn glimpse_store::store::SegmentStore>> = match &config.storage {
        SegmentPlace::Local => None,
        SegmentPlace::S3(s3) => Some(Arc::new(glimpse_objects::ObjectSegments::open(s3, clock.clone())?)),
    };
    match &config.control {
        ControlPlane::Embedded if read_only => Ok(Store::open_read_only(&config.data_dir, master, clock, retention)?),
        ControlPlane::Embedded => Ok(Store::open(&config.data_dir, master, clock, retention)?),
        ControlPlane::Postgres(pg) => {
            let control = Arc::new(glimpse_postgres::PgControl::connect(pg)?);
            let location = std::path::PathBuf::from(control.location());
            Ok(Store::open_with_control(
                &config.data_dir,
                control,
                location,
                segments,
                read_only,
                master,
                clock,
                retention,
            )?)
        }
    }
}

/// Applies the PostgreSQL migrations the control plane lacks
/// (`glimpse-collector migrate`). Nothing to do for the embedded store.
pub fn migrate(config: &CollectorConfig) -> Result<Option<glimpse_postgres::MigrationReport>, ServiceError> {
    match &config.control {
        ControlPlane::Embedded => Ok(None),
        ControlPlane::Postgres(pg) => Ok(Some(glimpse_postgres::PgControl::migrate(pg)?)),
    }
}

/// Imports `registrations/` and `revoked.json` from a `glimpse-certs`
/// directory into the registry. Returns (registered, revoked) counts.
pub fn import_registrations(store: &Store, pki_dir: &std::path::Path) -> Result<(usize, usize), ServiceError> {
    glimpse_store::import::import_registrations(store, pki_dir).map_err(|e| ServiceError::Import(e.to_string()))
}

/// Imports `admins.json` from a `glimpse-certs` directory into the admin
/// certificates. Returns (listed, revoked by this import) counts.
pub fn import_admins(store: &Store, pki_dir: &std::path::Path) -> Result<(usize, usize), ServiceError> {
    glimpse_store::import::import_admins(store, pki_dir).map_err(|e| ServiceError::Import(e.to_string()))
}

/// Acts on what other collectors sharing the control plane change (see
/// [`glimpse_store::control::seam::Change`]), as a change made here is
/// acted on: connected devices of an organisation whose decisions changed
/// are told the new directives (consent stops captures), a device whose
/// registration was revoked is disconnected, tokens created or revoked
/// elsewhere work or stop working here. The embedded store reports
/// nothing, so this costs nothing there.
fn follow_other_collectors(
    store: &Arc<Store>,
    directory: &Arc<AgentDirectory>,
    tokens: Option<Arc<crate::api::tokens::TokenBook>>,
) {
    use glimpse_store::control::seam::Change;
    let weak_store = Arc::downgrade(store);
    let weak_directory = Arc::downgrade(directory);
    store.control().watch(Arc::new(move |change: &Change| {
        let (Some(store), Some(directory)) = (weak_store.upgrade(), weak_directory.upgrade()) else { return };
        let publish = |org: &glimpse_common::identity::OrgId| {
            let directives = crate::ingest::OrgDirectives::of(&store.policies().get(org));
            directory.publish(org, directives)
        };
        let withdraw = |only: Option<(&str, &str)>| {
            let ended = directory.end_withdrawn(|identity, credential, crl| {
                if only.is_some_and(|(org, device)| identity.org.as_str() != org || identity.device.as_str() != device) {
                    return None;
                }
                crate::ingest::withdrawn(&store, identity, credential, &|serial| crl.contains(serial))
            });
            for (device, reason) in &ended {
                warn!(%device, reason = reason.as_str(), "live session closed: its credential was withdrawn on another collector");
            }
        };
        match change {
            Change::Policy(org) => {
                if let Ok(org) = glimpse_common::identity::OrgId::new(org.clone()) {
                    let told = publish(&org);
                    tracing::debug!(%org, told, "decisions changed on another collector");
                }
            }
            Change::Device { org, device } => withdraw(Some((org, device))),
            Change::State(name) if crate::api::tokens::TokenBook::is_token_entry(name) => {
                if let Some(Err(e)) = tokens.as_ref().map(|t| t.reload()) {
                    warn!("cannot read the API tokens another collector changed: {e}");
                }
            }
            Change::State(_) | Change::OrgKey(_) => {}
            Change::Everything => {
                for (org, _) in store.policies().all() {
                    publish(&org);
                }
                withdraw(None);
                if let Some(Err(e)) = tokens.as_ref().map(|t| t.reload()) {
                    warn!("cannot read the API tokens again: {e}");
                }
            }
        }
    }));
}

/// Audits the retention policy in force when it differs from the last one
/// audited (a retention change takes effect by editing the config and
/// restarting).
fn audit_retention(store: &Store) {
    let policy = format!("{:?}", store.retention());
    match store.policies().retention_changed(&policy) {
        Ok(true) => {
            store.audit_event("collector", "retention.policy", None, glimpse_store::audit::AuditOutcome::Done, &policy)
        }
        Ok(false) => {}
        Err(e) => tracing::error!("cannot record the audited retention policy: {e}"),
    }
}

impl Collector {
    /// Opens the store, imports registrations, sweeps once and starts
    /// serving, on the current tokio runtime.
    pub async fn start(config: CollectorConfig) -> Result<Self, ServiceError> {
        Self::start_with_clock(config, Arc::new(SystemClock)).await
    }

    /// As [`Collector::start`], with an injected clock (retention tests).
    pub async fn start_with_clock(mut config: CollectorConfig, clock: Arc<dyn Clock>) -> Result<Self, ServiceError> {
        // TLS and SSH ingest share one connection limit, which must fit the
        // open-file limit.
        config.max_connections = crate::limits::apply(config.max_connections);
        let store = Arc::new(open_store(&config, clock)?);
        // First, so that what the others below hear is read fresh.
        Store::follow_changes(&store);
        let telemetry = Arc::new(Telemetry::new(store.clone(), config.health.min_free_bytes));
        audit_retention(&store);
        if let Some(pki) = &config.pki_dir {
            let (registered, revoked) = import_registrations(&store, pki)?;
            info!(registered, revoked, pki = %pki.display(), "device registrations imported");
            let (admins, revoked) = import_admins(&store, pki)?;
            info!(admins, revoked, "admin certificates imported");
        }
        let check = if config.accept_clock { retention::ClockCheck::Accept } else { retention::ClockCheck::Enforce };
        let swept = retention::sweep_checked(&store, check);
        telemetry.sweep_done(&swept);
        match swept {
            Ok(report) => info!(?report, "start-up retention sweep done"),
            Err(e @ (retention::RetentionError::ClockBehind { .. } | retention::RetentionError::ClockJump { .. })) => {
                tracing::error!("start-up retention sweep skipped, nothing deleted: {e}")
            }
            Err(e) => warn!("start-up retention sweep failed: {e}"),
        }
        let tls = ServerTls::load(&config)?;
        let metrics = telemetry.ingest().clone();
        let directory = Arc::new(AgentDirectory::default());
        directory.set_crl(crate::ingest::crl_serials(config.crl.as_deref()).map_err(ServiceError::Crl)?);
        let server = IngestServer::bind(&config, tls.clone(), store.clone(), metrics.clone(), directory.clone())
            .await
            .map_err(|source| ServiceError::Bind { addr: config.listen, source })?;
        let local_addr = server.local_addr().map_err(|source| ServiceError::Bind { addr: config.listen, source })?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let mut ssh_addr = None;
        let mut ssh_fingerprint = None;
        let ssh_server = match &config.ssh {
            Some(settings) => {
                // A busy SSH port is a bind failure like a busy TLS port (the
                // demo falls back to other ports on either).
                let ssh = SshServer::bind(settings, server.connection_limit(), server.context()).await.map_err(
                    |e| match e {
                        crate::ingest::SshError::Bind { addr, source } => ServiceError::Bind { addr, source },
                        other => ServiceError::Ssh(other),
                    },
                )?;
                ssh_addr =
                    Some(ssh.local_addr().map_err(|source| ServiceError::Bind { addr: settings.listen, source })?);
                ssh_fingerprint = Some(ssh.fingerprint().to_owned());
                info!(ssh = ?ssh_addr, host_key = %ssh.fingerprint(), "SSH ingest listening");
                Some(ssh)
            }
            None => None,
        };
        let mut repeats = vec![server.repeated_audits()];
        // Each part counts as running (for liveness, readiness and the
        // systemd watchdog) from here until its task ends.
        let run = |part: &'static str, task: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>| {
            telemetry.expect(part);
            let running = telemetry.running(part);
            tokio::spawn(async move {
                task.await;
                drop(running);
            })
        };
        let mut tasks = vec![run("the TLS ingest listener", Box::pin(server.run(shutdown_rx.clone())))];
        if let Some(ssh) = ssh_server {
            tasks.push(run("the SSH ingest listener", Box::pin(ssh.run(shutdown_rx.clone()))));
        }
        let sweeps = sweeper(store.clone(), telemetry.clone(), config.sweep_interval, shutdown_rx.clone());
        tasks.push(run("the retention sweeper", Box::pin(sweeps)));
        let reencryption = reencryptor(store.clone(), config.sweep_interval, shutdown_rx.clone());
        tasks.push(run("the data key re-encryption", Box::pin(reencryption)));
        if let SegmentPlace::S3(s3) = &config.storage {
            if let Some((target, after)) = s3.compaction() {
                let runs = compactor(
                    store.clone(),
                    telemetry.clone(),
                    (target, after),
                    s3.compact_interval(),
                    shutdown_rx.clone(),
                );
                tasks.push(tokio::spawn(runs));
            }
        }
        tasks.push(tokio::spawn(store_size(telemetry.clone(), shutdown_rx.clone())));
        tasks.push(tokio::spawn(refusal_summaries(metrics.clone(), shutdown_rx.clone())));
        let alerts = crate::alerts::Alerts::off(store.clone(), telemetry.alerts().clone());
        let context =
            crate::admin::AdminContext { store: store.clone(), directory: directory.clone(), alerts: alerts.clone() };
        let watched = crate::alerts::Watched {
            cert: Some(config.cert.clone()),
            ca: Some(config.ca.clone()),
            pki_dir: config.pki_dir.clone(),
            storage_refusals: Some({
                let metrics = metrics.clone();
                Arc::new(move || metrics.rejections(crate::ingest::RejectReason::StorageUnavailable))
            }),
            devices: Some({
                let directory = directory.clone();
                Arc::new(move || directory.seen_devices())
            }),
        };
        tasks.extend(alerts.start(config.alerts.clone(), watched, shutdown_rx.clone()).map_err(ServiceError::Alerts)?);
        let mut admin_tls = None;
        let mut admin_addr = None;
        let mut api_state = None;
        if let Some(addr) = config.admin_listen {
            let tls = ServerTls::load_api(&config)?;
            let state = ApiState::new(context)
                .map_err(|e| ServiceError::Api(e.to_string()))?
                .with_telemetry(telemetry.clone(), config.health.clone())
                .with_console(config.console.clone());
            state.set_own_certificates(&config);
            repeats.push(state.refusals());
            let admin = ApiServer::bind(addr, tls.clone(), state.clone())
                .await
                .map_err(|source| ServiceError::Bind { addr, source })?;
            admin_addr = Some(admin.local_addr().map_err(|source| ServiceError::Bind { addr, source })?);
            info!(admin = ?admin_addr, "admin HTTPS API listening");
            api_state = Some(state);
            tasks.push(run("the admin listener", Box::pin(admin.run(shutdown_rx))));
            admin_tls = Some(tls);
        }
        repeats.push(Arc::new(AdminUses(store.clone())));
        tasks.push(tokio::spawn(flush_repeats(repeats.clone(), shutdown.subscribe())));
        follow_other_collectors(&store, &directory, api_state.as_ref().map(|api| api.tokens.clone()));
        info!(%local_addr, data_dir = %config.data_dir.display(), "collector listening");
        Ok(Self {
            config,
            store,
            metrics,
            telemetry,
            tls,
            admin_tls,
            local_addr,
            admin_addr,
            ssh_addr,
            ssh_fingerprint,
            directory,
            api: api_state,
            shutdown,
            tasks,
            repeats,
            alerts,
        })
    }

    /// Where agents connect.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Where switches and gateways connect over SSH, if enabled.
    pub fn ssh_addr(&self) -> Option<SocketAddr> {
        self.ssh_addr
    }

    /// The SSH host key's SHA-256 fingerprint (`SHA256:…`), if SSH is enabled.
    pub fn ssh_host_key_fingerprint(&self) -> Option<&str> {
        self.ssh_fingerprint.as_deref()
    }

    /// Where the admin API listens, if enabled.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// What admin actions act on; the demo and tests use it to act as an
    /// admin would, through the same checks and audit.
    pub fn admin_context(&self) -> crate::admin::AdminContext {
        crate::admin::AdminContext {
            store: self.store.clone(),
            directory: self.directory.clone(),
            alerts: self.alerts.clone(),
        }
    }

    /// The incident alerts.
    pub fn alerts(&self) -> &crate::alerts::Alerts {
        &self.alerts
    }

    /// SIGHUP with the config file read again: its `[alerts]` section
    /// replaces the running one (receivers, secret, thresholds). On error
    /// the running alerting stays as it was.
    pub fn reload_alerts(&self, config: &CollectorConfig) -> Result<(), ServiceError> {
        self.alerts.configure(config.alerts.clone()).map_err(ServiceError::Alerts)
    }

    /// The admin API's shared state (tokens, live connections), if the
    /// admin port is enabled.
    pub fn api(&self) -> Option<&ApiState> {
        self.api.as_ref()
    }

    /// The connected devices and their control channels.
    pub fn directory(&self) -> &Arc<AgentDirectory> {
        &self.directory
    }

    /// The store (for the demo's summary and for tests).
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Ingest counters.
    pub fn metrics(&self) -> &Arc<IngestMetrics> {
        &self.metrics
    }

    /// The metrics registry, liveness and readiness.
    pub fn telemetry(&self) -> &Arc<Telemetry> {
        &self.telemetry
    }

    /// SIGHUP: take up the master key file if another collector rotated
    /// the key in use away, re-read TLS files (certificate, key, CA, CRL) and re-import
    /// registrations and revocations; new connections see the new material.
    /// Then every live session is checked against it: one whose device is
    /// now revoked (CRL or registry), unregistered or re-keyed is told why
    /// with an `Error` and closed, and nothing it sends from now on is
    /// stored; the others stay up. On error nothing changes.
    pub fn reload(&self) -> Result<(), ServiceError> {
        // First: after another collector sharing the control plane rotated
        // the master key, the new key file installed here (the import
        // below writes registrations, refused under the old key).
        if self.store.adopt_master_key_file(&self.config.master_key_file)? {
            warn!(file = %self.config.master_key_file.display(), "master key rotated elsewhere: the new key file is in use");
        }
        let crl = crate::ingest::crl_serials(self.config.crl.as_deref()).map_err(ServiceError::Crl)?;
        self.tls.reload(&self.config)?;
        if let Some(admin) = &self.admin_tls {
            admin.reload(&self.config)?;
        }
        if let Some(pki) = &self.config.pki_dir {
            let (registered, revoked) = import_registrations(&self.store, pki)?;
            info!(registered, revoked, "registrations re-imported");
            let (admins, revoked) = import_admins(&self.store, pki)?;
            info!(admins, revoked, "admin certificates re-imported");
        }
        self.directory.set_crl(crl);
        if let Some(api) = &self.api {
            api.set_own_certificates(&self.config);
            // Admin certificates revoked since their connection was made.
            let cut = api.live.cut(|c| match c {
                crate::api::live::Credential::Certificate(serial) => self.directory.on_crl(serial),
                crate::api::live::Credential::Token(_) => false,
            });
            if cut > 0 {
                warn!(closed = cut, "admin API connections closed: their certificate is now revoked");
            }
        }
        let store = &self.store;
        let ended = self.directory.end_withdrawn(|identity, credential, crl| {
            crate::ingest::withdrawn(store, identity, credential, &|serial| crl.contains(serial))
        });
        for (device, reason) in &ended {
            warn!(%device, reason = reason.as_str(), "live session closed: its credential was withdrawn");
        }
        info!(
            closed = ended.len(),
            live = self.directory.live_sessions(),
            "live sessions checked against the reloaded credentials"
        );
        Ok(())
    }

    /// SIGTERM: stop accepting, finish and acknowledge batches being
    /// stored, tell agents we are going, and wait for every task.
    pub async fn shutdown(self) {
        self.telemetry.stopping();
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        // Every listener has stopped: what is still being counted is written
        // now rather than lost.
        let repeats = self.repeats;
        let _ = tokio::task::spawn_blocking(move || repeats.iter().for_each(|r| r.flush_all())).await;
        // The sequences committed since the last copy.
        self.store.control().flush();
    }
}

/// Writes the admin certificates' last-use times on the same schedule as
/// the repeated audits' summaries (and at shutdown).
#[derive(Debug)]
struct AdminUses(Arc<Store>);

impl crate::repeats::Flush for AdminUses {
    fn flush_due(&self) {
        if let Err(e) = self.0.admins().flush_uses() {
            warn!("cannot record when admin certificates were last used: {e}");
        }
    }

    fn flush_all(&self) {
        self.flush_due();
    }
}

/// Writes the summaries of repeated events whose interval has closed, a few
/// times per interval so that none waits long past its end.
async fn flush_repeats(repeats: Vec<Arc<dyn crate::repeats::Flush>>, mut shutdown: watch::Receiver<bool>) {
    let mut timer = tokio::time::interval(crate::repeats::REPEAT_INTERVAL / 4);
    timer.tick().await;
    loop {
        tokio::select! {
            _ = timer.tick() => {
                let repeats = repeats.clone();
                let _ = tokio::task::spawn_blocking(move || repeats.iter().for_each(|r| r.flush_due())).await;
            }
            _ = stopped(&mut shutdown) => return,
        }
    }
}

/// Recomputes the store size for the metrics now and every
/// [`crate::telemetry::STORE_SIZE_EVERY`].
async fn store_size(telemetry: Arc<Telemetry>, mut shutdown: watch::Receiver<bool>) {
    let mut timer = tokio::time::interval(crate::telemetry::STORE_SIZE_EVERY);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = timer.tick() => {
                let telemetry = telemetry.clone();
                let _ = tokio::task::spawn_blocking(move || telemetry.refresh_store_size()).await;
            }
            _ = stopped(&mut shutdown) => return,
        }
    }
}

async fn sweeper(
    store: Arc<Store>,
    telemetry: Arc<Telemetry>,
    every: std::time::Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut timer = tokio::time::interval(every);
    timer.tick().await;
    loop {
        tokio::select! {
            _ = timer.tick() => {
                let store = store.clone();
                let swept = tokio::task::spawn_blocking(move || retention::sweep(&store)).await;
                if let Ok(result) = &swept {
                    telemetry.sweep_done(result);
                }
                match swept {
                    Ok(Ok(report)) => info!(?report, "retention sweep done"),
                    Ok(Err(e @ (retention::RetentionError::ClockBehind { .. } | retention::RetentionError::ClockJump { .. }))) => {
                        tracing::error!("retention sweep skipped, nothing deleted: {e}")
                    }
                    Ok(Err(e)) => warn!("retention sweep failed: {e}"),
                    Err(e) => warn!("retention sweep task failed: {e}"),
                }
            }
            _ = stopped(&mut shutdown) => return,
        }
    }
}

/// Segments one re-encryption run rewrites at most: each holds the
/// appends of its kind for the time one segment takes to rewrite, so a run
/// stays short and ingest is not starved; the next run (a sweep interval
/// later) goes on.
const REENCRYPT_SEGMENTS_PER_RUN: u64 = 16;

/// Re-encrypts segments still under a retiring data key version and
/// retires versions nothing is under any more (see
/// `glimpse_store::store::rekey`), every `every` (the first run at once,
/// which also goes on with what a crash interrupted). The store audits
/// retirements.
async fn reencryptor(store: Arc<Store>, every: std::time::Duration, mut shutdown: watch::Receiver<bool>) {
    let mut timer = tokio::time::interval(every);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = timer.tick() => {
                let store = store.clone();
                let done = tokio::task::spawn_blocking(move || store.reencrypt(REENCRYPT_SEGMENTS_PER_RUN))
                .await;
                match done {
                    Ok(Ok(report)) if report.segments > 0 || !report.retired.is_empty() => {
                        info!(segments = report.segments, damaged = report.damaged, retired = report.retired.len(),
                            remaining = report.remaining, "data key re-encryption run done");
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => warn!("data key re-encryption run failed: {e}"),
                    Err(e) => warn!("data key re-encryption task failed: {e}"),
                }
            }
            _ = stopped(&mut shutdown) => return,
        }
    }
}

/// Merged objects one compaction run writes at most, so that a run (and
/// the lock of the kind it holds) stays short; the next run goes on.
const COMPACT_MERGES_PER_RUN: usize = 64;

/// Compacts the object store's small objects every `every` (the first run
/// at once, which also settles what a crash left), one run at a time.
async fn compactor(
    store: Arc<Store>,
    telemetry: Arc<Telemetry>,
    (target, after): (u64, i64),
    every: std::time::Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut timer = tokio::time::interval(every);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = timer.tick() => {
                let store = store.clone();
                let done = tokio::task::spawn_blocking(move || store.compact(target, after, COMPACT_MERGES_PER_RUN)).await;
                match done {
                    Ok(result) => {
                        telemetry.compaction_done(&result);
                        match result {
                            Ok((done, failures)) if done.merges > 0 || done.settled > 0 || failures > 0 => {
                                info!(merges = done.merges, merged = done.merged, bytes = done.bytes,
                                    settled = done.settled, failed_kinds = failures, "compaction run done");
                            }
                            Ok(_) => {}
                            Err(e) => warn!("compaction run failed: {e}"),
                        }
                    }
                    Err(e) => warn!("compaction task failed: {e}"),
                }
            }
            _ = stopped(&mut shutdown) => return,
        }
    }
}

/// Logs the summaries of refusal lines held back, as their intervals end.
async fn refusal_summaries(metrics: Arc<IngestMetrics>, mut shutdown: watch::Receiver<bool>) {
    let mut timer = tokio::time::interval(std::time::Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = timer.tick() => metrics.log_refusal_summaries(false),
            _ = stopped(&mut shutdown) => {
                metrics.log_refusal_summaries(true);
                return;
            }
        }
    }
}
