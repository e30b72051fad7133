//! The score-and-sort baselines of the paper's Table 2 (PRM, DLCM): a model reads the
//! pool in its initial (upstream) order and gives every candidate a score; the list is
//! the candidates sorted by score. What each paper does and what we simplified is on
//! [`Variant::Prm`] and [`Variant::Dlcm`].
//!
//! [`Variant::Prm`]: super::Variant::Prm
//! [`Variant::Dlcm`]: super::Variant::Dlcm

use candle_core::{Module, Result, Tensor, D};
use candle_nn::rnn::{GRUConfig, GRU, RNN};
use candle_nn::{linear, Linear, VarBuilder};

use super::config::{GeneratorConfig, ScorerKind, UpstreamMargin};
use super::embedding::{join_user, FeatureEmbedding, PoolTensors};
use super::generator::{Decoded, PositionTrace};
use super::layers::{mask_scores, padding_mask, LayerNorm, TransformerLayer};
use crate::features::FeatureEncoder;

#[derive(Debug, Clone)]
enum Body {
    /// Self-attention over the pool with learned positions.
    Prm {
        positions: Tensor,
        layers: Vec<TransformerLayer>,
        final_norm: LayerNorm,
        head: Linear,
    },
    /// A GRU over the pool; each state is scored against the final one.
    Dlcm {
        gru: GRU,
        context: Linear,
        head: Linear,
    },
}

#[derive(Debug, Clone)]
pub struct Scorer {
    embedding: FeatureEmbedding,
    input: Linear,
    body: Body,
    selection: Option<UpstreamMargin>,
}

impl Scorer {
    /// `max_len`: rows of PRM's learned position table; later pool positions share the
    /// last row.
    pub fn new(
        kind: ScorerKind,
        cfg: &GeneratorConfig,
        enc: &FeatureEncoder,
        max_len: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        let d = cfg.d_model;
        let embedding = FeatureEmbedding::new(enc, cfg.embedding_dim, vb.pp("features"))?;
        let width = embedding.item_dim() + embedding.user_dim();
        let body = match kind {
            ScorerKind::Prm => Body::Prm {
                positions: vb.get_with_hints(
                    (max_len.max(1), d),
                    "prm.positions.table",
                    candle_nn::Init::Randn {
                        mean: 0.0,
                        stdev: 1.0,
                    },
                )?,
                layers: (0..cfg.layers)
                    .map(|i| {
                        TransformerLayer::new(d, cfg.heads, cfg.ffn_dim, vb.pp(format!("prm.{i}")))
                    })
                    .collect::<Result<Vec<_>>>()?,
                final_norm: LayerNorm::new(d, vb.pp("prm.final_norm"))?,
                head: linear(d, 1, vb.pp("prm.head"))?,
            },
            ScorerKind::Dlcm => Body::Dlcm {
                gru: candle_nn::rnn::gru(d, d, GRUConfig::default(), vb.pp("dlcm.gru"))?,
                context: linear(d, d, vb.pp("dlcm.context"))?,
                head: linear(d, 1, vb.pp("dlcm.head"))?,
            },
        };
        Ok(Self {
            input: linear(width, d, vb.pp("input"))?,
            embedding,
            body,
            selection: cfg.selection,
        })
    }

    pub fn kind(&self) -> ScorerKind {
        match self.body {
            Body::Prm { .. } => ScorerKind::Prm,
            Body::Dlcm { .. } => ScorerKind::Dlcm,
        }
    }

    /// Scores `[b, n]` of every candidate; padded slots get a large negative score.
    /// Generator-evaluator selection at inference, if configured.
    pub fn selection(&self) -> Option<UpstreamMargin> {
        self.selection
    }

    pub fn forward(&self, pools: &PoolTensors) -> Result<Tensor> {
        let (user, items) = self.embedding.forward(pools)?;
        let x = self.input.forward(&join_user(&items, user.as_ref())?)?;
        let (b, n, d) = x.dims3()?;
        let scores = match &self.body {
            Body::Prm {
                positions,
                layers,
                final_norm,
                head,
            } => {
                let last = positions.dim(0)? as u32 - 1;
                let idx: Vec<u32> = (0..n as u32).map(|i| i.min(last)).collect();
                let pos = positions.index_select(&Tensor::from_vec(idx, n, x.device())?, 0)?;
                let mut h = x.broadcast_add(&pos)?;
                let mask = padding_mask(&pools.mask)?;
                for layer in layers {
                    h = layer.forward(&h, Some(&mask))?;
                }
                head.forward(&final_norm.forward(&h)?)?
            }
            Body::Dlcm { gru, context, head } => {
                let states = gru.seq(&x)?;
                let o = Tensor::stack(&states.iter().map(|s| s.h.clone()).collect::<Vec<_>>(), 1)?;
                // The final state is the one after each row's last real candidate.
                let last: Vec<u32> = pools
                    .lens
                    .iter()
                    .map(|&l| l.saturating_sub(1) as u32)
                    .collect();
                let last = Tensor::from_vec(last, (b, 1, 1), x.device())?
                    .broadcast_as((b, 1, d))?
                    .contiguous()?;
                let s_n = o.contiguous()?.gather(&last, 1)?;
                let local = context.forward(&s_n)?.tanh()?;
                head.forward(&o.broadcast_mul(&local)?)?
            }
        };
        mask_scores(&scores.squeeze(D::Minus1)?, &pools.mask)
    }

    /// The top `list_lens[r]` candidates of every row by score.
    pub fn rank(&self, pools: &PoolTensors, list_lens: &[usize]) -> Result<Decoded> {
        let scores = self.forward(pools)?;
        let probs: Vec<Vec<f32>> = candle_nn::ops::softmax_last_dim(&scores)?.to_vec2()?;
        let lists: Vec<Vec<PositionTrace>> = probs
            .iter()
            .zip(&pools.lens)
            .zip(list_lens)
            .map(|((p, &len), &want)| {
                let mut order: Vec<usize> = (0..len).collect();
                order.sort_by(|&a, &b| p[b].total_cmp(&p[a]));
                order
                    .into_iter()
                    .take(want)
                    .map(|item| PositionTrace {
                        item,
                        prob: p[item],
                        reasoning_steps: 0,
                        entropy_before: 0.0,
                        entropy_after: 0.0,
                    })
                    .collect()
            })
            .collect();
        Ok(Decoded {
            upstream: vec![false; lists.len()],
            lists,
            log_prob: None,
            item_log_probs: None,
            steps: 0,
        })
    }
}
