//! Rewards from the evaluator (spec §5) and their group normalisation: shared by GRPO
//! and PPO training, LAST's test-time update, offline evaluation and audits.

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use super::embedding::PoolTensors;
use super::evaluator::{Evaluator, ListScores};
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

/// `(R_i - mean(R)) / (std(R) + eps)` over the whole batch (LatentR3's batch-level
/// advantage).
pub fn batch_advantages(rewards: &[f32]) -> Vec<f32> {
    group_advantages(rewards, rewards.len())
}

/// GR2's conditional reward (see `training.improvement_bonus`): the gain
/// `R(l) - R(u)` of each list over the upstream order `u` of its pool, plus `bonus`
/// where the list is not the upstream order (`copies[i]` false) and the gain is
/// positive. A copy gets exactly 0.
pub fn conditional_rewards(
    rewards: &[f32],
    upstream: &[f32],
    copies: &[bool],
    bonus: f32,
) -> Vec<f32> {
    rewards
        .iter()
        .zip(upstream)
        .zip(copies)
        .map(|((&r, &u), &copy)| match (copy, r - u) {
            (true, _) => 0.0,
            (false, gain) if gain > 0.0 => gain + bonus,
            (false, gain) => gain,
        })
        .collect()
}

/// The consecutive groups of `group` rewards that carry a signal: those whose rewards
/// are not all equal (a group of equal rewards has zero advantages, DAPO's dynamic
/// sampling drops it).
pub fn informative_groups(rewards: &[f32], group: usize) -> Vec<usize> {
    rewards
        .chunks(group.max(1))
        .enumerate()
        .filter(|(_, g)| {
            let (lo, hi) = g
                .iter()
                .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &r| {
                    (lo.min(r), hi.max(r))
                });
            // Equal up to float noise of the rewards' own size.
            hi - lo > 1e-6 * hi.abs().max(lo.abs()).max(1.0)
        })
        .map(|(i, _)| i)
        .collect()
}

/// Evaluator rewards of decoded lists of `pools`.
pub fn rewards(
    evaluator: &Evaluator,
    pools: &PoolTensors,
    decoded: &Decoded,
    reward: Reward,
) -> candle_core::Result<Vec<f32>> {
    let (scores, lens) = score_decoded(evaluator, pools, decoded)?;
    list_values(&scores, &lens, reward)
}

/// The evaluator's click probability at each real position of decoded lists of `pools`.
pub fn click_probabilities(
    evaluator: &Evaluator,
    pools: &PoolTensors,
    decoded: &Decoded,
) -> candle_core::Result<Vec<Vec<f32>>> {
    let (scores, lens) = score_decoded(evaluator, pools, decoded)?;
    let yhat: Vec<Vec<f32>> = candle_nn::ops::sigmoid(&scores.click_logits)?.to_vec2()?;
    Ok(yhat
        .into_iter()
        .zip(lens)
        .map(|(mut y, l)| {
            y.truncate(l);
            y
        })
        .collect())
}

/// The evaluator's scores of decoded lists, with each list's length.
fn score_decoded(
    evaluator: &Evaluator,
    pools: &PoolTensors,
    decoded: &Decoded,
) -> candle_core::Result<(ListScores, Vec<usize>)> {
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
    let mask_t = Tensor::from_vec(mask, (b, l), device)?;
    let scores = evaluator.forward(pools, Some(&order), &mask_t)?;
    Ok((scores, orders.iter().map(Vec::len).collect()))
}

/// The `reward` of each scored list, of `lens[r]` real positions.
pub fn list_values(
    scores: &ListScores,
    lens: &[usize],
    reward: Reward,
) -> candle_core::Result<Vec<f32>> {
    let yhat = || -> candle_core::Result<Vec<Vec<f32>>> {
        candle_nn::ops::sigmoid(&scores.click_logits)?.to_vec2()
    };
    Ok(match reward {
        Reward::Dcg => yhat()?
            .iter()
            .zip(lens)
            .map(|(y, &l)| dcg_reward(&y[..l]) as f32)
            .collect(),
        Reward::Listwise => scores.list_logit.exp()?.to_vec1()?,
        Reward::Clicks => yhat()?
            .iter()
            .zip(lens)
            .map(|(y, &l)| y[..l].iter().sum())
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::{batch_advantages, conditional_rewards, group_advantages, informative_groups};

    /// LatentR3's batch-level advantage takes one baseline over all groups: a group
    /// that scores higher throughout gets positive advantages, unlike per group.
    #[test]
    fn batch_advantages_share_one_baseline_across_groups() {
        let rewards = [1.0f32, 2.0, 3.0, 4.0];
        let group = group_advantages(&rewards, 2);
        assert!(
            group[2] < 0.0,
            "per group, 3 is below its group's mean: {group:?}"
        );
        let batch = batch_advantages(&rewards);
        assert!(
            batch[2] > 0.0,
            "over the batch, 3 is above the mean: {batch:?}"
        );
        assert!(batch[0] < batch[1] && batch[1] < batch[2] && batch[2] < batch[3]);
        let mean: f32 = batch.iter().sum::<f32>() / 4.0;
        assert!(mean.abs() < 1e-6, "{batch:?}");
    }

    /// A copy of the upstream order earns 0 and never the bonus; a list that beats it
    /// earns its gain plus the bonus; a worse list its (negative) gain. Unlike the plain
    /// reward shifted by `R(u)`, this changes the advantages within a group.
    #[test]
    fn the_conditional_reward_pays_the_bonus_only_for_an_improvement() {
        let plain = [2.0f32, 2.5, 1.5, 2.0];
        let upstream = [2.0f32; 4];
        // The last list is not a copy, yet scores exactly as the upstream order.
        let copies = [true, false, false, false];
        let r = conditional_rewards(&plain, &upstream, &copies, 0.25);
        assert_eq!(r, vec![0.0, 0.75, -0.5, 0.0]);
        let shifted: Vec<f32> = plain.iter().map(|x| x - 2.0).collect();
        assert_eq!(group_advantages(&shifted, 4), group_advantages(&plain, 4));
        assert_ne!(group_advantages(&r, 4), group_advantages(&plain, 4));
    }

    #[test]
    fn groups_whose_rewards_are_all_equal_carry_no_signal() {
        let rewards = [1.0f32, 1.0, 1.0, 0.5, 1.0, 0.5, 3.0, 3.0, 3.0];
        assert_eq!(informative_groups(&rewards, 3), vec![1]);
        assert_eq!(informative_groups(&[0.0, 1e-9], 2), Vec::<usize>::new());
        assert_eq!(informative_groups(&[0.0, 1e-3], 2), vec![0]);
    }
}
