//! Turning the configured collector addresses into the candidates of one
//! connection attempt: every address each name resolves to, IPv4 and IPv6,
//! looked up afresh each time (a collector may have moved), all names at
//! once and within a deadline. Which candidate to try is
//! [`super::failover`]'s business.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::task::JoinSet;

use crate::config::CollectorAddress;

use super::failover::{candidates, Candidate, MAX_CANDIDATES};

/// What one resolution found.
#[derive(Debug, Default)]
pub struct Resolved {
    /// The candidates, bounded ([`super::failover::candidates`]).
    pub candidates: Vec<Candidate>,
    /// The configured addresses that did not resolve (index into the
    /// configured list, and why), for the log.
    pub failures: Vec<(usize, String)>,
}

/// Resolves every address in `collectors` within `timeout`. An IP address
/// needs no lookup; names are looked up concurrently, and a name whose
/// lookup fails or is not done by the deadline is left out (and named in
/// [`Resolved::failures`]) while the others are used.
pub async fn resolve(collectors: &[CollectorAddress], timeout: Duration) -> Resolved {
    let mut per_name: Vec<Vec<SocketAddr>> = vec![Vec::new(); collectors.len()];
    let mut failures = Vec::new();
    let mut lookups = JoinSet::new();
    for (index, collector) in collectors.iter().enumerate() {
        match collector.host().parse::<IpAddr>() {
            Ok(ip) => per_name[index].push(SocketAddr::new(ip, collector.port())),
            Err(_) => {
                let target = (collector.host().to_owned(), collector.port());
                lookups.spawn(async move {
                    // getaddrinfo: every address of the name, both families.
                    let found = tokio::net::lookup_host(target).await;
                    (index, found.map(|addrs| addrs.take(MAX_CANDIDATES).collect::<Vec<_>>()))
                });
            }
        }
    }
    let deadline = tokio::time::Instant::now() + timeout;
    while !lookups.is_empty() {
        match tokio::time::timeout_at(deadline, lookups.join_next()).await {
            Ok(Some(Ok((index, Ok(addrs))))) if addrs.is_empty() => {
                failures.push((index, "the name has no addresses".to_owned()));
            }
            Ok(Some(Ok((index, Ok(addrs))))) => per_name[index] = addrs,
            Ok(Some(Ok((index, Err(e))))) => failures.push((index, e.to_string())),
            // A lookup task panicked or was cancelled: its name stays unresolved.
            Ok(Some(Err(_))) => {}
            Ok(None) => break,
            Err(_) => break,
        }
    }
    // What is still running missed the deadline.
    for (index, addrs) in per_name.iter().enumerate() {
        if addrs.is_empty() && !failures.iter().any(|(i, _)| *i == index) {
            failures.push((index, format!("not resolved within {timeout:?}")));
        }
    }
    lookups.abort_all();
    failures.sort_by_key(|(index, _)| *index);
    Resolved { candidates: candidates(&per_name), failures }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ip_addresses_need_no_lookup_and_keep_their_order() {
        let collectors: Vec<CollectorAddress> = ["192.0.2.7:7443", "[2001:db8::1]:7443", "192.0.2.7:7443"]
            .iter()
            .map(|a| CollectorAddress::parse(a).unwrap())
            .collect();
        let resolved = resolve(&collectors, Duration::from_secs(1)).await;
        let addrs: Vec<String> = resolved.candidates.iter().map(|c| c.addr.to_string()).collect();
        assert_eq!(addrs, ["192.0.2.7:7443", "[2001:db8::1]:7443"], "the repeat is dropped");
        assert!(resolved.failures.is_empty());
    }

    #[tokio::test]
    async fn a_name_that_does_not_resolve_is_reported_and_the_others_used() {
        let collectors: Vec<CollectorAddress> =
            ["collector.invalid:7443", "192.0.2.7:7443"].iter().map(|a| CollectorAddress::parse(a).unwrap()).collect();
        let resolved = resolve(&collectors, Duration::from_secs(10)).await;
        assert_eq!(resolved.candidates.len(), 1);
        assert_eq!(resolved.candidates[0].origin, 1);
        assert_eq!(resolved.failures.len(), 1);
        assert_eq!(resolved.failures[0].0, 0);
    }
}
