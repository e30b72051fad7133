//! The logistic evaluator (`evaluator.kind = "logistic"`, beyond the paper): the click
//! model a ranking engineer writes by hand, with every feature derived from the feature
//! spec (no field is named), fitted by the same loss as the Transformers. It is the floor
//! every neural evaluator must pass, and a fast, explainable one: each click logit is a
//! sum of terms that can be read off one by one.
//!
//! The click logit of the item at position `t` is
//!
//! ```text
//! x_t = w_t                                    position (examination), one per slot
//!     + v . e_t + u . e_user                   each field's value and dense fields
//!     + sum_{f, g} r_{fg} <e_{t,f}, e_user,g>  each item field x each user field
//!     + sum_f s_f . same_above_{t,f}           items above sharing this value (0-3+)
//!     + sum_f e_{t-1,f}' W_f e_{t,f}           the previous item's value x this one's
//! ```
//!
//! where `e_{t,f}` is field `f`'s embedding of the item at `t`. The crosses are weights
//! for every pair of values, factorised through the embeddings as in a field-weighted
//! factorisation machine (Pan et al., WWW 2018), so pairs never logged together still get
//! one; for small vocabularies (`embedding_dim` at least the number of values) they are
//! the full one-hot crosses. The click at `t` reads no item below it, so the model is
//! causal like the cascade kind, and its point-wise score is an item's logit at the top.
//!
//! No list head of its own: the list logit is `z = log sum_t sigmoid(x_t)`, so the
//! predicted utility `exp(z)` is the expected number of clicks, the value at which the
//! WLR term (spec eq. 17) is minimal for a click-count utility.

use candle_core::{Module, Result, Tensor, D};
use candle_nn::{linear, linear_no_bias, Linear, VarBuilder};

use super::cascade::SAME_ABOVE_BUCKETS;
use super::{DisplayedLists, ListScores};
use crate::model::config::EvaluatorConfig;
use crate::model::embedding::FeatureEmbedding;

/// Its variables are named `logit_*` (and `examination`): `train::seeded_init` starts
/// them at zero, as a logistic regression starts, so every effect is learnt from the data
/// rather than cancelled from a random draw.
#[derive(Debug, Clone)]
pub(super) struct LogisticEncoder {
    /// `[max_len]` position logits `w_t`.
    examination: Tensor,
    /// `v` (and the intercept, its bias).
    item: Linear,
    /// `u`; `None` without user features.
    user: Option<Linear>,
    /// `r`: one weight per (item block, user block) pair; `None` without user features.
    crosses: Option<Linear>,
    /// `s`: one weight per sparse item column and bucket.
    same_above: Linear,
    /// `[F, e, e]`: `W_f` for every sparse item field; `None` without sparse fields.
    pair: Option<Tensor>,
    fields: usize,
    /// `e`: one field's embedding width.
    dim: usize,
}

impl LogisticEncoder {
    /// `columns`: the sparse item columns whose same-value counts are read.
    pub(super) fn new(
        cfg: &EvaluatorConfig,
        embedding: &FeatureEmbedding,
        columns: usize,
        max_len: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        let dim = cfg.embedding_dim;
        let fields = embedding.item_sparse_fields();
        let (item_blocks, user_blocks) = (embedding.item_dim() / dim, embedding.user_dim() / dim);
        let with_user = user_blocks > 0;
        let pair = (fields > 0)
            .then(|| {
                vb.get_with_hints(
                    (fields, dim, dim),
                    "logit_pair",
                    candle_nn::Init::Const(0.0),
                )
            })
            .transpose()?;
        Ok(Self {
            examination: vb.get_with_hints(max_len, "examination", candle_nn::Init::Const(0.0))?,
            item: linear(embedding.item_dim(), 1, vb.pp("logit_item"))?,
            user: with_user
                .then(|| linear_no_bias(embedding.user_dim(), 1, vb.pp("logit_user")))
                .transpose()?,
            crosses: with_user
                .then(|| linear_no_bias(item_blocks * user_blocks, 1, vb.pp("logit_crosses")))
                .transpose()?,
            same_above: linear_no_bias(SAME_ABOVE_BUCKETS * columns, 1, vb.pp("logit_same_above"))?,
            pair,
            fields,
            dim,
        })
    }

    pub(super) fn score(&self, lists: &DisplayedLists, list_mask: &Tensor) -> Result<ListScores> {
        let items = &lists.items;
        let (b, l, di) = items.dims3()?;
        let scalar = |x: Tensor| x.squeeze(D::Minus1);
        let mut logits = (self
            .examination
            .narrow(0, 0, l)?
            .unsqueeze(0)?
            .broadcast_as((b, l))?
            + scalar(self.item.forward(items)?)?)?;
        if let (Some(user), Some(u), Some(crosses)) = (&lists.user, &self.user, &self.crosses) {
            // <e_{t,f}, e_user,g> for every item block f and user block g: [b, l, F_i * F_u].
            let (ib, ub) = (di / self.dim, user.dim(1)? / self.dim);
            let dots = items
                .reshape((b, l * ib, self.dim))?
                .matmul(&user.reshape((b, ub, self.dim))?.transpose(1, 2)?)?
                .reshape((b, l, ib * ub))?;
            logits = (logits + scalar(crosses.forward(&dots)?)?)?;
            logits = logits.broadcast_add(&u.forward(user)?)?;
        }
        let same = super::cascade::same_above_buckets(&lists.ids, list_mask)?;
        logits = (logits + scalar(self.same_above.forward(&same)?)?)?;
        if let Some(pair) = &self.pair {
            let above = super::item_above(items, list_mask)?;
            let pairs = super::pair_interactions(pair, items, &above, self.fields, self.dim)?
                .sum(D::Minus1)?;
            logits = (logits + pairs)?;
        }
        // z = log sum_t sigmoid(x_t) over the real positions: exp(z) is expected clicks.
        let clicks = (candle_nn::ops::sigmoid(&logits)? * list_mask)?.sum(1)?;
        let list_logit = clicks.clamp(1e-6f32, f32::MAX)?.log()?;
        Ok(ListScores {
            click_logits: logits,
            list_logit,
        })
    }
}
