//! The list decoder (spec §4): a causal Transformer with a KV cache, or a GRU cell for
//! the pointer baselines (EG-Rerank, Seq2Slate). One step per token at decode time; the
//! whole sequence at once to check the cache.

use candle_core::{Module, Result, Tensor};
use candle_nn::rnn::{GRUConfig, GRU, RNN};
use candle_nn::VarBuilder;

use super::super::config::{DecoderKind, GeneratorConfig};
use super::super::host::{HostKv, HostLayerNorm, HostTransformerLayer, Scratch};
use super::super::layers::{causal_mask, sinusoidal, KvCache, LayerNorm, TransformerLayer};

/// The decoder of the list: a causal Transformer (spec §4) or a GRU cell.
#[derive(Debug, Clone)]
pub(super) enum Decoder {
    Transformer {
        layers: Vec<TransformerLayer>,
        final_norm: LayerNorm,
        positions: Tensor,
    },
    Gru(GRU),
}

/// What a decode carries from one step to the next.
#[derive(Debug, Clone)]
pub enum DecoderState {
    /// One KV cache per Transformer layer.
    Kv(Vec<KvCache>),
    /// The GRU's hidden state (none before the first step).
    Gru(Option<Tensor>),
}

impl Decoder {
    /// Positions are precomputed for the longest sequence a list of `max_list_len`
    /// items can take.
    pub fn new(cfg: &GeneratorConfig, max_list_len: usize, vb: &VarBuilder) -> Result<Self> {
        let d = cfg.d_model;
        Ok(match cfg.variant.architecture().decoder {
            DecoderKind::Transformer => Decoder::Transformer {
                layers: (0..cfg.layers)
                    .map(|i| {
                        TransformerLayer::new(
                            d,
                            cfg.heads,
                            cfg.ffn_dim,
                            vb.pp(format!("decoder.{i}")),
                        )
                    })
                    .collect::<Result<Vec<_>>>()?,
                final_norm: LayerNorm::new(d, vb.pp("final_norm"))?,
                positions: sinusoidal(cfg.max_sequence(max_list_len) + 1, d, vb.device())?,
            },
            DecoderKind::Gru => Decoder::Gru(candle_nn::rnn::gru(
                d,
                d,
                GRUConfig::default(),
                vb.pp("decoder.gru"),
            )?),
        })
    }

    /// One decoder step for the new tokens `x [b, d]` at sequence index `t`.
    pub fn step(&self, x: &Tensor, t: usize, state: &mut DecoderState) -> Result<Tensor> {
        match (self, state) {
            (
                Decoder::Transformer {
                    layers,
                    final_norm,
                    positions,
                },
                DecoderState::Kv(caches),
            ) => {
                let mut h = x.broadcast_add(&positions.get(t)?)?.unsqueeze(1)?;
                for (layer, cache) in layers.iter().zip(caches.iter_mut()) {
                    h = layer.step(&h, cache)?;
                }
                final_norm.forward(&h)?.squeeze(1)
            }
            (Decoder::Gru(gru), DecoderState::Gru(h)) => {
                let prev = match h.take() {
                    Some(h) => candle_nn::rnn::GRUState { h },
                    None => gru.zero_state(x.dim(0)?)?,
                };
                let next = gru.step(x, &prev)?.h;
                *h = Some(next.clone());
                Ok(next)
            }
            _ => Err(candle_core::Error::Msg(
                "decoder state does not match the decoder".into(),
            )),
        }
    }

    /// The decoder over a whole token sequence `[b, t, d]` (causal): the output at every
    /// position. The Transformer attends with a causal mask; the GRU runs its steps.
    pub fn full(&self, tokens: &Tensor) -> Result<Tensor> {
        let (b, t, d) = tokens.dims3()?;
        match self {
            Decoder::Transformer {
                layers,
                final_norm,
                positions,
            } => {
                let pos = positions
                    .narrow(0, 0, t)?
                    .unsqueeze(0)?
                    .broadcast_as((b, t, d))?;
                let mut h = (tokens + pos)?;
                let mask = causal_mask(t, tokens.device())?;
                for layer in layers {
                    h = layer.forward(&h, Some(&mask))?;
                }
                final_norm.forward(&h)
            }
            Decoder::Gru(gru) => {
                let states = gru.seq(tokens)?;
                Tensor::stack(&states.iter().map(|s| s.h.clone()).collect::<Vec<_>>(), 1)
            }
        }
    }

    /// The Transformer's weights in their inference-only CPU form (none for the GRU).
    pub fn to_host(&self) -> Result<Option<HostDecoder>> {
        let Decoder::Transformer {
            layers,
            final_norm,
            positions,
        } = self
        else {
            return Ok(None);
        };
        if layers.is_empty() {
            return Ok(None);
        }
        Ok(Some(HostDecoder {
            layers: layers
                .iter()
                .map(TransformerLayer::to_host)
                .collect::<Result<_>>()?,
            final_norm: final_norm.to_host()?,
            positions: positions.flatten_all()?.to_vec1()?,
            d: positions.dim(1)?,
        }))
    }

    /// A fresh decoder state; `fixed` preallocates the KV caches for `max_len` tokens
    /// (inference only: no gradient flows through them).
    pub fn new_state(&self, max_len: usize, fixed: bool) -> DecoderState {
        match self {
            Decoder::Transformer { layers, .. } => DecoderState::Kv(
                (0..layers.len())
                    .map(|_| {
                        if fixed {
                            KvCache::fixed(max_len)
                        } else {
                            KvCache::growing()
                        }
                    })
                    .collect(),
            ),
            Decoder::Gru(_) => DecoderState::Gru(None),
        }
    }
}

/// The Transformer decoder in its inference-only CPU form ([`super::super::host`]).
#[derive(Debug, Clone)]
pub(super) struct HostDecoder {
    layers: Vec<HostTransformerLayer>,
    final_norm: HostLayerNorm,
    /// `[max_len, d]` sinusoidal positions.
    positions: Vec<f32>,
    d: usize,
}

/// What a host decode carries from step to step: a KV cache per layer and the buffers.
#[derive(Debug)]
pub(super) struct HostState {
    caches: Vec<HostKv>,
    scratch: Scratch,
    residual: Vec<f32>,
}

impl HostDecoder {
    pub fn new_state(&self, rows: usize, max_len: usize) -> HostState {
        HostState {
            caches: self
                .layers
                .iter()
                .map(|l| l.new_cache(rows, max_len))
                .collect(),
            scratch: self.layers[0].new_scratch(rows, max_len),
            residual: vec![0.0; rows * self.d],
        }
    }

    /// Bytes one row's [`HostState`] takes for sequences of `max_len` tokens.
    pub fn bytes_per_row(&self, max_len: usize) -> usize {
        let cache: usize = self
            .layers
            .iter()
            .map(|l| l.cache_bytes_per_row(max_len))
            .sum();
        cache + self.layers[0].scratch_bytes_per_row() + self.d * std::mem::size_of::<f32>()
    }

    /// What [`Decoder::step`] computes: the output `o [rows, d]` for the new tokens
    /// `x [rows, d]` at sequence index `t`, written into `out`. Inlined into the
    /// vector-width dispatch of the decode (see `host.rs`).
    #[inline(always)]
    pub fn step(&self, x: &[f32], t: usize, state: &mut HostState, out: &mut [f32]) -> Result<()> {
        let position = self
            .positions
            .get(t * self.d..(t + 1) * self.d)
            .ok_or_else(|| candle_core::Error::Msg(format!("no position {t} in the decoder")))?;
        for (r, xs) in state
            .residual
            .chunks_exact_mut(self.d)
            .zip(x.chunks_exact(self.d))
        {
            for ((r, &x), &p) in r.iter_mut().zip(xs).zip(position) {
                *r = x + p;
            }
        }
        for (layer, cache) in self.layers.iter().zip(state.caches.iter_mut()) {
            layer.step(&mut state.residual, t, cache, &mut state.scratch)?;
        }
        self.final_norm.forward(&state.residual, out);
        Ok(())
    }
}
