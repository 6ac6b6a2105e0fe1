//! A diagnostic bundle: what support needs to look into a device's case,
//! gathered by the agent itself (`glimpse-agent diag`, or remotely when the
//! collector asks under a support grant) and stored like metadata, with
//! metadata's retention.
//!
//! It describes the device and the agent, never the people on the network:
//! the build, model and serial number, the configuration with anything
//! secret-looking replaced, the agent's own recent log lines (which never
//! hold keys, secrets or payload), the spool's state, and which probes and
//! tools worked. Every part is bounded, so a bundle is at most about
//! 180 KiB.

use serde::{Deserialize, Serialize};

use crate::bounded::{BoundedString, BoundedVec};

use super::MAX_TEXT;

/// Longest configuration text kept; the rest is cut.
pub const MAX_DIAG_CONFIG: usize = 16 * 1024;
/// Most log lines kept (the newest).
pub const MAX_DIAG_LOG_LINES: usize = 200;
/// Longest log line kept.
pub const MAX_DIAG_LOG_LINE: usize = 512;
/// Most checks (probes and tools) listed.
pub const MAX_DIAG_CHECKS: usize = 64;

/// One diagnostic bundle.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Diagnostics {
    /// The collector's request this answers; 0 for a bundle made on the
    /// device by hand.
    pub request_id: u64,
    /// The agent's version (`0.2.0`).
    pub agent_version: BoundedString<64>,
    /// The agent's build: commit, target, profile and compiler, as
    /// `glimpse-agent --version` prints them.
    pub build: BoundedString<MAX_TEXT>,
    /// The device kind the agent runs as (`access-point`, `switch`,
    /// `gateway`).
    pub device_kind: BoundedString<32>,
    /// Hardware model, where the device says (device tree, DMI, OpenWrt's
    /// board information); empty otherwise.
    pub model: BoundedString<MAX_TEXT>,
    /// Serial number, where the device has one readable (device tree, DMI);
    /// empty otherwise.
    pub serial_number: BoundedString<MAX_TEXT>,
    /// The agent's configuration file, with the value of every key that
    /// names a secret (password, secret, token, psk; not the paths of key
    /// files) replaced by `"[redacted]"`.
    pub config: BoundedString<MAX_DIAG_CONFIG>,
    /// The agent's newest log lines, oldest first (empty when made by hand:
    /// the daemon's lines are in the system log).
    pub recent_logs: BoundedVec<BoundedString<MAX_DIAG_LOG_LINE>, MAX_DIAG_LOG_LINES>,
    /// The spool (records kept on the device until acknowledged).
    pub spool: SpoolState,
    /// The connection, as the daemon sees it; `None` when made by hand.
    pub connection: Option<ConnectionState>,
    /// One collection's probes and the device kind's tools: what worked.
    pub checks: BoundedVec<Check, MAX_DIAG_CHECKS>,
}

/// The spool file's state.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SpoolState {
    /// Where it is.
    pub path: BoundedString<MAX_TEXT>,
    /// Whether it exists.
    pub exists: bool,
    /// Its size in bytes.
    pub bytes: u64,
    /// Its configured bound in bytes.
    pub max_bytes: u64,
    /// Its file mode (octal permissions), to spot one others can read.
    pub mode: u32,
}

/// The daemon's connection to the collector.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ConnectionState {
    /// Whether an authenticated connection is up.
    pub connected: bool,
    /// The collector of the current or last connection (`host:port`).
    pub collector: BoundedString<MAX_TEXT>,
    /// The TLS cipher suite, or `SSH`.
    pub cipher_suite: BoundedString<64>,
    /// Records waiting to be sent.
    pub queued_records: u64,
    /// Records dropped because the queue was full, since start.
    pub dropped_records: u64,
    /// Records the collector acknowledged, since start.
    pub acked_records: u64,
    /// The last connection or protocol failure.
    pub last_error: BoundedString<MAX_TEXT>,
}

/// One probe or tool and whether it worked.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Check {
    /// What was checked: a tool (`iw`, `hostapd_cli`, `conntrack`) or a
    /// source (`/proc/net/arp`).
    pub name: BoundedString<MAX_TEXT>,
    /// Whether it worked.
    pub ok: bool,
    /// What was found: the tool's path, or the problem.
    pub detail: BoundedString<MAX_TEXT>,
}

/// Keys of a TOML line whose value [`redact_config`] replaces.
const SECRET_WORDS: [&str; 5] = ["password", "secret", "token", "psk", "passphrase"];

/// `text` (a TOML configuration) with the value of every key that names a
/// secret replaced by `"[redacted]"`. Key *paths* (`key_path`,
/// `shared_key_path`) are kept: they are where the secret is, not the
/// secret. A line that is not `key = value` is kept as it is. Works line by
/// line, so a multi-line string value after a secret key loses only its
/// first line's content; the agent's configuration has no such values.
pub fn redact_config(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_DIAG_CONFIG));
    for line in text.lines() {
        let redacted = line.split_once('=').and_then(|(key, _)| {
            let name = key.trim().trim_matches('"').to_ascii_lowercase();
            let secret = !name.ends_with("_path") && SECRET_WORDS.iter().any(|word| name.contains(word));
            secret.then(|| format!("{}= \"[redacted]\"", key))
        });
        out.push_str(redacted.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn secret_values_are_redacted_and_paths_kept() {
        let text = "[collector]\naddresses = [\"c.example:7443\"]\napi_token = \"abc123\"\n\
                    [tls]\nkey_path = \"/etc/glimpse/device.key\"\nshared_key_path = \"/etc/glimpse/shared.key\"\n\
                    wifi_psk=\"hunter2\"\n# password = old\n";
        let out = redact_config(text);
        assert!(!out.contains("abc123") && !out.contains("hunter2"), "{out}");
        assert!(out.contains("api_token = \"[redacted]\""), "{out}");
        assert!(out.contains("/etc/glimpse/device.key") && out.contains("/etc/glimpse/shared.key"), "{out}");
        assert!(out.contains("c.example:7443"));
        assert!(out.contains("# password = \"[redacted]\""), "a commented-out secret is still a secret: {out}");
    }

    proptest! {
        #[test]
        fn redaction_never_panics_and_keeps_the_line_count(text in "\\PC{0,400}") {
            let out = redact_config(&text);
            prop_assert_eq!(out.lines().count(), text.lines().count());
        }

        #[test]
        fn no_secret_value_survives(key in "[a-z_]{0,8}(password|secret|token|psk)[a-z_]{0,8}", value in "[A-Za-z0-9]{12}") {
            prop_assume!(!key.ends_with("_path"));
            let out = redact_config(&format!("{key} = \"{value}\"\n"));
            prop_assert!(!out.contains(&value), "{}", out);
        }
    }
}
