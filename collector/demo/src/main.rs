//! `glimpse-demo`: the whole Glimpse system on one machine in one command.
//!
//! Creates (or reuses) a directory holding a PKI, a master key, a collector
//! config and one agent config per device; starts a collector and the agents
//! on 127.0.0.1 (access points over real mutual TLS, one switch and one
//! gateway per organisation over SSH); streams for a while; has one access
//! point send a header-only packet capture (a replayed file whose payloads
//! carry a marker, see [`traffic`]); then prints what was stored and how to
//! look at it. Everything it leaves behind works with
//! `glimpse-collector serve`, `glimpse-agent run` and `glimpse-collector export`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use glimpse_agent::{AgentConfig, AgentHandle};
use glimpse_common::clock::{Clock, SystemClock};
use glimpse_common::identity::{DeviceId, DeviceIdentity, DeviceKind, OrgId};
use glimpse_common::record::{DataKind, RecordBody};

mod devices;
mod traffic;

use glimpse_collector::config::CollectorConfig;
use glimpse_collector::service::Collector;
use glimpse_store::keys::MasterKey;

/// Glimpse demo: runs the whole system on this machine. Creates (or reuses)
/// a PKI, a master key and configs in --dir, starts a collector and agents
/// on 127.0.0.1 (access points over mutual TLS, a switch and a gateway per
/// organisation over SSH), streams, has one access point send a header-only
/// capture, and prints what was stored and how to look at it.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "glimpse-demo", version, long_version = glimpse_files::long_version!(), about, long_about)]
struct DemoOptions {
    #[command(flatten)]
    log: glimpse_files::logging::LogArgs,
    /// Directory for the PKI, configs and data (reused if it exists).
    #[arg(long, default_value = "glimpse-demo")]
    dir: PathBuf,
    /// Number of access-point agents, spread over two organisations.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=1000))]
    agents: u16,
    /// How long to stream, in seconds.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    seconds: u64,
    /// Port to listen on (an ephemeral one is used if it is busy).
    #[arg(long, default_value_t = 7443)]
    port: u16,
}

fn main() -> std::process::ExitCode {
    use clap::Parser;

    let options = DemoOptions::parse();
    // The demo prints its own summary; keep the log to problems. A demo host
    // has no device tree or DMI model: worth one line on a device, noise here.
    glimpse_files::logging::init(
        &options.log,
        &glimpse_files::logging::LogConfig::default(),
        "warn,glimpse_agent::probe=error",
    );
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            // EX_OSERR
            return std::process::ExitCode::from(71);
        }
    };
    match runtime.block_on(run(options)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            // EX_SOFTWARE: the demo takes no input that could be wrong.
            std::process::ExitCode::from(70)
        }
    }
}

const ORGS: [&str; 2] = ["acme", "globex"];

/// The operator the demo issues an admin certificate for.
const DEMO_OPERATOR: &str = "demo-operator";

fn device_identities(agents: usize) -> Vec<DeviceIdentity> {
    (0..agents)
        .map(|i| {
            let org = ORGS[i % ORGS.len()];
            DeviceIdentity {
                org: OrgId::new(org).expect("constant organisation names are valid"),
                device: DeviceId::new(format!("ap-{}", i / ORGS.len() + 1)).expect("generated device ids are valid"),
                kind: DeviceKind::Ap,
            }
        })
        .collect()
}

/// One switch and one gateway per organisation, which connect over SSH.
fn ssh_identities() -> Vec<DeviceIdentity> {
    ORGS.iter()
        .flat_map(|org| {
            let org = OrgId::new(*org).expect("constant organisation names are valid");
            [(DeviceKind::Switch, "sw-1"), (DeviceKind::Gateway, "gw-1")].map(|(kind, id)| DeviceIdentity {
                org: org.clone(),
                device: DeviceId::new(id).expect("constant device ids are valid"),
                kind,
            })
        })
        .collect()
}

fn agent_config_path(dir: &Path, identity: &DeviceIdentity) -> PathBuf {
    dir.join("agents").join(format!("{}-{}.toml", identity.org, identity.device))
}

/// A device's PKI directory as the agent configs name it (relative to `agents/`).
fn device_rel(identity: &DeviceIdentity) -> String {
    format!("../pki/devices/{}/{}", identity.org, identity.device)
}

/// Writes an agent config unless one exists: `link` is its `[collector]`
/// and `[tls]` or `[ssh]` sections; the rest is the same for every device.
fn write_agent_config(config_path: &Path, identity: &DeviceIdentity, link: &str) -> anyhow::Result<()> {
    if config_path.exists() {
        return Ok(());
    }
    let dir = config_path.parent().and_then(Path::parent).unwrap_or(Path::new("."));
    let probes = devices::probe_sections(dir, identity.kind)?;
    let text = format!(
        "# Agent config for {identity}, written by `glimpse-demo`.\n\
         [device]\norg = \"{org}\"\nid = \"{dev}\"\nkind = \"{kind}\"\nname = \"{org} {dev}\"\n\n\
         [device.location]\nsite = \"{org} HQ\"\nfloor = \"2\"\n\n\
         {link}\
         [collect]\ninterval_secs = 1\nsysroot = \"/\"\n\n\
         {probes}\
         [capture]\nconsent_file = \"state/{org}-{dev}.capture-consent\"\n\n\
         [spool]\npath = \"state/{org}-{dev}.spool\"\n",
        org = identity.org,
        dev = identity.device,
        kind = identity.kind,
    );
    std::fs::write(config_path, text).with_context(|| format!("writing {}", config_path.display()))
}

/// Gives an agent config from an older demo run its own spool file (they
/// would otherwise share the default one, which the spool refuses).
fn add_spool_section(config_path: &Path, identity: &DeviceIdentity) -> anyhow::Result<()> {
    let Ok(text) = std::fs::read_to_string(config_path) else { return Ok(()) };
    if text.contains("[spool]") {
        return Ok(());
    }
    let text = format!("{text}\n[spool]\npath = \"state/{}-{}.spool\"\n", identity.org, identity.device);
    std::fs::write(config_path, text).with_context(|| format!("updating {}", config_path.display()))
}

/// One line per device kind about the latest report of that kind.
fn print_device_kind_reports(records: &[glimpse_store::store::StoredRecord]) {
    let counters = records.iter().filter(|r| matches!(r.record.body, RecordBody::Counters(_))).count();
    if counters > 0 {
        println!("            {counters} interval counter records (deltas and rates per interface)");
    }
    let latest = |pick: fn(&RecordBody) -> bool| records.iter().rev().find(|r| pick(&r.record.body));
    if let Some(r) = latest(|b| matches!(b, RecordBody::Wireless(_))) {
        if let RecordBody::Wireless(w) = &r.record.body {
            let users: Vec<&str> = w.stations.iter().map(|s| s.username.as_str()).filter(|u| !u.is_empty()).collect();
            // Without location history (the default) stations are stored
            // unlinked: no usernames to show, and that is the point.
            let who = if users.is_empty() {
                "unlinked: the organisation keeps no location history".to_owned()
            } else {
                format!("users: {}", users.join(", "))
            };
            println!(
                "            latest Wi-Fi report from {} at {:?}: {} radios, {} stations ({who})",
                r.device,
                w.device.location.site.as_str(),
                w.radios.len(),
                w.stations.len(),
            );
        }
    }
    if let Some(r) = latest(|b| matches!(b, RecordBody::Wired(_))) {
        if let RecordBody::Wired(w) = &r.record.body {
            let neighbours: Vec<&str> = w.neighbours.iter().map(|n| n.system_name.as_str()).collect();
            println!(
                "            latest wired report from {}: {} ports with VLANs, {} learned hosts, LLDP neighbours: {}",
                r.device,
                w.ports.len(),
                w.hosts.len(),
                neighbours.join(", ")
            );
        }
    }
    if let Some(r) = latest(|b| matches!(b, RecordBody::Wan(_))) {
        if let RecordBody::Wan(w) = &r.record.body {
            let apps: Vec<&str> = w.applications.iter().map(|a| a.application.as_str()).collect();
            println!(
                "            latest WAN report from {}: {} sessions open, applications: {}",
                r.device,
                w.active_sessions,
                apps.join(", ")
            );
        }
    }
}

/// Creates what is missing: PKI, master key, devices, configs.
fn prepare(options: &DemoOptions) -> anyhow::Result<()> {
    let dir = &options.dir;
    let pki = dir.join("pki");
    std::fs::create_dir_all(dir.join("agents/state")).with_context(|| format!("creating {}", dir.display()))?;
    if !glimpse_certs::ca_cert_path(&pki).exists() {
        println!("creating PKI in {} (RSA-4096 root CA; takes a few seconds)", pki.display());
        glimpse_certs::init(&pki, &glimpse_certs::InitOptions::default())?;
    }
    let master = dir.join("master.key");
    if !master.exists() {
        MasterKey::generate_file(&master)?;
    }
    // An operator certificate, so the admin commands work on what the demo
    // leaves behind.
    let operator = glimpse_common::identity::AdminName::new(DEMO_OPERATOR)?;
    if !glimpse_certs::admin_dir(&pki, &operator).join("admin.pem").exists() {
        let identity = glimpse_common::identity::AdminIdentity::new(
            operator,
            glimpse_common::identity::AdminRole::Operator,
            None,
        )?;
        glimpse_certs::issue_admin(&pki, &identity, &glimpse_certs::Validity::default(), false)?;
    }
    for identity in device_identities(usize::from(options.agents)) {
        let device_dir = glimpse_certs::device_dir(&pki, &identity.org, &identity.device);
        if !device_dir.join("device.pem").exists() {
            glimpse_certs::issue_device(&pki, &identity, &glimpse_certs::Validity::default(), false)?;
        }
        let config_path = agent_config_path(dir, &identity);
        add_spool_section(&config_path, &identity)?;
        let rel = device_rel(&identity);
        let link = format!(
            "[collector]\naddress = \"127.0.0.1:{port}\"\nserver_name = \"localhost\"\n\n\
             [tls]\nca = \"../pki/ca.pem\"\ncert = \"{rel}/device.pem\"\nkey = \"{rel}/device.key\"\nshared_key = \"{rel}/device.psk\"\n\n",
            port = options.port,
        );
        write_agent_config(&config_path, &identity, &link)?;
    }
    let collector_toml = dir.join("collector.toml");
    if !collector_toml.exists() {
        let text = format!(
            "# Collector config written by `glimpse-demo`.\n\
             listen = \"127.0.0.1:{port}\"\ndata_dir = \"data\"\nmaster_key_file = \"master.key\"\npki_dir = \"pki\"\n\n\
             [tls]\nca = \"pki/ca.pem\"\ncert = \"pki/collector.pem\"\nkey = \"pki/collector.key\"\ncrl = \"pki/ca.crl.pem\"\n\n\
             [retention]\ncapture_days = 7\nmetadata_days = 60\n\n\
             [admin]\nlisten = \"127.0.0.1:{admin_port}\"\n\n\
             [ssh]\nlisten = \"127.0.0.1:{ssh_port}\"\n",
            port = options.port,
            admin_port = options.port.saturating_add(1),
            ssh_port = options.port.saturating_add(2),
        );
        std::fs::write(&collector_toml, text).with_context(|| format!("writing {}", collector_toml.display()))?;
    }
    // Switches and gateways pin the collector's SSH host key, so it is made
    // now, before their configs are written.
    let Some(ssh) = CollectorConfig::load(&collector_toml)?.ssh else {
        return Ok(());
    };
    let fingerprint = glimpse_collector::ingest::ssh::host_key_fingerprint(
        &glimpse_collector::ingest::ssh::host_key::load_or_create(&ssh.host_key)?,
    );
    for identity in ssh_identities() {
        let device_dir = glimpse_certs::device_dir(&pki, &identity.org, &identity.device);
        if !device_dir.join("device.pem").exists() {
            glimpse_certs::issue_device(&pki, &identity, &glimpse_certs::Validity::default(), false)?;
        }
        let rel = device_rel(&identity);
        let link = format!(
            "[collector]\naddress = \"{ssh_addr}\"\ntransport = \"ssh\"\n\n\
             [ssh]\nkey = \"{rel}/ssh_ed25519_key\"\nhost_key_fingerprint = \"{fingerprint}\"\n\n",
            ssh_addr = ssh.listen,
        );
        write_agent_config(&agent_config_path(dir, &identity), &identity, &link)?;
    }
    Ok(())
}

/// Has `identity`'s agent replay the demo traffic file: the same
/// header-only truncation, batching and mutually authenticated transport as
/// a live capture, without needing capture privileges.
async fn demo_capture(dir: &Path, identity: &DeviceIdentity, collector: &Collector) -> anyhow::Result<()> {
    use glimpse_common::identity::{AdminIdentity, AdminName, AdminRole};
    use glimpse_common::wire::admin::{AdminAction, AdminReply};

    // The demo acts as the organisation's admin giving capture consent,
    // through the same checks and audit log as `glimpse-collector admin consent`.
    let admin = AdminIdentity::new(AdminName::new("demo")?, AdminRole::OrgAdmin, Some(identity.org.clone()))?;
    let context = collector.admin_context();
    let action = AdminAction::SetConsent { org: identity.org.clone(), capture: true };
    match tokio::task::spawn_blocking(move || context.act(&admin, action)).await? {
        AdminReply::ConsentSet { .. } => println!("{}: capture consent given (audited)", identity.org),
        other => anyhow::bail!("consent not given: {other:?}"),
    }
    let pcap = dir.join("demo-traffic.pcap");
    let written = traffic::write_demo_pcap(&pcap, SystemClock.now_millis().saturating_mul(1000))
        .with_context(|| format!("writing {}", pcap.display()))?;
    let mut config = AgentConfig::load(&agent_config_path(dir, identity))?;
    config.collectors = vec![collector.local_addr().into()];
    let report = glimpse_agent::replay::replay(&config, &pcap, "wlan0").await?;
    println!(
        "packet capture: {identity} sent {} of {written} packets from {} (HTTP, DNS, ICMP, IPv6; payloads carry {:?}): \
         {} header bytes kept, {} payload bytes cut on the device, {} capture records acknowledged",
        report.tally.packets_kept,
        pcap.display(),
        String::from_utf8_lossy(traffic::DEMO_PAYLOAD_MARKER),
        report.tally.header_bytes,
        report.tally.bytes_cut,
        report.records,
    );
    Ok(())
}

/// The console account the demo makes, an operator.
const DEMO_CONSOLE_ACCOUNT: &str = "demo";

/// The console account of acme's admin the demo makes (same password):
/// operators read an organisation's data only under its support grant, so
/// the device charts, captures and exports are seen as acme's admin (or
/// as the operator once acme has granted them).
const DEMO_ORG_ADMIN_ACCOUNT: &str = "demo-acme";

/// Makes the demo's console account with a fresh random password, written
/// to `<dir>/console-password` (mode 0600), unless a run before made it;
/// returns the password file.
fn console_account(dir: &Path, collector: &Collector) -> anyhow::Result<Option<PathBuf>> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;

    let Some(console) = collector.api().and_then(|api| api.console.clone()) else { return Ok(None) };
    let path = dir.join("console-password");
    if console.accounts.get(DEMO_CONSOLE_ACCOUNT)?.is_some() {
        return Ok(path.exists().then_some(path));
    }
    let secret = glimpse_common::secret::SecretKey::generate().map_err(|_| anyhow::anyhow!("no randomness"))?;
    let password = zeroize::Zeroizing::new(secret.to_hex()[..24].to_owned());
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    writeln!(file, "{}", password.as_str())?;
    let identity = glimpse_common::identity::AdminIdentity::new(
        glimpse_common::identity::AdminName::new(DEMO_CONSOLE_ACCOUNT)?,
        glimpse_common::identity::AdminRole::Operator,
        None,
    )?;
    let now = collector.store().clock().now_millis();
    console.accounts.create(&identity, &password, "glimpse-demo", now)?;
    let acme_admin = glimpse_common::identity::AdminIdentity::new(
        glimpse_common::identity::AdminName::new(DEMO_ORG_ADMIN_ACCOUNT)?,
        glimpse_common::identity::AdminRole::OrgAdmin,
        Some(glimpse_common::identity::OrgId::new("acme")?),
    )?;
    console.accounts.create(&acme_admin, &password, "glimpse-demo", now)?;
    Ok(Some(path))
}

/// Runs the demo and prints its summary.
async fn run(options: DemoOptions) -> anyhow::Result<()> {
    prepare(&options)?;
    let dir = &options.dir;
    let mut config = CollectorConfig::load(&dir.join("collector.toml"))?;
    let collector = match Collector::start_with_clock(config.clone(), Arc::new(SystemClock)).await {
        Ok(c) => c,
        Err(glimpse_collector::service::ServiceError::Bind { addr, .. }) => {
            println!("{addr} is busy; using ephemeral ports for this run");
            config.listen.set_port(0);
            if let Some(admin) = config.admin_listen.as_mut() {
                admin.set_port(0);
            }
            if let Some(ssh) = config.ssh.as_mut() {
                ssh.listen.set_port(0);
            }
            Collector::start_with_clock(config.clone(), Arc::new(SystemClock)).await?
        }
        Err(e) => return Err(e.into()),
    };
    let addr = collector.local_addr();
    println!("collector listening on {addr} (mutual TLS, data in {})", config.data_dir.display());
    let console_password = match console_account(dir, &collector) {
        Ok(path) => path,
        Err(e) => {
            println!("web console account skipped: {e:#}");
            None
        }
    };

    let mut identities = device_identities(usize::from(options.agents));
    let mut agents = Vec::new();
    for identity in &identities {
        let mut agent_config = AgentConfig::load(&agent_config_path(dir, identity))?;
        agent_config.collectors = vec![addr.into()];
        agents.push((identity.clone(), AgentHandle::spawn(agent_config)?));
    }
    match (collector.ssh_addr(), collector.ssh_host_key_fingerprint()) {
        (Some(ssh_addr), Some(fingerprint)) => {
            println!("SSH for switches and gateways on {ssh_addr} (host key {fingerprint})");
            for identity in ssh_identities() {
                let mut agent_config = AgentConfig::load(&agent_config_path(dir, &identity))?;
                agent_config.collectors = vec![ssh_addr.into()];
                agents.push((identity.clone(), AgentHandle::spawn(agent_config)?));
                identities.push(identity);
            }
        }
        _ => println!(
            "no [ssh] in {}/collector.toml (an older demo directory): switches and gateways skipped",
            dir.display()
        ),
    }
    println!("{} agents streaming for {} s ...", agents.len(), options.seconds);
    for second in 1..=options.seconds {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let acked: u64 = agents.iter().map(|(_, a)| a.status().borrow().acked_records).sum();
        println!("  {second:>3} s: {acked} records acknowledged");
    }
    if let Some(identity) = identities.first() {
        if let Err(e) = demo_capture(dir, identity, &collector).await {
            println!("packet capture skipped: {e:#}");
        }
    }
    let mut suites = std::collections::BTreeSet::new();
    for (_, agent) in agents {
        let status = agent.shutdown().await;
        if let Some(suite) = status.cipher_suite {
            suites.insert(suite);
        }
    }
    let store = collector.store().clone();
    let metrics = collector.metrics().clone();
    collector.shutdown().await;

    println!("\n=== Glimpse demo summary ===");
    println!("transports negotiated: {}", suites.into_iter().collect::<Vec<_>>().join(", "));
    let (batches, records) = metrics.stored_totals();
    println!("this run: {batches} batches, {records} records stored and acknowledged");
    let stats = store.stats()?;
    for org in store.orgs() {
        let devices: Vec<_> = identities.iter().filter(|i| i.org == org).map(|i| i.device.to_string()).collect();
        let listed = match devices.as_slice() {
            [] => "none in this run".to_owned(),
            few @ [_] | few @ [_, _] | few @ [_, _, _] => few.join(", "),
            [first, .., last] => format!("{} ({first} .. {last})", devices.len()),
        };
        println!("\norganisation {org}: devices {listed}");
        for kind in DataKind::ALL {
            let outcome = store.read(&org, kind, None, None)?;
            let bytes: u64 = stats.kinds.iter().filter(|s| s.org == org && s.kind == kind).map(|s| s.bytes).sum();
            println!(
                "  {kind:<9} {:>6} records, {:>9} bytes on disk (AES-256-GCM, {org}'s own key){}",
                outcome.records.len(),
                bytes,
                if outcome.problems.is_empty() {
                    String::new()
                } else {
                    format!(", {} problems", outcome.problems.len())
                }
            );
            let captures: Vec<_> = outcome
                .records
                .iter()
                .filter_map(|r| match &r.record.body {
                    RecordBody::Capture(packet) => Some(packet),
                    _ => None,
                })
                .collect();
            if !captures.is_empty() {
                let kept: usize = captures.iter().map(|p| p.headers.len()).sum();
                let wire: u64 = captures.iter().map(|p| u64::from(p.wire_len)).sum();
                let marker_stored = captures.iter().any(|p| {
                    p.headers.windows(traffic::DEMO_PAYLOAD_MARKER.len()).any(|w| w == traffic::DEMO_PAYLOAD_MARKER)
                });
                println!(
                    "            headers only: {kept} header bytes kept of {wire} bytes on the wire; payload marker {:?} stored: {}",
                    String::from_utf8_lossy(traffic::DEMO_PAYLOAD_MARKER),
                    if marker_stored { "YES (bug!)" } else { "no" }
                );
            }
            print_device_kind_reports(&outcome.records);
            if let Some(last) = outcome.records.last() {
                if let RecordBody::Metadata(m) = &last.record.body {
                    println!(
                        "            latest from {}: hostname {:?}, {} {}, {} interfaces",
                        last.device,
                        m.hostname.as_str(),
                        m.os_name.as_str(),
                        m.os_version.as_str(),
                        m.interfaces.len()
                    );
                }
            }
        }
    }
    let data_dir = config.data_dir.display();
    println!("\ndata lives in {data_dir} (segments under orgs/<org>/<kind>/<day>/, keys wrapped in glimpse.redb)");
    println!("export it:   cargo run --release -p glimpse-collector -- export --config {}/collector.toml --org acme --kind metadata", dir.display());
    println!(
        "captures for Wireshark: cargo run --release -p glimpse-collector -- export --config {}/collector.toml --org acme --kind capture --format pcap > acme.pcapng",
        dir.display()
    );
    println!(
        "serve it:    cargo run --release -p glimpse-collector -- serve --config {}/collector.toml",
        dir.display()
    );
    println!(
        "run an agent: cargo run --release -p glimpse-agent -- run --config {}",
        agent_config_path(dir, &identities[0]).display()
    );
    let admin_dir =
        glimpse_certs::admin_dir(&dir.join("pki"), &glimpse_common::identity::AdminName::new(DEMO_OPERATOR)?);
    println!(
        "administer it (with `serve` running): cargo run --release -p glimpse-collector -- admin status --org acme \
         --config {}/collector.toml --cert {} --key {}",
        dir.display(),
        admin_dir.join("admin.pem").display(),
        admin_dir.join("admin.key").display()
    );
    if let (Some(admin), Some(password)) = (config.admin_listen, console_password) {
        println!(
            "web console (with `serve` running): https://{admin}/console/ as `{DEMO_CONSOLE_ACCOUNT}` (operator) or \
             `{DEMO_ORG_ADMIN_ACCOUNT}` (acme's admin, who sees acme's data and can grant the operator access), \
             password in {} (the browser warns: the demo's own CA signed the certificate)",
            password.display()
        );
    }
    Ok(())
}
