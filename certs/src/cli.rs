//! `glimpse-certs`: the operator's PKI tool. It creates the root CA and the
//! collector's certificate, issues device and admin certificates, and revokes
//! devices and admins. The directory layout is documented in the library's root.
//!
//! The command line lives in the library so that the end-to-end tests can
//! run it as a real program under another name, as they do the collector.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::{CertsError, InitOptions, Validity};
use glimpse_common::identity::{
    AdminIdentity, AdminName, AdminRole, DeviceId, DeviceIdentity, DeviceKind, OrgId, SiteId,
};

/// Exit code for bad usage (sysexits.h `EX_USAGE`).
const EXIT_USAGE: u8 = 64;

/// The exit codes (sysexits), for `--help`.
const EXIT_HELP: &str = "\
Exit status:
  0   success
  64  bad usage: arguments, names, lifetimes, a certificate that would already be expired
  65  bad data: a damaged or mismatched PEM, record or CRL in the PKI directory, an unknown
      or already revoked device
  70  internal error: a key or certificate could not be generated
  73  refusing to overwrite an existing file (pass --force)
  74  input/output error
  77  permission denied reading or writing a file
  78  the PKI directory has no CA (run `glimpse-certs init`)";

#[derive(Debug, Parser)]
#[command(
    name = "glimpse-certs",
    version,
    long_version = glimpse_files::long_version!(),
    about = "Certificates for Glimpse: the root CA, the collector, devices and admins.",
    long_about = "Certificates for Glimpse: the root CA, the collector, devices and admins.\n\n\
        Access points reach the collector over mutually authenticated TLS: the collector \
        and each device prove who they are with a certificate signed by one private root \
        CA, and each device also holds a per-device shared key. Switches and gateways \
        reach it over SSH with a registered public key (made here, or brought with \
        --ssh-key).\n\n\
        Typical use:\n  \
        glimpse-certs init   --dir /etc/glimpse/pki --san collector.example.net --san 10.0.0.5\n  \
        glimpse-certs device --dir /etc/glimpse/pki --org acme --device ap-1 --kind ap --site berlin-hq\n  \
        glimpse-certs device --dir /etc/glimpse/pki --org acme --device sw-1 --kind switch --ssh-key sw-1.pub\n  \
        glimpse-certs revoke --dir /etc/glimpse/pki --org acme --device ap-1\n  \
        glimpse-certs admin  --dir /etc/glimpse/pki --name alice --role org-admin --org acme\n  \
        glimpse-certs revoke-admin --dir /etc/glimpse/pki --name alice\n\n\
        Keep the PKI directory (above all ca.key) on a trusted machine; private files are \
        created readable by their owner only. Nothing is overwritten unless you pass --force.\n\n\
        Set GLIMPSE_LOG (e.g. GLIMPSE_LOG=debug) or --log-level for more detailed logs.",
    after_help = EXIT_HELP
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    log: glimpse_files::logging::LogArgs,
}

/// The command line's definition, for the man page and shell completions
/// (`glimpse-docgen`).
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

#[derive(Debug, Args)]
struct DirArg {
    /// The PKI directory (created by `init` if missing).
    #[arg(long, value_name = "DIR", env = "GLIMPSE_PKI_DIR")]
    dir: PathBuf,
}

#[derive(Debug, Args)]
struct ValidityArgs {
    /// Start of validity, RFC 3339 (e.g. 2025-01-01T00:00:00Z). Default: an hour ago.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    not_before: Option<OffsetDateTime>,
    /// End of validity, RFC 3339. Default: 10 years for devices, 1 year for admins.
    #[arg(long, value_name = "TIME", value_parser = parse_time, conflicts_with = "days")]
    not_after: Option<OffsetDateTime>,
    /// Valid for this many days from the start of validity (instead of --not-after).
    #[arg(long, value_name = "DAYS", value_parser = clap::value_parser!(u32).range(1..=36_500))]
    days: Option<u32>,
    /// Issue even if the certificate would already be expired (for tests of
    /// expiry handling); refused otherwise.
    #[arg(long)]
    allow_expired: bool,
}

impl ValidityArgs {
    /// The validity asked for, checked against `lifetime` (the default for
    /// the kind of certificate): an end already past is refused unless
    /// --allow-expired, a start still ahead is warned about.
    fn validity(&self, lifetime: time::Duration) -> anyhow::Result<Validity> {
        let mut validity = Validity { not_before: self.not_before, not_after: self.not_after };
        if let Some(days) = self.days {
            let start = self.not_before.unwrap_or_else(|| OffsetDateTime::now_utc() - crate::BACKDATE);
            validity = Validity { not_before: Some(start), not_after: Some(start + time::Duration::days(days.into())) };
        }
        let (not_before, not_after) = validity.period(lifetime)?;
        let now = OffsetDateTime::now_utc();
        let shown = |t: OffsetDateTime| t.format(&Rfc3339).unwrap_or_else(|_| t.to_string());
        if not_after <= now {
            if !self.allow_expired {
                return Err(Usage(format!(
                    "the certificate would already be expired: its validity ends {} (now is {}); \
                     pass a later --not-after or more --days, or --allow-expired to issue it anyway",
                    shown(not_after),
                    shown(now)
                ))
                .into());
            }
            tracing::warn!(not_after = %shown(not_after), "issuing an already expired certificate (--allow-expired): every peer will refuse it");
        } else if not_before > now {
            tracing::warn!(
                not_before = %shown(not_before),
                "the certificate is not valid yet: peers refuse it as not-yet-valid until then"
            );
        }
        Ok(validity)
    }
}

/// Days as a certificate lifetime.
fn lifetime_days(days: u32) -> time::Duration {
    time::Duration::days(days.into())
}

fn parse_time(text: &str) -> Result<OffsetDateTime, String> {
    OffsetDateTime::parse(text, &Rfc3339)
        .map_err(|e| format!("expected an RFC 3339 time like 2030-01-01T00:00:00Z: {e}"))
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a new PKI: an RSA-4096 root CA (20 years), the collector's server
    /// certificate (1 year unless --collector-days) and an empty revocation list.
    Init {
        #[command(flatten)]
        dir: DirArg,
        /// How many days the collector's server certificate is valid. TLS
        /// scanners flag more than 366.
        #[arg(long, value_name = "DAYS", default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..=3650))]
        collector_days: u32,
        /// A DNS name or IP address devices use to reach the collector; repeat for
        /// several. Default: localhost and 127.0.0.1.
        #[arg(long = "san", value_name = "NAME")]
        sans: Vec<String>,
        /// Replace an existing CA. Every certificate it signed stops working.
        #[arg(long)]
        force: bool,
    },
    /// Issue a device's certificate, private key and shared key, and the
    /// registration record to import on the collector. Switches and gateways
    /// also get an SSH key pair for the collector's SSH port.
    Device {
        #[command(flatten)]
        dir: DirArg,
        /// The organisation that owns the device (a-z 0-9 . _ -).
        #[arg(long, value_name = "ORG")]
        org: OrgId,
        /// The device's id, unique within the organisation (a-z 0-9 . _ -).
        #[arg(long = "device", value_name = "ID")]
        device: DeviceId,
        /// What the device is: ap, switch or gateway.
        #[arg(long, value_name = "KIND")]
        kind: DeviceKind,
        #[command(flatten)]
        validity: ValidityArgs,
        /// For a switch or gateway: register this OpenSSH public key
        /// (e.g. the device's own `/etc/glimpse/ssh_ed25519_key.pub`, made by
        /// `ssh-keygen -t ed25519`) instead of generating a key pair here.
        /// Ed25519 or ECDSA P-256/P-384 only.
        #[arg(long, value_name = "FILE")]
        ssh_key: Option<PathBuf>,
        /// The site of the organisation the device is installed at (a-z 0-9
        /// . _ -; e.g. berlin-hq). Written into the certificate's subject
        /// as L= and into the registration, from which the collector takes
        /// it; org-admins and support grants can be limited to sites. To
        /// move a device to another site, issue it again with --force.
        #[arg(long, value_name = "SITE")]
        site: Option<SiteId>,
        /// Replace the device's existing certificate, keys and registration.
        #[arg(long)]
        force: bool,
    },
    /// Issue an admin's client certificate for the collector's admin interface.
    Admin {
        #[command(flatten)]
        dir: DirArg,
        /// The admin's name, as it appears in audit logs (a-z 0-9 . _ -).
        #[arg(long, value_name = "NAME")]
        name: AdminName,
        /// operator (runs the collector, all organisations), org-admin (one
        /// organisation) or support (vendor support, read-only, one organisation).
        #[arg(long, value_name = "ROLE")]
        role: AdminRole,
        /// The organisation an org-admin or support admin is limited to.
        #[arg(long, value_name = "ORG")]
        org: Option<OrgId>,
        #[command(flatten)]
        validity: ValidityArgs,
        /// Replace the admin's existing certificate and key.
        #[arg(long)]
        force: bool,
    },
    /// Revoke a device's current certificate and rewrite the CA's revocation
    /// list (ca.crl.pem). Restart or reload the collector to enforce it.
    Revoke {
        #[command(flatten)]
        dir: DirArg,
        /// The device's organisation.
        #[arg(long, value_name = "ORG")]
        org: OrgId,
        /// The device's id.
        #[arg(long = "device", value_name = "ID")]
        device: DeviceId,
    },
    /// List registered devices, their certificates' expiry and whether they are revoked.
    List {
        #[command(flatten)]
        dir: DirArg,
    },
    /// Revoke admin or support certificates (for someone who left or changed
    /// role): marks them revoked in admins.json and rewrites the CA's
    /// revocation list. Reload the collector (SIGHUP) to refuse them on the
    /// admin port; the collector's API can also revoke one at once.
    RevokeAdmin {
        #[command(flatten)]
        dir: DirArg,
        /// The certificate's serial number, as `list-admins` prints it.
        #[arg(long, value_name = "HEX", required_unless_present = "name", conflicts_with = "name")]
        serial: Option<String>,
        /// Every certificate issued to this admin name that is not revoked yet.
        #[arg(long, value_name = "NAME")]
        name: Option<AdminName>,
    },
    /// List every admin and support certificate issued, its expiry and whether it is revoked.
    ListAdmins {
        #[command(flatten)]
        dir: DirArg,
    },
}

/// A mistake in how the tool was invoked, found after argument parsing.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Usage(String);

/// Runs the `glimpse-certs` command line; returns its exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { ExitCode::from(EXIT_USAGE) } else { ExitCode::SUCCESS };
        }
    };
    glimpse_files::logging::init(&cli.log, &glimpse_files::logging::LogConfig::default(), "info");

    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        // `list | head`: the reader closed the pipe, having what it wanted.
        Err(e) if glimpse_files::is_broken_pipe(e.as_ref()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("glimpse-certs: error: {e:#}");
            ExitCode::from(exit_code(&e))
        }
    }
}

/// The sysexits code of a failure (see [`EXIT_HELP`]).
fn exit_code(e: &anyhow::Error) -> u8 {
    if is_usage(e) {
        return EXIT_USAGE;
    }
    for cause in e.chain() {
        if let Some(err) = cause.downcast_ref::<CertsError>() {
            return match err {
                CertsError::Io { source, .. } if source.kind() == std::io::ErrorKind::PermissionDenied => 77,
                CertsError::Io { .. } => 74,
                CertsError::AlreadyExists { .. } => 73,
                CertsError::NoCa { .. } => 78,
                CertsError::KeyGeneration { .. } | CertsError::Build { .. } => 70,
                CertsError::Identity(_) => EXIT_USAGE,
                _ => 65,
            };
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return if io.kind() == std::io::ErrorKind::PermissionDenied { 77 } else { 74 };
        }
    }
    70
}

fn is_usage(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause.is::<Usage>()
            || matches!(
                cause.downcast_ref::<CertsError>(),
                Some(
                    CertsError::InvalidSan(_)
                        | CertsError::NoCollectorSans
                        | CertsError::InvalidValidity(_)
                        | CertsError::SshKeyForTls(_)
                )
            )
    })
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Init { dir, collector_days, sans, force } => {
            let mut opts =
                InitOptions { force, collector_lifetime: lifetime_days(collector_days), ..InitOptions::default() };
            if !sans.is_empty() {
                opts.collector_sans = sans;
            }
            crate::init(&dir.dir, &opts)?;
            let d = &dir.dir;
            glimpse_files::outln!("created a PKI in {}", d.display())?;
            glimpse_files::outln!("  root CA        {}", crate::ca_cert_path(d).display())?;
            glimpse_files::outln!(
                "  CA key         {}  (keep offline or tightly guarded)",
                crate::ca_key_path(d).display()
            )?;
            glimpse_files::outln!(
                "  collector      {} and {}",
                crate::collector_cert_path(d).display(),
                crate::collector_key_path(d).display()
            )?;
            glimpse_files::outln!("  collector for  {}", opts.collector_sans.join(", "))?;
            glimpse_files::outln!("  valid for      {collector_days} days")?;
            glimpse_files::outln!("  revocations    {}", crate::ca_crl_path(d).display())?;
        }
        Command::Device { dir, org, device, kind, validity, ssh_key, site, force } => {
            let identity = DeviceIdentity { org, device, kind };
            let ssh_public_key = match &ssh_key {
                Some(path) => Some(read_public_key(path)?),
                None => None,
            };
            let options = crate::DeviceOptions { ssh_public_key, site: site.clone(), force };
            let validity = validity.validity(crate::DEVICE_LIFETIME)?;
            let files = crate::issue_device_with(&dir.dir, &identity, &validity, &options).map_err(|e| match e {
                CertsError::SshKeyForTls(_) => anyhow::Error::new(Usage(e.to_string())),
                other => other.into(),
            })?;
            match &site {
                Some(site) => glimpse_files::outln!("issued device {identity} at site {site}")?,
                None => glimpse_files::outln!("issued device {identity} (no site)")?,
            }
            glimpse_files::outln!("  certificate   {}", files.cert.display())?;
            glimpse_files::outln!("  private key   {}", files.key.display())?;
            glimpse_files::outln!("  shared key    {}", files.shared_key.display())?;
            if let Some(path) = &files.ssh_key {
                glimpse_files::outln!("  SSH key       {}", path.display())?;
            }
            if let Some(path) = &files.ssh_public_key {
                glimpse_files::outln!("  SSH public    {}", path.display())?;
                glimpse_files::outln!("  SSH user      {}/{}", identity.org, identity.device)?;
            }
            glimpse_files::outln!("  registration  {}", files.registration.display())?;
            glimpse_files::outln!(
                "install the certificate, private key, shared key and {} on the device;",
                crate::ca_cert_path(&dir.dir).display()
            )?;
            glimpse_files::outln!("import the registration on the collector.")?;
        }
        Command::Admin { dir, name, role, org, validity, force } => {
            let identity = AdminIdentity::new(name, role, org)
                .map_err(|e| Usage(format!("{e} (use --org ORG with org-admin and support, not with operator)")))?;
            let files = crate::issue_admin(&dir.dir, &identity, &validity.validity(crate::ADMIN_LIFETIME)?, force)?;
            let scope = identity.org.as_ref().map_or("all organisations", OrgId::as_str);
            glimpse_files::outln!("issued {} certificate for {} ({scope})", identity.role, identity.name)?;
            glimpse_files::outln!("  certificate   {}", files.cert.display())?;
            glimpse_files::outln!("  private key   {}", files.key.display())?;
        }
        Command::Revoke { dir, org, device } => {
            crate::revoke(&dir.dir, &org, &device)?;
            glimpse_files::outln!("revoked {org}/{device}; {} now lists it", crate::ca_crl_path(&dir.dir).display())?;
            glimpse_files::outln!("restart or reload the collector so that it loads the new revocation list.")?;
        }
        Command::List { dir } => list(&dir.dir)?,
        Command::RevokeAdmin { dir, serial, name } => {
            let which = match (serial, name) {
                (Some(serial), _) => crate::AdminSelector::Serial(serial),
                (None, Some(name)) => crate::AdminSelector::Name(name),
                (None, None) => return Err(Usage("give --serial or --name".into()).into()),
            };
            for entry in crate::revoke_admin(&dir.dir, &which)? {
                println!("revoked {} certificate of {} (serial {})", entry.role, entry.name, entry.serial);
            }
            println!(
                "{} now lists it; reload the collector (SIGHUP) to enforce it.",
                crate::ca_crl_path(&dir.dir).display()
            );
        }
        Command::ListAdmins { dir } => list_admins(&dir.dir)?,
    }
    Ok(())
}

/// Reads a public key file given on the command line, bounded like every
/// other input.
fn read_public_key(path: &Path) -> anyhow::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(crate::ssh::MAX_PUBLIC_KEY_LEN as u64 + 1).read_to_string(&mut text))
        .with_context(|| format!("cannot read the SSH public key {}", path.display()))?;
    Ok(text)
}

fn list_admins(dir: &Path) -> anyhow::Result<()> {
    let admins = crate::load_admins(dir)?;
    if admins.is_empty() {
        println!("no admin certificates recorded in {}", crate::admins_path(dir).display());
        return Ok(());
    }
    let now = OffsetDateTime::now_utc();
    let date = |t: OffsetDateTime| -> anyhow::Result<String> {
        let text = t.format(&Rfc3339).context("cannot format a date")?;
        Ok(text.get(..10).unwrap_or(&text).to_owned())
    };
    let rows = admins
        .iter()
        .map(|a| {
            let status = match a.revoked_at {
                Some(at) => format!("revoked {}", date(at)?),
                None if a.not_after <= now => "expired".to_owned(),
                None => "active".to_owned(),
            };
            Ok([
                a.name.to_string(),
                a.role.to_string(),
                a.org.as_ref().map_or("*".to_owned(), OrgId::to_string),
                date(a.not_after)?,
                status,
                a.serial.clone(),
            ])
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    print_table(["NAME", "ROLE", "ORG", "EXPIRES", "STATUS", "SERIAL"], &rows)?;
    let active = rows.iter().filter(|r| r[4] == "active").count();
    println!("{} admin certificates: {active} active, {} revoked or expired", rows.len(), rows.len() - active);
    Ok(())
}

/// Prints rows under a header, in columns.
/// Prints a table; a closed pipe is an error the caller passes up, not a
/// panic.
fn print_table<const N: usize>(header: [&str; N], rows: &[[String; N]]) -> std::io::Result<()> {
    let mut widths = header.map(str::len);
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let print_row = |cells: [&str; N]| {
        let line =
            cells.iter().zip(widths).map(|(cell, width)| format!("{cell:<width$}")).collect::<Vec<_>>().join("  ");
        glimpse_files::outln!("{}", line.trim_end())
    };
    print_row(header)?;
    for row in rows {
        print_row(row.each_ref().map(String::as_str))?;
    }
    Ok(())
}

fn list(dir: &Path) -> anyhow::Result<()> {
    let registrations = crate::load_registrations(dir)?;
    let revoked = crate::load_revoked(dir)?;
    if registrations.is_empty() {
        glimpse_files::outln!("no devices registered in {}", dir.display())?;
        return Ok(());
    }
    let now = OffsetDateTime::now_utc();
    let date = |t: OffsetDateTime| -> anyhow::Result<String> {
        let text = t.format(&Rfc3339).context("cannot format a date")?;
        Ok(text.get(..10).unwrap_or(&text).to_owned())
    };
    let rows = registrations
        .iter()
        .map(|r| {
            let status = match revoked.iter().find(|e| e.serial == r.cert_serial) {
                Some(entry) => format!("revoked {}", date(entry.revoked_at)?),
                None if r.not_after <= now => "expired".to_owned(),
                None => "active".to_owned(),
            };
            Ok([
                r.org.to_string(),
                r.device.to_string(),
                r.kind.to_string(),
                date(r.not_after)?,
                status,
                r.cert_serial.clone(),
                r.site.as_ref().map_or_else(|| "-".to_owned(), ToString::to_string),
            ])
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    print_table(["ORG", "DEVICE", "KIND", "EXPIRES", "STATUS", "SERIAL", "SITE"], &rows)?;
    let active = rows.iter().filter(|r| r[4] == "active").count();
    glimpse_files::outln!("{} devices: {active} active, {} revoked or expired", rows.len(), rows.len() - active)?;
    Ok(())
}
