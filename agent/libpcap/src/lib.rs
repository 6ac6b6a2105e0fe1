//! libpcap, loaded at run time: live packet capture for the Glimpse agent
//! without linking libpcap.
//!
//! The agent is one binary for devices with and without libpcap. This
//! crate opens `libpcap.so.1`, `libpcap.so.0.8` or `libpcap.so` (in that
//! order) the first time a capture is asked for, and looks up only the
//! functions the agent uses; without the library every call returns
//! [`Error::NotInstalled`] and the agent goes on collecting metadata. Nothing
//! is needed at build time, so the workspace builds and cross-compiles with
//! just a Rust toolchain and a C compiler.
//!
//! The API is safe: a [`Capture`] handle closes on drop, a [`Packet`]'s
//! bytes borrow the handle until the next read, a compiled [`Filter`] is
//! freed on drop. It deliberately does not read capture files (the agent
//! reads those in pure Rust, without libpcap), enumerate interfaces, inject
//! packets or expose statistics: the agent needs none of that.
//!
//! The crate denies unsafe code except in its one FFI module.

#[allow(unsafe_code)]
mod ffi;

pub use ffi::{version, Capture, Filter, Next, Packet};

/// Why libpcap could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// None of the library names could be opened.
    #[error("live capture needs libpcap (Debian: apt-get install libpcap0.8; OpenWrt: opkg install libpcap)")]
    NotInstalled {
        /// Each name tried and why the dynamic loader refused it.
        tried: String,
    },
    /// The library opened but lacks a function the agent calls (libpcap
    /// older than 1.5).
    #[error("{library} has no {function}: live capture needs libpcap 1.5 or later")]
    MissingFunction {
        /// The file that was opened.
        library: &'static str,
        /// The missing function.
        function: &'static str,
    },
    /// libpcap refused: no such interface, no permission, a bad filter.
    #[error("{0}")]
    Pcap(String),
    /// A string for libpcap held a NUL byte, which C cannot pass.
    #[error("the {0} contains a NUL byte")]
    NulByte(&'static str),
}

/// Loads libpcap now (it is otherwise loaded on first use), to tell
/// whether live capture can work on this machine.
pub fn load() -> Result<(), Error> {
    ffi::api().map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether to run a test that needs libpcap at run time: skipped with
    /// one line when it is missing, except under CI (`CI` set), which must
    /// have it and fails instead.
    fn libpcap_present() -> bool {
        match load() {
            Ok(()) => true,
            Err(e) if std::env::var_os("CI").is_some() => panic!("CI must have libpcap: {e}"),
            Err(e) => {
                // Not `eprintln!`, which the harness swallows for a passing test.
                use std::io::Write;
                let _ = writeln!(std::io::stderr(), "skipped: {e}");
                false
            }
        }
    }

    /// Ethernet, IPv4, UDP from port `src` to port `dst`.
    fn udp_frame(src: u16, dst: u16) -> Vec<u8> {
        let mut frame = vec![0xff; 6];
        frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 1, 0x08, 0x00]);
        frame.extend_from_slice(&[0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
        frame.extend_from_slice(&src.to_be_bytes());
        frame.extend_from_slice(&dst.to_be_bytes());
        frame.extend_from_slice(&[0, 8, 0, 0]);
        frame
    }

    #[test]
    fn a_filter_compiled_on_a_dead_handle_matches_what_it_says() {
        if !libpcap_present() {
            return;
        }
        assert!(version().unwrap().contains("libpcap"));
        let dead = Capture::dead(1, 256).unwrap();
        assert_eq!(dead.datalink(), 1);
        let dns = dead.compile("udp port 53").unwrap();
        assert!(dns.matches(&udp_frame(40000, 53)));
        assert!(dns.matches(&udp_frame(53, 40000)));
        assert!(!dns.matches(&udp_frame(40000, 443)));
        // Cut short, the packet cannot show its port: no match, no read past the end.
        assert!(!dns.matches(&udp_frame(40000, 53)[..30]));
        assert!(!dns.matches(&[]));
    }

    #[test]
    fn bad_filters_and_interfaces_are_errors_with_libpcaps_reason() {
        if !libpcap_present() {
            return;
        }
        let dead = Capture::dead(1, 256).unwrap();
        match dead.compile("udp port").unwrap_err() {
            Error::Pcap(message) => assert!(message.contains("syntax error"), "{message}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(dead.compile("udp\0port 53").unwrap_err(), Error::NulByte("filter"));
        // 802.11 primitives make no sense on Ethernet.
        assert!(dead.compile("type mgt subtype beacon").is_err());
        match Capture::open_live("glimpse-no-such-if0", 256).unwrap_err() {
            Error::Pcap(message) => assert!(!message.is_empty()),
            other => panic!("{other:?}"),
        }
        assert_eq!(Capture::open_live("lo\0", 256).unwrap_err(), Error::NulByte("interface name"));
    }

    #[test]
    fn the_missing_library_error_says_how_to_install_it() {
        let e = Error::NotInstalled { tried: "libpcap.so.1: not found".to_owned() };
        assert_eq!(
            e.to_string(),
            "live capture needs libpcap (Debian: apt-get install libpcap0.8; OpenWrt: opkg install libpcap)"
        );
    }
}
