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

    /// Several processes' figures added up: cores and CPU seconds, and the
    /// sum of each one's peak RSS (an upper bound of their peak together).
    pub fn sum<'a>(figures: impl IntoIterator<Item = &'a ProcessFigures>) -> Self {
        figures.into_iter().fold(Self::default(), |total, f| Self {
            cpu_cores: total.cpu_cores + f.cpu_cores,
            cpu_seconds: total.cpu_seconds + f.cpu_seconds,
            peak_rss_kib: total.peak_rss_kib + f.peak_rss_kib,
        })
    }
}

/// Another process's CPU while the fleet streamed (`--measure`), with its
/// children's: the database or the object store beside the collectors.
#[derive(Debug, Clone, Serialize)]
pub struct OtherFigures {
    /// Its name on the command line.
    pub name: String,
    /// Its process id.
    pub pid: u32,
    /// CPU seconds per wall-clock second; `None` when it could not be read
    /// (gone, or not on this machine).
    pub cpu_cores: Option<f64>,
    /// CPU seconds used.
    pub cpu_seconds: Option<f64>,
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
    /// Where the bench's collectors kept control plane and segments, and
    /// how many collectors ran (`--backend-config`, `--collectors`);
    /// `None` (and left out of the JSON) for one collector on its
    /// embedded store.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backends: Option<String>,
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
    /// The collector process (with several, their sum: see
    /// [`ProcessFigures::sum`]); `None` when it is not on this machine or
    /// not known.
    pub collector: Option<ProcessFigures>,
    /// Each collector process's own figures, when several ran (left out of
    /// the JSON with one).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub collectors: Vec<ProcessFigures>,
    /// Other processes measured while streaming (left out of the JSON
    /// when none was named).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub others: Vec<OtherFigures>,
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
        let labels: Vec<String> = (1..=self.collectors.len()).map(|n| format!("collector {n}")).collect();
        let mut rows: Vec<(&str, String)> = vec![("target", format!("{} over {}", self.target, self.transport))];
        if let Some(backends) = &self.backends {
            rows.push(("backends", backends.clone()));
        }
        rows.extend([
            ("load", format!("{} devices, {} records, {} records a batch", self.devices, self.records, self.batch)),
            ("connections", format!("{} connected in {:.1} s", self.connections, self.connect_seconds)),
            ("handshakes", format!("{}/s", si(self.handshakes_per_sec))),
        ]);
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
        let collector = self.collector.as_ref().map_or_else(|| "not measured".to_owned(), figures);
        if self.collectors.len() > 1 {
            rows.push(("collectors together", collector));
            rows.extend(labels.iter().zip(&self.collectors).map(|(label, f)| (label.as_str(), figures(f))));
        } else {
            rows.push(("collector", collector));
        }
        for other in &self.others {
            let cpu = other.cpu_cores.map_or_else(
                || format!("not measured (process {} gone)", other.pid),
                |c| format!("{c:.2} cores (process {} and its children)", other.pid),
            );
            rows.push((other.name.as_str(), cpu));
        }
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

    #[test]
    fn figures_of_several_processes_add_up() {
        let a = ProcessFigures { cpu_cores: 0.5, cpu_seconds: 5.0, peak_rss_kib: 100 };
        let b = ProcessFigures { cpu_cores: 0.25, cpu_seconds: 2.5, peak_rss_kib: 50 };
        let total = ProcessFigures::sum(&[a, b]);
        assert_eq!((total.cpu_cores, total.cpu_seconds, total.peak_rss_kib), (0.75, 7.5, 150));
        assert_eq!(ProcessFigures::sum(&[]).peak_rss_kib, 0);
    }

    fn report() -> Report {
        Report {
            target: "glimpse".into(),
            transport: "tls".into(),
            records: "capture".into(),
            backends: None,
            devices: 2,
            connections: 2,
            connect_seconds: 0.1,
            handshakes_per_sec: 20.0,
            handshakes_per_collector_core: None,
            seconds: 1.0,
            batch: 256,
            record_bytes: 90.0,
            records_sent: 512,
            records_acked: 512,
            records_stored: Some(512),
            stored_equals_sent: Some(true),
            records_per_sec: 512.0,
            mib_per_sec: 0.04,
            latency_us: Latency::default(),
            collector: Some(ProcessFigures { cpu_cores: 0.5, cpu_seconds: 0.5, peak_rss_kib: 2048 }),
            collectors: Vec::new(),
            others: Vec::new(),
            generator: ProcessFigures::default(),
            errors: 0,
            refusals: 0,
            devices_without_capture_consent: 0,
            first_error: None,
            machine: Machine { cores: 2, cpu: "test".into() },
        }
    }

    #[test]
    fn one_collector_on_its_own_store_reports_as_before() {
        let r = report();
        let json = serde_json::to_value(&r).unwrap();
        for absent in ["backends", "collectors", "others"] {
            assert!(json.get(absent).is_none(), "{absent}: {json}");
        }
        let table = r.table();
        assert!(table.lines().any(|l| l.starts_with("collector ")), "{table}");
        assert!(!table.contains("backends") && !table.contains("collector 1"), "{table}");
    }

    #[test]
    fn several_collectors_are_reported_together_and_each() {
        let each = ProcessFigures { cpu_cores: 0.25, cpu_seconds: 0.25, peak_rss_kib: 1024 };
        let r = Report {
            backends: Some("control postgres, segments s3, 2 collectors".into()),
            collectors: vec![each, each],
            ..report()
        };
        let table = r.table();
        for line in [
            "control postgres, segments s3, 2 collectors",
            "0.50 cores, peak RSS 2.0 MiB",
            "0.25 cores, peak RSS 1.0 MiB",
        ] {
            assert!(table.contains(line), "{line}: {table}");
        }
        let r = Report {
            others: vec![
                OtherFigures { name: "postgres".into(), pid: 7, cpu_cores: Some(0.3), cpu_seconds: Some(3.0) },
                OtherFigures { name: "garage".into(), pid: 8, cpu_cores: None, cpu_seconds: None },
            ],
            ..r
        };
        let table = r.table();
        assert!(table.contains("0.30 cores (process 7 and its children)"), "{table}");
        assert!(table.contains("not measured (process 8 gone)"), "{table}");
        let names: Vec<&str> = table.lines().filter_map(|l| l.split("  ").next()).collect();
        assert!(names.contains(&"collectors together") && names.contains(&"collector 2"), "{table}");
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["collectors"].as_array().map(Vec::len), Some(2));
    }
}
