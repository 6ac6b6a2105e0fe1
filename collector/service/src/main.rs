//! `glimpse-collector`: see [`glimpse_collector::cli`].

#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    glimpse_collector::cli::main()
}
