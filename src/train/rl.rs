//! Stage 2 (spec §5): reinforcement learning of the generator against the frozen
//! evaluator. For each pool, `G` lists are sampled; each list's reward comes from the
//! evaluator re-scoring the generated list; advantages are normalised within the group.
//! GRPO (EGLR) takes one on-policy step on `-mean_g(A_g * sum_t log p(l_t^g)) / L`;
//! PPO (EG-Rerank) re-scores the same lists for `ppo_epochs` steps on the clipped
//! surrogate `-mean_g(min(rho_g A_g, clip(rho_g, 1 - eps, 1 + eps) A_g)) / L` with the
//! per-list ratio `rho_g = p_new(list) / p_old(list)`.

use std::time::Instant;

use candle_core::{Device, Tensor};
use candle_nn::{Optimizer, VarMap};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::data::Example;
use super::{adamw, Passes, TrainError, TrainingConfig};
use crate::features::FeatureEncoder;
use crate::model::{
    group_advantages, rewards, DecodeOptions, EncodedPool, Evaluator, Generator, PoolTensors,
    Reward, Rl, Selection,
};

/// Pools of `examples` (initial order) as tensors.
pub fn pool_tensors(
    examples: &[&Example],
    enc: &FeatureEncoder,
    device: &Device,
) -> candle_core::Result<PoolTensors> {
    let parts: Vec<_> = examples.iter().map(|e| &e.pool).collect();
    PoolTensors::new(&enc.stack(&parts), enc, device)
}

/// How RL went: the mean reward of the sampled lists over training.
#[derive(Debug, Clone, Serialize)]
pub struct RlReport {
    pub steps: usize,
    /// Mean sampled-list reward per progress window, in order.
    pub reward_curve: Vec<f64>,
    pub reasoning_steps_per_list: f64,
    pub seconds: f64,
    /// With a monitor: the checkpoints' scores on validation pools (step 0 is the
    /// policy RL started from) and the step the generator was left at.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub curve: Vec<CurvePoint>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub best_step: Option<usize>,
}

/// True expected clicks of a list (indices into the example's pool), when known.
pub type Oracle<'a> = &'a dyn Fn(&Example, &[usize]) -> Option<f64>;

/// Watches RL on validation pools with an independent judge (issue 12): every `every`
/// steps the generator's greedy lists are scored by the evaluator it is trained
/// against, by the judge and, on simulated data, by the oracle; training ends at the
/// checkpoint the judge scores highest (early stopping by the judge), so
/// over-optimisation of the evaluator's errors shows in the curve and is not served.
#[derive(Clone, Copy)]
pub struct RlMonitor<'a> {
    pub judge: &'a Evaluator,
    pub pools: &'a [Example],
    pub every: usize,
    pub oracle: Option<Oracle<'a>>,
}

impl std::fmt::Debug for RlMonitor<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RlMonitor")
            .field("pools", &self.pools.len())
            .field("every", &self.every)
            .field("oracle", &self.oracle.is_some())
            .finish()
    }
}

/// Mean expected clicks of the greedy lists at one checkpoint.
#[derive(Debug, Clone, Copy, Serialize, serde::Deserialize, PartialEq)]
pub struct CurvePoint {
    pub step: usize,
    /// By the evaluator the generator is trained against.
    pub own: f64,
    pub judge: f64,
    pub oracle: Option<f64>,
}

impl RlMonitor<'_> {
    fn checkpoint(
        &self,
        step: usize,
        generator: &Generator,
        evaluator: &Evaluator,
        enc: &FeatureEncoder,
        list_len: usize,
        device: &Device,
    ) -> Result<CurvePoint, TrainError> {
        let (mut own, mut judge, mut oracle, mut n) = (0.0, 0.0, Some(0.0), 0usize);
        for chunk in self.pools.chunks(256) {
            let refs: Vec<&Example> = chunk.iter().collect();
            let pt = pool_tensors(&refs, enc, device)?;
            let lens = vec![list_len; chunk.len()];
            let decoded =
                generator.decode(&generator.encode(&pt)?, &lens, DecodeOptions::greedy())?;
            let sum = |xs: Vec<f32>| xs.iter().map(|&x| f64::from(x)).sum::<f64>();
            own += sum(rewards(evaluator, &pt, &decoded, Reward::Clicks)?);
            judge += sum(rewards(self.judge, &pt, &decoded, Reward::Clicks)?);
            for (e, order) in chunk.iter().zip(decoded.orders()) {
                oracle = match (oracle, self.oracle.and_then(|f| f(e, &order))) {
                    (Some(o), Some(x)) => Some(o + x),
                    _ => None,
                };
            }
            n += chunk.len();
        }
        let n = n.max(1) as f64;
        let point = CurvePoint {
            step,
            own: own / n,
            judge: judge / n,
            oracle: oracle.map(|o| o / n),
        };
        tracing::info!(
            step,
            own = point.own,
            judge = point.judge,
            oracle = point.oracle,
            "rl checkpoint (validation pools)"
        );
        Ok(point)
    }
}

/// Runs `cfg.grpo_steps` batches of `generator` (variables `vars`) with `method`;
/// with `reference = (pi_ref, beta)` each reward is shaped by the KL penalty
/// ([`kl_shaped`]).
#[allow(clippy::too_many_arguments)]
pub fn train_rl(
    method: Rl,
    generator: &Generator,
    vars: &VarMap,
    evaluator: &Evaluator,
    reference: Option<(&Generator, f64)>,
    monitor: Option<&RlMonitor<'_>>,
    cfg: &TrainingConfig,
    pools: &[Example],
    enc: &FeatureEncoder,
    list_len: usize,
    device: &Device,
) -> Result<RlReport, TrainError> {
    if pools.is_empty() {
        return Err(TrainError::Empty(0));
    }
    let started = Instant::now();
    let mut opt = adamw(vars, cfg.generator_lr)?;
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x4752_504f);
    let mut passes = Passes::new(pools.len(), &mut rng);
    let g = cfg.group_size;
    let mut report = RlReport {
        steps: 0,
        reward_curve: Vec::new(),
        reasoning_steps_per_list: 0.0,
        seconds: 0.0,
        curve: Vec::new(),
        best_step: None,
    };
    // The best checkpoint by the judge: (judge score, step, weights).
    let mut best: Option<(f64, usize, std::collections::HashMap<String, Tensor>)> = None;
    let mut watch = |step: usize, report: &mut RlReport| -> Result<(), TrainError> {
        let Some(m) = monitor else { return Ok(()) };
        let point = m.checkpoint(step, generator, evaluator, enc, list_len, device)?;
        report.curve.push(point);
        if best.as_ref().is_none_or(|b| point.judge > b.0) {
            best = Some((point.judge, step, super::snapshot(vars)?));
        }
        Ok(())
    };
    watch(0, &mut report)?;
    let (mut window_reward, mut window_reasoning, mut window_entropy, mut window_lists) =
        (0.0, 0.0, 0.0, 0usize);
    let mut window_kl = 0.0;
    for step in 1..=cfg.grpo_steps {
        let mut batch: Vec<&Example> = Vec::with_capacity(cfg.grpo_pools_per_step * g);
        for _ in 0..cfg.grpo_pools_per_step {
            let e = &pools[passes.next(&mut rng)];
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
        let log_prob = decoded.tracked_log_prob()?;
        let shaped = match reference {
            Some((pi_ref, beta)) => {
                let ratio = log_ratio(log_prob, pi_ref, &pt, &decoded.orders())?;
                window_kl += ratio.iter().map(|&x| f64::from(x)).sum::<f64>();
                kl_shaped(&r, &ratio, beta)
            }
            None => r.clone(),
        };
        let adv = group_advantages(&shaped, g);
        let adv = Tensor::from_vec(adv, batch.len(), device)?;
        match method {
            Rl::Grpo => {
                let loss = ((adv * log_prob)?.mean_all()?.neg()? / list_len as f64)?;
                opt.backward_step(&loss)?;
            }
            Rl::Ppo => {
                let old = log_prob.detach();
                let orders = decoded.orders();
                // The first epoch's policy is the sampling one: its graph is reused.
                opt.backward_step(&ppo_loss(log_prob, &old, &adv, cfg.ppo_clip, list_len)?)?;
                for _ in 1..cfg.ppo_epochs {
                    let new = rescore(generator, &pt, &orders)?;
                    opt.backward_step(&ppo_loss(&new, &old, &adv, cfg.ppo_clip, list_len)?)?;
                }
            }
        }

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
                kl = window_kl / n,
                entropy = window_entropy / n,
                reasoning_steps_per_list = window_reasoning / n,
                lists_per_s = (step * batch.len()) as f64 / started.elapsed().as_secs_f64(),
                "rl ({method:?})"
            );
            (
                window_reward,
                window_reasoning,
                window_entropy,
                window_lists,
                window_kl,
            ) = (0.0, 0.0, 0.0, 0, 0.0);
        }
        if monitor.is_some_and(|m| step % m.every.max(1) == 0 || step == cfg.grpo_steps) {
            watch(step, &mut report)?;
        }
    }
    if let Some((_, step, weights)) = best {
        super::restore(vars, &weights)?;
        report.best_step = Some(step);
        tracing::info!(
            best_step = step,
            "rl: kept the checkpoint the judge scores best"
        );
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// `log pi(l) - log pi_ref(l)` per list: the policy's tracked log-probabilities of its
/// sampled lists against the reference re-scoring the same lists. Its mean over lists
/// sampled from `pi` estimates `KL(pi || pi_ref)`.
pub fn log_ratio(
    log_prob: &Tensor,
    reference: &Generator,
    pools: &PoolTensors,
    orders: &[Vec<usize>],
) -> candle_core::Result<Vec<f32>> {
    let reference = rescore(reference, pools, orders)?.detach();
    (log_prob.detach() - reference)?.to_vec1()
}

/// Rewards shaped by the KL penalty: `R - beta * (log pi(l) - log pi_ref(l))`, whose
/// expectation under `pi` is `E[R] - beta KL(pi || pi_ref)`.
pub fn kl_shaped(rewards: &[f32], log_ratio: &[f32], beta: f64) -> Vec<f32> {
    rewards
        .iter()
        .zip(log_ratio)
        .map(|(&r, &d)| r - (beta as f32) * d)
        .collect()
}

/// The clipped surrogate, negated and divided by the list length.
fn ppo_loss(
    log_prob: &Tensor,
    old: &Tensor,
    adv: &Tensor,
    clip: f64,
    list_len: usize,
) -> candle_core::Result<Tensor> {
    let ratio = (log_prob - old)?.exp()?;
    let unclipped = (&ratio * adv)?;
    let clipped = (ratio.clamp(1.0 - clip, 1.0 + clip)? * adv)?;
    unclipped.minimum(&clipped)?.mean_all()?.neg()? / list_len as f64
}

/// `log p(list)` of given lists under the generator's current weights (teacher forcing).
fn rescore(
    generator: &Generator,
    pools: &PoolTensors,
    orders: &[Vec<usize>],
) -> candle_core::Result<Tensor> {
    let encoded: EncodedPool = generator.encode(pools)?;
    let lens: Vec<usize> = orders.iter().map(Vec::len).collect();
    generator
        .decode(
            &encoded,
            &lens,
            DecodeOptions {
                selection: Selection::Forced(orders),
                track_log_prob: true,
                use_cache: true,
            },
        )?
        .tracked_log_prob()
        .cloned()
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor, Var};

    /// A list whose probability already rose past `1 + eps` (with a positive advantage)
    /// gets no more push; one whose probability fell still does.
    #[test]
    fn ppo_stops_pushing_a_ratio_past_the_clip() {
        let device = Device::Cpu;
        let log_prob = Var::new(&[0.5f32, -0.5], &device).expect("var");
        let old = Tensor::new(&[0f32, 0.0], &device).expect("old");
        let adv = Tensor::new(&[1f32, 1.0], &device).expect("adv");
        let loss = super::ppo_loss(log_prob.as_tensor(), &old, &adv, 0.2, 1).expect("loss");
        let grads = loss.backward().expect("backward");
        let g: Vec<f32> = grads
            .get(log_prob.as_tensor())
            .expect("grad")
            .to_vec1()
            .expect("vec");
        assert_eq!(g[0], 0.0, "clipped: {g:?}");
        // d/dx of -mean(e^x * 1) at x = -0.5 over 2 lists.
        assert!((g[1] + (-0.5f32).exp() / 2.0).abs() < 1e-6, "{g:?}");
    }
}
