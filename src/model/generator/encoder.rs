//! The pool encoder (spec §4, eq. 9-10): `h_j = MLP_enc([e_j ; u])` and the DeepSets
//! context `s0 = rho(sum_j phi(h_j))`, invariant to the order of the pool. CMR's
//! hypernetwork generates `phi` from a preference vector instead of learning it.

use candle_core::{Module, Result, Tensor};
use candle_nn::{linear, Linear, VarBuilder};

use super::super::config::GeneratorConfig;
use super::super::layers::{masked_sum, Mlp};

/// `MLP_enc`, `phi` and `rho`.
#[derive(Debug, Clone)]
pub(super) struct PoolEncoder {
    item_encoder: Mlp,
    phi: Phi,
    rho: Mlp,
}

impl PoolEncoder {
    /// Items and user joined are `width` wide; the encoder maps them to `d`.
    pub fn new(width: usize, d: usize, cfg: &GeneratorConfig, vb: &VarBuilder) -> Result<Self> {
        Ok(Self {
            item_encoder: Mlp::new(width, d, d, vb.pp("item_encoder"))?,
            phi: Phi::new(d, cfg, vb.clone())?,
            rho: Mlp::new(d, d, d, vb.pp("deepsets.rho"))?,
        })
    }

    /// `(h [b, n, d], s0 [b, d])` of the joined item-user embeddings `[b, n, width]`;
    /// only real candidates (`mask`) enter the sum.
    pub fn forward(&self, joined: &Tensor, mask: &Tensor) -> Result<(Tensor, Tensor)> {
        let h = self.item_encoder.forward(joined)?;
        let pooled = masked_sum(&self.phi.forward(&h)?.relu()?, mask)?;
        let s0 = self.rho.forward(&pooled)?;
        Ok((h, s0))
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
