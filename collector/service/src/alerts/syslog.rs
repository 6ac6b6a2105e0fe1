//! Alerts as syslog messages: RFC 5424 for remote receivers (UDP, RFC
//! 5426; TCP and TLS with octet-counting framing, RFC 6587 and RFC 5425),
//! and the traditional local format that `syslog(3)` writes to `/dev/log`,
//! which every local daemon (rsyslog, syslog-ng, journald) reads. Sans-IO:
//! text in, bytes out.
//!
//! ```text
//! <PRI>1 TIMESTAMP HOSTNAME glimpse-collector PROCID MSGID [glimpse@32473 id="…" key="…" severity="…" org="…" device="…" subject="…"] BOM summary
//! ```
//!
//! `PRI` is facility × 8 + severity (critical 2, warning 4, notice 5),
//! `MSGID` the alert kind (`device-silent`), the structured data carries
//! the payload's fields (absent ones left out; `"`, `\` and `]` escaped),
//! and the message is the summary in UTF-8 after a byte order mark, as RFC
//! 5424 asks. 32473 is the private enterprise number RFC 5612 reserves for
//! documentation; the SD-ID is fixed so that receivers can match on it.

use super::model::{rfc3339, Alert};

/// Longest message produced, in bytes. The header with every field at
/// its bound fits (about 3.5 KiB of 4-byte characters); a usual alert is a
/// few hundred bytes, well within the 2048 that RFC 5426 asks UDP
/// receivers to accept.
pub const MAX_MESSAGE_BYTES: usize = 4096;

/// `APP-NAME` and the local tag.
pub const APP_NAME: &str = "glimpse-collector";

/// The structured data's ID.
pub const SD_ID: &str = "glimpse@32473";

/// A syslog facility, by its RFC 5424 name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facility(u8);

impl Facility {
    /// The facility named `name` (`daemon`, `auth`, `local0` … `local7`, …).
    pub fn from_name(name: &str) -> Option<Facility> {
        const NAMES: [&str; 24] = [
            "kern",
            "user",
            "mail",
            "daemon",
            "auth",
            "syslog",
            "lpr",
            "news",
            "uucp",
            "cron",
            "authpriv",
            "ftp",
            "ntp",
            "security",
            "console",
            "solaris-cron",
            "local0",
            "local1",
            "local2",
            "local3",
            "local4",
            "local5",
            "local6",
            "local7",
        ];
        NAMES.iter().position(|n| *n == name).and_then(|i| u8::try_from(i).ok()).map(Facility)
    }

    /// The facility's number.
    pub fn code(self) -> u8 {
        self.0
    }
}

impl Default for Facility {
    /// `daemon`.
    fn default() -> Self {
        Facility(3)
    }
}

/// Who is sending: what every line names besides the alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// `HOSTNAME`: the collector's name (printable ASCII, at most 255).
    pub hostname: String,
    /// `PROCID`: the process id.
    pub procid: u32,
    /// The facility.
    pub facility: Facility,
}

impl Origin {
    /// An origin; the host name is cut to what RFC 5424 allows.
    pub fn new(hostname: &str, procid: u32, facility: Facility) -> Self {
        Origin { hostname: header_field(hostname, 255), procid, facility }
    }
}

/// The RFC 5424 message for `alert` with its unique `id`.
pub fn rfc5424(origin: &Origin, alert: &Alert, id: &str) -> Vec<u8> {
    let pri = u16::from(origin.facility.code()) * 8 + u16::from(alert.severity.syslog_code());
    let mut line = format!(
        "<{pri}>1 {} {} {APP_NAME} {} {} [{SD_ID}",
        rfc3339(alert.at_ms),
        origin.hostname,
        origin.procid,
        header_field(alert.kind.as_str(), 32),
    );
    let severity = format!("{:?}", alert.severity).to_lowercase();
    let params: [(&str, Option<&str>); 6] = [
        ("id", Some(id)),
        ("key", Some(&alert.key())),
        ("severity", Some(&severity)),
        ("org", alert.org.as_deref()),
        ("device", alert.device.as_deref()),
        ("subject", alert.subject.as_deref()),
    ];
    for (name, value) in params {
        if let Some(value) = value {
            line.push(' ');
            line.push_str(name);
            line.push_str("=\"");
            escape_param(value, &mut line);
            line.push('"');
        }
    }
    line.push_str("] \u{feff}");
    finish(line, &alert.summary)
}

/// The traditional local line (`<PRI>Mmm dd hh:mm:ss tag[pid]: text`) that
/// `/dev/log` readers expect, with the alert's fields in the text.
pub fn local(origin: &Origin, alert: &Alert, id: &str) -> Vec<u8> {
    let pri = u16::from(origin.facility.code()) * 8 + u16::from(alert.severity.syslog_code());
    let stamp = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(alert.at_ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            let format =
                time::macros::format_description!("[month repr:short] [day padding:space] [hour]:[minute]:[second]");
            t.format(&format).ok()
        })
        .unwrap_or_else(|| "Jan  1 00:00:00".to_owned());
    let mut line = format!("<{pri}>{stamp} {APP_NAME}[{}]: alert {} id={id}", origin.procid, alert.kind);
    for (name, value) in [("org", &alert.org), ("device", &alert.device), ("subject", &alert.subject)] {
        if let Some(value) = value {
            line.push_str(&format!(" {name}={value:?}"));
        }
    }
    line.push_str(": ");
    finish(line, &alert.summary)
}

/// Octet-counting framing for TCP and TLS: `LEN SP MSG`.
pub fn octet_counted(message: &[u8]) -> Vec<u8> {
    let mut framed = format!("{} ", message.len()).into_bytes();
    framed.extend_from_slice(message);
    framed
}

/// The header and the summary, cut on a character boundary so that the
/// whole fits [`MAX_MESSAGE_BYTES`].
fn finish(mut line: String, summary: &str) -> Vec<u8> {
    for c in summary.chars() {
        let c = if c.is_control() { ' ' } else { c };
        if line.len() + c.len_utf8() > MAX_MESSAGE_BYTES {
            break;
        }
        line.push(c);
    }
    // The header alone never exceeds the bound (every field is bounded);
    // this only keeps the promise if that ever changes.
    if line.len() > MAX_MESSAGE_BYTES {
        let cut = (0..=MAX_MESSAGE_BYTES).rev().find(|&i| line.is_char_boundary(i)).unwrap_or(0);
        line.truncate(cut);
    }
    line.into_bytes()
}

/// A header field: printable US-ASCII without spaces, 1 to `max`
/// characters; `-` (NILVALUE) when nothing is left.
fn header_field(text: &str, max: usize) -> String {
    let kept: String = text.chars().filter(|c| c.is_ascii_graphic()).take(max).collect();
    if kept.is_empty() {
        "-".to_owned()
    } else {
        kept
    }
}

/// Escapes a PARAM-VALUE (RFC 5424 section 6.3.3) and drops control
/// characters.
fn escape_param(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '"' | '\\' | ']' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::model::{AlertKind, Severity};
    use super::*;

    fn origin() -> Origin {
        Origin::new("collector-1.example", 4242, Facility::from_name("local3").unwrap())
    }

    #[test]
    fn an_rfc5424_line_with_escaped_structured_data() {
        let alert =
            Alert::new(AlertKind::DeviceSilent, Severity::Warning, "ap-1 silent for 61 minutes", 1_767_225_600_000)
                .org("acme")
                .device("ap-1")
                .subject("quote\" back\\ close]");
        let line = String::from_utf8(rfc5424(&origin(), &alert, "id-7")).unwrap();
        // local3 = 19; 19 * 8 + 4 = 156.
        assert_eq!(
            line,
            "<156>1 2026-01-01T00:00:00.000Z collector-1.example glimpse-collector 4242 device-silent \
             [glimpse@32473 id=\"id-7\" key=\"device-silent|acme|ap-1|quote\\\" back\\\\ close\\]\" severity=\"warning\" \
             org=\"acme\" device=\"ap-1\" subject=\"quote\\\" back\\\\ close\\]\"] \u{feff}ap-1 silent for 61 minutes"
        );
        assert_eq!(octet_counted(b"abc"), b"3 abc");
    }

    #[test]
    fn absent_fields_are_left_out_and_names_are_made_safe() {
        let alert = Alert::new(AlertKind::AuditChainBroken, Severity::Critical, "tampered", 0);
        let o = Origin::new("bad host\nname", 1, Facility::default());
        let line = String::from_utf8(rfc5424(&o, &alert, "x")).unwrap();
        assert!(
            line.starts_with("<26>1 1970-01-01T00:00:00.000Z badhostname glimpse-collector 1 audit-chain-broken "),
            "{line}"
        );
        assert!(!line.contains("org=") && !line.contains("device="), "{line}");
        assert_eq!(Origin::new("", 1, Facility::default()).hostname, "-");
        assert_eq!(Facility::from_name("local8"), None);
        assert_eq!(Facility::from_name("daemon"), Some(Facility::default()));
    }

    #[test]
    fn messages_are_bounded_on_character_boundaries() {
        let summary = "é".repeat(3000);
        let wide = "\u{10348}".repeat(200);
        let alert = Alert::new(AlertKind::ConsentChanged, Severity::Notice, &summary, 0)
            .org(&wide)
            .device(&wide)
            .subject(&"]".repeat(200));
        let o = Origin::new(&"h".repeat(300), u32::MAX, Facility::default());
        for bytes in [rfc5424(&o, &alert, "id"), local(&o, &alert, "id")] {
            assert!(bytes.len() <= MAX_MESSAGE_BYTES);
            assert!(String::from_utf8(bytes).is_ok());
        }
    }

    #[test]
    fn the_local_format() {
        let alert =
            Alert::new(AlertKind::ConsentChanged, Severity::Notice, "capture consent turned off", 1_767_225_600_000)
                .org("acme");
        let line = String::from_utf8(local(&origin(), &alert, "id-1")).unwrap();
        assert_eq!(
            line,
            "<157>Jan  1 00:00:00 glimpse-collector[4242]: alert consent-changed id=id-1 org=\"acme\": capture consent turned off"
        );
    }
}
