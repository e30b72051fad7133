//! The ablation study (spec §4 table): every generator variant trained on the same
//! evaluator for several seeds, evaluated on held-out lists, reported as mean ± std.

use std::path::{Path, PathBuf};

use candle_core::Device;
use serde::Serialize;

use crate::config::PipelineConfig;
use crate::model::{Bundle, GeneratorConfig, Variant};
use crate::offline::evaluate::{evaluate, EvalOptions, OrderingReport, PositionStats, Scorers};
use crate::offline::fidelity::{fidelity, Fidelity};
use crate::sim::World;
use crate::train::{self, CurvePoint, DataPart, Dataset, JudgeMonitor, TrainError, TrainJob};

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
}

/// One generator configuration of the study: a variant, optionally with another
/// reasoning cap `K` (the paper's Table 4 sweep).
#[derive(Debug, Clone)]
pub struct StudyRun {
    pub variant: Variant,
    /// `K` instead of the pipeline's `generator.max_reasoning_steps`.
    pub max_reasoning_steps: Option<usize>,
}

impl StudyRun {
    pub fn name(&self) -> String {
        match self.max_reasoning_steps {
            None => self.variant.name().to_owned(),
            Some(k) => format!("{} K={k}", self.variant.name()),
        }
    }

    /// Directory name of its bundles.
    fn dir_name(&self) -> String {
        self.name().replace(' ', "-").replace('=', "")
    }

    fn generator(&self, base: &GeneratorConfig) -> GeneratorConfig {
        GeneratorConfig {
            variant: self.variant,
            max_reasoning_steps: self.max_reasoning_steps.unwrap_or(base.max_reasoning_steps),
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
}

/// RL steps between two checkpoints of the judge monitor.
const MONITOR_EVERY: usize = 25;

/// Seed offset of a seed's judge: its own seed, never a model's.
const JUDGE_SEED_OFFSET: u64 = 1000;

/// The seed's judge: an evaluator trained on the judge part of the training lists with
/// its own seed (trained once, then reused).
fn judge(plan: &StudyPlan, seed: u64, dir: &Path, device: &Device) -> Result<Bundle, StudyError> {
    let p = &plan.pipeline;
    let out = dir.join("judge");
    if !out.join("bundle.json").exists() {
        tracing::info!(seed, "training the judge");
        let job = TrainJob {
            data: &plan.train_data,
            evaluator: p.evaluator.clone(),
            generator: p.generator.clone(),
            training: train::TrainingConfig {
                seed: seed + JUDGE_SEED_OFFSET,
                ..p.training.clone()
            },
            features: &p.features,
            list_len: p.limits.list_len,
            max_list_len: p.limits.max_list_len,
            evaluator_from: None,
            part: DataPart::Judge,
            monitor: None,
            out: &out,
            version: format!("judge-seed{}", seed + JUDGE_SEED_OFFSET),
            git_revision: None,
        };
        train::run(&job, device)?;
    }
    Ok(Bundle::load(&out, device)?)
}

/// Trains and evaluates every (seed, variant). The first variant of each seed trains
/// the evaluator; the others reuse it. With `training.judge_share > 0` each seed also
/// trains a judge on the judge part, which the models never see, and every ordering
/// gets its score.
pub fn run(plan: &StudyPlan, device: &Device) -> Result<Vec<StudyRow>, StudyError> {
    let world = plan.world.as_deref().map(World::load).transpose()?;
    let p = &plan.pipeline;
    let mut rows: Vec<StudyRow> = ["initial order", "evaluator point-wise sort"]
        .into_iter()
        .map(str::to_owned)
        .chain(plan.runs.iter().map(StudyRun::name))
        .map(|name| StudyRow {
            name,
            runs: Vec::new(),
            positions: Vec::new(),
            fidelity: Vec::new(),
            curves: Vec::new(),
        })
        .collect();
    let oracle = |e: &crate::train::Example, order: &[usize]| {
        crate::offline::evaluate::oracle_clicks(world.as_ref()?, e, order)
    };
    let part = if p.training.judge_share > 0.0 {
        DataPart::Model
    } else {
        DataPart::All
    };
    for &seed in &plan.seeds {
        let seed_dir = plan.bundles.join(format!("seed-{seed}"));
        let mut evaluator_from: Option<PathBuf> = None;
        let judge = (part == DataPart::Model)
            .then(|| judge(plan, seed, &seed_dir, device))
            .transpose()?;
        for (i, run) in plan.runs.iter().enumerate() {
            let out = seed_dir.join(run.dir_name());
            if !out.join("bundle.json").exists() {
                tracing::info!(seed, run = run.name(), "training");
                let job = TrainJob {
                    data: &plan.train_data,
                    evaluator: p.evaluator.clone(),
                    generator: run.generator(&p.generator),
                    training: train::TrainingConfig {
                        seed,
                        ..p.training.clone()
                    },
                    features: &p.features,
                    list_len: p.limits.list_len,
                    max_list_len: p.limits.max_list_len,
                    evaluator_from: evaluator_from.as_deref(),
                    part,
                    monitor: judge.as_ref().map(|j| JudgeMonitor {
                        judge: &j.evaluator,
                        every: MONITOR_EVERY,
                        oracle: Some(&oracle),
                    }),
                    out: &out,
                    version: format!("{}-seed{seed}", run.dir_name()),
                    git_revision: None,
                };
                train::run(&job, device)?;
            }
            evaluator_from.get_or_insert(out.clone());
            let bundle = Bundle::load(&out, device)?;
            let examples = Dataset::load_all(&plan.test_data, bundle.encoder.clone())?;
            let opts = EvalOptions {
                batch: 256,
                list_len: p.limits.list_len,
                pass_at_n: 1,
                seed,
            };
            let scorers = Scorers {
                judge: judge.as_ref(),
                world: world.as_ref(),
            };
            let report = evaluate(&bundle, &examples, scorers, &opts, device)?;
            if i == 0 {
                rows[0].runs.push(report.initial.clone());
                rows[1].runs.push(report.evaluator_sort.clone());
                if let (Some(w), Some(data)) = (&world, &plan.validation_data) {
                    let validation = Dataset::load_all(data, bundle.encoder.clone())?;
                    rows[1].fidelity.push(fidelity(
                        &bundle.evaluator,
                        &bundle.encoder,
                        &validation,
                        w,
                        crate::offline::fidelity::Sample::standard(seed),
                        device,
                    )?);
                }
            }
            rows[2 + i].runs.push(report.model);
            rows[2 + i].positions.push(report.by_position);
            let curve = &bundle.meta.training.metrics["ranker"]["rl"]["curve"];
            if let Ok(curve) = serde_json::from_value::<Vec<CurvePoint>>(curve.clone()) {
                rows[2 + i].curves.push(curve);
            }
        }
    }
    Ok(rows)
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

/// A markdown table's header: a left-aligned `first` column, then right-aligned `columns`.
fn header(first: &str, columns: impl Iterator<Item = String>) -> String {
    let names: Vec<String> = columns.collect();
    format!(
        "| {first} |{}\n|---|{}\n",
        names.iter().map(|n| format!(" {n} |")).collect::<String>(),
        "---:|".repeat(names.len())
    )
}

/// The results table in markdown: one row per ordering, mean ± std over seeds.
pub fn markdown_table(rows: &[StudyRow]) -> String {
    type Metric = fn(&OrderingReport) -> Option<f64>;
    let metrics: [(&str, Metric); 9] = [
        ("MAP@5", |r| Some(r.metrics.map5)),
        ("MAP@10", |r| Some(r.metrics.map10)),
        ("NDCG@5", |r| Some(r.metrics.ndcg5)),
        ("NDCG@10", |r| Some(r.metrics.ndcg10)),
        ("own Evaluator Score", |r| Some(r.metrics.evaluator_score)),
        ("judge (clicks/list)", |r| r.metrics.judge_score),
        ("Oracle (true clicks/list)", |r| r.metrics.oracle_score),
        ("reasoning steps/list", |r| {
            Some(r.metrics.reasoning_steps_per_list)
        }),
        ("ms/list", |r| Some(r.ms_per_list)),
    ];
    let mut out = header("ordering", metrics.iter().map(|(name, _)| name.to_string()));
    for row in rows {
        out += &format!("| {} |", row.name);
        for (_, f) in &metrics {
            let xs: Option<Vec<f64>> = row.runs.iter().map(f).collect();
            out += &match xs {
                Some(xs) if !xs.is_empty() => {
                    let (m, s) = mean_std(&xs);
                    format!(" {m:.4} ± {s:.4} |")
                }
                _ => " - |".to_owned(),
            };
        }
        out += "\n";
    }
    out
}

/// Two-sided 95 % quantile of Student's t with `df` degrees of freedom.
fn t95(df: usize) -> f64 {
    const T: [f64; 10] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    ];
    T.get(df.wrapping_sub(1)).copied().unwrap_or(1.96)
}

/// Mean of paired differences `a[i] - b[i]` (same seed) with its 95 % t interval.
pub fn paired_interval(a: &[f64], b: &[f64]) -> Option<(f64, f64, f64)> {
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    if d.len() < 2 || a.len() != b.len() {
        return None;
    }
    let (m, s) = mean_std(&d);
    let half = t95(d.len() - 1) * s / (d.len() as f64).sqrt();
    Some((m, m - half, m + half))
}

/// Paired differences over seeds of every row to `baseline` (and of `eglr` to
/// `backbone` when both ran), by the oracle, the judge, the model's own evaluator and
/// NDCG@10 against the logged clicks:
/// mean and 95 % interval. Seeds give the pairs; a difference is called only when its
/// interval excludes zero.
pub fn paired_table(rows: &[StudyRow], baseline: &str) -> String {
    type Metric = fn(&OrderingReport) -> Option<f64>;
    let metrics: [(&str, Metric); 4] = [
        ("oracle", |r| r.metrics.oracle_score),
        ("judge", |r| r.metrics.judge_score),
        ("own evaluator", |r| Some(r.metrics.evaluator_score)),
        ("NDCG@10 (logged clicks)", |r| Some(r.metrics.ndcg10)),
    ];
    let find = |name: &str| rows.iter().find(|r| r.name == name);
    let mut pairs: Vec<(&StudyRow, &StudyRow)> = Vec::new();
    if let Some(base) = find(baseline) {
        pairs.extend(
            rows.iter()
                .filter(|r| r.name != baseline)
                .map(|r| (r, base)),
        );
    }
    if let (Some(e), Some(b)) = (find("eglr"), find("backbone")) {
        pairs.push((e, b));
    }
    let mut out = header(
        "difference (paired by seed)",
        metrics
            .iter()
            .map(|(name, _)| format!("{name}: mean [95 % CI]")),
    );
    for (a, b) in pairs {
        out += &format!("| {} − {} |", a.name, b.name);
        for (_, f) in &metrics {
            let xs: Option<Vec<f64>> = a.runs.iter().map(f).collect();
            let ys: Option<Vec<f64>> = b.runs.iter().map(f).collect();
            out += &match xs.zip(ys).and_then(|(x, y)| paired_interval(&x, &y)) {
                Some((m, lo, hi)) => format!(" {m:+.4} [{lo:+.4}, {hi:+.4}] |"),
                None => " - |".to_owned(),
            };
        }
        out += "\n";
    }
    out
}

/// A row's RL checkpoints averaged over its runs, step by step (steps all runs have).
pub fn mean_curve(row: &StudyRow) -> Vec<CurvePoint> {
    let Some(first) = row.curves.first() else {
        return Vec::new();
    };
    first
        .iter()
        .filter_map(|p| {
            let at: Vec<&CurvePoint> = row
                .curves
                .iter()
                .map(|c| c.iter().find(|q| q.step == p.step))
                .collect::<Option<_>>()?;
            let mean = |f: fn(&CurvePoint) -> f64| {
                mean_std(&at.iter().map(|q| f(q)).collect::<Vec<_>>()).0
            };
            let oracle: Option<Vec<f64>> = at.iter().map(|q| q.oracle).collect();
            Some(CurvePoint {
                step: p.step,
                own: mean(|q| q.own),
                judge: mean(|q| q.judge),
                oracle: oracle.map(|o| mean_std(&o).0),
            })
        })
        .collect()
}

/// Per-position entropy and reasoning of a row, averaged over its runs.
pub fn mean_positions(row: &StudyRow) -> Vec<PositionStats> {
    let len = row.positions.iter().map(Vec::len).max().unwrap_or(0);
    (0..len)
        .map(|t| {
            let at: Vec<&PositionStats> = row.positions.iter().filter_map(|p| p.get(t)).collect();
            let mean = |f: fn(&PositionStats) -> f64| {
                mean_std(&at.iter().map(|p| f(p)).collect::<Vec<_>>()).0
            };
            PositionStats {
                position: t + 1,
                entropy_before: mean(|p| p.entropy_before),
                entropy_after: mean(|p| p.entropy_after),
                reasoning_steps: mean(|p| p.reasoning_steps),
            }
        })
        .collect()
}

/// Entropy (nats) of the selection distribution by list position, before and after
/// reasoning, for the named rows (spec §6; the paper's entropy figures).
pub fn positions_table(rows: &[&StudyRow]) -> String {
    let mut out = String::from("| position |");
    for row in rows {
        out += &format!(
            " {0} H before | {0} H after | {0} reasoning steps |",
            row.name
        );
    }
    out += "\n|---:|";
    out += &"---:|---:|---:|".repeat(rows.len());
    out += "\n";
    let means: Vec<Vec<PositionStats>> = rows.iter().map(|r| mean_positions(r)).collect();
    let len = means.iter().map(Vec::len).max().unwrap_or(0);
    for t in 0..len {
        out += &format!("| {} |", t + 1);
        for m in &means {
            out += &match m.get(t) {
                Some(p) => format!(
                    " {:.3} | {:.3} | {:.2} |",
                    p.entropy_before, p.entropy_after, p.reasoning_steps
                ),
                None => " - | - | - |".to_owned(),
            };
        }
        out += "\n";
    }
    out
}

/// Writes `generated` to `path`, creating its directory. A section starting with the
/// line `## Findings` already in the file is kept after the generated text: the
/// written interpretation survives a regeneration of the numbers.
pub fn write_doc(path: &Path, generated: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let kept = std::fs::read_to_string(path)
        .ok()
        .and_then(|old| old.find("\n## Findings").map(|i| old[i..].to_owned()))
        .unwrap_or_default();
    let text = if kept.is_empty() {
        format!("{}\n", generated.trim_end())
    } else {
        format!("{}\n{}\n", generated.trim_end(), kept.trim_end())
    };
    std::fs::write(path, text)
}
