//! The `glimpse-collector` program under another name, so the fault tests
//! can run it as a real process and `kill -9` it.

fn main() -> std::process::ExitCode {
    glimpse_collector::cli::main()
}
