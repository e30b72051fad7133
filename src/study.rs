//! The ablation study (spec §4 table): every generator variant trained on the same
//! evaluator for several seeds, evaluated on held-out lists, reported as mean ± std.

use std::path::{Path, PathBuf};

use candle_core::Device;
use serde::Serialize;

use crate::config::PipelineConfig;
use crate::eval::{evaluate, EvalOptions, OrderingReport};
use crate::model::{Bundle, Variant};
use crate::sim::World;
use crate::train::{self, Dataset, TrainError, TrainJob};

/// What to run.
#[derive(Debug, Clone)]
pub struct StudyPlan {
    pub pipeline: PipelineConfig,
    pub train_data: String,
    pub test_data: String,
    pub world: Option<PathBuf>,
    pub seeds: Vec<u64>,
    pub variants: Vec<Variant>,
    /// Where the bundles go (`DIR/seed-S/VARIANT`).
    pub bundles: PathBuf,
}

/// All runs of one row of the table.
#[derive(Debug, Clone, Serialize)]
pub struct StudyRow {
    pub name: String,
    pub runs: Vec<OrderingReport>,
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

/// Trains and evaluates every (seed, variant). The first variant of each seed trains
/// the evaluator; the others reuse it.
pub fn run(plan: &StudyPlan, device: &Device) -> Result<Vec<StudyRow>, StudyError> {
    let world = plan.world.as_deref().map(World::load).transpose()?;
    let p = &plan.pipeline;
    let mut rows: Vec<StudyRow> = ["initial order", "evaluator point-wise sort"]
        .iter()
        .map(|n| StudyRow {
            name: (*n).to_owned(),
            runs: Vec::new(),
        })
        .chain(plan.variants.iter().map(|v| StudyRow {
            name: v.name().to_owned(),
            runs: Vec::new(),
        }))
        .collect();
    for &seed in &plan.seeds {
        let seed_dir = plan.bundles.join(format!("seed-{seed}"));
        let mut evaluator_from: Option<PathBuf> = None;
        for (i, &variant) in plan.variants.iter().enumerate() {
            let out = seed_dir.join(variant.name());
            if !out.join("bundle.json").exists() {
                tracing::info!(seed, variant = variant.name(), "training");
                let job = TrainJob {
                    data: &plan.train_data,
                    evaluator: p.evaluator.clone(),
                    generator: crate::model::GeneratorConfig {
                        variant,
                        ..p.generator.clone()
                    },
                    training: train::TrainingConfig {
                        seed,
                        ..p.training.clone()
                    },
                    features: &p.features,
                    list_len: p.limits.list_len,
                    max_list_len: p.limits.max_list_len,
                    evaluator_from: evaluator_from.as_deref(),
                    out: &out,
                    version: format!("{}-seed{seed}", variant.name()),
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
            let report = evaluate(&bundle, &examples, world.as_ref(), &opts, device)?;
            if i == 0 {
                rows[0].runs.push(report.initial.clone());
                rows[1].runs.push(report.evaluator_sort.clone());
            }
            rows[2 + i].runs.push(report.model);
        }
    }
    Ok(rows)
}

fn mean_std(xs: &[f64]) -> (f64, f64) {
    let n = xs.len().max(1) as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = if xs.len() > 1 {
        xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}

/// The results table in markdown: one row per ordering, mean ± std over seeds.
pub fn markdown_table(rows: &[StudyRow]) -> String {
    type Metric = fn(&OrderingReport) -> Option<f64>;
    let metrics: [(&str, Metric); 8] = [
        ("MAP@5", |r| Some(r.metrics.map5)),
        ("MAP@10", |r| Some(r.metrics.map10)),
        ("NDCG@5", |r| Some(r.metrics.ndcg5)),
        ("NDCG@10", |r| Some(r.metrics.ndcg10)),
        ("Evaluator Score", |r| Some(r.metrics.evaluator_score)),
        ("Oracle (true clicks/list)", |r| r.metrics.oracle_score),
        ("reasoning steps/list", |r| {
            Some(r.metrics.reasoning_steps_per_list)
        }),
        ("ms/list", |r| Some(r.ms_per_list)),
    ];
    let mut out = String::from("| ordering |");
    for (name, _) in &metrics {
        out += &format!(" {name} |");
    }
    out += "\n|---|";
    out += &"---:|".repeat(metrics.len());
    out += "\n";
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

/// Writes `text` to `path`, creating its directory.
pub fn write_doc(path: &Path, text: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, text)
}
