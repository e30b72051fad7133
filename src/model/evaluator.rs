//! The evaluator (reward model, spec §3): scores a displayed list for its user.
//!
//! `x_i = [e_i ; u]` (3.1), `x'_i = [x_i ; p_i]` with a sinusoidal `p_i` (3.2), a linear
//! projection to `d_model` and a learnable `cls` token (3.3), `N_e` Transformer encoder
//! layers with a key-padding mask (3.4), then a point-wise click head on each `h_i` and
//! a list-wise head on `h_cls` (3.5).

use candle_core::{Module, Result, Tensor, D};
use candle_nn::{linear, Linear, VarBuilder};

use super::config::EvaluatorConfig;
use super::embedding::{join_user, FeatureEmbedding, PoolTensors};
use super::layers::{padding_mask, sinusoidal, LayerNorm, Mlp, TransformerLayer};
use crate::features::FeatureEncoder;

/// Output of the evaluator on a batch of lists.
#[derive(Debug, Clone)]
pub struct ListScores {
    /// `[b, l]` click logits; `yhat = sigmoid`.
    pub click_logits: Tensor,
    /// `[b]` list-wise logit `z`; predicted utility `vhat = exp(z)`.
    pub list_logit: Tensor,
}

#[derive(Debug, Clone)]
pub struct Evaluator {
    embedding: FeatureEmbedding,
    input: Linear,
    cls: Tensor,
    layers: Vec<TransformerLayer>,
    final_norm: LayerNorm,
    click_head: Mlp,
    list_head: Mlp,
    positions: Tensor,
    max_len: usize,
    previous_item: bool,
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
        let previous = if cfg.previous_item {
            2 * embedding.item_dim()
        } else {
            0
        };
        let width = embedding.item_dim() + previous + embedding.user_dim() + cfg.position_dim;
        let layers = (0..cfg.layers)
            .map(|i| {
                TransformerLayer::new(
                    cfg.d_model,
                    cfg.heads,
                    cfg.ffn_dim,
                    vb.pp(format!("encoder.{i}")),
                )
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            input: linear(width, cfg.d_model, vb.pp("input"))?,
            cls: vb.get_with_hints(
                (1, 1, cfg.d_model),
                "cls",
                candle_nn::Init::Randn {
                    mean: 0.0,
                    stdev: 0.02,
                },
            )?,
            layers,
            final_norm: LayerNorm::new(cfg.d_model, vb.pp("final_norm"))?,
            click_head: Mlp::new(cfg.d_model, cfg.d_model, 1, vb.pp("click_head"))?,
            list_head: Mlp::new(cfg.d_model, cfg.d_model, 1, vb.pp("list_head"))?,
            positions: sinusoidal(max_len, cfg.position_dim, vb.device())?,
            embedding,
            max_len,
            previous_item: cfg.previous_item,
        })
    }

    pub fn embedding(&self) -> &FeatureEmbedding {
        &self.embedding
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
        let items = match order {
            None => items,
            Some(order) => gather_rows(&items, order)?,
        };
        self.score(user.as_ref(), &items, list_mask)
    }

    /// Scores embedded lists `items [b, l, di]` in display order.
    pub fn score(
        &self,
        user: Option<&Tensor>,
        items: &Tensor,
        list_mask: &Tensor,
    ) -> Result<ListScores> {
        let (b, l, _) = items.dims3()?;
        if l > self.max_len {
            return Err(candle_core::Error::Msg(format!(
                "list of {l} items exceeds the evaluator's maximum of {}",
                self.max_len
            )));
        }
        let x = if self.previous_item {
            // Beyond the paper (config `evaluator.previous_item`): each position also
            // reads the item shown just above it (zeros at the top) and the element-wise
            // product of the two embeddings, so an adjacency effect (kind `a` priming
            // kind `next(a)`) is a linear function of the input instead of an
            // interaction the network has to discover through attention over positions.
            let previous = if l > 1 {
                let zeros = Tensor::zeros((b, 1, items.dim(2)?), items.dtype(), items.device())?;
                Tensor::cat(&[&zeros, &items.narrow(1, 0, l - 1)?], 1)?
            } else {
                items.zeros_like()?
            };
            let previous = previous.broadcast_mul(&list_mask.unsqueeze(2)?)?;
            let product = (items * &previous)?;
            join_user(&Tensor::cat(&[items, &previous, &product], 2)?, user)?
        } else {
            join_user(items, user)? // spec §3 step 1
        };
        let p = self
            .positions
            .narrow(0, 0, l)?
            .unsqueeze(0)?
            .broadcast_as((b, l, self.positions.dim(1)?))?;
        let x = Tensor::cat(&[&x, &p.contiguous()?], 2)?; // spec §3 step 2
        let x = self.input.forward(&x)?;
        let cls = self.cls.broadcast_as((b, 1, x.dim(2)?))?;
        let mut h = Tensor::cat(&[&cls.contiguous()?, &x], 1)?; // spec §3 step 3
                                                                // Key-padding mask: cls is always visible, padded positions never are.
        let keep = Tensor::cat(
            &[
                &Tensor::ones((b, 1), list_mask.dtype(), list_mask.device())?,
                list_mask,
            ],
            1,
        )?;
        let additive = padding_mask(&keep)?;
        for layer in &self.layers {
            h = layer.forward(&h, Some(&additive))?; // 3.4
        }
        let h = self.final_norm.forward(&h)?;
        let click_logits = self
            .click_head
            .forward(&h.narrow(1, 1, l)?)?
            .squeeze(D::Minus1)?;
        let list_logit = self
            .list_head
            .forward(&h.narrow(1, 0, 1)?)?
            .squeeze(D::Minus1)?
            .squeeze(D::Minus1)?;
        Ok(ListScores {
            click_logits,
            list_logit,
        })
    }
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
