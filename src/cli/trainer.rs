//! `eglr trainer`: the continuous trainer (refresh the evaluator, rerun GRPO, gate,
//! publish the next version).

use crate::cli::CommandResult;
use std::path::PathBuf;
use std::process::ExitCode;

use eglr::config::{PipelineConfig, EMBEDDED_BROKERS};
use eglr::retrain::RoundReport;
use eglr::stream::{round_once, trainer, TrainerSettings};

use super::git_revision;
use super::serve::shutdown_signal;
use super::{runtime, with_places};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The list log to learn from (overrides `logs.dir`).
    #[arg(long, value_name = "DIR")]
    logs: Option<PathBuf>,

    /// Model store: its newest version is the serving model to improve on; a passing
    /// candidate becomes the next version, a rejected one goes to `STORE/rejected/`
    /// with its reasons (overrides `model.store`).
    #[arg(long, value_name = "DIR")]
    model_store: Option<PathBuf>,

    /// Announce published versions on the control topic of these brokers (default:
    /// `kafka.brokers`; nothing is announced when neither is set, or for `embedded`: a
    /// stage's in-process broker cannot be reached from this process).
    #[arg(long)]
    brokers: Option<String>,

    /// Run one round now, print its report and exit (exit code 3 when the candidate is
    /// rejected): for cron-style scheduling and for trying the gates.
    #[arg(long)]
    once: bool,

    /// Serve `/metrics` (rounds by verdict, rejections in a row, when the last version
    /// was published), `/livez` and `/readyz` on this address (default: no endpoint).
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<std::net::SocketAddr>,

    /// Write the round reports as JSON to this file (`-` for stdout).
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

fn print_round(r: &RoundReport) {
    println!(
        "round on {} lists (+{} held out), serving {}: evaluator AUC {:.4} -> {:.4}, log-loss {:.4} -> {:.4}; \
         Evaluator Score (refreshed judge) {:.4} -> {:.4}; copies upstream order {:.1} %",
        r.train_lists,
        r.holdout_lists,
        r.serving_version,
        r.serving_evaluator.auc,
        r.candidate_evaluator.auc,
        r.serving_evaluator.logloss,
        r.candidate_evaluator.logloss,
        r.serving_score,
        r.candidate_score,
        100.0 * r.candidate_copy_share
    );
    if r.published {
        println!(
            "published {} at {}",
            r.candidate_version,
            r.bundle.display()
        );
    } else {
        println!(
            "rejected {} (kept at {}):",
            r.candidate_version,
            r.bundle.display()
        );
        for reason in &r.rejected_because {
            println!("  - {reason}");
        }
    }
}

pub fn run(pipeline: &PipelineConfig, args: Args) -> CommandResult<ExitCode> {
    let pipeline = with_places(pipeline, None, args.model_store, args.logs);
    let brokers = args
        .brokers
        .or_else(|| Some(pipeline.kafka.brokers.clone()))
        .filter(|b| !b.is_empty() && b != EMBEDDED_BROKERS);
    let settings = TrainerSettings {
        pipeline,
        brokers,
        git_revision: git_revision(),
        world: None,
        device: super::device()?,
        metrics_addr: args.metrics_addr,
    };
    let runtime = runtime()?;
    runtime.block_on(async {
        let rounds = if args.once {
            vec![round_once(&settings).await?]
        } else {
            println!(
                "watching {} (a round every {} new lists); Ctrl-C stops",
                settings.pipeline.logs.dir.display(),
                settings.pipeline.trainer.min_new_lists
            );
            trainer(settings, shutdown_signal()).await?.rounds
        };
        for r in &rounds {
            print_round(r);
        }
        if let Some(path) = &args.json {
            super::report::write_json(path, &rounds)?;
        }
        let rejected = args.once && rounds.iter().any(|r| !r.published);
        Ok(if rejected {
            ExitCode::from(3)
        } else {
            ExitCode::SUCCESS
        })
    })
}
