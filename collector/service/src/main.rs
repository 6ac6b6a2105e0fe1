//! `glimpse-collector`: see [`glimpse_collector::cli`].

#![forbid(unsafe_code)]

/// mimalloc rather than glibc's malloc: ingest frees on one thread what
/// another allocated, millions of small buffers a second, where glibc's
/// arenas spent a fifth of the collector's CPU (docs/PERFORMANCE.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    glimpse_collector::cli::main()
}
