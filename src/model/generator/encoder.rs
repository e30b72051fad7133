//! The pool encoder (spec §4, eq. 9-10): `h_j = MLP_enc([e_j ; u])` and the DeepSets
//! context `s0 = rho(sum_j phi(h_j))`, invariant to the order of the pool. CMR's
//! hypernetwork generates `phi` from a preference vector instead of learning it;
//! LARES refines `h` with a recurrent block before the context is taken.

use candle_core::{Module, Result, Tensor};
use candle_nn::{linear, Linear, VarBuilder};

use super::super::config::GeneratorConfig;
use super::super::layers::{masked_sum, padding_mask, LayerNorm, Mlp, TransformerLayer};

/// `MLP_enc`, `phi` and `rho`, and LARES's recurrent core.
#[derive(Debug, Clone)]
pub(super) struct PoolEncoder {
    item_encoder: Mlp,
    core: Option<RecurrentCore>,
    phi: Phi,
    rho: Mlp,
}

impl PoolEncoder {
    /// Items and user joined are `width` wide; the encoder maps them to `d`.
    pub fn new(width: usize, d: usize, cfg: &GeneratorConfig, vb: &VarBuilder) -> Result<Self> {
        Ok(Self {
            item_encoder: Mlp::new(width, d, d, vb.pp("item_encoder"))?,
            core: cfg
                .variant
                .architecture()
                .recurrent_core
                .then(|| RecurrentCore::new(d, cfg, vb.pp("lares")))
                .transpose()?,
            phi: Phi::new(d, cfg, vb.clone())?,
            rho: Mlp::new(d, d, d, vb.pp("deepsets.rho"))?,
        })
    }

    /// `(h [b, n, d], s0 [b, d])` of the joined item-user embeddings `[b, n, width]`;
    /// only real candidates (`mask`) enter the sum.
    pub fn forward(&self, joined: &Tensor, mask: &Tensor) -> Result<(Tensor, Tensor)> {
        let h = self.item_encoder.forward(joined)?;
        let h = match &self.core {
            Some(core) => core.refine(&h, mask)?,
            None => h,
        };
        Ok((h.clone(), self.context(&h, mask)?))
    }

    /// Every step of LARES's refinement as `(h_i, s0_i)`, the last being
    /// [`Self::forward`]'s; without a recurrent core, that one step only.
    pub fn trajectory(&self, joined: &Tensor, mask: &Tensor) -> Result<Vec<(Tensor, Tensor)>> {
        let h = self.item_encoder.forward(joined)?;
        let steps = match &self.core {
            Some(core) => core.trajectory(&h, mask)?,
            None => vec![h],
        };
        steps
            .into_iter()
            .map(|h| {
                let s0 = self.context(&h, mask)?;
                Ok((h, s0))
            })
            .collect()
    }

    /// The DeepSets context `rho(sum_j phi(h_j))` over the real candidates.
    fn context(&self, h: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let pooled = masked_sum(&self.phi.forward(h)?.relu()?, mask)?;
        self.rho.forward(&pooled)
    }
}

/// LARES's depth-recurrent core: one pre-LN Transformer block `C` over the candidates
/// (padding masked), applied `depth` times with the same weights, each step reading
/// the encoder's `H` again: `T_i = C(LN(T_{i-1} + H))`, `T_0 = 0`. Every candidate is
/// refined at every step (LARES refines all tokens, not one).
#[derive(Debug, Clone)]
struct RecurrentCore {
    ln: LayerNorm,
    block: TransformerLayer,
    depth: usize,
}

impl RecurrentCore {
    fn new(d: usize, cfg: &GeneratorConfig, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            ln: LayerNorm::new(d, vb.pp("ln_refine"))?,
            block: TransformerLayer::new(d, cfg.heads, cfg.ffn_dim, vb.pp("core"))?,
            depth: cfg.recurrent_depth,
        })
    }

    /// `T_depth`.
    fn refine(&self, h: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let mut steps = self.trajectory(h, mask)?;
        steps
            .pop()
            .ok_or_else(|| candle_core::Error::Msg("a recurrent core of depth 0".into()))
    }

    /// `T_1 .. T_depth`.
    fn trajectory(&self, h: &Tensor, mask: &Tensor) -> Result<Vec<Tensor>> {
        let pad = padding_mask(mask)?;
        let mut t = h.zeros_like()?;
        let mut steps = Vec::with_capacity(self.depth);
        for _ in 0..self.depth {
            t = self.step(&t, h, &pad)?;
            steps.push(t.clone());
        }
        Ok(steps)
    }

    fn step(&self, t: &Tensor, h: &Tensor, pad: &Tensor) -> Result<Tensor> {
        self.block.forward(&self.ln.forward(&(t + h)?)?, Some(pad))
    }
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
