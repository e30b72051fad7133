//! `eglr replay`: re-rank every logged request of a list log offline with a bundle.

use crate::cli::CommandResult;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use eglr::fault::Context;

use eglr::config::PipelineConfig;
use eglr::model::Bundle;
use eglr::offline::evaluate::EvalOptions;
use eglr::offline::replay::replay;

use super::eval::print_report;
use super::report::write_json;
use super::{data_pattern, device};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Logged lists: a directory of Parquet list-log files, a glob, or a `simulate`
    /// output directory. Read one batch at a time, so it may be larger than memory.
    #[arg(long, value_name = "GLOB")]
    logs: String,

    /// Model bundle directory.
    #[arg(long, value_name = "BUNDLE")]
    model: PathBuf,

    /// Directory for the re-ranked lists (`replay-SEQ.parquet`: request_id,
    /// model_version, items, reasoning_steps, evaluator_score).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,

    /// Lists decoded together.
    #[arg(long, default_value_t = 256)]
    batch: usize,

    /// Write the metrics as JSON to this file (`-` for stdout).
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

pub fn run(pipeline: &PipelineConfig, args: Args) -> CommandResult<ExitCode> {
    let device = device()?;
    let bundle = Bundle::load(&args.model, &device)
        .with_context(|| format!("loading bundle {}", args.model.display()))?;
    let opts = EvalOptions {
        batch: args.batch.max(1),
        list_len: pipeline.limits.list_len,
        pass_at_n: 1,
        seed: 0,
        beam_width: 0,
    };
    let roll = pipeline.logs.roll_policy();
    let started = Instant::now();
    let mut reported = 0;
    let report = replay(
        &bundle,
        &data_pattern(&args.logs),
        &args.out,
        roll,
        &opts,
        &device,
        |done| {
            // A progress line about every 10,000 lists.
            if done / 10_000 > reported {
                reported = done / 10_000;
                let rate = done as f64 / started.elapsed().as_secs_f64().max(1e-9);
                tracing::info!(lists = done, lists_per_s = rate.round(), "replaying");
            }
        },
    )?;
    print_report(&report);
    println!(
        "wrote {} ({:.1} s)",
        args.out.display(),
        started.elapsed().as_secs_f64()
    );
    if let Some(path) = &args.json {
        write_json(path, &report)?;
    }
    Ok(ExitCode::SUCCESS)
}
