//! Argument parsing, logging set-up and dispatch to one module per subcommand.

mod config;
mod report;
mod simulate;
mod telemetry;
mod validate;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use eglr::config::{Override, PipelineConfig};

/// eglr — the EGLR generative re-ranker as a stream-processing pipeline.
///
/// Every subcommand reads a pipeline file (features, limits, topics, batching, model
/// store, logs, simulator). Any key can be overridden by an environment variable
/// `EGLR_SECTION__KEY` (e.g. `EGLR_BATCHING__MAX_BATCH=128`) or by `--set
/// section.key=value`; flags win over the environment, which wins over the file.
/// Logs go to stderr (`RUST_LOG` filters them); tables and JSON go to stdout or files.
#[derive(Debug, Parser)]
#[command(name = "eglr", version, propagate_version = true, max_term_width = 100)]
struct Cli {
    /// Pipeline definition (TOML).
    #[arg(
        long,
        global = true,
        default_value = "pipelines/local.toml",
        value_name = "FILE"
    )]
    pipeline: PathBuf,

    /// Override one pipeline key, e.g. `--set limits.list_len=5` (repeatable).
    #[arg(long = "set", global = true, value_name = "KEY=VALUE")]
    overrides: Vec<String>,

    /// Format of log lines on stderr.
    #[arg(long, global = true, value_enum, default_value_t = telemetry::LogFormat::Text)]
    log_format: telemetry::LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Simulate a world of users and items and write logged lists with sampled clicks
    /// to Parquet (the ground truth for offline studies).
    Simulate(simulate::Args),
    /// Check event files (JSON lines) against the wire contract and the pipeline's
    /// features and limits; every bad line is reported with what is wrong.
    Validate(validate::Args),
    /// Print the effective pipeline configuration after environment and flag overrides.
    Config(config::Args),
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let pipeline = load_pipeline(&cli)?;
    match cli.command {
        Command::Simulate(args) => simulate::run(&pipeline, args),
        Command::Validate(args) => validate::run(&pipeline, args),
        Command::Config(args) => config::run(&pipeline, args),
    }
}

fn load_pipeline(cli: &Cli) -> anyhow::Result<PipelineConfig> {
    let mut overrides = Override::from_process_env()?;
    for text in &cli.overrides {
        overrides.push(Override::parse_flag(text)?);
    }
    let config = PipelineConfig::load(&cli.pipeline, &overrides)
        .with_context(|| format!("loading pipeline {}", cli.pipeline.display()))?;
    tracing::debug!(pipeline = %cli.pipeline.display(), overrides = overrides.len(), "pipeline loaded");
    Ok(config)
}
