//! The `eglr` command line. Each subcommand lives in its own file under `src/cli/`.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
