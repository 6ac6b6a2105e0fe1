//! OpenWrt's UCI configuration (`/etc/config/glimpse`) and its conversion
//! to `agent.toml`, so that a device is configured the OpenWrt way (`uci
//! set glimpse.device.id=ap-1; uci commit glimpse`, LuCI) and the init
//! script stays a few lines: `glimpse-agent config --from-uci` writes the
//! TOML, and the agent's own loader checks it.
//!
//! Sans-IO: text in, sections or TOML text out. The parser is bounded
//! (file size, sections, options, value and name lengths) because the file
//! is edited by hand and by tools, and it is property-tested: it never
//! panics, and what [`render`] writes it reads back unchanged.
//!
//! The syntax is UCI's: `config <type> ['<name>']` opens a section,
//! `option <name> '<value>'` and `list <name> '<value>'` fill it, `#`
//! starts a comment, `package <name>` is accepted and ignored. Values may
//! be single-quoted (taken as they are), double-quoted or bare (a
//! backslash escapes the next character).
//!
//! The sections and options map onto agent.toml's tables and keys one to
//! one (`config device` is `[device]`, `config location` is
//! `[device.location]`, each `config rule` one `[[capture.rules]]`, `config
//! agent` holds the top-level `log_level` and `log_format` and the init
//! script's `enabled`); [`SCHEMA`] lists them with their types. An unknown
//! section or option is an error, as an unknown key in agent.toml is.

use std::fmt::Write as _;

/// Largest UCI file read.
pub const MAX_UCI_BYTES: usize = 64 * 1024;
/// Most sections in one file.
pub const MAX_SECTIONS: usize = 64;
/// Most options and lists in one section.
pub const MAX_OPTIONS: usize = 128;
/// Most values in one list.
pub const MAX_LIST_VALUES: usize = 64;
/// Longest value, in bytes.
pub const MAX_VALUE_BYTES: usize = 4096;
/// Longest section type, section name or option name, in bytes.
pub const MAX_NAME_BYTES: usize = 64;

/// A problem in a UCI file, with the line it is on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UciError {
    /// The file is larger than [`MAX_UCI_BYTES`].
    #[error("larger than {MAX_UCI_BYTES} bytes")]
    TooLarge,
    /// A line that does not parse.
    #[error("line {line}: {message}")]
    Syntax {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

/// An option's value: `option` (one) or `list` (several).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UciValue {
    /// `option name 'value'`.
    Single(String),
    /// `list name 'value'`, repeated.
    List(Vec<String>),
}

/// One `config` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UciSection {
    /// The section type (`config <type>`).
    pub kind: String,
    /// The section name, if it has one.
    pub name: Option<String>,
    /// Options in file order, each name once, with the line it was set on.
    pub options: Vec<(String, UciValue, usize)>,
}

/// Splits one line into words, honouring quotes and backslashes; a `#`
/// at the start of a word ends the line.
fn words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        match chars.peek() {
            None | Some('#') => return Ok(words),
            Some(_) => {}
        }
        let mut word = String::new();
        while let Some(&c) = chars.peek() {
            if c.is_whitespace() {
                break;
            }
            chars.next();
            match c {
                '\'' => loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err("unterminated single quote".into()),
                    }
                },
                '"' => loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => word.push(chars.next().ok_or("unterminated double quote")?),
                        Some(c) => word.push(c),
                        None => return Err("unterminated double quote".into()),
                    }
                },
                '\\' => word.push(chars.next().ok_or("a backslash at the end of the line")?),
                c => word.push(c),
            }
            if word.len() > MAX_VALUE_BYTES {
                return Err(format!("a value longer than {MAX_VALUE_BYTES} bytes"));
            }
        }
        words.push(word);
    }
}

fn check_name(what: &str, name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME_BYTES {
        return Err(format!("{what} must be 1 to {MAX_NAME_BYTES} bytes"));
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(format!("{what} {name:?} may hold only letters, digits and '_'"));
    }
    Ok(())
}

/// Parses a UCI file.
pub fn parse(text: &str) -> Result<Vec<UciSection>, UciError> {
    if text.len() > MAX_UCI_BYTES {
        return Err(UciError::TooLarge);
    }
    let mut sections: Vec<UciSection> = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let syntax = |message: String| UciError::Syntax { line: number, message };
        let words = words(line).map_err(syntax)?;
        let Some((keyword, args)) = words.split_first() else { continue };
        match (keyword.as_str(), args) {
            ("package", [_]) => {}
            ("config", [kind, rest @ ..]) if rest.len() <= 1 => {
                check_name("a section type", kind).map_err(syntax)?;
                let name = rest.first().cloned();
                if let Some(name) = &name {
                    check_name("a section name", name).map_err(syntax)?;
                }
                if sections.len() == MAX_SECTIONS {
                    return Err(syntax(format!("more than {MAX_SECTIONS} sections")));
                }
                sections.push(UciSection { kind: kind.clone(), name, options: Vec::new() });
            }
            (keyword @ ("option" | "list"), [name, value]) => {
                check_name("an option name", name).map_err(syntax)?;
                let section = sections.last_mut().ok_or_else(|| syntax(format!("{keyword} before any config line")))?;
                let existing = section.options.iter_mut().find(|(n, _, _)| n == name);
                match (keyword, existing) {
                    ("option", None) | ("list", None) => {
                        if section.options.len() == MAX_OPTIONS {
                            return Err(syntax(format!("more than {MAX_OPTIONS} options in one section")));
                        }
                        let value = if keyword == "option" {
                            UciValue::Single(value.clone())
                        } else {
                            UciValue::List(vec![value.clone()])
                        };
                        section.options.push((name.clone(), value, number));
                    }
                    ("list", Some((_, UciValue::List(values), _))) => {
                        if values.len() == MAX_LIST_VALUES {
                            return Err(syntax(format!("more than {MAX_LIST_VALUES} values in list {name}")));
                        }
                        values.push(value.clone());
                    }
                    (_, Some((_, _, first))) => {
                        return Err(syntax(format!("{name} is already set on line {first}")));
                    }
                    _ => unreachable!("keyword is option or list"),
                }
            }
            (other, _) => {
                return Err(syntax(format!(
                    "expected `config <type> [name]`, `option <name> <value>` or `list <name> <value>`, got {:?}",
                    other.chars().take(32).collect::<String>()
                )))
            }
        }
    }
    Ok(sections)
}

/// Writes sections back as UCI text (every value single-quoted), for
/// tests and tools; [`parse`] reads it back unchanged.
pub fn render(sections: &[UciSection]) -> String {
    let quote = |value: &str| format!("'{}'", value.replace('\'', "'\\''"));
    let mut out = String::new();
    for section in sections {
        let _ = write!(out, "config {}", section.kind);
        if let Some(name) = &section.name {
            let _ = write!(out, " {}", quote(name));
        }
        out.push('\n');
        for (name, value, _) in &section.options {
            match value {
                UciValue::Single(v) => {
                    let _ = writeln!(out, "\toption {name} {}", quote(v));
                }
                UciValue::List(values) => {
                    for v in values {
                        let _ = writeln!(out, "\tlist {name} {}", quote(v));
                    }
                }
            }
        }
        out.push('\n');
    }
    out
}

/// The TOML type an option becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A string (paths, names).
    Str,
    /// A non-negative integer.
    Int,
    /// A number (seconds, coordinates).
    Float,
    /// `1`/`0`, `true`/`false`, `yes`/`no`, `on`/`off`.
    Bool,
    /// A UCI `list` of strings.
    List,
    /// A string as `option`; as a `list`, the array under the key named
    /// here (`list address` is `addresses = [...]`).
    OneOrMany(&'static str),
    /// Read by the init script only (`agent.enabled`); not written.
    InitOnly,
}

/// A section type, the agent.toml table it becomes (`""` the top level, a
/// leading `[[` an array of tables), and its options with their types.
pub type SectionSchema = (&'static str, &'static str, &'static [(&'static str, Kind)]);

/// Every section type the conversion knows.
pub const SCHEMA: &[SectionSchema] = &[
    ("agent", "", &[("enabled", Kind::InitOnly), ("log_level", Kind::Str), ("log_format", Kind::Str)]),
    (
        "device",
        "device",
        &[("org", Kind::Str), ("id", Kind::Str), ("kind", Kind::Str), ("name", Kind::Str), ("series", Kind::Str)],
    ),
    (
        "location",
        "device.location",
        &[
            ("site", Kind::Str),
            ("building", Kind::Str),
            ("floor", Kind::Str),
            ("description", Kind::Str),
            ("latitude", Kind::Float),
            ("longitude", Kind::Float),
        ],
    ),
    (
        "collector",
        "collector",
        &[
            ("address", Kind::OneOrMany("addresses")),
            ("addresses", Kind::List),
            ("server_name", Kind::Str),
            ("transport", Kind::Str),
        ],
    ),
    (
        "tls",
        "tls",
        &[
            ("ca", Kind::Str),
            ("cert", Kind::Str),
            ("key", Kind::Str),
            ("shared_key", Kind::Str),
            ("cipher_preference", Kind::Str),
        ],
    ),
    (
        "ssh",
        "ssh",
        &[
            ("key", Kind::Str),
            ("host_key_fingerprint", Kind::Str),
            ("user", Kind::Str),
            ("cipher_preference", Kind::Str),
        ],
    ),
    ("collect", "collect", &[("interval_secs", Kind::Float), ("sysroot", Kind::Str)]),
    (
        "spool",
        "spool",
        &[("enabled", Kind::Bool), ("path", Kind::Str), ("max_bytes", Kind::Int), ("sync_interval_ms", Kind::Int)],
    ),
    (
        "transport",
        "transport",
        &[
            ("max_frame_bytes", Kind::Int),
            ("max_batch_records", Kind::Int),
            ("max_queued_records", Kind::Int),
            ("connect_timeout_secs", Kind::Float),
            ("backoff_initial_ms", Kind::Int),
            ("backoff_max_secs", Kind::Int),
            ("drain_timeout_secs", Kind::Float),
        ],
    ),
    (
        "capture",
        "capture",
        &[
            ("consent_file", Kind::Str),
            ("max_packets", Kind::Int),
            ("max_bytes", Kind::Int),
            ("max_duration_secs", Kind::Int),
            ("monitor_interface", Kind::Str),
        ],
    ),
    (
        "rule",
        "[[capture.rules",
        &[
            ("event", Kind::Str),
            ("window_secs", Kind::Int),
            ("pre_trigger_packets", Kind::Int),
            ("cooldown_secs", Kind::Int),
        ],
    ),
    (
        "probes",
        "probes",
        &[
            ("wireless", Kind::Bool),
            ("wired", Kind::Bool),
            ("wan", Kind::Bool),
            ("command_timeout_secs", Kind::Float),
            ("dhcp_leases", Kind::List),
            ("wan_interfaces", Kind::List),
            ("dot1x_interfaces", Kind::List),
            ("max_sessions", Kind::Int),
            ("conntrack_table", Kind::Str),
        ],
    ),
];

/// A TOML basic string: quotes, backslashes and control characters escaped.
fn toml_string(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn toml_value(kind: Kind, value: &UciValue) -> Result<Option<String>, String> {
    let single = |value: &UciValue| match value {
        UciValue::Single(v) => Ok(v.clone()),
        UciValue::List(_) => Err("is a list; use option".to_owned()),
    };
    Ok(Some(match kind {
        Kind::InitOnly => {
            parse_bool(&single(value)?)?;
            return Ok(None);
        }
        Kind::Str => toml_string(&single(value)?),
        Kind::Int => {
            let v = single(value)?;
            v.trim().parse::<u64>().map_err(|_| format!("must be a whole number, got {v:?}"))?.to_string()
        }
        Kind::Float => {
            let v = single(value)?;
            let n =
                v.trim().parse::<f64>().ok().filter(|n| n.is_finite()).ok_or(format!("must be a number, got {v:?}"))?;
            // `{:?}` keeps a decimal point ("30.0"), so TOML reads a float.
            format!("{n:?}")
        }
        Kind::Bool => parse_bool(&single(value)?)?.to_string(),
        Kind::OneOrMany(_) if matches!(value, UciValue::Single(_)) => toml_string(&single(value)?),
        Kind::List | Kind::OneOrMany(_) => {
            let values = match value {
                UciValue::List(values) => values.clone(),
                UciValue::Single(v) => vec![v.clone()],
            };
            let items: Vec<String> = values.iter().map(|v| toml_string(v)).collect();
            format!("[{}]", items.join(", "))
        }
    }))
}

fn parse_bool(value: &str) -> Result<bool, String> {
    match value.trim() {
        "1" | "true" | "yes" | "on" | "enabled" => Ok(true),
        "0" | "false" | "no" | "off" | "disabled" => Ok(false),
        other => Err(format!("must be 1 or 0 (true/false, yes/no, on/off), got {other:?}")),
    }
}

/// The agent.toml text for parsed UCI sections, or every problem found
/// (unknown sections and options, values of the wrong type, a section
/// given twice), each naming its line. The result still needs the agent's
/// config loader to check what the values mean.
pub fn to_toml(sections: &[UciSection], source: &str) -> Result<String, Vec<String>> {
    let mut problems = Vec::new();
    let mut top = String::new();
    let mut tables = String::new();
    let mut seen: Vec<&str> = Vec::new();
    for section in sections {
        let label = match &section.name {
            Some(name) => format!("config {} '{name}'", section.kind),
            None => format!("config {}", section.kind),
        };
        let Some((_, table, options)) = SCHEMA.iter().find(|(kind, _, _)| *kind == section.kind) else {
            let known: Vec<&str> = SCHEMA.iter().map(|(k, _, _)| *k).collect();
            problems.push(format!("{label}: unknown section type (known: {})", known.join(", ")));
            continue;
        };
        let repeatable = table.starts_with("[[");
        if !repeatable && seen.contains(&section.kind.as_str()) {
            problems.push(format!("{label}: a second `config {}` section (only one is allowed)", section.kind));
            continue;
        }
        seen.push(section.kind.as_str());
        let mut body = String::new();
        for (name, value, line) in &section.options {
            let Some((_, kind)) = options.iter().find(|(n, _)| n == name) else {
                let known: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
                problems.push(format!("line {line}: {label}: unknown option {name} (known: {})", known.join(", ")));
                continue;
            };
            // `list address` is agent.toml's `addresses`.
            let key = match (kind, value) {
                (Kind::OneOrMany(many), UciValue::List(_)) => *many,
                _ => name.as_str(),
            };
            match toml_value(*kind, value) {
                Ok(Some(v)) => {
                    let _ = writeln!(body, "{key} = {v}");
                }
                Ok(None) => {}
                Err(e) => problems.push(format!("line {line}: {}.{name} {e}", section.kind)),
            }
        }
        if table.is_empty() {
            top.push_str(&body);
        } else if let Some(array) = table.strip_prefix("[[") {
            let _ = write!(tables, "\n[[{array}]]\n{body}");
        } else {
            let _ = write!(tables, "\n[{table}]\n{body}");
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(format!(
        "# Generated by `glimpse-agent config --from-uci` from {source}: edit that\n\
         # file (uci set glimpse....; uci commit glimpse), not this one.\n{top}{tables}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const EXAMPLE: &str = include_str!("../packaging/openwrt/glimpse.uci");

    #[test]
    fn the_packaged_uci_file_converts_to_a_config_the_agent_loads() {
        let sections = parse(EXAMPLE).unwrap();
        let toml = to_toml(&sections, "/etc/config/glimpse").unwrap();
        let config = crate::AgentConfig::parse(
            &toml,
            std::path::Path::new("/var/etc/glimpse/agent.toml"),
            std::path::Path::new("/var/etc/glimpse"),
        )
        .unwrap_or_else(|e| panic!("{e}\n{toml}"));
        assert_eq!(config.identity.to_string(), "acme/ap-1 (ap)");
        assert_eq!(config.spool.path.as_deref(), Some(std::path::Path::new("/var/lib/glimpse-agent/spool")));
    }

    #[test]
    fn a_list_of_collector_addresses_becomes_addresses() {
        let several = EXAMPLE.replace(
            "\toption address 'collector.example:7443'\n",
            "\tlist address 'collector-1.example:7443'\n\tlist address '[2001:db8::7]:7443'\n",
        );
        assert_ne!(several, EXAMPLE, "the packaged file sets option address");
        let toml = to_toml(&parse(&several).unwrap(), "x").unwrap();
        assert!(toml.contains("addresses = [\"collector-1.example:7443\", \"[2001:db8::7]:7443\"]"), "{toml}");
        let config = crate::AgentConfig::parse(&toml, std::path::Path::new("a.toml"), std::path::Path::new("/"))
            .unwrap_or_else(|e| panic!("{e}\n{toml}"));
        let addresses: Vec<String> = config.collectors.iter().map(ToString::to_string).collect();
        assert_eq!(addresses, ["collector-1.example:7443", "[2001:db8::7]:7443"]);
        // One option stays `address`; both at once is the loader's error.
        let toml = to_toml(&parse(EXAMPLE).unwrap(), "x").unwrap();
        assert!(toml.contains("address = \"collector.example:7443\""), "{toml}");
        let both = EXAMPLE.replace(
            "\toption address 'collector.example:7443'\n",
            "\toption address 'a.example:7443'\n\tlist addresses 'b.example:7443'\n",
        );
        let toml = to_toml(&parse(&both).unwrap(), "x").unwrap();
        let err = crate::AgentConfig::parse(&toml, std::path::Path::new("a.toml"), std::path::Path::new("/"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("address or addresses, not both"), "{err}");
    }

    #[test]
    fn quoting_lists_and_comments() {
        let text = "package glimpse\n# comment\nconfig device 'device'\n\toption org \"ac\\\"me\" # trailing\n\
                    \toption name 'AP lobby #2'\nconfig probes\n\tlist wan_interfaces wan\n\tlist wan_interfaces 'pppoe-wan'\n";
        let sections = parse(text).unwrap();
        assert_eq!(sections.len(), 2);
        assert_eq!(sections[0].options[0].1, UciValue::Single("ac\"me".into()));
        assert_eq!(sections[0].options[1].1, UciValue::Single("AP lobby #2".into()));
        assert_eq!(sections[1].options[0].1, UciValue::List(vec!["wan".into(), "pppoe-wan".into()]));
        let toml = to_toml(&sections, "x").unwrap();
        assert!(
            toml.contains("org = \"ac\\\"me\"") && toml.contains("wan_interfaces = [\"wan\", \"pppoe-wan\"]"),
            "{toml}"
        );
    }

    #[test]
    fn every_problem_is_named_with_its_line() {
        let text = "config device\n\toption org acme\n\toption colour blue\nconfig spool\n\toption max_bytes lots\n\
                    config gadget\nconfig device\n";
        let problems = to_toml(&parse(text).unwrap(), "x").unwrap_err();
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(problems[0].contains("line 3") && problems[0].contains("colour"), "{problems:?}");
        assert!(problems[1].contains("line 5") && problems[1].contains("whole number"), "{problems:?}");
        assert!(problems[2].contains("gadget") && problems[3].contains("second"), "{problems:?}");
        for (bad, why) in [
            ("option org acme\n", "before any config"),
            ("config device\noption org 'acme\n", "unterminated"),
            ("config device\noption org a\noption org b\n", "already set on line 2"),
            ("config dev-ice\n", "letters, digits"),
            ("config device\nfrobnicate\n", "expected"),
        ] {
            let err = parse(bad).unwrap_err().to_string();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
        assert_eq!(parse(&"#".repeat(MAX_UCI_BYTES + 1)), Err(UciError::TooLarge));
        assert!(parse(&"config a\n".repeat(MAX_SECTIONS + 1)).unwrap_err().to_string().contains("sections"));
    }

    fn name() -> impl Strategy<Value = String> {
        "[a-z_][a-z0-9_]{0,15}"
    }

    fn section() -> impl Strategy<Value = UciSection> {
        let value = any::<String>().prop_map(|s| s.replace(['\n', '\r'], "").chars().take(64).collect::<String>());
        let option = (
            name(),
            prop_oneof![
                value.clone().prop_map(UciValue::Single),
                proptest::collection::vec(value, 1..4).prop_map(UciValue::List)
            ],
        );
        (name(), proptest::option::of(name()), proptest::collection::vec(option, 0..6)).prop_map(
            |(kind, name, options)| {
                let mut unique: Vec<(String, UciValue, usize)> = Vec::new();
                for (n, v) in options {
                    if !unique.iter().any(|(u, _, _)| *u == n) {
                        unique.push((n, v, 0));
                    }
                }
                UciSection { kind, name, options: unique }
            },
        )
    }

    /// Sections with line numbers zeroed, for comparing.
    fn shape(sections: &[UciSection]) -> Vec<UciSection> {
        let mut sections = sections.to_vec();
        for (_, _, line) in sections.iter_mut().flat_map(|s| s.options.iter_mut()) {
            *line = 0;
        }
        sections
    }

    proptest! {
        #[test]
        fn parse_never_panics(text in any::<String>()) {
            let _ = parse(&text);
        }

        #[test]
        fn parse_never_panics_on_uci_like_text(text in "((config|option|list|package|#)[ \t]+['\"a-z\\\\ ]{0,12}\n){0,20}") {
            if let Ok(sections) = parse(&text) {
                let _ = to_toml(&sections, "x");
            }
        }

        #[test]
        fn render_then_parse_is_the_identity(sections in proptest::collection::vec(section(), 0..5)) {
            let text = render(&sections);
            let back = parse(&text).map_err(|e| TestCaseError::fail(format!("{e}: {text}")))?;
            prop_assert_eq!(shape(&back), shape(&sections));
        }

        #[test]
        fn converted_strings_read_back_exactly(value in any::<String>().prop_map(|s| s.chars().take(200).collect::<String>())) {
            let sections = vec![UciSection {
                kind: "device".into(),
                name: None,
                options: vec![("name".into(), UciValue::Single(value.clone()), 1)],
            }];
            let text = to_toml(&sections, "x").unwrap();
            let parsed: toml::Table = toml::from_str(&text).map_err(|e| TestCaseError::fail(format!("{e}: {text}")))?;
            prop_assert_eq!(parsed["device"]["name"].as_str(), Some(value.as_str()));
        }
    }
}
