//! Running the device's own tools (`iw`, `hostapd_cli`, `bridge`, `lldpcli`,
//! `conntrack`) with a deadline and a cap on what is read back.
//!
//! Some of what the product promises is only printed by tools: the kernel
//! exposes station, FDB and VLAN tables over netlink, and lldpd and hostapd
//! only over their control sockets. Speaking those protocols ourselves
//! would add code and `unsafe` for the same text the tools print, so the
//! agent runs them, as an admin would. A tool that hangs is killed at the
//! deadline; one that prints without end is cut at the cap and killed.

use std::io::{self, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

/// Why a command gave no usable output.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The program is not installed (or not on `PATH`).
    #[error("{program}: not installed")]
    NotFound {
        /// The program.
        program: String,
    },
    /// It could not be started for another reason.
    #[error("{program}: could not start: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// It ran past the deadline and was killed.
    #[error("{program}: no answer within {timeout:?}; killed")]
    Timeout {
        /// The program.
        program: String,
        /// The deadline.
        timeout: Duration,
    },
    /// It exited unsuccessfully.
    #[error("{program}: exited with {status}{}", Stderr(.stderr))]
    Failed {
        /// The program.
        program: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// The first line of what it printed on standard error.
        stderr: String,
    },
}

impl CommandError {
    /// Whether the program is simply absent: the source does not exist on
    /// this device.
    pub fn is_missing(&self) -> bool {
        matches!(self, CommandError::NotFound { .. })
    }
}

struct Stderr<'a>(&'a str);

impl std::fmt::Display for Stderr<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            Ok(())
        } else {
            write!(f, ": {}", self.0)
        }
    }
}

/// The output of a command that succeeded.
#[derive(Debug)]
pub struct Output {
    /// Standard output as text (invalid UTF-8 replaced; a cut output loses
    /// its partial last line).
    pub text: String,
    /// Whether the output was longer than the cap and was cut.
    pub truncated: bool,
}

/// Runs `argv` (program, then arguments) with an empty environment but
/// `PATH`, no standard input, and `timeout`; reads at most `limit` bytes of
/// its standard output.
pub fn run(argv: &[String], timeout: Duration, limit: usize) -> Result<Output, CommandError> {
    let Some((program, args)) = argv.split_first() else {
        return Err(CommandError::NotFound { program: String::new() });
    };
    let mut command = Command::new(program);
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into()))
        // Tools print numbers and units the parsers expect only in the C locale.
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => CommandError::NotFound { program: program.clone() },
        _ => CommandError::Spawn { program: program.clone(), source },
    })?;
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        kill(&mut child);
        return Err(CommandError::Spawn { program: program.clone(), source: io::Error::other("no pipes") });
    };
    // A thread reads, so the deadline holds even when the tool stops
    // writing without exiting.
    let (done_tx, done_rx) = mpsc::channel();
    let reader = thread::Builder::new()
        .name("glimpse-cmd".into())
        .spawn(move || {
            let mut out = Vec::new();
            let read = stdout.take(limit as u64 + 1).read_to_end(&mut out);
            let mut err = Vec::new();
            // Past the cap the tool is still running: waiting for its
            // standard error to close would wait for the deadline.
            if out.len() <= limit {
                let _ = stderr.take(512).read_to_end(&mut err);
            }
            let _ = done_tx.send((read.map(|_| out), err));
        })
        .map_err(|source| CommandError::Spawn { program: program.clone(), source })?;
    let received = done_rx.recv_timeout(timeout);
    let Ok((read, err)) = received else {
        // Not joined: a grandchild may still hold the pipe open; the thread
        // ends when it closes.
        kill(&mut child);
        drop(reader);
        return Err(CommandError::Timeout { program: program.clone(), timeout });
    };
    let _ = reader.join();
    let mut bytes = read.map_err(|source| CommandError::Spawn { program: program.clone(), source })?;
    let truncated = bytes.len() > limit;
    if truncated {
        // It may still be writing into a pipe nobody reads.
        kill(&mut child);
        bytes.truncate(limit);
        let keep = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        bytes.truncate(keep);
    }
    let status = child.wait().map_err(|source| CommandError::Spawn { program: program.clone(), source })?;
    // 127 is how a shell says "command not found", and how a spawn whose
    // exec failed after the fork reports it (qemu-user runs posix_spawn
    // that way): either way the tool is not on this device.
    if status.code() == Some(127) && bytes.is_empty() {
        return Err(CommandError::NotFound { program: program.clone() });
    }
    if !status.success() && !truncated {
        let stderr = String::from_utf8_lossy(&err).lines().next().unwrap_or("").chars().take(200).collect();
        return Err(CommandError::Failed { program: program.clone(), status, stderr });
    }
    let text = match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    };
    Ok(Output { text, truncated })
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Vec<String> {
        vec!["sh".into(), "-c".into(), script.into()]
    }

    #[test]
    fn output_missing_failing_hanging_and_endless_tools() {
        let out = run(&sh("printf 'a\\nb\\n'"), Duration::from_secs(10), 1024).unwrap();
        assert_eq!((out.text.as_str(), out.truncated), ("a\nb\n", false));

        let missing = run(&["glimpse-no-such-tool".into()], Duration::from_secs(10), 1024).unwrap_err();
        assert!(missing.is_missing(), "{missing}");
        let wrapped = run(&sh("exec glimpse-no-such-tool"), Duration::from_secs(10), 1024).unwrap_err();
        assert!(wrapped.is_missing(), "a wrapper script that cannot find its tool: {wrapped}");

        let failed =
            run(&sh("echo 'command failed: No such device (-19)' >&2; exit 237"), Duration::from_secs(10), 1024)
                .unwrap_err();
        let text = failed.to_string();
        assert!(text.contains("237") && text.contains("No such device"), "{text}");

        // Hangs without output: killed at the deadline (a short one; the
        // test checks the outcome, not the timing).
        let hung = run(&sh("exec sleep 600"), Duration::from_millis(200), 1024).unwrap_err();
        assert!(matches!(hung, CommandError::Timeout { .. }), "{hung}");

        // Writes without end: cut at the cap, at a line boundary, and killed.
        let endless = run(&sh("yes 0123456789"), Duration::from_secs(30), 4096).unwrap();
        assert!(endless.truncated && endless.text.len() <= 4096 && endless.text.ends_with('\n'));
        assert!(endless.text.lines().all(|l| l == "0123456789"));
    }
}
