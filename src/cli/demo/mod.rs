//! `eglr demo`: the whole loop in one command on the embedded broker — simulator
//! traffic -> serve -> results — with a summary of latency and throughput. With
//! `--loop`, the learning loop too: simulated users answer every served list with
//! clicks (feedback), the logger writes the list log, the trainer publishes new
//! versions, serving swaps them in; the summary shows the true (oracle) clicks per list
//! of each version.

use crate::cli::CommandResult;
use eglr::fault::Failure;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use eglr::fault::Context;
use tokio::sync::watch;

use eglr::config::PipelineConfig;
use eglr::drive::loadgen::{self, simulated_requests, LoadReport};
use eglr::list_log::LogWriter;
use eglr::model::{LiveModel, ModelStore};
use eglr::sim::{write_logs, Traffic, World};
use eglr::stream::{serve, ServeSettings};
use eglr::train::{self, TrainJob, TrainingConfig};

use super::device;
use super::loadgen::{report_outcome, Offer};
use super::runtime;
use super::serve::{connect, TopicArgs};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Requests to send.
    #[arg(long, default_value_t = 2000)]
    requests: usize,

    #[command(flatten)]
    offer: Offer,

    /// Share of requests sent malformed (they must land in the dead-letter topic).
    #[arg(long, default_value_t = 0.0)]
    malformed_share: f64,

    /// Working directory: the simulated world, and the model store (a small model is
    /// trained into it on first use).
    #[arg(long, default_value = "data/demo")]
    dir: PathBuf,

    /// Write the summary as JSON to this file (`-` for stdout).
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,

    /// Run the learning loop (serve + users' feedback + logger + trainer), starting
    /// from a weak model trained on 300 lists, for --minutes of traffic at --rate
    /// (default 100 requests/s in this mode). Works in `DIR/loop`, emptied first.
    #[arg(long = "loop")]
    learning_loop: bool,

    /// Minutes of traffic in --loop mode.
    #[arg(long, default_value_t = 3.0)]
    minutes: f64,

    /// In --loop mode, a training round starts after this many new logged lists (and
    /// reads the newest twice as many). Evaluators refreshed on 6,000-list windows
    /// ordered lists at Kendall tau 0.12-0.36 against the oracle; on 16,000, 0.36-0.45.
    #[arg(long, default_value_t = 8000)]
    lists_per_round: usize,

    /// Seed of the simulated world, drawn when DIR holds none yet (a DIR whose world
    /// has another seed is refused: pick another --dir).
    #[arg(long, default_value_t = 11)]
    world_seed: u64,
}

/// The demo's world, made once in `args.dir`.
fn world(pipeline: &PipelineConfig, args: &Args) -> CommandResult<World> {
    let world_path = args.dir.join("world.json");
    if world_path.exists() {
        let w = World::load(&world_path)?;
        ensure_input!(
            w.seed == args.world_seed,
            "{} holds world seed {}, not --world-seed {}: pick another --dir",
            world_path.display(),
            w.seed,
            args.world_seed
        );
        return Ok(w);
    }
    std::fs::create_dir_all(&args.dir)?;
    let w = World::generate(
        &pipeline.simulator,
        pipeline.limits.list_len,
        args.world_seed,
    );
    w.save(&world_path)?;
    Ok(w)
}

/// Simulates `lists` logged lists into `logs` and trains `out` on them.
fn simulate_and_train(
    pipeline: &PipelineConfig,
    world: &World,
    logs: &std::path::Path,
    lists: u64,
    training: TrainingConfig,
    out: &std::path::Path,
) -> CommandResult<()> {
    if !logs.is_dir() {
        let policy = pipeline.logs.roll_policy();
        let mut w = LogWriter::create(logs, "lists", policy)?;
        write_logs(&Traffic::new(world, 11), lists, 4096, &mut w, |_| {})?;
        w.finish()?;
    }
    let data = logs.display().to_string();
    let job = TrainJob {
        data: &data,
        evaluator: pipeline.evaluator.clone(),
        generator: pipeline.generator.clone(),
        training,
        features: &pipeline.features,
        list_len: pipeline.limits.list_len,
        max_list_len: pipeline.limits.max_list_len,
        evaluator_from: None,
        part: eglr::train::DataPart::All,
        evaluator_only: false,
        monitor: None,
        out,
        version: "v000001".into(),
        git_revision: None,
    };
    train::run(&job, &device()?).context("training the demo model")?;
    Ok(())
}

/// The demo's world and a first model, made once.
fn prepare(pipeline: &PipelineConfig, args: &Args) -> CommandResult<(World, ModelStore)> {
    let dir = &args.dir;
    let world = world(pipeline, args)?;
    let store = ModelStore::new(&dir.join("models"));
    if store.latest().is_none() {
        println!(
            "no model in {} yet: simulating 5,000 lists and training a small one (a few minutes: the generator first imitates the evaluator's search)",
            store.dir().display()
        );
        let training = TrainingConfig {
            evaluator_epochs: 3,
            grpo_steps: 100,
            ..pipeline.training.clone()
        };
        let out = store.path(&store.next_version());
        simulate_and_train(pipeline, &world, &dir.join("logs"), 5000, training, &out)?;
    }
    Ok((world, store))
}

/// A share of the demo's requests is deliberately malformed, three ways in turn.
fn malformed(i: usize) -> Vec<u8> {
    match i % 3 {
        0 => b"{not json".to_vec(),
        1 => br#"{"request_id":"bad","user":{"id":"u"},"candidates":[],"list_len":1,"timestamp_ms":0}"#.to_vec(),
        _ => br#"{"request_id":"bad","user":{"id":"u"},"candidates":[{"item_id":"i1"}],"list_len":2,"timestamp_ms":0}"#.to_vec(),
    }
}

pub fn run(pipeline: &PipelineConfig, args: Args) -> CommandResult<ExitCode> {
    if args.learning_loop {
        return learning_loop::run(pipeline, &args);
    }
    let (world, store) = prepare(pipeline, &args)?;
    let runtime = runtime()?;
    let report: LoadReport = runtime.block_on(async {
        let mut pipeline = pipeline.clone();
        pipeline.kafka.brokers = eglr::config::EMBEDDED_BROKERS.into(); // the demo's own broker
        let topics = TopicArgs {
            partitions: 4,
            create_topics: false,
        };
        let (_broker, brokers) = connect(&pipeline, &topics).await?;
        let live = Arc::new(LiveModel::open(store, device()?)?);
        let settings = ServeSettings {
            pipeline: pipeline.clone(),
            brokers: brokers.clone(),
            metrics_addr: None,
            model_poll: Duration::from_secs(2),
            shutdown_timeout: Duration::from_secs(30),
        };
        let (stop, stopped) = watch::channel(false);
        let server = tokio::spawn(serve(settings, live, stopped));
        let every = (args.malformed_share > 0.0)
            .then(|| (1.0 / args.malformed_share).round().max(1.0) as usize);
        let mut load = simulated_requests(
            &Traffic::new(&world, 12345),
            args.requests,
            every,
            malformed,
        );
        let plan = args.offer.plan(&mut load, Duration::from_secs(120));
        let report = loadgen::run(&pipeline.kafka, &brokers, plan).await?;
        let _ = stop.send(true);
        server.await??;
        Ok::<_, Failure>(report)
    })?;
    report_outcome(&report, args.json.as_deref())
}

mod learning_loop;
