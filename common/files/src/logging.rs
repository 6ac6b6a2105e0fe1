//! The one logging set-up of every Glimpse program (collector, agent,
//! PKI tool, load tool): the same `--log-level` and `--log-format` flags,
//! the same environment variables and the same filter syntax everywhere, so
//! that an operator learns them once.
//!
//! The level is taken from, in order: `--log-level`, `GLIMPSE_LOG`,
//! `RUST_LOG`, the config file's `log_level`, the program's default. The
//! format from `--log-format`, `GLIMPSE_LOG_FORMAT`, the config file's
//! `log_format`, then text. A level is a list of `target=level` directives
//! with an optional bare default (`info`, `warn,glimpse_collector=debug`):
//! tracing-subscriber's `Targets`, without a regular-expression engine,
//! which would cost the agent flash.
//!
//! Logs go to stderr. Text has ANSI colours only when stderr is a terminal
//! and `NO_COLOR` is unset, and only in programs built with this crate's
//! `ansi` feature (not the agent); JSON is one object per line, with
//! `timestamp`, `level`, `target` and the event's fields at the top level.

use std::io::IsTerminal as _;
use std::str::FromStr;

use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::Layer as _;

/// The environment variable every program reads its log level from.
pub const LEVEL_ENV: &str = "GLIMPSE_LOG";
/// The environment variable every program reads its log format from.
pub const FORMAT_ENV: &str = "GLIMPSE_LOG_FORMAT";

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line (for journald exports, Loki, Vector, Fluent Bit).
    Json,
}

/// A log format that is neither `text` nor `json`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("log format must be \"text\" or \"json\", got {0:?}")]
pub struct LogFormatError(String);

impl FromStr for LogFormat {
    type Err = LogFormatError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(LogFormatError(other.chars().take(64).collect())),
        }
    }
}

/// Checks a log level as the config files take it (`log_level`): the
/// message names what is wrong, for the config's list of problems.
pub fn check_level(value: &str) -> Result<(), String> {
    parse_level(value).map(drop)
}

fn parse_level(value: &str) -> Result<Targets, String> {
    if value.len() > 4096 {
        return Err("longer than 4096 bytes".to_owned());
    }
    // A bare word is a level; `Targets` would take a typo ("inf") for a
    // target name and log nothing of the rest.
    for bare in value.split(',').map(str::trim).filter(|d| !d.is_empty() && !d.contains('=')) {
        if bare.parse::<tracing::level_filters::LevelFilter>().is_err() {
            return Err(format!(
                "{bare:?} is not a level (error, warn, info, debug, trace, off); use target=level for a target"
            ));
        }
    }
    value.parse::<Targets>().map_err(|e| format!("not a list of target=level directives ({e})"))
}

/// The logging flags, the same in every program (`--log-level`,
/// `--log-format`, accepted before or after the subcommand).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct LogArgs {
    /// What to log: a level (error, warn, info, debug, trace) or target=level
    /// directives, e.g. "warn,glimpse_collector=debug". Overrides GLIMPSE_LOG,
    /// RUST_LOG and the config file's log_level.
    #[arg(long, global = true, value_name = "LEVEL", value_parser = parse_level_arg)]
    pub log_level: Option<String>,
    /// Log line format: text, or json (one object per line). Overrides
    /// GLIMPSE_LOG_FORMAT and the config file's log_format.
    #[arg(long, global = true, value_name = "FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
}

fn parse_level_arg(value: &str) -> Result<String, String> {
    parse_level(value).map(|_| value.to_owned())
}

/// What a config file says about logging (`log_level`, `log_format`),
/// already checked by its loader.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogConfig {
    /// `log_level`.
    pub level: Option<String>,
    /// `log_format`.
    pub format: Option<LogFormat>,
}

impl LogConfig {
    /// The `log_level` and `log_format` keys of a config file, checked;
    /// each problem is added to `problems` (the config's list, reported all
    /// at once) and the bad value left out.
    pub fn from_config(level: Option<String>, format: Option<&str>, problems: &mut Vec<String>) -> Self {
        if let Some(Err(e)) = level.as_deref().map(check_level) {
            problems.push(format!("log_level: {e}"));
        }
        let format = match format.map(str::parse) {
            Some(Ok(format)) => Some(format),
            Some(Err(e)) => {
                problems.push(format!("log_format: {e}"));
                None
            }
            None => None,
        };
        LogConfig { level, format }
    }
}

/// Where the level and format come from, resolved; separate from [`init`]
/// so that the order is tested without a global subscriber.
#[derive(Debug, Clone, PartialEq)]
struct Resolved {
    level: Targets,
    format: LogFormat,
    /// Environment values that were ignored, to log once the logger runs.
    ignored: Vec<String>,
}

fn resolve(args: &LogArgs, config: &LogConfig, default_level: &str, env: &dyn Fn(&str) -> Option<String>) -> Resolved {
    let mut ignored = Vec::new();
    let mut level = None;
    if let Some(flag) = &args.log_level {
        level = parse_level(flag).ok();
    }
    for var in [LEVEL_ENV, "RUST_LOG"] {
        if level.is_some() {
            break;
        }
        if let Some(value) = env(var).filter(|v| !v.trim().is_empty()) {
            match parse_level(&value) {
                Ok(targets) => level = Some(targets),
                Err(e) => ignored.push(format!("{var} ignored: {e}")),
            }
        }
    }
    let level = level
        .or_else(|| config.level.as_deref().and_then(|l| parse_level(l).ok()))
        .or_else(|| parse_level(default_level).ok())
        .unwrap_or_else(|| Targets::new().with_default(tracing::Level::INFO));
    let mut format = args.log_format;
    if format.is_none() {
        if let Some(value) = env(FORMAT_ENV).filter(|v| !v.trim().is_empty()) {
            match value.parse() {
                Ok(f) => format = Some(f),
                Err(e) => ignored.push(format!("{FORMAT_ENV} ignored: {e}")),
            }
        }
    }
    let format = format.or(config.format).unwrap_or_default();
    Resolved { level, format, ignored }
}

/// Installs the global logger: to stderr, at the level and in the format
/// resolved from the flags, the environment and the config file (see the
/// module's documentation). Call once, first thing in `main`; a second call
/// does nothing.
pub fn init(args: &LogArgs, config: &LogConfig, default_level: &str) {
    init_keeping(args, config, default_level, None);
}

/// Longest line [`RecentLines`] keeps; the rest of a longer one is cut.
pub const MAX_RECENT_LINE: usize = 512;

/// The newest log lines, kept in memory as they were formatted (plain
/// text, no colour), for a daemon's diagnostic bundle. Bounded in lines
/// and line length; cloning shares the same lines.
#[derive(Debug, Clone)]
pub struct RecentLines {
    lines: std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<String>>>,
    max_lines: usize,
}

impl RecentLines {
    /// Keeps at most `max_lines` lines.
    pub fn new(max_lines: usize) -> Self {
        Self { lines: Default::default(), max_lines }
    }

    /// The lines kept now, oldest first.
    pub fn snapshot(&self) -> Vec<String> {
        self.lines.lock().map(|lines| lines.iter().cloned().collect()).unwrap_or_default()
    }

    fn push(&self, text: &str) {
        let Ok(mut lines) = self.lines.lock() else { return };
        for line in text.lines().filter(|line| !line.trim().is_empty()) {
            let mut cut = line.len().min(MAX_RECENT_LINE);
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            if lines.len() >= self.max_lines {
                lines.pop_front();
            }
            if self.max_lines > 0 {
                lines.push_back(line[..cut].to_owned());
            }
        }
    }
}

/// Keeps each event as one line in [`RecentLines`]: `LEVEL target:
/// message key=value ...`, prefixed by the Unix time in seconds. A small
/// layer of its own rather than a second `fmt` layer, whose formatting
/// code would be compiled in again for the second layer's type and cost
/// the agent flash it does not have.
struct RecentLayer(RecentLines);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for RecentLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        use std::fmt::Write as _;
        struct Fields<'a>(&'a mut String);
        impl tracing::field::Visit for Fields<'_> {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                // A runaway value is cut by `push`; stop growing well past it.
                if self.0.len() > MAX_RECENT_LINE * 2 {
                    return;
                }
                let _ = match field.name() {
                    "message" => write!(self.0, " {value:?}"),
                    name => write!(self.0, " {name}={value:?}"),
                };
            }
            fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
                if self.0.len() > MAX_RECENT_LINE * 2 {
                    return;
                }
                let _ = match field.name() {
                    "message" => write!(self.0, " {value}"),
                    name => write!(self.0, " {name}={value:?}"),
                };
            }
        }
        let meta = event.metadata();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let mut line = format!("{}.{:03} {} {}:", now.as_secs(), now.subsec_millis(), meta.level(), meta.target());
        event.record(&mut Fields(&mut line));
        self.0.push(&line);
    }
}

/// [`init`], also keeping the newest lines in `recent` (at the same level).
pub fn init_keeping(args: &LogArgs, config: &LogConfig, default_level: &str, recent: Option<RecentLines>) {
    #[cfg_attr(feature = "json", allow(unused_mut))]
    let mut resolved = resolve(args, config, default_level, &|var| std::env::var(var).ok());
    let ansi = cfg!(feature = "ansi") && std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let layer = match resolved.format {
        LogFormat::Text => tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(ansi).boxed(),
        #[cfg(feature = "json")]
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .boxed(),
        // A device build without the `json` feature (to save flash).
        #[cfg(not(feature = "json"))]
        LogFormat::Json => {
            let mut ignored = resolved.ignored;
            ignored.push("--log-format json: this build has no JSON logs; writing text".to_owned());
            resolved = Resolved { ignored, ..resolved };
            tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(false).boxed()
        }
    };
    let kept = recent.map(|recent| RecentLayer(recent).with_filter(resolved.level.clone()));
    if tracing_subscriber::registry().with(layer.with_filter(resolved.level)).with(kept).try_init().is_ok() {
        for message in resolved.ignored {
            tracing::warn!("{message}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_lines_keep_the_newest_and_cut_long_ones() {
        use tracing_subscriber::layer::SubscriberExt as _;
        let recent = RecentLines::new(3);
        let subscriber = tracing_subscriber::registry().with(RecentLayer(recent.clone()));
        tracing::subscriber::with_default(subscriber, || {
            for i in 0..5 {
                tracing::info!(seq = i, "line {i}");
            }
        });
        let lines = recent.snapshot();
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(lines[0].ends_with("INFO glimpse_files::logging::tests: line 2 seq=2"), "{lines:?}");
        assert!(lines[2].contains("line 4"), "{lines:?}");
        recent.push(&"é".repeat(MAX_RECENT_LINE));
        let last = recent.snapshot().pop().unwrap();
        assert!(last.len() <= MAX_RECENT_LINE && last.chars().all(|c| c == 'é'), "{}", last.len());
    }
    use tracing::level_filters::LevelFilter;

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |var| pairs.iter().find(|(k, _)| *k == var).map(|(_, v)| (*v).to_owned())
    }

    fn default_level(r: &Resolved) -> Option<LevelFilter> {
        r.level.default_level()
    }

    #[test]
    fn flag_then_glimpse_log_then_rust_log_then_config_then_default() {
        let config = LogConfig { level: Some("error".into()), format: Some(LogFormat::Json) };
        let flag = LogArgs { log_level: Some("trace".into()), log_format: Some(LogFormat::Text) };
        let both = env_of(&[("GLIMPSE_LOG", "debug"), ("RUST_LOG", "warn"), ("GLIMPSE_LOG_FORMAT", "json")]);
        let r = resolve(&flag, &config, "info", &both);
        assert_eq!((default_level(&r), r.format), (Some(LevelFilter::TRACE), LogFormat::Text));
        let r = resolve(&LogArgs::default(), &config, "info", &both);
        assert_eq!((default_level(&r), r.format), (Some(LevelFilter::DEBUG), LogFormat::Json));
        let r = resolve(&LogArgs::default(), &config, "info", &env_of(&[("RUST_LOG", "warn")]));
        assert_eq!((default_level(&r), r.format), (Some(LevelFilter::WARN), LogFormat::Json));
        let r = resolve(&LogArgs::default(), &config, "info", &env_of(&[]));
        assert_eq!(default_level(&r), Some(LevelFilter::ERROR));
        let r = resolve(&LogArgs::default(), &LogConfig::default(), "info", &env_of(&[]));
        assert_eq!((default_level(&r), r.format), (Some(LevelFilter::INFO), LogFormat::Text));
        assert!(r.ignored.is_empty());
    }

    #[test]
    fn bad_environment_values_are_ignored_and_said() {
        let env = env_of(&[("GLIMPSE_LOG", "glimpse=loud"), ("RUST_LOG", "debug"), ("GLIMPSE_LOG_FORMAT", "xml")]);
        let r = resolve(&LogArgs::default(), &LogConfig::default(), "info", &env);
        assert_eq!((default_level(&r), r.format), (Some(LevelFilter::DEBUG), LogFormat::Text));
        assert_eq!(r.ignored.len(), 2, "{:?}", r.ignored);
        assert!(r.ignored[0].starts_with("GLIMPSE_LOG ignored") && r.ignored[1].contains("xml"));
    }

    #[test]
    fn levels_and_formats_are_checked() {
        for good in ["info", "warn,glimpse_collector=debug", "glimpse_agent::transport=trace", "off"] {
            assert_eq!(check_level(good), Ok(()), "{good}");
        }
        for bad in ["loud", "a=b=c", &"x".repeat(5000)] {
            assert!(check_level(bad).is_err(), "{bad}");
        }
        assert_eq!("json".parse(), Ok(LogFormat::Json));
        assert!("JSON lines".parse::<LogFormat>().unwrap_err().to_string().contains("JSON lines"));
    }
}
