//! The supervised stage, on logged clicks: the score-and-sort baselines' list-wise
//! softmax losses (PRM, DLCM) and teacher-forced pointer training toward the clicked
//! items (Seq2Slate, ReaRec, and the SFT stage of LatentR3 and STREAM-Rec).

use std::time::Instant;

use candle_core::{Device, Tensor, D};
use candle_nn::{Optimizer, VarMap};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::{adamw, Passes, TrainError, TrainingConfig};
use crate::encoded::pool_tensors;
use crate::encoded::Example;
use crate::features::FeatureEncoder;
use crate::model::{
    beam_search, DecodeOptions, Evaluator, Generator, Pick, PoolTensors, Ranker, Reward, Scorer,
    ScorerKind, SearchObjective,
};

/// How the supervised stage went.
#[derive(Debug, Clone, Serialize)]
pub struct SupervisedReport {
    pub steps: usize,
    /// Mean loss per progress window, in order.
    pub loss_curve: Vec<f64>,
    pub seconds: f64,
}

/// What the supervised stage teaches.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    /// The logged clicks (the baselines' supervised stage and SFT).
    Clicks,
    /// The upstream order's first `L` items: a warm start toward the reference policy
    /// that the KL term of RL then keeps the generator near (generators only).
    Upstream(usize),
    /// Given lists, one per training example (aligned with them): the lists a search
    /// over the frozen evaluator found ([`search_lists`]), distilled into the generator
    /// (the imitation step of expert iteration). A pointer decoder trained by RL alone
    /// climbs the evaluator slowly from wherever it starts; imitating the search starts
    /// it near the evaluator's optimum (generators only).
    Lists(&'a [Vec<usize>]),
}

impl Target<'_> {
    fn name(&self) -> String {
        match self {
            Target::Clicks => "clicks".into(),
            Target::Upstream(len) => format!("upstream order, {len} items"),
            Target::Lists(_) => "searched lists".into(),
        }
    }
}

/// Runs `steps` updates of `ranker` toward `target`; with [`Target::Clicks`] only on
/// lists with at least one click (a list without one says nothing about which item
/// should come first); with [`Target::Lists`], one given list per example.
#[allow(clippy::too_many_arguments)]
pub fn train_supervised(
    ranker: &Ranker,
    vars: &VarMap,
    cfg: &TrainingConfig,
    target: Target<'_>,
    steps: usize,
    examples: &[Example],
    enc: &FeatureEncoder,
    device: &Device,
) -> Result<SupervisedReport, TrainError> {
    let clicked: Vec<&Example> = examples
        .iter()
        .filter(|e| !matches!(target, Target::Clicks) || e.clicks.contains(&true))
        .collect();
    if clicked.is_empty() {
        return Err(TrainError::Empty(0));
    }
    if let Target::Lists(lists) = target {
        if lists.len() != examples.len() {
            return Err(TrainError::Model(candle_core::Error::Msg(format!(
                "{} given lists for {} examples",
                lists.len(),
                examples.len()
            ))));
        }
    }
    let started = Instant::now();
    let mut opt = adamw(vars, cfg.generator_lr)?;
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x5346_5400);
    let mut passes = Passes::new(clicked.len(), &mut rng);
    let mut report = SupervisedReport {
        steps: 0,
        loss_curve: Vec::new(),
        seconds: 0.0,
    };
    let (mut window_loss, mut window_steps) = (0.0, 0usize);
    for step in 1..=steps {
        let picked: Vec<usize> = (0..cfg.supervised_batch.min(clicked.len()))
            .map(|_| passes.next(&mut rng))
            .collect();
        let batch: Vec<&Example> = picked.iter().map(|&i| clicked[i]).collect();
        // Given lists are aligned with `examples`, which a `Lists` target never filters.
        let lists: Vec<Vec<usize>>;
        let target = match target {
            Target::Lists(all) => {
                lists = picked.iter().map(|&i| all[i].clone()).collect();
                Target::Lists(&lists)
            }
            other => other,
        };
        let loss = supervised_loss(ranker, &batch, target, enc, device)?;
        opt.backward_step(&loss)?;
        window_loss += f64::from(loss.to_scalar::<f32>()?);
        window_steps += 1;
        report.steps = step;
        if step % cfg.progress_every == 0 || step == steps {
            let mean = window_loss / window_steps as f64;
            report.loss_curve.push(mean);
            tracing::info!(step, steps, loss = mean, "supervised ({})", target.name());
            (window_loss, window_steps) = (0.0, 0);
        }
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// The supervised loss of `ranker` on `batch` toward `target` (for clicks: lists with
/// at least one click).
pub fn supervised_loss(
    ranker: &Ranker,
    batch: &[&Example],
    target: Target<'_>,
    enc: &FeatureEncoder,
    device: &Device,
) -> candle_core::Result<Tensor> {
    let pools = pool_tensors(batch, enc, device)?;
    match (ranker, target) {
        (Ranker::Scorer(s), _) => scorer_loss(s, &pools, batch),
        (Ranker::Generator(g), Target::Clicks) => {
            let lares = g.config().variant.architecture().recurrent_core;
            pointer_loss(g, &pools, &clicked_targets(batch), lares)
        }
        (Ranker::Generator(g), Target::Upstream(len)) => {
            let targets: Vec<Vec<usize>> = batch
                .iter()
                .map(|e| (0..e.pool.lens[0].min(len)).collect())
                .collect();
            pointer_loss(g, &pools, &targets, false)
        }
        (Ranker::Generator(g), Target::Lists(lists)) => pointer_loss(g, &pools, lists, false),
    }
}

/// The list of `len` items a beam search of `width` over `evaluator` finds in each
/// example's pool (by expected clicks), scored `batch` pools at a time: the teacher of
/// [`Target::Lists`].
pub fn search_lists(
    evaluator: &Evaluator,
    examples: &[Example],
    width: usize,
    len: usize,
    enc: &FeatureEncoder,
    device: &Device,
) -> candle_core::Result<Vec<Vec<usize>>> {
    let started = Instant::now();
    let objective = SearchObjective::single(evaluator, Reward::Clicks);
    let mut lists = Vec::with_capacity(examples.len());
    for chunk in examples.chunks(256) {
        let refs: Vec<&Example> = chunk.iter().collect();
        let pools = pool_tensors(&refs, enc, device)?;
        let lens = vec![len; chunk.len()];
        lists.extend(beam_search(&objective, &pools, &lens, width)?.orders());
        tracing::info!(
            pools = lists.len(),
            of = examples.len(),
            lists_per_s = lists.len() as f64 / started.elapsed().as_secs_f64(),
            "searching the evaluator's lists"
        );
    }
    Ok(lists)
}

/// Each list's clicked items, in pool order (Seq2Slate's targets).
fn clicked_targets(batch: &[&Example]) -> Vec<Vec<usize>> {
    batch
        .iter()
        .map(|e| {
            let mut clicked: Vec<usize> = e
                .served
                .iter()
                .zip(&e.clicks)
                .filter(|(_, &c)| c)
                .map(|(&j, _)| j)
                .collect();
            clicked.sort_unstable();
            clicked
        })
        .collect()
}

/// Served items as a `[b, n]` mask and their clicks as `[b, n]` labels.
fn served_labels(
    batch: &[&Example],
    n: usize,
    device: &Device,
) -> candle_core::Result<(Tensor, Tensor)> {
    let mut served = vec![0f32; batch.len() * n];
    let mut labels = vec![0f32; batch.len() * n];
    for (r, e) in batch.iter().enumerate() {
        for (&j, &c) in e.served.iter().zip(&e.clicks) {
            served[r * n + j] = 1.0;
            labels[r * n + j] = f32::from(u8::from(c));
        }
    }
    Ok((
        Tensor::from_vec(served, (batch.len(), n), device)?,
        Tensor::from_vec(labels, (batch.len(), n), device)?,
    ))
}

/// List-wise softmax loss over the served items (the only ones with a label):
/// `-sum_i w_i log softmax(s)_i`. PRM weighs each click 1 (softmax log-loss); DLCM's
/// attention-rank loss uses the normalised gains `(2^y - 1) / sum(2^y - 1)`.
fn scorer_loss(
    scorer: &Scorer,
    pools: &PoolTensors,
    batch: &[&Example],
) -> candle_core::Result<Tensor> {
    let scores = scorer.forward(pools)?;
    let (b, n) = scores.dims2()?;
    let (served, labels) = served_labels(batch, n, scores.device())?;
    let log_p =
        candle_nn::ops::log_softmax(&crate::model::mask_scores(&scores, &served)?, D::Minus1)?;
    let weights = match scorer.kind() {
        ScorerKind::Prm => labels,
        // Binary clicks: 2^y - 1 = y.
        ScorerKind::Dlcm => labels.broadcast_div(&labels.sum_keepdim(1)?)?,
    };
    ((weights * log_p)?.sum_all()? / b as f64)?.neg()
}

/// The teacher-forced pointer loss toward `targets`: `-sum log p(target_t) / clicks`.
///
/// For LARES (a generator with a recurrent core) on clicks, its self-supervised
/// pre-training: the loss is averaged over every refinement step's encodings
/// (*step-level alignment*: each step of the trajectory must already rank the clicked
/// items), plus the *trajectory-level alignment* `mean_i (1 - cos(pool(T_i),
/// sg(pool(T_k))))` that pulls each step's pooled candidates toward where the
/// trajectory ends (`sg`: no gradient). Our reading of LARES's dual alignment for a
/// re-ranker (the paper aligns the reasoning steps of a sequence model; we have no
/// augmented views of a pool).
fn pointer_loss(
    generator: &Generator,
    pools: &PoolTensors,
    targets: &[Vec<usize>],
    align: bool,
) -> candle_core::Result<Tensor> {
    let lens: Vec<usize> = targets.iter().map(Vec::len).collect();
    let clicks = lens.iter().sum::<usize>().max(1) as f64;
    let nll = |encoded: &crate::model::PoolEncoding| -> candle_core::Result<Tensor> {
        let decoded = generator.decode(
            encoded,
            &lens,
            DecodeOptions {
                pick: Pick::Forced(targets),
                track_log_prob: true,
                use_cache: true,
            },
        )?;
        (decoded.tracked_log_prob()?.sum_all()? / clicks)?.neg()
    };
    if !align {
        return nll(&generator.encode(pools)?);
    }
    let steps = generator.encode_trajectory(pools)?;
    let Some(last) = steps.last() else {
        return Err(candle_core::Error::Msg("an empty trajectory".into()));
    };
    let k = steps.len() as f64;
    let mut step_level = nll(last)?;
    for s in &steps[..steps.len() - 1] {
        step_level = (step_level + nll(s)?)?;
    }
    let pooled = |h: &Tensor| -> candle_core::Result<Tensor> {
        let m = pools.mask.unsqueeze(2)?;
        h.broadcast_mul(&m)?
            .sum(1)?
            .broadcast_div(&m.sum(1)?.clamp(1.0, f64::MAX)?)
    };
    let end = pooled(&last.h)?.detach();
    let mut trajectory = Tensor::zeros((), end.dtype(), end.device())?;
    for s in &steps[..steps.len() - 1] {
        let p = pooled(&s.h)?;
        let cos = ((&p * &end)?.sum(1)?
            / ((p.sqr()?.sum(1)?.sqrt()? * end.sqr()?.sum(1)?.sqrt()?)? + 1e-8)?)?;
        trajectory = (trajectory + (1.0 - cos)?.mean_all()?)?;
    }
    (step_level / k)? + (trajectory / k)?
}
