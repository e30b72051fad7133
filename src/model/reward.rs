//! Rewards from the evaluator (spec §5) and their group normalisation: shared by GRPO
//! and PPO training, LAST's test-time update, offline evaluation and audits.

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use super::embedding::PoolTensors;
use super::evaluator::Evaluator;
use super::generator::Decoded;
use crate::ranking_metrics::dcg_reward;

/// What the generator is rewarded with (spec §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reward {
    /// `sum_t yhat_t / log2(t + 1)` (eq. 18).
    Dcg,
    /// The list-wise head's predicted utility `vhat = exp(z)`.
    Listwise,
    /// Beyond the paper: the evaluator's expected clicks `sum_t yhat_t`. The click head
    /// has learnt each position's examination from the logs, so the DCG discount of
    /// eq. 18 counts position twice; this is the quantity the simulator's oracle and a
    /// clicks-per-list KPI measure.
    Clicks,
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
        Reward::Clicks => {
            let yhat: Vec<Vec<f32>> = candle_nn::ops::sigmoid(&scores.click_logits)?.to_vec2()?;
            yhat.iter()
                .zip(&orders)
                .map(|(y, o)| y[..o.len()].iter().sum())
                .collect()
        }
    })
}
