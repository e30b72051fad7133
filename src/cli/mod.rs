//! Argument parsing, logging set-up and dispatch to one module per subcommand.

/// Returns a [`Failure`] of the user's input (arguments that contradict each other)
/// unless `cond` holds.
macro_rules! ensure_input {
    ($cond:expr, $($message:tt)+) => {
        if !$cond {
            return Err(eglr::fault::Failure::input(format!($($message)+)));
        }
    };
}

/// Returns a [`Failure`] of the user's input.
macro_rules! bail_input {
    ($($message:tt)+) => {
        return Err(eglr::fault::Failure::input(format!($($message)+)))
    };
}

mod audit;
mod bench;
mod config;
mod demo;
mod eval;
mod import;
mod loadgen;
mod log;
mod pipeline;
mod replay;
mod report;
mod serve;
mod simulate;
mod study;
mod telemetry;
mod train;
mod trainer;
mod validate;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use eglr::config::{Override, PipelineConfig};
use eglr::fault::{Context, Failure, Fault};

/// What a command returns: only classified errors convert into a [`Failure`], so every
/// failed command exits with its fault's code.
type CommandResult<T> = Result<T, Failure>;

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

    /// Threads of candle's CPU kernels (sets RAYON_NUM_THREADS unless it is set). The
    /// models' tensors are small: one thread avoids a scheduling cost per operation that
    /// is larger than the work (see `eglr bench`).
    #[arg(long, global = true, default_value_t = 1, value_name = "N")]
    compute_threads: usize,

    /// Where the models' tensors live: `cpu`, or `cuda:N` for GPU N (a build with
    /// `--features cuda`). Every command puts the weights and every input tensor on
    /// this one device (serve's batches included).
    #[arg(long, global = true, default_value = "cpu", value_name = "cpu|cuda:N", value_parser = parse_device)]
    device: DeviceChoice,

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
    /// Train the evaluator on logged lists, then the re-ranker (EGLR or a baseline) by its
    /// recipe — GRPO, PPO or supervised on clicks — against it; writes a model bundle.
    Train(train::Args),
    /// Offline metrics (MAP, NDCG, Evaluator Score, oracle score) of a bundle and of the
    /// initial order on logged lists.
    Eval(eval::Args),
    /// Import a public data set (KuaiRand) into the Parquet list log, split by time.
    Import(import::Args),
    /// Re-rank every logged request of a list log offline with a bundle: writes the
    /// re-ranked lists to Parquet and prints the offline metrics of `eval` for the
    /// model, the initial order and the logged order.
    Replay(replay::Args),
    /// The offline Evaluator Score audit: each model's uplift over the logged order by
    /// its own evaluator and by an independent judge, with bootstrap intervals, the share
    /// of lists copying the input order, and a reward-hacking flag.
    ///
    /// Where the log holds exploration lists drawn uniformly at random
    /// (`logging_policy = uniform`: `serve`'s `[exploration]`, `simulate`), it also
    /// estimates from their clicks alone the model's clicks per list minus the initial
    /// order's: position-based IPS (`n x 1{logged item at k = model's item at k} x
    /// click_k`, summed over positions, `n` the pool size) and, with `--judge`, doubly
    /// robust with the judge's click probabilities as the direct model. Both assume a
    /// click depends on the item and its position only (no effect of the items above);
    /// where that fails they are biased (docs/models.md). The flag also fires when the
    /// serving evaluator's claimed uplift in clicks lies outside that interval (doubly
    /// robust with a judge, else IPS). With pools of n candidates only about 1 in n
    /// exploration lists matches a position, so the interval needs thousands of them.
    Audit(audit::Args),
    /// Inference throughput of the generator on the worst-case workload, with and
    /// without the KV cache.
    Bench(bench::Args),
    /// The ablation study (or, with `--suite paper`, the paper's baselines) on simulated
    /// data or imported logs: every variant, several seeds, one table.
    Study(study::Args),
    /// The re-ranking consumer group: requests in, re-ranked lists out, bad input to the
    /// dead-letter topic, at least once. Starts an embedded broker when none is set.
    Serve(serve::Args),
    /// The whole loop on the embedded broker: simulator traffic -> serve -> results,
    /// with latency and throughput; with --loop also feedback -> log -> trainer -> new
    /// versions, with the true clicks per list of each version.
    Demo(demo::Args),
    /// Offer simulator requests to a broker that `eglr serve` consumes from, and measure
    /// end-to-end latency and throughput.
    Loadgen(loadgen::Args),
    /// The feedback logger's consumer group: joins requests, results and feedback into
    /// one Parquet row per served list once its feedback window closes; unjoined events
    /// go to a side file; offsets are committed only after the rows are published.
    Log(log::Args),
    /// The continuous trainer: once enough new lists are logged, refresh the serving
    /// model's evaluator (warm start), rerun GRPO, gate the candidate on held-out recent
    /// lists, and publish it as the next version (serving swaps it in) or keep it
    /// aside with the reasons.
    Trainer(trainer::Args),
    /// serve + log + trainer in one process for single-machine use; each stage keeps
    /// its own consumer group, so they can later run as separate commands.
    Pipeline(pipeline::Args),
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        // Before any thread exists: candle reads this variable at every kernel call.
        std::env::set_var("RAYON_NUM_THREADS", cli.compute_threads.max(1).to_string());
    }
    telemetry::init(cli.log_format);
    let _ = DEVICE.set(cli.device);
    // Run the command on a worker of candle's rayon pool: its parallel kernels then run
    // inline instead of waking a pool thread for every small operation (measured by
    // `eglr bench`: a cross-thread hand-off per op dominates a batch-1 decode).
    let outcome = match rayon::ThreadPoolBuilder::new()
        .num_threads(cli.compute_threads.max(1))
        .build()
    {
        Ok(pool) => pool.install(|| run(cli)),
        Err(e) => Err(Failure::new(
            Fault::External,
            format!("cannot start the compute thread pool: {e}"),
        )),
    };
    match outcome {
        Ok(code) => code,
        Err(failure) => {
            eprintln!("error: {failure}");
            ExitCode::from(failure.fault().exit_code())
        }
    }
}

fn run(cli: Cli) -> CommandResult<ExitCode> {
    let pipeline = load_pipeline(&cli)?;
    match cli.command {
        Command::Simulate(args) => simulate::run(&pipeline, args),
        Command::Validate(args) => validate::run(&pipeline, args),
        Command::Config(args) => config::run(&pipeline, args),
        Command::Train(args) => train::run(&pipeline, args),
        Command::Eval(args) => eval::run(&pipeline, args),
        Command::Import(args) => import::run(&pipeline, args),
        Command::Replay(args) => replay::run(&pipeline, args),
        Command::Audit(args) => audit::run(&pipeline, args),
        Command::Bench(args) => bench::run(&pipeline, args),
        Command::Study(args) => study::run(&pipeline, args, &cli.overrides),
        Command::Serve(args) => serve::run(&pipeline, args),
        Command::Demo(args) => demo::run(&pipeline, args),
        Command::Loadgen(args) => loadgen::run(&pipeline, args),
        Command::Log(args) => log::run(&pipeline, args),
        Command::Trainer(args) => trainer::run(&pipeline, args),
        Command::Pipeline(args) => pipeline::run(&pipeline, args),
    }
}

/// `DIR/logs` for a `simulate` output directory, otherwise the argument as given.
fn data_pattern(data: &str) -> String {
    let logs = std::path::Path::new(data).join("logs");
    if logs.is_dir() {
        logs.display().to_string()
    } else {
        data.to_owned()
    }
}

/// A `--device` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DeviceChoice {
    Cpu,
    Cuda(usize),
}

fn parse_device(text: &str) -> Result<DeviceChoice, String> {
    match text {
        "cpu" => Ok(DeviceChoice::Cpu),
        "cuda" => Ok(DeviceChoice::Cuda(0)),
        _ => text
            .strip_prefix("cuda:")
            .and_then(|n| n.parse().ok())
            .map(DeviceChoice::Cuda)
            .ok_or_else(|| format!("`{text}` is not a device: use cpu, cuda or cuda:N")),
    }
}

/// The `--device` of this run, set once in `main`.
static DEVICE: std::sync::OnceLock<DeviceChoice> = std::sync::OnceLock::new();

/// The compute device chosen with `--device`, opened when a command first needs it.
fn device() -> CommandResult<candle_core::Device> {
    match DEVICE.get().copied().unwrap_or(DeviceChoice::Cpu) {
        DeviceChoice::Cpu => Ok(candle_core::Device::Cpu),
        DeviceChoice::Cuda(n) => cuda(n),
    }
}

#[cfg(feature = "cuda")]
fn cuda(n: usize) -> CommandResult<candle_core::Device> {
    use eglr::fault::Context;
    candle_core::Device::new_cuda(n).with_context(|| format!("cannot open CUDA device {n}"))
}

#[cfg(not(feature = "cuda"))]
fn cuda(n: usize) -> CommandResult<candle_core::Device> {
    bail_input!(
        "--device cuda:{n}: this eglr was built without CUDA (build it with `cargo build --release --features cuda`)"
    )
}

/// The tokio runtime of the streaming commands: two workers are enough, since the
/// model runs on a thread of its own and librdkafka has its own threads.
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
}

/// `pipeline` with the places a command's flags override: brokers (`kafka.brokers`),
/// model store (`model.store`) and list-log directory (`logs.dir`).
fn with_places(
    pipeline: &PipelineConfig,
    brokers: Option<String>,
    model_store: Option<std::path::PathBuf>,
    logs: Option<std::path::PathBuf>,
) -> PipelineConfig {
    let mut p = pipeline.clone();
    if let Some(brokers) = brokers {
        p.kafka.brokers = brokers;
    }
    if let Some(dir) = model_store {
        p.model.store = dir;
    }
    if let Some(dir) = logs {
        p.logs.dir = dir;
    }
    p
}

/// The git revision of the working directory, for training metadata.
fn git_revision() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn load_pipeline(cli: &Cli) -> CommandResult<PipelineConfig> {
    let mut overrides = Override::from_process_env()?;
    for text in &cli.overrides {
        overrides.push(Override::parse_flag(text)?);
    }
    let config = PipelineConfig::load(&cli.pipeline, &overrides)
        .with_context(|| format!("loading pipeline {}", cli.pipeline.display()))?;
    tracing::debug!(pipeline = %cli.pipeline.display(), overrides = overrides.len(), "pipeline loaded");
    Ok(config)
}

#[cfg(test)]
mod study_command_tests {
    use clap::Parser;

    use super::{Cli, Command};

    /// The command a study doc records regenerates it: its sweeps, and the `--set`
    /// overrides that change what is trained, but not those of other sections (a Kafka
    /// password has no place in a doc).
    #[test]
    fn a_study_doc_records_its_sweeps_and_overrides() {
        let cli = Cli::try_parse_from([
            "eglr",
            "--pipeline",
            "pipelines/rerank.toml",
            "study",
            "--seeds",
            "1,2",
            "--variants",
            "lares",
            "--rl-sweep",
            "dapo@0.05",
            "--depth-sweep",
            "1,6",
            "--semantic-ids",
            "eglr",
            "--set",
            "training.cold_item_share=0.05",
            "--set",
            "kafka.properties.sasl.password=secret",
        ])
        .expect("parses");
        let pipeline = super::load_pipeline(&cli).expect("pipeline");
        let Command::Study(args) = cli.command else {
            panic!("not a study");
        };
        let cmd = super::study::command_line(&pipeline, &args, &cli.overrides);
        for part in [
            "--variants lares",
            "--rl-sweep eglr:dapo@0.05",
            "--depth-sweep 1,6",
            "--semantic-ids eglr",
            "--beam 8",
            "--set training.cold_item_share=0.05",
        ] {
            assert!(cmd.contains(part), "{part} missing from {cmd}");
        }
        assert!(!cmd.contains("secret"), "{cmd}");
    }
}
