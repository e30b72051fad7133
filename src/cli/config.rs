//! `eglr config`: show the configuration a command would run with.

use crate::cli::CommandResult;
use std::process::ExitCode;

use eglr::config::PipelineConfig;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print JSON instead of TOML.
    #[arg(long)]
    json: bool,
}

pub fn run(pipeline: &PipelineConfig, args: Args) -> CommandResult<ExitCode> {
    if args.json {
        println!("{}", serde_json::to_string_pretty(pipeline)?);
    } else {
        print!("{}", pipeline.to_toml());
    }
    Ok(ExitCode::SUCCESS)
}
