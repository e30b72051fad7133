//! Stage 1 (spec §5): train the evaluator on logged lists, model selection on the
//! validation split (early stopping on its loss).

use std::time::Instant;

use candle_core::{Device, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarMap};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::{restore, snapshot, TrainError, TrainingConfig};
use crate::encoded::Example;
use crate::features::FeatureEncoder;
use crate::model::{evaluator_loss, EpochCriterion, Evaluator, EvaluatorConfig, PoolTensors};

/// Displayed lists of `examples` as tensors: pools in served order, clicks, utilities.
#[derive(Debug)]
pub struct ListBatch {
    pub pools: PoolTensors,
    pub clicks: Tensor,
    pub utility: Tensor,
}

impl ListBatch {
    pub fn new(
        examples: &[&Example],
        enc: &FeatureEncoder,
        device: &Device,
    ) -> Result<Self, TrainError> {
        let displayed: Vec<_> = examples.iter().map(|e| e.displayed()).collect();
        let stacked = enc.stack(&displayed.iter().collect::<Vec<_>>());
        let l = stacked.max_items;
        let mut clicks = vec![0f32; examples.len() * l];
        for (i, e) in examples.iter().enumerate() {
            for (t, &c) in e.clicks.iter().enumerate() {
                clicks[i * l + t] = f32::from(u8::from(c));
            }
        }
        let utility: Vec<f32> = examples.iter().map(|e| e.utility).collect();
        Ok(Self {
            pools: PoolTensors::new(&stacked, enc, device)?,
            clicks: Tensor::from_vec(clicks, (examples.len(), l), device)?,
            utility: Tensor::from_vec(utility, examples.len(), device)?,
        })
    }
}

/// How evaluator training went.
#[derive(Debug, Clone, Serialize)]
pub struct EvaluatorReport {
    pub epochs: usize,
    pub best_epoch: usize,
    pub train_loss: f64,
    pub validation_loss: f64,
    /// Click log-loss and AUC of the point-wise head on validation positions.
    pub validation_logloss: f64,
    pub validation_auc: f64,
    /// Click log-loss on the validation split's exploration lists.
    pub validation_exploration_logloss: f64,
    pub seconds: f64,
}

/// An evaluator's figures on held-out lists.
#[derive(Debug, Clone, Copy)]
pub struct Validation {
    /// The training loss (spec eq. 15-17).
    pub loss: f64,
    /// Click log-loss and AUC of the point-wise head over every position.
    pub logloss: f64,
    pub auc: f64,
    /// Click log-loss on the exploration lists only (NaN without any).
    pub exploration_logloss: f64,
}

impl Validation {
    /// The figure `selection` minimises.
    fn criterion(&self, selection: EpochCriterion) -> f64 {
        match selection {
            EpochCriterion::ExplorationLogloss if self.exploration_logloss.is_finite() => {
                self.exploration_logloss
            }
            _ => self.loss,
        }
    }
}

fn logloss(scored: &[(f32, bool)]) -> f64 {
    scored
        .iter()
        .map(|&(z, c)| {
            let p = (1.0 / (1.0 + (-f64::from(z)).exp())).clamp(1e-7, 1.0 - 1e-7);
            if c {
                -p.ln()
            } else {
                -(1.0 - p).ln()
            }
        })
        .sum::<f64>()
        / scored.len() as f64
}

/// Validation loss, click log-loss and AUC, and the log-loss on exploration lists.
pub fn validation_scores(
    model: &Evaluator,
    cfg: &EvaluatorConfig,
    examples: &[Example],
    enc: &FeatureEncoder,
    device: &Device,
) -> Result<Validation, TrainError> {
    let mut loss = 0.0;
    let mut batches = 0usize;
    let mut scored: Vec<(f32, bool)> = Vec::new();
    let mut exploration: Vec<(f32, bool)> = Vec::new();
    for chunk in examples.chunks(256) {
        let refs: Vec<&Example> = chunk.iter().collect();
        let b = ListBatch::new(&refs, enc, device)?;
        let out = model.forward(&b.pools, None, &b.pools.mask)?;
        loss += evaluator_loss(&out, &b.clicks, &b.pools.mask, &b.utility, cfg.wlr_weight)?
            .to_scalar::<f32>()? as f64;
        batches += 1;
        let logits: Vec<Vec<f32>> = out.click_logits.to_vec2()?;
        for (e, row) in chunk.iter().zip(logits) {
            let pairs = e.clicks.iter().zip(row).map(|(&c, z)| (z, c));
            if e.exploration {
                exploration.extend(pairs.clone());
            }
            scored.extend(pairs);
        }
    }
    Ok(Validation {
        loss: loss / batches.max(1) as f64,
        logloss: logloss(&scored),
        exploration_logloss: logloss(&exploration),
        auc: auc(&mut scored),
    })
}

/// How well an evaluator predicts the clicks of one set of displayed items.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, serde::Deserialize)]
pub struct ClickFit {
    /// Displayed items scored.
    pub items: usize,
    pub clicks: usize,
    pub logloss: f64,
    pub auc: f64,
}

impl ClickFit {
    fn of(scored: &mut [(f32, bool)]) -> Self {
        Self {
            items: scored.len(),
            clicks: scored.iter().filter(|s| s.1).count(),
            logloss: logloss(scored),
            auc: auc(scored),
        }
    }
}

/// Cold start where ids matter most: the evaluator's click log-loss and AUC on the
/// displayed items of `examples`, `[warm, cold]` by whether the item was held out of
/// training (`training.cold_item_share`, [`crate::encoded::is_cold_item`]).
pub fn click_fit_by_item(
    model: &Evaluator,
    examples: &[Example],
    enc: &FeatureEncoder,
    cold_share: f64,
    device: &Device,
) -> Result<[ClickFit; 2], TrainError> {
    let mut scored: [Vec<(f32, bool)>; 2] = [Vec::new(), Vec::new()];
    for chunk in examples.chunks(256) {
        let refs: Vec<&Example> = chunk.iter().collect();
        let b = ListBatch::new(&refs, enc, device)?;
        let out = model.forward(&b.pools, None, &b.pools.mask)?;
        let logits: Vec<Vec<f32>> = out.click_logits.to_vec2()?;
        for (e, row) in chunk.iter().zip(logits) {
            for ((&c, z), &j) in e.clicks.iter().zip(row).zip(&e.served) {
                let cold = e
                    .item_ids
                    .get(j)
                    .is_some_and(|id| crate::encoded::is_cold_item(id, cold_share));
                scored[usize::from(cold)].push((z, c));
            }
        }
    }
    let [mut warm, mut cold] = scored;
    Ok([ClickFit::of(&mut warm), ClickFit::of(&mut cold)])
}

/// Area under the ROC curve of scores against binary labels (ties count half).
pub fn auc(scored: &mut [(f32, bool)]) -> f64 {
    scored.sort_by(|a, b| a.0.total_cmp(&b.0));
    let positives = scored.iter().filter(|s| s.1).count() as f64;
    let negatives = scored.len() as f64 - positives;
    if positives == 0.0 || negatives == 0.0 {
        return 0.5;
    }
    // Rank-sum with average ranks for ties.
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < scored.len() {
        let mut j = i;
        while j < scored.len() && scored[j].0 == scored[i].0 {
            j += 1;
        }
        let avg_rank = (i + j + 1) as f64 / 2.0;
        rank_sum += avg_rank * scored[i..j].iter().filter(|s| s.1).count() as f64;
        i = j;
    }
    (rank_sum - positives * (positives + 1.0) / 2.0) / (positives * negatives)
}

/// The loss's position weights: the real positions of `mask [b, l]`, an exploration
/// list's `weight` times (the click term averages over these weights).
fn exploration_weighted(
    mask: &Tensor,
    lists: &[&Example],
    weight: f64,
) -> candle_core::Result<Tensor> {
    if weight == 1.0 {
        return Ok(mask.clone());
    }
    let w: Vec<f32> = lists
        .iter()
        .map(|e| if e.exploration { weight as f32 } else { 1.0 })
        .collect();
    let w = Tensor::from_vec(w, (lists.len(), 1), mask.device())?;
    mask.broadcast_mul(&w)
}

/// Trains `model` (whose variables are `vars`) and leaves it at its best epoch.
#[allow(clippy::too_many_arguments)]
pub fn train_evaluator(
    model: &Evaluator,
    vars: &VarMap,
    cfg: &EvaluatorConfig,
    train: &TrainingConfig,
    train_set: &[Example],
    validation: &[Example],
    enc: &FeatureEncoder,
    device: &Device,
) -> Result<EvaluatorReport, TrainError> {
    let started = Instant::now();
    let mut opt = AdamW::new(
        vars.all_vars(),
        ParamsAdamW {
            lr: train.evaluator_lr,
            weight_decay: train.evaluator_weight_decay,
            ..Default::default()
        },
    )?;
    let mut rng = ChaCha8Rng::seed_from_u64(train.seed);
    let mut order: Vec<usize> = (0..train_set.len()).collect();
    let mut best = (f64::INFINITY, 0usize, snapshot(vars)?);
    let mut report = EvaluatorReport {
        epochs: 0,
        best_epoch: 0,
        train_loss: 0.0,
        validation_loss: 0.0,
        validation_logloss: 0.0,
        validation_auc: 0.5,
        validation_exploration_logloss: f64::NAN,
        seconds: 0.0,
    };
    for epoch in 1..=train.evaluator_epochs {
        order.shuffle(&mut rng);
        let mut total = 0.0;
        let mut steps = 0usize;
        for chunk in order.chunks(train.evaluator_batch) {
            let refs: Vec<&Example> = chunk.iter().map(|&i| &train_set[i]).collect();
            let b = ListBatch::new(&refs, enc, device)?;
            let out = model.forward(&b.pools, None, &b.pools.mask)?;
            let weighted = exploration_weighted(&b.pools.mask, &refs, train.exploration_weight)?;
            let loss = evaluator_loss(&out, &b.clicks, &weighted, &b.utility, cfg.wlr_weight)?;
            opt.backward_step(&loss)?;
            total += loss.to_scalar::<f32>()? as f64;
            steps += 1;
        }
        let train_loss = total / steps.max(1) as f64;
        let v = if validation.is_empty() {
            Validation {
                loss: train_loss,
                logloss: f64::NAN,
                auc: f64::NAN,
                exploration_logloss: f64::NAN,
            }
        } else {
            validation_scores(model, cfg, validation, enc, device)?
        };
        let criterion = v.criterion(cfg.selection);
        report.epochs = epoch;
        tracing::info!(
            epoch,
            train_loss,
            val_loss = v.loss,
            val_logloss = v.logloss,
            val_exploration_logloss = v.exploration_logloss,
            val_auc = v.auc,
            lists_per_s = (train_set.len() * epoch) as f64 / started.elapsed().as_secs_f64(),
            "evaluator"
        );
        if criterion < best.0 {
            best = (criterion, epoch, snapshot(vars)?);
            report.train_loss = train_loss;
            report.validation_loss = v.loss;
            report.validation_logloss = v.logloss;
            report.validation_exploration_logloss = v.exploration_logloss;
            report.validation_auc = v.auc;
            report.best_epoch = epoch;
        } else if epoch >= best.1 + train.evaluator_patience {
            tracing::info!(best_epoch = best.1, "evaluator: early stop");
            break;
        }
    }
    restore(vars, &best.2)?;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}
