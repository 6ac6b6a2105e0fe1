//! The same load fed to a syslog receiver (rsyslog, for the side-by-side
//! comparison in `scripts/bench-compare.sh`): as many mutually-authenticated
//! TLS connections as devices, the same records at the same size, as RFC 5425
//! octet-counted syslog messages, as fast as the receiver reads them.
//!
//! Syslog has no acknowledgement, so a record counts once the receiver has
//! written it to its output file: the run lasts until the file holds every
//! message sent (or a timeout), and throughput is lines written per second
//! of the whole run.

use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use glimpse_common::tls::client_config;
use glimpse_files::{load_certs, load_key};
use portable_atomic::Ordering;
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

use super::collector_process::{self, ProcessSample};
use super::device::Tally;
use super::report::{Latency, Machine, ProcessFigures, Report};
use super::{BenchError, RecordMix};

/// How long after the last message the receiver may take to write it all.
const WRITE_OUT_TIMEOUT: Duration = Duration::from_secs(120);

/// What `glimpse-bench syslog` needs.
#[derive(Debug, Clone)]
pub struct SyslogOptions {
    /// The receiver's `host:port`.
    pub target: String,
    /// The name in the receiver's certificate.
    pub server_name: String,
    /// The CA that signed the receiver's certificate.
    pub ca: PathBuf,
    /// The client certificate the receiver checks.
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
    /// Connections.
    pub devices: usize,
    /// Seconds of sending.
    pub seconds: f64,
    /// Which records (their encoded sizes set the message sizes).
    pub records: RecordMix,
    /// Messages per write.
    pub batch: usize,
    /// The file the receiver writes, one line per message.
    pub output_file: PathBuf,
    /// The receiver's process id, for its CPU and memory figures.
    pub receiver_pid: Option<u32>,
}

/// Octet-counted syslog frames for one batch: each message as long as
/// the Glimpse encoding of the record it stands for, printable.
pub fn frames(mix: RecordMix, batch: usize, host: &str) -> (Vec<u8>, f64) {
    let packets = crate::packets::mix();
    let mut out = Vec::new();
    let mut bytes = 0usize;
    for i in 0..batch {
        let record = postcard::to_stdvec(&mix.record(&packets, i, 1_790_000_000_000)).unwrap_or_default();
        bytes += record.len();
        // Hex of the record cut to the record's own length: the same number
        // of bytes per message, and no control characters for the receiver
        // to escape.
        let body: String =
            record.iter().map(|b| format!("{b:02x}")).collect::<String>().chars().take(record.len()).collect();
        let message = format!("<134>1 2026-11-28T00:00:00Z {host} glimpse - - - {body}");
        out.extend_from_slice(format!("{} {message}", message.len()).as_bytes());
    }
    (out, bytes as f64 / batch.max(1) as f64)
}

/// Counts newline bytes appended to a file since the last call.
#[derive(Debug)]
struct LineCounter {
    path: PathBuf,
    offset: u64,
    lines: u64,
}

impl LineCounter {
    fn poll(&mut self) -> u64 {
        if let Ok(mut file) = std::fs::File::open(&self.path) {
            use std::io::Seek;
            if file.seek(std::io::SeekFrom::Start(self.offset)).is_ok() {
                let mut buf = vec![0u8; 1 << 20];
                while let Ok(n) = file.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    self.offset += n as u64;
                    self.lines += buf[..n].iter().filter(|b| **b == b'\n').count() as u64;
                }
            }
        }
        self.lines
    }
}

/// Feeds the receiver and reports like `glimpse-bench run`.
pub async fn run(options: &SyslogOptions) -> Result<Report, BenchError> {
    let tls_error = |e: glimpse_common::tls::TlsConfigError| BenchError::setup("the syslog TLS client", e.to_string());
    let ca = load_certs(&options.ca)
        .map_err(tls_error)?
        .into_iter()
        .next()
        .ok_or_else(|| BenchError::setup("the CA", "no certificate"))?;
    let config = Arc::new(
        client_config(
            &ca,
            load_certs(&options.cert).map_err(tls_error)?,
            load_key(&options.key).map_err(tls_error)?,
            false,
        )
        .map_err(tls_error)?,
    );
    let name = rustls_pki_types::ServerName::try_from(options.server_name.clone())
        .map_err(|e| BenchError::Options(format!("--server-name: {e}")))?;
    let mut counter = LineCounter { path: options.output_file.clone(), offset: 0, lines: 0 };
    let already = counter.poll();
    let tally = Arc::new(Tally::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let (go_tx, go_rx) = watch::channel(false);
    let me = std::process::id();
    let generator_start = collector_process::sample(me).unwrap_or_default();
    let connect_start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let mut record_bytes = 0.0;
    for n in 0..options.devices {
        let (frames, bytes) = frames(options.records, options.batch, &format!("bench-{:05}", n + 1));
        record_bytes = bytes;
        let (tally, config, name, target) =
            (Arc::clone(&tally), Arc::clone(&config), name.clone(), options.target.clone());
        let (mut go, stop, batch) = (go_rx.clone(), stop_rx.clone(), options.batch as u64);
        tasks.spawn(async move {
            let connected = async {
                let tcp = tokio::net::TcpStream::connect(&target).await?;
                tcp.set_nodelay(true)?;
                tokio_rustls::TlsConnector::from(config).connect(name, tcp).await
            };
            let mut stream = match connected.await {
                Ok(s) => s,
                Err(e) => return tally.error(format!("connection {n}: {e}")),
            };
            tally.connected.fetch_add(1, Ordering::Relaxed);
            let _ = go.wait_for(|go| *go).await;
            while !*stop.borrow() {
                if let Err(e) = stream.write_all(&frames).await {
                    return tally.error(format!("connection {n}: {e}"));
                }
                tally.sent.fetch_add(batch, Ordering::Relaxed);
            }
            // Read to the end before dropping the socket: closing it with
            // unread bytes (the receiver's session tickets) sends a reset,
            // and a reset makes the receiver's kernel discard what its
            // process had not read yet.
            let _ = stream.shutdown().await;
            let _ = tokio::time::timeout(WRITE_OUT_TIMEOUT, tokio::io::copy(&mut stream, &mut tokio::io::sink())).await;
        });
    }
    while tally.connected.load(Ordering::Relaxed) + tally.errors.load(Ordering::Relaxed) < options.devices as u64 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let connect_seconds = connect_start.elapsed().as_secs_f64();
    let connections = tally.connected.load(Ordering::Relaxed);
    if connections == 0 {
        return Err(BenchError::NoConnections(tally.first_error().unwrap_or_default()));
    }
    let receiver_start = options.receiver_pid.and_then(collector_process::sample);
    let start = Instant::now();
    let _ = go_tx.send(true);
    tokio::time::sleep(Duration::from_secs_f64(options.seconds)).await;
    let _ = stop_tx.send(true);
    while tasks.join_next().await.is_some() {}
    let sent = tally.sent.load(Ordering::Relaxed);
    let give_up = Instant::now() + WRITE_OUT_TIMEOUT;
    let mut written = counter.poll() - already;
    while written < sent && Instant::now() < give_up {
        tokio::time::sleep(Duration::from_millis(20)).await;
        written = counter.poll() - already;
    }
    let seconds = start.elapsed().as_secs_f64();
    let receiver_end = options.receiver_pid.and_then(collector_process::sample);
    let generator_end = collector_process::sample(me).unwrap_or_default();
    let figures = |a: Option<ProcessSample>, b: Option<ProcessSample>| match (a, b) {
        (Some(a), Some(b)) => Some(ProcessFigures::between(a, b, seconds)),
        _ => None,
    };
    Ok(Report {
        target: "rsyslog".into(),
        transport: "syslog-tls".into(),
        records: options.records.name().into(),
        backends: None,
        devices: options.devices,
        connections,
        connect_seconds,
        handshakes_per_sec: connections as f64 / connect_seconds.max(1e-9),
        handshakes_per_collector_core: None,
        seconds,
        batch: options.batch,
        record_bytes,
        records_sent: sent,
        records_acked: written,
        records_stored: Some(written),
        stored_equals_sent: Some(written == sent),
        records_per_sec: written as f64 / seconds.max(1e-9),
        mib_per_sec: written as f64 * record_bytes / seconds.max(1e-9) / (1024.0 * 1024.0),
        latency_us: Latency::default(),
        collector: figures(receiver_start, receiver_end),
        collectors: Vec::new(),
        others: Vec::new(),
        generator: ProcessFigures::between(generator_start, generator_end, connect_seconds + seconds),
        errors: tally.errors.load(Ordering::Relaxed),
        refusals: 0,
        devices_without_capture_consent: 0,
        first_error: tally.first_error(),
        machine: Machine::this(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_octet_counted_and_as_long_as_the_records() {
        let (bytes, average) = frames(RecordMix::Capture, 4, "bench-00001");
        let text = String::from_utf8(bytes).unwrap();
        let mut rest = text.as_str();
        let mut bodies = 0;
        while !rest.is_empty() {
            let (len, after) = rest.split_once(' ').unwrap();
            let len: usize = len.parse().unwrap();
            let message = &after[..len];
            assert!(message.starts_with("<134>1 "));
            bodies += message.rsplit(' ').next().unwrap().len();
            rest = &after[len..];
        }
        assert_eq!(bodies as f64 / 4.0, average);
        assert!((50.0..200.0).contains(&average), "{average}");
    }

    #[test]
    fn lines_are_counted_as_they_are_appended() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.log");
        let mut counter = LineCounter { path: path.clone(), offset: 0, lines: 0 };
        assert_eq!(counter.poll(), 0);
        std::fs::write(&path, "a\nb\n").unwrap();
        assert_eq!(counter.poll(), 2);
        std::fs::write(&path, "a\nb\nc\nd").unwrap();
        assert_eq!(counter.poll(), 3);
    }
}
