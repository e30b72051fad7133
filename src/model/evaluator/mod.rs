//! The evaluator (reward model, spec §3): scores a displayed list for its user.
//!
//! One type over three encoders ([`EvaluatorKind`]): the paper's bidirectional
//! Transformer ([`paper`]), the cascade evaluator that reads the list top to bottom
//! ([`cascade`]) and a logistic click model over generic list features ([`logistic`]).
//! All embed features the same way and emit the same [`ListScores`].

mod cascade;
mod logistic;
mod paper;
#[cfg(test)]
mod tests;

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use super::config::{EvaluatorConfig, EvaluatorKind};
use super::embedding::{FeatureEmbedding, PoolTensors};
use super::layers::TransformerLayer;
use crate::features::FeatureEncoder;
use cascade::CascadeEncoder;
use logistic::LogisticEncoder;
use paper::PaperEncoder;

/// Output of the evaluator on a batch of lists.
#[derive(Debug, Clone)]
pub struct ListScores {
    /// `[b, l]` click logits; `yhat = sigmoid`.
    pub click_logits: Tensor,
    /// `[b]` list-wise logit `z`; predicted utility `vhat = exp(z)`.
    pub list_logit: Tensor,
}

/// Embedded lists in display order.
#[derive(Debug, Clone)]
struct DisplayedLists {
    /// `[b, du]`, `None` without user features.
    user: Option<Tensor>,
    /// `[b, l, di]`.
    items: Tensor,
    /// `[b, l, c]` sparse item ids (u32), read by the cascade's list features.
    ids: Tensor,
}

#[derive(Debug, Clone)]
enum Encoder {
    Paper(PaperEncoder),
    Cascade(CascadeEncoder),
    Logistic(LogisticEncoder),
}

#[derive(Debug, Clone)]
pub struct Evaluator {
    embedding: FeatureEmbedding,
    encoder: Encoder,
    max_len: usize,
}

/// Pools embedded once, so many lists drawn from them can be scored without embedding
/// every candidate again (beam search over the evaluator).
#[derive(Debug, Clone)]
pub struct EmbeddedPools {
    user: Option<Tensor>,
    /// `[b * n, di]`: candidate `j` of pool `r` is row `r * n + j`.
    items: Tensor,
    /// `[b * n, c]`.
    ids: Tensor,
    n: usize,
}

impl Evaluator {
    /// `max_len`: the longest list it will score (positions are precomputed).
    pub fn new(
        cfg: &EvaluatorConfig,
        enc: &FeatureEncoder,
        max_len: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        let embedding = FeatureEmbedding::new(enc, cfg.embedding_dim, vb.pp("features"))?;
        let encoder = match cfg.kind {
            EvaluatorKind::Paper => {
                Encoder::Paper(PaperEncoder::new(cfg, &embedding, max_len, vb)?)
            }
            EvaluatorKind::Cascade => Encoder::Cascade(CascadeEncoder::new(
                cfg,
                &embedding,
                enc.item_fields().0,
                max_len,
                vb,
            )?),
            EvaluatorKind::Logistic => Encoder::Logistic(LogisticEncoder::new(
                cfg,
                &embedding,
                enc.item_fields().0,
                max_len,
                vb,
            )?),
        };
        Ok(Self {
            embedding,
            encoder,
            max_len,
        })
    }

    pub fn embedding(&self) -> &FeatureEmbedding {
        &self.embedding
    }

    /// Whether each position's click depends on the items above it only (the cascade
    /// and logistic kinds): a prefix's scores do not change when items are appended.
    pub fn is_causal(&self) -> bool {
        !matches!(self.encoder, Encoder::Paper(_))
    }

    /// Scores the lists `order [b, l]` (indices into each pool, u32) of `pools`; `None`
    /// scores each pool in its given order. `list_mask [b, l]` marks real positions.
    pub fn forward(
        &self,
        pools: &PoolTensors,
        order: Option<&Tensor>,
        list_mask: &Tensor,
    ) -> Result<ListScores> {
        let (user, items) = self.embedding.forward(pools)?;
        let lists = match order {
            None => DisplayedLists {
                user,
                items,
                ids: pools.item_sparse.clone(),
            },
            Some(order) => DisplayedLists {
                user,
                items: gather_rows(&items, order)?,
                ids: gather_rows(&pools.item_sparse, order)?,
            },
        };
        self.score(&lists, list_mask)
    }

    /// Each candidate's click logit without list context, the evaluator's point-wise
    /// score `[b, n]`: a causal kind scores every candidate alone at the top (the
    /// cascade's attractiveness is position-free, so only the top examination is added);
    /// the paper's kind scores the pool in its given order, as a point-wise head of a
    /// bidirectional encoder must.
    pub fn pointwise_logits(&self, pools: &PoolTensors) -> Result<Tensor> {
        match self.encoder {
            Encoder::Paper(_) => Ok(self.forward(pools, None, &pools.mask)?.click_logits),
            Encoder::Cascade(_) | Encoder::Logistic(_) => {
                let embedded = self.embed(pools)?;
                let n = embedded.n;
                let rows = embedded.items.dim(0)?;
                let singles: Vec<(usize, Vec<usize>)> =
                    (0..rows).map(|row| (row / n, vec![row % n])).collect();
                let scores = self.score_lists(&embedded, &singles)?;
                scores.click_logits.reshape((rows / n.max(1), n))
            }
        }
    }

    /// Embeds `pools` once for [`Self::score_lists`].
    pub fn embed(&self, pools: &PoolTensors) -> Result<EmbeddedPools> {
        let (user, items) = self.embedding.forward(pools)?;
        let (b, n, di) = items.dims3()?;
        let c = pools.item_sparse.dim(2)?;
        Ok(EmbeddedPools {
            user,
            items: items.reshape((b * n, di))?,
            ids: pools.item_sparse.reshape((b * n, c))?,
            n,
        })
    }

    /// Scores lists of one length, each `(pool row, candidate indices in display
    /// order)` of `pools`.
    pub fn score_lists(
        &self,
        pools: &EmbeddedPools,
        lists: &[(usize, Vec<usize>)],
    ) -> Result<ListScores> {
        let e = lists.len();
        let l = lists.first().map_or(0, |(_, order)| order.len());
        if lists.iter().any(|(_, order)| order.len() != l) {
            return Err(candle_core::Error::Msg(
                "score_lists takes lists of one length".into(),
            ));
        }
        let device = pools.items.device();
        let rows: Vec<u32> = lists
            .iter()
            .flat_map(|(r, order)| order.iter().map(move |&j| (r * pools.n + j) as u32))
            .collect();
        let rows = Tensor::from_vec(rows, e * l, device)?;
        let take = |t: &Tensor| -> Result<Tensor> {
            let width = t.dim(1)?;
            t.index_select(&rows, 0)?.reshape((e, l, width))
        };
        let user = match &pools.user {
            None => None,
            Some(u) => {
                let owners: Vec<u32> = lists.iter().map(|(r, _)| *r as u32).collect();
                Some(u.index_select(&Tensor::from_vec(owners, e, device)?, 0)?)
            }
        };
        let lists = DisplayedLists {
            user,
            items: take(&pools.items)?,
            ids: take(&pools.ids)?,
        };
        let mask = Tensor::ones((e, l), candle_core::DType::F32, device)?;
        self.score(&lists, &mask)
    }

    fn score(&self, lists: &DisplayedLists, list_mask: &Tensor) -> Result<ListScores> {
        let l = lists.items.dim(1)?;
        if l > self.max_len {
            return Err(candle_core::Error::Msg(format!(
                "list of {l} items exceeds the evaluator's maximum of {}",
                self.max_len
            )));
        }
        match &self.encoder {
            Encoder::Paper(p) => p.score(lists, list_mask),
            Encoder::Cascade(c) => c.score(lists, list_mask),
            Encoder::Logistic(g) => g.score(lists, list_mask),
        }
    }
}

/// The `N_e` Transformer layers of either encoder (`encoder.{i}`).
fn encoder_layers(cfg: &EvaluatorConfig, vb: &VarBuilder) -> Result<Vec<TransformerLayer>> {
    (0..cfg.layers)
        .map(|i| {
            TransformerLayer::new(
                cfg.d_model,
                cfg.heads,
                cfg.ffn_dim,
                vb.pp(format!("encoder.{i}")),
            )
        })
        .collect()
}

/// The item shown just above each position `[b, l, d]`: zeros at the top and below the
/// end of the list.
fn item_above(items: &Tensor, list_mask: &Tensor) -> Result<Tensor> {
    let (b, l, d) = items.dims3()?;
    let above = if l > 1 {
        let zeros = Tensor::zeros((b, 1, d), items.dtype(), items.device())?;
        Tensor::cat(&[&zeros, &items.narrow(1, 0, l - 1)?], 1)?
    } else {
        items.zeros_like()?
    };
    above.broadcast_mul(&list_mask.unsqueeze(2)?)
}

/// `(W_f e_{t-1,f}) * e_{t,f}` for each of the `fields` sparse item fields (the first
/// `fields * field_dim` features of an item) -> `[b, l, fields * field_dim]`: the
/// previous item's value of a field, mapped by that field's bilinear map `pair [F, e,
/// e]`, times this item's. Summed over the last axis it is the bilinear form
/// `e_{t-1,f}' W_f e_{t,f}`, a weight for every pair of values that need not be symmetric.
fn pair_interactions(
    pair: &Tensor,
    items: &Tensor,
    above: &Tensor,
    fields: usize,
    field_dim: usize,
) -> Result<Tensor> {
    let (b, l, _) = items.dims3()?;
    let (f, e) = (fields, field_dim);
    let sparse = |x: &Tensor| x.narrow(2, 0, f * e);
    let mapped = sparse(above)?
        .reshape((b * l, f, e))?
        .transpose(0, 1)?
        .contiguous()?
        .matmul(pair)?
        .transpose(0, 1)?
        .reshape((b, l, f * e))?;
    mapped * sparse(items)?
}

/// `items [b, n, d]` reordered by `order [b, l]` -> `[b, l, d]`.
pub fn gather_rows(items: &Tensor, order: &Tensor) -> Result<Tensor> {
    let (b, _, d) = items.dims3()?;
    let l = order.dim(1)?;
    let index = order.unsqueeze(2)?.broadcast_as((b, l, d))?.contiguous()?;
    items.contiguous()?.gather(&index, 1)
}

/// `log(1 + exp(x))`, stable for large |x|.
pub fn softplus(x: &Tensor) -> Result<Tensor> {
    x.relu()? + (x.abs()?.neg()?.exp()? + 1.0)?.log()?
}

/// The evaluator loss (spec eq. 15-17): BCE of the click head averaged over real
/// positions, plus `lambda` times the weighted logistic regression of the list head,
/// `WLR = -(r log sigmoid(z) + log(1 - sigmoid(z)))`.
pub fn evaluator_loss(
    scores: &ListScores,
    clicks: &Tensor,
    list_mask: &Tensor,
    utility: &Tensor,
    lambda: f64,
) -> Result<Tensor> {
    let x = &scores.click_logits;
    // BCE with logits: y softplus(-x) + (1 - y) softplus(x).
    let bce = (clicks * softplus(&x.neg()?)?)? + ((1.0 - clicks)? * softplus(x)?)?;
    let bce = ((bce? * list_mask)?.sum_all()? / list_mask.sum_all()?)?;
    let z = &scores.list_logit;
    // -log sigmoid(z) = softplus(-z); -log(1 - sigmoid(z)) = softplus(z).
    let wlr = ((utility * softplus(&z.neg()?)?)? + softplus(z)?)?.mean_all()?;
    bce + (wlr * lambda)?
}
