//! The generator (policy, spec §4): a DeepSets encoder of the pool and a causal
//! Transformer decoder with a KV cache that builds the list item by item, inserting
//! latent reasoning tokens when the selection entropy is high.
//!
//! Every variant of the ablation is a [`ReasoningPolicy`] of this one generator.
//!
//! A batch decodes in lock step: at every step each row appends exactly one token (a
//! reasoning token, the chosen item's embedding, or — once its list is complete — a
//! token nobody reads), so all rows share the sequence length and one KV cache tensor.

use candle_core::{Module, Result, Tensor, D};
use candle_nn::{layer_norm, linear, LayerNorm, LayerNormConfig, Linear, VarBuilder};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::config::{GeneratorConfig, ReasoningMode, ReasoningPolicy, ReasoningToken};
use super::embedding::{join_user, FeatureEmbedding, PoolTensors};
use super::layers::{
    causal_mask, mask_scores, masked_sum, sinusoidal, KvCache, Mlp, TransformerLayer,
};
use crate::features::FeatureEncoder;

/// The encoded pool: candidate embeddings `h [b, n, d]`, DeepSets context `s0 [b, d]`.
#[derive(Debug, Clone)]
pub struct EncodedPool {
    pub h: Tensor,
    pub s0: Tensor,
    pub mask: Tensor,
    pub lens: Vec<usize>,
}

/// How a recommend step picks the item.
#[derive(Debug)]
pub enum Selection<'a> {
    /// `argmax p` (inference).
    Greedy,
    /// `l_t ~ p` (training: Thompson sampling).
    Sample(&'a mut ChaCha8Rng),
}

/// Options of one decode.
#[derive(Debug)]
pub struct DecodeOptions<'a> {
    pub selection: Selection<'a>,
    /// Keep the log-probabilities of the choices in the autograd graph (training).
    pub track_log_prob: bool,
    /// Use the KV cache; `false` recomputes the whole sequence at every step (the
    /// baseline the cache is measured against).
    pub use_cache: bool,
}

impl DecodeOptions<'static> {
    /// Inference: greedy choices, KV cache, no autograd bookkeeping.
    pub fn greedy() -> Self {
        DecodeOptions {
            selection: Selection::Greedy,
            track_log_prob: false,
            use_cache: true,
        }
    }
}

/// One position of a generated list.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PositionTrace {
    /// Index of the chosen candidate in the pool.
    pub item: usize,
    /// Probability of the choice under `softmax(a / tau_c)`.
    pub prob: f32,
    pub reasoning_steps: u32,
    /// Entropy at the first look at this position, before any reasoning.
    pub entropy_before: f32,
    /// Entropy when the item was chosen.
    pub entropy_after: f32,
}

/// A decoded batch.
#[derive(Debug)]
pub struct Decoded {
    pub lists: Vec<Vec<PositionTrace>>,
    /// `[b]` sum over recommend steps of `log p(l_t)` (with `track_log_prob`).
    pub log_prob: Option<Tensor>,
    /// Decoder steps taken (tokens after `s0`).
    pub steps: usize,
}

impl Decoded {
    pub fn orders(&self) -> Vec<Vec<usize>> {
        self.lists
            .iter()
            .map(|l| l.iter().map(|p| p.item).collect())
            .collect()
    }
}

#[derive(Debug, Clone)]
pub struct Generator {
    cfg: GeneratorConfig,
    policy: ReasoningPolicy,
    embedding: FeatureEmbedding,
    item_encoder: Mlp,
    phi: Linear,
    rho: Mlp,
    layers: Vec<TransformerLayer>,
    final_norm: LayerNorm,
    positions: Tensor,
    /// `1 / sqrt(d_model)`: scale of the pointer scores.
    score_scale: f64,
}

impl Generator {
    /// `max_list_len`: the longest list it will generate (positions are precomputed for
    /// the worst-case sequence).
    pub fn new(
        cfg: &GeneratorConfig,
        enc: &FeatureEncoder,
        max_list_len: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        let d = cfg.d_model;
        let embedding = FeatureEmbedding::new(enc, cfg.embedding_dim, vb.pp("features"))?;
        let width = embedding.item_dim() + embedding.user_dim();
        let layers = (0..cfg.layers)
            .map(|i| {
                TransformerLayer::new(d, cfg.heads, cfg.ffn_dim, vb.pp(format!("decoder.{i}")))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            policy: cfg.policy(),
            item_encoder: Mlp::new(width, d, d, vb.pp("item_encoder"))?,
            phi: linear(d, d, vb.pp("deepsets.phi"))?,
            rho: Mlp::new(d, d, d, vb.pp("deepsets.rho"))?,
            layers,
            final_norm: layer_norm(d, LayerNormConfig::default(), vb.pp("final_norm"))?,
            positions: sinusoidal(cfg.max_sequence(max_list_len) + 1, d, vb.device())?,
            embedding,
            score_scale: 1.0 / (d as f64).sqrt(),
            cfg: cfg.clone(),
        })
    }

    pub fn config(&self) -> &GeneratorConfig {
        &self.cfg
    }

    pub fn policy(&self) -> &ReasoningPolicy {
        &self.policy
    }

    /// `h_j = MLP_enc([e_j ; u])` and `s0 = rho(sum_j phi(h_j))` over real candidates
    /// (eq. 9-10): invariant to the order of the pool.
    pub fn encode(&self, pools: &PoolTensors) -> Result<EncodedPool> {
        let (user, items) = self.embedding.forward(pools)?;
        let h = self
            .item_encoder
            .forward(&join_user(&items, user.as_ref())?)?;
        let pooled = masked_sum(&self.phi.forward(&h)?.relu()?, &pools.mask)?;
        let s0 = self.rho.forward(&pooled)?;
        Ok(EncodedPool {
            h,
            s0,
            mask: pools.mask.clone(),
            lens: pools.lens.clone(),
        })
    }

    /// One decoder step for the new tokens `x [b, d]` at sequence index `t`.
    pub fn decoder_step(&self, x: &Tensor, t: usize, caches: &mut [KvCache]) -> Result<Tensor> {
        let mut h = x.broadcast_add(&self.positions.get(t)?)?.unsqueeze(1)?;
        for (layer, cache) in self.layers.iter().zip(caches.iter_mut()) {
            h = layer.step(&h, cache)?;
        }
        self.final_norm.forward(&h)?.squeeze(1)
    }

    /// The decoder over a whole token sequence `[b, t, d]` with a causal mask: the
    /// output at every position.
    pub fn decoder_full(&self, tokens: &Tensor) -> Result<Tensor> {
        let (b, t, d) = tokens.dims3()?;
        let pos = self
            .positions
            .narrow(0, 0, t)?
            .unsqueeze(0)?
            .broadcast_as((b, t, d))?;
        let mut h = (tokens + pos)?;
        let mask = causal_mask(t, tokens.device())?;
        for layer in &self.layers {
            h = layer.forward(&h, Some(&mask))?;
        }
        self.final_norm.forward(&h)
    }

    pub fn new_caches(&self, max_len: usize, fixed: bool) -> Vec<KvCache> {
        (0..self.layers.len())
            .map(|_| {
                if fixed {
                    KvCache::fixed(max_len)
                } else {
                    KvCache::growing()
                }
            })
            .collect()
    }

    /// Generates a list of `list_lens[r]` items for every row (spec §4, steps 1-4).
    ///
    /// Per step, the pointer scores are copied to the host once; the gate, the entropy
    /// and the choice are computed there (they need no gradient), and the next token of
    /// every row is one batched product `W h`: a one-hot row for a chosen item, the
    /// context weights for a context-aware reasoning token. With `track_log_prob` the
    /// reasoning weights and the log-probabilities of the choices are also computed as
    /// tensors, so gradients flow through them (spec §5).
    pub fn decode(
        &self,
        pool: &EncodedPool,
        list_lens: &[usize],
        mut opts: DecodeOptions<'_>,
    ) -> Result<Decoded> {
        let (b, n, d) = pool.h.dims3()?;
        let device = pool.h.device();
        let p = self.policy;
        let targets: Vec<usize> = list_lens
            .iter()
            .zip(&pool.lens)
            .map(|(&l, &m)| l.min(m))
            .collect();
        let max_len = targets.iter().copied().max().unwrap_or(0);
        let max_steps = self.cfg.max_sequence(max_len);
        let mut rows: Vec<RowState> = targets.iter().map(|&t| RowState::new(t)).collect();
        let mut available: Vec<f32> = pool.mask.flatten_all()?.to_vec1()?;
        let mut caches = self.new_caches(max_steps + 1, !opts.track_log_prob);
        let mut history: Vec<Tensor> = Vec::new();
        let mut log_probs: Vec<Tensor> = Vec::new();
        let mut x = pool.s0.clone();
        let mut t = 0;
        let mut dist = vec![0f32; n];
        while rows.iter().any(|r| !r.done()) && t < max_steps {
            let o = if opts.use_cache {
                self.decoder_step(&x, t, &mut caches)?
            } else {
                history.push(x.unsqueeze(1)?);
                let all = self.decoder_full(&Tensor::cat(&history, 1)?)?;
                all.narrow(1, t, 1)?.squeeze(1)?
            };
            // Step 1: pointer scores `a_j = <o, h_j>` (scaled), one copy to the host.
            let scores = (pool.h.matmul(&o.unsqueeze(2)?)?.squeeze(2)? * self.score_scale)?;
            let host: Vec<f32> = scores.flatten_all()?.to_vec1()?;
            let mut weights = vec![0f32; b * n];
            let mut picks = vec![0u32; b];
            let mut reason_plain = vec![0u8; b];
            let mut reason_context = vec![0u8; b];
            let mut recommend = vec![0f32; b];
            for (row, state) in rows.iter_mut().enumerate() {
                if state.done() {
                    continue;
                }
                let a = &host[row * n..(row + 1) * n];
                let avail = &available[row * n..(row + 1) * n];
                // Step 2: entropy at tau_0 (eq. 13-14).
                let entropy = masked_softmax(a, avail, p.tau0, &mut dist);
                state.observe(entropy);
                let w = &mut weights[row * n..(row + 1) * n];
                if state.reasons(&p, entropy) {
                    // Step 3: a reasoning token.
                    match p.token {
                        ReasoningToken::Plain => reason_plain[row] = 1,
                        ReasoningToken::ContextAware => {
                            masked_softmax(a, avail, p.tau_reason, w);
                            reason_context[row] = 1;
                        }
                    }
                    state.since_item += 1;
                } else {
                    // Step 4: recommend from `softmax(a / tau_c)`.
                    masked_softmax(a, avail, p.tau_recommend, &mut dist);
                    let item = choose(&dist, avail, &mut opts.selection);
                    w[item] = 1.0;
                    picks[row] = item as u32;
                    recommend[row] = 1.0;
                    available[row * n + item] = 0.0;
                    state.pick(item, dist[item], entropy);
                }
            }
            let mut w = Tensor::from_vec(weights, (b, 1, n), device)?;
            if opts.track_log_prob {
                let avail = Tensor::from_slice(&available, (b, n), device)?;
                // `available` already lost this step's picks: put them back for the softmax.
                let before = (avail + pick_mask(&picks, &recommend, n, device)?)?;
                let masked = mask_scores(&scores, &before)?;
                if reason_context.contains(&1) {
                    let soft = candle_nn::ops::softmax_last_dim(&(&masked / p.tau_reason)?)?
                        .unsqueeze(1)?;
                    let m = Tensor::from_slice(&reason_context, (b, 1, 1), device)?
                        .broadcast_as((b, 1, n))?;
                    w = m.where_cond(&soft, &w)?;
                }
                let pick_t = Tensor::from_slice(&picks, (b, 1), device)?;
                let lp = candle_nn::ops::log_softmax(&(&masked / p.tau_recommend)?, D::Minus1)?
                    .gather(&pick_t, 1)?
                    .squeeze(1)?;
                log_probs.push((lp * Tensor::from_slice(&recommend, b, device)?)?);
            }
            x = w.matmul(&pool.h)?.squeeze(1)?;
            if reason_plain.contains(&1) {
                let m = Tensor::from_slice(&reason_plain, (b, 1), device)?.broadcast_as((b, d))?;
                x = m.where_cond(&o, &x)?;
            }
            t += 1;
        }
        let log_prob = if log_probs.is_empty() {
            None
        } else {
            Some(Tensor::stack(&log_probs, 1)?.sum(1)?)
        };
        Ok(Decoded {
            lists: rows.into_iter().map(|r| r.list).collect(),
            log_prob,
            steps: t,
        })
    }
}

/// One-hot `[b, n]` of this step's picks (rows that recommended).
fn pick_mask(
    picks: &[u32],
    recommend: &[f32],
    n: usize,
    device: &candle_core::Device,
) -> Result<Tensor> {
    let mut m = vec![0f32; picks.len() * n];
    for (row, (&j, &r)) in picks.iter().zip(recommend).enumerate() {
        m[row * n + j as usize] = r;
    }
    Tensor::from_vec(m, (picks.len(), n), device)
}

/// `softmax(a / tau)` over the available entries into `out` (0 elsewhere); returns its
/// entropy `-sum p log p` in nats.
fn masked_softmax(a: &[f32], avail: &[f32], tau: f64, out: &mut [f32]) -> f32 {
    let inv = (1.0 / tau) as f32;
    let max = a
        .iter()
        .zip(avail)
        .filter(|(_, &m)| m > 0.0)
        .map(|(&x, _)| x * inv)
        .fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f32;
    for ((o, &x), &m) in out.iter_mut().zip(a).zip(avail) {
        *o = if m > 0.0 { (x * inv - max).exp() } else { 0.0 };
        sum += *o;
    }
    let mut entropy = 0f32;
    for o in out.iter_mut() {
        *o /= sum.max(f32::MIN_POSITIVE);
        if *o > 0.0 {
            entropy -= *o * o.ln();
        }
    }
    entropy
}

/// Decoding state of one row, kept on the host.
#[derive(Debug)]
struct RowState {
    target: usize,
    list: Vec<PositionTrace>,
    since_item: usize,
    entropy_before: Option<f32>,
}

impl RowState {
    fn new(target: usize) -> Self {
        Self {
            target,
            list: Vec::with_capacity(target),
            since_item: 0,
            entropy_before: None,
        }
    }

    fn done(&self) -> bool {
        self.list.len() >= self.target
    }

    /// Spec §4 step 3 (or the reason-first rule).
    fn reasons(&self, p: &ReasoningPolicy, entropy: f32) -> bool {
        if self.done() {
            return false;
        }
        match p.mode {
            ReasoningMode::None => false,
            ReasoningMode::EntropyGated => {
                f64::from(entropy) > p.theta && self.since_item < p.max_steps
            }
            ReasoningMode::ReasonFirst => self.list.is_empty() && self.since_item < p.max_steps,
        }
    }

    fn observe(&mut self, entropy: f32) {
        if !self.done() && self.entropy_before.is_none() {
            self.entropy_before = Some(entropy);
        }
    }

    fn pick(&mut self, item: usize, prob: f32, entropy: f32) {
        self.list.push(PositionTrace {
            item,
            prob,
            reasoning_steps: self.since_item as u32,
            entropy_before: self.entropy_before.take().unwrap_or(entropy),
            entropy_after: entropy,
        });
        self.since_item = 0;
    }
}

/// Picks an available candidate: argmax, or a draw from `probs` (renormalised over the
/// available ones, so rounding can never pick a taken or padded slot).
fn choose(probs: &[f32], available: &[f32], selection: &mut Selection<'_>) -> usize {
    let candidates = probs
        .iter()
        .zip(available)
        .enumerate()
        .filter(|(_, (_, &a))| a > 0.0);
    match selection {
        Selection::Greedy => candidates
            .max_by(|a, b| a.1 .0.total_cmp(b.1 .0))
            .map_or(0, |(j, _)| j),
        Selection::Sample(rng) => {
            let total: f64 = candidates.clone().map(|(_, (&p, _))| f64::from(p)).sum();
            let mut u = rng.random::<f64>() * total;
            let mut last = 0;
            for (j, (&p, _)) in candidates {
                last = j;
                u -= f64::from(p);
                if u <= 0.0 {
                    return j;
                }
            }
            last
        }
    }
}
