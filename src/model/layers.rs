//! Building blocks shared by the evaluator and the generator: sinusoidal positions,
//! multi-head attention with a KV cache, pre-LN Transformer layers, MLPs, and the
//! layer norm and softmax they use.

use candle_core::{Device, Module, Result, Tensor, D};
use candle_nn::{linear, Linear, VarBuilder};

use super::host::{HostLayerNorm, HostLinear, HostTransformerLayer};

/// Softmax over the last dimension that gradients flow through.
///
/// candle-nn's fused `softmax_last_dim` and `layer_norm` kernels are applied with
/// `apply_op*_no_bwd`: their output carries no backward op, so a gradient silently stops
/// there (every parameter below an attention or a layer norm got none, and the models
/// trained only their heads). The fused kernel is kept for inference, where nothing is
/// tracked; a tracked input takes the composite path, which autograd differentiates.
pub fn softmax(xs: &Tensor) -> Result<Tensor> {
    if xs.track_op() {
        candle_nn::ops::softmax(xs, D::Minus1)
    } else {
        candle_nn::ops::softmax_last_dim(xs)
    }
}

/// Layer norm over the last dimension (scale `weight`, shift `bias`, eps 1e-5) that
/// gradients flow through: see [`softmax`] for why not candle-nn's `LayerNorm`.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
}

const LAYER_NORM_EPS: f64 = 1e-5;

/// The names a layer norm may have. Seeded initialisation (`train::seeded_init`) knows a
/// layer norm's `weight` by its name, so a layer norm under any other name is refused
/// here instead of being initialised as something else.
pub const LAYER_NORM_NAMES: [&str; 4] = ["ln_attn", "ln_ffn", "final_norm", "ln_refine"];

impl LayerNorm {
    /// Variables `weight` (ones) and `bias` (zeros) under `vb`, as candle-nn names them
    /// (bundles written before this type load unchanged). The last part of `vb`'s prefix
    /// must be one of [`LAYER_NORM_NAMES`].
    pub fn new(dim: usize, vb: VarBuilder) -> Result<Self> {
        let prefix = vb.prefix();
        let name = prefix.rsplit('.').next().unwrap_or_default();
        if !LAYER_NORM_NAMES.contains(&name) {
            return Err(candle_core::Error::Msg(format!(
                "layer norm {prefix:?} is not named one of {LAYER_NORM_NAMES:?} (seeded initialisation finds layer norms by name)"
            )));
        }
        Ok(Self {
            weight: vb.get_with_hints(dim, "weight", candle_nn::Init::Const(1.0))?,
            bias: vb.get_with_hints(dim, "bias", candle_nn::Init::Const(0.0))?,
        })
    }
}

impl LayerNorm {
    /// This layer norm copied into its inference-only CPU form.
    pub(crate) fn to_host(&self) -> Result<HostLayerNorm> {
        HostLayerNorm::new(&self.weight, &self.bias, LAYER_NORM_EPS)
    }
}

impl Module for LayerNorm {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let tracked = xs.track_op() || self.weight.track_op() || self.bias.track_op();
        if !tracked && xs.is_contiguous() {
            return candle_nn::ops::layer_norm(xs, &self.weight, &self.bias, LAYER_NORM_EPS as f32);
        }
        let centred = xs.broadcast_sub(&xs.mean_keepdim(D::Minus1)?)?;
        let variance = centred.sqr()?.mean_keepdim(D::Minus1)?;
        centred
            .broadcast_div(&(variance + LAYER_NORM_EPS)?.sqrt()?)?
            .broadcast_mul(&self.weight)?
            .broadcast_add(&self.bias)
    }
}

/// Sinusoidal position embeddings `[len, dim]` (Vaswani et al.): pairs of
/// `sin(p / 10000^(2i/dim))`, `cos(...)`.
pub fn sinusoidal(len: usize, dim: usize, device: &Device) -> Result<Tensor> {
    let mut data = Vec::with_capacity(len * dim);
    for p in 0..len {
        for i in 0..dim {
            let freq = 1.0 / 10_000f64.powf((2 * (i / 2)) as f64 / dim as f64);
            let angle = p as f64 * freq;
            data.push(if i % 2 == 0 { angle.sin() } else { angle.cos() } as f32);
        }
    }
    Tensor::from_vec(data, (len, dim), device)
}

/// Two linear layers with a ReLU between.
#[derive(Debug, Clone)]
pub struct Mlp {
    hidden: Linear,
    out: Linear,
}

impl Mlp {
    pub fn new(input: usize, hidden: usize, output: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            hidden: linear(input, hidden, vb.pp("hidden"))?,
            out: linear(hidden, output, vb.pp("out"))?,
        })
    }
}

impl Module for Mlp {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        self.out.forward(&self.hidden.forward(xs)?.relu()?)
    }
}

/// Keys and values of past tokens, `[batch, heads, time, head_dim]`.
#[derive(Debug, Clone)]
pub enum KvCache {
    /// Grows by concatenation: differentiable, used in training.
    Growing(Option<(Tensor, Tensor)>),
    /// Preallocated buffer written in place: inference only (no gradient).
    Fixed(candle_nn::kv_cache::KvCache),
}

impl KvCache {
    pub fn growing() -> Self {
        KvCache::Growing(None)
    }

    pub fn fixed(max_len: usize) -> Self {
        KvCache::Fixed(candle_nn::kv_cache::KvCache::new(2, max_len))
    }

    /// Appends the new token's K/V and returns all K/V so far.
    fn append(&mut self, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        match self {
            KvCache::Growing(state) => {
                let (k, v) = match state.take() {
                    None => (k.clone(), v.clone()),
                    Some((pk, pv)) => (Tensor::cat(&[&pk, k], 2)?, Tensor::cat(&[&pv, v], 2)?),
                };
                *state = Some((k.clone(), v.clone()));
                Ok((k, v))
            }
            KvCache::Fixed(cache) => cache.append(&k.contiguous()?, &v.contiguous()?),
        }
    }
}

/// Multi-head self-attention.
#[derive(Debug, Clone)]
pub struct Attention {
    qkv: Linear,
    out: Linear,
    heads: usize,
    head_dim: usize,
}

impl Attention {
    pub fn new(d_model: usize, heads: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            qkv: linear(d_model, 3 * d_model, vb.pp("qkv"))?,
            out: linear(d_model, d_model, vb.pp("out"))?,
            heads,
            head_dim: d_model / heads,
        })
    }

    /// `[b, t, d]` -> q, k, v as `[b, heads, t, head_dim]`.
    fn project(&self, xs: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        let (b, t, _) = xs.dims3()?;
        let qkv = self
            .qkv
            .forward(xs)?
            .reshape((b, t, 3, self.heads, self.head_dim))?
            .permute((2, 0, 3, 1, 4))?;
        Ok((qkv.get(0)?, qkv.get(1)?, qkv.get(2)?))
    }

    fn attend(&self, q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let (b, _, t, _) = q.dims4()?;
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let mut scores = (q.matmul(&k.t()?)? * scale)?;
        if let Some(mask) = mask {
            scores = scores.broadcast_add(mask)?;
        }
        let weights = softmax(&scores)?;
        let ctx =
            weights
                .matmul(v)?
                .transpose(1, 2)?
                .reshape((b, t, self.heads * self.head_dim))?;
        self.out.forward(&ctx)
    }

    /// The whole sequence at once; `mask` is additive, broadcastable to
    /// `[b, heads, t, t]` (0 = attend, large negative = not).
    pub fn forward(&self, xs: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let (q, k, v) = self.project(xs)?;
        self.attend(&q.contiguous()?, &k.contiguous()?, &v.contiguous()?, mask)
    }

    /// One new token `[b, 1, d]` attending to the cache and itself: computes K/V for the
    /// new token only (spec §4).
    pub fn step(&self, xs: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        let (q, k, v) = self.project(xs)?;
        let (k, v) = cache.append(&k, &v)?;
        self.attend(&q.contiguous()?, &k, &v, None)
    }
}

/// Pre-LN Transformer layer: `x + Attn(LN(x))`, then `x + FFN(LN(x))`.
#[derive(Debug, Clone)]
pub struct TransformerLayer {
    ln_attn: LayerNorm,
    attn: Attention,
    ln_ffn: LayerNorm,
    ffn: Mlp,
}

impl TransformerLayer {
    pub fn new(d_model: usize, heads: usize, ffn_dim: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            ln_attn: LayerNorm::new(d_model, vb.pp("ln_attn"))?,
            attn: Attention::new(d_model, heads, vb.pp("attn"))?,
            ln_ffn: LayerNorm::new(d_model, vb.pp("ln_ffn"))?,
            ffn: Mlp::new(d_model, ffn_dim, d_model, vb.pp("ffn"))?,
        })
    }

    pub fn forward(&self, xs: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let xs = (xs + self.attn.forward(&self.ln_attn.forward(xs)?, mask)?)?;
        &xs + self.ffn.forward(&self.ln_ffn.forward(&xs)?)?
    }

    pub fn step(&self, xs: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        let xs = (xs + self.attn.step(&self.ln_attn.forward(xs)?, cache)?)?;
        &xs + self.ffn.forward(&self.ln_ffn.forward(&xs)?)?
    }

    /// This layer's weights copied into its inference-only CPU form.
    pub(crate) fn to_host(&self) -> Result<HostTransformerLayer> {
        Ok(HostTransformerLayer {
            ln_attn: self.ln_attn.to_host()?,
            qkv: HostLinear::new(&self.attn.qkv)?,
            out: HostLinear::new(&self.attn.out)?,
            heads: self.attn.heads,
            ln_ffn: self.ln_ffn.to_host()?,
            ffn_hidden: HostLinear::new(&self.ffn.hidden)?,
            ffn_out: HostLinear::new(&self.ffn.out)?,
        })
    }
}

/// Additive causal mask `[t, t]`: position i attends to positions <= i.
pub fn causal_mask(t: usize, device: &Device) -> Result<Tensor> {
    let data: Vec<f32> = (0..t)
        .flat_map(|i| (0..t).map(move |j| if j <= i { 0.0 } else { NEG_INF }))
        .collect();
    Tensor::from_vec(data, (t, t), device)
}

/// A large negative number for masking (finite, so `0 * mask` stays 0).
pub const NEG_INF: f32 = -1e9;

/// `where(mask, xs, NEG_INF)` for a 0/1 float mask of the same shape.
pub fn mask_scores(xs: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let neg = Tensor::full(NEG_INF, xs.shape(), xs.device())?.to_dtype(xs.dtype())?;
    mask.ne(0.0)?.where_cond(xs, &neg)
}

/// Sum over dim 1 of `xs [b, n, d]` weighted by `mask [b, n]`.
pub fn masked_sum(xs: &Tensor, mask: &Tensor) -> Result<Tensor> {
    xs.broadcast_mul(&mask.unsqueeze(D::Minus1)?)?.sum(1)
}

/// Additive key-padding mask `[b, 1, 1, n]` from a 0/1 mask `[b, n]`: padded keys are
/// never attended to.
pub fn padding_mask(mask: &Tensor) -> Result<Tensor> {
    let (b, n) = mask.dims2()?;
    ((mask - 1.0)? * f64::from(-NEG_INF))?.reshape((b, 1, 1, n))
}
