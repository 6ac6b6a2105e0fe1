//! Exit codes: one sysexits-style code per class of failure, decided in
//! one place ([`exit_code`]) from the error chain, so that a script or a
//! supervisor can tell bad usage from damaged data from a collector that
//! is not there.

use std::io::ErrorKind;

use glimpse_store::keys::KeyError;

/// Success.
pub const OK: u8 = 0;
/// Bad usage: arguments, options (EX_USAGE).
pub const USAGE: u8 = 64;
/// Damaged or incomplete data: a damaged key store, a partial export, lost
/// segments (EX_DATAERR).
pub const DATA: u8 = 65;
/// A service is unavailable: the collector's admin port does not answer
/// (EX_UNAVAILABLE).
pub const UNAVAILABLE: u8 = 69;
/// An internal error, a bug (EX_SOFTWARE).
pub const SOFTWARE: u8 = 70;
/// An input/output error (EX_IOERR).
pub const IO: u8 = 74;
/// A temporary failure: try again later (the store is in use, the disk is
/// full, the clock needs confirming) (EX_TEMPFAIL).
pub const TEMPORARY: u8 = 75;
/// Permission denied, or a private file others can read (EX_NOPERM).
pub const PERMISSION: u8 = 77;
/// Configuration error: the config file, the master key file (EX_CONFIG).
pub const CONFIG: u8 = 78;

/// The exit codes, for `--help`.
pub const HELP: &str = "\
Exit status:
  0   success
  64  bad usage (arguments, options)
  65  damaged or incomplete data: a damaged key store, segments missing or cut short, an export that
      skipped damaged regions (partial), records dated after the clock
  69  the collector's admin port does not answer
  70  internal error (a bug: please report it)
  74  input/output error
  75  temporary failure, try again: the store is in use by a running collector, the disk is full,
      the clock needs confirming (sweep --accept-clock)
  77  permission denied, or a private file that others can read
  78  configuration error: the config file, the master key file";

/// A command-line usage problem found after parsing (exit 64).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// A configuration problem found by a command (exit 78).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigProblem(pub String);

/// A command finished but its result is incomplete (exit 65): an export
/// that skipped damaged regions, a verify that found losses.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct IncompleteError(pub String);

/// A private file that others may read (exit 77). Other checks of file
/// permissions map to 77 by returning this (or an I/O `PermissionDenied`).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PermissionError(pub String);

/// The exit code for an error: the first cause in the chain that says
/// what class it is, else 70 (a failure nothing classified is a bug).
pub fn exit_code(error: &anyhow::Error) -> u8 {
    for cause in error.chain() {
        if let Some(code) = classify(cause) {
            return code;
        }
    }
    SOFTWARE
}

fn io_code(e: &std::io::Error) -> u8 {
    match e.kind() {
        ErrorKind::PermissionDenied | ErrorKind::ReadOnlyFilesystem => PERMISSION,
        ErrorKind::StorageFull | ErrorKind::QuotaExceeded | ErrorKind::WouldBlock | ErrorKind::TimedOut => TEMPORARY,
        ErrorKind::InvalidData | ErrorKind::UnexpectedEof => DATA,
        _ => IO,
    }
}

fn classify(cause: &(dyn std::error::Error + 'static)) -> Option<u8> {
    if cause.is::<UsageError>() {
        return Some(USAGE);
    }
    if cause.is::<ConfigProblem>() {
        return Some(CONFIG);
    }
    if cause.is::<IncompleteError>() {
        return Some(DATA);
    }
    if cause.is::<PermissionError>() {
        return Some(PERMISSION);
    }
    // `#[error(transparent)]` variants hand `source()` on to the inner
    // error's source, skipping the inner error itself: look inside.
    if let Some(e) = cause.downcast_ref::<crate::service::ServiceError>() {
        use crate::service::ServiceError as S;
        if e.is_permission_refusal() {
            return Some(PERMISSION);
        }
        match e {
            S::Key(inner) => return classify(inner),
            S::Store(inner) => return classify(inner),
            S::Tls(_) => return Some(CONFIG),
            S::Alerts(crate::alerts::AlertsError::Secret(glimpse_files::SecretFileError::Permissions(_))) => {
                return Some(PERMISSION)
            }
            S::Alerts(_) => return Some(CONFIG),
            S::Bind { source, .. } => return Some(io_code(source)),
            S::Postgres(inner) => return classify(inner),
            S::Objects(inner) => {
                use glimpse_objects::ObjectsError as O;
                return Some(match inner {
                    O::Permissions(_) => PERMISSION,
                    O::Config(_) | O::Secret { .. } | O::Tls(_) => CONFIG,
                    _ => SOFTWARE,
                });
            }
            _ => {}
        }
    }
    if let Some(e) = cause.downcast_ref::<glimpse_postgres::PgError>() {
        use glimpse_postgres::PgError as P;
        return Some(match e {
            P::Password(glimpse_files::SecretFileError::Permissions(_)) => PERMISSION,
            P::Config(_) | P::Password(_) | P::Tls(_) | P::Schema { .. } => CONFIG,
            P::Connect { .. } => UNAVAILABLE,
            P::Control(c) if c.is_transient() => TEMPORARY,
            _ => SOFTWARE,
        });
    }
    if let Some(e) = cause.downcast_ref::<glimpse_store::store::StoreError>() {
        use glimpse_store::store::StoreError as S;
        match e {
            S::Key(inner) => return classify(inner),
            S::Audit(inner) => return classify(inner),
            S::Segment(inner) => return classify(inner),
            S::Policy(_) => return Some(DATA),
            _ => {}
        }
    }
    if let Some(e) = cause.downcast_ref::<KeyError>() {
        return Some(match e {
            KeyError::MasterKeyPermissions { .. } => PERMISSION,
            KeyError::MasterKeyMissing { .. }
            | KeyError::MasterKeyFormat { .. }
            | KeyError::MasterKeyExists { .. }
            | KeyError::WrongMasterKey { .. } => CONFIG,
            KeyError::MasterKeyIo { source, .. } | KeyError::Io { source, .. } => io_code(source),
            KeyError::Locked { .. } => TEMPORARY,
            KeyError::Intact { .. } => OK,
            KeyError::Control(c) if c.is_transient() => TEMPORARY,
            KeyError::Random => SOFTWARE,
            _ => DATA,
        });
    }
    if let Some(e) = cause.downcast_ref::<glimpse_store::store::StoreError>() {
        match e {
            glimpse_store::store::StoreError::NoOrgKey { .. } => return Some(DATA),
            e if e.is_transient() => return Some(TEMPORARY),
            _ => {}
        }
    }
    if let Some(e) = cause.downcast_ref::<glimpse_store::retention::RetentionError>() {
        use glimpse_store::retention::RetentionError as R;
        return Some(match e {
            R::OutOfBounds(_) => CONFIG,
            R::ClockBehind { .. } | R::ClockJump { .. } => TEMPORARY,
            R::Io { source, .. } => io_code(source),
            _ => SOFTWARE,
        });
    }
    if let Some(e) = cause.downcast_ref::<glimpse_store::export::ExportError>() {
        use glimpse_store::export::ExportError as E;
        match e {
            E::BadTime(_) | E::PcapOfMetadata | E::FilterOfMetadata | E::TooManyDevices { .. } | E::Cursor(_) => {
                return Some(USAGE)
            }
            E::Io(io) => return Some(io_code(io)),
            _ => {}
        }
    }
    if cause.is::<glimpse_common::capture::FilterError>() || cause.is::<glimpse_store::export::CursorError>() {
        return Some(USAGE);
    }
    if cause.is::<crate::config::ConfigError>() || cause.is::<glimpse_common::tls::TlsConfigError>() {
        return Some(CONFIG);
    }
    match cause.downcast_ref::<glimpse_admin_client::AdminClientError>() {
        Some(glimpse_admin_client::AdminClientError::Connect { .. }) => return Some(UNAVAILABLE),
        Some(glimpse_admin_client::AdminClientError::Problem(p)) if p.status == 401 || p.status == 403 => {
            return Some(PERMISSION)
        }
        Some(glimpse_admin_client::AdminClientError::Problem(p)) if p.status == 429 || p.status >= 500 => {
            return Some(UNAVAILABLE)
        }
        Some(glimpse_admin_client::AdminClientError::Problem(_)) => return Some(DATA),
        _ => {}
    }
    if let Some(e) = cause.downcast_ref::<glimpse_store::audit::AuditError>() {
        return Some(match e {
            glimpse_store::audit::AuditError::Tampered { .. } => DATA,
            glimpse_store::audit::AuditError::Io { source, .. } => io_code(source),
            _ => SOFTWARE,
        });
    }
    if let Some(e) = cause.downcast_ref::<glimpse_store::store::SegmentError>() {
        return Some(match e {
            glimpse_store::store::SegmentError::Io { source, .. } => io_code(source),
            _ => SOFTWARE,
        });
    }
    if let Some(e) = cause.downcast_ref::<std::io::Error>() {
        return Some(io_code(e));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_class_has_its_code() {
        let code = |e: anyhow::Error| exit_code(&e);
        assert_eq!(code(UsageError("x".into()).into()), USAGE);
        assert_eq!(code(anyhow::Error::new(IncompleteError("partial".into())).context("export")), DATA);
        let damaged = KeyError::Damaged { path: "/d/glimpse.redb".into(), detail: "bad".into() };
        assert_eq!(code(anyhow::Error::new(damaged).context("starting collector")), DATA);
        let wrapped = crate::service::ServiceError::Key(KeyError::Locked { path: "/d/glimpse.redb".into() });
        assert_eq!(code(anyhow::Error::new(wrapped).context("starting collector")), TEMPORARY);
        assert_eq!(code(KeyError::Locked { path: "/d/glimpse.redb".into() }.into()), TEMPORARY);
        assert_eq!(code(KeyError::MasterKeyPermissions { path: "/k".into(), mode: 0o644 }.into()), PERMISSION);
        assert_eq!(code(KeyError::MasterKeyMissing { path: "/k".into() }.into()), CONFIG);
        assert_eq!(code(std::io::Error::from(ErrorKind::PermissionDenied).into()), PERMISSION);
        assert_eq!(code(std::io::Error::from(ErrorKind::BrokenPipe).into()), IO);
        let unreachable = glimpse_admin_client::AdminClientError::Connect {
            address: "127.0.0.1:1".into(),
            reason: "connection refused".into(),
        };
        assert_eq!(code(unreachable.into()), UNAVAILABLE);
        assert_eq!(code(anyhow::anyhow!("something unforeseen")), SOFTWARE);
    }
}
