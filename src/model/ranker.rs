//! What a bundle serves: a pointer generator (EGLR and the generator baselines) or a
//! score-and-sort scorer (PRM, DLCM), behind one `rank` call used by serving, offline
//! evaluation, replay and audits.

use candle_core::{Result, Tensor, Var};
use candle_nn::VarBuilder;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::config::{GeneratorConfig, UpstreamMargin};
use super::embedding::PoolTensors;
use super::evaluator::Evaluator;
use super::generator::{DecodeOptions, Decoded, Generator, Pick, PoolEncoding};
use super::reward::{group_advantages, rewards, Reward};
use super::scorer::Scorer;
use crate::features::FeatureEncoder;

#[derive(Debug, Clone)]
pub enum Ranker {
    Generator(Box<Generator>),
    Scorer(Box<Scorer>),
}

/// Seed of LAST's test-time samples: serving stays deterministic for a given batch.
const TEST_TIME_SEED: u64 = 0x4c41_5354;

impl Ranker {
    /// The model `cfg.variant` names.
    pub fn new(
        cfg: &GeneratorConfig,
        enc: &FeatureEncoder,
        max_list_len: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        Ok(match cfg.variant.scorer() {
            Some(kind) => Ranker::Scorer(Box::new(Scorer::new(kind, cfg, enc, max_list_len, vb)?)),
            None => Ranker::Generator(Box::new(Generator::new(cfg, enc, max_list_len, vb)?)),
        })
    }

    /// Declares the weights fixed (a loaded bundle), so greedy decoding takes the fused
    /// host step ([`Generator::freeze`]).
    pub fn freeze(self) -> Result<Self> {
        Ok(match self {
            Ranker::Generator(g) => Ranker::Generator(Box::new(g.freeze()?)),
            scorer => scorer,
        })
    }

    /// The generator, when the model is one (sampling, Pass@N and GRPO need it).
    pub fn generator(&self) -> Option<&Generator> {
        match self {
            Ranker::Generator(g) => Some(g),
            Ranker::Scorer(_) => None,
        }
    }

    /// Inference: the list of `list_lens[r]` items for every pool. Generators decode
    /// greedily with the KV cache; LAST-style generators then take their test-time step,
    /// judged by `evaluator`. With generator-evaluator selection configured, each list
    /// is then compared with the upstream order by `evaluator` ([`select_against_upstream`]).
    pub fn rank(
        &self,
        pools: &PoolTensors,
        list_lens: &[usize],
        evaluator: &Evaluator,
    ) -> Result<Decoded> {
        let generated = self.generate(pools, list_lens, evaluator)?;
        match self.selection() {
            Some(selection) => {
                select_against_upstream(generated, pools, list_lens, evaluator, selection)
            }
            None => Ok(generated),
        }
    }

    /// Generator-evaluator selection at inference, if the bundle's config has it.
    pub fn selection(&self) -> Option<UpstreamMargin> {
        match self {
            Ranker::Generator(g) => g.config().selection,
            Ranker::Scorer(s) => s.selection(),
        }
    }

    /// The model's own lists, before any selection.
    fn generate(
        &self,
        pools: &PoolTensors,
        list_lens: &[usize],
        evaluator: &Evaluator,
    ) -> Result<Decoded> {
        match self {
            Ranker::Scorer(s) => s.rank(pools, list_lens),
            Ranker::Generator(g) => {
                let encoded = g.encode(pools)?;
                let greedy = g.decode(&encoded, list_lens, DecodeOptions::greedy())?;
                if g.architecture().test_time_update {
                    test_time_update(g, evaluator, pools, &encoded, list_lens, greedy)
                } else {
                    Ok(greedy)
                }
            }
        }
    }
}

/// Generator-evaluator selection: per pool, the evaluator scores the generated list and
/// the upstream order (the pool's first items, same length); the upstream list is served
/// unless the generated one scores above it by the margin. The model can then never
/// serve a list its evaluator rates below what upstream sent.
pub fn select_against_upstream(
    mut generated: Decoded,
    pools: &PoolTensors,
    list_lens: &[usize],
    evaluator: &Evaluator,
    selection: UpstreamMargin,
) -> Result<Decoded> {
    let upstream = upstream_lists(pools, list_lens);
    let model_scores = rewards(evaluator, pools, &generated, selection.reward)?;
    let upstream_scores = rewards(evaluator, pools, &upstream, selection.reward)?;
    for (r, list) in upstream.lists.into_iter().enumerate() {
        let (m, u) = (model_scores[r], upstream_scores[r]);
        let wins = f64::from(m) > f64::from(u) + selection.margin * f64::from(u).abs();
        // A generated list that already is the upstream order is the model's own choice,
        // not a fallback: the copy gate must still see a generator that only copies.
        let same = generated.lists[r]
            .iter()
            .map(|p| p.item)
            .eq(list.iter().map(|p| p.item));
        if !wins && !same {
            generated.lists[r] = list;
            generated.upstream[r] = true;
        }
    }
    Ok(generated)
}

/// Whether a list (candidate indices, in order) is its pool's upstream order: the
/// first candidates as they stand. A re-ranker that only ever returns it copies.
pub fn is_upstream_order(order: impl IntoIterator<Item = usize>) -> bool {
    order.into_iter().enumerate().all(|(t, j)| t == j)
}

/// The first `list_lens[r]` candidates of each pool in upstream order.
pub fn upstream_lists(pools: &PoolTensors, list_lens: &[usize]) -> Decoded {
    let mut lists = Decoded::from_orders(
        pools
            .lens
            .iter()
            .zip(list_lens)
            .map(|(&n, &l)| (0..n.min(l)).collect()),
    );
    lists.upstream.fill(true);
    lists
}

/// LAST's update at serving time (no labels): sample `test_time_samples` lists per pool,
/// take the gradient of the policy-gradient loss `-mean(A log p)` (advantages from the
/// evaluator's rewards, normalised per pool) with respect to the encoder states `h` and
/// `s0`, step along it with `test_time_candidates` step sizes (each row's step scaled to
/// its states' norm), decode greedily from each, and keep per pool the list the
/// evaluator scores highest — the unchanged greedy list included.
fn test_time_update(
    g: &Generator,
    evaluator: &Evaluator,
    pools: &PoolTensors,
    encoded: &PoolEncoding,
    list_lens: &[usize],
    greedy: Decoded,
) -> Result<Decoded> {
    let cfg = g.config();
    let m = cfg.test_time_samples;
    let b = pools.batch();
    let h = Var::from_tensor(&encoded.h.detach())?;
    let s0 = Var::from_tensor(&encoded.s0.detach())?;
    let rows: Vec<usize> = (0..b).flat_map(|r| std::iter::repeat_n(r, m)).collect();
    let index = Tensor::from_vec(
        rows.iter().map(|&r| r as u32).collect::<Vec<_>>(),
        rows.len(),
        h.device(),
    )?;
    let repeated = PoolEncoding {
        h: h.index_select(&index, 0)?,
        s0: s0.index_select(&index, 0)?,
        mask: encoded.mask.index_select(&index, 0)?,
        lens: rows.iter().map(|&r| encoded.lens[r]).collect(),
    };
    let repeated_pools = pools.select_rows(&rows)?;
    let repeated_lens: Vec<usize> = rows.iter().map(|&r| list_lens[r]).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(TEST_TIME_SEED);
    let sampled = g.decode(
        &repeated,
        &repeated_lens,
        DecodeOptions {
            pick: Pick::Sample(&mut rng),
            track_log_prob: true,
            use_cache: true,
        },
    )?;
    let log_prob = sampled.tracked_log_prob()?;
    let advantages = group_advantages(
        &rewards(evaluator, &repeated_pools, &sampled, Reward::Dcg)?,
        m,
    );
    let advantages = Tensor::from_vec(advantages, rows.len(), h.device())?;
    let loss = (advantages * log_prob)?.mean_all()?.neg()?;
    let grads = loss.backward()?;
    let zero_h = h.zeros_like()?;
    let zero_s0 = s0.zeros_like()?;
    let grad_h = grads.get(h.as_tensor()).unwrap_or(&zero_h);
    let grad_s0 = grads.get(s0.as_tensor()).unwrap_or(&zero_s0);
    let dir_h = scaled_direction(h.as_tensor(), grad_h)?;
    let dir_s0 = scaled_direction(s0.as_tensor(), grad_s0)?;

    let mut best = greedy;
    let mut best_scores = rewards(evaluator, pools, &best, Reward::Dcg)?;
    for k in 1..=cfg.test_time_candidates {
        let eta = cfg.test_time_step * k as f64;
        let stepped = PoolEncoding {
            h: (h.as_tensor() - (&dir_h * eta)?)?,
            s0: (s0.as_tensor() - (&dir_s0 * eta)?)?,
            mask: encoded.mask.clone(),
            lens: encoded.lens.clone(),
        };
        let candidate = g.decode(&stepped, list_lens, DecodeOptions::greedy())?;
        let scores = rewards(evaluator, pools, &candidate, Reward::Dcg)?;
        for (r, (s, list)) in scores.into_iter().zip(candidate.lists).enumerate() {
            if s > best_scores[r] {
                best_scores[r] = s;
                best.lists[r] = list;
            }
        }
    }
    Ok(best)
}

/// `grad` rescaled per row (dim 0) to the norm of that row of `states`: the step size is
/// relative, and one request's gradient never scales another's step.
fn scaled_direction(states: &Tensor, grad: &Tensor) -> Result<Tensor> {
    let norm = |t: &Tensor| -> Result<Tensor> {
        let flat = t.flatten_from(1)?;
        flat.sqr()?.sum_keepdim(1)?.sqrt()
    };
    let scale = (norm(states)? / (norm(grad)? + 1e-12)?)?;
    let shape = grad.shape().clone();
    grad.flatten_from(1)?.broadcast_mul(&scale)?.reshape(shape)
}
