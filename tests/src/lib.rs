//! Shared helpers for Glimpse's end-to-end tests: a PKI made once per test
//! binary, a real collector on 127.0.0.1:0, real agents, raw TLS clients for
//! misbehaving on purpose, and waits with a deadline. Each is one line in a
//! test.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use glimpse_agent::{AgentConfig, AgentHandle, AgentStatus};
use glimpse_collector::config::CollectorConfig;
use glimpse_collector::Collector;
use glimpse_common::clock::{Clock, SystemClock};
use glimpse_common::identity::{DeviceId, DeviceIdentity, DeviceKind, OrgId};
use glimpse_common::tls::client_config;
use glimpse_files::{load_certs, load_key};
use glimpse_store::keys::MasterKey;
use tempfile::TempDir;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// How long any wait in a test may take before it fails. Generous: CI
/// machines are slow and busy; no assertion depends on speed.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// Whether a test that runs the outside program `tool` can run here. When
/// `tool` is not on `PATH`, prints one line naming it and `install` (how
/// to get it) and returns false: the test returns early, skipped. Under CI
/// (`CI` set), which must have every tool, it panics instead.
///
/// ```no_run
/// if !glimpse_tests::require_tool("tshark", "apt-get install tshark") {
///     return;
/// }
/// ```
pub fn require_tool(tool: &str, install: &str) -> bool {
    if on_path(tool) {
        return true;
    }
    skip_or_fail(&format!("`{tool}` is not installed ({install})"))
}

/// [`require_tool`] for a Python module (`python3 -c "import <module>"`).
pub fn require_python_module(module: &str, install: &str) -> bool {
    let imported = std::process::Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    imported || skip_or_fail(&format!("the Python module `{module}` is not installed ({install})"))
}

/// [`require_tool`] for libpcap, which live captures load at run time.
pub fn require_libpcap() -> bool {
    match glimpse_agent::capture::pcap_source::live_capture_available() {
        Ok(()) => true,
        Err(e) => skip_or_fail(&e.to_string()),
    }
}

pub(crate) fn skip_or_fail(why: &str) -> bool {
    use std::io::Write;

    if std::env::var_os("CI").is_some() {
        panic!("{why}; CI must provide it (see .ci/run)");
    }
    // Straight to stderr, not `eprintln!`, which the test harness
    // swallows for a passing test: a skip must be seen.
    let _ = writeln!(std::io::stderr(), "skipped: {why}");
    false
}

/// Whether an executable file named `tool` is in a directory of `PATH`.
fn on_path(tool: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;

    let Some(path) = std::env::var_os("PATH") else { return false };
    std::env::split_paths(&path)
        .any(|dir| std::fs::metadata(dir.join(tool)).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

/// Two PKIs: ours, and a foreign one whose certificates our collector must refuse.
#[derive(Debug)]
pub struct SharedPki {
    _dir: TempDir,
    /// Our PKI directory (as `glimpse-certs init` makes it).
    pub ours: PathBuf,
    /// A second, unrelated CA.
    pub foreign: PathBuf,
    lock: Mutex<()>,
}

static PKI: OnceLock<SharedPki> = OnceLock::new();
static NEXT_ID: AtomicU32 = AtomicU32::new(1);

/// The PKIs for this test binary, made on first use (RSA-4096 key
/// generation takes a few seconds, so once is enough).
pub fn pki() -> &'static SharedPki {
    PKI.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let ours = dir.path().join("pki");
        let foreign = dir.path().join("foreign-pki");
        let opts = glimpse_certs::InitOptions::default();
        glimpse_certs::init(&ours, &opts).expect("init our PKI");
        glimpse_certs::init(&foreign, &opts).expect("init foreign PKI");
        SharedPki { _dir: dir, ours, foreign, lock: Mutex::new(()) }
    })
}

impl SharedPki {
    /// Serialises changes to the shared PKI (revocations rewrite one file).
    pub fn lock(&self) -> MutexGuard<'_, ()> {
        self.lock.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A unique device id for this process, so tests never collide in the shared PKI.
pub fn unique_device(prefix: &str) -> DeviceId {
    let n = NEXT_ID.fetch_add(1, Ordering::SeqCst);
    DeviceId::new(format!("{prefix}-{}-{n}", std::process::id())).expect("valid id")
}

/// A device's files.
#[derive(Debug, Clone)]
pub struct Device {
    /// Who it is.
    pub identity: DeviceIdentity,
    /// The PKI directory it was issued from.
    pub pki: PathBuf,
    /// Its certificate.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    /// Its shared key file.
    pub shared_key: PathBuf,
    /// Its SSH private key (switches and gateways).
    pub ssh_key: Option<PathBuf>,
}

/// Issues a device in `pki_dir` with an optional validity override.
pub fn issue_device_in(pki_dir: &Path, org: &str, kind: DeviceKind, validity: glimpse_certs::Validity) -> Device {
    let identity = DeviceIdentity { org: OrgId::new(org).expect("org"), device: unique_device(kind.as_str()), kind };
    let _guard = pki().lock();
    let files = glimpse_certs::issue_device(pki_dir, &identity, &validity, false).expect("issue device");
    Device {
        identity,
        pki: pki_dir.to_owned(),
        cert: files.cert,
        key: files.key,
        shared_key: files.shared_key,
        ssh_key: files.ssh_key,
    }
}

/// Issues a fresh access point in our PKI at `site` of `org`
/// (`glimpse-certs device --site`).
pub fn issue_device_at_site(org: &str, site: &str) -> Device {
    let identity =
        DeviceIdentity { org: OrgId::new(org).expect("org"), device: unique_device("ap"), kind: DeviceKind::Ap };
    let options = glimpse_certs::DeviceOptions {
        site: Some(glimpse_common::identity::SiteId::new(site).expect("site")),
        ..glimpse_certs::DeviceOptions::default()
    };
    let pki_dir = &pki().ours;
    let _guard = pki().lock();
    let files = glimpse_certs::issue_device_with(pki_dir, &identity, &glimpse_certs::Validity::default(), &options)
        .expect("issue device");
    Device {
        identity,
        pki: pki_dir.to_owned(),
        cert: files.cert,
        key: files.key,
        shared_key: files.shared_key,
        ssh_key: files.ssh_key,
    }
}

/// Issues a fresh switch or gateway (with a generated SSH key) in our PKI.
pub fn issue_ssh_device(org: &str, kind: DeviceKind) -> Device {
    issue_device_in(&pki().ours, org, kind, glimpse_certs::Validity::default())
}

/// Issues a fresh, valid access point in our PKI.
pub fn issue_device(org: &str) -> Device {
    issue_device_in(&pki().ours, org, DeviceKind::Ap, glimpse_certs::Validity::default())
}

/// A collector on 127.0.0.1:0 with its own data directory.
#[derive(Debug)]
pub struct TestCollector {
    /// The running collector.
    pub collector: Collector,
    /// Its config (data dir, key file...).
    pub config: CollectorConfig,
    _dir: TempDir,
}

/// The text of a collector config for a data dir and our PKI.
pub fn collector_toml(data_dir: &Path, master_key: &Path, port: u16) -> String {
    let pki = &pki().ours;
    format!(
        "listen = \"127.0.0.1:{port}\"\ndata_dir = {data:?}\nmaster_key_file = {key:?}\npki_dir = {pki:?}\n\
         [tls]\nca = {ca:?}\ncert = {cert:?}\nkey = {ckey:?}\ncrl = {crl:?}\n\
         [limits]\nhandshake_timeout_secs = 10\n{privacy}[admin]\nlisten = \"127.0.0.1:0\"\n\
         [ssh]\nlisten = \"127.0.0.1:0\"\nauth_timeout_secs = 20\n",
        data = data_dir,
        key = master_key,
        pki = pki,
        ca = glimpse_certs::ca_cert_path(pki),
        cert = glimpse_certs::collector_cert_path(pki),
        ckey = glimpse_certs::collector_key_path(pki),
        crl = glimpse_certs::ca_crl_path(pki),
        privacy = REAL_MACS,
    )
}

/// The test collectors store MAC addresses as collected unless a test
/// chooses otherwise: most tests compare what is stored with the addresses
/// they sent. The default, pseudonyms for organisations that decided
/// nothing, has tests of its own, which remove this table.
pub const REAL_MACS: &str = "[privacy]\npseudonymise_macs = false\n";

impl TestCollector {
    /// Starts a collector with the system clock.
    pub async fn start() -> Self {
        Self::start_with_clock(Arc::new(SystemClock)).await
    }

    /// Starts a collector with an injected clock.
    pub async fn start_with_clock(clock: Arc<dyn Clock>) -> Self {
        Self::start_on(0, clock).await
    }

    /// Starts a collector on a given port of 127.0.0.1 (0: any).
    // The PKI lock only serialises test threads (each with its own runtime)
    // against PKI writers; no task of this runtime ever contends for it.
    #[allow(clippy::await_holding_lock)]
    pub async fn start_on(port: u16, clock: Arc<dyn Clock>) -> Self {
        Self::start_with_ssh_settings(port, clock, "").await
    }

    /// Starts a collector whose `[ssh]` section also has `ssh_lines`
    /// (TOML key = value lines).
    #[allow(clippy::await_holding_lock)]
    pub async fn start_with_ssh_settings(port: u16, clock: Arc<dyn Clock>, ssh_lines: &str) -> Self {
        Self::start_edited(port, clock, |mut base| {
            if ssh_lines.contains("auth_timeout_secs") {
                // The caller's own deadline replaces the default one.
                base = base.replace("auth_timeout_secs = 20\n", "");
            }
            // [ssh] is the last table, so these lines land in it.
            format!("{base}{ssh_lines}\n")
        })
        .await
    }

    /// Starts a collector whose `[admin]` table also has `admin_lines`
    /// (TOML key = value lines).
    pub async fn start_with_admin_settings(admin_lines: &str) -> Self {
        Self::start_edited(0, Arc::new(SystemClock), |base| {
            base.replace("[admin]\n", &format!("[admin]\n{admin_lines}\n"))
        })
        .await
    }

    /// Starts a collector with the shipped privacy defaults (no
    /// [`REAL_MACS`] table).
    pub async fn start_with_default_privacy() -> Self {
        Self::start_edited(0, Arc::new(SystemClock), |base| base.replace(REAL_MACS, "")).await
    }

    /// Starts a collector whose config ends with `tables` (whole TOML
    /// tables, such as a `[control]` section), with the master key file
    /// `master` when given (collectors sharing a control plane share one
    /// master key) or a new one.
    pub async fn start_with_tables(master: Option<&Path>, tables: &str) -> Self {
        Self::start_with_master(0, Arc::new(SystemClock), master, |base| format!("{base}{tables}\n")).await
    }

    /// [`TestCollector::start_with_tables`] with an injected clock.
    pub async fn start_with_tables_at(master: Option<&Path>, tables: &str, clock: Arc<dyn Clock>) -> Self {
        Self::start_with_master(0, clock, master, |base| format!("{base}{tables}\n")).await
    }

    /// Starts a collector with the config text [`collector_toml`] makes,
    /// changed by `edit`.
    async fn start_edited(port: u16, clock: Arc<dyn Clock>, edit: impl FnOnce(String) -> String) -> Self {
        Self::start_with_master(port, clock, None, edit).await
    }

    #[allow(clippy::await_holding_lock)]
    async fn start_with_master(
        port: u16,
        clock: Arc<dyn Clock>,
        shared_master: Option<&Path>,
        edit: impl FnOnce(String) -> String,
    ) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let master = match shared_master {
            Some(path) => path.to_path_buf(),
            None => {
                let path = dir.path().join("master.key");
                MasterKey::generate_file(&path).expect("master key");
                path
            }
        };
        let config_path = dir.path().join("collector.toml");
        let text = edit(collector_toml(&dir.path().join("data"), &master, port));
        std::fs::write(&config_path, text).expect("write config");
        let config = CollectorConfig::load(&config_path).expect("load config");
        let collector = {
            // Registrations are imported at start; keep issuers out meanwhile.
            let _guard = pki().lock();
            Collector::start_with_clock(config.clone(), clock).await.expect("collector starts")
        };
        Self { collector, config, _dir: dir }
    }

    /// Where agents connect.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.collector.local_addr()
    }

    /// Where switches and gateways connect over SSH.
    pub fn ssh_addr(&self) -> std::net::SocketAddr {
        self.collector.ssh_addr().expect("SSH enabled in test collectors")
    }

    /// The SSH host key fingerprint agents pin.
    pub fn ssh_fingerprint(&self) -> String {
        self.collector.ssh_host_key_fingerprint().expect("SSH enabled").to_owned()
    }

    /// Records stored for one device, across the metadata kind.
    pub fn stored_records_of(&self, identity: &DeviceIdentity) -> usize {
        let store = self.collector.store();
        match store.read(&identity.org, glimpse_common::record::DataKind::Metadata, None, None) {
            Ok(outcome) => outcome.records.iter().filter(|r| r.device == identity.device).count(),
            Err(_) => 0,
        }
    }

    /// Stops the collector (draining) and keeps its directory, for the
    /// offline tools: returns the directory and the config file's path.
    pub async fn stop_keeping_files(self) -> (TempDir, PathBuf) {
        let TestCollector { collector, config: _, _dir } = self;
        collector.shutdown().await;
        let config = _dir.path().join("collector.toml");
        (_dir, config)
    }

    /// The config file this collector was started with.
    pub fn config_path(&self) -> PathBuf {
        self._dir.path().join("collector.toml")
    }

    /// Every file under the data directory, as bytes (for plaintext checks).
    pub fn data_files(&self) -> Vec<(PathBuf, Vec<u8>)> {
        let mut out = Vec::new();
        let mut stack = vec![self.config.data_dir.clone()];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                } else if let Ok(bytes) = std::fs::read(&path) {
                    out.push((path, bytes));
                }
            }
        }
        out
    }
}

/// A copy of the agent's OpenWrt access-point fixture tree whose hostname
/// is `hostname`, for checks that need a distinctive value to look for.
pub fn ap_sysroot(hostname: &str) -> TempDir {
    fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(to)?;
        for entry in std::fs::read_dir(from)? {
            let entry = entry?;
            let target = to.join(entry.file_name());
            let kind = entry.file_type()?;
            if kind.is_symlink() {
                std::os::unix::fs::symlink(std::fs::read_link(entry.path())?, &target)?;
            } else if kind.is_dir() {
                copy_tree(&entry.path(), &target)?;
            } else {
                std::fs::copy(entry.path(), &target)?;
            }
        }
        Ok(())
    }
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../agent/tests/fixtures/probe/openwrt-ap");
    let dir = tempfile::tempdir().expect("tempdir");
    copy_tree(&fixture, dir.path()).expect("copy fixture tree");
    std::fs::write(dir.path().join("proc/sys/kernel/hostname"), format!("{hostname}\n")).expect("hostname");
    dir
}

/// An agent config for `device` pointed at `collector`, collecting every
/// 50 ms from `sysroot`.
pub fn agent_config_with_sysroot(collector: std::net::SocketAddr, device: &Device, sysroot: &Path) -> AgentConfig {
    let mut config = agent_config(collector, device);
    config.sysroot = sysroot.to_owned();
    config
}

/// The `agent.toml` text for `device` with `link` (its `[collector]` and
/// `[tls]` or `[ssh]` sections), collecting every 50 ms, with its spool and
/// consent file beside its certificate.
fn agent_toml_with(device: &Device, link: &str) -> String {
    format!(
        "[device]\norg = \"{org}\"\nid = \"{id}\"\nkind = \"{kind}\"\n\
         {link}\
         [collect]\ninterval_secs = 0.05\nsysroot = \"/\"\n\
         [transport]\nbackoff_initial_ms = 50\nbackoff_max_secs = 1\nconnect_timeout_secs = 10\n\
         [capture]\nconsent_file = {consent:?}\n\
         [spool]\npath = {spool:?}\nsync_interval_ms = 50\n",
        org = device.identity.org,
        id = device.identity.device,
        kind = device.identity.kind,
        spool = device.cert.with_file_name("spool"),
        consent = device.cert.with_file_name("capture-consent"),
    )
}

/// The `agent.toml` text for `device` pointed at `collector` over TLS.
pub fn agent_toml(collector: std::net::SocketAddr, device: &Device) -> String {
    let link = format!(
        "[collector]\naddress = \"{collector}\"\nserver_name = \"localhost\"\n\
         [tls]\nca = {ca:?}\ncert = {cert:?}\nkey = {key:?}\nshared_key = {psk:?}\n",
        ca = glimpse_certs::ca_cert_path(&pki().ours),
        cert = device.cert,
        key = device.key,
        psk = device.shared_key,
    );
    agent_toml_with(device, &link)
}

/// The `agent.toml` text for `device` pointed at several collectors over
/// TLS (`collector.addresses`), with `server_name` if given (without it,
/// each collector is checked against its own host).
pub fn agent_toml_for_collectors(addresses: &[String], server_name: Option<&str>, device: &Device) -> String {
    let listed: Vec<String> = addresses.iter().map(|a| format!("{a:?}")).collect();
    let server_name = server_name.map(|name| format!("server_name = {name:?}\n")).unwrap_or_default();
    let link = format!(
        "[collector]\naddresses = [{listed}]\n{server_name}\
         [tls]\nca = {ca:?}\ncert = {cert:?}\nkey = {key:?}\nshared_key = {psk:?}\n",
        listed = listed.join(", "),
        ca = glimpse_certs::ca_cert_path(&pki().ours),
        cert = device.cert,
        key = device.key,
        psk = device.shared_key,
    );
    agent_toml_with(device, &link)
}

/// An agent config for `device` pointed at several collectors
/// ([`agent_toml_for_collectors`]), collecting every 50 ms.
pub fn agent_config_for_collectors(addresses: &[String], server_name: Option<&str>, device: &Device) -> AgentConfig {
    let text = agent_toml_for_collectors(addresses, server_name, device);
    AgentConfig::parse(&text, Path::new("test-agent.toml"), Path::new("/")).expect("agent config")
}

/// An agent config for `device` pointed at `collector`, collecting every 50 ms.
pub fn agent_config(collector: std::net::SocketAddr, device: &Device) -> AgentConfig {
    AgentConfig::parse(&agent_toml(collector, device), Path::new("test-agent.toml"), Path::new("/"))
        .expect("agent config")
}

/// An SSH agent config for switch or gateway `device`, pinning
/// `fingerprint` as the collector's host key.
pub fn ssh_agent_config(ssh: std::net::SocketAddr, fingerprint: &str, device: &Device) -> AgentConfig {
    let link = format!(
        "[collector]\naddress = \"{ssh}\"\ntransport = \"ssh\"\n\
         [ssh]\nkey = {key:?}\nhost_key_fingerprint = \"{fingerprint}\"\n",
        key = device.ssh_key.as_ref().expect("an SSH device"),
    );
    AgentConfig::parse(&agent_toml_with(device, &link), Path::new("test-agent.toml"), Path::new("/"))
        .expect("SSH agent config")
}

/// Starts an agent for `device`.
pub fn start_agent(collector: std::net::SocketAddr, device: &Device) -> AgentHandle {
    AgentHandle::spawn(agent_config(collector, device)).expect("agent starts")
}

/// Waits until the agent's status satisfies `done`, or fails the test.
pub async fn wait_for_status(agent: &AgentHandle, what: &str, done: impl Fn(&AgentStatus) -> bool) -> AgentStatus {
    let mut rx = agent.status();
    let result = tokio::time::timeout(DEADLINE, rx.wait_for(|s| done(s))).await.map(|r| r.map(|s| s.clone()));
    match result {
        Ok(Ok(status)) => status,
        _ => panic!("timed out waiting for {what}; last status {:?}", *agent.status().borrow()),
    }
}

/// Waits until `check` is true, polling, or fails the test.
pub async fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A raw mutual-TLS client with `device`'s certificate (trusting our CA),
/// for sending arbitrary bytes.
pub async fn raw_tls(
    collector: std::net::SocketAddr,
    cert: &Path,
    key: &Path,
) -> std::io::Result<TlsStream<TcpStream>> {
    let ca = load_certs(&glimpse_certs::ca_cert_path(&pki().ours)).expect("ca").remove(0);
    let config = client_config(&ca, load_certs(cert).expect("cert"), load_key(key).expect("key"), false).expect("tls");
    raw_tls_with(collector, Arc::new(config)).await
}

/// A raw TLS client with an arbitrary rustls config.
pub async fn raw_tls_with(
    collector: std::net::SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(collector).await?;
    let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
    tokio_rustls::TlsConnector::from(config).connect(name, tcp).await
}

/// Installs a test log subscriber once (RUST_LOG controls it).
pub fn init_logging() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
            )
            .with_test_writer()
            .try_init();
    });
}

/// One connection attempt with `device`'s credentials, through the agent's
/// real transport (TLS, Hello, shared-key proof, Welcome).
pub async fn try_connect(
    collector: std::net::SocketAddr,
    device: &Device,
) -> Result<glimpse_agent::transport::Connection, glimpse_agent::transport::TransportError> {
    try_connect_with(agent_config(collector, device)).await
}

/// One connection attempt with an explicit agent config.
pub async fn try_connect_with(
    config: AgentConfig,
) -> Result<glimpse_agent::transport::Connection, glimpse_agent::transport::TransportError> {
    let credentials = glimpse_agent::transport::Credentials::load(&config)?;
    glimpse_agent::transport::Connection::open(&config, &credentials, 1).await
}

/// A port on 127.0.0.1 that was free a moment ago (for starting a collector
/// after its agents).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}
pub mod browser;
pub mod disk;
pub mod garage;
pub mod postgres;
pub mod processes;
pub mod traffic;

pub use processes::{identify, CollectorFiles, Process};

/// Issues an admin certificate in our PKI and returns credentials for the
/// collector's admin API.
pub fn issue_admin(
    collector: &TestCollector,
    role: glimpse_common::identity::AdminRole,
    org: Option<&str>,
) -> glimpse_admin_client::AdminCredentials {
    issue_admin_in(&pki().ours, collector, role, org)
}

/// Issues an admin certificate from the PKI in `pki_dir` (ours, or the
/// foreign one the collector must refuse) for talking to `collector`.
pub fn issue_admin_in(
    pki_dir: &Path,
    collector: &TestCollector,
    role: glimpse_common::identity::AdminRole,
    org: Option<&str>,
) -> glimpse_admin_client::AdminCredentials {
    use glimpse_common::identity::{AdminIdentity, AdminName};
    let name = AdminName::new(format!("admin-{}", unique_device("x"))).expect("name");
    let identity = AdminIdentity::new(name, role, org.map(|o| OrgId::new(o).expect("org"))).expect("identity");
    let files = {
        let _guard = pki().lock();
        glimpse_certs::issue_admin(pki_dir, &identity, &glimpse_certs::Validity::default(), false).expect("admin")
    };
    glimpse_admin_client::AdminCredentials {
        address: collector.collector.admin_addr().expect("admin API enabled").to_string(),
        server_name: "localhost".into(),
        ca: glimpse_certs::ca_cert_path(&pki().ours),
        cert: files.cert,
        key: files.key,
        token: None,
    }
}

/// Credentials that present `token` instead of a certificate.
pub fn token_credentials(collector: &TestCollector, token: &str) -> glimpse_admin_client::AdminCredentials {
    glimpse_admin_client::AdminCredentials {
        address: collector.collector.admin_addr().expect("admin API enabled").to_string(),
        server_name: "localhost".into(),
        ca: glimpse_certs::ca_cert_path(&pki().ours),
        cert: PathBuf::new(),
        key: PathBuf::new(),
        token: Some(token.to_owned()),
    }
}

/// An HTTPS client of the collector's admin API for `credentials`.
pub async fn api_client(credentials: &glimpse_admin_client::AdminCredentials) -> glimpse_admin_client::ApiClient {
    glimpse_admin_client::ApiClient::new(credentials).await.expect("API client")
}

/// An HTTPS client of the collector's admin API with no credential.
pub async fn anonymous_api(collector: &TestCollector) -> glimpse_admin_client::ApiClient {
    let address = collector.collector.admin_addr().expect("admin API enabled").to_string();
    glimpse_admin_client::ApiClient::anonymous(&address, "localhost", &glimpse_certs::ca_cert_path(&pki().ours))
        .await
        .expect("API client")
}

/// Sets `org`'s capture consent as an operator would, through the
/// collector's admin checks and audit log (tests of the admin API itself
/// go through the network instead).
pub fn set_consent(collector: &TestCollector, org: &OrgId, capture: bool) {
    use glimpse_common::identity::{AdminIdentity, AdminName, AdminRole};
    use glimpse_common::wire::admin::{AdminAction, AdminReply};
    let operator = AdminIdentity::new(AdminName::new("test-operator").expect("name"), AdminRole::Operator, None)
        .expect("identity");
    let reply =
        collector.collector.admin_context().act(&operator, AdminAction::SetConsent { org: org.clone(), capture });
    assert!(matches!(reply, AdminReply::ConsentSet { .. }), "{reply:?}");
}

/// Chooses, as an operator through the admin actions (audited), whether
/// `org` keeps its Wi-Fi stations' identities (location history).
pub fn set_location_history(collector: &TestCollector, org: &OrgId, keep: bool) {
    use glimpse_common::identity::{AdminIdentity, AdminName, AdminRole};
    use glimpse_common::wire::admin::{AdminAction, AdminReply};
    let operator = AdminIdentity::new(AdminName::new("test-operator").expect("name"), AdminRole::Operator, None)
        .expect("identity");
    let reply =
        collector.collector.admin_context().act(&operator, AdminAction::SetLocationHistory { org: org.clone(), keep });
    assert!(matches!(reply, AdminReply::LocationHistorySet { keep: k, .. } if k == keep), "{reply:?}");
}

/// Chooses, as an operator through the admin actions (audited), whether
/// `org`'s gateways report WAN destinations.
pub fn set_wan_destinations(collector: &TestCollector, org: &OrgId, on: bool) {
    use glimpse_common::identity::{AdminIdentity, AdminName, AdminRole};
    use glimpse_common::wire::admin::{AdminAction, AdminReply};
    let operator = AdminIdentity::new(AdminName::new("test-operator").expect("name"), AdminRole::Operator, None)
        .expect("identity");
    let reply =
        collector.collector.admin_context().act(&operator, AdminAction::SetWanDestinations { org: org.clone(), on });
    assert!(matches!(reply, AdminReply::WanDestinationsSet { on: o, .. } if o == on), "{reply:?}");
}

/// Every capture record stored for `org` (within retention); a damaged
/// segment fails the test.
pub fn stored_captures(collector: &TestCollector, org: &OrgId) -> Vec<glimpse_common::capture::CapturedPacket> {
    let outcome =
        collector.collector.store().read(org, glimpse_common::record::DataKind::Capture, None, None).expect("read");
    assert!(outcome.problems.is_empty(), "{:?}", outcome.problems);
    outcome
        .records
        .into_iter()
        .filter_map(|r| match r.record.body {
            glimpse_common::record::RecordBody::Capture(p) => Some(p),
            _ => None,
        })
        .collect()
}

/// A copy of `key` in `dir` readable by its owner only, as OpenSSH insists.
pub fn private_copy(dir: &Path, key: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let copy = dir.join(key.file_name().map_or_else(|| "id".into(), |n| format!("{}.private", n.to_string_lossy())));
    std::fs::copy(key, &copy).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o600)).unwrap();
    copy
}

/// Runs the OpenSSH client (`ssh`, Debian's openssh-client) against the
/// collector's SSH port at `addr` with `key` as `user`: no config file, no
/// agent, no known-hosts check, `options` and then `command_line`, `stdin`
/// written in. Blocking: call it off the runtime (`block_in_place`).
pub fn openssh(
    addr: std::net::SocketAddr,
    key: &Path,
    user: &str,
    options: &[&str],
    command_line: &[&str],
    stdin: &[u8],
) -> std::process::Output {
    let mut command = std::process::Command::new("ssh");
    command
        .args(["-F", "/dev/null", "-i"])
        .arg(key)
        .args([
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "ConnectTimeout=20",
            "-p",
            &addr.port().to_string(),
            "-l",
            user,
        ])
        .args(options)
        .arg(addr.ip().to_string())
        .args(command_line)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = command.spawn().expect("OpenSSH client `ssh` (Debian package openssh-client) is installed");
    {
        use std::io::Write;
        let mut input = child.stdin.take().unwrap();
        let _ = input.write_all(stdin);
    }
    child.wait_with_output().unwrap()
}

/// Sends a request and returns the status and the body as JSON (`Null`
/// when empty or not JSON), checking that every error is a problem
/// document.
pub async fn api_call(
    client: &glimpse_admin_client::ApiClient,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> (reqwest::StatusCode, serde_json::Value) {
    let mut request = client.request(method.clone(), path);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let status = response.status();
    let content_type =
        response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let bytes = response.bytes().await.expect("body");
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    if !status.is_success() {
        assert_eq!(content_type, "application/problem+json", "{method} {path} -> {status}: {bytes:?}");
        assert_eq!(json["status"].as_u64(), Some(u64::from(status.as_u16())), "{json}");
        assert!(json["code"].as_str().is_some_and(|c| !c.is_empty()), "{json}");
        assert!(json["type"].as_str().is_some_and(|t| t.starts_with("urn:glimpse:problem:")), "{json}");
    }
    (status, json)
}

/// RFC 4648 base32 (no padding) back to bytes, as an authenticator app
/// reads the secret.
pub fn base32_decode(text: &str) -> Vec<u8> {
    let (mut out, mut buffer, mut bits) = (Vec::new(), 0u32, 0u32);
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'2'..=b'7' => c - b'2' + 26,
            _ => panic!("not base32: {c}"),
        };
        buffer = (buffer << 5) | u32::from(v);
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    out
}

/// The code an authenticator app shows for `key` at `now_ms`.
pub fn totp_code_for(key: &[u8], now_ms: i64) -> String {
    use glimpse_collector::api::console::totp;
    totp::format_code(totp::code_at(key, totp::step_of(now_ms) as u64))
}

/// The password of the console accounts tests make.
pub const CONSOLE_PASSWORD: &str = "a long enough passphrase";

/// Makes a console account on `tc` with [`CONSOLE_PASSWORD`], as
/// `glimpse-collector account add` would.
pub fn add_console_account(
    tc: &TestCollector,
    name: &str,
    role: glimpse_common::identity::AdminRole,
    org: Option<&str>,
) {
    use glimpse_common::identity::{AdminIdentity, AdminName};
    let console = tc.collector.api().and_then(|api| api.console.clone()).expect("console enabled");
    let identity =
        AdminIdentity::new(AdminName::new(name).expect("name"), role, org.map(|o| OrgId::new(o).expect("org")))
            .expect("identity");
    let now = tc.collector.store().clock().now_millis();
    console.accounts.create(&identity, CONSOLE_PASSWORD, "test", now).expect("account created");
}

/// Copies the directory tree `from` to `to` (test fixtures).
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read fixture dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy fixture");
        }
    }
}

/// Every field path (`record.wireless.stations[].mac`) that the field
/// reference, `docs/FIELDS.md`, lists for `kinds` equals the set export
/// printed in `lines`.
pub fn assert_field_reference_lists_exactly(lines: &[serde_json::Value], kinds: &[&str]) {
    let reference_path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/FIELDS.md");
    let reference = std::fs::read_to_string(&reference_path)
        .unwrap_or_else(|e| panic!("the field reference {}: {e}", reference_path.display()));
    for kind in kinds {
        let prefix = format!("record.{kind}");
        let documented: std::collections::BTreeSet<String> = reference
            .lines()
            .filter_map(|line| line.strip_prefix("| `"))
            .filter_map(|rest| rest.split_once('`').map(|(path, _)| path.to_owned()))
            .filter(|path| path == &prefix || path.starts_with(&format!("{prefix}.")))
            .collect();
        let mut printed = std::collections::BTreeSet::new();
        for line in lines {
            if let Some(body) = line["record"].get(*kind) {
                leaf_paths(body, &prefix, &mut printed);
            }
        }
        assert!(!printed.is_empty(), "no {kind} record exported");
        let undocumented: Vec<_> = printed.difference(&documented).collect();
        let unprinted: Vec<_> = documented.difference(&printed).collect();
        assert!(
            undocumented.is_empty() && unprinted.is_empty(),
            "docs/FIELDS.md and export differ for {kind}: not in docs/FIELDS.md {undocumented:?}; in docs/FIELDS.md but never printed {unprinted:?}"
        );
    }
}

/// Paths to every scalar in `value` (arrays as `[]`; an array of scalars is
/// itself a leaf; null counts as a leaf; an empty array says nothing about
/// what its items hold, so it adds no path).
fn leaf_paths(value: &serde_json::Value, path: &str, out: &mut std::collections::BTreeSet<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, child) in map {
                leaf_paths(child, &format!("{path}.{key}"), out);
            }
        }
        serde_json::Value::Array(items) if items.is_empty() => {}
        serde_json::Value::Array(items) if items.iter().any(|i| i.is_object()) => {
            for item in items {
                leaf_paths(item, &format!("{path}[]"), out);
            }
        }
        _ => {
            out.insert(path.to_owned());
        }
    }
}

/// Every audit entry of `org`, paged through the admin API as `who` (an
/// operator, or the organisation's admin).
pub async fn audit_of(
    who: &glimpse_admin_client::AdminCredentials,
    org: &OrgId,
) -> Vec<glimpse_common::wire::admin::AuditRecord> {
    use glimpse_common::wire::admin::{AdminAction, AdminReply, AuditRecord, MAX_AUDIT_PAGE};
    let mut all = Vec::new();
    loop {
        let after_seq = all.last().map_or(0, |e: &AuditRecord| e.seq);
        let action = AdminAction::ShowAudit { org: Some(org.clone()), after_seq };
        match glimpse_admin_client::admin_request(who, action).await.expect("admin API answers") {
            AdminReply::AuditEntries(page) => {
                all.extend(page.iter().cloned());
                // A short page is the end of the log as it was when read
                // (every read is audited too, so the log keeps growing).
                if page.len() < MAX_AUDIT_PAGE {
                    return all;
                }
            }
            other => panic!("{other:?}"),
        }
    }
}
