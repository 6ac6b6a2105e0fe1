//! Where the object store is and how to sign in: the `[storage]` section
//! of the collector's configuration when `backend = "s3"`.
//!
//! ```toml
//! [storage]
//! backend = "s3"                       # read by the collector, not here
//! endpoint = "https://s3.example.net:3900"
//! region = "garage"
//! bucket = "glimpse"
//! prefix = "prod"                      # optional
//! access_key_id = "GK31c2f218a2e44f485b94239e"
//! secret_access_key_file = "s3.secret" # 0600; or GLIMPSE_S3_SECRET_ACCESS_KEY
//! flush_interval_ms = 25
//! request_timeout_ms = 10000
//! max_in_flight_bytes = 268435456
//! compact_target_bytes = 16777216     # merge small objects into ones of this size
//! compact_after_ms = 600000           # objects at least this old (0: no compaction)
//! compact_interval_ms = 60000         # how often a compaction run starts
//! ```
//!
//! The secret access key is never in the configuration file itself: it is
//! read from `secret_access_key_file` (which group and others may not
//! read, like every key file) or, without one, from the environment
//! variable `GLIMPSE_S3_SECRET_ACCESS_KEY` (a systemd `LoadCredential=` or
//! `EnvironmentFile=`). The key id may come from `GLIMPSE_S3_ACCESS_KEY_ID`
//! likewise. Neither is ever logged or put in an error message.

use std::io::Read;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use zeroize::Zeroizing;

use crate::ObjectsError;

/// The environment variable holding the key id when the file has none.
pub const ACCESS_KEY_ID_ENV: &str = "GLIMPSE_S3_ACCESS_KEY_ID";
/// The environment variable holding the secret key when no file is named.
pub const SECRET_ACCESS_KEY_ENV: &str = "GLIMPSE_S3_SECRET_ACCESS_KEY";
/// Longest secret key file read (S3 secrets are 40 to 64 characters).
const MAX_SECRET_FILE_LEN: u64 = 4096;

/// The object store holding segments. See the module header.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectStoreConfig {
    /// The S3 API's base URL (`https://host:port`); requests are
    /// path-style (`<endpoint>/<bucket>/<key>`), which every S3-compatible
    /// store serves.
    pub endpoint: String,
    /// The region the store signs for (Garage: its `s3_region`).
    pub region: String,
    /// The bucket; it must exist.
    pub bucket: String,
    /// A prefix inside the bucket (`a/b`), so that several installations
    /// can share one.
    #[serde(default)]
    pub prefix: Option<String>,
    /// The access key id; without it, `GLIMPSE_S3_ACCESS_KEY_ID`.
    #[serde(default)]
    pub access_key_id: Option<String>,
    /// A file holding the secret access key (mode 0600 or 0400); without
    /// it, `GLIMPSE_S3_SECRET_ACCESS_KEY`.
    #[serde(default)]
    pub secret_access_key_file: Option<PathBuf>,
    /// PEM certificates to trust for the endpoint instead of the system's
    /// (an on-premise store with its own CA).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Plain HTTP, for a store on this machine only (tests): refused for
    /// any endpoint but a loopback address or `localhost`.
    #[serde(default)]
    pub allow_http: bool,
    /// How long an object gathers appends before it is uploaded: the group
    /// commit window, added to every acknowledgement's latency (see
    /// docs/SCALING.md for the trade-off).
    #[serde(default = "default_flush_interval_ms")]
    pub flush_interval_ms: u64,
    /// How long one request to the store may take, retries included.
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Most bytes waiting to be uploaded; beyond it appends are refused at
    /// once (agents resend later) instead of queueing.
    #[serde(default = "default_max_in_flight_bytes")]
    pub max_in_flight_bytes: u64,
    /// Compaction merges a day's small objects into objects of about this
    /// many bytes (see docs/SCALING.md).
    #[serde(default = "default_compact_target_bytes")]
    pub compact_target_bytes: u64,
    /// Only objects started at least this long ago are merged, so that
    /// none still being uploaded or committed is touched; 0 turns
    /// compaction off.
    #[serde(default = "default_compact_after_ms")]
    pub compact_after_ms: u64,
    /// How often a compaction run starts (each collector; the runs take
    /// turns on one organisation's kind).
    #[serde(default = "default_compact_interval_ms")]
    pub compact_interval_ms: u64,
}

fn default_compact_target_bytes() -> u64 {
    16 * 1024 * 1024
}

fn default_compact_after_ms() -> u64 {
    10 * 60 * 1000
}

fn default_compact_interval_ms() -> u64 {
    60 * 1000
}

fn default_flush_interval_ms() -> u64 {
    crate::DEFAULT_FLUSH_INTERVAL.as_millis() as u64
}

fn default_request_timeout_ms() -> u64 {
    10_000
}

fn default_max_in_flight_bytes() -> u64 {
    256 * 1024 * 1024
}

/// The signing keys, once read.
pub(crate) struct Credentials {
    pub(crate) access_key_id: String,
    pub(crate) secret_access_key: Zeroizing<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("access_key_id", &self.access_key_id).finish_non_exhaustive()
    }
}

impl ObjectStoreConfig {
    /// A configuration with the defaults for everything optional.
    pub fn new(endpoint: &str, region: &str, bucket: &str) -> ObjectStoreConfig {
        ObjectStoreConfig {
            endpoint: endpoint.to_owned(),
            region: region.to_owned(),
            bucket: bucket.to_owned(),
            prefix: None,
            access_key_id: None,
            secret_access_key_file: None,
            ca_file: None,
            allow_http: false,
            flush_interval_ms: default_flush_interval_ms(),
            request_timeout_ms: default_request_timeout_ms(),
            max_in_flight_bytes: default_max_in_flight_bytes(),
            compact_target_bytes: default_compact_target_bytes(),
            compact_after_ms: default_compact_after_ms(),
            compact_interval_ms: default_compact_interval_ms(),
        }
    }

    /// Resolves relative file names against `base` (the configuration
    /// file's directory).
    pub fn resolve_paths(&mut self, base: &Path) {
        for path in [&mut self.secret_access_key_file, &mut self.ca_file].into_iter().flatten() {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        }
    }

    /// Every problem with the values (not the files), each naming its key.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        match url::Url::parse(&self.endpoint) {
            Ok(url) => {
                let host = url.host_str().unwrap_or_default();
                match url.scheme() {
                    "https" => {}
                    "http" if !self.allow_http => problems.push(format!(
                        "storage.endpoint {:?} is plain HTTP: use https (allow_http is for a store on this \
                         machine only)",
                        self.endpoint
                    )),
                    "http" if !is_loopback(host) => problems.push(format!(
                        "storage.allow_http is only for a store on this machine; {host:?} is not a loopback \
                         address"
                    )),
                    "http" => {}
                    other => problems.push(format!("storage.endpoint has scheme {other:?}: use https")),
                }
                if host.is_empty() {
                    problems.push(format!("storage.endpoint {:?} names no host", self.endpoint));
                }
                if !url.username().is_empty() || url.password().is_some() {
                    problems.push("storage.endpoint must not hold credentials".into());
                }
                if url.query().is_some() || !matches!(url.path(), "" | "/") {
                    problems.push(format!(
                        "storage.endpoint {:?} must be the store's base URL, without path or query",
                        self.endpoint
                    ));
                }
            }
            Err(e) => problems.push(format!("storage.endpoint {:?} is not a URL: {e}", self.endpoint)),
        }
        if self.region.is_empty() || self.region.len() > 64 || !self.region.bytes().all(is_name_byte) {
            problems.push(format!("storage.region {:?} is not a region name", self.region));
        }
        let bucket_ok = (3..=63).contains(&self.bucket.len())
            && self.bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
            && !self.bucket.starts_with(['-', '.'])
            && !self.bucket.ends_with(['-', '.']);
        if !bucket_ok {
            problems.push(format!(
                "storage.bucket {:?} is not a bucket name (3 to 63 of a-z, 0-9, '-' and '.')",
                self.bucket
            ));
        }
        if let Some(prefix) = &self.prefix {
            let ok = prefix.len() <= 256
                && prefix
                    .split('/')
                    .all(|part| !part.is_empty() && part != "." && part != ".." && part.bytes().all(is_name_byte));
            if !ok {
                problems.push(format!(
                    "storage.prefix {prefix:?} must be parts of A-Z, a-z, 0-9, '.', '_' and '-' separated by '/'"
                ));
            }
        }
        if let Some(id) = &self.access_key_id {
            if id.is_empty() || id.len() > 128 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
                problems.push("storage.access_key_id is not an access key id (letters and digits)".into());
            }
        }
        if !(1..=10_000).contains(&self.flush_interval_ms) {
            problems
                .push(format!("storage.flush_interval_ms is {}: give 1 to 10000 milliseconds", self.flush_interval_ms));
        }
        if !(100..=600_000).contains(&self.request_timeout_ms) {
            problems.push(format!(
                "storage.request_timeout_ms is {}: give 100 to 600000 milliseconds",
                self.request_timeout_ms
            ));
        }
        let min = 2 * crate::FLUSH_BYTES;
        if self.max_in_flight_bytes < min {
            problems.push(format!(
                "storage.max_in_flight_bytes is {}: give at least {min} (two objects)",
                self.max_in_flight_bytes
            ));
        }
        let most = glimpse_store::store::SEGMENT_ROLL_BYTES;
        if !(64 * 1024..=most).contains(&self.compact_target_bytes) {
            problems
                .push(format!("storage.compact_target_bytes is {}: give 65536 to {most}", self.compact_target_bytes));
        }
        // Younger than a request timeout (and a minute), an object's PUT
        // or its batches' commit may still be under way.
        let youngest = self.request_timeout_ms.max(60_000);
        if self.compact_after_ms != 0 && !(youngest..=7 * 86_400_000).contains(&self.compact_after_ms) {
            problems.push(format!(
                "storage.compact_after_ms is {}: give 0 (off) or {youngest} (a minute, and at least \
                 request_timeout_ms) to 604800000",
                self.compact_after_ms
            ));
        }
        if !(1_000..=86_400_000).contains(&self.compact_interval_ms) {
            problems.push(format!(
                "storage.compact_interval_ms is {}: give 1000 to 86400000 milliseconds",
                self.compact_interval_ms
            ));
        }
        problems
    }

    /// Whether compaction runs, and what it merges: `None` when
    /// `compact_after_ms` is 0.
    pub fn compaction(&self) -> Option<(u64, i64)> {
        (self.compact_after_ms > 0).then_some((self.compact_target_bytes, self.compact_after_ms as i64))
    }

    /// How often a compaction run starts.
    pub fn compact_interval(&self) -> Duration {
        Duration::from_millis(self.compact_interval_ms)
    }

    /// The group commit window.
    pub fn flush_interval(&self) -> Duration {
        Duration::from_millis(self.flush_interval_ms)
    }

    /// The bound on one request.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// Reads the key id and secret key (see the module header); `env`
    /// looks up an environment variable.
    pub(crate) fn credentials(&self, env: &dyn Fn(&str) -> Option<String>) -> Result<Credentials, ObjectsError> {
        let access_key_id = match &self.access_key_id {
            Some(id) => id.clone(),
            None => {
                env(ACCESS_KEY_ID_ENV).map(|id| id.trim().to_owned()).filter(|id| !id.is_empty()).ok_or_else(|| {
                    ObjectsError::Config(vec![format!("storage.access_key_id is not set, nor is {ACCESS_KEY_ID_ENV}")])
                })?
            }
        };
        let secret_access_key = match &self.secret_access_key_file {
            Some(path) => read_secret(path)?,
            None => {
                let secret = Zeroizing::new(env(SECRET_ACCESS_KEY_ENV).unwrap_or_default());
                let trimmed = Zeroizing::new(secret.trim().to_owned());
                if trimmed.is_empty() {
                    return Err(ObjectsError::Config(vec![format!(
                        "storage.secret_access_key_file is not set, nor is {SECRET_ACCESS_KEY_ENV}"
                    )]));
                }
                trimmed
            }
        };
        Ok(Credentials { access_key_id, secret_access_key })
    }
}

/// The secret in `path`: the file must be private (checked on the open
/// file, so the file checked is the file read), short, one line of text.
fn read_secret(path: &Path) -> Result<Zeroizing<String>, ObjectsError> {
    let failed = |source: std::io::Error| ObjectsError::Secret { path: path.to_owned(), source };
    let file = std::fs::File::open(path).map_err(failed)?;
    glimpse_files::check_secret(path, &file.metadata().map_err(failed)?, "S3 secret key file")?;
    let mut bytes = Zeroizing::new(Vec::new());
    file.take(MAX_SECRET_FILE_LEN + 1).read_to_end(&mut bytes).map_err(failed)?;
    if bytes.len() as u64 > MAX_SECRET_FILE_LEN {
        return Err(failed(std::io::Error::other(format!("longer than {MAX_SECRET_FILE_LEN} bytes"))));
    }
    let text = std::str::from_utf8(&bytes).map_err(|_| failed(std::io::Error::other("not UTF-8 text")))?;
    let secret = text.trim();
    if secret.is_empty() || secret.contains(char::is_whitespace) {
        return Err(failed(std::io::Error::other("does not hold one secret key on one line")));
    }
    Ok(Zeroizing::new(secret.to_owned()))
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')
}

fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost" || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn parse(text: &str) -> Result<ObjectStoreConfig, toml::de::Error> {
        toml::from_str(text)
    }

    #[test]
    fn defaults_and_unknown_keys() {
        let config = parse("endpoint = \"https://s3.example.net\"\nregion = \"r\"\nbucket = \"glimpse\"\n").unwrap();
        assert_eq!(config, ObjectStoreConfig::new("https://s3.example.net", "r", "glimpse"));
        assert!(config.problems().is_empty(), "{:?}", config.problems());
        let err = parse("endpoint = \"https://s\"\nregion = \"r\"\nbucket = \"b\"\nsecret = \"x\"\n").unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
    }

    #[test]
    fn under_a_tagged_storage_section() {
        // How the collector is expected to embed it: `backend` picks the
        // variant, and unknown keys are still refused.
        #[derive(Debug, Deserialize)]
        #[serde(tag = "backend", deny_unknown_fields)]
        enum Storage {
            #[serde(rename = "s3")]
            S3(ObjectStoreConfig),
        }
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        struct File {
            storage: Storage,
        }
        let text = "[storage]\nbackend = \"s3\"\nendpoint = \"https://s\"\nregion = \"r\"\nbucket = \"bbb\"\n";
        let Storage::S3(config) = toml::from_str::<File>(text).unwrap().storage;
        assert_eq!(config.bucket, "bbb");
        let bad = format!("{text}typo = 1\n");
        assert!(toml::from_str::<File>(&bad).is_err());
    }

    #[test]
    fn every_problem_is_named() {
        let mut config = ObjectStoreConfig::new("http://s3.example.net/path?x", "", "B");
        config.prefix = Some("a//../b".into());
        config.flush_interval_ms = 0;
        config.request_timeout_ms = 1;
        config.max_in_flight_bytes = 1;
        config.access_key_id = Some("no spaces".into());
        config.compact_target_bytes = 1;
        config.compact_after_ms = 5;
        config.compact_interval_ms = 0;
        let problems = config.problems().join("\n");
        for key in [
            "plain HTTP",
            "without path or query",
            "storage.region",
            "storage.bucket",
            "storage.prefix",
            "storage.access_key_id",
            "flush_interval_ms",
            "request_timeout_ms",
            "max_in_flight_bytes",
            "compact_target_bytes",
            "compact_after_ms",
            "compact_interval_ms",
        ] {
            assert!(problems.contains(key), "{key} missing from:\n{problems}");
        }
        let mut http = ObjectStoreConfig::new("http://10.1.2.3:3900", "r", "bucket");
        http.allow_http = true;
        assert!(http.problems().join("\n").contains("not a loopback"));
        for loopback in ["http://127.0.0.1:3900", "http://localhost:3900", "http://[::1]:3900"] {
            let mut ok = ObjectStoreConfig::new(loopback, "r", "bucket");
            ok.allow_http = true;
            assert!(ok.problems().is_empty(), "{loopback}: {:?}", ok.problems());
        }
    }

    #[test]
    fn secrets_come_from_a_private_file_or_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("s3.secret");
        std::fs::write(&file, "  s3cr3t-value \n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut config = ObjectStoreConfig::new("https://s", "r", "bucket");
        config.access_key_id = Some("GK1".into());
        config.secret_access_key_file = Some("s3.secret".into());
        config.resolve_paths(dir.path());
        let no_env = |_: &str| None;
        let err = config.credentials(&no_env).unwrap_err().to_string();
        assert!(err.contains("0644") && err.contains("s3.secret"), "{err}");
        assert!(!err.contains("s3cr3t"), "{err}");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let creds = config.credentials(&no_env).unwrap();
        assert_eq!((creds.access_key_id.as_str(), creds.secret_access_key.as_str()), ("GK1", "s3cr3t-value"));
        assert!(!format!("{creds:?}").contains("s3cr3t"));

        std::fs::write(&file, "two\nlines\n").unwrap();
        assert!(config.credentials(&no_env).is_err());

        let mut from_env = ObjectStoreConfig::new("https://s", "r", "bucket");
        let env = |name: &str| match name {
            ACCESS_KEY_ID_ENV => Some("GKenv".to_owned()),
            SECRET_ACCESS_KEY_ENV => Some("envsecret\n".to_owned()),
            _ => None,
        };
        let creds = from_env.credentials(&env).unwrap();
        assert_eq!((creds.access_key_id.as_str(), creds.secret_access_key.as_str()), ("GKenv", "envsecret"));
        from_env.access_key_id = None;
        let err = from_env.credentials(&no_env).unwrap_err().to_string();
        assert!(err.contains(ACCESS_KEY_ID_ENV), "{err}");
    }
}
