//! Stage 2 (spec §5): GRPO for the generator against the frozen evaluator, fully
//! on-policy. For each pool, `G` lists are sampled; each list's reward comes from the
//! evaluator re-scoring the generated list; advantages are normalised within the group;
//! the loss is `-mean_g(A_g * sum_t log p(l_t^g)) / L`.

use std::time::Instant;

use candle_core::{Device, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarMap};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::data::Example;
use super::{TrainError, TrainingConfig};
use crate::features::FeatureEncoder;
use crate::metrics::dcg_reward;
use crate::model::{DecodeOptions, Decoded, Evaluator, Generator, PoolTensors, Selection};

/// What the generator is rewarded with (spec §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reward {
    /// `sum_t yhat_t / log2(t + 1)` (eq. 18).
    Dcg,
    /// The list-wise head's predicted utility `vhat = exp(z)`.
    Listwise,
}

/// `(R_g - mean(R)) / (std(R) + eps)` within each consecutive group of `group` rewards.
pub fn group_advantages(rewards: &[f32], group: usize) -> Vec<f32> {
    const EPS: f32 = 1e-6;
    rewards
        .chunks(group.max(1))
        .flat_map(|g| {
            let n = g.len() as f32;
            let mean = g.iter().sum::<f32>() / n;
            let std = (g.iter().map(|r| (r - mean).powi(2)).sum::<f32>() / n).sqrt();
            g.iter().map(move |r| (r - mean) / (std + EPS))
        })
        .collect()
}

/// Pools of `examples` (initial order) as tensors.
pub fn pool_tensors(
    examples: &[&Example],
    enc: &FeatureEncoder,
    device: &Device,
) -> candle_core::Result<PoolTensors> {
    let parts: Vec<_> = examples.iter().map(|e| &e.pool).collect();
    PoolTensors::new(&enc.stack(&parts), enc, device)
}

/// Evaluator rewards of decoded lists of `pools`.
pub fn rewards(
    evaluator: &Evaluator,
    pools: &PoolTensors,
    decoded: &Decoded,
    reward: Reward,
) -> candle_core::Result<Vec<f32>> {
    let orders = decoded.orders();
    let l = orders.iter().map(Vec::len).max().unwrap_or(0).max(1);
    let b = orders.len();
    let mut index = vec![0u32; b * l];
    let mut mask = vec![0f32; b * l];
    for (r, order) in orders.iter().enumerate() {
        for (t, &j) in order.iter().enumerate() {
            index[r * l + t] = j as u32;
            mask[r * l + t] = 1.0;
        }
    }
    let device = pools.mask.device();
    let order = Tensor::from_vec(index, (b, l), device)?;
    let mask_t = Tensor::from_vec(mask.clone(), (b, l), device)?;
    let scores = evaluator.forward(pools, Some(&order), &mask_t)?;
    Ok(match reward {
        Reward::Dcg => {
            let yhat: Vec<Vec<f32>> = candle_nn::ops::sigmoid(&scores.click_logits)?.to_vec2()?;
            yhat.iter()
                .zip(&orders)
                .map(|(y, o)| dcg_reward(&y[..o.len()]) as f32)
                .collect()
        }
        Reward::Listwise => scores.list_logit.exp()?.to_vec1()?,
    })
}

/// How GRPO went: the mean reward of the sampled lists over training.
#[derive(Debug, Clone, Serialize)]
pub struct GrpoReport {
    pub steps: usize,
    /// Mean sampled-list reward per progress window, in order.
    pub reward_curve: Vec<f64>,
    pub reasoning_steps_per_list: f64,
    pub seconds: f64,
}

/// Runs `cfg.grpo_steps` updates of `generator` (variables `vars`).
#[allow(clippy::too_many_arguments)]
pub fn train_grpo(
    generator: &Generator,
    vars: &VarMap,
    evaluator: &Evaluator,
    cfg: &TrainingConfig,
    pools: &[Example],
    enc: &FeatureEncoder,
    list_len: usize,
    device: &Device,
) -> Result<GrpoReport, TrainError> {
    if pools.is_empty() {
        return Err(TrainError::Empty(0));
    }
    let started = Instant::now();
    let mut opt = AdamW::new(
        vars.all_vars(),
        ParamsAdamW {
            lr: cfg.generator_lr,
            weight_decay: 0.0,
            ..Default::default()
        },
    )?;
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x4752_504f);
    let mut order: Vec<usize> = (0..pools.len()).collect();
    order.shuffle(&mut rng);
    let mut cursor = 0;
    let g = cfg.group_size;
    let mut report = GrpoReport {
        steps: 0,
        reward_curve: Vec::new(),
        reasoning_steps_per_list: 0.0,
        seconds: 0.0,
    };
    let (mut window_reward, mut window_reasoning, mut window_entropy, mut window_lists) =
        (0.0, 0.0, 0.0, 0usize);
    for step in 1..=cfg.grpo_steps {
        let mut batch: Vec<&Example> = Vec::with_capacity(cfg.grpo_pools_per_step * g);
        for _ in 0..cfg.grpo_pools_per_step {
            if cursor == order.len() {
                order.shuffle(&mut rng);
                cursor = 0;
            }
            let e = &pools[order[cursor]];
            cursor += 1;
            batch.extend(std::iter::repeat_n(e, g));
        }
        let pt = pool_tensors(&batch, enc, device)?;
        let encoded = generator.encode(&pt)?;
        let lens = vec![list_len; batch.len()];
        let decoded = generator.decode(
            &encoded,
            &lens,
            DecodeOptions {
                selection: Selection::Sample(&mut rng),
                track_log_prob: true,
                use_cache: true,
            },
        )?;
        let r = rewards(evaluator, &pt, &decoded, cfg.reward)?;
        let adv = group_advantages(&r, g);
        let log_prob = decoded
            .log_prob
            .as_ref()
            .ok_or(TrainError::Internal("decode returned no log-probabilities"))?;
        let adv = Tensor::from_vec(adv, batch.len(), device)?;
        let loss = ((adv * log_prob)?.mean_all()?.neg()? / list_len as f64)?;
        opt.backward_step(&loss)?;

        window_reward += r.iter().map(|&x| f64::from(x)).sum::<f64>();
        for list in &decoded.lists {
            window_reasoning += list
                .iter()
                .map(|p| f64::from(p.reasoning_steps))
                .sum::<f64>();
            window_entropy += list.iter().map(|p| f64::from(p.entropy_after)).sum::<f64>()
                / list.len().max(1) as f64;
        }
        window_lists += batch.len();
        report.steps = step;
        if step % cfg.progress_every == 0 || step == cfg.grpo_steps {
            let n = window_lists.max(1) as f64;
            report.reward_curve.push(window_reward / n);
            report.reasoning_steps_per_list = window_reasoning / n;
            tracing::info!(
                step,
                steps = cfg.grpo_steps,
                reward = window_reward / n,
                entropy = window_entropy / n,
                reasoning_steps_per_list = window_reasoning / n,
                lists_per_s = (step * batch.len()) as f64 / started.elapsed().as_secs_f64(),
                "grpo"
            );
            (
                window_reward,
                window_reasoning,
                window_entropy,
                window_lists,
            ) = (0.0, 0.0, 0.0, 0);
        }
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}
