//! The cascade evaluator (`evaluator.kind = "cascade"`, beyond the paper): the list read
//! as a user reads it, top to bottom.
//!
//! - **Causal attention.** Position `t` attends to itself and the items above it only:
//!   in a cascade click model a click depends on what was examined before, never after,
//!   so a change below `t` leaves `t`'s click probability unchanged. Beam search over the
//!   evaluator can then extend a prefix without re-scoring it.
//! - **Generic list features**, derived from the feature spec for any sparse item field
//!   (nothing is named after a field): how many items above share this item's value
//!   (bucketed 0, 1, 2, 3+: redundancy), and the bilinear interaction
//!   `(W_f e_{t-1,f}) * e_{t,f}` of the previous item's value with this one's
//!   (adjacency; unlike an element-wise product it need not be symmetric, so "a primes b"
//!   differs from "b primes a").
//! - **Examination x attractiveness** (PAL, Guo et al., RecSys 2019): the click
//!   probability is `sigma(w_t) * sigma(a_t)` with `w_t` a learnt examination logit per
//!   position and `a_t` the attractiveness of the item given the user and the items above
//!   it, which has no position input. Logged orders put relevant items on top, so a model
//!   that reads position and relevance through one input confounds the two; here the
//!   position effect has a term of its own and the point-wise sort reads `a_t` alone.
//!
//! The click head's output stays a logit, `logit(sigma(w_t) sigma(a_t))`, so the loss
//! (spec eq. 15-17) and every reward read it as they read the paper's.

use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::{linear, Linear, VarBuilder};

use super::{DisplayedLists, ListScores};
use crate::model::config::EvaluatorConfig;
use crate::model::embedding::{join_user, FeatureEmbedding};
use crate::model::layers::{causal_mask, LayerNorm, Mlp, TransformerLayer};

/// Buckets of the same-value count: 0, 1, 2 and 3 or more items above.
pub(crate) const SAME_ABOVE_BUCKETS: usize = 4;

#[derive(Debug, Clone)]
pub(super) struct CascadeEncoder {
    /// `[F, e, e]`: one bilinear map per sparse item field (none without sparse fields).
    pair: Option<Tensor>,
    input: Linear,
    layers: Vec<TransformerLayer>,
    final_norm: LayerNorm,
    /// Attractiveness `a_t`.
    click_head: Mlp,
    list_head: Mlp,
    /// `[max_len]` examination logits `w_t`.
    examination: Tensor,
    fields: usize,
    field_dim: usize,
}

impl CascadeEncoder {
    /// `columns`: the sparse item columns whose same-value counts are read.
    pub(super) fn new(
        cfg: &EvaluatorConfig,
        embedding: &FeatureEmbedding,
        columns: usize,
        max_len: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        let (fields, field_dim) = (embedding.item_sparse_fields(), embedding.field_dim());
        let width = 2 * embedding.item_dim()
            + fields * field_dim
            + SAME_ABOVE_BUCKETS * columns
            + embedding.user_dim();
        let pair = (fields > 0)
            .then(|| {
                vb.get_with_hints(
                    (fields, field_dim, field_dim),
                    "pair",
                    candle_nn::Init::Randn {
                        mean: 0.0,
                        stdev: 1.0 / (field_dim as f64).sqrt(),
                    },
                )
            })
            .transpose()?;
        let layers = super::encoder_layers(cfg, &vb)?;
        Ok(Self {
            pair,
            input: linear(width, cfg.d_model, vb.pp("input"))?,
            layers,
            final_norm: LayerNorm::new(cfg.d_model, vb.pp("final_norm"))?,
            click_head: Mlp::new(cfg.d_model, cfg.d_model, 1, vb.pp("click_head"))?,
            list_head: Mlp::new(cfg.d_model, cfg.d_model, 1, vb.pp("list_head"))?,
            examination: vb.get_with_hints(max_len, "examination", candle_nn::Init::Const(0.0))?,
            fields,
            field_dim,
        })
    }

    pub(super) fn score(&self, lists: &DisplayedLists, list_mask: &Tensor) -> Result<ListScores> {
        let items = &lists.items;
        let (b, l, _) = items.dims3()?;
        let above = super::item_above(items, list_mask)?;
        let mut parts = vec![items.clone(), above.clone()];
        if let Some(pair) = &self.pair {
            parts.push(super::pair_interactions(
                pair,
                items,
                &above,
                self.fields,
                self.field_dim,
            )?);
        }
        parts.push(same_above_buckets(&lists.ids, list_mask)?);
        let x = join_user(&Tensor::cat(&parts, 2)?, lists.user.as_ref())?;
        let mut h = self.input.forward(&x)?;
        let causal = causal_mask(l, h.device())?;
        for layer in &self.layers {
            h = layer.forward(&h, Some(&causal))?;
        }
        let h = self.final_norm.forward(&h)?;
        let attractiveness = self.click_head.forward(&h)?.squeeze(D::Minus1)?;
        let examination = self
            .examination
            .narrow(0, 0, l)?
            .unsqueeze(0)?
            .broadcast_as((b, l))?;
        // log P = log sigma(w) + log sigma(a) = -(softplus(-w) + softplus(-a)).
        let log_p = (super::softplus(&examination.neg()?)?
            + super::softplus(&attractiveness.neg()?)?)?
        .neg()?;
        // logit(P) = log P - log(1 - P); P < 1 strictly, clamped against rounding.
        let log_not_p = (1.0 - log_p.exp()?)?.clamp(1e-7f32, 1.0f32)?.log()?;
        let click_logits = (log_p - log_not_p)?;
        // The list head reads the mean state of the real positions.
        let pooled = h
            .broadcast_mul(&list_mask.unsqueeze(2)?)?
            .sum(1)?
            .broadcast_div(&list_mask.sum_keepdim(1)?.clamp(1.0f32, f32::MAX)?)?;
        let list_logit = self.list_head.forward(&pooled)?.squeeze(D::Minus1)?;
        Ok(ListScores {
            click_logits,
            list_logit,
        })
    }
}

/// For every sparse item column, how many real items above position `t` carry the same
/// value as the item at `t`, one-hot in [`SAME_ABOVE_BUCKETS`] buckets:
/// `ids [b, l, c]` (u32) -> `[b, l, c * buckets]` (f32).
pub(crate) fn same_above_buckets(ids: &Tensor, list_mask: &Tensor) -> Result<Tensor> {
    let (b, l, c) = ids.dims3()?;
    let device = ids.device();
    // same[b, t, s, c] = ids[b, t, c] == ids[b, s, c]
    let same = ids
        .unsqueeze(2)?
        .broadcast_as((b, l, l, c))?
        .eq(&ids.unsqueeze(1)?.broadcast_as((b, l, l, c))?)?
        .to_dtype(DType::F32)?;
    let strictly_above: Vec<f32> = (0..l)
        .flat_map(|t| (0..l).map(move |s| f32::from(u8::from(s < t))))
        .collect();
    let strictly_above = Tensor::from_vec(strictly_above, (1, l, l, 1), device)?;
    let real = list_mask.reshape((b, 1, l, 1))?;
    let counts = same
        .broadcast_mul(&strictly_above)?
        .broadcast_mul(&real)?
        .sum(2)?;
    let last = (SAME_ABOVE_BUCKETS - 1) as f64;
    let mut buckets = (0..SAME_ABOVE_BUCKETS - 1)
        .map(|k| counts.eq(k as f64)?.to_dtype(DType::F32))
        .collect::<Result<Vec<_>>>()?;
    buckets.push(counts.ge(last)?.to_dtype(DType::F32)?);
    // [b, l, c, buckets] -> [b, l, c * buckets]
    Tensor::stack(&buckets, 3)?.reshape((b, l, c * SAME_ABOVE_BUCKETS))
}
