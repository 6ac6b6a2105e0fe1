//! The S3 client: object_store's, over reqwest on our rustls with ring
//! (the TLS policy the rest of Glimpse uses), with short retries that fit
//! in the request timeout.

use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::client::{HttpClient, HttpConnector};
use object_store::{BackoffConfig, ClientOptions, ObjectStore, RetryConfig};
use rustls_platform_verifier::BuilderVerifierExt;

use crate::config::{Credentials, ObjectStoreConfig};
use crate::ObjectsError;

/// Retries of one request (connection refused or reset, 5xx, throttling);
/// all of them within the request timeout.
const MAX_RETRIES: usize = 3;
/// How long to wait for a connection; less than a request may take, so a
/// retry still fits.
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The S3 store `config` names, signing with `credentials`.
pub(crate) fn s3(config: &ObjectStoreConfig, credentials: Credentials) -> Result<Arc<dyn ObjectStore>, ObjectsError> {
    let timeout = config.request_timeout();
    let connect_timeout = timeout.min(MAX_CONNECT_TIMEOUT);
    let retry = RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(1),
            base: 2.0,
        },
        max_retries: MAX_RETRIES,
        retry_timeout: timeout,
    };
    let options = ClientOptions::new()
        .with_timeout(timeout)
        .with_connect_timeout(connect_timeout)
        .with_allow_http(config.allow_http);
    let connector = RingConnector { tls: tls_config(config)?, timeout, connect_timeout, allow_http: config.allow_http };
    let store = AmazonS3Builder::new()
        .with_endpoint(&config.endpoint)
        .with_region(&config.region)
        .with_bucket_name(&config.bucket)
        .with_access_key_id(credentials.access_key_id.as_str())
        .with_secret_access_key(credentials.secret_access_key.as_str())
        .with_allow_http(config.allow_http)
        .with_virtual_hosted_style_request(false)
        .with_retry(retry)
        .with_client_options(options)
        .with_http_connector(connector)
        .build()
        .map_err(|e| ObjectsError::Client(e.to_string()))?;
    Ok(Arc::new(store))
}

/// The rustls client configuration: ring, TLS 1.3 and 1.2, and either the
/// CAs of `ca_file` only or the system's trust (the platform verifier).
fn tls_config(config: &ObjectStoreConfig) -> Result<rustls::ClientConfig, ObjectsError> {
    let provider = Arc::new(glimpse_common::tls::provider(!glimpse_common::tls::has_aes_hardware()));
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| ObjectsError::Client(e.to_string()))?;
    let config = match &config.ca_file {
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in glimpse_files::load_certs(path)? {
                roots.add(cert).map_err(|e| ObjectsError::Client(format!("{}: {e}", path.display())))?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        None => {
            builder.with_platform_verifier().map_err(|e| ObjectsError::Client(e.to_string()))?.with_no_client_auth()
        }
    };
    Ok(config)
}

/// Builds reqwest clients on our TLS configuration rather than reqwest's
/// default provider (aws-lc-rs).
#[derive(Debug)]
struct RingConnector {
    tls: rustls::ClientConfig,
    timeout: Duration,
    connect_timeout: Duration,
    allow_http: bool,
}

impl HttpConnector for RingConnector {
    fn connect(&self, _options: &ClientOptions) -> object_store::Result<HttpClient> {
        // The options object_store passes are the ones set above; the
        // settings that matter are applied here directly.
        let client = reqwest_objects::Client::builder()
            .tls_backend_preconfigured(self.tls.clone())
            .timeout(self.timeout)
            .connect_timeout(self.connect_timeout)
            .https_only(!self.allow_http)
            .user_agent(concat!("glimpse-collector/", env!("CARGO_PKG_VERSION")))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| object_store::Error::Generic { store: "S3", source: Box::new(e) })?;
        Ok(HttpClient::new(client))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_with_a_ca_file_or_the_system_trust() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = ObjectStoreConfig::new("https://s3.example.net", "r", "bucket");
        let creds = || Credentials { access_key_id: "GK1".into(), secret_access_key: "s".to_owned().into() };
        s3(&config, creds()).unwrap();
        config.ca_file = Some(dir.path().join("missing.pem"));
        let err = s3(&config, creds()).unwrap_err().to_string();
        assert!(err.contains("missing.pem"), "{err}");
    }
}
