//! The paper's evaluator encoder (spec §3): `x_i = [e_i ; u]` (3.1), `x'_i = [x_i ; p_i]`
//! with a sinusoidal `p_i` (3.2), a linear projection to `d_model` and a learnable `cls`
//! token (3.3), `N_e` bidirectional Transformer encoder layers with a key-padding mask
//! (3.4), then a point-wise click head on each `h_i` and a list-wise head on `h_cls`
//! (3.5).

use candle_core::{Module, Result, Tensor, D};
use candle_nn::{linear, Linear, VarBuilder};

use super::{DisplayedLists, ListScores};
use crate::model::config::EvaluatorConfig;
use crate::model::embedding::{join_user, FeatureEmbedding};
use crate::model::layers::{padding_mask, sinusoidal, LayerNorm, Mlp, TransformerLayer};

#[derive(Debug, Clone)]
pub(super) struct PaperEncoder {
    input: Linear,
    cls: Tensor,
    layers: Vec<TransformerLayer>,
    final_norm: LayerNorm,
    click_head: Mlp,
    list_head: Mlp,
    positions: Tensor,
    previous_item: bool,
}

impl PaperEncoder {
    pub(super) fn new(
        cfg: &EvaluatorConfig,
        embedding: &FeatureEmbedding,
        max_len: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        let previous = if cfg.previous_item {
            2 * embedding.item_dim()
        } else {
            0
        };
        let width = embedding.item_dim() + previous + embedding.user_dim() + cfg.position_dim;
        let layers = super::encoder_layers(cfg, &vb)?;
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
            previous_item: cfg.previous_item,
        })
    }

    pub(super) fn score(&self, lists: &DisplayedLists, list_mask: &Tensor) -> Result<ListScores> {
        let items = &lists.items;
        let (b, l, _) = items.dims3()?;
        let x = if self.previous_item {
            // Beyond the paper (config `evaluator.previous_item`): each position also
            // reads the item shown just above it (zeros at the top) and the element-wise
            // product of the two embeddings, so an adjacency effect (kind `a` priming
            // kind `next(a)`) is a linear function of the input instead of an
            // interaction the network has to discover through attention over positions.
            let previous = super::item_above(items, list_mask)?;
            let product = (items * &previous)?;
            join_user(
                &Tensor::cat(&[items, &previous, &product], 2)?,
                lists.user.as_ref(),
            )?
        } else {
            join_user(items, lists.user.as_ref())? // spec §3 step 1
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
