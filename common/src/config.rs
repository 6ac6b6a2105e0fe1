//! What the agent's and the collector's configuration files share: one
//! error type and where relative paths point. A config file is untrusted
//! input too; `glimpse-files` reads it, bounded.

use std::path::{Path, PathBuf};

/// A configuration file could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file was larger than any sane config.
    #[error("config {path} is larger than {max} bytes")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The limit.
        max: u64,
    },
    /// The TOML did not parse or did not match the schema.
    #[error("invalid config {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's explanation (line, column, field).
        message: String,
    },
    /// Values parsed but make no sense; every problem is listed.
    #[error("invalid config {path}:\n  - {}", problems.join("\n  - "))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// One line per problem.
        problems: Vec<String>,
    },
}

/// The directory relative paths in the config at `path` are resolved against.
pub fn config_base(path: &Path) -> &Path {
    path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_resolve_beside_the_config() {
        assert_eq!(config_base(Path::new("agent.toml")), Path::new("."));
        assert_eq!(config_base(Path::new("/etc/glimpse/agent.toml")), Path::new("/etc/glimpse"));
    }
}
