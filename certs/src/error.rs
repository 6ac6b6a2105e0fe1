//! The one error type of the PKI library.

use std::io;
use std::path::PathBuf;

use glimpse_common::certificate::CertificateError;
use glimpse_common::identity::{DeviceId, IdentityError, OrgId};
use glimpse_common::registration::RecordError;
use glimpse_common::secret::SecretKeyError;
use glimpse_common::ssh_keys::SshKeyError;

/// Something a PKI operation could not do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertsError {
    /// Reading, writing or creating a file or directory failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done ("read", "write", "create directory").
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's reason.
        source: io::Error,
    },
    /// A file exists and `force` was not given.
    #[error("refusing to overwrite {}: it already exists (use --force to replace it)", path.display())]
    AlreadyExists {
        /// The existing file.
        path: PathBuf,
    },
    /// The directory has no CA certificate or key.
    #[error("no CA in {}: missing {}; run `glimpse-certs init` first", dir.display(), missing.display())]
    NoCa {
        /// The PKI directory.
        dir: PathBuf,
        /// The file that is missing.
        missing: PathBuf,
    },
    /// A PEM file did not hold what it should.
    #[error("{}: {problem}", path.display())]
    BadPem {
        /// The file.
        path: PathBuf,
        /// What was wrong with it.
        problem: String,
    },
    /// `ca.key` is not the key of `ca.pem`, or a freshly signed object did not verify against the CA.
    #[error("{}: {problem}", path.display())]
    CaMismatch {
        /// The CA file concerned.
        path: PathBuf,
        /// What did not match.
        problem: &'static str,
    },
    /// Generating a key or random serial failed.
    #[error("cannot generate {what}: {reason}")]
    KeyGeneration {
        /// Which key or value.
        what: &'static str,
        /// The library's reason.
        reason: String,
    },
    /// An SSH public key was unreadable or of an algorithm devices may not use.
    #[error("SSH public key: {reason}")]
    SshKey {
        /// What was wrong with it.
        reason: String,
    },
    /// `--ssh-key` was given for an access point, which uses TLS only.
    #[error("device kind {0} connects over TLS; SSH keys are for switches and gateways")]
    SshKeyForTls(glimpse_common::identity::DeviceKind),
    /// rcgen refused to build or sign a certificate or CRL.
    #[error("cannot build {what}: {source}")]
    Build {
        /// What was being built.
        what: &'static str,
        /// rcgen's reason.
        source: rcgen::Error,
    },
    /// A collector subject alternative name is neither a DNS name nor an IP address.
    #[error("invalid collector name {0:?}: expected a DNS name or an IP address")]
    InvalidSan(String),
    /// No subject alternative names were given for the collector.
    #[error("the collector certificate needs at least one DNS name or IP address")]
    NoCollectorSans,
    /// The requested validity period is empty or not representable.
    #[error("invalid validity: {0}")]
    InvalidValidity(&'static str),
    /// A JSON record (registration, revocation list) could not be parsed or written.
    #[error("{}: invalid record: {source}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// serde_json's reason.
        source: serde_json::Error,
    },
    /// A JSON record holds a value that is not well-formed.
    #[error("{}: {problem}", path.display())]
    BadRecord {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        problem: String,
    },
    /// A registration record does not describe the device its path names.
    #[error("{}: record is for {org}/{device}, not the device its path names", path.display())]
    RegistrationMismatch {
        /// The file.
        path: PathBuf,
        /// The organisation in the record.
        org: OrgId,
        /// The device in the record.
        device: DeviceId,
    },
    /// A file or directory under `registrations/` has a name that is not a valid identity.
    #[error("{}: not named after a valid organisation or device: {source}", path.display())]
    BadRecordName {
        /// The file or directory.
        path: PathBuf,
        /// Why the name is invalid.
        source: IdentityError,
    },
    /// There is no registration for the device.
    #[error("unknown device {org}/{device}: no registration record")]
    UnknownDevice {
        /// The organisation.
        org: OrgId,
        /// The device.
        device: DeviceId,
    },
    /// No admin certificate in `admins.json` matches.
    #[error("no admin certificate {0} in admins.json (see `glimpse-certs list-admins`)")]
    UnknownAdmin(String),
    /// Every admin certificate that matches is already revoked.
    #[error("admin certificate {0} is already revoked")]
    AdminAlreadyRevoked(String),
    /// The device's current certificate is already revoked.
    #[error("device {org}/{device} (serial {serial}) is already revoked")]
    AlreadyRevoked {
        /// The organisation.
        org: OrgId,
        /// The device.
        device: DeviceId,
        /// The revoked serial, hex.
        serial: String,
    },
    /// The CRL on disk could not be parsed.
    #[error("{}: not a readable CRL: {problem}", path.display())]
    BadCrl {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        problem: String,
    },
    /// A certificate is malformed or carries no single Glimpse identity.
    #[error(transparent)]
    Certificate(#[from] CertificateError),
    /// A registration or revocation record is not one the collector would accept.
    #[error("{}: {source}", path.display())]
    Record {
        /// The file.
        path: PathBuf,
        /// Why.
        source: RecordError,
    },
    /// The certificate's identity URI, or a name given by the caller, is invalid.
    #[error("invalid identity: {0}")]
    Identity(#[from] IdentityError),
    /// A registration's shared key is not 64 hex digits.
    #[error("invalid shared key: {0}")]
    SharedKey(#[from] SecretKeyError),
}

impl From<SshKeyError> for CertsError {
    fn from(e: SshKeyError) -> Self {
        match e {
            SshKeyError::Refused(reason) => CertsError::SshKey { reason },
            other => CertsError::KeyGeneration { what: "SSH key", reason: other.to_string() },
        }
    }
}

impl CertsError {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        CertsError::Io { action, path: path.into(), source }
    }

    pub(crate) fn build(what: &'static str) -> impl FnOnce(rcgen::Error) -> Self {
        move |source| CertsError::Build { what, source }
    }
}
