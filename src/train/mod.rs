//! Training (spec §5): the evaluator on logged lists, then the re-ranker by its
//! variant's recipe — a supervised stage on logged clicks and/or RL (GRPO or PPO)
//! against the frozen evaluator; the result is a model bundle.

mod data;
mod fit_evaluator;
mod rl;
mod supervised;

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

pub use crate::model::{group_advantages, rewards, Reward};
pub use data::{DataPart, Dataset, Split};
pub use fit_evaluator::{
    auc, click_fit_by_item, train_evaluator, validation_scores, ClickFit, EvaluatorReport,
    ListBatch, Validation,
};
pub use rl::{kl_shaped, log_ratio, train_rl, CurvePoint, Oracle, RlMonitor, RlReport};
pub use supervised::{search_lists, supervised_loss, train_supervised, SupervisedReport, Target};

use crate::check::Problem;
use crate::encoded::Example;
use crate::features::FeatureEncoder;
use crate::list_log::LogError;
use crate::model::{
    Bundle, BundleError, BundleMeta, Evaluator, EvaluatorConfig, Generator, GeneratorConfig,
    Ranker, Recipe, Rl, TrainingInfo, Variant, BUNDLE_FORMAT,
};

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error("model error: {0}")]
    Model(#[from] candle_core::Error),
    #[error("no logged lists found in {0} file(s)")]
    Empty(usize),
    #[error("the evaluator bundle {path} does not fit: {message}")]
    Mismatch { path: String, message: String },
}

impl crate::fault::HasFault for TrainError {
    fn fault(&self) -> crate::fault::Fault {
        use crate::fault::Fault;
        match self {
            TrainError::Log(e) => e.fault(),
            TrainError::Bundle(e) => e.fault(),
            TrainError::Model(e) => e.fault(),
            TrainError::Empty(_) | TrainError::Mismatch { .. } => Fault::Input,
        }
    }
}

/// Optimisation settings (pipeline section `[training]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainingConfig {
    pub seed: u64,
    /// Share of logged lists held out for model selection (by a hash of request_id).
    pub validation_share: f64,
    pub evaluator_lr: f64,
    /// AdamW's decoupled weight decay on the evaluator's parameters: the prior that
    /// keeps many rarely seen rows (item or user ids) near zero.
    pub evaluator_weight_decay: f64,
    pub evaluator_batch: usize,
    pub evaluator_epochs: usize,
    /// Epochs without validation improvement before stopping.
    pub evaluator_patience: usize,
    /// Beyond the paper: weight of an exploration list's clicks in the evaluator's loss
    /// against a served list's (1: alike). Lists shown in random order are the only ones
    /// where position, neighbours and upstream score are not confounded with the policy
    /// that chose them.
    pub exploration_weight: f64,
    pub generator_lr: f64,
    /// Pools per GRPO update; each is sampled `group_size` times.
    pub grpo_pools_per_step: usize,
    /// Group size `G`.
    pub group_size: usize,
    pub grpo_steps: usize,
    pub reward: Reward,
    /// PPO (EG-Rerank): clip range `eps` of the probability ratio.
    pub ppo_clip: f64,
    /// PPO and DAPO: updates per sampled batch.
    pub ppo_epochs: usize,
    /// The RL recipe instead of the variant's own (`grpo`, `ppo`, `dapo`,
    /// `latent-grpo`); unset: the variant's. A variant without RL (PRM, DLCM, Seq2Slate, ReaRec) stays without.
    pub rl: Option<Rl>,
    /// DAPO: lower clip bound `eps_low` of the per-position ratio.
    pub dapo_clip_low: f64,
    /// DAPO: upper clip bound `eps_high` (above `eps_low`: "clip-higher", room for
    /// unlikely choices to gain probability).
    pub dapo_clip_high: f64,
    /// DAPO's dynamic sampling: batches of pools sampled per update, at most, to fill
    /// it with groups whose rewards differ (the first included).
    pub dapo_sampling_rounds: usize,
    /// GR2's conditional reward (beyond the paper's RL): with `b > 0` a sampled list's
    /// reward is its gain over the upstream order by the same evaluator,
    /// `R(l) - R(u)`, plus `b` only when the list differs from the upstream order and
    /// the gain is positive. Copying the upstream order earns 0, never the bonus, so
    /// the policy cannot win by keeping the order (the gain alone is a constant shift
    /// per pool that group normalisation removes; the conditional bonus is what
    /// changes the advantages). 0: off, the plain reward.
    pub improvement_bonus: f64,
    /// Updates of the supervised stage (PRM, DLCM, Seq2Slate, ReaRec, and the SFT of
    /// LatentR3 and STREAM-Rec), at `generator_lr`.
    pub supervised_steps: usize,
    /// Clicked lists per supervised update.
    pub supervised_batch: usize,
    /// Run the supervised stage before RL for every variant, not only for those whose
    /// paper has one (LatentR3, STREAM-Rec): an SFT warm start for EGLR. Off by default
    /// (spec §5 trains the generator with GRPO alone).
    pub supervised_warm_start: bool,
    /// Log a progress line every this many steps.
    pub progress_every: usize,
    /// Standard deviation of the embedding tables at initialisation (candle's default
    /// is 1).
    pub embedding_init_std: f64,
    /// Beyond the paper: teacher-forced updates toward the upstream order before RL (a
    /// warm start at the reference policy). 0: none.
    pub upstream_warm_start_steps: usize,
    /// Beyond the paper: teacher-forced updates toward the lists a beam search over the
    /// frozen evaluator finds (`search_warm_start_width` wide, by expected clicks),
    /// after any upstream warm start and before RL: the search distilled into the
    /// generator, which RL then refines (and the KL term keeps near). 0: none.
    pub search_warm_start_steps: usize,
    /// Beam width of the search warm start's teacher (1: greedy by marginal expected
    /// clicks).
    pub search_warm_start_width: usize,
    /// Training pools (a seeded sample) the search warm start's teacher searches once;
    /// its updates cycle over them.
    pub search_warm_start_pools: usize,
    /// Learning rate of the search warm start. The imitation loss sits on a plateau near
    /// 2 nats per item before it falls to about 0.9; at 0.001 EGLR's generator (whose
    /// reasoning tokens lengthen every sequence) left it after 1,400 of 1,500 updates in
    /// one seed and not at all in another, at 0.003 after about 1,000.
    pub search_warm_start_lr: f64,
    /// Beyond the paper: weight `beta` of the KL penalty of RL toward the reference
    /// policy (the generator as it was when RL started: after the upstream warm start,
    /// the upstream order's imitation). Each sampled list's reward becomes
    /// `R - beta * (log pi(l) - log pi_ref(l))`, so RL maximises `E[R] - beta KL(pi ||
    /// pi_ref)` and cannot wander far from the order it re-ranks to exploit the
    /// evaluator's errors. 0: off (spec §5).
    pub reference_kl: f64,
    /// Share of the training lists reserved for an independent judge evaluator (by a
    /// hash of request_id; `eglr train --judge` trains on exactly these, every other
    /// run never sees them). 0: none reserved.
    pub judge_share: f64,
    /// Share of items held out of training entirely (by a hash of item_id), to measure
    /// cold start: lists that displayed one are dropped and they leave the other pools
    /// (`train::Split::cold_item_share`). 0: none; a research setting, not for serving.
    pub cold_item_share: f64,
}

impl Default for TrainingConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            validation_share: 0.1,
            evaluator_lr: 1e-3,
            evaluator_weight_decay: 1e-4,
            evaluator_batch: 128,
            evaluator_epochs: 10,
            evaluator_patience: 2,
            exploration_weight: 1.0,
            generator_lr: 1e-3,
            grpo_pools_per_step: 16,
            group_size: 8,
            grpo_steps: 600,
            reward: Reward::Dcg,
            ppo_clip: 0.2,
            ppo_epochs: 2,
            rl: None,
            // DAPO's published defaults.
            dapo_clip_low: 0.2,
            dapo_clip_high: 0.28,
            dapo_sampling_rounds: 3,
            improvement_bonus: 0.0,
            supervised_steps: 300,
            supervised_batch: 64,
            supervised_warm_start: false,
            progress_every: 25,
            embedding_init_std: 1.0,
            upstream_warm_start_steps: 0,
            search_warm_start_steps: 0,
            search_warm_start_width: 1,
            search_warm_start_pools: 4096,
            search_warm_start_lr: 3e-3,
            reference_kl: 0.0,
            judge_share: 0.0,
            cold_item_share: 0.0,
        }
    }
}

impl TrainingConfig {
    pub(crate) fn validate(&self) -> Result<(), Problem> {
        for (key, v) in [
            ("training.validation_share", self.validation_share),
            ("training.judge_share", self.judge_share),
            ("training.cold_item_share", self.cold_item_share),
        ] {
            if !(0.0..1.0).contains(&v) {
                return Err((key, format!("{v} is not in [0, 1)")));
            }
        }
        for (key, v) in [
            ("training.evaluator_lr", self.evaluator_lr),
            ("training.generator_lr", self.generator_lr),
            ("training.embedding_init_std", self.embedding_init_std),
            ("training.search_warm_start_lr", self.search_warm_start_lr),
            ("training.exploration_weight", self.exploration_weight),
        ] {
            if !(v > 0.0 && v.is_finite()) {
                return Err((key, format!("{v} must be finite and > 0")));
            }
        }
        let decay = self.evaluator_weight_decay;
        if !(decay >= 0.0 && decay.is_finite()) {
            return Err((
                "training.evaluator_weight_decay",
                format!("{decay} must be finite and >= 0"),
            ));
        }
        for (key, v) in [
            ("training.evaluator_batch", self.evaluator_batch),
            ("training.grpo_pools_per_step", self.grpo_pools_per_step),
            ("training.ppo_epochs", self.ppo_epochs),
            ("training.dapo_sampling_rounds", self.dapo_sampling_rounds),
            ("training.supervised_batch", self.supervised_batch),
            ("training.progress_every", self.progress_every),
            (
                "training.search_warm_start_width",
                self.search_warm_start_width,
            ),
            (
                "training.search_warm_start_pools",
                self.search_warm_start_pools,
            ),
        ] {
            if v == 0 {
                return Err((key, "must be at least 1".into()));
            }
        }
        if !(self.ppo_clip > 0.0 && self.ppo_clip < 1.0) {
            return Err((
                "training.ppo_clip",
                format!("{} is not in (0, 1)", self.ppo_clip),
            ));
        }
        if !(self.dapo_clip_low > 0.0 && self.dapo_clip_low < 1.0) {
            return Err((
                "training.dapo_clip_low",
                format!("{} is not in (0, 1)", self.dapo_clip_low),
            ));
        }
        if !(self.dapo_clip_high >= self.dapo_clip_low && self.dapo_clip_high.is_finite()) {
            return Err((
                "training.dapo_clip_high",
                format!(
                    "{} must be finite and at least training.dapo_clip_low ({})",
                    self.dapo_clip_high, self.dapo_clip_low
                ),
            ));
        }
        if !(self.improvement_bonus >= 0.0 && self.improvement_bonus.is_finite()) {
            return Err((
                "training.improvement_bonus",
                format!("{} must be finite and >= 0", self.improvement_bonus),
            ));
        }
        if !(self.reference_kl >= 0.0 && self.reference_kl.is_finite()) {
            return Err((
                "training.reference_kl",
                format!("{} must be finite and >= 0", self.reference_kl),
            ));
        }
        if self.group_size < 2 {
            return Err((
                "training.group_size",
                "GRPO needs groups of at least 2 lists".into(),
            ));
        }
        Ok(())
    }
}

/// AdamW without weight decay over all of `vars` (the generator's optimiser).
fn adamw(vars: &VarMap, lr: f64) -> candle_core::Result<AdamW> {
    AdamW::new(
        vars.all_vars(),
        ParamsAdamW {
            lr,
            weight_decay: 0.0,
            ..Default::default()
        },
    )
}

/// Indices `0..n` drawn in passes, each pass in a fresh shuffle from the caller's RNG
/// (which the caller also samples with, so one seed fixes both).
struct Passes {
    order: Vec<usize>,
    cursor: usize,
}

impl Passes {
    fn new(n: usize, rng: &mut ChaCha8Rng) -> Self {
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(rng);
        Self { order, cursor: 0 }
    }

    fn next(&mut self, rng: &mut ChaCha8Rng) -> usize {
        if self.cursor == self.order.len() {
            self.order.shuffle(rng);
            self.cursor = 0;
        }
        self.cursor += 1;
        self.order[self.cursor - 1]
    }
}

/// Detached copies of all variables, by name.
pub fn snapshot(vars: &VarMap) -> candle_core::Result<HashMap<String, Tensor>> {
    let data = vars
        .data()
        .lock()
        .map_err(|_| candle_core::Error::Msg("variable map lock poisoned".into()))?;
    data.iter()
        .map(|(k, v)| Ok((k.clone(), v.as_tensor().detach().copy()?)))
        .collect()
}

/// Sets all variables from a snapshot.
pub fn restore(vars: &VarMap, snap: &HashMap<String, Tensor>) -> candle_core::Result<()> {
    let data = vars
        .data()
        .lock()
        .map_err(|_| candle_core::Error::Msg("variable map lock poisoned".into()))?;
    for (k, v) in data.iter() {
        if let Some(t) = snap.get(k) {
            v.set(t)?;
        }
    }
    Ok(())
}

/// [`seeded_init_scaled`] with candle's `N(0, 1)` embedding tables.
pub fn seeded_init(vars: &VarMap, seed: u64) -> candle_core::Result<()> {
    seeded_init_scaled(vars, seed, 1.0)
}

/// How one variable is initialised (the distributions candle uses, drawn from our RNG).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Init {
    /// The evaluator's `cls` token: `N(0, 0.02)`.
    Token,
    /// Embedding and position tables: `N(0, table_std^2)`.
    Table,
    /// GRU weights and biases `[3h, ..]`: `U(-1/sqrt(h), 1/sqrt(h))` as in PyTorch.
    Gru { hidden: usize },
    /// Linear weights `[out, in]`: Kaiming-normal `N(0, 2 / in)`.
    Kaiming { fan_in: usize },
    /// Linear biases: `U(-1/sqrt(fan_in), 1/sqrt(fan_in))`.
    LinearBias { fan_in: usize },
    /// Layer-norm scale (1) and shift (0).
    Const(f32),
}

impl Init {
    /// The rule for variable `name` of `shape`; `sibling` finds the shape of another
    /// variable of the same layer. A variable no rule names is an error, so a renamed
    /// or new layer cannot silently start from zeros.
    fn of(
        name: &str,
        shape: &[usize],
        sibling: impl Fn(&str) -> Option<Vec<usize>>,
    ) -> Result<Self, String> {
        let mut parts = name.rsplit('.');
        let last = parts.next().unwrap_or_default();
        let layer = parts.next().unwrap_or_default();
        let layer_norm = crate::model::LAYER_NORM_NAMES.contains(&layer);
        Ok(match last {
            "cls" => Init::Token,
            // The cascade evaluator's examination logits: every position starts alike.
            "examination" => Init::Const(0.0),
            // The cascade evaluator's bilinear maps `[fields, e, e]`, each a linear map
            // of a field's embedding.
            "pair" if shape.len() == 3 => Init::Kaiming { fan_in: shape[2] },
            // The logistic evaluator's weights start at zero, as a logistic regression's.
            _ if layer.starts_with("logit_") || last.starts_with("logit_") => Init::Const(0.0),
            "table" => Init::Table,
            "weight" if layer == "table" => Init::Table,
            _ if ["_ih_l", "_hh_l"].iter().any(|g| last.contains(g)) => Init::Gru {
                hidden: shape.first().copied().unwrap_or(0) / 3,
            },
            "weight" if layer_norm => Init::Const(1.0),
            "bias" if layer_norm => Init::Const(0.0),
            "weight" if shape.len() == 2 => Init::Kaiming { fan_in: shape[1] },
            "bias" => match sibling("weight") {
                Some(w) if w.len() == 2 => Init::LinearBias { fan_in: w[1] },
                _ => return Err(format!("bias {name} has no linear weight beside it")),
            },
            _ => {
                return Err(format!(
                    "no initialiser for variable {name} {shape:?}: name it after a known layer kind or add a rule to train::Init::of"
                ))
            }
        })
    }

    fn draw(self, n: usize, table_std: f64, rng: &mut rand_chacha::ChaCha8Rng) -> Vec<f32> {
        use rand::Rng;
        let normal = |rng: &mut rand_chacha::ChaCha8Rng, std: f64| -> Vec<f32> {
            (0..n)
                .map(|_| (std * crate::random::normal(rng)) as f32)
                .collect()
        };
        let uniform = |rng: &mut rand_chacha::ChaCha8Rng, fan_in: usize| -> Vec<f32> {
            let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
            (0..n)
                .map(|_| rng.random_range(-bound..bound) as f32)
                .collect()
        };
        match self {
            Init::Token => normal(rng, 0.02),
            Init::Table => normal(rng, table_std),
            Init::Gru { hidden: fan_in } | Init::LinearBias { fan_in } => uniform(rng, fan_in),
            Init::Kaiming { fan_in } => normal(rng, (2.0 / fan_in.max(1) as f64).sqrt()),
            Init::Const(value) => vec![value; n],
        }
    }
}

/// Re-draws every variable from a seeded RNG, with the distributions candle initialises
/// them with (candle's CPU RNG cannot be seeded, and training must be reproducible):
/// see [`Init`]. Embedding and position tables get `N(0, table_std^2)` (candle's default
/// is 1, which lets free id embeddings dominate the input before they have learnt
/// anything). A variable no rule of [`Init`] names is an error.
pub fn seeded_init_scaled(vars: &VarMap, seed: u64, table_std: f64) -> candle_core::Result<()> {
    use rand::SeedableRng;
    let data = vars
        .data()
        .lock()
        .map_err(|_| candle_core::Error::Msg("variable map lock poisoned".into()))?;
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    for name in names {
        let var = &data[name];
        let shape = var.dims().to_vec();
        let sibling = |suffix: &str| {
            let (layer, _) = name.rsplit_once('.')?;
            data.get(&format!("{layer}.{suffix}"))
                .map(|v| v.dims().to_vec())
        };
        let init = Init::of(name, &shape, sibling).map_err(candle_core::Error::Msg)?;
        let values = init.draw(shape.iter().product(), table_std, &mut rng);
        var.set(&Tensor::from_vec(values, shape, var.device())?)?;
    }
    Ok(())
}

/// What to train and where the bundle goes.
#[derive(Debug, Clone)]
pub struct TrainJob<'a> {
    pub data: &'a str,
    pub evaluator: EvaluatorConfig,
    pub generator: GeneratorConfig,
    pub training: TrainingConfig,
    pub features: &'a crate::features::FeatureSpec,
    pub list_len: usize,
    pub max_list_len: usize,
    /// Reuse this bundle's evaluator (and feature normaliser) instead of training one.
    pub evaluator_from: Option<&'a Path>,
    /// The training lists to learn from: `Model` for served models when a judge part
    /// is reserved, `Judge` for the judge.
    pub part: DataPart,
    /// Train the evaluator only; the bundle carries an untrained generator (judges, and
    /// the study's reference evaluators of other kinds).
    pub evaluator_only: bool,
    /// Early stopping of RL by an independent judge on validation pools.
    pub monitor: Option<JudgeMonitor<'a>>,
    pub out: &'a Path,
    pub version: String,
    pub git_revision: Option<String>,
}

/// The judge and oracle of [`RlMonitor`]; its pools are the run's validation lists.
#[derive(Clone, Copy)]
pub struct JudgeMonitor<'a> {
    pub judge: &'a Evaluator,
    /// The judge's feature encoder: where it differs from the run's (semantic ids), the
    /// validation pools are encoded again for the judge.
    pub judge_encoder: &'a FeatureEncoder,
    pub every: usize,
    pub oracle: Option<Oracle<'a>>,
}

impl std::fmt::Debug for JudgeMonitor<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JudgeMonitor")
            .field("every", &self.every)
            .finish()
    }
}

/// Validation pools a monitor scores at each checkpoint (the first ones).
const MONITOR_POOLS: usize = 500;

/// Reports of a training run.
#[derive(Debug, Clone, Serialize)]
pub struct TrainOutcome {
    pub train_lists: usize,
    pub validation_lists: usize,
    /// GR2's semantic ids, when the spec has them: what the tokenizer was fitted on and
    /// how unique its ids are.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub semantic_ids: Option<SemanticIdReport>,
    pub evaluator: Option<EvaluatorReport>,
    pub ranker: RankerReport,
}

/// The fitted tokenizer's figures (the codebooks themselves are in the bundle).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct SemanticIdReport {
    pub items: usize,
    /// Share of items whose content code is their own.
    pub content_uniqueness: f64,
    /// Share of items whose full id (with the disambiguating token) is their own.
    pub uniqueness: f64,
}

/// How the re-ranker's training stages went (each present when its recipe has it).
#[derive(Debug, Clone, Default, Serialize)]
pub struct RankerReport {
    pub supervised: Option<SupervisedReport>,
    pub upstream_warm_start: Option<SupervisedReport>,
    pub search_warm_start: Option<SupervisedReport>,
    pub rl: Option<RlReport>,
}

/// Trains `ranker` (variables `vars`) by `variant`'s recipe: the supervised stage on the
/// logged clicks of `examples`, then RL against the frozen `evaluator` on their pools.
#[allow(clippy::too_many_arguments)]
pub fn train_ranker(
    variant: Variant,
    ranker: &Ranker,
    vars: &VarMap,
    evaluator: &Evaluator,
    monitor: Option<&RlMonitor<'_>>,
    cfg: &TrainingConfig,
    examples: &[Example],
    enc: &FeatureEncoder,
    list_len: usize,
    device: &Device,
) -> Result<RankerReport, TrainError> {
    let recipe = Recipe {
        rl: variant.recipe().rl.map(|own| cfg.rl.unwrap_or(own)),
        ..variant.recipe()
    };
    let supervised = if recipe.supervised || cfg.supervised_warm_start {
        Some(train_supervised(
            ranker,
            vars,
            cfg,
            Target::Clicks,
            cfg.supervised_steps,
            examples,
            enc,
            device,
        )?)
    } else {
        None
    };
    let upstream_warm_start = match (recipe.rl, ranker.generator()) {
        (Some(_), Some(_)) if cfg.upstream_warm_start_steps > 0 => Some(train_supervised(
            ranker,
            vars,
            cfg,
            Target::Upstream(list_len),
            cfg.upstream_warm_start_steps,
            examples,
            enc,
            device,
        )?),
        _ => None,
    };
    let search_warm_start = match (recipe.rl, ranker.generator()) {
        (Some(_), Some(_)) if cfg.search_warm_start_steps > 0 => Some(search_warm_start(
            ranker, vars, evaluator, cfg, examples, enc, list_len, device,
        )?),
        _ => None,
    };
    let rl = match (recipe.rl, ranker.generator()) {
        (Some(method), Some(generator)) => {
            // The reference policy: a frozen copy of the generator as RL starts.
            let reference = if cfg.reference_kl > 0.0 {
                Some(frozen_copy(generator, vars, enc, device)?)
            } else {
                None
            };
            let kl = reference.as_ref().map(|r| (r, cfg.reference_kl));
            Some(train_rl(
                method, generator, vars, evaluator, kl, monitor, cfg, examples, enc, list_len,
                device,
            )?)
        }
        _ => None,
    };
    Ok(RankerReport {
        supervised,
        upstream_warm_start,
        search_warm_start,
        rl,
    })
}

/// The search warm start: the generator imitates the lists a beam search over the
/// evaluator builds on `cfg.search_warm_start_pools` pools drawn at random.
#[allow(clippy::too_many_arguments)]
fn search_warm_start(
    ranker: &Ranker,
    vars: &VarMap,
    evaluator: &Evaluator,
    cfg: &TrainingConfig,
    examples: &[Example],
    enc: &FeatureEncoder,
    list_len: usize,
    device: &Device,
) -> Result<SupervisedReport, TrainError> {
    let mut rng = <ChaCha8Rng as rand::SeedableRng>::seed_from_u64(cfg.seed ^ 0x5345_4152);
    let mut picked: Vec<usize> = (0..examples.len()).collect();
    picked.shuffle(&mut rng);
    picked.truncate(cfg.search_warm_start_pools);
    let pools: Vec<Example> = picked.iter().map(|&i| examples[i].clone()).collect();
    let lists = search_lists(
        evaluator,
        &pools,
        cfg.search_warm_start_width,
        list_len,
        enc,
        device,
    )?;
    let imitation = TrainingConfig {
        generator_lr: cfg.search_warm_start_lr,
        ..cfg.clone()
    };
    train_supervised(
        ranker,
        vars,
        &imitation,
        Target::Lists(&lists),
        cfg.search_warm_start_steps,
        &pools,
        enc,
        device,
    )
}

/// A frozen copy of `generator` (variables `vars`) as it is now.
fn frozen_copy(
    generator: &Generator,
    vars: &VarMap,
    enc: &FeatureEncoder,
    device: &Device,
) -> Result<Generator, TrainError> {
    Ok(Generator::new(
        generator.config(),
        enc,
        generator.max_list_len(),
        VarBuilder::from_tensors(snapshot(vars)?, DType::F32, device),
    )?)
}

/// Evaluator (trained or reused), then GRPO, then a bundle at `job.out`.
pub fn run(job: &TrainJob<'_>, device: &Device) -> Result<TrainOutcome, TrainError> {
    let reused = reused_evaluator(job, device)?;
    let split = Split {
        validation_share: job.training.validation_share,
        judge_share: job.training.judge_share,
        part: job.part,
        cold_item_share: job.training.cold_item_share,
    };
    let fitted = reused.as_ref().map(|r| r.encoder.clone());
    let dataset = Dataset::load(job.data, job.features, split, fitted)?;
    if dataset.train.is_empty() {
        return Err(TrainError::Empty(0));
    }
    tracing::info!(
        train = dataset.train.len(),
        validation = dataset.validation.len(),
        "data loaded"
    );
    let enc = &dataset.encoder;
    let evaluator_cfg = reused
        .as_ref()
        .map_or_else(|| job.evaluator.clone(), |r| r.meta.evaluator.clone());
    let (evaluator_vars, evaluator_report) =
        fit_or_load_evaluator(job, &evaluator_cfg, reused.as_ref(), &dataset, device)?;
    let frozen = Evaluator::new(
        &evaluator_cfg,
        enc,
        job.max_list_len,
        VarBuilder::from_tensors(snapshot(&evaluator_vars)?, DType::F32, device),
    )?;
    let generator_vars = VarMap::new();
    let ranker = Ranker::new(
        &job.generator,
        enc,
        job.max_list_len,
        VarBuilder::from_varmap(&generator_vars, DType::F32, device),
    )?;
    seeded_init_scaled(
        &generator_vars,
        job.training.seed ^ 0x6765_6e65,
        job.training.embedding_init_std,
    )?;
    let ranker_report = if job.evaluator_only {
        RankerReport::default()
    } else {
        fit_ranker(
            job,
            split,
            &dataset,
            &ranker,
            &generator_vars,
            &frozen,
            device,
        )?
    };
    let outcome = TrainOutcome {
        train_lists: dataset.train.len(),
        validation_lists: dataset.validation.len(),
        semantic_ids: enc.semantic_ids().map(|ids| SemanticIdReport {
            items: ids.items,
            content_uniqueness: ids.content_uniqueness,
            uniqueness: ids.uniqueness,
        }),
        evaluator: evaluator_report,
        ranker: ranker_report,
    };
    let meta = bundle_meta(job, enc, evaluator_cfg, &outcome);
    Bundle::save(job.out, &meta, &evaluator_vars, &generator_vars)?;
    Ok(outcome)
}

/// The bundle whose evaluator `job.evaluator_from` reuses: where it is, its metadata
/// and its fitted feature encoder.
struct Reused<'a> {
    path: &'a Path,
    meta: BundleMeta,
    encoder: FeatureEncoder,
}

/// Loads `job.evaluator_from`, refusing one whose feature spec differs from the job's.
fn reused_evaluator<'a>(
    job: &TrainJob<'a>,
    device: &Device,
) -> Result<Option<Reused<'a>>, TrainError> {
    let Some(path) = job.evaluator_from else {
        return Ok(None);
    };
    let bundle = Bundle::load(path, device)?;
    if bundle.meta.features != *job.features {
        return Err(TrainError::Mismatch {
            path: path.display().to_string(),
            message: "its feature spec differs from the pipeline's".into(),
        });
    }
    Ok(Some(Reused {
        path,
        meta: bundle.meta,
        encoder: bundle.encoder,
    }))
}

/// The evaluator's weights: the reused bundle's, or trained on the dataset (with its
/// report).
fn fit_or_load_evaluator(
    job: &TrainJob<'_>,
    cfg: &EvaluatorConfig,
    reused: Option<&Reused<'_>>,
    dataset: &Dataset,
    device: &Device,
) -> Result<(VarMap, Option<EvaluatorReport>), TrainError> {
    let enc = &dataset.encoder;
    let mut vars = VarMap::new();
    let evaluator = Evaluator::new(
        cfg,
        enc,
        job.max_list_len,
        VarBuilder::from_varmap(&vars, DType::F32, device),
    )?;
    seeded_init_scaled(&vars, job.training.seed, job.training.embedding_init_std)?;
    let report = match reused {
        Some(r) => {
            vars.load(r.path.join("evaluator.safetensors"))?;
            None
        }
        None => Some(train_evaluator(
            &evaluator,
            &vars,
            cfg,
            &job.training,
            &dataset.train,
            &dataset.validation,
            enc,
            device,
        )?),
    };
    Ok((vars, report))
}

/// Trains the ranker against the frozen evaluator by the variant's recipe, watched on
/// the validation pools when the job has a monitor (with the judge's own encoding of
/// them when its features differ).
fn fit_ranker(
    job: &TrainJob<'_>,
    split: Split,
    dataset: &Dataset,
    ranker: &Ranker,
    generator_vars: &VarMap,
    frozen: &Evaluator,
    device: &Device,
) -> Result<RankerReport, TrainError> {
    let enc = &dataset.encoder;
    let judge_validation = match job.monitor {
        Some(m) if m.judge_encoder.spec() != enc.spec() => {
            let spec = m.judge_encoder.spec();
            let fitted = Some(m.judge_encoder.clone());
            Some(Dataset::load(job.data, spec, split, fitted)?.validation)
        }
        _ => None,
    };
    let first = |pools: &'_ [Example]| pools.len().min(MONITOR_POOLS);
    let monitor = job.monitor.map(|m| RlMonitor {
        judge: m.judge,
        pools: &dataset.validation[..first(&dataset.validation)],
        judge_pools: judge_validation
            .as_deref()
            .map(|v| (&v[..first(v)], m.judge_encoder)),
        every: m.every,
        oracle: m.oracle,
    });
    train_ranker(
        job.generator.variant,
        ranker,
        generator_vars,
        frozen,
        monitor.as_ref(),
        &job.training,
        &dataset.train,
        enc,
        job.list_len,
        device,
    )
}

/// What `bundle.json` says of a trained bundle.
fn bundle_meta(
    job: &TrainJob<'_>,
    enc: &FeatureEncoder,
    evaluator: EvaluatorConfig,
    outcome: &TrainOutcome,
) -> BundleMeta {
    BundleMeta {
        format: BUNDLE_FORMAT,
        version: job.version.clone(),
        features: job.features.clone(),
        normaliser: enc.normaliser().clone(),
        semantic_ids: enc.semantic_ids().cloned(),
        evaluator,
        generator: job.generator.clone(),
        max_list_len: job.max_list_len,
        training: TrainingInfo {
            data: job.data.to_owned(),
            seed: job.training.seed,
            part: job.part,
            judge_share: job.training.judge_share,
            cold_item_share: job.training.cold_item_share,
            git_revision: job.git_revision.clone(),
            created_unix_ms: crate::clock::unix_millis(),
            metrics: serde_json::to_value(outcome).unwrap_or(serde_json::Value::Null),
        },
    }
}

#[cfg(test)]
mod baseline_tests;
#[cfg(test)]
mod tests;
