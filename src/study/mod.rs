//! The study (spec §4 table, the paper's Tables 2-4): every generator variant of a suite
//! trained on the same evaluator for several seeds, evaluated on held-out lists against
//! the oracle and a judge, and reported ([`report`]) with paired intervals over seeds.

mod data;
mod report;
mod tables;

use std::path::{Path, PathBuf};

use candle_core::Device;
use serde::Serialize;

use crate::config::PipelineConfig;
use crate::model::{Bundle, EvaluatorKind, GeneratorConfig, Rl, Variant};
use crate::offline::evaluate::{evaluate, EvalOptions, OrderingReport, PositionStats, Scorers};
use crate::offline::fidelity::{fidelity, Fidelity};
use crate::sim::World;
use crate::train::{
    self, ClickFit, CurvePoint, DataPart, Dataset, JudgeMonitor, TrainError, TrainJob,
};
pub use data::{SimulatedData, StudyData};
pub use report::{write_doc, Report, Suite};
pub use tables::{markdown_table, paired_interval, paired_table};

/// What to run.
#[derive(Debug, Clone)]
pub struct StudyPlan {
    pub pipeline: PipelineConfig,
    pub train_data: String,
    pub test_data: String,
    /// Validation lists (another traffic seed): the evaluators' fidelity is measured on
    /// their pools, never on the test lists.
    pub validation_data: Option<String>,
    pub world: Option<PathBuf>,
    pub seeds: Vec<u64>,
    /// The generators to train; the first also trains the evaluator of its seed.
    pub runs: Vec<StudyRun>,
    /// Where the bundles go (`DIR/seed-S/RUN`).
    pub bundles: PathBuf,
    /// Width of the beam search over each seed's evaluator, a row of its own (the
    /// ceiling that evaluator allows a generator); 0: no such row.
    pub beam_width: usize,
    /// Evaluators of other kinds trained per seed on the same lists as the models'
    /// (no generator): rows for their point-wise sort and beam search, and their
    /// fidelity. The floor a neural evaluator must pass (`logistic`), or an ablation.
    pub reference_evaluators: Vec<EvaluatorKind>,
}

/// The row of the beam search over the evaluator.
const BEAM_ROW: &str = "evaluator beam search";

/// The rows of a reference evaluator of `kind`: its point-wise sort and its beam search.
fn reference_rows(kind: EvaluatorKind) -> [String; 2] {
    [
        format!("{} evaluator point-wise sort", kind.name()),
        format!("{} evaluator beam search", kind.name()),
    ]
}

/// One generator configuration of the study: a variant, optionally with another
/// reasoning cap `K` (the paper's Table 4 sweep) or another RL recipe.
#[derive(Debug, Clone)]
pub struct StudyRun {
    pub variant: Variant,
    /// `K` instead of the pipeline's `generator.max_reasoning_steps`.
    pub max_reasoning_steps: Option<usize>,
    /// LARES's depth instead of the pipeline's `generator.recurrent_depth`.
    pub recurrent_depth: Option<usize>,
    /// The RL recipe instead of the pipeline's (`training.rl`, `training.improvement_bonus`).
    pub rl: Option<RlSetting>,
    /// GR2's semantic item ids (`features.semantic_ids`, or its defaults) in place of
    /// the replaced id field: the run trains an evaluator of its own, with the same ids.
    pub semantic_ids: bool,
}

/// Name suffix of a row with semantic ids; it is paired with the row without.
pub const SEMANTIC_IDS: &str = "semantic-ids";

/// The feature spec of a study run: the pipeline's without semantic ids (the study's
/// baseline encoding, and its judge's), or with them (the pipeline's settings of
/// `features.semantic_ids`, else the defaults).
fn study_features(
    pipeline: &crate::features::FeatureSpec,
    semantic_ids: bool,
) -> crate::features::FeatureSpec {
    crate::features::FeatureSpec {
        semantic_ids: semantic_ids.then(|| pipeline.semantic_ids.clone().unwrap_or_default()),
        ..pipeline.clone()
    }
}

/// An RL recipe of the study's `--rl-sweep`: `[VARIANT:]METHOD[@B]`, the method
/// (`grpo`, `ppo`, `dapo`, `latent-grpo`) for the variant (default `eglr`), with GR2's
/// conditional reward at improvement bonus `B`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RlSetting {
    pub variant: Variant,
    pub method: Rl,
    pub improvement_bonus: f64,
}

impl std::str::FromStr for RlSetting {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (variant, rest) = match text.split_once(':') {
            Some((v, rest)) => (Variant::try_from(v.to_owned())?, rest),
            None => (Variant::Eglr, text),
        };
        if variant.recipe().rl.is_none() {
            return Err(format!(
                "`{text}`: {} is trained without RL, so it has no RL recipe to replace",
                variant.name()
            ));
        }
        let (method, bonus) = match rest.split_once('@') {
            Some((m, b)) => (m, Some(b)),
            None => (rest, None),
        };
        let method = <Rl as clap::ValueEnum>::from_str(method, true).map_err(|_| {
            let names: Vec<String> = <Rl as clap::ValueEnum>::value_variants()
                .iter()
                .filter_map(clap::ValueEnum::to_possible_value)
                .map(|v| v.get_name().to_owned())
                .collect();
            format!(
                "`{text}`: the RL method `{method}` is not one of {}",
                names.join(", ")
            )
        })?;
        let improvement_bonus = match bonus {
            None => 0.0,
            Some(b) => b
                .parse::<f64>()
                .ok()
                .filter(|b| *b > 0.0 && b.is_finite())
                .ok_or_else(|| {
                    format!("`{text}`: the improvement bonus `{b}` is not a number > 0")
                })?,
        };
        Ok(Self {
            variant,
            method,
            improvement_bonus,
        })
    }
}

impl RlSetting {
    /// The method's name as `--rl-sweep` spells it.
    fn method_name(&self) -> String {
        clap::ValueEnum::to_possible_value(&self.method)
            .map_or_else(String::new, |v| v.get_name().to_owned())
    }

    /// The `--rl-sweep` entry this setting parses from.
    pub fn flag(&self) -> String {
        let mut flag = format!("{}:{}", self.variant.name(), self.method_name());
        if self.improvement_bonus > 0.0 {
            flag += &format!("@{}", self.improvement_bonus);
        }
        flag
    }
}

impl std::fmt::Display for RlSetting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let method = self.method_name();
        if self.improvement_bonus > 0.0 {
            write!(f, "{method} bonus={}", self.improvement_bonus)
        } else {
            write!(f, "{method}")
        }
    }
}

impl StudyRun {
    pub fn name(&self) -> String {
        let mut name = self.variant.name();
        if let Some(k) = self.max_reasoning_steps {
            name += &format!(" K={k}");
        }
        if let Some(depth) = self.recurrent_depth {
            name += &format!(" depth={depth}");
        }
        if let Some(rl) = self.rl {
            name += &format!(" {rl}");
        }
        if self.semantic_ids {
            name += &format!(" {SEMANTIC_IDS}");
        }
        name
    }

    /// The training settings of this run at `seed`.
    fn training(&self, base: &train::TrainingConfig, seed: u64) -> train::TrainingConfig {
        let mut t = train::TrainingConfig {
            seed,
            ..base.clone()
        };
        if let Some(rl) = self.rl {
            t.rl = Some(rl.method);
            t.improvement_bonus = rl.improvement_bonus;
        }
        t
    }

    /// Directory name of its bundles.
    fn dir_name(&self) -> String {
        self.name().replace(' ', "-").replace('=', "")
    }

    fn generator(&self, base: &GeneratorConfig) -> GeneratorConfig {
        GeneratorConfig {
            variant: self.variant,
            max_reasoning_steps: self.max_reasoning_steps.unwrap_or(base.max_reasoning_steps),
            recurrent_depth: self.recurrent_depth.unwrap_or(base.recurrent_depth),
            ..base.clone()
        }
    }
}

/// All runs of one row of the table.
#[derive(Debug, Clone, Serialize)]
pub struct StudyRow {
    pub name: String,
    pub runs: Vec<OrderingReport>,
    /// Entropy and reasoning by list position, one entry per run (generators only).
    pub positions: Vec<Vec<PositionStats>>,
    /// The seed's evaluator against the oracle on validation pools (the evaluator row
    /// on simulated data only).
    pub fidelity: Vec<Fidelity>,
    /// RL checkpoints on validation pools, one curve per run (with a judge).
    pub curves: Vec<Vec<CurvePoint>>,
    /// The evaluator rows' click prediction on the test lists' displayed items, `[warm,
    /// cold]`, one per seed (with `training.cold_item_share > 0`).
    pub click_fit: Vec<[ClickFit; 2]>,
}

#[derive(Debug, thiserror::Error)]
pub enum StudyError {
    #[error(transparent)]
    Train(#[from] TrainError),
    #[error(transparent)]
    Sim(#[from] crate::sim::SimError),
    #[error(transparent)]
    Bundle(#[from] crate::model::BundleError),
    #[error("model error: {0}")]
    Model(#[from] candle_core::Error),
    #[error(transparent)]
    Log(#[from] crate::list_log::LogError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl crate::fault::HasFault for StudyError {
    fn fault(&self) -> crate::fault::Fault {
        use crate::fault::Fault;
        match self {
            StudyError::Train(e) => e.fault(),
            StudyError::Sim(e) => e.fault(),
            StudyError::Bundle(e) => e.fault(),
            StudyError::Model(e) => e.fault(),
            StudyError::Log(e) => e.fault(),
            StudyError::Io { source, .. } => Fault::of_io(source),
        }
    }
}

/// RL steps between two checkpoints of the judge monitor.
const MONITOR_EVERY: usize = 25;

/// Seed offset of a seed's judge: its own seed, never a model's.
const JUDGE_SEED_OFFSET: u64 = 1000;

/// The seed's judge: an evaluator trained on the judge part of the training lists with
/// its own seed.
fn judge(plan: &StudyPlan, seed: u64, dir: &Path, device: &Device) -> Result<Bundle, StudyError> {
    let seed = seed + JUDGE_SEED_OFFSET;
    let job = EvaluatorJob {
        kind: plan.pipeline.evaluator.kind,
        seed,
        part: DataPart::Judge,
        name: "judge".into(),
        version: format!("judge-seed{seed}"),
    };
    evaluator_bundle(plan, &job, dir, device)
}

/// A reference evaluator of `kind` for the seed: trained on the models' part of the
/// training lists with the seed's own seed.
fn reference_evaluator(
    plan: &StudyPlan,
    seed: u64,
    kind: EvaluatorKind,
    part: DataPart,
    dir: &Path,
    device: &Device,
) -> Result<Bundle, StudyError> {
    let job = EvaluatorJob {
        kind,
        seed,
        part,
        name: format!("evaluator-{}", kind.name()),
        version: format!("evaluator-{}-seed{seed}", kind.name()),
    };
    evaluator_bundle(plan, &job, dir, device)
}

/// An evaluator-only bundle of the study: which kind, seed and lists, and its names.
struct EvaluatorJob {
    kind: EvaluatorKind,
    seed: u64,
    part: DataPart,
    /// Its directory under the seed's.
    name: String,
    version: String,
}

/// The evaluator-only bundle `job` describes, its generator untrained (trained once,
/// then reused).
fn evaluator_bundle(
    plan: &StudyPlan,
    job: &EvaluatorJob,
    dir: &Path,
    device: &Device,
) -> Result<Bundle, StudyError> {
    let p = &plan.pipeline;
    let out = dir.join(&job.name);
    if !out.join("bundle.json").exists() {
        tracing::info!(seed = job.seed, bundle = job.name, "training an evaluator");
        let features = study_features(&p.features, false);
        let train_job = TrainJob {
            data: &plan.train_data,
            evaluator: crate::model::EvaluatorConfig {
                kind: job.kind,
                ..p.evaluator.clone()
            },
            generator: p.generator.clone(),
            training: train::TrainingConfig {
                seed: job.seed,
                ..p.training.clone()
            },
            features: &features,
            list_len: p.limits.list_len,
            max_list_len: p.limits.max_list_len,
            evaluator_from: None,
            part: job.part,
            evaluator_only: true,
            monitor: None,
            out: &out,
            version: job.version.clone(),
            git_revision: None,
        };
        train::run(&train_job, device)?;
    }
    Ok(Bundle::load(&out, device)?)
}

/// How the study evaluates every bundle of a seed (no beam search).
fn eval_options(plan: &StudyPlan, seed: u64) -> EvalOptions {
    EvalOptions {
        batch: 256,
        list_len: plan.pipeline.limits.list_len,
        pass_at_n: 1,
        seed,
        beam_width: 0,
    }
}

/// The bundle's evaluator against the oracle on the validation pools (simulated data
/// with a validation split only).
fn validation_fidelity(
    plan: &StudyPlan,
    world: Option<&World>,
    bundle: &Bundle,
    seed: u64,
    device: &Device,
) -> Result<Option<Fidelity>, StudyError> {
    let (Some(w), Some(data)) = (world, &plan.validation_data) else {
        return Ok(None);
    };
    let validation = Dataset::load_all(data, bundle.encoder.clone())?;
    Ok(Some(fidelity(
        &bundle.evaluator,
        &bundle.encoder,
        &validation,
        w,
        crate::offline::fidelity::Sample::standard(seed),
        device,
    )?))
}

/// The evaluator row of runs with semantic ids.
const SEMANTIC_EVALUATOR_ROW: &str = "evaluator point-wise sort semantic-ids";

/// Trains and evaluates every (seed, variant). The first variant of each seed trains
/// the evaluator; the others of the same feature spec reuse it (runs with semantic ids
/// have their own, whose point-wise sort is a row of its own). With
/// `training.judge_share > 0` each seed also trains a judge on the judge part, which the
/// models never see, and every ordering gets its score.
pub fn run(plan: &StudyPlan, device: &Device) -> Result<Vec<StudyRow>, StudyError> {
    let world = plan.world.as_deref().map(World::load).transpose()?;
    let part = if plan.pipeline.training.judge_share > 0.0 {
        DataPart::Model
    } else {
        DataPart::All
    };
    let mut rows = empty_rows(plan);
    for &seed in &plan.seeds {
        let seed_dir = plan.bundles.join(format!("seed-{seed}"));
        let judge = (part == DataPart::Model)
            .then(|| judge(plan, seed, &seed_dir, device))
            .transpose()?;
        let ctx = SeedRun {
            plan,
            seed,
            seed_dir,
            part,
            judge: judge.as_ref(),
            world: world.as_ref(),
            device,
        };
        for &kind in &plan.reference_evaluators {
            ctx.reference_evaluator_rows(kind, &mut rows)?;
        }
        ctx.run_rows(&mut rows)?;
    }
    Ok(rows)
}

/// The table's rows, in order, before any seed: the references, then one per run.
fn empty_rows(plan: &StudyPlan) -> Vec<StudyRow> {
    let semantic = plan.runs.iter().any(|r| r.semantic_ids);
    ["initial order", "evaluator point-wise sort"]
        .into_iter()
        .chain(semantic.then_some(SEMANTIC_EVALUATOR_ROW))
        .chain((plan.beam_width > 0).then_some(BEAM_ROW))
        .map(str::to_owned)
        .chain(plan.reference_evaluators.iter().flat_map(|&kind| {
            let [sort, beam] = reference_rows(kind);
            std::iter::once(sort).chain((plan.beam_width > 0).then_some(beam))
        }))
        .chain(plan.runs.iter().map(StudyRun::name))
        .map(|name| StudyRow {
            name,
            runs: Vec::new(),
            positions: Vec::new(),
            fidelity: Vec::new(),
            curves: Vec::new(),
            click_fit: Vec::new(),
        })
        .collect()
}

/// One seed of the study: its bundles' directory, its judge, and what every run of it
/// is scored with.
struct SeedRun<'a> {
    plan: &'a StudyPlan,
    seed: u64,
    seed_dir: PathBuf,
    part: DataPart,
    judge: Option<&'a Bundle>,
    world: Option<&'a World>,
    device: &'a Device,
}

impl SeedRun<'_> {
    /// A reference evaluator of `kind` (no generator): its point-wise sort and beam
    /// rows, and its fidelity.
    fn reference_evaluator_rows(
        &self,
        kind: EvaluatorKind,
        rows: &mut [StudyRow],
    ) -> Result<(), StudyError> {
        let (plan, seed, device) = (self.plan, self.seed, self.device);
        let bundle = reference_evaluator(plan, seed, kind, self.part, &self.seed_dir, device)?;
        let examples = Dataset::load_all(&plan.test_data, bundle.encoder.clone())?;
        let scorers = Scorers {
            judge: self.judge,
            judge_lists: None,
            world: self.world,
            beam_ensemble: None,
        };
        let opts = EvalOptions {
            beam_width: plan.beam_width,
            ..eval_options(plan, seed)
        };
        let report = evaluate(&bundle, &examples, scorers, &opts, device)?;
        let [sort, beam] = reference_rows(kind);
        let row = |name: &str| rows.iter().position(|r| r.name == name);
        let (sort, beam) = (row(&sort), row(&beam));
        if let Some(i) = sort {
            rows[i].runs.push(report.evaluator_sort);
            rows[i].fidelity.extend(validation_fidelity(
                plan, self.world, &bundle, seed, device,
            )?);
        }
        if let (Some(i), Some(b)) = (beam, report.beam) {
            rows[i].runs.push(b);
        }
        Ok(())
    }

    /// Every run of the seed, trained where its bundle is missing, scored on the test
    /// lists. The first run also fills the reference rows its evaluator gives.
    fn run_rows(&self, rows: &mut [StudyRow]) -> Result<(), StudyError> {
        let (plan, seed, device) = (self.plan, self.seed, self.device);
        let first_run_row = rows.len() - plan.runs.len();
        // The evaluator of the seed, by whether its runs use semantic ids.
        let mut evaluator_from: [Option<PathBuf>; 2] = [None, None];
        // The test lists encoded for the judge, for runs that encode them otherwise.
        let mut judge_lists: Option<Vec<crate::encoded::Example>> = None;
        for (i, run) in plan.runs.iter().enumerate() {
            let own_evaluator = &mut evaluator_from[usize::from(run.semantic_ids)];
            let first_of_its_evaluator = own_evaluator.is_none();
            let out = self.trained(run, own_evaluator.as_deref())?;
            own_evaluator.get_or_insert(out.clone());
            let bundle = Bundle::load(&out, device)?;
            let examples = Dataset::load_all(&plan.test_data, bundle.encoder.clone())?;
            if let Some(j) = self
                .judge
                .filter(|_| run.semantic_ids && judge_lists.is_none())
            {
                judge_lists = Some(Dataset::load_all(&plan.test_data, j.encoder.clone())?);
            }
            let opts = EvalOptions {
                // The search depends on the evaluator only: once per seed.
                beam_width: if i == 0 { plan.beam_width } else { 0 },
                ..eval_options(plan, seed)
            };
            let scorers = Scorers {
                judge: self.judge,
                judge_lists: judge_lists.as_deref().filter(|_| run.semantic_ids),
                world: self.world,
                beam_ensemble: None,
            };
            let report = evaluate(&bundle, &examples, scorers, &opts, device)?;
            if first_of_its_evaluator {
                self.evaluator_rows(rows, run.semantic_ids, &report, &bundle, &examples)?;
            }
            if i == 0 {
                self.first_run_rows(rows, &report, &bundle)?;
            }
            let row = &mut rows[first_run_row + i];
            row.runs.push(report.model);
            row.positions.push(report.by_position);
            let curve = &bundle.meta.training.metrics["ranker"]["rl"]["curve"];
            if let Ok(curve) = serde_json::from_value::<Vec<CurvePoint>>(curve.clone()) {
                row.curves.push(curve);
            }
        }
        Ok(())
    }

    /// The bundle directory of `run`, trained first when it holds no bundle (reusing
    /// the evaluator of `evaluator_from`, the seed's earlier run with the same ids).
    fn trained(
        &self,
        run: &StudyRun,
        evaluator_from: Option<&std::path::Path>,
    ) -> Result<PathBuf, StudyError> {
        let (plan, seed, p) = (self.plan, self.seed, &self.plan.pipeline);
        let out = self.seed_dir.join(run.dir_name());
        if out.join("bundle.json").exists() {
            return Ok(out);
        }
        tracing::info!(seed, run = run.name(), "training");
        let world = self.world;
        let oracle = |e: &crate::encoded::Example, order: &[usize]| {
            crate::offline::evaluate::oracle_clicks(world?, e, order)
        };
        let features = study_features(&p.features, run.semantic_ids);
        let job = TrainJob {
            data: &plan.train_data,
            evaluator: p.evaluator.clone(),
            generator: run.generator(&p.generator),
            training: run.training(&p.training, seed),
            features: &features,
            list_len: p.limits.list_len,
            max_list_len: p.limits.max_list_len,
            evaluator_from,
            part: self.part,
            evaluator_only: false,
            monitor: self.judge.map(|j| JudgeMonitor {
                judge: &j.evaluator,
                judge_encoder: &j.encoder,
                every: MONITOR_EVERY,
                oracle: Some(&oracle),
            }),
            out: &out,
            version: format!("{}-seed{seed}", run.dir_name()),
            git_revision: None,
        };
        train::run(&job, self.device)?;
        Ok(out)
    }

    /// The rows of a seed's evaluator, from the first run that uses it: the semantic
    /// evaluator's point-wise sort, and the click fit by item where cold items are held
    /// out.
    fn evaluator_rows(
        &self,
        rows: &mut [StudyRow],
        semantic_ids: bool,
        report: &crate::offline::evaluate::EvalReport,
        bundle: &Bundle,
        examples: &[crate::encoded::Example],
    ) -> Result<(), StudyError> {
        let row = if semantic_ids { 2 } else { 1 };
        if semantic_ids {
            rows[row].runs.push(report.evaluator_sort.clone());
        }
        let cold_share = self.plan.pipeline.training.cold_item_share;
        if cold_share > 0.0 {
            let fit = train::click_fit_by_item(
                &bundle.evaluator,
                examples,
                &bundle.encoder,
                cold_share,
                self.device,
            )?;
            rows[row].click_fit.push(fit);
        }
        Ok(())
    }

    /// The reference rows the first run fills: the initial order, the evaluator's
    /// point-wise sort and fidelity, and the beam over it.
    fn first_run_rows(
        &self,
        rows: &mut [StudyRow],
        report: &crate::offline::evaluate::EvalReport,
        bundle: &Bundle,
    ) -> Result<(), StudyError> {
        if let (Some(row), Some(beam)) =
            (rows.iter().position(|r| r.name == BEAM_ROW), &report.beam)
        {
            rows[row].runs.push(beam.clone());
        }
        rows[0].runs.push(report.initial.clone());
        rows[1].runs.push(report.evaluator_sort.clone());
        rows[1].fidelity.extend(validation_fidelity(
            self.plan,
            self.world,
            bundle,
            self.seed,
            self.device,
        )?);
        Ok(())
    }
}

/// Mean and sample standard deviation (0 for one value).
pub fn mean_std(xs: &[f64]) -> (f64, f64) {
    let n = xs.len().max(1) as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = if xs.len() > 1 {
        xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}

#[cfg(test)]
mod tests {
    use super::{RlSetting, StudyRun};
    use crate::model::{Rl, Variant};

    /// `--rl-sweep` entries: the variant (default `eglr`), the method and the bonus, each
    /// refused with a reason; the row's name tells the recipe.
    #[test]
    fn rl_sweep_entries_parse_or_say_what_is_wrong() {
        let parse = |s: &str| s.parse::<RlSetting>();
        let dapo = parse("dapo@0.05").expect("dapo@0.05");
        assert_eq!(
            (dapo.variant, dapo.method, dapo.improvement_bonus),
            (Variant::Eglr, Rl::Dapo, 0.05)
        );
        let latent = parse("latentr3:grpo").expect("latentr3:grpo");
        assert_eq!(
            (latent.variant, latent.method),
            (Variant::Latentr3, Rl::Grpo)
        );
        let run = |rl| StudyRun {
            variant: Variant::Eglr,
            max_reasoning_steps: None,
            recurrent_depth: None,
            rl: Some(rl),
            semantic_ids: false,
        };
        assert_eq!(run(dapo).name(), "eglr dapo bonus=0.05");
        assert_eq!(
            run(parse("latent-grpo").expect("latent-grpo")).name(),
            "eglr latent-grpo"
        );
        for (bad, says) in [
            ("prm:grpo", "trained without RL"),
            ("eglr:sgd", "one of grpo, ppo, dapo, latent-grpo"),
            ("dapo@-1", "not a number > 0"),
            ("dapo@x", "not a number > 0"),
            ("nope:dapo", "unknown variant `nope`"),
        ] {
            let e = parse(bad).expect_err(bad);
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}

#[cfg(test)]
mod sweep_tests {
    use super::{paired_table, StudyRow, StudyRun};
    use crate::model::Variant;
    use crate::offline::evaluate::OrderingReport;
    use crate::ranking_metrics::MetricSummary;

    fn row(name: &str, oracle: [f64; 2]) -> StudyRow {
        let report = |o: f64| OrderingReport {
            metrics: MetricSummary {
                lists: 1,
                map5: 0.0,
                map10: 0.0,
                ndcg5: 0.0,
                ndcg10: 0.0,
                evaluator_score: 0.0,
                judge_score: None,
                oracle_score: Some(o),
                reasoning_steps_per_list: 0.0,
            },
            ms_per_list: 0.0,
            copies_initial_order: 0.0,
            cold_items: None,
        };
        StudyRow {
            name: name.to_owned(),
            runs: oracle.into_iter().map(report).collect(),
            positions: Vec::new(),
            fidelity: Vec::new(),
            curves: Vec::new(),
            click_fit: Vec::new(),
        }
    }

    /// A row with semantic ids, or LARES at another depth, is named for it and paired
    /// with its variant's row by seed; neither is taken for another RL recipe.
    #[test]
    fn sweep_rows_are_named_and_paired_with_their_variant() {
        let run = |variant, recurrent_depth, semantic_ids| StudyRun {
            variant,
            max_reasoning_steps: None,
            recurrent_depth,
            rl: None,
            semantic_ids,
        };
        let semantic = run(Variant::Eglr, None, true).name();
        let deep = run(Variant::Lares, Some(6), false).name();
        assert_eq!(
            (semantic.as_str(), deep.as_str()),
            ("eglr semantic-ids", "lares depth=6")
        );
        assert_eq!(super::tables::recipe_base(&semantic), None);
        assert_eq!(super::tables::recipe_base(&deep), None);
        let rows = [
            row("initial order", [1.0, 1.0]),
            row("eglr", [1.0, 2.0]),
            row(&semantic, [1.5, 2.5]),
            row("lares", [1.0, 1.0]),
            row(&deep, [0.5, 0.5]),
        ];
        let table = paired_table(&rows, "initial order");
        let line = |pair: &str| {
            table
                .lines()
                .find(|l| l.starts_with(&format!("| {pair} |")))
                .unwrap_or_else(|| panic!("no row {pair} in\n{table}"))
                .to_owned()
        };
        assert!(line("eglr semantic-ids − eglr").contains("+0.5000"));
        assert!(line("lares depth=6 − lares").contains("-0.5000"));
    }
}
