//! The `glimpse-certs` program under another name, so the tests can run it
//! as a real process and read its exit code and output.

fn main() -> std::process::ExitCode {
    glimpse_certs::cli::main()
}
