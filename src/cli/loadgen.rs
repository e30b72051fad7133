//! `eglr loadgen`: offer simulator requests to any broker running `eglr serve` and
//! measure end-to-end latency (produce -> result consumed) and throughput.

use crate::cli::CommandResult;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use eglr::fault::Context;

use eglr::config::PipelineConfig;
use eglr::drive::loadgen::{self, simulated_requests, LoadPlan, LoadReport, SimulatedLoad};
use eglr::sim::{Traffic, World};

use super::report::{table, write_json};
use super::runtime;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Bootstrap servers of the broker `eglr serve` consumes from.
    #[arg(long)]
    brokers: String,

    /// Requests to send.
    #[arg(long, default_value_t = 10_000)]
    requests: usize,

    #[command(flatten)]
    offer: Offer,

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

/// A non-negative number of seconds (clap value parser).
pub fn seconds(text: &str) -> Result<Duration, String> {
    let s: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number"))?;
    Duration::try_from_secs_f64(s)
        .map_err(|_| format!("{text:?} is not a non-negative number of seconds"))
}

pub fn run(pipeline: &PipelineConfig, args: Args) -> CommandResult<ExitCode> {
    let world = match &args.world {
        Some(p) => World::load(p)?,
        None => World::generate(&pipeline.simulator, pipeline.limits.list_len, 1),
    };
    let mut load = simulated_requests(
        &Traffic::new(&world, args.seed),
        args.requests,
        None,
        |_| Vec::new(),
    );
    let runtime = runtime()?;
    let report = runtime
        .block_on(loadgen::run(
            &pipeline.kafka,
            &args.brokers,
            args.offer
                .plan(&mut load, Duration::from_secs(args.timeout_s)),
        ))
        .context("running the load")?;
    report_outcome(&report, args.json.as_deref())
}

/// How the load is offered (shared by `loadgen` and `demo`).
#[derive(Debug, Clone, clap::Args)]
pub struct Offer {
    /// Offered load in requests/s (0: as fast as possible).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,

    /// Seconds at the start whose requests are checked but left out of the latency
    /// percentiles (connections, consumer-group joins and first batches warm up). The
    /// warm-up also ends after the first tenth of the requests, so a short run still
    /// measures most of its requests.
    #[arg(long = "warmup-s", default_value = "1", value_name = "SECONDS", value_parser = seconds)]
    pub warmup: Duration,

    /// Requests sent but not yet answered at most (0: no bound). Without --rate this
    /// makes the run closed-loop: it measures the stage's throughput without piling up
    /// a backlog.
    #[arg(long, default_value_t = 2000)]
    pub max_in_flight: usize,
}

impl Offer {
    /// The plan for `load`: every valid request must get a result, every malformed one
    /// a dead letter, within `timeout`. Moves the payloads out of `load`.
    pub fn plan<'a>(&self, load: &'a mut SimulatedLoad, timeout: Duration) -> LoadPlan<'a> {
        LoadPlan {
            outgoing: std::mem::take(&mut load.outgoing),
            expect_results: &load.valid,
            expect_dlq: load.malformed,
            rate: (self.rate > 0.0).then_some(self.rate),
            max_in_flight: (self.max_in_flight > 0).then_some(self.max_in_flight),
            warmup: self.warmup,
            timeout,
            wait_until_answered: true,
        }
    }
}

/// Prints the report (and writes it as JSON); failure when a valid request is missing
/// its result.
pub fn report_outcome(report: &LoadReport, json: Option<&Path>) -> CommandResult<ExitCode> {
    print_load_report(report);
    if let Some(path) = json {
        write_json(path, report)?;
    }
    Ok(if report.missing == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// A latency in the table; `-` when no request was measured.
fn ms(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.1}")
    } else {
        "-".into()
    }
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
                "in serve p99 ms",
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
                ms(r.p50_ms),
                ms(r.p99_ms),
                ms(r.server_p50_ms),
                ms(r.server_p99_ms),
                format!("{:.0}", r.throughput_rps),
                format!("{:.2}", r.reasoning_steps_per_list),
            ]],
        )
    );
}
