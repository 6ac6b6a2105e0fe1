//! `glimpse-certs`: see [`glimpse_certs::cli`].

#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    glimpse_certs::cli::main()
}
