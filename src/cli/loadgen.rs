//! `eglr loadgen`: offer simulator requests to any broker running `eglr serve` and
//! measure end-to-end latency (produce -> result consumed) and throughput.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use eglr::config::PipelineConfig;
use eglr::sim::{Traffic, World};
use eglr::stream::loadgen::{self, Outgoing};

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
    let traffic = Traffic::new(&world, args.seed);
    let mut outgoing = Vec::with_capacity(args.requests);
    let mut keys = Vec::with_capacity(args.requests);
    for k in 0..args.requests as u64 {
        let r = traffic.request(&traffic.impression(k));
        keys.push(r.request_id.clone());
        outgoing.push(Outgoing {
            key: r.request_id.clone(),
            payload: serde_json::to_vec(&r)?,
        });
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let rate = (args.rate > 0.0).then_some(args.rate);
    let report = runtime
        .block_on(loadgen::run(
            &pipeline.kafka,
            &args.brokers,
            outgoing,
            &keys,
            0,
            rate,
            Duration::from_secs(args.timeout_s),
        ))
        .context("running the load")?;
    print!(
        "{}",
        table(
            &[
                "requests",
                "not acked",
                "results",
                "missing",
                "duplicates",
                "p50 ms",
                "p99 ms",
                "in serve p50 ms",
                "results/s"
            ],
            &[vec![
                report.requests.to_string(),
                report.produce_errors.to_string(),
                report.results.to_string(),
                report.missing.to_string(),
                report.duplicates.to_string(),
                format!("{:.1}", report.p50_ms),
                format!("{:.1}", report.p99_ms),
                format!("{:.1}", report.server_p50_ms),
                format!("{:.0}", report.throughput_rps),
            ]],
        )
    );
    if let Some(path) = &args.json {
        write_json(path, &report)?;
    }
    Ok(if report.missing == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
