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

mod decoder;
mod encoder;
mod host_decode;
mod reasoning;
mod step;

use std::sync::Arc;

use candle_core::{Result, Tensor, D};
use candle_nn::VarBuilder;
use rand_chacha::ChaCha8Rng;

use super::config::{Architecture, GeneratorConfig, ReasoningPolicy, ReasoningToken};
use super::embedding::{join_user, FeatureEmbedding, PoolTensors};
use super::layers::{mask_scores, softmax};
use crate::features::FeatureEncoder;
pub use decoder::DecoderState;
use decoder::{Decoder, HostDecoder};
use encoder::PoolEncoder;
use reasoning::{progressive_log_prob, ReasoningTokens};
use step::{RowState, Step};

/// The encoded pool: candidate embeddings `h [b, n, d]`, DeepSets context `s0 [b, d]`.
#[derive(Debug, Clone)]
pub struct PoolEncoding {
    pub h: Tensor,
    pub s0: Tensor,
    pub mask: Tensor,
    pub lens: Vec<usize>,
}

/// How a recommend step picks the item.
#[derive(Debug)]
pub enum Pick<'a> {
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
    pub pick: Pick<'a>,
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
            pick: Pick::Greedy,
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
    /// `[b, L]` the recommendation log-probabilities `log p(l_t)` one by one, position
    /// `t` of the list in column `t` (0 past a short row's end; with `track_log_prob`):
    /// the tokens of DAPO's token-level loss, aligned by position, so a re-score whose
    /// gate reasons at other steps still lines up.
    pub item_log_probs: Option<Tensor>,
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
            item_log_probs: None,
            steps: 0,
        }
    }

    /// The decode of `rows` only, in that order (tracked tensors keep their graph).
    pub fn select_rows(&self, rows: &[usize]) -> Result<Decoded> {
        let pick = |t: &Option<Tensor>| -> Result<Option<Tensor>> {
            t.as_ref()
                .map(|t| {
                    let index = rows.iter().map(|&r| r as u32).collect::<Vec<_>>();
                    t.index_select(&Tensor::from_vec(index, rows.len(), t.device())?, 0)
                })
                .transpose()
        };
        Ok(Decoded {
            lists: rows.iter().map(|&r| self.lists[r].clone()).collect(),
            log_prob: pick(&self.log_prob)?,
            item_log_probs: pick(&self.item_log_probs)?,
            steps: self.steps,
            upstream: rows.iter().map(|&r| self.upstream[r]).collect(),
        })
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

    /// The per-position log-probabilities a decode with `track_log_prob` kept, and
    /// `[b, L]` 1/0 for the positions each row has.
    pub fn tracked_item_log_probs(&self) -> Result<(&Tensor, Tensor)> {
        let lp = self.item_log_probs.as_ref().ok_or_else(|| {
            candle_core::Error::Msg("decode returned no log-probabilities".into())
        })?;
        let (b, width) = lp.dims2()?;
        let mask: Vec<f32> = self
            .lists
            .iter()
            .flat_map(|l| (0..width).map(move |t| f32::from(u8::from(t < l.len()))))
            .collect();
        Ok((lp, Tensor::from_vec(mask, (b, width), lp.device())?))
    }
}

#[derive(Debug, Clone)]
pub struct Generator {
    cfg: GeneratorConfig,
    policy: ReasoningPolicy,
    architecture: Architecture,
    embedding: FeatureEmbedding,
    encoder: PoolEncoder,
    decoder: Decoder,
    reasoning: ReasoningTokens,
    /// `1 / sqrt(d_model)`: scale of the pointer scores.
    score_scale: f64,
    max_list_len: usize,
    /// The decoder's weights copied for the fused greedy decode on the CPU, once the
    /// weights are fixed ([`Generator::freeze`]).
    host: Option<Arc<HostDecoder>>,
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
        let policy = cfg.policy();
        Ok(Self {
            encoder: PoolEncoder::new(width, d, cfg, &vb)?,
            decoder: Decoder::new(cfg, max_list_len, &vb)?,
            reasoning: ReasoningTokens::new(&policy, d, &vb)?,
            embedding,
            score_scale: 1.0 / (d as f64).sqrt(),
            max_list_len,
            policy,
            architecture: cfg.variant.architecture(),
            cfg: cfg.clone(),
            host: None,
        })
    }

    /// Declares the weights fixed (a loaded bundle): greedy decodes on the CPU then run
    /// the fused host step ([`host_decode`]), which copied the weights. A generator under
    /// training must not be frozen: its copy would go stale, and it needs the candle
    /// path for gradients anyway. Variants whose reasoning tokens the host step does not
    /// build (ReaRec's positions, STREAM-Rec's refinement, the GRU decoder) and pools
    /// on a GPU keep the candle path.
    pub fn freeze(mut self) -> Result<Self> {
        let supported =
            self.policy.token != ReasoningToken::Residual && !self.reasoning.has_positions();
        self.host = if supported {
            self.decoder.to_host()?.map(Arc::new)
        } else {
            None
        };
        Ok(self)
    }

    /// Whether greedy decodes take the fused host step.
    pub fn decodes_on_host(&self) -> bool {
        self.host.is_some()
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
    pub fn encode(&self, pools: &PoolTensors) -> Result<PoolEncoding> {
        let (user, items) = self.embedding.forward(pools)?;
        let (h, s0) = self
            .encoder
            .forward(&join_user(&items, user.as_ref())?, &pools.mask)?;
        Ok(PoolEncoding {
            h,
            s0,
            mask: pools.mask.clone(),
            lens: pools.lens.clone(),
        })
    }

    /// The pools encoded at every step of LARES's recurrent refinement, the last being
    /// [`Self::encode`]'s (one step for a generator without it): its pre-training
    /// aligns them.
    pub fn encode_trajectory(&self, pools: &PoolTensors) -> Result<Vec<PoolEncoding>> {
        let (user, items) = self.embedding.forward(pools)?;
        let steps = self
            .encoder
            .trajectory(&join_user(&items, user.as_ref())?, &pools.mask)?;
        Ok(steps
            .into_iter()
            .map(|(h, s0)| PoolEncoding {
                h,
                s0,
                mask: pools.mask.clone(),
                lens: pools.lens.clone(),
            })
            .collect())
    }

    /// One decoder step for the new tokens `x [b, d]` at sequence index `t`.
    pub fn decoder_step(&self, x: &Tensor, t: usize, state: &mut DecoderState) -> Result<Tensor> {
        self.decoder.step(x, t, state)
    }

    /// The decoder over a whole token sequence `[b, t, d]` (causal): the output at every
    /// position.
    pub fn decoder_full(&self, tokens: &Tensor) -> Result<Tensor> {
        self.decoder.full(tokens)
    }

    /// A fresh decoder state; `fixed` preallocates the KV caches for `max_len` tokens
    /// (inference only: no gradient flows through them).
    pub fn new_state(&self, max_len: usize, fixed: bool) -> DecoderState {
        self.decoder.new_state(max_len, fixed)
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
        pool: &PoolEncoding,
        list_lens: &[usize],
        mut opts: DecodeOptions<'_>,
    ) -> Result<Decoded> {
        if let (Some(host), Pick::Greedy, false, true, true) = (
            &self.host,
            &opts.pick,
            opts.track_log_prob,
            opts.use_cache,
            pool.h.device().is_cpu(),
        ) {
            return self.decode_on_host(host, pool, list_lens);
        }
        let (b, n, _) = pool.h.dims3()?;
        let (mut rows, mut available, max_steps) = self.plan(pool, list_lens)?;
        let mut state = self.new_state(max_steps + 1, !opts.track_log_prob);
        let mut history: Vec<Tensor> = Vec::new();
        // Per step: the recommendations' log-probabilities `[b]`, and the terms of the
        // reasoning tokens (ReaRec's progressive loss, LatentR3's latent density); per
        // row, the step of each recommendation.
        let mut log_probs: Vec<Tensor> = Vec::new();
        let mut extra: Vec<Tensor> = Vec::new();
        let mut item_steps: Vec<Vec<u32>> = vec![Vec::new(); b];
        let mut x = pool.s0.clone();
        let mut t = 0;
        while rows.iter().any(|r| !r.done()) && t < max_steps {
            let o = if opts.use_cache {
                self.decoder.step(&x, t, &mut state)?
            } else {
                self.decoder_without_cache(&x, t, &mut history)?
            };
            // Step 1: pointer scores `a_j = <o, h_j>` (scaled), one copy to the host.
            let scores = (pool.h.matmul(&o.unsqueeze(2)?)?.squeeze(2)? * self.score_scale)?;
            let host: Vec<f32> = scores.flatten_all()?.to_vec1()?;
            // Steps 2-4: entropy, gate, choice.
            let step = Step::decide(
                &host,
                n,
                &mut rows,
                &mut available,
                &self.policy,
                &mut opts.pick,
            );
            let mut w = Tensor::from_slice(&step.weights, (b, 1, n), pool.h.device())?;
            if opts.track_log_prob {
                let taken = |row: usize| rows[row].list.len();
                let (tracked, lp) =
                    self.track(&scores, &step, &available, w, &opts.pick, taken, &mut extra)?;
                w = tracked;
                log_probs.push(lp);
                for (row, &r) in step.recommend.iter().enumerate() {
                    if r > 0.0 {
                        item_steps[row].push(t as u32);
                    }
                }
            }
            let density;
            (x, density) = self.next_tokens(&w, pool, &o, &step, &mut opts.pick)?;
            if let (Some(d), true) = (density, opts.track_log_prob) {
                let reasoning: Vec<f32> = step.reasoning.iter().map(|&r| f32::from(r)).collect();
                let device = d.device().clone();
                extra.push((d * Tensor::from_vec(reasoning, b, &device)?)?);
            }
            t += 1;
        }
        let (log_prob, item_log_probs) = if log_probs.is_empty() {
            (None, None)
        } else {
            let per_step = Tensor::stack(&log_probs, 1)?;
            let mut sum = per_step.sum(1)?;
            if !extra.is_empty() {
                sum = (sum + Tensor::stack(&extra, 1)?.sum(1)?)?;
            }
            let by_position = by_position(&per_step, &item_steps)?;
            (Some(sum), Some(by_position))
        };
        Ok(Decoded {
            upstream: vec![false; rows.len()],
            lists: rows.into_iter().map(|r| r.list).collect(),
            log_prob,
            item_log_probs,
            steps: t,
        })
    }

    /// Every row's decoding state, the 0/1 availability `[b * n]` of the candidates and
    /// the most decoder steps the longest list can take.
    fn plan(
        &self,
        pool: &PoolEncoding,
        list_lens: &[usize],
    ) -> Result<(Vec<RowState>, Vec<f32>, usize)> {
        let targets: Vec<usize> = list_lens
            .iter()
            .zip(&pool.lens)
            .map(|(&l, &m)| l.min(m))
            .collect();
        let max_steps = self
            .cfg
            .max_sequence(targets.iter().copied().max().unwrap_or(0));
        let rows = targets.iter().map(|&t| RowState::new(t)).collect();
        let available = pool.mask.flatten_all()?.to_vec1()?;
        Ok((rows, available, max_steps))
    }

    /// The decoder output at `t` recomputed over the whole sequence so far: the baseline
    /// the KV cache is measured against.
    fn decoder_without_cache(
        &self,
        x: &Tensor,
        t: usize,
        history: &mut Vec<Tensor>,
    ) -> Result<Tensor> {
        history.push(x.unsqueeze(1)?);
        let all = self.decoder.full(&Tensor::cat(history, 1)?)?;
        all.narrow(1, t, 1)?.squeeze(1)
    }

    /// Spec §5: this step's choices as tensors, so gradients reach them. Returns `w`
    /// with the context-aware reasoning rows replaced by their differentiable weights,
    /// and the log-probabilities `[b]` of the recommendations (0 for rows that did not
    /// recommend); pushes ReaRec's progressive term while teacher-forced to `extra`.
    /// `taken(row)`: items the row has.
    #[allow(clippy::too_many_arguments)]
    fn track(
        &self,
        scores: &Tensor,
        step: &Step,
        available: &[f32],
        w: Tensor,
        pick: &Pick<'_>,
        taken: impl Fn(usize) -> usize,
        extra: &mut Vec<Tensor>,
    ) -> Result<(Tensor, Tensor)> {
        let (b, n) = scores.dims2()?;
        let (p, device) = (&self.policy, scores.device());
        let avail = Tensor::from_slice(available, (b, n), device)?;
        // `available` already lost this step's picks: put them back for the softmax.
        let before = (avail + step.pick_mask(n, device)?)?;
        let masked = mask_scores(scores, &before)?;
        let reasons = step.any_reasoning();
        let w = if reasons && p.token == ReasoningToken::ContextAware {
            let soft = softmax(&(&masked / p.tau_reason)?)?.unsqueeze(1)?;
            let m =
                Tensor::from_slice(&step.reasoning, (b, 1, 1), device)?.broadcast_as((b, 1, n))?;
            m.where_cond(&soft, &w)?
        } else {
            w
        };
        let pick_t = Tensor::from_slice(&step.picks, (b, 1), device)?;
        let lp = candle_nn::ops::log_softmax(&(&masked / p.tau_recommend)?, D::Minus1)?
            .gather(&pick_t, 1)?
            .squeeze(1)?;
        let lp = (lp * Tensor::from_slice(&step.recommend, b, device)?)?;
        if let (Some(decay), Pick::Forced(targets), true) = (p.progressive_decay, pick, reasons) {
            extra.push(progressive_log_prob(
                &masked,
                &step.reasoning_step,
                &step.reasoning,
                |row| targets[row].get(taken(row)).copied(),
                p.tau0,
                decay,
            )?);
        }
        Ok((w, lp))
    }

    /// The next token of every row: `W h` (the chosen item's embedding, or a
    /// context-aware reasoning token), and for reasoning rows of the other token kinds
    /// the latent token built from the decoder output `o`; with LatentR3's noise, the
    /// sampled latent tokens' log-density `[b]` (meaningful in reasoning rows).
    fn next_tokens(
        &self,
        w: &Tensor,
        pool: &PoolEncoding,
        o: &Tensor,
        step: &Step,
        pick: &mut Pick<'_>,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let x = w.matmul(&pool.h)?.squeeze(1)?;
        let rng = match pick {
            Pick::Sample(rng) => Some(&mut **rng),
            _ => None,
        };
        let p = &self.policy;
        let from_output = p.token != ReasoningToken::ContextAware;
        let noisy = rng.is_some() && p.latent_noise > 0.0;
        // A context-aware token is already in `x` (its weights went into `W h`); the
        // other tokens, positions and noise are built here.
        if !(step.any_reasoning() && (from_output || noisy || self.reasoning.has_positions())) {
            return Ok((x, None));
        }
        let base = if from_output { o } else { &x };
        let (latent, density) = self
            .reasoning
            .latent_token(base, &step.reasoning_step, rng)?;
        let m = Tensor::from_slice(&step.reasoning, (step.reasoning.len(), 1), x.device())?
            .broadcast_as(x.shape())?;
        Ok((m.where_cond(&latent, &x)?, density))
    }
}

/// `[b, L]` from the per-step log-probabilities `[b, T]`: column `t` of row `r` is the
/// step of its `t`-th recommendation (`item_steps[r][t]`); past a row's end, step 0's
/// entry (masked by [`Decoded::tracked_item_log_probs`]).
fn by_position(per_step: &Tensor, item_steps: &[Vec<u32>]) -> Result<Tensor> {
    let width = item_steps.iter().map(Vec::len).max().unwrap_or(0).max(1);
    let index: Vec<u32> = item_steps
        .iter()
        .flat_map(|s| (0..width).map(move |t| s.get(t).copied().unwrap_or(0)))
        .collect();
    let index = Tensor::from_vec(index, (item_steps.len(), width), per_step.device())?;
    per_step.gather(&index, 1)
}
