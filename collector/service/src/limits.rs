//! The open-file limit: raised to the hard limit at start, and
//! `max_connections` capped below it so that a flood of connections meets
//! the collector's own refusal rather than "Too many open files".

use tracing::{info, warn};

/// Descriptors kept back from connections: the store's segments and key
/// store, the audit log, the listeners, the admin port and accepting a
/// connection only to refuse it.
pub const RESERVED_FILES: u64 = 256;

/// What [`plan`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FilePlan {
    /// The soft limit to set (`None`: leave it).
    pub raise_to: Option<u64>,
    /// The connections allowed (ingest over TLS and SSH together).
    pub max_connections: usize,
}

/// The soft limit to ask for and the connections that fit, given the
/// current `soft` and `hard` limits (`None`: unlimited) and the configured
/// `max_connections`. Pure, for tests.
pub fn plan(soft: Option<u64>, hard: Option<u64>, configured: usize) -> FilePlan {
    let raise_to = match (soft, hard) {
        (Some(soft), Some(hard)) if hard > soft => Some(hard),
        (Some(_), None) => None,
        _ => None,
    };
    let effective = raise_to.or(soft);
    let max_connections = match effective {
        Some(limit) => {
            let room = limit.saturating_sub(RESERVED_FILES).max(1);
            configured.min(usize::try_from(room).unwrap_or(usize::MAX))
        }
        None => configured,
    };
    FilePlan { raise_to, max_connections }
}

/// Raises this process's soft open-file limit to its hard limit and returns
/// how many connections fit under it, logging what was done.
pub fn apply(configured: usize) -> usize {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let current = getrlimit(Resource::Nofile);
    let wanted = plan(current.current, current.maximum, configured);
    let mut soft = current.current;
    if let Some(to) = wanted.raise_to {
        match setrlimit(Resource::Nofile, Rlimit { current: Some(to), maximum: current.maximum }) {
            Ok(()) => {
                info!(from = ?current.current, to, "open-file limit raised to the hard limit");
                soft = Some(to);
            }
            Err(e) => warn!(limit = ?current.current, "cannot raise the open-file limit to {to}: {e}"),
        }
    }
    let fits = plan(soft, soft, configured).max_connections;
    if fits < configured {
        warn!(
            configured,
            max_connections = fits,
            open_file_limit = ?soft,
            reserved = RESERVED_FILES,
            "limits.max_connections lowered to fit the open-file limit (raise the hard limit, e.g. LimitNOFILE=, to allow more)"
        );
    } else {
        info!(max_connections = fits, open_file_limit = ?soft, "connection limit fits the open-file limit");
    }
    fits
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_goes_to_the_hard_one_and_connections_fit_below_it() {
        assert_eq!(
            plan(Some(1024), Some(524_288), 20_000),
            FilePlan { raise_to: Some(524_288), max_connections: 20_000 }
        );
        assert_eq!(plan(Some(1024), Some(1024), 20_000), FilePlan { raise_to: None, max_connections: 768 });
        assert_eq!(plan(Some(1024), Some(4096), 20_000).max_connections, 4096 - 256);
        assert_eq!(plan(None, None, 20_000), FilePlan { raise_to: None, max_connections: 20_000 });
        assert_eq!(plan(Some(100), Some(100), 20_000).max_connections, 1, "never zero");
        assert_eq!(plan(Some(8192), None, 100).max_connections, 100);
    }

    #[test]
    fn applying_raises_this_process_to_its_hard_limit() {
        let fits = apply(10);
        assert_eq!(fits, 10);
        let now = rustix::process::getrlimit(rustix::process::Resource::Nofile);
        assert_eq!(now.current, now.maximum);
    }
}
