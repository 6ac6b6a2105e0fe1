//! Real Garage (the S3-compatible object store) for the tests: N nodes on
//! 127.0.0.1 in a temporary directory, a bucket and a key, and ways to
//! SIGKILL and restart a node. Dropping it kills every node.
//!
//! ```no_run
//! let Some(garage) = glimpse_tests::garage::Garage::start(1) else { return };
//! let config = garage.config();
//! ```
//!
//! Garage is `cargo install garage --locked` (2.x); without it
//! [`Garage::start`] prints one skip line and returns `None`, and fails
//! under CI.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::{free_port, require_tool, DEADLINE};

/// The region every node signs for.
pub const REGION: &str = "garage";
/// The bucket made at start.
pub const BUCKET: &str = "glimpse";

/// A running Garage cluster.
#[derive(Debug)]
pub struct Garage {
    dir: TempDir,
    nodes: Vec<Node>,
    /// The S3 endpoint of node 0 (`http://127.0.0.1:<port>`).
    pub endpoint: String,
    /// The region to sign for.
    pub region: String,
    /// The bucket.
    pub bucket: String,
    /// The access key id, allowed to read and write the bucket.
    pub key_id: String,
    /// Its secret key.
    pub secret: String,
}

/// Whether a node that failed to start may move to other ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ports {
    /// Not yet known to its peers.
    MayMove,
    /// Known to its peers by address.
    Fixed,
}

#[derive(Debug)]
struct Node {
    root: PathBuf,
    replication: usize,
    secret: String,
    config: PathBuf,
    log: PathBuf,
    s3_port: u16,
    rpc_port: u16,
    id: String,
    child: Option<Child>,
}

impl Garage {
    /// Starts `nodes` nodes (replication factor `min(nodes, 3)`, each node
    /// in its own zone), lays the cluster out, and makes [`BUCKET`] and a
    /// key for it. `None` (after a skip line) if Garage is not installed.
    pub fn start(nodes: usize) -> Option<Garage> {
        assert!(nodes >= 1, "at least one node");
        if !require_tool("garage", "cargo install garage --locked") {
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let secret = random_hex(32);
        let replication = nodes.min(3);
        let mut started = Vec::new();
        for n in 0..nodes {
            let root = dir.path().join(format!("node{n}"));
            std::fs::create_dir_all(&root).expect("node directory");
            let mut node = Node {
                config: root.join("garage.toml"),
                log: root.join("garage.log"),
                root,
                replication,
                secret: secret.clone(),
                s3_port: 0,
                rpc_port: 0,
                id: String::new(),
                child: None,
            };
            node.choose_ports();
            node.spawn();
            started.push(node);
        }
        let mut garage = Garage {
            dir,
            nodes: started,
            endpoint: String::new(),
            region: REGION.to_owned(),
            bucket: BUCKET.to_owned(),
            key_id: String::new(),
            secret: String::new(),
        };
        for n in 0..nodes {
            garage.wait_for_rpc(n, Ports::MayMove);
            let id = garage.cli(n, &["node", "id", "-q"]);
            garage.nodes[n].id = id.trim().split('@').next().unwrap_or_default().to_owned();
        }
        for n in 1..nodes {
            let target = format!("{}@127.0.0.1:{}", garage.nodes[n].id, garage.nodes[n].rpc_port);
            garage.cli(0, &["node", "connect", &target]);
        }
        for n in 0..nodes {
            let (zone, id) = (format!("dc{}", n + 1), garage.nodes[n].id.clone());
            garage.cli(0, &["layout", "assign", "-z", &zone, "-c", "1G", &id]);
        }
        garage.cli(0, &["layout", "apply", "--version", "1"]);
        // The layout reaches every node asynchronously: retry until a
        // quorum accepts the bucket.
        garage.retry_cli(0, &["bucket", "create", BUCKET]);
        let key = garage.retry_cli(0, &["key", "create", "glimpse-test"]);
        garage.key_id = field(&key, "Key ID:");
        garage.secret = field(&key, "Secret key:");
        garage.retry_cli(0, &["bucket", "allow", "--read", "--write", BUCKET, "--key", &garage.key_id.clone()]);
        garage.endpoint = garage.endpoint_of(0);
        for n in 0..nodes {
            garage.wait_for_s3(n);
        }
        Some(garage)
    }

    /// The S3 endpoint of node `n`.
    pub fn endpoint_of(&self, n: usize) -> String {
        format!("http://127.0.0.1:{}", self.nodes[n].s3_port)
    }

    /// How many nodes the cluster has.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether it has no node (never: [`Garage::start`] makes at least one).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// A secret key file (mode 0600) holding [`Garage::secret`].
    pub fn secret_file(&self) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;

        let path = self.dir.path().join("s3.secret");
        std::fs::write(&path, format!("{}\n", self.secret)).expect("secret file");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod secret file");
        path
    }

    /// A glimpse-objects configuration for node 0, over plain HTTP, with
    /// the key from [`Garage::secret_file`].
    pub fn config(&self) -> glimpse_objects::ObjectStoreConfig {
        let mut config = glimpse_objects::ObjectStoreConfig::new(&self.endpoint, &self.region, &self.bucket);
        config.allow_http = true;
        config.access_key_id = Some(self.key_id.clone());
        config.secret_access_key_file = Some(self.secret_file());
        config
    }

    /// A collector's `[storage]` tables for this cluster, through node
    /// `n`'s S3 endpoint. The request timeout is generous: Garage takes
    /// seconds to give up on a node that just vanished.
    pub fn storage_toml(&self, n: usize) -> String {
        format!(
            "[storage]\nbackend = \"s3\"\n[storage.s3]\nendpoint = {:?}\nregion = {:?}\nbucket = {:?}\n\
             access_key_id = {:?}\nsecret_access_key_file = {:?}\nallow_http = true\nrequest_timeout_ms = 20000\n",
            self.endpoint_of(n),
            self.region,
            self.bucket,
            self.key_id,
            self.secret_file(),
        )
    }

    /// SIGKILLs node `n` (no clean shutdown) and waits for it to be gone.
    pub fn kill(&mut self, n: usize) {
        if let Some(mut child) = self.nodes[n].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts node `n` again on its own directory (same node id, same
    /// ports) and waits until it answers on RPC and S3.
    pub fn restart(&mut self, n: usize) {
        self.kill(n);
        self.nodes[n].spawn();
        // Its peers know it by address: it must come back on the same ports.
        self.wait_for_rpc(n, Ports::Fixed);
        // Garage retries its known peers only slowly: connect to those
        // running now, so the cluster is whole again at once.
        for m in (0..self.nodes.len()).filter(|m| *m != n && self.nodes[*m].child.is_some()) {
            let target = format!("{}@127.0.0.1:{}", self.nodes[m].id, self.nodes[m].rpc_port);
            let _ = self.try_cli(n, &["node", "connect", &target]);
        }
        self.wait_for_s3(n);
    }

    /// The log of node `n`, for failure messages.
    pub fn log_of(&self, n: usize) -> PathBuf {
        self.nodes[n].log.clone()
    }

    /// Runs `garage -c <node n's config> args` and returns its output;
    /// panics, with the output, if it fails.
    pub fn cli(&self, n: usize, args: &[&str]) -> String {
        match self.try_cli(n, args) {
            Ok(out) => out,
            Err(out) => panic!("garage {} failed: {out}\n(log: {})", args.join(" "), self.nodes[n].log.display()),
        }
    }

    fn try_cli(&self, n: usize, args: &[&str]) -> Result<String, String> {
        let out = Command::new("garage")
            .arg("-c")
            .arg(&self.nodes[n].config)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run garage: {e}"))?;
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        if out.status.success() {
            Ok(text)
        } else {
            Err(text)
        }
    }

    fn retry_cli(&self, n: usize, args: &[&str]) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            match self.try_cli(n, args) {
                Ok(out) => return out,
                Err(out) if Instant::now() >= deadline => {
                    panic!("garage {} kept failing: {out}\n(log: {})", args.join(" "), self.nodes[n].log.display())
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// Waits until node `n`'s daemon answers (`node id` alone reads the
    /// key from disk, so it proves nothing). A port picked free can be
    /// taken by another test's process before Garage binds it, and Garage
    /// then exits: the node is started again, on new ports if its peers do
    /// not know it yet.
    fn wait_for_rpc(&mut self, n: usize, ports: Ports) {
        const ATTEMPTS: usize = 5;
        let deadline = Instant::now() + DEADLINE;
        let mut restarts = 0;
        while self.try_cli(n, &["status"]).is_err() {
            let exited = self.nodes[n].child.as_mut().map(|c| matches!(c.try_wait(), Ok(Some(_)))).unwrap_or(true);
            if exited {
                assert!(
                    restarts < ATTEMPTS,
                    "garage node {n} exited {ATTEMPTS} times at start; its log ({}) ends:\n{}",
                    self.nodes[n].log.display(),
                    log_tail(&self.nodes[n].log)
                );
                restarts += 1;
                if ports == Ports::MayMove {
                    self.nodes[n].choose_ports();
                }
                self.nodes[n].spawn();
            }
            assert!(
                Instant::now() < deadline,
                "garage node {n} never answered; its log ({}) ends:\n{}",
                self.nodes[n].log.display(),
                log_tail(&self.nodes[n].log)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_for_s3(&self, n: usize) {
        wait_for_port(self.nodes[n].s3_port, &self.nodes[n].log);
    }
}

impl Node {
    /// Picks new free ports and writes the node's configuration for them.
    fn choose_ports(&mut self) {
        (self.s3_port, self.rpc_port) = (free_port(), free_port());
        std::fs::write(
            &self.config,
            format!(
                "metadata_dir = \"{meta}\"\ndata_dir = \"{data}\"\ndb_engine = \"sqlite\"\n\
                 replication_factor = {replication}\nrpc_bind_addr = \"127.0.0.1:{rpc}\"\n\
                 rpc_public_addr = \"127.0.0.1:{rpc}\"\nrpc_secret = \"{secret}\"\n\n\
                 [s3_api]\ns3_region = \"{REGION}\"\napi_bind_addr = \"127.0.0.1:{s3}\"\n",
                meta = self.root.join("meta").display(),
                data = self.root.join("data").display(),
                replication = self.replication,
                rpc = self.rpc_port,
                secret = self.secret,
                s3 = self.s3_port,
            ),
        )
        .expect("garage.toml");
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("garage log");
        let child = Command::new("garage")
            .arg("-c")
            .arg(&self.config)
            .arg("server")
            .env("RUST_LOG", "garage=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("garage log"))
            .stderr(log)
            .spawn()
            .expect("start garage");
        self.child = Some(child);
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

fn wait_for_port(port: u16, log: &Path) {
    let deadline = Instant::now() + DEADLINE;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "garage's S3 API on port {port} never opened (log: {})", log.display());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The last lines of a log, for a failure message.
fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_else(|e| format!("(cannot read it: {e})"));
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// The value after `label` on its line of a `garage key create` report.
fn field(text: &str, label: &str) -> String {
    text.lines()
        .find_map(|line| line.trim().strip_prefix(label))
        .map(|value| value.trim().to_owned())
        .unwrap_or_else(|| panic!("no {label:?} in garage's answer:\n{text}"))
}

/// `bytes` random bytes as hex, from the kernel.
fn random_hex(bytes: usize) -> String {
    use std::io::Read;

    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut buf)).expect("random bytes");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}
