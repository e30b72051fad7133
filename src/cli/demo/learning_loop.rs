//! `eglr demo --loop`: the learning loop end to end on the embedded broker.

use crate::cli::CommandResult;
use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;

use eglr::config::PipelineConfig;
use eglr::drive::loadgen::{self, simulated_requests, LoadReport};
use eglr::drive::{respond, VersionOutcome};
use eglr::model::{LiveModel, ModelStore};
use eglr::retrain::RoundReport;
use eglr::sim::{Traffic, World};
use eglr::stream::{
    pipeline, LogSettings, PipelineSummary, ServeSettings, StreamError, TrainerSettings,
};
use eglr::train::TrainingConfig;

use super::super::device;
use super::super::loadgen::print_load_report;
use super::super::report::{table, write_json};
use super::super::runtime;
use super::super::serve::{connect, TopicArgs};
use super::{simulate_and_train, world, Args};

/// The `--loop` summary (`--json`).
#[derive(Debug, Serialize)]
struct LoopSummary {
    load: LoadReport,
    /// Per model version, in order of first use.
    versions: Vec<VersionOutcome>,
    rounds: Vec<RoundReport>,
}

/// The pipeline of the loop: its own store and log under `DIR/loop`, rounds sized for
/// a few minutes of traffic.
fn loop_pipeline(base: &PipelineConfig, dir: &std::path::Path, args: &Args) -> PipelineConfig {
    let mut p = base.clone();
    p.kafka.brokers = eglr::config::EMBEDDED_BROKERS.into();
    p.model.store = dir.join("models");
    p.logs.dir = dir.join("logs");
    p.logs.roll_max_seconds = 2;
    p.trainer.min_new_lists = args.lists_per_round.max(1);
    p.trainer.window_lists = 2 * args.lists_per_round.max(1);
    p.trainer.check_every_s = 2.0;
    // A few per cent of exploration traffic, unless the pipeline sets its own: the
    // lists where order effects are not the serving model's choice.
    if p.exploration.share == 0.0 {
        p.exploration.share = DEMO_EXPLORATION_SHARE;
    }
    p
}

/// The loop's share of exploration traffic when the pipeline has none.
const DEMO_EXPLORATION_SHARE: f64 = 0.05;

pub fn run(base: &PipelineConfig, args: &Args) -> CommandResult<ExitCode> {
    ensure_input!(
        args.minutes.is_finite() && args.minutes > 0.0,
        "--minutes must be > 0"
    );
    let world: World = world(base, args)?;
    let dir = args.dir.join("loop");
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    let p = loop_pipeline(base, &dir, args);
    weak_first_model(base, &world, &dir, &p)?;
    let summary = runtime()?.block_on(run_loop(&p, args, &world))?;
    print_load_report(&summary.load);
    print_versions(&summary);
    if let Some(path) = &args.json {
        write_json(path, &summary)?;
    }
    Ok(if summary.load.missing == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The first version, weak on purpose so the loop has something to learn: 300 lists,
/// one evaluator epoch, five RL steps, no search warm start.
fn weak_first_model(
    base: &PipelineConfig,
    world: &World,
    dir: &std::path::Path,
    p: &PipelineConfig,
) -> CommandResult<()> {
    println!("training a weak first model on 300 simulated lists");
    let weak = TrainingConfig {
        evaluator_epochs: 1,
        grpo_steps: 5,
        search_warm_start_steps: 0,
        ..base.training.clone()
    };
    simulate_and_train(
        base,
        world,
        &dir.join("seed-logs"),
        300,
        weak,
        &p.model.store.join("v000001"),
    )
}

/// The pipeline's three stages and the simulated users on the embedded broker, under
/// `args.minutes` of load; stops once the last results are in.
async fn run_loop(p: &PipelineConfig, args: &Args, world: &World) -> CommandResult<LoopSummary> {
    let rate = if args.offer.rate > 0.0 {
        args.offer.rate
    } else {
        100.0
    };
    let n = (rate * 60.0 * args.minutes).round().max(1.0) as usize;
    let traffic = Traffic::new(world, 12345);
    let impressions: HashMap<String, u64> =
        (0..n as u64).map(|k| (traffic.request_id(k), k)).collect();
    let mut load = simulated_requests(&traffic, n, None, |_| Vec::new());
    let topics = TopicArgs {
        partitions: 4,
        create_topics: false,
    };
    let (_broker, brokers) = connect(p, &topics).await?;
    let (stop, stopped) = watch::channel(false);
    let stages = tokio::spawn(stages(p, &brokers, world, stopped.clone())?);
    let users = {
        let (kafka, brokers) = (p.kafka.clone(), brokers.clone());
        let world = world.clone();
        tokio::spawn(async move {
            let traffic = Traffic::new(&world, 12345);
            respond(&kafka, &brokers, &traffic, &impressions, stopped).await
        })
    };
    println!(
        "{n} requests at {rate}/s for {:.1} min; a training round every {} new lists",
        args.minutes, p.trainer.min_new_lists
    );
    let mut offer = args.offer.clone();
    offer.rate = rate;
    // Results are awaited for the whole run plus two minutes.
    let timeout = Duration::from_secs_f64(60.0 * args.minutes + 120.0);
    let plan = offer.plan(&mut load, timeout);
    let report = loadgen::run(&p.kafka, &brokers, plan).await?;
    // Let the last lists' feedback reach the logger before stopping.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let _ = stop.send(true);
    let versions = users.await??;
    let stages = stages.await??;
    Ok(LoopSummary {
        load: report,
        versions,
        rounds: stages.trainer.rounds,
    })
}

/// serve, log and the trainer in one process, each without an endpoint.
fn stages(
    p: &PipelineConfig,
    brokers: &str,
    world: &World,
    stopped: watch::Receiver<bool>,
) -> CommandResult<impl std::future::Future<Output = Result<PipelineSummary, StreamError>>> {
    let live = Arc::new(LiveModel::open(ModelStore::new(&p.model.store), device()?)?);
    Ok(pipeline(
        ServeSettings {
            pipeline: p.clone(),
            brokers: brokers.to_owned(),
            metrics_addr: None,
            model_poll: Duration::from_secs(1),
            shutdown_timeout: Duration::from_secs(30),
        },
        live,
        LogSettings {
            metrics_addr: None,
            pipeline: p.clone(),
            brokers: brokers.to_owned(),
            group_id: format!("{}-logger", p.kafka.group_id),
            window: Duration::from_secs(2),
            instance: "0".into(),
        },
        TrainerSettings {
            pipeline: p.clone(),
            brokers: Some(brokers.to_owned()),
            git_revision: None,
            world: Some(Arc::new(world.clone())),
            device: device()?,
            metrics_addr: None,
        },
        stopped,
    ))
}

/// Each version's true clicks against the upstream order's on the same requests, and
/// each round's verdict.
fn print_versions(summary: &LoopSummary) {
    let rows: Vec<Vec<String>> = summary
        .versions
        .iter()
        .map(|v| {
            let vs_upstream = if v.lists_served == 0 {
                "-".to_owned()
            } else {
                format!(
                    "{:+.1} %",
                    100.0 * (v.oracle_clicks_per_list / v.upstream_clicks_per_list - 1.0)
                )
            };
            vec![
                v.version.clone(),
                v.lists_served.to_string(),
                format!("{:.3}", v.oracle_clicks_per_list),
                format!("{:.3}", v.upstream_clicks_per_list),
                vs_upstream,
                format!("{:.1} %", 100.0 * v.exploration_share()),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &[
                "model version",
                "lists served",
                "true clicks/list",
                "upstream order's",
                "vs upstream",
                "exploration share"
            ],
            &rows
        )
    );
    println!(
        "exploration share: of the requests a version was serving, those the exploration policy answered (their lists are the exploration row's)"
    );
    for r in &summary.rounds {
        println!(
            "round -> {}: {} (gate judge's Evaluator Score {:.4} vs serving {:.4}{}){}",
            r.candidate_version,
            if r.published { "published" } else { "rejected" },
            r.candidate_score,
            r.serving_score,
            r.candidate_fidelity.as_ref().map_or(String::new(), |f| format!(
                "; its evaluator: Kendall tau {:.3} with the oracle, prefers adjacent pairs {:.0} % (oracle {:.0} %)",
                f.kendall_tau,
                100.0 * f.adjacency.evaluator_prefers_adjacent,
                100.0 * f.adjacency.oracle_prefers_adjacent
            )),
            if r.published {
                String::new()
            } else {
                format!(": {}", r.rejected_because.join("; "))
            }
        );
    }
}
