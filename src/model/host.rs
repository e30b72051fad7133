//! Inference-only CPU forms of the decoder's layers over plain `f32` slices: layer
//! norm, linear, and the pre-LN Transformer step over a preallocated KV cache with the
//! single-query attention fused into one pass.
//!
//! Why they exist: one decoder step at serving sizes is about thirty small candle ops,
//! each allocating its output and dispatching; at batch 1 that overhead is nearly all
//! of the time, and at batch 256 the allocations (page faults), the batched tiny
//! attention products and the copies between layouts cost more than the arithmetic
//! (the profile in `docs/performance.md`). These forms run a step with no allocation
//! and no autograd, on weights copied once from the candle layers. They compute what
//! `layers.rs` computes (the generator's tests compare whole decodes) and are used
//! only where nothing needs a gradient: greedy decoding of a loaded bundle.
//!
//! Everything here is `#[inline(always)]`: the decode runs inside one
//! [`pulp::Arch::dispatch`] (`generator/host_decode.rs`), and only code inlined into it
//! is compiled for the CPU's vector width (AVX2 and FMA where present); a call out of
//! it runs the baseline x86-64 code (SSE2).

use candle_core::{Result, Tensor};
use ndarray::linalg::general_mat_mul;
use ndarray::{ArrayView2, ArrayViewMut2};

fn host(t: &Tensor) -> Result<Vec<f32>> {
    t.flatten_all()?.to_vec1()
}

fn shape_error(e: ndarray::ShapeError) -> candle_core::Error {
    candle_core::Error::Msg(format!("host kernel shapes: {e}"))
}

/// `y = x W^T + b` with `W [output, input]` (candle-nn's layout).
#[derive(Debug, Clone)]
pub(crate) struct HostLinear {
    weight: Vec<f32>,
    /// `W^T [input, output]`: rows of the output are sums of its rows (small batches).
    transposed: Vec<f32>,
    bias: Vec<f32>,
    input: usize,
    output: usize,
}

/// Below this many rows a product skips `matrixmultiply`: it packs the whole weight
/// matrix on every call, which at one row costs more than the product (profiled: 45 %
/// of a batch-1 decode in packing).
pub(crate) const PACKED_FROM_ROWS: usize = 16;

impl HostLinear {
    pub fn new(linear: &candle_nn::Linear) -> Result<Self> {
        let (output, input) = linear.weight().dims2()?;
        Ok(Self {
            weight: host(linear.weight())?,
            transposed: host(&linear.weight().t()?.contiguous()?)?,
            bias: match linear.bias() {
                Some(b) => host(b)?,
                None => vec![0.0; output],
            },
            input,
            output,
        })
    }

    /// `out [rows, output] = x [rows, input] W^T + b`: one matrix product (the
    /// `matrixmultiply` kernels, chosen at run time for the CPU's vector width).
    #[inline(always)]
    pub fn forward(&self, x: &[f32], out: &mut [f32]) -> Result<()> {
        let rows = x.len() / self.input;
        for row in out.chunks_exact_mut(self.output) {
            row.copy_from_slice(&self.bias);
        }
        if rows < PACKED_FROM_ROWS {
            for (xs, ys) in x
                .chunks_exact(self.input)
                .zip(out.chunks_exact_mut(self.output))
            {
                for (&xi, wi) in xs.iter().zip(self.transposed.chunks_exact(self.output)) {
                    axpy(xi, wi, ys);
                }
            }
            return Ok(());
        }
        let x = ArrayView2::from_shape((rows, self.input), x).map_err(shape_error)?;
        let w = ArrayView2::from_shape((self.output, self.input), &self.weight[..])
            .map_err(shape_error)?;
        let mut y = ArrayViewMut2::from_shape((rows, self.output), out).map_err(shape_error)?;
        general_mat_mul(1.0, &x, &w.t(), 1.0, &mut y);
        Ok(())
    }
}

/// Layer norm over rows of `dim` (eps as in `layers::LayerNorm`).
#[derive(Debug, Clone)]
pub(crate) struct HostLayerNorm {
    weight: Vec<f32>,
    bias: Vec<f32>,
    eps: f32,
}

impl HostLayerNorm {
    pub fn new(weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: host(weight)?,
            bias: host(bias)?,
            eps: eps as f32,
        })
    }

    #[inline(always)]
    pub fn forward(&self, x: &[f32], out: &mut [f32]) {
        let dim = self.weight.len();
        for (xs, ys) in x.chunks_exact(dim).zip(out.chunks_exact_mut(dim)) {
            let mean = xs.iter().sum::<f32>() / dim as f32;
            let var = xs.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / dim as f32;
            let inv = 1.0 / (var + self.eps).sqrt();
            for (((y, &v), &w), &b) in ys.iter_mut().zip(xs).zip(&self.weight).zip(&self.bias) {
                *y = (v - mean) * inv * w + b;
            }
        }
    }
}

/// `sum_i a_i b_i` in eight independent lanes, so the compiler vectorises it (a single
/// running sum is a dependency chain it must keep in order).
#[inline(always)]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (xa, xb) in ca.zip(cb) {
        for i in 0..8 {
            lanes[i] += xa[i] * xb[i];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// `y += w x`.
#[inline(always)]
pub(crate) fn axpy(w: f32, x: &[f32], y: &mut [f32]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y += w * x;
    }
}

/// Keys and values of one layer, `[rows, heads, max_len, head_dim]`, written in place.
#[derive(Debug)]
pub(crate) struct HostKv {
    keys: Vec<f32>,
    values: Vec<f32>,
    max_len: usize,
}

/// Buffers of one step, reused across steps.
#[derive(Debug)]
pub(crate) struct Scratch {
    normed: Vec<f32>,
    qkv: Vec<f32>,
    context: Vec<f32>,
    projected: Vec<f32>,
    hidden: Vec<f32>,
    weights: Vec<f32>,
}

/// A pre-LN Transformer layer (`x + Attn(LN(x))`, then `x + FFN(LN(x))`, ReLU FFN), as
/// `layers::TransformerLayer` computes it, one token per row per step.
#[derive(Debug, Clone)]
pub(crate) struct HostTransformerLayer {
    pub ln_attn: HostLayerNorm,
    pub qkv: HostLinear,
    pub out: HostLinear,
    pub heads: usize,
    pub ln_ffn: HostLayerNorm,
    pub ffn_hidden: HostLinear,
    pub ffn_out: HostLinear,
}

impl HostTransformerLayer {
    fn d(&self) -> usize {
        self.out.output
    }

    /// Bytes of one row's keys and values for `max_len` tokens ([`Self::new_cache`]).
    pub fn cache_bytes_per_row(&self, max_len: usize) -> usize {
        2 * self.d() * max_len * std::mem::size_of::<f32>()
    }

    /// Bytes of one row's step buffers ([`Self::new_scratch`]).
    pub fn scratch_bytes_per_row(&self) -> usize {
        (6 * self.d() + self.ffn_hidden.output) * std::mem::size_of::<f32>()
    }

    pub fn new_cache(&self, rows: usize, max_len: usize) -> HostKv {
        let size = rows * self.d() * max_len;
        HostKv {
            keys: vec![0.0; size],
            values: vec![0.0; size],
            max_len,
        }
    }

    pub fn new_scratch(&self, rows: usize, max_len: usize) -> Scratch {
        let d = self.d();
        Scratch {
            normed: vec![0.0; rows * d],
            qkv: vec![0.0; rows * 3 * d],
            context: vec![0.0; rows * d],
            projected: vec![0.0; rows * d],
            hidden: vec![0.0; rows * self.ffn_hidden.output],
            weights: vec![0.0; max_len],
        }
    }

    /// Updates the residual stream `x [rows, d]` of the token at sequence index `t`,
    /// appending its keys and values to `cache`.
    #[inline(always)]
    pub fn step(&self, x: &mut [f32], t: usize, cache: &mut HostKv, s: &mut Scratch) -> Result<()> {
        let d = self.d();
        let head_dim = d / self.heads;
        self.ln_attn.forward(x, &mut s.normed);
        self.qkv.forward(&s.normed, &mut s.qkv)?;
        // The projection's output is `[3, heads, head_dim]` per row (q, k, v), as
        // `Attention::project` splits it.
        let scale = 1.0 / (head_dim as f32).sqrt();
        let span = cache.max_len * head_dim;
        for (row, qkv) in s.qkv.chunks_exact(3 * d).enumerate() {
            for head in 0..self.heads {
                let at = head * head_dim;
                let base = (row * self.heads + head) * span;
                let slot = base + t * head_dim;
                cache.keys[slot..slot + head_dim].copy_from_slice(&qkv[d + at..d + at + head_dim]);
                cache.values[slot..slot + head_dim]
                    .copy_from_slice(&qkv[2 * d + at..2 * d + at + head_dim]);
                // The new token attends to every cached token and itself: softmax of
                // `q k^T / sqrt(d_h)`, then the weighted sum of the values.
                let q = &qkv[at..at + head_dim];
                let weights = &mut s.weights[..=t];
                let mut max = f32::NEG_INFINITY;
                for (tau, w) in weights.iter_mut().enumerate() {
                    let k = &cache.keys[base + tau * head_dim..base + (tau + 1) * head_dim];
                    *w = dot(q, k) * scale;
                    max = max.max(*w);
                }
                let mut sum = 0.0;
                for w in weights.iter_mut() {
                    *w = (*w - max).exp();
                    sum += *w;
                }
                let ctx = &mut s.context[row * d + at..row * d + at + head_dim];
                ctx.fill(0.0);
                for (tau, &w) in weights.iter().enumerate() {
                    let v = &cache.values[base + tau * head_dim..base + (tau + 1) * head_dim];
                    axpy(w / sum, v, ctx);
                }
            }
        }
        self.out.forward(&s.context, &mut s.projected)?;
        add(x, &s.projected);
        self.ln_ffn.forward(x, &mut s.normed);
        self.ffn_hidden.forward(&s.normed, &mut s.hidden)?;
        for v in s.hidden.iter_mut() {
            *v = v.max(0.0);
        }
        self.ffn_out.forward(&s.hidden, &mut s.projected)?;
        add(x, &s.projected);
        Ok(())
    }
}

#[inline(always)]
fn add(x: &mut [f32], y: &[f32]) {
    for (x, y) in x.iter_mut().zip(y) {
        *x += y;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Module};

    /// Both product paths (below and above `PACKED_FROM_ROWS`) give candle's result.
    #[test]
    fn a_host_linear_computes_what_candle_computes_at_every_batch_size() {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1.0, (24, 10), &dev).expect("w");
        let b = Tensor::randn(0f32, 1.0, 24, &dev).expect("b");
        let linear = candle_nn::Linear::new(w, Some(b));
        let host_linear = HostLinear::new(&linear).expect("host");
        for rows in [1, 3, PACKED_FROM_ROWS - 1, PACKED_FROM_ROWS, 40] {
            let x = Tensor::randn(0f32, 1.0, (rows, 10), &dev).expect("x");
            let want = host(&linear.forward(&x).expect("forward")).expect("want");
            let mut got = vec![0f32; rows * 24];
            host_linear
                .forward(&host(&x).expect("x"), &mut got)
                .expect("host forward");
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() < 1e-4, "rows {rows}: {g} vs {w}");
            }
        }
    }

    #[test]
    fn dot_and_axpy_match_their_definitions_at_every_length() {
        for len in [0, 1, 7, 8, 9, 16, 23] {
            let a: Vec<f32> = (0..len).map(|i| i as f32 * 0.5 - 3.0).collect();
            let b: Vec<f32> = (0..len).map(|i| 1.0 + (i % 3) as f32).collect();
            let want: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!((dot(&a, &b) - want).abs() < 1e-4, "len {len}");
            let mut y = b.clone();
            axpy(2.0, &a, &mut y);
            for i in 0..len {
                assert_eq!(y[i], b[i] + 2.0 * a[i]);
            }
        }
    }
}
