//! The generator (policy, spec §4): a DeepSets encoder of the pool and a causal
//! Transformer decoder with a KV cache that builds the list item by item, inserting
//! latent reasoning tokens when the selection entropy is high.
//!
//! Every variant of the ablation is a [`ReasoningPolicy`] of this one generator; the
//! pointer baselines are its [`Architecture`] options (a GRU decoder for EG-Rerank and
//! Seq2Slate, a hypernetwork DeepSets for CMR) and reasoning tokens of their own
//! (ReaRec's positions, LatentR3's noise, STREAM-Rec's residual refinement).
//!
//! A batch decodes in lock step: at every step each row appends exactly one token (a
//! reasoning token, the chosen item's embedding, or — once its list is complete — a
//! token nobody reads), so all rows share the sequence length and one KV cache tensor.

use candle_core::{Module, Result, Tensor, D};
use candle_nn::rnn::{GRUConfig, GRU, RNN};
use candle_nn::{linear, Linear, VarBuilder};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::config::{
    Architecture, DecoderKind, GeneratorConfig, ReasoningMode, ReasoningPolicy, ReasoningToken,
};
use super::embedding::{join_user, FeatureEmbedding, PoolTensors};
use super::layers::{
    causal_mask, mask_scores, masked_sum, sinusoidal, softmax, KvCache, LayerNorm, Mlp,
    TransformerLayer,
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
    /// Row `r` places `targets[r]` in order (teacher forcing: supervised training and
    /// re-scoring sampled lists).
    Forced(&'a [Vec<usize>]),
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
    /// Per list, true when generator-evaluator selection served the upstream order
    /// instead of the model's list ([`super::Ranker::rank`]).
    pub upstream: Vec<bool>,
}

impl Decoded {
    /// Lists of plain item indices (upstream, logged or sorted orders) as a decode
    /// result, so the evaluator scores them like generated lists.
    pub fn from_orders(lists: impl Iterator<Item = Vec<usize>>) -> Self {
        let lists: Vec<Vec<PositionTrace>> = lists
            .map(|l| {
                l.into_iter()
                    .map(|item| PositionTrace {
                        item,
                        prob: 0.0,
                        reasoning_steps: 0,
                        entropy_before: 0.0,
                        entropy_after: 0.0,
                    })
                    .collect()
            })
            .collect();
        Decoded {
            upstream: vec![false; lists.len()],
            lists,
            log_prob: None,
            steps: 0,
        }
    }

    pub fn orders(&self) -> Vec<Vec<usize>> {
        self.lists
            .iter()
            .map(|l| l.iter().map(|p| p.item).collect())
            .collect()
    }

    /// The log-probabilities a decode with `track_log_prob` kept.
    pub fn tracked_log_prob(&self) -> Result<&Tensor> {
        self.log_prob
            .as_ref()
            .ok_or_else(|| candle_core::Error::Msg("decode returned no log-probabilities".into()))
    }
}

/// The decoder of the list: a causal Transformer (spec §4) or a GRU cell.
#[derive(Debug, Clone)]
enum Decoder {
    Transformer {
        layers: Vec<TransformerLayer>,
        final_norm: LayerNorm,
        positions: Tensor,
    },
    Gru(GRU),
}

/// What a decode carries from one step to the next.
#[derive(Debug, Clone)]
pub enum DecoderState {
    /// One KV cache per Transformer layer.
    Kv(Vec<KvCache>),
    /// The GRU's hidden state (none before the first step).
    Gru(Option<Tensor>),
}

/// The DeepSets `phi` layer: its own weights, or weights a hypernetwork generates from
/// the preference vector (CMR).
#[derive(Debug, Clone)]
enum Phi {
    Plain(Linear),
    Hyper {
        /// Maps the preference to the `d x d + d` parameters of phi.
        hyper: Linear,
        preference: Tensor,
        d: usize,
    },
}

impl Phi {
    fn new(d: usize, cfg: &GeneratorConfig, vb: VarBuilder) -> Result<Self> {
        if !cfg.variant.architecture().hyper_encoder {
            return Ok(Phi::Plain(linear(d, d, vb.pp("deepsets.phi"))?));
        }
        let pref: Vec<f32> = cfg.preference.iter().map(|&p| p as f32).collect();
        Ok(Phi::Hyper {
            hyper: linear(2, d * d + d, vb.pp("deepsets.hyper"))?,
            preference: Tensor::from_vec(pref, (1, 2), vb.device())?,
            d,
        })
    }

    fn forward(&self, h: &Tensor) -> Result<Tensor> {
        match self {
            Phi::Plain(l) => l.forward(h),
            Phi::Hyper {
                hyper,
                preference,
                d,
            } => {
                // Generated at every call: the hypernetwork is what training updates.
                let params = hyper.forward(preference)?.squeeze(0)?;
                // Scaled like a Kaiming-initialised layer so the generated phi starts sane.
                let weight = (params.narrow(0, 0, d * d)?.reshape((*d, *d))? / (*d as f64).sqrt())?;
                let bias = params.narrow(0, d * d, *d)?;
                h.broadcast_matmul(&weight.t()?)?.broadcast_add(&bias)
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct Generator {
    cfg: GeneratorConfig,
    policy: ReasoningPolicy,
    architecture: Architecture,
    embedding: FeatureEmbedding,
    item_encoder: Mlp,
    phi: Phi,
    rho: Mlp,
    decoder: Decoder,
    /// STREAM-Rec's refinement `r = o + MLP(o)`.
    refine: Option<Mlp>,
    /// ReaRec's reasoning position embeddings `[K_pre, d]`.
    reasoning_positions: Option<Tensor>,
    /// `1 / sqrt(d_model)`: scale of the pointer scores.
    score_scale: f64,
    max_list_len: usize,
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
        let architecture = cfg.variant.architecture();
        let policy = cfg.policy();
        let decoder = match architecture.decoder {
            DecoderKind::Transformer => Decoder::Transformer {
                layers: (0..cfg.layers)
                    .map(|i| {
                        TransformerLayer::new(
                            d,
                            cfg.heads,
                            cfg.ffn_dim,
                            vb.pp(format!("decoder.{i}")),
                        )
                    })
                    .collect::<Result<Vec<_>>>()?,
                final_norm: LayerNorm::new(d, vb.pp("final_norm"))?,
                positions: sinusoidal(cfg.max_sequence(max_list_len) + 1, d, vb.device())?,
            },
            DecoderKind::Gru => Decoder::Gru(candle_nn::rnn::gru(
                d,
                d,
                GRUConfig::default(),
                vb.pp("decoder.gru"),
            )?),
        };
        Ok(Self {
            item_encoder: Mlp::new(width, d, d, vb.pp("item_encoder"))?,
            phi: Phi::new(d, cfg, vb.clone())?,
            rho: Mlp::new(d, d, d, vb.pp("deepsets.rho"))?,
            decoder,
            refine: (policy.token == ReasoningToken::Residual && policy.max_steps > 0)
                .then(|| Mlp::new(d, d, d, vb.pp("reasoning.refine")))
                .transpose()?,
            reasoning_positions: (policy.reasoning_positions && policy.max_steps > 0)
                .then(|| {
                    vb.get_with_hints(
                        (policy.max_steps, d),
                        "reasoning.positions.table",
                        candle_nn::Init::Randn {
                            mean: 0.0,
                            stdev: 1.0,
                        },
                    )
                })
                .transpose()?,
            embedding,
            score_scale: 1.0 / (d as f64).sqrt(),
            max_list_len,
            policy,
            architecture,
            cfg: cfg.clone(),
        })
    }

    /// The longest list it was built to generate.
    pub fn max_list_len(&self) -> usize {
        self.max_list_len
    }

    pub fn architecture(&self) -> Architecture {
        self.architecture
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
    pub fn decoder_step(&self, x: &Tensor, t: usize, state: &mut DecoderState) -> Result<Tensor> {
        match (&self.decoder, state) {
            (
                Decoder::Transformer {
                    layers,
                    final_norm,
                    positions,
                },
                DecoderState::Kv(caches),
            ) => {
                let mut h = x.broadcast_add(&positions.get(t)?)?.unsqueeze(1)?;
                for (layer, cache) in layers.iter().zip(caches.iter_mut()) {
                    h = layer.step(&h, cache)?;
                }
                final_norm.forward(&h)?.squeeze(1)
            }
            (Decoder::Gru(gru), DecoderState::Gru(h)) => {
                let prev = match h.take() {
                    Some(h) => candle_nn::rnn::GRUState { h },
                    None => gru.zero_state(x.dim(0)?)?,
                };
                let next = gru.step(x, &prev)?.h;
                *h = Some(next.clone());
                Ok(next)
            }
            _ => Err(candle_core::Error::Msg(
                "decoder state does not match the decoder".into(),
            )),
        }
    }

    /// The decoder over a whole token sequence `[b, t, d]` (causal): the output at every
    /// position. The Transformer attends with a causal mask; the GRU runs its steps.
    pub fn decoder_full(&self, tokens: &Tensor) -> Result<Tensor> {
        let (b, t, d) = tokens.dims3()?;
        match &self.decoder {
            Decoder::Transformer {
                layers,
                final_norm,
                positions,
            } => {
                let pos = positions
                    .narrow(0, 0, t)?
                    .unsqueeze(0)?
                    .broadcast_as((b, t, d))?;
                let mut h = (tokens + pos)?;
                let mask = causal_mask(t, tokens.device())?;
                for layer in layers {
                    h = layer.forward(&h, Some(&mask))?;
                }
                final_norm.forward(&h)
            }
            Decoder::Gru(gru) => {
                let states = gru.seq(tokens)?;
                Tensor::stack(&states.iter().map(|s| s.h.clone()).collect::<Vec<_>>(), 1)
            }
        }
    }

    /// A fresh decoder state; `fixed` preallocates the KV caches for `max_len` tokens
    /// (inference only: no gradient flows through them).
    pub fn new_state(&self, max_len: usize, fixed: bool) -> DecoderState {
        match &self.decoder {
            Decoder::Transformer { layers, .. } => DecoderState::Kv(
                (0..layers.len())
                    .map(|_| {
                        if fixed {
                            KvCache::fixed(max_len)
                        } else {
                            KvCache::growing()
                        }
                    })
                    .collect(),
            ),
            Decoder::Gru(_) => DecoderState::Gru(None),
        }
    }

    /// The reasoning token built from the decoder output `o` (plain or residual), with
    /// ReaRec's position embedding of reasoning step `steps[r]` added, and LatentR3's
    /// exploration noise while sampling.
    fn latent_token(
        &self,
        o: &Tensor,
        steps: &[u32],
        rng: Option<&mut ChaCha8Rng>,
    ) -> Result<Tensor> {
        let mut r = match &self.refine {
            Some(refine) => (o + refine.forward(o)?)?,
            None => o.clone(),
        };
        if let Some(table) = &self.reasoning_positions {
            let last = table.dim(0)?.saturating_sub(1) as u32;
            let idx: Vec<u32> = steps.iter().map(|&k| k.min(last)).collect();
            let idx = Tensor::from_vec(idx, steps.len(), o.device())?;
            r = (r + table.index_select(&idx, 0)?)?;
        }
        r = self.explore(&r, rng)?;
        Ok(r)
    }

    /// Adds LatentR3's Gaussian noise `N(0, sigma^2)` to latent tokens while sampling.
    fn explore(&self, r: &Tensor, rng: Option<&mut ChaCha8Rng>) -> Result<Tensor> {
        let sigma = self.policy.latent_noise;
        match rng {
            Some(rng) if sigma > 0.0 => {
                let noise: Vec<f32> = (0..r.elem_count())
                    .map(|_| (sigma * crate::random::normal(rng)) as f32)
                    .collect();
                r + Tensor::from_vec(noise, r.shape(), r.device())?
            }
            _ => Ok(r.clone()),
        }
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
        let (b, n, _) = pool.h.dims3()?;
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
        let mut state = self.new_state(max_steps + 1, !opts.track_log_prob);
        let mut history: Vec<Tensor> = Vec::new();
        let mut log_probs: Vec<Tensor> = Vec::new();
        let mut x = pool.s0.clone();
        let mut t = 0;
        let mut dist = vec![0f32; n];
        while rows.iter().any(|r| !r.done()) && t < max_steps {
            let o = if opts.use_cache {
                self.decoder_step(&x, t, &mut state)?
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
            let mut reasoning = vec![0u8; b];
            let mut reasoning_step = vec![0u32; b];
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
                    if p.token == ReasoningToken::ContextAware {
                        masked_softmax(a, avail, p.tau_reason, w);
                    }
                    reasoning[row] = 1;
                    reasoning_step[row] = state.since_item as u32;
                    state.since_item += 1;
                } else {
                    // Step 4: recommend from `softmax(a / tau_c)`.
                    masked_softmax(a, avail, p.tau_recommend, &mut dist);
                    let at = (row, state.list.len());
                    let item = choose(&dist, avail, &mut opts.selection, at);
                    w[item] = 1.0;
                    picks[row] = item as u32;
                    recommend[row] = 1.0;
                    available[row * n + item] = 0.0;
                    state.pick(item, dist[item], entropy);
                }
            }
            let mut w = Tensor::from_vec(weights, (b, 1, n), device)?;
            let reasons = reasoning.contains(&1);
            if opts.track_log_prob {
                let avail = Tensor::from_slice(&available, (b, n), device)?;
                // `available` already lost this step's picks: put them back for the softmax.
                let before = (avail + pick_mask(&picks, &recommend, n, device)?)?;
                let masked = mask_scores(&scores, &before)?;
                if reasons && p.token == ReasoningToken::ContextAware {
                    let soft = softmax(&(&masked / p.tau_reason)?)?.unsqueeze(1)?;
                    let m = Tensor::from_slice(&reasoning, (b, 1, 1), device)?
                        .broadcast_as((b, 1, n))?;
                    w = m.where_cond(&soft, &w)?;
                }
                let pick_t = Tensor::from_slice(&picks, (b, 1), device)?;
                let lp = candle_nn::ops::log_softmax(&(&masked / p.tau_recommend)?, D::Minus1)?
                    .gather(&pick_t, 1)?
                    .squeeze(1)?;
                log_probs.push((lp * Tensor::from_slice(&recommend, b, device)?)?);
                if let (Some(decay), Selection::Forced(targets), true) =
                    (p.progressive_decay, &opts.selection, reasons)
                {
                    log_probs.push(progressive_log_prob(
                        &masked,
                        &reasoning_step,
                        &reasoning,
                        |row| targets[row].get(rows[row].list.len()).copied(),
                        p.tau0,
                        decay,
                    )?);
                }
            }
            x = w.matmul(&pool.h)?.squeeze(1)?;
            let rng = match &mut opts.selection {
                Selection::Sample(rng) => Some(&mut **rng),
                _ => None,
            };
            let from_output = p.token != ReasoningToken::ContextAware;
            let noisy = rng.is_some() && p.latent_noise > 0.0;
            // A context-aware token is already in `x` (its weights went into `W h`); the
            // other tokens, positions and noise are built here.
            if reasons && (from_output || noisy || self.reasoning_positions.is_some()) {
                let base = if from_output { o } else { x.clone() };
                let latent = self.latent_token(&base, &reasoning_step, rng)?;
                let m = Tensor::from_slice(&reasoning, (b, 1), device)?.broadcast_as(x.shape())?;
                x = m.where_cond(&latent, &x)?;
            }
            t += 1;
        }
        let log_prob = if log_probs.is_empty() {
            None
        } else {
            Some(Tensor::stack(&log_probs, 1)?.sum(1)?)
        };
        Ok(Decoded {
            upstream: vec![false; rows.len()],
            lists: rows.into_iter().map(|r| r.list).collect(),
            log_prob,
            steps: t,
        })
    }
}

/// ReaRec's progressive loss term: at reasoning step `k` of each reasoning row, the log
/// probability of the row's next target under `softmax(a / (tau_0 decay^(k+1)))` — the
/// temperature falls as reasoning goes on, so later steps are pushed to be sharper.
fn progressive_log_prob(
    masked: &Tensor,
    step: &[u32],
    reasoning: &[u8],
    target: impl Fn(usize) -> Option<usize>,
    tau0: f64,
    decay: f64,
) -> Result<Tensor> {
    let b = step.len();
    let mut inv_tau = vec![1f32; b];
    let mut index = vec![0u32; b];
    let mut weight = vec![0f32; b];
    for row in 0..b {
        if let (1, Some(j)) = (reasoning[row], target(row)) {
            inv_tau[row] = (1.0 / (tau0 * decay.powi(step[row] as i32 + 1))) as f32;
            index[row] = j as u32;
            weight[row] = 1.0;
        }
    }
    let device = masked.device();
    let scaled = masked.broadcast_mul(&Tensor::from_vec(inv_tau, (b, 1), device)?)?;
    let lp = candle_nn::ops::log_softmax(&scaled, D::Minus1)?
        .gather(&Tensor::from_vec(index, (b, 1), device)?, 1)?
        .squeeze(1)?;
    lp * Tensor::from_vec(weight, b, device)?
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

/// Picks an available candidate for row `at.0`, position `at.1`: argmax, a draw from
/// `probs` (renormalised over the available ones, so rounding can never pick a taken or
/// padded slot), or the forced target (greedy if the target is missing or taken).
fn choose(
    probs: &[f32],
    available: &[f32],
    selection: &mut Selection<'_>,
    at: (usize, usize),
) -> usize {
    let candidates = probs
        .iter()
        .zip(available)
        .enumerate()
        .filter(|(_, (_, &a))| a > 0.0);
    let argmax = || {
        candidates
            .clone()
            .max_by(|a, b| a.1 .0.total_cmp(b.1 .0))
            .map_or(0, |(j, _)| j)
    };
    match selection {
        Selection::Greedy => argmax(),
        Selection::Forced(targets) => match targets.get(at.0).and_then(|t| t.get(at.1)) {
            Some(&j) if available.get(j).is_some_and(|&a| a > 0.0) => j,
            _ => argmax(),
        },
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
