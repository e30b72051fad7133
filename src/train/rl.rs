//! Stage 2 (spec §5): reinforcement learning of the generator against the frozen
//! evaluator. For each pool, `G` lists are sampled; each list's reward comes from the
//! evaluator re-scoring the generated list; advantages are normalised within the group.
//! GRPO (EGLR) takes one on-policy step on `-mean_g(A_g * sum_t log p(l_t^g)) / L`;
//! PPO (EG-Rerank) re-scores the same lists for `ppo_epochs` steps on the clipped
//! surrogate `-mean_g(min(rho_g A_g, clip(rho_g, 1 - eps, 1 + eps) A_g)) / L` with the
//! per-list ratio `rho_g = p_new(list) / p_old(list)`. DAPO (GR2) clips per position
//! with decoupled bounds, averages over all positions of the batch, and keeps only the
//! groups whose rewards differ, sampling more pools to refill ([`Rl::Dapo`]).
//! LatentR3's modified GRPO normalises advantages over the batch ([`Rl::LatentGrpo`]).
//! GR2's conditional reward (`training.improvement_bonus`) applies to any of them.

use std::time::Instant;

use candle_core::{Device, Tensor};
use candle_nn::{Optimizer, VarMap};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::{adamw, Passes, TrainError, TrainingConfig};
use crate::encoded::{pool_tensors, Example};
use crate::features::FeatureEncoder;
use crate::model::{
    batch_advantages, conditional_rewards, group_advantages, informative_groups, is_upstream_order,
    rewards, upstream_lists, DecodeOptions, Decoded, Evaluator, Generator, Pick, PoolEncoding,
    PoolTensors, Reward, Rl,
};

/// How RL went: the mean reward of the sampled lists over training.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RlReport {
    pub steps: usize,
    /// Mean sampled-list reward per progress window, in order.
    pub reward_curve: Vec<f64>,
    /// Share of the sampled lists that are the upstream order, per progress window.
    pub copy_curve: Vec<f64>,
    pub reasoning_steps_per_list: f64,
    /// Groups of `G` lists sampled, and those dynamic sampling (DAPO) dropped because
    /// their lists all got the same reward.
    pub groups: usize,
    pub dropped_groups: usize,
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
    /// The same pools encoded for the judge, where it encodes them otherwise.
    pub judge_pools: Option<(&'a [Example], &'a FeatureEncoder)>,
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
    /// Share of the greedy lists that are the upstream order (absent in bundles from
    /// before it was measured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy_share: Option<f64>,
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
        let mut copies = 0usize;
        for (c, chunk) in self.pools.chunks(256).enumerate() {
            let refs: Vec<&Example> = chunk.iter().collect();
            let pt = pool_tensors(&refs, enc, device)?;
            let judge_pt = match self.judge_pools {
                Some((pools, judge_enc)) => {
                    let at = c * 256..c * 256 + chunk.len();
                    let refs: Vec<&Example> = pools
                        .get(at)
                        .ok_or_else(|| {
                            candle_core::Error::Msg("the judge's validation pools differ".into())
                        })?
                        .iter()
                        .collect();
                    Some(pool_tensors(&refs, judge_enc, device)?)
                }
                None => None,
            };
            let lens = vec![list_len; chunk.len()];
            let decoded =
                generator.decode(&generator.encode(&pt)?, &lens, DecodeOptions::greedy())?;
            let sum = |xs: Vec<f32>| xs.iter().map(|&x| f64::from(x)).sum::<f64>();
            own += sum(rewards(evaluator, &pt, &decoded, Reward::Clicks)?);
            let judged = judge_pt.as_ref().unwrap_or(&pt);
            judge += sum(rewards(self.judge, judged, &decoded, Reward::Clicks)?);
            for (e, order) in chunk.iter().zip(decoded.orders()) {
                copies += usize::from(is_upstream_order(order.iter().copied()));
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
            copy_share: Some(copies as f64 / n),
        };
        tracing::info!(
            step,
            own = point.own,
            judge = point.judge,
            oracle = point.oracle,
            copy_share = point.copy_share,
            "rl checkpoint (validation pools)"
        );
        Ok(point)
    }
}

/// Runs `cfg.grpo_steps` batches of `generator` (variables `vars`) with `method`;
/// with `reference = (pi_ref, beta)` each reward is shaped by the KL penalty
/// ([`kl_shaped`]). Each step samples groups of lists, updates the policy on them, and
/// every `cfg.progress_every` steps reports; with a monitor, training ends at the
/// checkpoint the judge scores best.
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
    let run = RlRun {
        method,
        generator,
        evaluator,
        reference,
        cfg,
        pools,
        enc,
        list_len,
        device,
    };
    let started = Instant::now();
    let mut opt = adamw(vars, cfg.generator_lr)?;
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x4752_504f);
    let mut passes = Passes::new(pools.len(), &mut rng);
    let mut report = RlReport::default();
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
    let mut window = Window::default();
    for step in 1..=cfg.grpo_steps {
        let kept = run.sample_step(&mut passes, &mut rng, &mut window)?;
        report.groups += window.step_groups;
        report.dropped_groups += window.step_dropped;
        run.update(&mut opt, &kept, step)?;
        report.steps = step;
        if step % cfg.progress_every == 0 || step == cfg.grpo_steps {
            window.report(&mut report, &run, step, started);
            window = Window {
                total_lists: window.total_lists,
                ..Window::default()
            };
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

/// What every step of one RL run reads: the method, the policy and its reward, the
/// pools and how their lists are built.
struct RlRun<'a> {
    method: Rl,
    generator: &'a Generator,
    evaluator: &'a Evaluator,
    reference: Option<(&'a Generator, f64)>,
    cfg: &'a TrainingConfig,
    pools: &'a [Example],
    enc: &'a FeatureEncoder,
    list_len: usize,
    device: &'a Device,
}

impl RlRun<'_> {
    /// One step's lists: one round of groups, or for DAPO rounds until
    /// `grpo_pools_per_step` groups whose rewards differ are kept (at most
    /// `dapo_sampling_rounds`). Every sampled list counts in `window`.
    fn sample_step(
        &self,
        passes: &mut Passes,
        rng: &mut ChaCha8Rng,
        window: &mut Window,
    ) -> Result<Vec<Sampled>, TrainError> {
        let (cfg, g) = (self.cfg, self.cfg.group_size);
        let rounds = if self.method == Rl::Dapo {
            cfg.dapo_sampling_rounds
        } else {
            1
        };
        let mut kept: Vec<Sampled> = Vec::new();
        let (mut sampled_groups, mut kept_groups) = (0usize, 0usize);
        for _ in 0..rounds {
            let round = sample(
                self.generator,
                self.evaluator,
                self.reference,
                cfg,
                self.pools,
                passes,
                rng,
                self.enc,
                self.list_len,
                self.device,
            )?;
            window.add(&round);
            sampled_groups += round.plain.len() / g;
            let round = if self.method == Rl::Dapo {
                round.informative(g)?
            } else {
                Some(round)
            };
            if let Some(round) = round {
                kept_groups += round.plain.len() / g;
                kept.push(round);
            }
            if kept_groups >= cfg.grpo_pools_per_step {
                break;
            }
        }
        window.step_groups = sampled_groups;
        window.step_dropped = sampled_groups - kept_groups;
        window.groups += sampled_groups;
        window.dropped_groups += sampled_groups - kept_groups;
        Ok(kept)
    }

    /// One policy update on the step's lists (spec §5: the method's loss).
    fn update(
        &self,
        opt: &mut candle_nn::AdamW,
        kept: &[Sampled],
        step: usize,
    ) -> Result<(), TrainError> {
        let (g, list_len, device) = (self.cfg.group_size, self.list_len, self.device);
        match self.method {
            Rl::Grpo | Rl::LatentGrpo => {
                let s = &kept[0];
                let adv = if self.method == Rl::LatentGrpo {
                    batch_advantages(&s.shaped)
                } else {
                    group_advantages(&s.shaped, g)
                };
                let adv = Tensor::from_vec(adv, s.shaped.len(), device)?;
                let log_prob = s.decoded.tracked_log_prob()?;
                let loss = ((adv * log_prob)?.mean_all()?.neg()? / list_len as f64)?;
                opt.backward_step(&loss)?;
            }
            Rl::Ppo => self.ppo_update(opt, &kept[0])?,
            Rl::Dapo if kept.is_empty() => {
                tracing::debug!(step, "dapo: every sampled group had equal rewards");
            }
            Rl::Dapo => self.dapo_update(opt, kept)?,
        }
        Ok(())
    }

    /// PPO: `ppo_epochs` steps on the clipped per-list surrogate; the first epoch's
    /// policy is the sampling one, whose graph is reused.
    fn ppo_update(&self, opt: &mut candle_nn::AdamW, s: &Sampled) -> Result<(), TrainError> {
        let (cfg, list_len) = (self.cfg, self.list_len);
        let adv = Tensor::from_vec(
            group_advantages(&s.shaped, cfg.group_size),
            s.shaped.len(),
            self.device,
        )?;
        let log_prob = s.decoded.tracked_log_prob()?;
        let old = log_prob.detach();
        let orders = s.decoded.orders();
        opt.backward_step(&ppo_loss(log_prob, &old, &adv, cfg.ppo_clip, list_len)?)?;
        for _ in 1..cfg.ppo_epochs {
            let new = rescore(self.generator, &s.pools, &orders)?;
            let new = new.tracked_log_prob()?;
            opt.backward_step(&ppo_loss(new, &old, &adv, cfg.ppo_clip, list_len)?)?;
        }
        Ok(())
    }

    /// DAPO (GR2): `ppo_epochs` steps on the per-position clipped surrogate with
    /// decoupled bounds, averaged over every position of the kept groups.
    fn dapo_update(&self, opt: &mut candle_nn::AdamW, kept: &[Sampled]) -> Result<(), TrainError> {
        let cfg = self.cfg;
        let bounds = (cfg.dapo_clip_low, cfg.dapo_clip_high);
        let olds: Vec<Tensor> = kept
            .iter()
            .map(|s| Ok(s.decoded.tracked_item_log_probs()?.0.detach()))
            .collect::<candle_core::Result<_>>()?;
        for epoch in 0..cfg.ppo_epochs {
            let (mut total, mut tokens) = (None::<Tensor>, 0.0);
            for (s, old) in kept.iter().zip(&olds) {
                let adv = Tensor::from_vec(
                    group_advantages(&s.shaped, cfg.group_size),
                    s.shaped.len(),
                    self.device,
                )?;
                // The first epoch's policy is the sampling one.
                let rescored;
                let decoded = if epoch == 0 {
                    &s.decoded
                } else {
                    rescored = rescore(self.generator, &s.pools, &s.decoded.orders())?;
                    &rescored
                };
                let (lp, mask) = decoded.tracked_item_log_probs()?;
                tokens += mask.sum_all()?.to_scalar::<f32>()?;
                let part = dapo_loss_sum(lp, old, &mask, &adv, bounds)?;
                total = Some(match total {
                    None => part,
                    Some(t) => (t + part)?,
                });
            }
            if let Some(total) = total {
                opt.backward_step(&(total / f64::from(tokens.max(1.0)))?)?;
            }
        }
        Ok(())
    }
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
    let reference = rescore(reference, pools, orders)?
        .tracked_log_prob()?
        .detach();
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

/// The given lists re-decoded under the generator's current weights (teacher forcing),
/// with their log-probabilities tracked.
fn rescore(
    generator: &Generator,
    pools: &PoolTensors,
    orders: &[Vec<usize>],
) -> candle_core::Result<Decoded> {
    let encoded: PoolEncoding = generator.encode(pools)?;
    let lens: Vec<usize> = orders.iter().map(Vec::len).collect();
    generator.decode(
        &encoded,
        &lens,
        DecodeOptions {
            pick: Pick::Forced(orders),
            track_log_prob: true,
            use_cache: true,
        },
    )
}

/// DAPO's token-level clipped surrogate, negated and summed over the positions `mask`
/// keeps (the caller divides by the positions of the whole batch, so every position
/// weighs the same): `-sum_{i,t} min(rho_it A_i, clip(rho_it, 1 - eps_low,
/// 1 + eps_high) A_i)` with the per-position ratio `rho_it = p_new(l_it) / p_old(l_it)`.
fn dapo_loss_sum(
    log_prob: &Tensor,
    old: &Tensor,
    mask: &Tensor,
    adv: &Tensor,
    (eps_low, eps_high): (f64, f64),
) -> candle_core::Result<Tensor> {
    let ratio = (log_prob - old)?.exp()?;
    let adv = adv.unsqueeze(1)?.broadcast_as(ratio.shape())?;
    let unclipped = (&ratio * &adv)?;
    let clipped = (ratio.clamp(1.0 - eps_low, 1.0 + eps_high)? * &adv)?;
    (unclipped.minimum(&clipped)? * mask)?.sum_all()?.neg()
}

/// One batch of sampled lists: pools, each `G` times in a row.
struct Sampled {
    pools: PoolTensors,
    decoded: Decoded,
    /// The evaluator's reward of each list.
    plain: Vec<f32>,
    /// Whether each list is its pool's upstream order.
    copies: Vec<bool>,
    /// `log pi(l) - log pi_ref(l)` of each list (empty without a reference).
    log_ratio: Vec<f32>,
    /// What the advantages come from: the plain or conditional reward, KL-shaped.
    shaped: Vec<f32>,
}

/// Samples `G` lists for each of `cfg.grpo_pools_per_step` pools and rewards them.
#[allow(clippy::too_many_arguments)]
fn sample(
    generator: &Generator,
    evaluator: &Evaluator,
    reference: Option<(&Generator, f64)>,
    cfg: &TrainingConfig,
    pools: &[Example],
    passes: &mut Passes,
    rng: &mut ChaCha8Rng,
    enc: &FeatureEncoder,
    list_len: usize,
    device: &Device,
) -> Result<Sampled, TrainError> {
    let g = cfg.group_size;
    let mut batch: Vec<&Example> = Vec::with_capacity(cfg.grpo_pools_per_step * g);
    for _ in 0..cfg.grpo_pools_per_step {
        let e = &pools[passes.next(rng)];
        batch.extend(std::iter::repeat_n(e, g));
    }
    let pt = pool_tensors(&batch, enc, device)?;
    let lens = vec![list_len; batch.len()];
    let decoded = generator.decode(
        &generator.encode(&pt)?,
        &lens,
        DecodeOptions {
            pick: Pick::Sample(rng),
            track_log_prob: true,
            use_cache: true,
        },
    )?;
    let plain = rewards(evaluator, &pt, &decoded, cfg.reward)?;
    let orders = decoded.orders();
    // A pool's upstream order is its candidates in pool order.
    let copies: Vec<bool> = orders
        .iter()
        .map(|o| is_upstream_order(o.iter().copied()))
        .collect();
    let reward = if cfg.improvement_bonus > 0.0 {
        let upstream = rewards(evaluator, &pt, &upstream_lists(&pt, &lens), cfg.reward)?;
        conditional_rewards(&plain, &upstream, &copies, cfg.improvement_bonus as f32)
    } else {
        plain.clone()
    };
    let (log_ratio, shaped) = match reference {
        Some((pi_ref, beta)) => {
            let ratio = log_ratio(decoded.tracked_log_prob()?, pi_ref, &pt, &orders)?;
            let shaped = kl_shaped(&reward, &ratio, beta);
            (ratio, shaped)
        }
        None => (Vec::new(), reward),
    };
    Ok(Sampled {
        pools: pt,
        decoded,
        plain,
        copies,
        log_ratio,
        shaped,
    })
}

impl Sampled {
    /// DAPO's dynamic sampling: only the groups whose shaped rewards differ (`None` when
    /// there is none).
    fn informative(self, g: usize) -> candle_core::Result<Option<Sampled>> {
        let groups = informative_groups(&self.shaped, g);
        if groups.is_empty() {
            return Ok(None);
        }
        if groups.len() * g == self.shaped.len() {
            return Ok(Some(self));
        }
        let rows: Vec<usize> = groups.iter().flat_map(|&k| k * g..(k + 1) * g).collect();
        let pick = |xs: &[f32]| rows.iter().map(|&r| xs[r]).collect::<Vec<_>>();
        Ok(Some(Sampled {
            pools: self.pools.select_rows(&rows)?,
            decoded: self.decoded.select_rows(&rows)?,
            plain: pick(&self.plain),
            copies: rows.iter().map(|&r| self.copies[r]).collect(),
            log_ratio: if self.log_ratio.is_empty() {
                Vec::new()
            } else {
                pick(&self.log_ratio)
            },
            shaped: pick(&self.shaped),
        }))
    }
}

/// Sampled-list statistics over one progress window.
#[derive(Debug, Default)]
struct Window {
    reward: f64,
    reasoning: f64,
    entropy: f64,
    kl: f64,
    lists: usize,
    copies: usize,
    groups: usize,
    dropped_groups: usize,
    /// The last step's groups, sampled and dropped.
    step_groups: usize,
    step_dropped: usize,
    /// Lists sampled since training started (for the rate).
    total_lists: usize,
}

impl Window {
    /// The window's means into `report`'s curves, and a progress line.
    fn report(&self, report: &mut RlReport, run: &RlRun<'_>, step: usize, started: Instant) {
        let n = self.lists.max(1) as f64;
        report.reward_curve.push(self.reward / n);
        report.copy_curve.push(self.copies as f64 / n);
        report.reasoning_steps_per_list = self.reasoning / n;
        tracing::info!(
            step,
            steps = run.cfg.grpo_steps,
            reward = self.reward / n,
            kl = self.kl / n,
            entropy = self.entropy / n,
            reasoning_steps_per_list = self.reasoning / n,
            copy_share = self.copies as f64 / n,
            dropped_groups = self.dropped_groups,
            groups = self.groups,
            lists_per_s = self.total_lists as f64 / started.elapsed().as_secs_f64(),
            "rl ({:?})",
            run.method
        );
    }

    fn add(&mut self, s: &Sampled) {
        let sum = |xs: &[f32]| xs.iter().map(|&x| f64::from(x)).sum::<f64>();
        self.total_lists += s.plain.len();
        self.reward += sum(&s.plain);
        self.kl += sum(&s.log_ratio);
        self.lists += s.plain.len();
        self.copies += s.copies.iter().filter(|&&c| c).count();
        for list in &s.decoded.lists {
            self.reasoning += list
                .iter()
                .map(|p| f64::from(p.reasoning_steps))
                .sum::<f64>();
            self.entropy += list.iter().map(|p| f64::from(p.entropy_after)).sum::<f64>()
                / list.len().max(1) as f64;
        }
    }
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

    /// DAPO's decoupled bounds: with `A > 0` a position whose ratio rose past
    /// `1 + eps_high` gets no more push, one between `1 + eps_low` and `1 + eps_high`
    /// still does (PPO's symmetric clip at `eps_low` would stop it); with `A < 0` one
    /// that fell below `1 - eps_low` gets no more push; masked positions get none.
    #[test]
    fn dapo_clips_each_position_between_its_decoupled_bounds() {
        let device = Device::Cpu;
        let x = [0.3f32.ln_1p(), 0.25f32.ln_1p(), 0.0, (-0.3f32).ln_1p(), 0.5];
        let log_prob = Var::new(&[x], &device).expect("var");
        let old = Tensor::zeros((1, 5), candle_core::DType::F32, &device).expect("old");
        let mask = Tensor::new(&[[1f32, 1.0, 1.0, 1.0, 0.0]], &device).expect("mask");
        let grad = |adv: f32| -> Vec<f32> {
            let adv = Tensor::new(&[adv], &device).expect("adv");
            let loss = super::dapo_loss_sum(log_prob.as_tensor(), &old, &mask, &adv, (0.2, 0.28))
                .expect("loss");
            let grads = loss.backward().expect("backward");
            grads
                .get(log_prob.as_tensor())
                .expect("grad")
                .to_vec2::<f32>()
                .expect("vec")
                .remove(0)
        };
        let up = grad(1.0);
        assert_eq!(up[0], 0.0, "ratio 1.3 > 1.28 is clipped: {up:?}");
        assert!(
            (up[1] + 1.25).abs() < 1e-5,
            "ratio 1.25 still pushed: {up:?}"
        );
        assert!((up[2] + 1.0).abs() < 1e-6, "{up:?}");
        assert!(
            (up[3] + 0.7).abs() < 1e-5,
            "a fallen ratio is pushed up: {up:?}"
        );
        assert_eq!(up[4], 0.0, "masked: {up:?}");
        let down = grad(-1.0);
        assert_eq!(down[3], 0.0, "ratio 0.7 < 0.8 is clipped: {down:?}");
        assert!(
            (down[0] - 1.3).abs() < 1e-5,
            "a risen ratio is pushed down: {down:?}"
        );
    }
}
