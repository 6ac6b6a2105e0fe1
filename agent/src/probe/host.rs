//! Hostname, OS release, hardware model, kernel release and uptime.

use glimpse_common::bounded::BoundedString;
use glimpse_common::record::MAX_TEXT;

use super::lex::{bad, dec_u64, printable};
use super::source::{Fetched, FILE_LIMIT, VALUE_LIMIT};
use super::{HostProbe, Parsed, ProbeError};

/// OS release files, in order of preference.
const OS_RELEASE: [&str; 3] = ["etc/os-release", "usr/lib/os-release", "etc/openwrt_release"];

/// Hardware model sources, in order of preference. Device tree first: on
/// ARM and MIPS boards it names the board; DMI is the x86 equivalent.
const MODEL: [&str; 3] =
    ["sys/firmware/devicetree/base/model", "proc/device-tree/model", "sys/class/dmi/id/product_name"];

/// Parses a hostname file: the first line that is neither empty nor a `#`
/// comment (`etc/hostname` may have comments; the kernel's has none).
pub fn parse_hostname(text: &str) -> Result<String, ProbeError> {
    let (index, line) = text
        .lines()
        .enumerate()
        .map(|(i, line)| (i, line.trim()))
        .find(|(_, line)| !line.is_empty() && !line.starts_with('#'))
        .ok_or(ProbeError::Empty)?;
    if line.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad(index + 1, "hostname", line));
    }
    Ok(line.to_owned())
}

/// Parses a device tree `model` (a NUL-terminated string) or a DMI
/// `product_name` (newline-terminated): the text before the first NUL,
/// trimmed.
pub fn parse_model(text: &str) -> Result<String, ProbeError> {
    let model = text.split('\0').next().unwrap_or_default().trim();
    if model.is_empty() {
        return Err(ProbeError::Empty);
    }
    if !printable(model) {
        return Err(bad(0, "model", model));
    }
    Ok(model.to_owned())
}

/// Parses a one-line kernel value such as `proc/sys/kernel/osrelease`.
pub fn parse_kernel_release(text: &str) -> Result<String, ProbeError> {
    let release = text.lines().next().unwrap_or_default().trim();
    if release.is_empty() {
        return Err(ProbeError::Empty);
    }
    if release.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad(0, "kernel release", release));
    }
    Ok(release.to_owned())
}

/// Parses `proc/uptime` (`12345.67 54321.00`): whole seconds since boot.
pub fn parse_uptime(text: &str) -> Result<u64, ProbeError> {
    let field = text.split_ascii_whitespace().next().ok_or(ProbeError::Empty)?;
    let (whole, fraction) = field.split_once('.').unwrap_or((field, ""));
    if !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(0, "uptime", field));
    }
    dec_u64(whole).ok_or_else(|| bad(0, "uptime", field))
}

/// Parses an os-release style file (`os-release`, `openwrt_release`) into
/// `(KEY, value)` pairs in file order.
///
/// The format is a restricted shell assignment list: `KEY=value` per line,
/// `#` comment lines, values unquoted, in `"double quotes"` (where `\"`,
/// `\\`, `` \` `` and `\$` are escapes) or `'single quotes'` (no escapes),
/// optionally followed by whitespace and a comment. Lines that are not
/// assignments, or whose quotes do not close on the line, are skipped.
pub fn parse_os_release(text: &str) -> Parsed<(String, String)> {
    let mut parsed = Parsed::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, raw)) = line.split_once('=') else {
            parsed.skip(ProbeError::Malformed { line: index + 1, reason: "expected KEY=value" });
            continue;
        };
        if !is_shell_name(key) {
            parsed.skip(bad(index + 1, "variable name", key));
            continue;
        }
        match shell_word(raw) {
            Ok(value) => parsed.items.push((key.to_owned(), value)),
            Err(reason) => parsed.skip(ProbeError::Malformed { line: index + 1, reason }),
        }
    }
    parsed
}

/// `[A-Za-z_][A-Za-z0-9_]*`.
fn is_shell_name(key: &str) -> bool {
    let mut bytes = key.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Unquotes one shell word; the output is never longer than the input.
fn shell_word(raw: &str) -> Result<String, &'static str> {
    let mut out = String::new();
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => loop {
                match chars.next() {
                    None => return Err("unterminated double quote"),
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        None => return Err("unterminated double quote"),
                        Some(e @ ('"' | '\\' | '$' | '`')) => out.push(e),
                        Some(e) => {
                            out.push('\\');
                            out.push(e);
                        }
                    },
                    Some(c) => out.push(c),
                }
            },
            '\'' => loop {
                match chars.next() {
                    None => return Err("unterminated single quote"),
                    Some('\'') => break,
                    Some(c) => out.push(c),
                }
            },
            '\\' => {
                if let Some(e) = chars.next() {
                    out.push(e);
                }
            }
            c if c.is_whitespace() => {
                let rest = chars.as_str().trim_start();
                if rest.is_empty() || rest.starts_with('#') {
                    break;
                }
                return Err("unquoted whitespace in value");
            }
            c => out.push(c),
        }
    }
    Ok(out)
}

/// The last non-empty value of `key`: later assignments win, as in a shell.
fn lookup<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs.iter().rev().find(|(k, v)| k == key && !v.is_empty()).map(|(_, v)| v.as_str())
}

impl HostProbe {
    pub(super) fn hostname(&mut self) -> BoundedString<MAX_TEXT> {
        self.first_value(
            "hostname",
            &["proc/sys/kernel/hostname", "etc/hostname"],
            VALUE_LIMIT,
            "hostname unknown",
            parse_hostname,
        )
        .map(|name| BoundedString::truncating(&name))
        .unwrap_or_default()
    }

    pub(super) fn model(&mut self) -> Option<BoundedString<MAX_TEXT>> {
        self.first_value("model", &MODEL, VALUE_LIMIT, "model unknown", parse_model)
            .map(|model| BoundedString::truncating(&model))
    }

    pub(super) fn kernel(&mut self) -> BoundedString<MAX_TEXT> {
        self.first_value(
            "kernel",
            &["proc/sys/kernel/osrelease"],
            VALUE_LIMIT,
            "kernel release unknown",
            parse_kernel_release,
        )
        .map(|release| BoundedString::truncating(&release))
        .unwrap_or_default()
    }

    pub(super) fn uptime(&mut self) -> u64 {
        self.first_value("uptime", &["proc/uptime"], VALUE_LIMIT, "uptime unknown", parse_uptime).unwrap_or(0)
    }

    /// OS name and version from the first release file that names the OS.
    pub(super) fn os_release(&mut self) -> (BoundedString<MAX_TEXT>, BoundedString<MAX_TEXT>) {
        let mut any_present = false;
        for relative in OS_RELEASE {
            let path = self.path(relative);
            let text = match self.fetch(relative, &path, FILE_LIMIT) {
                Fetched::Text(text) => text,
                Fetched::Failed => {
                    any_present = true;
                    continue;
                }
                Fetched::Missing => continue,
            };
            any_present = true;
            let parsed = parse_os_release(&text);
            self.warn_skipped(relative, &path, &parsed);
            let (name_key, version_keys): (&str, &[&str]) = if relative == "etc/openwrt_release" {
                ("DISTRIB_ID", &["DISTRIB_RELEASE"])
            } else {
                ("NAME", &["VERSION_ID", "VERSION"])
            };
            let Some(name) = lookup(&parsed.items, name_key) else {
                let error = ProbeError::NotSet { field: name_key };
                self.warn_malformed(relative, &path, &error);
                continue;
            };
            let version = version_keys.iter().find_map(|key| lookup(&parsed.items, key)).unwrap_or_default();
            return (BoundedString::truncating(name), BoundedString::truncating(version));
        }
        if !any_present {
            self.warn_missing("os-release", &OS_RELEASE, "OS name and version unknown");
        }
        Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_release_quoting() {
        let text = concat!(
            "# comment\n",
            "\n",
            "NAME=\"Debian GNU/Linux\"\n",
            "VERSION_ID='12'\n",
            "ID=debian\n",
            "  PRETTY=\"say \\\"hi\\\" \\\\ \\$HOME \\x\"  # trailing comment\n",
            "MIXED=a\"b c\"'d e'\n",
            "EMPTY=\n",
            "BROKEN=\"unterminated\n",
            "no equals sign\n",
            "BAD KEY=1\n",
            "TWO=words here\n",
            "CRLF=\"x\"\r\n",
        );
        let parsed = parse_os_release(text);
        let get = |k| lookup(&parsed.items, k);
        assert_eq!(get("NAME"), Some("Debian GNU/Linux"));
        assert_eq!(get("VERSION_ID"), Some("12"));
        assert_eq!(get("ID"), Some("debian"));
        assert_eq!(get("PRETTY"), Some("say \"hi\" \\ $HOME \\x"));
        assert_eq!(get("MIXED"), Some("ab cd e"));
        assert_eq!(get("EMPTY"), None);
        assert_eq!(get("CRLF"), Some("x"));
        assert_eq!(parsed.skipped, 4);
        assert!(matches!(
            parsed.first_error,
            Some(ProbeError::Malformed { line: 9, reason: "unterminated double quote" })
        ));
    }

    #[test]
    fn later_assignments_win() {
        let parsed = parse_os_release("NAME=a\nNAME=b\nNAME=\n");
        assert_eq!(lookup(&parsed.items, "NAME"), Some("b"));
    }

    #[test]
    fn single_values() {
        assert_eq!(parse_hostname("ap-lobby\n").unwrap(), "ap-lobby");
        assert_eq!(parse_hostname("# set by installer\n\nweb-03\n").unwrap(), "web-03");
        assert!(matches!(parse_hostname("\n# only\n"), Err(ProbeError::Empty)));
        assert!(parse_hostname("two words\n").is_err());

        assert_eq!(parse_model("Ubiquiti UniFi 6 Lite\0").unwrap(), "Ubiquiti UniFi 6 Lite");
        assert_eq!(parse_model("PowerEdge R650\n").unwrap(), "PowerEdge R650");
        assert!(matches!(parse_model("\0junk"), Err(ProbeError::Empty)));
        assert!(parse_model("a\x07b").is_err());

        assert_eq!(parse_kernel_release("5.15.150\n").unwrap(), "5.15.150");
        assert!(parse_kernel_release("").is_err());

        assert_eq!(parse_uptime("863204.17 3401276.88\n").unwrap(), 863_204);
        assert_eq!(parse_uptime("12").unwrap(), 12);
        for bad in ["", "-1.0 2", "1.5e3 0", "nan", "1.x", "99999999999999999999.0"] {
            assert!(parse_uptime(bad).is_err(), "{bad:?}");
        }
    }
}
