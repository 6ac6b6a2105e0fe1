//! The simulated devices: a PKI, one certificate, key and shared key (or SSH
//! key) per device, issued once and kept in the bench directory so that the
//! next run with as many devices or fewer starts streaming at once.

use std::path::{Path, PathBuf};

use glimpse_agent::AgentConfig;
use glimpse_common::identity::{DeviceId, DeviceIdentity, DeviceKind, OrgId};

use super::{BenchError, Transport};

/// The devices of a run and where their files are.
#[derive(Debug, Clone)]
pub struct Fleet {
    /// The `glimpse-certs` directory they were issued from.
    pub pki: PathBuf,
    /// Every simulated device, in connection order.
    pub devices: Vec<DeviceIdentity>,
}

/// The organisations the devices are spread over: `bench` alone, or
/// `bench-1` .. `bench-K`.
pub fn org_names(orgs: usize) -> Vec<OrgId> {
    let names: Vec<String> =
        if orgs <= 1 { vec!["bench".to_owned()] } else { (1..=orgs).map(|k| format!("bench-{k}")).collect() };
    names.into_iter().filter_map(|n| OrgId::new(n).ok()).collect()
}

/// Device `i` of the fleet: access points (TLS) or switches (SSH), spread
/// round-robin over the organisations.
fn identity(i: usize, orgs: &[OrgId], transport: Transport) -> Result<DeviceIdentity, BenchError> {
    let (kind, prefix) = match transport {
        Transport::Tls => (DeviceKind::Ap, "ap"),
        Transport::Ssh => (DeviceKind::Switch, "sw"),
    };
    let device =
        DeviceId::new(format!("{prefix}-{:05}", i + 1)).map_err(|e| BenchError::setup("a device id", e.to_string()))?;
    Ok(DeviceIdentity { org: orgs[i % orgs.len()].clone(), device, kind })
}

/// Which of `collectors` collectors device `i` connects to: round-robin,
/// counted within its organisation (devices go round-robin over the
/// organisations too, [`identity`]), so that every organisation's devices
/// are spread over every collector. A plain `i % collectors` would put all
/// of an organisation on one collector whenever the two counts share a
/// factor (two organisations, two collectors), and the collectors would
/// never write the same organisation's objects at once, as they do behind
/// a real load balancer.
pub fn collector_for(i: usize, orgs: usize, collectors: usize) -> usize {
    (i / orgs.max(1)) % collectors.max(1)
}

/// Makes the PKI in `pki` if it has none, and issues every device that does
/// not have its files yet, on all cores (each certificate is an RSA-4096
/// signature by the CA).
pub fn prepare(pki: &Path, devices: usize, orgs: usize, transport: Transport) -> Result<Fleet, BenchError> {
    if !glimpse_certs::ca_cert_path(pki).exists() {
        eprintln!("creating a PKI in {} (RSA-4096 root CA; takes a few seconds)", pki.display());
        glimpse_certs::init(pki, &glimpse_certs::InitOptions::default())
            .map_err(|e| BenchError::setup("the bench PKI", e.to_string()))?;
    }
    let orgs = org_names(orgs);
    let identities = (0..devices).map(|i| identity(i, &orgs, transport)).collect::<Result<Vec<_>, _>>()?;
    let missing: Vec<&DeviceIdentity> = identities
        .iter()
        .filter(|id| !glimpse_certs::device_dir(pki, &id.org, &id.device).join("device.pem").exists())
        .collect();
    if !missing.is_empty() {
        eprintln!("issuing {} device certificates in {} (kept for later runs)", missing.len(), pki.display());
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let chunk = missing.len().div_ceil(threads);
        let validity = glimpse_certs::Validity::default();
        std::thread::scope(|scope| {
            let workers: Vec<_> = missing
                .chunks(chunk.max(1))
                .map(|part| {
                    let validity = &validity;
                    scope.spawn(move || {
                        for id in part {
                            glimpse_certs::issue_device(pki, id, validity, true)
                                .map_err(|e| BenchError::setup(format!("device {id}"), e.to_string()))?;
                        }
                        Ok::<(), BenchError>(())
                    })
                })
                .collect();
            workers
                .into_iter()
                .try_for_each(|w| w.join().unwrap_or_else(|_| Err(BenchError::setup("issuing", "a worker panicked"))))
        })?;
    }
    Ok(Fleet { pki: pki.to_owned(), devices: identities })
}

/// Where a device of the fleet connects.
#[derive(Debug, Clone)]
pub enum Link {
    /// Mutual TLS to this address, whose certificate names `server_name`.
    Tls {
        /// `host:port`.
        address: String,
        /// The name in the collector's certificate.
        server_name: String,
    },
    /// SSH to this address, pinning the collector's host key.
    Ssh {
        /// `host:port`.
        address: String,
        /// `SHA256:...`, as `glimpse-collector` prints it.
        host_key_fingerprint: String,
    },
}

impl Fleet {
    /// An agent configuration for `identity` pointed at `link`, as a device
    /// would have it (only the transport parts are used by the load tool).
    pub fn agent_config(
        &self,
        identity: &DeviceIdentity,
        link: &Link,
        state: &Path,
    ) -> Result<AgentConfig, BenchError> {
        let files = glimpse_certs::device_dir(&self.pki, &identity.org, &identity.device);
        let section = match link {
            Link::Tls { address, server_name } => format!(
                "[collector]\naddress = \"{address}\"\nserver_name = \"{server_name}\"\n\
                 [tls]\nca = {ca:?}\ncert = {cert:?}\nkey = {key:?}\nshared_key = {psk:?}\n",
                ca = glimpse_certs::ca_cert_path(&self.pki),
                cert = files.join("device.pem"),
                key = files.join("device.key"),
                psk = files.join("device.psk"),
            ),
            Link::Ssh { address, host_key_fingerprint } => format!(
                "[collector]\naddress = \"{address}\"\ntransport = \"ssh\"\n\
                 [ssh]\nkey = {key:?}\nhost_key_fingerprint = \"{host_key_fingerprint}\"\n",
                key = files.join("ssh_ed25519_key"),
            ),
        };
        let text = format!(
            "[device]\norg = \"{org}\"\nid = \"{id}\"\nkind = \"{kind}\"\n{section}\
             [transport]\nconnect_timeout_secs = 60\n\
             [capture]\nconsent_file = {consent:?}\n\
             [spool]\npath = {spool:?}\n",
            org = identity.org,
            id = identity.device,
            kind = identity.kind,
            consent = state.join(format!("{}-{}.consent", identity.org, identity.device)),
            spool = state.join(format!("{}-{}.spool", identity.org, identity.device)),
        );
        AgentConfig::parse(&text, Path::new("glimpse-bench agent config"), Path::new("/"))
            .map_err(|e| BenchError::setup(format!("the agent config of {identity}"), e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_are_spread_round_robin_over_organisations() {
        let orgs = org_names(3);
        let ids: Vec<_> = (0..6).map(|i| identity(i, &orgs, Transport::Tls).unwrap()).collect();
        assert_eq!(ids[0].org.as_str(), "bench-1");
        assert_eq!(ids[4].org.as_str(), "bench-2");
        assert_eq!(ids[5].device.as_str(), "ap-00006");
        assert_eq!(org_names(1)[0].as_str(), "bench");
        assert_eq!(identity(0, &orgs, Transport::Ssh).unwrap().kind, DeviceKind::Switch);
    }

    #[test]
    fn devices_are_spread_round_robin_over_collectors() {
        // One organisation: plain round-robin.
        let one: Vec<usize> = (0..6).map(|i| collector_for(i, 1, 2)).collect();
        assert_eq!(one, [0, 1, 0, 1, 0, 1]);
        assert_eq!((0..7).map(|i| collector_for(i, 1, 3)).collect::<Vec<_>>(), [0, 1, 2, 0, 1, 2, 0]);
        // One collector: everyone on it.
        assert!((0..10).all(|i| collector_for(i, 3, 1) == 0));
        // Two organisations over two collectors: each organisation on both,
        // each collector with both, and the counts even.
        let orgs = org_names(2);
        let mut seen = std::collections::HashSet::new();
        let mut per_collector = [0usize; 2];
        for i in 0..8 {
            let c = collector_for(i, 2, 2);
            per_collector[c] += 1;
            seen.insert((identity(i, &orgs, Transport::Tls).unwrap().org, c));
        }
        assert_eq!(seen.len(), 4, "{seen:?}");
        assert_eq!(per_collector, [4, 4]);
        // Degenerate counts do not divide by zero.
        assert_eq!(collector_for(5, 0, 0), 0);
    }
}
