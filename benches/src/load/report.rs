//! What a run measured: printed as a table for people, or as one JSON
//! object (`--json`) for scripts such as `scripts/bench-compare.sh`.

use serde::Serialize;

use super::collector_process::ProcessSample;

/// Acknowledgement latency percentiles, microseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: u64,
    /// 99th percentile.
    pub p99: u64,
    /// Slowest.
    pub max: u64,
}

impl Latency {
    /// The percentiles of `h` (µs).
    pub fn of(h: &hdrhistogram::Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        Self { p50: h.value_at_quantile(0.5), p99: h.value_at_quantile(0.99), max: h.max() }
    }
}

/// A process's share of the machine during the streaming phase.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct ProcessFigures {
    /// CPU seconds used per wall-clock second (2.0 = two cores busy).
    pub cpu_cores: f64,
    /// CPU seconds used.
    pub cpu_seconds: f64,
    /// Peak resident set size over the whole run, KiB.
    pub peak_rss_kib: u64,
}

impl ProcessFigures {
    /// The figures between two samples `seconds` apart.
    pub fn between(before: ProcessSample, after: ProcessSample, seconds: f64) -> Self {
        let cpu_seconds = (after.cpu_seconds - before.cpu_seconds).max(0.0);
        Self {
            cpu_cores: if seconds > 0.0 { cpu_seconds / seconds } else { 0.0 },
            cpu_seconds,
            peak_rss_kib: after.peak_rss_kib,
        }
    }
}

/// The machine a figure came from.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// Cores this process may use.
    pub cores: usize,
    /// `model name` from `/proc/cpuinfo`.
    pub cpu: String,
}

impl Machine {
    /// This machine.
    pub fn this() -> Self {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|t| {
                t.lines().find_map(|l| {
                    l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
                })
            })
            .unwrap_or_else(|| "unknown".to_owned());
        Self { cores: std::thread::available_parallelism().map_or(1, |n| n.get()), cpu }
    }
}

/// Everything one run of `glimpse-bench run` (or `syslog`) measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `glimpse` (the collector) or `rsyslog` (the syslog receiver fed the same load).
    pub target: String,
    /// `tls`, `ssh` or `syslog-tls`.
    pub transport: String,
    /// `capture`, `metadata` or `mixed`.
    pub records: String,
    /// Devices simulated.
    pub devices: usize,
    /// Most devices connected at once.
    pub connections: u64,
    /// Seconds from the first connection attempt to the last device connected.
    pub connect_seconds: f64,
    /// Full handshakes (TCP, TLS or SSH, shared-key proof, welcome) per second while the fleet connected.
    pub handshakes_per_sec: f64,
    /// The same per second of collector CPU: what one collector core sustains.
    pub handshakes_per_collector_core: Option<f64>,
    /// Seconds of streaming, from the first batch to the last acknowledgement.
    pub seconds: f64,
    /// Records per batch.
    pub batch: usize,
    /// Average encoded size of one record, bytes.
    pub record_bytes: f64,
    /// Records written to connections.
    pub records_sent: u64,
    /// Records acknowledged as durably stored.
    pub records_acked: u64,
    /// Records found in the store after the run; `None` when not checked.
    pub records_stored: Option<u64>,
    /// Sent = acknowledged = stored; `None` when the store was not checked.
    pub stored_equals_sent: Option<bool>,
    /// Acknowledged records per second of streaming.
    pub records_per_sec: f64,
    /// The same in MiB of encoded records per second.
    pub mib_per_sec: f64,
    /// Time from writing a batch to its acknowledgement, µs.
    pub latency_us: Latency,
    /// The collector process; `None` when it is not on this machine or not known.
    pub collector: Option<ProcessFigures>,
    /// The load tool itself (it shares the machine with the collector).
    pub generator: ProcessFigures,
    /// Connections that failed.
    pub errors: u64,
    /// Connection attempts the collector turned away before authentication
    /// (overload, eviction, deadline) and that were retried after a backoff;
    /// not failures unless the device gave up (then also in `errors`).
    pub refusals: u64,
    /// Devices whose organisation has no capture consent: the collector
    /// acknowledges their capture records but drops them instead of storing.
    pub devices_without_capture_consent: u64,
    /// The first failure, if any.
    pub first_error: Option<String>,
    /// Where the figures came from.
    pub machine: Machine,
}

fn si(value: f64) -> String {
    match value {
        v if v >= 1e6 => format!("{:.2} M", v / 1e6),
        v if v >= 1e3 => format!("{:.1} k", v / 1e3),
        v => format!("{v:.0} "),
    }
}

impl Report {
    /// The report as a table, one measure a line.
    pub fn table(&self) -> String {
        let mut rows: Vec<(&str, String)> = vec![
            ("target", format!("{} over {}", self.target, self.transport)),
            ("load", format!("{} devices, {} records, {} records a batch", self.devices, self.records, self.batch)),
            ("connections", format!("{} connected in {:.1} s", self.connections, self.connect_seconds)),
            ("handshakes", format!("{}/s", si(self.handshakes_per_sec))),
        ];
        if let Some(per_core) = self.handshakes_per_collector_core {
            rows.push(("handshakes per collector core", format!("{}/s", si(per_core))));
        }
        rows.extend([
            ("streaming", format!("{:.1} s", self.seconds)),
            ("records sent / acked", format!("{} / {}", self.records_sent, self.records_acked)),
            (
                "records stored",
                match (self.records_stored, self.stored_equals_sent) {
                    (Some(n), Some(true)) => format!("{n} (stored = sent)"),
                    (Some(n), _) => format!("{n} (MISMATCH: sent {}, acked {})", self.records_sent, self.records_acked),
                    (None, _) => "not checked (remote collector)".to_owned(),
                },
            ),
            (
                "throughput",
                format!(
                    "{}records/s, {:.1} MiB/s ({:.0} bytes a record)",
                    si(self.records_per_sec),
                    self.mib_per_sec,
                    self.record_bytes
                ),
            ),
            (
                "ack latency",
                format!(
                    "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                    self.latency_us.p50 as f64 / 1e3,
                    self.latency_us.p99 as f64 / 1e3,
                    self.latency_us.max as f64 / 1e3
                ),
            ),
        ]);
        let figures = |p: &ProcessFigures| {
            format!("{:.2} cores, peak RSS {:.1} MiB", p.cpu_cores, p.peak_rss_kib as f64 / 1024.0)
        };
        rows.push(("collector", self.collector.as_ref().map_or_else(|| "not measured".to_owned(), figures)));
        rows.push(("load generator", figures(&self.generator)));
        rows.push(("refusals (retried)", self.refusals.to_string()));
        if self.devices_without_capture_consent > 0 {
            rows.push((
                "CAPTURE CONSENT",
                format!(
                    "{} devices' organisations have no capture consent: their capture records are acknowledged \
                     but dropped, not stored (grant consent, or run with --records metadata)",
                    self.devices_without_capture_consent
                ),
            ));
        }
        rows.push((
            "errors",
            match &self.first_error {
                Some(first) => format!("{} (first: {first})", self.errors),
                None => self.errors.to_string(),
            },
        ));
        rows.push(("machine", format!("{} cores, {}", self.machine.cores, self.machine.cpu)));
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        rows.iter().map(|(k, v)| format!("{k:<width$}  {v}\n")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_the_histogram() {
        let mut h = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        for us in 1..=1000 {
            h.record(us).unwrap();
        }
        let l = Latency::of(&h);
        assert!((499..=501).contains(&l.p50), "{l:?}");
        assert!((989..=991).contains(&l.p99), "{l:?}");
        assert_eq!(l.max, 1000);
        assert_eq!(Latency::of(&hdrhistogram::Histogram::<u64>::new(3).unwrap()).max, 0);
    }

    #[test]
    fn cpu_share_is_per_wall_second() {
        let before = ProcessSample { cpu_seconds: 1.0, peak_rss_kib: 10 };
        let after = ProcessSample { cpu_seconds: 4.0, peak_rss_kib: 20 };
        let f = ProcessFigures::between(before, after, 2.0);
        assert_eq!((f.cpu_cores, f.cpu_seconds, f.peak_rss_kib), (1.5, 3.0, 20));
    }
}
