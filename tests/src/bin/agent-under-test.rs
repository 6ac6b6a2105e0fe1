//! The `glimpse-agent` program under another name, so the fault tests can
//! run it as a real process and `kill -9` it (Cargo tells an integration
//! test where its own package's binaries are, not other packages').

fn main() -> std::process::ExitCode {
    glimpse_agent::cli::main()
}
