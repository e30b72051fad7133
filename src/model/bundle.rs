//! Model bundles: one directory holding everything needed to serve and audit a model.
//!
//! ```text
//! BUNDLE/bundle.json             configs, feature spec, normaliser stats, training metadata
//! BUNDLE/evaluator.safetensors   evaluator weights
//! BUNDLE/generator.safetensors   the re-ranker's weights (a generator or a scorer)
//! ```
//! A bundle is written into a hidden sibling directory and renamed into place, so a
//! watcher never sees half a bundle. Loading checks the format, the configs, and every
//! tensor's name and shape against the model the configs describe.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use serde::{Deserialize, Serialize};

use super::config::{EvaluatorConfig, GeneratorConfig};
use super::{Evaluator, Ranker};
use crate::features::{DenseNormaliser, FeatureEncoder, FeatureSpec, SemanticIds};

/// Format version of `bundle.json`.
pub const BUNDLE_FORMAT: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid bundle.json: {message}")]
    BadMeta { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    BadWeights { path: PathBuf, message: String },
    #[error("cannot build the model: {0}")]
    Model(#[from] candle_core::Error),
}

impl crate::fault::HasFault for BundleError {
    fn fault(&self) -> crate::fault::Fault {
        use crate::fault::Fault;
        match self {
            BundleError::Io { source, .. } => Fault::of_io(source),
            BundleError::BadMeta { .. } | BundleError::BadWeights { .. } => Fault::Input,
            BundleError::Model(_) => Fault::Bug,
        }
    }
}

/// Which training lists a run learns from (validation lists are the same for all).
///
/// The study protocol (issue 12) judges models with a second evaluator that must not
/// share their errors: it is trained on a part of the training logs that the models'
/// evaluators and generators never see, chosen by a hash of the request id (a salt
/// independent of the validation split's), with its own seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataPart {
    /// Every training list (no judge part reserved).
    #[default]
    All,
    /// The lists outside the judge part: what served models learn from.
    Model,
    /// The judge part: `judge_share` of the training lists.
    Judge,
}

impl DataPart {
    /// Whether the training list `request_id` belongs to this part.
    pub fn contains(self, request_id: &str, judge_share: f64) -> bool {
        let h = crate::features::hash_bucket("judge", request_id, 1_000_000);
        let judge = f64::from(h - 1) < judge_share * 1_000_000.0;
        match self {
            DataPart::All => true,
            DataPart::Model => !judge,
            DataPart::Judge => judge,
        }
    }
}

/// Why `judge` cannot judge `model` independently, if it cannot: a judge trained on the
/// same lists with the same seed has the serving evaluator's errors (on identical
/// lists and seed, it *is* the serving evaluator), so its scores can never reveal that
/// the generator exploits them. A judge trained on the judge part of the logs the
/// model's own part excludes, or on other logs, is independent.
pub fn judge_conflict(model: &BundleMeta, judge: &BundleMeta) -> Option<String> {
    let (m, j) = (&model.training, &judge.training);
    if m.data != j.data {
        return None;
    }
    let disjoint =
        j.part == DataPart::Judge && m.part == DataPart::Model && m.judge_share == j.judge_share;
    if disjoint {
        return None;
    }
    (m.seed == j.seed).then(|| {
        format!(
            "the judge {} was trained on the same lists ({}) with the same seed ({}) as {}: \
             its evaluator shares the serving evaluator's errors and cannot flag reward \
             hacking; train one with `eglr train --judge` (a disjoint part, its own seed)",
            judge.version, j.data, j.seed, model.version
        )
    })
}

/// What `bundle.json` records about how the model was made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingInfo {
    pub data: String,
    pub seed: u64,
    /// Which training lists it learnt from (a judge's part is disjoint from the
    /// models'). Bundles written before this field: `all`.
    #[serde(default)]
    pub part: DataPart,
    /// `training.judge_share` when it was trained (the parts depend on it).
    #[serde(default)]
    pub judge_share: f64,
    /// `training.cold_item_share` when it was trained: the items it never saw.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cold_item_share: f64,
    pub git_revision: Option<String>,
    pub created_unix_ms: i64,
    /// Training and validation metrics, free-form.
    pub metrics: serde_json::Value,
}

fn is_zero(x: &f64) -> bool {
    *x == 0.0
}

/// The contents of `bundle.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleMeta {
    pub format: u32,
    /// The version results carry (`model_version`).
    pub version: String,
    pub features: FeatureSpec,
    pub normaliser: DenseNormaliser,
    /// The fitted tokenizer of `features.semantic_ids` (GR2's semantic ids).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub semantic_ids: Option<SemanticIds>,
    pub evaluator: EvaluatorConfig,
    pub generator: GeneratorConfig,
    /// Longest list the models were built for.
    pub max_list_len: usize,
    pub training: TrainingInfo,
}

/// A loaded bundle, ready for inference (weights are plain tensors, no autograd).
#[derive(Debug, Clone)]
pub struct Bundle {
    pub meta: BundleMeta,
    pub encoder: FeatureEncoder,
    pub evaluator: Evaluator,
    /// The re-ranker `meta.generator.variant` names.
    pub ranker: Ranker,
}

const META: &str = "bundle.json";
const EVALUATOR: &str = "evaluator.safetensors";
const GENERATOR: &str = "generator.safetensors";

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BundleError + '_ {
    move |source| BundleError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Flushes a file or directory to disk.
fn sync(path: &Path) -> Result<(), BundleError> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(io(path))
}

impl Bundle {
    /// Writes a bundle to `dir` (which must not exist yet).
    pub fn save(
        dir: &Path,
        meta: &BundleMeta,
        evaluator: &VarMap,
        generator: &VarMap,
    ) -> Result<(), BundleError> {
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let parent = dir
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).map_err(io(parent))?;
        let staging = parent.join(format!(".{name}.partial"));
        if staging.exists() {
            std::fs::remove_dir_all(&staging).map_err(io(&staging))?;
        }
        std::fs::create_dir_all(&staging).map_err(io(&staging))?;
        let json = serde_json::to_vec_pretty(meta).map_err(|e| BundleError::BadMeta {
            path: staging.join(META),
            message: e.to_string(),
        })?;
        std::fs::write(staging.join(META), json).map_err(io(&staging))?;
        for (file, vars) in [(EVALUATOR, evaluator), (GENERATOR, generator)] {
            let path = staging.join(file);
            vars.save(&path).map_err(|e| BundleError::BadWeights {
                path: path.clone(),
                message: e.to_string(),
            })?;
        }
        // Durable before it is visible: the files, their directory, then the rename.
        for file in [META, EVALUATOR, GENERATOR] {
            let path = staging.join(file);
            sync(&path)?;
        }
        sync(&staging)?;
        std::fs::rename(&staging, dir).map_err(io(dir))?;
        sync(parent)
    }

    /// Loads and checks a bundle.
    pub fn load(dir: &Path, device: &Device) -> Result<Self, BundleError> {
        let meta_path = dir.join(META);
        let bytes = std::fs::read(&meta_path).map_err(io(&meta_path))?;
        let meta: BundleMeta =
            serde_json::from_slice(&bytes).map_err(|e| BundleError::BadMeta {
                path: meta_path.clone(),
                message: e.to_string(),
            })?;
        let bad = |message: String| BundleError::BadMeta {
            path: meta_path.clone(),
            message,
        };
        if meta.format != BUNDLE_FORMAT {
            return Err(bad(format!(
                "format {} is not supported (expected {BUNDLE_FORMAT})",
                meta.format
            )));
        }
        meta.evaluator
            .validate()
            .map_err(|(k, m)| bad(format!("{k}: {m}")))?;
        meta.generator
            .validate()
            .map_err(|(k, m)| bad(format!("{k}: {m}")))?;
        if meta.max_list_len == 0 {
            return Err(bad("max_list_len must be at least 1".into()));
        }
        check_normaliser(&meta.normaliser).map_err(bad)?;
        if let Some(ids) = &meta.features.semantic_ids {
            ids.validate(&meta.features.item)
                .map_err(|(k, m)| bad(format!("{k}: {m}")))?;
        }
        let encoder = FeatureEncoder::new(meta.features.clone(), meta.normaliser.clone())
            .with_semantic_ids(meta.semantic_ids.clone())
            .map_err(bad)?;
        // Sizes are bounded before the model is built: building allocates them.
        check_sizes(&meta, &encoder).map_err(bad)?;
        let evaluator = {
            let tensors = load_checked(&dir.join(EVALUATOR), device, |vb| {
                Evaluator::new(&meta.evaluator, &encoder, meta.max_list_len, vb).map(drop)
            })?;
            Evaluator::new(
                &meta.evaluator,
                &encoder,
                meta.max_list_len,
                VarBuilder::from_tensors(tensors, DType::F32, device),
            )?
        };
        let ranker = {
            let tensors = load_checked(&dir.join(GENERATOR), device, |vb| {
                Ranker::new(&meta.generator, &encoder, meta.max_list_len, vb).map(drop)
            })?;
            Ranker::new(
                &meta.generator,
                &encoder,
                meta.max_list_len,
                VarBuilder::from_tensors(tensors, DType::F32, device),
            )?
            .freeze()?
        };
        Ok(Self {
            meta,
            encoder,
            evaluator,
            ranker,
        })
    }
}

/// Bounds on a bundle's sizes: far above any model this crate trains, low enough that a
/// corrupt or hostile `bundle.json` cannot make loading allocate without limit.
const MAX_WIDTH: usize = 8192;
const MAX_LAYERS: usize = 64;
const MAX_LIST_LEN: usize = 10_000;
const MAX_REASONING_STEPS: usize = 256;
/// Embedding-table entries (rows times width) of all features together: 1 GiB of f32.
const MAX_EMBEDDING_ENTRIES: usize = 1 << 28;

fn check_sizes(meta: &BundleMeta, encoder: &FeatureEncoder) -> Result<(), String> {
    let (e, g) = (&meta.evaluator, &meta.generator);
    let limits = [
        ("evaluator.embedding_dim", e.embedding_dim, MAX_WIDTH),
        ("evaluator.d_model", e.d_model, MAX_WIDTH),
        ("evaluator.ffn_dim", e.ffn_dim, MAX_WIDTH),
        ("evaluator.position_dim", e.position_dim, MAX_WIDTH),
        ("evaluator.heads", e.heads, MAX_LAYERS),
        ("evaluator.layers", e.layers, MAX_LAYERS),
        ("generator.embedding_dim", g.embedding_dim, MAX_WIDTH),
        ("generator.d_model", g.d_model, MAX_WIDTH),
        ("generator.ffn_dim", g.ffn_dim, MAX_WIDTH),
        ("generator.heads", g.heads, MAX_LAYERS),
        ("generator.layers", g.layers, MAX_LAYERS),
        (
            "generator.max_reasoning_steps",
            g.max_reasoning_steps,
            MAX_REASONING_STEPS,
        ),
        (
            "generator.reason_first_steps",
            g.reason_first_steps,
            MAX_REASONING_STEPS,
        ),
        (
            "generator.test_time_candidates",
            g.test_time_candidates,
            MAX_REASONING_STEPS,
        ),
        (
            "generator.test_time_samples",
            g.test_time_samples,
            MAX_REASONING_STEPS,
        ),
        ("max_list_len", meta.max_list_len, MAX_LIST_LEN),
    ];
    if let Some((key, value, max)) = limits.iter().find(|(_, v, max)| v > max) {
        return Err(format!(
            "{key} = {value} exceeds {max}: not a bundle this build can load"
        ));
    }
    let rows = encoder.user_rows() + encoder.item_rows();
    let entries = rows.saturating_mul(e.embedding_dim.max(g.embedding_dim));
    if entries > MAX_EMBEDDING_ENTRIES {
        return Err(format!(
            "the feature embeddings would hold {entries} values (at most {MAX_EMBEDDING_ENTRIES})"
        ));
    }
    Ok(())
}

/// Every fitted field has a finite mean and a finite, positive spread: a zero or NaN
/// spread would turn every value of the field into NaN or infinity.
fn check_normaliser(normaliser: &DenseNormaliser) -> Result<(), String> {
    for (entity, fields) in [("user", &normaliser.user), ("item", &normaliser.item)] {
        for (name, stats) in fields {
            let usable = stats.mean.is_finite() && stats.std.is_finite() && stats.std > 0.0;
            if stats.count > 0 && !usable {
                return Err(format!(
                    "normaliser of {entity} field {name:?} has mean {} and spread {}: \
                     both must be finite and the spread positive",
                    stats.mean, stats.std
                ));
            }
        }
    }
    Ok(())
}

/// Reads a safetensors file and checks that it holds exactly the tensors, with the
/// shapes, that `build` asks for, and that every value is finite.
fn load_checked(
    path: &Path,
    device: &Device,
    build: impl FnOnce(VarBuilder) -> candle_core::Result<()>,
) -> Result<HashMap<String, Tensor>, BundleError> {
    let bad = |message: String| BundleError::BadWeights {
        path: path.to_owned(),
        message,
    };
    let tensors = candle_core::safetensors::load(path, device).map_err(|e| bad(e.to_string()))?;
    let expected = VarMap::new();
    build(VarBuilder::from_varmap(&expected, DType::F32, device))?;
    let expected: BTreeMap<String, Vec<usize>> = expected
        .data()
        .lock()
        .map_err(|_| bad("internal lock poisoned".into()))?
        .iter()
        .map(|(k, v)| (k.clone(), v.dims().to_vec()))
        .collect();
    for (name, shape) in &expected {
        match tensors.get(name) {
            None => return Err(bad(format!("tensor `{name}` is missing"))),
            Some(t) if t.dims() != shape.as_slice() => {
                return Err(bad(format!(
                    "tensor `{name}` has shape {:?}, the config needs {shape:?}",
                    t.dims()
                )))
            }
            Some(t) if t.dtype() != DType::F32 => {
                return Err(bad(format!(
                    "tensor `{name}` is {:?}, expected f32",
                    t.dtype()
                )))
            }
            Some(t) => {
                let values: Vec<f32> = t.flatten_all()?.to_vec1()?;
                if values.iter().any(|v| !v.is_finite()) {
                    return Err(bad(format!("tensor `{name}` holds NaN or infinite values")));
                }
            }
        }
    }
    if let Some(extra) = tensors.keys().find(|k| !expected.contains_key(*k)) {
        return Err(bad(format!(
            "unexpected tensor `{extra}` (does the file belong to another config?)"
        )));
    }
    Ok(tensors)
}
