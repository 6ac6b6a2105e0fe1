//! The systemd notification protocol (`Type=notify`), without libsystemd:
//! one datagram per state change on the Unix socket `$NOTIFY_SOCKET` names
//! (a path, or `@name` in the abstract namespace), and `WATCHDOG=1` every
//! half `$WATCHDOG_USEC` when the unit sets `WatchdogSec=`.
//!
//! Outside systemd (`$NOTIFY_SOCKET` unset) every call does nothing. A
//! failed send is logged and otherwise ignored: the service works the same,
//! systemd only learns less.

use std::ffi::OsString;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// Longest `WATCHDOG_USEC` taken seriously (a day); beyond it the value is
/// a mistake and no pings are sent.
const MAX_WATCHDOG: Duration = Duration::from_secs(24 * 3600);

/// Where and how often to tell systemd about the service.
#[derive(Debug)]
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` from the
    /// environment (a `WATCHDOG_PID` of another process turns pings off).
    pub fn from_env() -> Self {
        let socket = std::env::var_os("NOTIFY_SOCKET");
        let usec = std::env::var("WATCHDOG_USEC").ok();
        let pid = std::env::var("WATCHDOG_PID").ok();
        Self::from_values(socket, usec.as_deref(), pid.as_deref(), std::process::id())
    }

    fn from_values(socket: Option<OsString>, usec: Option<&str>, pid: Option<&str>, our_pid: u32) -> Self {
        let target = socket.and_then(|name| match connect(&name) {
            Ok(pair) => Some(pair),
            Err(e) => {
                tracing::warn!(socket = ?name, "cannot use NOTIFY_SOCKET; systemd will not be notified: {e}");
                None
            }
        });
        let for_us = pid.is_none_or(|p| p.trim().parse::<u32>().ok() == Some(our_pid));
        let watchdog = usec
            .and_then(|u| u.trim().parse::<u64>().ok())
            .filter(|&u| u > 0)
            .map(Duration::from_micros)
            .filter(|d| *d <= MAX_WATCHDOG && for_us && target.is_some());
        Self { target, watchdog }
    }

    /// How often to send `WATCHDOG=1` (half the watchdog timeout), if systemd asked.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog.map(|d| d / 2)
    }

    /// Sends `state` (`KEY=value` lines) to systemd, if it listens.
    pub fn notify(&self, state: &str) {
        if let Some((socket, addr)) = &self.target {
            if let Err(e) = socket.send_to_addr(state.as_bytes(), addr) {
                tracing::warn!("cannot notify systemd: {e}");
            }
        }
    }

    /// `READY=1`: the listeners are up.
    pub fn ready(&self, status: &str) {
        self.notify(&format!("READY=1\nSTATUS={}", one_line(status)));
    }

    /// `STOPPING=1`: shutdown has begun.
    pub fn stopping(&self) {
        self.notify("STOPPING=1\nSTATUS=draining connections");
    }

    /// `WATCHDOG=1`: the service is alive.
    pub fn watchdog(&self) {
        self.notify("WATCHDOG=1");
    }
}

/// Keeps a status line to one line of bounded length.
fn one_line(status: &str) -> String {
    status.chars().map(|c| if c.is_control() { ' ' } else { c }).take(200).collect()
}

fn connect(name: &std::ffi::OsStr) -> std::io::Result<(UnixDatagram, SocketAddr)> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = name.as_bytes();
    let addr = match bytes.split_first() {
        Some((b'@', abstract_name)) => abstract_addr(abstract_name)?,
        Some((b'/', _)) => SocketAddr::from_pathname(std::path::Path::new(name))?,
        _ => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "NOTIFY_SOCKET must be an absolute path or @name",
            ))
        }
    };
    Ok((UnixDatagram::unbound()?, addr))
}

#[cfg(target_os = "linux")]
fn abstract_addr(name: &[u8]) -> std::io::Result<SocketAddr> {
    use std::os::linux::net::SocketAddrExt;
    SocketAddr::from_abstract_name(name)
}

#[cfg(not(target_os = "linux"))]
fn abstract_addr(_name: &[u8]) -> std::io::Result<SocketAddr> {
    Err(std::io::Error::new(std::io::ErrorKind::Unsupported, "abstract sockets are Linux-only"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_reach_the_socket_and_the_watchdog_interval_is_half() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::from_values(Some(path.clone().into()), Some("3000000"), None, 1);
        assert_eq!(n.watchdog_interval(), Some(Duration::from_millis(1500)));
        n.ready("listening\non 1.2.3.4");
        n.watchdog();
        n.stopping();
        let mut buf = [0u8; 256];
        let mut got = Vec::new();
        for _ in 0..3 {
            let len = listener.recv(&mut buf).unwrap();
            got.push(String::from_utf8(buf[..len].to_vec()).unwrap());
        }
        assert_eq!(
            got,
            ["READY=1\nSTATUS=listening on 1.2.3.4", "WATCHDOG=1", "STOPPING=1\nSTATUS=draining connections"]
        );
    }

    #[test]
    fn watchdog_only_for_us_and_only_sane_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let _listener = UnixDatagram::bind(&path).unwrap();
        let with = |usec: Option<&str>, pid: Option<&str>| {
            Notifier::from_values(Some(path.clone().into()), usec, pid, 42).watchdog_interval()
        };
        assert_eq!(with(Some("2000000"), Some("42")), Some(Duration::from_secs(1)));
        assert_eq!(with(Some("2000000"), Some("43")), None, "another process's watchdog");
        for bad in ["0", "-5", "soon", "99999999999999999999", "86400000001"] {
            assert_eq!(with(Some(bad), None), None, "{bad}");
        }
        // No socket: nothing to ping, whatever WATCHDOG_USEC says.
        assert_eq!(Notifier::from_values(None, Some("2000000"), None, 42).watchdog_interval(), None);
        // A relative name is refused, not guessed at.
        assert!(Notifier::from_values(Some("relative".into()), None, None, 42).target.is_none());
    }
}
