//! `eglr eval`: offline metrics of a bundle and of the initial order on logged lists.

use crate::cli::CommandResult;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use eglr::fault::Context;

use candle_core::Device;
use eglr::config::PipelineConfig;
use eglr::encoded::Example;
use eglr::model::{judge_conflict, Bundle};
use eglr::offline::evaluate::{
    evaluate, BeamEnsemble, EvalOptions, EvalReport, OrderingReport, Scorers,
};
use eglr::offline::fidelity::fidelity;
use eglr::sim::World;
use eglr::train::{DataPart, Dataset};

use super::report::{table, write_json};
use super::{data_pattern, device};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Model bundle directory.
    #[arg(long, value_name = "BUNDLE")]
    model: PathBuf,

    /// Logged lists to evaluate on: a `simulate` output directory, a directory of
    /// Parquet files or a glob.
    #[arg(long, value_name = "LOGS")]
    data: String,

    /// Simulator world (`world.json` or the directory holding it): adds the oracle score.
    #[arg(long, value_name = "WORLD")]
    simulator: Option<PathBuf>,

    /// Pass@N: keep the evaluator's favourite of the greedy list and N-1 sampled ones.
    #[arg(long, default_value_t = 1)]
    pass_at: usize,

    /// Lists decoded together.
    #[arg(long, default_value_t = 256)]
    batch: usize,

    /// Width of the beam search over the model's evaluator (by expected clicks), a
    /// non-learned reference row: the ceiling the evaluator allows a generator. Costs
    /// about `width x pool size` evaluator calls per position; 0 leaves the row out.
    /// Wider is not better: on the simulator width 8 served fewer true clicks than
    /// width 1, finding lists the evaluator overrates (`docs/results-sim-search.md`).
    #[arg(long, default_value_t = 8, value_name = "WIDTH")]
    beam: usize,

    /// Extra evaluators for the beam row (repeatable): bundles trained on the same logs
    /// as the model, e.g. by `train --evaluator-only` with other seeds. The beam then
    /// ranks lists by the ensemble of the model's evaluator and these, its mean expected
    /// clicks less `--disagreement-penalty` standard deviations: a wide search over one
    /// evaluator drifts to the lists it overrates, and another seed's errors differ.
    #[arg(long, value_name = "BUNDLE")]
    beam_ensemble: Vec<PathBuf>,

    /// Standard deviations of the ensemble's expected clicks taken off its mean (with
    /// `--beam-ensemble`). 0 ranks by the mean, which did best on validation lists of
    /// the simulator (`docs/results-sim-search.md`: 1 and 3 deviations did worse).
    #[arg(long, default_value_t = 0.0, value_name = "STDS")]
    disagreement_penalty: f32,

    /// Seed of the Pass@N sampling.
    #[arg(long, default_value_t = 0)]
    seed: u64,

    /// Independent judge: a bundle from `eglr train --judge` (an evaluator trained on
    /// the judge part of the logs, which this model never saw). Adds a judge score
    /// (its expected clicks) to every ordering; refused when it shares the model's
    /// training lists and seed.
    #[arg(long, value_name = "BUNDLE")]
    judge: Option<PathBuf>,

    /// Write the report as JSON to this file (`-` for stdout).
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

/// Loads a judge for `model`: refused when it is not independent of the model's
/// evaluator, or scales features differently (another normaliser: other training logs).
/// A judge of another feature spec (hashed ids for a model with semantic ids) gets the
/// lists encoded its own way ([`judge_lists`]).
pub(super) fn load_judge(path: &Path, model: &Bundle, device: &Device) -> CommandResult<Bundle> {
    let judge = Bundle::load(path, device)
        .with_context(|| format!("loading judge bundle {}", path.display()))?;
    if let Some(why) = judge_conflict(&model.meta, &judge.meta) {
        bail_input!("{why}");
    }
    ensure_input!(
        judge.encoder.normaliser() == model.encoder.normaliser(),
        "the judge {} scales features differently from {} (other training logs): train \
         both on the same logs",
        path.display(),
        model.meta.version
    );
    Ok(judge)
}

/// The lists of `data` encoded for `judge`, where it encodes them differently from
/// `model` (another feature spec); `None` where the model's encoding serves both.
pub(super) fn judge_lists(
    data: &str,
    judge: Option<&Bundle>,
    model: &Bundle,
) -> CommandResult<Option<Vec<Example>>> {
    match judge {
        Some(j) if j.encoder.spec() != model.encoder.spec() => {
            Ok(Some(Dataset::load_all(data, j.encoder.clone())?))
        }
        _ => Ok(None),
    }
}

/// Loads the beam's ensemble members for `model`: refused when one encodes features
/// otherwise (another spec or normaliser: the pools are encoded once, by the model's
/// encoder) or learnt from the judge's lists (the judge would no longer be independent).
fn load_ensemble(
    paths: &[PathBuf],
    model: &Bundle,
    judge: Option<&Bundle>,
    device: &Device,
) -> CommandResult<Vec<Bundle>> {
    paths
        .iter()
        .map(|path| {
            let member = Bundle::load(path, device)
                .with_context(|| format!("loading ensemble member {}", path.display()))?;
            ensure_input!(
                member.encoder.spec() == model.encoder.spec()
                    && member.encoder.normaliser() == model.encoder.normaliser(),
                "the ensemble member {} encodes features differently from {} (another \
                 feature spec or other training logs): train both on the same logs",
                path.display(),
                model.meta.version
            );
            if let Some(why) = judge.and_then(|j| judge_conflict(&member.meta, &j.meta)) {
                bail_input!("ensemble member {}: {why}", path.display());
            }
            ensure_input!(
                member.meta.training.part != DataPart::Judge,
                "the ensemble member {} learnt from the judge's lists (`train --judge`): \
                 the beam would be searched with the judge's knowledge",
                path.display()
            );
            Ok(member)
        })
        .collect()
}

pub fn world_path(p: &Path) -> PathBuf {
    if p.is_dir() {
        p.join("world.json")
    } else {
        p.to_owned()
    }
}

pub fn run(pipeline: &PipelineConfig, args: Args) -> CommandResult<ExitCode> {
    ensure_input!(
        args.disagreement_penalty.is_finite() && args.disagreement_penalty >= 0.0,
        "--disagreement-penalty must be a non-negative number of standard deviations, got {}",
        args.disagreement_penalty
    );
    ensure_input!(
        args.beam_ensemble.is_empty() || args.beam > 0,
        "--beam-ensemble searches the beam row: give --beam a width above 0"
    );
    let device = device()?;
    let bundle = Bundle::load(&args.model, &device)
        .with_context(|| format!("loading bundle {}", args.model.display()))?;
    let world = args
        .simulator
        .as_deref()
        .map(|p| World::load(&world_path(p)))
        .transpose()?;
    let judge = args
        .judge
        .as_deref()
        .map(|p| load_judge(p, &bundle, &device))
        .transpose()?;
    let members = load_ensemble(&args.beam_ensemble, &bundle, judge.as_ref(), &device)?;
    let data = data_pattern(&args.data);
    let examples = Dataset::load_all(&data, bundle.encoder.clone())?;
    let judged_lists = judge_lists(&data, judge.as_ref(), &bundle)?;
    let opts = EvalOptions {
        batch: args.batch,
        list_len: pipeline.limits.list_len,
        pass_at_n: args.pass_at.max(1),
        seed: args.seed,
        beam_width: args.beam,
    };
    let scorers = Scorers {
        judge: judge.as_ref(),
        judge_lists: judged_lists.as_deref(),
        world: world.as_ref(),
        beam_ensemble: (!members.is_empty()).then_some(BeamEnsemble {
            members: &members,
            disagreement_penalty: args.disagreement_penalty,
        }),
    };
    let mut report = evaluate(&bundle, &examples, scorers, &opts, &device)?;
    if let Some(world) = &world {
        report.fidelity = Some(fidelity(
            &bundle.evaluator,
            &bundle.encoder,
            &examples,
            world,
            eglr::offline::fidelity::Sample::standard(args.seed),
            &device,
        )?);
    }
    print_report(&report);
    if let Some(path) = &args.json {
        write_json(path, &report)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn row(name: &str, r: &OrderingReport) -> Vec<String> {
    let m = &r.metrics;
    vec![
        name.to_owned(),
        format!("{:.4}", m.map5),
        format!("{:.4}", m.map10),
        format!("{:.4}", m.ndcg5),
        format!("{:.4}", m.ndcg10),
        format!("{:.4}", m.evaluator_score),
        m.judge_score.map_or("-".into(), |j| format!("{j:.4}")),
        m.oracle_score.map_or("-".into(), |o| format!("{o:.4}")),
        format!("{:.2}", m.reasoning_steps_per_list),
        format!("{:.3}", r.ms_per_list),
        format!("{:.1} %", 100.0 * r.copies_initial_order),
    ]
}

pub(super) fn print_report(r: &EvalReport) {
    println!(
        "{} lists, model {} ({}), pass@{}",
        r.lists, r.model_version, r.variant, r.pass_at_n
    );
    print!(
        "{}",
        table(
            &[
                "ordering",
                "MAP@5",
                "MAP@10",
                "NDCG@5",
                "NDCG@10",
                "evaluator",
                "judge",
                "oracle",
                "reasoning/list",
                "ms/list",
                "copies initial"
            ],
            &[
                row("model", &r.model),
                row("initial", &r.initial),
                row("evaluator sort", &r.evaluator_sort),
                row("logged", &r.logged)
            ]
            .into_iter()
            .chain(r.beam.as_ref().map(|b| row("evaluator beam", b)))
            .collect::<Vec<_>>(),
        )
    );
    if let Some(e) = &r.beam_ensemble {
        println!(
            "evaluator beam: searched by an ensemble of {} evaluators, mean expected clicks less {} standard deviations",
            e.members, e.disagreement_penalty
        );
    }
    println!(
        "upstream order served by generator-evaluator selection: {:.1} % of lists",
        100.0 * r.upstream_share
    );
    if let Some(cold) = r.model.cold_items {
        println!(
            "items the model never saw in training (training.cold_item_share): {:.1} % of its list slots, {:.1} % of the initial order's",
            100.0 * cold,
            100.0 * r.initial.cold_items.unwrap_or(0.0)
        );
    }
    if let Some(f) = &r.fidelity {
        println!(
            "evaluator fidelity on {} pools x {} orderings: Kendall tau {:.3}, pairs ordered as the oracle {:.1} %; \
             adjacency probe ({} pools): evaluator prefers adjacent {:.1} % (oracle {:.1} %), gain {:+.4} (oracle {:+.4}) clicks",
            f.pools,
            f.orderings_per_pool,
            f.kendall_tau,
            100.0 * f.pair_agreement,
            f.adjacency.probes,
            100.0 * f.adjacency.evaluator_prefers_adjacent,
            100.0 * f.adjacency.oracle_prefers_adjacent,
            f.adjacency.evaluator_gain,
            f.adjacency.oracle_gain
        );
        println!(
            "redundancy probe ({} pools): evaluator sees the loss of an item of the same category above in {:.1} % (oracle {:.1} %), effect {:+.4} (oracle {:+.4}) clicks",
            f.redundancy.probes,
            100.0 * f.redundancy.evaluator_sees_loss,
            100.0 * f.redundancy.oracle_sees_loss,
            f.redundancy.evaluator_effect,
            f.redundancy.oracle_effect
        );
        println!(
            "point-wise probe: each item scored alone, Kendall tau with its true relevance {:.3} (the initial order's {:.3}); its point-wise sort with the list effects off {:+.1} % vs initial",
            f.pointwise.evaluator_tau,
            f.pointwise.initial_tau,
            100.0 * f.pointwise.sort_vs_initial_without_list_effects
        );
    }
    println!("\nentropy by position (model):");
    let rows: Vec<Vec<String>> = r
        .by_position
        .iter()
        .map(|p| {
            vec![
                p.position.to_string(),
                format!("{:.3}", p.entropy_before),
                format!("{:.3}", p.entropy_after),
                format!("{:.2}", p.reasoning_steps),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &[
                "position",
                "before reasoning",
                "after reasoning",
                "reasoning steps"
            ],
            &rows
        )
    );
}
