//! A limit to compare ingest with: how fast rustls alone moves bytes over
//! one loopback connection, with the collector's and an agent's real TLS
//! configurations (same versions, cipher suites and certificates), the
//! reader discarding what it gets.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use glimpse_common::tls::{client_config, server_config};
use glimpse_files::{load_certs, load_key};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{fleet, BenchError, Transport};

/// What the bulk run measured.
#[derive(Debug, Clone, Serialize)]
pub struct BulkReport {
    /// Application bytes the server read per second, MiB/s.
    pub mib_per_sec: f64,
    /// Bytes moved.
    pub bytes: u64,
    /// Seconds measured.
    pub seconds: f64,
    /// The negotiated cipher suite.
    pub cipher_suite: String,
}

/// Streams for `seconds` over mutual TLS on 127.0.0.1 with the bench PKI in
/// `dir` (made if missing).
pub async fn run(dir: &Path, seconds: f64) -> Result<BulkReport, BenchError> {
    std::fs::create_dir_all(dir).map_err(|e| BenchError::io(format!("creating {}", dir.display()), e))?;
    let _lock = super::lock_dir(dir)?;
    let pki = dir.join("pki");
    let fleet = {
        let pki = pki.clone();
        tokio::task::spawn_blocking(move || fleet::prepare(&pki, 1, 1, Transport::Tls))
            .await
            .map_err(|e| BenchError::setup("the PKI", e.to_string()))??
    };
    let device = &fleet.devices[0];
    let files = glimpse_certs::device_dir(&pki, &device.org, &device.device);
    let tls = |e: glimpse_common::tls::TlsConfigError| BenchError::setup("TLS", e.to_string());
    let ca = load_certs(&glimpse_certs::ca_cert_path(&pki)).map_err(tls)?.remove(0);
    let server = server_config(
        &ca,
        Vec::new(),
        load_certs(&glimpse_certs::collector_cert_path(&pki)).map_err(tls)?,
        load_key(&glimpse_certs::collector_key_path(&pki)).map_err(tls)?,
    )
    .map_err(tls)?;
    let client = client_config(
        &ca,
        load_certs(&files.join("device.pem")).map_err(tls)?,
        load_key(&files.join("device.key")).map_err(tls)?,
        false,
    )
    .map_err(tls)?;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| BenchError::io("binding", e))?;
    let addr = listener.local_addr().map_err(|e| BenchError::io("binding", e))?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let reader = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await?;
        let mut tls = acceptor.accept(tcp).await?;
        let mut buf = vec![0u8; 256 * 1024];
        let mut total = 0u64;
        let mut started = None;
        loop {
            let n = tls.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            started.get_or_insert_with(Instant::now);
            total += n as u64;
        }
        Ok::<_, std::io::Error>((total, started.map_or(0.0, |s| s.elapsed().as_secs_f64())))
    });
    let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| BenchError::io("connecting", e))?;
    let name = rustls_pki_types::ServerName::try_from("localhost").map_err(|e| BenchError::Options(e.to_string()))?;
    let mut stream = tokio_rustls::TlsConnector::from(Arc::new(client))
        .connect(name, tcp)
        .await
        .map_err(|e| BenchError::io("the TLS handshake", e))?;
    let cipher_suite = stream
        .get_ref()
        .1
        .negotiated_cipher_suite()
        .map_or_else(|| "unknown".to_owned(), |s| format!("{:?}", s.suite()));
    let chunk = vec![0x5au8; 256 * 1024];
    let until = Instant::now() + Duration::from_secs_f64(seconds);
    while Instant::now() < until {
        stream.write_all(&chunk).await.map_err(|e| BenchError::io("writing", e))?;
    }
    stream.shutdown().await.map_err(|e| BenchError::io("closing", e))?;
    let (bytes, seconds) = reader
        .await
        .map_err(|e| BenchError::setup("the reader", e.to_string()))?
        .map_err(|e| BenchError::io("reading", e))?;
    Ok(BulkReport { mib_per_sec: bytes as f64 / seconds.max(1e-9) / (1024.0 * 1024.0), bytes, seconds, cipher_suite })
}
