//! `eglr loadgen`: offer simulator requests to any broker running `eglr serve` and
//! measure end-to-end latency (produce -> result consumed) and throughput.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use eglr::config::PipelineConfig;
use eglr::sim::{Traffic, World};
use eglr::stream::loadgen::{self, simulated_requests, LoadReport};

use super::report::{table, write_json};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Bootstrap servers of the broker `eglr serve` consumes from.
    #[arg(long)]
    brokers: String,

    /// Requests to send.
    #[arg(long, default_value_t = 10_000)]
    requests: usize,

    /// Offered load in requests/s (0: as fast as possible).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,

    /// Simulator world of the requests (`world.json`); default: a fresh world of the
    /// pipeline's `[simulator]` section.
    #[arg(long, value_name = "FILE")]
    world: Option<PathBuf>,

    /// Seed of the traffic (request ids are `sim-SEED-N`: use a new seed per run).
    #[arg(long, default_value_t = 1)]
    seed: u64,

    /// Seconds to wait for the last results.
    #[arg(long, default_value_t = 120)]
    timeout_s: u64,

    /// Write the report as JSON to this file (`-` for stdout).
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

pub fn run(pipeline: &PipelineConfig, args: Args) -> anyhow::Result<ExitCode> {
    let world = match &args.world {
        Some(p) => World::load(p)?,
        None => World::generate(&pipeline.simulator, pipeline.limits.list_len, 1),
    };
    let load = simulated_requests(
        &Traffic::new(&world, args.seed),
        args.requests,
        None,
        |_| Vec::new(),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let rate = (args.rate > 0.0).then_some(args.rate);
    let report = runtime
        .block_on(loadgen::run(
            &pipeline.kafka,
            &args.brokers,
            load.outgoing,
            &load.valid,
            0,
            rate,
            Duration::from_secs(args.timeout_s),
        ))
        .context("running the load")?;
    print_load_report(&report);
    if let Some(path) = &args.json {
        write_json(path, &report)?;
    }
    Ok(if report.missing == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The load report as a table: what was offered, what came back, how fast.
pub fn print_load_report(r: &LoadReport) {
    print!(
        "{}",
        table(
            &[
                "requests",
                "not acked",
                "results",
                "dead letters",
                "missing",
                "duplicates",
                "p50 ms",
                "p99 ms",
                "in serve p50 ms",
                "results/s",
                "reasoning/list"
            ],
            &[vec![
                r.requests.to_string(),
                r.produce_errors.to_string(),
                r.results.to_string(),
                r.dlq.to_string(),
                r.missing.to_string(),
                r.duplicates.to_string(),
                format!("{:.1}", r.p50_ms),
                format!("{:.1}", r.p99_ms),
                format!("{:.1}", r.server_p50_ms),
                format!("{:.0}", r.throughput_rps),
                format!("{:.2}", r.reasoning_steps_per_list),
            ]],
        )
    );
}
