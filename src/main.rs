//! The `eglr` command line. Each subcommand lives in its own file under `src/cli/`.

mod cli;

/// mimalloc instead of glibc's allocator: the stages allocate and free small objects
/// on many threads (decoded events, JSON, batches), where glibc's arenas showed up as
/// about 7 % of an `eglr demo` profile as fast as possible (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cli::main()
}
