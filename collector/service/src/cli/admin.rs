//! The admin client commands: one request to a running collector's admin
//! port each, printed for a terminal.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;

use glimpse_admin_client::{admin_request, AdminCredentials};
use glimpse_common::bounded::BoundedString;
use glimpse_common::identity::{DeviceId, OrgId, SiteId};
use glimpse_common::wire::admin::{AdminAction, AdminReply, GrantKind, GrantScope};

/// A grant kind named on the command line.
fn parse_grant_kind(name: &str) -> Result<GrantKind, String> {
    GrantKind::parse(name).ok_or_else(|| format!("{name:?}: use devices, metadata, captures or exports"))
}

use crate::config::CollectorConfig;

#[derive(Subcommand)]
pub(super) enum AdminCommand {
    /// Give or withdraw an organisation's packet-capture consent (off until
    /// given). Connected devices are told within a second; on `off` they
    /// stop capturing at once and discard capture data not yet sent, and
    /// the collector drops any that still arrives.
    Consent {
        #[command(flatten)]
        admin: AdminArgs,
        /// The organisation.
        #[arg(long)]
        org: OrgId,
        /// on or off.
        #[arg(long, value_parser = ["on", "off"])]
        capture: String,
    },
    /// Let support staff read an organisation's data for a limited time, or
    /// end that access.
    Support {
        #[command(subcommand)]
        action: SupportCommand,
    },
    /// An organisation's capture consent, support grant and connected devices.
    Status {
        #[command(flatten)]
        admin: AdminArgs,
        /// The organisation.
        #[arg(long)]
        org: OrgId,
    },
    /// The audit log of admin actions and refusals.
    Audit {
        #[command(subcommand)]
        action: AuditCommand,
    },
    /// Data-subject requests: everything stored about one MAC address, IP
    /// address or username.
    Subject {
        #[command(subcommand)]
        action: SubjectCommand,
    },
    /// Data minimisation: which metadata fields the organisation's devices
    /// collect, and whether MAC addresses are stored pseudonymised (a keyed
    /// hash per organisation). Replaces the previous settings; devices are
    /// told at once and the collector enforces it on everything it receives.
    Minimise {
        #[command(flatten)]
        admin: AdminArgs,
        /// The organisation.
        #[arg(long)]
        org: OrgId,
        /// Fields not to collect, comma-separated. The device: hostname, os,
        /// model, kernel, uptime, interface-macs, interface-addresses,
        /// interface-counters, location. Its clients: client-addresses,
        /// client-hostnames, usernames, user-agents, client-signal,
        /// client-counters, roaming, client-devices. Switches: vlans, lldp.
        /// Gateways: applications. Empty collects everything.
        #[arg(long, value_delimiter = ',', default_value = "")]
        omit: Vec<String>,
        /// Store MAC addresses (metadata and captured headers) as keyed
        /// pseudonyms: on or off.
        #[arg(long, value_parser = ["on", "off"], default_value = "off")]
        pseudonymise_macs: String,
        /// Scrub captured headers strictly: on or off. On zeroes every
        /// header byte that is not structure or a well-known option (unknown
        /// TCP/IP option data, AH's ICV, radiotap vendor data, IP IDs,
        /// reserved bits), on the devices and on arrival. Left out, the
        /// decision stays as it is.
        #[arg(long, value_parser = ["on", "off"])]
        strict_headers: Option<String>,
    },
    /// Location history: whether each Wi-Fi report's stations are stored
    /// with their identity (MAC, addresses, hostname, username, user
    /// agent), which lets anyone reading the data follow a person from
    /// access point to access point. Off by default: stations are then
    /// stored unlinked, with a stand-in MAC valid for one report only.
    LocationHistory {
        #[command(flatten)]
        admin: AdminArgs,
        /// The organisation.
        #[arg(long)]
        org: OrgId,
        /// on: keep station identities from now on; off: unlink them.
        #[arg(value_parser = ["on", "off"])]
        keep: String,
    },
    /// WAN destinations: whether gateways report their sessions per client
    /// and destination address, protocol and port, with the site names
    /// their DNS resolver gave (from connection tracking and the
    /// resolver's log, never from packets). Off by default: gateways do
    /// not collect them and any that arrive are dropped.
    WanDestinations {
        #[command(flatten)]
        admin: AdminArgs,
        /// The organisation.
        #[arg(long)]
        org: OrgId,
        /// on: collect and store them from now on; off: stop.
        #[arg(value_parser = ["on", "off"])]
        on: String,
    },
    /// Retention chosen by the organisation: how many days its metadata
    /// and captures are kept, up to what this service offers (see `admin
    /// status`). Replaces the previous choice; a kind left out goes back to
    /// the service's retention. Shorter takes effect at once.
    Retention {
        #[command(flatten)]
        admin: AdminArgs,
        /// The organisation.
        #[arg(long)]
        org: OrgId,
        /// Days of metadata to keep.
        #[arg(long)]
        metadata_days: Option<u32>,
        /// Days of header-only captures to keep (at most 7).
        #[arg(long)]
        capture_days: Option<u32>,
    },
    /// Ask a connected device for a diagnostic bundle for a support case
    /// (its build, model and serial number, configuration without secrets,
    /// recent log lines, spool state, and which probes and tools work),
    /// and print it as JSON once it has arrived. Support staff may ask
    /// under an active grant.
    Diagnostics {
        #[command(flatten)]
        admin: AdminArgs,
        /// The organisation.
        #[arg(long)]
        org: OrgId,
        /// The device.
        #[arg(long)]
        device: glimpse_common::identity::DeviceId,
        /// How long to wait for the bundle, in seconds; 0 only asks and
        /// prints the request's id.
        #[arg(long, default_value_t = 60)]
        wait_secs: u64,
    },
    /// Delete all of an organisation's stored data and destroy its key.
    DeleteOrg {
        #[command(flatten)]
        admin: AdminArgs,
        /// The organisation.
        #[arg(long)]
        org: OrgId,
        /// The organisation's name again, to confirm.
        #[arg(long)]
        confirm: OrgId,
    },
    /// Rotate the collector's master key (operators only): every key
    /// wrapped under it is rewrapped under a new key, which replaces the
    /// old one in the master key file; no data is rewritten. Back up the
    /// new key file afterwards.
    RotateMasterKey {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Rotate an organisation's data key (its admins and operators): new
    /// data is sealed under a new key version at once; older data stays
    /// readable and is re-encrypted in the background, then the old
    /// version is retired. `--status` shows the versions instead.
    RotateDataKey {
        #[command(flatten)]
        admin: AdminArgs,
        /// The organisation.
        org: OrgId,
        /// Show the organisation's key versions and how many segments are
        /// under each, rotating nothing.
        #[arg(long)]
        status: bool,
    },
    /// API tokens for scripts, dashboards and the web console: create
    /// (the token is printed once), list, revoke.
    Token {
        #[command(subcommand)]
        action: TokenCommand,
    },
}

#[derive(Subcommand)]
pub(super) enum TokenCommand {
    /// Create a token and print it (once: only its hash is kept). It is
    /// never more than you: your role at most, read-only if you are.
    Create {
        #[command(flatten)]
        admin: AdminArgs,
        /// What it is for, e.g. grafana.
        #[arg(long)]
        name: String,
        /// operator, org-admin or support.
        #[arg(long, value_parser = ["operator", "org-admin", "support"])]
        role: String,
        /// Its organisation (not for operator tokens).
        #[arg(long)]
        org: Option<OrgId>,
        /// Only reads allowed.
        #[arg(long)]
        read_only: bool,
        /// Days until it expires (1 to 366).
        #[arg(long, default_value_t = 90)]
        days: u32,
        /// Limit an org-admin or support token to these sites of its
        /// organisation, comma-separated: it sees and acts on their devices
        /// only, and on nothing organisation-wide. Default: every site.
        #[arg(long = "site", value_name = "SITE", value_delimiter = ',')]
        sites: Vec<SiteId>,
    },
    /// List tokens (operators: all; org-admins: their organisation's).
    List {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Revoke a token now; connections that used it are closed.
    Revoke {
        #[command(flatten)]
        admin: AdminArgs,
        /// The token's id (the 16 hex digits after `glimpse_`).
        #[arg(long)]
        id: String,
    },
}

/// Runs a token command.
async fn run_token(command: TokenCommand) -> anyhow::Result<()> {
    use glimpse_admin_client::ApiClient;
    use reqwest::Method;
    let when = |ms: Option<i64>| ms.map_or_else(|| "-".to_owned(), glimpse_store::export::format_time);
    match command {
        TokenCommand::Create { admin, name, role, org, read_only, days, sites } => {
            let client = ApiClient::new(&admin.credentials()?).await?;
            let body = glimpse_api::TokenCreateRequest {
                name,
                role,
                org: org.map(|o| o.as_str().to_owned()),
                read_only,
                expires_in_days: Some(days),
                sites: sites.iter().map(|s| s.as_str().to_owned()).collect(),
            };
            let created: glimpse_api::TokenCreated = client.send(Method::POST, "/api/v1/tokens", Some(&body)).await?;
            eprintln!(
                "token {} (id {}) for {}{}{}, expires {}; it is shown this once:",
                created.info.name,
                created.info.id,
                created.info.role,
                if created.info.sites.is_empty() {
                    String::new()
                } else {
                    format!(" at sites {}", created.info.sites.join(", "))
                },
                if created.info.read_only { ", read-only" } else { "" },
                when(Some(created.info.expires_ms))
            );
            println!("{}", created.token);
        }
        TokenCommand::List { admin } => {
            let client = ApiClient::new(&admin.credentials()?).await?;
            let list: glimpse_api::TokenList = client.get("/api/v1/tokens").await?;
            println!(
                "{:<16}  {:<20}  {:<10}  {:<16}  {:<9}  {:<20}  {:<20}  {:<7}  SITES",
                "ID", "NAME", "ROLE", "ORG", "ACCESS", "EXPIRES", "LAST USED", "STATE"
            );
            for t in list.tokens {
                let state = if t.revoked_ms.is_some() { "revoked" } else { "active" };
                println!(
                    "{:<16}  {:<20}  {:<10}  {:<16}  {:<9}  {:<20}  {:<20}  {state:<7}  {}",
                    t.id,
                    t.name,
                    t.role,
                    t.org.as_deref().unwrap_or("-"),
                    if t.read_only { "read" } else { "read-write" },
                    when(Some(t.expires_ms)),
                    when(t.last_used_ms),
                    if t.sites.is_empty() { "(all)".to_owned() } else { t.sites.join(",") },
                );
            }
        }
        TokenCommand::Revoke { admin, id } => {
            let client = ApiClient::new(&admin.credentials()?).await?;
            let revoked: glimpse_api::TokenRevoked =
                client.send(Method::DELETE, &format!("/api/v1/tokens/{id}"), None::<&()>).await?;
            println!(
                "token {id} revoked{}; {} live connections closed",
                if revoked.was_active { "" } else { " (it was not active)" },
                revoked.connections_closed
            );
        }
    }
    Ok(())
}

#[derive(Subcommand)]
pub(super) enum SubjectCommand {
    /// Print every stored record about the subject as JSON lines (metadata
    /// and captures), e.g. to answer an access request.
    Export {
        #[command(flatten)]
        admin: AdminArgs,
        #[command(flatten)]
        who: SubjectArgs,
    },
    /// Erase every stored record about the subject, from metadata and
    /// captures; a following export finds nothing.
    Erase {
        #[command(flatten)]
        admin: AdminArgs,
        #[command(flatten)]
        who: SubjectArgs,
    },
    /// Replace one of the subject's values (their username or hostname) in
    /// every stored record about them, e.g. to answer a rectification
    /// request; other people's values in the same reports stay.
    Correct {
        #[command(flatten)]
        admin: AdminArgs,
        #[command(flatten)]
        who: SubjectArgs,
        /// Which value: username or hostname.
        #[arg(long)]
        field: glimpse_common::wire::admin::CorrectableField,
        /// The right value (an empty string for none).
        #[arg(long)]
        value: String,
    },
    /// Stop processing the subject's data: dropped on arrival, no longer
    /// collected by the organisation's devices, left out of exports, until
    /// unblocked. What is stored stays (erase it separately).
    Block {
        #[command(flatten)]
        admin: AdminArgs,
        #[command(flatten)]
        who: SubjectArgs,
    },
    /// Process the subject's data again from now on.
    Unblock {
        #[command(flatten)]
        admin: AdminArgs,
        #[command(flatten)]
        who: SubjectArgs,
    },
    /// List the organisation's blocked subjects.
    Blocked {
        #[command(flatten)]
        admin: AdminArgs,
        /// The organisation.
        #[arg(long)]
        org: OrgId,
    },
}

/// Who a subject request is about: exactly one of --mac, --ip, --username.
#[derive(clap::Args)]
#[group(skip)]
#[command(group(clap::ArgGroup::new("who").required(true).multiple(false).args(["mac", "ip", "username"])))]
pub(super) struct SubjectArgs {
    /// The organisation.
    #[arg(long)]
    org: OrgId,
    /// A MAC address, e.g. 02:00:5e:10:00:01.
    #[arg(long)]
    mac: Option<glimpse_common::record::MacAddr>,
    /// An IPv4 or IPv6 address.
    #[arg(long)]
    ip: Option<std::net::IpAddr>,
    /// A username.
    #[arg(long)]
    username: Option<String>,
}

impl SubjectArgs {
    fn subject(self) -> anyhow::Result<(OrgId, glimpse_common::wire::admin::Subject)> {
        use glimpse_common::wire::admin::Subject;
        let subject = match (self.mac, self.ip, self.username) {
            (Some(mac), _, _) => Subject::Mac(mac),
            (_, Some(ip), _) => Subject::Ip(ip),
            (_, _, Some(name)) => Subject::Username(BoundedString::try_new(name).context("--username")?),
            _ => return Err(super::exit::UsageError("give one of --mac, --ip or --username".into()).into()),
        };
        Ok((self.org, subject))
    }
}

#[derive(Subcommand)]
pub(super) enum SupportCommand {
    /// Grant support staff (and operators) access to the organisation's
    /// data for a number of hours (1 to 720), to the kinds and devices named.
    Grant {
        #[command(flatten)]
        admin: AdminArgs,
        /// The organisation.
        #[arg(long)]
        org: OrgId,
        /// How long, in hours.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=720))]
        hours: u32,
        /// What the grant includes, comma-separated: devices (devices and
        /// status, always included), metadata, captures (requesting and
        /// reading captures, with capture consent), exports (data-subject
        /// exports). Default: devices,metadata,exports; captures only when
        /// named.
        #[arg(long, value_delimiter = ',', value_parser = parse_grant_kind)]
        kinds: Option<Vec<GrantKind>>,
        /// Only these devices, comma-separated (default: every device).
        #[arg(long, value_delimiter = ',')]
        devices: Vec<DeviceId>,
        /// Only the devices of these sites, comma-separated (default: every
        /// site; with --devices, those of them at the sites).
        #[arg(long = "site", value_name = "SITE", value_delimiter = ',')]
        sites: Vec<SiteId>,
    },
    /// End support access now.
    Revoke {
        #[command(flatten)]
        admin: AdminArgs,
        /// The organisation.
        #[arg(long)]
        org: OrgId,
    },
}

#[derive(Subcommand)]
pub(super) enum AuditCommand {
    /// Check every entry's hash chain link and MAC, and that none is missing
    /// at the end (operators only). Exits non-zero if the log was tampered with.
    Verify {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Print audit entries, oldest first (all of them across organisations
    /// for operators; an organisation's own for its admins).
    Show {
        #[command(flatten)]
        admin: AdminArgs,
        /// Only this organisation's entries.
        #[arg(long)]
        org: Option<OrgId>,
        /// Start after this entry number.
        #[arg(long, default_value_t = 0)]
        after: u64,
    },
}

/// Which capture a stop or status request is about.
#[derive(clap::Args)]
pub(super) struct CaptureRef {
    /// The device's organisation.
    #[arg(long)]
    org: OrgId,
    /// The device.
    #[arg(long)]
    device: DeviceId,
    /// The capture id `capture start` printed.
    #[arg(long)]
    id: u64,
}

#[derive(Subcommand)]
pub(super) enum CaptureCommand {
    /// Start a capture: the device captures headers only, within the given
    /// bounds and its own, and only if its organisation allows capture.
    Start {
        #[command(flatten)]
        admin: AdminArgs,
        /// The device's organisation.
        #[arg(long)]
        org: OrgId,
        /// The device.
        #[arg(long)]
        device: DeviceId,
        /// Interface on the device, e.g. br-lan or wlan0.
        #[arg(long)]
        interface: String,
        /// libpcap filter, e.g. "udp port 67 or udp port 68" (default: all traffic).
        #[arg(long, default_value = "")]
        filter: String,
        /// Longest the capture may run, in seconds.
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=3600))]
        seconds: u32,
        /// Most packets to keep.
        #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
        packets: u32,
    },
    /// Stop a running capture.
    Stop {
        #[command(flatten)]
        admin: AdminArgs,
        #[command(flatten)]
        capture: CaptureRef,
    },
    /// Show what the device last reported about a capture: running,
    /// finished (with packets and header bytes kept) or refused (and why).
    Status {
        #[command(flatten)]
        admin: AdminArgs,
        #[command(flatten)]
        capture: CaptureRef,
        /// Wait up to this many seconds for the capture to finish or be
        /// refused, then print the latest status.
        #[arg(long, value_name = "SECONDS", default_value_t = 0)]
        wait: u32,
    },
}

/// How to reach the admin API and who is asking.
#[derive(clap::Args)]
pub(super) struct AdminArgs {
    /// collector.toml, to find the admin address and CA (or give them below).
    #[arg(long, short, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Admin API address, host:port (default: `[admin] listen` in the config).
    #[arg(long, value_name = "ADDR")]
    admin: Option<String>,
    /// CA certificate (default: `[tls] ca` in the config).
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Your admin certificate (from `glimpse-certs admin`).
    #[arg(long, value_name = "FILE", requires = "key", required_unless_present = "token")]
    cert: Option<PathBuf>,
    /// Your admin private key.
    #[arg(long, value_name = "FILE", requires = "cert")]
    key: Option<PathBuf>,
    /// An API token instead of a certificate (from `admin token create`);
    /// better given in the environment than on the command line.
    #[arg(long, env = "GLIMPSE_API_TOKEN", hide_env_values = true, conflicts_with_all = ["cert", "key"])]
    token: Option<String>,
    /// Name in the collector's certificate.
    #[arg(long, default_value = "localhost")]
    server_name: String,
}

impl AdminArgs {
    fn credentials(self) -> anyhow::Result<AdminCredentials> {
        let config = self.config.as_deref().map(CollectorConfig::load).transpose()?;
        let address = match (self.admin, config.as_ref().and_then(|c| c.admin_listen)) {
            (Some(address), _) => address,
            (None, Some(listen)) => listen.to_string(),
            (None, None) => {
                return Err(super::exit::UsageError(
                    "give --admin ADDR, or --config with an [admin] listen address".into(),
                )
                .into())
            }
        };
        let ca = match (self.ca, config.as_ref()) {
            (Some(ca), _) => ca,
            (None, Some(c)) => c.ca.clone(),
            (None, None) => return Err(super::exit::UsageError("give --ca FILE, or --config".into()).into()),
        };
        Ok(AdminCredentials {
            address,
            server_name: self.server_name,
            ca,
            cert: self.cert.unwrap_or_default(),
            key: self.key.unwrap_or_default(),
            token: self.token,
        })
    }
}

/// Asks for a bundle, then polls for it until it arrives or `wait_secs`
/// pass.
async fn run_diagnostics(
    admin: AdminArgs,
    org: OrgId,
    device: glimpse_common::identity::DeviceId,
    wait_secs: u64,
) -> anyhow::Result<()> {
    let credentials = admin.credentials()?;
    let action = AdminAction::RequestDiagnostics { org: org.clone(), device: device.clone() };
    let id = match admin_request(&credentials, action).await? {
        AdminReply::DiagnosticsRequested { id } => id,
        other => return print_reply(other),
    };
    eprintln!("diagnostic bundle {id} requested from {device}");
    if wait_secs == 0 {
        println!("{id}");
        return Ok(());
    }
    let client = glimpse_admin_client::ApiClient::new(&credentials).await?;
    let path = format!("/api/v1/orgs/{}/devices/{}/diagnostics?request_id={id}", org.as_str(), device.as_str());
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(wait_secs);
    loop {
        let list: glimpse_api::DiagnosticsList = client.get(&path).await?;
        if let Some(stored) = list.bundles.first() {
            println!("{}", serde_json::to_string_pretty(&stored.bundle)?);
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!(
                "bundle {id} has not arrived after {wait_secs} s; the device may still be sending it: \
                 GET {path}"
            );
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

pub(super) async fn run_admin(command: AdminCommand) -> anyhow::Result<()> {
    let (admin, action) = match command {
        AdminCommand::Token { action } => return run_token(action).await,
        AdminCommand::RotateMasterKey { admin } => {
            let client = glimpse_admin_client::ApiClient::new(&admin.credentials()?).await?;
            let rotated: glimpse_api::MasterKeyRotated =
                client.send(reqwest::Method::POST, "/api/v1/master-key/rotate", None::<&()>).await?;
            println!(
                "master key rotated: {} organisation keys, {} device keys and {} other rows rewrapped; \
                 the new key is in {} on the collector: back it up now",
                rotated.org_keys, rotated.device_keys, rotated.other_rows, rotated.key_file
            );
            return Ok(());
        }
        AdminCommand::RotateDataKey { admin, org, status } => {
            let client = glimpse_admin_client::ApiClient::new(&admin.credentials()?).await?;
            if !status {
                let path = format!("/api/v1/orgs/{}/data-key/rotate", org.as_str());
                let rotated: glimpse_api::DataKeyRotated =
                    client.send(reqwest::Method::POST, &path, None::<&()>).await?;
                println!(
                    "data key of {org} rotated: version {} is current; version {} is retiring and its data is \
                     re-encrypted in the background",
                    rotated.version, rotated.previous
                );
            }
            let status: glimpse_api::DataKeyStatus =
                client.get(&format!("/api/v1/orgs/{}/data-key", org.as_str())).await?;
            for v in &status.versions {
                println!("version {:>4}  {:<8}  {} segments", v.version, v.state, v.segments);
            }
            return Ok(());
        }
        AdminCommand::Consent { admin, org, capture } => {
            (admin, AdminAction::SetConsent { org, capture: capture == "on" })
        }
        AdminCommand::Support { action: SupportCommand::Grant { admin, org, hours, kinds, devices, sites } } => {
            let kinds = kinds.unwrap_or_else(|| GrantScope::default().kinds().to_vec());
            let scope =
                GrantScope::new(kinds, devices).and_then(|scope| scope.at_sites(sites)).context("the grant's scope")?;
            (admin, AdminAction::GrantSupport { org, hours, scope })
        }
        AdminCommand::Support { action: SupportCommand::Revoke { admin, org } } => {
            (admin, AdminAction::RevokeSupport { org })
        }
        AdminCommand::Status { admin, org } => (admin, AdminAction::OrgStatus { org }),
        AdminCommand::DeleteOrg { admin, org, confirm } => (admin, AdminAction::DeleteOrg { org, confirm }),
        AdminCommand::Retention { admin, org, metadata_days, capture_days } => {
            (admin, AdminAction::SetRetention { org, metadata_days, capture_days })
        }
        AdminCommand::Diagnostics { admin, org, device, wait_secs } => {
            return run_diagnostics(admin, org, device, wait_secs).await;
        }
        AdminCommand::LocationHistory { admin, org, keep } => {
            (admin, AdminAction::SetLocationHistory { org, keep: keep == "on" })
        }
        AdminCommand::WanDestinations { admin, org, on } => {
            (admin, AdminAction::SetWanDestinations { org, on: on == "on" })
        }
        AdminCommand::Minimise { admin, org, omit, pseudonymise_macs, strict_headers } => {
            let omit = omit
                .iter()
                .filter(|f| !f.is_empty())
                .map(|f| f.parse::<glimpse_common::minimise::MetadataField>())
                .collect::<Result<Vec<_>, _>>()?;
            let omit = glimpse_common::bounded::BoundedVec::try_from_vec(omit).context("--omit")?;
            let strict_headers = strict_headers.map(|value| value == "on");
            (
                admin,
                AdminAction::SetDataPolicy { org, omit, pseudonymise_macs: pseudonymise_macs == "on", strict_headers },
            )
        }
        AdminCommand::Subject { action: SubjectCommand::Erase { admin, who } } => {
            let (org, subject) = who.subject()?;
            (admin, AdminAction::EraseSubject { org, subject })
        }
        AdminCommand::Subject { action: SubjectCommand::Correct { admin, who, field, value } } => {
            let (org, subject) = who.subject()?;
            let value = BoundedString::try_new(value).context("--value")?;
            (admin, AdminAction::CorrectSubject { org, subject, field, value })
        }
        AdminCommand::Subject { action: SubjectCommand::Block { admin, who } } => {
            let (org, subject) = who.subject()?;
            (admin, AdminAction::BlockSubject { org, subject })
        }
        AdminCommand::Subject { action: SubjectCommand::Unblock { admin, who } } => {
            let (org, subject) = who.subject()?;
            (admin, AdminAction::UnblockSubject { org, subject })
        }
        AdminCommand::Subject { action: SubjectCommand::Blocked { admin, org } } => {
            (admin, AdminAction::BlockedSubjects { org })
        }
        AdminCommand::Subject { action: SubjectCommand::Export { admin, who } } => {
            let (org, subject) = who.subject()?;
            let credentials = admin.credentials()?;
            let mut skip = 0u64;
            loop {
                let action = AdminAction::ExportSubject { org: org.clone(), subject: subject.clone(), skip };
                match admin_request(&credentials, action).await? {
                    AdminReply::SubjectRecords { total, lines } => {
                        for line in lines.iter() {
                            println!("{}", line.as_str());
                        }
                        skip += lines.len() as u64;
                        if lines.is_empty() || skip >= total {
                            eprintln!("exported {skip} records about the subject");
                            return Ok(());
                        }
                    }
                    other => return print_reply(other),
                }
            }
        }
        AdminCommand::Audit { action: AuditCommand::Verify { admin } } => (admin, AdminAction::VerifyAudit),
        AdminCommand::Audit { action: AuditCommand::Show { admin, org, after } } => {
            // Page through the whole log.
            let credentials = admin.credentials()?;
            let mut after_seq = after;
            loop {
                let action = AdminAction::ShowAudit { org: org.clone(), after_seq };
                match admin_request(&credentials, action).await? {
                    AdminReply::AuditEntries(entries) => {
                        let Some(last) = entries.last() else { return Ok(()) };
                        after_seq = last.seq;
                        // A short page ends the log as it was when read;
                        // each read is itself audited, so it keeps growing.
                        let end = entries.len() < glimpse_common::wire::admin::MAX_AUDIT_PAGE;
                        for e in entries.iter() {
                            println!(
                                "{:>6}  {}  {:<8} {:<16} {:<12} {:<40} {}",
                                e.seq,
                                glimpse_store::export::format_time(e.at_ms),
                                if e.refused { "REFUSED" } else { "done" },
                                e.action.as_str(),
                                e.org.as_ref().map_or("-", OrgId::as_str),
                                e.actor.as_str(),
                                e.detail.as_str()
                            );
                        }
                        if end {
                            return Ok(());
                        }
                    }
                    other => return print_reply(other),
                }
            }
        }
    };
    print_reply(admin_request(&admin.credentials()?, action).await?)
}

/// Asks for a capture's status, every half second for up to `wait_secs`
/// until it has ended, and prints the last answer.
async fn capture_status(
    credentials: &AdminCredentials,
    org: OrgId,
    device: DeviceId,
    id: u64,
    wait_secs: u32,
) -> anyhow::Result<()> {
    use glimpse_common::wire::CaptureOutcome;

    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(u64::from(wait_secs));
    loop {
        let action = AdminAction::CaptureStatus { org: org.clone(), device: device.clone(), id };
        let reply = admin_request(credentials, action).await?;
        let ended = matches!(
            reply,
            AdminReply::CaptureStatus(Some(CaptureOutcome::Finished { .. } | CaptureOutcome::Refused { .. }))
                | AdminReply::Refused(_)
        );
        if ended || tokio::time::Instant::now() >= deadline {
            return print_reply(reply);
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// Prints an admin reply; a refusal is an error.
fn print_reply(reply: AdminReply) -> anyhow::Result<()> {
    match reply {
        AdminReply::CaptureRequested { id } => {
            println!("capture {id} requested; the device reports progress in the collector log")
        }
        AdminReply::CaptureStopRequested => println!("stop requested"),
        AdminReply::Devices(devices) => {
            for device in devices.iter() {
                println!("{device}");
            }
        }
        AdminReply::Refused(reason) => return Err(super::exit::PermissionError(format!("refused: {reason}")).into()),
        AdminReply::CaptureStatus(None) => println!("no report from the device yet"),
        AdminReply::ConsentSet { capture, changed, devices_told } => println!(
            "capture consent {}{}; {devices_told} connected devices told",
            if capture { "on" } else { "off" },
            if changed { "" } else { " (already so)" }
        ),
        AdminReply::SupportGranted { until_ms } => {
            println!("support may read until {}", glimpse_store::export::format_time(until_ms))
        }
        AdminReply::SupportRevoked { was_active } => {
            println!("{}", if was_active { "support access ended" } else { "no support grant was active" })
        }
        AdminReply::OrgStatus {
            omitted_fields,
            pseudonymise_macs,
            strict_headers,
            capture_consent,
            support_until_ms,
            connected_devices,
        } => {
            println!("capture consent: {}", if capture_consent { "on" } else { "off" });
            let omitted: Vec<&str> = omitted_fields.iter().map(|f| f.as_str()).collect();
            println!(
                "metadata fields not collected: {}",
                if omitted.is_empty() { "none".to_owned() } else { omitted.join(", ") }
            );
            println!(
                "MAC addresses: {}",
                if pseudonymise_macs { "stored pseudonymised" } else { "stored as collected" }
            );
            println!("captured headers: {}", if strict_headers { "scrubbed strictly" } else { "kept whole" });
            match support_until_ms {
                Some(until) => println!("support access: granted until {}", glimpse_store::export::format_time(until)),
                None => println!("support access: none"),
            }
            println!("connected devices: {connected_devices}");
        }
        AdminReply::AuditVerified { entries } => println!("audit log intact: {entries} entries verified"),
        AdminReply::DiagnosticsRequested { id } => println!("diagnostic bundle {id} requested"),
        AdminReply::RetentionSet { metadata_days, capture_days, changed } => println!(
            "retention: metadata {metadata_days} days, captures {capture_days} days{}",
            if changed { "" } else { " (already so)" }
        ),
        AdminReply::LocationHistorySet { keep, changed } => println!(
            "location history {}{}",
            if keep { "kept: stations are stored with their identity" } else { "off: stations are stored unlinked" },
            if changed { "" } else { " (already so)" }
        ),
        AdminReply::WanDestinationsSet { on, changed, devices_told } => println!(
            "WAN destinations {}{}; {devices_told} connected devices told",
            if on { "on: gateways report sessions per client and destination" } else { "off: not collected" },
            if changed { "" } else { " (already so)" }
        ),
        AdminReply::DataPolicySet { devices_told, strict_headers } => {
            let strict = if strict_headers { "on" } else { "off" };
            println!("data policy set (strict headers {strict}); {devices_told} connected devices told")
        }
        AdminReply::SubjectErased { metadata, captures, segments_rewritten } => println!(
            "erased {metadata} metadata and {captures} capture records ({segments_rewritten} segments rewritten)"
        ),
        AdminReply::SubjectCorrected { records, values, segments_rewritten } => {
            println!(
                "corrected {values} values in {records} metadata records ({segments_rewritten} segments rewritten)"
            )
        }
        AdminReply::BlockChanged { blocked, changed, blocked_subjects, devices_told } => println!(
            "subject {}{}; {blocked_subjects} subjects blocked; {devices_told} connected devices told",
            if blocked { "blocked" } else { "unblocked" },
            if changed { "" } else { " (already so)" }
        ),
        AdminReply::BlockedSubjects(list) => {
            for subject in list.as_slice() {
                println!("{subject}");
            }
        }
        AdminReply::OrgDeleted { key_destroyed, segments_deleted } => println!(
            "deleted {segments_deleted} segments; organisation key {}",
            if key_destroyed { "destroyed" } else { "did not exist" }
        ),
        AdminReply::CaptureStatus(Some(outcome)) => match outcome {
            glimpse_common::wire::CaptureOutcome::Started => println!("running"),
            glimpse_common::wire::CaptureOutcome::Finished { packets, header_bytes } => {
                println!("finished: {packets} packets, {header_bytes} header bytes kept")
            }
            glimpse_common::wire::CaptureOutcome::Refused { reason } => println!("refused by the device: {reason}"),
            other => println!("{other:?}"),
        },
        other => println!("{other:?}"),
    }
    Ok(())
}

/// `capture start|stop|status`.
pub(super) async fn run_capture(command: CaptureCommand) -> anyhow::Result<()> {
    let (admin, action) = match command {
        CaptureCommand::Start { admin, org, device, interface, filter, seconds, packets } => {
            let interface = BoundedString::try_new(interface).context("--interface")?;
            let filter = BoundedString::try_new(filter).context("--filter")?;
            let action = AdminAction::StartCapture {
                org,
                device,
                interface,
                filter,
                duration_secs: seconds,
                max_packets: packets,
            };
            (admin, action)
        }
        CaptureCommand::Stop { admin, capture: CaptureRef { org, device, id } } => {
            (admin, AdminAction::StopCapture { org, device, id })
        }
        CaptureCommand::Status { admin, capture: CaptureRef { org, device, id }, wait } => {
            return capture_status(&admin.credentials()?, org, device, id, wait).await;
        }
    };
    print_reply(admin_request(&admin.credentials()?, action).await?)
}

/// `devices`: the organisation's devices connected now; with `long`, every
/// registered device and its details.
pub(super) async fn devices(admin: AdminArgs, org: OrgId, long: bool) -> anyhow::Result<()> {
    if !long {
        return print_reply(admin_request(&admin.credentials()?, AdminAction::ConnectedDevices { org }).await?);
    }
    let client = glimpse_admin_client::ApiClient::new(&admin.credentials()?).await?;
    let list: serde_json::Value = client.get(&format!("/api/v1/devices?org={}", org.as_str())).await?;
    let devices = list["devices"].as_array().context("the collector sent no device list")?;
    let rows: Vec<[String; 11]> = devices.iter().map(device_row).collect();
    print_columns(
        [
            "DEVICE",
            "KIND",
            "SITE",
            "STATE",
            "TRANSPORT",
            "CIPHER",
            "PEER",
            "AGENT",
            "LAST RECORD",
            "DROPPED",
            "CERT EXPIRES",
        ],
        &rows,
    );
    Ok(())
}

/// A Unix-milliseconds time as RFC 3339 UTC to the second, `-` for none.
fn utc(ms: &serde_json::Value) -> String {
    ms.as_i64()
        .and_then(|ms| time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000)).ok())
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| "-".to_owned())
}

/// One device of the API's list as a table row.
fn device_row(d: &serde_json::Value) -> [String; 11] {
    let text = |v: &serde_json::Value| v.as_str().unwrap_or("-").to_owned();
    let state = if d["revoked"] == true {
        "revoked"
    } else if d["connected"] == true {
        "connected"
    } else {
        "offline"
    };
    let agent = match (d["agent_version"].as_str(), d["agent_build"].as_str()) {
        (Some(version), Some(build)) => format!("{version}+{build}"),
        (Some(version), None) => version.to_owned(),
        _ => "-".to_owned(),
    };
    let health = &d["health"];
    let dropped = match (health["dropped_metadata"].as_u64(), health["dropped_captures"].as_u64()) {
        (Some(metadata), Some(captures)) => format!("{metadata} metadata, {captures} captures"),
        _ => "-".to_owned(),
    };
    [
        text(&d["device"]),
        text(&d["kind"]),
        text(&d["site"]),
        state.to_owned(),
        text(&d["transport"]),
        text(&d["cipher"]),
        text(&d["peer"]),
        agent,
        utc(&d["last_record_ms"]),
        dropped,
        utc(&d["certificate_not_after_ms"]),
    ]
}

/// Prints rows under a header, in columns.
fn print_columns<const N: usize>(header: [&str; N], rows: &[[String; N]]) {
    let mut widths = header.map(str::len);
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let text = cells.iter().zip(widths).map(|(c, w)| format!("{c:<w$}")).collect::<Vec<_>>().join("  ");
        println!("{}", text.trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}
