//! `eglr train`: evaluator on logged lists, then the re-ranker by its variant's recipe;
//! writes a bundle.

use crate::cli::CommandResult;
use std::path::PathBuf;
use std::process::ExitCode;

use eglr::fault::Context;

use eglr::config::PipelineConfig;
use eglr::model::Variant;
use eglr::train::{self, DataPart, TrainJob};

use super::report::write_json;
use super::{data_pattern, device, git_revision};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Logged lists: a `simulate` output directory, a directory of Parquet files or a glob.
    #[arg(long, value_name = "DIR")]
    data: String,

    /// Re-ranker: an EGLR ablation variant, a baseline or a transfer variant (overrides
    /// `generator.variant`; `docs/models.md` lists what each is).
    #[arg(long, value_enum)]
    variant: Option<Variant>,

    /// Bundle directory to create.
    #[arg(long, value_name = "BUNDLE")]
    out: PathBuf,

    /// Seed of initialisation, shuffling and sampling (overrides `training.seed`).
    #[arg(long)]
    seed: Option<u64>,

    /// Reuse the evaluator (and feature normaliser) of this bundle instead of training
    /// one: compares generator variants on the same evaluator.
    #[arg(long, value_name = "BUNDLE")]
    evaluator_from: Option<PathBuf>,

    /// Train a judge instead of a model: an evaluator only, on the judge part of the
    /// training lists (`training.judge_share` of them, by a hash of request_id), which
    /// every other run leaves out. `eval --judge` and `audit --judge` score orderings
    /// with it: an evaluator no model was trained against. Give it its own --seed.
    #[arg(long, conflicts_with_all = ["variant", "evaluator_from"])]
    judge: bool,

    /// Train the evaluator only, on the lists a model learns from, and leave the
    /// generator untrained: a bundle for `eval --beam` (the ceiling the evaluator allows
    /// a generator) and for comparing evaluator kinds, e.g. with
    /// `--set evaluator.kind=logistic`, in seconds rather than minutes.
    #[arg(long, conflicts_with_all = ["variant", "evaluator_from", "judge"])]
    evaluator_only: bool,

    /// Version label results will carry (default: the bundle directory's name).
    #[arg(long)]
    version: Option<String>,

    /// Write the training report as JSON to this file (`-` for stdout).
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

pub fn run(pipeline: &PipelineConfig, args: Args) -> CommandResult<ExitCode> {
    ensure_input!(
        !args.out.exists(),
        "{} already exists; choose a new bundle directory",
        args.out.display()
    );
    let mut generator = pipeline.generator.clone();
    if let Some(v) = args.variant {
        generator.variant = v;
    }
    let mut training = pipeline.training.clone();
    if let Some(seed) = args.seed {
        training.seed = seed;
    }
    let data = data_pattern(&args.data);
    let version = args.version.clone().unwrap_or_else(|| {
        args.out
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into())
    });
    ensure_input!(
        !args.judge || training.judge_share > 0.0,
        "--judge needs a judge part: set training.judge_share (e.g. --set training.judge_share=0.3)"
    );
    let part = match (args.judge, training.judge_share > 0.0) {
        (true, _) => DataPart::Judge,
        (false, true) => DataPart::Model,
        (false, false) => DataPart::All,
    };
    let job = TrainJob {
        data: &data,
        evaluator: pipeline.evaluator.clone(),
        generator,
        training,
        features: &pipeline.features,
        list_len: pipeline.limits.list_len,
        max_list_len: pipeline.limits.max_list_len,
        evaluator_from: args.evaluator_from.as_deref(),
        part,
        evaluator_only: args.judge || args.evaluator_only,
        monitor: None,
        out: &args.out,
        version,
        git_revision: git_revision(),
    };
    let outcome = train::run(&job, &device()?).with_context(|| format!("training on {data}"))?;
    if let Some(ids) = &outcome.semantic_ids {
        println!(
            "semantic ids: {} items, {:.2} % with a content code of their own, {:.2} % with an id of their own",
            ids.items,
            100.0 * ids.content_uniqueness,
            100.0 * ids.uniqueness
        );
    }
    if let Some(e) = &outcome.evaluator {
        println!(
            "evaluator: {} epochs (best {}), validation log-loss {:.4}, AUC {:.4}",
            e.epochs, e.best_epoch, e.validation_logloss, e.validation_auc
        );
    }
    let variant = job.generator.variant.name();
    if let Some(s) = &outcome.ranker.supervised {
        println!(
            "{variant}: {} supervised steps, loss {:.4} -> {:.4}, {:.0} s",
            s.steps,
            s.loss_curve.first().copied().unwrap_or(f64::NAN),
            s.loss_curve.last().copied().unwrap_or(f64::NAN),
            s.seconds
        );
    }
    if let Some(rl) = &outcome.ranker.rl {
        println!(
            "{variant}: {} RL steps, sampled-list reward {:.4} -> {:.4}, {:.2} reasoning steps/list, {:.0} s",
            rl.steps,
            rl.reward_curve.first().copied().unwrap_or(f64::NAN),
            rl.reward_curve.last().copied().unwrap_or(f64::NAN),
            rl.reasoning_steps_per_list,
            rl.seconds
        );
    }
    println!("bundle: {}", args.out.display());
    if let Some(path) = &args.json {
        write_json(path, &outcome)?;
    }
    Ok(ExitCode::SUCCESS)
}
