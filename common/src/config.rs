//! What the agent's and the collector's configuration files share: one
//! error type and a bounded read. A config file is untrusted input too.

use std::io::Read;
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

/// Reads a UTF-8 config file of at most `max` bytes, never more.
pub fn read_config_text(path: &Path, max: u64) -> Result<String, ConfigError> {
    let read_error = |source| ConfigError::Read { path: path.to_owned(), source };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mut text = String::new();
    file.take(max + 1).read_to_string(&mut text).map_err(read_error)?;
    if text.len() as u64 > max {
        return Err(ConfigError::TooLarge { path: path.to_owned(), max });
    }
    Ok(text)
}

/// The directory relative paths in the config at `path` are resolved against.
pub fn config_base(path: &Path) -> &Path {
    path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_and_missing_files_are_named() {
        let dir = std::env::temp_dir().join(format!("glimpse-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let big = dir.join("big.toml");
        std::fs::write(&big, vec![b'#'; 2048]).unwrap();
        let err = read_config_text(&big, 1024).unwrap_err().to_string();
        assert!(err.contains("big.toml") && err.contains("1024"), "{err}");
        assert_eq!(read_config_text(&big, 4096).unwrap().len(), 2048);
        let err = read_config_text(&dir.join("missing.toml"), 1024).unwrap_err().to_string();
        assert!(err.contains("missing.toml"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(config_base(Path::new("agent.toml")), Path::new("."));
    }
}
