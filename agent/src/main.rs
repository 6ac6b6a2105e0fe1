//! `glimpse-agent`: see [`glimpse_agent::cli`].

#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    glimpse_agent::cli::main()
}
